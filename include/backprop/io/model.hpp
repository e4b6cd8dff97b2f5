/// \file
/// \brief The binary model format (save/load of a network's parameters) and atomic
/// file replacement. Used by `BasicNetwork::save` / `load`; generic over any network
/// type with backprop's public API, so this header does not include network.hpp.
///
/// Format version 1 (also in docs/model-format.md). Every integer is an unsigned
/// 32-bit little-endian number; every parameter is the IEEE-754 bit pattern of the
/// scalar, little-endian. Encoding is byte by byte, so a file is the same on every host.
///
///     offset  size  field
///     0       4     magic "BPNN" (42 50 4E 4E)
///     4       4     format version: 1
///     8       4     scalar type code: 1 = float (binary32), 2 = double (binary64)
///     12      4     scalar size in bytes: 4 for code 1, 8 for code 2
///     16      4     number of layers L (>= 1)
///     20      ...   L layer records, in order: inputs (u32), outputs (u32),
///                   name length n (u32, 1..255), n bytes of name (the layer
///                   object's `model_name`: for `Dense` the activation's `name`,
///                   e.g. "sigmoid"; no terminator)
///     ...     ...   the parameters, layer after layer: the weights in
///                   row-major order (w(0,0), w(0,1), ..., w(1,0), ...), then
///                   the biases, then the layer's state if it has one (BatchNorm:
///                   running mean and variance, `state_rows` values); each
///                   parameter is `scalar size` bytes. The
///                   layer type fixes their shapes (`weight_rows` x `weight_cols`
///                   and `bias_rows`: for `Dense` Out x In and Out)
///     end-4   4     CRC-32 (IEEE 802.3, as zlib / gzip / PNG) of all bytes before it
///
/// Nothing may follow the checksum. A file of L layers with parameter count P and
/// name lengths n_i has 20 + sum(12 + n_i) + P * size + 4 bytes.
///
/// Loading checks, in this order, and throws `ModelFormatError` at the first problem:
/// magic, version, scalar type, layer count, each layer's inputs, outputs and
/// activation name (against the network being loaded into), the parameter bytes
/// (a truncated file names the offset and how many bytes are missing), the checksum,
/// trailing bytes, and finally that every parameter is finite. Sizes in the header
/// are compared with the network's own compile-time sizes before anything is
/// allocated, so a corrupted header cannot cause a huge allocation.
///
/// Scalar conversion: a file of either scalar type loads into a network of either
/// type. float -> double is exact; double -> float rounds to nearest, and a value
/// whose magnitude exceeds the largest float is rejected (it would become infinite).
/// Saving writes the network's own scalar type, so a save/load round trip is exact.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <ios>
#include <istream>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "../detail/inflate.hpp"
#include "../detail/meta.hpp"
#include "../errors.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#define BACKPROP_DETAIL_MODEL_POSIX 1
#else
#define BACKPROP_DETAIL_MODEL_POSIX 0
#endif

namespace backprop::detail {

static_assert(std::numeric_limits<float>::is_iec559 && std::numeric_limits<double>::is_iec559,
              "backprop model files store IEEE-754 scalars");

inline constexpr std::array<unsigned char, 4> model_magic = {'B', 'P', 'N', 'N'};
inline constexpr std::uint32_t model_format_version = 1;
inline constexpr std::uint32_t model_max_name_length = 255;

template <class Net, std::size_t I>
using ModelLayerParameters =
    std::remove_cvref_t<decltype(std::declval<Net&>().template layer<I>())>;

template <class Net, class Seq = std::make_index_sequence<Net::num_layers>>
struct ModelParameterTupleImpl;
template <class Net, std::size_t... I>
struct ModelParameterTupleImpl<Net, std::index_sequence<I...>> {
  using type = std::tuple<ModelLayerParameters<Net, I>...>;
};

/// A copy of every layer's parameter object; loaders fill it, then commit it at once.
template <class Net>
using ModelParameterTuple = typename ModelParameterTupleImpl<Net>::type;

/// Moves fully validated parameters into `net`. Same-shaped Eigen matrices are
/// moved (pointer swap) or copied (fixed size) without allocating, so this cannot
/// throw in practice: the loaders' strong guarantee rests on it.
template <class Net>
void model_commit_parameters(Net& net, ModelParameterTuple<Net>&& params) noexcept {
  for_each_index<Net::num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    net.template layer<I>() = std::move(std::get<I>(params));
  });
}

