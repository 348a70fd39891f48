// Pointwise kernels over strided (possibly broadcast) inputs with a contiguous
// output: unary ops and their derivatives, binary arithmetic, comparisons and
// where. Inputs are read through vlk::StridedLayout (the host broadcasts every
// layout to the output's shape, stride 0 on broadcast dims); math is f32.
// Fast path: when every input layout is contiguous (vlk::strided_contiguous) the
// index arithmetic is skipped.
//
// Launch (every kernel here): block = 256 threads, grid = min(ceil(n / 256), 65535)
// (at least 1), no dynamic shared memory. One output element per thread per
// grid-stride step. Bytes: (inputs + 1) * n * sizeof(T); FLOPs: a few per element
// (unary: one transcendental at most, bwd: two).
//
// Exported, for T in {float, __half, __nv_bfloat16} with suffix _f32/_f16/_bf16:
//   unary_*(const T* x, StridedLayout xl, T* y, long long n, int op, float p0, float p1)
//   unary_bwd_*(const T* x, StridedLayout xl, const T* dy, StridedLayout dyl, T* dx,
//               long long n, int op, float p0, float p1)
//   binary_*(const T* a, StridedLayout al, const T* b, StridedLayout bl, T* out,
//            long long n, int op)
//   cmp_*(same parameters as binary)
//   where_cond_*(const T* cond, StridedLayout cl, const T* a, StridedLayout al,
//                const T* b, StridedLayout bl, T* out, long long n)
#include "common.cuh"

namespace {

using vlk::StridedLayout;

// Unary op codes (shared with the host).
enum UnaryOp {
  kNeg = 0, kExp = 1, kLog = 2, kSqrt = 3, kRsqrt = 4, kTanh = 5, kSigmoid = 6, kRelu = 7,
  kAbs = 8, kSqr = 9, kRecip = 10, kGelu = 11, kGeluTanh = 12, kQuickGelu = 13, kSilu = 14,
  kAffine = 15, kPowf = 16
};

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;  // 1 / sqrt(2 pi)
constexpr float kSqrt2OverPi = 0.79788456080286536f;
constexpr float kGeluTanhC = 0.044715f;
constexpr float kQuickGeluA = 1.702f;

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// f(x); p0, p1 are the parameters of affine (x * p0 + p1) and powf (x^p0).
__device__ __forceinline__ float unary_f(int op, float x, float p0, float p1) {
  switch (op) {
    case kNeg: return -x;
    case kExp: return expf(x);
    case kLog: return logf(x);
    case kSqrt: return sqrtf(x);
    case kRsqrt: return rsqrtf(x);
    case kTanh: return tanhf(x);
    case kSigmoid: return sigmoidf(x);
    case kRelu: return fmaxf(x, 0.0f);
    case kAbs: return fabsf(x);
    case kSqr: return x * x;
    case kRecip: return 1.0f / x;
    case kGelu: return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
    case kGeluTanh: return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + kGeluTanhC * x * x * x)));
    case kQuickGelu: return x * sigmoidf(kQuickGeluA * x);
    case kSilu: return x * sigmoidf(x);
    case kAffine: return x * p0 + p1;
    default: return powf(x, p0);  // kPowf
  }
}

// f'(x), the same op codes; relu'(0) = abs'(0) = 0.
__device__ __forceinline__ float unary_df(int op, float x, float p0) {
  switch (op) {
    case kNeg: return -1.0f;
    case kExp: return expf(x);
    case kLog: return 1.0f / x;
    case kSqrt: return 0.5f / sqrtf(x);
    case kRsqrt: return -0.5f / (x * sqrtf(x));
    case kTanh: {
      const float t = tanhf(x);
      return 1.0f - t * t;
    }
    case kSigmoid: {
      const float s = sigmoidf(x);
      return s * (1.0f - s);
    }
    case kRelu: return x > 0.0f ? 1.0f : 0.0f;
    case kAbs: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
    case kSqr: return 2.0f * x;
    case kRecip: return -1.0f / (x * x);
    case kGelu:
      return 0.5f * (1.0f + erff(x * kInvSqrt2)) + x * kInvSqrt2Pi * expf(-0.5f * x * x);
    case kGeluTanh: {
      const float t = tanhf(kSqrt2OverPi * (x + kGeluTanhC * x * x * x));
      return 0.5f * (1.0f + t) +
             0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kGeluTanhC * x * x);
    }
    case kQuickGelu: {
      const float s = sigmoidf(kQuickGeluA * x);
      return s + kQuickGeluA * x * s * (1.0f - s);
    }
    case kSilu: {
      const float s = sigmoidf(x);
      return s + x * s * (1.0f - s);
    }
    case kAffine: return p0;
    default: return p0 * powf(x, p0 - 1.0f);  // kPowf
  }
}

