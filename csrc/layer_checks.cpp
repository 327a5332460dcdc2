// Argument checks of the layer ops (see rnnkit/layer_checks.h).

#include "rnnkit/layer_checks.h"

#include <c10/util/Exception.h>

namespace rnnkit {
namespace {

const char* cell_name(Cell cell) {
  switch (cell) {
    case Cell::RNN_TANH:
    case Cell::RNN_RELU:
      return "rnn_layer";
    case Cell::GRU:
      return "gru_layer";
    case Cell::LSTM:
      return "lstm_layer";
  }
  return "layer";
}

// The tensor must have exactly this shape, and input's dtype and device.
void check_like_input(const char* op, const char* name, const at::Tensor& t,
                      at::IntArrayRef shape, const at::Tensor& input) {
  TORCH_CHECK(t.defined(), "rnnkit::", op, ": ", name, " is undefined");
  TORCH_CHECK(t.sizes() == shape, "rnnkit::", op, ": expected ", name, " of shape ", shape,
              ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), "rnnkit::", op, ": expected ", name,
              " to have the input's dtype ", input.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == input.device(), "rnnkit::", op, ": expected ", name,
              " on the input's device ", input.device(), ", got ", t.device());
}

// The input: defined, on a `device_type` device, `dim`-D (`layout` names it), of a
// floating dtype the kernels compute in.
void check_input(const char* op, c10::DeviceType device_type, const at::Tensor& input,
                 int64_t dim, const char* layout) {
  TORCH_CHECK(input.defined(), "rnnkit::", op, ": input is undefined");
  TORCH_CHECK(input.device().type() == device_type, "rnnkit::", op, ": expected input on a ",
              c10::DeviceTypeName(device_type, /*lower_case=*/true), " device, got ",
              input.device());
  TORCH_CHECK(input.dim() == dim, "rnnkit::", op, ": expected ", layout, ", got ", input.dim(),
              "-D input of shape ", input.sizes());
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "rnnkit::", op, ": input must be float32, float64, float16 or bfloat16, got ",
              dtype);
}

// Both biases of shape [rows] or neither; returns whether they are given.
bool check_biases(const char* op, const std::optional<at::Tensor>& b_ih,
                  const std::optional<at::Tensor>& b_hh, int64_t rows, const at::Tensor& input) {
  TORCH_CHECK(b_ih.has_value() == b_hh.has_value(), "rnnkit::", op,
              ": b_ih and b_hh must be both given or both absent");
  if (b_ih.has_value()) {
    check_like_input(op, "b_ih", *b_ih, {rows}, input);
    check_like_input(op, "b_hh", *b_hh, {rows}, input);
  }
  return b_ih.has_value();
}

}  // namespace

LayerSizes check_layer_forward(
    Cell cell,
    c10::DeviceType device_type,
    const at::Tensor& input,
    const std::optional<at::Tensor>& lengths,
    const at::Tensor& h0,
    const at::Tensor* c0,
    const at::Tensor& w_ih,
    const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr,
    const char* op_name) {
  const char* op = op_name != nullptr ? op_name : cell_name(cell);
  const int64_t G = gate_count(cell);
  check_input(op, device_type, input, 3, "time-major input [T, B, I]");
  LayerSizes s;
  s.T = input.size(0);
  s.B = input.size(1);
  s.I = input.size(2);
  TORCH_CHECK(s.T > 0, "rnnkit::", op, ": expected a sequence of at least one step, got T = ",
              s.T);

  // H = 0 passes: torch.nn's cells allow hidden_size=0 (its modules refuse it).
  TORCH_CHECK(w_hh.defined(), "rnnkit::", op, ": w_hh is undefined");
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % G == 0, "rnnkit::", op,
              ": expected w_hh of shape [", G, "*H, P], got ", w_hh.sizes());
  s.H = w_hh.size(0) / G;
  s.P = w_hh.size(1);
  s.has_proj = w_hr.has_value();
  TORCH_CHECK(cell == Cell::LSTM || !s.has_proj, "rnnkit::", op,
              ": w_hr (projection) is only defined for LSTM");
  TORCH_CHECK(s.has_proj || s.P == s.H, "rnnkit::", op, ": expected w_hh of shape [", G * s.H,
              ", ", s.H, "] (no projection), got ", w_hh.sizes());

  check_like_input(op, "w_hh", w_hh, {G * s.H, s.P}, input);
  check_like_input(op, "w_ih", w_ih, {G * s.H, s.I}, input);
  check_like_input(op, "h0", h0, {s.B, s.P}, input);
  if (cell == Cell::LSTM) {
    TORCH_CHECK(c0 != nullptr, "rnnkit::", op, ": c0 is required");
    check_like_input(op, "c0", *c0, {s.B, s.H}, input);
  }
  if (s.has_proj) {
    check_like_input(op, "w_hr", *w_hr, {s.P, s.H}, input);
    // torch.nn.LSTM's own rule; the kernels rely on it (the CUDA backward writes
    // only min(P, H) units of the gradient of h_full).
    TORCH_CHECK(s.P > 0 && s.P < s.H, "rnnkit::", op,
                ": proj_size has to be a positive integer smaller than hidden_size, got "
                "w_hr of shape ",
                w_hr->sizes());
  }
  s.has_bias = check_biases(op, b_ih, b_hh, G * s.H, input);

  if (lengths.has_value()) {
    const at::Tensor& len = *lengths;
    TORCH_CHECK(len.scalar_type() == at::kLong, "rnnkit::", op,
                ": expected lengths of dtype int64, got ", len.scalar_type());
    TORCH_CHECK(len.dim() == 1 && len.size(0) == s.B, "rnnkit::", op,
                ": expected lengths of shape [", s.B, "], got ", len.sizes());
    TORCH_CHECK(len.device() == input.device(), "rnnkit::", op,
                ": expected lengths on the input's device ", input.device(), ", got ",
                len.device());
    // Elsewhere the values stay on the device: reading them here would synchronise.
    if (device_type == c10::DeviceType::CPU) {
      check_lengths_values(len, s.T);
    }
  }
  return s;
}

