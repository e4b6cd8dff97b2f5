/// \file
/// \brief Data expansion by one-pixel shifts (network3.py's expand_mnist.py) and the
/// majority vote of an ensemble of classifiers.
#pragma once

#include <Eigen/Core>
#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "../errors.hpp"
#include "dataset.hpp"

namespace backprop {

/// \brief The images of `data` followed, each, by its four copies shifted by one pixel
/// up, down, left and right (zeros shifted in), as network3.py's expand_mnist.py makes
/// the book's 250,000 images from 50,000: sample s becomes samples 5 s .. 5 s + 4 (the
/// original first), with the same targets and labels.
/// \param data the images, one column per sample
/// \param height, width, channels the image shape of a column (CHW order; MNIST: 28,
///        28, 1)
/// \throws ShapeError if the inputs do not have channels x height x width rows or the
///         data set is inconsistent
template <class Scalar>
[[nodiscard]] Dataset<Scalar> expand_by_shifts(const Dataset<Scalar>& data, int height, int width,
                                               int channels = 1) {
  data.check_consistent("expand_by_shifts");
  if (height <= 0 || width <= 0 || channels <= 0 ||
      data.inputs.rows() != Eigen::Index{channels} * height * width) {
    throw ShapeError("expand_by_shifts: the inputs have " + std::to_string(data.inputs.rows()) +
                     " rows, images of " + std::to_string(channels) + " x " +
                     std::to_string(height) + " x " + std::to_string(width) + " need " +
                     std::to_string(Eigen::Index{channels} * height * width));
  }
  const Eigen::Index n = data.size();
  Dataset<Scalar> out;
  out.inputs.setZero(data.inputs.rows(), 5 * n);
  out.targets.resize(data.targets.rows(), 5 * n);
  if (data.labels.size() != 0) out.labels.resize(5 * n);
  // (dy, dx): the content moves by dy rows and dx columns.
  constexpr std::array<std::array<int, 2>, 5> shifts{{{0, 0}, {-1, 0}, {1, 0}, {0, -1}, {0, 1}}};
  for (Eigen::Index s = 0; s < n; ++s) {
    for (std::size_t k = 0; k < shifts.size(); ++k) {
      const Eigen::Index col = 5 * s + static_cast<Eigen::Index>(k);
      const int dy = shifts[k][0], dx = shifts[k][1];
      for (int c = 0; c < channels; ++c) {
        const Eigen::Index plane = Eigen::Index{c} * height * width;
        for (int y = 0; y < height; ++y) {
          const int sy = y - dy;
          if (sy < 0 || sy >= height) continue;
          for (int x = 0; x < width; ++x) {
            const int sx = x - dx;
            if (sx < 0 || sx >= width) continue;
            out.inputs(plane + Eigen::Index{y} * width + x, col) =
                data.inputs(plane + Eigen::Index{sy} * width + sx, s);
          }
        }
      }
      out.targets.col(col) = data.targets.col(s);
      if (data.labels.size() != 0) out.labels(col) = data.labels(s);
    }
  }
  return out;
}

/// \brief The majority vote of several classifiers: `outputs[k]` holds classifier k's
/// outputs (classes x N, e.g. `net.feedforward(X)`); each votes for the argmax of each
/// column, and the class with most votes wins. A tie goes to the tied class with the
/// largest summed output over the classifiers (then the smallest index).
/// \returns the N winning class indices
/// \throws ShapeError if `outputs` is empty or the matrices differ in shape
template <class Derived>
[[nodiscard]] Eigen::VectorXi majority_vote(const std::vector<Derived>& outputs) {
  if (outputs.empty()) throw ShapeError("majority_vote: no classifier outputs");
  const Eigen::Index classes = outputs[0].rows(), n = outputs[0].cols();
  for (std::size_t k = 1; k < outputs.size(); ++k) {
    if (outputs[k].rows() != classes || outputs[k].cols() != n) {
      throw ShapeError("majority_vote: output " + std::to_string(k) + " is " +
                       std::to_string(outputs[k].rows()) + " x " +
                       std::to_string(outputs[k].cols()) + ", output 0 is " +
                       std::to_string(classes) + " x " + std::to_string(n));
    }
  }
  if (classes == 0) throw ShapeError("majority_vote: the outputs have no classes (0 rows)");
  Eigen::VectorXi winners(n);
  Eigen::VectorXi votes(classes);
  Eigen::VectorXd sums(classes);
  for (Eigen::Index s = 0; s < n; ++s) {
    votes.setZero();
    sums.setZero();
    for (const auto& o : outputs) {
      Eigen::Index arg = 0;
      o.col(s).maxCoeff(&arg);
      ++votes(arg);
      sums += o.col(s).template cast<double>();
    }
    Eigen::Index best = 0;
    for (Eigen::Index c = 1; c < classes; ++c) {
      if (votes(c) > votes(best) || (votes(c) == votes(best) && sums(c) > sums(best))) best = c;
    }
    winners(s) = static_cast<int>(best);
  }
  return winners;
}

}  // namespace backprop
