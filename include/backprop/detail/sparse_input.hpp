/// \file
/// \brief Compressed sparse columns of a training set's inputs, for a first layer
/// that skips zero inputs (internal).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../instruction_set.hpp"
#if BACKPROP_X86_KERNELS
#include "intrinsics.hpp"
#endif
#include <limits>
#include <memory>
#include <numeric>
#include <type_traits>
#include <vector>
#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <cstdlib>
#include <new>

namespace backprop::detail {

/// Frees what allocate_large returned.
struct LargeFree {
  void operator()(void* p) const noexcept { std::free(p); }
};

/// An uninitialised array of n trivially copyable T for a large, short-lived working
/// set (sgd's sparse copy: ~50 MB for MNIST). On Linux, arrays of 4 MiB and more are
/// aligned to 2 MiB and marked for transparent huge pages (madvise), so that the
/// first touch costs one page fault per 2 MiB instead of per 4 KiB: 784-30-10, a
/// one-epoch sgd call from a new network took 11,000 faults and about 20 ms of system
/// time for them. Elsewhere (or if the hint is refused) it is a plain allocation.
template <class T>
std::unique_ptr<T[], LargeFree> allocate_large(std::size_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (n > std::numeric_limits<std::size_t>::max() / sizeof(T) - (std::size_t{2} << 20)) {
    throw std::bad_alloc();
  }
  std::size_t bytes = std::max<std::size_t>(n * sizeof(T), 1);
  void* p = nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::size_t huge = std::size_t{2} << 20;
  if (bytes >= 2 * huge) {
    bytes = (bytes + huge - 1) / huge * huge;  // aligned_alloc: a multiple of the alignment
    p = std::aligned_alloc(huge, bytes);
    if (p != nullptr) (void)madvise(p, bytes, MADV_HUGEPAGE);  // only a hint
  }
#endif
  if (p == nullptr) p = std::malloc(bytes);
  if (p == nullptr) throw std::bad_alloc();
  return std::unique_ptr<T[], LargeFree>(static_cast<T*>(p));
}

#if BACKPROP_X86_KERNELS
/// Writes the lanes of `index` selected by `kept`, packed, to rows[0...] as RowIndex
/// with one full 16-lane store (rows needs room for 16 entries).
template <class RowIndex>
BACKPROP_TARGET_AVX512 inline void store_kept_indices(RowIndex* rows, __mmask16 kept,
                                                      __m512i index) {
  const __m512i kept_index = _mm512_maskz_compress_epi32(kept, index);
  if constexpr (sizeof(RowIndex) == 2) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(rows),
                        _mm512_maskz_cvtepi32_epi16(0xFFFF, kept_index));
  } else {
    static_assert(sizeof(RowIndex) == 4);
    _mm512_storeu_si512(rows, kept_index);
  }
}

/// Appends the nonzeros of x[0, n) (n a multiple of 16) to values[count...] and their
/// indices to rows[count...] with full 16-lane stores (both need room for 16 entries
/// past the new count), and returns the new count. Branch-free: every vector is stored,
/// the count moves on by its nonzeros; register-form compresses (the memory form is
/// slow on some CPUs). NaN counts as nonzero. With CheckFinite, ORs the lanes holding
/// NaN or Inf into `bad`. (A 16-bit compress of the indices, AVX512-VBMI2, measured
/// 10.1 -> 8.5 ms for 50,000 MNIST images together with the branch-free loop; it is not
/// used, to keep one AVX-512 level.)
template <bool CheckFinite, class RowIndex>
BACKPROP_TARGET_AVX512 inline std::size_t append_nonzero_vectors_avx512(
    const float* x, std::ptrdiff_t n, float* values, RowIndex* rows, std::size_t count,
    unsigned& bad) {
  __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __mmask16 flagged = 0;
  for (std::ptrdiff_t r = 0; r < n; r += 16) {
    const __m512 v = _mm512_loadu_ps(x + r);
    if constexpr (CheckFinite) flagged |= _mm512_fpclass_ps_mask(v, 0x99);  // NaN, +-Inf
    const __mmask16 kept = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    _mm512_storeu_ps(values + count, _mm512_maskz_compress_ps(kept, v));
    store_kept_indices(rows + count, kept, index);
    index = _mm512_add_epi32(index, _mm512_set1_epi32(16));
    count += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(kept)));
  }
  bad |= flagged;
  return count;
}

/// The nonzeros of column col[0, d) appended as append_nonzero_vectors_avx512 does (d
/// any size: the last vector's loads are masked); `finite` becomes false if one is
/// NaN or Inf.
template <class RowIndex>
BACKPROP_TARGET_AVX512 inline std::size_t compress_column_avx512(const float* col, std::ptrdiff_t d,
                                                                 float* values, RowIndex* rows,
                                                                 std::size_t count, bool& finite) {
  unsigned bad = 0;
  const std::ptrdiff_t whole = d / 16 * 16;
  count = append_nonzero_vectors_avx512<true>(col, whole, values, rows, count, bad);
  if (whole < d) {
    const auto lanes = static_cast<unsigned>(d - whole);
    const auto in = static_cast<__mmask16>((1u << lanes) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(in, col + whole);
    bad |= _mm512_fpclass_ps_mask(v, 0x99);  // QNaN, +Inf, -Inf, SNaN
    const __mmask16 kept = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    const __m512i index =
        _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(whole)),
                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    _mm512_storeu_ps(values + count, _mm512_maskz_compress_ps(kept, v));
    store_kept_indices(rows + count, kept, index);
    count += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(kept)));
  }
  finite = finite && bad == 0;
  return count;
}

