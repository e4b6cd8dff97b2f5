// A layer written outside backprop, only against the public layer concept
// (examples/scale_shift.hpp): gradients, training with every optimizer, save/load.
#include <backprop/backprop.hpp>

#include <catch2/catch.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../../examples/scale_shift.hpp"
#include "../support/test_support.hpp"

namespace {

namespace bp = backprop;

static_assert(bp::Layer<user::ScaleShift<5>>);
static_assert(bp::LayerObject<user::ScaleShift<5>::Instance<float>, float>);
static_assert(!bp::Layer<int>);

template <class T>
using Hidden = bp::BasicNetwork<T, bp::Dense<4, 5, bp::Tanh>, user::ScaleShift<5>,
                                bp::Dense<5, 3, bp::Sigmoid>>;
template <class T>
using InputFirst = bp::BasicNetwork<T, user::ScaleShift<4>, bp::Dense<4, 6, bp::ReLU>,
                                    bp::Dense<6, 3, bp::Softmax>>;

static_assert(Hidden<float>::parameter_count() == (4 + 1) * 5 + 2 * 5 + (5 + 1) * 3);

template <class Net>
Net perturbed(std::uint64_t seed) {
  return bptest::perturbed<Net>(seed);
}

/// A 3-class problem the networks can learn: the class is the argmax of three fixed
/// linear functions of 4 inputs.
template <class T>
bp::Dataset<T> toy_data(Eigen::Index n, std::uint64_t seed) {
  bp::Dataset<T> d;
  d.inputs = bptest::random_matrix<T>(4, n, seed, -1.0, 1.0);
  const Eigen::Matrix<T, 3, 4> score{{1, -1, 0.5, 0}, {-0.5, 1, 1, -1}, {0, 0.3, -1, 1}};
  d.targets.setZero(3, n);
  d.labels.resize(n);
  for (Eigen::Index j = 0; j < n; ++j) {
    Eigen::Index k = 0;
    (score * d.inputs.col(j)).maxCoeff(&k);
    d.labels(j) = static_cast<int>(k);
    d.targets(k, j) = T(1);
  }
  return d;
}

}  // namespace

TEST_CASE("A user-written layer passes the public gradient checker", "[user_layer][grad]") {
  const auto X = bptest::random_matrix<double>(4, 6, 1, -2.0, 2.0);
  SECTION("as a hidden layer, quadratic cost") {
    const auto net = perturbed<Hidden<double>>(3);
    const auto Y = bptest::random_distribution<double>(3, 6, 2);
    const auto r = bp::testing::check_gradients(net, X, Y);
    INFO("worst: " << r.worst << " error " << r.max_error);
    CHECK(r.checked == Hidden<double>::parameter_count());
    CHECK(r.passed(1e-7));
  }
  SECTION("as the first layer, softmax with log-likelihood") {
    const auto net = perturbed<InputFirst<double>>(4);
    const auto Y = bptest::random_distribution<double>(3, 6, 5);
    const auto r = bp::testing::check_gradients<bp::LogLikelihoodCost>(net, X, Y);
    INFO("worst: " << r.worst << " error " << r.max_error);
    CHECK(r.checked == InputFirst<double>::parameter_count());
    CHECK(r.passed(1e-7));
  }
}

namespace {
/// The scale-shift layer with a bug in its backward pass (every gradient doubled).
template <int N>
struct BrokenScaleShift {
  static constexpr int inputs = N;
  static constexpr int outputs = N;
  template <class T>
  struct Instance : user::ScaleShift<N>::template Instance<T> {
    using Base = typename user::ScaleShift<N>::template Instance<T>;
    using typename Base::Matrix;
    using typename Base::Workspace;
    template <class X, class Sink>
    void backward(const X& x, Workspace& ws, Matrix& g, Matrix* dx, Sink& sink) {
      g *= T(2);
      Base::backward(x, ws, g, dx, sink);
    }
  };
};
}  // namespace

TEST_CASE("The gradient checker catches a wrong user-layer gradient", "[user_layer][grad]") {
  using Broken = bp::BasicNetwork<double, bp::Dense<4, 5, bp::Tanh>, BrokenScaleShift<5>,
                                  bp::Dense<5, 3, bp::Sigmoid>>;
  Broken net{6, bp::Init::xavier};
  const auto X = bptest::random_matrix<double>(4, 3, 7);
  const auto Y = bptest::random_distribution<double>(3, 3, 8);
  const auto r = bp::testing::check_gradients(net, X, Y);
  INFO("worst: " << r.worst << " error " << r.max_error);
  CHECK_FALSE(r.passed(1e-3));
}

