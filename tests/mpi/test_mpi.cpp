// Data-parallel training over MPI (issue 7). A plain program run by ctest under mpirun,
// with 2 ranks and with 1: every rank runs every check and the exit code is non-zero on
// all ranks if any check failed on any rank.
#include <backprop/backprop.hpp>
#include <backprop/distributed/mpi.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "../../examples/scale_shift.hpp"

namespace bp = backprop;
namespace mpi = backprop::mpi;
namespace fs = std::filesystem;

namespace {

/// Counts failed checks of this rank; `finish` combines all ranks.
class Checks {
 public:
  explicit Checks(mpi::Communicator& comm) : m_comm(comm) {}

  void section(const std::string& name) {
    m_section = name;
    if (m_comm.rank() == 0) std::cout << "-- " << name << std::endl;
  }
  bool operator()(bool ok, const std::string& what) {
    ++m_count;
    if (!ok) {
      ++m_failed;
      std::cerr << "rank " << m_comm.rank() << ": FAILED [" << m_section << "] " << what
                << std::endl;
    }
    return ok;
  }
  /// Runs `body`, expecting an exception of type E whose message contains every string
  /// in `needles`.
  template <class E>
  void throws(const std::string& what, const std::function<void()>& body,
              const std::vector<std::string>& needles) {
    try {
      body();
      (*this)(false, what + ": no exception");
    } catch (const E& e) {
      std::string missing;
      for (const auto& n : needles) {
        if (std::string(e.what()).find(n) == std::string::npos) missing += " '" + n + "'";
      }
      (*this)(missing.empty(), what + ": the message lacks" + missing + ": " + e.what());
      if (m_comm.rank() == 0 || m_verbose) {
        std::cout << "   rank " << m_comm.rank() << " got: " << e.what() << std::endl;
      }
    } catch (const std::exception& e) {
      (*this)(false, what + ": wrong exception type: " + e.what());
    }
  }
  int finish() {
    double totals[2] = {static_cast<double>(m_failed), static_cast<double>(m_count)};
    m_comm.sum(std::span<double>(totals));
    if (m_comm.rank() == 0) {
      std::cout << m_comm.size() << " rank(s): " << totals[1] - totals[0] << " of " << totals[1]
                << " checks passed" << std::endl;
    }
    return totals[0] == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
  }
  void verbose(bool v) { m_verbose = v; }

