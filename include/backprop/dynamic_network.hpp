/// \file
/// \brief `DynamicNetwork<Scalar>`: a network whose architecture is read from a file at run
/// time (a backprop binary model or an ONNX model of built-in layers), for programs that
/// serve models they were not compiled for. Inference only: `feedforward` (const,
/// thread-safe, one sample or a batch), `predict`, `save_onnx`.
///
/// Layers: Dense (every built-in activation), Conv2D, MaxPool2D, BatchNorm and BatchNorm2D
/// (inference: the running statistics), Dropout (inference: the identity). A binary file records
/// each layer's name ("sigmoid", "conv2d(1x28x28,20,k5, s1,p0,relu)", "maxpool2d(20x24x24,2)",
/// "dropout") and sizes, so the architecture is in the file; a layer written by user code has
/// another name and is rejected. The binary format does not record a leaky ReLU's slope:
/// "leaky_relu" is read with `LeakyReLU`'s slope 0.01. ONNX files are read under the rules of
/// `load_onnx` (io/onnx.hpp), the layers taken from the graph instead of from a network type.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <istream>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "activations/activations.hpp"
#include "detail/products.hpp"
#include "errors.hpp"
#include "io/model.hpp"
#include "io/onnx.hpp"
#include "layers/batchnorm.hpp"
#include "subnormals.hpp"

namespace backprop {

/// \brief A network read from a file at run time; see the file comment.
/// \tparam Scalar_ the type it computes in (`float` or `double`; parameters convert)
template <class Scalar_ = float>
class DynamicNetwork {
 public:
  /// `float` or `double`.
  using Scalar = Scalar_;
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "backprop::DynamicNetwork<Scalar>: Scalar must be float or double");
  /// A batch, one column per sample.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  /// A column vector.
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// The kinds of layer: `Dense`, `Conv2D`, `MaxPool2D`, `Dropout`, `BatchNorm` and
  /// `BatchNorm2D`.
  enum class Kind { dense, conv2d, max_pool2d, dropout, batch_norm };
  /// The built-in activations.
  enum class Act { identity, sigmoid, tanh, relu, leaky_relu, softmax };

  /// One layer: its kind, sizes, activation and parameters (W is out x in for dense,
  /// out_channels x (C K K) for conv2d, as in `Dense` and `Conv2D`).
  struct Layer {
    Kind kind = Kind::dense;  ///< the kind of layer
    Act act = Act::identity;  ///< its activation (dense, conv2d, batch_norm)
    double slope = 0.01;      ///< leaky_relu
    /// The flattened sizes of one sample.
    ///@{
    int inputs = 0, outputs = 0;
    ///@}
    /// conv2d, max_pool2d input (and batch_norm: C, H, W).
    ///@{
    int channels = 0, height = 0, width = 0;
    ///@}
    /// conv2d: OutChannels, Kernel, Stride, Padding; max_pool2d: Pool.
    ///@{
    int out_channels = 0, kernel = 0, stride = 1, padding = 0, pool = 0;
    ///@}
    double epsilon = 1e-5;  ///< batch_norm; its height and width are 0 after a dense layer
    Matrix weights;         ///< W (batch_norm: gamma)
    Vector biases;          ///< b (batch_norm: beta)
    Vector state;           ///< batch_norm: running mean, then running variance

    /// \brief The output's height (conv2d, max_pool2d).
    [[nodiscard]] int out_height() const noexcept {
      return kind == Kind::max_pool2d ? height / pool
                                      : (height + 2 * padding - kernel) / stride + 1;
    }
    /// \brief The output's width (conv2d, max_pool2d).
    [[nodiscard]] int out_width() const noexcept {
      return kind == Kind::max_pool2d ? width / pool : (width + 2 * padding - kernel) / stride + 1;
    }
    /// "dense 784 -> 30, sigmoid", "conv2d 1x28x28 -> 20x24x24, k5 s1 p0, relu", ...
    [[nodiscard]] std::string describe() const {
      const auto image = [](int c, int h, int w) {
        return std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
      };
      switch (kind) {
        case Kind::dense:
          return "dense " + std::to_string(inputs) + " -> " + std::to_string(outputs) + ", " +
                 act_name(act);
        case Kind::conv2d:
          return "conv2d " + image(channels, height, width) + " -> " +
                 image(out_channels, out_height(), out_width()) + ", k" + std::to_string(kernel) +
                 " s" + std::to_string(stride) + " p" + std::to_string(padding) + ", " +
                 act_name(act);
        case Kind::max_pool2d:
          return "maxpool2d " + image(channels, height, width) + " -> " +
                 image(channels, out_height(), out_width()) + ", " + std::to_string(pool) + "x" +
                 std::to_string(pool);
        case Kind::dropout:
          return "dropout " + std::to_string(inputs);
        case Kind::batch_norm:
          return "batchnorm " +
                 (height == 0 ? std::to_string(channels) : image(channels, height, width)) +
                 ", eps " + std::to_string(epsilon) + ", " + act_name(act);
      }
      return "";
    }
  };

