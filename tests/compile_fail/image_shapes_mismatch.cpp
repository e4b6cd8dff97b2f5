// Compile-fail case: two image layers whose sizes agree (2880 values) but whose shapes
// do not: the pool produces 20 x 12 x 12, the convolution reads 5 x 24 x 24.
// expect: image shapes do not match
// expect: ImageShapesMustMatch<1, *20, *12, *12, *5, *24, *24>
#include <backprop/backprop.hpp>

#ifdef BACKPROP_SHOULD_FAIL
using Net =
    backprop::Network<backprop::MaxPool2D<20, 24, 24, 2>, backprop::Conv2D<5, 24, 24, 2, 5>>;
#else
using Net =
    backprop::Network<backprop::MaxPool2D<20, 24, 24, 2>, backprop::Conv2D<20, 12, 12, 2, 5>>;
#endif

int main() {
  Net net{1};
  return Net::inputs == 11520 ? 0 : 1;
}
