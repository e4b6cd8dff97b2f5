// Chapter 6 of the book, "Deep learning": network3.py's convolutional networks in C++.
// Each preset trains on the book's 50,000 training images (or the 250,000 of the
// data expanded by one-pixel shifts), prints the validation and test accuracy after
// every epoch and, as the book reports, the test accuracy at the best validation epoch.
// Run with --help for the presets and knobs.
//
// How network3.py maps onto backprop:
// - ConvPoolLayer is a Conv2D followed by a MaxPool2D. network3 applies the activation
//   after pooling, sigma(pool(conv) + b); sigmoid and ReLU are increasing, so that
//   equals pool(sigma(conv + b)), which is what Conv2D then MaxPool2D computes.
// - Initialisation as network3: weights N(0, 1/n_out) (for a conv-pool layer
//   n_out = filters * 5 * 5 / 4), biases N(0, 1), the softmax layer zero.
// - L2: network3 adds 0.5 lmbda ||w||^2 / num_training_batches to the mean cost of a
//   mini-batch, so each step subtracts eta lmbda / num_batches * w. backprop's sgd
//   subtracts eta lambda / n * w, so lambda = lmbda * n / num_batches = lmbda *
//   mini_batch_size: the book's lmbda 0.1 with mini-batches of 10 is lambda 1.0 here.
// - Dropout: network3 drops the inputs of each fully connected and softmax layer and
//   scales the weights by 1 - p at inference; backprop drops the same values with
//   inverted dropout (scaled by 1 / (1 - p) in training, nothing at inference), which
//   has the same expectation: Dropout<640> before the first dense layer, DropoutDense
//   for the other two.
#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <backprop/backprop.hpp>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <memory>
#include <ratio>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace bp = backprop;

namespace {

struct Preset {
  std::string name, description;
  double book = 0.0;  // the book's test accuracy (at the best validation epoch), in %
  int epochs = 60;
  double eta = 0.1;
  double lmbda = 0.0;  // network3's L2 strength
  bool expanded = false;
  int ensemble = 1;
};

const Preset presets[] = {
    {"ch6-dense", "Dense 784-100 sigmoid + softmax 10, log-likelihood", 97.80, 60, 0.1, 0.0},
    {"ch6-conv1", "conv 20@5x5 + pool 2, Dense 2880-100, sigmoid; softmax 10", 98.78, 60, 0.1, 0.0},
    {"ch6-conv2", "2 x (conv 5x5 + pool 2): 20 then 40 maps, Dense 640-100, sigmoid; softmax 10",
     99.06, 60, 0.1, 0.0},
    {"ch6-relu", "ch6-conv2 with ReLU, L2 lmbda 0.1", 99.23, 60, 0.03, 0.1},
    {"ch6-expanded", "ch6-relu on the data expanded by one-pixel shifts (250,000 images)", 99.37,
     60, 0.03, 0.1, true},
    {"ch6-dropout",
     "2 conv-pool ReLU, Dense 640-1000-1000 ReLU, dropout 0.5 on the dense inputs; expanded data",
     99.60, 40, 0.03, 0.0, true},
    {"ch6-ensemble", "majority vote of 5 ch6-dropout networks", 99.67, 40, 0.03, 0.0, true, 5},
};

struct Config {
  const Preset* preset = nullptr;
  std::string data_dir;
  int epochs = -1;
  double eta = -1.0;
  std::uint64_t seed = 1;
  long long limit = 0;
  int threads = 1;
  double min_accuracy = 0.0;
  std::string filters, maps;  // PNG paths of the pictures
};

void usage(const char* argv0) {
  std::cout << "usage: " << argv0 << " --preset NAME [options]\n\npresets (network3.py, "
            << "mini-batch 10; the book's test accuracy):\n";
  for (const auto& p : presets) {
    std::cout << "  " << std::left << std::setw(14) << p.name << p.description << "\n"
              << std::setw(16) << "" << p.epochs << " epochs, eta " << p.eta << ", lmbda "
              << p.lmbda << "; book " << p.book << "%\n";
  }
  std::cout
      << "\noptions:\n"
      << "  --data DIR         MNIST folder [$BACKPROP_DATA_DIR/mnist, else .cache/data/mnist]\n"
      << "  --epochs N         override the preset's epochs (smoke runs)\n"
      << "  --eta X            override the preset's learning rate\n"
      << "  --seed S           initialisation, shuffling and dropout seed   [1]\n"
      << "  --limit N          train on the first N images only (smoke runs)\n"
      << "  --threads N        Eigen threads for the products   [1]\n"
      << "  --min-accuracy X   exit 1 if the reported test accuracy is below X\n"
      << "  --filters PATH     write the first conv layer's filters as a PNG grid\n"
      << "  --maps PATH        write its feature maps of the first test digit (PNG)\n";
}

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(argv[0]);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + arg);
    const std::string v = argv[++i];
    if (arg == "--preset") {
      for (const auto& p : presets) {
        if (p.name == v) c.preset = &p;
      }
      if (c.preset == nullptr) throw std::invalid_argument("unknown preset " + v + " (see --help)");
    } else if (arg == "--data") {
      c.data_dir = v;
    } else if (arg == "--epochs") {
      c.epochs = std::stoi(v);
    } else if (arg == "--eta") {
      c.eta = std::stod(v);
    } else if (arg == "--seed") {
      c.seed = std::stoull(v);
    } else if (arg == "--limit") {
      c.limit = std::stoll(v);
    } else if (arg == "--threads") {
      c.threads = std::stoi(v);
    } else if (arg == "--min-accuracy") {
      c.min_accuracy = std::stod(v);
    } else if (arg == "--filters") {
      c.filters = v;
    } else if (arg == "--maps") {
      c.maps = v;
    } else {
      throw std::invalid_argument("unknown option " + arg + " (see --help)");
    }
  }
  if (c.preset == nullptr) throw std::invalid_argument("--preset NAME is required (see --help)");
  if (c.data_dir.empty()) {
    const char* env = std::getenv("BACKPROP_DATA_DIR");
    c.data_dir = (env ? std::string(env) : std::string(".cache/data")) + "/mnist";
  }
  return c;
}

