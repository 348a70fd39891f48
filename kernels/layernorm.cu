// LayerNorm over the last dimension C of a contiguous [rows, C] tensor, forward
// and backward, for T in {float, __half, __nv_bfloat16}; all math in f32.
//
//   y     = (x - mean) * rstd * gamma + beta,  rstd = 1 / sqrt(var + eps),
//           var the biased variance (divide by C) of the row
//   dx    = rstd * (dy*g - mean_C(dy*g) - xhat * mean_C(dy*g*xhat)),  xhat = (x - mean) * rstd
//   dgamma = sum_rows(dy * xhat), dbeta = sum_rows(dy)  (two stages: per-block partials, then
//           a column reduction; no atomics, deterministic)
//
// Memory access: 16-byte vector loads/stores (4 f32 or 8 f16/bf16 elements) when C is a
// multiple of the vector width and every tensor pointer passed is 16-byte aligned; a scalar
// path otherwise (any C >= 1). The choice is made once per launch, uniformly.
//
// Kernels (each exported as _f32, _f16, _bf16):
//   layernorm_fwd         one WARP per row, block = 256 threads (8 rows per block),
//                         grid.x = max(1, min(ceil(rows / 8), 1048576)) (rows are grid-strided,
//                         so any grid works), no dynamic shared memory.
//   layernorm_bwd         one block of 256 threads per `rows_per_block` consecutive rows,
//                         grid.x = num_blocks = ceil(rows / rows_per_block) (exactly; block b
//                         writes partial row b), dynamic shared memory = 16 * rows_per_block
//                         bytes (keep rows_per_block <= 3072 to stay under the 48 KiB default;
//                         64 is a good value for large row counts).
//   layernorm_bwd_reduce  block = 256 threads (32 columns x 8 row groups),
//                         grid.x = ceil(C / 32), no dynamic shared memory.
// rows == 0: launch nothing except layernorm_bwd_reduce with num_blocks = 0, which writes zeros.
#include "common.cuh"

extern __shared__ __align__(16) unsigned char vlk_smem[];

