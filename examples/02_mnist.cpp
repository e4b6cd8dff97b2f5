// Trains the book's chapter-1 network (784-30-10, sigmoid, quadratic cost,
// N(0,1) init, 30 epochs, mini-batch 10, eta 3.0) on real MNIST and prints the
// test accuracy after every epoch. Run with --help for the knobs.
#include <Eigen/Core>
#include <backprop/backprop.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

namespace bp = backprop;

namespace {

struct Config {
  std::string data_dir;
  std::string dataset = "mnist";
  int hidden = 30;
  std::string cost = "quadratic";
  std::string init = "normal";
  int epochs = 30;
  long long batch = 10;
  double eta = 3.0;
  double lambda = 0.0;
  std::uint64_t seed = 9;
  int threads = 1;
  long long limit = 0;  // 0: all 50,000 training images
  double min_accuracy = 0.0;
  std::string history_csv, chart_svg, tiles, model;
};

void usage(const char* argv0) {
  std::cout << "usage: " << argv0 << " [options]\n"
            << "Trains a 784-H-10 sigmoid network with mini-batch SGD on MNIST (first 50,000\n"
            << "training images; the last 10,000 are the validation set) and reports the\n"
            << "test accuracy (10,000 t10k images) after every epoch.\n\n"
            << "  --data DIR         folder with the four IDX files (plain or .gz)\n"
            << "                     [$BACKPROP_DATA_DIR/<dataset>, else .cache/data/<dataset>]\n"
            << "  --dataset NAME     mnist | fashion-mnist                      [mnist]\n"
            << "  --hidden H         hidden units: 30 | 100                     [30]\n"
            << "  --cost NAME        quadratic | cross-entropy                  [quadratic]\n"
            << "  --init NAME        normal | scaled_normal | xavier | he       [normal]\n"
            << "  --epochs N         [30]      --batch M   mini-batch size [10]\n"
            << "  --eta X            learning rate [3.0]   --lambda X  L2 [0]\n"
            << "  --seed S           initialisation and shuffling seed          [9]\n"
            << "  --threads N        Eigen threads (needs an OpenMP build)      [1]\n"
            << "  --limit N          train on the first N images only (smoke runs)\n"
            << "  --history FILE     write per-epoch history as CSV\n"
            << "  --chart FILE       write an SVG chart of accuracy and cost\n"
            << "  --tiles FILE       write first-layer weights as 28x28 tiles (.png or .pgm)\n"
            << "  --save FILE        save the trained model (binary format)\n"
            << "  --min-accuracy X   exit with status 1 if the best test accuracy is below X\n";
}

Config parse(int argc, char** argv) {
  Config c;
  std::map<std::string, std::string*> strings{
      {"--data", &c.data_dir}, {"--dataset", &c.dataset},     {"--cost", &c.cost},
      {"--init", &c.init},     {"--history", &c.history_csv}, {"--chart", &c.chart_svg},
      {"--tiles", &c.tiles},   {"--save", &c.model}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(argv[0]);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + arg);
    const std::string v = argv[++i];
    if (auto it = strings.find(arg); it != strings.end()) {
      *it->second = v;
    } else if (arg == "--hidden") {
      c.hidden = std::stoi(v);
    } else if (arg == "--epochs") {
      c.epochs = std::stoi(v);
    } else if (arg == "--batch") {
      c.batch = std::stoll(v);
    } else if (arg == "--eta") {
      c.eta = std::stod(v);
    } else if (arg == "--lambda") {
      c.lambda = std::stod(v);
    } else if (arg == "--seed") {
      c.seed = std::stoull(v);
    } else if (arg == "--threads") {
      c.threads = std::stoi(v);
    } else if (arg == "--limit") {
      c.limit = std::stoll(v);
    } else if (arg == "--min-accuracy") {
      c.min_accuracy = std::stod(v);
    } else {
      throw std::invalid_argument("unknown option " + arg + " (see --help)");
    }
  }
  if (c.dataset == "fashion") c.dataset = "fashion-mnist";
  if (c.dataset != "mnist" && c.dataset != "fashion-mnist") {
    throw std::invalid_argument("--dataset must be mnist or fashion-mnist, got " + c.dataset);
  }
  if (c.data_dir.empty()) {
    const char* env = std::getenv("BACKPROP_DATA_DIR");
    c.data_dir = (env ? std::string(env) : std::string(".cache/data")) + "/" + c.dataset;
  }
  return c;
}

