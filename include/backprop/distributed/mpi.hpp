/// \file
/// \brief Data-parallel training over MPI: `mpi::Communicator` (a `GradientExchange`),
/// `mpi::Environment`, `mpi::run`, and per-rank sharding of data sets and MNIST files.
///
/// Opt-in: this header needs `<mpi.h>` and is not part of `backprop/backprop.hpp`. Link
/// the CMake target `backprop::mpi` (it brings `MPI::MPI_CXX`), or build with `mpicxx`.
///
/// \code
/// int main(int argc, char** argv) {
///   return backprop::mpi::run(argc, argv, [](backprop::mpi::Communicator& comm) {
///     Net net{9};  // the same seed on every rank
///     // Every rank reads only its slice of the first 50,000 images (and of the test set).
///     const auto data = backprop::mpi::load_mnist_shard("mnist", comm, 50000);
///     net.sgd(data.train, {.epochs = 3, .mini_batch_size = 128, .eta = 3.0}, &data.test,
///             backprop::PlainSgd{}, comm, backprop::DataLayout::sharded);  // global batch
///   });
/// }
/// \endcode
/// Run with `mpirun -np 2 ./app`. See `BasicNetwork::sgd` (the overload taking a
/// `GradientExchange`) for the semantics of data-parallel training.
#pragma once

// The MPI-2 C++ bindings (removed in MPI-3) are not used; skipping them also avoids their
// warnings (-Wcast-function-type in Open MPI's) when mpi.h is not a system header.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <climits>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "../data/dataset.hpp"
#include "../errors.hpp"
#include "../io/idx.hpp"
#include "../io/mnist.hpp"
#include "../training/exchange.hpp"

namespace backprop::mpi {

namespace detail {

/// \brief Throws the DistributedError of a failed MPI call, with MPI's error string.
[[noreturn]] inline void throw_mpi_error(const char* call, int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  throw DistributedError(std::string("mpi: ") + call + " failed: " +
                         (length > 0 ? std::string(text, static_cast<std::size_t>(length))
                                     : std::string("unknown error")) +
                         " (error code " + std::to_string(code) + ")");
}

/// \brief Throws if `code` is not MPI_SUCCESS.
inline void check(int code, const char* call) {
  if (code != MPI_SUCCESS) throw_mpi_error(call, code);
}

template <class T>
[[nodiscard]] MPI_Datatype datatype() noexcept {
  if constexpr (std::is_same_v<T, float>) {
    return MPI_FLOAT;
  } else {
    static_assert(std::is_same_v<T, double>, "backprop::mpi: only float and double are summed");
    return MPI_DOUBLE;
  }
}

/// \brief `true` while MPI is initialised and not yet finalised.
[[nodiscard]] inline bool mpi_active() noexcept {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized != 0 && finalized == 0;
}

}  // namespace detail

/// \brief Initialises MPI for the lifetime of the object (RAII `MPI_Init_thread` /
/// `MPI_Finalize`).
///
/// If MPI is already initialised (by the application or another library), the object
/// neither initialises nor finalises it. Create it before any `Communicator` and let it
/// outlive them; `run` does both. Not copyable.
class Environment {
 public:
  /// \brief Initialises MPI unless it already is.
  /// \param argc, argv `main`'s arguments (may be null); MPI may remove its own options.
  /// \param required the thread support to ask for. The default `MPI_THREAD_FUNNELED`
  ///   suffices when only one thread calls MPI (and `sgd`); Eigen's own threads never do.
  /// \throws DistributedError if MPI was already finalised (it cannot be initialised
  ///   twice) or `MPI_Init_thread` fails.
  explicit Environment(int* argc = nullptr, char*** argv = nullptr,
                       int required = MPI_THREAD_FUNNELED) {
    int initialized = 0;
    int finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized != 0) {
      throw DistributedError(
          "mpi::Environment: MPI has already been finalised and cannot be initialised again");
    }
    if (initialized != 0) {
      detail::check(MPI_Query_thread(&m_provided), "MPI_Query_thread");
      return;
    }
    detail::check(MPI_Init_thread(argc, argv, required, &m_provided), "MPI_Init_thread");
    m_owner = true;
  }

  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

