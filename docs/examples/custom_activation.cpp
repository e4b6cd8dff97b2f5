// docs/extending.md: two activations of your own, softplus written element by element and
// swish written on whole matrices; checked against finite differences, trained, saved.
#include <backprop/backprop.hpp>
#include <cmath>
#include <iostream>
#include <sstream>
#include <string_view>

namespace bp = backprop;

// Element-wise: a = value(z), da/dz = derivative(z, a), for float and double.
// softplus(z) = ln(1 + e^z), written so that e^z never overflows; its derivative is sigmoid(z).
struct Softplus {
  static constexpr std::string_view name = "softplus";  // the name in model files
  template <class T>
  static T value(T z) {
    return z > T(0) ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
  }
  template <class T>
  static T derivative(T z, T /*a*/) {
    return T(1) / (T(1) + std::exp(-z));
  }
};

// On whole matrices (one column per sample): forward writes a = sigma(z), backward writes
// d = J^T g. Needed when an output depends on several inputs (as in Softmax); here it lets
// Eigen vectorise. swish(z) = z s(z) with s the sigmoid; swish'(z) = a + s(z) (1 - a).
struct Swish {
  static constexpr std::string_view name = "swish";
  template <class Z, class A>
  static void forward(const Eigen::MatrixBase<Z>& z, Eigen::MatrixBase<A>& a) {
    using S = typename Z::Scalar;
    a.derived() = (z.array() / (S(1) + (-z.array()).exp())).matrix();
  }
  template <class Z, class A, class G, class D>
  static void backward(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<A>& a,
                       const Eigen::MatrixBase<G>& g, Eigen::MatrixBase<D>& d) {
    using S = typename Z::Scalar;
    const auto s = (S(1) + (-z.array()).exp()).inverse();
    d.derived() = (g.array() * (a.array() + s * (S(1) - a.array()))).matrix();
  }
};

static_assert(bp::ElementwiseActivation<Softplus> && bp::MatrixActivation<Swish>);
static_assert(bp::Activation<Softplus> && bp::Activation<Swish>);

int main() {
  // 1. The gradients of a double network with both, against central differences.
  using Check = bp::BasicNetwork<double, bp::Dense<3, 5, Swish>, bp::Dense<5, 2, Softplus>>;
  const Check small{4};
  Eigen::MatrixXd X(3, 6), Y(2, 6);
  bp::Rng rng(5);
  for (Eigen::Index i = 0; i < X.size(); ++i) X(i) = rng.uniform(-2.0, 2.0);
  for (Eigen::Index i = 0; i < Y.size(); ++i) Y(i) = rng.uniform(0.0, 2.0);
  const auto check = bp::testing::check_gradients(small, X, Y);
  std::cout << "gradient check: largest error " << check.max_error << " (" << check.worst
            << ") over " << check.checked << " parameters\n";

  // 2. Training: fit |x| on [-2, 2] (softplus keeps the output positive).
  using Net = bp::Network<bp::Dense<1, 16, Swish>, bp::Dense<16, 1, Softplus>>;
  Net net{2, bp::Init::xavier};
  bp::Dataset<float> data;
  data.inputs = Eigen::RowVectorXf::LinSpaced(200, -2.0f, 2.0f);
  data.targets = data.inputs.cwiseAbs();
  const double before = net.total_cost(data);
  net.sgd(data, {.epochs = 300, .mini_batch_size = 10, .eta = 0.05, .on_epoch = bp::quiet});
  const double after = net.total_cost(data);
  std::cout << "mean quadratic cost " << before << " -> " << after << '\n';

  // 3. The model files record the activations by name.
  std::stringstream file(std::ios::in | std::ios::out | std::ios::binary);
  net.save(file);
  Net loaded;
  loaded.load(file);
  std::cout << "saved and loaded: " << (loaded == net ? "equal" : "DIFFERENT") << '\n';
  return check.passed(1e-7) && after < before / 10 && loaded == net ? 0 : 1;
}
