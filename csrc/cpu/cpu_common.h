#pragma once
// What the CPU layer drivers share: the compute dtype, argument preparation,
// per-sequence lengths, the step order, a raw-pointer GEMM, and a parallel loop
// over the rows of a [B, N] block.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

namespace rnnkit {
namespace cpu {

// float for float16 and bfloat16 (they are computed in float and stored back in
// their own dtype), otherwise the dtype itself.
at::ScalarType compute_dtype(at::ScalarType dtype);

// The dtype of a backward's whole-sequence products (dW_hh, dW_ih, dx): bfloat16 for
// a bfloat16 layer where the bfloat16 kernels run (bf16_path.h: the CPU multiplies
// bfloat16 natively, and ATen's bfloat16 GEMMs, oneDNN's, run about twice as fast as
// float32 ones: benchmarks/results/2026-12-04-cpu-zen4.md), else compute_dtype.
at::ScalarType products_dtype(at::ScalarType dtype);

// A contiguous tensor of dtype `compute`: `t` itself (no dispatch) when it already is one.
at::Tensor prepare(const at::Tensor& t, at::ScalarType compute);
// As above; an undefined tensor for an absent optional.
at::Tensor prepare(const std::optional<at::Tensor>& t, at::ScalarType compute);

// lengths[b], or T for every b when lengths is absent.
std::vector<int64_t> sequence_lengths(const std::optional<at::Tensor>& lengths, int64_t B,
                                      int64_t T);

// The forward runs steps 0..T-1, or T-1..0 when reverse; the backward walks the
// same order backwards. With lengths, step t of sequence b is real iff
// t < lengths[b], which makes a reverse sequence start at its own last real step.
struct StepOrder {
  int64_t T;
  bool reverse;
  // The step run at position s of the forward order.
  int64_t step(int64_t s) const { return reverse ? T - 1 - s : s; }
  // Whether real step t is the first one sequence b runs (its h_{t-1} is h0).
  bool first(int64_t t, int64_t length) const { return reverse ? t + 1 >= length : t == 0; }
  // The step run just before t (valid when !first).
  int64_t previous(int64_t t) const { return reverse ? t + 1 : t - 1; }
};

// x · W_ihᵀ + bias for every step at once, [T*B, G*H] (bias may be undefined):
// the one GEMM hoisted out of the step loop of the portable path (the fast
// fast path projects chunk by chunk inside its loop, fast_path.cpp).
at::Tensor input_projection(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& bias);

// h_{t-1} of every step, [T, B, P]: h0 at each sequence's first real step, the
// output of the previous step otherwise, zeros at padded steps. The backward's
// dW_hh is one GEMM of the gate gradients against this.
at::Tensor previous_hidden(const at::Tensor& output, const at::Tensor& h0,
                           const std::vector<int64_t>& lengths, bool reverse);

// dW_hh = dgᵀ · h_{t-1} over all steps, [N, P], for dg [T*B, N] (rows may be
// strided): when every sequence runs all T steps, two GEMMs on views of output
// and h0; otherwise one GEMM against previous_hidden.
at::Tensor hidden_weight_grad(const at::Tensor& dg, const at::Tensor& output, const at::Tensor& h0,
                              const std::vector<int64_t>& lengths, bool reverse);

// The gradient of the input, [R, I], computed block of rows by block of rows by
// rows_fn(r0, r1, out) writing rows [r0, r1) into `out` ([r1 - r0, I]) from the
// gate gradients `buf` ([R, L], contiguous), over buf's own storage when I <= L:
// this keeps the backward's peak memory at one [R, L] buffer. Rows [r0, r1) of
// the result occupy the floats [r0*I, r1*I) of buf, which hold only rows that
// earlier blocks have consumed when r1*I <= r0*L; a block for which that does
// not hold goes through a small separate buffer. buf is not usable afterwards.
template <typename RowsFn>
at::Tensor input_grad_over(const at::Tensor& buf, int64_t I, const RowsFn& rows_fn) {
  const int64_t R = buf.size(0), L = buf.size(1);
  if (I == 0) return at::empty({R, 0}, buf.options());  // an input of no features
  // Blocks of about 64K floats, at least 32 rows (for the GEMMs).
  const int64_t chunk = std::max<int64_t>(32, (int64_t{1} << 16) / std::max<int64_t>({1, L, I}));
  if (I > L) {
    at::Tensor dst = at::empty({R, I}, buf.options());
    for (int64_t r0 = 0; r0 < R; r0 += chunk) {
      at::Tensor rows = dst.narrow(0, r0, std::min(R, r0 + chunk) - r0);
      rows_fn(r0, r0 + rows.size(0), rows);
    }
    return dst;
  }
  at::Tensor dst = buf.view({-1}).narrow(0, 0, R * I).view({R, I});
  at::Tensor tmp;
  for (int64_t r0 = 0; r0 < R;) {
    const int64_t direct_end = std::min(R, std::min(r0 + chunk, r0 * L / I));
    if (direct_end > r0) {
      at::Tensor rows = dst.narrow(0, r0, direct_end - r0);
      rows_fn(r0, direct_end, rows);
      r0 = direct_end;
      continue;
    }
    // Overlap: one row when I < L (from row 1 on the blocks can write in place),
    // else a whole block.
    const int64_t r1 = std::min(R, r0 + (I < L ? 1 : chunk));
    if (!tmp.defined() || tmp.size(0) < r1 - r0) tmp = at::empty({r1 - r0, I}, buf.options());
    at::Tensor rows = tmp.narrow(0, 0, r1 - r0);
    rows_fn(r0, r1, rows);
    dst.narrow(0, r0, r1 - r0).copy_(rows);
    r0 = r1;
  }
  return dst;
}

// Asks the kernel (Linux, madvise) to back the 2 MiB-aligned part of a freshly
// allocated large tensor with transparent huge pages, before its first touch:
// the first writes to a fresh [T, B, G*H] buffer otherwise take one page fault
// per 4 KiB, a tenth of a large layer's time. A no-op elsewhere, for small
// tensors, or when the kernel declines. Returns t.
const at::Tensor& huge_pages(const at::Tensor& t);

// Row-major C[M, N] = A[M, K] · op(B) (+ C when accumulate), with leading
// dimensions; op(B) = Bᵀ for B stored [N, K] when transpose_b, else B stored [K, N].
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, bool transpose_b, float* C, int64_t ldc, bool accumulate);
void gemm(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
          int64_t ldb, bool transpose_b, double* C, int64_t ldc, bool accumulate);

// Elements per task of the pointwise passes: below this a pass stays on one thread.
constexpr int64_t kPointwiseGrain = 2048;

// Calls fn(b, j0, j1) over the row segments of a [B, N] block, in parallel.
template <typename Fn>
inline void parallel_rows(int64_t B, int64_t N, const Fn& fn) {
  if (B == 0 || N == 0) return;
  at::parallel_for(0, B * N, kPointwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin / N; b * N < end; ++b) {
      const int64_t j0 = std::max(begin, b * N) - b * N;
      const int64_t j1 = std::min(end, (b + 1) * N) - b * N;
      fn(b, j0, j1);
    }
  });
}

template <typename T>
inline void fill_zero(T* p, int64_t n) {
  std::fill(p, p + n, T(0));
}

}  // namespace cpu
}  // namespace rnnkit
