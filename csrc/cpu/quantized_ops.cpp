// The int8 layer op, rnnkit::quantized_layer: one layer direction of an LSTM, GRU or
// Elman RNN with int8 weights (per-row float scales) and float32 activations, on
// the CPU, inference only (rnnkit/quantized.py builds the modules on it and holds
// its reference). Its checks, the folding of the biases, and the call into the
// drivers of quantized_path.h.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "cpu_common.h"
#include "quantized_path.h"
#include "rnnkit/layer_checks.h"

namespace rnnkit {
namespace cpu {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

constexpr const char* kOp = "rnnkit::quantized_layer";

int64_t gates_of(const std::string& mode) {
  if (mode == "LSTM") return 4;
  if (mode == "GRU") return 3;
  TORCH_CHECK(mode == "RNN_TANH" || mode == "RNN_RELU", kOp,
              ": mode must be one of LSTM, GRU, RNN_TANH, RNN_RELU; got '", mode, "'");
  return 1;
}

void check_tensor(const Tensor& t, const char* name, at::ScalarType dtype,
                  c10::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu(), kOp, ": expected ", name, " on the CPU, got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, kOp, ": expected ", name, " of dtype ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, kOp, ": expected ", name, " of shape ", shape, ", got ",
              t.sizes());
}

// The int8 weight `w` [rows, K] and its scales [rows], contiguous.
fast::Int8Matrix matrix(const Tensor& w, const Tensor& scale, const char* name,
                        const char* scale_name, int64_t rows, int64_t K) {
  check_tensor(w, name, at::kChar, {rows, K});
  check_tensor(scale, scale_name, at::kFloat, {rows});
  TORCH_CHECK(w.is_contiguous() && scale.is_contiguous(), kOp, ": expected contiguous ", name,
              " and ", scale_name);
  return {w, scale};
}

std::tuple<Tensor, Tensor, Tensor> quantized_layer(
    c10::string_view mode_view, const Tensor& input, const OptTensor& lengths, const Tensor& h0,
    const OptTensor& c0, const Tensor& w_ih, const Tensor& s_ih, const Tensor& w_hh,
    const Tensor& s_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    const OptTensor& s_hr, bool reverse) {
  const std::string mode(mode_view);
  const int64_t G = gates_of(mode);
  const bool lstm = G == 4;
  TORCH_CHECK(input.dim() == 3, kOp, ": expected a 3-D input [T, B, I], got ", input.dim(),
              "-D");
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % G == 0 && w_ih.size(0) > 0, kOp,
              ": expected w_ih of shape [", G, " * hidden_size, input_size], got ", w_ih.sizes());
  TORCH_CHECK(h0.dim() == 2, kOp, ": expected h0 of shape [B, H], got ", h0.sizes());
  const int64_t T = input.size(0), B = input.size(1), I = input.size(2);
  const int64_t H = w_ih.size(0) / G, P = h0.size(1);
  check_tensor(input, "input", at::kFloat, {T, B, I});
  check_tensor(h0, "h0", at::kFloat, {B, lstm ? P : H});
  TORCH_CHECK(lstm || !w_hr.has_value(), kOp, ": only the LSTM takes w_hr");
  TORCH_CHECK(w_hr.has_value() == s_hr.has_value(), kOp, ": w_hr and s_hr go together");
  TORCH_CHECK(w_hr.has_value() || P == H, kOp, ": expected h0 of shape [", B, ", ", H,
              "], got ", h0.sizes());
  TORCH_CHECK(lstm == c0.has_value(), kOp, lstm ? ": the LSTM needs c0" : ": only the LSTM takes c0");
  if (lstm) check_tensor(*c0, "c0", at::kFloat, {B, H});
  TORCH_CHECK(b_ih.has_value() == b_hh.has_value(), kOp, ": b_ih and b_hh go together");
  if (b_ih.has_value()) {
    check_tensor(*b_ih, "b_ih", at::kFloat, {G * H});
    check_tensor(*b_hh, "b_hh", at::kFloat, {G * H});
  }
  if (lengths.has_value()) {
    TORCH_CHECK(lengths->device().is_cpu() && lengths->scalar_type() == at::kLong &&
                    lengths->dim() == 1 && lengths->size(0) == B,
                kOp, ": expected lengths as a CPU int64 tensor of shape [", B, "], got ",
                lengths->scalar_type(), " ", lengths->sizes(), " on ", lengths->device());
    check_lengths_values(*lengths, T);
  }
  const fast::Int8Matrix wi = matrix(w_ih, s_ih, "w_ih", "s_ih", G * H, I);
  const fast::Int8Matrix wh = matrix(w_hh, s_hh, "w_hh", "s_hh", G * H, P);
  std::optional<fast::Int8Matrix> wr;
  if (w_hr.has_value()) wr = matrix(*w_hr, *s_hr, "w_hr", "s_hr", P, H);