double percent(long long correct, Eigen::Index total) {
  return 100.0 * static_cast<double>(correct) / static_cast<double>(total);
}

/// network3's initialisation (see the top of the file).
template <class Net>
void network3_init(Net& net, std::uint64_t seed) {
  bp::Rng rng(seed);
  bp::detail::for_each_index<Net::num_layers>([&](auto i) {
    auto& l = net.template layer<i>();
    if (l.weights().size() == 0) return;
    using L = std::remove_cvref_t<decltype(l)>;
    if constexpr (decltype(i)::value + 1 == Net::num_layers) {  // the softmax layer
      l.weights().setZero();
      l.biases().setZero();
    } else {
      double n_out = static_cast<double>(L::weight_rows);
      if constexpr (requires { L::kernel; }) {  // a conv layer, followed by a 2 x 2 pool
        n_out = static_cast<double>(L::out_channels) * L::kernel * L::kernel / 4.0;
      }
      const double sd = 1.0 / std::sqrt(n_out);
      for (Eigen::Index r = 0; r < l.weights().rows(); ++r) {
        for (Eigen::Index c = 0; c < l.weights().cols(); ++c) {
          l.weights()(r, c) = static_cast<float>(rng.normal() * sd);
        }
      }
      for (Eigen::Index r = 0; r < l.biases().size(); ++r) {
        l.biases()(r) = static_cast<float>(rng.normal());
      }
    }
  });
}

template <class Act>
using Conv1 = bp::Network<bp::Conv2D<1, 28, 28, 20, 5, Act>, bp::MaxPool2D<20, 24, 24, 2>,
                          bp::Dense<2880, 100, Act>, bp::Dense<100, 10, bp::Softmax>>;
template <class Act>
using Conv2 = bp::Network<bp::Conv2D<1, 28, 28, 20, 5, Act>, bp::MaxPool2D<20, 24, 24, 2>,
                          bp::Conv2D<20, 12, 12, 40, 5, Act>, bp::MaxPool2D<40, 8, 8, 2>,
                          bp::Dense<640, 100, Act>, bp::Dense<100, 10, bp::Softmax>>;
using Half = std::ratio<1, 2>;
using DropoutNet =
    bp::Network<bp::Conv2D<1, 28, 28, 20, 5, bp::ReLU>, bp::MaxPool2D<20, 24, 24, 2>,
                bp::Conv2D<20, 12, 12, 40, 5, bp::ReLU>, bp::MaxPool2D<40, 8, 8, 2>,
                bp::Dropout<640, Half>, bp::DropoutDense<640, 1000, bp::ReLU, Half>,
                bp::DropoutDense<1000, 1000, bp::ReLU, Half>, bp::Dense<1000, 10, bp::Softmax>>;
using DenseNet = bp::Network<bp::Dense<784, 100, bp::Sigmoid>, bp::Dense<100, 10, bp::Softmax>>;

struct Result {
  double best_validation = 0.0, test_at_best = 0.0;
  int best_epoch = 0;
  Eigen::MatrixXf test_outputs;  // at the best validation epoch (for the ensemble)
};

