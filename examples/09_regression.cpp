// Regression: scikit-learn's diabetes data (bash scripts/fetch_sklearn_data.sh), ten
// space-separated features per line and the target in a separate file. Inputs and
// targets are standardised on the training part; the test RMSE is in the target's units.
#include <backprop/backprop.hpp>
#include <iostream>
namespace bp = backprop;

int main(int argc, char** argv) try {
  if (argc != 2) return std::cerr << "usage: 09_regression DATA_DIR\n", 2;
  const std::string dir = std::string(argv[1]) + "/";
  const auto data =
      bp::load_csv<double>(dir + "diabetes_data_raw.csv.gz",
                           {.delimiter = ' ', .targets_path = dir + "diabetes_target.csv.gz"});
  auto parts = bp::split(data, {.test = 0.2, .seed = 42});
  const auto x_scaler = bp::Scaler<double>::standard(parts.training.inputs);
  const auto y_scaler = bp::Scaler<double>::standard(parts.training.targets);
  x_scaler.apply(parts.training);
  x_scaler.apply(parts.test);
  parts.training.targets = y_scaler.transform(parts.training.targets);

  bp::BasicNetwork<double, bp::Dense<10, 100, bp::ReLU>, bp::Dense<100, 1, bp::Identity>> net(
      1, bp::Init::he);
  auto monitor = parts.test;  // the test part in standardised units, for the epoch lines
  monitor.targets = y_scaler.transform(parts.test.targets);
  net.sgd(parts.training, {.epochs = 200, .mini_batch_size = 32, .eta = 1e-3}, &monitor,
          bp::Adam{});
  const auto predicted = y_scaler.inverse(net.feedforward(parts.test.inputs));
  std::cout << "test: " << bp::regression_metrics(predicted, parts.test.targets) << '\n';
  return 0;
} catch (const std::exception& e) {
  std::cerr << e.what() << '\n';
  return 1;
}
