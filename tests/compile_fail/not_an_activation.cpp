// Compile-fail case: a layer whose activation is not an activation.
// expect: Act is not an activation
#include <backprop/backprop.hpp>

#ifdef BACKPROP_SHOULD_FAIL
using Layer = backprop::Dense<2, 2, int>;
#else
using Layer = backprop::Dense<2, 2, backprop::Tanh>;
#endif

int main() { return Layer::outputs == 2 ? 0 : 1; }
