//! Fused layer norm over the last dim. Forward keeps mean and 1/std per row; backward computes dx
//! row-parallel and dgamma/dbeta as per-chunk partial sums reduced at the end (two stages, as the
//! GPU kernel does).

use super::float::{float_data, Float, FloatData, FloatOut};
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
            let mu = x.iter().copied().sum::<T>() / n;
            let var = x.iter().map(|&v| (v - mu) * (v - mu)).sum::<T>() / n;
            let r = T::ONE / (var + T::from_f64(eps)).sqrt();
            for i in 0..c {
                y[i] = (x[i] - mu) * r * g[i] + b[i];
            }
            *m = mu;
            *rs = r;
        });
    (y, mean, rstd)
}

const ROWS_PER_CHUNK: usize = 64;

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
                let mut sum_dxhat = T::ZERO;
                let mut sum_dxhat_xhat = T::ZERO;
                for i in 0..c {
                    let xhat = (xr[i] - mu) * r;
                    let dxhat = dyr[i] * g[i];
                    sum_dxhat += dxhat;
                    sum_dxhat_xhat += dxhat * xhat;
                    dg[i] += dyr[i] * xhat;
                    db[i] += dyr[i];
                }
                let n = T::from_f64(c as f64);
                let (a, bq) = (sum_dxhat / n, sum_dxhat_xhat / n);
                for i in 0..c {
                    let xhat = (xr[i] - mu) * r;
                    dxr[i] = r * (dyr[i] * g[i] - a - xhat * bq);
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