// op 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum (NaN-ignoring, like fmaxf).
__device__ __forceinline__ float binary_f(int op, float a, float b) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return fmaxf(a, b);
    default: return fminf(a, b);
  }
}

// op 0 eq, 1 ne, 2 lt, 3 le, 4 gt, 5 ge.
__device__ __forceinline__ bool cmp_f(int op, float a, float b) {
  switch (op) {
    case 0: return a == b;
    case 1: return a != b;
    case 2: return a < b;
    case 3: return a <= b;
    case 4: return a > b;
    default: return a >= b;
  }
}

__device__ __forceinline__ long long grid_stride() { return (long long)gridDim.x * blockDim.x; }
__device__ __forceinline__ long long grid_start() {
  return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

// y[i] = f(x[xl(i)]), y contiguous.
template <class T>
__device__ __forceinline__ void unary(const T* __restrict__ x, const StridedLayout& xl,
                                      T* __restrict__ y, long long n, int op, float p0, float p1) {
  if (vlk::strided_contiguous(xl)) {
    const T* xs = x + xl.offset;
    for (long long i = grid_start(); i < n; i += grid_stride())
      y[i] = vlk::from_float<T>(unary_f(op, vlk::to_float(xs[i]), p0, p1));
  } else {
    for (long long i = grid_start(); i < n; i += grid_stride())
      y[i] = vlk::from_float<T>(unary_f(op, vlk::to_float(x[vlk::strided_offset(xl, i)]), p0, p1));
  }
}

// dx[i] = dy[dyl(i)] * f'(x[xl(i)]), dx contiguous.
template <class T>
__device__ __forceinline__ void unary_bwd(const T* __restrict__ x, const StridedLayout& xl,
                                          const T* __restrict__ dy, const StridedLayout& dyl,
                                          T* __restrict__ dx, long long n, int op, float p0) {
  if (vlk::strided_contiguous(xl) && vlk::strided_contiguous(dyl)) {
    const T* xs = x + xl.offset;
    const T* dys = dy + dyl.offset;
    for (long long i = grid_start(); i < n; i += grid_stride())
      dx[i] = vlk::from_float<T>(vlk::to_float(dys[i]) * unary_df(op, vlk::to_float(xs[i]), p0));
  } else {
    for (long long i = grid_start(); i < n; i += grid_stride()) {
      const float g = vlk::to_float(dy[vlk::strided_offset(dyl, i)]);
      dx[i] = vlk::from_float<T>(g * unary_df(op, vlk::to_float(x[vlk::strided_offset(xl, i)]), p0));
    }
  }
}

// out[i] = F(a[al(i)], b[bl(i)]) for binary (CMP = false) or cmp (CMP = true: 1 or 0).
template <bool CMP, class T>
__device__ __forceinline__ float binary_apply(int op, T a, T b) {
  const float fa = vlk::to_float(a), fb = vlk::to_float(b);
  return CMP ? (cmp_f(op, fa, fb) ? 1.0f : 0.0f) : binary_f(op, fa, fb);
}

template <bool CMP, class T>
__device__ __forceinline__ void binary(const T* __restrict__ a, const StridedLayout& al,
                                       const T* __restrict__ b, const StridedLayout& bl,
                                       T* __restrict__ out, long long n, int op) {
  if (vlk::strided_contiguous(al) && vlk::strided_contiguous(bl)) {
    const T* as = a + al.offset;
    const T* bs = b + bl.offset;
    for (long long i = grid_start(); i < n; i += grid_stride())
      out[i] = vlk::from_float<T>(binary_apply<CMP>(op, as[i], bs[i]));
  } else {
    for (long long i = grid_start(); i < n; i += grid_stride())
      out[i] = vlk::from_float<T>(
          binary_apply<CMP>(op, a[vlk::strided_offset(al, i)], b[vlk::strided_offset(bl, i)]));
  }
}

// out[i] = cond[cl(i)] != 0 ? a[al(i)] : b[bl(i)] (values copied bit for bit; a NaN
// condition counts as true).
template <class T>
__device__ __forceinline__ void where_cond(const T* __restrict__ cond, const StridedLayout& cl,
                                           const T* __restrict__ a, const StridedLayout& al,
                                           const T* __restrict__ b, const StridedLayout& bl,
                                           T* __restrict__ out, long long n) {
  if (vlk::strided_contiguous(cl) && vlk::strided_contiguous(al) && vlk::strided_contiguous(bl)) {
    const T* cs = cond + cl.offset;
    const T* as = a + al.offset;
    const T* bs = b + bl.offset;
    for (long long i = grid_start(); i < n; i += grid_stride())
      out[i] = vlk::to_float(cs[i]) != 0.0f ? as[i] : bs[i];
  } else {
    for (long long i = grid_start(); i < n; i += grid_stride())
      out[i] = vlk::to_float(cond[vlk::strided_offset(cl, i)]) != 0.0f ? a[vlk::strided_offset(al, i)]
                                                                        : b[vlk::strided_offset(bl, i)];
  }
}

}  // namespace

