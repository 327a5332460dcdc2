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
#include "low_precision_driver.h"

namespace rnnkit {
namespace cpu {
namespace fast {
namespace {

// K rounded up to a multiple of the kernels' alignment.
int64_t padded(int64_t K, int64_t depth) { return (K + depth - 1) / depth * depth; }

at::Tensor floats(int64_t n) {
  return at::empty({std::max<int64_t>(1, n)}, at::TensorOptions().dtype(at::kFloat));
}

// The quantized form of the rows of a K-wide float operand, `copies` copies (the
// Rows of low_precision_driver.h).
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
  void from_floats(const float* x, int64_t copy) {
    for (int64_t b = 0; b < rows; ++b) quantize(x, b, copy);
  }
  // From row `first` of copy `copy` on.
  QuantizedRows view(int64_t copy = 0, int64_t first = 0) const {
    const int64_t r = copy * rows + first;
    return {levels.const_data_ptr<Level>() + (r + copy * kTileRows) * Kp,
            scales.const_data_ptr<float>() + r, Kp};
  }
};

// The int8 operands of low_precision_driver.h, with the levels of the kernels
// (see quantized_kernels.h).
template <typename Level>
struct Int8Kind {
  using Kernels = QuantizedKernels;
  using Matrix = Int8Matrix;
  using Input = float;
  using Packed = PackedInt8;
  using Panels = QuantizedPanels;
  using Rows = RowQuantizer<Level>;
  // Kept between calls (quantized_pack.h), not in kept memory.
  static Packed pack(const Kernels& k, const Matrix& w, int64_t gates, int64_t H, int64_t K,
                     int64_t U, Pack) {
    return packed_int8(w, gates, H, K, U, k.depth, k.align);
  }
  static Rows input(const Kernels& k, const float* x, int64_t rows, int64_t I) {
    Rows in(k, rows, I, 1, Pack::kQuantizedInput);
    at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) in.quantize(x, r);
    });
    return in;
  }
  static void (*begin_thread(const Kernels& k))() { return k.begin_thread; }
};

using QuantizedProjection = LowPrecisionProjection<Int8Matrix>;

// The layer's step loop with the levels of the kernels `k`.
template <typename Args, typename Kernel>
void run_layer(const QuantizedKernels& k, int64_t T_, int64_t B, int64_t H, int64_t K,
               int64_t gates, int64_t U, bool reverse, const float* x, int64_t I,
               Int8Matrix w_ih, const float* bias, Int8Matrix w_hh, float* h, Args a,
               Kernel kernel, const QuantizedProjection* projected = nullptr) {
  if (k.depth == 4) {
    run_low_precision<Int8Kind<uint8_t>>(k, T_, B, H, K, gates, U, reverse, x, I, w_ih, bias,
                                         w_hh, h, a, kernel, projected);
  } else {
    run_low_precision<Int8Kind<int16_t>>(k, T_, B, H, K, gates, U, reverse, x, I, w_ih, bias,
                                         w_hh, h, a, kernel, projected);
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