void check_layer_backward(
    Cell cell,
    const LayerSizes& s,
    const at::Tensor& input,
    const at::Tensor& grad_output,
    const at::Tensor& grad_h_n,
    const at::Tensor* grad_c_n,
    const at::Tensor& output,
    const at::Tensor& reserve) {
  const char* op = cell == Cell::LSTM ? "lstm_layer_backward"
                   : cell == Cell::GRU ? "gru_layer_backward"
                                       : "rnn_layer_backward";
  check_like_input(op, "grad_output", grad_output, {s.T, s.B, s.P}, input);
  check_like_input(op, "grad_h_n", grad_h_n, {s.B, s.P}, input);
  if (cell == Cell::LSTM) {
    TORCH_CHECK(grad_c_n != nullptr, "rnnkit::", op, ": grad_c_n is required");
    check_like_input(op, "grad_c_n", *grad_c_n, {s.B, s.H}, input);
  }
  check_like_input(op, "output", output, {s.T, s.B, s.P}, input);
  const int64_t width = reserve_width(cell);
  if (width == 0) {
    // RNN keeps no reserve; accept whatever empty tensor the forward returned.
    TORCH_CHECK(reserve.numel() == 0, "rnnkit::", op, ": expected an empty reserve, got ",
                reserve.sizes());
  } else {
    check_like_input(op, "reserve", reserve, {s.T, s.B, width * s.H}, input);
  }
}

CellSizes check_cell_forward(
    Cell cell,
    c10::DeviceType device_type,
    const at::Tensor& input,
    const at::Tensor& hx,
    const at::Tensor* cx,
    const at::Tensor& w_ih,
    const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh,
    const char* op) {
  const int64_t G = gate_count(cell);
  check_input(op, device_type, input, 2, "input [B, I]");
  CellSizes s;
  s.B = input.size(0);
  s.I = input.size(1);
  TORCH_CHECK(w_hh.defined(), "rnnkit::", op, ": w_hh is undefined");
  // First torch.nn's own checks of a cell's arguments, with its messages (the modules
  // leave them to the op, as torch.nn leaves them to ATen).
  TORCH_CHECK(w_ih.defined() && w_ih.dim() == 2 && w_hh.dim() == 2, "rnnkit::", op,
              ": expected 2-D weights");
  TORCH_CHECK(input.size(1) == w_ih.size(1), "input has inconsistent input_size: got ",
              input.size(1), " expected ", w_ih.size(1));
  const int64_t hidden = w_hh.size(1);
  for (const at::Tensor* state : {&hx, cx}) {
    if (state == nullptr) continue;
    const char* which = state == &hx ? "hidden0" : "hidden1";
    TORCH_CHECK(state->defined() && state->dim() == 2, "rnnkit::", op, ": expected ", which,
                " [B, H]");
    TORCH_CHECK(input.size(0) == state->size(0), "Input batch size ", input.size(0),
                " doesn't match ", which, " batch size ", state->size(0));
    TORCH_CHECK(state->size(1) == hidden, which, " has inconsistent hidden_size: got ",
                state->size(1), ", expected ", hidden);
  }
  // Then the shapes, dtypes and devices of the contract (devices: the modules check them
  // first, with torch's messages).
  s.H = hidden;
  check_like_input(op, "w_hh", w_hh, {G * s.H, s.H}, input);
  check_like_input(op, "w_ih", w_ih, {G * s.H, s.I}, input);
  check_like_input(op, "hx", hx, {s.B, s.H}, input);
  if (cell == Cell::LSTM) {
    TORCH_CHECK(cx != nullptr, "rnnkit::", op, ": cx is required");
    check_like_input(op, "cx", *cx, {s.B, s.H}, input);
  }
  s.has_bias = check_biases(op, b_ih, b_hh, G * s.H, input);
  return s;
}

void check_cell_backward(Cell cell, const CellSizes& s, const at::Tensor& input,
                         const at::Tensor& grad_h, const at::Tensor* grad_c,
                         const at::Tensor& saved, const char* op) {
  check_like_input(op, "grad_h", grad_h, {s.B, s.H}, input);
  if (cell == Cell::LSTM) {
    TORCH_CHECK(grad_c != nullptr, "rnnkit::", op, ": grad_c is required");
    check_like_input(op, "grad_c", *grad_c, {s.B, s.H}, input);
  }
  // The RNN keeps no reserve: its backward takes the new state h instead.
  const bool rnn = reserve_width(cell) == 0;
  check_like_input(op, rnn ? "h" : "reserve", saved, {s.B, (rnn ? 1 : reserve_width(cell)) * s.H},
                   input);
}

void check_lengths_values(const at::Tensor& lengths, int64_t T) {
  TORCH_CHECK(lengths.is_cpu() && lengths.scalar_type() == at::kLong && lengths.dim() == 1,
              "rnnkit: check_lengths_values needs a 1-D int64 CPU tensor");
  const at::Tensor len = lengths.contiguous();
  const int64_t* p = len.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < len.numel(); ++b) {
    TORCH_CHECK(p[b] >= 0 && p[b] <= T, "rnnkit: lengths[", b, "] = ", p[b],
                " is out of range: every length must lie in [0, T] = [0, ", T, "]");
  }
}

}  // namespace rnnkit
