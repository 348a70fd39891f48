// Fused scaled-dot-product attention (flash-attention style), forward and
// backward, for q [B,H,Sq,D], k/v [B,H,Sk,D] with arbitrary batch/head/row
// strides (last dim contiguous). O [B,H,Sq,D] (T) and LSE [B,H,Sq] (f32,
// natural log) are contiguous. Masks: causal with ends aligned (query i sees
// key j iff j <= i + Sk - Sq) and key_mask [B,Sk] (nonzero = real key, may be
// NULL). A query row that sees no key gets O = 0, LSE = -inf and zero grads.
// Supported: 1 <= D <= 256, B*H <= 65535 (grid.y), Sq, Sk >= 1.
//
// Paths (chosen inside each kernel from the dtype and D, uniformly per launch):
//  * tensor cores (bf16/f16, D in {32, 64, 128}): mma.sync m16n8k16 with f32
//    accumulation, ldmatrix from padded shared tiles (row stride D+8 elements),
//    cp.async double buffering (plain loads instead when a pointer is not 16-byte
//    aligned or a q/k/v stride is not a multiple of 8 elements).
//  * SIMT fallback (f32, and bf16/f16 with any other D <= 256): one warp per
//    group of 4 query rows (fwd) or 4 keys (bwd), lane owns dims lane + 32*j;
//    no shared memory.
// Both paths use the same grid and block; only the dynamic shared memory differs.
// Cost: fwd 4*B*H*Sq*Sk*D FLOP (about half with causal and Sq = Sk), bwd 10*B*H*Sq*Sk*D FLOP
// (recomputes QK^T); bytes ~ (q + o) + (k + v) * ceil(Sq/64) (fwd) and
// (k + v + dk + dv) + (q + dO) * ceil(Sk/64) + 4 bytes * B*H*Sq*D atomics per key
// tile (bwd).
//
// Launch (host): TC = (T is bf16/f16) && D in {32, 64, 128}; sizes in bytes.
//  attention_fwd:            grid (ceil(Sq/64), B*H), block 128,
//                            shmem TC ? 5*64*(D+8)*2 : 0   (D=32: 25600, D=64: 46080, D=128: 87040)
//  attention_bwd_preprocess: grid ceil(rows/8), block 256, shmem 0
//  attention_bwd:            grid (ceil(Sk/64), B*H), block 128, BQ = D==128 ? 32 : 64,
//                            shmem TC ? (128*(D+8) + 4*BQ*(D+8) + 64*(BQ+8))*2 + 16*BQ : 0
//                            (D=32: 40960, D=64: 65536, D=128: 75264)
//  attention_dq_convert:     grid ceil(n/256) (any grid works: grid-stride), block 256, shmem 0
// Shared memory above 48 KiB needs cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES).
// Backward sequence: delta = preprocess(o, dout); zero dq_accum (f32 [B,H,Sq,D]);
// attention_bwd(...); dq = dq_convert(dq_accum).
#include "common.cuh"
#include "ptx.cuh"

extern __shared__ __align__(16) unsigned char vlk_smem[];

