// The Elman RNN layer (tanh or relu) on the CPU, forward and backward
// (contract: layer_contract.h). It keeps no reserve: the output is h itself,
// which is all the backward needs.

#include <ATen/Dispatch.h>
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
struct RnnForward {
  int64_t T_, B, H;
  bool relu;
  StepOrder order;
  const int64_t* len;
  const T* gx;    // [T, B, H] input projection with both biases
  const T* w_hh;  // [H, H]
  T* h;           // [B, H] running state
  T* out;         // [T, B, H]
  T* gh;          // [B, H] workspace: h · W_hhᵀ

  void run() const {
    for (int64_t s = 0; s < T_; ++s) {
      const int64_t t = order.step(s);
      gemm(B, H, H, h, H, w_hh, H, /*transpose_b=*/true, gh, H, /*accumulate=*/false);
      parallel_rows(B, H, [&](int64_t b, int64_t j0, int64_t j1) {
        T* o = out + (t * B + b) * H;
        if (t >= len[b]) {
          fill_zero(o + j0, j1 - j0);
          return;
        }
        const T* x_row = gx + (t * B + b) * H;
        const T* h_row = gh + b * H;
        T* state = h + b * H;
        for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
          using L = decltype(lane);
          const auto v = cells::rnn_forward<typename L::V, typename L::M>(
              L::load(x_row + j) + L::load(h_row + j), relu);
          L::store(o + j, v);
          L::store(state + j, v);
        });
      });
    }
  }
};

template <typename T>
struct RnnBackward {
  int64_t T_, B, H;
  bool relu;
  StepOrder order;
  const int64_t* len;
  const T* grad_out;  // [T, B, H]
  const T* out;       // [T, B, H]
  const T* w_hh;      // [H, H]
  T* dh;              // [B, H] gradient of the running h
  T* dpre;            // [T, B, H] gradients of the pre-activations

  void run() const {
    for (int64_t s = T_ - 1; s >= 0; --s) {
      const int64_t t = order.step(s);
      parallel_rows(B, H, [&](int64_t b, int64_t j0, int64_t j1) {
        T* d = dpre + (t * B + b) * H;
        if (t >= len[b]) {
          fill_zero(d + j0, j1 - j0);
          return;
        }
        const T* g_row = grad_out + (t * B + b) * H;
        const T* y_row = out + (t * B + b) * H;
        T* dh_row = dh + b * H;
        for_each_lane<T>(j0, j1, [&](auto lane, int64_t j) {
          using L = decltype(lane);
          using V = typename L::V;
          const V dh_j = L::load(dh_row + j) + L::load(g_row + j);
          L::store(d + j, cells::rnn_backward<V, typename L::M>(dh_j, L::load(y_row + j), relu));
          L::store(dh_row + j, V(0));  // refilled by the GEMM with dpre · W_hh
        });
      });
      gemm(B, H, H, dpre + t * B * H, H, w_hh, H, /*transpose_b=*/false, dh, H,
           /*accumulate=*/true);
    }
  }
};

}  // namespace

