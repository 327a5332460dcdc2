// The persistent forward of one LSTM or GRU layer direction: one launch runs all
// T steps. Arguments and their shapes: persistent_forward.h; the geometry and the
// shared-memory layout: rnnkit/persistent_plan.h. tests/test_persistent_transliteration.py
// follows this kernel line by line on the CPU: a change to its index math changes that
// file with it.
//
// Block b owns hidden units [u0, u0 + U), u0 = b * U, and keeps their G*U rows of
// W_hh (local row g*U + u is W_hh row g*H + u0 + u) in shared memory for the whole
// sequence. One step:
//   1. wait until every block has published h_{t-1} (step_barrier.cuh);
//   2. the K-warps stage their K ranges of h_{t-1} [B, P] into shared memory with
//      cp.async.cg (L2 only). h_{t-1} of sequence b is row b of output[t-1]
//      (output[t+1] when reverse), or h0 before the sequence's first step: the
//      output doubles as the broadcast buffer, so there is no ping-pong buffer to
//      get wrong and no extra store per step;
//   3. each K-warp multiplies its K range (warp_product.cuh) and stores its
//      partial sums (at partial_index, persistent_plan.h); __syncthreads;
//   4. one thread per (unit, batch) pair sums the partials, adds the prefetched
//      input projection and b_hh, runs the gate math of cells.h in float, and
//      stores output[t]; __syncthreads;
//   5. arrive at the step barrier, then store the reserve and final states and
//      prefetch the next step's input projection while the other blocks finish.
// Each pair's thread keeps its cell state c (LSTM, float) and its h_{t-1} (GRU,
// as rounded to the dtype, the value every other block reads) in registers.
//
// Why output[t-1] is safe to read as h_{t-1}: it is written at step t-1 before
// the barrier and nobody writes it again. A padded step writes zeros to output,
// but the only rows read are those of a sequence's own real previous step (for
// a sequence past its end, the row read is garbage-in, garbage-out: its results
// are not stored).

// Expected critical path of one step (LSTM bf16 B=16 H=768 on an H100: 96
// blocks of 8 units, 8 K-warps of 96 columns), not yet measured:
//   release (fence waits for the output stores) + atomic + the waiters' poll:
//     about three L2 round trips;
//   staging h_{t-1}: one L2 round trip (6 x 16 bytes in flight per lane);
//   product: 24 mma.sync and ~18 16-byte shared loads per warp;
//   partials, a block barrier, 32 shared loads and the gate math per pair.
// If the GPU run shows this above the 2.5 us/step target, the next levers are:
// W_hh in registers (no shared loads on the path), a step tag stored beside each
// h value so that readers poll the data itself (no separate fence and flag), and
// a cheaper exp in the gate math.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "persistent_forward.h"
#include "rnnkit/cells.h"
#include "step_barrier.cuh"
#include "warp_product.cuh"

namespace rnnkit {
namespace persistent {
namespace {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Read-only for the whole kernel: may go through the non-coherent path.
template <typename T>
__device__ __forceinline__ float load_constant(const T* p) {
  return to_float(__ldg(p));
}

__device__ __forceinline__ void copy_async_16(void* smem_dst, const void* global_src) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(global_src)
               : "memory");
}

__device__ __forceinline__ void copy_async_wait_all() {
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;" ::: "memory");
}

template <Cell kCell>
struct CellTraits;
template <>
struct CellTraits<Cell::LSTM> {
  static constexpr int kGates = 4;
  static constexpr int kReserve = 5;
};
template <>
struct CellTraits<Cell::GRU> {
  static constexpr int kGates = 3;
  static constexpr int kReserve = 4;
};

// MT x NT: the accumulator tile per K-warp (see max_m_tiles in persistent_plan.h).
template <typename T, Cell kCell, int MT, int NT>
__global__ void __launch_bounds__(kMaxThreads, 1)
    persistent_forward_kernel(const __grid_constant__ ForwardLaunch launch) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // cp.async and the bf16/fp16 mma shapes of warp_product.cuh need sm_80. A build
  // for an older architecture as well keeps this stub there; launch_forward refuses
  // such a device before it gets here.
  __trap();
#else
  // __grid_constant__: the direction's arguments are read in place from the
  // parameter space, not copied to local memory for the run-time index.
  const ForwardArgs& a = launch.direction[blockIdx.y];
  constexpr int G = CellTraits<kCell>::kGates;
  constexpr int kReserve = CellTraits<kCell>::kReserve;
  constexpr int kVector = 16 / sizeof(T);  // elements per 16-byte copy

