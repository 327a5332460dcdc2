#pragma once
// The drivers of the bfloat16 layers (bf16_kernels.h): one layer direction of an
// LSTM (with or without a projection), GRU or Elman RNN with bfloat16 input and
// weights on the CPU, their state, cell math and outputs in float32. The contracts
// of the float drivers of fast_path.h: x [T, B, I] and the weights [rows, K]
// contiguous bfloat16 (as bits), h (h0 in, h_n out) [B, P], the LSTM's c [B, H],
// out [T, B, P], the reserve as the float drivers write it (or null); bias: what
// the float drivers fold into the input projection, in float32, or null.

#include <cstdint>

#include "bf16_kernels.h"

namespace rnnkit {
namespace cpu {
namespace fast {

// The kernels the bfloat16 layers use now: AVX512-BF16's where the CPU has it and
// the float kernels run AVX-512 (see select() and RNNKIT_CPU_ISA), else null (the
// layers then compute in float32 on the float kernels, as on other CPUs).
const Bf16Kernels* bf16_select();

void bf16_lstm_forward(const Bf16Kernels& k, int64_t T_, int64_t B, int64_t H, int64_t P,
                       bool reverse, const int64_t* len, const Bf16Bits* x, int64_t I,
                       const Bf16Bits* w_ih, const float* bias, const Bf16Bits* w_hh,
                       const Bf16Bits* w_hr, float* h, float* c, float* out, float* reserve);
void bf16_gru_forward(const Bf16Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse,
                      const int64_t* len, const Bf16Bits* x, int64_t I, const Bf16Bits* w_ih,
                      const float* bias, const Bf16Bits* w_hh, const float* b_hn, float* h,
                      float* out, float* reserve);
void bf16_rnn_forward(const Bf16Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse,
                      bool relu, const int64_t* len, const Bf16Bits* x, int64_t I,
                      const Bf16Bits* w_ih, const float* bias, const Bf16Bits* w_hh, float* h,
                      float* out);

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
