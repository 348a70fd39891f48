//! Vectorised math over slices: exp, the one transcendental on the hot paths of softmax,
//! attention, cross-entropy and the sigmoid-based activations.
//!
//! exp(x) = 2^n e^r with n = round(x log2 e) and r = x - n ln 2 (ln 2 split in two parts so r
//! is exact), e^r from Cephes' degree-6 polynomial on [-ln2/2, ln2/2] (relative error below
//! 2e-7), 2^n built in the exponent bits. No calls and no branches, so the loop vectorises; the
//! slice loops here are compiled three times (AVX-512, AVX2+FMA, baseline; `multiversion!`) and
//! picked at run time. Inputs at or below -88 give 0 (so -inf gives exactly 0), above 88.37
//! they saturate, NaN stays NaN.
//!
//! The slice loops take 16 exps at a time (`Exp16`): lane loops in the baseline build,
//! intrinsics in the others. Their arguments are x - max or x - lse, at most 0, so their exp
//! (`Exp16::exp_shifted16`) skips the upper clamp and reduces the range in one FMA (relative
//! error 1e-7 on [-10, 0], 3e-7 at -87).
//! - AVX2+FMA (`Avx2Fma`): the scalar steps above on two 8-lane halves. With two constants
//!   fewer than the general exp, LLVM keeps the running sum in a register: logsumexp in L2
//!   0.46 -> 0.38 ns an element on one core of the EPYC VM, softmax 0.85 -> 0.69.
//! - AVX-512 (`Scalef`): 2^n applied by vscalefps, which rounds what underflows to the
//!   subnormals and 0 (no exponent-bit arithmetic), and a degree-6 polynomial for e^r fitted
//!   here (relative error 7e-8 in f32): 12 vector instructions from x - max to the sum, against
//!   19 through the lane loop; with prefetching into L2, softmax-xent forward 2048x32768 went
//!   from 12.5-17.8 to 8.5-9.5 ms on the EPYC VM. Its results below -88 are the subnormals,
//!   not 0; -inf still gives 0.

use super::float::{filled, Float};
use super::simd::{level as simd_level, SimdLevel};
use std::any::TypeId;
use std::mem::MaybeUninit;

/// How exp evaluates `a * b + c`. Rust never contracts a multiply and an add into an FMA, and
/// `f32::mul_add` is a libm call per element in code built without FMA, so the baseline build
/// of the slice loops is instantiated with `Separate` (the AVX2+FMA build uses `Avx2Fma`, the
/// AVX-512 one `Scalef`).
pub trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// One rounding per multiply-add (libm's fmaf outside an FMA build): the lane-loop reference
/// that `Avx2Fma`'s intrinsics match bit for bit.
#[cfg(test)]
pub enum Fused {}

/// A multiply, then an add.
pub enum Separate {}

#[cfg(test)]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// How the slice loops take exp of 16 lanes at a time: lane by lane with the multiply-adds M
/// says (`Separate`; the compiler vectorises the lanes), or with AVX2+FMA or AVX-512 intrinsics
/// (`Avx2Fma`, `Scalef`).
pub trait Exp16 {
    /// The running sum the slice loops keep, as the build's registers hold it: a zmm, a ymm
    /// (both halves of each block added into it) for AVX2, 16 lanes for the baseline. The AVX2
    /// build's sum went through the stack (a store and a load every add) while it was an
    /// [f32; 16] the intrinsics transmuted, and until its exp needed fewer constants.
    type Sum: Copy;

    fn zero() -> Self::Sum;

    /// acc + v, lane by lane.
    fn add16(acc: Self::Sum, v: [f32; 16]) -> Self::Sum;

    /// The sum of the lanes.
    fn total(acc: Self::Sum) -> f32;

    fn exp16(x: [f32; 16]) -> [f32; 16];

    /// exp(x - shift) of a block of 16 lanes, where shift is at least every x (a max, or a
    /// log-sum-exp): the arguments are at most 0, which lets `Scalef` skip a clamp and an
    /// instruction of the range reduction.
    #[inline(always)]
    fn exp_shifted16(x: &[f32], shift: f32) -> [f32; 16] {
        Self::exp16(shifted(x, shift))
    }

    /// acc + exp(x - shift), lane by lane, with shift as in `exp_shifted16`.
    #[inline(always)]
    fn add_exp16(acc: Self::Sum, x: &[f32; 16], shift: f32) -> Self::Sum {
        Self::add16(acc, Self::exp_shifted16(x, shift))
    }

    #[inline(always)]
    fn exp1(x: f32) -> f32 {
        Self::exp16([x; 16])[0]
    }
}

impl<M: MulAdd> Exp16 for M {
    type Sum = [f32; 16];

    #[inline(always)]
    fn zero() -> [f32; 16] {
        [0.0; 16]
    }

    #[inline(always)]
    fn add16(mut acc: [f32; 16], v: [f32; 16]) -> [f32; 16] {
        for (a, v) in acc.iter_mut().zip(v) {
            *a += v;
        }
        acc
    }

    #[inline(always)]
    fn total(acc: [f32; 16]) -> f32 {
        acc.iter().sum()
    }

    #[inline(always)]
    fn exp16(x: [f32; 16]) -> [f32; 16] {
        x.map(exp_with::<M>)
    }

