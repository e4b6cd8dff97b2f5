/// \file
/// \brief `DropoutDense<In, Out, Act, Rate>`: a `Dense` layer whose outputs are
/// dropped out (inverted dropout) in training passes only.
///
/// The maths: in a training pass, y = m (.) sigma(W x + b) with m_k = 1/(1 - p) with
/// probability 1 - p and 0 otherwise, drawn afresh for every output and sample; the
/// backward pass multiplies the incoming dC/dy by the same m before the `Dense`
/// backward. E[y] = sigma(W x + b), so inference uses no mask.
#pragma once

#include <ratio>
#include <type_traits>

#include "dense.hpp"

namespace backprop {

/// \brief The layer object of `DropoutDense`: a `DenseLayer` (same parameters, same
/// model record) whose training passes mask the outputs.
template <class Scalar, int In, int Out, class Act, class Rate>
class DropoutDenseLayer : public DenseLayer<Scalar, In, Out, Act> {
  using Base = DenseLayer<Scalar, In, Out, Act>;

 public:
  using typename Base::Matrix;
  /// p, the probability of dropping each output in training.
  static constexpr double dropout_rate =
      static_cast<double>(Rate::num) / static_cast<double>(Rate::den);

  struct Workspace : Base::Workspace {
    Matrix mask;     // already divided by 1 - p
    Matrix dropped;  // the masked output passed on
    bool active = false;
  };

  using Base::forward;

  /// \brief The `Dense` training pass; with `masks` (training) and p > 0 the output is
  /// multiplied by a fresh mask. ws.a keeps the unmasked activations for the derivative.
  template <class X>
  void forward(const X& x, Workspace& ws, Rng* masks) const {
    Base::forward(x, ws, masks);
    ws.active = false;
    if constexpr (dropout_rate > 0.0) {
      if (masks == nullptr) return;
      ws.active = true;
      ws.mask.resize(Out, ws.a.cols());
      const double keep = 1.0 - dropout_rate;
      const Scalar scale = static_cast<Scalar>(1.0 / keep);
      Scalar* data = ws.mask.data();
      for (Eigen::Index k = 0; k < ws.mask.size(); ++k) {
        data[k] = masks->uniform() < keep ? scale : Scalar(0);
      }
      ws.dropped.resize(Out, ws.a.cols());
      ws.dropped.noalias() = ws.a.cwiseProduct(ws.mask);
    }
  }

  [[nodiscard]] static const Matrix& output(const Workspace& ws) noexcept {
    return ws.active ? ws.dropped : ws.a;
  }

  template <class X, class Sink>
  void backward(const X& x, Workspace& ws, Matrix& g, Matrix* dx, Sink& sink) {
    if (ws.active) g.array() *= ws.mask.array();
    Base::backward(x, ws, g, dx, sink);
  }
};

/// \brief A fully connected layer, z = W a + b, whose output sigma(z) is multiplied
/// in training passes (`sgd`, `update_mini_batch`) by a mask of independent
/// Bernoulli(1 - p) draws divided by 1 - p (inverted dropout), so the expected
/// output equals sigma(z) and nothing changes at inference: `feedforward`,
/// `evaluate`, `batch_cost`, `total_cost`, `gradient` and `backprop` use sigma(z)
/// unmasked. The masks come from the network's `Rng`, so training stays
/// deterministic for a seed. The parameters are those of `Dense<In, Out, Act>`:
/// a saved model loads into the same network built from `Dense` layers.
/// \tparam Rate the drop probability p as a `std::ratio` in [0, 1), e.g.
///         `std::ratio<1, 2>`; with p = 0 the layer trains exactly as `Dense`
///         (no random numbers are drawn)
/// \pre not the output layer (checked at compile time by the network)
template <int In, int Out, class Act = Sigmoid, class Rate = std::ratio<1, 2>>
struct DropoutDense : Dense<In, Out, Act> {
  static_assert(Rate::num >= 0 && Rate::num < Rate::den,
                "backprop::DropoutDense<In, Out, Act, Rate>: the drop rate must be in [0, 1)");
  /// p, the probability of dropping each output in training.
  static constexpr double dropout_rate =
      static_cast<double>(Rate::num) / static_cast<double>(Rate::den);
  template <class Scalar>
  using Instance = DropoutDenseLayer<Scalar, In, Out, Act, Rate>;
  template <class Scalar>
  using Parameters = Instance<Scalar>;
};

namespace detail {

/// The drop probability of layer descriptor L (0 for layers without dropout).
template <class L>
constexpr double dropout_rate_of() {
  if constexpr (requires { L::dropout_rate; }) {
    return L::dropout_rate;
  } else {
    return 0.0;
  }
}

}  // namespace detail

}  // namespace backprop
