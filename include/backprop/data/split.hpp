/// \file
/// \brief `split`: a seeded training / validation / test split of a data set, stratified
/// by class for labelled data.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../errors.hpp"
#include "../init/random.hpp"
#include "dataset.hpp"

namespace backprop {

/// \brief Options of `split`: the fractions of the samples that go to validation and
/// test (the rest is training), the seed, and whether to stratify.
struct SplitOptions {
  double validation = 0.0;  ///< fraction in [0, 1)
  double test = 0.2;        ///< fraction in [0, 1)
  std::uint64_t seed = 0;   ///< the same seed gives the same split on every platform
  /// Labelled data: split each class separately, so every part keeps the class
  /// proportions (ignored for data without labels).
  bool stratify = true;
};

/// \brief The three parts `split` returns (`validation` or `test` may be empty).
template <class Scalar>
struct Split {
  Dataset<Scalar> training;    ///< the rest of the samples
  Dataset<Scalar> validation;  ///< about a `SplitOptions::validation` fraction of the samples
  Dataset<Scalar> test;        ///< about a `SplitOptions::test` fraction of the samples
};

/// \brief Splits `data` at random into training, validation and test sets.
///
/// The samples (of each class, when stratified) are shuffled with `Rng(seed)`; the first
/// round(test * n) go to test, the next round(validation * n) to validation and the rest to
/// training, where n is the class's (or the data set's) size; each part keeps the original
/// order of its samples. Names (features, targets, classes) are kept in every part.
/// \throws ValueError if a fraction is outside [0, 1), they add up to 1 or more, or the
///         training part would be empty; ShapeError if `data` is inconsistent.
template <class Scalar>
[[nodiscard]] Split<Scalar> split(const Dataset<Scalar>& data, const SplitOptions& options = {}) {
  data.check_consistent("split");
  const double v = options.validation, t = options.test;
  if (!(v >= 0.0 && v < 1.0) || !(t >= 0.0 && t < 1.0) || !(v + t < 1.0)) {
    throw ValueError(
        "split: validation and test must be fractions in [0, 1) adding up to less "
        "than 1, got validation " +
        std::to_string(v) + " and test " + std::to_string(t));
  }
  const Eigen::Index n = data.size();
  std::vector<std::vector<Eigen::Index>> groups;
  if (options.stratify && data.has_labels()) {
    const int classes = n == 0 ? 0 : data.labels.maxCoeff() + 1;
    if (n != 0 && data.labels.minCoeff() < 0) {
      throw ValueError("split: labels must be >= 0 to stratify");
    }
    groups.resize(static_cast<std::size_t>(classes));
    for (Eigen::Index i = 0; i < n; ++i) {
      groups[static_cast<std::size_t>(data.labels(i))].push_back(i);
    }
  } else {
    groups.emplace_back();
    for (Eigen::Index i = 0; i < n; ++i) groups[0].push_back(i);
  }
  Rng rng(options.seed);
  std::vector<int> part(static_cast<std::size_t>(n), 0);  // 0 training, 1 validation, 2 test
  for (auto& g : groups) {
    rng.shuffle(g.begin(), g.end());
    const double size = static_cast<double>(g.size());
    const auto n_test = static_cast<std::size_t>(std::llround(t * size));
    const auto n_val =
        std::min(g.size() - n_test, static_cast<std::size_t>(std::llround(v * size)));
    for (std::size_t k = 0; k < n_test + n_val; ++k) {
      part[static_cast<std::size_t>(g[k])] = k < n_test ? 2 : 1;
    }
  }
  std::vector<Eigen::Index> index[3];
  for (Eigen::Index i = 0; i < n; ++i) index[part[static_cast<std::size_t>(i)]].push_back(i);
  if (index[0].empty()) {
    throw ValueError("split: the training part would be empty (" + std::to_string(n) +
                     " samples, validation " + std::to_string(v) + ", test " + std::to_string(t) +
                     ")");
  }
  return {data.select(index[0]), data.select(index[1]), data.select(index[2])};
}

}  // namespace backprop