/// The name of layer I's record (`Dense`: its activation's name).
template <class Net, std::size_t I>
inline constexpr std::string_view model_layer_name = ModelLayerParameters<Net, I>::model_name;

template <class Net, std::size_t I>
inline constexpr int model_layer_inputs = Net::template LayerDescriptor<I>::inputs;

template <class Net, std::size_t I>
inline constexpr int model_layer_outputs = Net::template LayerDescriptor<I>::outputs;

/// The shapes of layer I's parameters (`Dense`: Out x In weights, Out biases).
template <class Net, std::size_t I>
inline constexpr int model_weight_rows = ModelLayerParameters<Net, I>::weight_rows;
template <class Net, std::size_t I>
inline constexpr int model_weight_cols = ModelLayerParameters<Net, I>::weight_cols;
template <class Net, std::size_t I>
inline constexpr int model_bias_rows = ModelLayerParameters<Net, I>::bias_rows;

/// The number of non-trained values a layer keeps in the model files after its biases
/// (`state()`, e.g. BatchNorm's running statistics; 0 for layers without).
template <class L>
constexpr int layer_state_rows() {
  if constexpr (requires { L::state_rows; }) {
    return L::state_rows;
  } else {
    return 0;
  }
}
template <class Net, std::size_t I>
inline constexpr int model_state_rows = layer_state_rows<ModelLayerParameters<Net, I>>();

/// A copy of `net`'s parameters, shaped as its layers declare (in case a user resized a
/// matrix), for a loader to overwrite completely.
template <class Net>
[[nodiscard]] ModelParameterTuple<Net> model_copy_parameters(const Net& net) {
  auto params = [&]<std::size_t... I>(std::index_sequence<I...>) {
    return ModelParameterTuple<Net>(net.template layer<I>()...);
  }
  (std::make_index_sequence<Net::num_layers>{});
  for_each_index<Net::num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    std::get<I>(params).weights().resize(model_weight_rows<Net, I>, model_weight_cols<Net, I>);
    std::get<I>(params).biases().resize(model_bias_rows<Net, I>, 1);
  });
  return params;
}

/// Shortest round-trip text of a double (for messages).
[[nodiscard]] inline std::string model_number_text(double v) {
  std::array<char, 40> buf{};
  const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  return std::string(buf.data(), r.ptr);
}

/// A name from a file, quoted for a message: printable ASCII kept, others as `\xNN`.
[[nodiscard]] inline std::string model_quote(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out = "'";
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (u >= 0x20 && u < 0x7F && ch != '\\' && ch != '\'') {
      out += ch;
    } else {
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 0xFU];
    }
  }
  return out + "'";
}

/// True if `v` is finite and within the range of `Scalar`.
template <class Scalar>
[[nodiscard]] bool model_representable(double v) noexcept {
  if constexpr (std::is_same_v<Scalar, float>) {
    return std::fabs(v) <= static_cast<double>(std::numeric_limits<float>::max());  // NaN: false
  } else {
    return std::isfinite(v);
  }
}

/// Why `v` cannot become a parameter of type `Scalar` (empty if it can).
template <class Scalar>
[[nodiscard]] std::string model_value_problem(double v) {
  if (std::isnan(v)) return "is NaN";
  if (std::isinf(v)) return v > 0 ? "is +infinity" : "is -infinity";
  if constexpr (std::is_same_v<Scalar, float>) {
    if (std::fabs(v) > static_cast<double>(std::numeric_limits<float>::max())) {
      return "is " + model_number_text(v) + ", outside the range of float";
    }
  }
  return {};
}

/// "layer 1 weight (2, 3)" / "layer 1 bias 2" for messages.
[[nodiscard]] inline std::string model_parameter_name(std::size_t layer, bool is_weight,
                                                      long long row, long long col) {
  std::string s = "layer " + std::to_string(layer);
  if (is_weight) return s + " weight (" + std::to_string(row) + ", " + std::to_string(col) + ")";
  return s + " bias " + std::to_string(row);
}

