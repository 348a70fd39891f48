// Emulator tests for the pointwise kernel families: copy.cu, elementwise.cu,
// reduce.cu, embedding.cu, adamw.cu. Every kernel is launched through its
// vlk_emu_launch_<name> C ABI exactly as the Rust side will (args = pointers to
// the parameter values, block 256, the documented grid; sometimes a smaller grid
// to exercise the grid-stride loops) and compared with a double-precision CPU
// reference on random shapes, including size 1, rank 0, odd sizes, transposed,
// permuted, gapped and broadcast layouts. Outputs start as NaN (vlk_emu_alloc
// fills 0xFF), so an unwritten element fails.
//   bash kernels/tests/run.sh pointwise elementwise copy reduce embedding adamw
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common.cuh"

using vlk::StridedLayout;
typedef int (*Launcher)(vlk_dim3, vlk_dim3, size_t, void**, char*, size_t);

#define DECL(name) extern "C" int vlk_emu_launch_##name(vlk_dim3, vlk_dim3, size_t, void**, char*, size_t);
#define DECL3(name) DECL(name##_f32) DECL(name##_f16) DECL(name##_bf16)
DECL3(unary) DECL3(unary_bwd) DECL3(binary) DECL3(cmp) DECL3(where_cond)
DECL3(copy_strided) DECL(copy_strided_i64) DECL(copy_strided_u32)
DECL3(fill) DECL(fill_i64) DECL(fill_u32)
DECL(cast_f32_f16) DECL(cast_f32_bf16) DECL(cast_f16_f32) DECL(cast_f16_bf16) DECL(cast_bf16_f32)
DECL(cast_bf16_f16) DECL(cast_u32_i64) DECL(cast_i64_u32)
DECL3(reduce_rows) DECL3(reduce_cols) DECL3(sum_squares)
DECL3(index_select) DECL3(index_add) DECL3(adamw)

// Per-dtype kernels, name and tolerance.
template <class T> struct K;
#define KERNELS(T, S, TOL)                                                                    \
  template <> struct K<T> {                                                                   \
    static constexpr const char* name = #S;                                                   \
    static constexpr double tol = TOL;                                                        \
    static constexpr Launcher unary = vlk_emu_launch_unary_##S;                               \
    static constexpr Launcher unary_bwd = vlk_emu_launch_unary_bwd_##S;                       \
    static constexpr Launcher binary = vlk_emu_launch_binary_##S;                             \
    static constexpr Launcher cmp = vlk_emu_launch_cmp_##S;                                   \
    static constexpr Launcher where_cond = vlk_emu_launch_where_cond_##S;                     \
    static constexpr Launcher copy_strided = vlk_emu_launch_copy_strided_##S;                 \
    static constexpr Launcher fill = vlk_emu_launch_fill_##S;                                 \
    static constexpr Launcher reduce_rows = vlk_emu_launch_reduce_rows_##S;                   \
    static constexpr Launcher reduce_cols = vlk_emu_launch_reduce_cols_##S;                   \
    static constexpr Launcher sum_squares = vlk_emu_launch_sum_squares_##S;                   \
    static constexpr Launcher index_select = vlk_emu_launch_index_select_##S;                 \
    static constexpr Launcher index_add = vlk_emu_launch_index_add_##S;                       \
    static constexpr Launcher adamw = vlk_emu_launch_adamw_##S;                               \
  };
KERNELS(float, f32, 1e-5)
KERNELS(__half, f16, 1e-2)
KERNELS(__nv_bfloat16, bf16, 1e-2)

// ---- harness --------------------------------------------------------------------
static int failures = 0;
static void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  failures += !ok;
}

static std::mt19937_64 rng(20261129);
static double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
static long long randint(long long lo, long long hi) {  // inclusive
  return std::uniform_int_distribution<long long>(lo, hi)(rng);
}

template <class T> static T* dev(size_t n) { return static_cast<T*>(vlk_emu_alloc(std::max<size_t>(n, 1) * sizeof(T))); }
template <class T> static T* dev(const std::vector<T>& v) {
  T* p = dev<T>(v.size());
  std::memcpy(p, v.data(), v.size() * sizeof(T));
  return p;
}

static long long grid_for(long long n, long long per_block = 256, long long cap = 65535) {
  return std::max(1LL, std::min((n + per_block - 1) / per_block, cap));
}
// The documented grid, or (one case in three) at most 2 blocks: grid-stride loops.
static long long pick_grid(long long documented) {
  return randint(0, 2) == 0 ? std::min(documented, 2LL) : documented;
}

static char err[1024];
static bool launch(Launcher f, long long grid, std::vector<void*> args, unsigned grid_y = 1) {
  err[0] = 0;
  const int rc = f({unsigned(grid), grid_y, 1}, {256, 1, 1}, 0, args.data(), err, sizeof err);
  if (rc) std::printf("     launch returned %d: %s\n", rc, err);
  return rc == 0;
}

