/// \file
/// \brief ONNX export and import of a network (`BasicNetwork::save_onnx`, `load_onnx`),
/// with no dependency: the protobuf wire format is written and read by protobuf.hpp.
///
/// Export writes IR version 8, opset 13 (accepted by ONNX Runtime since 1.8 and by
/// the ONNX checker since 1.10): one float input "input" of shape [N, inputs], or
/// [N, C, H, W] when the first layer takes an image, with a symbolic batch dimension
/// "N", and one float output "output" [N, outputs] equal to `feedforward` (the output
/// layer's activation included). Each layer writes its own nodes through its
/// `write_onnx(graph)` member; the built-in layers map as
///
///     Dense, DropoutDense   Gemm(x, W, b, transB = 1), then the activation
///     Conv2D                Conv(x, W[OC, C, K, K], b; strides, pads), then the activation
///     MaxPool2D             MaxPool(kernel_shape = strides = [Pool, Pool])
///     Dropout               nothing (inference is the identity)
///     BatchNorm(2D)         BatchNormalization(x, gamma, beta, mean, var; epsilon), then
///                           the activation
///     sigmoid, tanh, relu   Sigmoid, Tanh, Relu
///     leaky_relu            LeakyRelu(alpha = slope)
///     softmax               Softmax(axis = 1)   (after a Flatten if the layer is a Conv2D)
///     identity              nothing
///
/// with Flatten (image to vector) and Reshape (vector to image) where consecutive
/// layers see the same values in different shapes. Parameters are written as float
/// (a double network is rounded to float).
///
/// Import reads what `torch.onnx.export` writes for a `torch.nn.Sequential` of those
/// layers (opsets 9 to 22): Gemm (any transB, alpha, beta) or MatMul followed by Add,
/// Conv, MaxPool, BatchNormalization, Flatten or Reshape, Identity and inference-mode
/// Dropout, the
/// activations above, Softmax or LogSoftmax at the end, weights as initializers or
/// Constant nodes. The graph must be a chain from its one input to its one output
/// that matches the network's layers one by one; anything else throws
/// `ModelFormatError` naming the node, its operator and what the layer expected, and
/// leaves the network unchanged. A LogSoftmax output is read as the network's Softmax:
/// `feedforward` then gives the probabilities, the exponential of the source's output.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <ios>
#include <istream>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../activations/activations.hpp"
#include "../errors.hpp"
#include "../version.hpp"
#include "model.hpp"
#include "onnx_proto.hpp"
#include "onnx_reader.hpp"
#include "onnx_writer.hpp"

namespace backprop::detail::onnx {

// ---- the network's side ----------------------------------------------------------------

template <class Net, std::size_t I>
concept OnnxWritableLayer = requires(const ModelLayerParameters<Net, I>& l, GraphWriter& g) {
  l.write_onnx(g);
};
template <class Net, std::size_t I>
concept OnnxReadableLayer = requires(ModelLayerParameters<Net, I>& l, GraphReader& g) {
  l.read_onnx(g);
};

template <class Net>
[[nodiscard]] std::string to_onnx(const Net& net) {
  model_check_for_save(net, "save_onnx");
  GraphWriter g(Net::template LayerDescriptor<0>::inputs);
  for_each_index<Net::num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    static_assert(OnnxWritableLayer<Net, I>,
                  "backprop::save_onnx: a layer of this network has no ONNX mapping (the layer "
                  "object needs write_onnx(graph); see docs/layers.md)");
    g.begin_layer(I);
    net.template layer<I>().write_onnx(g);
  });
  return g.finish(Net::template LayerDescriptor<Net::num_layers - 1>::outputs);
}

/// Writes a serialized model to `os`.
template <class = void>
void write_bytes(std::ostream& os, const std::string& bytes) {
  os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!os) throw std::runtime_error("save_onnx: cannot write the model to the stream");
}

template <class Net>
void save_onnx(const Net& net, std::ostream& os) {
  write_bytes(os, to_onnx(net));
}

/// Reads the rest of `is` (at most max_file_bytes).
/// A stream that throws on failure is read with its exceptions off (end of file is no
/// error here) and left with them restored.
template <class = void>
[[nodiscard]] std::string read_all(std::istream& is) {
  struct Restore {
    std::istream& is;
    std::ios::iostate mask;
    ~Restore() {
      try {
        is.exceptions(mask);
      } catch (...) {  // restoring may "throw" for the eof we reached; it is reported below
      }
    }
  } restore{is, is.exceptions()};
  is.exceptions(std::ios::goodbit);
  std::string bytes;
  char buffer[65536];
  while (is.read(buffer, sizeof buffer) || is.gcount() > 0) {
    bytes.append(buffer, static_cast<std::size_t>(is.gcount()));
    if (bytes.size() > max_file_bytes) {
      throw ModelFormatError("ONNX: the model is larger than 2 GiB (protobuf's limit)");
    }
  }
  if (is.bad()) throw ModelFormatError("ONNX: reading the model failed");
  return bytes;
}

/// Reads an ONNX model into `net` (strong guarantee). Returns true if its output was a
/// LogSoftmax read as Softmax.
template <class Net>
bool load_onnx(Net& net, std::string_view bytes) {
  if (bytes.empty()) throw ModelFormatError("ONNX: the file is empty");
  const Model model = parse_model(bytes);
  GraphReader g(model);
  auto params = model_copy_parameters(net);
  for_each_index<Net::num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    static_assert(OnnxReadableLayer<Net, I>,
                  "backprop::load_onnx: a layer of this network has no ONNX mapping (the layer "
                  "object needs read_onnx(graph); see docs/layers.md)");
    using L = typename Net::template LayerDescriptor<I>;
    g.begin_layer(I, std::string(ModelLayerParameters<Net, I>::model_name) + ", " +
                         std::to_string(L::inputs) + " -> " + std::to_string(L::outputs));
    std::get<I>(params).read_onnx(g);
  });
  g.finish(Net::template LayerDescriptor<Net::num_layers - 1>::outputs);
  model_commit_parameters(net, std::move(params));
  return g.log_softmax_output();
}

}  // namespace backprop::detail::onnx