/// The first non-finite parameter of `net` as "layer 0 weight (1, 2) is NaN", or empty.
template <class Net>
[[nodiscard]] std::string model_first_nonfinite(const Net& net) {
  std::string problem;
  for_each_index<Net::num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    if (!problem.empty()) return;
    const auto& p = net.template layer<I>();
    for (Eigen::Index r = 0; r < p.weights().rows() && problem.empty(); ++r) {
      for (Eigen::Index c = 0; c < p.weights().cols(); ++c) {
        const double v = static_cast<double>(p.weights()(r, c));
        if (!std::isfinite(v)) {
          problem = model_parameter_name(I, true, r, c) + " " + model_value_problem<double>(v);
          break;
        }
      }
    }
    for (Eigen::Index r = 0; r < p.biases().rows() && problem.empty(); ++r) {
      const double v = static_cast<double>(p.biases()(r));
      if (!std::isfinite(v)) {
        problem = model_parameter_name(I, false, r, 0) + " " + model_value_problem<double>(v);
      }
    }
    if constexpr (model_state_rows < Net, I >> 0) {
      for (Eigen::Index r = 0; r < p.state().rows() && problem.empty(); ++r) {
        const double v = static_cast<double>(p.state()(r));
        if (!std::isfinite(v)) {
          problem = "layer " + std::to_string(I) + " state " + std::to_string(r) + " " +
                    model_value_problem<double>(v);
        }
      }
    }
  });
  return problem;
}

/// Throws ShapeError if a parameter matrix of `net` no longer has its layer's shape (a
/// user resized it), and ValueError if a parameter is not finite (such a model could
/// not be loaded back). \param net the network to check \param fn the caller's name for
/// the message.
template <class Net>
void model_check_for_save(const Net& net, const char* fn) {
  for_each_index<Net::num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    const auto& p = net.template layer<I>();
    const auto shape = [](long long r, long long c) {
      return std::to_string(r) + " x " + std::to_string(c);
    };
    const std::string expected = shape(model_weight_rows<Net, I>, model_weight_cols<Net, I>);
    if (p.weights().rows() != model_weight_rows<Net, I> ||
        p.weights().cols() != model_weight_cols<Net, I>) {
      throw ShapeError(std::string(fn) + ": the weights of layer " + std::to_string(I) + " are " +
                       shape(p.weights().rows(), p.weights().cols()) + ", the layer is " +
                       expected);
    }
    if (p.biases().rows() != model_bias_rows<Net, I> || p.biases().cols() != 1) {
      throw ShapeError(std::string(fn) + ": the biases of layer " + std::to_string(I) + " are " +
                       shape(p.biases().rows(), p.biases().cols()) + ", the layer has " +
                       std::to_string(model_bias_rows<Net, I>) + " biases");
    }
  });
  const std::string problem = model_first_nonfinite(net);
  if (!problem.empty()) {
    throw ValueError(std::string(fn) + ": " + problem +
                     "; a network with non-finite parameters cannot be saved");
  }
}

/// Buffers bytes, keeps their CRC-32 and writes them to a stream.
class ModelByteWriter {
 public:
  explicit ModelByteWriter(std::ostream& os) : m_os(os), m_buf(1U << 16) {}

  void byte(unsigned char b) { little_endian(b, 1); }
  void u32(std::uint32_t v) { little_endian(v, 4); }
  template <class Scalar>
  void scalar(Scalar v) {
    if constexpr (sizeof(Scalar) == 4) {
      little_endian(std::bit_cast<std::uint32_t>(v), 4);
    } else {
      little_endian(std::bit_cast<std::uint64_t>(v), 8);
    }
  }
  void text(std::string_view s) {
    for (const char ch : s) byte(static_cast<unsigned char>(ch));
  }
  /// Writes the CRC-32 of everything so far (not itself checksummed) and flushes.
  void finish_with_crc() {
    flush();
    const std::uint32_t crc = m_crc;
    u32(crc);
    flush();
    m_os.flush();
  }

