// Heap allocations: none per training step after the first mini-batch of a size, and
// none in feedforward of small networks. Two counters: Eigen's own allocations
// (EIGEN_RUNTIME_NO_MALLOC; its check goes through eigen_assert, redefined here to
// count instead of abort, in release builds too) and every global operator new (the
// std::vector / std::string / std::function kind) of this program.
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace bptest {
inline std::atomic<long> eigen_allocations{0};
inline std::atomic<long> new_calls{0};
inline void eigen_check_failed() { ++eigen_allocations; }
}  // namespace bptest

#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) ((x) ? static_cast<void>(0) : bptest::eigen_check_failed())

#include <backprop/backprop.hpp>
#include <catch2/catch.hpp>
#include <ratio>

#include "../support/test_support.hpp"

// Sanitizers bring their own operator new/delete, which the libraries' calls reach;
// replacing ours there mixes the two. Their builds count Eigen's allocations only.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BPTEST_COUNT_NEW 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define BPTEST_COUNT_NEW 0
#endif
#endif
#ifndef BPTEST_COUNT_NEW
#define BPTEST_COUNT_NEW 1
#endif

#if BPTEST_COUNT_NEW
// g++ 12 sees the free() of the replaced operator delete inlined next to the
// operator new and warns about a mismatch; malloc/free is what both use here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(std::size_t size) {
  ++bptest::new_calls;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

namespace bp = backprop;

namespace {

/// Counts the allocations between start() and stop().
struct AllocationWindow {
  long eigen_at_start = 0;
  long new_at_start = 0;
  long eigen = 0;
  long news = 0;
  bool open = false;
  void start() {
    eigen_at_start = bptest::eigen_allocations;
    new_at_start = bptest::new_calls;
    Eigen::internal::set_is_malloc_allowed(false);
    open = true;
  }
  void stop() {
    Eigen::internal::set_is_malloc_allowed(true);
    eigen = bptest::eigen_allocations - eigen_at_start;
    news = bptest::new_calls - new_at_start;
    open = false;
  }
};

/// MNIST-like inputs: mostly zeros, values in (0, 1]; one-hot targets.
bp::Dataset<float> mnist_like(int inputs, int classes, Eigen::Index n, std::uint64_t seed) {
  bp::Dataset<float> d;
  d.inputs = bptest::random_matrix<float>(inputs, n, seed, 0.0, 1.0);
  const auto keep = bptest::random_matrix<float>(inputs, n, seed + 1, 0.0, 1.0);
  d.inputs = (keep.array() < 0.2f).select(d.inputs, 0.0f);
  d.labels.resize(n);
  for (Eigen::Index i = 0; i < n; ++i) d.labels(i) = static_cast<int>(i % classes);
  d.targets = bp::one_hot<float>(d.labels, classes);
  return d;
}

/// Trains one epoch with `options`; counts allocations from the end of mini-batch 1
/// to the end of the last (all mini-batches have the same size).
template <class Cost = bp::QuadraticCost, class Net, class Opt>
AllocationWindow count_training(Net& net, const bp::Dataset<float>& data, bp::SgdOptions options,
                                const Opt& optimizer) {
  REQUIRE(data.size() % options.mini_batch_size == 0);
  AllocationWindow w;
  options.epochs = 1;
  options.on_epoch = bp::quiet;
  options.on_batch = [&w](const bp::BatchProgress& p) {
    if (p.samples_done == p.samples_total) {
      w.stop();
    } else if (!w.open && p.samples_done > 0) {
      w.start();
    }
  };
  net.template sgd<Cost>(data, options, nullptr, optimizer);
  if (w.open) w.stop();
  return w;
}

}  // namespace

TEST_CASE("the counters see allocations", "[allocations]") {
  AllocationWindow w;
  w.start();
  Eigen::MatrixXf m(100, 100);   // one Eigen allocation
  void* p = ::operator new(64);  // one operator new (a direct call: not elided)
  ::operator delete(p);
  w.stop();
  CHECK(w.eigen == 1);
  CHECK(w.news == BPTEST_COUNT_NEW);
  CHECK(m.size() == 10000);
}

