#pragma once
// Pieces the three CUDA cells share: compile-time flag dispatch, the launch
// shape of the per-step pointwise kernels, the step order of a direction, the
// one-allocation workspace, and the kernels and GEMMs that are the same for
// every cell (backward seeding, whole-sequence weight gradients).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace rnnkit {
namespace cuda {

// ------------------------------------------------------------------ flags

// Calls f(std::bool_constant<b0>{}, std::bool_constant<b1>{}, ...) for runtime
// bools b0, b1, ...: one instantiation per combination, so kernels templated on
// the flags have no runtime branch on them in their hot loop.
template <typename F>
void with_static_flags(F&& f) {
  f();
}

template <typename F, typename... Rest>
void with_static_flags(F&& f, bool first, Rest... rest) {
  if (first) {
    with_static_flags([&](auto... fixed) { f(std::true_type{}, fixed...); }, rest...);
  } else {
    with_static_flags([&](auto... fixed) { f(std::false_type{}, fixed...); }, rest...);
  }
}

// ------------------------------------------------------------------ launches

constexpr int kBlockThreads = 256;

// A 1-D launch covering n elements with grid-stride loops. The grid is capped
// at what the device can keep resident (so it never exceeds any grid limit,
// whatever n is); the kernels loop over the rest.
struct ElementwiseLaunch {
  unsigned int blocks;
  int64_t n;
};

inline ElementwiseLaunch elementwise_launch(int64_t n) {
  const int64_t resident_blocks =
      int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) *
      (2048 / kBlockThreads);
  const int64_t wanted = (n + kBlockThreads - 1) / kBlockThreads;
  return {static_cast<unsigned int>(std::max<int64_t>(1, std::min(wanted, resident_blocks))), n};
}

// Launches kernel<<<..., current stream>>>(args...) over n elements; no-op for n == 0.
template <typename Kernel, typename... Args>
void launch_elementwise(int64_t n, Kernel kernel, const Args&... args) {
  if (n <= 0) {
    return;
  }
  const ElementwiseLaunch l = elementwise_launch(n);
  kernel<<<l.blocks, kBlockThreads, 0, at::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The grid-stride loop of the kernels above, with 64-bit indices.
#define RNNKIT_GRID_STRIDE_LOOP(i, n)                                               \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);         \
       i += int64_t(blockDim.x) * gridDim.x)

// ------------------------------------------------------------------ steps

// Whether step t of sequence b is real. lengths are only ever compared with
// step indices t in [0, T), never used to address memory, so this comparison is
// exactly the comparison with lengths[b] clamped to [0, T]: negative lengths
// mean no real step, lengths above T mean every step is real, and no value can
// make a kernel read or write out of bounds. Without lengths every step is real.
template <bool kHasLengths>
__device__ __forceinline__ bool step_is_real(const int64_t* lengths, int64_t b, int64_t t) {
  if constexpr (kHasLengths) {
    return t < lengths[b];
  } else {
    return true;
  }
}

// The order in which a direction visits the steps: step(k) is the k-th step the
// forward pass processes, prev(t) the step processed just before t (-1 if none).
struct StepOrder {
  int64_t T;
  bool reverse;
  int64_t step(int64_t k) const { return reverse ? T - 1 - k : k; }
  int64_t prev(int64_t t) const {
    const int64_t p = reverse ? t + 1 : t - 1;
    return (p < 0 || p >= T) ? -1 : p;
  }
};

// ------------------------------------------------------------------ workspace

// Carves one allocation into named slices, each aligned to 256 bytes (what
// cuBLAS prefers for its operands). Plan all slices first, then allocate.
class Workspace {
 public:
  // Reserves numel elements; returns the slot to pass to slice() after allocate().
  int64_t plan(int64_t numel) {
    const int64_t offset = (total_ + kAlign - 1) / kAlign * kAlign;
    total_ = offset + numel;
    return offset;
  }
  void allocate(const at::TensorOptions& options) { buffer_ = at::empty({total_}, options); }
  at::Tensor slice(int64_t offset, at::IntArrayRef shape) const {
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    return buffer_.narrow(0, offset, numel).view(shape);
  }

 private:
  static constexpr int64_t kAlign = 128;  // elements: >= 256 bytes for every dtype
  int64_t total_ = 0;
  at::Tensor buffer_;
};

// A chain of state updates that must end in `last` (an output tensor), using one
// scratch buffer: update j of `count` writes to `last` when count-1-j is even,
// else to `scratch`. Consecutive updates therefore never share a buffer (each
// reads the previous state while writing the next), and the final one lands in
// `last` without a copy.
struct StateChain {
  at::Tensor last, scratch;
  int64_t count;
  const at::Tensor& target(int64_t j) const { return ((count - 1 - j) % 2 == 0) ? last : scratch; }
};

