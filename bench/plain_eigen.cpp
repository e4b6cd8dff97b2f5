// The plain-Eigen peer (see plain_eigen.hpp): the same maths as backprop's batched
// path written directly against Eigen, with runtime layer sizes.
#include "plain_eigen.hpp"

#include <Eigen/Core>
#include <numeric>

namespace bench {
namespace {

using Eigen::MatrixXf;
using Eigen::VectorXf;

class PlainNet {
 public:
  explicit PlainNet(const Workload& w) : m_w(w), m_layers(w.sizes.size() - 1) {
    m_W.resize(m_layers);
    m_b.resize(m_layers);
    m_Z.resize(m_layers);
    m_A.resize(m_layers);
    m_D.resize(m_layers);
    m_nw.resize(m_layers);
    m_nb.resize(m_layers);
    reset();
  }

  void reset() {
    const auto init = initial_parameters(m_w);
    for (std::size_t l = 0; l < m_layers; ++l) {
      m_W[l] = Eigen::Map<const MatrixXf>(init[l].weights.data(), init[l].out, init[l].in);
      m_b[l] = Eigen::Map<const VectorXf>(init[l].biases.data(), init[l].out);
    }
  }

  /// One epoch of mini-batch SGD over the columns `order` of X, Y (gathered per batch).
  template <class MX, class MY>
  void train(const MX& X, const MY& Y, const std::vector<std::int64_t>& order) {
    const auto n = static_cast<Eigen::Index>(order.size());
    const Eigen::Index m = m_w.batch;
    for (Eigen::Index k = 0; k < n; k += m) {
      const Eigen::Index count = std::min(m, n - k);
      m_Xb.resize(X.rows(), count);
      m_Yb.resize(Y.rows(), count);
      for (Eigen::Index j = 0; j < count; ++j) {
        const auto src = static_cast<Eigen::Index>(order[static_cast<std::size_t>(k + j)]);
        m_Xb.col(j) = X.col(src);
        m_Yb.col(j) = Y.col(src);
      }
      step(m_Xb, m_Yb);
    }
  }

  /// Forward pass of a batch; the output is m_A.back().
  template <class MX>
  void forward(const MX& X) {
    for (std::size_t l = 0; l < m_layers; ++l) {
      MatrixXf& z = m_Z[l];
      z.resize(m_W[l].rows(), X.cols());
      if (l == 0) {
        z.noalias() = m_W[l] * X;
      } else {
        z.noalias() = m_W[l] * m_A[l - 1];
      }
      z.colwise() += m_b[l];
      activate(l + 1 == m_layers ? m_w.output : m_w.hidden, z, m_A[l]);
    }
  }

  [[nodiscard]] const MatrixXf& output() const { return m_A.back(); }

  /// Per-sample gradient into preallocated m_nw, m_nb (W6). Returns one coefficient.
  float backprop_sample(const float* x, int label) {
    const Eigen::Map<const VectorXf> xv(x, m_w.sizes[0]);
    forward_sample(xv);
    VectorXf delta = m_av.back();
    delta(label) -= 1.0f;
    delta.array() *= m_av.back().array() * (1.0f - m_av.back().array());
    for (std::size_t l = m_layers; l-- > 0;) {
      m_nb[l] = delta;
      if (l == 0) {
        m_nw[l].noalias() = delta * xv.transpose();
      } else {
        m_nw[l].noalias() = delta * m_av[l - 1].transpose();
        m_gv.noalias() = m_W[l].transpose() * delta;
        delta = (m_gv.array() * m_av[l - 1].array() * (1.0f - m_av[l - 1].array())).matrix();
      }
    }
    return m_nw[0](0, 0);
  }

  /// Batch-1 inference into a preallocated vector; returns one output.
  float infer_sample(const float* x) {
    const Eigen::Map<const VectorXf> xv(x, m_w.sizes[0]);
    forward_sample(xv);
    return m_av.back()(0);
  }

