// Conv2D and MaxPool2D: against naive direct definitions, through the gradient checker
// (as first, hidden and output layers, with stride and padding), max-pool ties, the
// batched and per-sample paths, training with every optimizer, save/load.
#include <backprop/backprop.hpp>

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../support/test_support.hpp"

namespace {

namespace bp = backprop;

static_assert(bp::Layer<bp::Conv2D<1, 28, 28, 20, 5>>);
static_assert(bp::Layer<bp::MaxPool2D<20, 24, 24, 2>>);
static_assert(bp::Conv2D<1, 28, 28, 20, 5>::outputs == 20 * 24 * 24);
static_assert(bp::Conv2D<3, 9, 7, 2, 3, bp::ReLU, 2, 1>::outputs == 2 * 5 * 4);
static_assert(bp::MaxPool2D<20, 24, 24, 2>::outputs == 20 * 12 * 12);

// The chapter-6 network of ../shared/API.md.
using Ch6 = bp::Network<bp::Conv2D<1, 28, 28, 20, 5, bp::ReLU>, bp::MaxPool2D<20, 24, 24, 2>,
                        bp::Conv2D<20, 12, 12, 40, 5, bp::ReLU>, bp::MaxPool2D<40, 8, 8, 2>,
                        bp::Dense<640, 100, bp::ReLU>, bp::Dense<100, 10, bp::Softmax>>;
static_assert(Ch6::parameter_count() ==
              (20 * 25 + 20) + (40 * 20 * 25 + 40) + (640 * 100 + 100) + (100 * 10 + 10));
static_assert(Ch6::LayerParameters<0>::model_name == "conv2d(1x28x28,20,k5,s1,p0,relu)");
static_assert(Ch6::LayerParameters<1>::model_name == "maxpool2d(20x24x24,2)");

/// out(o, y, x) = b(o) + sum W(o, (c K + i) K + j) in(c, S y + i - P, S x + j - P): the
/// definition of ../shared/API.md, one coefficient at a time.
template <int C, int H, int W, int OC, int K, int S, int P>
Eigen::MatrixXd naive_conv(const Eigen::MatrixXd& w, const Eigen::VectorXd& b,
                           const Eigen::MatrixXd& x) {
  constexpr int OH = (H + 2 * P - K) / S + 1, OW = (W + 2 * P - K) / S + 1;
  Eigen::MatrixXd z(OC * OH * OW, x.cols());
  for (Eigen::Index s = 0; s < x.cols(); ++s) {
    for (int o = 0; o < OC; ++o) {
      for (int y = 0; y < OH; ++y) {
        for (int xo = 0; xo < OW; ++xo) {
          double sum = b(o);
          for (int c = 0; c < C; ++c) {
            for (int i = 0; i < K; ++i) {
              for (int j = 0; j < K; ++j) {
                const int iy = S * y + i - P, ix = S * xo + j - P;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                sum += w(o, (c * K + i) * K + j) * x((c * H + iy) * W + ix, s);
              }
            }
          }
          z((o * OH + y) * OW + xo, s) = sum;
        }
      }
    }
  }
  return z;
}

template <class Net>
Net perturbed(std::uint64_t seed) {
  return bptest::perturbed<Net>(seed, bp::Init::xavier, 0.3);
}

/// 1 x 8 x 8 images of three classes: a horizontal bar, a vertical bar, a diagonal, at a
/// random place, with noise.
template <class T>
bp::Dataset<T> bars(Eigen::Index n, std::uint64_t seed) {
  bp::Rng rng(seed);
  bp::Dataset<T> d;
  d.inputs.setZero(64, n);
  d.targets.setZero(3, n);
  d.labels.resize(n);
  for (Eigen::Index s = 0; s < n; ++s) {
    const int k = static_cast<int>(rng.uniform(0.0, 3.0)) % 3;
    const int at = 1 + static_cast<int>(rng.uniform(0.0, 6.0)) % 6;
    for (int t = 0; t < 8; ++t) {
      const int y = k == 0 ? at : t, x = k == 1 ? at : t;
      if (k == 2 && (t + at) % 8 != x) continue;
      d.inputs(y * 8 + (k == 2 ? (t + at) % 8 : x), s) = T(1);
    }
    for (Eigen::Index r = 0; r < 64; ++r) d.inputs(r, s) += static_cast<T>(rng.uniform(-0.2, 0.2));
    d.labels(s) = k;
    d.targets(k, s) = T(1);
  }
  return d;
}

template <class T>
using Small = bp::BasicNetwork<T, bp::Conv2D<1, 8, 8, 4, 3, bp::ReLU>, bp::MaxPool2D<4, 6, 6, 2>,
                               bp::Dense<36, 3, bp::Softmax>>;

}  // namespace

