// Compile-fail case: a convolution followed by a Dense layer of the wrong size. The
// diagnostic names the image the convolution produces (20 x 24 x 24 = 11520 values)
// and the 784 inputs the Dense layer expects.
// expect: layer sizes do not match
// expect: LayerShapesMustMatch<1, *20, *24, *24, *11520, *784>
#include <backprop/backprop.hpp>

#ifdef BACKPROP_SHOULD_FAIL
using Net = backprop::Network<backprop::Conv2D<1, 28, 28, 20, 5>, backprop::Dense<784, 10>>;
#else
using Net = backprop::Network<backprop::Conv2D<1, 28, 28, 20, 5>, backprop::Dense<11520, 10>>;
#endif

int main() {
  Net net{1};
  return Net::outputs == 10 ? 0 : 1;
}