 private:
  /// Sigmoid forward pass of one sample into m_zv, m_av (W5 latency, W6).
  void forward_sample(const Eigen::Map<const VectorXf>& xv) {
    m_zv.resize(m_layers);
    m_av.resize(m_layers);
    for (std::size_t l = 0; l < m_layers; ++l) {
      m_zv[l].resize(m_W[l].rows());
      if (l == 0) {
        m_zv[l].noalias() = m_W[l] * xv;
      } else {
        m_zv[l].noalias() = m_W[l] * m_av[l - 1];
      }
      m_zv[l] += m_b[l];
      m_av[l] = ((-m_zv[l].array()).exp() + 1.0f).inverse().matrix();
    }
  }

  static void activate(Act act, const MatrixXf& z, MatrixXf& a) {
    a.resize(z.rows(), z.cols());
    switch (act) {
      case Act::sigmoid:
        a.array() = ((-z.array()).exp() + 1.0f).inverse();
        break;
      case Act::relu:
        a.array() = z.array().max(0.0f);
        break;
      case Act::softmax:
        a.array() = (z.rowwise() - z.colwise().maxCoeff()).array().exp();
        a.array().rowwise() /= a.colwise().sum().array();
        break;
    }
  }

  /// w -= eta/m * sum grad, for the batch (X, Y).
  void step(const MatrixXf& X, const MatrixXf& Y) {
    forward(X);
    const std::size_t L = m_layers - 1;
    const float rate = static_cast<float>(m_w.eta / static_cast<double>(X.cols()));
    m_D[L].resize(Y.rows(), Y.cols());
    if (m_w.cost == Cost::quadratic) {
      m_D[L].array() = (m_A[L] - Y).array() * m_A[L].array() * (1.0f - m_A[L].array());
    } else {
      m_D[L] = m_A[L] - Y;
    }
    for (std::size_t l = L + 1; l-- > 0;) {
      if (l > 0) {
        // delta_{l-1} from the weights before their update.
        m_G.resize(m_W[l].cols(), X.cols());
        m_G.noalias() = m_W[l].transpose() * m_D[l];
        m_D[l - 1].resize(m_G.rows(), m_G.cols());
        if (m_w.hidden == Act::sigmoid) {
          m_D[l - 1].array() = m_G.array() * m_A[l - 1].array() * (1.0f - m_A[l - 1].array());
        } else {
          m_D[l - 1].array() = (m_Z[l - 1].array() > 0.0f).select(m_G.array(), 0.0f);
        }
        m_W[l].noalias() -= rate * (m_D[l] * m_A[l - 1].transpose());
      } else {
        m_W[l].noalias() -= rate * (m_D[l] * X.transpose());
      }
      m_b[l].noalias() -= rate * m_D[l].rowwise().sum();
    }
  }