 private:
  /// Appends the low `bytes` bytes of `v`, least significant first.
  void little_endian(std::uint64_t v, std::size_t bytes) {
    if (m_buf.size() - m_used < bytes) flush();
    for (std::size_t k = 0; k < bytes; ++k)
      m_buf[m_used + k] = static_cast<unsigned char>(v >> (8 * k));
    m_used += bytes;
  }

  void flush() {
    m_crc = crc32(m_buf.data(), m_used, m_crc);
    m_os.write(reinterpret_cast<const char*>(m_buf.data()), static_cast<std::streamsize>(m_used));
    m_used = 0;
  }

  std::ostream& m_os;
  std::vector<unsigned char> m_buf;
  std::size_t m_used = 0;
  std::uint32_t m_crc = 0;
};

/// Reads exact byte counts from a stream, keeping the offset and the CRC-32.
class ModelByteReader {
 public:
  explicit ModelByteReader(std::istream& is) : m_is(is) {}

  /// Reads `n` bytes into `dst` or throws a truncation error naming `what`.
  void read(unsigned char* dst, std::size_t n, const std::string& what) {
    std::size_t got = 0;
    if (n > 0) {
      try {
        m_is.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(n));
      } catch (const std::ios_base::failure&) {
        // The stream has exceptions enabled; the short count below reports the problem.
      }
      got = static_cast<std::size_t>(m_is.gcount());
    }
    m_crc = crc32(dst, got, m_crc);
    m_offset += got;
    if (got != n) truncated(what, n - got);
  }
  std::uint32_t u32(const std::string& what) {
    std::array<unsigned char, 4> b{};
    read(b.data(), b.size(), what);
    return static_cast<std::uint32_t>(b[0]) | (static_cast<std::uint32_t>(b[1]) << 8) |
           (static_cast<std::uint32_t>(b[2]) << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
  }
  [[nodiscard]] std::uint64_t offset() const noexcept { return m_offset; }
  [[nodiscard]] std::uint32_t crc() const noexcept { return m_crc; }
  void set_expected_size(std::uint64_t n) noexcept { m_expected_size = n; }

 private:
  [[noreturn]] void truncated(const std::string& what, std::size_t missing) const {
    std::string msg = "load: truncated file: it ends after " + std::to_string(m_offset) +
                      " bytes, while reading " + what;
    if (m_expected_size > m_offset) {
      msg += "; a complete file has " + std::to_string(m_expected_size) + " bytes (" +
             std::to_string(m_expected_size - m_offset) + " missing)";
    } else {
      msg += " (" + std::to_string(missing) + " more bytes needed)";
    }
    throw ModelFormatError(msg);
  }

  std::istream& m_is;
  std::uint64_t m_offset = 0;
  std::uint64_t m_expected_size = 0;
  std::uint32_t m_crc = 0;
};