  /// \brief Finalises MPI if this object initialised it (and nobody finalised it since).
  ~Environment() {
    if (m_owner && detail::mpi_active()) MPI_Finalize();
  }

  /// \brief Whether this object initialised MPI (and will finalise it).
  [[nodiscard]] bool owns_mpi() const noexcept { return m_owner; }

  /// \brief The thread support MPI provides (`MPI_THREAD_SINGLE` ... `MPI_THREAD_MULTIPLE`).
  [[nodiscard]] int thread_level() const noexcept { return m_provided; }

 private:
  bool m_owner = false;
  int m_provided = MPI_THREAD_SINGLE;
};

/// \brief How `Communicator::sum` combines the processes' numbers.
enum class Reduction {
  /// One `MPI_Allreduce(MPI_IN_PLACE, ..., MPI_SUM)` per chunk. The MPI standard only
  /// recommends that every rank gets the same bits; Open MPI's algorithms do (the tests
  /// check it with 2 ranks), since each element's sum is either computed once and
  /// sent, or computed on every rank in the same commutative pairs.
  allreduce,
  /// `MPI_Reduce` to rank 0, then `MPI_Bcast`: the same bits on every rank by
  /// construction, with any MPI library; about twice the latency of `allreduce`.
  reduce_broadcast,
};

