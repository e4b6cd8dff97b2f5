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

namespace backprop::detail::onnx {

inline constexpr std::int64_t export_ir_version = 8;
inline constexpr std::int64_t export_opset = 13;
inline constexpr std::int64_t min_import_opset = 9;
inline constexpr std::int64_t max_import_opset = 22;
/// The largest ONNX file read (protobuf's own limit for one message).
inline constexpr std::size_t max_file_bytes = std::size_t{2} << 30;

template <class>
inline constexpr bool is_leaky_relu = false;
template <class Slope>
inline constexpr bool is_leaky_relu<BasicLeakyReLU<Slope>> = true;

[[nodiscard]] inline std::string dims_text(const std::vector<std::int64_t>& d) {
  std::string s;
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? " x " : "") + std::to_string(d[i]);
  return d.empty() ? "a scalar" : s;
}

/// The product of dimensions read from a file, checked: each in [0, 2^31], the product
/// at most 2^31 (no overflow on hostile input).
[[nodiscard]] inline std::int64_t product(const std::vector<std::int64_t>& d) {
  constexpr std::int64_t limit = std::int64_t{1} << 31;
  std::int64_t n = 1;
  for (const auto v : d) {
    if (v < 0 || v > limit || (v != 0 && n > limit / v)) {
      throw ModelFormatError("ONNX: the shape " + dims_text(d) +
                             " has a negative dimension or more than 2^31 values");
    }
    n *= v;
  }
  return n;
}

// ---- export ----------------------------------------------------------------------

/// The graph a network's layers write themselves into (`write_onnx(graph)`).
class GraphWriter {
 public:
  explicit GraphWriter(std::int64_t inputs) : m_shape{inputs}, m_input_shape{inputs} {}

  /// Called by the network before layer `index` writes itself.
  void begin_layer(std::size_t index) {
    m_prefix = "layer" + std::to_string(index);
    m_layer_ops.clear();
  }

  /// y = x W^T + b as Gemm(x, W, b, transB = 1); W is Out x In (rows: outputs).
  template <class Wt, class Bt>
  void gemm(const Wt& w, const Bt& b) {
    flatten();
    const std::string wn = initializer("weight", {w.rows(), w.cols()}, row_major(w));
    const std::string bn = initializer("bias", {b.rows()}, row_major(b));
    add_node("Gemm", {m_current, wn, bn}, {int_attr("transB", 1)});
    m_shape = {w.rows()};
  }

  /// A convolution: W is OC x (C K K) in PyTorch's [OC, C, K, K] order.
  template <class Wt, class Bt>
  void conv(const Wt& w, const Bt& b, int c, int h, int wd, int oc, int k, int stride, int pad) {
    image(c, h, wd);
    const std::string wn = initializer("weight", {oc, c, k, k}, row_major(w));
    const std::string bn = initializer("bias", {oc}, row_major(b));
    add_node("Conv", {m_current, wn, bn},
             {ints_attr("kernel_shape", {k, k}), ints_attr("strides", {stride, stride}),
              ints_attr("pads", {pad, pad, pad, pad}), ints_attr("dilations", {1, 1}),
              int_attr("group", 1)});
    m_shape = {oc, (h + 2 * pad - k) / stride + 1, (wd + 2 * pad - k) / stride + 1};
  }

  void max_pool(int c, int h, int w, int pool) {
    image(c, h, w);
    add_node("MaxPool", {m_current},
             {ints_attr("kernel_shape", {pool, pool}), ints_attr("strides", {pool, pool}),
              ints_attr("pads", {0, 0, 0, 0})});
    m_shape = {c, h / pool, w / pool};
  }

  /// Dropout at inference: nothing to write.
  void dropout(int /*n*/) {}

  /// BatchNormalization(x, gamma, beta, running mean, running var) over c features
  /// (h = w = 0: a [N, c] tensor) or the c channels of an image.
  template <class G, class B, class S>
  void batch_norm(const G& gamma, const B& beta, const S& state, int c, int h, int w,
                  double epsilon) {
    if (h == 0) {
      flatten();
    } else {
      image(c, h, w);
    }
    const std::string gn = initializer("weight", {c}, row_major(gamma));
    const std::string bn = initializer("bias", {c}, row_major(beta));
    const std::vector<double> st = row_major(state);
    const std::string mn =
        initializer("running_mean", {c}, std::vector<double>(st.begin(), st.begin() + c));
    const std::string vn =
        initializer("running_var", {c}, std::vector<double>(st.begin() + c, st.end()));
    add_node("BatchNormalization", {m_current, gn, bn, mn, vn},
             {float_attr("epsilon", static_cast<float>(epsilon))});
  }