template <class Net>
Result train(const Config& c, const bp::BookSplit<float>& data, const bp::Dataset<float>& training,
             std::uint64_t seed) {
  const Preset& p = *c.preset;
  auto net = std::make_unique<Net>(seed);
  network3_init(*net, seed);
  const int epochs = c.epochs >= 0 ? c.epochs : p.epochs;
  const double eta = c.eta > 0 ? c.eta : p.eta;
  const double lambda = p.lmbda * 10.0;  // see the top of the file
  std::cout << "preset " << p.name << ": " << p.description << "\n"
            << epochs << " epochs, mini-batch 10, eta " << eta << ", lambda " << lambda
            << " (network3's lmbda " << p.lmbda << "), seed " << seed << "; training on "
            << training.size() << " images, " << Net::parameter_count() << " parameters\n";
  Result r;
  bp::SgdOptions options{.epochs = epochs,
                         .mini_batch_size = 10,
                         .eta = eta,
                         .lambda = lambda,
                         .on_epoch = [&](const bp::EpochReport& e) {
                           const double val = percent(e.evaluation_correct, e.evaluation_total);
                           const double test = percent(
                               net->evaluate(data.test.inputs, data.test.labels), data.test.size());
                           if (val > r.best_validation) {
                             r.best_validation = val;
                             r.test_at_best = test;
                             r.best_epoch = e.epoch;
                             r.test_outputs = net->feedforward(data.test.inputs);
                           }
                           std::cout << "Epoch " << std::setw(2) << e.epoch << "  validation "
                                     << std::fixed << std::setprecision(2) << val << "%  test "
                                     << test << "%  (" << e.seconds << " s)\n"
                                     << std::defaultfloat << std::flush;
                         }};
  const auto start = std::chrono::steady_clock::now();
  net->template sgd<bp::LogLikelihoodCost>(training, options, &data.validation);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  using First = typename Net::template LayerParameters<0>;
  if constexpr (requires { First::kernel; }) {
    // The book's picture of the learned filters, and what they make of one digit.
    const auto& conv = net->template layer<0>();
    if (!c.filters.empty()) {
      bp::write_weight_tiles(conv.weights(), First::kernel, First::kernel, c.filters, 8);
      std::cout << "wrote " << c.filters << " (" << First::out_channels << " filters of "
                << First::kernel << "x" << First::kernel << ")\n";
    }
    if (!c.maps.empty()) {
      Eigen::MatrixXf maps;
      conv.forward(data.test.inputs.col(0), maps);
      constexpr int area = First::out_height * First::out_width;
      const Eigen::MatrixXf rows =
          Eigen::Map<const Eigen::MatrixXf>(maps.data(), area, First::out_channels).transpose();
      bp::write_weight_tiles(rows, First::out_height, First::out_width, c.maps, 3);
      std::cout << "wrote " << c.maps << " (feature maps of a test digit " << data.test.labels(0)
                << ")\n";
    }
  }
  std::cout << std::fixed << std::setprecision(2) << "best validation accuracy "
            << r.best_validation << "% (epoch " << r.best_epoch << "), test accuracy "
            << r.test_at_best << "% at that epoch; " << seconds << " s\n"
            << std::defaultfloat;
  return r;
}

template <class Net>
int report(const Config& c, const bp::BookSplit<float>& data, const bp::Dataset<float>& training) {
  const Preset& p = *c.preset;
  double accuracy = 0.0;
  if (p.ensemble == 1) {
    accuracy = train<Net>(c, data, training, c.seed).test_at_best;
  } else {
    std::vector<Eigen::MatrixXf> outputs;
    for (int k = 0; k < p.ensemble; ++k) {
      outputs.push_back(
          train<Net>(c, data, training, c.seed + static_cast<std::uint64_t>(k)).test_outputs);
    }
    const Eigen::VectorXi votes = bp::majority_vote(outputs);
    const long long correct = (votes.array() == data.test.labels.array()).count();
    accuracy = percent(correct, data.test.size());
    std::cout << std::fixed << std::setprecision(2) << "ensemble of " << p.ensemble
              << ": majority-vote test accuracy " << accuracy << "%\n"
              << std::defaultfloat;
  }
  std::cout << std::fixed << std::setprecision(2) << "book: " << p.book << "%\n"
            << std::defaultfloat;
  if (accuracy < 100.0 * c.min_accuracy) {
    std::cerr << "error: test accuracy " << accuracy << "% is below " << 100.0 * c.min_accuracy
              << "%\n";
    return 1;
  }
  return 0;
}

int run(const Config& c) {
  const Preset& p = *c.preset;
  const auto t0 = std::chrono::steady_clock::now();
  const auto data = bp::book_split(bp::load_mnist<float>(c.data_dir));
  bp::Dataset<float> training =
      c.limit > 0 ? data.training.slice(0, std::min<Eigen::Index>(c.limit, data.training.size()))
                  : data.training;
  if (p.expanded) training = bp::expand_by_shifts(training, 28, 28);
  std::cout << "loaded " << c.data_dir << (p.expanded ? " and expanded it" : "") << " in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
            << " s\n";
  if (p.name == "ch6-dense") return report<DenseNet>(c, data, training);
  if (p.name == "ch6-conv1") return report<Conv1<bp::Sigmoid>>(c, data, training);
  if (p.name == "ch6-conv2") return report<Conv2<bp::Sigmoid>>(c, data, training);
  if (p.name == "ch6-relu" || p.name == "ch6-expanded") {
    return report<Conv2<bp::ReLU>>(c, data, training);
  }
  return report<DropoutNet>(c, data, training);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Config c = parse(argc, argv);
    Eigen::setNbThreads(c.threads);
    return run(c);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 2;
  }
}
