// ONNX export and import (io/onnx.hpp): exact round trips for every built-in layer and
// activation, the structure of the written graph, malformed files, architecture
// mismatches, and the models PyTorch exported (tests/fixtures/onnx, made by
// make_torch_fixtures.py). ONNX Runtime and the ONNX checker run the exported models in
// tests/onnx (the "onnx.runtime" test).
#include <backprop/backprop.hpp>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../support/test_support.hpp"

namespace bp = backprop;
using Catch::Matchers::Contains;

namespace {

template <class Net>
std::string to_onnx(const Net& net) {
  std::ostringstream os(std::ios::binary);
  net.save_onnx(os);
  return os.str();
}

template <class Net>
void from_onnx(Net& net, const std::string& bytes) {
  std::istringstream is(bytes, std::ios::binary);
  net.load_onnx(is);
}

/// The message of the ModelFormatError that loading `bytes` throws; checks that the
/// network is unchanged.
template <class Net>
std::string load_error(Net& net, const std::string& bytes) {
  const Net before = net;
  try {
    from_onnx(net, bytes);
  } catch (const bp::ModelFormatError& e) {
    CHECK(net == before);
    return e.what();
  }
  FAIL("load_onnx did not throw");
  return {};
}

template <class Net>
void check_round_trip(const Net& net) {
  const std::string bytes = to_onnx(net);
  Net back(net.num_layers + 77);
  REQUIRE_FALSE(back == net);
  from_onnx(back, bytes);
  CHECK(back == net);
  CHECK(to_onnx(back) == bytes);  // and the same file again
}

template <class T>
using Activations = bp::BasicNetwork<T, bp::Dense<6, 5, bp::Sigmoid>, bp::Dense<5, 5, bp::Tanh>,
                                     bp::Dense<5, 4, bp::ReLU>, bp::Dense<4, 4, bp::LeakyReLU>,
                                     bp::Dense<4, 4, bp::Identity>, bp::Dense<4, 3, bp::Softmax>>;
using ConvNet =
    bp::Network<bp::Conv2D<2, 9, 9, 3, 3, bp::ReLU, 2, 1>, bp::MaxPool2D<3, 5, 5, 5>,
                bp::Dropout<3>, bp::DropoutDense<3, 4, bp::Tanh>, bp::Dense<4, 2, bp::Softmax>>;
// Dense into a convolution (a Reshape), a convolution as the output (a Flatten).
using DenseConv =
    bp::Network<bp::Dense<5, 16, bp::Sigmoid>, bp::Conv2D<1, 4, 4, 2, 3, bp::Tanh>,
                bp::Dense<8, 18, bp::ReLU>, bp::Conv2D<2, 3, 3, 2, 2, bp::Sigmoid, 1, 1>>;

namespace onnx = bp::detail::onnx;

std::vector<std::string> op_types(const onnx::Model& m) {
  std::vector<std::string> ops;
  for (const auto& n : m.graph.nodes) ops.push_back(n.op_type);
  return ops;
}

}  // namespace

TEMPLATE_TEST_CASE("ONNX export and import round-trip every activation exactly", "[onnx]", float,
                   double) {
  const auto net = bptest::perturbed<Activations<TestType>>(3);
  const std::string bytes = to_onnx(net);
  Activations<TestType> back(9);
  from_onnx(back, bytes);
  if constexpr (std::is_same_v<TestType, float>) {
    CHECK(back == net);
    CHECK(to_onnx(back) == bytes);
  } else {  // parameters are written as float
    CHECK(bptest::max_parameter_difference(back, net) < 1e-7);
    CHECK(bptest::max_parameter_difference(back, net) > 0.0);
    Activations<TestType> again(10);
    from_onnx(again, to_onnx(back));
    CHECK(again == back);
  }
  const onnx::Model m = onnx::parse_model(bytes);
  CHECK(m.ir_version == 8);
  REQUIRE(m.opsets.size() == 1);
  CHECK(m.opsets[0] == std::pair<std::string, std::int64_t>{"", 13});
  CHECK(op_types(m) == std::vector<std::string>{"Gemm", "Sigmoid", "Gemm", "Tanh", "Gemm", "Relu",
                                                "Gemm", "LeakyRelu", "Gemm", "Gemm", "Softmax"});
  REQUIRE(m.graph.inputs.size() == 1);
  CHECK(m.graph.inputs[0].name == "input");
  CHECK(m.graph.inputs[0].dims == std::vector<std::int64_t>{-1, 6});  // -1: the symbolic N
  CHECK(m.graph.outputs[0].name == "output");
  CHECK(m.graph.outputs[0].dims == std::vector<std::int64_t>{-1, 3});
  CHECK(m.graph.nodes.back().outputs == std::vector<std::string>{"output"});
  const auto* alpha = m.graph.nodes[7].attribute("alpha");
  REQUIRE(alpha != nullptr);
  CHECK(alpha->f == 0.01f);
  // Weights in PyTorch's Linear layout: [out, in], row-major.
  REQUIRE(m.graph.initializers.size() == 12);
  CHECK(m.graph.initializers[0].dims == std::vector<std::int64_t>{5, 6});
  CHECK(m.graph.initializers[0].values()[1] ==
        static_cast<double>(static_cast<float>(net.template layer<0>().weights()(0, 1))));
}

