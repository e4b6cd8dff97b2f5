/// \file
/// \brief The data-parallel loop behind `BasicNetwork::sgd(..., exchange, layout)`: the
/// same training on the `exchange.size()` processes of a `GradientExchange` (e.g.
/// `backprop::mpi::Communicator` from backprop/distributed/mpi.hpp); with one process
/// it is exactly the one-process `sgd`. Collective: every process calls it with the
/// same network type, options, optimizer and cost.
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
/// - Each step computes the local gradient sums of every layer (through the layers'
///   backward sinks) into one buffer, with the sample count and a failure flag per
///   process, and makes one `exchange.sum` call; every process then applies the same
///   update (optimizer, L2/L1 with n_total).
/// - Dropout masks come from a generator of each process's own.
/// - Batch-statistics layers (BatchNorm, BatchNorm2D) normalize with the statistics of
///   the whole global mini-batch: with more than one process, each sums its statistics
///   over them in its training pass (StepStatistics; batchnorm.hpp), and the start also
///   copies process 0's layer state (the running statistics).
/// - The epoch's evaluation (accuracy, costs) is summed over the processes:
///   `evaluation_data` is split like the training data (replicated) or is each
///   process's own part (sharded); the reports hold the global totals, on every
///   process. `on_batch` sees the process's own running cost.
/// - DistributedError on every process when they disagree or when one of them failed
///   (naming it; that process's message includes its own error); a process whose
///   arguments are invalid throws its own ValueError/ShapeError, the others
///   DistributedError.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "exchange.hpp"
#include "trainer.hpp"

namespace backprop::detail {

/// A layer whose training pass exchanges its batch statistics (BatchNorm): it names the
/// lengths of its sums and takes a BatchStatisticsSync in its workspace.
template <class L>
concept SynchronizedStatistics = requires(typename L::Workspace& ws,
                                          const BatchStatisticsSync* sync) {
  L::forward_sync_sizes.size();
  L::backward_sync_sizes.size();
  ws.sync = sync;
};

/// The exchanges of the batch-statistics layers in one data-parallel step, which every
/// process makes in the same order: the layers' forward sums (first layer first), then
/// their backward sums (last layer first). Each carries a flag that says a process has
/// failed; a process that has no samples in the step, or has failed, makes the step's
/// remaining exchanges with zeros (`finish`), so that none waits for it.
template <class Ex>
class StepStatistics {
 public:
  /// Thrown inside a training pass when another process has failed in this step.
  struct RemoteFailure {};

  StepStatistics(Ex& ex, std::vector<int> sizes) : m_ex(&ex), m_sizes(std::move(sizes)) {}
  StepStatistics(const StepStatistics&) = delete;
  StepStatistics& operator=(const StepStatistics&) = delete;

  /// The BatchStatisticsSync that the layers call.
  [[nodiscard]] const BatchStatisticsSync* sync() const noexcept { return &m_sync; }
  /// Starts a step.
  void begin() noexcept { m_next = 0; }
  /// Makes the step's remaining exchanges with zeros (`failed`: this process failed).
  void finish(bool failed) {
    while (m_next < m_sizes.size()) {
      m_buffer.assign(static_cast<std::size_t>(m_sizes[m_next]) + 1, 0.0);
      m_buffer.back() = failed ? 1.0 : 0.0;
      exchange();
    }
  }

 private:
  static void call(void* self, std::span<double> values) {
    static_cast<StepStatistics*>(self)->sum(values);
  }
  void sum(std::span<double> values) {
    if (m_next >= m_sizes.size() || values.size() != static_cast<std::size_t>(m_sizes[m_next])) {
      throw std::logic_error("backprop: a batch-statistics layer's exchange is out of order");
    }
    m_buffer.assign(values.begin(), values.end());
    m_buffer.push_back(0.0);
    exchange();
    if (m_buffer.back() != 0.0) throw RemoteFailure{};
    std::copy(m_buffer.begin(), m_buffer.end() - 1, values.begin());
  }
  void exchange() {
    m_ex->sum(std::span<double>(m_buffer));
    ++m_next;
  }