    /// One lane loop, which the compiler vectorises whole.
    #[inline(always)]
    fn add_exp16(mut acc: [f32; 16], x: &[f32; 16], shift: f32) -> [f32; 16] {
        for (a, &x) in acc.iter_mut().zip(x) {
            *a += exp_with::<M>(x - shift);
        }
        acc
    }
}

/// 16 f32 lanes in one AVX-512 register (plain lanes off x86-64, where nothing runs it).
#[cfg(target_arch = "x86_64")]
type Zmm = std::arch::x86_64::__m512;
#[cfg(not(target_arch = "x86_64"))]
type Zmm = [f32; 16];

/// 16 f32 lanes in two AVX registers.
#[cfg(target_arch = "x86_64")]
type YmmPair = [std::arch::x86_64::__m256; 2];
#[cfg(not(target_arch = "x86_64"))]
type YmmPair = [f32; 16];

/// 8 f32 lanes in one AVX register.
#[cfg(target_arch = "x86_64")]
type Ymm = std::arch::x86_64::__m256;
#[cfg(not(target_arch = "x86_64"))]
type Ymm = [f32; 8];

/// The same f32 lanes as another type of the same size (lanes, a zmm, a ymm, two ymm): every
/// bit pattern is valid for each.
#[inline(always)]
fn lanes_as<A: Copy, B: Copy>(a: A) -> B {
    const { assert!(std::mem::size_of::<A>() == std::mem::size_of::<B>()) };
    // SAFETY: A and B are f32 lanes of the same size (checked above), valid for any bits.
    unsafe { std::mem::transmute_copy(&a) }
}

/// exp by AVX-512 intrinsics (`x86::exp16`). Only the AVX-512 arm of `multiversion!` names it,
/// after the features were detected.
pub enum Scalef {}

impl Scalef {
    /// x86::exp16 over an array of lanes.
    #[inline(always)]
    fn exp_lanes<const AT_MOST_0: bool>(x: [f32; 16]) -> [f32; 16] {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Scalef runs only where AVX-512F was detected (see above).
        unsafe {
            lanes_as(x86::exp16::<AT_MOST_0>(lanes_as(x)))
        }
        #[cfg(not(target_arch = "x86_64"))]
        x.map(exp_with::<Separate>)
    }
}

impl Exp16 for Scalef {
    type Sum = Zmm;

    #[inline(always)]
    fn zero() -> Zmm {
        lanes_as([0f32; 16])
    }

    #[inline(always)]
    fn add16(acc: Zmm, v: [f32; 16]) -> Zmm {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in exp_lanes.
        unsafe {
            std::arch::x86_64::_mm512_add_ps(acc, lanes_as(v))
        }
        #[cfg(not(target_arch = "x86_64"))]
        Separate::add16(acc, v)
    }

    #[inline(always)]
    fn total(acc: Zmm) -> f32 {
        lanes_as::<Zmm, [f32; 16]>(acc).iter().sum()
    }

    #[inline(always)]
    fn exp16(x: [f32; 16]) -> [f32; 16] {
        Self::exp_lanes::<false>(x)
    }

    #[inline(always)]
    fn exp_shifted16(x: &[f32], shift: f32) -> [f32; 16] {
        Self::exp_lanes::<true>(shifted(x, shift))
    }
}

/// exp by AVX2+FMA intrinsics (`x86::exp8`, two 8-lane halves): the same operations as
/// `exp_with::<Fused>`, so the same bits. Only the AVX2 arm of `multiversion!` names it, after
/// the features were detected. Through the lane loop (`Fused`), that build kept logsumexp's
/// accumulators on the stack and reloaded constants: 0.45 ns an element in L2, against 0.22
/// with AVX-512.
pub enum Avx2Fma {}

impl Exp16 for Avx2Fma {
    /// One register: the two halves of a block are added first (with two accumulators,
    /// LLVM still spilled them, short of registers for the exps' constants).
    type Sum = Ymm;

    #[inline(always)]
    fn zero() -> Ymm {
        lanes_as([0f32; 8])
    }

    #[inline(always)]
    fn add16(acc: Ymm, v: [f32; 16]) -> Ymm {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2Fma runs only where AVX2 and FMA were detected (see above).
        unsafe {
            use std::arch::x86_64::_mm256_add_ps;
            let [lo, hi]: YmmPair = lanes_as(v);
            _mm256_add_ps(acc, _mm256_add_ps(lo, hi))
        }
        #[cfg(not(target_arch = "x86_64"))]
        std::array::from_fn(|i| acc[i] + v[i] + v[i + 8])
    }

    #[inline(always)]
    fn total(acc: Ymm) -> f32 {
        lanes_as::<Ymm, [f32; 8]>(acc).iter().sum()
    }

    #[inline(always)]
    fn exp16(x: [f32; 16]) -> [f32; 16] {
        Self::exp_lanes::<false>(x)
    }

    #[inline(always)]
    fn exp_shifted16(x: &[f32], shift: f32) -> [f32; 16] {
        Self::exp_lanes::<true>(shifted(x, shift))
    }
}

