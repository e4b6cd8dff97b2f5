/// \file
/// \brief Loading a CSV file as a classification data set (features and a class label per
/// row, numeric or text) or a regression data set (features and real-valued targets).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "../data/dataset.hpp"
#include "../detail/inflate.hpp"
#include "../errors.hpp"

namespace backprop {

/// \brief What `load_csv` does with a missing value: an empty field, or a field equal to one
/// of `CsvOptions::missing_markers`.
enum class MissingValues {
  error,     ///< throw a DataError naming the line and the column (the default)
  skip_row,  ///< leave the whole row out
  fill,      ///< use `CsvOptions::fill_value` for a missing feature (never for a label or target)
};

/// \brief Options of `load_csv`. An aggregate: designated initialisers name members in the
/// order they are declared, e.g. `{.has_header = true, .target_names = {"price"}}`.
///
/// Classification (the default): one label column, numeric ("3", "3.0") or text ("setosa");
/// targets are one-hot. Regression: set `target_columns`, `target_names` or `targets_path`;
/// targets are the real values of those columns and `labels` stays empty.
struct CsvOptions {
  /// Field separator; not a digit, sign, '.', quote or line break. A space separates fields
  /// by runs of blanks (spaces and tabs), as in whitespace-aligned files.
  char delimiter = ',';
  /// The first non-blank line holds column names (used by the `*_names` options and kept in
  /// the data set's `feature_names` and `target_names` when it has one name per column).
  bool has_header = false;
  /// Column of the class label, 0-based; negative counts from the end (-1 = last).
  int label_column = -1;
  /// Number of classes for the one-hot targets; 0 means the largest label + 1 (numeric
  /// labels) or the number of class names (text labels).
  int classes = 0;
  /// Every feature is multiplied by this (e.g. 1.0 / 255 for pixels).
  double feature_scale = 1.0;
  /// The label column by its name in the header (needs `has_header`); overrides `label_column`.
  std::string label_name{};
  /// Text labels: these names are classes 0, 1, ... in this order, and every label must be one
  /// of them. Empty: when a label is not a number, the classes are the distinct labels of the
  /// file in sorted order. Pass the training file's `class_names` when loading its test file.
  std::vector<std::string> class_names{};
  /// Regression targets: these columns (0-based, negative from the end), in this order.
  std::vector<int> target_columns{};
  /// Regression targets by header name (needs `has_header`), after `target_columns`.
  std::vector<std::string> target_names{};
  /// Regression targets in a separate file: every column of it, row i for sample i. The
  /// file is read with these options' delimiter, header and missing-value settings.
  std::filesystem::path targets_path{};
  /// Columns that are neither features nor targets (an id, a date), by index (0-based,
  /// negative from the end).
  std::vector<int> ignore_columns{};
  /// Such columns by header name (needs `has_header`).
  std::vector<std::string> ignore_names{};
  /// What a missing value does (see `MissingValues`).
  MissingValues missing = MissingValues::error;
  /// The feature value used for a missing one with `MissingValues::fill` (before scaling).
  double fill_value = 0.0;
  /// Fields that mean "missing" besides the empty field (compared after trimming blanks,
  /// case-sensitively; a quoted field is never missing unless empty).
  std::vector<std::string> missing_markers{"NA", "N/A", "?"};
  /// Largest file accepted, in bytes (also caps decompression of a gzip file).
  std::size_t max_bytes = std::size_t{1} << 31;
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

/// One field of a row: its text (quotes removed, blanks trimmed) and whether it was quoted.
struct CsvField {
  std::string_view text;
  bool quoted = false;
};

/// Splits CSV text into rows of fields (RFC 4180 quoting: a field that starts with '"' runs to
/// the closing quote, "" inside it is one quote, and it may hold delimiters and line breaks).
/// Blank lines are skipped. Fields view `text` or, for quoted fields with "", `m_unescaped`.
template <class = void>
class BasicCsvRows {
 public:
  BasicCsvRows(std::string_view text, char delimiter, const std::string& name)
      : m_text(text), m_delim(delimiter), m_name(name) {}

