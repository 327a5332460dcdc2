// The GRU layer on the CPU, forward and backward (contract: layer_contract.h).
//
// The reset gate scales the hidden projection of n *with* its bias b_hn, so only
// b_hr and b_hz fold into the hoisted input projection; b_hn is added in the
// fused pass, and the reserve keeps hn = W_hn h + b_hn.
//
// The backward keeps one gradient buffer [T, B, 4H] laid out (r, z, hn, xn): its
// first 3H columns are the gradient of h · W_hhᵀ + b_hh (for dh and dW_hh), and
// columns (r, z) with (xn) that of x · W_ihᵀ + b_ih (for dx and dW_ih).

#include <ATen/Dispatch.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include "bf16_layers.h"
#include "cpu_common.h"
#include "fast_path.h"
#include "layer_ops_cpu.h"
#include "rnnkit/layer_checks.h"
#include "single_step.h"
#include "vec_math.h"
#include "../transposed_product.h"

namespace rnnkit {
namespace cpu {
namespace {

template <typename T>
struct GruForward {
  int64_t T_, B, H;
  StepOrder order;
  const int64_t* len;
  const T* gx;    // [T, B, 3H] input projection with b_ih and b_hr, b_hz
  const T* w_hh;  // [3H, H]
  const T* b_hn;  // [H] or null
  T* h;           // [B, H] running state
  T* out;         // [T, B, H]
  T* reserve;     // [T, B, 4H]
  T* gh;          // [B, 3H] workspace: h · W_hhᵀ

  void run() const {
    for (int64_t s = 0; s < T_; ++s) {
      const int64_t t = order.step(s);
      gemm(B, 3 * H, H, h, H, w_hh, H, /*transpose_b=*/true, gh, 3 * H, /*accumulate=*/false);
      parallel_rows(B, H, [&](int64_t b, int64_t j0, int64_t j1) { gates(t, b, j0, j1); });
    }
  }

  void gates(int64_t t, int64_t b, int64_t j0, int64_t j1) const {
    T* res = reserve + (t * B + b) * 4 * H;
    T* o_row = out + (t * B + b) * H;
    if (t >= len[b]) {
      for (int64_t k = 0; k < 4; ++k) fill_zero(res + k * H + j0, j1 - j0);
      fill_zero(o_row + j0, j1 - j0);
      return;
    }
    const T* x_row = gx + (t * B + b) * 3 * H;
    const T* h_row = gh + b * 3 * H;
    T* state = h + b * H;
    for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
      using L = decltype(lane);
      using V = typename L::V;
      const V hn = b_hn ? L::load(h_row + 2 * H + j) + L::load(b_hn + j)
                        : L::load(h_row + 2 * H + j);
      const auto st = cells::gru_forward<V, typename L::M>(
          L::load(x_row + j), L::load(x_row + H + j), L::load(x_row + 2 * H + j),
          L::load(h_row + j), L::load(h_row + H + j), hn, L::load(state + j));
      L::store(res + j, st.r);
      L::store(res + H + j, st.z);
      L::store(res + 2 * H + j, st.n);
      L::store(res + 3 * H + j, hn);
      L::store(o_row + j, st.h);
      L::store(state + j, st.h);
    });
  }
};

template <typename T>
struct GruBackward {
  int64_t T_, B, H;
  StepOrder order;
  const int64_t* len;
  const T* grad_out;  // [T, B, H]
  const T* reserve;   // [T, B, 4H]
  const T* h_prev;    // [T, B, H]
  const T* w_hh;      // [3H, H]
  T* dh;              // [B, H] gradient of the running h
  T* dgates;          // [T, B, 4H] (r, z, hn, xn), see the top of the file

  void run() const {
    for (int64_t s = T_ - 1; s >= 0; --s) {
      const int64_t t = order.step(s);
      parallel_rows(B, H, [&](int64_t b, int64_t j0, int64_t j1) { gates(t, b, j0, j1); });
      gemm(B, H, 3 * H, dgates + t * B * 4 * H, 4 * H, w_hh, H, /*transpose_b=*/false, dh, H,
           /*accumulate=*/true);
    }
  }

  void gates(int64_t t, int64_t b, int64_t j0, int64_t j1) const {
    const int64_t row = t * B + b;
    T* dg = dgates + row * 4 * H;
    if (t >= len[b]) {
      for (int64_t k = 0; k < 4; ++k) fill_zero(dg + k * H + j0, j1 - j0);
      return;
    }
    const T* res = reserve + row * 4 * H;
    const T* g_row = grad_out + row * H;
    const T* hp_row = h_prev + row * H;
    T* dh_row = dh + b * H;
    for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
      using L = decltype(lane);
      using V = typename L::V;
      const V dh_j = L::load(dh_row + j) + L::load(g_row + j);
      const auto d = cells::gru_backward<V, typename L::M>(
          dh_j, L::load(res + j), L::load(res + H + j), L::load(res + 2 * H + j),
          L::load(res + 3 * H + j), L::load(hp_row + j));
      L::store(dg + j, d.pre_r);
      L::store(dg + H + j, d.pre_z);
      L::store(dg + 2 * H + j, d.hn);
      L::store(dg + 3 * H + j, d.xn);
      L::store(dh_row + j, d.h_prev);  // the GEMM adds dgates · W_hh
    });
  }
};

}  // namespace

