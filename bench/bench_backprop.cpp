// Benchmark of backprop (this library) and of the plain-Eigen peer (plain_eigen.cpp)
// on workloads W1-W7 (W7: training and inference; see common.hpp and bench/README.md).
// Prints progress to stderr and writes the results as JSON (--json FILE, else stdout).
//
//   bench_backprop [--threads N] [--runs R] [--samples N] [--data FILE] [--only W1,W4]
//                  [--limit W4=12800] [--check] [--peak] [--json FILE]
//   bench_backprop --write-data FILE [--samples N] [--mnist DIR]
#include <Eigen/Core>
#include <array>
#include <backprop/backprop.hpp>
#include <barrier>
#include <exception>
#include <numeric>
#include <span>
#include <thread>
#include <vector>

#include "common.hpp"
#include "mnist_data.hpp"
#include "plain_eigen.hpp"

namespace bp = backprop;

namespace {

using W1Net = bp::Network<bp::Dense<784, 30, bp::Sigmoid>, bp::Dense<30, 10, bp::Sigmoid>>;
using W2Net = bp::Network<bp::Dense<784, 100, bp::Sigmoid>, bp::Dense<100, 10, bp::Sigmoid>>;
using W3Net = bp::Network<bp::Dense<784, 256, bp::Sigmoid>, bp::Dense<256, 128, bp::Sigmoid>,
                          bp::Dense<128, 10, bp::Sigmoid>>;
using W4Net = bp::Network<bp::Dense<784, 1024, bp::ReLU>, bp::Dense<1024, 1024, bp::ReLU>,
                          bp::Dense<1024, 10, bp::Softmax>>;
/// The book's chapter-6 convolutional network (bench::w7_layers()).
using W7Net = bp::Network<bp::Conv2D<1, 28, 28, 20, 5, bp::ReLU>, bp::MaxPool2D<20, 24, 24, 2>,
                          bp::Conv2D<20, 12, 12, 40, 5, bp::ReLU>, bp::MaxPool2D<40, 8, 8, 2>,
                          bp::Dense<640, 100, bp::ReLU>, bp::Dense<100, 10, bp::Softmax>>;

/// Sets every layer of `net` to the shared initial parameters (Dense: Out x In; Conv2D:
/// OutChannels x C K K, which LayerInit holds in the same column-major way; MaxPool2D:
/// empty).
template <class Net>
void set_parameters(Net& net, const std::vector<bench::LayerInit>& init) {
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((net.template layer<I>().weights() =
          Eigen::Map<const Eigen::MatrixXf>(init[I].weights.data(), init[I].out, init[I].in),
      net.template layer<I>().biases() =
          Eigen::Map<const Eigen::VectorXf>(init[I].biases.data(), init[I].out)),
     ...);
  }
  (std::make_index_sequence<Net::num_layers>{});
}

bp::Dataset<float> to_dataset(const bench::Data& d, std::int64_t n) {
  bp::Dataset<float> ds;
  ds.inputs = Eigen::Map<const Eigen::MatrixXf>(d.x.data(), d.inputs, n);
  ds.labels.resize(n);
  for (std::int64_t i = 0; i < n; ++i) ds.labels(i) = d.labels[static_cast<std::size_t>(i)];
  ds.targets = bp::one_hot<float>(ds.labels, 10);
  return ds;
}

/// The GradientExchange of docs/examples/data_parallel_threads.cpp: ranks are threads
/// of this process, summing through shared memory in rank order.
class ThreadExchange {
 public:
  struct Shared {
    explicit Shared(int n) : barrier(n), parts(static_cast<std::size_t>(n)) {}
    std::barrier<> barrier;
    std::vector<const void*> parts;
  };
  ThreadExchange(int rank, Shared& shared) : m_rank(rank), m_shared(shared) {}
  [[nodiscard]] int rank() const { return m_rank; }
  [[nodiscard]] int size() const { return static_cast<int>(m_shared.parts.size()); }
  void sum(std::span<float> values) { sum_impl(values); }
  void sum(std::span<double> values) { sum_impl(values); }

