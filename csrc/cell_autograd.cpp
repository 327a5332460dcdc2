// Autograd of the one-step cell ops (schemas: csrc/rnnkit.cpp), in C++ so that a cell
// call is one dispatch whatever the grad mode: the Autograd kernel below decides what the
// call needs. When no backward can follow (no_grad, inference mode, or nothing requires
// grad) it runs the public op, which keeps no reserve. Otherwise a torch::autograd::Function
// runs {gru,lstm}_cell_forward (RNN: rnn_cell, whose output is all its backward needs) and
// saves the reserve; its backward runs *_cell_backward with the mask of the gradients that
// are wanted. Double backward (create_graph=True) differentiates the step written in ATen
// ops instead, since the backward kernels are not themselves differentiable.
//
// Every op is called through the dispatcher, so the fake kernels (rnnkit/ops.py) stand in
// for them under torch.compile and torch.export, and each device gets its own kernels.

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/tanh.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "rnnkit/no_autocast.h"

#include <array>
#include <optional>
#include <tuple>
#include <vector>

namespace rnnkit {
namespace {

using at::Tensor;
using OptTensor = std::optional<at::Tensor>;
using Mask3 = std::array<bool, 3>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using Grads6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using Grads7 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

using RnnCellSig = Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const OptTensor&, const OptTensor&, bool);
using RnnBackwardSig = Grads6(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              const Tensor&, bool, bool, const Tensor&, Mask3);
using GruCellSig = Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const OptTensor&, const OptTensor&);
using GruForwardSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                 const Tensor&, const OptTensor&,
                                                 const OptTensor&);
using GruBackwardSig = Grads6(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              const Tensor&, bool, const Tensor&, Mask3);
using LstmCellSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                               const Tensor&, const Tensor&, const OptTensor&,
                                               const OptTensor&);
using LstmForwardSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                          const Tensor&, const Tensor&,
                                                          const Tensor&, const OptTensor&,
                                                          const OptTensor&);
using LstmBackwardSig = Grads7(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                               const Tensor&, const Tensor&, const Tensor&, bool, const Tensor&,
                               Mask3);

OptTensor optional(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// Saved tensors are plain tensors: an absent bias is saved undefined.
Tensor or_undefined(const OptTensor& t) { return t.value_or(Tensor()); }

bool requires_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

// Whether a backward can follow a call on these arguments.
bool backward_can_follow(std::initializer_list<Tensor> tensors, const OptTensor& b_ih,
                         const OptTensor& b_hh) {
  if (!c10::GradMode::is_enabled()) return false;
  for (const Tensor& t : tensors) {
    if (requires_grad(t)) return true;
  }
  return (b_ih && b_ih->requires_grad()) || (b_hh && b_hh->requires_grad());
}

// The arguments up to the biases among the saved tensors (n tensors, then b_ih and
// b_hh, undefined when absent).
variable_list inputs_of(const variable_list& saved, size_t n) {
  return variable_list(saved.begin(), saved.begin() + static_cast<std::ptrdiff_t>(n + 2));
}

// Whether any weight (from index `first` on: w_ih, w_hh and the biases) needs a gradient.
bool weights_need_grad(AutogradContext* ctx, size_t first, bool has_bias) {
  return ctx->needs_input_grad({{first, first + (has_bias ? 4 : 2)}});
}

// The backward's result: a gradient per argument of the Function, undefined where it
// is not wanted or the bias is absent. The Function numbers only its defined tensor
// arguments (needs_input_grad's index), and the biases come last among them.
variable_list with_bias_grads(AutogradContext* ctx, variable_list grads, bool has_bias,
                              const Tensor& db_ih, const Tensor& db_hh) {
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!ctx->needs_input_grad(i)) grads[i] = Tensor();
  }
  const size_t n = grads.size();
  grads.push_back(has_bias && ctx->needs_input_grad(n) ? db_ih : Tensor());
  grads.push_back(has_bias && ctx->needs_input_grad(n + 1) ? db_hh : Tensor());
  return grads;
}

