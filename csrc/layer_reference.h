#pragma once
// The layer ops in ATen ops, one step at a time: rnnkit/reference.py's functions in C++,
// without the reserve. Their autograd (csrc/layer_autograd.cpp) differentiates these for
// a double backward (create_graph=True), since the backward kernels are not themselves
// differentiable. Undefined tensors stand for absent optional arguments.

#include <ATen/core/Tensor.h>

#include <vector>

namespace rnnkit {
namespace reference {

// -> {output, h_n}
std::vector<at::Tensor> rnn_layer(const at::Tensor& input, const at::Tensor& lengths,
                                  const at::Tensor& h0, const at::Tensor& w_ih,
                                  const at::Tensor& w_hh, const at::Tensor& b_ih,
                                  const at::Tensor& b_hh, bool reverse, bool relu);

// -> {output, h_n}
std::vector<at::Tensor> gru_layer(const at::Tensor& input, const at::Tensor& lengths,
                                  const at::Tensor& h0, const at::Tensor& w_ih,
                                  const at::Tensor& w_hh, const at::Tensor& b_ih,
                                  const at::Tensor& b_hh, bool reverse);

// -> {output, h_n, c_n}
std::vector<at::Tensor> lstm_layer(const at::Tensor& input, const at::Tensor& lengths,
                                   const at::Tensor& h0, const at::Tensor& c0,
                                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                                   const at::Tensor& b_ih, const at::Tensor& b_hh,
                                   const at::Tensor& w_hr, bool reverse);

}  // namespace reference
}  // namespace rnnkit
