/// \file
/// \brief Bounds-checked gzip (RFC 1952) and DEFLATE (RFC 1951) decompression, and CRC-32.
///
/// Written from the RFCs so that the library needs no zlib. Every malformed input throws
/// `detail::InflateError` (a `DataError`) with a message; callers prefix the file name.
/// Reads never leave the input buffer, every loop consumes input or output, and the
/// output is capped by a caller-given limit (decompression bombs throw instead of
/// exhausting memory).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../errors.hpp"

namespace backprop::detail {

/// \brief Thrown for malformed or oversized gzip / DEFLATE data.
class InflateError : public DataError {
 public:
  using DataError::DataError;
};

/// \brief The eight slicing tables of the reflected CRC-32 (polynomial 0xEDB88320), made
/// when first used: as a constexpr table, g++ 12 evaluated it in every program including
/// the umbrella header (9 MB of compiler memory).
[[nodiscard]] inline std::array<std::array<std::uint32_t, 256>, 8> make_crc32_tables() noexcept {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t n = 0; n < 256; ++n) {
    std::uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1U) != 0 ? 0xEDB88320U ^ (c >> 1) : c >> 1;
    t[0][n] = c;
  }
  for (std::size_t k = 1; k < 8; ++k) {
    for (std::size_t n = 0; n < 256; ++n) {
      t[k][n] = (t[k - 1][n] >> 8) ^ t[0][t[k - 1][n] & 0xFFU];
    }
  }
  return t;
}

/// \brief CRC-32 as in gzip, zlib and PNG (`crc32("123456789") == 0xCBF43926`).
/// \param data bytes to checksum (may be null when `size` is 0).
/// \param size number of bytes.
/// \param init the CRC of the preceding bytes, so that
///   `crc32(b, nb, crc32(a, na)) == crc32(a followed by b)`; 0 to start.
/// \returns the CRC-32 of the bytes.
[[nodiscard]] inline std::uint32_t crc32(const unsigned char* data, std::size_t size,
                                         std::uint32_t init = 0) noexcept {
  static const std::array<std::array<std::uint32_t, 256>, 8> t = make_crc32_tables();
  std::uint32_t c = ~init;
  while (size >= 8) {
    const std::uint32_t lo = c ^ (std::uint32_t{data[0]} | (std::uint32_t{data[1]} << 8) |
                                  (std::uint32_t{data[2]} << 16) | (std::uint32_t{data[3]} << 24));
    const std::uint32_t hi = std::uint32_t{data[4]} | (std::uint32_t{data[5]} << 8) |
                             (std::uint32_t{data[6]} << 16) | (std::uint32_t{data[7]} << 24);
    c = t[7][lo & 0xFFU] ^ t[6][(lo >> 8) & 0xFFU] ^ t[5][(lo >> 16) & 0xFFU] ^ t[4][lo >> 24] ^
        t[3][hi & 0xFFU] ^ t[2][(hi >> 8) & 0xFFU] ^ t[1][(hi >> 16) & 0xFFU] ^ t[0][hi >> 24];
    data += 8;
    size -= 8;
  }
  for (std::size_t i = 0; i < size; ++i) c = t[0][(c ^ data[i]) & 0xFFU] ^ (c >> 8);
  return ~c;
}

/// \brief True if `data` starts with the gzip magic bytes 1f 8b.
[[nodiscard]] inline bool is_gzip(const unsigned char* data, std::size_t size) noexcept {
  return size >= 2 && data[0] == 0x1F && data[1] == 0x8B;
}

/// \brief LSB-first bit reader over a byte buffer; reading past the end throws.
class BitReader {
 public:
  BitReader(const unsigned char* data, std::size_t size) noexcept : m_data(data), m_size(size) {}

  /// \brief Consumes and returns `n` bits (n <= 32), the first bit read in bit 0.
  /// \throws InflateError if the input ends first.
  std::uint32_t bits(unsigned n) {
    if (m_count < n) {
      refill();
      if (m_count < n) throw_truncated();
    }
    const auto v = static_cast<std::uint32_t>(m_buf & ((std::uint64_t{1} << n) - 1U));
    m_buf >>= n;
    m_count -= n;
    return v;
  }