/// For each 8-bit mask, the indices of its set bits packed into the low bytes (AVX2 has
/// no compress instruction: a permutation from this table does its work).
inline constexpr std::array<std::uint64_t, 256> compress_lanes8 = [] {
  std::array<std::uint64_t, 256> table{};
  for (unsigned m = 0; m < 256; ++m) {
    unsigned k = 0;
    for (unsigned i = 0; i < 8; ++i) {
      if (((m >> i) & 1u) != 0) table[m] |= std::uint64_t{i} << (8 * k++);
    }
  }
  return table;
}();

/// append_nonzero_vectors_avx512 with 8-lane AVX2 vectors (n a multiple of 8; room for
/// 8 entries past the new count).
template <bool CheckFinite, class RowIndex>
BACKPROP_TARGET_AVX2 inline std::size_t append_nonzero_vectors_avx2(const float* x,
                                                                    std::ptrdiff_t n, float* values,
                                                                    RowIndex* rows,
                                                                    std::size_t count,
                                                                    unsigned& bad) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  int flagged = 0;
  for (std::ptrdiff_t r = 0; r < n; r += 8) {
    const __m256 v = _mm256_loadu_ps(x + r);
    if constexpr (CheckFinite) {
      // |v| >= Inf or unordered: Inf or NaN.
      flagged |= _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v, magnitude), inf, _CMP_NLT_UQ));
    }
    const int kept = _mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NEQ_UQ));
    const __m256i lanes = _mm256_cvtepu8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(&compress_lanes8[kept])));
    _mm256_storeu_ps(values + count, _mm256_permutevar8x32_ps(v, lanes));
    const __m256i index = _mm256_add_epi32(lanes, _mm256_set1_epi32(static_cast<int>(r)));
    if constexpr (sizeof(RowIndex) == 2) {
      _mm_storeu_si128(
          reinterpret_cast<__m128i*>(rows + count),
          _mm_packus_epi32(_mm256_castsi256_si128(index), _mm256_extracti128_si256(index, 1)));
    } else {
      static_assert(sizeof(RowIndex) == 4);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(rows + count), index);
    }
    count += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(kept)));
  }
  bad |= static_cast<unsigned>(flagged);
  return count;
}
#endif

/// Appends the nonzeros of x[r, n) one by one (branch-free) and returns the new count;
/// `finite` becomes false if one is NaN or Inf (with CheckFinite).
template <bool CheckFinite, class Scalar, class RowIndex>
inline std::size_t append_nonzero_tail(const Scalar* x, std::ptrdiff_t r, std::ptrdiff_t n,
                                       Scalar* values, RowIndex* rows, std::size_t count,
                                       bool& finite) {
  for (; r < n; ++r) {
    const Scalar v = x[r];
    if constexpr (CheckFinite) finite = finite && std::isfinite(v);
    rows[count] = static_cast<RowIndex>(r);
    values[count] = v;
    count += v != Scalar(0);
  }
  return count;
}

/// The nonzero coefficients of each column of a dense matrix: column c holds
/// `rows[k]`, `values[k]` for k in [starts[c], starts[c + 1]). `RowIndex` is
/// 16-bit for up to 65536 rows (MNIST's 784): less memory traffic per nonzero.
template <class Scalar, class RowIndex = std::int32_t>
struct SparseColumns {
  using RowIndexType = RowIndex;
  std::unique_ptr<RowIndex[], LargeFree> rows;
  std::unique_ptr<Scalar[], LargeFree> values;
  std::vector<std::size_t> starts;
  std::size_t capacity = 0;

  SparseColumns() = default;
  // A copy starts empty (the content is rebuilt by every sgd call).
  SparseColumns(const SparseColumns&) {}
  SparseColumns& operator=(const SparseColumns&) { return *this; }
  SparseColumns(SparseColumns&&) noexcept = default;
  SparseColumns& operator=(SparseColumns&&) noexcept = default;
  ~SparseColumns() = default;

  [[nodiscard]] bool empty() const noexcept { return starts.empty(); }

  /// Fills from `m` if at most `max_density` of its coefficients are nonzero and
  /// returns true; `finite` then says whether every coefficient of `m` is finite
  /// (NaN and Inf are kept as nonzeros). Otherwise stays empty and returns false,
  /// having read only a sample of the columns when that suffices.
  bool build(const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>& m, double max_density,
             bool& finite) {
    return build(m.data(), m.rows(), m.cols(), m.rows(), max_density, finite);
  }

