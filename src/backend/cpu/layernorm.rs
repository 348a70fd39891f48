//! Fused layer norm over the last dim, one pass over memory: each row is read once into L1, its
//! mean and variance (two sweeps of the cached row) and output computed there, while the rows
//! ahead are prefetched. Forward keeps mean and 1/std per row. Backward takes a row's two sums in
//! one sweep, then writes dx, and sums dgamma/dbeta into one partial row per group of rows (the
//! groups fixed by the row count, so the bits do not depend on threads), added in order at the
//! end (two stages, as the GPU kernel does). Outputs past the cache are streamed.
//!
//! f32 on a CPU with AVX-512 runs the rows of `layernorm/avx512.rs` (intrinsics); f64, and f32
//! elsewhere, the generic rows here, which the compiler vectorises (64 partial sums a row,
//! `stream::Writer` for the output). On the EPYC VM at 32768x1024 the AVX-512 backward takes
//! 13.8-16 ms against the generic rows' 19-21 (BENCHMARKS.md, seventh session).
//! Bytes: forward reads x, writes y (8 B per f32 element); backward reads x and dy, writes dx.

use super::float::{filled, float_data, Float, FloatData, FloatOut};
use super::simd::{self, SimdLevel};
use super::stream::Writer;
use super::vmath::{as_f32, as_f32_mut, as_f32_uninit, lane_sum, prefetch_span, vectorised};
use super::CpuStorage;
use crate::{Error, Layout, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
mod avx512;

fn check(layout: &Layout, gamma_len: usize, op: &'static str) -> Result<(usize, usize)> {
    match layout.shape().last() {
        Some(&c) if c > 0 && c == gamma_len => Ok((layout.elem_count() / c, c)),
        _ => Err(Error::shape(
            op,
            format!("input {:?} with gamma/beta of size {gamma_len}", layout.shape()),
        )),
    }
}

/// One row's mean and 1/std.
#[inline(always)]
fn row_stats<T: Float>(x: &[T], eps: T) -> (T, T) {
    let n = T::from_f64(x.len() as f64);
    let mu = lane_sum(x, |v| v) / n;
    let var = lane_sum(x, |v| (v - mu) * (v - mu)) / n;
    (mu, T::ONE / (var + eps).sqrt())
}

/// How many rows ahead the inputs are prefetched, a piece of the prefetch with each piece of
/// output written (a whole row asked for at its start held up the loads behind it).
const PREFETCH_ROWS: usize = 4;

/// Rows per parallel task of the forward (each task ends with one `Writer::finish`): up to 64,
/// fewer when that would leave a thread with under four tasks.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(4 * rayon::current_num_threads()).clamp(1, 64)
}

/// y, mean and 1/std for a run of rows (x, y: rows x c; mean, rstd: per row) through `writer`:
/// through the AVX-512 kernel (layernorm/avx512.rs) when T is f32, the CPU has AVX-512F and the
/// rows are a multiple of 16 wide, else through the generic rows, vectorised by the compiler.
#[allow(clippy::too_many_arguments)]
fn forward_rows<T: Float>(writer: Writer, y: &mut [MaybeUninit<T>], x: &[T], g: &[T], b: &[T], eps: T, mean: &mut [T], rstd: &mut [T]) {
    let c = g.len();
    // Rows not a multiple of 16 wide take the generic rows: the kernel would store a large output
    // of them plainly, the generic rows stream it through a scratch (32768 x 1000: 6.5-9.3 ms
    // against 9.9-13.2). Whatever the output's size, so that a row's bits do not depend on it.
    // (The backward measured the same either way and stays on the kernel.)
    #[cfg(target_arch = "x86_64")]
    if simd::level() == SimdLevel::Avx512 && c.is_multiple_of(16) {
        if let (Some(y), Some(x), Some(g), Some(b), Some(mean), Some(rstd)) = (
            as_f32_uninit(y),
            as_f32(x),
            as_f32(g),
            as_f32(b),
            as_f32_mut(mean),
            as_f32_mut(rstd),
        ) {
            // SAFETY: the feature was detected; the slices hold mean.len() rows of g.len().
            unsafe { avx512::forward_rows(writer.streams(), y, x, g, b, eps.to_f64() as f32, mean, rstd) };
            return;
        }
    }
    vectorised(
        #[inline(always)]
        || {
            for (((y, x), m), rs) in y.chunks_mut(c).zip(x.chunks(c)).zip(mean).zip(rstd) {
                let (mu, r) = row_stats(x, eps);
                // y = (x - mean) / std * g + b
                writer.fill(
                    y,
                    #[inline(always)]
                    |at, y| {
                        prefetch_span(x.as_ptr().wrapping_add(PREFETCH_ROWS * c + at), y.len());
                        for (((y, &x), &g), &b) in y.iter_mut().zip(&x[at..]).zip(&g[at..]).zip(&b[at..]) {
                            y.write((x - mu) * r * g + b);
                        }
                    },
                );
                (*m, *rs) = (mu, r);
            }
        },
    )
}

