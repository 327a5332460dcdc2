// The step kernels of fast_kernels.h for AVX-512 (F, VL, BW, DQ) with FMA: 16
// floats per vector, register tiles of 6 rows x 4 vectors or 8 rows x 3 vectors.
// Only the functions below are compiled for AVX-512; the caller checks that the
// CPU has it before it calls any of them.

#include "fast_kernels.h"

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
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#endif
#include "rnnkit/cells.h"

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about the deliberately undefined operand inside some AVX-512
// intrinsics (_mm512_max_ps and friends).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define RNNKIT_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))

namespace rnnkit {
namespace cpu {
namespace fast {
namespace avx512 {

#include "avx512_vectors_impl.h"

constexpr const char* kName = "avx512";

#include "fast_kernels_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

}  // namespace avx512

const Kernels* kernels_avx512() { return &avx512::kKernels; }

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#else

namespace rnnkit {
namespace cpu {
namespace fast {
const Kernels* kernels_avx512() { return nullptr; }
}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit

#endif
