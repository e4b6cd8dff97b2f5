/// \file
/// \brief `Conv2D<InChannels, InHeight, InWidth, OutChannels, Kernel, Act, Stride,
/// Padding>`: a 2-D convolution (cross-correlation, as PyTorch's `Conv2d` and
/// network3.py: no kernel flip) followed by an activation.
///
/// One sample is a column of C x H x W values in CHW order (channel, row, column).
/// With OH = (H + 2 P - K) / S + 1 and OW likewise, for output channel o and position
/// (y, x):
///   forward:   z(o, y, x) = b(o) + sum over c, i, j of W(o, (c K + i) K + j) *
///                           in(c, S y + i - P, S x + j - P)   (zero outside the image)
///              out = sigma(z)
///   backward:  given g = dC/d(out): delta = sigma'(z)^T g, dC/db(o) = sum over the
///              samples and positions of delta(o, y, x), dC/dW(o, q) = sum of
///              delta(o, y, x) * in(position q of window (y, x)), and dC/din scatters
///              W(o, q) delta(o, y, x) back onto the input positions of each window.
///
/// Computed as im2col products: the windows of a batch of m samples are the rows of a
/// (m OH OW) x (C K K) patch matrix X_p, so Z = X_p W^T (one product for the batch),
/// dW = Delta^T X_p and dX_p = Delta W, which col2im adds back onto the input image.
/// W is OutChannels x (C K K): PyTorch's [out, in, kh, kw] weight, flattened row-major.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <string_view>
#include <type_traits>

#include "../activations/activations.hpp"
#include "../concepts.hpp"
#include "../detail/products.hpp"
#include "../detail/shape.hpp"
#include "../init/initializers.hpp"
#include "../init/random.hpp"
#include "activated.hpp"

namespace backprop {

namespace detail {

/// The im2col geometry of one convolution (internal).
template <int C, int H, int W, int K, int S, int P>
struct ConvGeometry {
  static constexpr int out_height = (H + 2 * P - K) / S + 1;
  static constexpr int out_width = (W + 2 * P - K) / S + 1;
  static constexpr int positions = out_height * out_width;  // windows per channel
  static constexpr int patch = C * K * K;                   // values per window

  /// Writes the windows of the `m` samples in the columns of x (C H W rows each, column
  /// stride `ld`) into `patches` ((m positions) x patch, column-major): row s positions
  /// + y OW + x of column (c K + i) K + j is in(c, S y + i - P, S x + j - P), or 0.
  template <class Scalar>
  static void im2col(const Scalar* x, Eigen::Index ld, Eigen::Index m, Scalar* patches) {
    const Eigen::Index rows = m * positions;
    for (int c = 0; c < C; ++c) {
      for (int i = 0; i < K; ++i) {
        for (int j = 0; j < K; ++j) {
          Scalar* column = patches + rows * ((c * K + i) * K + j);
          for (Eigen::Index s = 0; s < m; ++s) {
            const Scalar* image = x + ld * s + std::ptrdiff_t{H} * W * c;
            Scalar* out = column + s * positions;
            for (int oy = 0; oy < out_height; ++oy) {
              const int iy = S * oy + i - P;
              Scalar* row = out + oy * out_width;
              if (iy < 0 || iy >= H) {
                for (int ox = 0; ox < out_width; ++ox) row[ox] = Scalar(0);
                continue;
              }
              const Scalar* in = image + std::ptrdiff_t{W} * iy;
              for (int ox = 0; ox < out_width; ++ox) {
                const int ix = S * ox + j - P;
                row[ox] = (ix >= 0 && ix < W) ? in[ix] : Scalar(0);
              }
            }
          }
        }
      }
    }
  }

