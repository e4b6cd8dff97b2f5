#include <stb/stb_image.h>  // Debian libstb-dev; tiny-dnn includes "third_party/stb/stb_image.h"