  Tensor h = h0.clone(at::MemoryFormat::Contiguous);
  Tensor c = lstm ? c0->clone(at::MemoryFormat::Contiguous) : input.new_empty({0});
  Tensor output = at::empty({T, B, P}, input.options());
  if (T == 0 || B == 0) return {output, h, c};
  const fast::QuantizedKernels* k = fast::quantized_select(std::max({I, P, H}));
  TORCH_CHECK(k != nullptr, kOp,
              ": no compiled int8 kernels for this CPU (they need AVX2 and FMA, and "
              "RNNKIT_CPU_ISA=generic turns them off); the rnnkit.quantized modules run their "
              "reference there");

  // The biases folded into the input projection, as the float drivers do: all of
  // b_hh but, for the GRU, its n part, which the cell adds inside r * (W_hn h + b_hn).
  Tensor bias, b_hn;
  if (b_ih.has_value()) {
    bias = b_ih->add(*b_hh).contiguous();
    if (G == 3) {
      bias.narrow(0, 2 * H, H).copy_(b_ih->narrow(0, 2 * H, H));
      b_hn = b_hh->narrow(0, 2 * H, H).contiguous();
    }
  }
  const Tensor x = input.contiguous();
  const std::vector<int64_t> len = sequence_lengths(lengths, B, T);
  const float* b = bias.defined() ? bias.const_data_ptr<float>() : nullptr;
  const float* xp = x.const_data_ptr<float>();
  float* out = output.mutable_data_ptr<float>();
  if (lstm) {
    fast::quantized_lstm_forward(*k, T, B, H, P, reverse, len.data(), xp, I, wi, b, wh,
                                 wr ? &*wr : nullptr, h.mutable_data_ptr<float>(),
                                 c.mutable_data_ptr<float>(), out);
  } else if (G == 3) {
    fast::quantized_gru_forward(*k, T, B, H, reverse, len.data(), xp, I, wi, b, wh,
                                b_hn.defined() ? b_hn.const_data_ptr<float>() : nullptr,
                                h.mutable_data_ptr<float>(), out);
  } else {
    fast::quantized_rnn_forward(*k, T, B, H, reverse, mode == "RNN_RELU", len.data(), xp, I, wi,
                                b, wh, h.mutable_data_ptr<float>(), out);
  }
  return {output, h, c};
}

}  // namespace
}  // namespace cpu
}  // namespace rnnkit

TORCH_LIBRARY_FRAGMENT(rnnkit, m) {
  m.def(
      "quantized_layer(str mode, Tensor input, Tensor? lengths, Tensor h0, Tensor? c0, "
      "Tensor w_ih, Tensor s_ih, Tensor w_hh, Tensor s_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? w_hr, Tensor? s_hr, bool reverse) -> (Tensor output, Tensor h_n, Tensor c_n)");
  // The name of the kernels quantized_layer runs now for products up to K long
  // ("avx512_amx", "avx512_vnni", "avx2_vnni", "avx2"; see quantized_select), "" where
  // there are none.
  m.def("_quantized_kernels(int K) -> str", [](int64_t K) -> std::string {
    const rnnkit::cpu::fast::QuantizedKernels* k = rnnkit::cpu::fast::quantized_select(K);
    return k ? k->name : "";
  });
  // The int8 panels kept between calls (quantized_pack.h): [entries, bytes], and a
  // way to drop them.
  m.def("_quantized_packed() -> int[]", []() -> std::vector<int64_t> {
    return {rnnkit::cpu::fast::packed_int8_entries(), rnnkit::cpu::fast::packed_int8_bytes()};
  });
  m.def("_quantized_clear_packed() -> ()", [] { rnnkit::cpu::fast::clear_packed_int8(); });
}

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("quantized_layer", &rnnkit::cpu::quantized_layer);
}