std::tuple<Tensor, Tensor, Tensor> gru_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, bool reverse,
    bool keep_reserve) {
  const LayerSizes sz = check_layer_forward(Cell::GRU, at::kCPU, input, lengths, h0, nullptr, w_ih,
                                            w_hh, b_ih, b_hh, {});
  const int64_t T = sz.T, B = sz.B, H = sz.H;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const auto opts = input.options().dtype(ct);
  const std::vector<int64_t> len = sequence_lengths(lengths, B, T);
  if (one_step::applies(T, B, H, len, false)) {
    return one_step::gru(input, h0, w_ih, w_hh, b_ih, b_hh, keep_reserve);
  }
  if (auto bf16 = gru_layer_bf16(sz, input, len, h0, w_ih, w_hh, b_ih, b_hh, reverse,
                                 keep_reserve)) {
    return *bf16;
  }

  const Tensor x = prepare(input, ct);
  const Tensor wih = prepare(w_ih, ct), whh = prepare(w_hh, ct);
  Tensor bias_x, bhh;
  if (sz.has_bias) {
    bhh = prepare(*b_hh, ct);
    bias_x = b_ih->to(ct, false, /*copy=*/true).contiguous();
    bias_x.narrow(0, 0, 2 * H).add_(bhh.narrow(0, 0, 2 * H));
  }
  const fast::Kernels* fk = fast::select();
  // The fast path projects the input inside its step loop.
  const Tensor gx = fk ? Tensor() : input_projection(x, wih, bias_x);

  Tensor h = h0.to(ct, /*non_blocking=*/false, /*copy=*/true).contiguous();
  Tensor output = at::empty({T, B, H}, opts);
  huge_pages(output);
  Tensor reserve = fk && !keep_reserve ? Tensor() : at::empty({T, B, 4 * H}, opts);
  if (reserve.defined()) huge_pages(reserve);
  const Tensor no_reserve = input.new_empty({0});
  if (fk) {
    AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::gru_layer", [&] {
      using T_ = scalar_t;
      fast::gru_forward<T_>(*fk, T, B, H, reverse, len.data(), x.const_data_ptr<T_>(), sz.I,
                            wih.const_data_ptr<T_>(),
                            sz.has_bias ? bias_x.const_data_ptr<T_>() : nullptr,
                            whh.const_data_ptr<T_>(),
                            sz.has_bias ? bhh.const_data_ptr<T_>() + 2 * H : nullptr,
                            h.mutable_data_ptr<T_>(), output.mutable_data_ptr<T_>(),
                            keep_reserve ? reserve.mutable_data_ptr<T_>() : nullptr);
    });
    return {output.to(dtype), h.to(dtype), keep_reserve ? reserve.to(dtype) : no_reserve};
  }
  Tensor gh = at::empty({B, 3 * H}, opts);

  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::gru_layer", [&] {
    using T_ = scalar_t;
    GruForward<T_>{T, B, H, StepOrder{T, reverse}, len.data(), gx.const_data_ptr<T_>(),
                   whh.const_data_ptr<T_>(),
                   sz.has_bias ? bhh.const_data_ptr<T_>() + 2 * H : nullptr,
                   h.mutable_data_ptr<T_>(), output.mutable_data_ptr<T_>(),
                   reserve.mutable_data_ptr<T_>(), gh.mutable_data_ptr<T_>()}
        .run();
  });
  return {output.to(dtype), h.to(dtype), keep_reserve ? reserve.to(dtype) : no_reserve};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, const Tensor& output,
    const Tensor& reserve, bool input_grad, bool state_grad) {
  const LayerSizes sz = check_layer_forward(Cell::GRU, at::kCPU, input, lengths, h0, nullptr, w_ih,
                                            w_hh, b_ih, b_hh, {}, "gru_layer_backward");
  check_layer_backward(Cell::GRU, sz, input, grad_output, grad_h_n, nullptr, output, reserve);
  const int64_t T = sz.T, B = sz.B, I = sz.I, H = sz.H;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const auto opts = input.options().dtype(ct);
  const std::vector<int64_t> len = sequence_lengths(lengths, B, T);
  if (one_step::applies(T, B, H, len, false)) {
    return one_step::gru_backward(grad_output, grad_h_n, input, h0, w_ih, w_hh, sz.has_bias,
                                  reserve, input_grad, state_grad);
  }

  const fast::Kernels* fk = fast::select();
  Tensor gout_copy;  // the fast path reads grad_output in place when it can
  const Tensor gout = fk ? Tensor() : prepare(grad_output, ct);
  const Tensor out = prepare(output, ct), h0c = prepare(h0, ct);
  // The whole-sequence products in products_dtype (cpu_common.h): x and W_ih serve
  // only them.
  const auto pt = products_dtype(dtype);
  const Tensor x = prepare(input, pt), wih = prepare(w_ih, pt), whh = prepare(w_hh, ct);
  // A 16-bit reserve widened into kept memory (fast_path.h), not fresh memory.
  const Tensor res = dtype != ct ? fast::kept_floats(reserve.sizes(), fast::Pack::kStagedReserve)
                                       .copy_(reserve)
                                 : prepare(reserve, ct);

  Tensor dh = grad_h_n.to(ct, false, true).contiguous();
  // A float32 buffer in kept memory when the products take a bfloat16 copy of it.
  Tensor dgates = pt != ct ? fast::kept_floats({T, B, 4 * H}, fast::Pack::kStagedGates)
                           : at::empty({T, B, 4 * H}, opts);
  huge_pages(dgates);

  if (fk) {
    AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::gru_layer_backward", [&] {
      using T_ = scalar_t;
      fast::gru_backward<T_>(*fk, T, B, H, reverse, len.data(),
                             fast::grad_out_view<T_>(grad_output, &gout_copy),
                             res.const_data_ptr<T_>(), out.const_data_ptr<T_>(),
                             h0c.const_data_ptr<T_>(), whh.const_data_ptr<T_>(),
                             dh.mutable_data_ptr<T_>(), dgates.mutable_data_ptr<T_>());
    });
  } else {
    const Tensor h_prev = previous_hidden(out, h0c, len, reverse);
    AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::gru_layer_backward", [&] {
      using T_ = scalar_t;
      GruBackward<T_>{T, B, H, StepOrder{T, reverse}, len.data(), gout.const_data_ptr<T_>(),
                      res.const_data_ptr<T_>(), h_prev.const_data_ptr<T_>(),
                      whh.const_data_ptr<T_>(), dh.mutable_data_ptr<T_>(),
                      dgates.mutable_data_ptr<T_>()}
          .run();
    });
  }

  Tensor db_ih = input.new_empty({0}), db_hh = input.new_empty({0});
  if (sz.has_bias) {  // summed in the compute dtype
    const Tensor sums = dgates.view({T * B, 4 * H}).sum(0);
    db_hh = sums.narrow(0, 0, 3 * H).to(dtype, false, /*copy=*/true);  // its own tensor
    db_ih = at::cat({sums.narrow(0, 0, 2 * H), sums.narrow(0, 3 * H, H)}, 0).to(dtype);
  }
  gout_copy = Tensor();
  const Tensor dg = prepare(dgates, pt).view({T * B, 4 * H});
  dgates = Tensor();
  const Tensor dg_h = dg.narrow(1, 0, 3 * H);   // of h · W_hhᵀ + b_hh
  const Tensor dg_rz = dg.narrow(1, 0, 2 * H);  // of the r, z columns of x · W_ihᵀ + b_ih
  const Tensor dg_xn = dg.narrow(1, 3 * H, H);  // of the n columns of x · W_ihᵀ + b_ih
  const Tensor x2d = x.view({T * B, I});
  Tensor dw_ih = at::empty({3 * H, I}, opts.dtype(pt));
  {
    Tensor rz = dw_ih.narrow(0, 0, 2 * H), n = dw_ih.narrow(0, 2 * H, H);
    transposed_product_out(rz, dg_rz, x2d);
    transposed_product_out(n, dg_xn, x2d);
  }
  const Tensor dw_hh = hidden_weight_grad(dg_h, pt == ct ? out : prepare(output, pt),
                                          pt == ct ? h0c : prepare(h0, pt), len, reverse);
  // Last: it overwrites dgates.
  Tensor dx = input.new_empty({0});
  if (input_grad) {
    dx = input_grad_over(dg, I, [&](int64_t r0, int64_t r1, Tensor& rows) {
      at::mm_out(rows, dg_rz.narrow(0, r0, r1 - r0), wih.narrow(0, 0, 2 * H));
      rows.addmm_(dg_xn.narrow(0, r0, r1 - r0), wih.narrow(0, 2 * H, H));
    }).view({T, B, I});
  }
  const Tensor dh0 = state_grad ? dh.to(dtype) : input.new_empty({0});
  return {dx.to(dtype), dh0, dw_ih.to(dtype), dw_hh.to(dtype), db_ih, db_hh};
}

}  // namespace cpu
}  // namespace rnnkit
