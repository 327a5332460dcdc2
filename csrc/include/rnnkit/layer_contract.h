#pragma once
// The contract every layer-op kernel implements (CPU, CUDA) and that
// rnnkit/reference.py states in plain PyTorch. One layer, one direction, a whole
// sequence, time-major.
//
// Sizes: T steps, B batch, I input features, H hidden, P = proj_size or H (the
// width of h and of the output), G gates (RNN 1, GRU 3, LSTM 4).
//
// Forward inputs
//   input   [T, B, I]                 float32/float64/float16/bfloat16
//   lengths [B] int64 or absent       on input's device; step t of sequence b is
//                                     real iff t < lengths[b]; 0 <= lengths[b] <= T
//   h0      [B, P], c0 [B, H] (LSTM)  same dtype and device as input
//   w_ih    [G*H, I], w_hh [G*H, P]   torch.nn's layout and gate order
//   b_ih, b_hh [G*H] or both absent
//   w_hr    [P, H] or absent          LSTM projection
//   reverse                           run from the last real step of each sequence
//                                     back to step 0
// Forward outputs
//   output  [T, B, P]                 h of each real step, zero at padded steps
//   h_n     [B, P], c_n [B, H]        the state after each sequence's last real step
//                                     (after step 0 when reverse)
//   reserve                           what the backward needs, in input's dtype:
//     LSTM  [T, B, 5H]  i, f, g, o (after their nonlinearities), c
//     GRU   [T, B, 4H]  r, z, n (after their nonlinearities), hn = W_hn h + b_hn
//     RNN   [0]         the output alone suffices
//                       padded steps hold zeros.
// Backward
//   takes the gradients of output, h_n (and c_n), the forward's inputs, output and
//   reserve; returns the gradients of input, h0 (c0), w_ih, w_hh, b_ih, b_hh (w_hr).
//   The gradient of an absent optional input is an empty tensor.

#include <cstdint>

namespace rnnkit {

enum class Cell : int { RNN_TANH = 0, RNN_RELU = 1, GRU = 2, LSTM = 3 };

constexpr int64_t gate_count(Cell cell) {
  return cell == Cell::LSTM ? 4 : (cell == Cell::GRU ? 3 : 1);
}

// Width of one step's reserve row, in units of H.
constexpr int64_t reserve_width(Cell cell) {
  return cell == Cell::LSTM ? 5 : (cell == Cell::GRU ? 4 : 0);
}

}  // namespace rnnkit
