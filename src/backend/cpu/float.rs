//! The float element types the CPU backend computes in (f32, and f64 for gradient checks), and
//! borrowing helpers that hand kernels contiguous slices: F16/BF16 are widened to f32 on the way
//! in and narrowed on the way out.

use super::vmath::widen;
use super::CpuStorage;
use crate::{DType, Error, Layout, Result};
use half::f16;
use std::borrow::Cow;
use std::mem::MaybeUninit;

pub trait Float:
    bytemuck::Pod
    + Send
    + Sync
    + Default
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::iter::Sum
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn erf(self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
}

macro_rules! float_impl {
    ($t:ty, $exp:path, $tanh:path, $erf:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline(always)]
            fn min(self, o: Self) -> Self {
                <$t>::min(self, o)
            }
        }
    };
}

// f32 exp and tanh are branch-free polynomials (relative error < 7e-7), so loops over them
// vectorise.
float_impl!(f32, super::vmath::exp_f32, super::vmath::tanh_f32, erf_f32);
float_impl!(f64, f64::exp, f64::tanh, erf_f64);

/// erf in f32, branch-free so loops over it vectorise (it had been evaluated in f64 around a
/// scalar exp, and exact GELU ran at 4 ns an element): x Q(x^2) below |x| = 0.75, else
/// 1 - t P(t) exp(-x^2) with t = 1 / (1 + |x| / 2), the sign restored at the end. Q (degree 5)
/// and P (degree 6) are least-squares fits to erf made for vlk (4e-9 relative and 7e-9 absolute
/// from erf; Q starts from 2 / sqrt(pi)); evaluated in f32 the error stays below 1.1e-7
/// absolute everywhere and 1.8e-7 relative below 0.75. NaN stays NaN.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let x2 = a * a;
    let q = -0.000_681_589_7f32;
    let q = q * x2 + 0.005_123_008_5;
    let q = q * x2 - 0.026_838_547;
    let q = q * x2 + 0.112_834_48;
    let q = q * x2 - 0.376_126_23;
    let q = q * x2 + std::f32::consts::FRAC_2_SQRT_PI;
    let t = 1.0 / (1.0 + 0.5 * a);
    let p = 0.100_816_07f32;
    let p = p * t - 0.403_481_66;
    let p = p * t + 0.458_383;
    let p = p * t - 0.014_372_156;
    let p = p * t + 0.302_766_86;
    let p = p * t + 0.273_166_6;
    let p = p * t + 0.282_697_47;
    let large = 1.0 - t * p * super::vmath::exp_f32(-x2);
    let y = if a < 0.75 { a * q } else { large };
    y.copysign(x)
}

/// erf in f64 to full precision: the Maclaurin series below |x| = 2.5, the continued fraction of
/// erfc (evaluated bottom-up) above.
pub fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let y = if a < 2.5 {
        // Terms shrink below 1e-17 of the sum within 60 steps for |x| < 2.5.
        let (x2, mut term, mut sum) = (a * a, a, a);
        for n in 1..80 {
            let n = n as f64;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else if a < 27.0 {
        let mut frac = a;
        for k in (1..80).rev() {
            frac = a + (k as f64 / 2.0) / frac;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * frac)
    } else {
        1.0
    };
    if x < 0.0 {
        -y
    } else {
        y
    }
}

/// `n` zeros, written rather than mapped, for buffers that are accumulated into (`+=`). A
/// large `vec![0.0; n]` comes from calloc as mmap'd zero pages; reading one maps the shared zero
/// page, and the write after it takes a copy-on-write fault whose TLB shootdown interrupts every
/// other thread of the process. That cost 12% of a CLIP training step; writing the zeros costs
/// a memset.
pub fn accumulator<T: Float>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, T::ZERO);
    v
}

/// A Vec of `len` elements written by `fill` straight into uninitialised memory: an output
/// that is only written costs one pass over memory instead of two (a zero fill, then the
/// values); for memory-bound ops the fill had been half their time.
///
/// # Safety
/// `fill` must write every one of the `len` elements.
pub unsafe fn filled<T>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: the caller guarantees that fill wrote all len elements.
    unsafe { out.set_len(len) };
    out
}

/// Contiguous float data of a view: borrowed when it already is contiguous f32/f64.
pub enum FloatData<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
}

/// The result of a float kernel, before narrowing to the output dtype.
pub enum FloatOut {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl FloatOut {
    pub fn into_storage(self, dtype: DType) -> CpuStorage {
        match (self, dtype) {
            (FloatOut::F64(v), _) => CpuStorage::F64(v),
            (FloatOut::F32(v), DType::F16) => CpuStorage::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            (FloatOut::F32(v), DType::BF16) => CpuStorage::BF16(super::vmath::narrow_bf16(&v)),
            (FloatOut::F32(v), _) => CpuStorage::F32(v),
        }
    }
}

pub fn float_data<'a>(s: &'a CpuStorage, layout: &Layout, op: &'static str) -> Result<FloatData<'a>> {
    if let Some((start, end)) = layout.contiguous_range() {
        match s {
            CpuStorage::F32(v) => return Ok(FloatData::F32(Cow::Borrowed(&v[start..end]))),
            CpuStorage::F64(v) => return Ok(FloatData::F64(Cow::Borrowed(&v[start..end]))),
            CpuStorage::F16(v) => return Ok(FloatData::F32(Cow::Owned(widen(&v[start..end])))),
            CpuStorage::BF16(v) => return Ok(FloatData::F32(Cow::Owned(widen(&v[start..end])))),
            _ => {}
        }
    }
    Ok(match s.gather(layout) {
        CpuStorage::F32(v) => FloatData::F32(Cow::Owned(v)),
        CpuStorage::F64(v) => FloatData::F64(Cow::Owned(v)),
        CpuStorage::F16(v) => FloatData::F32(Cow::Owned(widen(&v))),
        CpuStorage::BF16(v) => FloatData::F32(Cow::Owned(widen(&v))),
        other => return Err(Error::dtype(op, format!("expected a float tensor, got {}", other.dtype()))),
    })
}

/// Runs a generic float kernel on one operand: `with_float!(data, x => expr)`, where `expr` may
/// use `x: &[T]` for T = f32 or f64, and yields `Vec<T>`.
#[macro_export]
macro_rules! with_float {
    ($data:expr, $x:ident => $body:expr) => {
        match $data {
            $crate::backend::cpu::float::FloatData::F32($x) => {
                let $x: &[f32] = &$x;
                $crate::backend::cpu::float::FloatOut::F32($body)
            }
            $crate::backend::cpu::float::FloatData::F64($x) => {
                let $x: &[f64] = &$x;
                $crate::backend::cpu::float::FloatOut::F64($body)
            }
        }
    };
}

/// Two operands of one float type: `with_float2!(op, a, b, (x, y) => expr)`.
#[macro_export]
macro_rules! with_float2 {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            ($crate::backend::cpu::float::FloatData::F32($x), $crate::backend::cpu::float::FloatData::F32($y)) => {
                let ($x, $y): (&[f32], &[f32]) = (&$x, &$y);
                $crate::backend::cpu::float::FloatOut::F32($body)
            }
            ($crate::backend::cpu::float::FloatData::F64($x), $crate::backend::cpu::float::FloatData::F64($y)) => {
                let ($x, $y): (&[f64], &[f64]) = (&$x, &$y);
                $crate::backend::cpu::float::FloatOut::F64($body)
            }
            _ => return Err($crate::Error::dtype($op, "operands have different dtypes")),
        }
    };
}
