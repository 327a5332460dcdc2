// Autograd of the layer ops (schemas: csrc/rnnkit.cpp), in C++ so that a layer call is
// one dispatch whatever the grad mode, and the choices a call allows are made here: when
// no backward can follow (no_grad, or nothing requires grad; inference mode skips this
// kernel) it runs the public op, which keeps no reserve; otherwise {gru,lstm}_layer_forward
// (RNN: rnn_layer, whose output is all its backward reads) under an OpNode
// (csrc/op_node.h) that saves the reserve. Its backward runs *_layer_backward, asking for
// the input's gradient and the initial state's only when they are wanted (a T = 1 call
// from a state that needs none, as when none is given, saves a product). A double
// backward (create_graph=True) differentiates the ATen reference (csrc/layer_reference.h)
// instead.
//
// Every op is called through the dispatcher, so the fake kernels (rnnkit/ops.py) stand in
// for them under torch.compile and torch.export, and each device gets its own kernels.

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include "layer_reference.h"
#include "op_node.h"
#include "rnnkit/no_autocast.h"

#include <optional>
#include <tuple>
#include <vector>

namespace rnnkit {
namespace {

using at::Tensor;
using OptTensor = std::optional<at::Tensor>;

// A tensor with real memory and sizes: not a fake, functional or symbolic one (as under
// torch.compile's tracing), nor a batched one (vmap over a backward, is_grads_batched).
bool is_plain(const Tensor& t) {
  constexpr auto wrapped = c10::DispatchKeySet(
      {c10::DispatchKey::Python, c10::DispatchKey::Functionalize,
       c10::DispatchKey::FuncTorchBatched, c10::DispatchKey::BatchedNestedTensor});
  return !t.key_set().has_any(wrapped) && t.has_storage() &&
         !t.unsafeGetTensorImpl()->has_symbolic_sizes_strides();
}

// The backward kernels' results, one per edge: the gradient of an absent argument comes
// back empty and goes on undefined (OpNode::apply drops it: its edge is invalid). The CPU
// kernels write dx over their larger gate-gradient buffer; as a leaf's .grad it would keep
// all of that alive, so a leaf gets a compact copy.
variable_list edge_grads(variable_list grads, const Tensor& input) {
  Tensor& dx = grads[0];
  if (dx.defined() && input.is_leaf() && is_plain(dx) && dx.numel() > 0 &&
      dx.storage().nbytes() > 2 * dx.nbytes()) {
    dx = dx.clone();
  }
  return grads;
}

// ---------------------------------------------------------------- RNN
// edges: input, lengths, h0, w_ih, w_hh, b_ih, b_hh; saved: those, then output.

using RnnLayerSig = std::tuple<Tensor, Tensor>(const Tensor&, const OptTensor&, const Tensor&,
                                               const Tensor&, const Tensor&, const OptTensor&,
                                               const OptTensor&, bool, bool);
using Grads6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using RnnBackwardSig = Grads6(const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                              const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                              const OptTensor&, bool, bool, const Tensor&, bool, bool);

variable_list rnn_layer_backward(OpNode& node, variable_list grads) {
  const variable_list s = node.saved();
  const bool reverse = node.flags[0], relu = node.flags[1];
  const Tensor dy = or_zeros(grads[0], s[7]);
  const Tensor dh = or_zeros(grads[1], s[2]);
  if (c10::GradMode::is_enabled()) {
    NoAutocast no_autocast;  // autocast may be on where backward() is called
    return differentiate(
        reference::rnn_layer(s[0], s[1], s[2], s[3], s[4], s[5], s[6], reverse, relu),
        {dy, dh}, {s.begin(), s.begin() + 7});
  }
  static const auto op = find_op<RnnBackwardSig>("rnnkit::rnn_layer_backward");
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  auto [dx, dh0, dw_ih, dw_hh, db_ih, db_hh] =
      op.call(dy, dh, s[0], optional(s[1]), s[2], s[3], s[4], optional(s[5]), optional(s[6]),
              reverse, relu, s[7], node.wants(0), node.wants(2));
  return edge_grads({dx, Tensor(), dh0, dw_ih, dw_hh, db_ih, db_hh}, s[0]);
}

std::tuple<Tensor, Tensor> rnn_layer_autograd(const Tensor& input, const OptTensor& lengths,
                                              const Tensor& h0, const Tensor& w_ih,
                                              const Tensor& w_hh, const OptTensor& b_ih,
                                              const OptTensor& b_hh, bool reverse, bool relu) {
  static const auto op = find_op<RnnLayerSig>("rnnkit::rnn_layer");
  const variable_list args = {input, or_undefined(lengths), h0, w_ih, w_hh,
                              or_undefined(b_ih), or_undefined(b_hh)};
  auto node = OpNode::make("RnnkitRNNLayerBackward", &rnn_layer_backward, args);
  Tensor output, h_n;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    std::tie(output, h_n) = op.call(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu);
  }
  if (node) {
    node->set_outputs({output, h_n});
    node->save(args, {output});
    node->flags = {reverse, relu};
  }
  return {output, h_n};
}

// ---------------------------------------------------------------- GRU
// edges: input, lengths, h0, w_ih, w_hh, b_ih, b_hh; saved: those, reserve, then output.

using GruLayerSig = std::tuple<Tensor, Tensor>(const Tensor&, const OptTensor&, const Tensor&,
                                               const Tensor&, const Tensor&, const OptTensor&,
                                               const OptTensor&, bool);
using GruForwardSig = std::tuple<Tensor, Tensor, Tensor>(
    const Tensor&, const OptTensor&, const Tensor&, const Tensor&, const Tensor&,
    const OptTensor&, const OptTensor&, bool);
using GruBackwardSig = Grads6(const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                              const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                              const OptTensor&, bool, const Tensor&, const Tensor&, bool,
                              bool);

variable_list gru_layer_backward(OpNode& node, variable_list grads) {
  const variable_list s = node.saved();
  const bool reverse = node.flags[0];
  const Tensor dy = or_zeros(grads[0], s[8]);
  const Tensor dh = or_zeros(grads[1], s[2]);
  if (c10::GradMode::is_enabled()) {
    NoAutocast no_autocast;
    return differentiate(reference::gru_layer(s[0], s[1], s[2], s[3], s[4], s[5], s[6], reverse),
                         {dy, dh}, {s.begin(), s.begin() + 7});
  }
  static const auto op = find_op<GruBackwardSig>("rnnkit::gru_layer_backward");
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  auto [dx, dh0, dw_ih, dw_hh, db_ih, db_hh] =
      op.call(dy, dh, s[0], optional(s[1]), s[2], s[3], s[4], optional(s[5]), optional(s[6]),
              reverse, s[8], s[7], node.wants(0), node.wants(2));
  return edge_grads({dx, Tensor(), dh0, dw_ih, dw_hh, db_ih, db_hh}, s[0]);
}

std::tuple<Tensor, Tensor> gru_layer_autograd(const Tensor& input, const OptTensor& lengths,
                                              const Tensor& h0, const Tensor& w_ih,
                                              const Tensor& w_hh, const OptTensor& b_ih,
                                              const OptTensor& b_hh, bool reverse) {
  const variable_list args = {input, or_undefined(lengths), h0, w_ih, w_hh,
                              or_undefined(b_ih), or_undefined(b_hh)};
  auto node = OpNode::make("RnnkitGRULayerBackward", &gru_layer_backward, args);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (!node) {
    static const auto op = find_op<GruLayerSig>("rnnkit::gru_layer");
    return op.call(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse);
  }
  static const auto op = find_op<GruForwardSig>("rnnkit::gru_layer_forward");
  auto [output, h_n, reserve] = op.call(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse);
  node->set_outputs({output, h_n});
  variable_list saved = args;
  saved.push_back(reserve);
  node->save(saved, {output});
  node->flags = {reverse};
  return {output, h_n};
}

// ---------------------------------------------------------------- LSTM
// edges: input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr; saved: those, reserve,
// then output.

using LstmLayerSig = std::tuple<Tensor, Tensor, Tensor>(
    const Tensor&, const OptTensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const OptTensor&, const OptTensor&, const OptTensor&, bool);
using LstmForwardSig = std::tuple<Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const OptTensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const OptTensor&, const OptTensor&, const OptTensor&, bool);
using Grads8 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using LstmBackwardSig = Grads8(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                               const OptTensor&, const Tensor&, const Tensor&, const Tensor&,
                               const Tensor&, const OptTensor&, const OptTensor&,
                               const OptTensor&, bool, const Tensor&, const Tensor&, bool,
                               bool);

