/// \file
/// \brief The subset of the protocol-buffers wire format that ONNX files need: a
/// writer and a bounds-checked reader (detail; used by io/onnx.hpp).
///
/// A message is a sequence of fields, each a key `(number << 3) | wire type` (a
/// varint) and a value: wire type 0 a varint (int32, int64, enums), 1 eight bytes
/// (double, fixed64), 2 a varint length and that many bytes (strings, bytes, nested
/// messages, packed repeated numbers), 5 four bytes (float, fixed32). Types 3 and 4
/// (the deprecated groups) are rejected. All numbers are little-endian.
///
/// The reader never reads past its buffer: every length is checked against the bytes
/// that are left before anything is allocated, so a malformed or hostile file costs
/// at most memory proportional to its size, and it throws `ModelFormatError` naming
/// the message, the field and the byte offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "../errors.hpp"

namespace backprop::detail::pb {

enum class Wire : std::uint8_t { varint = 0, fixed64 = 1, bytes = 2, fixed32 = 5 };

/// Builds one message in memory; nested messages are built by their own writer and
/// added with `message`.
template <class = void>
class BasicWriter {
 public:
  void varint(std::uint64_t v) {
    while (v >= 0x80) {
      m_out.push_back(static_cast<char>((v & 0x7F) | 0x80));
      v >>= 7;
    }
    m_out.push_back(static_cast<char>(v));
  }
  void key(int field, Wire wire) {
    varint((static_cast<std::uint64_t>(field) << 3) | static_cast<std::uint64_t>(wire));
  }
  /// int64 / int32 / enum fields (negative numbers take ten bytes, as protobuf says).
  void int_field(int field, std::int64_t v) {
    key(field, Wire::varint);
    varint(static_cast<std::uint64_t>(v));
  }
  void bytes_field(int field, std::string_view s) {
    key(field, Wire::bytes);
    varint(s.size());
    m_out.append(s);
  }
  void message(int field, const BasicWriter& nested) { bytes_field(field, nested.m_out); }
  void float_field(int field, float f) {
    key(field, Wire::fixed32);
    fixed32(bits_of(f));
  }
  /// A packed repeated int64 field.
  template <class Range>
  void packed_ints(int field, const Range& values) {
    BasicWriter body;
    for (const auto v : values) body.varint(static_cast<std::uint64_t>(std::int64_t(v)));
    bytes_field(field, body.m_out);
  }
  /// Little-endian float32 bytes, as ONNX's `raw_data` holds them.
  void append_float_le(float f) { fixed32(bits_of(f)); }
  void append_int64_le(std::int64_t v) {
    auto u = static_cast<std::uint64_t>(v);
    for (int i = 0; i < 8; ++i) m_out.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));
  }
  [[nodiscard]] const std::string& bytes() const noexcept { return m_out; }
  [[nodiscard]] std::string take() noexcept { return std::move(m_out); }

 private:
  static std::uint32_t bits_of(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  }
  void fixed32(std::uint32_t u) {
    for (int i = 0; i < 4; ++i) m_out.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));
  }
  std::string m_out;
};

/// The writer. The classes are templates only so that their members are compiled where a
/// program uses them (as plain inline functions, in every program including the umbrella
/// header).
using Writer = BasicWriter<>;

/// One field as the reader sees it: its number, wire type and value (`number` for
/// varints and fixed sizes, `bytes` for wire type 2).
struct Field {
  int number = 0;
  Wire wire = Wire::varint;
  std::uint64_t number_value = 0;
  std::string_view bytes;
  std::size_t offset = 0;  // of the key, from the start of the whole file
};

/// Reads one message's fields in order. `what` names the message for error messages
/// ("ModelProto", "NodeProto 'fc1/Gemm'"); `base` is the message's offset in the file.
template <class = void>
class BasicReader {
 public:
  BasicReader(std::string_view data, std::string what, std::size_t base = 0)
      : m_data(data), m_what(std::move(what)), m_base(base) {}

  /// The next field, or false at the end of the message.
  bool next(Field& f) {
    if (m_pos == m_data.size()) return false;
    f.offset = m_base + m_pos;
    const std::uint64_t k = varint("a field key");
    const std::uint64_t number = k >> 3;
    const auto wire = static_cast<unsigned>(k & 7);
    if (number == 0 || number > 536870911u)
      fail(f.offset, "field number " + std::to_string(number));
    f.number = static_cast<int>(number);
    switch (wire) {
      case 0:
        f.wire = Wire::varint;
        f.number_value = varint("a varint value");
        break;
      case 1:
        f.wire = Wire::fixed64;
        f.number_value = fixed(8);
        break;
      case 5:
        f.wire = Wire::fixed32;
        f.number_value = fixed(4);
        break;
      case 2: {
        f.wire = Wire::bytes;
        const std::uint64_t n = varint("a length");
        if (n > m_data.size() - m_pos) {
          fail(f.offset, "field " + std::to_string(number) + " claims " + std::to_string(n) +
                             " bytes, but only " + std::to_string(m_data.size() - m_pos) +
                             " are left (truncated or corrupted file)");
        }
        f.bytes = m_data.substr(m_pos, static_cast<std::size_t>(n));
        m_pos += static_cast<std::size_t>(n);
        break;
      }
      default:
        fail(f.offset,
             "field " + std::to_string(number) + " has wire type " + std::to_string(wire) +
                 (wire == 3 || wire == 4 ? " (a group, not used by ONNX)" : " (invalid)"));
    }
    return true;
  }

  /// The offset of `f`'s bytes in the file (for a nested reader).
  [[nodiscard]] std::size_t bytes_offset(const Field& f) const noexcept {
    return m_base + static_cast<std::size_t>(f.bytes.data() - m_data.data());
  }
  [[nodiscard]] const std::string& what() const noexcept { return m_what; }