impl Avx2Fma {
    /// x86::exp8 over an array of lanes, a half at a time.
    #[inline(always)]
    fn exp_lanes<const AT_MOST_0: bool>(x: [f32; 16]) -> [f32; 16] {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2Fma runs only where AVX2 and FMA were detected (see above).
        unsafe {
            let [lo, hi]: YmmPair = lanes_as(x);
            lanes_as([x86::exp8::<AT_MOST_0>(lo), x86::exp8::<AT_MOST_0>(hi)])
        }
        #[cfg(not(target_arch = "x86_64"))]
        x.map(exp_with::<Separate>)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// exp of 8 lanes, step for step as `exp_with::<Fused>` (see there): clamp to
    /// [-88, 88.38], n by adding 1.5 * 2^23, r = x - n ln 2 in two parts, Cephes' polynomial,
    /// 2^n built in the exponent bits. `AT_MOST_0` as for `exp16`: no upper clamp and r in one
    /// FMA, two constants fewer (with all of them, LLVM spilled logsumexp's accumulator).
    ///
    /// # Safety
    /// AVX2 and FMA present.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn exp8<const AT_MOST_0: bool>(x: __m256) -> __m256 {
        let v = _mm256_set1_ps;
        let round = v(12_582_912.0);
        let c = _mm256_max_ps(v(-88.0), x);
        let c = if AT_MOST_0 { c } else { _mm256_min_ps(v(88.376_26), c) };
        let t = _mm256_fmadd_ps(c, v(std::f32::consts::LOG2_E), round);
        let n = _mm256_sub_ps(t, round);
        let r = if AT_MOST_0 {
            _mm256_fnmadd_ps(n, v(std::f32::consts::LN_2), c)
        } else {
            _mm256_fnmadd_ps(n, v(-2.121_944_4e-4), _mm256_fnmadd_ps(n, v(0.693_359_4), c))
        };
        let mut p = v(1.987_569_2e-4);
        for k in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
            p = _mm256_fmadd_ps(p, r, v(k));
        }
        let e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), v(1.0));
        let bias = _mm256_set1_epi32(127 - 12_582_912f32.to_bits() as i32);
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_castps_si256(t), bias));
        _mm256_mul_ps(e, _mm256_castsi256_ps(scale))
    }

    /// exp of 16 lanes: n = round(x log2 e), r = x - n ln 2, e^r by a degree-6 polynomial
    /// (least-squares fit for relative error on [-ln2/2, ln2/2], iterated to the minimax: 2e-9
    /// in exact arithmetic, 7e-8 in f32 Horner), then scalef(e^r, n) = e^r 2^n, which rounds to
    /// the subnormals and flushes to 0 below them. Clamped below at -104 first, so -inf gives 0;
    /// max(lo, x) returns x when it is NaN (the second operand), so NaN stays NaN.
    ///
    /// Any x: also clamped above at 88.38 (+inf saturates), and ln 2 taken in two parts, so r is
    /// exact (relative error 9e-8 over the whole range). `AT_MOST_0` (the arguments of the slice
    /// loops, x - max or x - lse): no upper clamp, and r = x - n ln 2 in one FMA with ln 2 in
    /// f32, whose error grows with n: 1e-7 on [-10, 0], 3e-7 at -87. Two instructions fewer
    /// (12 from x - max to the sum): logsumexp 8% faster in L2.
    ///
    /// # Safety
    /// AVX-512F present.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn exp16<const AT_MOST_0: bool>(x: __m512) -> __m512 {
        const C: [f32; 7] = [1.0, 1.0, 0.499_999_9, 0.166_664_08, 0.041_668_218, 0.008_375_746, 0.001_384_025];
        let v = _mm512_set1_ps;
        let x = _mm512_max_ps(v(-104.0), x);
        let x = if AT_MOST_0 { x } else { _mm512_min_ps(v(88.376_26), x) };
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, v(std::f32::consts::LOG2_E)));
        let r = if AT_MOST_0 {
            _mm512_fnmadd_ps(n, v(std::f32::consts::LN_2), x)
        } else {
            _mm512_fnmadd_ps(n, v(-2.121_944_4e-4), _mm512_fnmadd_ps(n, v(0.693_359_4), x))
        };
        let mut p = v(C[6]);
        for &c in C[..6].iter().rev() {
            p = _mm512_fmadd_ps(p, r, v(c));
        }
        _mm512_scalef_ps(p, n)
    }
}

/// exp for one f32; `Float::exp` for f32 is this, so any loop over it vectorises.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_with::<Separate>(x)
}

/// exp with its multiply-adds evaluated as M says. Fused, logsumexp's loop built for AVX-512
/// spent 19 instructions an exp (27 with separate multiply-adds and the selects for small inputs
/// and NaN); that build now uses `Scalef`, and the AVX2+FMA one `Avx2Fma`.
#[inline(always)]
fn exp_with<M: MulAdd>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // At -88, n = -127: the exponent field of 2^n is 0, so 2^n is 0 and so is the result. No
    // select is needed for the inputs below, and none for NaN: the clamp keeps a NaN, and every
    // step after it carries it.
    const LO: f32 = -88.0;
    const HI: f32 = 88.376_26;
    let c = x.clamp(LO, HI);
    let t = M::mul_add(c, LOG2E, ROUND);
    let n = t - ROUND;
    let r = M::mul_add(-n, LN2_LO, M::mul_add(-n, LN2_HI, c));
    let mut p = 1.987_569_2e-4f32;
    p = M::mul_add(p, r, 1.398_199_9e-3);
    p = M::mul_add(p, r, 8.333_452e-3);
    p = M::mul_add(p, r, 4.166_579_6e-2);
    p = M::mul_add(p, r, 1.666_666_5e-1);
    p = M::mul_add(p, r, 0.5);
    let e = M::mul_add(p, r * r, r) + 1.0;
    let scale = f32::from_bits(((t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23) as u32);
    e * scale
}

