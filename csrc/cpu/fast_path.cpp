// The drivers of the fast path, float32 and float64 (see fast_path.h).

#include "fast_path.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

namespace rnnkit {
namespace cpu {
namespace fast {
namespace {

bool cpu_has_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

// __builtin_cpu_is where it exists (x86-64 with GCC or clang), else no.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RNNKIT_CPU_IS(name) __builtin_cpu_is(name)
#else
#define RNNKIT_CPU_IS(name) false
#endif

bool cpu_is_amd() {
  static const bool amd = RNNKIT_CPU_IS("amd");
  return amd;
}

bool cpu_is_amd_zen1() {
  static const bool zen1 = RNNKIT_CPU_IS("znver1");
  return zen1;
}

namespace {

template <typename T>
at::Tensor empty_of(int64_t n) {
  return at::empty({n}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// Elements of T per vector of the kernels k.
template <typename T>
int64_t lanes(const Kernels& k) {
  return k.width * static_cast<int64_t>(sizeof(float)) / static_cast<int64_t>(sizeof(T));
}

template <typename T>
const LayerKernels<T>& layer(const Kernels& k);
template <>
const LayerKernels<float>& layer<float>(const Kernels& k) { return k.f32; }
template <>
const LayerKernels<double>& layer<double>(const Kernels& k) { return k.f64; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t step_of(int64_t T, bool reverse, int64_t s) { return reverse ? T - 1 - s : s; }

}  // namespace

std::string requested_isa() {
  std::string want = "auto";
  if (const char* env = std::getenv("RNNKIT_CPU_ISA")) {
    want = env;
    std::transform(want.begin(), want.end(), want.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  }
  return want;
}

const Kernels* select() {
  static const Kernels* const avx512 = cpu_has_avx512() ? kernels_avx512() : nullptr;
  static const Kernels* const avx2 = cpu_has_avx2() ? kernels_avx2() : nullptr;
  const std::string want = requested_isa();
  if (want == "generic") return nullptr;
  // avx2_vnni: AVX2, and the int8 layers' AVX-VNNI kernels (plain avx2: int16 ones).
  if (want == "avx2" || want == "avx2_vnni") return avx2;
  // avx512_vnni: AVX-512, and the int8 layers' VNNI kernels rather than AMX's.
  TORCH_CHECK(want == "auto" || want.empty() || want == "avx512" || want == "avx512_vnni",
              "RNNKIT_CPU_ISA must be one of auto, avx512, avx512_vnni, avx2_vnni, avx2, "
              "generic; got '", want, "'");
  return avx512 ? avx512 : avx2;
}

double fma_peak_gflops(double seconds) {
  TORCH_CHECK(seconds >= 0.0 && seconds <= 60.0,
              "_cpu_fma_peak: seconds must be in [0, 60], got ", seconds);
  const Kernels* k = select();
  if (k == nullptr) return 0.0;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  auto run = [&](int64_t iters) {
    std::atomic<float> sink{0.0f};
    const auto start = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) sink.store(k->fma_chains(iters));
    });
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return std::max(elapsed, 1e-9);
  };
  int64_t iters = 1 << 16;
  double elapsed = run(iters);
  while (elapsed < seconds / 12 && iters < (int64_t{1} << 40)) {  // calibrate, then time
    iters *= 4;
    elapsed = run(iters);
  }
  // The best of three runs of `seconds` / 3: a peak, not an average over the
  // moments when another process or the threads' start-up took a core.
  iters = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iters) * seconds / 3 /
                                                     elapsed));
  elapsed = run(iters);
  for (int r = 0; r < 2; ++r) elapsed = std::min(elapsed, run(iters));
  const double fmas = static_cast<double>(threads) * static_cast<double>(iters) * 12.0 * k->width;
  return 2.0 * fmas / elapsed / 1e9;
}

const char* selected_name() {
  const Kernels* k = select();
  return k ? k->name : "generic";
}

namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RNNKIT_PACK_AVX2 1
// dst[k*ds + u] = src[u*ss + k] for an 8x8 block of floats: AVX2 is there
// whenever a fast path runs (the packing serves only it).
__attribute__((target("avx2,fma"))) void transpose_block(const float* src, int64_t ss,
                                                          float* dst, int64_t ds) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ss);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  // r[i]: k = i (low half) and k = i + 4 (high half) of units 0-3; r[i + 4]: the
  // same of units 4-7.
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ds, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ds, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}
// The same for a 4x4 block of doubles.
__attribute__((target("avx2,fma"))) void transpose_block(const double* src, int64_t ss,
                                                          double* dst, int64_t ds) {
  const __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + ss);
  const __m256d r2 = _mm256_loadu_pd(src + 2 * ss), r3 = _mm256_loadu_pd(src + 3 * ss);
  const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
  const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
  _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(dst + ds, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(dst + 2 * ds, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(dst + 3 * ds, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#endif

// dst[k*ds + u] = src[u*ss + k*ks] for u < nu, k < nk: square blocks in vector
// registers where the source is contiguous along k, one element at a time at the
// edges. Runs of kRun values of k keep the destination rows being written in L1.
template <typename T>
void transpose(const T* src, int64_t ss, int64_t ks, T* dst, int64_t ds, int64_t nu,
               int64_t nk) {
  constexpr int64_t kBlock = 32 / sizeof(T);  // one AVX2 vector
  constexpr int64_t kRun = 64;
  for (int64_t k0 = 0; k0 < nk; k0 += kRun) {
    const int64_t k1 = std::min(nk, k0 + kRun);
    int64_t u = 0;
#if RNNKIT_PACK_AVX2
    if (ks == 1) {
      for (; u + kBlock <= nu; u += kBlock) {
        int64_t k = k0;
        for (; k + kBlock <= k1; k += kBlock) {
          transpose_block(src + u * ss + k, ss, dst + k * ds + u, ds);
        }
        for (; k < k1; ++k)
          for (int64_t v = u; v < u + kBlock; ++v) dst[k * ds + v] = src[v * ss + k];
      }
    }
#endif
    for (; u < nu; ++u)
      for (int64_t k = k0; k < k1; ++k) dst[k * ds + u] = src[u * ss + k * ks];
  }
}

}  // namespace

// Memory for `n` elements of a buffer that lives for one layer call. Fresh memory of a
// large buffer costs the kernel a page fault and a zeroing per 4 KiB page at first
// touch (an LSTM's 64 MB of packed float64 weights: 16K faults, half of a T=10
// forward on Zen 5; asking for huge pages was slower still there). So the calling
// thread keeps the memory of its last large buffer of each kind and reuses it; small
// buffers come from the allocator, as does one past kMaxKeptBytes (kept memory is not
// returned until the thread ends).
template <typename T>
at::Tensor kept_memory(int64_t n, Pack kind) {
  constexpr int64_t kMinKeptBytes = int64_t{1} << 20, kMaxKeptBytes = int64_t{1} << 30;
  const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
  if (bytes < kMinKeptBytes || bytes > kMaxKeptBytes) return empty_of<T>(n);
  thread_local at::Tensor kept[static_cast<int>(Pack::kCount)];
  at::Tensor& memory = kept[static_cast<int>(kind)];
  if (!memory.defined() || memory.nbytes() < static_cast<size_t>(bytes)) {
    memory = at::Tensor();  // the old block goes back before the new one is taken
    memory = at::empty({bytes}, at::TensorOptions().dtype(at::kByte));
  }
  return memory.narrow(0, 0, bytes).view(c10::CppTypeToScalarType<T>::value);
}

template at::Tensor kept_memory<float>(int64_t, Pack);
template at::Tensor kept_memory<double>(int64_t, Pack);
template at::Tensor kept_memory<int16_t>(int64_t, Pack);
template at::Tensor kept_memory<uint8_t>(int64_t, Pack);

at::Tensor kept_floats(at::IntArrayRef sizes, Pack kind) {
  // Activations, not weights: kept up to a quarter of kept_memory's bound, so that a
  // thread does not hold three buffers of a GiB after one large call.
  constexpr int64_t kMaxKeptFloats = (int64_t{1} << 28) / int64_t{sizeof(float)};
  int64_t n = 1;
  for (const int64_t s : sizes) n *= s;
  if (n > kMaxKeptFloats) return at::empty(sizes, at::TensorOptions().dtype(at::kFloat));
  return kept_memory<float>(std::max<int64_t>(1, n), kind).narrow(0, 0, n).view(sizes);
}

template <typename T>
at::Tensor pack_panels(const T* src, int64_t gates, int64_t H, int64_t K, int64_t gate_stride,
                       int64_t unit_stride, int64_t k_stride, int64_t U, Pack kind) {
  const int64_t blocks = ceil_div(H, U);
  const int64_t panel = K * gates * U;
  at::Tensor packed = kept_memory<T>(std::max<int64_t>(1, blocks * panel), kind);
  T* dst = packed.mutable_data_ptr<T>();
  // Small packs stay on one thread (a parallel region costs more than they do).
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, panel));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t jb = begin; jb < end; ++jb) {
      T* out = dst + jb * panel;
      for (int64_t g = 0; g < gates; ++g) {
        const int64_t n = std::max<int64_t>(0, std::min<int64_t>(U, H - jb * U));
        if (n < U) {  // the slots of units past H: zeros
          for (int64_t k = 0; k < K; ++k) {
            T* slot = out + k * gates * U + g * U;
            std::fill(slot + n, slot + U, T(0));
          }
        }
        if (unit_stride == 1) {
          // Consecutive units are adjacent in the source: row by row.
          for (int64_t k = 0; k < K; ++k) {
            std::memcpy(out + k * gates * U + g * U,
                        src + g * gate_stride + jb * U + k * k_stride, sizeof(T) * n);
          }
        } else {
          // A source row per unit: a transpose into the panel.
          transpose(src + g * gate_stride + jb * U * unit_stride, unit_stride, k_stride,
                    out + g * U, gates * U, n, K);
        }
      }
    }
  });
  return packed;
}

