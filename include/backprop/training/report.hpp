/// \file
/// \brief Pictures of training: an SVG chart of accuracy and cost per epoch, and a
/// grid of first-layer weights as image tiles (PGM or PNG).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "../detail/inflate.hpp"
#include "../errors.hpp"
#include "options.hpp"

namespace backprop {

namespace detail {

inline void put_u32be(std::string& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xFF));
}

/// A PNG (8-bit greyscale) whose zlib stream uses stored (uncompressed) blocks:
/// valid for every reader, no compressor needed. (A template: see write_history_svg.)
template <class = void>
std::string encode_png_grey(const std::vector<std::uint8_t>& pixels, int width, int height) {
  std::string raw;  // filter byte 0 per row
  raw.reserve(static_cast<std::size_t>((width + 1) * height));
  for (int y = 0; y < height; ++y) {
    raw.push_back('\0');
    raw.append(
        reinterpret_cast<const char*>(pixels.data()) + static_cast<std::ptrdiff_t>(y) * width,
        static_cast<std::size_t>(width));
  }
  std::string z = "\x78\x01";
  std::size_t pos = 0;
  do {
    const std::size_t n = std::min<std::size_t>(65535, raw.size() - pos);
    const bool final_block = pos + n == raw.size();
    z.push_back(final_block ? '\x01' : '\x00');
    z.push_back(static_cast<char>(n & 0xFF));
    z.push_back(static_cast<char>(n >> 8));
    z.push_back(static_cast<char>(~n & 0xFF));
    z.push_back(static_cast<char>((~n >> 8) & 0xFF));
    z.append(raw, pos, n);
    pos += n;
  } while (pos < raw.size());
  std::uint32_t a = 1, b = 0;  // Adler-32
  for (unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  put_u32be(z, (b << 16) | a);

  std::string png = "\x89PNG\r\n\x1a\n";
  auto chunk = [&png](const char* type, const std::string& data) {
    put_u32be(png, static_cast<std::uint32_t>(data.size()));
    std::string body(type, 4);
    body += data;
    png += body;
    put_u32be(png, crc32(reinterpret_cast<const unsigned char*>(body.data()), body.size()));
  };
  std::string ihdr;
  put_u32be(ihdr, static_cast<std::uint32_t>(width));
  put_u32be(ihdr, static_cast<std::uint32_t>(height));
  ihdr +=
      std::string("\x08\x00\x00\x00\x00", 5);  // 8-bit, greyscale, deflate, no filter, no interlace
  chunk("IHDR", ihdr);
  chunk("IDAT", z);
  chunk("IEND", "");
  return png;
}

}  // namespace detail

/// \brief Draws the rows of `weights` (one per hidden unit, each `tile_rows *
/// tile_cols` inputs, e.g. 28 x 28 for MNIST) as a grid of greyscale tiles, each
/// scaled to its own min..max, separated by 1-pixel borders. Writes PNG when
/// `path` ends in ".png", else binary PGM. Atomic (temporary file + rename).
/// \throws ShapeError if a row does not have tile_rows * tile_cols entries.
template <class Derived>
void write_weight_tiles(const Eigen::MatrixBase<Derived>& weights, int tile_rows, int tile_cols,
                        const std::filesystem::path& path, int scale = 2) {
  if (tile_rows <= 0 || tile_cols <= 0 || weights.cols() != Eigen::Index{tile_rows} * tile_cols) {
    throw ShapeError("write_weight_tiles: weights have " + std::to_string(weights.cols()) +
                     " columns, tiles of " + std::to_string(tile_rows) + "x" +
                     std::to_string(tile_cols) + " need " +
                     std::to_string(Eigen::Index{tile_rows} * tile_cols));
  }
  const int n = static_cast<int>(weights.rows());
  const int grid_cols = std::max(1, static_cast<int>(std::ceil(std::sqrt(double(n)))));
  const int grid_rows = (n + grid_cols - 1) / grid_cols;
  const int tw = tile_cols * scale, th = tile_rows * scale;
  const int width = grid_cols * (tw + 1) + 1, height = grid_rows * (th + 1) + 1;
  std::vector<std::uint8_t> img(static_cast<std::size_t>(width) * height, 0);
  for (int u = 0; u < n; ++u) {
    const auto row = weights.row(u);
    const double lo = static_cast<double>(row.minCoeff()), hi = static_cast<double>(row.maxCoeff());
    const double span = hi > lo ? hi - lo : 1.0;
    const int ox = (u % grid_cols) * (tw + 1) + 1, oy = (u / grid_cols) * (th + 1) + 1;
    for (int y = 0; y < th; ++y) {
      for (int x = 0; x < tw; ++x) {
        const double v =
            (static_cast<double>(row((y / scale) * tile_cols + x / scale)) - lo) / span;
        img[static_cast<std::size_t>(oy + y) * width + static_cast<std::size_t>(ox + x)] =
            static_cast<std::uint8_t>(std::lround(v * 255.0));
      }
    }
  }
  std::string bytes;
  if (path.extension() == ".png") {
    bytes = detail::encode_png_grey(img, width, height);
  } else {
    bytes = "P5\n" + std::to_string(width) + " " + std::to_string(height) + "\n255\n";
    bytes.append(reinterpret_cast<const char*>(img.data()), img.size());
  }
  detail::write_file_atomically(path, bytes, "write_weight_tiles");
}

