/// \file
/// \brief `BasicNetwork<Scalar, Layers...>` and `Network<Layers...>`: a chain of layers
/// run in order. Samples are columns, everywhere.
///
/// The algorithm is the classic one (Nielsen, network.py): each layer maps its input to
/// its output (a `Dense` layer: z = W a + b, a' = sigma(z)); the output error delta_L =
/// dC/dz_L comes from the cost; walking down, each layer turns dC/d(its output) into
/// dC/d(its input) and its parameter gradients (`Dense`: delta_l = (W_{l+1}^T
/// delta_{l+1}) (.) sigma'(z_l), dC/db_l = delta_l, dC/dW_l = delta_l a_{l-1}^T). A
/// mini-batch step is w -= eta/m * sum of gradients, computed for the whole batch at
/// once with matrix products. The layers do the maths (layers/, concept in
/// concepts.hpp); the network composes them; the training loop is in training/.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "activations/activations.hpp"
#include "concepts.hpp"
#include "costs/costs.hpp"
#include "data/dataset.hpp"
#include "detail/chain.hpp"
#include "detail/checks.hpp"
#include "detail/finite.hpp"
#include "detail/meta.hpp"
#include "detail/sample_chain.hpp"
#include "errors.hpp"
#include "init/initializers.hpp"
#include "init/random.hpp"
#include "io/model_files.hpp"
#include "layers/dense.hpp"
#include "layers/dropout.hpp"
#include "optimizers/optimizers.hpp"
#include "subnormals.hpp"
#include "training/exchange.hpp"
#include "training/options.hpp"

namespace backprop {

namespace detail {

template <class Net>
struct Trainer;  // training/trainer.hpp
template <class Net>
struct DataParallel;  // training/data_parallel.hpp

}  // namespace detail

/// \brief A feed-forward network of `Layers...` computing in `Scalar`.
/// \tparam Scalar `float` or `double`
/// \tparam Layers layer descriptors satisfying `Layer`, e.g. `Dense<784, 30, Sigmoid>`;
///         adjacent sizes must match (checked at compile time)
template <class Scalar_, class... Layers>
class BasicNetwork : public ModelFiles<BasicNetwork<Scalar_, Layers...>> {
  static_assert(std::is_floating_point_v<Scalar_>,
                "backprop::BasicNetwork<Scalar, ...>: Scalar must be float or double");
  static_assert(sizeof...(Layers) > 0, "backprop::BasicNetwork needs at least one layer");
  static_assert((detail::LayerMustSatisfyLayerConcept<Layers>::value && ...));
  using LayerList = std::tuple<Layers...>;
  static_assert(detail::check_chain<LayerList>(std::make_index_sequence<sizeof...(Layers) - 1>{}));
  static_assert(detail::dropout_rate_of<std::tuple_element_t<sizeof...(Layers) - 1, LayerList>>() ==
                    0.0,
                "backprop::BasicNetwork: the output layer cannot drop out its outputs; use "
                "DropoutDense for hidden layers only");
  static_assert(detail::OutputLayerMustComputeTheCost<
                std::tuple_element_t<sizeof...(Layers) - 1, LayerList>>::value);

