/// \file
/// \brief Matrix products of the batched training path, sized to the shapes, without
/// heap allocations after the first product of a shape (internal).
#pragma once

#include <Eigen/Core>

#include "../instruction_set.hpp"
#include "elementwise.hpp"
#if BACKPROP_X86_KERNELS
#include "intrinsics.hpp"
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
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

/// Products with fewer multiply-adds than this run on one thread even with more Eigen
/// threads: a parallel region costs tens of microseconds on a busy machine, about what
/// such a product takes on one core (the chapter-6 CNN's batch-10 and batch-1 products,
/// 0.3M-3M multiply-adds, ran its epoch 1.4-1.8x slower on two threads than on one).
inline constexpr Eigen::Index parallel_product_work = Eigen::Index{1} << 22;

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
/// Products with at most this many multiply-adds take backprop's kernels even where
/// Eigen's GEMM has the same vectors (kernel_product_takes).
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

/// C = alpha * A B (+ C if accumulate) for n <= 2 columns (a layer's batch-1
/// inference): per column, blocks of up to 128 rows (AVX-512) whose whole columns of A
/// stream through in order, as in Eigen's matrix-vector product (blocks of 32 rows
/// took 1.7 times as long for 784-100-10).
BACKPROP_TARGET_AVX512 inline void gemv_avx512(float* c, Eigen::Index ldc, const float* a,
                                               Eigen::Index lda, const float* b, Eigen::Index sb,
                                               Eigen::Index tb, Eigen::Index m, Eigen::Index n,
                                               Eigen::Index k, float alpha, bool accumulate) {
  for (Eigen::Index j = 0; j < n; ++j) {
    for (Eigen::Index r0 = 0; r0 < m; r0 += 128) {
      const Eigen::Index rows = std::min<Eigen::Index>(128, m - r0);
      const auto last = static_cast<__mmask16>(
          rows % 16 == 0 ? 0xFFFFu : (1u << static_cast<unsigned>(rows % 16)) - 1u);
      float* cr = c + r0;
      const float* ar = a + r0;
      switch ((rows + 15) / 16) {
        case 1:
          small_product_columns<1, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, alpha, accumulate);
          break;
        case 2:
          small_product_columns<2, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, alpha, accumulate);
          break;
        case 3:
          small_product_columns<3, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, alpha, accumulate);
          break;
        case 4:
          small_product_columns<4, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, alpha, accumulate);
          break;
        case 5:
          small_product_columns<5, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, alpha, accumulate);
          break;
        case 6:
          small_product_columns<6, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, alpha, accumulate);
          break;
        case 7:
          small_product_columns<7, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, alpha, accumulate);
          break;
        default:
          small_product_columns<8, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, alpha, accumulate);
          break;
      }
    }
  }
}

/// gemv_avx512 with AVX2: blocks of up to 64 rows (8 accumulators).
BACKPROP_TARGET_AVX2 inline void gemv_avx2(float* c, Eigen::Index ldc, const float* a,
                                           Eigen::Index lda, const float* b, Eigen::Index sb,
                                           Eigen::Index tb, Eigen::Index m, Eigen::Index n,
                                           Eigen::Index k, float alpha, bool accumulate) {
  for (Eigen::Index j = 0; j < n; ++j) {
    for (Eigen::Index r0 = 0; r0 < m; r0 += 64) {
      const Eigen::Index rows = std::min<Eigen::Index>(64, m - r0);
      const bool masked = rows % 8 != 0;
      const __m256i last = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows % 8)),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      float* cr = c + r0;
      const float* ar = a + r0;
      switch ((rows + 7) / 8) {
        case 1:
          small_product_columns_avx2<1, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, masked, alpha,
                                           accumulate);
          break;
        case 2:
          small_product_columns_avx2<2, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, masked, alpha,
                                           accumulate);
          break;
        case 3:
          small_product_columns_avx2<3, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, masked, alpha,
                                           accumulate);
          break;
        case 4:
          small_product_columns_avx2<4, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, masked, alpha,
                                           accumulate);
          break;
        case 5:
          small_product_columns_avx2<5, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, masked, alpha,
                                           accumulate);
          break;
        case 6:
          small_product_columns_avx2<6, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, masked, alpha,
                                           accumulate);
          break;
        case 7:
          small_product_columns_avx2<7, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, masked, alpha,
                                           accumulate);
          break;
        default:
          small_product_columns_avx2<8, 1>(cr, ldc, ar, lda, b, sb, tb, j, k, last, masked, alpha,
                                           accumulate);
          break;
      }
    }
  }
}

/// blocked_product's depth of a block: 128 values of k, so that a block of A (32 rows
/// with AVX-512, 16 with AVX2: 16 or 8 KB) stays in the level-1 cache while it meets
/// every column of the product.
inline constexpr Eigen::Index blocked_depth = 128;