  template <class Act>
  void activation() {
    if constexpr (std::is_same_v<Act, Identity>) {
      return;
    } else if constexpr (std::is_same_v<Act, Sigmoid>) {
      add_node("Sigmoid", {m_current}, {});
    } else if constexpr (std::is_same_v<Act, Tanh>) {
      add_node("Tanh", {m_current}, {});
    } else if constexpr (std::is_same_v<Act, ReLU>) {
      add_node("Relu", {m_current}, {});
    } else if constexpr (is_leaky_relu<Act>) {
      leaky_relu(Act::slope);
    } else if constexpr (std::is_same_v<Act, Softmax>) {
      flatten();
      add_node("Softmax", {m_current}, {int_attr("axis", 1)});
    } else {
      static_assert(std::is_same_v<Act, Identity>,
                    "backprop::save_onnx: this activation has no ONNX operator; the built-in "
                    "sigmoid, tanh, relu, leaky_relu, softmax and identity do");
    }
  }

  /// LeakyRelu with a slope known only at run time (DynamicNetwork).
  void leaky_relu(double slope) {
    add_node("LeakyRelu", {m_current}, {float_attr("alpha", static_cast<float>(slope))});
  }

  /// The serialized ModelProto.
  [[nodiscard]] std::string finish(std::int64_t outputs) {
    flatten();
    if (m_nodes.empty()) add_node("Identity", {m_current}, {});  // e.g. only Dropout layers
    m_nodes.back().outputs = {"output"};
    pb::Writer graph;
    for (const auto& n : m_nodes) {
      pb::Writer node;
      for (const auto& in : n.inputs) node.bytes_field(1, in);
      for (const auto& out : n.outputs) node.bytes_field(2, out);
      node.bytes_field(3, n.name);
      node.bytes_field(4, n.op);
      for (const auto& a : n.attributes) node.message(5, a);
      graph.message(1, node);
    }
    graph.bytes_field(2, "backprop");
    for (const auto& t : m_initializers) graph.message(5, t);
    std::vector<std::int64_t> in_dims{-1};
    in_dims.insert(in_dims.end(), m_input_shape.begin(), m_input_shape.end());
    graph.message(11, float_value_info("input", in_dims, "N"));
    graph.message(12, float_value_info("output", {-1, outputs}, "N"));
    pb::Writer model;
    model.int_field(1, export_ir_version);
    model.bytes_field(2, "backprop");
    model.bytes_field(3, std::to_string(BACKPROP_VERSION_MAJOR) + "." +
                             std::to_string(BACKPROP_VERSION_MINOR) + "." +
                             std::to_string(BACKPROP_VERSION_PATCH));
    model.message(7, graph);
    pb::Writer opset;
    opset.bytes_field(1, "");
    opset.int_field(2, export_opset);
    model.message(8, opset);
    return model.take();
  }

 private:
  struct NodeSpec {
    std::string op, name;
    std::vector<std::string> inputs, outputs;
    std::vector<pb::Writer> attributes;
  };

  template <class M>
  static std::vector<double> row_major(const M& m) {
    std::vector<double> v;
    v.reserve(static_cast<std::size_t>(m.rows() * m.cols()));
    for (Eigen::Index r = 0; r < m.rows(); ++r) {
      for (Eigen::Index c = 0; c < m.cols(); ++c) v.push_back(static_cast<double>(m(r, c)));
    }
    return v;
  }

  static pb::Writer int_attr(std::string_view name, std::int64_t v) {
    pb::Writer a;
    a.bytes_field(1, name);
    a.int_field(3, v);
    a.int_field(20, 2);  // INT
    return a;
  }
  static pb::Writer float_attr(std::string_view name, float v) {
    pb::Writer a;
    a.bytes_field(1, name);
    a.float_field(2, v);
    a.int_field(20, 1);  // FLOAT
    return a;
  }
  static pb::Writer ints_attr(std::string_view name, const std::vector<std::int64_t>& v) {
    pb::Writer a;
    a.bytes_field(1, name);
    for (const auto x : v) a.int_field(8, x);
    a.int_field(20, 7);  // INTS
    return a;
  }

  std::string initializer(std::string_view what, const std::vector<std::int64_t>& dims,
                          const std::vector<double>& values) {
    std::string name = m_prefix + "." + std::string(what);
    m_initializers.push_back(float_tensor(name, dims, values));
    return name;
  }
  std::string int64_initializer(std::string_view what, const std::vector<std::int64_t>& values) {
    std::string name = m_prefix + "." + std::string(what);
    m_initializers.push_back(
        int64_tensor(name, {static_cast<std::int64_t>(values.size())}, values));
    return name;
  }

  void add_node(std::string op, std::vector<std::string> inputs, std::vector<pb::Writer> attrs) {
    NodeSpec n;
    const auto uses = std::count(m_layer_ops.begin(), m_layer_ops.end(), op);
    n.name = m_prefix + "/" + op + (uses > 0 ? "_" + std::to_string(uses) : "");
    m_layer_ops.push_back(op);
    n.outputs = {n.name + ":0"};
    n.op = std::move(op);
    n.inputs = std::move(inputs);
    n.attributes = std::move(attrs);
    m_current = n.outputs[0];
    m_nodes.push_back(std::move(n));
  }