 private:
  mpi::Communicator& m_comm;
  std::string m_section;
  long m_failed = 0;
  long m_count = 0;
  bool m_verbose = true;
};

// ---- data and networks ----

constexpr int kIn = 6;
constexpr int kClasses = 3;

/// n labelled samples: inputs in [0, 1) (a fraction `zeros` of them 0, like MNIST's
/// background pixels), the label from a fixed linear rule.
template <class Scalar>
bp::Dataset<Scalar> make_data(Eigen::Index n, std::uint64_t seed, double zeros = 0.0) {
  bp::Rng rng(seed);
  bp::Dataset<Scalar> d;
  d.inputs.resize(kIn, n);
  d.labels.resize(n);
  for (Eigen::Index j = 0; j < n; ++j) {
    double score[kClasses] = {0, 0, 0};
    for (int i = 0; i < kIn; ++i) {
      const double u = rng.uniform();
      const double v = rng.uniform() < zeros ? 0.0 : u;
      d.inputs(i, j) = static_cast<Scalar>(v);
      score[i % kClasses] += v * (1 + i);
    }
    int best = 0;
    for (int c = 1; c < kClasses; ++c) {
      if (score[c] > score[best]) best = c;
    }
    d.labels(j) = best;
  }
  d.targets = bp::one_hot<Scalar>(d.labels, kClasses);
  return d;
}

template <class Scalar>
using SigmoidNet =
    bp::BasicNetwork<Scalar, bp::Dense<kIn, 5, bp::Sigmoid>, bp::Dense<5, kClasses, bp::Sigmoid>>;
template <class Scalar>
using SoftmaxNet =
    bp::BasicNetwork<Scalar, bp::Dense<kIn, 7, bp::ReLU>, bp::Dense<7, kClasses, bp::Softmax>>;
/// With a layer written outside the library (examples/scale_shift.hpp), first and hidden.
template <class Scalar>
using UserLayerNet = bp::BasicNetwork<Scalar, user::ScaleShift<kIn>, bp::Dense<kIn, 5, bp::Tanh>,
                                      user::ScaleShift<5>, bp::Dense<5, kClasses, bp::Sigmoid>>;

/// With a convolution (padding 1, after a dense layer, so its dC/dx matters) and a pool.
template <class Scalar>
using ConvNet = bp::BasicNetwork<Scalar, bp::Dense<kIn, 16, bp::Tanh>,
                                 bp::Conv2D<1, 4, 4, 3, 3, bp::Tanh, 1, 1>,
                                 bp::MaxPool2D<3, 4, 4, 2>, bp::Dense<12, kClasses, bp::Sigmoid>>;

/// Batch normalization after a dense layer and after a convolution: the ranks sum the
/// batch statistics.
template <class Scalar>
using BatchNormNet =
    bp::BasicNetwork<Scalar, bp::Dense<kIn, 16, bp::Identity>, bp::BatchNorm<16, bp::Tanh>,
                     bp::Conv2D<1, 4, 4, 2, 3, bp::Identity, 1, 1>,
                     bp::BatchNorm2D<2, 4, 4, bp::ReLU>, bp::MaxPool2D<2, 4, 4, 2>,
                     bp::Dense<8, kClasses, bp::Sigmoid>>;

/// All parameters of a network, layer by layer (weights column-major, then biases, then
/// a layer's state: BatchNorm's running statistics).
template <class Net>
std::vector<double> parameters(Net& net) {
  std::vector<double> out;
  bp::detail::for_each_index<Net::num_layers>([&](auto i) {
    const auto& p = net.template layer<i>();
    for (Eigen::Index k = 0; k < p.weights().size(); ++k) out.push_back(p.weights().data()[k]);
    for (Eigen::Index k = 0; k < p.biases().size(); ++k) out.push_back(p.biases().data()[k]);
    if constexpr (requires { p.state(); }) {
      for (Eigen::Index k = 0; k < p.state().size(); ++k) out.push_back(p.state()(k));
    }
  });
  return out;
}

/// max_k |a_k - b_k| / max(|b_k|, 1): relative for parameters of magnitude >= 1.
double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double m = 0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    const double d = std::abs(a[k] - b[k]) / std::max(std::abs(b[k]), 1.0);
    m = std::max(m, std::isnan(d) ? std::numeric_limits<double>::infinity() : d);
  }
  return m;
}

/// Every rank's `mine` (same length everywhere), via a sum of per-rank slots.
std::vector<std::vector<double>> allgather(mpi::Communicator& comm,
                                           const std::vector<double>& mine) {
  const std::size_t n = mine.size();
  std::vector<double> all(n * static_cast<std::size_t>(comm.size()), 0.0);
  std::copy(mine.begin(), mine.end(), all.begin() + static_cast<std::ptrdiff_t>(n * comm.rank()));
  comm.sum(std::span<double>(all));
  std::vector<std::vector<double>> out;
  for (int q = 0; q < comm.size(); ++q) {
    out.emplace_back(all.begin() + static_cast<std::ptrdiff_t>(n * q),
                     all.begin() + static_cast<std::ptrdiff_t>(n * (q + 1)));
  }
  return out;
}