[[nodiscard]] inline std::uint32_t model_le32(const unsigned char* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

[[nodiscard]] inline std::uint64_t model_le64(const unsigned char* p) noexcept {
  return static_cast<std::uint64_t>(model_le32(p)) |
         (static_cast<std::uint64_t>(model_le32(p + 4)) << 32);
}

/// True if `is` has at least one more byte (also if it throws on reaching the end).
[[nodiscard]] inline bool model_has_more(std::istream& is) {
  try {
    return is.peek() != std::istream::traits_type::eof();
  } catch (const std::ios_base::failure&) {
    return false;
  }
}

/// Reads `count` scalars of `file_size` bytes and hands each, as a double, to
/// `store(k, value)`; buffered so that large layers are read in big chunks.
template <class Store>
void model_read_scalars(ModelByteReader& reader, std::uint64_t count, std::uint32_t file_size,
                        const std::string& what, Store&& store) {
  constexpr std::uint64_t chunk = 8192;
  std::vector<unsigned char> buf(static_cast<std::size_t>(std::min(count, chunk) * file_size));
  for (std::uint64_t first = 0; first < count; first += chunk) {
    const std::uint64_t n = std::min(chunk, count - first);
    reader.read(buf.data(), static_cast<std::size_t>(n * file_size), what);
    for (std::uint64_t k = 0; k < n; ++k) {
      const unsigned char* p = buf.data() + k * file_size;
      const double v = file_size == 4 ? static_cast<double>(std::bit_cast<float>(model_le32(p)))
                                      : std::bit_cast<double>(model_le64(p));
      store(first + k, v);
    }
  }
}

/// \brief Writes `net` in the binary model format (see the top of this file).
/// \param net any backprop network (`BasicNetwork`)
/// \param os the destination; open it in binary mode
/// \throws ValueError if a parameter is not finite, ShapeError if a parameter matrix was
///         resized (nothing is written then); std::runtime_error if the stream fails
template <class Net>
void save_binary(const Net& net, std::ostream& os) {
  using Scalar = typename Net::Scalar;
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "backprop model files store float or double parameters");
  model_check_for_save(net, "save");
  if (!os) throw std::runtime_error("save: the output stream is not in a good state");
  ModelByteWriter w(os);
  for (const unsigned char b : model_magic) w.byte(b);
  w.u32(model_format_version);
  w.u32(std::is_same_v<Scalar, float> ? 1U : 2U);
  w.u32(static_cast<std::uint32_t>(sizeof(Scalar)));
  w.u32(static_cast<std::uint32_t>(Net::num_layers));
  for_each_index<Net::num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    const std::string_view name = model_layer_name<Net, I>;
    if (name.empty() || name.size() > model_max_name_length) {
      throw std::runtime_error("save: the activation name of layer " + std::to_string(I) + " has " +
                               std::to_string(name.size()) +
                               " bytes; the model format allows 1 to 255");
    }
    w.u32(static_cast<std::uint32_t>(model_layer_inputs<Net, I>));
    w.u32(static_cast<std::uint32_t>(model_layer_outputs<Net, I>));
    w.u32(static_cast<std::uint32_t>(name.size()));
    w.text(name);
  });
  for_each_index<Net::num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    const auto& p = net.template layer<I>();
    for (Eigen::Index r = 0; r < p.weights().rows(); ++r) {
      for (Eigen::Index c = 0; c < p.weights().cols(); ++c) w.scalar<Scalar>(p.weights()(r, c));
    }
    for (Eigen::Index r = 0; r < p.biases().rows(); ++r) w.scalar<Scalar>(p.biases()(r));
    if constexpr (model_state_rows < Net, I >> 0) {
      for (Eigen::Index r = 0; r < p.state().rows(); ++r) w.scalar<Scalar>(p.state()(r));
    }
  });
  w.finish_with_crc();
  if (!os) throw std::runtime_error("save: writing the model to the stream failed");
}

