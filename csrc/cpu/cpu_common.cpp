// The shared pieces of the CPU layer drivers (see cpu_common.h).

#include "cpu_common.h"
#include "bf16_path.h"
#include "../transposed_product.h"

#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>

#include <cstdint>
#include <cstring>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace rnnkit {
namespace cpu {

at::ScalarType compute_dtype(at::ScalarType dtype) {
  return (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
}

at::ScalarType products_dtype(at::ScalarType dtype) {
  return dtype == at::kBFloat16 && fast::bf16_select() ? dtype : compute_dtype(dtype);
}

at::Tensor prepare(const at::Tensor& t, at::ScalarType compute) {
  // No dispatch when there is nothing to do: the cell ops run at small sizes, where each
  // dispatch is a visible part of a call.
  if (t.scalar_type() == compute && t.is_contiguous()) return t;
  return t.to(compute).contiguous();
}

at::Tensor prepare(const std::optional<at::Tensor>& t, at::ScalarType compute) {
  return t.has_value() ? prepare(*t, compute) : at::Tensor();
}

std::vector<int64_t> sequence_lengths(const std::optional<at::Tensor>& lengths, int64_t B,
                                      int64_t T) {
  std::vector<int64_t> out(static_cast<size_t>(B), T);
  if (lengths.has_value() && B > 0) {
    const at::Tensor len = lengths->contiguous();
    std::memcpy(out.data(), len.const_data_ptr<int64_t>(), sizeof(int64_t) * B);
  }
  return out;
}

at::Tensor input_projection(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& bias) {
  const at::Tensor x2d = x.view({x.size(0) * x.size(1), x.size(2)});
  return bias.defined() ? at::addmm(bias, x2d, w_ih.t()) : at::mm(x2d, w_ih.t());
}

at::Tensor previous_hidden(const at::Tensor& output, const at::Tensor& h0,
                           const std::vector<int64_t>& lengths, bool reverse) {
  const int64_t T = output.size(0), B = output.size(1), P = output.size(2);
  at::Tensor prev = at::empty({T, B, P}, output.options());
  if (prev.numel() == 0) return prev;  // and no null pointers into memcpy below
  const auto* out = static_cast<const char*>(output.const_data_ptr());
  const auto* init = static_cast<const char*>(h0.const_data_ptr());
  auto* dst = static_cast<char*>(prev.mutable_data_ptr());
  const int64_t row = P * static_cast<int64_t>(output.element_size());
  const StepOrder order{T, reverse};
  at::parallel_for(0, T * B, 256, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t t = k / B, b = k % B;
      char* d = dst + k * row;
      if (t >= lengths[b]) {
        std::memset(d, 0, row);
      } else if (order.first(t, lengths[b])) {
        std::memcpy(d, init + b * row, row);
      } else {
        std::memcpy(d, out + (order.previous(t) * B + b) * row, row);
      }
    }
  });
  return prev;
}

const at::Tensor& huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const size_t bytes = t.nbytes();
  if (bytes >= 4 * kHuge) {
    const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
    const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t last = (begin + bytes) & ~(kHuge - 1);
    if (last > first) {
      (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
    }
  }
#endif
  return t;
}

at::Tensor hidden_weight_grad(const at::Tensor& dg, const at::Tensor& output, const at::Tensor& h0,
                              const std::vector<int64_t>& lengths, bool reverse) {
  const int64_t T = output.size(0), B = output.size(1), P = output.size(2);
  const bool full = std::all_of(lengths.begin(), lengths.end(), [&](int64_t l) { return l == T; });
  if (!full) {
    return transposed_product(dg, previous_hidden(output, h0, lengths, reverse).view({T * B, P}));
  }
  // Forward: h_{t-1} is output[t-1] for t >= 1 and h0 at t = 0; reverse: output[t+1]
  // for t <= T-2 and h0 at t = T-1.
  const int64_t rows = (T - 1) * B;
  const at::Tensor out2d = output.view({T * B, P});
  const at::Tensor first = dg.narrow(0, reverse ? rows : 0, B);
  const at::Tensor rest = dg.narrow(0, reverse ? 0 : B, rows);
  const at::Tensor rest_h = out2d.narrow(0, reverse ? B : 0, rows);
  if (narrow_side_first(dg, out2d)) {  // dwᵀ, then transposed (transposed_product.h)
    at::Tensor dw_t = h0.t().mm(first);
    if (rows > 0) dw_t.addmm_(rest_h.t(), rest);
    return dw_t.t().contiguous();
  }
  at::Tensor dw = first.t().mm(h0);
  if (rows > 0) dw.addmm_(rest.t(), rest_h);
  return dw;
}

namespace {

// The portable GEMM: ATen's mm on views of the raw buffers. It costs an operator
// dispatch per call, which the fast paths avoid; it serves double precision and
// machines without them.
template <typename T>
void aten_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
               bool transpose_b, T* C, int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  const at::Tensor a = at::from_blob(const_cast<T*>(A), {M, K}, {lda, 1}, opts);
  const at::Tensor b = transpose_b ? at::from_blob(const_cast<T*>(B), {N, K}, {ldb, 1}, opts).t()
                                   : at::from_blob(const_cast<T*>(B), {K, N}, {ldb, 1}, opts);
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  if (accumulate) {
    c.addmm_(a, b);
  } else {
    at::mm_out(c, a, b);
  }
}

}  // namespace

void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, bool transpose_b, float* C, int64_t ldc, bool accumulate) {
  aten_gemm(M, N, K, A, lda, B, ldb, transpose_b, C, ldc, accumulate);
}

void gemm(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
          int64_t ldb, bool transpose_b, double* C, int64_t ldc, bool accumulate) {
  aten_gemm(M, N, K, A, lda, B, ldb, transpose_b, C, ldc, accumulate);
}

}  // namespace cpu
}  // namespace rnnkit
