// Compile-fail case: a max-pool window that does not divide the image (25 by 2).
// expect: Pool must divide
#include <backprop/backprop.hpp>

#ifdef BACKPROP_SHOULD_FAIL
using Net = backprop::Network<backprop::Conv2D<1, 28, 28, 4, 4>, backprop::MaxPool2D<4, 25, 25, 2>,
                              backprop::Dense<576, 10>>;
#else
using Net = backprop::Network<backprop::Conv2D<1, 28, 28, 4, 5>, backprop::MaxPool2D<4, 24, 24, 2>,
                              backprop::Dense<576, 10>>;
#endif

int main() {
  Net net{1};
  return Net::outputs == 10 ? 0 : 1;
}
