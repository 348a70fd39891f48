// Correct test kernels for the emulator (kernels/emu/tests/run.sh) that also
// build with nvcc (nvcc_check.sh). Host-side checks are in driver.cpp.
#include "common.cuh"
#include "ptx.cuh"

extern __shared__ __align__(16) unsigned char vlk_smem[];

// One block per row: out[row] = sum(x[row, :]).
extern "C" __global__ void __launch_bounds__(1024) t_row_sum(const float* __restrict__ x,
                                                            float* __restrict__ out, int n) {
  const float* row = x + (long long)blockIdx.x * n;
  float s = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += row[i];
  s = vlk::block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}
VLK_EXPORT(t_row_sum)

// One block per row: y = softmax(x), rows staged in dynamic shared memory.
extern "C" __global__ void __launch_bounds__(1024) t_softmax(const float* __restrict__ x,
                                                            float* __restrict__ y, int n) {
  float* buf = reinterpret_cast<float*>(vlk_smem);
  const long long off = (long long)blockIdx.x * n;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    buf[i] = x[off + i];
    m = fmaxf(m, buf[i]);
  }
  m = vlk::block_max(m);
  float s = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    buf[i] = __expf(buf[i] - m);
    s += buf[i];
  }
  const float inv = 1.0f / vlk::block_sum(s);
  for (int i = threadIdx.x; i < n; i += blockDim.x) y[off + i] = buf[i] * inv;
  // Barrier votes: how many threads saw a row max above 2.5 (all or none).
  const int c = __syncthreads_count(m > 2.5f);
  if (threadIdx.x == 0 && c != (int)blockDim.x * (m > 2.5f)) y[off] = NAN;
  if (__syncthreads_or(threadIdx.x == 7) != 1 || __syncthreads_and(threadIdx.x != 7) != 0) y[off] = NAN;
}
VLK_EXPORT(t_softmax)

// Per thread, 10 results of warp intrinsics on v = in[tid] (see driver.cpp).
extern "C" __global__ void t_warp_ops(const int* __restrict__ in, int* __restrict__ out) {
  const int tid = threadIdx.x, lane = tid & 31;
  const int v = in[tid];
  int* o = out + tid * 10;
  o[9] = (int)__activemask();  // before any lane can have exited
  o[0] = (int)vlk::warp_sum((float)v);
  o[1] = __shfl_xor_sync(vlk::kFullMask, v, 5);
  o[2] = __shfl_up_sync(vlk::kFullMask, v, 3);
  o[3] = __shfl_down_sync(vlk::kFullMask, v, 2, 8);
  o[4] = __shfl_sync(vlk::kFullMask, v, 7, 16);
  o[5] = (int)__ballot_sync(vlk::kFullMask, v & 1);
  o[6] = __any_sync(vlk::kFullMask, v == 1000 + lane) | (__all_sync(vlk::kFullMask, v >= 0) << 1);
  __syncwarp();
  // Two half-warps shuffle independently with disjoint masks.
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  o[7] = __shfl_xor_sync(half, v, 1);
  o[8] = (int)__shfl_sync(vlk::kFullMask, (double)v * 0.5, 31) * 2;  // 64-bit shuffle
}
VLK_EXPORT(t_warp_ops)

// One warp: D = A * B + C with fragments gathered per the documented layouts.
// A 16x16 row-major, B 16x8 row-major (k, n), C and D 16x8 row-major, as bits.
template <bool BF16>
__device__ void mma_direct(const uint16_t* A, const uint16_t* B, const float* C, float* D) {
  const int l = threadIdx.x, g = l >> 2, t = l & 3;
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int r = 0; r < 4; ++r) {
    const int i = 2 * r, row = g + 8 * ((i >> 1) & 1), col = 2 * t + 8 * (i >= 4);
    a[r] = A[row * 16 + col] | (uint32_t)A[row * 16 + col + 1] << 16;
  }
  for (int r = 0; r < 2; ++r) {
    const int k = 2 * t + 8 * r;
    b[r] = B[k * 8 + g] | (uint32_t)B[(k + 1) * 8 + g] << 16;
  }
  for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i >= 2)) * 8 + 2 * t + (i & 1)];
  if (BF16) vlk::mma_m16n8k16_bf16(d, a, b, c);
  else vlk::mma_m16n8k16_f16(d, a, b, c);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i >= 2)) * 8 + 2 * t + (i & 1)] = d[i];
}
extern "C" __global__ void t_mma_bf16(const uint16_t* A, const uint16_t* B, const float* C, float* D) {
  mma_direct<true>(A, B, C, D);
}
VLK_EXPORT(t_mma_bf16)
extern "C" __global__ void t_mma_f16(const uint16_t* A, const uint16_t* B, const float* C, float* D) {
  mma_direct<false>(A, B, C, D);
}
VLK_EXPORT(t_mma_f16)