TEST_CASE("A float convolutional network equals the double one at every instruction set",
          "[conv][isa]") {
  // Float products take backprop's kernels (AVX2, AVX-512) or Eigen's GEMM (portable):
  // the forward pass, the input gradient of the second conv layer and every parameter
  // gradient must equal the double network's to float rounding, from the same weights.
  using Net =
      bp::BasicNetwork<double, bp::Conv2D<3, 12, 12, 8, 3, bp::Tanh>,
                       bp::Conv2D<8, 10, 10, 6, 3, bp::Tanh, 1, 1>, bp::Dense<600, 4, bp::Sigmoid>>;
  using NetF =
      bp::BasicNetwork<float, bp::Conv2D<3, 12, 12, 8, 3, bp::Tanh>,
                       bp::Conv2D<8, 10, 10, 6, 3, bp::Tanh, 1, 1>, bp::Dense<600, 4, bp::Sigmoid>>;
  const bptest::InstructionSetCap cap(
      GENERATE(bp::InstructionSet::portable, bp::InstructionSet::avx2, bp::InstructionSet::avx512));
  if (!cap.runs()) return;
  INFO("instruction set " << cap.name());
  Net net{3};
  NetF netf{3};
  bp::detail::for_each_index<3>([&](auto i) {
    net.template layer<i>().weights() = net.template layer<i>().weights() * 0.3;
    netf.template layer<i>().weights() = net.template layer<i>().weights().template cast<float>();
    netf.template layer<i>().biases() = net.template layer<i>().biases().template cast<float>();
  });
  const Eigen::MatrixXd x = bptest::random_matrix<double>(3 * 12 * 12, 7, 41, -1.0, 1.0);
  const Eigen::MatrixXd y = bptest::random_matrix<double>(4, 7, 42, 0.1, 0.9);
  const Eigen::MatrixXf xf = x.cast<float>(), yf = y.cast<float>();
  const Eigen::MatrixXd out = net.feedforward(x);
  const Eigen::MatrixXf outf = netf.feedforward(xf);
  CHECK(bptest::relative_difference(Eigen::MatrixXd(outf.cast<double>()), out) < 1e-5);
  const auto g = net.gradient(x, y);
  const auto gf = netf.gradient(xf, yf);
  bp::detail::for_each_index<3>([&](auto i) {
    INFO("layer " << decltype(i)::value);
    const Eigen::MatrixXd w = std::get<i>(std::get<1>(gf)).template cast<double>();
    const Eigen::MatrixXd b = std::get<i>(std::get<0>(gf)).template cast<double>();
    CHECK(bptest::relative_difference(w, std::get<i>(std::get<1>(g))) < 1e-4);
    CHECK(bptest::relative_difference(b, std::get<i>(std::get<0>(g))) < 1e-4);
    CHECK(std::get<i>(std::get<1>(g)).cwiseAbs().maxCoeff() > 0);
  });
}

TEST_CASE("Conv2D computes the cross-correlation of ../shared/API.md", "[conv]") {
  SECTION("stride 1, no padding, several channels") {
    using L = bp::Conv2D<3, 7, 6, 4, 3, bp::Identity>::Instance<double>;
    L layer;
    layer.weights() = bptest::random_matrix<double>(4, 27, 1, -1.0, 1.0);
    layer.biases() = bptest::random_matrix<double>(4, 1, 2, -1.0, 1.0);
    const auto x = bptest::random_matrix<double>(3 * 7 * 6, 5, 3, -1.0, 1.0);
    Eigen::MatrixXd y;
    layer.forward(x, y);
    const auto expected = naive_conv<3, 7, 6, 4, 3, 1, 0>(layer.weights(), layer.biases(), x);
    CHECK(bptest::relative_difference(y, expected) < 1e-14);
  }
  SECTION("stride 2 and padding 1") {
    using L = bp::Conv2D<2, 9, 7, 3, 3, bp::Identity, 2, 1>::Instance<double>;
    L layer;
    layer.weights() = bptest::random_matrix<double>(3, 18, 4, -1.0, 1.0);
    layer.biases() = bptest::random_matrix<double>(3, 1, 5, -1.0, 1.0);
    const auto x = bptest::random_matrix<double>(2 * 9 * 7, 4, 6, -1.0, 1.0);
    Eigen::MatrixXd y;
    layer.forward(x, y);
    CHECK(y.rows() == 3 * 5 * 4);
    const auto expected = naive_conv<2, 9, 7, 3, 3, 2, 1>(layer.weights(), layer.biases(), x);
    CHECK(bptest::relative_difference(y, expected) < 1e-14);
  }
  SECTION("a batch larger than one inference block equals sample by sample") {
    using L = bp::Conv2D<1, 28, 28, 20, 5, bp::Tanh>::Instance<double>;
    L layer;
    layer.weights() = bptest::random_matrix<double>(20, 25, 7, -0.5, 0.5);
    layer.biases() = bptest::random_matrix<double>(20, 1, 8, -0.5, 0.5);
    const auto x = bptest::random_matrix<double>(784, 300, 9, 0.0, 1.0);
    Eigen::MatrixXd y;
    layer.forward(x, y);
    for (Eigen::Index s : {0, 71, 72, 150, 299}) {
      Eigen::MatrixXd one;
      layer.forward(x.col(s), one);
      CHECK(bptest::relative_difference(one, y.col(s)) < 1e-15);
    }
    const auto expected = naive_conv<1, 28, 28, 20, 5, 1, 0>(layer.weights(), layer.biases(), x);
    CHECK(bptest::relative_difference(y, expected.array().tanh().matrix()) < 1e-14);
  }
}

