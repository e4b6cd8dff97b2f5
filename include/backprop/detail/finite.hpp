/// \file
/// \brief A vectorised finiteness check (internal).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <type_traits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace backprop::detail {

/// True when no coefficient is NaN or infinite. Eigen's allFinite() runs as a
/// scalar loop; a NaN-propagating max of |m| vectorises and is exact: NaN and
/// +-Inf all make the maximum non-finite. Measured: the per-batch divergence
/// check on 784-30-10 went from 28% of an epoch to 7%.
/// With AVX-512, a contiguous float or double matrix is checked instead by a class
/// test of every vector (NaN or +-Inf), OR-ed into masks: no dependency chain through
/// a running maximum. 784-30-10 (sgd checks its 25,000 parameters after every 16
/// mini-batches): 29.9 -> 29.6 ms per epoch (median of 5 interleaved runs); 157 MB of
/// inputs from memory: no change (6.0-6.5 ms either way).
template <class D>
[[nodiscard]] bool all_finite(const Eigen::MatrixBase<D>& m) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  using S = typename D::Scalar;
  if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<D>, D> &&
                (std::is_same_v<S, float> || std::is_same_v<S, double>)) {
    constexpr Eigen::Index lanes = 64 / sizeof(S);
    const S* p = m.derived().data();
    const Eigen::Index n = m.size();
    auto bad = [p](Eigen::Index i, unsigned in) -> unsigned {
      if constexpr (std::is_same_v<S, float>) {
        const auto k = static_cast<__mmask16>(in);
        return _mm512_mask_fpclass_ps_mask(k, _mm512_maskz_loadu_ps(k, p + i), 0x99);
      } else {
        const auto k = static_cast<__mmask8>(in);
        return _mm512_mask_fpclass_pd_mask(k, _mm512_maskz_loadu_pd(k, p + i), 0x99);
      }
    };
    constexpr unsigned all = lanes == 16 ? 0xFFFFu : 0xFFu;
    unsigned found = 0;
    Eigen::Index i = 0;
    for (; i + 4 * lanes <= n; i += 4 * lanes) {
      found |=
          bad(i, all) | bad(i + lanes, all) | bad(i + 2 * lanes, all) | bad(i + 3 * lanes, all);
    }
    for (; i < n; i += lanes) {
      const Eigen::Index left = std::min(lanes, n - i);
      found |= bad(i, left == lanes ? all : (1u << left) - 1u);
    }
    return found == 0;
  }
#endif
  return m.size() == 0 || std::isfinite(m.cwiseAbs().template maxCoeff<Eigen::PropagateNaN>());
}

}  // namespace backprop::detail
