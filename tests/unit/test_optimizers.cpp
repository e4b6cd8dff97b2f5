// Better learning: optimizers (built-in and user-written), L1/L2, early stopping,
// learning-rate schedules and dropout.
#include <backprop/backprop.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <ratio>
#include <sstream>
#include <vector>

#include "../support/test_support.hpp"

namespace bp = backprop;
using Catch::Matchers::Contains;
using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;

namespace {

// A user-written optimizer through the documented interface: plain SGD, but via the
// mean-gradient buffer, so it must agree with the fused PlainSgd path.
struct UserSgd {
  template <class Scalar>
  struct State {
    long long calls = 0;
  };
  template <class P, class G, class S>
  void update(P& param, const G& mean_gradient, S& state, double eta, long long step) const {
    ++state.calls;
    CHECK(step == state.calls);  // one update per mini-batch, counted from 1
    param -= static_cast<typename P::Scalar>(eta) * mean_gradient;
  }
};
static_assert(bp::Optimizer<UserSgd>);
static_assert(bp::Optimizer<bp::PlainSgd> && bp::Optimizer<bp::Momentum> &&
              bp::Optimizer<bp::Adam>);
static_assert(!bp::Optimizer<int>);

// One input, one identity output: a = w x + b, C = 1/2 (a - y)^2, so
// dC/dw = (a - y) x and dC/db = a - y.
using Linear = bp::BasicNetwork<double, bp::Dense<1, 1, bp::Identity>>;
using Small = bp::BasicNetwork<double, bp::Dense<3, 4, bp::Tanh>, bp::Dense<4, 2, bp::Sigmoid>>;
using Classifier =
    bp::BasicNetwork<double, bp::Dense<2, 4, bp::Tanh>, bp::Dense<4, 2, bp::Softmax>>;
using WithDropout = bp::BasicNetwork<double, bp::DropoutDense<3, 5, bp::Sigmoid, std::ratio<1, 2>>,
                                     bp::Dense<5, 2, bp::Sigmoid>>;
using ZeroDropout = bp::BasicNetwork<double, bp::DropoutDense<3, 5, bp::Sigmoid, std::ratio<0>>,
                                     bp::Dense<5, 2, bp::Sigmoid>>;
using NoDropout =
    bp::BasicNetwork<double, bp::Dense<3, 5, bp::Sigmoid>, bp::Dense<5, 2, bp::Sigmoid>>;

bp::Dataset<double> one_sample(double x, double y) {
  bp::Dataset<double> d;
  d.inputs = Eigen::MatrixXd::Constant(1, 1, x);
  d.targets = Eigen::MatrixXd::Constant(1, 1, y);
  return d;
}

bp::Dataset<double> regression_data(Eigen::Index n, std::uint64_t seed) {
  bp::Dataset<double> d;
  d.inputs = bptest::random_matrix<double>(3, n, seed);
  d.targets = bptest::random_matrix<double>(2, n, seed + 1, 0.0, 1.0);
  return d;
}

// Two classes separated by the sign of x0 (or of -x0 with flip).
bp::Dataset<double> sign_classes(Eigen::Index n, std::uint64_t seed, bool flip) {
  bp::Dataset<double> d;
  d.inputs = bptest::random_matrix<double>(2, n, seed);
  d.labels.resize(n);
  for (Eigen::Index i = 0; i < n; ++i) d.labels(i) = ((d.inputs(0, i) > 0) != flip) ? 1 : 0;
  d.targets = bp::one_hot<double>(d.labels, 2);
  return d;
}

template <class Opt>
Eigen::MatrixXd two_updates(const Opt& opt) {
  Eigen::MatrixXd p(1, 2), g1(1, 2), g2(1, 2);
  p << 1.0, -2.0;
  g1 << 0.5, 1.0;
  g2 << -1.0, 2.0;
  typename Opt::template State<double> state;
  opt.update(p, std::as_const(g1), state, 0.1, 1);
  opt.update(p, std::as_const(g2), state, 0.1, 2);
  return p;
}

void check_row(const Eigen::MatrixXd& p, double a, double b, double tol = 1e-12) {
  CHECK_THAT(p(0, 0), WithinAbs(a, tol));
  CHECK_THAT(p(0, 1), WithinAbs(b, tol));
}

}  // namespace