 public:
  /// \brief The type of the parameters and computations (`float` or `double`).
  using Scalar = Scalar_;
  /// \brief A dynamic matrix of `Scalar`; batches hold one sample per column.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  /// \brief A dynamic column vector of `Scalar` (one sample).
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  /// \brief Number of layers.
  static constexpr std::size_t num_layers = sizeof...(Layers);
  /// \brief The descriptor of layer I (0-based).
  template <std::size_t I>
  using LayerDescriptor = std::tuple_element_t<I, LayerList>;
  /// \brief The layer object of layer I, returned by `layer<I>()`.
  template <std::size_t I>
  using LayerParameters = typename LayerDescriptor<I>::template Instance<Scalar>;
  /// \brief Input size (rows of an input batch): the first layer's inputs.
  static constexpr int inputs = LayerDescriptor<0>::inputs;
  /// \brief Output size (rows of an output batch): the last layer's outputs.
  static constexpr int outputs = LayerDescriptor<num_layers - 1>::outputs;
  /// \brief The last layer's activation (it decides what `DefaultCost` resolves to).
  using OutputActivation = typename LayerDescriptor<num_layers - 1>::activation;
  /// Per-layer bias gradients, `std::get<I>` shaped like `layer<I>().biases()`.
  using BiasGradients = std::tuple<std::remove_cvref_t<
      decltype(std::declval<typename Layers::template Instance<Scalar>&>().biases())>...>;
  /// Per-layer weight gradients, `std::get<I>` shaped like `layer<I>().weights()`.
  using WeightGradients = std::tuple<std::remove_cvref_t<
      decltype(std::declval<typename Layers::template Instance<Scalar>&>().weights())>...>;
  /// \brief `{bias gradients, weight gradients}`, as `backprop` and `gradient` return them.
  using Gradients = std::pair<BiasGradients, WeightGradients>;

  /// \brief Initialises the parameters from `seed` with `init` (default: N(0,1)
  /// weights and biases, as the seed network.py). Deterministic for a seed on
  /// every platform (see `Rng`).
  explicit BasicNetwork(std::uint64_t seed = 0, Init init = Init::normal) {
    initialize(seed, init);
  }

  /// \brief Re-draws all parameters; also resets the shuffling generator to `seed`.
  /// Biases of all layers are drawn first, then weights (each layer's
  /// `initialize_biases` / `initialize_weights`, where it has them).
  void initialize(std::uint64_t seed, Init init = Init::normal) {
    Rng rng(seed);
    detail::for_each_index<num_layers>([&](auto i) {
      if constexpr (detail::InitializesBiases<LayerParameters<decltype(i)::value>>) {
        layer<i>().initialize_biases(rng, init);
      }
    });
    detail::for_each_index<num_layers>([&](auto i) {
      if constexpr (detail::InitializesWeights<LayerParameters<decltype(i)::value>>) {
        layer<i>().initialize_weights(rng, init);
      }
    });
    m_rng = rng;
  }

  /// \brief Layer I (0-based): for `Dense`, `weights()` (Out x In), `biases()` (Out).
  template <std::size_t I>
  [[nodiscard]] LayerParameters<I>& layer() noexcept {
    static_assert(I < num_layers, "backprop::Network::layer<I>: I is out of range");
    return std::get<I>(m_layers);
  }
  /// \brief Layer I (0-based), read-only.
  template <std::size_t I>
  [[nodiscard]] const LayerParameters<I>& layer() const noexcept {
    static_assert(I < num_layers, "backprop::Network::layer<I>: I is out of range");
    return std::get<I>(m_layers);
  }

  /// \brief The generator used to shuffle training data (seeded by the constructor).
  [[nodiscard]] Rng& rng() noexcept { return m_rng; }

  /// \brief Total number of trainable parameters.
  [[nodiscard]] static constexpr long long parameter_count() noexcept {
    return (parameters_of<typename Layers::template Instance<Scalar>>() + ...);
  }

  /// \brief Output activations for one sample (column vector) or many (one
  /// column each). Thread-safe: touches no shared state. A large batch is computed
  /// in blocks of samples (at most 4096; fewer when a layer is wide), so the memory it
  /// takes beyond the result stays near 16 MB per layer.
  /// \param x `inputs` rows; a vector or a matrix expression.
  /// \returns `outputs` rows, as many columns as `x`.
  /// \throws ShapeError (a `std::invalid_argument`) if `x` has the wrong row count.
  template <class Derived>
  [[nodiscard]] auto feedforward(const Eigen::MatrixBase<Derived>& x) const {
    detail::check_scalar<BasicNetwork, Derived>();
    detail::check_rows("feedforward", "input", x.rows(), inputs, 0);
    detail::check_parameters(*this, "feedforward");
    const detail::FlushSubnormals flush;
    if constexpr (Derived::ColsAtCompileTime == 1) {
      return forward_vector<0>(x.derived());
    } else {
      // In blocks of inference_chunk samples, as evaluate and predict: the layers'
      // intermediate outputs stay within about 16 MB whatever the batch.
      constexpr Eigen::Index chunk = inference_chunk;
      if (x.cols() <= chunk) return forward_matrix<0>(x.derived());
      Matrix out(outputs, x.cols());
      for (Eigen::Index first = 0; first < x.cols(); first += chunk) {
        const Eigen::Index n = std::min(chunk, x.cols() - first);
        out.middleCols(first, n) = forward_matrix<0>(x.derived().middleCols(first, n));
      }
      return out;
    }
  }

