// Prints the predictions of any model backprop can read - a backprop binary model or an
// ONNX file (from PyTorch, say) of built-in layers - for the samples of an IDX or CSV
// file, without knowing the architecture at compile time (bp::DynamicNetwork).
//
//   example_07_predict MODEL --idx IMAGES [--labels LABELS] [options]
//   example_07_predict MODEL --csv FILE [--label-column K] [--header] [--delimiter C] [options]
//
//   --idx IMAGES     an IDX file of N samples (N x 28 x 28 for MNIST, plain or .gz); unsigned
//                    bytes are scaled by 1/255 as load_mnist does
//   --labels LABELS  an IDX file of N labels: also print the accuracy
//   --csv FILE       one sample per line, numbers only; with --label-column K (0-based,
//                    -1 = last) that column is the class label, and the accuracy is printed
//   --outputs        print every output, not only the predicted class
//   --limit N        only the first N samples
//   --summary        print the layers and stop
//
// Output: one line per sample, "index,predicted[,label][,output...]", then (on stderr)
// the sample count and, with labels, the accuracy.
#include <backprop/backprop.hpp>

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace bp = backprop;

namespace {

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "error: " << problem << "\n"
            << "usage: example_07_predict MODEL (--idx IMAGES [--labels LABELS] | --csv FILE "
               "[--label-column K] [--header] [--delimiter C]) [--outputs] [--limit N] "
               "[--summary]\n";
  std::exit(2);
}

/// Numbers only, one sample per line (no labels): a column per sample.
Eigen::MatrixXf read_plain_csv(const std::string& path, char delimiter, bool header) {
  std::ifstream is(path);
  if (!is) throw bp::DataError("cannot open '" + path + "'");
  std::vector<float> values;
  std::size_t columns = 0, rows = 0, line_no = 0;
  std::string line;
  while (std::getline(is, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (header) {
      header = false;
      continue;
    }
    std::size_t fields = 0, start = 0;
    while (true) {
      const std::size_t end = std::min(line.find(delimiter, start), line.size());
      std::string field = line.substr(start, end - start);
      field.erase(0, field.find_first_not_of(" \t"));
      field.erase(field.find_last_not_of(" \t") + 1);
      float v = 0;
      const auto [p, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
      if (ec != std::errc{} || p != field.data() + field.size() || !std::isfinite(v)) {
        throw bp::DataError(path + ": line " + std::to_string(line_no) + ", column " +
                            std::to_string(fields + 1) + ": '" + field + "' is not a number");
      }
      values.push_back(v);
      ++fields;
      if (end == line.size()) break;
      start = end + 1;
    }
    if (rows == 0) columns = fields;
    if (fields != columns) {
      throw bp::DataError(path + ": line " + std::to_string(line_no) + " has " +
                          std::to_string(fields) + " fields, expected " + std::to_string(columns));
    }
    ++rows;
  }
  if (rows == 0) throw bp::DataError(path + ": no data rows");
  return Eigen::Map<const Eigen::MatrixXf>(values.data(), static_cast<Eigen::Index>(columns),
                                           static_cast<Eigen::Index>(rows));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage("no model given");
  const std::string model_path = argv[1];
  std::optional<std::string> idx, labels_path, csv;
  std::optional<int> label_column;
  bool header = false, outputs = false, summary_only = false;
  char delimiter = ',';
  long limit = -1;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--idx") {
      idx = value();
    } else if (a == "--labels") {
      labels_path = value();
    } else if (a == "--csv") {
      csv = value();
    } else if (a == "--label-column") {
      label_column = std::stoi(value());
    } else if (a == "--header") {
      header = true;
    } else if (a == "--delimiter") {
      const std::string d = value();
      if (d.size() != 1) usage("--delimiter takes one character");
      delimiter = d[0];
    } else if (a == "--outputs") {
      outputs = true;
    } else if (a == "--limit") {
      limit = std::stol(value());
    } else if (a == "--summary") {
      summary_only = true;
    } else {
      usage("unknown option '" + a + "'");
    }
  }
  try {
    const auto net = bp::DynamicNetwork<float>::load(model_path);
    std::cerr << model_path << ": " << net.layers().size() << " layers, " << net.inputs()
              << " inputs, " << net.outputs() << " outputs\n"
              << net.summary();
    if (summary_only) return 0;
    if (idx.has_value() == csv.has_value()) usage("give exactly one of --idx and --csv");

    Eigen::MatrixXf x;
    Eigen::VectorXi labels;
    if (idx) {
      const bp::IdxTensor t = bp::load_idx(*idx);
      if (t.rank() < 1 || t.dims[0] == 0) throw bp::DataError(*idx + ": no samples");
      const auto n = static_cast<Eigen::Index>(t.dims[0]);
      const auto per = static_cast<Eigen::Index>(t.size() / t.dims[0]);
      const std::vector<float> v = t.to_vector<float>();
      x = Eigen::Map<const Eigen::MatrixXf>(v.data(), per, n);
      if (t.type == bp::IdxType::UByte) x /= 255.0f;
      if (labels_path) {
        const bp::IdxTensor l = bp::load_idx(*labels_path);
        if (l.rank() != 1 || l.dims[0] != t.dims[0]) {
          throw bp::DataError(*labels_path + ": expected " + std::to_string(n) + " labels");
        }
        const std::vector<int> lv = l.to_vector<int>();
        labels = Eigen::Map<const Eigen::VectorXi>(lv.data(), n);
      }
    } else if (label_column) {
      const auto d = bp::load_csv<float>(
          *csv, {.delimiter = delimiter, .has_header = header, .label_column = *label_column});
      x = d.inputs;
      labels = d.labels;
    } else {
      x = read_plain_csv(*csv, delimiter, header);
    }
    if (limit >= 0 && limit < x.cols()) {
      x = x.leftCols(limit).eval();
      if (labels.size() != 0) labels = labels.head(limit).eval();
    }
    if (x.rows() != net.inputs()) {
      throw bp::ShapeError("the samples have " + std::to_string(x.rows()) +
                           " values each; the model takes " + std::to_string(net.inputs()));
    }
    const Eigen::MatrixXf y = net.feedforward(x);
    long correct = 0;
    for (Eigen::Index j = 0; j < y.cols(); ++j) {
      Eigen::Index best = 0;
      y.col(j).maxCoeff(&best);
      std::cout << j << "," << best;
      if (labels.size() != 0) {
        std::cout << "," << labels(j);
        correct += best == labels(j);
      }
      if (outputs) {
        for (Eigen::Index i = 0; i < y.rows(); ++i) std::cout << "," << y(i, j);
      }
      std::cout << "\n";
    }
    std::cerr << y.cols() << " samples";
    if (labels.size() != 0) {
      std::cerr << ", accuracy " << correct << " / " << y.cols() << " = "
                << 100.0 * static_cast<double>(correct) / static_cast<double>(y.cols()) << "%";
    }
    std::cerr << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
