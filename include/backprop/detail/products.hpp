/// \file
/// \brief Matrix products of the batched training path, sized to the shapes, without
/// heap allocations after the first product of a shape (internal).
#pragma once

#include <Eigen/Core>

#include "../instruction_set.hpp"
#if BACKPROP_X86_KERNELS
#include <immintrin.h>
#endif
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace backprop::detail {

/// Products with m + n + k below this are evaluated coefficient by coefficient
/// (Eigen's lazyProduct), as Eigen's own operator* does; all others take the blocked
/// GEMM kernel. Measured on 784-30-10 / 784-100-10 with mini-batches of 10: using
/// lazyProduct up to 16384 multiply-adds (the 10x30 by 30x10 products) made an epoch
/// 11% (W1) and 24% (W2) slower than the GEMM kernel.
inline constexpr Eigen::Index small_product_size = 20;

/// True for plain column-major storage with unit inner stride (a Matrix, a Map, a
/// block of whole columns): what the GEMM kernel can read directly.
template <class T>
inline constexpr bool gemm_operand = (static_cast<unsigned>(std::remove_cvref_t<T>::Flags) &
                                      Eigen::DirectAccessBit) != 0 &&
                                     (static_cast<unsigned>(std::remove_cvref_t<T>::Flags) &
                                      Eigen::RowMajorBit) == 0 &&
                                     std::remove_cvref_t<T>::InnerStrideAtCompileTime == 1;

#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
#define BACKPROP_PERSISTENT_GEMM 1
#else
#define BACKPROP_PERSISTENT_GEMM 0
#endif

#if BACKPROP_X86_KERNELS
/// Products of float matrices at most this wide (rows of the result) and with at
/// most this many multiply-adds take small_product below instead of Eigen's GEMM,
/// whose packing of both operands dominates at these sizes: 784-30-10 with batches
/// of 10 spent 9% of an epoch in the three 10 x 30 x 10 products of the last layer.
/// With AVX2 (8-lane vectors, 16 registers) up to 96 rows.
inline constexpr Eigen::Index small_product_rows = 128;
inline constexpr Eigen::Index small_product_rows_avx2 = 96;
inline constexpr Eigen::Index small_product_work = 65536;

// Fully unrolled loops over the accumulators: g++ 12 at -O3 otherwise keeps them in
// memory, storing all of them on every step of the loop over k (-fpeel-loops).
#if !defined(BACKPROP_UNROLL)
#if defined(__GNUC__)
#define BACKPROP_UNROLL _Pragma("GCC unroll 16")
#else
#define BACKPROP_UNROLL
#endif
#endif

/// Columns [j0, j0 + C) of C = alpha * A B (+ C if accumulate), column-major, float,
/// m <= 16 V rows: A is m x k with columns `a + p * lda`, B(p, j) = b[p * sb + j * tb].
/// C V 16-lane accumulators (at most 8), so one load of a column of A serves C
/// multiply-adds.
template <int V, int C>
BACKPROP_TARGET_AVX512 inline void small_product_columns(float* c, Eigen::Index ldc, const float* a,
                                                         Eigen::Index lda, const float* b,
                                                         Eigen::Index sb, Eigen::Index tb,
                                                         Eigen::Index j0, Eigen::Index k,
                                                         __mmask16 last, float alpha,
                                                         bool accumulate) {
  __m512 acc[C * V];
  BACKPROP_UNROLL
  for (int i = 0; i < C * V; ++i) acc[i] = _mm512_setzero_ps();
  for (Eigen::Index p = 0; p < k; ++p) {
    const float* col = a + p * lda;
    const float* row = b + p * sb + j0 * tb;
    __m512 av[V];
    BACKPROP_UNROLL
    for (int v = 0; v < V - 1; ++v) av[v] = _mm512_loadu_ps(col + 16 * v);
    av[V - 1] = _mm512_maskz_loadu_ps(last, col + 16 * (V - 1));
    BACKPROP_UNROLL
    for (int t = 0; t < C; ++t) {
      const __m512 x = _mm512_set1_ps(row[t * tb]);
      BACKPROP_UNROLL
      for (int v = 0; v < V; ++v) acc[t * V + v] = _mm512_fmadd_ps(av[v], x, acc[t * V + v]);
    }
  }
  const __m512 scale = _mm512_set1_ps(alpha);
  BACKPROP_UNROLL
  for (int t = 0; t < C; ++t) {
    float* out = c + (j0 + t) * ldc;
    BACKPROP_UNROLL
    for (int v = 0; v < V; ++v) {
      const __mmask16 keep = v == V - 1 ? last : static_cast<__mmask16>(0xFFFFu);
      __m512 r = _mm512_mul_ps(acc[t * V + v], scale);
      if (accumulate) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(keep, out + 16 * v));
      _mm512_mask_storeu_ps(out + 16 * v, keep, r);
    }
  }
}