template at::Tensor pack_panels<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                       int64_t, int64_t, Pack);
template at::Tensor pack_panels<double>(const double*, int64_t, int64_t, int64_t, int64_t,
                                        int64_t, int64_t, int64_t, Pack);

// ---------------------------------------------------------------- forward

namespace {

// The input projection of a forward driver, computed inside its step loop: for a
// chunk of C steps at a time (input_chunk_steps), each worker projects its own
// blocks' columns just before the first step of the chunk, into a [C*B, G*H]
// buffer that the steps of that chunk read back while it is still in cache. No
// [T, B, G*H] tensor, no extra synchronisation (a worker reads only the columns it wrote).
template <typename T>
struct InputChunks {
  int64_t T_, B, C;
  bool reverse;
  const int64_t* len;
  ProjectionArgsOf<T> base;  // x: the whole input; y: the chunk buffer

  int64_t first_t(int64_t s) const { return chunk_first_step(T_, C, reverse, s); }
  // The real rows only (live_row_runs): the cell kernels read no other.
  void project(const LayerKernels<T>& k, int64_t s, int64_t block) const {
    if (s % C != 0) return;
    ProjectionArgsOf<T> p = base;
    const int64_t t0 = first_t(s);
    p.x = base.x + t0 * B * base.K;
    live_row_runs(len, B, t0, std::min(T_, s + C) - s,
                  [&](int64_t r0, int64_t r1) { k.projection(p, r0, r1, block); });
  }
};

// The projection phase of an LSTM with proj_size, which run_forward alternates
// with the gates phase: its kernel's arguments and its number of blocks.
template <typename T>
struct ProjectionPhase {
  LstmProjectArgsOf<T> args;
  int64_t blocks;
};

// The forward of one layer direction for every cell: packs W_hh and W_ih (`gates`
// gates side by side, blocks of U units), projects the input chunk by chunk inside
// the step loop, and alternates the running state (K wide: H, or an LSTM's P)
// between h and a scratch buffer, leaving h_n in h. `a` carries the cell's own
// arguments; packed, gx and gx_t0 are filled in here, and kernel(args, t, h_prev,
// h_next, block) runs one step. With `projected`, each step is two iterations:
// the cell kernel, then the projection of its h_full into the state.
template <typename T, typename Args, typename Kernel>
void run_forward(const LayerKernels<T>& k, int64_t T_, int64_t B, int64_t H, int64_t K,
                 int64_t gates, int64_t U, bool reverse, const T* x, int64_t I, const T* w_ih,
                 const T* bias, const T* w_hh, T* h, Args a, Kernel kernel,
                 const ProjectionPhase<T>* projected = nullptr) {
  const int64_t blocks = ceil_div(H, U);
  const at::Tensor packed = pack_panels(w_hh, gates, H, K, H * K, K, 1, U, Pack::kRecurrent);
  const at::Tensor packed_ih = pack_panels(w_ih, gates, H, I, H * I, I, 1, U, Pack::kInput);
  const int64_t C = input_chunk_steps(T_, B);
  const at::Tensor chunk =
      kept_memory<T>(std::max<int64_t>(1, C * B * gates * H), Pack::kInputChunk);
  const InputChunks<T> in{T_, B, C, reverse, a.len,
                          ProjectionArgsOf<T>{gates * H, I, H, static_cast<int>(gates),
                                              packed_ih.const_data_ptr<T>(), x, bias,
                                              chunk.mutable_data_ptr<T>()}};
  const at::Tensor other = empty_of<T>(std::max<int64_t>(1, B * K));
  T* state[2] = {h, other.mutable_data_ptr<T>()};
  a.packed = packed.const_data_ptr<T>();
  a.gx = chunk.const_data_ptr<T>();
  auto cell_step = [&](int64_t s, int64_t jb) {
    in.project(k, s, jb);
    Args step = a;
    step.gx_t0 = in.first_t(s);
    kernel(step, step_of(T_, reverse, s), state[s & 1], state[(s + 1) & 1], jb);
  };
  if (projected == nullptr) {
    run_iterations(T_, workers_for(blocks, B * gates * H * K), blocks, cell_step);
  } else {
    const int64_t step_flops = B * gates * H * K + B * K * H;
    run_iterations(2 * T_, workers_for(std::max(blocks, projected->blocks), step_flops), blocks,
                   projected->blocks, [&](int64_t it, int64_t jb) {
                     const int64_t s = it / 2;
                     if ((it & 1) == 0) {
                       cell_step(s, jb);
                     } else {
                       k.lstm_project(projected->args, step_of(T_, reverse, s), state[s & 1],
                                      state[(s + 1) & 1], jb);
                     }
                   });
  }
  if ((T_ & 1) && B * K > 0) std::memcpy(h, state[1], sizeof(T) * B * K);
}

}  // namespace