variable_list lstm_layer_backward(OpNode& node, variable_list grads) {
  const variable_list s = node.saved();
  const bool reverse = node.flags[0];
  const Tensor dy = or_zeros(grads[0], s[10]);
  const Tensor dh = or_zeros(grads[1], s[2]);
  const Tensor dc = or_zeros(grads[2], s[3]);
  if (c10::GradMode::is_enabled()) {
    NoAutocast no_autocast;
    return differentiate(reference::lstm_layer(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
                                               s[8], reverse),
                         {dy, dh, dc}, {s.begin(), s.begin() + 9});
  }
  static const auto op = find_op<LstmBackwardSig>("rnnkit::lstm_layer_backward");
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  auto [dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr] =
      op.call(dy, dh, dc, s[0], optional(s[1]), s[2], s[3], s[4], s[5], optional(s[6]),
              optional(s[7]), optional(s[8]), reverse, s[10], s[9], node.wants(0),
              node.wants_any(2, 4));
  return edge_grads({dx, Tensor(), dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr}, s[0]);
}

std::tuple<Tensor, Tensor, Tensor> lstm_layer_autograd(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse) {
  const variable_list args = {input, or_undefined(lengths), h0, c0, w_ih, w_hh,
                              or_undefined(b_ih), or_undefined(b_hh), or_undefined(w_hr)};
  auto node = OpNode::make("RnnkitLSTMLayerBackward", &lstm_layer_backward, args);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (!node) {
    static const auto op = find_op<LstmLayerSig>("rnnkit::lstm_layer");
    return op.call(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse);
  }
  static const auto op = find_op<LstmForwardSig>("rnnkit::lstm_layer_forward");
  auto [output, h_n, c_n, reserve] =
      op.call(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse);
  node->set_outputs({output, h_n, c_n});
  variable_list saved = args;
  saved.push_back(reserve);
  node->save(saved, {output});
  node->flags = {reverse};
  return {output, h_n, c_n};
}

}  // namespace
}  // namespace rnnkit

TORCH_LIBRARY_IMPL(rnnkit, Autograd, m) {
  m.impl("rnn_layer", &rnnkit::rnn_layer_autograd);
  m.impl("gru_layer", &rnnkit::gru_layer_autograd);
  m.impl("lstm_layer", &rnnkit::lstm_layer_autograd);
}
