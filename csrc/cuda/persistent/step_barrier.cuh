#pragma once
// The grid-wide step barrier of the persistent recurrence, split into arrive and
// wait so that a block can do the work that does not need the other blocks' h_t
// (storing its reserve, prefetching the next step's input projection) while the
// slowest block is still finishing the step.
//
// counter: one unsigned int in global memory, zero before the launch, only ever
// incremented: after step s every block has added 1, so "all blocks have
// published step s" is counter >= blocks * (s + 1). No reset between steps and
// hence no second barrier to protect a reset. The comparison is on the signed
// difference, which stays correct when blocks * T overflows 32 bits (the counter
// is never more than `blocks` ahead of any target a block waits for).
//
// Memory ordering (the pattern of cooperative_groups' grid sync):
//   writer: all threads store h_t; __syncthreads(); thread 0: __threadfence()
//           (cumulative over the block's stores it observed through the barrier)
//           then the relaxed atomic add;
//   reader: thread 0 spins with ld.acquire.gpu; __syncthreads(); then all threads
//           read h_t with loads that bypass L1 (cp.async.cg), which is not
//           coherent across SMs.
// Why not cooperative_groups' grid.sync(): it fuses arrive and wait, so no work
// can overlap the barrier (its cost, one atomic per block and a poll of L2, is
// otherwise the same as here). Why not one flag per producer block: each consumer would poll every
// producer each step (blocks^2 polls of L2) to save only the skew between blocks.
//
// All blocks must be resident at once: the kernel is launched cooperatively, so
// the driver refuses a grid that cannot be, instead of letting it deadlock.

namespace rnnkit {
namespace persistent {

__device__ __forceinline__ unsigned int load_acquire_gpu(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Call after a __syncthreads() that follows the block's stores of the step.
__device__ __forceinline__ void step_arrive(unsigned int* counter) {
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
  }
}

// Nanoseconds of the GPU's global timer.
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// How long a block waits for the others before it gives up. A step of any size the
// planner accepts takes microseconds; a wait of a second means the other blocks
// will never arrive (an ordering bug, or a grid that is not all resident, as under
// a sanitizer that changes occupancy).
constexpr unsigned long long kStepWaitLimitNs = 1000000000ull;

// Returns once counter >= target (mod 2^32, see above); a block barrier inside.
// Past kStepWaitLimitNs it traps: the launch fails with a CUDA error (an illegal
// instruction) that the host reports at its next synchronisation, instead of
// spinning until the process is killed. The trap ends the process's CUDA context,
// so a test run stops there; which case it was is what the test or the smoke run
// was running. No message from the device: a printf here gave every kernel a
// stack frame and the large-batch 16-bit variants register spills (ptxas -v), and
// after a trap the host cannot read a flag either.
__device__ __forceinline__ void step_wait(const unsigned int* counter, unsigned int target) {
  if (threadIdx.x == 0) {
    const unsigned long long start = global_ns();
    while (static_cast<int>(load_acquire_gpu(counter) - target) < 0) {
      if (global_ns() - start > kStepWaitLimitNs) __trap();
    }
  }
  __syncthreads();
}

}  // namespace persistent
}  // namespace rnnkit
