// Row softmax / log-softmax and fused softmax cross-entropy over the last dimension C of a
// contiguous [rows, C] tensor, for T in {float, __half, __nv_bfloat16}; all math in f32.
//
// Thread mapping (all four kernels): ONE BLOCK PER ROW, rows grid-strided (row = blockIdx.x,
// += gridDim.x). Threads walk the row in 16-byte vectors (4 f32 / 8 f16|bf16 elements) when C is
// a multiple of the vector width and the tensor pointers are 16-byte aligned, element by element
// otherwise (any C >= 1). Row statistics use an online max/sum per thread (one read of the row),
// then a block max and a block sum of the rescaled partial sums. -inf entries (masked positions)
// are handled; a row that is entirely -inf gives NaN, as in PyTorch.
//
// Launch configuration the host must use (every kernel of this file):
//   block.x = 32 * min(32, max(1, ceil(C / 256)))   (about 8 elements per thread; any multiple of
//             32 up to 1024 is correct)
//   grid.x  = max(1, min(rows, 1048576))
//   dynamic shared memory = 0
//
//   softmax_fwd  y = exp(x - max) / sum exp(x - max), or with log != 0
//                y = x - max - log(sum exp(x - max)).
//                FLOPs ~ 5 per element (+1 exp per element per pass); bytes = 3 * rows*C*sizeof(T)
//                (two reads of x, one write of y).
//   softmax_bwd  softmax:     dx = y * (dy - sum(dy * y))
//                log-softmax: dx = dy - exp(y) * sum(dy)     (y = log p)
//                FLOPs ~ 4 per element; bytes = 5 * rows*C*sizeof(T).
//   xent_fwd     lse = logsumexp(logits row) (f32), loss = lse - logits[target] (T); rows whose
//                target == ignore_index get loss 0 (lse is still written). Targets are validated
//                by the host (0 <= target < C or == ignore_index).
//                FLOPs ~ 4 per element; bytes = rows*C*sizeof(T) + rows*(8 + 4 + sizeof(T)).
//   xent_bwd     dlogits = (exp(x - lse) - onehot(target)) * dloss[row]; rows with
//                target == ignore_index are all zero (their dloss is not read). One pass over
//                the row. dloss is the per-row upstream gradient (reduction 'none'; for 'mean'
//                the host passes 1 / number of non-ignored rows).
//                FLOPs ~ 3 per element; bytes = 2 * rows*C*sizeof(T) + rows*(8 + 4 + sizeof(T)).
#include "common.cuh"

namespace {

using vlk::from_float;
using vlk::to_float;
using vlk::aligned16;
using vlk::kVec;
using vlk::load_k;
using vlk::store_k;


struct RowStats {
  float max;  // row maximum
  float sum;  // sum of exp(x - max)
};

// Online max / sum of one row by the whole block (every thread gets the result; contains
// barriers, so every thread of the block must call it).
template <int K, class T>
__device__ __forceinline__ RowStats row_stats(const T* __restrict__ xr, int C) {
  float m = -INFINITY, s = 0.0f;
  for (long long i = threadIdx.x * K; i < C; i += blockDim.x * K) {
    float f[K];
    load_k<K>(xr, i, f);
    float cm = f[0];
#pragma unroll
    for (int j = 1; j < K; ++j) cm = fmaxf(cm, f[j]);
    const float nm = fmaxf(m, cm);
    if (nm != -INFINITY) {  // all -inf so far: nothing to add (avoids -inf - -inf)
      float cs = 0.0f;
#pragma unroll
      for (int j = 0; j < K; ++j) cs += __expf(f[j] - nm);
      s = s * __expf(m - nm) + cs;
      m = nm;
    }
  }
  const float M = vlk::block_max(m);
  const float S = vlk::block_sum(m == -INFINITY ? 0.0f : s * __expf(m - M));
  return {M, S};
}

template <class T, int K>
__device__ __forceinline__ void softmax_fwd_rows(const T* __restrict__ x, T* __restrict__ y,
                                                 long long rows, int C, int log) {
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * C;
    T* yr = y + row * C;
    const RowStats st = row_stats<K>(xr, C);
    if (log) {
      const float sub = st.max + logf(st.sum);
      for (long long i = threadIdx.x * K; i < C; i += blockDim.x * K) {
        float f[K];
        load_k<K>(xr, i, f);
#pragma unroll
        for (int j = 0; j < K; ++j) f[j] -= sub;
        store_k<K>(yr, i, f);
      }
    } else {
      const float inv = 1.0f / st.sum;
      for (long long i = threadIdx.x * K; i < C; i += blockDim.x * K) {
        float f[K];
        load_k<K>(xr, i, f);
#pragma unroll
        for (int j = 0; j < K; ++j) f[j] = __expf(f[j] - st.max) * inv;
        store_k<K>(yr, i, f);
      }
    }
  }
}

