// Network: forward pass, gradients against finite differences, the batched update
// against the per-sample algorithm, determinism, shape errors.
#include <algorithm>
#include <backprop/backprop.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "../support/test_support.hpp"

namespace bp = backprop;
using bptest::Mat;
using Catch::Matchers::Contains;
using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;

namespace {

// A user activation written element-wise: softplus, a = ln(1 + e^z), a' = sigmoid(z).
struct Softplus {
  static constexpr std::string_view name = "softplus";
  template <class T>
  static T value(T z) {
    return z > T(0) ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
  }
  template <class T>
  static T derivative(T z, T) {
    return T(1) / (T(1) + std::exp(-z));
  }
};

static_assert(bp::Activation<bp::Sigmoid> && bp::Activation<bp::Tanh> && bp::Activation<bp::ReLU> &&
              bp::Activation<bp::LeakyReLU> && bp::Activation<bp::Softmax> &&
              bp::Activation<bp::Identity> && bp::Activation<Softplus>);
static_assert(!bp::Activation<int> && !bp::Activation<bp::QuadraticCost>);
static_assert(bp::CostFor<bp::QuadraticCost, bp::Tanh>);

// An activation whose derivative is off by 10%: the checker must fail it.
struct WrongTanh {
  static constexpr std::string_view name = "wrong_tanh";
  template <class T>
  static T value(T z) {
    return std::tanh(z);
  }
  template <class T>
  static T derivative(T, T a) {
    return T(1.1) * (T(1) - a * a);
  }
};

using Seed = bp::Network<bp::Dense<784, 30, bp::Sigmoid>, bp::Dense<30, 10, bp::Sigmoid>>;
static_assert(std::is_same_v<Seed::Scalar, float>);
static_assert(Seed::inputs == 784 && Seed::outputs == 10 && Seed::num_layers == 2);
// The storage rule: parameters are dynamic Eigen matrices of the layer's shape.
static_assert(Seed::LayerParameters<0>::WeightMatrix::RowsAtCompileTime == Eigen::Dynamic);
static_assert(Seed::LayerParameters<1>::inputs == 30 && Seed::LayerParameters<1>::outputs == 10);

template <class Net>
void check_network_gradients(std::uint64_t seed) {
  using Cost = bp::QuadraticCost;
  Net net{seed, bp::Init::xavier};
  const auto X = bptest::random_matrix<double>(Net::inputs, 5, seed + 1, -2.0, 2.0);
  const auto Y = bptest::random_distribution<double>(Net::outputs, 5, seed + 2);
  const auto r = bp::testing::check_gradients<Cost>(net, X, Y);
  INFO("worst: " << r.worst << " error " << r.max_error);
  CHECK(r.checked == Net::parameter_count());
  CHECK(r.passed(1e-7));
}

}  // namespace

TEMPLATE_TEST_CASE("Forward pass matches a hand computation", "[network][forward]", float, double) {
  using Net = bp::BasicNetwork<TestType, bp::Dense<2, 2, bp::Sigmoid>, bp::Dense<2, 1, bp::Tanh>>;
  Net net{1};
  net.template layer<0>().weights() << 0.5, -1.0, 2.0, 0.25;
  net.template layer<0>().biases() << 0.1, -0.2;
  net.template layer<1>().weights() << 1.5, -0.5;
  net.template layer<1>().biases() << 0.3;
  Eigen::Matrix<TestType, 2, 1> x(0.8, -0.6);

  auto sig = [](double z) { return 1.0 / (1.0 + std::exp(-z)); };
  const double h0 = sig(0.5 * 0.8 - 1.0 * -0.6 + 0.1);
  const double h1 = sig(2.0 * 0.8 + 0.25 * -0.6 - 0.2);
  const double expected = std::tanh(1.5 * h0 - 0.5 * h1 + 0.3);
  const double tol = std::is_same_v<TestType, float> ? 1e-6 : 1e-14;

  const auto out = net.feedforward(x);
  REQUIRE(out.rows() == 1);
  CHECK_THAT(static_cast<double>(out(0)), WithinRel(expected, tol));

  // Batch form: columns are samples.
  Mat<TestType> X(2, 3);
  X << 0.8, 0.0, 1.0, -0.6, 0.0, 1.0;
  const Mat<TestType> batch = net.feedforward(X);
  REQUIRE(batch.rows() == 1);
  REQUIRE(batch.cols() == 3);
  CHECK_THAT(static_cast<double>(batch(0, 0)), WithinRel(expected, tol));
  CHECK_THAT(static_cast<double>(batch(0, 1)),
             WithinRel(std::tanh(1.5 * sig(0.1) - 0.5 * sig(-0.2) + 0.3), tol));
}

TEMPLATE_TEST_CASE("Activations are finite and correct for extreme inputs", "[activations]", float,
                   double) {
  Mat<TestType> z(4, 1);
  z << TestType(-1000), TestType(-100), TestType(100), TestType(1000);
  Mat<TestType> a(4, 1);
  bp::Sigmoid::forward(z, a);
  CHECK(a.allFinite());
  CHECK(a(0) >= TestType(0));
  CHECK(a(0) < TestType(1e-30));
  CHECK(a(3) == TestType(1));
  bp::Softmax::forward(z, a);
  CHECK(a.allFinite());
  CHECK_THAT(static_cast<double>(a.sum()), WithinAbs(1.0, 1e-6));
  CHECK(a(3) == TestType(1));
  bp::Tanh::forward(z, a);
  CHECK(a.allFinite());
  CHECK(a(0) == TestType(-1));
  // Cross-entropy of saturated outputs is large but finite.
  Mat<TestType> y(4, 1);
  y << 1, 1, 0, 0;
  Mat<TestType> s(4, 1);
  bp::Sigmoid::forward(z, s);
  CHECK(std::isfinite(bp::CrossEntropyCost::value(z, s, y)));
  CHECK(std::isfinite(bp::LogLikelihoodCost::value(z, a, y)));
}

TEST_CASE("Sigmoid matches the seed's formula in the normal range", "[activations]") {
  Mat<double> z = bptest::random_matrix<double>(50, 1, 3, -30.0, 30.0);
  Mat<double> a(50, 1);
  bp::Sigmoid::forward(z, a);
  for (Eigen::Index i = 0; i < z.size(); ++i) {
    CHECK_THAT(a(i), WithinRel(1.0 / (1.0 + std::exp(-z(i))), 1e-15));
  }
}