// |got - ref| / max(|ref|, floor); NaN or a mismatched infinity is infinite.
static double rel_err(double got, double ref, double floor = 1.0) {
  if (std::isnan(ref)) return std::isnan(got) ? 0.0 : INFINITY;
  if (std::isnan(got)) return INFINITY;
  if (std::isinf(ref) || std::isinf(got)) return got == ref ? 0.0 : INFINITY;
  return std::fabs(got - ref) / std::max(std::fabs(ref), floor);
}
static void update_max(double& worst, double e) {
  if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
}

template <class T> static double to_d(T v) { return (double)(float)v; }
template <class T> static T from_d(double v) { return T((float)v); }

// ---- layouts --------------------------------------------------------------------
static long long numel(const std::vector<long long>& shape) {
  long long n = 1;
  for (long long s : shape) n *= s;
  return n;
}

struct View {
  StridedLayout l;
  long long buf;  // elements the underlying buffer needs
};

// A view of `shape` over a buffer: dims laid out in `order` (innermost first),
// dims in `bcast` get stride 0, `gap` extra elements per dim (a sliced view),
// `offset` leading elements.
static View make_view(const std::vector<long long>& shape, const std::vector<int>& order,
                      const std::vector<bool>& bcast, long long gap, long long offset) {
  View v{};
  v.l.rank = (int)shape.size();
  for (int d = 0; d < 8; ++d) v.l.shape[d] = 1, v.l.stride[d] = 0;  // unused dims
  long long running = 1;
  for (int d : order) {
    v.l.shape[d] = shape[d];
    if (bcast[d]) {
      v.l.stride[d] = 0;
    } else {
      v.l.stride[d] = running;
      running *= shape[d] + gap;
    }
  }
  v.l.offset = offset;
  long long last = offset;
  for (size_t d = 0; d < shape.size(); ++d) last += (shape[d] - 1) * v.l.stride[d];
  v.buf = last + 1;
  return v;
}

// kind 0 contiguous, 1 contiguous with an offset, 2 permuted with gaps, 3 broadcast
// (some dims stride 0), 4 permuted + gaps + broadcast. Kinds 0-2 never overlap.
static View random_view(const std::vector<long long>& shape, int kind) {
  const int r = (int)shape.size();
  std::vector<int> order(r);
  for (int d = 0; d < r; ++d) order[d] = r - 1 - d;
  std::vector<bool> bcast(r, false);
  long long gap = 0, offset = 0;
  if (kind >= 1) offset = randint(0, 5);
  if (kind == 2 || kind == 4) {
    std::shuffle(order.begin(), order.end(), rng);
    gap = randint(0, 2);
  }
  if (kind >= 3 && r > 0) {
    for (int d = 0; d < r; ++d) bcast[d] = randint(0, 1) == 1;
    bcast[randint(0, r - 1)] = true;
  }
  return make_view(shape, order, bcast, gap, offset);
}

// Element offset of linear index i, computed independently of the kernels'
// helper: index_d = (i / prod(shape[d+1..])) % shape[d].
static long long host_offset(const StridedLayout& l, long long i) {
  long long off = l.offset, inner = 1;
  for (int d = l.rank - 1; d >= 0; --d) {
    off += (i / inner) % l.shape[d] * l.stride[d];
    inner *= l.shape[d];
  }
  return off;
}

// The output shapes every pointwise test runs over (rank 0 .. 8).
static const std::vector<std::vector<long long>> kShapes = {
    {}, {1}, {7}, {1000}, {1, 1}, {5, 3}, {33, 17}, {3, 1, 5}, {2, 3, 4, 5}, {2, 1, 2, 3, 1, 2, 2, 3}};

// Layouts tested for one input of `shape`: one of each random kind, plus for
// [R, C] a transposed view (strides [1, R]) and a broadcast row (strides [0, 1]).
static std::vector<View> views_for(const std::vector<long long>& shape, bool allow_bcast = true) {
  std::vector<View> v;
  for (int kind = 0; kind < (allow_bcast ? 5 : 3); ++kind) v.push_back(random_view(shape, kind));
  if (shape.size() == 2) {
    v.push_back(make_view(shape, {0, 1}, {false, false}, 0, 0));  // transposed
    if (allow_bcast) v.push_back(make_view(shape, {1, 0}, {true, false}, 0, 0));  // broadcast row
  }
  return v;
}

template <class T> static std::vector<T> random_buf(long long n, std::function<double()> gen) {
  std::vector<T> v(n);
  for (auto& e : v) e = from_d<T>(gen());
  return v;
}

