// libFuzzer target: arbitrary bytes into load_csv (plain or gzip, classification or
// regression, with or without a header, a separate targets file, every missing-value
// mode) and into Scaler::load and load_class_names. Any std::runtime_error (DataError,
// ModelFormatError) is an accepted rejection; a crash, a sanitizer report, another
// exception type or a loaded data set that breaks its invariants is a bug.
//
// Byte 0 picks the mode, byte 1 where the input splits into the data file and the
// targets file; the rest is the file contents. The files live in a private temporary
// directory made once per process.
#include <backprop/data/scaling.hpp>
#include <backprop/io/csv.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace {

namespace bp = backprop;

const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bp_fuzz_csv_XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    return std::filesystem::path(tmpl);
  }();
  return dir;
}

void write(const std::filesystem::path& p, const std::uint8_t* data, std::size_t size) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) std::abort();
}

void check(const bp::Dataset<double>& d, bool regression) {
  const auto n = d.inputs.cols();
  if (d.targets.cols() != n || n == 0) std::abort();
  if (!d.inputs.allFinite() || !d.targets.allFinite()) std::abort();
  if (regression) {
    if (d.labels.size() != 0) std::abort();
    return;
  }
  if (d.labels.size() != n) std::abort();
  for (Eigen::Index i = 0; i < n; ++i) {
    const int c = d.labels(i);
    if (c < 0 || c >= d.targets.rows() || d.targets(c, i) != 1.0 || d.targets.col(i).sum() != 1.0) {
      std::abort();
    }
  }
  if (!d.class_names.empty() &&
      static_cast<Eigen::Index>(d.class_names.size()) != d.targets.rows()) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const unsigned mode = data[0];
  const std::size_t split = size == 2 ? 0 : data[1] % (size - 2 + 1);
  const std::uint8_t* body = data + 2;
  const std::size_t body_size = size - 2;
  try {
    if ((mode & 7) == 7) {  // Scaler::load, then a save/load round trip
      std::istringstream is(std::string(reinterpret_cast<const char*>(body), body_size));
      const auto s = bp::Scaler<double>::load(is);
      std::ostringstream os;
      s.save(os);
      std::istringstream again(os.str());
      if (!(bp::Scaler<double>::load(again) == s)) std::abort();
      return 0;
    }
    if ((mode & 7) == 6) {  // load_class_names, then a save/load round trip
      std::istringstream is(std::string(reinterpret_cast<const char*>(body), body_size));
      const auto names = bp::load_class_names(is);
      std::ostringstream os;
      bp::save_class_names(os, names);
      std::istringstream again(os.str());
      if (bp::load_class_names(again) != names) std::abort();
      return 0;
    }
    const auto file = scratch() / "data.csv";
    const auto targets = scratch() / "targets.csv";
    const bool separate = (mode & 7) == 5;
    write(file, body, separate ? split : body_size);
    if (separate) write(targets, body + split, body_size - split);
    bp::CsvOptions o;
    o.delimiter = (mode & 8) != 0 ? ' ' : ((mode & 16) != 0 ? ';' : ',');
    o.has_header = (mode & 32) != 0;
    o.missing = (mode & 192) == 64    ? bp::MissingValues::skip_row
                : (mode & 192) == 128 ? bp::MissingValues::fill
                                      : bp::MissingValues::error;
    o.max_bytes = std::size_t{1} << 20;
    bool regression = false;
    switch (mode & 7) {
      case 1:
        o.label_column = 0;
        break;
      case 2:
        o.target_columns = {-1};
        regression = true;
        break;
      case 3:
        o.target_columns = {0, -1};
        o.ignore_columns = {1};
        regression = true;
        break;
      case 4:
        o.has_header = true;
        o.label_name = "class";
        o.ignore_names = {"id"};
        break;
      case 5:
        o.targets_path = targets;
        regression = true;
        break;
      default:
        break;  // the last column is the label
    }
    check(bp::load_csv<double>(file, o), regression);
  } catch (const std::runtime_error&) {
  }
  return 0;
}
