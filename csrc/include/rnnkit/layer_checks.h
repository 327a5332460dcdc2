#pragma once
// Argument checks of the layer ops against layer_contract.h, shared by the CPU and
// the CUDA kernels (and the persistent CUDA ops) so that all of them reject the
// same calls with the same messages. Every check is a TORCH_CHECK (a RuntimeError
// in Python). Only check_lengths_values reads tensor data, and only on the CPU:
// for a kernel on any other device the checks read metadata alone, so they never
// synchronise with the device.

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

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

// Checks the forward arguments of a kernel running on `device_type` (c0 and w_hr
// only for LSTM: pass nullptr and std::nullopt otherwise) and returns the sizes.
// Every tensor must be on input's device, and input on a `device_type` device.
// lengths must be int64 of shape [B]. Their values are checked only for a CPU
// kernel (0 <= lengths[b] <= T); any other kernel gets its lengths checked by
// metadata alone and must handle their values on its device (the CUDA kernels
// clamp them to [0, T], see csrc/cuda/layer_cuda.h).
// H = 0 is allowed (torch.nn's cells accept hidden_size=0): every output is empty then.
// Messages name `op_name` (without the "rnnkit::"), by default the cell's layer op.
LayerSizes check_layer_forward(
    Cell cell,
    c10::DeviceType device_type,
    const at::Tensor& input,
    const std::optional<at::Tensor>& lengths,
    const at::Tensor& h0,
    const at::Tensor* c0,
    const at::Tensor& w_ih,
    const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr,
    const char* op_name = nullptr);

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

// The sizes of one cell op (one step, see the cell schemas in csrc/rnnkit.cpp).
struct CellSizes {
  int64_t B = 0;  // batch
  int64_t I = 0;  // input features
  int64_t H = 0;  // hidden
  bool has_bias = false;
};

// Checks the arguments of a one-step cell op running on `device_type`: input [B, I],
// hx [B, H], cx [B, H] (LSTM only: nullptr otherwise), w_ih [G*H, I], w_hh [G*H, H], both
// biases [G*H] or neither, all of input's dtype and device. torch.nn's own size checks come
// first, with its messages (as ATen's check_rnn_cell_forward_input); the other messages name
// `op_name`.
CellSizes check_cell_forward(
    Cell cell,
    c10::DeviceType device_type,
    const at::Tensor& input,
    const at::Tensor& hx,
    const at::Tensor* cx,
    const at::Tensor& w_ih,
    const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh,
    const char* op_name);

// Checks what a cell's backward takes beyond the forward's arguments: grad_h [B, H],
// grad_c [B, H] (LSTM only: nullptr otherwise), and `saved`, the reserve (GRU [B, 4H],
// LSTM [B, 5H]) or, for RNN, the new state h [B, H].
void check_cell_backward(Cell cell, const CellSizes& sizes, const at::Tensor& input,
                         const at::Tensor& grad_h, const at::Tensor* grad_c,
                         const at::Tensor& saved, const char* op_name);

// 0 <= lengths[b] <= T for every b; lengths is a CPU int64 tensor of size B.
// Reads the values: for CPU kernels only.
void check_lengths_values(const at::Tensor& lengths, int64_t T);

}  // namespace rnnkit
