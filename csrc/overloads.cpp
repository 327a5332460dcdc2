// Overloads of the layer ops for work the caller does not need, which rnnkit/ops.py
// picks when it can:
//   {rnn,gru,lstm}_layer_backward.input_optional: the same gradients, with a
//     trailing flag `input_grad`; with input_grad=False the gradient of the input
//     comes back empty and the CPU kernels skip computing it (a layer whose input
//     does not require grad, e.g. the first layer of a network);
//   {gru,lstm}_layer.reserve_optional: the forward with a trailing flag
//     `keep_reserve`; with keep_reserve=False the reserve comes back empty and the
//     CPU kernels do not write it (no backward will run: no_grad, or nothing
//     requires grad).
// The CUDA kernels compute everything anyway: in a CUDA build, the overloads'
// CUDA kernels call the default overloads and drop what is not wanted.

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cpu/layer_ops_cpu.h"

namespace rnnkit {
namespace {

using at::Tensor;
using OptTensor = std::optional<at::Tensor>;
using Grads6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using Grads8 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

#ifdef RNNKIT_WITH_CUDA
std::tuple<Tensor, Tensor, Tensor> gru_forward_redispatch(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, bool reverse,
    bool keep_reserve) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("rnnkit::gru_layer", "")
          .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const OptTensor&,
                                                    const Tensor&, const Tensor&, const Tensor&,
                                                    const OptTensor&, const OptTensor&, bool)>();
  auto out = op.call(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse);
  if (!keep_reserve) std::get<2>(out) = input.new_empty({0});
  return out;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward_redispatch(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse, bool keep_reserve) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("rnnkit::lstm_layer", "")
          .typed<std::tuple<Tensor, Tensor, Tensor, Tensor>(
              const Tensor&, const OptTensor&, const Tensor&, const Tensor&, const Tensor&,
              const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&, bool)>();
  auto out = op.call(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse);
  if (!keep_reserve) std::get<3>(out) = input.new_empty({0});
  return out;
}

template <typename Tuple>
Tuple drop_input_grad(Tuple grads, const Tensor& input, bool input_grad) {
  if (!input_grad) std::get<0>(grads) = input.new_empty({0});
  return grads;
}

Grads6 rnn_backward_redispatch(const Tensor& grad_output, const Tensor& grad_h_n,
                               const Tensor& input, const OptTensor& lengths, const Tensor& h0,
                               const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                               const OptTensor& b_hh, bool reverse, bool relu,
                               const Tensor& output, const Tensor& reserve, bool input_grad) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnkit::rnn_layer_backward", "")
                             .typed<Grads6(const Tensor&, const Tensor&, const Tensor&,
                                           const OptTensor&, const Tensor&, const Tensor&,
                                           const Tensor&, const OptTensor&, const OptTensor&,
                                           bool, bool, const Tensor&, const Tensor&)>();
  return drop_input_grad(op.call(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih,
                                 b_hh, reverse, relu, output, reserve),
                         input, input_grad);
}

Grads6 gru_backward_redispatch(const Tensor& grad_output, const Tensor& grad_h_n,
                               const Tensor& input, const OptTensor& lengths, const Tensor& h0,
                               const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                               const OptTensor& b_hh, bool reverse, const Tensor& output,
                               const Tensor& reserve, bool input_grad) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnkit::gru_layer_backward", "")
                             .typed<Grads6(const Tensor&, const Tensor&, const Tensor&,
                                           const OptTensor&, const Tensor&, const Tensor&,
                                           const Tensor&, const OptTensor&, const OptTensor&,
                                           bool, const Tensor&, const Tensor&)>();
  return drop_input_grad(op.call(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih,
                                 b_hh, reverse, output, reserve),
                         input, input_grad);
}

Grads8 lstm_backward_redispatch(const Tensor& grad_output, const Tensor& grad_h_n,
                                const Tensor& grad_c_n, const Tensor& input,
                                const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
                                const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                                const OptTensor& b_hh, const OptTensor& w_hr, bool reverse,
                                const Tensor& output, const Tensor& reserve, bool input_grad) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("rnnkit::lstm_layer_backward", "")
          .typed<Grads8(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        const OptTensor&, const Tensor&, const Tensor&, const Tensor&,
                        const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&, bool,
                        const Tensor&, const Tensor&)>();
  return drop_input_grad(op.call(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, w_ih,
                                 w_hh, b_ih, b_hh, w_hr, reverse, output, reserve),
                         input, input_grad);
}
#endif

}  // namespace
}  // namespace rnnkit

TORCH_LIBRARY_FRAGMENT(rnnkit, m) {
  m.def(
      "gru_layer.reserve_optional(Tensor input, Tensor? lengths, Tensor h0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, bool reverse, bool keep_reserve) "
      "-> (Tensor output, Tensor h_n, Tensor reserve)");
  m.def(
      "lstm_layer.reserve_optional(Tensor input, Tensor? lengths, Tensor h0, Tensor c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse, "
      "bool keep_reserve) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor reserve)");
  m.def(
      "rnn_layer_backward.input_optional(Tensor grad_output, Tensor grad_h_n, Tensor input, "
      "Tensor? lengths, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "bool reverse, bool relu, Tensor output, Tensor reserve, bool input_grad) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");
  m.def(
      "gru_layer_backward.input_optional(Tensor grad_output, Tensor grad_h_n, Tensor input, "
      "Tensor? lengths, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "bool reverse, Tensor output, Tensor reserve, bool input_grad) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");
  m.def(
      "lstm_layer_backward.input_optional(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, "
      "Tensor input, Tensor? lengths, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse, Tensor output, Tensor reserve, "
      "bool input_grad) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, "
      "Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh, Tensor grad_w_hr)");
}

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("gru_layer.reserve_optional", &rnnkit::cpu::gru_layer);
  m.impl("lstm_layer.reserve_optional", &rnnkit::cpu::lstm_layer);
  m.impl("rnn_layer_backward.input_optional", &rnnkit::cpu::rnn_layer_backward);
  m.impl("gru_layer_backward.input_optional", &rnnkit::cpu::gru_layer_backward);
  m.impl("lstm_layer_backward.input_optional", &rnnkit::cpu::lstm_layer_backward);
}

#ifdef RNNKIT_WITH_CUDA
TORCH_LIBRARY_IMPL(rnnkit, CUDA, m) {
  m.impl("gru_layer.reserve_optional", &rnnkit::gru_forward_redispatch);
  m.impl("lstm_layer.reserve_optional", &rnnkit::lstm_forward_redispatch);
  m.impl("rnn_layer_backward.input_optional", &rnnkit::rnn_backward_redispatch);
  m.impl("gru_layer_backward.input_optional", &rnnkit::gru_backward_redispatch);
  m.impl("lstm_layer_backward.input_optional", &rnnkit::lstm_backward_redispatch);
}
#endif