TEST_CASE("sgd allocates nothing per step after the first mini-batch", "[allocations]") {
  const auto data = mnist_like(784, 10, 400, 1);
  using Chapter1 = bp::Network<bp::Dense<784, 30, bp::Sigmoid>, bp::Dense<30, 10, bp::Sigmoid>>;
  SECTION("784-30-10, batch 10, sparse first layer (the seed's network)") {
    Chapter1 net{1};
    const auto w = count_training(net, data, {.mini_batch_size = 10, .eta = 3.0}, bp::PlainSgd{});
    CHECK(w.eigen == 0);
    CHECK(w.news == 0);
  }
  SECTION("784-30-10, batch 10, dense first layer, L2 and L1") {
    Chapter1 net{1};
    const auto w = count_training(net, data,
                                  {.mini_batch_size = 10,
                                   .eta = 3.0,
                                   .lambda = 5.0,
                                   .lambda1 = 0.1,
                                   .sparse_input_density = 0.0},
                                  bp::PlainSgd{});
    CHECK(w.eigen == 0);
    CHECK(w.news == 0);
  }
  SECTION("784-100-10 with Momentum and Adam") {
    using Net = bp::Network<bp::Dense<784, 100, bp::Sigmoid>, bp::Dense<100, 10, bp::Sigmoid>>;
    Net a{1};
    const auto wm =
        count_training(a, data, {.mini_batch_size = 20, .eta = 0.5}, bp::Momentum{.mu = 0.9});
    CHECK(wm.eigen == 0);
    CHECK(wm.news == 0);
    Net b{1};
    const auto wa = count_training(b, data, {.mini_batch_size = 20, .eta = 0.01}, bp::Adam{});
    CHECK(wa.eigen == 0);
    CHECK(wa.news == 0);
  }
  SECTION("dense inputs: Eigen's GEMM with packing buffers above 128 KiB, Adam") {
    bp::Dataset<float> dense = data;
    dense.inputs.array() += 0.01f;  // no zeros
    using Net = bp::Network<bp::Dense<784, 256, bp::ReLU>, bp::Dense<256, 256, bp::ReLU>,
                            bp::Dense<256, 10, bp::Softmax>>;
    Net net{1, bp::Init::he};
    const auto w = count_training<bp::LogLikelihoodCost>(
        net, dense.slice(0, 256), {.mini_batch_size = 64, .eta = 0.001}, bp::Adam{});
    CHECK(w.eigen == 0);
    CHECK(w.news == 0);
  }
  SECTION("ReLU, dropout, softmax and log-likelihood, batch 40") {
    using Net = bp::Network<bp::DropoutDense<784, 64, bp::ReLU, std::ratio<1, 2>>,
                            bp::Dense<64, 10, bp::Softmax>>;
    Net net{1, bp::Init::he};
    const auto w = count_training<bp::LogLikelihoodCost>(
        net, data, {.mini_batch_size = 40, .eta = 0.1}, bp::PlainSgd{});
    CHECK(w.eigen == 0);
    CHECK(w.news == 0);
  }
}

TEST_CASE("update_mini_batch allocates nothing after the first call of a size", "[allocations]") {
  const auto data = mnist_like(784, 10, 100, 2);
  bp::Network<bp::Dense<784, 30, bp::Sigmoid>, bp::Dense<30, 10, bp::Sigmoid>> net{1};
  net.update_mini_batch(data.inputs.leftCols(10), data.targets.leftCols(10), 3.0);
  AllocationWindow w;
  w.start();
  for (Eigen::Index k = 10; k < 100; k += 10) {
    net.update_mini_batch(data.inputs.middleCols(k, 10), data.targets.middleCols(k, 10), 3.0);
  }
  w.stop();
  CHECK(w.eigen == 0);
  CHECK(w.news == 0);
}

TEST_CASE("feedforward of small networks allocates nothing", "[allocations]") {
  using Small = bp::Network<bp::Dense<4, 8, bp::Tanh>, bp::Dense<8, 3, bp::Softmax>>;
  const Small small{3};
  const Eigen::Vector4f x(0.1f, -0.2f, 0.3f, 0.9f);
  using Chapter1 = bp::Network<bp::Dense<784, 30, bp::Sigmoid>, bp::Dense<30, 10, bp::Sigmoid>>;
  const Chapter1 net{1};
  const Eigen::VectorXf image = mnist_like(784, 10, 1, 3).inputs.col(0);
  AllocationWindow w;
  w.start();
  const auto out = small.feedforward(x);
  const auto digit = net.feedforward(image);
  w.stop();
  CHECK(w.eigen == 0);
  CHECK(w.news == 0);
  CHECK(out.size() == 3);
  CHECK(digit.size() == 10);
}
