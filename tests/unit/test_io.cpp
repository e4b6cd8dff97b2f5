// Tests of the data loaders: gzip/DEFLATE, IDX, MNIST and CSV.
//
// Every test writes its own small synthetic files into a fresh temporary directory; the
// real gzip tool is used only when present.

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <backprop/data/scaling.hpp>
#include <backprop/data/split.hpp>
#include <backprop/detail/inflate.hpp>
#include <backprop/io/io.hpp>
#include <backprop/metrics/metrics.hpp>
#include <catch2/catch.hpp>
#include <set>
#include <sstream>

namespace bp = backprop;
namespace fs = std::filesystem;
using Bytes = std::vector<unsigned char>;

namespace {

/// A fresh directory under the system temp dir, removed with its contents at scope exit.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    for (int attempt = 0; attempt < 100; ++attempt) {
      const fs::path p = fs::temp_directory_path() / ("backprop_test_io_" + std::to_string(rd()) +
                                                      "_" + std::to_string(attempt));
      if (fs::create_directory(p)) {
        m_path = p;
        return;
      }
    }
    throw std::runtime_error("TempDir: cannot create a unique directory");
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(m_path, ec);
  }
  [[nodiscard]] const fs::path& path() const { return m_path; }
  [[nodiscard]] fs::path operator/(const std::string& name) const { return m_path / name; }

 private:
  fs::path m_path;
};

void write_file(const fs::path& p, const Bytes& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!out) throw std::runtime_error("cannot write " + p.string());
}

void write_text(const fs::path& p, const std::string& s) {
  write_file(p, Bytes(s.begin(), s.end()));
}

Bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put_be32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
}

void put_le32(Bytes& b, std::uint32_t v) {
  for (int s = 0; s < 32; s += 8) b.push_back(static_cast<unsigned char>(v >> s));
}

/// An IDX file: magic 00 00 type rank, big-endian dims, then `payload` as given.
Bytes make_idx(unsigned type, const std::vector<std::uint32_t>& dims, const Bytes& payload) {
  Bytes b = {0, 0, static_cast<unsigned char>(type), static_cast<unsigned char>(dims.size())};
  for (const auto d : dims) put_be32(b, d);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

/// A ubyte IDX file whose elements are a simple pattern.
Bytes make_ubyte_idx(const std::vector<std::uint32_t>& dims, unsigned salt = 0) {
  std::size_t n = 1;
  for (const auto d : dims) n *= d;
  Bytes payload(n);
  for (std::size_t k = 0; k < n; ++k) payload[k] = static_cast<unsigned char>((k * 7 + salt) % 256);
  return make_idx(0x08, dims, payload);
}

/// Test-only gzip writer using stored (uncompressed) DEFLATE blocks of up to `block` bytes.
Bytes gzip_stored(const Bytes& data, std::size_t block = 65535, bool with_name = false) {
  Bytes g = {0x1f, 0x8b, 8, static_cast<unsigned char>(with_name ? 0x08 : 0), 0, 0, 0, 0, 0, 0xff};
  if (with_name) {
    for (const char c : std::string("data.idx")) g.push_back(static_cast<unsigned char>(c));
    g.push_back(0);
  }
  std::size_t pos = 0;
  do {
    const std::size_t len = std::min(block, data.size() - pos);
    const bool last = pos + len == data.size();
    g.push_back(last ? 1 : 0);
    g.push_back(static_cast<unsigned char>(len & 0xff));
    g.push_back(static_cast<unsigned char>(len >> 8));
    g.push_back(static_cast<unsigned char>(~len & 0xff));
    g.push_back(static_cast<unsigned char>((~len >> 8) & 0xff));
    g.insert(g.end(), data.begin() + static_cast<std::ptrdiff_t>(pos),
             data.begin() + static_cast<std::ptrdiff_t>(pos + len));
    pos += len;
  } while (pos < data.size());
  put_le32(g, bp::detail::crc32(data.data(), data.size()));
  put_le32(g, static_cast<std::uint32_t>(data.size()));
  return g;
}

bool have_gzip() { return fs::exists("/bin/gzip") || fs::exists("/usr/bin/gzip"); }

/// Compresses with the system gzip (call only if have_gzip()).
Bytes system_gzip(const Bytes& data, const std::string& flags) {
  TempDir dir;
  write_file(dir / "in", data);
  const std::string cmd =
      "gzip -c " + flags + " '" + (dir / "in").string() + "' > '" + (dir / "out.gz").string() + "'";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
  return read_file(dir / "out.gz");
}

Bytes gunzip(const Bytes& g, std::size_t limit = std::size_t{1} << 30) {
  return bp::detail::gunzip(g.data(), g.size(), limit);
}

/// The message of the DataError `f` throws (fails the test if it throws nothing).
template <class F>
std::string data_error(F&& f) {
  try {
    f();
  } catch (const bp::DataError& e) {
    return e.what();
  }
  FAIL("expected a backprop::DataError");
  return {};
}

/// Deterministic pseudo-random bytes.
Bytes random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& c : b) c = static_cast<unsigned char>(rng() >> 24);
  return b;
}

/// A 10x8x8 ubyte IDX file and its compression by `gzip -9 -n` (one dynamic-Huffman block),
/// so the Huffman decoder is exercised even where no gzip tool exists.
Bytes dynamic_idx() {
  Bytes payload;
  std::uint64_t x = 12345;
  for (int k = 0; k < 10 * 8 * 8; ++k) {
    x = (x * 1103515245ULL + 12345ULL) & 0x7fffffffULL;
    payload.push_back(k % 5 != 0 ? static_cast<unsigned char>(((x >> 16) % 12) * 20) : 0);
  }
  return make_idx(0x08, {10, 8, 8}, payload);
}

const Bytes dynamic_idx_gz = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x25, 0x92, 0x5d, 0xad, 0x24, 0x41,
    0x08, 0x85, 0x4f, 0xb2, 0x2f, 0x37, 0xfb, 0x8c, 0x88, 0x12, 0x51, 0x22, 0x10, 0x81, 0x08, 0x44,
    0x20, 0xa2, 0x44, 0x20, 0x02, 0x11, 0x88, 0xd9, 0xaf, 0xef, 0x66, 0xd2, 0x33, 0xdd, 0x74, 0x71,
    0x7e, 0x47, 0xfa, 0xf9, 0x23, 0xe9, 0x2f, 0xd7, 0xcf, 0xef, 0xe5, 0x96, 0x25, 0x3b, 0xd3, 0xaa,
    0x73, 0xaf, 0xec, 0xb5, 0x64, 0xfb, 0x42, 0xee, 0x3d, 0x4a, 0xdf, 0xd4, 0xad, 0x29, 0x75, 0x1f,
    0x8e, 0xb8, 0x05, 0x77, 0xb6, 0x9a, 0x39, 0xac, 0xb5, 0x95, 0x7c, 0xcc, 0xb5, 0x99, 0x03, 0x00,
    0xbb, 0x61, 0x13, 0x7a, 0x67, 0x9f, 0x74, 0xf3, 0xc8, 0x5f, 0x1f, 0xe0, 0xf3, 0xf1, 0xe4, 0xa9,
    0x68, 0x38, 0x22, 0xe7, 0x00, 0xb0, 0x12, 0x20, 0xa3, 0xf3, 0x9e, 0x81, 0xbc, 0x47, 0xe7, 0xe8,
    0x69, 0xfd, 0xa6, 0x94, 0x7d, 0xd5, 0xfe, 0xae, 0x4e, 0x25, 0x94, 0x66, 0x23, 0x2b, 0x90, 0x33,
    0xe1, 0xf0, 0x6d, 0x28, 0x4f, 0x04, 0xbb, 0xe1, 0xb0, 0x19, 0x9a, 0xaf, 0x01, 0x70, 0xbb, 0x80,
    0x67, 0x6d, 0xea, 0x25, 0x60, 0x93, 0xda, 0xa9, 0xd6, 0xd6, 0x7f, 0x1f, 0xac, 0x05, 0x7e, 0xb7,
    0x85, 0x8c, 0xd9, 0x02, 0xde, 0x5b, 0xf9, 0x89, 0x8c, 0x27, 0xd3, 0x2e, 0x3f, 0xb8, 0x2d, 0xb2,
    0x09, 0x88, 0x9c, 0xef, 0x9e, 0x47, 0x10, 0xc9, 0x2c, 0xf3, 0x63, 0xaa, 0xb8, 0x7a, 0x0f, 0x22,
    0x40, 0xf0, 0xb1, 0x00, 0x74, 0x04, 0xf0, 0xdf, 0xa1, 0x8c, 0x79, 0x72, 0x69, 0xf9, 0x78, 0x60,
    0xd0, 0x4c, 0x47, 0x98, 0x21, 0x2d, 0x2c, 0xa4, 0x7f, 0x16, 0xc9, 0x00, 0x44, 0x9c, 0xd7, 0x17,
    0xc2, 0xf7, 0x2e, 0x8c, 0x89, 0x4e, 0xba, 0xe6, 0x06, 0xfa, 0x1e, 0x66, 0x26, 0x0f, 0x39, 0xd7,
    0xb7, 0x5b, 0x6d, 0x2c, 0xc5, 0x17, 0x93, 0x73, 0xae, 0x29, 0xa9, 0xf3, 0x17, 0xb2, 0x0c, 0x56,
    0x37, 0xc5, 0x75, 0x54, 0xf7, 0xc5, 0x82, 0x11, 0x49, 0x3c, 0x47, 0x46, 0x13, 0xdd, 0xb1, 0x58,
    0xd5, 0xcc, 0x7c, 0xd5, 0xd2, 0x96, 0x33, 0xd3, 0xdd, 0xd5, 0x99, 0x2f, 0x83, 0x1d, 0xb4, 0x5c,
    0x22, 0xe9, 0x03, 0xe5, 0x6d, 0x02, 0x6b, 0x9d, 0xa0, 0x05, 0xfa, 0x68, 0xff, 0xb2, 0x7a, 0x44,
    0x52, 0xfb, 0x10, 0x5e, 0x87, 0x62, 0x1e, 0x0d, 0x44, 0x5e, 0xe0, 0x83, 0xf2, 0x8c, 0x5a, 0xbe,
    0x17, 0xc8, 0x58, 0xe0, 0x77, 0x91, 0xb1, 0x43, 0x33, 0x66, 0xf5, 0xf9, 0x66, 0x36, 0x8f, 0x3c,
    0x46, 0xcc, 0x0a, 0x18, 0xda, 0x2a, 0x12, 0x58, 0xfe, 0x02, 0xeb, 0xaa, 0x7f, 0xe8, 0x04, 0x97,
    0x75, 0x90, 0x02, 0x00, 0x00};

