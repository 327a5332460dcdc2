// The LSTM layer on the CPU, forward and backward (contract: layer_contract.h).
//
// Forward: gx = x · W_ihᵀ + b_ih + b_hh for all steps (one GEMM); then per step
// one GEMM h · W_hhᵀ and one fused pass over the gates (cells::lstm_forward),
// which also writes the reserve and applies the lengths mask; with a projection,
// one more GEMM h = h_full · W_hrᵀ.
// Backward: per step one fused pass (cells::lstm_backward) writing the gate
// gradients of that step, and one GEMM dh += dgates · W_hh; the weight gradients
// are whole-sequence GEMMs after the loop.
// These are the portable loops; on AVX2 and AVX-512 the fast path (fast_path.h)
// runs the forward, with or without a projection, and the backward without one.

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

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
struct LstmForward {
  int64_t T_, B, I, H, P;
  bool proj;
  StepOrder order;
  const int64_t* len;
  const T* gx;    // [T, B, 4H] input projection with both biases
  const T* w_hh;  // [4H, P]
  const T* w_hr;  // [P, H] or null
  T* h;           // [B, P] running state (h0 in, h_n out)
  T* c;           // [B, H] running state (c0 in, c_n out)
  T* out;         // [T, B, P]
  T* reserve;     // [T, B, 5H]
  T* gh;          // [B, 4H] workspace: h · W_hhᵀ
  T* h_full;      // [B, H] workspace (projection only): o * tanh(c)
  T* h_proj;      // [B, P] workspace (projection only): h_full · W_hrᵀ

  void run() const {
    const int64_t G = 4 * H;
    for (int64_t s = 0; s < T_; ++s) {
      const int64_t t = order.step(s);
      gemm(B, G, P, h, P, w_hh, P, /*transpose_b=*/true, gh, G, /*accumulate=*/false);
      parallel_rows(B, H, [&](int64_t b, int64_t j0, int64_t j1) { gates(t, b, j0, j1); });
      if (proj) {
        gemm(B, P, H, h_full, H, w_hr, H, /*transpose_b=*/true, h_proj, P, false);
        parallel_rows(B, P, [&](int64_t b, int64_t j0, int64_t j1) {
          T* o = out + (t * B + b) * P;
          if (t < len[b]) {
            std::copy(h_proj + b * P + j0, h_proj + b * P + j1, o + j0);
            std::copy(h_proj + b * P + j0, h_proj + b * P + j1, h + b * P + j0);
          } else {
            fill_zero(o + j0, j1 - j0);
          }
        });
      }
    }
  }

  // The fused pointwise pass of step t over hidden units [j0, j1) of sequence b.
  void gates(int64_t t, int64_t b, int64_t j0, int64_t j1) const {
    T* res = reserve + (t * B + b) * 5 * H;
    T* o_row = out + (t * B + b) * P;
    if (t >= len[b]) {  // padded: state kept, zeros out
      for (int64_t k = 0; k < 5; ++k) fill_zero(res + k * H + j0, j1 - j0);
      if (!proj) fill_zero(o_row + j0, j1 - j0);
      return;
    }
    const T* x_row = gx + (t * B + b) * 4 * H;
    const T* h_row = gh + b * 4 * H;
    T* c_row = c + b * H;
    T* h_dst = proj ? h_full + b * H : h + b * P;
    const bool write_out = !proj;
    for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
      using L = decltype(lane);
      using V = typename L::V;
      auto pre = [&](int64_t k) { return L::load(x_row + k * H + j) + L::load(h_row + k * H + j); };
      const auto st = cells::lstm_forward<V, typename L::M>(pre(0), pre(1), pre(2), pre(3),
                                                            L::load(c_row + j));
      L::store(res + j, st.i);
      L::store(res + H + j, st.f);
      L::store(res + 2 * H + j, st.g);
      L::store(res + 3 * H + j, st.o);
      L::store(res + 4 * H + j, st.c);
      L::store(c_row + j, st.c);
      L::store(h_dst + j, st.h);
      if (write_out) L::store(o_row + j, st.h);
    });
  }
};

template <typename T>
struct LstmBackward {
  int64_t T_, B, I, H, P;
  bool proj;
  StepOrder order;
  const int64_t* len;
  const T* grad_out;  // [T, B, P]
  const T* reserve;   // [T, B, 5H]
  const T* c0;        // [B, H]
  const T* w_hh;      // [4H, P]
  const T* w_hr;      // [P, H] or null
  T* dh;              // [B, P] gradient of the running h (grad_h_n in, grad_h0 out)
  T* dc;              // [B, H] gradient of the running c (grad_c_n in, grad_c0 out)
  T* dgates;          // [T, B, 4H] gradients of the pre-activations
  T* dy;              // [T, B, P] (projection only) gradient of each step's projected h
  T* dh_full;         // [B, H] workspace (projection only): dy_t · W_hr

