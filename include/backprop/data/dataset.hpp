/// \file
/// \brief `Dataset<Scalar>`: samples as columns, with one-hot targets and labels.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <string>

#include "../errors.hpp"

namespace backprop {

/// \brief A labelled data set. Samples are columns, everywhere in backprop.
/// \tparam Scalar `float` or `double`.
///
/// `inputs` is features x N, `targets` is outputs x N (one-hot for
/// classification) and `labels` holds the N class indices (may be empty for
/// regression data).
template <class Scalar>
struct Dataset {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  Matrix inputs;
  Matrix targets;
  Eigen::VectorXi labels;

  /// \brief Number of samples (columns).
  [[nodiscard]] Eigen::Index size() const noexcept { return inputs.cols(); }
  [[nodiscard]] bool empty() const noexcept { return inputs.cols() == 0; }

  /// \brief Columns `[first, first + count)` as a new data set.
  /// \throws ShapeError if the range is outside the data.
  [[nodiscard]] Dataset slice(Eigen::Index first, Eigen::Index count) const {
    if (first < 0 || count < 0 || first + count > size()) {
      throw ShapeError("Dataset::slice: range [" + std::to_string(first) + ", " +
                       std::to_string(first + count) + ") is outside a data set of " +
                       std::to_string(size()) + " samples");
    }
    Dataset out;
    out.inputs = inputs.middleCols(first, count);
    out.targets = targets.middleCols(first, count);
    if (labels.size() != 0) out.labels = labels.segment(first, count);
    return out;
  }

  /// \brief Checks that inputs, targets and labels agree on the sample count.
  /// \throws ShapeError naming the sizes that differ.
  void check_consistent(const char* what = "Dataset") const {
    if (targets.cols() != inputs.cols()) {
      throw ShapeError(std::string(what) + ": inputs have " + std::to_string(inputs.cols()) +
                       " columns but targets have " + std::to_string(targets.cols()));
    }
    if (labels.size() != 0 && labels.size() != inputs.cols()) {
      throw ShapeError(std::string(what) + ": inputs have " + std::to_string(inputs.cols()) +
                       " columns but there are " + std::to_string(labels.size()) + " labels");
    }
  }
};

/// \brief One-hot encodes `labels` into a `classes` x N matrix.
/// \throws ValueError if a label is outside `[0, classes)`.
template <class Scalar>
[[nodiscard]] Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> one_hot(
    const Eigen::VectorXi& labels, int classes) {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> out =
      Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>::Zero(classes, labels.size());
  for (Eigen::Index i = 0; i < labels.size(); ++i) {
    const int l = labels(i);
    if (l < 0 || l >= classes) {
      throw ValueError("one_hot: label " + std::to_string(l) + " at index " + std::to_string(i) +
                       " is outside [0, " + std::to_string(classes) + ")");
    }
    out(l, i) = Scalar(1);
  }
  return out;
}

}  // namespace backprop
