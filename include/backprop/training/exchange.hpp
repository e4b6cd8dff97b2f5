/// \file
/// \brief The allreduce interface of data-parallel training: `GradientExchange`,
/// the one-process `SingleProcess`, and `DataLayout`.
///
/// `BasicNetwork::sgd(train, options, eval, optimizer, exchange, layout)` runs the
/// same training on `exchange.size()` processes. The library itself never talks to a
/// network: an exchange only has to sum spans of numbers across the processes, in
/// place, with the same result (bit for bit) on every process. `backprop::mpi::
/// Communicator` (`backprop/distributed/mpi.hpp`, target `backprop::mpi`) is the MPI
/// implementation.
#pragma once

#include <concepts>
#include <span>

namespace backprop {

/// \brief An allreduce backend for data-parallel `sgd`.
///
/// - `rank()`: 0-based index of this process; `size()`: number of processes.
/// - `sum(span)`: collective; every element becomes its sum over all processes, and
///   every process gets the identical result. Called by every process with spans of
///   the same length, in the same order.
template <class E>
concept GradientExchange = requires(E& e, const E& ce, std::span<float> f, std::span<double> d) {
  { ce.rank() } -> std::convertible_to<int>;
  { ce.size() } -> std::convertible_to<int>;
  e.sum(f);
  e.sum(d);
};

/// \brief The exchange of a single process: rank 0 of 1, sums are the identity.
struct SingleProcess {
  /// \brief 0.
  [[nodiscard]] int rank() const noexcept { return 0; }
  /// \brief 1.
  [[nodiscard]] int size() const noexcept { return 1; }
  /// \brief Nothing to do: the sum over one process.
  ///@{
  void sum(std::span<float>) noexcept {}
  void sum(std::span<double>) noexcept {}
  ///@}
};

/// \brief How the training data is spread over the processes of a data-parallel `sgd`.
enum class DataLayout {
  /// Every process passes the whole (same) training set; each global mini-batch of
  /// the shared shuffled order is split into contiguous parts, one per process.
  /// Training follows one process's `sgd` with the same seed and global batch.
  replicated,
  /// Every process passes only its own part (sizes may differ); each process
  /// shuffles its part and takes about n_r / steps samples per step.
  sharded,
};

namespace detail {

/// The sums a batch-statistics layer (BatchNorm) exchanges in a data-parallel training
/// pass, so that it normalizes with the statistics of the whole global mini-batch, as
/// one process would. Data-parallel `sgd` installs one in the layer's workspace (with
/// more than one process); `sum` adds `values` up over the processes, in place. Every
/// process makes the same calls in the same order (the trainer makes a process without
/// samples in a step, or one that failed, add zeros in its place).
class BatchStatisticsSync {
 public:
  using Function = void (*)(void* context, std::span<double> values);
  BatchStatisticsSync(void* context, Function function) noexcept
      : m_context(context), m_function(function) {}
  /// \brief Sums `values` over the processes; throws if another process has failed.
  void sum(std::span<double> values) const { m_function(m_context, values); }

 private:
  void* m_context;
  Function m_function;
};

}  // namespace detail

}  // namespace backprop
