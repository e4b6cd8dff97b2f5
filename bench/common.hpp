// Shared by every C++ benchmark executable (backprop, plain Eigen, libtorch, tiny-dnn):
// the workloads, the portable data and weight generator (mirrored in numpy_seed.py),
// the data file format, command-line options, timing and the JSON result file.
// Standard library only, so that including it costs little compile time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace bench {

// ---- workloads ----

enum class Act { sigmoid, relu, softmax };
enum class Cost { quadratic, log_likelihood };

/// One training workload: the same network, data and hyper-parameters in every peer.
struct Workload {
  std::string id;
  std::vector<int> sizes;  // 784, hidden..., 10
  Act hidden;
  Act output;
  Cost cost;
  int batch;
  double eta;
  double weight_scale_gain;  // weights ~ N(0, gain / n_in) if > 0, else N(0, 1)
  double bias_scale;         // biases ~ N(0, bias_scale^2)
  std::string description;
};

inline const std::vector<Workload>& training_workloads() {
  static const std::vector<Workload> w = {
      {"W1",
       {784, 30, 10},
       Act::sigmoid,
       Act::sigmoid,
       Cost::quadratic,
       10,
       3.0,
       0.0,
       1.0,
       "784-30-10 sigmoid, quadratic, batch 10, eta 3"},
      {"W2",
       {784, 100, 10},
       Act::sigmoid,
       Act::sigmoid,
       Cost::quadratic,
       10,
       3.0,
       0.0,
       1.0,
       "784-100-10 sigmoid, quadratic, batch 10, eta 3"},
      {"W3",
       {784, 256, 128, 10},
       Act::sigmoid,
       Act::sigmoid,
       Cost::quadratic,
       64,
       3.0,
       0.0,
       1.0,
       "784-256-128-10 sigmoid, quadratic, batch 64, eta 3"},
      {"W4",
       {784, 1024, 1024, 10},
       Act::relu,
       Act::softmax,
       Cost::log_likelihood,
       256,
       0.1,
       2.0,
       0.0,
       "784-1024-1024-10 ReLU+softmax, log-likelihood, batch 256, eta 0.1, He init"},
  };
  return w;
}

/// The inference (W5) and per-sample backprop (W6) networks.
inline Workload w5_workload() {
  return {"W5",
          {784, 100, 10},
          Act::sigmoid,
          Act::sigmoid,
          Cost::quadratic,
          1,
          3.0,
          0.0,
          1.0,
          "784-100-10 sigmoid inference"};
}
inline Workload w6_workload() {
  return {"W6", {784, 30, 10}, Act::sigmoid, Act::sigmoid, Cost::quadratic,
          1,    3.0,           0.0,          1.0,          "784-30-10 per-sample backprop(x, y)"};
}

/// W7: the book's chapter-6 convolutional network (network3.py's), float, batch 10,
/// eta 0.03, log-likelihood cost, He-scaled weights (gain 2 / fan-in), biases N(0, 0.1^2):
///   Conv 20 filters 5x5 on 1x28x28, ReLU -> MaxPool 2x2 -> Conv 40 filters 5x5 on
///   20x12x12, ReLU -> MaxPool 2x2 -> Dense 640-100 ReLU -> Dense 100-10 softmax.
/// Not an MLP: `sizes` only names the input, the flattened 40x4x4 image, the hidden
/// Dense layer and the output; the layers are those of w7_layers().
inline Workload w7_workload() {
  return {"W7",
          {784, 640, 100, 10},
          Act::relu,
          Act::softmax,
          Cost::log_likelihood,
          10,
          0.03,
          2.0,
          0.1,
          "conv 20x5x5 ReLU, pool 2, conv 40x5x5 ReLU, pool 2, 640-100 ReLU, 100-10 softmax; "
          "log-likelihood, batch 10, eta 0.03"};
}

/// One layer of W7. conv: `channels` x `size` x `size` input, `filters` of
/// `kernel` x `kernel`, stride 1, no padding. pool: `channels` x `size` x `size`,
/// `kernel` x `kernel` windows. dense: `in` -> `out`.
struct ConvNetLayer {
  enum Kind { conv, pool, dense } kind;
  int channels = 0, size = 0, filters = 0, kernel = 0;  // conv, pool
  int in = 0, out = 0;                                  // dense (conv: the weight matrix)
  [[nodiscard]] int out_size() const {
    return kind == conv ? size - kernel + 1 : kind == pool ? size / kernel : 1;
  }
};