namespace vlk {
namespace attn {

constexpr int kThreads = 128;     // 4 warps
constexpr int kBM = 64;           // fwd: query rows per block (16 per warp)
constexpr int kBN = 64;           // fwd: keys per tile; bwd: keys per block
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- tensor-core helpers ------------------------------------------------------
__device__ __forceinline__ void mma(float* d, const uint32_t* a, const uint32_t* b, __nv_bfloat16) {
  mma_m16n8k16_bf16(d, a, b, d);
}
__device__ __forceinline__ void mma(float* d, const uint32_t* a, const uint32_t* b, __half) {
  mma_m16n8k16_f16(d, a, b, d);
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi, __nv_bfloat16) {
  return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
         ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi, __half) {
  return (uint32_t)__half_as_ushort(__float2half_rn(lo)) | ((uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16);
}

// Lane roles for ldmatrix.x4: lane 8j + r gives row r of matrix j.
// A fragment (16x16) of a row-major tile s[m][k]: rows m0.., cols k0..
template <class T> __device__ __forceinline__ void lds_a(uint32_t* a, const T* s, int ld, int m0, int k0) {
  const int l = threadIdx.x & 31, j = l >> 3, r = l & 7;
  ldmatrix_x4(a, s + (m0 + r + 8 * (j & 1)) * ld + k0 + 8 * (j >> 1));
}
// A fragment (16x16) of A[m][k] stored transposed, s[k][m].
template <class T> __device__ __forceinline__ void lds_a_t(uint32_t* a, const T* s, int ld, int m0, int k0) {
  const int l = threadIdx.x & 31, j = l >> 3, r = l & 7;
  ldmatrix_x4_trans(a, s + (k0 + r + 8 * (j >> 1)) * ld + m0 + 8 * (j & 1));
}
// B fragments of the n-tiles n0 and n0+8 (b[0..1], b[2..3]) for k-step k0, B[k][n] stored s[n][k].
template <class T> __device__ __forceinline__ void lds_b_nk(uint32_t* b, const T* s, int ld, int n0, int k0) {
  const int l = threadIdx.x & 31, j = l >> 3, r = l & 7;
  ldmatrix_x4(b, s + (n0 + r + 8 * (j >> 1)) * ld + k0 + 8 * (j & 1));
}
// Same, B[k][n] stored s[k][n].
template <class T> __device__ __forceinline__ void lds_b_kn(uint32_t* b, const T* s, int ld, int k0, int n0) {
  const int l = threadIdx.x & 31, j = l >> 3, r = l & 7;
  ldmatrix_x4_trans(b, s + (k0 + r + 8 * (j & 1)) * ld + n0 + 8 * (j >> 1));
}

// Rows [r0, r0 + ROWS) of a [len][D] matrix (row stride ld) into the shared
// tile s[ROWS][D+8]; rows >= len become zeros. async: cp.async (16-byte chunks),
// else plain loads.
template <class T, int D, int ROWS>
__device__ __forceinline__ void load_tile(T* s, const T* g, long long ld, int r0, int len, bool async) {
  constexpr int CH = D / 8;
  for (int c = threadIdx.x; c < ROWS * CH; c += kThreads) {
    const int r = c / CH, k = (c % CH) * 8, row = r0 + r;
    T* dst = s + r * (D + 8) + k;
    const bool in = row < len;
    if (async) {
      cp_async_cg16_zfill(dst, in ? g + row * ld + k : g, in ? 16 : 0);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) dst[e] = in ? g[row * ld + k + e] : from_float<T>(0.0f);
    }
  }
}

__device__ __forceinline__ bool aligned16(const void* p, long long s0, long long s1, long long s2) {
  return ((uintptr_t)p & 15) == 0 && ((s0 | s1 | s2) & 7) == 0;
}

// ---- forward, tensor cores ----------------------------------------------------
// Block: 64 query rows x one (b,h); warp w owns rows 16w..16w+15. Per 64-key
// tile: S = Q K^T (Q fragments held in registers), mask, online softmax in the
// log2 domain on the C fragments, P repacked as A fragments, O += P V.
// Shared: Q [64][D+8], K [2][64][D+8], V [2][64][D+8].
template <class T, int D>
__device__ __forceinline__ void fwd_tc(const T* q, const T* k, const T* v, T* o, float* lse,
                                       const unsigned* key_mask, int H, int Sq, int Sk, long long q_sb,
                                       long long q_sh, long long q_ss, long long k_sb, long long k_sh,
                                       long long k_ss, long long v_sb, long long v_sh, long long v_ss,
                                       float scale, int causal) {
  constexpr int LD = D + 8, KS = D / 16, NT = D / 8;
  T* Qs = reinterpret_cast<T*>(vlk_smem);
  T* Ks = Qs + kBM * LD;
  T* Vs = Ks + 2 * kBN * LD;
  const int bh = blockIdx.y, b = bh / H, h = bh % H, q0 = blockIdx.x * kBM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const T* qg = q + b * q_sb + h * q_sh;
  const T* kg = k + b * k_sb + h * k_sh;
  const T* vg = v + b * v_sb + h * v_sh;
  const unsigned* km = key_mask ? key_mask + (long long)b * Sk : nullptr;
  const bool async = aligned16(q, q_sb, q_sh, q_ss) && aligned16(k, k_sb, k_sh, k_ss) &&
                     aligned16(v, v_sb, v_sh, v_ss);
  const int off = Sk - Sq;
  const int kv_end = causal ? min(Sk, min(q0 + kBM, Sq) + off) : Sk;
  const int ntiles = kv_end > 0 ? (kv_end + kBN - 1) / kBN : 0;
  const float sl2 = scale * kLog2e;
  const int row0 = q0 + warp * 16 + g;  // this lane's rows: row0, row0 + 8

  float acc[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  uint32_t qf[KS][4];

  if (ntiles > 0) {
    load_tile<T, D, kBM>(Qs, qg, q_ss, q0, Sq, async);
    load_tile<T, D, kBN>(Ks, kg, k_ss, 0, Sk, async);
    load_tile<T, D, kBN>(Vs, vg, v_ss, 0, Sk, async);
    cp_async_commit();
  }
  for (int it = 0; it < ntiles; ++it) {
    const int cur = it & 1, n0 = it * kBN;
    if (it + 1 < ntiles) {
      load_tile<T, D, kBN>(Ks + (cur ^ 1) * kBN * LD, kg, k_ss, n0 + kBN, Sk, async);
      load_tile<T, D, kBN>(Vs + (cur ^ 1) * kBN * LD, vg, v_ss, n0 + kBN, Sk, async);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) lds_a(qf[kk], Qs, LD, warp * 16, kk * 16);
    }
    const T* Kc = Ks + cur * kBN * LD;
    const T* Vc = Vs + cur * kBN * LD;

    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t bf[4];
        lds_b_nk(bf, Kc, LD, np * 16, kk * 16);
        mma(s[2 * np], qf[kk], bf, T());
        mma(s[2 * np + 1], qf[kk], bf + 2, T());
      }
    }
    const bool need_mask = km || n0 + kBN > Sk || (causal && n0 + kBN - 1 > q0 + off);
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * sl2;
        if (need_mask) {
          const int j = n0 + n * 8 + 2 * t + (e & 1), i = row0 + 8 * (e >> 1);
          const bool vis = j < Sk && (!km || km[j] != 0u) && (!causal || j <= i + off);
          x = vis ? x : -INFINITY;
        }
        s[n][e] = x;
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      const float mu = m_new == -INFINITY ? 0.0f : m_new;  // all masked so far: p = 0
      const float alpha = exp2f(m[r] - mu);
      m[r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        s[n][2 * r] = exp2f(s[n][2 * r] - mu);
        s[n][2 * r + 1] = exp2f(s[n][2 * r + 1] - mu);
        sum += s[n][2 * r] + s[n][2 * r + 1];
      }
      l[r] = l[r] * alpha + sum;  // per-lane partial; reduced over the quad at the end
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        acc[n][2 * r] *= alpha;
        acc[n][2 * r + 1] *= alpha;
      }
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t a[4];
      a[0] = pack2(s[2 * kk][0], s[2 * kk][1], T());
      a[1] = pack2(s[2 * kk][2], s[2 * kk][3], T());
      a[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], T());
      a[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], T());
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t bf[4];
        lds_b_kn(bf, Vc, LD, kk * 16, np * 16);
        mma(acc[2 * np], a, bf, T());
        mma(acc[2 * np + 1], a, bf + 2, T());
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lr = l[r];
    lr += __shfl_xor_sync(kFullMask, lr, 1);
    lr += __shfl_xor_sync(kFullMask, lr, 2);
    const int i = row0 + 8 * r;
    if (i < Sq) {
      const float inv = lr > 0.0f ? 1.0f / lr : 0.0f;
      T* orow = o + ((long long)bh * Sq + i) * D;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        orow[n * 8 + 2 * t] = from_float<T>(acc[n][2 * r] * inv);
        orow[n * 8 + 2 * t + 1] = from_float<T>(acc[n][2 * r + 1] * inv);
      }
      if (t == 0) lse[(long long)bh * Sq + i] = lr > 0.0f ? (m[r] + log2f(lr)) * kLn2 : -INFINITY;
    }
  }
}

