// Emulator test of kernels/gemm.cu: gemm_f32, gemm_f16, gemm_bf16 launched through the C
// ABI as Rust does, against a double-precision reference computed from the same (rounded)
// inputs. Covers all transpose combinations, M/N/K = 0..150 incl. 1, odd sizes and sizes
// just above the 128/32 tiles, aligned (cp.async) and unaligned (scalar) leading dimensions,
// batches with strideB = 0, bias, every activation, residual (also in place) and alpha.
// Elements of C outside the M x N views must keep their poison bytes.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" int vlk_emu_launch_gemm_f32(vlk_dim3, vlk_dim3, size_t, void**, char*, size_t);
extern "C" int vlk_emu_launch_gemm_f16(vlk_dim3, vlk_dim3, size_t, void**, char*, size_t);
extern "C" int vlk_emu_launch_gemm_bf16(vlk_dim3, vlk_dim3, size_t, void**, char*, size_t);
typedef int (*Launcher)(vlk_dim3, vlk_dim3, size_t, void**, char*, size_t);

static std::mt19937 rng(20261129);
static int irand(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
static float frand() { return std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng); }

template <class T> static T to_t(float v);
template <> float to_t<float>(float v) { return v; }
template <> __half to_t<__half>(float v) { return __float2half_rn(v); }
template <> __nv_bfloat16 to_t<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
static double to_d(float v) { return v; }
static double to_d(__half v) { return __half2float(v); }
static double to_d(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> struct Traits;
template <> struct Traits<float> {
  static constexpr const char* name = "gemm_f32";
  static constexpr double tol = 1e-5;
  static constexpr size_t smem = 33792;
  static Launcher launcher() { return vlk_emu_launch_gemm_f32; }
};
template <> struct Traits<__half> {
  static constexpr const char* name = "gemm_f16";
  static constexpr double tol = 1e-2;
  static constexpr size_t smem = 81920;
  static Launcher launcher() { return vlk_emu_launch_gemm_f16; }
};
template <> struct Traits<__nv_bfloat16> {
  static constexpr const char* name = "gemm_bf16";
  static constexpr double tol = 1e-2;
  static constexpr size_t smem = 81920;
  static Launcher launcher() { return vlk_emu_launch_gemm_bf16; }
};

struct Case {
  int M, N, K, batch;
  int transA, transB;
  bool aligned;     // leading dims / strides multiples of 8 (cp.async path for f16/bf16)
  bool broadcastB;  // strideB = 0
  bool bias, residual, inplace;  // inplace: residual == C
  int act;
  float alpha;
};

static double act_ref(double x, int act) {
  switch (act) {
    case 1: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case 2: return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case 3: return x / (1.0 + std::exp(-1.702 * x));
    default: return x;
  }
}

static int failures = 0;

// Leading dimension for a row of `cols` elements: padded, a multiple of 8 when aligned, else
// odd (so that no row after the first is 16-byte aligned).
static long long pick_ld(int cols, bool aligned) {
  if (aligned) return ((cols + 7) / 8) * 8 + 8 * irand(0, 1);
  long long ld = cols + irand(0, 3);
  return ld % 2 ? ld : ld + 1;
}

template <class T> static bool run_case(const Case& c, double& worst) {
  const int M = c.M, N = c.N, K = c.K, B = c.batch;
  // Stored shapes: A is M x K (or K x M), B is K x N (or N x K).
  const int a_rows = c.transA ? K : M, a_cols = c.transA ? M : K;
  const int b_rows = c.transB ? N : K, b_cols = c.transB ? K : N;
  const long long lda = pick_ld(a_cols, c.aligned), ldb = pick_ld(b_cols, c.aligned);
  const long long ldc = pick_ld(N, c.aligned);
  auto span = [](int rows, long long ld, int cols) { return rows ? (rows - 1) * ld + cols : 0; };
  auto stride = [&](long long n) {
    return c.aligned ? ((n + 7) / 8) * 8 + 8 : n + (n % 2 ? 0 : 1) + 2;  // odd when unaligned
  };
  const long long strideA = stride(span(a_rows, lda, a_cols));
  const long long strideB = c.broadcastB ? 0 : stride(span(b_rows, ldb, b_cols));
  const long long strideC = stride(span(M, ldc, N));
  const long long nA = std::max(1LL, strideA * (B - 1) + span(a_rows, lda, a_cols));
  const long long nB = std::max(1LL, strideB * (B - 1) + span(b_rows, ldb, b_cols));
  const long long nC = std::max(1LL, strideC * (B - 1) + span(M, ldc, N));

  T* dA = static_cast<T*>(vlk_emu_alloc(nA * sizeof(T)));
  T* dB = static_cast<T*>(vlk_emu_alloc(nB * sizeof(T)));
  T* dC = static_cast<T*>(vlk_emu_alloc(nC * sizeof(T)));
  T* dbias = c.bias ? static_cast<T*>(vlk_emu_alloc(N * sizeof(T))) : nullptr;
  T* dres = c.residual && !c.inplace ? static_cast<T*>(vlk_emu_alloc(nC * sizeof(T))) : nullptr;
  // Fill only the elements of the views: the gaps stay NaN, so a kernel reading them shows.
  for (int z = 0; z < B; ++z) {
    for (int r = 0; r < a_rows; ++r)
      for (int q = 0; q < a_cols; ++q) dA[z * strideA + r * lda + q] = to_t<T>(frand());
    if (z == 0 || strideB)
      for (int r = 0; r < b_rows; ++r)
        for (int q = 0; q < b_cols; ++q) dB[z * strideB + r * ldb + q] = to_t<T>(frand());
  }
  if (dbias)
    for (int n = 0; n < N; ++n) dbias[n] = to_t<T>(frand());
  std::vector<double> res_val(size_t(B) * M * N, 0.0);
  if (c.residual) {
    T* r = c.inplace ? dC : dres;
    for (int z = 0; z < B; ++z)
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          const T v = to_t<T>(frand());
          r[z * strideC + m * ldc + n] = v;
          res_val[(size_t(z) * M + m) * N + n] = to_d(v);
        }
  }
  const T* res_arg = c.residual ? (c.inplace ? dC : dres) : nullptr;
  const T* bias_arg = dbias;

  int M_ = M, N_ = N, K_ = K, tA = c.transA, tB = c.transB, act = c.act;
  long long lda_ = lda, ldb_ = ldb, ldc_ = ldc, sA = strideA, sB = strideB, sC = strideC;
  float alpha = c.alpha;
  void* args[] = {&dA, &dB, &dC, &bias_arg, &res_arg, &M_, &N_, &K_, &lda_, &ldb_, &ldc_,
                  &sA, &sB, &sC, &tA, &tB, &alpha, &act};
  const vlk_dim3 grid{unsigned((N + 127) / 128), unsigned((M + 127) / 128), unsigned(B)};
  char err[512] = "";
  const int rc = Traits<T>::launcher()(grid, vlk_dim3{256, 1, 1}, Traits<T>::smem, args, err, sizeof err);
  bool ok = rc == 0;
  if (!ok) std::printf("     launch returned %d: %s\n", rc, err);

  double case_worst = 0.0;
  std::vector<char> inside(nC, 0);
  for (int z = 0; ok && z < B; ++z)
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        double dot = 0.0, mag = 0.0;
        for (int k = 0; k < K; ++k) {
          const double a = to_d(dA[z * strideA + (c.transA ? k * lda + m : m * lda + k)]);
          const double b = to_d(dB[z * strideB + (c.transB ? n * ldb + k : k * ldb + n)]);
          dot += a * b;
          mag += std::fabs(a * b);
        }
        const double bias = dbias ? to_d(dbias[n]) : 0.0;
        const double pre = double(alpha) * dot + bias;
        const double res = res_val[(size_t(z) * M + m) * N + n];
        const double want = act_ref(pre, c.act) + res;
        const long long off = z * strideC + m * ldc + n;
        inside[off] = 1;
        const double got = to_d(dC[off]);
        const double scale = std::fabs(alpha) * mag + std::fabs(bias) + std::fabs(res) + 1e-3;
        double e = std::fabs(got - want) / scale;
        if (std::isnan(e)) e = INFINITY;
        if (e > case_worst) case_worst = e;
      }
  // Everything of C outside the views must still hold the poison (0xFF bytes).
  size_t touched = 0;
  for (long long i = 0; ok && i < nC; ++i) {
    if (inside[i]) continue;
    unsigned char bytes[sizeof(T)];
    std::memcpy(bytes, &dC[i], sizeof(T));
    for (size_t q = 0; q < sizeof(T); ++q) touched += bytes[q] != 0xFF;
  }
  ok = ok && case_worst <= Traits<T>::tol && touched == 0;
  if (case_worst > worst) worst = case_worst;
  if (!ok)
    std::printf("FAIL %s M=%d N=%d K=%d batch=%d tA=%d tB=%d aligned=%d bcastB=%d bias=%d res=%d "
                "inplace=%d act=%d alpha=%g: max rel err %.3g, %zu bytes outside the view touched\n",
                Traits<T>::name, M, N, K, B, c.transA, c.transB, c.aligned, c.broadcastB, c.bias,
                c.residual, c.inplace, c.act, alpha, case_worst, touched);
  vlk_emu_free(dA);
  vlk_emu_free(dB);
  vlk_emu_free(dC);
  if (dbias) vlk_emu_free(dbias);
  if (dres) vlk_emu_free(dres);
  return ok;
}

