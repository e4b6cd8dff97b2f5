/// \file
/// \brief `Scaler<Scalar>`: per-feature standardisation or min-max scaling, fitted on the
/// training data, applied to every data set, saved next to the model.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <istream>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "../errors.hpp"
#include "../io/model.hpp"
#include "dataset.hpp"

namespace backprop {

/// \brief A per-row affine map x' = (x - offset) * factor + shift, fitted on training data.
///
/// Rows are features (samples are columns). `standard` makes every row of the data it is
/// fitted on mean 0 and (population) standard deviation 1; `min_max` maps every row's
/// [min, max] onto [lo, hi]. A constant row gets factor 1 (standard) or is mapped to lo
/// (min-max), so no division by zero. Fit on the training data only, then apply the same
/// scaler to the validation and test data and to every input at inference; `save` writes it
/// next to the model. `inverse` undoes it (e.g. for a network's regression outputs when the
/// scaler was fitted on the targets).
/// \tparam Scalar `float` or `double`.
template <class Scalar>
class Scaler {
 public:
  /// \brief A dynamic matrix of `Scalar` (features x N), as `transform` returns.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  /// \brief A per-row parameter vector (always `double`).
  using Vector = Eigen::Matrix<double, Eigen::Dynamic, 1>;
  /// \brief How the scaler was fitted: `standard` (mean 0, standard deviation 1) or
  /// `min_max` ([min, max] onto [lo, hi]).
  enum class Kind { standard, min_max };

  /// \brief The identity on zero rows; fit one with `standard` or `min_max`.
  Scaler() = default;

  /// \brief Fits mean 0 and standard deviation 1 per row of `X` (features x N, N >= 1).
  /// \throws ValueError if `X` has no columns or a non-finite value.
  template <class Derived>
  [[nodiscard]] static Scaler standard(const Eigen::MatrixBase<Derived>& X) {
    check_fit_data("Scaler::standard", X);
    Scaler s(Kind::standard, X.rows());
    const auto Xd = X.template cast<double>();
    s.m_offset = Xd.rowwise().mean();
    for (Eigen::Index r = 0; r < X.rows(); ++r) {
      const double sd = std::sqrt((Xd.row(r).array() - s.m_offset(r)).square().mean());
      s.m_factor(r) = sd > 0.0 && std::isfinite(1.0 / sd) ? 1.0 / sd : 1.0;
    }
    return s;
  }

  /// \brief Fits [min, max] of each row of `X` onto [lo, hi].
  /// \throws ValueError if `X` has no columns or a non-finite value, or lo >= hi.
  template <class Derived>
  [[nodiscard]] static Scaler min_max(const Eigen::MatrixBase<Derived>& X, double lo = 0.0,
                                      double hi = 1.0) {
    check_fit_data("Scaler::min_max", X);
    if (!(std::isfinite(lo) && std::isfinite(hi) && lo < hi)) {
      throw ValueError("Scaler::min_max: needs finite lo < hi, got [" + std::to_string(lo) + ", " +
                       std::to_string(hi) + "]");
    }
    Scaler s(Kind::min_max, X.rows());
    const auto Xd = X.template cast<double>();
    for (Eigen::Index r = 0; r < X.rows(); ++r) {
      const double mn = Xd.row(r).minCoeff(), mx = Xd.row(r).maxCoeff();
      const double f = mx > mn ? (hi - lo) / (mx - mn) : 0.0;
      s.m_offset(r) = mn;
      s.m_factor(r) = std::isfinite(f) ? f : 0.0;
      s.m_shift(r) = lo;
    }
    return s;
  }

  /// \brief How it was fitted (`standard` for a default-constructed scaler).
  [[nodiscard]] Kind kind() const noexcept { return m_kind; }
  /// \brief Number of rows (features) it was fitted on.
  [[nodiscard]] Eigen::Index size() const noexcept { return m_offset.size(); }
  /// \brief Per-row offset (the mean for `standard`).
  [[nodiscard]] const Vector& offset() const noexcept { return m_offset; }
  /// \brief Per-row factor (1 / standard deviation for `standard`).
  [[nodiscard]] const Vector& factor() const noexcept { return m_factor; }

