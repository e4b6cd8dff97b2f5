// Writes the convolutional seeds of corpus/fuzz_model_load (conv_*.bpnn): the network of
// fuzz_model_load.cpp's mode bit 1, in float and double, each with the mode byte 0x02
// (checksum as stored) and 0x03 (checksum recomputed by the fuzzer). Run from the
// repository root:
//   g++ -std=c++20 -Iinclude -I/usr/include/eigen3 tests/fuzz/make_model_seeds.cpp -o seeds
//   ./seeds tests/fuzz/corpus/fuzz_model_load
#include <backprop/layers/conv.hpp>
#include <backprop/layers/pool.hpp>
#include <backprop/network.hpp>

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

namespace bp = backprop;

template <class T>
using ConvNet =
    bp::BasicNetwork<T, bp::Conv2D<1, 4, 4, 2, 3, bp::Tanh, 1, 1>, bp::MaxPool2D<2, 4, 4, 2>,
                     bp::Dropout<8>, bp::Dense<8, 2, bp::Sigmoid>>;

template <class T>
void write(const std::string& dir, const std::string& name) {
  const ConvNet<T> net(3, bp::Init::xavier);
  std::ostringstream os(std::ios::binary);
  net.save(os);
  for (const char mode : {'\x02', '\x03'}) {
    const std::string path = dir + "/conv_" + name + (mode == '\x03' ? "_fixcrc" : "") + ".bpnn";
    std::ofstream out(path, std::ios::binary);
    out << mode << os.str();
    std::cout << "wrote " << path << "\n";
  }
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " <corpus dir>\n";
    return 2;
  }
  write<float>(argv[1], "float");
  write<double>(argv[1], "double");
  return 0;
}
