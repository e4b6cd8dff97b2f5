/// \file
/// \brief `DropoutDense<In, Out, Act, Rate>`: a `Dense` layer whose outputs are
/// dropped out (inverted dropout) in training passes only.
///
/// The maths: in a training pass, y = m (.) sigma(W x + b) with m_k = 1/(1 - p) with
/// probability 1 - p and 0 otherwise, drawn afresh for every output and sample; the
/// backward pass multiplies the incoming dC/dy by the same m before the `Dense`
/// backward. E[y] = sigma(W x + b), so inference uses no mask.
#pragma once

#include <Eigen/Core>
#include <ratio>
#include <string_view>
#include <type_traits>

#include "dense.hpp"

namespace backprop {

/// \brief The layer object of `DropoutDense`: a `DenseLayer` (same parameters, same
/// model record) whose training passes mask the outputs.
template <class Scalar, int In, int Out, class Act, class Rate>
class DropoutDenseLayer : public DenseLayer<Scalar, In, Out, Act> {
  using Base = DenseLayer<Scalar, In, Out, Act>;

 public:
  using typename Base::Matrix;
  /// p, the probability of dropping each output in training.
  static constexpr double dropout_rate =
      static_cast<double>(Rate::num) / static_cast<double>(Rate::den);

  /// The `Dense` workspace plus the mask of the training pass.
  struct Workspace : Base::Workspace {
    Matrix mask;          ///< already divided by 1 - p
    Matrix dropped;       ///< the masked output passed on
    bool active = false;  ///< whether this pass masked its output
  };

  using Base::forward;

  /// \brief The `Dense` training pass; with `masks` (training) and p > 0 the output is
  /// multiplied by a fresh mask. ws.a keeps the unmasked activations for the derivative.
  template <class X>
  void forward(const X& x, Workspace& ws, Rng* masks) const {
    Base::forward(x, ws, masks);
    ws.active = false;
    if constexpr (dropout_rate > 0.0) {
      if (masks == nullptr) return;
      ws.active = true;
      ws.mask.resize(Out, ws.a.cols());
      const double keep = 1.0 - dropout_rate;
      const Scalar scale = static_cast<Scalar>(1.0 / keep);
      Scalar* data = ws.mask.data();
      for (Eigen::Index k = 0; k < ws.mask.size(); ++k) {
        data[k] = masks->uniform() < keep ? scale : Scalar(0);
      }
      ws.dropped.resize(Out, ws.a.cols());
      ws.dropped.noalias() = ws.a.cwiseProduct(ws.mask);
    }
  }

  /// \brief What the training pass passes on: the masked output, if masked.
  [[nodiscard]] static const Matrix& output(const Workspace& ws) noexcept {
    return ws.active ? ws.dropped : ws.a;
  }

  /// \brief Multiplies g = dC/dy by the pass's mask, then the `Dense` backward pass.
  template <class X, class Sink>
  void backward(const X& x, Workspace& ws, Matrix& g, Matrix* dx, Sink& sink) {
    if (ws.active) g.array() *= ws.mask.array();
    Base::backward(x, ws, g, dx, sink);
  }
};

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
  /// The layer object for a scalar type (`net.layer<I>()`).
  template <class Scalar>
  using Instance = DropoutDenseLayer<Scalar, In, Out, Act, Rate>;
  /// The name of earlier versions for `Instance`.
  template <class Scalar>
  using Parameters = Instance<Scalar>;
};

/// \brief The layer object of `Dropout<N, Rate>`: no parameters (empty `weights()` and
/// `biases()`); the identity at inference, a fresh inverted-dropout mask in training.
template <class Scalar_, int N, class Rate>
class DropoutLayer {
 public:
  /// `float` or `double`.
  using Scalar = Scalar_;
  /// A batch, one column per sample.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  /// A column vector.
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  /// N inputs per sample.
  static constexpr int inputs = N;
  /// N outputs per sample.
  static constexpr int outputs = N;
  /// The shape of `weights()` and `biases()`: empty.
  ///@{
  static constexpr int weight_rows = 0, weight_cols = 0, bias_rows = 0;
  ///@}
  /// p, the probability of dropping each value in training.
  static constexpr double dropout_rate =
      static_cast<double>(Rate::num) / static_cast<double>(Rate::den);
  /// The record name: "dropout" (the rate is a training setting, not part of the model).
  static constexpr std::string_view model_name = "dropout";

