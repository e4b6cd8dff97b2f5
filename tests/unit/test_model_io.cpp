// Models on disk: the binary format, network2.py's JSON, atomic saving.
#include <backprop/network.hpp>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <ratio>
#include <sstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#define BP_TEST_POSIX 1
#else
#define BP_TEST_POSIX 0
#endif

namespace {

namespace bp = backprop;
namespace fs = std::filesystem;

template <class T>
using Mixed = bp::BasicNetwork<T, bp::Dense<2, 3, bp::Sigmoid>, bp::Dense<3, 1, bp::Tanh>>;
template <class T>
using Sig = bp::BasicNetwork<T, bp::Dense<2, 3, bp::Sigmoid>, bp::Dense<3, 1, bp::Sigmoid>>;
template <class T>
using Big = bp::BasicNetwork<T, bp::Dense<784, 100, bp::Sigmoid>, bp::Dense<100, 10, bp::ReLU>>;
template <class T>
using Wider = bp::BasicNetwork<T, bp::Dense<2, 4, bp::Sigmoid>, bp::Dense<4, 1, bp::Sigmoid>>;
template <class T>
using Deeper = bp::BasicNetwork<T, bp::Dense<2, 3, bp::Sigmoid>, bp::Dense<3, 3, bp::Sigmoid>,
                                bp::Dense<3, 1, bp::Sigmoid>>;

/// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() / ("backprop_model_io_" +
                                        std::to_string(static_cast<long long>(
#if BP_TEST_POSIX
                                            ::getpid()
#else
                                            0
#endif
                                                )) +
                                        "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
#if BP_TEST_POSIX
    ::chmod(path.c_str(), 0700);
#endif
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

template <class Net>
std::string to_binary(const Net& net) {
  std::ostringstream os(std::ios::binary);
  net.save(os);
  return os.str();
}

template <class Net>
std::string to_json(const Net& net, std::string_view cost = "QuadraticCost") {
  std::ostringstream os;
  net.save_json(os, cost);
  return os.str();
}

template <class Net>
void load_binary_string(Net& net, const std::string& bytes) {
  std::istringstream is(bytes, std::ios::binary);
  net.load(is);
}

template <class Net>
std::string load_json_string(Net& net, const std::string& text) {
  std::istringstream is(text);
  return net.load_json(is);
}

void put_u32(std::string& s, std::size_t offset, std::uint32_t v) {
  for (int k = 0; k < 4; ++k) s[offset + k] = static_cast<char>((v >> (8 * k)) & 0xFFU);
}

/// Recomputes the trailing CRC-32 after a deliberate edit.
void fix_crc(std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  put_u32(s, s.size() - 4, bp::detail::crc32(p, s.size() - 4));
}

std::string file_contents(const fs::path& p) {
  std::ifstream is(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream os(p, std::ios::binary);
  os << s;
}

template <class Net>
std::string load_error(Net& net, const std::string& bytes) {
  const Net before = net;
  try {
    load_binary_string(net, bytes);
  } catch (const bp::ModelFormatError& e) {
    CHECK(net == before);
    return e.what();
  }
  FAIL("load did not throw");
  return {};
}

template <class Net>
std::string load_json_error(Net& net, const std::string& text) {
  const Net before = net;
  try {
    load_json_string(net, text);
  } catch (const bp::ModelFormatError& e) {
    CHECK(net == before);
    return e.what();
  }
  FAIL("load_json did not throw for: " << text.substr(0, 200));
  return {};
}

using Catch::Matchers::Contains;
using Catch::Matchers::Equals;

/// Structure of a JSON value: numbers "num", strings "str", objects "{k:v,...}", arrays
/// "[...]" with runs of equal elements written "n*elem".
std::string json_shape(bp::detail::ModelJsonParser& p) {
  using Kind = bp::detail::ModelJsonParser::Kind;
  switch (p.peek()) {
    case Kind::object: {
      p.begin_object();
      std::string out = "{", key;
      for (std::size_t i = 0; p.next_member(i, key); ++i) {
        out += (i > 0 ? "," : "") + key + ":" + json_shape(p);
      }
      return out + "}";
    }
    case Kind::array: {
      p.begin_array();
      std::vector<std::string> items;
      for (std::size_t i = 0; p.next_element(i); ++i) items.push_back(json_shape(p));
      std::string out = "[";
      for (std::size_t i = 0; i < items.size();) {
        std::size_t j = i;
        while (j < items.size() && items[j] == items[i]) ++j;
        out += (i > 0 ? "," : "") + std::to_string(j - i) + "*" + items[i];
        i = j;
      }
      return out + "]";
    }
    case Kind::number:
      (void)p.number();
      return "num";
    case Kind::string:
      (void)p.string();
      return "str";
    case Kind::boolean:
      (void)p.boolean();
      return "bool";
    case Kind::null:
      p.null();
      return "null";
  }
  return "?";
}

std::string json_shape(const std::string& text) {
  bp::detail::ModelJsonParser p(text, "test");
  std::string s = json_shape(p);
  p.finish();
  return s;
}

/// network2.py's output for a 2-3-1 network (what json.dump writes).
std::string network2_json(const std::string& weights =
                              "[[[0.1, -0.2], [0.30000000000000004, 1.5e-05], [-1.25, 2.0]], "
                              "[[0.5, -0.75, 1e-10]]]",
                          const std::string& biases = "[[[0.0], [-1.0], [3.14159]], [[-2.5e-08]]]",
                          const std::string& tail = ", \"cost\": \"CrossEntropyCost\"") {
  return "{\"sizes\": [2, 3, 1], \"weights\": " + weights + ", \"biases\": " + biases + tail + "}";
}

}  // namespace

TEST_CASE("crc32 matches the standard check value", "[model_io]") {
  const std::string s = "123456789";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  CHECK(bp::detail::crc32(p, s.size()) == 0xCBF43926U);
  CHECK(bp::detail::crc32(p + 4, 5, bp::detail::crc32(p, 4)) == 0xCBF43926U);
}

TEMPLATE_TEST_CASE("Binary save/load round-trips exactly through streams", "[model_io][binary]",
                   float, double) {
  SECTION("small layers with mixed activations") {
    const Mixed<TestType> a(1);
    Mixed<TestType> b(2);
    REQUIRE_FALSE(a == b);
    load_binary_string(b, to_binary(a));
    CHECK(a == b);
  }
  SECTION("large dynamic layers") {
    const Big<TestType> a(3);
    Big<TestType> b(4);
    const std::string bytes = to_binary(a);
    CHECK(bytes.size() ==
          20 + (12 + 7) + (12 + 4) + (784 * 100 + 100 + 100 * 10 + 10) * sizeof(TestType) + 4);
    load_binary_string(b, bytes);
    CHECK(a == b);
  }
}

TEMPLATE_TEST_CASE("Binary save/load round-trips exactly through files", "[model_io][binary]",
                   float, double) {
  TempDir dir;
  const fs::path file = dir.path / "model.bpnn";
  const Big<TestType> a(5);
  a.save(file);
  Big<TestType> b(6);
  b.load(file);
  CHECK(a == b);
  const Big<TestType> c(7);
  c.save(file);  // replaces the existing file
  b.load(file.string());
  CHECK(b == c);
  CHECK(dir.entries() == std::vector<std::string>{"model.bpnn"});
}

TEMPLATE_TEST_CASE("Binary load names both sides of an architecture mismatch", "[model_io][binary]",
                   float, double) {
  const std::string sig = to_binary(Sig<TestType>(1));
  SECTION("layer count") {
    Deeper<TestType> deeper(2);
    CHECK_THAT(load_error(deeper, sig), Equals("load: file has 2 layers, this network has 3"));
    Sig<TestType> net(3);
    CHECK_THAT(load_error(net, to_binary(deeper)),
               Equals("load: file has 3 layers, this network has 2"));
  }
  SECTION("layer sizes") {
    Wider<TestType> wider(2);
    CHECK_THAT(load_error(wider, sig),
               Equals("load: file has layer 0 with 3 outputs, this network expects 4"));
    Big<TestType> big(2);
    CHECK_THAT(load_error(big, sig),
               Equals("load: file has layer 0 with 2 inputs, this network expects 784"));
  }
  SECTION("activation") {
    Mixed<TestType> mixed(2);
    CHECK_THAT(load_error(mixed, sig),
               Equals("load: activation of layer 1 is 'sigmoid' in the file, 'tanh' in "
                      "this network"));
  }
  SECTION("absurd sizes are rejected from the header") {
    Sig<TestType> net(2);
    std::string bytes = sig;
    put_u32(bytes, 16, 0x80000000U);
    CHECK_THAT(load_error(net, bytes),
               Equals("load: file has 2147483648 layers, this network has 2"));
    bytes = sig;
    put_u32(bytes, 24, 4000000000U);  // outputs of layer 0
    CHECK_THAT(load_error(net, bytes),
               Equals("load: file has layer 0 with 4000000000 outputs, this network expects 3"));
    bytes = sig;
    put_u32(bytes, 28, 0xFFFFFFFFU);  // activation name length of layer 0
    CHECK_THAT(load_error(net, bytes), Contains("has 4294967295 bytes in the file"));
  }
}

TEMPLATE_TEST_CASE("A model truncated at any byte throws and leaves the network unchanged",
                   "[model_io][binary]", float, double) {
  const std::string bytes = to_binary(Mixed<TestType>(1));
  Mixed<TestType> net(2);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    INFO("truncated to " << n << " bytes");
    const std::string msg = load_error(net, bytes.substr(0, n));
    CHECK_THAT(msg, Contains("truncated file: it ends after " + std::to_string(n) + " bytes"));
    if (n >= 55) CHECK_THAT(msg, Contains(std::to_string(bytes.size() - n) + " missing"));
  }
  // Streams that throw on failure give the same ModelFormatError.
  std::istringstream is(bytes.substr(0, 70), std::ios::binary);
  is.exceptions(std::ios::failbit | std::ios::badbit | std::ios::eofbit);
  CHECK_THROWS_WITH(net.load(is), Contains("ends after 70 bytes"));
  std::istringstream longer(bytes + "xy", std::ios::binary);
  longer.exceptions(std::ios::failbit | std::ios::badbit | std::ios::eofbit);
  CHECK_THROWS_WITH(net.load(longer), Contains("2 unexpected bytes"));
  std::istringstream exact(bytes, std::ios::binary);
  exact.exceptions(std::ios::failbit | std::ios::badbit | std::ios::eofbit);
  net.load(exact);
  CHECK(net == Mixed<TestType>(1));
}