static std::vector<Case> make_cases() {
  std::vector<Case> cs;
  // Fixed edge shapes, every transpose combination, aligned and not.
  const int shapes[][3] = {{1, 1, 1},   {1, 1, 0},    {3, 5, 0},    {1, 140, 70}, {150, 1, 33},
                           {17, 9, 1},  {129, 130, 33}, {128, 128, 32}, {64, 200, 16}, {7, 13, 97}};
  for (const auto& s : shapes)
    for (int t = 0; t < 4; ++t)
      for (int al = 0; al < 2; ++al) {
        Case c{s[0], s[1], s[2], 1, t & 1, t >> 1, al == 1, false, false, false, false, 0, 1.0f};
        cs.push_back(c);
      }
  // Epilogues: bias, each activation, residual (separate and in place), alpha, batches.
  for (int act = 0; act < 4; ++act)
    for (int t = 0; t < 4; ++t) {
      Case c{irand(1, 150), irand(1, 140), irand(0, 70), 2, t & 1, t >> 1, (act + t) % 2 == 0,
             true, true, act % 2 == 0, act == 2, act, act == 3 ? -0.75f : 0.5f};
      cs.push_back(c);
    }
  // Random shapes and options.
  for (int i = 0; i < 24; ++i) {
    Case c{irand(1, 150), irand(1, 140), irand(0, 70), irand(1, 3), irand(0, 1), irand(0, 1),
           irand(0, 1) == 1, irand(0, 1) == 1, irand(0, 1) == 1, irand(0, 1) == 1, false,
           irand(0, 3), frand() * 2.0f};
    c.inplace = c.residual && irand(0, 1);
    cs.push_back(c);
  }
  return cs;
}

template <class T> static void run_all(const std::vector<Case>& cs) {
  double worst = 0.0;
  int passed = 0;
  for (const Case& c : cs) passed += run_case<T>(c, worst);
  std::printf("%s %s: %d/%zu cases, max error %.3g (relative to alpha*sum|a*b| + |bias| + "
              "|residual|; tolerance %g)\n",
              passed == int(cs.size()) ? "PASS" : "FAIL", Traits<T>::name, passed, cs.size(), worst,
              Traits<T>::tol);
  failures += int(cs.size()) - passed;
}

int main() {
  const std::vector<Case> cs = make_cases();
  run_all<float>(cs);
  run_all<__half>(cs);
  run_all<__nv_bfloat16>(cs);
  if (failures) std::printf("%d FAILED\n", failures);
  else std::printf("all gemm tests passed\n");
  return failures ? 1 : 0;
}
