/// \file
/// \brief Evaluation metrics: a confusion matrix with per-class precision, recall and F1
/// for classification; MSE, RMSE, MAE and R^2 for regression. Samples are columns.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "../data/dataset.hpp"
#include "../errors.hpp"

namespace backprop {

/// \brief Counts of (true class, predicted class) pairs, and the metrics derived from them.
///
/// `counts()(t, p)` is the number of samples of true class t predicted as p. Precision of
/// class c is counts(c, c) over the samples predicted as c, recall counts(c, c) over the
/// samples of class c, F1 their harmonic mean; each is 0 where its denominator is 0 (as
/// scikit-learn's `zero_division=0`). Use it as `ConfusionMatrix`: it is a template only so
/// that a program compiles its members where it uses them (as plain inline functions, g++
/// compiled them, with Eigen's `long long` matrices, in every program including
/// backprop.hpp: 0.18 s).
template <class = void>
class BasicConfusionMatrix {
 public:
  /// \brief Square matrix of counts, rows: true class, columns: predicted class.
  using Counts = Eigen::Matrix<long long, Eigen::Dynamic, Eigen::Dynamic>;

  /// \brief Counts `predicted` against `labels` for `classes` classes.
  /// \throws ShapeError if the two differ in length; ValueError if a class is outside
  ///         [0, classes) or classes < 1.
  BasicConfusionMatrix(const Eigen::VectorXi& predicted, const Eigen::VectorXi& labels, int classes)
      : m_counts(Counts::Zero(classes > 0 ? classes : 0, classes > 0 ? classes : 0)) {
    if (classes < 1) throw ValueError("ConfusionMatrix: classes must be >= 1");
    if (predicted.size() != labels.size()) {
      throw ShapeError("ConfusionMatrix: " + std::to_string(predicted.size()) +
                       " predictions but " + std::to_string(labels.size()) + " labels");
    }
    for (Eigen::Index i = 0; i < labels.size(); ++i) {
      const int t = labels(i), p = predicted(i);
      if (t < 0 || t >= classes || p < 0 || p >= classes) {
        throw ValueError("ConfusionMatrix: sample " + std::to_string(i) + " has label " +
                         std::to_string(t) + " and prediction " + std::to_string(p) +
                         ", outside [0, " + std::to_string(classes) + ")");
      }
      ++m_counts(t, p);
    }
  }

  /// \brief Number of classes.
  [[nodiscard]] int classes() const noexcept { return static_cast<int>(m_counts.rows()); }
  /// \brief The counts: `counts()(t, p)` samples of true class t were predicted as p.
  [[nodiscard]] const Counts& counts() const noexcept { return m_counts; }
  /// \brief Number of samples counted.
  [[nodiscard]] long long total() const noexcept { return m_counts.sum(); }
  /// \brief Number of samples predicted correctly (the diagonal's sum).
  [[nodiscard]] long long correct() const noexcept { return m_counts.diagonal().sum(); }
  /// \brief Fraction correct (0 for no samples).
  [[nodiscard]] double accuracy() const noexcept { return ratio(correct(), total()); }
  /// \brief Number of samples whose true class is `c`.
  [[nodiscard]] long long support(int c) const { return m_counts.row(check(c)).sum(); }
  /// \brief Precision of class `c`: counts(c, c) / samples predicted as c (0 if none).
  /// \throws ValueError if `c` is outside [0, classes()).
  [[nodiscard]] double precision(int c) const {
    return ratio(m_counts(check(c), c), m_counts.col(c).sum());
  }
  /// \brief Recall of class `c`: counts(c, c) / support(c) (0 if no support).
  /// \throws ValueError if `c` is outside [0, classes()).
  [[nodiscard]] double recall(int c) const { return ratio(m_counts(check(c), c), support(c)); }
  /// \brief F1 of class `c`: 2 p r / (p + r) of its precision and recall (0 if both are 0).
  /// \throws ValueError if `c` is outside [0, classes()).
  [[nodiscard]] double f1(int c) const {
    const double p = precision(c), r = recall(c);
    return p + r > 0.0 ? 2.0 * p * r / (p + r) : 0.0;
  }
  /// \brief Unweighted mean of the per-class F1 scores.
  [[nodiscard]] double macro_f1() const {
    double s = 0.0;
    for (int c = 0; c < classes(); ++c) s += f1(c);
    return s / classes();
  }
  /// \brief Mean of the per-class F1 scores weighted by support.
  [[nodiscard]] double weighted_f1() const {
    double s = 0.0;
    for (int c = 0; c < classes(); ++c) s += f1(c) * static_cast<double>(support(c));
    return ratio(s, total());
  }