  DynamicNetwork() = default;

  /// \brief Reads a backprop binary model (`save`) or an ONNX model, told apart by their
  /// first bytes.
  /// \throws ModelFormatError naming the file and the problem (unknown layer record,
  ///         unsupported ONNX operator, truncated or corrupted file)
  [[nodiscard]] static DynamicNetwork load(const std::filesystem::path& path) {
    return detail::load_from_path(path, [](std::istream& is) { return load(is); });
  }
  /// \brief Reads a model from the rest of `is` (binary mode).
  [[nodiscard]] static DynamicNetwork load(std::istream& is) {
    const std::string bytes = detail::onnx::read_all(is);
    DynamicNetwork net;
    if (bytes.size() >= 4 && bytes.compare(0, 4, "BPNN") == 0) {
      net.read_binary(bytes);
    } else {
      net.read_onnx(bytes);
    }
    return net;
  }

  /// \brief The layers, first to last.
  [[nodiscard]] const std::vector<Layer>& layers() const noexcept { return m_layers; }
  /// \brief The flattened size of one input sample.
  [[nodiscard]] int inputs() const noexcept { return m_layers.front().inputs; }
  /// \brief The size of one output sample.
  [[nodiscard]] int outputs() const noexcept { return m_layers.back().outputs; }
  /// The shape of one input sample: {C, H, W} when the first layer takes an image,
  /// else {inputs}.
  [[nodiscard]] std::vector<int> input_shape() const {
    const Layer& l = m_layers.front();
    if (l.kind == Kind::conv2d || l.kind == Kind::max_pool2d)
      return {l.channels, l.height, l.width};
    return {l.inputs};
  }
  /// One line per layer.
  [[nodiscard]] std::string summary() const {
    std::string s;
    for (std::size_t i = 0; i < m_layers.size(); ++i) {
      s += "layer " + std::to_string(i) + ": " + m_layers[i].describe() + "\n";
    }
    return s;
  }

  /// \brief The outputs for a batch (one column per sample) or one sample (a column).
  /// Const and thread-safe.
  /// \throws ShapeError if `x` does not have `inputs()` rows
  template <class D>
  [[nodiscard]] Matrix feedforward(const Eigen::MatrixBase<D>& x) const {
    static_assert(std::is_same_v<typename D::Scalar, Scalar>,
                  "backprop::DynamicNetwork::feedforward: the data's scalar type must match the "
                  "network's Scalar (convert with .template cast<Scalar>())");
    if (m_layers.empty())
      throw ShapeError("feedforward: the DynamicNetwork has no layers (load one)");
    if (x.rows() != inputs()) {
      throw ShapeError("feedforward: input has " + std::to_string(x.rows()) + " rows, layer 0 (" +
                       m_layers.front().describe() + ") expects " + std::to_string(inputs()));
    }
    const Eigen::Ref<const Matrix> in(x.derived());
    const detail::FlushSubnormals flush;  // as BasicNetwork::feedforward (subnormals.hpp)
    Matrix a, b;
    apply(m_layers.front(), in, a);
    for (std::size_t i = 1; i < m_layers.size(); ++i) {
      apply(m_layers[i], a, b);
      a.swap(b);
    }
    return a;
  }

  /// \brief The class of each sample: the index of its largest output.
  template <class D>
  [[nodiscard]] Eigen::VectorXi predict(const Eigen::MatrixBase<D>& x) const {
    const Matrix out = feedforward(x);
    Eigen::VectorXi labels(out.cols());
    for (Eigen::Index j = 0; j < out.cols(); ++j) out.col(j).maxCoeff(&labels(j));
    return labels;
  }

