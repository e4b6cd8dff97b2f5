/// \file
/// \brief The C++20 concepts that user extensions are written against:
/// `Activation` (element-wise or matrix form), `Cost`, `Layer`.
#pragma once

#include <Eigen/Core>
#include <concepts>
#include <string_view>

#include "init/random.hpp"

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

namespace detail {

/// The gradient sink a layer's `backward` is checked against in `LayerObject`:
/// `sink(slot, param, add)`, with `add(target, factor, accumulate)`.
struct ArchetypeSink {
  template <class Slot, class P, class Add>
  void operator()(Slot, P&, Add&&) {}
};

}  // namespace detail

/// \brief The object of a layer for one scalar type (what `net.layer<I>()` returns):
/// its parameters and its forward and backward passes. docs/layers.md explains every
/// member with a complete example.
///
/// - `Scalar`, `inputs`, `outputs` (the flattened sizes of one sample), `Workspace`
///   (what a training pass keeps for its backward pass, default-constructible).
/// - `weights()` and `biases()`: the parameters, at most these two Eigen matrices or
///   vectors (empty ones for a layer without parameters); L1/L2 apply to `weights()`.
/// - `forward(x, y) const`: inference on a batch (`inputs x m` to `outputs x m`).
/// - `forward(x, ws, masks) const`: the training pass into `ws`; `output(ws)` is what
///   it passes on; `masks` is the generator of random training masks (dropout).
/// - `backward(x, ws, g, dx, sink)`: from g = dC/d(output) (the layer may overwrite
///   it): writes dC/dx into `*dx` unless `dx` is null (the first layer), then reports
///   the gradient of each parameter p by `sink(std::integral_constant<int, S>{}, p,
///   add)` with S = 0 for `weights()` and 1 for `biases()`, where `add(target, factor,
///   accumulate)` does target += factor * dC/dp (or target = dC/dp). It computes dx
///   first: the sink may update p in place.
/// - `model_name`: the name of the layer's record in the model files.
template <class T, class Scalar>
concept LayerObject = std::default_initializable<T> && std::copyable<T> &&
    std::default_initializable<typename T::Workspace> &&
    requires(T& l, const T& cl, typename T::Workspace& ws,
             const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>& x,
             Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>& m,
             Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>* dx, Rng* masks,
             detail::ArchetypeSink& sink) {
  requires std::same_as<typename T::Scalar, Scalar>;
  { T::inputs } -> std::convertible_to<int>;
  { T::outputs } -> std::convertible_to<int>;
  { T::model_name } -> std::convertible_to<std::string_view>;
  l.weights();
  l.biases();
  cl.forward(x, m);
  cl.forward(x, ws, masks);
  {
    T::output(ws)
    } -> std::convertible_to<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>&>;
  l.backward(x, ws, m, dx, sink);
};

/// \brief A layer descriptor usable in `BasicNetwork<Scalar, Layers...>`: its sizes
/// and, as `Instance<Scalar>`, its layer object for float and double.
template <class L>
concept Layer = requires {
  { L::inputs } -> std::convertible_to<int>;
  { L::outputs } -> std::convertible_to<int>;
  typename L::template Instance<double>;
}
&&LayerObject<typename L::template Instance<double>, double>&&
    LayerObject<typename L::template Instance<float>, float>;

}  // namespace backprop