/// \brief Reads a model written by `save_binary` into `net`, checking it against
/// `net`'s architecture. Strong guarantee: on any error `net` is unchanged.
/// \param net the network to overwrite; its layer shapes and activations must match
/// \param is the source, positioned at the model; open it in binary mode. The model
///        must extend to the end of the stream.
/// \throws ModelFormatError naming what differs or is damaged (see the top of the file)
template <class Net>
void load_binary(Net& net, std::istream& is) {
  using Scalar = typename Net::Scalar;
  constexpr std::size_t num_layers = Net::num_layers;
  if (!is) throw ModelFormatError("load: the input stream is not in a good state");
  ModelByteReader reader(is);

  std::array<unsigned char, 4> magic{};
  reader.read(magic.data(), magic.size(), "the magic number");
  if (magic != model_magic) {
    std::string got;
    for (const unsigned char b : magic) {
      got += std::string(got.empty() ? "" : " ") + "0123456789ABCDEF"[b >> 4] +
             "0123456789ABCDEF"[b & 0xFU];
    }
    throw ModelFormatError("load: not a backprop model: the file starts with bytes " + got +
                           ", expected \"BPNN\" (42 50 4E 4E)" +
                           (magic[0] == '{' ? "; it looks like JSON, see load_json" : ""));
  }
  const std::uint32_t version = reader.u32("the format version");
  if (version != model_format_version) {
    throw ModelFormatError("load: unsupported format version " + std::to_string(version) +
                           " (this library reads version " + std::to_string(model_format_version) +
                           ")");
  }
  const std::uint32_t code = reader.u32("the scalar type code");
  const std::uint32_t file_size = reader.u32("the scalar size");
  if (!((code == 1 && file_size == 4) || (code == 2 && file_size == 8))) {
    throw ModelFormatError("load: unknown scalar type: code " + std::to_string(code) +
                           " with size " + std::to_string(file_size) +
                           " (expected code 1 size 4 for float, or code 2 size 8 for double)");
  }
  const std::uint32_t file_layers = reader.u32("the number of layers");
  if (file_layers != num_layers) {
    throw ModelFormatError("load: file has " + std::to_string(file_layers) +
                           (file_layers == 1 ? " layer" : " layers") + ", this network has " +
                           std::to_string(num_layers));
  }
  for_each_index<num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    const std::string where = " of layer " + std::to_string(I);
    const std::uint32_t in = reader.u32("the inputs" + where);
    if (in != static_cast<std::uint32_t>(model_layer_inputs<Net, I>)) {
      throw ModelFormatError("load: file has layer " + std::to_string(I) + " with " +
                             std::to_string(in) + " inputs, this network expects " +
                             std::to_string(model_layer_inputs<Net, I>));
    }
    const std::uint32_t out = reader.u32("the outputs" + where);
    if (out != static_cast<std::uint32_t>(model_layer_outputs<Net, I>)) {
      throw ModelFormatError("load: file has layer " + std::to_string(I) + " with " +
                             std::to_string(out) + " outputs, this network expects " +
                             std::to_string(model_layer_outputs<Net, I>));
    }
    const std::uint32_t length = reader.u32("the activation name length" + where);
    if (length == 0 || length > model_max_name_length) {
      throw ModelFormatError("load: the activation name" + where + " has " +
                             std::to_string(length) + " bytes in the file (must be 1 to 255)");
    }
    std::array<unsigned char, model_max_name_length> name_bytes{};
    reader.read(name_bytes.data(), length, "the activation name" + where);
    const std::string name(name_bytes.begin(), name_bytes.begin() + length);
    const std::string_view expected = model_layer_name<Net, I>;
    if (name != expected) {
      throw ModelFormatError("load: activation of layer " + std::to_string(I) + " is " +
                             model_quote(name) + " in the file, " + model_quote(expected) +
                             " in this network");
    }
  });

  std::uint64_t expected_size = reader.offset() + 4;
  for_each_index<num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    constexpr auto in = static_cast<std::uint64_t>(model_weight_cols<Net, I>);
    constexpr auto out = static_cast<std::uint64_t>(model_weight_rows<Net, I>);
    constexpr auto nb = static_cast<std::uint64_t>(model_bias_rows<Net, I>);
    constexpr auto ns = static_cast<std::uint64_t>(model_state_rows<Net, I>);
    expected_size += (out * in + nb + ns) * file_size;
  });
  reader.set_expected_size(expected_size);

  // Parse into copies; `net` is touched only after everything has been validated.
  ModelParameterTuple<Net> params = model_copy_parameters(net);
  std::string bad_value;
  for_each_index<num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    constexpr auto in = static_cast<std::uint64_t>(model_weight_cols<Net, I>);
    constexpr auto out = static_cast<std::uint64_t>(model_weight_rows<Net, I>);
    constexpr auto nb = static_cast<std::uint64_t>(model_bias_rows<Net, I>);
    auto& p = std::get<I>(params);
    const auto check = [&](double v, bool is_weight, std::uint64_t r, std::uint64_t c) {
      if (model_representable<Scalar>(v)) return static_cast<Scalar>(v);
      if (bad_value.empty()) {
        bad_value = model_parameter_name(I, is_weight, static_cast<long long>(r),
                                         static_cast<long long>(c)) +
                    " " + model_value_problem<Scalar>(v);
      }
      return Scalar(0);
    };
    std::uint64_t r = 0, c = 0;  // row-major position of the next weight
    model_read_scalars(reader, out * in, file_size, "the weights of layer " + std::to_string(I),
                       [&](std::uint64_t, double v) {
                         p.weights()(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) =
                             check(v, true, r, c);
                         if (++c == in) c = 0, ++r;
                       });
    model_read_scalars(reader, nb, file_size, "the biases of layer " + std::to_string(I),
                       [&](std::uint64_t k, double v) {
                         p.biases()(static_cast<Eigen::Index>(k)) = check(v, false, k, 0);
                       });
    if constexpr (model_state_rows < Net, I >> 0) {
      model_read_scalars(reader, model_state_rows<Net, I>, file_size,
                         "the state (running statistics) of layer " + std::to_string(I),
                         [&](std::uint64_t k, double v) {
                           if (model_representable<Scalar>(v)) {
                             p.state()(static_cast<Eigen::Index>(k)) = static_cast<Scalar>(v);
                           } else if (bad_value.empty()) {
                             bad_value = "layer " + std::to_string(I) + " state " +
                                         std::to_string(k) + " " + model_value_problem<Scalar>(v);
                           }
                         });
    }
  });

  const std::uint32_t computed = reader.crc();
  const std::uint32_t stored = reader.u32("the checksum");
  if (stored != computed) {
    const auto hex = [](std::uint32_t v) {
      std::array<char, 16> buf{};
      const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v, 16);
      return "0x" + std::string(buf.data(), r.ptr);
    };
    throw ModelFormatError("load: checksum mismatch: the file says " + hex(stored) +
                           ", its contents give " + hex(computed) + "; the file is corrupted");
  }
  if (model_has_more(is)) {
    std::streamsize extra = 0;
    try {
      is.ignore(std::numeric_limits<std::streamsize>::max());
      extra = is.gcount();
    } catch (const std::ios_base::failure&) {
      extra = is.gcount();
    }
    throw ModelFormatError("load: " + std::to_string(extra) +
                           " unexpected bytes after the model's checksum (the model ends at "
                           "byte " +
                           std::to_string(reader.offset()) + ")");
  }
  if (!bad_value.empty()) {
    throw ModelFormatError("load: " + bad_value + "; non-finite parameters are rejected");
  }
  model_commit_parameters(net, std::move(params));
}

