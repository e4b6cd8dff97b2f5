/// \file
/// \brief `DropoutDense<In, Out, Act, Rate>`: a `Dense` layer whose outputs are
/// dropped out (inverted dropout) in training passes only.
#pragma once

#include <ratio>
#include <type_traits>

#include "dense.hpp"

namespace backprop {

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
