/// \file
/// \brief Data input: IDX files, MNIST / Fashion-MNIST and numeric CSV.
#pragma once

#include "csv.hpp"
#include "idx.hpp"
#include "mnist.hpp"
