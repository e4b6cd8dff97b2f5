/// \file
/// \brief `Rng`: a specified, portable random generator with its own uniform and
/// normal sampling, so a seed gives the same numbers on every platform.
///
/// The standard distributions (`std::normal_distribution`, ...) are
/// implementation-defined, so backprop does not use them. `Rng` is
/// xoshiro256** seeded through splitmix64; uniforms take the top 53 bits;
/// normals use the Marsaglia polar method with a logarithm computed from
/// basic IEEE operations only (no libm), so results are bit-identical wherever
/// `double` is IEEE binary64 and the compiler does not contract to FMA.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace backprop {

namespace detail {

/// Natural logarithm of a finite x > 0 from +, -, *, / only (portable bits).
/// ln x = e ln 2 + 2 atanh(s), x = m 2^e with m in [sqrt(1/2), sqrt(2)), s = (m-1)/(m+1).
inline double portable_log(double x) noexcept {
  int e = 0;
  double m = std::frexp(x, &e);  // exact: m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  const double s = (m - 1.0) / (m + 1.0);  // |s| < 0.1716
  const double s2 = s * s;
  // atanh(s) = s (1 + s^2/3 + s^4/5 + ...); 12 terms reach double precision for |s| < 0.172.
  double term = s2;
  double sum = 1.0;
  for (int k = 3; k <= 25; k += 2) {
    sum += term / k;
    term *= s2;
  }
  constexpr double ln2_hi = 6.93147180369123816490e-01;  // ln 2 split for exact e * ln2_hi
  constexpr double ln2_lo = 1.90821492927058770002e-10;
  return e * ln2_hi + (2.0 * s * sum + e * ln2_lo);
}

}  // namespace detail

/// \brief xoshiro256** with splitmix64 seeding, plus portable uniform, normal and
/// integer sampling.
class Rng {
 public:
  /// 64 random bits (UniformRandomBitGenerator).
  using result_type = std::uint64_t;

  /// \brief Seeds the four state words from `seed` with splitmix64.
  explicit Rng(std::uint64_t seed = 0) noexcept { reseed(seed); }

  /// \brief Restarts the sequence as `Rng(seed)` would.
  void reseed(std::uint64_t seed) noexcept {
    std::uint64_t x = seed;
    for (auto& s : m_state) {
      x += 0x9E3779B97F4A7C15ULL;
      std::uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
      s = z ^ (z >> 31);
    }
    m_has_spare = false;
  }

  /// \brief 0, the smallest value of `operator()`.
  static constexpr result_type min() noexcept { return 0; }
  /// \brief 2^64 - 1, the largest value of `operator()`.
  static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }

  /// \brief The next 64 random bits.
  result_type operator()() noexcept {
    const std::uint64_t result = rotl(m_state[1] * 5, 7) * 9;
    const std::uint64_t t = m_state[1] << 17;
    m_state[2] ^= m_state[0];
    m_state[3] ^= m_state[1];
    m_state[1] ^= m_state[2];
    m_state[0] ^= m_state[3];
    m_state[2] ^= t;
    m_state[3] = rotl(m_state[3], 45);
    return result;
  }

  /// \brief Uniform double in [0, 1) with 53 random bits.
  double uniform() noexcept { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }

  /// \brief Uniform double in [lo, hi).
  double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform(); }

  /// \brief Uniform integer in [0, n) without modulo bias (rejection of the
  /// lowest 2^64 mod n values, then modulo).
  /// \pre n > 0
  std::uint64_t below(std::uint64_t n) noexcept {
    const std::uint64_t threshold = (0 - n) % n;
    for (;;) {
      const std::uint64_t r = (*this)();
      if (r >= threshold) return r % n;
    }
  }

  /// \brief Standard normal N(0, 1) sample (Marsaglia polar method).
  double normal() noexcept {
    if (m_has_spare) {
      m_has_spare = false;
      return m_spare;
    }
    double u = 0.0, v = 0.0, s = 0.0;
    do {
      u = 2.0 * uniform() - 1.0;
      v = 2.0 * uniform() - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * detail::portable_log(s) / s);  // sqrt is exact IEEE
    m_spare = v * f;
    m_has_spare = true;
    return u * f;
  }

  /// \brief Normal sample with the given mean and standard deviation.
  double normal(double mean, double stddev) noexcept { return mean + stddev * normal(); }

  /// \brief Fisher-Yates shuffle of a random-access range, using `below`.
  template <class RandomIt>
  void shuffle(RandomIt first, RandomIt last) noexcept {
    const auto n = static_cast<std::uint64_t>(last - first);
    for (std::uint64_t i = n; i > 1; --i) {
      const std::uint64_t j = below(i);
      using std::swap;
      swap(first[static_cast<std::ptrdiff_t>(i - 1)], first[static_cast<std::ptrdiff_t>(j)]);
    }
  }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
    return (x << k) | (x >> (64 - k));
  }

  std::uint64_t m_state[4]{};
  double m_spare = 0.0;
  bool m_has_spare = false;
};

}  // namespace backprop
