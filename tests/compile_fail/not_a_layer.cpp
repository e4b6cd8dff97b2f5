// Compile-fail case: a type in the chain that is not a layer (a layer object without
// a backward pass), and the twin with the library's layer in its place.
// expect: every layer must satisfy backprop::Layer
#include <backprop/backprop.hpp>

namespace {

struct HalfLayer {
  static constexpr int inputs = 3;
  static constexpr int outputs = 3;
  template <class T>
  struct Instance {};
};

}  // namespace

#ifdef BACKPROP_SHOULD_FAIL
using Middle = HalfLayer;
#else
using Middle = backprop::Dense<3, 3, backprop::Tanh>;
#endif

int main() {
  backprop::Network<backprop::Dense<2, 3, backprop::Tanh>, Middle, backprop::Dense<3, 1>> net{1};
  return net.parameter_count() > 0 ? 0 : 1;
}