  void run() const {
    const int64_t G = 4 * H;
    for (int64_t s = T_ - 1; s >= 0; --s) {
      const int64_t t = order.step(s);
      if (proj) {
        parallel_rows(B, P, [&](int64_t b, int64_t j0, int64_t j1) {
          T* d = dy + (t * B + b) * P;
          if (t < len[b]) {
            const T* g = grad_out + (t * B + b) * P;
            for (int64_t j = j0; j < j1; ++j) {
              d[j] = dh[b * P + j] + g[j];
              dh[b * P + j] = T(0);
            }
          } else {
            fill_zero(d + j0, j1 - j0);
          }
        });
        gemm(B, H, P, dy + t * B * P, P, w_hr, H, /*transpose_b=*/false, dh_full, H, false);
      }
      parallel_rows(B, H, [&](int64_t b, int64_t j0, int64_t j1) { gates(t, b, j0, j1); });
      gemm(B, P, G, dgates + t * B * G, G, w_hh, P, /*transpose_b=*/false, dh, P,
           /*accumulate=*/true);
    }
  }

  void gates(int64_t t, int64_t b, int64_t j0, int64_t j1) const {
    T* dg = dgates + (t * B + b) * 4 * H;
    const int64_t length = len[b];
    if (t >= length) {  // padded: no gradient; dh and dc pass through unchanged
      for (int64_t k = 0; k < 4; ++k) fill_zero(dg + k * H + j0, j1 - j0);
      return;
    }
    const T* res = reserve + (t * B + b) * 5 * H;
    const T* c_prev = order.first(t, length)
                          ? c0 + b * H
                          : reserve + (order.previous(t) * B + b) * 5 * H + 4 * H;
    const T* g_row = grad_out + (t * B + b) * P;
    T* dh_row = dh + b * P;
    T* dc_row = dc + b * H;
    const T* dhf_row = proj ? dh_full + b * H : nullptr;
    for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
      using L = decltype(lane);
      using V = typename L::V;
      V dh_j;
      if (dhf_row) {
        dh_j = L::load(dhf_row + j);
      } else {
        dh_j = L::load(dh_row + j) + L::load(g_row + j);
        L::store(dh_row + j, V(0));  // refilled by the GEMM with dgates · W_hh
      }
      const auto d = cells::lstm_backward<V, typename L::M>(
          dh_j, L::load(dc_row + j), L::load(res + j), L::load(res + H + j),
          L::load(res + 2 * H + j), L::load(res + 3 * H + j), L::load(res + 4 * H + j),
          L::load(c_prev + j));
      L::store(dg + j, d.pre_i);
      L::store(dg + H + j, d.pre_f);
      L::store(dg + 2 * H + j, d.pre_g);
      L::store(dg + 3 * H + j, d.pre_o);
      L::store(dc_row + j, d.c_prev);
    });
  }
};