  /// The same for the d x n column-major matrix at `data` whose columns start
  /// `outer_stride` coefficients apart.
  bool build(const Scalar* data, Eigen::Index d, Eigen::Index n, Eigen::Index outer_stride,
             double max_density, bool& finite) {
    starts.clear();  // the buffers are kept: a rebuild of the same size allocates nothing
    if (n == 0 || d == 0 || max_density <= 0.0 ||
        d - 1 > static_cast<Eigen::Index>(std::numeric_limits<RowIndex>::max())) {
      return false;
    }
    // A density estimate from 256 evenly spread columns decides first. A matrix of at
    // most 256 columns (a mini-batch) is compressed at once instead, stopping once
    // it holds more than max_density nonzeros: the estimate would read every column
    // twice (update_mini_batch's 784 x 10 batches of MNIST: the count, compiled for
    // SSE2 without -march, took 14% of a user's loop).
    const double total = static_cast<double>(n) * static_cast<double>(d);
    double estimate = max_density;
    if (n > 256) {
      constexpr Eigen::Index probe = 256;
      Eigen::Index nonzero = 0;
      for (Eigen::Index k = 0; k < probe; ++k) {
        const Scalar* col = data + (k * n / probe) * outer_stride;
        nonzero += (Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>(col, d) != Scalar(0))
                       .count();
      }
      estimate = static_cast<double>(nonzero) / static_cast<double>(probe * d);
      if (estimate > max_density) return false;
    }
    const auto limit = static_cast<std::size_t>(max_density * total);
    // Room for one whole column more, plus one 16-lane vector: the vector loops
    // below store whole vectors, even for columns shorter than 16.
    const auto ud = static_cast<std::size_t>(d) + chunk;
    const std::size_t wanted =
        std::min(static_cast<std::size_t>(estimate * 1.15 * total) + ud, limit + ud);
    if (capacity < wanted) reserve(wanted, 0);
    starts.resize(static_cast<std::size_t>(n) + 1);
    starts[0] = 0;
    std::size_t count = 0;
    finite = true;
    [[maybe_unused]] const int isa = active_isa();
    for (Eigen::Index c = 0; c < n; ++c) {
      if (count + ud > capacity) {
        if (count > limit) {
          clear();
          return false;
        }
        reserve(std::max(capacity + capacity / 2, count + ud), count);
      }
      const Scalar* col = data + c * outer_stride;
      RowIndex* r_out = rows.get();
      Scalar* v_out = values.get();
      Eigen::Index r = 0;
#if BACKPROP_X86_KERNELS
      if constexpr (std::is_same_v<Scalar, float>) {
        // One pass of whole vectors: a compare finds the nonzeros (NaN included), a
        // test flags NaN and Inf, and a compress (AVX-512) or a permutation (AVX2)
        // writes the nonzeros with full-vector stores. 50,000 MNIST images: 8.5 ms with
        // AVX-512, against 13.5 ms with the per-chunk sum below (reading the data
        // alone, all_finite, takes 6-6.7 ms).
        if (isa >= 2) {
          count = compress_column_avx512(col, d, v_out, r_out, count, finite);
          starts[static_cast<std::size_t>(c) + 1] = count;
          continue;
        }
        if (isa == 1) {
          unsigned bad = 0;
          r = d / 8 * 8;
          count = append_nonzero_vectors_avx2<true>(col, r, v_out, r_out, count, bad);
          finite = finite && bad == 0;
          count = append_nonzero_tail<true>(col, r, d, v_out, r_out, count, finite);
          starts[static_cast<std::size_t>(c) + 1] = count;
          continue;
        }
      }
#endif
      // Chunks of 16: one vectorised sum of |v| finds the all-zero chunks, which are
      // skipped (a sum of absolute values is 0 only if all are), and the chunks that
      // may hold a NaN or Inf (the sum is then not finite; it can also overflow, so
      // those chunks are checked coefficient by coefficient).
      for (; r + chunk <= d; r += chunk) {
        const Scalar sum = Eigen::Map<const Eigen::Array<Scalar, chunk, 1>>(col + r).abs().sum();
        if (sum == Scalar(0)) continue;
        if (!std::isfinite(sum)) {
          for (int i = 0; i < chunk; ++i) finite = finite && std::isfinite(col[r + i]);
        }
        // Branch-free: every coefficient is written, the count advances on nonzeros.
        for (int i = 0; i < chunk; ++i) {
          const Scalar v = col[r + i];
          r_out[count] = static_cast<RowIndex>(r + i);
          v_out[count] = v;
          count += v != Scalar(0);
        }
      }
      // The last d % 16 (an int count: g++ 12 could not bound this loop otherwise).
      const int tail = static_cast<int>(d - r);
      for (int i = 0; i < tail; ++i) {
        const Scalar v = col[r + i];
        finite = finite && std::isfinite(v);
        r_out[count] = static_cast<RowIndex>(r + i);
        v_out[count] = v;
        count += v != Scalar(0);
      }
      starts[static_cast<std::size_t>(c) + 1] = count;
    }
    if (count > limit) {
      clear();
      return false;
    }
    return true;
  }

  void clear() noexcept {
    rows.reset();
    values.reset();
    starts.clear();
    capacity = 0;
  }

 private:
  static constexpr int chunk = 16;

  /// Grows the buffers to n entries, keeping the first `used`.
  void reserve(std::size_t n, std::size_t used) {
    auto new_rows = allocate_large<RowIndex>(n);
    auto new_values = allocate_large<Scalar>(n);
    if (used != 0) {
      std::memcpy(new_rows.get(), rows.get(), used * sizeof(RowIndex));
      std::memcpy(new_values.get(), values.get(), used * sizeof(Scalar));
    }
    rows = std::move(new_rows);
    values = std::move(new_values);
    capacity = n;
  }
};

