/// \file
/// \brief Optimizers for `BasicNetwork::sgd`: the `Optimizer` concept and the
/// built-ins `PlainSgd` (the default), `Momentum` (optionally Nesterov) and `Adam`
/// (AdamW with `weight_decay > 0`).
///
/// An optimizer turns the mean gradient of one parameter (a weight matrix or a bias
/// vector) into an update of that parameter. `sgd` computes, for every mini-batch of
/// m samples and every layer, the mean gradient
///   G_W = 1/m sum dC/dW + lambda/n W + lambda1/n sign(W),   G_b = 1/m sum dC/db
/// (L2 `lambda` and L1 `lambda1` from `SgdOptions` enter the gradient; biases are not
/// regularised) into a buffer it reuses, then calls `update` once for the weights and
/// once for the biases of each layer. `PlainSgd` skips the buffer: the network applies
/// w <- (1 - eta lambda/n) w - eta lambda1/n sign(w) - eta/m D A^T with one product.
///
/// The interface a user-written optimizer implements:
/// - `template <class Scalar> struct State`: whatever it keeps per parameter
///   (default-constructible; size it lazily on the first `update`);
/// - `template <class P, class G, class S> void update(P& param, const G& mean_gradient,
///   S& state, double eta, long long step) const`: `param` and `mean_gradient` are
///   Eigen matrices of the same shape (W: Out x In, b: Out x 1), `state` is this
///   parameter's `State<Scalar>`, `eta` the learning rate of the current epoch (see
///   `SgdOptions::schedule`) and `step` the 1-based number of the update within the
///   `sgd` call (the same for all parameters of one mini-batch; Adam's t).
///
/// The states live in the `sgd` call: each call starts from fresh (empty) states, so
/// momentum and Adam's moments do not carry over from one `sgd` call to the next.
///
/// A complete user-written optimizer, RMSProp, used as `net.sgd<Cost>(train, options,
/// &eval, RmsProp{.rho = 0.9})`:
/// \code
/// struct RmsProp {
///   double rho = 0.9;
///   double epsilon = 1e-8;
///   template <class Scalar>
///   struct State {
///     Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> mean_square;
///   };
///   template <class P, class G, class S>
///   void update(P& param, const G& g, S& state, double eta, long long) const {
///     using Scalar = typename P::Scalar;
///     if (state.mean_square.size() == 0) state.mean_square.setZero(param.rows(), param.cols());
///     const auto r = static_cast<Scalar>(rho);
///     state.mean_square = r * state.mean_square + (Scalar(1) - r) * g.cwiseAbs2();
///     param.array() -= static_cast<Scalar>(eta) * g.array() /
///                      (state.mean_square.array().sqrt() + static_cast<Scalar>(epsilon));
///   }
/// };
/// static_assert(backprop::Optimizer<RmsProp>);
/// \endcode
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <concepts>
#include <type_traits>

