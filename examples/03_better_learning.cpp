// Chapter 3 of the book, "Improving the way neural networks learn", plus two
// modern MLPs: cross-entropy, L2, better initialisation, then ReLU + softmax with
// dropout, Adam and a cosine schedule. Each preset trains on the book's 50,000
// training images and prints the validation AND test accuracy after every epoch.
// Run with --help for the presets and knobs.
#include <Eigen/Core>
#include <backprop/backprop.hpp>
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <ratio>
#include <stdexcept>
#include <string>
#include <variant>

namespace bp = backprop;

namespace {

struct Preset {
  std::string name, dataset, description;
  std::string target_set;  // "validation" or "test": the set the book reports
  double book = 0.0;       // the book's (or a published) accuracy, in %
  double goal = 0.0;       // what this preset must reach, in %
  int epochs = 30;
  long long batch = 10;
  double eta = 0.5;
  double lambda = 0.0;
  double dropout = 0.0;  // hidden-layer drop rate of the best presets
};

const Preset presets[] = {
    {"ch3-ce", "mnist", "784-30-10 sigmoid, cross-entropy, N(0,1) init, eta 0.5", "test", 95.49,
     95.2, 30, 10, 0.5, 0.0},
    {"ch3-l2", "mnist", "784-30-10 sigmoid, cross-entropy, L2 lambda 5, N(0,1) init, eta 0.5",
     "test", 96.49, 96.2, 30, 10, 0.5, 5.0},
    {"ch3-100", "mnist",
     "784-100-10 sigmoid, cross-entropy, L2 lambda 5, N(0,1/n_in) init, eta 0.1", "validation",
     98.04, 97.9, 60, 10, 0.1, 5.0},
    {"mnist-best", "mnist",
     "784-800-800-10 ReLU (dropout 0.5) + softmax, log-likelihood, He init, Adam, cosine", "test",
     0.0, 98.5, 30, 100, 1e-3, 0.0, 0.5},
    {"fashion-best", "fashion-mnist",
     "784-800-800-10 ReLU (dropout 0.2) + softmax, log-likelihood, He init, Adam, cosine", "test",
     88.33, 89.5, 30, 100, 1e-3, 0.0, 0.2},
};

struct Config {
  const Preset* preset = nullptr;
  std::string data_root;
  int epochs = -1;
  double eta = -1.0;
  double dropout = -1.0;
  std::uint64_t seed = 9;
  long long limit = 0;
  double min_accuracy = 0.0;
};

void usage(const char* argv0) {
  std::cout << "usage: " << argv0 << " --preset NAME [options]\n\npresets:\n";
  for (const auto& p : presets) {
    std::cout << "  " << std::left << std::setw(13) << p.name << p.description << "\n"
              << std::setw(15) << "" << p.dataset << ", " << p.epochs << " epochs, mini-batch "
              << p.batch << "; goal " << p.goal << "% " << p.target_set << " accuracy";
    if (p.book > 0) std::cout << " (published " << p.book << "%)";
    std::cout << "\n";
  }
  std::cout << "\noptions:\n"
            << "  --data-root DIR    folder holding mnist/ and fashion-mnist/\n"
            << "                     [$BACKPROP_DATA_DIR, else .cache/data]\n"
            << "  --epochs N         override the preset's epochs (smoke runs)\n"
            << "  --eta X            override the preset's learning rate\n"
            << "  --dropout P        best presets: hidden drop rate 0.5 | 0.3 | 0.2\n"
            << "  --seed S           initialisation, shuffling and dropout seed   [9]\n"
            << "  --limit N          train on the first N images only (smoke runs)\n"
            << "  --min-accuracy X   exit 1 if the best accuracy on the preset's set is below X\n";
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
    } else if (arg == "--data-root") {
      c.data_root = v;
    } else if (arg == "--epochs") {
      c.epochs = std::stoi(v);
    } else if (arg == "--eta") {
      c.eta = std::stod(v);
    } else if (arg == "--dropout") {
      c.dropout = std::stod(v);
    } else if (arg == "--seed") {
      c.seed = std::stoull(v);
    } else if (arg == "--limit") {
      c.limit = std::stoll(v);
    } else if (arg == "--min-accuracy") {
      c.min_accuracy = std::stod(v);
    } else {
      throw std::invalid_argument("unknown option " + arg + " (see --help)");
    }
  }
  if (c.preset == nullptr) throw std::invalid_argument("--preset NAME is required (see --help)");
  if (c.data_root.empty()) {
    const char* env = std::getenv("BACKPROP_DATA_DIR");
    c.data_root = env ? std::string(env) : std::string(".cache/data");
  }
  return c;
}

double percent(long long correct, Eigen::Index total) {
  return 100.0 * static_cast<double>(correct) / static_cast<double>(total);
}

