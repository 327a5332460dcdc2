#pragma once
// The step kernels of the bfloat16 layers: the float32 step kernels of
// fast_kernels.h (the same cell math, state, reserve and handling of padded
// steps, all in float32) with a bfloat16 product in place of the float one.
// Plain C++, included by the instruction-set file and by the drivers (bf16_path.h).
//
// The weights stay the user's bfloat16 values, packed in the panels of
// fast_kernels.h with each two rows k, k + 1 side by side (pairs); the operand
// of each product, the layer's input or its running state, is a bfloat16 row
// (the input as given, the float state rounded to nearest even at the start of
// each step, as torch.nn's bfloat16 layers store it). Each vdpbf16ps (AVX512-BF16)
// adds the two products of a pair into a float32 sum: twice the multiply-adds of
// a float32 FMA per instruction, half the bytes of weights per step. The sums
// are taken over k in the same order whatever the split among threads, so the
// results do not depend on the number of threads.

#include <cstdint>

#include "fast_kernels.h"

namespace rnnkit {
namespace cpu {
namespace fast {

// bfloat16 values as their bits (the kernels' files include no torch header).
using Bf16Bits = uint16_t;

// An operand: row b is q[b*Kp .. b*Kp + K), Kp = K rounded up to even, zero in
// the padding.
struct Bf16Rows {
  const Bf16Bits* q;
  int64_t Kp;
};

// The panels of fast_kernels.h in pairs: panel jb holds Kp / 2 groups of gates*U
// columns, column c's two weights (k, k + 1) side by side (Kp * gates * U values
// per panel), zero for units past H and for k past K.
struct Bf16Panels {
  const Bf16Bits* packed;
  int64_t Kp;
};

// The kernels of one instruction set. The float args carry everything but the
// product: their `packed` (and the projection's `x`) are not read, the product
// taking the rows `in` and the panels `w` instead.
struct Bf16Kernels {
  const char* name;
  int width;  // floats per vector: the units of a block (see fast_kernels.h)
  // One row of K floats as bfloat16 (rounded to nearest even; NaN stays NaN),
  // zeros from K to Kp.
  void (*round_row)(const float* x, int64_t K, int64_t Kp, Bf16Bits* q);
  void (*lstm_forward)(const LstmForwardArgsOf<float>&, const Bf16Rows& in, const Bf16Panels& w,
                       int64_t t, const float* h_prev, float* h_next, int64_t block);
  void (*gru_forward)(const GruForwardArgsOf<float>&, const Bf16Rows& in, const Bf16Panels& w,
                      int64_t t, const float* h_prev, float* h_next, int64_t block);
  void (*rnn_forward)(const RnnForwardArgsOf<float>&, const Bf16Rows& in, const Bf16Panels& w,
                      int64_t t, const float* h_prev, float* h_next, int64_t block);
  // in: the rows of h_full.
  void (*lstm_project)(const LstmProjectArgsOf<float>&, const Bf16Rows& in, const Bf16Panels& w,
                       int64_t t, const float* h_prev, float* h_next, int64_t block);
  // Rows [r0, r1) of the input projection (in: all rows of the input) for one block.
  void (*projection)(const ProjectionArgsOf<float>&, const Bf16Rows& in, const Bf16Panels& w,
                     int64_t r0, int64_t r1, int64_t block);
};

// Null when this build or this compiler lacks AVX512-BF16 (whether the CPU has it
// is checked by the caller).
const Bf16Kernels* bf16_kernels_avx512();

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