/// Turns "load: problem" into "load: 'path': problem" (or prefixes the path).
[[nodiscard]] inline std::string model_with_path(const std::filesystem::path& path,
                                                 std::string_view message) {
  const std::string quoted = "'" + path.string() + "'";
  const auto colon = message.find(": ");
  if (colon != std::string_view::npos && colon > 0 &&
      message.substr(0, colon).find(' ') == std::string_view::npos) {
    return std::string(message.substr(0, colon + 2)) + quoted + ": " +
           std::string(message.substr(colon + 2));
  }
  return quoted + ": " + std::string(message);
}

[[nodiscard]] inline std::string model_errno_text(int error) {
  return std::generic_category().message(error);
}

/// Process-wide counter making temporary names unique between threads.
inline std::atomic<unsigned long long> model_temp_counter{0};

#if BACKPROP_DETAIL_MODEL_POSIX
/// An output stream buffer over a POSIX file descriptor (which it does not own).
class ModelFdOutBuf : public std::streambuf {
 public:
  explicit ModelFdOutBuf(int fd) : m_fd(fd), m_buf(1U << 16) {
    setp(m_buf.data(), m_buf.data() + m_buf.size());
  }
  /// errno of the first failed write, 0 if none.
  [[nodiscard]] int error() const noexcept { return m_error; }

