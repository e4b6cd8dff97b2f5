// Data-parallel training over MPI (issue 7): samples/s of one epoch of 784-100-10 sigmoid
// (quadratic cost, eta 3) with a mini-batch of --batch samples PER RANK (the global
// mini-batch is batch x ranks), and the communication share: the wall time rank 0 spends
// inside Communicator::sum (MPI_Allreduce, including waiting for the other rank) over the
// epoch's wall time. Also times the allreduce of one step's buffer alone.
//
//   mpiexec -n 2 bench_mpi [--samples 50000] [--runs 3] [--batch 64] [--mnist DIR]
//                          [--sparse-density X] [--allreduce-iters 200] [--json FILE]
//
// `bash bench/run_mpi.sh` runs it with 1 and 2 ranks and prints the Markdown table.
#include <algorithm>
#include <backprop/backprop.hpp>
#include <backprop/distributed/mpi.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"

namespace bp = backprop;
namespace mpi = backprop::mpi;

namespace {

using Net = bp::Network<bp::Dense<784, 100, bp::Sigmoid>, bp::Dense<100, 10, bp::Sigmoid>>;

struct Config {
  std::int64_t samples = 50000;
  int runs = 3;
  long long batch = 64;  // per rank
  std::string mnist;
  double sparse_density = -1.0;  // < 0: the library's default
  int allreduce_iters = 200;
  std::string json;
};

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
    const std::string v = argv[++i];
    if (a == "--samples") {
      c.samples = std::stoll(v);
    } else if (a == "--runs") {
      c.runs = std::max(1, std::stoi(v));
    } else if (a == "--batch") {
      c.batch = std::stoll(v);
    } else if (a == "--mnist") {
      c.mnist = v;
    } else if (a == "--sparse-density") {
      c.sparse_density = std::stod(v);
    } else if (a == "--allreduce-iters") {
      c.allreduce_iters = std::max(1, std::stoi(v));
    } else if (a == "--json") {
      c.json = v;
    } else {
      throw std::invalid_argument("unknown option " + a +
                                  " (--samples N --runs R --batch B --mnist DIR "
                                  "--sparse-density X --allreduce-iters K --json FILE)");
    }
  }
  return c;
}

/// The first n MNIST training images, or bench's seeded MNIST-shaped synthetic data.
bp::Dataset<float> training_data(const Config& c, std::string& source) {
  if (!c.mnist.empty()) {
    auto all = bp::load_mnist<float>(c.mnist);
    if (all.train.size() < c.samples) throw std::runtime_error("MNIST has too few samples");
    source = "MNIST (first " + std::to_string(c.samples) + " training images)";
    return all.train.slice(0, c.samples);
  }
  const bench::Data d = bench::synthetic_data(c.samples);
  source = d.source;
  bp::Dataset<float> ds;
  ds.inputs = Eigen::Map<const Eigen::MatrixXf>(d.x.data(), d.inputs, d.n);
  ds.labels.resize(d.n);
  for (std::int64_t i = 0; i < d.n; ++i) ds.labels(i) = d.labels[static_cast<std::size_t>(i)];
  ds.targets = bp::one_hot<float>(ds.labels, 10);
  return ds;
}

/// Sets options.sparse_input_density when this version of the library has it.
template <class O>
void set_sparse_density(O& options, double density) {
  if constexpr (requires { options.sparse_input_density = density; }) {
    if (density >= 0.0) options.sparse_input_density = density;
  } else {
    if (density >= 0.0) throw std::invalid_argument("this library has no sparse_input_density");
  }
}

/// The maximum over the ranks.
double max_over_ranks(mpi::Communicator& comm, double v) {
  std::vector<double> all(static_cast<std::size_t>(comm.size()), 0.0);
  all[static_cast<std::size_t>(comm.rank())] = v;
  comm.sum(std::span<double>(all));
  return *std::max_element(all.begin(), all.end());
}

}  // namespace

