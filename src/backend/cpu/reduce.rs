//! Sum / max / min over one axis. The input is viewed as [outer, n, inner]; each output element
//! reduces n values (sums accumulate in the compute type; rows are independent, so they run in
//! parallel).

use super::elementwise::par_fill;
use super::float::{accumulator, float_data, Float};
use super::vmath::{lane_sum, vectorised};
use super::CpuStorage;
use crate::backend::ReduceOp;
use crate::{with_float, Error, Layout, Result};
use rayon::prelude::*;

fn reduce_impl<T: Float>(x: &[T], outer: usize, n: usize, inner: usize, op: ReduceOp) -> Vec<T> {
    let combine = |acc: T, v: T| match op {
        ReduceOp::Sum => acc + v,
        ReduceOp::Max => acc.max(v),
        ReduceOp::Min => acc.min(v),
    };
    if inner == 1 {
        // Each output reduces one contiguous row: sums with 16 running partial sums (vectorised
        // at the CPU's width), max and min with one running value.
        let reduce_row = |row: &[T]| match op {
            ReduceOp::Sum => vectorised(
                #[inline(always)]
                || lane_sum(row, |v| v),
            ),
            _ => row.iter().fold(row[0], |acc, &v| combine(acc, v)),
        };
        if outer < rayon::current_num_threads() && n >= 2 * LONG_ROW_CHUNK {
            // Fewer rows than threads (a sum over everything): each row in parallel pieces.
            return (0..outer)
                .map(|i| {
                    let parts: Vec<T> = x[i * n..(i + 1) * n].par_chunks(LONG_ROW_CHUNK).map(reduce_row).collect();
                    parts.iter().skip(1).fold(parts[0], |acc, &v| combine(acc, v))
                })
                .collect();
        }
        return par_fill(outer, |i| reduce_row(&x[i * n..(i + 1) * n]));
    }
    // Reducing a middle or leading axis: the n rows of `inner` values are added into an
    // accumulator row in turn, so every pass reads memory contiguously (and vectorises) instead
    // of striding `inner` apart per element. Work splits over (outer, column chunk).
    let mut out = accumulator(outer * inner);
    let chunk = COLUMN_CHUNK.min(inner);
    out.par_chunks_mut(inner).enumerate().for_each(|(i, acc_row)| {
        let block = &x[i * n * inner..(i + 1) * n * inner];
        acc_row.par_chunks_mut(chunk).enumerate().for_each(|(c, acc)| {
            let cols = c * chunk..c * chunk + acc.len();
            if op != ReduceOp::Sum {
                acc.copy_from_slice(&block[cols.clone()]);
            }
            for r in 0..n {
                let row = &block[r * inner + cols.start..r * inner + cols.end];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a = combine(*a, v);
                }
            }
        });
    });
    out
}

/// Elements per task when a single long row is reduced in parallel.
const LONG_ROW_CHUNK: usize = 1 << 16;

/// Columns per task when reducing over a non-last axis: large enough to amortise a task,
/// small enough that a [768]-wide bias gradient still splits across cores.
const COLUMN_CHUNK: usize = 256;

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