std::string str(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// ---- the communicator ----

void test_communicator(Checks& check, mpi::Communicator& comm) {
  check.section("Communicator");
  const int P = comm.size();
  const int r = comm.rank();
  check(P >= 1 && r >= 0 && r < P, "rank " + std::to_string(r) + " of " + std::to_string(P));
  static_assert(bp::GradientExchange<mpi::Communicator>);

  comm.reset_stats();
  std::vector<double> d = {1.0 + r, -2.0 * r, 0.5};
  comm.sum(std::span<double>(d));
  const double pp = P;
  check(d[0] == pp + pp * (pp - 1) / 2 && d[1] == -pp * (pp - 1) && d[2] == 0.5 * pp,
        "double sum: " + str(d[0]) + " " + str(d[1]) + " " + str(d[2]));
  std::vector<float> f(10);
  for (int k = 0; k < 10; ++k) f[static_cast<std::size_t>(k)] = static_cast<float>(k * (r + 1));
  comm.set_max_count(3);  // 10 elements in chunks of 3, 3, 3, 1
  comm.sum(std::span<float>(f));
  comm.set_max_count(static_cast<std::size_t>(INT_MAX));
  bool ok = true;
  for (int k = 0; k < 10; ++k) {
    ok = ok && f[static_cast<std::size_t>(k)] == static_cast<float>(k * P * (P + 1) / 2);
  }
  check(ok, "float sum in chunks of 3");
  comm.sum(std::span<float>());  // empty: a no-op on every rank
  check(comm.sum_calls() == 3, "sum_calls " + std::to_string(comm.sum_calls()) + ", expected 3");
  check(comm.bytes_reduced() == 3 * sizeof(double) + 10 * sizeof(float),
        "bytes_reduced " + std::to_string(comm.bytes_reduced()));
  check(comm.seconds_in_allreduce() >= 0.0, "seconds_in_allreduce");
  comm.reset_stats();
  check(comm.sum_calls() == 0 && comm.bytes_reduced() == 0, "reset_stats");
  check.throws<bp::ValueError>("set_max_count(0)", [&] { comm.set_max_count(0); },
                               {"set_max_count"});
  comm.barrier();

  // Sums of values whose rounding depends on the order must be bit-identical on all
  // ranks, with both reductions.
  for (auto reduction : {mpi::Reduction::allreduce, mpi::Reduction::reduce_broadcast}) {
    mpi::Communicator c(MPI_COMM_WORLD, reduction);
    bp::Rng rng(1000 + static_cast<std::uint64_t>(r));
    std::vector<double> v(1000);
    for (auto& x : v) x = rng.uniform(-1e3, 1e3) * std::pow(10.0, rng.uniform(-8, 8));
    c.sum(std::span<double>(v));
    const auto all = allgather(c, v);
    bool same = true;
    for (int q = 1; q < P; ++q) same = same && std::memcmp(all[0].data(), all[q].data(), 8000) == 0;
    check(same,
          std::string(reduction == mpi::Reduction::allreduce ? "allreduce" : "reduce_broadcast") +
              ": the same bits on every rank");
  }

  // A moved-from communicator refuses to sum; the moved-to one works.
  mpi::Communicator a;
  mpi::Communicator b(std::move(a));
  std::vector<double> one = {1.0};
  b.sum(std::span<double>(one));
  check(one[0] == P, "moved-to communicator sums");
  check.throws<bp::DistributedError>("sum on a moved-from communicator",
                                     [&] { a.sum(std::span<double>(one)); }, {"moved from"});
}

// ---- sharding ----

void test_shard(Checks& check) {
  check.section("shard");
  const auto data = make_data<double>(10, 5);
  for (int size = 1; size <= 4; ++size) {
    Eigen::Index next = 0;
    bool ok = true;
    for (int r = 0; r < size; ++r) {
      const auto range = mpi::shard_range(10, r, size);
      const auto part = mpi::shard(data, r, size);
      ok = ok && range.first == next && part.size() == range.count &&
           (range.count == 10 / size || range.count == 10 / size + 1) &&
           part.inputs == data.inputs.middleCols(range.first, range.count) &&
           part.labels == data.labels.segment(range.first, range.count);
      next += range.count;
    }
    check(ok && next == 10, "10 samples over " + std::to_string(size) + " ranks");
  }
  check(mpi::shard_range(10, 0, 3).count == 4 && mpi::shard_range(10, 2, 3).first == 7,
        "10 over 3 is 4, 3, 3");
  check(mpi::shard(data, 9, 20).size() == 1 && mpi::shard(data, 10, 20).size() == 0,
        "more ranks than samples: empty shards at the end");
  check.throws<bp::ValueError>("rank 2 of 2", [&] { (void)mpi::shard(data, 2, 2); },
                               {"rank 2 of 2"});
}

// ---- reading a rank's shard of MNIST-format files ----

void write_idx(const fs::path& path, const std::vector<std::size_t>& dims,
               const std::vector<unsigned char>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  const unsigned char magic[4] = {0, 0, 0x08, static_cast<unsigned char>(dims.size())};
  f.write(reinterpret_cast<const char*>(magic), 4);
  for (std::size_t d : dims) {
    const unsigned char be[4] = {static_cast<unsigned char>(d >> 24),
                                 static_cast<unsigned char>(d >> 16),
                                 static_cast<unsigned char>(d >> 8), static_cast<unsigned char>(d)};
    f.write(reinterpret_cast<const char*>(be), 4);
  }
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_mnist_like(const fs::path& dir, std::size_t n_train, std::size_t n_test) {
  fs::create_directories(dir);
  auto images = [](std::size_t n, unsigned seed) {
    std::vector<unsigned char> b(n * 4 * 3);
    for (std::size_t k = 0; k < b.size(); ++k) b[k] = static_cast<unsigned char>(k * 37 + seed);
    return b;
  };
  auto labels = [](std::size_t n, unsigned seed) {
    std::vector<unsigned char> b(n);
    for (std::size_t k = 0; k < n; ++k) b[k] = static_cast<unsigned char>((k * 7 + seed) % 10);
    return b;
  };
  write_idx(dir / "train-images-idx3-ubyte", {n_train, 4, 3}, images(n_train, 1));
  write_idx(dir / "train-labels-idx1-ubyte", {n_train}, labels(n_train, 2));
  write_idx(dir / "t10k-images-idx3-ubyte", {n_test, 4, 3}, images(n_test, 3));
  write_idx(dir / "t10k-labels-idx1-ubyte", {n_test}, labels(n_test, 4));
}

bool same_data(const bp::Dataset<float>& a, const bp::Dataset<float>& b) {
  return a.inputs.rows() == b.inputs.rows() && a.inputs.cols() == b.inputs.cols() &&
         a.inputs == b.inputs && a.targets == b.targets && a.labels == b.labels;
}

void test_load_mnist_shard(Checks& check, int rank) {
  check.section("load_mnist_shard");
  const fs::path dir =
      fs::temp_directory_path() /
      ("backprop_test_mpi_" + std::to_string(::getpid()) + "_" + std::to_string(rank));
  fs::remove_all(dir);
  write_mnist_like(dir / "plain", 23, 9);
  const auto full = bp::load_mnist<float>(dir / "plain");
  std::vector<std::string> variants = {"plain"};
  // The same files gzipped (when gzip is there): decompressed whole, then sliced.
  fs::create_directories(dir / "gz");
  for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}) {
    fs::copy_file(dir / "plain" / f, dir / "gz" / f);
  }
  const std::string gz = "gzip -q " + (dir / "gz").string() + "/*";
  if (std::system(gz.c_str()) == 0 && fs::exists(dir / "gz" / "t10k-images-idx3-ubyte.gz")) {
    variants.push_back("gz");
  } else {
    std::cout << "   (no gzip: the .gz variant is skipped)" << std::endl;
  }
  for (const auto& v : variants) {
    for (int size : {1, 2, 3, 5, 30}) {
      bool ok = true;
      for (int r = 0; r < size; ++r) {
        const auto part = mpi::load_mnist_shard<float>(dir / v, r, size);
        ok = ok && same_data(part.train, mpi::shard(full.train, r, size)) &&
             same_data(part.test, mpi::shard(full.test, r, size)) && part.image_rows == 4 &&
             part.image_cols == 3 && part.train.inputs.rows() == 12;
        const auto limited = mpi::load_mnist_shard<float>(dir / v, r, size, 20);
        ok = ok && same_data(limited.train, mpi::shard(full.train.slice(0, 20), r, size)) &&
             same_data(limited.test, mpi::shard(full.test, r, size));
      }
      check(ok, v + ": shards over " + std::to_string(size) + " ranks equal shard(load_mnist)");
    }
    check.throws<bp::DataError>(v + ": n_train larger than the file",
                                [&] { (void)mpi::load_mnist_shard<float>(dir / v, 0, 2, 24); },
                                {"fewer than the 24"});
  }
  // Damaged plain files: the same kind of message as load_mnist's.
  fs::resize_file(dir / "plain" / "train-images-idx3-ubyte", 16 + 23 * 12 - 1);
  check.throws<bp::DataError>("truncated images",
                              [&] { (void)mpi::load_mnist_shard<float>(dir / "plain", 0, 2); },
                              {"train-images-idx3-ubyte", "truncated data"});
  write_idx(dir / "plain" / "train-images-idx3-ubyte", {23, 4, 3}, std::vector<unsigned char>(276));
  write_idx(dir / "plain" / "train-labels-idx1-ubyte", {22}, std::vector<unsigned char>(22));
  check.throws<bp::DataError>("label count differs",
                              [&] { (void)mpi::load_mnist_shard<float>(dir / "plain", 1, 2); },
                              {"23 images", "22 labels"});
  {
    std::ofstream bad(dir / "plain" / "train-labels-idx1-ubyte", std::ios::binary);
    bad << "abcdefgh";
  }
  check.throws<bp::DataError>("bad magic",
                              [&] { (void)mpi::load_mnist_shard<float>(dir / "plain", 0, 2); },
                              {"train-labels-idx1-ubyte", "bad magic"});
  check.throws<bp::DataError>("missing directory",
                              [&] { (void)mpi::load_mnist_shard<float>(dir / "nowhere", 0, 2); },
                              {"not a directory"});
  check.throws<bp::ValueError>("rank outside",
                               [&] { (void)mpi::load_mnist_shard<float>(dir / "gz", 2, 2); },
                               {"rank 2 of 2"});
  fs::remove_all(dir);
}

