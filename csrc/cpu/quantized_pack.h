#pragma once
// The int8 weights of the quantized layers in the panels of their kernels
// (QuantizedPanels in quantized_kernels.h), and the panels kept between calls.
//
// A layer call that packed its weights every time would spend more on packing
// than on its steps at small batch (LSTM H = 1024: 8 MB of weights, about as long
// to pack as 100 steps at B = 1 take). The weights of an inference module do not
// change between calls, so the panels of each weight tensor are kept, keyed by the
// tensor and its scales, and used again while both are the same tensors at the
// same version: load_state_dict, copy_ and every other in-place change of either
// bumps the version and repacks. (A write that bypasses the version counter, into
// .data or a numpy view, is not seen: like torch's own prepacked weights, change
// the weights through torch.)

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "quantized_kernels.h"

namespace rnnkit {
namespace cpu {
namespace fast {

// An int8 weight matrix [rows, K] with its per-row scales (float32 [rows]), both
// contiguous, as tensors (the cache's keys) and pointers.
struct Int8Matrix {
  at::Tensor weight, scale;
  const int8_t* q() const { return weight.const_data_ptr<int8_t>(); }
  const float* scales() const { return scale.const_data_ptr<float>(); }
};

// A weight matrix in the int8 panels of quantized_kernels.h.
struct PackedInt8 {
  at::Tensor panels, scales, offsets;
  int64_t Kp = 0;
  QuantizedPanels view() const {
    return {panels.const_data_ptr<int8_t>(), scales.const_data_ptr<float>(),
            offsets.defined() ? offsets.const_data_ptr<int32_t>() : nullptr, Kp};
  }
};

// w [gates*H, K] (gate g's unit j in row g*H + j) in panels of U units, `depth`
// values of k side by side, K padded to a multiple of `align`: the kept panels
// when there are, else packed now (and kept).
PackedInt8 packed_int8(const Int8Matrix& w, int64_t gates, int64_t H, int64_t K, int64_t U,
                       int64_t depth, int64_t align);

// The kept panels: how many and their bytes (for the tests), and a way to drop
// them all.
int64_t packed_int8_entries();
int64_t packed_int8_bytes();
void clear_packed_int8();

}  // namespace fast
}  // namespace cpu
}  // namespace rnnkit