template <typename scalar_t>
scalar_t* ptr(const at::Tensor& t) {
  return t.data_ptr<scalar_t>();
}

template <typename scalar_t>
const scalar_t* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<scalar_t>() : nullptr;
}

inline std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

// ------------------------------------------------------------------ backward pieces

// dh_slot[b, :] = grad_h_n[b, :] + (t real for b ? grad_output[t, b, :] : 0):
// the gradient of the hidden state after the last step the forward processed.
template <typename scalar_t, bool kHasLengths>
__global__ void seed_hidden_grad_kernel(const scalar_t* __restrict__ grad_h_n,
                                        const scalar_t* __restrict__ grad_output_t,
                                        scalar_t* __restrict__ dh_slot,
                                        const int64_t* __restrict__ lengths, int64_t t,
                                        int64_t B, int64_t P) {
  using acc_t = at::opmath_type<scalar_t>;
  RNNKIT_GRID_STRIDE_LOOP(i, B * P) {
    const int64_t b = i / P;
    acc_t d = static_cast<acc_t>(grad_h_n[i]);
    if (step_is_real<kHasLengths>(lengths, b, t)) {
      d += static_cast<acc_t>(grad_output_t[i]);
    }
    dh_slot[i] = static_cast<scalar_t>(d);
  }
}

template <typename scalar_t>
void seed_hidden_grad(const at::Tensor& grad_h_n, const at::Tensor& grad_output,
                      const at::Tensor& dh_slot, const std::optional<at::Tensor>& lengths,
                      int64_t t) {
  const int64_t B = grad_h_n.size(0), P = grad_h_n.size(1);
  const scalar_t* dy_t = ptr<scalar_t>(grad_output) + t * B * P;
  with_static_flags(
      [&](auto has_lengths) {
        launch_elementwise(B * P, seed_hidden_grad_kernel<scalar_t, has_lengths>,
                           ptr<scalar_t>(grad_h_n), dy_t, ptr<scalar_t>(dh_slot),
                           ptr_or_null<int64_t>(lengths), t, B, P);
      },
      lengths.has_value());
}

// grad_w_hh = sum over t of dgates_h[t]^T · h_prev(t), as two GEMMs over the
// whole sequence. h_prev(t) is output[prev(t)] when that step is real, else h0.
// Pairing every step with output[prev(t)] is exact except at each sequence's
// first real step (rows of padded steps are zero in dgates_h, and so are the
// padded rows of output): those rows, collected by the step kernels in
// dgates_first, pair with h0 instead.
inline void hidden_weight_grad(at::Tensor& grad_w_hh, const at::Tensor& dgates_h,
                               const at::Tensor& dgates_first, const at::Tensor& output,
                               const at::Tensor& h0, bool reverse) {
  // Explicit row counts throughout: with H = 0 (or B = 0) a -1 could not be inferred.
  const int64_t T = dgates_h.size(0), B = dgates_h.size(1);
  const int64_t GH = dgates_h.size(2), P = output.size(2);
  if (T > 1) {
    // Forward: steps 1..T-1 follow steps 0..T-2. Reverse: steps 0..T-2 follow 1..T-1.
    const int64_t rows = (T - 1) * B;
    const at::Tensor later = dgates_h.narrow(0, reverse ? 0 : 1, T - 1).reshape({rows, GH});
    const at::Tensor earlier = output.narrow(0, reverse ? 1 : 0, T - 1).reshape({rows, P});
    at::mm_out(grad_w_hh, later.t(), earlier);
    at::addmm_out(grad_w_hh, grad_w_hh, dgates_first.t(), h0);
  } else {
    at::mm_out(grad_w_hh, dgates_first.t(), h0);
  }
}

// grad_input = dgates_x · W_ih and grad_w_ih = dgates_xᵀ · input, each one GEMM
// over all T·B rows.
inline void input_grads(at::Tensor& grad_input, at::Tensor& grad_w_ih, const at::Tensor& dgates_x,
                        const at::Tensor& input, const at::Tensor& w_ih) {
  const int64_t rows = dgates_x.size(0) * dgates_x.size(1);
  const int64_t GH = dgates_x.size(2), I = input.size(2);
  const at::Tensor dg = dgates_x.view({rows, GH});
  at::Tensor dx = grad_input.view({rows, I});
  at::mm_out(dx, dg, w_ih);
  at::mm_out(grad_w_ih, dg.t(), input.view({rows, I}));
}

// Sum of a [T, B, N] gradient over its T·B rows, into grad [N].
inline void row_sum(at::Tensor& grad, const at::Tensor& dgates) {
  at::sum_out(grad, dgates.view({dgates.size(0) * dgates.size(1), dgates.size(2)}), {0});
}

}  // namespace cuda
}  // namespace rnnkit
