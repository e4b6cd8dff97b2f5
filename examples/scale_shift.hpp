// A layer written only against backprop's public layer concept (docs/layers.md):
// a learnable per-feature scale and shift, y = s (.) x + t, one s_k and t_k per
// feature k. Used by examples/06_custom_layer.cpp and by the tests.
//
//   forward:   y_kj = s_k x_kj + t_k            (j: the sample, one column each)
//   backward:  given g = dC/dy:  dC/dx_kj = s_k g_kj,
//              dC/ds_k = sum_j g_kj x_kj,  dC/dt_k = sum_j g_kj
#pragma once

#include <backprop/concepts.hpp>
#include <backprop/init/random.hpp>

#include <Eigen/Core>
#include <string_view>
#include <type_traits>

namespace user {

/// The descriptor that goes into `backprop::Network<...>`: sizes and, per scalar type,
/// the layer object.
template <int N>
struct ScaleShift {
  static constexpr int inputs = N;
  static constexpr int outputs = N;

  template <class T>
  class Instance {
   public:
    using Scalar = T;
    using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
    using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
    static constexpr int inputs = N;
    static constexpr int outputs = N;
    // The parameters: weights() is s (N x 1), biases() is t (N).
    static constexpr int weight_rows = N, weight_cols = 1, bias_rows = N;
    // The record of this layer in backprop's model files.
    static constexpr std::string_view model_name = "user.scale_shift";

    Instance() : m_scale(Matrix::Ones(N, 1)), m_shift(Vector::Zero(N)) {}

    Matrix& weights() noexcept { return m_scale; }
    const Matrix& weights() const noexcept { return m_scale; }
    Vector& biases() noexcept { return m_shift; }
    const Vector& biases() const noexcept { return m_shift; }
    friend bool operator==(const Instance& a, const Instance& b) {
      return a.m_scale == b.m_scale && a.m_shift == b.m_shift;
    }

    // Inference on a batch, one column per sample. const: safe from several threads.
    template <class X>
    void forward(const X& x, Matrix& y) const {
      y = (x.array().colwise() * m_scale.col(0).array()).matrix();
      y.colwise() += m_shift;
    }

    // Training: the pass keeps its output; this layer needs nothing else for backward.
    struct Workspace {
      Matrix y;
    };
    template <class X>
    void forward(const X& x, Workspace& ws, backprop::Rng* /*masks*/) const {
      forward(x, ws.y);
    }
    static const Matrix& output(const Workspace& ws) noexcept { return ws.y; }

    // g = dC/dy. First dC/dx (with the current s), then each parameter's gradient to the
    // sink: add(target, factor, accumulate) does target += factor * gradient (or, with
    // accumulate false, target = gradient). The sink may then update the parameter.
    template <class X, class Sink>
    void backward(const X& x, Workspace& /*ws*/, Matrix& g, Matrix* dx, Sink& sink) {
      if (dx != nullptr) *dx = (g.array().colwise() * m_scale.col(0).array()).matrix();
      sink(std::integral_constant<int, 0>{}, m_scale, [&](auto& target, T factor, bool accumulate) {
        if (accumulate) {
          target.col(0) += factor * g.cwiseProduct(x).rowwise().sum();
        } else {
          target.col(0) = g.cwiseProduct(x).rowwise().sum();
        }
      });
      sink(std::integral_constant<int, 1>{}, m_shift, [&](auto& target, T factor, bool accumulate) {
        if (accumulate) {
          target += factor * g.rowwise().sum();
        } else {
          target = g.rowwise().sum();
        }
      });
    }

   private:
    Matrix m_scale;
    Vector m_shift;
  };
};

}  // namespace user
