/// \file
/// \brief Loading a numeric CSV file (features and an integer class label per row).
#pragma once

#include <Eigen/Core>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "../data/dataset.hpp"
#include "../errors.hpp"

namespace backprop {

/// \brief Options of `load_csv`.
struct CsvOptions {
  /// Field separator; not a digit, sign, '.', quote or line break.
  char delimiter = ',';
  /// Skip the first non-blank line (column names).
  bool has_header = false;
  /// Column of the class label, 0-based; negative counts from the end (-1 = last).
  int label_column = -1;
  /// Number of classes for the one-hot targets; 0 means the largest label + 1.
  int classes = 0;
  /// Every feature is multiplied by this (e.g. 1.0 / 255 for pixels).
  double feature_scale = 1.0;
};

/// \brief Largest class count `load_csv` infers by itself (set `CsvOptions::classes` to go
/// beyond); guards against a stray huge label making a huge one-hot matrix.
inline constexpr int csv_max_inferred_classes = 65536;

namespace detail {

[[noreturn]] inline void throw_csv(const std::string& name, const std::string& problem) {
  throw DataError("load_csv: " + name + ": " + problem);
}

[[nodiscard]] inline std::string_view trim_blanks(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// \brief Parses a whole field as a double (a leading '+' is allowed).
[[nodiscard]] inline bool parse_csv_double(std::string_view s, double& out) noexcept {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && ptr == end;
}

}  // namespace detail

/// \brief Loads a numeric CSV file as a classification data set. Samples are columns.
///
/// Each non-blank line is one sample: numeric feature fields and one integer label field
/// (blanks around fields are ignored; "\r\n" line ends are accepted; quoted fields are
/// not supported). Labels may be written "3" or "3.0".
/// \tparam Scalar `float` or `double`.
/// \param path the file.
/// \param options delimiter, header, label column, class count, feature scale.
/// \returns inputs features x N (scaled by `feature_scale`), targets classes x N one-hot,
///   labels.
/// \throws ValueError for invalid options (delimiter, non-finite scale, negative classes).
/// \throws DataError naming the file, and the line and column where it applies, for a
///   missing or empty file, a row with a different number of fields than the first, a
///   non-numeric field, a NaN or infinite value (or one that does not fit in `Scalar`), a
///   label that is not a non-negative integer below `classes`, or a missing label column.
template <class Scalar = float>
[[nodiscard]] Dataset<Scalar> load_csv(const std::filesystem::path& path,
                                       const CsvOptions& options = {}) {
  static_assert(std::is_floating_point_v<Scalar>, "load_csv<Scalar>: Scalar must be floating");
  const char delim = options.delimiter;
  if (delim == '\n' || delim == '\r' || delim == '"' || delim == '.' || delim == '+' ||
      delim == '-' || (delim >= '0' && delim <= '9') || delim == '\0') {
    throw ValueError(std::string("load_csv: invalid delimiter '") + delim + "'");
  }
  if (!std::isfinite(options.feature_scale)) {
    throw ValueError("load_csv: feature_scale must be finite");
  }
  if (options.classes < 0) {
    throw ValueError("load_csv: classes must be >= 0, got " + std::to_string(options.classes));
  }
  const std::string name = path.string();
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (status.type() == std::filesystem::file_type::not_found) {
    detail::throw_csv(name, "file not found");
  }
  if (ec) detail::throw_csv(name, "cannot access the file: " + ec.message());
  if (!std::filesystem::is_regular_file(status)) detail::throw_csv(name, "is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::throw_csv(name, "cannot open the file for reading");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) detail::throw_csv(name, "read error");
  if (text.empty()) detail::throw_csv(name, "file is empty");

  std::vector<Scalar> values;  // row-major N x features = column-major features x N
  std::vector<int> labels;
  std::size_t columns = 0;
  std::size_t first_data_line = 0;
  std::size_t label_col = 0;
  bool header_pending = options.has_header;
  std::size_t line_no = 0;
  std::vector<std::string_view> fields;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (detail::trim_blanks(line).empty()) continue;
    if (header_pending) {
      header_pending = false;
      continue;
    }
    fields.clear();
    for (std::size_t start = 0;;) {
      const std::size_t d = line.find(delim, start);
      fields.push_back(line.substr(start, d == std::string_view::npos ? line.npos : d - start));
      if (d == std::string_view::npos) break;
      start = d + 1;
    }
    const auto at_line = [line_no] { return "line " + std::to_string(line_no); };
    if (columns == 0) {
      columns = fields.size();
      first_data_line = line_no;
      if (columns < 2) {
        detail::throw_csv(name, at_line() + " has " + std::to_string(columns) +
                                    " field; at least one feature and a label are needed");
      }
      const long long c = options.label_column < 0
                              ? static_cast<long long>(columns) + options.label_column
                              : options.label_column;
      if (c < 0 || c >= static_cast<long long>(columns)) {
        detail::throw_csv(name, "label column " + std::to_string(options.label_column) +
                                    " does not exist: " + at_line() + " has " +
                                    std::to_string(columns) + " fields");
      }
      label_col = static_cast<std::size_t>(c);
    } else if (fields.size() != columns) {
      detail::throw_csv(name, at_line() + " has " + std::to_string(fields.size()) +
                                  " fields, expected " + std::to_string(columns) + " (as on line " +
                                  std::to_string(first_data_line) + ")");
    }
    for (std::size_t j = 0; j < columns; ++j) {
      const std::string_view f = detail::trim_blanks(fields[j]);
      const auto where = [&] { return at_line() + ", column " + std::to_string(j + 1); };
      double v = 0.0;
      if (!detail::parse_csv_double(f, v)) {
        detail::throw_csv(name, where() + ": '" + std::string(f) + "' is not a number");
      }
      if (!std::isfinite(v)) {
        detail::throw_csv(name, where() + ": '" + std::string(f) + "' is not a finite number");
      }
      if (j == label_col) {
        if (v < 0 || v != std::floor(v)) {
          detail::throw_csv(
              name, where() + ": label '" + std::string(f) + "' is not a non-negative integer");
        }
        const int limit = options.classes > 0 ? options.classes : csv_max_inferred_classes;
        if (v >= limit) {
          detail::throw_csv(
              name, where() + ": label '" + std::string(f) + "' is not below " +
                        (options.classes > 0 ? "classes = " + std::to_string(options.classes)
                                             : "the inferred class limit " + std::to_string(limit) +
                                                   " (set CsvOptions::classes)"));
        }
        labels.push_back(static_cast<int>(v));
        continue;
      }
      const auto s = static_cast<Scalar>(v * options.feature_scale);
      if (!std::isfinite(s)) {
        detail::throw_csv(name, where() + ": '" + std::string(f) + "' scaled by " +
                                    std::to_string(options.feature_scale) +
                                    " does not fit in the scalar type");
      }
      values.push_back(s);
    }
  }
  if (labels.empty()) {
    detail::throw_csv(name, options.has_header ? "no data rows after the header"
                                               : "no data rows (only blank lines)");
  }

  const auto n = static_cast<Eigen::Index>(labels.size());
  const auto features = static_cast<Eigen::Index>(columns - 1);
  Dataset<Scalar> d;
  d.inputs = Eigen::Map<const typename Dataset<Scalar>::Matrix>(values.data(), features, n);
  d.labels = Eigen::Map<const Eigen::VectorXi>(labels.data(), n);
  int classes = options.classes;
  if (classes == 0) classes = d.labels.maxCoeff() + 1;
  d.targets = one_hot<Scalar>(d.labels, classes);
  return d;
}

}  // namespace backprop
