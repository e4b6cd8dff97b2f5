/// \file
/// \brief Costs: QuadraticCost (the default), CrossEntropyCost (sigmoid outputs)
/// and LogLikelihoodCost (softmax outputs), each with its output error delta_L; and
/// DefaultCost, the cost `sgd` picks to fit the output layer.
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
  /// \brief The cost's name (e.g. as `BasicNetwork::save_json`'s `cost_name`).
  static constexpr std::string_view name = "QuadraticCost";
  /// \brief 1/2 ||a - y||^2 summed over all columns (`z` is unused).
  template <class Z, class A, class Y>
  static double value(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<A>& a,
                      const Eigen::MatrixBase<Y>& y) {
    return 0.5 * static_cast<double>((a - y).squaredNorm());
  }
  /// \brief Writes delta_L = (a - y) (.) sigma'(z) into `d`; for a matrix activation
  /// (Softmax), J_sigma(z)^T (a - y).
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
  /// \brief The cost's name (e.g. as `BasicNetwork::save_json`'s `cost_name`).
  static constexpr std::string_view name = "CrossEntropyCost";
  /// \brief -sum [y ln a + (1 - y) ln(1 - a)] over all entries (`z` is unused), with a
  /// clamped into (0, 1) so the cost is finite; a term whose factor y or 1 - y is 0 counts 0.
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
  /// \brief Writes delta_L = a - y into `d` (`Act` must be `Sigmoid`).
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
  /// \brief The cost's name (e.g. as `BasicNetwork::save_json`'s `cost_name`).
  static constexpr std::string_view name = "LogLikelihoodCost";
  /// \brief -sum y ln a over all columns, with ln a = z - log-sum-exp(z) per column (`a` is
  /// unused); entries with y = 0 count 0.
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
  /// \brief Writes delta_L = a - y into `d` (`Act` must be `Softmax`).
  template <class Act, class Z, class A, class Y, class D>
  static void output_delta(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<A>& a,
                           const Eigen::MatrixBase<Y>& y, Eigen::MatrixBase<D>& d) {
    static_assert(std::is_same_v<Act, Softmax>,
                  "backprop::LogLikelihoodCost needs a Softmax output layer (fused delta = "
                  "a - y); use CrossEntropyCost with Sigmoid, or QuadraticCost");
    d.derived() = a - y;
  }
};

/// \brief The cost `BasicNetwork::sgd` uses when none is named: `LogLikelihoodCost` for a
/// `Softmax` output layer (the quadratic cost learns slowly there, and is almost always
/// a forgotten template argument), `QuadraticCost` for every other output. Name the
/// cost, e.g. `net.sgd<QuadraticCost>(...)`, to choose otherwise.
struct DefaultCost {};

namespace detail {

template <class Cost, class OutputActivation>
struct ResolveCost {
  using type = Cost;
};
template <class OutputActivation>
struct ResolveCost<DefaultCost, OutputActivation> {
  using type = std::conditional_t<std::is_same_v<OutputActivation, Softmax>, LogLikelihoodCost,
                                  QuadraticCost>;
};
/// The cost `Cost` names for a network whose output activation is `OutputActivation`.
template <class Cost, class OutputActivation>
using resolve_cost_t = typename ResolveCost<Cost, OutputActivation>::type;

}  // namespace detail

}  // namespace backprop