int main(int argc, char** argv) {
  return mpi::run(argc, argv, [&](mpi::Communicator& comm) {
    const Config c = parse(argc, argv);
    const bool root = comm.rank() == 0;
    const int P = comm.size();
    std::string source;
    const bp::Dataset<float> train = training_data(c, source);
    const long long global_batch = c.batch * P;
    const std::int64_t steps = (c.samples + global_batch - 1) / global_batch;

    bp::SgdOptions options{.epochs = 1, .mini_batch_size = global_batch, .eta = 3.0};
    options.on_epoch = bp::quiet;
    set_sparse_density(options, c.sparse_density);

    // Warm-up (page faults, caches), then the timed epochs, each from the same weights.
    {
      Net net{1};
      const auto warm = train.slice(0, std::min<Eigen::Index>(train.size(), 4096));
      net.sgd(warm, options, nullptr, bp::PlainSgd{}, comm);
    }
    std::vector<double> wall, comm_share, comm_seconds, bytes_per_step;
    for (int run = 0; run < c.runs; ++run) {
      Net net{1};
      comm.barrier();
      comm.reset_stats();
      const auto t0 = std::chrono::steady_clock::now();
      net.sgd(train, options, nullptr, bp::PlainSgd{}, comm);
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double in_sum = comm.seconds_in_allreduce();
      const double bytes = static_cast<double>(comm.bytes_reduced());
      const double t_max = max_over_ranks(comm, t);
      wall.push_back(t_max);
      comm_seconds.push_back(in_sum);
      comm_share.push_back(in_sum / t);
      bytes_per_step.push_back(bytes / static_cast<double>(steps));
    }

    // One step's fused buffer (all gradients, the sample count, a flag per rank) summed
    // alone, back to back: the pure allreduce cost on this machine.
    const std::size_t step_floats =
        static_cast<std::size_t>(Net::parameter_count()) + 1 + static_cast<std::size_t>(P);
    std::vector<float> buffer(step_floats, 1.0f);
    comm.barrier();
    comm.reset_stats();
    for (int k = 0; k < c.allreduce_iters; ++k) comm.sum(std::span<float>(buffer));
    const double allreduce_us =
        max_over_ranks(comm, comm.seconds_in_allreduce()) / c.allreduce_iters * 1e6;

    if (root) {
      const double t = bench::median(wall);
      const double sps = static_cast<double>(c.samples) / t;
      std::ostringstream j;
      j << std::setprecision(9) << "{\"ranks\": " << P << ", \"batch_per_rank\": " << c.batch
        << ", \"global_batch\": " << global_batch << ", \"samples\": " << c.samples
        << ", \"steps\": " << steps << ", \"sparse_density\": " << c.sparse_density
        << ", \"source\": \"" << bench::json_escape(source) << "\", \"wall_s\": [";
      for (std::size_t k = 0; k < wall.size(); ++k) j << (k ? ", " : "") << wall[k];
      j << "], \"median_s\": " << t << ", \"samples_per_s\": " << sps
        << ", \"comm_s_median\": " << bench::median(comm_seconds)
        << ", \"comm_share_median\": " << bench::median(comm_share)
        << ", \"bytes_per_step\": " << bench::median(bytes_per_step)
        << ", \"step_buffer_bytes\": " << step_floats * sizeof(float)
        << ", \"allreduce_us\": " << allreduce_us << ", \"parameters\": " << Net::parameter_count()
        << ", \"loadavg\": \"" << bench::load_average() << "\"}";
      std::cerr << "[bench_mpi ranks=" << P << "] " << c.samples << " samples, global batch "
                << global_batch << ": median " << t << " s, " << sps << " samples/s, "
                << 100.0 * bench::median(comm_share) << "% in allreduce, "
                << bench::median(bytes_per_step) << " bytes/step, allreduce alone " << allreduce_us
                << " us\n";
      if (c.json.empty()) {
        std::cout << j.str() << '\n';
      } else {
        std::ofstream f(c.json, std::ios::trunc);
        f << j.str() << '\n';
        if (!f) throw std::runtime_error("cannot write " + c.json);
      }
    }
  });
}
