#pragma once
// One warp's share of a step's recurrent product: the partial sums over a range of
// K (= P) of  C[r, n] = sum_k W[r, k] * h[n, k]  for the block's W_hh rows r and the
// batch columns n, with W and h in shared memory.
//
// Shapes (elements; S = row stride in shared memory, see persistent_plan.h):
//   w    [MT*16, S]  the block's W_hh rows, zero beyond P and beyond its rows
//   h    [NT*8,  S]  h_{t-1}, zero beyond B and beyond P
//   acc  [MT][NT][4] floats per lane, the m16n8 C-fragment layout of mma.sync:
//        lane = 4*g + q holds C[16*mt + g, 8*nt + 2q + {0,1}] in acc[..][0..1]
//        and C[16*mt + g + 8, 8*nt + 2q + {0,1}] in acc[..][2..3].
// The K range is [chunk_begin, chunk_end) in chunks of 32 elements.
//
// 16-bit types use mma.sync.m16n8k16 (float accumulation). A sum over k does not
// depend on the order of k, so instead of the fragment's native k order each lane
// takes the 8 consecutive elements k = 32c + 8q + j, j = 0..7, of its rows of W and
// h with one 16-byte load each, and both operands use that same permutation: j 0-1
// and 2-3 are the lane's {2q, 2q+1} and {2q+8, 2q+9} of the first k16 step, j 4-7
// those of the second. float uses FMAs in the same C-fragment layout, so the code
// after the product is common to every type.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace rnnkit {
namespace persistent {

template <typename T>
struct MmaType;
template <>
struct MmaType<__nv_bfloat16> {
  static __device__ __forceinline__ void mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                             uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};
template <>
struct MmaType<__half> {
  static __device__ __forceinline__ void mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                             uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};

// 16-bit types: tensor cores. m_tiles <= MT and n_tiles <= NT at run time.
template <typename T, int MT, int NT>
__device__ __forceinline__ void warp_product(float (&acc)[MT][NT][4], const T* w, const T* h,
                                             int stride, int m_tiles, int n_tiles,
                                             int chunk_begin, int chunk_end, int lane) {
  const int g = lane >> 2;
  const int q = lane & 3;
  for (int chunk = chunk_begin; chunk < chunk_end; ++chunk) {
    const int k = chunk * 32 + q * 8;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if (mt >= m_tiles) break;
      const uint4 lo = *reinterpret_cast<const uint4*>(w + (mt * 16 + g) * stride + k);
      const uint4 hi = *reinterpret_cast<const uint4*>(w + (mt * 16 + g + 8) * stride + k);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        if (nt >= n_tiles) break;
        const uint4 b = *reinterpret_cast<const uint4*>(h + (nt * 8 + g) * stride + k);
        MmaType<T>::mma(acc[mt][nt], lo.x, hi.x, lo.y, hi.y, b.x, b.y);
        MmaType<T>::mma(acc[mt][nt], lo.z, hi.z, lo.w, hi.w, b.z, b.w);
      }
    }
  }
}

__device__ __forceinline__ float dot4(float4 a, float4 b, float c) {
  c = fmaf(a.x, b.x, c);
  c = fmaf(a.y, b.y, c);
  c = fmaf(a.z, b.z, c);
  return fmaf(a.w, b.w, c);
}

// float: CUDA-core FMAs in float32 (no TF32), same accumulator layout.
template <int MT, int NT>
__device__ __forceinline__ void warp_product(float (&acc)[MT][NT][4], const float* w,
                                             const float* h, int stride, int m_tiles,
                                             int n_tiles, int chunk_begin, int chunk_end,
                                             int lane) {
  const int g = lane >> 2;
  const int q = lane & 3;
  for (int k = chunk_begin * 32; k < chunk_end * 32; k += 4) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if (mt >= m_tiles) break;
      const float4 lo = *reinterpret_cast<const float4*>(w + (mt * 16 + g) * stride + k);
      const float4 hi = *reinterpret_cast<const float4*>(w + (mt * 16 + g + 8) * stride + k);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        if (nt >= n_tiles) break;
        const float4 h0 = *reinterpret_cast<const float4*>(h + (nt * 8 + 2 * q) * stride + k);
        const float4 h1 = *reinterpret_cast<const float4*>(h + (nt * 8 + 2 * q + 1) * stride + k);
        acc[mt][nt][0] = dot4(lo, h0, acc[mt][nt][0]);
        acc[mt][nt][1] = dot4(lo, h1, acc[mt][nt][1]);
        acc[mt][nt][2] = dot4(hi, h0, acc[mt][nt][2]);
        acc[mt][nt][3] = dot4(hi, h1, acc[mt][nt][3]);
      }
    }
  }
}

}  // namespace persistent
}  // namespace rnnkit