  /// \brief Gradient of the cost for one sample, exactly the seed's per-sample
  /// algorithm. \returns `{nabla_b, nabla_w}`, `std::get<I>` of each per layer.
  /// \tparam Cost the cost (default `QuadraticCost`, C = 1/2 ||a - y||^2)
  /// \throws ShapeError if `x` or `y` has the wrong size
  template <class Cost = QuadraticCost, class DX, class DY>
  [[nodiscard]] Gradients backprop(const Eigen::MatrixBase<DX>& x,
                                   const Eigen::MatrixBase<DY>& y) const {
    detail::check_scalar<BasicNetwork, DX>();
    detail::check_scalar<BasicNetwork, DY>();
    detail::check_rows("backprop", "x", x.rows(), inputs, 0);
    detail::check_parameters(*this, "backprop");
    detail::check_rows("backprop", "y", y.rows(), outputs, 0);
    if (x.cols() != 1 || y.cols() != 1) {
      throw ShapeError("backprop: x and y must be single columns, got " + std::to_string(x.cols()) +
                       " and " + std::to_string(y.cols()) +
                       " columns (use gradient() for batches)");
    }
    const detail::FlushSubnormals flush;
    if constexpr ((detail::HasSamplePath<typename Layers::template Instance<Scalar>> && ...)) {
      return detail::sample_gradients<Cost>(*this, x, y);
    } else {
      // Layers without a per-sample path: the batched one on one column.
      std::tuple<typename Layers::template Instance<Scalar>::Workspace...> work;
      std::array<Matrix, num_layers> dout;
      return batch_gradients<Cost>(Matrix(x), Matrix(y), nullptr, work, dout);
    }
  }

  /// \brief Sum over the columns of the per-sample gradients, computed with
  /// whole-batch products (sparse inputs in memory: as `update_mini_batch`).
  /// \returns `{sum nabla_b, sum nabla_w}`.
  template <class Cost = QuadraticCost, class DX, class DY>
  [[nodiscard]] Gradients gradient(const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DY>& Y);

  /// \brief One step of mini-batch gradient descent on the m columns of X, Y:
  /// w -= eta/m * sum of per-sample gradients (likewise b), with whole-batch
  /// products. X and Y may be any expressions (e.g. `X.middleCols(k, m)`); they
  /// are not copied. When X is a column-major matrix in memory with at most half of it
  /// nonzero, a first `Dense` layer uses sgd's sparse kernels on a copy of its nonzeros.
  /// \throws ShapeError on wrong shapes; ValueError if eta is not finite and > 0.
  template <class Cost = QuadraticCost, class DX, class DY>
  void update_mini_batch(const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DY>& Y,
                         double eta);

  /// \brief Number of columns of `X` whose output argmax equals `labels`.
  /// \throws ShapeError on wrong shapes; ValueError for a network with a single output
  ///         (argmax accuracy means nothing there: use `regression_metrics`) or a label
  ///         outside [0, outputs).
  template <class Derived>
  [[nodiscard]] long long evaluate(const Eigen::MatrixBase<Derived>& X,
                                   const Eigen::VectorXi& labels) const {
    const Eigen::VectorXi predicted = predict(X, "evaluate");
    if (labels.size() != X.cols()) {
      throw ShapeError("evaluate: " + std::to_string(X.cols()) + " input columns but " +
                       std::to_string(labels.size()) + " labels");
    }
    long long correct = 0;
    for (Eigen::Index c = 0; c < labels.size(); ++c) {
      if (labels(c) < 0 || labels(c) >= outputs) {
        throw ValueError("evaluate: label " + std::to_string(labels(c)) + " of sample " +
                         std::to_string(c) + " is outside [0, " + std::to_string(outputs) +
                         ") (the network's outputs)");
      }
      correct += predicted(c) == labels(c);
    }
    return correct;
  }

