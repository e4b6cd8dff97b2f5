/// \file
/// \brief Options, per-epoch reports and training history for `BasicNetwork::sgd`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "../errors.hpp"
#include "../metrics/metrics.hpp"
#include "schedule.hpp"

namespace backprop {

namespace detail {

/// Writes `bytes` to `path` through a temporary file and a rename, so `path` is
/// either the old file or the complete new one.
inline void write_file_atomically(const std::filesystem::path& path, const std::string& bytes,
                                  const char* fn) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    if (!f) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      throw std::runtime_error(std::string(fn) + ": cannot write " + path.string());
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error(std::string(fn) + ": cannot rename onto " + path.string() + ": " +
                             ec.message());
  }
}

}  // namespace detail

/// \brief What `sgd` reports after each epoch. Optional fields are set only when
/// the corresponding monitor is on (or evaluation data was given).
struct EpochReport {
  int epoch = 0;         ///< 1-based
  int epochs = 0;        ///< total planned
  double seconds = 0.0;  ///< wall time of this epoch's training (not of evaluation)
  double eta = 0.0;      ///< learning rate used in this epoch
  /// Mean cost on the training data plus the regularisation terms (see
  /// `BasicNetwork::total_cost`), when `monitor_training_cost` is on.
  std::optional<double> training_cost;
  std::optional<double> training_accuracy;  ///< fraction in [0, 1]
  /// The same as `training_cost` on the evaluation data, when `monitor_evaluation_cost` is on.
  std::optional<double> evaluation_cost;
  /// Fraction of the labelled evaluation data classified correctly, in [0, 1].
  std::optional<double> evaluation_accuracy;
  long long evaluation_correct = -1;  ///< correct count, or -1 when not evaluated
  long long evaluation_total = 0;     ///< evaluation sample count, or 0 when not evaluated
  /// Regression (training data without labels, or a single-output network): MSE, RMSE,
  /// MAE and R^2 on the training data, when `monitor_training_accuracy` is on.
  std::optional<RegressionMetrics> training_regression;
  /// Regression: the metrics on the evaluation data (instead of the accuracy), when
  /// `monitor_evaluation_accuracy` is on.
  std::optional<RegressionMetrics> evaluation_regression;
};

/// \brief Progress inside an epoch, for live displays.
struct BatchProgress {
  int epoch = 0;                ///< 1-based
  int epochs = 0;               ///< total planned
  long long samples_done = 0;   ///< training samples processed so far in this epoch
  long long samples_total = 0;  ///< training samples in the epoch
  double running_cost = 0.0;    ///< mean cost of the mini-batches so far in this epoch
  double seconds = 0.0;         ///< since the start of the epoch
};

/// \brief The data `sgd` returns: one report per epoch, as network2 returns its
/// four monitoring lists.
struct TrainingHistory {
  std::vector<EpochReport> epochs;  ///< one report per epoch run, in order
  /// The epoch whose parameters `sgd` returned with early stopping on (else 0).
  int best_epoch = 0;
  /// True when early stopping or the halve_on_plateau schedule ended training
  /// before `SgdOptions::epochs`.
  bool stopped_early = false;

  /// \brief Writes the history as CSV (epoch, eta, seconds, costs and accuracies;
  /// empty fields where not monitored). Writes to a temporary file first and
  /// renames it, so `path` is never half-written.
  /// \throws std::runtime_error if the file cannot be written.
  void write_csv(const std::filesystem::path& path) const {
    std::ostringstream out;
    write_csv(out);
    detail::write_file_atomically(path, out.str(), "TrainingHistory::write_csv");
  }

  /// \brief Writes the CSV to a stream (the regression columns are empty for
  /// classification runs, the accuracy columns for regression runs).
  void write_csv(std::ostream& out) const {
    out << "epoch,eta,seconds,training_cost,training_accuracy,evaluation_cost,"
           "evaluation_accuracy,training_rmse,training_r2,evaluation_mse,evaluation_rmse,"
           "evaluation_mae,evaluation_r2\n";
    auto opt = [&out](const std::optional<double>& v) {
      if (v) out << *v;
    };
    out << std::setprecision(9);
    for (const auto& e : epochs) {
      out << e.epoch << ',' << e.eta << ',' << e.seconds << ',';
      opt(e.training_cost);
      out << ',';
      opt(e.training_accuracy);
      out << ',';
      opt(e.evaluation_cost);
      out << ',';
      opt(e.evaluation_accuracy);
      const auto& t = e.training_regression;
      const auto& v = e.evaluation_regression;
      for (const std::optional<double>& x :
           {t ? std::optional(t->rmse) : std::nullopt, t ? std::optional(t->r2) : std::nullopt,
            v ? std::optional(v->mse) : std::nullopt, v ? std::optional(v->rmse) : std::nullopt,
            v ? std::optional(v->mae) : std::nullopt, v ? std::optional(v->r2) : std::nullopt}) {
        out << ',';
        opt(x);
      }
      out << '\n';
    }
  }
};

