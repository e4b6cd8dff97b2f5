// Package test consumer: uses only the installed (or add_subdirectory'd)
// library. Trains XOR briefly and checks that the cost went down.
#include <backprop/backprop.hpp>
#include <cstdlib>
#include <iostream>

#if !defined(BACKPROP_VERSION_MAJOR) || !defined(BACKPROP_VERSION_MINOR) || \
    !defined(BACKPROP_VERSION_PATCH)
#error "backprop/backprop.hpp must define BACKPROP_VERSION_MAJOR/MINOR/PATCH"
#endif

namespace bp = backprop;

int main() {
  using Net = bp::Network<bp::Dense<2, 4, bp::Sigmoid>, bp::Dense<4, 1, bp::Sigmoid>>;
  static_assert(Net::inputs == 2 && Net::outputs == 1 && Net::num_layers == 2);
  Net net{42};

  Eigen::MatrixXf x(2, 4);
  x << 0, 0, 1, 1,  //
      0, 1, 0, 1;
  Eigen::MatrixXf y(1, 4);
  y << 0, 1, 1, 0;

  const auto cost = [&] { return 0.5 * (net.feedforward(x) - y).squaredNorm(); };
  const double before = cost();
  for (int i = 0; i < 500; ++i) net.update_mini_batch(x, y, 3.0);
  const double after = cost();

  std::cout << "backprop " << BACKPROP_VERSION_MAJOR << '.' << BACKPROP_VERSION_MINOR << '.'
            << BACKPROP_VERSION_PATCH << ": XOR cost " << before << " -> " << after << '\n';
  if (!(after < before)) {
    std::cerr << "consumer: training did not reduce the cost\n";
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}
