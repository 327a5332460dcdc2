#pragma once
// aᵀ · b for the weight gradients: a [R, G] (the gate gradients of R rows), b [R, K]
// (the inputs or hidden states of those rows), result [G, K].
//
// MKL runs that product, with a transposed, at a small fraction of its speed when b
// is narrow: on an AMD Zen 1, R = 6400, G = 2048, float32, K = 8 took 133 ms where
// the same product with the narrow operand first, (bᵀ · a)ᵀ, took 12 ms (10-20x for
// every K from 2 to 11 at R*G of a million or more; benchmarks/results/
// 2026-12-03-cpu-zen1-prefetch.md). That is the dW_ih of a layer with a small input
// (a time series, speech features). Above that width the two forms are within noise
// of each other, so the rule is this narrow.

#include <ATen/core/Tensor.h>

namespace rnnkit {

// Whether aᵀ · b is better computed as (bᵀ · a)ᵀ.
bool narrow_side_first(const at::Tensor& a, const at::Tensor& b);

// aᵀ · b, a contiguous [G, K] tensor.
at::Tensor transposed_product(const at::Tensor& a, const at::Tensor& b);

// out = aᵀ · b, out [G, K] (it may be a view, such as a block of rows of a larger
// gradient).
void transposed_product_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b);

}  // namespace rnnkit
