#pragma once
// The drivers of the int8 layers (quantized_kernels.h): one layer direction of an
// LSTM (with or without a projection), GRU or Elman RNN in float32 with int8
// weights, on the CPU. The contracts of the float drivers of fast_path.h, without
// the reserve: x [T, B, I] contiguous, h (h0 in, h_n out) [B, P], the LSTM's c
// [B, H], out [T, B, P]; every weight int8 [rows, K] with a float scale per row.

#include <cstdint>

#include "quantized_kernels.h"
#include "quantized_pack.h"

namespace rnnkit {
namespace cpu {
namespace fast {

// The kernels the quantized layers use now for products up to K long, where K
// allows the 8-bit ones (max_depth_for): the 8-bit ones where the CPU has
// AVX512-VNNI and the float kernels run AVX-512 (see select() and RNNKIT_CPU_ISA),
// in AMX tiles where the CPU and the OS allow them (and RNNKIT_CPU_ISA is not
// "avx512_vnni"); else the 8-bit AVX-VNNI ones where the CPU has AVX-VNNI (and
// RNNKIT_CPU_ISA is not "avx2"); else AVX2's int16 ones wherever the CPU has AVX2
// and RNNKIT_CPU_ISA is not "generic"; else null: no compiled path.
const QuantizedKernels* quantized_select(int64_t K);

// bias: what the float drivers fold into the input projection (b_ih + b_hh; for
// the GRU b_ih + b_hh with its n part left out, which b_hn adds), or null.
void quantized_lstm_forward(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H,
                            int64_t P, bool reverse, const int64_t* len, const float* x,
                            int64_t I, Int8Matrix w_ih, const float* bias, Int8Matrix w_hh,
                            const Int8Matrix* w_hr, float* h, float* c, float* out);
void quantized_gru_forward(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H,
                           bool reverse, const int64_t* len, const float* x, int64_t I,
                           Int8Matrix w_ih, const float* bias, Int8Matrix w_hh,
                           const float* b_hn, float* h, float* out);
void quantized_rnn_forward(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H,
                           bool reverse, bool relu, const int64_t* len, const float* x,
                           int64_t I, Int8Matrix w_ih, const float* bias, Int8Matrix w_hh,
                           float* h, float* out);

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
