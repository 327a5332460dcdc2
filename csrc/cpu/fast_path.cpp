// The drivers of the float32 fast path (see fast_path.h).

#include "fast_path.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
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

at::Tensor empty_floats(int64_t n) { return at::empty({n}, at::TensorOptions().dtype(at::kFloat)); }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t step_of(int64_t T, bool reverse, int64_t s) { return reverse ? T - 1 - s : s; }

}  // namespace

const Kernels* select() {
  static const Kernels* const avx512 = cpu_has_avx512() ? kernels_avx512() : nullptr;
  static const Kernels* const avx2 = cpu_has_avx2() ? kernels_avx2() : nullptr;
  std::string want = "auto";
  if (const char* env = std::getenv("RNNKIT_CPU_ISA")) {
    want = env;
    std::transform(want.begin(), want.end(), want.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  }
  if (want == "generic") return nullptr;
  if (want == "avx2") return avx2;
  TORCH_CHECK(want == "auto" || want.empty() || want == "avx512",
              "RNNKIT_CPU_ISA must be one of auto, avx512, avx2, generic; got '", want, "'");
  return avx512 ? avx512 : avx2;
}

const char* selected_name() {
  const Kernels* k = select();
  return k ? k->name : "generic";
}

at::Tensor pack_panels(const float* src, int64_t gates, int64_t H, int64_t K, int64_t gate_stride,
                       int64_t unit_stride, int64_t k_stride, int64_t U) {
  const int64_t blocks = ceil_div(H, U);
  const int64_t panel = K * gates * U;
  at::Tensor packed = empty_floats(std::max<int64_t>(1, blocks * panel));
  float* dst = packed.mutable_data_ptr<float>();
  // Small packs stay on one thread (a parallel region costs more than they do).
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, panel));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t jb = begin; jb < end; ++jb) {
      float* out = dst + jb * panel;
      for (int64_t g = 0; g < gates; ++g) {
        for (int64_t u = 0; u < U; ++u) {
          const int64_t j = jb * U + u;
          float* col = out + g * U + u;
          if (j >= H) {
            for (int64_t k = 0; k < K; ++k) col[k * gates * U] = 0.0f;
          } else if (unit_stride == 1) {
            // Consecutive units are adjacent in the source: filled row by row below.
            continue;
          } else {
            // A source row per unit: read it in order, the panel (in cache) takes
            // the scattered writes.
            const float* row = src + g * gate_stride + j * unit_stride;
            for (int64_t k = 0; k < K; ++k) col[k * gates * U] = row[k * k_stride];
          }
        }
        if (unit_stride == 1) {
          const int64_t n = std::min<int64_t>(U, H - jb * U);
          for (int64_t k = 0; k < K; ++k) {
            std::memcpy(out + k * gates * U + g * U,
                        src + g * gate_stride + jb * U + k * k_stride, sizeof(float) * n);
          }
        }
      }
    }
  });
  return packed;
}

// ---------------------------------------------------------------- forward

namespace {

// The input projection of a forward driver, computed inside its step loop: for a
// chunk of C steps at a time (C*B about 512 rows, so that each panel of W_ih is
// reused over many rows), each worker projects its own blocks' columns just before
// the first step of the chunk, into a [C*B, G*H] buffer that the steps of that
// chunk read back while it is still in cache. No [T, B, G*H] tensor, no extra
// synchronisation (a worker reads only the columns it wrote).
struct InputChunks {
  int64_t T, B, C;
  bool reverse;
  ProjectionArgs base;  // x: the whole input; y: the chunk buffer

  static int64_t steps_per_chunk(int64_t T, int64_t B) {
    return std::max<int64_t>(1, std::min<int64_t>(T, ceil_div(512, std::max<int64_t>(1, B))));
  }
  // The lowest step t of the chunk that holds position s of the step order.
  int64_t first_t(int64_t s) const {
    const int64_t c0 = s / C * C, c1 = std::min(T, c0 + C);
    return reverse ? T - c1 : c0;
  }
  void project(const Kernels& k, int64_t s, int64_t block) const {
    if (s % C != 0) return;
    ProjectionArgs p = base;
    p.x = base.x + first_t(s) * B * base.K;
    k.projection(p, 0, (std::min(T, s + C) - s) * B, block);
  }
};

// The forward of one layer direction for every cell: packs W_hh and W_ih (`gates`
// gates side by side, blocks of U units), projects the input chunk by chunk inside
// the step loop, and alternates the running state between h and a scratch buffer,
// leaving h_n in h. `a` carries the cell's own arguments; packed, gx and gx_t0 are
// filled in here, and kernel(args, t, h_prev, h_next, block) runs one step.
template <typename Args, typename Kernel>
void run_forward(const Kernels& k, int64_t T, int64_t B, int64_t H, int64_t gates, int64_t U,
                 bool reverse, const float* x, int64_t I, const float* w_ih, const float* bias,
                 const float* w_hh, float* h, Args a, Kernel kernel) {
  const int64_t blocks = ceil_div(H, U);
  const at::Tensor packed = pack_panels(w_hh, gates, H, H, H * H, H, 1, U);
  const at::Tensor packed_ih = pack_panels(w_ih, gates, H, I, H * I, I, 1, U);
  const int64_t C = InputChunks::steps_per_chunk(T, B);
  const at::Tensor chunk = empty_floats(std::max<int64_t>(1, C * B * gates * H));
  const InputChunks in{T, B, C, reverse,
                       ProjectionArgs{gates * H, I, H, static_cast<int>(gates),
                                      packed_ih.const_data_ptr<float>(), x, bias,
                                      chunk.mutable_data_ptr<float>()}};
  const at::Tensor other = empty_floats(std::max<int64_t>(1, B * H));
  float* state[2] = {h, other.mutable_data_ptr<float>()};
  a.packed = packed.const_data_ptr<float>();
  a.gx = chunk.const_data_ptr<float>();
  run_iterations(T, workers_for(blocks, B * gates * H * H), blocks, [&](int64_t s, int64_t jb) {
    in.project(k, s, jb);
    Args step = a;
    step.gx_t0 = in.first_t(s);
    kernel(step, step_of(T, reverse, s), state[s & 1], state[(s + 1) & 1], jb);
  });
  if ((T & 1) && B * H > 0) std::memcpy(h, state[1], sizeof(float) * B * H);
}

}  // namespace

