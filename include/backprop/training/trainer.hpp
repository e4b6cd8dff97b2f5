/// \file
/// \brief The training loop behind `BasicNetwork::sgd` and `update_mini_batch`: epochs of
/// shuffled mini-batches, the plain-SGD fused update or an `Optimizer`, L2/L1, the
/// learning-rate schedule, early stopping, the divergence guard and the reports. It
/// works for any layer through the layer concept (concepts.hpp): parameters and their
/// gradients reach it through the backward pass's sink, never by layer type. The
/// data-parallel loop is in data_parallel.hpp.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../data/dataset.hpp"
#include "../detail/finite.hpp"
#include "../detail/meta.hpp"
#include "../errors.hpp"
#include "../network.hpp"
#include "../optimizers/optimizers.hpp"
#include "options.hpp"
#include "schedule.hpp"

namespace backprop::detail {

/// The layer hooks sgd uses when a layer has them (Dense: the sparse first layer and
/// its padded weights).
template <class T>
concept TakesSparseInputs = requires {
  typename T::SparseInputBatch;
};

template <class Net>
struct Trainer {
  using Scalar = typename Net::Scalar;
  using Matrix = typename Net::Matrix;
  static constexpr std::size_t num_layers = Net::num_layers;
  static constexpr int inputs = Net::inputs;
  static constexpr int outputs = Net::outputs;
  template <std::size_t I>
  using LayerAt = typename Net::template LayerParameters<I>;
  using First = LayerAt<0>;

  /// L2 and L1 strengths and the training set size n they are divided by.
  struct Regularisation {
    double lambda = 0.0, lambda1 = 0.0, n = 1.0;
  };

  /// Mean-gradient buffers of the non-plain optimizers, shaped like the parameters.
  using Buffers = typename Net::Gradients;
  template <std::size_t I, int S>
  static auto& buffer(Buffers& b) {
    if constexpr (S == 0) {
      return std::get<I>(b.second);
    } else {
      return std::get<I>(b.first);
    }
  }

  static void check_eta(const char* fn, double eta) {
    if (!(std::isfinite(eta) && eta > 0.0)) {
      throw ValueError(std::string(fn) + ": eta must be finite and > 0, got " +
                       std::to_string(eta));
    }
  }

  /// When X (inputs x m) is a column-major matrix in memory (a Matrix, a block of its
  /// columns, a Map with any column stride) and the first layer has sgd's sparse path
  /// (Dense), builds the sparse copy of X's nonzeros if at most half of X is nonzero,
  /// calls f(sparse batch) and returns true; otherwise returns false (the products then).
  template <class DX, class F>
  static bool with_sparse_batch(Net& net, const Eigen::MatrixBase<DX>& X, F&& f) {
    if constexpr (TakesSparseInputs<First> && (DX::Flags & Eigen::DirectAccessBit) != 0 &&
                  !DX::IsRowMajor) {
      const DX& x = X.derived();
      if (x.innerStride() != 1) return false;
      typename First::SparseInputBatch xs{};
      const auto* batch = net.template layer<0>().sparse_mini_batch(
          std::get<0>(net.m_work), x.data(), x.cols(), x.outerStride(), xs);
      if (batch == nullptr) return false;
      f(*batch);
      return true;
    } else {
      return false;
    }
  }

  template <class Cost, class DX, class DY>
  static void update_mini_batch(Net& net, const DX& X, const DY& Y, double eta) {
    check_batch(net, "update_mini_batch", X, Y);
    check_eta("update_mini_batch", eta);
    const FlushSubnormals flush;
    std::vector<PlainSgd::State<Scalar>> no_state;
    Buffers no_buffers;
    const bool sparse = with_sparse_batch(net, X, [&](const auto& batch) {
      step<Cost>(net, batch, Y.derived(), eta, Regularisation{}, PlainSgd{}, no_state, no_buffers,
                 0);
    });
    if (sparse) return;
    step<Cost>(net, X.derived(), Y.derived(), eta, Regularisation{}, PlainSgd{}, no_state,
               no_buffers, 0);
  }

