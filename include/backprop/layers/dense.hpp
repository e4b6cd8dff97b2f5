/// \file
/// \brief `Dense<In, Out, Activation>`: a fully connected layer,
/// z = W a + b, a' = sigma(z), with W of shape Out x In and b of length Out.
#pragma once

#include <Eigen/Core>

#include "../activations/activations.hpp"
#include "../concepts.hpp"

namespace backprop {

namespace detail {

/// Storage rule: a parameter matrix with at most this many coefficients uses
/// fixed-size Eigen storage (no heap, unrolled small products); larger ones are
/// dynamic so that big layers (784 x 100 doubles = 627 KB) never land on the
/// stack or exceed Eigen's static allocation limit.
inline constexpr int fixed_storage_max_coefficients = 256;

template <int Rows, int Cols>
inline constexpr bool use_fixed_storage = Rows* Cols <= fixed_storage_max_coefficients;

/// Eigen dimension for a matrix dimension under the storage rule.
template <int Dim, int Rows, int Cols>
inline constexpr int storage_dim = use_fixed_storage<Rows, Cols> ? Dim : Eigen::Dynamic;

}  // namespace detail

/// \brief The parameters of one `Dense` layer for a given scalar type.
/// \tparam Scalar `float` or `double`.
template <class Scalar, int In, int Out, class Act>
class DenseParameters {
 public:
  /// Out x In; fixed-size when Out * In <= 256, dynamic otherwise.
  using WeightMatrix =
      Eigen::Matrix<Scalar, detail::storage_dim<Out, Out, In>, detail::storage_dim<In, Out, In>>;
  /// Out x 1; fixed-size when Out <= 256.
  using BiasVector = Eigen::Matrix<Scalar, detail::storage_dim<Out, Out, 1>, 1>;
  using activation = Act;
  static constexpr int inputs = In;
  static constexpr int outputs = Out;

  DenseParameters() : m_weights(WeightMatrix::Zero(Out, In)), m_biases(BiasVector::Zero(Out)) {}

  /// \brief W, Out x In. Mutable: users may set parameters directly.
  [[nodiscard]] WeightMatrix& weights() noexcept { return m_weights; }
  [[nodiscard]] const WeightMatrix& weights() const noexcept { return m_weights; }
  /// \brief b, Out x 1.
  [[nodiscard]] BiasVector& biases() noexcept { return m_biases; }
  [[nodiscard]] const BiasVector& biases() const noexcept { return m_biases; }

  friend bool operator==(const DenseParameters& a, const DenseParameters& b) {
    return a.m_weights == b.m_weights && a.m_biases == b.m_biases;
  }

 private:
  WeightMatrix m_weights;
  BiasVector m_biases;
};

/// \brief A fully connected layer: z = W a + b, output sigma(z).
/// \tparam In number of inputs (columns of W)
/// \tparam Out number of outputs (rows of W)
/// \tparam Act the activation, a type satisfying `backprop::Activation`
template <int In, int Out, class Act = Sigmoid>
struct Dense {
  static_assert(In > 0 && Out > 0, "backprop::Dense<In, Out, Act>: In and Out must be positive");
  static_assert(Activation<Act>,
                "backprop::Dense<In, Out, Act>: Act is not an activation: it must satisfy "
                "backprop::Activation (static name plus value/derivative, or forward/backward)");
  static constexpr int inputs = In;
  static constexpr int outputs = Out;
  using activation = Act;
  template <class Scalar>
  using Parameters = DenseParameters<Scalar, In, Out, Act>;
};

}  // namespace backprop
