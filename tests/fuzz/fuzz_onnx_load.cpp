// libFuzzer target: arbitrary bytes into BasicNetwork::load_onnx (the protobuf reader and
// the graph matcher of io/onnx.hpp). Any std::exception is an accepted rejection; a
// crash, a sanitizer report, an unbounded allocation (libFuzzer's -rss_limit_mb), or a
// broken invariant (checked below) is a bug.
#include <backprop/backprop.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <string>

namespace {

namespace bp = backprop;

// The networks of the seeds (make_onnx_seeds.cpp and PyTorch's torch_cnn_stride_pad).
using Mlp = bp::Network<bp::Dense<6, 5, bp::Sigmoid>, bp::Dense<5, 4, bp::LeakyReLU>,
                        bp::Dense<4, 3, bp::Softmax>>;
using Conv = bp::Network<bp::Conv2D<1, 4, 4, 2, 3, bp::Tanh, 1, 1>, bp::MaxPool2D<2, 4, 4, 2>,
                         bp::Dropout<8>, bp::Dense<8, 2, bp::Sigmoid>>;
using Reshaped = bp::Network<bp::Dense<5, 16, bp::ReLU>, bp::Conv2D<1, 4, 4, 2, 3, bp::Identity>,
                             bp::Dense<8, 3, bp::Tanh>>;
using TorchStridePad = bp::Network<bp::Conv2D<1, 28, 28, 4, 3, bp::Sigmoid, 2, 1>,
                                   bp::MaxPool2D<4, 14, 14, 2>, bp::Dense<196, 10, bp::Softmax>>;

/// Loads `bytes`; on failure the network must be unchanged, on success it must save to
/// an ONNX file that loads to the same parameters.
template <class Net>
void check(const std::string& bytes) {
  Net net(7);
  const Net before = net;
  try {
    std::istringstream is(bytes, std::ios::binary);
    net.load_onnx(is);
  } catch (const std::exception&) {
    if (!(net == before)) std::abort();  // strong guarantee broken
    return;
  }
  std::ostringstream os(std::ios::binary);
  net.save_onnx(os);  // throws (and so aborts the fuzzer) if a loaded value is not finite
  Net again(8);
  std::istringstream is(os.str(), std::ios::binary);
  again.load_onnx(is);
  if (!(again == net)) std::abort();
}

/// DynamicNetwork::load (binary or ONNX); a network it accepts must run on zeros (when
/// small enough to try) and write ONNX that it reads back to the same outputs.
void check_dynamic(const std::string& bytes) {
  bp::DynamicNetwork<float> net;
  try {
    std::istringstream is(bytes, std::ios::binary);
    net = bp::DynamicNetwork<float>::load(is);
  } catch (const std::exception&) {
    return;
  }
  for (const auto& l : net.layers()) {
    if (l.inputs > 100000 || l.outputs > 100000) return;
  }
  const Eigen::MatrixXf x = Eigen::MatrixXf::Constant(net.inputs(), 2, 0.5f);
  const Eigen::MatrixXf y = net.feedforward(x);
  std::ostringstream os(std::ios::binary);
  net.save_onnx(os);
  std::istringstream is(os.str(), std::ios::binary);
  const auto again = bp::DynamicNetwork<float>::load(is);
  const Eigen::MatrixXf y2 = again.feedforward(x);
  if (y2.rows() != y.rows() || y2.cols() != y.cols()) std::abort();
  for (Eigen::Index k = 0; k < y.size(); ++k) {
    const float a = y.data()[k], b = y2.data()[k];
    // A leaky slope read from a binary file is written to ONNX as float: not bit-exact.
    if (std::isfinite(a) && std::isfinite(b) && std::abs(a - b) > 1e-4f * (1.0f + std::abs(a))) {
      std::abort();
    }
  }
}

}  // namespace

// The first byte selects the network the rest is loaded into; bit 2: DynamicNetwork.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 4U) != 0) {
    check_dynamic(bytes);
    return 0;
  }
  switch (data[0] & 3U) {
    case 0:
      check<Mlp>(bytes);
      break;
    case 1:
      check<Conv>(bytes);
      break;
    case 2:
      check<Reshaped>(bytes);
      break;
    default:
      check<TorchStridePad>(bytes);
      break;
  }
  return 0;
}
