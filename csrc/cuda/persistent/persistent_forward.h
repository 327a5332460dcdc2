#pragma once
// Host API of the persistent forward kernels (persistent_forward.cu), in plain C++
// so that the op registration (csrc/persistent_ops.cpp) needs no CUDA headers and
// the .cu file no ATen headers. All pointers are device pointers of the layer's
// dtype unless stated; every 16-bit/float pointer read or written with 16-byte
// vectors (w_hh, h0, output) must be 16-byte aligned, and P * sizeof(dtype) must
// be a multiple of 16 (the planner refuses otherwise).

#include <cstdint>
#include <string>

#include "rnnkit/persistent_plan.h"

namespace rnnkit {
namespace persistent {

struct ForwardArgs {
  const void* input_proj;   // [T, B, G*H]  x . W_ihᵀ + b_ih, all steps (hoisted GEMM)
  const void* w_hh;         // [G*H, P]
  const void* b_hh;         // [G*H] or null
  const void* h0;           // [B, P]
  const void* c0;           // [B, H] (LSTM) or null
  const int64_t* lengths;   // [B] int64 or null (then every sequence has T steps)
  void* output;             // [T, B, P]   also the h_t each step's blocks read
  void* h_n;                // [B, P]
  void* c_n;                // [B, H] (LSTM) or null
  void* reserve;            // [T, B, 5H] (LSTM: i, f, g, o, c) or [T, B, 4H] (GRU: r, z, n, hn)
  unsigned int* counter;    // [1] unsigned int, zero before the launch (step barrier)
  int64_t steps;            // T
  int64_t batch;            // B
  int64_t hidden;           // H
  int64_t width;            // P (== H)
  bool reverse;

  // Geometry, copied from the Plan.
  int units_per_block;
  int k_warps;
  int m_tiles;
  int n_tiles;
  int rows_padded;
  int batch_padded;
  int k_padded;
  int row_stride;
  int partial_stride;
  int smem_w;
  int smem_h;
  int smem_partial;
  int smem_lengths;
};

// One launch: directions[0] on grid row blockIdx.y == 0, directions[1] (when
// plan.directions == 2, normally the reverse direction) on row 1. Same geometry,
// own pointers and own counter each.
struct ForwardLaunch {
  ForwardArgs direction[2];
};

// Fills the geometry fields of `args` from `plan`.
void set_geometry(ForwardArgs& args, const Plan& plan);

// Registers per thread and the max threads per block of the kernel that would run
// (cell, dtype, n_tiles) on the current device; {0, 0} if there is none.
struct KernelInfo {
  int regs_per_thread;
  int max_threads_per_block;
};
KernelInfo forward_kernel_info(Cell cell, DType dtype, int64_t n_tiles);

// Launches the persistent forward on `stream` (a cudaStream_t) with the plan's
// geometry after checking, with the occupancy calculator of the compiled kernel,
// that all plan.blocks * plan.directions blocks can be resident at once. Uses
// launch.direction[0 .. plan.directions). Returns an empty string on success,
// else the error.
std::string launch_forward(Cell cell, DType dtype, const ForwardLaunch& launch, const Plan& plan,
                           void* stream);

}  // namespace persistent
}  // namespace rnnkit
