#pragma once
// The one-step cell ops on CUDA (schemas: csrc/rnnkit.cpp), with the CPU kernels'
// signatures (csrc/cpu/cell_ops_cpu.h); csrc/cuda/register_cuda.cpp registers them.

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace rnnkit {
namespace cuda {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using Mask3 = std::array<bool, 3>;  // gradients wanted: (input, states, weights)
using CellGrads6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

Tensor rnn_cell(const Tensor& input, const Tensor& hx, const Tensor& w_ih, const Tensor& w_hh,
                const OptTensor& b_ih, const OptTensor& b_hh, bool relu);
CellGrads6 rnn_cell_backward(const Tensor& grad_h, const Tensor& input, const Tensor& hx,
                             const Tensor& w_ih, const Tensor& w_hh, bool has_bias, bool relu,
                             const Tensor& h, Mask3 output_mask);

// -> (h', reserve [B, 4H] or empty)
std::tuple<Tensor, Tensor> gru_cell(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                                    const Tensor& w_hh, const OptTensor& b_ih,
                                    const OptTensor& b_hh, bool keep_reserve);
CellGrads6 gru_cell_backward(const Tensor& grad_h, const Tensor& input, const Tensor& hx,
                             const Tensor& w_ih, const Tensor& w_hh, bool has_bias,
                             const Tensor& reserve, Mask3 output_mask);

// -> (h', c', reserve [B, 5H] or empty)
std::tuple<Tensor, Tensor, Tensor> lstm_cell(const Tensor& input, const Tensor& hx,
                                             const Tensor& cx, const Tensor& w_ih,
                                             const Tensor& w_hh, const OptTensor& b_ih,
                                             const OptTensor& b_hh, bool keep_reserve);
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_cell_backward(
    const Tensor& grad_h, const Tensor& grad_c, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, bool has_bias,
    const Tensor& reserve, Mask3 output_mask);

}  // namespace cuda
}  // namespace rnnkit