bp::Init parse_init(const std::string& s) {
  for (bp::Init i : {bp::Init::normal, bp::Init::scaled_normal, bp::Init::xavier, bp::Init::he}) {
    if (bp::to_string(i) == s) return i;
  }
  throw std::invalid_argument("--init must be normal, scaled_normal, xavier or he, got " + s);
}

template <int Hidden, class Cost>
int run(const Config& c, const bp::BookSplit<float>& data) {
  using Net = bp::Network<bp::Dense<784, Hidden, bp::Sigmoid>, bp::Dense<Hidden, 10, bp::Sigmoid>>;
  Net net(c.seed, parse_init(c.init));
  const bp::Dataset<float> train =
      c.limit > 0 ? data.training.slice(0, std::min<Eigen::Index>(c.limit, data.training.size()))
                  : data.training;
  std::cout << "network 784-" << Hidden << "-10 sigmoid, " << Cost::name << ", init " << c.init
            << ", " << c.epochs << " epochs, mini-batch " << c.batch << ", eta " << c.eta;
  if (c.lambda > 0) std::cout << ", lambda " << c.lambda;
  std::cout << ", seed " << c.seed << "\ntraining on " << train.size() << " images, testing on "
            << data.test.size() << '\n';

  bp::SgdOptions options{.epochs = c.epochs,
                         .mini_batch_size = c.batch,
                         .eta = c.eta,
                         .lambda = c.lambda,
                         .monitor_training_cost = !c.chart_svg.empty() || !c.history_csv.empty()};
  bp::ProgressReporter progress;
  progress.attach(options);
  const auto start = std::chrono::steady_clock::now();
  const bp::TrainingHistory history = net.template sgd<Cost>(train, options, &data.test);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  long long best = -1;
  int best_epoch = 0;
  for (const auto& e : history.epochs) {
    if (e.evaluation_correct > best) best = e.evaluation_correct, best_epoch = e.epoch;
  }
  const double best_acc = static_cast<double>(best) / static_cast<double>(data.test.size());
  std::cout << "best test accuracy " << 100.0 * best_acc << "% (" << best << " / "
            << data.test.size() << ", epoch " << best_epoch << "), total " << seconds << " s\n";

  if (!c.history_csv.empty()) history.write_csv(c.history_csv);
  if (!c.chart_svg.empty()) {
    bp::write_history_svg(
        history, c.chart_svg,
        c.dataset + " 784-" + std::to_string(Hidden) + "-10, " + std::string(Cost::name));
  }
  if (!c.tiles.empty()) bp::write_weight_tiles(net.template layer<0>().weights(), 28, 28, c.tiles);
  if (!c.model.empty()) net.save(c.model);
  for (const auto* f : {&c.history_csv, &c.chart_svg, &c.tiles, &c.model}) {
    if (!f->empty()) std::cout << "wrote " << *f << '\n';
  }
  if (best_acc < c.min_accuracy) {
    std::cerr << "error: best test accuracy " << best_acc << " is below --min-accuracy "
              << c.min_accuracy << '\n';
    return 1;
  }
  return 0;
}

template <int Hidden>
int run_cost(const Config& c, const bp::BookSplit<float>& data) {
  if (c.cost == "quadratic") return run<Hidden, bp::QuadraticCost>(c, data);
  if (c.cost == "cross-entropy") return run<Hidden, bp::CrossEntropyCost>(c, data);
  throw std::invalid_argument("--cost must be quadratic or cross-entropy, got " + c.cost);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Config c = parse(argc, argv);
    Eigen::setNbThreads(c.threads);
    const auto t0 = std::chrono::steady_clock::now();
    const auto data = bp::book_split(bp::load_mnist<float>(c.data_dir));
    std::cout << "loaded " << c.dataset << " from " << c.data_dir << " in "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
              << " s\n";
    switch (c.hidden) {
      case 30:
        return run_cost<30>(c, data);
      case 100:
        return run_cost<100>(c, data);
      default:
        throw std::invalid_argument("--hidden must be 30 or 100 (compiled sizes)");
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 2;
  }
}
