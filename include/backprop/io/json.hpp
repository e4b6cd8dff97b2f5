/// \file
/// \brief Reading and writing the JSON model files of Nielsen's network2.py.
///
/// network2's `save` writes, with Python's `json.dump`:
///
///     {"sizes": [784, 30, 10],
///      "weights": [[[w00, w01, ...], [w10, ...], ...], ...],
///      "biases": [[[b0], [b1], ...], ...],
///      "cost": "CrossEntropyCost"}
///
/// `weights` holds one list of rows per layer (Out rows of In numbers), `biases` one
/// list of one-element rows per layer. network2 has no activations (every layer is a
/// sigmoid), so:
/// - `save_json` writes exactly these four keys for an all-sigmoid network, and adds
///   `"activations": ["sigmoid", "tanh", ...]` (one `name` per layer) when any layer
///   is not a sigmoid. network2's `load` ignores unknown keys, so such a file still
///   loads there (as sigmoids).
/// - `load_json` checks `"activations"` against the network when the key is present
///   and ignores the activations when it is absent (a network2 file can seed a network
///   with other activations).
///
/// Numbers are written with 17 significant digits, which round-trips every double
/// (and hence every float) exactly. Loading checks the sizes against the network, the
/// row and column counts of every matrix, that every value is finite and, for float
/// networks, within float's range (values are rounded to the nearest float). Python's
/// `NaN` / `Infinity` extensions are not JSON and are rejected. The parser is strict
/// (RFC 8259, UTF-8), bounds-checked and limits nesting to `json_max_depth`; syntax
/// errors report line and column. Every error throws `ModelFormatError`, and the
/// network is changed only after the whole file has been validated.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <iterator>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "../errors.hpp"
#include "model.hpp"

namespace backprop::detail {

/// Deepest nesting of arrays and objects the JSON parser accepts (model files need 4).
inline constexpr std::size_t json_max_depth = 128;

/// Length of the well-formed UTF-8 sequence starting at `s[i]`, or 0 if it is not one
/// (overlong forms, surrogates and code points above U+10FFFF are not well-formed).
[[nodiscard]] inline std::size_t json_utf8_length(std::string_view s, std::size_t i) noexcept {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  std::size_t n = 0;
  std::uint32_t cp = 0, min = 0;
  if ((b0 & 0xE0U) == 0xC0U) {
    n = 2, cp = b0 & 0x1FU, min = 0x80;
  } else if ((b0 & 0xF0U) == 0xE0U) {
    n = 3, cp = b0 & 0x0FU, min = 0x800;
  } else if ((b0 & 0xF8U) == 0xF0U) {
    n = 4, cp = b0 & 0x07U, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0U) != 0x80U) return 0;
    cp = (cp << 6) | (b & 0x3FU);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

[[nodiscard]] inline bool json_valid_utf8(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = json_utf8_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

/// Appends `s` as a JSON string literal. \pre `s` is valid UTF-8.
inline void json_append_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (u < 0x20) {
      out += "\\u00";
      out += hex[u >> 4];
      out += hex[u & 0xFU];
    } else {
      out += ch;
    }
  }
  out += '"';
}

/// \brief A strict pull parser over a complete JSON text (RFC 8259).
///
/// The caller walks the document: `peek()` classifies the next value, then exactly
/// one of `begin_object` / `begin_array` / `number` / `string` / `boolean` / `null` /
/// `skip_value` consumes it. Containers are iterated with
/// `for (std::size_t i = 0; p.next_element(i); ++i) { ...one value... }` (and
/// `next_member(i, key)` for objects), which handle commas and the closing bracket.
/// Every error throws `ModelFormatError` with "<context>: syntax error at line L,
/// column C: ...". Never reads outside the text; recursion is bounded by the depth limit.
template <class = void>
class BasicModelJsonParser {
 public:
  enum class Kind { object, array, string, number, boolean, null };

  /// \param text the whole document (must outlive the parser)
  /// \param context prefix of error messages, e.g. "load_json"
  explicit BasicModelJsonParser(std::string_view text, std::string context = "load_json")
      : m_text(text), m_context(std::move(context)) {}

