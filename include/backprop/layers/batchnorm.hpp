/// \file
/// \brief Batch normalization: `BatchNorm<N, Act>` per feature of a vector (after a
/// `Dense`, as PyTorch's BatchNorm1d) and `BatchNorm2D<C, H, W, Act>` per channel of an
/// image (after a `Conv2D`, as BatchNorm2d), followed by an activation.
///
/// For channel c (a feature of BatchNorm, a channel of BatchNorm2D), over the n values
/// it has in a batch (m samples times its H W positions):
///   training:   mu = mean(x), var = mean((x - mu)^2) (biased), xhat = (x - mu) / sqrt(var + eps)
///   inference:  xhat = (x - running_mean) / sqrt(running_var + eps)
///   both:       z = gamma xhat + beta, a = act(z)
///   backward:   dC/dgamma = sum(delta xhat), dC/dbeta = sum(delta) (delta = dC/dz), and
///               dC/dx = gamma / (n sqrt(var + eps)) (n delta - sum(delta) - xhat sum(delta xhat))
///   running statistics, after each training pass's backward pass (as PyTorch):
///               running_mean = (1 - momentum) running_mean + momentum mu
///               running_var  = (1 - momentum) running_var + momentum var n / (n - 1)
/// gamma is `weights()` (C x 1; L1/L2 apply to it), beta is `biases()`; the running
/// statistics are the layer's `state()` (running_mean then running_var, 2 C values):
/// saved in the model files, not trained. Initial values as PyTorch's: gamma 1, beta 0,
/// mean 0, variance 1. A training pass needs at least two values per channel (a
/// BatchNorm after a Dense cannot train on batches of one sample).
///
/// Every training pass (`gradient`, `update_mini_batch`, `sgd`) normalizes with the
/// batch's statistics; `feedforward`, `evaluate` and the costs use the running ones. So
/// `backprop(x, y)` of one sample is not the per-sample share of a batch's gradient.
///
/// Data-parallel training (as PyTorch's SyncBatchNorm): every process sees part of each
/// global mini-batch, so the layer sums its statistics over the processes. Forward: the
/// per-channel sums and the count, then (with the global mean) the sums of squared
/// deviations; backward: sum(delta) and sum(delta xhat), which dx needs. The parameter
/// gradients it reports stay the process's own (the trainer sums them with the rest),
/// and the running statistics move by the global mean and variance, the same on every
/// process. So 2 or more processes train as one process would, up to the rounding of the
/// sums (which run in double).
#pragma once

#include <Eigen/Core>
#include <array>
#include <cmath>
#include <cstddef>
#include <ratio>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "../activations/activations.hpp"
#include "../concepts.hpp"
#include "../detail/shape.hpp"
#include "../errors.hpp"
#include "../init/initializers.hpp"
#include "../init/random.hpp"
#include "../training/exchange.hpp"
#include "activated.hpp"

