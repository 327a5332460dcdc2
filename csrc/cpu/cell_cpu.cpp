// The one-step cell ops on the CPU (schemas: csrc/rnnkit.cpp), what RNNCell, GRUCell
// and LSTMCell run: both products and the gate math of one step in one call.
//
// Forward: gates = x · W_ihᵀ + b_ih (one addmm) += h · W_hhᵀ (one addmm_; GRU keeps the
// hidden product apart, since r scales it with its bias), or the instruction-set kernels'
// rows product instead at small batches (see rows_product_applies); then one fused pass over
// [B, H] (cells.h through vec_math.h) that adds b_hh, applies the nonlinearities, writes
// the new state and, when a backward will follow, the reserve.
// Backward: one fused pass writing the gate gradients, then the GEMMs that the output
// mask asks for (dx, dh, dW; at B <= 4 the rows kernels' instead) and the bias sums.
//
// A cell is often stepped in a Python loop at small sizes, so the cost of a call is
// mostly its dispatches: tensors already contiguous in the compute dtype are used as
// they are (prepare), and nothing is converted back that is already in the caller's dtype.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include "../cell_gemms.h"
#include "cell_ops_cpu.h"
#include "cpu_common.h"
#include "fast_path.h"
#include "rnnkit/layer_checks.h"
#include "rnnkit/no_autocast.h"
#include "vec_math.h"