  /// \brief Writes the network as ONNX, as `BasicNetwork::save_onnx` does.
  void save_onnx(const std::filesystem::path& path) const {
    detail::save_to_path(path, [this](std::ostream& os) { save_onnx(os); });
  }
  /// \brief Writes the network as ONNX to `os` (binary mode).
  void save_onnx(std::ostream& os) const {
    if (m_layers.empty()) throw ShapeError("save_onnx: the DynamicNetwork has no layers");
    detail::onnx::GraphWriter g(inputs());
    for (std::size_t i = 0; i < m_layers.size(); ++i) {
      const Layer& l = m_layers[i];
      g.begin_layer(i);
      switch (l.kind) {
        case Kind::dense:
          g.gemm(l.weights, l.biases);
          break;
        case Kind::conv2d:
          g.conv(l.weights, l.biases, l.channels, l.height, l.width, l.out_channels, l.kernel,
                 l.stride, l.padding);
          break;
        case Kind::max_pool2d:
          g.max_pool(l.channels, l.height, l.width, l.pool);
          break;
        case Kind::dropout:
          break;
        case Kind::batch_norm:
          g.batch_norm(l.weights, l.biases, l.state, l.channels, l.height, l.width, l.epsilon);
          break;
      }
      if (l.kind == Kind::dense || l.kind == Kind::conv2d || l.kind == Kind::batch_norm) {
        switch (l.act) {
          case Act::identity:
            break;
          case Act::sigmoid:
            g.template activation<Sigmoid>();
            break;
          case Act::tanh:
            g.template activation<Tanh>();
            break;
          case Act::relu:
            g.template activation<ReLU>();
            break;
          case Act::leaky_relu:
            g.leaky_relu(l.slope);
            break;
          case Act::softmax:
            g.template activation<Softmax>();
            break;
        }
      }
    }
    detail::onnx::write_bytes(os, g.finish(outputs()));
  }

  /// \brief The activation's name in the model files: "identity", "sigmoid", ...
  [[nodiscard]] static std::string act_name(Act a) {
    switch (a) {
      case Act::identity:
        return "identity";
      case Act::sigmoid:
        return "sigmoid";
      case Act::tanh:
        return "tanh";
      case Act::relu:
        return "relu";
      case Act::leaky_relu:
        return "leaky_relu";
      case Act::softmax:
        return "softmax";
    }
    return "";
  }

 private:
  // ---- inference ----

  static void activate(const Layer& l, Matrix& z) {
    switch (l.act) {
      case Act::identity:
        break;
      case Act::sigmoid:
        detail::activation_forward<Sigmoid>(z, z);
        break;
      case Act::tanh:
        detail::activation_forward<Tanh>(z, z);
        break;
      case Act::relu:
        detail::activation_forward<ReLU>(z, z);
        break;
      case Act::leaky_relu: {
        const auto s = static_cast<Scalar>(l.slope);
        z = (z.array() > Scalar(0)).select(z.array(), s * z.array()).matrix();
        break;
      }
      case Act::softmax:
        detail::activation_forward<Softmax>(z, z);
        break;
    }
  }

  static void apply(const Layer& l, const Eigen::Ref<const Matrix>& x, Matrix& y) {
    switch (l.kind) {
      case Kind::dense:
        detail::multiply(y, l.weights, x);  // backprop's kernels where they take it
        y.colwise() += l.biases;
        activate(l, y);
        return;
      case Kind::conv2d:
        conv(l, x, y);
        activate(l, y);
        return;
      case Kind::max_pool2d:
        max_pool(l, x, y);
        return;
      case Kind::dropout:
        y = x;
        return;
      case Kind::batch_norm: {
        const Eigen::Index positions = l.height == 0 ? 1 : Eigen::Index{l.height} * l.width;
        detail::batch_norm_inference(x, l.weights, l.biases, l.state, l.channels, positions,
                                     l.epsilon, y);
        activate(l, y);
        return;
      }
    }
  }