  /// Makes the current tensor [N, values] (Flatten of an image).
  void flatten() {
    if (m_shape.size() == 1) return;
    add_node("Flatten", {m_current}, {int_attr("axis", 1)});
    m_shape = {product(m_shape)};
  }
  /// Makes the current tensor [N, c, h, w]: the network's input itself when no node
  /// was written yet, else a Reshape.
  void image(std::int64_t c, std::int64_t h, std::int64_t w) {
    const std::vector<std::int64_t> want{c, h, w};
    if (m_shape == want) return;
    if (m_nodes.empty() && m_current == "input") {
      m_input_shape = want;
    } else {
      const std::string shape = int64_initializer("shape", {-1, c, h, w});
      add_node("Reshape", {m_current, shape}, {});
    }
    m_shape = want;
  }

  std::vector<std::int64_t> m_shape, m_input_shape;  // per sample
  std::string m_current = "input", m_prefix = "layer0";
  std::vector<std::string> m_layer_ops;  // the operators the current layer wrote
  std::vector<NodeSpec> m_nodes;
  std::vector<pb::Writer> m_initializers;
};

// ---- import ----------------------------------------------------------------------

/// One node of the chain: the node, its position, and its constant inputs (null where
/// the input is the chain's data or absent).
struct Step {
  const Node* node = nullptr;
  std::size_t index = 0;
  std::vector<const Tensor*> constants;
  [[nodiscard]] std::string label() const { return node->label(index); }
  [[nodiscard]] const Tensor* constant(std::size_t i) const {
    return i < constants.size() ? constants[i] : nullptr;
  }
};

/// Reads a parsed model into a network's layers (`read_onnx(graph)`), checking that
/// every node is what the layer expects.
class GraphReader {
 public:
  explicit GraphReader(const Model& model) : m_model(model) {
    if (!model.has_graph) fail("the file has no graph (is it an ONNX model?)");
    find_opset();
    build_chain();
  }

  void begin_layer(std::size_t index, std::string description) {
    m_layer = "layer " + std::to_string(index) + " (" + std::move(description) + ")";
  }

  template <class Wt, class Bt>
  void gemm(Wt& w, Bt& b) {
    const auto in = static_cast<std::int64_t>(w.cols()), out = static_cast<std::int64_t>(w.rows());
    const Step& s = expect({"Gemm", "MatMul"}, "a Gemm or MatMul of " + std::to_string(out) +
                                                   " x " + std::to_string(in) + " weights");
    require_flat(s, in);
    std::vector<double> weights, bias(static_cast<std::size_t>(out), 0.0);
    if (s.node->op_type == "Gemm") {
      if (int_attr(s, "transA", 0) != 0) bad(s, "has transA = 1 (the input transposed)");
      const std::int64_t trans_b = int_attr(s, "transB", 0);
      const double alpha = float_attr(s, "alpha", 1.0f), beta = float_attr(s, "beta", 1.0f);
      const Tensor& bt = constant_input(s, 1, "B (the weights)");
      const std::vector<std::int64_t> want =
          trans_b != 0 ? std::vector<std::int64_t>{out, in} : std::vector<std::int64_t>{in, out};
      if (bt.dims != want) {
        bad(s, "has weights '" + bt.name + "' of shape " + dims_text(bt.dims) + " (transB = " +
                   std::to_string(trans_b) + "); the layer needs " + dims_text(want));
      }
      weights = values(bt);
      if (trans_b == 0) weights = transpose(weights, in, out);
      for (auto& v : weights) v *= alpha;
      if (const Tensor* c = s.constant(2)) {
        bias = bias_values(s, *c, out);
        for (auto& v : bias) v *= beta;
      } else if (s.node->inputs.size() > 2 && !s.node->inputs[2].empty()) {
        bad(s, "takes its bias from '" + s.node->inputs[2] + "', which is not a constant");
      }
    } else {
      const Tensor& bt = constant_input(s, 1, "B (the weights)");
      if (bt.dims != std::vector<std::int64_t>{in, out}) {
        bad(s, "has weights '" + bt.name + "' of shape " + dims_text(bt.dims) +
                   "; the layer needs " + dims_text({in, out}));
      }
      weights = transpose(values(bt), in, out);
      if (const Step* add = peek(); add != nullptr && add->node->op_type == "Add") {
        ++m_pos;
        const Tensor* c = add->constant(0) != nullptr ? add->constant(0) : add->constant(1);
        if (c == nullptr) bad(*add, "adds a tensor that is not a constant (not a bias)");
        bias = bias_values(*add, *c, out);
      }
    }
    assign(w, weights, in);
    assign(b, bias, 1);
    m_shape = {out};
  }

