/// \file
/// \brief `BasicNetwork<Scalar, Layers...>` and `Network<Layers...>`: feedforward,
/// backprop, mini-batch SGD. Samples are columns, everywhere.
///
/// The algorithm is the classic one (Nielsen, network.py): for each layer
/// z_l = W_l a_{l-1} + b_l and a_l = sigma(z_l); the output error is
/// delta_L = grad_a C (.) sigma'(z_L) (or the cost's fused form); hidden errors are
/// delta_l = (W_{l+1}^T delta_{l+1}) (.) sigma'(z_l); dC/db_l = delta_l and
/// dC/dW_l = delta_l a_{l-1}^T. A mini-batch step is w -= eta/m * sum of gradients,
/// computed for the whole batch at once with matrix products.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <numeric>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "activations/activations.hpp"
#include "concepts.hpp"
#include "costs/costs.hpp"
#include "data/dataset.hpp"
#include "detail/finite.hpp"
#include "detail/meta.hpp"
#include "detail/products.hpp"
#include "detail/sparse_input.hpp"
#include "errors.hpp"
#include "init/initializers.hpp"
#include "init/random.hpp"
#include "io/json.hpp"
#include "io/model.hpp"
#include "layers/dense.hpp"
#include "layers/dropout.hpp"
#include "optimizers/optimizers.hpp"
#include "training/exchange.hpp"
#include "training/options.hpp"
#include "training/schedule.hpp"

namespace backprop {

namespace detail {

/// Compile-time check of one link of the layer chain. Instantiated with the
/// link's index and both sizes so they appear in the compiler's diagnostic.
template <std::size_t LayerIndex, int PreviousOutputs, int LayerInputs>
struct LayerSizesMustMatch {
  static_assert(PreviousOutputs == LayerInputs,
                "backprop::Network: layer sizes do not match: the outputs of layer "
                "LayerIndex - 1 (PreviousOutputs) must equal the inputs of layer LayerIndex "
                "(LayerInputs); see the template arguments of LayerSizesMustMatch below");
  static constexpr bool value = true;
};

template <class Tuple, std::size_t... I>
constexpr bool check_chain(std::index_sequence<I...>) {
  return (LayerSizesMustMatch<I + 1, std::tuple_element_t<I, Tuple>::outputs,
                              std::tuple_element_t<I + 1, Tuple>::inputs>::value &&
          ... && true);
}

template <class T>
struct LayerMustSatisfyLayerConcept {
  static_assert(Layer<T>,
                "backprop::Network<Layers...>: every layer must satisfy backprop::Layer "
                "(e.g. backprop::Dense<In, Out, Activation>)");
  static constexpr bool value = true;
};

/// Column vector of one layer's width in feedforward of one sample: fixed-size (on
/// the stack, no heap allocation) up to 64 rows, dynamic above.
template <class Scalar, int Rows>
using SmallVector = std::conditional_t<(Rows <= 64), Eigen::Matrix<Scalar, Rows, 1>,
                                       Eigen::Matrix<Scalar, Eigen::Dynamic, 1>>;

}  // namespace detail

/// \brief A feed-forward network of `Layers...` computing in `Scalar`.
/// \tparam Scalar `float` or `double`
/// \tparam Layers layer descriptors, e.g. `Dense<784, 30, Sigmoid>`; adjacent sizes
///         must match (checked at compile time)
template <class Scalar_, class... Layers>
class BasicNetwork {
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

 public:
  using Scalar = Scalar_;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  static constexpr std::size_t num_layers = sizeof...(Layers);
  /// \brief The descriptor of layer I (0-based).
  template <std::size_t I>
  using LayerDescriptor = std::tuple_element_t<I, LayerList>;
  /// \brief The parameter object of layer I, returned by `layer<I>()`.
  template <std::size_t I>
  using LayerParameters = typename LayerDescriptor<I>::template Parameters<Scalar>;
  static constexpr int inputs = LayerDescriptor<0>::inputs;
  static constexpr int outputs = LayerDescriptor<num_layers - 1>::outputs;
  using OutputActivation = typename LayerDescriptor<num_layers - 1>::activation;
  /// Per-layer bias gradients, `std::get<I>` is Out x 1.
  using BiasGradients = std::tuple<typename Layers::template Parameters<Scalar>::BiasVector...>;
  /// Per-layer weight gradients, `std::get<I>` is Out x In.
  using WeightGradients = std::tuple<typename Layers::template Parameters<Scalar>::WeightMatrix...>;
  using Gradients = std::pair<BiasGradients, WeightGradients>;

 private:
  /// The sparse copy of the training inputs (16-bit row indices for up to 65536 inputs).
  using SparseInputs =
      detail::SparseColumns<Scalar,
                            std::conditional_t<(inputs <= 65536), std::uint16_t, std::int32_t>>;
  using SparseInputBatch = detail::SparseBatch<Scalar, typename SparseInputs::RowIndexType>;

 public:
  /// \brief Initialises the parameters from `seed` with `init` (default: N(0,1)
  /// weights and biases, as the seed network.py). Deterministic for a seed on
  /// every platform (see `Rng`).
  explicit BasicNetwork(std::uint64_t seed = 0, Init init = Init::normal) {
    initialize(seed, init);
  }

  /// \brief Re-draws all parameters; also resets the shuffling generator to `seed`.
  /// Biases of all layers are drawn first, then weights in row-major order.
  void initialize(std::uint64_t seed, Init init = Init::normal) {
    Rng rng(seed);
    detail::for_each_index<num_layers>(
        [&](auto i) { detail::init_biases(rng, layer<i>().biases(), init); });
    detail::for_each_index<num_layers>(
        [&](auto i) { detail::init_weights(rng, layer<i>().weights(), init); });
    m_rng = rng;
  }

  /// \brief Parameters of layer I (0-based): `weights()` (Out x In), `biases()` (Out).
  template <std::size_t I>
  [[nodiscard]] LayerParameters<I>& layer() noexcept {
    static_assert(I < num_layers, "backprop::Network::layer<I>: I is out of range");
    return std::get<I>(m_layers);
  }
  template <std::size_t I>
  [[nodiscard]] const LayerParameters<I>& layer() const noexcept {
    static_assert(I < num_layers, "backprop::Network::layer<I>: I is out of range");
    return std::get<I>(m_layers);
  }

  /// \brief The generator used to shuffle training data (seeded by the constructor).
  [[nodiscard]] Rng& rng() noexcept { return m_rng; }

  /// \brief Total number of trainable parameters.
  [[nodiscard]] static constexpr long long parameter_count() noexcept {
    return (((static_cast<long long>(Layers::inputs) + 1) * Layers::outputs) + ...);
  }

  /// \brief Output activations for one sample (column vector) or many (one
  /// column each). Thread-safe: touches no shared state.
  /// \param x `inputs` rows; a vector or a matrix expression.
  /// \returns `outputs` rows, as many columns as `x`.
  /// \throws ShapeError (a `std::invalid_argument`) if `x` has the wrong row count.
  template <class Derived>
  [[nodiscard]] auto feedforward(const Eigen::MatrixBase<Derived>& x) const {
    check_scalar<Derived>();
    check_rows("feedforward", "input", x.rows(), inputs, 0);
    check_parameters("feedforward");
    if constexpr (Derived::ColsAtCompileTime == 1) {
      return forward_vector<0>(x.derived());
    } else {
      return forward_matrix<0>(x.derived());
    }
  }

  /// \brief Gradient of the cost for one sample, exactly the seed's per-sample
  /// algorithm. \returns `{nabla_b, nabla_w}`, `std::get<I>` of each per layer.
  /// \tparam Cost the cost (default `QuadraticCost`, C = 1/2 ||a - y||^2)
  /// \throws ShapeError if `x` or `y` has the wrong size
  template <class Cost = QuadraticCost, class DX, class DY>
  [[nodiscard]] Gradients backprop(const Eigen::MatrixBase<DX>& x,
                                   const Eigen::MatrixBase<DY>& y) const {
    check_scalar<DX>();
    check_scalar<DY>();
    check_rows("backprop", "x", x.rows(), inputs, 0);
    check_parameters("backprop");
    check_rows("backprop", "y", y.rows(), outputs, 0);
    if (x.cols() != 1 || y.cols() != 1) {
      throw ShapeError("backprop: x and y must be single columns, got " + std::to_string(x.cols()) +
                       " and " + std::to_string(y.cols()) +
                       " columns (use gradient() for batches)");
    }
    // Forward, keeping every z and activation as the seed does.
    // Up to 64 rows on the stack (no heap allocation but the returned gradients').
    std::tuple<detail::SmallVector<Scalar, Layers::outputs>...> zs;
    std::tuple<detail::SmallVector<Scalar, Layers::outputs>...> acts;
    // A contiguous column is read in place; anything else is copied once.
    const Eigen::Ref<const Vector> x0(x.derived());
    detail::for_each_index<num_layers>([&](auto i) {
      constexpr std::size_t I = decltype(i)::value;
      const auto& p = layer<I>();
      auto& z = std::get<I>(zs);
      if constexpr (I == 0 && sample_kernels) {
        // Only the weight columns of nonzero inputs (MNIST: 19% of the pixels).
        constexpr int out = LayerDescriptor<0>::outputs;
        std::array<std::uint16_t, inputs + 16> rows;
        std::array<Scalar, inputs + 16> values;
        const std::size_t nonzero =
            detail::compress_nonzeros(x0.data(), inputs, rows.data(), values.data());
        z.resize(out);
        detail::sparse_column_sum<out>(p.weights().data(), p.biases().data(), rows.data(),
                                       values.data(), 0, nonzero, z.data());
      } else {
        if constexpr (I == 0) {
          z.noalias() = p.weights() * x0;
        } else if constexpr (small_sample_layer<I>) {
          z.noalias() = fixed_weights<I>().lazyProduct(std::get<I - 1>(acts));
        } else {
          z.noalias() = p.weights() * std::get<I - 1>(acts);
        }
        z += p.biases();
      }
      auto& a = std::get<I>(acts);
      a.resize(z.rows());
      detail::activation_forward<typename LayerDescriptor<I>::activation>(z, a);
    });
    Gradients grads;
    auto& [nabla_b, nabla_w] = grads;
    // Backward pass.
    constexpr std::size_t L = num_layers - 1;
    detail::SmallVector<Scalar, LayerDescriptor<L>::outputs> delta_out(outputs);
    Cost::template output_delta<OutputActivation>(std::get<L>(zs), std::get<L>(acts), y.derived(),
                                                  delta_out);
    backward_sample<L>(delta_out, x0, acts, zs, nabla_b, nabla_w);
    return grads;
  }

