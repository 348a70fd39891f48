// Emulated __half / __nv_bfloat16 (and their pair types) for the CPU build of
// the kernels. Storage and conversions match CUDA's cuda_fp16.h / cuda_bf16.h:
// float -> 16-bit rounds to nearest even, NaN becomes the canonical 0x7fff, and
// arithmetic is done in float then rounded once (exact for +,-,*,/ because
// float has more than twice the precision of either 16-bit type).
#pragma once
// Needs float2 (defined by cuda_emu.h before including this file).
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace vlk_emu {

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline uint16_t float_to_half_bits(float f) {
  uint32_t x = f32_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return 0x7fff;                 // NaN
  if (x >= (127u + 16) << 23) return sign | 0x7c00u;  // >= 65536: inf (65520..65536 rounds up below)
  if (x < 113u << 23) {
    // Result is subnormal or zero: adding 0.5 aligns the half's 2^-24 ulp with
    // the float ulp, so the FPU does the round-to-nearest-even for us.
    const uint32_t magic = (127u - 15 + 23 - 10 + 1) << 23;
    return sign | (f32_bits(bits_f32(x) + bits_f32(magic)) - magic);
  }
  const uint32_t odd = (x >> 13) & 1u;                // ties go to even
  x += ((15u - 127u) << 23) + 0xfffu + odd;
  return sign | (x >> 13);
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = float(mant) * (1.0f / 16777216.0f);  // mant * 2^-24, exact
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

inline uint16_t float_to_bf16_bits(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // NaN
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_bits_to_float(uint16_t b) { return bits_f32(uint32_t(b) << 16); }

}  // namespace vlk_emu

// Defines one 16-bit float type T whose value converts through float with
// TO/FROM; the operator set mirrors what CUDA's headers provide.
#define VLK_EMU_DEFINE_F16(T, TO, FROM)                                              \
  struct T {                                                                         \
    unsigned short __x;                                                              \
    T() = default;                                                                   \
    template <class A, class = std::enable_if_t<std::is_arithmetic<A>::value>>       \
    T(A v) : __x(::vlk_emu::TO(float(v))) {}                                         \
    operator float() const { return ::vlk_emu::FROM(__x); }                          \
    T& operator+=(T o) { return *this = T(float(*this) + float(o)); }                \
    T& operator-=(T o) { return *this = T(float(*this) - float(o)); }                \
    T& operator*=(T o) { return *this = T(float(*this) * float(o)); }                \
    T& operator/=(T o) { return *this = T(float(*this) / float(o)); }                \
  };                                                                                 \
  inline T operator+(T a, T b) { return T(float(a) + float(b)); }                    \
  inline T operator-(T a, T b) { return T(float(a) - float(b)); }                    \
  inline T operator*(T a, T b) { return T(float(a) * float(b)); }                    \
  inline T operator/(T a, T b) { return T(float(a) / float(b)); }                    \
  inline T operator-(T a) { T r; r.__x = a.__x ^ 0x8000u; return r; }               \
  inline bool operator==(T a, T b) { return float(a) == float(b); }                  \
  inline bool operator!=(T a, T b) { return float(a) != float(b); }                  \
  inline bool operator<(T a, T b) { return float(a) < float(b); }                    \
  inline bool operator>(T a, T b) { return float(a) > float(b); }                    \
  inline bool operator<=(T a, T b) { return float(a) <= float(b); }                  \
  inline bool operator>=(T a, T b) { return float(a) >= float(b); }

VLK_EMU_DEFINE_F16(__half, float_to_half_bits, half_bits_to_float)
VLK_EMU_DEFINE_F16(__nv_bfloat16, float_to_bf16_bits, bf16_bits_to_float)
#undef VLK_EMU_DEFINE_F16

struct alignas(4) __half2 { __half x, y; };
struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
typedef __half half;
typedef __half2 half2;
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return float(b); }

inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 b; b.__x = u; return b; }

inline __half __hadd(__half a, __half b) { return a + b; }
inline __half __hsub(__half a, __half b) { return a - b; }
inline __half __hmul(__half a, __half b) { return a * b; }
inline __half __hdiv(__half a, __half b) { return a / b; }
inline __half __hneg(__half a) { return -a; }
// fma: the product of two 16-bit values is exact in float; the sum is done in
// double so that rounding to 16 bits is (almost always) the only rounding.
inline __half __hfma(__half a, __half b, __half c) {
  return __half(float(double(float(a)) * float(b) + float(c)));
}
inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return a + b; }
inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return a * b; }
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return __nv_bfloat16(float(double(float(a)) * float(b) + float(c)));
}

inline __half2 __halves2half2(__half a, __half b) { return {a, b}; }
inline __half2 __floats2half2_rn(float a, float b) { return {__half(a), __half(b)}; }
inline __half2 __float2half2_rn(float a) { return {__half(a), __half(a)}; }
inline __half2 __float22half2_rn(float2 f) { return {__half(f.x), __half(f.y)}; }
inline float2 __half22float2(__half2 h) { return {float(h.x), float(h.y)}; }
inline float __low2float(__half2 h) { return float(h.x); }
inline float __high2float(__half2 h) { return float(h.y); }
inline __half2 __hadd2(__half2 a, __half2 b) { return {a.x + b.x, a.y + b.y}; }
inline __half2 __hmul2(__half2 a, __half2 b) { return {a.x * b.x, a.y * b.y}; }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return {a, b}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__nv_bfloat16(a), __nv_bfloat16(b)}; }
inline __nv_bfloat162 __float2bfloat162_rn(float a) { return {__nv_bfloat16(a), __nv_bfloat16(a)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return {__nv_bfloat16(f.x), __nv_bfloat16(f.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {float(h.x), float(h.y)}; }
inline float __low2float(__nv_bfloat162 h) { return float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return float(h.y); }
inline __nv_bfloat162 __hadd2(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.x + b.x, a.y + b.y}; }
inline __nv_bfloat162 __hmul2(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.x * b.x, a.y * b.y}; }
