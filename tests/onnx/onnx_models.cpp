// Writes the models that ONNX Runtime (tests/onnx/ort_check.js) and the ONNX checker
// (tests/onnx/onnx_check.py) then run: every built-in layer and activation, briefly trained
// on real MNIST, each with its inputs (MNIST test images) and backprop's `feedforward`
// outputs; and the PyTorch fixtures (tests/fixtures/onnx) after ONNX -> backprop -> ONNX,
// with PyTorch's outputs as the expected ones. Also checks that the PyTorch models trained
// on MNIST keep their test accuracy once imported.
//
// Usage: onnx_models OUT_DIR MNIST_DIR FIXTURE_DIR
#include <backprop/backprop.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace bp = backprop;
namespace fs = std::filesystem;

namespace {

fs::path out_dir;

void write_f32(const fs::path& path, const Eigen::MatrixXf& columns) {
  // Columns are samples: column-major storage is exactly row-major [N, features].
  std::ofstream os(path, std::ios::binary);
  os.write(reinterpret_cast<const char*>(columns.data()),
           static_cast<std::streamsize>(columns.size() * sizeof(float)));
  if (!os) throw std::runtime_error("cannot write " + path.string());
}

/// name.onnx, name.input.f32, name.expected.f32 and the sidecar name.json.
void write_case(const std::string& name, const std::vector<long>& sample_shape,
                const Eigen::MatrixXf& inputs, const Eigen::MatrixXf& expected) {
  write_f32(out_dir / (name + ".input.f32"), inputs);
  write_f32(out_dir / (name + ".expected.f32"), expected);
  std::ostringstream shape;
  shape << "[" << inputs.cols();
  for (const long d : sample_shape) shape << ", " << d;
  shape << "]";
  std::ofstream js(out_dir / (name + ".json"));
  js << "{\"model\": \"" << name << ".onnx\", \"input\": \"" << name
     << ".input.f32\", \"input_shape\": " << shape.str() << ", \"expected\": \"" << name
     << ".expected.f32\", \"output_shape\": [" << expected.cols() << ", " << expected.rows()
     << "], \"tolerance\": 1e-5}\n";
  if (!js) throw std::runtime_error("cannot write the sidecar of " + name);
}

template <bool Train = true, class Net>
void export_case(const std::string& name, Net& net, const bp::MnistData<float>& mnist,
                 const std::vector<long>& sample_shape, double eta = 0.05) {
  if constexpr (Train) {
    // One short epoch, so that the outputs are a trained network's, not noise.
    net.template sgd<bp::LogLikelihoodCost>(
        mnist.train.slice(0, 2000),
        {.epochs = 1, .mini_batch_size = 10, .eta = eta, .on_epoch = bp::quiet});
  }
  net.save_onnx(out_dir / (name + ".onnx"));
  const Eigen::MatrixXf x = mnist.test.inputs.leftCols(256);
  const Eigen::MatrixXf y = net.feedforward(x);
  write_case(name, sample_shape, x, y);
  std::cout << name << ": exported";
  if constexpr (Net::template LayerDescriptor<Net::num_layers - 1>::outputs == 10) {
    std::cout << ", test accuracy " << net.evaluate(mnist.test.inputs, mnist.test.labels)
              << " of 10000";
  }
  std::cout << "\n";
}

/// Reads tests/fixtures/onnx/NAME.expected.txt: PyTorch's outputs (one line per sample)
/// and the recorded accuracy, if any.
struct TorchExpected {
  Eigen::MatrixXf outputs;
  std::string output;
  long correct = -1;
};

TorchExpected read_expected(const fs::path& path) {
  std::ifstream is(path);
  if (!is) throw std::runtime_error("cannot read " + path.string());
  TorchExpected e;
  std::vector<std::vector<float>> rows;
  std::string line;
  while (std::getline(is, line)) {
    if (line.rfind("# output ", 0) == 0) e.output = line.substr(9);
    if (const auto p = line.find(" (");
        line.rfind("# mnist test accuracy", 0) == 0 && p != line.npos) {
      e.correct = std::stol(line.substr(p + 2));
    }
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    rows.emplace_back();
    float v;
    while (ls >> v) rows.back().push_back(v);
  }
  e.outputs.resize(static_cast<Eigen::Index>(rows.at(0).size()),
                   static_cast<Eigen::Index>(rows.size()));
  for (std::size_t j = 0; j < rows.size(); ++j) {
    for (std::size_t i = 0; i < rows[j].size(); ++i) e.outputs(i, j) = rows[j][i];
  }
  if (e.output == "logsoftmax") e.outputs = e.outputs.array().exp().matrix();
  return e;
}

template <class Net>
bool torch_case(const std::string& name, const fs::path& fixtures,
                const bp::MnistData<float>& mnist, const std::vector<long>& sample_shape) {
  Net net(1);
  net.load_onnx(fixtures / (name + ".onnx"));
  const TorchExpected e = read_expected(fixtures / (name + ".expected.txt"));
  Eigen::MatrixXf x(784, e.outputs.cols());
  std::ifstream is(fixtures / "inputs.f32", std::ios::binary);
  is.read(reinterpret_cast<char*>(x.data()), static_cast<std::streamsize>(x.size() * 4));
  if (!is) throw std::runtime_error("cannot read inputs.f32");
  // The round trip: backprop writes the imported model; ONNX Runtime must give
  // PyTorch's outputs.
  net.save_onnx(out_dir / ("roundtrip_" + name + ".onnx"));
  write_case("roundtrip_" + name, sample_shape, x, e.outputs);
  bool ok = true;
  if (e.correct >= 0) {
    const long correct = net.evaluate(mnist.test.inputs, mnist.test.labels);
    // Float sums in another order may move a sample that sits on a decision boundary.
    ok = std::abs(correct - e.correct) <= 2;
    std::cout << name << ": imported, test accuracy " << correct << " of 10000 (PyTorch "
              << e.correct << ")" << (ok ? "" : "  <- differs") << "\n";
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: onnx_models OUT_DIR MNIST_DIR FIXTURE_DIR\n";
    return 2;
  }
  try {
    out_dir = argv[1];
    fs::remove_all(out_dir);
    fs::create_directories(out_dir);
    const auto mnist = bp::load_mnist<float>(argv[2]);
    const fs::path fixtures = argv[3];
    const std::vector<long> flat{784}, image{1, 28, 28};

    bp::Network<bp::Dense<784, 30, bp::Sigmoid>, bp::Dense<30, 10, bp::Softmax>> mlp(1);
    export_case("mlp_sigmoid_softmax", mlp, mnist, flat, 0.5);
    bp::Network<bp::Dense<784, 64, bp::ReLU>, bp::Dense<64, 32, bp::Tanh>,
                bp::Dense<32, 16, bp::LeakyReLU>, bp::Dense<16, 10, bp::Identity>>
        acts(2, bp::Init::xavier);
    export_case<false>("mlp_relu_tanh_leaky_identity", acts, mnist, flat);
    bp::Network<bp::DropoutDense<784, 100, bp::ReLU>, bp::Dense<100, 10, bp::Softmax>> drop(
        3, bp::Init::he);
    export_case("mlp_dropout", drop, mnist, flat);
    // The book's chapter-6 network (W7).
    bp::Network<bp::Conv2D<1, 28, 28, 20, 5, bp::ReLU>, bp::MaxPool2D<20, 24, 24, 2>,
                bp::Conv2D<20, 12, 12, 40, 5, bp::ReLU>, bp::MaxPool2D<40, 8, 8, 2>,
                bp::Dense<640, 100, bp::ReLU>, bp::Dropout<100>, bp::Dense<100, 10, bp::Softmax>>
        ch6(4, bp::Init::he);
    export_case("conv_chapter6", ch6, mnist, image);
    bp::Network<bp::Conv2D<1, 28, 28, 8, 3, bp::Sigmoid, 2, 1>, bp::MaxPool2D<8, 14, 14, 2>,
                bp::Dense<392, 10, bp::Softmax>>
        strided(5, bp::Init::xavier);
    export_case("conv_stride_pad", strided, mnist, image, 0.5);
    // Dense into a convolution (a Reshape), a convolution as the output (a Flatten).
    bp::Network<bp::Dense<784, 144, bp::ReLU>, bp::Conv2D<1, 12, 12, 4, 3, bp::Tanh>,
                bp::Dense<400, 36, bp::Sigmoid>, bp::Conv2D<1, 6, 6, 3, 3, bp::Sigmoid, 1, 1>>
        reshaped(6, bp::Init::xavier);
    export_case<false>("dense_conv_reshape", reshaped, mnist, flat);
    // Batch norm after a convolution and after a dense layer (trained: running statistics).
    bp::Network<bp::Conv2D<1, 28, 28, 8, 5, bp::Identity>, bp::BatchNorm2D<8, 24, 24, bp::ReLU>,
                bp::MaxPool2D<8, 24, 24, 2>, bp::Dense<1152, 32, bp::Identity>,
                bp::BatchNorm<32, bp::ReLU>, bp::Dense<32, 10, bp::Softmax>>
        bn(8, bp::Init::he);
    export_case("conv_batchnorm", bn, mnist, image);
    // A double network: written as float.
    bp::BasicNetwork<double, bp::Dense<784, 20, bp::Tanh>, bp::Dense<20, 10, bp::Softmax>> dbl(7);
    dbl.save_onnx(out_dir / "mlp_double.onnx");
    {
      const Eigen::MatrixXf x = mnist.test.inputs.leftCols(256);
      const Eigen::MatrixXf y = dbl.feedforward(x.cast<double>().eval()).cast<float>();
      write_case("mlp_double", flat, x, y);
      std::cout << "mlp_double: exported\n";
    }

    using TorchMlp = bp::Network<bp::Dense<784, 30, bp::Sigmoid>, bp::Dense<30, 10, bp::Softmax>>;
    using TorchCnn = bp::Network<bp::Conv2D<1, 28, 28, 6, 5, bp::ReLU>, bp::MaxPool2D<6, 24, 24, 2>,
                                 bp::Conv2D<6, 12, 12, 12, 5, bp::ReLU>, bp::MaxPool2D<12, 8, 8, 2>,
                                 bp::Dense<192, 32, bp::ReLU>, bp::Dense<32, 10, bp::Softmax>>;
    bool ok = torch_case<TorchMlp>("torch_mlp", fixtures, mnist, flat);
    ok = torch_case<TorchMlp>("variant_matmul_add", fixtures, mnist, flat) && ok;
    ok = torch_case<TorchCnn>("torch_cnn", fixtures, mnist, image) && ok;
    ok = torch_case<TorchCnn>("variant_reshape", fixtures, mnist, image) && ok;
    using TorchCnnBn =
        bp::Network<bp::Conv2D<1, 28, 28, 4, 3, bp::ReLU>, bp::BatchNorm2D<4, 26, 26>,
                    bp::MaxPool2D<4, 26, 26, 2>, bp::Dense<676, 10, bp::Softmax>>;
    ok = torch_case<TorchCnnBn>("torch_cnn_batchnorm", fixtures, mnist, image) && ok;
    using TorchMlpBn = bp::Network<bp::Dense<784, 30, bp::Identity>, bp::BatchNorm<30, bp::Sigmoid>,
                                   bp::Dense<30, 10, bp::Identity>>;
    ok = torch_case<TorchMlpBn>("torch_mlp_batchnorm", fixtures, mnist, flat) && ok;
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
