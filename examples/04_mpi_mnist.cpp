// Data-parallel training over MPI: 784-100-10 (sigmoid, quadratic cost) on MNIST, the
// global mini-batch split over the ranks. Rank 0 prints the test accuracy after every
// epoch and the share of the time spent in MPI_Allreduce.
//
//   mpirun -np 2 build/examples/example_04_mpi_mnist --epochs 5 --layout sharded
//
// Run with --help for the options. Needs the backprop::mpi target (-DBACKPROP_WITH_MPI=ON).
#include <backprop/backprop.hpp>
#include <backprop/distributed/mpi.hpp>
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <stdexcept>
#include <string>

namespace bp = backprop;
namespace mpi = backprop::mpi;

namespace {

struct Config {
  std::string data_dir = ".cache/data/mnist";
  int epochs = 3;
  long long batch = 64;
  double eta = 3.0;
  bp::DataLayout layout = bp::DataLayout::replicated;
  std::uint64_t seed = 9;
  long long limit = 50000;
  double min_accuracy = 0.0;
};

void usage(const char* argv0) {
  std::cout << "usage: mpirun -np N " << argv0 << " [options]\n"
            << "Trains 784-100-10 (sigmoid, quadratic cost, N(0,1/n_in) init) on the first\n"
            << "50,000 MNIST training images with data-parallel mini-batch SGD over the MPI\n"
            << "ranks; rank 0 prints the test accuracy (10,000 t10k images) per epoch.\n\n"
            << "  --data DIR          folder with the four IDX files  [.cache/data/mnist]\n"
            << "  --epochs N          [3]\n"
            << "  --batch M           the GLOBAL mini-batch, split over the ranks  [64]\n"
            << "  --eta X             learning rate  [3.0]\n"
            << "  --layout NAME       replicated: every rank loads all the data and takes its\n"
            << "                      part of each mini-batch (same result as one process);\n"
            << "                      sharded: every rank reads only its own slice of the\n"
            << "                      files and trains on it  [replicated]\n"
            << "  --seed S            initialisation and shuffling seed  [9]\n"
            << "  --limit N           train on the first N images only (smoke runs)  [50000]\n"
            << "  --min-accuracy X    exit with status 1 if the final test accuracy is below X\n";
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
    if (arg == "--data") {
      c.data_dir = v;
    } else if (arg == "--epochs") {
      c.epochs = std::stoi(v);
    } else if (arg == "--batch") {
      c.batch = std::stoll(v);
    } else if (arg == "--eta") {
      c.eta = std::stod(v);
    } else if (arg == "--layout") {
      if (v != "replicated" && v != "sharded") {
        throw std::invalid_argument("--layout must be replicated or sharded, got " + v);
      }
      c.layout = v == "sharded" ? bp::DataLayout::sharded : bp::DataLayout::replicated;
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
  if (c.limit < 1 || c.limit > 50000) throw std::invalid_argument("--limit must be in [1, 50000]");
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  // Any exception on any rank: "backprop (rank R): ..." and a non-zero exit of the job.
  return mpi::run(argc, argv, [&](mpi::Communicator& comm) {
    const Config c = parse(argc, argv);
    const bool root = comm.rank() == 0;
    const bool sharded = c.layout == bp::DataLayout::sharded;

    // Replicated: every rank holds the whole training and test sets. Sharded: every rank
    // reads only its slice of the first `limit` training images and of the test images.
    bp::Dataset<float> train, test;
    if (sharded) {
      auto mine = mpi::load_mnist_shard<float>(c.data_dir, comm, c.limit);
      train = std::move(mine.train);
      test = std::move(mine.test);
    } else {
      auto all = bp::load_mnist<float>(c.data_dir);
      train = all.train.slice(0, c.limit);
      test = std::move(all.test);
    }

    using Net = bp::Network<bp::Dense<784, 100, bp::Sigmoid>, bp::Dense<100, 10, bp::Sigmoid>>;
    Net net(c.seed, bp::Init::scaled_normal);  // the same seed on every rank
    if (root) {
      std::cout << comm.size() << " rank(s), " << (sharded ? "sharded" : "replicated")
                << " data, global mini-batch " << c.batch << " (about " << c.batch / comm.size()
                << " per rank), eta " << c.eta << ", " << Net::parameter_count() << " parameters"
                << std::endl;
    }
    bp::SgdOptions options{.epochs = c.epochs, .mini_batch_size = c.batch, .eta = c.eta};
    double last_accuracy = 0.0;
    options.on_epoch = [&](const bp::EpochReport& r) {
      last_accuracy = r.evaluation_accuracy.value_or(0.0);
      if (root) bp::print_epoch(r);  // the reports hold the totals over all ranks
    };

    comm.reset_stats();
    const auto start = std::chrono::steady_clock::now();
    net.sgd(train, options, &test, bp::PlainSgd{}, comm, c.layout);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    if (root) {
      const double steps = static_cast<double>(comm.sum_calls());
      std::cout << std::fixed << std::setprecision(2) << "test accuracy: " << 100.0 * last_accuracy
                << "%\n"
                << "rank 0: " << seconds << " s, of which " << comm.seconds_in_allreduce() << " s ("
                << 100.0 * comm.seconds_in_allreduce() / seconds << "%) in allreduce; "
                << comm.sum_calls() << " sums of " << std::setprecision(0)
                << static_cast<double>(comm.bytes_reduced()) / steps << " bytes on average"
                << std::endl;
    }
    return last_accuracy >= c.min_accuracy ? EXIT_SUCCESS : EXIT_FAILURE;
  });
}