/// Writes a small MNIST-like directory: `n_train` and `n_test` images of rows x cols.
struct MnistFiles {
  std::uint32_t n_train = 12;
  std::uint32_t n_test = 5;
  std::uint32_t rows = 4;
  std::uint32_t cols = 3;

  [[nodiscard]] Bytes images(std::uint32_t n, unsigned salt) const {
    return make_ubyte_idx({n, rows, cols}, salt);
  }
  [[nodiscard]] static Bytes labels(std::uint32_t n, unsigned salt) {
    Bytes l(n);
    for (std::uint32_t i = 0; i < n; ++i) l[i] = static_cast<unsigned char>((i * 3 + salt) % 10);
    return make_idx(0x08, {n}, l);
  }
  void write(const fs::path& dir, bool gz) const {
    const auto put = [&](const std::string& name, const Bytes& b) {
      if (gz) {
        write_file(dir / (name + ".gz"), gzip_stored(b, 100));
      } else {
        write_file(dir / name, b);
      }
    };
    put("train-images-idx3-ubyte", images(n_train, 1));
    put("train-labels-idx1-ubyte", labels(n_train, 1));
    put("t10k-images-idx3-ubyte", images(n_test, 2));
    put("t10k-labels-idx1-ubyte", labels(n_test, 2));
  }
};

/// Applies 1 to 4 random corruptions: byte flips, overwrites, truncations, insertions,
/// deletions.
Bytes corrupt(Bytes b, std::mt19937& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const auto pick = [&](std::size_t n) {
      return n == 0 ? 0 : static_cast<std::size_t>(rng() % n);
    };
    const auto it = [&](std::size_t i) { return b.begin() + static_cast<std::ptrdiff_t>(i); };
    switch (rng() % 6) {
      case 0:
        if (!b.empty()) b[pick(b.size())] ^= static_cast<unsigned char>(1U << (rng() % 8));
        break;
      case 1:
        if (!b.empty()) b[pick(b.size())] = static_cast<unsigned char>(rng());
        break;
      case 2:
        b.resize(pick(b.size() + 1));
        break;
      case 3: {
        const std::size_t at = pick(b.size() + 1);
        const std::size_t len = 1 + rng() % 8;
        const Bytes extra = random_bytes(len, static_cast<std::uint32_t>(rng()));
        b.insert(it(at), extra.begin(), extra.end());
        break;
      }
      case 4: {
        const std::size_t at = pick(b.size() + 1);
        const std::size_t len = std::min<std::size_t>(1 + rng() % 8, b.size() - at);
        b.erase(it(at), it(at + len));
        break;
      }
      default:
        if (b.size() > 8) {  // a header byte: the most sensitive region
          b[pick(std::min<std::size_t>(b.size(), 40))] = static_cast<unsigned char>(rng());
        }
        break;
    }
  }
  return b;
}

}  // namespace

// gzip / DEFLATE

TEST_CASE("crc32 matches the standard check values and composes", "[io][inflate]") {
  const std::string check = "123456789";
  const auto* p = reinterpret_cast<const unsigned char*>(check.data());
  REQUIRE(bp::detail::crc32(p, check.size()) == 0xCBF43926U);
  REQUIRE(bp::detail::crc32(nullptr, 0) == 0U);
  const Bytes data = random_bytes(1000, 7);
  // Bitwise reference.
  std::uint32_t ref = 0xFFFFFFFFU;
  for (const unsigned char c : data) {
    ref ^= c;
    for (int k = 0; k < 8; ++k) ref = (ref & 1U) != 0 ? 0xEDB88320U ^ (ref >> 1) : ref >> 1;
  }
  ref = ~ref;
  REQUIRE(bp::detail::crc32(data.data(), data.size()) == ref);
  for (const std::size_t cut : {0, 1, 7, 8, 9, 500, 999, 1000}) {
    const std::uint32_t a = bp::detail::crc32(data.data(), cut);
    REQUIRE(bp::detail::crc32(data.data() + cut, data.size() - cut, a) == ref);
  }
}

TEST_CASE("gunzip decodes stored blocks of any size", "[io][inflate]") {
  for (const std::size_t n : {0, 1, 100, 65535, 65536, 200001}) {
    const Bytes data = random_bytes(n, static_cast<std::uint32_t>(n));
    CAPTURE(n);
    REQUIRE(gunzip(gzip_stored(data)) == data);
    REQUIRE(gunzip(gzip_stored(data, 1000, true)) == data);
  }
}

TEST_CASE("gunzip decodes fixed and dynamic Huffman blocks made by gzip -9", "[io][inflate]") {
  REQUIRE(dynamic_idx_gz[10] == 0x25);  // BFINAL = 1, BTYPE = 2 (dynamic)
  REQUIRE(gunzip(dynamic_idx_gz) == dynamic_idx());
}

TEST_CASE("gunzip round-trips the output of the system gzip", "[io][inflate][gzip]") {
  if (!have_gzip()) {
    WARN("no gzip tool; skipped");
    return;
  }
  std::string text;
  for (int i = 0; i < 3000; ++i)
    text += "line " + std::to_string(i % 97) + " of the backprop tests\n";
  Bytes zeros(1 << 20, 0);
  const std::vector<Bytes> inputs = {
      {},
      {'a'},
      Bytes(text.begin(), text.end()),
      random_bytes(100000, 3),  // incompressible: gzip -1 emits stored blocks
      zeros,                    // long overlapping matches
      make_ubyte_idx({30, 28, 28}),
      dynamic_idx(),
  };
  for (const std::string flags : {"-1", "-6", "-9", "-9 -n"}) {
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      CAPTURE(flags, i);
      REQUIRE(gunzip(system_gzip(inputs[i], flags)) == inputs[i]);
    }
  }
  // Concatenated members decode to the concatenation, as with gzip -d.
  Bytes two = system_gzip(inputs[2], "-9");
  const Bytes second = system_gzip(inputs[3], "-1");
  two.insert(two.end(), second.begin(), second.end());
  Bytes expected = inputs[2];
  expected.insert(expected.end(), inputs[3].begin(), inputs[3].end());
  REQUIRE(gunzip(two) == expected);
  // Every proper prefix of a valid stream is rejected.
  const Bytes g = system_gzip(Bytes(text.begin(), text.begin() + 2000), "-9");
  for (std::size_t n = 0; n < g.size(); ++n) {
    CAPTURE(n);
    REQUIRE_THROWS_AS(gunzip(Bytes(g.begin(), g.begin() + static_cast<std::ptrdiff_t>(n))),
                      bp::detail::InflateError);
  }
}