  /// \brief The predicted class of every column of `X`: the index of its largest output
  /// (the probabilities themselves, with a Softmax output, are `feedforward(X)`).
  /// \throws ShapeError if `X` has the wrong row count; ValueError for a network with a
  ///         single output (a regression network: use `feedforward`).
  template <class Derived>
  [[nodiscard]] Eigen::VectorXi predict(const Eigen::MatrixBase<Derived>& X) const {
    return predict(X, "predict");
  }

  /// \brief The cost summed over the columns of X, Y (no regularisation).
  /// \throws ShapeError on wrong shapes.
  template <class Cost = QuadraticCost, class DX, class DY>
  [[nodiscard]] double batch_cost(const Eigen::MatrixBase<DX>& X,
                                  const Eigen::MatrixBase<DY>& Y) const {
    detail::check_batch(*this, "batch_cost", X, Y);
    Matrix z, a;
    forward_keep_last<0>(X.derived(), z, a);
    return Cost::value(z, a, Y.derived());
  }

  /// \brief Mean cost over a data set plus the L2 term 0.5 lambda/n ||w||^2
  /// (network2's total_cost) and the L1 term lambda1/n ||w||_1 (sums over all weights,
  /// not biases; n is the size of `data`, as in network2).
  template <class Cost = QuadraticCost>
  [[nodiscard]] double total_cost(const Dataset<Scalar>& data, double lambda = 0.0,
                                  double lambda1 = 0.0) const {
    detail::check_dataset<BasicNetwork>("total_cost", data);
    detail::check_parameters(*this, "total_cost");
    if (data.empty()) return 0.0;
    const double n = static_cast<double>(data.size());
    return cost_sum<Cost>(data.inputs, data.targets) / n + penalty(lambda, lambda1, n);
  }

  /// \brief True when every parameter is finite.
  [[nodiscard]] bool parameters_finite() const {
    bool ok = true;
    detail::for_each_index<num_layers>([&](auto i) {
      ok =
          ok && detail::all_finite(layer<i>().weights()) && detail::all_finite(layer<i>().biases());
    });
    return ok;
  }

  /// \brief Sum of squares of all weights (not biases).
  [[nodiscard]] double squared_weight_norm() const {
    double s = 0.0;
    detail::for_each_index<num_layers>(
        [&](auto i) { s += static_cast<double>(layer<i>().weights().squaredNorm()); });
    return s;
  }

  /// \brief Sum of absolute values of all weights (not biases), ||w||_1.
  [[nodiscard]] double absolute_weight_norm() const {
    double s = 0.0;
    detail::for_each_index<num_layers>(
        [&](auto i) { s += static_cast<double>(layer<i>().weights().cwiseAbs().sum()); });
    return s;
  }

  /// \brief Mini-batch stochastic gradient descent (network.py's SGD with network2's
  /// L2 and monitoring; training/trainer.hpp has the details): for each epoch, shuffle,
  /// split into mini-batches of `options.mini_batch_size` (the last may be smaller) and
  /// apply w <- (1 - eta lambda/n) w - eta lambda1/n sign(w) - eta/m sum grad to each
  /// (likewise b, without the regularisation terms). Evaluates on `evaluation_data`
  /// after each epoch when given and reports through `options.on_epoch`; follows
  /// `options.schedule`, may stop early (`early_stopping_patience`, keeping the best
  /// epoch's parameters). Dropout layers are active in the training passes only.
  /// \tparam Cost the cost; the default (`DefaultCost`) is `LogLikelihoodCost` for a
  ///         `Softmax` output layer and `QuadraticCost` otherwise.
  /// \returns the per-epoch history (also `best_epoch` and `stopped_early`).
  /// \throws ShapeError / ValueError on bad data or options (early stopping and
  ///         halve_on_plateau need labelled evaluation data); DivergenceError as
  ///         described at `SgdOptions::on_divergence`.
  template <class Cost = DefaultCost>
  TrainingHistory sgd(const Dataset<Scalar>& training_data, const SgdOptions& options,
                      const Dataset<Scalar>* evaluation_data = nullptr);

