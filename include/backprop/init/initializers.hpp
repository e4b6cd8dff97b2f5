/// \file
/// \brief Weight initialisation schemes.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <string_view>

#include "random.hpp"

namespace backprop {

/// \brief How `BasicNetwork` draws its initial parameters.
enum class Init {
  /// Weights and biases from N(0, 1): the seed algorithm (network.py).
  normal,
  /// Weights from N(0, 1/n_in), biases from N(0, 1): network2.py's default.
  scaled_normal,
  /// Xavier/Glorot uniform, U(-r, r) with r = sqrt(6 / (n_in + n_out)); biases 0.
  xavier,
  /// He normal, N(0, 2/n_in); biases 0. For ReLU layers.
  he,
};

/// \brief The name of an initialiser, e.g. "scaled_normal".
[[nodiscard]] constexpr std::string_view to_string(Init init) noexcept {
  switch (init) {
    case Init::normal:
      return "normal";
    case Init::scaled_normal:
      return "scaled_normal";
    case Init::xavier:
      return "xavier";
    case Init::he:
      return "he";
  }
  return "unknown";
}

namespace detail {

/// Biases in row order.
template <class B>
void init_biases(Rng& rng, B& b, Init init) {
  for (Eigen::Index i = 0; i < b.size(); ++i) {
    b(i) = (init == Init::normal || init == Init::scaled_normal)
               ? static_cast<typename B::Scalar>(rng.normal())
               : typename B::Scalar(0);
  }
}

/// Weights in row-major order (as numpy's randn(out, in) fills them).
/// `fan_in` and `fan_out` (the scales of scaled_normal, Xavier and He) default to the
/// columns and rows of w (a convolution passes its window size and its outputs per input).
template <class W>
void init_weights(Rng& rng, W& w, Init init, Eigen::Index fan_in = -1, Eigen::Index fan_out = -1) {
  using S = typename W::Scalar;
  const double n_in = static_cast<double>(fan_in >= 0 ? fan_in : w.cols());
  const double n_out = static_cast<double>(fan_out >= 0 ? fan_out : w.rows());
  for (Eigen::Index r = 0; r < w.rows(); ++r) {
    for (Eigen::Index c = 0; c < w.cols(); ++c) {
      double v = 0.0;
      switch (init) {
        case Init::normal:
          v = rng.normal();
          break;
        case Init::scaled_normal:
          v = rng.normal() / std::sqrt(n_in);
          break;
        case Init::xavier: {
          const double lim = std::sqrt(6.0 / (n_in + n_out));
          v = rng.uniform(-lim, lim);
          break;
        }
        case Init::he:
          v = rng.normal() * std::sqrt(2.0 / n_in);
          break;
      }
      w(r, c) = static_cast<S>(v);
    }
  }
}

}  // namespace detail

}  // namespace backprop
