// Compile-fail case: feeding double data to a float network.
// expect: scalar type must match
#include <backprop/backprop.hpp>

#ifdef BACKPROP_SHOULD_FAIL
using Data = Eigen::MatrixXd;
#else
using Data = Eigen::MatrixXf;
#endif

int main() {
  backprop::Network<backprop::Dense<2, 3>, backprop::Dense<3, 1>> net{1};
  const Data x = Data::Zero(2, 4);
  const auto out = net.feedforward(x);
  return out.cols() == 4 ? 0 : 1;
}