inline const std::vector<ConvNetLayer>& w7_layers() {
  static const std::vector<ConvNetLayer> l = {
      {ConvNetLayer::conv, 1, 28, 20, 5, 1 * 5 * 5, 20},
      {ConvNetLayer::pool, 20, 24, 0, 2, 0, 0},
      {ConvNetLayer::conv, 20, 12, 40, 5, 20 * 5 * 5, 40},
      {ConvNetLayer::pool, 40, 8, 0, 2, 0, 0},
      {ConvNetLayer::dense, 0, 0, 0, 0, 640, 100},
      {ConvNetLayer::dense, 0, 0, 0, 0, 100, 10},
  };
  return l;
}

/// Real flops of one W7 forward pass: 2 per multiply-add of the convolutions
/// (OH * OW * filters * C K K) and of the Dense layers (in * out); pooling not counted.
/// conv1 24*24*20*25 + conv2 8*8*40*500 + 640*100 + 100*10 = 1,633,000 multiply-adds.
inline double w7_forward_flops() {
  double f = 0;
  for (const auto& l : w7_layers()) {
    if (l.kind == ConvNetLayer::conv) {
      f += 2.0 * l.out_size() * l.out_size() * l.filters * l.in;
    } else if (l.kind == ConvNetLayer::dense) {
      f += 2.0 * l.in * l.out;
    }
  }
  return f;
}

/// W7 inference (records "latency" and "throughput" with id W7, like W5's): batch-1
/// latency over the first w7_latency_images images, one feedforward of
/// inference_batch images, both from w7_initial_parameters() (untrained). --check
/// records the outputs of the first w7_output_check_images images (kind "outputs").
inline constexpr std::int64_t w7_latency_images = 2000;
inline constexpr std::int64_t inference_batch = 10000;
inline constexpr std::int64_t w7_output_check_images = 100;

/// Nominal flops of one sample's forward pass: 2 * in * out per layer (W7: its own count).
inline double forward_flops(const Workload& w) {
  if (w.id == "W7") return w7_forward_flops();
  double f = 0;
  for (std::size_t l = 0; l + 1 < w.sizes.size(); ++l) {
    f += 2.0 * w.sizes[l] * w.sizes[l + 1];
  }
  return f;
}
/// Training: forward + backward delta + weight gradient = 3x forward.
inline double training_flops(const Workload& w) { return 3.0 * forward_flops(w); }

// ---- the portable generator (counter based; numpy_seed.py has the same) ----

