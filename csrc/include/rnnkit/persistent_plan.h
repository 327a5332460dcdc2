#pragma once
// The planner of the persistent recurrence: decides whether one layer direction
// (or both directions of a bidirectional layer) can run as a single persistent
// CUDA launch (W_hh resident on chip for all T steps, one grid-wide
// synchronisation per step) and with which launch geometry.
// Host-only C++ with no CUDA dependency, so it is unit-tested on CPU machines.
//
// The kernel it plans for (csrc/cuda/persistent/persistent_forward.cu):
//   - `blocks` blocks, each owning `units_per_block` consecutive hidden units
//     [u0, u0 + U) and therefore the G*U rows {g*H + u0 + u} of W_hh (all gates of
//     its units, so the gate math needs no data from other blocks);
//   - the block's W_hh rows live in shared memory, row-major, `rows_padded` rows of
//     `row_stride` elements (zero beyond P and beyond G*U rows);
//   - each step every block stages h_{t-1} [B, P] (read from the previous step's
//     output row, L2 only) into shared memory, its warps split the K = P dimension
//     (`k_warps` warps, 32-wide chunks), each computing a [rows_padded, batch_padded]
//     partial product, which are summed in shared memory for the gate math;
//   - with directions == 2 a second row of `blocks` blocks runs the reverse
//     direction (its own W_hh, its own step barrier) in the same launch;
//   - all blocks must be resident at once (they wait on each other every step), so
//     the planner only accepts a geometry whose per-SM resource needs fit
//     `blocks_per_sm` blocks on every SM, and the launch itself is cooperative
//     (the driver refuses, rather than deadlocks, a grid that cannot be resident).
//
// Sizes: B batch, H hidden, P = width of h (== H; projections are not planned),
// G gates (LSTM 4, GRU 3).

#include <cstdint>
#include <string>

#if defined(__CUDACC__)
#define RNNKIT_PLAN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RNNKIT_PLAN_HOST_DEVICE inline
#endif

#include "rnnkit/layer_contract.h"

namespace rnnkit {
namespace persistent {

// Element types the persistent kernel is written for.
enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

constexpr int64_t dtype_size(DType d) {
  return d == DType::Float64 ? 8 : (d == DType::Float32 ? 4 : 2);
}

// The properties of one device that decide co-residency (cudaDeviceProp names in
// brackets). H100 SXM: 132 SMs, 227 KiB opt-in, 228 KiB/SM, 64K regs/SM.
struct DeviceLimits {
  int64_t sm_count = 0;                 // [multiProcessorCount]
  int64_t smem_per_block_optin = 0;     // bytes [sharedMemPerBlockOptin]
  int64_t smem_per_sm = 0;              // bytes [sharedMemPerMultiprocessor]
  int64_t regs_per_sm = 0;              // [regsPerMultiprocessor]
  int64_t max_threads_per_block = 0;    // [maxThreadsPerBlock]
  int64_t max_threads_per_sm = 0;       // [maxThreadsPerMultiProcessor]
  bool cooperative_launch = true;       // [cooperativeLaunch]
  // Registers per thread of the compiled kernel (cudaFuncAttributes::numRegs); the
  // CUDA op passes the real value, tests pass an assumption.
  int64_t kernel_regs_per_thread = 128;
};

struct Problem {
  Cell cell = Cell::LSTM;
  int64_t batch = 0;   // B
  int64_t hidden = 0;  // H
  int64_t width = 0;   // P, the width of h (H unless an LSTM projection is used)
  DType dtype = DType::BFloat16;
  int64_t directions = 1;  // 2: both directions of a bidirectional layer in one launch
};

// Limits of the kernel as compiled (shared with the kernel; keep in sync).
constexpr int64_t kMaxThreads = 512;       // __launch_bounds__ of the kernel
constexpr int64_t kMaxNTiles = 8;          // 8-column tiles of the batch (B <= 64)
// The kernel comes in two variants with their accumulators [MT][NT][4] in
// registers: "small batch" (n_tiles <= 2, up to 4 row tiles of 16) and "large
// batch" (n_tiles <= 8, up to 2 row tiles).
constexpr int64_t kSmallBatchNTiles = 2;
constexpr int64_t max_m_tiles(int64_t n_tiles) { return n_tiles <= kSmallBatchNTiles ? 4 : 2; }
constexpr int64_t kChunk = 32;             // K elements per warp chunk
constexpr int64_t kSmemReservedPerBlock = 1024;  // the driver's per-block reservation

struct Plan {
  bool fits = false;
  std::string reason;  // why not (empty when it fits)

  int64_t blocks = 0;           // per direction (the grid is blocks x directions)
  int64_t directions = 0;
  int64_t threads = 0;
  int64_t units_per_block = 0;  // U; the last block may own fewer (H - u0)
  int64_t blocks_per_sm = 0;    // ceil(blocks * directions / sm_count)
  int64_t k_warps = 0;          // warps that take part in the h . W_hh^T product
  int64_t m_tiles = 0;          // rows_padded / 16
  int64_t n_tiles = 0;          // batch_padded / 8
  int64_t rows_padded = 0;      // round_up(G*U, 16)
  int64_t batch_padded = 0;     // round_up(B, 8)
  int64_t k_padded = 0;         // round_up(P, 32)
  int64_t row_stride = 0;       // elements between shared-memory rows (bank padding)

  // Dynamic shared memory layout, byte offsets from its start.
  int64_t smem_w = 0;         // W_hh slice   [rows_padded, row_stride]   dtype
  int64_t smem_h = 0;         // staged h     [batch_padded, row_stride]  dtype
  int64_t partial_stride = 0; // rows_padded + 8: floats between partial-sum columns (see
                              // partial_index)
  int64_t smem_partial = 0;   // partial sums [k_warps, batch_padded, partial_stride] float
  int64_t smem_lengths = 0;   // lengths      [batch_padded] int32
  int64_t smem_bytes = 0;     // total
};

// Elements between consecutive shared-memory rows for a row of k_padded elements,
// chosen so that the kernel's 16-byte row loads by 8 lanes (two rows for 16-bit
// types, four for float) hit distinct banks.
int64_t shared_row_stride(DType dtype, int64_t k_padded);

// The plan for this problem on this device. Never returns fits == true for a
// geometry whose blocks cannot all be resident at once.
Plan plan(const Problem& problem, const DeviceLimits& limits);

// Where the partial sum of (row r, batch column n) of one K-warp lives in its
// [batch_padded, partial_stride] slice: column-major, with bit 3 of the row flipped
// in columns whose bit 2 is set. The product's fragment stores write, per
// instruction, rows g and columns 2q for lanes 4g + q; with a stride of 8 mod 32
// floats, columns 0 and 4 (and 2 and 6) start on the same bank and the store is a
// 2-way conflict; flipping bit 3 there moves them 8 banks apart. The gate math's
// loads (thread t: row g*U + t % U of column t / U) keep their banks where U is a
// multiple of 8 (each warp then reads within one aligned group of four columns);
// elsewhere some take more wavefronts, fewer than the stores save
// (tests/test_persistent_plan.py counts both). The flip stays inside an aligned
// group of 16 rows, and rows_padded is a multiple of 16.
RNNKIT_PLAN_HOST_DEVICE int partial_index(int n, int r, int partial_stride) {
  return n * partial_stride + (r ^ (((n >> 2) & 1) << 3));
}

}  // namespace persistent
}  // namespace rnnkit