  Ex* m_ex;
  std::vector<int> m_sizes;
  std::size_t m_next = 0;
  std::vector<double> m_buffer;
  BatchStatisticsSync m_sync{this, &StepStatistics::call};
};

template <class Net>
struct DataParallel : Trainer<Net> {
  using Base = Trainer<Net>;
  using Base::diverged;
  using Base::guard_interval;
  using Base::inputs;
  using Base::num_layers;
  using Base::outputs;
  using Base::validate_training;
  using typename Base::Buffers;
  using typename Base::Matrix;
  using typename Base::Regularisation;
  using typename Base::Scalar;
  template <std::size_t I>
  using LayerAt = typename Base::template LayerAt<I>;
  using EpochControl = typename Base::EpochControl;

  /// True if layer I normalizes with batch statistics (BatchNorm).
  template <std::size_t I>
  static constexpr bool batch_statistics = requires {
    LayerAt<I>::batch_statistics;
  };

  /// True if layer I has a state (`state_rows`, `state()`: BatchNorm's running statistics).
  /// (A variable template: clang 14 misjudges the requires-expression inside the generic
  /// lambdas that use it.)
  template <std::size_t I>
  static constexpr bool has_state = requires {
    LayerAt<I>::state_rows;
  };

  /// The lengths of the batch-statistics exchanges of one step, in their order.
  static std::vector<int> statistics_sizes() {
    std::vector<int> sizes;
    for_each_index<num_layers>([&](auto i) {
      if constexpr (batch_statistics<i>) {
        static_assert(SynchronizedStatistics<LayerAt<i>>,
                      "backprop: data-parallel training needs a batch-statistics layer to "
                      "exchange its sums (forward_sync_sizes, backward_sync_sizes and "
                      "Workspace::sync, as BatchNorm's); this layer has none");
        for (int k : LayerAt<i>::forward_sync_sizes) sizes.push_back(k);
      }
    });
    for_each_index<num_layers>([&](auto j) {
      constexpr std::size_t i = num_layers - 1 - decltype(j)::value;
      if constexpr (batch_statistics<i>) {
        for (int k : LayerAt<i>::backward_sync_sizes) sizes.push_back(k);
      }
    });
    return sizes;
  }

  /// Points the batch-statistics layers' workspaces at `sync` (null: detaches them) .
  static void attach_statistics(Net& net, const BatchStatisticsSync* sync) noexcept {
    for_each_index<num_layers>([&](auto i) {
      if constexpr (batch_statistics<i>) std::get<i>(net.m_work).sync = sync;
    });
  }

  /// A step in which this process has no samples: its batch-statistics layers still
  /// make their exchanges (adding nothing) and move their running statistics as the
  /// other processes' do.
  static void statistics_without_samples(Net& net) {
    for_each_index<num_layers>([&](auto i) {
      if constexpr (batch_statistics<i>) {
        net.template layer<i>().forward(Matrix(LayerAt<i>::inputs, 0), std::get<i>(net.m_work),
                                        nullptr);
      }
    });
    for_each_index<num_layers>([&](auto j) {
      constexpr std::size_t i = num_layers - 1 - decltype(j)::value;
      if constexpr (batch_statistics<i>) {
        auto ignore = [](auto, auto&, auto&&) {};
        Matrix none(LayerAt<i>::outputs, 0);
        net.template layer<i>().backward(Matrix(LayerAt<i>::inputs, 0), std::get<i>(net.m_work),
                                         none, nullptr, ignore);
      }
    });
  }

