// GEMM family: batched C = act(alpha * op(A) op(B) + bias) + residual.
//
// For every batch index z = blockIdx.z (m < M, n < N):
//   C_z[m][n] = act(alpha * sum_k opA(m,k) * opB(k,n) + bias[n]) + residual_z[m][n]
//   opA(m,k) = A[z*strideA + m*lda + k]  (transA == 0, A row-major M x K)
//            = A[z*strideA + k*lda + m]  (transA != 0, A stored K x M)
//   opB(k,n) = B[z*strideB + k*ldb + n]  (transB == 0, B row-major K x N)
//            = B[z*strideB + n*ldb + k]  (transB != 0, B stored N x K: nn.Linear weight)
//   C_z[m][n] = C[z*strideC + m*ldc + n]; residual (may be NULL, may equal C) has C's layout;
//   bias (may be NULL) has N elements; strideA / strideB may be 0 (broadcast).
//   act: 0 none, 1 GELU (erf), 2 GELU (tanh approximation), 3 quick_gelu x*sigmoid(1.702x).
//   K == 0 gives C = act(bias) + residual. Elements of C outside the M x N view are not touched.
// Accumulation is f32 for every dtype; the epilogue runs in f32 and rounds once.
//
// Cost: 2*M*N*K FLOPs per batch entry. Bytes (compulsory): (M*K + K*N + M*N [+ M*N residual]
// [+ N bias]) * sizeof(T); tiles of A are re-read ceil(N/128) times and tiles of B ceil(M/128)
// times, mostly from L2. A 128x128 block tile reuses each loaded element 128 times, so for
// K >= ~256 the kernels are bound by math rather than memory.
//
// gemm_bf16 / gemm_f16: tensor cores (mma.sync.m16n8k16, f32 accumulate).
//   Block tile 128 (M) x 128 (N) x 32 (K), 256 threads = 8 warps as 2 (M) x 4 (N), each warp
//   a 64 x 32 sub-tile = 4 x 4 mma tiles (64 f32 accumulators per lane). Operand tiles are
//   staged in shared memory in their global layout (the contiguous global dimension stays
//   contiguous), rows padded by 8 elements (16 bytes) so that ldmatrix's 8 row addresses hit
//   distinct banks; ldmatrix.x4 loads fragments, with .trans where the stored tile is the
//   transpose of the fragment's layout (A stored K x M, B stored K x N).
//   Pipeline: 4 stages of cp.async 16-byte copies (.cg, L2 only): while tile kt is being
//   multiplied, tiles kt+1..kt+3 are in flight, which hides global-memory latency with one
//   __syncthreads() per k-tile. Edges (M, N, K not multiples of the tile) use the zero-fill
//   form of cp.async. An operand whose base pointer is not 16-byte aligned, or whose leading
//   dimension or batch stride is not a multiple of 8 elements, is loaded with scalar loads
//   and shared-memory stores instead (same tiles, same pipeline, just slower).
//   Epilogue: the 128x128 f32 tile is staged in shared memory (reusing the pipeline
//   buffers), then each warp applies alpha/bias/act/residual along 128 consecutive columns of
//   a row, so C, residual and bias are accessed coalesced. 128 registers (2 blocks per SM).
//   Launch: grid = (ceil(N/128), ceil(M/128), batch) (batch <= 65535), block = (256, 1, 1),
//   dynamic shared memory = 81920 bytes (above 48 KiB: the host must set
//   CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES to at least 81920 before launching).
//
// gemm_f32: SIMT (no tensor cores, exact f32 FMA).
//   Block tile 128 x 128 x 16, 256 threads as 16 x 16, each thread an 8 x 8 register tile
//   (rows 4ty..4ty+3 and 64+4ty..; columns 4tx..4tx+3 and 64+4tx..) so that each k step
//   reads 4 float4 from shared memory for 64 FMAs. Tiles are stored k-major (As[k][m],
//   Bs[k][n], rows padded by 4 floats) in two buffers: the next tile is fetched from global
//   memory into registers while the current one is multiplied, then stored to the other
//   buffer (one __syncthreads() per k-tile). All loads are scalar and bounds-checked, so any
//   layout and alignment works. Epilogue as above, staged in two halves of 64 rows.
//   Launch: grid = (ceil(N/128), ceil(M/128), batch) (batch <= 65535), block = (256, 1, 1),
//   dynamic shared memory = 33792 bytes.
//
// Parameters of all three, in order:
//   (const T* A, const T* B, T* C, const T* bias, const T* residual, int M, int N, int K,
//    long long lda, long long ldb, long long ldc, long long strideA, long long strideB,
//    long long strideC, int transA, int transB, float alpha, int act)
#include "common.cuh"
#include "ptx.cuh"