TEMPLATE_TEST_CASE("Every single-bit flip of a model is detected", "[model_io][binary]", float,
                   double) {
  const std::string bytes = to_binary(Mixed<TestType>(1));
  Mixed<TestType> net(2);
  std::size_t by_checksum = 0;
  for (std::size_t bit = 0; bit < bytes.size() * 8; ++bit) {
    std::string damaged = bytes;
    damaged[bit / 8] = static_cast<char>(damaged[bit / 8] ^ (1 << (bit % 8)));
    INFO("bit " << bit);
    if (load_error(net, damaged).find("checksum mismatch") != std::string::npos) ++by_checksum;
  }
  // Every flip after the header (parameters and the checksum itself) is a CRC error.
  CHECK(by_checksum >= (bytes.size() - 55) * 8);
}

TEMPLATE_TEST_CASE("Bad magic, version, scalar type, trailing bytes and NaN are rejected",
                   "[model_io][binary]", float, double) {
  const Mixed<TestType> original(1);
  const std::string bytes = to_binary(original);
  Mixed<TestType> net(2);
  std::string b = bytes;
  b[0] = 'X';
  CHECK_THAT(load_error(net, b), Contains("not a backprop model"));
  CHECK_THAT(load_error(net, to_json(original)), Contains("looks like JSON"));
  CHECK_THAT(load_error(net, ""), Contains("ends after 0 bytes, while reading the magic"));
  b = bytes;
  put_u32(b, 4, 2);
  fix_crc(b);
  CHECK_THAT(load_error(net, b),
             Equals("load: unsupported format version 2 (this library reads version 1)"));
  b = bytes;
  put_u32(b, 12, 16);
  fix_crc(b);
  CHECK_THAT(load_error(net, b), Contains("unknown scalar type"));
  CHECK_THAT(load_error(net, bytes + "x"),
             Equals("load: 1 unexpected bytes after the model's checksum (the model ends at "
                    "byte " +
                    std::to_string(bytes.size()) + ")"));
  CHECK_THAT(load_error(net, bytes + bytes), Contains("unexpected bytes"));
  // A NaN with a valid checksum: first weight, after the 20 + 19 + 16 header bytes.
  b = bytes;
  if constexpr (sizeof(TestType) == 4) {
    put_u32(b, 55, 0x7FC00000U);
  } else {
    put_u32(b, 55, 0);
    put_u32(b, 59, 0x7FF80000U);
  }
  fix_crc(b);
  CHECK_THAT(load_error(net, b), Contains("layer 0 weight (0, 0) is NaN"));
  load_binary_string(net, bytes);
  CHECK(net == original);
}