// ---- unary ----------------------------------------------------------------------
static const char* kUnaryNames[] = {"neg", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid",
                                    "relu", "abs", "sqr", "recip", "gelu", "gelu_tanh",
                                    "quick_gelu", "silu", "affine", "powf"};

static double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }
static double ref_f(int op, double x, double p0, double p1) {
  const double c = std::sqrt(2.0 / M_PI), k = 0.044715;
  switch (op) {
    case 0: return -x;
    case 1: return std::exp(x);
    case 2: return std::log(x);
    case 3: return std::sqrt(x);
    case 4: return 1.0 / std::sqrt(x);
    case 5: return std::tanh(x);
    case 6: return sig(x);
    case 7: return x > 0 ? x : 0.0;
    case 8: return std::fabs(x);
    case 9: return x * x;
    case 10: return 1.0 / x;
    case 11: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case 12: return 0.5 * x * (1.0 + std::tanh(c * (x + k * x * x * x)));
    case 13: return x * sig(1.702 * x);
    case 14: return x * sig(x);
    case 15: return x * p0 + p1;
    default: return std::pow(x, p0);
  }
}
static double ref_df(int op, double x, double p0) {
  const double c = std::sqrt(2.0 / M_PI), k = 0.044715;
  switch (op) {
    case 0: return -1.0;
    case 1: return std::exp(x);
    case 2: return 1.0 / x;
    case 3: return 0.5 / std::sqrt(x);
    case 4: return -0.5 * std::pow(x, -1.5);
    case 5: return 1.0 - std::tanh(x) * std::tanh(x);
    case 6: return sig(x) * (1.0 - sig(x));
    case 7: return x > 0 ? 1.0 : 0.0;
    case 8: return x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0);
    case 9: return 2.0 * x;
    case 10: return -1.0 / (x * x);
    case 11: return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
    case 12: {
      const double u = c * (x + k * x * x * x), t = std::tanh(u);
      return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * k * x * x);
    }
    case 13: return sig(1.702 * x) + 1.702 * x * sig(1.702 * x) * (1.0 - sig(1.702 * x));
    case 14: return sig(x) + x * sig(x) * (1.0 - sig(x));
    case 15: return p0;
    default: return p0 * std::pow(x, p0 - 1.0);
  }
}
// Input domain per op; zeros appear (every 5th element) where the op allows them.
static double unary_input(int op, long long i) {
  switch (op) {
    case 2: case 3: case 4: case 16: return uniform(0.1, 3.0);
    case 10: return (randint(0, 1) ? 1.0 : -1.0) * uniform(0.25, 3.0);
    default: return i % 5 == 0 ? 0.0 : uniform(-4.0, 4.0);
  }
}

template <class T> static void test_unary() {
  const float p0 = 1.7f, p1 = -0.25f;
  for (int op = 0; op <= 16; ++op) {
    double worst_f = 0, worst_df = 0;
    bool ok = true;
    int cases = 0;
    for (const auto& shape : kShapes) {
      long long n = numel(shape);
      auto xviews = views_for(shape);
      for (size_t vi = 0; vi < xviews.size(); ++vi) {
        const View& xv = xviews[vi];
        const View dv = random_view(shape, (int)randint(0, 4));
        long long idx = 0;
        auto hx = random_buf<T>(xv.buf, [&] { return unary_input(op, idx++); });
        auto hdy = random_buf<T>(dv.buf, [] { return uniform(-2.0, 2.0); });
        T *x = dev(hx), *dy = dev(hdy), *y = dev<T>(n), *dx = dev<T>(n);
        int opv = op;
        float a0 = p0, a1 = p1;
        StridedLayout xl = xv.l, dyl = dv.l;
        const long long g = pick_grid(grid_for(n));
        ok &= launch(K<T>::unary, g, {&x, &xl, &y, &n, &opv, &a0, &a1});
        ok &= launch(K<T>::unary_bwd, g, {&x, &xl, &dy, &dyl, &dx, &n, &opv, &a0, &a1});
        for (long long i = 0; i < n; ++i) {
          const double xi = to_d(hx[host_offset(xv.l, i)]);
          update_max(worst_f, rel_err(to_d(y[i]), ref_f(op, xi, p0, p1)));
          update_max(worst_df, rel_err(to_d(dx[i]), to_d(hdy[host_offset(dv.l, i)]) * ref_df(op, xi, p0)));
        }
        vlk_emu_free(x), vlk_emu_free(dy), vlk_emu_free(y), vlk_emu_free(dx);
        ++cases;
      }
    }
    ok &= worst_f <= K<T>::tol && worst_df <= K<T>::tol;
    char msg[200];
    std::snprintf(msg, sizeof msg, "unary %-10s %-4s %3d cases: max rel err f %.2e, f' %.2e", kUnaryNames[op],
                  K<T>::name, cases, worst_f, worst_df);
    check(ok, msg);
  }
}

