// The tiny-dnn peer: the workloads of common.hpp as network<sequential> of
// fully_connected_layer<Act>, trained with network::fit and gradient_descent.
// tiny-dnn divides the summed gradient by the batch size and gradient_descent does
// w -= alpha * dw, so alpha = eta with the loss below (1/2 ||a - y||^2, da = a - y)
// is exactly backprop's update. W4 uses softmax + cross_entropy_multiclass (tiny-dnn
// back-propagates the full softmax Jacobian, so the gradient is a - y as well).
// W7, the chapter-6 convolutional network, is convolutional_layer<relu>,
// max_pooling_layer and fully_connected_layer with the same loss and optimizer (the
// division by the batch size is layer::update_weight's, for every layer).
#include <tiny_dnn/tiny_dnn.h>
#include <numeric>
#include <thread>

#include "common.hpp"

namespace {

namespace td = tiny_dnn;

/// C = 1/2 ||a - y||^2 per sample, as the seed's QuadraticCost.
struct HalfSquaredError {
  static td::float_t f(const td::vec_t& y, const td::vec_t& t) {
    td::float_t d = 0;
    for (std::size_t i = 0; i < y.size(); ++i) d += (y[i] - t[i]) * (y[i] - t[i]);
    return d / 2;
  }
  static td::vec_t df(const td::vec_t& y, const td::vec_t& t) {
    td::vec_t d(y.size());
    for (std::size_t i = 0; i < y.size(); ++i) d[i] = y[i] - t[i];
    return d;
  }
};

/// W7 (bench::w7_layers()). tiny-dnn's images are CHW like the data (index
/// (c H + y) W + x), so the 40x4x4 output of the second pooling layer reaches the Dense
/// layer in the same order as torch's flatten.
std::unique_ptr<td::network<td::sequential>> make_w7_net() {
  auto net = std::make_unique<td::network<td::sequential>>();
  *net << td::convolutional_layer<td::activation::relu>(28, 28, 5, 1, 20)
       << td::max_pooling_layer<td::activation::identity>(24, 24, 20, 2)
       << td::convolutional_layer<td::activation::relu>(12, 12, 5, 20, 40)
       << td::max_pooling_layer<td::activation::identity>(8, 8, 40, 2)
       << td::fully_connected_layer<td::activation::relu>(640, 100)
       << td::fully_connected_layer<td::activation::softmax>(100, 10);
  net->init_weight();
  return net;
}

std::unique_ptr<td::network<td::sequential>> make_net(const bench::Workload& w) {
  if (w.id == "W7") return make_w7_net();
  auto net = std::make_unique<td::network<td::sequential>>();
  const std::size_t layers = w.sizes.size() - 1;
  for (std::size_t l = 0; l < layers; ++l) {
    const auto in = static_cast<td::serial_size_t>(w.sizes[l]);
    const auto out = static_cast<td::serial_size_t>(w.sizes[l + 1]);
    const bench::Act act = l + 1 == layers ? w.output : w.hidden;
    switch (act) {
      case bench::Act::sigmoid:
        *net << td::fully_connected_layer<td::activation::sigmoid>(in, out);
        break;
      case bench::Act::relu:
        *net << td::fully_connected_layer<td::activation::relu>(in, out);
        break;
      case bench::Act::softmax:
        *net << td::fully_connected_layer<td::activation::softmax>(in, out);
        break;
    }
  }
  net->init_weight();
  return net;
}

/// Writes the shared initial parameters; tiny-dnn's fully_connected_layer stores W(r, c)
/// at c * out + r, the same column-major layout as LayerInit. Its convolutional_layer
/// stores filter o's weight (c, i, j) at ((C o + c) K + i) K + j: PyTorch's
/// [out, in, kh, kw], LayerInit's matrix row-major. Pooling layers (empty) are skipped.
void reset_to(td::network<td::sequential>& net, const std::vector<bench::LayerInit>& init) {
  for (std::size_t l = 0; l < init.size(); ++l) {
    if (init[l].weights.empty()) continue;
    auto params = net[l]->weights();
    const std::vector<float> w =
        net[l]->layer_type() == "conv" ? bench::row_major(init[l]) : init[l].weights;
    if (params.size() != 2 || params[0]->size() != w.size() ||
        params[1]->size() != init[l].biases.size()) {
      throw std::logic_error("tiny-dnn layer " + std::to_string(l) + " has other parameter sizes");
    }
    std::copy(w.begin(), w.end(), params[0]->begin());
    std::copy(init[l].biases.begin(), init[l].biases.end(), params[1]->begin());
  }
}

/// W1-W4 and W7.
std::vector<bench::Workload> trained_workloads() {
  std::vector<bench::Workload> ws = bench::training_workloads();
  ws.push_back(bench::w7_workload());
  return ws;
}

struct Samples {
  std::vector<td::vec_t> x;
  std::vector<td::vec_t> y;
};

Samples make_samples(const bench::Data& d, std::int64_t n) {
  Samples s;
  s.x.reserve(static_cast<std::size_t>(n));
  s.y.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    s.x.emplace_back(d.sample(i), d.sample(i) + d.inputs);
    td::vec_t y(10, 0);
    y[d.labels[static_cast<std::size_t>(i)]] = 1;
    s.y.push_back(std::move(y));
  }
  return s;
}