namespace {

using vlk::from_float;
using vlk::to_float;
using vlk::aligned16;
using vlk::kVec;
using vlk::load_k;
using vlk::store_k;

// gamma/beta loads; a NULL pointer reads as `dflt` (LayerNorm without affine parameters).
template <int K, class T>
__device__ __forceinline__ void load_k_or(const T* p, long long i, float dflt, float (&f)[K]) {
  if (p) {
    load_k<K>(p, i, f);
  } else {
#pragma unroll
    for (int j = 0; j < K; ++j) f[j] = dflt;
  }
}


// ---- forward ---------------------------------------------------------------------------------
// Per row (one warp): one read of x for the statistics (each lane merges K-element chunks into a
// running (count, mean, M2) with Chan's formula, then the lanes merge by butterfly and take lane
// 0's result), one read of x (+ gamma, beta) and one write of y.
// FLOPs ~ 8 per element; bytes = (2 * rows * C + 2 * C) * sizeof(T) + 8 * rows.
template <class T, int K>
__device__ __forceinline__ void ln_fwd_rows(const T* __restrict__ x, const T* __restrict__ gamma,
                                            const T* __restrict__ beta, T* __restrict__ y,
                                            float* __restrict__ mean, float* __restrict__ rstd,
                                            long long rows, int C, float eps) {
  const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const long long stride = (long long)gridDim.x * warps;
  for (long long row = (long long)blockIdx.x * warps + (threadIdx.x >> 5); row < rows;
       row += stride) {
    const T* xr = x + row * C;
    float n = 0.0f, mu = 0.0f, m2 = 0.0f;
    for (long long i = lane * K; i < C; i += 32 * K) {
      float f[K];
      load_k<K>(xr, i, f);
      float s = 0.0f;
#pragma unroll
      for (int j = 0; j < K; ++j) s += f[j];
      const float cm = s * (1.0f / K);
      float q = 0.0f;
#pragma unroll
      for (int j = 0; j < K; ++j) q += (f[j] - cm) * (f[j] - cm);
      const float nn = n + K, d = cm - mu;
      mu += d * (K / nn);
      m2 += q + d * d * (n * K / nn);
      n = nn;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float n2 = __shfl_xor_sync(vlk::kFullMask, n, o);
      const float mu2 = __shfl_xor_sync(vlk::kFullMask, mu, o);
      const float m22 = __shfl_xor_sync(vlk::kFullMask, m2, o);
      const float nn = n + n2;
      if (nn > 0.0f) {
        const float d = mu2 - mu;
        mu += d * (n2 / nn);
        m2 += m22 + d * d * (n * n2 / nn);
        n = nn;
      }
    }
    // Lanes may differ in the last bit (merge order): all use lane 0's statistics.
    mu = __shfl_sync(vlk::kFullMask, mu, 0);
    m2 = __shfl_sync(vlk::kFullMask, m2, 0);
    const float rs = rsqrtf(m2 / (float)C + eps);
    if (lane == 0) {
      if (mean) mean[row] = mu;
      if (rstd) rstd[row] = rs;
    }
    T* yr = y + row * C;
    for (long long i = lane * K; i < C; i += 32 * K) {
      float f[K], g[K], b[K];
      load_k<K>(xr, i, f);
      load_k_or<K>(gamma, i, 1.0f, g);
      load_k_or<K>(beta, i, 0.0f, b);
#pragma unroll
      for (int j = 0; j < K; ++j) f[j] = (f[j] - mu) * rs * g[j] + b[j];
      store_k<K>(yr, i, f);
    }
  }
}

// layernorm_fwd: x, y [rows, C]; gamma, beta [C] (either may be NULL: 1 / 0); mean, rstd [rows]
// f32 (either may be NULL: not written). Launch: see the file comment (warp per row, 256 threads).
template <class T>
__device__ __forceinline__ void ln_fwd(const T* x, const T* gamma, const T* beta, T* y, float* mean,
                                       float* rstd, long long rows, int C, float eps) {
  constexpr int V = kVec<T>;
  if (C % V == 0 && aligned16(x) && aligned16(y) && aligned16(gamma) && aligned16(beta))
    ln_fwd_rows<T, V>(x, gamma, beta, y, mean, rstd, rows, C, eps);
  else
    ln_fwd_rows<T, 1>(x, gamma, beta, y, mean, rstd, rows, C, eps);
}

// ---- backward, stage 1 -----------------------------------------------------------------------
// Block b owns rows [b*R, min(b*R + R, rows)), R = rows_per_block.
// Phase 1 (one warp per row): s1 = sum(dy*g), s2 = sum(dy*g*xhat) -> shared memory as
//   {mean, rstd, s1/C, s2/C} per row (16 bytes per row of dynamic shared memory).
// Phase 2 (threads over K-column chunks, loop over the block's rows): dx for those columns, and
//   the column sums of dy*xhat and dy in registers, written to row b of the partial buffers.
// FLOPs ~ 14 per element; bytes ~ (2 reads of x and dy, 1 write of dx) * sizeof(T) per element
// + 8 * C * num_blocks for the partials.
template <class T, int K>
__device__ __forceinline__ void ln_bwd_block(const T* __restrict__ x, const T* __restrict__ gamma,
                                             const float* __restrict__ mean,
                                             const float* __restrict__ rstd,
                                             const T* __restrict__ dy, T* __restrict__ dx,
                                             float* __restrict__ dgamma_partial,
                                             float* __restrict__ dbeta_partial, long long rows,
                                             int C, int rows_per_block) {
  float* st = reinterpret_cast<float*>(vlk_smem);
  const long long r0 = (long long)blockIdx.x * rows_per_block;
  const int nr = (int)min((long long)rows_per_block, rows - r0);
  const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const float inv_c = 1.0f / (float)C;
  for (int r = threadIdx.x >> 5; r < nr; r += warps) {
    const long long off = (r0 + r) * C;
    const float mu = mean[r0 + r], rs = rstd[r0 + r];
    float s1 = 0.0f, s2 = 0.0f;
    for (long long i = lane * K; i < C; i += 32 * K) {
      float xv[K], dv[K], g[K];
      load_k<K>(x, off + i, xv);
      load_k<K>(dy, off + i, dv);
      load_k_or<K>(gamma, i, 1.0f, g);
#pragma unroll
      for (int j = 0; j < K; ++j) {
        const float dg = dv[j] * g[j];
        s1 += dg;
        s2 += dg * (xv[j] - mu) * rs;
      }
    }
    s1 = vlk::warp_sum(s1);
    s2 = vlk::warp_sum(s2);
    if (lane == 0) {
      st[4 * r + 0] = mu;
      st[4 * r + 1] = rs;
      st[4 * r + 2] = s1 * inv_c;
      st[4 * r + 3] = s2 * inv_c;
    }
  }
  __syncthreads();
  float* pg = dgamma_partial + (long long)blockIdx.x * C;
  float* pb = dbeta_partial + (long long)blockIdx.x * C;
  for (long long i = threadIdx.x * K; i < C; i += blockDim.x * K) {
    float g[K], ag[K], ab[K];
    load_k_or<K>(gamma, i, 1.0f, g);
#pragma unroll
    for (int j = 0; j < K; ++j) ag[j] = ab[j] = 0.0f;
    for (int r = 0; r < nr; ++r) {
      const long long off = (r0 + r) * C + i;
      const float mu = st[4 * r + 0], rs = st[4 * r + 1], a = st[4 * r + 2], b = st[4 * r + 3];
      float xv[K], dv[K], o[K];
      load_k<K>(x, off, xv);
      load_k<K>(dy, off, dv);
#pragma unroll
      for (int j = 0; j < K; ++j) {
        const float xh = (xv[j] - mu) * rs;
        o[j] = rs * (dv[j] * g[j] - a - xh * b);
        ag[j] += dv[j] * xh;
        ab[j] += dv[j];
      }
      store_k<K>(dx, off, o);
    }
#pragma unroll
    for (int j = 0; j < K; ++j) {
      pg[i + j] = ag[j];
      pb[i + j] = ab[j];
    }
  }
}

// layernorm_bwd: x, dy, dx [rows, C]; gamma [C] or NULL (= 1); mean, rstd [rows] f32 from the
// forward; dgamma_partial, dbeta_partial [num_blocks, C] f32. Launch: see the file comment.
template <class T>
__device__ __forceinline__ void ln_bwd(const T* x, const T* gamma, const float* mean,
                                       const float* rstd, const T* dy, T* dx, float* dgamma_partial,
                                       float* dbeta_partial, long long rows, int C,
                                       int rows_per_block) {
  constexpr int V = kVec<T>;
  if (C % V == 0 && aligned16(x) && aligned16(gamma) && aligned16(dy) && aligned16(dx) &&
      aligned16(dgamma_partial) && aligned16(dbeta_partial))
    ln_bwd_block<T, V>(x, gamma, mean, rstd, dy, dx, dgamma_partial, dbeta_partial, rows, C,
                       rows_per_block);
  else
    ln_bwd_block<T, 1>(x, gamma, mean, rstd, dy, dx, dgamma_partial, dbeta_partial, rows, C,
                       rows_per_block);
}

// ---- backward, stage 2 -----------------------------------------------------------------------
// dgamma[c] = sum_b dgamma_partial[b, c], dbeta likewise. Block = 256 threads: lane = column
// within a 32-column tile, warp w sums partial rows w, w+8, ...; the 8 warp sums are combined in
// shared memory by warp 0 in a fixed order (deterministic). FLOPs = 2 * num_blocks * C;
// bytes = 8 * num_blocks * C + 2 * C * sizeof(T).
template <class T>
__device__ __forceinline__ void ln_bwd_reduce(const float* __restrict__ dgamma_partial,
                                              const float* __restrict__ dbeta_partial,
                                              T* __restrict__ dgamma, T* __restrict__ dbeta,
                                              int num_blocks, int C) {
  __shared__ float sg[8][32], sb[8][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c = blockIdx.x * 32 + lane;
  float ag = 0.0f, ab = 0.0f;
  if (c < C) {
    for (int b = warp; b < num_blocks; b += 8) {
      ag += dgamma_partial[(long long)b * C + c];
      ab += dbeta_partial[(long long)b * C + c];
    }
  }
  sg[warp][lane] = ag;
  sb[warp][lane] = ab;
  __syncthreads();
  if (warp == 0 && c < C) {
    ag = 0.0f;
    ab = 0.0f;
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      ag += sg[w][lane];
      ab += sb[w][lane];
    }
    dgamma[c] = from_float<T>(ag);
    dbeta[c] = from_float<T>(ab);
  }
}

}  // namespace