#define VLK_ELEMENTWISE(SUF, T)                                                                 \
  extern "C" __global__ void __launch_bounds__(256)                                             \
      unary_##SUF(const T* x, StridedLayout xl, T* y, long long n, int op, float p0, float p1) { \
    unary<T>(x, xl, y, n, op, p0, p1);                                                          \
  }                                                                                             \
  VLK_EXPORT(unary_##SUF)                                                                       \
  extern "C" __global__ void __launch_bounds__(256)                                             \
      unary_bwd_##SUF(const T* x, StridedLayout xl, const T* dy, StridedLayout dyl, T* dx,      \
                      long long n, int op, float p0, float p1) {                                \
    (void)p1; /* the derivative of x * p0 + p1 does not depend on p1 */                         \
    unary_bwd<T>(x, xl, dy, dyl, dx, n, op, p0);                                                \
  }                                                                                             \
  VLK_EXPORT(unary_bwd_##SUF)                                                                   \
  extern "C" __global__ void __launch_bounds__(256)                                             \
      binary_##SUF(const T* a, StridedLayout al, const T* b, StridedLayout bl, T* out,          \
                   long long n, int op) {                                                       \
    binary<false, T>(a, al, b, bl, out, n, op);                                                 \
  }                                                                                             \
  VLK_EXPORT(binary_##SUF)                                                                      \
  extern "C" __global__ void __launch_bounds__(256)                                             \
      cmp_##SUF(const T* a, StridedLayout al, const T* b, StridedLayout bl, T* out, long long n, \
                int op) {                                                                       \
    binary<true, T>(a, al, b, bl, out, n, op);                                                  \
  }                                                                                             \
  VLK_EXPORT(cmp_##SUF)                                                                         \
  extern "C" __global__ void __launch_bounds__(256)                                             \
      where_cond_##SUF(const T* cond, StridedLayout cl, const T* a, StridedLayout al,           \
                       const T* b, StridedLayout bl, T* out, long long n) {                     \
    where_cond<T>(cond, cl, a, al, b, bl, out, n);                                              \
  }                                                                                             \
  VLK_EXPORT(where_cond_##SUF)

VLK_ELEMENTWISE(f32, float)
VLK_ELEMENTWISE(f16, __half)
VLK_ELEMENTWISE(bf16, __nv_bfloat16)
#undef VLK_ELEMENTWISE