// ---- replicated training equals one process ----

template <class Net, class Cost, class Opt>
void replicated_case(Checks& check, mpi::Communicator& comm, const std::string& name,
                     const bp::SgdOptions& options, const Opt& optimizer, double tolerance,
                     Eigen::Index n = 70, double zeros = 0.0) {
  using Scalar = typename Net::Scalar;
  const auto train = make_data<Scalar>(n, 11, zeros);
  const auto eval = make_data<Scalar>(31, 12);
  bp::SgdOptions o = options;
  o.on_epoch = bp::quiet;
  o.monitor_training_cost = true;
  o.monitor_evaluation_cost = true;

  Net reference{7};
  const auto expected = reference.template sgd<Cost>(train, o, &eval, optimizer);
  Net net{7};
  const auto got = net.template sgd<Cost>(train, o, &eval, optimizer, comm);

  const double diff = max_rel_diff(parameters(net), parameters(reference));
  check(diff <= tolerance, name + ": parameters differ from one process's by " + str(diff) +
                               " (tolerance " + str(tolerance) + ")");
  bool reports = got.epochs.size() == expected.epochs.size();
  for (std::size_t e = 0; reports && e < got.epochs.size(); ++e) {
    const auto& g = got.epochs[e];
    const auto& x = expected.epochs[e];
    const double cost_tol = 1e3 * tolerance;
    reports =
        g.evaluation_correct == x.evaluation_correct && g.evaluation_total == x.evaluation_total &&
        g.training_cost && x.training_cost &&
        std::abs(*g.training_cost - *x.training_cost) <= cost_tol * std::abs(*x.training_cost) &&
        g.evaluation_cost && x.evaluation_cost &&
        std::abs(*g.evaluation_cost - *x.evaluation_cost) <=
            cost_tol * std::abs(*x.evaluation_cost);
  }
  check(reports, name + ": the epoch reports (costs, evaluation counts) equal one process's");
  if (comm.rank() == 0) std::cout << "   " << name << ": max rel diff " << diff << std::endl;
}

