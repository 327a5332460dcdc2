#pragma once
// The fast path of the CPU layers in float32 and float64: which kernels of fast_kernels.h run,
// the packing of the weights into their panels, and the step loop that runs them
// on several threads.
//
// Choice of kernels (select): the widest instruction set the CPU has among
// AVX-512 (F, VL, BW, DQ) and AVX2 + FMA, or none, in which case the layers keep
// their portable path (one ATen GEMM per step and at::vec pointwise passes; also
// the path of the backward of the LSTM with a projection). The environment variable
// RNNKIT_CPU_ISA, read at every layer call, narrows the choice: "avx512",
// "avx2" or "generic" (the portable path), "auto" or unset for the default; a set
// the CPU lacks falls back to the next one it has. ("avx512_vnni" is "avx512" and
// "avx2_vnni" "avx2" for these kernels; they choose the int8 layers' kernels:
// quantized_path.h.)
//
// Threads: one parallel region (at::parallel_for) per layer call, not per step.
// Its workers own fixed contiguous ranges of hidden-unit blocks and meet at a
// spinning barrier between steps (the next step needs the whole state). The
// number of workers is min(at::get_num_threads(), blocks), and 1 when a step has
// fewer than kMinParallelFlops multiply-adds. Measured on 2 Zen 5 cores (T=100,
// 1 vs 2 workers): two already win at B=1, H=128 (LSTM 0.51 -> 0.42 ms, GRU
// 0.39 -> 0.31, RNN 0.19 -> 0.18, whose step is 16K multiply-adds), so only
// smaller steps stay on one thread. The results do not depend on the number of
// workers (see fast_kernels.h).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "fast_kernels.h"

namespace rnnkit {
namespace cpu {
namespace fast {

// RNNKIT_CPU_ISA as asked for, lowercased ("auto" when unset; select() checks it).
std::string requested_isa();
// The kernels the float32 and float64 layers use now, or null for the portable path.
const Kernels* select();
// Their name ("avx512", "avx2") or "generic".
const char* selected_name();
// Whether this is an AMD CPU (false off x86-64), whose MKL runs slower GEMMs than
// Intel's, and whether it is a Zen 1 or Zen+ (family 17h before Zen 2; 128-bit FMA
// units), where small-batch GEMMs run slower still: cell_cpu.cpp's choice of products
// depends on them.
bool cpu_is_amd();
bool cpu_is_amd_zen1();

// The float32 FMA rate of the selected kernels on all of at::get_num_threads()
// threads at once, in GFLOP/s (2 per FMA), measured for about `seconds`; 0 for the
// portable path. For the benchmarks, which report rates as fractions of it.
double fma_peak_gflops(double seconds);

// Multiply-adds of one step below which the step loop stays on one thread.
constexpr int64_t kMinParallelFlops = 1 << 14;

inline int64_t workers_for(int64_t blocks, int64_t step_flops) {
  if (step_flops < kMinParallelFlops) return 1;
#if !AT_PARALLEL_OPENMP
  // The barrier needs every worker running at once. OpenMP gives each call its own
  // team; a shared thread pool may queue a worker behind another caller's spinning
  // ones, and then nobody moves: stay on one thread there.
  return 1;
#endif
  const int64_t threads = at::get_num_threads();
  return std::max<int64_t>(1, std::min<int64_t>(threads, blocks));
}

// What a large buffer of a layer call holds (the packed weights of each kind, the
// input projection's chunk, quantized operands), so that each has its own kept memory (kept_memory in
// fast_path.cpp).
enum class Pack : int {
  kRecurrent,
  kInput,
  kProjection,
  kBackward,
  kInputChunk,
  kQuantizedInput,  // the int8 layers' quantized operands (quantized_path.cpp)
  kQuantizedState,
  kQuantizedHidden,
  // The float32 buffers of a bfloat16 layer call that are rounded into its results
  // or come from its arguments (bf16_layers.cpp, the backward of the layers).
  kStagedOutput,
  kStagedReserve,
  kStagedGates,
  kCount
};

// The steps of the input projection a forward driver computes at once, inside its
// step loop (C*B about 512 rows, so that each panel of W_ih is reused over many
// rows while the chunk stays in cache).
inline int64_t input_chunk_steps(int64_t T_, int64_t B) {
  const int64_t rows = std::max<int64_t>(1, B);
  return std::max<int64_t>(1, std::min<int64_t>(T_, (512 + rows - 1) / rows));
}

// The lowest step t of the chunk of C steps that holds position s of the step order
// (the chunks cover positions [0, C), [C, 2C), ...; reverse runs t = T-1 first).
inline int64_t chunk_first_step(int64_t T_, int64_t C, bool reverse, int64_t s) {
  const int64_t c0 = s / C * C, c1 = std::min(T_, c0 + C);
  return reverse ? T_ - c1 : c0;
}

// Memory for n elements of T for the duration of a layer call: a large buffer
// comes from memory that the calling thread keeps for the next call's buffer of the
// same kind (see fast_path.cpp), a small one from the allocator.
template <typename T>
at::Tensor kept_memory(int64_t n, Pack kind);

// A float32 tensor of `sizes` in kept memory of `kind`, for the buffers of a bfloat16
// layer call that its results are rounded from or its arguments widened into: fresh
// memory would cost a page fault per page at first touch, inside the step loop (LSTM
// T=100 B=64 H=512: 75 ms of system time for a 64 MB reserve, more than the 66 ms of
// the forward without it, on a 2-core Zen 4). Up to 256 MiB each (fresh memory above).
at::Tensor kept_floats(at::IntArrayRef sizes, Pack kind);

// Panels of U units for `gates` gates (fast_kernels.h): element (g, j, k) of the
// source is src[g*gate_stride + j*unit_stride + k*k_stride], for units j < H. A large
// pack is written into memory that the calling thread keeps for the next call's pack
// of the same kind: valid until then, so for the duration of the call.
template <typename T>
at::Tensor pack_panels(const T* src, int64_t gates, int64_t H, int64_t K, int64_t gate_stride,
                       int64_t unit_stride, int64_t k_stride, int64_t U, Pack kind);

// Calls fn(it, block) for it = 0..iters-1 and each of the blocks_of(it) blocks of
// iteration it, all blocks of an iteration finishing before any block of the next
// one starts (the LSTM with a projection alternates gates and projection). Each
// worker w calls start(it, w) before its blocks of iteration it (the quantized
// layers quantize the state there, into the worker's own buffer).
template <typename Blocks, typename Fn, typename Start>
void run_rounds(int64_t iters, int64_t workers, const Blocks& blocks_of, const Fn& fn,
                const Start& start) {
  if (iters <= 0) return;
  auto run_worker = [&](int64_t w, int64_t it) {
    const int64_t blocks = blocks_of(it);
    const int64_t begin = blocks * w / workers, end = blocks * (w + 1) / workers;
    if (begin < end) start(it, w);
    for (int64_t jb = begin; jb < end; ++jb) fn(it, jb);
  };
  if (workers <= 1) {
    for (int64_t it = 0; it < iters; ++it) run_worker(0, it);
    return;
  }
  // at::parallel_for may hand one call several workers (fewer threads than asked,
  // or a nested region run inline): a call runs its workers one after the other
  // and arrives for all of them, so the barrier counts workers, not threads.
  std::atomic<int64_t> arrived{0};
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t it = 0; it < iters; ++it) {
      for (int64_t w = w0; w < w1; ++w) run_worker(w, it);
      if (it + 1 == iters) break;
      arrived.fetch_add(w1 - w0, std::memory_order_acq_rel);
      const int64_t target = workers * (it + 1);
      for (int64_t spins = 0; arrived.load(std::memory_order_acquire) < target; ++spins) {
        if (spins < 20000) {
#if defined(__x86_64__) || defined(_M_X64)
          _mm_pause();
#endif
        } else {
          std::this_thread::yield();  // oversubscribed: let the other worker run
        }
      }
    }
  });
}