/// C = alpha * A B (+ C if accumulate) for any m, columns [j0, j1) of C, with the
/// AVX-512 small_product_columns on blocks of 32 rows x 8 columns x blocked_depth
/// (16 accumulators; A is not packed: its columns are contiguous).
BACKPROP_TARGET_AVX512 inline void blocked_product_avx512(
    float* c, Eigen::Index ldc, const float* a, Eigen::Index lda, const float* b, Eigen::Index sb,
    Eigen::Index tb, Eigen::Index m, Eigen::Index j0, Eigen::Index j1, Eigen::Index k, float alpha,
    bool accumulate) {
  for (Eigen::Index p0 = 0; p0 < k; p0 += blocked_depth) {
    const Eigen::Index kc = std::min(blocked_depth, k - p0);
    const bool add = accumulate || p0 > 0;
    const float* ap = a + p0 * lda;
    const float* bp = b + p0 * sb;
    for (Eigen::Index r0 = 0; r0 < m; r0 += 32) {
      const Eigen::Index rows = std::min<Eigen::Index>(32, m - r0);
      const auto last = static_cast<__mmask16>(
          rows % 16 == 0 ? 0xFFFFu : (1u << static_cast<unsigned>(rows % 16)) - 1u);
      float* cr = c + r0;
      const float* ar = ap + r0;
      Eigen::Index j = j0;
      if (rows > 16) {
        for (; j + 8 <= j1; j += 8) {
          small_product_columns<2, 8>(cr, ldc, ar, lda, bp, sb, tb, j, kc, last, alpha, add);
        }
        for (; j < j1; ++j) {
          small_product_columns<2, 1>(cr, ldc, ar, lda, bp, sb, tb, j, kc, last, alpha, add);
        }
      } else {
        for (; j + 8 <= j1; j += 8) {
          small_product_columns<1, 8>(cr, ldc, ar, lda, bp, sb, tb, j, kc, last, alpha, add);
        }
        for (; j < j1; ++j) {
          small_product_columns<1, 1>(cr, ldc, ar, lda, bp, sb, tb, j, kc, last, alpha, add);
        }
      }
    }
  }
}

/// blocked_product_avx512 with AVX2: blocks of 16 rows x 4 columns (8 accumulators of
/// the 16 registers).
BACKPROP_TARGET_AVX2 inline void blocked_product_avx2(float* c, Eigen::Index ldc, const float* a,
                                                      Eigen::Index lda, const float* b,
                                                      Eigen::Index sb, Eigen::Index tb,
                                                      Eigen::Index m, Eigen::Index j0,
                                                      Eigen::Index j1, Eigen::Index k, float alpha,
                                                      bool accumulate) {
  for (Eigen::Index p0 = 0; p0 < k; p0 += blocked_depth) {
    const Eigen::Index kc = std::min(blocked_depth, k - p0);
    const bool add = accumulate || p0 > 0;
    const float* ap = a + p0 * lda;
    const float* bp = b + p0 * sb;
    for (Eigen::Index r0 = 0; r0 < m; r0 += 16) {
      const Eigen::Index rows = std::min<Eigen::Index>(16, m - r0);
      const bool masked = rows % 8 != 0;
      const __m256i last = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rows % 8)),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      float* cr = c + r0;
      const float* ar = ap + r0;
      Eigen::Index j = j0;
      if (rows > 8) {
        for (; j + 4 <= j1; j += 4) {
          small_product_columns_avx2<2, 4>(cr, ldc, ar, lda, bp, sb, tb, j, kc, last, masked, alpha,
                                           add);
        }
        for (; j < j1; ++j) {
          small_product_columns_avx2<2, 1>(cr, ldc, ar, lda, bp, sb, tb, j, kc, last, masked, alpha,
                                           add);
        }
      } else {
        for (; j + 4 <= j1; j += 4) {
          small_product_columns_avx2<1, 4>(cr, ldc, ar, lda, bp, sb, tb, j, kc, last, masked, alpha,
                                           add);
        }
        for (; j < j1; ++j) {
          small_product_columns_avx2<1, 1>(cr, ldc, ar, lda, bp, sb, tb, j, kc, last, masked, alpha,
                                           add);
        }
      }
    }
  }
}

/// dst (cols x rows, column-major, columns ldd apart, `cols` when ldd is 0) = the
/// transpose of the rows x cols column-major matrix at src (columns ld apart), in 16 x
/// 16 tiles: both sides then
/// move through whole cache lines (a 1024 x 1024 transpose element by element took a
/// third as long as the product it served, in a build without -march).
template <class Scalar>
void transpose_into(Scalar* dst, const Scalar* src, Eigen::Index rows, Eigen::Index cols,
                    Eigen::Index ld, Eigen::Index ldd = 0) {
  constexpr Eigen::Index tile = 16;
  if (ldd == 0) ldd = cols;
  for (Eigen::Index c0 = 0; c0 < cols; c0 += tile) {
    const Eigen::Index c1 = std::min(cols, c0 + tile);
    for (Eigen::Index r0 = 0; r0 < rows; r0 += tile) {
      const Eigen::Index r1 = std::min(rows, r0 + tile);
      for (Eigen::Index c = c0; c < c1; ++c) {
        for (Eigen::Index r = r0; r < r1; ++r) dst[r * ldd + c] = src[c * ld + r];
      }
    }
  }
}