  /// One training step on the columns of X, Y (dropout masks from the network's Rng).
  /// PlainSgd: the fused w <- (1 - eta lambda/n) w - eta lambda1/n sign(w) - eta/m D A^T,
  /// applied by the layer's own product into the parameter, no buffer. Otherwise the
  /// mean gradients go into `buffers` and through `opt.update`.
  template <class Cost, class Opt, class DX, class DY, class States>
  static void step(Net& net, const DX& X, const DY& Y, double eta, const Regularisation& reg,
                   const Opt& opt, States& states, Buffers& buffers, long long t) {
    const double l2 = reg.lambda / reg.n;
    const double l1 = reg.lambda1 / reg.n;
    net.template forward_train<0>(X, &net.m_rng, net.m_work);
    const double inv_m = 1.0 / static_cast<double>(X.cols());
    if constexpr (std::is_same_v<Opt, PlainSgd>) {
      const Scalar rate = static_cast<Scalar>(eta * inv_m);
      const Scalar keep = static_cast<Scalar>(1.0 - eta * reg.lambda / reg.n);
      auto sink = [&](auto, auto slot, auto& p, auto&& add) {
        if constexpr (decltype(slot)::value == 0) {
          // L2 and L1 shrink the weights before the gradient step. (Dense's padded copy's
          // extra rows are zero and stay zero: 0 * keep, sign(0) = 0.)
          if (l1 != 0.0) {
            const Scalar s1 = static_cast<Scalar>(eta * l1);
            p.array() = keep * p.array() - s1 * p.array().sign();
          } else if (keep != Scalar(1)) {
            p *= keep;
          }
        }
        add(p, -rate, true);
      };
      net.template backward_train<Cost>(X, Y, net.m_work, net.m_dout, sink);
    } else {
      const Scalar scale = static_cast<Scalar>(inv_m);
      auto sink = [&](auto i, auto slot, auto& p, auto&& add) {
        constexpr std::size_t I = decltype(i)::value;
        constexpr int S = decltype(slot)::value;
        auto& g = buffer<I, S>(buffers);
        g.resize(p.rows(), p.cols());
        g.setZero();
        add(g, scale, true);
        if constexpr (S == 0) {
          if (l2 != 0.0) g += static_cast<Scalar>(l2) * p;
          if (l1 != 0.0) g += static_cast<Scalar>(l1) * p.cwiseSign();
        }
        opt.update(p, std::as_const(g), states[2 * I + S], eta, t);
      };
      net.template backward_train<Cost>(X, Y, net.m_work, net.m_dout, sink);
    }
  }

