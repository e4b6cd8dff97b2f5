/// \file
/// \brief Reading IDX files (the format of MNIST), plain or gzip-compressed.
///
/// An IDX file is a 4-byte magic number `00 00 <type> <rank>`, then `rank` big-endian
/// 32-bit dimensions, then the elements in row-major order, big-endian.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "../detail/inflate.hpp"
#include "../errors.hpp"

namespace backprop {

/// \brief Element type codes of the IDX format (the third magic byte).
enum class IdxType : std::uint8_t {
  UByte = 0x08,   ///< unsigned 8-bit
  SByte = 0x09,   ///< signed 8-bit
  Short = 0x0B,   ///< signed 16-bit
  Int = 0x0C,     ///< signed 32-bit
  Float = 0x0D,   ///< IEEE 754 32-bit
  Double = 0x0E,  ///< IEEE 754 64-bit
};

/// \brief Size in bytes of one element of type `t` (0 for an unknown code).
[[nodiscard]] constexpr std::size_t idx_element_size(IdxType t) noexcept {
  switch (t) {
    case IdxType::UByte:
    case IdxType::SByte:
      return 1;
    case IdxType::Short:
      return 2;
    case IdxType::Int:
    case IdxType::Float:
      return 4;
    case IdxType::Double:
      return 8;
  }
  return 0;
}

/// \brief Name of the type as in the IDX description ("ubyte", "int", ...).
[[nodiscard]] constexpr const char* idx_type_name(IdxType t) noexcept {
  switch (t) {
    case IdxType::UByte:
      return "ubyte";
    case IdxType::SByte:
      return "sbyte";
    case IdxType::Short:
      return "short";
    case IdxType::Int:
      return "int";
    case IdxType::Float:
      return "float";
    case IdxType::Double:
      return "double";
  }
  return "unknown";
}

/// \brief Largest rank `load_idx` accepts.
inline constexpr std::size_t idx_max_rank = 8;

/// \brief Default limit on the element data of one IDX file (2 GiB), which also caps
/// gzip decompression.
inline constexpr std::size_t idx_default_max_bytes = std::size_t{1} << 31;

/// \brief The contents of an IDX file.
///
/// `bytes` holds the element data exactly as stored in the file (row-major, multi-byte
/// types big-endian); `value()` and `to_vector()` decode it.
struct IdxTensor {
  IdxType type = IdxType::UByte;     ///< the element type
  std::vector<std::size_t> dims;     ///< the size of each dimension
  std::vector<unsigned char> bytes;  ///< the element data as stored

  /// \brief Number of dimensions.
  [[nodiscard]] std::size_t rank() const noexcept { return dims.size(); }

  /// \brief Size in bytes of one element.
  [[nodiscard]] std::size_t element_size() const noexcept { return idx_element_size(type); }

  /// \brief Number of elements (the product of `dims`).
  [[nodiscard]] std::size_t size() const noexcept {
    const std::size_t es = element_size();
    return es == 0 ? 0 : bytes.size() / es;
  }

  /// \brief Element `i` (row-major order) converted to double; exact for every IDX type.
  /// \throws std::out_of_range if `i >= size()`.
  [[nodiscard]] double value(std::size_t i) const {
    if (i >= size()) {
      throw std::out_of_range("IdxTensor::value: index " + std::to_string(i) +
                              " is outside a tensor of " + std::to_string(size()) + " elements");
    }
    const unsigned char* p = bytes.data() + i * element_size();
    std::uint64_t u = 0;
    for (std::size_t k = 0; k < element_size(); ++k) u = (u << 8) | p[k];
    switch (type) {
      case IdxType::UByte:
        return static_cast<double>(u);
      case IdxType::SByte:
        return static_cast<double>(static_cast<std::int8_t>(static_cast<std::uint8_t>(u)));
      case IdxType::Short:
        return static_cast<double>(static_cast<std::int16_t>(static_cast<std::uint16_t>(u)));
      case IdxType::Int:
        return static_cast<double>(static_cast<std::int32_t>(static_cast<std::uint32_t>(u)));
      case IdxType::Float:
        return static_cast<double>(std::bit_cast<float>(static_cast<std::uint32_t>(u)));
      case IdxType::Double:
        return std::bit_cast<double>(u);
    }
    return 0.0;
  }