/// A mini-batch given as sample indices into a `SparseColumns` (the first layer's
/// input); `cols()` is the batch size, like an Eigen matrix's.
template <class Scalar, class RowIndex>
struct SparseBatch {
  const SparseColumns<Scalar, RowIndex>* data;
  const Eigen::Index* samples;
  Eigen::Index count;
  bool parallel = false;  ///< the first-layer kernels may use Eigen's threads for it
  [[nodiscard]] Eigen::Index cols() const noexcept { return count; }
};

template <class T>
inline constexpr bool is_sparse_batch = false;
template <class Scalar, class RowIndex>
inline constexpr bool is_sparse_batch<SparseBatch<Scalar, RowIndex>> = true;

/// Asks the CPU to load p[begin, end) into the cache (a hint, no effect on results):
/// with Locality 3 into all levels, 2 into level 2 and below (prefetcht1).
template <int Locality = 3, class T>
inline void prefetch_range(const T* p, std::size_t begin, std::size_t end) {
#if defined(__GNUC__)
  const char* first = reinterpret_cast<const char*>(p + begin);
  const char* last = reinterpret_cast<const char*>(p + end);
  for (const char* c = first; c < last; c += 64) __builtin_prefetch(c, 0, Locality);
#else
  (void)p, (void)begin, (void)end;
#endif
}

/// Layers up to this many outputs use the kernels below directly (the column sums of
/// one sample fit in registers); wider ones run them on blocks of rows
/// (for_row_blocks).
inline constexpr int small_layer = 128;

/// Below this many multiply-adds per mini-batch the sparse kernels stay on the calling
/// thread (a parallel region costs a few microseconds). 784-100-10 on 2 threads:
/// batches of 10 (~150,000) were 20% slower in parallel, batches of 100 15% faster.
inline constexpr double parallel_work = 1048576.0;

/// Calls f(i) for i in [0, n): on Eigen's threads (OpenMP's pool, as Eigen's own GEMM)
/// with `parallel`, an OpenMP build and more than one Eigen thread, each thread a
/// contiguous range of i; otherwise in order on the calling thread.
template <class F>
void parallel_for(int n, bool parallel, F&& f) {
#if defined(_OPENMP)
  const int threads = std::min(Eigen::nbThreads(), n);
  if (parallel && threads > 1 && omp_in_parallel() == 0) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int i = 0; i < n; ++i) f(i);
    return;
  }
#else
  (void)parallel;
#endif
  for (int i = 0; i < n; ++i) f(i);
}

/// Splits Out rows into equal blocks of at most small_layer rows (multiples of 16 but
/// the last) and calls f(std::integral_constant<int, rows>{}, first_row) for each,
/// through parallel_for. Blocks that only read shared data (the forward sums) may run
/// in parallel; writers should split columns instead: two cores updating the two
/// row halves of the same columns (distinct cache lines, 512 bytes apart) made the
/// 784-256 update seven times slower than on one core (0.76 s vs 0.10 s per epoch),
/// probably through coherence traffic from the prefetchers; ranges of columns on
/// each core run at full speed.
template <int Out, class F>
void for_row_blocks(bool parallel, F&& f) {
  constexpr int n = (Out + small_layer - 1) / small_layer;
  constexpr int per = (Out + n - 1) / n;
  constexpr int size = n == 1 ? Out : std::min(small_layer, (per + 15) / 16 * 16);
  constexpr int last = Out - (n - 1) * size;
  static_assert(size <= small_layer && last > 0 && last <= size);
  parallel_for(n, parallel, [&f](int b) {
    if (b == n - 1) {
      f(std::integral_constant<int, last>{}, b * size);
    } else if constexpr (n > 1) {
      f(std::integral_constant<int, size>{}, b * size);
    }
  });
}

#if BACKPROP_X86_KERNELS
/// The 16-lane mask of vector v of V covering n rows.
constexpr unsigned lane_bits16(int v, int V, int n) {
  return v < V - 1 || n % 16 == 0 ? 0xFFFFu : (1u << static_cast<unsigned>(n % 16)) - 1u;
}

