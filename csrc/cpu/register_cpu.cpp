// Registers the CPU kernels of the layer ops (the input_optional overloads of the
// backward ops: csrc/overloads.cpp), and the CPU-only _cpu_isa op.

#include <torch/library.h>

#include <string>

#include "fast_path.h"
#include "layer_ops_cpu.h"

namespace rnnkit {
namespace cpu {
namespace {

// The default overloads of the forward ops keep the reserve for the backward.
std::tuple<Tensor, Tensor, Tensor> gru_layer_all(const Tensor& input, const OptTensor& lengths,
                                                 const Tensor& h0, const Tensor& w_ih,
                                                 const Tensor& w_hh, const OptTensor& b_ih,
                                                 const OptTensor& b_hh, bool reverse) {
  return gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, /*keep_reserve=*/true);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer_all(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse) {
  return lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                    /*keep_reserve=*/true);
}

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
}

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("rnn_layer", &rnnkit::cpu::rnn_layer);
  m.impl("rnn_layer_backward", &rnnkit::cpu::rnn_layer_backward_all);
  m.impl("gru_layer", &rnnkit::cpu::gru_layer_all);
  m.impl("gru_layer_backward", &rnnkit::cpu::gru_layer_backward_all);
  m.impl("lstm_layer", &rnnkit::cpu::lstm_layer_all);
  m.impl("lstm_layer_backward", &rnnkit::cpu::lstm_layer_backward_all);
}
