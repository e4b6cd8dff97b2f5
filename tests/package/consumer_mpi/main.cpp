// Package test consumer of backprop::mpi, run with mpiexec -n 2: data-parallel training of
// XOR; every rank must end with the same parameters and a lower cost.
#include <backprop/backprop.hpp>
#include <backprop/distributed/mpi.hpp>
#include <cstdlib>
#include <iostream>
#include <span>
#include <vector>

namespace bp = backprop;

int main(int argc, char** argv) {
  return bp::mpi::run(argc, argv, [](bp::mpi::Communicator& comm) {
    using Net =
        bp::BasicNetwork<double, bp::Dense<2, 4, bp::Sigmoid>, bp::Dense<4, 1, bp::Sigmoid>>;
    bp::Dataset<double> xor_data;
    xor_data.inputs.resize(2, 4);
    xor_data.inputs << 0, 0, 1, 1,  //
        0, 1, 0, 1;
    xor_data.targets.resize(1, 4);
    xor_data.targets << 0, 1, 1, 0;
    Net net{42};
    const auto cost = [&] {
      return 0.5 * (net.feedforward(xor_data.inputs) - xor_data.targets).squaredNorm();
    };
    const double before = cost();
    net.sgd(xor_data, {.epochs = 500, .mini_batch_size = 4, .eta = 3.0, .on_epoch = bp::quiet},
            nullptr, bp::PlainSgd{}, comm);
    const double after = cost();
    // The first weight of every rank, gathered by a sum of per-rank slots.
    std::vector<double> w(static_cast<std::size_t>(comm.size()), 0.0);
    w[static_cast<std::size_t>(comm.rank())] = net.layer<0>().weights()(0, 0);
    comm.sum(std::span<double>(w));
    bool same = true;
    for (double v : w) same = same && v == w[0];
    if (comm.rank() == 0) {
      std::cout << "backprop::mpi on " << comm.size() << " ranks: XOR cost " << before << " -> "
                << after << (same ? ", parameters equal on every rank" : ", parameters DIFFER")
                << '\n';
    }
    return after < before && same ? EXIT_SUCCESS : EXIT_FAILURE;
  });
}
