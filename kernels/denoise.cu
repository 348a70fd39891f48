// One fused diffusion sampler update x_t -> x_{t-1}, elementwise over n elements, for T in
// {float, __half, __nv_bfloat16}; all math in f32.
//
//   m   = model_cond                                                  if model_uncond == NULL
//       = model_uncond + guidance * (model_cond - model_uncond)       (classifier-free guidance)
//   prediction 0 (epsilon): eps = m,  x0 = (x_t - sqrt(1-abar) * eps) / sqrt(abar)
//   prediction 1 (v):       x0 = sqrt(abar) * x_t - sqrt(1-abar) * m,
//                           eps = sqrt(abar) * m + sqrt(1-abar) * x_t
//   clip_sample > 0:        x0 = clamp(x0, -clip_sample, clip_sample); eps keeps the model's
//                           prediction (as diffusers' DDIM does by default; an eps re-derived
//                           from the clipped x0 is a combination of x0 and x_t, so the host
//                           folds it into c_x0 and c_xt when a sampler wants it)
//   out = c_x0 * x0 + c_xt * x_t + c_eps * eps + (noise ? c_noise * noise : 0)
//
// abar = abar_t (cumulative product of alpha up to step t); the host passes
// sqrt_alpha_bar = sqrt(abar_t) and sqrt_one_minus_alpha_bar = sqrt(1 - abar_t) (both > 0), and
// the four coefficients, which select the sampler (abar_prev = abar of the step we move to,
// alpha_t = abar_t / abar_prev, beta_t = 1 - alpha_t):
//   DDPM (posterior mean of q(x_{t-1} | x_t, x0) plus noise):
//     c_x0 = sqrt(abar_prev) * beta_t / (1 - abar_t),
//     c_xt = sqrt(alpha_t) * (1 - abar_prev) / (1 - abar_t),
//     c_eps = 0,
//     c_noise = sigma_t = sqrt(beta_t * (1 - abar_prev) / (1 - abar_t)) (the posterior variance;
//               sqrt(beta_t) is the other common choice; 0 at the last step).
//   With clip_sample = 0 and epsilon prediction this is the classic
//   x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) * eps) / sqrt(alpha_t) + sigma_t * z.
//   DDIM (eta in [0, 1]; eta = 0 is deterministic):
//     sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev),
//     c_x0 = sqrt(abar_prev), c_eps = sqrt(1 - abar_prev - sigma^2), c_xt = 0, c_noise = sigma.
// noise may be NULL (deterministic step, or c_noise = 0); model_uncond may be NULL (no guidance).
// prediction is 0 or 1 (the host validates it; any other value runs as v).
//
// Thread mapping: grid-stride loop, each thread handles 16-byte vectors (4 f32 / 8 f16|bf16
// elements) when every non-NULL pointer is 16-byte aligned, then the n % width tail element by
// element; element by element otherwise.
// FLOPs ~ 16 per element; bytes = (3..5) * n * sizeof(T) (x_t, model_cond, [model_uncond],
// [noise] read; out written).
// Launch: block = 256 threads, grid.x = max(1, min(ceil(n / 2048), 4096)) (any grid is
// correct), dynamic shared memory = 0.
#include "common.cuh"