template <class T>
__device__ __forceinline__ void softmax_fwd(const T* x, T* y, long long rows, int C, int log) {
  constexpr int V = kVec<T>;
  if (C % V == 0 && aligned16(x) && aligned16(y))
    softmax_fwd_rows<T, V>(x, y, rows, C, log);
  else
    softmax_fwd_rows<T, 1>(x, y, rows, C, log);
}

template <class T, int K>
__device__ __forceinline__ void softmax_bwd_rows(const T* __restrict__ y, const T* __restrict__ dy,
                                                 T* __restrict__ dx, long long rows, int C,
                                                 int log) {
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const long long off = row * C;
    float s = 0.0f;  // log: sum(dy); softmax: sum(dy * y)
    for (long long i = threadIdx.x * K; i < C; i += blockDim.x * K) {
      float yv[K], dv[K];
      load_k<K>(dy, off + i, dv);
      if (log) {
#pragma unroll
        for (int j = 0; j < K; ++j) s += dv[j];
      } else {
        load_k<K>(y, off + i, yv);
#pragma unroll
        for (int j = 0; j < K; ++j) s += dv[j] * yv[j];
      }
    }
    s = vlk::block_sum(s);
    for (long long i = threadIdx.x * K; i < C; i += blockDim.x * K) {
      float yv[K], dv[K];
      load_k<K>(y, off + i, yv);
      load_k<K>(dy, off + i, dv);
#pragma unroll
      for (int j = 0; j < K; ++j) dv[j] = log ? dv[j] - __expf(yv[j]) * s : yv[j] * (dv[j] - s);
      store_k<K>(dx, off + i, dv);
    }
  }
}

template <class T>
__device__ __forceinline__ void softmax_bwd(const T* y, const T* dy, T* dx, long long rows, int C,
                                            int log) {
  constexpr int V = kVec<T>;
  if (C % V == 0 && aligned16(y) && aligned16(dy) && aligned16(dx))
    softmax_bwd_rows<T, V>(y, dy, dx, rows, C, log);
  else
    softmax_bwd_rows<T, 1>(y, dy, dx, rows, C, log);
}

template <class T, int K>
__device__ __forceinline__ void xent_fwd_rows(const T* __restrict__ logits,
                                              const long long* __restrict__ targets,
                                              T* __restrict__ loss, float* __restrict__ lse,
                                              long long rows, int C, long long ignore_index) {
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = logits + row * C;
    const RowStats st = row_stats<K>(xr, C);
    if (threadIdx.x == 0) {
      const float l = st.max + logf(st.sum);
      const long long t = targets[row];
      lse[row] = l;
      loss[row] = from_float<T>(t == ignore_index ? 0.0f : l - to_float(xr[t]));
    }
  }
}

template <class T>
__device__ __forceinline__ void xent_fwd(const T* logits, const long long* targets, T* loss,
                                         float* lse, long long rows, int C,
                                         long long ignore_index) {
  constexpr int V = kVec<T>;
  if (C % V == 0 && aligned16(logits))
    xent_fwd_rows<T, V>(logits, targets, loss, lse, rows, C, ignore_index);
  else
    xent_fwd_rows<T, 1>(logits, targets, loss, lse, rows, C, ignore_index);
}