/// sparse_column_sum with AVX-512: masked 16-lane loads cover Out exactly (masked-off
/// lanes are not read, so the last column never reads past the matrix; with padded
/// columns the loads are whole); independent sums (four for up to 32 outputs, two up
/// to 128) hide the latency of the multiply-adds.
template <int Out, int Padded>
BACKPROP_TARGET_AVX512 void sparse_column_sum_avx512(const float* w, const float* bias,
                                                     const auto* rows, const float* values,
                                                     std::size_t begin, std::size_t end, float* out,
                                                     std::ptrdiff_t ld) {
  constexpr int V = (Out + 15) / 16;
  constexpr int Sets = V <= 2 ? 4 : 2;
  constexpr int Loaded = Padded >= 16 * V ? 16 * V : Out;  // rows the loads may read
  __m512 acc[Sets][V];
  for (int v = 0; v < V; ++v) {
    acc[0][v] =
        _mm512_maskz_loadu_ps(static_cast<__mmask16>(lane_bits16(v, V, Out)), bias + 16 * v);
    for (int t = 1; t < Sets; ++t) acc[t][v] = _mm512_setzero_ps();
  }
  std::size_t k = begin;
  for (; k + Sets <= end; k += Sets) {
    for (int t = 0; t < Sets; ++t) {
      const __m512 x = _mm512_set1_ps(values[k + t]);
      const float* c = w + ld * rows[k + t];
      for (int v = 0; v < V; ++v) {
        const __m512 col = lane_bits16(v, V, Loaded) == 0xFFFFu
                               ? _mm512_loadu_ps(c + 16 * v)
                               : _mm512_maskz_loadu_ps(
                                     static_cast<__mmask16>(lane_bits16(v, V, Loaded)), c + 16 * v);
        acc[t][v] = _mm512_fmadd_ps(x, col, acc[t][v]);
      }
    }
  }
  for (; k < end; ++k) {
    const __m512 x = _mm512_set1_ps(values[k]);
    const float* c = w + ld * rows[k];
    for (int v = 0; v < V; ++v) {
      const __m512 col = lane_bits16(v, V, Loaded) == 0xFFFFu
                             ? _mm512_loadu_ps(c + 16 * v)
                             : _mm512_maskz_loadu_ps(
                                   static_cast<__mmask16>(lane_bits16(v, V, Loaded)), c + 16 * v);
      acc[0][v] = _mm512_fmadd_ps(x, col, acc[0][v]);
    }
  }
  for (int v = 0; v < V; ++v) {
    __m512 sum = acc[0][v];
    for (int t = 1; t < Sets; ++t) sum = _mm512_add_ps(sum, acc[t][v]);
    _mm512_mask_storeu_ps(out + 16 * v, static_cast<__mmask16>(lane_bits16(v, V, Out)), sum);
  }
}

/// The 8-lane mask of AVX2's masked loads and stores for the first n % 8 lanes.
BACKPROP_TARGET_AVX2 inline __m256i lane_mask8(int n) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n % 8 == 0 ? 8 : n % 8), lanes);
}

/// sparse_column_sum with AVX2: 8-lane vectors, the last one masked unless the columns
/// are padded; at most 64 rows at a time (the accumulators stay in the 16 registers).
template <int Out, int Padded>
BACKPROP_TARGET_AVX2 void sparse_column_sum_avx2(const float* w, const float* bias,
                                                 const auto* rows, const float* values,
                                                 std::size_t begin, std::size_t end, float* out,
                                                 std::ptrdiff_t ld) {
  if constexpr (Out > 64) {
    sparse_column_sum_avx2<64, 64>(w, bias, rows, values, begin, end, out, ld);
    sparse_column_sum_avx2<Out - 64, Padded - 64>(w + 64, bias + 64, rows, values, begin, end,
                                                  out + 64, ld);
  } else {
    constexpr int V = (Out + 7) / 8;
    constexpr int Sets = V <= 2 ? 4 : V <= 4 ? 2 : 1;
    constexpr bool masked_out = Out % 8 != 0;
    constexpr bool masked_load = masked_out && Padded < 8 * V;
    const __m256i tail = lane_mask8(Out);
    __m256 acc[Sets][V];
    for (int v = 0; v < V; ++v) {
      acc[0][v] = masked_out && v == V - 1 ? _mm256_maskload_ps(bias + 8 * v, tail)
                                           : _mm256_loadu_ps(bias + 8 * v);
      for (int t = 1; t < Sets; ++t) acc[t][v] = _mm256_setzero_ps();
    }
    std::size_t k = begin;
    for (; k + Sets <= end; k += Sets) {
      for (int t = 0; t < Sets; ++t) {
        const __m256 x = _mm256_set1_ps(values[k + t]);
        const float* c = w + ld * rows[k + t];
        for (int v = 0; v < V; ++v) {
          const __m256 col = masked_load && v == V - 1 ? _mm256_maskload_ps(c + 8 * v, tail)
                                                       : _mm256_loadu_ps(c + 8 * v);
          acc[t][v] = _mm256_fmadd_ps(x, col, acc[t][v]);
        }
      }
    }
    for (; k < end; ++k) {
      const __m256 x = _mm256_set1_ps(values[k]);
      const float* c = w + ld * rows[k];
      for (int v = 0; v < V; ++v) {
        const __m256 col = masked_load && v == V - 1 ? _mm256_maskload_ps(c + 8 * v, tail)
                                                     : _mm256_loadu_ps(c + 8 * v);
        acc[0][v] = _mm256_fmadd_ps(x, col, acc[0][v]);
      }
    }
    for (int v = 0; v < V; ++v) {
      __m256 sum = acc[0][v];
      for (int t = 1; t < Sets; ++t) sum = _mm256_add_ps(sum, acc[t][v]);
      if (masked_out && v == V - 1) {
        _mm256_maskstore_ps(out + 8 * v, tail, sum);
      } else {
        _mm256_storeu_ps(out + 8 * v, sum);
      }
    }
  }
}
#endif