/// Packed products: for products of at least this many multiply-adds, kernel_product
/// copies blocks of both operands into contiguous panels first (as Eigen's GEMM and
/// every BLAS do). Unpacked, the kernels above read 128 columns of A that lie 4 KB
/// apart for 1024-row weights, which all fall in the same level-1 cache sets: a
/// 1024 x 1024 x 256 product ran at half the speed of Eigen's AVX-512 GEMM.
inline constexpr Eigen::Index packed_product_work = 1 << 20;

/// The depth of the packed blocks (a 32 x 128 block of A is 16 KB) and the columns of
/// B packed at once (384 x 128: 192 KB, for the level-2 cache).
inline constexpr Eigen::Index packed_depth = 128;
inline constexpr Eigen::Index packed_columns = 384;

/// One thread's packing buffer of at least `floats` values, 64-byte aligned; kept and
/// grown, never shrunk (a thread's largest product decides its size).
inline float* packing_buffer(std::size_t floats) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < floats + 16) buffer.resize(floats + 16);
  const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
  return buffer.data() + (64 - address % 64) % 64 / sizeof(float);
}

/// C[0:rows, 0:cols] = alpha * PA PB (+ C if accumulate) for a packed MR x kc block
/// PA (pa[p * 16 V + i]) and kc x 8 block PB (pb[p * 8 + t], zero beyond cols).
template <int V>
BACKPROP_TARGET_AVX512 inline void packed_tile_avx512(float* c, Eigen::Index ldc, const float* pa,
                                                      const float* pb, Eigen::Index kc,
                                                      Eigen::Index rows, Eigen::Index cols,
                                                      float alpha, bool accumulate) {
  constexpr int C = 8;
  __m512 acc[C * V];
  BACKPROP_UNROLL
  for (int i = 0; i < C * V; ++i) acc[i] = _mm512_setzero_ps();
  for (Eigen::Index p = 0; p < kc; ++p) {
    __m512 av[V];
    BACKPROP_UNROLL
    for (int v = 0; v < V; ++v) av[v] = _mm512_load_ps(pa + p * 16 * V + 16 * v);
    BACKPROP_UNROLL
    for (int t = 0; t < C; ++t) {
      const __m512 x = _mm512_set1_ps(pb[p * C + t]);
      BACKPROP_UNROLL
      for (int v = 0; v < V; ++v) acc[t * V + v] = _mm512_fmadd_ps(av[v], x, acc[t * V + v]);
    }
  }
  const __m512 scale = _mm512_set1_ps(alpha);
  const auto tail = rows - 16 * (V - 1);
  const auto last =
      static_cast<__mmask16>(tail >= 16 ? 0xFFFFu : (1u << static_cast<unsigned>(tail)) - 1u);
  for (Eigen::Index t = 0; t < std::min<Eigen::Index>(cols, C); ++t) {
    float* out = c + t * ldc;
    BACKPROP_UNROLL
    for (int v = 0; v < V; ++v) {
      const __mmask16 keep = v == V - 1 ? last : static_cast<__mmask16>(0xFFFFu);
      __m512 r = _mm512_mul_ps(acc[t * V + v], scale);
      if (accumulate) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(keep, out + 16 * v));
      _mm512_mask_storeu_ps(out + 16 * v, keep, r);
    }
  }
}