TEST_CASE("Every activation and cost passes the finite-difference gradient check",
          "[network][grad]") {
  SECTION("sigmoid") {
    check_network_gradients<
        bp::BasicNetwork<double, bp::Dense<4, 5, bp::Sigmoid>, bp::Dense<5, 3, bp::Sigmoid>>>(11);
  }
  SECTION("tanh") {
    check_network_gradients<
        bp::BasicNetwork<double, bp::Dense<4, 5, bp::Tanh>, bp::Dense<5, 3, bp::Tanh>>>(12);
  }
  SECTION("relu") {
    check_network_gradients<
        bp::BasicNetwork<double, bp::Dense<4, 5, bp::ReLU>, bp::Dense<5, 3, bp::ReLU>>>(13);
  }
  SECTION("leaky relu") {
    check_network_gradients<
        bp::BasicNetwork<double, bp::Dense<4, 5, bp::LeakyReLU>, bp::Dense<5, 3, bp::LeakyReLU>>>(
        14);
  }
  SECTION("identity") {
    check_network_gradients<
        bp::BasicNetwork<double, bp::Dense<4, 5, bp::Identity>, bp::Dense<5, 3, bp::Identity>>>(15);
  }
  SECTION("softmax with quadratic cost") {
    check_network_gradients<
        bp::BasicNetwork<double, bp::Dense<4, 5, bp::Softmax>, bp::Dense<5, 3, bp::Softmax>>>(16);
  }
  SECTION("user-defined element-wise activation") {
    check_network_gradients<
        bp::BasicNetwork<double, bp::Dense<4, 5, Softplus>, bp::Dense<5, 3, Softplus>>>(17);
  }
  SECTION("three layers, mixed, large dynamic layer") {
    check_network_gradients<
        bp::BasicNetwork<double, bp::Dense<20, 16, bp::Tanh>, bp::Dense<16, 7, bp::ReLU>,
                         bp::Dense<7, 4, bp::Sigmoid>>>(18);
  }
  SECTION("cross-entropy with sigmoid output") {
    using Net = bp::BasicNetwork<double, bp::Dense<4, 5, bp::Tanh>, bp::Dense<5, 3, bp::Sigmoid>>;
    Net net{19};
    const auto X = bptest::random_matrix<double>(4, 5, 20, -2.0, 2.0);
    const auto Y = bptest::random_matrix<double>(3, 5, 21, 0.0, 1.0);
    const auto r = bp::testing::check_gradients<bp::CrossEntropyCost>(net, X, Y);
    INFO(r.worst);
    CHECK(r.passed(1e-7));
  }
  SECTION("log-likelihood with softmax output") {
    using Net = bp::BasicNetwork<double, bp::Dense<4, 5, bp::ReLU>, bp::Dense<5, 3, bp::Softmax>>;
    Net net{22};
    const auto X = bptest::random_matrix<double>(4, 5, 23, -2.0, 2.0);
    const auto Y = bptest::random_distribution<double>(3, 5, 24);
    const auto r = bp::testing::check_gradients<bp::LogLikelihoodCost>(net, X, Y);
    INFO(r.worst);
    CHECK(r.passed(1e-7));
  }
}

namespace {

// The seed's backprop for a two-layer sigmoid network, written out with Eigen.
template <class Net, class X, class Y>
typename Net::Gradients seed_backprop(const Net& net, const X& x, const Y& y) {
  using V = Eigen::Matrix<typename Net::Scalar, Eigen::Dynamic, 1>;
  auto sigmoid = [](const V& z) -> V { return (1 + (-z.array()).exp()).inverse().matrix(); };
  const auto& p0 = net.template layer<0>();
  const auto& p1 = net.template layer<1>();
  const V z0 = p0.weights() * x + p0.biases();
  const V a0 = sigmoid(z0);
  const V z1 = p1.weights() * a0 + p1.biases();
  const V a1 = sigmoid(z1);
  const V d1 = ((a1 - y).array() * a1.array() * (1 - a1.array())).matrix();
  const V d0 = ((p1.weights().transpose() * d1).array() * a0.array() * (1 - a0.array())).matrix();
  typename Net::Gradients g;
  std::get<0>(g.first) = d0;
  std::get<1>(g.first) = d1;
  std::get<0>(g.second) = d0 * x.transpose();
  std::get<1>(g.second) = d1 * a0.transpose();
  return g;
}

template <class Net>
void check_backprop_against_seed(std::uint64_t seed) {
  using S = typename Net::Scalar;
  const Net net{seed};
  // Inputs with about 70% zeros (the first layer skips them) and one dense column.
  Mat<S> X = bptest::random_matrix<S>(Net::inputs, 4, seed + 1, -2.3, 1.0);
  X = X.cwiseMax(S(0));
  X.col(3) = bptest::random_matrix<S>(Net::inputs, 1, seed + 2, 0.1, 1.0);
  const Mat<S> Y = bptest::random_matrix<S>(Net::outputs, 4, seed + 3, 0.0, 1.0);
  for (Eigen::Index c = 0; c < X.cols(); ++c) {
    INFO("column " << c);
    const auto got = net.backprop(X.col(c), Y.col(c));
    const auto want = seed_backprop(net, X.col(c), Y.col(c));
    for (int i = 0; i < 2; ++i) {
      const double wd =
          i == 0 ? bptest::relative_difference(std::get<0>(got.second), std::get<0>(want.second))
                 : bptest::relative_difference(std::get<1>(got.second), std::get<1>(want.second));
      const double bd =
          i == 0 ? bptest::relative_difference(std::get<0>(got.first), std::get<0>(want.first))
                 : bptest::relative_difference(std::get<1>(got.first), std::get<1>(want.first));
      CHECK(wd <= bptest::rounding_tolerance<S>());
      CHECK(bd <= bptest::rounding_tolerance<S>());
    }
    // Zero inputs give exactly zero weight-gradient columns.
    for (Eigen::Index j = 0; j < Net::inputs; ++j) {
      if (X(j, c) == S(0)) REQUIRE(std::get<0>(got.second).col(j).isZero(0));
    }
  }
  // A strided (not contiguous) input expression gives the same result.
  const Mat<S> Xt = X.transpose();
  const auto strided = net.backprop(Xt.row(1).transpose(), Y.col(1));
  CHECK(std::get<0>(strided.second) == std::get<0>(net.backprop(X.col(1), Y.col(1)).second));
  // NaN and infinite inputs propagate as in the dense product.
  Mat<S> bad = X.col(0);
  bad(Net::inputs / 2) = std::numeric_limits<S>::quiet_NaN();
  CHECK_FALSE(std::get<0>(net.backprop(bad, Y.col(0)).first).allFinite());
  bad(Net::inputs / 2) = std::numeric_limits<S>::infinity();
  CHECK_FALSE(std::get<0>(net.backprop(bad, Y.col(0)).second).allFinite());
}

}  // namespace

TEMPLATE_TEST_CASE("backprop(x, y) equals the seed's formulas for sparse and dense inputs",
                   "[network][grad]", float, double) {
  using bp::Dense;
  using bp::Sigmoid;
  // First-layer widths around the vector kernels' cases: below one vector, one
  // exact vector, a partial last vector, and wider than the kernels (Eigen).
  check_backprop_against_seed<
      bp::BasicNetwork<TestType, Dense<37, 7, Sigmoid>, Dense<7, 3, Sigmoid>>>(41);
  check_backprop_against_seed<
      bp::BasicNetwork<TestType, Dense<50, 16, Sigmoid>, Dense<16, 4, Sigmoid>>>(42);
  check_backprop_against_seed<
      bp::BasicNetwork<TestType, Dense<784, 30, Sigmoid>, Dense<30, 10, Sigmoid>>>(43);
  check_backprop_against_seed<
      bp::BasicNetwork<TestType, Dense<21, 130, Sigmoid>, Dense<130, 5, Sigmoid>>>(44);
  // The weight gradient is written in 16-float vectors of a period of columns (8 for
  // 30 rows, 4 for 100): 101 inputs leave a shortened last period. A second layer of
  // more than 64 inputs takes the dynamic products.
  check_backprop_against_seed<
      bp::BasicNetwork<TestType, Dense<101, 30, Sigmoid>, Dense<30, 10, Sigmoid>>>(45);
  check_backprop_against_seed<
      bp::BasicNetwork<TestType, Dense<101, 100, Sigmoid>, Dense<100, 3, Sigmoid>>>(46);
}

