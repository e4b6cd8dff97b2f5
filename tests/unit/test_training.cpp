// Training: XOR learned, sgd history and reporting, L2 decay.
#include <algorithm>
#include <backprop/backprop.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

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