  /// \brief All elements, row-major, converted with `static_cast<T>`.
  /// \tparam T an arithmetic type.
  template <class T>
  [[nodiscard]] std::vector<T> to_vector() const {
    static_assert(std::is_arithmetic_v<T>, "IdxTensor::to_vector<T>: T must be arithmetic");
    std::vector<T> out(size());
    if (type == IdxType::UByte) {
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(bytes[i]);
    } else {
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(value(i));
    }
    return out;
  }
};

namespace detail {

/// \brief What an IDX header announces.
struct IdxHeader {
  IdxType type = IdxType::UByte;
  std::vector<std::size_t> dims;
  std::size_t header_bytes = 0;
  std::size_t data_bytes = 0;
};

/// \brief "60000x28x28".
[[nodiscard]] inline std::string idx_dims_string(const std::vector<std::size_t>& dims) {
  std::string s;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i != 0) s += 'x';
    s += std::to_string(dims[i]);
  }
  return s;
}

[[noreturn]] inline void throw_idx(const std::string& name, const std::string& problem) {
  throw DataError("load_idx: " + name + ": " + problem);
}

/// \brief Parses and validates an IDX header against the total length of the data.
/// \param p the first bytes of the data.
/// \param avail how many bytes are at `p` (at least the header, if the data has one).
/// \param total total length of the (decompressed) data.
/// \param name file name for messages.
/// \param what "file" or "decompressed data", for messages.
/// \param max_bytes limit on the element data.
/// \throws DataError naming `name` and the problem.
[[nodiscard]] inline IdxHeader parse_idx_header(const unsigned char* p, std::size_t avail,
                                                std::size_t total, const std::string& name,
                                                const std::string& what, std::size_t max_bytes) {
  if (total == 0) throw_idx(name, what + " is empty");
  if (total < 4) {
    throw_idx(name, "truncated header: " + what + " has " + std::to_string(total) +
                        " bytes, an IDX header needs at least 4");
  }
  if (p[0] != 0 || p[1] != 0) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string found;
    for (int i = 0; i < 4; ++i) {
      if (i != 0) found += ' ';
      found += hex[p[i] >> 4];
      found += hex[p[i] & 0xF];
    }
    throw_idx(name, "bad magic number " + found + " (an IDX file starts with 00 00)");
  }
  IdxHeader h;
  h.type = static_cast<IdxType>(p[2]);
  if (idx_element_size(h.type) == 0) {
    throw_idx(name, "unknown element type code " + std::to_string(p[2]) +
                        " (expected 8, 9, 11, 12, 13 or 14)");
  }
  const std::size_t rank = p[3];
  if (rank == 0 || rank > idx_max_rank) {
    throw_idx(name, "unsupported rank " + std::to_string(rank) + " (expected 1 to " +
                        std::to_string(idx_max_rank) + ")");
  }
  h.header_bytes = 4 + 4 * rank;
  if (total < h.header_bytes) {
    throw_idx(name, "truncated header: " + what + " has " + std::to_string(total) +
                        " bytes, the header of a rank-" + std::to_string(rank) + " file needs " +
                        std::to_string(h.header_bytes));
  }
  if (avail < h.header_bytes) throw_idx(name, "internal error: header not read");
  std::size_t count = 1;
  bool overflow = false;
  h.dims.reserve(rank);
  for (std::size_t i = 0; i < rank; ++i) {
    const unsigned char* d = p + 4 + 4 * i;
    const std::size_t dim = (std::size_t{d[0]} << 24) | (std::size_t{d[1]} << 16) |
                            (std::size_t{d[2]} << 8) | std::size_t{d[3]};
    h.dims.push_back(dim);
    if (dim != 0 && count > std::numeric_limits<std::size_t>::max() / dim) overflow = true;
    count *= dim;
  }
  const std::size_t es = idx_element_size(h.type);
  if (overflow || count > std::numeric_limits<std::size_t>::max() / es) {
    throw_idx(name, "the header announces " + idx_dims_string(h.dims) + " " +
                        idx_type_name(h.type) + " elements, a size that overflows");
  }
  h.data_bytes = count * es;
  const std::size_t body = total - h.header_bytes;
  if (body != h.data_bytes) {
    const std::string expected =
        std::to_string(h.header_bytes) + " + " + std::to_string(h.data_bytes) + " bytes expected";
    throw_idx(name, std::string(body < h.data_bytes ? "truncated data: " : "trailing garbage: ") +
                        what + " has " + std::to_string(total) +
                        " bytes but the header announces " + idx_dims_string(h.dims) + " " +
                        idx_type_name(h.type) + " elements (" + expected + ")");
  }
  if (h.data_bytes > max_bytes) {
    throw_idx(name, "the header announces " + std::to_string(h.data_bytes) +
                        " bytes of data, more than the limit of " + std::to_string(max_bytes));
  }
  return h;
}