TEST_CASE("Momentum and Nesterov updates match a hand computation", "[optimizers]") {
  // p0 = (1, -2), G1 = (0.5, 1), G2 = (-1, 2), mu 0.9, eta 0.1.
  // v1 = -eta G1 = (-0.05, -0.1); v2 = mu v1 - eta G2 = (0.055, -0.29).
  check_row(two_updates(bp::Momentum{}), 1.0 - 0.05 + 0.055, -2.0 - 0.1 - 0.29);
  // Nesterov: p += mu v - eta G with the new v.
  // p1 = (1 - 0.045 - 0.05, -2 - 0.09 - 0.1); p2 = p1 + (0.0495 + 0.1, -0.261 - 0.2).
  check_row(two_updates(bp::Momentum{.mu = 0.9, .nesterov = true}), 1.0545, -2.651);
  // mu = 0 is plain SGD: p - eta (G1 + G2).
  check_row(two_updates(bp::Momentum{.mu = 0.0}), 1.05, -2.3);
  check_row(two_updates(bp::PlainSgd{}), 1.05, -2.3);
}

TEST_CASE("Adam and AdamW updates match a hand computation", "[optimizers]") {
  // Step 1 moves each coordinate by eta against the sign of G (bias-corrected m/sqrt(v)
  // = G/|G|); step 2 computed by hand from m2 = (-0.055, 0.29), v2 = (0.00124975,
  // 0.004999), corrections 1/0.19 and 1/0.001999.
  Eigen::MatrixXd p(1, 2), g1(1, 2);
  p << 1.0, -2.0;
  g1 << 0.5, 1.0;
  bp::Adam::State<double> state;
  bp::Adam{}.update(p, std::as_const(g1), state, 0.1, 1);
  check_row(p, 0.9, -2.1, 1e-8);
  check_row(two_updates(bp::Adam{}), 0.936610354240565, -2.19651820097183);
  // AdamW: also p <- p - eta wd p each step (decoupled from the moments).
  check_row(two_updates(bp::Adam{.weight_decay = 0.01}), 0.934711354238565, -2.19242020097283);
}

TEST_CASE("Adam through sgd counts its steps from 1 in each call", "[optimizers][adam]") {
  // a = w x + b with x = 1, y = 0: G_w = G_b = w + b. One sample, so one step per epoch.
  Linear net{1};
  net.layer<0>().weights()(0, 0) = 0.5;
  net.layer<0>().biases()(0) = 0.25;
  const bp::Adam adam{};
  const auto data = one_sample(1.0, 0.0);
  net.sgd(data, {.epochs = 2, .mini_batch_size = 1, .eta = 0.01, .on_epoch = bp::quiet}, nullptr,
          adam);
  // Hand: step 1 moves both by -0.01 (G1 = 0.75 > 0); G2 = 0.73.
  const double g1 = 0.75, g2 = 0.73;
  const double m2 = 0.9 * 0.1 * g1 + 0.1 * g2;
  const double v2 = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2;
  const double move2 = 0.01 * (m2 / 0.19) / (std::sqrt(v2 / 0.001999) + 1e-8);
  CHECK_THAT(net.layer<0>().weights()(0, 0), WithinAbs(0.5 - 0.01 - move2, 1e-9));
  CHECK_THAT(net.layer<0>().biases()(0), WithinAbs(0.25 - 0.01 - move2, 1e-9));
}