extern __shared__ __align__(16) unsigned char vlk_smem[];

namespace vlk {
namespace gemm {

constexpr int kThreads = 256;

// ---- epilogue -----------------------------------------------------------------
__device__ __forceinline__ float activate(float x, int act) {
  switch (act) {
    case 1:
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case 2: {
      const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + tanhf(u));
    }
    case 3:
      return x / (1.0f + __expf(-1.702f * x));
    default:
      return x;
  }
}

// Parameters of one launch, shared by the tensor-core and SIMT paths.
template <class T> struct Args {
  const T* A;
  const T* B;
  T* C;
  const T* bias;
  const T* residual;
  int M, N, K;
  long long lda, ldb, ldc, strideA, strideB, strideC;
  float alpha;
  int act;
};

// Writes C[m][n] of batch z from the f32 accumulator (bounds-checked).
template <class T>
__device__ __forceinline__ void store_out(const Args<T>& p, long long z, int m, int n, float acc) {
  if (m >= p.M || n >= p.N) return;
  float v = p.alpha * acc;
  if (p.bias) v += to_float(p.bias[n]);
  v = activate(v, p.act);
  const long long off = z * p.strideC + (long long)m * p.ldc + n;
  if (p.residual) v += to_float(p.residual[off]);
  p.C[off] = from_float<T>(v);
}

// The block's f32 results for rows row0..row0+ROWS-1 (ROWS x 128, row stride LD floats, a
// multiple of 4) sit in shared memory: all 256 threads write them out, a warp per row segment
// of 128 consecutive columns (coalesced). The loop is not unrolled to keep the code small.
template <int ROWS, int LD, class T>
__device__ __forceinline__ void store_staged(const Args<T>& p, long long z, const float* s, int row0,
                                             int col0) {
  const int c = (threadIdx.x & 31) * 4;
#pragma unroll 1
  for (int r = threadIdx.x >> 5; r < ROWS; r += kThreads / 32) {
    const float4 v = *reinterpret_cast<const float4*>(s + r * LD + c);
    store_out(p, z, row0 + r, col0 + c, v.x);
    store_out(p, z, row0 + r, col0 + c + 1, v.y);
    store_out(p, z, row0 + r, col0 + c + 2, v.z);
    store_out(p, z, row0 + r, col0 + c + 3, v.w);
  }
}

// ---- tensor-core path (f16 / bf16) ---------------------------------------------
constexpr int kBM = 128, kBN = 128, kBK = 32, kStages = 4;
constexpr int kPad = 8;                                  // elements of padding per smem row
constexpr int kTileElems = kBM * (kBK + kPad);           // >= kBK * (kBM + kPad) too
static_assert(kBK * (kBM + kPad) <= kTileElems, "tile region too small");
static_assert(kBM == kBN, "A and B tiles share one region size");
constexpr int kStageElems = 2 * kTileElems;              // A tile then B tile
constexpr int kTcSmemBytes = kStages * kStageElems * 2;  // 81920
static_assert(kTcSmemBytes == 81920, "documented shared memory size");
// Epilogue staging row stride: 136 floats puts the 8 rows of an mma tile 8 banks apart, so
// the float2 stores of each half-warp are conflict-free.
constexpr int kTcOutRow = kBN + 8;
static_assert(kBM * kTcOutRow * 4 <= kTcSmemBytes, "epilogue staging fits in the pipeline buffers");

// Stages one ROWS x COLS tile (COLS contiguous in global memory, element (r, c) at
// g[(row0 + r) * ld + col0 + c], valid for row0 + r < rows, col0 + c < cols) into smem with
// row stride COLS + kPad; everything outside the valid range becomes 0. vec: g is 16-byte
// aligned and ld is a multiple of 8, so every 8-element chunk starts 16-byte aligned.
template <int ROWS, int COLS, class T>
__device__ __forceinline__ void load_tile(T* s, const T* g, long long ld, int row0, int rows,
                                          int col0, int cols, bool vec) {
  constexpr int kChunksPerRow = COLS / 8;
  constexpr int kChunks = ROWS * kChunksPerRow;
  static_assert(kChunks % kThreads == 0, "whole chunks per thread");
#pragma unroll
  for (int j = 0; j < kChunks / kThreads; ++j) {
    const int c = threadIdx.x + j * kThreads;
    const int r = c / kChunksPerRow, cc = (c % kChunksPerRow) * 8;
    const int gr = row0 + r, gc = col0 + cc;
    T* dst = s + r * (COLS + kPad) + cc;
    const int valid = gr < rows ? min(max(cols - gc, 0), 8) : 0;
    if (vec) {
      const T* src = valid > 0 ? g + (long long)gr * ld + gc : g;
      cp_async_cg16_zfill(dst, src, valid * 2);
    } else {
      const T* src = g + (long long)gr * ld + gc;
#pragma unroll
      for (int e = 0; e < 8; ++e) dst[e] = e < valid ? src[e] : from_float<T>(0.0f);
    }
  }
}

template <class T> struct MmaOp;
template <> struct MmaOp<__nv_bfloat16> {
  __device__ __forceinline__ static void run(float* d, const uint32_t* a, const uint32_t* b) {
    mma_m16n8k16_bf16(d, a, b, d);
  }
};
template <> struct MmaOp<__half> {
  __device__ __forceinline__ static void run(float* d, const uint32_t* a, const uint32_t* b) {
    mma_m16n8k16_f16(d, a, b, d);
  }
};

// One 128x128 output tile of batch blockIdx.z; TA / TB are transA / transB.
template <class T, bool TA, bool TB>
__device__ __forceinline__ void gemm_tc(const Args<T>& p) {
  T* smem = reinterpret_cast<T*>(vlk_smem);
  const long long z = blockIdx.z;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const T* A = p.A + z * p.strideA;
  const T* B = p.B + z * p.strideB;
  auto vec_ok = [](const T* base, long long ld, long long stride) {
    return (reinterpret_cast<uintptr_t>(base) & 15) == 0 && ld % 8 == 0 && stride % 8 == 0;
  };
  const bool vecA = vec_ok(p.A, p.lda, p.strideA), vecB = vec_ok(p.B, p.ldb, p.strideB);

  // Stage s holds A's tile at smem + s*kStageElems and B's tile kTileElems further. A tile:
  // [m][k] (row stride kBK + kPad) if !TA, else [k][m] (kBM + kPad). B tile: [k][n] if !TB,
  // else [n][k].
  auto load_stage = [&](int stage, int kt) {
    T* sa = smem + stage * kStageElems;
    T* sb = sa + kTileElems;
    const int k0 = kt * kBK;
    if (TA) load_tile<kBK, kBM>(sa, A, p.lda, k0, p.K, m0, p.M, vecA);
    else load_tile<kBM, kBK>(sa, A, p.lda, m0, p.M, k0, p.K, vecA);
    if (TB) load_tile<kBN, kBK>(sb, B, p.ldb, n0, p.N, k0, p.K, vecB);
    else load_tile<kBK, kBN>(sb, B, p.ldb, k0, p.K, n0, p.N, vecB);
  };

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = (warp & 1) * 64, wn = (warp >> 1) * 32;  // warp's sub-tile in the block tile
  const int lr = lane & 7, lj = lane >> 3;                // ldmatrix: row lr of matrix lj

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  const int ktiles = (p.K + kBK - 1) / kBK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_stage(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 2>();  // this thread's copies of tile kt have landed
    __syncthreads();               // everyone's have; everyone is done with tile kt-1
    if (kt + kStages - 1 < ktiles) load_stage((kt + kStages - 1) % kStages, kt + kStages - 1);
    cp_async_commit();

    const T* sa = smem + (kt % kStages) * kStageElems;
    const T* sb = sa + kTileElems;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t af[4][4], bf[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        // Matrices 0..3: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (8-15, 8-15).
        const int m = wm + i * 16 + 8 * (lj & 1), k = kk + 8 * (lj >> 1);
        if (TA) ldmatrix_x4_trans(af[i], sa + (k + lr) * (kBM + kPad) + m);
        else ldmatrix_x4(af[i], sa + (m + lr) * (kBK + kPad) + k);
      }
#pragma unroll
      for (int j = 0; j < 4; j += 2) {
        // Matrices 0..3: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
        const int n = wn + j * 8 + 8 * (lj >> 1), k = kk + 8 * (lj & 1);
        uint32_t r[4];
        if (TB) ldmatrix_x4(r, sb + (n + lr) * (kBK + kPad) + k);
        else ldmatrix_x4_trans(r, sb + (k + lr) * (kBN + kPad) + n);
        bf[j][0] = r[0], bf[j][1] = r[1], bf[j + 1][0] = r[2], bf[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) MmaOp<T>::run(acc[i][j], af[i], bf[j]);
    }
  }
  cp_async_wait<0>();

  // Epilogue: stage the 128x128 f32 tile in shared memory (reusing the pipeline buffers),
  // then write it out row-contiguously.
  float* out = reinterpret_cast<float*>(vlk_smem);
  __syncthreads();  // every warp is done reading the last stage
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<float2*>(out + (wm + i * 16 + g + 8 * h) * kTcOutRow + wn + j * 8 + 2 * t) =
            make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
  __syncthreads();
  store_staged<kBM, kTcOutRow>(p, z, out, m0, n0);
}

template <class T>
__device__ __forceinline__ void gemm_tc_dispatch(const Args<T>& p, int transA, int transB) {
  if (transA) {
    if (transB) gemm_tc<T, true, true>(p);
    else gemm_tc<T, true, false>(p);
  } else {
    if (transB) gemm_tc<T, false, true>(p);
    else gemm_tc<T, false, false>(p);
  }
}

// ---- SIMT path (f32) -------------------------------------------------------------
constexpr int kSBK = 16, kSPad = 4;
constexpr int kSRow = kBM + kSPad;                    // smem row stride (floats), 16-byte multiple
constexpr int kSBuf = 2 * kSBK * kSRow;               // As then Bs
constexpr int kSimtSmemBytes = 2 * kSBuf * 4;         // two buffers: 33792
static_assert(kSimtSmemBytes == 33792, "documented shared memory size");
static_assert(64 * kSRow * 4 <= kSimtSmemBytes, "half of the epilogue fits in the buffers");
constexpr int kSPerThread = kSBK * kBM / kThreads;    // elements of each operand per thread: 8

// Element e (0..kSPerThread-1) of this thread's share of a k-tile of an operand whose tile
// is 128 (i: m or n) x 16 (k). KFAST: k is the contiguous global dimension (coalesced loads
// run along k), else i is.
template <bool KFAST> __device__ __forceinline__ void simt_coords(int e, int& i, int& k) {
  const int c = threadIdx.x + e * kThreads;
  if (KFAST) i = c / kSBK, k = c % kSBK;
  else i = c % kBM, k = c / kBM;
}

template <bool KFAST>
__device__ __forceinline__ void simt_fetch(float* r, const float* g, long long ld, int i0, int limit,
                                           int k0, int K) {
#pragma unroll
  for (int e = 0; e < kSPerThread; ++e) {
    int i, k;
    simt_coords<KFAST>(e, i, k);
    const bool ok = i0 + i < limit && k0 + k < K;
    r[e] = ok ? (KFAST ? g[(long long)(i0 + i) * ld + k0 + k] : g[(long long)(k0 + k) * ld + i0 + i])
              : 0.0f;
  }
}

template <bool KFAST> __device__ __forceinline__ void simt_store(float* s, const float* r) {
#pragma unroll
  for (int e = 0; e < kSPerThread; ++e) {
    int i, k;
    simt_coords<KFAST>(e, i, k);
    s[k * kSRow + i] = r[e];
  }
}

// A is k-fast when !TA (row-major M x K); B is k-fast when TB (N x K).
template <bool TA, bool TB> __device__ __forceinline__ void gemm_simt(const Args<float>& p) {
  float* smem = reinterpret_cast<float*>(vlk_smem);
  const long long z = blockIdx.z;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const float* A = p.A + z * p.strideA;
  const float* B = p.B + z * p.strideB;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

  float ra[kSPerThread], rb[kSPerThread];
  const int ktiles = (p.K + kSBK - 1) / kSBK;
  if (ktiles > 0) {
    simt_fetch<!TA>(ra, A, p.lda, m0, p.M, 0, p.K);
    simt_fetch<TB>(rb, B, p.ldb, n0, p.N, 0, p.K);
    simt_store<!TA>(smem, ra);
    simt_store<TB>(smem + kSBK * kSRow, rb);
  }
  __syncthreads();
  for (int kt = 0; kt < ktiles; ++kt) {
    const bool next = kt + 1 < ktiles;
    if (next) {
      simt_fetch<!TA>(ra, A, p.lda, m0, p.M, (kt + 1) * kSBK, p.K);
      simt_fetch<TB>(rb, B, p.ldb, n0, p.N, (kt + 1) * kSBK, p.K);
    }
    const float* as = smem + (kt & 1) * kSBuf;
    const float* bs = as + kSBK * kSRow;
#pragma unroll
    for (int k = 0; k < kSBK; ++k) {
      float a[8], b[8];
      const float4 a0 = *reinterpret_cast<const float4*>(as + k * kSRow + 4 * ty);
      const float4 a1 = *reinterpret_cast<const float4*>(as + k * kSRow + 64 + 4 * ty);
      const float4 b0 = *reinterpret_cast<const float4*>(bs + k * kSRow + 4 * tx);
      const float4 b1 = *reinterpret_cast<const float4*>(bs + k * kSRow + 64 + 4 * tx);
      a[0] = a0.x, a[1] = a0.y, a[2] = a0.z, a[3] = a0.w;
      a[4] = a1.x, a[5] = a1.y, a[6] = a1.z, a[7] = a1.w;
      b[0] = b0.x, b[1] = b0.y, b[2] = b0.z, b[3] = b0.w;
      b[4] = b1.x, b[5] = b1.y, b[6] = b1.z, b[7] = b1.w;
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (next) {
      float* nas = smem + ((kt + 1) & 1) * kSBuf;
      simt_store<!TA>(nas, ra);
      simt_store<TB>(nas + kSBK * kSRow, rb);
    }
    __syncthreads();
  }

  // Epilogue in two halves of 64 rows (rows 4ty.. then 64+4ty..), each staged in the smem
  // buffers (64 x kSRow floats = all of them) and written out row-contiguously. The
  // __syncthreads() that ended the last k-tile lets the first half overwrite the buffers.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (h) __syncthreads();  // the first half has been written out
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int jh = 0; jh < 2; ++jh)
        *reinterpret_cast<float4*>(smem + (4 * ty + i) * kSRow + 64 * jh + 4 * tx) =
            make_float4(acc[4 * h + i][4 * jh], acc[4 * h + i][4 * jh + 1], acc[4 * h + i][4 * jh + 2],
                        acc[4 * h + i][4 * jh + 3]);
    __syncthreads();
    store_staged<64, kSRow>(p, z, smem, m0 + 64 * h, n0);
  }
}

}  // namespace gemm
}  // namespace vlk