TEST_CASE("gunzip rejects malformed data with a message", "[io][inflate]") {
  using bp::detail::InflateError;
  const Bytes data = random_bytes(300, 11);
  const Bytes good = gzip_stored(data);
  const auto fails_with = [](Bytes g, const std::string& text) {
    CAPTURE(text);
    REQUIRE_THROWS_WITH(gunzip(g), Catch::Contains(text));
    REQUIRE_THROWS_AS(gunzip(g), InflateError);
  };
  fails_with({}, "truncated header");
  fails_with({0x1f, 0x8b, 8}, "truncated header");
  Bytes g = good;
  g[1] = 0x8c;
  fails_with(g, "magic");
  g = good;
  g[2] = 7;
  fails_with(g, "compression method 7");
  g = good;
  g[3] = 0x20;
  fails_with(g, "reserved");
  g = good;
  g[3] = 0x08;  // FNAME without a terminating zero anywhere after it
  fails_with(Bytes(g.begin(), g.begin() + 12), "truncated header");
  g = good;
  g[10] = 0x07;  // BFINAL = 1, BTYPE = 3
  fails_with(g, "invalid block type");
  g = good;
  g[13] ^= 0x01;  // NLEN no longer the complement of LEN
  fails_with(g, "complement");
  g = good;
  g[good.size() - 8] ^= 0x01;
  fails_with(g, "CRC-32 mismatch");
  g = good;
  g[good.size() - 4] ^= 0x01;
  fails_with(g, "length mismatch");
  g = good;
  g.push_back(0);
  fails_with(g, "trailing garbage");
  fails_with(Bytes(good.begin(), good.end() - 3), "truncated trailer");
  fails_with(Bytes(good.begin(), good.begin() + 100), "truncated");
  // A fixed-Huffman block whose first symbol is a match of distance 1: nothing to copy.
  g = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x03, 0x02, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0};
  fails_with(g, "distance 1");
}

TEST_CASE("gunzip stops at the output limit (decompression bombs)", "[io][inflate]") {
  const Bytes data(10000, 0);
  const Bytes g = gzip_stored(data);
  REQUIRE(bp::detail::gunzip(g.data(), g.size(), 10000) == data);
  REQUIRE_THROWS_WITH(bp::detail::gunzip(g.data(), g.size(), 9999),
                      Catch::Contains("exceeds the limit of 9999 bytes"));
  if (have_gzip()) {
    const Bytes bomb = system_gzip(Bytes(std::size_t{8} << 20, 0), "-9");  // 8 MiB in ~8 KiB
    REQUIRE_THROWS_AS(bp::detail::gunzip(bomb.data(), bomb.size(), 1 << 20),
                      bp::detail::InflateError);
  }
}

TEST_CASE("inflate never crashes on random or corrupted streams", "[io][inflate][fuzz]") {
  std::mt19937 rng(2024);
  Bytes out;
  int ok = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::size_t len = rng() % 200;
    const Bytes junk = random_bytes(len, static_cast<std::uint32_t>(rng()));
    out.clear();
    try {
      (void)bp::detail::inflate_raw(junk.data(), junk.size(), out, 1 << 20);
      ++ok;
    } catch (const bp::detail::InflateError&) {
    }
    REQUIRE(out.size() <= (1U << 20));
  }
  for (int i = 0; i < 3000; ++i) {
    const Bytes g = corrupt(dynamic_idx_gz, rng);
    try {
      (void)gunzip(g, 1 << 20);
      ++ok;
    } catch (const bp::detail::InflateError&) {
    }
  }
  SUCCEED("streams accepted: " << ok);
}

// IDX

TEST_CASE("load_idx reads every element type, plain and gzip", "[io][idx]") {
  TempDir dir;
  struct Case {
    unsigned type;
    std::vector<std::uint32_t> dims;
    Bytes payload;
    std::vector<double> values;
  };
  const auto f32 = [](float v) {
    Bytes b;
    put_be32(b, std::bit_cast<std::uint32_t>(v));
    return b;
  };
  Bytes floats = f32(1.5F);
  const Bytes f2 = f32(-0.25F);
  floats.insert(floats.end(), f2.begin(), f2.end());
  Bytes doubles;
  for (const double v : {3.25, -1e300}) {
    const auto u = std::bit_cast<std::uint64_t>(v);
    put_be32(doubles, static_cast<std::uint32_t>(u >> 32));
    put_be32(doubles, static_cast<std::uint32_t>(u));
  }
  const std::vector<Case> cases = {
      {0x08, {3}, {0, 128, 255}, {0, 128, 255}},
      {0x09, {2, 2}, {0x7f, 0x80, 0xff, 0x00}, {127, -128, -1, 0}},
      {0x0B, {2}, {0x12, 0x34, 0xff, 0xfe}, {0x1234, -2}},
      {0x0C, {1, 1, 2}, {0x7f, 0xff, 0xff, 0xff, 0x80, 0, 0, 0}, {2147483647.0, -2147483648.0}},
      {0x0D, {2}, floats, {1.5, -0.25}},
      {0x0E, {1, 2}, doubles, {3.25, -1e300}},
      {0x08, {2, 1, 1, 2}, {1, 2, 3, 4}, {1, 2, 3, 4}},
      {0x08, {0, 28, 28}, {}, {}},
  };
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const Case& k = cases[c];
    const Bytes file = make_idx(k.type, k.dims, k.payload);
    for (const bool gz : {false, true}) {
      CAPTURE(c, gz);
      const fs::path p = dir / ("t" + std::to_string(c) + (gz ? ".gz" : ""));
      write_file(p, gz ? gzip_stored(file, 5) : file);
      const bp::IdxTensor t = bp::load_idx(p);
      REQUIRE(static_cast<unsigned>(t.type) == k.type);
      REQUIRE(t.dims == std::vector<std::size_t>(k.dims.begin(), k.dims.end()));
      REQUIRE(t.bytes == k.payload);
      REQUIRE(t.size() == k.values.size());
      for (std::size_t i = 0; i < k.values.size(); ++i) REQUIRE(t.value(i) == k.values[i]);
      REQUIRE(t.to_vector<double>() == k.values);
      REQUIRE_THROWS_AS(t.value(k.values.size()), std::out_of_range);
    }
  }
}

TEST_CASE("load_idx detects gzip by content, not by name", "[io][idx]") {
  TempDir dir;
  const Bytes file = make_ubyte_idx({7, 5, 3});
  write_file(dir / "plain.gz", file);
  write_file(dir / "packed.idx", gzip_stored(file));
  REQUIRE(bp::load_idx(dir / "plain.gz").bytes == bp::load_idx(dir / "packed.idx").bytes);
  REQUIRE(bp::read_idx(dynamic_idx_gz).bytes == bp::read_idx(dynamic_idx()).bytes);
  if (have_gzip()) {
    const Bytes big = make_ubyte_idx({100, 28, 28});
    write_file(dir / "big.gz", system_gzip(big, "-9"));
    REQUIRE(bp::load_idx(dir / "big.gz").bytes == Bytes(big.begin() + 16, big.end()));
  }
}

TEST_CASE("load_idx rejects malformed files with the file name in the message", "[io][idx]") {
  TempDir dir;
  const fs::path p = dir / "images-idx3-ubyte";
  const std::string name = p.string();
  const auto fails_with = [&](const Bytes& b, const std::string& text, bool also_gz = true) {
    CAPTURE(text);
    write_file(p, b);
    std::string msg = data_error([&] { (void)bp::load_idx(p); });
    REQUIRE_THAT(msg, Catch::Contains(name) && Catch::Contains(text));
    if (also_gz) {
      write_file(p, gzip_stored(b));
      msg = data_error([&] { (void)bp::load_idx(p); });
      REQUIRE_THAT(msg, Catch::Contains(name) && Catch::Contains(text));
    }
  };
  const Bytes good = make_ubyte_idx({2, 3, 4});
  fails_with({}, "empty");
  fails_with({0, 0, 8}, "truncated header");
  fails_with(Bytes(good.begin(), good.begin() + 10), "truncated header");
  fails_with(Bytes(good.begin(), good.end() - 1),
             "truncated data: file has 39 bytes but the header announces 2x3x4 ubyte elements "
             "(16 + 24 bytes expected)",
             false);
  write_file(p, gzip_stored(Bytes(good.begin(), good.end() - 1)));
  REQUIRE_THAT(
      data_error([&] { (void)bp::load_idx(p); }),
      Catch::Contains(name) && Catch::Contains("truncated data: decompressed data has 39"));
  Bytes g = good;
  g.push_back(0);
  fails_with(g, "trailing garbage");
  g = good;
  g[1] = 1;
  fails_with(g, "bad magic number 00 01 08 03");
  g = good;
  g[2] = 0x0A;
  fails_with(g, "unknown element type code 10");
  fails_with(make_idx(0x08, {}, {}), "unsupported rank 0");
  fails_with(make_idx(0x08, {1, 1, 1, 1, 1, 1, 1, 1, 1}, {7}), "unsupported rank 9");
}

