// Kernels with planted bugs: the emulator must fail each launch with a clear
// message (driver.cpp checks the message) instead of hanging or computing garbage.
#include "common.cuh"

// Only the first warp reaches the first barrier.
extern "C" __global__ void bug_divergent_barrier(float* out) {
  if (threadIdx.x < 32) __syncthreads();
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}
VLK_EXPORT(bug_divergent_barrier)

// Threads past n return early, the rest wait at a barrier for them.
extern "C" __global__ void bug_early_exit(float* out, int n) {
  if ((int)threadIdx.x >= n) return;
  out[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] += out[(threadIdx.x + 1) % n];
}
VLK_EXPORT(bug_early_exit)

// Full-mask shuffle executed by half a warp; the other half goes on to a barrier.
extern "C" __global__ void bug_half_warp_shfl(float* out) {
  float v = (float)threadIdx.x;
  if ((threadIdx.x & 31) < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);
  __syncthreads();
  out[threadIdx.x] = v;
}
VLK_EXPORT(bug_half_warp_shfl)

// Same, but the other half exits.
extern "C" __global__ void bug_half_warp_shfl_exit(float* out) {
  float v = (float)threadIdx.x;
  if ((threadIdx.x & 31) < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}
VLK_EXPORT(bug_half_warp_shfl_exit)

// Reads one element past the end of x.
extern "C" __global__ void bug_oob_read(const float* x, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = x[i] + x[i + 1];
}
VLK_EXPORT(bug_oob_read)

// Dereferences a null pointer (no VLK_EMU_CHECK needed).
extern "C" __global__ void bug_null_read(const float* x, float* out) {
  out[threadIdx.x] = x[threadIdx.x];
}
VLK_EXPORT(bug_null_read)

// No barrier between the shared-memory write and the neighbour's read. Not an
// error the emulator can name, but with VLK_EMU_REVERSE=1 (threads run in
// descending order) the read happens first and returns the NaN poison.
extern "C" __global__ void bug_missing_barrier(float* out) {
  extern __shared__ __align__(16) unsigned char vlk_smem[];
  float* s = reinterpret_cast<float*>(vlk_smem);
  const unsigned t = threadIdx.x;
  s[t] = (float)t;
  out[t] = t ? s[t - 1] : 0.0f;
}
VLK_EXPORT(bug_missing_barrier)
