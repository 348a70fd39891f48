//! Sum / max / min over one axis. The input is viewed as [outer, n, inner]; each output element
//! reduces n values (sums accumulate in the compute type; rows are independent, so they run in
//! parallel).

use super::elementwise::par_fill;
use super::float::{float_data, Float};
use super::CpuStorage;
use crate::backend::ReduceOp;
use crate::{with_float, Error, Layout, Result};

fn reduce_impl<T: Float>(x: &[T], outer: usize, n: usize, inner: usize, op: ReduceOp) -> Vec<T> {
    par_fill(outer * inner, |o| {
        let (i, j) = (o / inner, o % inner);
        let base = i * n * inner + j;
        let mut acc = match op {
            ReduceOp::Sum => T::ZERO,
            ReduceOp::Max | ReduceOp::Min => x[base],
        };
        for r in 0..n {
            let v = x[base + r * inner];
            acc = match op {
                ReduceOp::Sum => acc + v,
                ReduceOp::Max => acc.max(v),
                ReduceOp::Min => acc.min(v),
            };
        }
        acc
    })
}

pub fn reduce(x: &CpuStorage, layout: &Layout, op: ReduceOp, axis: usize) -> Result<CpuStorage> {
    let dims = layout.shape();
    if axis >= dims.len() {
        return Err(Error::shape("reduce", format!("axis {axis} out of range for shape {dims:?}")));
    }
    let (outer, n, inner) = (dims[..axis].iter().product(), dims[axis], dims[axis + 1..].iter().product());
    if n == 0 && op != ReduceOp::Sum {
        return Err(Error::shape("reduce", format!("{op:?} over an empty axis {axis} of {dims:?}")));
    }
    let data = float_data(x, layout, "reduce")?;
    Ok(with_float!(data, x => reduce_impl(x, outer, n, inner, op)).into_storage(x.dtype()))
}