  /// Offset of layer I's parameters (weights column-major, then biases) in a flat
  /// buffer of all parameters.
  template <std::size_t I>
  static constexpr Eigen::Index parameter_offset() {
    Eigen::Index off = 0;
    for_each_index<I>([&](auto j) { off += Net::template parameters_of<LayerAt<j>>(); });
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

  /// Every rank ends with rank 0's values: `copy(buffer, true)` packs a rank's values into
  /// the zeroed buffer (rank 0 only), the exchange sums it, and `copy(buffer, false)`
  /// unpacks rank 0's values on every rank.
  template <class T, class Ex, class Copy>
  static void take_from_rank0(Ex& ex, std::size_t size, Copy copy) {
    std::vector<T> values(size, T(0));
    if (ex.rank() == 0) copy(values.data(), true);
    ex.sum(std::span<T>(values));
    copy(values.data(), false);
  }

  /// The start of a data-parallel `sgd`: validates locally, checks that all processes
  /// agree, then copies process 0's parameters to all. Returns the global training
  /// set size.
  template <class Ex>
  static Eigen::Index agree_on_training(Net& net, const Dataset<Scalar>& train, const SgdOptions& o,
                                        const Dataset<Scalar>* eval, Ex& ex, DataLayout layout) {
    const int P = ex.size();
    const int r = ex.rank();
    const bool sharded = layout == DataLayout::sharded;
    std::exception_ptr invalid;
    try {
      validate_training(net, train, o, eval, !sharded);
    } catch (...) {
      invalid = std::current_exception();
    }
    Rng probe = net.m_rng;
    const std::uint64_t rng_id = probe();
    constexpr int K = 16;
    std::vector<double> all(static_cast<std::size_t>(K * P), 0.0);
    double* mine = all.data() + static_cast<std::ptrdiff_t>(K) * r;
    mine[0] = invalid ? 1.0 : 0.0;
    mine[1] = static_cast<double>(sizeof(Scalar));
    mine[2] = static_cast<double>(num_layers);
    mine[3] = static_cast<double>(Net::parameter_count());
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
    for_each_index<num_layers>([&](auto i) { my_sizes[i + 1] = LayerAt<i>::outputs; });
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
    // Every process starts from process 0's parameters and layer state (BatchNorm's
    // running statistics, if any).
    take_from_rank0<Scalar>(
        ex, static_cast<std::size_t>(Net::parameter_count()), [&](Scalar* v, bool pack) {
          for_each_index<num_layers>([&](auto i) {
            auto& p = net.template layer<i>();
            Scalar* at = v + parameter_offset<i>();
            Eigen::Map<Matrix> w(at, p.weights().rows(), p.weights().cols());
            Eigen::Map<Matrix> b(at + p.weights().size(), p.biases().rows(), p.biases().cols());
            if (pack) {
              w = p.weights();
              b = p.biases();
            } else {
              p.weights() = w;
              p.biases() = b;
            }
          });
        });
    std::size_t state_size = 0;
    for_each_index<num_layers>([&](auto i) {
      if constexpr (has_state<i>) state_size += LayerAt<i>::state_rows;
    });
    if (state_size > 0) {
      take_from_rank0<Scalar>(ex, state_size, [&](Scalar* v, bool pack) {
        for_each_index<num_layers>([&](auto i) {
          if constexpr (has_state<i>) {
            Eigen::Map<Matrix> s(v, LayerAt<i>::state_rows, 1);
            auto& state = net.template layer<i>().state();
            if (pack) {
              s = state;
            } else {
              state = s;
            }
            v += LayerAt<i>::state_rows;
          }
        });
      });
    }
    return n_total;
  }

  /// Sums over the columns of X, Y of the gradients (dropout masks from `masks`),
  /// written into the flat buffer `out` (layout of `parameter_offset`).
  template <class Cost, class DX, class DY>
  static void gradient_sums_into(Net& net, const DX& X, const DY& Y, Rng* masks, Scalar* out) {
    net.template forward_train<0>(X, masks, net.m_work);
    auto sink = [&](auto i, auto slot, auto& p, auto&& add) {
      constexpr std::size_t I = decltype(i)::value;
      Scalar* at = out + parameter_offset<I>();
      if constexpr (decltype(slot)::value == 1) {
        at += static_cast<Eigen::Index>(LayerAt<I>::weight_rows) * LayerAt<I>::weight_cols;
      }
      Eigen::Map<Matrix> target(at, p.rows(), p.cols());
      add(target, Scalar(1), false);
    };
    net.template backward_train<Cost>(X, Y, net.m_work, net.m_dout, sink);
  }

  /// The update of one step from the gradient sums over `count` samples in `sums`,
  /// the same on every process: PlainSgd's w <- (1 - eta lambda/n) w - eta lambda1/n
  /// sign(w) - eta/count sum, or the optimizer's update with the mean gradient.
  template <class Opt, class States>
  static void apply_gradient_sums(Net& net, const Scalar* sums, double count, double eta,
                                  const Regularisation& reg, const Opt& opt, States& states,
                                  Buffers& buffers, long long t) {
    const double l2 = reg.lambda / reg.n;
    const double l1 = reg.lambda1 / reg.n;
    for_each_index<num_layers>([&](auto i) {
      constexpr std::size_t I = decltype(i)::value;
      auto& p = net.template layer<I>();
      using W = std::remove_cvref_t<decltype(p.weights())>;
      using B = std::remove_cvref_t<decltype(p.biases())>;
      const Scalar* at = sums + parameter_offset<I>();
      const Eigen::Map<const W> sw(at, p.weights().rows(), p.weights().cols());
      const Eigen::Map<const B> sb(at + sw.size(), p.biases().rows(), p.biases().cols());
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
        auto& gw = Base::template buffer<I, 0>(buffers);
        gw.noalias() = scale * sw;
        if (l2 != 0.0) gw += static_cast<Scalar>(l2) * p.weights();
        if (l1 != 0.0) gw += static_cast<Scalar>(l1) * p.weights().cwiseSign();
        auto& gb = Base::template buffer<I, 1>(buffers);
        gb.noalias() = scale * sb;
        opt.update(p.weights(), std::as_const(gw), states[2 * I], eta, t);
        opt.update(p.biases(), std::as_const(gb), states[2 * I + 1], eta, t);
      }
    });
  }