template <typename T>
void lstm_forward(const Kernels& k, int64_t T_, int64_t B, int64_t H, int64_t P, bool reverse,
                  const int64_t* len, const T* x, int64_t I, const T* w_ih, const T* bias,
                  const T* w_hh, const T* w_hr, T* h, T* c, T* out, T* reserve) {
  const LayerKernels<T>& lk = layer<T>(k);
  if (w_hr == nullptr) {
    run_forward(lk, T_, B, H, H, 4, lanes<T>(k), reverse, x, I, w_ih, bias, w_hh, h,
                LstmForwardArgsOf<T>{B, H, H, nullptr, nullptr, 0, len, c, out, reserve, nullptr},
                lk.lstm_forward);
    return;
  }
  // W_hr [P, H] in plain panels (its rows are the units of the projection).
  const int64_t U = kPlainVectors * lanes<T>(k);
  const at::Tensor packed_hr = pack_panels(w_hr, 1, P, H, 0, H, 1, U, Pack::kProjection);
  // Zeroed: the projection's product also reads the rows of padded steps (and
  // discards them), which the gate kernel does not write.
  const at::Tensor h_full = empty_of<T>(std::max<int64_t>(1, B * H)).zero_();
  const ProjectionPhase<T> projected{
      LstmProjectArgsOf<T>{B, H, P, packed_hr.const_data_ptr<T>(), len,
                           h_full.const_data_ptr<T>(), out},
      ceil_div(P, U)};
  run_forward(lk, T_, B, H, P, 4, lanes<T>(k), reverse, x, I, w_ih, bias, w_hh, h,
              LstmForwardArgsOf<T>{B, H, P, nullptr, nullptr, 0, len, c, nullptr, reserve,
                                   h_full.mutable_data_ptr<T>()},
              lk.lstm_forward, &projected);
}