// ---- forward, SIMT fallback (any D <= 256, NJ = ceil(D/32)) -------------------
// Warp w handles rows q0 + 16w .. +15 in 4 groups of 4 rows; per group it
// streams all visible keys one by one: s = warp_sum(q . k), online softmax.
template <class T, int NJ>
__device__ __forceinline__ void fwd_simt(const T* q, const T* k, const T* v, T* o, float* lse,
                                         const unsigned* key_mask, int H, int Sq, int Sk, int D,
                                         long long q_sb, long long q_sh, long long q_ss, long long k_sb,
                                         long long k_sh, long long k_ss, long long v_sb, long long v_sh,
                                         long long v_ss, float scale, int causal) {
  constexpr int R = 4;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* qg = q + b * q_sb + h * q_sh;
  const T* kg = k + b * k_sb + h * k_sh;
  const T* vg = v + b * v_sb + h * v_sh;
  const unsigned* km = key_mask ? key_mask + (long long)b * Sk : nullptr;
  const int off = Sk - Sq;
  const float sl2 = scale * kLog2e;
  for (int grp = 0; grp < 4; ++grp) {
    const int i0 = blockIdx.x * kBM + warp * 16 + grp * R;
    if (i0 >= Sq) break;
    float qr[R][NJ], acc[R][NJ], m[R], l[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      m[r] = -INFINITY;
      l[r] = 0.0f;
#pragma unroll
      for (int jj = 0; jj < NJ; ++jj) {
        const int d = lane + 32 * jj;
        qr[r][jj] = (d < D && i0 + r < Sq) ? load_float(qg, (i0 + r) * q_ss + d) * sl2 : 0.0f;
        acc[r][jj] = 0.0f;
      }
    }
    const int kv_end = causal ? min(Sk, min(i0 + R, Sq) + off) : Sk;
    for (int j = 0; j < kv_end; ++j) {
      if (km && km[j] == 0u) continue;
      float kr[NJ], vr[NJ];
#pragma unroll
      for (int jj = 0; jj < NJ; ++jj) {
        const int d = lane + 32 * jj;
        kr[jj] = d < D ? load_float(kg, j * k_ss + d) : 0.0f;
        vr[jj] = d < D ? load_float(vg, j * v_ss + d) : 0.0f;
      }
      float s[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        s[r] = 0.0f;
#pragma unroll
        for (int jj = 0; jj < NJ; ++jj) s[r] += qr[r][jj] * kr[jj];
      }
#pragma unroll
      for (int x = 16; x > 0; x >>= 1) {
#pragma unroll
        for (int r = 0; r < R; ++r) s[r] += __shfl_xor_sync(kFullMask, s[r], x);
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int i = i0 + r;
        if (i < Sq && (!causal || j <= i + off)) {
          const float m_new = fmaxf(m[r], s[r]);
          const float alpha = exp2f(m[r] - m_new), p = exp2f(s[r] - m_new);
          m[r] = m_new;
          l[r] = l[r] * alpha + p;
#pragma unroll
          for (int jj = 0; jj < NJ; ++jj) acc[r][jj] = acc[r][jj] * alpha + p * vr[jj];
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = i0 + r;
      if (i < Sq) {
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
        for (int jj = 0; jj < NJ; ++jj) {
          const int d = lane + 32 * jj;
          if (d < D) store_float(o, ((long long)bh * Sq + i) * D + d, acc[r][jj] * inv);
        }
        if (lane == 0) lse[(long long)bh * Sq + i] = l[r] > 0.0f ? (m[r] + log2f(l[r])) * kLn2 : -INFINITY;
      }
    }
  }
}

// ---- backward, tensor cores ---------------------------------------------------
// Block: 64 keys x one (b,h); warp w owns keys 16w..16w+15 (dK, dV accumulate
// in its registers). Per query tile of BQ rows (double-buffered Q, dO, lse,
// delta), warp-local:  S^T = K_w Q^T;  P^T = exp(scale S^T - lse);
// dV += P^T dO;  dP^T = V_w dO^T;  dS^T = P^T (dP^T - delta);  dK += dS^T Q;
// then dS^T goes to shared memory and the block computes dQ_tile = dS K
// (warp: 16 query rows x D/(4/(BQ/16)) columns), added to dq_accum with atomicAdd.
// Shared: K, V [64][D+8]; Q, dO [2][BQ][D+8]; dS^T [64][BQ+8] (T); lse, delta [2][BQ] f32.
template <class T, int D>
__device__ __forceinline__ void bwd_tc(const T* q, const T* k, const T* v, const T* dout, const float* lse,
                                       const float* delta, float* dq_accum, T* dk, T* dv,
                                       const unsigned* key_mask, int H, int Sq, int Sk, long long q_sb,
                                       long long q_sh, long long q_ss, long long k_sb, long long k_sh,
                                       long long k_ss, long long v_sb, long long v_sh, long long v_ss,
                                       float scale, int causal) {
  constexpr int BQ = D == 128 ? 32 : 64;
  constexpr int LD = D + 8, LDS = BQ + 8, KS = D / 16, NT = D / 8, QT = BQ / 8, RG = BQ / 16;
  T* Ks = reinterpret_cast<T*>(vlk_smem);
  T* Vs = Ks + kBN * LD;
  T* Qs = Vs + kBN * LD;        // [2][BQ][LD]
  T* dOs = Qs + 2 * BQ * LD;    // [2][BQ][LD]
  T* dSs = dOs + 2 * BQ * LD;   // [64][LDS]
  float* lse_s = reinterpret_cast<float*>(dSs + kBN * LDS);  // [2][BQ], log2 domain
  float* dl_s = lse_s + 2 * BQ;                              // [2][BQ]

  const int bh = blockIdx.y, b = bh / H, h = bh % H, n0 = blockIdx.x * kBN;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const T* qg = q + b * q_sb + h * q_sh;
  const T* kg = k + b * k_sb + h * k_sh;
  const T* vg = v + b * v_sb + h * v_sh;
  const T* dog = dout + (long long)bh * Sq * D;
  const float* lg = lse + (long long)bh * Sq;
  const float* dg = delta + (long long)bh * Sq;
  float* dqg = dq_accum + (long long)bh * Sq * D;
  const unsigned* km = key_mask ? key_mask + (long long)b * Sk : nullptr;
  const bool async = aligned16(q, q_sb, q_sh, q_ss) && aligned16(k, k_sb, k_sh, k_ss) &&
                     aligned16(v, v_sb, v_sh, v_ss) && aligned16(dout, 0, 0, 0);
  const int off = Sk - Sq;
  const float sl2 = scale * kLog2e;
  const int j0 = n0 + warp * 16 + g;  // this lane's keys: j0, j0 + 8
  bool kvis[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = j0 + 8 * r;
    kvis[r] = j < Sk && (!km || km[j] != 0u);
  }
  const int nq = (Sq + BQ - 1) / BQ;
  const int it0 = causal ? max(0, n0 - off) / BQ : 0;

  float dka[NT][4], dva[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    dka[n][0] = dka[n][1] = dka[n][2] = dka[n][3] = 0.0f;
    dva[n][0] = dva[n][1] = dva[n][2] = dva[n][3] = 0.0f;
  }

  // Q, dO, lse, delta of query tile `it` into buffer `buf`.
  auto load_q = [&](int it, int buf) {
    load_tile<T, D, BQ>(Qs + buf * BQ * LD, qg, q_ss, it * BQ, Sq, async);
    load_tile<T, D, BQ>(dOs + buf * BQ * LD, dog, D, it * BQ, Sq, async);
    for (int r = threadIdx.x; r < BQ; r += kThreads) {
      const int i = it * BQ + r;
      lse_s[buf * BQ + r] = i < Sq ? lg[i] * kLog2e : 0.0f;
      dl_s[buf * BQ + r] = i < Sq ? dg[i] : 0.0f;
    }
  };
  if (it0 < nq) {
    load_tile<T, D, kBN>(Ks, kg, k_ss, n0, Sk, async);
    load_tile<T, D, kBN>(Vs, vg, v_ss, n0, Sk, async);
    load_q(it0, 0);
    cp_async_commit();
  }
  for (int it = it0; it < nq; ++it) {
    const int cur = (it - it0) & 1, m0 = it * BQ;
    if (it + 1 < nq) load_q(it + 1, cur ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* Qc = Qs + cur * BQ * LD;
    const T* dOc = dOs + cur * BQ * LD;
    const float* lc = lse_s + cur * BQ;
    const float* dc = dl_s + cur * BQ;

    // S^T = K_w Q^T, then P^T in place.
    float s[QT][4];
#pragma unroll
    for (int n = 0; n < QT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      uint32_t a[4];
      lds_a(a, Ks, LD, warp * 16, kk * 16);
#pragma unroll
      for (int np = 0; np < QT / 2; ++np) {
        uint32_t bf[4];
        lds_b_nk(bf, Qc, LD, np * 16, kk * 16);
        mma(s[2 * np], a, bf, T());
        mma(s[2 * np + 1], a, bf + 2, T());
      }
    }
#pragma unroll
    for (int n = 0; n < QT; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = n * 8 + 2 * t + (e & 1), i = m0 + c, j = j0 + 8 * (e >> 1);
        const bool vis = kvis[e >> 1] && i < Sq && (!causal || j <= i + off);
        s[n][e] = vis ? exp2f(s[n][e] * sl2 - lc[c]) : 0.0f;
      }
    }
    // dV += P^T dO
#pragma unroll
    for (int kk = 0; kk < QT / 2; ++kk) {
      uint32_t a[4];
      a[0] = pack2(s[2 * kk][0], s[2 * kk][1], T());
      a[1] = pack2(s[2 * kk][2], s[2 * kk][3], T());
      a[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], T());
      a[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], T());
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t bf[4];
        lds_b_kn(bf, dOc, LD, kk * 16, np * 16);
        mma(dva[2 * np], a, bf, T());
        mma(dva[2 * np + 1], a, bf + 2, T());
      }
    }
    // dP^T = V_w dO^T; dS^T = P^T (dP^T - delta) in place of P^T.
    {
      float dp[QT][4];
#pragma unroll
      for (int n = 0; n < QT; ++n) dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        uint32_t a[4];
        lds_a(a, Vs, LD, warp * 16, kk * 16);
#pragma unroll
        for (int np = 0; np < QT / 2; ++np) {
          uint32_t bf[4];
          lds_b_nk(bf, dOc, LD, np * 16, kk * 16);
          mma(dp[2 * np], a, bf, T());
          mma(dp[2 * np + 1], a, bf + 2, T());
        }
      }
#pragma unroll
      for (int n = 0; n < QT; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] *= dp[n][e] - dc[n * 8 + 2 * t + (e & 1)];
      }
    }
    // dK += dS^T Q (scaled at the end); dS^T to shared for dQ.
