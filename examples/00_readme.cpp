// The README's quick start: the book's chapter-1 network on MNIST.
#include <backprop/backprop.hpp>
#include <iostream>

namespace bp = backprop;

int main(int argc, char** argv) {
  // 784 inputs (28x28 pixels), 30 hidden sigmoid units, 10 outputs.
  using Net = bp::Network<bp::Dense<784, 30, bp::Sigmoid>, bp::Dense<30, 10, bp::Sigmoid>>;
  Net net{9};  // seed: N(0,1) weights and biases, identical on every platform

  // Samples are columns: training.inputs is 784 x 50000, pixels in [0, 1].
  const auto data = bp::book_split(bp::load_mnist(argc > 1 ? argv[1] : ".cache/data/mnist"));

  // Mini-batch SGD: 3 epochs, mini-batches of 10, eta 3.0; prints test accuracy per epoch.
  net.sgd(data.training, {.epochs = 3, .mini_batch_size = 10, .eta = 3.0}, &data.test);

  const auto correct = net.evaluate(data.test.inputs, data.test.labels);
  std::cout << "test accuracy: " << 100.0 * correct / data.test.size() << "%\n";
}
