#pragma once
// The CPU kernels of the layer ops, one forward and one backward per cell kind,
// with the signatures of their schemas in csrc/rnnkit.cpp. The backward ones take
// the trailing flag of the `input_optional` overloads: input_grad=false returns
// an empty gradient of the input without computing it (the default overloads
// pass true). Likewise the forward ones of the GRU and the LSTM take the flag of
// the `reserve_optional` overloads: keep_reserve=false returns an empty reserve and does
// not write one.

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
    const Tensor& reserve, bool input_grad);

std::tuple<Tensor, Tensor, Tensor> gru_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, bool reverse,
    bool keep_reserve);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, const Tensor& output,
    const Tensor& reserve, bool input_grad);

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse, bool keep_reserve);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    bool reverse, const Tensor& output, const Tensor& reserve, bool input_grad);

}  // namespace cpu
}  // namespace rnnkit