 private:
  template <class T>
  void sum_impl(std::span<T> values) {
    m_shared.parts[static_cast<std::size_t>(m_rank)] = values.data();
    m_shared.barrier.arrive_and_wait();
    m_total.assign(values.size(), T(0));
    for (const void* part : m_shared.parts) {
      const T* p = static_cast<const T*>(part);
      for (std::size_t i = 0; i < values.size(); ++i) m_total[i] += p[i];
    }
    m_shared.barrier.arrive_and_wait();
    std::copy(m_total.begin(), m_total.end(), values.begin());
  }
  int m_rank;
  Shared& m_shared;
  std::vector<double> m_total;
};
static_assert(bp::GradientExchange<ThreadExchange>);

/// One epoch of net.sgd() (shuffle + gather + update_mini_batch), the user's path;
/// also update_mini_batch on contiguous columns (no shuffle, no gather) for comparison.
template <class Net, class Cost>
void train_workload(const bench::Workload& w, const bench::Options& o,
                    const bp::Dataset<float>& full, bench::Report& report) {
  const std::int64_t n = o.samples_for(w.id, full.size());
  const bp::Dataset<float> ds = n == full.size() ? full : full.slice(0, n);
  const auto init = bench::initial_parameters(w);
  auto net = std::make_unique<Net>(1);
  const bp::SgdOptions options{
      .epochs = 1, .mini_batch_size = w.batch, .eta = w.eta, .on_epoch = bp::quiet};
  set_parameters(*net, init);
  net->template sgd<Cost>(ds.slice(0, std::min<std::int64_t>(n, 2048)), options);  // warm-up
  bench::Record r{w.id, "train", n, bench::training_flops(w), "net.sgd(), 1 epoch"};
  bench::repeat(r, o.runs, [&] {
    set_parameters(*net, init);
    bench::Timer timer;
    net->template sgd<Cost>(ds, options);
    return timer.stop();
  });
  report.add(r);

  if (w.id == "W1" || w.id == "W2") {
    // A one-epoch call pays sgd's per-call set-up (validating the data and building
    // the sparse copy of the inputs) once per epoch; a user's multi-epoch call pays it
    // once. Reported per epoch of a 5-epoch call.
    auto five = options;
    five.epochs = 5;
    bench::Record f{w.id, "train_5_epochs", 5 * n, bench::training_flops(w),
                    "net.sgd(), 5 epochs in one call"};
    bench::repeat(f, o.runs, [&] {
      set_parameters(*net, init);
      bench::Timer timer;
      net->template sgd<Cost>(ds, five);
      return timer.stop();
    });
    report.add(f);
  }

  bench::Record c{w.id, "train_contiguous", n, bench::training_flops(w),
                  "update_mini_batch(X.middleCols(k, m), ...) without shuffle or gather"};
  bench::repeat(c, o.runs, [&] {
    set_parameters(*net, init);
    bench::Timer timer;
    for (Eigen::Index k = 0; k < n; k += w.batch) {
      const Eigen::Index m = std::min<Eigen::Index>(w.batch, n - k);
      net->template update_mini_batch<Cost>(ds.inputs.middleCols(k, m), ds.targets.middleCols(k, m),
                                            w.eta);
    }
    return timer.stop();
  });
  report.add(c);

  // The user's loop as sgd runs it: a shuffled order (the generator's time included),
  // each batch's columns copied into reused matrices, then update_mini_batch.
  bench::Record g{w.id, "train_gathered", n, bench::training_flops(w),
                  "shuffle, copy each batch's columns, update_mini_batch(Xb, Yb, ...)"};
  std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
  Eigen::MatrixXf xb, yb;
  bench::repeat(g, o.runs, [&] {
    set_parameters(*net, init);
    bench::Timer timer;
    std::iota(order.begin(), order.end(), Eigen::Index{0});
    bp::Rng rng(7);
    rng.shuffle(order.begin(), order.end());
    for (Eigen::Index k = 0; k < n; k += w.batch) {
      const Eigen::Index m = std::min<Eigen::Index>(w.batch, n - k);
      xb.resize(ds.inputs.rows(), m);
      yb.resize(ds.targets.rows(), m);
      for (Eigen::Index j = 0; j < m; ++j) {
        const Eigen::Index src = order[static_cast<std::size_t>(k + j)];
        xb.col(j) = ds.inputs.col(src);
        yb.col(j) = ds.targets.col(src);
      }
      net->template update_mini_batch<Cost>(xb, yb, w.eta);
    }
    return timer.stop();
  });
  report.add(g);

  if (o.threads > 1 && w.id == "W7") {
    // Data-parallel sgd over o.threads ranks that are threads of this process (one
    // Eigen thread each): every rank computes its share of each mini-batch, one
    // exchange per step sums the gradients. Only W7: with this simple exchange (two
    // barriers and a full sum on every rank per step) the small networks' steps are
    // slower this way (docs/performance.md).
    bench::Record tr{w.id, "train_thread_ranks", n, bench::training_flops(w),
                     "data-parallel sgd, one rank per thread (replicated data)"};
    const int ranks = o.threads;
    std::vector<std::unique_ptr<Net>> nets;
    for (int r = 0; r < ranks; ++r) nets.push_back(std::make_unique<Net>(1));
    bench::repeat(tr, o.runs, [&] {
      for (auto& net_r : nets) set_parameters(*net_r, init);
      Eigen::setNbThreads(1);
      ThreadExchange::Shared shared(ranks);
      std::vector<std::exception_ptr> failed(static_cast<std::size_t>(ranks));
      bench::Timer timer;
      auto run = [&](int r) {
        try {
          ThreadExchange ex(r, shared);
          nets[static_cast<std::size_t>(r)]->template sgd<Cost>(
              ds, options, nullptr, bp::PlainSgd{}, ex, bp::DataLayout::replicated);
        } catch (...) {
          failed[static_cast<std::size_t>(r)] = std::current_exception();
        }
      };
      std::vector<std::thread> others;
      for (int r = 1; r < ranks; ++r) others.emplace_back(run, r);
      run(0);
      for (auto& t : others) t.join();
      const double seconds = timer.stop();
      Eigen::setNbThreads(o.threads);
      for (const auto& e : failed) {
        if (e) std::rethrow_exception(e);
      }
      return seconds;
    });
    report.add(tr);
  }
}

