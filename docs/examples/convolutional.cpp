// docs/training.md: a small convolutional network that tells horizontal bars from vertical
// ones in noisy 8x8 images. An image is a column of C * H * W values (CHW order).
#include <backprop/backprop.hpp>
#include <cstdint>
#include <iostream>

namespace bp = backprop;

// n images of one channel, 8 x 8: a bright row (class 0) or column (class 1) on noise.
bp::Dataset<float> bars(int n, std::uint64_t seed) {
  bp::Rng rng(seed);
  bp::Dataset<float> data;
  data.inputs.resize(64, n);
  data.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    const int vertical = static_cast<int>(rng.below(2));
    const int line = static_cast<int>(rng.below(8));
    for (int r = 0; r < 8; ++r) {
      for (int c = 0; c < 8; ++c) {
        const bool on = (vertical != 0 ? c : r) == line;
        data.inputs(r * 8 + c, i) = static_cast<float>((on ? 0.8 : 0.0) + rng.uniform(0.0, 0.2));
      }
    }
    data.labels(i) = vertical;
  }
  data.targets = bp::one_hot<float>(data.labels, 2);
  return data;
}

int main() {
  using Cnn = bp::Network<bp::Conv2D<1, 8, 8, 4, 3, bp::ReLU>,  // 1x8x8 -> 4x6x6
                          bp::MaxPool2D<4, 6, 6, 2>,            // -> 4x3x3 = 36 values
                          bp::Dense<36, 2, bp::Softmax>>;
  Cnn net{5, bp::Init::he};
  const auto training = bars(600, 1);
  const auto test = bars(200, 2);
  net.sgd<bp::LogLikelihoodCost>(
      training, {.epochs = 10, .mini_batch_size = 10, .eta = 0.1, .on_epoch = bp::quiet});

  // layer<0>() is the convolution: 4 filters of 1 x 3 x 3, PyTorch's weight layout.
  std::cout << "filters: " << net.layer<0>().weights().rows() << " x "
            << net.layer<0>().weights().cols() << '\n';
  const long long correct = net.evaluate(test.inputs, test.labels);
  std::cout << "test accuracy " << correct << " / " << test.size() << '\n';
  return correct >= 190 ? 0 : 1;
}