TEMPLATE_TEST_CASE("Saving non-finite parameters throws ValueError and writes nothing",
                   "[model_io]", float, double) {
  TempDir dir;
  Mixed<TestType> net(1);
  net.save(dir.path / "m.bpnn");
  const std::string old = file_contents(dir.path / "m.bpnn");
  net.template layer<1>().biases()(0) = std::numeric_limits<TestType>::infinity();
  CHECK_THROWS_AS(net.save(dir.path / "m.bpnn"), bp::ValueError);
  CHECK_THROWS_AS(net.save_json(dir.path / "m.bpnn"), bp::ValueError);
  std::ostringstream os;
  CHECK_THROWS_WITH(net.save(os), Contains("layer 1 bias 0 is +infinity"));
  CHECK(os.str().empty());
  CHECK(file_contents(dir.path / "m.bpnn") == old);
  CHECK(dir.entries() == std::vector<std::string>{"m.bpnn"});
  // A resized parameter matrix is refused by save, and load restores the shape.
  net.template layer<0>().weights().resize(1, 1);
  CHECK_THROWS_WITH(net.save(os),
                    Equals("save: the weights of layer 0 are 1 x 1, the layer is 3 x 2"));
  CHECK_THROWS_AS(net.save_json(os), bp::ShapeError);
  net.load(dir.path / "m.bpnn");
  CHECK(net == Mixed<TestType>(1));
}

TEST_CASE("float and double models convert into each other", "[model_io][binary][json]") {
  const Mixed<double> d(1);
  const Mixed<float> f(2);
  SECTION("double file into a float network: rounded to nearest") {
    Mixed<float> g(3);
    load_binary_string(g, to_binary(d));
    CHECK(g.layer<0>().weights() == d.layer<0>().weights().cast<float>());
    CHECK(g.layer<1>().biases() == d.layer<1>().biases().cast<float>());
    Mixed<float> h(3);
    load_json_string(h, to_json(d));
    CHECK(h == g);
  }
  SECTION("float file into a double network: exact") {
    Mixed<double> e(3);
    load_binary_string(e, to_binary(f));
    CHECK(e.layer<0>().weights() == f.layer<0>().weights().cast<double>());
    CHECK(e.layer<1>().biases() == f.layer<1>().biases().cast<double>());
    Mixed<double> h(3);
    load_json_string(h, to_json(f));
    CHECK(h == e);
  }
  SECTION("double values beyond float's range are rejected") {
    Mixed<double> big = d;
    big.layer<0>().weights()(1, 0) = 1e39;
    Mixed<float> g(3);
    CHECK_THAT(load_error(g, to_binary(big)),
               Contains("layer 0 weight (1, 0) is 1e+39, outside the range of float"));
    CHECK_THAT(load_json_error(g, to_json(big)), Contains("outside the range of float"));
    Mixed<double> e(3);
    load_binary_string(e, to_binary(big));
    CHECK(e == big);
  }
}

TEMPLATE_TEST_CASE("JSON save/load round-trips exactly", "[model_io][json]", float, double) {
  SECTION("mixed activations, streams") {
    const Mixed<TestType> a(1);
    Mixed<TestType> b(2);
    CHECK(load_json_string(b, to_json(a, "CrossEntropyCost")) == "CrossEntropyCost");
    CHECK(a == b);
  }
  SECTION("large layers, files") {
    TempDir dir;
    const Big<TestType> a(3);
    a.save_json(dir.path / "net.json", "LogLikelihoodCost");
    Big<TestType> b(4);
    CHECK(b.load_json(dir.path / "net.json") == "LogLikelihoodCost");
    CHECK(a == b);
    CHECK(dir.entries() == std::vector<std::string>{"net.json"});
  }
}