TEMPLATE_TEST_CASE("feedforward over sparse and dense inputs equals the dense products",
                   "[network][forward][sparse]", float, double) {
  using T = TestType;
  // Wide layers of at least 64 inputs take the sparse paths when at most half of their
  // inputs are nonzero: the first layer on mostly-zero inputs, the third on ReLU's
  // zeros; 130 outputs are more than the per-sample kernels take.
  using Net = bp::BasicNetwork<T, bp::Dense<200, 40, bp::ReLU>, bp::Dense<40, 130, bp::ReLU>,
                               bp::Dense<130, 70, bp::ReLU>, bp::Dense<70, 5, bp::Sigmoid>>;
  Net net{7, bp::Init::xavier};
  Mat<T> X = bptest::random_matrix<T>(200, 37, 8, -1.0, 1.0);
  const Mat<T> keep = bptest::random_matrix<T>(200, 37, 9, 0.0, 1.0);
  for (Eigen::Index j = 0; j < X.cols(); ++j) {
    const double nonzero = j % 3 == 0 ? 0.9 : 0.15;  // every third column dense
    for (Eigen::Index i = 0; i < X.rows(); ++i) {
      if (keep(i, j) > nonzero) X(i, j) = T(0);
    }
  }
  const Mat<T> sparse_only = X(Eigen::all, Eigen::seq(1, Eigen::last, 3));
  // The reference: each layer in double, all products dense.
  auto reference = [&](const Eigen::MatrixXd& in) {
    Eigen::MatrixXd a = in;
    bp::detail::for_each_index<Net::num_layers>([&](auto i) {
      const auto& l = net.template layer<i>();
      Eigen::MatrixXd z = l.weights().template cast<double>() * a;
      z.colwise() += l.biases().template cast<double>();
      if constexpr (i + 1 < Net::num_layers) {
        a = z.cwiseMax(0.0);
      } else {
        a = (1.0 / (1.0 + (-z.array()).exp())).matrix();
      }
    });
    return a;
  };
  const Eigen::MatrixXd want = reference(X.template cast<double>());
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  auto close = [&](const auto& got, const Eigen::MatrixXd& expected) {
    REQUIRE(got.rows() == expected.rows());
    REQUIRE(got.cols() == expected.cols());
    return (got.template cast<double>() - expected).cwiseAbs().maxCoeff() <= tol;
  };
  CHECK(close(net.feedforward(X), want));
  CHECK(close(net.feedforward(sparse_only), reference(sparse_only.template cast<double>())));
  CHECK(close(net.feedforward(X.middleCols(5, 20)), want.middleCols(5, 20)));
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = X;
  CHECK(close(net.feedforward(row_major), want));
  CHECK(close(net.feedforward(X * T(1)), want));
  for (Eigen::Index j = 0; j < X.cols(); ++j) {
    INFO("column " << j);
    CHECK(close(net.feedforward(X.col(j)), want.col(j)));
    CHECK(close(net.feedforward(Eigen::Matrix<T, Eigen::Dynamic, 1>(X.col(j))), want.col(j)));
  }
  // NaN and Inf count as nonzero: every output of their own column, and only of it.
  bp::BasicNetwork<T, bp::Dense<200, 40, bp::Identity>> first{3};
  Mat<T> bad = sparse_only.leftCols(4);
  bad(3, 1) = std::numeric_limits<T>::quiet_NaN();
  bad(150, 2) = std::numeric_limits<T>::infinity();
  const Mat<T> out = first.feedforward(bad);
  CHECK(out.col(0).allFinite());
  CHECK(out.col(1).array().isNaN().all());
  CHECK(out.col(2).array().isInf().all());
  CHECK(out.col(3).allFinite());
  CHECK(first.feedforward(bad.col(1)).array().isNaN().all());
  CHECK(first.feedforward(bad.col(2)).array().isInf().all());
  CHECK(first.feedforward(bad.col(3)).allFinite());
}

TEST_CASE("feedforward of a batch larger than one inference block equals its columns",
          "[network][forward]") {
  // A 20,000-wide layer: feedforward works through 209 samples at a time.
  using Net =
      bp::BasicNetwork<double, bp::Dense<3, 20000, bp::Tanh>, bp::Dense<20000, 4, bp::Sigmoid>>;
  Net net{11, bp::Init::xavier};
  const Mat<double> X = bptest::random_matrix<double>(3, 450, 12, -1.0, 1.0);
  const Mat<double> out = net.feedforward(X);
  REQUIRE(out.rows() == 4);
  REQUIRE(out.cols() == 450);
  double worst = 0.0;
  for (Eigen::Index j = 0; j < X.cols(); ++j) {
    worst = std::max(worst, (out.col(j) - net.feedforward(X.col(j))).cwiseAbs().maxCoeff());
  }
  CHECK(worst <= 1e-12);
  CHECK(
      (net.feedforward(X.middleCols(100, 300)) - out.middleCols(100, 300)).cwiseAbs().maxCoeff() <=
      1e-12);
}

TEST_CASE("The gradient checker detects a wrong gradient", "[grad]") {
  using Net = bp::BasicNetwork<double, bp::Dense<3, 4, WrongTanh>, bp::Dense<4, 2, bp::Sigmoid>>;
  Net net{5};
  const auto X = bptest::random_matrix<double>(3, 4, 6);
  const auto Y = bptest::random_matrix<double>(2, 4, 7, 0.0, 1.0);
  const auto r = bp::testing::check_gradients(net, X, Y);
  CHECK_FALSE(r.passed(1e-4));
  CHECK_THAT(r.worst, Contains("layer 0"));
}

TEMPLATE_TEST_CASE("Batched update_mini_batch equals the per-sample algorithm", "[network][batch]",
                   float, double) {
  using Net = bp::BasicNetwork<TestType, bp::Dense<12, 40, bp::Sigmoid>, bp::Dense<40, 9, bp::Tanh>,
                               bp::Dense<9, 5, bp::Sigmoid>>;
  const Net start{99};
  const auto X = bptest::random_matrix<TestType>(12, 16, 100, 0.0, 1.0);
  const auto Y = bptest::random_matrix<TestType>(5, 16, 101, 0.0, 1.0);
  const double eta = 0.7;

  // The seed: sum per-sample gradients, then w -= eta/m * sum.
  Net expected = start;
  typename Net::Gradients sum = start.backprop(X.col(0), Y.col(0));
  for (Eigen::Index c = 1; c < X.cols(); ++c) {
    const auto g = start.backprop(X.col(c), Y.col(c));
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((std::get<I>(sum.first) += std::get<I>(g.first),
        std::get<I>(sum.second) += std::get<I>(g.second)),
       ...);
    }
    (std::make_index_sequence<Net::num_layers>{});
  }
  const auto rate = static_cast<TestType>(eta / static_cast<double>(X.cols()));
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((expected.template layer<I>().weights() -= rate * std::get<I>(sum.second),
      expected.template layer<I>().biases() -= rate * std::get<I>(sum.first)),
     ...);
  }
  (std::make_index_sequence<Net::num_layers>{});

  Net batched = start;
  batched.update_mini_batch(X, Y, eta);
  CHECK(bptest::max_parameter_difference(batched, expected) <=
        bptest::rounding_tolerance<TestType>());
  CHECK(bptest::max_parameter_difference(batched, start) > 1e-3);  // it did move

  SECTION("from a column block, without copying") {
    Mat<TestType> wide(12, 20);
    wide.setZero();
    wide.middleCols(3, 16) = X;
    Mat<TestType> wide_y = Mat<TestType>::Zero(5, 20);
    wide_y.middleCols(3, 16) = Y;
    Net from_block = start;
    from_block.update_mini_batch(wide.middleCols(3, 16), wide_y.middleCols(3, 16), eta);
    CHECK(from_block == batched);
  }
  SECTION("gradient() sums the per-sample gradients") {
    Net g = start;
    const auto grads = g.gradient(X, Y);
    CHECK(bptest::relative_difference(std::get<1>(grads.second), std::get<1>(sum.second)) <=
          bptest::rounding_tolerance<TestType>());
    CHECK(bptest::relative_difference(std::get<0>(grads.first), std::get<0>(sum.first)) <=
          bptest::rounding_tolerance<TestType>());
  }
}