/// The first layer's z for one sample from its nonzero inputs:
/// out = bias + sum over k in [begin, end) of values[k] * column rows[k] of the
/// column-major Out x n matrix `w` whose columns are `ld` apart (ld > Out for a block
/// of rows of a wider matrix). For Out <= small_layer (the accumulators stay in
/// registers). `Padded` >= Out: rows of `w` the kernel may read (a first layer whose
/// columns are padded to whole vectors; the extra rows' sums are not stored).
template <int Out, int Padded = Out, class Scalar, class RowIndex>
void sparse_column_sum(const Scalar* w, const Scalar* bias, const RowIndex* rows,
                       const Scalar* values, std::size_t begin, std::size_t end, Scalar* out,
                       std::ptrdiff_t ld = Out) {
  static_assert(Out <= small_layer && Padded >= Out);
#if BACKPROP_X86_KERNELS
  if constexpr (std::is_same_v<Scalar, float>) {
    const int isa = active_isa();
    if (isa >= 2)
      return sparse_column_sum_avx512<Out, Padded>(w, bias, rows, values, begin, end, out, ld);
    if (isa == 1)
      return sparse_column_sum_avx2<Out, Padded>(w, bias, rows, values, begin, end, out, ld);
  }
#endif
  // Plain loops the compiler vectorises; four independent sums as above.
  Scalar a0[Out], a1[Out], a2[Out], a3[Out];
  for (int i = 0; i < Out; ++i) {
    a0[i] = bias[i];
    a1[i] = a2[i] = a3[i] = Scalar(0);
  }
  std::size_t k = begin;
  for (; k + 4 <= end; k += 4) {
    const Scalar x0 = values[k], x1 = values[k + 1], x2 = values[k + 2], x3 = values[k + 3];
    const Scalar* c0 = w + ld * rows[k];
    const Scalar* c1 = w + ld * rows[k + 1];
    const Scalar* c2 = w + ld * rows[k + 2];
    const Scalar* c3 = w + ld * rows[k + 3];
    for (int i = 0; i < Out; ++i) {
      a0[i] += x0 * c0[i];
      a1[i] += x1 * c1[i];
      a2[i] += x2 * c2[i];
      a3[i] += x3 * c3[i];
    }
  }
  for (; k < end; ++k) {
    const Scalar x = values[k];
    const Scalar* c = w + ld * rows[k];
    for (int i = 0; i < Out; ++i) a0[i] += x * c[i];
  }
  for (int i = 0; i < Out; ++i) out[i] = (a0[i] + a1[i]) + (a2[i] + a3[i]);
}

#if BACKPROP_X86_KERNELS
/// sparse_column_update with AVX-512 (see there).
template <int Out, int Padded>
BACKPROP_TARGET_AVX512 void sparse_column_update_avx512(float* w, const float* d, const auto* rows,
                                                        const float* values, std::size_t begin,
                                                        std::size_t end, std::ptrdiff_t ld) {
  // With padded columns whole vectors. Otherwise full 16-lane vectors, and for the
  // rest (Out % 16) one more vector over the column's last 16 rows, overlapping the
  // one before, whose overlapping lanes add x * 0 (d's copy is zero there) and are
  // stored first, so that the full vector's store writes those rows last. A plain
  // loop for the rest took 43% of a user's update_mini_batch loop on 784-30-10 (14
  // scalar read-modify-writes per nonzero; masked stores measured slower still, 784-30-10
  // 3 epochs 0.33 s against the plain loop's 0.23 s). Columns of fewer than 16 rows
  // keep the plain loop.
  constexpr bool padded = Padded > Out && Padded % 16 == 0;
  constexpr int V = padded ? Padded / 16 : Out / 16;
  constexpr bool overlap = !padded && Out > 16 && Out % 16 != 0;
  constexpr int done = padded || overlap ? Out : 16 * V;
  __m512 dv[V > 0 ? V : 1];
  for (int v = 0; v < V; ++v) dv[v] = _mm512_loadu_ps(d + 16 * v);
  __m512 dlast = _mm512_setzero_ps();
  if constexpr (overlap) {
    constexpr int covered = 16 * V - (Out - 16);  // lanes of the last vector done before
    dlast = _mm512_maskz_loadu_ps(static_cast<__mmask16>(0xFFFFu << covered), d + Out - 16);
  }
  for (std::size_t k = begin; k < end; ++k) {
    const float x = values[k];
    const __m512 xv = _mm512_set1_ps(x);
    float* c = w + ld * rows[k];
    if constexpr (overlap) {
      __m512 cv[V > 0 ? V : 1];
      for (int v = 0; v < V; ++v) cv[v] = _mm512_loadu_ps(c + 16 * v);
      const __m512 last = _mm512_loadu_ps(c + Out - 16);
      _mm512_storeu_ps(c + Out - 16, _mm512_fmadd_ps(xv, dlast, last));
      for (int v = 0; v < V; ++v) _mm512_storeu_ps(c + 16 * v, _mm512_fmadd_ps(xv, dv[v], cv[v]));
    } else {
      for (int v = 0; v < V; ++v) {
        _mm512_storeu_ps(c + 16 * v, _mm512_fmadd_ps(xv, dv[v], _mm512_loadu_ps(c + 16 * v)));
      }
    }
    for (int i = done; i < Out; ++i) c[i] += x * d[i];
  }
}