template <typename T>
void gru_forward(const Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse,
                 const int64_t* len, const T* x, int64_t I, const T* w_ih, const T* bias,
                 const T* w_hh, const T* b_hn, T* h, T* out, T* reserve) {
  const LayerKernels<T>& lk = layer<T>(k);
  run_forward(lk, T_, B, H, H, 3, lanes<T>(k), reverse, x, I, w_ih, bias, w_hh, h,
              GruForwardArgsOf<T>{B, H, nullptr, nullptr, 0, b_hn, len, out, reserve},
              lk.gru_forward);
}

template <typename T>
void rnn_forward(const Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse, bool relu,
                 const int64_t* len, const T* x, int64_t I, const T* w_ih, const T* bias,
                 const T* w_hh, T* h, T* out) {
  const LayerKernels<T>& lk = layer<T>(k);
  // Plain panels: blocks of kPlainVectors vectors of units.
  run_forward(lk, T_, B, H, H, 1, kPlainVectors * lanes<T>(k), reverse, x, I, w_ih, bias, w_hh, h,
              RnnForwardArgsOf<T>{B, H, relu, nullptr, nullptr, 0, len, out}, lk.rnn_forward);
}

// ---------------------------------------------------------------- backward
// Iteration q of T + 1 multiplies the gate gradients of the step handled by
// iteration q - 1 with W_hh and runs the pointwise pass of the next step back.

