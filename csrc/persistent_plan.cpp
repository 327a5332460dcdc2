// The planner of the persistent recurrence (see rnnkit/persistent_plan.h).
//
// It tries every number of hidden units per block U, keeps those whose blocks fit
// on chip and can all be resident at once, and picks the one with the least
// padded W_hh work per SM (that bounds the step's on-chip time), then the fewest
// blocks (a cheaper grid barrier and less L2 traffic for the h broadcast).

#include "rnnkit/persistent_plan.h"

#include <algorithm>

namespace rnnkit {
namespace persistent {
namespace {

const char* const kTileLimit = "too many accumulator tiles per warp";

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Shared-memory layout and thread count of one candidate; fills `out` and
// returns an empty string, or returns why the candidate is impossible.
std::string layout(const Problem& p, const DeviceLimits& d, int64_t units, Plan& out) {
  const int64_t gates = gate_count(p.cell);
  const int64_t elt = dtype_size(p.dtype);
  out.units_per_block = units;
  out.blocks = ceil_div(p.hidden, units);
  out.rows_padded = round_up(gates * units, 16);
  out.batch_padded = round_up(p.batch, 8);
  out.m_tiles = out.rows_padded / 16;
  out.n_tiles = out.batch_padded / 8;
  if (out.m_tiles > max_m_tiles(out.n_tiles)) {
    return kTileLimit;
  }
  out.k_padded = round_up(p.width, kChunk);
  out.row_stride = shared_row_stride(p.dtype, out.k_padded);

  // Threads: enough K-warps to keep several h loads in flight per warp and a short
  // chain of products, and at least one thread per (unit, batch) pair of the gate
  // math, which keeps each pair's state in that thread's registers.
  const int64_t chunks = out.k_padded / kChunk;
  const int64_t max_threads = std::min(kMaxThreads, d.max_threads_per_block);
  const int64_t pair_warps = ceil_div(units * p.batch, 32);
  const int64_t warps = std::max(std::min<int64_t>(chunks, 8), std::max<int64_t>(pair_warps, 4));
  out.threads = warps * 32;
  if (out.threads > max_threads) return "more (unit, batch) pairs per block than threads";
  out.k_warps = std::min(warps, chunks);

  int64_t offset = 0;
  auto take = [&offset](int64_t bytes) {
    const int64_t at = offset;
    offset = round_up(offset + bytes, 16);
    return at;
  };
  out.smem_w = take(out.rows_padded * out.row_stride * elt);
  out.smem_h = take(out.batch_padded * out.row_stride * elt);
  // Transposed ([column][row]), padded by 8 rows and swizzled (partial_index) so that
  // both the fragment stores of the product and the gate math's loads are free of
  // bank conflicts (tests/test_persistent_plan.py counts them).
  out.partial_stride = out.rows_padded + 8;
  out.smem_partial = take(out.k_warps * out.batch_padded * out.partial_stride * 4);
  out.smem_lengths = take(out.batch_padded * 4);
  out.smem_bytes = offset;
  if (out.smem_bytes > d.smem_per_block_optin) return "the W_hh slice does not fit in shared memory";

  // Co-residency: every SM must hold blocks_per_sm blocks at once.
  out.directions = p.directions;
  out.blocks_per_sm = ceil_div(out.blocks * p.directions, d.sm_count);
  const int64_t per_sm = out.blocks_per_sm;
  if (per_sm * (out.smem_bytes + kSmemReservedPerBlock) > d.smem_per_sm) {
    return "blocks cannot be co-resident (shared memory per SM)";
  }
  if (per_sm * out.threads > d.max_threads_per_sm) {
    return "blocks cannot be co-resident (threads per SM)";
  }
  // Registers are allocated per warp in units of 256.
  const int64_t warp_regs = round_up(round_up(d.kernel_regs_per_thread, 8) * 32, 256);
  if (per_sm * warps > d.regs_per_sm / warp_regs) {
    return "blocks cannot be co-resident (registers per SM)";
  }
  return "";
}

}  // namespace

int64_t shared_row_stride(DType dtype, int64_t k_padded) {
  if (dtype_size(dtype) == 2) {
    // Lanes 0-7 of a 16-byte load read 64 bytes from each of two rows: put the
    // second row half a bank line (64 bytes) away from the first.
    return k_padded % 64 == 32 ? k_padded : k_padded + 32;
  }
  // float: lanes 0-7 read 16 bytes from rows 0, 2, 4, 6 (and 0, 1 of W): a row
  // stride of 16 bytes more than a multiple of 128 spreads them over the banks.
  return k_padded + 4;
}

Plan plan(const Problem& p, const DeviceLimits& d) {
  Plan none;
  auto refuse = [&none](std::string why) {
    none.fits = false;
    none.reason = std::move(why);
    return none;
  };
  if (p.cell != Cell::LSTM && p.cell != Cell::GRU) return refuse("only LSTM and GRU cells");
  if (p.dtype == DType::Float64) return refuse("float64 is not supported");
  if (p.batch < 1 || p.hidden < 1 || p.width < 1) return refuse("empty problem");
  if (p.directions != 1 && p.directions != 2) return refuse("directions must be 1 or 2");
  if (p.width != p.hidden) return refuse("LSTM projections (proj_size) are not supported");
  const int64_t vector = 16 / dtype_size(p.dtype);
  if (p.width % vector != 0) {
    return refuse("hidden size must be a multiple of " + std::to_string(vector) +
                  " (16-byte rows)");
  }
  if (round_up(p.batch, 8) > 8 * kMaxNTiles) {
    return refuse("batch too large (at most " + std::to_string(8 * kMaxNTiles) + ")");
  }
  if (!d.cooperative_launch) return refuse("the device does not support cooperative launch");
  if (d.sm_count < 1) return refuse("no SMs");

  Plan best;
  // The reason reported is that of the largest block that got past the tile limit
  // (the resource that ran out), else the tile limit itself.
  std::string last_reason = kTileLimit;
  const int64_t max_units = std::min<int64_t>(p.hidden, 16 * max_m_tiles(1));
  for (int64_t units = 1; units <= max_units; ++units) {
    Plan candidate;
    std::string why = layout(p, d, units, candidate);
    if (!why.empty()) {
      if (why != kTileLimit) last_reason = why;
      continue;
    }
    candidate.fits = true;
    if (!best.fits) {
      best = candidate;
      continue;
    }
    // Per-SM work counts both directions: their blocks share the SMs.
    const int64_t work = candidate.rows_padded * candidate.blocks_per_sm;
    const int64_t best_work = best.rows_padded * best.blocks_per_sm;
    if (work < best_work || (work == best_work && candidate.blocks < best.blocks)) {
      best = candidate;
    }
  }
  if (!best.fits) return refuse(last_reason);
  return best;
}

}  // namespace persistent
}  // namespace rnnkit