/// sparse_column_update with AVX2: whole 8-lane vectors (padded columns), or full
/// vectors and one overlapping vector for the rest (as with AVX-512), or for columns
/// of fewer than 8 rows a plain loop.
template <int Out, int Padded>
BACKPROP_TARGET_AVX2 void sparse_column_update_avx2(float* w, const float* d, const auto* rows,
                                                    const float* values, std::size_t begin,
                                                    std::size_t end, std::ptrdiff_t ld) {
  constexpr bool padded = Padded > Out && Padded % 8 == 0;
  constexpr int V = padded ? Padded / 8 : Out / 8;
  constexpr bool overlap = !padded && Out > 8 && Out % 8 != 0;
  constexpr int done = padded || overlap ? Out : 8 * V;
  __m256 dv[V > 0 ? V : 1];
  for (int v = 0; v < V; ++v) dv[v] = _mm256_loadu_ps(d + 8 * v);
  __m256 dlast = _mm256_setzero_ps();
  if constexpr (overlap) {
    constexpr int covered = 8 * V - (Out - 8);
    dlast = _mm256_blend_ps(_mm256_loadu_ps(d + Out - 8), _mm256_setzero_ps(), (1 << covered) - 1);
  }
  for (std::size_t k = begin; k < end; ++k) {
    const float x = values[k];
    const __m256 xv = _mm256_set1_ps(x);
    float* c = w + ld * rows[k];
    if constexpr (overlap) {
      __m256 cv[V > 0 ? V : 1];
      for (int v = 0; v < V; ++v) cv[v] = _mm256_loadu_ps(c + 8 * v);
      const __m256 last = _mm256_loadu_ps(c + Out - 8);
      _mm256_storeu_ps(c + Out - 8, _mm256_fmadd_ps(xv, dlast, last));
      for (int v = 0; v < V; ++v) _mm256_storeu_ps(c + 8 * v, _mm256_fmadd_ps(xv, dv[v], cv[v]));
    } else {
      for (int v = 0; v < V; ++v) {
        _mm256_storeu_ps(c + 8 * v, _mm256_fmadd_ps(xv, dv[v], _mm256_loadu_ps(c + 8 * v)));
      }
    }
    for (int i = done; i < Out; ++i) c[i] += x * d[i];
  }
}
#endif

/// The first layer's weight update for one sample: column rows[k] of the
/// column-major Out x n matrix `w` (columns `ld` apart) += values[k] * d, for k in
/// [begin, end) (d = -eta/m delta_j for plain SGD). For Out <= small_layer. With
/// `Padded` a multiple of 16 (padded columns, d zero past Out) whole vectors cover
/// the column.
template <int Out, int Padded = Out, class Scalar, class RowIndex>
void sparse_column_update(Scalar* w, const Scalar* d, const RowIndex* rows, const Scalar* values,
                          std::size_t begin, std::size_t end, std::ptrdiff_t ld = Out) {
  static_assert(Out <= small_layer && Padded >= Out);
#if BACKPROP_X86_KERNELS
  if constexpr (std::is_same_v<Scalar, float>) {
    const int isa = active_isa();
    if (isa >= 2)
      return sparse_column_update_avx512<Out, Padded>(w, d, rows, values, begin, end, ld);
    if (isa == 1) return sparse_column_update_avx2<Out, Padded>(w, d, rows, values, begin, end, ld);
  }
#endif
  for (std::size_t k = begin; k < end; ++k) {
    const Scalar x = values[k];
    Scalar* c = w + ld * rows[k];
    for (int i = 0; i < Out; ++i) c[i] += x * d[i];
  }
}

/// The nonzero coefficients of one column x[0, n): writes their indices to `rows`
/// and their values to `values` (both with room for n + 16 entries) and returns
/// their count. NaN and Inf count as nonzero, so they still propagate.
template <class Scalar, class RowIndex>
std::size_t compress_nonzeros(const Scalar* x, int n, RowIndex* rows, Scalar* values) {
  std::size_t count = 0;
  std::ptrdiff_t r = 0;
  bool unused_finite = true;
#if BACKPROP_X86_KERNELS
  if constexpr (std::is_same_v<Scalar, float>) {
    const int isa = active_isa();
    unsigned unused = 0;
    if (isa >= 2) {
      r = n / 16 * 16;
      count = append_nonzero_vectors_avx512<false>(x, r, values, rows, count, unused);
    } else if (isa == 1) {
      r = n / 8 * 8;
      count = append_nonzero_vectors_avx2<false>(x, r, values, rows, count, unused);
    }
  }
#endif
  return append_nonzero_tail<false>(x, r, n, values, rows, count, unused_finite);
}

/// The lane pattern of a column-major Out x n float matrix stored as a flat sequence
/// of 16-float vectors: it repeats every `vectors` vectors (lcm(Out, 16) floats),
/// which hold `columns` whole columns. Lane l of vector t of a period holds row
/// row[16t + l] of column column[16t + l] (counted from the period's first column).
template <int Out>
struct FlatColumns {
  static constexpr int g = std::gcd(Out, 16);
  static constexpr int vectors = Out / g;
  static constexpr int columns = 16 / g;
  static constexpr std::size_t size = std::size_t{vectors} * 16;
  static constexpr std::array<std::int32_t, size> table(bool want_column) {
    std::array<std::int32_t, size> a{};
    for (int k = 0; k < vectors * 16; ++k)
      a[static_cast<std::size_t>(k)] = want_column ? k / Out : k % Out;
    return a;
  }
  alignas(64) static constexpr std::array<std::int32_t, size> column = table(true);
  alignas(64) static constexpr std::array<std::int32_t, size> row = table(false);
};

