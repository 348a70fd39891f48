// CUDA execution model on the CPU: force-included (g++ -include) when a .cu
// file is compiled as C++17 with -DVLK_EMU, so the same kernel source runs in
// `cargo test` on machines without a GPU.
//
// C ABI (all symbols extern "C"; vlk_dim3 is { uint32_t x, y, z } passed by value):
//
//   int   vlk_emu_launch_<kernel>(vlk_dim3 grid, vlk_dim3 block, size_t shmem_bytes,
//                                 void** args, char* err, size_t errlen);
//         One per `VLK_EXPORT(kernel)` line. args[i] points at the value of the
//         kernel's i-th parameter (exactly cuLaunchKernel's kernelParams). Runs
//         the whole grid and returns when it is done. 0 = success; 1 = the kernel
//         failed (divergent barrier, collective mismatch, bad memory access, ...);
//         2 = invalid launch configuration. On failure err receives a
//         NUL-terminated message naming the kernel, block (x,y,z) and thread.
//   void* vlk_emu_alloc(size_t bytes);   emulated device memory, 256-byte aligned (16
//                                        when checked), filled with 0xFF bytes (NaN
//                                        as f32/f16/bf16); NULL when out of memory.
//   void  vlk_emu_free(void* p);
//   void  vlk_emu_set_check(int on);     checked allocations from now on (also
//                                        env VLK_EMU_CHECK=1): the buffer's end
//                                        (rounded up to 16 bytes) touches a
//                                        PROT_NONE page, so out-of-bounds accesses
//                                        fail the launch with a message.
//
// Environment: VLK_EMU_THREADS (worker threads, default: hardware concurrency, <= 16),
// VLK_EMU_STACK_KB (fiber stack size, default 128), VLK_EMU_CHECK,
// VLK_EMU_REVERSE=1 (threads of a block run in descending order: exposes other
// missing barriers than the default ascending order).
// The rules kernels must follow are in kernels/emu/README.md.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <tuple>
#include <type_traits>
#include <utility>

#include "runtime.h"

// ---- Keywords --------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One OS thread runs one block at a time, so thread-local storage is block
// storage. At block scope thread_local implies static; `extern __shared__ T
// vlk_smem[];` names the per-thread dynamic shared memory buffer (runtime.cpp).
#define __shared__ thread_local

// ---- Built-in variables ----------------------------------------------------
#define threadIdx (static_cast<const uint3&>(::vlk_emu::cur_thread->tid))
#define blockIdx (static_cast<const uint3&>(::vlk_emu::cur_block->idx))
#define blockDim (static_cast<const dim3&>(::vlk_emu::cur_block->dim))
#define gridDim (static_cast<const dim3&>(::vlk_emu::cur_block->grid))
static constexpr int warpSize = 32;

// ---- Vector types ----------------------------------------------------------
struct alignas(8) float2 { float x, y; };
struct float3 { float x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

#include "fp16.h"

// ---- Math ------------------------------------------------------------------
using std::isinf;
using std::isnan;
using std::isfinite;
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(unsigned(x)) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
// CUDA's global min/max: floating point as fminf/fmaxf (NaN-ignoring), other
// argument pairs in their common type (min(int, unsigned) is unsigned).
template <class A, class B> inline std::common_type_t<A, B> min(A a, B b) {
  using T = std::common_type_t<A, B>;
  return T(b) < T(a) ? T(b) : T(a);
}
template <class A, class B> inline std::common_type_t<A, B> max(A a, B b) {
  using T = std::common_type_t<A, B>;
  return T(a) < T(b) ? T(b) : T(a);
}
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
template <class T> inline T __ldg(const T* p) { return *p; }

// ---- Synchronisation -------------------------------------------------------
// The call site (file, line) identifies the barrier: threads waiting at
// different __syncthreads() calls are a divergence error.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::vlk_emu::syncthreads(file, line, 0);
}
inline int __syncthreads_count(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::vlk_emu::syncthreads(file, line, p);
}
inline int __syncthreads_and(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::vlk_emu::syncthreads(file, line, !p) == 0;
}
inline int __syncthreads_or(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::vlk_emu::syncthreads(file, line, p) != 0;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// ---- Warp intrinsics -------------------------------------------------------
namespace vlk_emu {
template <class T> inline T shuffle(Op op, unsigned mask, T v, int arg, int width,
                                    const char* file, int line) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle type");
  Lane& l = cur_thread->lane;
  l.val = 0;
  std::memcpy(&l.val, &v, sizeof(T));
  l.arg = arg;
  l.width = width;
  collective(op, mask, file, line);
  T r;
  std::memcpy(&r, &cur_thread->lane.out, sizeof(T));
  return r;
}
inline unsigned vote(Op op, unsigned mask, int pred, const char* file, int line) {
  cur_thread->lane.val = pred != 0;
  collective(op, mask, file, line);
  return unsigned(cur_thread->lane.out);
}
}  // namespace vlk_emu