  /// \brief The kind of the next value (whitespace skipped). \throws on anything else.
  [[nodiscard]] Kind peek() {
    skip_whitespace();
    if (m_pos >= m_text.size()) syntax_error("expected a value, found the end of the input");
    switch (m_text[m_pos]) {
      case '{':
        return Kind::object;
      case '[':
        return Kind::array;
      case '"':
        return Kind::string;
      case 't':
      case 'f':
      case 'n': {
        const std::string_view rest = m_text.substr(m_pos);
        if (rest.starts_with("true") || rest.starts_with("false")) return Kind::boolean;
        if (rest.starts_with("null")) return Kind::null;
        syntax_error("invalid literal (expected true, false or null), found " + describe_here());
      }
      case '-':
        if (m_pos + 1 < m_text.size() && m_text[m_pos + 1] == 'I') not_json_number("-Infinity");
        return Kind::number;
      case 'N':
        not_json_number("NaN");
      case 'I':
        not_json_number("Infinity");
      default:
        if (m_text[m_pos] >= '0' && m_text[m_pos] <= '9') return Kind::number;
        syntax_error("expected a value, found " + describe_here());
    }
  }

  /// \brief "an object", "a number", ... for messages.
  [[nodiscard]] static const char* kind_name(Kind k) noexcept {
    switch (k) {
      case Kind::object:
        return "an object";
      case Kind::array:
        return "an array";
      case Kind::string:
        return "a string";
      case Kind::number:
        return "a number";
      case Kind::boolean:
        return "a boolean";
      case Kind::null:
        return "null";
    }
    return "a value";
  }

  void begin_object() { open('{'); }
  void begin_array() { open('['); }

  /// \brief Before member `index` (0-based) of the current object: consumes the ','
  /// and the key with its ':' and returns true, or consumes the '}' and returns false.
  bool next_member(std::size_t index, std::string& key) {
    skip_whitespace();
    if (m_pos < m_text.size() && m_text[m_pos] == '}') {
      ++m_pos;
      --m_depth;
      return false;
    }
    if (index > 0) {
      expect(',', "expected ',' or '}' after an object member");
      skip_whitespace();
    }
    if (m_pos >= m_text.size() || m_text[m_pos] != '"') {
      syntax_error(std::string(index > 0 ? "expected a member name (a string)"
                                         : "expected a member name (a string) or '}'") +
                   ", found " + describe_here());
    }
    key = string();
    skip_whitespace();
    expect(':', "expected ':' after the member name");
    return true;
  }

  /// \brief Before element `index` (0-based) of the current array: consumes the ','
  /// and returns true, or consumes the ']' and returns false.
  bool next_element(std::size_t index) {
    skip_whitespace();
    if (m_pos < m_text.size() && m_text[m_pos] == ']') {
      ++m_pos;
      --m_depth;
      return false;
    }
    if (index > 0) {
      expect(',', "expected ',' or ']' after an array element");
      skip_whitespace();
      if (m_pos < m_text.size() && m_text[m_pos] == ']') {
        syntax_error("expected a value after ',', found ']' (trailing commas are not JSON)");
      }
    }
    return true;
  }

