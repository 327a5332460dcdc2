#pragma once
// The step loop of the layers whose products take operands other than the float
// state: the int8 layers (quantized_path.cpp) and the bfloat16 ones (bf16_path.cpp).
// Their cell math, state and outputs are float32 as in the float drivers of
// fast_path.h; what differs, the kind of operand (Kind below), is:
//   Kernels            the kernel table: width, projection, lstm_project, and the
//                      cell kernels the drivers hand in
//   Matrix, Input      a weight matrix as the drivers take it; the input's elements
//   Rows               the operands of the products, one copy per worker:
//                        Rows(k, rows, K, copies, kind)  room for them (Pack kind)
//                        from_floats(x, copy)  all rows of a float operand, into copy
//                        view(copy, first)     the kernels' rows, from row `first`
//   input(k, x, rows, I)   the Rows of the whole input (one copy)
//   Packed, Panels     a weight in panels (fast_kernels.h) and the kernels' view of it
//   pack(k, w, gates, H, K, U, kind)  the Packed panels of U units of a weight
//                      (in kept memory of that Pack kind, or kept between calls),
//                      whose view() is the Panels the kernels take
//   begin_thread(k)    called by each worker before its first kernel, or null
// Each worker converts the whole state itself at the start of its round, which
// costs it B*K conversions (against B*K*N multiply-adds of its share of the
// product) and spares every step a round and its barrier.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <ATen/ops/empty.h>

#include "fast_path.h"

namespace rnnkit {
namespace cpu {
namespace fast {

// The projection phases of an LSTM with proj_size: h_full [B, H] (zeroed: the
// projection also converts the rows of padded steps, and discards their
// products, which the gate kernel does not write) converted, then the product with
// W_hr.
template <typename Matrix>
struct LowPrecisionProjection {
  Matrix w_hr;
  int64_t P;
  const int64_t* len;
  float* h_full;
  float* out;
};

// The forward of one layer direction, run_forward of fast_path.cpp with other
// operands: packs W_hh and W_ih (or finds them packed), converts the whole input,
// then runs the steps, each worker converting the running state (K wide) before
// its blocks of the step's cell kernel, which projects the input chunk by chunk like
// the float drivers. With `projected`, each step is two rounds, the second
// converting h_full and projecting it.
template <typename Kind, typename Args, typename Kernel>
void run_low_precision(const typename Kind::Kernels& k, int64_t T_, int64_t B, int64_t H,
                       int64_t K, int64_t gates, int64_t U, bool reverse,
                       const typename Kind::Input* x, int64_t I,
                       const typename Kind::Matrix& w_ih, const float* bias,
                       const typename Kind::Matrix& w_hh, float* h, Args a, Kernel kernel,
                       const LowPrecisionProjection<typename Kind::Matrix>* projected) {
  using Rows = typename Kind::Rows;
  const int64_t blocks = (H + U - 1) / U;
  using Panels = typename Kind::Panels;
  const typename Kind::Packed hh = Kind::pack(k, w_hh, gates, H, K, U, Pack::kRecurrent);
  const typename Kind::Packed ih = Kind::pack(k, w_ih, gates, H, I, U, Pack::kInput);
  const Panels hh_panels = hh.view(), ih_panels = ih.view();
  const Rows input = Kind::input(k, x, T_ * B, I);

  const int64_t C = input_chunk_steps(T_, B);
  const at::Tensor chunk = kept_memory<float>(std::max<int64_t>(1, C * B * gates * H),
                                              Pack::kInputChunk);
  const ProjectionArgsOf<float> chunk_args{gates * H, I,    H, static_cast<int>(gates), nullptr,
                                           nullptr,   bias, chunk.mutable_data_ptr<float>()};
  const at::Tensor other = at::empty({std::max<int64_t>(1, B * K)}, at::kFloat);
  float* state[2] = {h, other.mutable_data_ptr<float>()};
  a.gx = chunk.const_data_ptr<float>();

  // The projection's panels and arguments (h_prev, h_next: the state's).
  const int64_t PU = kPlainVectors * k.width;
  typename Kind::Packed hr;
  LstmProjectArgsOf<float> project_args{};
  if (projected) {
    hr = Kind::pack(k, projected->w_hr, 1, projected->P, H, PU, Pack::kProjection);
    project_args = {B, H, projected->P, nullptr, projected->len, projected->h_full,
                    projected->out};
  }
  const Panels hr_panels = projected ? hr.view() : Panels{};

  const int64_t rounds = projected ? 2 : 1;
  const int64_t round_blocks[2] = {blocks, projected ? (projected->P + PU - 1) / PU : 0};
  int64_t step_flops = B * gates * H * (K + I);
  if (projected) step_flops += B * H * projected->P;
  const int64_t workers = workers_for(std::max(blocks, round_blocks[1]), step_flops);
  Rows state_rows(k, B, K, workers, Pack::kQuantizedState);
  Rows h_full(k, projected ? B : 0, H, workers, Pack::kQuantizedHidden);
  // The worker that runs block jb of n (run_rounds gives worker w blocks
  // [n*w/workers, n*(w+1)/workers)): the last one whose range starts at or before jb.
  auto worker_of = [&](int64_t n, int64_t jb) { return ((jb + 1) * workers - 1) / n; };
  void (*const begin_thread)() = Kind::begin_thread(k);
  std::vector<char> begun(static_cast<size_t>(workers), 0);  // begin_thread called
  run_rounds(
      T_ * rounds, workers, [&](int64_t it) { return round_blocks[it % rounds]; },
      [&](int64_t it, int64_t jb) {
        const int64_t s = it / rounds, t = reverse ? T_ - 1 - s : s;
        const float* h_prev = state[s & 1];
        float* h_next = state[(s + 1) & 1];
        const int64_t w = worker_of(round_blocks[it % rounds], jb);
        if (it % rounds == 0) {
          const int64_t t0 = chunk_first_step(T_, C, reverse, s);
          if (s % C == 0) {  // its real rows only, as the float drivers'
            const auto rows = input.view(0, t0 * B);
            live_row_runs(a.len, B, t0, std::min(T_, s + C) - s, [&](int64_t r0, int64_t r1) {
              k.projection(chunk_args, rows, ih_panels, r0, r1, jb);
            });
          }
          Args step = a;
          step.gx_t0 = t0;
          kernel(step, state_rows.view(w), hh_panels, t, h_prev, h_next, jb);
        } else {
          k.lstm_project(project_args, h_full.view(w), hr_panels, t, h_prev, h_next, jb);
        }
      },
      [&](int64_t it, int64_t w) {
        if (begin_thread && !begun[w]) {
          begin_thread();
          begun[w] = 1;
        }
        if (it % rounds == 0) {
          state_rows.from_floats(state[(it / rounds) & 1], w);
        } else {
          h_full.from_floats(projected->h_full, w);
        }
      });
  if ((T_ & 1) && B * K > 0) std::memcpy(h, state[1], sizeof(float) * B * K);
}

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