  extern __shared__ __align__(16) unsigned char smem[];
  T* w_s = reinterpret_cast<T*>(smem + a.smem_w);
  T* h_s = reinterpret_cast<T*>(smem + a.smem_h);
  float* partial_s = reinterpret_cast<float*>(smem + a.smem_partial);
  int* length_s = reinterpret_cast<int*>(smem + a.smem_lengths);

  const int64_t T_steps = a.steps, B = a.batch, H = a.hidden, P = a.width;
  const int U = a.units_per_block;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * U;
  const int units_here = static_cast<int>(H - u0 < U ? H - u0 : U);
  const int S = a.row_stride;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;

  const T* input_proj = static_cast<const T*>(a.input_proj);
  const T* w_hh = static_cast<const T*>(a.w_hh);
  const T* b_hh = static_cast<const T*>(a.b_hh);
  const T* h0 = static_cast<const T*>(a.h0);
  const T* c0 = static_cast<const T*>(a.c0);
  T* output = static_cast<T*>(a.output);
  T* h_n = static_cast<T*>(a.h_n);
  T* c_n = static_cast<T*>(a.c_n);
  T* reserve = static_cast<T*>(a.reserve);

  // ---- Prologue: W_hh slice, zeroed h staging area, lengths.
  {
    const int row_vectors = S / kVector;
    const int w_vectors = a.rows_padded * row_vectors;
    for (int i = threadIdx.x; i < w_vectors; i += blockDim.x) {
      const int r = i / row_vectors;
      const int k = (i % row_vectors) * kVector;
      const int gate = r / U, u = r % U;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < G * U && u < units_here && k < P) {
        const int64_t row = gate * H + u0 + u;
        v = __ldg(reinterpret_cast<const uint4*>(w_hh + row * P + k));
      }
      *reinterpret_cast<uint4*>(w_s + r * S + k) = v;
    }
    const int h_vectors = a.batch_padded * row_vectors;
    for (int i = threadIdx.x; i < h_vectors; i += blockDim.x) {
      reinterpret_cast<uint4*>(h_s)[i] = make_uint4(0, 0, 0, 0);
    }
    for (int b = threadIdx.x; b < a.batch_padded; b += blockDim.x) {
      int len = 0;
      if (b < B) {
        const int64_t l = a.lengths ? a.lengths[b] : T_steps;
        len = static_cast<int>(l < 0 ? 0 : (l > T_steps ? T_steps : l));
      }
      length_s[b] = len;
    }
  }

  // ---- The (unit, batch) pair of this thread, unit fastest (coalesced stores).
  const int pair_u = threadIdx.x % U;
  const int64_t pair_b = threadIdx.x / U;
  const bool has_pair = pair_b < B && pair_u < units_here;
  const int64_t unit = u0 + pair_u;  // global hidden index
  int64_t length = 0;
  float bias[G];
  float c_state = 0.f;  // LSTM cell state
  float h_state = 0.f;  // h_{t-1} of this element (GRU's z * h term)
  float x_next[G];      // input projection of the coming step