void test_replicated(Checks& check, mpi::Communicator& comm) {
  check.section("replicated layout equals one process");
  using D = SigmoidNet<double>;
  using F = SigmoidNet<float>;
  const bp::SgdOptions base{.epochs = 3, .mini_batch_size = 8, .eta = 3.0};
  auto with = [&](auto f) {
    bp::SgdOptions o = base;
    f(o);
    return o;
  };
  replicated_case<D, bp::QuadraticCost>(check, comm, "double PlainSgd", base, bp::PlainSgd{},
                                        1e-12);
  replicated_case<D, bp::QuadraticCost>(check, comm, "double PlainSgd L2",
                                        with([](auto& o) { o.lambda = 0.5; }), bp::PlainSgd{},
                                        1e-12);
  replicated_case<D, bp::CrossEntropyCost>(
      check, comm, "double PlainSgd L1, batch 7, cross-entropy", with([](auto& o) {
        o.lambda1 = 0.2;
        o.mini_batch_size = 7;
      }),
      bp::PlainSgd{}, 1e-12);
  replicated_case<D, bp::QuadraticCost>(check, comm, "double Momentum L2", with([](auto& o) {
                                          o.lambda = 0.5;
                                          o.eta = 0.5;
                                        }),
                                        bp::Momentum{.mu = 0.9}, 1e-12);
  replicated_case<D, bp::QuadraticCost>(check, comm, "double Adam L2", with([](auto& o) {
                                          o.lambda = 0.5;
                                          o.eta = 0.01;
                                        }),
                                        bp::Adam{}, 1e-12);
  replicated_case<SoftmaxNet<double>, bp::LogLikelihoodCost>(
      check, comm, "double ReLU+softmax Adam L2", with([](auto& o) {
        o.lambda = 0.1;
        o.eta = 0.01;
      }),
      bp::Adam{}, 1e-12);
  // 69 samples in batches of 4: the last global batch has 1 sample, so a rank gets none.
  replicated_case<D, bp::QuadraticCost>(check, comm, "double, a last batch of 1",
                                        with([](auto& o) { o.mini_batch_size = 4; }),
                                        bp::PlainSgd{}, 1e-12, 69);
  // 80% zero inputs: one process may take a sparse first-layer path, the ranks not.
  replicated_case<D, bp::QuadraticCost>(check, comm, "double PlainSgd L2, 80% zero inputs",
                                        with([](auto& o) { o.lambda = 0.5; }), bp::PlainSgd{},
                                        1e-12, 70, 0.8);
  replicated_case<F, bp::QuadraticCost>(check, comm, "float PlainSgd, 80% zero inputs", base,
                                        bp::PlainSgd{}, 1e-5, 70, 0.8);
  replicated_case<F, bp::QuadraticCost>(check, comm, "float PlainSgd L2",
                                        with([](auto& o) { o.lambda = 0.5; }), bp::PlainSgd{},
                                        1e-5);
  replicated_case<F, bp::QuadraticCost>(check, comm, "float Adam L2", with([](auto& o) {
                                          o.lambda = 0.5;
                                          o.eta = 0.01;
                                        }),
                                        bp::Adam{}, 1e-5);
  replicated_case<UserLayerNet<double>, bp::QuadraticCost>(
      check, comm, "double user layer PlainSgd L2", with([](auto& o) { o.lambda = 0.5; }),
      bp::PlainSgd{}, 1e-12);
  replicated_case<UserLayerNet<double>, bp::QuadraticCost>(check, comm, "double user layer Adam L1",
                                                           with([](auto& o) {
                                                             o.lambda1 = 0.2;
                                                             o.eta = 0.01;
                                                           }),
                                                           bp::Adam{}, 1e-12);
  replicated_case<UserLayerNet<float>, bp::QuadraticCost>(check, comm, "float user layer Momentum",
                                                          with([](auto& o) { o.eta = 0.5; }),
                                                          bp::Momentum{.mu = 0.9}, 1e-5);
  replicated_case<ConvNet<double>, bp::QuadraticCost>(check, comm, "double conv net PlainSgd L2",
                                                      with([](auto& o) { o.lambda = 0.5; }),
                                                      bp::PlainSgd{}, 1e-12);
  replicated_case<ConvNet<float>, bp::QuadraticCost>(
      check, comm, "float conv net Adam", with([](auto& o) { o.eta = 0.01; }), bp::Adam{}, 1e-5);
  // BatchNorm: the statistics of the whole global batch on every rank. 66 samples in
  // batches of 8: the last global batch has 2, one per rank of 2.
  replicated_case<BatchNormNet<double>, bp::QuadraticCost>(
      check, comm, "double BatchNorm + BatchNorm2D PlainSgd L2", with([](auto& o) {
        o.lambda = 0.5;
        o.eta = 0.5;
      }),
      bp::PlainSgd{}, 1e-10, 66);
  // (Not Adam in float: the first layer's bias gradient is zero up to rounding, which
  // Adam would scale up to steps of eta.)
  replicated_case<BatchNormNet<float>, bp::QuadraticCost>(
      check, comm, "float BatchNorm + BatchNorm2D Momentum", with([](auto& o) { o.eta = 0.5; }),
      bp::Momentum{.mu = 0.9}, 1e-4, 66);
  {
    mpi::Communicator rb(MPI_COMM_WORLD, mpi::Reduction::reduce_broadcast);
    replicated_case<D, bp::QuadraticCost>(check, rb, "double Momentum, reduce_broadcast",
                                          with([](auto& o) { o.eta = 0.5; }),
                                          bp::Momentum{.mu = 0.9}, 1e-12);
  }
  // One fused exchange per mini-batch, not one per matrix: count the calls.
  {
    const auto train = make_data<double>(64, 11);
    D net{7};
    comm.reset_stats();
    net.sgd(train, {.epochs = 2, .mini_batch_size = 16, .eta = 1.0, .on_epoch = bp::quiet}, nullptr,
            bp::PlainSgd{}, comm);
    const auto calls = comm.sum_calls();
    if (comm.size() > 1) {
      // 2 epochs x 4 steps, plus at most a few for the start and each epoch's statistics.
      check(calls >= 8 && calls <= 8 + 2 + 2 * 2 + 2,
            "sum calls for 2 epochs of 4 mini-batches: " + std::to_string(calls));
      const std::uint64_t per_step = (D::parameter_count() + 1 + comm.size()) * sizeof(double);
      check(comm.bytes_reduced() >= 8 * per_step, "bytes reduced " +
                                                      std::to_string(comm.bytes_reduced()) +
                                                      ", at least 8 x " + std::to_string(per_step));
    }
    if (comm.rank() == 0) {
      std::cout << "   2 epochs x 4 mini-batches: " << calls << " sum calls, "
                << comm.bytes_reduced() << " bytes" << std::endl;
    }
  }
}

