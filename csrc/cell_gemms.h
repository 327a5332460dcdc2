#pragma once
// The GEMMs of the one-step cell ops, the same on every device (ATen's mm: MKL on the CPU,
// cuBLAS on CUDA): the products a step's pointwise pass reads, and the gradients that
// follow the backward's pass. The devices' cell files (csrc/cpu/cell_cpu.cpp,
// csrc/cuda/cell.cu) differ only in those passes.

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace rnnkit {

using Mask3 = std::array<bool, 3>;  // gradients wanted: (input, states, weights)
using CellGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor>;  // dx, dh, dW_ih, dW_hh, db_ih, db_hh

// t contiguous in dtype ct, without a dispatch when it already is (a cell runs at small
// sizes, where each dispatch is a visible part of a call).
at::Tensor contiguous_as(const at::Tensor& t, at::ScalarType ct);

// t back in the caller's dtype.
at::Tensor as_dtype(const at::Tensor& t, at::ScalarType dtype);

// a · wᵀ (+ bias), [B, G*H], in dtype ct. A fresh tensor: the passes write it.
at::Tensor cell_product(const at::Tensor& a, const at::Tensor& w,
                        const std::optional<at::Tensor>& bias, at::ScalarType ct);

// The two kinds of product of a step's gradients, all operands contiguous in the compute
// dtype: times(a, w, c) = a · w (+ c when defined), [B, N] x [N, K] -> [B, K]; outer(a, b)
// = aᵀ · b, [B, N] and [B, K] -> [N, K]. A device may give its own (the CPU's at small
// batches, cell_cpu.cpp); by default ATen's mm and addmm.
struct CellGemms {
  at::Tensor (*times)(const at::Tensor& a, const at::Tensor& w, const at::Tensor& c);
  at::Tensor (*outer)(const at::Tensor& a, const at::Tensor& b);
};
extern const CellGemms kAtenCellGemms;

// The gradients from those of the input and hidden products (dgi, dgh: the same tensor
// but for GRU), each empty when the mask does not ask for it, in `dtype`. dh_direct, when
// defined, is added to dh (GRU's z ⊙ dh').
CellGrads cell_step_grads(const at::Tensor& dgi, const at::Tensor& dgh, const at::Tensor& x,
                          const at::Tensor& h, const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const at::Tensor& dh_direct, bool has_bias, Mask3 mask,
                          at::ScalarType dtype, const CellGemms& gemms = kAtenCellGemms);

}  // namespace rnnkit
