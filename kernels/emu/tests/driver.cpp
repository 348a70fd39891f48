// Test driver for the CUDA emulator: launches the kernels of kernels.cu and
// bugs.cu through the C ABI exactly as Rust will (vlk_emu_launch_<name>,
// vlk_emu_alloc) and checks results, error messages and timings.
#include <time.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "emu/cuda_emu.h"

#define DECLARE(name) \
  extern "C" int vlk_emu_launch_##name(vlk_dim3, vlk_dim3, size_t, void**, char*, size_t);
DECLARE(t_row_sum) DECLARE(t_softmax) DECLARE(t_warp_ops) DECLARE(t_mma_bf16) DECLARE(t_mma_f16)
DECLARE(t_gemm_tile) DECLARE(t_ldmatrix) DECLARE(t_cp_async) DECLARE(t_atomics)
DECLARE(t_smem_poison) DECLARE(t_indices) DECLARE(bug_divergent_barrier) DECLARE(bug_early_exit)
DECLARE(bug_half_warp_shfl) DECLARE(bug_half_warp_shfl_exit) DECLARE(bug_oob_read)
DECLARE(t_partial_warp) DECLARE(bug_null_read) DECLARE(t_block_scan)
DECLARE(bug_missing_barrier)

typedef int (*Launcher)(vlk_dim3, vlk_dim3, size_t, void**, char*, size_t);

static int failures = 0;
static void check(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what);
  failures += !ok;
}

static char err[1024];
static int run(Launcher f, vlk_dim3 grid, vlk_dim3 block, size_t shmem, std::vector<void*> args) {
  err[0] = 0;
  const int rc = f(grid, block, shmem, args.data(), err, sizeof err);
  if (rc) std::printf("     launch returned %d: %s\n", rc, err);
  return rc;
}

template <class T> static T* dev(size_t n) { return static_cast<T*>(vlk_emu_alloc(n * sizeof(T))); }
template <class T> static T* dev(const std::vector<T>& v) {
  T* p = dev<T>(v.size());
  std::memcpy(p, v.data(), v.size() * sizeof(T));
  return p;
}

static double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
// CPU time of all threads: stable when other work competes for the cores.
static double cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// Largest error so far; a NaN error counts as infinite.
static void update_max(double& worst, double e) {
  if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
}

static std::mt19937 rng(1234);
static float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); }

