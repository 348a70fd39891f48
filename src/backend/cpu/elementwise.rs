//! Elementwise ops: activations and their derivatives, broadcasting binary ops, comparisons and
//! select. Large arrays are split across threads in chunks.

use super::float::{filled, float_data, Float};
use super::stream::Writer;
use super::vmath::{vectorised, widen, HalfFloat};
use super::CpuStorage;
use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::{with_float, with_float2, Error, Layout, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

const PAR_CHUNK: usize = 1 << 15;

/// f(first, piece) over `out` cut into `chunk`-element pieces, piece standing for
/// out[first..first + piece.len()]: in parallel once `out` has PAR_CHUNK elements or more, on
/// this thread below that (where sharing costs more than it saves); a large output is written
/// through a `Writer`, which may hand f smaller pieces of a scratch. Each piece runs the AVX-512
/// or AVX2 build of f where the CPU has it, provided f is inlined into it: pass f as
/// `#[inline(always)] |first, piece| ...` (a unary backward whose closure was not inlined stayed
/// SSE2 and ran at a third of the forward's speed). f must write every element of its piece.
#[inline(always)]
fn for_each_chunk<T: Send + Copy>(out: &mut [MaybeUninit<T>], chunk: usize, f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) {
    let chunk = chunk.max(1);
    let writer = Writer::for_output::<T>(out.len());
    let run = |(i, c): (usize, &mut [MaybeUninit<T>])| {
        vectorised(
            #[inline(always)]
            || {
                writer.fill(
                    c,
                    #[inline(always)]
                    |at, piece| f(i * chunk + at, piece),
                );
                writer.finish();
            },
        )
    };
    if out.len() < PAR_CHUNK {
        out.chunks_mut(chunk).enumerate().for_each(run);
    } else {
        out.par_chunks_mut(chunk).enumerate().for_each(run);
    }
}

/// A Vec of `len` elements written by `fill(first, chunk)` in parallel chunks, where chunk is
/// output elements first..first + chunk.len(); `fill` runs vectorised (see `for_each_chunk`).
///
/// # Safety
/// `fill` must write every element of each chunk it is given.
#[inline(always)]
pub(crate) unsafe fn par_fill_chunks<T: Send + Copy>(len: usize, fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    // SAFETY: the chunks cover all len elements, and the caller's fill writes each.
    unsafe { filled(len, |out| for_each_chunk(out, PAR_CHUNK, fill)) }
}

/// out[i] = f(i) computed in parallel chunks.
pub(crate) fn par_fill<T: Float>(len: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    // SAFETY: every element of each piece is written.
    unsafe {
        par_fill_chunks(
            len,
            #[inline(always)]
            |first, piece| {
                for (j, o) in piece.iter_mut().enumerate() {
                    o.write(f(first + j));
                }
            },
        )
    }
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

/// out[i] = f(x[i]) over parallel chunks; f is inlined into a plain slice loop, so it vectorises.
#[inline(always)]
fn par_map<T: Float>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    // SAFETY: a piece from `first` on has x elements for all of it, so the zip writes every
    // element.
    unsafe {
        par_fill_chunks(
            x.len(),
            #[inline(always)]
            |first, o| {
                for (o, &x) in o.iter_mut().zip(&x[first..]) {
                    o.write(f(x));
                }
            },
        )
    }
}

/// Instantiates `$body` once per unary op with `$f` bound to `$func` (apply or derivative) for
/// that op, so the op is matched once per call rather than once per element.
macro_rules! for_each_unary {
    ($op:expr, $func:ident, $f:ident => $body:expr) => {
        match $op {
            UnaryOp::Neg => {
                let $f = |x| $func(UnaryOp::Neg, x);
                $body
            }
            UnaryOp::Exp => {
                let $f = |x| $func(UnaryOp::Exp, x);
                $body
            }
            UnaryOp::Log => {
                let $f = |x| $func(UnaryOp::Log, x);
                $body
            }
            UnaryOp::Sqrt => {
                let $f = |x| $func(UnaryOp::Sqrt, x);
                $body
            }
            UnaryOp::Rsqrt => {
                let $f = |x| $func(UnaryOp::Rsqrt, x);
                $body
            }
            UnaryOp::Tanh => {
                let $f = |x| $func(UnaryOp::Tanh, x);
                $body
            }
            UnaryOp::Sigmoid => {
                let $f = |x| $func(UnaryOp::Sigmoid, x);
                $body
            }
            UnaryOp::Relu => {
                let $f = |x| $func(UnaryOp::Relu, x);
                $body
            }
            UnaryOp::Abs => {
                let $f = |x| $func(UnaryOp::Abs, x);
                $body
            }
            UnaryOp::Sqr => {
                let $f = |x| $func(UnaryOp::Sqr, x);
                $body
            }
            UnaryOp::Recip => {
                let $f = |x| $func(UnaryOp::Recip, x);
                $body
            }
            UnaryOp::Gelu => {
                let $f = |x| $func(UnaryOp::Gelu, x);
                $body
            }
            UnaryOp::GeluTanh => {
                let $f = |x| $func(UnaryOp::GeluTanh, x);
                $body
            }
            UnaryOp::QuickGelu => {
                let $f = |x| $func(UnaryOp::QuickGelu, x);
                $body
            }
            UnaryOp::Silu => {
                let $f = |x| $func(UnaryOp::Silu, x);
                $body
            }
            op @ (UnaryOp::Affine { .. } | UnaryOp::Powf(_)) => {
                let $f = |x| $func(op, x);
                $body
            }
        }
    };
}

fn unary_typed<T: Float>(x: &[T], op: UnaryOp) -> Vec<T> {
    for_each_unary!(op, apply, f => par_map(x, f))
}

fn unary_backward_typed<T: Float>(x: &[T], g: &[T], op: UnaryOp) -> Vec<T> {
    // SAFETY: a piece from `from` on has x and g elements for all of it, so the zip writes every
    // element.
    unsafe {
        for_each_unary!(op, derivative, f => par_fill_chunks(x.len(), #[inline(always)] |from, o| {
            for ((o, &x), &g) in o.iter_mut().zip(&x[from..]).zip(&g[from..]) {
                o.write(g * f(x));
            }
        }))
    }
}