/// tanh for one f32, branch-free so loops over it vectorise: an odd Taylor polynomial to x^9
/// below |x| = 1/8 (truncation under 1e-12), else 1 - 2 / (exp(2|x|) + 1) (cancellation under
/// 6e-8 / |x|; relative error below 7e-7 everywhere); the sign is restored at the end.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let a2 = a * a;
    let series = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0 + a2 * (62.0 / 2835.0)))));
    let via_exp = 1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0);
    let t = if a < 0.125 { series } else { via_exp };
    if x.is_nan() {
        x
    } else {
        t.copysign(x)
    }
}

/// The last (under 16) elements of a row as one more 16-lane block, padded with -inf so that
/// exp gives 0 there: a scalar tail of up to 15 exps cost as much as the vector loop on
/// attention's 77-key rows.
#[inline(always)]
fn tail_block(tail: &[f32]) -> [f32; 16] {
    let mut block = [f32::NEG_INFINITY; 16];
    block[..tail.len()].copy_from_slice(tail);
    block
}

/// The lanes of a block (16 elements, or fewer), less shift.
#[inline(always)]
fn shifted(block: &[f32], shift: f32) -> [f32; 16] {
    let mut v = [0f32; 16];
    for (v, &x) in v.iter_mut().zip(block) {
        *v = x - shift;
    }
    v
}

/// xs[i] = exp(xs[i] - shift); returns the sum of the results.
#[inline(always)]
fn exp_shifted_sum_f32<E: Exp16>(xs: &mut [f32], shift: f32) -> f32 {
    let mut acc = E::zero();
    let mut chunks = xs.chunks_exact_mut(16);
    for c in &mut chunks {
        let e = E::exp_shifted16(c, shift);
        c.copy_from_slice(&e);
        acc = E::add16(acc, e);
    }
    let tail = chunks.into_remainder();
    let e = E::exp_shifted16(&tail_block(tail), shift);
    tail.copy_from_slice(&e[..tail.len()]);
    E::total(E::add16(acc, e))
}

/// Asks for the cache line holding `p` (any address: a prefetch never faults), into L2. L2 keeps
/// more misses in flight than L1: on the EPYC VM, prefetching into L1 instead left softmax-xent
/// forward at 10-12 ms against 8-9 (2048x32768) and layer norm backward at 17-20 against 14-15
/// (32768x1024).
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching has no architectural effect and accepts any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p as *const i8)
    }
}

/// Asks for the `len` elements from `p` on (any addresses), one cache line at a time: for row
/// loops that compute on one row from L1 while the next ones load, which the hardware
/// prefetcher does not do across the 4 KiB page a row ends on.
#[inline(always)]
pub fn prefetch_span<T>(p: *const T, len: usize) {
    let bytes = len * std::mem::size_of::<T>();
    for offset in (0..bytes).step_by(64) {
        prefetch((p as *const u8).wrapping_add(offset));
    }
}

/// Elements of a logsumexp chunk: 8 KiB of f32, held in L1 between the max and the exp sweep.
const LSE_CHUNK: usize = 2048;

/// How many chunks ahead logsumexp prefetches (2 measured 9.5-10 ms, 4 8.3-9 on xent forward).
const LSE_AHEAD: usize = 4;

/// max + ln(sum(exp(x - max))) over xs: NaN if any x is NaN, else -inf when no x is above -inf.
/// One sweep from memory: each L1-sized chunk's max is read, then its exponentials are summed
/// from L1 while the chunk `LSE_AHEAD` on is prefetched into L2 (the exps alone would leave
/// memory idle: the hardware prefetcher only follows demand misses), and the running sum is
/// rescaled when the max grows. xent forward 2048x32768 on the first VM: 22 ms against 27 for a
/// max pass then an exp pass per row.
#[inline(always)]
fn logsumexp_f32<E: Exp16>(xs: &[f32]) -> f32 {
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    for (i, chunk) in xs.chunks(LSE_CHUNK).enumerate() {
        let m = lane_max(chunk);
        if m > max {
            // From -inf the factor is 0, which keeps a NaN the sum carries.
            sum *= E::exp1(max - m);
            max = m;
        }
        if max == f32::NEG_INFINITY {
            // Nothing above -inf yet: only a NaN here counts, carried in the sum.
            if chunk.iter().any(|x| x.is_nan()) {
                sum = f32::NAN;
            }
            continue;
        }
        let next = xs.as_ptr().wrapping_add((i + LSE_AHEAD) * LSE_CHUNK);
        let mut acc = E::zero();
        let mut blocks = chunk.chunks_exact(16);
        for (j, b) in (&mut blocks).enumerate() {
            prefetch(next.wrapping_add(j * 16));
            acc = E::add_exp16(acc, b.try_into().expect("16-element block"), max);
        }
        sum += E::total(E::add_exp16(acc, &tail_block(blocks.remainder()), max));
    }
    if max == f32::NEG_INFINITY && !sum.is_nan() {
        return max;
    }
    max + sum.ln()
}