static void test_fp16() {
  auto h = [](float f) { return __half_as_ushort(__float2half_rn(f)); };
  auto b = [](float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); };
  bool ok = h(1.0f) == 0x3c00 && h(65504.0f) == 0x7bff && h(65519.0f) == 0x7bff &&
            h(65520.0f) == 0x7c00 /* tie with 65536 goes to even = inf */ &&
            h(1.0f + std::ldexp(1.0f, -11)) == 0x3c00 &&      // tie -> even (down)
            h(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02 &&  // tie -> even (up)
            h(std::ldexp(1.0f, -24)) == 0x0001 && h(std::ldexp(1.0f, -25)) == 0x0000 &&
            h(3 * std::ldexp(1.0f, -25)) == 0x0002 && h(std::ldexp(1.0f, -14)) == 0x0400 &&
            h(-0.0f) == 0x8000 && h(NAN) == 0x7fff && h(-INFINITY) == 0xfc00 && h(-2.5f) == 0xc100;
  check(ok, "f16 round-to-nearest-even spot checks (ties, subnormals, overflow, NaN)");
  ok = b(1.0f) == 0x3f80 && b(1.0f + std::ldexp(1.0f, -8)) == 0x3f80 &&
       b(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82 && b(3.4028235e38f) == 0x7f80 &&
       b(NAN) == 0x7fff && b(-1.5f) == 0xbfc0 && b(std::ldexp(1.0f, -133)) == 0x0001 &&
       b(std::ldexp(3.0f, -134)) == 0x0002;  // subnormal tie -> even
  check(ok, "bf16 round-to-nearest-even spot checks");
  bool rt = true;
  for (unsigned u = 0; u < 65536; ++u) {
    const __half x = __ushort_as_half((unsigned short)u);
    const float f = __half2float(x);
    if (std::isnan(f)) continue;
    rt &= __half_as_ushort(__float2half(f)) == u;
    const __nv_bfloat16 y = __ushort_as_bfloat16((unsigned short)u);
    if (!std::isnan(__bfloat162float(y))) rt &= __bfloat16_as_ushort(__float2bfloat16(__bfloat162float(y))) == u;
  }
  check(rt, "f16 and bf16: every non-NaN bit pattern survives 16 -> f32 -> 16");
  const __half s = __half(1.0f) + __half(std::ldexp(1.0f, -11));
  check(__half_as_ushort(s) == 0x3c00 && float(__half(3.0f) * __half(0.5f)) == 1.5f,
        "__half arithmetic rounds once, to even");
}

static void test_reductions() {
  const int rows = 256, n = 4096;
  std::vector<float> x(size_t(rows) * n);
  for (auto& v : x) v = uniform(-3.0f, 3.0f);
  float* dx = dev(x);
  float* dsum = dev<float>(rows);
  float* dy = dev<float>(x.size());
  int ni = n;
  auto t0 = std::chrono::steady_clock::now();
  double c0 = cpu_ms();
  int rc = run(vlk_emu_launch_t_row_sum, {unsigned(rows), 1, 1}, {1024, 1, 1}, 0, {&dx, &dsum, &ni});
  const double t_sum = ms_since(t0), c_sum = cpu_ms() - c0;
  double worst = 0;
  for (int r = 0; r < rows; ++r) {
    double ref = 0;
    for (int i = 0; i < n; ++i) ref += x[size_t(r) * n + i];
    update_max(worst, std::fabs(dsum[r] - ref));
  }
  char what[160];
  std::snprintf(what, sizeof what, "block reduction, 1024 threads x %d blocks (max err %.2e, %.1f ms wall, %.0f us CPU/block)",
                rows, worst, t_sum, 1000 * c_sum / rows);
  check(rc == 0 && worst < 1e-2, what);

  t0 = std::chrono::steady_clock::now();
  c0 = cpu_ms();
  rc = run(vlk_emu_launch_t_softmax, {unsigned(rows), 1, 1}, {1024, 1, 1}, n * sizeof(float), {&dx, &dy, &ni});
  const double t_sm = ms_since(t0), c_sm = cpu_ms() - c0;
  worst = 0;
  for (int r = 0; r < rows; ++r) {
    const float* xr = &x[size_t(r) * n];
    double m = -INFINITY, s = 0;
    for (int i = 0; i < n; ++i) m = std::max(m, double(xr[i]));
    for (int i = 0; i < n; ++i) s += std::exp(xr[i] - m);
    for (int i = 0; i < n; ++i) update_max(worst, std::fabs(dy[size_t(r) * n + i] - std::exp(xr[i] - m) / s));
  }
  std::snprintf(what, sizeof what, "softmax %dx%d, 1024 threads/row (max err %.2e, %.1f ms wall, %.0f us CPU/block)",
                rows, n, worst, t_sm, 1000 * c_sm / rows);
  check(rc == 0 && worst < 1e-6, what);
  vlk_emu_free(dx);
  vlk_emu_free(dsum);
  vlk_emu_free(dy);
}

static void test_block_scan() {
  const int rows = 256;
  std::vector<int> x(size_t(rows) * 1024);
  for (auto& v : x) v = int(rng() % 100);
  int* dx = dev(x);
  int* dy = dev<int>(x.size());
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = cpu_ms();
  bool ok = run(vlk_emu_launch_t_block_scan, {unsigned(rows), 1, 1}, {1024, 1, 1}, 0, {&dx, &dy}) == 0;
  const double wall = ms_since(t0), cpu = cpu_ms() - c0;
  for (int r = 0; r < rows; ++r) {
    int acc = 0;
    for (int i = 0; i < 1024; ++i) ok &= dy[r * 1024 + i] == (acc += x[r * 1024 + i]);
  }
  char what[160];
  std::snprintf(what, sizeof what, "block scan, 1024 threads x %d blocks, 11 barriers (%.1f ms wall, %.0f us CPU/block)",
                rows, wall, 1000 * cpu / rows);
  check(ok, what);
  vlk_emu_free(dx);
  vlk_emu_free(dy);
}

static void test_warp_ops() {
  const int nt = 64;
  std::vector<int> in(nt);
  for (int i = 0; i < nt; ++i) in[i] = int(rng() % 1000);
  in[3] = 1000 + 3;  // makes __any_sync true in warp 0 only
  int* din = dev(in);
  int* dout = dev<int>(nt * 10);
  bool ok = run(vlk_emu_launch_t_warp_ops, {1, 1, 1}, {unsigned(nt), 1, 1}, 0, {&din, &dout}) == 0;
  for (int t = 0; t < nt && ok; ++t) {
    const int w = t & ~31, l = t & 31;
    int sum = 0;
    unsigned ballot = 0;
    bool any = false, all = true;
    for (int j = 0; j < 32; ++j) {
      sum += in[w + j];
      ballot |= unsigned(in[w + j] & 1) << j;
      any |= in[w + j] == 1000 + j;
      all &= in[w + j] >= 0;
    }
    const int* o = &dout[t * 10];
    const int exp[10] = {sum,
                         in[w + (l ^ 5)],
                         l >= 3 ? in[t - 3] : in[t],
                         (l & 7) + 2 < 8 ? in[t + 2] : in[t],
                         in[w + (l & 16) + 7],
                         int(ballot),
                         int(any) | int(all) << 1,
                         in[w + (l ^ 1)],
                         int(in[w + 31] * 0.5) * 2,
                         -1};
    for (int k = 0; k < 10; ++k)
      if (o[k] != exp[k]) ok = false, std::printf("t%d k%d got %d want %d\n", t, k, o[k], exp[k]);
  }
  check(ok, "warp shuffles (xor, up, down/width 8, idx/width 16, 64-bit), ballot/any/all, split masks");
  vlk_emu_free(din);
  vlk_emu_free(dout);
}

// Random 16-bit operands (exact in f32), a scalar reference in double.
static void test_mma(bool bf16) {
  std::vector<uint16_t> A(256), B(128);
  std::vector<float> C(128), Af(256), Bf(128);
  for (int i = 0; i < 256; ++i) {
    const float v = uniform(-2, 2);
    A[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16(v)) : __half_as_ushort(__float2half(v));
    Af[i] = bf16 ? __bfloat162float(__ushort_as_bfloat16(A[i])) : __half2float(__ushort_as_half(A[i]));
  }
  for (int i = 0; i < 128; ++i) {
    const float v = uniform(-2, 2);
    B[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16(v)) : __half_as_ushort(__float2half(v));
    Bf[i] = bf16 ? __bfloat162float(__ushort_as_bfloat16(B[i])) : __half2float(__ushort_as_half(B[i]));
    C[i] = uniform(-1, 1);
  }
  uint16_t* dA = dev(A);
  uint16_t* dB = dev(B);
  float* dC = dev(C);
  float* dD = dev<float>(128);
  int rc = run(bf16 ? vlk_emu_launch_t_mma_bf16 : vlk_emu_launch_t_mma_f16, {1, 1, 1}, {32, 1, 1}, 0,
               {&dA, &dB, &dC, &dD});
  double worst = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double ref = C[m * 8 + n];
      for (int k = 0; k < 16; ++k) ref += double(Af[m * 16 + k]) * Bf[k * 8 + n];
      update_max(worst, std::fabs(dD[m * 8 + n] - ref));
    }
  char what[128];
  std::snprintf(what, sizeof what, "mma.sync m16n8k16 %s vs scalar reference (max err %.1e)",
                bf16 ? "bf16" : "f16", worst);
  check(rc == 0 && worst < 1e-4, what);
  vlk_emu_free(dA);
  vlk_emu_free(dB);
  vlk_emu_free(dC);
  vlk_emu_free(dD);
}