TEST_CASE("load_idx rejects absurd headers without allocating for them", "[io][idx]") {
  TempDir dir;
  const fs::path p = dir / "huge";
  // 4e9 images of 28x28 announced, 100 bytes present. Even with no size limit the loader
  // must not try to allocate 3 TB (under ASan that would abort the test).
  const Bytes huge = make_idx(0x08, {4000000000U, 28, 28}, Bytes(100, 1));
  for (const bool gz : {false, true}) {
    write_file(p, gz ? gzip_stored(huge) : huge);
    const std::string msg = data_error([&] { (void)bp::load_idx(p, std::size_t(-1)); });
    REQUIRE_THAT(msg, Catch::Contains(p.string()) && Catch::Contains("4000000000x28x28"));
  }
  // A product that overflows 64 bits.
  write_file(p, make_idx(0x0E, std::vector<std::uint32_t>(8, 0xFFFFFFFFU), {}));
  REQUIRE_THAT(data_error([&] { (void)bp::load_idx(p); }), Catch::Contains("overflows"));
  // A consistent file above the caller's limit.
  write_file(p, make_ubyte_idx({10, 10}));
  REQUIRE_THAT(data_error([&] { (void)bp::load_idx(p, 99); }),
               Catch::Contains("more than the limit of 99"));
  write_file(p, gzip_stored(make_ubyte_idx({10, 10})));
  REQUIRE_THAT(data_error([&] { (void)bp::load_idx(p, 50); }), Catch::Contains("limit"));
  REQUIRE(bp::load_idx(p, 100).size() == 100);
}

TEST_CASE("load_idx reports missing, empty and unreadable files and gzip garbage", "[io][idx]") {
  TempDir dir;
  const auto check = [](const fs::path& p, const std::string& text) {
    CAPTURE(text);
    REQUIRE_THAT(data_error([&] { (void)bp::load_idx(p); }),
                 Catch::Contains(p.string()) && Catch::Contains(text));
  };
  check(dir / "nope", "file not found");
  check(dir.path(), "directory");
  write_file(dir / "empty", {});
  check(dir / "empty", "file is empty");
  if (fs::exists("/dev/null")) check("/dev/null", "is not a regular file");
  write_file(dir / "locked", make_ubyte_idx({2, 2}));
  fs::permissions(dir / "locked", fs::perms::none);
  if (!std::ifstream(dir / "locked")) check(dir / "locked", "cannot open");  // not as root
  fs::permissions(dir / "locked", fs::perms::owner_all);
  write_file(dir / "garbage.gz", {0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13});
  check(dir / "garbage.gz", "corrupt gzip data");
  write_file(dir / "short.gz", {0x1f, 0x8b});
  check(dir / "short.gz", "gzip: truncated header");
  const Bytes g = gzip_stored(make_ubyte_idx({4, 4}));
  write_file(dir / "cut.gz", Bytes(g.begin(), g.end() - 5));
  check(dir / "cut.gz", "truncated");
  Bytes bad_crc = g;
  bad_crc[bad_crc.size() - 6] ^= 0x40;
  write_file(dir / "crc.gz", bad_crc);
  check(dir / "crc.gz", "CRC-32");
  Bytes inner_bad = gzip_stored(Bytes{'h', 'e', 'l', 'l', 'o'});
  write_file(dir / "text.gz", inner_bad);
  check(dir / "text.gz", "bad magic number");
}

TEST_CASE("load_idx and read_idx never crash on corrupted files", "[io][idx][fuzz]") {
  TempDir dir;
  const Bytes plain = make_ubyte_idx({6, 5, 4});
  std::vector<Bytes> bases = {plain, gzip_stored(plain, 50), dynamic_idx_gz,
                              make_idx(0x0D, {2, 3}, random_bytes(24, 5))};
  if (have_gzip()) bases.push_back(system_gzip(make_ubyte_idx({20, 7, 7}), "-6"));
  std::mt19937 rng(12345);
  int accepted = 0;
  for (int i = 0; i < 4000; ++i) {
    const Bytes b = corrupt(bases[static_cast<std::size_t>(i) % bases.size()], rng);
    const bool via_file = i % 8 == 0;
    try {
      if (via_file) {
        write_file(dir / "f", b);
        (void)bp::load_idx(dir / "f", 1 << 20);
      } else {
        (void)bp::read_idx(b, "fuzz", 1 << 20);
      }
      ++accepted;
    } catch (const std::runtime_error& e) {
      REQUIRE_THAT(std::string(e.what()),
                   Catch::Contains(via_file ? (dir / "f").string() : "fuzz"));
    }
  }
  SUCCEED("corrupted files accepted: " << accepted);
}

// MNIST

TEMPLATE_TEST_CASE("load_mnist reads plain and gzip files", "[io][mnist]", float, double) {
  const MnistFiles files;
  for (const bool gz : {false, true}) {
    CAPTURE(gz);
    TempDir dir;
    files.write(dir.path(), gz);
    const bp::MnistData<TestType> data = bp::load_mnist<TestType>(dir.path());
    REQUIRE(data.image_rows == 4);
    REQUIRE(data.image_cols == 3);
    REQUIRE(data.train.size() == 12);
    REQUIRE(data.test.size() == 5);
    data.train.check_consistent();
    data.test.check_consistent();
    REQUIRE(data.train.inputs.rows() == 12);
    REQUIRE(data.train.targets.rows() == 10);
    const Bytes px = files.images(12, 1);
    for (Eigen::Index j = 0; j < 12; ++j) {
      REQUIRE(data.train.labels(j) == (j * 3 + 1) % 10);
      REQUIRE(data.train.targets.col(j).sum() == TestType(1));
      REQUIRE(data.train.targets(data.train.labels(j), j) == TestType(1));
      for (Eigen::Index k = 0; k < 12; ++k) {
        const unsigned char v = px[16 + static_cast<std::size_t>(j * 12 + k)];
        REQUIRE(data.train.inputs(k, j) == static_cast<TestType>(v) / TestType(255));
      }
    }
    REQUIRE(data.train.inputs.minCoeff() >= TestType(0));
    REQUIRE(data.train.inputs.maxCoeff() <= TestType(1));
    REQUIRE(data.test.labels(4) == (4 * 3 + 2) % 10);
  }
}

TEST_CASE("load_mnist prefers the plain file and accepts a mix", "[io][mnist]") {
  TempDir dir;
  const MnistFiles files;
  files.write(dir.path(), true);
  files.write(dir.path(), false);
  fs::remove(dir / "t10k-labels-idx1-ubyte");
  write_file(dir / "train-images-idx3-ubyte.gz", {1, 2, 3});  // ignored: the plain file wins
  const auto data = bp::load_mnist(dir.path());
  REQUIRE(data.train.size() == 12);
  REQUIRE(data.test.size() == 5);
}

