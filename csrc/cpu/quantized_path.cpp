// The drivers of the int8 layers (see quantized_path.h).

#include "quantized_path.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "fast_path.h"

namespace rnnkit {
namespace cpu {
namespace fast {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t even(int64_t K) { return K + (K & 1); }
int64_t step_of(int64_t T, bool reverse, int64_t s) { return reverse ? T - 1 - s : s; }

at::Tensor floats(int64_t n) {
  return at::empty({std::max<int64_t>(1, n)}, at::TensorOptions().dtype(at::kFloat));
}

// x rounded to the nearest integer, ties to even (the rounding of torch.round).
inline int32_t round_even(float x) {
#if defined(__x86_64__) || defined(_M_X64)
  return _mm_cvtss_si32(_mm_set_ss(x));  // the default rounding mode: to nearest even
#else
  return static_cast<int32_t>(std::nearbyint(x));
#endif
}

// A weight matrix in the int8 panels of quantized_kernels.h.
struct PackedInt8 {
  at::Tensor panels, scales;
  int64_t Kp;
  QuantizedPanels view() const {
    return {panels.const_data_ptr<int8_t>(), scales.const_data_ptr<float>(), Kp};
  }
};

// w [gates*H, K] (gate g's unit j in row g*H + j) in panels of U units.
PackedInt8 pack_int8(Int8Matrix w, int64_t gates, int64_t H, int64_t K, int64_t U, Pack kind) {
  const int64_t blocks = ceil_div(H, U), Kp = even(K), columns = gates * U;
  const int64_t panel = Kp * columns;
  at::Tensor panels = kept_memory<int8_t>(std::max<int64_t>(1, blocks * panel), kind);
  at::Tensor scales = floats(blocks * columns);
  int8_t* dst = panels.mutable_data_ptr<int8_t>();
  float* sc = scales.mutable_data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, panel));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t jb = begin; jb < end; ++jb) {
      int8_t* out = dst + jb * panel;
      std::memset(out, 0, static_cast<size_t>(panel));  // units past H, k = K when K is odd
      const int64_t n = std::min(U, H - jb * U);
      for (int64_t g = 0; g < gates; ++g) {
        for (int64_t u = 0; u < U; ++u) {
          const int64_t c = g * U + u;
          sc[jb * columns + c] = u < n ? w.scale[g * H + jb * U + u] : 0.0f;
          if (u >= n) continue;
          const int8_t* src = w.q + (g * H + jb * U + u) * K;
          for (int64_t k = 0; k < K; ++k) out[(k >> 1) * 2 * columns + 2 * c + (k & 1)] = src[k];
        }
      }
    }
  });
  return {panels, scales, Kp};
}

// The quantized form of the B rows of a K-wide float operand, one copy per worker:
// each worker quantizes the whole operand itself at the start of its round, which
// costs it B*K roundings (against B*K*N multiply-adds of its share of the product)
// and spares every step a round and its barrier.
struct RowQuantizer {
  int64_t rows, K, Kp;
  at::Tensor levels, scales;
  RowQuantizer(int64_t rows_, int64_t K_, int64_t copies, Pack kind)
      : rows(rows_), K(K_), Kp(even(K_)) {
    levels = kept_memory<int16_t>(std::max<int64_t>(1, copies * rows * Kp), kind);
    scales = floats(copies * rows);
  }
  void quantize(const float* x, int64_t row, int64_t copy = 0) {
    const int64_t r = copy * rows + row;
    scales.mutable_data_ptr<float>()[r] =
        quantize_row(x + row * K, K, Kp, levels.mutable_data_ptr<int16_t>() + r * Kp);
  }
  void quantize_all(const float* x, int64_t copy) {
    for (int64_t b = 0; b < rows; ++b) quantize(x, b, copy);
  }
  // From row `first` of copy `copy` on.
  QuantizedRows view(int64_t copy = 0, int64_t first = 0) const {
    const int64_t r = copy * rows + first;
    return {levels.const_data_ptr<int16_t>() + r * Kp, scales.const_data_ptr<float>() + r, Kp};
  }
};

