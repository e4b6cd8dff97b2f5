// libFuzzer target: arbitrary bytes into the IDX reader (plain or gzip) and the
// MNIST-shaped checks. Any std::runtime_error is an accepted rejection; a crash,
// a sanitizer report or another exception type is a bug.
#include <backprop/io/idx.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    // A small output cap keeps decompression bombs cheap; the reader must reject, not grow.
    const auto t = backprop::read_idx(std::span<const unsigned char>(data, size), "<fuzz>",
                                      std::size_t{1} << 24);
    std::size_t product = 1;
    for (std::size_t d : t.dims) product *= d;
    if (product * t.element_size() != t.bytes.size()) std::abort();  // header and body disagree
    if (t.size() > 0) (void)t.value(t.size() - 1);
  } catch (const std::runtime_error&) {
  }
  return 0;
}
