// Tabular classification: a CSV file with a header line, feature columns and the class in
// the last column, such as scikit-learn's breast cancer, iris and wine data
// (bash scripts/fetch_sklearn_data.sh). Stratified 80/20 split, standardised features,
// one hidden ReLU layer trained with Adam, then per-class metrics on the test part.
#include <backprop/backprop.hpp>
#include <iostream>
namespace bp = backprop;

template <int Features, int Classes>
int train(bp::Split<double> parts) {
  const auto scaler = bp::Scaler<double>::standard(parts.training.inputs);
  scaler.apply(parts.training);
  scaler.apply(parts.test);
  bp::BasicNetwork<double, bp::Dense<Features, 100, bp::ReLU>, bp::Dense<100, Classes, bp::Softmax>>
      net(1, bp::Init::he);
  net.sgd(parts.training, {.epochs = 200, .mini_batch_size = 32, .eta = 1e-3}, &parts.test,
          bp::Adam{});
  std::cout << bp::confusion_matrix(net, parts.test).report(parts.test.class_names);
  net.save("tabular.bpnn");  // the model, and next to it the scaler its inputs need
  scaler.save("tabular.scaler");
  return 0;
}

int main(int argc, char** argv) try {
  if (argc != 2) return std::cerr << "usage: 08_tabular FILE.csv\n", 2;
  const auto data = bp::load_csv<double>(argv[1], {.has_header = true});
  const auto parts = bp::split(data, {.test = 0.2, .seed = 42});
  const auto shape = std::pair(data.inputs.rows(), data.targets.rows());
  if (shape == std::pair<Eigen::Index, Eigen::Index>(30, 2)) return train<30, 2>(parts);
  if (shape == std::pair<Eigen::Index, Eigen::Index>(4, 3)) return train<4, 3>(parts);
  if (shape == std::pair<Eigen::Index, Eigen::Index>(13, 3)) return train<13, 3>(parts);
  std::cerr << "no network here for " << shape.first << " features, " << shape.second
            << " classes\n";
  return 1;
} catch (const std::exception& e) {
  std::cerr << e.what() << '\n';
  return 1;
}
