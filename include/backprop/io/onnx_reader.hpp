/// \file
/// \brief Reads a parsed ONNX model into a network's layers, checking every node
/// against what the layer expects (detail; used by io/onnx.hpp, which documents what
/// is read).
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
#include "onnx_proto.hpp"

namespace backprop::detail::onnx {
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
// A template only so that its members are compiled where a program uses them: as
// plain inline functions, g++ compiled them, and the std templates they use, in every
// program including the umbrella header.
template <class = void>
class BasicGraphReader {
 public:
  explicit BasicGraphReader(const Model& model) : m_model(model) {
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

/// The reader (an alias, so that a program that does not use ONNX compiles none of it).
using GraphReader = BasicGraphReader<>;

}  // namespace backprop::detail::onnx
