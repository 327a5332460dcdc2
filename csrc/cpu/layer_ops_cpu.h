#pragma once
// The CPU kernels of the layer ops, one forward and one backward per cell kind
// (schemas: csrc/rnnkit.cpp; registered, with the adapters the schemas need, by
// register_cpu.cpp). The backward ones take the schemas' flags input_grad and
// state_grad: false returns empty gradients of the input (of h0 and c0), the input's
// uncomputed, the state's uncomputed over a single step (over more, the recurrence
// computes it anyway). The forward ones of the GRU and the LSTM take keep_reserve: false
// (the public op, after which no backward runs) returns an empty reserve and does not
// write one.

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace rnnkit {
namespace cpu {

using at::Tensor;
using OptTensor = std::optional<at::Tensor>;

std::tuple<Tensor, Tensor, Tensor> rnn_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, bool relu);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, bool relu, const Tensor& output,
    const Tensor& reserve, bool input_grad, bool state_grad);

std::tuple<Tensor, Tensor, Tensor> gru_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, bool reverse,
    bool keep_reserve);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, const Tensor& output,
    const Tensor& reserve, bool input_grad, bool state_grad);

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse, bool keep_reserve);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    bool reverse, const Tensor& output, const Tensor& reserve, bool input_grad, bool state_grad);

}  // namespace cpu
}  // namespace rnnkit
