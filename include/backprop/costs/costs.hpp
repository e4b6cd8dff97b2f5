/// \file
/// \brief Costs: QuadraticCost (the default), CrossEntropyCost (sigmoid outputs)
/// and LogLikelihoodCost (softmax outputs), each with its output error delta_L.
///
/// `value` returns the cost summed over all columns; training divides by the
/// number of samples. Costs whose naive gradient is unstable are fused with the
/// one output activation they support (delta = a - y) and reject others at
/// compile time.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <string_view>
#include <type_traits>

#include "../activations/activations.hpp"

namespace backprop {

/// \brief C = 1/2 ||a - y||^2 per sample; delta_L = (a - y) (.) sigma'(z_L).
/// Works with every activation.
struct QuadraticCost {
  static constexpr std::string_view name = "QuadraticCost";
  template <class Z, class A, class Y>
  static double value(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<A>& a,
                      const Eigen::MatrixBase<Y>& y) {
    return 0.5 * static_cast<double>((a - y).squaredNorm());
  }
  template <class Act, class Z, class A, class Y, class D>
  static void output_delta(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<A>& a,
                           const Eigen::MatrixBase<Y>& y, Eigen::MatrixBase<D>& d) {
    detail::activation_backward<Act>(z, a, a - y, d);  // no temporary: d aliases neither
  }
};

/// \brief C = -sum [y ln a + (1 - y) ln(1 - a)]; with a sigmoid output,
/// delta_L = a - y exactly (no division by a (1 - a), no log(0)).
///
/// Only `Sigmoid` outputs are accepted: any other pairing fails to compile.
/// The value clamps a to [eps, 1 - eps] so a saturated unit costs a large
/// finite amount instead of infinity (network2 uses nan_to_num for this).
struct CrossEntropyCost {
  static constexpr std::string_view name = "CrossEntropyCost";
  template <class Z, class A, class Y>
  static double value(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<A>& a,
                      const Eigen::MatrixBase<Y>& y) {
    using S = typename A::Scalar;
    constexpr S eps = std::numeric_limits<S>::min();
    const auto ac = a.array().max(eps).min(S(1) - std::numeric_limits<S>::epsilon() / 2);
    const auto ya = y.array();
    // y ln a is 0 where y == 0 (also when a == 0), as in the limit.
    const auto t1 = (ya != S(0)).select(ya * ac.log(), S(0));
    const auto t2 = (ya != S(1)).select((S(1) - ya) * (S(1) - ac).log(), S(0));
    return -static_cast<double>((t1 + t2).sum());
  }
  template <class Act, class Z, class A, class Y, class D>
  static void output_delta(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<A>& a,
                           const Eigen::MatrixBase<Y>& y, Eigen::MatrixBase<D>& d) {
    static_assert(std::is_same_v<Act, Sigmoid>,
                  "backprop::CrossEntropyCost needs a Sigmoid output layer: it is fused "
                  "(delta = a - y) only there; use LogLikelihoodCost with Softmax, or "
                  "QuadraticCost");
    d.derived() = a - y;
  }
};

/// \brief Log-likelihood of a softmax output, C = -sum y ln a, computed from z
/// with log-sum-exp; delta_L = a - y. Only `Softmax` outputs are accepted.
struct LogLikelihoodCost {
  static constexpr std::string_view name = "LogLikelihoodCost";
  template <class Z, class A, class Y>
  static double value(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<A>&,
                      const Eigen::MatrixBase<Y>& y) {
    // ln a_j = z_j - m - ln sum_k e^{z_k - m}, m = max z, per column (no temporaries).
    using S = typename Z::Scalar;
    double total = 0.0;
    for (Eigen::Index j = 0; j < z.cols(); ++j) {
      const auto zc = z.col(j);
      const S m = zc.maxCoeff();
      const S lse = std::log((zc.array() - m).exp().sum());
      const auto log_a = zc.array() - m - lse;
      const auto yc = y.col(j).array();
      total += static_cast<double>((yc != S(0)).select(yc * log_a, S(0)).sum());
    }
    return -total;
  }
  template <class Act, class Z, class A, class Y, class D>
  static void output_delta(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<A>& a,
                           const Eigen::MatrixBase<Y>& y, Eigen::MatrixBase<D>& d) {
    static_assert(std::is_same_v<Act, Softmax>,
                  "backprop::LogLikelihoodCost needs a Softmax output layer (fused delta = "
                  "a - y); use CrossEntropyCost with Sigmoid, or QuadraticCost");
    d.derived() = a - y;
  }
};

}  // namespace backprop
