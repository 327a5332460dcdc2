// The int8 step kernels of quantized_kernels.h for AVX-512 with VNNI: 8-bit levels
// in quads of uint8 x int8 products (vpdpbusd, 64 per instruction against 16
// float multiply-adds), with the cell math and register tiles of the AVX-512 float
// kernels (avx512_vectors_impl.h). Its own file because its target adds
// avx512vnni, which the float kernels must not assume; only the functions below
// are compiled for it, and the caller checks that the CPU has it.

#include "fast_kernels.h"
#include "quantized_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

// Everything from here to the end of the kernels under the target as a whole (see
// fast_kernels_avx512.cpp for why), cells.h's only include first.
#include <cmath>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni,avx2,fma")
#endif
#include "rnnkit/cells.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // as in fast_kernels_avx512.cpp
#endif

#define RNNKIT_TARGET \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni,avx2,fma")))

namespace rnnkit {
namespace cpu {
namespace fast {
namespace avx512_vnni {

#include "avx512_vectors_impl.h"

constexpr const char* kName = "avx512_vnni";

#include "avx512_levels_impl.h"

// The float kernels' step functions and microkernel (their table goes unused here).
#include "fast_kernels_impl.h"
constexpr int kKAlign = 4;
constexpr int kIdotScratch = 0;
constexpr void (*kBeginThread)() = nullptr;
#include "quantized_kernels_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

}  // namespace avx512_vnni

const QuantizedKernels* quantized_kernels_avx512_vnni() {
  return &avx512_vnni::kQuantizedKernels;
}

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#else

namespace rnnkit {
namespace cpu {
namespace fast {
const QuantizedKernels* quantized_kernels_avx512_vnni() { return nullptr; }
}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#endif
