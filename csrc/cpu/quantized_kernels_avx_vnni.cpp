// The int8 step kernels of quantized_kernels.h for AVX2 with AVX-VNNI (the VEX form
// of vpdpbusd: Intel's cores without AVX-512, Alder Lake on): the 8-bit levels and
// panels of the AVX-512 VNNI kernels in 8-lane vectors, 32 uint8 x int8 products
// per instruction against 8 float multiply-adds, with the cell math and register
// tiles of the AVX2 float kernels (avx2_vectors_impl.h). Its own file because its
// target adds avxvnni; only the functions below are compiled for it, and the
// caller checks that the CPU has it.

#include "fast_kernels.h"
#include "quantized_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11

#include <immintrin.h>

// Everything from here to the end of the kernels under the target as a whole (see
// fast_kernels_avx2.cpp for why), cells.h's only include first.
#include <cmath>
#pragma GCC push_options
#pragma GCC target("avx2,fma,avxvnni")
#include "rnnkit/cells.h"

#define RNNKIT_TARGET __attribute__((target("avx2,fma,avxvnni")))

namespace rnnkit {
namespace cpu {
namespace fast {
namespace avx_vnni {

#include "avx2_vectors_impl.h"

constexpr const char* kName = "avx2_vnni";

// Integers: 8-bit levels stored as level + 128, as in avx512_levels_impl.h.
using Level = uint8_t;
RNNKIT_TARGET static inline IVec ild(const int8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
RNNKIT_TARGET static inline IVec ibcast(const uint8_t* p) {
  int32_t quad;
  __builtin_memcpy(&quad, p, sizeof(quad));
  return _mm256_set1_epi32(quad);
}
RNNKIT_TARGET static inline IVec idot(IVec a, IVec b, IVec c) {
  return _mm256_dpbusd_avx_epi32(c, a, b);
}
RNNKIT_TARGET static inline void isub_offset(int32_t* p, const int32_t* o) {
  ist(p, _mm256_sub_epi32(iload(p), iload(o)));
}
RNNKIT_TARGET static inline void ist_levels(uint8_t* p, Vec v, int n) {
  // level + 128 in [1, 255]: the saturating packs keep it.
  const __m256i i = _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(128));
  const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  const __m128i bytes = _mm_packus_epi16(words, words);
  if (n == W) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), bytes);
  } else {
    alignas(16) uint8_t lanes[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(lanes), bytes);
    __builtin_memcpy(p, lanes, static_cast<size_t>(n));
  }
}

// The float kernels' step functions and microkernel (their table goes unused here).
#include "fast_kernels_impl.h"
constexpr int kKAlign = 4;
constexpr int kIdotScratch = 0;
constexpr void (*kBeginThread)() = nullptr;
#include "quantized_kernels_impl.h"
#pragma GCC pop_options

}  // namespace avx_vnni

const QuantizedKernels* quantized_kernels_avx_vnni() { return &avx_vnni::kQuantizedKernels; }

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#else

namespace rnnkit {
namespace cpu {
namespace fast {
const QuantizedKernels* quantized_kernels_avx_vnni() { return nullptr; }
}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#endif
