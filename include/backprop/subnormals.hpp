/// \file
/// \brief Subnormal numbers flushed to zero while backprop computes, and the switch that
/// turns it off.
///
/// Saturated sigmoids and vanishing gradients produce subnormal floats (below 1.2e-38 in
/// float), and many x86 CPUs, Intel's above all, take a slow path (a microcode assist of
/// about 100 cycles) for an operation on one: on an Intel Xeon the book's 784-30-10
/// network took twice as long per epoch at epoch 30 as at epoch 1. So while `sgd`,
/// `update_mini_batch`, `gradient`, `backprop`, `feedforward`, `evaluate` and `predict`
/// (and `DynamicNetwork::feedforward`) run, the calling thread computes with subnormal
/// results flushed to zero and subnormal inputs read as zero (x86: the FTZ and DAZ bits
/// of MXCSR; AArch64: FPCR.FZ). The thread's previous setting is restored before control
/// returns to the caller, also by an exception, and around `sgd`'s callbacks (`on_epoch`,
/// `on_batch`), which run with the caller's own setting. Under OpenMP, `sgd` also flushes
/// on the worker threads of its parallel products for the duration of the call. Only
/// computations that meet a subnormal value can change (it counts as zero); the others
/// give the same bits.
///
/// `set_flush_subnormals(false)` turns it off for the whole program (results then keep
/// their subnormals, at the slow path's cost). Elsewhere than x86 with SSE and AArch64
/// (GCC or Clang), nothing is changed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace backprop {

namespace detail {

inline std::atomic<bool> flush_subnormals_enabled{true};

#if (defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))) && \
    (defined(__GNUC__) || defined(__clang__))
#define BACKPROP_DETAIL_FP_CONTROL 1
using FpControl = unsigned;
/// FTZ (bit 15: subnormal results become zero) and DAZ (bit 6: subnormal inputs are zero).
inline constexpr FpControl fp_flush_bits = 0x8040u;
inline FpControl read_fp_control() noexcept { return __builtin_ia32_stmxcsr(); }
inline void write_fp_control(FpControl value) noexcept { __builtin_ia32_ldmxcsr(value); }
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define BACKPROP_DETAIL_FP_CONTROL 1
using FpControl = std::uint64_t;
/// FPCR.FZ (bit 24): subnormal inputs and results are zero.
inline constexpr FpControl fp_flush_bits = FpControl{1} << 24;
inline FpControl read_fp_control() noexcept {
  FpControl value;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(value));
  return value;
}
inline void write_fp_control(FpControl value) noexcept {
  __asm__ __volatile__("msr fpcr, %0" : : "r"(value));
}
#else
#define BACKPROP_DETAIL_FP_CONTROL 0
using FpControl = unsigned;
inline constexpr FpControl fp_flush_bits = 0;
inline FpControl read_fp_control() noexcept { return 0; }
inline void write_fp_control(FpControl) noexcept {}
#endif

/// Flushes subnormals on this thread for its lifetime (when enabled and not already on),
/// then restores the thread's previous setting.
class FlushSubnormals {
 public:
  FlushSubnormals() noexcept {
    if (!flush_subnormals_enabled.load(std::memory_order_relaxed)) return;
    m_saved = read_fp_control();
    m_changed = (m_saved & fp_flush_bits) != fp_flush_bits;
    if (m_changed) write_fp_control(m_saved | fp_flush_bits);
  }
  ~FlushSubnormals() {
    if (m_changed) write_fp_control(m_saved);
  }
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;

  /// Runs `f` (a user's callback) with the caller's setting, then flushes again; a
  /// setting the callback made is what is restored at the end.
  template <class F>
  void call_user(F&& f) {
    if (!m_changed) {
      f();
      return;
    }
    write_fp_control(m_saved);
    struct Again {
      FlushSubnormals& g;
      ~Again() {
        g.m_saved = read_fp_control();
        write_fp_control(g.m_saved | fp_flush_bits);
      }
    } again{*this};
    f();
  }

 private:
  FpControl m_saved = 0;
  bool m_changed = false;
};

/// Under OpenMP: flushes subnormals on every thread of the pool's teams (Eigen's parallel
/// products use them) for its lifetime, then restores each thread's previous setting.
/// Without OpenMP, or with one thread, it does nothing.
class FlushSubnormalsOnWorkers {
 public:
  FlushSubnormalsOnWorkers() {
#if defined(_OPENMP) && BACKPROP_DETAIL_FP_CONTROL
    if (!flush_subnormals_enabled.load(std::memory_order_relaxed)) return;
    m_threads = omp_get_max_threads();
    if (m_threads <= 1 || omp_in_parallel()) return;
    m_saved.assign(static_cast<std::size_t>(m_threads), 0);
#pragma omp parallel num_threads(m_threads)
    {
      const auto t = static_cast<std::size_t>(omp_get_thread_num());
      if (t < m_saved.size()) {
        m_saved[t] = read_fp_control();
        write_fp_control(m_saved[t] | fp_flush_bits);
      }
    }
#endif
  }
  ~FlushSubnormalsOnWorkers() {
#if defined(_OPENMP) && BACKPROP_DETAIL_FP_CONTROL
    if (m_saved.empty()) return;
#pragma omp parallel num_threads(m_threads)
    {
      const auto t = static_cast<std::size_t>(omp_get_thread_num());
      if (t < m_saved.size()) write_fp_control(m_saved[t]);
    }
#endif
  }
  FlushSubnormalsOnWorkers(const FlushSubnormalsOnWorkers&) = delete;
  FlushSubnormalsOnWorkers& operator=(const FlushSubnormalsOnWorkers&) = delete;

 private:
  [[maybe_unused]] int m_threads = 1;
  std::vector<FpControl> m_saved;
};

}  // namespace detail

/// \brief Turns flushing subnormal numbers to zero during backprop's computations on
/// (the default) or off, for every thread from the next call on (subnormals.hpp).
inline void set_flush_subnormals(bool on) noexcept {
  detail::flush_subnormals_enabled.store(on, std::memory_order_relaxed);
}

/// \brief Whether backprop's computations flush subnormal numbers to zero.
[[nodiscard]] inline bool flush_subnormals() noexcept {
  return detail::flush_subnormals_enabled.load(std::memory_order_relaxed);
}

}  // namespace backprop
