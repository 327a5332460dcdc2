// The drivers of the bfloat16 layers (see bf16_path.h): the step loop of
// low_precision_driver.h with bfloat16 operands.

#include "bf16_path.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "fast_path.h"
#include "low_precision_driver.h"

namespace rnnkit {
namespace cpu {
namespace fast {
namespace {

int64_t even(int64_t K) { return (K + 1) / 2 * 2; }

// A bfloat16 weight [rows, K], contiguous.
struct Bf16Matrix {
  const Bf16Bits* w;
};

struct PackedBf16 {
  at::Tensor panels;  // float32 elements, each a pair of bfloat16 (see pack)
  int64_t Kp = 0;
  Bf16Panels view() const {
    return {reinterpret_cast<const Bf16Bits*>(panels.const_data_ptr<float>()), Kp};
  }
};

// The bfloat16 rows of an operand K wide, `copies` copies of `rows` rows (the Rows
// of low_precision_driver.h), or the caller's rows as they are (input()).
struct RowRounder {
  int64_t rows = 0, K = 0, Kp = 0;
  at::Tensor memory;
  const Bf16Bits* q = nullptr;
  void (*round_row)(const float*, int64_t, int64_t, Bf16Bits*) = nullptr;
  RowRounder() = default;
  RowRounder(const Bf16Kernels& k, int64_t rows_, int64_t K_, int64_t copies, Pack kind)
      : rows(rows_), K(K_), Kp(even(K_)), round_row(k.round_row) {
    memory = kept_memory<int16_t>(std::max<int64_t>(1, std::max<int64_t>(1, copies) * rows * Kp),
                                  kind);
    q = reinterpret_cast<const Bf16Bits*>(memory.const_data_ptr<int16_t>());
  }
  Bf16Bits* row(int64_t copy, int64_t b) const {
    return const_cast<Bf16Bits*>(q) + (copy * rows + b) * Kp;
  }
  void from_floats(const float* x, int64_t copy) {
    for (int64_t b = 0; b < rows; ++b) round_row(x + b * K, K, Kp, row(copy, b));
  }
  Bf16Rows view(int64_t copy = 0, int64_t first = 0) const {
    return {q + (copy * rows + first) * Kp, Kp};
  }
};

// The bfloat16 operands of low_precision_driver.h.
struct Bf16Kind {
  using Kernels = Bf16Kernels;
  using Matrix = Bf16Matrix;
  using Input = Bf16Bits;
  using Packed = PackedBf16;
  using Panels = Bf16Panels;
  using Rows = RowRounder;

  // The panels of pairs are the float panels of fast_kernels.h with a pair of
  // bfloat16 (32 bits) in place of each float and Kp / 2 rows: the float packer
  // lays them out, moving bits it never computes with. A weight of odd K is first
  // widened to rows of Kp with a zero at the end (as is one not aligned to 4 bytes).
  static Packed pack(const Kernels&, const Matrix& w, int64_t gates, int64_t H, int64_t K,
                     int64_t U, Pack kind) {
    Packed p;
    p.Kp = even(K);
    const int64_t pairs = p.Kp / 2;
    at::Tensor widened;
    const Bf16Bits* src = w.w;
    if (p.Kp != K || reinterpret_cast<uintptr_t>(src) % alignof(float) != 0) {
      widened = at::zeros({std::max<int64_t>(1, gates * H * p.Kp)}, at::kShort);
      Bf16Bits* dst = reinterpret_cast<Bf16Bits*>(widened.mutable_data_ptr<int16_t>());
      for (int64_t r = 0; r < gates * H; ++r)
        std::memcpy(dst + r * p.Kp, src + r * K, sizeof(Bf16Bits) * K);
      src = dst;
    }
    p.panels = pack_panels<float>(reinterpret_cast<const float*>(src), gates, H, pairs,
                                  H * pairs, pairs, 1, U, kind);
    return p;
  }