// Even and odd iterations with blocks_even and blocks_odd blocks.
template <typename Fn>
void run_iterations(int64_t iters, int64_t workers, int64_t blocks_even, int64_t blocks_odd,
                    const Fn& fn) {
  if (std::max(blocks_even, blocks_odd) <= 0) return;
  run_rounds(
      iters, workers, [&](int64_t it) { return (it & 1) ? blocks_odd : blocks_even; }, fn,
      [](int64_t, int64_t) {});
}

template <typename Fn>
void run_iterations(int64_t iters, int64_t workers, int64_t blocks, const Fn& fn) {
  run_iterations(iters, workers, blocks, blocks, fn);
}

// The layer drivers: the same contracts as the portable loops they replace
// (lstm_cpu.cpp, gru_cpu.cpp, rnn_cpu.cpp), float32 or float64 (T), contiguous.
// The forward ones take the input x [T, B, I] and compute its projection inside
// the step loop (bias: what the portable path folds into it, or null), and h (h0
// in, h_n out); the backward ones dh (grad_h_n in, grad_h0 out) and, for the
// LSTM, dc.
// The LSTM's h (h0 in, h_n out) and out are P wide: P = H without a projection
// (w_hr null), proj_size with one (w_hr [P, H]).
template <typename T>
void lstm_forward(const Kernels& k, int64_t T_, int64_t B, int64_t H, int64_t P, bool reverse,
                  const int64_t* len, const T* x, int64_t I, const T* w_ih, const T* bias,
                  const T* w_hh, const T* w_hr, T* h, T* c, T* out, T* reserve);
template <typename T>
void gru_forward(const Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse,
                 const int64_t* len, const T* x, int64_t I, const T* w_ih, const T* bias,
                 const T* w_hh, const T* b_hn, T* h, T* out, T* reserve);
template <typename T>
void rnn_forward(const Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse, bool relu,
                 const int64_t* len, const T* x, int64_t I, const T* w_ih, const T* bias,
                 const T* w_hh, T* h, T* out);
template <typename T>
void lstm_backward(const Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse,
                   const int64_t* len, const GradOutOf<T>& grad_out, const T* reserve,
                   const T* c0, const T* w_hh, T* dh, T* dc, T* dgates);
template <typename T>
void gru_backward(const Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse,
                  const int64_t* len, const GradOutOf<T>& grad_out, const T* reserve,
                  const T* out, const T* h0, const T* w_hh, T* dh, T* dgates);
template <typename T>
void rnn_backward(const Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse, bool relu,
                  const int64_t* len, const GradOutOf<T>& grad_out, const T* out,
                  const T* w_hh, T* dh, T* dpre);

// The gradient of the output as the backward kernels read it: grad_output itself
// when it is of type T with unit or zero stride along H (e.g. expanded from a
// sum), else a contiguous copy of type T kept in *copy.
template <typename T>
GradOutOf<T> grad_out_view(const at::Tensor& grad_output, at::Tensor* copy);

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
