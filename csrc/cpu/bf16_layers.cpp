// The bfloat16 layer forwards on the bfloat16 kernels (see bf16_layers.h).

#include "bf16_layers.h"

#include <ATen/ops/empty.h>

#include "bf16_path.h"
#include "cpu_common.h"
#include "fast_path.h"

namespace rnnkit {
namespace cpu {
namespace {

using at::Tensor;

// The kernels, when they run this call: a bfloat16 input with something to compute.
const fast::Bf16Kernels* kernels_for(const Tensor& input, const LayerSizes& sz) {
  if (input.scalar_type() != at::kBFloat16 || sz.T == 0 || sz.B == 0) return nullptr;
  return fast::bf16_select();
}

// A bfloat16 tensor's contiguous values as bits.
const fast::Bf16Bits* bits(const Tensor& t) {
  return reinterpret_cast<const fast::Bf16Bits*>(t.const_data_ptr<at::BFloat16>());
}

Tensor contiguous_bf16(const Tensor& t) { return prepare(t, at::kBFloat16); }

Tensor floats_of(const Tensor& t) { return t.to(at::kFloat, false, /*copy=*/true).contiguous(); }


}  // namespace

std::optional<std::tuple<Tensor, Tensor, Tensor, Tensor>> lstm_layer_bf16(
    const LayerSizes& sz, const Tensor& input, const std::vector<int64_t>& len, const Tensor& h0,
    const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
    const OptTensor& b_hh, const OptTensor& w_hr, bool reverse, bool keep_reserve) {
  const fast::Bf16Kernels* k = kernels_for(input, sz);
  if (k == nullptr) return std::nullopt;
  const int64_t T = sz.T, B = sz.B, H = sz.H, P = sz.P;
  const Tensor x = contiguous_bf16(input), wih = contiguous_bf16(w_ih),
               whh = contiguous_bf16(w_hh);
  const Tensor whr = sz.has_proj ? contiguous_bf16(*w_hr) : Tensor();
  const Tensor bias = sz.has_bias ? floats_of(*b_ih).add_(floats_of(*b_hh)) : Tensor();
  Tensor h = floats_of(h0), c = floats_of(c0);
  Tensor output = fast::kept_floats({T, B, P}, fast::Pack::kStagedOutput);
  Tensor reserve = keep_reserve ? fast::kept_floats({T, B, 5 * H}, fast::Pack::kStagedReserve) : Tensor();
  fast::bf16_lstm_forward(*k, T, B, H, P, reverse, len.data(), bits(x), sz.I, bits(wih),
                          sz.has_bias ? bias.const_data_ptr<float>() : nullptr, bits(whh),
                          sz.has_proj ? bits(whr) : nullptr, h.mutable_data_ptr<float>(),
                          c.mutable_data_ptr<float>(), output.mutable_data_ptr<float>(),
                          keep_reserve ? reserve.mutable_data_ptr<float>() : nullptr);
  const auto bf16 = at::kBFloat16;
  return std::make_tuple(output.to(bf16), h.to(bf16), c.to(bf16),
                         keep_reserve ? reserve.to(bf16) : input.new_empty({0}));
}

std::optional<std::tuple<Tensor, Tensor, Tensor>> gru_layer_bf16(
    const LayerSizes& sz, const Tensor& input, const std::vector<int64_t>& len, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    bool reverse, bool keep_reserve) {
  const fast::Bf16Kernels* k = kernels_for(input, sz);
  if (k == nullptr) return std::nullopt;
  const int64_t T = sz.T, B = sz.B, H = sz.H;
  const Tensor x = contiguous_bf16(input), wih = contiguous_bf16(w_ih),
               whh = contiguous_bf16(w_hh);
  // As the float path: b_hh's r and z parts go into the input projection, its n
  // part inside r * (W_hn h + b_hn).
  Tensor bias_x, bhh;
  if (sz.has_bias) {
    bhh = floats_of(*b_hh);
    bias_x = floats_of(*b_ih);
    bias_x.narrow(0, 0, 2 * H).add_(bhh.narrow(0, 0, 2 * H));
  }
  Tensor h = floats_of(h0);
  Tensor output = fast::kept_floats({T, B, H}, fast::Pack::kStagedOutput);
  Tensor reserve = keep_reserve ? fast::kept_floats({T, B, 4 * H}, fast::Pack::kStagedReserve) : Tensor();
  fast::bf16_gru_forward(*k, T, B, H, reverse, len.data(), bits(x), sz.I, bits(wih),
                         sz.has_bias ? bias_x.const_data_ptr<float>() : nullptr, bits(whh),
                         sz.has_bias ? bhh.const_data_ptr<float>() + 2 * H : nullptr,
                         h.mutable_data_ptr<float>(), output.mutable_data_ptr<float>(),
                         keep_reserve ? reserve.mutable_data_ptr<float>() : nullptr);
  const auto bf16 = at::kBFloat16;
  return std::make_tuple(output.to(bf16), h.to(bf16),
                         keep_reserve ? reserve.to(bf16) : input.new_empty({0}));
}

std::optional<std::tuple<Tensor, Tensor, Tensor>> rnn_layer_bf16(
    const LayerSizes& sz, const Tensor& input, const std::vector<int64_t>& len, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    bool reverse, bool relu) {
  const fast::Bf16Kernels* k = kernels_for(input, sz);
  if (k == nullptr) return std::nullopt;
  const int64_t T = sz.T, B = sz.B, H = sz.H;
  const Tensor x = contiguous_bf16(input), wih = contiguous_bf16(w_ih),
               whh = contiguous_bf16(w_hh);
  const Tensor bias = sz.has_bias ? floats_of(*b_ih).add_(floats_of(*b_hh)) : Tensor();
  Tensor h = floats_of(h0);
  Tensor output = fast::kept_floats({T, B, H}, fast::Pack::kStagedOutput);
  fast::bf16_rnn_forward(*k, T, B, H, reverse, relu, len.data(), bits(x), sz.I, bits(wih),
                         sz.has_bias ? bias.const_data_ptr<float>() : nullptr, bits(whh),
                         h.mutable_data_ptr<float>(), output.mutable_data_ptr<float>());
  return std::make_tuple(output.to(at::kBFloat16), h.to(at::kBFloat16), input.new_empty({0}));
}

}  // namespace cpu
}  // namespace rnnkit
