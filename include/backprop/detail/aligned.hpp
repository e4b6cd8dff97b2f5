/// \file
/// \brief A matrix whose storage starts on a cache line whatever Eigen's alignment
/// (internal).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>

namespace backprop::detail {

/// A column-major matrix whose first coefficient starts a 64-byte cache line. Eigen
/// aligns its own storage to EIGEN_MAX_ALIGN_BYTES, which is 16 in a program compiled
/// without -mavx: the AVX-512 kernels that the library then picks at run time would
/// split every other 64-byte load and store over two cache lines (784-30-10's padded
/// first layer, default build, AMD EPYC: 0.0465 -> 0.0407 s per epoch with 64-byte
/// alignment). Copies are deep.
template <class Scalar>
class AlignedMatrix {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Map = Eigen::Map<Matrix, Eigen::Aligned64>;
  using ConstMap = Eigen::Map<const Matrix, Eigen::Aligned64>;

  AlignedMatrix() = default;
  AlignedMatrix(const AlignedMatrix& other) { *this = other; }
  AlignedMatrix(AlignedMatrix&&) noexcept = default;
  AlignedMatrix& operator=(AlignedMatrix&&) noexcept = default;
  ~AlignedMatrix() = default;
  AlignedMatrix& operator=(const AlignedMatrix& other) {
    if (this != &other) {
      resize(other.m_rows, other.m_cols);
      std::copy_n(other.m_data.get(), other.size(), m_data.get());
    }
    return *this;
  }

  [[nodiscard]] Eigen::Index rows() const noexcept { return m_rows; }
  [[nodiscard]] Eigen::Index cols() const noexcept { return m_cols; }
  [[nodiscard]] Eigen::Index size() const noexcept { return m_rows * m_cols; }

  /// Sets the shape; the coefficients are unspecified after a change of size.
  void resize(Eigen::Index rows, Eigen::Index cols) {
    if (rows * cols != size()) {
      m_data.reset();
      if (rows * cols > 0) {
        const auto bytes = static_cast<std::size_t>(rows * cols) * sizeof(Scalar);
        m_data.reset(static_cast<Scalar*>(::operator new (bytes, std::align_val_t{64})));
      }
    }
    m_rows = rows;
    m_cols = cols;
  }

  /// The coefficients as an Eigen matrix (valid until the next resize).
  [[nodiscard]] Map map() noexcept { return Map(m_data.get(), m_rows, m_cols); }
  [[nodiscard]] ConstMap map() const noexcept { return ConstMap(m_data.get(), m_rows, m_cols); }

 private:
  struct Free {
    void operator()(Scalar* p) const noexcept { ::operator delete (p, std::align_val_t{64}); }
  };
  std::unique_ptr<Scalar, Free> m_data;
  Eigen::Index m_rows = 0;
  Eigen::Index m_cols = 0;
};

}  // namespace backprop::detail