  /// \brief Sum over the columns of the per-sample gradients, computed with
  /// whole-batch products. \returns `{sum nabla_b, sum nabla_w}`.
  template <class Cost = QuadraticCost, class DX, class DY>
  [[nodiscard]] Gradients gradient(const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DY>& Y) {
    check_batch("gradient", X, Y);
    return batch_gradients<Cost>(X.derived(), Y.derived(), nullptr);
  }

  /// \brief One step of mini-batch gradient descent on the m columns of X, Y:
  /// w -= eta/m * sum of per-sample gradients (likewise b), with whole-batch
  /// products. X and Y may be any expressions (e.g. `X.middleCols(k, m)`); they
  /// are not copied.
  /// \throws ShapeError on wrong shapes; ValueError if eta is not finite and > 0.
  template <class Cost = QuadraticCost, class DX, class DY>
  void update_mini_batch(const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DY>& Y,
                         double eta) {
    check_batch("update_mini_batch", X, Y);
    check_eta("update_mini_batch", eta);
    std::vector<PlainSgd::State<Scalar>> no_state;
    step<Cost>(X.derived(), Y.derived(), eta, Regularisation{}, PlainSgd{}, no_state, 0);
  }

  /// \brief Number of columns of `X` whose output argmax equals `labels`.
  /// \throws ShapeError on wrong shapes.
  template <class Derived>
  [[nodiscard]] long long evaluate(const Eigen::MatrixBase<Derived>& X,
                                   const Eigen::VectorXi& labels) const {
    check_rows("evaluate", "input", X.rows(), inputs, 0);
    check_parameters("evaluate");
    if (labels.size() != X.cols()) {
      throw ShapeError("evaluate: " + std::to_string(X.cols()) + " input columns but " +
                       std::to_string(labels.size()) + " labels");
    }
    long long correct = 0;
    constexpr Eigen::Index chunk = 4096;
    for (Eigen::Index first = 0; first < X.cols(); first += chunk) {
      const Eigen::Index n = std::min(chunk, X.cols() - first);
      const Matrix out = forward_matrix<0>(X.middleCols(first, n));
      for (Eigen::Index c = 0; c < n; ++c) {
        Eigen::Index arg = 0;
        out.col(c).maxCoeff(&arg);
        if (arg == labels(first + c)) ++correct;
      }
    }
    return correct;
  }

  /// \brief Saves the parameters in backprop's binary model format (docs/model-format.md:
  /// layer shapes, activations, scalar type, CRC-32), atomically: a temporary file in
  /// the same directory is written, fsync'ed and renamed over `path`, so `path` holds
  /// the old file or the complete new one, never a half-written one.
  /// \param path the file to create or replace
  /// \throws std::runtime_error naming `path` if it cannot be written (an existing
  ///         file is then left as it was); ValueError if a parameter is not finite;
  ///         ShapeError if a parameter matrix was resized away from its layer's shape
  void save(const std::filesystem::path& path) const {
    detail::save_to_path(path, [this](std::ostream& os) { detail::save_binary(*this, os); });
  }

  /// \brief Writes the binary model format to `os` (open it in binary mode).
  /// \param os the destination stream
  /// \throws std::runtime_error if the stream fails; ValueError if a parameter is not
  ///         finite; ShapeError if a parameter matrix was resized
  void save(std::ostream& os) const { detail::save_binary(*this, os); }

  /// \brief Loads parameters saved by `save`. The file must record this network's
  /// layer shapes and activations; a file of the other scalar type is converted
  /// (float to double exactly; double to float rounded, out-of-range values rejected).
  /// Strong guarantee: on any error the network is unchanged.
  /// \param path the model file
  /// \throws ModelFormatError naming `path` and the problem: cannot open, not a model,
  ///         unsupported version, different architecture (both sides named), truncated,
  ///         checksum mismatch, trailing bytes, non-finite values
  void load(const std::filesystem::path& path) {
    detail::load_from_path(path, [this](std::istream& is) { detail::load_binary(*this, is); });
  }

  /// \brief Loads a model written by `save(std::ostream&)`; it must extend to the end of
  /// the stream. Strong guarantee.
  /// \param is the source stream (binary mode)
  /// \throws ModelFormatError as `load(path)`, without the file name
  void load(std::istream& is) { detail::load_binary(*this, is); }

  /// \brief Saves the JSON of network2.py's `save` ("sizes", "weights", "biases",
  /// "cost"; plus "activations" if a layer is not a sigmoid), atomically like `save`.
  /// Numbers have 17 significant digits, so loading gives back the exact parameters.
  /// \param path the file to create or replace
  /// \param cost_name the "cost" entry, network2's cost class name
  /// \throws std::runtime_error naming `path` if it cannot be written (an existing
  ///         file is then left as it was); ValueError if a parameter is not finite;
  ///         ShapeError if a parameter matrix was resized away from its layer's shape
  void save_json(const std::filesystem::path& path,
                 std::string_view cost_name = QuadraticCost::name) const {
    detail::save_to_path(
        path, [this, cost_name](std::ostream& os) { detail::save_json(*this, os, cost_name); });
  }

  /// \brief Writes network2.py's JSON to `os`.
  /// \param os the destination stream
  /// \param cost_name the "cost" entry, network2's cost class name
  /// \throws std::runtime_error if the stream fails; ValueError if a parameter is not
  ///         finite; ShapeError if a parameter matrix was resized
  void save_json(std::ostream& os, std::string_view cost_name = QuadraticCost::name) const {
    detail::save_json(*this, os, cost_name);
  }

  /// \brief Loads a network2.py JSON model. "sizes" must equal this network's sizes;
  /// "activations", if present, must match (network2's files have none: every layer
  /// is a sigmoid there, and the activations are then not checked). Strong guarantee.
  /// \param path the JSON file
  /// \returns the file's "cost" (e.g. "CrossEntropyCost"), or "" if it has none
  /// \throws ModelFormatError naming `path` and the problem (line and column for
  ///         syntax errors; both sides for size mismatches)
  std::string load_json(const std::filesystem::path& path) {
    return detail::load_from_path(
        path, [this](std::istream& is) { return detail::load_json(*this, is); });
  }

  /// \brief Loads a network2.py JSON model from the rest of `is`. Strong guarantee.
  /// \param is the source stream
  /// \returns the file's "cost", or "" if it has none
  /// \throws ModelFormatError as `load_json(path)`, without the file name
  std::string load_json(std::istream& is) { return detail::load_json(*this, is); }

  /// \brief The cost summed over the columns of X, Y (no regularisation).
  /// \throws ShapeError on wrong shapes.
  template <class Cost = QuadraticCost, class DX, class DY>
  [[nodiscard]] double batch_cost(const Eigen::MatrixBase<DX>& X,
                                  const Eigen::MatrixBase<DY>& Y) const {
    check_batch("batch_cost", X, Y);
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
    check_dataset("total_cost", data);
    check_parameters("total_cost");
    if (data.empty()) return 0.0;
    const double n = static_cast<double>(data.size());
    return cost_sum<Cost>(data.inputs, data.targets) / n + penalty(lambda, lambda1, n);
  }