// The projection phases of an LSTM with proj_size: h_full quantized, then the
// product with W_hr.
struct QuantizedProjection {
  LstmProjectArgsOf<float> args;
  QuantizedPanels w_hr;
  int64_t blocks;
  RowQuantizer* h_full;
};

// The forward of one layer direction, the quantized run_forward of fast_path.cpp:
// packs W_hh and W_ih, quantizes the whole input, then runs the steps, each worker
// quantizing the running state (K wide) before its blocks of the step's cell
// kernel, which projects the input chunk by chunk like the float drivers. With
// `projected`, each step is two rounds, the second quantizing h_full and
// projecting it.
template <typename Args, typename Kernel>
void run_quantized(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H, int64_t K,
                   int64_t gates, int64_t U, bool reverse, const float* x, int64_t I,
                   Int8Matrix w_ih, const float* bias, Int8Matrix w_hh, float* h, Args a,
                   Kernel kernel, const QuantizedProjection* projected = nullptr) {
  const int64_t blocks = ceil_div(H, U);
  const PackedInt8 hh = pack_int8(w_hh, gates, H, K, U, Pack::kRecurrent);
  const PackedInt8 ih = pack_int8(w_ih, gates, H, I, U, Pack::kInput);
  const QuantizedPanels hh_panels = hh.view(), ih_panels = ih.view();

  RowQuantizer input(T_ * B, I, 1, Pack::kQuantizedInput);
  at::parallel_for(0, T_ * B, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) input.quantize(x, r);
  });

  const int64_t C = input_chunk_steps(T_, B);
  const at::Tensor chunk = kept_memory<float>(std::max<int64_t>(1, C * B * gates * H),
                                              Pack::kInputChunk);
  const ProjectionArgsOf<float> chunk_args{gates * H, I,    H, static_cast<int>(gates), nullptr,
                                           nullptr,   bias, chunk.mutable_data_ptr<float>()};
  const at::Tensor other = floats(B * K);
  float* state[2] = {h, other.mutable_data_ptr<float>()};
  a.gx = chunk.const_data_ptr<float>();

  const int64_t rounds = projected ? 2 : 1;
  const int64_t round_blocks[2] = {blocks, projected ? projected->blocks : 0};
  int64_t step_flops = B * gates * H * (K + I);
  if (projected) step_flops += B * H * projected->args.P;
  const int64_t workers = workers_for(std::max(blocks, round_blocks[1]), step_flops);
  RowQuantizer state_rows(B, K, workers, Pack::kQuantizedState);
  RowQuantizer* h_full = projected ? projected->h_full : nullptr;
  if (h_full) *h_full = RowQuantizer(B, H, workers, Pack::kQuantizedHidden);
  // The worker that runs block jb of n (run_rounds gives worker w blocks
  // [n*w/workers, n*(w+1)/workers)): the last one whose range starts at or before jb.
  auto worker_of = [&](int64_t n, int64_t jb) { return ((jb + 1) * workers - 1) / n; };
  run_rounds(
      T_ * rounds, workers, [&](int64_t it) { return round_blocks[it % rounds]; },
      [&](int64_t it, int64_t jb) {
        const int64_t s = it / rounds, t = step_of(T_, reverse, s);
        const float* h_prev = state[s & 1];
        float* h_next = state[(s + 1) & 1];
        const int64_t w = worker_of(round_blocks[it % rounds], jb);
        if (it % rounds == 0) {
          const int64_t t0 = chunk_first_step(T_, C, reverse, s);
          if (s % C == 0) {
            k.projection(chunk_args, input.view(0, t0 * B), ih_panels, 0,
                         (std::min(T_, s + C) - s) * B, jb);
          }
          Args step = a;
          step.gx_t0 = t0;
          kernel(step, state_rows.view(w), hh_panels, t, h_prev, h_next, jb);
        } else {
          k.lstm_project(projected->args, h_full->view(w), projected->w_hr, t, h_prev, h_next,
                         jb);
        }
      },
      [&](int64_t it, int64_t w) {
        if (it % rounds == 0) {
          state_rows.quantize_all(state[(it / rounds) & 1], w);
        } else {
          h_full->quantize_all(projected->args.h_full, w);
        }
      });
  if ((T_ & 1) && B * K > 0) std::memcpy(h, state[1], sizeof(float) * B * K);
}

}  // namespace