  template <class Wt, class Bt>
  void conv(Wt& w, Bt& b, int c, int h, int wd, int oc, int k, int stride, int pad) {
    const std::vector<std::int64_t> wdims{oc, c, k, k};
    const Step& s = expect({"Conv"}, "a Conv of " + dims_text(wdims) + " weights");
    // What backprop's Conv2D cannot do at all first, then this layer's geometry.
    if (int_attr(s, "group", 1) != 1) {
      bad(s, "has group = " + std::to_string(int_attr(s, "group", 1)) +
                 "; backprop's Conv2D has group 1 (no grouped or depthwise convolutions)");
    }
    check_ints(s, "dilations", {1, 1}, false, {1, 1});
    check_auto_pad(s, pad);
    require_image(s, {c, h, wd});
    const Tensor& wt = constant_input(s, 1, "W (the filters)");
    if (wt.dims != wdims) {
      bad(s, "has filters '" + wt.name + "' of shape " + dims_text(wt.dims) + "; the layer needs " +
                 dims_text(wdims));
    }
    check_ints(s, "kernel_shape", {k, k}, true);
    check_ints(s, "strides", {stride, stride}, true, {1, 1});
    check_ints(s, "pads", {pad, pad, pad, pad}, true, {0, 0, 0, 0});
    std::vector<double> bias(static_cast<std::size_t>(oc), 0.0);
    if (const Tensor* bt = s.constant(2)) {
      bias = bias_values(s, *bt, oc);
    } else if (s.node->inputs.size() > 2 && !s.node->inputs[2].empty()) {
      bad(s, "takes its bias from '" + s.node->inputs[2] + "', which is not a constant");
    }
    assign(w, values(wt), static_cast<std::int64_t>(c) * k * k);
    assign(b, bias, 1);
    m_shape = {oc, (h + 2 * pad - k) / stride + 1, (wd + 2 * pad - k) / stride + 1};
  }

  void max_pool(int c, int h, int w, int pool) {
    const Step& s = expect({"MaxPool"}, "a MaxPool of " + std::to_string(pool) + " x " +
                                            std::to_string(pool) + " windows");
    require_image(s, {c, h, w});
    check_ints(s, "kernel_shape", {pool, pool}, false);
    check_ints(s, "strides", {pool, pool}, false, {1, 1});
    check_ints(s, "pads", {0, 0, 0, 0}, false, {0, 0, 0, 0});
    check_ints(s, "dilations", {1, 1}, false, {1, 1});
    check_auto_pad(s, 0);
    m_shape = {c, h / pool, w / pool};
  }

  /// BatchNormalization over c features (h = w = 0) or channels; epsilon must match.
  template <class G, class B, class S>
  void batch_norm(G& gamma, B& beta, S& state, int c, int h, int w, double epsilon) {
    const Step& s = expect({"BatchNormalization"}, "a BatchNormalization of " + std::to_string(c) +
                                                       (h == 0 ? " features" : " channels"));
    if (h == 0) {
      require_flat(s, c);
    } else {
      require_image(s, {c, h, w});
    }
    if (int_attr(s, "training_mode", 0) != 0) bad(s, "is in training mode");
    const double eps = float_attr(s, "epsilon", 1e-5f);
    if (std::abs(eps - epsilon) > 1e-6 * epsilon) {
      bad(s, "has epsilon " + std::to_string(eps) + "; the layer's is " + std::to_string(epsilon));
    }
    const char* names[] = {"scale (gamma)", "B (beta)", "input_mean", "input_var"};
    std::vector<double> v[4];
    for (std::size_t k = 0; k < 4; ++k) {
      const Tensor& t = constant_input(s, k + 1, names[k]);
      if (product(t.dims) != c || t.dims.size() != 1) {
        bad(s, std::string("has ") + names[k] + " '" + t.name + "' of shape " + dims_text(t.dims) +
                   "; the layer has " + std::to_string(c));
      }
      v[k] = values(t);
    }
    for (const double x : v[3]) {
      if (x < 0) bad(s, "has a negative running variance");
    }
    std::vector<double> st(v[2]);
    st.insert(st.end(), v[3].begin(), v[3].end());
    assign(gamma, v[0], 1);
    assign(beta, v[1], 1);
    assign(state, st, 1);
  }

  void dropout(int n) {
    skip_layout();
    if (m_known && product(m_shape) != n) {
      fail(m_layer + " takes " + std::to_string(n) + " values, but the previous node gives " +
           std::to_string(product(m_shape)));
    }
  }