// Trains `Net` with `Cost` and `optimizer`, printing validation and test accuracy
// per epoch; returns 1 if the best accuracy on the preset's set misses --min-accuracy.
template <class Net, class Cost, class Opt>
int train(const Config& c, const bp::BookSplit<float>& data, bp::Init init, const Opt& optimizer,
          bp::Schedule schedule) {
  const Preset& p = *c.preset;
  Net net(c.seed, init);
  const bp::Dataset<float> training =
      c.limit > 0 ? data.training.slice(0, std::min<Eigen::Index>(c.limit, data.training.size()))
                  : data.training;
  const bool on_validation = p.target_set == "validation";
  const bp::Dataset<float>& monitored = on_validation ? data.validation : data.test;
  const bp::Dataset<float>& other = on_validation ? data.test : data.validation;
  const int epochs = c.epochs >= 0 ? c.epochs : p.epochs;
  const double eta = c.eta > 0 ? c.eta : p.eta;
  std::cout << "preset " << p.name << ": " << p.description << "\n"
            << epochs << " epochs, mini-batch " << p.batch << ", eta " << eta << ", lambda "
            << p.lambda << ", seed " << c.seed << "; training on " << training.size() << " "
            << p.dataset << " images\n";

  double best_val = 0.0, best_test = 0.0;
  int best_epoch = 0;
  bp::SgdOptions options{
      .epochs = epochs,
      .mini_batch_size = p.batch,
      .eta = eta,
      .lambda = p.lambda,
      .on_epoch = [&](const bp::EpochReport& r) {
        const double acc = percent(r.evaluation_correct, r.evaluation_total);
        const double acc_other = percent(net.evaluate(other.inputs, other.labels), other.size());
        const double val = on_validation ? acc : acc_other;
        const double test = on_validation ? acc_other : acc;
        if ((on_validation ? val : test) > (on_validation ? best_val : best_test)) {
          best_epoch = r.epoch;
        }
        best_val = std::max(best_val, val);
        best_test = std::max(best_test, test);
        std::cout << "Epoch " << std::setw(2) << r.epoch << "  eta " << std::setw(9)
                  << std::setprecision(4) << r.eta << "  validation " << std::fixed
                  << std::setprecision(2) << val << "%  test " << test << "%  (" << r.seconds
                  << " s)\n"
                  << std::defaultfloat << std::flush;
      }};
  options.schedule = schedule;
  const auto start = std::chrono::steady_clock::now();
  const auto history = net.template sgd<Cost>(training, options, &monitored, optimizer);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double final_val =
      percent(net.evaluate(data.validation.inputs, data.validation.labels), data.validation.size());
  const double final_test =
      percent(net.evaluate(data.test.inputs, data.test.labels), data.test.size());
  const double best = on_validation ? best_val : best_test;
  std::cout << std::fixed << std::setprecision(2) << "best " << p.target_set << " accuracy " << best
            << "% (epoch " << best_epoch << "); final validation " << final_val << "%, test "
            << final_test << "%; " << history.epochs.size() << " epochs in " << seconds << " s\n";
  if (p.book > 0) std::cout << "published: " << p.book << "%, goal: " << p.goal << "%\n";
  if (best < 100.0 * c.min_accuracy) {
    std::cerr << "error: best " << p.target_set << " accuracy " << best << "% is below "
              << 100.0 * c.min_accuracy << "%\n";
    return 1;
  }
  return 0;
}

template <int H>
using BookNet = bp::Network<bp::Dense<784, H, bp::Sigmoid>, bp::Dense<H, 10, bp::Sigmoid>>;

template <class DropRate>
using BestNet =
    bp::Network<bp::DropoutDense<784, 800, bp::ReLU, DropRate>,
                bp::DropoutDense<800, 800, bp::ReLU, DropRate>, bp::Dense<800, 10, bp::Softmax>>;

template <class DropRate>
int best(const Config& c, const bp::BookSplit<float>& data) {
  return train<BestNet<DropRate>, bp::LogLikelihoodCost>(c, data, bp::Init::he, bp::Adam{},
                                                         bp::Schedule::cosine());
}

int run(const Config& c) {
  const Preset& p = *c.preset;
  const std::string dir = c.data_root + "/" + p.dataset;
  const auto t0 = std::chrono::steady_clock::now();
  const auto data = bp::book_split(bp::load_mnist<float>(dir));
  std::cout << "loaded " << dir << " in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
            << " s\n";
  if (p.name == "ch3-ce" || p.name == "ch3-l2") {
    return train<BookNet<30>, bp::CrossEntropyCost>(c, data, bp::Init::normal, bp::PlainSgd{},
                                                    bp::Schedule::constant());
  }
  if (p.name == "ch3-100") {
    return train<BookNet<100>, bp::CrossEntropyCost>(c, data, bp::Init::scaled_normal,
                                                     bp::PlainSgd{}, bp::Schedule::constant());
  }
  const double drop = c.dropout >= 0 ? c.dropout : p.dropout;
  std::cout << "hidden dropout " << drop << "\n";
  if (drop == 0.5) return best<std::ratio<1, 2>>(c, data);
  if (drop == 0.3) return best<std::ratio<3, 10>>(c, data);
  if (drop == 0.2) return best<std::ratio<1, 5>>(c, data);
  throw std::invalid_argument("--dropout must be 0.5, 0.3 or 0.2 (compiled rates)");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Eigen::setNbThreads(1);
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 2;
  }
}