void fit(td::network<td::sequential>& net, const bench::Workload& w, const Samples& s,
         std::size_t batch) {
  td::gradient_descent opt;
  opt.alpha = static_cast<td::float_t>(w.eta);
  if (w.cost == bench::Cost::log_likelihood) {
    net.fit<td::cross_entropy_multiclass>(opt, s.x, s.y, batch, 1);
  } else {
    net.fit<HalfSquaredError>(opt, s.x, s.y, batch, 1);
  }
}

/// Shuffles x and y together (moves of the vectors, no copies).
void shuffle(Samples& s, std::uint64_t& state) {
  for (std::size_t i = s.x.size(); i > 1; --i) {
    state = bench::splitmix64(state);
    const std::size_t j = state % i;
    std::swap(s.x[i - 1], s.x[j]);
    std::swap(s.y[i - 1], s.y[j]);
  }
}

/// W7 inference from the initial weights (no training): predict(vec_t) one image at a
/// time, and predict(std::vector<tensor_t>) of 10000 images.
void w7_inference(const bench::Options& o, const bench::Data& d, bench::Report& report) {
  auto net = make_w7_net();
  reset_to(*net, bench::w7_initial_parameters());
  const double flops = bench::w7_forward_flops();
  const std::int64_t nb = std::min<std::int64_t>(bench::inference_batch, d.n);
  const Samples s = make_samples(d, nb);
  const auto n1 = static_cast<std::size_t>(std::min<std::int64_t>(bench::w7_latency_images, nb));
  float sink = 0;
  for (std::size_t i = 0; i < std::min<std::size_t>(n1, 20); ++i) sink += net->predict(s.x[i])[0];
  bench::Record lat{"W7", "latency", static_cast<std::int64_t>(n1), flops, "predict(vec_t)"};
  bench::repeat(lat, o.runs, [&] {
    bench::Timer timer;
    for (std::size_t i = 0; i < n1; ++i) sink += net->predict(s.x[i])[0];
    return timer.stop();
  });
  report.add(lat);
  std::vector<td::tensor_t> batch;
  for (const auto& x : s.x) batch.push_back(td::tensor_t{x});
  bench::Record thr{"W7", "throughput", nb, flops, "predict(std::vector<tensor_t>) of 10000"};
  bench::repeat(thr, o.runs, [&] {
    bench::Timer timer;
    sink += net->predict(batch)[0][0][0];
    return timer.stop();
  });
  report.add(thr);
  if (sink == 12345.0f) std::cerr << "";
}

