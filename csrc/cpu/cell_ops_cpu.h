#pragma once
// The CPU kernels of the one-step cell ops (schemas and their contract: csrc/rnnkit.cpp).
// The forward ones take `keep_reserve`: the public ops ({rnn,gru,lstm}_cell) pass false
// and get an empty reserve back, the *_cell_forward ops that autograd runs pass true.

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace rnnkit {
namespace cpu {

using at::Tensor;
using OptTensor = std::optional<at::Tensor>;
using Mask3 = std::array<bool, 3>;  // gradients wanted: (input, states, weights)

Tensor rnn_cell(const Tensor& input, const Tensor& hx, const Tensor& w_ih, const Tensor& w_hh,
                const OptTensor& b_ih, const OptTensor& b_hh, bool relu);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_cell_backward(
    const Tensor& grad_h, const Tensor& input, const Tensor& hx, const Tensor& w_ih,
    const Tensor& w_hh, bool has_bias, bool relu, const Tensor& h, Mask3 output_mask);

std::tuple<Tensor, Tensor> gru_cell(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                                    const Tensor& w_hh, const OptTensor& b_ih,
                                    const OptTensor& b_hh, bool keep_reserve);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_cell_backward(
    const Tensor& grad_h, const Tensor& input, const Tensor& hx, const Tensor& w_ih,
    const Tensor& w_hh, bool has_bias, const Tensor& reserve, Mask3 output_mask);

std::tuple<Tensor, Tensor, Tensor> lstm_cell(const Tensor& input, const Tensor& hx,
                                             const Tensor& cx, const Tensor& w_ih,
                                             const Tensor& w_hh, const OptTensor& b_ih,
                                             const OptTensor& b_hh, bool keep_reserve);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_cell_backward(
    const Tensor& grad_h, const Tensor& grad_c, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, bool has_bias,
    const Tensor& reserve, Mask3 output_mask);

}  // namespace cpu
}  // namespace rnnkit