  template <class Act>
  void activation() {
    if constexpr (std::is_same_v<Act, Identity>) {
      if (const Step* s = peek(); s != nullptr && is_activation(s->node->op_type)) {
        bad(*s, "follows, but " + m_layer + " has no activation (identity)");
      }
    } else if constexpr (std::is_same_v<Act, Softmax>) {
      const Step& s = expect({"Softmax", "LogSoftmax"}, "a Softmax (the layer's activation)");
      require_flat(s, std::nullopt);
      const std::int64_t axis = int_attr(s, "axis", m_opset < 13 ? 1 : -1);
      if (axis != 1 && axis != -1) {
        bad(s, "has axis " + std::to_string(axis) + "; the layer's softmax is over axis 1");
      }
      if (s.node->op_type == "LogSoftmax") {
        skip_layout();
        if (m_pos != m_chain.size()) {
          bad(s, "is not the last node; backprop reads LogSoftmax only as the output");
        }
        m_log_softmax = true;
      }
    } else {
      const char* op = std::is_same_v<Act, Sigmoid> ? "Sigmoid"
                       : std::is_same_v<Act, Tanh>  ? "Tanh"
                       : std::is_same_v<Act, ReLU>  ? "Relu"
                       : is_leaky_relu<Act>         ? "LeakyRelu"
                                                    : nullptr;
      static_assert(std::is_same_v<Act, Sigmoid> || std::is_same_v<Act, Tanh> ||
                        std::is_same_v<Act, ReLU> || is_leaky_relu<Act>,
                    "backprop::load_onnx: this activation has no ONNX operator; the built-in "
                    "sigmoid, tanh, relu, leaky_relu, softmax and identity do");
      const Step& s = expect({op}, std::string("a ") + op + " (the layer's activation)");
      if constexpr (is_leaky_relu<Act>) {
        const double alpha = float_attr(s, "alpha", 0.01f);
        if (std::abs(alpha - Act::slope) > 1e-6 * std::max(1.0, std::abs(Act::slope))) {
          bad(s, "has alpha " + std::to_string(alpha) + "; the layer's slope is " +
                     std::to_string(Act::slope));
        }
      }
    }
  }

  /// After the last layer: nothing but layout may follow, and the output is flat.
  void finish(std::int64_t outputs) {
    skip_layout();
    if (m_pos != m_chain.size()) {
      bad(m_chain[m_pos], "follows the network's last layer");
    }
    if (m_known && product(m_shape) != outputs) {
      fail("the graph's output has " + std::to_string(product(m_shape)) +
           " values per sample; the network has " + std::to_string(outputs));
    }
    const ValueInfo& out = m_model.graph.outputs.front();
    if (out.has_shape && !out.dims.empty()) {
      const std::vector<std::int64_t> sample(out.dims.begin() + 1, out.dims.end());
      const bool known = std::all_of(sample.begin(), sample.end(), [](auto d) { return d >= 0; });
      if (known && product(sample) != outputs) {
        fail("the graph output '" + out.name + "' has shape " + dims_text(out.dims) +
             "; the network gives " + std::to_string(outputs) + " values per sample");
      }
    }
  }

  [[nodiscard]] bool log_softmax_output() const noexcept { return m_log_softmax; }

  // ---- for readers that build the layers as they go (DynamicNetwork) ----

  /// The next node that is not layout (Flatten, Reshape, Identity, Dropout), or null at
  /// the end of the graph.
  [[nodiscard]] const Node* next_node() {
    const Step* s = peek();
    return s == nullptr ? nullptr : s->node;
  }
  /// Constant input `i` of the next node, or null.
  [[nodiscard]] const Tensor* next_constant(std::size_t i) {
    const Step* s = peek();
    return s == nullptr ? nullptr : s->constant(i);
  }
  /// The per-sample shape of the current tensor ({n} or {c, h, w}); empty if the graph
  /// input has no shape and no layer has fixed it yet.
  [[nodiscard]] std::vector<std::int64_t> sample_shape() const {
    return m_known ? m_shape : std::vector<std::int64_t>{};
  }
  /// Throws ModelFormatError "ONNX: <node> <problem>" for the next node.
  [[noreturn]] void reject_next(const std::string& problem) {
    const Step* s = peek();
    if (s == nullptr) fail(problem);
    bad(*s, problem);
  }
  /// Consumes the next node if it is an activation and returns its name in backprop's
  /// terms ("sigmoid", "tanh", "relu", "leaky_relu" with `alpha` set, "softmax"), or ""
  /// when the next node is not an activation.
  std::string take_activation(double& alpha) {
    const Step* s = peek();
    if (s == nullptr || !is_activation(s->node->op_type)) return "";
    const std::string& op = s->node->op_type;
    if (op == "Softmax" || op == "LogSoftmax") {
      activation<Softmax>();
      return "softmax";
    }
    ++m_pos;
    if (op == "LeakyRelu") alpha = float_attr(*s, "alpha", 0.01f);
    return op == "Sigmoid" ? "sigmoid"
           : op == "Tanh"  ? "tanh"
           : op == "Relu"  ? "relu"
                           : "leaky_relu";
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw ModelFormatError("ONNX: " + problem);
  }
  [[noreturn]] void bad(const Step& s, const std::string& problem) const {
    fail(s.label() + " " + problem);
  }