  /// \brief Parses a number. Out-of-range magnitudes give +-infinity (too large) or
  /// +-0 (too small), as Python's json does; `last_number_text()` has the literal.
  double number() {
    skip_whitespace();
    const std::size_t start = m_pos;
    if (peek_char() == '-') ++m_pos;
    const char first = peek_char();
    if (first == '0') {
      ++m_pos;
      if (is_digit(peek_char())) syntax_error("leading zeros are not allowed in JSON numbers");
    } else if (is_digit(first)) {
      while (is_digit(peek_char())) ++m_pos;
    } else {
      syntax_error("expected a digit, found " + describe_here());
    }
    if (peek_char() == '.') {
      ++m_pos;
      if (!is_digit(peek_char()))
        syntax_error("expected a digit after '.', found " + describe_here());
      while (is_digit(peek_char())) ++m_pos;
    }
    if (peek_char() == 'e' || peek_char() == 'E') {
      ++m_pos;
      if (peek_char() == '+' || peek_char() == '-') ++m_pos;
      if (!is_digit(peek_char())) {
        syntax_error("expected a digit in the exponent, found " + describe_here());
      }
      while (is_digit(peek_char())) ++m_pos;
    }
    m_number_start = start;
    m_number_text = m_text.substr(start, m_pos - start);
    // from_chars accepts no leading '+' and never reads beyond the token.
    double v = 0.0;
    const auto r =
        std::from_chars(m_number_text.data(), m_number_text.data() + m_number_text.size(), v);
    if (r.ec == std::errc::result_out_of_range) {
      const bool negative = m_number_text.front() == '-';
      v = decimal_exponent(m_number_text) >= 0 ? std::numeric_limits<double>::infinity() : 0.0;
      if (negative) v = -v;
    } else if (r.ec != std::errc() || r.ptr != m_number_text.data() + m_number_text.size()) {
      syntax_error("invalid number " + std::string(m_number_text), start);
    }
    return v;
  }

  /// \brief The text of the number last returned by `number()`, and where it started.
  [[nodiscard]] std::string_view last_number_text() const noexcept { return m_number_text; }
  [[nodiscard]] std::size_t last_number_position() const noexcept { return m_number_start; }

  /// \brief Parses a string, resolving escapes; returns it as UTF-8.
  std::string string() {
    skip_whitespace();
    if (peek_char() != '"') syntax_error("expected a string, found " + describe_here());
    ++m_pos;
    std::string out;
    while (true) {
      if (m_pos >= m_text.size()) syntax_error("unterminated string");
      const char ch = m_text[m_pos];
      const auto u = static_cast<unsigned char>(ch);
      if (ch == '"') {
        ++m_pos;
        return out;
      }
      if (ch == '\\') {
        escape(out);
      } else if (u < 0x20) {
        syntax_error("control character " + describe_here() + " in a string (escape it)");
      } else {
        const std::size_t n = json_utf8_length(m_text, m_pos);
        if (n == 0) syntax_error("invalid UTF-8 in a string at " + describe_here());
        out.append(m_text.substr(m_pos, n));
        m_pos += n;
      }
    }
  }

  bool boolean() {
    skip_whitespace();
    if (m_text.substr(m_pos, 4) == "true") {
      m_pos += 4;
      return true;
    }
    if (m_text.substr(m_pos, 5) == "false") {
      m_pos += 5;
      return false;
    }
    syntax_error("expected true or false, found " + describe_here());
  }

  void null() {
    skip_whitespace();
    if (m_text.substr(m_pos, 4) != "null") syntax_error("expected null, found " + describe_here());
    m_pos += 4;
  }

  /// \brief Parses and discards one value of any kind (checking its syntax).
  void skip_value() {
    switch (peek()) {
      case Kind::object: {
        begin_object();
        std::string key;
        for (std::size_t i = 0; next_member(i, key); ++i) skip_value();
        break;
      }
      case Kind::array:
        begin_array();
        for (std::size_t i = 0; next_element(i); ++i) skip_value();
        break;
      case Kind::string:
        (void)string();
        break;
      case Kind::number:
        (void)number();
        break;
      case Kind::boolean:
        (void)boolean();
        break;
      case Kind::null:
        null();
        break;
    }
  }

  /// \brief Checks that only whitespace follows the top-level value.
  void finish() {
    skip_whitespace();
    if (m_pos != m_text.size()) {
      syntax_error("unexpected " + describe_here() + " after the end of the top-level value");
    }
  }

  /// \brief Offset of the next non-whitespace byte.
  [[nodiscard]] std::size_t position() {
    skip_whitespace();
    return m_pos;
  }

  /// \brief "line L, column C" (1-based; columns count bytes) of byte offset `pos`.
  [[nodiscard]] std::string location(std::size_t pos) const {
    std::size_t line = 1, line_start = 0;
    for (std::size_t i = 0; i < pos && i < m_text.size(); ++i) {
      if (m_text[i] == '\n') {
        ++line;
        line_start = i + 1;
      }
    }
    return "line " + std::to_string(line) + ", column " + std::to_string(pos - line_start + 1);
  }