/// Elements per tile of `half_tiled`: its f32 scratch (three tiles for a binary op, 192 KiB)
/// stays in L2.
const HALF_TILE: usize = 1 << 14;

/// An elementwise op on bf16 or f16 operands that are contiguous views of the same length: a
/// tile at a time (tiles in parallel), widened into f32 scratch, computed by the f32 kernel
/// (`kernel(inputs)`, on this thread: a tile is below PAR_CHUNK), narrowed into the output. The
/// half-precision bytes cross memory once each way; widening and narrowing whole f32 buffers
/// moved five times the bytes. A bf16 multiply of 32M elements on the EPYC VM: 40-44 ms (one
/// thread widening whole buffers), 30-33 (widening in parallel), 14-16 tiled, about the f32
/// multiply's time; bf16 GELU 37 -> 23-26 ms, bound by erf's compute. None where this does not
/// apply (other dtypes, strided or broadcast views).
fn half_tiled(inputs: &[(&CpuStorage, &Layout)], kernel: impl Fn(&[&[f32]]) -> Vec<f32> + Sync) -> Option<CpuStorage> {
    fn tiled<H: HalfFloat>(xs: &[&[H]], kernel: &(impl Fn(&[&[f32]]) -> Vec<f32> + Sync)) -> Vec<H> {
        let len = xs[0].len();
        let tile = |(t, out): (usize, &mut [MaybeUninit<H>])| {
            let span = t * HALF_TILE..t * HALF_TILE + out.len();
            let wide: Vec<Vec<f32>> = xs.iter().map(|x| widen(&x[span.clone()])).collect();
            let wide: Vec<&[f32]> = wide.iter().map(Vec::as_slice).collect();
            H::narrow(out, &kernel(&wide));
        };
        // SAFETY: the tiles cover the output, and H::narrow writes each whole.
        unsafe { filled(len, |out| out.par_chunks_mut(HALF_TILE).enumerate().for_each(tile)) }
    }
    let len = inputs[0].1.shape().iter().product::<usize>();
    let ranges: Vec<(usize, usize)> = inputs
        .iter()
        .map(|(_, l)| l.contiguous_range().filter(|(a, b)| b - a == len))
        .collect::<Option<_>>()?;
    let spans = || inputs.iter().zip(&ranges);
    if let Some(xs) = spans()
        .map(|((s, _), &(a, b))| if let CpuStorage::BF16(v) = s { Some(&v[a..b]) } else { None })
        .collect::<Option<Vec<_>>>()
    {
        return Some(CpuStorage::BF16(tiled(&xs, &kernel)));
    }
    if let Some(xs) = spans()
        .map(|((s, _), &(a, b))| if let CpuStorage::F16(v) = s { Some(&v[a..b]) } else { None })
        .collect::<Option<Vec<_>>>()
    {
        return Some(CpuStorage::F16(tiled(&xs, &kernel)));
    }
    None
}