namespace rnnkit {
namespace cpu {
namespace {

// The instruction-set kernels' passes (fast_kernels.h) for float and double.
template <typename T>
struct Passes;
template <>
struct Passes<float> {
  static constexpr auto lstm = &fast::Kernels::lstm_cell;
  static constexpr auto gru = &fast::Kernels::gru_cell;
  static constexpr auto rnn = &fast::Kernels::rnn_cell;
  static constexpr auto lstm_backward = &fast::Kernels::lstm_cell_backward;
  static constexpr auto rows = &fast::Kernels::rows_product;
  static constexpr auto times = &fast::Kernels::rows_times;
  static constexpr auto outer = &fast::Kernels::rows_outer;
};
template <>
struct Passes<double> {
  static constexpr auto lstm = &fast::Kernels::lstm_cell_f64;
  static constexpr auto gru = &fast::Kernels::gru_cell_f64;
  static constexpr auto rnn = &fast::Kernels::rnn_cell_f64;
  static constexpr auto lstm_backward = &fast::Kernels::lstm_cell_backward_f64;
  static constexpr auto rows = &fast::Kernels::rows_product_f64;
  static constexpr auto times = &fast::Kernels::rows_times_f64;
  static constexpr auto outer = &fast::Kernels::rows_outer_f64;
};

template <typename Args>
using Pass = void (*fast::Kernels::*)(const Args&, int64_t, int64_t);

// Runs `pass` of fk over [0, n), split over the threads in pieces of at least `grain`.
template <typename Args>
void run_split(const fast::Kernels& fk, Pass<Args> pass, const Args& args, int64_t n,
               int64_t grain) {
  at::parallel_for(0, n, grain, [&](int64_t i0, int64_t i1) { (fk.*pass)(args, i0, i1); });
}

// Runs the pointwise pass `pass` of the instruction-set kernels over all rows, or returns
// false when none runs here (fk null: RNNKIT_CPU_ISA=generic, or a CPU without AVX2):
// then the caller runs at::vec's.
template <typename Args>
bool fast_pass(const fast::Kernels* fk, int64_t B, int64_t H, Pass<Args> pass,
               const Args& args) {
  if (fk == nullptr) return false;
  run_split(*fk, pass, args, B, std::max<int64_t>(1, kPointwiseGrain / std::max<int64_t>(1, H)));
  return true;
}

// Weights of at least this many elements are split over the threads by the rows
// product: below, a parallel region costs more than it saves.
constexpr int64_t kParallelProduct = 32768;

// Where the rows product beats ATen's GEMM (MKL), measured on the cell ops (LSTM and RNN
// cells, H = I in {64, 256, 1024}, B in {1, ..., 64}, at AVX-512 and at AVX2; benchmarks/
// results/2026-12-02-cpu-calls-small-batch.md): always up to kSmallRows rows, where a
// GEMM call costs more than its arithmetic; when the dot products are at least 256 long,
// up to 32 rows with 16-float vectors and 8 with 8-float ones (1.1-2.1x MKL there, which
// packs w on every call at those batches; float64 follows the same rule, and its B = 16
// rows gain as much in the module tables). Shorter products spend too much on the sums
// across lanes; more rows re-read w too often. On AMD CPUs MKL's GEMM runs well below
// its speed on Intel's (a Zen 3 at AVX2: 80-100 GFLOP/s at [16, 256] x [256, 1024] of a
// 205 GFLOP/s FMA peak, and 5-8 us a call at [16, 64] x [64, 64]), and with 8-float
// vectors the rows product wins there at every length measured (8 to 1024): up to 32
// rows for products at least 256 long, 16 below, and 16 rows in float64 (LSTMCell
// B=16 H=1024: 5.2 ms by MKL, 2.9 by the rows product; RNNCell B=16 H=64: 33 us, 19;
// at B=32, H=64 and H=128 mixed, float64 no faster; benchmarks/results/
// 2026-12-02-cpu-zen3.md). On a Zen 1, whose FMA units are 128 bits wide, MKL runs
// [64, 1024] x [1024, 4096] at 28 of a 75 GFLOP/s peak, and the rows product wins in
// float32 up to 64 rows from 512 long (LSTMCell B=64 H=1024: 25.9 ms by MKL, 19.7 by
// the rows product; H=512: 6.9, 5.7; at 256 long even, at 64 long and in float64 slower
// or even; benchmarks/results/2026-12-03-cpu-zen1.md). AVX-512 on AMD CPUs keeps the rule
// measured on Intel's until it is measured there.
bool rows_product_applies(const fast::Kernels* fk, int64_t B, int64_t N, int64_t K,
                          at::ScalarType dtype) {
  if (fk == nullptr || N == 0 || B < 1 || K <= 0) return false;
  if (B <= fast::kSmallRows) return true;
  if (fast::cpu_is_amd() && fk->width < 16) {
    if (fast::cpu_is_amd_zen1() && dtype == at::kFloat && K >= 512) return B <= 64;
    return B <= (dtype == at::kDouble || K < 256 ? 16 : 32);
  }
  return K >= 256 && B <= (fk->width >= 16 ? 32 : 8);
}

// out (+)= x · wᵀ (+ bias) by the instruction-set kernels' rows product, where
// rows_product_applies: x [B, K], w [N, K] and out [B, N] contiguous in T.
void small_product(const fast::Kernels& fk, const Tensor& x, const Tensor& w,
                   const Tensor& bias, Tensor& out, bool accumulate) {
  const int64_t B = x.size(0), N = w.size(0), K = w.size(1);
  TORCH_INTERNAL_ASSERT(x.is_contiguous() && w.is_contiguous() && out.is_contiguous() &&
                        x.size(1) == K && out.size(0) == B && out.size(1) == N);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkit::small_product", [&] {
    using T = scalar_t;
    const fast::RowsProductArgsOf<T> args{B,
                                          K,
                                          x.const_data_ptr<T>(),
                                          K,
                                          w.const_data_ptr<T>(),
                                          bias.defined() ? bias.const_data_ptr<T>() : nullptr,
                                          out.mutable_data_ptr<T>(),
                                          N,
                                          accumulate};
    run_split(fk, Passes<T>::rows, args, N, std::max<int64_t>(4, kParallelProduct / K));
  });
}

// Whether a · wᵀ runs as ATen's bfloat16 GEMM on the bfloat16 operands as they are
// (rounded to bfloat16, as torch.nn's bfloat16 cells' products are), rather than on
// float32 copies: where the bfloat16 layers' products run in bfloat16 (products_dtype,
// cpu_common.h), for weights of 512K elements and more or products of 2M multiply-adds
// and more. A float32 copy of such weights at every call costs more than the step
// (LSTMCell B=1 H=512: 770 us against torch.nn's 175 on a Zen 4; 174 so), while the
// GEMM's call costs ~50 us, more than a small step in float32 with its copy
// (LSTMCell B=1 H=256: 65 us so, 102 as a GEMM; benchmarks/results/2026-12-04-cpu-zen4.md).
bool bf16_product(const Tensor& a, const Tensor& w) {
  if (a.scalar_type() != at::kBFloat16 || w.scalar_type() != at::kBFloat16 ||
      products_dtype(at::kBFloat16) != at::kBFloat16)
    return false;
  const int64_t weights = w.size(0) * w.size(1);
  return weights >= (int64_t{1} << 19) || a.size(0) * weights >= (int64_t{1} << 21);
}

// a · wᵀ (+ bias), [B, N] in dtype ct: small_product where it applies, else cell_product.
Tensor step_product(const fast::Kernels* fk, const Tensor& a, const Tensor& w,
                    const OptTensor& bias, at::ScalarType ct) {
  if (bf16_product(a, w)) {
    Tensor out = at::mm(a, w.t()).to(ct);
    if (bias.has_value()) out.add_(*bias);
    return out;
  }
  if (!rows_product_applies(fk, a.size(0), w.size(0), w.size(1), ct)) {
    return cell_product(a, w, bias, ct);
  }
  const Tensor b = bias.has_value() ? prepare(*bias, ct) : Tensor();
  Tensor out = at::empty({a.size(0), w.size(0)}, a.options().dtype(ct));
  small_product(*fk, prepare(a, ct), prepare(w, ct), b, out, /*accumulate=*/false);
  return out;
}

// out += a · wᵀ, out [B, N] contiguous in ct.
void add_step_product(const fast::Kernels* fk, Tensor& out, const Tensor& a, const Tensor& w,
                      at::ScalarType ct) {
  if (bf16_product(a, w)) {
    out.add_(at::mm(a, w.t()));
    return;
  }
  const Tensor x = prepare(a, ct), wc = prepare(w, ct);
  if (rows_product_applies(fk, x.size(0), wc.size(0), wc.size(1), ct)) {
    small_product(*fk, x, wc, Tensor(), out, /*accumulate=*/true);
  } else {
    out.addmm_(x, wc.t());
  }
}

// The backward's products (CellGemms) by the rows kernels at up to kSmallRows rows, where
// a GEMM call costs more than its arithmetic, else ATen's. a · w (+ c): split over
// columns; aᵀ · b: over rows of the result (written once, it is the larger operand).
bool rows_grads_apply(const fast::Kernels* fk, const Tensor& a, int64_t K) {
  const int64_t B = a.size(0);
  return fk != nullptr && B >= 1 && B <= fast::kSmallRows && a.size(1) > 0 && K > 0 &&
         a.is_contiguous();
}

Tensor rows_times(const Tensor& a, const Tensor& w, const Tensor& c) {
  const fast::Kernels* fk = fast::select();
  const int64_t B = a.size(0), N = a.size(1), K = w.size(1);
  if (!rows_grads_apply(fk, a, K) || !w.is_contiguous() || (c.defined() && !c.is_contiguous()))
    return kAtenCellGemms.times(a, w, c);
  Tensor out = at::empty({B, K}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rnnkit::rows_times", [&] {
    using T = scalar_t;
    const fast::RowsGradArgsOf<T> args{B, N, K, a.const_data_ptr<T>(), N, w.const_data_ptr<T>(),
                                       c.defined() ? c.const_data_ptr<T>() : nullptr,
                                       out.mutable_data_ptr<T>()};
    run_split(*fk, Passes<T>::times, args, K, std::max<int64_t>(64, kParallelProduct / N));
  });
  return out;
}