  /// The next non-blank row into `fields`; false at the end. `line()` is its first line.
  bool next(std::vector<CsvField>& fields) {
    fields.clear();
    m_unescaped.clear();
    for (;;) {
      if (m_pos >= m_text.size()) return false;
      m_row_line = ++m_line;
      const std::size_t eol = m_text.find('\n', m_pos);
      const std::string_view rest =
          m_text.substr(m_pos, eol == std::string_view::npos ? m_text.npos : eol - m_pos);
      if (!trim_blanks(rest).empty() && trim_blanks(rest) != "\r") break;
      m_pos = eol == std::string_view::npos ? m_text.size() : eol + 1;
    }
    for (;;) {
      fields.push_back(read_field());
      if (m_pos >= m_text.size() || m_text[m_pos] == '\n') {
        ++m_pos;
        return true;
      }
      ++m_pos;  // the delimiter
      if (m_delim == ' ') {
        skip_blanks();
        if (m_pos >= m_text.size() || m_text[m_pos] == '\n' || at_cr_eol()) {
          if (at_cr_eol()) ++m_pos;
          ++m_pos;
          return true;
        }
      }
    }
  }

  [[nodiscard]] std::size_t line() const noexcept { return m_row_line; }

 private:
  bool is_blank(char c) const noexcept { return c == ' ' || (c == '\t' && m_delim != '\t'); }
  void skip_blanks() noexcept {
    while (m_pos < m_text.size() && is_blank(m_text[m_pos])) ++m_pos;
  }
  bool at_cr_eol() const noexcept {
    return m_pos < m_text.size() && m_text[m_pos] == '\r' &&
           (m_pos + 1 == m_text.size() || m_text[m_pos + 1] == '\n');
  }
  bool at_field_end() const noexcept {
    if (m_pos >= m_text.size()) return true;
    const char c = m_text[m_pos];
    return c == m_delim || c == '\n' || (m_delim == ' ' && c == '\t') || at_cr_eol();
  }

  CsvField read_field() {
    skip_blanks();
    if (m_pos < m_text.size() && m_text[m_pos] == '"') return read_quoted();
    const std::size_t start = m_pos;
    while (!at_field_end()) ++m_pos;
    std::string_view f = m_text.substr(start, m_pos - start);
    if (m_pos < m_text.size() && at_cr_eol()) ++m_pos;  // '\r' before '\n' or the end
    if (f.find('"') != std::string_view::npos) {
      throw_csv(m_name, "line " + std::to_string(m_line) +
                            ": a quote inside an unquoted field (quote the whole field, and "
                            "double the quotes inside it)");
    }
    return {trim_blanks(f), false};
  }

  CsvField read_quoted() {
    const std::size_t open_line = m_line;
    ++m_pos;  // the opening quote
    const std::size_t start = m_pos;
    bool escaped = false;
    for (;;) {
      const std::size_t q = m_text.find('"', m_pos);
      if (q == std::string_view::npos) {
        throw_csv(m_name, "line " + std::to_string(open_line) + ": a quoted field is not closed");
      }
      m_line += static_cast<std::size_t>(
          std::count(m_text.begin() + static_cast<std::ptrdiff_t>(m_pos),
                     m_text.begin() + static_cast<std::ptrdiff_t>(q), '\n'));
      m_pos = q + 1;
      if (m_pos < m_text.size() && m_text[m_pos] == '"') {
        escaped = true;
        ++m_pos;
        continue;
      }
      break;
    }
    std::string_view f = m_text.substr(start, m_pos - 1 - start);
    if (escaped) {
      std::string& s = m_unescaped.emplace_back();
      for (std::size_t i = 0; i < f.size(); ++i) {
        s.push_back(f[i]);
        if (f[i] == '"') ++i;  // "" -> "
      }
      f = s;
    }
    skip_blanks();
    if (m_pos < m_text.size() && at_cr_eol()) ++m_pos;
    if (!(m_pos >= m_text.size() || m_text[m_pos] == m_delim || m_text[m_pos] == '\n' ||
          (m_delim == ' ' && m_text[m_pos] == '\t'))) {
      throw_csv(m_name, "line " + std::to_string(m_line) +
                            ": text after the closing quote of a quoted field");
    }
    return {f, true};
  }

