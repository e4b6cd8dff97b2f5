// Writes the seeds of corpus/fuzz_onnx_load written by backprop (mlp.onnx, conv.onnx,
// reshaped.onnx: the networks of fuzz_onnx_load.cpp's modes 0, 1 and 2, each file
// prefixed by its mode byte; dynamic_*: the same and a binary model, with the mode byte
// 4, for DynamicNetwork, also with batch-norm layers). The corpus also holds PyTorch's
// torch_cnn_stride_pad.onnx (tests/fixtures/onnx) with the mode byte 3. Run from the repository
// root:
//   g++ -std=c++20 -Iinclude -I/usr/include/eigen3 tests/fuzz/make_onnx_seeds.cpp -o seeds
//   ./seeds tests/fuzz/corpus/fuzz_onnx_load
#include <backprop/backprop.hpp>

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

namespace bp = backprop;

template <class Net>
void write(const std::string& path, char mode, bool binary = false) {
  const Net net(3, bp::Init::xavier);
  std::ostringstream os(std::ios::binary);
  if (binary) {
    net.save(os);
  } else {
    net.save_onnx(os);
  }
  std::ofstream out(path, std::ios::binary);
  out << mode << os.str();
  if (!out) throw std::runtime_error("cannot write " + path);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: seeds CORPUS_DIR\n";
    return 2;
  }
  const std::string dir = argv[1];
  write<bp::Network<bp::Dense<6, 5, bp::Sigmoid>, bp::Dense<5, 4, bp::LeakyReLU>,
                    bp::Dense<4, 3, bp::Softmax>>>(dir + "/mlp.onnx", '\x00');
  write<bp::Network<bp::Conv2D<1, 4, 4, 2, 3, bp::Tanh, 1, 1>, bp::MaxPool2D<2, 4, 4, 2>,
                    bp::Dropout<8>, bp::Dense<8, 2, bp::Sigmoid>>>(dir + "/conv.onnx", '\x01');
  write<bp::Network<bp::Dense<5, 16, bp::ReLU>, bp::Conv2D<1, 4, 4, 2, 3, bp::Identity>,
                    bp::Dense<8, 3, bp::Tanh>>>(dir + "/reshaped.onnx", '\x02');
  using Conv = bp::Network<bp::Conv2D<1, 4, 4, 2, 3, bp::Tanh, 1, 1>, bp::MaxPool2D<2, 4, 4, 2>,
                           bp::Dropout<8>, bp::Dense<8, 2, bp::Sigmoid>>;
  write<Conv>(dir + "/dynamic_conv.onnx", '\x04');
  write<Conv>(dir + "/dynamic_conv.bpnn", '\x04', true);
  write<bp::Network<bp::Dense<6, 5, bp::LeakyReLU>, bp::Dense<5, 3, bp::Softmax>>>(
      dir + "/dynamic_mlp.bpnn", '\x04', true);
  using Bn = bp::Network<bp::Conv2D<1, 4, 4, 2, 3, bp::Identity, 1, 1>,
                         bp::BatchNorm2D<2, 4, 4, bp::ReLU>, bp::MaxPool2D<2, 4, 4, 2>,
                         bp::Dense<8, 3, bp::Identity>, bp::BatchNorm<3, bp::Sigmoid>>;
  write<Bn>(dir + "/dynamic_batchnorm.onnx", '\x04');
  write<Bn>(dir + "/dynamic_batchnorm.bpnn", '\x04', true);
  std::ifstream torch("tests/fixtures/onnx/torch_cnn_stride_pad.onnx", std::ios::binary);
  std::ofstream out(dir + "/torch_cnn_stride_pad.onnx", std::ios::binary);
  out << '\x03' << torch.rdbuf();
  if (!torch || !out) throw std::runtime_error("cannot copy torch_cnn_stride_pad.onnx");
}