namespace {

template <typename Fn>
void run_backward(int64_t T, bool reverse, int64_t workers, int64_t blocks, const Fn& fn) {
  run_iterations(T + 1, workers, blocks, [&](int64_t q, int64_t jb) {
    const int64_t t_prev = q > 0 ? step_of(T, reverse, T - q) : -1;
    const int64_t t = q < T ? step_of(T, reverse, T - 1 - q) : -1;
    fn(t_prev, t, jb);
  });
}

}  // namespace

template <typename T>
GradOutOf<T> grad_out_view(const at::Tensor& g, at::Tensor* copy) {
  constexpr auto type = c10::CppTypeToScalarType<T>::value;
  if (g.scalar_type() == type && (g.stride(2) == 1 || g.stride(2) == 0 || g.size(2) <= 1)) {
    return GradOutOf<T>{g.const_data_ptr<T>(), g.stride(0), g.stride(1),
                        g.stride(2) == 0 && g.size(2) > 1};
  }
  *copy = g.to(type).contiguous();
  return GradOutOf<T>{copy->const_data_ptr<T>(), copy->stride(0), copy->stride(1), false};
}

template <typename T>
void lstm_backward(const Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse,
                   const int64_t* len, const GradOutOf<T>& grad_out, const T* reserve,
                   const T* c0, const T* w_hh, T* dh, T* dc, T* dgates) {
  const int64_t U = kPlainVectors * lanes<T>(k);
  const int64_t blocks = ceil_div(H, U);
  // W_hh is [4H, H]: the product dgates · W_hh reads it by columns.
  const at::Tensor packed = pack_panels(w_hh, 1, H, 4 * H, 0, 1, H, U, Pack::kBackward);
  const LstmBackwardArgsOf<T> a{T_, B,  H,   reverse, packed.const_data_ptr<T>(),
                                grad_out, reserve, c0, len, dh, dc, dgates};
  const auto kernel = layer<T>(k).lstm_backward;
  run_backward(T_, reverse, workers_for(blocks, B * 4 * H * H), blocks,
               [&](int64_t t_prev, int64_t t, int64_t jb) { kernel(a, t_prev, t, jb); });
}