fn forward_impl<T: Float>(x: &[T], g: &[T], b: &[T], c: usize, eps: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
    let rows = x.len() / c;
    let (eps, block) = (T::from_f64(eps), rows_per_task(rows));
    let writer = Writer::for_output::<T>(x.len());
    let mut mean = vec![T::ZERO; rows];
    let mut rstd = vec![T::ZERO; rows];
    // SAFETY: the blocks (whole rows) cover y, and each row is written whole.
    let y = unsafe {
        filled(x.len(), |y| {
            y.par_chunks_mut(block * c)
                .zip(mean.par_chunks_mut(block).zip(rstd.par_chunks_mut(block)))
                .zip(x.par_chunks(block * c))
                .for_each(|((y, (mean, rstd)), x)| {
                    forward_rows(writer, y, x, g, b, eps, mean, rstd);
                    writer.finish();
                })
        })
    };
    (y, mean, rstd)
}

/// (sum(dxhat), sum(dxhat * xhat)) over a row, dxhat = dy * gamma, xhat = (x - mu) * rstd: one
/// sweep with 32 partial sums of each (two AVX-512 registers of f32 apiece, so four add chains
/// are in flight), which the compiler vectorises.
#[inline(always)]
fn dxhat_sums<T: Float>(x: &[T], dy: &[T], g: &[T], mu: T, r: T) -> (T, T) {
    const LANES: usize = 32;
    let (mut sum, mut sum_xhat) = ([T::ZERO; LANES], [T::ZERO; LANES]);
    let whole = x.len() / LANES * LANES;
    let blocks = x[..whole]
        .chunks_exact(LANES)
        .zip(dy[..whole].chunks_exact(LANES))
        .zip(g[..whole].chunks_exact(LANES));
    for ((x, dy), g) in blocks {
        for j in 0..LANES {
            let dxhat = dy[j] * g[j];
            sum[j] += dxhat;
            sum_xhat[j] += dxhat * ((x[j] - mu) * r);
        }
    }
    let (mut tail, mut tail_xhat) = (T::ZERO, T::ZERO);
    for ((&x, &dy), &g) in x[whole..].iter().zip(&dy[whole..]).zip(&g[whole..]) {
        tail += dy * g;
        tail_xhat += dy * g * ((x - mu) * r);
    }
    let total = |acc: [T; LANES], tail: T| acc.iter().fold(tail, |s, &a| s + a);
    (total(sum, tail), total(sum_xhat, tail_xhat))
}

/// dx for a run of rows (x, dy, dx: rows x c; mean, rstd: per row) through `writer`, adding the
/// rows' dgamma and dbeta terms into dg and db: through the AVX-512 kernel when T is f32 and the
/// CPU has AVX-512F, else through the generic rows, vectorised by the compiler.
#[allow(clippy::too_many_arguments)]
fn backward_rows<T: Float>(
    writer: Writer,
    dx: &mut [MaybeUninit<T>],
    x: &[T],
    dy: &[T],
    g: &[T],
    mean: &[T],
    rstd: &[T],
    dg: &mut [T],
    db: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if simd::level() == SimdLevel::Avx512 {
        if let (Some(dx), Some(x), Some(dy), Some(g), Some(mean), Some(rstd), Some(dg), Some(db)) = (
            as_f32_uninit(dx),
            as_f32(x),
            as_f32(dy),
            as_f32(g),
            as_f32(mean),
            as_f32(rstd),
            as_f32_mut(dg),
            as_f32_mut(db),
        ) {
            // SAFETY: the feature was detected; the slices hold mean.len() rows of g.len().
            unsafe { avx512::backward_rows(writer.streams(), dx, x, dy, g, mean, rstd, dg, db) };
            return;
        }
    }
    let c = g.len();
    let n = T::from_f64(c as f64);
    vectorised(
        #[inline(always)]
        || {
            for ((((dxr, xr), dyr), &mu), &r) in dx.chunks_mut(c).zip(x.chunks(c)).zip(dy.chunks(c)).zip(mean).zip(rstd) {
                let (sum_dxhat, sum_dxhat_xhat) = dxhat_sums(xr, dyr, g, mu, r);
                let (a, bq) = (sum_dxhat / n, sum_dxhat_xhat / n);
                writer.fill(
                    dxr,
                    #[inline(always)]
                    |at, dxr| {
                        prefetch_span(xr.as_ptr().wrapping_add(PREFETCH_ROWS * c + at), dxr.len());
                        prefetch_span(dyr.as_ptr().wrapping_add(PREFETCH_ROWS * c + at), dxr.len());
                        let terms = xr[at..].iter().zip(&dyr[at..]).zip(&g[at..]).zip(&mut dg[at..]).zip(&mut db[at..]);
                        for (dx, ((((&x, &dy), &g), dg), db)) in dxr.iter_mut().zip(terms) {
                            let xhat = (x - mu) * r;
                            dx.write(r * (dy * g - a - xhat * bq));
                            *dg += dy * xhat;
                            *db += dy;
                        }
                    },
                );
            }
        },
    )
}