  template <class Cost, class Opt, class Ex>
  static TrainingHistory sgd(Net& net, const Dataset<Scalar>& train, const SgdOptions& options,
                             const Dataset<Scalar>* eval, const Opt& optimizer, Ex& ex,
                             DataLayout layout) {
    const int P = ex.size();
    const int r = ex.rank();
    const bool sharded = layout == DataLayout::sharded;
    const Eigen::Index n_total = agree_on_training(net, train, options, eval, ex, layout);
    FlushSubnormals flush;  // restored around the callbacks and on return (subnormals.hpp)
    const FlushSubnormalsOnWorkers flush_workers;
    const Eigen::Index n = train.size();
    const Eigen::Index m = static_cast<Eigen::Index>(options.mini_batch_size);
    const Eigen::Index steps = (n_total + m - 1) / m;
    // Rank-own generators for dropout masks and (sharded) the local order. The
    // replicated order comes from m_rng, as in one process; sharded training advances
    // m_rng once so that the next call draws new streams.
    Rng probe = net.m_rng;
    if (sharded) net.m_rng();
    const std::uint64_t stream =
        probe() ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(r + 1));
    Rng masks(stream);
    Rng local_order(stream + 0xD1B54A32D192ED03ull);
    Rng& shuffler = sharded ? local_order : net.m_rng;

