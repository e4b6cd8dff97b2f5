/// \file
/// \brief Image shapes of layers and compile-time record names (internal).
#pragma once

#include <array>
#include <cstddef>
#include <string_view>

namespace backprop::detail {

/// The shape of one sample as an image, Channels x Height x Width (CHW order in the
/// column). A layer descriptor that has one declares `input_shape` / `output_shape`;
/// the chain check then compares shapes, not only flattened sizes, and names them.
template <int Channels, int Height, int Width>
struct ImageShape {
  static constexpr int channels = Channels, height = Height, width = Width;
  static constexpr int size = Channels * Height * Width;
};

/// A name built at compile time (a layer's `model_name` with its geometry in it).
template <std::size_t N>
struct FixedName {
  std::array<char, N> chars{};
  std::size_t length = 0;

  constexpr FixedName& operator<<(std::string_view s) {
    for (const char c : s) chars[length++] = c;
    return *this;
  }
  constexpr FixedName& operator<<(long long v) {
    char digits[24] = {};
    int n = 0;
    const bool negative = v < 0;
    unsigned long long u =
        negative ? 0ULL - static_cast<unsigned long long>(v) : static_cast<unsigned long long>(v);
    do {
      digits[n++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (negative) chars[length++] = '-';
    while (n > 0) chars[length++] = digits[--n];
    return *this;
  }
  constexpr FixedName& operator<<(int v) { return *this << static_cast<long long>(v); }
  [[nodiscard]] constexpr std::string_view view() const { return {chars.data(), length}; }
};

}  // namespace backprop::detail