TEST_CASE("L1 and L2 regularisation follow the book's updates for two steps",
          "[optimizers][regularisation]") {
  // n = 1 sample, x = 2, y = 1; w0 = 0.5, b0 = -0.25, eta 0.1, lambda 0.2, lambda1 0.3:
  // w' = (1 - eta lambda) w - eta lambda1 sign(w) - eta (a - y) x,  b' = b - eta (a - y).
  const double eta = 0.1, lambda = 0.2, lambda1 = 0.3, x = 2.0, y = 1.0;
  double w = 0.5, b = -0.25;
  for (int k = 0; k < 2; ++k) {
    const double err = w * x + b - y;
    w = (1 - eta * lambda) * w - eta * lambda1 * (w > 0 ? 1.0 : -1.0) - eta * err * x;
    b -= eta * err;
  }
  // By hand: step 1: err = -0.25, w = 0.49 - 0.03 + 0.05 = 0.51, b = -0.225;
  // step 2: err = -0.205, w = 0.4998 - 0.03 + 0.041 = 0.5108, b = -0.2045.
  CHECK_THAT(w, WithinAbs(0.5108, 1e-12));
  CHECK_THAT(b, WithinAbs(-0.2045, 1e-12));
  const auto data = one_sample(x, y);
  const bp::SgdOptions options{.epochs = 2,
                               .mini_batch_size = 1,
                               .eta = eta,
                               .lambda = lambda,
                               .on_epoch = bp::quiet,
                               .lambda1 = lambda1};
  auto check = [&](const Linear& net) {
    CHECK_THAT(net.layer<0>().weights()(0, 0), WithinAbs(w, 1e-12));
    CHECK_THAT(net.layer<0>().biases()(0), WithinAbs(b, 1e-12));
  };
  Linear fused{1};
  fused.layer<0>().weights()(0, 0) = 0.5;
  fused.layer<0>().biases()(0) = -0.25;
  Linear buffered = fused;
  fused.sgd(data, options);
  check(fused);
  buffered.sgd(data, options, nullptr, UserSgd{});  // G = grad + lambda w + lambda1 sign(w)
  check(buffered);
}

TEST_CASE("A user-written optimizer equals the fused PlainSgd path", "[optimizers][concept]") {
  const auto data = regression_data(23, 5);
  const bp::SgdOptions options{.epochs = 3,
                               .mini_batch_size = 5,
                               .eta = 0.7,
                               .lambda = 0.5,
                               .on_epoch = bp::quiet,
                               .lambda1 = 0.1};
  Small fused{4}, user{4}, momentum_zero{4};
  fused.sgd(data, options);
  user.sgd(data, options, nullptr, UserSgd{});
  momentum_zero.sgd(data, options, nullptr, bp::Momentum{.mu = 0.0});
  CHECK(bptest::max_parameter_difference(user, fused) < 1e-13);
  CHECK(bptest::max_parameter_difference(momentum_zero, fused) < 1e-13);
  // update_mini_batch stays plain SGD without regularisation.
  Small a{4}, b{4};
  a.update_mini_batch(data.inputs, data.targets, 0.7);
  b.sgd(data,
        {.epochs = 1, .mini_batch_size = 23, .eta = 0.7, .shuffle = false, .on_epoch = bp::quiet},
        nullptr, UserSgd{});
  CHECK(bptest::max_parameter_difference(a, b) < 1e-13);
}

TEST_CASE("total_cost adds the L2 and L1 terms", "[optimizers][regularisation]") {
  const auto data = regression_data(8, 9);
  const Small net{2};
  const double base = net.total_cost(data);
  double sq = 0.0, abs = 0.0;
  sq += net.layer<0>().weights().squaredNorm() + net.layer<1>().weights().squaredNorm();
  abs += net.layer<0>().weights().cwiseAbs().sum() + net.layer<1>().weights().cwiseAbs().sum();
  CHECK_THAT(net.total_cost(data, 2.0, 0.0), WithinRel(base + 0.5 * 2.0 / 8 * sq, 1e-12));
  CHECK_THAT(net.total_cost(data, 0.0, 3.0), WithinRel(base + 3.0 / 8 * abs, 1e-12));
  CHECK_THAT(net.total_cost(data, 2.0, 3.0),
             WithinRel(base + 0.5 * 2.0 / 8 * sq + 3.0 / 8 * abs, 1e-12));
}