  /// \brief True when every weight and bias is finite.
  [[nodiscard]] bool parameters_finite() const {
    return parameters_finite_with(layer<0>().weights());
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

  /// \brief Mini-batch stochastic gradient descent (network.py's SGD, with
  /// network2's L2 and monitoring) with plain SGD updates: for each epoch, shuffle,
  /// split into mini-batches of `options.mini_batch_size` (the last may be smaller),
  /// and apply w <- (1 - eta lambda/n) w - eta lambda1/n sign(w) - eta/m sum grad to
  /// each (likewise b, without the regularisation terms). Evaluates on
  /// `evaluation_data` after each epoch when given, and reports through
  /// `options.on_epoch`. Same as `sgd(training_data, options, evaluation_data,
  /// PlainSgd{})`.
  /// \returns the per-epoch history.
  /// \throws ShapeError / ValueError on bad data or options.
  template <class Cost = QuadraticCost>
  TrainingHistory sgd(const Dataset<Scalar>& training_data, const SgdOptions& options,
                      const Dataset<Scalar>* evaluation_data = nullptr) {
    return sgd<Cost>(training_data, options, evaluation_data, PlainSgd{});
  }

  /// \brief `sgd` with the updates of `optimizer` (`PlainSgd`, `Momentum`, `Adam`
  /// or any type satisfying `Optimizer`). For every mini-batch and layer the mean
  /// gradient G_W = 1/m sum grad + lambda/n W + lambda1/n sign(W), G_b = 1/m sum grad
  /// is formed in a reused buffer and passed to `optimizer.update` (PlainSgd uses
  /// the fused form without a buffer). The optimizer's states (velocities, moments)
  /// live in this call: a new call starts from zero states. The epoch's eta follows
  /// `options.schedule`; `options.early_stopping_patience` may end training early
  /// and restores the parameters of the best epoch. Dropout layers are active in
  /// the training passes only.
  /// \returns the per-epoch history (also `best_epoch` and `stopped_early`).
  /// \throws ShapeError / ValueError on bad data or options (early stopping and
  ///         halve_on_plateau need labelled evaluation data); DivergenceError as
  ///         described at `SgdOptions::on_divergence`.
  template <class Cost = QuadraticCost, Optimizer Opt>
  TrainingHistory sgd(const Dataset<Scalar>& training_data, const SgdOptions& options,
                      const Dataset<Scalar>* evaluation_data, const Opt& optimizer) {
    validate_training(training_data, options, evaluation_data, true, false);
    const Eigen::Index n = training_data.size();
    const Eigen::Index m = static_cast<Eigen::Index>(options.mini_batch_size);
    std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), Eigen::Index{0});
    Matrix xb(inputs, m), yb(outputs, m);
    TrainingHistory history;
    std::vector<typename Opt::template State<Scalar>> states(2 * num_layers);
    long long updates = 0;
    EpochControl control(options);
    // The finiteness of the inputs is checked while building the sparse copy (one
    // pass over the data) or, for dense data, here.
    SparseInputs& sparse = m_sparse;
    bool finite = true;
    if (!sparse.build(training_data.inputs, options.sparse_input_density, finite)) {
      finite = detail::all_finite(training_data.inputs);
    }
    if (!finite) throw ValueError("sgd: the training inputs contain NaN or Inf");
    const Regularisation reg{options.lambda, options.lambda1, static_cast<double>(n)};
    using Clock = std::chrono::steady_clock;
    // The padded first layer (pad_first_layer) is used between the callbacks: without
    // on_batch, from the start of each epoch's mini-batches to their end.
    const bool pad =
        pad_first_layer && std::is_same_v<Opt, PlainSgd> && !sparse.empty() && !options.on_batch;
    struct Unpad {
      BasicNetwork& net;
      ~Unpad() { net.unpad_first_layer_weights(); }
    };
    for (int epoch = 1; epoch <= options.epochs; ++epoch) {
      const auto start = Clock::now();
      const double eta = control.learning_rate.eta();
      const bool guard = options.on_divergence == SgdOptions::OnDivergence::restore_and_throw;
      if (guard) m_snapshot = m_layers;
      if (options.shuffle) m_rng.shuffle(order.begin(), order.end());
      double running = 0.0;
      Unpad unpad{*this};  // also on an exception (diverged() has stopped using the copy)
      if (pad) pad_first_layer_weights();
      for (Eigen::Index k = 0; k < n; k += m) {
        const Eigen::Index count = std::min(m, n - k);
        yb.resize(outputs, count);
        const Eigen::Index* batch = order.data() + k;
        for (Eigen::Index j = 0; j < count; ++j) yb.col(j) = training_data.targets.col(batch[j]);
        if (!sparse.empty()) {
          // The next mini-batch's nonzeros (into level 2) and targets (shuffled: random
          // places in memory) are fetched while this one trains. 784-30-10: 34.4 -> 30.2
          // ms per epoch (median of 5 interleaved runs; 32.7 ms fetching the nonzeros
          // into level 1, 31.0 ms two mini-batches ahead); the kernels' own prefetch of
          // the next sample's nonzeros into level 1 stays (without it: 38.4 ms).
          for (Eigen::Index j = count; j < std::min(2 * m, n - k); ++j) {
            const auto s = static_cast<std::size_t>(batch[j]);
            detail::prefetch_range<2>(sparse.rows.get(), sparse.starts[s], sparse.starts[s + 1]);
            detail::prefetch_range<2>(sparse.values.get(), sparse.starts[s], sparse.starts[s + 1]);
            detail::prefetch_range(training_data.targets.data(), s * outputs, (s + 1) * outputs);
          }
          SparseInputBatch xs{&sparse, batch, count};
          xs.parallel = parallel_sparse(xs);
          step<Cost>(xs, yb, eta, reg, optimizer, states, ++updates);
        } else {
          xb.resize(inputs, count);
          for (Eigen::Index j = 0; j < count; ++j) xb.col(j) = training_data.inputs.col(batch[j]);
          step<Cost>(xb, yb, eta, reg, optimizer, states, ++updates);
        }
        const Eigen::Index batch_number = k / m + 1;
        if (guard && (batch_number % guard_interval == 0 || k + count == n)) {
          if (!parameters_finite_with(m_padded_active ? m_first_padded : layer<0>().weights())) {
            const Eigen::Index from = (batch_number - 1) / guard_interval * guard_interval + 1;
            diverged(epoch, from, batch_number, (from - 1) * m, k + count - 1, eta);
          }
        }
        if (options.on_batch) {
          constexpr std::size_t L = num_layers - 1;
          // The cost of the batch under the parameters before this step.
          running += Cost::value(m_z[L], m_a[L], yb);
          BatchProgress p;
          p.epoch = epoch;
          p.epochs = options.epochs;
          p.samples_done = k + count;
          p.samples_total = n;
          p.running_cost = running / static_cast<double>(k + count);
          p.seconds = std::chrono::duration<double>(Clock::now() - start).count();
          options.on_batch(p);
        }
      }
      unpad_first_layer_weights();
      EpochReport report;
      report.epoch = epoch;
      report.epochs = options.epochs;
      report.eta = eta;
      report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      if (options.monitor_training_cost) {
        report.training_cost = total_cost<Cost>(training_data, options.lambda, options.lambda1);
      }
      if (options.monitor_training_accuracy && training_data.labels.size() == n) {
        report.training_accuracy =
            static_cast<double>(evaluate(training_data.inputs, training_data.labels)) /
            static_cast<double>(n);
      }
      if (evaluation_data != nullptr && !evaluation_data->empty()) {
        if (options.monitor_evaluation_cost) {
          report.evaluation_cost =
              total_cost<Cost>(*evaluation_data, options.lambda, options.lambda1);
        }
        if (options.monitor_evaluation_accuracy && evaluation_data->labels.size() != 0) {
          report.evaluation_correct = evaluate(evaluation_data->inputs, evaluation_data->labels);
          report.evaluation_total = evaluation_data->size();
          report.evaluation_accuracy = static_cast<double>(report.evaluation_correct) /
                                       static_cast<double>(report.evaluation_total);
        }
      }
      history.epochs.push_back(report);
      if (options.on_epoch) {
        options.on_epoch(report);
      } else {
        print_epoch(report);
      }
      if (control.stop_after(report, *this, history)) break;
    }
    control.restore_best(*this, history);
    return history;
  }