  /// \brief `sgd` with the updates of `optimizer` (`PlainSgd`, the default, fused into
  /// the layers' products; `Momentum`, `Adam` or any `Optimizer`, given the mean
  /// gradient G_W = 1/m sum grad + lambda/n W + lambda1/n sign(W), G_b = 1/m sum grad).
  /// The optimizer's states live in this call: a new call starts from zero states.
  template <class Cost = DefaultCost, Optimizer Opt>
  TrainingHistory sgd(const Dataset<Scalar>& training_data, const SgdOptions& options,
                      const Dataset<Scalar>* evaluation_data, const Opt& optimizer);

  /// \brief Data-parallel `sgd` on the `exchange.size()` processes of `exchange` (e.g.
  /// `backprop::mpi::Communicator`); with one process it is exactly the `sgd` above.
  /// Collective; training/data_parallel.hpp says what is exchanged and checked.
  /// \throws DistributedError on every process when they disagree or one failed.
  template <class Cost = DefaultCost, Optimizer Opt, GradientExchange Ex>
  TrainingHistory sgd(const Dataset<Scalar>& training_data, const SgdOptions& options,
                      const Dataset<Scalar>* evaluation_data, const Opt& optimizer, Ex& exchange,
                      DataLayout layout = DataLayout::replicated);

  /// \brief Test hook for dropout: the summed gradient of `Cost` over the columns of
  /// X, Y in a training pass whose dropout masks are drawn from `Rng(mask_seed)`
  /// (the network's own generator is not touched). With the same seed,
  /// `dropout_batch_cost` evaluates the cost under the same masks, so finite
  /// differences of it check this gradient. Without dropout layers it equals
  /// `gradient`.
  template <class Cost = QuadraticCost, class DX, class DY>
  [[nodiscard]] Gradients dropout_gradient(const Eigen::MatrixBase<DX>& X,
                                           const Eigen::MatrixBase<DY>& Y,
                                           std::uint64_t mask_seed) {
    detail::check_batch(*this, "dropout_gradient", X, Y);
    Rng masks(mask_seed);
    return batch_gradients<Cost>(X.derived(), Y.derived(), &masks, m_work, m_dout);
  }

  /// \brief The cost summed over the columns of X, Y in a training pass with the
  /// dropout masks drawn from `Rng(mask_seed)` (see `dropout_gradient`).
  template <class Cost = QuadraticCost, class DX, class DY>
  [[nodiscard]] double dropout_batch_cost(const Eigen::MatrixBase<DX>& X,
                                          const Eigen::MatrixBase<DY>& Y, std::uint64_t mask_seed) {
    detail::check_batch(*this, "dropout_batch_cost", X, Y);
    Rng masks(mask_seed);
    forward_train<0>(X.derived(), &masks, m_work);
    return output_cost<Cost>(Y.derived(), m_work);
  }

  /// \brief True when every layer compares equal (its parameters and any running
  /// statistics); the shuffling generator is not compared.
  friend bool operator==(const BasicNetwork& a, const BasicNetwork& b) {
    return a.m_layers == b.m_layers;
  }

 private:
  template <class Net>
  friend struct detail::Trainer;
  template <class Net>
  friend struct detail::DataParallel;
  using Layers_ = std::tuple<typename Layers::template Instance<Scalar>...>;
  using Workspaces = std::tuple<typename Layers::template Instance<Scalar>::Workspace...>;
  static constexpr std::size_t L = num_layers - 1;
  /// Samples per block of `evaluate` and the costs: 4096, fewer when a layer is so wide
  /// that a block's activations would pass 16 MB of floats (a convolution's 11520).
  static constexpr Eigen::Index inference_chunk = std::clamp<Eigen::Index>(
      (Eigen::Index{1} << 22) / std::max({Layers::outputs..., Layers::inputs...}), 16, 4096);