#pragma unroll
    for (int kk = 0; kk < QT / 2; ++kk) {
      uint32_t a[4];
      a[0] = pack2(s[2 * kk][0], s[2 * kk][1], T());
      a[1] = pack2(s[2 * kk][2], s[2 * kk][3], T());
      a[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], T());
      a[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], T());
      uint32_t* row_lo = reinterpret_cast<uint32_t*>(dSs + (warp * 16 + g) * LDS + kk * 16 + 2 * t);
      uint32_t* row_hi = reinterpret_cast<uint32_t*>(dSs + (warp * 16 + g + 8) * LDS + kk * 16 + 2 * t);
      row_lo[0] = a[0];
      row_hi[0] = a[1];
      row_lo[4] = a[2];
      row_hi[4] = a[3];
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t bf[4];
        lds_b_kn(bf, Qc, LD, kk * 16, np * 16);
        mma(dka[2 * np], a, bf, T());
        mma(dka[2 * np + 1], a, bf + 2, T());
      }
    }
    __syncthreads();
    // dQ[m0 + 16 rg .., 16 c ..] += scale * dS K over the block's 64 keys.
    {
      const int rg = warp % RG;
      uint32_t af[4][4];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) lds_a_t(af[kk], dSs, LDS, rg * 16, kk * 16);
      const int i_lo = m0 + rg * 16 + g, i_hi = i_lo + 8;