  /// \brief The next 15 bits without consuming them (missing bits past the end read as 0);
  /// `available()` tells how many of them are real.
  std::uint32_t peek15() noexcept {
    if (m_count < 15) refill();
    return static_cast<std::uint32_t>(m_buf & 0x7FFFU);
  }

  [[nodiscard]] unsigned available() const noexcept { return m_count; }

  /// \brief Consumes `n` already peeked bits.
  /// \throws InflateError if fewer than `n` bits are left.
  void consume(unsigned n) {
    if (n > m_count) throw_truncated();
    m_buf >>= n;
    m_count -= n;
  }

  /// \brief Drops the bits up to the next byte boundary.
  void align_to_byte() noexcept {
    const unsigned drop = m_count % 8U;
    m_buf >>= drop;
    m_count -= drop;
  }

  /// \brief Offset of the next unread byte; only meaningful after `align_to_byte()`.
  [[nodiscard]] std::size_t byte_position() const noexcept { return m_pos - m_count / 8U; }

  /// \brief Continues reading at byte offset `pos` (<= size), discarding buffered bits.
  void seek_byte(std::size_t pos) noexcept {
    m_pos = pos;
    m_buf = 0;
    m_count = 0;
  }

  [[noreturn]] static void throw_truncated() {
    throw InflateError("deflate: compressed data is truncated");
  }

 private:
  void refill() noexcept {
    while (m_count <= 56 && m_pos < m_size) {
      m_buf |= std::uint64_t{m_data[m_pos++]} << m_count;
      m_count += 8;
    }
  }

  const unsigned char* m_data;
  std::size_t m_size;
  std::size_t m_pos = 0;
  std::uint64_t m_buf = 0;
  unsigned m_count = 0;
};

/// \brief A canonical Huffman decoding table: a direct lookup for codes of up to
/// `fast_bits` bits, and the count/symbol arrays of RFC 1951 for longer codes.
class Huffman {
 public:
  static constexpr unsigned max_bits = 15;
  static constexpr unsigned fast_bits = 9;

  /// \brief Builds the table from code lengths (0 = symbol unused).
  /// \returns 0 for a complete code, > 0 for an incomplete one (some bit patterns unused).
  /// \throws InflateError for an over-subscribed code or a length above 15.
  int build(const std::uint8_t* lengths, std::size_t n) {
    m_count.fill(0);
    m_fast.fill(0);
    for (std::size_t s = 0; s < n; ++s) {
      if (lengths[s] > max_bits) throw InflateError("deflate: code length above 15");
      ++m_count[lengths[s]];
    }
    if (m_count[0] == n) return 0;  // no codes: complete, but every decode fails
    int left = 1;
    for (unsigned len = 1; len <= max_bits; ++len) {
      left <<= 1;
      left -= m_count[len];
      if (left < 0) throw InflateError("deflate: over-subscribed Huffman code");
    }
    std::array<std::uint16_t, max_bits + 2> offs{};
    for (unsigned len = 1; len <= max_bits; ++len) {
      offs[len + 1] = static_cast<std::uint16_t>(offs[len] + m_count[len]);
    }
    std::array<std::uint32_t, max_bits + 1> next_code{};
    std::uint32_t code = 0;
    for (unsigned len = 1; len <= max_bits; ++len) {
      code = (code + (len == 1 ? 0U : m_count[len - 1])) << 1;
      next_code[len] = code;
    }
    for (std::size_t s = 0; s < n; ++s) {
      const unsigned len = lengths[s];
      if (len == 0) continue;
      m_symbol[offs[len]++] = static_cast<std::uint16_t>(s);
      const std::uint32_t c = next_code[len]++;
      if (len <= fast_bits) {
        // The stream holds Huffman codes most significant bit first, so index by the
        // bit-reversed code.
        std::uint32_t rev = 0;
        for (unsigned b = 0; b < len; ++b) rev |= ((c >> b) & 1U) << (len - 1 - b);
        const auto entry = static_cast<std::uint16_t>((s << 4) | len);
        for (std::uint32_t i = rev; i < (1U << fast_bits); i += 1U << len) m_fast[i] = entry;
      }
    }
    return left;
  }

  /// \brief Number of symbols with code length `len`.
  [[nodiscard]] unsigned count(unsigned len) const noexcept { return m_count[len]; }

