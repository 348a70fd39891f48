// One fused AdamW step, in place, f32 math (decoupled weight decay, bias
// correction; moments m, v kept in the parameter's dtype T):
//   gi = g * grad_scale
//   m  = beta1 * m + (1 - beta1) * gi
//   v  = beta2 * v + (1 - beta2) * gi^2
//   p  = p * (1 - lr * weight_decay) - lr * (m / bc1) / (sqrt(v / bc2) + eps)
// with bc1 = 1 - beta1^step, bc2 = 1 - beta2^step computed by the host.
//
// Thread mapping: when p, g, m, v are all 16-byte aligned, each thread takes 16
// bytes (VEC = 16 / sizeof(T) elements: 4 f32, 8 f16/bf16) of every buffer per
// grid-stride step with 128-bit loads/stores, and the last n % VEC elements are
// done one per thread; otherwise one element per thread per step.
// FLOPs: ~15 per element (one sqrt, two divisions); bytes: 7 * n * sizeof(T)
// (4 reads, 3 writes).
//
// Launch: block = 256 threads, grid = min(ceil(n / (256 * VEC)), 65535) (at least 1),
// no dynamic shared memory. Any grid is correct (grid-stride loops).
//
// Exported: adamw_{f32,f16,bf16}(T* p, const T* g, T* m, T* v, long long n, float lr,
//   float beta1, float beta2, float eps, float weight_decay, float bias_correction1,
//   float bias_correction2, float grad_scale)
#include "common.cuh"

namespace {

struct AdamW {
  float lr, beta1, beta2, eps, decay, bc1, bc2, grad_scale;
};

template <class T> struct alignas(16) Vec16 {
  T v[16 / sizeof(T)];
};

template <class T>
__device__ __forceinline__ void adamw_one(T& p, T g, T& m, T& v, const AdamW& h) {
  const float gi = vlk::to_float(g) * h.grad_scale;
  const float mi = h.beta1 * vlk::to_float(m) + (1.0f - h.beta1) * gi;
  const float vi = h.beta2 * vlk::to_float(v) + (1.0f - h.beta2) * gi * gi;
  const float update = (mi / h.bc1) / (sqrtf(vi / h.bc2) + h.eps);
  p = vlk::from_float<T>(vlk::to_float(p) * h.decay - h.lr * update);
  m = vlk::from_float<T>(mi);
  v = vlk::from_float<T>(vi);
}

template <class T>
__device__ __forceinline__ void adamw(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                                      T* __restrict__ v, long long n, const AdamW& h) {
  constexpr int VEC = 16 / sizeof(T);
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  long long start = 0;  // first element of the scalar loop
  if ((((unsigned long long)p | (unsigned long long)g | (unsigned long long)m |
        (unsigned long long)v) & 15) == 0) {
    const long long nv = n / VEC;
    for (long long j = tid; j < nv; j += stride) {
      Vec16<T> pv = reinterpret_cast<const Vec16<T>*>(p)[j];
      const Vec16<T> gv = reinterpret_cast<const Vec16<T>*>(g)[j];
      Vec16<T> mv = reinterpret_cast<const Vec16<T>*>(m)[j];
      Vec16<T> vv = reinterpret_cast<const Vec16<T>*>(v)[j];
#pragma unroll
      for (int k = 0; k < VEC; ++k) adamw_one(pv.v[k], gv.v[k], mv.v[k], vv.v[k], h);
      reinterpret_cast<Vec16<T>*>(p)[j] = pv;
      reinterpret_cast<Vec16<T>*>(m)[j] = mv;
      reinterpret_cast<Vec16<T>*>(v)[j] = vv;
    }
    start = nv * VEC;
  }
  for (long long i = start + tid; i < n; i += stride) adamw_one(p[i], g[i], m[i], v[i], h);
}

}  // namespace

#define VLK_ADAMW(SUF, T)                                                                     \
  extern "C" __global__ void __launch_bounds__(256)                                           \
      adamw_##SUF(T* p, const T* g, T* m, T* v, long long n, float lr, float beta1,           \
                  float beta2, float eps, float weight_decay, float bias_correction1,         \
                  float bias_correction2, float grad_scale) {                                 \
    const AdamW h{lr, beta1, beta2, eps, 1.0f - lr * weight_decay, bias_correction1,          \
                  bias_correction2, grad_scale};                                              \
    adamw<T>(p, g, m, v, n, h);                                                               \
  }                                                                                           \
  VLK_EXPORT(adamw_##SUF)

VLK_ADAMW(f32, float)
VLK_ADAMW(f16, __half)
VLK_ADAMW(bf16, __nv_bfloat16)
#undef VLK_ADAMW