fn backward_impl<T: Float>(x: &[T], g: &[T], mean: &[T], rstd: &[T], dy: &[T], c: usize) -> (Vec<T>, Vec<T>, Vec<T>) {
    let group = backward_group_rows(mean.len()) * c;
    let writer = Writer::for_output::<T>(x.len());
    let mut partials: Vec<(Vec<T>, Vec<T>)> = Vec::new();
    // SAFETY: the groups cover dx in whole rows, and backward_rows writes every element.
    let dx = unsafe {
        filled(x.len(), |dx| {
            partials = dx
                .par_chunks_mut(group)
                .enumerate()
                .map(|(gi, dx_group)| {
                    let rows = gi * group / c..gi * group / c + dx_group.len() / c;
                    let span = rows.start * c..rows.end * c;
                    let (mut dg, mut db) = (vec![T::ZERO; c], vec![T::ZERO; c]);
                    let (xs, dys) = (&x[span.clone()], &dy[span]);
                    backward_rows(writer, dx_group, xs, dys, g, &mean[rows.clone()], &rstd[rows], &mut dg, &mut db);
                    writer.finish();
                    (dg, db)
                })
                .collect()
        })
    };
    let mut dg = vec![T::ZERO; c];
    let mut db = vec![T::ZERO; c];
    for (pg, pb) in partials {
        for i in 0..c {
            dg[i] += pg[i];
            db[i] += pb[i];
        }
    }
    (dx, dg, db)
}

/// Rows per group of the backward. Each group sums its own dgamma/dbeta partial rows, and the
/// partials are added in group order; the groups depend on the row count alone, so dgamma and
/// dbeta have the same bits from run to run and for any number of threads. (Partials per rayon
/// split, as before, changed with work stealing.) At most 64 groups: their partials cost little
/// to allocate and add (64 x 2 x 768 values), and 64 tasks balance over the threads.
fn backward_group_rows(rows: usize) -> usize {
    const GROUPS: usize = 64;
    const MIN_ROWS: usize = 16;
    rows.div_ceil(GROUPS).max(MIN_ROWS)
}

pub fn forward(
    x: &CpuStorage,
    lx: &Layout,
    gamma: &CpuStorage,
    beta: &CpuStorage,
    eps: f64,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    let op = "layer_norm";
    let (_, c) = check(lx, gamma.len(), op)?;
    if beta.len() != c {
        return Err(Error::shape(op, format!("beta has {} elements for last dim {c}", beta.len())));
    }
    let vec_layout = Layout::contiguous(&[c]);
    let (xd, gd, bd) = (
        float_data(x, lx, op)?,
        float_data(gamma, &vec_layout, op)?,
        float_data(beta, &vec_layout, op)?,
    );
    Ok(match (xd, gd, bd) {
        (FloatData::F32(x_), FloatData::F32(g), FloatData::F32(b)) => {
            let (y, m, r) = forward_impl(&x_, &g, &b, c, eps);
            (FloatOut::F32(y).into_storage(x.dtype()), CpuStorage::F32(m), CpuStorage::F32(r))
        }
        (FloatData::F64(x_), FloatData::F64(g), FloatData::F64(b)) => {
            let (y, m, r) = forward_impl(&x_, &g, &b, c, eps);
            (CpuStorage::F64(y), CpuStorage::F64(m), CpuStorage::F64(r))
        }
        _ => return Err(Error::dtype(op, "input, gamma and beta must share a dtype")),
    })
}

pub fn backward(
    x: &CpuStorage,
    lx: &Layout,
    gamma: &CpuStorage,
    mean: &CpuStorage,
    rstd: &CpuStorage,
    dy: &CpuStorage,
    ldy: &Layout,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    let op = "layer_norm_backward";
    let (rows, c) = check(lx, gamma.len(), op)?;
    let (vl, rl) = (Layout::contiguous(&[c]), Layout::contiguous(&[rows]));
    let parts = (
        float_data(x, lx, op)?,
        float_data(gamma, &vl, op)?,
        float_data(mean, &rl, op)?,
        float_data(rstd, &rl, op)?,
        float_data(dy, ldy, op)?,
    );
    let dt = gamma.dtype();
    Ok(match parts {
        (FloatData::F32(x_), FloatData::F32(g), FloatData::F32(m), FloatData::F32(r), FloatData::F32(d)) => {
            let (dx, dg, db) = backward_impl(&x_, &g, &m, &r, &d, c);
            (
                FloatOut::F32(dx).into_storage(x.dtype()),
                FloatOut::F32(dg).into_storage(dt),
                FloatOut::F32(db).into_storage(dt),
            )
        }
        (FloatData::F64(x_), FloatData::F64(g), FloatData::F64(m), FloatData::F64(r), FloatData::F64(d)) => {
            let (dx, dg, db) = backward_impl(&x_, &g, &m, &r, &d, c);
            (CpuStorage::F64(dx), CpuStorage::F64(dg), CpuStorage::F64(db))
        }
        _ => return Err(Error::dtype(op, "operands must share a dtype")),
    })
}