  /// \brief Decodes one symbol.
  /// \throws InflateError on an unused bit pattern or truncated input.
  unsigned decode(BitReader& in) const {
    const std::uint32_t peek = in.peek15();
    const std::uint16_t entry = m_fast[peek & ((1U << fast_bits) - 1U)];
    if (entry != 0) {
      in.consume(entry & 0xFU);
      return entry >> 4;
    }
    // Slow path (RFC 1951 canonical decoding, one bit at a time).
    std::uint32_t code = 0;
    std::uint32_t first = 0;
    std::uint32_t index = 0;
    for (unsigned len = 1; len <= max_bits; ++len) {
      code |= (peek >> (len - 1)) & 1U;
      const std::uint32_t cnt = m_count[len];
      if (code - first < cnt) {
        in.consume(len);
        return m_symbol[index + (code - first)];
      }
      index += cnt;
      first = (first + cnt) << 1;
      code <<= 1;
    }
    if (in.available() < max_bits) BitReader::throw_truncated();
    throw InflateError("deflate: invalid Huffman code");
  }

 private:
  std::array<std::uint16_t, 1U << fast_bits> m_fast{};  // (symbol << 4) | length, 0 = slow path
  std::array<std::uint16_t, max_bits + 1> m_count{};
  std::array<std::uint16_t, 320> m_symbol{};
};

/// \brief Throws if appending `n` bytes to `have` bytes would pass `max_output`.
inline void check_output_room(std::size_t have, std::size_t n, std::size_t max_output) {
  if (have > max_output || n > max_output - have) {
    throw InflateError("decompressed data exceeds the limit of " + std::to_string(max_output) +
                       " bytes");
  }
}

