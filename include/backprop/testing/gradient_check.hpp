/// \file
/// \brief A public finite-difference gradient checker: compares the analytic
/// gradients of a network (batched `gradient` and per-sample `backprop`) with
/// central differences of the cost, parameter by parameter. A network with a layer
/// that normalizes with batch statistics (BatchNorm) is checked in its training pass:
/// `dropout_gradient` against differences of `dropout_batch_cost` (no per-sample path).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../costs/costs.hpp"
#include "../detail/meta.hpp"

namespace backprop::testing {

/// \brief Outcome of `check_gradients`.
struct GradientCheckResult {
  /// Largest |analytic - numeric| / max(1, |analytic|, |numeric|) over all
  /// parameters and both analytic paths.
  double max_error = 0.0;
  /// Where `max_error` occurred, e.g. "layer 1 weights(3, 0) [backprop]".
  std::string worst;
  /// Number of parameters checked.
  long long checked = 0;

  /// \brief Whether `max_error` is at most `tolerance`.
  [[nodiscard]] bool passed(double tolerance) const noexcept { return max_error <= tolerance; }
};

namespace detail {

inline double scaled_error(double analytic, double numeric) {
  return std::abs(analytic - numeric) / std::max({1.0, std::abs(analytic), std::abs(numeric)});
}

}  // namespace detail

/// \brief Checks every weight and bias of `net` by central differences,
/// (C(p + h) - C(p - h)) / 2h, against the batched `gradient` and the sum of
/// per-sample `backprop`, where C is `Cost` summed over the columns of X, Y.
/// \tparam Cost the cost to differentiate (default `QuadraticCost`)
/// \param net a double-precision network (it is copied; the original is unchanged)
/// \param X, Y the inputs and targets, one column per sample
/// \param h the step; 1e-6 suits double
/// \returns the largest scaled error and where it occurred
template <class Cost = QuadraticCost, class Net, class DX, class DY>
[[nodiscard]] GradientCheckResult check_gradients(const Net& net, const Eigen::MatrixBase<DX>& X,
                                                  const Eigen::MatrixBase<DY>& Y, double h = 1e-6) {
  static_assert(std::is_same_v<typename Net::Scalar, double>,
                "backprop::testing::check_gradients needs a double network: finite "
                "differences in float are too coarse");
  // With a BatchNorm layer the cost of a training pass (batch statistics) is what the
  // gradient differentiates: the batched training-pass gradient against finite
  // differences of the training-pass cost; the per-sample path does not apply.
  constexpr bool training_pass = backprop::detail::has_batch_statistics<Net>;
  Net work = net;
  const auto batched = [&] {
    if constexpr (training_pass) {
      return work.template dropout_gradient<Cost>(X, Y, 1);
    } else {
      return work.template gradient<Cost>(X, Y);
    }
  }();
  const auto cost = [&] {
    if constexpr (training_pass) {
      return work.template dropout_batch_cost<Cost>(X, Y, 1);
    } else {
      return work.template batch_cost<Cost>(X, Y);
    }
  };
  auto per_sample = batched;
  if constexpr (!training_pass) {
    per_sample = net.template backprop<Cost>(X.col(0), Y.col(0));
    for (Eigen::Index c = 1; c < X.cols(); ++c) {
      const auto g = net.template backprop<Cost>(X.col(c), Y.col(c));
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        ((std::get<I>(per_sample.first) += std::get<I>(g.first),
          std::get<I>(per_sample.second) += std::get<I>(g.second)),
         ...);
      }
      (std::make_index_sequence<Net::num_layers>{});
    }
  }

  GradientCheckResult result;
  auto check_param = [&](auto& param, const auto& grad_batched, const auto& grad_sample,
                         std::size_t layer, const char* what) {
    for (Eigen::Index r = 0; r < param.rows(); ++r) {
      for (Eigen::Index c = 0; c < param.cols(); ++c) {
        const double saved = param(r, c);
        param(r, c) = saved + h;
        const double plus = cost();
        param(r, c) = saved - h;
        const double minus = cost();
        param(r, c) = saved;
        const double numeric = (plus - minus) / (2.0 * h);
        const double e1 = detail::scaled_error(grad_batched(r, c), numeric);
        const double e2 = detail::scaled_error(grad_sample(r, c), numeric);
        ++result.checked;
        if (std::max(e1, e2) > result.max_error || result.worst.empty()) {
          result.max_error = std::max({result.max_error, e1, e2});
          result.worst = "layer " + std::to_string(layer) + " " + what + "(" + std::to_string(r) +
                         ", " + std::to_string(c) + ") [" + (e1 >= e2 ? "gradient" : "backprop") +
                         "]";
        }
      }
    }
  };
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((check_param(work.template layer<I>().weights(), std::get<I>(batched.second),
                  std::get<I>(per_sample.second), I, "weights"),
      check_param(work.template layer<I>().biases(), std::get<I>(batched.first),
                  std::get<I>(per_sample.first), I, "biases")),
     ...);
  }
  (std::make_index_sequence<Net::num_layers>{});
  return result;
}

}  // namespace backprop::testing