// ---- binary / cmp / where -------------------------------------------------------
static double ref_binary(int op, double a, double b) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return std::max(a, b);
    default: return std::min(a, b);
  }
}
static double ref_cmp(int op, double a, double b) {
  switch (op) {
    case 0: return a == b;
    case 1: return a != b;
    case 2: return a < b;
    case 3: return a <= b;
    case 4: return a > b;
    default: return a >= b;
  }
}

template <class T> static void test_binary() {
  for (int which = 0; which < 2; ++which) {  // 0 binary, 1 cmp
    for (int op = 0; op <= 5; ++op) {
      double worst = 0;
      bool ok = true;
      int cases = 0;
      for (const auto& shape : kShapes) {
        long long n = numel(shape);
        auto views = views_for(shape);
        for (size_t vi = 0; vi < views.size(); ++vi) {
          const View& av = views[vi];
          const View bv = vi % 2 ? random_view(shape, (int)randint(0, 4)) : views[(vi + 1) % views.size()];
          // cmp: values on a coarse grid, so that ties occur.
          auto gen_a = [&] { return which ? (double)randint(-3, 3) * 0.5 : uniform(-3.0, 3.0); };
          auto gen_b = [&] {
            if (which) return (double)randint(-3, 3) * 0.5;
            return op == 3 ? (randint(0, 1) ? 1.0 : -1.0) * uniform(0.5, 2.0) : uniform(-3.0, 3.0);
          };
          auto ha = random_buf<T>(av.buf, gen_a), hb = random_buf<T>(bv.buf, gen_b);
          T *a = dev(ha), *b = dev(hb), *out = dev<T>(n);
          StridedLayout al = av.l, bl = bv.l;
          int opv = op;
          ok &= launch(which ? K<T>::cmp : K<T>::binary, pick_grid(grid_for(n)), {&a, &al, &b, &bl, &out, &n, &opv});
          for (long long i = 0; i < n; ++i) {
            const double x = to_d(ha[host_offset(av.l, i)]), y = to_d(hb[host_offset(bv.l, i)]);
            const double ref = which ? ref_cmp(op, x, y) : ref_binary(op, x, y);
            update_max(worst, rel_err(to_d(out[i]), ref));
          }
          vlk_emu_free(a), vlk_emu_free(b), vlk_emu_free(out);
          ++cases;
        }
      }
      ok &= which ? worst == 0.0 : worst <= K<T>::tol;
      char msg[200];
      std::snprintf(msg, sizeof msg, "%s op %d %-4s %3d cases: max rel err %.2e", which ? "cmp   " : "binary", op,
                    K<T>::name, cases, worst);
      check(ok, msg);
    }
  }
}

template <class T> static void test_where() {
  bool ok = true;
  int cases = 0;
  long long bad = 0;
  for (const auto& shape : kShapes) {
    long long n = numel(shape);
    auto views = views_for(shape);
    for (size_t vi = 0; vi < views.size(); ++vi) {
      const View& cv = views[vi];
      const View av = random_view(shape, (int)randint(0, 4)), bv = random_view(shape, (int)randint(0, 4));
      const double conds[] = {0.0, 1.0, -1.0, 0.5, 0.0, -0.0};
      auto hc = random_buf<T>(cv.buf, [&] { return conds[randint(0, 5)]; });
      auto ha = random_buf<T>(av.buf, [] { return uniform(-3.0, 3.0); });
      auto hb = random_buf<T>(bv.buf, [] { return uniform(-3.0, 3.0); });
      T *c = dev(hc), *a = dev(ha), *b = dev(hb), *out = dev<T>(n);
      StridedLayout cl = cv.l, al = av.l, bl = bv.l;
      ok &= launch(K<T>::where_cond, pick_grid(grid_for(n)), {&c, &cl, &a, &al, &b, &bl, &out, &n});
      for (long long i = 0; i < n; ++i) {
        const T want = to_d(hc[host_offset(cl, i)]) != 0.0 ? ha[host_offset(al, i)] : hb[host_offset(bl, i)];
        bad += std::memcmp(&want, &out[i], sizeof(T)) != 0;
      }
      vlk_emu_free(c), vlk_emu_free(a), vlk_emu_free(b), vlk_emu_free(out);
      ++cases;
    }
  }
  char msg[200];
  std::snprintf(msg, sizeof msg, "where_cond %-4s %3d cases: %lld mismatched elements", K<T>::name, cases, bad);
  check(ok && bad == 0, msg);
}

// ---- copy_strided, fill, casts ----------------------------------------------------
template <class T> static T random_value();
template <> float random_value<float>() { return (float)uniform(-10, 10); }
template <> __half random_value<__half>() { return __half((float)uniform(-10, 10)); }
template <> __nv_bfloat16 random_value<__nv_bfloat16>() { return __nv_bfloat16((float)uniform(-10, 10)); }
template <> long long random_value<long long>() { return (long long)rng(); }
template <> unsigned random_value<unsigned>() { return (unsigned)rng(); }