// The gradients of `inputs` (undefined where absent or not requiring grad) from a graph
// of the step in ATen ops: the double backward. Keeps the graph (create_graph).
variable_list differentiate(const variable_list& outputs, const variable_list& grads,
                            const variable_list& inputs) {
  variable_list wanted_inputs;
  for (const Tensor& t : inputs) {
    if (requires_grad(t)) wanted_inputs.push_back(t);
  }
  const variable_list found =
      torch::autograd::grad(outputs, wanted_inputs, grads, /*retain_graph=*/true,
                            /*create_graph=*/true, /*allow_unused=*/true);
  variable_list result;
  size_t k = 0;
  for (const Tensor& t : inputs) result.push_back(requires_grad(t) ? found[k++] : Tensor());
  return result;
}

// The steps in ATen ops, for the double backward (torch.nn's formulas, cells.h's math).
Tensor hidden_products(const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                       const Tensor& b_ih, const Tensor& b_hh) {
  return at::linear(x, w_ih, optional(b_ih)) + at::linear(h, w_hh, optional(b_hh));
}

// ---------------------------------------------------------------- RNN

struct RnnCellFunction : public torch::autograd::Function<RnnCellFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& hx,
                        const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                        const OptTensor& b_hh, bool relu) {
    static const auto op = find_op<RnnCellSig>("rnnkit::rnn_cell");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Tensor h = op.call(input, hx, w_ih, w_hh, b_ih, b_hh, relu);
    ctx->save_for_backward({input, hx, w_ih, w_hh, or_undefined(b_ih), or_undefined(b_hh), h});
    ctx->saved_data["relu"] = relu;
    return h;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const bool relu = ctx->saved_data["relu"].toBool();
    if (c10::GradMode::is_enabled()) {
      NoAutocast no_autocast;  // autocast may be on where backward() is called
      const Tensor pre = hidden_products(s[0], s[1], s[2], s[3], s[4], s[5]);
      const Tensor h = relu ? at::relu(pre) : at::tanh(pre);
      variable_list d = differentiate({h}, {grads[0]}, inputs_of(s, 4));
      d.emplace_back();  // relu
      return d;
    }
    static const auto op = find_op<RnnBackwardSig>("rnnkit::rnn_cell_backward");
    const Mask3 mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                        weights_need_grad(ctx, 2, s[4].defined())};
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [dx, dh, dw_ih, dw_hh, db_ih, db_hh] =
        op.call(grads[0], s[0], s[1], s[2], s[3], s[4].defined(), relu, s[6], mask);
    variable_list d = with_bias_grads(ctx, {dx, dh, dw_ih, dw_hh}, s[4].defined(), db_ih, db_hh);
    d.emplace_back();  // relu
    return d;
  }
};

Tensor rnn_cell_autograd(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                         const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                         bool relu) {
  if (!backward_can_follow({input, hx, w_ih, w_hh}, b_ih, b_hh)) {
    static const auto op = find_op<RnnCellSig>("rnnkit::rnn_cell");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(input, hx, w_ih, w_hh, b_ih, b_hh, relu);
  }
  return RnnCellFunction::apply(input, hx, w_ih, w_hh, b_ih, b_hh, relu);
}

// ---------------------------------------------------------------- GRU

