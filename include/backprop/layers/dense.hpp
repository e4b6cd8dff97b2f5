/// \file
/// \brief `Dense<In, Out, Activation>`: a fully connected layer,
/// z = W a + b, a' = sigma(z), with W of shape Out x In and b of length Out.
///
/// The maths, one column per sample (Nielsen, network.py):
///   forward:   z = W x + b,  y = sigma(z)
///   backward:  given g = dC/dy, delta = dC/dz = sigma'(z)^T g (element-wise for the
///              element-wise activations), dC/dx = W^T delta, dC/db = sum over the
///              samples of delta, dC/dW = delta x^T.
/// As the output layer, the cost gives delta directly (`Cost::output_delta`, which may
/// fuse with the activation: cross-entropy with sigmoid gives delta = a - y).
///
/// `Dense` also owns the fast paths of a first layer: the sparse input of `sgd` (only
/// the weight columns of nonzero inputs; MNIST's pixels are 81% zeros), the padded copy
/// of the weights sgd trains on, and the per-sample kernels of `backprop(x, y)`.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../activations/activations.hpp"
#include "../concepts.hpp"
#include "../detail/aligned.hpp"
#include "../detail/finite.hpp"
#include "../detail/products.hpp"
#include "../detail/sparse_input.hpp"
#include "../init/initializers.hpp"
#include "../init/random.hpp"
#include "activated.hpp"