TEST_CASE("Early stopping stops after the patience and restores the best epoch",
          "[training][early_stopping]") {
  // Training labels are the opposite of the evaluation labels: as the network learns,
  // evaluation accuracy falls, so the best epoch comes early.
  const auto train = sign_classes(40, 11, false);
  const auto eval = sign_classes(40, 12, true);
  const bp::SgdOptions options{.epochs = 30,
                               .mini_batch_size = 8,
                               .eta = 0.5,
                               .on_epoch = bp::quiet,
                               .early_stopping_patience = 3};
  Classifier net{6};
  const auto history = net.sgd<bp::LogLikelihoodCost>(train, options, &eval);
  REQUIRE(history.stopped_early);
  REQUIRE(history.epochs.size() < 30);
  long long best = -1;
  int best_epoch = 0;
  for (const auto& e : history.epochs) {
    if (e.evaluation_correct > best) best = e.evaluation_correct, best_epoch = e.epoch;
  }
  CHECK(history.best_epoch == best_epoch);
  CHECK(static_cast<int>(history.epochs.size()) == best_epoch + 3);
  CHECK(history.epochs.back().evaluation_correct <= best);
  CHECK(net.evaluate(eval.inputs, eval.labels) == best);
  // The returned parameters are exactly those after `best_epoch` epochs.
  Classifier reference{6};
  auto short_run = options;
  short_run.epochs = best_epoch;
  short_run.early_stopping_patience = 0;
  (void)reference.sgd<bp::LogLikelihoodCost>(train, short_run, &eval);
  CHECK(reference == net);
  // It needs labelled evaluation data.
  CHECK_THROWS_WITH(net.sgd<bp::LogLikelihoodCost>(train, options),
                    Contains("need evaluation data"));
}

TEST_CASE("Learning-rate schedules give the documented eta sequences", "[training][schedule]") {
  auto sequence = [](const bp::Schedule& s, int epochs, const std::vector<double>& accuracy) {
    bp::LearningRate lr(s, 1.0, epochs);
    std::vector<double> etas;
    for (int e = 0; e < epochs && !lr.finished(); ++e) {
      etas.push_back(lr.eta());
      lr.end_epoch(accuracy.empty() ? 0.5 : accuracy[static_cast<std::size_t>(e)]);
    }
    return etas;
  };
  CHECK(sequence(bp::Schedule::constant(), 3, {}) == std::vector<double>{1.0, 1.0, 1.0});
  CHECK(sequence(bp::Schedule::step(2, 0.5), 5, {}) ==
        std::vector<double>{1.0, 1.0, 0.5, 0.5, 0.25});
  const auto cosine = sequence(bp::Schedule::cosine(), 4, {});
  REQUIRE(cosine.size() == 4);
  const double pi = std::acos(-1.0);
  for (int t = 0; t < 4; ++t) {
    CHECK_THAT(cosine[static_cast<std::size_t>(t)],
               WithinAbs(0.5 * (1.0 + std::cos(pi * t / 4.0)), 1e-15));
  }
  // Halve after 2 epochs without a new best; stop once eta < 1/4 (stop_below 0.25).
  const std::vector<double> acc{0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7};
  CHECK(sequence(bp::Schedule::halve_on_plateau(2, 0.25), 10, acc) ==
        std::vector<double>{1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25});
  CHECK_THROWS_AS(bp::Schedule::step(0, 0.5).validate("t"), bp::ValueError);
}

TEST_CASE("sgd reports the scheduled eta and stops when the plateau schedule ends",
          "[training][schedule]") {
  const auto train = sign_classes(40, 11, false);
  const auto eval = sign_classes(40, 12, true);
  std::vector<double> etas;
  Classifier net{6};
  auto history = net.sgd<bp::LogLikelihoodCost>(
      train,
      {.epochs = 4,
       .mini_batch_size = 8,
       .eta = 0.5,
       .on_epoch = [&](const bp::EpochReport& r) { etas.push_back(r.eta); },
       .schedule = bp::Schedule::step(1, 0.5)},
      &eval);
  CHECK(etas == std::vector<double>{0.5, 0.25, 0.125, 0.0625});
  history = net.sgd<bp::LogLikelihoodCost>(train,
                                           {.epochs = 100,
                                            .mini_batch_size = 8,
                                            .eta = 0.5,
                                            .on_epoch = bp::quiet,
                                            .schedule = bp::Schedule::halve_on_plateau(1)},
                                           &eval);
  CHECK(history.stopped_early);
  CHECK(history.epochs.back().eta < 0.5 / 64);
  CHECK(history.epochs.back().eta >= 0.5 / 128);
}

