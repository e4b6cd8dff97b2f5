/// \file
/// \brief `ProgressReporter`: a live progress bar on a terminal (samples/s, ETA,
/// running cost), one plain line per epoch otherwise.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <ostream>
#include <sstream>
#include <string>

#include "options.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace backprop {

/// \brief True when `out` is std::cout or std::cerr and that stream is a terminal.
inline bool is_terminal(const std::ostream& out) {
#if defined(__unix__) || defined(__APPLE__)
  if (&out == &std::cout) return ::isatty(STDOUT_FILENO) != 0;
  if (&out == &std::cerr) return ::isatty(STDERR_FILENO) != 0;
#else
  (void)out;
#endif
  return false;
}

/// \brief Reports training progress. Install it with `attach(options)`.
///
/// On a terminal it redraws one line per mini-batch (at most ~10 times a second):
/// `epoch 3/30 [=======>      ] 52%  26000/50000  81k samples/s  ETA 0.3s  cost 0.0412`,
/// then leaves the epoch's summary line. Elsewhere (a pipe, a log file) it
/// prints only the summary line per epoch.
class ProgressReporter {
 public:
  /// \brief Reports to `out`, live when `out` is a terminal (see `is_terminal`).
  explicit ProgressReporter(std::ostream& out = std::cout)
      : ProgressReporter(out, is_terminal(out)) {}
  /// \brief Reports to `out`, drawing the progress bar if `live`. `out` must outlive it.
  ProgressReporter(std::ostream& out, bool live) : m_out(&out), m_live(live) {}

  /// \brief Sets `options.on_batch` (live mode only) and `options.on_epoch`.
  /// The reporter must outlive the training call.
  void attach(SgdOptions& options) {
    if (m_live) options.on_batch = [this](const BatchProgress& p) { on_batch(p); };
    options.on_epoch = [this](const EpochReport& r) { on_epoch(r); };
  }

  /// \brief Redraws the progress bar (at most every 0.1 s, and at the epoch's last batch).
  void on_batch(const BatchProgress& p) {
    const bool last = p.samples_done == p.samples_total;
    if (!last && p.seconds - m_last_draw < 0.1 && p.seconds >= m_last_draw) return;
    m_last_draw = p.seconds;
    if (p.samples_done <= 0 || p.samples_total <= 0) return;
    const double frac = static_cast<double>(p.samples_done) / static_cast<double>(p.samples_total);
    const double rate = p.seconds > 0 ? static_cast<double>(p.samples_done) / p.seconds : 0.0;
    const double eta_s =
        rate > 0 ? static_cast<double>(p.samples_total - p.samples_done) / rate : 0.0;
    constexpr int width = 30;
    const int filled = static_cast<int>(frac * width);
    std::ostringstream line;
    line << "\repoch " << p.epoch << '/' << p.epochs << " [";
    for (int i = 0; i < width; ++i) line << (i < filled ? '=' : (i == filled ? '>' : ' '));
    line << "] " << std::setw(3) << static_cast<int>(frac * 100) << "%  " << p.samples_done << '/'
         << p.samples_total << "  " << format_rate(rate) << " samples/s  ETA " << std::fixed
         << std::setprecision(1) << eta_s << "s  cost " << std::setprecision(4) << p.running_cost
         << "   ";
    *m_out << line.str() << std::flush;
    m_drawn = true;
  }

  /// \brief Clears the progress bar, if drawn, and prints `summary(r)` on a line.
  void on_epoch(const EpochReport& r) {
    if (m_drawn) *m_out << "\r\033[K";  // clear the bar
    m_drawn = false;
    m_last_draw = -1.0;
    *m_out << summary(r) << '\n' << std::flush;
  }

  /// \brief The one-line summary of an epoch, e.g.
  /// "Epoch 1/30: 9129 / 10000 (91.29%)  train cost 0.0512  1.8 s".
  [[nodiscard]] static std::string summary(const EpochReport& r) {
    std::ostringstream s;
    s << "Epoch " << r.epoch << '/' << r.epochs;
    if (r.evaluation_correct >= 0) {
      s << ": " << r.evaluation_correct << " / " << r.evaluation_total << " (" << std::fixed
        << std::setprecision(2) << 100.0 * *r.evaluation_accuracy << "%)";
    } else if (const auto& m = r.evaluation_regression) {
      s << std::setprecision(4) << ": RMSE " << m->rmse << "  MAE " << m->mae << "  R^2 " << m->r2;
    } else {
      s << " complete";
    }
    s << std::defaultfloat << std::setprecision(4);
    if (r.training_cost) s << "  train cost " << *r.training_cost;
    if (r.training_accuracy) s << "  train acc " << 100.0 * *r.training_accuracy << '%';
    if (r.training_regression) s << "  train RMSE " << r.training_regression->rmse;
    if (r.evaluation_cost) s << "  eval cost " << *r.evaluation_cost;
    s << "  " << std::fixed << std::setprecision(2) << r.seconds << " s";
    return s.str();
  }

 private:
  static std::string format_rate(double r) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(1);
    if (r >= 1e6) {
      s << r / 1e6 << 'M';
    } else if (r >= 1e3) {
      s << r / 1e3 << 'k';
    } else {
      s << r;
    }
    return s.str();
  }

  std::ostream* m_out;
  bool m_live;
  bool m_drawn = false;
  double m_last_draw = -1.0;
};

}  // namespace backprop