pub fn unary(x: &CpuStorage, layout: &Layout, op: UnaryOp) -> Result<CpuStorage> {
    if let Some(out) = half_tiled(&[(x, layout)], |t| unary_typed(t[0], op)) {
        return Ok(out);
    }
    let data = float_data(x, layout, "unary")?;
    Ok(with_float!(data, x => unary_typed(x, op)).into_storage(x.dtype()))
}

pub fn unary_backward(x: &CpuStorage, layout: &Layout, grad: &CpuStorage, grad_layout: &Layout, op: UnaryOp) -> Result<CpuStorage> {
    if layout.shape() != grad_layout.shape() {
        return Err(Error::shape(
            "unary_backward",
            format!("input {:?} with gradient {:?}", layout.shape(), grad_layout.shape()),
        ));
    }
    if let Some(out) = half_tiled(&[(x, layout), (grad, grad_layout)], |t| unary_backward_typed(t[0], t[1], op)) {
        return Ok(out);
    }
    let (xd, gd) = (
        float_data(x, layout, "unary_backward")?,
        float_data(grad, grad_layout, "unary_backward")?,
    );
    Ok(with_float2!("unary_backward", xd, gd, (x, g) => unary_backward_typed(x, g, op)).into_storage(x.dtype()))
}

/// A binary op over two broadcast layouts, the op matched once (each arm its own loop).
fn binary_typed<T: Float>(la: &Layout, a: &[T], lb: &Layout, b: &[T], op: BinaryOp) -> Vec<T> {
    match op {
        BinaryOp::Add => zip_layouts(la, a, lb, b, |x, y| x + y),
        BinaryOp::Sub => zip_layouts(la, a, lb, b, |x, y| x - y),
        BinaryOp::Mul => zip_layouts(la, a, lb, b, |x, y| x * y),
        BinaryOp::Div => zip_layouts(la, a, lb, b, |x, y| x / y),
        BinaryOp::Maximum => zip_layouts(la, a, lb, b, |x, y| x.max(y)),
        BinaryOp::Minimum => zip_layouts(la, a, lb, b, |x, y| x.min(y)),
    }
}