template <class T, int K>
__device__ __forceinline__ void xent_bwd_rows(const T* __restrict__ logits,
                                              const long long* __restrict__ targets,
                                              const float* __restrict__ lse,
                                              const T* __restrict__ dloss, T* __restrict__ dlogits,
                                              long long rows, int C, long long ignore_index) {
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const long long off = row * C, t = targets[row];
    const bool ignored = t == ignore_index;
    const float l = lse[row], d = ignored ? 0.0f : to_float(dloss[row]);
    for (long long i = threadIdx.x * K; i < C; i += blockDim.x * K) {
      float f[K];
      if (ignored) {
#pragma unroll
        for (int j = 0; j < K; ++j) f[j] = 0.0f;
      } else {
        load_k<K>(logits, off + i, f);
#pragma unroll
        for (int j = 0; j < K; ++j) f[j] = (__expf(f[j] - l) - (i + j == t ? 1.0f : 0.0f)) * d;
      }
      store_k<K>(dlogits, off + i, f);
    }
  }
}

template <class T>
__device__ __forceinline__ void xent_bwd(const T* logits, const long long* targets,
                                         const float* lse, const T* dloss, T* dlogits,
                                         long long rows, int C, long long ignore_index) {
  constexpr int V = kVec<T>;
  if (C % V == 0 && aligned16(logits) && aligned16(dlogits))
    xent_bwd_rows<T, V>(logits, targets, lse, dloss, dlogits, rows, C, ignore_index);
  else
    xent_bwd_rows<T, 1>(logits, targets, lse, dloss, dlogits, rows, C, ignore_index);
}

}  // namespace

// ---- exported kernels (launch: see the file comment) -------------------------------------------
// softmax_fwd_<T>(const T* x, T* y, long long rows, int C, int log)
// softmax_bwd_<T>(const T* y, const T* dy, T* dx, long long rows, int C, int log)
// xent_fwd_<T>(const T* logits, const long long* targets, T* loss, float* lse, long long rows,
//              int C, long long ignore_index)
// xent_bwd_<T>(const T* logits, const long long* targets, const float* lse, const T* dloss,
//              T* dlogits, long long rows, int C, long long ignore_index)

// One exported wrapper per kernel and dtype.
#define VLK_SOFTMAX_EXPORTS(SUF, T)                                                              \
  extern "C" __global__ void __launch_bounds__(1024)                                             \
      softmax_fwd_##SUF(const T* x, T* y, long long rows, int C, int log) {                      \
    softmax_fwd(x, y, rows, C, log);                                                             \
  }                                                                                              \
  VLK_EXPORT(softmax_fwd_##SUF)                                                                  \
  extern "C" __global__ void __launch_bounds__(1024)                                             \
      softmax_bwd_##SUF(const T* y, const T* dy, T* dx, long long rows, int C, int log) {        \
    softmax_bwd(y, dy, dx, rows, C, log);                                                        \
  }                                                                                              \
  VLK_EXPORT(softmax_bwd_##SUF)                                                                  \
  extern "C" __global__ void __launch_bounds__(1024)                                             \
      xent_fwd_##SUF(const T* logits, const long long* targets, T* loss, float* lse,             \
                     long long rows, int C, long long ignore_index) {                            \
    xent_fwd(logits, targets, loss, lse, rows, C, ignore_index);                                 \
  }                                                                                              \
  VLK_EXPORT(xent_fwd_##SUF)                                                                     \
  extern "C" __global__ void __launch_bounds__(1024)                                             \
      xent_bwd_##SUF(const T* logits, const long long* targets, const float* lse,                \
                     const T* dloss, T* dlogits, long long rows, int C, long long ignore_index) {\
    xent_bwd(logits, targets, lse, dloss, dlogits, rows, C, ignore_index);                       \
  }                                                                                              \
  VLK_EXPORT(xent_bwd_##SUF)

VLK_SOFTMAX_EXPORTS(f32, float)
VLK_SOFTMAX_EXPORTS(f16, __half)
VLK_SOFTMAX_EXPORTS(bf16, __nv_bfloat16)