  /// The adjoint of `im2col`: adds every patch value back onto its input position
  /// (dx must be zeroed first; column stride C H W).
  template <class Scalar>
  static void col2im(const Scalar* patches, Eigen::Index m, Scalar* dx) {
    const Eigen::Index rows = m * positions;
    for (int c = 0; c < C; ++c) {
      for (int i = 0; i < K; ++i) {
        for (int j = 0; j < K; ++j) {
          const Scalar* column = patches + rows * ((c * K + i) * K + j);
          for (Eigen::Index s = 0; s < m; ++s) {
            Scalar* image = dx + std::ptrdiff_t{C} * H * W * s + std::ptrdiff_t{H} * W * c;
            const Scalar* in = column + s * positions;
            for (int oy = 0; oy < out_height; ++oy) {
              const int iy = S * oy + i - P;
              if (iy < 0 || iy >= H) continue;
              Scalar* row = image + std::ptrdiff_t{W} * iy;
              const Scalar* g = in + oy * out_width;
              for (int ox = 0; ox < out_width; ++ox) {
                const int ix = S * ox + j - P;
                if (ix >= 0 && ix < W) row[ix] += g[ox];
              }
            }
          }
        }
      }
    }
  }
};

/// The record name of a `Conv2D` in the model files, geometry and activation included,
/// e.g. "conv2d(1x28x28,20,k5,s1,p0,relu)".
template <int C, int H, int W, int OC, int K, int S, int P, class Act>
struct ConvName {
  static constexpr auto storage = [] {
    FixedName<64 + Act::name.size()> n;
    n << "conv2d(" << C << "x" << H << "x" << W << "," << OC << ",k" << K << ",s" << S << ",p" << P
      << "," << std::string_view(Act::name) << ")";
    return n;
  }();
};

}  // namespace detail

/// \brief The layer object of `Conv2D` for a scalar type (what `net.layer<I>()` returns):
/// W (OutChannels x C K K), b (OutChannels) and the passes of the file comment.
template <class Scalar_, int C, int H, int W, int OC, int K, class Act, int S, int P>
class Conv2DLayer
    : public detail::ActivatedLayer<Conv2DLayer<Scalar_, C, H, W, OC, K, Act, S, P>, Act,
                                    Eigen::Matrix<Scalar_, Eigen::Dynamic, Eigen::Dynamic>> {
  using Geometry = detail::ConvGeometry<C, H, W, K, S, P>;

 public:
  /// `float` or `double`.
  using Scalar = Scalar_;
  /// A batch, one column per sample.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  /// A column vector.
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  /// The activation, sigma.
  using activation = Act;
  /// The input image, C x H x W.
  ///@{
  static constexpr int in_channels = C, in_height = H, in_width = W;
  ///@}
  /// The template's OutChannels, Kernel, Stride and Padding.
  ///@{
  static constexpr int out_channels = OC, kernel = K, stride = S, padding = P;
  ///@}
  /// OH = (H + 2 P - K) / S + 1.
  static constexpr int out_height = Geometry::out_height;
  /// OW = (W + 2 P - K) / S + 1.
  static constexpr int out_width = Geometry::out_width;
  /// C H W values per sample.
  static constexpr int inputs = C * H * W;
  /// OC OH OW values per sample.
  static constexpr int outputs = OC * out_height * out_width;
  /// The shape of `weights()` and `biases()`.
  ///@{
  static constexpr int weight_rows = OC, weight_cols = C * K * K, bias_rows = OC;
  ///@}
  /// The record name, e.g. "conv2d(1x28x28,20,k5,s1,p0,relu)".
  static constexpr std::string_view model_name =
      detail::ConvName<C, H, W, OC, K, S, P, Act>::storage.view();

  Conv2DLayer() : m_weights(Matrix::Zero(OC, weight_cols)), m_biases(Vector::Zero(OC)) {}

  /// \brief W, OutChannels x (C K K): row o is filter o, PyTorch's weight[o] flattened.
  [[nodiscard]] Matrix& weights() noexcept { return m_weights; }
  /// \brief W (read-only).
  [[nodiscard]] const Matrix& weights() const noexcept { return m_weights; }
  /// \brief b, one per output channel.
  [[nodiscard]] Vector& biases() noexcept { return m_biases; }
  /// \brief b (read-only).
  [[nodiscard]] const Vector& biases() const noexcept { return m_biases; }

  /// \brief As `Dense`: b ~ N(0, 1) for `Init::normal` and `scaled_normal`, else zero.
  void initialize_biases(Rng& rng, Init init) { detail::init_biases(rng, m_biases, init); }
  /// \brief W in row-major order; the fan-in is C K K and the fan-out OutChannels K K
  /// (as PyTorch counts them).
  void initialize_weights(Rng& rng, Init init) {
    detail::init_weights(rng, m_weights, init, weight_cols, OC * K * K);
  }

  /// \brief ONNX (io/onnx.hpp): Conv(x, W[OC, C, K, K], b; strides, pads), then the
  /// activation.
  template <class Graph>
  void write_onnx(Graph& g) const {
    g.conv(m_weights, m_biases, C, H, W, OC, K, S, P);
    g.template activation<Act>();
  }
  /// \brief Reads what `write_onnx` writes.
  template <class Graph>
  void read_onnx(Graph& g) {
    g.conv(m_weights, m_biases, C, H, W, OC, K, S, P);
    g.template activation<Act>();
  }

  /// \brief Equal W and b.
  friend bool operator==(const Conv2DLayer& a, const Conv2DLayer& b) {
    return a.m_weights == b.m_weights && a.m_biases == b.m_biases;
  }

  // ---- inference (const, thread-safe) ----

  /// \brief out = sigma(conv(x) + b) for a batch (one column per sample); also z.
  /// Works through the batch in blocks of samples whose windows take about 4 MB.
  template <class X>
  void forward(const X& x, Matrix& y, Matrix* z_out = nullptr) const {
    const Eigen::Ref<const Matrix> xr(x);
    const Eigen::Index m = xr.cols();
    constexpr Eigen::Index block = std::max<Eigen::Index>(
        1, (Eigen::Index{1} << 20) / (Eigen::Index{Geometry::positions} * Geometry::patch));
    Matrix patches, zb, z(outputs, m);
    detail::GemmWorkspace<Scalar> gemm;  // (local: inference is const and thread-safe)
    for (Eigen::Index first = 0; first < m; first += block) {
      const Eigen::Index n = std::min(block, m - first);
      convolve(xr.middleCols(first, n), patches, zb, gemm);
      z.middleCols(first, n) = zb;
    }
    y.resize(outputs, m);
    detail::activation_forward<Act>(z, y);
    if (z_out != nullptr) *z_out = std::move(z);
  }

  // ---- training ----

  /// What a training pass keeps: the windows of its input, z and the output.
  struct Workspace {
    /// The windows X_p of the input (im2col), z, a = sigma(z), delta = dC/dz, and the
    /// buffers of Delta (one row per window) and of Delta W.
    ///@{
    Matrix patches, z, a, delta, stacked, dpatches;
    ///@}
    /// The products' buffers (forward, dx, dC/dW).
    ///@{
    detail::GemmWorkspace<Scalar> gemm_forward, gemm_backward, gemm_update;
    ///@}
  };

  /// \brief Training forward pass into `ws` (no random masks).
  template <class X>
  void forward(const X& x, Workspace& ws, Rng* /*masks*/) const {
    convolve(x, ws.patches, ws.z, ws.gemm_forward, &ws.stacked);
    ws.a.resize(outputs, ws.z.cols());
    detail::activation_forward<Act>(ws.z, ws.a);
  }

  // output(ws), cost<Cost>(ws, y), backward and backward_cost: detail::ActivatedLayer.

  /// \brief From ws.delta = dC/dz (CHW columns): Delta, the same values with one row per
  /// window; dx = col2im(Delta W) with the current W; then dC/dW = Delta^T X_p and
  /// dC/db = the column sums of Delta to `sink`.
  template <class X, class Sink>
  void backward_delta(const X& /*x*/, Workspace& ws, Matrix* dx, Sink& sink) {
    const Eigen::Index m = ws.delta.cols();
    constexpr int positions = Geometry::positions;
    Matrix& stacked = ws.stacked;  // (m positions) x OC
    stacked.resize(m * positions, OC);
    for (Eigen::Index s = 0; s < m; ++s) {
      stacked.middleRows(s * positions, positions) =
          Eigen::Map<const Matrix>(ws.delta.col(s).data(), positions, OC);
    }
    if (dx != nullptr) {
      ws.gemm_backward.template assign<false, false>(ws.dpatches, stacked, m_weights);
      dx->setZero(inputs, m);
      Geometry::col2im(ws.dpatches.data(), m, dx->data());
    }
    sink(std::integral_constant<int, 0>{}, m_weights,
         [&](auto& target, Scalar factor, bool accumulate) {
           if (accumulate) {
             ws.gemm_update.template add<true, false>(target, factor, stacked, ws.patches);
           } else {
             ws.gemm_update.template assign<true, false>(target, stacked, ws.patches);
           }
         });
    sink(std::integral_constant<int, 1>{}, m_biases,
         [&](auto& target, Scalar factor, bool accumulate) {
           if (accumulate) {
             target.noalias() += factor * stacked.colwise().sum().transpose();
           } else {
             target.noalias() = stacked.colwise().sum().transpose();
           }
         });
  }

 private:
  /// patches = im2col(x); z (CHW columns) = the windows times W^T plus b. `stacked`
  /// receives Z with one row per window (a buffer; the inference pass uses a local).
  /// The products go through backprop's kernels where they take them (GemmWorkspace),
  /// otherwise Eigen's GEMM.
  template <class X>
  void convolve(const X& x, Matrix& patches, Matrix& z, detail::GemmWorkspace<Scalar>& gemm,
                Matrix* stacked = nullptr) const {
    const Eigen::Ref<const Matrix> xr(x);
    const Eigen::Index m = xr.cols();
    constexpr int positions = Geometry::positions;
    patches.resize(m * positions, weight_cols);
    Geometry::im2col(xr.data(), xr.outerStride(), m, patches.data());
    Matrix local;
    Matrix& zs = stacked != nullptr ? *stacked : local;
    gemm.template assign<false, true>(zs, patches, m_weights);
    z.resize(outputs, m);
    for (Eigen::Index s = 0; s < m; ++s) {
      Eigen::Map<Matrix> zm(z.col(s).data(), positions, OC);
      zm = zs.middleRows(s * positions, positions);
      zm.rowwise() += m_biases.transpose();
    }
  }

  Matrix m_weights;
  Vector m_biases;
};

/// \brief A 2-D convolution layer (see the file comment): `OutChannels` filters of
/// `InChannels x Kernel x Kernel`, stride `Stride`, zero padding `Padding`, then `Act`.
/// Input `InChannels x InHeight x InWidth`, output `OutChannels x OH x OW` with
/// OH = (InHeight + 2 Padding - Kernel) / Stride + 1 (OW likewise).
template <int InChannels, int InHeight, int InWidth, int OutChannels, int Kernel,
          class Act = Sigmoid, int Stride = 1, int Padding = 0>
struct Conv2D {
  static_assert(InChannels > 0 && InHeight > 0 && InWidth > 0 && OutChannels > 0 && Kernel > 0,
                "backprop::Conv2D<InChannels, InHeight, InWidth, OutChannels, Kernel>: all "
                "sizes must be positive");
  static_assert(Stride > 0 && Padding >= 0,
                "backprop::Conv2D: Stride must be positive and Padding non-negative");
  static_assert(Kernel <= InHeight + 2 * Padding && Kernel <= InWidth + 2 * Padding,
                "backprop::Conv2D: the kernel is larger than the (padded) input image");
  static_assert(Activation<Act>,
                "backprop::Conv2D: Act is not an activation: it must satisfy "
                "backprop::Activation");
  /// The activation, sigma.
  using activation = Act;
  /// OH, the height of the output.
  static constexpr int out_height = (InHeight + 2 * Padding - Kernel) / Stride + 1;
  /// OW, the width of the output.
  static constexpr int out_width = (InWidth + 2 * Padding - Kernel) / Stride + 1;
  /// InChannels x InHeight x InWidth.
  using input_shape = detail::ImageShape<InChannels, InHeight, InWidth>;
  /// OutChannels x OH x OW.
  using output_shape = detail::ImageShape<OutChannels, out_height, out_width>;
  /// The flattened size of one input sample.
  static constexpr int inputs = input_shape::size;
  /// The flattened size of one output sample.
  static constexpr int outputs = output_shape::size;
  /// The layer object for a scalar type (`net.layer<I>()`).
  template <class Scalar>
  using Instance =
      Conv2DLayer<Scalar, InChannels, InHeight, InWidth, OutChannels, Kernel, Act, Stride, Padding>;
};

}  // namespace backprop