TEST_CASE("ONNX round-trips convolutional networks exactly, with Flatten and Reshape", "[onnx]") {
  const auto conv = bptest::perturbed<ConvNet>(4);
  check_round_trip(conv);
  const onnx::Model m = onnx::parse_model(to_onnx(conv));
  CHECK(op_types(m) == std::vector<std::string>{"Conv", "Relu", "MaxPool", "Flatten", "Gemm",
                                                "Tanh", "Gemm", "Softmax"});
  CHECK(m.graph.inputs[0].dims == std::vector<std::int64_t>{-1, 2, 9, 9});
  const auto& c = m.graph.nodes[0];
  CHECK(c.attribute("strides")->ints == std::vector<std::int64_t>{2, 2});
  CHECK(c.attribute("pads")->ints == std::vector<std::int64_t>{1, 1, 1, 1});
  CHECK(c.attribute("kernel_shape")->ints == std::vector<std::int64_t>{3, 3});
  CHECK(m.graph.initializers[0].dims == std::vector<std::int64_t>{3, 2, 3, 3});

  const auto dc = bptest::perturbed<DenseConv>(5);
  check_round_trip(dc);
  const onnx::Model m2 = onnx::parse_model(to_onnx(dc));
  CHECK(op_types(m2) == std::vector<std::string>{"Gemm", "Sigmoid", "Reshape", "Conv", "Tanh",
                                                 "Flatten", "Gemm", "Relu", "Reshape", "Conv",
                                                 "Sigmoid", "Flatten"});
  CHECK(m2.graph.inputs[0].dims == std::vector<std::int64_t>{-1, 5});
  CHECK(m2.graph.outputs[0].dims == std::vector<std::int64_t>{-1, 32});
}