// ---- sharded training ----

void test_sharded(Checks& check, mpi::Communicator& comm) {
  check.section("sharded layout");
  using D = SigmoidNet<double>;
  const int P = comm.size();
  const int r = comm.rank();
  const auto train = make_data<double>(70, 11);
  const auto eval = make_data<double>(31, 12);
  // Uneven shards: rank 0 gets more than its share.
  const Eigen::Index cut = P == 1 ? 70 : 40;
  const auto mine = P == 1 ? train
                           : (r == 0 ? train.slice(0, cut)
                                     : mpi::shard(train.slice(cut, 70 - cut), r - 1, P - 1));
  const auto my_eval = mpi::shard(eval, comm);
  D net{7};
  D before{7};
  bp::SgdOptions o{.epochs = 4, .mini_batch_size = 10, .eta = 3.0, .lambda = 0.1};
  o.on_epoch = bp::quiet;
  o.monitor_training_cost = true;
  const auto history =
      net.sgd(mine, o, &my_eval, bp::Momentum{.mu = 0.5}, comm, bp::DataLayout::sharded);

  const auto all = allgather(comm, parameters(net));
  bool same = true;
  for (int q = 1; q < P; ++q) {
    same = same && std::memcmp(all[0].data(), all[q].data(), all[0].size() * sizeof(double)) == 0;
  }
  check(same, "every rank ends with bit-identical parameters");
  const auto& last = history.epochs.back();
  const long long correct = net.evaluate(eval.inputs, eval.labels);
  check(last.evaluation_correct == correct && last.evaluation_total == eval.size(),
        "evaluation " + std::to_string(last.evaluation_correct) + " / " +
            std::to_string(last.evaluation_total) + " equals one process's evaluate " +
            std::to_string(correct) + " / " + std::to_string(eval.size()));
  check(history.epochs.size() == 4 && history.epochs.front().training_cost &&
            *last.training_cost < *history.epochs.front().training_cost,
        "the training cost falls: " + str(*history.epochs.front().training_cost) + " -> " +
            str(*last.training_cost));
  check(parameters(net) != parameters(before), "the parameters changed");
}

