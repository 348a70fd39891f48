//! Fused scaled-dot-product attention on the CPU, flash style on the GEMM micro-kernel.
//!
//! Forward: for each (batch, head, block of query rows) in parallel, S = Q_blk K^T (rows x keys)
//! is computed by the packed GEMM (gemm_serial) into a per-thread workspace, scaled, masked and
//! turned into softmax rows with the vectorised exp, and O_blk = P V by the GEMM again; the row
//! logsumexp is kept for the backward. Only one strip of scores (64-256 rows, about 64K
//! elements) exists per thread, never the full score matrix. Backward (per batch and head, so dK
//! and dV are private): for each 128-row query block, recompute P from the saved logsumexp,
//! dP = dO_blk V^T, dS = P (dP - rowsum(dO O)), then dQ_blk += dS K, dK += dS^T Q_blk and
//! dV += P^T dO_blk, all five products on the GEMM.
//! FLOPs: forward 4*B*H*Sq*Sk*D, backward 10*B*H*Sq*Sk*D (before masking; causal blocks stop at
//! the diagonal). Bytes: Q, K, V, O once each (K and V are re-read from cache per query block).

use super::float::{accumulator, float_data, Float, FloatData, FloatOut};
use super::gemm::{gemm_serial, workspace, MatRef};
use super::vmath::{exp_shifted_sum, lane_max, vectorised};
use super::CpuStorage;
use crate::backend::AttentionParams;
use crate::{Error, Layout, Result};
use rayon::prelude::*;
use std::cell::RefCell;

/// Query rows per backward block (two strips, P and dS, of up to 128 x Sk). 128 rather than 64
/// once partial GEMM tiles ran edge kernels: b8 h8 s197 d64 backward 12.1-13.5 -> 10.7-11.3 ms
/// (three alternating runs; 96 was as fast), as dK and dV's products are twice as deep.
const BACKWARD_QUERY_BLOCK: usize = 128;

/// Score elements per forward strip: a thread holds one strip of query_block(keys) x keys scores.
const STRIP_ELEMENTS: usize = 1 << 16;

/// Query rows per forward block: as many as fit STRIP_ELEMENTS (so K and V are packed once per
/// head for ViT-length sequences), between 64 and 256, a multiple of 8.
fn query_block(keys: usize) -> usize {
    (STRIP_ELEMENTS / keys.max(1)).clamp(64, 256) / 8 * 8
}

thread_local! {
    // Per-thread score and gradient strips (u64 words, aligned for f32 and f64).
    static STRIPS: RefCell<(Vec<u64>, Vec<u64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

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

    /// Rows i0.. of head (b, h) as a matrix [rows, D].
    fn rows_from(&self, b: usize, h: usize, i0: usize) -> MatRef<'a, T> {
        MatRef {
            data: self.data,
            offset: self.offset + b * self.strides[0] + h * self.strides[1] + i0 * self.strides[2],
            rs: self.strides[2],
            cs: 1,
        }
    }

    /// Head (b, h) transposed, [D, S]: as K^T or V^T in a product.
    fn transposed(&self, b: usize, h: usize) -> MatRef<'a, T> {
        let m = self.rows_from(b, h, 0);
        MatRef { rs: 1, cs: m.rs, ..m }
    }
}

/// A B (A: rows x d, B: d x cols) into `buf` viewed as a row-major rows x cols strip.
fn strip_product<'a, T: Float>(buf: &'a mut Vec<u64>, rows: usize, cols: usize, d: usize, a: &MatRef<T>, b: &MatRef<T>) -> &'a mut [T] {
    let s = workspace::<T>(buf, rows * cols);
    s.fill(T::ZERO);
    gemm_serial(rows, cols, d, a, b, s, cols);
    s
}

/// A row-major [rows, cols] strip as a matrix, or transposed.
fn strip<T>(data: &[T], cols: usize, transposed: bool) -> MatRef<'_, T> {
    let (rs, cs) = if transposed { (1, cols) } else { (cols, 1) };
    MatRef { data, offset: 0, rs, cs }
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

/// Which keys query i may see: causal bound and padding mask.
struct Visibility<'a> {
    causal: bool,
    offset: isize,
    mask: Option<&'a [bool]>,
}

impl Visibility<'_> {
    /// Keys at or past this index are causally hidden from every query in [.., i_end).
    fn key_end(&self, i_end: usize, sk: usize) -> usize {
        if self.causal {
            (i_end as isize + self.offset).clamp(0, sk as isize) as usize
        } else {
            sk
        }
    }
}

impl Visibility<'_> {
    /// Scales a row of raw scores for query i and hides the keys it may not see (-inf).
    /// Returns the row maximum (-inf when every key is hidden). The causally visible keys are a
    /// prefix, so the row is a scaled prefix and a -inf rest; the padding mask, where there is
    /// one, then picks keys out of the prefix.
    #[inline(always)]
    fn scale_and_mask<T: Float>(&self, row: &mut [T], b: usize, sk: usize, i: usize, scale: T) -> T {
        let visible = if self.causal {
            (i as isize + self.offset + 1).clamp(0, row.len() as isize) as usize
        } else {
            row.len()
        };
        let (seen, hidden) = row.split_at_mut(visible);
        hidden.fill(T::NEG_INFINITY);
        match self.mask {
            None => seen.iter_mut().for_each(|x| *x *= scale),
            Some(mask) => {
                for (x, &keep) in seen.iter_mut().zip(&mask[b * sk..]) {
                    *x = if keep { *x * scale } else { T::NEG_INFINITY };
                }
            }
        }
        lane_max(row)
    }
}