TEST_CASE("MaxPool2D takes window maxima and sends the gradient to the first maximum",
          "[conv][pool]") {
  using L = bp::MaxPool2D<2, 4, 6, 2>::Instance<double>;
  L pool;
  CHECK(pool.weights().size() == 0);
  CHECK(pool.biases().size() == 0);
  Eigen::MatrixXd x(48, 1);
  for (int k = 0; k < 48; ++k) x(k, 0) = static_cast<double>((k * 7) % 11);
  // Channel 0, window (0, 0) covers rows 0-1, columns 0-1: a tie of 5 at (0, 1), (1, 0).
  x(0, 0) = 1.0;
  x(1, 0) = 5.0;
  x(6, 0) = 5.0;
  x(7, 0) = 2.0;
  // Channel 1, window (1, 2) covers rows 2-3, columns 4-5: a NaN wins.
  x(24 + 2 * 6 + 5, 0) = std::numeric_limits<double>::quiet_NaN();
  L::Workspace ws;
  pool.forward(x, ws, nullptr);
  const Eigen::MatrixXd& y = L::output(ws);
  REQUIRE(y.rows() == 2 * 2 * 3);
  for (int c = 0; c < 2; ++c) {
    for (int oy = 0; oy < 2; ++oy) {
      for (int ox = 0; ox < 3; ++ox) {
        double m = -1e300;
        bool nan = false;
        for (int i = 0; i < 2; ++i) {
          for (int j = 0; j < 2; ++j) {
            const double v = x((c * 4 + 2 * oy + i) * 6 + 2 * ox + j, 0);
            nan = nan || std::isnan(v);
            m = std::max(m, v);
          }
        }
        const double got = y((c * 2 + oy) * 3 + ox, 0);
        if (nan) {
          CHECK(std::isnan(got));
        } else {
          CHECK(got == m);
        }
      }
    }
  }
  Eigen::MatrixXd g = Eigen::MatrixXd::Ones(12, 1);
  g(0, 0) = 3.0;
  Eigen::MatrixXd dx;
  int never = 0;
  auto sink = [&](auto, auto&, auto&&) { ++never; };
  pool.backward(x, ws, g, &dx, sink);
  CHECK(never == 0);
  CHECK(dx(1, 0) == 3.0);  // the first of the tied maxima in row-major order
  CHECK(dx(6, 0) == 0.0);
  CHECK(dx(24 + 2 * 6 + 5, 0) == 1.0);  // the NaN
  CHECK(dx.sum() == Approx(3.0 + 11.0));
  // Inference gives the same maxima.
  Eigen::MatrixXd inf;
  pool.forward(x, inf);
  CHECK(inf.cwiseEqual(y).count() + 1 == 12);  // all but the NaN compare equal
}

TEST_CASE("Convolutional networks pass the gradient checker", "[conv][grad]") {
  SECTION("conv first, pool, dense; quadratic cost") {
    using Net = bp::BasicNetwork<double, bp::Conv2D<2, 6, 6, 3, 3, bp::Tanh>,
                                 bp::MaxPool2D<3, 4, 4, 2>, bp::Dense<12, 4, bp::Sigmoid>>;
    const auto net = perturbed<Net>(1);
    const auto X = bptest::random_matrix<double>(72, 5, 2, -1.0, 1.0);
    const auto Y = bptest::random_distribution<double>(4, 5, 3);
    const auto r = bp::testing::check_gradients(net, X, Y);
    INFO("worst: " << r.worst << " error " << r.max_error);
    CHECK(r.checked == Net::parameter_count());
    CHECK(r.passed(1e-7));
  }
  SECTION("two conv-pool stages (dC/dx through a pool into a conv), softmax output") {
    using Net = bp::BasicNetwork<double, bp::Conv2D<1, 10, 10, 3, 3, bp::Tanh>,
                                 bp::MaxPool2D<3, 8, 8, 2>, bp::Conv2D<3, 4, 4, 2, 3, bp::Sigmoid>,
                                 bp::MaxPool2D<2, 2, 2, 2>, bp::Dense<2, 3, bp::Softmax>>;
    const auto net = perturbed<Net>(4);
    const auto X = bptest::random_matrix<double>(100, 4, 5, -1.0, 1.0);
    const auto Y = bptest::random_distribution<double>(3, 4, 6);
    const auto r = bp::testing::check_gradients<bp::LogLikelihoodCost>(net, X, Y);
    INFO("worst: " << r.worst << " error " << r.max_error);
    CHECK(r.checked == Net::parameter_count());
    CHECK(r.passed(1e-7));
  }
  SECTION("stride 2, padding 1, after a dense layer, as the output layer") {
    using Net = bp::BasicNetwork<double, bp::Dense<5, 2 * 5 * 5, bp::Tanh>,
                                 bp::Conv2D<2, 5, 5, 3, 3, bp::Tanh, 2, 1>,
                                 bp::Conv2D<3, 3, 3, 2, 2, bp::Sigmoid, 1, 1>>;
    static_assert(Net::outputs == 2 * 4 * 4);
    const auto net = perturbed<Net>(7);
    const auto X = bptest::random_matrix<double>(5, 3, 8, -1.0, 1.0);
    const auto Y = bptest::random_matrix<double>(32, 3, 9, 0.0, 1.0);
    SECTION("quadratic") {
      const auto r = bp::testing::check_gradients(net, X, Y);
      INFO("worst: " << r.worst << " error " << r.max_error);
      CHECK(r.checked == Net::parameter_count());
      CHECK(r.passed(1e-7));
    }
    SECTION("cross-entropy") {
      const auto r = bp::testing::check_gradients<bp::CrossEntropyCost>(net, X, Y);
      INFO("worst: " << r.worst << " error " << r.max_error);
      CHECK(r.passed(1e-7));
    }
  }
}

