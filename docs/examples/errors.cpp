// docs/errors.md: what backprop throws for bad input, with the messages it prints. Every
// exception derives from std::invalid_argument (wrong arguments) or std::runtime_error
// (bad files, failed training). Writes two small files and an empty folder into the current
// directory.
#include <backprop/backprop.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>

namespace bp = backprop;

namespace {

// Runs `f`, expects it to throw E with `text` in its message, and prints the message.
template <class E, class F>
void expect_error(const char* type, const std::string& text, F&& f) {
  try {
    f();
  } catch (const E& e) {
    const std::string what = e.what();
    std::cout << type << ": " << what << '\n';
    if (what.find(text) != std::string::npos) return;
    std::cout << "  FAILED: the message does not contain '" << text << "'\n";
    std::exit(1);
  }
  std::cout << "FAILED: no " << type << " (" << text << ")\n";
  std::exit(1);
}

}  // namespace

int main() {
  using Net = bp::Network<bp::Dense<4, 3, bp::Sigmoid>, bp::Dense<3, 2, bp::Sigmoid>>;
  Net net{1};
  bp::Dataset<float> data;
  data.inputs = Eigen::MatrixXf::Constant(4, 10, 0.5f);
  data.labels = Eigen::VectorXi::Zero(10);
  data.targets = bp::one_hot<float>(data.labels, 2);

  // Arguments: std::invalid_argument (ShapeError, ValueError).
  expect_error<bp::ShapeError>("ShapeError", "input has 3 rows, layer 0 expects 4", [&] {
    static_cast<void>(net.feedforward(Eigen::VectorXf::Zero(3)));
  });
  expect_error<bp::ShapeError>("ShapeError", "X has 4 columns but Y has 3", [&] {
    net.update_mini_batch(data.inputs.leftCols(4), data.targets.leftCols(3), 1.0);
  });
  expect_error<bp::ValueError>("ValueError", "eta must be finite and > 0", [&] {
    net.sgd(data, {.epochs = 1, .mini_batch_size = 5, .eta = -1.0});
  });
  expect_error<bp::ValueError>("ValueError", "mini_batch_size must be in [1, 10]", [&] {
    net.sgd(data, {.epochs = 1, .mini_batch_size = 11, .eta = 1.0});
  });
  expect_error<bp::ValueError>("ValueError", "label 2 of sample 4 is outside [0, 2)", [&] {
    auto bad = data;
    bad.labels(4) = 2;
    net.sgd(bad, {.epochs = 1, .mini_batch_size = 5, .eta = 1.0});
  });
  expect_error<bp::ValueError>("ValueError", "the training inputs contain NaN or Inf", [&] {
    auto bad = data;
    bad.inputs(1, 7) = std::numeric_limits<float>::quiet_NaN();
    net.sgd(bad, {.epochs = 1, .mini_batch_size = 5, .eta = 1.0});
  });

  // Training that diverges: DivergenceError, and the parameters of the epoch's start back.
  using Line = bp::Network<bp::Dense<1, 1, bp::Identity>>;
  Line line{2};
  const Line before = line;
  bp::Dataset<float> ramp;
  ramp.inputs = Eigen::RowVectorXf::LinSpaced(50, -100.0f, 100.0f);
  ramp.targets = 3.0f * ramp.inputs;
  expect_error<bp::DivergenceError>("DivergenceError", "training diverged in epoch 1", [&] {
    line.sgd(ramp, {.epochs = 5, .mini_batch_size = 5, .eta = 1e3, .on_epoch = bp::quiet});
  });
  if (!(line == before)) return 1;

  // Files: std::runtime_error (DataError, ModelFormatError), naming the file.
  std::filesystem::create_directory("empty");
  expect_error<bp::DataError>("DataError", "neither train-images-idx3-ubyte nor",
                              [] { static_cast<void>(bp::load_mnist("empty")); });
  std::ofstream("not-idx.bin", std::ios::binary) << "abcdefgh";
  expect_error<bp::DataError>("DataError", "bad magic number",
                              [] { static_cast<void>(bp::load_idx("not-idx.bin")); });
  std::ofstream("broken.json") << R"({"sizes": [4, 3, 2], "weights": [[[1, 2], 3]]})";
  expect_error<bp::ModelFormatError>("ModelFormatError", "line 1, column",
                                     [&] { static_cast<void>(net.load_json("broken.json")); });
  std::filesystem::remove("empty");
  std::filesystem::remove("not-idx.bin");
  std::filesystem::remove("broken.json");
}
