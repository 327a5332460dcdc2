#pragma once
// The float32 step kernels of the CPU layers, compiled once per instruction set
// (fast_kernels_avx512.cpp, fast_kernels_avx2.cpp from fast_kernels_impl.h) and
// picked at run time (fast_path.h). This header is plain C++: it is included
// both by the instruction-set files and by the drivers.
//
// Each kernel computes one block of hidden units of one step for every sequence
// of the batch: the product of the running state with a panel of packed weights
// (a register-blocked FMA microkernel) directly followed by the cell math on the
// result, so that a step is one pass over the weights and one over the state.
// A block is the unit of work the drivers split among threads; every element is
// computed by one thread, summing over k in the same order whatever the split,
// so the results do not depend on the number of threads.
//
// Packed panels (see pack_panels in fast_path.cpp): for block jb of U units,
// panel jb is K rows of (gates × U) floats, row k holding W[g*H + jb*U + u][k] for
// g, then u; units past H are zero. The forward packs W_hh with U = the vector
// width and one slot per gate (LSTM 4, GRU 3), or U = 4 vector widths for the
// Elman RNN, and W_ih the same way for the input projection (computed in the step
// loop, a chunk of steps at a time, by the worker that owns the block); the
// backward packs W_hhᵀ (one "gate", U = 4 vector widths), K = G*H.

#include <cstdint>

