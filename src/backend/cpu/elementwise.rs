//! Elementwise ops: activations and their derivatives, broadcasting binary ops, comparisons and
//! select. Large arrays are split across threads in chunks.

use super::float::{float_data, Float};
use super::CpuStorage;
use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::{with_float, with_float2, Error, Layout, Result};
use rayon::prelude::*;

const PAR_CHUNK: usize = 1 << 15;

/// out[i] = f(i) computed in parallel chunks.
pub(crate) fn par_fill<T: Float>(len: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::ZERO; len];
    if len < PAR_CHUNK {
        out.iter_mut().enumerate().for_each(|(i, o)| *o = f(i));
    } else {
        out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(c, chunk)| {
            for (j, o) in chunk.iter_mut().enumerate() {
                *o = f(c * PAR_CHUNK + j);
            }
        });
    }
    out
}

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_TANH_C: f64 = 0.044_715;

#[inline(always)]
fn apply<T: Float>(op: UnaryOp, x: T) -> T {
    let half = T::from_f64(0.5);
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => T::ONE / x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Relu => x.max(T::ZERO),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sqr => x * x,
        UnaryOp::Recip => T::ONE / x,
        UnaryOp::Gelu => half * x * (T::ONE + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf()),
        UnaryOp::GeluTanh => {
            let u = T::from_f64(SQRT_2_OVER_PI) * (x + T::from_f64(GELU_TANH_C) * x * x * x);
            half * x * (T::ONE + u.tanh())
        }
        UnaryOp::QuickGelu => x * sigmoid(T::from_f64(1.702) * x),
        UnaryOp::Silu => x * sigmoid(x),
        UnaryOp::Affine { mul, add } => x * T::from_f64(mul) + T::from_f64(add),
        UnaryOp::Powf(e) => x.powf(T::from_f64(e)),
    }
}

/// dy/dx at x.
#[inline(always)]
fn derivative<T: Float>(op: UnaryOp, x: T) -> T {
    let half = T::from_f64(0.5);
    match op {
        UnaryOp::Neg => -T::ONE,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => T::ONE / x,
        UnaryOp::Sqrt => half / x.sqrt(),
        UnaryOp::Rsqrt => -half / (x * x.sqrt()),
        UnaryOp::Tanh => {
            let t = x.tanh();
            T::ONE - t * t
        }
        UnaryOp::Sigmoid => {
            let s = sigmoid(x);
            s * (T::ONE - s)
        }
        UnaryOp::Relu => {
            if x > T::ZERO {
                T::ONE
            } else {
                T::ZERO
            }
        }
        UnaryOp::Abs => {
            if x > T::ZERO {
                T::ONE
            } else if x < T::ZERO {
                -T::ONE
            } else {
                T::ZERO
            }
        }
        UnaryOp::Sqr => T::from_f64(2.0) * x,
        UnaryOp::Recip => -T::ONE / (x * x),
        UnaryOp::Gelu => {
            let cdf = half * (T::ONE + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf());
            let pdf = (-half * x * x).exp() * T::from_f64(0.398_942_280_401_432_7);
            cdf + x * pdf
        }
        UnaryOp::GeluTanh => {
            let c = T::from_f64(SQRT_2_OVER_PI);
            let k = T::from_f64(GELU_TANH_C);
            let t = (c * (x + k * x * x * x)).tanh();
            half * (T::ONE + t) + half * x * (T::ONE - t * t) * c * (T::ONE + T::from_f64(3.0) * k * x * x)
        }
        UnaryOp::QuickGelu => {
            let a = T::from_f64(1.702);
            let s = sigmoid(a * x);
            s + a * x * s * (T::ONE - s)
        }
        UnaryOp::Silu => {
            let s = sigmoid(x);
            s + x * s * (T::ONE - s)
        }
        UnaryOp::Affine { mul, .. } => T::from_f64(mul),
        UnaryOp::Powf(e) => T::from_f64(e) * x.powf(T::from_f64(e - 1.0)),
    }
}

pub fn unary(x: &CpuStorage, layout: &Layout, op: UnaryOp) -> Result<CpuStorage> {
    let data = float_data(x, layout, "unary")?;
    Ok(with_float!(data, x => par_fill(x.len(), |i| apply(op, x[i]))).into_storage(x.dtype()))
}

pub fn unary_backward(x: &CpuStorage, layout: &Layout, grad: &CpuStorage, grad_layout: &Layout, op: UnaryOp) -> Result<CpuStorage> {
    let (xd, gd) = (
        float_data(x, layout, "unary_backward")?,
        float_data(grad, grad_layout, "unary_backward")?,
    );
    Ok(with_float2!("unary_backward", xd, gd, (x, g) => par_fill(x.len(), |i| g[i] * derivative(op, x[i]))).into_storage(x.dtype()))
}

#[inline(always)]
fn binary_apply<T: Float>(op: BinaryOp, a: T, b: T) -> T {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Maximum => a.max(b),
        BinaryOp::Minimum => a.min(b),
    }
}