/// log(sum(exp(x))) of xs, computed as max + log(sum(exp(x - max))): vectorised with prefetching
/// for f32, exact and scalar for f64. NaN if any x is NaN, else -inf when no x is above -inf.
pub fn logsumexp<T: Float>(xs: &[T]) -> T {
    if let Some(x32) = as_f32(xs) {
        return T::from_f64(logsumexp_dispatch(x32) as f64);
    }
    let max = xs.iter().fold(T::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    if max == T::NEG_INFINITY {
        // A NaN next to nothing but -inf (NaN is the one value unordered with itself).
        return xs.iter().find(|x| x.partial_cmp(x).is_none()).copied().unwrap_or(max);
    }
    max + xs.iter().fold(T::ZERO, |s, &x| s + (x - max).exp()).ln()
}

/// out[i] = exp(x[i] - shift) * scale.
#[inline(always)]
fn exp_shifted_scaled_f32<E: Exp16>(out: &mut [MaybeUninit<f32>], xs: &[f32], shift: f32, scale: f32) {
    let write = |out: &mut [MaybeUninit<f32>], e: [f32; 16]| {
        for (o, &e) in out.iter_mut().zip(&e) {
            o.write(e * scale);
        }
    };
    let (mut outs, mut ins) = (out.chunks_exact_mut(16), xs.chunks_exact(16));
    for (o, x) in (&mut outs).zip(&mut ins) {
        write(o, E::exp_shifted16(x, shift));
    }
    write(outs.into_remainder(), E::exp_shifted16(&tail_block(ins.remainder()), shift));
}

/// Defines `$name(args) -> ret`, which runs `$body` (an `#[inline(always)]` fn) compiled for
/// AVX-512, else AVX2+FMA, else the baseline, picked at run time. A body generic over `Exp16`
/// (written `body::<Exp16>`) gets `Scalef` in the AVX-512 build, `Avx2Fma` in the AVX2+FMA one
/// and `Separate` in the baseline.
macro_rules! multiversion {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident::<Exp16>) => {
        fn $name($($arg: $ty),*) -> $ret {
            match simd_level() {
                // SAFETY: simd_level saw the features at run time.
                SimdLevel::Avx512 => unsafe { with_avx512(#[inline(always)] || $body::<Scalef>($($arg),*)) },
                // SAFETY: as above.
                SimdLevel::Avx2Fma => unsafe { with_avx2_fma(#[inline(always)] || $body::<Avx2Fma>($($arg),*)) },
                SimdLevel::Baseline => $body::<Separate>($($arg),*),
            }
        }
    };
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:path) => {
        fn $name($($arg: $ty),*) -> $ret {
            vectorised(
                #[inline(always)]
                || $body($($arg),*),
            )
        }
    };
}

multiversion!(exp_shifted_sum_dispatch(xs: &mut [f32], shift: f32) -> f32 = exp_shifted_sum_f32::<Exp16>);
multiversion!(logsumexp_dispatch(xs: &[f32]) -> f32 = logsumexp_f32::<Exp16>);
multiversion!(exp_shifted_scaled_dispatch(out: &mut [MaybeUninit<f32>], xs: &[f32], shift: f32, scale: f32) -> () = exp_shifted_scaled_f32::<Exp16>);

/// f32 -> bf16 bits, rounded to nearest even (NaN stays a quiet NaN): as `half::bf16::from_f32`,
/// written so the loop vectorises. Writes every element of dst (as long as src).
#[inline(always)]
fn narrow_bf16_f32(dst: &mut [MaybeUninit<u16>], src: &[f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        let bits = x.to_bits();
        let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
        d.write(if x.is_nan() { (bits >> 16) as u16 | 0x0040 } else { rounded });
    }
}

multiversion!(narrow_bf16_dispatch(dst: &mut [MaybeUninit<u16>], src: &[f32]) -> () = narrow_bf16_f32);

/// bf16 bits -> f32: exact, the bits shifted up. Writes every element of dst (as long as src).
#[inline(always)]
fn widen_bf16_f32(dst: &mut [MaybeUninit<f32>], src: &[u16]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        d.write(f32::from_bits(u32::from(x) << 16));
    }
}

multiversion!(widen_bf16_dispatch(dst: &mut [MaybeUninit<f32>], src: &[u16]) -> () = widen_bf16_f32);

/// Widens bf16 or f16 to f32 (exact), in parallel for large buffers, into a fresh buffer that is
/// written once: bf16 by a vectorised shift, f16 through `half`. Before, the CPU backend widened
/// on one thread after gathering the half-precision data into a copy even when contiguous (a
/// bf16 multiply of 32M elements: 40-44 ms).
pub fn widen<H: HalfFloat>(src: &[H]) -> Vec<f32> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    // SAFETY: the chunks cover the output, and H::widen writes each chunk whole.
    unsafe {
        filled(src.len(), |out: &mut [MaybeUninit<f32>]| {
            if src.len() > CHUNK {
                out.par_chunks_mut(CHUNK)
                    .zip(src.par_chunks(CHUNK))
                    .for_each(|(d, s)| H::widen(d, s));
            } else {
                H::widen(out, src);
            }
        })
    }
}

/// The 16-bit float types and how a slice of each widens to f32 and narrows back.
pub trait HalfFloat: Copy + Send + Sync {
    /// Writes every element of dst (as long as src).
    fn widen(dst: &mut [MaybeUninit<f32>], src: &[Self]);

    /// Rounds to nearest even; writes every element of dst (as long as src).
    fn narrow(dst: &mut [MaybeUninit<Self>], src: &[f32]);
}

impl HalfFloat for half::bf16 {
    fn widen(dst: &mut [MaybeUninit<f32>], src: &[Self]) {
        widen_bf16_dispatch(dst, bytemuck::cast_slice(src));
    }

    fn narrow(dst: &mut [MaybeUninit<Self>], src: &[f32]) {
        // SAFETY: bf16 is a transparent u16, so the two slices have the same layout.
        narrow_bf16_dispatch(
            unsafe { &mut *(dst as *mut [MaybeUninit<half::bf16>] as *mut [MaybeUninit<u16>]) },
            src,
        );
    }
}

impl HalfFloat for half::f16 {
    fn widen(dst: &mut [MaybeUninit<f32>], src: &[Self]) {
        for (d, x) in dst.iter_mut().zip(src) {
            d.write(x.to_f32());
        }
    }

    fn narrow(dst: &mut [MaybeUninit<Self>], src: &[f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            d.write(half::f16::from_f32(x));
        }
    }
}

/// Narrows f32 to bf16 (round to nearest even), in parallel for large buffers, into a fresh
/// buffer that is written once (no zero fill first).
pub fn narrow_bf16(src: &[f32]) -> Vec<half::bf16> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    // SAFETY: the chunks cover the output, and narrow_bf16_dispatch writes each chunk whole.
    unsafe {
        filled(src.len(), |out: &mut [MaybeUninit<half::bf16>]| {
            // SAFETY: bf16 is a transparent u16, so the two slices have the same layout.
            if src.len() > CHUNK {
                out.par_chunks_mut(CHUNK)
                    .zip(src.par_chunks(CHUNK))
                    .for_each(|(d, s)| HalfFloat::narrow(d, s));
            } else {
                HalfFloat::narrow(out, src);
            }
        })
    }
}