static void test_gemm_tile() {
  const int K = 128;
  std::vector<__nv_bfloat16> A(16 * K), B(K * 8);
  for (auto& v : A) v = __float2bfloat16(uniform(-1, 1));
  for (auto& v : B) v = __float2bfloat16(uniform(-1, 1));
  __nv_bfloat16* dA = dev(A);
  __nv_bfloat16* dB = dev(B);
  float* dC = dev<float>(128);
  int k = K;
  int rc = run(vlk_emu_launch_t_gemm_tile, {1, 1, 1}, {32, 1, 1}, 0, {&dA, &dB, &dC, &k});
  double worst = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double ref = 0;
      for (int kk = 0; kk < K; ++kk) ref += double(float(A[m * K + kk])) * float(B[kk * 8 + n]);
      update_max(worst, std::fabs(dC[m * 8 + n] - ref));
    }
  char what[128];
  std::snprintf(what, sizeof what, "GEMM tile: cp.async + ldmatrix.x4 / .x2.trans + mma bf16, K=%d (max err %.1e)", K, worst);
  check(rc == 0 && worst < 1e-4, what);
  vlk_emu_free(dA);
  vlk_emu_free(dB);
  vlk_emu_free(dC);
}

static void test_ldmatrix() {
  std::vector<uint16_t> src(256);
  for (int i = 0; i < 256; ++i) src[i] = uint16_t(i * 7 + 1);
  uint16_t* ds = dev(src);
  uint32_t* dout = dev<uint32_t>(6 * 32 * 4);
  bool ok = run(vlk_emu_launch_t_ldmatrix, {1, 1, 1}, {32, 1, 1}, 0, {&ds, &dout}) == 0;
  const int counts[3] = {1, 2, 4};
  for (int mode = 0; mode < 6; ++mode)
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < counts[mode % 3]; ++j) {
        const int row = l >> 2, col = 2 * (l & 3);
        auto at = [&](int r, int c) { return uint32_t(src[j * 64 + r * 8 + c]); };
        const uint32_t exp = mode < 3 ? at(row, col) | at(row, col + 1) << 16
                                      : at(col, row) | at(col + 1, row) << 16;
        ok &= dout[(mode * 32 + l) * 4 + j] == exp;
      }
  check(ok, "ldmatrix x1/x2/x4 and .trans against the documented layout");
  vlk_emu_free(ds);
  vlk_emu_free(dout);
}