/// packed_tile_avx512 with AVX2: 8 V rows x 4 columns (8 accumulators; with 12, g++ keeps some in
/// memory).
template <int V>
BACKPROP_TARGET_AVX2 inline void packed_tile_avx2(float* c, Eigen::Index ldc, const float* pa,
                                                  const float* pb, Eigen::Index kc,
                                                  Eigen::Index rows, Eigen::Index cols, float alpha,
                                                  bool accumulate) {
  constexpr int C = 4;
  __m256 acc[C * V];
  BACKPROP_UNROLL
  for (int i = 0; i < C * V; ++i) acc[i] = _mm256_setzero_ps();
  for (Eigen::Index p = 0; p < kc; ++p) {
    __m256 av[V];
    BACKPROP_UNROLL
    for (int v = 0; v < V; ++v) av[v] = _mm256_load_ps(pa + p * 8 * V + 8 * v);
    BACKPROP_UNROLL
    for (int t = 0; t < C; ++t) {
      const __m256 x = _mm256_broadcast_ss(pb + p * C + t);
      BACKPROP_UNROLL
      for (int v = 0; v < V; ++v) acc[t * V + v] = _mm256_fmadd_ps(av[v], x, acc[t * V + v]);
    }
  }
  const __m256 scale = _mm256_set1_ps(alpha);
  const auto tail = static_cast<int>(rows - 8 * (V - 1));
  const __m256i last =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (Eigen::Index t = 0; t < std::min<Eigen::Index>(cols, C); ++t) {
    float* out = c + t * ldc;
    BACKPROP_UNROLL
    for (int v = 0; v < V; ++v) {
      __m256 r = _mm256_mul_ps(acc[t * V + v], scale);
      if (v == V - 1 && tail < 8) {
        if (accumulate) r = _mm256_add_ps(r, _mm256_maskload_ps(out + 8 * v, last));
        _mm256_maskstore_ps(out + 8 * v, last, r);
      } else {
        if (accumulate) r = _mm256_add_ps(r, _mm256_loadu_ps(out + 8 * v));
        _mm256_storeu_ps(out + 8 * v, r);
      }
    }
  }
}

/// Packs a full group of NR columns of B (B(p, t) = b[p * sb + t * tb], p < kc) as
/// dst[p * NR + t] with vector moves where B's rows (tb == 1: copies) or columns
/// (sb == 1: 4 x 4 transposes, SSE, which every x86-64 CPU has) are contiguous; false
/// (nothing done) otherwise. The scalar gather it replaces took a fifth of the packed
/// product's time in W4 (784-1024-1024-10, batch 256).
template <Eigen::Index NR>
inline bool pack_group(float* dst, const float* b, Eigen::Index sb, Eigen::Index tb,
                       Eigen::Index kc) {
  if constexpr (NR % 4 == 0) {
    if (tb == 1) {
      for (Eigen::Index p = 0; p < kc; ++p) std::copy_n(b + p * sb, NR, dst + p * NR);
      return true;
    }
    if (sb == 1) {
      Eigen::Index p = 0;
      for (; p + 4 <= kc; p += 4) {
        for (Eigen::Index h = 0; h < NR; h += 4) {
          __m128 r0 = _mm_loadu_ps(b + h * tb + p);
          __m128 r1 = _mm_loadu_ps(b + (h + 1) * tb + p);
          __m128 r2 = _mm_loadu_ps(b + (h + 2) * tb + p);
          __m128 r3 = _mm_loadu_ps(b + (h + 3) * tb + p);
          _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
          _mm_storeu_ps(dst + p * NR + h, r0);
          _mm_storeu_ps(dst + (p + 1) * NR + h, r1);
          _mm_storeu_ps(dst + (p + 2) * NR + h, r2);
          _mm_storeu_ps(dst + (p + 3) * NR + h, r3);
        }
      }
      for (; p < kc; ++p) {
        for (Eigen::Index t = 0; t < NR; ++t) dst[p * NR + t] = b[t * tb + p];
      }
      return true;
    }
  }
  return false;
}