#pragma unroll
      for (int c = warp / RG; c < NT / 2; c += 4 / RG) {
        float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          uint32_t bf[4];
          lds_b_kn(bf, Ks, LD, kk * 16, c * 16);
          mma(acc[0], af[kk], bf, T());
          mma(acc[1], af[kk], bf + 2, T());
        }
#pragma unroll
        for (int hn = 0; hn < 2; ++hn) {
          const int d = c * 16 + hn * 8 + 2 * t;
          if (i_lo < Sq) {
            atomicAdd(dqg + (long long)i_lo * D + d, acc[hn][0] * scale);
            atomicAdd(dqg + (long long)i_lo * D + d + 1, acc[hn][1] * scale);
          }
          if (i_hi < Sq) {
            atomicAdd(dqg + (long long)i_hi * D + d, acc[hn][2] * scale);
            atomicAdd(dqg + (long long)i_hi * D + d + 1, acc[hn][3] * scale);
          }
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = j0 + 8 * r;
    if (j < Sk) {
      T* dkr = dk + ((long long)bh * Sk + j) * D;
      T* dvr = dv + ((long long)bh * Sk + j) * D;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        dkr[n * 8 + 2 * t] = from_float<T>(dka[n][2 * r] * scale);
        dkr[n * 8 + 2 * t + 1] = from_float<T>(dka[n][2 * r + 1] * scale);
        dvr[n * 8 + 2 * t] = from_float<T>(dva[n][2 * r]);
        dvr[n * 8 + 2 * t + 1] = from_float<T>(dva[n][2 * r + 1]);
      }
    }
  }
}