void lstm_forward(const Kernels& k, int64_t T, int64_t B, int64_t H, bool reverse,
                  const int64_t* len, const float* x, int64_t I, const float* w_ih,
                  const float* bias, const float* w_hh, float* h, float* c, float* out,
                  float* reserve) {
  run_forward(k, T, B, H, 4, k.width, reverse, x, I, w_ih, bias, w_hh, h,
              LstmForwardArgs{B, H, nullptr, nullptr, 0, len, c, out, reserve}, k.lstm_forward);
}

void gru_forward(const Kernels& k, int64_t T, int64_t B, int64_t H, bool reverse,
                 const int64_t* len, const float* x, int64_t I, const float* w_ih,
                 const float* bias, const float* w_hh, const float* b_hn, float* h, float* out,
                 float* reserve) {
  run_forward(k, T, B, H, 3, k.width, reverse, x, I, w_ih, bias, w_hh, h,
              GruForwardArgs{B, H, nullptr, nullptr, 0, b_hn, len, out, reserve}, k.gru_forward);
}

void rnn_forward(const Kernels& k, int64_t T, int64_t B, int64_t H, bool reverse, bool relu,
                 const int64_t* len, const float* x, int64_t I, const float* w_ih,
                 const float* bias, const float* w_hh, float* h, float* out) {
  // Plain panels: blocks of kPlainVectors vectors of units.
  run_forward(k, T, B, H, 1, kPlainVectors * k.width, reverse, x, I, w_ih, bias, w_hh, h,
              RnnForwardArgs{B, H, relu, nullptr, nullptr, 0, len, out}, k.rnn_forward);
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

GradOut grad_out_view(const at::Tensor& g, at::Tensor* copy) {
  if (g.scalar_type() == at::kFloat && (g.stride(2) == 1 || g.stride(2) == 0 || g.size(2) <= 1)) {
    return GradOut{g.const_data_ptr<float>(), g.stride(0), g.stride(1),
                   g.stride(2) == 0 && g.size(2) > 1};
  }
  *copy = g.to(at::kFloat).contiguous();
  return GradOut{copy->const_data_ptr<float>(), copy->stride(0), copy->stride(1), false};
}

void lstm_backward(const Kernels& k, int64_t T, int64_t B, int64_t H, bool reverse,
                   const int64_t* len, const GradOut& grad_out, const float* reserve,
                   const float* c0, const float* w_hh, float* dh, float* dc, float* dgates) {
  const int64_t U = kPlainVectors * k.width;
  const int64_t blocks = ceil_div(H, U);
  // W_hh is [4H, H]: the product dgates · W_hh reads it by columns.
  const at::Tensor packed = pack_panels(w_hh, 1, H, 4 * H, 0, 1, H, U);
  const LstmBackwardArgs a{T,  B,   H,  reverse, packed.const_data_ptr<float>(),
                           grad_out, reserve, c0, len, dh, dc, dgates};
  run_backward(T, reverse, workers_for(blocks, B * 4 * H * H), blocks,
               [&](int64_t t_prev, int64_t t, int64_t jb) { k.lstm_backward(a, t_prev, t, jb); });
}

void gru_backward(const Kernels& k, int64_t T, int64_t B, int64_t H, bool reverse,
                  const int64_t* len, const GradOut& grad_out, const float* reserve,
                  const float* out, const float* h0, const float* w_hh, float* dh,
                  float* dgates) {
  const int64_t U = kPlainVectors * k.width;
  const int64_t blocks = ceil_div(H, U);
  const at::Tensor packed = pack_panels(w_hh, 1, H, 3 * H, 0, 1, H, U);
  const GruBackwardArgs a{T,   B,  H,   reverse, packed.const_data_ptr<float>(), grad_out,
                          reserve, out, h0, len, dh,      dgates};
  run_backward(T, reverse, workers_for(blocks, B * 3 * H * H), blocks,
               [&](int64_t t_prev, int64_t t, int64_t jb) { k.gru_backward(a, t_prev, t, jb); });
}

void rnn_backward(const Kernels& k, int64_t T, int64_t B, int64_t H, bool reverse, bool relu,
                  const int64_t* len, const GradOut& grad_out, const float* out,
                  const float* w_hh, float* dh, float* dpre) {
  const int64_t U = kPlainVectors * k.width;
  const int64_t blocks = ceil_div(H, U);
  const at::Tensor packed = pack_panels(w_hh, 1, H, H, 0, 1, H, U);
  const RnnBackwardArgs a{B, H, relu, packed.const_data_ptr<float>(), grad_out, out, len, dh,
                          dpre};
  run_backward(T, reverse, workers_for(blocks, B * H * H), blocks,
               [&](int64_t t_prev, int64_t t, int64_t jb) { k.rnn_backward(a, t_prev, t, jb); });
}

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