inline std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
/// Uniform in [0, 1) with 24 bits, element `i` of stream `stream`.
inline double uniform(std::uint64_t stream, std::uint64_t i) {
  return static_cast<double>(splitmix64((stream << 40) + i) >> 40) * 0x1p-24;
}
/// Standard normal (Box-Muller), element `i` of stream `stream`.
inline double normal(std::uint64_t stream, std::uint64_t i) {
  const double u1 = uniform(stream, 2 * i);
  const double u2 = uniform(stream, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(6.283185307179586 * u2);
}

/// Initial parameters of layer `l` of workload number `wi` (W1 = 0): weights
/// Out x In column-major (element (r, c) at r + c * Out), biases Out.
struct LayerInit {
  std::vector<float> weights;
  std::vector<float> biases;
  int in = 0;
  int out = 0;
  [[nodiscard]] float w(int r, int c) const {
    return weights[static_cast<std::size_t>(r) + static_cast<std::size_t>(c) * out];
  }
};

inline int workload_number(const Workload& w) { return std::atoi(w.id.c_str() + 1); }

/// Row-major Out x In copy of `li` (PyTorch's layout: Linear's [out, in] and, for a
/// convolution with in = C K K, Conv2d's [out, C, K, K]; tiny-dnn's convolution too).
inline std::vector<float> row_major(const LayerInit& li) {
  std::vector<float> v(li.weights.size());
  for (int r = 0; r < li.out; ++r) {
    for (int c = 0; c < li.in; ++c) {
      v[static_cast<std::size_t>(r) * li.in + c] = li.w(r, c);
    }
  }
  return v;
}

/// W7's initial parameters, one LayerInit per layer of w7_layers() (the pooling layers'
/// are empty). Conv weights are generated in PyTorch's [out, in, kh, kw] order: element
/// k of stream 700 + l is weight[o][c][i][j] with k = ((o C + c) K + i) K + j, stored
/// like every LayerInit as the Out x (C K K) matrix (column-major; row_major() gives the
/// PyTorch layout back). Dense weights are element k = r + c Out of stream 700 + l, as
/// for W1-W4. Weights ~ N(0, 2 / fan-in), fan-in = C K K or In; biases ~ N(0, 0.1^2),
/// stream 710 + l (non-zero, so that no pre-activation of a blank window is exactly 0,
/// where ReLU's derivative is a convention).
inline std::vector<LayerInit> w7_initial_parameters() {
  const Workload w = w7_workload();
  std::vector<LayerInit> layers;
  const auto& spec = w7_layers();
  for (std::size_t l = 0; l < spec.size(); ++l) {
    LayerInit li;
    if (spec[l].kind != ConvNetLayer::pool) {
      li.in = spec[l].in;
      li.out = spec[l].out;
      const double ws = std::sqrt(w.weight_scale_gain / li.in);
      li.weights.resize(static_cast<std::size_t>(li.in) * li.out);
      for (int r = 0; r < li.out; ++r) {
        for (int c = 0; c < li.in; ++c) {
          const auto k = static_cast<std::uint64_t>(
              spec[l].kind == ConvNetLayer::conv ? r * li.in + c : r + c * li.out);
          li.weights[static_cast<std::size_t>(r) + static_cast<std::size_t>(c) * li.out] =
              static_cast<float>(ws * normal(700 + l, k));
        }
      }
      li.biases.resize(static_cast<std::size_t>(li.out));
      for (int r = 0; r < li.out; ++r) {
        li.biases[static_cast<std::size_t>(r)] =
            static_cast<float>(w.bias_scale * normal(710 + l, static_cast<std::uint64_t>(r)));
      }
    }
    layers.push_back(std::move(li));
  }
  return layers;
}

inline std::vector<LayerInit> initial_parameters(const Workload& w) {
  if (w.id == "W7") return w7_initial_parameters();
  std::vector<LayerInit> layers;
  const std::uint64_t base = 100 + 10 * static_cast<std::uint64_t>(workload_number(w));
  for (std::size_t l = 0; l + 1 < w.sizes.size(); ++l) {
    LayerInit li;
    li.in = w.sizes[l];
    li.out = w.sizes[l + 1];
    const double ws = w.weight_scale_gain > 0 ? std::sqrt(w.weight_scale_gain / li.in) : 1.0;
    const std::size_t n = static_cast<std::size_t>(li.in) * li.out;
    li.weights.resize(n);
    for (std::size_t k = 0; k < n; ++k) {
      li.weights[k] = static_cast<float>(ws * normal(base + l, k));
    }
    li.biases.resize(static_cast<std::size_t>(li.out));
    for (int r = 0; r < li.out; ++r) {
      li.biases[static_cast<std::size_t>(r)] =
          static_cast<float>(w.bias_scale * normal(base + 5 + l, static_cast<std::uint64_t>(r)));
    }
    layers.push_back(std::move(li));
  }
  return layers;
}

// ---- data ----

/// Samples are columns: pixel j of sample i is x[i * inputs + j].
struct Data {
  std::int64_t n = 0;
  std::int64_t inputs = 784;
  std::int64_t classes = 10;
  std::vector<float> x;
  std::vector<std::uint8_t> labels;
  std::string source;
  [[nodiscard]] const float* sample(std::int64_t i) const {
    return x.data() + static_cast<std::size_t>(i * inputs);
  }
};

/// MNIST-shaped synthetic data: 10 classes, each with a random "prototype" of
/// ~19% of the pixels; a pixel is nonzero with probability 0.8 inside the
/// prototype and 0.04 outside (~18.4% nonzero overall), value in [0.25, 1).
inline Data synthetic_data(std::int64_t n) {
  Data d;
  d.n = n;
  d.source = "synthetic (seeded, 784 px, ~18% nonzero, 10 classes)";
  d.x.assign(static_cast<std::size_t>(n * d.inputs), 0.0f);
  d.labels.resize(static_cast<std::size_t>(n));
  std::vector<char> proto(static_cast<std::size_t>(d.classes * d.inputs));
  for (std::size_t k = 0; k < proto.size(); ++k) proto[k] = uniform(2, k) < 0.19;
  for (std::int64_t i = 0; i < n; ++i) {
    const int c = std::min(9, static_cast<int>(uniform(1, static_cast<std::uint64_t>(i)) * 10));
    d.labels[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(c);
    for (std::int64_t j = 0; j < d.inputs; ++j) {
      const auto k = static_cast<std::uint64_t>(i * d.inputs + j);
      const double p = proto[static_cast<std::size_t>(c * d.inputs + j)] ? 0.8 : 0.04;
      if (uniform(3, k) < p) {
        d.x[k] = static_cast<float>(0.25 + 0.75 * uniform(4, k));
      }
    }
  }
  return d;
}

// File: "BPBENCH1", int64 n, int64 inputs, int64 classes, float32 x[n * inputs], uint8 labels[n].
inline void write_data(const Data& d, const std::string& path) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write("BPBENCH1", 8);
  f.write(reinterpret_cast<const char*>(&d.n), sizeof d.n);
  f.write(reinterpret_cast<const char*>(&d.inputs), sizeof d.inputs);
  f.write(reinterpret_cast<const char*>(&d.classes), sizeof d.classes);
  f.write(reinterpret_cast<const char*>(d.x.data()),
          static_cast<std::streamsize>(d.x.size() * sizeof(float)));
  f.write(reinterpret_cast<const char*>(d.labels.data()),
          static_cast<std::streamsize>(d.labels.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

inline Data read_data(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[8] = {};
  f.read(magic, 8);
  if (!f || std::string(magic, 8) != "BPBENCH1")
    throw std::runtime_error(path + ": not a data file");
  Data d;
  f.read(reinterpret_cast<char*>(&d.n), sizeof d.n);
  f.read(reinterpret_cast<char*>(&d.inputs), sizeof d.inputs);
  f.read(reinterpret_cast<char*>(&d.classes), sizeof d.classes);
  if (!f || d.n <= 0 || d.inputs != 784 || d.classes != 10) {
    throw std::runtime_error(path + ": bad header");
  }
  d.x.resize(static_cast<std::size_t>(d.n * d.inputs));
  d.labels.resize(static_cast<std::size_t>(d.n));
  f.read(reinterpret_cast<char*>(d.x.data()),
         static_cast<std::streamsize>(d.x.size() * sizeof(float)));
  f.read(reinterpret_cast<char*>(d.labels.data()), static_cast<std::streamsize>(d.n));
  if (!f) throw std::runtime_error(path + ": truncated");
  d.source = "file " + path;
  return d;
}

// ---- options ----

struct Options {
  int threads = 1;
  int runs = 3;
  std::int64_t samples = 50000;
  std::string data;
  std::string json;
  std::vector<std::string> only;              // empty: all
  std::map<std::string, std::int64_t> limit;  // per-workload sample cap
  bool check = false;                         // equivalence check instead of timing
  bool peak = false;                          // also measure the sgemm peak
  std::string write_data;                     // bench_backprop only
  std::string mnist;                          // bench_backprop only

  [[nodiscard]] bool wants(const std::string& id) const {
    return only.empty() || std::find(only.begin(), only.end(), id) != only.end();
  }
  [[nodiscard]] std::int64_t samples_for(const std::string& id, std::int64_t available) const {
    std::int64_t n = std::min(samples, available);
    if (auto it = limit.find(id); it != limit.end()) n = std::min(n, it->second);
    return n;
  }
};

inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

inline Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--threads") {
      o.threads = std::stoi(value());
    } else if (a == "--runs") {
      o.runs = std::max(1, std::stoi(value()));
    } else if (a == "--samples") {
      o.samples = std::stoll(value());
    } else if (a == "--data") {
      o.data = value();
    } else if (a == "--json") {
      o.json = value();
    } else if (a == "--only") {
      o.only = split(value(), ',');
    } else if (a == "--limit") {
      for (const auto& kv : split(value(), ',')) {
        const auto eq = kv.find('=');
        if (eq == std::string::npos) throw std::invalid_argument("--limit wants W3=10000,...");
        o.limit[kv.substr(0, eq)] = std::stoll(kv.substr(eq + 1));
      }
    } else if (a == "--check") {
      o.check = true;
    } else if (a == "--peak") {
      o.peak = true;
    } else if (a == "--write-data") {
      o.write_data = value();
    } else if (a == "--mnist") {
      o.mnist = value();
    } else {
      throw std::invalid_argument("unknown option " + a +
                                  " (--threads N --runs R --samples N --data F --json F "
                                  "--only W1,W2 --limit W4=2560 --check --peak)");
    }
  }
  return o;
}

inline Data load_data(const Options& o) {
  if (!o.data.empty()) return read_data(o.data);
  return synthetic_data(std::max<std::int64_t>(o.samples, 10000));
}

// ---- shuffling (each peer shuffles every epoch, as the seed does) ----

/// A small deterministic Fisher-Yates shuffle for the peers that have none of their own.
inline void shuffle_indices(std::vector<std::int64_t>& idx, std::uint64_t& state) {
  for (std::size_t i = idx.size(); i > 1; --i) {
    state = splitmix64(state);
    std::swap(idx[i - 1], idx[state % i]);
  }
}

// ---- timing and results ----

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Process CPU time of the last Timer::stop(), all threads together.
inline double& last_cpu_seconds() {
  static double v = 0;
  return v;
}

/// Wall-clock timer that also records the process CPU time (std::clock).
class Timer {
 public:
  double stop() {
    last_cpu_seconds() = static_cast<double>(std::clock() - m_cpu0) / CLOCKS_PER_SEC;
    return seconds_since(m_wall0);
  }

 private:
  Clock::time_point m_wall0 = Clock::now();
  std::clock_t m_cpu0 = std::clock();
};

/// The first three fields of /proc/loadavg (other processes distort the timings).
inline std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

/// One measured quantity. `kind` is "train" (one epoch), "latency" (batch 1),
/// "throughput" (one big batch), "backprop" (per-sample gradient) or "peak"; --check
/// writes "check" (a cost in check_value) and "outputs" (network outputs in values).
struct Record {
  Record(std::string w, std::string k, std::int64_t n, double flops, std::string what)
      : workload(std::move(w)),
        kind(std::move(k)),
        samples(n),
        flops_per_sample(flops),
        note(std::move(what)) {}
  std::string workload;
  std::string kind;
  std::int64_t samples = 0;
  double flops_per_sample = 0;  // nominal
  std::vector<double> times;    // wall seconds per run
  std::string note;
  double check_value = std::nan("");  // --check: the cost after the check run
  std::vector<double> cpu_times;      // process CPU seconds per run
  std::vector<double> values;         // kind "outputs": output k of image i at i * 10 + k
};

inline std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (c == '\n') {
      o += "\\n";
    } else {
      o += c;
    }
  }
  return o;
}

inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

/// Runs `fn` `runs` times; `fn` times its own work with a Timer and returns
/// Timer::stop(). Fills r.times and r.cpu_times.
inline void repeat(Record& r, int runs, const std::function<double()>& fn) {
  r.times.clear();
  r.cpu_times.clear();
  for (int k = 0; k < runs; ++k) {
    r.times.push_back(fn());
    r.cpu_times.push_back(last_cpu_seconds());
  }
}

class Report {
 public:
  Report(std::string peer, const Options& o) : m_peer(std::move(peer)), m_threads(o.threads) {
    meta("loadavg_start", load_average());
  }
  void meta(const std::string& key, const std::string& value) { m_meta.emplace_back(key, value); }
  void add(Record r) {
    print(r);
    m_records.push_back(std::move(r));
  }
  void skip(const std::string& workload, const std::string& why) {
    std::cerr << "[" << m_peer << "] " << workload << ": skipped: " << why << '\n';
    m_skipped.emplace_back(workload, why);
  }
  /// The report as one JSON object.
  [[nodiscard]] std::string json() const {
    std::ostringstream j;
    j << "{\n  \"peer\": \"" << json_escape(m_peer) << "\",\n  \"threads\": " << m_threads
      << ",\n  \"meta\": {";
    for (std::size_t i = 0; i < m_meta.size(); ++i) {
      j << (i ? ", " : "") << '"' << json_escape(m_meta[i].first) << "\": \""
        << json_escape(m_meta[i].second) << '"';
    }
    j << (m_meta.empty() ? "" : ", ") << "\"loadavg_end\": \"" << load_average() << '"';
    j << "},\n  \"skipped\": [";
    for (std::size_t i = 0; i < m_skipped.size(); ++i) {
      j << (i ? ", " : "") << "{\"workload\": \"" << m_skipped[i].first << "\", \"why\": \""
        << json_escape(m_skipped[i].second) << "\"}";
    }
    j << "],\n  \"records\": [\n";
    for (std::size_t i = 0; i < m_records.size(); ++i) {
      const Record& r = m_records[i];
      j << "    {\"workload\": \"" << r.workload << "\", \"kind\": \"" << r.kind
        << "\", \"samples\": " << r.samples
        << ", \"flops_per_sample\": " << json_number(r.flops_per_sample) << ", \"times\": [";
      for (std::size_t k = 0; k < r.times.size(); ++k) {
        j << (k ? ", " : "") << json_number(r.times[k]);
      }
      j << "], \"cpu_times\": [";
      for (std::size_t k = 0; k < r.cpu_times.size(); ++k) {
        j << (k ? ", " : "") << json_number(r.cpu_times[k]);
      }
      j << "], \"median_s\": " << json_number(median(r.times))
        << ", \"check_value\": " << json_number(r.check_value);
      if (!r.values.empty()) {
        j << ", \"values\": [";
        for (std::size_t k = 0; k < r.values.size(); ++k) {
          j << (k ? ", " : "") << json_number(r.values[k]);
        }
        j << "]";
      }
      j << ", \"note\": \"" << json_escape(r.note) << "\"}"
        << (i + 1 < m_records.size() ? ",\n" : "\n");
    }
    j << "  ]\n}";
    return j.str();
  }