namespace {

using vlk::from_float;
using vlk::to_float;
using vlk::aligned16;
using vlk::kVec;
using vlk::load_k;
using vlk::store_k;


struct StepCoef {
  float guidance, sa, s1m, inv_sa, clip, c_x0, c_xt, c_eps, c_noise;
  int prediction;
};

// Elements [begin, end) in K-element accesses (end - begin is a multiple of K), grid-strided.
template <int K, class T>
__device__ __forceinline__ void denoise_range(const T* __restrict__ x_t, const T* __restrict__ cond,
                                              const T* __restrict__ uncond,
                                              const T* __restrict__ noise, T* __restrict__ out,
                                              long long begin, long long end, const StepCoef& k) {
  const long long stride = (long long)gridDim.x * blockDim.x * K;
  for (long long i = begin + ((long long)blockIdx.x * blockDim.x + threadIdx.x) * K; i < end;
       i += stride) {
    float xt[K], m[K], u[K], z[K];
    load_k<K>(x_t, i, xt);
    load_k<K>(cond, i, m);
    if (uncond) {
      load_k<K>(uncond, i, u);
#pragma unroll
      for (int j = 0; j < K; ++j) m[j] = u[j] + k.guidance * (m[j] - u[j]);
    }
    if (noise) {
      load_k<K>(noise, i, z);
    } else {
#pragma unroll
      for (int j = 0; j < K; ++j) z[j] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < K; ++j) {
      float x0, eps;
      if (k.prediction == 0) {
        eps = m[j];
        x0 = (xt[j] - k.s1m * eps) * k.inv_sa;
      } else {
        x0 = k.sa * xt[j] - k.s1m * m[j];
        eps = k.sa * m[j] + k.s1m * xt[j];
      }
      if (k.clip > 0.0f) x0 = fminf(fmaxf(x0, -k.clip), k.clip);
      xt[j] = k.c_x0 * x0 + k.c_xt * xt[j] + k.c_eps * eps + k.c_noise * z[j];
    }
    store_k<K>(out, i, xt);
  }
}

template <class T>
__device__ __forceinline__ void denoise_step_impl(
    const T* x_t, const T* model_cond, const T* model_uncond, const T* noise, T* out, long long n,
    float guidance, int prediction, float sqrt_alpha_bar, float sqrt_one_minus_alpha_bar,
    float clip_sample, float c_x0, float c_xt, float c_eps, float c_noise) {
  const StepCoef k = {guidance,
                      sqrt_alpha_bar,
                      sqrt_one_minus_alpha_bar,
                      1.0f / sqrt_alpha_bar,
                      clip_sample,
                      c_x0,
                      c_xt,
                      c_eps,
                      c_noise,
                      prediction};
  constexpr int V = kVec<T>;
  if (aligned16(x_t) && aligned16(model_cond) && aligned16(model_uncond) && aligned16(noise) &&
      aligned16(out)) {
    const long long nv = n / V * V;
    denoise_range<V>(x_t, model_cond, model_uncond, noise, out, 0, nv, k);
    denoise_range<1>(x_t, model_cond, model_uncond, noise, out, nv, n, k);
  } else {
    denoise_range<1>(x_t, model_cond, model_uncond, noise, out, 0, n, k);
  }
}

}  // namespace

// ---- exported kernels (launch: see the file comment) -------------------------------------------
// denoise_step_<T>(const T* x_t, const T* model_cond, const T* model_uncond, const T* noise, T*
// out,
//                  long long n, float guidance, int prediction, float sqrt_alpha_bar,
//                  float sqrt_one_minus_alpha_bar, float clip_sample, float c_x0, float c_xt,
//                  float c_eps, float c_noise)

extern "C" __global__ void __launch_bounds__(256)
    denoise_step_f32(const float* x_t, const float* model_cond, const float* model_uncond,
                     const float* noise, float* out, long long n, float guidance, int prediction,
                     float sqrt_alpha_bar, float sqrt_one_minus_alpha_bar, float clip_sample,
                     float c_x0, float c_xt, float c_eps, float c_noise) {
  denoise_step_impl(x_t, model_cond, model_uncond, noise, out, n, guidance, prediction,
                    sqrt_alpha_bar, sqrt_one_minus_alpha_bar, clip_sample, c_x0, c_xt, c_eps,
                    c_noise);
}
VLK_EXPORT(denoise_step_f32)

extern "C" __global__ void __launch_bounds__(256)
    denoise_step_f16(const __half* x_t, const __half* model_cond, const __half* model_uncond,
                     const __half* noise, __half* out, long long n, float guidance, int prediction,
                     float sqrt_alpha_bar, float sqrt_one_minus_alpha_bar, float clip_sample,
                     float c_x0, float c_xt, float c_eps, float c_noise) {
  denoise_step_impl(x_t, model_cond, model_uncond, noise, out, n, guidance, prediction,
                    sqrt_alpha_bar, sqrt_one_minus_alpha_bar, clip_sample, c_x0, c_xt, c_eps,
                    c_noise);
}
VLK_EXPORT(denoise_step_f16)

extern "C" __global__ void __launch_bounds__(256)
    denoise_step_bf16(const __nv_bfloat16* x_t, const __nv_bfloat16* model_cond,
                      const __nv_bfloat16* model_uncond, const __nv_bfloat16* noise,
                      __nv_bfloat16* out, long long n, float guidance, int prediction,
                      float sqrt_alpha_bar, float sqrt_one_minus_alpha_bar, float clip_sample,
                      float c_x0, float c_xt, float c_eps, float c_noise) {
  denoise_step_impl(x_t, model_cond, model_uncond, noise, out, n, guidance, prediction,
                    sqrt_alpha_bar, sqrt_one_minus_alpha_bar, clip_sample, c_x0, c_xt, c_eps,
                    c_noise);
}
VLK_EXPORT(denoise_step_bf16)
