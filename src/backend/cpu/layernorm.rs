//! Fused layer norm over the last dim, one pass over memory: each row is read once into L1, its
//! mean and variance (two sweeps of the cached row, 16 partial sums each) and output computed
//! there. Forward keeps mean and 1/std per row; backward computes dx row-parallel and
//! dgamma/dbeta as per-chunk partial sums reduced at the end (two stages, as the GPU kernel does).
//! Bytes: forward reads x, writes y (8 B per f32 element); backward reads x and dy, writes dx.

use super::float::{float_data, Float, FloatData, FloatOut};
use super::vmath::lane_sum;
use super::CpuStorage;
use crate::{Error, Layout, Result};
use rayon::prelude::*;

fn check(layout: &Layout, gamma_len: usize, op: &'static str) -> Result<(usize, usize)> {
    match layout.shape().last() {
        Some(&c) if c > 0 && c == gamma_len => Ok((layout.elem_count() / c, c)),
        _ => Err(Error::shape(
            op,
            format!("input {:?} with gamma/beta of size {gamma_len}", layout.shape()),
        )),
    }
}

fn forward_impl<T: Float>(x: &[T], g: &[T], b: &[T], c: usize, eps: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
    let rows = x.len() / c;
    let mut y = vec![T::ZERO; x.len()];
    let mut mean = vec![T::ZERO; rows];
    let mut rstd = vec![T::ZERO; rows];
    y.par_chunks_mut(c)
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .zip(x.par_chunks(c))
        .for_each(|((y, (m, rs)), x)| {
            let n = T::from_f64(c as f64);
            let mu = lane_sum(x, |v| v) / n;
            let var = lane_sum(x, |v| (v - mu) * (v - mu)) / n;
            let r = T::ONE / (var + T::from_f64(eps)).sqrt();
            for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(g).zip(b) {
                *y = (x - mu) * r * g + b;
            }
            *m = mu;
            *rs = r;
        });
    (y, mean, rstd)
}

const ROWS_PER_CHUNK: usize = 64;

/// (sum(dxhat), sum(dxhat * (x - mu))) over a row, dxhat = dy * gamma, with 16 partial sums each.
#[inline(always)]
fn dxhat_sums<T: Float>(x: &[T], dy: &[T], g: &[T], mu: T) -> (T, T) {
    let (mut s1, mut s2) = ([T::ZERO; 16], [T::ZERO; 16]);
    let lanes = x.len() / 16 * 16;
    for ((xc, dc), gc) in x[..lanes].chunks_exact(16).zip(dy.chunks_exact(16)).zip(g.chunks_exact(16)) {
        for l in 0..16 {
            let dxhat = dc[l] * gc[l];
            s1[l] += dxhat;
            s2[l] += dxhat * (xc[l] - mu);
        }
    }
    let (mut t1, mut t2) = (T::ZERO, T::ZERO);
    for i in lanes..x.len() {
        let dxhat = dy[i] * g[i];
        t1 += dxhat;
        t2 += dxhat * (x[i] - mu);
    }
    (s1.iter().fold(t1, |s, &a| s + a), s2.iter().fold(t2, |s, &a| s + a))
}

fn backward_impl<T: Float>(x: &[T], g: &[T], mean: &[T], rstd: &[T], dy: &[T], c: usize) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut dx = vec![T::ZERO; x.len()];
    let chunk = ROWS_PER_CHUNK * c;
    let partials: Vec<(Vec<T>, Vec<T>)> = dx
        .par_chunks_mut(chunk)
        .enumerate()
        .map(|(ci, dx_chunk)| {
            let mut dg = vec![T::ZERO; c];
            let mut db = vec![T::ZERO; c];
            for (ri, dxr) in dx_chunk.chunks_mut(c).enumerate() {
                let row = ci * ROWS_PER_CHUNK + ri;
                let (xr, dyr) = (&x[row * c..(row + 1) * c], &dy[row * c..(row + 1) * c]);
                let (mu, r) = (mean[row], rstd[row]);
                let n = T::from_f64(c as f64);
                let (sum_dxhat, sum_dxhat_xc) = dxhat_sums(xr, dyr, g, mu);
                let (a, bq) = (sum_dxhat / n, sum_dxhat_xc * r / n);
                for (((((dx, &x), &dy), &g), dg), db) in dxr.iter_mut().zip(xr).zip(dyr).zip(g).zip(dg.iter_mut()).zip(db.iter_mut()) {
                    let xhat = (x - mu) * r;
                    *dx = r * (dy * g - a - xhat * bq);
                    *dg += dy * xhat;
                    *db += dy;
                }
            }
            (dg, db)
        })
        .collect();
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