TEST_CASE("The portable generator is pinned and its log is accurate", "[init][rng]") {
  bp::Rng rng(0);
  // xoshiro256** seeded by splitmix64(0): fixed values, the same on every platform.
  const std::uint64_t first = rng();
  const std::uint64_t second = rng();
  bp::Rng again(0);
  CHECK(again() == first);
  CHECK(again() == second);
  CHECK(first != second);
  for (double x : {1e-300, 1e-10, 0.1, 0.5, 0.7071, 0.99999, 1.0, 2.0, 123456.789}) {
    CHECK_THAT(bp::detail::portable_log(x), WithinRel(std::log(x), 4e-16));
  }
  // Normal samples: mean ~0, variance ~1.
  bp::Rng n(42);
  double s = 0, s2 = 0;
  const int count = 200000;
  for (int i = 0; i < count; ++i) {
    const double v = n.normal();
    s += v;
    s2 += v * v;
  }
  CHECK_THAT(s / count, WithinAbs(0.0, 0.01));
  CHECK_THAT(s2 / count, WithinAbs(1.0, 0.01));
  // below(n) stays in range and hits every value.
  std::vector<int> hits(7, 0);
  for (int i = 0; i < 7000; ++i) ++hits[static_cast<std::size_t>(n.below(7))];
  for (int h : hits) CHECK(h > 800);
}

TEMPLATE_TEST_CASE("A seed determines the parameters and the training trajectory",
                   "[network][determinism]", float, double) {
  using Net =
      bp::BasicNetwork<TestType, bp::Dense<6, 8, bp::Sigmoid>, bp::Dense<8, 3, bp::Sigmoid>>;
  CHECK(Net{5} == Net{5});
  CHECK_FALSE(Net{5} == Net{6});
  CHECK_FALSE(Net(5, bp::Init::normal) == Net(5, bp::Init::he));

  bp::Dataset<TestType> data;
  data.inputs = bptest::random_matrix<TestType>(6, 40, 1, 0.0, 1.0);
  data.labels.resize(40);
  for (int i = 0; i < 40; ++i) data.labels(i) = i % 3;
  data.targets = bp::one_hot<TestType>(data.labels, 3);

  auto train = [&](Net& net) {
    return net.sgd(data, {.epochs = 3, .mini_batch_size = 7, .eta = 1.0, .on_epoch = bp::quiet},
                   &data);
  };
  Net a{77}, b{77};
  const auto ha = train(a);
  const auto hb = train(b);
  CHECK(a == b);
  REQUIRE(ha.epochs.size() == 3);
  for (std::size_t e = 0; e < 3; ++e) {
    CHECK(ha.epochs[e].evaluation_correct == hb.epochs[e].evaluation_correct);
  }
  Net c{78};
  train(c);
  CHECK_FALSE(a == c);
}

TEST_CASE("Initialisers have the documented scale", "[init]") {
  using Net = bp::BasicNetwork<double, bp::Dense<400, 300, bp::ReLU>, bp::Dense<300, 10>>;
  auto stddev = [](const auto& m) {
    const double mean = m.mean();
    return std::sqrt((m.array() - mean).square().mean());
  };
  const Net normal(1, bp::Init::normal);
  CHECK_THAT(stddev(normal.layer<0>().weights()), WithinAbs(1.0, 0.01));
  CHECK_THAT(stddev(normal.layer<0>().biases()), WithinAbs(1.0, 0.15));
  const Net scaled(1, bp::Init::scaled_normal);
  CHECK_THAT(stddev(scaled.layer<0>().weights()), WithinAbs(1.0 / 20.0, 0.001));
  const Net he(1, bp::Init::he);
  CHECK_THAT(stddev(he.layer<0>().weights()), WithinAbs(std::sqrt(2.0 / 400.0), 0.001));
  CHECK(he.layer<0>().biases().isZero());
  const Net xavier(1, bp::Init::xavier);
  const double lim = std::sqrt(6.0 / 700.0);
  CHECK(xavier.layer<0>().weights().maxCoeff() <= lim);
  CHECK(xavier.layer<0>().weights().minCoeff() >= -lim);
  CHECK_THAT(stddev(xavier.layer<0>().weights()), WithinAbs(lim / std::sqrt(3.0), 0.001));
}

TEMPLATE_TEST_CASE("Wrong sizes throw invalid_argument naming both sizes", "[network][errors]",
                   float, double) {
  using Net = bp::BasicNetwork<TestType, bp::Dense<784, 30>, bp::Dense<30, 10>>;
  Net net{1};
  const Mat<TestType> x = Mat<TestType>::Zero(783, 1);
  const Eigen::Matrix<TestType, Eigen::Dynamic, 1> v =
      Eigen::Matrix<TestType, Eigen::Dynamic, 1>::Zero(783);
  CHECK_THROWS_AS(net.feedforward(x), std::invalid_argument);
  CHECK_THROWS_WITH(net.feedforward(v), Contains("783") && Contains("784"));
  CHECK_THROWS_WITH(net.feedforward(x), Contains("783") && Contains("784"));
  const Mat<TestType> X = Mat<TestType>::Zero(784, 4);
  const Mat<TestType> Y = Mat<TestType>::Zero(10, 3);
  CHECK_THROWS_WITH(net.update_mini_batch(X, Y, 1.0), Contains("4") && Contains("3"));
  const Mat<TestType> Y9 = Mat<TestType>::Zero(9, 4);
  CHECK_THROWS_AS(net.update_mini_batch(X, Y9, 1.0), std::invalid_argument);
  CHECK_THROWS_WITH(net.update_mini_batch(X, Y9, 1.0), Contains("9") && Contains("10"));
  const Mat<TestType> Y10 = Mat<TestType>::Zero(10, 4);
  CHECK_THROWS_AS(net.update_mini_batch(X, Y10, 0.0), std::invalid_argument);
  CHECK_THROWS_AS(net.update_mini_batch(X, Y10, std::nan("")), std::invalid_argument);
  CHECK_THROWS_AS(net.backprop(x, Y10.col(0)), std::invalid_argument);
  CHECK_THROWS_AS(net.evaluate(X, Eigen::VectorXi::Zero(3)), std::invalid_argument);
  const Net before = net;
  CHECK_THROWS(net.update_mini_batch(X, Y9, 1.0));
  CHECK(net == before);  // nothing changed
}

