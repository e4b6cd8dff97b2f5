/// \file
/// \brief The x86 intrinsics of backprop's kernels: SSE4.1, AVX, AVX2, FMA, AVX-512 F and
/// DQ (internal).
///
/// With GCC, <immintrin.h> declares every extension up to AMX and AVX-512 FP16: it cost
/// each program 0.4 s and 70 MB to compile (g++ 12 -O2, an empty program with Eigen). So,
/// with the GCC versions whose headers this was checked against, only the headers of
/// the extensions the kernels use are included; a later <immintrin.h> still adds the
/// rest (each of these headers has its own include guard).
#pragma once

#include "../instruction_set.hpp"

#if BACKPROP_X86_KERNELS
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12 && !defined(_IMMINTRIN_H_INCLUDED)
#define _IMMINTRIN_H_INCLUDED  // (the headers below refuse to be included without it)
#include <smmintrin.h>
// clang-format off
#include <avxintrin.h>
#include <avx2intrin.h>
#include <fmaintrin.h>
#include <avx512fintrin.h>
#include <avx512dqintrin.h>
// clang-format on
#undef _IMMINTRIN_H_INCLUDED
#else
#include <immintrin.h>
#endif
#endif