// One exported wrapper per kernel and dtype.
#define VLK_LAYERNORM_EXPORTS(SUF, T)                                                             \
  extern "C" __global__ void __launch_bounds__(256)                                               \
      layernorm_fwd_##SUF(const T* x, const T* gamma, const T* beta, T* y, float* mean,           \
                          float* rstd, long long rows, int C, float eps) {                        \
    ln_fwd(x, gamma, beta, y, mean, rstd, rows, C, eps);                                          \
  }                                                                                               \
  VLK_EXPORT(layernorm_fwd_##SUF)                                                                 \
  extern "C" __global__ void __launch_bounds__(256)                                               \
      layernorm_bwd_##SUF(const T* x, const T* gamma, const float* mean, const float* rstd,       \
                          const T* dy, T* dx, float* dgamma_partial, float* dbeta_partial,        \
                          long long rows, int C, int rows_per_block) {                            \
    ln_bwd(x, gamma, mean, rstd, dy, dx, dgamma_partial, dbeta_partial, rows, C, rows_per_block); \
  }                                                                                               \
  VLK_EXPORT(layernorm_bwd_##SUF)                                                                 \
  extern "C" __global__ void __launch_bounds__(256)                                               \
      layernorm_bwd_reduce_##SUF(const float* dgamma_partial, const float* dbeta_partial,         \
                                 T* dgamma, T* dbeta, int num_blocks, int C) {                    \
    ln_bwd_reduce(dgamma_partial, dbeta_partial, dgamma, dbeta, num_blocks, C);                   \
  }                                                                                               \
  VLK_EXPORT(layernorm_bwd_reduce_##SUF)

VLK_LAYERNORM_EXPORTS(f32, float)
VLK_LAYERNORM_EXPORTS(f16, __half)
VLK_LAYERNORM_EXPORTS(bf16, __nv_bfloat16)
