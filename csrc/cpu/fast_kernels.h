#pragma once
// The step kernels of the CPU layers, float32 and float64, compiled once per instruction set
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
// panel jb is K rows of (gates × U) elements, row k holding W[g*H + jb*U + u][k] for
// g, then u; units past H are zero. The forward packs W_hh with U = the vector
// width and one slot per gate (LSTM 4, GRU 3), or U = 4 vector widths for the
// Elman RNN, and W_ih the same way for the input projection (computed in the step
// loop, a chunk of steps at a time, by the worker that owns the block); the
// backward packs W_hhᵀ (one "gate", U = 4 vector widths), K = G*H.

#include <cstdint>

namespace rnnkit {
namespace cpu {
namespace fast {

// The units of a block of the plain (one-gate) panels: kPlainVectors vectors.
constexpr int kPlainVectors = 4;

// One past the last of the B sequences (lengths len) for which step t is real: the
// rows after it are padded at step t. The sequences of a PackedSequence come longest
// first, so there all of its padded rows are: a step computes only its first
// live_rows rows, as torch.nn's batch sizes do.
inline int64_t live_rows(const int64_t* len, int64_t B, int64_t t) {
  int64_t live = B;
  while (live > 0 && t >= len[live - 1]) --live;
  return live;
}

// Calls project(r0, r1) for runs of rows that cover the real rows of the n steps
// t0, t0 + 1, ... (of B rows each, one after the other): one run over all of them when
// no row is padded, the rows after each step's live_rows left out otherwise.
template <typename Fn>
void live_row_runs(const int64_t* len, int64_t B, int64_t t0, int64_t n, const Fn& project) {
  int64_t begin = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t live = live_rows(len, B, t0 + i);
    if (live == B) continue;
    if (i * B + live > begin) project(begin, i * B + live);
    begin = (i + 1) * B;
  }
  if (n * B > begin) project(begin, n * B);
}

template <typename T>
struct LstmForwardArgsOf {
  int64_t B, H;
  int64_t P;           // width of the running h: H, or proj_size with a projection
  const T* packed;     // gate panels of W_hh, K = P
  const T* gx;         // input projection with both biases, [*, B, 4H] from step gx_t0
  int64_t gx_t0;
  const int64_t* len;  // [B]
  T* c;                // [B, H] running cell state
  T* out;              // [T, B, H]; unused with a projection
  T* reserve;          // [T, B, 5H], or null when not wanted
  // With a projection: [B, H], o * tanh(c) of the step's real rows, which
  // lstm_project then multiplies by W_hrᵀ; h_next, out and the padded rows'
  // carried state are lstm_project's to write. Null without one.
  T* h_full;
};

// The projection of an LSTM with proj_size: h = h_full · W_hrᵀ for one block of
// kPlainVectors vectors of its P units, written to out [T, B, P] and h_next for
// the real rows; padded rows get zeros out and keep h_prev.
template <typename T>
struct LstmProjectArgsOf {
  int64_t B, H, P;
  const T* packed;  // plain panels of W_hr, K = H
  const int64_t* len;
  const T* h_full;  // [B, H]
  T* out;           // [T, B, P]
};

template <typename T>
struct GruForwardArgsOf {
  int64_t B, H;
  const T* packed;  // gate panels of W_hh
  const T* gx;      // input projection with b_ih and b_hr, b_hz, [*, B, 3H] from step gx_t0
  int64_t gx_t0;
  const T* b_hn;    // [H] or null
  const int64_t* len;
  T* out;      // [T, B, H]
  T* reserve;  // [T, B, 4H], or null when not wanted
};

template <typename T>
struct RnnForwardArgsOf {
  int64_t B, H;
  bool relu;
  const T* packed;  // plain panels of W_hh
  const T* gx;      // input projection with both biases, [*, B, H] from step gx_t0
  int64_t gx_t0;
  const int64_t* len;
  T* out;  // [T, B, H]
};

// The gradient of the output, [T, B, H] with row strides (a gradient expanded
// from a sum need not be copied): element (t, b, j) is
// data[t*stride_t + b*stride_b + (broadcast ? 0 : j)].
template <typename T>
struct GradOutOf {
  const T* data;
  int64_t stride_t, stride_b;
  bool broadcast;
};

// The backward kernels run, for their block, first the product of the previous
// iteration's gate gradients (step t_prev, -1 for none) with W_hh, added into dh
// for the sequences for which t_prev is real, then the pointwise pass of step t
// (-1 for none), which writes that step's gate gradients and leaves in dh the
// part of the gradient of h_{t-1} that does not go through W_hh.
template <typename T>
struct LstmBackwardArgsOf {
  int64_t T_, B, H;
  bool reverse;
  const T* packed;    // plain panels of W_hhᵀ, K = 4H
  GradOutOf<T> grad_out;
  const T* reserve;   // [T, B, 5H]
  const T* c0;        // [B, H]
  const int64_t* len;
  T* dh;      // [B, H]
  T* dc;      // [B, H]
  T* dgates;  // [T, B, 4H]
};

template <typename T>
struct GruBackwardArgsOf {
  int64_t T_, B, H;
  bool reverse;
  const T* packed;   // plain panels of W_hhᵀ, K = 3H
  GradOutOf<T> grad_out;
  const T* reserve;  // [T, B, 4H]
  const T* out;      // [T, B, H] the forward's output: h_{t-1} is read from it
  const T* h0;       // [B, H]
  const int64_t* len;
  T* dh;      // [B, H]
  T* dgates;  // [T, B, 4H] (r, z, hn, xn)
};

template <typename T>
struct RnnBackwardArgsOf {
  int64_t B, H;
  bool relu;
  const T* packed;    // plain panels of W_hhᵀ, K = H
  GradOutOf<T> grad_out;
  const T* out;       // [T, B, H]
  const int64_t* len;
  T* dh;    // [B, H]
  T* dpre;  // [T, B, H]
};

// The input projection y = x · W_ihᵀ + bias for a run of rows: the columns of
// one block of W_ih's panels, packed like W_hh's (gate panels of `gates` gates for
// the LSTM and GRU, plain panels for the Elman RNN, gates = 1).
template <typename T>
struct ProjectionArgsOf {
  int64_t N, K, H;      // y rows have N = gates*H columns, x rows K
  int gates;            // 3 or 4 (gate panels) or 1 (plain panels)
  const T* packed;      // panels of W_ih
  const T* x;           // [rows, K]
  const T* bias;        // [N] or null
  T* y;                 // [rows, N]
};

// The layer kernels of one element type, float or double. h_prev/h_next: the
// running state before and after step t ([B, H]; the forward alternates two
// buffers).
template <typename T>
struct LayerKernels {
  void (*lstm_forward)(const LstmForwardArgsOf<T>&, int64_t t, const T* h_prev, T* h_next,
                       int64_t block);
  void (*gru_forward)(const GruForwardArgsOf<T>&, int64_t t, const T* h_prev, T* h_next,
                      int64_t block);
  void (*rnn_forward)(const RnnForwardArgsOf<T>&, int64_t t, const T* h_prev, T* h_next,
                      int64_t block);
  void (*lstm_project)(const LstmProjectArgsOf<T>&, int64_t t, const T* h_prev, T* h_next,
                       int64_t block);
  void (*lstm_backward)(const LstmBackwardArgsOf<T>&, int64_t t_prev, int64_t t, int64_t block);
  void (*gru_backward)(const GruBackwardArgsOf<T>&, int64_t t_prev, int64_t t, int64_t block);
  void (*rnn_backward)(const RnnBackwardArgsOf<T>&, int64_t t_prev, int64_t t, int64_t block);
  // Rows [r0, r1) of the projection for one block of kPlainVectors vectors of columns.
  void (*projection)(const ProjectionArgsOf<T>&, int64_t r0, int64_t r1, int64_t block);
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

// The products of the cell ops at a few rows (rows_product_impl.h), where a GEMM
// call costs more than its arithmetic: columns [n0, n1) of
//   out[b, n] = (out[b, n] if accumulate) + (bias[n]) + sum_k x[b, k] * w[n, k]
// for rows b < B, any B >= 1 (in groups of kSmallRows rows; where it pays: cell_cpu.cpp).
constexpr int64_t kSmallRows = 4;
template <typename T>
struct RowsProductArgsOf {
  int64_t B, K;
  const T* x;  // [B, K], rows ldx apart
  int64_t ldx;
  const T* w;     // [N, K] contiguous
  const T* bias;  // [N] or null
  T* out;         // [B, N], rows ldo apart
  int64_t ldo;
  bool accumulate;
};

// The backward's products at the same batches: out = a · w (+ c) over columns [k0, k1)
// (rows_times: a [B, N], w [N, K], c and out [B, K] contiguous; any B >= 1), and out =
// aᵀ · w over rows [n0, n1) (rows_outer: a [B, N], w [B, K], out [N, K];
// 1 <= B <= kSmallRows).
template <typename T>
struct RowsGradArgsOf {
  int64_t B, N, K;
  const T* a;  // [B, N], rows lda apart
  int64_t lda;
  const T* w;
  const T* c;  // rows_times: added, or null
  T* out;
};

// One instruction set's kernels.
struct Kernels {
  const char* name;
  int width;  // floats per vector
  LayerKernels<float> f32;
  LayerKernels<double> f64;
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
  void (*rows_product)(const RowsProductArgsOf<float>&, int64_t n0, int64_t n1);
  void (*rows_product_f64)(const RowsProductArgsOf<double>&, int64_t n0, int64_t n1);
  void (*rows_times)(const RowsGradArgsOf<float>&, int64_t k0, int64_t k1);
  void (*rows_times_f64)(const RowsGradArgsOf<double>&, int64_t k0, int64_t k1);
  void (*rows_outer)(const RowsGradArgsOf<float>&, int64_t n0, int64_t n1);
  void (*rows_outer_f64)(const RowsGradArgsOf<double>&, int64_t n0, int64_t n1);
  // iters rounds of 12 independent float FMA chains, 12 * width * iters FMAs.
  float (*fma_chains)(int64_t iters);
};

// Null when this build or this compiler lacks the instruction set (whether the
// CPU has it is checked by the caller).
const Kernels* kernels_avx512();
const Kernels* kernels_avx2();

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