Tensor rows_outer(const Tensor& a, const Tensor& b) {
  const fast::Kernels* fk = fast::select();
  const int64_t B = a.size(0), N = a.size(1), K = b.size(1);
  if (!rows_grads_apply(fk, a, K) || !b.is_contiguous()) return kAtenCellGemms.outer(a, b);
  // A weight's gradient, written once to fresh memory: huge pages spare most of its
  // first-touch faults (at H = 1024 they took most of a B = 1 backward).
  Tensor out = at::empty({N, K}, a.options());
  huge_pages(out);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rnnkit::rows_outer", [&] {
    using T = scalar_t;
    const fast::RowsGradArgsOf<T> args{B, N, K, a.const_data_ptr<T>(), N, b.const_data_ptr<T>(),
                                       nullptr, out.mutable_data_ptr<T>()};
    run_split(*fk, Passes<T>::outer, args, N, std::max<int64_t>(1, kParallelProduct / K));
  });
  return out;
}

const CellGemms kCpuCellGemms = {&rows_times, &rows_outer};

// cell_step_grads with the products in bfloat16 where the forward's run so
// (bf16_product): the gate gradients rounded to bfloat16, ATen's GEMMs on the
// weights, input and state as they are, instead of float32 copies of the weights at
// every call (LSTMCell B=1 H=1024 forward and backward: 13 ms so, 3.4 torch.nn's).
CellGrads step_grads(const Tensor& dgi, const Tensor& dgh, const Tensor& input, const Tensor& hx,
                     const Tensor& w_ih, const Tensor& w_hh, const Tensor& dh_direct,
                     bool has_bias, Mask3 mask, at::ScalarType dtype) {
  if (!bf16_product(input, w_ih) && !bf16_product(hx, w_hh)) {
    return cell_step_grads(dgi, dgh, input, hx, w_ih, w_hh, dh_direct, has_bias, mask, dtype,
                           kCpuCellGemms);
  }
  const auto bf16 = at::kBFloat16;
  const Tensor gi = dgi.to(bf16), gh = dgh.is_same(dgi) ? gi : dgh.to(bf16);
  return cell_step_grads(gi, gh, input, hx, w_ih, w_hh,
                         dh_direct.defined() ? dh_direct.to(bf16) : Tensor(), has_bias, mask,
                         dtype, kAtenCellGemms);
}

}  // namespace