/// C = alpha * A B (+ C if accumulate) with small_product_columns, 8 / V columns at a
/// time (m <= 16 V), the rest in groups of Cols/2, Cols/4, ..., 1 columns.
template <int V>
BACKPROP_TARGET_AVX512 void small_product(float* c, Eigen::Index ldc, const float* a,
                                          Eigen::Index lda, const float* b, Eigen::Index sb,
                                          Eigen::Index tb, Eigen::Index m, Eigen::Index n,
                                          Eigen::Index k, float alpha, bool accumulate) {
  constexpr int Cols = 8 / V;
  const auto last =
      static_cast<__mmask16>(m % 16 == 0 ? 0xFFFFu : (1u << static_cast<unsigned>(m % 16)) - 1u);
  Eigen::Index j = 0;
  for (; j + Cols <= n; j += Cols) {
    small_product_columns<V, Cols>(c, ldc, a, lda, b, sb, tb, j, k, last, alpha, accumulate);
  }
  if constexpr (Cols >= 8) {
    if (j + 4 <= n) {
      small_product_columns<V, 4>(c, ldc, a, lda, b, sb, tb, j, k, last, alpha, accumulate);
      j += 4;
    }
  }
  if constexpr (Cols >= 4) {
    if (j + 2 <= n) {
      small_product_columns<V, 2>(c, ldc, a, lda, b, sb, tb, j, k, last, alpha, accumulate);
      j += 2;
    }
  }
  if constexpr (Cols >= 2) {
    if (j + 1 <= n) {
      small_product_columns<V, 1>(c, ldc, a, lda, b, sb, tb, j, k, last, alpha, accumulate);
    }
  }
}

/// small_product_columns with AVX2: m <= 8 V rows, C V 8-lane accumulators (at most 12).
template <int V, int C>
BACKPROP_TARGET_AVX2 inline void small_product_columns_avx2(
    float* c, Eigen::Index ldc, const float* a, Eigen::Index lda, const float* b, Eigen::Index sb,
    Eigen::Index tb, Eigen::Index j0, Eigen::Index k, __m256i last, bool masked, float alpha,
    bool accumulate) {
  __m256 acc[C * V];
  BACKPROP_UNROLL
  for (int i = 0; i < C * V; ++i) acc[i] = _mm256_setzero_ps();
  for (Eigen::Index p = 0; p < k; ++p) {
    const float* col = a + p * lda;
    const float* row = b + p * sb + j0 * tb;
    __m256 av[V];
    BACKPROP_UNROLL
    for (int v = 0; v < V - 1; ++v) av[v] = _mm256_loadu_ps(col + 8 * v);
    av[V - 1] =
        masked ? _mm256_maskload_ps(col + 8 * (V - 1), last) : _mm256_loadu_ps(col + 8 * (V - 1));
    BACKPROP_UNROLL
    for (int t = 0; t < C; ++t) {
      const __m256 x = _mm256_set1_ps(row[t * tb]);
      BACKPROP_UNROLL
      for (int v = 0; v < V; ++v) acc[t * V + v] = _mm256_fmadd_ps(av[v], x, acc[t * V + v]);
    }
  }
  const __m256 scale = _mm256_set1_ps(alpha);
  BACKPROP_UNROLL
  for (int t = 0; t < C; ++t) {
    float* out = c + (j0 + t) * ldc;
    BACKPROP_UNROLL
    for (int v = 0; v < V; ++v) {
      __m256 r = _mm256_mul_ps(acc[t * V + v], scale);
      if (masked && v == V - 1) {
        if (accumulate) r = _mm256_add_ps(r, _mm256_maskload_ps(out + 8 * v, last));
        _mm256_maskstore_ps(out + 8 * v, last, r);
      } else {
        if (accumulate) r = _mm256_add_ps(r, _mm256_loadu_ps(out + 8 * v));
        _mm256_storeu_ps(out + 8 * v, r);
      }
    }
  }
}

