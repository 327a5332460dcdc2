// The bfloat16 step kernels of bf16_kernels.h for AVX-512 with AVX512-BF16: pairs of
// bfloat16 products into float32 sums (vdpbf16ps, 32 multiply-adds per instruction
// against 16 for a float FMA), with the cell math and register tiles of the AVX-512
// float kernels (avx512_vectors_impl.h). Its own file because its target adds
// avx512bf16, which the float kernels must not assume; only the functions below are
// compiled for it, and the caller checks that the CPU has it.
//
// vdpbf16ps reads subnormal bfloat16 inputs as zero and flushes subnormal sums
// to zero (as oneDNN's bfloat16 kernels do); it rounds each sum to nearest even.

#include "bf16_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__clang__) || __GNUC__ >= 10)

#include <immintrin.h>

// Everything from here to the end of the kernels under the target as a whole (see
// fast_kernels_avx512.cpp for why), cells.h's only include first.
#include <cmath>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma")
#endif
#include "rnnkit/cells.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // as in fast_kernels_avx512.cpp
#endif

#define RNNKIT_TARGET \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma")))

namespace rnnkit {
namespace cpu {
namespace fast {
namespace avx512_bf16 {

#include "avx512_vectors_impl.h"

constexpr const char* kName = "avx512_bf16";

// The float kernels' step functions and microkernel (their table goes unused here).
#include "fast_kernels_impl.h"

RNNKIT_TARGET static inline Vec bld(const Bf16Bits* p) {
  return _mm512_castsi512_ps(_mm512_loadu_si512(p));
}
RNNKIT_TARGET static inline Vec bbcast(const Bf16Bits* p) {
  int32_t pair;
  __builtin_memcpy(&pair, p, sizeof(pair));
  return _mm512_castsi512_ps(_mm512_set1_epi32(pair));
}
RNNKIT_TARGET static inline Vec bdot(Vec a, Vec b, Vec c) {
  return _mm512_dpbf16_ps(c, (__m512bh)a, (__m512bh)b);
}
RNNKIT_TARGET void bround_row(const float* x, int64_t K, int64_t Kp, Bf16Bits* q) {
  for (int64_t k = 0; k < K; k += W) {
    const int n = static_cast<int>(K - k < W ? K - k : W);
    const __m256i bits = (__m256i)_mm512_cvtneps_pbh(vldn(x + k, n));
    _mm256_mask_storeu_epi16(q + k, first_n(n), bits);
  }
  for (int64_t k = K; k < Kp; ++k) q[k] = 0;
}

#include "bf16_kernels_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

}  // namespace avx512_bf16

const Bf16Kernels* bf16_kernels_avx512() { return &avx512_bf16::kBf16Kernels; }

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#else

namespace rnnkit {
namespace cpu {
namespace fast {
const Bf16Kernels* bf16_kernels_avx512() { return nullptr; }
}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#endif