 private:
  void print(const Record& r) const {
    const double t = median(r.times);
    std::cerr << "[" << m_peer << " t=" << m_threads << "] " << r.workload << ' ' << r.kind << ": ";
    if (!std::isnan(r.check_value)) {
      std::cerr << "check value " << r.check_value << '\n';
      return;
    }
    if (!r.values.empty()) {
      std::cerr << r.values.size() << " output values (" << r.note << ")\n";
      return;
    }
    const double sps = t > 0 ? static_cast<double>(r.samples) / t : 0.0;
    std::cerr << r.samples << " samples, median " << t << " s, " << sps << " samples/s, "
              << sps * r.flops_per_sample * 1e-9 << " GFLOP/s" << '\n';
  }

  std::string m_peer;
  int m_threads;
  std::vector<std::pair<std::string, std::string>> m_meta;
  std::vector<std::pair<std::string, std::string>> m_skipped;
  std::vector<Record> m_records;
};

/// Writes reports as a JSON list to `path` (stdout if empty).
inline void write_reports(const std::string& path, const std::vector<const Report*>& reports) {
  std::string out = "[\n";
  for (std::size_t i = 0; i < reports.size(); ++i) {
    out += reports[i]->json();
    out += i + 1 < reports.size() ? ",\n" : "\n";
  }
  out += "]\n";
  if (path.empty()) {
    std::cout << out;
    return;
  }
  std::ofstream f(path, std::ios::trunc);
  f << out;
  if (!f) throw std::runtime_error("cannot write " + path);
}

