// docs/saving-loading.md: every way a network goes to disk and back, and what happens
// when a file does not fit. Writes its files into the current directory, then removes them.
#include <backprop/backprop.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

namespace bp = backprop;

namespace {

void expect(bool ok, const std::string& what) {
  std::cout << (ok ? "ok:     " : "FAILED: ") << what << '\n';
  if (!ok) std::exit(1);
}

}  // namespace

int main() {
  using Net = bp::Network<bp::Dense<4, 8, bp::Tanh>, bp::Dense<8, 3, bp::Softmax>>;
  const Net net{7};
  Eigen::MatrixXf x(4, 5);  // five samples, one per column
  bp::Rng rng(1);
  for (Eigen::Index i = 0; i < x.size(); ++i) x(i) = static_cast<float>(rng.normal());

  // backprop's binary format: versioned, checksummed, written atomically.
  net.save("model.bpnn");
  Net same;  // seed 0: other parameters, until load replaces them
  same.load("model.bpnn");
  expect(same == net, "load gives back the saved parameters, bit for bit");

  // The other scalar type: float to double is exact (double to float rounds).
  bp::BasicNetwork<double, bp::Dense<4, 8, bp::Tanh>, bp::Dense<8, 3, bp::Softmax>> wide;
  wide.load("model.bpnn");
  expect(wide.layer<0>().weights().cast<float>() == net.layer<0>().weights(),
         "a float file loads into a double network");

  // Another architecture: ModelFormatError naming both sides; the network is unchanged.
  using Other = bp::Network<bp::Dense<4, 9, bp::Tanh>, bp::Dense<9, 3, bp::Softmax>>;
  Other other{3};
  const Other before = other;
  try {
    other.load("model.bpnn");
    expect(false, "loading another architecture throws");
  } catch (const bp::ModelFormatError& e) {
    std::cout << "        " << e.what() << '\n';
  }
  expect(other == before, "a failed load leaves the network as it was");

  // A damaged file: the first 100 bytes only.
  {
    std::ifstream in("model.bpnn", std::ios::binary);
    std::string head(100, '\0');
    in.read(head.data(), 100);
    std::ofstream("truncated.bpnn", std::ios::binary) << head;
  }
  try {
    same.load("truncated.bpnn");
    expect(false, "loading a truncated file throws");
  } catch (const bp::ModelFormatError& e) {
    std::cout << "        " << e.what() << '\n';
  }
  expect(same == net, "and leaves the network unchanged");

  // Any std::ostream / std::istream, e.g. a buffer in memory (binary mode).
  std::stringstream buffer(std::ios::in | std::ios::out | std::ios::binary);
  net.save(buffer);
  Net from_stream;
  from_stream.load(buffer);
  expect(from_stream == net, "save and load through a stream");

  // network2.py's JSON (17 significant digits: exact for float and double).
  net.save_json("model.json", bp::LogLikelihoodCost::name);
  Net from_json;
  const std::string cost = from_json.load_json("model.json");
  expect(from_json == net && cost == "LogLikelihoodCost", "save_json / load_json, cost " + cost);

  // ONNX, for ONNX Runtime and PyTorch: float parameters round-trip exactly.
  net.save_onnx("model.onnx");
  Net from_onnx;
  from_onnx.load_onnx("model.onnx");
  expect(from_onnx == net, "save_onnx / load_onnx");

  // A model whose architecture the program does not know: DynamicNetwork.
  const auto model = bp::DynamicNetwork<float>::load("model.bpnn");  // or "model.onnx"
  std::cout << model.summary();
  const Eigen::MatrixXf difference = model.feedforward(x) - net.feedforward(x);
  expect(difference.cwiseAbs().maxCoeff() < 1e-6f, "DynamicNetwork computes the same outputs");
  Eigen::VectorXi expected(x.cols());
  for (Eigen::Index j = 0; j < x.cols(); ++j) net.feedforward(x.col(j)).maxCoeff(&expected(j));
  expect(model.predict(x) == expected, "predict gives the argmax of each column");

  // A save that fails throws and leaves no file (and an old file untouched).
  try {
    net.save("no-such-directory/model.bpnn");
    expect(false, "saving into a missing directory throws");
  } catch (const std::runtime_error& e) {
    std::cout << "        " << e.what() << '\n';
  }
  expect(!std::filesystem::exists("no-such-directory"), "nothing was created");

  for (const char* f : {"model.bpnn", "truncated.bpnn", "model.json", "model.onnx"}) {
    std::filesystem::remove(f);
  }
}
