#pragma once
// Argument checks of the layer ops against layer_contract.h, shared by the CPU and
// the CUDA kernels so that both reject the same calls with the same messages.
// Every check is a TORCH_CHECK (a RuntimeError in Python); none of them reads
// tensor data except check_lengths_values, which needs lengths on the CPU.

#include <ATen/core/Tensor.h>

#include <optional>

#include "rnnkit/layer_contract.h"

namespace rnnkit {

// The sizes of one layer op, in the contract's names.
struct LayerSizes {
  int64_t T = 0;  // steps
  int64_t B = 0;  // batch
  int64_t I = 0;  // input features
  int64_t H = 0;  // hidden
  int64_t P = 0;  // width of h and of the output: proj_size, or H
  bool has_bias = false;
  bool has_proj = false;
};

// Checks the forward arguments (c0 and w_hr only for LSTM: pass nullptr and
// std::nullopt otherwise) and returns the sizes. Lengths on the CPU also have
// their values checked; a caller holding them on another device checks the
// values itself with check_lengths_values once they are on the host.
LayerSizes check_layer_forward(
    Cell cell,
    const at::Tensor& input,
    const std::optional<at::Tensor>& lengths,
    const at::Tensor& h0,
    const at::Tensor* c0,
    const at::Tensor& w_ih,
    const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr);

// Checks what the backward takes beyond the forward's arguments (grad_c_n only
// for LSTM), given the sizes check_layer_forward found.
void check_layer_backward(
    Cell cell,
    const LayerSizes& sizes,
    const at::Tensor& input,
    const at::Tensor& grad_output,
    const at::Tensor& grad_h_n,
    const at::Tensor* grad_c_n,
    const at::Tensor& output,
    const at::Tensor& reserve);

// 0 <= lengths[b] <= T for every b; lengths is a CPU int64 tensor of size B.
void check_lengths_values(const at::Tensor& lengths, int64_t T);

}  // namespace rnnkit
