// The libtorch peer (C++ frontend, float32): the workloads of common.hpp with
// torch::nn::Linear layers, autograd and torch::optim::SGD. The losses are chosen
// so that the update is exactly backprop's: w -= eta/m * sum of per-sample
// gradients, with C = 1/2 ||a - y||^2 per sample (W1-W3) or -ln a_label of a
// softmax output (W4; cross_entropy's mean reduction is the 1/m). W7, the chapter-6
// convolutional network, is torch::nn::Conv2d + relu + max_pool2d, two nn::Linear and
// log_softmax + nll_loss (mean reduction: the 1/m) on inputs viewed as [N, 1, 28, 28].
#include <dlfcn.h>
#include <torch/torch.h>

#include <numeric>

#include "common.hpp"

namespace {

struct MlpImpl : torch::nn::Module {
  explicit MlpImpl(const bench::Workload& w) : hidden(w.hidden), output(w.output) {
    for (std::size_t l = 0; l + 1 < w.sizes.size(); ++l) {
      layers.push_back(
          register_module("fc" + std::to_string(l), torch::nn::Linear(w.sizes[l], w.sizes[l + 1])));
    }
  }

  void reset_to(const std::vector<bench::LayerInit>& init) {
    torch::NoGradGuard no_grad;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      // LayerInit is Out x In column-major, i.e. In x Out row-major: transpose.
      auto w = torch::from_blob(const_cast<float*>(init[l].weights.data()),
                                {init[l].in, init[l].out}, torch::kFloat32);
      layers[l]->weight.copy_(w.t());
      layers[l]->bias.copy_(torch::from_blob(const_cast<float*>(init[l].biases.data()),
                                             {init[l].out}, torch::kFloat32));
    }
  }

  /// The pre-activation of the output layer (logits); hidden layers activated.
  torch::Tensor logits(torch::Tensor x) {
    for (std::size_t l = 0; l + 1 < layers.size(); ++l) {
      x = layers[l]->forward(x);
      x = hidden == bench::Act::sigmoid ? torch::sigmoid(x) : torch::relu(x);
    }
    return layers.back()->forward(x);
  }

  torch::Tensor forward(torch::Tensor x) {
    auto z = logits(std::move(x));
    return output == bench::Act::softmax ? torch::softmax(z, 1) : torch::sigmoid(z);
  }

  std::vector<torch::nn::Linear> layers;
  bench::Act hidden;
  bench::Act output;
};
TORCH_MODULE(Mlp);

/// W7 (bench::w7_layers()): conv 1->20 5x5, ReLU, max-pool 2, conv 20->40 5x5, ReLU,
/// max-pool 2, flatten [N, 40, 4, 4] -> 640, Linear 640-100 ReLU, Linear 100-10.
struct ConvNetImpl : torch::nn::Module {
  ConvNetImpl()
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 20, 5)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(20, 40, 5)))),
        fc1(register_module("fc1", torch::nn::Linear(640, 100))),
        fc2(register_module("fc2", torch::nn::Linear(100, 10))) {}

  /// init: one LayerInit per layer of w7_layers() (0, 2: conv; 4, 5: dense).
  void reset_to(const std::vector<bench::LayerInit>& init) {
    torch::NoGradGuard no_grad;
    auto set = [](torch::Tensor& weight, torch::Tensor& bias, const bench::LayerInit& li) {
      // PyTorch's [out, in] / [out, C, K, K] layout is LayerInit's matrix row-major.
      std::vector<float> w = bench::row_major(li);
      weight.copy_(torch::from_blob(w.data(), weight.sizes(), torch::kFloat32));
      bias.copy_(torch::from_blob(const_cast<float*>(li.biases.data()), {li.out}, torch::kFloat32));
    };
    set(conv1->weight, conv1->bias, init[0]);
    set(conv2->weight, conv2->bias, init[2]);
    set(fc1->weight, fc1->bias, init[4]);
    set(fc2->weight, fc2->bias, init[5]);
  }

  /// x: N x 784 rows (CHW images), viewed as [N, 1, 28, 28]. Returns the logits.
  torch::Tensor logits(const torch::Tensor& x) {
    auto h = x.view({-1, 1, 28, 28});
    h = torch::max_pool2d(torch::relu(conv1->forward(h)), 2);
    h = torch::max_pool2d(torch::relu(conv2->forward(h)), 2);
    h = torch::relu(fc1->forward(h.flatten(1)));
    return fc2->forward(h);
  }

  torch::Tensor forward(const torch::Tensor& x) { return torch::softmax(logits(x), 1); }

  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(ConvNet);