  static Rows input(const Kernels& k, const Bf16Bits* x, int64_t rows, int64_t I) {
    if (I % 2 == 0) {  // the pairs of x's rows as they are
      Rows in;
      in.rows = rows;
      in.K = in.Kp = I;
      in.q = x;
      return in;
    }
    Rows in(k, rows, I, 1, Pack::kQuantizedInput);
    at::parallel_for(0, rows, 256, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        Bf16Bits* dst = in.row(0, r);
        std::memcpy(dst, x + r * I, sizeof(Bf16Bits) * I);
        dst[I] = 0;
      }
    });
    return in;
  }

  static void (*begin_thread(const Kernels&))() { return nullptr; }
};

using Bf16Projection = LowPrecisionProjection<Bf16Matrix>;

}  // namespace

const Bf16Kernels* bf16_select() {
// As the kernels' file (bf16_kernels_avx512.cpp): GCC 10 or later, or clang.
#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
  static const Bf16Kernels* const avx512 =
      __builtin_cpu_supports("avx512bf16") ? bf16_kernels_avx512() : nullptr;
#else
  static const Bf16Kernels* const avx512 = nullptr;
#endif
  const Kernels* floats = select();
  return avx512 && floats && std::strcmp(floats->name, "avx512") == 0 ? avx512 : nullptr;
}

void bf16_lstm_forward(const Bf16Kernels& k, int64_t T_, int64_t B, int64_t H, int64_t P,
                       bool reverse, const int64_t* len, const Bf16Bits* x, int64_t I,
                       const Bf16Bits* w_ih, const float* bias, const Bf16Bits* w_hh,
                       const Bf16Bits* w_hr, float* h, float* c, float* out, float* reserve) {
  const int64_t W = k.width;
  if (w_hr == nullptr) {
    run_low_precision<Bf16Kind>(k, T_, B, H, H, 4, W, reverse, x, I, {w_ih}, bias, {w_hh}, h,
                                LstmForwardArgsOf<float>{B, H, H, nullptr, nullptr, 0, len, c,
                                                         out, reserve, nullptr},
                                k.lstm_forward, nullptr);
    return;
  }
  const at::Tensor h_full = at::zeros({std::max<int64_t>(1, B * H)}, at::kFloat);
  const Bf16Projection projected{{w_hr}, P, len, h_full.mutable_data_ptr<float>(), out};
  run_low_precision<Bf16Kind>(k, T_, B, H, P, 4, W, reverse, x, I, {w_ih}, bias, {w_hh}, h,
                              LstmForwardArgsOf<float>{B, H, P, nullptr, nullptr, 0, len, c,
                                                       nullptr, reserve,
                                                       h_full.mutable_data_ptr<float>()},
                              k.lstm_forward, &projected);
}

void bf16_gru_forward(const Bf16Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse,
                      const int64_t* len, const Bf16Bits* x, int64_t I, const Bf16Bits* w_ih,
                      const float* bias, const Bf16Bits* w_hh, const float* b_hn, float* h,
                      float* out, float* reserve) {
  run_low_precision<Bf16Kind>(
      k, T_, B, H, H, 3, k.width, reverse, x, I, {w_ih}, bias, {w_hh}, h,
      GruForwardArgsOf<float>{B, H, nullptr, nullptr, 0, b_hn, len, out, reserve},
      k.gru_forward, nullptr);
}

void bf16_rnn_forward(const Bf16Kernels& k, int64_t T_, int64_t B, int64_t H, bool reverse,
                      bool relu, const int64_t* len, const Bf16Bits* x, int64_t I,
                      const Bf16Bits* w_ih, const float* bias, const Bf16Bits* w_hh, float* h,
                      float* out) {
  run_low_precision<Bf16Kind>(k, T_, B, H, H, 1, kPlainVectors * k.width, reverse, x, I,
                              {w_ih}, bias, {w_hh}, h,
                              RnnForwardArgsOf<float>{B, H, relu, nullptr, nullptr, 0, len, out},
                              k.rnn_forward, nullptr);
}

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
