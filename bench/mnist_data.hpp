// Optional real data: the first n training images of MNIST through backprop::load_mnist,
// when the library has it (include/backprop/io/mnist.hpp) and the files are there.
#pragma once

#include <string>

#include "common.hpp"

namespace bench {

/// Fills `out` with the first `n` MNIST training samples from `dir`; false (with a
/// message on stderr) if the loader or the files are missing.
bool load_mnist_data(const std::string& dir, std::int64_t n, Data& out);

}  // namespace bench
