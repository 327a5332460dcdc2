#pragma once
// The step kernels of the int8 layers (rnnkit.quantize): the float32 step kernels of
// fast_kernels.h (the same cell math, reserve-free, the same handling of padded
// steps) with an integer product in place of the float one. Plain C++, included by
// the instruction-set files and by the drivers (quantized_path.h).
//
// The weights are int8 with one float scale per output row (W ≈ q_w * scale_w).
// The operand of each product, the layer's input or its running state, is
// quantized a row at a time when it is known (the input before the step loop, the
// state at the start of each step): symmetric int16 levels in [-Q, Q] with one
// scale per row, Q as fine as int32 sums of K products allow (levels_for). The
// products are exact int32 sums of int16 x int8 pairs (vpmaddwd), the tile is
// float(sum) * (scale_row * scale_w), and the rest is float32 as in the float
// kernels. The integers do not depend on the instruction set or on the number of
// threads, so neither do the results (up to the float math of the cells).

#include <algorithm>
#include <cstdint>

#include "fast_kernels.h"

namespace rnnkit {
namespace cpu {
namespace fast {

// The largest level Q of the quantized operand of a K-long product: K products of
// |level| <= Q with weights |q_w| <= 128 (torch's int8 weights may hold -128) sum
// without overflowing int32, and Q fits int16.
inline int32_t levels_for(int64_t K) {
  const int64_t bound = (int64_t{1} << 31) - 1;
  return static_cast<int32_t>(std::min<int64_t>(32767, bound / (128 * std::max<int64_t>(1, K))));
}

// A quantized operand: row b is levels q[b*Kp .. b*Kp + K) (zeros up to Kp, K
// rounded up to even: the products take k in pairs) and the value of level l is
// l * scale[b].
struct QuantizedRows {
  const int16_t* q;
  const float* scale;
  int64_t Kp;
};

// int8 weights in the panels of fast_kernels.h, with rows k and k + 1 interleaved:
// panel jb holds Kp / 2 pair rows of gates*U columns, column c's two weights side by
// side (Kp * gates * U bytes per panel); scale holds the per-row scales of the
// weights in the same column order, gates*U floats per block, zero past H.
struct QuantizedPanels {
  const int8_t* packed;
  const float* scale;
  int64_t Kp;
};

// The kernels of one instruction set. The float args carry everything but the
// product: their `packed` (and the projection's `x`) are not read, the product
// taking the rows `in` and the panels `w` instead.
struct QuantizedKernels {
  const char* name;
  int width;  // floats per vector: the units of a block (see fast_kernels.h)
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

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
