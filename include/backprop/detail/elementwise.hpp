/// \file
/// \brief Element-wise kernels where Eigen was compiled for narrower vectors than the
/// CPU runs: the logistic sigmoid with AVX-512 or AVX2 (internal).
#pragma once

#include <Eigen/Core>
#include <type_traits>

#include "../instruction_set.hpp"
#if BACKPROP_X86_KERNELS
#include "intrinsics.hpp"
#endif

namespace backprop::detail {

#if BACKPROP_X86_KERNELS
/// The widest vectors Eigen's own code was compiled for (0: SSE or none, 1: AVX2 with
/// FMA, 2: AVX-512): where the CPU runs wider ones, backprop's kernels take over.
#if defined(EIGEN_VECTORIZE_AVX512)
inline constexpr int eigen_isa = 2;
#elif defined(EIGEN_VECTORIZE_AVX2) && defined(EIGEN_VECTORIZE_FMA)
inline constexpr int eigen_isa = 1;
#else
inline constexpr int eigen_isa = 0;
#endif

// e^x by Cody and Waite's reduction, x = n ln 2 + r with |r| <= ln(2) / 2 (ln 2 split into
// a part exact in float and a remainder), and Cephes' degree-5 polynomial for
// (e^r - 1 - r) / r^2: within 2 ulp of e^x, as Eigen's own exp.
inline constexpr float exp_log2e = 1.44269504088896341f;
inline constexpr float exp_round = 12582912.0f;  // 1.5 2^23
inline constexpr float exp_ln2_hi = 0.693359375f;
inline constexpr float exp_ln2_lo = -2.12194440e-4f;
inline constexpr float exp_p0 = 1.9875691500e-4f;
inline constexpr float exp_p1 = 1.3981999507e-3f;
inline constexpr float exp_p2 = 8.3334519073e-3f;
inline constexpr float exp_p3 = 4.1665795894e-2f;
inline constexpr float exp_p4 = 1.6666665459e-1f;
inline constexpr float exp_p5 = 5.0000001201e-1f;

/// a[i] = 1 / (1 + e^-max(z[i], -80)) for i < n with AVX-512 (z == a allowed); NaN stays
/// NaN.
BACKPROP_TARGET_AVX512 inline void sigmoid_avx512(const float* z, float* a, Eigen::Index n) {
  const __m512 lo = _mm512_set1_ps(-80.0f);
  const __m512 under = _mm512_set1_ps(-104.0f);  // e^x is 0 in float below
  const __m512 one = _mm512_set1_ps(1.0f);
  // maskz forms: g++ 12 warns falsely about the undefined source of the plain ones.
  const auto all = static_cast<__mmask16>(0xFFFFu);
  for (Eigen::Index i = 0; i < n; i += 16) {
    const auto left = n - i;
    const auto keep =
        static_cast<__mmask16>(left >= 16 ? 0xFFFFu : (1u << static_cast<unsigned>(left)) - 1u);
    // max(constant, v) returns v where v is NaN.
    __m512 x = _mm512_sub_ps(_mm512_setzero_ps(),
                             _mm512_maskz_max_ps(all, lo, _mm512_maskz_loadu_ps(keep, z + i)));
    x = _mm512_maskz_max_ps(all, under, x);
    // k = x log2(e) rounded to the nearest integer (adding and subtracting 1.5 2^23).
    const __m512 k =
        _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(exp_log2e), _mm512_set1_ps(exp_round)),
                      _mm512_set1_ps(exp_round));
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(exp_ln2_hi), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(exp_ln2_lo), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(exp_p0), r, _mm512_set1_ps(exp_p1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_p2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_p3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_p4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_p5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, one));
    const __m512 e = _mm512_maskz_scalef_ps(all, p, k);  // p 2^k
    _mm512_mask_storeu_ps(a + i, keep, _mm512_div_ps(one, _mm512_add_ps(one, e)));
  }
}

