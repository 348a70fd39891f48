// Reductions with f32 accumulation: sum / max / min over the middle axis of a
// contiguous [outer, n, inner] tensor (two kernels, the host picks by inner),
// and the sum of squares used by the global gradient norm.
//
// Exported, for T in {float, __half, __nv_bfloat16} with suffix _f32/_f16/_bf16:
//   reduce_rows_*(const T* x, T* out, long long rows, long long n, int op)
//       inner == 1: x is [rows, n], out [rows]. The host uses it whenever inner == 1.
//       Launch: block = 256, grid = min(rows, 65535), no dynamic shared memory.
//   reduce_cols_*(const T* x, T* out, long long outer, long long n, long long inner, int op)
//       any inner (the host uses it when inner > 1): x [outer, n, inner], out [outer, inner].
//       Launch: block = 256, grid = (ceil(inner / 32), min(outer, 65535)), no dynamic
//       shared memory.
//   sum_squares_*(const T* x, long long n, float* out)
//       *out += sum(x^2) (atomicAdd of block partials; the host zeroes *out first).
//       Launch: block = 256, grid = min(ceil(n / 256), 1024) (at least 1), no dynamic
//       shared memory.
// op: 0 sum, 1 max, 2 min (max/min ignore NaN, like fmaxf/fminf; -inf / +inf for n == 0).
// FLOPs: one per input element (two for sum_squares); bytes: the input once plus
// the output.
#include "common.cuh"

namespace {

struct MinOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fminf(a, b); }
};

__device__ __forceinline__ float reduce_identity(int op) {
  return op == 0 ? 0.0f : (op == 1 ? -INFINITY : INFINITY);
}
__device__ __forceinline__ float reduce_combine(int op, float a, float b) {
  return op == 0 ? a + b : (op == 1 ? fmaxf(a, b) : fminf(a, b));
}

// One block of 256 threads per row (grid-stride over rows): threads stride the
// contiguous row (coalesced), then a block reduction.
template <class T>
__device__ __forceinline__ void reduce_rows(const T* __restrict__ x, T* __restrict__ out,
                                            long long rows, long long n, int op) {
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * n;
    float acc = reduce_identity(op);
    for (long long i = threadIdx.x; i < n; i += blockDim.x)
      acc = reduce_combine(op, acc, vlk::to_float(row[i]));
    // block_reduce's barriers are reached by every thread: the row loop is block-uniform.
    if (op == 0) acc = vlk::block_sum(acc);
    else if (op == 1) acc = vlk::block_max(acc);
    else acc = vlk::block_reduce(acc, MinOp(), INFINITY);
    if (threadIdx.x == 0) out[r] = vlk::from_float<T>(acc);
  }
}

// Block = 32 columns (threadIdx.x & 31, consecutive inner indices: coalesced) x 8
// row groups (threadIdx.x >> 5, striding n by 8). blockIdx.x picks 32 columns,
// blockIdx.y strides over outer. The 8 partials per column meet in shared memory.
template <class T>
__device__ __forceinline__ void reduce_cols(const T* __restrict__ x, T* __restrict__ out,
                                            long long outer, long long n, long long inner,
                                            int op) {
  __shared__ float part[8][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const long long col = (long long)blockIdx.x * 32 + tx;
  for (long long o = blockIdx.y; o < outer; o += gridDim.y) {
    float acc = reduce_identity(op);
    if (col < inner) {
      const T* p = x + o * n * inner + col;
      for (long long i = ty; i < n; i += 8) acc = reduce_combine(op, acc, vlk::to_float(p[i * inner]));
    }
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && col < inner) {
#pragma unroll
      for (int k = 1; k < 8; ++k) acc = reduce_combine(op, acc, part[k][tx]);
      out[o * inner + col] = vlk::from_float<T>(acc);
    }
    __syncthreads();  // part is rewritten by the next outer index
  }
}

// Grid-stride sum of x^2 per thread, block sum, one atomicAdd per block.
template <class T>
__device__ __forceinline__ void sum_squares(const T* __restrict__ x, long long n,
                                            float* __restrict__ out) {
  float acc = 0.0f;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = vlk::to_float(x[i]);
    acc = fmaf(v, v, acc);
  }
  acc = vlk::block_sum(acc);
  if (threadIdx.x == 0) atomicAdd(out, acc);
}

}  // namespace

#define VLK_REDUCE(SUF, T)                                                                     \
  extern "C" __global__ void __launch_bounds__(256)                                            \
      reduce_rows_##SUF(const T* x, T* out, long long rows, long long n, int op) {             \
    reduce_rows<T>(x, out, rows, n, op);                                                       \
  }                                                                                            \
  VLK_EXPORT(reduce_rows_##SUF)                                                                \
  extern "C" __global__ void __launch_bounds__(256) reduce_cols_##SUF(                         \
      const T* x, T* out, long long outer, long long n, long long inner, int op) {             \
    reduce_cols<T>(x, out, outer, n, inner, op);                                               \
  }                                                                                            \
  VLK_EXPORT(reduce_cols_##SUF)                                                                \
  extern "C" __global__ void __launch_bounds__(256) sum_squares_##SUF(const T* x, long long n, \
                                                                      float* out) {            \
    sum_squares<T>(x, n, out);                                                                 \
  }                                                                                            \
  VLK_EXPORT(sum_squares_##SUF)

VLK_REDUCE(f32, float)
VLK_REDUCE(f16, __half)
VLK_REDUCE(bf16, __nv_bfloat16)
#undef VLK_REDUCE
