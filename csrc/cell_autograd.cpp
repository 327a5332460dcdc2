// Autograd of the one-step cell ops (schemas: csrc/rnnkit.cpp), in C++ so that a cell
// call is one dispatch whatever the grad mode: the Autograd kernel below decides what the
// call needs. When no backward can follow (no_grad, or nothing requires grad; inference
// mode skips this kernel) it runs the public op, which keeps no reserve. Otherwise it runs
// {gru,lstm}_cell_forward (RNN: rnn_cell, whose output is all its backward needs) and
// gives the outputs an OpNode (csrc/op_node.h) that saves the reserve; its backward runs
// *_cell_backward with the mask of the gradients that are wanted. A double backward
// (create_graph=True) differentiates the step written in ATen ops instead, since the
// backward kernels are not themselves differentiable.
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
#include <torch/library.h>

#include "op_node.h"
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

// The steps in ATen ops, for the double backward (torch.nn's formulas, cells.h's math).
Tensor hidden_products(const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                       const Tensor& b_ih, const Tensor& b_hh) {
  return at::linear(x, w_ih, optional(b_ih)) + at::linear(h, w_hh, optional(b_hh));
}

// The cells' edges: input, the states (1 or 2), w_ih, w_hh, b_ih, b_hh.
Mask3 cell_mask(const OpNode& node, size_t states) {
  const size_t weights = 1 + states;
  return {node.wants(0), node.wants_any(1, weights), node.wants_any(weights, weights + 4)};
}

// The backward's gradients, one per edge: a bias gradient only where there is a bias.
variable_list cell_grads(variable_list grads, bool has_bias, const Tensor& db_ih,
                         const Tensor& db_hh) {
  grads.push_back(has_bias ? db_ih : Tensor());
  grads.push_back(has_bias ? db_hh : Tensor());
  return grads;
}

// ---------------------------------------------------------------- RNN
// saved: input, hx, w_ih, w_hh, b_ih, b_hh, then h; flags: relu.

variable_list rnn_cell_backward(OpNode& node, variable_list grads) {
  const variable_list s = node.saved();
  const bool relu = node.flags[0];
  const Tensor dh = or_zeros(grads[0], s[6]);
  if (c10::GradMode::is_enabled()) {
    NoAutocast no_autocast;  // autocast may be on where backward() is called
    const Tensor pre = hidden_products(s[0], s[1], s[2], s[3], s[4], s[5]);
    const Tensor h = relu ? at::relu(pre) : at::tanh(pre);
    return differentiate({h}, {dh}, {s.begin(), s.begin() + 6});
  }
  static const auto op = find_op<RnnBackwardSig>("rnnkit::rnn_cell_backward");
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  auto [dx, dhx, dw_ih, dw_hh, db_ih, db_hh] =
      op.call(dh, s[0], s[1], s[2], s[3], s[4].defined(), relu, s[6], cell_mask(node, 1));
  return cell_grads({dx, dhx, dw_ih, dw_hh}, s[4].defined(), db_ih, db_hh);
}

Tensor rnn_cell_autograd(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                         const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                         bool relu) {
  static const auto op = find_op<RnnCellSig>("rnnkit::rnn_cell");
  const variable_list args = {input, hx, w_ih, w_hh, or_undefined(b_ih), or_undefined(b_hh)};
  auto node = OpNode::make("RnnkitRNNCellBackward", &rnn_cell_backward, args);
  Tensor h;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    h = op.call(input, hx, w_ih, w_hh, b_ih, b_hh, relu);
  }
  if (node) {
    node->set_outputs({h});
    node->save(args, {h});
    node->flags = {relu};
  }
  return h;
}

// ---------------------------------------------------------------- GRU
// saved: input, hx, w_ih, w_hh, b_ih, b_hh, reserve.