// ---- backward, SIMT fallback (any D <= 256) -----------------------------------
// Warp w handles keys n0 + 16w .. +15 in 4 groups of 4 keys (k, v, dk, dv of
// the group in registers); per group it streams the query rows that can see
// them: s, dp by warp_sum, p = exp(scale s - lse), ds = p (dp - delta),
// dV += p dO, dK += ds q, dQ += scale ds k (atomicAdd).
template <class T, int NJ>
__device__ __forceinline__ void bwd_simt(const T* q, const T* k, const T* v, const T* dout, const float* lse,
                                         const float* delta, float* dq_accum, T* dk, T* dv,
                                         const unsigned* key_mask, int H, int Sq, int Sk, int D,
                                         long long q_sb, long long q_sh, long long q_ss, long long k_sb,
                                         long long k_sh, long long k_ss, long long v_sb, long long v_sh,
                                         long long v_ss, float scale, int causal) {
  constexpr int KW = 4;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* qg = q + b * q_sb + h * q_sh;
  const T* kg = k + b * k_sb + h * k_sh;
  const T* vg = v + b * v_sb + h * v_sh;
  const T* dog = dout + (long long)bh * Sq * D;
  const float* lg = lse + (long long)bh * Sq;
  const float* dg = delta + (long long)bh * Sq;
  float* dqg = dq_accum + (long long)bh * Sq * D;
  const unsigned* km = key_mask ? key_mask + (long long)b * Sk : nullptr;
  const int off = Sk - Sq;
  const float sl2 = scale * kLog2e;
  for (int grp = 0; grp < 4; ++grp) {
    const int j0 = blockIdx.x * kBN + warp * 16 + grp * KW;
    if (j0 >= Sk) break;
    float kr[KW][NJ], vr[KW][NJ], dka[KW][NJ], dva[KW][NJ];
    bool kvis[KW];
    int jmin = Sk;
#pragma unroll
    for (int r = 0; r < KW; ++r) {
      const int j = j0 + r;
      kvis[r] = j < Sk && (!km || km[j] != 0u);
      if (kvis[r]) jmin = min(jmin, j);
#pragma unroll
      for (int jj = 0; jj < NJ; ++jj) {
        const int d = lane + 32 * jj;
        kr[r][jj] = (d < D && j < Sk) ? load_float(kg, j * k_ss + d) : 0.0f;
        vr[r][jj] = (d < D && j < Sk) ? load_float(vg, j * v_ss + d) : 0.0f;
        dka[r][jj] = dva[r][jj] = 0.0f;
      }
    }
    const int i_start = causal ? max(0, jmin - off) : 0;
    for (int i = jmin < Sk ? i_start : Sq; i < Sq; ++i) {
      float qv[NJ], dov[NJ], s[KW], dp[KW];
#pragma unroll
      for (int jj = 0; jj < NJ; ++jj) {
        const int d = lane + 32 * jj;
        qv[jj] = d < D ? load_float(qg, i * q_ss + d) : 0.0f;
        dov[jj] = d < D ? load_float(dog, (long long)i * D + d) : 0.0f;
      }
#pragma unroll
      for (int r = 0; r < KW; ++r) {
        s[r] = dp[r] = 0.0f;
#pragma unroll
        for (int jj = 0; jj < NJ; ++jj) {
          s[r] += qv[jj] * kr[r][jj];
          dp[r] += dov[jj] * vr[r][jj];
        }
      }
#pragma unroll
      for (int x = 16; x > 0; x >>= 1) {
#pragma unroll
        for (int r = 0; r < KW; ++r) {
          s[r] += __shfl_xor_sync(kFullMask, s[r], x);
          dp[r] += __shfl_xor_sync(kFullMask, dp[r], x);
        }
      }
      const float l2 = lg[i] * kLog2e, dl = dg[i];
      float dqv[NJ];
#pragma unroll
      for (int jj = 0; jj < NJ; ++jj) dqv[jj] = 0.0f;
#pragma unroll
      for (int r = 0; r < KW; ++r) {
        const bool vis = kvis[r] && (!causal || j0 + r <= i + off);
        const float p = vis ? exp2f(s[r] * sl2 - l2) : 0.0f;
        const float ds = vis ? p * (dp[r] - dl) : 0.0f;
#pragma unroll
        for (int jj = 0; jj < NJ; ++jj) {
          dva[r][jj] += p * dov[jj];
          dka[r][jj] += ds * qv[jj];
          dqv[jj] += ds * kr[r][jj];
        }
      }
#pragma unroll
      for (int jj = 0; jj < NJ; ++jj) {
        const int d = lane + 32 * jj;
        if (d < D) atomicAdd(dqg + (long long)i * D + d, dqv[jj] * scale);
      }
    }
#pragma unroll
    for (int r = 0; r < KW; ++r) {
      const int j = j0 + r;
      if (j < Sk) {
#pragma unroll
        for (int jj = 0; jj < NJ; ++jj) {
          const int d = lane + 32 * jj;
          if (d < D) {
            store_float(dk, ((long long)bh * Sk + j) * D + d, dka[r][jj] * scale);
            store_float(dv, ((long long)bh * Sk + j) * D + d, dva[r][jj]);
          }
        }
      }
    }
  }
}

