// Copies, dtype casts and fills: memory-bound, one element per thread per
// grid-stride step.
//
// Launch (every kernel here): block = 256 threads, grid = min(ceil(n / 256), 65535)
// (at least 1), no dynamic shared memory. Any grid is correct (grid-stride loops).
//
// Exported:
//   copy_strided_{f32,f16,bf16,i64,u32}(const T* src, StridedLayout src_layout,
//                                       T* dst, StridedLayout dst_layout, long long n)
//   cast_<from>_<to>(const From* x, To* y, long long n)  from != to in {f32, f16, bf16},
//                                                        plus cast_u32_i64, cast_i64_u32
//   fill_{f32,f16,bf16,i64,u32}(T* y, long long n, double value)
#include "common.cuh"

namespace {

// ---- copy_strided --------------------------------------------------------------
// dst[strided_offset(dst_layout, i)] = src[strided_offset(src_layout, i)] for i < n:
// both layouts enumerate n elements in row-major order over their own shapes (a
// reshape of a strided view, a strided write into a view, ...). Fast path when
// both are contiguous. Bytes: 2 * n * sizeof(T); no FLOPs. Values are copied
// bit for bit.
template <class T>
__device__ __forceinline__ void copy_strided(const T* __restrict__ src, const vlk::StridedLayout& sl,
                                             T* __restrict__ dst, const vlk::StridedLayout& dl,
                                             long long n) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (vlk::strided_contiguous(sl) && vlk::strided_contiguous(dl)) {
    const T* s = src + sl.offset;
    T* d = dst + dl.offset;
    for (; i < n; i += stride) d[i] = s[i];
  } else {
    for (; i < n; i += stride) dst[vlk::strided_offset(dl, i)] = src[vlk::strided_offset(sl, i)];
  }
}

// ---- cast ----------------------------------------------------------------------
// y[i] = (To)x[i], contiguous, through f32 (exact for f16/bf16 -> f32), rounded to
// nearest even. Bytes: n * (sizeof(From) + sizeof(To)).
template <class From, class To>
__device__ __forceinline__ void cast(const From* __restrict__ x, To* __restrict__ y, long long n) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = vlk::from_float<To>(vlk::to_float(x[i]));
}

// ---- fill ----------------------------------------------------------------------
// y[i] = value converted to T (floats: double -> f32 -> T, round to nearest even;
// integers: truncation toward zero, u32 wraps modulo 2^32). Bytes: n * sizeof(T).
template <class T> __device__ __forceinline__ T fill_value(double v) {
  return vlk::from_float<T>((float)v);
}
template <> __device__ __forceinline__ long long fill_value<long long>(double v) {
  return (long long)v;
}
template <> __device__ __forceinline__ unsigned fill_value<unsigned>(double v) {
  return (unsigned)(long long)v;
}

template <class T> __device__ __forceinline__ void fill(T* __restrict__ y, long long n, double value) {
  const T v = fill_value<T>(value);
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) y[i] = v;
}

}  // namespace

#define VLK_COPY(SUF, T)                                                                      \
  extern "C" __global__ void __launch_bounds__(256)                                           \
      copy_strided_##SUF(const T* src, vlk::StridedLayout src_layout, T* dst,                 \
                         vlk::StridedLayout dst_layout, long long n) {                        \
    copy_strided<T>(src, src_layout, dst, dst_layout, n);                                     \
  }                                                                                           \
  VLK_EXPORT(copy_strided_##SUF)                                                              \
  extern "C" __global__ void __launch_bounds__(256) fill_##SUF(T* y, long long n, double value) { \
    fill<T>(y, n, value);                                                                     \
  }                                                                                           \
  VLK_EXPORT(fill_##SUF)

VLK_COPY(f32, float)
VLK_COPY(f16, __half)
VLK_COPY(bf16, __nv_bfloat16)
VLK_COPY(i64, long long)
VLK_COPY(u32, unsigned)
#undef VLK_COPY

#define VLK_CAST(FS, FT, TS, TT)                                                              \
  extern "C" __global__ void __launch_bounds__(256) cast_##FS##_##TS(const FT* x, TT* y,      \
                                                                     long long n) {           \
    cast<FT, TT>(x, y, n);                                                                    \
  }                                                                                           \
  VLK_EXPORT(cast_##FS##_##TS)

VLK_CAST(f32, float, f16, __half)
VLK_CAST(f32, float, bf16, __nv_bfloat16)
VLK_CAST(f16, __half, f32, float)
VLK_CAST(f16, __half, bf16, __nv_bfloat16)
VLK_CAST(bf16, __nv_bfloat16, f32, float)
VLK_CAST(bf16, __nv_bfloat16, f16, __half)
#undef VLK_CAST

// y[i] = (long long)x[i] (zero-extension). Bytes: 12n.
extern "C" __global__ void __launch_bounds__(256) cast_u32_i64(const unsigned* x, long long* y,
                                                               long long n) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = (long long)x[i];
}
VLK_EXPORT(cast_u32_i64)

// y[i] = (unsigned)x[i] (the low 32 bits: wraps modulo 2^32). Bytes: 12n.
extern "C" __global__ void __launch_bounds__(256) cast_i64_u32(const long long* x, unsigned* y,
                                                               long long n) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = (unsigned)x[i];
}
VLK_EXPORT(cast_i64_u32)