  /// \brief No weights: an empty matrix.
  ///@{
  [[nodiscard]] Matrix& weights() noexcept { return m_none; }
  [[nodiscard]] const Matrix& weights() const noexcept { return m_none; }
  ///@}
  /// \brief No biases: an empty vector.
  ///@{
  [[nodiscard]] Vector& biases() noexcept { return m_none_b; }
  [[nodiscard]] const Vector& biases() const noexcept { return m_none_b; }
  ///@}
  /// \brief ONNX (io/onnx.hpp): nothing (inference is the identity); reading passes
  /// over Dropout and Identity nodes.
  template <class Graph>
  void write_onnx(Graph& g) const {
    g.dropout(N);
  }
  /// \brief Reads what `write_onnx` writes.
  template <class Graph>
  void read_onnx(Graph& g) {
    g.dropout(N);
  }
  /// \brief Always equal: no parameters.
  friend bool operator==(const DropoutLayer&, const DropoutLayer&) { return true; }

  /// \brief Inference: y = x.
  template <class X>
  void forward(const X& x, Matrix& y) const {
    y = x;
  }

  /// What a training pass keeps for its backward pass.
  struct Workspace {
    /// The output and the mask (already divided by 1 - p).
    ///@{
    Matrix y, mask;
    ///@}
    bool active = false;  ///< whether this pass masked its output
  };

  /// \brief Training pass: y = m (.) x with m_k = 1/(1 - p) with probability 1 - p, else 0
  /// (drawn from `masks`); without `masks` (gradient, backprop) y = x.
  template <class X>
  void forward(const X& x, Workspace& ws, Rng* masks) const {
    ws.active = dropout_rate > 0.0 && masks != nullptr;
    if (!ws.active) {
      ws.y = x;
      return;
    }
    ws.mask.resize(N, x.cols());
    const Scalar scale = static_cast<Scalar>(1.0 / (1.0 - dropout_rate));
    Scalar* data = ws.mask.data();
    for (Eigen::Index k = 0; k < ws.mask.size(); ++k) {
      data[k] = masks->uniform() < 1.0 - dropout_rate ? scale : Scalar(0);
    }
    ws.y.noalias() = x.cwiseProduct(ws.mask);
  }

  /// \brief What the training pass passes on, y.
  [[nodiscard]] static const Matrix& output(const Workspace& ws) noexcept { return ws.y; }

  /// \brief dC/dx = m (.) dC/dy (or dC/dy when the pass had no mask).
  template <class X, class Sink>
  void backward(const X& /*x*/, Workspace& ws, Matrix& g, Matrix* dx, Sink& /*sink*/) {
    if (dx == nullptr) return;
    if (ws.active) {
      dx->noalias() = g.cwiseProduct(ws.mask);
    } else {
      *dx = g;
    }
  }

 private:
  Matrix m_none;
  Vector m_none_b;
};

/// \brief Inverted dropout of `N` values on its own, for any place in a network (after a
/// convolution or a pool, before the first layer: network3.py drops each layer's inputs).
/// Training passes multiply by a mask as `DropoutDense` does; inference is the identity.
/// No parameters. \tparam Rate the drop probability p as a `std::ratio` in [0, 1)
template <int N, class Rate = std::ratio<1, 2>>
struct Dropout {
  static_assert(N > 0, "backprop::Dropout<N, Rate>: N must be positive");
  static_assert(Rate::num >= 0 && Rate::num < Rate::den,
                "backprop::Dropout<N, Rate>: the drop rate must be in [0, 1)");
  /// N inputs per sample.
  static constexpr int inputs = N;
  /// N outputs per sample.
  static constexpr int outputs = N;
  /// p, the probability of dropping each value in training.
  static constexpr double dropout_rate =
      static_cast<double>(Rate::num) / static_cast<double>(Rate::den);
  /// The layer object for a scalar type (`net.layer<I>()`).
  template <class Scalar>
  using Instance = DropoutLayer<Scalar, N, Rate>;
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