TEMPLATE_TEST_CASE("network2.py's JSON loads to exactly its numbers", "[model_io][json]", float,
                   double) {
  using T = TestType;
  Sig<T> net(9);
  CHECK(load_json_string(net, network2_json()) == "CrossEntropyCost");
  const auto& w0 = net.template layer<0>().weights();
  CHECK(w0(0, 0) == T(0.1));
  CHECK(w0(0, 1) == T(-0.2));
  CHECK(w0(1, 0) == static_cast<T>(0.30000000000000004));
  CHECK(w0(1, 1) == static_cast<T>(1.5e-05));
  CHECK(w0(2, 0) == T(-1.25));
  CHECK(w0(2, 1) == T(2.0));
  const auto& w1 = net.template layer<1>().weights();
  CHECK(w1(0, 0) == T(0.5));
  CHECK(w1(0, 1) == T(-0.75));
  CHECK(w1(0, 2) == static_cast<T>(1e-10));
  const auto& b0 = net.template layer<0>().biases();
  CHECK(b0(0) == T(0));
  CHECK(b0(1) == T(-1));
  CHECK(b0(2) == static_cast<T>(3.14159));
  CHECK(net.template layer<1>().biases()(0) == static_cast<T>(-2.5e-08));

  // Pretty-printed (json.dump(..., indent=2)) and without "cost" also load.
  Sig<T> other(10);
  const std::string pretty =
      "{\n  \"sizes\": [\n    2,\n    3,\n    1\n  ],\n  \"weights\": [[[0.1, -0.2], "
      "[0.30000000000000004, 1.5e-05], [-1.25, 2.0]],\r\n\t[[0.5, -0.75, 1e-10]]],\n"
      "  \"biases\": [[[0.0], [-1.0], [3.14159]], [[-2.5e-08]]], \"comment\": {\"a\": [null, "
      "true, false, \"\\u00e9\\ud83d\\ude00\"]}\n}\n";
  CHECK(load_json_string(other, pretty).empty());
  CHECK(other == net);

  // network2 files carry no activations: they are not checked against the network.
  Mixed<T> mixed(11);
  CHECK_NOTHROW(load_json_string(mixed, network2_json()));
}

TEMPLATE_TEST_CASE("Saved JSON has exactly network2.py's structure", "[model_io][json]", float,
                   double) {
  const std::string text = to_json(Sig<TestType>(1), "CrossEntropyCost");
  CHECK(text.rfind("{\"sizes\": [2, 3, 1], \"weights\": [[[", 0) == 0);
  CHECK_THAT(text, Contains("]]], \"biases\": [[["));
  CHECK_THAT(text, Contains("]]], \"cost\": \"CrossEntropyCost\"}"));
  CHECK(json_shape(text) ==
        "{sizes:[3*num],weights:[1*[3*[2*num]],1*[1*[3*num]]],biases:[1*[3*[1*num]],1*[1*[1*"
        "num]]],cost:str}");
  // A network network2 cannot express adds "activations", which network2 ignores.
  CHECK(json_shape(to_json(Mixed<TestType>(1))) ==
        "{sizes:[3*num],weights:[1*[3*[2*num]],1*[1*[3*num]]],biases:[1*[3*[1*num]],1*[1*[1*"
        "num]]],cost:str,activations:[2*str]}");
  CHECK_THAT(to_json(Mixed<TestType>(1)), Contains("\"activations\": [\"sigmoid\", \"tanh\"]}"));
}

TEMPLATE_TEST_CASE("JSON load reports wrong sizes, shapes and activations", "[model_io][json]",
                   float, double) {
  Sig<TestType> net(1);
  CHECK_THAT(load_json_error(net, to_json(Wider<TestType>(2))),
             Equals("load_json: file has sizes [2, 4, 1], this network has [2, 3, 1]"));
  CHECK_THAT(load_json_error(net, to_json(Deeper<TestType>(2))),
             Equals("load_json: file has sizes [2, 3, 3, 1], this network has [2, 3, 1]"));
  CHECK_THAT(load_json_error(net, network2_json("[[[0.1, -0.2], [0.3, 1.5], [-1.25, 2.0]]]")),
             Equals("load_json: \"weights\" has 1 layers, this network has 2"));
  CHECK_THAT(load_json_error(net, network2_json("[[[0.1, -0.2], [0.3, 1.5, 7], [-1.25, 2.0]], "
                                                "[[0.5, -0.75, 1e-10]]]")),
             Equals("load_json: weights[0][1] has 3 numbers, layer 0 of this network has 2 "
                    "inputs"));
  CHECK_THAT(load_json_error(net, network2_json("[[[0.1, -0.2], [0.3, 1.5]], "
                                                "[[0.5, -0.75, 1e-10]]]")),
             Equals("load_json: weights[0] has 2 rows, layer 0 of this network has 3 outputs"));
  CHECK_THAT(
      load_json_error(
          net, network2_json("[[[0.1, -0.2], [0.3, 1.5], [-1.25, 2.0]], [[0.5, -0.75, 1e-10]]]",
                             "[[[0.0], [-1.0, 2.0], [3.1]], [[-2.5e-08]]]")),
      Contains("biases[0][1] has 2 numbers, expected exactly 1"));
  const std::string flat_biases =
      network2_json("[[[0.1, -0.2], [0.3, 1.5], [-1.25, 2.0]], [[0.5, -0.75, 1e-10]]]",
                    "[[0.0, -1.0, 3.1], [-2.5e-08]]");
  CHECK_THAT(load_json_error(net, flat_biases),
             Contains("line 1, column " + std::to_string(flat_biases.find("[[0.0") + 3) +
                      ": biases[0][0] must be an array of numbers, found a number"));
  CHECK_THAT(load_json_error(net, "{\"weights\": [], \"biases\": []}"),
             Contains("the file has no \"sizes\""));
  Mixed<TestType> mixed(2);
  CHECK_THAT(load_json_error(
                 mixed, network2_json("[[[0.1, -0.2], [0.3, 1.5], [-1.25, 2.0]], [[0.5, -0.75, "
                                      "1e-10]]]",
                                      "[[[0.0], [-1.0], [3.14159]], [[-2.5e-08]]]",
                                      ", \"activations\": [\"sigmoid\", \"relu\"]")),
             Equals("load_json: activation of layer 1 is 'relu' in the file, 'tanh' in this "
                    "network"));
  CHECK_THAT(load_json_error(net, to_json(mixed)),
             Equals("load_json: activation of layer 1 is 'tanh' in the file, 'sigmoid' in "
                    "this network"));
}