// o * tanh(c) of every step from the reserve, [T, B, H]: the input of the
// projection, which dW_hr needs. Zeros at padded steps (their reserve is zero).
template <typename T>
void recompute_h_full(int64_t rows, int64_t H, const T* reserve, T* h_full) {
  parallel_rows(rows, H, [&](int64_t r, int64_t j0, int64_t j1) {
    const T* res = reserve + r * 5 * H;
    T* dst = h_full + r * H;
    for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
      using L = decltype(lane);
      L::store(dst + j, L::load(res + 3 * H + j) * L::M::tanh(L::load(res + 4 * H + j)));
    });
  });
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse, bool keep_reserve) {
  const LayerSizes sz = check_layer_forward(Cell::LSTM, at::kCPU, input, lengths, h0, &c0, w_ih,
                                            w_hh, b_ih, b_hh, w_hr);
  const int64_t T = sz.T, B = sz.B, H = sz.H, P = sz.P;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const auto opts = input.options().dtype(ct);
  const std::vector<int64_t> len = sequence_lengths(lengths, B, T);
  if (one_step::applies(T, B, H, len, sz.has_proj)) {
    return one_step::lstm(input, h0, c0, w_ih, w_hh, b_ih, b_hh, keep_reserve);
  }
  if (auto bf16 = lstm_layer_bf16(sz, input, len, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                                  keep_reserve)) {
    return *bf16;
  }

  const Tensor x = prepare(input, ct);
  const Tensor wih = prepare(w_ih, ct), whh = prepare(w_hh, ct), whr = prepare(w_hr, ct);
  const Tensor bias = sz.has_bias ? prepare(*b_ih, ct).add(prepare(*b_hh, ct)) : Tensor();
  const fast::Kernels* fk = fast::select();
  // The fast path projects the input inside its step loop.
  const Tensor gx = fk ? Tensor() : input_projection(x, wih, bias);

  Tensor h = h0.to(ct, /*non_blocking=*/false, /*copy=*/true).contiguous();
  Tensor c = c0.to(ct, false, true).contiguous();
  Tensor output = at::empty({T, B, P}, opts);
  huge_pages(output);
  Tensor reserve = fk && !keep_reserve ? Tensor() : at::empty({T, B, 5 * H}, opts);
  if (reserve.defined()) huge_pages(reserve);
  const Tensor no_reserve = input.new_empty({0});

  if (fk) {
    AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::lstm_layer", [&] {
      using T_ = scalar_t;
      fast::lstm_forward<T_>(*fk, T, B, H, P, reverse, len.data(), x.const_data_ptr<T_>(), sz.I,
                             wih.const_data_ptr<T_>(),
                             sz.has_bias ? bias.const_data_ptr<T_>() : nullptr,
                             whh.const_data_ptr<T_>(),
                             sz.has_proj ? whr.const_data_ptr<T_>() : nullptr,
                             h.mutable_data_ptr<T_>(),
                             c.mutable_data_ptr<T_>(), output.mutable_data_ptr<T_>(),
                             keep_reserve ? reserve.mutable_data_ptr<T_>() : nullptr);
    });
    return {output.to(dtype), h.to(dtype), c.to(dtype),
            keep_reserve ? reserve.to(dtype) : no_reserve};
  }
  // The step loop's whole workspace, allocated once.
  Tensor gh = at::empty({B, 4 * H}, opts);
  Tensor h_full = sz.has_proj ? at::zeros({B, H}, opts) : Tensor();
  Tensor h_proj = sz.has_proj ? at::empty({B, P}, opts) : Tensor();

  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::lstm_layer", [&] {
    using T_ = scalar_t;
    LstmForward<T_>{T, B, sz.I, H, P, sz.has_proj, StepOrder{T, reverse}, len.data(),
                    gx.const_data_ptr<T_>(), whh.const_data_ptr<T_>(),
                    sz.has_proj ? whr.const_data_ptr<T_>() : nullptr, h.mutable_data_ptr<T_>(),
                    c.mutable_data_ptr<T_>(), output.mutable_data_ptr<T_>(),
                    reserve.mutable_data_ptr<T_>(), gh.mutable_data_ptr<T_>(),
                    sz.has_proj ? h_full.mutable_data_ptr<T_>() : nullptr,
                    sz.has_proj ? h_proj.mutable_data_ptr<T_>() : nullptr}
        .run();
  });
  return {output.to(dtype), h.to(dtype), c.to(dtype),
          keep_reserve ? reserve.to(dtype) : no_reserve};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    bool reverse, const Tensor& output, const Tensor& reserve, bool input_grad, bool state_grad) {
  const LayerSizes sz = check_layer_forward(Cell::LSTM, at::kCPU, input, lengths, h0, &c0, w_ih,
                                            w_hh, b_ih, b_hh, w_hr, "lstm_layer_backward");
  check_layer_backward(Cell::LSTM, sz, input, grad_output, grad_h_n, &grad_c_n, output, reserve);
  const int64_t T = sz.T, B = sz.B, I = sz.I, H = sz.H, P = sz.P;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const auto opts = input.options().dtype(ct);
  const std::vector<int64_t> len = sequence_lengths(lengths, B, T);
  if (one_step::applies(T, B, H, len, sz.has_proj)) {
    return one_step::lstm_backward(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh,
                                   sz.has_bias, reserve, input_grad, state_grad);
  }

  // The backward with a projection keeps the portable loop.
  const fast::Kernels* fk = sz.has_proj ? nullptr : fast::select();
  Tensor gout_copy;  // the fast path reads grad_output in place when it can
  const Tensor gout = fk ? Tensor() : prepare(grad_output, ct);
  // The whole-sequence products in products_dtype (cpu_common.h): x, the output, h0
  // and W_ih serve only them.
  const auto pt = products_dtype(dtype);
  const Tensor x = prepare(input, pt), out = prepare(output, pt);
  // A 16-bit reserve widened into kept memory (fast_path.h), not fresh memory.
  const Tensor res = dtype != ct ? fast::kept_floats(reserve.sizes(), fast::Pack::kStagedReserve)
                                       .copy_(reserve)
                                 : prepare(reserve, ct);
  const Tensor h0p = prepare(h0, pt), c0c = prepare(c0, ct);
  const Tensor wih = prepare(w_ih, pt), whh = prepare(w_hh, ct), whr = prepare(w_hr, ct);

  Tensor dh = grad_h_n.to(ct, false, true).contiguous();
  Tensor dc = grad_c_n.to(ct, false, true).contiguous();
  // A float32 buffer in kept memory when the products take a bfloat16 copy of it.
  Tensor dgates = pt != ct ? fast::kept_floats({T, B, 4 * H}, fast::Pack::kStagedGates)
                           : at::empty({T, B, 4 * H}, opts);
  huge_pages(dgates);
  Tensor dy = sz.has_proj ? at::empty({T, B, P}, opts) : Tensor();
  Tensor dh_full = sz.has_proj ? at::empty({B, H}, opts) : Tensor();

  if (fk) {
    AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::lstm_layer_backward", [&] {
      using T_ = scalar_t;
      fast::lstm_backward<T_>(*fk, T, B, H, reverse, len.data(),
                              fast::grad_out_view<T_>(grad_output, &gout_copy),
                              res.const_data_ptr<T_>(), c0c.const_data_ptr<T_>(),
                              whh.const_data_ptr<T_>(), dh.mutable_data_ptr<T_>(),
                              dc.mutable_data_ptr<T_>(), dgates.mutable_data_ptr<T_>());
    });
  } else {
    AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::lstm_layer_backward", [&] {
      using T_ = scalar_t;
      LstmBackward<T_>{T, B, I, H, P, sz.has_proj, StepOrder{T, reverse}, len.data(),
                       gout.const_data_ptr<T_>(), res.const_data_ptr<T_>(),
                       c0c.const_data_ptr<T_>(), whh.const_data_ptr<T_>(),
                       sz.has_proj ? whr.const_data_ptr<T_>() : nullptr, dh.mutable_data_ptr<T_>(),
                       dc.mutable_data_ptr<T_>(), dgates.mutable_data_ptr<T_>(),
                       sz.has_proj ? dy.mutable_data_ptr<T_>() : nullptr,
                       sz.has_proj ? dh_full.mutable_data_ptr<T_>() : nullptr}
          .run();
    });
  }

  // Whole-sequence weight gradients: GEMMs over all T*B rows at once.
  gout_copy = Tensor();
  Tensor db_ih = input.new_empty({0}), db_hh = input.new_empty({0});
  if (sz.has_bias) {  // summed in the compute dtype
    const Tensor db = dgates.view({T * B, 4 * H}).sum(0);
    db_ih = db.to(dtype, false, /*copy=*/true);
    db_hh = db.to(dtype, false, /*copy=*/true);
  }
  const Tensor dg = prepare(dgates, pt).view({T * B, 4 * H});
  dgates = Tensor();
  const Tensor dw_hh = hidden_weight_grad(dg, out, h0p, len, reverse);
  const Tensor dw_ih = transposed_product(dg, x.view({T * B, I}));
  // Last: it overwrites dgates.
  Tensor dx = input.new_empty({0});
  if (input_grad) {
    dx = input_grad_over(dg, I, [&](int64_t r0, int64_t r1, Tensor& rows) {
      at::mm_out(rows, dg.narrow(0, r0, r1 - r0), wih);
    }).view({T, B, I});
  }
  Tensor dw_hr = input.new_empty({0});
  if (sz.has_proj) {
    Tensor h_full = at::empty({T, B, H}, opts);
    AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::lstm_layer_backward", [&] {
      recompute_h_full<scalar_t>(T * B, H, res.const_data_ptr<scalar_t>(),
                                 h_full.mutable_data_ptr<scalar_t>());
    });
    dw_hr = transposed_product(dy.view({T * B, P}), h_full.view({T * B, H})).to(dtype);
  }
  const Tensor dh0 = state_grad ? dh.to(dtype) : input.new_empty({0});
  const Tensor dc0 = state_grad ? dc.to(dtype) : input.new_empty({0});
  return {dx.to(dtype), dh0, dc0, dw_ih.to(dtype), dw_hh.to(dtype), db_ih, db_hh, dw_hr};
}

}  // namespace cpu
}  // namespace rnnkit