  /// Labelled data on a network with more than one output: accuracy; else regression.
  static bool is_classification(const Dataset<Scalar>& d) noexcept {
    return outputs > 1 && d.has_labels();
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

  static void validate_training(const Net& net, const Dataset<Scalar>& train, const SgdOptions& o,
                                const Dataset<Scalar>* eval, bool batch_within_data = true,
                                bool check_inputs_finite = true) {
    check_parameters(net, "sgd");
    check_dataset<Net>("sgd (training data)", train);
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
    if (check_inputs_finite && !all_finite(train.inputs))
      throw ValueError("sgd: the training inputs contain NaN or Inf");
    if (!all_finite(train.targets))
      throw ValueError("sgd: the training targets contain NaN or Inf");
    check_labels("sgd (training data)", train);
    if (eval != nullptr) {
      check_dataset<Net>("sgd (evaluation data)", *eval);
      check_labels("sgd (evaluation data)", *eval);
    }
  }

  // ---- the layers' epoch hooks ----

  /// Start of an epoch's mini-batches (Dense: its padded weights, see begin_epoch).
  static void begin_epoch(Net& net, bool plain_sparse) {
    for_each_index<num_layers>([&](auto i) {
      if constexpr (HasEpochHooks<LayerAt<i>>) {
        net.template layer<i>().begin_epoch(std::get<i>(net.m_work), plain_sparse && i == 0);
      }
    });
  }
  static void end_epoch(Net& net) noexcept {
    for_each_index<num_layers>([&](auto i) {
      if constexpr (HasEpochHooks<LayerAt<i>>) {
        net.template layer<i>().end_epoch(std::get<i>(net.m_work));
      }
    });
  }

  /// Whether every parameter is finite where training keeps it.
  static bool live_parameters_finite(const Net& net) {
    bool ok = true;
    for_each_index<num_layers>([&](auto i) {
      const auto& l = net.template layer<i>();
      if constexpr (ChecksLiveParameters<LayerAt<decltype(i)::value>>) {
        ok = ok && l.parameters_finite(std::get<i>(net.m_work));
      } else {
        ok = ok && all_finite(l.weights()) && all_finite(l.biases());
      }
    });
    return ok;
  }

  /// The divergence check runs after every this many mini-batches and after the
  /// last of each epoch (a check reads every parameter: 14% of a 784-30-10 epoch when
  /// done after every mini-batch of 10).
  static constexpr Eigen::Index guard_interval = 16;

  /// Restores the epoch-start parameters and throws the DivergenceError of `sgd`.
  [[noreturn]] static void diverged(Net& net, int epoch, Eigen::Index first_batch,
                                    Eigen::Index last_batch, Eigen::Index first, Eigen::Index last,
                                    double eta) {
    for_each_index<num_layers>([&](auto i) {
      if constexpr (AbandonsEpoch<LayerAt<decltype(i)::value>>) {
        LayerAt<i>::abandon_epoch(std::get<i>(net.m_work));  // holds the diverged weights
      }
    });
    net.m_layers = net.m_snapshot;
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
    typename Net::Layers_ best;

    /// True when training ends after this epoch.
    bool stop_after(const EpochReport& report, const Net& net, TrainingHistory& h) {
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
    void restore_best(Net& net, const TrainingHistory& h) {
      if (patience > 0 && h.best_epoch > 0) net.m_layers = std::move(best);
    }
  };

  template <class Cost, class Opt>
  static TrainingHistory sgd(Net& net, const Dataset<Scalar>& training_data,
                             const SgdOptions& options, const Dataset<Scalar>* evaluation_data,
                             const Opt& optimizer) {
    validate_training(net, training_data, options, evaluation_data, true, false);
    FlushSubnormals flush;  // restored around the callbacks and on return (subnormals.hpp)
    const FlushSubnormalsOnWorkers flush_workers;
    const Eigen::Index n = training_data.size();
    const Eigen::Index m = static_cast<Eigen::Index>(options.mini_batch_size);
    std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), Eigen::Index{0});
    Matrix xb(inputs, m), yb(outputs, m);
    TrainingHistory history;
    std::vector<typename Opt::template State<Scalar>> states(2 * num_layers);
    Buffers buffers;
    long long updates = 0;
    EpochControl control(options);
    // The finiteness of the inputs is checked while building the first layer's sparse
    // copy (one pass over the data) or, for dense data, here.
    auto& ws0 = std::get<0>(net.m_work);
    bool finite = true;
    bool sparse = false;
    if constexpr (TakesSparseInputs<First>) {
      sparse = net.template layer<0>().prepare_sparse_inputs(ws0, training_data.inputs,
                                                             options.sparse_input_density, finite);
    }
    if (!sparse) finite = all_finite(training_data.inputs);
    if (!finite) throw ValueError("sgd: the training inputs contain NaN or Inf");
    const Regularisation reg{options.lambda, options.lambda1, static_cast<double>(n)};
    using Clock = std::chrono::steady_clock;
    // A layer's faster copy of its parameters (Dense: padded first-layer weights) is
    // used between the callbacks: without on_batch, from the start of each epoch's
    // mini-batches to their end.
    const bool plain_sparse = std::is_same_v<Opt, PlainSgd> && sparse && !options.on_batch;
    struct EndEpoch {
      Net& net;
      ~EndEpoch() { Trainer::end_epoch(net); }
    };
    for (int epoch = 1; epoch <= options.epochs; ++epoch) {
      const auto start = Clock::now();
      const double eta = control.learning_rate.eta();
      const bool guard = options.on_divergence == SgdOptions::OnDivergence::restore_and_throw;
      if (guard) net.m_snapshot = net.m_layers;
      if (options.shuffle) net.m_rng.shuffle(order.begin(), order.end());
      double running = 0.0;
      EndEpoch end{net};  // also on an exception (diverged() has dropped the copies)
      begin_epoch(net, plain_sparse);
      for (Eigen::Index k = 0; k < n; k += m) {
        const Eigen::Index count = std::min(m, n - k);
        yb.resize(outputs, count);
        const Eigen::Index* batch = order.data() + k;
        for (Eigen::Index j = 0; j < count; ++j) yb.col(j) = training_data.targets.col(batch[j]);
        bool stepped = false;
        if constexpr (TakesSparseInputs<First>) {
          if (sparse) {
            // The next mini-batch's nonzeros (into level 2) and targets (shuffled: random
            // places in memory) are fetched while this one trains. 784-30-10: 34.4 -> 30.2
            // ms per epoch (median of 5 interleaved runs; 32.7 ms fetching the nonzeros
            // into level 1, 31.0 ms two mini-batches ahead); the kernels' own prefetch of
            // the next sample's nonzeros into level 1 stays (without it: 38.4 ms).
            for (Eigen::Index j = count; j < std::min(2 * m, n - k); ++j) {
              const auto s = static_cast<std::size_t>(batch[j]);
              First::prefetch_sample(ws0, s);
              prefetch_range(training_data.targets.data(), s * outputs, (s + 1) * outputs);
            }
            step<Cost>(net, First::sparse_batch(ws0, batch, count), yb, eta, reg, optimizer, states,
                       buffers, ++updates);
            stepped = true;
          }
        }
        if (!stepped) {
          xb.resize(inputs, count);
          for (Eigen::Index j = 0; j < count; ++j) xb.col(j) = training_data.inputs.col(batch[j]);
          step<Cost>(net, xb, yb, eta, reg, optimizer, states, buffers, ++updates);
        }
        const Eigen::Index batch_number = k / m + 1;
        if (guard && (batch_number % guard_interval == 0 || k + count == n)) {
          if (!live_parameters_finite(net)) {
            const Eigen::Index from = (batch_number - 1) / guard_interval * guard_interval + 1;
            diverged(net, epoch, from, batch_number, (from - 1) * m, k + count - 1, eta);
          }
        }
        if (options.on_batch) {
          // The cost of the batch under the parameters before this step.
          running += net.template output_cost<Cost>(yb, net.m_work);
          BatchProgress p;
          p.epoch = epoch;
          p.epochs = options.epochs;
          p.samples_done = k + count;
          p.samples_total = n;
          p.running_cost = running / static_cast<double>(k + count);
          p.seconds = std::chrono::duration<double>(Clock::now() - start).count();
          flush.call_user([&] { options.on_batch(p); });
        }
      }
      end_epoch(net);
      EpochReport report;
      report.epoch = epoch;
      report.epochs = options.epochs;
      report.eta = eta;
      report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      if (options.monitor_training_cost) {
        report.training_cost =
            net.template total_cost<Cost>(training_data, options.lambda, options.lambda1);
      }
      if (options.monitor_training_accuracy) {
        if (is_classification(training_data)) {
          report.training_accuracy =
              static_cast<double>(net.evaluate(training_data.inputs, training_data.labels)) /
              static_cast<double>(n);
        } else {
          report.training_regression = regression_metrics(net, training_data);
        }
      }
      if (evaluation_data != nullptr && !evaluation_data->empty()) {
        if (options.monitor_evaluation_cost) {
          report.evaluation_cost =
              net.template total_cost<Cost>(*evaluation_data, options.lambda, options.lambda1);
        }
        if (options.monitor_evaluation_accuracy && is_classification(*evaluation_data)) {
          report.evaluation_correct =
              net.evaluate(evaluation_data->inputs, evaluation_data->labels);
          report.evaluation_total = evaluation_data->size();
          report.evaluation_accuracy = static_cast<double>(report.evaluation_correct) /
                                       static_cast<double>(report.evaluation_total);
        } else if (options.monitor_evaluation_accuracy) {
          report.evaluation_regression = regression_metrics(net, *evaluation_data);
        }
      }
      history.epochs.push_back(report);
      if (options.on_epoch) {
        flush.call_user([&] { options.on_epoch(report); });
      } else if (prints_epoch_by_default(epoch, options.epochs)) {
        print_epoch(report);
      }
      if (control.stop_after(report, net, history)) break;
    }
    control.restore_best(net, history);
    return history;
  }
};

}  // namespace backprop::detail