static void test_cp_async() {
  std::vector<float> src(256);
  for (int i = 0; i < 256; ++i) src[i] = float(i) + 0.25f;
  float* ds = dev(src);
  float* dout = dev<float>(1024);
  int* dseen = dev<int>(64);
  bool ok = run(vlk_emu_launch_t_cp_async, {1, 1, 1}, {64, 1, 1}, 1024 * sizeof(float), {&ds, &dout, &dseen}) == 0;
  for (int t = 0; t < 64 && ok; ++t) {
    const int valid = t % 17;
    for (int i = 0; i < 4; ++i) {
      const float v = src[t * 4 + i];
      float z;  // zfill variant: bytes past src-size are zero
      uint32_t bits = 0;
      std::memcpy(&bits, &v, 4);
      const int keep = std::max(0, std::min(4, valid - 4 * i));
      if (keep < 4) bits &= keep ? (1u << (8 * keep)) - 1 : 0;
      std::memcpy(&z, &bits, 4);
      ok &= dout[t * 4 + i] == v && std::memcmp(&dout[256 + t * 4 + i], &z, 4) == 0 &&
            dout[512 + t * 4 + i] == v && dout[768 + t * 4 + i] == v;
    }
    ok &= dseen[t] == 1;
  }
  check(ok, "cp.async cg16 / zfill / ca4 / ca8, commit + wait_group (copies deferred to their wait)");
  vlk_emu_free(ds);
  vlk_emu_free(dout);
  vlk_emu_free(dseen);
}

struct AtomicOut { float fsum; int isum; double dsum; unsigned long long count; int imax, imin; unsigned cas; int exch; };

static void test_atomics() {
  const int blocks = 256, threads = 256, total = blocks * threads;
  AtomicOut init{0.0f, 0, 0.0, 0, -1, 1, 0, 0};
  AtomicOut* r = static_cast<AtomicOut*>(vlk_emu_alloc(sizeof(AtomicOut)));
  std::memcpy(r, &init, sizeof init);
  bool ok = run(vlk_emu_launch_t_atomics, {unsigned(blocks), 1, 1}, {unsigned(threads), 1, 1}, 0, {&r}) == 0;
  ok &= r->fsum == float(total) && r->isum == int((long long)total * (total - 1) / 2) &&
        r->dsum == total * 0.5 && r->count == (unsigned long long)total && r->imax == total - 1 &&
        r->imin == -(total - 1) && r->cas == 2u * total && r->exch == 7;
  check(ok, "atomics (float/double/int/ull add, max, min, CAS loop, exch) from 256 blocks x 256 threads");
  vlk_emu_free(r);
}

