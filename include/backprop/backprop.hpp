/// \file
/// \brief The umbrella header: everything a user of backprop needs.
#pragma once

#include "activations/activations.hpp"
#include "concepts.hpp"
#include "costs/costs.hpp"
#include "data/dataset.hpp"
#include "errors.hpp"
#include "init/initializers.hpp"
#include "init/random.hpp"
#include "io/io.hpp"
#include "layers/dense.hpp"
#include "layers/dropout.hpp"
#include "network.hpp"
#include "optimizers/optimizers.hpp"
#include "testing/gradient_check.hpp"
#include "training/options.hpp"
#include "training/progress.hpp"
#include "training/report.hpp"
#include "training/schedule.hpp"
#include "version.hpp"