  /// Throws ModelFormatError "ONNX: <what>, byte <offset>: <problem>".
  [[noreturn]] void fail(std::size_t offset, const std::string& problem) const {
    throw ModelFormatError("ONNX: " + m_what + ", byte " + std::to_string(offset) + ": " + problem);
  }

  /// The field's value as an int64 (varint fields only).
  [[nodiscard]] std::int64_t as_int(const Field& f, std::string_view name) const {
    if (f.wire != Wire::varint) wrong_type(f, name, "a varint");
    return static_cast<std::int64_t>(f.number_value);
  }
  [[nodiscard]] float as_float(const Field& f, std::string_view name) const {
    if (f.wire != Wire::fixed32) wrong_type(f, name, "a 32-bit float");
    const auto u = static_cast<std::uint32_t>(f.number_value);
    float v;
    std::memcpy(&v, &u, 4);
    return v;
  }
  [[nodiscard]] double as_double(const Field& f, std::string_view name) const {
    if (f.wire != Wire::fixed64) wrong_type(f, name, "a 64-bit double");
    double v;
    std::memcpy(&v, &f.number_value, 8);
    return v;
  }
  [[nodiscard]] std::string_view as_bytes(const Field& f, std::string_view name) const {
    if (f.wire != Wire::bytes) wrong_type(f, name, "length-delimited");
    return f.bytes;
  }

  /// Appends a repeated int64 field's values (packed or one per field).
  template <class Vec>
  void read_ints(const Field& f, std::string_view name, Vec& out) const {
    if (f.wire == Wire::varint) {
      out.push_back(static_cast<std::int64_t>(f.number_value));
      return;
    }
    if (f.wire != Wire::bytes) wrong_type(f, name, "varints");
    BasicReader packed(f.bytes, m_what + " field '" + std::string(name) + "'", bytes_offset(f));
    while (!packed.at_end()) {
      out.push_back(static_cast<std::int64_t>(packed.varint("a packed varint")));
    }
  }
  /// Appends a repeated float field's values (packed or one per field).
  template <class Vec>
  void read_floats(const Field& f, std::string_view name, Vec& out) const {
    read_fixed<float>(f, name, out);
  }
  /// Appends a repeated double field's values (packed or one per field).
  template <class Vec>
  void read_doubles(const Field& f, std::string_view name, Vec& out) const {
    read_fixed<double>(f, name, out);
  }

  [[nodiscard]] bool at_end() const noexcept { return m_pos == m_data.size(); }

 private:
  [[noreturn]] void wrong_type(const Field& f, std::string_view name, const char* expected) const {
    fail(f.offset, "field " + std::to_string(f.number) + " ('" + std::string(name) +
                       "') should be " + expected + ", but has wire type " +
                       std::to_string(static_cast<int>(f.wire)));
  }
  /// float (wire type 5) or double (wire type 1) values, one per field or packed.
  template <class T, class Vec>
  void read_fixed(const Field& f, std::string_view name, Vec& out) const {
    constexpr std::size_t width = sizeof(T);
    const Wire single = width == 4 ? Wire::fixed32 : Wire::fixed64;
    const char* kind = width == 4 ? "32-bit floats" : "64-bit doubles";
    if (f.wire == single) {
      if constexpr (width == 4) {
        out.push_back(as_float(f, name));
      } else {
        out.push_back(as_double(f, name));
      }
      return;
    }
    if (f.wire != Wire::bytes) wrong_type(f, name, kind);
    if (f.bytes.size() % width != 0) {
      fail(f.offset, "packed " + std::string(kind) + " '" + std::string(name) + "' have " +
                         std::to_string(f.bytes.size()) + " bytes, not a multiple of " +
                         std::to_string(width));
    }
    for (std::size_t i = 0; i < f.bytes.size(); i += width) {
      std::uint64_t u = 0;
      T v;
      for (std::size_t b = 0; b < width; ++b) {
        u |= static_cast<std::uint64_t>(static_cast<unsigned char>(f.bytes[i + b])) << (8 * b);
      }
      if constexpr (width == 4) {
        const auto u32 = static_cast<std::uint32_t>(u);
        std::memcpy(&v, &u32, 4);
      } else {
        std::memcpy(&v, &u, 8);
      }
      out.push_back(v);
    }
  }

  std::uint64_t varint(const char* what) {
    const std::size_t start = m_pos;
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (m_pos == m_data.size()) {
        fail(m_base + start, std::string("the file ends inside ") + what + " (truncated)");
      }
      const auto b = static_cast<unsigned char>(m_data[m_pos++]);
      if (shift == 63 && b > 1) fail(m_base + start, std::string(what) + " is longer than 64 bits");
      v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return v;
    }
    fail(m_base + start, std::string(what) + " is longer than 10 bytes");
  }
  std::uint64_t fixed(int n) {
    if (m_data.size() - m_pos < static_cast<std::size_t>(n)) {
      fail(m_base + m_pos,
           "the file ends inside a " + std::to_string(8 * n) + "-bit value (truncated)");
    }
    std::uint64_t v = 0;
    for (std::size_t b = 0; b < static_cast<std::size_t>(n); ++b) {
      v |= static_cast<std::uint64_t>(static_cast<unsigned char>(m_data[m_pos + b])) << (8 * b);
    }
    m_pos += static_cast<std::size_t>(n);
    return v;
  }

  std::string_view m_data;
  std::string m_what;
  std::size_t m_base = 0;
  std::size_t m_pos = 0;
};

/// The reader (a template for the same reason as the writer).
using Reader = BasicReader<>;

}  // namespace backprop::detail::pb