/// \brief Decodes the symbols of one Huffman-coded block (fixed or dynamic).
inline void inflate_codes(BitReader& in, const Huffman& lit, const Huffman& dist,
                          std::vector<unsigned char>& out, std::size_t stream_start,
                          std::size_t max_output) {
  static constexpr std::array<std::uint16_t, 29> len_base = {
      3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
  static constexpr std::array<std::uint8_t, 29> len_extra = {
      0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
  static constexpr std::array<std::uint16_t, 30> dist_base = {
      1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
      193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
  static constexpr std::array<std::uint8_t, 30> dist_extra = {0, 0, 0,  0,  1,  1,  2,  2,  3,  3,
                                                              4, 4, 5,  5,  6,  6,  7,  7,  8,  8,
                                                              9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
  for (;;) {
    const unsigned sym = lit.decode(in);
    if (sym < 256) {
      check_output_room(out.size(), 1, max_output);
      out.push_back(static_cast<unsigned char>(sym));
      continue;
    }
    if (sym == 256) return;
    const unsigned li = sym - 257;
    if (li >= len_base.size()) throw InflateError("deflate: invalid length symbol");
    const std::size_t len = len_base[li] + in.bits(len_extra[li]);
    const unsigned di = dist.decode(in);
    if (di >= dist_base.size()) throw InflateError("deflate: invalid distance symbol");
    const std::size_t d = dist_base[di] + in.bits(dist_extra[di]);
    const std::size_t written = out.size() - stream_start;
    if (d > written) {
      throw InflateError("deflate: back-reference distance " + std::to_string(d) +
                         " reaches before the start of the data (" + std::to_string(written) +
                         " bytes written)");
    }
    check_output_room(out.size(), len, max_output);
    const std::size_t from = out.size() - d;
    const std::size_t to = out.size();
    out.resize(to + len);
    unsigned char* p = out.data();
    for (std::size_t i = 0; i < len; ++i) p[to + i] = p[from + i];  // may overlap: byte order
  }
}

/// \brief The fixed literal/length and distance codes of RFC 1951 section 3.2.6.
struct FixedCodes {
  Huffman lit;
  Huffman dist;
  FixedCodes() {
    std::array<std::uint8_t, 288> l{};
    for (std::size_t s = 0; s < 288; ++s) l[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
    lit.build(l.data(), l.size());
    std::array<std::uint8_t, 30> d{};
    d.fill(5);
    dist.build(d.data(), d.size());
  }
};

/// \brief Reads the code tables of a dynamic block (RFC 1951 section 3.2.7).
inline void read_dynamic_codes(BitReader& in, Huffman& lit, Huffman& dist) {
  const unsigned nlen = in.bits(5) + 257;
  const unsigned ndist = in.bits(5) + 1;
  const unsigned ncode = in.bits(4) + 4;
  if (nlen > 286 || ndist > 30) throw InflateError("deflate: too many length or distance codes");
  static constexpr std::array<std::uint8_t, 19> order = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                                         11, 4,  12, 3, 13, 2, 14, 1, 15};
  std::array<std::uint8_t, 19> cl{};
  for (unsigned i = 0; i < ncode; ++i) cl[order[i]] = static_cast<std::uint8_t>(in.bits(3));
  Huffman clcode;
  if (clcode.build(cl.data(), cl.size()) != 0) {
    throw InflateError("deflate: incomplete code-length code");
  }
  std::array<std::uint8_t, 286 + 30> lengths{};
  unsigned index = 0;
  while (index < nlen + ndist) {
    const unsigned sym = clcode.decode(in);
    if (sym < 16) {
      lengths[index++] = static_cast<std::uint8_t>(sym);
      continue;
    }
    std::uint8_t value = 0;
    unsigned repeat = 0;
    if (sym == 16) {
      if (index == 0) throw InflateError("deflate: repeat of a code length with none before");
      value = lengths[index - 1];
      repeat = 3 + in.bits(2);
    } else if (sym == 17) {
      repeat = 3 + in.bits(3);
    } else {
      repeat = 11 + in.bits(7);
    }
    if (index + repeat > nlen + ndist) throw InflateError("deflate: too many code lengths");
    while (repeat-- > 0) lengths[index++] = value;
  }
  if (lengths[256] == 0) throw InflateError("deflate: no end-of-block code");
  // An incomplete code is only allowed when it is a single code of length 1.
  if (lit.build(lengths.data(), nlen) != 0 && nlen != lit.count(0) + lit.count(1)) {
    throw InflateError("deflate: incomplete literal/length code");
  }
  if (dist.build(lengths.data() + nlen, ndist) != 0 && ndist != dist.count(0) + dist.count(1)) {
    throw InflateError("deflate: incomplete distance code");
  }
}

/// \brief Decompresses one raw DEFLATE stream, appending to `out`.
/// \param data compressed bytes; the stream may be followed by other data.
/// \param size number of bytes available at `data`.
/// \param out receives the decompressed bytes (appended).
/// \param max_output the largest total size `out` may reach.
/// \returns the number of input bytes the stream used (up to its final byte boundary).
/// \throws InflateError on malformed or truncated data or if `max_output` would be exceeded.
inline std::size_t inflate_raw(const unsigned char* data, std::size_t size,
                               std::vector<unsigned char>& out, std::size_t max_output) {
  static const FixedCodes fixed;
  check_output_room(out.size(), 0, max_output);
  BitReader in(data, size);
  const std::size_t stream_start = out.size();
  Huffman lit;
  Huffman dist;
  bool last = false;
  while (!last) {
    last = in.bits(1) != 0;
    const std::uint32_t type = in.bits(2);
    if (type == 0) {
      in.align_to_byte();
      const std::uint32_t len = in.bits(16);
      const std::uint32_t nlen = in.bits(16);
      if (len != (~nlen & 0xFFFFU)) {
        throw InflateError("deflate: stored block length does not match its complement");
      }
      const std::size_t pos = in.byte_position();
      if (size - pos < len) BitReader::throw_truncated();
      check_output_room(out.size(), len, max_output);
      out.insert(out.end(), data + pos, data + pos + len);
      in.seek_byte(pos + len);
    } else if (type == 1) {
      inflate_codes(in, fixed.lit, fixed.dist, out, stream_start, max_output);
    } else if (type == 2) {
      read_dynamic_codes(in, lit, dist);
      inflate_codes(in, lit, dist, out, stream_start, max_output);
    } else {
      throw InflateError("deflate: invalid block type 3");
    }
  }
  in.align_to_byte();
  return in.byte_position();
}

/// \brief Little-endian 32-bit read; the caller checks the bounds.
[[nodiscard]] inline std::uint32_t read_le32(const unsigned char* p) noexcept {
  return std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8) | (std::uint32_t{p[2]} << 16) |
         (std::uint32_t{p[3]} << 24);
}

/// \brief Decompresses gzip data (RFC 1952), verifying each member's CRC-32 and ISIZE.
///
/// Concatenated members are decoded one after the other, as `gzip -d` does; anything
/// after the last member that is not another member is an error.
/// \param data the gzip file's bytes.
/// \param size number of bytes.
/// \param max_output the largest decompressed size accepted.
/// \returns the decompressed bytes.
/// \throws InflateError on anything malformed, truncated, failing a check, or larger than
///   `max_output`.
[[nodiscard]] inline std::vector<unsigned char> gunzip(const unsigned char* data, std::size_t size,
                                                       std::size_t max_output) {
  std::vector<unsigned char> out;
  if (size >= 18) {
    // Reserve the last member's ISIZE, but never more than the limit or than DEFLATE's
    // maximal ratio (about 1032:1) allows, so a lying trailer cannot force a huge allocation.
    std::size_t hint = read_le32(data + size - 4);
    const std::size_t ratio_cap = size <= max_output / 1032 ? size * 1032 : max_output;
    if (hint > max_output) hint = max_output;
    if (hint > ratio_cap) hint = ratio_cap;
    out.reserve(hint);
  }
  std::size_t pos = 0;
  do {
    const std::size_t start = pos;
    if (size - pos < 10) throw InflateError("gzip: truncated header");
    if (data[pos] != 0x1F || data[pos + 1] != 0x8B) throw InflateError("gzip: bad magic bytes");
    if (data[pos + 2] != 8) {
      throw InflateError("gzip: unsupported compression method " + std::to_string(data[pos + 2]));
    }
    const unsigned flags = data[pos + 3];
    if ((flags & 0xE0U) != 0) throw InflateError("gzip: reserved header flags are set");
    pos += 10;
    if ((flags & 0x04U) != 0) {  // FEXTRA
      if (size - pos < 2) throw InflateError("gzip: truncated header");
      const std::size_t xlen = std::size_t{data[pos]} | (std::size_t{data[pos + 1]} << 8);
      pos += 2;
      if (size - pos < xlen) throw InflateError("gzip: truncated header");
      pos += xlen;
    }
    for (const unsigned flag : {0x08U, 0x10U}) {  // FNAME, FCOMMENT: zero-terminated
      if ((flags & flag) == 0) continue;
      while (pos < size && data[pos] != 0) ++pos;
      if (pos == size) throw InflateError("gzip: truncated header");
      ++pos;
    }
    if ((flags & 0x02U) != 0) {  // FHCRC
      if (size - pos < 2) throw InflateError("gzip: truncated header");
      const std::uint32_t want = std::uint32_t{data[pos]} | (std::uint32_t{data[pos + 1]} << 8);
      if ((crc32(data + start, pos - start) & 0xFFFFU) != want) {
        throw InflateError("gzip: header CRC mismatch");
      }
      pos += 2;
    }
    const std::size_t member_out = out.size();
    pos += inflate_raw(data + pos, size - pos, out, max_output);
    if (size - pos < 8) throw InflateError("gzip: truncated trailer (CRC-32 and length)");
    const std::uint32_t want_crc = read_le32(data + pos);
    const std::uint32_t want_size = read_le32(data + pos + 4);
    const std::size_t got_size = out.size() - member_out;
    const std::uint32_t got_crc = crc32(out.data() + member_out, got_size);
    if (got_crc != want_crc) {
      throw InflateError("gzip: CRC-32 mismatch (trailer says " + std::to_string(want_crc) +
                         ", data has " + std::to_string(got_crc) + ")");
    }
    if (static_cast<std::uint32_t>(got_size) != want_size) {
      throw InflateError("gzip: length mismatch (trailer says " + std::to_string(want_size) +
                         " mod 2^32, data has " + std::to_string(got_size) + " bytes)");
    }
    pos += 8;
  } while (pos < size && is_gzip(data + pos, size - pos));
  if (pos < size) {
    throw InflateError("gzip: " + std::to_string(size - pos) +
                       " bytes of trailing garbage after the compressed data");
  }
  return out;
}

}  // namespace backprop::detail