  /// \brief A table like scikit-learn's `classification_report` (precision, recall, F1 and
  /// support per class, then accuracy and the macro and weighted averages), followed by the
  /// matrix itself (rows: true class, columns: predicted). `names` label the classes (their
  /// indices when empty or of another length).
  [[nodiscard]] std::string report(const std::vector<std::string>& names = {}) const {
    const auto name = [&](int c) {
      return names.size() == static_cast<std::size_t>(classes())
                 ? names[static_cast<std::size_t>(c)]
                 : std::to_string(c);
    };
    std::size_t w = 12;
    for (int c = 0; c < classes(); ++c) w = std::max(w, name(c).size() + 2);
    std::ostringstream s;
    s << std::fixed << std::setprecision(4);
    s << std::setw(static_cast<int>(w)) << ""
      << "  precision     recall         f1    support\n";
    for (int c = 0; c < classes(); ++c) {
      s << std::setw(static_cast<int>(w)) << name(c) << std::setw(11) << precision(c)
        << std::setw(11) << recall(c) << std::setw(11) << f1(c) << std::setw(11) << support(c)
        << '\n';
    }
    double mp = 0.0, mr = 0.0, wp = 0.0, wr = 0.0;
    for (int c = 0; c < classes(); ++c) {
      mp += precision(c);
      mr += recall(c);
      wp += precision(c) * static_cast<double>(support(c));
      wr += recall(c) * static_cast<double>(support(c));
    }
    s << '\n'
      << std::setw(static_cast<int>(w)) << "accuracy" << std::setw(33) << accuracy()
      << std::setw(11) << total() << '\n';
    s << std::setw(static_cast<int>(w)) << "macro avg" << std::setw(11) << mp / classes()
      << std::setw(11) << mr / classes() << std::setw(11) << macro_f1() << std::setw(11) << total()
      << '\n';
    s << std::setw(static_cast<int>(w)) << "weighted avg" << std::setw(11) << ratio(wp, total())
      << std::setw(11) << ratio(wr, total()) << std::setw(11) << weighted_f1() << std::setw(11)
      << total() << "\n\nconfusion matrix (rows: true class, columns: predicted)\n";
    for (int t = 0; t < classes(); ++t) {
      s << std::setw(static_cast<int>(w)) << name(t);
      for (int p = 0; p < classes(); ++p) s << std::setw(8) << m_counts(t, p);
      s << '\n';
    }
    return s.str();
  }

  /// \brief Writes `m.report()` (classes named by their indices).
  friend std::ostream& operator<<(std::ostream& os, const BasicConfusionMatrix& m) {
    return os << m.report();
  }

 private:
  static double ratio(double a, double b) noexcept { return b > 0 ? a / b : 0.0; }
  int check(int c) const {
    if (c < 0 || c >= classes()) {
      throw ValueError("ConfusionMatrix: class " + std::to_string(c) + " is outside [0, " +
                       std::to_string(classes()) + ")");
    }
    return c;
  }

