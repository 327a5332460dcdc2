// The drivers of the int8 layers (see quantized_path.h).

#include "quantized_path.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "fast_path.h"

namespace rnnkit {
namespace cpu {
namespace fast {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// K rounded up to a multiple of the kernels' alignment.
int64_t padded(int64_t K, int64_t depth) { return (K + depth - 1) / depth * depth; }
int64_t step_of(int64_t T, bool reverse, int64_t s) { return reverse ? T - 1 - s : s; }

at::Tensor floats(int64_t n) {
  return at::empty({std::max<int64_t>(1, n)}, at::TensorOptions().dtype(at::kFloat));
}

// The quantized form of the B rows of a K-wide float operand, one copy per worker:
// each worker quantizes the whole operand itself at the start of its round, which
// costs it B*K roundings (against B*K*N multiply-adds of its share of the product)
// and spares every step a round and its barrier.
template <typename Level>
struct RowQuantizer {
  int64_t rows, K, Kp;
  at::Tensor levels, scales;
  float (*quantize_row)(const float*, int64_t, int64_t, void*);
  RowQuantizer(const QuantizedKernels& k, int64_t rows_, int64_t K_, int64_t copies, Pack kind)
      : rows(rows_), K(K_), Kp(padded(K_, k.align)), quantize_row(k.quantize_row) {
    // kTileRows rows more after each copy: AMX's kernels load whole tiles (see
    // quantized_kernels.h), which then never reach into another worker's copy.
    levels = kept_memory<Level>(
        std::max<int64_t>(1, std::max<int64_t>(1, copies) * (rows + kTileRows) * Kp), kind);
    scales = floats(copies * rows);
  }
  void quantize(const float* x, int64_t row, int64_t copy = 0) {
    const int64_t r = copy * rows + row;
    scales.mutable_data_ptr<float>()[r] = quantize_row(
        x + row * K, K, Kp, levels.mutable_data_ptr<Level>() + (r + copy * kTileRows) * Kp);
  }
  void quantize_all(const float* x, int64_t copy) {
    for (int64_t b = 0; b < rows; ++b) quantize(x, b, copy);
  }
  // From row `first` of copy `copy` on.
  QuantizedRows view(int64_t copy = 0, int64_t first = 0) const {
    const int64_t r = copy * rows + first;
    return {levels.const_data_ptr<Level>() + (r + copy * kTileRows) * Kp,
            scales.const_data_ptr<float>() + r, Kp};
  }
};

// The projection phases of an LSTM with proj_size: h_full [B, H] (zeroed: the
// projection also quantizes the rows of padded steps, and discards their
// products, which the gate kernel does not write) quantized, then the product with
// W_hr.
struct QuantizedProjection {
  Int8Matrix w_hr;
  int64_t P;
  const int64_t* len;
  float* h_full;
  float* out;
};

// The forward of one layer direction, the quantized run_forward of fast_path.cpp:
// packs W_hh and W_ih (or finds them packed), quantizes the whole input, then runs
// the steps, each worker quantizing the running state (K wide) before its blocks of
// the step's cell kernel, which projects the input chunk by chunk like the float
// drivers. With `projected`, each step is two rounds, the second quantizing h_full
// and projecting it. Level: the levels of the kernels `k` (see quantized_kernels.h).
template <typename Level, typename Args, typename Kernel>
void run_quantized(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H, int64_t K,
                   int64_t gates, int64_t U, bool reverse, const float* x, int64_t I,
                   Int8Matrix w_ih, const float* bias, Int8Matrix w_hh, float* h, Args a,
                   Kernel kernel, const QuantizedProjection* projected) {
  const int64_t blocks = ceil_div(H, U), depth = k.depth, align = k.align;
  const PackedInt8 hh = packed_int8(w_hh, gates, H, K, U, depth, align);
  const PackedInt8 ih = packed_int8(w_ih, gates, H, I, U, depth, align);
  const QuantizedPanels hh_panels = hh.view(), ih_panels = ih.view();

  RowQuantizer<Level> input(k, T_ * B, I, 1, Pack::kQuantizedInput);
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

  // The projection's panels and arguments (h_prev, h_next: the state's).
  const int64_t PU = kPlainVectors * k.width;
  PackedInt8 hr;
  LstmProjectArgsOf<float> project_args{};
  if (projected) {
    hr = packed_int8(projected->w_hr, 1, projected->P, H, PU, depth, align);
    project_args = {B, H, projected->P, nullptr, projected->len, projected->h_full,
                    projected->out};
  }
  const QuantizedPanels hr_panels = projected ? hr.view() : QuantizedPanels{};

  const int64_t rounds = projected ? 2 : 1;
  const int64_t round_blocks[2] = {blocks, projected ? ceil_div(projected->P, PU) : 0};
  int64_t step_flops = B * gates * H * (K + I);
  if (projected) step_flops += B * H * projected->P;
  const int64_t workers = workers_for(std::max(blocks, round_blocks[1]), step_flops);
  RowQuantizer<Level> state_rows(k, B, K, workers, Pack::kQuantizedState);
  RowQuantizer<Level> h_full(k, projected ? B : 0, H, workers, Pack::kQuantizedHidden);
  // The worker that runs block jb of n (run_rounds gives worker w blocks
  // [n*w/workers, n*(w+1)/workers)): the last one whose range starts at or before jb.
  auto worker_of = [&](int64_t n, int64_t jb) { return ((jb + 1) * workers - 1) / n; };
  std::vector<char> begun(static_cast<size_t>(workers), 0);  // begin_thread called
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
          k.lstm_project(project_args, h_full.view(w), hr_panels, t, h_prev, h_next, jb);
        }
      },
      [&](int64_t it, int64_t w) {
        if (k.begin_thread && !begun[w]) {
          k.begin_thread();
          begun[w] = 1;
        }
        if (it % rounds == 0) {
          state_rows.quantize_all(state[(it / rounds) & 1], w);
        } else {
          h_full.quantize_all(projected->h_full, w);
        }
      });
  if ((T_ & 1) && B * K > 0) std::memcpy(h, state[1], sizeof(float) * B * K);
}