  /// \brief Throws "<context>: line L, column C: message" (for errors of content).
  [[noreturn]] void error_at(std::size_t pos, const std::string& message) const {
    throw ModelFormatError(m_context + ": " + location(pos) + ": " + message);
  }

 private:
  static bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
  [[nodiscard]] char peek_char() const noexcept {
    return m_pos < m_text.size() ? m_text[m_pos] : '\0';
  }

  void skip_whitespace() noexcept {
    while (m_pos < m_text.size() && (m_text[m_pos] == ' ' || m_text[m_pos] == '\n' ||
                                     m_text[m_pos] == '\r' || m_text[m_pos] == '\t')) {
      ++m_pos;
    }
  }

  void open(char bracket) {
    skip_whitespace();
    if (peek_char() != bracket) {
      syntax_error(std::string("expected '") + bracket + "', found " + describe_here());
    }
    if (m_depth >= json_max_depth) {
      syntax_error("arrays and objects nested deeper than " + std::to_string(json_max_depth) +
                   " levels");
    }
    ++m_pos;
    ++m_depth;
  }

  void expect(char c, const char* what) {
    if (peek_char() != c || m_pos >= m_text.size()) {
      syntax_error(std::string(what) + ", found " + describe_here());
    }
    ++m_pos;
  }

  /// The byte at the current position, for messages.
  [[nodiscard]] std::string describe_here() const {
    if (m_pos >= m_text.size()) return "the end of the input";
    const auto u = static_cast<unsigned char>(m_text[m_pos]);
    if (u > 0x20 && u < 0x7F) return std::string("'") + m_text[m_pos] + "'";
    static constexpr char hex[] = "0123456789ABCDEF";
    return std::string("byte 0x") + hex[u >> 4] + hex[u & 0xFU];
  }

  [[noreturn]] void syntax_error(const std::string& message) const { syntax_error(message, m_pos); }
  [[noreturn]] void syntax_error(const std::string& message, std::size_t pos) const {
    throw ModelFormatError(m_context + ": syntax error at " + location(pos) + ": " + message);
  }

  [[noreturn]] void not_json_number(const char* literal) const {
    syntax_error(std::string(literal) +
                 " is not valid JSON (Python's json.dump writes it for non-finite values; "
                 "models with non-finite parameters are rejected)");
  }

  /// Decimal exponent of the leading significant digit of a JSON number literal
  /// (e.g. 2 for 123.4, -3 for 0.00123e0); saturates far beyond double's range.
  static long long decimal_exponent(std::string_view t) noexcept {
    std::size_t i = (!t.empty() && t[0] == '-') ? 1 : 0;
    long long lead = 0;  // exponent of the first nonzero digit, before the e part
    bool found = false;
    long long int_digits = 0;
    for (; i < t.size() && is_digit(t[i]); ++i) {
      if (!found && t[i] != '0') found = true;
      if (found) ++int_digits;
    }
    if (found) {
      lead = int_digits - 1;
    } else if (i < t.size() && t[i] == '.') {
      long long zeros = 0;
      for (++i; i < t.size() && t[i] == '0'; ++i) ++zeros;
      lead = -(zeros + 1);
    }
    while (i < t.size() && t[i] != 'e' && t[i] != 'E') ++i;
    long long e = 0;
    if (i < t.size()) {
      ++i;
      const bool neg = i < t.size() && t[i] == '-';
      if (i < t.size() && (t[i] == '-' || t[i] == '+')) ++i;
      for (; i < t.size() && is_digit(t[i]); ++i) e = std::min(e * 10 + (t[i] - '0'), 1000000000LL);
      if (neg) e = -e;
    }
    return lead + e;
  }