// ---- exported kernels ------------------------------------------------------------
#define VLK_GEMM_PARAMS(T)                                                                    \
  const T *__restrict__ A, const T *__restrict__ B, T *C, const T *bias, const T *residual,  \
      int M, int N, int K, long long lda, long long ldb, long long ldc, long long strideA,   \
      long long strideB, long long strideC, int transA, int transB, float alpha, int act
#define VLK_GEMM_ARGS \
  { A, B, C, bias, residual, M, N, K, lda, ldb, ldc, strideA, strideB, strideC, alpha, act }

// Tensor-core GEMM, bf16 in/out: see the top of the file. grid (ceil(N/128), ceil(M/128),
// batch), block 256, 81920 bytes of dynamic shared memory (opt-in attribute needed).
extern "C" __global__ void __launch_bounds__(256, 2) gemm_bf16(VLK_GEMM_PARAMS(__nv_bfloat16)) {
  const vlk::gemm::Args<__nv_bfloat16> p = VLK_GEMM_ARGS;
  vlk::gemm::gemm_tc_dispatch(p, transA, transB);
}
VLK_EXPORT(gemm_bf16)

// Tensor-core GEMM, f16 in/out: as gemm_bf16.
extern "C" __global__ void __launch_bounds__(256, 2) gemm_f16(VLK_GEMM_PARAMS(__half)) {
  const vlk::gemm::Args<__half> p = VLK_GEMM_ARGS;
  vlk::gemm::gemm_tc_dispatch(p, transA, transB);
}
VLK_EXPORT(gemm_f16)

// SIMT GEMM, f32: see the top of the file. grid (ceil(N/128), ceil(M/128), batch),
// block 256, 33792 bytes of dynamic shared memory.
extern "C" __global__ void __launch_bounds__(256) gemm_f32(VLK_GEMM_PARAMS(float)) {
  const vlk::gemm::Args<float> p = VLK_GEMM_ARGS;
  if (transA) {
    if (transB) vlk::gemm::gemm_simt<true, true>(p);
    else vlk::gemm::gemm_simt<true, false>(p);
  } else {
    if (transB) vlk::gemm::gemm_simt<false, true>(p);
    else vlk::gemm::gemm_simt<false, false>(p);
  }
}
VLK_EXPORT(gemm_f32)