TEST_CASE("sgd rejects bad arguments with a message naming the argument", "[network][errors]") {
  using Net = bp::Network<bp::Dense<4, 3>, bp::Dense<3, 2>>;
  Net net{1};
  bp::Dataset<float> data;
  data.inputs = bptest::random_matrix<float>(4, 10, 1, 0.0, 1.0);
  data.labels = Eigen::VectorXi::Zero(10);
  data.targets = bp::one_hot<float>(data.labels, 2);
  const bp::SgdOptions ok{.epochs = 1, .mini_batch_size = 5, .eta = 1.0, .on_epoch = bp::quiet};
  CHECK_NOTHROW(net.sgd(data, ok));

  auto with = [&](auto change) {
    bp::SgdOptions o = ok;
    change(o);
    return o;
  };
  CHECK_THROWS_WITH(net.sgd(data, with([](auto& o) { o.mini_batch_size = 0; })),
                    Contains("mini_batch_size") && Contains("0"));
  CHECK_THROWS_WITH(net.sgd(data, with([](auto& o) { o.mini_batch_size = 11; })),
                    Contains("mini_batch_size") && Contains("11"));
  CHECK_THROWS_WITH(net.sgd(data, with([](auto& o) { o.eta = -1.0; })), Contains("eta"));
  CHECK_THROWS_AS(net.sgd(data, with([](auto& o) { o.eta = INFINITY; })), std::invalid_argument);
  CHECK_THROWS_WITH(net.sgd(data, with([](auto& o) { o.epochs = -1; })), Contains("epochs"));

  bp::Dataset<float> bad = data;
  bad.inputs(2, 3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(net.sgd(bad, ok), Contains("NaN"));
  bad = data;
  bad.labels(4) = 2;
  CHECK_THROWS_WITH(net.sgd(bad, ok), Contains("label 2"));
  bad = data;
  bad.targets.conservativeResize(2, 9);
  CHECK_THROWS_AS(net.sgd(bad, ok), std::invalid_argument);
  bp::Dataset<float> empty;
  empty.inputs.resize(4, 0);
  empty.targets.resize(2, 0);
  CHECK_THROWS_WITH(net.sgd(empty, ok), Contains("empty"));
  bp::Dataset<float> wrong_rows = data;
  wrong_rows.inputs = Mat<float>::Zero(5, 10);
  CHECK_THROWS_WITH(net.sgd(wrong_rows, ok), Contains("5") && Contains("4"));
}

TEST_CASE("feedforward is safe from several threads at once", "[network][threads]") {
  using Net = bp::Network<bp::Dense<50, 40, bp::Tanh>, bp::Dense<40, 10, bp::Softmax>>;
  const Net net{3};
  const auto X = bptest::random_matrix<float>(50, 64, 4);
  const Mat<float> expected = net.feedforward(X);
  std::vector<Eigen::VectorXf> expected_cols;
  for (Eigen::Index c = 0; c < X.cols(); ++c) expected_cols.emplace_back(net.feedforward(X.col(c)));
  std::vector<int> ok(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      bool same = true;
      for (int i = 0; i < 50; ++i) {
        same = same && (net.feedforward(X) == expected);
        same = same &&
               (net.feedforward(X.col(i % 64)) == expected_cols[static_cast<std::size_t>(i % 64)]);
      }
      ok[static_cast<std::size_t>(t)] = same ? 1 : 0;
    });
  }
  for (auto& th : threads) th.join();
  for (int v : ok) CHECK(v == 1);
}

TEST_CASE("evaluate counts argmax matches", "[network]") {
  using Net = bp::BasicNetwork<double, bp::Dense<2, 2, bp::Identity>>;
  Net net{0};
  net.layer<0>().weights().setIdentity();
  net.layer<0>().biases().setZero();
  Mat<double> X(2, 4);
  X << 1, 0, 3, 0,  //
      0, 1, 2, 5;
  Eigen::VectorXi labels(4);
  labels << 0, 1, 1, 1;
  CHECK(net.evaluate(X, labels) == 3);
}