TEST_CASE("update_mini_batch on a conv net is w -= eta/m * gradient; backprop sums to gradient",
          "[conv]") {
  using Net = Small<double>;
  auto net = perturbed<Net>(13);
  const auto data = bars<double>(7, 14);
  auto copy = net;
  const auto grads = copy.gradient(data.inputs, data.targets);
  auto sum = net.backprop(data.inputs.col(0), data.targets.col(0));
  for (Eigen::Index c = 1; c < 7; ++c) {
    const auto g = net.backprop(data.inputs.col(c), data.targets.col(c));
    bp::detail::for_each_index<3>([&](auto i) {
      std::get<i>(sum.first) += std::get<i>(g.first);
      std::get<i>(sum.second) += std::get<i>(g.second);
    });
  }
  CHECK(std::get<1>(grads.second).size() == 0);  // the pool has no parameters
  net.update_mini_batch(data.inputs, data.targets, 0.5);
  bp::detail::for_each_index<3>([&](auto i) {
    CHECK(bptest::relative_difference(std::get<i>(sum.second), std::get<i>(grads.second)) < 1e-13);
    CHECK(bptest::relative_difference(std::get<i>(sum.first), std::get<i>(grads.first)) < 1e-13);
    const auto w = (copy.layer<i>().weights() - 0.5 / 7 * std::get<i>(grads.second)).eval();
    const auto b = (copy.layer<i>().biases() - 0.5 / 7 * std::get<i>(grads.first)).eval();
    CHECK(bptest::relative_difference(net.layer<i>().weights(), w) < 1e-14);
    CHECK(bptest::relative_difference(net.layer<i>().biases(), b) < 1e-14);
  });
}

TEMPLATE_TEST_CASE("sgd trains a convolutional network with every optimizer", "[conv][training]",
                   float, double) {
  const auto train = bars<TestType>(600, 15);
  const auto test = bars<TestType>(300, 16);
  const bp::SgdOptions options{
      .epochs = 8, .mini_batch_size = 10, .eta = 0.1, .on_epoch = [](const bp::EpochReport&) {}};
  auto run = [&](const auto& optimizer, double eta, double lambda) {
    Small<TestType> net{17, bp::Init::he};
    const Small<TestType> before = net;
    const long long untrained = net.evaluate(test.inputs, test.labels);
    bp::SgdOptions o = options;
    o.eta = eta;
    o.lambda = lambda;
    const auto h = net.template sgd<bp::LogLikelihoodCost>(train, o, &test, optimizer);
    CHECK(h.epochs.size() == 8);
    const long long correct = net.evaluate(test.inputs, test.labels);
    INFO("untrained " << untrained << ", trained " << correct << " of 300");
    CHECK(correct >= 285);  // 95%; untrained about 33%
    CHECK(net.template layer<0>().weights() != before.template layer<0>().weights());
    CHECK(net.template layer<0>().biases() != before.template layer<0>().biases());
  };
  SECTION("PlainSgd") { run(bp::PlainSgd{}, 0.1, 0.0); }
  SECTION("PlainSgd with L2") { run(bp::PlainSgd{}, 0.1, 1.0); }
  SECTION("Momentum") { run(bp::Momentum{}, 0.02, 0.0); }
  SECTION("Adam") { run(bp::Adam{}, 0.005, 0.0); }
  SECTION("dropout after the convolution") {
    using Drop =
        bp::BasicNetwork<TestType, bp::Conv2D<1, 8, 8, 4, 3, bp::ReLU>, bp::MaxPool2D<4, 6, 6, 2>,
                         bp::DropoutDense<36, 20, bp::ReLU, std::ratio<1, 4>>,
                         bp::Dense<20, 3, bp::Softmax>>;
    Drop net{18, bp::Init::he};
    bp::SgdOptions o = options;
    o.epochs = 10;
    net.template sgd<bp::LogLikelihoodCost>(train, o);
    CHECK(net.evaluate(test.inputs, test.labels) >= 280);
  }
  SECTION("L2 shrinks the convolution weights") {
    Small<TestType> net{17, bp::Init::he};
    const double before = net.template layer<0>().weights().norm();
    bp::SgdOptions o = options;
    o.epochs = 1;
    o.lambda = 2000.0;
    net.template sgd<bp::LogLikelihoodCost>(train, o);
    CHECK(net.template layer<0>().weights().norm() < 0.5 * before);
  }
}

