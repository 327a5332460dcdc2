// The LSTM layer op on CUDA, forward and backward (contract: layer_contract.h).
//
// Forward: x·W_ihᵀ for all steps in one GEMM; then per step one GEMM
// h_prev·W_hhᵀ and one fused pointwise kernel (biases, gates, cell update,
// masking, reserve), plus with a projection one GEMM h·W_hrᵀ (and, with
// lengths, a small kernel that masks its result).
// Backward: per step (with a projection, one GEMM back through W_hr, then) one
// fused pointwise kernel and one GEMM for the gradient of h_prev; the weight
// gradients and grad_input are whole-sequence GEMMs after the loop.

#include "common.cuh"
#include "layer_cuda.h"

#include <c10/cuda/CUDAGuard.h>
#include <rnnkit/cells.h>
#include <rnnkit/layer_checks.h>

namespace rnnkit {
namespace cuda {
namespace {

// ------------------------------------------------------------------ forward

// One step of the forward pass. Pointers are to this step's slices; every [B, X]
// buffer is row-major and contiguous.
template <typename scalar_t>
struct ForwardStep {
  const scalar_t* x_gates;  // [B, 4H] x[t]·W_ihᵀ
  const scalar_t* h_gates;  // [B, 4H] h_prev·W_hhᵀ
  const scalar_t* b_ih;     // [4H] (kHasBias)
  const scalar_t* b_hh;     // [4H] (kHasBias)
  const scalar_t* c_prev;   // [B, H]
  scalar_t* c_next;         // [B, H], never c_prev
  const scalar_t* h_prev;   // [B, H] (kHasLengths, no projection)
  scalar_t* h_next;         // [B, H] (kHasLengths, no projection), never h_prev
  scalar_t* h_out;          // [B, H] output[t], or with a projection the unprojected h
  scalar_t* reserve;        // [B, 5H] reserve[t]
  const int64_t* lengths;   // [B] (kHasLengths)
  int64_t t, B, H;
};

template <typename scalar_t, bool kHasLengths, bool kHasBias, bool kProjection>
__global__ void forward_step_kernel(const ForwardStep<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = p.H;
  RNNKIT_GRID_STRIDE_LOOP(i, p.B * H) {
    const int64_t b = i / H;
    const int64_t j = i - b * H;
    const int64_t row = b * 4 * H;
    acc_t pre[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t at = row + k * H + j;
      pre[k] = static_cast<acc_t>(p.x_gates[at]) + static_cast<acc_t>(p.h_gates[at]);
      if constexpr (kHasBias) {
        pre[k] += static_cast<acc_t>(p.b_ih[k * H + j]) + static_cast<acc_t>(p.b_hh[k * H + j]);
      }
    }
    const acc_t c_prev = static_cast<acc_t>(p.c_prev[i]);
    const auto s = cells::lstm_forward<acc_t>(pre[0], pre[1], pre[2], pre[3], c_prev);
    const bool real = step_is_real<kHasLengths>(p.lengths, b, p.t);
    const acc_t zero(0);

    scalar_t* r = p.reserve + b * 5 * H + j;
    r[0 * H] = static_cast<scalar_t>(real ? s.i : zero);
    r[1 * H] = static_cast<scalar_t>(real ? s.f : zero);
    r[2 * H] = static_cast<scalar_t>(real ? s.g : zero);
    r[3 * H] = static_cast<scalar_t>(real ? s.o : zero);
    r[4 * H] = static_cast<scalar_t>(real ? s.c : zero);
    p.c_next[i] = static_cast<scalar_t>(real ? s.c : c_prev);
    p.h_out[i] = static_cast<scalar_t>(real ? s.h : zero);
    if constexpr (kHasLengths && !kProjection) {
      p.h_next[i] = real ? static_cast<scalar_t>(s.h) : p.h_prev[i];
    }
  }
}

// With a projection and lengths: output[t] holds h·W_hrᵀ for every sequence;
// zero it at padded steps, where the state keeps h_prev instead.
template <typename scalar_t>
__global__ void mask_projected_kernel(scalar_t* __restrict__ output_t,
                                      const scalar_t* __restrict__ h_prev,
                                      scalar_t* __restrict__ h_next,
                                      const int64_t* __restrict__ lengths, int64_t t, int64_t B,
                                      int64_t P) {
  RNNKIT_GRID_STRIDE_LOOP(i, B * P) {
    if (step_is_real<true>(lengths, i / P, t)) {
      h_next[i] = output_t[i];
    } else {
      h_next[i] = h_prev[i];
      output_t[i] = scalar_t(0);
    }
  }
}

template <typename scalar_t>
void forward_impl(const LayerSizes& s, const at::Tensor& input,
                  const std::optional<at::Tensor>& lengths, const at::Tensor& h0,
                  const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                  const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                  const std::optional<at::Tensor>& w_hr, bool reverse, at::Tensor& output,
                  at::Tensor& h_n, at::Tensor& c_n, at::Tensor& reserve) {
  const int64_t T = s.T, B = s.B, H = s.H, P = s.P;
  const bool has_lengths = lengths.has_value();
  const bool projection = w_hr.has_value();
  const StepOrder order{T, reverse};

  Workspace ws;
  const int64_t x_gates_at = ws.plan(T * B * 4 * H);
  const int64_t h_gates_at = ws.plan(B * 4 * H);
  const int64_t c_scratch_at = ws.plan(B * H);
  const int64_t h_scratch_at = ws.plan(has_lengths ? B * P : 0);
  const int64_t h_raw_at = ws.plan(projection ? B * H : 0);
  ws.allocate(input.options());
  at::Tensor x_gates = ws.slice(x_gates_at, {T * B, 4 * H});
  at::Tensor h_gates = ws.slice(h_gates_at, {B, 4 * H});
  const StateChain c_chain{c_n, ws.slice(c_scratch_at, {B, H}), T};
  // Without lengths the state after step t is output[t] itself; with them it
  // differs at padded steps and lives in its own chain.
  const StateChain h_chain{h_n, has_lengths ? ws.slice(h_scratch_at, {B, P}) : at::Tensor(), T};
  at::Tensor h_raw = projection ? ws.slice(h_raw_at, {B, H}) : at::Tensor();

  at::mm_out(x_gates, input.view({T * B, s.I}), w_ih.t());
  const at::Tensor w_hh_t = w_hh.t();
  const at::Tensor w_hr_t = projection ? w_hr->t() : at::Tensor();

  at::Tensor h_prev = h0;
  at::Tensor c_prev = c0;
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = order.step(k);
    at::Tensor output_t = output.select(0, t);
    const at::Tensor& c_next = c_chain.target(k);
    const at::Tensor h_next = has_lengths ? h_chain.target(k) : output_t;

    at::mm_out(h_gates, h_prev, w_hh_t);

    ForwardStep<scalar_t> p;
    p.x_gates = ptr<scalar_t>(x_gates) + t * B * 4 * H;
    p.h_gates = ptr<scalar_t>(h_gates);
    p.b_ih = ptr_or_null<scalar_t>(b_ih);
    p.b_hh = ptr_or_null<scalar_t>(b_hh);
    p.c_prev = ptr<scalar_t>(c_prev);
    p.c_next = ptr<scalar_t>(c_next);
    p.h_prev = ptr<scalar_t>(h_prev);
    p.h_next = ptr<scalar_t>(h_next);
    p.h_out = projection ? ptr<scalar_t>(h_raw) : ptr<scalar_t>(output_t);
    p.reserve = ptr<scalar_t>(reserve) + t * B * 5 * H;
    p.lengths = ptr_or_null<int64_t>(lengths);
    p.t = t;
    p.B = B;
    p.H = H;
    with_static_flags(
        [&](auto has_lengths_c, auto has_bias_c, auto projection_c) {
          launch_elementwise(B * H,
                             forward_step_kernel<scalar_t, decltype(has_lengths_c)::value,
                                                 decltype(has_bias_c)::value,
                                                 decltype(projection_c)::value>,
                             p);
        },
        has_lengths, b_ih.has_value(), projection);

    if (projection) {
      at::mm_out(output_t, h_raw, w_hr_t);
      if (has_lengths) {
        launch_elementwise(B * P, mask_projected_kernel<scalar_t>, ptr<scalar_t>(output_t),
                           ptr<scalar_t>(h_prev), ptr<scalar_t>(h_next),
                           ptr_or_null<int64_t>(lengths), t, B, P);
      }
    }
    h_prev = h_next;
    c_prev = c_next;
  }
  if (!has_lengths) {
    h_n.copy_(h_prev);  // output at the last step
  }
}

// ------------------------------------------------------------------ backward

// One step of the backward pass, visiting t after every step that followed it.
template <typename scalar_t>
struct BackwardStep {
  const scalar_t* reserve;       // [B, 5H] reserve[t]
  const scalar_t* reserve_prev;  // [B, 5H] reserve[prev(t)], null when t came first
  const scalar_t* c0;            // [B, H]
  const scalar_t* dh;            // [B, H] gradient of o·tanh(c) at t
  const scalar_t* dh_slot;       // [B, P] gradient of the state h after t, dy[t] included
  const scalar_t* dc;            // [B, H] gradient of the state c after t
  scalar_t* dc_prev;             // [B, H] gradient of the state c before t, never dc
  scalar_t* dgates;              // [B, 4H] gradient of the gate pre-activations at t
  scalar_t* dgates_first;        // [B, 4H] rows of sequences whose first real step is t
  scalar_t* dh_prev_slot;        // [B, P] out: direct part of the gradient of h before t,
                                 //   plus dy[prev(t)]; the GEMM then adds dgates·W_hh
  const scalar_t* dy_prev;       // [B, P] grad_output[prev(t)], null when t came first
  scalar_t* h_raw;               // [B, H] (kProjection) o·tanh(c) at t, for grad_w_hr
  const int64_t* lengths;        // [B] (kHasLengths)
  int64_t t, t_prev, B, H, P;    // t_prev = -1 when t came first
};

template <typename scalar_t, bool kHasLengths, bool kProjection>
__global__ void backward_step_kernel(const BackwardStep<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = p.H;
  const acc_t zero(0);
  RNNKIT_GRID_STRIDE_LOOP(i, p.B * H) {
    const int64_t b = i / H;
    const int64_t j = i - b * H;
    const bool real = step_is_real<kHasLengths>(p.lengths, b, p.t);
    const bool prev_real = p.t_prev >= 0 && step_is_real<kHasLengths>(p.lengths, b, p.t_prev);
    scalar_t* dg = p.dgates + b * 4 * H + j;
    if (real) {
      const scalar_t* r = p.reserve + b * 5 * H + j;
      const acc_t c_prev = prev_real ? static_cast<acc_t>(p.reserve_prev[b * 5 * H + 4 * H + j])
                                     : static_cast<acc_t>(p.c0[i]);
      const acc_t o = static_cast<acc_t>(r[3 * H]);
      const acc_t c = static_cast<acc_t>(r[4 * H]);
      const auto d = cells::lstm_backward<acc_t>(
          static_cast<acc_t>(p.dh[i]), static_cast<acc_t>(p.dc[i]), static_cast<acc_t>(r[0]),
          static_cast<acc_t>(r[H]), static_cast<acc_t>(r[2 * H]), o, c, c_prev);
      dg[0 * H] = static_cast<scalar_t>(d.pre_i);
      dg[1 * H] = static_cast<scalar_t>(d.pre_f);
      dg[2 * H] = static_cast<scalar_t>(d.pre_g);
      dg[3 * H] = static_cast<scalar_t>(d.pre_o);
      p.dc_prev[i] = static_cast<scalar_t>(d.c_prev);
      if (!prev_real) {
        scalar_t* first = p.dgates_first + b * 4 * H + j;
#pragma unroll
        for (int k = 0; k < 4; ++k) first[k * H] = dg[k * H];
      }
      if constexpr (kProjection) {
        p.h_raw[i] = static_cast<scalar_t>(o * cells::ScalarMath<acc_t>::tanh(c));
      }
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) dg[k * H] = scalar_t(0);
      p.dc_prev[i] = p.dc[i];
      if constexpr (kProjection) {
        p.h_raw[i] = scalar_t(0);
      }
    }
    // The [B, P] part: j < P covers all of it (P == H, or P < H with a projection).
    if (j < p.P) {
      const int64_t ip = b * p.P + j;
      // h_prev reaches h only through the GEMM (added afterwards), except at
      // padded steps, where the state passes through unchanged.
      acc_t direct = real ? zero : static_cast<acc_t>(p.dh_slot[ip]);
      if (prev_real) {
        direct += static_cast<acc_t>(p.dy_prev[ip]);
      }
      p.dh_prev_slot[ip] = static_cast<scalar_t>(direct);
    }
  }
}

template <typename scalar_t>
void backward_impl(const LayerSizes& s, const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                   const at::Tensor& grad_c_n, const at::Tensor& input,
                   const std::optional<at::Tensor>& lengths, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                   const std::optional<at::Tensor>& w_hr, bool reverse, const at::Tensor& output,
                   const at::Tensor& reserve, at::Tensor& grad_input, at::Tensor& grad_h0,
                   at::Tensor& grad_c0, at::Tensor& grad_w_ih, at::Tensor& grad_w_hh,
                   at::Tensor& grad_b_ih, at::Tensor& grad_b_hh, at::Tensor& grad_w_hr) {
  const int64_t T = s.T, B = s.B, H = s.H, P = s.P;
  const bool has_lengths = lengths.has_value();
  const bool projection = w_hr.has_value();
  const StepOrder order{T, reverse};

  Workspace ws;
  const int64_t dgates_at = ws.plan(T * B * 4 * H);
  const int64_t dgates_first_at = ws.plan(B * 4 * H);
  const int64_t dc_scratch_at = ws.plan(B * H);
  // The gradient of the h state: with a projection kept for every step (grad_w_hr
  // needs it), otherwise in two alternating buffers.
  const int64_t dh_slots_at = ws.plan((projection ? T : 2) * B * P);
  const int64_t dh_raw_at = ws.plan(projection ? B * H : 0);
  const int64_t h_raw_at = ws.plan(projection ? T * B * H : 0);
  ws.allocate(input.options());
  at::Tensor dgates = ws.slice(dgates_at, {T, B, 4 * H});
  at::Tensor dgates_first = ws.slice(dgates_first_at, {B, 4 * H});
  at::Tensor dh_slots = ws.slice(dh_slots_at, {projection ? T : 2, B, P});
  at::Tensor dh_raw = projection ? ws.slice(dh_raw_at, {B, H}) : at::Tensor();
  at::Tensor h_raw = projection ? ws.slice(h_raw_at, {T, B, H}) : at::Tensor();
  const StateChain dc_chain{grad_c0, ws.slice(dc_scratch_at, {B, H}), T};
  // Backward visit j (0-based) reads slot j and writes slot j + 1; slot T is grad_h0.
  auto dh_slot = [&](int64_t j) -> at::Tensor {
    if (j == T) return grad_h0;
    return projection ? dh_slots.select(0, order.step(T - 1 - j)) : dh_slots.select(0, j % 2);
  };

  dgates_first.zero_();  // rows of sequences without a real step stay zero
  seed_hidden_grad<scalar_t>(grad_h_n, grad_output, dh_slot(0), lengths, order.step(T - 1));

  for (int64_t j = 0; j < T; ++j) {
    const int64_t t = order.step(T - 1 - j);
    const int64_t t_prev = order.prev(t);
    at::Tensor slot = dh_slot(j);
    at::Tensor slot_prev = dh_slot(j + 1);
    if (projection) {
      at::mm_out(dh_raw, slot, *w_hr);
    }
    BackwardStep<scalar_t> p;
    p.reserve = ptr<scalar_t>(reserve) + t * B * 5 * H;
    p.reserve_prev = t_prev >= 0 ? ptr<scalar_t>(reserve) + t_prev * B * 5 * H : nullptr;
    p.c0 = ptr<scalar_t>(c0);
    p.dh = projection ? ptr<scalar_t>(dh_raw) : ptr<scalar_t>(slot);
    p.dh_slot = ptr<scalar_t>(slot);
    p.dc = j == 0 ? ptr<scalar_t>(grad_c_n) : ptr<scalar_t>(dc_chain.target(j - 1));
    p.dc_prev = ptr<scalar_t>(dc_chain.target(j));
    p.dgates = ptr<scalar_t>(dgates) + t * B * 4 * H;
    p.dgates_first = ptr<scalar_t>(dgates_first);
    p.dh_prev_slot = ptr<scalar_t>(slot_prev);
    p.dy_prev = t_prev >= 0 ? ptr<scalar_t>(grad_output) + t_prev * B * P : nullptr;
    p.h_raw = projection ? ptr<scalar_t>(h_raw) + t * B * H : nullptr;
    p.lengths = ptr_or_null<int64_t>(lengths);
    p.t = t;
    p.t_prev = t_prev;
    p.B = B;
    p.H = H;
    p.P = P;
    with_static_flags(
        [&](auto has_lengths_c, auto projection_c) {
          launch_elementwise(B * H,
                             backward_step_kernel<scalar_t, decltype(has_lengths_c)::value,
                                                  decltype(projection_c)::value>,
                             p);
        },
        has_lengths, projection);
    at::addmm_out(slot_prev, slot_prev, dgates.select(0, t), w_hh);
  }

  input_grads(grad_input, grad_w_ih, dgates, input, w_ih);
  hidden_weight_grad(grad_w_hh, dgates, dgates_first, output, h0, reverse);
  if (grad_b_ih.numel() > 0) {
    // b_ih and b_hh enter the gate pre-activations alike, so their gradients agree.
    row_sum(grad_b_ih, dgates);
    grad_b_hh.copy_(grad_b_ih);
  }
  if (projection) {
    // grad_w_hr = Σ_t dh_slot[t]ᵀ · h_raw[t]; h_raw is zero at padded steps, so
    // the pass-through values the slots hold there contribute nothing.
    at::mm_out(grad_w_hr, dh_slots.view({T * B, P}).t(), h_raw.view({T * B, H}));
  }
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer(
    const Tensor& input_, const OptTensor& lengths_, const Tensor& h0_, const Tensor& c0_,
    const Tensor& w_ih_, const Tensor& w_hh_, const OptTensor& b_ih_, const OptTensor& b_hh_,
    const OptTensor& w_hr_, bool reverse) {
  const LayerSizes s = check_layer_forward(Cell::LSTM, at::kCUDA, input_, lengths_, h0_, &c0_,
                                           w_ih_, w_hh_, b_ih_, b_hh_, w_hr_);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const Tensor input = input_.contiguous(), h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const OptTensor lengths = contiguous(lengths_), b_ih = contiguous(b_ih_),
                  b_hh = contiguous(b_hh_), w_hr = contiguous(w_hr_);

  const auto options = input.options();
  Tensor output = at::empty({s.T, s.B, s.P}, options);
  Tensor h_n = at::empty({s.B, s.P}, options);
  Tensor c_n = at::empty({s.B, s.H}, options);
  Tensor reserve = at::empty({s.T, s.B, reserve_width(Cell::LSTM) * s.H}, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "rnnkit::lstm_layer", [&] {
    forward_impl<scalar_t>(s, input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                           output, h_n, c_n, reserve);
  });
  return {output, h_n, c_n, reserve};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward(
    const Tensor& grad_output_, const Tensor& grad_h_n_, const Tensor& grad_c_n_,
    const Tensor& input_, const OptTensor& lengths_, const Tensor& h0_, const Tensor& c0_,
    const Tensor& w_ih_, const Tensor& w_hh_, const OptTensor& b_ih_, const OptTensor& b_hh_,
    const OptTensor& w_hr_, bool reverse, const Tensor& output_, const Tensor& reserve_) {
  const LayerSizes s = check_layer_forward(Cell::LSTM, at::kCUDA, input_, lengths_, h0_, &c0_,
                                           w_ih_, w_hh_, b_ih_, b_hh_, w_hr_,
                                           "lstm_layer_backward");
  check_layer_backward(Cell::LSTM, s, input_, grad_output_, grad_h_n_, &grad_c_n_, output_,
                       reserve_);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const Tensor grad_output = grad_output_.contiguous(), grad_h_n = grad_h_n_.contiguous(),
               grad_c_n = grad_c_n_.contiguous();
  const Tensor input = input_.contiguous(), h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const Tensor output = output_.contiguous(), reserve = reserve_.contiguous();
  const OptTensor lengths = contiguous(lengths_), w_hr = contiguous(w_hr_);

  const auto options = input.options();
  const int64_t bias_numel = b_ih_.has_value() ? 4 * s.H : 0;
  Tensor grad_input = at::empty_like(input);
  Tensor grad_h0 = at::empty_like(h0);
  Tensor grad_c0 = at::empty_like(c0);
  Tensor grad_w_ih = at::empty_like(w_ih);
  Tensor grad_w_hh = at::empty_like(w_hh);
  Tensor grad_b_ih = at::empty({bias_numel}, options);
  Tensor grad_b_hh = at::empty({bias_numel}, options);
  Tensor grad_w_hr = w_hr.has_value() ? at::empty_like(*w_hr) : at::empty({0}, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "rnnkit::lstm_layer_backward", [&] {
    backward_impl<scalar_t>(s, grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, w_ih,
                            w_hh, w_hr, reverse, output, reserve, grad_input, grad_h0, grad_c0,
                            grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr);
  });
  return {grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr};
}

}  // namespace cuda
}  // namespace rnnkit