  template <class T>
  static constexpr long long parameters_of() {
    return static_cast<long long>(T::weight_rows) * T::weight_cols + T::bias_rows;
  }

  // ---- inference (const, thread-safe: no workspace) ----

  template <class Derived>
  Eigen::VectorXi predict(const Eigen::MatrixBase<Derived>& X, const char* fn) const {
    detail::check_scalar<BasicNetwork, Derived>();
    detail::check_rows(fn, "input", X.rows(), inputs, 0);
    detail::check_parameters(*this, fn);
    const detail::FlushSubnormals flush;
    if constexpr (outputs == 1) {
      throw ValueError(std::string(fn) +
                       ": the network has a single output, so there is no class to pick (a "
                       "regression network: use feedforward and regression_metrics; for two "
                       "classes use two outputs)");
    }
    Eigen::VectorXi predicted(X.cols());
    constexpr Eigen::Index chunk = inference_chunk;
    for (Eigen::Index first = 0; first < X.cols(); first += chunk) {
      const Eigen::Index n = std::min(chunk, X.cols() - first);
      const Matrix out = forward_matrix<0>(X.middleCols(first, n));
      for (Eigen::Index c = 0; c < n; ++c) {
        Eigen::Index arg = 0;
        out.col(c).maxCoeff(&arg);
        predicted(first + c) = static_cast<int>(arg);
      }
    }
    return predicted;
  }

  template <std::size_t I, class In>
  auto forward_vector(const In& x) const {
    const auto& l = layer<I>();
    auto a = [&] {
      if constexpr (requires(const LayerParameters<I>& o, const In& v) { o.forward_sample(v); }) {
        return l.forward_sample(x);
      } else {
        Matrix y;
        l.forward(Matrix(x), y);
        return Vector(y);
      }
    }();
    if constexpr (I + 1 < num_layers) {
      return forward_vector<I + 1>(a);
    } else {
      return a;
    }
  }

  template <std::size_t I, class In>
  Matrix forward_matrix(const In& x) const {
    Matrix a;
    layer<I>().forward(x, a);
    if constexpr (I + 1 < num_layers) {
      return forward_matrix<I + 1>(a);
    } else {
      return a;
    }
  }

  template <std::size_t I, class In>
  void forward_keep_last(const In& x, Matrix& z_out, Matrix& a_out) const {
    if constexpr (I + 1 < num_layers) {
      Matrix a;
      layer<I>().forward(x, a);
      forward_keep_last<I + 1>(a, z_out, a_out);
    } else {
      layer<I>().forward(x, a_out, &z_out);
    }
  }

  /// The cost summed over the columns of X, Y, in chunks (no workspace; const).
  template <class Cost, class DX, class DY>
  double cost_sum(const DX& X, const DY& Y) const {
    double sum = 0.0;
    constexpr Eigen::Index chunk = inference_chunk;
    for (Eigen::Index first = 0; first < X.cols(); first += chunk) {
      const Eigen::Index c = std::min(chunk, X.cols() - first);
      Matrix z, a;
      forward_keep_last<0>(X.middleCols(first, c), z, a);
      sum += Cost::value(z, a, Y.middleCols(first, c));
    }
    return sum;
  }

  /// network2's regularisation terms of the cost for a data set of n samples.
  double penalty(double lambda, double lambda1, double n) const {
    double p = 0.0;
    if (lambda != 0.0) p += 0.5 * lambda / n * squared_weight_norm();
    if (lambda1 != 0.0) p += lambda1 / n * absolute_weight_norm();
    return p;
  }

  // ---- training passes (through workspaces) ----

  /// Training forward pass of layers I.. into `work`; layer 0 reads X (a matrix
  /// expression or, for a layer that takes it, sgd's sparse batch).
  template <std::size_t I, class X, class Work>
  void forward_train(const X& x, Rng* masks, Work& work) const {
    auto& ws = std::get<I>(work);
    layer<I>().forward(x, ws, masks);
    if constexpr (I + 1 < num_layers) {
      forward_train<I + 1>(LayerParameters<I>::output(ws), masks, work);
    }
  }