#pragma unroll
  for (int g = 0; g < G; ++g) {
    bias[g] = 0.f;
    x_next[g] = 0.f;
  }
  if (has_pair) {
    const int64_t l = a.lengths ? a.lengths[pair_b] : T_steps;
    length = l < 0 ? 0 : (l > T_steps ? T_steps : l);
#pragma unroll
    for (int g = 0; g < G; ++g) bias[g] = b_hh ? load_constant(b_hh + g * H + unit) : 0.f;
    h_state = load_constant(h0 + pair_b * P + unit);
    if (kCell == Cell::LSTM) c_state = load_constant(c0 + pair_b * H + unit);
    if (length == 0) {  // no step at all: the final state is the initial one
      h_n[pair_b * P + unit] = h0[pair_b * P + unit];
      if (kCell == Cell::LSTM) c_n[pair_b * H + unit] = c0[pair_b * H + unit];
    }
    const int64_t t0 = a.reverse ? T_steps - 1 : 0;
    if (t0 < length) {
#pragma unroll
      for (int g = 0; g < G; ++g) {
        x_next[g] = load_constant(input_proj + (t0 * B + pair_b) * (G * H) + g * H + unit);
      }
    }
  }

  // The K range of this warp, in 32-element chunks.
  const int chunks = a.k_padded / 32;
  const int chunk_begin = warp < a.k_warps ? warp * chunks / a.k_warps : 0;
  const int chunk_end = warp < a.k_warps ? (warp + 1) * chunks / a.k_warps : 0;
  const int p_vectors_in_range =
      static_cast<int>(((chunk_end * 32 < P ? chunk_end * 32 : P) - chunk_begin * 32) / kVector);

  __syncthreads();

  const unsigned int blocks = gridDim.x;  // of this direction, sharing its counter
  for (int64_t s = 0; s < T_steps; ++s) {
    const int64_t t = a.reverse ? T_steps - 1 - s : s;

    // 1. h_{t-1} of every block is in output[...] (or h0) once all have arrived.
    if (s > 0) step_wait(a.counter, static_cast<unsigned int>(blocks * static_cast<uint64_t>(s)));

    if (warp < a.k_warps) {  // every K-warp's range holds at least one real element
      // 2. Stage rows b < B of this warp's K range of h_{t-1}.
      const int items = static_cast<int>(B) * p_vectors_in_range;
      for (int i = lane; i < items; i += 32) {
        const int b = i / p_vectors_in_range;
        const int k = chunk_begin * 32 + (i % p_vectors_in_range) * kVector;
        const T* src;
        if (!a.reverse) {
          src = t == 0 ? h0 + static_cast<int64_t>(b) * P
                       : output + ((t - 1) * B + b) * P;
        } else {
          src = t + 1 < length_s[b] ? output + ((t + 1) * B + b) * P
                                    : h0 + static_cast<int64_t>(b) * P;
        }
        copy_async_16(h_s + b * S + k, src + k);
      }
      copy_async_wait_all();
      __syncwarp();

      // 3. Partial product over the K range, stored transposed: [warp][n][r].
      float acc[MT][NT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.f;
      warp_product(acc, w_s, h_s, S, a.m_tiles, a.n_tiles, chunk_begin, chunk_end, lane);
      float* mine = partial_s + warp * a.batch_padded * a.partial_stride;
      const int g = lane >> 2, q = lane & 3;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if (mt >= a.m_tiles) break;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          if (nt >= a.n_tiles) break;
          const int r = mt * 16 + g, n = nt * 8 + 2 * q;
          const int S = a.partial_stride;
          mine[partial_index(n, r, S)] = acc[mt][nt][0];
          mine[partial_index(n + 1, r, S)] = acc[mt][nt][1];
          mine[partial_index(n, r + 8, S)] = acc[mt][nt][2];
          mine[partial_index(n + 1, r + 8, S)] = acc[mt][nt][3];
        }
      }
    }
    __syncthreads();

    // 4. Gate math of this thread's (unit, batch) pair. Only output[t] is stored
    //    before the arrival: it is all the other blocks need, and the release
    //    fence waits for the block's outstanding stores. The reserve and the final
    //    states are kept in registers and stored after it.
    const int64_t at = t * B + pair_b;  // row of output / reserve
    const bool active = has_pair && t < length;
    float saved[kReserve];              // this step's reserve row entries
    T h_new = from_float<T>(0.f);
#pragma unroll
    for (int r = 0; r < kReserve; ++r) saved[r] = 0.f;
    if (active) {
      float pre[G];
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float sum = bias[g];
        const float* col = partial_s + partial_index(static_cast<int>(pair_b), g * U + pair_u,
                                                     a.partial_stride);
        for (int w = 0; w < a.k_warps; ++w) sum += col[w * a.batch_padded * a.partial_stride];
        pre[g] = sum;
      }
      if constexpr (kCell == Cell::LSTM) {
        const auto st = cells::lstm_forward<float>(x_next[0] + pre[0], x_next[1] + pre[1],
                                                  x_next[2] + pre[2], x_next[3] + pre[3],
                                                  c_state);
        h_new = from_float<T>(st.h);
        saved[0] = st.i;
        saved[1] = st.f;
        saved[2] = st.g;
        saved[3] = st.o;
        saved[4] = st.c;
        c_state = st.c;
      } else {
        // pre[] holds W_h* h + b_h*: r scales the n gate's *with* its bias.
        const auto st = cells::gru_forward<float>(x_next[0], x_next[1], x_next[2], pre[0],
                                                 pre[1], pre[2], h_state);
        h_new = from_float<T>(st.h);
        saved[0] = st.r;
        saved[1] = st.z;
        saved[2] = st.n;
        saved[3] = pre[2];
        h_state = to_float(h_new);
      }
    }
    if (has_pair) output[at * P + unit] = h_new;  // zero at a padded step
    __syncthreads();  // the block's output[t] stores precede its arrival

    // 5. Publish h_t; then the stores nobody waits for, and the next step's
    //    input projection, while the other blocks catch up.
    if (s + 1 < T_steps) step_arrive(a.counter);
    if (has_pair) {
      T* res = reserve + at * (kReserve * H) + unit;
#pragma unroll
      for (int r = 0; r < kReserve; ++r) res[r * H] = from_float<T>(saved[r]);
      const bool last = active && (a.reverse ? t == 0 : t == length - 1);
      if (last) {
        h_n[pair_b * P + unit] = h_new;
        if constexpr (kCell == Cell::LSTM) c_n[pair_b * H + unit] = from_float<T>(c_state);
      }
      const int64_t tn = a.reverse ? t - 1 : t + 1;
      if (s + 1 < T_steps && tn < length) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
          x_next[g] = load_constant(input_proj + (tn * B + pair_b) * (G * H) + g * H + unit);
        }
      }
    }
  }
