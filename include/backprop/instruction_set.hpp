/// \file
/// \brief The instruction set backprop's own kernels use, chosen when the program runs,
/// and the switch that caps it.
///
/// backprop's hot kernels (the sparse first layer of `sgd`, `update_mini_batch`,
/// `gradient` and `backprop`, the small products of narrow layers, the first layer's
/// outer product) exist in three versions: AVX-512 (F, DQ, BW, VL), AVX2 with FMA, and portable C++
/// that the compiler vectorises for the flags the program was built with. The library stays
/// header-only: the AVX-512 and AVX2 versions are compiled into every program on x86-64 with GCC or
/// Clang through per-function `target` attributes, whatever its `-march`, and the first call asks
/// the CPU (and the operating system, for the wider registers) which it can run. So a program built
/// with the compiler's default flags gets the AVX-512 or AVX2 kernels on a CPU that has them.
/// (Eigen's own products still use the instruction set of the program's flags:
/// `-march=native` remains the fastest build for wide layers.)
///
/// `set_max_instruction_set` or the environment variable `BACKPROP_MAX_ISA` (`portable`,
/// `avx2` or `avx512`, read at the first use) caps the choice: a CPU never runs more than
/// it has, so a cap above the CPU's level changes nothing. The tests run every level on
/// one machine this way. Results of different levels agree to rounding (the sums are
/// grouped differently), not bit for bit.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <string_view>

#include "errors.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
/// 1 when the AVX2 and AVX-512 kernels are compiled in (x86 with GCC or Clang).
#define BACKPROP_X86_KERNELS 1
/// The target attribute of the AVX-512 kernels.
#define BACKPROP_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi2,popcnt")))
/// The target attribute of the AVX2 kernels.
#define BACKPROP_TARGET_AVX2 __attribute__((target("avx2,fma,bmi2,popcnt")))
#else
/// 0: only the portable kernels (not x86, or neither GCC nor Clang).
#define BACKPROP_X86_KERNELS 0
#endif

namespace backprop {

/// \brief The instruction sets backprop has kernels for, in increasing order.
enum class InstructionSet {
  portable = 0,  ///< C++ loops, vectorised for the flags the program was built with
  avx2 = 1,      ///< AVX2 and FMA (x86-64-v3: Intel Haswell, AMD Zen and later)
  avx512 = 2,    ///< AVX-512 F, DQ, BW and VL (x86-64-v4: Intel Skylake-SP, AMD Zen 4)
};

/// \brief The name of an instruction set as `BACKPROP_MAX_ISA` spells it:
/// "portable", "avx2" or "avx512".
[[nodiscard]] constexpr std::string_view to_string(InstructionSet isa) noexcept {
  switch (isa) {
    case InstructionSet::avx2:
      return "avx2";
    case InstructionSet::avx512:
      return "avx512";
    case InstructionSet::portable:
      break;
  }
  return "portable";
}

/// \brief Parses "portable", "avx2" or "avx512" (as `to_string` writes them).
/// \throws ValueError naming the text and the accepted names otherwise
[[nodiscard]] inline InstructionSet parse_instruction_set(std::string_view name) {
  for (auto isa : {InstructionSet::portable, InstructionSet::avx2, InstructionSet::avx512}) {
    if (name == to_string(isa)) return isa;
  }
  throw ValueError("backprop: unknown instruction set \"" + std::string(name) +
                   "\" (expected portable, avx2 or avx512)");
}

namespace detail {

/// What the CPU and the operating system support, of the levels above.
inline InstructionSet detect_cpu() noexcept {
  InstructionSet level = InstructionSet::portable;
#if BACKPROP_X86_KERNELS
  // libgcc's (and compiler-rt's) CPU model also checks XGETBV: a feature counts only
  // when the operating system saves its registers.
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl");
  if (avx512) {
    level = InstructionSet::avx512;
  } else if (avx2) {
    level = InstructionSet::avx2;
  }
#endif
  return level;
}

/// The CPU's level, asked once.
inline InstructionSet cpu_level() noexcept {
  static const InstructionSet level = detect_cpu();
  return level;
}

/// The active level (an InstructionSet as int); -1 until the first use has read
/// BACKPROP_MAX_ISA.
inline std::atomic<int> active_isa_slot{-1};

inline int level_for(InstructionSet cap) noexcept {
  return std::min(static_cast<int>(cap), static_cast<int>(cpu_level()));
}

inline int read_active_isa() {
  InstructionSet cap = InstructionSet::avx512;
  // getenv is read once, before any thread of ours could race a setenv.
  if (const char* env = std::getenv("BACKPROP_MAX_ISA");
      env != nullptr && *env != '\0') {  // NOLINT
    try {
      cap = parse_instruction_set(env);
    } catch (const ValueError&) {
      throw ValueError("backprop: BACKPROP_MAX_ISA is \"" + std::string(env) +
                       "\"; expected portable, avx2 or avx512");
    }
  }
  const int level = level_for(cap);
  active_isa_slot.store(level, std::memory_order_relaxed);
  return level;
}

/// The level the kernels use: 0 portable, 1 AVX2, 2 AVX-512.
inline int active_isa() {
  const int level = active_isa_slot.load(std::memory_order_relaxed);
  return level >= 0 ? level : read_active_isa();
}

}  // namespace detail

/// \brief The most the CPU this program runs on can use (with its operating system),
/// of the instruction sets above; `portable` on other architectures and compilers.
[[nodiscard]] inline InstructionSet detected_instruction_set() noexcept {
  return detail::cpu_level();
}

/// \brief The instruction set backprop's kernels use now: the CPU's, capped by
/// `set_max_instruction_set` or `BACKPROP_MAX_ISA`.
/// \throws ValueError at the first use if `BACKPROP_MAX_ISA` names no instruction set
[[nodiscard]] inline InstructionSet instruction_set() {
  return static_cast<InstructionSet>(detail::active_isa());
}

/// \brief Caps the instruction set of backprop's kernels for the whole program (over
/// `BACKPROP_MAX_ISA`); `InstructionSet::avx512` lifts the cap. Call it between
/// training and inference calls, not during one on another thread.
inline void set_max_instruction_set(InstructionSet cap) noexcept {
  detail::active_isa_slot.store(detail::level_for(cap), std::memory_order_relaxed);
}

}  // namespace backprop
