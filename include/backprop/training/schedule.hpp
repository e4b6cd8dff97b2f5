/// \file
/// \brief Learning-rate schedules for `SgdOptions::schedule`, and `LearningRate`,
/// the per-epoch state machine `sgd` drives (public so schedules can be tested and
/// reused without training).
#pragma once

#include <algorithm>
#include <cmath>
#include <numbers>
#include <optional>
#include <string>

#include "../errors.hpp"

namespace backprop {

/// \brief How eta changes from epoch to epoch; eta0 is `SgdOptions::eta`, t the
/// 0-based epoch. Build one with the named constructors, e.g.
/// `.schedule = Schedule::cosine()`.
struct Schedule {
  /// The schedules.
  enum class Kind {
    constant,          ///< eta_t = eta0
    halve_on_plateau,  ///< the book's: eta /= 2 after `patience` epochs without a new best
                       ///< evaluation accuracy; training stops once eta < eta0 * `stop_below`
    step,              ///< eta_t = eta0 gamma^floor(t / every)
    cosine             ///< eta_t = eta0/2 (1 + cos(pi t / T)), T = `period` or the epochs
  };
  Kind kind = Kind::constant;       ///< which schedule
  int patience = 10;                ///< halve_on_plateau
  double stop_below = 1.0 / 128.0;  ///< halve_on_plateau
  int every = 10;                   ///< step
  double gamma = 0.1;               ///< step
  int period = 0;                   ///< cosine; 0 means `SgdOptions::epochs`

  /// \brief eta0 in every epoch (the default).
  [[nodiscard]] static Schedule constant() { return {}; }
  /// \brief The book's "no-improvement-in-n" schedule (needs evaluation data).
  [[nodiscard]] static Schedule halve_on_plateau(int n = 10, double stop_factor = 1.0 / 128.0) {
    Schedule s;
    s.kind = Kind::halve_on_plateau;
    s.patience = n;
    s.stop_below = stop_factor;
    return s;
  }
  /// \brief eta multiplied by `factor` every `every_epochs` epochs.
  [[nodiscard]] static Schedule step(int every_epochs, double factor) {
    Schedule s;
    s.kind = Kind::step;
    s.every = every_epochs;
    s.gamma = factor;
    return s;
  }
  /// \brief Cosine annealing from eta0 towards 0 over `epochs` (0: `SgdOptions::epochs`).
  [[nodiscard]] static Schedule cosine(int epochs = 0) {
    Schedule s;
    s.kind = Kind::cosine;
    s.period = epochs;
    return s;
  }

  /// \throws ValueError naming the bad field.
  void validate(const char* fn) const {
    auto fail = [fn](const std::string& what) {
      throw ValueError(std::string(fn) + ": schedule: " + what);
    };
    if (kind == Kind::halve_on_plateau) {
      if (patience < 1) fail("patience must be >= 1, got " + std::to_string(patience));
      if (!(stop_below > 0.0 && stop_below < 1.0)) {
        fail("stop_below must be in (0, 1), got " + std::to_string(stop_below));
      }
    } else if (kind == Kind::step) {
      if (every < 1) fail("every must be >= 1, got " + std::to_string(every));
      if (!(gamma > 0.0 && gamma <= 1.0)) {
        fail("gamma must be in (0, 1], got " + std::to_string(gamma));
      }
    } else if (kind == Kind::cosine && period < 0) {
      fail("period must be >= 0, got " + std::to_string(period));
    }
  }
};

/// \brief The learning rate over one `sgd` run: `eta()` for the current epoch, then
/// `end_epoch(accuracy)` after it; `finished()` tells `sgd` to stop (halve_on_plateau).
class LearningRate {
 public:
  /// \brief Schedule `s` from `eta0` over a run of `epochs` epochs.
  LearningRate(const Schedule& s, double eta0, int epochs)
      : m_s(s), m_eta0(eta0), m_eta(eta0), m_epochs(epochs) {}

  /// \brief eta for the current epoch.
  [[nodiscard]] double eta() const noexcept { return m_eta; }
  /// \brief True once halve_on_plateau has brought eta below eta0 * stop_below.
  [[nodiscard]] bool finished() const noexcept { return m_finished; }

  /// \brief Advances to the next epoch. `accuracy` is this epoch's evaluation
  /// accuracy (needed by halve_on_plateau only).
  void end_epoch(std::optional<double> accuracy) {
    ++m_t;
    switch (m_s.kind) {
      case Schedule::Kind::constant:
        break;
      case Schedule::Kind::halve_on_plateau:
        if (accuracy && *accuracy > m_best) {
          m_best = *accuracy;
          m_since_best = 0;
        } else if (++m_since_best >= m_s.patience) {
          m_eta /= 2.0;
          m_since_best = 0;
          if (m_eta < m_eta0 * m_s.stop_below) m_finished = true;
        }
        break;
      case Schedule::Kind::step:
        m_eta = m_eta0 * std::pow(m_s.gamma, static_cast<double>(m_t / m_s.every));
        break;
      case Schedule::Kind::cosine: {
        const int period = m_s.period > 0 ? m_s.period : m_epochs;
        const double t = std::min(static_cast<double>(m_t), static_cast<double>(period) - 1.0);
        m_eta = 0.5 * m_eta0 * (1.0 + std::cos(std::numbers::pi * t / static_cast<double>(period)));
        break;
      }
    }
  }

 private:
  Schedule m_s;
  double m_eta0, m_eta;
  int m_epochs;
  int m_t = 0;
  int m_since_best = 0;
  double m_best = -1.0;  // best accuracy so far (accuracies are >= 0)
  bool m_finished = false;
};

}  // namespace backprop
