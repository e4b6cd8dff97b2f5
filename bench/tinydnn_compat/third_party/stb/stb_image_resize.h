#include <stb/stb_image_resize.h>  // Debian libstb-dev; tiny-dnn includes "third_party/stb/stb_image_resize.h"
