/// \file
/// \brief `MaxPool2D<Channels, InHeight, InWidth, Pool>`: the maximum of each
/// non-overlapping Pool x Pool window of each channel. No parameters.
///
/// One sample is a column of Channels x InHeight x InWidth values (CHW order); the
/// output is Channels x (InHeight / Pool) x (InWidth / Pool):
///   forward:   out(c, y, x) = max over i, j < Pool of in(c, Pool y + i, Pool x + j)
///   backward:  dC/din is zero except at the position of each window's maximum, which
///              receives dC/dout(c, y, x). Ties: the first maximum in row-major order
///              of the window (smallest i, then smallest j) gets the gradient, as
///              PyTorch's CPU max_pool2d chooses; a NaN in a window is its maximum.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "../concepts.hpp"
#include "../detail/shape.hpp"
#include "../init/random.hpp"

namespace backprop {

namespace detail {

/// The record name of a `MaxPool2D`, e.g. "maxpool2d(20x24x24,2)".
template <int C, int H, int W, int Pool>
struct MaxPoolName {
  static constexpr auto storage = [] {
    FixedName<64> n;
    n << "maxpool2d(" << C << "x" << H << "x" << W << "," << Pool << ")";
    return n;
  }();
};

}  // namespace detail

/// \brief The layer object of `MaxPool2D` for a scalar type. `weights()` and `biases()`
/// are empty (0 x 0 and 0 x 1): the layer has no parameters.
template <class Scalar_, int C, int H, int W, int Pool>
class MaxPool2DLayer {
 public:
  /// `float` or `double`.
  using Scalar = Scalar_;
  /// A batch, one column per sample.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  /// A column vector.
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  /// H / Pool, the height of the output.
  static constexpr int out_height = H / Pool;
  /// W / Pool, the width of the output.
  static constexpr int out_width = W / Pool;
  /// C H W values per sample.
  static constexpr int inputs = C * H * W;
  /// C (H / Pool) (W / Pool) values per sample.
  static constexpr int outputs = C * out_height * out_width;
  /// The shape of `weights()` and `biases()`: empty.
  ///@{
  static constexpr int weight_rows = 0, weight_cols = 0, bias_rows = 0;
  ///@}
  /// The record name, e.g. "maxpool2d(20x24x24,2)".
  static constexpr std::string_view model_name = detail::MaxPoolName<C, H, W, Pool>::storage.view();

  /// \brief No weights: an empty matrix.
  ///@{
  [[nodiscard]] Matrix& weights() noexcept { return m_none; }
  [[nodiscard]] const Matrix& weights() const noexcept { return m_none; }
  ///@}
  /// \brief No biases: an empty vector.
  ///@{
  [[nodiscard]] Vector& biases() noexcept { return m_none_b; }
  [[nodiscard]] const Vector& biases() const noexcept { return m_none_b; }
  ///@}
  /// \brief ONNX (io/onnx.hpp): MaxPool(kernel_shape = strides = [Pool, Pool]).
  template <class Graph>
  void write_onnx(Graph& g) const {
    g.max_pool(C, H, W, Pool);
  }
  /// \brief Reads what `write_onnx` writes.
  template <class Graph>
  void read_onnx(Graph& g) {
    g.max_pool(C, H, W, Pool);
  }
  /// \brief Always equal: no parameters.
  friend bool operator==(const MaxPool2DLayer&, const MaxPool2DLayer&) { return true; }

  /// \brief The window maxima of a batch (one column per sample).
  template <class X>
  void forward(const X& x, Matrix& y) const {
    const Eigen::Ref<const Matrix> xr(x);
    y.resize(outputs, xr.cols());
    pool(xr, y, nullptr);
  }

  /// What a training pass keeps: the output and, per output, the row of the input that
  /// holds the maximum (where backward sends the gradient).
  struct Workspace {
    Matrix a;  ///< the output
    /// The input row of each output's maximum.
    Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic> argmax;
  };