// ---- disagreement and failure ----

void test_errors(Checks& check, mpi::Communicator& comm) {
  check.section("disagreeing and failing ranks");
  if (comm.size() < 2) {
    std::cout << "   (needs 2 ranks; skipped)" << std::endl;
    return;
  }
  const int r = comm.rank();
  const auto train = make_data<double>(40, 11);
  bp::SgdOptions o{.epochs = 3, .mini_batch_size = 8, .eta = 1.0};
  o.on_epoch = bp::quiet;

  // A rank with another network shape.
  using Other =
      bp::BasicNetwork<double, bp::Dense<kIn, 4, bp::Sigmoid>, bp::Dense<4, kClasses, bp::Sigmoid>>;
  check.throws<bp::DistributedError>("rank 1 has another shape",
                                     [&] {
                                       if (r == 1) {
                                         Other net{7};
                                         net.sgd(train, o, nullptr, bp::PlainSgd{}, comm);
                                       } else {
                                         SigmoidNet<double> net{7};
                                         net.sgd(train, o, nullptr, bp::PlainSgd{}, comm);
                                       }
                                     },
                                     {"rank 1 has layer sizes 6-4-3", "rank 0 has 6-5-3"});

  // A rank with another eta.
  check.throws<bp::DistributedError>("rank 1 has another eta",
                                     [&] {
                                       bp::SgdOptions mine = o;
                                       if (r == 1) mine.eta = 2.0;
                                       SigmoidNet<double> net{7};
                                       net.sgd(train, mine, nullptr, bp::PlainSgd{}, comm);
                                     },
                                     {"rank 1", "eta"});

  // Replicated data of another size.
  check.throws<bp::DistributedError>("rank 1 has fewer samples (replicated)",
                                     [&] {
                                       SigmoidNet<double> net{7};
                                       net.sgd(r == 1 ? train.slice(0, 39) : train, o, nullptr,
                                               bp::PlainSgd{}, comm);
                                     },
                                     {"rank 1", "39"});

  // A rank whose generator differs (replicated shuffles must agree).
  check.throws<bp::DistributedError>("rank 1 has another seed",
                                     [&] {
                                       SigmoidNet<double> net{r == 1 ? 8u : 7u};
                                       net.sgd(train, o, nullptr, bp::PlainSgd{}, comm);
                                     },
                                     {"rank 1"});

  // A rank that fails during training (its on_batch callback throws in epoch 2): every
  // rank throws, naming rank 1 and where, instead of waiting for it forever.
  check.throws<bp::DistributedError>("rank 1 fails in epoch 2",
                                     [&] {
                                       bp::SgdOptions mine = o;
                                       int batches = 0;
                                       if (r == 1) {
                                         mine.on_batch = [&](const bp::BatchProgress& p) {
                                           ++batches;
                                           if (p.epoch == 2 && batches == 7)
                                             throw std::runtime_error("deliberate failure");
                                         };
                                       }
                                       SigmoidNet<double> net{7};
                                       net.sgd(train, mine, nullptr, bp::PlainSgd{}, comm);
                                     },
                                     {"rank 1 failed", "epoch 2"});

  // A rank whose shard holds NaN: it throws its own ValueError, the others a
  // DistributedError naming it.
  auto nan_shard = [&] {
    auto mine = mpi::shard(train, comm);
    if (r == 1) mine.inputs(0, 0) = std::numeric_limits<double>::quiet_NaN();
    SigmoidNet<double> net{7};
    net.sgd(mine, o, nullptr, bp::PlainSgd{}, comm, bp::DataLayout::sharded);
  };
  if (r == 1) {
    check.throws<bp::ValueError>("NaN in my shard", nan_shard, {"NaN"});
  } else {
    check.throws<bp::DistributedError>("NaN in rank 1's shard", nan_shard, {"rank 1"});
  }

  // After all that, the ranks are still in step.
  std::vector<double> one = {1.0};
  comm.sum(std::span<double>(one));
  check(one[0] == comm.size(), "the communicator still works after the errors");
}

}  // namespace

int main(int argc, char** argv) {
  return mpi::run(argc, argv, [](mpi::Communicator& comm) {
    Checks check(comm);
    test_communicator(check, comm);
    test_shard(check);
    test_load_mnist_shard(check, comm.rank());
    test_replicated(check, comm);
    test_sharded(check, comm);
    test_errors(check, comm);
    return check.finish();
  });
}
