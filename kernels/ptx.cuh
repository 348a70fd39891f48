// The one header of inline PTX in vlk: tensor-core mma.sync, ldmatrix and
// cp.async as small device functions. Under VLK_EMU each has a CPU twin with
// the same documented semantics: mma and ldmatrix are warp collectives,
// cp.async is deferred until the cp.async.wait that covers it.
#pragma once
#include <stdint.h>

#ifdef VLK_EMU
// The emulator reports the caller's file:line in error messages.
#define VLK_PTX_SITE , const char* vlk_file = __builtin_FILE(), int vlk_line = __builtin_LINE()
#else
#define VLK_PTX_SITE
#endif

namespace vlk {

#ifdef VLK_EMU
namespace emu {
inline void mma(::vlk_emu::Op op, float* d, const uint32_t* a, const uint32_t* b, const float* c,
                const char* file, int line) {
  ::vlk_emu::Lane& l = ::vlk_emu::cur_thread->lane;
  for (int i = 0; i < 4; ++i) l.a[i] = a[i], l.c[i] = c[i];
  l.b[0] = b[0];
  l.b[1] = b[1];
  ::vlk_emu::collective(op, 0xffffffffu, file, line);
  std::memcpy(d, l.d, 16);
}
inline void ldmatrix(bool trans, int count, uint32_t* r, const void* row, const char* file, int line) {
  ::vlk_emu::Lane& l = ::vlk_emu::cur_thread->lane;
  l.ptr = row;
  l.arg = count;
  ::vlk_emu::collective(trans ? ::vlk_emu::Op::LdsmTrans : ::vlk_emu::Op::Ldsm, 0xffffffffu, file, line);
  for (int i = 0; i < count; ++i) r[i] = l.d[i];
}
}  // namespace emu
#else
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
#endif

// ---- mma.sync m16n8k16, f32 accumulate: d = a * b + c (d may alias c) -------
// Fragments of lane l (g = l / 4, t = l % 4; each 32-bit register holds two
// 16-bit elements, the lower-numbered one in the low half), per the PTX ISA:
//   A 16x16 (row): element i = 0..7 is A[g + 8*((i/2)%2)][2t + i%2 + 8*(i>=4)], in a[i/2]
//   B 16x8 (col):  element i = 0..3 is B[k = 2t + i%2 + 8*(i>=2)][n = g],      in b[i/2]
//   C, D 16x8 f32: c[i], d[i] (i = 0..3) are C[g + 8*(i>=2)][2t + i%2]
__device__ __forceinline__ void mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b,
                                                  const float* c VLK_PTX_SITE) {
#ifdef VLK_EMU
  emu::mma(::vlk_emu::Op::MmaBf16, d, a, b, c, vlk_file, vlk_line);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
        "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

__device__ __forceinline__ void mma_m16n8k16_f16(float* d, const uint32_t* a, const uint32_t* b,
                                                 const float* c VLK_PTX_SITE) {
#ifdef VLK_EMU
  emu::mma(::vlk_emu::Op::MmaF16, d, a, b, c, vlk_file, vlk_line);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
        "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

// ---- ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16 -----------------
// Lanes 8j..8j+7 pass the (16-byte aligned, shared) row addresses of matrix j;
// r[j] receives this lane's two elements of matrix j.
#ifdef VLK_EMU
#define VLK_LDMATRIX(NAME, N, TRANS, ASM_OUT, ...)                                      \
  __device__ __forceinline__ void NAME(uint32_t* r, const void* row VLK_PTX_SITE) {     \
    emu::ldmatrix(sizeof(TRANS) > 1, N, r, row, vlk_file, vlk_line);                    \
  }
#else
#define VLK_LDMATRIX(NAME, N, TRANS, ASM_OUT, ...)                                      \
  __device__ __forceinline__ void NAME(uint32_t* r, const void* row) {                  \
    asm volatile("ldmatrix.sync.aligned.m8n8.x" #N TRANS ".shared.b16 " ASM_OUT ", [%" #N "];\n" \
                 : __VA_ARGS__ : "r"(smem_addr(row)) : "memory");                       \
  }
#endif
VLK_LDMATRIX(ldmatrix_x1, 1, "", "{%0}", "=r"(r[0]))
VLK_LDMATRIX(ldmatrix_x2, 2, "", "{%0,%1}", "=r"(r[0]), "=r"(r[1]))
VLK_LDMATRIX(ldmatrix_x4, 4, "", "{%0,%1,%2,%3}", "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]))
VLK_LDMATRIX(ldmatrix_x1_trans, 1, ".trans", "{%0}", "=r"(r[0]))
VLK_LDMATRIX(ldmatrix_x2_trans, 2, ".trans", "{%0,%1}", "=r"(r[0]), "=r"(r[1]))
VLK_LDMATRIX(ldmatrix_x4_trans, 4, ".trans", "{%0,%1,%2,%3}", "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]))
#undef VLK_LDMATRIX

// ---- cp.async global -> shared ----------------------------------------------
// 16 bytes, cached in L2 only (.cg). Both addresses 16-byte aligned.
__device__ __forceinline__ void cp_async_cg16(void* smem, const void* gmem VLK_PTX_SITE) {
#ifdef VLK_EMU
  ::vlk_emu::cp_async(smem, gmem, 16, 16, vlk_file, vlk_line);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem) : "memory");
#endif
}

// As cp_async_cg16, but reads only src_bytes (0..16) and zero-fills the rest:
// src_bytes = 0 loads zeros for out-of-range tiles without touching gmem.
__device__ __forceinline__ void cp_async_cg16_zfill(void* smem, const void* gmem, int src_bytes VLK_PTX_SITE) {
#ifdef VLK_EMU
  ::vlk_emu::cp_async(smem, gmem, 16, src_bytes, vlk_file, vlk_line);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(src_bytes) : "memory");
#endif
}

// BYTES (4, 8 or 16) cached at all levels (.ca); addresses BYTES-aligned.
template <int BYTES>
__device__ __forceinline__ void cp_async_ca(void* smem, const void* gmem VLK_PTX_SITE) {
  static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async.ca copies 4, 8 or 16 bytes");
#ifdef VLK_EMU
  ::vlk_emu::cp_async(smem, gmem, BYTES, BYTES, vlk_file, vlk_line);
#else
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "n"(BYTES) : "memory");
#endif
}

// Closes the group of this thread's cp.async issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#ifdef VLK_EMU
  ::vlk_emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed groups are still in
// flight. Other threads' copies need a __syncthreads() after this.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef VLK_EMU
  ::vlk_emu::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

}  // namespace vlk

#undef VLK_PTX_SITE
