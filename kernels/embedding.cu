// Gather and scatter-add along the middle axis of contiguous [outer, n, inner]
// tensors (embedding lookup and its gradient; index_select / index_add on any dim).
// Ids are long long and already validated by the host (0 <= id < n / dim_size).
//
// Launch (both): block = 256 threads, grid = min(ceil(total / 256), 65535) (at least
// 1) with total = outer * num_ids * inner; no dynamic shared memory. One element
// per thread per grid-stride step; consecutive threads take consecutive inner
// elements (coalesced when inner is large).
//
// Exported, for T in {float, __half, __nv_bfloat16} with suffix _f32/_f16/_bf16:
//   index_select_*(const T* x, const long long* ids, T* out, long long outer, long long n,
//                  long long inner, long long num_ids)
//   index_add_*(const T* src, const long long* ids, float* out, long long outer,
//               long long num_ids, long long inner, long long dim_size)
#include "common.cuh"

namespace {

// out[o, l, c] = x[o, ids[l], c]; out is [outer, num_ids, inner]. Bytes:
// 2 * total * sizeof(T) + ids reads (cached); no FLOPs.
template <class T>
__device__ __forceinline__ void index_select(const T* __restrict__ x, const long long* __restrict__ ids,
                                             T* __restrict__ out, long long outer, long long n,
                                             long long inner, long long num_ids) {
  const long long total = outer * num_ids * inner;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const long long c = i % inner, t = i / inner;
    const long long l = t % num_ids, o = t / num_ids;
    out[i] = x[(o * n + ids[l]) * inner + c];
  }
}

// out[o, ids[l], c] += src[o, l, c] with f32 atomicAdd (repeated ids accumulate;
// the order of the additions, and so the last bits, is not deterministic). out is
// an f32 buffer [outer, dim_size, inner] zeroed by the host, which casts it to T
// afterwards (cast_f32_*). Bytes: total * (sizeof(T) + 4 read-modify-write);
// FLOPs: total.
template <class T>
__device__ __forceinline__ void index_add(const T* __restrict__ src, const long long* __restrict__ ids,
                                          float* __restrict__ out, long long outer,
                                          long long num_ids, long long inner, long long dim_size) {
  const long long total = outer * num_ids * inner;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const long long c = i % inner, t = i / inner;
    const long long l = t % num_ids, o = t / num_ids;
    atomicAdd(out + (o * dim_size + ids[l]) * inner + c, vlk::to_float(src[i]));
  }
}

}  // namespace

#define VLK_EMBEDDING(SUF, T)                                                                  \
  extern "C" __global__ void __launch_bounds__(256)                                            \
      index_select_##SUF(const T* x, const long long* ids, T* out, long long outer, long long n, \
                         long long inner, long long num_ids) {                                 \
    index_select<T>(x, ids, out, outer, n, inner, num_ids);                                    \
  }                                                                                            \
  VLK_EXPORT(index_select_##SUF)                                                               \
  extern "C" __global__ void __launch_bounds__(256)                                            \
      index_add_##SUF(const T* src, const long long* ids, float* out, long long outer,         \
                      long long num_ids, long long inner, long long dim_size) {                \
    index_add<T>(src, ids, out, outer, num_ids, inner, dim_size);                              \
  }                                                                                            \
  VLK_EXPORT(index_add_##SUF)

VLK_EMBEDDING(f32, float)
VLK_EMBEDDING(f16, __half)
VLK_EMBEDDING(bf16, __nv_bfloat16)
#undef VLK_EMBEDDING