/// C = alpha * A B (+ C if accumulate) for columns [j0, j1) of C, A column-major
/// (columns lda apart) or, if trans_a, its transpose (A(i, p) = a[i * lda + p], packed
/// in place of a transposed copy), B(p, j) = b[p * sb + j * tb]: blocks of
/// packed_columns columns and packed_depth depth of B are packed into groups of NR
/// columns, blocks of up to MaxV vectors of W rows of A into panels, and
/// tile(vectors, ...) multiplies one panel of A by one group of B (the last panel has
/// as many vectors as its rows need). AVX-512: 48 x 8 tiles (24 accumulators of the 32
/// registers: 3 loads and 8 broadcasts per 24 multiply-adds; W4 trained 1.14x faster
/// than with 32 x 8 tiles); AVX2: 16 x 4 (8 of 16).
template <Eigen::Index W, Eigen::Index MaxV, Eigen::Index NR, class Tile>
inline void packed_product(float* c, Eigen::Index ldc, const float* a, Eigen::Index lda,
                           bool trans_a, const float* b, Eigen::Index sb, Eigen::Index tb,
                           Eigen::Index m, Eigen::Index j0, Eigen::Index j1, Eigen::Index k,
                           float alpha, bool accumulate, Tile tile) {
  constexpr Eigen::Index MR = W * MaxV;
  const Eigen::Index groups_max = (packed_columns + NR - 1) / NR;
  float* pa =
      packing_buffer(static_cast<std::size_t>(MR * packed_depth + groups_max * NR * packed_depth));
  float* pb = pa + MR * packed_depth;
  for (Eigen::Index jc = j0; jc < j1; jc += packed_columns) {
    const Eigen::Index nc = std::min(packed_columns, j1 - jc);
    for (Eigen::Index p0 = 0; p0 < k; p0 += packed_depth) {
      const Eigen::Index kc = std::min(packed_depth, k - p0);
      const bool add = accumulate || p0 > 0;
      // B's block, group by group: pb[g * NR * kc + p * NR + t] = B(p0 + p, jc + g NR + t).
      for (Eigen::Index g = 0; g * NR < nc; ++g) {
        float* dst = pb + g * NR * kc;
        const Eigen::Index cols = std::min(NR, nc - g * NR);
        if (cols == NR && pack_group<NR>(dst, b + p0 * sb + (jc + g * NR) * tb, sb, tb, kc)) {
          continue;
        }
        for (Eigen::Index t = 0; t < NR; ++t) {
          if (t < cols) {
            const float* src = b + p0 * sb + (jc + g * NR + t) * tb;
            for (Eigen::Index p = 0; p < kc; ++p) dst[p * NR + t] = src[p * sb];
          } else {
            for (Eigen::Index p = 0; p < kc; ++p) dst[p * NR + t] = 0.0f;
          }
        }
      }
      for (Eigen::Index r0 = 0; r0 < m; r0 += MR) {
        const Eigen::Index rows = std::min(MR, m - r0);
        const Eigen::Index vectors = (rows + W - 1) / W;
        const Eigen::Index panel = vectors * W;
        // A's panel: pa[p * panel + i] = A(r0 + i, p0 + p), zero beyond rows.
        if (trans_a) transpose_into(pa, a + r0 * lda + p0, kc, rows, lda, panel);
        for (Eigen::Index p = 0; p < kc; ++p) {
          float* dst = pa + p * panel;
          if (!trans_a) {
            const float* src = a + r0 + (p0 + p) * lda;
            std::copy(src, src + rows, dst);
          }
          std::fill(dst + rows, dst + panel, 0.0f);
        }
        for (Eigen::Index g = 0; g * NR < nc; ++g) {
          float* out = c + r0 + (jc + g * NR) * ldc;
          const Eigen::Index cols = std::min(NR, nc - g * NR);
          tile(vectors, out, ldc, pa, pb + g * NR * kc, kc, rows, cols, alpha, add);
        }
      }
    }
  }
}
#endif

#if BACKPROP_X86_KERNELS
/// Whether kernel_product computes an m x n x k product at instruction-set level
/// `isa`: small ones always (Eigen's GEMM packs both operands, which dominates at these
/// sizes: 784-30-10 with batches of 10 spent 9% of an epoch in the three 10 x 30 x 10
/// products of the last layer), one- and two-column ones up to 128 rows (batch-1
/// inference), and any where Eigen was compiled for narrower vectors than the CPU has
/// (a build without -march: Eigen's SSE GEMM reaches a quarter of what AVX-512 does).
inline bool kernel_product_takes(int isa, Eigen::Index m, Eigen::Index n, Eigen::Index k) {
  if (isa < 1 || m <= 0 || n <= 0) return false;
  return isa > eigen_isa || (n <= 2 && m <= 128) || m * n * k <= small_product_work;
}

/// Whether kernel_product packs the operands of an m x n x k product whose A has columns
/// lda apart: big products whose columns of A are a multiple of 4 KB apart, which the
/// unpacked kernels read from the same level-1 cache sets. Elsewhere the unpacked ones
/// are faster (on Zen 4, AVX-512: 128 x 64 x 256 at 198 GFLOP/s against 159 packed, 512
/// x 256 x 512 at 221 against 211; 1024 x 256 x 1024 at 181 against 210). Inference
/// too: 784-100-10's feedforward of 2,000-5,000 columns took 1.25-1.3 times as long
/// packed (B's packing is scalar), 7,000 the same, 10,000 7% less.
inline bool kernel_product_packs(Eigen::Index n, Eigen::Index m, Eigen::Index k, Eigen::Index lda) {
  return n > 2 && m * n * k >= packed_product_work && lda % 1024 == 0;
}

