//! Fused scaled-dot-product attention, flash style, on the CPU.
//!
//! Forward: for each (batch, head, block of BR queries), stream key/value tiles of BC keys,
//! keeping a running max and sum per query (online softmax), so at most one BR x BC tile of
//! scores exists at a time; writes O and the row logsumexp. Backward (FlashAttention-2's order):
//! per (batch, head), for each key tile, for each query block, recompute P = exp(S - lse) and
//! accumulate dV += P^T dO, dS = P (dO V^T - rowsum(dO O)), dQ += dS K, dK += dS^T Q.
//! FLOPs: forward 4*B*H*Sq*Sk*D, backward 10*B*H*Sq*Sk*D (before masking).

use super::float::{accumulator, float_data, Float, FloatData, FloatOut};
use super::CpuStorage;
use crate::backend::AttentionParams;
use crate::{Error, Layout, Result};
use rayon::prelude::*;

const BR: usize = 32;
const BC: usize = 64;

/// A [B, H, S, D] operand with a contiguous last dim.
#[derive(Clone, Copy)]
struct Heads<'a, T> {
    data: &'a [T],
    offset: usize,
    strides: [usize; 3],
}

impl<'a, T> Heads<'a, T> {
    #[inline(always)]
    fn row(&self, b: usize, h: usize, i: usize, d: usize) -> &'a [T] {
        let o = self.offset + b * self.strides[0] + h * self.strides[1] + i * self.strides[2];
        &self.data[o..o + d]
    }
}

use crate::backend::{attention_dims, AttentionDims as Dims};

/// Dot product with 8 independent partial sums so the compiler can vectorise it.
#[inline(always)]
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s = T::ZERO;
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    acc.iter().fold(s, |x, &y| x + y)
}

#[inline(always)]
fn axpy<T: Float>(y: &mut [T], alpha: T, x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// Which keys query i may see: causal bound and padding mask.
struct Visibility<'a> {
    causal: bool,
    offset: isize,
    mask: Option<&'a [bool]>,
}

impl Visibility<'_> {
    #[inline(always)]
    fn sees(&self, b: usize, sk: usize, i: usize, j: usize) -> bool {
        (!self.causal || (j as isize) <= i as isize + self.offset) && self.mask.is_none_or(|m| m[b * sk + j])
    }
    /// Keys at or past this index are causally hidden from every query in [.., i_end).
    fn key_end(&self, i_end: usize, sk: usize) -> usize {
        if self.causal {
            (i_end as isize + self.offset).clamp(0, sk as isize) as usize
        } else {
            sk
        }
    }
}

fn forward_impl<T: Float>(q: Heads<T>, k: Heads<T>, v: Heads<T>, dims: Dims, vis: &Visibility, scale: T) -> (Vec<T>, Vec<T>) {
    let Dims { b: nb, h: nh, sq, sk, d } = dims;
    let mut out = vec![T::ZERO; nb * nh * sq * d];
    let mut lse = vec![T::NEG_INFINITY; nb * nh * sq];
    let blocks_per_head = sq.div_ceil(BR);
    // Work items are (b, h, query block); each writes its own rows of out and lse.
    let tasks: Vec<(usize, usize, usize)> = (0..nb * nh)
        .flat_map(|bh| (0..blocks_per_head).map(move |qb| (bh / nh, bh % nh, qb)))
        .collect();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let lse_ptr = SendPtr(lse.as_mut_ptr());
    tasks.into_par_iter().for_each(|(b, h, qb)| {
        let i0 = qb * BR;
        let rows = BR.min(sq - i0);
        let mut m = [T::NEG_INFINITY; BR];
        let mut l = [T::ZERO; BR];
        let mut acc = vec![T::ZERO; BR * d];
        let mut s = [T::ZERO; BC];
        let key_end = vis.key_end(i0 + rows, sk);
        for j0 in (0..key_end).step_by(BC) {
            let cols = BC.min(key_end - j0);
            for r in 0..rows {
                let i = i0 + r;
                let qi = q.row(b, h, i, d);
                let mut tile_max = T::NEG_INFINITY;
                for (c, sc) in s.iter_mut().enumerate().take(cols) {
                    let j = j0 + c;
                    *sc = if vis.sees(b, sk, i, j) {
                        dot(qi, k.row(b, h, j, d)) * scale
                    } else {
                        T::NEG_INFINITY
                    };
                    tile_max = tile_max.max(*sc);
                }
                if tile_max == T::NEG_INFINITY {
                    continue;
                }
                let new_m = m[r].max(tile_max);
                let correction = (m[r] - new_m).exp();
                l[r] *= correction;
                let acc_r = &mut acc[r * d..(r + 1) * d];
                acc_r.iter_mut().for_each(|a| *a *= correction);
                for (c, &sc) in s.iter().enumerate().take(cols) {
                    if sc == T::NEG_INFINITY {
                        continue;
                    }
                    let p = (sc - new_m).exp();
                    l[r] += p;
                    axpy(acc_r, p, v.row(b, h, j0 + c, d));
                }
                m[r] = new_m;
            }
        }
        let base = (b * nh + h) * sq + i0;
        for r in 0..rows {
            // SAFETY: rows base..base+rows belong to this task alone.
            unsafe {
                let o = std::slice::from_raw_parts_mut(out_ptr.get().add((base + r) * d), d);
                if l[r] > T::ZERO {
                    let inv = T::ONE / l[r];
                    for (o, &a) in o.iter_mut().zip(&acc[r * d..(r + 1) * d]) {
                        *o = a * inv;
                    }
                    *lse_ptr.get().add(base + r) = m[r] + l[r].ln();
                }
            }
        }
    });
    (out, lse)
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// Through a method, so closures capture the Send wrapper rather than the raw field.
    fn get(&self) -> *mut T {
        self.0
    }
}

