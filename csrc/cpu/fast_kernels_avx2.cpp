// The step kernels of fast_kernels.h for AVX2 with FMA: 8 floats per vector,
// register tiles of 6 rows x 2 vectors for panels of 4 vectors (two column
// passes; up to 3 rows take all 4 at once) and 4 rows x 3 vectors for those of
// 3, within AVX2's 16 vector registers. Single-thread rates of the microkernel
// on a panel in L2 (K = 256, Zen 5 at AVX2, peak ~7.2 G vector FMAs/s): 6x2
// 5.96, the former 2x4 4.03; 4x3 6.64, the former 3x3 5.86.
// Only the functions below are compiled for AVX2; the caller checks that the CPU
// has it before it calls any of them.

#include "fast_kernels.h"
#include "quantized_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

// From here to the end of the kernels, everything is compiled for this instruction
// set: cells.h (the kernels instantiate its gate math with this set's vectors), the
// vector primitives and fast_kernels_impl.h. Under the target as a whole, not only
// function by function: GCC lays out a struct wrapping a vector (the lanes' value
// types) by the options in force where the struct is defined, and a layout made
// without this instruction set is passed between functions in a way they disagree
// on as soon as one of them is not inlined (as in a sanitizer build). cells.h's only
// include comes first, outside the target.
#include <cmath>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#include "rnnkit/cells.h"

#define RNNKIT_TARGET __attribute__((target("avx2,fma")))

namespace rnnkit {
namespace cpu {
namespace fast {
namespace avx2 {

#include "avx2_vectors_impl.h"

constexpr const char* kName = "avx2";

// Integers, for the int8 kernels (quantized_kernels_impl.h): int16 levels in pairs
// (vpmaddwd), plain AVX2 having no 8-bit product that cannot saturate (AVX-VNNI's:
// quantized_kernels_avx_vnni.cpp).
using Level = int16_t;
RNNKIT_TARGET static inline IVec ild(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
RNNKIT_TARGET static inline IVec ibcast(const int16_t* p) {
  int32_t pair;
  __builtin_memcpy(&pair, p, sizeof(pair));
  return _mm256_set1_epi32(pair);
}
RNNKIT_TARGET static inline IVec idot(IVec a, IVec b, IVec c) {
  return _mm256_add_epi32(c, _mm256_madd_epi16(a, b));
}
RNNKIT_TARGET static inline void ist_levels(int16_t* p, Vec v, int n) {
  const __m256i i = _mm256_cvtps_epi32(v);
  const __m128i levels = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  if (n == W) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), levels);
  } else {
    alignas(16) int16_t lanes[W];
    _mm_store_si128(reinterpret_cast<__m128i*>(lanes), levels);
    __builtin_memcpy(p, lanes, sizeof(int16_t) * static_cast<size_t>(n));
  }
}

#include "fast_kernels_impl.h"
constexpr int kKAlign = 2;
constexpr int kIdotScratch = 1;  // vpmaddwd's products, before the add
constexpr void (*kBeginThread)() = nullptr;
#include "quantized_kernels_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

}  // namespace avx2

const Kernels* kernels_avx2() { return &avx2::kKernels; }
const QuantizedKernels* quantized_kernels_avx2() { return &avx2::kQuantizedKernels; }

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#else

namespace rnnkit {
namespace cpu {
namespace fast {
const Kernels* kernels_avx2() { return nullptr; }
const QuantizedKernels* quantized_kernels_avx2() { return nullptr; }
}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#endif