TEST_CASE("The divergence guard restores a diverged conv net", "[conv][training]") {
  const auto train = bars<float>(200, 19);
  Small<float> net{20, bp::Init::he};
  const Small<float> before = net;
  bp::SgdOptions o{.epochs = 2, .mini_batch_size = 10, .eta = 1e30};
  o.on_epoch = [](const bp::EpochReport&) {};
  CHECK_THROWS_AS(net.sgd<bp::LogLikelihoodCost>(train, o), bp::DivergenceError);
  CHECK(net == before);
}

TEMPLATE_TEST_CASE("A convolutional network saves and loads exactly", "[conv][model_io]", float,
                   double) {
  const auto net = perturbed<Small<TestType>>(21);
  std::stringstream file;
  net.save(file);
  Small<TestType> loaded{99};
  REQUIRE_FALSE(loaded == net);
  loaded.load(file);
  CHECK(loaded == net);
  const auto data = bars<TestType>(20, 22);
  CHECK(loaded.feedforward(data.inputs) == net.feedforward(data.inputs));

  // Another geometry with the same sizes is rejected by the record name.
  using Other = bp::BasicNetwork<TestType, bp::Conv2D<1, 8, 8, 4, 3, bp::Tanh>,
                                 bp::MaxPool2D<4, 6, 6, 2>, bp::Dense<36, 3, bp::Softmax>>;
  Other other{1};
  const Other other_before = other;
  std::stringstream again(file.str());
  CHECK_THROWS_WITH(other.load(again), Catch::Contains("conv2d(1x8x8,4,k3,s1,p0,relu)") &&
                                           Catch::Contains("conv2d(1x8x8,4,k3,s1,p0,tanh)"));
  CHECK(other == other_before);

  const std::string bytes = file.str();
  for (std::size_t cut : {std::size_t{0}, std::size_t{20}, bytes.size() / 2, bytes.size() - 1}) {
    std::stringstream truncated(bytes.substr(0, cut));
    Small<TestType> target{5};
    const Small<TestType> target_before = target;
    CHECK_THROWS_AS(target.load(truncated), bp::ModelFormatError);
    CHECK(target == target_before);
  }
}

TEST_CASE("Conv feedforward: one sample equals the batch; const and thread-safe", "[conv]") {
  const auto net = perturbed<Small<double>>(23);
  const auto data = bars<double>(40, 24);
  const Eigen::MatrixXd batch = net.feedforward(data.inputs);
  for (Eigen::Index j = 0; j < 5; ++j) {
    const Eigen::VectorXd one = net.feedforward(Eigen::VectorXd(data.inputs.col(j)));
    CHECK(bptest::relative_difference(one, batch.col(j)) < 1e-14);
  }
  std::vector<Eigen::MatrixXd> results(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 20; ++k)
        results[static_cast<std::size_t>(t)] = net.feedforward(data.inputs);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(results[0] == batch);
  CHECK(results[1] == batch);
}

TEST_CASE("A Dropout layer after a pool: masked gradients match finite differences",
          "[conv][dropout][grad]") {
  using Net =
      bp::BasicNetwork<double, bp::Conv2D<1, 6, 6, 2, 3, bp::Tanh>, bp::MaxPool2D<2, 4, 4, 2>,
                       bp::Dropout<8, std::ratio<1, 2>>, bp::Dense<8, 3, bp::Softmax>>;
  static_assert(Net::parameter_count() == 2 * 9 + 2 + 8 * 3 + 3);
  auto net = perturbed<Net>(25);
  const auto X = bptest::random_matrix<double>(36, 6, 26, -1.0, 1.0);
  const auto Y = bptest::random_distribution<double>(3, 6, 27);
  // Without masks (gradient, backprop) the layer is the identity.
  const auto r = bp::testing::check_gradients<bp::LogLikelihoodCost>(net, X, Y);
  INFO("worst: " << r.worst << " error " << r.max_error);
  CHECK(r.passed(1e-7));
  const std::uint64_t mask_seed = 5;
  const auto grads = net.dropout_gradient<bp::LogLikelihoodCost>(X, Y, mask_seed);
  const auto plain = net.gradient<bp::LogLikelihoodCost>(X, Y);
  CHECK(bptest::relative_difference(std::get<0>(grads.second), std::get<0>(plain.second)) > 1e-3);
  const double h = 1e-6;
  double worst = 0.0;
  auto check = [&](auto& param, const auto& analytic) {
    for (Eigen::Index i = 0; i < param.rows(); ++i) {
      for (Eigen::Index c = 0; c < param.cols(); ++c) {
        const double saved = param(i, c);
        param(i, c) = saved + h;
        const double plus = net.dropout_batch_cost<bp::LogLikelihoodCost>(X, Y, mask_seed);
        param(i, c) = saved - h;
        const double minus = net.dropout_batch_cost<bp::LogLikelihoodCost>(X, Y, mask_seed);
        param(i, c) = saved;
        worst = std::max(worst, std::abs((plus - minus) / (2 * h) - analytic(i, c)));
      }
    }
  };
  check(net.layer<0>().weights(), std::get<0>(grads.second));
  check(net.layer<0>().biases(), std::get<0>(grads.first));
  check(net.layer<3>().weights(), std::get<3>(grads.second));
  CHECK(worst < 1e-7);
  // Inference ignores the layer; the model record is "dropout" and holds nothing.
  const auto out = net.feedforward(X);
  using NoDrop = bp::BasicNetwork<double, bp::Conv2D<1, 6, 6, 2, 3, bp::Tanh>,
                                  bp::MaxPool2D<2, 4, 4, 2>, bp::Dense<8, 3, bp::Softmax>>;
  NoDrop same{1};
  same.layer<0>() = net.layer<0>();
  same.layer<2>() = net.layer<3>();
  CHECK(same.feedforward(X) == out);
  std::stringstream file;
  net.save(file);
  Net loaded{3};
  loaded.load(file);
  CHECK(loaded == net);
}

