//! Vectorised math over slices: exp, the one transcendental on the hot paths of softmax,
//! attention, cross-entropy and the sigmoid-based activations.
//!
//! exp(x) = 2^n e^r with n = round(x log2 e) and r = x - n ln 2 (ln 2 split in two parts so r
//! is exact), e^r from Cephes' degree-6 polynomial on [-ln2/2, ln2/2] (relative error below
//! 2e-7), 2^n built in the exponent bits. No calls and no branches, so the loop vectorises; the
//! slice loops here are compiled three times (AVX-512, AVX2+FMA with fused multiply-adds,
//! baseline; `multiversion!`) and picked at run time. Inputs at or below -88 give 0 (so -inf
//! gives exactly 0), above 88.37 they saturate, NaN stays NaN.

use super::float::Float;
use std::any::TypeId;
use std::mem::MaybeUninit;

/// How exp evaluates `a * b + c`. Rust never contracts a multiply and an add into an FMA, and
/// `f32::mul_add` is a libm call per element in code built without FMA, so the slice loops are
/// instantiated with `Fused` in their FMA builds and `Separate` in the baseline one.
pub trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// One FMA instruction (one rounding): only for code built with the `fma` feature.
pub enum Fused {}

/// A multiply, then an add.
pub enum Separate {}

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

/// exp for one f32; `Float::exp` for f32 is this, so any loop over it vectorises.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_with::<Separate>(x)
}

/// exp with its multiply-adds evaluated as M says. Fused, the AVX-512 loop of logsumexp spends 19
/// instructions an exp (27 with separate multiply-adds and the selects for small inputs and NaN).
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

/// xs[i] = exp(xs[i] - shift); returns the sum of the results.
#[inline(always)]
fn exp_shifted_sum_f32<M: MulAdd>(xs: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = xs.chunks_exact_mut(16);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c.iter_mut()) {
            *x = exp_with::<M>(*x - shift);
            *a += *x;
        }
    }
    let tail = chunks.into_remainder();
    let mut block = tail_block(tail);
    for (a, x) in acc.iter_mut().zip(block.iter_mut()) {
        *x = exp_with::<M>(*x - shift);
        *a += *x;
    }
    tail.copy_from_slice(&block[..tail.len()]);
    acc.iter().sum::<f32>()
}

/// Asks for the cache line holding `p` (any address: a prefetch never faults).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching has no architectural effect and accepts any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
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