/// Trains `n` samples in order from the shared weights; the cost on the first 1000 is
/// recorded as workload `id` (default w.id).
template <class Net, class Cost>
void check_workload(const bench::Workload& w, const bench::Data& d, const bp::Dataset<float>& full,
                    bench::Report& report, std::int64_t n = bench::check_samples,
                    const std::string& id = "") {
  auto net = std::make_unique<Net>(1);
  set_parameters(*net, bench::initial_parameters(w));
  net->template sgd<Cost>(full.slice(0, n), {.epochs = 1,
                                             .mini_batch_size = w.batch,
                                             .eta = w.eta,
                                             .shuffle = false,
                                             .on_epoch = bp::quiet});
  const Eigen::MatrixXf out = net->feedforward(full.inputs.leftCols(bench::check_eval_samples));
  bench::Record r{id.empty() ? w.id : id, "check", n, 0, "cost on the first 1000 samples"};
  r.check_value = bench::check_cost(w, d, [&](std::int64_t i, int k) { return out(k, i); });
  report.add(r);
}

/// W7 inference from the initial weights (no training): batch-1 latency of
/// feedforward(x) on one 784 column at a time, and one feedforward(X) of 784 x 10000.
void w7_inference(const bench::Options& o, const bp::Dataset<float>& full, bench::Report& report) {
  const auto net = std::make_unique<W7Net>(1);
  set_parameters(*net, bench::w7_initial_parameters());
  const double flops = bench::w7_forward_flops();
  const std::int64_t n1 = std::min<std::int64_t>(bench::w7_latency_images, full.size());
  float sink = 0;
  for (std::int64_t i = 0; i < std::min<std::int64_t>(n1, 100); ++i) {  // warm-up
    sink += net->feedforward(full.inputs.col(i))(0);
  }
  bench::Record lat{"W7", "latency", n1, flops, "feedforward(x.col(i)), batch 1"};
  bench::repeat(lat, o.runs, [&] {
    bench::Timer timer;
    for (std::int64_t i = 0; i < n1; ++i) sink += net->feedforward(full.inputs.col(i))(0);
    return timer.stop();
  });
  report.add(lat);
  const std::int64_t nb = std::min<std::int64_t>(bench::inference_batch, full.size());
  bench::Record thr{"W7", "throughput", nb, flops, "feedforward(X) on 784 x 10000"};
  sink += net->feedforward(full.inputs.leftCols(nb))(0, 0);
  bench::repeat(thr, std::max(o.runs, 5), [&] {
    bench::Timer timer;
    sink += net->feedforward(full.inputs.leftCols(nb))(0, 0);
    return timer.stop();
  });
  report.add(thr);
  if (sink == 12345.0f) std::cerr << "";
}

