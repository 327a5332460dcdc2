#pragma once
// The CUDA layer ops: one layer, one direction, a whole time-major sequence.
// The contract (shapes, reserve layout, masking) is layer_contract.h; this header
// only names the host entry points that csrc/cuda/register_cuda.cpp registers
// for the CUDA dispatch key.
//
// Sizes: T steps, B batch, I input features, H hidden, P = proj_size or H,
// G gates (RNN 1, GRU 3, LSTM 4).
//
// Arguments (all on one CUDA device, all one floating dtype except lengths):
//   input        [T, B, I]
//   lengths      [B] int64 or absent. Read on the device only, never on the host
//                (so the ops stay CUDA-graph capturable): a value outside [0, T]
//                behaves as if clamped to that range, it can never index memory.
//   h0 [B, P], c0 [B, H]
//   w_ih [G*H, I], w_hh [G*H, P], b_ih and b_hh [G*H] (both or neither),
//   w_hr [P, H] (LSTM projection)       torch.nn's layouts and gate order
//   grad_output [T, B, P], grad_h_n [B, P], grad_c_n [B, H]
//   output, reserve                     exactly what the forward op returned
//
// The arguments are checked by rnnkit/layer_checks.h, the CPU kernels' checks, on
// their metadata alone (lengths values included: they are never read on the host).
//
// Ownership: the ops never write to their arguments. Every returned tensor is
// freshly allocated; nothing returned aliases an argument or another result.
// Non-contiguous arguments are accepted (made contiguous once, up front).
// Everything runs on the current CUDA stream of input's device, with one
// workspace allocation per call and no host synchronisation.

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace rnnkit {
namespace cuda {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// -> (output [T, B, H], h_n [B, H], reserve [0])
std::tuple<Tensor, Tensor, Tensor> rnn_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, bool relu);

// -> (grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, bool relu, const Tensor& output,
    const Tensor& reserve);

// -> (output [T, B, H], h_n [B, H], reserve [T, B, 4H] = r, z, n, W_hn h + b_hn)
std::tuple<Tensor, Tensor, Tensor> gru_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, bool reverse);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input,
    const OptTensor& lengths, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool reverse, const Tensor& output,
    const Tensor& reserve);

// -> (output [T, B, P], h_n [B, P], c_n [B, H], reserve [T, B, 5H] = i, f, g, o, c)
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer(
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse);

// -> (grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr)
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const Tensor& input, const OptTensor& lengths, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse, const Tensor& output, const Tensor& reserve);

}  // namespace cuda
}  // namespace rnnkit
