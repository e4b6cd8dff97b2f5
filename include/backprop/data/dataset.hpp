/// \file
/// \brief `Dataset<Scalar>`: samples as columns, with one-hot targets and labels.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <string>
#include <vector>

#include "../errors.hpp"

namespace backprop {

/// \brief A labelled data set. Samples are columns, everywhere in backprop.
/// \tparam Scalar `float` or `double`.
///
/// `inputs` is features x N, `targets` is outputs x N (one-hot for
/// classification, real values for regression) and `labels` holds the N class
/// indices (empty for regression data). The names are optional (`load_csv` fills
/// them from a header and from text labels).
template <class Scalar>
struct Dataset {
  /// \brief A dynamic matrix of `Scalar`.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  Matrix inputs;           ///< features x N, one sample per column
  Matrix targets;          ///< outputs x N: one-hot (classification) or real values (regression)
  Eigen::VectorXi labels;  ///< the N class indices, or empty (regression)
  /// Names of the input rows (features), or empty.
  std::vector<std::string> feature_names{};
  /// Names of the target rows of regression data, or empty.
  std::vector<std::string> target_names{};
  /// Class `c` is `class_names[c]` (text labels), or empty.
  std::vector<std::string> class_names{};

  /// \brief True when the data set has a class label per sample.
  [[nodiscard]] bool has_labels() const noexcept {
    return labels.size() != 0 && labels.size() == inputs.cols();
  }

  /// \brief Number of samples (columns).
  [[nodiscard]] Eigen::Index size() const noexcept { return inputs.cols(); }
  /// \brief True when there are no samples.
  [[nodiscard]] bool empty() const noexcept { return inputs.cols() == 0; }

  /// \brief Columns `[first, first + count)` as a new data set.
  /// \throws ShapeError if the range is outside the data.
  [[nodiscard]] Dataset slice(Eigen::Index first, Eigen::Index count) const {
    if (first < 0 || count < 0 || first + count > size()) {
      throw ShapeError("Dataset::slice: range [" + std::to_string(first) + ", " +
                       std::to_string(first + count) + ") is outside a data set of " +
                       std::to_string(size()) + " samples");
    }
    Dataset out = with_names();
    out.inputs = inputs.middleCols(first, count);
    out.targets = targets.middleCols(first, count);
    if (labels.size() != 0) out.labels = labels.segment(first, count);
    return out;
  }

  /// \brief The samples at `indices` (in that order) as a new data set.
  /// \throws ShapeError if an index is outside the data.
  [[nodiscard]] Dataset select(const std::vector<Eigen::Index>& indices) const {
    Dataset out = with_names();
    const auto m = static_cast<Eigen::Index>(indices.size());
    out.inputs.resize(inputs.rows(), m);
    out.targets.resize(targets.rows(), m);
    if (labels.size() != 0) out.labels.resize(m);
    for (Eigen::Index k = 0; k < m; ++k) {
      const Eigen::Index i = indices[static_cast<std::size_t>(k)];
      if (i < 0 || i >= size()) {
        throw ShapeError("Dataset::select: index " + std::to_string(i) +
                         " is outside a data set of " + std::to_string(size()) + " samples");
      }
      out.inputs.col(k) = inputs.col(i);
      out.targets.col(k) = targets.col(i);
      if (labels.size() != 0) out.labels(k) = labels(i);
    }
    return out;
  }

  /// \brief An empty data set with this one's names.
  [[nodiscard]] Dataset with_names() const {
    Dataset out;
    out.feature_names = feature_names;
    out.target_names = target_names;
    out.class_names = class_names;
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