/// --check: W7's outputs for the first images from the initial weights, batched (the
/// throughput path); the note gives the largest difference to the batch-1 path.
void w7_outputs(const bp::Dataset<float>& full, bench::Report& report) {
  const auto net = std::make_unique<W7Net>(1);
  set_parameters(*net, bench::w7_initial_parameters());
  const std::int64_t n = bench::w7_output_check_images;
  const Eigen::MatrixXf out = net->feedforward(full.inputs.leftCols(n));
  double single = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const Eigen::VectorXf x = full.inputs.col(i);
    single = std::max<double>(single, (net->feedforward(x) - out.col(i)).cwiseAbs().maxCoeff());
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", single);
  bench::Record r{"W7", "outputs", n, 0,
                  std::string("feedforward(X) of the first 100 images, initial weights; max "
                              "|batch-1 feedforward(x) - batched| = ") +
                      buf};
  r.values.assign(out.data(), out.data() + out.size());  // column i = image i
  report.add(r);
}

void run_ours(const bench::Options& o, const bench::Data& d, bench::Report& report) {
  const bp::Dataset<float> full = to_dataset(d, d.n);
  const auto& ws = bench::training_workloads();
  if (o.check) {
    check_workload<W1Net, bp::QuadraticCost>(ws[0], d, full, report);
    check_workload<W4Net, bp::LogLikelihoodCost>(ws[3], d, full, report);
    check_workload<W7Net, bp::LogLikelihoodCost>(bench::w7_workload(), d, full, report);
    check_workload<W7Net, bp::LogLikelihoodCost>(bench::w7_workload(), d, full, report,
                                                 bench::w7_short_check_samples, "W7-500");
    w7_outputs(full, report);
    return;
  }
  if (o.wants("W1")) train_workload<W1Net, bp::QuadraticCost>(ws[0], o, full, report);
  if (o.wants("W2")) train_workload<W2Net, bp::QuadraticCost>(ws[1], o, full, report);
  if (o.wants("W3")) train_workload<W3Net, bp::QuadraticCost>(ws[2], o, full, report);
  if (o.wants("W4")) train_workload<W4Net, bp::LogLikelihoodCost>(ws[3], o, full, report);
  if (o.wants("W7")) {
    train_workload<W7Net, bp::LogLikelihoodCost>(bench::w7_workload(), o, full, report);
    w7_inference(o, full, report);
  }

  if (o.wants("W5")) {
    const bench::Workload w = bench::w5_workload();
    W2Net net(1);
    set_parameters(net, bench::initial_parameters(w));
    const std::int64_t n1 = std::min<std::int64_t>(10000, d.n);
    float sink = 0;
    bench::Record lat{"W5", "latency", n1, bench::forward_flops(w),
                      "feedforward(x.col(i)), batch 1"};
    bench::repeat(lat, o.runs, [&] {
      bench::Timer timer;
      for (std::int64_t i = 0; i < n1; ++i) sink += net.feedforward(full.inputs.col(i))(0);
      return timer.stop();
    });
    report.add(lat);
    bench::Record thr{"W5", "throughput", n1, bench::forward_flops(w),
                      "feedforward(X) on 10000 columns"};
    sink += net.feedforward(full.inputs.leftCols(n1))(0, 0);
    bench::repeat(thr, std::max(o.runs, 5), [&] {
      bench::Timer timer;
      sink += net.feedforward(full.inputs.leftCols(n1))(0, 0);
      return timer.stop();
    });
    report.add(thr);
    if (sink == 12345.0f) std::cerr << "";
  }

  if (o.wants("W6")) {
    const bench::Workload w = bench::w6_workload();
    W1Net net(1);
    set_parameters(net, bench::initial_parameters(w));
    const std::int64_t n = o.samples_for("W6", d.n);
    float sink = 0;
    bench::Record r{"W6", "backprop", n, bench::training_flops(w),
                    "auto [nb, nw] = net.backprop(x, y)"};
    bench::repeat(r, o.runs, [&] {
      bench::Timer timer;
      for (std::int64_t i = 0; i < n; ++i) {
        const auto [nb, nw] = net.backprop(full.inputs.col(i), full.targets.col(i));
        sink += std::get<0>(nw)(0, 0);
      }
      return timer.stop();
    });
    report.add(r);
    if (sink == 12345.0f) std::cerr << "";
  }
}