/// Sets intra-op threads (OpenMP) and, since Debian's libtorch does its GEMMs in
/// OpenBLAS, OpenBLAS's own pool too. Returns what was done.
std::string set_threads(int n) {
  torch::set_num_threads(n);
  std::string what = "torch::set_num_threads(" + std::to_string(n) + ")";
  using SetThreads = void (*)(int);
  if (void* f = dlsym(RTLD_DEFAULT, "openblas_set_num_threads")) {
    reinterpret_cast<SetThreads>(f)(n);
    what += ", openblas_set_num_threads(" + std::to_string(n) + ")";
  }
  return what;
}

struct Tensors {
  torch::Tensor x;       // N x 784 (a view of the data)
  torch::Tensor y;       // N x 10 one-hot
  torch::Tensor labels;  // N, int64
};

Tensors make_tensors(const bench::Data& d) {
  Tensors t;
  t.x = torch::from_blob(const_cast<float*>(d.x.data()), {d.n, d.inputs}, torch::kFloat32);
  std::vector<std::int64_t> lab(d.labels.begin(), d.labels.end());
  t.labels = torch::tensor(lab, torch::kInt64);
  t.y = torch::one_hot(t.labels, 10).to(torch::kFloat32);
  return t;
}

torch::Tensor batch_loss(Mlp& net, const bench::Workload& w, const torch::Tensor& xb,
                         const torch::Tensor& yb, const torch::Tensor& lb) {
  if (w.cost == bench::Cost::log_likelihood) {
    return torch::nn::functional::cross_entropy(net->logits(xb), lb);
  }
  const auto a = net->forward(xb);
  return (a - yb).pow(2).sum() * (0.5 / static_cast<double>(xb.size(0)));
}

/// W7: log_softmax + nll_loss (mean over the mini-batch).
torch::Tensor batch_loss(ConvNet& net, const bench::Workload& /*w*/, const torch::Tensor& xb,
                         const torch::Tensor& /*yb*/, const torch::Tensor& lb) {
  return torch::nll_loss(torch::log_softmax(net->logits(xb), 1), lb);
}

/// One epoch over the rows `order` (a permutation or iota), batches gathered by index_select.
template <class Net>
void train_epoch(Net& net, torch::optim::SGD& opt, const bench::Workload& w, const Tensors& t,
                 const torch::Tensor& order) {
  const std::int64_t n = order.size(0);
  for (std::int64_t k = 0; k < n; k += w.batch) {
    const std::int64_t m = std::min<std::int64_t>(w.batch, n - k);
    const auto idx = order.narrow(0, k, m);
    const auto xb = t.x.index_select(0, idx);
    const auto yb = t.y.index_select(0, idx);
    const auto lb = t.labels.index_select(0, idx);
    opt.zero_grad();
    batch_loss(net, w, xb, yb, lb).backward();
    opt.step();
  }
}

/// W7 inference from the initial weights (no training), eval mode under NoGradGuard:
/// batch-1 latency of forward([1, 1, 28, 28]) and one forward([10000, 1, 28, 28]).
void w7_inference(const bench::Options& o, const Tensors& t, bench::Report& report) {
  ConvNet net;
  net->reset_to(bench::w7_initial_parameters());
  net->eval();
  torch::NoGradGuard no_grad;
  const auto images = t.x.view({t.x.size(0), 1, 28, 28});
  const double flops = bench::w7_forward_flops();
  const std::int64_t n1 = std::min<std::int64_t>(bench::w7_latency_images, images.size(0));
  float sink = 0;
  for (std::int64_t i = 0; i < std::min<std::int64_t>(n1, 100); ++i) {  // warm-up
    sink += net->forward(images.narrow(0, i, 1)).data_ptr<float>()[0];
  }
  bench::Record lat{"W7", "latency", n1, flops,
                    "eval(), NoGradGuard, forward(x[i:i+1]) of [1, 1, 28, 28]"};
  bench::repeat(lat, o.runs, [&] {
    bench::Timer timer;
    for (std::int64_t i = 0; i < n1; ++i) {
      sink += net->forward(images.narrow(0, i, 1)).data_ptr<float>()[0];
    }
    return timer.stop();
  });
  report.add(lat);
  const std::int64_t nb = std::min<std::int64_t>(bench::inference_batch, images.size(0));
  bench::Record thr{"W7", "throughput", nb, flops,
                    "eval(), NoGradGuard, forward(X[0:10000]) of [10000, 1, 28, 28]"};
  sink += net->forward(images.narrow(0, 0, nb)).data_ptr<float>()[0];
  bench::repeat(thr, std::max(o.runs, 5), [&] {
    bench::Timer timer;
    sink += net->forward(images.narrow(0, 0, nb)).data_ptr<float>()[0];
    return timer.stop();
  });
  report.add(thr);
  if (sink == 12345.0f) std::cerr << "";
}

