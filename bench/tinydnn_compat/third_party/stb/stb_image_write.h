#include <stb/stb_image_write.h>  // Debian libstb-dev; tiny-dnn includes "third_party/stb/stb_image_write.h"