/// \brief Writes an SVG chart of the history: evaluation and training accuracy
/// (left axis, %) and training/evaluation cost (right axis), per epoch.
/// Series that were not monitored are left out. Atomic. (A template only so that a program
/// compiles it where it calls it: as an inline function, in every program including
/// backprop.hpp.)
template <class = void>
void write_history_svg(const TrainingHistory& history, const std::filesystem::path& path,
                       const std::string& title = "Training") {
  const double W = 760, H = 420, left = 70, right = 70, top = 50, bottom = 60;
  const double pw = W - left - right, ph = H - top - bottom;
  const auto& e = history.epochs;
  const std::size_t n = e.size();
  struct Series {
    std::string name, colour;
    bool right_axis;
    std::vector<double> v;
  };
  std::vector<Series> series;
  auto collect = [&](const char* name, const char* colour, bool right_axis, auto get) {
    Series s{name, colour, right_axis, {}};
    for (const auto& r : e) {
      const auto v = get(r);
      if (!v) return;
      s.v.push_back(*v);
    }
    if (!s.v.empty()) series.push_back(std::move(s));
  };
  collect("evaluation accuracy", "#1f77b4", false,
          [](const EpochReport& r) { return r.evaluation_accuracy; });
  collect("training accuracy", "#2ca02c", false,
          [](const EpochReport& r) { return r.training_accuracy; });
  collect("training cost", "#d62728", true, [](const EpochReport& r) { return r.training_cost; });
  collect("evaluation cost", "#ff7f0e", true,
          [](const EpochReport& r) { return r.evaluation_cost; });

  double acc_lo = 1.0, acc_hi = 0.0, cost_hi = 0.0;
  for (const auto& s : series) {
    for (double v : s.v) {
      if (s.right_axis) {
        cost_hi = std::max(cost_hi, v);
      } else {
        acc_lo = std::min(acc_lo, v);
        acc_hi = std::max(acc_hi, v);
      }
    }
  }
  if (acc_lo > acc_hi) acc_lo = 0.0, acc_hi = 1.0;
  acc_lo = std::floor(acc_lo * 50.0) / 50.0;  // round down to 2%
  acc_hi = std::min(1.0, std::ceil(acc_hi * 50.0) / 50.0);
  if (acc_hi <= acc_lo) acc_hi = acc_lo + 0.02;
  if (cost_hi <= 0.0) cost_hi = 1.0;
  const double xmax = n > 1 ? double(n) : 2.0;
  auto X = [&](double epoch) { return left + (epoch - 1.0) / (xmax - 1.0) * pw; };
  auto Y = [&](double v, bool right_axis) {
    const double f = right_axis ? v / cost_hi : (v - acc_lo) / (acc_hi - acc_lo);
    return top + (1.0 - f) * ph;
  };

  std::ostringstream s;
  s << std::fixed << std::setprecision(2);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << W / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">" << title
    << "</text>\n";
  for (int i = 0; i <= 5; ++i) {  // grid and left/right tick labels
    const double f = i / 5.0, y = top + (1.0 - f) * ph;
    s << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + pw << "\" y2=\"" << y
      << "\" stroke=\"#ddd\"/>\n";
    s << "<text x=\"" << left - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">"
      << 100.0 * (acc_lo + f * (acc_hi - acc_lo)) << "%</text>\n";
    s << "<text x=\"" << left + pw + 6 << "\" y=\"" << y + 4 << "\">" << std::setprecision(4)
      << f * cost_hi << std::setprecision(2) << "</text>\n";
  }
  const std::size_t step = n > 15 ? (n + 9) / 10 : 1;
  for (std::size_t k = 1; k <= n; k += step) {
    s << "<text x=\"" << X(double(k)) << "\" y=\"" << top + ph + 18 << "\" text-anchor=\"middle\">"
      << k << "</text>\n";
  }
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"#333\"/>\n";
  s << "<text x=\"" << left + pw / 2 << "\" y=\"" << H - 18
    << "\" text-anchor=\"middle\">epoch</text>\n";
  s << "<text x=\"18\" y=\"" << top + ph / 2 << "\" transform=\"rotate(-90 18 " << top + ph / 2
    << ")\" text-anchor=\"middle\">accuracy</text>\n";
  s << "<text x=\"" << W - 14 << "\" y=\"" << top + ph / 2 << "\" transform=\"rotate(90 " << W - 14
    << ' ' << top + ph / 2 << ")\" text-anchor=\"middle\">cost</text>\n";
  double legend_x = left + 10;
  for (const auto& sr : series) {
    s << "<polyline fill=\"none\" stroke=\"" << sr.colour << "\" stroke-width=\"2\" points=\"";
    for (std::size_t k = 0; k < sr.v.size(); ++k) {
      s << X(double(k + 1)) << ',' << Y(sr.v[k], sr.right_axis) << ' ';
    }
    s << "\"/>\n";
    for (std::size_t k = 0; k < sr.v.size(); ++k) {
      s << "<circle cx=\"" << X(double(k + 1)) << "\" cy=\"" << Y(sr.v[k], sr.right_axis)
        << "\" r=\"2.5\" fill=\"" << sr.colour << "\"/>\n";
    }
    s << "<rect x=\"" << legend_x << "\" y=\"" << top + 8 << "\" width=\"14\" height=\"4\" fill=\""
      << sr.colour << "\"/><text x=\"" << legend_x + 18 << "\" y=\"" << top + 14 << "\">" << sr.name
      << (sr.right_axis ? " (right)" : "") << "</text>\n";
    legend_x += 170;
  }
  s << "</svg>\n";
  detail::write_file_atomically(path, s.str(), "write_history_svg");
}

}  // namespace backprop