/// \brief The seed's per-epoch line: "Epoch 1: 9129 / 10000" (or, for regression,
/// "Epoch 1: RMSE 0.52  MAE 0.41  R^2 0.73" on the evaluation data, or "Epoch 1
/// complete" without evaluation data), plus any monitored costs.
inline void print_epoch(const EpochReport& r, std::ostream& out = std::cout) {
  out << "Epoch " << r.epoch;
  if (r.evaluation_correct >= 0) {
    out << ": " << r.evaluation_correct << " / " << r.evaluation_total;
  } else if (const auto& m = r.evaluation_regression) {
    out << ": RMSE " << m->rmse << "  MAE " << m->mae << "  R^2 " << m->r2;
  } else {
    out << " complete";
  }
  if (r.training_cost) out << "  training cost " << *r.training_cost;
  if (r.training_accuracy) out << "  training accuracy " << *r.training_accuracy;
  if (r.training_regression) out << "  training RMSE " << r.training_regression->rmse;
  if (r.evaluation_cost) out << "  evaluation cost " << *r.evaluation_cost;
  out << "  (" << std::fixed << std::setprecision(2) << r.seconds << " s)" << std::defaultfloat
      << std::setprecision(6) << '\n';
}

/// \brief Options of `BasicNetwork::sgd`. An aggregate: use designated
/// initialisers, e.g. `{.epochs = 30, .mini_batch_size = 10, .eta = 3.0}`, naming
/// members in the order they are declared (new members are added at the end).
struct SgdOptions {
  int epochs = 30;                 ///< number of passes over the training data
  long long mini_batch_size = 10;  ///< m: samples per step (an epoch's last step may have fewer)
  double eta = 3.0;                ///< learning rate (eta in w -= eta/m * sum of gradients)
  /// L2 regularisation in network2's form: w <- (1 - eta lambda / n) w - eta/m grad.
  double lambda = 0.0;
  /// Shuffle the training data before each epoch (with the network's own Rng).
  bool shuffle = true;
  bool monitor_training_cost = false;  ///< set `EpochReport::training_cost`
  /// Set `EpochReport::training_accuracy` (or `training_regression` for regression data).
  bool monitor_training_accuracy = false;
  bool monitor_evaluation_cost = false;  ///< set `EpochReport::evaluation_cost`
  /// On by default whenever evaluation data is given.
  bool monitor_evaluation_accuracy = true;
  /// Called after every epoch; empty means `print_epoch` to std::cout, for every epoch
  /// of runs of up to 50 epochs; longer runs print 25 to 27 lines (the first epoch, every
  /// (epochs / 25)-th, and the last). Pass `backprop::quiet` to stay silent.
  std::function<void(const EpochReport&)> on_epoch{};
  /// Called after every mini-batch when set (live progress).
  std::function<void(const BatchProgress&)> on_batch{};
  /// What to do when a mini-batch step makes a parameter NaN or infinite (eta
  /// far too large, say): `restore_and_throw` (default) checks the parameters after
  /// every 16th mini-batch and after the last of each epoch; on a NaN or Inf it puts
  /// back the parameters from the start of that epoch and throws `DivergenceError`
  /// naming the epoch and the (at most 16) mini-batches since the last good check;
  /// `keep_going` does not check.
  enum class OnDivergence {
    restore_and_throw,
    keep_going
  } on_divergence = OnDivergence::restore_and_throw;  ///< see `OnDivergence`
  /// L1 regularisation (the book's chapter 3): w <- w - eta lambda1/n sign(w) - eta/m grad.
  double lambda1 = 0.0;
  /// 0 = off. Otherwise stop when the evaluation accuracy has not improved (strictly)
  /// for this many epochs, and return the parameters of the best epoch (also when all
  /// `epochs` ran). Needs labelled evaluation data.
  int early_stopping_patience = 0;
  /// How eta changes over the epochs (default constant); `EpochReport::eta` shows the
  /// eta used. halve_on_plateau needs labelled evaluation data.
  Schedule schedule{};
  /// The first layer skips zero inputs (same maths, the products only over the nonzero
  /// pixels) when at most this fraction of the training inputs is nonzero. 81% of
  /// MNIST's pixels are zero. 0 turns it off; > 1 is invalid.
  double sparse_input_density = 0.5;
};

/// \brief Whether `sgd`'s default report prints epoch `epoch` of `epochs` (see
/// `SgdOptions::on_epoch`).
[[nodiscard]] constexpr bool prints_epoch_by_default(int epoch, int epochs) noexcept {
  if (epochs <= 50 || epoch == 1 || epoch == epochs) return true;
  const int every = epochs / 25;
  return epoch % every == 0;
}

/// \brief An `on_epoch` callback that prints nothing.
inline void quiet(const EpochReport&) {}

}  // namespace backprop
