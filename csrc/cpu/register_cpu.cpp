// Registers the CPU kernels of the layer ops, and the CPU-only ops.

#include <torch/library.h>

#include <string>

#include "fast_path.h"
#include "layer_ops_cpu.h"

namespace rnnkit {
namespace cpu {
namespace {

// The default overloads of the backward ops compute every gradient.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_layer_backward_all(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, bool relu, const Tensor& output,
    const Tensor& reserve) {
  return rnn_layer_backward(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh,
                            reverse, relu, output, reserve, /*input_grad=*/true);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_backward_all(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, const Tensor& output,
    const Tensor& reserve) {
  return gru_layer_backward(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh,
                            reverse, output, reserve, /*input_grad=*/true);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward_all(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    bool reverse, const Tensor& output, const Tensor& reserve) {
  return lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, w_ih, w_hh,
                             b_ih, b_hh, w_hr, reverse, output, reserve, /*input_grad=*/true);
}

}  // namespace
}  // namespace cpu
}  // namespace rnnkit

TORCH_LIBRARY_FRAGMENT(rnnkit, m) {
  // The instruction set of the float32 CPU kernels a layer call would use now
  // ("avx512", "avx2" or "generic"; see csrc/cpu/fast_path.h): for tests.
  m.def("_cpu_isa() -> str", [] { return std::string(rnnkit::cpu::fast::selected_name()); });

  // The backward ops with a flag for the gradient of the input: with
  // input_grad=False it comes back empty and is not computed (when the layer's
  // input does not require grad, e.g. the first layer of a network). CPU only.
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
  m.impl("rnn_layer", &rnnkit::cpu::rnn_layer);
  m.impl("rnn_layer_backward", &rnnkit::cpu::rnn_layer_backward_all);
  m.impl("rnn_layer_backward.input_optional", &rnnkit::cpu::rnn_layer_backward);
  m.impl("gru_layer", &rnnkit::cpu::gru_layer);
  m.impl("gru_layer_backward", &rnnkit::cpu::gru_layer_backward_all);
  m.impl("gru_layer_backward.input_optional", &rnnkit::cpu::gru_layer_backward);
  m.impl("lstm_layer", &rnnkit::cpu::lstm_layer);
  m.impl("lstm_layer_backward", &rnnkit::cpu::lstm_layer_backward_all);
  m.impl("lstm_layer_backward.input_optional", &rnnkit::cpu::lstm_layer_backward);
}