  std::uint32_t hex4() {
    if (m_text.size() - m_pos < 4) syntax_error("expected 4 hex digits after \\u");
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = m_text[m_pos];
      std::uint32_t d = 0;
      if (c >= '0' && c <= '9') {
        d = static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        syntax_error("expected a hex digit in a \\u escape, found " + describe_here());
      }
      v = v * 16 + d;
      ++m_pos;
    }
    return v;
  }

  void escape(std::string& out) {
    ++m_pos;  // the backslash
    if (m_pos >= m_text.size()) syntax_error("unterminated escape sequence");
    const char c = m_text[m_pos++];
    switch (c) {
      case '"':
        out += '"';
        return;
      case '\\':
        out += '\\';
        return;
      case '/':
        out += '/';
        return;
      case 'b':
        out += '\b';
        return;
      case 'f':
        out += '\f';
        return;
      case 'n':
        out += '\n';
        return;
      case 'r':
        out += '\r';
        return;
      case 't':
        out += '\t';
        return;
      case 'u':
        break;
      default:
        --m_pos;
        syntax_error("invalid escape sequence \\" + describe_here());
    }
    std::uint32_t cp = hex4();
    if (cp >= 0xDC00 && cp <= 0xDFFF) syntax_error("unpaired low surrogate in a \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (m_text.substr(m_pos, 2) != "\\u") syntax_error("unpaired high surrogate in a \\u escape");
      m_pos += 2;
      const std::uint32_t low = hex4();
      if (low < 0xDC00 || low > 0xDFFF) syntax_error("unpaired high surrogate in a \\u escape");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string_view m_text;
  std::string m_context;
  std::size_t m_pos = 0;
  std::size_t m_depth = 0;
  std::string_view m_number_text;
  std::size_t m_number_start = 0;
};

/// The parser (a template only so that its members are compiled where a program loads JSON, not in
/// every program including the umbrella header).
using ModelJsonParser = BasicModelJsonParser<>;

/// "[784, 30, 10]" (long lists are shortened).
template <class = void>
[[nodiscard]] std::string json_sizes_text(const std::vector<long long>& sizes) {
  std::string s = "[";
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (i > 0) s += ", ";
    if (i == 16 && sizes.size() > 17) {
      s += "... (" + std::to_string(sizes.size()) + " entries)";
      break;
    }
    s += std::to_string(sizes[i]);
  }
  return s + "]";
}

/// Appends `v` with 17 significant digits (exact round trip for double and float).
template <class = void>
void json_append_number(std::string& out, double v) {
  std::array<char, 40> buf{};
  const auto r =
      std::to_chars(buf.data(), buf.data() + buf.size(), v, std::chars_format::general, 17);
  out.append(buf.data(), r.ptr);
}

/// \brief Writes `net` as network2.py's `save` does (see the top of this file).
/// \param net any backprop network
/// \param os the destination stream
/// \param cost_name the value of "cost" (network2's cost class name)
/// \throws ValueError if a parameter is not finite or `cost_name` is not valid UTF-8,
///         ShapeError if a parameter matrix was resized (nothing is written then);
///         std::runtime_error if the stream fails
/// Whether every layer of Net has Dense's parameter shapes and an activation.
template <class Net>
constexpr bool model_all_dense() {
  return []<std::size_t... I>(std::index_sequence<I...>) {
    return ((requires { typename Net::template LayerDescriptor<I>::activation; } &&
             model_weight_rows<Net, I> == model_layer_outputs<Net, I> &&
             model_weight_cols<Net, I> == model_layer_inputs<Net, I> &&
             model_bias_rows<Net, I> == model_layer_outputs<Net, I>)&&...);
  }
  (std::make_index_sequence<Net::num_layers>{});
}