// ---------------------------------------------------------------- RNN

Tensor rnn_cell(const Tensor& input, const Tensor& hx, const Tensor& w_ih, const Tensor& w_hh,
                const OptTensor& b_ih, const OptTensor& b_hh, bool relu) {
  const CellSizes sz = check_cell_forward(relu ? Cell::RNN_RELU : Cell::RNN_TANH, at::kCPU,
                                          input, hx, nullptr, w_ih, w_hh, b_ih, b_hh,
                                          "rnn_cell");
  NoAutocast no_autocast;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const fast::Kernels* fk = fast::select();
  Tensor pre = step_product(fk, input, w_ih, b_ih, ct);  // becomes h' in place
  add_step_product(fk, pre, hx, w_hh, ct);
  const Tensor bias = sz.has_bias ? prepare(*b_hh, ct) : Tensor();
  const int64_t H = sz.H;
  bool done = false;
  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::rnn_cell", [&] {
    using T = scalar_t;
    fast::CellStepArgsOf<T> args{};
    args.H = H;
    args.relu = relu;
    args.gates = pre.const_data_ptr<T>();
    args.b_hh = sz.has_bias ? bias.const_data_ptr<T>() : nullptr;
    args.h = pre.mutable_data_ptr<T>();
    done = fast_pass(fk, sz.B, H, Passes<T>::rnn, args);
  });
  if (done) return as_dtype(pre, dtype);
  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::rnn_cell", [&] {
    using T = scalar_t;
    T* p = pre.mutable_data_ptr<T>();
    const T* bh = sz.has_bias ? bias.const_data_ptr<T>() : nullptr;
    parallel_rows(sz.B, H, [&](int64_t b, int64_t j0, int64_t j1) {
      T* row = p + b * H;
      for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
        using L = decltype(lane);
        using V = typename L::V;
        V v = L::load(row + j);
        if (bh) v = v + L::load(bh + j);
        L::store(row + j, cells::rnn_forward<V, typename L::M>(v, relu));
      });
    });
  });
  return as_dtype(pre, dtype);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_cell_backward(
    const Tensor& grad_h, const Tensor& input, const Tensor& hx, const Tensor& w_ih,
    const Tensor& w_hh, bool has_bias, bool relu, const Tensor& h, Mask3 output_mask) {
  const Cell cell = relu ? Cell::RNN_RELU : Cell::RNN_TANH;
  const CellSizes sz = check_cell_forward(cell, at::kCPU, input, hx, nullptr, w_ih, w_hh,
                                          std::nullopt, std::nullopt, "rnn_cell_backward");
  check_cell_backward(cell, sz, input, grad_h, nullptr, h, "rnn_cell_backward");
  NoAutocast no_autocast;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const int64_t H = sz.H;
  const Tensor dh_new = prepare(grad_h, ct), h_new = prepare(h, ct);
  Tensor dpre = at::empty({sz.B, H}, input.options().dtype(ct));
  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::rnn_cell_backward", [&] {
    using T = scalar_t;
    const T* dhp = dh_new.const_data_ptr<T>();
    const T* hp = h_new.const_data_ptr<T>();
    T* dp = dpre.mutable_data_ptr<T>();
    parallel_rows(sz.B, H, [&](int64_t b, int64_t j0, int64_t j1) {
      const int64_t o = b * H;
      for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
        using L = decltype(lane);
        L::store(dp + o + j, cells::rnn_backward<typename L::V, typename L::M>(
                                 L::load(dhp + o + j), L::load(hp + o + j), relu));
      });
    });
  });
  return step_grads(dpre, dpre, input, hx, w_ih, w_hh, Tensor(), has_bias, output_mask, dtype);
}