void run(const bench::Options& o, const bench::Data& d, bench::Report& report) {
  if (o.check) {
    const Samples s = make_samples(d, bench::check_samples);
    const Samples short_s = make_samples(d, bench::w7_short_check_samples);
    auto check = [&](const bench::Workload& w, const Samples& train, const std::string& id) {
      auto net = make_net(w);
      reset_to(*net, bench::initial_parameters(w));
      fit(*net, w, train, static_cast<std::size_t>(w.batch));
      std::vector<td::vec_t> out;
      for (std::int64_t i = 0; i < bench::check_eval_samples; ++i) {
        out.push_back(net->predict(s.x[static_cast<std::size_t>(i)]));
      }
      bench::Record r{id, "check", static_cast<std::int64_t>(train.x.size()), 0,
                      "cost on the first 1000 samples"};
      r.check_value = bench::check_cost(w, d, [&](std::int64_t i, int k) {
        return out[static_cast<std::size_t>(i)][static_cast<std::size_t>(k)];
      });
      report.add(r);
    };
    for (const auto& w : trained_workloads()) {
      if (w.id != "W1" && w.id != "W4" && w.id != "W7") continue;
      check(w, s, w.id);
      if (w.id == "W7") check(w, short_s, "W7-500");
    }
    {  // W7's outputs for the first images from the initial weights
      auto net = make_w7_net();
      reset_to(*net, bench::w7_initial_parameters());
      bench::Record r{"W7", "outputs", bench::w7_output_check_images, 0,
                      "predict(vec_t) of the first 100 images, initial weights"};
      for (std::int64_t i = 0; i < bench::w7_output_check_images; ++i) {
        const td::vec_t out = net->predict(s.x[static_cast<std::size_t>(i)]);
        r.values.insert(r.values.end(), out.begin(), out.end());
      }
      report.add(r);
    }
    return;
  }

  std::uint64_t state = 42;
  for (const auto& w : trained_workloads()) {
    if (!o.wants(w.id)) continue;
    const std::int64_t n = o.samples_for(w.id, d.n);
    Samples s = make_samples(d, n);
    const auto init = bench::initial_parameters(w);
    auto net = make_net(w);
    reset_to(*net, init);
    {
      Samples warm;
      const std::size_t k = static_cast<std::size_t>(std::min<std::int64_t>(n, 512));
      warm.x.assign(s.x.begin(), s.x.begin() + static_cast<std::ptrdiff_t>(k));
      warm.y.assign(s.y.begin(), s.y.begin() + static_cast<std::ptrdiff_t>(k));
      fit(*net, w, warm, static_cast<std::size_t>(w.batch));
    }
    bench::Record r{w.id, "train", n, bench::training_flops(w),
                    "network::fit(gradient_descent), shuffled vectors"};
    bench::repeat(r, o.runs, [&] {
      reset_to(*net, init);
      bench::Timer timer;
      shuffle(s, state);
      fit(*net, w, s, static_cast<std::size_t>(w.batch));
      return timer.stop();
    });
    report.add(r);
    if (w.id == "W7") w7_inference(o, d, report);
  }

  if (o.wants("W5")) {
    const bench::Workload w = bench::w5_workload();
    auto net = make_net(w);
    reset_to(*net, bench::initial_parameters(w));
    const std::int64_t n1 = std::min<std::int64_t>(10000, d.n);
    const Samples s = make_samples(d, n1);
    float sink = 0;
    bench::Record lat{"W5", "latency", n1, bench::forward_flops(w), "predict(vec_t)"};
    bench::repeat(lat, o.runs, [&] {
      bench::Timer timer;
      for (const auto& x : s.x) sink += net->predict(x)[0];
      return timer.stop();
    });
    report.add(lat);
    std::vector<td::tensor_t> batch;
    for (const auto& x : s.x) batch.push_back(td::tensor_t{x});
    bench::Record thr{"W5", "throughput", n1, bench::forward_flops(w),
                      "predict(std::vector<tensor_t>) of 10000"};
    bench::repeat(thr, std::max(o.runs, 5), [&] {
      bench::Timer timer;
      sink += net->predict(batch)[0][0][0];
      return timer.stop();
    });
    report.add(thr);
    if (sink == 12345.0f) std::cerr << "";
  }

  if (o.wants("W6")) {
    const bench::Workload w = bench::w6_workload();
    auto net = make_net(w);
    const auto init = bench::initial_parameters(w);
    const std::int64_t n = o.samples_for("W6", d.n);
    const Samples s = make_samples(d, n);
    bench::Record r{"W6", "backprop", n, bench::training_flops(w),
                    "fit() with batch 1: no gradient-only API, includes the weight update"};
    bench::repeat(r, o.runs, [&] {
      reset_to(*net, init);
      bench::Timer timer;
      fit(*net, w, s, 1);
      return timer.stop();
    });
    report.add(r);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  const bench::Options o = bench::parse_options(argc, argv);
#ifdef CNN_SINGLE_THREAD
  const int threads = 1;
  const std::string how = "CNN_SINGLE_THREAD";
#else
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  const std::string how = "std::async pool of hardware_concurrency() threads";
#endif
  if (o.threads != threads) {
    throw std::invalid_argument("this build runs " + std::to_string(threads) + " thread(s) (" +
                                how + "), not " + std::to_string(o.threads));
  }
  const bench::Data d = bench::load_data(o);
  bench::Report report("tiny-dnn", o);
  report.meta("data", d.source);
  report.meta("threads", how);
#ifdef CNN_USE_AVX
  report.meta("backend", "avx (CNN_USE_AVX)");
#else
  report.meta("backend", "internal");
#endif
  run(o, d, report);
  bench::write_reports(o.json, {&report});
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_tinydnn: " << e.what() << '\n';
  return 1;
}
