#pragma once
// The step kernels of the int8 layers (rnnkit.quantize): the float32 step kernels of
// fast_kernels.h (the same cell math, reserve-free, the same handling of padded
// steps) with an integer product in place of the float one. Plain C++, included by
// the instruction-set files and by the drivers (quantized_path.h).
//
// The weights are int8 with one float scale per output row (W ≈ q_w * scale_w).
// The operand of each product, the layer's input or its running state, is
// quantized a row at a time when it is known (the input before the step loop, the
// state at the start of each step): symmetric levels in [-Q, Q] with one scale per
// row. The products are exact int32 sums of level x weight products, the tile is
// float(sum) * (scale_row * scale_w), and the rest is float32 as in the float
// kernels. Two kinds of kernels, by what the CPU multiplies fastest:
//   int16 levels (AVX2): Q as fine as int32 sums of K products allow (levels_for),
//     pairs of int16 x int8 products (vpmaddwd);
//   8-bit levels (AVX512-VNNI): Q = 127, stored as level + 128 in a uint8, quads of
//     uint8 x int8 products (vpdpbusd, twice the products per instruction), the
//     offset taken back out per column: sum (q + 128) w = sum q w + 128 sum w;
//   the same 8-bit levels and panels in AMX tiles (tdpbusd, 16 x 16 x 64 products
//     per instruction) where the CPU has AMX-INT8, and in AVX-VNNI's 8-lane
//     vpdpbusd on AVX2 CPUs that have it: the same integers.
// The integers do not depend on the number of threads, so neither do the results
// (up to the float math of the cells); they depend on the kind of kernels.

#include <algorithm>
#include <cstdint>
#include <limits>

#include "fast_kernels.h"

namespace rnnkit {
namespace cpu {
namespace fast {

// The largest level Q of the quantized operand of a K-long product: 127 for the
// 8-bit kernels (depth 4); for the int16 ones (depth 2), as large as K products of
// |level| <= Q with weights |q_w| <= 128 (torch's int8 weights may hold -128) sum
// without overflowing int32 allow, and Q fits int16.
inline int32_t levels_for(int64_t K, int depth = 2) {
  if (depth == 4) return 127;
  const int64_t bound = (int64_t{1} << 31) - 1;
  return static_cast<int32_t>(std::min<int64_t>(32767, bound / (128 * std::max<int64_t>(1, K))));
}

// The most K a kernel of `depth` takes: the int32 sums of the 8-bit kernels,
// K products of (level + 128) <= 255 with |q_w| <= 128, must not overflow; the
// int16 ones need levels_for(K) >= 1.
inline int64_t max_depth_for(int depth) {
  const int64_t bound = (int64_t{1} << 31) - 1;
  return depth == 4 ? bound / (255 * 128) : bound / 128;
}

// A quantized operand: row b is levels q[b*Kp .. b*Kp + K), the value of level l
// l * scale[b], Kp K rounded up to the kernels' alignment (the products take k in
// pairs, quads or AMX tiles of 64) with level 0 up to Kp. The levels are int16_t
// for depth 2 and uint8_t (level + 128) for depth 4. AMX's kernels read whole
// tiles of 16 rows: the rows' memory goes on for kTileRows rows past the last.
struct QuantizedRows {
  const void* q;
  const float* scale;
  int64_t Kp;
};

// int8 weights in the panels of fast_kernels.h, with `depth` rows k interleaved:
// panel jb holds Kp / depth groups of gates*U columns, column c's `depth` weights
// side by side (Kp * gates * U bytes per panel); scale holds the per-row scales of
// the weights in the same column order, gates*U floats per block, zero past H;
// offset (depth 4 only, else null) 128 * the sum of each column's weights, in the
// same order.
struct QuantizedPanels {
  const int8_t* packed;
  const float* scale;
  const int32_t* offset;
  int64_t Kp;
};

// The kernels of one instruction set. The float args carry everything but the
// product: their `packed` (and the projection's `x`) are not read, the product
// taking the rows `in` and the panels `w` instead.
struct QuantizedKernels {
  const char* name;
  int width;  // floats per vector: the units of a block (see fast_kernels.h)
  int depth;  // values of k per weight group: 2 (int16 levels) or 4 (8-bit levels)
  int align;  // K padded to a multiple of this (depth, or AMX's tile depth of 64)
  // Called by each thread before its first kernel of a layer call, or null (AMX
  // loads its tile configuration there).
  void (*begin_thread)();
  // Quantizes one row of K floats into levels q[0, Kp) of [-Q, Q] (level 0 past K),
  // Q = levels_for(K, depth), and returns its scale: max |x| / Q; 0 for a row of
  // zeros (or one below 1e-30), NaN when the row holds a NaN or an infinity (whose
  // results are then NaN, as they would be in float). q: int16 levels for depth 2,
  // uint8 ones (level + 128) for depth 4.
  float (*quantize_row)(const float* x, int64_t K, int64_t Kp, void* q);
  void (*lstm_forward)(const LstmForwardArgsOf<float>&, const QuantizedRows& in,
                       const QuantizedPanels& w, int64_t t, const float* h_prev, float* h_next,
                       int64_t block);
  void (*gru_forward)(const GruForwardArgsOf<float>&, const QuantizedRows& in,
                      const QuantizedPanels& w, int64_t t, const float* h_prev, float* h_next,
                      int64_t block);
  void (*rnn_forward)(const RnnForwardArgsOf<float>&, const QuantizedRows& in,
                      const QuantizedPanels& w, int64_t t, const float* h_prev, float* h_next,
                      int64_t block);
  // in: the rows of h_full.
  void (*lstm_project)(const LstmProjectArgsOf<float>&, const QuantizedRows& in,
                       const QuantizedPanels& w, int64_t t, const float* h_prev, float* h_next,
                       int64_t block);
  // Rows [r0, r1) of the input projection (in: all rows of the input) for one block.
  void (*projection)(const ProjectionArgsOf<float>&, const QuantizedRows& in,
                     const QuantizedPanels& w, int64_t r0, int64_t r1, int64_t block);
};

// Null when this build or this compiler lacks the instruction set.
const QuantizedKernels* quantized_kernels_avx2();
const QuantizedKernels* quantized_kernels_avx512_vnni();
const QuantizedKernels* quantized_kernels_amx();
const QuantizedKernels* quantized_kernels_avx_vnni();

// The rows of an AMX tile: the padding of every quantized operand's rows.
constexpr int64_t kTileRows = 16;

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
