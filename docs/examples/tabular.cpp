// docs/tabular.md: a CSV file as users have it (a header, text class labels, a quoted
// field, a missing value, an id column) through loading, splitting, scaling, training,
// metrics, and saving everything that inference needs; then a second part that loads
// them as a separate program would and labels new rows. Writes its files into the
// current directory, then removes them.
#include <backprop/backprop.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

namespace bp = backprop;

namespace {

void expect(bool ok, const std::string& what) {
  std::cout << (ok ? "ok:     " : "FAILED: ") << what << '\n';
  if (!ok) std::exit(1);
}

// 300 flowers of three kinds by two measurements; one width is missing ("NA").
void write_csv(const char* path) {
  std::ofstream out(path);
  out << "id,length,width,kind\n";
  const char* kinds[] = {"\"narrow, long\"", "round", "small"};
  bp::Rng rng(3);
  for (int i = 0; i < 300; ++i) {
    const int k = i % 3;
    const double length = 10.0 * k + 20.0 + 4.0 * rng.normal();
    const double width = (k == 1 ? 20.0 : 5.0 + 5.0 * k) + 4.0 * rng.normal();
    out << i << ',' << length << ',';
    if (i == 17) {
      out << "NA";
    } else {
      out << width;
    }
    out << ',' << kinds[k] << '\n';
  }
}

}  // namespace

int main() {
  write_csv("flowers.csv");

  // Load: the header names the columns; "kind" is the label (text, so the classes are the
  // sorted distinct names); "id" is no feature; the row with a missing value is left out.
  const auto data = bp::load_csv<double>("flowers.csv", {.has_header = true,
                                                         .label_name = "kind",
                                                         .ignore_names = {"id"},
                                                         .missing = bp::MissingValues::skip_row});
  expect(data.size() == 299 && data.inputs.rows() == 2, "299 rows of 2 features");
  expect(data.class_names == std::vector<std::string>{"narrow, long", "round", "small"},
         "classes: the sorted distinct labels");

  // Split (stratified: each part keeps the class proportions), then scale with what the
  // training part alone says.
  auto parts = bp::split(data, {.validation = 0.2, .test = 0.2, .seed = 7});
  const auto scaler = bp::Scaler<double>::standard(parts.training.inputs);
  scaler.apply(parts.training);
  scaler.apply(parts.validation);
  scaler.apply(parts.test);

  // A Softmax output trains with the log-likelihood cost by default.
  using Net = bp::BasicNetwork<double, bp::Dense<2, 16, bp::ReLU>, bp::Dense<16, 3, bp::Softmax>>;
  Net net(1, bp::Init::he);
  net.sgd(parts.training, {.epochs = 30, .mini_batch_size = 16, .eta = 0.01, .on_epoch = bp::quiet},
          &parts.validation, bp::Adam{});

  const bp::ConfusionMatrix cm = bp::confusion_matrix(net, parts.test);
  std::cout << cm.report(data.class_names);
  expect(cm.accuracy() > 0.8, "test accuracy above 80%");

  // What inference needs: the model, the scaler and the class names.
  net.save("flowers.bpnn");
  scaler.save("flowers.scaler");
  bp::save_class_names("flowers.classes", data.class_names);

  // ... later, in another program:
  Net loaded;
  loaded.load("flowers.bpnn");
  const auto input_scaler = bp::Scaler<double>::load("flowers.scaler");
  const auto names = bp::load_class_names("flowers.classes");
  Eigen::MatrixXd flowers(2, 2);  // two new flowers, one per column: length, width
  flowers << 20.0, 30.0,          //
      5.0, 30.0;
  const Eigen::VectorXi kind = loaded.predict(input_scaler.transform(flowers));
  std::cout << "new flowers: " << names[kind(0)] << ", " << names[kind(1)] << '\n';
  expect(names[kind(0)] == "narrow, long" && names[kind(1)] == "round", "new flowers labelled");

  for (const char* f : {"flowers.csv", "flowers.bpnn", "flowers.scaler", "flowers.classes"}) {
    std::remove(f);
  }
}