  /// The cost of the last training pass.
  template <class Cost, class DY, class Work>
  double output_cost(const DY& Y, const Work& work) const {
    return LayerParameters<L>::template cost<Cost>(std::get<L>(work), Y);
  }

  /// The backward pass after `forward_train`: delta_L from the cost, then every layer
  /// from the last to the first; each reports its parameter gradients through
  /// sink(layer index, slot, param, add) once it has computed dC/d(its input) (so the
  /// sink may update the parameters in place).
  template <class Cost, class DX, class DY, class Work, class Sink>
  void backward_train(const DX& X, const DY& Y, Work& work, std::array<Matrix, num_layers>& dout,
                      Sink& sink) {
    auto& ws = std::get<L>(work);
    auto bound = bind_sink<L>(sink);
    if constexpr (L == 0) {
      layer<L>().template backward_cost<Cost>(X, ws, Y, nullptr, bound);
    } else {
      layer<L>().template backward_cost<Cost>(input_of<L>(X, work), ws, Y, &dout[L - 1], bound);
      backward_from<L - 1>(X, work, dout, sink);
    }
  }

  template <std::size_t I, class DX, class Work, class Sink>
  void backward_from(const DX& X, Work& work, std::array<Matrix, num_layers>& dout, Sink& sink) {
    auto& ws = std::get<I>(work);
    auto bound = bind_sink<I>(sink);
    if constexpr (I == 0) {
      layer<0>().backward(X, ws, dout[0], nullptr, bound);
    } else {
      layer<I>().backward(input_of<I>(X, work), ws, dout[I], &dout[I - 1], bound);
      backward_from<I - 1>(X, work, dout, sink);
    }
  }

  /// The input the last training pass gave layer I.
  template <std::size_t I, class DX, class Work>
  static const auto& input_of(const DX& X, const Work& work) {
    if constexpr (I == 0) {
      return X;
    } else {
      return LayerParameters<I - 1>::output(std::get<I - 1>(work));
    }
  }

  template <std::size_t I, class Sink>
  static auto bind_sink(Sink& sink) {
    return [&sink](auto slot, auto& param, auto&& add) {
      sink(std::integral_constant<std::size_t, I>{}, slot, param, add);
    };
  }

  /// Sums of the per-sample gradients over the batch (dropout masks from `masks`
  /// when given).
  template <class Cost, class DX, class DY, class Work>
  Gradients batch_gradients(const DX& X, const DY& Y, Rng* masks, Work& work,
                            std::array<Matrix, num_layers>& dout) const {
    // const: touches only `work` and `dout` (the members, or backprop's own).
    auto& self = const_cast<BasicNetwork&>(*this);
    forward_train<0>(X, masks, work);
    Gradients grads;
    auto sink = [&](auto i, auto slot, auto& param, auto&& add) {
      auto& target = [&]() -> auto& {
        if constexpr (decltype(slot)::value == 0) {
          return std::get<decltype(i)::value>(grads.second);
        } else {
          return std::get<decltype(i)::value>(grads.first);
        }
      }
      ();
      target.resize(param.rows(), param.cols());
      add(target, Scalar(1), false);
    };
    self.template backward_train<Cost>(X, Y, work, dout, sink);
    return grads;
  }

  Layers_ m_layers;
  Rng m_rng;
  // The batched path's workspace, reused between mini-batches of the same size, and
  // dC/d(output) of every layer but the last.
  Workspaces m_work;
  std::array<Matrix, num_layers> m_dout;
  // Parameters at the start of the current sgd epoch, restored on divergence.
  Layers_ m_snapshot;
};

/// \brief A `float` network: `Network<Dense<784, 30, Sigmoid>, Dense<30, 10, Sigmoid>>`.
template <class... Layers>
using Network = BasicNetwork<float, Layers...>;

}  // namespace backprop

#include "training/trainer.hpp"