#endif
}

template <typename T, Cell kCell, int MT, int NT>
const void* kernel_pointer() {
  return reinterpret_cast<const void*>(&persistent_forward_kernel<T, kCell, MT, NT>);
}

// The kernel for (cell, dtype, n_tiles), or null.
template <typename T>
const void* pick_kernel_typed(Cell cell, int64_t n_tiles) {
  const bool small = n_tiles <= kSmallBatchNTiles;
  if (cell == Cell::LSTM) {
    return small ? kernel_pointer<T, Cell::LSTM, 4, 2>() : kernel_pointer<T, Cell::LSTM, 2, 8>();
  }
  if (cell == Cell::GRU) {
    return small ? kernel_pointer<T, Cell::GRU, 4, 2>() : kernel_pointer<T, Cell::GRU, 2, 8>();
  }
  return nullptr;
}

const void* pick_kernel(Cell cell, DType dtype, int64_t n_tiles) {
  switch (dtype) {
    case DType::Float32: return pick_kernel_typed<float>(cell, n_tiles);
    case DType::Float16: return pick_kernel_typed<__half>(cell, n_tiles);
    case DType::BFloat16: return pick_kernel_typed<__nv_bfloat16>(cell, n_tiles);
    default: return nullptr;
  }
}

// What the runtime says about one kernel on one device, asked once: a persistent
// call is a single launch, and these queries (attributes, the shared-memory
// opt-in, occupancy) would otherwise cost it several runtime calls every time.
struct KernelFacts {
  const void* kernel;
  int device;
  bool queried = false;  // attr, major, sms
  cudaFuncAttributes attr{};
  int major = 0, sms = 0;
  int smem_allowed = 0;                      // the dynamic shared memory opted in so far
  std::vector<std::array<int, 3>> occupancy;  // (threads, smem, blocks per SM)
};

std::mutex facts_mutex;
std::deque<KernelFacts> facts_table;  // a deque: references stay valid as it grows

// The facts of (kernel, device), queried on first use; call under facts_mutex.
KernelFacts& facts_of(const void* kernel, int device) {
  for (KernelFacts& f : facts_table) {
    if (f.kernel == kernel && f.device == device) return f;
  }
  KernelFacts& f = facts_table.emplace_back();
  f.kernel = kernel;
  f.device = device;
  return f;
}

// Fills attr, major and sms of `f` unless done; the error of the query that
// failed, or cudaSuccess. Only an answer is kept: a failed query is asked again
// next time.
cudaError_t query(KernelFacts& f) {
  if (f.queried) return cudaSuccess;
  cudaError_t e = cudaFuncGetAttributes(&f.attr, f.kernel);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&f.major, cudaDevAttrComputeCapabilityMajor, f.device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&f.sms, cudaDevAttrMultiProcessorCount, f.device);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return e;
  }
  f.queried = true;
  return cudaSuccess;
}

}  // namespace

void set_geometry(ForwardArgs& a, const Plan& p) {
  a.units_per_block = static_cast<int>(p.units_per_block);
  a.k_warps = static_cast<int>(p.k_warps);
  a.m_tiles = static_cast<int>(p.m_tiles);
  a.n_tiles = static_cast<int>(p.n_tiles);
  a.rows_padded = static_cast<int>(p.rows_padded);
  a.batch_padded = static_cast<int>(p.batch_padded);
  a.k_padded = static_cast<int>(p.k_padded);
  a.row_stride = static_cast<int>(p.row_stride);
  a.partial_stride = static_cast<int>(p.partial_stride);
  a.smem_w = static_cast<int>(p.smem_w);
  a.smem_h = static_cast<int>(p.smem_h);
  a.smem_partial = static_cast<int>(p.smem_partial);
  a.smem_lengths = static_cast<int>(p.smem_lengths);
}

