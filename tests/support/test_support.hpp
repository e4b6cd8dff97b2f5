// Helpers shared by the unit tests: seeded random data and parameter comparison.
#pragma once

#include <Eigen/Core>
#include <backprop/backprop.hpp>
#include <cmath>
#include <cstddef>
#include <string_view>
#include <tuple>
#include <utility>

namespace bptest {

/// Caps backprop's kernels at an instruction-set level for a scope and restores the
/// previous cap on exit, for test cases that run at every level:
///   const bptest::InstructionSetCap cap(GENERATE(portable, avx2, avx512));
///   if (!cap.runs()) return;  // a level this CPU does not have
class InstructionSetCap {
 public:
  explicit InstructionSetCap(backprop::InstructionSet level)
      : m_before(backprop::instruction_set()),
        m_level(level),
        m_runs(level <= backprop::detected_instruction_set()) {
    if (m_runs) backprop::set_max_instruction_set(level);
  }
  ~InstructionSetCap() { backprop::set_max_instruction_set(m_before); }
  InstructionSetCap(const InstructionSetCap&) = delete;
  InstructionSetCap& operator=(const InstructionSetCap&) = delete;

  /// Whether this CPU runs the level (otherwise the test case returns).
  [[nodiscard]] bool runs() const noexcept { return m_runs; }
  /// The level's name, for INFO.
  [[nodiscard]] std::string_view name() const { return backprop::to_string(m_level); }

 private:
  backprop::InstructionSet m_before, m_level;
  bool m_runs;
};

template <class Scalar>
using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

/// Uniform [lo, hi) matrix from the library's portable generator.
template <class Scalar>
Mat<Scalar> random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed,
                          double lo = -1.0, double hi = 1.0) {
  backprop::Rng rng(seed);
  Mat<Scalar> m(rows, cols);
  for (Eigen::Index c = 0; c < cols; ++c)
    for (Eigen::Index r = 0; r < rows; ++r) m(r, c) = static_cast<Scalar>(rng.uniform(lo, hi));
  return m;
}

/// Columns that each sum to one (targets for softmax / probabilities).
template <class Scalar>
Mat<Scalar> random_distribution(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  Mat<Scalar> m = random_matrix<Scalar>(rows, cols, seed, 0.05, 1.0);
  for (Eigen::Index c = 0; c < cols; ++c) m.col(c) /= m.col(c).sum();
  return m;
}

/// ||a - b|| / max(||b||, tiny): matrix-level relative difference.
template <class A, class B>
double relative_difference(const A& a, const B& b) {
  const double denom = std::max(static_cast<double>(b.norm()), 1e-30);
  return static_cast<double>((a - b).norm()) / denom;
}

/// Largest relative difference over all layers' weights and biases of two networks.
template <class Net>
double max_parameter_difference(const Net& a, const Net& b) {
  double worst = 0.0;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((worst = std::max(
          {worst,
           relative_difference(a.template layer<I>().weights(), b.template layer<I>().weights()),
           relative_difference(a.template layer<I>().biases(), b.template layer<I>().biases())})),
     ...);
  }
  (std::make_index_sequence<Net::num_layers>{});
  return worst;
}

/// A network initialised from `seed` with `init`, every parameter then moved by a uniform
/// draw from [-spread, spread): away from initial values (ones, zeros) that would hide
/// terms of a gradient.
template <class Net>
Net perturbed(std::uint64_t seed, backprop::Init init = backprop::Init::xavier,
              double spread = 0.5) {
  Net net{seed, init};
  backprop::detail::for_each_index<Net::num_layers>([&](auto i) {
    auto& l = net.template layer<i>();
    using S = typename Net::Scalar;
    l.weights() +=
        random_matrix<S>(l.weights().rows(), l.weights().cols(), seed + 10 + i, -spread, spread);
    l.biases() += random_matrix<S>(l.biases().rows(), 1, seed + 20 + i, -spread, spread);
  });
  return net;
}

/// Per-type tolerance for comparisons that differ only by rounding order.
template <class Scalar>
constexpr double rounding_tolerance() {
  return std::is_same_v<Scalar, float> ? 1e-5 : 1e-12;
}

}  // namespace bptest