fn forward_impl<T: Float>(q: Heads<T>, k: Heads<T>, v: Heads<T>, dims: Dims, vis: &Visibility, scale: T) -> (Vec<T>, Vec<T>) {
    let Dims { b: nb, h: nh, sq, sk, d } = dims;
    let mut out = accumulator(nb * nh * sq * d);
    let mut lse = vec![T::NEG_INFINITY; nb * nh * sq];
    if sq == 0 || d == 0 {
        return (out, lse);
    }
    out.par_chunks_mut(sq * d)
        .zip(lse.par_chunks_mut(sq))
        .enumerate()
        .for_each(|(bh, (out, lse))| {
            let (b, h) = (bh / nh, bh % nh);
            let qb = query_block(sk);
            for (blk, (o, l)) in out.chunks_mut(qb * d).zip(lse.chunks_mut(qb)).enumerate() {
                let (i0, rows) = (blk * qb, l.len());
                let keys = vis.key_end(i0 + rows, sk);
                if keys == 0 {
                    continue;
                }
                STRIPS.with(|cell| {
                    let mut strips = cell.borrow_mut();
                    let p = strip_product(&mut strips.0, rows, keys, d, &q.rows_from(b, h, i0), &k.transposed(b, h));
                    vectorised(
                        #[inline(always)]
                        || {
                            for (r, row) in p.chunks_mut(keys).enumerate() {
                                let max = vis.scale_and_mask(row, b, sk, i0 + r, scale);
                                if max == T::NEG_INFINITY {
                                    row.fill(T::ZERO);
                                    continue;
                                }
                                let sum = exp_shifted_sum(row, max);
                                let inv = T::ONE / sum;
                                row.iter_mut().for_each(|x| *x *= inv);
                                l[r] = max + sum.ln();
                            }
                        },
                    );
                    gemm_serial(rows, d, keys, &strip(p, keys, false), &v.rows_from(b, h, 0), o, d);
                });
            }
        });
    (out, lse)
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
    if sq == 0 || sk == 0 || d == 0 {
        return (dq, dk, dv);
    }
    dq.par_chunks_mut(sq * d)
        .zip(dk.par_chunks_mut(sk * d).zip(dv.par_chunks_mut(sk * d)))
        .enumerate()
        .for_each(|(bh, (dq, (dk, dv)))| {
            let (b, h) = (bh / nh, bh % nh);
            let lse = &lse[bh * sq..(bh + 1) * sq];
            STRIPS.with(|cell| {
                let mut strips = cell.borrow_mut();
                let (p_buf, ds_buf) = &mut *strips;
                for i0 in (0..sq).step_by(BACKWARD_QUERY_BLOCK) {
                    let rows = BACKWARD_QUERY_BLOCK.min(sq - i0);
                    let keys = vis.key_end(i0 + rows, sk);
                    if keys == 0 {
                        continue;
                    }
                    // P from the saved logsumexp.
                    let p = strip_product(p_buf, rows, keys, d, &q.rows_from(b, h, i0), &k.transposed(b, h));
                    vectorised(
                        #[inline(always)]
                        || {
                            for (r, row) in p.chunks_mut(keys).enumerate() {
                                let l = lse[i0 + r];
                                vis.scale_and_mask(row, b, sk, i0 + r, scale);
                                if l == T::NEG_INFINITY {
                                    row.fill(T::ZERO);
                                } else {
                                    exp_shifted_sum(row, l);
                                }
                            }
                        },
                    );
                    // dS = P (dO V^T - rowsum(dO O)) * scale.
                    let ds = strip_product(ds_buf, rows, keys, d, &dout.rows_from(b, h, i0), &v.transposed(b, h));
                    vectorised(
                        #[inline(always)]
                        || {
                            for (r, (ds_row, p_row)) in ds.chunks_mut(keys).zip(p.chunks(keys)).enumerate() {
                                let i = i0 + r;
                                let delta = dot(dout.row(b, h, i, d), o.row(b, h, i, d));
                                for (x, &pv) in ds_row.iter_mut().zip(p_row) {
                                    *x = pv * (*x - delta) * scale;
                                }
                            }
                        },
                    );
                    let (ds, p) = (&*ds, &*p);
                    gemm_serial(rows, d, keys, &strip(ds, keys, false), &k.rows_from(b, h, 0), &mut dq[i0 * d..], d);
                    gemm_serial(keys, d, rows, &strip(ds, keys, true), &q.rows_from(b, h, i0), dk, d);
                    gemm_serial(keys, d, rows, &strip(p, keys, true), &dout.rows_from(b, h, i0), dv, d);
                }
            });
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