template <class Net>
void save_json(const Net& net, std::ostream& os, std::string_view cost_name = "QuadraticCost") {
  static_assert(model_all_dense<Net>(),
                "backprop: network2.py's JSON holds Dense layers only (Out x In weights and Out "
                "biases per layer); save this network with save() instead");
  constexpr std::size_t num_layers = Net::num_layers;
  model_check_for_save(net, "save_json");
  if (!json_valid_utf8(cost_name)) throw ValueError("save_json: the cost name is not valid UTF-8");
  bool all_sigmoid = true;
  for_each_index<num_layers>([&](auto i) {
    const std::string_view name = model_layer_name<Net, decltype(i)::value>;
    if (!json_valid_utf8(name)) {
      throw ValueError("save_json: the activation name of layer " +
                       std::to_string(decltype(i)::value) + " is not valid UTF-8");
    }
    if (name != "sigmoid") all_sigmoid = false;
  });
  if (!os) throw std::runtime_error("save_json: the output stream is not in a good state");

  std::string out;
  const auto drain = [&](bool force) {
    if (force || out.size() >= (1U << 16)) {
      os.write(out.data(), static_cast<std::streamsize>(out.size()));
      out.clear();
    }
  };
  out += "{\"sizes\": [" + std::to_string(Net::inputs);
  for_each_index<num_layers>(
      [&](auto i) { out += ", " + std::to_string(model_layer_outputs<Net, decltype(i)::value>); });
  out += "], \"weights\": [";
  for_each_index<num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    const auto& w = net.template layer<I>().weights();
    out += I > 0 ? ", [" : "[";
    for (Eigen::Index r = 0; r < w.rows(); ++r) {
      out += r > 0 ? ", [" : "[";
      for (Eigen::Index c = 0; c < w.cols(); ++c) {
        if (c > 0) out += ", ";
        json_append_number(out, static_cast<double>(w(r, c)));
      }
      out += ']';
      drain(false);
    }
    out += ']';
  });
  out += "], \"biases\": [";
  for_each_index<num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    const auto& b = net.template layer<I>().biases();
    out += I > 0 ? ", [" : "[";
    for (Eigen::Index r = 0; r < b.rows(); ++r) {
      out += r > 0 ? ", [" : "[";
      json_append_number(out, static_cast<double>(b(r)));
      out += ']';
      drain(false);
    }
    out += ']';
  });
  out += "], \"cost\": ";
  json_append_string(out, cost_name);
  if (!all_sigmoid) {
    out += ", \"activations\": [";
    for_each_index<num_layers>([&](auto i) {
      if (decltype(i)::value > 0) out += ", ";
      json_append_string(out, model_layer_name<Net, decltype(i)::value>);
    });
    out += ']';
  }
  out += '}';
  drain(true);
  os.flush();
  if (!os) throw std::runtime_error("save_json: writing the model to the stream failed");
}

