// docs/extending.md: an optimizer of your own, RMSProp, used by sgd like the built-in ones.
#include <backprop/backprop.hpp>
#include <cstdint>
#include <iostream>

namespace bp = backprop;

// p <- p - eta g / (sqrt(r) + epsilon), with r <- rho r + (1 - rho) g^2 per parameter.
struct RmsProp {
  double rho = 0.9;
  double epsilon = 1e-8;

  // What it keeps per parameter (a weight matrix or a bias vector); sized on first use.
  template <class Scalar>
  struct State {
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> mean_square;
  };

  // Called once per parameter and mini-batch with the mean gradient g (L2 and L1
  // included), this epoch's eta and the 1-based step number.
  template <class P, class G, class S>
  void update(P& param, const G& g, S& state, double eta, long long /*step*/) const {
    using Scalar = typename P::Scalar;
    if (state.mean_square.size() == 0) state.mean_square.setZero(param.rows(), param.cols());
    const auto r = static_cast<Scalar>(rho);
    state.mean_square = r * state.mean_square + (Scalar(1) - r) * g.cwiseAbs2();
    param.array() -= static_cast<Scalar>(eta) * g.array() /
                     (state.mean_square.array().sqrt() + static_cast<Scalar>(epsilon));
  }
};

static_assert(bp::Optimizer<RmsProp>);

// n points in [-1, 1]^2; class 1 above the curve y = x^3 - x / 2.
bp::Dataset<float> curve(int n, std::uint64_t seed) {
  bp::Rng rng(seed);
  bp::Dataset<float> data;
  data.inputs.resize(2, n);
  data.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    const double x = rng.uniform(-1.0, 1.0);
    const double y = rng.uniform(-1.0, 1.0);
    data.inputs(0, i) = static_cast<float>(x);
    data.inputs(1, i) = static_cast<float>(y);
    data.labels(i) = y > x * x * x - x / 2 ? 1 : 0;
  }
  data.targets = bp::one_hot<float>(data.labels, 2);
  return data;
}

int main() {
  using Net = bp::Network<bp::Dense<2, 16, bp::Tanh>, bp::Dense<16, 2, bp::Softmax>>;
  const auto training = curve(1000, 1);
  const auto test = curve(500, 2);
  const bp::SgdOptions options{.epochs = 30,
                               .mini_batch_size = 20,
                               .eta = 0.01,
                               .on_epoch = bp::quiet,
                               .schedule = bp::Schedule::step(10, 0.5)};

  Net net{3};
  net.sgd<bp::LogLikelihoodCost>(training, options, nullptr, RmsProp{.rho = 0.95});
  const long long correct = net.evaluate(test.inputs, test.labels);
  std::cout << "RMSProp: test accuracy " << correct << " / " << test.size() << '\n';

  Net same_start{3};  // the same initial parameters, with Adam
  same_start.sgd<bp::LogLikelihoodCost>(training, options, nullptr, bp::Adam{});
  std::cout << "Adam:    test accuracy " << same_start.evaluate(test.inputs, test.labels) << " / "
            << test.size() << '\n';
  return correct >= 450 ? 0 : 1;
}