namespace backprop {

namespace detail {

/// The record name: "batchnorm(100,eps1/100000,m1/10,relu)" for BatchNorm,
/// "batchnorm2d(20x24x24,eps1/100000,m1/10,identity)" for BatchNorm2D.
template <int C, int H, int W, class Act, class Eps, class Momentum>
struct BatchNormName {
  static constexpr auto storage = [] {
    FixedName<128> n;
    if constexpr (H == 0) {
      n << "batchnorm(" << C;
    } else {
      n << "batchnorm2d(" << C << "x" << H << "x" << W;
    }
    n << ",eps" << static_cast<long long>(Eps::num) << "/" << static_cast<long long>(Eps::den)
      << ",m" << static_cast<long long>(Momentum::num) << "/"
      << static_cast<long long>(Momentum::den) << "," << Act::name << ")";
    return n;
  }();
};

/// z = gamma (x - running_mean) / sqrt(running_var + eps) + beta for each of the C
/// channels (rows [c positions, (c + 1) positions) of x): the inference pass of
/// BatchNormLayer, also DynamicNetwork's. `state` is running_mean, then running_var.
template <class X, class G, class B, class S, class Z>
void batch_norm_inference(const X& x, const G& gamma, const B& beta, const S& state,
                          Eigen::Index channels, Eigen::Index positions, double epsilon, Z& z) {
  using Scalar = typename Z::Scalar;
  z.resize(x.rows(), x.cols());
  for (Eigen::Index c = 0; c < channels; ++c) {
    const Scalar scale = gamma(c, 0) / std::sqrt(state(channels + c) + Scalar(epsilon));
    const Scalar shift = beta(c) - scale * state(c);
    z.middleRows(c * positions, positions) =
        (x.middleRows(c * positions, positions).array() * scale + shift).matrix();
  }
}

}  // namespace detail

/// \brief The layer object of `BatchNorm` (H = W = 0) and `BatchNorm2D` for a scalar type.
template <class Scalar_, int C, int H, int W, class Act, class Eps, class Momentum>
class BatchNormLayer
    : public detail::ActivatedLayer<BatchNormLayer<Scalar_, C, H, W, Act, Eps, Momentum>, Act,
                                    Eigen::Matrix<Scalar_, Eigen::Dynamic, Eigen::Dynamic>> {
 public:
  /// `float` or `double`.
  using Scalar = Scalar_;
  /// A batch, one column per sample.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  /// A column vector.
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  /// The activation after the normalization.
  using activation = Act;
  /// Values per channel and sample: 1 for BatchNorm, H W for BatchNorm2D.
  static constexpr int positions = H == 0 ? 1 : H * W;
  /// C, the number of normalized channels (features).
  static constexpr int channels = C;
  /// The flattened size of one sample.
  static constexpr int inputs = C * positions;
  /// The flattened size of one sample's output (= `inputs`).
  static constexpr int outputs = inputs;
  /// The shape of `weights()` (gamma) and `biases()` (beta).
  ///@{
  static constexpr int weight_rows = C, weight_cols = 1, bias_rows = C;
  ///@}
  /// running_mean and running_var, saved after the biases in the model files.
  static constexpr int state_rows = 2 * C;
  /// eps in sqrt(var + eps), `Eps` as a double.
  static constexpr double epsilon = double(Eps::num) / double(Eps::den);
  /// The running statistics' momentum, `Momentum` as a double.
  static constexpr double momentum = double(Momentum::num) / double(Momentum::den);
  /// The batch statistics are used in training passes (testing::check_gradients then
  /// checks the training pass; data-parallel training synchronizes them).
  static constexpr bool batch_statistics = true;
  /// The lengths of the sums a data-parallel training pass exchanges (`Workspace::sync`):
  /// forward, the C sums and the count, then the C sums of squared deviations;
  /// backward, sum(delta) and sum(delta xhat) per channel.
  ///@{
  static constexpr std::array<int, 2> forward_sync_sizes{C + 1, C};
  static constexpr std::array<int, 1> backward_sync_sizes{2 * C};
  ///@}
  /// The name of the layer's record in the model files.
  static constexpr std::string_view model_name =
      detail::BatchNormName<C, H, W, Act, Eps, Momentum>::storage.view();

  BatchNormLayer()
      : m_gamma(Matrix::Ones(C, 1)), m_beta(Vector::Zero(C)), m_state(Vector::Zero(2 * C)) {
    m_state.tail(C).setOnes();
  }

  /// \brief gamma, C x 1.
  [[nodiscard]] Matrix& weights() noexcept { return m_gamma; }
  /// \brief gamma, C x 1 (read-only).
  [[nodiscard]] const Matrix& weights() const noexcept { return m_gamma; }
  /// \brief beta, C.
  [[nodiscard]] Vector& biases() noexcept { return m_beta; }
  /// \brief beta, C (read-only).
  [[nodiscard]] const Vector& biases() const noexcept { return m_beta; }
  /// \brief running_mean (the first C values) and running_var (the last C).
  [[nodiscard]] Vector& state() noexcept { return m_state; }
  /// \brief running_mean and running_var (read-only).
  [[nodiscard]] const Vector& state() const noexcept { return m_state; }
  /// \brief The running mean of each channel (C values).
  [[nodiscard]] auto running_mean() const { return m_state.head(C); }
  /// \brief The running variance of each channel (C values).
  [[nodiscard]] auto running_var() const { return m_state.tail(C); }

  /// \brief gamma = 1 and the running statistics reset (mean 0, variance 1), whatever
  /// `init` says (draws nothing from `rng`, as PyTorch initializes batch norm).
  void initialize_weights(Rng& /*rng*/, Init /*init*/) {
    m_gamma.setOnes(C, 1);
    m_state.setZero(2 * C);
    m_state.tail(C).setOnes();
  }
  /// \brief beta = 0.
  void initialize_biases(Rng& /*rng*/, Init /*init*/) { m_beta.setZero(C); }

  /// \brief ONNX (io/onnx.hpp): BatchNormalization(x, gamma, beta, mean, var; epsilon),
  /// then the activation.
  template <class Graph>
  void write_onnx(Graph& g) const {
    g.batch_norm(m_gamma, m_beta, m_state, C, H, W, epsilon);
    g.template activation<Act>();
  }
  /// \brief Reads what `write_onnx` writes.
  template <class Graph>
  void read_onnx(Graph& g) {
    g.batch_norm(m_gamma, m_beta, m_state, C, H, W, epsilon);
    g.template activation<Act>();
  }

  /// \brief Equal gamma, beta and running statistics.
  friend bool operator==(const BatchNormLayer& a, const BatchNormLayer& b) {
    return a.m_gamma == b.m_gamma && a.m_beta == b.m_beta && a.m_state == b.m_state;
  }

  // ---- inference (const, thread-safe): the running statistics ----

  /// \brief y = act(gamma xhat + beta) for a batch, xhat from the running statistics;
  /// also z with `z_out`.
  template <class X>
  void forward(const X& x, Matrix& y, Matrix* z_out = nullptr) const {
    const Eigen::Ref<const Matrix> xr(x);
    Matrix z;
    detail::batch_norm_inference(xr, m_gamma, m_beta, m_state, C, positions, epsilon, z);
    y.resize(inputs, xr.cols());
    detail::activation_forward<Act>(z, y);
    if (z_out != nullptr) *z_out = std::move(z);
  }

  // ---- training: the batch statistics ----

  /// What a training pass keeps for its backward pass.
  struct Workspace {
    /// z, a = act(z), delta = dC/dz and xhat of the batch.
    ///@{
    Matrix z, a, delta, xhat;
    ///@}
    /// The batch statistics of each channel: mu, var and 1 / sqrt(var + eps).
    ///@{
    Vector mean, var, inv_std;
    ///@}
    /// The number of values per channel the statistics came from (over all processes).
    Scalar count = 0;
    bool trained = false;  ///< a training pass ran: backward updates the running statistics
    /// Set by data-parallel training (more than one process): the statistics' sums over
    /// the processes. Null otherwise.
    const detail::BatchStatisticsSync* sync = nullptr;
  };

  /// \throws ShapeError if a channel has fewer than two values in the batch
  template <class X>
  void forward(const X& x, Workspace& ws, Rng* /*masks*/) const {
    const Eigen::Ref<const Matrix> xr(x);
    const Eigen::Index m = xr.cols();
    ws.xhat.resize(inputs, m);
    ws.z.resize(inputs, m);
    ws.mean.resize(C);
    ws.var.resize(C);
    ws.inv_std.resize(C);
    if (ws.sync != nullptr) {
      global_statistics(xr, ws);
    } else {
      const Eigen::Index n = m * positions;
      check_count(static_cast<double>(n), m, false);
      ws.count = Scalar(n);
      for (int c = 0; c < C; ++c) {
        const auto block = xr.middleRows(Eigen::Index{c} * positions, positions);
        ws.mean(c) = block.sum() / Scalar(n);
        ws.var(c) = (block.array() - ws.mean(c)).square().sum() / Scalar(n);
      }
    }
    for (int c = 0; c < C; ++c) {
      const Scalar mu = ws.mean(c);
      const Scalar inv = Scalar(1) / std::sqrt(ws.var(c) + Scalar(epsilon));
      ws.inv_std(c) = inv;
      if (m == 0) continue;  // a data-parallel step without samples here (no storage)
      const auto block = xr.middleRows(Eigen::Index{c} * positions, positions);
      auto xh = ws.xhat.middleRows(Eigen::Index{c} * positions, positions);
      xh = ((block.array() - mu) * inv).matrix();
      ws.z.middleRows(Eigen::Index{c} * positions, positions) =
          (xh.array() * m_gamma(c, 0) + m_beta(c)).matrix();
    }
    ws.a.resize(inputs, m);
    detail::activation_forward<Act>(ws.z, ws.a);
    ws.trained = true;
  }

  // output(ws), cost<Cost>(ws, y), backward and backward_cost: detail::ActivatedLayer.

  /// \brief From ws.delta = dC/dz: dx (with the current gamma), then dC/dgamma and
  /// dC/dbeta to `sink`, then the running statistics move towards the batch's.
  template <class X, class Sink>
  void backward_delta(const X& /*x*/, Workspace& ws, Matrix* dx, Sink& sink) {
    const Matrix& delta = ws.delta;
    const Eigen::Index m = delta.cols();
    const Scalar n = ws.count;
    Vector dgamma = Vector::Zero(C), dbeta = Vector::Zero(C);
    for (int c = 0; c < C && m > 0; ++c) {
      const auto d = delta.middleRows(Eigen::Index{c} * positions, positions);
      const auto xh = ws.xhat.middleRows(Eigen::Index{c} * positions, positions);
      dbeta(c) = d.sum();
      dgamma(c) = d.cwiseProduct(xh).sum();
    }
    // dx needs the sums over the whole (global) mini-batch; the parameters' gradients
    // stay this process's own.
    Vector sum_dbeta = dbeta, sum_dgamma = dgamma;
    if (ws.sync != nullptr) {
      std::array<double, 2 * C> sums;
      for (int c = 0; c < C; ++c) {
        sums[static_cast<std::size_t>(c)] = static_cast<double>(dbeta(c));
        sums[static_cast<std::size_t>(C + c)] = static_cast<double>(dgamma(c));
      }
      ws.sync->sum(std::span<double>(sums));
      for (int c = 0; c < C; ++c) {
        sum_dbeta(c) = static_cast<Scalar>(sums[static_cast<std::size_t>(c)]);
        sum_dgamma(c) = static_cast<Scalar>(sums[static_cast<std::size_t>(C + c)]);
      }
    }
    if (dx != nullptr) {
      dx->resize(inputs, m);
      for (int c = 0; c < C && m > 0; ++c) {
        const auto rows = Eigen::seqN(Eigen::Index{c} * positions, positions);
        const Scalar k = m_gamma(c, 0) * ws.inv_std(c) / n;
        (*dx)(rows, Eigen::all) = (k * (n * delta(rows, Eigen::all).array() - sum_dbeta(c) -
                                        ws.xhat(rows, Eigen::all).array() * sum_dgamma(c)))
                                      .matrix();
      }
    }
    const auto report = [&](auto slot, auto& param, const Vector& grad) {
      sink(slot, param, [&](auto& target, Scalar factor, bool accumulate) {
        if (accumulate) {
          target.noalias() += factor * grad;
        } else {
          target.noalias() = grad;
        }
      });
    };
    report(std::integral_constant<int, 0>{}, m_gamma, dgamma);
    report(std::integral_constant<int, 1>{}, m_beta, dbeta);
    if (ws.trained) {
      const auto mom = static_cast<Scalar>(momentum);
      m_state.head(C) = (Scalar(1) - mom) * m_state.head(C) + mom * ws.mean;
      m_state.tail(C) = (Scalar(1) - mom) * m_state.tail(C) + (mom * n / (n - Scalar(1))) * ws.var;
      ws.trained = false;  // once per training pass
    }
  }

 private:
  /// \throws ShapeError unless n >= 2 (the values per channel of a batch of m samples
  /// on this process, or of the global mini-batch over all processes).
  static void check_count(double n, Eigen::Index m, bool global) {
    if (n >= 2) return;
    const std::string batch =
        global ? std::string("the global mini-batch (over all processes)")
               : "a batch of " + std::to_string(m) + " sample" + (m == 1 ? "" : "s");
    throw ShapeError("BatchNorm: a training pass needs at least two values per channel; " + batch +
                     " has " + std::to_string(static_cast<long long>(n)) +
                     " (train BatchNorm networks on mini-batches, not one sample at a time)");
  }

  /// ws.mean, ws.var and ws.count over the processes of a data-parallel step: the
  /// per-channel sums and the count, then the squared deviations from the global mean.
  template <class X>
  void global_statistics(const X& xr, Workspace& ws) const {
    const Eigen::Index m = xr.cols();
    std::array<double, C + 1> sums;
    for (int c = 0; c < C; ++c) {
      sums[static_cast<std::size_t>(c)] =
          m == 0 ? 0.0
                 : static_cast<double>(xr.middleRows(Eigen::Index{c} * positions, positions)
                                           .template cast<double>()
                                           .sum());
    }
    sums[C] = static_cast<double>(m * positions);
    ws.sync->sum(std::span<double>(sums));
    const double n = sums[C];
    check_count(n, m, true);
    std::array<double, C> squares;
    for (int c = 0; c < C; ++c) {
      const double mu = sums[static_cast<std::size_t>(c)] / n;
      squares[static_cast<std::size_t>(c)] =
          m == 0 ? 0.0
                 : (xr.middleRows(Eigen::Index{c} * positions, positions)
                        .template cast<double>()
                        .array() -
                    mu)
                       .square()
                       .sum();
      ws.mean(c) = static_cast<Scalar>(mu);
    }
    ws.sync->sum(std::span<double>(squares));
    for (int c = 0; c < C; ++c)
      ws.var(c) = static_cast<Scalar>(squares[static_cast<std::size_t>(c)] / n);
    ws.count = static_cast<Scalar>(n);
  }

  Matrix m_gamma;
  Vector m_beta;
  Vector m_state;
};

/// \brief Batch normalization of each of `N` features (after a `Dense`; PyTorch's
/// BatchNorm1d), then `Act`. See the file comment.
/// \tparam Eps, Momentum std::ratio (PyTorch's defaults 1e-5 and 0.1)
template <int N, class Act = Identity, class Eps = std::ratio<1, 100000>,
          class Momentum = std::ratio<1, 10>>
struct BatchNorm {
  static_assert(N > 0, "backprop::BatchNorm<N>: N must be positive");
  static_assert(Activation<Act>, "backprop::BatchNorm: Act is not an activation");
  static_assert(Eps::num > 0 && Momentum::num >= 0 && Momentum::num <= Momentum::den,
                "backprop::BatchNorm: Eps must be positive and Momentum in [0, 1]");
  /// The activation after the normalization.
  using activation = Act;
  /// N inputs per sample.
  static constexpr int inputs = N;
  /// N outputs per sample.
  static constexpr int outputs = N;
  /// The layer object for a scalar type (`net.layer<I>()`).
  template <class Scalar>
  using Instance = BatchNormLayer<Scalar, N, 0, 0, Act, Eps, Momentum>;
};

/// \brief Batch normalization of each of the `C` channels of a C x H x W image (after a
/// `Conv2D`; PyTorch's BatchNorm2d), then `Act`. See the file comment.
template <int C, int H, int W, class Act = Identity, class Eps = std::ratio<1, 100000>,
          class Momentum = std::ratio<1, 10>>
struct BatchNorm2D {
  static_assert(C > 0 && H > 0 && W > 0, "backprop::BatchNorm2D<C, H, W>: sizes must be positive");
  static_assert(Activation<Act>, "backprop::BatchNorm2D: Act is not an activation");
  static_assert(Eps::num > 0 && Momentum::num >= 0 && Momentum::num <= Momentum::den,
                "backprop::BatchNorm2D: Eps must be positive and Momentum in [0, 1]");
  /// The activation after the normalization.
  using activation = Act;
  /// C x H x W.
  using input_shape = detail::ImageShape<C, H, W>;
  /// The same as `input_shape`.
  using output_shape = input_shape;
  /// C H W values per sample.
  static constexpr int inputs = C * H * W;
  /// The same as `inputs`.
  static constexpr int outputs = inputs;
  /// The layer object for a scalar type (`net.layer<I>()`).
  template <class Scalar>
  using Instance = BatchNormLayer<Scalar, C, H, W, Act, Eps, Momentum>;
};

}  // namespace backprop
