// Registers the CPU kernels of the layer ops and of the cell ops (schemas: csrc/rnnkit.cpp),
// and the CPU-only _cpu_isa op.

#include <torch/library.h>

#include <string>

#include "../cell_adapters.h"
#include "cell_ops_cpu.h"
#include "rnnkit/no_autocast.h"
#include "bf16_path.h"
#include "fast_path.h"
#include "layer_ops_cpu.h"

namespace rnnkit {
namespace cpu {
namespace {

// The public layer ops keep no reserve; the *_layer_forward ones, which autograd runs, do.
// Every layer op leaves autocast out: the modules cast as torch.nn does before the call,
// and the kernels' own GEMMs must not be cast again.
std::tuple<Tensor, Tensor> rnn_layer_only(const Tensor& input, const OptTensor& lengths,
                                          const Tensor& h0, const Tensor& w_ih,
                                          const Tensor& w_hh, const OptTensor& b_ih,
                                          const OptTensor& b_hh, bool reverse, bool relu) {
  NoAutocast no_autocast;
  auto [output, h_n, reserve] = rnn_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, relu);
  return {output, h_n};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_layer_backward_op(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, bool relu, const Tensor& output,
    bool input_grad, bool state_grad) {
  NoAutocast no_autocast;
  return rnn_layer_backward(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh,
                            reverse, relu, output, input.new_empty({0}), input_grad,
                            state_grad);
}

std::tuple<Tensor, Tensor> gru_layer_only(const Tensor& input, const OptTensor& lengths,
                                          const Tensor& h0, const Tensor& w_ih,
                                          const Tensor& w_hh, const OptTensor& b_ih,
                                          const OptTensor& b_hh, bool reverse) {
  NoAutocast no_autocast;
  auto [output, h_n, reserve] =
      gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, /*keep_reserve=*/false);
  return {output, h_n};
}

std::tuple<Tensor, Tensor, Tensor> gru_layer_forward(const Tensor& input,
                                                     const OptTensor& lengths, const Tensor& h0,
                                                     const Tensor& w_ih, const Tensor& w_hh,
                                                     const OptTensor& b_ih,
                                                     const OptTensor& b_hh, bool reverse) {
  NoAutocast no_autocast;
  return gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, /*keep_reserve=*/true);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_backward_op(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, const Tensor& output,
    const Tensor& reserve, bool input_grad, bool state_grad) {
  NoAutocast no_autocast;
  return gru_layer_backward(grad_output, grad_h_n, input, lengths, h0, w_ih, w_hh, b_ih, b_hh,
                            reverse, output, reserve, input_grad, state_grad);
}

std::tuple<Tensor, Tensor, Tensor> lstm_layer_only(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse) {
  NoAutocast no_autocast;
  auto [output, h_n, c_n, reserve] = lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                                w_hr, reverse, /*keep_reserve=*/false);
  return {output, h_n, c_n};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer_forward(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse) {
  NoAutocast no_autocast;
  return lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                    /*keep_reserve=*/true);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward_op(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    bool reverse, const Tensor& output, const Tensor& reserve, bool input_grad, bool state_grad) {
  NoAutocast no_autocast;
  return lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, w_ih, w_hh,
                             b_ih, b_hh, w_hr, reverse, output, reserve, input_grad,
                             state_grad);
}

}  // namespace
}  // namespace cpu
}  // namespace rnnkit

TORCH_LIBRARY_FRAGMENT(rnnkit, m) {
  // The instruction set of the CPU kernels a layer call would use now
  // ("avx512", "avx2" or "generic"; see csrc/cpu/fast_path.h): for tests.
  m.def("_cpu_isa() -> str", [] { return std::string(rnnkit::cpu::fast::selected_name()); });
  // The kernels of the bfloat16 layers now ("avx512_bf16"), or "" where bfloat16
  // layers compute on the float kernels (see csrc/cpu/bf16_path.h): for tests.
  m.def("_cpu_bf16_isa() -> str", [] {
    const rnnkit::cpu::fast::Bf16Kernels* k = rnnkit::cpu::fast::bf16_select();
    return std::string(k ? k->name : "");
  });
  // The FMA peak of those kernels on the current threads, GFLOP/s (0 for "generic"):
  // for the benchmarks.
  m.def("_cpu_fma_peak(float seconds=0.5) -> float",
        [](double seconds) { return rnnkit::cpu::fast::fma_peak_gflops(seconds); });
}

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("rnn_layer", &rnnkit::cpu::rnn_layer_only);
  m.impl("rnn_layer_backward", &rnnkit::cpu::rnn_layer_backward_op);
  m.impl("gru_layer", &rnnkit::cpu::gru_layer_only);
  m.impl("gru_layer_forward", &rnnkit::cpu::gru_layer_forward);
  m.impl("gru_layer_backward", &rnnkit::cpu::gru_layer_backward_op);
  m.impl("lstm_layer", &rnnkit::cpu::lstm_layer_only);
  m.impl("lstm_layer_forward", &rnnkit::cpu::lstm_layer_forward);
  m.impl("lstm_layer_backward", &rnnkit::cpu::lstm_layer_backward_op);

  m.impl("rnn_cell", &rnnkit::cpu::rnn_cell);
  m.impl("rnn_cell_backward", &rnnkit::cpu::rnn_cell_backward);
  m.impl("gru_cell", &rnnkit::gru_cell_only<&rnnkit::cpu::gru_cell>);
  m.impl("gru_cell_forward", &rnnkit::gru_cell_forward<&rnnkit::cpu::gru_cell>);
  m.impl("gru_cell_backward", &rnnkit::cpu::gru_cell_backward);
  m.impl("lstm_cell", &rnnkit::lstm_cell_only<&rnnkit::cpu::lstm_cell>);
  m.impl("lstm_cell_forward", &rnnkit::lstm_cell_forward<&rnnkit::cpu::lstm_cell>);
  m.impl("lstm_cell_backward", &rnnkit::cpu::lstm_cell_backward);
}
