//! Gather along a dim (embedding lookup, index_select) and its adjoint, scatter-add.

use super::float::{accumulator, float_data, Float};
use super::{map_storage, CpuStorage};
use crate::{with_float, Error, Layout, Result};

fn split(shape: &[usize], dim: usize, op: &'static str) -> Result<(usize, usize, usize)> {
    if dim >= shape.len() {
        return Err(Error::shape(op, format!("dim {dim} out of range for shape {shape:?}")));
    }
    Ok((shape[..dim].iter().product(), shape[dim], shape[dim + 1..].iter().product()))
}

fn gather_rows<T: Copy>(x: &[T], outer: usize, n: usize, inner: usize, ids: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * ids.len() * inner);
    for o in 0..outer {
        for &i in ids {
            let start = (o * n + i) * inner;
            out.extend_from_slice(&x[start..start + inner]);
        }
    }
    out
}

pub fn index_select(x: &CpuStorage, lx: &Layout, ids: &CpuStorage, lids: &Layout, dim: usize) -> Result<CpuStorage> {
    let (outer, n, inner) = split(lx.shape(), dim, "index_select")?;
    let ids = ids.indices(lids, n, "index_select")?;
    // A contiguous table (an embedding) is read in place: only the selected rows are copied.
    let gathered;
    let (x, start) = match lx.contiguous_range() {
        Some((start, _)) => (x, start),
        None => {
            gathered = x.gather(lx);
            (&gathered, 0)
        }
    };
    Ok(map_storage!(x, v => gather_rows(&v[start..], outer, n, inner, &ids)))
}

fn scatter_add<T: Float>(src: &[T], outer: usize, inner: usize, ids: &[usize], dim_size: usize) -> Vec<T> {
    let mut out = accumulator(outer * dim_size * inner);
    for o in 0..outer {
        for (l, &i) in ids.iter().enumerate() {
            let s = (o * ids.len() + l) * inner;
            let d = (o * dim_size + i) * inner;
            for k in 0..inner {
                out[d + k] += src[s + k];
            }
        }
    }
    out
}

pub fn index_add(src: &CpuStorage, lsrc: &Layout, ids: &CpuStorage, lids: &Layout, dim: usize, dim_size: usize) -> Result<CpuStorage> {
    let (outer, len, inner) = split(lsrc.shape(), dim, "index_add")?;
    let ids = ids.indices(lids, dim_size, "index_add")?;
    if ids.len() != len {
        return Err(Error::shape("index_add", format!("{} ids for {len} source slices", ids.len())));
    }
    let data = float_data(src, lsrc, "index_add")?;
    Ok(with_float!(data, x => scatter_add(x, outer, inner, &ids, dim_size)).into_storage(src.dtype()))
}