// One warp, a GEMM tile the way real kernels do it: C[16x8] = A[16xK] B[Kx8]
// (bf16, row-major), tiles staged by cp.async, A via ldmatrix.x4, B via
// ldmatrix.x2.trans. K is a multiple of 16, at most 256.
extern "C" __global__ void t_gemm_tile(const __nv_bfloat16* __restrict__ A,
                                       const __nv_bfloat16* __restrict__ B, float* __restrict__ C,
                                       int K) {
  __shared__ __align__(16) __nv_bfloat16 sa[16 * 256];
  __shared__ __align__(16) __nv_bfloat16 sb[256 * 8];
  const int l = threadIdx.x;
  for (int i = l; i < 16 * K / 8; i += 32) vlk::cp_async_cg16(sa + i * 8, A + i * 8);
  for (int i = l; i < K; i += 32) vlk::cp_async_cg16(sb + i * 8, B + i * 8);
  vlk::cp_async_commit();
  vlk::cp_async_wait<0>();
  __syncthreads();
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int k0 = 0; k0 < K; k0 += 16) {
    uint32_t a[4], b[2];
    const int j = l >> 3, r = l & 7;
    vlk::ldmatrix_x4(a, sa + (r + 8 * (j & 1)) * K + k0 + 8 * (j >> 1));
    vlk::ldmatrix_x2_trans(b, sb + (k0 + (l & 15)) * 8);
    vlk::mma_m16n8k16_bf16(acc, a, b, acc);
  }
  const int g = l >> 2, t = l & 3;
  for (int i = 0; i < 4; ++i) C[(g + 8 * (i >= 2)) * 8 + 2 * t + (i & 1)] = acc[i];
}
VLK_EXPORT(t_gemm_tile)

// One warp: src holds four 8x8 u16 matrices (row-major, matrix j at src + 64j).
// out[mode][lane][j] = the registers ldmatrix gives lane for mode
// 0..5 = x1, x2, x4, x1.trans, x2.trans, x4.trans.
extern "C" __global__ void t_ldmatrix(const uint16_t* __restrict__ src, uint32_t* __restrict__ out) {
  __shared__ __align__(16) uint16_t m[4 * 64];
  const int l = threadIdx.x;
  for (int i = l; i < 4 * 64; i += 32) m[i] = src[i];
  __syncthreads();
  const uint16_t* row = m + (l >> 3) * 64 + (l & 7) * 8;  // lane 8j + r: row r of matrix j
  uint32_t r[6][4] = {};
  vlk::ldmatrix_x1(r[0], row);
  vlk::ldmatrix_x2(r[1], row);
  vlk::ldmatrix_x4(r[2], row);
  vlk::ldmatrix_x1_trans(r[3], row);
  vlk::ldmatrix_x2_trans(r[4], row);
  vlk::ldmatrix_x4_trans(r[5], row);
  for (int mode = 0; mode < 6; ++mode)
    for (int j = 0; j < 4; ++j) out[(mode * 32 + l) * 4 + j] = r[mode][j];
}
VLK_EXPORT(t_ldmatrix)

