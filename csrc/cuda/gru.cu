// The GRU layer op on CUDA, forward and backward (contract: layer_contract.h).
//
// Forward: x·W_ihᵀ for all steps in one GEMM; then per step one GEMM
// h_prev·W_hhᵀ and one fused pointwise kernel (biases, gates, state update,
// masking, reserve). The biases stay out of the GEMMs because the reset gate
// scales W_hn h + b_hn as a whole.
// Backward: per step one fused pointwise kernel and one GEMM for the gradient of
// h_prev; weight gradients and grad_input are whole-sequence GEMMs afterwards.
// The gate gradients differ between the two projections only in the n gate
// (dn for x·W_inᵀ, r·dn for W_hn h), so both are kept: dgates_x and dgates_h.

#include "common.cuh"
#include "layer_cuda.h"

#include <c10/cuda/CUDAGuard.h>
#include <rnnkit/cells.h>
#include <rnnkit/layer_checks.h>

namespace rnnkit {
namespace cuda {
namespace {

// ------------------------------------------------------------------ forward

template <typename scalar_t>
struct ForwardStep {
  const scalar_t* x_gates;  // [B, 3H] x[t]·W_ihᵀ
  const scalar_t* h_gates;  // [B, 3H] h_prev·W_hhᵀ
  const scalar_t* b_ih;     // [3H] (kHasBias)
  const scalar_t* b_hh;     // [3H] (kHasBias)
  const scalar_t* h_prev;   // [B, H]
  scalar_t* h_next;         // [B, H] (kHasLengths), never h_prev
  scalar_t* output;         // [B, H] output[t]
  scalar_t* reserve;        // [B, 4H] reserve[t]
  const int64_t* lengths;   // [B] (kHasLengths)
  int64_t t, B, H;
};

template <typename scalar_t, bool kHasLengths, bool kHasBias>
__global__ void forward_step_kernel(const ForwardStep<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = p.H;
  RNNKIT_GRID_STRIDE_LOOP(i, p.B * H) {
    const int64_t b = i / H;
    const int64_t j = i - b * H;
    const int64_t row = b * 3 * H;
    acc_t x[3], h[3];
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      x[k] = static_cast<acc_t>(p.x_gates[row + k * H + j]);
      h[k] = static_cast<acc_t>(p.h_gates[row + k * H + j]);
      if constexpr (kHasBias) {
        x[k] += static_cast<acc_t>(p.b_ih[k * H + j]);
        h[k] += static_cast<acc_t>(p.b_hh[k * H + j]);
      }
    }
    const acc_t h_prev = static_cast<acc_t>(p.h_prev[i]);
    const auto s = cells::gru_forward<acc_t>(x[0], x[1], x[2], h[0], h[1], h[2], h_prev);
    const bool real = step_is_real<kHasLengths>(p.lengths, b, p.t);
    const acc_t zero(0);

    scalar_t* r = p.reserve + b * 4 * H + j;
    r[0 * H] = static_cast<scalar_t>(real ? s.r : zero);
    r[1 * H] = static_cast<scalar_t>(real ? s.z : zero);
    r[2 * H] = static_cast<scalar_t>(real ? s.n : zero);
    r[3 * H] = static_cast<scalar_t>(real ? h[2] : zero);
    p.output[i] = static_cast<scalar_t>(real ? s.h : zero);
    if constexpr (kHasLengths) {
      p.h_next[i] = static_cast<scalar_t>(real ? s.h : h_prev);
    }
  }
}

template <typename scalar_t>
void forward_impl(const LayerSizes& s, const at::Tensor& input,
                  const std::optional<at::Tensor>& lengths, const at::Tensor& h0,
                  const at::Tensor& w_ih, const at::Tensor& w_hh,
                  const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                  bool reverse, at::Tensor& output, at::Tensor& h_n, at::Tensor& reserve) {
  const int64_t T = s.T, B = s.B, H = s.H;
  const bool has_lengths = lengths.has_value();
  const StepOrder order{T, reverse};

  Workspace ws;
  const int64_t x_gates_at = ws.plan(T * B * 3 * H);
  const int64_t h_gates_at = ws.plan(B * 3 * H);
  const int64_t h_scratch_at = ws.plan(has_lengths ? B * H : 0);
  ws.allocate(input.options());
  at::Tensor x_gates = ws.slice(x_gates_at, {T * B, 3 * H});
  at::Tensor h_gates = ws.slice(h_gates_at, {B, 3 * H});
  // Without lengths the state after step t is output[t] itself.
  const StateChain h_chain{h_n, has_lengths ? ws.slice(h_scratch_at, {B, H}) : at::Tensor(), T};

  at::mm_out(x_gates, input.view({T * B, s.I}), w_ih.t());
  const at::Tensor w_hh_t = w_hh.t();

  at::Tensor h_prev = h0;
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = order.step(k);
    at::Tensor output_t = output.select(0, t);
    const at::Tensor h_next = has_lengths ? h_chain.target(k) : output_t;

    at::mm_out(h_gates, h_prev, w_hh_t);

    ForwardStep<scalar_t> p;
    p.x_gates = ptr<scalar_t>(x_gates) + t * B * 3 * H;
    p.h_gates = ptr<scalar_t>(h_gates);
    p.b_ih = ptr_or_null<scalar_t>(b_ih);
    p.b_hh = ptr_or_null<scalar_t>(b_hh);
    p.h_prev = ptr<scalar_t>(h_prev);
    p.h_next = ptr<scalar_t>(h_next);
    p.output = ptr<scalar_t>(output_t);
    p.reserve = ptr<scalar_t>(reserve) + t * B * 4 * H;
    p.lengths = ptr_or_null<int64_t>(lengths);
    p.t = t;
    p.B = B;
    p.H = H;
    with_static_flags(
        [&](auto has_lengths_c, auto has_bias_c) {
          launch_elementwise(B * H,
                             forward_step_kernel<scalar_t, decltype(has_lengths_c)::value,
                                                 decltype(has_bias_c)::value>,
                             p);
        },
        has_lengths, b_ih.has_value());
    h_prev = h_next;
  }
  if (!has_lengths) {
    h_n.copy_(h_prev);  // output at the last step
  }
}

// ------------------------------------------------------------------ backward

template <typename scalar_t>
struct BackwardStep {
  const scalar_t* reserve;      // [B, 4H] reserve[t]
  const scalar_t* h0;           // [B, H]
  const scalar_t* output_prev;  // [B, H] output[prev(t)], null when t came first
  const scalar_t* dh;           // [B, H] gradient of the state h after t, dy[t] included
  scalar_t* dgates_x;           // [B, 3H] gradient of x[t]·W_ihᵀ + b_ih
  scalar_t* dgates_h;           // [B, 3H] gradient of h_prev·W_hhᵀ + b_hh
  scalar_t* dgates_first;       // [B, 3H] dgates_h rows of sequences whose first real step is t
  scalar_t* dh_prev;            // [B, H] out: direct part of the gradient of h before t,
                                //   plus dy[prev(t)]; the GEMM then adds dgates_h·W_hh
  const scalar_t* dy_prev;      // [B, H] grad_output[prev(t)], null when t came first
  const int64_t* lengths;       // [B] (kHasLengths)
  int64_t t, t_prev, B, H;      // t_prev = -1 when t came first
};

template <typename scalar_t, bool kHasLengths>
__global__ void backward_step_kernel(const BackwardStep<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = p.H;
  RNNKIT_GRID_STRIDE_LOOP(i, p.B * H) {
    const int64_t b = i / H;
    const int64_t j = i - b * H;
    const bool real = step_is_real<kHasLengths>(p.lengths, b, p.t);
    const bool prev_real = p.t_prev >= 0 && step_is_real<kHasLengths>(p.lengths, b, p.t_prev);
    const acc_t dh = static_cast<acc_t>(p.dh[i]);
    scalar_t* dgx = p.dgates_x + b * 3 * H + j;
    scalar_t* dgh = p.dgates_h + b * 3 * H + j;
    acc_t direct;
    if (real) {
      const scalar_t* r = p.reserve + b * 4 * H + j;
      const acc_t h_prev = prev_real ? static_cast<acc_t>(p.output_prev[i])
                                     : static_cast<acc_t>(p.h0[i]);
      const auto d = cells::gru_backward<acc_t>(dh, static_cast<acc_t>(r[0]),
                                                static_cast<acc_t>(r[H]),
                                                static_cast<acc_t>(r[2 * H]),
                                                static_cast<acc_t>(r[3 * H]), h_prev);
      const scalar_t d_r = static_cast<scalar_t>(d.pre_r);
      const scalar_t d_z = static_cast<scalar_t>(d.pre_z);
      const scalar_t d_hn = static_cast<scalar_t>(d.hn);
      dgx[0] = d_r;
      dgx[H] = d_z;
      dgx[2 * H] = static_cast<scalar_t>(d.xn);
      dgh[0] = d_r;
      dgh[H] = d_z;
      dgh[2 * H] = d_hn;
      if (!prev_real) {
        scalar_t* first = p.dgates_first + b * 3 * H + j;
        first[0] = d_r;
        first[H] = d_z;
        first[2 * H] = d_hn;
      }
      direct = d.h_prev;
    } else {
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        dgx[k * H] = scalar_t(0);
        dgh[k * H] = scalar_t(0);
      }
      direct = dh;  // padded step: the state passes through unchanged
    }
    if (prev_real) {
      direct += static_cast<acc_t>(p.dy_prev[i]);
    }
    p.dh_prev[i] = static_cast<scalar_t>(direct);
  }
}

