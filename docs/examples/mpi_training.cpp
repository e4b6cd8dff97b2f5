// docs/data-parallel.md: data-parallel training over MPI, on data made up on the spot.
// Every rank keeps only its slice of the training and test sets (the sharded layout).
//
//   mpirun -np 2 ./docs_mpi_training
#include <backprop/backprop.hpp>
#include <backprop/distributed/mpi.hpp>
#include <cstdint>
#include <iostream>

namespace bp = backprop;

bp::Dataset<float> circle(int n, std::uint64_t seed) {
  bp::Rng rng(seed);
  bp::Dataset<float> data;
  data.inputs.resize(2, n);
  data.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    const double x = rng.uniform(-1.0, 1.0);
    const double y = rng.uniform(-1.0, 1.0);
    data.inputs(0, i) = static_cast<float>(x);
    data.inputs(1, i) = static_cast<float>(y);
    data.labels(i) = x * x + y * y < 0.49 ? 1 : 0;
  }
  data.targets = bp::one_hot<float>(data.labels, 2);
  return data;
}

int main(int argc, char** argv) {
  // mpi::run: MPI_Init, the body on every rank, MPI_Finalize (MPI_Abort if a rank throws).
  return bp::mpi::run(argc, argv, [](bp::mpi::Communicator& comm) {
    using Net = bp::Network<bp::Dense<2, 32, bp::Tanh>, bp::Dense<32, 2, bp::Softmax>>;
    Net net{9};  // the same seed on every rank
    // Every rank makes the same data here and keeps its slice (mpi::load_mnist_shard reads
    // only the rank's slice of the MNIST files).
    const auto training = bp::mpi::shard(circle(4000, 1), comm);
    const auto test = bp::mpi::shard(circle(1000, 2), comm);
    // mini_batch_size is the global batch: 64 samples per step over all ranks together.
    const bp::SgdOptions options{
        .epochs = 10, .mini_batch_size = 64, .eta = 0.5, .on_epoch = bp::quiet};
    const auto history = net.sgd<bp::LogLikelihoodCost>(training, options, &test, bp::Momentum{},
                                                        comm, bp::DataLayout::sharded);

    // The evaluation is summed over the ranks: every rank sees the global totals.
    const auto& last = history.epochs.back();
    if (comm.rank() == 0) {
      std::cout << comm.size() << " ranks; test accuracy " << last.evaluation_correct << " / "
                << last.evaluation_total << "; " << comm.sum_calls() << " allreduce calls\n";
      net.save("mpi_model.bpnn");
    }
    return last.evaluation_correct >= 900 ? 0 : 1;
  });
}