/// \brief Saturating a + b.
[[nodiscard]] constexpr std::size_t sat_add(std::size_t a, std::size_t b) noexcept {
  return b > std::numeric_limits<std::size_t>::max() - a ? std::numeric_limits<std::size_t>::max()
                                                         : a + b;
}

/// \brief Parses a complete decompressed IDX image in memory.
[[nodiscard]] inline IdxTensor parse_idx(const unsigned char* data, std::size_t size,
                                         const std::string& name, const std::string& what,
                                         std::size_t max_bytes) {
  IdxHeader h = parse_idx_header(data, size, size, name, what, max_bytes);
  IdxTensor t;
  t.type = h.type;
  t.dims = std::move(h.dims);
  t.bytes.assign(data + h.header_bytes, data + size);
  return t;
}

/// \brief Decompresses gzip data for `name`, turning inflate errors into named DataErrors.
[[nodiscard]] inline std::vector<unsigned char> idx_gunzip(const unsigned char* data,
                                                           std::size_t size,
                                                           const std::string& name,
                                                           std::size_t max_bytes) {
  try {
    return gunzip(data, size, sat_add(max_bytes, 4 + 4 * idx_max_rank));
  } catch (const InflateError& e) {
    throw_idx(name, std::string("corrupt gzip data: ") + e.what());
  }
}

}  // namespace detail

/// \brief Parses an IDX file held in memory, plain or gzip (detected by the 1f 8b magic).
/// \param data the file's bytes.
/// \param name the name used in error messages.
/// \param max_bytes the largest element data accepted (also caps decompression).
/// \returns the tensor.
/// \throws DataError naming `name` and the problem, for anything malformed.
[[nodiscard]] inline IdxTensor read_idx(std::span<const unsigned char> data,
                                        const std::string& name = "<memory>",
                                        std::size_t max_bytes = idx_default_max_bytes) {
  if (detail::is_gzip(data.data(), data.size())) {
    std::vector<unsigned char> raw = detail::idx_gunzip(data.data(), data.size(), name, max_bytes);
    detail::IdxHeader h = detail::parse_idx_header(raw.data(), raw.size(), raw.size(), name,
                                                   "decompressed data", max_bytes);
    // Reuse the decompression buffer rather than copying tens of megabytes.
    raw.erase(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(h.header_bytes));
    IdxTensor t;
    t.type = h.type;
    t.dims = std::move(h.dims);
    t.bytes = std::move(raw);
    return t;
  }
  return detail::parse_idx(data.data(), data.size(), name, "file", max_bytes);
}

