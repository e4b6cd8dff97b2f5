// libFuzzer target: arbitrary bytes into BasicNetwork::load_json (network2.py's JSON)
// and into the JSON parser itself. Any std::exception is an accepted rejection; a crash,
// a sanitizer report, another exception type, or a broken invariant is a bug.
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

/// Loads `text`; on failure the network must be unchanged, on success it must save
/// back to JSON that loads to the same parameters and cost.
template <class T>
void check(const std::string& text) {
  Net<T> net(7);
  const Net<T> before = net;
  std::string cost;
  try {
    std::istringstream is(text);
    cost = net.load_json(is);
  } catch (const std::exception&) {
    if (!(net == before)) std::abort();  // strong guarantee broken
    return;
  }
  std::ostringstream os;
  net.save_json(os, cost);
  Net<T> again(8);
  std::istringstream is(os.str());
  if (again.load_json(is) != cost || !(again == net)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  check<float>(text);
  check<double>(text);
  try {
    bp::detail::ModelJsonParser parser(text, "fuzz");
    parser.skip_value();
    parser.finish();
  } catch (const std::exception&) {
  }
  return 0;
}
