/// \file
/// \brief Library version. CMake reads the version from this file.
#pragma once

/// \brief The major version.
#define BACKPROP_VERSION_MAJOR 0
/// \brief The minor version.
#define BACKPROP_VERSION_MINOR 1
/// \brief The patch version.
#define BACKPROP_VERSION_PATCH 0

/// \brief The version as one integer, MAJOR * 10000 + MINOR * 100 + PATCH.
#define BACKPROP_VERSION \
  (BACKPROP_VERSION_MAJOR * 10000 + BACKPROP_VERSION_MINOR * 100 + BACKPROP_VERSION_PATCH)