/// \brief Reads a network2.py JSON model into `net` (see the top of this file).
/// Strong guarantee: on any error `net` is unchanged.
/// \param net the network to overwrite; "sizes" must equal its layer sizes
/// \param is the source; everything up to its end must be the one JSON object
/// \returns the value of "cost" (e.g. "CrossEntropyCost"), or "" if the file has none
/// \throws ModelFormatError with line and column for syntax errors and the offending
///         key, index and values for content errors
template <class Net>
std::string load_json(Net& net, std::istream& is) {
  static_assert(model_all_dense<Net>(),
                "backprop: network2.py's JSON holds Dense layers only (Out x In weights and Out "
                "biases per layer); save this network with save() instead");
  using Scalar = typename Net::Scalar;
  using Kind = ModelJsonParser::Kind;
  constexpr std::size_t num_layers = Net::num_layers;
  if (!is) throw ModelFormatError("load_json: the input stream is not in a good state");
  const std::string text{std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>()};
  if (is.bad()) throw ModelFormatError("load_json: reading the input stream failed");

  std::vector<long long> net_sizes{Net::inputs};
  std::array<long long, num_layers> net_in{}, net_out{};
  std::array<std::string_view, num_layers> net_activations{};
  for_each_index<num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    net_in[I] = model_layer_inputs<Net, I>;
    net_out[I] = model_layer_outputs<Net, I>;
    net_sizes.push_back(net_out[I]);
    net_activations[I] = model_layer_name<Net, I>;
  });

  ModelJsonParser p(text, "load_json");
  const auto expect_kind = [&](Kind want, const std::string& what, const char* description) {
    const std::size_t at = p.position();
    const Kind got = p.peek();
    if (got != want) {
      p.error_at(at,
                 what + " must be " + description + ", found " + ModelJsonParser::kind_name(got));
    }
  };

  bool has_sizes = false, has_weights = false, has_biases = false, has_cost = false,
       has_activations = false;
  std::vector<long long> sizes;
  std::string cost;
  std::vector<std::string> activations;
  // Row-major values of each layer; only entries inside the network's shapes are kept,
  // so memory is bounded by the network's size whatever the file claims.
  std::array<std::vector<double>, num_layers> weights, biases;
  std::size_t weight_layers = 0, bias_layers = 0;
  std::string weights_shape_error, biases_shape_error, value_error;

  const auto parse_matrices = [&](bool is_weights) {
    const std::string key = is_weights ? "weights" : "biases";
    auto& values = is_weights ? weights : biases;
    std::string& shape_error = is_weights ? weights_shape_error : biases_shape_error;
    expect_kind(Kind::array, "\"" + key + "\"", "an array (one list of rows per layer)");
    p.begin_array();
    std::size_t l = 0;
    for (; p.next_element(l); ++l) {
      if (l >= num_layers) {
        p.skip_value();
        continue;
      }
      const std::string layer_name = key + "[" + std::to_string(l) + "]";
      const auto rows = static_cast<std::size_t>(net_out[l]);
      const auto cols = is_weights ? static_cast<std::size_t>(net_in[l]) : std::size_t{1};
      values[l].assign(rows * cols, 0.0);
      expect_kind(Kind::array, layer_name, "an array of rows");
      p.begin_array();
      std::size_t r = 0;
      for (; p.next_element(r); ++r) {
        const std::string row_name = layer_name + "[" + std::to_string(r) + "]";
        expect_kind(Kind::array, row_name, "an array of numbers");
        p.begin_array();
        std::size_t c = 0;
        for (; p.next_element(c); ++c) {
          expect_kind(Kind::number, row_name + "[" + std::to_string(c) + "]", "a number");
          const double v = p.number();
          if (r < rows && c < cols) values[l][r * cols + c] = v;
          if (value_error.empty()) {
            std::string problem = model_value_problem<Scalar>(v);
            if (std::isinf(v)) problem = "is out of the range of double";
            if (!problem.empty()) {
              value_error = p.location(p.last_number_position()) + ": " + row_name + "[" +
                            std::to_string(c) + "] = " + std::string(p.last_number_text()) + " " +
                            problem;
            }
          }
        }
        if (c != cols && shape_error.empty()) {
          shape_error = is_weights
                            ? row_name + " has " + std::to_string(c) + " numbers, layer " +
                                  std::to_string(l) + " of this network has " +
                                  std::to_string(cols) + " inputs"
                            : row_name + " has " + std::to_string(c) +
                                  " numbers, expected exactly 1 (network2 stores each bias as a "
                                  "one-element row)";
        }
      }
      if (r != rows && shape_error.empty()) {
        shape_error = layer_name + " has " + std::to_string(r) + " rows, layer " +
                      std::to_string(l) + " of this network has " + std::to_string(rows) +
                      " outputs";
      }
    }
    (is_weights ? weight_layers : bias_layers) = l;
  };

  {
    const std::size_t at = p.position();
    const Kind top = p.peek();
    if (top != Kind::object) {
      p.error_at(at, std::string("the top level must be an object with network2's keys "
                                 "(\"sizes\", \"weights\", \"biases\", \"cost\"), found ") +
                         ModelJsonParser::kind_name(top));
    }
  }
  p.begin_object();
  std::string key;
  for (std::size_t m = 0; p.next_member(m, key); ++m) {
    const std::size_t at = p.position();
    const auto once = [&](bool& seen) {
      if (seen) p.error_at(at, "duplicate key \"" + key + "\"");
      seen = true;
    };
    if (key == "sizes") {
      once(has_sizes);
      expect_kind(Kind::array, "\"sizes\"", "an array of layer sizes");
      p.begin_array();
      for (std::size_t k = 0; p.next_element(k); ++k) {
        const std::string name = "sizes[" + std::to_string(k) + "]";
        expect_kind(Kind::number, name, "a positive integer");
        const std::size_t number_at = p.position();
        const double v = p.number();
        if (!(v >= 1.0 && v <= 2147483647.0 && v == std::floor(v))) {
          p.error_at(number_at, name + " must be a positive integer, found " +
                                    std::string(p.last_number_text()));
        }
        sizes.push_back(static_cast<long long>(v));
      }
    } else if (key == "weights") {
      once(has_weights);
      parse_matrices(true);
    } else if (key == "biases") {
      once(has_biases);
      parse_matrices(false);
    } else if (key == "cost") {
      once(has_cost);
      expect_kind(Kind::string, "\"cost\"", "a string (the cost's class name)");
      cost = p.string();
    } else if (key == "activations") {
      once(has_activations);
      expect_kind(Kind::array, "\"activations\"", "an array of activation names");
      p.begin_array();
      for (std::size_t k = 0; p.next_element(k); ++k) {
        expect_kind(Kind::string, "activations[" + std::to_string(k) + "]", "a string");
        activations.push_back(p.string());
      }
    } else {
      p.skip_value();  // network2 ignores unknown keys too
    }
  }
  p.finish();

  for (const auto& [present, name] :
       {std::pair{has_sizes, "sizes"}, std::pair{has_weights, "weights"},
        std::pair{has_biases, "biases"}}) {
    if (!present) {
      throw ModelFormatError(std::string("load_json: the file has no \"") + name +
                             "\" (network2's files have \"sizes\", \"weights\", \"biases\" and "
                             "\"cost\")");
    }
  }
  if (sizes != net_sizes) {
    throw ModelFormatError("load_json: file has sizes " + json_sizes_text(sizes) +
                           ", this network has " + json_sizes_text(net_sizes));
  }
  const auto check_layers = [&](std::size_t got, const char* name, const std::string& shape) {
    if (got != num_layers) {
      throw ModelFormatError("load_json: \"" + std::string(name) + "\" has " + std::to_string(got) +
                             " layers, this network has " + std::to_string(num_layers));
    }
    if (!shape.empty()) throw ModelFormatError("load_json: " + shape);
  };
  check_layers(weight_layers, "weights", weights_shape_error);
  check_layers(bias_layers, "biases", biases_shape_error);
  if (has_activations) {
    if (activations.size() != num_layers) {
      throw ModelFormatError("load_json: \"activations\" has " +
                             std::to_string(activations.size()) + " entries, this network has " +
                             std::to_string(num_layers) + " layers");
    }
    for (std::size_t l = 0; l < num_layers; ++l) {
      if (activations[l] != net_activations[l]) {
        throw ModelFormatError("load_json: activation of layer " + std::to_string(l) + " is " +
                               model_quote(activations[l]) + " in the file, " +
                               model_quote(net_activations[l]) + " in this network");
      }
    }
  }
  if (!value_error.empty()) {
    throw ModelFormatError("load_json: " + value_error +
                           "; non-finite or unrepresentable parameters are rejected");
  }

  ModelParameterTuple<Net> params = model_copy_parameters(net);
  for_each_index<num_layers>([&](auto i) {
    constexpr std::size_t I = decltype(i)::value;
    auto& prm = std::get<I>(params);
    const auto cols = static_cast<std::size_t>(net_in[I]);
    for (Eigen::Index r = 0; r < prm.weights().rows(); ++r) {
      for (Eigen::Index c = 0; c < prm.weights().cols(); ++c) {
        prm.weights()(r, c) = static_cast<Scalar>(
            weights[I][static_cast<std::size_t>(r) * cols + static_cast<std::size_t>(c)]);
      }
    }
    for (Eigen::Index r = 0; r < prm.biases().rows(); ++r) {
      prm.biases()(r) = static_cast<Scalar>(biases[I][static_cast<std::size_t>(r)]);
    }
  });
  model_commit_parameters(net, std::move(params));
  return cost;
}

}  // namespace backprop::detail
