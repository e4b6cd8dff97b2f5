// docs/extending.md: a cost of your own, the pseudo-Huber loss, which grows only linearly
// for large errors: a straight-line fit with it shrugs off outliers that pull the
// quadratic cost's fit away.
#include <backprop/backprop.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <string_view>

namespace bp = backprop;

// C = sum over outputs and samples of delta^2 (sqrt(1 + (r / delta)^2) - 1), r = a - y;
// dC/da = r / sqrt(1 + (r / delta)^2).
struct PseudoHuberCost {
  static constexpr std::string_view name = "PseudoHuberCost";
  static constexpr double delta = 1.0;

  // The cost summed over the columns (samples); training divides by their number.
  template <class Z, class A, class Y>
  static double value(const Eigen::MatrixBase<Z>& /*z*/, const Eigen::MatrixBase<A>& a,
                      const Eigen::MatrixBase<Y>& y) {
    using S = typename A::Scalar;
    const auto r = (a - y).array() / S(delta);
    return delta * delta * static_cast<double>(((S(1) + r.square()).sqrt() - S(1)).sum());
  }

  // delta_L = dC/dz of the output layer: dC/da taken back through the activation Act.
  template <class Act, class Z, class A, class Y, class D>
  static void output_delta(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<A>& a,
                           const Eigen::MatrixBase<Y>& y, Eigen::MatrixBase<D>& d) {
    static_assert(bp::MatrixActivation<Act>,
                  "PseudoHuberCost needs an activation written on matrices (every built-in one "
                  "is)");
    using S = typename A::Scalar;
    const auto r = (a - y).array();
    Act::backward(z, a, (r / (S(1) + (r / S(delta)).square()).sqrt()).matrix(), d);
  }
};

static_assert(bp::CostFor<PseudoHuberCost, bp::Identity> && bp::CostFor<PseudoHuberCost, bp::Tanh>);

int main() {
  // The gradients with two output activations, against central differences.
  Eigen::MatrixXd X(3, 4), Y(2, 4);
  bp::Rng rng(1);
  for (Eigen::Index i = 0; i < X.size(); ++i) X(i) = rng.uniform(-2.0, 2.0);
  for (Eigen::Index i = 0; i < Y.size(); ++i) Y(i) = rng.uniform(-3.0, 3.0);
  using Linear = bp::BasicNetwork<double, bp::Dense<3, 4, bp::Tanh>, bp::Dense<4, 2, bp::Identity>>;
  using Squashed = bp::BasicNetwork<double, bp::Dense<3, 4, bp::ReLU>, bp::Dense<4, 2, bp::Tanh>>;
  const Linear linear{2};
  const Squashed squashed{3};
  const double error =
      std::max(bp::testing::check_gradients<PseudoHuberCost>(linear, X, Y).max_error,
               bp::testing::check_gradients<PseudoHuberCost>(squashed, X, Y).max_error);
  std::cout << "gradient check: largest error " << error << '\n';

  // y = 2 x + 1 with a little noise, and every 20th point 30 too high.
  bp::Dataset<double> data;
  data.inputs.resize(1, 200);
  data.targets.resize(1, 200);
  for (int i = 0; i < 200; ++i) {
    const double x = rng.uniform(-1.0, 1.0);
    data.inputs(0, i) = x;
    data.targets(0, i) = 2.0 * x + 1.0 + rng.normal(0.0, 0.1) + (i % 20 == 0 ? 30.0 : 0.0);
  }
  using Line = bp::BasicNetwork<double, bp::Dense<1, 1, bp::Identity>>;  // a = w x + b
  const bp::SgdOptions options{
      .epochs = 200, .mini_batch_size = 10, .eta = 0.02, .on_epoch = bp::quiet};
  Line quadratic{4};
  quadratic.sgd(data, options);  // QuadraticCost, the default
  Line huber{4};
  huber.sgd<PseudoHuberCost>(data, options);

  const auto show = [](const char* what, const Line& l) {
    std::cout << what << ": y = " << l.layer<0>().weights()(0, 0) << " x + "
              << l.layer<0>().biases()(0) << '\n';
  };
  show("quadratic   ", quadratic);
  show("pseudo-Huber", huber);
  const double miss = std::abs(huber.layer<0>().biases()(0) - 1.0);
  const bool robust = miss < 0.3 && miss < std::abs(quadratic.layer<0>().biases()(0) - 1.0);
  return error < 1e-7 && robust ? 0 : 1;
}