  /// \brief Training pass: the window maxima and where they are (no random masks).
  template <class X>
  void forward(const X& x, Workspace& ws, Rng* /*masks*/) const {
    const Eigen::Ref<const Matrix> xr(x);
    ws.a.resize(outputs, xr.cols());
    ws.argmax.resize(outputs, xr.cols());
    pool(xr, ws.a, &ws.argmax);
  }

  /// \brief What the training pass passes on: the window maxima.
  [[nodiscard]] static const Matrix& output(const Workspace& ws) noexcept { return ws.a; }

  /// \brief dC/din(argmax of each window) = dC/dout of the window; zero elsewhere.
  template <class X, class Sink>
  void backward(const X& /*x*/, Workspace& ws, Matrix& g, Matrix* dx, Sink& /*sink*/) {
    if (dx == nullptr) return;
    dx->setZero(inputs, g.cols());
    for (Eigen::Index s = 0; s < g.cols(); ++s) {
      Scalar* d = dx->col(s).data();
      const Scalar* gs = g.col(s).data();
      const std::int32_t* at = ws.argmax.col(s).data();
      for (int k = 0; k < outputs; ++k) d[at[k]] += gs[k];
    }
  }

 private:
  template <class Argmax>  // a pointer to the argmax matrix, or std::nullptr_t
  static void pool(const Eigen::Ref<const Matrix>& x, Matrix& y, Argmax argmax) {
    for (Eigen::Index s = 0; s < x.cols(); ++s) {
      const Scalar* in = x.col(s).data();
      Scalar* out = y.col(s).data();
      for (int c = 0; c < C; ++c) {
        for (int oy = 0; oy < out_height; ++oy) {
          for (int ox = 0; ox < out_width; ++ox) {
            int best = (c * H + oy * Pool) * W + ox * Pool;
            Scalar max = in[best];
            for (int i = 0; i < Pool; ++i) {
              const int row = (c * H + oy * Pool + i) * W + ox * Pool;
              for (int j = 0; j < Pool; ++j) {
                const Scalar v = in[row + j];
                if (v > max || (std::isnan(v) && !std::isnan(max))) {
                  max = v;
                  best = row + j;
                }
              }
            }
            const int k = (c * out_height + oy) * out_width + ox;
            out[k] = max;
            if constexpr (!std::is_same_v<Argmax, std::nullptr_t>) (*argmax)(k, s) = best;
          }
        }
      }
    }
  }

  Matrix m_none;
  Vector m_none_b;
};

/// \brief Max pooling over non-overlapping `Pool x Pool` windows of each channel of a
/// `Channels x InHeight x InWidth` input (see the file comment).
template <int Channels, int InHeight, int InWidth, int Pool>
struct MaxPool2D {
  static_assert(Channels > 0 && InHeight > 0 && InWidth > 0 && Pool > 0,
                "backprop::MaxPool2D<Channels, InHeight, InWidth, Pool>: all sizes must be "
                "positive");
  static_assert(InHeight % Pool == 0 && InWidth % Pool == 0,
                "backprop::MaxPool2D<Channels, InHeight, InWidth, Pool>: Pool must divide "
                "InHeight and InWidth (the windows do not overlap and must cover the image)");
  /// Channels x InHeight x InWidth.
  using input_shape = detail::ImageShape<Channels, InHeight, InWidth>;
  /// Channels x (InHeight / Pool) x (InWidth / Pool).
  using output_shape = detail::ImageShape<Channels, InHeight / Pool, InWidth / Pool>;
  /// The flattened size of one input sample.
  static constexpr int inputs = input_shape::size;
  /// The flattened size of one output sample.
  static constexpr int outputs = output_shape::size;
  /// The layer object for a scalar type (`net.layer<I>()`).
  template <class Scalar>
  using Instance = MaxPool2DLayer<Scalar, Channels, InHeight, InWidth, Pool>;
};

}  // namespace backprop
