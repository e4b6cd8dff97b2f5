// DynamicNetwork (architecture read from the file at run time) against the compiled
// Network of the same architecture and parameters, in one process, interleaved: W5
// (784-100-10 sigmoid) and W7 (the chapter-6 CNN) inference, batch 1 and batch 10,000, on
// the MNIST test images. Prints the median of each and the ratio dynamic / compiled
// (issue 17 asks for at most 1.5).
//
//   bench_dynamic [MNIST_DIR] [ROUNDS]
#include <backprop/backprop.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace bp = backprop;

namespace {

double seconds(const std::chrono::steady_clock::time_point& t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class Net>
void compare(const std::string& name, const Net& net, const Eigen::MatrixXf& x, long batch1,
             int rounds) {
  std::stringstream file(std::ios::in | std::ios::out | std::ios::binary);
  net.save(file);
  const auto dyn = bp::DynamicNetwork<float>::load(file);
  const double diff =
      (dyn.feedforward(x.leftCols(100)) - net.feedforward(x.leftCols(100))).cwiseAbs().maxCoeff();
  float sink = 0;
  std::vector<double> c1, d1, cb, db;
  for (int r = 0; r < rounds; ++r) {  // interleaved: A B A B ...
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < batch1; ++i) sink += net.feedforward(x.col(i))(0);
    c1.push_back(seconds(t0));
    t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < batch1; ++i) sink += dyn.feedforward(x.col(i))(0);
    d1.push_back(seconds(t0));
    t0 = std::chrono::steady_clock::now();
    sink += net.feedforward(x)(0, 0);
    cb.push_back(seconds(t0));
    t0 = std::chrono::steady_clock::now();
    sink += dyn.feedforward(x)(0, 0);
    db.push_back(seconds(t0));
  }
  const double n = static_cast<double>(x.cols());
  std::printf("%s (max |dynamic - compiled| %.2g over 100 samples)\n", name.c_str(), diff);
  std::printf("  batch 1:     compiled %8.2f us/sample, dynamic %8.2f us/sample, ratio %.2f\n",
              1e6 * median(c1) / batch1, 1e6 * median(d1) / batch1, median(d1) / median(c1));
  std::printf("  batch %-5.0f: compiled %8.0f samples/s, dynamic %8.0f samples/s, ratio %.2f\n", n,
              n / median(cb), n / median(db), median(db) / median(cb));
  if (sink == 12345.0f) std::puts("");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : ".cache/data/mnist";
  const int rounds = argc > 2 ? std::stoi(argv[2]) : 7;
  const auto mnist = bp::load_mnist<float>(dir);
  const Eigen::MatrixXf x = mnist.test.inputs.leftCols(10000);
  std::printf("%d rounds, interleaved; medians\n", rounds);
  bp::Network<bp::Dense<784, 100, bp::Sigmoid>, bp::Dense<100, 10, bp::Sigmoid>> w5(1);
  compare("W5 784-100-10 sigmoid", w5, x, 10000, rounds);
  bp::Network<bp::Conv2D<1, 28, 28, 20, 5, bp::ReLU>, bp::MaxPool2D<20, 24, 24, 2>,
              bp::Conv2D<20, 12, 12, 40, 5, bp::ReLU>, bp::MaxPool2D<40, 8, 8, 2>,
              bp::Dense<640, 100, bp::ReLU>, bp::Dense<100, 10, bp::Softmax>>
      w7(2, bp::Init::he);
  compare("W7 chapter-6 CNN", w7, x, 2000, std::max(3, rounds / 2));
}