/// sigmoid_avx512 with AVX2.
BACKPROP_TARGET_AVX2 inline void sigmoid_avx2(const float* z, float* a, Eigen::Index n) {
  const __m256 lo = _mm256_set1_ps(-80.0f);
  const __m256 under = _mm256_set1_ps(-87.0f);  // 2^k stays a normal float
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (Eigen::Index i = 0; i < n; i += 8) {
    const auto left = static_cast<int>(n - i < 8 ? n - i : 8);
    const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lanes);
    const __m256 v = left == 8 ? _mm256_loadu_ps(z + i) : _mm256_maskload_ps(z + i, keep);
    __m256 x = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_max_ps(lo, v));
    x = _mm256_max_ps(under, x);
    const __m256 k =
        _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(exp_log2e), _mm256_set1_ps(exp_round)),
                      _mm256_set1_ps(exp_round));
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(exp_ln2_hi), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(exp_ln2_lo), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(exp_p0), r, _mm256_set1_ps(exp_p1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_p2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_p3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_p4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_p5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
    // 2^k from its exponent bits (k >= -126 after the clamp; NaN stays NaN through p).
    const __m256i bits =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    const __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
    if (left == 8) {
      _mm256_storeu_ps(a + i, s);
    } else {
      _mm256_maskstore_ps(a + i, keep, s);
    }
  }
}
/// a[i] = max(z[i], 0) for i < n with AVX-512 (z == a allowed); NaN stays NaN.
BACKPROP_TARGET_AVX512 inline void relu_avx512(const float* z, float* a, Eigen::Index n) {
  const auto all = static_cast<__mmask16>(0xFFFFu);
  for (Eigen::Index i = 0; i < n; i += 16) {
    const auto left = n - i;
    const auto keep =
        static_cast<__mmask16>(left >= 16 ? 0xFFFFu : (1u << static_cast<unsigned>(left)) - 1u);
    const __m512 x = _mm512_maskz_loadu_ps(keep, z + i);
    _mm512_mask_storeu_ps(a + i, keep, _mm512_maskz_max_ps(all, _mm512_setzero_ps(), x));
  }
}

/// d[i] = g[i] where z[i] > 0, else 0, for i < n with AVX-512 (d may be z or g).
BACKPROP_TARGET_AVX512 inline void relu_backward_avx512(const float* z, const float* g, float* d,
                                                        Eigen::Index n) {
  for (Eigen::Index i = 0; i < n; i += 16) {
    const auto left = n - i;
    const auto keep =
        static_cast<__mmask16>(left >= 16 ? 0xFFFFu : (1u << static_cast<unsigned>(left)) - 1u);
    const __mmask16 positive = _mm512_mask_cmp_ps_mask(keep, _mm512_maskz_loadu_ps(keep, z + i),
                                                       _mm512_setzero_ps(), _CMP_GT_OQ);
    _mm512_mask_storeu_ps(d + i, keep, _mm512_maskz_loadu_ps(positive, g + i));
  }
}

/// relu_avx512 with AVX2.
BACKPROP_TARGET_AVX2 inline void relu_avx2(const float* z, float* a, Eigen::Index n) {
  Eigen::Index i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(a + i, _mm256_max_ps(_mm256_setzero_ps(), _mm256_loadu_ps(z + i)));
  }
  for (; i < n; ++i) a[i] = z[i] < 0.0f ? 0.0f : z[i];
}

/// relu_backward_avx512 with AVX2 (the comparison's mask AND g: exactly the selection).
BACKPROP_TARGET_AVX2 inline void relu_backward_avx2(const float* z, const float* g, float* d,
                                                    Eigen::Index n) {
  Eigen::Index i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 positive = _mm256_cmp_ps(_mm256_loadu_ps(z + i), _mm256_setzero_ps(), _CMP_GT_OQ);
    _mm256_storeu_ps(d + i, _mm256_and_ps(positive, _mm256_loadu_ps(g + i)));
  }
  for (; i < n; ++i) d[i] = z[i] > 0.0f ? g[i] : 0.0f;
}
#endif