  /// \brief Data-parallel `sgd`: the same training on the `exchange.size()` processes
  /// of `exchange` (e.g. `backprop::mpi::Communicator` from `backprop/distributed/
  /// mpi.hpp`); with one process it is exactly the `sgd` above. Collective: every
  /// process calls it with the same network type, options, optimizer and cost.
  ///
  /// - Start: the processes check that they agree on the layer sizes, scalar type,
  ///   options, layout and (replicated) the training set size and the shuffling
  ///   generator's state, then take process 0's parameters, so all start equal.
  /// - `options.mini_batch_size` is the global mini-batch, summed over processes.
  ///   `DataLayout::replicated`: every process passes the same training set; each
  ///   mini-batch of the shared shuffled order is split into `size()` contiguous
  ///   parts, one per process, so the result equals one process's `sgd` with the same
  ///   seed and batch, up to the rounding of the summation order (without dropout).
  ///   `DataLayout::sharded`: every process passes only its own samples; all do
  ///   ceil(n_total / mini_batch_size) steps per epoch, each on about 1/steps of their
  ///   own (locally shuffled) samples.
  /// - Each step computes the local gradient sums into one buffer (all layers, the
  ///   sample count and a failure flag per process) and makes one `exchange.sum` call;
  ///   every process then applies the same update (optimizer, L2/L1 with n_total).
  /// - Dropout masks come from a generator of each process's own.
  /// - The epoch's evaluation (accuracy, costs) is summed over the processes:
  ///   `evaluation_data` is split like the training data (replicated) or is each
  ///   process's own part (sharded); the reports hold the global totals, on every
  ///   process. `on_batch` sees the process's own running cost.
  /// \throws DistributedError on every process when they disagree or when one of them
  ///         failed (naming it; that process's message includes its own error); the
  ///         other exceptions of `sgd` as usual (a process whose arguments are invalid
  ///         throws its own ValueError/ShapeError, the others DistributedError).
  template <class Cost = QuadraticCost, Optimizer Opt, GradientExchange Ex>
  TrainingHistory sgd(const Dataset<Scalar>& training_data, const SgdOptions& options,
                      const Dataset<Scalar>* evaluation_data, const Opt& optimizer, Ex& exchange,
                      DataLayout layout = DataLayout::replicated) {
    if (exchange.size() <= 1) return sgd<Cost>(training_data, options, evaluation_data, optimizer);
    return data_parallel_sgd<Cost>(training_data, options, evaluation_data, optimizer, exchange,
                                   layout);
  }

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
    check_batch("dropout_gradient", X, Y);
    Rng masks(mask_seed);
    return batch_gradients<Cost>(X.derived(), Y.derived(), &masks);
  }

  /// \brief The cost summed over the columns of X, Y in a training pass with the
  /// dropout masks drawn from `Rng(mask_seed)` (see `dropout_gradient`).
  template <class Cost = QuadraticCost, class DX, class DY>
  [[nodiscard]] double dropout_batch_cost(const Eigen::MatrixBase<DX>& X,
                                          const Eigen::MatrixBase<DY>& Y, std::uint64_t mask_seed) {
    check_batch("dropout_batch_cost", X, Y);
    Rng masks(mask_seed);
    forward_batch<0>(X.derived(), &masks);
    constexpr std::size_t L = num_layers - 1;
    return Cost::value(m_z[L], m_a[L], Y.derived());
  }

  friend bool operator==(const BasicNetwork& a, const BasicNetwork& b) {
    return a.m_layers == b.m_layers;
  }

 private:
  template <class Derived>
  static constexpr void check_scalar() {
    static_assert(std::is_same_v<typename Derived::Scalar, Scalar>,
                  "backprop::Network: the data's scalar type must match the network's Scalar "
                  "(convert with .template cast<Scalar>())");
  }

  /// The parameter matrices are dynamic and mutable: a user may assign a matrix
  /// of another shape. Catch that before any product reads out of bounds.
  void check_parameters(const char* fn) const {
    detail::for_each_index<num_layers>([&](auto i) {
      constexpr std::size_t I = decltype(i)::value;
      constexpr int in = LayerDescriptor<I>::inputs;
      constexpr int out = LayerDescriptor<I>::outputs;
      const auto& p = layer<I>();
      if (p.weights().rows() != out || p.weights().cols() != in || p.biases().size() != out) {
        throw ShapeError(std::string(fn) + ": layer " + std::to_string(I) + " has weights " +
                         std::to_string(p.weights().rows()) + "x" +
                         std::to_string(p.weights().cols()) + " and " +
                         std::to_string(p.biases().size()) + " biases, but it is " +
                         std::to_string(out) + "x" + std::to_string(in) + " with " +
                         std::to_string(out) + " biases (assign matrices of the layer's shape)");
      }
    });
  }

  static void check_rows(const char* fn, const char* what, Eigen::Index got, int expected,
                         std::size_t layer_index) {
    if (got != expected) {
      throw ShapeError(std::string(fn) + ": " + what + " has " + std::to_string(got) +
                       " rows, layer " + std::to_string(layer_index) + " expects " +
                       std::to_string(expected));
    }
  }

  template <class DX, class DY>
  void check_batch(const char* fn, const Eigen::MatrixBase<DX>& X,
                   const Eigen::MatrixBase<DY>& Y) const {
    check_parameters(fn);
    check_scalar<DX>();
    check_scalar<DY>();
    check_rows(fn, "X", X.rows(), inputs, 0);
    if (Y.rows() != outputs) {
      throw ShapeError(std::string(fn) + ": Y has " + std::to_string(Y.rows()) +
                       " rows, the output layer " + std::to_string(num_layers - 1) + " has " +
                       std::to_string(outputs));
    }
    if (X.cols() != Y.cols()) {
      throw ShapeError(std::string(fn) + ": X has " + std::to_string(X.cols()) +
                       " columns but Y has " + std::to_string(Y.cols()));
    }
    if (X.cols() == 0) throw ShapeError(std::string(fn) + ": the mini-batch is empty (0 columns)");
  }

  static void check_eta(const char* fn, double eta) {
    if (!(std::isfinite(eta) && eta > 0.0)) {
      throw ValueError(std::string(fn) + ": eta must be finite and > 0, got " +
                       std::to_string(eta));
    }
  }

  static void check_dataset(const char* fn, const Dataset<Scalar>& d) {
    d.check_consistent(fn);
    if (d.inputs.rows() != inputs) {
      throw ShapeError(std::string(fn) + ": data has " + std::to_string(d.inputs.rows()) +
                       " input rows, layer 0 expects " + std::to_string(inputs));
    }
    if (d.targets.rows() != outputs) {
      throw ShapeError(std::string(fn) + ": data has " + std::to_string(d.targets.rows()) +
                       " target rows, the network has " + std::to_string(outputs) + " outputs");
    }
  }

  static void check_labels(const char* fn, const Dataset<Scalar>& d) {
    for (Eigen::Index i = 0; i < d.labels.size(); ++i) {
      if (d.labels(i) < 0 || d.labels(i) >= outputs) {
        throw ValueError(std::string(fn) + ": label " + std::to_string(d.labels(i)) +
                         " of sample " + std::to_string(i) + " is outside [0, " +
                         std::to_string(outputs) + ")");
      }
    }
  }

  void validate_training(const Dataset<Scalar>& train, const SgdOptions& o,
                         const Dataset<Scalar>* eval, bool batch_within_data = true,
                         bool check_inputs_finite = true) const {
    check_parameters("sgd");
    check_dataset("sgd (training data)", train);
    if (train.empty()) throw ValueError("sgd: the training data is empty");
    if (o.epochs < 0) throw ValueError("sgd: epochs must be >= 0, got " + std::to_string(o.epochs));
    if (o.mini_batch_size <= 0 || (batch_within_data && o.mini_batch_size > train.size())) {
      throw ValueError("sgd: mini_batch_size must be in [1, " + std::to_string(train.size()) +
                       "] (the training set size), got " + std::to_string(o.mini_batch_size));
    }
    check_eta("sgd", o.eta);
    if (!(std::isfinite(o.lambda) && o.lambda >= 0.0)) {
      throw ValueError("sgd: lambda must be finite and >= 0, got " + std::to_string(o.lambda));
    }
    if (!(std::isfinite(o.lambda1) && o.lambda1 >= 0.0)) {
      throw ValueError("sgd: lambda1 must be finite and >= 0, got " + std::to_string(o.lambda1));
    }
    if (o.early_stopping_patience < 0) {
      throw ValueError("sgd: early_stopping_patience must be >= 0, got " +
                       std::to_string(o.early_stopping_patience));
    }
    o.schedule.validate("sgd");
    if (!(o.sparse_input_density >= 0.0 && o.sparse_input_density <= 1.0)) {
      throw ValueError("sgd: sparse_input_density must be in [0, 1], got " +
                       std::to_string(o.sparse_input_density));
    }
    const bool needs_accuracy =
        o.early_stopping_patience > 0 || o.schedule.kind == Schedule::Kind::halve_on_plateau;
    if (needs_accuracy && (eval == nullptr || eval->empty() ||
                           eval->labels.size() != eval->size() || !o.monitor_evaluation_accuracy)) {
      throw ValueError(
          "sgd: early stopping and the halve_on_plateau schedule need evaluation data with "
          "labels and monitor_evaluation_accuracy on");
    }
    if (check_inputs_finite && !detail::all_finite(train.inputs))
      throw ValueError("sgd: the training inputs contain NaN or Inf");
    if (!detail::all_finite(train.targets))
      throw ValueError("sgd: the training targets contain NaN or Inf");
    check_labels("sgd (training data)", train);
    if (eval != nullptr) {
      check_dataset("sgd (evaluation data)", *eval);
      check_labels("sgd (evaluation data)", *eval);
    }
  }

  // ---- single-sample forward (vector, fixed-size where small) ----
  template <std::size_t I, class In>
  auto forward_vector(const In& a_prev) const {
    const auto& p = layer<I>();
    detail::SmallVector<Scalar, LayerDescriptor<I>::outputs> z(p.weights().rows());
    z.noalias() = p.weights() * a_prev;
    z += p.biases();
    detail::SmallVector<Scalar, LayerDescriptor<I>::outputs> a(z.rows());
    detail::activation_forward<typename LayerDescriptor<I>::activation>(z, a);
    if constexpr (I + 1 < num_layers) {
      return forward_vector<I + 1>(a);
    } else {
      return a;
    }
  }

  // ---- batch forward without workspace (const, thread-safe) ----
  template <std::size_t I, class In>
  Matrix forward_matrix(const In& a_prev) const {
    const auto& p = layer<I>();
    Matrix z(p.weights().rows(), a_prev.cols());
    z.noalias() = p.weights() * a_prev;
    z.colwise() += p.biases();
    Matrix a(z.rows(), z.cols());
    detail::activation_forward<typename LayerDescriptor<I>::activation>(z, a);
    if constexpr (I + 1 < num_layers) {
      return forward_matrix<I + 1>(a);
    } else {
      return a;
    }
  }

  template <std::size_t I, class In>
  void forward_keep_last(const In& a_prev, Matrix& z_out, Matrix& a_out) const {
    const auto& p = layer<I>();
    Matrix z(p.weights().rows(), a_prev.cols());
    z.noalias() = p.weights() * a_prev;
    z.colwise() += p.biases();
    Matrix a(z.rows(), z.cols());
    detail::activation_forward<typename LayerDescriptor<I>::activation>(z, a);
    if constexpr (I + 1 < num_layers) {
      forward_keep_last<I + 1>(a, z_out, a_out);
    } else {
      z_out = std::move(z);
      a_out = std::move(a);
    }
  }

  // ---- single-sample backward ----
  /// backprop(x, y) computes the first layer with the kernels of sparse_input.hpp:
  /// a first layer of at most small_layer outputs and up to 4096 inputs (the nonzero
  /// inputs are gathered on the stack).
  static constexpr bool sample_kernels =
      LayerDescriptor<0>::outputs <= detail::small_layer && inputs <= 4096;

  /// sgd's sparse first layer with plain SGD works on a copy of the weights whose
  /// columns are padded to whole 16-float vectors (64 bytes, as Eigen aligns them with
  /// AVX-512): every column then starts a cache line and the kernels need no masks
  /// or scalar tails. 784-30-10: the two sparse loops take 25% less time (30 rows
  /// touch 2.75 cache lines per column on average, padded to 32 rows exactly 2).
#if defined(__AVX512F__)
  static constexpr bool pad_first_layer = std::is_same_v<Scalar, float> &&
                                          LayerDescriptor<0>::outputs <= detail::small_layer &&
                                          LayerDescriptor<0>::outputs % 16 != 0;
#else
  static constexpr bool pad_first_layer = false;
