// Registers the CUDA layer ops (csrc/cuda/{rnn,gru,lstm}.cu) and cell ops (cell.cu) for the
// CUDA dispatch key of the schemas in csrc/rnnkit.cpp, through the adapters the schemas
// need: the public layer ops drop the reserve (the kernels always write it), the backward
// ops drop the input's gradient when input_grad=false and the initial state's when
// state_grad=false (the kernels always compute them),
// every op leaves autocast out (the modules cast before the call), and the public cell ops
// keep no reserve.
//
// A .cpp file rather than a .cu one: it has no device code, and torch/library.h
// costs about 15 s through the host compiler but about 75 s through nvcc (which
// parses it once per target architecture as well). setup.py compiles every .cpp
// in every build, so the CPU-only build sees an empty file.

#ifdef RNNKIT_WITH_CUDA

#include <torch/library.h>

#include "../cell_adapters.h"
#include "cell_cuda.h"
#include "layer_cuda.h"
#include "rnnkit/no_autocast.h"

namespace rnnkit {
namespace cuda {
namespace {

// Grads: (input, h0[, c0], ...); states: 1, or 2 for the LSTM.
template <int states, typename Tuple>
Tuple only_wanted(Tuple grads, const Tensor& input, bool input_grad, bool state_grad) {
  if (!input_grad) std::get<0>(grads) = input.new_empty({0});
  if (!state_grad) {
    std::get<1>(grads) = input.new_empty({0});
    if constexpr (states == 2) std::get<2>(grads) = input.new_empty({0});
  }
  return grads;
}

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
  return only_wanted<1>(rnn_layer_backward(grad_output, grad_h_n, input, lengths, h0, w_ih,
                                           w_hh, b_ih, b_hh, reverse, relu, output,
                                           input.new_empty({0})),
                        input, input_grad, state_grad);
}

std::tuple<Tensor, Tensor> gru_layer_only(const Tensor& input, const OptTensor& lengths,
                                          const Tensor& h0, const Tensor& w_ih,
                                          const Tensor& w_hh, const OptTensor& b_ih,
                                          const OptTensor& b_hh, bool reverse) {
  NoAutocast no_autocast;
  auto [output, h_n, reserve] = gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse);
  return {output, h_n};
}

std::tuple<Tensor, Tensor, Tensor> gru_layer_forward(const Tensor& input,
                                                     const OptTensor& lengths, const Tensor& h0,
                                                     const Tensor& w_ih, const Tensor& w_hh,
                                                     const OptTensor& b_ih,
                                                     const OptTensor& b_hh, bool reverse) {
  NoAutocast no_autocast;
  return gru_layer(input, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_backward_op(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, const Tensor& output,
    const Tensor& reserve, bool input_grad, bool state_grad) {
  NoAutocast no_autocast;
  return only_wanted<1>(gru_layer_backward(grad_output, grad_h_n, input, lengths, h0, w_ih,
                                           w_hh, b_ih, b_hh, reverse, output, reserve),
                        input, input_grad, state_grad);
}

std::tuple<Tensor, Tensor, Tensor> lstm_layer_only(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse) {
  NoAutocast no_autocast;
  auto [output, h_n, c_n, reserve] =
      lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse);
  return {output, h_n, c_n};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer_forward(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse) {
  NoAutocast no_autocast;
  return lstm_layer(input, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward_op(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    bool reverse, const Tensor& output, const Tensor& reserve, bool input_grad, bool state_grad) {
  NoAutocast no_autocast;
  return only_wanted<2>(
      lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, lengths, h0, c0, w_ih, w_hh,
                          b_ih, b_hh, w_hr, reverse, output, reserve),
      input, input_grad, state_grad);
}

}  // namespace
}  // namespace cuda
}  // namespace rnnkit

TORCH_LIBRARY_IMPL(rnnkit, CUDA, m) {
  m.impl("rnn_layer", &rnnkit::cuda::rnn_layer_only);
  m.impl("rnn_layer_backward", &rnnkit::cuda::rnn_layer_backward_op);
  m.impl("gru_layer", &rnnkit::cuda::gru_layer_only);
  m.impl("gru_layer_forward", &rnnkit::cuda::gru_layer_forward);
  m.impl("gru_layer_backward", &rnnkit::cuda::gru_layer_backward_op);
  m.impl("lstm_layer", &rnnkit::cuda::lstm_layer_only);
  m.impl("lstm_layer_forward", &rnnkit::cuda::lstm_layer_forward);
  m.impl("lstm_layer_backward", &rnnkit::cuda::lstm_layer_backward_op);

  m.impl("rnn_cell", &rnnkit::cuda::rnn_cell);
  m.impl("rnn_cell_backward", &rnnkit::cuda::rnn_cell_backward);
  m.impl("gru_cell", &rnnkit::gru_cell_only<&rnnkit::cuda::gru_cell>);
  m.impl("gru_cell_forward", &rnnkit::gru_cell_forward<&rnnkit::cuda::gru_cell>);
  m.impl("gru_cell_backward", &rnnkit::cuda::gru_cell_backward);
  m.impl("lstm_cell", &rnnkit::lstm_cell_only<&rnnkit::cuda::lstm_cell>);
  m.impl("lstm_cell_forward", &rnnkit::lstm_cell_forward<&rnnkit::cuda::lstm_cell>);
  m.impl("lstm_cell_backward", &rnnkit::cuda::lstm_cell_backward);
}

#endif  // RNNKIT_WITH_CUDA