/// out[j] = f(a[a0 + j sa], b[b0 + j sb]) along one row; the stride pairs of contiguous and
/// broadcast operands get loops over plain slices, which vectorise.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_apply<T: Float>(out: &mut [MaybeUninit<T>], a: &[T], a0: usize, sa: usize, b: &[T], b0: usize, sb: usize, f: &impl Fn(T, T) -> T) {
    let n = out.len();
    match (sa, sb) {
        (1, 1) => {
            for ((o, &x), &y) in out.iter_mut().zip(&a[a0..a0 + n]).zip(&b[b0..b0 + n]) {
                o.write(f(x, y));
            }
        }
        (1, 0) => {
            let y = b[b0];
            for (o, &x) in out.iter_mut().zip(&a[a0..a0 + n]) {
                o.write(f(x, y));
            }
        }
        (0, 1) => {
            let x = a[a0];
            for (o, &y) in out.iter_mut().zip(&b[b0..b0 + n]) {
                o.write(f(x, y));
            }
        }
        _ => {
            for (j, o) in out.iter_mut().enumerate() {
                o.write(f(a[a0 + j * sa], b[b0 + j * sb]));
            }
        }
    }
}

/// f(a, b) over every output element of two broadcast layouts of `a` and `b`. Both contiguous:
/// one long row cut into parallel chunks. Otherwise row by row over the last dim, whose strides
/// (often 1 or 0, as for a broadcast bias) stay fixed, rows grouped into parallel tasks of about
/// PAR_CHUNK elements.
fn zip_layouts<T: Float>(la: &Layout, a: &[T], lb: &Layout, b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let len = la.elem_count();
    if len == 0 {
        return Vec::new();
    }
    if let (Some((a0, _)), Some((b0, _))) = (la.contiguous_range(), lb.contiguous_range()) {
        // SAFETY: the chunks cover the output and row_apply writes every element of each.
        return unsafe {
            par_fill_chunks(
                len,
                #[inline(always)]
                |first, o| row_apply(o, a, a0 + first, 1, b, b0 + first, 1, &f),
            )
        };
    }
    let (ra, sa) = rows(la);
    let (rb, sb) = rows(lb);
    let inner = la.shape().last().copied().unwrap_or(1).max(1);
    let rows_per_task = (PAR_CHUNK / inner).max(1);
    // SAFETY: the segments cover each piece, each written by row_apply.
    unsafe {
        filled(len, |out| {
            for_each_chunk(
                out,
                rows_per_task * inner,
                #[inline(always)]
                |first, mut piece| {
                    // A piece may start and end inside a row: its segments, row by row.
                    let (mut r, mut col) = (first / inner, first % inner);
                    while !piece.is_empty() {
                        let take = (inner - col).min(piece.len());
                        let (o, rest) = std::mem::take(&mut piece).split_at_mut(take);
                        row_apply(o, a, ra[r] + col * sa, sa, b, rb[r] + col * sb, sb, &f);
                        (piece, r, col) = (rest, r + 1, 0);
                    }
                },
            )
        })
    }
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
    if la.shape() == lb.shape() {
        let tile = |t: &[&[f32]]| {
            let l = Layout::contiguous(&[t[0].len()]);
            binary_typed(&l, t[0], &l, t[1], op)
        };
        if let Some(out) = half_tiled(&[(a, la), (b, lb)], tile) {
            return Ok(out);
        }
    }
    let (ad, bd) = (whole(a, "binary")?, whole(b, "binary")?);
    Ok(with_float2!("binary", ad, bd, (x, y) => binary_typed(la, x, lb, y, op)).into_storage(a.dtype()))
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
    Ok(with_float2!("cmp", ad, bd, (x, y) => zip_layouts(la, x, lb, y, |a, b| if test(a.to_f64(), b.to_f64()) { Float::ONE } else { Float::ZERO })).into_storage(a.dtype()))
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
        let (on_true, on_false) = (zip_layouts(t.1, x, t.1, x, |v, _| v), zip_layouts(f.1, y, f.1, y, |v, _| v));
        on_true.into_iter().zip(on_false).zip(&mask).map(|((a, b), &m)| if m { a } else { b }).collect()
    });
    Ok(picked.into_storage(t.0.dtype()))
}
