#pragma once
// A layer op over a single step (T = 1, every sequence running, no projection) is one
// cell step: the streaming case, where a model is fed one frame at a time. The cell
// kernels (cell_cpu.cpp) run it, without the layer drivers' weight packing and chunk
// buffers, which only pay off over many steps. The outputs follow the layer contract
// (layer_contract.h): a cell's reserve has the layout of one step of a layer's.

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <vector>

namespace rnnkit {
namespace cpu {
namespace one_step {

using at::Tensor;
using OptTensor = std::optional<at::Tensor>;
using Grads6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using Grads8 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// Whether a call with these sizes runs here: T == 1, no sequence of length 0 (len as
// sequence_lengths gives it), B and H not 0, no projection.
bool applies(int64_t T, int64_t B, int64_t H, const std::vector<int64_t>& len, bool proj);

// -> (output [1, B, H], h_n, reserve [0])
std::tuple<Tensor, Tensor, Tensor> rnn(const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                                       const Tensor& w_hh, const OptTensor& b_ih,
                                       const OptTensor& b_hh, bool relu);
Grads6 rnn_backward(const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
                    const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, bool has_bias,
                    bool relu, const Tensor& output, bool input_grad, bool state_grad);

// -> (output, h_n, reserve [1, B, 4H] or [0])
std::tuple<Tensor, Tensor, Tensor> gru(const Tensor& input, const Tensor& h0, const Tensor& w_ih,
                                       const Tensor& w_hh, const OptTensor& b_ih,
                                       const OptTensor& b_hh, bool keep_reserve);
Grads6 gru_backward(const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
                    const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, bool has_bias,
                    const Tensor& reserve, bool input_grad, bool state_grad);

// -> (output, h_n, c_n, reserve [1, B, 5H] or [0])
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm(const Tensor& input, const Tensor& h0,
                                                const Tensor& c0, const Tensor& w_ih,
                                                const Tensor& w_hh, const OptTensor& b_ih,
                                                const OptTensor& b_hh, bool keep_reserve);
// -> the layer's gradients, grad_w_hr empty (no projection here)
Grads8 lstm_backward(const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
                     const Tensor& input, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                     const Tensor& w_hh, bool has_bias, const Tensor& reserve, bool input_grad,
                     bool state_grad);

}  // namespace one_step
}  // namespace cpu
}  // namespace rnnkit