/// Number of samples and batches of the equivalence check (no shuffling, fixed order).
inline constexpr std::int64_t check_samples = 5000;
inline constexpr std::int64_t check_eval_samples = 1000;
/// W7 is also checked after its first 500 samples (50 mini-batches; record "W7-500").
/// At eta 0.03 and batch 10 its float training is sensitive to rounding: once a ReLU or
/// max-pool switch flips on a rounding-level difference, every later step differs. After
/// 5000 samples float runs can differ by several percent (backprop with 1 and with 2
/// threads: 0.1921 and 0.2111; in double, backprop and libtorch both give 0.1997530),
/// while after 500 samples every peer agrees to float rounding.
inline constexpr std::int64_t w7_short_check_samples = 500;

/// Mean cost over the first `check_eval_samples` samples from their outputs.
/// `out(i, r)` is output r of sample i.
inline double check_cost(const Workload& w, const Data& d,
                         const std::function<float(std::int64_t, int)>& out) {
  double sum = 0;
  for (std::int64_t i = 0; i < check_eval_samples; ++i) {
    const int label = d.labels[static_cast<std::size_t>(i)];
    for (int r = 0; r < 10; ++r) {
      const double a = out(i, r);
      if (w.cost == Cost::quadratic) {
        const double diff = a - (r == label ? 1.0 : 0.0);
        sum += 0.5 * diff * diff;
      } else if (r == label) {
        sum -= std::log(std::max(a, 1e-30));
      }
    }
  }
  return sum / static_cast<double>(check_eval_samples);
}

}  // namespace bench