/// Whether an expression is float with directly addressed storage.
template <class E>
concept DirectFloat = std::is_same_v<typename E::Scalar, float> && requires(E& e) {
  e.data();
  e.innerStride();
  e.outerStride();
};

/// Whether e's coefficients lie back to back in memory.
template <class E>
bool contiguous(const E& e) {
  return e.innerStride() == 1 && (e.outerSize() <= 1 || e.outerStride() == e.innerSize());
}

/// Whether the kernels of this file can take operands like E: float with directly
/// addressed storage of the layout of `First` (or a vector).
template <class First, class E>
inline constexpr bool kernel_operand = DirectFloat<E> &&
                                       (bool(First::IsRowMajor) == bool(E::IsRowMajor) ||
                                        bool(First::IsVectorAtCompileTime) ||
                                        bool(E::IsVectorAtCompileTime));

#if BACKPROP_X86_KERNELS
/// Runs kernel(isa, z.data(), in.data()..., out.data(), z.size()) with the level of the
/// CPU where it has wider vectors than Eigen was compiled for and every operand is
/// contiguous float storage of one layout, `out` resized to z's shape if it is a plain
/// matrix; returns false (nothing done) otherwise. `out` may be one of the inputs.
template <class Kernel, class Z, class... In, class Out>
bool run_elementwise(Kernel kernel, const Z& z, Out& out, const In&... in) {
  if constexpr (kernel_operand<Z, const Z> && (kernel_operand<Z, const In> && ...) &&
                kernel_operand<Z, Out>) {
    const int isa = active_isa();
    if (isa <= eigen_isa) return false;
    if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<Out>, Out>) {
      out.resize(z.rows(), z.cols());
    }
    const auto fits = [&z](const auto& e) {
      return e.rows() == z.rows() && e.cols() == z.cols() && contiguous(e);
    };
    if (!contiguous(z) || !fits(out) || !(fits(in) && ...)) return false;
    kernel(isa, z.data(), in.data()..., out.data(), z.size());
    return true;
  }
  return false;
}
#endif

/// a = sigmoid(z) by sigmoid_avx512 or sigmoid_avx2 (see run_elementwise); a may be z.
/// False (nothing done) where those do not apply.
template <class Z, class A>
bool sigmoid_kernel(const Z& z, A& a) {
#if BACKPROP_X86_KERNELS
  return run_elementwise(
      [](int isa, const float* x, float* y, Eigen::Index n) {
        isa >= 2 ? sigmoid_avx512(x, y, n) : sigmoid_avx2(x, y, n);
      },
      z, a);
#else
  (void)z;
  (void)a;
  return false;
#endif
}

/// a = max(z, 0) by relu_avx512 or relu_avx2 (see run_elementwise); a may be z.
template <class Z, class A>
bool relu_kernel(const Z& z, A& a) {
#if BACKPROP_X86_KERNELS
  return run_elementwise(
      [](int isa, const float* x, float* y, Eigen::Index n) {
        isa >= 2 ? relu_avx512(x, y, n) : relu_avx2(x, y, n);
      },
      z, a);
#else
  (void)z;
  (void)a;
  return false;
#endif
}

/// d = g where z > 0, else 0, by relu_backward_avx512 or relu_backward_avx2 (see
/// run_elementwise): Eigen 3.4 does not vectorise select(), and g++ does not
/// if-convert its scalar loop at SSE width (784-1024-1024-10, no -march: 8 times the
/// native build's time in this step).
template <class Z, class G, class D>
bool relu_backward_kernel(const Z& z, const G& g, D& d) {
#if BACKPROP_X86_KERNELS
  return run_elementwise(
      [](int isa, const float* x, const float* dy, float* y, Eigen::Index n) {
        isa >= 2 ? relu_backward_avx512(x, dy, y, n) : relu_backward_avx2(x, dy, y, n);
      },
      z, d, g);
#else
  (void)z;
  (void)g;
  (void)d;
  return false;
#endif
}

}  // namespace backprop::detail