namespace rnnkit {
namespace cpu {
namespace fast {

// The widest vector the kernels of a level use, in floats, and the units of a
// block of the plain (one-gate) panels: kPlainVectors vectors.
constexpr int kPlainVectors = 4;

struct LstmForwardArgs {
  int64_t B, H;            // K = H (no projection on this path)
  const float* packed;     // gate panels of W_hh
  const float* gx;         // input projection with both biases, [*, B, 4H] from step gx_t0
  int64_t gx_t0;
  const int64_t* len;      // [B]
  float* c;                // [B, H] running cell state
  float* out;              // [T, B, H]
  float* reserve;          // [T, B, 5H], or null when not wanted
};

struct GruForwardArgs {
  int64_t B, H;
  const float* packed;  // gate panels of W_hh
  const float* gx;      // input projection with b_ih and b_hr, b_hz, [*, B, 3H] from step gx_t0
  int64_t gx_t0;
  const float* b_hn;    // [H] or null
  const int64_t* len;
  float* out;      // [T, B, H]
  float* reserve;  // [T, B, 4H], or null when not wanted
};

struct RnnForwardArgs {
  int64_t B, H;
  bool relu;
  const float* packed;  // plain panels of W_hh
  const float* gx;      // input projection with both biases, [*, B, H] from step gx_t0
  int64_t gx_t0;
  const int64_t* len;
  float* out;  // [T, B, H]
};

// The gradient of the output, [T, B, H] with row strides (a gradient expanded
// from a sum need not be copied): element (t, b, j) is
// data[t*stride_t + b*stride_b + (broadcast ? 0 : j)].
struct GradOut {
  const float* data;
  int64_t stride_t, stride_b;
  bool broadcast;
};

// The backward kernels run, for their block, first the product of the previous
// iteration's gate gradients (step t_prev, -1 for none) with W_hh, added into dh
// for the sequences for which t_prev is real, then the pointwise pass of step t
// (-1 for none), which writes that step's gate gradients and leaves in dh the
// part of the gradient of h_{t-1} that does not go through W_hh.
struct LstmBackwardArgs {
  int64_t T, B, H;
  bool reverse;
  const float* packed;    // plain panels of W_hhᵀ, K = 4H
  GradOut grad_out;
  const float* reserve;   // [T, B, 5H]
  const float* c0;        // [B, H]
  const int64_t* len;
  float* dh;      // [B, H]
  float* dc;      // [B, H]
  float* dgates;  // [T, B, 4H]
};

struct GruBackwardArgs {
  int64_t T, B, H;
  bool reverse;
  const float* packed;   // plain panels of W_hhᵀ, K = 3H
  GradOut grad_out;
  const float* reserve;  // [T, B, 4H]
  const float* out;      // [T, B, H] the forward's output: h_{t-1} is read from it
  const float* h0;       // [B, H]
  const int64_t* len;
  float* dh;      // [B, H]
  float* dgates;  // [T, B, 4H] (r, z, hn, xn)
};

struct RnnBackwardArgs {
  int64_t B, H;
  bool relu;
  const float* packed;    // plain panels of W_hhᵀ, K = H
  GradOut grad_out;
  const float* out;       // [T, B, H]
  const int64_t* len;
  float* dh;    // [B, H]
  float* dpre;  // [T, B, H]
};

// The input projection y = x · W_ihᵀ + bias for a run of rows: the columns of
// one block of W_ih's panels, packed like W_hh's (gate panels of `gates` gates for
// the LSTM and GRU, plain panels for the Elman RNN, gates = 1).
struct ProjectionArgs {
  int64_t N, K, H;      // y rows have N = gates*H columns, x rows K
  int gates;            // 3 or 4 (gate panels) or 1 (plain panels)
  const float* packed;  // panels of W_ih
  const float* x;       // [rows, K]
  const float* bias;    // [N] or null
  float* y;             // [rows, N]
};

// The pointwise pass of one step of a cell op (cell_cpu.cpp) over rows [b0, b1) of
// the batch: the products are given, the kernel adds b_hh where it was not added
// yet, applies cells.h's math and writes the new state (and the reserve).
template <typename T>
struct CellStepArgsOf {
  int64_t H;
  bool relu;        // RNN: relu, else tanh
  const T* gates;   // [B, G*H] x·W_ihᵀ + b_ih, with h·W_hhᵀ added for LSTM and RNN
  const T* gh;      // GRU: [B, 3H] h·W_hhᵀ + b_hh; null otherwise
  const T* b_hh;    // LSTM, RNN: [G*H] or null (no bias); null for GRU
  const T* h_prev;  // [B, H] (GRU)
  const T* c_prev;  // [B, H] (LSTM)
  T* h;             // [B, H] the new state
  T* c;             // [B, H] (LSTM)
  T* reserve;       // GRU [B, 4H] r, z, n, hn; LSTM [B, 5H] i, f, g, o, c; or null
};
using CellStepArgs = CellStepArgsOf<float>;
using CellStepArgsF64 = CellStepArgsOf<double>;

// The LSTM cell's backward pass: the gate gradients from those of h' and c'.
template <typename T>
struct LstmCellGradArgsOf {
  int64_t H;
  const T* dh;       // [B, H] gradient of h'
  const T* dc;       // [B, H] gradient of c'
  const T* reserve;  // [B, 5H] i, f, g, o, c'
  const T* c_prev;   // [B, H]
  T* dgates;         // [B, 4H] gradients of the pre-activations
  T* dc_prev;        // [B, H]
};
using LstmCellGradArgs = LstmCellGradArgsOf<float>;
using LstmCellGradArgsF64 = LstmCellGradArgsOf<double>;

// One instruction set's kernels. h_prev/h_next: the running state before and
// after step t ([B, H]; the forward alternates two buffers).
struct Kernels {
  const char* name;
  int width;  // floats per vector
  void (*lstm_forward)(const LstmForwardArgs&, int64_t t, const float* h_prev, float* h_next,
                       int64_t block);
  void (*gru_forward)(const GruForwardArgs&, int64_t t, const float* h_prev, float* h_next,
                      int64_t block);
  void (*rnn_forward)(const RnnForwardArgs&, int64_t t, const float* h_prev, float* h_next,
                      int64_t block);
  void (*lstm_backward)(const LstmBackwardArgs&, int64_t t_prev, int64_t t, int64_t block);
  void (*gru_backward)(const GruBackwardArgs&, int64_t t_prev, int64_t t, int64_t block);
  void (*rnn_backward)(const RnnBackwardArgs&, int64_t t_prev, int64_t t, int64_t block);
  // Rows [r0, r1) of the projection for one block of kPlainVectors vectors of columns.
  void (*projection)(const ProjectionArgs&, int64_t r0, int64_t r1, int64_t block);
  // The pointwise passes of the cell ops' forward.
  void (*lstm_cell)(const CellStepArgs&, int64_t b0, int64_t b1);
  void (*gru_cell)(const CellStepArgs&, int64_t b0, int64_t b1);
  void (*rnn_cell)(const CellStepArgs&, int64_t b0, int64_t b1);
  // The same passes in double precision (cell_kernels_f64_impl.h).
  void (*lstm_cell_f64)(const CellStepArgsF64&, int64_t b0, int64_t b1);
  void (*gru_cell_f64)(const CellStepArgsF64&, int64_t b0, int64_t b1);
  void (*rnn_cell_f64)(const CellStepArgsF64&, int64_t b0, int64_t b1);
  void (*lstm_cell_backward)(const LstmCellGradArgs&, int64_t b0, int64_t b1);
  void (*lstm_cell_backward_f64)(const LstmCellGradArgsF64&, int64_t b0, int64_t b1);
};

// Null when this build or this compiler lacks the instruction set (whether the
// CPU has it is checked by the caller).
const Kernels* kernels_avx512();
const Kernels* kernels_avx2();

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