#endif
  static constexpr int padded_first = (LayerDescriptor<0>::outputs + 15) / 16 * 16;

  /// Starts working on the padded copy of the first layer's weights.
  void pad_first_layer_weights() {
    const auto& w = layer<0>().weights();
    if (m_first_padded.rows() != padded_first || m_first_padded.cols() != w.cols()) {
      m_first_padded.setZero(padded_first, w.cols());
    }
    m_first_padded.topRows(w.rows()) = w;
    m_padded_active = true;
  }

  /// Copies the padded first-layer weights back (if in use) and stops using them.
  void unpad_first_layer_weights() noexcept {
    if (!m_padded_active) return;
    m_padded_active = false;
    auto& w = layer<0>().weights();
    w = m_first_padded.topRows(w.rows());  // same size: no allocation
  }

  /// Whether every parameter is finite, the first layer's weights read from `first`
  /// (sgd's padded copy while in use).
  bool parameters_finite_with(const Matrix& first) const {
    bool ok = detail::all_finite(first);
    detail::for_each_index<num_layers>([&](auto i) {
      if constexpr (decltype(i)::value > 0) ok = ok && detail::all_finite(layer<i>().weights());
      ok = ok && detail::all_finite(layer<i>().biases());
    });
    return ok;
  }

  /// Calls f(std::integral_constant<int, column stride>{}, weights) with the first
  /// layer's weights as sgd's sparse path uses them: the padded copy while in use.
  template <class F>
  void with_first_weights(F&& f) {
    if constexpr (pad_first_layer) {
      if (m_padded_active) {
        f(std::integral_constant<int, padded_first>{}, m_first_padded);
        return;
      }
    }
    f(std::integral_constant<int, LayerDescriptor<0>::outputs>{}, layer<0>().weights());
  }

  /// backprop(x, y) multiplies by the weights of layers after the first through
  /// fixed-size maps, coefficient-based (no call into Eigen's matrix-vector kernel),
  /// when both sizes are at most 64.
  template <std::size_t I>
  static constexpr bool small_sample_layer =
      LayerDescriptor<I>::inputs <= 64 && LayerDescriptor<I>::outputs <= 64;

  template <std::size_t I>
  auto fixed_weights() const {
    using Fixed = Eigen::Matrix<Scalar, LayerDescriptor<I>::outputs, LayerDescriptor<I>::inputs>;
    return Eigen::Map<const Fixed, Eigen::Aligned16>(layer<I>().weights().data());
  }

  template <std::size_t I, class Delta, class X0, class Acts, class Zs>
  void backward_sample(const Delta& delta, const X0& x0, const Acts& acts, const Zs& zs,
                       BiasGradients& nabla_b, WeightGradients& nabla_w) const {
    // A plain copy: Eigen's vectorised assignment from a fixed-size vector of 2 or 3
    // floats trips a false -Warray-bounds in g++ 12.
    auto& nb = std::get<I>(nabla_b);
    nb.resize(delta.rows());
    std::copy_n(delta.data(), delta.rows(), nb.data());
    if constexpr (I == 0 && sample_kernels) {
      auto& nw = std::get<I>(nabla_w);
      nw.resize(LayerDescriptor<0>::outputs, inputs);
      detail::outer_product_columns<LayerDescriptor<0>::outputs>(nw.data(), delta.data(), x0.data(),
                                                                 inputs);
    } else if constexpr (I == 0) {
      std::get<I>(nabla_w).noalias() = delta * x0.transpose();
    } else {
      std::get<I>(nabla_w).noalias() = delta * std::get<I - 1>(acts).transpose();
      using Prev = LayerDescriptor<I - 1>;
      detail::SmallVector<Scalar, Prev::outputs> g(Prev::outputs);
      if constexpr (small_sample_layer<I>) {
        g.noalias() = fixed_weights<I>().transpose().lazyProduct(delta);
      } else {
        g.noalias() = layer<I>().weights().transpose() * delta;
      }
      detail::SmallVector<Scalar, Prev::outputs> delta_prev(g.rows());
      detail::activation_backward<typename Prev::activation>(std::get<I - 1>(zs),
                                                             std::get<I - 1>(acts), g, delta_prev);
      backward_sample<I - 1>(delta_prev, x0, acts, zs, nabla_b, nabla_w);
    }
  }

  // ---- batch forward/backward with the reusable workspace ----
  /// Sums of the per-sample gradients over the batch (dropout masks from `masks`
  /// when given), through the workspace.
  template <class Cost, class DX, class DY>
  Gradients batch_gradients(const DX& X, const DY& Y, Rng* masks) {
    forward_batch<0>(X, masks);
    Gradients grads;
    backward_batch<Cost>(X, Y, [&](auto i, const auto& delta, const auto& a_prev) {
      constexpr std::size_t I = decltype(i)::value;
      std::get<I>(grads.first).noalias() = delta.rowwise().sum();
      std::get<I>(grads.second).noalias() = delta * a_prev.transpose();
    });
    return grads;
  }

  /// Forward pass into the workspace. With `mask_rng`, layers with dropout multiply
  /// their outputs by a fresh inverted-dropout mask (kept in m_mask) before passing
  /// them on; m_a keeps the unmasked activations for the activation's derivative.
  template <std::size_t I, class In>
  void forward_batch(const In& a_prev, Rng* mask_rng) {
    if constexpr (I == 0) m_dropout_active = mask_rng != nullptr;
    const auto& p = layer<I>();
    Matrix& z = m_z[I];
    z.resize(p.weights().rows(), a_prev.cols());
    m_gemm_forward[I].template assign<false, false>(z, p.weights(), a_prev);
    z.colwise() += p.biases();
    activate_batch<I>(mask_rng);
  }

  /// forward_batch for a sparse first-layer input: z_0 = W_0 x + b_0 summed over the
  /// nonzero inputs of each sample only.
  void forward_sparse(const SparseInputBatch& x, Rng* mask_rng) {
    m_dropout_active = mask_rng != nullptr;
    with_first_weights(
        [&](auto ld, const Matrix& w) { sparse_first_z<decltype(ld)::value>(w.data(), x); });
    activate_batch<0>(mask_rng);
  }

  /// m_z[0] = W x + b for a sparse batch, W's columns Ld apart (Ld > outputs: padded).
  template <int Ld>
  void sparse_first_z(const Scalar* w, const SparseInputBatch& x) {
    constexpr int Out = LayerDescriptor<0>::outputs;
    Matrix& z = m_z[0];
    z.resize(Out, x.count);
    const Scalar* bias = layer<0>().biases().data();
    const auto* rows = x.data->rows.get();
    const Scalar* values = x.data->values.get();
    const auto* starts = x.data->starts.data();
    // Wider layers: blocks of rows (a block of the weights stays in the level-2 cache
    // across the batch), on Eigen's threads when the batch is big enough; a layer of
    // one block splits the batch's samples between the threads instead.
    const bool parallel = x.parallel;
    constexpr bool by_rows = Out > detail::small_layer;
    const int parts = parallel && !by_rows ? std::max(1, Eigen::nbThreads()) : 1;
    detail::parallel_for(parts, parts > 1, [&](int part) {
      const Eigen::Index j0 = x.count * part / parts, j1 = x.count * (part + 1) / parts;
      detail::for_row_blocks<Out>(parallel && by_rows, [&](auto block, int r0) {
        constexpr int R = decltype(block)::value;
        for (Eigen::Index j = j0; j < j1; ++j) {
          const auto sample = static_cast<std::size_t>(x.samples[j]);
          if (j + 1 < j1) {
            // The samples are shuffled: fetch the next one's nonzeros while this one sums.
            const auto next = static_cast<std::size_t>(x.samples[j + 1]);
            detail::prefetch_range(rows, starts[next], starts[next + 1]);
            detail::prefetch_range(values, starts[next], starts[next + 1]);
          }
          detail::sparse_column_sum<R, (Ld > Out ? Ld : R)>(
              w + r0, bias + r0, rows, values, starts[sample], starts[sample + 1],
              z.data() + std::ptrdiff_t{Out} * j + r0, Ld);
        }
      });
    });
  }

  /// Whether the sparse first-layer kernels of this batch may use Eigen's threads:
  /// more than one, and enough work in the batch.
  bool parallel_sparse(const SparseInputBatch& x) const {
    constexpr int Out = LayerDescriptor<0>::outputs;
    if (Eigen::nbThreads() < 2) return false;
    std::size_t nonzeros = 0;
    const auto* starts = x.data->starts.data();
    for (Eigen::Index j = 0; j < x.count; ++j) {
      const auto sample = static_cast<std::size_t>(x.samples[j]);
      nonzeros += starts[sample + 1] - starts[sample];
    }
    return static_cast<double>(nonzeros) * Out >= detail::parallel_work;
  }

  /// The rest of forward_batch once m_z[I] holds layer I's z: activation, dropout,
  /// and the next layers.
  template <std::size_t I>
  void activate_batch(Rng* mask_rng) {
    const Matrix& z = m_z[I];
    Matrix& a = m_a[I];
    a.resize(z.rows(), z.cols());
    detail::activation_forward<typename LayerDescriptor<I>::activation>(z, a);
    if constexpr (I + 1 < num_layers) {
      if constexpr (dropout_rate < I >> 0.0) {
        if (mask_rng != nullptr) {
          Matrix& mask = m_mask[I];
          mask.resize(a.rows(), a.cols());
          const double keep = 1.0 - dropout_rate<I>;
          const Scalar scale = static_cast<Scalar>(1.0 / keep);
          Scalar* data = mask.data();
          for (Eigen::Index k = 0; k < mask.size(); ++k) {
            data[k] = mask_rng->uniform() < keep ? scale : Scalar(0);
          }
          m_dropped[I].resize(a.rows(), a.cols());
          m_dropped[I].noalias() = a.cwiseProduct(mask);
          forward_batch<I + 1>(m_dropped[I], mask_rng);
          return;
        }
      }
      forward_batch<I + 1>(a, mask_rng);
    }
  }

  template <std::size_t I>
  static constexpr double dropout_rate = detail::dropout_rate_of<LayerDescriptor<I>>();

  /// The input the last forward_batch gave layer I + 1: the (masked) output of layer I.
  template <std::size_t I>
  const Matrix& output_passed_on() const {
    if constexpr (dropout_rate < I >> 0.0) {
      if (m_dropout_active) return m_dropped[I];
    }
    return m_a[I];
  }

  /// Computes delta_L, then walks down the layers; for each layer I calls
  /// visit(I, delta_I, a_{I-1}) after delta_{I-1} has been computed from the
  /// current W_I, so `visit` may update W_I in place.
  template <class Cost, class DX, class DY, class Visit>
  void backward_batch(const DX& X, const DY& Y, Visit&& visit) {
    constexpr std::size_t L = num_layers - 1;
    m_d[L].resize(outputs, X.cols());
    Cost::template output_delta<OutputActivation>(m_z[L], m_a[L], Y, m_d[L]);
    backward_batch_from<L>(X, visit);
  }

  template <std::size_t I, class DX, class Visit>
  void backward_batch_from(const DX& X, Visit& visit) {
    if constexpr (I == 0) {
      visit(std::integral_constant<std::size_t, 0>{}, m_d[0], X);
    } else {
      using Prev = LayerDescriptor<I - 1>;
      Matrix& g = m_g[I - 1];
      g.resize(Prev::outputs, X.cols());
      m_gemm_backward[I].template assign<true, false>(g, layer<I>().weights(), m_d[I]);
      if constexpr (dropout_rate < I - 1 >> 0.0) {
        if (m_dropout_active) g.array() *= m_mask[I - 1].array();
      }
      m_d[I - 1].resize(Prev::outputs, X.cols());
      detail::activation_backward<typename Prev::activation>(m_z[I - 1], m_a[I - 1], g, m_d[I - 1]);
      visit(std::integral_constant<std::size_t, I>{}, m_d[I], output_passed_on<I - 1>());
      backward_batch_from<I - 1>(X, visit);
    }
  }

  /// L2 and L1 strengths and the training set size n they are divided by.
  struct Regularisation {
    double lambda = 0.0, lambda1 = 0.0, n = 1.0;
  };

  /// One training step on the columns of X, Y (dropout masks from m_rng). PlainSgd:
  /// the fused w <- (1 - eta lambda/n) w - eta lambda1/n sign(w) - eta/m D A^T, one
  /// product, no buffer. Otherwise the mean gradients go into m_gw / m_gb and
  /// through `opt.update`.
  template <class Cost, class Opt, class DX, class DY, class States>
  void step(const DX& X, const DY& Y, double eta, const Regularisation& reg, const Opt& opt,
            States& states, long long t) {
    const double l2 = reg.lambda / reg.n;
    const double l1 = reg.lambda1 / reg.n;
    if constexpr (detail::is_sparse_batch<DX>) {
      forward_sparse(X, &m_rng);
    } else {
      forward_batch<0>(X, &m_rng);
    }
    const double inv_m = 1.0 / static_cast<double>(X.cols());
    backward_batch<Cost>(X, Y, [&](auto i, const Matrix& delta, const auto& a_prev) {
      constexpr std::size_t I = decltype(i)::value;
      auto& p = layer<I>();
      if constexpr (std::is_same_v<Opt, PlainSgd>) {
        const Scalar rate = static_cast<Scalar>(eta * inv_m);
        const Scalar keep = static_cast<Scalar>(1.0 - eta * reg.lambda / reg.n);
        // L2 and L1 shrink the weights before the gradient step. (The padded copy's extra
        // rows are zero and stay zero: 0 * keep, sign(0) = 0.)
        auto shrink = [&](Matrix& w) {
          if (l1 != 0.0) {
            const Scalar s1 = static_cast<Scalar>(eta * l1);
            w.array() = keep * w.array() - s1 * w.array().sign();
          } else if (keep != Scalar(1)) {
            w *= keep;
          }
        };
        if constexpr (detail::is_sparse_batch<std::decay_t<decltype(a_prev)>>) {
          with_first_weights([&](auto ld, Matrix& w) {
            shrink(w);
            sparse_outer_add<decltype(ld)::value>(w, -rate, delta, a_prev);
          });
        } else {
          shrink(p.weights());
          m_gemm_update[I].template add<false, true>(p.weights(), -rate, delta, a_prev);
        }
        p.biases().noalias() -= rate * delta.rowwise().sum();
      } else {
        const Scalar scale = static_cast<Scalar>(inv_m);
        Matrix& gw = m_gw[I];
        gw.resize(p.weights().rows(), p.weights().cols());
        gw.setZero();
        if constexpr (detail::is_sparse_batch<std::decay_t<decltype(a_prev)>>) {
          sparse_outer_add(gw, scale, delta, a_prev);
        } else {
          m_gemm_update[I].template add<false, true>(gw, scale, delta, a_prev);
        }
        if (l2 != 0.0) gw += static_cast<Scalar>(l2) * p.weights();
        if (l1 != 0.0) gw += static_cast<Scalar>(l1) * p.weights().cwiseSign();
        Vector& gb = m_gb[I];
        gb.resize(p.biases().rows());
        gb.noalias() = scale * delta.rowwise().sum();
        opt.update(p.weights(), std::as_const(gw), states[2 * I], eta, t);
        opt.update(p.biases(), std::as_const(gb), states[2 * I + 1], eta, t);
      }
    });
  }

  /// target += factor * delta x^T over the nonzero inputs only: for every sample j and
  /// nonzero input k, column k of target (Out x inputs) moves by factor * x_kj * delta_j.
  template <int Ld = LayerDescriptor<0>::outputs>
  void sparse_outer_add(Matrix& target, Scalar factor, const Matrix& delta,
                        const SparseInputBatch& x) {
    constexpr int Out = LayerDescriptor<0>::outputs;
    static_assert(Ld == Out || Out <= detail::small_layer);
    Scalar* w = target.data();
    const auto* rows = x.data->rows.get();
    const Scalar* values = x.data->values.get();
    const auto* starts = x.data->starts.data();
    // Threads take contiguous ranges of columns (inputs), not blocks of rows (see
    // for_row_blocks). Within a range, blocks of rows. Every coefficient receives its
    // samples' terms in batch order, whatever the ranges and blocks.
    const int parts = x.parallel ? std::max(1, Eigen::nbThreads()) : 1;
    detail::parallel_for(parts, parts > 1, [&](int part) {
      using RowIndex = typename SparseInputs::RowIndexType;
      const auto first = static_cast<RowIndex>(std::int64_t{inputs} * part / parts);
      const std::int64_t last = std::int64_t{inputs} * (part + 1) / parts;
      detail::for_row_blocks<Out>(false, [&](auto block, int r0) {
        constexpr int R = decltype(block)::value;
        constexpr int Padded = Ld > Out ? Ld : R;
        Scalar d[Padded] = {};  // zero past R: the padded rows stay zero
        for (Eigen::Index j = 0; j < x.count; ++j) {
          const auto sample = static_cast<std::size_t>(x.samples[j]);
          std::size_t begin = starts[sample], end = starts[sample + 1];
          if (parts > 1) {  // the sample's nonzeros in [first, last): rows are ascending
            begin =
                static_cast<std::size_t>(std::lower_bound(rows + begin, rows + end, first) - rows);
            if (last < inputs) {
              end = static_cast<std::size_t>(
                  std::lower_bound(rows + begin, rows + end, static_cast<RowIndex>(last)) - rows);
            }
          }
          const Scalar* dj = delta.data() + std::ptrdiff_t{Out} * j + r0;
          for (int i = 0; i < R; ++i) d[i] = factor * dj[i];
          detail::sparse_column_update<R, Padded>(w + r0, d, rows, values, begin, end, Ld);
        }
      });
    });
  }

  using ParameterTuple = std::tuple<typename Layers::template Parameters<Scalar>...>;

  /// The cost summed over the columns of X, Y, in chunks (no workspace; const).
  template <class Cost, class DX, class DY>
  double cost_sum(const DX& X, const DY& Y) const {
    double sum = 0.0;
    constexpr Eigen::Index chunk = 4096;
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

  /// Restores the epoch-start parameters and throws the DivergenceError of `sgd`.
  /// The divergence check runs after every this many mini-batches and after the
  /// last of each epoch (a check reads every parameter: 14% of a 784-30-10 epoch when
  /// done after every mini-batch of 10).
  static constexpr Eigen::Index guard_interval = 16;

  [[noreturn]] void diverged(int epoch, Eigen::Index first_batch, Eigen::Index last_batch,
                             Eigen::Index first, Eigen::Index last, double eta) {
    m_padded_active = false;  // the padded copy holds the diverged weights: dropped
    m_layers = m_snapshot;
    const std::string batches =
        first_batch == last_batch
            ? "mini-batch " + std::to_string(last_batch)
            : "mini-batches " + std::to_string(first_batch) + " to " + std::to_string(last_batch);
    throw DivergenceError("sgd: training diverged in epoch " + std::to_string(epoch) + ", " +
                          batches + " (samples " + std::to_string(first) + " to " +
                          std::to_string(last) +
                          " of the shuffled order): a parameter became NaN or infinite with " +
                          "eta " + std::to_string(eta) + "; the parameters from the start of " +
                          "epoch " + std::to_string(epoch) +
                          " were restored (set on_divergence = keep_going to skip this check)");
  }

  /// The end-of-epoch bookkeeping shared by both `sgd` loops: early stopping (keeping
  /// the best parameters) and the learning-rate schedule.
  struct EpochControl {
    explicit EpochControl(const SgdOptions& o)
        : learning_rate(o.schedule, o.eta, o.epochs),
          patience(o.early_stopping_patience),
          epochs(o.epochs) {}
    LearningRate learning_rate;
    int patience;
    int epochs;
    long long best_correct = -1;
    int since_best = 0;
    ParameterTuple best;

    /// True when training ends after this epoch.
    bool stop_after(const EpochReport& report, const BasicNetwork& net, TrainingHistory& h) {
      if (patience > 0) {
        if (report.evaluation_correct > best_correct) {
          best_correct = report.evaluation_correct;
          best = net.m_layers;
          h.best_epoch = report.epoch;
          since_best = 0;
        } else if (++since_best >= patience) {
          h.stopped_early = report.epoch < epochs;
          return true;
        }
      }
      learning_rate.end_epoch(report.evaluation_accuracy);
      if (learning_rate.finished()) {
        h.stopped_early = report.epoch < epochs;
        return true;
      }
      return false;
    }
    void restore_best(BasicNetwork& net, const TrainingHistory& h) {
      if (patience > 0 && h.best_epoch > 0) net.m_layers = std::move(best);
    }
  };

  // ---- data-parallel training ----

  /// Offset of layer I's parameters (weights column-major, then biases) in a flat
  /// buffer of all parameters.
  template <std::size_t I>
  static constexpr Eigen::Index parameter_offset() {
    Eigen::Index off = 0;
    detail::for_each_index<I>([&](auto j) {
      off +=
          static_cast<Eigen::Index>(LayerDescriptor<j>::inputs + 1) * LayerDescriptor<j>::outputs;
    });
    return off;
  }

  /// Throws on every process if a flag in `flags[0, P)` is set (the processes that
  /// failed); the failed process's message carries its own error.
  template <class T>
  static void raise_if_failed(const T* flags, int processes, const std::exception_ptr& own,
                              const std::string& own_where, const std::string& exchange) {
    std::string failed;
    for (int q = 0; q < processes; ++q) {
      if (flags[q] != T(0)) failed += (failed.empty() ? "" : ", ") + std::to_string(q);
    }
    if (failed.empty()) return;
    std::string what = "see that rank's error";
    if (own) {
      try {
        std::rethrow_exception(own);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
        what = "an exception not derived from std::exception";
      }
    }
    const std::string where = own ? own_where : "(reported at the exchange of " + exchange + ")";
    throw DistributedError("sgd (data-parallel): rank " + failed + " failed " + where + ": " +
                           what);
  }

  /// The start of a data-parallel `sgd`: validates locally, checks that all processes
  /// agree, then copies process 0's parameters to all. Returns the global training
  /// set size.
  template <class Ex>
  Eigen::Index agree_on_training(const Dataset<Scalar>& train, const SgdOptions& o,
                                 const Dataset<Scalar>* eval, Ex& ex, DataLayout layout) {
    const int P = ex.size();
    const int r = ex.rank();
    const bool sharded = layout == DataLayout::sharded;
    std::exception_ptr invalid;
    try {
      validate_training(train, o, eval, !sharded);
    } catch (...) {
      invalid = std::current_exception();
    }
    Rng probe = m_rng;
    const std::uint64_t rng_id = probe();
    constexpr int K = 16;
    std::vector<double> all(static_cast<std::size_t>(K * P), 0.0);
    double* mine = all.data() + static_cast<std::ptrdiff_t>(K) * r;
    mine[0] = invalid ? 1.0 : 0.0;
    mine[1] = static_cast<double>(sizeof(Scalar));
    mine[2] = static_cast<double>(num_layers);
    mine[3] = static_cast<double>(parameter_count());
    mine[4] = sharded ? 1.0 : 0.0;
    mine[5] = static_cast<double>(train.size());
    mine[6] = static_cast<double>(o.mini_batch_size);
    mine[7] = static_cast<double>(o.epochs);
    mine[8] = o.eta;
    mine[9] = o.lambda;
    mine[10] = o.lambda1;
    mine[11] = (o.shuffle ? 1.0 : 0.0) +
               (o.on_divergence == SgdOptions::OnDivergence::restore_and_throw ? 2.0 : 0.0);
    mine[12] = static_cast<double>(o.early_stopping_patience);
    mine[13] = sharded ? 0.0 : static_cast<double>(rng_id >> 32);
    mine[14] = sharded ? 0.0 : static_cast<double>(rng_id & 0xffffffffu);
    mine[15] = eval == nullptr ? -1.0 : static_cast<double>(eval->size());
    ex.sum(std::span<double>(all));
    auto field = [&](int q, int f) { return all[static_cast<std::size_t>(K * q + f)]; };
    const std::string who = "sgd (data-parallel, " + std::to_string(P) + " ranks): ";
    std::string failed;
    for (int q = 0; q < P; ++q) {
      if (field(q, 0) != 0.0) failed += (failed.empty() ? "" : ", ") + std::to_string(q);
    }
    if (!failed.empty()) {
      if (invalid) std::rethrow_exception(invalid);
      throw DistributedError(who + "rank " + failed +
                             " rejected its training arguments (its own error says why)");
    }
    auto number = [](double v) {
      std::string t = std::to_string(v);
      if (v == std::floor(v) && std::abs(v) < 1e15) t = std::to_string(static_cast<long long>(v));
      return t;
    };
    struct Field {
      int index;
      const char* name;
    };
    static constexpr Field fields[] = {{1, "sizeof(Scalar)"},
                                       {2, "number of layers"},
                                       {4, "layout (0 replicated, 1 sharded)"},
                                       {6, "mini_batch_size"},
                                       {7, "epochs"},
                                       {8, "eta"},
                                       {9, "lambda"},
                                       {10, "lambda1"},
                                       {11, "shuffle/on_divergence"},
                                       {12, "early_stopping_patience"}};
    for (int q = 1; q < P; ++q) {
      for (const Field& f : fields) {
        if (field(q, f.index) != field(0, f.index)) {
          throw DistributedError(who + "rank " + std::to_string(q) + " has " + f.name + " " +
                                 number(field(q, f.index)) + ", rank 0 has " +
                                 number(field(0, f.index)));
        }
      }
    }
    // The layer sizes, now that every process has the same number of layers.
    constexpr int S = static_cast<int>(num_layers) + 1;
    std::vector<double> sizes(static_cast<std::size_t>(S * P), 0.0);
    double* my_sizes = sizes.data() + static_cast<std::ptrdiff_t>(S) * r;
    my_sizes[0] = inputs;
    detail::for_each_index<num_layers>(
        [&](auto i) { my_sizes[i + 1] = LayerDescriptor<i>::outputs; });
    ex.sum(std::span<double>(sizes));
    auto shape = [&](int q) {
      std::string t;
      for (int k = 0; k < S; ++k) {
        t += (k ? "-" : "") + number(sizes[static_cast<std::size_t>(S * q + k)]);
      }
      return t;
    };
    for (int q = 1; q < P; ++q) {
      if (shape(q) != shape(0)) {
        throw DistributedError(who + "rank " + std::to_string(q) + " has layer sizes " + shape(q) +
                               ", rank 0 has " + shape(0));
      }
    }
    Eigen::Index n_total = 0;
    for (int q = 0; q < P; ++q) {
      if (!sharded && field(q, 5) != field(0, 5)) {
        throw DistributedError(who + "rank " + std::to_string(q) + " has " + number(field(q, 5)) +
                               " training samples, rank 0 has " + number(field(0, 5)) +
                               " (the replicated layout needs the same data on every rank)");
      }
      if (!sharded && (field(q, 13) != field(0, 13) || field(q, 14) != field(0, 14))) {
        throw DistributedError(
            who + "rank " + std::to_string(q) + "'s shuffling generator differs from rank " +
            "0's (the replicated layout shuffles with it on every rank): construct the " +
            "networks with the same seed, or set net.rng() equal, on every rank");
      }
      if (!sharded && (field(q, 15) < 0) != (field(0, 15) < 0)) {
        throw DistributedError(
            who + "rank " + std::to_string(q) + (field(q, 15) < 0 ? " has no" : " has") +
            " evaluation data, rank 0" + (field(0, 15) < 0 ? " has none" : " has"));
      }
      n_total += static_cast<Eigen::Index>(field(q, 5));
    }
    if (!sharded) n_total = train.size();
    if (o.mini_batch_size > n_total) {
      throw ValueError(who + "mini_batch_size must be in [1, " + std::to_string(n_total) +
                       "] (the training set size over all ranks), got " +
                       std::to_string(o.mini_batch_size));
    }
    // Every process starts from process 0's parameters.
    std::vector<Scalar> params(static_cast<std::size_t>(parameter_count()), Scalar(0));
    if (r == 0) {
      detail::for_each_index<num_layers>([&](auto i) {
        const auto& p = layer<i>();
        Scalar* out = params.data() + parameter_offset<i>();
        Eigen::Map<Matrix>(out, p.weights().rows(), p.weights().cols()) = p.weights();
        Eigen::Map<Vector>(out + p.weights().size(), p.biases().rows()) = p.biases();
      });
    }
    ex.sum(std::span<Scalar>(params));
    detail::for_each_index<num_layers>([&](auto i) {
      auto& p = layer<i>();
      const Scalar* in = params.data() + parameter_offset<i>();
      p.weights() = Eigen::Map<const Matrix>(in, p.weights().rows(), p.weights().cols());
      p.biases() = Eigen::Map<const Vector>(in + p.weights().size(), p.biases().rows());
    });
    return n_total;
  }

  /// Sums over the columns of X, Y of the gradients (dropout masks from `masks`),
  /// written into the flat buffer `out` (layout of `parameter_offset`).
  template <class Cost, class DX, class DY>
  void gradient_sums_into(const DX& X, const DY& Y, Rng* masks, Scalar* out) {
    forward_batch<0>(X, masks);
    backward_batch<Cost>(X, Y, [&](auto i, const auto& delta, const auto& a_prev) {
      constexpr std::size_t I = decltype(i)::value;
      constexpr Eigen::Index rows = LayerDescriptor<I>::outputs;
      constexpr Eigen::Index cols = LayerDescriptor<I>::inputs;
      Scalar* at = out + parameter_offset<I>();
      Eigen::Map<Matrix>(at, rows, cols).noalias() = delta * a_prev.transpose();
      Eigen::Map<Vector>(at + rows * cols, rows).noalias() = delta.rowwise().sum();
    });
  }

  /// The update of one step from the gradient sums over `count` samples in `sums`,
  /// the same on every process: PlainSgd's w <- (1 - eta lambda/n) w - eta lambda1/n
  /// sign(w) - eta/count sum, or the optimizer's update with the mean gradient.
  template <class Opt, class States>
  void apply_gradient_sums(const Scalar* sums, double count, double eta, const Regularisation& reg,
                           const Opt& opt, States& states, long long t) {
    const double l2 = reg.lambda / reg.n;
    const double l1 = reg.lambda1 / reg.n;
    detail::for_each_index<num_layers>([&](auto i) {
      constexpr std::size_t I = decltype(i)::value;
      auto& p = layer<I>();
      const Scalar* at = sums + parameter_offset<I>();
      const Eigen::Map<const Matrix> sw(at, p.weights().rows(), p.weights().cols());
      const Eigen::Map<const Vector> sb(at + sw.size(), p.biases().rows());
      if constexpr (std::is_same_v<Opt, PlainSgd>) {
        const Scalar rate = static_cast<Scalar>(eta / count);
        const Scalar keep = static_cast<Scalar>(1.0 - eta * l2);
        if (l1 != 0.0) {
          const Scalar shrink = static_cast<Scalar>(eta * l1);
          p.weights().array() = keep * p.weights().array() - shrink * p.weights().array().sign();
        } else if (keep != Scalar(1)) {
          p.weights() *= keep;
        }
        p.weights().noalias() -= rate * sw;
        p.biases().noalias() -= rate * sb;
      } else {
        const Scalar scale = static_cast<Scalar>(1.0 / count);
        Matrix& gw = m_gw[I];
        gw.noalias() = scale * sw;
        if (l2 != 0.0) gw += static_cast<Scalar>(l2) * p.weights();
        if (l1 != 0.0) gw += static_cast<Scalar>(l1) * p.weights().cwiseSign();
        Vector& gb = m_gb[I];
        gb.noalias() = scale * sb;
        opt.update(p.weights(), std::as_const(gw), states[2 * I], eta, t);
        opt.update(p.biases(), std::as_const(gb), states[2 * I + 1], eta, t);
      }
    });
  }

  template <class Cost, class Opt, class Ex>
  TrainingHistory data_parallel_sgd(const Dataset<Scalar>& train, const SgdOptions& options,
                                    const Dataset<Scalar>* eval, const Opt& optimizer, Ex& ex,
                                    DataLayout layout) {
    const int P = ex.size();
    const int r = ex.rank();
    const bool sharded = layout == DataLayout::sharded;
    const Eigen::Index n_total = agree_on_training(train, options, eval, ex, layout);
    const Eigen::Index n = train.size();
    const Eigen::Index m = static_cast<Eigen::Index>(options.mini_batch_size);
    const Eigen::Index steps = (n_total + m - 1) / m;
    // Rank-own generators for dropout masks and (sharded) the local order. The
    // replicated order comes from m_rng, as in one process; sharded training advances
    // m_rng once so that the next call draws new streams.
    Rng probe = m_rng;
    if (sharded) m_rng();
    const std::uint64_t stream =
        probe() ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(r + 1));
    Rng masks(stream);
    Rng local_order(stream + 0xD1B54A32D192ED03ull);
    Rng& shuffler = sharded ? local_order : m_rng;

    std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), Eigen::Index{0});
    Matrix xb, yb;
    const Eigen::Index np = static_cast<Eigen::Index>(parameter_count());
    std::vector<Scalar> buffer(static_cast<std::size_t>(np + 1 + P));
    detail::for_each_index<num_layers>([&](auto i) {
      m_gw[i].resize(LayerDescriptor<i>::outputs, LayerDescriptor<i>::inputs);
      m_gb[i].resize(LayerDescriptor<i>::outputs);
    });
    TrainingHistory history;
    std::vector<typename Opt::template State<Scalar>> states(2 * num_layers);
    long long updates = 0;
    EpochControl control(options);
    const Regularisation reg{options.lambda, options.lambda1, static_cast<double>(n_total)};
    std::exception_ptr pending;  // a local failure, reported at the next exchange
    std::string pending_where;   // where it happened
    const bool guard = options.on_divergence == SgdOptions::OnDivergence::restore_and_throw;
    using Clock = std::chrono::steady_clock;
    constexpr std::size_t L = num_layers - 1;
    for (int epoch = 1; epoch <= options.epochs; ++epoch) {
      const auto start = Clock::now();
      const double eta = control.learning_rate.eta();
      if (guard) m_snapshot = m_layers;
      if (options.shuffle) shuffler.shuffle(order.begin(), order.end());
      double running = 0.0;
      Eigen::Index done = 0;
      for (Eigen::Index s = 0; s < steps; ++s) {
        Eigen::Index first = 0, count = 0;
        if (sharded) {
          first = s * n / steps;
          count = (s + 1) * n / steps - first;
        } else {
          const Eigen::Index k = s * m;
          const Eigen::Index global = std::min(m, n - k);
          first = k + global * r / P;
          count = k + global * (r + 1) / P - first;
        }
        std::fill(buffer.begin(), buffer.end(), Scalar(0));
        if (!pending) {
          try {
            if (count > 0) {
              xb.resize(inputs, count);
              yb.resize(outputs, count);
              for (Eigen::Index j = 0; j < count; ++j) {
                const Eigen::Index src = order[static_cast<std::size_t>(first + j)];
                xb.col(j) = train.inputs.col(src);
                yb.col(j) = train.targets.col(src);
              }
              gradient_sums_into<Cost>(xb, yb, &masks, buffer.data());
              if (options.on_batch) running += Cost::value(m_z[L], m_a[L], yb);
            }
            buffer[static_cast<std::size_t>(np)] = static_cast<Scalar>(count);
          } catch (...) {
            pending = std::current_exception();
            pending_where =
                "in epoch " + std::to_string(epoch) + ", mini-batch " + std::to_string(s + 1);
            std::fill(buffer.begin(), buffer.end(), Scalar(0));
          }
        }
        if (pending) buffer[static_cast<std::size_t>(np + 1 + r)] = Scalar(1);
        ex.sum(std::span<Scalar>(buffer));
        raise_if_failed(buffer.data() + np + 1, P, pending, pending_where,
                        "epoch " + std::to_string(epoch) + ", mini-batch " + std::to_string(s + 1));
        const double total = static_cast<double>(buffer[static_cast<std::size_t>(np)]);
        if (total > 0) {
          apply_gradient_sums(buffer.data(), total, eta, reg, optimizer, states, ++updates);
        }
        if (guard && ((s + 1) % guard_interval == 0 || s + 1 == steps) && !parameters_finite()) {
          const Eigen::Index from = s / guard_interval * guard_interval + 1;
          diverged(epoch, from, s + 1, (from - 1) * m, std::min(n_total, (s + 1) * m) - 1, eta);
        }
        done += count;
        if (options.on_batch && !pending) {
          try {
            BatchProgress p;
            p.epoch = epoch;
            p.epochs = options.epochs;
            p.samples_done = std::min(n_total, (s + 1) * m);
            p.samples_total = n_total;
            p.running_cost = done > 0 ? running / static_cast<double>(done) : 0.0;
            p.seconds = std::chrono::duration<double>(Clock::now() - start).count();
            options.on_batch(p);
          } catch (...) {
            pending = std::current_exception();
            pending_where = "in on_batch after epoch " + std::to_string(epoch) + ", mini-batch " +
                            std::to_string(s + 1);
          }
        }
      }
      // The epoch's statistics, summed over the processes: training cost sum, training
      // correct, evaluation cost sum, evaluation correct, evaluation count, flags.
      std::vector<double> stats(static_cast<std::size_t>(5 + P), 0.0);
      // This process's part of a data set: all of it (sharded) or its 1/P (replicated).
      auto part = [&](const Dataset<Scalar>& d, double* cost, double* correct) {
        const Eigen::Index size = d.size();
        const Eigen::Index a = sharded ? 0 : size * r / P;
        const Eigen::Index c = sharded ? size : size * (r + 1) / P - a;
        if (c == 0) return Eigen::Index{0};
        if (cost) *cost = cost_sum<Cost>(d.inputs.middleCols(a, c), d.targets.middleCols(a, c));
        if (correct && d.labels.size() == size) {
          const Eigen::VectorXi labels = d.labels.segment(a, c);
          *correct = static_cast<double>(evaluate(d.inputs.middleCols(a, c), labels));
        }
        return c;
      };
      if (!pending) {
        try {
          part(train, options.monitor_training_cost ? &stats[0] : nullptr,
               options.monitor_training_accuracy ? &stats[1] : nullptr);
          if (eval != nullptr && !eval->empty() &&
              (options.monitor_evaluation_cost || options.monitor_evaluation_accuracy)) {
            stats[4] = static_cast<double>(
                part(*eval, options.monitor_evaluation_cost ? &stats[2] : nullptr,
                     options.monitor_evaluation_accuracy && eval->labels.size() != 0 ? &stats[3]
                                                                                     : nullptr));
          }
        } catch (...) {
          pending = std::current_exception();
          pending_where = "evaluating epoch " + std::to_string(epoch);
        }
      }
      if (pending) stats[static_cast<std::size_t>(5 + r)] = 1.0;
      ex.sum(std::span<double>(stats));
      raise_if_failed(stats.data() + 5, P, pending, pending_where,
                      "the statistics of epoch " + std::to_string(epoch));
      EpochReport report;
      report.epoch = epoch;
      report.epochs = options.epochs;
      report.eta = eta;
      report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      const double nt = static_cast<double>(n_total);
      if (options.monitor_training_cost) {
        report.training_cost = stats[0] / nt + penalty(options.lambda, options.lambda1, nt);
      }
      if (options.monitor_training_accuracy && train.labels.size() == n) {
        report.training_accuracy = stats[1] / nt;
      }
      if (stats[4] > 0) {
        const double ne = stats[4];
        if (options.monitor_evaluation_cost) {
          report.evaluation_cost = stats[2] / ne + penalty(options.lambda, options.lambda1, ne);
        }
        if (options.monitor_evaluation_accuracy && eval->labels.size() != 0) {
          report.evaluation_correct = static_cast<long long>(stats[3]);
          report.evaluation_total = static_cast<long long>(ne);
          report.evaluation_accuracy = stats[3] / ne;
        }
      }
      history.epochs.push_back(report);
      try {
        if (options.on_epoch) {
          options.on_epoch(report);
        } else if (r == 0) {
          print_epoch(report);
        }
      } catch (...) {
        pending = std::current_exception();
        pending_where = "in on_epoch after epoch " + std::to_string(epoch);
      }
      if (control.stop_after(report, *this, history)) break;
    }
    control.restore_best(*this, history);
    if (pending) std::rethrow_exception(pending);
    return history;
  }

  std::tuple<typename Layers::template Parameters<Scalar>...> m_layers;
  Rng m_rng;
  // Workspace of the batched path, reused between mini-batches of the same size.
  std::array<Matrix, num_layers> m_z, m_a, m_d, m_g;
  // Dropout masks (already divided by 1 - p) and masked outputs of dropout layers.
  std::array<Matrix, num_layers> m_mask, m_dropped;
  bool m_dropout_active = false;
  // The sparse copy of the training inputs of the last sgd call (buffers reused).
  SparseInputs m_sparse;
  // sgd's working copy of the first layer's weights with whole-vector columns
  // (pad_first_layer), holding the current weights while m_padded_active.
  Matrix m_first_padded;
  bool m_padded_active = false;
  // Packing buffers of the large products (forward, backward, weight gradient).
  std::array<detail::GemmWorkspace<Scalar>, num_layers> m_gemm_forward, m_gemm_backward,
      m_gemm_update;
  // Mean-gradient buffers of the non-plain optimizers.
  std::array<Matrix, num_layers> m_gw;
  std::array<Vector, num_layers> m_gb;
  // Parameters at the start of the current sgd epoch, restored on divergence.
  std::tuple<typename Layers::template Parameters<Scalar>...> m_snapshot;
};

/// \brief A `float` network: `Network<Dense<784, 30, Sigmoid>, Dense<30, 10, Sigmoid>>`.
template <class... Layers>
using Network = BasicNetwork<float, Layers...>;

}  // namespace backprop