TEST_CASE("load_mnist rejects bad directories and files naming the file", "[io][mnist]") {
  const MnistFiles files;
  const auto fails_with = [](const fs::path& dir, const std::string& file,
                             const std::string& text) {
    CAPTURE(text);
    REQUIRE_THAT(data_error([&] { (void)bp::load_mnist(dir); }),
                 Catch::Contains(file) && Catch::Contains(text));
  };
  {
    TempDir dir;
    fails_with(dir / "absent", (dir / "absent").string(), "not a directory");
    files.write(dir.path(), false);
    fs::remove(dir / "train-labels-idx1-ubyte");
    fails_with(dir.path(), dir.path().string(),
               "neither train-labels-idx1-ubyte nor train-labels-idx1-ubyte.gz found");
  }
  const auto with = [&](const std::string& file, const Bytes& content, const std::string& text) {
    TempDir dir;
    files.write(dir.path(), false);
    write_file(dir / file, content);
    fails_with(dir.path(), (dir / file).string(), text);
  };
  with("train-labels-idx1-ubyte", MnistFiles::labels(11, 1), "has 12 images but");
  with("t10k-images-idx3-ubyte", files.images(6, 0), "has 6 images but");
  Bytes labels = MnistFiles::labels(12, 1);
  labels[8 + 7] = 10;
  with("train-labels-idx1-ubyte", labels, "label 10 at index 7 is outside 0..9");
  with("train-images-idx3-ubyte", make_ubyte_idx({12, 12}), "rank-2 ubyte");
  with("t10k-labels-idx1-ubyte", make_idx(0x0C, {5}, Bytes(20, 0)), "rank-1 int");
  with("train-images-idx3-ubyte", make_ubyte_idx({12, 0, 3}), "empty");
  with("train-images-idx3-ubyte", make_ubyte_idx({0, 4, 3}), "no images");
  with("t10k-images-idx3-ubyte", make_ubyte_idx({5, 3, 4}), "images are 3x4 but the train images");
  with("train-images-idx3-ubyte", make_idx(0x08, {4000000000U, 28, 28}, Bytes(784, 0)),
       "4000000000x28x28");
  with("t10k-labels-idx1-ubyte", {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff}, "corrupt gzip data");
  const Bytes test_labels = MnistFiles::labels(5, 2);
  with("t10k-labels-idx1-ubyte", Bytes(test_labels.begin(), test_labels.end() - 1),
       "truncated data");
}

TEST_CASE("load_mnist never crashes on corrupted files", "[io][mnist][fuzz]") {
  const MnistFiles files;
  const std::array<std::string, 4> names = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
  std::mt19937 rng(777);
  int accepted = 0;
  for (const bool gz : {false, true}) {
    TempDir dir;
    files.write(dir.path(), gz);
    for (int i = 0; i < 250; ++i) {
      const std::string name = names[rng() % 4] + (gz ? ".gz" : "");
      const Bytes original = read_file(dir / name);
      write_file(dir / name, corrupt(original, rng));
      try {
        const auto data = bp::load_mnist(dir.path());
        data.train.check_consistent();
        data.test.check_consistent();
        ++accepted;
      } catch (const std::runtime_error& e) {
        REQUIRE_THAT(std::string(e.what()), Catch::Contains(dir.path().string()));
      }
      write_file(dir / name, original);
    }
  }
  SUCCEED("corrupted sets accepted: " << accepted);
}

TEST_CASE("book_split takes training, validation and test sets", "[io][mnist]") {
  TempDir dir;
  MnistFiles files;
  files.n_train = 15;
  files.write(dir.path(), false);
  const auto data = bp::load_mnist<double>(dir.path());
  const auto split = bp::book_split(data, 10);
  REQUIRE(split.training.size() == 10);
  REQUIRE(split.validation.size() == 5);
  REQUIRE(split.test.size() == 5);
  REQUIRE(split.training.inputs == data.train.inputs.leftCols(10));
  REQUIRE(split.validation.inputs == data.train.inputs.rightCols(5));
  REQUIRE(split.validation.labels == data.train.labels.tail(5));
  REQUIRE(split.validation.targets == data.train.targets.rightCols(5));
  REQUIRE(split.test.labels == data.test.labels);
  REQUIRE_THROWS_AS(bp::book_split(data), bp::ValueError);  // 15 samples, 50000 wanted
  REQUIRE_THROWS_AS(bp::book_split(data, 15), bp::ValueError);
  REQUIRE_THROWS_AS(bp::book_split(data, 0), bp::ValueError);
  REQUIRE(bp::book_split(data, 14).validation.size() == 1);
}

// CSV

TEMPLATE_TEST_CASE("load_csv reads features and labels", "[io][csv]", float, double) {
  TempDir dir;
  const fs::path p = dir / "data.csv";
  write_text(p, "1,2,3,0\n4.5,-5,6e1,2\n");
  const bp::Dataset<TestType> d = bp::load_csv<TestType>(p);
  REQUIRE(d.inputs.rows() == 3);
  REQUIRE(d.inputs.cols() == 2);
  REQUIRE(d.inputs(0, 0) == TestType(1));
  REQUIRE(d.inputs(2, 0) == TestType(3));
  REQUIRE(d.inputs(0, 1) == TestType(4.5));
  REQUIRE(d.inputs(1, 1) == TestType(-5));
  REQUIRE(d.inputs(2, 1) == TestType(60));
  REQUIRE(d.labels(0) == 0);
  REQUIRE(d.labels(1) == 2);
  REQUIRE(d.targets.rows() == 3);
  REQUIRE(d.targets(2, 1) == TestType(1));
  d.check_consistent();
}

TEST_CASE("load_csv options: header, delimiter, label column, classes, scale", "[io][csv]") {
  TempDir dir;
  const fs::path p = dir / "data.csv";
  write_text(p, "label;a;b\r\n\r\n 1 ; 10 ;+20\r\n0;30;40\r\n   \r\n2.0;50;60");
  bp::CsvOptions o;
  o.delimiter = ';';
  o.has_header = true;
  o.label_column = 0;
  o.classes = 5;
  o.feature_scale = 0.5;
  auto d = bp::load_csv<double>(p, o);
  REQUIRE(d.size() == 3);
  REQUIRE(d.inputs.rows() == 2);
  REQUIRE(d.inputs(0, 0) == 5.0);
  REQUIRE(d.inputs(1, 0) == 10.0);
  REQUIRE(d.inputs(1, 2) == 30.0);
  REQUIRE(d.labels(0) == 1);
  REQUIRE(d.labels(2) == 2);
  REQUIRE(d.targets.rows() == 5);
  o.label_column = -3;  // the same column, counted from the end
  REQUIRE(bp::load_csv<double>(p, o).labels == d.labels);

  write_text(p, "1\t2\t0\n3\t4\t1\n");
  bp::CsvOptions tab;
  tab.delimiter = '\t';
  tab.label_column = -1;
  d = bp::load_csv<double>(p, tab);
  REQUIRE(d.inputs.rows() == 2);
  REQUIRE(d.targets.rows() == 2);
  tab.label_column = 1;
  REQUIRE(bp::load_csv<double>(p, tab).inputs(1, 1) == 1.0);
}

TEST_CASE("load_csv rejects bad files naming file, line and column", "[io][csv]") {
  TempDir dir;
  const fs::path p = dir / "bad.csv";
  const auto fails_with = [&](const std::string& text, const std::string& expected,
                              const bp::CsvOptions& o = {}) {
    CAPTURE(text);
    write_text(p, text);
    REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p, o); }),
                 Catch::Contains(p.string()) && Catch::Contains(expected));
  };
  fails_with("", "file is empty");
  fails_with("\n \n", "no data rows");
  bp::CsvOptions header;
  header.has_header = true;
  fails_with("a,b,c\n", "no data rows after the header", header);
  fails_with("1,2,3,0\n1,2,3,1\n1,2,1\n", "line 3 has 3 fields, expected 4 (as on line 1)");
  fails_with("1,2,0\n1,abc,1\n", "line 2, column 2: 'abc' is not a number");
  fails_with("1,,0\n", "line 1, column 2: missing value");
  fails_with("1,2,0\nnan,2,1\n", "line 2, column 1: 'nan' is not a finite number");
  fails_with("1,inf,0\n", "'inf' is not a finite number");
  fails_with("1,2,1.5\n", "line 1, column 3: label '1.5' is not a non-negative integer");
  fails_with("1,2,-1\n", "label '-1' is not a non-negative integer");
  fails_with("1,2,99999999\n", "not below the inferred class limit");
  bp::CsvOptions three;
  three.classes = 3;
  fails_with("1,2,3\n", "label '3' is not below classes = 3", three);
  fails_with("1\n2\n", "at least one feature and a label");
  bp::CsvOptions col;
  col.label_column = 5;
  fails_with("1,2,0\n", "label column 5 does not exist", col);
  col.label_column = -4;
  fails_with("1,2,0\n", "label column -4 does not exist", col);
  fails_with("1e300,2,0\n", "does not fit");
  REQUIRE(bp::load_csv<double>(p).inputs(0, 0) == 1e300);
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(dir / "missing.csv"); }),
               Catch::Contains("missing.csv") && Catch::Contains("file not found"));
  bp::CsvOptions bad;
  bad.delimiter = '.';
  REQUIRE_THROWS_AS(bp::load_csv(p, bad), bp::ValueError);
  bad = {};
  bad.feature_scale = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_AS(bp::load_csv(p, bad), bp::ValueError);
}