/// Runs `f` compiled for the widest vector unit this CPU has (AVX-512, else AVX2+FMA, else the
/// baseline; `simd::level`): `f` is inlined into a function built with those features, so the loops in it
/// vectorise at that width. For generic loops the `multiversion!` macro cannot name. Pass the
/// closure as `vectorised(#[inline(always)] || ...)`: a closure LLVM declines to inline stays a
/// baseline (SSE2) function, and the features do nothing for it.
#[inline(always)]
pub fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    match simd_level() {
        // SAFETY: simd_level saw the features at run time.
        SimdLevel::Avx512 => unsafe { with_avx512(f) },
        // SAFETY: as above.
        SimdLevel::Avx2Fma => unsafe { with_avx2_fma(f) },
        SimdLevel::Baseline => f(),
    }
}

/// Runs f inlined into a function built for AVX-512 (and FMA). Unsafe: the CPU must have both.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,fma"))]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs f inlined into a function built for AVX2 and FMA. Unsafe: the CPU must have both.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn with_avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// xs as f32 when T is f32 (the vectorised paths), else None (f64: the exact scalar paths).
pub(super) fn as_f32<T: Float>(xs: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 when the ids match, so the slice is the same memory with the same type.
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| unsafe { &*(xs as *const [T] as *const [f32]) })
}

pub(super) fn as_f32_mut<T: Float>(xs: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in as_f32.
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| unsafe { &mut *(xs as *mut [T] as *mut [f32]) })
}

pub(super) fn as_f32_uninit<T: Float>(xs: &mut [MaybeUninit<T>]) -> Option<&mut [MaybeUninit<f32>]> {
    // SAFETY: as in as_f32.
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| unsafe { &mut *(xs as *mut [MaybeUninit<T>] as *mut [MaybeUninit<f32>]) })
}

/// Writes out[i] = exp(xs[i] - shift) * scale (vectorised for f32), every element of out.
pub fn exp_shifted_scaled<T: Float>(out: &mut [MaybeUninit<T>], xs: &[T], shift: T, scale: T) {
    if let (Some(o32), Some(x32)) = (as_f32_uninit(out), as_f32(xs)) {
        return exp_shifted_scaled_dispatch(o32, x32, shift.to_f64() as f32, scale.to_f64() as f32);
    }
    for (o, &x) in out.iter_mut().zip(xs) {
        o.write((x - shift).exp() * scale);
    }
}

/// xs[i] = exp(xs[i] - shift) for any float type; returns their sum. f32 takes the vectorised
/// path, f64 (gradient checks) the exact scalar one.
pub fn exp_shifted_sum<T: Float>(xs: &mut [T], shift: T) -> T {
    if let Some(x32) = as_f32_mut(xs) {
        return T::from_f64(exp_shifted_sum_dispatch(x32, shift.to_f64() as f32) as f64);
    }
    let mut sum = T::ZERO;
    for x in xs.iter_mut() {
        *x = (*x - shift).exp();
        sum += *x;
    }
    sum
}

/// The sum of f(x) over xs with 64 independent partial sums (four AVX-512 registers of f32), so
/// the loop vectorises and keeps four add chains in flight: a single running sum is one
/// dependent add chain, four times slower than memory, and one register of partial sums still
/// waited on the add's latency (layer norm's row sums). The four are separate arrays: as one
/// [T; 64], LLVM kept the sums on the stack and every add waited on a store and a load (layer
/// norm forward in L2 on the EPYC VM: 0.8 ns an element).
#[inline(always)]
pub fn lane_sum<T: Float>(xs: &[T], f: impl Fn(T) -> T) -> T {
    let add = |acc: &mut [T; 16], xs: &[T]| {
        for (a, &x) in acc.iter_mut().zip(xs) {
            *a += f(x);
        }
    };
    let (mut a0, mut a1, mut a2, mut a3) = ([T::ZERO; 16], [T::ZERO; 16], [T::ZERO; 16], [T::ZERO; 16]);
    let mut blocks = xs.chunks_exact(64);
    for b in &mut blocks {
        add(&mut a0, &b[..16]);
        add(&mut a1, &b[16..32]);
        add(&mut a2, &b[32..48]);
        add(&mut a3, &b[48..]);
    }
    let mut rest = blocks.remainder().chunks_exact(16);
    for c in &mut rest {
        add(&mut a0, c);
    }
    let tail = rest.remainder().iter().fold(T::ZERO, |s, &x| s + f(x));
    for (((s, &b), &c), &d) in a0.iter_mut().zip(&a1).zip(&a2).zip(&a3) {
        *s += (b + c) + d;
    }
    a0.iter().fold(tail, |s, &a| s + a)
}