/// \brief The MPI `GradientExchange` of data-parallel `sgd`: sums spans of `float` or
/// `double` over the processes of a communicator, in place.
///
/// The constructor duplicates the communicator (`MPI_Comm_dup`, collective), so the
/// library's messages never mix with the application's, and sets `MPI_ERRORS_RETURN` on
/// the duplicate, so a failed call becomes a `DistributedError` carrying MPI's error
/// string instead of an abort inside MPI. Every call of `sum` and `barrier` is collective:
/// all ranks make the same calls with spans of the same length, in the same order.
///
/// It also measures itself: the wall time spent inside `sum` (including waiting for
/// slower ranks), the bytes summed and the number of calls, for the communication share
/// of a benchmark. Movable, not copyable; not thread-safe.
class Communicator {
 public:
  /// \brief Wraps (a duplicate of) `comm`. Collective over `comm`.
  /// \pre MPI is initialised (an `Environment` exists).
  /// \throws DistributedError if MPI is not initialised or an MPI call fails.
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD, Reduction reduction = Reduction::allreduce)
      : m_parent(comm), m_reduction(reduction) {
    if (!detail::mpi_active()) {
      throw DistributedError(
          "mpi::Communicator: MPI is not initialised (create an mpi::Environment first, or "
          "use mpi::run)");
    }
    detail::check(MPI_Comm_dup(comm, &m_comm), "MPI_Comm_dup");
    try {
      detail::check(MPI_Comm_set_errhandler(m_comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
      detail::check(MPI_Comm_rank(m_comm, &m_rank), "MPI_Comm_rank");
      detail::check(MPI_Comm_size(m_comm, &m_size), "MPI_Comm_size");
    } catch (...) {
      MPI_Comm_free(&m_comm);
      throw;
    }
  }

  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  /// \brief Takes over `other`'s communicator.
  Communicator(Communicator&& other) noexcept { swap(other); }
  /// \brief Frees this communicator's own, then takes over `other`'s.
  Communicator& operator=(Communicator&& other) noexcept {
    if (this != &other) {
      Communicator tmp(std::move(other));
      swap(tmp);
    }
    return *this;
  }

  /// \brief Frees the duplicated communicator (if MPI is still running).
  ~Communicator() {
    if (m_comm != MPI_COMM_NULL && detail::mpi_active()) MPI_Comm_free(&m_comm);
  }

  /// \brief 0-based rank of this process.
  [[nodiscard]] int rank() const noexcept { return m_rank; }
  /// \brief Number of processes.
  [[nodiscard]] int size() const noexcept { return m_size; }
  /// \brief The library's own duplicate of the communicator.
  [[nodiscard]] MPI_Comm native() const noexcept { return m_comm; }
  /// \brief The communicator passed to the constructor.
  [[nodiscard]] MPI_Comm parent() const noexcept { return m_parent; }
  /// \brief How `sum` reduces, as passed to the constructor.
  [[nodiscard]] Reduction reduction() const noexcept { return m_reduction; }

  /// \brief Every element becomes its sum over all ranks, the same bits on every rank.
  /// Collective. Spans longer than `INT_MAX` elements (MPI's count is an `int`) are
  /// summed in several calls.
  /// \throws DistributedError with MPI's error string if an MPI call fails.
  void sum(std::span<float> values) { sum_impl(values); }
  /// \copydoc sum(std::span<float>)
  void sum(std::span<double> values) { sum_impl(values); }

  /// \brief `MPI_Barrier`. Collective.
  /// \throws DistributedError if it fails.
  void barrier() { detail::check(MPI_Barrier(m_comm), "MPI_Barrier"); }

  /// \brief Wall seconds spent inside `sum` since construction or `reset_stats`,
  /// including the time spent waiting for the other ranks to arrive.
  [[nodiscard]] double seconds_in_allreduce() const noexcept { return m_seconds; }
  /// \brief Bytes passed to `sum` (the payload of this rank, not the bytes on the wire).
  [[nodiscard]] std::uint64_t bytes_reduced() const noexcept { return m_bytes; }
  /// \brief Number of `sum` calls.
  [[nodiscard]] std::uint64_t sum_calls() const noexcept { return m_calls; }
  /// \brief Sets the three counters to zero.
  void reset_stats() noexcept {
    m_seconds = 0.0;
    m_bytes = 0;
    m_calls = 0;
  }

  /// \brief The largest element count per MPI call (default and maximum `INT_MAX`).
  /// Smaller values only serve to test the chunking of long spans.
  /// \throws ValueError unless 1 <= `n` <= INT_MAX.
  void set_max_count(std::size_t n) {
    if (n < 1 || n > static_cast<std::size_t>(INT_MAX)) {
      throw ValueError("mpi::Communicator::set_max_count: " + std::to_string(n) +
                       " is outside [1, INT_MAX]");
    }
    m_max_count = n;
  }

 private:
  void swap(Communicator& o) noexcept {
    std::swap(m_comm, o.m_comm);
    std::swap(m_parent, o.m_parent);
    std::swap(m_reduction, o.m_reduction);
    std::swap(m_rank, o.m_rank);
    std::swap(m_size, o.m_size);
    std::swap(m_seconds, o.m_seconds);
    std::swap(m_bytes, o.m_bytes);
    std::swap(m_calls, o.m_calls);
    std::swap(m_max_count, o.m_max_count);
  }

  template <class T>
  void sum_impl(std::span<T> values) {
    if (m_comm == MPI_COMM_NULL) {
      throw DistributedError("mpi::Communicator::sum: the communicator was moved from");
    }
    const MPI_Datatype type = detail::datatype<T>();
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t done = 0; done < values.size();) {
      const std::size_t chunk = std::min(values.size() - done, m_max_count);
      T* p = values.data() + done;
      const int n = static_cast<int>(chunk);
      if (m_reduction == Reduction::allreduce) {
        detail::check(MPI_Allreduce(MPI_IN_PLACE, p, n, type, MPI_SUM, m_comm), "MPI_Allreduce");
      } else {
        if (m_rank == 0) {
          detail::check(MPI_Reduce(MPI_IN_PLACE, p, n, type, MPI_SUM, 0, m_comm), "MPI_Reduce");
        } else {
          detail::check(MPI_Reduce(p, nullptr, n, type, MPI_SUM, 0, m_comm), "MPI_Reduce");
        }
        detail::check(MPI_Bcast(p, n, type, 0, m_comm), "MPI_Bcast");
      }
      done += chunk;
    }
    m_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    m_bytes += values.size() * sizeof(T);
    ++m_calls;
  }

  MPI_Comm m_comm = MPI_COMM_NULL;
  MPI_Comm m_parent = MPI_COMM_NULL;
  Reduction m_reduction = Reduction::allreduce;
  int m_rank = 0;
  int m_size = 1;
  double m_seconds = 0.0;
  std::uint64_t m_bytes = 0;
  std::uint64_t m_calls = 0;
  std::size_t m_max_count = static_cast<std::size_t>(INT_MAX);
};