TEST_CASE("expand_by_shifts makes network3's expanded data", "[conv][data]") {
  bp::Dataset<float> d;
  d.inputs.setZero(2 * 3 * 4, 2);  // two 2-channel 3 x 4 images
  for (Eigen::Index r = 0; r < 24; ++r) {
    d.inputs(r, 0) = static_cast<float>(r + 1);
    d.inputs(r, 1) = static_cast<float>(-r - 1);
  }
  d.labels = Eigen::VectorXi{{4, 7}};
  d.targets = bp::one_hot<float>(d.labels, 8);
  const auto e = bp::expand_by_shifts(d, 3, 4, 2);
  REQUIRE(e.size() == 10);
  auto at = [&](Eigen::Index col, int c, int y, int x) {
    return e.inputs((c * 3 + y) * 4 + x, col);
  };
  auto orig = [&](Eigen::Index col, int c, int y, int x) {
    return d.inputs((c * 3 + y) * 4 + x, col);
  };
  for (Eigen::Index s = 0; s < 2; ++s) {
    CHECK(e.inputs.col(5 * s) == d.inputs.col(s));
    CHECK(e.labels(5 * s + 3) == d.labels(s));
    CHECK(e.targets.col(5 * s + 4) == d.targets.col(s));
    for (int c = 0; c < 2; ++c) {
      for (int y = 0; y < 3; ++y) {
        for (int x = 0; x < 4; ++x) {
          CHECK(at(5 * s + 1, c, y, x) == (y + 1 < 3 ? orig(s, c, y + 1, x) : 0.0f));  // up
          CHECK(at(5 * s + 2, c, y, x) == (y > 0 ? orig(s, c, y - 1, x) : 0.0f));      // down
          CHECK(at(5 * s + 3, c, y, x) == (x + 1 < 4 ? orig(s, c, y, x + 1) : 0.0f));  // left
          CHECK(at(5 * s + 4, c, y, x) == (x > 0 ? orig(s, c, y, x - 1) : 0.0f));      // right
        }
      }
    }
  }
  CHECK_THROWS_WITH(bp::expand_by_shifts(d, 28, 28),
                    "expand_by_shifts: the inputs have 24 rows, images of 1 x 28 x 28 need 784");
}

TEST_CASE("majority_vote counts argmax votes; ties go to the larger summed output",
          "[conv][data]") {
  // Three classifiers, three samples, three classes.
  const Eigen::MatrixXf a{{0.9f, 0.1f, 0.2f}, {0.05f, 0.8f, 0.3f}, {0.05f, 0.1f, 0.5f}};
  const Eigen::MatrixXf b{{0.6f, 0.1f, 0.1f}, {0.3f, 0.2f, 0.45f}, {0.1f, 0.7f, 0.45f}};
  const Eigen::MatrixXf c{{0.2f, 0.3f, 0.1f}, {0.7f, 0.6f, 0.2f}, {0.1f, 0.1f, 0.7f}};
  const Eigen::VectorXi v = bp::majority_vote(std::vector<Eigen::MatrixXf>{a, b, c});
  CHECK(v(0) == 0);  // votes 0, 0, 1
  CHECK(v(1) == 1);  // votes 1, 2, 1
  CHECK(v(2) == 2);  // votes 2, 1, 2
  // A 1-1 tie between classes 0 and 1: class 1 has the larger sum (0.2 + 0.9 vs 0.5 + 0.2).
  const Eigen::MatrixXf p{{0.5f}, {0.2f}};
  const Eigen::MatrixXf q{{0.2f}, {0.9f}};
  const Eigen::MatrixXf r{{0.5f}, {0.2f}};
  CHECK(bp::majority_vote(std::vector<Eigen::MatrixXf>{p, q})(0) == 1);
  CHECK(bp::majority_vote(std::vector<Eigen::MatrixXf>{p, q, r})(0) == 0);
  CHECK_THROWS_AS(bp::majority_vote(std::vector<Eigen::MatrixXf>{}), bp::ShapeError);
  CHECK_THROWS_WITH(bp::majority_vote(std::vector<Eigen::MatrixXf>{a, p}),
                    "majority_vote: output 1 is 2 x 1, output 0 is 3 x 3");
}