#[allow(clippy::too_many_arguments)]
fn backward_impl<T: Float>(
    q: Heads<T>,
    k: Heads<T>,
    v: Heads<T>,
    o: Heads<T>,
    lse: &[T],
    dout: Heads<T>,
    dims: Dims,
    vis: &Visibility,
    scale: T,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let Dims { b: nb, h: nh, sq, sk, d } = dims;
    let mut dq = accumulator(nb * nh * sq * d);
    let mut dk = accumulator(nb * nh * sk * d);
    let mut dv = accumulator(nb * nh * sk * d);
    let head_q = (sq * d).max(1);
    let head_k = (sk * d).max(1);
    dq.par_chunks_mut(head_q)
        .zip(dk.par_chunks_mut(head_k).zip(dv.par_chunks_mut(head_k)))
        .enumerate()
        .for_each(|(bh, (dq, (dk, dv)))| {
            if sq == 0 || sk == 0 || d == 0 {
                return;
            }
            let (b, h) = (bh / nh, bh % nh);
            let lse = &lse[bh * sq..(bh + 1) * sq];
            // D_i = rowsum(dO_i * O_i).
            let delta: Vec<T> = (0..sq).map(|i| dot(dout.row(b, h, i, d), o.row(b, h, i, d))).collect();
            let mut p = [T::ZERO; BR * BC];
            for j0 in (0..sk).step_by(BC) {
                let cols = BC.min(sk - j0);
                for i0 in (0..sq).step_by(BR) {
                    let rows = BR.min(sq - i0);
                    if vis.key_end(i0 + rows, sk) <= j0 {
                        continue;
                    }
                    // P tile and dV.
                    for r in 0..rows {
                        let i = i0 + r;
                        let qi = q.row(b, h, i, d);
                        for c in 0..cols {
                            let j = j0 + c;
                            p[r * BC + c] = if lse[i] != T::NEG_INFINITY && vis.sees(b, sk, i, j) {
                                (dot(qi, k.row(b, h, j, d)) * scale - lse[i]).exp()
                            } else {
                                T::ZERO
                            };
                        }
                    }
                    for r in 0..rows {
                        let doi = dout.row(b, h, i0 + r, d);
                        for c in 0..cols {
                            let pv = p[r * BC + c];
                            if pv != T::ZERO {
                                axpy(&mut dv[(j0 + c) * d..(j0 + c + 1) * d], pv, doi);
                            }
                        }
                    }
                    // dS = P (dP - D), then dQ and dK.
                    for r in 0..rows {
                        let i = i0 + r;
                        let doi = dout.row(b, h, i, d);
                        let qi = q.row(b, h, i, d);
                        for c in 0..cols {
                            let pv = p[r * BC + c];
                            if pv == T::ZERO {
                                continue;
                            }
                            let j = j0 + c;
                            let ds = pv * (dot(doi, v.row(b, h, j, d)) - delta[i]) * scale;
                            axpy(&mut dq[i * d..(i + 1) * d], ds, k.row(b, h, j, d));
                            axpy(&mut dk[j * d..(j + 1) * d], ds, qi);
                        }
                    }
                }
            }
        });
    (dq, dk, dv)
}

fn heads<'a, T>(data: &'a [T], layout: &Layout) -> Heads<'a, T> {
    let s = layout.strides();
    Heads {
        data,
        offset: layout.offset(),
        strides: [s[0], s[1], s[2]],
    }
}

