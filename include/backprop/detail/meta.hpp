/// \file
/// \brief Small compile-time helpers (internal).
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace backprop::detail {

/// Calls f(std::integral_constant<std::size_t, I>{}) for I = 0 .. N-1, in order.
template <std::size_t N, class F>
constexpr void for_each_index(F&& f) {
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (f(std::integral_constant<std::size_t, I>{}), ...);
  }
  (std::make_index_sequence<N>{});
}

/// True if a layer of network Net normalizes with batch statistics in training passes
/// (its layer object declares `batch_statistics`, as BatchNorm's does).
template <class Net>
inline constexpr bool has_batch_statistics = []<std::size_t... I>(std::index_sequence<I...>) {
  return (requires { Net::template LayerParameters<I>::batch_statistics; } || ...);
}
(std::make_index_sequence<Net::num_layers>{});

}  // namespace backprop::detail
