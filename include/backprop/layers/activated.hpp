/// \file
/// \brief The passes shared by the layers of the form out = sigma(z(x)) (`Dense`,
/// `Conv2D`), given their `backward_delta` (internal).
#pragma once

#include <Eigen/Core>

#include "../activations/activations.hpp"

namespace backprop::detail {

/// CRTP base of a layer whose training pass keeps z and a = sigma(z) in `ws.z` and
/// `ws.a` and whose `backward_delta(x, ws, dx, sink)` takes it from ws.delta = dC/dz:
/// adds what passes on (a), the cost of an output layer, and the two ways to delta
/// (through the activation, or from the cost as the output layer).
template <class Derived, class Act, class Matrix>
class ActivatedLayer {
 public:
  /// \brief The output the last training pass passed on to the next layer.
  template <class Workspace>
  [[nodiscard]] static const auto& output(const Workspace& ws) noexcept {
    return ws.a;
  }

  /// \brief The cost of the last training pass's output, summed over the columns.
  template <class Cost, class Workspace, class Y>
  [[nodiscard]] static double cost(const Workspace& ws, const Y& y) {
    return Cost::value(ws.z, ws.a, y);
  }

  /// \brief Backward pass from g = dC/d(output) (overwritten): delta = sigma'(z)^T g,
  /// then the layer's `backward_delta`.
  template <class X, class Workspace, class Sink>
  void backward(const X& x, Workspace& ws, Matrix& g, Matrix* dx, Sink& sink) {
    ws.delta.resize(ws.z.rows(), g.cols());
    activation_backward<Act>(ws.z, ws.a, g, ws.delta);
    static_cast<Derived&>(*this).backward_delta(x, ws, dx, sink);
  }

  /// \brief Backward pass of the output layer: delta from the cost, then
  /// `backward_delta`.
  template <class Cost, class X, class Workspace, class Y, class Sink>
  void backward_cost(const X& x, Workspace& ws, const Y& y, Matrix* dx, Sink& sink) {
    ws.delta.resize(ws.z.rows(), y.cols());
    Cost::template output_delta<Act>(ws.z, ws.a, y, ws.delta);
    static_cast<Derived&>(*this).backward_delta(x, ws, dx, sink);
  }
};

}  // namespace backprop::detail