// ---- BatchNorm and BatchNorm2D ----

namespace {

static_assert(bp::Layer<bp::BatchNorm<30>>);
static_assert(bp::Layer<bp::BatchNorm2D<20, 24, 24, bp::ReLU>>);
static_assert(bp::BatchNorm2D<20, 24, 24>::outputs == 20 * 24 * 24);
static_assert(bp::BatchNorm<30, bp::ReLU>::Instance<float>::model_name ==
              "batchnorm(30,eps1/100000,m1/10,relu)");
static_assert(bp::BatchNorm2D<2, 3, 4>::Instance<float>::model_name ==
              "batchnorm2d(2x3x4,eps1/100000,m1/10,identity)");

/// The matrices of tests/fixtures/batchnorm/torch_batchnorm.txt of one case.
std::map<std::string, Eigen::MatrixXd> torch_batchnorm(const std::string& which) {
  std::ifstream is(std::string(BACKPROP_FIXTURE_DIR) + "/batchnorm/torch_batchnorm.txt");
  REQUIRE(is);
  std::map<std::string, Eigen::MatrixXd> m;
  std::string line;
  while (std::getline(is, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string c, name;
    Eigen::Index rows = 0, cols = 0;
    ls >> c >> name >> rows >> cols;
    if (c != which) continue;
    Eigen::MatrixXd v(rows, cols);
    for (Eigen::Index r = 0; r < rows; ++r)
      for (Eigen::Index k = 0; k < cols; ++k) ls >> v(r, k);
    REQUIRE(ls);
    m[name] = v;
  }
  REQUIRE(m.size() == 13);
  return m;
}

/// Keeps the gradients a layer's backward pass reports.
struct KeepGradients {
  Eigen::MatrixXd dw;
  Eigen::VectorXd db;
  template <int S, class P, class Add>
  void operator()(std::integral_constant<int, S>, P&, Add&& add) {
    if constexpr (S == 0) {
      add(dw, 1.0, false);
    } else {
      add(db, 1.0, false);
    }
  }
};

template <class Layer>
void check_against_torch(const std::string& which) {
  auto t = torch_batchnorm(which);
  Layer l;
  l.weights() = t["gamma"];
  l.biases() = t["beta"];
  l.state() << t["running_mean0"], t["running_var0"];
  typename Layer::Workspace ws;
  l.forward(t["x"], ws, nullptr);
  CHECK(bptest::relative_difference(Layer::output(ws), t["y"]) < 1e-12);
  Eigen::MatrixXd g = t["g"], dx;
  KeepGradients sink;
  l.backward(t["x"], ws, g, &dx, sink);
  CHECK(bptest::relative_difference(dx, t["dx"]) < 1e-12);
  CHECK(bptest::relative_difference(sink.dw, t["dgamma"]) < 1e-12);
  CHECK(bptest::relative_difference(sink.db, t["dbeta"]) < 1e-12);
  CHECK(bptest::relative_difference(l.running_mean(), t["running_mean"]) < 1e-12);
  CHECK(bptest::relative_difference(l.running_var(), t["running_var"]) < 1e-12);
  Eigen::MatrixXd y;
  l.forward(t["x"], y);  // inference: the running statistics
  CHECK(bptest::relative_difference(y, t["y_eval"]) < 1e-12);
}

}  // namespace

TEST_CASE("BatchNorm and BatchNorm2D equal PyTorch's training and eval passes", "[batchnorm]") {
  check_against_torch<bp::BatchNorm<3>::Instance<double>>("bn1d");
  check_against_torch<bp::BatchNorm2D<2, 3, 4>::Instance<double>>("bn2d");
}

TEST_CASE("BatchNorm passes the gradient checker as hidden and output layer", "[batchnorm]") {
  using Mlp = bp::BasicNetwork<double, bp::Dense<4, 5, bp::Identity>, bp::BatchNorm<5, bp::Tanh>,
                               bp::Dense<5, 3, bp::Sigmoid>, bp::BatchNorm<3, bp::Sigmoid>>;
  const auto x = bptest::random_matrix<double>(4, 6, 1);
  const auto y = bptest::random_matrix<double>(3, 6, 2, 0.1, 0.9);
  const auto r = bp::testing::check_gradients(bptest::perturbed<Mlp>(3), x, y);
  INFO(r.worst);
  CHECK(r.checked == 4 * 5 + 5 + 5 + 5 + 5 * 3 + 3 + 3 + 3);
  CHECK(r.passed(1e-7));
  using Cnn = bp::BasicNetwork<double, bp::Conv2D<2, 6, 6, 3, 3, bp::Identity, 1, 1>,
                               bp::BatchNorm2D<3, 6, 6, bp::Tanh>, bp::MaxPool2D<3, 6, 6, 2>,
                               bp::Dropout<27>, bp::Dense<27, 4, bp::Softmax>>;
  const auto xc = bptest::random_matrix<double>(72, 3, 4);
  const auto yc = bptest::random_distribution<double>(4, 3, 5);
  const auto rc =
      bp::testing::check_gradients<bp::LogLikelihoodCost>(bptest::perturbed<Cnn>(6), xc, yc);
  INFO(rc.worst);
  CHECK(rc.passed(1e-7));
}

TEST_CASE("BatchNorm: batch statistics in training, running statistics at inference",
          "[batchnorm]") {
  using Net = bp::Network<bp::Dense<4, 6, bp::Identity>, bp::BatchNorm<6, bp::ReLU>,
                          bp::Dense<6, 2, bp::Sigmoid>>;
  Net net(1, bp::Init::xavier);
  CHECK(net.layer<1>().running_mean().isZero());
  CHECK(net.layer<1>().running_var().isOnes());
  const auto x = bptest::random_matrix<float>(4, 10, 7, 2.0, 5.0);  // mean far from 0
  const auto y = bptest::random_matrix<float>(2, 10, 8, 0.1, 0.9);
  const Eigen::MatrixXf before = net.feedforward(x);
  net.update_mini_batch(x, y, 0.1f);
  // One pass moved the running mean a tenth of the way to the batch mean.
  const Eigen::VectorXf z_mean = (net.layer<0>().weights() * x).rowwise().mean() +
                                 net.layer<0>().biases();  // after the update: approximately
  CHECK(net.layer<1>().running_mean().norm() > 0.0f);
  CHECK(net.layer<1>().running_mean().norm() < z_mean.norm());
  for (int k = 0; k < 200; ++k) (void)net.gradient(x, y);  // a training pass: statistics only
  const Eigen::VectorXf z_now =
      ((net.layer<0>().weights() * x).colwise() + net.layer<0>().biases()).rowwise().mean();
  CHECK(bptest::relative_difference(net.layer<1>().running_mean(), z_now) < 1e-4);
  CHECK(!before.isApprox(net.feedforward(x)));
  // A batch of one sample cannot be normalized: a clear error, the network unchanged.
  const Net saved = net;
  CHECK_THROWS_WITH(net.update_mini_batch(x.col(0), y.col(0), 0.1f),
                    Catch::Matchers::Contains("at least two values per channel"));
  CHECK(net == saved);
  // Initialisation resets the statistics.
  net.initialize(3);
  CHECK(net.layer<1>().running_var().isOnes());
  CHECK(net.layer<1>().weights().isOnes());
}

TEST_CASE("BatchNorm networks save, load and train with every optimizer", "[batchnorm]") {
  using Net =
      bp::Network<bp::Conv2D<1, 8, 8, 4, 3, bp::Identity>, bp::BatchNorm2D<4, 6, 6, bp::ReLU>,
                  bp::MaxPool2D<4, 6, 6, 2>, bp::Dense<36, 12, bp::Identity>,
                  bp::BatchNorm<12, bp::ReLU>, bp::Dense<12, 3, bp::Softmax>>;
  const auto train = bars<float>(600, 21);
  const auto test = bars<float>(300, 22);
  auto run = [&](const auto& optimizer, double eta) {
    Net net(23, bp::Init::he);
    bp::SgdOptions o{.epochs = 5, .mini_batch_size = 10, .eta = eta, .on_epoch = bp::quiet};
    net.sgd<bp::LogLikelihoodCost>(train, o, &test, optimizer);
    const long long correct = net.evaluate(test.inputs, test.labels);
    INFO("trained " << correct << " of 300");
    CHECK(correct >= 285);
    std::stringstream file(std::ios::in | std::ios::out | std::ios::binary);
    net.save(file);
    Net back(1);
    back.load(file);
    CHECK(back == net);
    CHECK(back.layer<1>().state() == net.layer<1>().state());
    CHECK(back.evaluate(test.inputs, test.labels) == correct);
  };
  SECTION("PlainSgd") { run(bp::PlainSgd{}, 0.1); }
  SECTION("Momentum") { run(bp::Momentum{}, 0.02); }
  SECTION("Adam") { run(bp::Adam{}, 0.005); }
  SECTION("a truncated file names the running statistics") {
    using Last = bp::Network<bp::Dense<3, 4, bp::Identity>, bp::BatchNorm<4, bp::Sigmoid>>;
    Last net(1);
    std::ostringstream os(std::ios::binary);
    net.save(os);
    const std::string bytes = os.str();  // ..., 8 floats of running statistics, checksum
    std::istringstream is(bytes.substr(0, bytes.size() - 8), std::ios::binary);
    Last other(2);
    CHECK_THROWS_WITH(other.load(is), Catch::Matchers::Contains("the state (running statistics)"));
  }
}