 protected:
  int_type overflow(int_type ch) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }
  int sync() override { return drain() ? 0 : -1; }

 private:
  bool drain() {
    const char* p = pbase();
    auto left = static_cast<std::size_t>(pptr() - pbase());
    while (left > 0 && m_error == 0) {
      const ::ssize_t n = ::write(m_fd, p, left);
      if (n < 0) {
        if (errno != EINTR) m_error = errno;
        continue;
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    setp(m_buf.data(), m_buf.data() + m_buf.size());
    return m_error == 0;
  }

  int m_fd;
  std::vector<char> m_buf;
  int m_error = 0;
};
#endif

/// \brief Writes a file atomically: `writer(std::ostream&)` writes into a new
/// temporary file in the same directory (`path` + ".tmp-<pid>-<n>"), which is flushed,
/// fsync'ed and then renamed over `path`. Readers of `path` see the old file or the
/// complete new one, also if the process is killed or the machine loses power (on
/// POSIX; elsewhere std::ofstream and std::filesystem::rename are used, without fsync).
/// \param path the file to create or replace
/// \param writer called once with the stream to write to
/// \throws std::runtime_error naming `path` if the temporary file cannot be created,
///         written, synced or renamed (also when `writer` throws a std::runtime_error);
///         other exceptions from `writer` propagate unchanged. In every case the
///         temporary file is removed and an existing file at `path` is untouched.
template <class Writer>
void save_to_path(const std::filesystem::path& path, Writer&& writer) {
  if (path.empty()) throw std::runtime_error("save: the path is empty");
  const auto fail = [&](std::string_view what) -> std::runtime_error {
    if (what.starts_with("save: ")) what.remove_prefix(6);
    return std::runtime_error("save: cannot write '" + path.string() + "': " + std::string(what));
  };
  std::filesystem::path temp = path;
  temp += ".tmp-";
#if BACKPROP_DETAIL_MODEL_POSIX
  temp += std::to_string(static_cast<long long>(::getpid()));
#else
  // No pid without POSIX: the clock keeps names of concurrent processes apart.
  temp += std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
  temp += "-" + std::to_string(model_temp_counter.fetch_add(1));

#if BACKPROP_DETAIL_MODEL_POSIX
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) {
    throw fail("cannot create the temporary file '" + temp.string() +
               "': " + model_errno_text(errno));
  }
  try {
    {
      ModelFdOutBuf buf(fd);
      std::ostream os(&buf);
      try {
        writer(static_cast<std::ostream&>(os));
      } catch (const std::runtime_error& e) {
        throw fail(e.what());
      }
      os.flush();
      if (buf.error() != 0) throw fail(model_errno_text(buf.error()));
      if (!os) throw fail("the output stream failed");
    }
    if (::fsync(fd) != 0) throw fail("fsync failed: " + model_errno_text(errno));
    const int closing = fd;
    fd = -1;
    if (::close(closing) != 0) throw fail("close failed: " + model_errno_text(errno));
    if (::rename(temp.c_str(), path.c_str()) != 0) {
      throw fail("cannot rename the temporary file over it: " + model_errno_text(errno));
    }
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
  // Make the rename itself durable; failing here loses nothing, so errors are ignored.
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    ::close(dir_fd);
  }
#else
  try {
    {
      std::ofstream os(temp, std::ios::binary | std::ios::trunc);
      if (!os) throw fail("cannot create the temporary file '" + temp.string() + "'");
      try {
        writer(static_cast<std::ostream&>(os));
      } catch (const std::runtime_error& e) {
        throw fail(e.what());
      }
      os.flush();
      os.close();
      if (!os) throw fail("writing the temporary file '" + temp.string() + "' failed");
    }
    std::error_code ec;
    std::filesystem::rename(temp, path, ec);
    if (ec) throw fail("cannot rename the temporary file over it: " + ec.message());
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw;
  }
#endif
}

/// \brief Opens `path` for binary reading and calls `reader(std::istream&)`.
/// \returns what `reader` returns
/// \throws ModelFormatError naming `path` if it cannot be opened; a ModelFormatError
///         from `reader` is re-thrown with `path` inserted into its message. Other
///         exceptions propagate unchanged.
template <class Reader>
decltype(auto) load_from_path(const std::filesystem::path& path, Reader&& reader) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw ModelFormatError("load: '" + path.string() + "' is a directory, not a model file");
  }
  errno = 0;
  std::ifstream is(path, std::ios::binary);
  if (!is) {
    const int error = errno;
    throw ModelFormatError("load: cannot open '" + path.string() + "'" +
                           (error != 0 ? ": " + model_errno_text(error) : std::string()));
  }
  try {
    return reader(static_cast<std::istream&>(is));
  } catch (const ModelFormatError& e) {
    throw ModelFormatError(model_with_path(path, e.what()));
  }
}

}  // namespace backprop::detail

#undef BACKPROP_DETAIL_MODEL_POSIX
