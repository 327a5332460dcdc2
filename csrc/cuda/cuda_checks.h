#pragma once
// Argument checks of the CUDA layer ops: shapes, dtypes and devices as
// layer_contract.h states them. All checks read tensor metadata only, never
// tensor data, so they cost no device synchronisation (lengths *values* are
// handled on the device, see layer_cuda.h).

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <rnnkit/layer_contract.h>

#include <optional>

namespace rnnkit {
namespace cuda {

// The sizes of one layer op, read off its arguments once they are checked.
struct LayerSizes {
  int64_t T, B, I, H, P;
};

namespace detail {

inline void check_like(const char* op, const char* name, const at::Tensor& t,
                       const at::Tensor& input) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(),
              " but input is on ", input.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " has dtype ",
              t.scalar_type(), " but input has dtype ", input.scalar_type());
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t,
                        at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, op, ": expected ", name, " of shape ", expected, ", got ",
              t.sizes());
}

}  // namespace detail

inline LayerSizes check_forward_args(const char* op, Cell cell, const at::Tensor& input,
                                     const std::optional<at::Tensor>& lengths,
                                     const at::Tensor& h0, const at::Tensor* c0,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const std::optional<at::Tensor>& b_ih,
                                     const std::optional<at::Tensor>& b_hh,
                                     const std::optional<at::Tensor>& w_hr) {
  TORCH_CHECK(input.defined() && input.dim() == 3, op,
              ": expected input of shape [T, B, I], got ", input.sizes());
  TORCH_CHECK(input.size(0) > 0, op, ": expected a sequence of at least one step, got ",
              input.sizes());
  TORCH_CHECK(input.is_cuda(), op, ": the CUDA kernel got input on ", input.device());
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              op, ": input must be float32, float64, float16 or bfloat16, got ", dtype);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"h0", &h0},
                                {"w_ih", &w_ih},
                                {"w_hh", &w_hh}}) {
    detail::check_like(op, name, *t, input);
  }
  TORCH_CHECK(w_ih.dim() == 2 && w_hh.dim() == 2, op, ": w_ih and w_hh must be 2-D, got ",
              w_ih.sizes(), " and ", w_hh.sizes());
  const int64_t G = gate_count(cell);
  TORCH_CHECK(w_hh.size(0) % G == 0, op, ": w_hh has ", w_hh.size(0),
              " rows, not a multiple of the gate count ", G);

  LayerSizes s;
  s.T = input.size(0);
  s.B = input.size(1);
  s.I = input.size(2);
  s.H = w_hh.size(0) / G;
  s.P = w_hh.size(1);

  detail::check_shape(op, "w_ih", w_ih, {G * s.H, s.I});
  detail::check_shape(op, "h0", h0, {s.B, s.P});
  if (c0 != nullptr) {
    detail::check_like(op, "c0", *c0, input);
    detail::check_shape(op, "c0", *c0, {s.B, s.H});
  }
  TORCH_CHECK(b_ih.has_value() == b_hh.has_value(), op,
              ": b_ih and b_hh must be given together or not at all");
  if (b_ih.has_value()) {
    detail::check_like(op, "b_ih", *b_ih, input);
    detail::check_like(op, "b_hh", *b_hh, input);
    detail::check_shape(op, "b_ih", *b_ih, {G * s.H});
    detail::check_shape(op, "b_hh", *b_hh, {G * s.H});
  }
  if (w_hr.has_value()) {
    TORCH_CHECK(cell == Cell::LSTM, op, ": only the LSTM has a projection");
    detail::check_like(op, "w_hr", *w_hr, input);
    detail::check_shape(op, "w_hr", *w_hr, {s.P, s.H});
  } else {
    TORCH_CHECK(s.P == s.H, op, ": w_hh must have shape [", G * s.H, ", ", s.H,
                "] without a projection, got ", w_hh.sizes());
  }
  if (lengths.has_value()) {
    const at::Tensor& l = *lengths;
    TORCH_CHECK(l.scalar_type() == at::kLong, op, ": lengths must be int64, got ",
                l.scalar_type());
    TORCH_CHECK(l.device() == input.device(), op, ": lengths must be on input's device ",
                input.device(), ", got ", l.device());
    detail::check_shape(op, "lengths", l, {s.B});
  }
  return s;
}

// The backward's own arguments, checked against the sizes of its forward ones.
inline void check_backward_args(const char* op, Cell cell, const LayerSizes& s,
                                const at::Tensor& input, const at::Tensor& grad_output,
                                const at::Tensor& grad_h_n, const at::Tensor* grad_c_n,
                                const at::Tensor& output, const at::Tensor& reserve) {
  detail::check_like(op, "grad_output", grad_output, input);
  detail::check_like(op, "grad_h_n", grad_h_n, input);
  detail::check_like(op, "output", output, input);
  detail::check_like(op, "reserve", reserve, input);
  detail::check_shape(op, "grad_output", grad_output, {s.T, s.B, s.P});
  detail::check_shape(op, "grad_h_n", grad_h_n, {s.B, s.P});
  detail::check_shape(op, "output", output, {s.T, s.B, s.P});
  if (grad_c_n != nullptr) {
    detail::check_like(op, "grad_c_n", *grad_c_n, input);
    detail::check_shape(op, "grad_c_n", *grad_c_n, {s.B, s.H});
  }
  const int64_t width = reserve_width(cell);
  if (width == 0) {
    TORCH_CHECK(reserve.numel() == 0, op, ": expected an empty reserve, got ", reserve.sizes());
  } else {
    detail::check_shape(op, "reserve", reserve, {s.T, s.B, width * s.H});
  }
}

}  // namespace cuda
}  // namespace rnnkit