#define VLK_EMU_SITE const char* file = __builtin_FILE(), int line = __builtin_LINE()
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32, VLK_EMU_SITE) {
  return ::vlk_emu::shuffle(::vlk_emu::Op::ShflIdx, mask, v, src, width, file, line);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32, VLK_EMU_SITE) {
  return ::vlk_emu::shuffle(::vlk_emu::Op::ShflUp, mask, v, int(d), width, file, line);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32, VLK_EMU_SITE) {
  return ::vlk_emu::shuffle(::vlk_emu::Op::ShflDown, mask, v, int(d), width, file, line);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lm, int width = 32, VLK_EMU_SITE) {
  return ::vlk_emu::shuffle(::vlk_emu::Op::ShflXor, mask, v, lm, width, file, line);
}
inline unsigned __ballot_sync(unsigned mask, int p, VLK_EMU_SITE) {
  return ::vlk_emu::vote(::vlk_emu::Op::Ballot, mask, p, file, line);
}
inline int __any_sync(unsigned mask, int p, VLK_EMU_SITE) {
  return int(::vlk_emu::vote(::vlk_emu::Op::Any, mask, p, file, line));
}
inline int __all_sync(unsigned mask, int p, VLK_EMU_SITE) {
  return int(::vlk_emu::vote(::vlk_emu::Op::All, mask, p, file, line));
}
inline void __syncwarp(unsigned mask = 0xffffffffu, VLK_EMU_SITE) {
  ::vlk_emu::collective(::vlk_emu::Op::SyncWarp, mask, file, line);
}
// Fibers never run in lock step: the lanes of the warp that have not exited.
inline unsigned __activemask() { return ::vlk_emu::active_mask(); }
#undef VLK_EMU_SITE

// ---- Atomics (really atomic: blocks run on several OS threads) --------------
#define VLK_EMU_ATOMIC_INT(T)                                                                  \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }         \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }         \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }      \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }         \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }           \
  inline T atomicCAS(T* p, T cmp, T v) {                                                       \
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);        \
    return cmp;                                                                                \
  }                                                                                            \
  inline T atomicMax(T* p, T v) {                                                              \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                              \
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED,         \
                                                   __ATOMIC_RELAXED)) {}                       \
    return old;                                                                                \
  }                                                                                            \
  inline T atomicMin(T* p, T v) {                                                              \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                              \
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED,         \
                                                   __ATOMIC_RELAXED)) {}                       \
    return old;                                                                                \
  }
VLK_EMU_ATOMIC_INT(int)
VLK_EMU_ATOMIC_INT(unsigned)
VLK_EMU_ATOMIC_INT(unsigned long long)
#undef VLK_EMU_ATOMIC_INT

namespace vlk_emu {
// Floating-point read-modify-write as a compare-exchange loop on the bits.
template <class F, class U, class Fn> inline F atomic_fp(F* p, Fn fn) {
  U* u = reinterpret_cast<U*>(p);
  U old = __atomic_load_n(u, __ATOMIC_RELAXED), next;
  F f;
  do {
    std::memcpy(&f, &old, sizeof f);
    const F n = fn(f);
    std::memcpy(&next, &n, sizeof next);
  } while (!__atomic_compare_exchange_n(u, &old, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return f;
}
}  // namespace vlk_emu
inline float atomicAdd(float* p, float v) {
  return ::vlk_emu::atomic_fp<float, uint32_t>(p, [v](float x) { return x + v; });
}
inline double atomicAdd(double* p, double v) {
  return ::vlk_emu::atomic_fp<double, uint64_t>(p, [v](double x) { return x + v; });
}
inline float atomicExch(float* p, float v) {
  return ::vlk_emu::atomic_fp<float, uint32_t>(p, [v](float) { return v; });
}

// ---- Launch ABI ------------------------------------------------------------
namespace vlk_emu {
// Parameters are copied out of args (as cuLaunchKernel does) into a tuple that
// every emulated thread passes, by value, to the kernel.
template <class... P, size_t... I>
int launch_with(const char* name, void (*kernel)(P...), vlk_dim3 grid, vlk_dim3 block,
                size_t shmem, void** args, char* err, size_t errlen, std::index_sequence<I...>) {
  using Params = std::tuple<std::decay_t<P>...>;
  struct Call { void (*kernel)(P...); Params params; };
  Call call{kernel, Params(*static_cast<std::decay_t<P>*>(args[I])...)};
  auto body = [](void* c) {
    Call* k = static_cast<Call*>(c);
    k->kernel(std::get<I>(k->params)...);
  };
  return launch(name, body, &call, grid, block, shmem, err, errlen);
}
template <class... P>
int launch_kernel(const char* name, void (*kernel)(P...), vlk_dim3 grid, vlk_dim3 block,
                  size_t shmem, void** args, char* err, size_t errlen) {
  return launch_with(name, kernel, grid, block, shmem, args, err, errlen,
                     std::index_sequence_for<P...>{});
}
}  // namespace vlk_emu

#define VLK_EXPORT(name)                                                                   \
  extern "C" __attribute__((visibility("default"), used)) int vlk_emu_launch_##name(       \
      vlk_dim3 grid, vlk_dim3 block, size_t shmem, void** args, char* err, size_t errlen) { \
    return ::vlk_emu::launch_kernel(#name, &name, grid, block, shmem, args, err, errlen);  \
  }

extern "C" {
void* vlk_emu_alloc(size_t bytes);
void vlk_emu_free(void* p);
void vlk_emu_set_check(int on);
}