TEST_CASE("Parameters resized to another shape are rejected, not read out of bounds",
          "[network][errors]") {
  using Net = bp::Network<bp::Dense<4, 3>, bp::Dense<3, 2>>;
  Net net{1};
  net.layer<0>().weights() = Mat<float>::Zero(3, 5);
  const Mat<float> X = Mat<float>::Zero(4, 2);
  const Mat<float> Y = Mat<float>::Zero(2, 2);
  CHECK_THROWS_WITH(net.feedforward(X), Contains("layer 0") && Contains("3x5") && Contains("3x4"));
  CHECK_THROWS_AS(net.update_mini_batch(X, Y, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(net.backprop(X.col(0), Y.col(0)), std::invalid_argument);
  net.layer<0>().weights() = Mat<float>::Zero(3, 4);
  net.layer<1>().biases().resize(1);
  CHECK_THROWS_WITH(net.evaluate(X, Eigen::VectorXi::Zero(2)), Contains("layer 1"));
}

TEMPLATE_TEST_CASE("The batched path's products equal Eigen's for every shape and transpose",
                   "[network][batch]", float, double) {
  // Float products take backprop's kernels (at the AVX2 and AVX-512 levels), the rest
  // Eigen's GEMM and GEMV called directly (eigen_product: every level for double, the
  // portable level for float), tiny ones a plain loop; all must give op(A) op(B) and
  // the accumulating form, at every level this CPU runs.
  using M = Mat<TestType>;
  const bptest::InstructionSetCap cap(
      GENERATE(bp::InstructionSet::portable, bp::InstructionSet::avx2, bp::InstructionSet::avx512));
  if (!cap.runs()) return;
  INFO("instruction set " << cap.name());
  bp::detail::GemmWorkspace<TestType> ws;
  std::uint64_t seed = 70;
  for (Eigen::Index m : {1, 10, 16, 17, 30, 100, 128, 129}) {
    for (Eigen::Index k : {1, 10, 33}) {
      for (Eigen::Index n : {1, 7, 10, 17}) {
        INFO("m " << m << " k " << k << " n " << n);
        const M a = bptest::random_matrix<TestType>(m, k, ++seed, -1.0, 1.0);
        const M b = bptest::random_matrix<TestType>(k, n, ++seed, -1.0, 1.0);
        const M c0 = bptest::random_matrix<TestType>(m, n, ++seed, -1.0, 1.0);
        const M at = a.transpose(), bt = b.transpose();
        const M want = a * b;
        const M want_add = c0 - TestType(0.5) * want;
        const auto tol = 4 * bptest::rounding_tolerance<TestType>();
        M c(m, n);
        ws.template assign<false, false>(c, a, b);
        CHECK(bptest::relative_difference(c, want) <= tol);
        ws.template assign<true, false>(c, at, b);
        CHECK(bptest::relative_difference(c, want) <= tol);
        ws.template assign<false, true>(c, a, bt);
        CHECK(bptest::relative_difference(c, want) <= tol);
        ws.template assign<true, true>(c, at, bt);
        CHECK(bptest::relative_difference(c, want) <= tol);
        c = c0;
        ws.template add<false, true>(c, TestType(-0.5), a, bt);
        CHECK(bptest::relative_difference(c, want_add) <= tol);
        c = c0;
        ws.template add<true, false>(c, TestType(-0.5), at, b);
        CHECK(bptest::relative_difference(c, want_add) <= tol);
        // Into a block of whole columns of a larger matrix: the other columns stay.
        M big = M::Constant(m, n + 2, TestType(7));
        auto middle = big.middleCols(1, n);
        ws.template assign<false, false>(middle, a, b);
        CHECK(bptest::relative_difference(M(middle), want) <= tol);
        CHECK((big.col(0).array() == TestType(7)).all());
        CHECK((big.col(n + 1).array() == TestType(7)).all());
        // The workspace-free product of inference, into a fresh and a reused matrix.
        M d;
        bp::detail::multiply(d, a, b);
        CHECK(bptest::relative_difference(d, want) <= tol);
        bp::detail::multiply(c, a, b);
        CHECK(bptest::relative_difference(c, want) <= tol);
      }
    }
  }
}

TEMPLATE_TEST_CASE("all_finite finds NaN and Inf at every position", "[network][finite]", float,
                   double) {
  // With AVX-512, contiguous matrices take a vector class test with a masked tail;
  // column blocks and other expressions the general path.
  // Every level this CPU runs: AVX2 ORs x - x into four chains with a scalar tail.
  using S = TestType;
  using M = Mat<S>;
  const bptest::InstructionSetCap cap(
      GENERATE(bp::InstructionSet::portable, bp::InstructionSet::avx2, bp::InstructionSet::avx512));
  if (!cap.runs()) return;
  INFO("instruction set " << cap.name());
  const S bad_values[] = {std::numeric_limits<S>::quiet_NaN(),
                          std::numeric_limits<S>::signaling_NaN(),
                          std::numeric_limits<S>::infinity(), -std::numeric_limits<S>::infinity()};
  std::uint64_t seed = 90;
  for (Eigen::Index n : {0, 1, 7, 8, 15, 16, 17, 31, 63, 64, 65, 100, 133}) {
    M m = bptest::random_matrix<S>(n, 1, ++seed, -1.0, 1.0);
    if (n > 0) m(n - 1) = std::numeric_limits<S>::max();
    CHECK(bp::detail::all_finite(m));
    for (Eigen::Index i = 0; i < n; ++i) {
      for (const S v : bad_values) {
        INFO("n " << n << " position " << i << " value " << v);
        M c = m;
        c(i) = v;
        const Eigen::Matrix<S, Eigen::Dynamic, 1> column = c.col(0);
        const M wide = c.transpose();
        CHECK_FALSE(bp::detail::all_finite(c));
        CHECK_FALSE(bp::detail::all_finite(column));
        CHECK_FALSE(bp::detail::all_finite(wide));
        CHECK_FALSE(bp::detail::all_finite(c.col(0)));
      }
    }
  }
}

TEST_CASE("AlignedMatrix starts a cache line and copies deeply", "[network]") {
  bp::detail::AlignedMatrix<float> a;
  CHECK(a.size() == 0);
  a.resize(17, 3);
  CHECK(reinterpret_cast<std::uintptr_t>(a.map().data()) % 64 == 0);
  a.map() = bptest::random_matrix<float>(17, 3, 5, -1.0, 1.0);
  bp::detail::AlignedMatrix<float> b = a;
  CHECK(b.map().data() != a.map().data());
  CHECK(reinterpret_cast<std::uintptr_t>(b.map().data()) % 64 == 0);
  CHECK(b.map() == a.map());
  b.map()(0, 0) = 42.0f;
  CHECK(a.map()(0, 0) != 42.0f);
  bp::detail::AlignedMatrix<float> c;
  c.resize(2, 2);
  c = b;
  CHECK(c.rows() == 17);
  CHECK(c.map() == b.map());
  const bp::detail::AlignedMatrix<float> moved = std::move(c);
  CHECK(moved.map() == b.map());
  b.resize(0, 5);
  CHECK(b.size() == 0);
}

TEST_CASE("The sparse copy and the per-sample compression keep exactly the nonzeros",
          "[network][sparse]") {
  // Whole 16-lane vectors go branch-free (16-bit indices compressed directly where the
  // CPU has AVX512-VBMI2), the rest through masked or scalar tails.
  std::uint64_t seed = 110;
  auto check = [&]<class RowIndex>(Eigen::Index d, RowIndex) {
    INFO("rows " << d << ", " << 8 * sizeof(RowIndex) << "-bit indices");
    const Eigen::Index n = 40;
    Mat<float> m = bptest::random_matrix<float>(d, n, ++seed, -1.0, 1.0);
    const Mat<float> keep = bptest::random_matrix<float>(d, n, ++seed, 0.0, 1.0);
    m = (keep.array() < 0.3f).select(m, 0.0f);
    m.col(5).setZero();
    bp::detail::SparseColumns<float, RowIndex> copy;
    bool finite = false;
    REQUIRE(copy.build(m, 1.0, finite));
    CHECK(finite);
    std::vector<RowIndex> rows(static_cast<std::size_t>(d) + 16);
    std::vector<float> values(static_cast<std::size_t>(d) + 16);
    for (Eigen::Index c = 0; c < n; ++c) {
      std::vector<RowIndex> want_rows;
      std::vector<float> want_values;
      for (Eigen::Index r = 0; r < d; ++r) {
        if (m(r, c) != 0.0f) {
          want_rows.push_back(static_cast<RowIndex>(r));
          want_values.push_back(m(r, c));
        }
      }
      const auto begin = copy.starts[static_cast<std::size_t>(c)];
      const auto end = copy.starts[static_cast<std::size_t>(c) + 1];
      CHECK(std::vector<RowIndex>(copy.rows.get() + begin, copy.rows.get() + end) == want_rows);
      CHECK(std::vector<float>(copy.values.get() + begin, copy.values.get() + end) == want_values);
      const std::size_t count = bp::detail::compress_nonzeros(m.col(c).data(), static_cast<int>(d),
                                                              rows.data(), values.data());
      CHECK(std::vector<RowIndex>(rows.begin(),
                                  rows.begin() + static_cast<std::ptrdiff_t>(count)) == want_rows);
      CHECK(std::vector<float>(values.begin(),
                               values.begin() + static_cast<std::ptrdiff_t>(count)) == want_values);
    }
    m(d - 1, n / 2) = std::numeric_limits<float>::infinity();
    REQUIRE(copy.build(m, 1.0, finite));
    CHECK_FALSE(finite);
  };
  for (Eigen::Index d : {1, 15, 16, 17, 33, 784, 785}) {
    check(d, std::uint16_t{});
    check(d, std::int32_t{});
  }
}

TEST_CASE("backprop's weight-gradient writer equals the outer product for any shape",
          "[network][sparse]") {
  // The gradient is written as consecutive 16-float vectors from a lane pattern (built
  // by permutations for up to 32 rows); a shortened last period ends in a masked store.
  std::uint64_t seed = 130;
  auto check = [&]<int Out>(std::integral_constant<int, Out>) {
    for (Eigen::Index n : {1, 2, 7, 15, 16, 17, 33, 101}) {
      INFO("rows " << Out << " columns " << n);
      const Mat<float> d = bptest::random_matrix<float>(Out, 1, ++seed, -1.0, 1.0);
      Mat<float> x = bptest::random_matrix<float>(n, 1, ++seed, -1.0, 1.0);
      x = (x.array() < 0.0f).select(0.0f, x);
      std::vector<float> out(static_cast<std::size_t>(Out * n) + 32, 7.0f);
      bp::detail::outer_product_columns<Out>(out.data() + 16, d.data(), x.data(), n);
      const Mat<float> want = d * x.transpose();
      CHECK(Eigen::Map<const Mat<float>>(out.data() + 16, Out, n) == want);
      CHECK(std::all_of(out.begin(), out.begin() + 16, [](float v) { return v == 7.0f; }));
      CHECK(std::all_of(out.end() - 16, out.end(), [](float v) { return v == 7.0f; }));
    }
  };
  check(std::integral_constant<int, 1>{});
  check(std::integral_constant<int, 7>{});
  check(std::integral_constant<int, 16>{});
  check(std::integral_constant<int, 17>{});
  check(std::integral_constant<int, 30>{});
  check(std::integral_constant<int, 32>{});
  check(std::integral_constant<int, 33>{});
  check(std::integral_constant<int, 100>{});
}

TEST_CASE("The instruction set is detected, capped and named", "[network][isa]") {
  const bp::InstructionSet cpu = bp::detected_instruction_set();
  CHECK(static_cast<int>(bp::instruction_set()) <= static_cast<int>(cpu));
  for (auto isa :
       {bp::InstructionSet::portable, bp::InstructionSet::avx2, bp::InstructionSet::avx512}) {
    CHECK(bp::parse_instruction_set(bp::to_string(isa)) == isa);
  }
  CHECK_THROWS_MATCHES(bp::parse_instruction_set("sse9"), bp::ValueError,
                       Catch::Matchers::Message(
                           "backprop: unknown instruction set \"sse9\" (expected portable, avx2 "
                           "or avx512)"));
  const bp::InstructionSet before = bp::instruction_set();
  bp::set_max_instruction_set(bp::InstructionSet::portable);
  CHECK(bp::instruction_set() == bp::InstructionSet::portable);
  bp::set_max_instruction_set(bp::InstructionSet::avx512);
  CHECK(bp::instruction_set() == cpu);  // a cap above the CPU changes nothing

  // BACKPROP_MAX_ISA, as the first use reads it (read again here).
  const char* env = std::getenv("BACKPROP_MAX_ISA");
  const std::string saved = env != nullptr ? env : "";
  ::setenv("BACKPROP_MAX_ISA", "avx1024", 1);
  CHECK_THROWS_MATCHES(bp::detail::read_active_isa(), bp::ValueError,
                       Catch::Matchers::Message("backprop: BACKPROP_MAX_ISA is \"avx1024\"; "
                                                "expected portable, avx2 or avx512"));
  ::setenv("BACKPROP_MAX_ISA", "portable", 1);
  CHECK(bp::detail::read_active_isa() == 0);
  CHECK(bp::instruction_set() == bp::InstructionSet::portable);
  if (env != nullptr) {
    ::setenv("BACKPROP_MAX_ISA", saved.c_str(), 1);
  } else {
    ::unsetenv("BACKPROP_MAX_ISA");
  }
  bp::set_max_instruction_set(before);
}

TEST_CASE("Every instruction set's kernels agree with plain loops", "[network][sparse][isa]") {
  // The sparse first layer's sums and updates (with and without padded columns, blocks
  // of a wider matrix) and the small products, at each level this CPU runs; AVX2 splits
  // layers over 64 rows, AVX-512 masks its last vector.
  const bp::InstructionSet before = bp::instruction_set();
  std::uint64_t seed = 150;
  std::vector<bp::InstructionSet> levels = {bp::InstructionSet::portable};
  if (bp::detected_instruction_set() >= bp::InstructionSet::avx2) {
    levels.push_back(bp::InstructionSet::avx2);
  }
  if (bp::detected_instruction_set() >= bp::InstructionSet::avx512) {
    levels.push_back(bp::InstructionSet::avx512);
  }
  auto kernels = [&]<int Out, int Padded>(std::integral_constant<int, Out>,
                                          std::integral_constant<int, Padded>) {
    constexpr int In = 50;
    constexpr std::ptrdiff_t ld = Padded + 3;  // a block of rows of a taller matrix
    Mat<float> w = bptest::random_matrix<float>(ld, In, ++seed, -1.0, 1.0);
    const Mat<float> bias = bptest::random_matrix<float>(Out, 1, ++seed, -1.0, 1.0);
    std::vector<std::uint16_t> rows;
    std::vector<float> values;
    for (int r = 0; r < In; r += 1 + static_cast<int>(seed % 3)) {
      rows.push_back(static_cast<std::uint16_t>(r));
      values.push_back(0.25f * static_cast<float>(r % 7) - 0.8f);
    }
    Mat<float> want = bias;
    for (std::size_t k = 0; k < rows.size(); ++k) {
      want += values[k] * w.col(rows[k]).head(Out);
    }
    std::vector<float> out(Out + 16, 9.0f);
    bp::detail::sparse_column_sum<Out, Padded>(w.data(), bias.data(), rows.data(), values.data(), 0,
                                               rows.size(), out.data(), ld);
    const Mat<float> got = Eigen::Map<const Mat<float>>(out.data(), Out, 1);
    CHECK((got - want).cwiseAbs().maxCoeff() < 1e-5f);
    CHECK(std::all_of(out.begin() + Out, out.end(), [](float v) { return v == 9.0f; }));

    std::vector<float> d(Padded, 0.0f);
    for (int i = 0; i < Out; ++i)
      d[static_cast<std::size_t>(i)] = 0.1f * static_cast<float>(i % 5) - 0.2f;
    Mat<float> w_want = w;
    for (std::size_t k = 0; k < rows.size(); ++k) {
      for (int i = 0; i < Out; ++i)
        w_want(i, rows[k]) += values[k] * d[static_cast<std::size_t>(i)];
    }
    bp::detail::sparse_column_update<Out, Padded>(w.data(), d.data(), rows.data(), values.data(), 0,
                                                  rows.size(), ld);
    CHECK((w - w_want).cwiseAbs().maxCoeff() < 1e-5f);
  };
  auto products = [&](Eigen::Index m) {
    for (Eigen::Index n : {1, 3, 10, 17}) {
      for (Eigen::Index k : {1, 10, 30}) {
        INFO("m " << m << " n " << n << " k " << k);
        const Mat<float> a = bptest::random_matrix<float>(m, k, ++seed, -1.0, 1.0);
        const Mat<float> at = a.transpose();
        const Mat<float> b = bptest::random_matrix<float>(k, n, ++seed, -1.0, 1.0);
        const Mat<float> bt = b.transpose();
        const Mat<float> want = a * b;
        bp::detail::GemmWorkspace<float> ws;
        Mat<float> c(m, n);
        ws.assign<false, false>(c, a, b);
        CHECK((c - want).cwiseAbs().maxCoeff() < 1e-4f);
        ws.assign<true, true>(c, at, bt);
        CHECK((c - want).cwiseAbs().maxCoeff() < 1e-4f);
        Mat<float> acc = Mat<float>::Ones(m, n);
        ws.add<false, true>(acc, -0.5f, a, bt);
        CHECK((acc - (Mat<float>::Ones(m, n) - 0.5f * want)).cwiseAbs().maxCoeff() < 1e-4f);
      }
    }
  };
  // The sigmoid (its own e^x where Eigen's vectors are narrower than the CPU's): within
  // 4 ulp of the double-precision value over the whole float range, 0 and 1 at the
  // ends, NaN kept, in place, every vector tail, and blocks that are not contiguous.
  auto sigmoids = [&] {
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> zs = {-inf,   -1e30f,  -1000.0f, -104.0f, -90.0f,  -87.5f, -80.5f,
                             -80.0f, -79.9f,  -30.0f,   -1e-3f,  -1e-30f, 0.0f,   1e-30f,
                             1e-3f,  0.3465f, 0.5f,     1.0f,    10.0f,   16.0f,  17.0f,
                             30.0f,  87.0f,   88.8f,    104.0f,  1e30f,   inf};
    for (int i = 0; i <= 4000; ++i) zs.push_back(-100.0f + 0.05f * static_cast<float>(i));
    for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{9},
                          std::size_t{15}, std::size_t{17}, zs.size()}) {
      INFO("n " << n);
      const Eigen::Map<const Mat<float>> z(zs.data(), static_cast<Eigen::Index>(n), 1);
      Mat<float> a;
      bp::Sigmoid::forward(z, a);
      REQUIRE(a.size() == static_cast<Eigen::Index>(n));
      for (std::size_t i = 0; i < n; ++i) {
        INFO("z " << zs[i]);
        const double want = 1.0 / (1.0 + std::exp(-std::max(static_cast<double>(zs[i]), -80.0)));
        CHECK(std::abs(a(static_cast<Eigen::Index>(i)) - want) <= 4.0 * 1.2e-7 * want);
      }
    }
    Mat<float> z = bptest::random_matrix<float>(37, 5, ++seed, -20.0, 20.0);
    z(3, 2) = std::numeric_limits<float>::quiet_NaN();
    Mat<float> want(37, 5);
    for (Eigen::Index i = 0; i < z.size(); ++i) {
      want(i) = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(z(i)))));
    }
    Mat<float> block = Mat<float>::Zero(40, 5);
    auto part = block.topRows(37);
    bp::Sigmoid::forward(z, part);  // not contiguous: Eigen's expression
    bp::Sigmoid::forward(z, z);     // in place
    CHECK(std::isnan(z(3, 2)));
    CHECK(std::isnan(block(3, 2)));
    z(3, 2) = want(3, 2) = block(3, 2) = 0.0f;
    CHECK((z - want).cwiseAbs().maxCoeff() < 1e-6f);
    CHECK((block.topRows(37) - want).cwiseAbs().maxCoeff() < 1e-6f);
    CHECK(block.bottomRows(3).isZero());
  };
  // ReLU forward and backward (backprop's own where Eigen's vectors are narrower than
  // the CPU's): the selection exactly, every tail, NaN, signed zeros and infinities,
  // in place, and blocks that are not contiguous.
  auto relus = [&] {
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (Eigen::Index n : {1, 7, 8, 9, 15, 16, 17, 33, 1000}) {
      INFO("n " << n);
      Mat<float> z = bptest::random_matrix<float>(n, 1, ++seed, -3.0, 3.0);
      Mat<float> g = bptest::random_matrix<float>(n, 1, ++seed, -3.0, 3.0);
      const float specials[] = {0.0f, -0.0f, inf, -inf, nan, 1e-40f, -1e-40f};
      for (Eigen::Index i = 0; i < n && i < 7; ++i) z(n - 1 - i) = specials[i];
      if (n > 2) g(1) = nan;  // passes where z > 0, else 0
      Mat<float> a, d;
      bp::ReLU::forward(z, a);
      bp::ReLU::backward(z, a, g, d);
      REQUIRE(a.size() == n);
      REQUIRE(d.size() == n);
      for (Eigen::Index i = 0; i < n; ++i) {
        INFO("z " << z(i) << " g " << g(i));
        if (std::isnan(z(i))) {
          CHECK(std::isnan(a(i)));
        } else {
          CHECK(a(i) == (z(i) < 0.0f ? 0.0f : z(i)));
        }
        const float want = z(i) > 0.0f ? g(i) : 0.0f;
        if (std::isnan(want)) {
          CHECK(std::isnan(d(i)));
        } else {
          CHECK(d(i) == want);
        }
      }
    }
    Mat<float> z = bptest::random_matrix<float>(37, 5, ++seed, -2.0, 2.0);
    const Mat<float> g = bptest::random_matrix<float>(37, 5, ++seed, -2.0, 2.0);
    const Mat<float> want_a = z.cwiseMax(0.0f);
    const Mat<float> want_d = (z.array() > 0.0f).select(g, 0.0f);
    Mat<float> block = Mat<float>::Zero(40, 5);
    auto part = block.topRows(37);
    bp::ReLU::backward(z, z, g, part);  // not contiguous: Eigen's expression
    CHECK(block.topRows(37) == want_d);
    CHECK(block.bottomRows(3).isZero());
    Mat<float> d = g;
    bp::ReLU::backward(z, z, d, d);  // in place
    CHECK(d == want_d);
    bp::ReLU::forward(z, z);  // in place
    CHECK(z == want_a);
  };
  for (const auto level : levels) {
    INFO("instruction set " << bp::to_string(level));
    bp::set_max_instruction_set(level);
    REQUIRE(bp::instruction_set() == level);
    relus();
    kernels(std::integral_constant<int, 1>{}, std::integral_constant<int, 1>{});
    kernels(std::integral_constant<int, 7>{}, std::integral_constant<int, 7>{});
    kernels(std::integral_constant<int, 7>{}, std::integral_constant<int, 16>{});
    kernels(std::integral_constant<int, 8>{}, std::integral_constant<int, 8>{});
    kernels(std::integral_constant<int, 9>{}, std::integral_constant<int, 9>{});
    kernels(std::integral_constant<int, 16>{}, std::integral_constant<int, 16>{});
    kernels(std::integral_constant<int, 17>{}, std::integral_constant<int, 17>{});
    kernels(std::integral_constant<int, 30>{}, std::integral_constant<int, 30>{});
    kernels(std::integral_constant<int, 30>{}, std::integral_constant<int, 32>{});
    kernels(std::integral_constant<int, 64>{}, std::integral_constant<int, 64>{});
    kernels(std::integral_constant<int, 65>{}, std::integral_constant<int, 65>{});
    kernels(std::integral_constant<int, 100>{}, std::integral_constant<int, 112>{});
    kernels(std::integral_constant<int, 128>{}, std::integral_constant<int, 128>{});
    for (Eigen::Index m : {1, 7, 8, 9, 16, 17, 30, 64, 95, 96, 97, 128, 129}) products(m);
    sigmoids();
#if BACKPROP_X86_KERNELS
    // The packed product (columns of A a multiple of 4 KB apart): last panels of one,
    // two and three vectors with a masked tail, columns split over panels of B, B read
    // down columns and along rows.
    if (level != bp::InstructionSet::portable) {
      for (Eigen::Index lda : {1024, 2048}) {
        for (Eigen::Index m : {1001, 1010, 1024, 1030}) {
          if (m > lda) continue;
          for (Eigen::Index n : {4, 9, 400}) {
            const Eigen::Index k = n == 400 ? 129 : 302;  // depth tails of 1 and 46
            INFO("lda " << lda << " m " << m << " n " << n << " k " << k);
            REQUIRE(bp::detail::kernel_product_packs(n, m, k, lda));
            const Mat<float> a = bptest::random_matrix<float>(lda, k, ++seed, -1.0, 1.0);
            const Mat<float> b = bptest::random_matrix<float>(k, n, ++seed, -1.0, 1.0);
            const Mat<float> bt = b.transpose();
            const Mat<float> want = a.topRows(m) * b;
            Mat<float> c = Mat<float>::Ones(m + 5, n);
            bp::detail::kernel_product(c.data(), m + 5, a.data(), lda, b.data(), 1, k, m, n, k,
                                       1.0f, false, bp::detail::active_isa());
            CHECK((c.topRows(m) - want).cwiseAbs().maxCoeff() < 1e-3f);
            CHECK(c.bottomRows(5).isOnes());
            bp::detail::kernel_product(c.data(), m + 5, a.data(), lda, bt.data(), n, 1, m, n, k,
                                       -0.5f, true, bp::detail::active_isa());
            CHECK((c.topRows(m) - 0.5f * want).cwiseAbs().maxCoeff() < 1e-3f);
            CHECK(c.bottomRows(5).isOnes());
            // A given as its transpose (rows lda apart), transposed as it is packed.
            const Mat<float> at = a.topRows(m).transpose();
            Mat<float> at_padded = Mat<float>::Zero(k + 7, m);
            at_padded.topRows(k) = at;
            bp::detail::kernel_product(c.data(), m + 5, at_padded.data(), k + 7, b.data(), 1, k, m,
                                       n, k, 2.0f, false, bp::detail::active_isa(), true);
            CHECK((c.topRows(m) - 2.0f * want).cwiseAbs().maxCoeff() < 2e-3f);
            CHECK(c.bottomRows(5).isOnes());
          }
        }
      }
    }
#endif
    // Bigger products: blocked over rows, columns and depth (where Eigen's own product
    // was compiled for narrower vectors than the CPU's), and the workspace-free
    // inference product.
    for (Eigen::Index m : {33, 200}) {
      for (Eigen::Index n : {1, 9, 70, 400}) {
        for (Eigen::Index k : {129, 300}) {
          INFO("m " << m << " n " << n << " k " << k);
          const Mat<float> a = bptest::random_matrix<float>(m, k, ++seed, -1.0, 1.0);
          const Mat<float> b = bptest::random_matrix<float>(k, n, ++seed, -1.0, 1.0);
          const Mat<float> want = a * b;
          bp::detail::GemmWorkspace<float> ws;
          Mat<float> c;
          ws.assign<false, false>(c, a, b);
          CHECK((c - want).cwiseAbs().maxCoeff() < 1e-3f);
          const Mat<float> at = a.transpose();
          const Mat<float> bt = b.transpose();
          Mat<float> acc = Mat<float>::Ones(m, n);
          ws.add<true, true>(acc, 2.0f, at, bt);
          CHECK((acc - (Mat<float>::Ones(m, n) + 2.0f * want)).cwiseAbs().maxCoeff() < 2e-3f);
          Mat<float> d;
          bp::detail::multiply(d, a, b);
          CHECK((d - want).cwiseAbs().maxCoeff() < 1e-3f);
        }
      }
    }
  }
  bp::set_max_instruction_set(before);
}
