/// \file
/// \brief `backprop(x, y)` for a chain whose layers all have per-sample paths (as
/// `Dense` has: `SampleState`, `sample_forward`, `sample_output_delta`, `sample_delta`,
/// `sample_backward`): the seed's per-sample algorithm with every z and activation on
/// the stack up to 64 rows (internal).
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <tuple>
#include <utility>

#include "meta.hpp"

namespace backprop::detail {

template <std::size_t I, class Net, class Delta, class X0, class States>
void backward_sample(const Net& net, const Delta& delta, const X0& x0, const States& states,
                     typename Net::Gradients& grads) {
  auto& nb = std::get<I>(grads.first);
  auto& nw = std::get<I>(grads.second);
  if constexpr (I == 0) {
    net.template layer<0>().template sample_backward<true>(delta, x0, nb, nw, nullptr);
  } else {
    using Prev = typename Net::template LayerParameters<I - 1>;
    typename Prev::template SampleVector<Prev::outputs> g(Prev::outputs);
    net.template layer<I>().template sample_backward<false>(delta, std::get<I - 1>(states).a, nb,
                                                            nw, &g);
    typename Prev::template SampleVector<Prev::outputs> delta_prev(Prev::outputs);
    net.template layer<I - 1>().sample_delta(std::get<I - 1>(states), g, delta_prev);
    backward_sample<I - 1>(net, delta_prev, x0, states, grads);
  }
}

/// The gradients of `Cost` for the sample x, y (single columns of the right sizes).
template <class Cost, class Net, class DX, class DY>
typename Net::Gradients sample_gradients(const Net& net, const Eigen::MatrixBase<DX>& x,
                                         const Eigen::MatrixBase<DY>& y) {
  constexpr std::size_t L = Net::num_layers - 1;
  auto states = [&]<std::size_t... I>(std::index_sequence<I...>) {
    return std::tuple<typename Net::template LayerParameters<I>::SampleState...>{};
  }
  (std::make_index_sequence<Net::num_layers>{});
  // A contiguous column is read in place; anything else is copied once.
  const Eigen::Ref<const typename Net::Vector> x0(x.derived());
  for_each_index<Net::num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    if constexpr (I == 0) {
      net.template layer<0>().template sample_forward<true>(x0, std::get<0>(states));
    } else {
      net.template layer<I>().template sample_forward<false>(std::get<I - 1>(states).a,
                                                             std::get<I>(states));
    }
  });
  typename Net::Gradients grads;
  using Last = typename Net::template LayerParameters<L>;
  typename Last::template SampleVector<Net::outputs> delta(Net::outputs);
  net.template layer<L>().template sample_output_delta<Cost>(std::get<L>(states), y.derived(),
                                                             delta);
  backward_sample<L>(net, delta, x0, states, grads);
  return grads;
}

}  // namespace backprop::detail
