/// \file
/// \brief Built-in activations: Sigmoid, Tanh, ReLU, LeakyReLU, Softmax, Identity,
/// and the dispatch that lifts element-wise user activations to matrices.
///
/// Each activation maps z (one column per sample) to a = sigma(z) and back-
/// propagates d = J^T g. All are numerically stable for any finite z.
#pragma once

#include <Eigen/Core>
#include <limits>
#include <ratio>
#include <string_view>
#include <type_traits>

#include "../concepts.hpp"
#include "../detail/elementwise.hpp"

namespace backprop {

/// \brief Logistic sigmoid, a = 1 / (1 + e^-z); sigma' = a (1 - a).
///
/// z is clamped below at -80 (float) / -700 (double) so e^-z never overflows;
/// the result there is below 2e-35 either way.
struct Sigmoid {
  /// The activation's name in the model files.
  static constexpr std::string_view name = "sigmoid";
  /// \brief a = 1 / (1 + e^-z), with z clamped as above.
  template <class Z, class A>
  static void forward(const Eigen::MatrixBase<Z>& z, Eigen::MatrixBase<A>& a) {
    using S = typename Z::Scalar;
    if (detail::sigmoid_kernel(z.derived(), a.derived())) return;
    constexpr S lo = std::is_same_v<S, float> ? S(-80) : S(-700);
    a.derived() = ((-z.array().max(lo)).exp() + S(1)).inverse().matrix();
  }
  /// \brief d = g (.) a (.) (1 - a).
  template <class Z, class A, class G, class D>
  static void backward(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<A>& a,
                       const Eigen::MatrixBase<G>& g, Eigen::MatrixBase<D>& d) {
    using S = typename Z::Scalar;
    d.derived() = (g.array() * a.array() * (S(1) - a.array())).matrix();
  }
};

/// \brief Hyperbolic tangent, a = tanh z; sigma' = 1 - a^2.
struct Tanh {
  /// The activation's name in the model files.
  static constexpr std::string_view name = "tanh";
  /// \brief a = tanh z.
  template <class Z, class A>
  static void forward(const Eigen::MatrixBase<Z>& z, Eigen::MatrixBase<A>& a) {
    a.derived() = z.array().tanh().matrix();
  }
  /// \brief d = g (.) (1 - a^2).
  template <class Z, class A, class G, class D>
  static void backward(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<A>& a,
                       const Eigen::MatrixBase<G>& g, Eigen::MatrixBase<D>& d) {
    using S = typename Z::Scalar;
    d.derived() = (g.array() * (S(1) - a.array().square())).matrix();
  }
};

/// \brief Rectified linear unit, a = max(z, 0); sigma' = 1 for z > 0, else 0.
struct ReLU {
  /// The activation's name in the model files.
  static constexpr std::string_view name = "relu";
  /// \brief a = max(z, 0).
  template <class Z, class A>
  static void forward(const Eigen::MatrixBase<Z>& z, Eigen::MatrixBase<A>& a) {
    using S = typename Z::Scalar;
    if (detail::relu_kernel(z.derived(), a.derived())) return;
    a.derived() = z.array().max(S(0)).matrix();
  }
  /// \brief d = g where z > 0, else 0.
  template <class Z, class A, class G, class D>
  static void backward(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<A>&,
                       const Eigen::MatrixBase<G>& g, Eigen::MatrixBase<D>& d) {
    using S = typename Z::Scalar;
    if (detail::relu_backward_kernel(z.derived(), g.derived(), d.derived())) return;
    d.derived() = (z.array() > S(0)).select(g.array(), S(0)).matrix();
  }
};

/// \brief Leaky ReLU with slope `Slope` (a std::ratio) for z <= 0:
/// a = z for z > 0, else slope * z.
template <class Slope = std::ratio<1, 100>>
struct BasicLeakyReLU {
  /// The activation's name in the model files.
  static constexpr std::string_view name = "leaky_relu";
  /// `Slope` as a double.
  static constexpr double slope = double(Slope::num) / double(Slope::den);
  /// \brief a = z for z > 0, else slope * z.
  template <class Z, class A>
  static void forward(const Eigen::MatrixBase<Z>& z, Eigen::MatrixBase<A>& a) {
    using S = typename Z::Scalar;
    a.derived() = (z.array() > S(0)).select(z.array(), S(slope) * z.array()).matrix();
  }
  /// \brief d = g where z > 0, else slope * g.
  template <class Z, class A, class G, class D>
  static void backward(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<A>&,
                       const Eigen::MatrixBase<G>& g, Eigen::MatrixBase<D>& d) {
    using S = typename Z::Scalar;
    d.derived() = (z.array() > S(0)).select(g.array(), S(slope) * g.array()).matrix();
  }
};

/// \brief Leaky ReLU with slope 0.01.
using LeakyReLU = BasicLeakyReLU<>;

/// \brief Identity (linear output), a = z.
struct Identity {
  /// The activation's name in the model files.
  static constexpr std::string_view name = "identity";
  /// \brief a = z.
  template <class Z, class A>
  static void forward(const Eigen::MatrixBase<Z>& z, Eigen::MatrixBase<A>& a) {
    a.derived() = z;
  }
  /// \brief d = g.
  template <class Z, class A, class G, class D>
  static void backward(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<A>&,
                       const Eigen::MatrixBase<G>& g, Eigen::MatrixBase<D>& d) {
    d.derived() = g;
  }
};

/// \brief Softmax over each column, a_j = e^{z_j - max z} / sum_k e^{z_k - max z}.
/// Backward: d = a (.) (g - sum(g (.) a)), the Jacobian-vector product.
struct Softmax {
  /// The activation's name in the model files.
  static constexpr std::string_view name = "softmax";
  /// \brief a = softmax of each column of z (max-shifted, see above).
  template <class Z, class A>
  static void forward(const Eigen::MatrixBase<Z>& z, Eigen::MatrixBase<A>& a_) {
    // Column by column: no temporaries (no heap allocation per mini-batch).
    auto& a = a_.derived();
    for (Eigen::Index j = 0; j < z.cols(); ++j) {
      auto ac = a.col(j);
      ac = (z.col(j).array() - z.col(j).maxCoeff()).exp().matrix();
      ac /= ac.sum();
    }
  }
  /// \brief d = a (.) (g - sum(g (.) a)), column by column.
  template <class Z, class A, class G, class D>
  static void backward(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<A>& a,
                       const Eigen::MatrixBase<G>& g, Eigen::MatrixBase<D>& d) {
    for (Eigen::Index j = 0; j < a.cols(); ++j) {
      const auto s = g.col(j).dot(a.col(j));
      d.derived().col(j) = (a.col(j).array() * (g.col(j).array() - s)).matrix();
    }
  }
};

namespace detail {

/// Whether an activation is a BasicLeakyReLU (of any slope).
template <class>
inline constexpr bool is_leaky_relu = false;
template <class Slope>
inline constexpr bool is_leaky_relu<BasicLeakyReLU<Slope>> = true;

/// a = sigma(z) for any Activation.
template <class Act, class Z, class A>
void activation_forward(const Eigen::MatrixBase<Z>& z, Eigen::MatrixBase<A>& a) {
  if constexpr (MatrixActivation<Act>) {
    Act::forward(z, a);
  } else {
    using S = typename Z::Scalar;
    a.derived() = z.unaryExpr([](S v) { return static_cast<S>(Act::value(v)); });
  }
}

/// d = J^T g for any Activation.
template <class Act, class Z, class A, class G, class D>
void activation_backward(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<A>& a,
                         const Eigen::MatrixBase<G>& g, Eigen::MatrixBase<D>& d) {
  if constexpr (MatrixActivation<Act>) {
    Act::backward(z, a, g, d);
  } else {
    using S = typename Z::Scalar;
    d.derived() = g.cwiseProduct(
        z.binaryExpr(a, [](S zv, S av) { return static_cast<S>(Act::derivative(zv, av)); }));
  }
}

}  // namespace detail

}  // namespace backprop