void describe(bench::Report& r, const bench::Options& o, const bench::Data& d) {
  r.meta("data", d.source);
  r.meta("compiler", __VERSION__);
#ifdef BENCH_CXX_FLAGS
  r.meta("flags", BENCH_CXX_FLAGS);
#endif
  r.meta("eigen", std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) +
                      "." + std::to_string(EIGEN_MINOR_VERSION));
  r.meta("simd", Eigen::SimdInstructionSetsInUse());
  // The level of backprop's own kernels, chosen at run time (instruction_set.hpp).
  r.meta("kernels", std::string(backprop::to_string(backprop::instruction_set())));
  r.meta("eigen_threads", std::to_string(Eigen::nbThreads()));
  r.meta("requested_threads", std::to_string(o.threads));
}

}  // namespace

int main(int argc, char** argv) try {
  const bench::Options o = bench::parse_options(argc, argv);
  if (!o.write_data.empty()) {
    bench::Data d;
    if (!o.mnist.empty() && bench::load_mnist_data(o.mnist, o.samples, d)) {
      std::cerr << "bench_backprop: data from MNIST in " << o.mnist << '\n';
    } else {
      if (!o.mnist.empty()) std::cerr << "bench_backprop: no MNIST, using synthetic data\n";
      d = bench::synthetic_data(o.samples);
    }
    bench::write_data(d, o.write_data);
    std::cerr << "bench_backprop: wrote " << d.n << " samples (" << d.source << ") to "
              << o.write_data << '\n';
    return 0;
  }
  Eigen::setNbThreads(o.threads);
  const bench::Data d = bench::load_data(o);
  bench::Report ours("backprop", o);
  bench::Report plain("eigen", o);
  describe(ours, o, d);
  describe(plain, o, d);
  run_ours(o, d, ours);
  bench::run_plain_eigen(o, d, plain);
  if (o.peak) bench::measure_eigen_peak(2048, o.runs, plain);
  bench::write_reports(o.json, {&ours, &plain});
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_backprop: " << e.what() << '\n';
  return 1;
}