#include "data_parallel.hpp"

namespace backprop {

template <class Scalar_, class... Layers>
template <class Cost, class DX, class DY>
typename BasicNetwork<Scalar_, Layers...>::Gradients BasicNetwork<Scalar_, Layers...>::gradient(
    const Eigen::MatrixBase<DX>& X, const Eigen::MatrixBase<DY>& Y) {
  detail::check_batch(*this, "gradient", X, Y);
  const detail::FlushSubnormals flush;
  Gradients out;
  const bool sparse =
      detail::Trainer<BasicNetwork>::with_sparse_batch(*this, X, [&](const auto& batch) {
        out = batch_gradients<Cost>(batch, Y.derived(), nullptr, m_work, m_dout);
      });
  if (!sparse) out = batch_gradients<Cost>(X.derived(), Y.derived(), nullptr, m_work, m_dout);
  return out;
}

template <class Scalar_, class... Layers>
template <class Cost, class DX, class DY>
void BasicNetwork<Scalar_, Layers...>::update_mini_batch(const Eigen::MatrixBase<DX>& X,
                                                         const Eigen::MatrixBase<DY>& Y,
                                                         double eta) {
  detail::Trainer<BasicNetwork>::template update_mini_batch<Cost>(*this, X, Y, eta);
}

template <class Scalar_, class... Layers>
template <class Cost>
TrainingHistory BasicNetwork<Scalar_, Layers...>::sgd(const Dataset<Scalar>& training_data,
                                                      const SgdOptions& options,
                                                      const Dataset<Scalar>* evaluation_data) {
  return sgd<Cost>(training_data, options, evaluation_data, PlainSgd{});
}

template <class Scalar_, class... Layers>
template <class Cost, Optimizer Opt>
TrainingHistory BasicNetwork<Scalar_, Layers...>::sgd(const Dataset<Scalar>& training_data,
                                                      const SgdOptions& options,
                                                      const Dataset<Scalar>* evaluation_data,
                                                      const Opt& optimizer) {
  return detail::Trainer<BasicNetwork>::template sgd<
      detail::resolve_cost_t<Cost, OutputActivation>>(*this, training_data, options,
                                                      evaluation_data, optimizer);
}

template <class Scalar_, class... Layers>
template <class Cost, Optimizer Opt, GradientExchange Ex>
TrainingHistory BasicNetwork<Scalar_, Layers...>::sgd(const Dataset<Scalar>& training_data,
                                                      const SgdOptions& options,
                                                      const Dataset<Scalar>* evaluation_data,
                                                      const Opt& optimizer, Ex& exchange,
                                                      DataLayout layout) {
  if (exchange.size() <= 1) return sgd<Cost>(training_data, options, evaluation_data, optimizer);
  return detail::DataParallel<BasicNetwork>::template sgd<
      detail::resolve_cost_t<Cost, OutputActivation>>(*this, training_data, options,
                                                      evaluation_data, optimizer, exchange, layout);
}

}  // namespace backprop