static void test_smem_poison() {
  float* out = dev<float>(2 * 128);
  bool ok = run(vlk_emu_launch_t_smem_poison, {2, 1, 1}, {128, 1, 1}, 128 * sizeof(float), {&out}) == 0;
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 128; ++i) {
      const float v = out[b * 128 + i];
      ok &= i % 2 == b ? v == float(i) : std::isnan(v);
    }
  check(ok, "dynamic shared memory reads NaN where the block did not write it");
  vlk_emu_free(out);
}

static void test_indices() {
  const vlk_dim3 g{3, 2, 2}, b{4, 2, 3};
  const int n = 12 * 24;
  int* out = dev<int>(n);
  bool ok = run(vlk_emu_launch_t_indices, g, b, 0, {&out}) == 0;
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned bx = 0; bx < 3; ++bx)
        for (unsigned tz = 0; tz < 3; ++tz)
          for (unsigned ty = 0; ty < 2; ++ty)
            for (unsigned tx = 0; tx < 4; ++tx) {
              const int i = int(((bz * 2 + by) * 3 + bx) * 24 + (tz * 2 + ty) * 4 + tx);
              ok &= out[i] == int(bx << 24 | by << 20 | bz << 16 | tx << 8 | ty << 4 | tz);
            }
  check(ok, "3-D grid and block indices");
  vlk_emu_free(out);
}

static void test_partial_warp() {
  float* out = dev<float>(48);
  bool ok = run(vlk_emu_launch_t_partial_warp, {1, 1, 1}, {48, 1, 1}, 0, {&out}) == 0;
  for (int seg = 0; seg < 3; ++seg) {
    float sum = 0;
    for (int t = 16 * seg; t < 16 * seg + 16; ++t) sum += float(std::max(t, 3)) + std::min(0.5f, float(t));
    for (int t = 16 * seg; t < 16 * seg + 16; ++t) ok &= out[t] == sum;
  }
  check(ok, "partial warp (48-thread block): full-mask width-16 shuffles over the existing lanes");
  vlk_emu_free(out);
}

// Rust runs tests on several threads at once: launches from many OS threads
// must each get their own correct results.
static void test_concurrent_launches() {
  const int rows = 16, n = 1000;
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 1);
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      std::vector<float> x(size_t(rows) * n, float(k + 1));
      float* dx = dev(x);
      float* ds = dev<float>(rows);
      int nn = n;
      std::vector<void*> args{&dx, &ds, &nn};
      char e[256];
      for (int rep = 0; rep < 5; ++rep) {
        ok[k] &= vlk_emu_launch_t_row_sum({rows, 1, 1}, {256, 1, 1}, 0, args.data(), e, sizeof e) == 0;
        for (int r = 0; r < rows; ++r) ok[k] &= ds[r] == float((k + 1) * n);
      }
      vlk_emu_free(dx);
      vlk_emu_free(ds);
    });
  for (auto& t : threads) t.join();
  check(ok[0] && ok[1] && ok[2] && ok[3], "launches from 4 OS threads at once");
}

// Fixed cost of a launch: waking the workers and starting the fibers.
static void test_launch_overhead() {
  int* out = dev<int>(32);
  const int reps = 2000;
  bool ok = true;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) ok &= run(vlk_emu_launch_t_indices, {1, 1, 1}, {32, 1, 1}, 0, {&out}) == 0;
  char what[128];
  std::snprintf(what, sizeof what, "launch overhead: %.1f us per launch of one 32-thread block",
                1000 * ms_since(t0) / reps);
  check(ok, what);
  vlk_emu_free(out);
}