TEMPLATE_TEST_CASE("Malformed JSON throws with a position and leaves the network unchanged",
                   "[model_io][json]", float, double) {
  Sig<TestType> net(1);
  CHECK_THAT(load_json_error(net, "{\"sizes\": [2, 3, 1],\n \"weights\": [[[0.1 0.2]]]}"),
             Equals("load_json: syntax error at line 2, column 20: expected ',' or ']' after an "
                    "array element, found '0'"));
  const std::string with_nan =
      network2_json("[[[NaN, -0.2], [0.3, 1.5], [-1.25, 2.0]], [[0.5, -0.75, 1e-10]]]");
  CHECK_THAT(load_json_error(net, with_nan),
             Contains("line 1, column " + std::to_string(with_nan.find("NaN") + 1) +
                      ": NaN is not valid JSON"));
  CHECK_THAT(load_json_error(net, network2_json("[[[-Infinity, 0], [0.3, 1.5], [-1, 2.0]], "
                                                "[[0.5, -0.75, 1e-10]]]")),
             Contains("-Infinity is not valid JSON"));
  CHECK_THAT(load_json_error(net, network2_json("[[[1e400, 0], [0.3, 1.5], [-1, 2.0]], "
                                                "[[0.5, -0.75, 1e-10]]]")),
             Contains("weights[0][0][0] = 1e400 is out of the range of double"));
  CHECK_THAT(load_json_error(net, network2_json("[[[\"0.1\", 0], [0.3, 1.5], [-1, 2.0]], "
                                                "[[0.5, -0.75, 1e-10]]]")),
             Contains("weights[0][0][0] must be a number, found a string"));
  CHECK_THAT(load_json_error(net, network2_json() + " x"), Contains("after the end of the top"));
  CHECK_THAT(load_json_error(net, "{\"sizes\": [2, 3, 1],}"), Contains("expected a member name"));
  CHECK_THAT(load_json_error(net, "{\"sizes\": [2, 3, 1,]}"), Contains("trailing comma"));
  CHECK_THAT(load_json_error(net, "{\"sizes\": [2, 03, 1]}"), Contains("leading zeros"));
  CHECK_THAT(load_json_error(net, "{\"sizes\": [2, 3.5, 1]}"),
             Contains("sizes[1] must be a positive integer, found 3.5"));
  CHECK_THAT(load_json_error(net, "{\"cost\": \"a\\qb\"}"), Contains("invalid escape"));
  CHECK_THAT(load_json_error(net, "{\"cost\": \"\\ud800\"}"), Contains("unpaired high surrogate"));
  CHECK_THAT(load_json_error(net, "{\"cost\": \"\xC3\x28\"}"), Contains("invalid UTF-8"));
  CHECK_THAT(load_json_error(net, "{\"cost\": \"abc"), Contains("unterminated string"));
  CHECK_THAT(load_json_error(net, "{\"sizes\": [2, 3, 1], \"sizes\": [2, 3, 1]}"),
             Contains("duplicate key \"sizes\""));
  CHECK_THAT(load_json_error(net, "[2, 3, 1]"), Contains("the top level must be an object"));
  CHECK_THAT(load_json_error(net, ""),
             Contains("line 1, column 1: expected a value, found the end"));
  CHECK_THAT(load_json_error(net, "{\"sizes\": tru}"), Contains("column 11: invalid literal"));
  // Deep nesting is refused at the depth limit instead of exhausting the stack.
  const std::string deep = std::string(10000, '[') + std::string(10000, ']');
  CHECK_THAT(load_json_error(net, "{\"x\": " + deep + "}"), Contains("nested deeper than 128"));
  CHECK_THAT(load_json_error(net, deep), Contains("the top level must be an object"));
  std::string deep_objects = "{";
  for (int i = 0; i < 10000; ++i) deep_objects += "\"a\": {";
  CHECK_THAT(load_json_error(net, deep_objects), Contains("nested deeper than 128"));
  // Unknown keys are skipped (network2 ignores them too).
  const std::string nested = std::string(100, '[') + std::string(100, ']');
  CHECK_NOTHROW(load_json_string(net, network2_json() + " " /* trailing whitespace is fine */));
  Sig<TestType> copy = net;
  std::string with_extra = network2_json();
  with_extra.insert(1, "\"extra\": " + nested + ", ");
  CHECK_NOTHROW(load_json_string(copy, with_extra));
  CHECK(copy == net);
}

TEST_CASE("Load errors from a path name the file", "[model_io]") {
  TempDir dir;
  Sig<double> net(1);
  const fs::path missing = dir.path / "missing.bpnn";
  CHECK_THROWS_MATCHES(net.load(missing), bp::ModelFormatError,
                       Catch::Matchers::Message("load: cannot open '" + missing.string() +
                                                "': No such file or directory"));
  CHECK_THROWS_AS(net.load_json(missing), bp::ModelFormatError);
  CHECK_THROWS_WITH(net.load(dir.path), Contains("is a directory"));
  Deeper<double>(2).save(dir.path / "deeper.bpnn");
  CHECK_THROWS_WITH(net.load(dir.path / "deeper.bpnn"),
                    Equals("load: '" + (dir.path / "deeper.bpnn").string() +
                           "': file has 3 layers, this network has 2"));
  write_file(dir.path / "bad.json", "{\n\"sizes\": [2, 3, 1]\n\"weights\": []}");
  CHECK_THROWS_WITH(net.load_json(dir.path / "bad.json"),
                    Contains("load_json: '" + (dir.path / "bad.json").string() +
                             "': syntax error at line 3, column 1"));
}