// cp.async variants. 64 threads, each moves 16 bytes of src into shared memory
// through each variant; results land in out[variant][64 * 4 floats]:
// 0 = cg16, 1 = cg16 with src-size = (tid % 17) bytes, 2 = ca<4> x4, 3 = ca<8> x2.
// seen[tid] = whether variant 1's destination was still unwritten (NaN) after
// cp_async_wait<1>() (the emulator defers copies to their wait).
extern "C" __global__ void t_cp_async(const float* __restrict__ src, float* __restrict__ out,
                                      int* __restrict__ seen) {
  float* s = reinterpret_cast<float*>(vlk_smem);  // 4 variants x 64 threads x 4 floats
  const int t = threadIdx.x;
  const float* g = src + t * 4;
  vlk::cp_async_cg16(s + t * 4, g);
  vlk::cp_async_commit();
  vlk::cp_async_cg16_zfill(s + 256 + t * 4, g, t % 17);
  vlk::cp_async_commit();
  vlk::cp_async_wait<1>();
  seen[t] = isnan(s[256 + t * 4 + 3]) ? 1 : 0;
  for (int i = 0; i < 4; ++i) vlk::cp_async_ca<4>(s + 512 + t * 4 + i, g + i);
  for (int i = 0; i < 2; ++i) vlk::cp_async_ca<8>(s + 768 + t * 4 + 2 * i, g + 2 * i);
  vlk::cp_async_commit();
  vlk::cp_async_wait<0>();
  __syncthreads();
  for (int v = 0; v < 4; ++v)
    for (int i = 0; i < 4; ++i) out[v * 256 + t * 4 + i] = s[v * 256 + t * 4 + i];
}
VLK_EXPORT(t_cp_async)

// Atomics from many blocks; r holds float sum, double sum (as 2 floats of
// space), int sum, ull count, int max, int min, CAS counter, exchange.
struct AtomicOut {
  float fsum;
  int isum;
  double dsum;
  unsigned long long count;
  int imax, imin;
  unsigned cas;
  int exch;
};
extern "C" __global__ void t_atomics(AtomicOut* r) {
  const int gid = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(&r->fsum, 1.0f);
  atomicAdd(&r->isum, gid);
  atomicAdd(&r->dsum, 0.5);
  atomicAdd(&r->count, 1ull);
  atomicMax(&r->imax, gid);
  atomicMin(&r->imin, -gid);
  unsigned old = r->cas, seen;
  do {
    seen = old;
    old = atomicCAS(&r->cas, seen, seen + 2u);
  } while (old != seen);
  atomicExch(&r->exch, 7);
}
VLK_EXPORT(t_atomics)

// Dynamic shared memory starts as NaN in every block: block b writes only the
// entries i with i % 2 == b, then every entry is copied out.
extern "C" __global__ void t_smem_poison(float* out) {
  float* s = reinterpret_cast<float*>(vlk_smem);
  const int i = threadIdx.x;
  if (i % 2 == (int)blockIdx.x) s[i] = (float)i;
  __syncthreads();
  out[blockIdx.x * blockDim.x + i] = s[i];
}
VLK_EXPORT(t_smem_poison)

// 3-D grid and block: out[linear global id] = packed (block, thread) indices.
extern "C" __global__ void t_indices(int* out) {
  const int b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const int nt = blockDim.x * blockDim.y * blockDim.z;
  out[b * nt + t] = (blockIdx.x << 24) | (blockIdx.y << 20) | (blockIdx.z << 16) |
                    (threadIdx.x << 8) | (threadIdx.y << 4) | threadIdx.z;
}
VLK_EXPORT(t_indices)

// Block of 48 threads: the second warp has only 16 lanes, so full-mask
// collectives cover just the lanes that exist; a reduction over 16-lane
// segments (width 16) stays inside them. out[tid] = sum over its segment.
extern "C" __global__ void t_partial_warp(float* out) {
  const unsigned t = threadIdx.x;
  float v = (float)max(t, 3) + min(0.5f, (float)t);
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(vlk::kFullMask, v, o, 16);
  out[t] = v;
}
VLK_EXPORT(t_partial_warp)

// Barrier-heavy: inclusive prefix sum of each 1024-element row, Hillis-Steele
// in static shared memory (11 __syncthreads() per thread).
extern "C" __global__ void __launch_bounds__(1024) t_block_scan(const int* __restrict__ x,
                                                               int* __restrict__ y) {
  __shared__ int buf[2][1024];
  const int t = threadIdx.x;
  const long long off = (long long)blockIdx.x * 1024;
  int cur = 0;
  buf[cur][t] = x[off + t];
  __syncthreads();
  for (int d = 1; d < 1024; d <<= 1) {
    buf[cur ^ 1][t] = buf[cur][t] + (t >= d ? buf[cur][t - d] : 0);
    cur ^= 1;
    __syncthreads();
  }
  y[off + t] = buf[cur][t];
}
VLK_EXPORT(t_block_scan)