#if BACKPROP_X86_KERNELS
/// outer_product_columns with AVX-512, Out <= small_layer. The matrix is written as
/// consecutive 16-float vectors, not column by column: a column of 30 floats would take
/// two stores that mostly straddle cache lines. Each vector is a permutation of a few x
/// values (vpermps from the period's columns) times the matching pattern of d.
/// 30 x 784 (94 KB): 1.6-1.8 us column by column, 1.15-1.4 us so, where a memset of
/// the 94 KB takes 0.9-1.0 us (level-2 bandwidth).
template <int Out>
BACKPROP_TARGET_AVX512 void outer_product_columns_avx512(float* out, const float* d, const float* x,
                                                         Eigen::Index n) {
  using P = FlatColumns<Out>;
  alignas(64) float pattern[P::vectors * 16];
  if constexpr (Out <= 32) {
    // Up to 32 rows: each pattern vector is one two-source permutation of d.
    // (The shift counts are clamped so that the branch not taken is still a valid
    // shift: clang warns about a negative or too wide one even there.)
    constexpr unsigned low = Out >= 16 ? 0xFFFFu : (1u << (Out >= 16 ? 0 : Out)) - 1u;
    constexpr unsigned high = Out > 16 ? (1u << (Out > 16 ? Out - 16 : 0)) - 1u : 0u;
    const __m512 d0 = _mm512_maskz_loadu_ps(static_cast<__mmask16>(low), d);
    const __m512 d1 = _mm512_maskz_loadu_ps(static_cast<__mmask16>(high), d + 16);
    for (int t = 0; t < P::vectors; ++t) {
      const __m512i rows = _mm512_load_si512(P::row.data() + 16 * t);
      _mm512_store_ps(pattern + 16 * t, _mm512_permutex2var_ps(d0, rows, d1));
    }
  } else {
    for (int k = 0; k < P::vectors * 16; ++k) pattern[k] = d[P::row[static_cast<std::size_t>(k)]];
  }
  constexpr __mmask16 period_mask = static_cast<__mmask16>((1u << P::columns) - 1);
  const Eigen::Index periods = n / P::columns;
  for (Eigen::Index p = 0; p < periods; ++p) {
    const __m512 xv = _mm512_maskz_loadu_ps(period_mask, x + p * P::columns);
    float* o = out + p * (P::vectors * 16);
    for (int t = 0; t < P::vectors; ++t) {
      const __m512i lanes = _mm512_load_si512(P::column.data() + 16 * t);
      _mm512_storeu_ps(o + 16 * t, _mm512_mul_ps(_mm512_maskz_permutexvar_ps(0xFFFF, lanes, xv),
                                                 _mm512_load_ps(pattern + 16 * t)));
    }
  }
  // The last columns: a shortened period, its last vector masked.
  const int left = static_cast<int>(n - periods * P::columns);
  if (left > 0) {
    const __m512 xv =
        _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << left) - 1), x + periods * P::columns);
    float* o = out + periods * (P::vectors * 16);
    const int floats = left * Out;
    for (int t = 0; 16 * t < floats; ++t) {
      const int lanes_left = std::min(16, floats - 16 * t);
      const __mmask16 keep = static_cast<__mmask16>((1u << lanes_left) - 1);
      const __m512i lanes = _mm512_load_si512(P::column.data() + 16 * t);
      _mm512_mask_storeu_ps(o + 16 * t, keep,
                            _mm512_mul_ps(_mm512_maskz_permutexvar_ps(0xFFFF, lanes, xv),
                                          _mm512_load_ps(pattern + 16 * t)));
    }
  }
}

/// outer_product_columns compiled for AVX2 (the compiler vectorises the columns).
template <int Out>
BACKPROP_TARGET_AVX2 void outer_product_columns_avx2(float* out, const float* d, const float* x,
                                                     Eigen::Index n) {
  for (Eigen::Index j = 0; j < n; ++j) {
    const float xj = x[j];
    float* c = out + std::ptrdiff_t{Out} * j;
    for (int i = 0; i < Out; ++i) c[i] = xj * d[i];
  }
}
#endif

/// The outer product d x^T into the column-major Out x n matrix `out`: column j is
/// x[j] * d (every column is written, zero inputs give zero columns).
template <int Out, class Scalar>
void outer_product_columns(Scalar* out, const Scalar* d, const Scalar* x, Eigen::Index n) {
#if BACKPROP_X86_KERNELS
  if constexpr (std::is_same_v<Scalar, float>) {
    const int isa = active_isa();
    if constexpr (Out <= small_layer) {
      if (isa >= 2) return outer_product_columns_avx512<Out>(out, d, x, n);
    }
    if (isa >= 1) return outer_product_columns_avx2<Out>(out, d, x, n);
  }
#endif
  for (Eigen::Index j = 0; j < n; ++j) {
    const Scalar xj = x[j];
    Scalar* c = out + std::ptrdiff_t{Out} * j;
    for (int i = 0; i < Out; ++i) c[i] = xj * d[i];
  }
}

}  // namespace backprop::detail