// Pairs of (src shape, dst shape) with equal element counts: same shape, reshapes.
static const std::vector<std::pair<std::vector<long long>, std::vector<long long>>> kCopyShapes = {
    {{}, {}},         {{1}, {}},           {{7}, {7}},          {{1000}, {1000}},
    {{5, 3}, {5, 3}}, {{6, 4}, {24}},      {{6, 4}, {4, 3, 2}}, {{33, 17}, {33, 17}},
    {{3, 1, 5}, {15}}, {{2, 3, 4, 5}, {2, 3, 4, 5}}, {{2, 1, 2, 3, 1, 2, 2, 3}, {12, 12}}};

template <class T> static void test_copy(const char* name, Launcher copy) {
  bool ok = true;
  int cases = 0;
  long long bad = 0;
  for (const auto& sd : kCopyShapes) {
    long long n = numel(sd.first);
    auto sviews = views_for(sd.first);                // any source layout (broadcast too)
    auto dviews = views_for(sd.second, false);        // destinations never overlap
    for (size_t vi = 0; vi < sviews.size(); ++vi) {
      const View& sv = sviews[vi];
      const View& dv = dviews[(vi * 7 + 3) % dviews.size()];
      std::vector<T> hs(sv.buf);
      for (auto& e : hs) e = random_value<T>();
      T *src = dev(hs), *dst = dev<T>(dv.buf);
      std::vector<unsigned char> want(dv.buf * sizeof(T), 0xFF);
      for (long long i = 0; i < n; ++i)
        std::memcpy(&want[host_offset(dv.l, i) * sizeof(T)], &hs[host_offset(sv.l, i)], sizeof(T));
      StridedLayout sl = sv.l, dl = dv.l;
      ok &= launch(copy, pick_grid(grid_for(n)), {&src, &sl, &dst, &dl, &n});
      for (long long j = 0; j < dv.buf; ++j)
        bad += std::memcmp(&want[j * sizeof(T)], &dst[j], sizeof(T)) != 0;
      vlk_emu_free(src), vlk_emu_free(dst);
      ++cases;
    }
  }
  char msg[200];
  std::snprintf(msg, sizeof msg, "copy_strided_%-4s %3d cases: %lld mismatched elements (incl. outside the view)",
                name, cases, bad);
  check(ok && bad == 0, msg);
}

template <class T> static void test_fill(const char* name, Launcher fill, double value, T want) {
  bool ok = true;
  long long bad = 0;
  for (long long n : {1LL, 7LL, 1000LL}) {
    T* y = dev<T>(n + 1);
    ok &= launch(fill, pick_grid(grid_for(n)), {&y, &n, &value});
    for (long long i = 0; i < n; ++i) bad += std::memcmp(&y[i], &want, sizeof(T)) != 0;
    bad += std::memcmp(&y[n], &want, sizeof(T)) == 0;  // one past the end stays untouched
    vlk_emu_free(y);
  }
  char msg[200];
  std::snprintf(msg, sizeof msg, "fill_%-4s value %g: %lld mismatched elements", name, value, bad);
  check(ok && bad == 0, msg);
}

// Round-to-nearest-even of x into a binary format with `mant` fraction bits, minimum
// normal exponent `emin` and largest finite value `maxf` (written independently of
// the emulator's conversions).
static double round_format(double x, int mant, int emin, double maxf) {
  if (x == 0 || std::isnan(x) || std::isinf(x)) return x;
  const int e = std::max((int)std::floor(std::log2(std::fabs(x))), emin);
  const double ulp = std::ldexp(1.0, e - mant);
  const double r = std::nearbyint(x / ulp) * ulp;  // default rounding mode: to nearest even
  if (std::fabs(r) > maxf) return std::copysign(INFINITY, x);
  return r == 0 ? std::copysign(0.0, x) : r;
}
static double round_f16(double x) { return round_format(x, 10, -14, 65504.0); }
static double round_bf16(double x) { return round_format(x, 7, -126, 3.38953138925153547590e38); }
static double round_to(float*, double x) { return (float)x; }
static double round_to(__half*, double x) { return round_f16(x); }
static double round_to(__nv_bfloat16*, double x) { return round_bf16(x); }

