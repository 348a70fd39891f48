//! Vectorised math over slices: exp, the one transcendental on the hot paths of softmax,
//! attention, cross-entropy and the sigmoid-based activations.
//!
//! exp(x) = 2^n e^r with n = round(x log2 e) and r = x - n ln 2 (ln 2 split in two parts so r
//! is exact), e^r from Cephes' degree-6 polynomial on [-ln2/2, ln2/2] (relative error below
//! 2e-7), 2^n built in the exponent bits. No calls and no branches, so the loop vectorises; it
//! is compiled three times (AVX-512, AVX2+FMA, baseline; `multiversion!`) and picked at run time. Inputs below
//! -87.3 give 0 (so -inf gives exactly 0), above 88.37 they saturate, NaN stays NaN.

use super::float::Float;
use std::any::TypeId;

/// exp for one f32; `Float::exp` for f32 is this, so any loop over it vectorises.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.376_26;
    let c = x.clamp(LO, HI);
    let t = c * LOG2E + ROUND;
    let n = t - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23) as u32);
    let y = e * scale;
    let y = if x < LO { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
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

/// xs[i] = exp(xs[i] - shift); returns the sum of the results.
#[inline(always)]
fn exp_shifted_sum_f32(xs: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = xs.chunks_exact_mut(16);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c.iter_mut()) {
            *x = exp_f32(*x - shift);
            *a += *x;
        }
    }
    let mut tail = 0.0;
    for x in chunks.into_remainder() {
        *x = exp_f32(*x - shift);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

/// The sum of exp(x - shift) over xs, which are left as they are.
#[inline(always)]
fn sum_exp_shifted_f32(xs: &[f32], shift: f32) -> f32 {
    lane_sum(xs, |x| exp_f32(x - shift))
}

/// out[i] = exp(x[i] - shift) * scale.
#[inline(always)]
fn exp_shifted_scaled_f32(out: &mut [f32], xs: &[f32], shift: f32, scale: f32) {
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = exp_f32(x - shift) * scale;
    }
}

/// Defines `$name(args) -> ret`, which runs `$body` (an `#[inline(always)]` fn) through
/// `vectorised`: compiled for AVX-512, else AVX2+FMA, else the baseline, picked at run time.
macro_rules! multiversion {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:path) => {
        fn $name($($arg: $ty),*) -> $ret {
            vectorised(
                #[inline(always)]
                || $body($($arg),*),
            )
        }
    };
}

multiversion!(exp_shifted_sum_dispatch(xs: &mut [f32], shift: f32) -> f32 = exp_shifted_sum_f32);
multiversion!(sum_exp_shifted_dispatch(xs: &[f32], shift: f32) -> f32 = sum_exp_shifted_f32);
multiversion!(exp_shifted_scaled_dispatch(out: &mut [f32], xs: &[f32], shift: f32, scale: f32) -> () = exp_shifted_scaled_f32);

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
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            return unsafe { avx512(f) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { avx2(f) };
        }
    }
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

/// out[i] = exp(xs[i] - shift) * scale (vectorised for f32).
pub fn exp_shifted_scaled<T: Float>(out: &mut [T], xs: &[T], shift: T, scale: T) {
    if let (Some(o32), Some(x32)) = (as_f32_mut(out), as_f32(xs)) {
        return exp_shifted_scaled_dispatch(o32, x32, shift.to_f64() as f32, scale.to_f64() as f32);
    }
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = (x - shift).exp() * scale;
    }
}

/// The sum of exp(x - shift) over xs (vectorised for f32, exact scalar for f64).
pub fn sum_exp_shifted<T: Float>(xs: &[T], shift: T) -> T {
    if let Some(x32) = as_f32(xs) {
        return T::from_f64(sum_exp_shifted_dispatch(x32, shift.to_f64() as f32) as f64);
    }
    xs.iter().fold(T::ZERO, |s, &x| s + (x - shift).exp())
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

/// The sum of f(x) over xs with 16 independent partial sums, so the loop vectorises (a single
/// running sum is one dependent add chain, four times slower than memory).
#[inline(always)]
pub fn lane_sum<T: Float>(xs: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::ZERO; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    let tail = chunks.remainder().iter().fold(T::ZERO, |s, &x| s + f(x));
    acc.iter().fold(tail, |s, &a| s + a)
}

/// The maximum of xs (-inf when empty) with 16 independent running maxima.
#[inline(always)]
pub fn lane_max<T: Float>(xs: &[T]) -> T {
    let mut acc = [T::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    let tail = chunks.remainder().iter().fold(T::NEG_INFINITY, |m, &x| m.max(x));
    acc.iter().fold(tail, |m, &a| m.max(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulps() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(f32::INFINITY) > 1e38);
        let mut v: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 4.0).collect();
        let want: f32 = v.iter().map(|x| (x - 1.0).exp()).sum();
        let got = exp_shifted_sum(&mut v, 1.0f32);
        assert!((got - want).abs() < 1e-5 * want);
        assert!((v[0] - (-5.0f32).exp()).abs() < 1e-7);
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
