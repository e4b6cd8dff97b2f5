// Training: XOR learned, sgd history and reporting, L2 decay.
#include <algorithm>
#include <backprop/backprop.hpp>
#include <barrier>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../support/test_support.hpp"

namespace bp = backprop;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {
template <class Scalar>
bp::Dataset<Scalar> xor_data() {
  bp::Dataset<Scalar> d;
  d.inputs.resize(2, 4);
  d.inputs << 0, 0, 1, 1,  //
      0, 1, 0, 1;
  d.targets.resize(1, 4);
  d.targets << 0, 1, 1, 0;
  return d;
}
}  // namespace

TEMPLATE_TEST_CASE("XOR is learned", "[training][xor]", float, double) {
  using Net =
      bp::BasicNetwork<TestType, bp::Dense<2, 3, bp::Sigmoid>, bp::Dense<3, 1, bp::Sigmoid>>;
  const auto data = xor_data<TestType>();
  Net net{7};
  const double before = net.template total_cost<>(data);
  net.sgd(data, {.epochs = 4000, .mini_batch_size = 4, .eta = 4.0, .on_epoch = bp::quiet});
  const double after = net.template total_cost<>(data);
  CHECK(after < before / 10);
  for (int i = 0; i < 4; ++i) {
    const auto out = net.feedforward(data.inputs.col(i));
    INFO("sample " << i << " output " << out(0));
    CHECK((out(0) > TestType(0.5)) == (data.targets(0, i) > TestType(0.5)));
    CHECK(std::abs(out(0) - data.targets(0, i)) < TestType(0.2));
  }
}

TEST_CASE("sgd reports every epoch and returns the history", "[training]") {
  using Net = bp::Network<bp::Dense<2, 4, bp::Tanh>, bp::Dense<4, 2, bp::Softmax>>;
  bp::Dataset<float> data;
  data.inputs = bptest::random_matrix<float>(2, 30, 1);
  data.labels.resize(30);
  for (int i = 0; i < 30; ++i) data.labels(i) = data.inputs(0, i) > 0 ? 1 : 0;
  data.targets = bp::one_hot<float>(data.labels, 2);

  Net net{2};
  int calls = 0;
  long long batches = 0;
  long long last_done = 0;
  const auto history = net.sgd<bp::LogLikelihoodCost>(
      data,
      {.epochs = 5,
       .mini_batch_size = 8,
       .eta = 0.5,
       .monitor_training_cost = true,
       .monitor_training_accuracy = true,
       .monitor_evaluation_cost = true,
       .on_epoch = [&](const bp::EpochReport& r) { calls += (r.epoch == calls + 1); },
       .on_batch =
           [&](const bp::BatchProgress& p) {
             ++batches;
             last_done = p.samples_done;
             CHECK(p.samples_total == 30);
             CHECK(std::isfinite(p.running_cost));
           }},
      &data);
  CHECK(calls == 5);
  CHECK(batches == 5 * 4);  // ceil(30 / 8) mini-batches per epoch
  CHECK(last_done == 30);
  REQUIRE(history.epochs.size() == 5);
  for (const auto& e : history.epochs) {
    REQUIRE(e.training_cost.has_value());
    REQUIRE(e.evaluation_accuracy.has_value());
    CHECK(e.evaluation_total == 30);
    CHECK(*e.training_accuracy == *e.evaluation_accuracy);
  }
  CHECK(*history.epochs.back().training_cost < *history.epochs.front().training_cost);

  std::ostringstream csv;
  history.write_csv(csv);
  const std::string text = csv.str();
  CHECK_THAT(text, StartsWith("epoch,eta,seconds,training_cost"));
  CHECK(std::count(text.begin(), text.end(), '\n') == 6);

  const auto path = std::filesystem::temp_directory_path() / "backprop_test_history.csv";
  history.write_csv(path);
  std::ifstream in(path);
  std::stringstream read;
  read << in.rdbuf();
  CHECK(read.str() == csv.str());
  std::filesystem::remove(path);
}

TEST_CASE("print_epoch prints the seed's line", "[training]") {
  bp::EpochReport r;
  r.epoch = 1;
  r.evaluation_correct = 9129;
  r.evaluation_total = 10000;
  std::ostringstream out;
  bp::print_epoch(r, out);
  CHECK_THAT(out.str(), StartsWith("Epoch 1: 9129 / 10000"));
}

TEST_CASE("L2 regularisation decays the weights as network2 does", "[training][l2]") {
  using Net = bp::BasicNetwork<double, bp::Dense<3, 2, bp::Sigmoid>>;
  bp::Dataset<double> data;
  data.inputs = Eigen::MatrixXd::Zero(3, 4);  // zero input: the weight gradient is 0
  data.targets = Eigen::MatrixXd::Zero(2, 4);
  Net net{3};
  const Eigen::MatrixXd w0 = net.layer<0>().weights();
  const double eta = 0.5, lambda = 2.0;
  net.sgd(data,
          {.epochs = 1, .mini_batch_size = 4, .eta = eta, .lambda = lambda, .on_epoch = bp::quiet});
  const Eigen::MatrixXd expected = (1.0 - eta * lambda / 4.0) * w0;
  CHECK(bptest::relative_difference(net.layer<0>().weights(), expected) < 1e-15);
}

TEST_CASE("Divergence stops sgd with a clear error and restores the parameters",
          "[training][divergence]") {
  // Linear regression with eta far too large grows geometrically to infinity.
  using Net = bp::Network<bp::Dense<3, 1, bp::Identity>>;
  bp::Dataset<float> data;
  data.inputs = bptest::random_matrix<float>(3, 50, 8, 0.5, 1.5);
  data.targets = bptest::random_matrix<float>(1, 50, 9);
  Net net{4};
  const Net before = net;
  bp::SgdOptions options{.epochs = 3, .mini_batch_size = 5, .eta = 1e5, .on_epoch = bp::quiet};
  try {
    net.sgd(data, options);
    FAIL("sgd did not throw");
  } catch (const bp::DivergenceError& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Contains("epoch 1") && Contains("mini-batch") && Contains("restored"));
  }
  CHECK(net == before);  // the parameters from the start of epoch 1
  CHECK(net.parameters_finite());
  // The network is still usable.
  options.eta = 0.01;
  CHECK_NOTHROW(net.sgd(data, options));

  Net reckless{4};
  options.eta = 1e5;
  options.on_divergence = bp::SgdOptions::OnDivergence::keep_going;
  CHECK_NOTHROW(reckless.sgd(data, options));
  CHECK_FALSE(reckless.parameters_finite());
}