TEST_CASE("A failed save leaves the old file intact and no temporary file", "[model_io][atomic]") {
  TempDir dir;
  const fs::path file = dir.path / "model.bpnn";
  const Sig<double> old_net(1), new_net(2);
  old_net.save(file);
  const std::string old_bytes = file_contents(file);

  SECTION("the writer fails half-way") {
    CHECK_THROWS_WITH(bp::detail::save_to_path(file,
                                               [&](std::ostream& os) {
                                                 os << "partial";
                                                 throw std::runtime_error("disk on fire");
                                               }),
                      Equals("save: cannot write '" + file.string() + "': disk on fire"));
  }
  SECTION("the target is a directory") {
    fs::create_directory(dir.path / "sub");
    CHECK_THROWS_WITH(new_net.save(dir.path / "sub"), Contains("'" + (dir.path / "sub").string()));
    CHECK(fs::is_empty(dir.path / "sub"));
  }
  SECTION("the directory does not exist") {
    CHECK_THROWS_AS(new_net.save_json(dir.path / "nope" / "m.json"), std::runtime_error);
  }
#if BP_TEST_POSIX
  SECTION("the directory is not writable") {
    if (::geteuid() == 0) {
      WARN("running as root: a read-only directory is writable, case skipped");
    } else {
      REQUIRE(::chmod(dir.path.c_str(), 0500) == 0);
      CHECK_THROWS_WITH(new_net.save(file), Contains("'" + file.string() + "'"));
      CHECK_THROWS_AS(new_net.save_json(file), std::runtime_error);
      REQUIRE(::chmod(dir.path.c_str(), 0700) == 0);
    }
  }
#endif
  CHECK(file_contents(file) == old_bytes);
  std::vector<std::string> names = dir.entries();
  names.erase(std::remove(names.begin(), names.end(), "sub"), names.end());
  CHECK(names == std::vector<std::string>{"model.bpnn"});
}

#if BP_TEST_POSIX
TEST_CASE("A save killed at any moment leaves a complete model", "[model_io][atomic][crash]") {
  using Huge =
      bp::BasicNetwork<double, bp::Dense<784, 1000, bp::Sigmoid>, bp::Dense<1000, 10, bp::Sigmoid>>;
  TempDir dir;
  const fs::path file = dir.path / "model.bpnn";
  const Huge original(1), a(2), b(3);
  const auto start = std::chrono::steady_clock::now();
  original.save(file);
  // Kill times spread over about three saves, so that kills land before, during and
  // between saves of a and b on any machine (the seed fixes the sequence of fractions).
  const auto save_us = std::chrono::duration_cast<std::chrono::microseconds>(
                           std::chrono::steady_clock::now() - start)
                           .count();
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<long long> delay_us(0, std::max<long long>(3 * save_us, 1000));
  constexpr int iterations = 25;
  int seen_original = 0, seen_a = 0, seen_b = 0;
  Huge loaded(4);
  for (int it = 0; it < iterations; ++it) {
    const ::pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      // Save a and b alternately until killed (or for at most 10 s).
      const auto stop = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      for (unsigned k = 0; std::chrono::steady_clock::now() < stop; ++k) {
        try {
          ((k % 2 == 0) ? a : b).save(file);
        } catch (...) {
          ::_exit(2);
        }
      }
      ::_exit(0);
    }
    ::usleep(static_cast<useconds_t>(delay_us(rng)));
    ::kill(child, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    INFO("iteration " << it);
    REQUIRE_NOTHROW(loaded.load(file));
    const bool is_original = loaded == original, is_a = loaded == a, is_b = loaded == b;
    REQUIRE((is_original || is_a || is_b));
    seen_original += is_original;
    seen_a += is_a;
    seen_b += is_b;
    // A killed writer may leave its temporary file; only such files may exist.
    for (const auto& name : dir.entries()) {
      if (name == "model.bpnn") continue;
      CHECK(name.rfind("model.bpnn.tmp-" + std::to_string(child) + "-", 0) == 0);
      fs::remove(dir.path / name);
    }
  }
  CHECK(seen_original + seen_a + seen_b == iterations);
}
#endif

// ---- Compatibility fixtures -------------------------------------------------------------
// tests/fixtures/ holds models saved by the code of commit 2352796 (before the refactor of
// network.hpp and the layers) and, per model, the outputs that code computed for a fixed
// input matrix (see tests/fixtures/make_fixtures.cpp for the networks and the .txt
// format). Loading them must give the same outputs; saving them again must give the same
// bytes, so the binary and JSON formats are unchanged.

#ifndef BACKPROP_FIXTURE_DIR
#error "BACKPROP_FIXTURE_DIR must name tests/fixtures (see tests/CMakeLists.txt)"
#endif