  void find_opset() {
    bool found = false;
    for (const auto& [domain, version] : m_model.opsets) {
      if (domain.empty() || domain == "ai.onnx") {
        m_opset = version;
        found = true;
      }
    }
    if (!found) fail("the model imports no opset of the default domain (ai.onnx)");
    if (m_opset < min_import_opset || m_opset > max_import_opset) {
      fail("the model uses opset " + std::to_string(m_opset) + "; backprop reads opsets " +
           std::to_string(min_import_opset) + " to " + std::to_string(max_import_opset));
    }
  }

  /// Follows the graph from its input: every node must take the previous node's output
  /// (or the input) as its only non-constant input.
  void build_chain() {
    const Graph& g = m_model.graph;
    if (g.has_sparse) fail("the graph has sparse initializers, which backprop does not read");
    for (const auto& t : g.initializers) m_constants[t.name] = &t;
    std::vector<const ValueInfo*> data_inputs;
    for (const auto& in : g.inputs) {
      if (m_constants.count(in.name) == 0) data_inputs.push_back(&in);
    }
    if (data_inputs.size() != 1) {
      fail("the graph has " + std::to_string(data_inputs.size()) +
           " inputs that are not initializers; backprop reads models with exactly one");
    }
    if (g.outputs.size() != 1) {
      fail("the graph has " + std::to_string(g.outputs.size()) +
           " outputs; backprop reads models with exactly one");
    }
    const ValueInfo& input = *data_inputs.front();
    if (input.is_tensor && input.elem_type != float32 && input.elem_type != float64) {
      fail("the graph input '" + input.name + "' is " + data_type_name(input.elem_type) +
           "; backprop reads FLOAT (or DOUBLE) inputs");
    }
    if (input.has_shape) {
      if (input.dims.size() != 2 && input.dims.size() != 4) {
        fail("the graph input '" + input.name + "' has rank " + std::to_string(input.dims.size()) +
             "; backprop reads [N, features] or [N, C, H, W]");
      }
      m_shape.assign(input.dims.begin() + 1, input.dims.end());
      m_known = std::all_of(m_shape.begin(), m_shape.end(), [](auto d) { return d > 0; });
      if (m_known) (void)product(m_shape);  // rejects absurd sizes
      if (!m_known) m_shape.clear();
    }
    std::string current = input.name;
    for (std::size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      const std::string label = n.label(i);
      if (!n.domain.empty() && n.domain != "ai.onnx") {
        fail(label + " is in domain '" + n.domain + "'; backprop reads the default domain only");
      }
      for (const auto& a : n.attributes) {
        if (a.has_graph) fail(label + " has a sub-graph attribute '" + a.name + "' (control flow)");
        if (a.has_ref) fail(label + " has attribute '" + a.name + "' referring to a function");
      }
      if (n.op_type == "Constant") {
        const Attribute* v = n.attribute("value");
        if (v == nullptr || v->t.empty() || n.outputs.size() != 1) {
          fail(label + " is not a Constant with one tensor 'value' (other forms are not read)");
        }
        m_constants[n.outputs[0]] = &v->t.front();
        continue;
      }
      std::vector<const Tensor*> constants;
      std::size_t data = 0, data_position = 0;
      for (std::size_t k = 0; k < n.inputs.size(); ++k) {
        const auto it = m_constants.find(n.inputs[k]);
        if (n.inputs[k].empty() || it != m_constants.end()) {
          constants.push_back(n.inputs[k].empty() ? nullptr : it->second);
          continue;
        }
        constants.push_back(nullptr);
        if (n.inputs[k] != current) {
          fail(label + " takes '" + n.inputs[k] + "', which is neither the output of the node " +
               "before it nor a constant: backprop reads only chains of layers (a "
               "torch.nn.Sequential), no branches or skip connections");
        }
        ++data;
        data_position = k;
      }
      if (n.op_type == "Identity" && data == 0 && n.outputs.size() == 1) {
        m_constants[n.outputs[0]] = constants.empty() ? nullptr : constants[0];
        if (m_constants[n.outputs[0]] == nullptr) fail(label + " has no input");
        continue;
      }
      if (data != 1) {
        fail(label + (data == 0 ? " does not take the output of the node before it"
                                : " takes the output of the node before it more than once"));
      }
      if (data_position != 0 && n.op_type != "Add") {
        fail(label + " takes the data as input " + std::to_string(data_position) +
             "; backprop expects it as the first input");
      }
      if (n.outputs.empty() || n.outputs[0].empty()) fail(label + " has no output");
      current = n.outputs[0];
      m_chain.push_back(Step{&n, i, std::move(constants)});
    }
    if (current != g.outputs.front().name) {
      fail("the graph output '" + g.outputs.front().name +
           "' is not the end of the chain of nodes from the input ('" + current + "' is)");
    }
  }