/// Runs `f(a_offset, b_offset) -> T` over every output element of two broadcast layouts. The
/// common case (both contiguous) avoids index arithmetic entirely.
fn zip_layouts<T: Float>(la: &Layout, lb: &Layout, f: impl Fn(usize, usize) -> T + Sync) -> Vec<T> {
    if let (Some((a0, _)), Some((b0, _))) = (la.contiguous_range(), lb.contiguous_range()) {
        return par_fill(la.elem_count(), |i| f(a0 + i, b0 + i));
    }
    // Row by row over the last dim, whose strides (often 1 or 0, as for a broadcast bias) stay
    // fixed; only the row starts are listed.
    let (ra, sa) = rows(la);
    let (rb, sb) = rows(lb);
    let inner = la.shape().last().copied().unwrap_or(1);
    let mut out = vec![T::ZERO; la.elem_count()];
    if inner == 0 {
        return out;
    }
    let fill_row = |(r, row): (usize, &mut [T])| {
        for (j, o) in row.iter_mut().enumerate() {
            *o = f(ra[r] + j * sa, rb[r] + j * sb);
        }
    };
    if out.len() < PAR_CHUNK {
        out.chunks_mut(inner).enumerate().for_each(fill_row);
    } else {
        out.par_chunks_mut(inner).enumerate().for_each(fill_row);
    }
    out
}

/// The storage offset of each row (all dims but the last) and the last dim's stride.
fn rows(l: &Layout) -> (Vec<usize>, usize) {
    let rank = l.rank();
    if rank == 0 {
        return (vec![l.offset()], 0);
    }
    let outer = Layout::new(l.shape()[..rank - 1].to_vec(), l.strides()[..rank - 1].to_vec(), l.offset());
    (outer.offsets().collect(), l.strides()[rank - 1])
}

/// Float data of a storage without copying (the layout is applied by the caller's offsets).
fn whole<'a>(s: &'a CpuStorage, op: &'static str) -> Result<super::float::FloatData<'a>> {
    float_data(s, &Layout::contiguous(&[s.len()]), op)
}

pub fn binary(a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout, op: BinaryOp) -> Result<CpuStorage> {
    if a.dtype() != b.dtype() {
        return Err(Error::dtype("binary", format!("{op:?} of {} and {}", a.dtype(), b.dtype())));
    }
    let (ad, bd) = (whole(a, "binary")?, whole(b, "binary")?);
    Ok(with_float2!("binary", ad, bd, (x, y) => zip_layouts(la, lb, |i, j| binary_apply(op, x[i], y[j]))).into_storage(a.dtype()))
}

pub fn cmp(a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout, op: CmpOp) -> Result<CpuStorage> {
    if a.dtype() != b.dtype() {
        return Err(Error::dtype("cmp", format!("{op:?} of {} and {}", a.dtype(), b.dtype())));
    }
    let test = move |x: f64, y: f64| -> bool {
        match op {
            CmpOp::Eq => x == y,
            CmpOp::Ne => x != y,
            CmpOp::Lt => x < y,
            CmpOp::Le => x <= y,
            CmpOp::Gt => x > y,
            CmpOp::Ge => x >= y,
        }
    };
    if !a.dtype().is_float() {
        let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
        let values: Vec<f64> = la
            .offsets()
            .zip(lb.offsets())
            .map(|(i, j)| if test(x[i], y[j]) { 1.0 } else { 0.0 })
            .collect();
        return Ok(CpuStorage::from_f64(&values, a.dtype()));
    }
    let (ad, bd) = (whole(a, "cmp")?, whole(b, "cmp")?);
    Ok(with_float2!("cmp", ad, bd, (x, y) => zip_layouts(la, lb, |i, j| if test(x[i].to_f64(), y[j].to_f64()) { Float::ONE } else { Float::ZERO })).into_storage(a.dtype()))
}

pub fn where_cond(cond: &CpuStorage, lc: &Layout, t: (&CpuStorage, &Layout), f: (&CpuStorage, &Layout)) -> Result<CpuStorage> {
    if t.0.dtype() != f.0.dtype() {
        return Err(Error::dtype("where", format!("branches are {} and {}", t.0.dtype(), f.0.dtype())));
    }
    let mask: Vec<bool> = {
        let c = cond.to_f64_vec();
        lc.offsets().map(|o| c[o] != 0.0).collect()
    };
    let (td, fd) = (whole(t.0, "where")?, whole(f.0, "where")?);
    // Both branches are read at the same positions; pick per element after.
    let picked = with_float2!("where", td, fd, (x, y) => {
        let (on_true, on_false) = (zip_layouts(t.1, t.1, |i, _| x[i]), zip_layouts(f.1, f.1, |i, _| y[i]));
        on_true.into_iter().zip(on_false).zip(&mask).map(|((a, b), &m)| if m { a } else { b }).collect()
    });
    Ok(picked.into_storage(t.0.dtype()))
}