  Counts m_counts;
};

/// \brief The confusion matrix of predicted against true classes (see `BasicConfusionMatrix`).
using ConfusionMatrix = BasicConfusionMatrix<>;

/// \brief Regression metrics, over every output and sample: mean squared error, its root,
/// mean absolute error, and R^2 = 1 - SS_res / SS_tot averaged over the outputs
/// (scikit-learn's `r2_score` with `multioutput="uniform_average"`; an output whose targets
/// are constant scores 1 if predicted exactly, else 0).
struct RegressionMetrics {
  double mse = 0.0;       ///< mean squared error over every output and sample
  double rmse = 0.0;      ///< square root of `mse`
  double mae = 0.0;       ///< mean absolute error over every output and sample
  double r2 = 0.0;        ///< R^2, averaged over the outputs
  long long samples = 0;  ///< number of samples (columns)
};

/// \brief The regression metrics of `predictions` against `targets` (outputs x N each).
/// \throws ShapeError if the shapes differ; ValueError if there are no samples.
template <class DP, class DT>
[[nodiscard]] RegressionMetrics regression_metrics(const Eigen::MatrixBase<DP>& predictions,
                                                   const Eigen::MatrixBase<DT>& targets) {
  if (predictions.rows() != targets.rows() || predictions.cols() != targets.cols()) {
    throw ShapeError("regression_metrics: predictions are " + std::to_string(predictions.rows()) +
                     " x " + std::to_string(predictions.cols()) + " but targets are " +
                     std::to_string(targets.rows()) + " x " + std::to_string(targets.cols()));
  }
  if (targets.cols() == 0 || targets.rows() == 0) {
    throw ValueError("regression_metrics: no samples");
  }
  const Eigen::MatrixXd p = predictions.template cast<double>();
  const Eigen::MatrixXd t = targets.template cast<double>();
  const Eigen::MatrixXd e = p - t;
  RegressionMetrics m;
  m.samples = targets.cols();
  const auto count = static_cast<double>(e.size());
  m.mse = e.squaredNorm() / count;
  m.rmse = std::sqrt(m.mse);
  m.mae = e.cwiseAbs().sum() / count;
  double r2 = 0.0;
  for (Eigen::Index r = 0; r < t.rows(); ++r) {
    const double ss_res = e.row(r).squaredNorm();
    const double ss_tot = (t.row(r).array() - t.row(r).mean()).square().sum();
    r2 += ss_tot > 0.0 ? 1.0 - ss_res / ss_tot : (ss_res == 0.0 ? 1.0 : 0.0);
  }
  m.r2 = r2 / static_cast<double>(t.rows());
  return m;
}

/// \brief Writes the metrics on one line: "MSE ...  RMSE ...  MAE ...  R^2 ...".
inline std::ostream& operator<<(std::ostream& os, const RegressionMetrics& m) {
  return os << "MSE " << m.mse << "  RMSE " << m.rmse << "  MAE " << m.mae << "  R^2 " << m.r2;
}

/// \brief The regression metrics of `net`'s outputs on `data` against its targets
/// (`net.feedforward`, 1024 samples at a time).
/// \throws ShapeError if the data do not fit the network; ValueError if `data` is empty.
template <class Net, class Scalar>
[[nodiscard]] RegressionMetrics regression_metrics(const Net& net, const Dataset<Scalar>& data) {
  if (data.targets.rows() != Net::outputs || data.targets.cols() != data.size()) {
    throw ShapeError("regression_metrics: the network has " + std::to_string(Net::outputs) +
                     " outputs but the targets are " + std::to_string(data.targets.rows()) + " x " +
                     std::to_string(data.targets.cols()) + " for " + std::to_string(data.size()) +
                     " samples");
  }
  typename Net::Matrix predicted(Net::outputs, data.size());
  constexpr Eigen::Index chunk = 1024;
  for (Eigen::Index first = 0; first < data.size(); first += chunk) {
    const Eigen::Index c = std::min(chunk, data.size() - first);
    predicted.middleCols(first, c) = net.feedforward(data.inputs.middleCols(first, c));
  }
  return regression_metrics(predicted, data.targets);
}

/// \brief The confusion matrix of `net.predict` on `data` against its labels, over
/// `Net::outputs` classes.
/// \throws ValueError if `data` has no labels, a label is outside the network's outputs,
///         or the network has a single output; ShapeError if the inputs do not fit.
template <class Net, class Scalar>
[[nodiscard]] ConfusionMatrix confusion_matrix(const Net& net, const Dataset<Scalar>& data) {
  if (!data.has_labels()) {
    throw ValueError("confusion_matrix: the data set has no labels (" +
                     std::to_string(data.labels.size()) + " labels for " +
                     std::to_string(data.size()) + " samples)");
  }
  return ConfusionMatrix(net.predict(data.inputs), data.labels, Net::outputs);
}

}  // namespace backprop