namespace backprop {

/// \brief An optimizer usable with `BasicNetwork::sgd` (see the file comment for the
/// contract and an example): a copyable object with a per-parameter `State<Scalar>`
/// and a const `update(param, mean_gradient, state, eta, step)` for float and double
/// weight matrices and bias vectors.
template <class O>
concept Optimizer = std::copy_constructible<O> &&
    std::default_initializable<typename O::template State<float>> &&
    std::default_initializable<typename O::template State<double>> &&
    requires(const O& o, typename O::template State<float>& sf,
             typename O::template State<double>& sd, Eigen::MatrixXf& wf,
             const Eigen::MatrixXf& gwf, Eigen::VectorXf& bf, const Eigen::VectorXf& gbf,
             Eigen::MatrixXd& wd, const Eigen::MatrixXd& gwd, Eigen::VectorXd& bd,
             const Eigen::VectorXd& gbd, double eta, long long step) {
  o.update(wf, gwf, sf, eta, step);
  o.update(bf, gbf, sf, eta, step);
  o.update(wd, gwd, sd, eta, step);
  o.update(bd, gbd, sd, eta, step);
};

namespace detail {

/// Zero-fills `m` to the shape of `like` if it is still empty (lazy state sizing).
template <class M, class P>
void size_state(M& m, const P& like) {
  if (m.size() == 0) m.setZero(like.rows(), like.cols());
}

}  // namespace detail

/// \brief Plain mini-batch SGD: p <- p - eta G. The default. `sgd` recognises it and
/// uses the fused update (one product per weight matrix, no gradient buffer); `update`
/// is what that fused path computes, for use through the generic interface.
struct PlainSgd {
  /// None: plain SGD keeps no state.
  template <class Scalar>
  struct State {};
  /// \brief param <- param - eta mean_gradient.
  template <class P, class G, class S>
  void update(P& param, const G& mean_gradient, S&, double eta, long long) const {
    param.noalias() -= static_cast<typename P::Scalar>(eta) * mean_gradient;
  }
};

/// \brief Momentum (the book's chapter 3): v <- mu v - eta G, p <- p + v.
/// With `nesterov`, the look-ahead form p <- p + mu v - eta G (with the new v), the
/// usual reformulation of Nesterov's accelerated gradient for a gradient taken at p.
struct Momentum {
  double mu = 0.9;  ///< the "friction" coefficient, in [0, 1)
  /// The look-ahead (Nesterov) form.
  bool nesterov = false;
  /// The state of one parameter matrix.
  template <class Scalar>
  struct State {
    /// v, the shape of the parameter (zero until the first update).
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> velocity;
  };
  /// \brief One step on `param` with G = `mean_gradient` and learning rate `eta`.
  template <class P, class G, class S>
  void update(P& param, const G& mean_gradient, S& state, double eta, long long) const {
    using Scalar = typename P::Scalar;
    detail::size_state(state.velocity, param);
    const auto m = static_cast<Scalar>(mu);
    const auto e = static_cast<Scalar>(eta);
    state.velocity = m * state.velocity - e * mean_gradient;
    if (nesterov) {
      param += m * state.velocity - e * mean_gradient;
    } else {
      param += state.velocity;
    }
  }
};

/// \brief Adam (Kingma and Ba): m <- b1 m + (1 - b1) G, v <- b2 v + (1 - b2) G^2,
/// p <- p - eta (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + epsilon), t = `step`.
/// `SgdOptions::lambda` (and `lambda1`) enter G, i.e. L2 regularisation in Adam's
/// coupled form; `weight_decay` > 0 gives AdamW's decoupled decay (Loshchilov and
/// Hutter): additionally p <- p - eta weight_decay p, using p before the Adam step.
struct Adam {
  double beta1 = 0.9;         ///< b1, the decay of m
  double beta2 = 0.999;       ///< b2, the decay of v
  double epsilon = 1e-8;      ///< added to the denominator
  double weight_decay = 0.0;  ///< > 0: AdamW
  /// The state of one parameter matrix.
  template <class Scalar>
  struct State {
    /// m and v, the shape of the parameter (zero until the first update).
    ///@{
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> m, v;
    ///@}
  };
  /// \brief One step on `param` with G = `mean_gradient`, learning rate `eta` and
  /// t = `step` (1 for the first update).
  template <class P, class G, class S>
  void update(P& param, const G& mean_gradient, S& state, double eta, long long step) const {
    using Scalar = typename P::Scalar;
    detail::size_state(state.m, param);
    detail::size_state(state.v, param);
    const auto b1 = static_cast<Scalar>(beta1);
    const auto b2 = static_cast<Scalar>(beta2);
    state.m = b1 * state.m + (Scalar(1) - b1) * mean_gradient;
    state.v = b2 * state.v + (Scalar(1) - b2) * mean_gradient.cwiseAbs2();
    const double t = static_cast<double>(step);
    const auto c1 = static_cast<Scalar>(1.0 / (1.0 - std::pow(beta1, t)));
    const auto c2 = static_cast<Scalar>(1.0 / (1.0 - std::pow(beta2, t)));
    if (weight_decay > 0.0) param *= static_cast<Scalar>(1.0 - eta * weight_decay);
    param.array() -= static_cast<Scalar>(eta) * (c1 * state.m.array()) /
                     ((c2 * state.v.array()).sqrt() + static_cast<Scalar>(epsilon));
  }
};

static_assert(Optimizer<PlainSgd> && Optimizer<Momentum> && Optimizer<Adam>);

}  // namespace backprop