/// C = alpha * A B (+ C if accumulate), float, column-major C and A (columns ldc and
/// lda apart; with trans_a, A is the transpose of the column-major matrix at a),
/// B(p, j) = b[p * sb + j * tb], at level `isa` (kernel_product_takes(isa, m, n, k) must
/// hold, and n > 2 if trans_a): gemv for one or two columns, packed_product where
/// kernel_product_packs says so or trans_a, blocked_product otherwise.
inline void kernel_product(float* c, Eigen::Index ldc, const float* a, Eigen::Index lda,
                           const float* b, Eigen::Index sb, Eigen::Index tb, Eigen::Index m,
                           Eigen::Index n, Eigen::Index k, float alpha, bool accumulate, int isa,
                           bool trans_a = false) {
  if (n <= 2) {
    if (isa >= 2) {
      gemv_avx512(c, ldc, a, lda, b, sb, tb, m, n, k, alpha, accumulate);
    } else {
      gemv_avx2(c, ldc, a, lda, b, sb, tb, m, n, k, alpha, accumulate);
    }
    return;
  }
  const bool packs = trans_a || kernel_product_packs(n, m, k, lda);
  const auto columns = [&](Eigen::Index j0, Eigen::Index j1) {
    if (packs && isa >= 2) {
      packed_product<16, 3, 8>(c, ldc, a, lda, trans_a, b, sb, tb, m, j0, j1, k, alpha, accumulate,
                               [](Eigen::Index vectors, auto... x) {
                                 if (vectors == 3) {
                                   packed_tile_avx512<3>(x...);
                                 } else if (vectors == 2) {
                                   packed_tile_avx512<2>(x...);
                                 } else {
                                   packed_tile_avx512<1>(x...);
                                 }
                               });
    } else if (packs) {
      packed_product<8, 2, 4>(c, ldc, a, lda, trans_a, b, sb, tb, m, j0, j1, k, alpha, accumulate,
                              [](Eigen::Index vectors, auto... x) {
                                if (vectors == 2) {
                                  packed_tile_avx2<2>(x...);
                                } else {
                                  packed_tile_avx2<1>(x...);
                                }
                              });
    } else if (isa >= 2) {
      blocked_product_avx512(c, ldc, a, lda, b, sb, tb, m, j0, j1, k, alpha, accumulate);
    } else {
      blocked_product_avx2(c, ldc, a, lda, b, sb, tb, m, j0, j1, k, alpha, accumulate);
    }
  };
#if defined(_OPENMP)
  // On Eigen's threads, as its own GEMM would be: ranges of whole 8-column groups.
  const int threads = static_cast<int>(std::min<Eigen::Index>(Eigen::nbThreads(), (n + 7) / 8));
  if (threads > 1 && omp_in_parallel() == 0 && m * n * k >= parallel_product_work) {
    const Eigen::Index groups = (n + 7) / 8;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
      columns(std::min(n, groups * t / threads * 8), std::min(n, groups * (t + 1) / threads * 8));
    }
    return;
  }
#endif
  columns(0, n);
}
#endif

/// The operands of one product C = alpha op(A) op(B) (+ C): column-major storage with
/// unit inner stride; op(A) is m x k (A itself k x m when transposed), op(B) k x n.
/// The transpositions are the template parameters of the functions that take it.
template <class Scalar>
struct ProductOperands {
  Scalar* c;
  Eigen::Index ldc;
  const Scalar* a;
  Eigen::Index lda;
  const Scalar* b;
  Eigen::Index ldb;
  Eigen::Index m, n, k;
  Scalar alpha;
  bool accumulate;
};

/// The operands of dst (+)= alpha op(a) op(b) for gemm_operand types.
template <bool TransA, bool TransB, class Scalar, class Dst, class A, class B>
ProductOperands<Scalar> product_operands(Dst& dst, const A& a, const B& b, Scalar alpha,
                                         bool accumulate) {
  return {dst.data(),
          dst.outerStride(),
          a.data(),
          a.outerStride(),
          b.data(),
          b.outerStride(),
          TransA ? a.cols() : a.rows(),
          TransB ? b.rows() : b.cols(),
          TransA ? a.rows() : a.cols(),
          alpha,
          accumulate};
}

#if BACKPROP_PERSISTENT_GEMM
/// Eigen's GEMM packing buffers for one call site (GemmWorkspace).
template <class Scalar>
using GemmBlocking =
    Eigen::internal::gemm_blocking_space<Eigen::ColMajor, Scalar, Scalar, Eigen::Dynamic,
                                         Eigen::Dynamic, Eigen::Dynamic, 1, false>;
#endif

/// Eigen maps of a ProductOperands' column-major storage, op(A) and op(B) read in
/// place (a transposed operand as row-major).
template <class Scalar, bool TransA, bool TransB>
struct OperandMaps {
  static constexpr int order_a = TransA ? Eigen::RowMajor : Eigen::ColMajor;
  static constexpr int order_b = TransB ? Eigen::RowMajor : Eigen::ColMajor;
  using Stride = Eigen::OuterStride<>;
  using A =
      Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, order_a>, 0, Stride>;
  using B =
      Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, order_b>, 0, Stride>;
  using C = Eigen::Map<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>, 0, Stride>;
};

