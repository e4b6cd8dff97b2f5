// A job in which ranks fail inside mpi::run; tests/mpi/expect_abort.cmake checks that the
// whole job ends quickly with a non-zero exit code and the failing rank's message.
//   mpi_abort_demo one-rank   rank 1 throws while rank 0 waits in a barrier forever
//   mpi_abort_demo shape      the ranks train networks of different shapes: every rank
//                             throws a DistributedError from sgd
#include <backprop/backprop.hpp>
#include <backprop/distributed/mpi.hpp>
#include <iostream>
#include <stdexcept>
#include <string>

namespace bp = backprop;

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "one-rank";
  return bp::mpi::run(argc, argv, [&](bp::mpi::Communicator& comm) {
    if (mode == "one-rank") {
      // A communicator of the body's own, destroyed while the exception unwinds.
      bp::mpi::Communicator own;
      if (own.rank() == 1) throw std::runtime_error("deliberate failure on rank 1");
      comm.barrier();  // never completes: rank 1 is gone
    } else {
      bp::Dataset<float> data;
      data.inputs = Eigen::MatrixXf::Constant(4, 16, 0.5f);
      data.labels = Eigen::VectorXi::Zero(16);
      data.targets = bp::one_hot<float>(data.labels, 2);
      const bp::SgdOptions options{.epochs = 1, .mini_batch_size = 4, .eta = 1.0};
      if (comm.rank() == 0) {
        bp::Network<bp::Dense<4, 8>, bp::Dense<8, 2>> net{1};
        net.sgd(data, options, nullptr, bp::PlainSgd{}, comm);
      } else {
        bp::Network<bp::Dense<4, 16>, bp::Dense<16, 2>> net{1};
        net.sgd(data, options, nullptr, bp::PlainSgd{}, comm);
      }
    }
    std::cout << "rank " << comm.rank() << " finished normally\n";
    return 0;
  });
}