KernelInfo forward_kernel_info(Cell cell, DType dtype, int64_t n_tiles) {
  const void* kernel = pick_kernel(cell, dtype, n_tiles);
  int device = 0;
  if (kernel == nullptr || cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return {0, 0};
  }
  const std::lock_guard<std::mutex> lock(facts_mutex);
  KernelFacts& f = facts_of(kernel, device);
  // Below sm_80 the kernel is a stub (see its body): no kernel for the planner.
  if (query(f) != cudaSuccess || f.major < 8) return {0, 0};
  return {f.attr.numRegs, f.attr.maxThreadsPerBlock};
}

std::string launch_forward(Cell cell, DType dtype, const ForwardLaunch& launch, const Plan& plan,
                           void* stream) {
  if (!plan.fits) return "the plan does not fit: " + plan.reason;
  const void* kernel = pick_kernel(cell, dtype, plan.n_tiles);
  if (kernel == nullptr) return "no persistent kernel for this cell and dtype";
  if (plan.directions != 1 && plan.directions != 2) return "directions must be 1 or 2";
  const ForwardArgs& args = launch.direction[0];
  if (plan.directions == 2) {
    const ForwardArgs& other = launch.direction[1];
    if (other.steps != args.steps || other.batch != args.batch ||
        other.hidden != args.hidden || other.width != args.width ||
        other.counter == args.counter) {
      return "the two directions must share sizes and have their own counters";
    }
  }
  auto failed = [](const char* what, cudaError_t e) {
    cudaGetLastError();
    return std::string(what) + ": " + cudaGetErrorString(e);
  };
  // The kernel relies on these without checking them itself.
  if (plan.threads < plan.units_per_block * args.batch || plan.threads > kMaxThreads ||
      plan.blocks * plan.units_per_block < args.hidden || args.width != args.hidden ||
      (args.width * dtype_size(dtype)) % 16 != 0 || plan.n_tiles * 8 < args.batch) {
    return "the plan does not match the problem";
  }
  const int smem = static_cast<int>(plan.smem_bytes);
  const int threads = static_cast<int>(plan.threads);
  int device = 0, sms = 0, per_sm = -1;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return failed("cudaGetDevice", e);
  {
    const std::lock_guard<std::mutex> lock(facts_mutex);
    KernelFacts& f = facts_of(kernel, device);
    if ((e = query(f)) != cudaSuccess) return failed("the kernel's attributes", e);
    if (f.major < 8) return "the persistent kernels need compute capability 8.0 or newer";
    sms = f.sms;
    if (smem > f.smem_allowed) {
      e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      if (e != cudaSuccess) return failed("cudaFuncSetAttribute", e);
      f.smem_allowed = smem;
    }
    // The planner worked from assumed properties; the occupancy calculator knows
    // the compiled kernel. Refuse rather than risk a grid that cannot be resident.
    for (const auto& o : f.occupancy) {
      if (o[0] == threads && o[1] == smem) per_sm = o[2];
    }
    if (per_sm < 0) {
      e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem);
      if (e != cudaSuccess) return failed("cudaOccupancyMaxActiveBlocksPerMultiprocessor", e);
      f.occupancy.push_back({threads, smem, per_sm});
    }
  }
  const int64_t grid_blocks = plan.blocks * plan.directions;
  if (static_cast<int64_t>(per_sm) * sms < grid_blocks) {
    return "the " + std::to_string(grid_blocks) + " blocks cannot be co-resident (" +
           std::to_string(per_sm) + " per SM on " + std::to_string(sms) + " SMs)";
  }

  ForwardLaunch copy = launch;
  void* params[] = {&copy};
  const dim3 grid(static_cast<unsigned>(plan.blocks), static_cast<unsigned>(plan.directions));
  e = cudaLaunchCooperativeKernel(kernel, grid,
                                  dim3(static_cast<unsigned>(threads)), params,
                                  static_cast<size_t>(smem), static_cast<cudaStream_t>(stream));
  if (e != cudaSuccess) return failed("cudaLaunchCooperativeKernel", e);
  return "";
}

}  // namespace persistent
}  // namespace rnnkit
