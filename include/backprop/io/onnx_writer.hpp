/// \file
/// \brief The graph a network's layers write themselves into for ONNX export
/// (detail; used by io/onnx.hpp, which documents the mapping).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
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
#include "onnx_proto.hpp"

namespace backprop::detail::onnx {
/// The graph a network's layers write themselves into (`write_onnx(graph)`).
// A template only so that its members are compiled where a program uses them: as
// plain inline functions, g++ compiled them, and the std templates they use, in every
// program including the umbrella header.
template <class = void>
class BasicGraphWriter {
 public:
  explicit BasicGraphWriter(std::int64_t inputs) : m_shape{inputs}, m_input_shape{inputs} {}

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

/// The writer (an alias, so that a program that does not use ONNX compiles none of it).
using GraphWriter = BasicGraphWriter<>;

}  // namespace backprop::detail::onnx