template <typename T>
void gru_backward(const Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse,
                  const int64_t* len, const GradOutOf<T>& grad_out, const T* reserve,
                  const T* out, const T* h0, const T* w_hh, T* dh, T* dgates) {
  const int64_t U = kPlainVectors * lanes<T>(k);
  const int64_t blocks = ceil_div(H, U);
  const at::Tensor packed = pack_panels(w_hh, 1, H, 3 * H, 0, 1, H, U, Pack::kBackward);
  const GruBackwardArgsOf<T> a{T_, B,  H,  reverse, packed.const_data_ptr<T>(), grad_out,
                               reserve, out, h0, len, dh,      dgates};
  const auto kernel = layer<T>(k).gru_backward;
  run_backward(T_, reverse, workers_for(blocks, B * 3 * H * H), blocks,
               [&](int64_t t_prev, int64_t t, int64_t jb) { kernel(a, t_prev, t, jb); });
}

template <typename T>
void rnn_backward(const Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse, bool relu,
                  const int64_t* len, const GradOutOf<T>& grad_out, const T* out,
                  const T* w_hh, T* dh, T* dpre) {
  const int64_t U = kPlainVectors * lanes<T>(k);
  const int64_t blocks = ceil_div(H, U);
  const at::Tensor packed = pack_panels(w_hh, 1, H, H, 0, 1, H, U, Pack::kBackward);
  const RnnBackwardArgsOf<T> a{B, H, relu, packed.const_data_ptr<T>(), grad_out, out, len, dh,
                               dpre};
  const auto kernel = layer<T>(k).rnn_backward;
  run_backward(T_, reverse, workers_for(blocks, B * H * H), blocks,
               [&](int64_t t_prev, int64_t t, int64_t jb) { kernel(a, t_prev, t, jb); });
}

// The drivers for both element types.
#define RNNKIT_FAST_DRIVERS(T)                                                                   \
  template void lstm_forward<T>(const Kernels&, int64_t, int64_t, int64_t, int64_t, bool,        \
                                const int64_t*, const T*, int64_t, const T*, const T*, const T*, \
                                const T*, T*, T*, T*, T*);                                       \
  template void gru_forward<T>(const Kernels&, int64_t, int64_t, int64_t, bool, const int64_t*,  \
                               const T*, int64_t, const T*, const T*, const T*, const T*, T*,    \
                               T*, T*);                                                          \
  template void rnn_forward<T>(const Kernels&, int64_t, int64_t, int64_t, bool, bool,            \
                               const int64_t*, const T*, int64_t, const T*, const T*, const T*,  \
                               T*, T*);                                                          \
  template void lstm_backward<T>(const Kernels&, int64_t, int64_t, int64_t, bool,                \
                                 const int64_t*, const GradOutOf<T>&, const T*, const T*,        \
                                 const T*, T*, T*, T*);                                          \
  template void gru_backward<T>(const Kernels&, int64_t, int64_t, int64_t, bool, const int64_t*, \
                                const GradOutOf<T>&, const T*, const T*, const T*, const T*, T*, \
                                T*);                                                             \
  template void rnn_backward<T>(const Kernels&, int64_t, int64_t, int64_t, bool, bool,           \
                                const int64_t*, const GradOutOf<T>&, const T*, const T*, T*,     \
                                T*);                                                             \
  template GradOutOf<T> grad_out_view<T>(const at::Tensor&, at::Tensor*);
RNNKIT_FAST_DRIVERS(float)
RNNKIT_FAST_DRIVERS(double)
#undef RNNKIT_FAST_DRIVERS

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