TEST_CASE("load_csv: header names, label by name, text labels and their mapping", "[io][csv]") {
  TempDir dir;
  const fs::path p = dir / "iris.csv";
  write_text(p,
             "sepal,petal,species,id\n1,2,virginica,7\n3,4,setosa,8\n5,6,versicolor,9\n"
             "7,8,setosa,10\n");
  bp::CsvOptions o;
  o.has_header = true;
  o.label_name = "species";
  o.ignore_names = {"id"};
  const auto d = bp::load_csv<double>(p, o);
  REQUIRE(d.inputs.rows() == 2);
  REQUIRE(d.feature_names == std::vector<std::string>{"sepal", "petal"});
  REQUIRE(d.class_names == std::vector<std::string>{"setosa", "versicolor", "virginica"});
  REQUIRE(d.labels == (Eigen::VectorXi(4) << 2, 0, 1, 0).finished());
  REQUIRE(d.targets.rows() == 3);
  REQUIRE(d.targets(2, 0) == 1.0);
  REQUIRE(d.inputs(1, 3) == 8.0);

  // The training file's mapping, given to the test file: same indices, unknown names refused.
  const fs::path q = dir / "test.csv";
  write_text(q, "sepal,petal,species,id\n1,1,versicolor,1\n");
  bp::CsvOptions t = o;
  t.class_names = d.class_names;
  REQUIRE(bp::load_csv<double>(q, t).labels(0) == 1);
  REQUIRE(bp::load_csv<double>(q, t).targets.rows() == 3);
  write_text(q, "sepal,petal,species,id\n1,1,daisy,1\n");
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(q, t); }),
               Catch::Contains("line 2, column 3: label 'daisy' is not one of the 3 class_names"));
  t.classes = 2;
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(q, t); }),
               Catch::Contains("classes = 2 but there are 3 class names"));

  bp::CsvOptions wrong = o;
  wrong.label_name = "kind";
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p, wrong); }),
               Catch::Contains("label column 'kind' is not in the header ('sepal', 'petal', "
                               "'species', 'id')"));
  wrong.has_header = false;
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p, wrong); }),
               Catch::Contains("needs has_header"));
  bp::CsvOptions twice = o;
  twice.ignore_columns = {2};
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p, twice); }),
               Catch::Contains("is column 3, which is already"));
}

TEST_CASE("load_csv: quoted fields", "[io][csv]") {
  TempDir dir;
  const fs::path p = dir / "q.csv";
  write_text(
      p,
      "\"a,b\",\"c \"\"x\"\"\",label\r\n\"1.5\", 2 ,\"small, red\"\r\n3,\"4\",\"big\nblue\"\r\n"
      "5,6,\"small, red\"\r\n");
  bp::CsvOptions o;
  o.has_header = true;
  const auto d = bp::load_csv<double>(p, o);
  REQUIRE(d.feature_names == std::vector<std::string>{"a,b", "c \"x\""});
  REQUIRE(d.class_names == std::vector<std::string>{"big\nblue", "small, red"});
  REQUIRE(d.labels == (Eigen::VectorXi(3) << 1, 0, 1).finished());
  REQUIRE(d.inputs(0, 0) == 1.5);
  REQUIRE(d.inputs(1, 1) == 4.0);
  REQUIRE(d.inputs(0, 2) == 5.0);

  const auto fails_with = [&](const std::string& text, const std::string& expected) {
    CAPTURE(text);
    write_text(p, text);
    REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p); }),
                 Catch::Contains(p.string()) && Catch::Contains(expected));
  };
  fails_with("1,2,0\n1,\"2,0\n3,4,1\n", "line 2: a quoted field is not closed");
  fails_with("1,\"2\"x,0\n", "line 1: text after the closing quote");
  fails_with("1,2\"3,0\n", "line 1: a quote inside an unquoted field");
  // A line break inside quotes counts: the error after it names the right line.
  fails_with("1,2,\"a\nb\"\n1,x,b\n", "line 3, column 2: 'x' is not a number");
}

TEST_CASE("load_csv: missing values are errors, skipped rows or filled", "[io][csv]") {
  TempDir dir;
  const fs::path p = dir / "m.csv";
  write_text(p, "age,height,label\n30,1.8,0\nNA,1.7,1\n40,,1\n50,1.6,?\n");
  bp::CsvOptions o;
  o.has_header = true;
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p, o); }),
               Catch::Contains("line 3, column 1 ('age'): missing value ('NA')") &&
                   Catch::Contains("skip_row or fill"));
  o.missing = bp::MissingValues::skip_row;
  auto d = bp::load_csv<double>(p, o);
  REQUIRE(d.size() == 1);
  REQUIRE(d.inputs(0, 0) == 30.0);
  o.missing = bp::MissingValues::fill;
  o.fill_value = -1.0;
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p, o); }),
               Catch::Contains("line 5, column 3 ('label'): missing label ('?')") &&
                   Catch::Contains("fill applies to features only"));
  write_text(p, "age,height,label\n30,1.8,0\nNA,1.7,1\n40,,1\n");
  o.feature_scale = 2.0;
  d = bp::load_csv<double>(p, o);
  REQUIRE(d.size() == 3);
  REQUIRE(d.inputs(0, 1) == -2.0);
  REQUIRE(d.inputs(1, 2) == -2.0);
  REQUIRE(d.inputs(0, 2) == 80.0);
  // Markers are configurable; a quoted "NA" is text, not missing.
  o.missing = bp::MissingValues::error;
  o.missing_markers = {};
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p, o); }),
               Catch::Contains("'NA' is not a number"));
  write_text(p, "1,2,0\n0,0,0\n");
  o = {};
  o.missing = bp::MissingValues::skip_row;
  o.missing_markers = {"0"};
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p, o); }),
               Catch::Contains("every data row has a missing value"));
}

TEMPLATE_TEST_CASE("load_csv: regression targets by column, name or separate file",
                   "[io][csv][regression]", float, double) {
  TempDir dir;
  const fs::path p = dir / "r.csv";
  write_text(p, "x1,y1,x2,y2\n1,0.5,2,-1.25\n3,1.5,4,2.5e1\n");
  bp::CsvOptions o;
  o.has_header = true;
  o.target_columns = {-1, 1};
  auto d = bp::load_csv<TestType>(p, o);
  REQUIRE(d.labels.size() == 0);
  REQUIRE(!d.has_labels());
  REQUIRE(d.inputs.rows() == 2);
  REQUIRE(d.targets.rows() == 2);
  REQUIRE(d.targets(0, 0) == TestType(-1.25));
  REQUIRE(d.targets(1, 0) == TestType(0.5));
  REQUIRE(d.targets(0, 1) == TestType(25));
  REQUIRE(d.inputs(1, 1) == TestType(4));
  REQUIRE(d.target_names == std::vector<std::string>{"y2", "y1"});
  REQUIRE(d.feature_names == std::vector<std::string>{"x1", "x2"});
  o.target_columns = {};
  o.target_names = {"y1"};
  d = bp::load_csv<TestType>(p, o);
  REQUIRE(d.inputs.rows() == 3);
  REQUIRE(d.targets.rows() == 1);
  REQUIRE(d.targets(0, 1) == TestType(1.5));
  o.target_names = {"y1", "y1"};
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p, o); }),
               Catch::Contains("already a label, target or ignored"));

  // Whitespace-separated, gzip-compressed features and a separate gzip targets file, as
  // scikit-learn ships the diabetes data.
  const std::string features = "59 2  32.1\t101\n48 1 21.6 87   \n\n72 2 30.5 93\n";
  const std::string targets = "1.51e+02\n7.5e+01\n1.41e+02\n";
  write_file(dir / "x.csv.gz", gzip_stored(Bytes(features.begin(), features.end()), 7));
  write_file(dir / "y.csv.gz", gzip_stored(Bytes(targets.begin(), targets.end())));
  bp::CsvOptions s;
  s.delimiter = ' ';
  s.targets_path = dir / "y.csv.gz";
  d = bp::load_csv<TestType>(dir / "x.csv.gz", s);
  REQUIRE(d.inputs.rows() == 4);
  REQUIRE(d.size() == 3);
  REQUIRE(d.inputs(2, 0) == TestType(32.1));
  REQUIRE(d.inputs(3, 1) == TestType(87));
  REQUIRE(d.targets.rows() == 1);
  REQUIRE(d.targets(0, 2) == TestType(141));
  write_text(dir / "y.csv", "1\n2\n");
  s.targets_path = dir / "y.csv";
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(dir / "x.csv.gz", s); }),
               Catch::Contains("has 3 data rows but the targets file") && Catch::Contains("has 2"));
  // skip_row drops the sample from both files.
  write_text(dir / "y.csv", "1\nNA\n3\n");
  s.missing = bp::MissingValues::skip_row;
  d = bp::load_csv<TestType>(dir / "x.csv.gz", s);
  REQUIRE(d.size() == 2);
  REQUIRE(d.targets(0, 1) == TestType(3));
  REQUIRE(d.inputs(0, 1) == TestType(72));
  s.missing = bp::MissingValues::error;
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(dir / "x.csv.gz", s); }),
               Catch::Contains("line 2, column 1: missing target"));

  bp::CsvOptions both;
  both.target_columns = {0};
  both.classes = 3;
  REQUIRE_THROWS_AS(bp::load_csv(p, both), bp::ValueError);
  write_text(p, "1,2\n3,x\n");
  both = {};
  both.target_columns = {1};
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p, both); }),
               Catch::Contains("line 2, column 2: 'x' is not a number"));
  // A real-valued label without target_columns says what to do.
  write_text(p, "1,0.5\n");
  REQUIRE_THAT(data_error([&] { (void)bp::load_csv(p); }),
               Catch::Contains("set CsvOptions::target_columns"));
}