  /// im2col: the windows of a block of samples stacked as rows (sample-major), times W^T;
  /// blocks of samples whose windows take about 4 MB.
  static void conv(const Layer& l, const Eigen::Ref<const Matrix>& x, Matrix& y) {
    const int oh = l.out_height(), ow = l.out_width(), k = l.kernel;
    const Eigen::Index positions = Eigen::Index{oh} * ow, patch = Eigen::Index{l.channels} * k * k;
    const Eigen::Index m = x.cols();
    y.resize(Eigen::Index{l.out_channels} * positions, m);
    const Eigen::Index block = std::clamp<Eigen::Index>(
        (Eigen::Index{1} << 20) / std::max<Eigen::Index>(1, positions * patch), 1,
        std::max<Eigen::Index>(1, m));
    Matrix patches, z;
    detail::GemmWorkspace<Scalar> gemm;
    for (Eigen::Index first = 0; first < m; first += block) {
      const Eigen::Index n = std::min(block, m - first);
      // Column (c K + i) K + j of the patches, row s positions + y OW + x, is
      // in(c, S y + i - P, S x + j - P) of sample s, or 0: written column by column.
      patches.resize(n * positions, patch);
      const Eigen::Index rows = n * positions;
      for (int c = 0; c < l.channels; ++c) {
        for (int i = 0; i < k; ++i) {
          for (int j = 0; j < k; ++j) {
            Scalar* column = patches.data() + rows * ((Eigen::Index{c} * k + i) * k + j);
            for (Eigen::Index s = 0; s < n; ++s) {
              const Scalar* image = x.col(first + s).data() + Eigen::Index{l.height} * l.width * c;
              Scalar* out = column + s * positions;
              for (int oy = 0; oy < oh; ++oy) {
                const int iy = l.stride * oy + i - l.padding;
                Scalar* row = out + Eigen::Index{oy} * ow;
                if (iy < 0 || iy >= l.height) {
                  std::fill(row, row + ow, Scalar(0));
                  continue;
                }
                const Scalar* in = image + Eigen::Index{l.width} * iy;
                if (l.padding == 0 && l.stride == 1) {  // the common case: a plain copy
                  std::copy(in + j, in + j + ow, row);
                  continue;
                }
                for (int ox = 0; ox < ow; ++ox) {
                  const int ix = l.stride * ox + j - l.padding;
                  row[ox] = (ix >= 0 && ix < l.width) ? in[ix] : Scalar(0);
                }
              }
            }
          }
        }
      }
      gemm.template assign<false, true>(z, patches, l.weights);  // (n positions) x out_channels
      for (Eigen::Index s = 0; s < n; ++s) {
        for (int o = 0; o < l.out_channels; ++o) {
          y.col(first + s).segment(Eigen::Index{o} * positions, positions) =
              (z.col(o).segment(s * positions, positions).array() + l.biases(o)).matrix();
        }
      }
    }
  }