// run_quantized with the levels of the kernels `k`.
template <typename Args, typename Kernel>
void run_layer(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H, int64_t K,
               int64_t gates, int64_t U, bool reverse, const float* x, int64_t I,
               Int8Matrix w_ih, const float* bias, Int8Matrix w_hh, float* h, Args a,
               Kernel kernel, const QuantizedProjection* projected = nullptr) {
  if (k.depth == 4) {
    run_quantized<uint8_t>(k, T_, B, H, K, gates, U, reverse, x, I, w_ih, bias, w_hh, h, a,
                           kernel, projected);
  } else {
    run_quantized<int16_t>(k, T_, B, H, K, gates, U, reverse, x, I, w_ih, bias, w_hh, h, a,
                           kernel, projected);
  }
}

}  // namespace

const QuantizedKernels* quantized_select(int64_t K) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const QuantizedKernels* const avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? quantized_kernels_avx2()
                                                                      : nullptr;
  static const QuantizedKernels* const vnni =
      __builtin_cpu_supports("avx512vnni") ? quantized_kernels_avx512_vnni() : nullptr;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11  // as its kernels' file
  static const QuantizedKernels* const avx_vnni =
      avx2 && __builtin_cpu_supports("avxvnni") ? quantized_kernels_avx_vnni() : nullptr;
#else
  static const QuantizedKernels* const avx_vnni = nullptr;
#endif
#else
  static const QuantizedKernels* const avx2 = nullptr;
  static const QuantizedKernels* const vnni = nullptr;
  static const QuantizedKernels* const avx_vnni = nullptr;
#endif
  // select() reads RNNKIT_CPU_ISA and answers AVX-512 only on a CPU that has it and
  // where it is allowed, null for "generic". Of the int8 kernels, "avx512_vnni"
  // keeps off AMX, "avx2" keeps to int16 levels (plain AVX2, as on a Zen 3).
  const Kernels* floats = select();
  if (floats == nullptr) return nullptr;
  const std::string want = requested_isa();
  if (K <= max_depth_for(4)) {  // the 8-bit kernels' int32 sums hold
    if (vnni && std::strcmp(floats->name, "avx512") == 0) {
      if (want == "avx512_vnni") return vnni;
      // Asked for here, when first wanted: the permission (arch_prctl) has effects
      // on the whole process (larger signal frames).
      static const QuantizedKernels* const amx = quantized_kernels_amx();
      return amx ? amx : vnni;
    }
    if (avx_vnni && want != "avx2") return avx_vnni;
  }
  return K <= max_depth_for(2) ? avx2 : nullptr;
}

void quantized_lstm_forward(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H,
                            int64_t P, bool reverse, const int64_t* len, const float* x,
                            int64_t I, Int8Matrix w_ih, const float* bias, Int8Matrix w_hh,
                            const Int8Matrix* w_hr, float* h, float* c, float* out) {
  const int64_t W = k.width;
  if (w_hr == nullptr) {
    run_layer(k, T_, B, H, H, 4, W, reverse, x, I, w_ih, bias, w_hh, h,
              LstmForwardArgsOf<float>{B, H, H, nullptr, nullptr, 0, len, c, out, nullptr,
                                       nullptr},
              k.lstm_forward);
    return;
  }
  const at::Tensor h_full = at::zeros({std::max<int64_t>(1, B * H)}, at::kFloat);
  const QuantizedProjection projected{*w_hr, P, len, h_full.mutable_data_ptr<float>(), out};
  run_layer(k, T_, B, H, P, 4, W, reverse, x, I, w_ih, bias, w_hh, h,
            LstmForwardArgsOf<float>{B, H, P, nullptr, nullptr, 0, len, c, nullptr, nullptr,
                                     h_full.mutable_data_ptr<float>()},
            k.lstm_forward, &projected);
}

void quantized_gru_forward(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H,
                           bool reverse, const int64_t* len, const float* x, int64_t I,
                           Int8Matrix w_ih, const float* bias, Int8Matrix w_hh,
                           const float* b_hn, float* h, float* out) {
  run_layer(k, T_, B, H, H, 3, k.width, reverse, x, I, w_ih, bias, w_hh, h,
                GruForwardArgsOf<float>{B, H, nullptr, nullptr, 0, b_hn, len, out, nullptr},
                k.gru_forward);
}

void quantized_rnn_forward(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H,
                           bool reverse, bool relu, const int64_t* len, const float* x,
                           int64_t I, Int8Matrix w_ih, const float* bias, Int8Matrix w_hh,
                           float* h, float* out) {
  run_layer(k, T_, B, H, H, 1, kPlainVectors * k.width, reverse, x, I, w_ih, bias, w_hh, h,
                RnnForwardArgsOf<float>{B, H, relu, nullptr, nullptr, 0, len, out},
                k.rnn_forward);
}

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