  /// \brief (X - offset) * factor + shift, row by row.
  /// \throws ShapeError if `X` does not have `size()` rows.
  template <class Derived>
  [[nodiscard]] Matrix transform(const Eigen::MatrixBase<Derived>& X) const {
    check_rows("Scaler::transform", X.rows());
    Matrix out(X.rows(), X.cols());
    for (Eigen::Index r = 0; r < X.rows(); ++r) {
      out.row(r) =
          ((X.row(r).template cast<double>().array() - m_offset(r)) * m_factor(r) + m_shift(r))
              .template cast<Scalar>()
              .matrix();
    }
    return out;
  }

  /// \brief Undoes `transform` (a constant row comes back as its fitted value).
  /// \throws ShapeError if `Y` does not have `size()` rows.
  template <class Derived>
  [[nodiscard]] Matrix inverse(const Eigen::MatrixBase<Derived>& Y) const {
    check_rows("Scaler::inverse", Y.rows());
    Matrix out(Y.rows(), Y.cols());
    for (Eigen::Index r = 0; r < Y.rows(); ++r) {
      if (m_factor(r) == 0.0) {
        out.row(r).setConstant(static_cast<Scalar>(m_offset(r)));
      } else {
        out.row(r) =
            ((Y.row(r).template cast<double>().array() - m_shift(r)) / m_factor(r) + m_offset(r))
                .template cast<Scalar>()
                .matrix();
      }
    }
    return out;
  }

  /// \brief Scales the inputs of `data` in place.
  void apply(Dataset<Scalar>& data) const { data.inputs = transform(data.inputs); }

  /// \brief Saves the scaler as text (kind, rows, then offset, factor and shift per row with
  /// 17 significant digits), atomically like `BasicNetwork::save`.
  /// \throws std::runtime_error naming `path` if it cannot be written.
  void save(const std::filesystem::path& path) const {
    detail::save_to_path(path, [this](std::ostream& os) { save(os); });
  }
  /// \brief Writes the text form to `os`.
  void save(std::ostream& os) const {
    std::ostringstream s;
    s << std::setprecision(17) << "backprop-scaler 1\n"
      << (m_kind == Kind::standard ? "standard" : "min_max") << ' ' << size() << '\n';
    for (Eigen::Index r = 0; r < size(); ++r) {
      s << m_offset(r) << ' ' << m_factor(r) << ' ' << m_shift(r) << '\n';
    }
    os << s.str();
    if (!os) throw std::runtime_error("Scaler::save: write failed");
  }

  /// \brief Loads a scaler written by `save`.
  /// \throws ModelFormatError naming `path` and the problem (not a scaler file, unknown
  ///         version or kind, bad row count, a missing or non-finite number, trailing text).
  [[nodiscard]] static Scaler load(const std::filesystem::path& path) {
    return detail::load_from_path(path, [](std::istream& is) { return load(is); });
  }
  /// \brief Reads a scaler from the rest of `is`.
  [[nodiscard]] static Scaler load(std::istream& is) {
    const auto fail = [](const std::string& what) -> Scaler {
      throw ModelFormatError("Scaler::load: " + what);
    };
    std::string magic, kind;
    int version = 0;
    long long rows = -1;
    if (!(is >> magic >> version) || magic != "backprop-scaler") {
      return fail("not a backprop scaler file");
    }
    if (version != 1) return fail("unsupported version " + std::to_string(version));
    if (!(is >> kind) || (kind != "standard" && kind != "min_max")) {
      return fail("unknown kind '" + kind + "'");
    }
    if (!(is >> rows) || rows < 0 || rows > (1LL << 24)) return fail("bad row count");
    // Rows are read into growing vectors: a huge row count in a short file fails at its
    // end instead of allocating for the count first.
    std::vector<double> values;
    for (long long r = 0; r < rows; ++r) {
      double v[3];
      for (double& x : v) {
        std::string tok;
        if (!(is >> tok)) return fail("truncated at row " + std::to_string(r + 1));
        std::istringstream t(tok);
        t.imbue(std::locale::classic());
        if (!(t >> x) || !t.eof() || !std::isfinite(x)) {
          return fail("row " + std::to_string(r + 1) + ": '" + tok + "' is not a finite number");
        }
      }
      values.insert(values.end(), v, v + 3);
    }
    std::string extra;
    if (is >> extra) return fail("unexpected text after the last row");
    Scaler s(kind == "standard" ? Kind::standard : Kind::min_max, static_cast<Eigen::Index>(rows));
    for (Eigen::Index r = 0; r < s.size(); ++r) {
      const auto k = static_cast<std::size_t>(3 * r);
      s.m_offset(r) = values[k];
      s.m_factor(r) = values[k + 1];
      s.m_shift(r) = values[k + 2];
    }
    return s;
  }