/// Eigen's product on raw operands: C (+)= alpha op(A) op(B), for the products
/// backprop's kernels do not take (double, the portable level, the largest products of
/// a build whose Eigen has the CPU's vectors). The batched products of the Dense and
/// Conv2D layers and of DynamicNetwork reach Eigen through here, and this calls Eigen's
/// GEMM and GEMV kernels directly (its internal general_matrix_matrix_product and
/// general_matrix_vector_product, as its operator* does after choosing them): Eigen's
/// product templates are then instantiated once per scalar type and pair of
/// transpositions, not once per call site and operand type through its expression
/// machinery. For the quick start (784-30-10, float) that took about 25% off the
/// compile's time and 27% off its memory (docs/performance.md, "Compile time").
///
/// Products with m + n + k < small_product_size are a plain loop (Eigen's operator*
/// evaluates those coefficient by coefficient too); one column is Eigen's GEMV; the
/// rest its GEMM, reading transposed operands in place as row-major. `blocking`, when
/// given, holds the GEMM's packing buffers between calls (single-threaded); with more
/// Eigen threads (OpenMP) the GEMM runs on them and packs per thread. `OneColumn` (n is
/// 1 by the destination's type: a layer's per-sample forward) leaves the GEMM out, so a
/// program that only runs samples through a network does not compile it.
template <class Scalar, bool TransA, bool TransB, bool OneColumn = false>
#if defined(__GNUC__)
__attribute__((noinline))
#endif
void eigen_product(const ProductOperands<Scalar>& p, [[maybe_unused]] void* blocking) {
  const Eigen::Index m = p.m, n = OneColumn ? 1 : p.n, k = p.k;
  if (m <= 0 || n <= 0) return;
  if (!p.accumulate) {
    for (Eigen::Index j = 0; j < n; ++j) std::fill_n(p.c + j * p.ldc, m, Scalar(0));
  }
  if (k <= 0) return;
  if (m + n + k < small_product_size) {
    for (Eigen::Index j = 0; j < n; ++j) {
      for (Eigen::Index i = 0; i < m; ++i) {
        Scalar sum(0);
        for (Eigen::Index q = 0; q < k; ++q) {
          sum += (TransA ? p.a[i * p.lda + q] : p.a[q * p.lda + i]) *
                 (TransB ? p.b[q * p.ldb + j] : p.b[j * p.ldb + q]);
        }
        p.c[j * p.ldc + i] += p.alpha * sum;
      }
    }
    return;
  }
#if BACKPROP_PERSISTENT_GEMM
  namespace ei = Eigen::internal;
  if (n == 1) {
    // op(B) is one column: b's first column, or its first row when transposed.
    if constexpr (TransA) {
      // Eigen's row-major GEMV reads a contiguous vector.
      const Scalar* x = p.b;
      std::vector<Scalar> copy;
      if constexpr (TransB) {
        copy.resize(static_cast<std::size_t>(k));
        for (Eigen::Index q = 0; q < k; ++q) copy[static_cast<std::size_t>(q)] = p.b[q * p.ldb];
        x = copy.data();
      }
      using Lhs = ei::const_blas_data_mapper<Scalar, Eigen::Index, Eigen::RowMajor>;
      using Rhs = ei::const_blas_data_mapper<Scalar, Eigen::Index, Eigen::ColMajor>;
      ei::general_matrix_vector_product<Eigen::Index, Scalar, Lhs, Eigen::RowMajor, false, Scalar,
                                        Rhs, false>::run(m, k, Lhs(p.a, p.lda), Rhs(x, 1), p.c, 1,
                                                         p.alpha);
    } else {
      using Lhs = ei::const_blas_data_mapper<Scalar, Eigen::Index, Eigen::ColMajor>;
      using Rhs = ei::const_blas_data_mapper<Scalar, Eigen::Index, Eigen::RowMajor>;
      ei::general_matrix_vector_product<Eigen::Index, Scalar, Lhs, Eigen::ColMajor, false, Scalar,
                                        Rhs, false>::run(m, k, Lhs(p.a, p.lda),
                                                         Rhs(p.b, TransB ? p.ldb : 1), p.c, 1,
                                                         p.alpha);
    }
    return;
  }
  if constexpr (!OneColumn) {
    using Maps = OperandMaps<Scalar, TransA, TransB>;
    using Gemm =
        ei::general_matrix_matrix_product<Eigen::Index, Scalar, Maps::order_a, false, Scalar,
                                          Maps::order_b, false, Eigen::ColMajor, 1>;
    const bool one_thread = Eigen::nbThreads() == 1 || m * n * k < parallel_product_work;
    if (blocking != nullptr && one_thread) {
      Gemm::run(m, n, k, p.a, p.lda, p.b, p.ldb, p.c, 1, p.ldc, p.alpha,
                *static_cast<GemmBlocking<Scalar>*>(blocking), nullptr);
      return;
    }
    if (one_thread) {
      GemmBlocking<Scalar> local(m, n, k, 1, true);
      Gemm::run(m, n, k, p.a, p.lda, p.b, p.ldb, p.c, 1, p.ldc, p.alpha, local, nullptr);
      return;
    }
    const typename Maps::A a(p.a, m, k, typename Maps::Stride(p.lda));
    const typename Maps::B b(p.b, k, n, typename Maps::Stride(p.ldb));
    typename Maps::C c(p.c, m, n, typename Maps::Stride(p.ldc));
    GemmBlocking<Scalar> local(m, n, k, 1, true);
    ei::parallelize_gemm<true>(
        ei::gemm_functor<Scalar, Eigen::Index, Gemm, typename Maps::A, typename Maps::B,
                         typename Maps::C, GemmBlocking<Scalar>>(a, b, c, p.alpha, local),
        m, n, k, false);
  }
#else
  using Maps = OperandMaps<Scalar, TransA, TransB>;
  using Stride = typename Maps::Stride;
  const typename Maps::A a(p.a, m, k, Stride(p.lda));
  const typename Maps::B b(p.b, k, n, Stride(p.ldb));
  typename Maps::C c(p.c, m, n, Stride(p.ldc));
  c.noalias() += p.alpha * (a * b);
#endif
}