  [[nodiscard]] static bool is_activation(const std::string& op) {
    return op == "Sigmoid" || op == "Tanh" || op == "Relu" || op == "LeakyRelu" ||
           op == "Softmax" || op == "LogSoftmax";
  }

  /// Passes over Flatten, Reshape, Identity and inference Dropout, following the shape.
  void skip_layout() {
    while (m_pos < m_chain.size()) {
      const Step& s = m_chain[m_pos];
      const std::string& op = s.node->op_type;
      if (op == "Identity") {
      } else if (op == "Dropout") {
        if (s.node->inputs.size() > 2 && !s.node->inputs[2].empty()) {
          const Tensor* t = s.constant(2);
          if (t == nullptr) bad(s, "has a training_mode that is not a constant");
          const auto v = values(*t);
          if (!v.empty() && v[0] != 0.0) bad(s, "is in training mode");
        }
      } else if (op == "Flatten") {
        const std::int64_t axis = int_attr(s, "axis", 1);
        if (axis != 1) bad(s, "has axis " + std::to_string(axis) + "; backprop reads axis 1");
        if (m_known) m_shape = {product(m_shape)};
      } else if (op == "Reshape") {
        reshape(s);
      } else {
        return;
      }
      ++m_pos;
    }
  }

  void reshape(const Step& s) {
    const Tensor* t = s.constant(1);
    if (t == nullptr) bad(s, "has a shape that is not a constant (dynamic reshapes are not read)");
    const auto v = values(*t);
    if (v.size() < 2)
      bad(s, "reshapes to rank " + std::to_string(v.size()) + "; the batch must stay");
    if (int_attr(s, "allowzero", 0) != 0) bad(s, "has allowzero = 1");
    if (!m_known) bad(s, "reshapes a tensor whose shape is not known");
    std::vector<std::int64_t> full{-2};  // the batch
    full.insert(full.end(), m_shape.begin(), m_shape.end());
    std::vector<std::int64_t> out;
    int infer = -1;
    for (std::size_t i = 1; i < v.size(); ++i) {
      if (!(std::abs(v[i]) <= 4294967296.0)) bad(s, "has an absurd dimension");
      const auto d = static_cast<std::int64_t>(v[i]);
      if (d == 0) {
        if (i >= full.size())
          bad(s, "copies dimension " + std::to_string(i) + ", which does not exist");
        out.push_back(full[i]);
      } else if (d == -1) {
        if (infer >= 0 || v[0] == -1) {
          bad(s, "has more than one -1 (with the batch)");
        }
        infer = static_cast<int>(out.size());
        out.push_back(1);
      } else if (d > 0) {
        out.push_back(d);
      } else {
        bad(s, "has dimension " + std::to_string(d));
      }
    }
    const std::int64_t count = product(m_shape);
    if (infer >= 0) {
      const std::int64_t rest = product(out);
      if (rest <= 0 || count % rest != 0)
        bad(s, "cannot keep the " + std::to_string(count) + " values of a sample");
      out[static_cast<std::size_t>(infer)] = count / rest;
    }
    if (product(out) != count) {
      bad(s, "reshapes the " + std::to_string(count) + " values of a sample into " +
                 dims_text(out) + " (the batch would change)");
    }
    if (out.size() != 1 && out.size() != 3) {
      bad(s, "reshapes to rank " + std::to_string(out.size() + 1) + "; backprop reads rank 2 or 4");
    }
    m_shape = out;
  }

  [[nodiscard]] const Step* peek() {
    skip_layout();
    return m_pos < m_chain.size() ? &m_chain[m_pos] : nullptr;
  }

  const Step& expect(std::initializer_list<const char*> ops, const std::string& what) {
    const Step* s = peek();
    if (s == nullptr) fail(m_layer + " expects " + what + ", but the graph ends");
    for (const char* op : ops) {
      if (s->node->op_type == op) {
        ++m_pos;
        return *s;
      }
    }
    const bool known = s->node->op_type == "Gemm" || s->node->op_type == "MatMul" ||
                       s->node->op_type == "Conv" || s->node->op_type == "MaxPool" ||
                       s->node->op_type == "BatchNormalization" || is_activation(s->node->op_type);
    fail(s->label() +
         (known ? " does not match " + m_layer + ", which expects " + what
                : " is an operator backprop does not read (" + m_layer + " expects " + what + ")"));
  }

  void require_flat(const Step& s, std::optional<std::int64_t> n) {
    if (!m_known) {
      if (n) m_shape = {*n};
      m_known = n.has_value();
      return;
    }
    if (m_shape.size() != 1) {
      bad(s, "takes a tensor of shape N x " + dims_text(m_shape) + "; it must be flattened first");
    }
    if (n && m_shape[0] != *n) {
      bad(s, "takes " + std::to_string(m_shape[0]) + " values per sample; " + m_layer + " takes " +
                 std::to_string(*n));
    }
  }
  void require_image(const Step& s, const std::vector<std::int64_t>& chw) {
    if (!m_known) {
      m_shape = chw;
      m_known = true;
      return;
    }
    if (m_shape != chw) {
      bad(s, "takes a tensor of shape N x " + dims_text(m_shape) + "; " + m_layer + " takes N x " +
                 dims_text(chw));
    }
  }