TEST_CASE("Dropout is inactive in feedforward and active in training", "[dropout]") {
  const auto data = regression_data(12, 21);
  WithDropout drop{3};
  NoDropout dense{3};
  dense.layer<0>() = drop.layer<0>();
  dense.layer<1>() = drop.layer<1>();
  CHECK(drop.feedforward(data.inputs) == dense.feedforward(data.inputs));
  CHECK(drop.batch_cost(data.inputs, data.targets) == dense.batch_cost(data.inputs, data.targets));
  // gradient() and backprop() are the deterministic (inference-mode) derivatives.
  CHECK(bp::testing::check_gradients(drop, data.inputs, data.targets).passed(1e-7));
  // A training step draws a mask, so it differs from the Dense step.
  drop.update_mini_batch(data.inputs, data.targets, 1.0);
  dense.update_mini_batch(data.inputs, data.targets, 1.0);
  CHECK(bptest::relative_difference(drop.layer<0>().weights(), dense.layer<0>().weights()) > 1e-3);
  // Deterministic for a seed.
  WithDropout a{3}, b{3};
  const bp::SgdOptions options{
      .epochs = 2, .mini_batch_size = 4, .eta = 0.5, .on_epoch = bp::quiet};
  a.sgd(data, options);
  b.sgd(data, options);
  CHECK(a == b);
  // The parameters are a Dense net's: a saved model loads into one.
  std::stringstream model;
  a.save(model);
  NoDropout loaded{0};
  loaded.load(model);
  CHECK(loaded.feedforward(data.inputs) == a.feedforward(data.inputs));
}

TEST_CASE("Dropout with rate 0 trains exactly as Dense", "[dropout]") {
  const auto data = regression_data(12, 22);
  ZeroDropout zero{5};
  NoDropout dense{5};
  const bp::SgdOptions options{
      .epochs = 3, .mini_batch_size = 5, .eta = 0.5, .on_epoch = bp::quiet};
  zero.sgd(data, options, nullptr, bp::Momentum{});
  dense.sgd(data, options, nullptr, bp::Momentum{});
  CHECK(zero.layer<0>() == dense.layer<0>());
  CHECK(zero.layer<1>() == dense.layer<1>());
}

TEST_CASE("Dropout training gradient matches finite differences with a fixed mask",
          "[dropout][grad]") {
  const auto data = regression_data(6, 23);
  WithDropout net{8};
  const std::uint64_t mask_seed = 99;
  const auto grads = net.dropout_gradient(data.inputs, data.targets, mask_seed);
  // The mask drops some units: the training gradient differs from the inference one.
  const auto plain = net.gradient(data.inputs, data.targets);
  CHECK(bptest::relative_difference(std::get<0>(grads.second), std::get<0>(plain.second)) > 1e-3);
  const double h = 1e-6;
  double worst = 0.0;
  auto check = [&](auto& param, const auto& analytic) {
    for (Eigen::Index r = 0; r < param.rows(); ++r) {
      for (Eigen::Index c = 0; c < param.cols(); ++c) {
        const double saved = param(r, c);
        param(r, c) = saved + h;
        const double plus = net.dropout_batch_cost(data.inputs, data.targets, mask_seed);
        param(r, c) = saved - h;
        const double minus = net.dropout_batch_cost(data.inputs, data.targets, mask_seed);
        param(r, c) = saved;
        worst = std::max(worst, std::abs((plus - minus) / (2 * h) - analytic(r, c)));
      }
    }
  };
  check(net.layer<0>().weights(), std::get<0>(grads.second));
  check(net.layer<0>().biases(), std::get<0>(grads.first));
  check(net.layer<1>().weights(), std::get<1>(grads.second));
  check(net.layer<1>().biases(), std::get<1>(grads.first));
  CHECK(worst < 1e-7);
}
