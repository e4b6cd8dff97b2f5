/// \file
/// \brief Exception types thrown by backprop.
///
/// Every exception derives from a standard one so callers can catch broadly:
/// wrong arguments are `std::invalid_argument`, bad files and failed training are
/// `std::runtime_error`.
#pragma once

#include <stdexcept>
#include <string>

namespace backprop {

/// \brief An argument has the wrong shape, e.g. an input with 783 rows for a
/// network that expects 784.
class ShapeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// \brief An argument has an invalid value (a batch size of 0, eta <= 0, NaN in the data).
class ValueError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// \brief A data file (IDX, CSV, gzip) is missing, truncated or malformed.
/// The message names the file and the problem.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// \brief A saved model cannot be read: wrong format, wrong architecture, corrupted.
class ModelFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// \brief Training produced a non-finite cost or non-finite parameters.
class DivergenceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// \brief Data-parallel training cannot go on: the ranks disagree (network shape,
/// options, data size, generator state) or one of them failed. Thrown on every rank,
/// naming the rank(s) concerned.
class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace backprop