template <class From, class To> static void test_cast(const char* name, Launcher cast) {
  bool ok = true;
  long long bad = 0;
  for (long long n : {1LL, 5LL, 4097LL}) {
    std::vector<From> hx(n);
    for (long long i = 0; i < n; ++i) {
      double v = std::ldexp(1.0 + uniform(0, 1), (int)randint(-30, 20)) * (randint(0, 1) ? 1 : -1);
      if (i % 11 == 1) v = 1.0 + std::ldexp(1.0, -11) * (double)randint(1, 3);   // f16 ties
      if (i % 11 == 2) v = 1.0 + std::ldexp(1.0, -8) * (double)randint(1, 3);    // bf16 ties
      if (i % 11 == 3) v = std::ldexp(uniform(0, 1), -20);                        // f16 subnormals
      if (i % 11 == 4) v = 0.0;
      hx[i] = From((float)v);
    }
    From* x = dev(hx);
    To* y = dev<To>(n);
    ok &= launch(cast, pick_grid(grid_for(n)), {&x, &y, &n});
    for (long long i = 0; i < n; ++i) {
      const To want = To((float)round_to((To*)nullptr, to_d(hx[i])));  // exact: representable
      bad += std::memcmp(&want, &y[i], sizeof(To)) != 0;
    }
    vlk_emu_free(x), vlk_emu_free(y);
  }
  char msg[200];
  std::snprintf(msg, sizeof msg, "cast_%-9s sizes 1, 5, 4097: %lld mismatched elements", name, bad);
  check(ok && bad == 0, msg);
}

static void test_int_casts() {
  bool ok = true;
  long long bad = 0;
  for (long long n : {1LL, 7LL, 1000LL}) {
    std::vector<unsigned> hu(n);
    std::vector<long long> hi(n);
    for (long long i = 0; i < n; ++i) hu[i] = (unsigned)rng(), hi[i] = (long long)rng();
    unsigned *u = dev(hu), *u2 = dev<unsigned>(n);
    long long *i64 = dev(hi), *i2 = dev<long long>(n);
    ok &= launch(vlk_emu_launch_cast_u32_i64, pick_grid(grid_for(n)), {&u, &i2, &n});
    ok &= launch(vlk_emu_launch_cast_i64_u32, pick_grid(grid_for(n)), {&i64, &u2, &n});
    for (long long i = 0; i < n; ++i) {
      bad += i2[i] != (long long)hu[i];
      bad += u2[i] != (unsigned)((unsigned long long)hi[i] & 0xffffffffu);
    }
    vlk_emu_free(u), vlk_emu_free(u2), vlk_emu_free(i64), vlk_emu_free(i2);
  }
  check(ok && bad == 0, "cast_u32_i64 / cast_i64_u32 sizes 1, 7, 1000: " + std::to_string(bad) + " mismatches");
}

// ---- reductions ---------------------------------------------------------------------
template <class T> static void test_reduce() {
  struct Shape { long long outer, n, inner; };
  const std::vector<Shape> shapes = {{1, 1, 1},  {3, 7, 1},   {2, 1000, 1}, {70, 33, 1}, {1, 5, 3},
                                     {2, 7, 33}, {3, 100, 65}, {4, 9, 31},  {1, 1, 1000}, {5, 1, 2}};
  for (int op = 0; op <= 2; ++op) {
    double worst = 0;
    bool ok = true;
    for (const Shape& s : shapes) {
      long long outer = s.outer, n = s.n, inner = s.inner;
      auto hx = random_buf<T>(outer * n * inner, [] { return uniform(-1.0, 1.0); });
      T *x = dev(hx), *out = dev<T>(outer * inner);
      int opv = op;
      if (inner == 1) {
        ok &= launch(K<T>::reduce_rows, pick_grid(std::min(outer, 65535LL)), {&x, &out, &outer, &n, &opv});
      } else {
        ok &= launch(K<T>::reduce_cols, (inner + 31) / 32, {&x, &out, &outer, &n, &inner, &opv},
                     (unsigned)pick_grid(std::min(outer, 65535LL)));
      }
      for (long long o = 0; o < outer; ++o)
        for (long long c = 0; c < inner; ++c) {
          double acc = op == 0 ? 0.0 : (op == 1 ? -INFINITY : INFINITY), scale = 0;
          for (long long i = 0; i < n; ++i) {
            const double v = to_d(hx[(o * n + i) * inner + c]);
            acc = op == 0 ? acc + v : (op == 1 ? std::max(acc, v) : std::min(acc, v));
            scale += std::fabs(v);
          }
          // Sums: error relative to sum |x| (f32 accumulation), plus the output rounding.
          const double got = to_d(out[o * inner + c]);
          const double e = op == 0 ? std::fabs(got - acc) / std::max({std::fabs(acc), 1.0, scale * 1e-2}) : rel_err(got, acc);
          update_max(worst, e);
        }
      vlk_emu_free(x), vlk_emu_free(out);
    }
    ok &= op == 0 ? worst <= K<T>::tol : worst == 0.0;
    char msg[200];
    std::snprintf(msg, sizeof msg, "reduce %s %-4s %zu shapes (rows and cols): max rel err %.2e",
                  op == 0 ? "sum" : (op == 1 ? "max" : "min"), K<T>::name, shapes.size(), worst);
    check(ok, msg);
  }
}