std::tuple<Tensor, Tensor, Tensor> rnn_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, bool relu) {
  const Cell cell = relu ? Cell::RNN_RELU : Cell::RNN_TANH;
  const LayerSizes sz = check_layer_forward(cell, at::kCPU, input, lengths, h0, nullptr, w_ih,
                                            w_hh, b_ih, b_hh, {});
  const int64_t T = sz.T, B = sz.B, H = sz.H;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const auto opts = input.options().dtype(ct);
  const std::vector<int64_t> len = sequence_lengths(lengths, B, T);
  if (one_step::applies(T, B, H, len, false)) {
    return one_step::rnn(input, h0, w_ih, w_hh, b_ih, b_hh, relu);
  }
  if (auto bf16 = rnn_layer_bf16(sz, input, len, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu)) {
    return *bf16;
  }

  const Tensor x = prepare(input, ct);
  const Tensor wih = prepare(w_ih, ct), whh = prepare(w_hh, ct);
  const Tensor bias = sz.has_bias ? prepare(*b_ih, ct).add(prepare(*b_hh, ct)) : Tensor();
  const fast::Kernels* fk = fast::select();
  // The fast path projects the input inside its step loop.
  const Tensor gx = fk ? Tensor() : input_projection(x, wih, bias);

  Tensor h = h0.to(ct, /*non_blocking=*/false, /*copy=*/true).contiguous();
  Tensor output = at::empty({T, B, H}, opts);
  huge_pages(output);
  if (fk) {
    AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::rnn_layer", [&] {
      using T_ = scalar_t;
      fast::rnn_forward<T_>(*fk, T, B, H, reverse, relu, len.data(), x.const_data_ptr<T_>(),
                            sz.I, wih.const_data_ptr<T_>(),
                            sz.has_bias ? bias.const_data_ptr<T_>() : nullptr,
                            whh.const_data_ptr<T_>(), h.mutable_data_ptr<T_>(),
                            output.mutable_data_ptr<T_>());
    });
    return {output.to(dtype), h.to(dtype), input.new_empty({0})};
  }
  Tensor gh = at::empty({B, H}, opts);

  AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::rnn_layer", [&] {
    using T_ = scalar_t;
    RnnForward<T_>{T, B, H, relu, StepOrder{T, reverse}, len.data(), gx.const_data_ptr<T_>(),
                   whh.const_data_ptr<T_>(), h.mutable_data_ptr<T_>(),
                   output.mutable_data_ptr<T_>(), gh.mutable_data_ptr<T_>()}
        .run();
  });
  return {output.to(dtype), h.to(dtype), input.new_empty({0})};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, bool relu, const Tensor& output,
    const Tensor& reserve, bool input_grad, bool state_grad) {
  const Cell cell = relu ? Cell::RNN_RELU : Cell::RNN_TANH;
  const LayerSizes sz = check_layer_forward(cell, at::kCPU, input, lengths, h0, nullptr, w_ih,
                                            w_hh, b_ih, b_hh, {}, "rnn_layer_backward");
  check_layer_backward(cell, sz, input, grad_output, grad_h_n, nullptr, output, reserve);
  const int64_t T = sz.T, B = sz.B, I = sz.I, H = sz.H;
  const auto dtype = input.scalar_type();
  const auto ct = compute_dtype(dtype);
  const auto opts = input.options().dtype(ct);
  const std::vector<int64_t> len = sequence_lengths(lengths, B, T);
  if (one_step::applies(T, B, H, len, false)) {
    return one_step::rnn_backward(grad_output, grad_h_n, input, h0, w_ih, w_hh, sz.has_bias, relu,
                                  output, input_grad, state_grad);
  }

  const fast::Kernels* fk = fast::select();
  Tensor gout_copy;  // the fast path reads grad_output in place when it can
  const Tensor gout = fk ? Tensor() : prepare(grad_output, ct);
  const Tensor out = prepare(output, ct);
  // The whole-sequence products in products_dtype (cpu_common.h): x, h0 and W_ih
  // serve only them.
  const auto pt = products_dtype(dtype);
  const Tensor x = prepare(input, pt), h0p = prepare(h0, pt), wih = prepare(w_ih, pt);
  const Tensor whh = prepare(w_hh, ct);

  Tensor dh = grad_h_n.to(ct, false, true).contiguous();
  // A float32 buffer in kept memory when the products take a bfloat16 copy of it.
  Tensor dpre = pt != ct ? fast::kept_floats({T, B, H}, fast::Pack::kStagedGates)
                         : at::empty({T, B, H}, opts);
  huge_pages(dpre);

  if (fk) {
    AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::rnn_layer_backward", [&] {
      using T_ = scalar_t;
      fast::rnn_backward<T_>(*fk, T, B, H, reverse, relu, len.data(),
                             fast::grad_out_view<T_>(grad_output, &gout_copy),
                             out.const_data_ptr<T_>(), whh.const_data_ptr<T_>(),
                             dh.mutable_data_ptr<T_>(), dpre.mutable_data_ptr<T_>());
    });
  } else {
    AT_DISPATCH_FLOATING_TYPES(ct, "rnnkit::rnn_layer_backward", [&] {
      using T_ = scalar_t;
      RnnBackward<T_>{T, B, H, relu, StepOrder{T, reverse}, len.data(),
                      gout.const_data_ptr<T_>(), out.const_data_ptr<T_>(),
                      whh.const_data_ptr<T_>(), dh.mutable_data_ptr<T_>(),
                      dpre.mutable_data_ptr<T_>()}
          .run();
    });
  }

  Tensor db_ih = input.new_empty({0}), db_hh = input.new_empty({0});
  if (sz.has_bias) {  // summed in the compute dtype
    const Tensor db = dpre.view({T * B, H}).sum(0);
    db_ih = db.to(dtype, false, /*copy=*/true);
    db_hh = db.to(dtype, false, /*copy=*/true);
  }
  const Tensor dg = prepare(dpre, pt).view({T * B, H});
  dpre = Tensor();
  gout_copy = Tensor();
  const Tensor dw_hh =
      hidden_weight_grad(dg, pt == ct ? out : prepare(output, pt), h0p, len, reverse);
  const Tensor dw_ih = transposed_product(dg, x.view({T * B, I}));
  // Last: it overwrites dpre.
  Tensor dx = input.new_empty({0});
  if (input_grad) {
    dx = input_grad_over(dg, I, [&](int64_t r0, int64_t r1, Tensor& rows) {
      at::mm_out(rows, dg.narrow(0, r0, r1 - r0), wih);
    }).view({T, B, I});
  }
  const Tensor dh0 = state_grad ? dh.to(dtype) : input.new_empty({0});
  return {dx.to(dtype), dh0, dw_ih.to(dtype), dw_hh.to(dtype), db_ih, db_hh};
}

}  // namespace cpu
}  // namespace rnnkit
