// The plain-Eigen peer: what a careful user writes by hand (column-major, W * X
// products with noalias, preallocated buffers). Compiled in its own translation
// unit (plain_eigen.cpp) so that the two halves of bench_backprop build in parallel.
#pragma once

#include "common.hpp"

namespace bench {

/// Runs W1-W6 (or the equivalence check) with hand-written Eigen into `report`.
void run_plain_eigen(const Options& o, const Data& d, Report& report);

/// Measures Eigen's float GEMM (n x n) with 1 and 2 threads into `report` (kind "peak").
void measure_eigen_peak(int n, int runs, Report& report);

}  // namespace bench