template <class T> static void test_sum_squares() {
  double worst = 0;
  bool ok = true;
  for (long long n : {1LL, 255LL, 1000LL, 100003LL}) {
    auto hx = random_buf<T>(n, [] { return uniform(-2.0, 2.0); });
    T* x = dev(hx);
    float* out = dev<float>(1);
    *out = 0.0f;
    ok &= launch(K<T>::sum_squares, pick_grid(grid_for(n, 256, 1024)), {&x, &n, &out});
    double ref = 0;
    for (long long i = 0; i < n; ++i) ref += to_d(hx[i]) * to_d(hx[i]);
    update_max(worst, rel_err(*out, ref, 1e-30));
    vlk_emu_free(x), vlk_emu_free(out);
  }
  ok &= worst <= 1e-5;
  char msg[200];
  std::snprintf(msg, sizeof msg, "sum_squares %-4s n = 1, 255, 1000, 100003: max rel err %.2e", K<T>::name, worst);
  check(ok, msg);
}

// ---- embedding ----------------------------------------------------------------------
template <class T> static void test_index() {
  struct Shape { long long outer, n, inner, num_ids; };
  const std::vector<Shape> shapes = {{1, 1, 1, 1}, {1, 10, 4, 7}, {2, 5, 1, 13}, {3, 1, 17, 2},
                                     {2, 4, 33, 50}, {1, 100, 64, 9}};
  bool ok = true;
  long long bad = 0;
  double worst = 0;
  for (const Shape& s : shapes) {
    long long outer = s.outer, n = s.n, inner = s.inner, num_ids = s.num_ids;
    std::vector<long long> hid(num_ids);
    for (auto& id : hid) id = randint(0, n - 1);  // repeats when num_ids > n
    if (num_ids > 1) hid[num_ids - 1] = hid[0];   // at least one repeated id
    long long* ids = dev(hid);
    // index_select: x [outer, n, inner] -> out [outer, num_ids, inner]
    auto hx = random_buf<T>(outer * n * inner, [] { return uniform(-3.0, 3.0); });
    T *x = dev(hx), *out = dev<T>(outer * num_ids * inner);
    const long long total = outer * num_ids * inner;
    ok &= launch(K<T>::index_select, pick_grid(grid_for(total)), {&x, &ids, &out, &outer, &n, &inner, &num_ids});
    for (long long o = 0; o < outer; ++o)
      for (long long l = 0; l < num_ids; ++l)
        for (long long c = 0; c < inner; ++c)
          bad += std::memcmp(&out[(o * num_ids + l) * inner + c], &hx[(o * n + hid[l]) * inner + c], sizeof(T)) != 0;
    // index_add: src [outer, num_ids, inner] into f32 [outer, dim_size = n, inner].
    long long dim_size = n;
    auto hs = random_buf<T>(total, [] { return uniform(-3.0, 3.0); });
    T* src = dev(hs);
    float* acc = dev<float>(outer * dim_size * inner);
    std::memset(acc, 0, outer * dim_size * inner * sizeof(float));
    ok &= launch(K<T>::index_add, pick_grid(grid_for(total)), {&src, &ids, &acc, &outer, &num_ids, &inner, &dim_size});
    std::vector<double> ref(outer * dim_size * inner, 0.0);
    for (long long o = 0; o < outer; ++o)
      for (long long l = 0; l < num_ids; ++l)
        for (long long c = 0; c < inner; ++c)
          ref[(o * dim_size + hid[l]) * inner + c] += to_d(hs[(o * num_ids + l) * inner + c]);
    for (size_t i = 0; i < ref.size(); ++i) update_max(worst, rel_err(acc[i], ref[i]));
    vlk_emu_free(ids), vlk_emu_free(x), vlk_emu_free(out), vlk_emu_free(src), vlk_emu_free(acc);
  }
  char msg[200];
  std::snprintf(msg, sizeof msg, "index_select %-4s %zu shapes: %lld mismatched elements", K<T>::name, shapes.size(), bad);
  check(ok && bad == 0, msg);
  std::snprintf(msg, sizeof msg, "index_add    %-4s %zu shapes (repeated ids): max rel err %.2e", K<T>::name,
                shapes.size(), worst);
  check(ok && worst <= 1e-6, msg);
}