fn mask_vec(mask: Option<(&CpuStorage, &Layout)>, dims: Dims, op: &'static str) -> Result<Option<Vec<bool>>> {
    let Some((m, lm)) = mask else { return Ok(None) };
    if lm.shape() != [dims.b, dims.sk] {
        return Err(Error::shape(
            op,
            format!("key mask {:?} does not match [B, Sk] = [{}, {}]", lm.shape(), dims.b, dims.sk),
        ));
    }
    let values = m.gather(lm).to_f64_vec();
    Ok(Some(values.into_iter().map(|x| x != 0.0).collect()))
}

/// Float data of a whole storage (layouts then index into it).
fn whole<'a>(s: &'a CpuStorage, op: &'static str) -> Result<FloatData<'a>> {
    float_data(s, &Layout::contiguous(&[s.len()]), op)
}

type Operand<'a> = (&'a CpuStorage, &'a Layout);

pub fn forward(q: Operand, k: Operand, v: Operand, mask: Option<Operand>, params: AttentionParams) -> Result<(CpuStorage, CpuStorage)> {
    let op = "attention";
    let dims = attention_dims(q.1, k.1, v.1, op)?;
    let mask = mask_vec(mask, dims, op)?;
    let vis = Visibility {
        causal: params.causal,
        offset: dims.sk as isize - dims.sq as isize,
        mask: mask.as_deref(),
    };
    let dtype = q.0.dtype();
    Ok(match (whole(q.0, op)?, whole(k.0, op)?, whole(v.0, op)?) {
        (FloatData::F32(qd), FloatData::F32(kd), FloatData::F32(vd)) => {
            let (o, l) = forward_impl(heads(&qd, q.1), heads(&kd, k.1), heads(&vd, v.1), dims, &vis, params.scale as f32);
            (FloatOut::F32(o).into_storage(dtype), CpuStorage::F32(l))
        }
        (FloatData::F64(qd), FloatData::F64(kd), FloatData::F64(vd)) => {
            let (o, l) = forward_impl(heads(&qd, q.1), heads(&kd, k.1), heads(&vd, v.1), dims, &vis, params.scale);
            (CpuStorage::F64(o), CpuStorage::F64(l))
        }
        _ => return Err(Error::dtype(op, "q, k and v must share a dtype")),
    })
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: Operand,
    k: Operand,
    v: Operand,
    mask: Option<Operand>,
    out: Operand,
    lse: &CpuStorage,
    dout: Operand,
    params: AttentionParams,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    let op = "attention_backward";
    let dims = attention_dims(q.1, k.1, v.1, op)?;
    if out.1.shape() != q.1.shape() || dout.1.shape() != q.1.shape() {
        return Err(Error::shape(
            op,
            format!("out {:?} / grad {:?} must match q {:?}", out.1.shape(), dout.1.shape(), q.1.shape()),
        ));
    }
    let mask = mask_vec(mask, dims, op)?;
    let vis = Visibility {
        causal: params.causal,
        offset: dims.sk as isize - dims.sq as isize,
        mask: mask.as_deref(),
    };
    let dtype = q.0.dtype();
    // O and dO are read row by row, so they must have contiguous rows too.
    let (o_c, do_c) = (out.0.gather(out.1), dout.0.gather(dout.1));
    let row_layout = Layout::contiguous(q.1.shape());
    let parts = (
        whole(q.0, op)?,
        whole(k.0, op)?,
        whole(v.0, op)?,
        whole(&o_c, op)?,
        whole(lse, op)?,
        whole(&do_c, op)?,
    );
    Ok(match parts {
        (FloatData::F32(qd), FloatData::F32(kd), FloatData::F32(vd), FloatData::F32(od), FloatData::F32(ld), FloatData::F32(dd)) => {
            let (dq, dk, dv) = backward_impl(
                heads(&qd, q.1),
                heads(&kd, k.1),
                heads(&vd, v.1),
                heads(&od, &row_layout),
                &ld,
                heads(&dd, &row_layout),
                dims,
                &vis,
                params.scale as f32,
            );
            (
                FloatOut::F32(dq).into_storage(dtype),
                FloatOut::F32(dk).into_storage(dtype),
                FloatOut::F32(dv).into_storage(dtype),
            )
        }
        (FloatData::F64(qd), FloatData::F64(kd), FloatData::F64(vd), FloatData::F64(od), FloatData::F64(ld), FloatData::F64(dd)) => {
            let (dq, dk, dv) = backward_impl(
                heads(&qd, q.1),
                heads(&kd, k.1),
                heads(&vd, v.1),
                heads(&od, &row_layout),
                &ld,
                heads(&dd, &row_layout),
                dims,
                &vis,
                params.scale,
            );
            (CpuStorage::F64(dq), CpuStorage::F64(dk), CpuStorage::F64(dv))
        }
        _ => return Err(Error::dtype(op, "q, k, v, out, lse and grad must share a dtype")),
    })
}
