//! Row-wise softmax / log-softmax and the fused softmax cross-entropy. Each row is read from
//! memory once: the max, the sum of exponentials and the output are sweeps of the row while it is
//! in cache, each with 16 independent partial results and the vectorised exp (`vmath`: vscalefps
//! in the AVX-512 build, fused multiply-adds in the AVX2 one); rows run in parallel. The
//! cross-entropy gradient is streamed past the cache (`stream::Writer`): 2048x32768 backward
//! 24-26 -> 13-15 ms on the EPYC VM, once the fused exp had made it bound by memory. Bytes:
//! softmax reads and writes each element; xent forward reads the logits once (4 B per f32
//! element), backward reads them and writes the gradient.

use super::float::{filled, float_data, Float, FloatData, FloatOut};
use super::stream::Writer;
use super::vmath::{exp_shifted_scaled, lane_sum, logsumexp};
use super::CpuStorage;
use crate::{with_float, with_float2, Error, Layout, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

fn last_dim(layout: &Layout, op: &'static str) -> Result<(usize, usize)> {
    match layout.shape().last() {
        Some(&c) if c > 0 => Ok((layout.elem_count() / c, c)),
        _ => Err(Error::shape(op, format!("needs a non-empty last dim, got {:?}", layout.shape()))),
    }
}

/// f(row of x, row of out) for every row; f must write its whole output row.
fn rows_map<T: Float>(x: &[T], c: usize, f: impl Fn(&[T], &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    // SAFETY: the rows cover the output and f writes each whole row.
    unsafe { filled(x.len(), |out| out.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(o, r)| f(r, o))) }
}

pub fn softmax(x: &CpuStorage, layout: &Layout, log: bool) -> Result<CpuStorage> {
    let (_, c) = last_dim(layout, "softmax")?;
    let data = float_data(x, layout, "softmax")?;
    Ok(with_float!(data, x => softmax_rows(x, c, log)).into_storage(x.dtype()))
}

fn softmax_rows<T: Float>(x: &[T], c: usize, log: bool) -> Vec<T> {
    rows_map(x, c, |r, o| {
        let lse = logsumexp(r);
        if log {
            for (o, &v) in o.iter_mut().zip(r) {
                o.write(v - lse);
            }
        } else {
            exp_shifted_scaled(o, r, lse, T::ONE);
        }
    })
}

pub fn softmax_backward(y: &CpuStorage, ly: &Layout, grad: &CpuStorage, lg: &Layout, log: bool) -> Result<CpuStorage> {
    let (_, c) = last_dim(ly, "softmax_backward")?;
    let (yd, gd) = (float_data(y, ly, "softmax_backward")?, float_data(grad, lg, "softmax_backward")?);
    Ok(with_float2!("softmax_backward", yd, gd, (y, g) => softmax_backward_impl(y, g, c, log)).into_storage(y.dtype()))
}

fn softmax_backward_impl<T: Float>(y: &[T], g: &[T], c: usize, log: bool) -> Vec<T> {
    // SAFETY: the rows cover the output and each branch writes its whole row.
    unsafe {
        filled(y.len(), |out| {
            out.par_chunks_mut(c)
                .zip(y.par_chunks(c).zip(g.par_chunks(c)))
                .for_each(|(o, (yr, gr))| {
                    if log {
                        // y = log p: dx = dy - p * sum(dy)
                        let s = lane_sum(gr, |v| v);
                        for ((o, &y), &g) in o.iter_mut().zip(yr).zip(gr) {
                            o.write(g - y.exp() * s);
                        }
                    } else {
                        // dx = p * (dy - <p, dy>)
                        let dot = yr.iter().zip(gr).fold(T::ZERO, |s, (&a, &b)| s + a * b);
                        for ((o, &y), &g) in o.iter_mut().zip(yr).zip(gr) {
                            o.write(y * (g - dot));
                        }
                    }
                })
        })
    }
}

/// Targets as i64 (ignore_index allowed), checked against the class count.
fn targets_i64(t: &CpuStorage, lt: &Layout, rows: usize, classes: usize, ignore: i64) -> Result<Vec<i64>> {
    if lt.elem_count() != rows {
        return Err(Error::shape("softmax_xent", format!("{} targets for {rows} rows", lt.elem_count())));
    }
    let values: Vec<i64> = match t {
        CpuStorage::I64(v) => lt.offsets().map(|o| v[o]).collect(),
        CpuStorage::U32(v) => lt.offsets().map(|o| v[o] as i64).collect(),
        other => {
            return Err(Error::dtype(
                "softmax_xent",
                format!("targets must be i64 or u32, got {}", other.dtype()),
            ))
        }
    };
    if let Some(bad) = values.iter().find(|&&v| v != ignore && (v < 0 || v as usize >= classes)) {
        return Err(Error::index(
            "softmax_xent",
            format!("target {bad} out of range for {classes} classes"),
        ));
    }
    Ok(values)
}

pub fn xent_forward(x: &CpuStorage, lx: &Layout, t: &CpuStorage, lt: &Layout, ignore: i64) -> Result<(CpuStorage, CpuStorage)> {
    let (rows, c) = last_dim(lx, "softmax_xent")?;
    let targets = targets_i64(t, lt, rows, c, ignore)?;
    fn run<T: Float>(x: &[T], c: usize, targets: &[i64], ignore: i64) -> (Vec<T>, Vec<T>) {
        let per_row: Vec<(T, T)> = x
            .par_chunks(c)
            .zip(targets.par_iter())
            .map(|(r, &t)| {
                let lse = logsumexp(r);
                (if t == ignore { T::ZERO } else { lse - r[t as usize] }, lse)
            })
            .collect();
        per_row.into_iter().unzip()
    }
    Ok(match float_data(x, lx, "softmax_xent")? {
        FloatData::F32(v) => {
            let (loss, lse) = run(&v, c, &targets, ignore);
            (FloatOut::F32(loss).into_storage(x.dtype()), CpuStorage::F32(lse))
        }
        FloatData::F64(v) => {
            let (loss, lse) = run(&v, c, &targets, ignore);
            (CpuStorage::F64(loss), CpuStorage::F64(lse))
        }
    })
}

#[allow(clippy::too_many_arguments)]
pub fn xent_backward(
    x: &CpuStorage,
    lx: &Layout,
    t: &CpuStorage,
    lt: &Layout,
    lse: &CpuStorage,
    grad: &CpuStorage,
    lg: &Layout,
    ignore: i64,
) -> Result<CpuStorage> {
    let (rows, c) = last_dim(lx, "softmax_xent_backward")?;
    let targets = targets_i64(t, lt, rows, c, ignore)?;
    let op = "softmax_xent_backward";
    let xd = float_data(x, lx, op)?;
    let lsed = float_data(lse, &Layout::contiguous(&[rows]), op)?;
    let gd = float_data(grad, lg, op)?;
    fn run<T: Float>(x: &[T], lse: &[T], g: &[T], c: usize, targets: &[i64], ignore: i64) -> Vec<T> {
        let writer = Writer::for_output::<T>(x.len());
        // SAFETY: every row is written whole, ignored rows with zeros.
        unsafe {
            filled(x.len(), |out| {
                out.par_chunks_mut(c).enumerate().for_each(|(row, o)| {
                    let t = targets[row];
                    if t == ignore {
                        o.fill(MaybeUninit::new(T::ZERO));
                        return;
                    }
                    let (xr, t) = (&x[row * c..(row + 1) * c], t as usize);
                    writer.fill(o, |at, piece| {
                        exp_shifted_scaled(piece, &xr[at..at + piece.len()], lse[row], g[row]);
                        if let Some(v) = t.checked_sub(at).and_then(|i| piece.get_mut(i)) {
                            v.write(v.assume_init_read() - g[row]);
                        }
                    });
                    writer.finish();
                })
            })
        }
    }
    let out = match (xd, lsed, gd) {
        (FloatData::F32(x), FloatData::F32(l), FloatData::F32(g)) => FloatOut::F32(run(&x, &l, &g, c, &targets, ignore)),
        (FloatData::F64(x), FloatData::F64(l), FloatData::F64(g)) => FloatOut::F64(run(&x, &l, &g, c, &targets, ignore)),
        _ => return Err(Error::dtype(op, "operands have different dtypes")),
    };
    Ok(out.into_storage(x.dtype()))
}