/// small_product with AVX2 (m <= 8 V <= 96).
template <int V>
BACKPROP_TARGET_AVX2 void small_product_avx2(float* c, Eigen::Index ldc, const float* a,
                                             Eigen::Index lda, const float* b, Eigen::Index sb,
                                             Eigen::Index tb, Eigen::Index m, Eigen::Index n,
                                             Eigen::Index k, float alpha, bool accumulate) {
  constexpr int Cols = V <= 1 ? 8 : V <= 3 ? 4 : V <= 6 ? 2 : 1;
  const bool masked = m % 8 != 0;
  const __m256i last = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(m % 8)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  Eigen::Index j = 0;
  for (; j + Cols <= n; j += Cols) {
    small_product_columns_avx2<V, Cols>(c, ldc, a, lda, b, sb, tb, j, k, last, masked, alpha,
                                        accumulate);
  }
  if constexpr (Cols >= 8) {
    if (j + 4 <= n) {
      small_product_columns_avx2<V, 4>(c, ldc, a, lda, b, sb, tb, j, k, last, masked, alpha,
                                       accumulate);
      j += 4;
    }
  }
  if constexpr (Cols >= 4) {
    if (j + 2 <= n) {
      small_product_columns_avx2<V, 2>(c, ldc, a, lda, b, sb, tb, j, k, last, masked, alpha,
                                       accumulate);
      j += 2;
    }
  }
  if constexpr (Cols >= 2) {
    if (j + 1 <= n) {
      small_product_columns_avx2<V, 1>(c, ldc, a, lda, b, sb, tb, j, k, last, masked, alpha,
                                       accumulate);
    }
  }
}
#endif

/// The packing buffers of one product call site, kept between mini-batches.
///
/// Eigen's product allocates its packing buffers on every call once they exceed
/// EIGEN_STACK_ALLOCATION_LIMIT (128 KiB): for 100x784 weights already. This keeps
/// one set per call site, sized for the last shape, and calls Eigen's GEMM kernel
/// with it (Eigen 3.4's internal general_matrix_matrix_product, the kernel behind
/// its operator*). With more than one Eigen thread (OpenMP) the product goes through
/// Eigen's parallel GEMM instead, which packs per thread. Copies start empty.
template <class Scalar>
class GemmWorkspace {
 public:
  GemmWorkspace() = default;
  GemmWorkspace(const GemmWorkspace&) {}
  GemmWorkspace& operator=(const GemmWorkspace&) { return *this; }

  /// dst = op(a) * op(b) where op transposes when TransA / TransB (a, b, dst plain
  /// column-major; dst does not alias a or b).
  template <bool TransA, bool TransB, class Dst, class A, class B>
  void assign(Dst& dst, const A& a, const B& b) {
    run<TransA, TransB>(dst, a, b, Scalar(1), false);
  }

  /// dst += alpha * op(a) * op(b).
  template <bool TransA, bool TransB, class Dst, class A, class B>
  void add(Dst& dst, Scalar alpha, const A& a, const B& b) {
    run<TransA, TransB>(dst, a, b, alpha, true);
  }