/// max + ln(sum(exp(x - max))) over xs: NaN if any x is NaN, else -inf when no x is above -inf.
/// One sweep from memory: each L1-sized chunk's max is read, then its exponentials are summed
/// from L1 while the chunk two ahead is prefetched (the exps alone would leave memory idle: the
/// hardware prefetcher only follows demand misses), and the running sum is rescaled when the max
/// grows. xent forward 2048x32768: 22 ms against 27 for a max pass then an exp pass per row.
#[inline(always)]
fn logsumexp_f32<M: MulAdd>(xs: &[f32]) -> f32 {
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    for (i, chunk) in xs.chunks(LSE_CHUNK).enumerate() {
        let m = lane_max(chunk);
        if m > max {
            // From -inf the factor is 0, which keeps a NaN the sum carries.
            sum *= exp_with::<M>(max - m);
            max = m;
        }
        if max == f32::NEG_INFINITY {
            // Nothing above -inf yet: only a NaN here counts, carried in the sum.
            if chunk.iter().any(|x| x.is_nan()) {
                sum = f32::NAN;
            }
            continue;
        }
        let next = xs.as_ptr().wrapping_add((i + 2) * LSE_CHUNK);
        let mut acc = [0f32; 16];
        let mut blocks = chunk.chunks_exact(16);
        for (j, b) in (&mut blocks).enumerate() {
            prefetch(next.wrapping_add(j * 16));
            for (a, &x) in acc.iter_mut().zip(b) {
                *a += exp_with::<M>(x - max);
            }
        }
        for (a, &x) in acc.iter_mut().zip(&tail_block(blocks.remainder())) {
            *a += exp_with::<M>(x - max);
        }
        sum += acc.iter().sum::<f32>();
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
fn exp_shifted_scaled_f32<M: MulAdd>(out: &mut [MaybeUninit<f32>], xs: &[f32], shift: f32, scale: f32) {
    for (o, &x) in out.iter_mut().zip(xs) {
        o.write(exp_with::<M>(x - shift) * scale);
    }
}

/// Defines `$name(args) -> ret`, which runs `$body` (an `#[inline(always)]` fn) compiled for
/// AVX-512, else AVX2+FMA, else the baseline, picked at run time. A body generic over `MulAdd`
/// (written `body::<MulAdd>`) gets `Fused` in the two FMA builds and `Separate` in the baseline.
macro_rules! multiversion {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident::<MulAdd>) => {
        fn $name($($arg: $ty),*) -> $ret {
            match simd_level() {
                // SAFETY: simd_level saw the features at run time.
                SimdLevel::Avx512 => unsafe { with_avx512(#[inline(always)] || $body::<Fused>($($arg),*)) },
                // SAFETY: as above.
                SimdLevel::Avx2Fma => unsafe { with_avx2_fma(#[inline(always)] || $body::<Fused>($($arg),*)) },
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

multiversion!(exp_shifted_sum_dispatch(xs: &mut [f32], shift: f32) -> f32 = exp_shifted_sum_f32::<MulAdd>);
multiversion!(logsumexp_dispatch(xs: &[f32]) -> f32 = logsumexp_f32::<MulAdd>);
multiversion!(exp_shifted_scaled_dispatch(out: &mut [MaybeUninit<f32>], xs: &[f32], shift: f32, scale: f32) -> () = exp_shifted_scaled_f32::<MulAdd>);

/// f32 -> bf16 bits, rounded to nearest even (NaN stays a quiet NaN): as `half::bf16::from_f32`,
/// written so the loop vectorises.
#[inline(always)]
fn narrow_bf16_f32(dst: &mut [u16], src: &[f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        let bits = x.to_bits();
        let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
        *d = if x.is_nan() { (bits >> 16) as u16 | 0x0040 } else { rounded };
    }
}

multiversion!(narrow_bf16_dispatch(dst: &mut [u16], src: &[f32]) -> () = narrow_bf16_f32);

/// Narrows f32 to bf16 (round to nearest even), in parallel for large buffers.
pub fn narrow_bf16(src: &[f32]) -> Vec<half::bf16> {
    use rayon::prelude::*;
    let mut out = vec![half::bf16::ZERO; src.len()];
    let dst: &mut [u16] = bytemuck::cast_slice_mut(&mut out);
    const CHUNK: usize = 1 << 16;
    if src.len() > CHUNK {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| narrow_bf16_dispatch(d, s));
    } else {
        narrow_bf16_dispatch(dst, src);
    }
    out
}

/// Runs `f` compiled for the widest vector unit this CPU has (AVX-512, else AVX2+FMA, else the
/// baseline): `f` is inlined into a function built with those features, so the loops in it
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

/// The widest vector unit of this CPU that the `vectorised` builds use.
enum SimdLevel {
    Avx512,
    Avx2Fma,
    Baseline,
}

#[inline(always)]
fn simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            return SimdLevel::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return SimdLevel::Avx2Fma;
        }
    }
    SimdLevel::Baseline
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
fn as_f32<T: Float>(xs: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 when the ids match, so the slice is the same memory with the same type.
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| unsafe { &*(xs as *const [T] as *const [f32]) })
}

fn as_f32_mut<T: Float>(xs: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in as_f32.
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| unsafe { &mut *(xs as *mut [T] as *mut [f32]) })
}

fn as_f32_uninit<T: Float>(xs: &mut [MaybeUninit<T>]) -> Option<&mut [MaybeUninit<f32>]> {
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

    /// Both evaluations of exp: separate multiply-adds and fused ones (outside an FMA build the
    /// fused one calls libm's fmaf, which rounds the same way).
    type Exp = fn(f32) -> f32;
    const EXPS: [(&str, Exp); 2] = [("separate", exp_with::<Separate>), ("fused", exp_with::<Fused>)];

    #[test]
    fn exp_matches_std_to_a_few_ulps() {
        for (name, exp) in EXPS {
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

    #[test]
    fn exp_edges() {
        for (name, exp) in EXPS {
            assert_eq!(exp(f32::NEG_INFINITY), 0.0, "{name}");
            assert_eq!(exp(-88.0), 0.0, "{name}");
            assert_eq!(exp(-100.0), 0.0, "{name}");
            assert_eq!(exp(0.0), 1.0, "{name}");
            assert!(exp(f32::NAN).is_nan(), "{name}");
            assert!(exp(-f32::NAN).is_nan(), "{name}");
            assert!(exp(f32::INFINITY) > 1e38, "{name}");
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