// ---- data-parallel sgd through an in-process exchange (two threads) ----
namespace {
/// A GradientExchange between the threads of one process: every thread publishes
/// its span, and all add the slots up in rank order (so all get the same bits).
class ThreadExchange {
 public:
  struct Shared {
    explicit Shared(int n) : size(n), sync(n), floats(n), doubles(n) {}
    int size;
    std::barrier<> sync;
    std::vector<std::vector<float>> floats;
    std::vector<std::vector<double>> doubles;
  };
  ThreadExchange(Shared& shared, int rank) : m_shared(&shared), m_rank(rank) {}
  int rank() const { return m_rank; }
  int size() const { return m_shared->size; }
  void sum(std::span<float> v) { reduce(v, m_shared->floats); }
  void sum(std::span<double> v) { reduce(v, m_shared->doubles); }
  int calls = 0;

 private:
  template <class T>
  void reduce(std::span<T> v, std::vector<std::vector<T>>& slots) {
    ++calls;
    slots[static_cast<std::size_t>(m_rank)].assign(v.begin(), v.end());
    m_shared->sync.arrive_and_wait();
    for (std::size_t i = 0; i < v.size(); ++i) {
      T s = 0;
      for (const auto& slot : slots) s += slot.at(i);
      v[i] = s;
    }
    m_shared->sync.arrive_and_wait();
  }
  Shared* m_shared;
  int m_rank;
};
static_assert(bp::GradientExchange<ThreadExchange>);

/// Runs body(rank, exchange) on `ranks` threads; returns the exceptions' messages.
template <class Body>
std::vector<std::string> on_ranks(int ranks, Body body) {
  ThreadExchange::Shared shared(ranks);
  std::vector<std::string> errors(static_cast<std::size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      ThreadExchange ex(shared, r);
      try {
        body(r, ex);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

template <class Scalar>
bp::Dataset<Scalar> blobs(Eigen::Index n, std::uint64_t seed) {
  bp::Dataset<Scalar> d;
  d.inputs = bptest::random_matrix<Scalar>(6, n, seed, 0.0, 1.0);
  d.labels.resize(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    d.labels(i) = d.inputs(0, i) + d.inputs(1, i) > 1.0 ? 1 : (d.inputs(2, i) > 0.5 ? 2 : 0);
  }
  d.targets = bp::one_hot<Scalar>(d.labels, 3);
  return d;
}
using DpNet = bp::BasicNetwork<double, bp::Dense<6, 8, bp::Sigmoid>, bp::Dense<8, 3, bp::Sigmoid>>;

/// What each rank of a data-parallel `sgd` over `ThreadExchange` returned.
struct RankRuns {
  std::vector<std::string> errors;
  std::vector<bp::TrainingHistory> histories;
  std::vector<int> calls;  // exchanges each rank made
};

/// Trains nets[r] as rank r of nets.size() ranks, each on its own thread.
template <class Net, class Optimizer>
RankRuns sgd_on_ranks(std::vector<Net>& nets, const bp::Dataset<double>& train,
                      const bp::SgdOptions& options, const bp::Dataset<double>* eval,
                      const Optimizer& optimizer) {
  RankRuns runs;
  runs.histories.resize(nets.size());
  runs.calls.resize(nets.size());
  runs.errors = on_ranks(static_cast<int>(nets.size()), [&](int r, ThreadExchange& ex) {
    const auto k = static_cast<std::size_t>(r);
    runs.histories[k] = nets[k].sgd(train, options, eval, optimizer, ex);
    runs.calls[k] = ex.calls;
  });
  return runs;
}
}  // namespace

TEST_CASE("data-parallel sgd on 2 and 3 ranks equals one process", "[training][parallel]") {
  const auto train = blobs<double>(203, 1);
  const auto eval = blobs<double>(61, 2);
  const bp::SgdOptions options{
      .epochs = 3, .mini_batch_size = 10, .eta = 0.5, .lambda = 0.1, .on_epoch = bp::quiet};
  auto check = [&](const auto& optimizer, int ranks, double eta) {
    auto options_eta = options;
    options_eta.eta = eta;
    DpNet single{5};
    const auto expected = single.sgd(train, options_eta, &eval, optimizer);
    std::vector<DpNet> nets(static_cast<std::size_t>(ranks), DpNet{5});
    const auto [errors, histories, calls] =
        sgd_on_ranks(nets, train, options_eta, &eval, optimizer);
    for (int r = 0; r < ranks; ++r) {
      const auto k = static_cast<std::size_t>(r);
      INFO("rank " << r << " of " << ranks);
      REQUIRE(errors[k].empty());
      CHECK(bptest::max_parameter_difference(nets[k], single) <= 1e-12);
      CHECK(nets[k] == nets[0]);  // bit-identical across ranks
      REQUIRE(histories[k].epochs.size() == 3);
      CHECK(histories[k].epochs.back().evaluation_correct ==
            expected.epochs.back().evaluation_correct);
      CHECK(histories[k].epochs.back().evaluation_total == 61);
      // 2 agreement sums + 1 parameter broadcast + one sum per step + one per epoch.
      CHECK(calls[k] == 3 + 3 * (21 + 1));
    }
  };
  check(bp::PlainSgd{}, 2, 0.5);
  check(bp::PlainSgd{}, 3, 0.5);
  check(bp::Momentum{.mu = 0.9}, 2, 0.2);
  check(bp::Adam{}, 2, 0.01);
}

TEST_CASE("data-parallel sgd: disagreeing or failing ranks throw on every rank",
          "[training][parallel]") {
  const auto train = blobs<double>(100, 3);
  bp::SgdOptions options{.epochs = 1, .mini_batch_size = 10, .eta = 0.5, .on_epoch = bp::quiet};
  SECTION("different layer sizes") {
    using Other =
        bp::BasicNetwork<double, bp::Dense<6, 9, bp::Sigmoid>, bp::Dense<9, 3, bp::Sigmoid>>;
    const auto errors = on_ranks(2, [&](int r, ThreadExchange& ex) {
      if (r == 0) {
        DpNet net{1};
        net.sgd(train, options, nullptr, bp::PlainSgd{}, ex);
      } else {
        Other net{1};
        net.sgd(train, options, nullptr, bp::PlainSgd{}, ex);
      }
    });
    for (const auto& e : errors) {
      CHECK_THAT(e, Contains("rank 1 has layer sizes 6-9-3, rank 0 has 6-8-3"));
    }
  }
  SECTION("different mini-batch sizes") {
    const auto errors = on_ranks(2, [&](int r, ThreadExchange& ex) {
      DpNet net{1};
      auto o = options;
      o.mini_batch_size = r == 0 ? 10 : 20;
      net.sgd(train, o, nullptr, bp::PlainSgd{}, ex);
    });
    for (const auto& e : errors)
      CHECK_THAT(e, Contains("rank 1 has mini_batch_size 20, rank 0 has 10"));
  }
  SECTION("different seeds in the replicated layout") {
    const auto errors = on_ranks(2, [&](int r, ThreadExchange& ex) {
      DpNet net{static_cast<std::uint64_t>(r)};
      net.sgd(train, options, nullptr, bp::PlainSgd{}, ex);
    });
    for (const auto& e : errors) CHECK_THAT(e, Contains("shuffling generator differs"));
  }
  SECTION("invalid data on one rank") {
    const auto errors = on_ranks(2, [&](int r, ThreadExchange& ex) {
      DpNet net{1};
      auto mine = train;
      if (r == 1) mine.inputs(0, 5) = std::nan("");
      net.sgd(mine, options, nullptr, bp::PlainSgd{}, ex, bp::DataLayout::sharded);
    });
    CHECK_THAT(errors[0], Contains("rank 1 rejected its training arguments"));
    CHECK_THAT(errors[1], Contains("NaN"));
  }
  SECTION("a callback failing on one rank mid-epoch") {
    const auto errors = on_ranks(2, [&](int r, ThreadExchange& ex) {
      DpNet net{1};
      auto o = options;
      o.on_batch = [r](const bp::BatchProgress& p) {
        if (r == 1 && p.samples_done >= 40) throw std::runtime_error("disk full");
      };
      net.sgd(train, o, nullptr, bp::PlainSgd{}, ex);
    });
    CHECK_THAT(errors[0],
               Contains("rank 1 failed (reported at the exchange of epoch 1, mini-batch 5)"));
    CHECK_THAT(errors[1],
               Contains("rank 1 failed in on_batch after epoch 1, mini-batch 4: disk full"));
  }
}

TEST_CASE("data-parallel sgd on shards keeps the ranks identical and learns",
          "[training][parallel]") {
  const auto train = blobs<float>(400, 4);
  const auto eval = blobs<float>(100, 5);
  using Net = bp::Network<bp::Dense<6, 8, bp::Sigmoid>,
                          bp::DropoutDense<8, 8, bp::Sigmoid, std::ratio<1, 4>>,
                          bp::Dense<8, 3, bp::Sigmoid>>;
  std::vector<Net> nets{Net{3}, Net{99}};  // rank 0's parameters win
  std::vector<bp::TrainingHistory> histories(2);
  const auto errors = on_ranks(2, [&](int r, ThreadExchange& ex) {
    // Uneven shards: 150 and 250 samples; evaluation split 40 / 60.
    const auto mine = r == 0 ? train.slice(0, 150) : train.slice(150, 250);
    const auto my_eval = r == 0 ? eval.slice(0, 40) : eval.slice(40, 60);
    histories[static_cast<std::size_t>(r)] = nets[static_cast<std::size_t>(r)].sgd(
        mine, {.epochs = 30, .mini_batch_size = 20, .eta = 2.0, .on_epoch = bp::quiet}, &my_eval,
        bp::PlainSgd{}, ex, bp::DataLayout::sharded);
  });
  REQUIRE(errors[0].empty());
  REQUIRE(errors[1].empty());
  CHECK(nets[0] == nets[1]);
  CHECK(histories[0].epochs.back().evaluation_total == 100);
  CHECK(histories[0].epochs.back().evaluation_correct ==
        nets[0].evaluate(eval.inputs, eval.labels));
  CHECK(histories[1].epochs.back().evaluation_correct ==
        histories[0].epochs.back().evaluation_correct);
  CHECK(histories[0].epochs.back().evaluation_accuracy > 0.8);
}

namespace {
using BnNet = bp::BasicNetwork<double, bp::Dense<6, 8, bp::Identity>, bp::BatchNorm<8, bp::Sigmoid>,
                               bp::Dense<8, 3, bp::Sigmoid>>;
// A 1 x 2 x 3 image: 2 maps of 1 x 2 (2 values per channel and sample), BatchNorm2D.
using Bn2dNet = bp::BasicNetwork<double, bp::Conv2D<1, 2, 3, 2, 2, bp::Identity>,
                                 bp::BatchNorm2D<2, 1, 2, bp::ReLU>, bp::Dense<4, 3, bp::Sigmoid>>;

/// Largest relative difference of layer I's state (BatchNorm's running statistics).
template <std::size_t I, class Net>
double state_difference(const Net& a, const Net& b) {
  return bptest::relative_difference(a.template layer<I>().state(), b.template layer<I>().state());
}
}  // namespace

TEST_CASE("data-parallel sgd with BatchNorm equals one process", "[training][parallel]") {
  // 202 samples in batches of 10: the last global batch has 2, so with 3 ranks rank 0
  // has none in that step (it still takes part in the statistics' sums).
  const auto train = blobs<double>(202, 21);
  const auto eval = blobs<double>(40, 22);
  const bp::SgdOptions options{
      .epochs = 3, .mini_batch_size = 10, .eta = 0.5, .on_epoch = bp::quiet};
  auto check = [&](auto net_type, const auto& optimizer, int ranks, double eta, double tolerance) {
    using Net = decltype(net_type);
    auto o = options;
    o.eta = eta;
    Net single = bptest::perturbed<Net>(5, bp::Init::xavier, 0.3);
    const auto expected = single.sgd(train, o, &eval, optimizer);
    std::vector<Net> nets(static_cast<std::size_t>(ranks),
                          bptest::perturbed<Net>(5, bp::Init::xavier, 0.3));
    for (std::size_t k = 1; k < nets.size(); ++k) {
      nets[k].template layer<1>().state().setConstant(7.0);  // rank 0's statistics win
    }
    const auto [errors, histories, calls] = sgd_on_ranks(nets, train, o, &eval, optimizer);
    for (int r = 0; r < ranks; ++r) {
      const auto k = static_cast<std::size_t>(r);
      INFO("rank " << r << " of " << ranks << ", eta " << eta);
      REQUIRE(errors[k].empty());
      CHECK(bptest::max_parameter_difference(nets[k], single) <= tolerance);
      CHECK(state_difference<1>(nets[k], single) <= tolerance);
      CHECK(nets[k] == nets[0]);  // bit-identical across ranks, running statistics too
      CHECK(histories[k].epochs.back().evaluation_correct ==
            expected.epochs.back().evaluation_correct);
      // 2 agreement sums, the parameters, the running statistics; per step the
      // gradients and BatchNorm's 3 sums; one per epoch.
      CHECK(calls[k] == 4 + 3 * (21 * 4 + 1));
    }
  };
  check(BnNet{}, bp::PlainSgd{}, 2, 0.5, 1e-10);
  check(BnNet{}, bp::PlainSgd{}, 3, 0.5, 1e-10);
  // The first layer's bias gradient is zero up to rounding (the normalization removes
  // any shift), and Adam scales that rounding up to steps of eta: a looser tolerance.
  check(BnNet{}, bp::Adam{}, 2, 0.01, 1e-6);
  check(Bn2dNet{}, bp::PlainSgd{}, 3, 0.5, 1e-10);
  check(Bn2dNet{}, bp::Momentum{.mu = 0.9}, 2, 0.2, 1e-10);
}

TEST_CASE("data-parallel sgd with BatchNorm: shards, too-small batches, failing ranks",
          "[training][parallel]") {
  SECTION("uneven shards, one with steps of no samples: the ranks stay identical") {
    const auto train = blobs<double>(155, 23);
    std::vector<BnNet> nets{BnNet{3}, BnNet{4}};
    const auto errors = on_ranks(2, [&](int r, ThreadExchange& ex) {
      const auto mine = r == 0 ? train.slice(0, 150) : train.slice(150, 5);  // 8 steps
      nets[static_cast<std::size_t>(r)].sgd(
          mine, {.epochs = 4, .mini_batch_size = 20, .eta = 0.5, .on_epoch = bp::quiet}, nullptr,
          bp::PlainSgd{}, ex, bp::DataLayout::sharded);
    });
    REQUIRE(errors[0].empty());
    REQUIRE(errors[1].empty());
    CHECK(nets[0] == nets[1]);
    CHECK_FALSE(nets[0].layer<1>().running_mean().isZero());  // the statistics moved
  }
  SECTION("a global mini-batch of one sample throws on every rank, as in one process") {
    const auto train = blobs<double>(201, 24);  // the last batch of 10 has one sample
    const bp::SgdOptions o{.epochs = 1, .mini_batch_size = 10, .eta = 0.5, .on_epoch = bp::quiet};
    BnNet single{1};
    CHECK_THROWS_WITH(single.sgd(train, o), Contains("at least two values per channel"));
    const auto errors = on_ranks(2, [&](int, ThreadExchange& ex) {
      BnNet net{1};
      net.sgd(train, o, nullptr, bp::PlainSgd{}, ex);
    });
    for (const auto& e : errors) {
      CHECK_THAT(e, Contains("mini-batch 21: BatchNorm: a training pass needs at least two "
                             "values per channel; the global mini-batch (over all processes) "
                             "has 1"));
    }
  }
  SECTION("a rank that failed before a step's statistics: the others do not wait for it") {
    const auto train = blobs<double>(100, 25);
    const auto errors = on_ranks(2, [&](int r, ThreadExchange& ex) {
      Bn2dNet net{1};
      bp::SgdOptions o{.epochs = 1, .mini_batch_size = 10, .eta = 0.5, .on_epoch = bp::quiet};
      o.on_batch = [r](const bp::BatchProgress& p) {
        if (r == 1 && p.samples_done >= 40) throw std::runtime_error("disk full");
      };
      net.sgd(train, o, nullptr, bp::PlainSgd{}, ex);
    });
    CHECK_THAT(errors[0],
               Contains("rank 1 failed (reported at the exchange of epoch 1, mini-batch 5)"));
    CHECK_THAT(errors[1],
               Contains("rank 1 failed in on_batch after epoch 1, mini-batch 4: disk full"));
  }
}

TEST_CASE("sgd's sparse first layer equals the dense one", "[training][sparse]") {
  // Inputs that are 80% zeros (one all-zero sample too), like MNIST's pixels.
  bp::Dataset<double> train = blobs<double>(157, 11);
  const auto keep = bptest::random_matrix<double>(6, 157, 12, 0.0, 1.0);
  train.inputs = (keep.array() < 0.2).select(train.inputs, 0.0);
  train.inputs.col(3).setZero();
  using Net = bp::BasicNetwork<double, bp::Dense<6, 130, bp::Sigmoid>,
                               bp::DropoutDense<130, 5, bp::ReLU, std::ratio<1, 5>>,
                               bp::Dense<5, 3, bp::Sigmoid>>;
  using Small = bp::BasicNetwork<double, bp::Dense<6, 8, bp::Tanh>, bp::Dense<8, 3, bp::Sigmoid>>;
  auto compare = [&](auto sparse, auto dense, bp::SgdOptions o) {
    o.sparse_input_density = 0.5;
    sparse.sgd(train, o);
    o.sparse_input_density = 0.0;
    dense.sgd(train, o);
    CHECK(bptest::max_parameter_difference(sparse, dense) <= 1e-12);
    CHECK(bptest::max_parameter_difference(sparse, decltype(sparse){4}) > 1e-3);  // it trained
  };
  const bp::SgdOptions o{.epochs = 4, .mini_batch_size = 10, .eta = 0.5, .on_epoch = bp::quiet};
  compare(Small{4}, Small{4}, o);  // fixed-size column path (8 outputs)
  compare(Net{4}, Net{4}, o);      // blocks of rows (80 and 50 of 130 outputs), with dropout
  auto reg = o;
  reg.lambda = 0.5;
  reg.lambda1 = 0.1;
  compare(Small{4}, Small{4}, reg);
}

TEST_CASE("sgd's sparse first layer equals the dense one in float, through the vector kernels",
          "[training][sparse]") {
  // 50 inputs (three 16-lane chunks and a partial one), 85% zeros; first layers of 7,
  // 16, 30 and 100 outputs cover the kernels' masked, exact, partial and wide cases,
  // 300 the blocks of rows of wider layers (112, 112 and 76 rows).
  bp::Dataset<float> train;
  train.inputs = bptest::random_matrix<float>(50, 233, 31, -5.6, 1.0).cwiseMax(0.0f);
  train.inputs.col(7).setZero();
  train.labels.resize(233);
  for (Eigen::Index i = 0; i < 233; ++i) train.labels(i) = train.inputs(3, i) > 0 ? 1 : i % 3;
  train.targets = bp::one_hot<float>(train.labels, 3);
  const bp::SgdOptions o{.epochs = 3, .mini_batch_size = 10, .eta = 0.5, .on_epoch = bp::quiet};
  auto compare = [&]<class Net>(Net sparse, Net dense) {
    auto options = o;
    options.sparse_input_density = 0.5;
    sparse.sgd(train, options);
    options.sparse_input_density = 0.0;
    dense.sgd(train, options);
    // Same maths in another summation order: float rounding only.
    CHECK(bptest::max_parameter_difference(sparse, dense) <= 2e-5);
    CHECK(bptest::max_parameter_difference(sparse, Net{4}) > 1e-3);  // it trained
  };
  compare(bp::Network<bp::Dense<50, 7, bp::Sigmoid>, bp::Dense<7, 3, bp::Sigmoid>>{4},
          bp::Network<bp::Dense<50, 7, bp::Sigmoid>, bp::Dense<7, 3, bp::Sigmoid>>{4});
  compare(bp::Network<bp::Dense<50, 16, bp::Sigmoid>, bp::Dense<16, 3, bp::Sigmoid>>{4},
          bp::Network<bp::Dense<50, 16, bp::Sigmoid>, bp::Dense<16, 3, bp::Sigmoid>>{4});
  compare(bp::Network<bp::Dense<50, 30, bp::Sigmoid>, bp::Dense<30, 3, bp::Sigmoid>>{4},
          bp::Network<bp::Dense<50, 30, bp::Sigmoid>, bp::Dense<30, 3, bp::Sigmoid>>{4});
  compare(bp::Network<bp::Dense<50, 100, bp::Sigmoid>, bp::Dense<100, 3, bp::Sigmoid>>{4},
          bp::Network<bp::Dense<50, 100, bp::Sigmoid>, bp::Dense<100, 3, bp::Sigmoid>>{4});
  compare(bp::Network<bp::Dense<50, 300, bp::Sigmoid>, bp::Dense<300, 3, bp::Sigmoid>>{4},
          bp::Network<bp::Dense<50, 300, bp::Sigmoid>, bp::Dense<300, 3, bp::Sigmoid>>{4});
  // 160 rows: blocks of a wider layer on sgd's aligned (unpadded) copy of the weights.
  compare(bp::Network<bp::Dense<50, 160, bp::Sigmoid>, bp::Dense<160, 3, bp::Sigmoid>>{4},
          bp::Network<bp::Dense<50, 160, bp::Sigmoid>, bp::Dense<160, 3, bp::Sigmoid>>{4});

  SECTION("regularised, with a progress callback, and diverging") {
    // With AVX-512, plain SGD on the sparse path trains a copy of the first layer's
    // weights padded to whole vectors (7 -> 16, 30 -> 32, 100 -> 112 rows), except
    // while on_batch is set; L2 and L1 then act on the copy.
    using Net = bp::Network<bp::Dense<50, 30, bp::Sigmoid>, bp::Dense<30, 3, bp::Sigmoid>>;
    auto options = o;
    options.lambda = 2.0;
    options.lambda1 = 0.5;
    options.sparse_input_density = 0.5;
    Net padded{4}, callback{4}, dense{4};
    padded.sgd(train, options);
    int batches = 0;
    options.on_batch = [&](const bp::BatchProgress&) { ++batches; };
    callback.sgd(train, options);
    CHECK(batches == 3 * 24);
    CHECK(bptest::max_parameter_difference(padded, callback) <= 1e-6);
    options.on_batch = nullptr;
    options.sparse_input_density = 0.0;
    dense.sgd(train, options);
    CHECK(bptest::max_parameter_difference(padded, dense) <= 2e-5);
    CHECK(bptest::max_parameter_difference(padded, Net{4}) > 1e-3);

    // A linear first layer and a huge eta: the weights overflow within an epoch.
    using Linear = bp::Network<bp::Dense<50, 30, bp::Identity>, bp::Dense<30, 3, bp::Identity>>;
    Linear net{4};
    const Linear before = net;
    auto reckless = o;
    reckless.eta = 1e6;
    reckless.sparse_input_density = 0.5;
    CHECK_THROWS_AS(net.sgd(train, reckless), bp::DivergenceError);
    CHECK(net == before);  // the start of epoch 1, not the padded copy's overflowed weights
    reckless.on_divergence = bp::SgdOptions::OnDivergence::keep_going;
    CHECK_NOTHROW(net.sgd(train, reckless));
    CHECK_FALSE(net.parameters_finite());  // the padded copy's weights were copied back
    CHECK_FALSE(bp::detail::all_finite(net.layer<0>().weights()));
  }

  SECTION("NaN and Inf in any chunk are rejected before training") {
    for (const float bad :
         {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
          -std::numeric_limits<float>::infinity()}) {
      for (const Eigen::Index row : {Eigen::Index{0}, Eigen::Index{17}, Eigen::Index{49}}) {
        auto data = train;
        data.inputs(row, 100) = bad;
        bp::Network<bp::Dense<50, 30, bp::Sigmoid>, bp::Dense<30, 3, bp::Sigmoid>> net{4};
        const auto before = net;
        auto options = o;
        options.sparse_input_density = 0.5;
        CHECK_THROWS_WITH(net.sgd(data, options), Contains("NaN or Inf"));
        CHECK(net == before);
      }
    }
  }
}

TEST_CASE("sgd's sparse first layer gives the same parameters on 1 and 2 Eigen threads",
          "[training][sparse][threads]") {
  // With OpenMP (test_training links it with g++) and a batch of enough work (128
  // samples x ~90 nonzeros x 100 or 300 outputs here), the sparse first layer runs on
  // Eigen's threads: the forward sums by blocks of rows (300 outputs) or by samples
  // (100), the update by ranges of columns. Each coefficient sees the same operations
  // in the same order either way, so the parameters must be bit-identical. (Eigen's
  // own parallel GEMM of the later 3 x 128 x 300 products splits the result among the
  // threads and keeps each coefficient's sum unchanged.)
  bp::Dataset<float> train;
  train.inputs = bptest::random_matrix<float>(200, 640, 41, -1.2, 1.0).cwiseMax(0.0f);
  train.labels.resize(640);
  for (Eigen::Index i = 0; i < 640; ++i) train.labels(i) = train.inputs(5, i) > 0 ? 2 : i % 2;
  train.targets = bp::one_hot<float>(train.labels, 3);
  auto check = [&]<class Net>(Net initial) {
    auto train_on = [&](int threads, bp::SgdOptions o, auto optimizer) {
      const int before = Eigen::nbThreads();
      Eigen::setNbThreads(threads);
#if defined(_OPENMP)
      CHECK(Eigen::nbThreads() == threads);
#endif
      Net net = initial;
      try {
        net.sgd(train, o, nullptr, optimizer);
      } catch (...) {
        Eigen::setNbThreads(before);
        throw;
      }
      Eigen::setNbThreads(before);
      return net;
    };
    bp::SgdOptions o{.epochs = 2,
                     .mini_batch_size = 128,
                     .eta = 0.5,
                     .on_epoch = bp::quiet,
                     .sparse_input_density = 0.5};
    const Net one = train_on(1, o, bp::PlainSgd{});
    CHECK(train_on(2, o, bp::PlainSgd{}) == one);
    CHECK(bptest::max_parameter_difference(one, initial) > 1e-3);  // it trained
    o.sparse_input_density = 0.0;
    CHECK(bptest::max_parameter_difference(train_on(1, o, bp::PlainSgd{}), one) <= 2e-5);
    // Other optimizers: the gradient goes to a buffer first.
    o.sparse_input_density = 0.5;
    CHECK(train_on(2, o, bp::Momentum{0.9}) == train_on(1, o, bp::Momentum{0.9}));
  };
  check(bp::Network<bp::Dense<200, 300, bp::Sigmoid>, bp::Dense<300, 3, bp::Sigmoid>>{9});
  check(bp::Network<bp::Dense<200, 100, bp::Sigmoid>, bp::Dense<100, 3, bp::Sigmoid>>{9});
}

namespace {
/// A regression data set: y = sum of the inputs, plus a little of their product.
bp::Dataset<double> regression_data(Eigen::Index n, std::uint64_t seed) {
  bp::Dataset<double> d;
  d.inputs = bptest::random_matrix<double>(3, n, seed);
  d.targets = d.inputs.colwise().sum() + 0.3 * d.inputs.row(0).cwiseProduct(d.inputs.row(1));
  return d;
}
}  // namespace

TEST_CASE("evaluate and predict refuse what they cannot answer", "[training][metrics]") {
  using Reg = bp::BasicNetwork<double, bp::Dense<3, 4, bp::Tanh>, bp::Dense<4, 1, bp::Identity>>;
  const Reg reg{1};
  const auto data = regression_data(50, 2);
  Eigen::VectorXi zeros = Eigen::VectorXi::Zero(50);
  REQUIRE_THROWS_WITH(
      reg.evaluate(data.inputs, zeros),
      Contains("evaluate: the network has a single output") && Contains("regression_metrics"));
  REQUIRE_THROWS_AS(reg.predict(data.inputs), bp::ValueError);

  using Cls = bp::Network<bp::Dense<2, 4, bp::Tanh>, bp::Dense<4, 3, bp::Softmax>>;
  const Cls net{3};
  const Eigen::MatrixXf x = bptest::random_matrix<float>(2, 20, 4);
  const Eigen::VectorXi predicted = net.predict(x);
  const Eigen::MatrixXf out = net.feedforward(x);
  for (Eigen::Index c = 0; c < 20; ++c) {
    Eigen::Index arg = 0;
    out.col(c).maxCoeff(&arg);
    REQUIRE(predicted(c) == arg);
  }
  REQUIRE(net.evaluate(x, predicted) == 20);
  Eigen::VectorXi labels = predicted;
  labels(7) = 3;  // one past the last class
  REQUIRE_THROWS_WITH(net.evaluate(x, labels),
                      Contains("evaluate: label 3 of sample 7 is outside [0, 3)"));
  labels(7) = -1;
  REQUIRE_THROWS_AS(net.evaluate(x, labels), bp::ValueError);
  REQUIRE_THROWS_AS(net.evaluate(x, labels.head(19)), bp::ShapeError);
  REQUIRE_THROWS_AS(net.predict(Eigen::MatrixXf(3, 2)), bp::ShapeError);

  bp::Dataset<float> d;
  d.inputs = x;
  d.labels = predicted;
  d.targets = bp::one_hot<float>(d.labels, 3);
  const bp::ConfusionMatrix m = bp::confusion_matrix(net, d);
  REQUIRE(m.correct() == 20);
  REQUIRE(m.classes() == 3);
  d.labels.resize(0);
  REQUIRE_THROWS_WITH(bp::confusion_matrix(net, d), Contains("has no labels"));
}

TEST_CASE("sgd's default cost fits the output layer", "[training][cost]") {
  using Soft = bp::BasicNetwork<double, bp::Dense<2, 5, bp::Tanh>, bp::Dense<5, 3, bp::Softmax>>;
  bp::Dataset<double> data;
  data.inputs = bptest::random_matrix<double>(2, 40, 5);
  data.labels.resize(40);
  for (int i = 0; i < 40; ++i)
    data.labels(i) = data.inputs(0, i) > 0.3 ? 2 : (data.inputs(1, i) > 0 ? 1 : 0);
  data.targets = bp::one_hot<double>(data.labels, 3);
  const bp::SgdOptions o{.epochs = 3, .mini_batch_size = 8, .eta = 0.5, .on_epoch = bp::quiet};
  Soft a{9}, b{9}, c{9};
  a.sgd(data, o);
  b.sgd<bp::LogLikelihoodCost>(data, o);
  c.sgd<bp::QuadraticCost>(data, o);  // still possible when asked for by name
  REQUIRE(a == b);
  REQUIRE(!(a == c));
  static_assert(std::is_same_v<bp::detail::resolve_cost_t<bp::DefaultCost, bp::Softmax>,
                               bp::LogLikelihoodCost>);
  static_assert(
      std::is_same_v<bp::detail::resolve_cost_t<bp::DefaultCost, bp::Sigmoid>, bp::QuadraticCost>);
  static_assert(std::is_same_v<bp::detail::resolve_cost_t<bp::CrossEntropyCost, bp::Sigmoid>,
                               bp::CrossEntropyCost>);
  using Sig = bp::BasicNetwork<double, bp::Dense<2, 5, bp::Tanh>, bp::Dense<5, 3, bp::Sigmoid>>;
  Sig s{9}, q{9};
  s.sgd(data, o);
  q.sgd<bp::QuadraticCost>(data, o);
  REQUIRE(s == q);
}

TEST_CASE("sgd reports regression metrics for data without labels", "[training][regression]") {
  using Reg = bp::BasicNetwork<double, bp::Dense<3, 16, bp::Tanh>, bp::Dense<16, 1, bp::Identity>>;
  const auto train = regression_data(400, 6);
  const auto test = regression_data(100, 7);
  Reg net{4, bp::Init::scaled_normal};
  std::vector<bp::EpochReport> seen;
  const auto history = net.sgd(train,
                               {.epochs = 30,
                                .mini_batch_size = 10,
                                .eta = 0.02,
                                .monitor_training_accuracy = true,
                                .on_epoch = [&](const bp::EpochReport& r) { seen.push_back(r); }},
                               &test);
  REQUIRE(seen.size() == 30);
  for (const auto& r : history.epochs) {
    REQUIRE(r.evaluation_regression.has_value());
    REQUIRE(r.training_regression.has_value());
    REQUIRE(!r.evaluation_accuracy.has_value());
    REQUIRE(r.evaluation_correct == -1);
  }
  const auto last = *history.epochs.back().evaluation_regression;
  const auto now = bp::regression_metrics(net, test);
  REQUIRE(last.rmse == now.rmse);
  REQUIRE(last.r2 == now.r2);
  REQUIRE(last.samples == 100);
  REQUIRE(now.r2 > 0.9);
  REQUIRE(history.epochs.back().evaluation_regression->rmse <
          history.epochs.front().evaluation_regression->rmse);
  std::ostringstream line;
  bp::print_epoch(history.epochs.back(), line);
  REQUIRE_THAT(line.str(),
               StartsWith("Epoch 30: RMSE ") && Contains("R^2") && Contains("training RMSE"));
  REQUIRE_THAT(bp::ProgressReporter::summary(history.epochs.back()), Contains(": RMSE "));
  std::ostringstream csv;
  history.write_csv(csv);
  const std::string text = csv.str();
  REQUIRE_THAT(text, Contains(",evaluation_rmse,evaluation_mae,evaluation_r2\n"));
  std::istringstream rows(text);
  std::string header, row;
  std::getline(rows, header);
  std::getline(rows, row);
  REQUIRE(std::count(row.begin(), row.end(), ',') == std::count(header.begin(), header.end(), ','));
  REQUIRE_THROWS_AS(
      bp::regression_metrics(net, bp::Dataset<double>{train.inputs, train.inputs, {}}),
      bp::ShapeError);
}

TEST_CASE("sgd's default report is short for long runs", "[training]") {
  for (int epochs : {1, 30, 50}) {
    for (int e = 1; e <= epochs; ++e) REQUIRE(bp::prints_epoch_by_default(e, epochs));
  }
  for (int epochs : {51, 300, 1000, 12345}) {
    int lines = 0;
    for (int e = 1; e <= epochs; ++e) lines += bp::prints_epoch_by_default(e, epochs);
    INFO(epochs);
    REQUIRE(lines >= 20);
    REQUIRE(lines <= 27);
    REQUIRE(bp::prints_epoch_by_default(1, epochs));
    REQUIRE(bp::prints_epoch_by_default(epochs, epochs));
  }
  // What sgd itself prints to std::cout by default.
  const auto data = xor_data<double>();
  bp::BasicNetwork<double, bp::Dense<2, 3, bp::Sigmoid>, bp::Dense<3, 1, bp::Sigmoid>> net{1};
  std::ostringstream captured;
  auto* old = std::cout.rdbuf(captured.rdbuf());
  net.sgd(data, {.epochs = 300, .mini_batch_size = 4, .eta = 1.0});
  std::cout.rdbuf(old);
  const std::string text = captured.str();
  REQUIRE(std::count(text.begin(), text.end(), '\n') == 26);  // 1, 12, 24, ..., 300
  REQUIRE_THAT(text, StartsWith("Epoch 1 complete") && Contains("Epoch 300 complete"));
}

namespace {

// An identity activation that, each time the network applies it, multiplies two tiny
// floats (1e-20 * 1e-20 = 1e-40, a subnormal) and remembers whether the result was
// flushed to zero: it sees the floating-point state the library computes in.
struct ProbeIdentity {
  static constexpr std::string_view name = "probe_identity";
  static inline int flushed = 0;
  static inline int kept = 0;
  static void probe() {
    volatile float tiny = 1e-20f;
    const float product = tiny * tiny;
    (product == 0.0f ? flushed : kept) += 1;
  }
  template <class T>
  static T value(T z) {
    probe();
    return z;
  }
  template <class T>
  static T derivative(T, T) {
    return T(1);
  }
};

bool caller_flushes() {
  volatile float tiny = 1e-20f;
  return tiny * tiny == 0.0f;
}

}  // namespace

TEST_CASE("training and inference flush subnormals; the caller's setting is restored",
          "[training][subnormals]") {
  using Net = bp::Network<bp::Dense<3, 4, ProbeIdentity>, bp::Dense<4, 2, bp::Sigmoid>>;
  Net net{1};
  bp::Dataset<float> data;
  data.inputs = Eigen::MatrixXf::Random(3, 20);
  data.targets = Eigen::MatrixXf::Random(2, 20).cwiseAbs();
  REQUIRE_FALSE(caller_flushes());  // the C++ default: subnormals are kept

  const auto run = [&](bool throw_in_callback) {
    ProbeIdentity::flushed = ProbeIdentity::kept = 0;
    int callback_flushed = 0, batch_callback_flushed = 0;
    bp::SgdOptions o{.epochs = 2, .mini_batch_size = 5, .eta = 0.1};
    o.on_epoch = [&](const bp::EpochReport&) {
      callback_flushed += caller_flushes();
      if (throw_in_callback) throw std::runtime_error("stop");
    };
    o.on_batch = [&](const bp::BatchProgress&) { batch_callback_flushed += caller_flushes(); };
    if (throw_in_callback) {
      REQUIRE_THROWS_WITH(net.sgd(data, o), "stop");
    } else {
      (void)net.sgd(data, o);
    }
    REQUIRE(callback_flushed == 0);
    REQUIRE(batch_callback_flushed == 0);
    REQUIRE_FALSE(caller_flushes());
  };
  SECTION("sgd, its callbacks and an exception out of a callback") {
    run(false);
    CHECK(ProbeIdentity::flushed > 0);
    CHECK(ProbeIdentity::kept == 0);
    run(true);
    CHECK(ProbeIdentity::flushed > 0);
    CHECK(ProbeIdentity::kept == 0);
  }
  SECTION("feedforward, evaluate, backprop, gradient and update_mini_batch") {
    ProbeIdentity::flushed = ProbeIdentity::kept = 0;
    (void)net.feedforward(data.inputs);
    (void)net.feedforward(Eigen::VectorXf(data.inputs.col(0)));
    (void)net.evaluate(data.inputs, Eigen::VectorXi::Zero(20));
    (void)net.backprop(data.inputs.col(0), data.targets.col(0));
    (void)net.gradient(data.inputs, data.targets);
    net.update_mini_batch(data.inputs, data.targets, 0.1);
    CHECK(ProbeIdentity::flushed > 0);
    CHECK(ProbeIdentity::kept == 0);
    REQUIRE_FALSE(caller_flushes());
  }
  SECTION("set_flush_subnormals(false) keeps them everywhere") {
    REQUIRE(bp::flush_subnormals());
    bp::set_flush_subnormals(false);
    ProbeIdentity::flushed = ProbeIdentity::kept = 0;
    (void)net.sgd(data, {.epochs = 1, .mini_batch_size = 5, .eta = 0.1, .on_epoch = bp::quiet});
    (void)net.feedforward(data.inputs);
    bp::set_flush_subnormals(true);
    CHECK(ProbeIdentity::kept > 0);
    CHECK(ProbeIdentity::flushed == 0);
  }
#if BACKPROP_DETAIL_FP_CONTROL
  SECTION("a caller that flushes itself keeps flushing, in callbacks too") {
    const auto before = bp::detail::read_fp_control();
    bp::detail::write_fp_control(before | bp::detail::fp_flush_bits);
    int callback_flushed = 0;
    (void)net.sgd(
        data,
        {.epochs = 1, .mini_batch_size = 5, .eta = 0.1, .on_epoch = [&](const bp::EpochReport&) {
           callback_flushed += caller_flushes();
         }});
    const bool still = caller_flushes();
    bp::detail::write_fp_control(before);
    CHECK(callback_flushed == 1);
    CHECK(still);
  }
#endif
}

TEMPLATE_TEST_CASE("update_mini_batch and gradient on sparse inputs equal the products, any stride",
                   "[training][sparse]", float, double) {
  using Matrix = Eigen::Matrix<TestType, Eigen::Dynamic, Eigen::Dynamic>;
  const bptest::InstructionSetCap cap(
      GENERATE(bp::InstructionSet::portable, bp::InstructionSet::avx2, bp::InstructionSet::avx512));
  if (!cap.runs()) return;
  INFO("instruction set " << cap.name());
  bp::Rng rng(11);
  // 80% zeros, as MNIST's pixels: the sparse first layer takes these batches. The
  // backing matrix has 7 extra rows, so a Map sees columns 57 apart.
  Matrix tall = Matrix::Zero(57, 40);
  for (Eigen::Index i = 0; i < tall.size(); ++i) {
    if (rng.uniform() < 0.2) tall(i) = static_cast<TestType>(rng.normal());
  }
  const Matrix X = tall.topRows(50);
  const Matrix Y = Matrix::Random(3, 40).cwiseAbs();
  const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-12;
  // First layers of 8 to 48 outputs: the weight update of whole vectors, of a plain
  // loop below one vector, and of full vectors plus one overlapping the last (AVX-512:
  // 17, 30, 31, 40; AVX2: 17, 30, 31), on the unpadded weights.
  auto widths = [&]<int Out>() {
    INFO("first layer 50 x " << Out);
    using Wide =
        bp::BasicNetwork<TestType, bp::Dense<50, Out, bp::Sigmoid>, bp::Dense<Out, 3, bp::Sigmoid>>;
    Wide block{5}, strided{5}, products{5};
    for (Eigen::Index k = 0; k < 40; k += 10) {
      block.update_mini_batch(X.middleCols(k, 10), Y.middleCols(k, 10), 0.5);
      const Eigen::Map<const Matrix, 0, Eigen::OuterStride<>> view(tall.data() + k * 57, 50, 10,
                                                                   Eigen::OuterStride<>(57));
      strided.update_mini_batch(view, Y.middleCols(k, 10), 0.5);
      // An expression without direct access goes through the products.
      products.update_mini_batch((X.middleCols(k, 10).array() * TestType(1)).matrix(),
                                 Y.middleCols(k, 10), 0.5);
    }
    bp::detail::for_each_index<2>([&](auto i) {
      CHECK((block.template layer<i>().weights() - products.template layer<i>().weights())
                .cwiseAbs()
                .maxCoeff() < tol);
      CHECK((block.template layer<i>().biases() - products.template layer<i>().biases())
                .cwiseAbs()
                .maxCoeff() < tol);
      CHECK(block.template layer<i>().weights() == strided.template layer<i>().weights());
      CHECK(block.template layer<i>().biases() == strided.template layer<i>().biases());
    });
    CHECK(block.template layer<0>().weights() != Wide{5}.template layer<0>().weights());
  };
  widths.template operator()<8>();
  widths.template operator()<17>();
  widths.template operator()<30>();
  widths.template operator()<31>();
  widths.template operator()<40>();
  widths.template operator()<48>();

  using Net =
      bp::BasicNetwork<TestType, bp::Dense<50, 8, bp::Sigmoid>, bp::Dense<8, 3, bp::Sigmoid>>;
  Net block{5};
  // gradient takes the same path.
  // (No structured bindings: clang 14 cannot capture them in the lambda.)
  const auto sparse = block.gradient(X.leftCols(20), Y.leftCols(20));
  const auto dense =
      block.gradient((X.leftCols(20).array() * TestType(1)).matrix(), Y.leftCols(20));
  bp::detail::for_each_index<2>([&](auto i) {
    const auto& sparse_w = std::get<i>(std::get<1>(sparse));
    const auto& dense_w = std::get<i>(std::get<1>(dense));
    CHECK((sparse_w - dense_w).cwiseAbs().maxCoeff() < tol);
    CHECK(
        (std::get<i>(std::get<0>(sparse)) - std::get<i>(std::get<0>(dense))).cwiseAbs().maxCoeff() <
        tol);
    CHECK(dense_w.cwiseAbs().maxCoeff() > 0);
  });
}