namespace {

// The fixture networks, exactly as in tests/fixtures/make_fixtures.cpp.
template <class T>
using CompatDenseF32 =
    bp::BasicNetwork<T, bp::Dense<6, 5, bp::Sigmoid>, bp::Dense<5, 3, bp::Softmax>>;
template <class T>
using CompatDenseF64 = bp::BasicNetwork<T, bp::Dense<4, 7, bp::Tanh>, bp::Dense<7, 6, bp::ReLU>,
                                        bp::Dense<6, 2, bp::Identity>>;
template <class T>
using CompatDropoutF32 =
    bp::BasicNetwork<T, bp::DropoutDense<5, 8, bp::LeakyReLU, std::ratio<1, 2>>,
                     bp::Dense<8, 3, bp::Sigmoid>>;
template <class T>
using CompatDropoutF32AsDense =
    bp::BasicNetwork<T, bp::Dense<5, 8, bp::LeakyReLU>, bp::Dense<8, 3, bp::Sigmoid>>;
template <class T>
using CompatDropoutF64 = bp::BasicNetwork<T, bp::DropoutDense<5, 8, bp::Sigmoid, std::ratio<1, 2>>,
                                          bp::Dense<8, 3, bp::Tanh>>;
template <class T>
using CompatDropoutF64AsDense =
    bp::BasicNetwork<T, bp::Dense<5, 8, bp::Sigmoid>, bp::Dense<8, 3, bp::Tanh>>;
template <class T>
using CompatSigmoid =
    bp::BasicNetwork<T, bp::Dense<3, 4, bp::Sigmoid>, bp::Dense<4, 2, bp::Sigmoid>>;
template <class T>
using CompatMixed = bp::BasicNetwork<T, bp::Dense<3, 5, bp::Tanh>, bp::Dense<5, 2, bp::Identity>>;

const fs::path compat_dir{BACKPROP_FIXTURE_DIR};

/// Output tolerance, relative for |expected| >= 1 and absolute below. Not 0: the last
/// bits of the sums and of Eigen's vectorised exp/tanh depend on the instruction set and
/// on the path (a batch or one column), so outputs agree bit for bit only for whole
/// batches built with the fixtures' flags (g++, default x86-64). With the code of commit
/// 2352796 the largest deviation measured, with g++ and clang -march=native (AVX-512,
/// FMA, as CI's clang and ASan stages), was 4.8e-7 for float and 4.2e-16 for double.
/// The parameters are compared exactly (bytes saved again, converted values).
template <class T>
constexpr double compat_tolerance = std::is_same_v<T, float> ? 1e-6 : 1e-12;

/// The blocks of a fixture's .txt file.
struct CompatExpectation {
  Eigen::MatrixXd input, output, converted;
};

CompatExpectation read_compat_expectation(const fs::path& txt) {
  INFO("reading " << txt.string());
  std::ifstream is(txt);
  REQUIRE(is.is_open());
  CompatExpectation e;
  std::vector<std::string> names;
  std::string line;
  const auto next_line = [&] {
    while (std::getline(is, line)) {
      if (!line.empty() && line[0] != '#') return true;
    }
    return false;
  };
  while (next_line()) {
    std::istringstream header(line);
    std::string name;
    long long rows = 0, cols = 0;
    header >> name >> rows >> cols;
    REQUIRE(header);
    REQUIRE(rows > 0);
    REQUIRE(cols > 0);
    Eigen::MatrixXd m(rows, cols);
    for (long long r = 0; r < rows; ++r) {
      REQUIRE(next_line());
      std::istringstream row(line);
      std::string token;
      for (long long c = 0; c < cols; ++c) {
        REQUIRE(row >> token);
        double v = 0;
        const auto res = std::from_chars(token.data(), token.data() + token.size(), v);
        REQUIRE(res.ec == std::errc());
        REQUIRE(res.ptr == token.data() + token.size());
        m(r, c) = v;
      }
      REQUIRE_FALSE(row >> token);
    }
    if (name == "input") {
      e.input = m;
    } else if (name == "output") {
      e.output = m;
    } else if (name == "converted") {
      e.converted = m;
    }
    names.push_back(name);
  }
  REQUIRE(names == std::vector<std::string>{"input", "output", "converted"});
  REQUIRE(e.output.cols() == e.input.cols());
  REQUIRE(e.converted.rows() == e.output.rows());
  REQUIRE(e.converted.cols() == e.output.cols());
  return e;
}

/// Requires every coefficient of `got` to be within `tol` of `expected` (see above).
template <class Derived>
void check_compat_close(const Eigen::MatrixBase<Derived>& got, const Eigen::MatrixXd& expected,
                        double tol) {
  REQUIRE(got.rows() == expected.rows());
  REQUIRE(got.cols() == expected.cols());
  for (Eigen::Index c = 0; c < got.cols(); ++c) {
    for (Eigen::Index r = 0; r < got.rows(); ++r) {
      INFO("output (" << r << ", " << c << ")");
      CHECK_THAT(static_cast<double>(got(r, c)),
                 Catch::Matchers::WithinRel(expected(r, c), tol) ||
                     Catch::Matchers::WithinAbs(expected(r, c), tol));
    }
  }
}

/// feedforward of the whole input matrix and of each column alone gives `expected`.
template <class Net>
void check_compat_outputs(const Net& net, const CompatExpectation& fx,
                          const Eigen::MatrixXd& expected) {
  using T = typename Net::Scalar;
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> x = fx.input.cast<T>();
  REQUIRE(x.template cast<double>() == fx.input);  // inputs are exact in float
  {
    INFO("feedforward of all " << x.cols() << " columns");
    check_compat_close(net.feedforward(x), expected, compat_tolerance<T>);
  }
  for (Eigen::Index c = 0; c < x.cols(); ++c) {
    INFO("feedforward of column " << c << " alone");
    check_compat_close(net.feedforward(x.col(c)), expected.col(c), compat_tolerance<T>);
  }
}

/// Offset of the first byte where `a` and `b` differ (or of the shorter one's end); -1 if
/// they are equal. Keeps binary contents out of failure messages.
long long first_difference(const std::string& a, const std::string& b) {
  const auto m = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  if (m.first == a.end() && m.second == b.end()) return -1;
  return static_cast<long long>(m.first - a.begin());
}

bool is_json_fixture(const fs::path& file) { return file.extension() == ".json"; }

template <class Net>
Net load_compat_fixture(const fs::path& file, const std::string& cost) {
  Net net(999);
  if (is_json_fixture(file)) {
    CHECK(net.load_json(file) == cost);
  } else {
    net.load(file);
  }
  return net;
}

/// True if `b`'s parameters are `a`'s converted to `b`'s scalar type (float -> double
/// exactly, double -> float rounded to nearest, as a cast).
template <class A, class B>
bool converted_parameters(const A& a, const B& b) {
  using S = typename B::Scalar;
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    return (
        (b.template layer<I>().weights() == a.template layer<I>().weights().template cast<S>() &&
         b.template layer<I>().biases() == a.template layer<I>().biases().template cast<S>()) &&
        ...);
  }
  (std::make_index_sequence<A::num_layers>{});
}

