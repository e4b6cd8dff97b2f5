// libFuzzer target: arbitrary bytes into BasicNetwork::load (the binary model format).
// Any std::exception is an accepted rejection; a crash, a sanitizer report, another
// exception type, or a broken invariant (checked below) is a bug.
#include <backprop/layers/conv.hpp>
#include <backprop/layers/pool.hpp>
#include <backprop/network.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <string>

namespace {

namespace bp = backprop;

template <class T>
using Net = bp::BasicNetwork<T, bp::Dense<2, 3, bp::Sigmoid>, bp::Dense<3, 1, bp::Tanh>>;
/// Image layers: records with geometry in their names, and layers without parameters
/// (seeds from make_model_seeds.cpp).
template <class T>
using ConvNet =
    bp::BasicNetwork<T, bp::Conv2D<1, 4, 4, 2, 3, bp::Tanh, 1, 1>, bp::MaxPool2D<2, 4, 4, 2>,
                     bp::Dropout<8>, bp::Dense<8, 2, bp::Sigmoid>>;

/// Loads `bytes` into a network; on failure it must be unchanged, on success it must
/// be finite and save back to a file that loads to the same parameters.
template <template <class> class Net, class T>
void check(const std::string& bytes) {
  Net<T> net(7);
  const Net<T> before = net;
  try {
    std::istringstream is(bytes, std::ios::binary);
    net.load(is);
  } catch (const std::exception&) {
    if (!(net == before)) std::abort();  // strong guarantee broken
    return;
  }
  std::ostringstream os(std::ios::binary);
  net.save(os);  // throws (and so aborts the fuzzer) if a loaded value is not finite
  Net<T> again(8);
  std::istringstream is(os.str(), std::ios::binary);
  again.load(is);
  if (!(again == net)) std::abort();
}

}  // namespace

// The first byte selects a mode: if it is odd, the last four bytes of the rest are
// replaced by the rest's correct CRC-32, so that mutations reach the checks behind the
// checksum (values, scalar conversion) instead of nearly always failing on it; bit 1
// loads into the convolutional network instead of the dense one.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1U) != 0 && bytes.size() >= 4) {
    const std::size_t body = bytes.size() - 4;
    const std::uint32_t crc =
        bp::detail::crc32(reinterpret_cast<const unsigned char*>(bytes.data()), body);
    for (int k = 0; k < 4; ++k) bytes[body + k] = static_cast<char>((crc >> (8 * k)) & 0xFFU);
  }
  if ((data[0] & 2U) != 0) {
    check<ConvNet, float>(bytes);
    check<ConvNet, double>(bytes);
  } else {
    check<Net, float>(bytes);
    check<Net, double>(bytes);
  }
  return 0;
}
