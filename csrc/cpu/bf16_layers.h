#pragma once
// The bfloat16 forward of the CPU layer ops on the bfloat16 kernels (bf16_path.h),
// for layer_ops_cpu.h's functions to hand a bfloat16 call to: the input and weights
// as they are, the state and the outputs in float32 until they are returned in
// bfloat16 (the reserve, like the float path's, is returned in bfloat16). Each
// returns nothing where those kernels do not run (see bf16_select), and the caller
// goes on with its float32 path.

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <vector>

#include "rnnkit/layer_checks.h"

namespace rnnkit {
namespace cpu {

using OptTensor = std::optional<at::Tensor>;

std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>> lstm_layer_bf16(
    const LayerSizes& sz, const at::Tensor& input, const std::vector<int64_t>& len,
    const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr, bool reverse,
    bool keep_reserve);

std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor>> gru_layer_bf16(
    const LayerSizes& sz, const at::Tensor& input, const std::vector<int64_t>& len,
    const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
    const OptTensor& b_hh, bool reverse, bool keep_reserve);

std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor>> rnn_layer_bf16(
    const LayerSizes& sz, const at::Tensor& input, const std::vector<int64_t>& len,
    const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
    const OptTensor& b_hh, bool reverse, bool relu);

}  // namespace cpu
}  // namespace rnnkit
