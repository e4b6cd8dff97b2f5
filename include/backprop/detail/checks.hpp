/// \file
/// \brief The run-time argument checks of `BasicNetwork` and its trainer (internal):
/// every message names the function, what is wrong and both sizes.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <string>
#include <type_traits>

#include "../data/dataset.hpp"
#include "../errors.hpp"
#include "meta.hpp"

namespace backprop::detail {

/// The data's scalar type must be the network's (a compile error otherwise).
template <class Net, class Derived>
constexpr void check_scalar() {
  static_assert(std::is_same_v<typename Derived::Scalar, typename Net::Scalar>,
                "backprop::Network: the data's scalar type must match the network's Scalar "
                "(convert with .template cast<Scalar>())");
}

/// The parameter matrices are dynamic and mutable: a user may assign a matrix
/// of another shape. Catch that before any product reads out of bounds.
template <class Net>
void check_parameters(const Net& net, const char* fn) {
  for_each_index<Net::num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    using T = typename Net::template LayerParameters<I>;
    const auto& p = net.template layer<I>();
    if (p.weights().rows() != T::weight_rows || p.weights().cols() != T::weight_cols ||
        p.biases().size() != T::bias_rows) {
      throw ShapeError(
          std::string(fn) + ": layer " + std::to_string(I) + " has weights " +
          std::to_string(p.weights().rows()) + "x" + std::to_string(p.weights().cols()) + " and " +
          std::to_string(p.biases().size()) + " biases, but it is " +
          std::to_string(T::weight_rows) + "x" + std::to_string(T::weight_cols) + " with " +
          std::to_string(T::bias_rows) + " biases (assign matrices of the layer's shape)");
    }
  });
}

inline void check_rows(const char* fn, const char* what, Eigen::Index got, int expected,
                       std::size_t layer_index) {
  if (got != expected) {
    throw ShapeError(std::string(fn) + ": " + what + " has " + std::to_string(got) +
                     " rows, layer " + std::to_string(layer_index) + " expects " +
                     std::to_string(expected));
  }
}

template <class Net, class DX, class DY>
void check_batch(const Net& net, const char* fn, const Eigen::MatrixBase<DX>& X,
                 const Eigen::MatrixBase<DY>& Y) {
  check_parameters(net, fn);
  check_scalar<Net, DX>();
  check_scalar<Net, DY>();
  check_rows(fn, "X", X.rows(), Net::inputs, 0);
  if (Y.rows() != Net::outputs) {
    throw ShapeError(std::string(fn) + ": Y has " + std::to_string(Y.rows()) +
                     " rows, the output layer " + std::to_string(Net::num_layers - 1) + " has " +
                     std::to_string(Net::outputs));
  }
  if (X.cols() != Y.cols()) {
    throw ShapeError(std::string(fn) + ": X has " + std::to_string(X.cols()) +
                     " columns but Y has " + std::to_string(Y.cols()));
  }
  if (X.cols() == 0) throw ShapeError(std::string(fn) + ": the mini-batch is empty (0 columns)");
}

template <class Net>
void check_dataset(const char* fn, const Dataset<typename Net::Scalar>& d) {
  d.check_consistent(fn);
  if (d.inputs.rows() != Net::inputs) {
    throw ShapeError(std::string(fn) + ": data has " + std::to_string(d.inputs.rows()) +
                     " input rows, layer 0 expects " + std::to_string(Net::inputs));
  }
  if (d.targets.rows() != Net::outputs) {
    throw ShapeError(std::string(fn) + ": data has " + std::to_string(d.targets.rows()) +
                     " target rows, the network has " + std::to_string(Net::outputs) + " outputs");
  }
}

}  // namespace backprop::detail
