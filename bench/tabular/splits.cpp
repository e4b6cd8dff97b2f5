// Writes the training and test parts that examples/08_tabular and examples/09_regression
// train on (the same load_csv options, bp::split options and seed) as CSV files, so that
// scikit-learn can be run on exactly the same samples (bench/tabular/sklearn_mlp.py).
// Usage: splits DATA_DIR OUT_DIR
#include <backprop/backprop.hpp>
#include <fstream>
#include <iomanip>
#include <iostream>
namespace bp = backprop;

static void write(const bp::Dataset<double>& d, const std::string& path) {
  std::ofstream out(path);
  out << std::setprecision(17);
  for (Eigen::Index i = 0; i < d.size(); ++i) {
    for (Eigen::Index r = 0; r < d.inputs.rows(); ++r) out << d.inputs(r, i) << ',';
    if (d.has_labels()) {
      out << d.labels(i) << '\n';
    } else {
      out << d.targets(0, i) << '\n';
    }
  }
  if (!out) throw std::runtime_error("cannot write " + path);
}

int main(int argc, char** argv) try {
  if (argc != 3) return std::cerr << "usage: splits DATA_DIR OUT_DIR\n", 2;
  const std::string dir = std::string(argv[1]) + "/", out = std::string(argv[2]) + "/";
  for (const char* name : {"breast_cancer", "iris", "wine_data"}) {
    const auto data = bp::load_csv<double>(dir + name + ".csv", {.has_header = true});
    const auto parts = bp::split(data, {.test = 0.2, .seed = 42});
    write(parts.training, out + name + ".train.csv");
    write(parts.test, out + name + ".test.csv");
  }
  const auto data =
      bp::load_csv<double>(dir + "diabetes_data_raw.csv.gz",
                           {.delimiter = ' ', .targets_path = dir + "diabetes_target.csv.gz"});
  const auto parts = bp::split(data, {.test = 0.2, .seed = 42});
  write(parts.training, out + "diabetes.train.csv");
  write(parts.test, out + "diabetes.test.csv");
  return 0;
} catch (const std::exception& e) {
  std::cerr << e.what() << '\n';
  return 1;
}
