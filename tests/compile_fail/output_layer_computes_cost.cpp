// Compile-fail case: a user layer without an activation or a cost hook as the output
// layer; the twin puts it before a Dense output layer.
// expect: the output layer must have an activation
#include <backprop/backprop.hpp>

#include "../../examples/scale_shift.hpp"

#ifdef BACKPROP_SHOULD_FAIL
using Net = backprop::Network<backprop::Dense<2, 3, backprop::Tanh>, user::ScaleShift<3>>;
#else
using Net = backprop::Network<backprop::Dense<2, 3, backprop::Tanh>, user::ScaleShift<3>,
                              backprop::Dense<3, 3>>;
#endif

int main() {
  Net net{1};
  return net.parameter_count() > 0 ? 0 : 1;
}
