// A layer of your own: the learnable per-feature scale and shift of scale_shift.hpp,
// written only against backprop's layer concept (docs/layers.md), between two Dense
// layers of the book's chapter-1 network, trained on MNIST, saved and loaded again.
//
//   example_06_custom_layer [mnist dir] [epochs] [training images]
#include <backprop/backprop.hpp>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "scale_shift.hpp"

namespace bp = backprop;

int main(int argc, char** argv) {
  using Net = bp::Network<bp::Dense<784, 30, bp::Sigmoid>, user::ScaleShift<30>,
                          bp::Dense<30, 10, bp::Sigmoid>>;
  Net net{9};
  auto data = bp::book_split(bp::load_mnist(argc > 1 ? argv[1] : ".cache/data/mnist"));
  const int epochs = argc > 2 ? std::atoi(argv[2]) : 3;
  if (argc > 3) {
    const Eigen::Index n = std::atoi(argv[3]);
    data.training.inputs = data.training.inputs.leftCols(n).eval();
    data.training.targets = data.training.targets.leftCols(n).eval();
    data.training.labels = data.training.labels.head(n).eval();
  }
  net.sgd(data.training, {.epochs = epochs, .mini_batch_size = 10, .eta = 1.0}, &data.test);

  // The scale-shift layer's parameters are trained like any other.
  const auto& scale = net.layer<1>().weights();
  std::cout << "scale-shift layer: s in [" << scale.minCoeff() << ", " << scale.maxCoeff() << "]\n";

  // Its record goes into the model file with the others.
  std::stringstream file;
  net.save(file);
  Net loaded;
  loaded.load(file);
  const auto correct = loaded.evaluate(data.test.inputs, data.test.labels);
  std::cout << "test accuracy after save and load: " << 100.0 * correct / data.test.size() << "%\n";
  return loaded == net ? 0 : 1;
}
