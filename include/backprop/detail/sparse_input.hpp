/// \file
/// \brief Compressed sparse columns of a training set's inputs, for a first layer
/// that skips zero inputs (internal).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

namespace backprop::detail {

/// The nonzero coefficients of each column of a dense matrix: column c holds
/// `rows[k]`, `values[k]` for k in [starts[c], starts[c + 1]). `RowIndex` is
/// 16-bit for up to 65536 rows (MNIST's 784): less memory traffic per nonzero.
template <class Scalar, class RowIndex = std::int32_t>
struct SparseColumns {
  using RowIndexType = RowIndex;
  std::unique_ptr<RowIndex[]> rows;
  std::unique_ptr<Scalar[]> values;
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
    starts.clear();  // the buffers are kept: a rebuild of the same size allocates nothing
    const Eigen::Index n = m.cols();
    const Eigen::Index d = m.rows();
    if (n == 0 || d == 0 || max_density <= 0.0 ||
        d - 1 > static_cast<Eigen::Index>(std::numeric_limits<RowIndex>::max())) {
      return false;
    }
    // A density estimate from up to 256 evenly spread columns decides first.
    const Eigen::Index probe = std::min<Eigen::Index>(n, 256);
    Eigen::Index nonzero = 0;
    for (Eigen::Index k = 0; k < probe; ++k) {
      nonzero += (m.col(k * n / probe).array() != Scalar(0)).count();
    }
    const double total = static_cast<double>(n) * static_cast<double>(d);
    const double estimate = static_cast<double>(nonzero) / static_cast<double>(probe * d);
    if (estimate > max_density) return false;
    const auto limit = static_cast<std::size_t>(max_density * total);
    const auto ud = static_cast<std::size_t>(d);
    const std::size_t wanted =
        std::min(static_cast<std::size_t>(estimate * 1.15 * total) + ud, limit + ud);
    if (capacity < wanted) reserve(wanted, 0);
    starts.resize(static_cast<std::size_t>(n) + 1);
    starts[0] = 0;
    std::size_t count = 0;
    finite = true;
    for (Eigen::Index c = 0; c < n; ++c) {
      if (count + ud > capacity) {
        if (count > limit) {
          clear();
          return false;
        }
        reserve(std::max(capacity + capacity / 2, count + ud), count);
      }
      const Scalar* col = m.data() + c * d;
      RowIndex* r_out = rows.get();
      Scalar* v_out = values.get();
      Eigen::Index r = 0;
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
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<Scalar, float> && std::is_same_v<RowIndex, std::uint16_t>) {
          // Register-form compress (the memory form is slow on some CPUs), then full
          // 16-lane stores: the buffers always have room for a whole column more.
          const __m512 v = _mm512_loadu_ps(col + r);
          const __mmask16 kept = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
          const __m512i index = _mm512_add_epi32(
              _mm512_set1_epi32(static_cast<int>(r)),
              _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
          _mm512_storeu_ps(v_out + count, _mm512_maskz_compress_ps(kept, v));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(r_out + count),
                              _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(kept, index)));
          count += static_cast<std::size_t>(std::popcount(static_cast<unsigned>(kept)));
          continue;
        }
#endif
        // Branch-free: every coefficient is written, the count advances on nonzeros.
        for (int i = 0; i < chunk; ++i) {
          const Scalar v = col[r + i];
          r_out[count] = static_cast<RowIndex>(r + i);
          v_out[count] = v;
          count += v != Scalar(0);
        }
      }
      for (; r < d; ++r) {
        const Scalar v = col[r];
        finite = finite && std::isfinite(v);
        r_out[count] = static_cast<RowIndex>(r);
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
    auto new_rows = std::make_unique_for_overwrite<RowIndex[]>(n);
    auto new_values = std::make_unique_for_overwrite<Scalar[]>(n);
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
  [[nodiscard]] Eigen::Index cols() const noexcept { return count; }
};

template <class T>
inline constexpr bool is_sparse_batch = false;
template <class Scalar, class RowIndex>
inline constexpr bool is_sparse_batch<SparseBatch<Scalar, RowIndex>> = true;

}  // namespace backprop::detail
