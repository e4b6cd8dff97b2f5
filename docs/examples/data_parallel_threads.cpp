// docs/data-parallel.md: data-parallel sgd without MPI. A GradientExchange only has to
// sum spans of numbers over the processes, with the same bits on each; here the two
// "processes" are two threads of one program, summing through shared memory. With the
// replicated layout the result is one process's sgd, up to the order of the sums.
#include <backprop/backprop.hpp>

#include <algorithm>
#include <array>
#include <barrier>
#include <cstdint>
#include <exception>
#include <iostream>
#include <span>
#include <thread>
#include <vector>

namespace bp = backprop;

// What the threads share: a barrier and where each one's numbers are.
struct Shared {
  static constexpr int size = 2;
  std::barrier<> barrier{size};
  std::array<const void*, size> parts{};
};

class ThreadExchange {
 public:
  ThreadExchange(int rank, Shared& shared) : m_rank(rank), m_shared(shared) {}
  [[nodiscard]] int rank() const { return m_rank; }
  [[nodiscard]] int size() const { return Shared::size; }
  void sum(std::span<float> values) { sum_impl(values); }
  void sum(std::span<double> values) { sum_impl(values); }

 private:
  template <class T>
  void sum_impl(std::span<T> values) {
    m_shared.parts[static_cast<std::size_t>(m_rank)] = values.data();
    m_shared.barrier.arrive_and_wait();  // every part is there
    std::vector<T> total(values.size(), T(0));
    for (const void* part : m_shared.parts) {  // in rank order: the same bits on every rank
      const T* p = static_cast<const T*>(part);
      for (std::size_t i = 0; i < total.size(); ++i) total[i] += p[i];
    }
    m_shared.barrier.arrive_and_wait();  // every rank has read every part
    std::copy(total.begin(), total.end(), values.begin());
  }

  int m_rank;
  Shared& m_shared;
};

static_assert(bp::GradientExchange<ThreadExchange>);

bp::Dataset<double> circle(int n, std::uint64_t seed) {
  bp::Rng rng(seed);
  bp::Dataset<double> data;
  data.inputs.resize(2, n);
  data.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    data.inputs(0, i) = rng.uniform(-1.0, 1.0);
    data.inputs(1, i) = rng.uniform(-1.0, 1.0);
    data.labels(i) = data.inputs.col(i).squaredNorm() < 0.49 ? 1 : 0;
  }
  data.targets = bp::one_hot<double>(data.labels, 2);
  return data;
}

int main() {
  using Net = bp::BasicNetwork<double, bp::Dense<2, 16, bp::Tanh>, bp::Dense<16, 2, bp::Softmax>>;
  const auto data = circle(1000, 1);
  const bp::SgdOptions options{
      .epochs = 5, .mini_batch_size = 50, .eta = 0.5, .on_epoch = bp::quiet};

  Net single{7};  // one process
  single.sgd<bp::LogLikelihoodCost>(data, options, nullptr, bp::Momentum{});

  // Two ranks, the same seed and data (replicated): each computes half of every
  // mini-batch of 50, and one exchange per step sums the gradients.
  Shared shared;
  std::array<Net, 2> ranks{Net{7}, Net{7}};
  std::array<std::exception_ptr, 2> failed{};
  auto train = [&](int r) {
    try {
      ThreadExchange exchange(r, shared);
      ranks[static_cast<std::size_t>(r)].sgd<bp::LogLikelihoodCost>(
          data, options, nullptr, bp::Momentum{}, exchange, bp::DataLayout::replicated);
    } catch (...) {
      failed[static_cast<std::size_t>(r)] = std::current_exception();
    }
  };
  std::thread other(train, 1);
  train(0);
  other.join();
  for (const auto& e : failed) {
    if (e) std::rethrow_exception(e);
  }

  const auto& w = ranks[0].layer<0>().weights();
  const double difference = (w - single.layer<0>().weights()).cwiseAbs().maxCoeff();
  std::cout << "ranks equal: " << (ranks[0] == ranks[1] ? "yes" : "no")
            << "; largest difference to one process: " << difference << '\n';
  std::cout << "accuracy: " << ranks[0].evaluate(data.inputs, data.labels) << " / " << data.size()
            << '\n';
  return ranks[0] == ranks[1] && difference < 1e-12 ? 0 : 1;
}