// ---------------------------------------------------------------- GRU

std::tuple<Tensor, Tensor> gru_cell(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                                    const Tensor& w_hh, const OptTensor& b_ih,
                                    const OptTensor& b_hh, bool keep_reserve) {
  const CellSizes sz =
      check_cell_forward(Cell::GRU, at::kCPU, input, hx, nullptr, w_ih, w_hh, b_ih, b_hh,
                         keep_reserve ? "gru_cell_forward" : "gru_cell");
  NoAutocast no_autocast;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const int64_t B = sz.B, H = sz.H;
  const fast::Kernels* fk = fast::select();
  const Tensor gi = step_product(fk, input, w_ih, b_ih, ct);  // [B, 3H] with b_ih
  const Tensor gh = step_product(fk, hx, w_hh, b_hh, ct);     // [B, 3H] with b_hh
  const Tensor h_prev = prepare(hx, ct);
  const auto opts = input.options().dtype(ct);
  Tensor h = at::empty({B, H}, opts);
  Tensor reserve = keep_reserve ? at::empty({B, 4 * H}, opts) : Tensor();
  const Tensor no_reserve = input.new_empty({0});
  bool done = false;
  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::gru_cell", [&] {
    using T = scalar_t;
    fast::CellStepArgsOf<T> args{};
    args.H = H;
    args.gates = gi.const_data_ptr<T>();
    args.gh = gh.const_data_ptr<T>();
    args.h_prev = h_prev.const_data_ptr<T>();
    args.h = h.mutable_data_ptr<T>();
    args.reserve = keep_reserve ? reserve.mutable_data_ptr<T>() : nullptr;
    done = fast_pass(fk, B, H, Passes<T>::gru, args);
  });
  if (done) return {as_dtype(h, dtype), keep_reserve ? as_dtype(reserve, dtype) : no_reserve};
  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::gru_cell", [&] {
    using T = scalar_t;
    const T* gip = gi.const_data_ptr<T>();
    const T* ghp = gh.const_data_ptr<T>();
    const T* hp = h_prev.const_data_ptr<T>();
    T* out = h.mutable_data_ptr<T>();
    T* res = keep_reserve ? reserve.mutable_data_ptr<T>() : nullptr;
    parallel_rows(B, H, [&](int64_t b, int64_t j0, int64_t j1) {
      const T* x_row = gip + b * 3 * H;
      const T* h_row = ghp + b * 3 * H;
      T* r_row = res ? res + b * 4 * H : nullptr;
      for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
        using L = decltype(lane);
        using V = typename L::V;
        const V hn = L::load(h_row + 2 * H + j);
        const auto st = cells::gru_forward<V, typename L::M>(
            L::load(x_row + j), L::load(x_row + H + j), L::load(x_row + 2 * H + j),
            L::load(h_row + j), L::load(h_row + H + j), hn, L::load(hp + b * H + j));
        L::store(out + b * H + j, st.h);
        if (r_row) {
          L::store(r_row + j, st.r);
          L::store(r_row + H + j, st.z);
          L::store(r_row + 2 * H + j, st.n);
          L::store(r_row + 3 * H + j, hn);
        }
      });
    });
  });
  return {as_dtype(h, dtype), keep_reserve ? as_dtype(reserve, dtype) : no_reserve};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_cell_backward(
    const Tensor& grad_h, const Tensor& input, const Tensor& hx, const Tensor& w_ih,
    const Tensor& w_hh, bool has_bias, const Tensor& reserve, Mask3 output_mask) {
  const CellSizes sz = check_cell_forward(Cell::GRU, at::kCPU, input, hx, nullptr, w_ih, w_hh,
                                          std::nullopt, std::nullopt, "gru_cell_backward");
  check_cell_backward(Cell::GRU, sz, input, grad_h, nullptr, reserve, "gru_cell_backward");
  NoAutocast no_autocast;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const int64_t B = sz.B, H = sz.H;
  const Tensor dh_new = prepare(grad_h, ct), res = prepare(reserve, ct);
  const Tensor h_prev = prepare(hx, ct);
  const auto opts = input.options().dtype(ct);
  Tensor dgi = at::empty({B, 3 * H}, opts), dgh = at::empty({B, 3 * H}, opts);
  Tensor dh_direct = at::empty({B, H}, opts);
  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::gru_cell_backward", [&] {
    using T = scalar_t;
    const T* dhp = dh_new.const_data_ptr<T>();
    const T* rp = res.const_data_ptr<T>();
    const T* hp = h_prev.const_data_ptr<T>();
    T* dip = dgi.mutable_data_ptr<T>();
    T* dhh = dgh.mutable_data_ptr<T>();
    T* ddp = dh_direct.mutable_data_ptr<T>();
    parallel_rows(B, H, [&](int64_t b, int64_t j0, int64_t j1) {
      const T* r_row = rp + b * 4 * H;
      T* di = dip + b * 3 * H;
      T* dg = dhh + b * 3 * H;
      for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
        using L = decltype(lane);
        const auto d = cells::gru_backward<typename L::V, typename L::M>(
            L::load(dhp + b * H + j), L::load(r_row + j), L::load(r_row + H + j),
            L::load(r_row + 2 * H + j), L::load(r_row + 3 * H + j), L::load(hp + b * H + j));
        L::store(di + j, d.pre_r);
        L::store(di + H + j, d.pre_z);
        L::store(di + 2 * H + j, d.xn);
        L::store(dg + j, d.pre_r);
        L::store(dg + H + j, d.pre_z);
        L::store(dg + 2 * H + j, d.hn);
        L::store(ddp + b * H + j, d.h_prev);
      });
    });
  });
  return step_grads(dgi, dgh, input, hx, w_ih, w_hh, dh_direct, has_bias, output_mask, dtype);
}

