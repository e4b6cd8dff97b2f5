// Compile-fail case: CrossEntropyCost is fused with a Sigmoid output only.
// expect: CrossEntropyCost needs a Sigmoid
#include <backprop/backprop.hpp>

#ifdef BACKPROP_SHOULD_FAIL
using Output = backprop::Tanh;
#else
using Output = backprop::Sigmoid;
#endif

int main() {
  backprop::Network<backprop::Dense<2, 3, backprop::Sigmoid>, backprop::Dense<3, 1, Output>> net{1};
  Eigen::MatrixXf x = Eigen::MatrixXf::Zero(2, 4);
  Eigen::MatrixXf y = Eigen::MatrixXf::Zero(1, 4);
  net.update_mini_batch<backprop::CrossEntropyCost>(x, y, 0.5);
  return 0;
}