TEST_CASE("load_csv never crashes on mutated files", "[io][csv][fuzz]") {
  TempDir dir;
  const fs::path p = dir / "f.csv";
  const std::string base = "a,b,\"c\"\n1,2,x\n\"3\",4,\"y\"\"z\"\n5,NA,x\n";
  std::mt19937 gen(7);
  const std::string alphabet = ",\"\n\r 0123456789.-+eNA?x\t";
  for (int round = 0; round < 2000; ++round) {
    std::string text = base;
    const int edits = 1 + static_cast<int>(gen() % 4);
    for (int k = 0; k < edits; ++k) {
      const std::size_t at = gen() % (text.size() + 1);
      switch (gen() % 3) {
        case 0:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(at),
                      alphabet[gen() % alphabet.size()]);
          break;
        case 1:
          if (at < text.size()) text.erase(at, 1);
          break;
        default:
          if (at < text.size()) text[at] = alphabet[gen() % alphabet.size()];
          break;
      }
    }
    write_text(p, text);
    bp::CsvOptions o;
    o.has_header = round % 2 == 0;
    o.missing = static_cast<bp::MissingValues>(round % 3);
    if (round % 5 == 0) o.target_columns = {0};
    try {
      const auto d = bp::load_csv<double>(p, o);
      d.check_consistent();
      REQUIRE(d.inputs.allFinite());
    } catch (const bp::DataError&) {
    }
  }
}

TEMPLATE_TEST_CASE("Scaler standardises, min-max scales, inverts, saves and loads",
                   "[data][scaling]", float, double) {
  using M = Eigen::Matrix<TestType, Eigen::Dynamic, Eigen::Dynamic>;
  M x(3, 4);
  x << 1, 2, 3, 4,     //
      10, 10, 10, 10,  //
      -5, 0, 5, 100;
  const auto s = bp::Scaler<TestType>::standard(x);
  const M z = s.transform(x);
  for (Eigen::Index r : {0, 2}) {
    REQUIRE_THAT(double(z.row(r).mean()), Catch::Matchers::WithinAbs(0.0, 1e-6));
    REQUIRE_THAT(double(z.row(r).squaredNorm() / 4), Catch::Matchers::WithinRel(1.0, 1e-5));
  }
  REQUIRE(z.row(1).isZero());  // a constant feature: centred, not divided by 0
  REQUIRE(s.offset()(0) == 2.5);
  REQUIRE_THAT(s.factor()(0), Catch::Matchers::WithinRel(1.0 / std::sqrt(1.25), 1e-12));
  REQUIRE(s.inverse(z).isApprox(x, TestType(1e-5)));

  const auto m = bp::Scaler<TestType>::min_max(x, -1.0, 1.0);
  const M y = m.transform(x);
  REQUIRE(y.row(0).isApprox((Eigen::Matrix<TestType, 1, 4>() << TestType(-1), TestType(-1.0 / 3),
                             TestType(1.0 / 3), TestType(1))
                                .finished(),
                            TestType(1e-6)));
  REQUIRE(y(2, 3) == TestType(1));
  REQUIRE(y(2, 0) == TestType(-1));
  REQUIRE(y.row(1).isConstant(TestType(-1)));
  REQUIRE(m.inverse(y).isApprox(x, TestType(1e-5)));
  // Applied to new data with the training data's statistics (values outside the range too).
  M fresh(3, 1);
  fresh << 7, 10, -110;
  REQUIRE(m.transform(fresh)(0, 0) == TestType(3));
  REQUIRE(m.transform(fresh)(2, 0) == TestType(-3));

  std::stringstream buf;
  s.save(buf);
  REQUIRE(bp::Scaler<TestType>::load(buf) == s);
  TempDir dir;
  m.save(dir / "m.scaler");
  const auto back = bp::Scaler<TestType>::load(dir / "m.scaler");
  REQUIRE(back == m);
  REQUIRE(back.transform(x) == y);
  bp::Dataset<TestType> data;
  data.inputs = x;
  back.apply(data);
  REQUIRE(data.inputs == y);

  REQUIRE_THROWS_AS(s.transform(M(2, 1)), bp::ShapeError);
  REQUIRE_THROWS_AS(bp::Scaler<TestType>::standard(M(3, 0)), bp::ValueError);
  REQUIRE_THROWS_AS(bp::Scaler<TestType>::min_max(x, 1.0, 1.0), bp::ValueError);
  M bad = x;
  bad(1, 1) = std::numeric_limits<TestType>::quiet_NaN();
  REQUIRE_THROWS_AS(bp::Scaler<TestType>::standard(bad), bp::ValueError);
  REQUIRE_THROWS_AS(bp::Scaler<TestType>::load(dir / "missing.scaler"), bp::ModelFormatError);
}

TEST_CASE("Scaler::load rejects damaged files", "[data][scaling]") {
  std::stringstream buf;
  Eigen::MatrixXd x(2, 3);
  x << 1, 2, 3, 4, 5, 7;
  bp::Scaler<double>::standard(x).save(buf);
  const std::string good = buf.str();
  const auto load_error = [](const std::string& text) {
    std::istringstream in(text);
    try {
      (void)bp::Scaler<double>::load(in);
    } catch (const bp::ModelFormatError& e) {
      return std::string(e.what());
    }
    FAIL("expected a ModelFormatError for: " << text);
    return std::string();
  };
  REQUIRE_THAT(load_error(""), Catch::Contains("not a backprop scaler"));
  REQUIRE_THAT(load_error("backprop-scaler 2\n"), Catch::Contains("unsupported version 2"));
  REQUIRE_THAT(load_error("backprop-scaler 1\nlog 2\n"), Catch::Contains("unknown kind 'log'"));
  REQUIRE_THAT(load_error("backprop-scaler 1\nstandard -1\n"), Catch::Contains("bad row count"));
  REQUIRE_THAT(load_error("backprop-scaler 1\nstandard 1\n1 nan 0\n"),
               Catch::Contains("'nan' is not a finite number"));
  REQUIRE_THAT(load_error(good + "3\n"), Catch::Contains("unexpected text"));
  for (std::size_t cut = 0; cut + 1 < good.size(); ++cut) {
    const std::string part = good.substr(0, cut);
    std::istringstream in(part);
    try {
      const auto s = bp::Scaler<double>::load(in);
      // A cut inside the last number can still parse (fewer digits); the rows must be whole.
      REQUIRE(s.size() == 2);
    } catch (const bp::ModelFormatError&) {
    }
  }
}

TEST_CASE("Scaler::load reads a huge row count in a short file as truncated", "[data][scaling]") {
  // The rows are read before anything is sized by the count: no 16M-row allocation.
  std::istringstream in("backprop-scaler 1\nmin_max 16777216\n0 1 0\n");
  REQUIRE_THROWS_WITH(bp::Scaler<double>::load(in), Catch::Contains("truncated at row 2"));
}