TEST_CASE("update_mini_batch on a user layer is w -= eta/m * gradient", "[user_layer]") {
  auto net = perturbed<Hidden<double>>(9);
  const auto X = bptest::random_matrix<double>(4, 7, 10);
  const auto Y = bptest::random_distribution<double>(3, 7, 11);
  auto copy = net;
  const auto grads = copy.gradient(X, Y);
  net.update_mini_batch(X, Y, 0.5);
  bp::detail::for_each_index<3>([&](auto i) {
    const auto w = (copy.layer<i>().weights() - 0.5 / 7 * std::get<i>(grads.second)).eval();
    const auto b = (copy.layer<i>().biases() - 0.5 / 7 * std::get<i>(grads.first)).eval();
    CHECK(bptest::relative_difference(net.layer<i>().weights(), w) < 1e-14);
    CHECK(bptest::relative_difference(net.layer<i>().biases(), b) < 1e-14);
  });
}

TEMPLATE_TEST_CASE("sgd trains a network with a user layer with every optimizer",
                   "[user_layer][training]", float, double) {
  const auto train = toy_data<TestType>(600, 12);
  const auto test = toy_data<TestType>(300, 13);
  const bp::SgdOptions options{
      .epochs = 30, .mini_batch_size = 10, .eta = 0.1, .on_epoch = [](const bp::EpochReport&) {}};
  auto run = [&](const auto& optimizer, double eta) {
    InputFirst<TestType> net{14, bp::Init::he};
    const InputFirst<TestType> before = net;
    const long long untrained = net.evaluate(test.inputs, test.labels);
    bp::SgdOptions o = options;
    o.eta = eta;
    const auto h = net.template sgd<bp::LogLikelihoodCost>(train, o, &test, optimizer);
    CHECK(h.epochs.size() == 30);
    const long long correct = net.evaluate(test.inputs, test.labels);
    INFO("untrained " << untrained << ", trained " << correct << " of 300");
    CHECK(correct >= 255);  // 85%; untrained about 33%
    CHECK(correct > untrained);
    // The user layer's own parameters were trained too.
    CHECK(net.template layer<0>().weights() != before.template layer<0>().weights());
    CHECK(net.template layer<0>().biases() != before.template layer<0>().biases());
  };
  SECTION("PlainSgd") { run(bp::PlainSgd{}, 0.5); }
  SECTION("Momentum") { run(bp::Momentum{}, 0.05); }
  SECTION("Adam") { run(bp::Adam{}, 0.01); }
  SECTION("L2 and L1 shrink the user layer's weights (its s) too") {
    InputFirst<TestType> net{14, bp::Init::he};
    bp::SgdOptions o = options;
    o.epochs = 1;
    o.lambda = 500.0;
    net.template sgd<bp::LogLikelihoodCost>(train, o);
    CHECK(net.template layer<0>().weights().cwiseAbs().maxCoeff() < TestType(0.9));
  }
}

TEMPLATE_TEST_CASE("A network with a user layer saves and loads exactly", "[user_layer][model_io]",
                   float, double) {
  const auto net = perturbed<Hidden<TestType>>(15);
  std::stringstream file;
  net.save(file);
  Hidden<TestType> loaded{99};
  REQUIRE_FALSE(loaded == net);
  loaded.load(file);
  CHECK(loaded == net);
  const auto X = bptest::random_matrix<TestType>(4, 5, 16);
  CHECK(loaded.feedforward(X) == net.feedforward(X));

  // The record names the layer: a network with a Dense layer in its place rejects it.
  using Other = bp::BasicNetwork<TestType, bp::Dense<4, 5, bp::Tanh>, bp::Dense<5, 5, bp::Identity>,
                                 bp::Dense<5, 3, bp::Sigmoid>>;
  Other other{1};
  const Other other_before = other;
  std::stringstream again(file.str());
  CHECK_THROWS_WITH(other.load(again), Catch::Contains("user.scale_shift"));
  CHECK(other == other_before);

  // A truncated file throws and leaves the network as it was.
  const std::string bytes = file.str();
  for (std::size_t cut : {std::size_t{0}, std::size_t{20}, bytes.size() / 2, bytes.size() - 1}) {
    std::stringstream truncated(bytes.substr(0, cut));
    Hidden<TestType> target{5};
    const Hidden<TestType> target_before = target;
    CHECK_THROWS_AS(target.load(truncated), bp::ModelFormatError);
    CHECK(target == target_before);
  }
}

TEST_CASE("feedforward of one sample and of a batch agree through a user layer", "[user_layer]") {
  const auto net = perturbed<InputFirst<double>>(17);
  const auto X = bptest::random_matrix<double>(4, 9, 18);
  const Eigen::MatrixXd batch = net.feedforward(X);
  for (Eigen::Index j = 0; j < X.cols(); ++j) {
    const Eigen::VectorXd one = net.feedforward(Eigen::VectorXd(X.col(j)));
    CHECK(bptest::relative_difference(one, batch.col(j)) < 1e-14);
  }
}