template <typename scalar_t>
void backward_impl(const LayerSizes& s, const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                   const at::Tensor& input, const std::optional<at::Tensor>& lengths,
                   const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                   bool reverse, const at::Tensor& output, const at::Tensor& reserve,
                   at::Tensor& grad_input, at::Tensor& grad_h0, at::Tensor& grad_w_ih,
                   at::Tensor& grad_w_hh, at::Tensor& grad_b_ih, at::Tensor& grad_b_hh) {
  const int64_t T = s.T, B = s.B, H = s.H;
  const bool has_lengths = lengths.has_value();
  const StepOrder order{T, reverse};

  Workspace ws;
  const int64_t dgates_x_at = ws.plan(T * B * 3 * H);
  const int64_t dgates_h_at = ws.plan(T * B * 3 * H);
  const int64_t dgates_first_at = ws.plan(B * 3 * H);
  const int64_t dh_slots_at = ws.plan(2 * B * H);
  ws.allocate(input.options());
  at::Tensor dgates_x = ws.slice(dgates_x_at, {T, B, 3 * H});
  at::Tensor dgates_h = ws.slice(dgates_h_at, {T, B, 3 * H});
  at::Tensor dgates_first = ws.slice(dgates_first_at, {B, 3 * H});
  at::Tensor dh_slots = ws.slice(dh_slots_at, {2, B, H});
  // Backward visit j (0-based) reads slot j and writes slot j + 1; slot T is grad_h0.
  auto dh_slot = [&](int64_t j) -> at::Tensor {
    return j == T ? grad_h0 : dh_slots.select(0, j % 2);
  };

  dgates_first.zero_();  // rows of sequences without a real step stay zero
  seed_hidden_grad<scalar_t>(grad_h_n, grad_output, dh_slot(0), lengths, order.step(T - 1));

  for (int64_t j = 0; j < T; ++j) {
    const int64_t t = order.step(T - 1 - j);
    const int64_t t_prev = order.prev(t);
    at::Tensor slot = dh_slot(j);
    at::Tensor slot_prev = dh_slot(j + 1);
    BackwardStep<scalar_t> p;
    p.reserve = ptr<scalar_t>(reserve) + t * B * 4 * H;
    p.h0 = ptr<scalar_t>(h0);
    p.output_prev = t_prev >= 0 ? ptr<scalar_t>(output) + t_prev * B * H : nullptr;
    p.dh = ptr<scalar_t>(slot);
    p.dgates_x = ptr<scalar_t>(dgates_x) + t * B * 3 * H;
    p.dgates_h = ptr<scalar_t>(dgates_h) + t * B * 3 * H;
    p.dgates_first = ptr<scalar_t>(dgates_first);
    p.dh_prev = ptr<scalar_t>(slot_prev);
    p.dy_prev = t_prev >= 0 ? ptr<scalar_t>(grad_output) + t_prev * B * H : nullptr;
    p.lengths = ptr_or_null<int64_t>(lengths);
    p.t = t;
    p.t_prev = t_prev;
    p.B = B;
    p.H = H;
    with_static_flags(
        [&](auto has_lengths_c) {
          launch_elementwise(B * H, backward_step_kernel<scalar_t, decltype(has_lengths_c)::value>,
                             p);
        },
        has_lengths);
    at::addmm_out(slot_prev, slot_prev, dgates_h.select(0, t), w_hh);
  }

  input_grads(grad_input, grad_w_ih, dgates_x, input, w_ih);
  hidden_weight_grad(grad_w_hh, dgates_h, dgates_first, output, h0, reverse);
  if (grad_b_ih.numel() > 0) {
    row_sum(grad_b_ih, dgates_x);
    row_sum(grad_b_hh, dgates_h);
  }
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> gru_layer(const Tensor& input_, const OptTensor& lengths_,
                                             const Tensor& h0_, const Tensor& w_ih_,
                                             const Tensor& w_hh_, const OptTensor& b_ih_,
                                             const OptTensor& b_hh_, bool reverse) {
  const LayerSizes s = check_layer_forward(Cell::GRU, at::kCUDA, input_, lengths_, h0_, nullptr,
                                           w_ih_, w_hh_, b_ih_, b_hh_, std::nullopt);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const Tensor input = input_.contiguous(), h0 = h0_.contiguous();
  const Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const OptTensor lengths = contiguous(lengths_), b_ih = contiguous(b_ih_),
                  b_hh = contiguous(b_hh_);

  const auto options = input.options();
  Tensor output = at::empty({s.T, s.B, s.H}, options);
  Tensor h_n = at::empty({s.B, s.H}, options);
  Tensor reserve = at::empty({s.T, s.B, reserve_width(Cell::GRU) * s.H}, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "rnnkit::gru_layer", [&] {
    forward_impl<scalar_t>(s, input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, output, h_n,
                           reserve);
  });
  return {output, h_n, reserve};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_backward(
    const Tensor& grad_output_, const Tensor& grad_h_n_, const Tensor& input_,
    const OptTensor& lengths_, const Tensor& h0_, const Tensor& w_ih_, const Tensor& w_hh_,
    const OptTensor& b_ih_, const OptTensor& b_hh_, bool reverse, const Tensor& output_,
    const Tensor& reserve_) {
  const LayerSizes s = check_layer_forward(Cell::GRU, at::kCUDA, input_, lengths_, h0_, nullptr,
                                           w_ih_, w_hh_, b_ih_, b_hh_, std::nullopt,
                                           "gru_layer_backward");
  check_layer_backward(Cell::GRU, s, input_, grad_output_, grad_h_n_, nullptr, output_, reserve_);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const Tensor grad_output = grad_output_.contiguous(), grad_h_n = grad_h_n_.contiguous();
  const Tensor input = input_.contiguous(), h0 = h0_.contiguous();
  const Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const Tensor output = output_.contiguous(), reserve = reserve_.contiguous();
  const OptTensor lengths = contiguous(lengths_);

  const auto options = input.options();
  const int64_t bias_numel = b_ih_.has_value() ? 3 * s.H : 0;
  Tensor grad_input = at::empty_like(input);
  Tensor grad_h0 = at::empty_like(h0);
  Tensor grad_w_ih = at::empty_like(w_ih);
  Tensor grad_w_hh = at::empty_like(w_hh);
  Tensor grad_b_ih = at::empty({bias_numel}, options);
  Tensor grad_b_hh = at::empty({bias_numel}, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "rnnkit::gru_layer_backward", [&] {
    backward_impl<scalar_t>(s, grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, reverse,
                            output, reserve, grad_input, grad_h0, grad_w_ih, grad_w_hh,
                            grad_b_ih, grad_b_hh);
  });
  return {grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh};
}

}  // namespace cuda
}  // namespace rnnkit