  /// \brief True when kind, offsets, factors and shifts are all equal.
  friend bool operator==(const Scaler& a, const Scaler& b) {
    return a.m_kind == b.m_kind && a.m_offset == b.m_offset && a.m_factor == b.m_factor &&
           a.m_shift == b.m_shift;
  }

 private:
  Scaler(Kind kind, Eigen::Index rows)
      : m_kind(kind),
        m_offset(Vector::Zero(rows)),
        m_factor(Vector::Ones(rows)),
        m_shift(Vector::Zero(rows)) {}

  template <class Derived>
  static void check_fit_data(const char* fn, const Eigen::MatrixBase<Derived>& X) {
    if (X.cols() == 0) throw ValueError(std::string(fn) + ": no samples to fit on");
    if (!X.allFinite()) throw ValueError(std::string(fn) + ": the data contain NaN or Inf");
  }
  void check_rows(const char* fn, Eigen::Index rows) const {
    if (rows != size()) {
      throw ShapeError(std::string(fn) + ": input has " + std::to_string(rows) +
                       " rows, the scaler was fitted on " + std::to_string(size()));
    }
  }

  Kind m_kind = Kind::standard;
  Vector m_offset;
  Vector m_factor;
  Vector m_shift;  // lo for min-max, 0 for standard
};

/// \brief Writes class names (a data set's `class_names`: class c is `names[c]`) as text, so
/// that a program which loads the model can map its predictions back to the labels of the
/// CSV file: "backprop-class-names 1", the count, then each name as its byte length, a
/// space and its bytes (any bytes, line breaks included) on a line of its own.
/// \throws std::runtime_error if the stream fails.
inline void save_class_names(std::ostream& os, const std::vector<std::string>& names) {
  std::ostringstream s;
  s << "backprop-class-names 1\n" << names.size() << '\n';
  for (const auto& n : names) s << n.size() << ' ' << n << '\n';
  os << s.str();
  if (!os) throw std::runtime_error("save_class_names: write failed");
}

/// \brief Saves class names to `path`, atomically like `BasicNetwork::save`.
/// \throws std::runtime_error naming `path` if it cannot be written.
inline void save_class_names(const std::filesystem::path& path,
                             const std::vector<std::string>& names) {
  detail::save_to_path(path, [&names](std::ostream& os) { save_class_names(os, names); });
}

/// \brief Reads class names written by `save_class_names` from the rest of `is`.
/// \throws ModelFormatError naming the problem (not a class-names file, unknown version,
///         a bad count or length, a truncated name, trailing text).
[[nodiscard]] inline std::vector<std::string> load_class_names(std::istream& is) {
  const auto fail = [](const std::string& what) -> std::vector<std::string> {
    throw ModelFormatError("load_class_names: " + what);
  };
  std::string magic;
  int version = 0;
  long long count = -1;
  if (!(is >> magic >> version) || magic != "backprop-class-names") {
    return fail("not a backprop class-names file");
  }
  if (version != 1) return fail("unsupported version " + std::to_string(version));
  if (!(is >> count) || count < 0 || count > (1LL << 24)) return fail("bad class count");
  std::vector<std::string> names;
  for (long long c = 0; c < count; ++c) {
    long long length = -1;
    if (!(is >> length) || length < 0 || length > (1LL << 20) || is.get() != ' ') {
      return fail("bad length of name " + std::to_string(c));
    }
    std::string name(static_cast<std::size_t>(length), '\0');
    if (!is.read(name.data(), static_cast<std::streamsize>(length)) || is.get() != '\n') {
      return fail("name " + std::to_string(c) + " is truncated");
    }
    names.push_back(std::move(name));
  }
  std::string extra;
  if (is >> extra) return fail("unexpected text after the last name");
  return names;
}

/// \brief Loads class names saved by `save_class_names`.
/// \throws ModelFormatError naming `path` and the problem.
[[nodiscard]] inline std::vector<std::string> load_class_names(const std::filesystem::path& path) {
  return detail::load_from_path(path, [](std::istream& is) { return load_class_names(is); });
}

}  // namespace backprop