struct GruCellFunction : public torch::autograd::Function<GruCellFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& hx,
                        const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                        const OptTensor& b_hh) {
    static const auto op = find_op<GruForwardSig>("rnnkit::gru_cell_forward");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [h, reserve] = op.call(input, hx, w_ih, w_hh, b_ih, b_hh);
    ctx->save_for_backward(
        {input, hx, w_ih, w_hh, or_undefined(b_ih), or_undefined(b_hh), reserve});
    return h;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    if (c10::GradMode::is_enabled()) {
      NoAutocast no_autocast;  // autocast may be on where backward() is called
      const auto gi = at::linear(s[0], s[2], optional(s[4])).chunk(3, 1);
      const auto gh = at::linear(s[1], s[3], optional(s[5])).chunk(3, 1);
      const Tensor r = at::sigmoid(gi[0] + gh[0]);
      const Tensor z = at::sigmoid(gi[1] + gh[1]);
      const Tensor n = at::tanh(gi[2] + r * gh[2]);
      const Tensor h = (1 - z) * n + z * s[1];
      return differentiate({h}, {grads[0]}, inputs_of(s, 4));
    }
    static const auto op = find_op<GruBackwardSig>("rnnkit::gru_cell_backward");
    const Mask3 mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                        weights_need_grad(ctx, 2, s[4].defined())};
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [dx, dh, dw_ih, dw_hh, db_ih, db_hh] =
        op.call(grads[0], s[0], s[1], s[2], s[3], s[4].defined(), s[6], mask);
    return with_bias_grads(ctx, {dx, dh, dw_ih, dw_hh}, s[4].defined(), db_ih, db_hh);
  }
};

Tensor gru_cell_autograd(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                         const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh) {
  if (!backward_can_follow({input, hx, w_ih, w_hh}, b_ih, b_hh)) {
    static const auto op = find_op<GruCellSig>("rnnkit::gru_cell");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(input, hx, w_ih, w_hh, b_ih, b_hh);
  }
  return GruCellFunction::apply(input, hx, w_ih, w_hh, b_ih, b_hh);
}

// ---------------------------------------------------------------- LSTM

struct LstmCellFunction : public torch::autograd::Function<LstmCellFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& hx,
                               const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                               const OptTensor& b_ih, const OptTensor& b_hh) {
    static const auto op = find_op<LstmForwardSig>("rnnkit::lstm_cell_forward");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [h, c, reserve] = op.call(input, hx, cx, w_ih, w_hh, b_ih, b_hh);
    ctx->save_for_backward(
        {input, hx, cx, w_ih, w_hh, or_undefined(b_ih), or_undefined(b_hh), reserve});
    return {h, c};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    if (c10::GradMode::is_enabled()) {
      NoAutocast no_autocast;  // autocast may be on where backward() is called
      const auto g = hidden_products(s[0], s[1], s[3], s[4], s[5], s[6]).chunk(4, 1);
      const Tensor c = at::sigmoid(g[1]) * s[2] + at::sigmoid(g[0]) * at::tanh(g[2]);
      const Tensor h = at::sigmoid(g[3]) * at::tanh(c);
      return differentiate({h, c}, {grads[0], grads[1]}, inputs_of(s, 5));
    }
    static const auto op = find_op<LstmBackwardSig>("rnnkit::lstm_cell_backward");
    const Mask3 mask = {ctx->needs_input_grad(0), ctx->needs_input_grad({{1, 3}}),
                        weights_need_grad(ctx, 3, s[5].defined())};
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh] =
        op.call(grads[0], grads[1], s[0], s[1], s[2], s[3], s[4], s[5].defined(), s[7], mask);
    return with_bias_grads(ctx, {dx, dh, dc, dw_ih, dw_hh}, s[5].defined(), db_ih, db_hh);
  }
};

std::tuple<Tensor, Tensor> lstm_cell_autograd(const Tensor& input, const Tensor& hx,
                                              const Tensor& cx, const Tensor& w_ih,
                                              const Tensor& w_hh, const OptTensor& b_ih,
                                              const OptTensor& b_hh) {
  if (!backward_can_follow({input, hx, cx, w_ih, w_hh}, b_ih, b_hh)) {
    static const auto op = find_op<LstmCellSig>("rnnkit::lstm_cell");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(input, hx, cx, w_ih, w_hh, b_ih, b_hh);
  }
  const variable_list out =
      LstmCellFunction::apply(input, hx, cx, w_ih, w_hh, b_ih, b_hh);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace rnnkit

TORCH_LIBRARY_IMPL(rnnkit, Autograd, m) {
  m.impl("rnn_cell", &rnnkit::rnn_cell_autograd);
  m.impl("gru_cell", &rnnkit::gru_cell_autograd);
  m.impl("lstm_cell", &rnnkit::lstm_cell_autograd);
}