TEST_CASE("ONNX files are written atomically and load from a path", "[onnx]") {
  const auto dir = std::filesystem::temp_directory_path() / "backprop_test_onnx";
  std::filesystem::create_directories(dir);
  const auto path = dir / "conv.onnx";
  const auto net = bptest::perturbed<ConvNet>(6);
  net.save_onnx(path);
  ConvNet back(1);
  back.load_onnx(path);
  CHECK(back == net);
  CHECK_THROWS_AS(net.save_onnx(dir / "missing" / "x.onnx"), std::runtime_error);
  CHECK_THROWS_WITH(back.load_onnx(dir / "absent.onnx"), Contains("absent.onnx"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("ONNX save refuses non-finite parameters", "[onnx]") {
  auto net = bptest::perturbed<Activations<float>>(1);
  net.layer<2>().weights()(1, 1) = std::numeric_limits<float>::quiet_NaN();
  std::ostringstream os;
  CHECK_THROWS_AS(net.save_onnx(os), bp::ValueError);
  CHECK(os.str().empty());
}

TEST_CASE("ONNX load names the node and the layer of an architecture mismatch", "[onnx]") {
  const std::string mlp = to_onnx(bptest::perturbed<Activations<float>>(1));
  const std::string conv = to_onnx(bptest::perturbed<ConvNet>(1));

  ConvNet c(2);
  CHECK_THAT(load_error(c, mlp), Contains("node 'layer0/Gemm' (Gemm) does not match layer 0") &&
                                     Contains("expects a Conv of 3 x 2 x 3 x 3 weights"));
  Activations<float> a(2);
  CHECK_THAT(load_error(a, conv), Contains("node 'layer0/Conv' (Conv) does not match layer 0"));

  // Same sizes, another activation.
  using Other = bp::Network<bp::Dense<6, 5, bp::Sigmoid>, bp::Dense<5, 5, bp::ReLU>,
                            bp::Dense<5, 4, bp::ReLU>, bp::Dense<4, 4, bp::LeakyReLU>,
                            bp::Dense<4, 4, bp::Identity>, bp::Dense<4, 3, bp::Softmax>>;
  Other o(2);
  CHECK_THAT(load_error(o, mlp), Contains("node 'layer1/Tanh' (Tanh) does not match layer 1") &&
                                     Contains("expects a Relu"));
  // Other sizes.
  using Wider = bp::Network<bp::Dense<6, 7, bp::Sigmoid>, bp::Dense<7, 3, bp::Softmax>>;
  Wider w(2);
  CHECK_THAT(load_error(w, mlp),
             Contains("has weights 'layer0.weight' of shape 5 x 6") && Contains("needs 7 x 6"));
  // A layer fewer: the rest of the graph is named.
  using Fewer = bp::Network<bp::Dense<6, 5, bp::Sigmoid>, bp::Dense<5, 5, bp::Tanh>>;
  Fewer f(2);
  CHECK_THAT(load_error(f, mlp), Contains("node 'layer2/Gemm' (Gemm) follows the network's last"));
  // A layer more: the graph ends.
  using More = bp::Network<bp::Dense<6, 5, bp::Sigmoid>, bp::Dense<5, 5, bp::Tanh>,
                           bp::Dense<5, 4, bp::ReLU>, bp::Dense<4, 4, bp::LeakyReLU>,
                           bp::Dense<4, 4, bp::Identity>, bp::Dense<4, 3, bp::Softmax>,
                           bp::Dense<3, 3, bp::Sigmoid>>;
  More more(2);
  CHECK_THAT(load_error(more, mlp), Contains("layer 6 (sigmoid, 3 -> 3) expects a Gemm") &&
                                        Contains("but the graph ends"));
  // Identity where the file has an activation.
  using NoAct = bp::Network<bp::Dense<6, 5, bp::Identity>, bp::Dense<5, 5, bp::Tanh>,
                            bp::Dense<5, 4, bp::ReLU>, bp::Dense<4, 4, bp::LeakyReLU>,
                            bp::Dense<4, 4, bp::Identity>, bp::Dense<4, 3, bp::Softmax>>;
  NoAct n(2);
  CHECK_THAT(load_error(n, mlp), Contains("node 'layer0/Sigmoid' (Sigmoid) follows, but layer 0") &&
                                     Contains("has no activation"));
  // Another leaky slope.
  using Leaky =
      bp::Network<bp::Dense<6, 5, bp::Sigmoid>, bp::Dense<5, 5, bp::Tanh>,
                  bp::Dense<5, 4, bp::ReLU>, bp::Dense<4, 4, bp::BasicLeakyReLU<std::ratio<1, 5>>>,
                  bp::Dense<4, 4, bp::Identity>, bp::Dense<4, 3, bp::Softmax>>;
  Leaky l(2);
  CHECK_THAT(load_error(l, mlp),
             Contains("(LeakyRelu) has alpha 0.01") && Contains("slope is 0.2"));
  // A convolution of another stride / padding.
  using Stride1 =
      bp::Network<bp::Conv2D<2, 9, 9, 3, 3, bp::ReLU, 1, 1>, bp::MaxPool2D<3, 9, 9, 9>,
                  bp::Dropout<3>, bp::DropoutDense<3, 4, bp::Tanh>, bp::Dense<4, 2, bp::Softmax>>;
  Stride1 s(2);
  CHECK_THAT(load_error(s, conv),
             Contains("(Conv) has strides [2, 2]") && Contains("needs [1, 1]"));
}

TEMPLATE_TEST_CASE("An ONNX file truncated at any byte throws and leaves the network unchanged",
                   "[onnx]", float, double) {
  using Net = bp::BasicNetwork<TestType, bp::Conv2D<1, 4, 4, 2, 3, bp::Tanh>,
                               bp::MaxPool2D<2, 2, 2, 2>, bp::Dense<2, 2, bp::Softmax>>;
  const auto net = bptest::perturbed<Net>(7);
  const std::string bytes = to_onnx(net);
  Net other(8);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    INFO("truncated to " << n << " of " << bytes.size() << " bytes");
    const std::string msg = load_error(other, bytes.substr(0, n));
    CHECK_THAT(msg, Contains("ONNX: "));
  }
  // Streams that throw on failure are read to their end all the same.
  std::istringstream is(bytes, std::ios::binary);
  is.exceptions(std::ios::failbit | std::ios::badbit | std::ios::eofbit);
  other.load_onnx(is);
  CHECK(to_onnx(other) == bytes);
}

TEST_CASE("Corrupted ONNX bytes never crash: every byte set to each of 4 values", "[onnx]") {
  using Net = bp::Network<bp::Conv2D<1, 4, 4, 2, 3, bp::Tanh>, bp::MaxPool2D<2, 2, 2, 2>,
                          bp::Dense<2, 2, bp::Softmax>>;
  const auto net = bptest::perturbed<Net>(9);
  const std::string bytes = to_onnx(net);
  std::size_t rejected = 0, loaded = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (const unsigned char v : {0x00, 0x7F, 0x80, 0xFF}) {
      if (static_cast<unsigned char>(bytes[i]) == v) continue;
      std::string bad = bytes;
      bad[i] = static_cast<char>(v);
      Net other(10);
      const Net before = other;
      try {
        from_onnx(other, bad);
        ++loaded;  // e.g. a changed weight: ONNX has no checksum
      } catch (const bp::ModelFormatError&) {
        CHECK(other == before);
        ++rejected;
      }
    }
  }
  CHECK(rejected > loaded);
}

TEST_CASE("ONNX load rejects what is not an ONNX model", "[onnx]") {
  Activations<float> net(1);
  CHECK_THAT(load_error(net, ""), Contains("the file is empty"));
  std::ostringstream bpnn(std::ios::binary);
  net.save(bpnn);
  CHECK_THAT(load_error(net, bpnn.str()), Contains("ONNX: ") && Contains("wire type"));
  CHECK_THAT(load_error(net, "\x08\x08"), Contains("has no graph"));
  // A graph without an opset, and an opset out of range.
  bp::detail::pb::Writer graph, model;
  model.int_field(1, 8);
  model.message(7, graph);
  CHECK_THAT(load_error(net, model.bytes()), Contains("imports no opset"));
  bp::detail::pb::Writer opset;
  opset.bytes_field(1, "");
  opset.int_field(2, 5);
  model.message(8, opset);
  CHECK_THAT(load_error(net, model.bytes()),
             Contains("uses opset 5; backprop reads opsets 9 to 22"));
}

// ---- models exported by PyTorch 1.13 (tests/fixtures/onnx/make_torch_fixtures.py) ----

namespace {

const std::filesystem::path fixtures = std::filesystem::path(BACKPROP_FIXTURE_DIR) / "onnx";

/// The 16 MNIST test images the fixtures' outputs were computed on, one per column.
Eigen::MatrixXf fixture_inputs() {
  std::ifstream is(fixtures / "inputs.f32", std::ios::binary);
  REQUIRE(is);
  Eigen::MatrixXf x(784, 16);  // the file is 16 x 784 row-major: column-major 784 x 16
  is.read(reinterpret_cast<char*>(x.data()), static_cast<std::streamsize>(x.size() * 4));
  REQUIRE(is.gcount() == static_cast<std::streamsize>(x.size() * 4));
  return x;
}

struct Expected {
  Eigen::MatrixXd outputs;  // one column per sample
  std::string output;       // "softmax", "logsoftmax" or "none"
};

Expected fixture_outputs(const std::string& name) {
  std::ifstream is(fixtures / (name + ".expected.txt"));
  REQUIRE(is);
  Expected e;
  std::vector<std::vector<double>> rows;
  std::string line;
  while (std::getline(is, line)) {
    if (line.rfind("# output ", 0) == 0) e.output = line.substr(9);
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    rows.emplace_back();
    double v;
    while (ls >> v) rows.back().push_back(v);
  }
  REQUIRE(rows.size() == 16);
  e.outputs.resize(static_cast<Eigen::Index>(rows[0].size()), 16);
  for (std::size_t j = 0; j < rows.size(); ++j) {
    REQUIRE(rows[j].size() == rows[0].size());
    for (std::size_t i = 0; i < rows[j].size(); ++i) e.outputs(i, j) = rows[j][i];
  }
  return e;
}

/// Loads fixture `name` into Net and returns the largest difference of its outputs from
/// PyTorch's, relative to each sample's largest output (LogSoftmax outputs compared as
/// probabilities).
template <class Net>
double fixture_difference(const std::string& name) {
  Net net(1);
  net.load_onnx(fixtures / (name + ".onnx"));
  const Expected e = fixture_outputs(name);
  Eigen::MatrixXd want = e.outputs;
  if (e.output == "logsoftmax") want = want.array().exp().matrix();
  using S = typename Net::Scalar;
  const Eigen::MatrixXd got =
      net.feedforward(fixture_inputs().template cast<S>().eval()).template cast<double>();
  REQUIRE(got.rows() == want.rows());
  double worst = 0.0;
  for (Eigen::Index j = 0; j < got.cols(); ++j) {
    const double scale = want.col(j).cwiseAbs().maxCoeff();
    worst = std::max(worst, (got.col(j) - want.col(j)).cwiseAbs().maxCoeff() / scale);
  }
  return worst;
}

using TorchMlp = bp::Network<bp::Dense<784, 30, bp::Sigmoid>, bp::Dense<30, 10, bp::Softmax>>;
using TorchCnn = bp::Network<bp::Conv2D<1, 28, 28, 6, 5, bp::ReLU>, bp::MaxPool2D<6, 24, 24, 2>,
                             bp::Conv2D<6, 12, 12, 12, 5, bp::ReLU>, bp::MaxPool2D<12, 8, 8, 2>,
                             bp::Dense<192, 32, bp::ReLU>, bp::Dense<32, 10, bp::Softmax>>;

}  // namespace

TEST_CASE("Models exported by PyTorch load and give PyTorch's outputs", "[onnx][torch]") {
  CHECK(fixture_difference<TorchMlp>("torch_mlp") < 1e-5);
  CHECK(fixture_difference<TorchMlp>("variant_matmul_add") < 1e-5);
  CHECK(fixture_difference<TorchMlp>("variant_constant_nodes") < 1e-5);
  CHECK(fixture_difference<TorchMlp>("variant_gemm_transb0") < 1e-5);
  using ReluTanh = bp::Network<bp::Dense<784, 32, bp::ReLU>, bp::Dense<32, 16, bp::Tanh>,
                               bp::Dense<16, 10, bp::Identity>>;
  CHECK(fixture_difference<ReluTanh>("torch_mlp_relu_tanh_opset11") < 1e-5);
  using Leaky = bp::Network<bp::Dense<784, 20, bp::LeakyReLU>, bp::Dense<20, 10, bp::Identity>>;
  CHECK(fixture_difference<Leaky>("torch_mlp_leaky") < 1e-5);
  CHECK(fixture_difference<TorchCnn>("torch_cnn") < 1e-5);
  CHECK(fixture_difference<TorchCnn>("variant_reshape") < 1e-5);
  using StridePad = bp::Network<bp::Conv2D<1, 28, 28, 4, 3, bp::Sigmoid, 2, 1>,
                                bp::MaxPool2D<4, 14, 14, 2>, bp::Dense<196, 10, bp::Softmax>>;
  CHECK(fixture_difference<StridePad>("torch_cnn_stride_pad") < 1e-5);
  // Batch norm: BatchNorm1d after a Linear (also with the default statistics, which torch
  // writes through Identity nodes), BatchNorm2d after a Conv and ReLU.
  using MlpBn = bp::Network<bp::Dense<784, 30, bp::Identity>, bp::BatchNorm<30, bp::Sigmoid>,
                            bp::Dense<30, 10, bp::Identity>>;
  CHECK(fixture_difference<MlpBn>("torch_mlp_batchnorm") < 1e-5);
  using MlpBnDefault = bp::Network<bp::Dense<784, 16, bp::Identity>, bp::BatchNorm<16, bp::ReLU>,
                                   bp::Dense<16, 10, bp::Softmax>>;
  CHECK(fixture_difference<MlpBnDefault>("torch_mlp_batchnorm_default") < 1e-5);
  using CnnBn = bp::Network<bp::Conv2D<1, 28, 28, 4, 3, bp::ReLU>, bp::BatchNorm2D<4, 26, 26>,
                            bp::MaxPool2D<4, 26, 26, 2>, bp::Dense<676, 10, bp::Softmax>>;
  CHECK(fixture_difference<CnnBn>("torch_cnn_batchnorm") < 1e-5);
  // Also as double networks.
  using TorchCnnD =
      bp::BasicNetwork<double, bp::Conv2D<1, 28, 28, 6, 5, bp::ReLU>, bp::MaxPool2D<6, 24, 24, 2>,
                       bp::Conv2D<6, 12, 12, 12, 5, bp::ReLU>, bp::MaxPool2D<12, 8, 8, 2>,
                       bp::Dense<192, 32, bp::ReLU>, bp::Dense<32, 10, bp::Softmax>>;
  CHECK(fixture_difference<TorchCnnD>("torch_cnn") < 1e-5);
}

TEST_CASE("PyTorch models go ONNX -> backprop -> ONNX -> backprop unchanged", "[onnx][torch]") {
  TorchCnn a(1);
  a.load_onnx(fixtures / "torch_cnn.onnx");
  TorchCnn b(2);
  from_onnx(b, to_onnx(a));
  CHECK(b == a);
  TorchMlp m(1);
  m.load_onnx(fixtures / "variant_matmul_add.onnx");
  TorchMlp g(1);
  g.load_onnx(fixtures / "torch_mlp.onnx");
  CHECK(m == g);  // MatMul + Add and Gemm: the same parameters
}

TEST_CASE("PyTorch models backprop cannot read are rejected naming the node", "[onnx][torch]") {
  const auto reject = [](auto net, const std::string& name) {
    std::ifstream is(fixtures / (name + ".reject.txt"));
    std::string node, op, why;
    is >> node >> op >> why;
    REQUIRE(!op.empty());
    INFO(name);
    const auto before = net;
    try {
      net.load_onnx(fixtures / (name + ".onnx"));
      FAIL("no exception");
    } catch (const bp::ModelFormatError& e) {
      CHECK_THAT(e.what(), Contains("node '" + node + "' (" + op + ")"));
      CHECK(net == before);
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(reject(bp::Network<bp::Conv2D<1, 28, 28, 4, 3, bp::Identity>,
                                bp::Dense<4 * 26 * 26, 10, bp::Identity>>(1),
                    "reject_dilation"),
             Contains("dilations [2, 2]"));
  CHECK_THAT(reject(bp::Network<bp::Conv2D<2, 8, 8, 4, 3, bp::Identity>,
                                bp::Dense<4 * 6 * 6, 10, bp::Identity>>(1),
                    "reject_groups"),
             Contains("group = 2"));
  using Pool = bp::Network<bp::Conv2D<1, 28, 28, 4, 5, bp::ReLU>, bp::MaxPool2D<4, 24, 24, 2>,
                           bp::Dense<576, 10, bp::Identity>>;
  CHECK_THAT(reject(Pool(1), "reject_avgpool"), Contains("an operator backprop does not read"));
  CHECK_THAT(reject(Pool(1), "reject_avgpool_nopad"),
             Contains("an operator backprop does not read") && Contains("expects a MaxPool"));
  CHECK_THAT(reject(bp::Network<bp::Dense<16, 16, bp::ReLU>, bp::Dense<16, 4, bp::Identity>>(1),
                    "reject_residual"),
             Contains("no branches or skip connections"));
}

// ---- DynamicNetwork: the architecture read from the file ----

namespace {

template <class Net, class Scalar = typename Net::Scalar>
void check_dynamic(const Net& net, const std::vector<int>& input_shape) {
  const auto x =
      bptest::random_matrix<Scalar>(Net::template LayerDescriptor<0>::inputs, 7, 5, 0.0, 1.0);
  const auto want = net.feedforward(x);
  std::ostringstream bin(std::ios::binary), onx(std::ios::binary);
  net.save(bin);
  net.save_onnx(onx);
  for (const std::string& bytes : {bin.str(), onx.str()}) {
    std::istringstream is(bytes, std::ios::binary);
    const auto dyn = bp::DynamicNetwork<Scalar>::load(is);
    INFO(dyn.summary());
    CHECK(dyn.layers().size() <= Net::num_layers);
    CHECK(dyn.inputs() == x.rows());
    CHECK(dyn.input_shape() == input_shape);
    const double tol = std::is_same_v<Scalar, float> || bytes == onx.str() ? 1e-5 : 1e-12;
    CHECK(bptest::relative_difference(dyn.feedforward(x), want) < tol);
    for (Eigen::Index j = 0; j < x.cols(); ++j) {  // one sample at a time
      CHECK(bptest::relative_difference(dyn.feedforward(x.col(j)), want.col(j)) < tol);
    }
    // And written again as ONNX: the compiled network reads it.
    std::ostringstream again(std::ios::binary);
    dyn.save_onnx(again);
    Net back(99);
    from_onnx(back, again.str());
    CHECK(bptest::relative_difference(back.feedforward(x), want) < 1e-5);
  }
}

}  // namespace

TEST_CASE("DynamicNetwork reads binary and ONNX models of any built-in architecture",
          "[onnx][dynamic]") {
  check_dynamic(bptest::perturbed<Activations<float>>(11), {6});
  check_dynamic(bptest::perturbed<Activations<double>>(12), {6});
  check_dynamic(bptest::perturbed<ConvNet>(13), {2, 9, 9});
  check_dynamic(bptest::perturbed<DenseConv>(14), {5});
  using Chapter6 =
      bp::Network<bp::Conv2D<1, 28, 28, 20, 5, bp::ReLU>, bp::MaxPool2D<20, 24, 24, 2>,
                  bp::Conv2D<20, 12, 12, 40, 5, bp::ReLU>, bp::MaxPool2D<40, 8, 8, 2>,
                  bp::Dense<640, 100, bp::ReLU>, bp::Dropout<100>, bp::Dense<100, 10, bp::Softmax>>;
  check_dynamic(bp::Network<bp::Dense<784, 30>, bp::Dense<30, 10>>(15), {784});
  check_dynamic(Chapter6(16, bp::Init::he), {1, 28, 28});
}

TEST_CASE("ONNX round-trips BatchNorm layers with their running statistics", "[onnx][batchnorm]") {
  using Net =
      bp::Network<bp::Conv2D<1, 6, 6, 2, 3, bp::Identity>, bp::BatchNorm2D<2, 4, 4, bp::ReLU>,
                  bp::MaxPool2D<2, 4, 4, 2>, bp::Dense<8, 5, bp::Identity>,
                  bp::BatchNorm<5, bp::Tanh>, bp::Dense<5, 3, bp::Softmax>>;
  auto net = bptest::perturbed<Net>(31);
  const auto x = bptest::random_matrix<float>(36, 12, 32);
  const auto y = bptest::random_distribution<float>(3, 12, 33);
  net.update_mini_batch<bp::LogLikelihoodCost>(x, y, 0.1f);  // running statistics not 0 / 1
  REQUIRE_FALSE(net.layer<1>().running_mean().isZero());
  check_round_trip(net);
  const onnx::Model m = onnx::parse_model(to_onnx(net));
  CHECK(op_types(m) == std::vector<std::string>{"Conv", "BatchNormalization", "Relu", "MaxPool",
                                                "Flatten", "Gemm", "BatchNormalization", "Tanh",
                                                "Gemm", "Softmax"});
  const auto* eps = m.graph.nodes[1].attribute("epsilon");
  REQUIRE(eps != nullptr);
  CHECK(eps->f == 1e-5f);
  check_dynamic(net, {1, 6, 6});
  // Another epsilon is another layer.
  using OtherEps = bp::Network<bp::Conv2D<1, 6, 6, 2, 3, bp::Identity>,
                               bp::BatchNorm2D<2, 4, 4, bp::ReLU, std::ratio<1, 1000>>,
                               bp::MaxPool2D<2, 4, 4, 2>, bp::Dense<8, 5, bp::Identity>,
                               bp::BatchNorm<5, bp::Tanh>, bp::Dense<5, 3, bp::Softmax>>;
  OtherEps o(1);
  CHECK_THAT(load_error(o, to_onnx(net)), Contains("(BatchNormalization) has epsilon 0.000010"));
}

TEST_CASE("DynamicNetwork reads PyTorch's models", "[onnx][dynamic][torch]") {
  const auto dyn = bp::DynamicNetwork<float>::load(fixtures / "torch_cnn.onnx");
  CHECK(dyn.summary() ==
        "layer 0: conv2d 1x28x28 -> 6x24x24, k5 s1 p0, relu\n"
        "layer 1: maxpool2d 6x24x24 -> 6x12x12, 2x2\n"
        "layer 2: conv2d 6x12x12 -> 12x8x8, k5 s1 p0, relu\n"
        "layer 3: maxpool2d 12x8x8 -> 12x4x4, 2x2\n"
        "layer 4: dense 192 -> 32, relu\n"
        "layer 5: dense 32 -> 10, softmax\n");
  TorchCnn net(1);
  net.load_onnx(fixtures / "torch_cnn.onnx");
  const Eigen::MatrixXf x = fixture_inputs();
  CHECK(bptest::relative_difference(dyn.feedforward(x), net.feedforward(x)) < 1e-6);
  const Eigen::MatrixXf out = net.feedforward(x);
  Eigen::VectorXi labels(out.cols());
  for (Eigen::Index j = 0; j < out.cols(); ++j) out.col(j).maxCoeff(&labels(j));
  CHECK(dyn.predict(x) == labels);
  const auto leaky = bp::DynamicNetwork<float>::load(fixtures / "torch_mlp_leaky.onnx");
  CHECK(leaky.layers()[0].act == bp::DynamicNetwork<float>::Act::leaky_relu);
  CHECK(leaky.layers()[0].slope == Approx(0.01).epsilon(1e-6));
  CHECK_THROWS_WITH(
      bp::DynamicNetwork<float>::load(fixtures / "reject_avgpool_nopad.onnx"),
      Contains("node '/2/AveragePool' (AveragePool) is an operator backprop does not read"));
}

TEST_CASE("DynamicNetwork rejects truncated, corrupted and user-layer binary files",
          "[onnx][dynamic]") {
  std::ostringstream os(std::ios::binary);
  bptest::perturbed<ConvNet>(17).save(os);
  const std::string bytes = os.str();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    std::istringstream is(bytes.substr(0, n), std::ios::binary);
    CHECK_THROWS_AS(bp::DynamicNetwork<float>::load(is), bp::ModelFormatError);
  }
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    std::istringstream is(bad, std::ios::binary);
    CHECK_THROWS_AS(bp::DynamicNetwork<float>::load(is), bp::ModelFormatError);
  }
  std::string renamed = bytes;
  const auto at = renamed.find("dropout");
  REQUIRE(at != std::string::npos);
  renamed.replace(at, 7, "scaleme");
  std::istringstream is(renamed, std::ios::binary);
  CHECK_THROWS_WITH(bp::DynamicNetwork<float>::load(is),
                    Contains("'scaleme', which is not a built-in"));
}

TEST_CASE("The protobuf reader takes packed and unpacked numbers and rejects bad lengths",
          "[onnx]") {
  namespace pb = bp::detail::pb;
  const auto tensor = [](const pb::Writer& w) {
    pb::Reader r(w.bytes(), "TensorProto");
    onnx::Tensor t;
    onnx::parse_tensor(r, t);
    return t;
  };
  pb::Writer packed;  // dims [3], FLOAT, float_data packed
  packed.packed_ints(1, std::vector<std::int64_t>{3});
  packed.int_field(2, onnx::float32);
  pb::Writer floats;
  for (const float f : {1.5f, -2.0f, 0.25f}) floats.append_float_le(f);
  packed.bytes_field(4, floats.bytes());
  CHECK(tensor(packed).values() == std::vector<double>{1.5, -2.0, 0.25});

  pb::Writer unpacked;  // dims [2] one per field, FLOAT, float_data one per field
  unpacked.int_field(1, 2);
  unpacked.int_field(2, onnx::float32);
  unpacked.float_field(4, 3.0f);
  unpacked.float_field(4, -1.0f);
  CHECK(tensor(unpacked).values() == std::vector<double>{3.0, -1.0});

  pb::Writer doubles;  // DOUBLE, double_data packed
  doubles.int_field(1, 2);
  doubles.int_field(2, onnx::float64);
  std::string raw;
  for (const double v : {0.1, -7.0}) {
    std::uint64_t u;
    std::memcpy(&u, &v, 8);
    for (int b = 0; b < 8; ++b) raw.push_back(static_cast<char>((u >> (8 * b)) & 0xFF));
  }
  doubles.bytes_field(10, raw);
  CHECK(tensor(doubles).values() == std::vector<double>{0.1, -7.0});

  pb::Writer wrong;  // 5 bytes of packed floats; then a count that does not fit the dims
  wrong.bytes_field(4, std::string(5, '\0'));
  CHECK_THROWS_WITH(tensor(wrong), Contains("5 bytes, not a multiple of 4"));
  unpacked.float_field(4, 9.0f);
  CHECK_THROWS_WITH(tensor(unpacked).values(), Contains("has 3 values; its shape needs 2"));
  pb::Writer group;
  group.key(3, static_cast<pb::Wire>(3));
  CHECK_THROWS_WITH(tensor(group), Contains("a group, not used by ONNX"));
  pb::Writer endless;
  endless.key(8, pb::Wire::bytes);
  endless.varint(1000);
  CHECK_THROWS_WITH(tensor(endless), Contains("claims 1000 bytes, but only 0 are left"));
}