/// The maximum of xs (-inf when empty; NaNs are passed over) with 16 independent running maxima.
/// `if x > a` is one max instruction; `f32::max` adds a NaN test and a blend to the chain, which
/// made this pass three times slower than memory.
#[inline(always)]
pub fn lane_max<T: Float>(xs: &[T]) -> T {
    let max = |a: T, x: T| if x > a { x } else { a };
    let mut acc = [T::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = max(*a, x);
        }
    }
    let tail = chunks.remainder().iter().fold(T::NEG_INFINITY, |m, &x| max(m, x));
    acc.iter().fold(tail, |m, &a| max(m, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every evaluation of exp this CPU can run: separate multiply-adds, fused ones (outside an
    /// FMA build the fused one calls libm's fmaf, which rounds the same way), and the AVX2+FMA
    /// and AVX-512 intrinsics where the CPU has them.
    type Exp = fn(f32) -> f32;
    fn exps() -> Vec<(&'static str, Exp)> {
        let mut exps: Vec<(&'static str, Exp)> = vec![("separate", Separate::exp1), ("fused", Fused::exp1)];
        if simd_level() >= SimdLevel::Avx2Fma {
            // SAFETY (of calling Avx2Fma): AVX2 and FMA were detected.
            exps.push(("avx2", |x| unsafe { with_avx2_fma(|| Avx2Fma::exp1(x)) }));
        }
        if matches!(simd_level(), SimdLevel::Avx512) {
            // SAFETY (of calling Scalef): AVX-512F was detected.
            exps.push(("scalef", |x| unsafe { with_avx512(|| Scalef::exp1(x)) }));
        }
        exps
    }

    #[test]
    fn exp_matches_std_to_a_few_ulps() {
        for (name, exp) in exps() {
            let mut worst = 0f64;
            let mut x = -87.0f32;
            while x < 88.0 {
                let want = (x as f64).exp();
                let got = exp(x) as f64;
                worst = worst.max(((got - want) / want).abs());
                x += 0.0137;
            }
            assert!(worst < 4e-7, "{name}: worst relative error {worst}");
        }
    }

    /// exp(x - shift) with x at most shift, as the slice loops take it, for every build.
    type ShiftedExp = fn(f32, f32) -> f32;
    fn shifted_exps() -> Vec<(&'static str, ShiftedExp)> {
        let mut exps: Vec<(&'static str, ShiftedExp)> = vec![
            ("separate", |x, s| Separate::exp_shifted16(&[x; 16], s)[0]),
            ("fused", |x, s| Fused::exp_shifted16(&[x; 16], s)[0]),
        ];
        if simd_level() >= SimdLevel::Avx2Fma {
            // SAFETY (of calling Avx2Fma): AVX2 and FMA were detected.
            exps.push(("avx2", |x, s| unsafe { with_avx2_fma(|| Avx2Fma::exp_shifted16(&[x; 16], s)[0]) }));
        }
        if matches!(simd_level(), SimdLevel::Avx512) {
            // SAFETY (of calling Scalef): AVX-512F was detected.
            exps.push(("scalef", |x, s| unsafe { with_avx512(|| Scalef::exp_shifted16(&[x; 16], s)[0]) }));
        }
        exps
    }

    #[test]
    fn shifted_exp_matches_std_for_arguments_at_most_0() {
        for (name, exp) in shifted_exps() {
            for shift in [0.0f32, 3.75, -20.5] {
                let (mut worst, mut worst_near_0) = (0f64, 0f64);
                let mut d = -87.0f32;
                while d <= 0.0 {
                    let x = d + shift;
                    let want = ((x - shift) as f64).exp();
                    let err = ((exp(x, shift) as f64 - want) / want).abs();
                    worst = worst.max(err);
                    if d > -10.0 {
                        worst_near_0 = worst_near_0.max(err);
                    }
                    d += 0.0071;
                }
                assert!(worst < 4e-7, "{name}, shift {shift}: worst relative error {worst}");
                assert!(
                    worst_near_0 < 1.5e-7,
                    "{name}, shift {shift}: worst relative error {worst_near_0} on [-10, 0]"
                );
            }
            assert_eq!(exp(f32::NEG_INFINITY, 2.0), 0.0, "{name}");
            assert_eq!(exp(-1000.0, 0.0), 0.0, "{name}");
            assert_eq!(exp(1.5, 1.5), 1.0, "{name}");
            assert!(exp(f32::NAN, 0.0).is_nan(), "{name}");
            assert!(exp(1.0, f32::NAN).is_nan(), "{name}");
        }
    }

    #[test]
    fn avx2_intrinsics_match_the_fused_lane_loop_bit_for_bit() {
        if simd_level() < SimdLevel::Avx2Fma {
            return;
        }
        let mut xs: Vec<f32> = (0..40_000).map(|i| -100.0 + i as f32 * 0.00473).collect();
        xs.extend([
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -88.0,
            -87.99,
            88.37,
            88.4,
            0.0,
            -0.0,
            1e-30,
        ]);
        for block in xs.chunks(16) {
            let mut lanes = [0.0f32; 16];
            lanes[..block.len()].copy_from_slice(block);
            // SAFETY (of calling Avx2Fma): AVX2 and FMA were detected.
            let got = unsafe { with_avx2_fma(|| Avx2Fma::exp16(lanes)) };
            for (x, (g, w)) in lanes.iter().zip(got.iter().zip(Fused::exp16(lanes))) {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "exp({x}): {g} against {w}"
                );
            }
        }
    }

    #[test]
    fn exp_edges() {
        for (name, exp) in exps() {
            assert_eq!(exp(f32::NEG_INFINITY), 0.0, "{name}");
            assert_eq!(exp(-104.0), 0.0, "{name}");
            assert_eq!(exp(-1000.0), 0.0, "{name}");
            // Below -88 the exponent-bit builds give 0 and scalef the subnormals.
            for x in [-88.0f32, -95.0, -100.0] {
                let (got, want) = (exp(x) as f64, (x as f64).exp());
                assert!(got == 0.0 || (got - want).abs() < 0.02 * want + 1.5e-45, "{name}: exp({x}) = {got}");
            }
            assert_eq!(exp(0.0), 1.0, "{name}");
            assert!(exp(f32::NAN).is_nan(), "{name}");
            assert!(exp(-f32::NAN).is_nan(), "{name}");
            assert!(exp(f32::INFINITY) > 1e38 && exp(f32::INFINITY).is_finite(), "{name}");
            // Just above the cut to 0 the results are subnormal but still close to e^x.
            let (got, want) = (exp(-87.5) as f64, (-87.5f64).exp());
            assert!((got - want).abs() < 1e-3 * want, "{name}: exp(-87.5) = {got}, want {want}");
        }
        let mut v: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 4.0).collect();
        let want: f32 = v.iter().map(|x| (x - 1.0).exp()).sum();
        let got = exp_shifted_sum(&mut v, 1.0f32);
        assert!((got - want).abs() < 1e-5 * want);
        assert!((v[0] - (-5.0f32).exp()).abs() < 1e-7);
    }

    #[test]
    fn logsumexp_matches_f64() {
        let reference = |xs: &[f32]| {
            let m = xs.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            m + xs.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
        };
        // Lengths around the 2048-element chunk; the max rises from chunk to chunk (the running
        // sum is rescaled) or sits in the first chunk.
        for len in [1, 15, 16, 17, 2047, 2048, 2049, 6000] {
            for rising in [false, true] {
                let xs: Vec<f32> = (0..len)
                    .map(|i| {
                        if rising {
                            i as f32 * 0.01
                        } else {
                            ((i * 7919) % 101) as f32 * 0.3 - 15.0
                        }
                    })
                    .collect();
                let (got, want) = (logsumexp(&xs) as f64, reference(&xs));
                assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "len {len}: {got} vs {want}");
            }
        }
        let mut xs = vec![f32::NEG_INFINITY; 5000];
        assert_eq!(logsumexp(&xs), f32::NEG_INFINITY);
        xs[4500] = 2.0;
        assert_eq!(logsumexp(&xs), 2.0);
        xs[10] = f32::NAN;
        assert!(logsumexp(&xs).is_nan());
        xs[4500] = f32::NEG_INFINITY;
        assert!(logsumexp(&xs).is_nan(), "a NaN among -inf only");
        assert!(logsumexp(&[1.0f64, f64::NAN]).is_nan());
        assert!(logsumexp(&[f64::NEG_INFINITY, f64::NAN]).is_nan());
        assert_eq!(logsumexp::<f32>(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn tanh_matches_std() {
        let mut worst = 0f64;
        let mut x = -12.0f32;
        while x < 12.0 {
            let want = (x as f64).tanh();
            let got = tanh_f32(x) as f64;
            if want != 0.0 {
                worst = worst.max(((got - want) / want).abs());
            }
            x += 0.001_37;
        }
        assert!(worst < 7e-7, "worst relative error {worst}");
        assert_eq!(tanh_f32(0.0), 0.0);
        assert_eq!(tanh_f32(1e-30), 1e-30);
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
    }

    #[test]
    fn bf16_narrowing_matches_half() {
        // Ties, the largest finite values, infinities, NaNs, subnormals and a spread of bit patterns.
        let mut bits: Vec<u32> = vec![
            0,
            0x8000_0000,
            0x3f80_8000,
            0x3f81_8000,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x7f80_0000,
            0xff80_0000,
        ];
        bits.extend([0x7fc0_0000, 0x7f80_0001, 0xffff_ffff, 0x0000_0001, 0x807f_ffff]);
        bits.extend((0..200_000u32).map(|i| i.wrapping_mul(2_654_435_761)));
        let src: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let got = narrow_bf16(&src);
        for (x, g) in src.iter().zip(&got) {
            let want = half::bf16::from_f32(*x);
            assert!(
                g.to_bits() == want.to_bits() || (x.is_nan() && g.is_nan()),
                "{:#x}: {:#x} vs {:#x}",
                x.to_bits(),
                g.to_bits(),
                want.to_bits()
            );
        }
    }
}