// ---------------------------------------------------------------- LSTM

std::tuple<Tensor, Tensor, Tensor> lstm_cell(const Tensor& input, const Tensor& hx,
                                             const Tensor& cx, const Tensor& w_ih,
                                             const Tensor& w_hh, const OptTensor& b_ih,
                                             const OptTensor& b_hh, bool keep_reserve) {
  const CellSizes sz =
      check_cell_forward(Cell::LSTM, at::kCPU, input, hx, &cx, w_ih, w_hh, b_ih, b_hh,
                         keep_reserve ? "lstm_cell_forward" : "lstm_cell");
  NoAutocast no_autocast;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const int64_t B = sz.B, H = sz.H;
  const fast::Kernels* fk = fast::select();
  Tensor gates = step_product(fk, input, w_ih, b_ih, ct);  // [B, 4H]
  add_step_product(fk, gates, hx, w_hh, ct);
  const Tensor c_prev = prepare(cx, ct);
  const Tensor bias = sz.has_bias ? prepare(*b_hh, ct) : Tensor();
  const auto opts = input.options().dtype(ct);
  Tensor h = at::empty({B, H}, opts), c = at::empty({B, H}, opts);
  Tensor reserve = keep_reserve ? at::empty({B, 5 * H}, opts) : Tensor();
  const Tensor no_reserve = input.new_empty({0});
  bool done = false;
  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::lstm_cell", [&] {
    using T = scalar_t;
    fast::CellStepArgsOf<T> args{};
    args.H = H;
    args.gates = gates.const_data_ptr<T>();
    args.b_hh = sz.has_bias ? bias.const_data_ptr<T>() : nullptr;
    args.c_prev = c_prev.const_data_ptr<T>();
    args.h = h.mutable_data_ptr<T>();
    args.c = c.mutable_data_ptr<T>();
    args.reserve = keep_reserve ? reserve.mutable_data_ptr<T>() : nullptr;
    done = fast_pass(fk, B, H, Passes<T>::lstm, args);
  });
  if (done) {
    return {as_dtype(h, dtype), as_dtype(c, dtype),
            keep_reserve ? as_dtype(reserve, dtype) : no_reserve};
  }
  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::lstm_cell", [&] {
    using T = scalar_t;
    const T* gp = gates.const_data_ptr<T>();
    const T* bh = sz.has_bias ? bias.const_data_ptr<T>() : nullptr;
    const T* cp = c_prev.const_data_ptr<T>();
    T* hn = h.mutable_data_ptr<T>();
    T* cn = c.mutable_data_ptr<T>();
    T* res = keep_reserve ? reserve.mutable_data_ptr<T>() : nullptr;
    parallel_rows(B, H, [&](int64_t b, int64_t j0, int64_t j1) {
      const T* g_row = gp + b * 4 * H;
      T* r_row = res ? res + b * 5 * H : nullptr;
      const int64_t o = b * H;
      for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
        using L = decltype(lane);
        using V = typename L::V;
        auto pre = [&](int64_t k) {
          const V v = L::load(g_row + k * H + j);
          return bh ? v + L::load(bh + k * H + j) : v;
        };
        const auto st = cells::lstm_forward<V, typename L::M>(pre(0), pre(1), pre(2), pre(3),
                                                              L::load(cp + o + j));
        L::store(hn + o + j, st.h);
        L::store(cn + o + j, st.c);
        if (r_row) {
          L::store(r_row + j, st.i);
          L::store(r_row + H + j, st.f);
          L::store(r_row + 2 * H + j, st.g);
          L::store(r_row + 3 * H + j, st.o);
          L::store(r_row + 4 * H + j, st.c);
        }
      });
    });
  });
  return {as_dtype(h, dtype), as_dtype(c, dtype),
          keep_reserve ? as_dtype(reserve, dtype) : no_reserve};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_cell_backward(
    const Tensor& grad_h, const Tensor& grad_c, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, bool has_bias,
    const Tensor& reserve, Mask3 output_mask) {
  const CellSizes sz = check_cell_forward(Cell::LSTM, at::kCPU, input, hx, &cx, w_ih, w_hh,
                                          std::nullopt, std::nullopt, "lstm_cell_backward");
  check_cell_backward(Cell::LSTM, sz, input, grad_h, &grad_c, reserve, "lstm_cell_backward");
  NoAutocast no_autocast;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const int64_t B = sz.B, H = sz.H;
  const Tensor dh_new = prepare(grad_h, ct), dc_new = prepare(grad_c, ct);
  const Tensor res = prepare(reserve, ct), c_prev = prepare(cx, ct);
  const auto opts = input.options().dtype(ct);
  Tensor dg = at::empty({B, 4 * H}, opts), dc = at::empty({B, H}, opts);
  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::lstm_cell_backward", [&] {
    using T = scalar_t;
    const T* dhp = dh_new.const_data_ptr<T>();
    const T* dcp = dc_new.const_data_ptr<T>();
    const T* rp = res.const_data_ptr<T>();
    const T* cp = c_prev.const_data_ptr<T>();
    T* dgp = dg.mutable_data_ptr<T>();
    T* dcout = dc.mutable_data_ptr<T>();
    if (fast_pass(fast::select(), B, H, Passes<T>::lstm_backward,
                  fast::LstmCellGradArgsOf<T>{H, dhp, dcp, rp, cp, dgp, dcout})) {
      return;
    }
    parallel_rows(B, H, [&](int64_t b, int64_t j0, int64_t j1) {
      const T* r_row = rp + b * 5 * H;
      T* d_row = dgp + b * 4 * H;
      const int64_t o = b * H;
      for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
        using L = decltype(lane);
        const auto d = cells::lstm_backward<typename L::V, typename L::M>(
            L::load(dhp + o + j), L::load(dcp + o + j), L::load(r_row + j),
            L::load(r_row + H + j), L::load(r_row + 2 * H + j), L::load(r_row + 3 * H + j),
            L::load(r_row + 4 * H + j), L::load(cp + o + j));
        L::store(d_row + j, d.pre_i);
        L::store(d_row + H + j, d.pre_f);
        L::store(d_row + 2 * H + j, d.pre_g);
        L::store(d_row + 3 * H + j, d.pre_o);
        L::store(dcout + o + j, d.c_prev);
      });
    });
  });
  auto [dx, dh, dw_ih, dw_hh, db_ih, db_hh] =
      step_grads(dg, dg, input, hx, w_ih, w_hh, Tensor(), has_bias, output_mask, dtype);
  const Tensor dc_out = output_mask[1] ? as_dtype(dc, dtype) : input.new_empty({0});
  return {dx, dh, dc_out, dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace cpu
}  // namespace rnnkit
