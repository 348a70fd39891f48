// Emulator tests for kernels/layernorm.cu, kernels/softmax.cu and kernels/denoise.cu:
//   bash kernels/tests/run.sh rownorm layernorm softmax denoise
// Every kernel is launched through its vlk_emu_launch_<name> C ABI exactly as the Rust side
// does (args = pointers to the parameter values, grid/block/shared memory as documented in the
// .cu files) and compared with a double-precision CPU reference computed from the same
// (already rounded) inputs. Outputs start as NaN (vlk_emu_alloc fills 0xFF), so an unwritten
// element fails the comparison. Error = |got - ref| / max(|ref|, floor), floor = 1e-2 * max|ref|
// unless stated (layernorm y and denoise: floor per element = the magnitude of the terms
// combined, e.g. (|x| + |mean|) * rstd * |gamma| + |beta|, as f32 rounding scales with them);
// tolerance 1e-5 for f32 results, 1e-2 for f16/bf16 results.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "emu/cuda_emu.h"

typedef int (*Launcher)(vlk_dim3, vlk_dim3, size_t, void**, char*, size_t);
#define DECLARE(name) \
  extern "C" int vlk_emu_launch_##name(vlk_dim3, vlk_dim3, size_t, void**, char*, size_t);
#define DECLARE_ALL(s)                                                                  \
  DECLARE(layernorm_fwd_##s)                                                            \
  DECLARE(layernorm_bwd_##s) DECLARE(layernorm_bwd_reduce_##s) DECLARE(softmax_fwd_##s) \
      DECLARE(softmax_bwd_##s) DECLARE(xent_fwd_##s) DECLARE(xent_bwd_##s)              \
          DECLARE(denoise_step_##s)
DECLARE_ALL(f32)
DECLARE_ALL(f16)
DECLARE_ALL(bf16)

struct Kernels {
  Launcher ln_fwd, ln_bwd, ln_reduce, sm_fwd, sm_bwd, xent_fwd, xent_bwd, denoise;
};
#define KERNELS(s)                                                                                \
  Kernels {                                                                                       \
    vlk_emu_launch_layernorm_fwd_##s, vlk_emu_launch_layernorm_bwd_##s,                           \
        vlk_emu_launch_layernorm_bwd_reduce_##s, vlk_emu_launch_softmax_fwd_##s,                  \
        vlk_emu_launch_softmax_bwd_##s, vlk_emu_launch_xent_fwd_##s, vlk_emu_launch_xent_bwd_##s, \
        vlk_emu_launch_denoise_step_##s                                                           \
  }

template <class T>
struct DT;
template <>
struct DT<float> {
  static constexpr const char* name = "f32";
  static constexpr double tol = 1e-5;
  static float make(float v) { return v; }
  static double val(float v) { return v; }
  static Kernels k() { return KERNELS(f32); }
};
template <>
struct DT<__half> {
  static constexpr const char* name = "f16";
  static constexpr double tol = 1e-2;
  static __half make(float v) { return __float2half_rn(v); }
  static double val(__half v) { return __half2float(v); }
  static Kernels k() { return KERNELS(f16); }
};
template <>
struct DT<__nv_bfloat16> {
  static constexpr const char* name = "bf16";
  static constexpr double tol = 1e-2;
  static __nv_bfloat16 make(float v) { return __float2bfloat16_rn(v); }
  static double val(__nv_bfloat16 v) { return __bfloat162float(v); }
  static Kernels k() { return KERNELS(bf16); }
};

static int failures = 0, checks = 0;
static std::map<std::string, double> worst_seen;  // "<kernel> <output>" -> max error
static std::mt19937 rng(20261129);
static float uniform(float lo, float hi) {
  return std::uniform_real_distribution<float>(lo, hi)(rng);
}

static unsigned cdiv(long long a, long long b) { return (unsigned)((a + b - 1) / b); }

static bool launch(Launcher f, const char* what, unsigned grid, unsigned block, size_t shmem,
                   std::vector<void*> args) {
  char err[1024] = {0};
  const int rc =
      f(vlk_dim3{grid, 1, 1}, vlk_dim3{block, 1, 1}, shmem, args.data(), err, sizeof err);
  if (rc) {
    std::printf("FAIL %s: launch returned %d: %s\n", what, rc, err);
    ++failures;
  }
  return rc == 0;
}

// Device buffer of n elements (NaN-filled by vlk_emu_alloc); `pad` extra elements in front let a
// test pass a pointer that is not 16-byte aligned.
template <class T>
struct Buf {
  T* base = nullptr;
  T* p = nullptr;
  size_t n = 0, pad = 0;
  Buf(size_t n_, size_t pad_ = 0) : n(n_), pad(pad_) {
    base = static_cast<T*>(vlk_emu_alloc((n + pad + 16) * sizeof(T)));  // +16: tail guard
    p = base + pad;
  }
  ~Buf() { vlk_emu_free(base); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  // Everything outside [p, p + n) must still hold the 0xFF fill.
  bool guards_intact() const {
    const unsigned char* b = reinterpret_cast<const unsigned char*>(base);
    for (size_t i = 0; i < pad * sizeof(T); ++i)
      if (b[i] != 0xFF) return false;
    for (size_t i = (pad + n) * sizeof(T); i < (pad + n + 16) * sizeof(T); ++i)
      if (b[i] != 0xFF) return false;
    return true;
  }
};

// Fills a device buffer with values and returns them (as rounded to T) in double.
template <class T>
static std::vector<double> fill(Buf<T>& b, float lo, float hi) {
  std::vector<double> v(b.n);
  for (size_t i = 0; i < b.n; ++i) {
    b.p[i] = DT<T>::make(uniform(lo, hi));
    v[i] = DT<T>::val(b.p[i]);
  }
  return v;
}

template <class T>
static double value(const T* p, size_t i) {
  return DT<T>::val(p[i]);
}
static double value(const float* p, size_t i) { return p[i]; }

// Max error of got[i] against ref[i]; NaN / unwritten counts as infinite.
// `what` = "<kernel> <output> <shape...>"; the first two words key the summary.
template <class T>
static void compare(const std::string& what, const T* got, const std::vector<double>& ref,
                    double tol, double floor = -1.0, const std::vector<double>* scale = nullptr) {
  double maxabs = 0.0;
  for (double r : ref)
    if (std::isfinite(r)) maxabs = std::max(maxabs, std::fabs(r));
  if (floor < 0) floor = 1e-2 * maxabs;
  floor = std::max(floor, 1e-30);
  double worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = value(got, i);
    double e;
    if (std::isinf(ref[i]))
      e = g == ref[i] ? 0.0 : INFINITY;
    else
      e = std::fabs(g - ref[i]) / std::max({std::fabs(ref[i]), floor, scale ? (*scale)[i] : 0.0});
    if (!(e <= worst)) {
      worst = std::isnan(e) ? INFINITY : e;
      at = i;
    }
  }
  ++checks;
  const bool ok = worst <= tol;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s: max err %.3g at %zu (got %.9g, ref %.9g), tol %.1g\n", what.c_str(),
                worst, at, value(got, at), ref[at], tol);
  } else if (std::getenv("ROWNORM_VERBOSE")) {
    std::printf("ok   %s: max err %.3g\n", what.c_str(), worst);
  }
  const std::string key = what.substr(0, what.find(' ', what.find(' ') + 1));
  worst_seen[key] = std::max(worst_seen[key], worst);
}

static void check(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

static std::string shape(long long rows, int C) {
  return "rows=" + std::to_string(rows) + " C=" + std::to_string(C);
}

// ---- layernorm ---------------------------------------------------------------------------------
struct LnCase {
  long long rows;
  int C;
  int rows_per_block;
  bool affine = true;     // gamma/beta given (else NULL)
  size_t pad = 0;         // 1: pointers not 16-byte aligned (scalar path)
  unsigned fwd_grid = 0;  // 0: the documented grid
};

template <class T>
static void test_layernorm(const LnCase& c) {
  const Kernels k = DT<T>::k();
  const double tol = DT<T>::tol;
  const std::string sfx = std::string("_") + DT<T>::name;
  const std::string sh = " " + shape(c.rows, c.C) + " rpb=" + std::to_string(c.rows_per_block) +
                         (c.affine ? "" : " no-affine") + (c.pad ? " unaligned" : "");
  const long long rows = c.rows;
  int C = c.C;
  const size_t n = rows * C;
  float eps = 1e-5f;

  Buf<T> x(n, c.pad), g(C, c.pad), b(C, c.pad), y(n, c.pad);
  Buf<float> mean(rows), rstd(rows);
  std::vector<double> X(n), G(C, 1.0), B(C, 0.0);
  for (long long r = 0; r < rows; ++r) {  // rows with an offset and their own scale
    const float off = uniform(-1.0f, 1.0f), sc = uniform(0.3f, 2.0f);
    for (int i = 0; i < C; ++i) {
      x.p[r * C + i] = DT<T>::make(off + sc * uniform(-1.0f, 1.0f));
      X[r * C + i] = DT<T>::val(x.p[r * C + i]);
    }
  }
  if (c.affine) {
    G = fill(g, 0.5f, 1.5f);
    B = fill(b, -0.5f, 0.5f);
  }
  std::vector<double> Y(n), M(rows), R(rows), SCALE(n);
  for (long long r = 0; r < rows; ++r) {
    double mu = 0, var = 0;
    for (int i = 0; i < C; ++i) mu += X[r * C + i];
    mu /= C;
    for (int i = 0; i < C; ++i) var += (X[r * C + i] - mu) * (X[r * C + i] - mu);
    var /= C;
    M[r] = mu;
    R[r] = 1.0 / std::sqrt(var + (double)eps);
    for (int i = 0; i < C; ++i) {
      Y[r * C + i] = (X[r * C + i] - mu) * R[r] * G[i] + B[i];
      SCALE[r * C + i] =
          (std::fabs(X[r * C + i]) + std::fabs(mu)) * R[r] * std::fabs(G[i]) + std::fabs(B[i]);
    }
  }
  {
    const T* xp = x.p;
    const T* gp = c.affine ? g.p : nullptr;
    const T* bp = c.affine ? b.p : nullptr;
    T* yp = y.p;
    float* mp = mean.p;
    float* rp = rstd.p;
    const unsigned grid = c.fwd_grid ? c.fwd_grid : std::max(1u, std::min(cdiv(rows, 8), 1048576u));
    if (!launch(k.ln_fwd, ("layernorm_fwd" + sfx + sh).c_str(), grid, 256, 0,
                {&xp, &gp, &bp, &yp, &mp, &rp, (void*)&rows, &C, &eps}))
      return;
  }
  compare("layernorm_fwd" + sfx + " y" + sh, y.p, Y, tol, -1.0, &SCALE);
  compare("layernorm_fwd" + sfx + " mean" + sh, mean.p, M, 1e-5, 1.0);
  compare("layernorm_fwd" + sfx + " rstd" + sh, rstd.p, R, 1e-5);
  check(y.guards_intact(), "layernorm_fwd" + sfx + " writes outside y" + sh);
  if (!c.affine) {  // also without mean/rstd outputs (inference)
    Buf<T> y2(n, c.pad);
    const T* xp = x.p;
    const T* none = nullptr;
    T* yp = y2.p;
    float* no_stats = nullptr;
    if (!launch(k.ln_fwd, ("layernorm_fwd" + sfx + sh + " no-stats").c_str(), cdiv(rows, 8), 256, 0,
                {&xp, &none, &none, &yp, &no_stats, &no_stats, (void*)&rows, &C, &eps}))
      return;
    compare("layernorm_fwd" + sfx + " y" + sh + " no-stats", y2.p, Y, tol, -1.0, &SCALE);
  }

  // Backward, from the kernel's own mean/rstd (as training does); the reference uses them too.
  int rpb = c.rows_per_block;
  int nb = (int)cdiv(rows, rpb);
  Buf<T> dy(n, c.pad), dx(n, c.pad), dgamma(C, c.pad), dbeta(C, c.pad);
  Buf<float> pg((size_t)nb * C), pb((size_t)nb * C);
  const std::vector<double> DY = fill(dy, -1.0f, 1.0f);
  std::vector<double> DX(n), PG((size_t)nb * C, 0.0), PB((size_t)nb * C, 0.0), DG(C, 0.0),
      DB(C, 0.0);
  for (long long r = 0; r < rows; ++r) {
    const double mu = mean.p[r], rs = rstd.p[r];
    double a = 0, bb = 0;
    for (int i = 0; i < C; ++i) {
      const double xh = (X[r * C + i] - mu) * rs, dg = DY[r * C + i] * G[i];
      a += dg;
      bb += dg * xh;
    }
    a /= C;
    bb /= C;
    for (int i = 0; i < C; ++i) {
      const double xh = (X[r * C + i] - mu) * rs, d = DY[r * C + i];
      DX[r * C + i] = rs * (d * G[i] - a - xh * bb);
      PG[(r / rpb) * C + i] += d * xh;
      PB[(r / rpb) * C + i] += d;
      DG[i] += d * xh;
      DB[i] += d;
    }
  }
  {
    const T* xp = x.p;
    const T* gp = c.affine ? g.p : nullptr;
    const float* mp = mean.p;
    const float* rp = rstd.p;
    const T* dyp = dy.p;
    T* dxp = dx.p;
    float* pgp = pg.p;
    float* pbp = pb.p;
    if (!launch(k.ln_bwd, ("layernorm_bwd" + sfx + sh).c_str(), nb, 256, 16 * (size_t)rpb,
                {&xp, &gp, &mp, &rp, &dyp, &dxp, &pgp, &pbp, (void*)&rows, &C, &rpb}))
      return;
  }
  compare("layernorm_bwd" + sfx + " dx" + sh, dx.p, DX, tol);
  compare("layernorm_bwd" + sfx + " dgamma_partial" + sh, pg.p, PG, 1e-5);
  compare("layernorm_bwd" + sfx + " dbeta_partial" + sh, pb.p, PB, 1e-5);
  check(dx.guards_intact(), "layernorm_bwd" + sfx + " writes outside dx" + sh);
  {
    const float* pgp = pg.p;
    const float* pbp = pb.p;
    T* dgp = dgamma.p;
    T* dbp = dbeta.p;
    if (!launch(k.ln_reduce, ("layernorm_bwd_reduce" + sfx + sh).c_str(), cdiv(C, 32), 256, 0,
                {&pgp, &pbp, &dgp, &dbp, &nb, &C}))
      return;
  }
  compare("layernorm_bwd_reduce" + sfx + " dgamma" + sh, dgamma.p, DG, tol);
  compare("layernorm_bwd_reduce" + sfx + " dbeta" + sh, dbeta.p, DB, tol);
  check(dgamma.guards_intact() && dbeta.guards_intact(),
        "layernorm_bwd_reduce" + sfx + " writes outside" + sh);
}

// rows == 0: the reduction with num_blocks = 0 writes zeros.
template <class T>
static void test_layernorm_reduce_empty() {
  const Kernels k = DT<T>::k();
  int C = 45, nb = 0;
  Buf<float> pg(1), pb(1);
  Buf<T> dg(C), db(C);
  const float* pgp = pg.p;
  const float* pbp = pb.p;
  T* dgp = dg.p;
  T* dbp = db.p;
  const std::string w = std::string("layernorm_bwd_reduce_") + DT<T>::name + " zero num_blocks=0";
  if (!launch(k.ln_reduce, w.c_str(), cdiv(C, 32), 256, 0, {&pgp, &pbp, &dgp, &dbp, &nb, &C}))
    return;
  bool ok = true;
  for (int i = 0; i < C; ++i) ok = ok && DT<T>::val(dg.p[i]) == 0.0 && DT<T>::val(db.p[i]) == 0.0;
  check(ok, w);
}

// ---- softmax / cross-entropy --------------------------------------------------------------------
struct SmCase {
  long long rows;
  int C;
  unsigned block = 0;  // 0: the documented block
  unsigned grid = 0;   // 0: the documented grid
  size_t pad = 0;
  bool neg_inf = false;  // forward inputs with -inf entries (masked positions)
};

static unsigned sm_block(int C) { return 32 * std::min(32u, std::max(1u, cdiv(C, 256))); }

template <class T>
static void test_softmax(const SmCase& c) {
  const Kernels k = DT<T>::k();
  const double tol = DT<T>::tol;
  const std::string sfx = std::string("_") + DT<T>::name;
  long long rows = c.rows;
  int C = c.C;
  const size_t n = rows * C;
  const unsigned block = c.block ? c.block : sm_block(C);
  const unsigned grid = c.grid ? c.grid : std::max(1u, (unsigned)std::min(rows, 1048576LL));
  const std::string sh = " " + shape(rows, C) + " block=" + std::to_string(block) +
                         " grid=" + std::to_string(grid) + (c.pad ? " unaligned" : "") +
                         (c.neg_inf ? " -inf" : "");

  for (int log = 0; log < 2; ++log) {
    const std::string lg = log ? " log" : "";
    // forward
    Buf<T> x(n, c.pad), y(n, c.pad);
    std::vector<double> X = fill(x, -8.0f, 8.0f), Y(n);
    if (c.neg_inf)
      for (size_t i = 0; i < n; ++i)
        if (i % C % 3 == 1) {
          x.p[i] = DT<T>::make(-INFINITY);
          X[i] = -INFINITY;
        }
    auto softmax_ref = [&](const std::vector<double>& in, std::vector<double>& out) {
      for (long long r = 0; r < rows; ++r) {
        double m = -INFINITY, s = 0;
        for (int i = 0; i < C; ++i) m = std::max(m, in[r * C + i]);
        for (int i = 0; i < C; ++i) s += std::exp(in[r * C + i] - m);
        for (int i = 0; i < C; ++i)
          out[r * C + i] = log ? in[r * C + i] - m - std::log(s) : std::exp(in[r * C + i] - m) / s;
      }
    };
    softmax_ref(X, Y);
    {
      const T* xp = x.p;
      T* yp = y.p;
      if (!launch(k.sm_fwd, ("softmax_fwd" + sfx + sh + lg).c_str(), grid, block, 0,
                  {&xp, &yp, &rows, &C, &log}))
        return;
    }
    compare("softmax_fwd" + sfx + " y" + sh + lg, y.p, Y, tol);
    check(y.guards_intact(), "softmax_fwd" + sfx + " writes outside y" + sh + lg);

    // backward, y = (log-)softmax of finite inputs rounded to T
    Buf<T> yb(n, c.pad), dy(n, c.pad), dx(n, c.pad);
    std::vector<double> X2(n), Y2(n), DX(n);
    for (size_t i = 0; i < n; ++i) X2[i] = uniform(-4.0f, 4.0f);
    softmax_ref(X2, Y2);
    for (size_t i = 0; i < n; ++i) {
      yb.p[i] = DT<T>::make((float)Y2[i]);
      Y2[i] = DT<T>::val(yb.p[i]);
    }
    const std::vector<double> DY = fill(dy, -1.0f, 1.0f);
    for (long long r = 0; r < rows; ++r) {
      double s = 0;
      for (int i = 0; i < C; ++i) s += log ? DY[r * C + i] : DY[r * C + i] * Y2[r * C + i];
      for (int i = 0; i < C; ++i) {
        const size_t j = r * C + i;
        DX[j] = log ? DY[j] - std::exp(Y2[j]) * s : Y2[j] * (DY[j] - s);
      }
    }
    {
      const T* yp = yb.p;
      const T* dyp = dy.p;
      T* dxp = dx.p;
      if (!launch(k.sm_bwd, ("softmax_bwd" + sfx + sh + lg).c_str(), grid, block, 0,
                  {&yp, &dyp, &dxp, &rows, &C, &log}))
        return;
    }
    compare("softmax_bwd" + sfx + " dx" + sh + lg, dx.p, DX, tol);
    check(dx.guards_intact(), "softmax_bwd" + sfx + " writes outside dx" + sh + lg);
  }

  // cross-entropy: every 4th row (from row 1) ignored; ignored rows' dloss left NaN.
  long long ignore = -100;
  Buf<T> logits(n, c.pad), loss(rows, c.pad), dloss(rows, c.pad), dlogits(n, c.pad);
  Buf<long long> tgt(rows);
  Buf<float> lse(rows);
  std::vector<double> L = fill(logits, -8.0f, 8.0f), LSE(rows), LOSS(rows), DL(n);
  if (c.neg_inf)
    for (size_t i = 0; i < n; ++i)
      if (i % C % 3 == 1) {
        logits.p[i] = DT<T>::make(-INFINITY);
        L[i] = -INFINITY;
      }
  for (long long r = 0; r < rows; ++r) {
    long long t = std::uniform_int_distribution<long long>(0, C - 1)(rng);
    if (c.neg_inf && t % 3 == 1) t = 0;  // a finite logit
    tgt.p[r] = r % 4 == 1 ? ignore : t;
    if (tgt.p[r] != ignore) dloss.p[r] = DT<T>::make(uniform(0.5f, 2.0f));
    double m = -INFINITY, s = 0;
    for (int i = 0; i < C; ++i) m = std::max(m, L[r * C + i]);
    for (int i = 0; i < C; ++i) s += std::exp(L[r * C + i] - m);
    LSE[r] = m + std::log(s);
    LOSS[r] = tgt.p[r] == ignore ? 0.0 : LSE[r] - L[r * C + tgt.p[r]];
  }
  {
    const T* lp = logits.p;
    const long long* tp = tgt.p;
    T* lossp = loss.p;
    float* lsep = lse.p;
    if (!launch(k.xent_fwd, ("xent_fwd" + sfx + sh).c_str(), grid, block, 0,
                {&lp, &tp, &lossp, &lsep, &rows, &C, &ignore}))
      return;
  }
  compare("xent_fwd" + sfx + " loss" + sh, loss.p, LOSS, tol);
  compare("xent_fwd" + sfx + " lse" + sh, lse.p, LSE, 1e-5, 1.0);
  for (long long r = 0; r < rows; ++r) {
    const double d = tgt.p[r] == ignore ? 0.0 : DT<T>::val(dloss.p[r]);
    for (int i = 0; i < C; ++i)
      DL[r * C + i] = tgt.p[r] == ignore
                          ? 0.0
                          : (std::exp(L[r * C + i] - (double)lse.p[r]) - (i == tgt.p[r])) * d;
  }
  {
    const T* lp = logits.p;
    const long long* tp = tgt.p;
    const float* lsep = lse.p;
    const T* dlp = dloss.p;
    T* dxp = dlogits.p;
    if (!launch(k.xent_bwd, ("xent_bwd" + sfx + sh).c_str(), grid, block, 0,
                {&lp, &tp, &lsep, &dlp, &dxp, &rows, &C, &ignore}))
      return;
  }
  compare("xent_bwd" + sfx + " dlogits" + sh, dlogits.p, DL, tol);
  bool zero = true;
  for (long long r = 1; r < rows; r += 4)
    for (int i = 0; i < C; ++i)
      zero = zero && __builtin_memcmp(&dlogits.p[r * C + i], "\0\0\0\0", sizeof(T)) == 0;
  check(zero, "xent_bwd" + sfx + " ignored rows exactly +0" + sh);
  check(dlogits.guards_intact() && loss.guards_intact(), "xent" + sfx + " writes outside" + sh);
}

// ---- denoise
// -------------------------------------------------------------------------------------
struct DnCase {
  long long n;
  bool guidance, noise;
  int prediction;
  float clip;
  bool ddim;
  size_t pad = 0;
  unsigned grid = 0;
};

template <class T>
static void test_denoise(const DnCase& c) {
  const Kernels k = DT<T>::k();
  const std::string sfx = std::string("_") + DT<T>::name;
  long long n = c.n;
  const std::string sh = " n=" + std::to_string(n) + (c.guidance ? " cfg" : "") +
                         (c.noise ? " noise" : "") + (c.prediction ? " v" : " eps") +
                         (c.clip > 0 ? " clip" : "") + (c.ddim ? " ddim" : " ddpm") +
                         (c.pad ? " unaligned" : "");
  // Sampler coefficients (see denoise.cu): abar_t = 0.5 -> abar_prev = 0.62.
  const double abar = 0.5, abar_prev = 0.62, alpha = abar / abar_prev, beta = 1 - alpha;
  float sa = (float)std::sqrt(abar), s1m = (float)std::sqrt(1 - abar), c_x0, c_xt, c_eps, c_noise;
  if (c.ddim) {
    const double eta = 0.5;
    const double sigma =
        eta * std::sqrt((1 - abar_prev) / (1 - abar)) * std::sqrt(1 - abar / abar_prev);
    c_x0 = (float)std::sqrt(abar_prev);
    c_eps = (float)std::sqrt(1 - abar_prev - sigma * sigma);
    c_xt = 0.0f;
    c_noise = (float)sigma;
  } else {
    c_x0 = (float)(std::sqrt(abar_prev) * beta / (1 - abar));
    c_xt = (float)(std::sqrt(alpha) * (1 - abar_prev) / (1 - abar));
    c_eps = 0.0f;
    c_noise = (float)std::sqrt(beta * (1 - abar_prev) / (1 - abar));
  }
  float guidance = 4.0f, clip = c.clip;
  int pred = c.prediction;
  Buf<T> xt(n, c.pad), mc(n, c.pad), mu(n, c.pad), nz(n, c.pad), out(n, c.pad);
  const std::vector<double> XT = fill(xt, -2.0f, 2.0f), MC = fill(mc, -1.5f, 1.5f),
                            MU = fill(mu, -1.5f, 1.5f), NZ = fill(nz, -1.0f, 1.0f);
  std::vector<double> OUT(n), SCALE(n);
  for (long long i = 0; i < n; ++i) {
    const double m = c.guidance ? MU[i] + (double)guidance * (MC[i] - MU[i]) : MC[i];
    double x0, eps;
    if (pred == 0) {
      eps = m;
      x0 = (XT[i] - (double)s1m * eps) / sa;
    } else {
      x0 = (double)sa * XT[i] - (double)s1m * m;
      eps = (double)sa * m + (double)s1m * XT[i];
    }
    // Clipping bounds x0 only; eps stays the model's (diffusers' DDIM).
    if (clip > 0) x0 = std::min(std::max(x0, -(double)clip), (double)clip);
    OUT[i] = c_x0 * x0 + c_xt * XT[i] + c_eps * eps + (c.noise ? c_noise * NZ[i] : 0.0);
    SCALE[i] = std::fabs(c_x0 * x0) + std::fabs(c_xt * XT[i]) + std::fabs(c_eps * eps) +
               (c.noise ? std::fabs(c_noise * NZ[i]) : 0.0);
  }
  const T* xtp = xt.p;
  const T* mcp = mc.p;
  const T* mup = c.guidance ? mu.p : nullptr;
  const T* nzp = c.noise ? nz.p : nullptr;
  T* op = out.p;
  const unsigned grid = c.grid ? c.grid : std::max(1u, std::min(cdiv(n, 2048), 4096u));
  if (!launch(k.denoise, ("denoise_step" + sfx + sh).c_str(), grid, 256, 0,
              {&xtp, &mcp, &mup, &nzp, &op, &n, &guidance, &pred, &sa, &s1m, &clip, &c_x0, &c_xt,
               &c_eps, &c_noise}))
    return;
  compare("denoise_step" + sfx + " out" + sh, out.p, OUT, DT<T>::tol, -1.0, &SCALE);
  check(out.guards_intact(), "denoise_step" + sfx + " writes outside out" + sh);
}

template <class T>
static void test_all() {
  const int Cs[] = {1, 7, 8, 33, 64, 300, 1024, 1030};
  const long long Rs[] = {1, 5, 37};
  int idx = 0;
  for (int C : Cs) {
    const long long rows = Rs[idx++ % 3];
    test_layernorm<T>({rows, C, 4});
    test_softmax<T>({rows, C});
  }
  // layernorm variants: no affine, unaligned pointers, rows_per_block > rows, small grid
  test_layernorm<T>({37, 64, 8, false});
  test_layernorm<T>({5, 64, 2, true, 1});
  test_layernorm<T>({3, 300, 16});
  test_layernorm<T>({37, 33, 1, true, 0, 1});
  test_layernorm<T>({37, 1024, 5, true, 0, 2});
  test_layernorm_reduce_empty<T>();
  // softmax variants: -inf entries, oversized block, small grid (grid-stride), unaligned
  test_softmax<T>({5, 33, 0, 0, 0, true});
  test_softmax<T>({5, 64, 0, 0, 0, true});
  test_softmax<T>({3, 33, 1024});
  test_softmax<T>({9, 64, 64, 2});
  test_softmax<T>({5, 1024, 0, 0, 1});
  // denoise: every option combination at an odd size, then sizes, grids and alignment
  for (int pred = 0; pred < 2; ++pred)
    for (int g = 0; g < 2; ++g)
      for (int z = 0; z < 2; ++z)
        for (int cl = 0; cl < 2; ++cl)
          test_denoise<T>(
              {1037, (bool)g, (bool)z, pred, cl ? 1.0f : 0.0f, (bool)((pred + g + z) & 1)});
  for (long long n : {1LL, 7LL, 8LL, 33LL, 4099LL})
    test_denoise<T>({n, true, true, 0, 1.0f, false});
  test_denoise<T>({4099, true, true, 1, 0.0f, true, 0, 1});
  test_denoise<T>({1037, true, true, 0, 1.0f, true, 1});
}

int main() {
  test_all<float>();
  test_all<__half>();
  test_all<__nv_bfloat16>();
  std::printf(
      "max error per kernel and output (tolerance 1e-5 f32 results, 1e-2 f16/bf16 results):\n");
  for (const auto& kv : worst_seen) std::printf("  %-42s %.3g\n", kv.first.c_str(), kv.second);
  std::printf("%s: %d checks, %d failures\n", failures ? "FAILED" : "PASSED", checks, failures);
  return failures ? 1 : 0;
}