  std::string_view m_text;
  char m_delim;
  const std::string& m_name;
  std::size_t m_pos = 0;
  std::size_t m_line = 0;
  std::size_t m_row_line = 0;
  std::deque<std::string> m_unescaped;  // stable addresses for the row's unescaped fields
};

/// The rows (a template only so that its members are compiled where a program reads CSV, not in
/// every program including the umbrella header).
using CsvRows = BasicCsvRows<>;

/// The whole file as text: checked, size-capped, gunzipped when it starts with gzip's magic.
template <class = void>
[[nodiscard]] std::string read_csv_text(const std::filesystem::path& path, const std::string& name,
                                        std::size_t max_bytes) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (status.type() == std::filesystem::file_type::not_found) throw_csv(name, "file not found");
  if (ec) throw_csv(name, "cannot access the file: " + ec.message());
  if (!std::filesystem::is_regular_file(status)) throw_csv(name, "is not a regular file");
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > max_bytes) {
    throw_csv(name, "file has " + std::to_string(size) +
                        " bytes, more than max_bytes = " + std::to_string(max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_csv(name, "cannot open the file for reading");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw_csv(name, "read error");
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  if (is_gzip(bytes, text.size())) {
    try {
      const std::vector<unsigned char> raw = gunzip(bytes, text.size(), max_bytes);
      text.assign(raw.begin(), raw.end());
    } catch (const InflateError& e) {
      throw_csv(name, std::string("corrupt gzip data: ") + e.what());
    }
  }
  if (text.empty()) throw_csv(name, "file is empty");
  return text;
}

/// A column given by index (negative from the end) or by header name, as an index.
template <class = void>
[[nodiscard]] std::size_t csv_column(long long index, std::size_t columns, const std::string& name,
                                     const char* what, std::size_t line) {
  const long long c = index < 0 ? static_cast<long long>(columns) + index : index;
  if (c < 0 || c >= static_cast<long long>(columns)) {
    throw_csv(name, std::string(what) + " " + std::to_string(index) + " does not exist: line " +
                        std::to_string(line) + " has " + std::to_string(columns) + " fields");
  }
  return static_cast<std::size_t>(c);
}

template <class = void>
[[nodiscard]] std::size_t csv_named_column(const std::vector<std::string>& header,
                                           std::size_t columns, const std::string& column,
                                           const std::string& name, const char* what) {
  if (header.empty()) throw_csv(name, std::string(what) + " '" + column + "' needs has_header");
  if (header.size() != columns) {
    throw_csv(name, "the header has " + std::to_string(header.size()) +
                        " names but the rows have " + std::to_string(columns) +
                        " fields, so columns cannot be found by name");
  }
  const auto it = std::find(header.begin(), header.end(), column);
  if (it == header.end()) {
    std::string known;
    for (const auto& h : header) known += (known.empty() ? "'" : ", '") + h + "'";
    throw_csv(name, std::string(what) + " '" + column + "' is not in the header (" + known + ")");
  }
  return static_cast<std::size_t>(it - header.begin());
}

[[nodiscard]] inline bool csv_missing(const CsvField& f, const CsvOptions& o) {
  if (f.text.empty()) return true;
  return !f.quoted && std::find(o.missing_markers.begin(), o.missing_markers.end(), f.text) !=
                          o.missing_markers.end();
}

/// A field's number, or an error naming where it is.
template <class = void>
[[nodiscard]] double csv_number(const CsvField& f, const std::string& name,
                                const std::string& where) {
  double v = 0.0;
  if (!parse_csv_double(f.text, v)) {
    throw_csv(name, where + ": '" + std::string(f.text) + "' is not a number");
  }
  if (!std::isfinite(v)) {
    throw_csv(name, where + ": '" + std::string(f.text) + "' is not a finite number");
  }
  return v;
}

/// The rows of a separate targets file: every column a target; NaN marks a missing value.
struct CsvTargetsFile {
  std::vector<std::vector<double>> rows;
  std::vector<std::string> names;
  std::string file;
};

template <class = void>
[[nodiscard]] CsvTargetsFile read_csv_targets(const CsvOptions& o) {
  CsvTargetsFile t;
  t.file = o.targets_path.string();
  const std::string text = read_csv_text(o.targets_path, t.file, o.max_bytes);
  CsvRows rows(text, o.delimiter, t.file);
  std::vector<CsvField> fields;
  bool header_pending = o.has_header;
  while (rows.next(fields)) {
    if (header_pending) {
      header_pending = false;
      for (const auto& f : fields) t.names.emplace_back(f.text);
      continue;
    }
    if (!t.rows.empty() && fields.size() != t.rows.front().size()) {
      throw_csv(t.file, "line " + std::to_string(rows.line()) + " has " +
                            std::to_string(fields.size()) + " fields, expected " +
                            std::to_string(t.rows.front().size()));
    }
    auto& r = t.rows.emplace_back();
    for (std::size_t j = 0; j < fields.size(); ++j) {
      if (csv_missing(fields[j], o)) {
        if (o.missing == MissingValues::error || o.missing == MissingValues::fill) {
          throw_csv(t.file, "line " + std::to_string(rows.line()) + ", column " +
                                std::to_string(j + 1) + ": missing target" +
                                (o.missing == MissingValues::fill
                                     ? " (fill applies to features only; use skip_row)"
                                     : ""));
        }
        r.push_back(std::numeric_limits<double>::quiet_NaN());
        continue;
      }
      r.push_back(
          csv_number(fields[j], t.file,
                     "line " + std::to_string(rows.line()) + ", column " + std::to_string(j + 1)));
    }
  }
  if (t.rows.empty()) throw_csv(t.file, "no data rows");
  if (t.names.size() != t.rows.front().size()) t.names.clear();
  return t;
}

/// Turns the label texts into class indices (numeric labels, or text labels mapped through
/// `class_names`, given or the sorted distinct labels). Returns the class count.
template <class = void>
int csv_resolve_labels(const std::vector<std::string>& texts, const std::vector<std::size_t>& lines,
                       std::size_t column, const CsvOptions& o, const std::string& name,
                       std::vector<int>& labels, std::vector<std::string>& class_names) {
  const auto where = [&](std::size_t i) {
    return "line " + std::to_string(lines[i]) + ", column " + std::to_string(column + 1);
  };
  bool numeric = o.class_names.empty();
  for (std::size_t i = 0; numeric && i < texts.size(); ++i) {
    double v = 0.0;
    numeric = parse_csv_double(texts[i], v) && std::isfinite(v);
  }
  labels.resize(texts.size());
  if (numeric) {
    const int limit = o.classes > 0 ? o.classes : csv_max_inferred_classes;
    int largest = 0;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      double v = 0.0;
      (void)parse_csv_double(texts[i], v);
      if (v < 0 || v != std::floor(v)) {
        throw_csv(name, where(i) + ": label '" + texts[i] +
                            "' is not a non-negative integer (for real-valued targets set "
                            "CsvOptions::target_columns)");
      }
      if (v >= limit) {
        throw_csv(name, where(i) + ": label '" + texts[i] + "' is not below " +
                            (o.classes > 0 ? "classes = " + std::to_string(o.classes)
                                           : "the inferred class limit " + std::to_string(limit) +
                                                 " (set CsvOptions::classes)"));
      }
      labels[i] = static_cast<int>(v);
      largest = std::max(largest, labels[i]);
    }
    return o.classes > 0 ? o.classes : largest + 1;
  }
  class_names = o.class_names;
  if (class_names.empty()) {
    class_names = texts;
    std::sort(class_names.begin(), class_names.end());
    class_names.erase(std::unique(class_names.begin(), class_names.end()), class_names.end());
    if (class_names.size() > static_cast<std::size_t>(csv_max_inferred_classes)) {
      throw_csv(name, "the label column has " + std::to_string(class_names.size()) +
                          " distinct labels, more than " +
                          std::to_string(csv_max_inferred_classes));
    }
  }
  const int n = static_cast<int>(class_names.size());
  if (o.classes != 0 && o.classes < n) {
    throw_csv(name, "classes = " + std::to_string(o.classes) + " but there are " +
                        std::to_string(n) + " class names");
  }
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto it = std::find(class_names.begin(), class_names.end(), texts[i]);
    if (it == class_names.end()) {
      throw_csv(name, where(i) + ": label '" + texts[i] + "' is not one of the " +
                          std::to_string(class_names.size()) + " class_names");
    }
    labels[i] = static_cast<int>(it - class_names.begin());
  }
  return std::max(o.classes, n);
}

}  // namespace detail