static_assert(GradientExchange<Communicator>);

namespace detail {

/// \brief Prints "backprop (rank R): <what>" to stderr and aborts the whole job.
[[noreturn]] inline void abort_job(int rank, const char* what) noexcept {
  std::cout.flush();
  std::cerr.flush();
  std::fprintf(stderr, "backprop (rank %d): %s\n", rank, what);
  std::fflush(stderr);
  if (!mpi_active()) std::_Exit(1);  // MPI never came up: nothing to abort
  // When every rank fails at once (a DistributedError is thrown on all of them), let
  // rank 0 print before another rank's abort takes the job down.
  if (rank != 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);  // MPI_Abort does not return; this is for the compiler
}

}  // namespace detail

/// \brief Runs `body` on every rank of an MPI job: initialises MPI, calls
/// `body(Communicator&)` with a communicator over `MPI_COMM_WORLD`, finalises MPI.
///
/// If `body` (or the set-up) throws on any rank, that rank prints
/// "backprop (rank R): <what>" to stderr and calls `MPI_Abort(MPI_COMM_WORLD, 1)`, so every
/// rank ends with a non-zero exit code and the job never hangs waiting for the failed
/// rank (ranks other than 0 wait 0.2 s first, so that rank 0's message comes out when all
/// ranks fail together).
/// \param argc, argv `main`'s arguments (MPI may use them).
/// \param body a callable taking `Communicator&` and returning `void` (exit code 0) or
///   something convertible to `int` (the exit code).
/// \returns `body`'s exit code, after `MPI_Finalize`.
template <class F>
requires std::invocable<F&, Communicator&>
int run(int argc, char** argv, F&& body) {
  // The environment and the communicator live outside the try blocks: the handlers run
  // before they are destroyed, so a failing rank aborts the job instead of waiting in
  // MPI_Finalize for ranks that are still working.
  std::optional<Environment> environment;
  try {
    environment.emplace(&argc, &argv);
  } catch (const std::exception& e) {
    detail::abort_job(-1, e.what());
  }
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::optional<Communicator> comm;
  int code = 0;
  try {
    comm.emplace();
    using R = std::invoke_result_t<F&, Communicator&>;
    if constexpr (std::is_void_v<R>) {
      std::invoke(body, *comm);
    } else {
      static_assert(std::is_convertible_v<R, int>, "mpi::run: body must return void or int");
      code = static_cast<int>(std::invoke(body, *comm));
    }
  } catch (const std::exception& e) {
    detail::abort_job(rank, e.what());
  } catch (...) {
    detail::abort_job(rank, "an exception not derived from std::exception");
  }
  comm.reset();
  environment.reset();
  return code;
}

/// \brief Where rank `rank`'s contiguous part of `n` samples starts and how long it is:
/// near-equal parts (sizes differ by at most one, the first `n % size` ranks get one
/// more), in rank order.
struct ShardRange {
  Eigen::Index first = 0;  ///< the index of the part's first sample
  Eigen::Index count = 0;  ///< the number of samples in the part
};

/// \brief Rank `rank`'s part of `n` samples split over `size` ranks.
/// \throws ValueError unless `size` >= 1, 0 <= `rank` < `size` and `n` >= 0.
[[nodiscard]] inline ShardRange shard_range(Eigen::Index n, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size || n < 0) {
    throw ValueError("mpi::shard: rank " + std::to_string(rank) + " of " + std::to_string(size) +
                     " ranks (" + std::to_string(n) +
                     " samples) is not valid: need 0 <= rank < size");
  }
  const Eigen::Index base = n / size;
  const Eigen::Index extra = n % size;
  return {rank * base + std::min<Eigen::Index>(rank, extra), base + (rank < extra ? 1 : 0)};
}