namespace backprop {

namespace detail {

/// Column vector of one layer's width in the per-sample paths: fixed-size (on the
/// stack, no heap allocation) up to 64 rows, dynamic above.
template <class Scalar, int Rows>
using SmallVector = std::conditional_t<(Rows <= 64), Eigen::Matrix<Scalar, Rows, 1>,
                                       Eigen::Matrix<Scalar, Eigen::Dynamic, 1>>;

}  // namespace detail

/// \brief One `Dense` layer for a scalar type: its parameters W (Out x In) and b (Out),
/// and its forward and backward passes (see the file comment for the maths). This is
/// what `net.layer<I>()` returns for a `Dense` layer I.
/// \tparam Scalar_ `float` or `double`
template <class Scalar_, int In, int Out, class Act>
class DenseLayer
    : public detail::ActivatedLayer<DenseLayer<Scalar_, In, Out, Act>, Act,
                                    Eigen::Matrix<Scalar_, Eigen::Dynamic, Eigen::Dynamic>> {
 public:
  /// `float` or `double`.
  using Scalar = Scalar_;
  /// A batch, one column per sample.
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  /// A column vector.
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  /// Out x In. Storage rule: parameters are always dynamic (heap) Eigen
  /// matrices, whatever the layer size. Large layers must be (784 x 100 doubles
  /// would exceed Eigen's 128 KB static limit and the stack); for small ones,
  /// fixed-size storage was measured to cost 3.5x the compile time of the tests
  /// (167 s vs 47 s of g++ -O2 CPU) for no speed-up at batch sizes >= 10, since
  /// training works on whole mini-batches (dynamic column counts). The sizes are
  /// still checked at compile time; keep the shape when assigning to them.
  using WeightMatrix = Matrix;
  /// Out x 1 (dynamic storage, see `WeightMatrix`).
  using BiasVector = Vector;
  /// The activation, sigma.
  using activation = Act;
  /// In inputs per sample.
  static constexpr int inputs = In;
  /// Out outputs per sample.
  static constexpr int outputs = Out;
  /// The shape of `weights()` and `biases()`: Out x In and Out.
  static constexpr int weight_rows = Out, weight_cols = In, bias_rows = Out;
  /// \var weight_cols
  /// In, the columns of `weights()`.

  /// \var bias_rows
  /// Out, the rows of `biases()`.

  /// The name of the layer's record in the model files: the activation's name.
  static constexpr std::string_view model_name = Act::name;

  DenseLayer() : m_weights(WeightMatrix::Zero(Out, In)), m_biases(BiasVector::Zero(Out)) {}

  /// \brief W, Out x In. Mutable: users may set parameters directly.
  [[nodiscard]] WeightMatrix& weights() noexcept { return m_weights; }
  /// \brief W, Out x In (read-only).
  [[nodiscard]] const WeightMatrix& weights() const noexcept { return m_weights; }
  /// \brief b, Out x 1.
  [[nodiscard]] BiasVector& biases() noexcept { return m_biases; }
  /// \brief b, Out x 1 (read-only).
  [[nodiscard]] const BiasVector& biases() const noexcept { return m_biases; }

  /// \brief Draws b (N(0,1) for `Init::normal` and `scaled_normal`, else zero).
  void initialize_biases(Rng& rng, Init init) { detail::init_biases(rng, m_biases, init); }
  /// \brief Draws W in row-major order as `init` says (N(0,1), N(0,1/In), Xavier, He).
  void initialize_weights(Rng& rng, Init init) { detail::init_weights(rng, m_weights, init); }

  /// \brief ONNX (io/onnx.hpp): Gemm(x, W, b, transB = 1), then the activation.
  template <class Graph>
  void write_onnx(Graph& g) const {
    g.gemm(m_weights, m_biases);
    g.template activation<Act>();
  }
  /// \brief Reads what `write_onnx` writes (or MatMul + Add, any transB).
  template <class Graph>
  void read_onnx(Graph& g) {
    g.gemm(m_weights, m_biases);
    g.template activation<Act>();
  }

  /// \brief Equal W and b.
  friend bool operator==(const DenseLayer& a, const DenseLayer& b) {
    return a.m_weights == b.m_weights && a.m_biases == b.m_biases;
  }

  // ---- inference (const, thread-safe) ----

  /// \brief y = sigma(W x + b) for a batch (one column per sample); also z with `z_out`.
  /// A batch in memory (column-major) with at most half its values nonzero is
  /// multiplied over its nonzero values only, with sgd's sparse first-layer kernels.
  template <class X>
  void forward(const X& x, Matrix& y, Matrix* z_out = nullptr) const {
    Matrix z;
    if (!sparse_forward(x, z)) {
      z.resize(Out, x.cols());
      detail::multiply(z, m_weights, x);
      z.colwise() += m_biases;
    }
    y.resize(Out, x.cols());
    detail::activation_forward<Act>(z, y);
    if (z_out != nullptr) *z_out = std::move(z);
  }

  /// \brief sigma(W x + b) for one sample (a fixed-size vector up to 64 rows).
  /// With at least 64 inputs and at most detail::small_layer outputs, an input with at
  /// most half its values nonzero (MNIST's pixels: 19%) is summed over the weight columns
  /// of its nonzero values only, as backprop(x, y) does; NaN and Inf count as nonzero.
  template <class X>
  [[nodiscard]] auto forward_sample(const X& x) const {
    detail::SmallVector<Scalar, Out> z(Out);
    if (!sparse_forward_sample(x, z)) {
      detail::multiply(z, m_weights, x);
      z += m_biases;
    }
    detail::SmallVector<Scalar, Out> a(Out);
    detail::activation_forward<Act>(z, a);
    return a;
  }

  /// forward's sparse path: z = W x + b over the nonzero values of x (In x m, in memory,
  /// column-major), if at most half of them are nonzero; returns false otherwise.
  template <class X>
  bool sparse_forward(const X& x, Matrix& z) const {
    constexpr bool in_memory = (Eigen::internal::traits<X>::Flags & Eigen::DirectAccessBit) != 0 &&
                               (Eigen::internal::traits<X>::Flags & Eigen::RowMajorBit) == 0 &&
                               X::InnerStrideAtCompileTime == 1;
    if constexpr (in_memory && In >= 64 && In <= 65536) {
      SparseInputs sparse;
      bool finite = true;
      if (!sparse.build(x.data(), In, x.cols(), x.outerStride(), 0.5, finite)) return false;
      std::vector<Eigen::Index> samples(static_cast<std::size_t>(x.cols()));
      std::iota(samples.begin(), samples.end(), Eigen::Index{0});
      SparseInputBatch batch{&sparse, samples.data(), x.cols()};
      batch.parallel = parallel_sparse(batch);
      sparse_first_z<Out>(m_weights.data(), batch, z);
      return true;
    } else {
      (void)x;
      (void)z;
      return false;
    }
  }

  /// forward_sample's sparse path: z = W x + b over the nonzero values of x, if at most
  /// half of them are nonzero; returns false (z untouched) otherwise.
  template <class X>
  bool sparse_forward_sample(const X& x, detail::SmallVector<Scalar, Out>& z) const {
    if constexpr (sample_kernels && In >= 64) {
      const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>> column(x);
      return sparse_column_z(column.data(), std::size_t{In} / 2, z.data());
    } else {
      (void)x;
      (void)z;
      return false;
    }
  }

  /// z = W x + b (Out values) over the nonzero values of the contiguous column x[0, In)
  /// (NaN and Inf count as nonzero), if there are at most `max_nonzero` of them; returns
  /// false (z untouched) otherwise. For sample_kernels layers.
  bool sparse_column_z(const Scalar* x, std::size_t max_nonzero, Scalar* z) const {
    std::array<std::uint16_t, In + 16> rows;
    std::array<Scalar, In + 16> values;
    const std::size_t nonzero = detail::compress_nonzeros(x, In, rows.data(), values.data());
    if (nonzero > max_nonzero) return false;
    detail::sparse_column_sum<Out>(m_weights.data(), m_biases.data(), rows.data(), values.data(), 0,
                                   nonzero, z);
    return true;
  }

  // ---- training, batched ----

  /// The sparse copy of sgd's training inputs when this is the first layer (16-bit
  /// row indices for up to 65536 inputs).
  using SparseInputs =
      detail::SparseColumns<Scalar, std::conditional_t<(In <= 65536), std::uint16_t, std::int32_t>>;
  /// A mini-batch of the columns of the sparse copy (`sparse_batch`).
  using SparseInputBatch = detail::SparseBatch<Scalar, typename SparseInputs::RowIndexType>;

  /// What a training pass keeps for its backward pass, and reused buffers.
  struct Workspace {
    /// z, a = sigma(z) and delta = dC/dz of the batch.
    ///@{
    Matrix z, a, delta;
    ///@}
    /// Packing buffers of the large products (forward, backward, weight gradient).
    ///@{
    detail::GemmWorkspace<Scalar> gemm_forward, gemm_backward, gemm_update;
    ///@}
    /// First layer only: sgd's sparse copy of the inputs, and its working copy of the
    /// weights (aligned, columns of whole vectors: copy_weights) while `padded_active`.
    ///@{
    SparseInputs sparse;
    detail::AlignedMatrix<Scalar> padded;
    bool padded_active = false;
    ///@}
    /// First layer only: update_mini_batch's sparse copy of its batch (apart from sgd's,
    /// which a callback's call must not overwrite) and the batch's sample indices.
    ///@{
    SparseInputs batch_sparse;
    std::vector<Eigen::Index> batch_samples;
    ///@}
  };

  /// \brief Training forward pass into `ws` (`masks`, the dropout generator, is unused).
  template <class X>
  void forward(const X& x, Workspace& ws, Rng* /*masks*/) const {
    if constexpr (detail::is_sparse_batch<X>) {
      live_weights(*this, ws, [&](auto ld, const auto& w) {
        sparse_first_z<decltype(ld)::value>(w.data(), x, ws.z);
      });
    } else {
      ws.z.resize(Out, x.cols());
      ws.gemm_forward.template assign<false, false>(ws.z, m_weights, x);
      ws.z.colwise() += m_biases;
    }
    ws.a.resize(Out, ws.z.cols());
    detail::activation_forward<Act>(ws.z, ws.a);
  }

  // output(ws), cost<Cost>(ws, y), backward and backward_cost: detail::ActivatedLayer.

  /// \brief From ws.delta = dC/dz: dx = W^T delta (with the current W), then the
  /// parameter gradients to `sink`: dC/dW = delta x^T, dC/db = the row sums of delta.
  /// `sink(slot, param, add)` may update `param` in place; `add(target, factor,
  /// accumulate)` does target += factor * gradient (or target = gradient).
  template <class X, class Sink>
  void backward_delta(const X& x, Workspace& ws, Matrix* dx, Sink& sink) {
    const Matrix& delta = ws.delta;
    if (dx != nullptr) {
      dx->resize(In, delta.cols());
      ws.gemm_backward.template assign<true, false>(*dx, m_weights, delta);
    }
    live_weights(*this, ws, [&](auto ld, auto& w) {
      sink(std::integral_constant<int, 0>{}, w, [&](auto& target, Scalar factor, bool accumulate) {
        constexpr int Ld = decltype(ld)::value;
        if constexpr (detail::is_sparse_batch<X>) {
          if (!accumulate) target.setZero();
          if (target.data() == w.data()) {
            sparse_outer_add<Ld>(target.data(), factor, delta, x);
          } else {
            sparse_outer_add<Out>(target.data(), factor, delta, x);
          }
        } else if (accumulate) {
          ws.gemm_update.template add<false, true>(target, factor, delta, x);
        } else {
          ws.gemm_update.template assign<false, true>(target, delta, x);
        }
      });
    });
    sink(std::integral_constant<int, 1>{}, m_biases,
         [&](auto& target, Scalar factor, bool accumulate) {
           if (accumulate) {
             target.noalias() += factor * delta.rowwise().sum();
           } else {
             target.noalias() = delta.rowwise().sum();
           }
         });
  }

  // ---- sgd's first-layer hooks ----

  /// \brief Builds the sparse copy of sgd's training inputs when at most `density` of
  /// them are nonzero; returns whether it did. `finite` is then set.
  bool prepare_sparse_inputs(Workspace& ws, const Matrix& data, double density,
                             bool& finite) const {
    return ws.sparse.build(data, density, finite);
  }

  /// \brief The mini-batch of sample indices `samples[0, count)` of the sparse copy.
  [[nodiscard]] static SparseInputBatch sparse_batch(const Workspace& ws,
                                                     const Eigen::Index* samples,
                                                     Eigen::Index count) {
    SparseInputBatch xs{&ws.sparse, samples, count};
    xs.parallel = parallel_sparse(xs);
    return xs;
  }

  /// \brief update_mini_batch's sparse first layer: when `x` (In x m, column-major, any
  /// column stride) has at most `density` nonzeros, copies them into the workspace and
  /// returns the batch of its m columns (the same kernels as sgd's sparse path; NaN and
  /// Inf are kept as nonzeros, as the products would propagate them); otherwise nullptr.
  /// 784-30-10, batch 10, MNIST: see bench W1 train_contiguous.
  [[nodiscard]] const SparseInputBatch* sparse_mini_batch(Workspace& ws, const Scalar* x,
                                                          Eigen::Index m, Eigen::Index stride,
                                                          SparseInputBatch& out,
                                                          double density = 0.5) const {
    bool finite = true;
    if (!ws.batch_sparse.build(x, In, m, stride, density, finite)) return nullptr;
    if (ws.batch_samples.size() != static_cast<std::size_t>(m)) {
      ws.batch_samples.resize(static_cast<std::size_t>(m));
      std::iota(ws.batch_samples.begin(), ws.batch_samples.end(), Eigen::Index{0});
    }
    out = SparseInputBatch{&ws.batch_sparse, ws.batch_samples.data(), m};
    out.parallel = parallel_sparse(out);
    return &out;
  }

  /// \brief Asks for the nonzeros of sparse sample `s` in the level-2 cache.
  static void prefetch_sample(const Workspace& ws, std::size_t s) noexcept {
    const auto& sp = ws.sparse;
    detail::prefetch_range<2>(sp.rows.get(), sp.starts[s], sp.starts[s + 1]);
    detail::prefetch_range<2>(sp.values.get(), sp.starts[s], sp.starts[s + 1]);
  }

  /// sgd's sparse first layer with plain SGD works on a copy of the weights that starts
  /// a 64-byte cache line, with columns padded to whole 16-float vectors where Out is
  /// at most small_layer: every column then starts a cache line and the kernels need
  /// no masks or scalar tails. 784-30-10: the two sparse loops take 25% less time (30
  /// rows touch 2.75 cache lines per column on average, padded to 32 rows exactly 2).
  /// (Whatever the instruction set: AVX2's 8-lane vectors divide the padded columns
  /// too, and the portable loops read only Out rows of them.) Wider layers with whole
  /// vectors of rows are copied unpadded, for the alignment only: Eigen aligns its
  /// storage to 16 bytes in a program compiled without -mavx (784-1024-1024-10, no
  /// -march, AMD EPYC: the sparse weight update took 1.35 times the native build's time
  /// on unaligned columns, 0.8 times on the copy).
  static constexpr bool copy_weights =
      std::is_same_v<Scalar, float> && (Out <= detail::small_layer || Out % 16 == 0);
  /// The rows of the copy of W: Out rounded up to whole 16-float vectors, or Out.
  static constexpr int padded_rows = Out <= detail::small_layer ? (Out + 15) / 16 * 16 : Out;

  /// \brief Start of an epoch's mini-batches: with `plain_sparse` (plain SGD on the
  /// sparse copy, no per-batch callback) the padded copy of W takes over.
  void begin_epoch(Workspace& ws, bool plain_sparse) const {
    if (!(copy_weights && plain_sparse && !ws.sparse.empty())) return;
    if (ws.padded.rows() != padded_rows || ws.padded.cols() != In) {
      ws.padded.resize(padded_rows, In);
      ws.padded.map().setZero();
    }
    ws.padded.map().topRows(Out) = m_weights;
    ws.padded_active = true;
  }

  /// \brief End of an epoch's mini-batches: copies the padded W back, if in use.
  void end_epoch(Workspace& ws) noexcept {
    if (!ws.padded_active) return;
    ws.padded_active = false;
    m_weights = ws.padded.map().topRows(Out);  // same size: no allocation
  }

  /// \brief Drops the padded copy (its weights diverged; the caller restores them).
  static void abandon_epoch(Workspace& ws) noexcept { ws.padded_active = false; }

  /// \brief Whether every parameter is finite, W read where training keeps it.
  [[nodiscard]] bool parameters_finite(const Workspace& ws) const {
    return (ws.padded_active ? detail::all_finite(ws.padded.map())
                             : detail::all_finite(m_weights)) &&
           detail::all_finite(m_biases);
  }

  // ---- backprop(x, y): one sample, the seed's algorithm ----

  /// backprop(x, y) computes a first layer with the kernels of sparse_input.hpp: at most
  /// small_layer outputs and up to 4096 inputs (the nonzero inputs are gathered on the
  /// stack).
  static constexpr bool sample_kernels = Out <= detail::small_layer && In <= 4096;

  /// backprop(x, y) multiplies by W through fixed-size maps, coefficient-based (no call
  /// into Eigen's matrix-vector kernel), when both sizes are at most 64.
  static constexpr bool small_sample_layer = In <= 64 && Out <= 64;

  /// A column of N values for the per-sample path, on the stack up to 64 rows.
  template <int N>
  using SampleVector = detail::SmallVector<Scalar, N>;
  /// z and the activations of one sample, on the stack up to 64 rows.
  struct SampleState {
    /// z and a = sigma(z).
    ///@{
    detail::SmallVector<Scalar, Out> z, a;
    ///@}
  };
  /// One sample's input for the per-sample path, on the stack up to 64 rows.
  using SampleInput = detail::SmallVector<Scalar, In>;

  /// \brief One sample's training pass (no dropout: backprop is the seed's algorithm).
  /// \tparam First whether `x` is the network's input (a contiguous column)
  template <bool First, class X>
  void sample_forward(const X& x, SampleState& s) const {
    auto& z = s.z;
    if constexpr (First && sample_kernels) {
      // Only the weight columns of nonzero inputs (MNIST: 19% of the pixels).
      z.resize(Out);
      sparse_column_z(x.data(), std::size_t{In}, z.data());
    } else {
      if constexpr (small_sample_layer && !First) {
        z.noalias() = fixed_weights().lazyProduct(x);
      } else {
        z.noalias() = m_weights * x;
      }
      z += m_biases;
    }
    s.a.resize(z.rows());
    detail::activation_forward<Act>(z, s.a);
  }

  /// \brief The output delta of one sample from the cost.
  template <class Cost, class Y>
  void sample_output_delta(const SampleState& s, const Y& y,
                           detail::SmallVector<Scalar, Out>& delta) const {
    Cost::template output_delta<Act>(s.z, s.a, y, delta);
  }

  /// \brief delta = sigma'(z)^T g for one sample.
  template <class G>
  void sample_delta(const SampleState& s, const G& g,
                    detail::SmallVector<Scalar, Out>& delta) const {
    delta.resize(Out);
    detail::activation_backward<Act>(s.z, s.a, g, delta);
  }

  /// \brief One sample's gradients from delta: nabla_b = delta, nabla_w = delta x^T, and
  /// (with `dx`) dx = W^T delta.
  template <bool First, class X>
  void sample_backward(const detail::SmallVector<Scalar, Out>& delta, const X& x, BiasVector& nb,
                       WeightMatrix& nw, detail::SmallVector<Scalar, In>* dx) const {
    // A plain copy: Eigen's vectorised assignment from a fixed-size vector of 2 or 3
    // floats trips a false -Warray-bounds in g++ 12.
    nb.resize(Out);
    std::copy_n(delta.data(), Out, nb.data());
    if constexpr (First && sample_kernels) {
      nw.resize(Out, In);
      detail::outer_product_columns<Out>(nw.data(), delta.data(), x.data(), In);
    } else {
      nw.noalias() = delta * x.transpose();
    }
    if (dx != nullptr) {
      dx->resize(In);
      if constexpr (small_sample_layer) {
        dx->noalias() = fixed_weights().transpose().lazyProduct(delta);
      } else {
        dx->noalias() = m_weights.transpose() * delta;
      }
    }
  }

 private:
  auto fixed_weights() const {
    using Fixed = Eigen::Matrix<Scalar, Out, In>;
    return Eigen::Map<const Fixed, Eigen::Aligned16>(m_weights.data());
  }

  /// Calls f(std::integral_constant<int, column stride>{}, weights) with W as sgd's
  /// sparse path uses it: the padded copy while in use. `self` and `ws` are both const
  /// (the forward pass) or both not (the update).
  template <class Self, class Work, class F>
  static void live_weights(Self& self, Work& ws, F&& f) {
    if constexpr (copy_weights) {
      if (ws.padded_active) {
        auto padded = ws.padded.map();
        f(std::integral_constant<int, padded_rows>{}, padded);
        return;
      }
    }
    f(std::integral_constant<int, Out>{}, self.m_weights);
  }

  /// Whether the sparse first-layer kernels of this batch may use Eigen's threads:
  /// more than one, and enough work in the batch.
  static bool parallel_sparse(const SparseInputBatch& x) {
    if (Eigen::nbThreads() < 2) return false;
    std::size_t nonzeros = 0;
    const auto* starts = x.data->starts.data();
    for (Eigen::Index j = 0; j < x.count; ++j) {
      const auto sample = static_cast<std::size_t>(x.samples[j]);
      nonzeros += starts[sample + 1] - starts[sample];
    }
    return static_cast<double>(nonzeros) * Out >= detail::parallel_work;
  }

  /// z = W x + b for a sparse batch, W's columns Ld apart (Ld > Out: padded).
  template <int Ld>
  void sparse_first_z(const Scalar* w, const SparseInputBatch& x, Matrix& z) const {
    z.resize(Out, x.count);
    const Scalar* bias = m_biases.data();
    const auto* rows = x.data->rows.get();
    const Scalar* values = x.data->values.get();
    const auto* starts = x.data->starts.data();
    // Wider layers: blocks of rows (a block of the weights stays in the level-2 cache
    // across the batch), on Eigen's threads when the batch is big enough; a layer of
    // one block splits the batch's samples between the threads instead.
    const bool parallel = x.parallel;
    constexpr bool by_rows = Out > detail::small_layer;
    const int parts = parallel && !by_rows ? std::max(1, Eigen::nbThreads()) : 1;
    detail::parallel_for(parts, parts > 1, [&](int part) {
      const Eigen::Index j0 = x.count * part / parts, j1 = x.count * (part + 1) / parts;
      detail::for_row_blocks<Out>(parallel && by_rows, [&](auto block, int r0) {
        constexpr int R = decltype(block)::value;
        for (Eigen::Index j = j0; j < j1; ++j) {
          const auto sample = static_cast<std::size_t>(x.samples[j]);
          if (j + 1 < j1) {
            // The samples are shuffled: fetch the next one's nonzeros while this one sums.
            const auto next = static_cast<std::size_t>(x.samples[j + 1]);
            detail::prefetch_range(rows, starts[next], starts[next + 1]);
            detail::prefetch_range(values, starts[next], starts[next + 1]);
          }
          detail::sparse_column_sum<R, (Ld > Out ? Ld : R)>(
              w + r0, bias + r0, rows, values, starts[sample], starts[sample + 1],
              z.data() + std::ptrdiff_t{Out} * j + r0, Ld);
        }
      });
    });
  }

  /// target += factor * delta x^T over the nonzero inputs only: for every sample j and
  /// nonzero input k, column k of target (Out x In, columns Ld apart) moves by
  /// factor * x_kj * delta_j.
  template <int Ld>
  static void sparse_outer_add(Scalar* w, Scalar factor, const Matrix& delta,
                               const SparseInputBatch& x) {
    static_assert(Ld == Out || Out <= detail::small_layer);
    const auto* rows = x.data->rows.get();
    const Scalar* values = x.data->values.get();
    const auto* starts = x.data->starts.data();
    // Threads take contiguous ranges of columns (inputs), not blocks of rows (see
    // for_row_blocks). Within a range, blocks of rows. Every coefficient receives its
    // samples' terms in batch order, whatever the ranges and blocks.
    const int parts = x.parallel ? std::max(1, Eigen::nbThreads()) : 1;
    detail::parallel_for(parts, parts > 1, [&](int part) {
      using RowIndex = typename SparseInputs::RowIndexType;
      const auto first = static_cast<RowIndex>(std::int64_t{In} * part / parts);
      const std::int64_t last = std::int64_t{In} * (part + 1) / parts;
      detail::for_row_blocks<Out>(false, [&](auto block, int r0) {
        constexpr int R = decltype(block)::value;
        constexpr int Padded = Ld > Out ? Ld : R;
        Scalar d[Padded] = {};  // zero past R: the padded rows stay zero
        for (Eigen::Index j = 0; j < x.count; ++j) {
          const auto sample = static_cast<std::size_t>(x.samples[j]);
          std::size_t begin = starts[sample], end = starts[sample + 1];
          if (parts > 1) {  // the sample's nonzeros in [first, last): rows are ascending
            begin =
                static_cast<std::size_t>(std::lower_bound(rows + begin, rows + end, first) - rows);
            if (last < In) {
              end = static_cast<std::size_t>(
                  std::lower_bound(rows + begin, rows + end, static_cast<RowIndex>(last)) - rows);
            }
          }
          const Scalar* dj = delta.data() + std::ptrdiff_t{Out} * j + r0;
          for (int i = 0; i < R; ++i) d[i] = factor * dj[i];
          detail::sparse_column_update<R, Padded>(w + r0, d, rows, values, begin, end, Ld);
        }
      });
    });
  }

  WeightMatrix m_weights;
  BiasVector m_biases;
};

/// \brief The layer object of `Dense<In, Out, Act>` for a scalar type (the name of
/// earlier versions, when it held only the parameters).
template <class Scalar, int In, int Out, class Act>
using DenseParameters = DenseLayer<Scalar, In, Out, Act>;

/// \brief A fully connected layer: z = W a + b, output sigma(z).
/// \tparam In number of inputs (columns of W)
/// \tparam Out number of outputs (rows of W)
/// \tparam Act the activation, a type satisfying `backprop::Activation`
template <int In, int Out, class Act = Sigmoid>
struct Dense {
  static_assert(In > 0 && Out > 0, "backprop::Dense<In, Out, Act>: In and Out must be positive");
  static_assert(Activation<Act>,
                "backprop::Dense<In, Out, Act>: Act is not an activation: it must satisfy "
                "backprop::Activation (static name plus value/derivative, or forward/backward)");
  /// In inputs per sample.
  static constexpr int inputs = In;
  /// Out outputs per sample.
  static constexpr int outputs = Out;
  /// The activation, sigma.
  using activation = Act;
  /// The layer object for a scalar type (`net.layer<I>()`).
  template <class Scalar>
  using Instance = DenseLayer<Scalar, In, Out, Act>;
  /// The name of earlier versions for `Instance`.
  template <class Scalar>
  using Parameters = Instance<Scalar>;
};

}  // namespace backprop