TEST_CASE("class names save and load, any bytes, and damaged files are refused",
          "[data][class_names]") {
  const std::vector<std::string> names{"setosa", "narrow, long", "", "two\nlines", " spaced "};
  std::stringstream buf;
  bp::save_class_names(buf, names);
  const std::string good = buf.str();
  {
    std::istringstream in(good);
    REQUIRE(bp::load_class_names(in) == names);
  }
  TempDir dir;
  const auto path = dir / "m.classes";
  bp::save_class_names(path, names);
  REQUIRE(bp::load_class_names(path) == names);
  REQUIRE(bp::load_class_names(path).size() == 5);

  const auto load_error = [](const std::string& text) {
    std::istringstream in(text);
    try {
      (void)bp::load_class_names(in);
    } catch (const bp::ModelFormatError& e) {
      return std::string(e.what());
    }
    FAIL("expected a ModelFormatError for: " << text);
    return std::string();
  };
  REQUIRE_THAT(load_error("backprop-scaler 1\n"), Catch::Contains("not a backprop class-names"));
  REQUIRE_THAT(load_error("backprop-class-names 2\n"), Catch::Contains("unsupported version 2"));
  REQUIRE_THAT(load_error("backprop-class-names 1\n-1\n"), Catch::Contains("bad class count"));
  REQUIRE_THAT(load_error("backprop-class-names 1\n1\n9 short\n"),
               Catch::Contains("name 0 is truncated"));
  REQUIRE_THAT(load_error("backprop-class-names 1\n1\nx y\n"),
               Catch::Contains("bad length of name 0"));
  REQUIRE_THAT(load_error(good + "extra\n"), Catch::Contains("unexpected text"));
  // Every proper prefix is refused (the count says how many names must follow).
  for (std::size_t cut = 0; cut + 1 < good.size(); ++cut) {
    std::istringstream in(good.substr(0, cut));
    REQUIRE_THROWS_AS(bp::load_class_names(in), bp::ModelFormatError);
  }
  REQUIRE_THROWS_WITH(bp::load_class_names(dir / "missing.classes"),
                      Catch::Contains("missing.classes"));
}

TEST_CASE("split is seeded, disjoint, complete and stratified", "[data][split]") {
  bp::Dataset<float> d;
  const int n = 103;
  d.inputs.resize(2, n);
  d.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    d.inputs(0, i) = float(i);
    d.inputs(1, i) = float(-i);
    d.labels(i) = i < 70 ? 0 : (i < 100 ? 1 : 2);
  }
  d.targets = bp::one_hot<float>(d.labels, 3);
  d.feature_names = {"a", "b"};
  const auto s = bp::split(d, {.validation = 0.1, .test = 0.2, .seed = 5});
  REQUIRE(s.test.size() == 14 + 6 + 1);  // round(0.2 * 70), round(0.2 * 30), round(0.2 * 3)
  REQUIRE(s.validation.size() == 7 + 3 + 0);
  REQUIRE(s.training.size() == n - 21 - 10);
  REQUIRE(s.test.feature_names == d.feature_names);
  std::set<int> seen;
  for (const auto* part : {&s.training, &s.validation, &s.test}) {
    part->check_consistent();
    for (Eigen::Index i = 0; i < part->size(); ++i) {
      const int id = static_cast<int>(part->inputs(0, i));
      REQUIRE(seen.insert(id).second);
      REQUIRE(part->labels(i) == d.labels(id));
      REQUIRE(part->targets.col(i) == d.targets.col(id));
      REQUIRE(part->inputs(1, i) == -float(id));
      if (i > 0) REQUIRE(part->inputs(0, i) > part->inputs(0, i - 1));  // original order kept
    }
  }
  REQUIRE(seen.size() == static_cast<std::size_t>(n));
  const auto again = bp::split(d, {.validation = 0.1, .test = 0.2, .seed = 5});
  REQUIRE(again.test.inputs == s.test.inputs);
  const auto other = bp::split(d, {.validation = 0.1, .test = 0.2, .seed = 6});
  REQUIRE(other.test.inputs != s.test.inputs);
  // Without stratification, or without labels: one shuffle of all samples.
  const auto plain = bp::split(d, {.test = 0.5, .stratify = false});
  REQUIRE(plain.test.size() == 52);
  bp::Dataset<float> r = d;
  r.labels.resize(0);
  r.targets = d.inputs.topRows(1);
  const auto rs = bp::split(r, {.test = 0.25, .seed = 1});
  REQUIRE(rs.test.size() == 26);
  REQUIRE(rs.test.labels.size() == 0);
  REQUIRE(rs.test.targets.row(0) == rs.test.inputs.row(0));

  REQUIRE_THROWS_AS(bp::split(d, {.test = 1.0}), bp::ValueError);
  REQUIRE_THROWS_AS(bp::split(d, {.validation = 0.5, .test = 0.5}), bp::ValueError);
  REQUIRE_THROWS_AS(bp::split(d, {.test = -0.1}), bp::ValueError);
  REQUIRE_THROWS_AS(bp::split(d.slice(0, 1), {.test = 0.6}), bp::ValueError);  // empty training
}

TEST_CASE("ConfusionMatrix counts and derives precision, recall and F1", "[metrics]") {
  Eigen::VectorXi truth(8), predicted(8);
  truth << 0, 0, 0, 1, 1, 2, 2, 2;
  predicted << 0, 0, 1, 1, 2, 2, 2, 0;
  const bp::ConfusionMatrix m(predicted, truth, 4);
  REQUIRE(m.counts()(0, 0) == 2);
  REQUIRE(m.counts()(0, 1) == 1);
  REQUIRE(m.counts()(2, 0) == 1);
  REQUIRE(m.correct() == 5);
  REQUIRE(m.accuracy() == 5.0 / 8);
  REQUIRE(m.precision(0) == 2.0 / 3);
  REQUIRE(m.recall(0) == 2.0 / 3);
  REQUIRE(m.precision(1) == 0.5);
  REQUIRE(m.recall(1) == 0.5);
  REQUIRE_THAT(m.f1(2), Catch::Matchers::WithinRel(2.0 / 3, 1e-15));
  REQUIRE(m.f1(3) == 0.0);  // no samples, no predictions: 0, not NaN
  REQUIRE(m.support(2) == 3);
  REQUIRE_THAT(m.macro_f1(), Catch::Matchers::WithinRel((2.0 / 3 + 0.5 + 2.0 / 3 + 0) / 4, 1e-15));
  REQUIRE_THAT(m.weighted_f1(),
               Catch::Matchers::WithinRel((3 * 2.0 / 3 + 2 * 0.5 + 3 * 2.0 / 3) / 8, 1e-15));
  const std::string report = m.report({"cat", "dog", "emu", "yak"});
  REQUIRE_THAT(report, Catch::Contains("emu") && Catch::Contains("0.6667") &&
                           Catch::Contains("accuracy") && Catch::Contains("weighted avg"));
  REQUIRE_THROWS_AS(bp::ConfusionMatrix(predicted, truth, 2), bp::ValueError);
  REQUIRE_THROWS_AS(bp::ConfusionMatrix(predicted.head(3), truth, 4), bp::ShapeError);
  REQUIRE_THROWS_AS(m.recall(4), bp::ValueError);
}

TEST_CASE("regression_metrics: MSE, RMSE, MAE and R^2", "[metrics][regression]") {
  Eigen::MatrixXd t(2, 4), p(2, 4);
  t << 1, 2, 3, 4,  //
      5, 5, 5, 5;
  p << 1, 2, 3, 6,  //
      5, 5, 5, 5;
  const auto m = bp::regression_metrics(p, t);
  REQUIRE(m.mse == 4.0 / 8);
  REQUIRE(m.rmse == std::sqrt(0.5));
  REQUIRE(m.mae == 2.0 / 8);
  // Row 0: 1 - 4 / 5; row 1 is constant and predicted exactly: 1. The mean of the two.
  REQUIRE_THAT(m.r2, Catch::Matchers::WithinRel((0.2 + 1.0) / 2, 1e-15));
  REQUIRE(m.samples == 4);
  p(1, 0) = 6;
  REQUIRE_THAT(bp::regression_metrics(p, t).r2, Catch::Matchers::WithinRel(0.1, 1e-14));
  REQUIRE_THROWS_AS(bp::regression_metrics(p, t.leftCols(3)), bp::ShapeError);
  REQUIRE_THROWS_AS(bp::regression_metrics(p.leftCols(0), t.leftCols(0)), bp::ValueError);
}
