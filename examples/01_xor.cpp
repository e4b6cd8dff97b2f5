// Learns XOR with a 2-3-1 sigmoid network: the smallest problem a single
// layer cannot solve. Prints the output for each of the four inputs.
#include <backprop/backprop.hpp>
#include <cstdlib>
#include <iostream>
#include <string>

namespace bp = backprop;

int main(int argc, char** argv) {
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 4000;
  using Net = bp::BasicNetwork<double, bp::Dense<2, 3, bp::Sigmoid>, bp::Dense<3, 1, bp::Sigmoid>>;
  Net net{7};

  bp::Dataset<double> xor_data;
  xor_data.inputs.resize(2, 4);
  xor_data.inputs << 0, 0, 1, 1,  //
      0, 1, 0, 1;
  xor_data.targets.resize(1, 4);
  xor_data.targets << 0, 1, 1, 0;

  net.sgd(xor_data, {.epochs = epochs, .mini_batch_size = 4, .eta = 4.0, .on_epoch = bp::quiet});

  int correct = 0;
  for (int i = 0; i < 4; ++i) {
    const double out = net.feedforward(xor_data.inputs.col(i))(0);
    const bool ok = (out > 0.5) == (xor_data.targets(0, i) > 0.5);
    correct += ok;
    std::cout << xor_data.inputs(0, i) << " xor " << xor_data.inputs(1, i) << " -> " << out
              << (ok ? "" : "  (wrong)") << '\n';
  }
  std::cout << correct << " / 4 correct\n";
  return correct == 4 ? EXIT_SUCCESS : EXIT_FAILURE;
}
