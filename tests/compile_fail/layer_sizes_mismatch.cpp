// Compile-fail case: adjacent layer sizes that do not match. The diagnostic
// must say "layer sizes do not match" and name both sizes (30 and 31).
// expect: layer sizes do not match
// expect: LayerSizesMustMatch<1, *30, *31>
#include <backprop/backprop.hpp>

#ifdef BACKPROP_SHOULD_FAIL
using Net = backprop::Network<backprop::Dense<784, 30>, backprop::Dense<31, 10>>;
#else
using Net = backprop::Network<backprop::Dense<784, 30>, backprop::Dense<30, 10>>;
#endif

int main() {
  Net net{1};
  return Net::outputs == 10 ? 0 : 1;
}
