// Device helpers shared by vlk's kernels (nvcc and the CPU emulator alike):
// f32 <-> f16/bf16 load/store, warp and block reductions. Include this first
// in every kernels/*.cu: under nvcc it brings in the CUDA fp16/bf16 headers and
// makes VLK_EXPORT a no-op (the emulator's cuda_emu.h defines both itself).
#pragma once
#ifndef VLK_EMU
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define VLK_EXPORT(name)
#endif

namespace vlk {

constexpr unsigned kFullMask = 0xffffffffu;

// ---- dtype conversion: compute in f32, store in the tensor's dtype ----------
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <class T> __device__ __forceinline__ float load_float(const T* p, long long i) {
  return to_float(p[i]);
}
template <class T> __device__ __forceinline__ void store_float(T* p, long long i, float v) {
  p[i] = from_float<T>(v);
}

// ---- reductions ---------------------------------------------------------------
struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Butterfly reduction over the full warp: every lane gets the result.
template <class Op> __device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, SumOp()); }
__device__ __forceinline__ float warp_max(float v) { return warp_reduce(v, MaxOp()); }

// Reduction over a 1-D block whose size is a multiple of 32 (at most 1024);
// every thread gets the result. All threads of the block must call it (it has
// two __syncthreads(); the second lets the scratch be reused right away).
template <class Op> __device__ __forceinline__ float block_reduce(float v, Op op, float identity) {
  __shared__ float partial[32];
  const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_reduce(v, op);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < (blockDim.x >> 5) ? partial[lane] : identity;
  v = warp_reduce(v, op);  // every warp reduces the partials: no broadcast step
  __syncthreads();
  return v;
}
__device__ __forceinline__ float block_sum(float v) { return block_reduce(v, SumOp(), 0.0f); }
__device__ __forceinline__ float block_max(float v) { return block_reduce(v, MaxOp(), -INFINITY); }

}  // namespace vlk

// ---- strided indexing ----------------------------------------------------------
// A strided view, passed BY VALUE as a kernel parameter (#[repr(C)] on the Rust
// side: i32 rank, 4 bytes padding, i64 shape[8], i64 stride[8], i64 offset = 144
// bytes). rank <= 8; rank 0 is a scalar. Element strides; 0 for broadcast dims.
namespace vlk {

struct StridedLayout {
  int rank;
  long long shape[8];
  long long stride[8];
  long long offset;
};

// Element offset of the row-major linear index `linear` over l.shape:
// l.offset + sum_d index_d * l.stride[d]. The loop is unrolled over all 8 dims
// (constant indices keep the layout in parameter space, no stack copy);
// divisions are 32-bit when both operands fit.
__device__ __forceinline__ long long strided_offset(const StridedLayout& l, long long linear) {
  long long off = l.offset;
#pragma unroll
  for (int d = 7; d > 0; --d) {
    if (d < l.rank) {
      const long long s = l.shape[d];
      long long q;
      if ((((unsigned long long)linear | (unsigned long long)s) >> 32) == 0)
        q = (long long)((unsigned)linear / (unsigned)s);
      else
        q = linear / s;
      off += (linear - q * s) * l.stride[d];
      linear = q;
    }
  }
  if (l.rank > 0) off += linear * l.stride[0];
  return off;
}

// Whether the layout is row-major contiguous (dims of size 1 may have any
// stride), i.e. strided_offset(l, i) == l.offset + i: the kernels' fast path.
__device__ __forceinline__ bool strided_contiguous(const StridedLayout& l) {
  long long expect = 1;
  bool ok = true;
#pragma unroll
  for (int d = 7; d >= 0; --d) {
    if (d < l.rank) {
      if (l.shape[d] != 1 && l.stride[d] != expect) ok = false;
      expect *= l.shape[d];
    }
  }
  return ok;
}

// ---- 16-byte vector access --------------------------------------------------------
// K consecutive elements moved as one access: K = 1 (scalar) or K = kVec<T> (one 16-byte
// uint4 access; the address must be 16-byte aligned).
template <class T>
constexpr int kVec = 16 / (int)sizeof(T);  // elements per 16-byte access

__device__ __forceinline__ unsigned to_bits(float v) { return __float_as_uint(v); }
__device__ __forceinline__ unsigned to_bits(__half v) { return __half_as_ushort(v); }
__device__ __forceinline__ unsigned to_bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
template <class T>
__device__ __forceinline__ T from_bits(unsigned u);
template <>
__device__ __forceinline__ float from_bits<float>(unsigned u) {
  return __uint_as_float(u);
}
template <>
__device__ __forceinline__ __half from_bits<__half>(unsigned u) {
  return __ushort_as_half((unsigned short)u);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_bits<__nv_bfloat16>(unsigned u) {
  return __ushort_as_bfloat16((unsigned short)u);
}

template <int K, class T>
__device__ __forceinline__ void load_k(const T* p, long long i, float (&f)[K]) {
  if constexpr (K == 1) {
    f[0] = to_float(p[i]);
  } else {
    static_assert(K == kVec<T>, "K is 1 or one 16-byte vector");
    const uint4 u = *reinterpret_cast<const uint4*>(p + i);
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < K; ++j)
      f[j] = to_float(from_bits<T>(sizeof(T) == 4 ? w[j] : w[j / 2] >> (16 * (j % 2))));
  }
}
template <int K, class T>
__device__ __forceinline__ void store_k(T* p, long long i, const float (&f)[K]) {
  if constexpr (K == 1) {
    p[i] = from_float<T>(f[0]);
  } else {
    static_assert(K == kVec<T>, "K is 1 or one 16-byte vector");
    unsigned w[4];
#pragma unroll
    for (int j = 0; j < 4; ++j)
      w[j] = sizeof(T) == 4
                 ? to_bits(from_float<T>(f[j]))
                 : to_bits(from_float<T>(f[2 * j])) | to_bits(from_float<T>(f[2 * j + 1])) << 16;
    *reinterpret_cast<uint4*>(p + i) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

}  // namespace vlk
