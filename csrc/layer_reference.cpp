// The layer ops in ATen ops (csrc/layer_reference.h), step by step as torch.nn's
// formulas read; a padded step (t >= lengths[b]) leaves the state alone and outputs zeros.

#include "layer_reference.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>

#include <optional>

namespace rnnkit {
namespace reference {
namespace {

using at::Tensor;

std::optional<Tensor> optional(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

// Runs step(t, mask) over the steps in order (backwards when reverse); mask [B, 1] says
// which sequences have a real step t (undefined without lengths).
template <typename Step>
void for_each_step(int64_t T, bool reverse, const Tensor& lengths, Step step) {
  for (int64_t k = 0; k < T; ++k) {
    const int64_t t = reverse ? T - 1 - k : k;
    step(t, lengths.defined() ? (lengths > t).unsqueeze(1) : Tensor());
  }
}

Tensor keep(const Tensor& mask, const Tensor& updated, const Tensor& old) {
  return mask.defined() ? at::where(mask, updated, old) : updated;
}

Tensor zero_padded(const Tensor& mask, const Tensor& value) {
  return mask.defined() ? at::where(mask, value, at::zeros_like(value)) : value;
}

}  // namespace

std::vector<Tensor> rnn_layer(const Tensor& input, const Tensor& lengths, const Tensor& h0,
                              const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                              const Tensor& b_hh, bool reverse, bool relu) {
  const Tensor xs = at::linear(input, w_ih, optional(b_ih));
  const int64_t T = input.size(0);
  std::vector<Tensor> outputs(T);
  Tensor h = h0;
  for_each_step(T, reverse, lengths, [&](int64_t t, const Tensor& mask) {
    const Tensor pre = xs.select(0, t) + at::linear(h, w_hh, optional(b_hh));
    const Tensor h_new = relu ? at::relu(pre) : at::tanh(pre);
    outputs[t] = zero_padded(mask, h_new);
    h = keep(mask, h_new, h);
  });
  return {at::stack(outputs), h};
}

std::vector<Tensor> gru_layer(const Tensor& input, const Tensor& lengths, const Tensor& h0,
                              const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                              const Tensor& b_hh, bool reverse) {
  const Tensor xs = at::linear(input, w_ih, optional(b_ih));
  const int64_t T = input.size(0);
  std::vector<Tensor> outputs(T);
  Tensor h = h0;
  for_each_step(T, reverse, lengths, [&](int64_t t, const Tensor& mask) {
    const auto x = xs.select(0, t).chunk(3, 1);
    const auto g = at::linear(h, w_hh, optional(b_hh)).chunk(3, 1);
    const Tensor r = at::sigmoid(x[0] + g[0]);
    const Tensor z = at::sigmoid(x[1] + g[1]);
    const Tensor n = at::tanh(x[2] + r * g[2]);
    const Tensor h_new = (1 - z) * n + z * h;
    outputs[t] = zero_padded(mask, h_new);
    h = keep(mask, h_new, h);
  });
  return {at::stack(outputs), h};
}

std::vector<Tensor> lstm_layer(const Tensor& input, const Tensor& lengths, const Tensor& h0,
                               const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                               const Tensor& b_ih, const Tensor& b_hh, const Tensor& w_hr,
                               bool reverse) {
  const Tensor xs = at::linear(input, w_ih, optional(b_ih));
  const int64_t T = input.size(0);
  std::vector<Tensor> outputs(T);
  Tensor h = h0;
  Tensor c = c0;
  for_each_step(T, reverse, lengths, [&](int64_t t, const Tensor& mask) {
    const auto g = (xs.select(0, t) + at::linear(h, w_hh, optional(b_hh))).chunk(4, 1);
    const Tensor c_new = at::sigmoid(g[1]) * c + at::sigmoid(g[0]) * at::tanh(g[2]);
    Tensor h_new = at::sigmoid(g[3]) * at::tanh(c_new);
    if (w_hr.defined()) h_new = at::linear(h_new, w_hr);
    outputs[t] = zero_padded(mask, h_new);
    h = keep(mask, h_new, h);
    c = keep(mask, c_new, c);
  });
  return {at::stack(outputs), h, c};
}

}  // namespace reference
}  // namespace rnnkit