// A planted bug must fail the launch with a message containing every needle.
static void expect_error(const char* what, Launcher f, vlk_dim3 grid, vlk_dim3 block,
                         std::vector<void*> args, std::vector<const char*> needles) {
  const auto t0 = std::chrono::steady_clock::now();
  err[0] = 0;
  const int rc = f(grid, block, 0, args.data(), err, sizeof err);
  bool ok = rc == 1;
  for (const char* n : needles) ok &= std::strstr(err, n) != nullptr;
  std::printf("%s planted bug: %s (%.1f ms)\n     -> %s\n", ok ? "PASS" : "FAIL", what, ms_since(t0), err);
  failures += !ok;
}

static void test_bugs() {
  float* out = dev<float>(1024);
  int n = 64;
  expect_error("divergent __syncthreads", vlk_emu_launch_bug_divergent_barrier, {1, 1, 1}, {128, 1, 1},
               {&out}, {"bug_divergent_barrier", "block (0,0,0)", "thread (32,0,0)", "divergent __syncthreads", "bugs.cu:"});
  expect_error("early exit before a barrier", vlk_emu_launch_bug_early_exit, {2, 1, 1}, {128, 1, 1},
               {&out, &n}, {"bug_early_exit", "thread (64,0,0)", "exited", "__syncthreads"});
  expect_error("full-mask shuffle in a half-warp branch (other half at a barrier)",
               vlk_emu_launch_bug_half_warp_shfl, {1, 1, 1}, {64, 1, 1}, {&out},
               {"bug_half_warp_shfl", "__shfl_xor_sync(mask=0xffffffff)", "lane 16", "__syncthreads"});
  expect_error("full-mask shuffle in a half-warp branch (other half exits)",
               vlk_emu_launch_bug_half_warp_shfl_exit, {1, 1, 1}, {64, 1, 1}, {&out},
               {"bug_half_warp_shfl_exit", "thread (16,0,0)", "exited", "__shfl_xor_sync"});
  vlk_emu_set_check(1);
  const int len = 1000;
  float* x = dev<float>(len);
  float* y = dev<float>(len);
  int nn = len;
  expect_error("out-of-bounds global read (VLK_EMU_CHECK)", vlk_emu_launch_bug_oob_read, {4, 1, 1}, {256, 1, 1},
               {&x, &y, &nn}, {"bug_oob_read", "block (3,0,0)", "thread (231,0,0)", "out-of-bounds", "past the end of a 4000-byte buffer"});
  vlk_emu_free(x);
  vlk_emu_free(y);
  vlk_emu_set_check(0);
  float* null = nullptr;
  expect_error("null pointer read (no check mode needed)", vlk_emu_launch_bug_null_read, {1, 1, 1}, {32, 1, 1},
               {&null, &out}, {"bug_null_read", "thread (0,0,0)", "invalid memory access at (nil)"});
  // Missing barrier: hidden in ascending order, NaN in descending order.
  bool ok = run(vlk_emu_launch_bug_missing_barrier, {1, 1, 1}, {64, 1, 1}, 64 * sizeof(float), {&out}) == 0;
  for (int t = 1; t < 64; ++t) ok &= out[t] == float(t - 1);
  setenv("VLK_EMU_REVERSE", "1", 1);
  ok &= run(vlk_emu_launch_bug_missing_barrier, {1, 1, 1}, {64, 1, 1}, 64 * sizeof(float), {&out}) == 0;
  unsetenv("VLK_EMU_REVERSE");
  for (int t = 1; t < 64; ++t) ok &= std::isnan(out[t]);
  check(ok, "planted bug: missing __syncthreads() reads NaN with VLK_EMU_REVERSE=1");
  // The emulator keeps working after errors.
  float* ok_out = dev<float>(128);
  int ok_n = 128;
  check(run(vlk_emu_launch_bug_early_exit, {1, 1, 1}, {128, 1, 1}, 0, {&ok_out, &ok_n}) == 0,
        "launches succeed again after failed ones");
  vlk_emu_free(ok_out);
  vlk_emu_free(out);
}

int main() {
  test_fp16();
  test_indices();
  test_reductions();
  test_block_scan();
  test_warp_ops();
  test_mma(true);
  test_mma(false);
  test_ldmatrix();
  test_gemm_tile();
  test_cp_async();
  test_atomics();
  test_smem_poison();
  test_partial_warp();
  test_concurrent_launches();
  test_launch_overhead();
  test_bugs();
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "ok", failures);
  return failures != 0;
}
