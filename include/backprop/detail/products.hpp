/// \file
/// \brief Matrix products of the batched training path, sized to the shapes, without
/// heap allocations after the first product of a shape (internal).
#pragma once

#include <Eigen/Core>
#include <optional>
#include <type_traits>

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
};

}  // namespace backprop::detail