 private:
  template <bool TransA, bool TransB, class Dst, class A, class B>
  void run(Dst& dst, const A& a, const B& b, Scalar alpha, bool accumulate) {
    const Eigen::Index m = TransA ? a.cols() : a.rows();
    const Eigen::Index k = TransA ? a.rows() : a.cols();
    const Eigen::Index n = TransB ? b.rows() : b.cols();
    auto op_a = [&]() -> decltype(auto) {
      if constexpr (TransA)
        return a.transpose();
      else
        return (a);
    };
    auto op_b = [&]() -> decltype(auto) {
      if constexpr (TransB)
        return b.transpose();
      else
        return (b);
    };
    if (m + n + k < small_product_size) {
      if (accumulate) {
        dst.noalias() += alpha * op_a().lazyProduct(op_b());
      } else {
        dst.noalias() = op_a().lazyProduct(op_b());
      }
      return;
    }
#if BACKPROP_X86_KERNELS
    if constexpr (std::is_same_v<Scalar, float> && gemm_operand<A> && gemm_operand<B> &&
                  gemm_operand<Dst>) {
      const int isa = active_isa();
      const Eigen::Index max_rows = isa >= 2 ? small_product_rows : small_product_rows_avx2;
      if (isa >= 1 && m <= max_rows && m * n * k <= small_product_work && m > 0 && n > 0) {
        const float* a_cols = a.data();
        Eigen::Index lda = a.outerStride();
        if constexpr (TransA) {
          // op(a) = a^T: its columns are rows of a; transposed into the scratch buffer.
          m_transposed.resize(static_cast<std::size_t>(m * k));
          Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>>(m_transposed.data(), m,
                                                                           k) = a.transpose();
          a_cols = m_transposed.data();
          lda = m;
        }
        // B(p, j) of op(b): b(p, j) or, transposed, b(j, p).
        const Eigen::Index sb = TransB ? b.outerStride() : 1;
        const Eigen::Index tb = TransB ? 1 : b.outerStride();
        float* const c = dst.data();
        const Eigen::Index ldc = dst.outerStride();
        const auto fa = static_cast<float>(alpha);
        // V = the number of vectors per column (16 lanes: 1 to 8, 8 lanes: 1 to 12), as
        // a template argument.
        if (isa >= 2) {
          const Eigen::Index vectors = (m + 15) / 16;
          [&]<int... V>(std::integer_sequence<int, V...>) {
            (void)((vectors == V + 1 && (small_product<V + 1>(c, ldc, a_cols, lda, b.data(), sb, tb,
                                                              m, n, k, fa, accumulate),
                                         true)) ||
                   ...);
          }
          (std::make_integer_sequence<int, 8>{});
        } else {
          const Eigen::Index vectors = (m + 7) / 8;
          [&]<int... V>(std::integer_sequence<int, V...>) {
            (void)((vectors == V + 1 && (small_product_avx2<V + 1>(c, ldc, a_cols, lda, b.data(),
                                                                   sb, tb, m, n, k, fa, accumulate),
                                         true)) ||
                   ...);
          }
          (std::make_integer_sequence<int, 12>{});
        }
        return;
      }
    }
#endif
#if BACKPROP_PERSISTENT_GEMM
    if constexpr (gemm_operand<A> && gemm_operand<B> && gemm_operand<Dst>) {
      if (Eigen::nbThreads() == 1 && m > 0 && n > 0 && k > 0) {
        if (!m_blocking || m != m_m || n != m_n || k != m_k) {
          m_blocking.reset();
          m_blocking.emplace(m, n, k, 1, true);
          m_blocking->allocateAll();
          m_m = m;
          m_n = n;
          m_k = k;
        }
        if (!accumulate) dst.setZero();
        Eigen::internal::general_matrix_matrix_product<
            Eigen::Index, Scalar, TransA ? Eigen::RowMajor : Eigen::ColMajor, false, Scalar,
            TransB ? Eigen::RowMajor : Eigen::ColMajor, false, Eigen::ColMajor,
            1>::run(m, n, k, a.data(), a.outerStride(), b.data(), b.outerStride(), dst.data(), 1,
                    dst.outerStride(), alpha, *m_blocking, nullptr);
        return;
      }
    }
#endif
    if (accumulate) {
      dst.noalias() += alpha * (op_a() * op_b());
    } else {
      dst.noalias() = op_a() * op_b();
    }
  }

#if BACKPROP_PERSISTENT_GEMM
  using Blocking =
      Eigen::internal::gemm_blocking_space<Eigen::ColMajor, Scalar, Scalar, Eigen::Dynamic,
                                           Eigen::Dynamic, Eigen::Dynamic, 1, false>;
  std::optional<Blocking> m_blocking;
#endif
  Eigen::Index m_m = 0, m_n = 0, m_k = 0;
  std::vector<Scalar> m_transposed;  // small_product's op(a) when TransA
};

}  // namespace backprop::detail