/// \brief Rank `rank`'s contiguous, near-equal slice of `data` (see `shard_range`), for
/// `DataLayout::sharded` training or evaluation.
/// \throws ValueError for a rank outside [0, size).
template <class Scalar>
[[nodiscard]] Dataset<Scalar> shard(const Dataset<Scalar>& data, int rank, int size) {
  const ShardRange r = shard_range(data.size(), rank, size);
  return data.slice(r.first, r.count);
}

/// \brief `shard(data, exchange.rank(), exchange.size())`.
template <class Scalar, GradientExchange Ex>
[[nodiscard]] Dataset<Scalar> shard(const Dataset<Scalar>& data, const Ex& exchange) {
  return shard(data, static_cast<int>(exchange.rank()), static_cast<int>(exchange.size()));
}

namespace detail {

/// \brief The first-dimension slice [first, first + count) of an IDX file, and the
/// file's full first dimension.
struct IdxRows {
  IdxTensor tensor;  ///< dims[0] == count
  std::size_t total_rows = 0;
};

[[noreturn]] inline void throw_shard(const std::string& name, const std::string& problem) {
  throw DataError("load_mnist_shard: " + name + ": " + problem);
}

/// \brief Reads the rows (first-dimension entries) `pick(total rows)` of an IDX file.
///
/// A plain file is checked like `load_idx` checks it (magic, type, rank, dimensions
/// against the file length and the 2 GiB limit), but only its header and the selected
/// rows are read. A gzip file has no random access: `load_idx` decompresses (and checks)
/// all of it, and the selected rows are copied out.
template <class Pick>
[[nodiscard]] IdxRows load_idx_rows(const std::filesystem::path& path, Pick pick) {
  const std::string name = path.string();
  std::error_code ec;
  const std::uintmax_t file_size = std::filesystem::file_size(path, ec);
  if (ec) {
    static_cast<void>(load_idx(path));  // its message is the precise one (missing, ...)
    throw_shard(name, "cannot get the file size: " + ec.message());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_shard(name, "cannot open the file for reading");
  unsigned char head[4 + 4 * idx_max_rank] = {};
  const auto head_n = static_cast<std::size_t>(std::min<std::uintmax_t>(file_size, sizeof(head)));
  in.read(reinterpret_cast<char*>(head), static_cast<std::streamsize>(head_n));
  if (static_cast<std::size_t>(in.gcount()) != head_n) throw_shard(name, "read error");

  IdxRows out;
  const std::size_t rank = head_n >= 4 ? head[3] : 0;
  if (backprop::detail::is_gzip(head, head_n) || rank == 0 || rank > idx_max_rank ||
      head_n < 4 + 4 * rank) {
    // Compressed, or a header too broken to take apart here: load_idx reads and checks
    // the whole file (and throws its precise message for a broken one).
    IdxTensor t = load_idx(path);
    out.total_rows = t.dims[0];
    const ShardRange r = pick(static_cast<Eigen::Index>(out.total_rows));
    const std::size_t row_bytes = t.dims[0] == 0 ? 0 : t.bytes.size() / t.dims[0];
    const auto first = static_cast<std::ptrdiff_t>(static_cast<std::size_t>(r.first) * row_bytes);
    const auto count = static_cast<std::ptrdiff_t>(static_cast<std::size_t>(r.count) * row_bytes);
    out.tensor.type = t.type;
    out.tensor.dims = t.dims;
    out.tensor.dims[0] = static_cast<std::size_t>(r.count);
    out.tensor.bytes.assign(t.bytes.begin() + first, t.bytes.begin() + first + count);
    return out;
  }
  // A plain file. read_idx checks the magic, type and rank on a copy of the header that
  // announces no rows; the row size and the file length are checked here.
  const std::size_t header_bytes = 4 + 4 * rank;
  std::vector<unsigned char> probe(head, head + header_bytes);
  std::fill(probe.begin() + 4, probe.begin() + 8, static_cast<unsigned char>(0));
  const IdxTensor empty = read_idx(probe, name);
  const std::size_t rows = (std::size_t{head[4]} << 24) | (std::size_t{head[5]} << 16) |
                           (std::size_t{head[6]} << 8) | std::size_t{head[7]};
  std::size_t row_bytes = empty.element_size();
  for (std::size_t k = 1; k < rank; ++k) {
    const std::size_t d = empty.dims[k];
    if (d != 0 && row_bytes > idx_default_max_bytes / d) {
      throw_shard(name, "the header announces rows of more than " +
                            std::to_string(idx_default_max_bytes) + " bytes");
    }
    row_bytes *= d;
  }
  const std::uintmax_t body = file_size - header_bytes;
  const std::uintmax_t expected = std::uintmax_t{rows} * row_bytes;
  if (body != expected) {
    throw_shard(name, std::string(body < expected ? "truncated data" : "trailing garbage") +
                          ": the file has " + std::to_string(file_size) +
                          " bytes but the header announces " + std::to_string(rows) + " rows of " +
                          std::to_string(row_bytes) + " bytes (" + std::to_string(header_bytes) +
                          " + " + std::to_string(expected) + " bytes expected)");
  }
  if (expected > idx_default_max_bytes) {
    throw_shard(name, "the header announces " + std::to_string(expected) +
                          " bytes of data, more than the limit of " +
                          std::to_string(idx_default_max_bytes));
  }
  out.total_rows = rows;
  const ShardRange r = pick(static_cast<Eigen::Index>(rows));
  out.tensor.type = empty.type;
  out.tensor.dims = empty.dims;
  out.tensor.dims[0] = static_cast<std::size_t>(r.count);
  out.tensor.bytes.resize(static_cast<std::size_t>(r.count) * row_bytes);
  in.clear();
  in.seekg(
      static_cast<std::streamoff>(header_bytes + static_cast<std::size_t>(r.first) * row_bytes));
  if (!in) throw_shard(name, "cannot seek in the file");
  in.read(reinterpret_cast<char*>(out.tensor.bytes.data()),
          static_cast<std::streamsize>(out.tensor.bytes.size()));
  if (static_cast<std::size_t>(in.gcount()) != out.tensor.bytes.size()) {
    throw_shard(name, "read error (the file shrank while being read?)");
  }
  return out;
}

/// \brief Rank `rank`'s shard of one half ("train" or "t10k") of an MNIST directory.
template <class Scalar>
[[nodiscard]] backprop::detail::MnistPart<Scalar> load_mnist_part_shard(
    const std::filesystem::path& dir, const std::string& prefix, int rank, int size,
    Eigen::Index limit) {
  backprop::detail::MnistPart<Scalar> part;
  part.images_path = backprop::detail::find_mnist_file(dir, prefix + "-images-idx3-ubyte");
  const std::filesystem::path labels_path =
      backprop::detail::find_mnist_file(dir, prefix + "-labels-idx1-ubyte");
  const std::string images_name = part.images_path.string();
  auto pick = [&](Eigen::Index rows) {
    if (limit > rows) {
      throw DataError("load_mnist_shard: " + images_name + " has " + std::to_string(rows) +
                      " images, fewer than the " + std::to_string(limit) + " asked for");
    }
    return shard_range(limit >= 0 ? limit : rows, rank, size);
  };
  std::size_t image_count = 0;
  {
    IdxRows images = load_idx_rows(part.images_path, pick);
    if (images.tensor.type != IdxType::UByte || images.tensor.rank() != 3) {
      backprop::detail::throw_mnist(
          images_name + ": expected images (a rank-3 ubyte IDX file), found a rank-" +
          std::to_string(images.tensor.rank()) + " " + idx_type_name(images.tensor.type) + " file");
    }
    image_count = images.total_rows;
    if (image_count == 0) backprop::detail::throw_mnist(images_name + ": the file holds no images");
    part.rows = static_cast<Eigen::Index>(images.tensor.dims[1]);
    part.cols = static_cast<Eigen::Index>(images.tensor.dims[2]);
    if (images.tensor.dims[0] == 0) {
      // A rank without samples (more ranks than images): an empty, well-shaped data set.
      if (part.rows == 0 || part.cols == 0) {
        backprop::detail::throw_mnist(images_name + ": images of " + std::to_string(part.rows) +
                                      "x" + std::to_string(part.cols) + " pixels are empty");
      }
      part.data.inputs.resize(part.rows * part.cols, 0);
    } else {
      part.data.inputs = backprop::detail::mnist_images<Scalar>(images.tensor, images_name);
    }
  }
  IdxRows labels = load_idx_rows(labels_path, pick);
  if (labels.total_rows != image_count) {
    backprop::detail::throw_mnist(images_name + " has " + std::to_string(image_count) +
                                  " images but " + labels_path.string() + " has " +
                                  std::to_string(labels.total_rows) + " labels");
  }
  part.data.labels = backprop::detail::mnist_labels(labels.tensor, labels_path.string());
  part.data.targets = one_hot<Scalar>(part.data.labels, mnist_classes);
  return part;
}

}  // namespace detail

/// \brief Loads only rank `rank`'s shard of MNIST or Fashion-MNIST: the same samples as
/// `shard(load_mnist<Scalar>(dir).train, rank, size)` (and likewise for `test`), the same
/// values and the same checks, without holding the other ranks' samples.
///
/// From plain (uncompressed) IDX files only the header and the rank's rows are read
/// (about 1/size of the 47 MB of MNIST's training images). A `.gz` file has no random
/// access: it is decompressed whole into a temporary buffer (47 MB of bytes for the
/// training images) and only the rank's rows are kept, so the peak memory is that of
/// the uint8 file, not of the whole data set as floats. Decompress the files once
/// (`gunzip *.gz`) to read only the shard.
/// \tparam Scalar `float` or `double`.
/// \param dir the directory with the four files (see `load_mnist`).
/// \param rank, size this rank and the number of ranks (`comm.rank()`, `comm.size()`).
/// \param n_train shard only the first `n_train` training samples (e.g. 50000 for the
///   book's training set, the rest being its validation set); -1 for all of them.
/// \returns `.train`: this rank's slice of the (first `n_train`) training samples;
///   `.test`: its slice of the test samples; contiguous near-equal slices (`shard_range`).
/// \throws DataError like `load_mnist` (naming the file and the problem), also if the
///   training file has fewer than `n_train` samples; ValueError for a rank outside
///   [0, size).
template <class Scalar = float>
[[nodiscard]] MnistData<Scalar> load_mnist_shard(const std::filesystem::path& dir, int rank,
                                                 int size, Eigen::Index n_train = -1) {
  static_assert(std::is_floating_point_v<Scalar>,
                "load_mnist_shard<Scalar>: Scalar must be floating");
  static_cast<void>(shard_range(0, rank, size));  // validates rank and size
  return backprop::detail::load_mnist_parts<Scalar>(dir, [&](const char* prefix) {
    const std::string part = prefix;
    return detail::load_mnist_part_shard<Scalar>(dir, part, rank, size,
                                                 part == "train" ? n_train : -1);
  });
}

/// \brief `load_mnist_shard(dir, exchange.rank(), exchange.size(), n_train)`.
template <class Scalar = float, GradientExchange Ex>
[[nodiscard]] MnistData<Scalar> load_mnist_shard(const std::filesystem::path& dir,
                                                 const Ex& exchange, Eigen::Index n_train = -1) {
  return load_mnist_shard<Scalar>(dir, static_cast<int>(exchange.rank()),
                                  static_cast<int>(exchange.size()), n_train);
}

}  // namespace backprop::mpi