const QuantizedKernels* quantized_select() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const QuantizedKernels* const avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? quantized_kernels_avx2()
                                                                      : nullptr;
#else
  static const QuantizedKernels* const avx2 = nullptr;
#endif
  // select() reads RNNKIT_CPU_ISA: "generic" turns the compiled kernels off.
  return select() ? avx2 : nullptr;
}

float quantize_row(const float* x, int64_t K, int64_t Kp, int16_t* q) {
  float top = 0.0f;
  bool finite = true;
  for (int64_t k = 0; k < K; ++k) {
    const float a = std::fabs(x[k]);
    finite = finite && a <= FLT_MAX;
    top = std::max(top, a);
  }
  if (!finite || top < 1e-30f) {
    std::fill(q, q + Kp, int16_t{0});
    return finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
  }
  const int32_t Q = levels_for(K);
  const float inv = static_cast<float>(Q) / top;
  for (int64_t k = 0; k < K; ++k) {
    q[k] = static_cast<int16_t>(std::clamp(round_even(x[k] * inv), -Q, Q));
  }
  std::fill(q + K, q + Kp, int16_t{0});
  return top / static_cast<float>(Q);
}

void quantized_lstm_forward(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H,
                            int64_t P, bool reverse, const int64_t* len, const float* x,
                            int64_t I, Int8Matrix w_ih, const float* bias, Int8Matrix w_hh,
                            const Int8Matrix* w_hr, float* h, float* c, float* out) {
  const int64_t W = k.width;
  if (w_hr == nullptr) {
    run_quantized(k, T_, B, H, H, 4, W, reverse, x, I, w_ih, bias, w_hh, h,
                  LstmForwardArgsOf<float>{B, H, H, nullptr, nullptr, 0, len, c, out, nullptr,
                                           nullptr},
                  k.lstm_forward);
    return;
  }
  const int64_t U = kPlainVectors * W;
  const PackedInt8 hr = pack_int8(*w_hr, 1, P, H, U, Pack::kProjection);
  // Zeroed: the projection also quantizes the rows of padded steps (and discards
  // their products), which the gate kernel does not write.
  const at::Tensor h_full = at::zeros({std::max<int64_t>(1, B * H)}, at::kFloat);
  RowQuantizer h_full_rows(0, H, 0, Pack::kQuantizedHidden);  // sized by run_quantized
  const QuantizedProjection projected{
      LstmProjectArgsOf<float>{B, H, P, nullptr, len, h_full.const_data_ptr<float>(), out},
      hr.view(), ceil_div(P, U), &h_full_rows};
  run_quantized(k, T_, B, H, P, 4, W, reverse, x, I, w_ih, bias, w_hh, h,
                LstmForwardArgsOf<float>{B, H, P, nullptr, nullptr, 0, len, c, nullptr, nullptr,
                                         h_full.mutable_data_ptr<float>()},
                k.lstm_forward, &projected);
}

void quantized_gru_forward(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H,
                           bool reverse, const int64_t* len, const float* x, int64_t I,
                           Int8Matrix w_ih, const float* bias, Int8Matrix w_hh,
                           const float* b_hn, float* h, float* out) {
  run_quantized(k, T_, B, H, H, 3, k.width, reverse, x, I, w_ih, bias, w_hh, h,
                GruForwardArgsOf<float>{B, H, nullptr, nullptr, 0, b_hn, len, out, nullptr},
                k.gru_forward);
}

void quantized_rnn_forward(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H,
                           bool reverse, bool relu, const int64_t* len, const float* x,
                           int64_t I, Int8Matrix w_ih, const float* bias, Int8Matrix w_hh,
                           float* h, float* out) {
  run_quantized(k, T_, B, H, H, 1, kPlainVectors * k.width, reverse, x, I, w_ih, bias, w_hh, h,
                RnnForwardArgsOf<float>{B, H, relu, nullptr, nullptr, 0, len, out},
                k.rnn_forward);
}

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