/// \brief Reads an IDX file, plain or gzip-compressed (detected by content, not by name).
///
/// The header is validated (magic, type, rank 1 to 8, dimensions, their product against
/// overflow, against the actual length of the data and against `max_bytes`) before any
/// memory is allocated for the elements, so an absurd header costs nothing; trailing bytes
/// after the announced data are an error.
/// \param path the file.
/// \param max_bytes the largest element data accepted; also caps gzip decompression.
/// \returns the tensor.
/// \throws DataError whose message names `path` and the problem, e.g.
///   "load_idx: /d/train-images-idx3-ubyte: truncated data: file has 47040015 bytes but the
///   header announces 60000x28x28 ubyte elements (16 + 47040000 bytes expected)".
[[nodiscard]] inline IdxTensor load_idx(const std::filesystem::path& path,
                                        std::size_t max_bytes = idx_default_max_bytes) {
  const std::string name = path.string();
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (status.type() == std::filesystem::file_type::not_found) {
    detail::throw_idx(name, "file not found");
  }
  if (ec) detail::throw_idx(name, "cannot access the file: " + ec.message());
  if (std::filesystem::is_directory(status)) detail::throw_idx(name, "is a directory, not a file");
  if (!std::filesystem::is_regular_file(status)) detail::throw_idx(name, "is not a regular file");
  const std::uintmax_t file_size = std::filesystem::file_size(path, ec);
  if (ec) detail::throw_idx(name, "cannot get the file size: " + ec.message());
  if (file_size == 0) detail::throw_idx(name, "file is empty");
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::throw_idx(name, "cannot open the file for reading");

  auto read_exactly = [&](unsigned char* dst, std::size_t n) {
    in.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(n));
    if (static_cast<std::size_t>(in.gcount()) != n) {
      detail::throw_idx(name, "read error (the file shrank while being read?)");
    }
  };

  // Enough for the magic and the largest header.
  unsigned char head[4 + 4 * idx_max_rank] = {};
  const std::size_t head_n =
      file_size < sizeof(head) ? static_cast<std::size_t>(file_size) : sizeof(head);
  read_exactly(head, head_n);

  if (detail::is_gzip(head, head_n)) {
    // Compressed data is at most slightly larger than the data it holds (stored blocks).
    const std::size_t max_in = detail::sat_add(detail::sat_add(max_bytes, max_bytes / 64), 4096);
    if (file_size > max_in) {
      detail::throw_idx(name, "gzip file of " + std::to_string(file_size) +
                                  " bytes is larger than the limit allows");
    }
    std::vector<unsigned char> packed(static_cast<std::size_t>(file_size));
    std::copy(head, head + head_n, packed.begin());
    read_exactly(packed.data() + head_n, packed.size() - head_n);
    if (in.peek() != std::ifstream::traits_type::eof()) {
      detail::throw_idx(name, "read error (the file grew while being read?)");
    }
    return read_idx(packed, name, max_bytes);
  }

  if (file_size > std::numeric_limits<std::size_t>::max()) {
    detail::throw_idx(name, "file is too large");
  }
  const auto total = static_cast<std::size_t>(file_size);
  detail::IdxHeader h = detail::parse_idx_header(head, head_n, total, name, "file", max_bytes);
  IdxTensor t;
  t.type = h.type;
  t.dims = std::move(h.dims);
  t.bytes.resize(h.data_bytes);
  in.clear();
  in.seekg(static_cast<std::streamoff>(h.header_bytes));
  if (!in) detail::throw_idx(name, "cannot seek in the file");
  read_exactly(t.bytes.data(), t.bytes.size());
  if (in.peek() != std::ifstream::traits_type::eof()) {
    detail::throw_idx(name, "read error (the file grew while being read?)");
  }
  return t;
}

}  // namespace backprop
