/// \file
/// \brief The C++20 concepts that user extensions are written against:
/// `Activation` (element-wise or matrix form), `Cost`, `Layer`.
#pragma once

#include <Eigen/Core>
#include <concepts>
#include <string_view>

namespace backprop {

/// \brief An activation written element by element: a = value(z), and
/// derivative(z, a) = da/dz (both scalar). backprop lifts it to matrices.
///
/// \code
/// struct Softplus {
///   static constexpr std::string_view name = "softplus";
///   template <class T> static T value(T z) { return std::log1p(std::exp(z)); }
///   template <class T> static T derivative(T z, T) { return T(1) / (T(1) + std::exp(-z)); }
/// };
/// \endcode
template <class A>
concept ElementwiseActivation = requires(double z, double a, float zf, float af) {
  { A::name } -> std::convertible_to<std::string_view>;
  { A::value(z) } -> std::convertible_to<double>;
  { A::derivative(z, a) } -> std::convertible_to<double>;
  { A::value(zf) } -> std::convertible_to<float>;
  { A::derivative(zf, af) } -> std::convertible_to<float>;
};

/// \brief An activation written on whole matrices (one column per sample):
/// `forward(z, a)` writes a = sigma(z); `backward(z, a, g, d)` writes
/// d = J_sigma(z)^T g, the gradient with respect to z given the gradient g with
/// respect to a. Needed when an output depends on several inputs (softmax).
/// The output arguments are `Eigen::MatrixBase<D>&` (plain matrices, already
/// sized like z); write them through `.derived()`.
template <class A>
concept MatrixActivation = requires(const Eigen::MatrixXd& z, const Eigen::MatrixXd& a,
                                    const Eigen::MatrixXd& g, Eigen::MatrixXd& out,
                                    const Eigen::MatrixXf& zf, Eigen::MatrixXf& outf) {
  { A::name } -> std::convertible_to<std::string_view>;
  A::forward(z, out);
  A::backward(z, a, g, out);
  A::forward(zf, outf);
};

/// \brief Anything usable as the activation of a layer.
template <class A>
concept Activation = ElementwiseActivation<A> || MatrixActivation<A>;

/// \brief A cost function for an output layer with activation `Act`.
///
/// `value(z, a, y)` returns the cost summed over the columns (samples);
/// `output_delta<Act>(z, a, y, d)` writes delta_L = dC/dz_L for every column.
/// A cost may fuse with particular activations (cross-entropy with sigmoid gives
/// delta = a - y) and reject the ones it cannot handle stably at compile time.
template <class C, class Act>
concept CostFor = requires(const Eigen::MatrixXd& z, const Eigen::MatrixXd& a,
                           const Eigen::MatrixXd& y, Eigen::MatrixXd& d) {
  { C::name } -> std::convertible_to<std::string_view>;
  { C::value(z, a, y) } -> std::convertible_to<double>;
  C::template output_delta<Act>(z, a, y, d);
};

/// \brief A layer descriptor usable in `BasicNetwork<Scalar, Layers...>`.
template <class L>
concept Layer = requires {
  { L::inputs } -> std::convertible_to<int>;
  { L::outputs } -> std::convertible_to<int>;
  typename L::activation;
  typename L::template Parameters<double>;
};

}  // namespace backprop
