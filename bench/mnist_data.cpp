// See mnist_data.hpp. Its own translation unit: the IDX/gzip reader is compiled only here.
#include "mnist_data.hpp"

#include <filesystem>

#if BACKPROP_BENCH_HAVE_MNIST
#include <backprop/io/mnist.hpp>
#endif

namespace bench {

bool load_mnist_data(const std::string& dir, std::int64_t n, Data& out) {
#if BACKPROP_BENCH_HAVE_MNIST
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    std::cerr << "bench: no MNIST directory " << dir << '\n';
    return false;
  }
  try {
    const auto mnist = backprop::load_mnist<float>(dir);
    const auto& train = mnist.train;
    out.n = std::min<std::int64_t>(n, train.size());
    out.inputs = train.inputs.rows();
    out.classes = train.targets.rows();
    out.x.assign(train.inputs.data(), train.inputs.data() + out.n * out.inputs);
    out.labels.resize(static_cast<std::size_t>(out.n));
    for (std::int64_t i = 0; i < out.n; ++i) {
      out.labels[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(train.labels(i));
    }
    out.source = "MNIST (first " + std::to_string(out.n) + " training images of " + dir + ")";
    return true;
  } catch (const std::exception& e) {
    std::cerr << "bench: cannot load MNIST: " << e.what() << '\n';
    return false;
  }
#else
  std::cerr << "bench: built without backprop/io/mnist.hpp, cannot read " << dir << '\n';
  static_cast<void>(n);
  static_cast<void>(out);
  return false;
#endif
}

}  // namespace bench