/// dst = a * b (plain column-major operands; dst does not alias them) without a
/// workspace, for inference: backprop's kernels where kernel_product_takes says so,
/// otherwise Eigen's product (eigen_product).
template <class Dst, class A, class B>
void multiply(Dst& dst, const A& a, const B& b) {
  using Scalar = typename Dst::Scalar;
  if constexpr (gemm_operand<A> && gemm_operand<B> && gemm_operand<Dst>) {
    const Eigen::Index m = a.rows(), n = b.cols(), k = a.cols();
    dst.resize(m, n);
#if BACKPROP_X86_KERNELS
    if constexpr (std::is_same_v<Scalar, float>) {
      const int isa = active_isa();
      if (m + n + k >= small_product_size && kernel_product_takes(isa, m, n, k)) {
        kernel_product(dst.data(), dst.outerStride(), a.data(), a.outerStride(), b.data(), 1,
                       b.outerStride(), m, n, k, 1.0f, false, isa);
        return;
      }
    }
#endif
    constexpr bool one_column = Dst::ColsAtCompileTime == 1 && B::ColsAtCompileTime == 1;
    eigen_product<Scalar, false, false, one_column>(
        product_operands<false, false>(dst, a, b, Scalar(1), false), nullptr);
  } else {
    dst.noalias() = a * b;
  }
}

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
    if (!accumulate) dst.resize(m, n);  // (the kernels below write into dst's storage)
    if constexpr (gemm_operand<A> && gemm_operand<B> && gemm_operand<Dst>) {
#if BACKPROP_X86_KERNELS
      if constexpr (std::is_same_v<Scalar, float>) {
        const int isa = active_isa();
        if (m + n + k >= small_product_size && kernel_product_takes(isa, m, n, k)) {
          const float* a_cols = a.data();
          Eigen::Index lda = a.outerStride();
          bool trans_a = false;
          if constexpr (TransA) trans_a = kernel_product_packs(n, m, k, m);
          if (trans_a) {
            // op(a) = a^T, transposed block by block as the product packs it.
          } else if constexpr (TransA) {
            // op(a) = a^T: its columns are rows of a; transposed into the scratch buffer.
            m_transposed.resize(static_cast<std::size_t>(m * k));
            transpose_into(m_transposed.data(), a.data(), a.rows(), a.cols(), a.outerStride());
            a_cols = m_transposed.data();
            lda = m;
          }
          // B(p, j) of op(b): b(p, j) or, transposed, b(j, p).
          kernel_product(dst.data(), dst.outerStride(), a_cols, lda, b.data(),
                         TransB ? b.outerStride() : 1, TransB ? 1 : b.outerStride(), m, n, k,
                         static_cast<float>(alpha), accumulate, isa, trans_a);
          return;
        }
      }
#endif
      void* blocking = nullptr;
#if BACKPROP_PERSISTENT_GEMM
      if ((Eigen::nbThreads() == 1 || m * n * k < parallel_product_work) &&
          m + n + k >= small_product_size && m > 0 && n > 0 && k > 0) {
        if (!m_blocking || m != m_m || n != m_n || k != m_k) {
          m_blocking.reset();  // (before allocating the next one)
          m_blocking = std::make_unique<GemmBlocking<Scalar>>(m, n, k, 1, true);
          m_blocking->allocateAll();
          m_m = m;
          m_n = n;
          m_k = k;
        }
        blocking = m_blocking.get();
      }
#endif
      eigen_product<Scalar, TransA, TransB>(
          product_operands<TransA, TransB>(dst, a, b, alpha, accumulate), blocking);
    } else {
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
      if (accumulate) {
        dst.noalias() += alpha * (op_a() * op_b());
      } else {
        dst.noalias() = op_a() * op_b();
      }
    }
  }

#if BACKPROP_PERSISTENT_GEMM
  std::unique_ptr<GemmBlocking<Scalar>> m_blocking;
#endif
  Eigen::Index m_m = 0, m_n = 0, m_k = 0;
  std::vector<Scalar> m_transposed;  // kernel_product's op(a) when TransA
};

}  // namespace backprop::detail