// ---- adamw ------------------------------------------------------------------------
template <class T> static void test_adamw() {
  double worst[3] = {0, 0, 0};
  bool ok = true;
  float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
  const int step = 3;
  float bc1 = (float)(1.0 - std::pow((double)b1, step)), bc2 = (float)(1.0 - std::pow((double)b2, step));
  for (long long n0 : {1LL, 3LL, 4LL, 7LL, 8LL, 9LL, 1001LL, 4099LL}) {
    for (int misalign = 0; misalign < 2; ++misalign) {  // 1: p starts one element in: scalar path
      long long n = n0;
      auto hp = random_buf<T>(n + 1, [] { return uniform(-1.0, 1.0); });
      auto hg = random_buf<T>(n + 1, [] { return uniform(-1.0, 1.0); });
      auto hm = random_buf<T>(n + 1, [] { return uniform(-0.1, 0.1); });
      auto hv = random_buf<T>(n + 1, [] { return uniform(1e-3, 1e-2); });
      T *P = dev(hp), *G = dev(hg), *M = dev(hm), *V = dev(hv);
      T *p = P + misalign, *g = G, *m = M, *v = V;
      const long long vec = 16 / sizeof(T);
      ok &= launch(K<T>::adamw, pick_grid(grid_for(n, 256 * vec)),
                   {&p, &g, &m, &v, &n, &lr, &b1, &b2, &eps, &wd, &bc1, &bc2, &gs});
      for (long long i = 0; i < n; ++i) {
        const double gi = to_d(hg[i]) * gs;
        const double mi = b1 * to_d(hm[i]) + (1.0 - b1) * gi;
        const double vi = b2 * to_d(hv[i]) + (1.0 - b2) * gi * gi;
        const double pi = to_d(hp[i + misalign]) * (1.0 - (double)lr * wd) -
                          lr * (mi / bc1) / (std::sqrt(vi / bc2) + eps);
        update_max(worst[0], rel_err(to_d(p[i]), pi));
        update_max(worst[1], rel_err(to_d(m[i]), mi, 0.1));
        update_max(worst[2], rel_err(to_d(v[i]), vi, 1e-3));
      }
      // Untouched: the element after p's range and m's/v's last element.
      ok &= std::memcmp(&P[misalign ? 0 : n], &hp[misalign ? 0 : n], sizeof(T)) == 0;
      ok &= std::memcmp(&M[n], &hm[n], sizeof(T)) == 0 && std::memcmp(&V[n], &hv[n], sizeof(T)) == 0;
      vlk_emu_free(P), vlk_emu_free(G), vlk_emu_free(M), vlk_emu_free(V);
    }
  }
  ok &= worst[0] <= K<T>::tol && worst[1] <= K<T>::tol && worst[2] <= K<T>::tol;
  char msg[200];
  std::snprintf(msg, sizeof msg, "adamw %-4s 8 sizes x (aligned, misaligned): max rel err p %.2e, m %.2e, v %.2e",
                K<T>::name, worst[0], worst[1], worst[2]);
  check(ok, msg);
}

template <class T> static void test_dtype() {
  test_unary<T>();
  test_binary<T>();
  test_where<T>();
  test_reduce<T>();
  test_sum_squares<T>();
  test_index<T>();
  test_adamw<T>();
}

int main() {
  test_dtype<float>();
  test_dtype<__half>();
  test_dtype<__nv_bfloat16>();

  test_copy<float>("f32", vlk_emu_launch_copy_strided_f32);
  test_copy<__half>("f16", vlk_emu_launch_copy_strided_f16);
  test_copy<__nv_bfloat16>("bf16", vlk_emu_launch_copy_strided_bf16);
  test_copy<long long>("i64", vlk_emu_launch_copy_strided_i64);
  test_copy<unsigned>("u32", vlk_emu_launch_copy_strided_u32);

  test_fill<float>("f32", vlk_emu_launch_fill_f32, 0.1, 0.1f);
  test_fill<__half>("f16", vlk_emu_launch_fill_f16, -2.5, __half(-2.5f));
  test_fill<__nv_bfloat16>("bf16", vlk_emu_launch_fill_bf16, 3.0, __nv_bfloat16(3.0f));
  test_fill<long long>("i64", vlk_emu_launch_fill_i64, -5.0, -5LL);
  test_fill<unsigned>("u32", vlk_emu_launch_fill_u32, 4000000000.0, 4000000000u);

  test_cast<float, __half>("f32_f16", vlk_emu_launch_cast_f32_f16);
  test_cast<float, __nv_bfloat16>("f32_bf16", vlk_emu_launch_cast_f32_bf16);
  test_cast<__half, float>("f16_f32", vlk_emu_launch_cast_f16_f32);
  test_cast<__half, __nv_bfloat16>("f16_bf16", vlk_emu_launch_cast_f16_bf16);
  test_cast<__nv_bfloat16, float>("bf16_f32", vlk_emu_launch_cast_bf16_f32);
  test_cast<__nv_bfloat16, __half>("bf16_f16", vlk_emu_launch_cast_bf16_f16);
  test_int_casts();

  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