/// --check: W7's outputs for the first images from the initial weights (batched).
void w7_outputs(const Tensors& t, bench::Report& report) {
  ConvNet net;
  net->reset_to(bench::w7_initial_parameters());
  net->eval();
  torch::NoGradGuard no_grad;
  const std::int64_t n = bench::w7_output_check_images;
  const auto out = net->forward(t.x.narrow(0, 0, n).view({n, 1, 28, 28})).contiguous();  // [n, 10]
  bench::Record r{"W7", "outputs", n, 0,
                  "eval(), NoGradGuard, forward of the first 100 images, initial weights"};
  r.values.assign(out.data_ptr<float>(), out.data_ptr<float>() + out.numel());  // row i = image i
  report.add(r);
}

void run(const bench::Options& o, const bench::Data& d, bench::Report& report) {
  const Tensors t = make_tensors(d);
  if (o.check) {
    for (const auto& w : bench::training_workloads()) {
      if (w.id != "W1" && w.id != "W4") continue;
      Mlp net(w);
      net->reset_to(bench::initial_parameters(w));
      torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(w.eta));
      train_epoch(net, opt, w, t, torch::arange(bench::check_samples, torch::kInt64));
      torch::NoGradGuard no_grad;
      const auto out = net->forward(t.x.narrow(0, 0, bench::check_eval_samples)).contiguous();
      const auto acc = out.accessor<float, 2>();
      bench::Record r{w.id, "check", bench::check_samples, 0, "cost on the first 1000 samples"};
      r.check_value = bench::check_cost(w, d, [&](std::int64_t i, int k) { return acc[i][k]; });
      report.add(r);
    }
    for (const std::int64_t n : {bench::check_samples, bench::w7_short_check_samples}) {
      const bench::Workload w = bench::w7_workload();
      ConvNet net;
      net->reset_to(bench::initial_parameters(w));
      torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(w.eta));
      train_epoch(net, opt, w, t, torch::arange(n, torch::kInt64));
      torch::NoGradGuard no_grad;
      const auto out = net->forward(t.x.narrow(0, 0, bench::check_eval_samples)).contiguous();
      const auto acc = out.accessor<float, 2>();
      bench::Record r{n == bench::check_samples ? w.id : "W7-500", "check", n, 0,
                      "cost on the first 1000 samples"};
      r.check_value = bench::check_cost(w, d, [&](std::int64_t i, int k) { return acc[i][k]; });
      report.add(r);
    }
    w7_outputs(t, report);
    return;
  }

  auto gen = at::make_generator<at::CPUGeneratorImpl>(42);
  for (const auto& w : bench::training_workloads()) {
    if (!o.wants(w.id)) continue;
    const std::int64_t n = o.samples_for(w.id, d.n);
    const auto init = bench::initial_parameters(w);
    Mlp net(w);
    net->reset_to(init);
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(w.eta));
    train_epoch(net, opt, w, t, torch::arange(std::min<std::int64_t>(n, 2048), torch::kInt64));
    bench::Record r{w.id, "train", n, bench::training_flops(w),
                    "autograd + optim::SGD, index_select batches"};
    bench::repeat(r, o.runs, [&] {
      net->reset_to(init);
      bench::Timer timer;
      train_epoch(net, opt, w, t, torch::randperm(n, gen, torch::kInt64));
      return timer.stop();
    });
    report.add(r);
  }

  if (o.wants("W7")) {
    const bench::Workload w = bench::w7_workload();
    const std::int64_t n = o.samples_for(w.id, d.n);
    const auto init = bench::initial_parameters(w);
    ConvNet net;
    net->reset_to(init);
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(w.eta));
    train_epoch(net, opt, w, t, torch::arange(std::min<std::int64_t>(n, 2048), torch::kInt64));
    bench::Record r{w.id, "train", n, bench::training_flops(w),
                    "nn::Conv2d + max_pool2d + nn::Linear, autograd + optim::SGD"};
    bench::repeat(r, o.runs, [&] {
      net->reset_to(init);
      bench::Timer timer;
      train_epoch(net, opt, w, t, torch::randperm(n, gen, torch::kInt64));
      return timer.stop();
    });
    report.add(r);
    w7_inference(o, t, report);
  }

  if (o.wants("W5")) {
    const bench::Workload w = bench::w5_workload();
    Mlp net(w);
    net->reset_to(bench::initial_parameters(w));
    c10::InferenceMode guard;
    const std::int64_t n1 = std::min<std::int64_t>(10000, d.n);
    float sink = 0;
    bench::Record lat{"W5", "latency", n1, bench::forward_flops(w),
                      "InferenceMode, forward(x[i:i+1])"};
    bench::repeat(lat, o.runs, [&] {
      bench::Timer timer;
      for (std::int64_t i = 0; i < n1; ++i) {
        sink += net->forward(t.x.narrow(0, i, 1)).data_ptr<float>()[0];
      }
      return timer.stop();
    });
    report.add(lat);
    bench::Record thr{"W5", "throughput", n1, bench::forward_flops(w),
                      "InferenceMode, forward(X[0:10000])"};
    sink += net->forward(t.x.narrow(0, 0, n1)).data_ptr<float>()[0];
    bench::repeat(thr, std::max(o.runs, 5), [&] {
      bench::Timer timer;
      sink += net->forward(t.x.narrow(0, 0, n1)).data_ptr<float>()[0];
      return timer.stop();
    });
    report.add(thr);
    if (sink == 12345.0f) std::cerr << "";
  }

  if (o.wants("W6")) {
    const bench::Workload w = bench::w6_workload();
    Mlp net(w);
    net->reset_to(bench::initial_parameters(w));
    const std::int64_t n = o.samples_for("W6", d.n);
    bench::Record r{"W6", "backprop", n, bench::training_flops(w),
                    "zero_grad + forward + backward on one row"};
    bench::repeat(r, o.runs, [&] {
      bench::Timer timer;
      for (std::int64_t i = 0; i < n; ++i) {
        net->zero_grad();
        const auto a = net->forward(t.x.narrow(0, i, 1));
        ((a - t.y.narrow(0, i, 1)).pow(2).sum() * 0.5).backward();
      }
      return timer.stop();
    });
    report.add(r);
  }

  if (o.peak) {
    const int n = 2048;
    const auto a = torch::rand({n, n});
    const auto b = torch::rand({n, n});
    for (int threads : {1, 2}) {
      set_threads(threads);
      auto c = torch::mm(a, b);
      bench::Record r{"sgemm_t" + std::to_string(threads), "peak", 1, 2.0 * n * n * n,
                      "torch::mm 2048^3 float"};
      bench::repeat(r, std::max(o.runs, 5), [&] {
        bench::Timer timer;
        c = torch::mm(a, b);
        return timer.stop();
      });
      report.add(r);
    }
    set_threads(o.threads);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  const bench::Options o = bench::parse_options(argc, argv);
  torch::manual_seed(1);
  const std::string threads = set_threads(o.threads);
  const bench::Data d = bench::load_data(o);
  bench::Report report("torch", o);
  report.meta("data", d.source);
  report.meta("version", TORCH_VERSION);
  report.meta("threads",
              threads + "; get_num_threads() = " + std::to_string(torch::get_num_threads()));
  report.meta("config", at::show_config());
  run(o, d, report);
  bench::write_reports(o.json, {&report});
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_torch: " << e.what() << '\n';
  return 1;
}