// ---- dispatch -------------------------------------------------------------------
template <class T> constexpr bool kTensorCore = true;  // __half, __nv_bfloat16
template <> constexpr bool kTensorCore<float> = false;

#define VLK_ATTN_FWD_ARGS                                                                     \
  q, k, v, o, lse, key_mask, H, Sq, Sk, q_sb, q_sh, q_ss, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, \
      scale, causal
#define VLK_ATTN_FWD_ARGS_D                                                                      \
  q, k, v, o, lse, key_mask, H, Sq, Sk, D, q_sb, q_sh, q_ss, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, \
      scale, causal
#define VLK_ATTN_BWD_ARGS                                                                       \
  q, k, v, dout, lse, delta, dq_accum, dk, dv, key_mask, H, Sq, Sk, q_sb, q_sh, q_ss, k_sb, k_sh, \
      k_ss, v_sb, v_sh, v_ss, scale, causal
#define VLK_ATTN_BWD_ARGS_D                                                                        \
  q, k, v, dout, lse, delta, dq_accum, dk, dv, key_mask, H, Sq, Sk, D, q_sb, q_sh, q_ss, k_sb, k_sh, \
      k_ss, v_sb, v_sh, v_ss, scale, causal

template <class T>
__device__ __forceinline__ void fwd_simt_dispatch(const T* q, const T* k, const T* v, T* o, float* lse,
                                                  const unsigned* key_mask, int H, int Sq, int Sk, int D,
                                                  long long q_sb, long long q_sh, long long q_ss,
                                                  long long k_sb, long long k_sh, long long k_ss,
                                                  long long v_sb, long long v_sh, long long v_ss,
                                                  float scale, int causal) {
  switch ((D + 31) / 32) {
    case 1: fwd_simt<T, 1>(VLK_ATTN_FWD_ARGS_D); break;
    case 2: fwd_simt<T, 2>(VLK_ATTN_FWD_ARGS_D); break;
    case 3: fwd_simt<T, 3>(VLK_ATTN_FWD_ARGS_D); break;
    case 4: fwd_simt<T, 4>(VLK_ATTN_FWD_ARGS_D); break;
    case 5: fwd_simt<T, 5>(VLK_ATTN_FWD_ARGS_D); break;
    case 6: fwd_simt<T, 6>(VLK_ATTN_FWD_ARGS_D); break;
    case 7: fwd_simt<T, 7>(VLK_ATTN_FWD_ARGS_D); break;
    default: fwd_simt<T, 8>(VLK_ATTN_FWD_ARGS_D); break;
  }
}

template <class T>
__device__ __forceinline__ void bwd_simt_dispatch(const T* q, const T* k, const T* v, const T* dout,
                                                  const float* lse, const float* delta, float* dq_accum,
                                                  T* dk, T* dv, const unsigned* key_mask, int H, int Sq,
                                                  int Sk, int D, long long q_sb, long long q_sh,
                                                  long long q_ss, long long k_sb, long long k_sh,
                                                  long long k_ss, long long v_sb, long long v_sh,
                                                  long long v_ss, float scale, int causal) {
  switch ((D + 31) / 32) {
    case 1: bwd_simt<T, 1>(VLK_ATTN_BWD_ARGS_D); break;
    case 2: bwd_simt<T, 2>(VLK_ATTN_BWD_ARGS_D); break;
    case 3: bwd_simt<T, 3>(VLK_ATTN_BWD_ARGS_D); break;
    case 4: bwd_simt<T, 4>(VLK_ATTN_BWD_ARGS_D); break;
    case 5: bwd_simt<T, 5>(VLK_ATTN_BWD_ARGS_D); break;
    case 6: bwd_simt<T, 6>(VLK_ATTN_BWD_ARGS_D); break;
    case 7: bwd_simt<T, 7>(VLK_ATTN_BWD_ARGS_D); break;
    default: bwd_simt<T, 8>(VLK_ATTN_BWD_ARGS_D); break;
  }
}

template <class T>
__device__ __forceinline__ void fwd(const T* q, const T* k, const T* v, T* o, float* lse,
                                    const unsigned* key_mask, int B, int H, int Sq, int Sk, int D,
                                    long long q_sb, long long q_sh, long long q_ss, long long k_sb,
                                    long long k_sh, long long k_ss, long long v_sb, long long v_sh,
                                    long long v_ss, float scale, int causal) {
  (void)B;
  if constexpr (kTensorCore<T>) {
    if (D == 32) return fwd_tc<T, 32>(VLK_ATTN_FWD_ARGS);
    if (D == 64) return fwd_tc<T, 64>(VLK_ATTN_FWD_ARGS);
    if (D == 128) return fwd_tc<T, 128>(VLK_ATTN_FWD_ARGS);
  }
  fwd_simt_dispatch<T>(VLK_ATTN_FWD_ARGS_D);
}