  /// Window maxima; the first maximum in row-major order wins ties, NaN wins (as
  /// MaxPool2D).
  static void max_pool(const Layer& l, const Eigen::Ref<const Matrix>& x, Matrix& y) {
    const int oh = l.out_height(), ow = l.out_width(), p = l.pool;
    y.resize(Eigen::Index{l.channels} * oh * ow, x.cols());
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      const Scalar* in = x.col(j).data();
      Scalar* out = y.col(j).data();
      for (int c = 0; c < l.channels; ++c) {
        for (int oy = 0; oy < oh; ++oy) {
          // The window's values in row-major order, a whole output row at a time.
          Scalar* o = out + (Eigen::Index{c} * oh + oy) * ow;
          for (int dy = 0; dy < p; ++dy) {
            const Scalar* r =
                in + (Eigen::Index{c} * l.height + Eigen::Index{oy} * p + dy) * l.width;
            for (int dx = 0; dx < p; ++dx) {
              if (dy == 0 && dx == 0) {
                for (int ox = 0; ox < ow; ++ox) o[ox] = r[ox * p];
                continue;
              }
              for (int ox = 0; ox < ow; ++ox) {
                const Scalar v = r[ox * p + dx];
                o[ox] = (v > o[ox] || v != v) ? v : o[ox];  // a later tie loses; NaN wins
              }
            }
          }
        }
      }
    }
  }

  // ---- reading ----

  [[noreturn]] static void fail(const std::string& problem) {
    throw ModelFormatError("load: " + problem);
  }

  static Act parse_act(std::string_view name, const std::string& where) {
    if (name == "identity") return Act::identity;
    if (name == "sigmoid") return Act::sigmoid;
    if (name == "tanh") return Act::tanh;
    if (name == "relu") return Act::relu;
    if (name == "leaky_relu") return Act::leaky_relu;
    if (name == "softmax") return Act::softmax;
    fail(where + " has the activation '" + std::string(name) +
         "', which is not a built-in one (DynamicNetwork reads built-in layers only)");
  }

  /// Parses the integers of "conv2d(1x28x28,20,k5,s1,p0,relu)" in order; returns the
  /// text after the last one.
  static std::vector<int> record_numbers(std::string_view s, std::string_view& rest) {
    std::vector<int> v;
    std::size_t i = 0;
    while (i < s.size()) {
      if (s[i] >= '0' && s[i] <= '9') {
        int n = 0;
        const auto [p, ec] = std::from_chars(s.data() + i, s.data() + s.size(), n);
        if (ec != std::errc{}) return {};
        v.push_back(n);
        i = static_cast<std::size_t>(p - s.data());
        rest = s.substr(i);
      } else {
        ++i;
      }
    }
    return v;
  }

  void read_binary(const std::string& bytes) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const std::size_t size = bytes.size();
    const auto need = [&](std::size_t at, std::size_t n, const std::string& what) {
      if (size < 4 || at + n > size - 4) {
        fail("truncated file: it ends after " + std::to_string(size) + " bytes, while reading " +
             what);
      }
    };
    need(4, 16, "the header");
    const std::uint32_t version = detail::model_le32(p + 4);
    if (version != detail::model_format_version) {
      fail("unsupported model format version " + std::to_string(version));
    }
    const std::uint32_t type = detail::model_le32(p + 8), scalar = detail::model_le32(p + 12);
    if (!((type == 1 && scalar == 4) || (type == 2 && scalar == 8))) {
      fail("unknown scalar type code " + std::to_string(type) + " (size " + std::to_string(scalar) +
           ")");
    }
    const std::uint32_t count = detail::model_le32(p + 16);
    if (count == 0 || count > 100000) fail("the file has " + std::to_string(count) + " layers");
    std::size_t at = 20;
    double parameters = 0;
    std::vector<Layer> layers;
    for (std::uint32_t i = 0; i < count; ++i) {
      const std::string where = "layer " + std::to_string(i);
      need(at, 12, "the record of " + where);
      Layer l;
      const std::uint32_t in = detail::model_le32(p + at), out = detail::model_le32(p + at + 4),
                          n = detail::model_le32(p + at + 8);
      at += 12;
      if (n == 0 || n > detail::model_max_name_length)
        fail(where + " has a name of length " + std::to_string(n));
      need(at, n, "the name of " + where);
      const std::string name(bytes.data() + at, n);
      at += n;
      if (in == 0 || out == 0 || in > (1U << 28) || out > (1U << 28)) {
        fail(where + " has " + std::to_string(in) + " inputs and " + std::to_string(out) +
             " outputs");
      }
      l.inputs = static_cast<int>(in);
      l.outputs = static_cast<int>(out);
      std::string_view rest;
      const std::string bad = where + " has the record '" + name + "'";
      double weights = 0;  // the layer's parameter count (as double: no overflow)
      if (name.rfind("conv2d(", 0) == 0) {
        const auto v = record_numbers(std::string_view(name).substr(7), rest);
        if (v.size() != 7 || rest.size() < 3 || rest.front() != ',' || rest.back() != ')')
          fail(bad + ", not a conv2d record");
        l.kind = Kind::conv2d;
        l.channels = v[0], l.height = v[1], l.width = v[2], l.out_channels = v[3], l.kernel = v[4];
        l.stride = v[5], l.padding = v[6];
        l.act = parse_act(rest.substr(1, rest.size() - 2), where);
        if (*std::max_element(v.begin(), v.end()) > (1 << 28) || l.kernel > (1 << 14) ||
            l.padding > (1 << 14)) {
          fail(bad + ", whose sizes are absurd");
        }
        if (l.channels <= 0 || l.height <= 0 || l.width <= 0 || l.out_channels <= 0 ||
            l.kernel <= 0 || l.stride <= 0 || l.kernel > l.height + 2 * l.padding ||
            l.kernel > l.width + 2 * l.padding ||
            double(l.channels) * l.height * l.width != double(in) ||
            double(l.out_channels) * l.out_height() * l.out_width() != double(out)) {
          fail(bad + ", whose geometry does not give its " + std::to_string(in) + " inputs and " +
               std::to_string(out) + " outputs");
        }
        weights = double(l.out_channels) * l.channels * l.kernel * l.kernel + l.out_channels;
      } else if (name.rfind("maxpool2d(", 0) == 0) {
        const auto v = record_numbers(std::string_view(name).substr(10), rest);
        if (v.size() != 4 || rest != ")") fail(bad + ", not a maxpool2d record");
        l.kind = Kind::max_pool2d;
        l.channels = v[0], l.height = v[1], l.width = v[2], l.pool = v[3];
        if (l.channels <= 0 || l.pool <= 0 || l.height <= 0 || l.width <= 0 ||
            *std::max_element(v.begin(), v.end()) > (1 << 28) || l.height % l.pool != 0 ||
            l.width % l.pool != 0 || double(l.channels) * l.height * l.width != double(in) ||
            double(l.channels) * l.out_height() * l.out_width() != double(out)) {
          fail(bad + ", whose geometry does not give its inputs and outputs");
        }
      } else if (name.rfind("batchnorm(", 0) == 0 || name.rfind("batchnorm2d(", 0) == 0) {
        const bool image = name[9] == '2';
        const auto v = record_numbers(std::string_view(name).substr(image ? 12 : 10), rest);
        // batchnorm(C,epsA/B,mC/D,act) or batchnorm2d(CxHxW,epsA/B,mC/D,act)
        if (v.size() != (image ? 7u : 5u) || rest.size() < 3 || rest.front() != ',' ||
            rest.back() != ')') {
          fail(bad + ", not a batchnorm record");
        }
        l.kind = Kind::batch_norm;
        l.act = parse_act(rest.substr(1, rest.size() - 2), where);
        l.channels = v[0];
        if (image) l.height = v[1], l.width = v[2];
        const std::size_t e = image ? 3 : 1;
        if (v[e] <= 0 || v[e + 1] <= 0 || l.channels <= 0 ||
            *std::max_element(v.begin(), v.end()) > (1 << 28)) {
          fail(bad + ", whose numbers are not valid");
        }
        l.epsilon = double(v[e]) / double(v[e + 1]);
        if (double(l.channels) * (image ? double(l.height) * l.width : 1.0) != double(in) ||
            in != out) {
          fail(bad + ", whose geometry does not give its inputs and outputs");
        }
        weights = 4.0 * l.channels;
      } else if (name == "dropout") {
        l.kind = Kind::dropout;
        if (in != out)
          fail(bad + " with " + std::to_string(in) + " inputs but " + std::to_string(out) +
               " outputs");
      } else {
        l.kind = Kind::dense;
        l.act = parse_act(name, where);
        weights = double(l.outputs) * l.inputs + l.outputs;
      }
      if (!layers.empty() && layers.back().outputs != l.inputs) {
        fail(where + " takes " + std::to_string(in) + " values, layer " + std::to_string(i - 1) +
             " gives " + std::to_string(layers.back().outputs));
      }
      parameters += weights;
      if (parameters * scalar > double(size)) {
        fail("truncated file: it has " + std::to_string(size) +
             " bytes; the parameters of layers 0 to " + std::to_string(i) + " alone need more");
      }
      layers.push_back(std::move(l));
    }
    // Now that the file is known to hold them, the parameter matrices.
    for (Layer& l : layers) {
      if (l.kind == Kind::dense) {
        l.weights.resize(l.outputs, l.inputs);
        l.biases.resize(l.outputs);
      } else if (l.kind == Kind::conv2d) {
        l.weights.resize(l.out_channels, Eigen::Index{l.channels} * l.kernel * l.kernel);
        l.biases.resize(l.out_channels);
      } else if (l.kind == Kind::batch_norm) {
        l.weights.resize(l.channels, 1);
        l.biases.resize(l.channels);
        l.state.resize(2 * Eigen::Index{l.channels});
      }
    }
    const std::uint64_t expected = at + static_cast<std::uint64_t>(parameters) * scalar + 4;
    if (expected != size) {
      fail(size < expected ? "truncated file: it has " + std::to_string(size) +
                                 " bytes, its layers need " + std::to_string(expected)
                           : "the file has " + std::to_string(size - expected) +
                                 " unexpected bytes after the checksum");
    }
    const std::uint32_t crc = detail::crc32(p, size - 4, 0);
    if (crc != detail::model_le32(p + size - 4)) fail("checksum mismatch: the file is corrupted");
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const auto read = [&](auto& mat, const char* what) {
        for (Eigen::Index r = 0; r < mat.rows(); ++r) {
          for (Eigen::Index c = 0; c < mat.cols(); ++c) {
            const double v =
                scalar == 4 ? static_cast<double>(std::bit_cast<float>(detail::model_le32(p + at)))
                            : std::bit_cast<double>(detail::model_le64(p + at));
            at += scalar;
            if (!std::isfinite(v) || (std::is_same_v<Scalar, float> &&
                                      std::abs(v) > std::numeric_limits<float>::max())) {
              fail("layer " + std::to_string(i) + " " + what + " (" + std::to_string(r) + ", " +
                   std::to_string(c) + ") is " + std::to_string(v) + " (not finite as " +
                   (std::is_same_v<Scalar, float> ? "float" : "double") + ")");
            }
            mat(r, c) = static_cast<Scalar>(v);
          }
        }
      };
      read(layers[i].weights, "weight");
      read(layers[i].biases, "bias");
      read(layers[i].state, "state");
      if (layers[i].kind == Kind::batch_norm &&
          (layers[i].state.tail(layers[i].channels).array() < 0).any()) {
        fail("layer " + std::to_string(i) + " has a negative running variance");
      }
    }
    m_layers = std::move(layers);
  }

  void read_onnx(const std::string& bytes) {
    if (bytes.empty()) throw ModelFormatError("ONNX: the file is empty");
    const detail::onnx::Model model = detail::onnx::parse_model(bytes);
    detail::onnx::GraphReader g(model);
    std::vector<Layer> layers;
    while (const detail::onnx::Node* node = g.next_node()) {
      const std::size_t index = layers.size();
      const std::vector<std::int64_t> shape = g.sample_shape();
      if (shape.empty()) {
        g.reject_next("has an input whose shape is not known: the graph input needs its sizes");
      }
      if (detail::onnx::product(shape) > (std::int64_t{1} << 28)) {
        g.reject_next("takes more than 2^28 values per sample");
      }
      Layer l;
      l.inputs = static_cast<int>(detail::onnx::product(shape));
      const std::string& op = node->op_type;
      const auto attr_ints = [&](const char* name) -> std::vector<std::int64_t> {
        const auto* a = node->attribute(name);
        return a == nullptr ? std::vector<std::int64_t>{} : a->ints;
      };
      if (op == "Gemm" || op == "MatMul") {
        const detail::onnx::Tensor* w = g.next_constant(1);
        if (w == nullptr || w->dims.size() != 2 || !w->holds_its_values()) {
          g.reject_next("has no constant 2-D weights");
        }
        const auto* tb = node->attribute("transB");
        const bool trans_b = op == "Gemm" && tb != nullptr && tb->i != 0;
        const std::int64_t out = trans_b ? w->dims[0] : w->dims[1];
        if ((trans_b ? w->dims[1] : w->dims[0]) != l.inputs) {
          g.reject_next("has weights '" + w->name + "' of shape " +
                        detail::onnx::dims_text(w->dims) + " for an input of " +
                        std::to_string(l.inputs) + " values");
        }
        if (out <= 0 || out > (1 << 28)) g.reject_next("has " + std::to_string(out) + " outputs");
        l.kind = Kind::dense;
        l.outputs = static_cast<int>(out);
        l.weights.resize(l.outputs, l.inputs);
        l.biases.resize(l.outputs);
        g.begin_layer(index, "dense, " + std::to_string(l.inputs) + " -> " + std::to_string(out));
        g.gemm(l.weights, l.biases);
      } else if (op == "Conv") {
        const detail::onnx::Tensor* w = g.next_constant(1);
        if (shape.size() != 3)
          g.reject_next("takes a tensor of rank " + std::to_string(shape.size() + 1));
        if (w == nullptr || w->dims.size() != 4 || !w->holds_its_values()) {
          g.reject_next("has no constant 4-D filters");
        }
        const auto strides = attr_ints("strides"), pads = attr_ints("pads");
        l.kind = Kind::conv2d;
        l.channels = static_cast<int>(shape[0]), l.height = static_cast<int>(shape[1]),
        l.width = static_cast<int>(shape[2]);
        l.out_channels = static_cast<int>(std::clamp<std::int64_t>(w->dims[0], 1, 1 << 20));
        l.kernel = static_cast<int>(std::clamp<std::int64_t>(w->dims[2], 1, 1 << 16));
        l.stride = strides.empty()
                       ? 1
                       : static_cast<int>(std::clamp<std::int64_t>(strides[0], 1, 1 << 16));
        l.padding =
            pads.empty() ? 0 : static_cast<int>(std::clamp<std::int64_t>(pads[0], 0, 1 << 16));
        if (w->dims[1] != l.channels || w->dims[2] != w->dims[3]) {
          g.reject_next("has filters '" + w->name + "' of shape " +
                        detail::onnx::dims_text(w->dims) + " for an input of " +
                        std::to_string(l.channels) + " channels");
        }
        if (l.kernel > l.height + 2 * l.padding || l.kernel > l.width + 2 * l.padding) {
          g.reject_next("has a kernel larger than its padded input");
        }
        if (double(l.out_channels) * l.out_height() * l.out_width() > double(1 << 28)) {
          g.reject_next("gives more than 2^28 values per sample");
        }
        l.outputs = l.out_channels * l.out_height() * l.out_width();
        l.weights.resize(l.out_channels, Eigen::Index{l.channels} * l.kernel * l.kernel);
        l.biases.resize(l.out_channels);
        g.begin_layer(index, "conv2d");
        g.conv(l.weights, l.biases, l.channels, l.height, l.width, l.out_channels, l.kernel,
               l.stride, l.padding);
      } else if (op == "MaxPool") {
        const auto kernel = attr_ints("kernel_shape");
        if (shape.size() != 3)
          g.reject_next("takes a tensor of rank " + std::to_string(shape.size() + 1));
        if (kernel.empty() || kernel[0] <= 0 || kernel[0] > (1 << 16))
          g.reject_next("has no kernel_shape");
        l.kind = Kind::max_pool2d;
        l.channels = static_cast<int>(shape[0]), l.height = static_cast<int>(shape[1]),
        l.width = static_cast<int>(shape[2]), l.pool = static_cast<int>(kernel[0]);
        if (l.height % l.pool != 0 || l.width % l.pool != 0) {
          g.reject_next("has windows of " + std::to_string(l.pool) + " that do not divide the " +
                        std::to_string(l.height) + " x " + std::to_string(l.width) + " image");
        }
        l.outputs = l.channels * l.out_height() * l.out_width();
        g.begin_layer(index, "maxpool2d");
        g.max_pool(l.channels, l.height, l.width, l.pool);
      } else if (op == "BatchNormalization") {
        const detail::onnx::Tensor* scale = g.next_constant(1);
        if (scale == nullptr || scale->dims.size() != 1) g.reject_next("has no constant 1-D scale");
        if (shape.size() != 1 && shape.size() != 3) g.reject_next("takes a tensor of rank 3");
        l.kind = Kind::batch_norm;
        l.channels = static_cast<int>(shape[0]);
        if (shape.size() == 3) {
          l.height = static_cast<int>(shape[1]);
          l.width = static_cast<int>(shape[2]);
        }
        const auto* eps = node->attribute("epsilon");
        l.epsilon = eps != nullptr && eps->has_f ? double(eps->f) : 1e-5;
        if (!(l.epsilon > 0)) g.reject_next("has an epsilon that is not positive");
        l.outputs = l.inputs;
        l.weights.resize(l.channels, 1);
        l.biases.resize(l.channels);
        l.state.resize(2 * Eigen::Index{l.channels});
        g.begin_layer(index, "batchnorm");
        g.batch_norm(l.weights, l.biases, l.state, l.channels, l.height, l.width, l.epsilon);
      } else {
        g.reject_next(
            "is an operator backprop does not read (a layer starts with Gemm, MatMul, "
            "Conv, MaxPool or BatchNormalization)");
      }
      if (l.kind == Kind::dense || l.kind == Kind::conv2d || l.kind == Kind::batch_norm) {
        double alpha = 0.01;
        const std::string act = g.take_activation(alpha);
        l.act = act.empty() ? Act::identity : parse_act(act, "the graph");
        l.slope = alpha;
      }
      layers.push_back(std::move(l));
    }
    if (layers.empty()) throw ModelFormatError("ONNX: the graph has no layers");
    g.finish(layers.back().outputs);
    m_layers = std::move(layers);
  }

  std::vector<Layer> m_layers;
};

}  // namespace backprop