/// Checks fixture `name`: loaded into `Net` (its own scalar type) and into each of
/// `Same...` (its scalar type, other layer types with the same parameters), it gives
/// the recorded outputs and saves to the fixture's bytes; loaded into `Other` (the other
/// scalar type), it has the converted parameters and gives the recorded converted outputs.
/// `cost` is the cost name of a JSON fixture.
template <class Net, class Other, class... Same>
void check_compat_fixture(const std::string& name, const std::string& cost = "") {
  const fs::path file = compat_dir / name;
  INFO("fixture " << file.string());
  const CompatExpectation fx = read_compat_expectation(fs::path(file).replace_extension(".txt"));
  const std::string bytes = file_contents(file);
  REQUIRE_FALSE(bytes.empty());

  const auto check_same_type = [&]<class N>(std::type_identity<N>, const char* what) {
    INFO("loaded into " << what);
    const N net = load_compat_fixture<N>(file, cost);
    check_compat_outputs(net, fx, fx.output);
    TempDir dir;
    const fs::path again = dir.path / file.filename();
    if (is_json_fixture(file)) {
      net.save_json(again, cost);
    } else {
      net.save(again);
    }
    CHECK(first_difference(file_contents(again), bytes) == -1);
  };
  check_same_type(std::type_identity<Net>{}, "a network of the file's scalar type");
  (check_same_type(std::type_identity<Same>{}, "the same network built from Dense layers"), ...);

  INFO("loaded into a network of the other scalar type");
  const Net native = load_compat_fixture<Net>(file, cost);
  const Other other = load_compat_fixture<Other>(file, cost);
  CHECK(converted_parameters(native, other));
  check_compat_outputs(other, fx, fx.converted);
}

}  // namespace

TEST_CASE("Binary models saved by commit 2352796 load to their outputs and save to their bytes",
          "[model_io][compat][binary]") {
  SECTION("float Dense<6, 5, Sigmoid>, Dense<5, 3, Softmax>") {
    check_compat_fixture<CompatDenseF32<float>, CompatDenseF32<double>>("compat_f32_dense.bpnn");
  }
  SECTION("double Dense<4, 7, Tanh>, Dense<7, 6, ReLU>, Dense<6, 2, Identity>") {
    check_compat_fixture<CompatDenseF64<double>, CompatDenseF64<float>>("compat_f64_dense.bpnn");
  }
}

TEST_CASE("Binary models with a DropoutDense layer saved by commit 2352796 load and save alike",
          "[model_io][compat][binary]") {
  SECTION("float DropoutDense<5, 8, LeakyReLU>, Dense<8, 3, Sigmoid>") {
    check_compat_fixture<CompatDropoutF32<float>, CompatDropoutF32<double>,
                         CompatDropoutF32AsDense<float>>("compat_f32_dropout.bpnn");
  }
  SECTION("double DropoutDense<5, 8, Sigmoid>, Dense<8, 3, Tanh>") {
    check_compat_fixture<CompatDropoutF64<double>, CompatDropoutF64<float>,
                         CompatDropoutF64AsDense<double>>("compat_f64_dropout.bpnn");
  }
}

TEST_CASE("network2 JSON models saved by commit 2352796 load to their outputs, cost and bytes",
          "[model_io][compat][json]") {
  SECTION("float all-sigmoid 3-4-2, CrossEntropyCost") {
    check_compat_fixture<CompatSigmoid<float>, CompatSigmoid<double>>("compat_f32_sigmoid.json",
                                                                      "CrossEntropyCost");
  }
  SECTION("double all-sigmoid 3-4-2, CrossEntropyCost") {
    check_compat_fixture<CompatSigmoid<double>, CompatSigmoid<float>>("compat_f64_sigmoid.json",
                                                                      "CrossEntropyCost");
  }
  SECTION("float Dense<3, 5, Tanh>, Dense<5, 2, Identity> (with \"activations\")") {
    check_compat_fixture<CompatMixed<float>, CompatMixed<double>>("compat_f32_mixed.json",
                                                                  "QuadraticCost");
  }
  SECTION("double Dense<3, 5, Tanh>, Dense<5, 2, Identity> (with \"activations\")") {
    check_compat_fixture<CompatMixed<double>, CompatMixed<float>>("compat_f64_mixed.json",
                                                                  "QuadraticCost");
  }
  SECTION("the all-sigmoid files have exactly network2's keys, the others add activations") {
    for (const char* name : {"compat_f32_sigmoid.json", "compat_f64_sigmoid.json"}) {
      const std::string text = file_contents(compat_dir / name);
      INFO(name);
      CHECK(json_shape(text) ==
            "{sizes:[3*num],weights:[1*[4*[3*num]],1*[2*[4*num]]],biases:[1*[4*[1*num]],1*[2*[1*"
            "num]]],cost:str}");
    }
    for (const char* name : {"compat_f32_mixed.json", "compat_f64_mixed.json"}) {
      INFO(name);
      CHECK_THAT(
          file_contents(compat_dir / name),
          Contains("\"cost\": \"QuadraticCost\", \"activations\": [\"tanh\", \"identity\"]}"));
    }
  }
}