  const Tensor& constant_input(const Step& s, std::size_t i, const char* what) const {
    const Tensor* t = s.constant(i);
    if (t == nullptr) {
      bad(s, std::string("has no constant input ") + what +
                 (i < s.node->inputs.size() ? " ('" + s.node->inputs[i] + "' is not a constant)"
                                            : ""));
    }
    return *t;
  }

  [[nodiscard]] static std::vector<double> values(const Tensor& t) {
    auto v = t.values();
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v[i])) {
        throw ModelFormatError("ONNX: tensor '" + t.name + "' has a non-finite value at " +
                               std::to_string(i));
      }
    }
    return v;
  }
  std::vector<double> bias_values(const Step& s, const Tensor& t, std::int64_t n) const {
    const auto v = values(t);
    const auto count = static_cast<std::int64_t>(v.size());
    const bool vector_shape =
        t.dims == std::vector<std::int64_t>{n} || t.dims == std::vector<std::int64_t>{1, n};
    if (vector_shape && count == n) return v;
    if (count == 1 && product(t.dims) == 1)
      return std::vector<double>(static_cast<std::size_t>(n), v[0]);
    bad(s, "has a bias '" + t.name + "' of shape " + dims_text(t.dims) + "; the layer has " +
               std::to_string(n) + " biases");
  }
  static std::vector<double> transpose(const std::vector<double>& v, std::int64_t rows,
                                       std::int64_t cols) {
    std::vector<double> t(v.size());
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t c = 0; c < cols; ++c) t[c * rows + r] = v[r * cols + c];
    }
    return t;
  }
  template <class M>
  static void assign(M& m, const std::vector<double>& v, std::int64_t cols) {
    using S = typename M::Scalar;
    for (Eigen::Index r = 0; r < m.rows(); ++r) {
      for (Eigen::Index c = 0; c < m.cols(); ++c) {
        const double x = v[static_cast<std::size_t>(r * cols + c)];
        if (std::is_same_v<S, float> && std::abs(x) > 3.4028234663852886e38) {
          throw ModelFormatError("ONNX: a parameter (" + std::to_string(x) +
                                 ") is out of the range of float");
        }
        m(r, c) = static_cast<S>(x);
      }
    }
  }

  std::int64_t int_attr(const Step& s, const char* name, std::int64_t fallback) const {
    const Attribute* a = s.node->attribute(name);
    if (a == nullptr) return fallback;
    if (!a->has_i) bad(s, std::string("has attribute '") + name + "' that is not an integer");
    return a->i;
  }
  double float_attr(const Step& s, const char* name, float fallback) const {
    const Attribute* a = s.node->attribute(name);
    if (a == nullptr) return fallback;
    if (!a->has_f) bad(s, std::string("has attribute '") + name + "' that is not a float");
    return a->f;
  }
  void check_ints(const Step& s, const char* name, const std::vector<std::int64_t>& want,
                  bool optional, std::initializer_list<std::int64_t> fallback = {}) const {
    const Attribute* a = s.node->attribute(name);
    std::vector<std::int64_t> have;
    if (a == nullptr) {
      if (fallback.size() != 0) {
        have.assign(fallback.begin(), fallback.end());
      } else if (optional) {
        return;
      } else {
        bad(s, std::string("has no attribute '") + name + "'");
      }
    } else {
      have = a->ints;
    }
    if (have != want) {
      std::string h, w;
      for (const auto x : have) h += (h.empty() ? "" : ", ") + std::to_string(x);
      for (const auto x : want) w += (w.empty() ? "" : ", ") + std::to_string(x);
      bad(s, std::string("has ") + name + " [" + h + "]" + (a == nullptr ? " (the default)" : "") +
                 "; " + m_layer + " needs [" + w + "]");
    }
  }
  void check_auto_pad(const Step& s, int pad) const {
    const Attribute* a = s.node->attribute("auto_pad");
    if (a == nullptr || a->s == "NOTSET" || (a->s == "VALID" && pad == 0)) return;
    bad(s, "has auto_pad " + a->s + "; backprop reads explicit pads (NOTSET)");
  }

  const Model& m_model;
  std::int64_t m_opset = 0;
  std::unordered_map<std::string, const Tensor*> m_constants;
  std::vector<Step> m_chain;
  std::size_t m_pos = 0;
  std::vector<std::int64_t> m_shape;  // per sample: {n} or {c, h, w}
  bool m_known = false;
  bool m_log_softmax = false;
  std::string m_layer;
};

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
inline void write_bytes(std::ostream& os, const std::string& bytes) {
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
[[nodiscard]] inline std::string read_all(std::istream& is) {
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