template <class T>
__device__ __forceinline__ void bwd(const T* q, const T* k, const T* v, const T* dout, const float* lse,
                                    const float* delta, float* dq_accum, T* dk, T* dv,
                                    const unsigned* key_mask, int B, int H, int Sq, int Sk, int D,
                                    long long q_sb, long long q_sh, long long q_ss, long long k_sb,
                                    long long k_sh, long long k_ss, long long v_sb, long long v_sh,
                                    long long v_ss, float scale, int causal) {
  (void)B;
  if constexpr (kTensorCore<T>) {
    if (D == 32) return bwd_tc<T, 32>(VLK_ATTN_BWD_ARGS);
    if (D == 64) return bwd_tc<T, 64>(VLK_ATTN_BWD_ARGS);
    if (D == 128) return bwd_tc<T, 128>(VLK_ATTN_BWD_ARGS);
  }
  bwd_simt_dispatch<T>(VLK_ATTN_BWD_ARGS_D);
}

}  // namespace attn
}  // namespace vlk

// attention_fwd_<dt>: see the file comment for grid/block/shmem.
#define VLK_ATTN_FWD(NAME, T)                                                                        \
  extern "C" __global__ void __launch_bounds__(128, 1)                                                \
      NAME(const T* q, const T* k, const T* v, T* o, float* lse, const unsigned* key_mask, int B,    \
           int H, int Sq, int Sk, int D, long long q_sb, long long q_sh, long long q_ss,             \
           long long k_sb, long long k_sh, long long k_ss, long long v_sb, long long v_sh,           \
           long long v_ss, float scale, int causal) {                                                \
    vlk::attn::fwd<T>(q, k, v, o, lse, key_mask, B, H, Sq, Sk, D, q_sb, q_sh, q_ss, k_sb, k_sh, k_ss, \
                      v_sb, v_sh, v_ss, scale, causal);                                              \
  }                                                                                                  \
  VLK_EXPORT(NAME)
VLK_ATTN_FWD(attention_fwd_f32, float)
VLK_ATTN_FWD(attention_fwd_f16, __half)
VLK_ATTN_FWD(attention_fwd_bf16, __nv_bfloat16)

// attention_bwd_preprocess_<dt>: delta[r] = sum_d o[r,d] * dout[r,d] for the
// `rows` = B*H*Sq contiguous rows. One warp per row: grid ceil(rows/8), block
// 256, shmem 0. 2*rows*D FLOP; reads 2*rows*D elements, writes 4*rows bytes.
#define VLK_ATTN_PRE(NAME, T)                                                                      \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      NAME(const T* o, const T* dout, float* delta, long long rows, int D) {                       \
    const long long r = (long long)blockIdx.x * 8 + (threadIdx.x >> 5);                            \
    const int lane = threadIdx.x & 31;                                                             \
    if (r < rows) {                                                                                \
      float s = 0.0f;                                                                              \
      for (int d = lane; d < D; d += 32) s += vlk::load_float(o, r * D + d) * vlk::load_float(dout, r * D + d); \
      s = vlk::warp_sum(s);                                                                        \
      if (lane == 0) delta[r] = s;                                                                 \
    }                                                                                              \
  }                                                                                                \
  VLK_EXPORT(NAME)
VLK_ATTN_PRE(attention_bwd_preprocess_f32, float)
VLK_ATTN_PRE(attention_bwd_preprocess_f16, __half)
VLK_ATTN_PRE(attention_bwd_preprocess_bf16, __nv_bfloat16)

// attention_bwd_<dt>: see the file comment for grid/block/shmem. dq_accum must
// be zeroed by the host; dk, dv are written contiguous [B,H,Sk,D].
#define VLK_ATTN_BWD(NAME, T)                                                                        \
  extern "C" __global__ void __launch_bounds__(128, 1)                                                \
      NAME(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta,  \
           float* dq_accum, T* dk, T* dv, const unsigned* key_mask, int B, int H, int Sq, int Sk,    \
           int D, long long q_sb, long long q_sh, long long q_ss, long long k_sb, long long k_sh,    \
           long long k_ss, long long v_sb, long long v_sh, long long v_ss, float scale, int causal) { \
    vlk::attn::bwd<T>(q, k, v, dout, lse, delta, dq_accum, dk, dv, key_mask, B, H, Sq, Sk, D, q_sb,   \
                      q_sh, q_ss, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, scale, causal);                \
  }                                                                                                  \
  VLK_EXPORT(NAME)
VLK_ATTN_BWD(attention_bwd_f32, float)
VLK_ATTN_BWD(attention_bwd_f16, __half)
VLK_ATTN_BWD(attention_bwd_bf16, __nv_bfloat16)

// attention_dq_convert_<dt>: dq[i] = T(dq_accum[i]) for i < n. Grid-stride:
// block 256, grid ceil(n/256) (any grid is correct), shmem 0. n reads of 4 bytes.
#define VLK_ATTN_DQ(NAME, T)                                                                       \
  extern "C" __global__ void __launch_bounds__(256) NAME(const float* dq_accum, T* dq, long long n) { \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;                    \
         i += (long long)gridDim.x * blockDim.x)                                                   \
      vlk::store_float(dq, i, dq_accum[i]);                                                        \
  }                                                                                                \
  VLK_EXPORT(NAME)
VLK_ATTN_DQ(attention_dq_convert_f32, float)
VLK_ATTN_DQ(attention_dq_convert_f16, __half)
VLK_ATTN_DQ(attention_dq_convert_bf16, __nv_bfloat16)