  const Workload& m_w;
  std::size_t m_layers;
  std::vector<MatrixXf> m_W;
  std::vector<VectorXf> m_b;
  std::vector<MatrixXf> m_Z, m_A, m_D, m_nw;
  std::vector<VectorXf> m_nb, m_zv, m_av;
  MatrixXf m_G, m_Xb, m_Yb;
  VectorXf m_gv;
};

MatrixXf one_hot(const Data& d) {
  MatrixXf y = MatrixXf::Zero(d.classes, d.n);
  for (std::int64_t i = 0; i < d.n; ++i) y(d.labels[static_cast<std::size_t>(i)], i) = 1.0f;
  return y;
}

}  // namespace

void run_plain_eigen(const Options& o, const Data& d, Report& report) {
  const Eigen::Map<const MatrixXf> X(d.x.data(), d.inputs, d.n);
  const MatrixXf Y = one_hot(d);

  if (o.check) {
    for (const auto& w : training_workloads()) {
      if (w.id != "W1" && w.id != "W4") continue;
      PlainNet net(w);
      std::vector<std::int64_t> order(check_samples);
      std::iota(order.begin(), order.end(), 0);
      net.train(X, Y, order);
      net.forward(X.leftCols(check_eval_samples));
      Record r{w.id, "check", check_samples, 0, "cost on the first 1000 samples"};
      r.check_value = check_cost(w, d, [&](std::int64_t i, int k) { return net.output()(k, i); });
      report.add(r);
    }
    return;
  }

  if (o.wants("W7")) report.skip("W7", "the plain-Eigen peer has no convolution layers");
  for (const auto& w : training_workloads()) {
    if (!o.wants(w.id)) continue;
    const std::int64_t n = o.samples_for(w.id, d.n);
    PlainNet net(w);
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::uint64_t state = 42;
    {  // warm-up
      std::vector<std::int64_t> warm(order.begin(),
                                     order.begin() + std::min<std::int64_t>(n, 2048));
      net.train(X, Y, warm);
    }
    Record r{w.id, "train", n, training_flops(w), "hand-written Eigen, gathered shuffled batches"};
    repeat(r, o.runs, [&] {
      net.reset();
      Timer timer;
      shuffle_indices(order, state);
      net.train(X, Y, order);
      return timer.stop();
    });
    report.add(r);
  }

  if (o.wants("W5")) {
    const Workload w = w5_workload();
    PlainNet net(w);
    const std::int64_t n1 = std::min<std::int64_t>(10000, d.n);
    float sink = 0;
    Record lat{"W5", "latency", n1, forward_flops(w), "batch 1, per-sample loop"};
    repeat(lat, o.runs, [&] {
      Timer timer;
      for (std::int64_t i = 0; i < n1; ++i) sink += net.infer_sample(d.sample(i));
      return timer.stop();
    });
    report.add(lat);
    Record thr{"W5", "throughput", n1, forward_flops(w), "one batch of 10000"};
    net.forward(X.leftCols(n1));
    repeat(thr, std::max(o.runs, 5), [&] {
      Timer timer;
      net.forward(X.leftCols(n1));
      sink += net.output()(0, 0);
      return timer.stop();
    });
    report.add(thr);
    if (sink == 12345.0f) std::cerr << "";
  }

  if (o.wants("W6")) {
    const Workload w = w6_workload();
    PlainNet net(w);
    const std::int64_t n = o.samples_for("W6", d.n);
    float sink = 0;
    Record r{"W6", "backprop", n, training_flops(w), "gradient into preallocated buffers"};
    repeat(r, o.runs, [&] {
      Timer timer;
      for (std::int64_t i = 0; i < n; ++i) {
        sink += net.backprop_sample(d.sample(i), d.labels[static_cast<std::size_t>(i)]);
      }
      return timer.stop();
    });
    report.add(r);
    if (sink == 12345.0f) std::cerr << "";
  }
}

void measure_eigen_peak(int n, int runs, Report& report) {
  const MatrixXf A = MatrixXf::Random(n, n);
  const MatrixXf B = MatrixXf::Random(n, n);
  MatrixXf C(n, n);
  const int saved = Eigen::nbThreads();
  for (int threads : {1, 2}) {
    Eigen::setNbThreads(threads);
    if (Eigen::nbThreads() != threads) {
      report.skip("sgemm" + std::to_string(threads), "Eigen built without OpenMP");
      continue;
    }
    C.noalias() = A * B;  // warm-up
    Record r{"sgemm", "peak", 1, 2.0 * n * n * n, ""};
    r.note =
        "Eigen " + std::to_string(n) + "^3 float GEMM, " + std::to_string(threads) + " thread(s)";
    r.workload = "sgemm_t" + std::to_string(threads);
    repeat(r, std::max(runs, 5), [&] {
      Timer timer;
      C.noalias() = A * B;
      return timer.stop();
    });
    report.add(r);
  }
  Eigen::setNbThreads(saved);
}

}  // namespace bench