/// \brief Loads a CSV file as a classification or regression data set. Samples are columns.
///
/// Each non-blank line is one sample (a quoted field may span lines). Fields are numbers,
/// with blanks around them ignored and "\r\n" line ends accepted; fields may be quoted as in
/// RFC 4180 ("a ""quoted"" field"). A file starting with gzip's magic bytes is decompressed.
/// - Classification (default): one label column (`label_column` or `label_name`). Labels
///   written as non-negative integers ("3", "3.0") are the class indices; otherwise they are
///   names, mapped to classes through `class_names` (given, or the sorted distinct labels),
///   and the mapping is kept in the data set's `class_names`. Targets are one-hot.
/// - Regression (`target_columns`, `target_names` or `targets_path` set): the targets are the
///   real values of those columns (targets x N); `labels` is empty.
///
/// Every other column is a feature, unless ignored. With a header, the column names go to
/// `feature_names` and `target_names`.
/// \tparam Scalar `float` or `double`.
/// \param path the file.
/// \param options delimiter, header, label or target columns, missing values, scaling.
/// \returns the data set.
/// \throws ValueError for invalid options (delimiter, non-finite scale or fill value,
///   negative classes, both a label name and regression targets).
/// \throws DataError naming the file, and the line and column where it applies, for a
///   missing or empty file, a row with a different number of fields than the first, a
///   non-numeric feature or target, a NaN or infinite value (or one that does not fit in
///   `Scalar`), a missing value (unless `missing` says otherwise), a bad label, a column
///   that does not exist, or a targets file whose row count differs.
template <class Scalar = float>
[[nodiscard]] Dataset<Scalar> load_csv(const std::filesystem::path& path,
                                       const CsvOptions& options = {}) {
  static_assert(std::is_floating_point_v<Scalar>, "load_csv<Scalar>: Scalar must be floating");
  const CsvOptions& o = options;
  const char delim = o.delimiter;
  if (delim == '\n' || delim == '\r' || delim == '"' || delim == '.' || delim == '+' ||
      delim == '-' || (delim >= '0' && delim <= '9') || delim == '\0') {
    throw ValueError(std::string("load_csv: invalid delimiter '") + delim + "'");
  }
  if (!std::isfinite(o.feature_scale)) throw ValueError("load_csv: feature_scale must be finite");
  if (!std::isfinite(o.fill_value)) throw ValueError("load_csv: fill_value must be finite");
  if (o.classes < 0) {
    throw ValueError("load_csv: classes must be >= 0, got " + std::to_string(o.classes));
  }
  const bool regression =
      !o.target_columns.empty() || !o.target_names.empty() || !o.targets_path.empty();
  if (regression && (!o.label_name.empty() || !o.class_names.empty() || o.classes != 0)) {
    throw ValueError(
        "load_csv: label_name, class_names and classes are for classification, but regression "
        "targets (target_columns, target_names or targets_path) are set");
  }
  const std::string name = path.string();
  const std::string text = detail::read_csv_text(path, name, o.max_bytes);
  detail::CsvTargetsFile separate;
  if (!o.targets_path.empty()) separate = detail::read_csv_targets(o);

  enum class Role { feature, label, target, ignored };
  std::vector<Role> role;
  std::vector<std::size_t> target_of;  // column -> index of its target row
  std::vector<std::string> header;
  std::size_t columns = 0;
  std::size_t first_data_line = 0;
  std::size_t label_col = 0;
  std::size_t n_targets = 0;
  std::size_t n_features = 0;

  std::vector<Scalar> values;  // row-major N x features = column-major features x N
  std::vector<Scalar> targets;
  std::vector<std::string> label_texts;
  std::vector<std::size_t> label_lines;
  std::vector<Scalar> row_values, row_targets;
  std::size_t data_row = 0;  // rows read, skipped ones included (for the targets file)
  std::size_t kept = 0;

  detail::CsvRows rows(text, delim, name);
  std::vector<detail::CsvField> fields;
  bool header_pending = o.has_header;
  while (rows.next(fields)) {
    const std::size_t line = rows.line();
    const auto at_line = [line] { return "line " + std::to_string(line); };
    if (header_pending) {
      header_pending = false;
      for (const auto& f : fields) header.emplace_back(f.text);
      continue;
    }
    if (columns == 0) {
      columns = fields.size();
      first_data_line = line;
      role.assign(columns, Role::feature);
      target_of.assign(columns, 0);
      const auto take = [&](std::size_t c, Role r, const std::string& what) {
        if (role[c] != Role::feature) {
          detail::throw_csv(name, what + " is column " + std::to_string(c + 1) +
                                      ", which is already a label, target or ignored column");
        }
        role[c] = r;
      };
      for (int c : o.ignore_columns) {
        take(detail::csv_column(c, columns, name, "ignored column", line), Role::ignored,
             "ignored column " + std::to_string(c));
      }
      for (const auto& n : o.ignore_names) {
        take(detail::csv_named_column(header, columns, n, name, "ignored column"), Role::ignored,
             "ignored column '" + n + "'");
      }
      if (regression) {
        const auto add_target = [&](std::size_t c, const std::string& what) {
          take(c, Role::target, what);
          target_of[c] = n_targets++;
        };
        for (int c : o.target_columns) {
          add_target(detail::csv_column(c, columns, name, "target column", line),
                     "target column " + std::to_string(c));
        }
        for (const auto& n : o.target_names) {
          add_target(detail::csv_named_column(header, columns, n, name, "target column"),
                     "target column '" + n + "'");
        }
        if (!separate.rows.empty()) n_targets += separate.rows.front().size();
      } else {
        label_col =
            o.label_name.empty()
                ? detail::csv_column(o.label_column, columns, name, "label column", line)
                : detail::csv_named_column(header, columns, o.label_name, name, "label column");
        take(label_col, Role::label, "the label column");
      }
      n_features = static_cast<std::size_t>(std::count(role.begin(), role.end(), Role::feature));
      if (n_features == 0) {
        detail::throw_csv(name, at_line() + " has " + std::to_string(columns) + " field" +
                                    (columns == 1 ? "" : "s") +
                                    " and no feature column is left; at least one feature and " +
                                    (regression ? "a target" : "a label") + " are needed");
      }
    } else if (fields.size() != columns) {
      detail::throw_csv(name, at_line() + " has " + std::to_string(fields.size()) +
                                  " fields, expected " + std::to_string(columns) + " (as on line " +
                                  std::to_string(first_data_line) + ")");
    }
    row_values.clear();
    row_targets.assign(n_targets, Scalar(0));
    bool skip = false;
    std::string_view label_text;
    for (std::size_t j = 0; j < columns && !skip; ++j) {
      if (role[j] == Role::ignored) continue;
      const detail::CsvField& f = fields[j];
      const auto where = [&] {
        std::string w = at_line() + ", column " + std::to_string(j + 1);
        if (header.size() == columns) w += " ('" + header[j] + "')";
        return w;
      };
      if (detail::csv_missing(f, o)) {
        const bool feature = role[j] == Role::feature;
        if (o.missing == MissingValues::skip_row) {
          skip = true;
          continue;
        }
        if (o.missing == MissingValues::fill && feature) {
          row_values.push_back(static_cast<Scalar>(o.fill_value * o.feature_scale));
          continue;
        }
        detail::throw_csv(
            name, where() + ": missing " +
                      (feature                  ? "value"
                       : role[j] == Role::label ? "label"
                                                : "target") +
                      (f.text.empty() ? std::string() : " ('" + std::string(f.text) + "')") +
                      (o.missing == MissingValues::fill
                           ? " (fill applies to features only; use skip_row)"
                           : " (set CsvOptions::missing to skip_row or fill)"));
      }
      if (role[j] == Role::label) {
        label_text = f.text;
        continue;
      }
      const double v = detail::csv_number(f, name, where());
      const auto s = static_cast<Scalar>(role[j] == Role::feature ? v * o.feature_scale : v);
      if (!std::isfinite(s)) {
        detail::throw_csv(
            name, where() + ": '" + std::string(f.text) +
                      (role[j] == Role::feature ? "' scaled by " + std::to_string(o.feature_scale)
                                                : std::string("'")) +
                      " does not fit in the scalar type");
      }
      if (role[j] == Role::feature) {
        row_values.push_back(s);
      } else {
        row_targets[target_of[j]] = s;
      }
    }
    const std::size_t r = data_row++;
    if (!separate.rows.empty() && r < separate.rows.size()) {
      const auto& t = separate.rows[r];
      for (std::size_t k = 0; k < t.size(); ++k) {
        if (std::isnan(t[k])) skip = true;  // missing, and skip_row is on
        const auto s = static_cast<Scalar>(t[k]);
        if (!skip && !std::isfinite(s)) {
          detail::throw_csv(separate.file, "row " + std::to_string(r + 1) + ", column " +
                                               std::to_string(k + 1) +
                                               ": does not fit in the scalar type");
        }
        row_targets[n_targets - t.size() + k] = s;
      }
    }
    if (skip) continue;
    values.insert(values.end(), row_values.begin(), row_values.end());
    targets.insert(targets.end(), row_targets.begin(), row_targets.end());
    if (!regression) {
      label_texts.emplace_back(label_text);
      label_lines.push_back(line);
    }
    ++kept;
  }
  if (data_row == 0) {
    detail::throw_csv(
        name, o.has_header ? "no data rows after the header" : "no data rows (only blank lines)");
  }
  if (!separate.rows.empty() && separate.rows.size() != data_row) {
    detail::throw_csv(name, "has " + std::to_string(data_row) + " data rows but the targets file " +
                                separate.file + " has " + std::to_string(separate.rows.size()));
  }
  if (kept == 0) detail::throw_csv(name, "every data row has a missing value (skip_row)");

  const auto n = static_cast<Eigen::Index>(kept);
  Dataset<Scalar> d;
  d.inputs = Eigen::Map<const typename Dataset<Scalar>::Matrix>(
      values.data(), static_cast<Eigen::Index>(n_features), n);
  if (header.size() == columns) {
    for (std::size_t j = 0; j < columns; ++j) {
      if (role[j] == Role::feature) d.feature_names.push_back(header[j]);
    }
  }
  if (regression) {
    d.targets = Eigen::Map<const typename Dataset<Scalar>::Matrix>(
        targets.data(), static_cast<Eigen::Index>(n_targets), n);
    if (header.size() == columns) {
      d.target_names.resize(n_targets - (separate.rows.empty() ? 0 : separate.rows[0].size()));
      for (std::size_t j = 0; j < columns; ++j) {
        if (role[j] == Role::target) d.target_names[target_of[j]] = header[j];
      }
      d.target_names.insert(d.target_names.end(), separate.names.begin(), separate.names.end());
      if (d.target_names.size() != n_targets) d.target_names.clear();
    }
    return d;
  }
  std::vector<int> labels;
  const int classes = detail::csv_resolve_labels(label_texts, label_lines, label_col, o, name,
                                                 labels, d.class_names);
  d.labels = Eigen::Map<const Eigen::VectorXi>(labels.data(), n);
  d.targets = one_hot<Scalar>(d.labels, classes);
  return d;
}

}  // namespace backprop