    std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), Eigen::Index{0});
    Matrix xb, yb;
    const Eigen::Index np = static_cast<Eigen::Index>(Net::parameter_count());
    std::vector<Scalar> buffer(static_cast<std::size_t>(np + 1 + P));
    Buffers buffers;
    TrainingHistory history;
    std::vector<typename Opt::template State<Scalar>> states(2 * num_layers);
    long long updates = 0;
    EpochControl control(options);
    const Regularisation reg{options.lambda, options.lambda1, static_cast<double>(n_total)};
    std::exception_ptr pending;  // a local failure, reported at the next exchange
    std::string pending_where;   // where it happened
    // BatchNorm layers sum their statistics over the processes (with more than one).
    const std::vector<int> statistics = P > 1 ? statistics_sizes() : std::vector<int>{};
    StepStatistics<Ex> step_statistics(ex, statistics);
    struct Detach {
      Net& net;
      ~Detach() { attach_statistics(net, nullptr); }
    } detach{net};
    if (!statistics.empty()) attach_statistics(net, step_statistics.sync());
    const bool guard = options.on_divergence == SgdOptions::OnDivergence::restore_and_throw;
    using Clock = std::chrono::steady_clock;
    for (int epoch = 1; epoch <= options.epochs; ++epoch) {
      const auto start = Clock::now();
      const double eta = control.learning_rate.eta();
      if (guard) net.m_snapshot = net.m_layers;
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
        step_statistics.begin();
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
              gradient_sums_into<Cost>(net, xb, yb, &masks, buffer.data());
              if (options.on_batch) running += net.template output_cost<Cost>(yb, net.m_work);
            } else if (!statistics.empty()) {
              statistics_without_samples(net);
            }
            buffer[static_cast<std::size_t>(np)] = static_cast<Scalar>(count);
          } catch (const typename StepStatistics<Ex>::RemoteFailure&) {
            // Another process failed: its flag in the step's sum below says which.
            std::fill(buffer.begin(), buffer.end(), Scalar(0));
          } catch (...) {
            pending = std::current_exception();
            pending_where =
                "in epoch " + std::to_string(epoch) + ", mini-batch " + std::to_string(s + 1);
            std::fill(buffer.begin(), buffer.end(), Scalar(0));
          }
        }
        step_statistics.finish(pending != nullptr);
        if (pending) buffer[static_cast<std::size_t>(np + 1 + r)] = Scalar(1);
        ex.sum(std::span<Scalar>(buffer));
        raise_if_failed(buffer.data() + np + 1, P, pending, pending_where,
                        "epoch " + std::to_string(epoch) + ", mini-batch " + std::to_string(s + 1));
        const double total = static_cast<double>(buffer[static_cast<std::size_t>(np)]);
        if (total > 0) {
          apply_gradient_sums(net, buffer.data(), total, eta, reg, optimizer, states, buffers,
                              ++updates);
        }
        if (guard && ((s + 1) % guard_interval == 0 || s + 1 == steps) &&
            !net.parameters_finite()) {
          const Eigen::Index from = s / guard_interval * guard_interval + 1;
          diverged(net, epoch, from, s + 1, (from - 1) * m, std::min(n_total, (s + 1) * m) - 1,
                   eta);
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
            flush.call_user([&] { options.on_batch(p); });
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
        if (cost)
          *cost =
              net.template cost_sum<Cost>(d.inputs.middleCols(a, c), d.targets.middleCols(a, c));
        if (correct && d.labels.size() == size) {
          const Eigen::VectorXi labels = d.labels.segment(a, c);
          *correct = static_cast<double>(net.evaluate(d.inputs.middleCols(a, c), labels));
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
        report.training_cost = stats[0] / nt + net.penalty(options.lambda, options.lambda1, nt);
      }
      if (options.monitor_training_accuracy && train.labels.size() == n) {
        report.training_accuracy = stats[1] / nt;
      }
      if (stats[4] > 0) {
        const double ne = stats[4];
        if (options.monitor_evaluation_cost) {
          report.evaluation_cost = stats[2] / ne + net.penalty(options.lambda, options.lambda1, ne);
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
          flush.call_user([&] { options.on_epoch(report); });
        } else if (r == 0 && prints_epoch_by_default(epoch, options.epochs)) {
          print_epoch(report);
        }
      } catch (...) {
        pending = std::current_exception();
        pending_where = "in on_epoch after epoch " + std::to_string(epoch);
      }
      if (control.stop_after(report, net, history)) break;
    }
    control.restore_best(net, history);
    if (pending) std::rethrow_exception(pending);
    return history;
  }
};

}  // namespace backprop::detail