variable_list gru_cell_backward(OpNode& node, variable_list grads) {
  const variable_list s = node.saved();
  const Tensor dh = or_zeros(grads[0], s[1]);
  if (c10::GradMode::is_enabled()) {
    NoAutocast no_autocast;  // autocast may be on where backward() is called
    const auto gi = at::linear(s[0], s[2], optional(s[4])).chunk(3, 1);
    const auto gh = at::linear(s[1], s[3], optional(s[5])).chunk(3, 1);
    const Tensor r = at::sigmoid(gi[0] + gh[0]);
    const Tensor z = at::sigmoid(gi[1] + gh[1]);
    const Tensor n = at::tanh(gi[2] + r * gh[2]);
    const Tensor h = (1 - z) * n + z * s[1];
    return differentiate({h}, {dh}, {s.begin(), s.begin() + 6});
  }
  static const auto op = find_op<GruBackwardSig>("rnnkit::gru_cell_backward");
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  auto [dx, dhx, dw_ih, dw_hh, db_ih, db_hh] =
      op.call(dh, s[0], s[1], s[2], s[3], s[4].defined(), s[6], cell_mask(node, 1));
  return cell_grads({dx, dhx, dw_ih, dw_hh}, s[4].defined(), db_ih, db_hh);
}

Tensor gru_cell_autograd(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                         const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh) {
  const variable_list args = {input, hx, w_ih, w_hh, or_undefined(b_ih), or_undefined(b_hh)};
  auto node = OpNode::make("RnnkitGRUCellBackward", &gru_cell_backward, args);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (!node) {
    static const auto op = find_op<GruCellSig>("rnnkit::gru_cell");
    return op.call(input, hx, w_ih, w_hh, b_ih, b_hh);
  }
  static const auto op = find_op<GruForwardSig>("rnnkit::gru_cell_forward");
  auto [h, reserve] = op.call(input, hx, w_ih, w_hh, b_ih, b_hh);
  node->set_outputs({h});
  node->save({input, hx, w_ih, w_hh, or_undefined(b_ih), or_undefined(b_hh), reserve}, {});
  return h;
}

// ---------------------------------------------------------------- LSTM
// saved: input, hx, cx, w_ih, w_hh, b_ih, b_hh, reserve.

variable_list lstm_cell_backward(OpNode& node, variable_list grads) {
  const variable_list s = node.saved();
  const Tensor dh = or_zeros(grads[0], s[1]);
  const Tensor dc = or_zeros(grads[1], s[2]);
  if (c10::GradMode::is_enabled()) {
    NoAutocast no_autocast;  // autocast may be on where backward() is called
    const auto g = hidden_products(s[0], s[1], s[3], s[4], s[5], s[6]).chunk(4, 1);
    const Tensor c = at::sigmoid(g[1]) * s[2] + at::sigmoid(g[0]) * at::tanh(g[2]);
    const Tensor h = at::sigmoid(g[3]) * at::tanh(c);
    return differentiate({h, c}, {dh, dc}, {s.begin(), s.begin() + 7});
  }
  static const auto op = find_op<LstmBackwardSig>("rnnkit::lstm_cell_backward");
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  auto [dx, dhx, dcx, dw_ih, dw_hh, db_ih, db_hh] = op.call(
      dh, dc, s[0], s[1], s[2], s[3], s[4], s[5].defined(), s[7], cell_mask(node, 2));
  return cell_grads({dx, dhx, dcx, dw_ih, dw_hh}, s[5].defined(), db_ih, db_hh);
}

std::tuple<Tensor, Tensor> lstm_cell_autograd(const Tensor& input, const Tensor& hx,
                                              const Tensor& cx, const Tensor& w_ih,
                                              const Tensor& w_hh, const OptTensor& b_ih,
                                              const OptTensor& b_hh) {
  const variable_list args = {input, hx, cx, w_ih, w_hh, or_undefined(b_ih),
                              or_undefined(b_hh)};
  auto node = OpNode::make("RnnkitLSTMCellBackward", &lstm_cell_backward, args);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (!node) {
    static const auto op = find_op<LstmCellSig>("rnnkit::lstm_cell");
    return op.call(input, hx, cx, w_ih, w_hh, b_ih, b_hh);
  }
  static const auto op = find_op<LstmForwardSig>("rnnkit::lstm_cell_forward");
  auto [h, c, reserve] = op.call(input, hx, cx, w_ih, w_hh, b_ih, b_hh);
  node->set_outputs({h, c});
  node->save({input, hx, cx, w_ih, w_hh, or_undefined(b_ih), or_undefined(b_hh), reserve}, {});
  return {h, c};
}

}  // namespace
}  // namespace rnnkit

TORCH_LIBRARY_IMPL(rnnkit, Autograd, m) {
  m.impl("rnn_cell", &rnnkit::rnn_cell_autograd);
  m.impl("gru_cell", &rnnkit::gru_cell_autograd);
  m.impl("lstm_cell", &rnnkit::lstm_cell_autograd);
}
