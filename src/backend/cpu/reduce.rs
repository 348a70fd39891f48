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
        if outer < FEW_ROWS && n >= 2 * LONG_ROW_CHUNK {
            // A few long rows (a sum over everything): each row in parallel pieces.
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
    // of striding `inner` apart per element. Work splits over (outer, column chunk), or, where
    // there are few outer blocks and rows are at most PARTIAL_MAX_WIDTH wide (a bias gradient:
    // [1088, 128] or [1088, 512] summed over rows), over parts of the rows, whose partial
    // accumulator rows are combined in order at the end: each part streams whole rows.
    let chunk = COLUMN_CHUNK.min(inner);
    let row_parts = if outer < FEW_ROWS && inner <= PARTIAL_MAX_WIDTH && n * inner >= 2 * PARTIAL_ELEMENTS {
        MAX_ROW_PARTS.min(n * inner / PARTIAL_ELEMENTS)
    } else {
        1
    };
    // acc (columns `cols` of one accumulator row) combined with rows `rows` of `block`; one loop
    // per op, so none branches on the op per element (that kept the loop scalar: 80 us for a
    // [1088, 128] sum, now 8-13 us; [1088, 512] 296 us, now 68 with the row parts).
    let accumulate = |acc: &mut [T], block: &[T], rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
        let rows = rows.map(|r| &block[r * inner + cols.start..r * inner + cols.end]);
        vectorised(
            #[inline(always)]
            || match op {
                ReduceOp::Sum => combine_rows(acc, rows, |a, v| a + v),
                ReduceOp::Max => combine_rows(acc, rows, T::max),
                ReduceOp::Min => combine_rows(acc, rows, T::min),
            },
        )
    };
    // Each part starts from its first row (sums could start from zero, max and min cannot).
    let start_from_first_row = |acc: &mut [T], block: &[T], rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
        acc.copy_from_slice(&block[rows.start * inner + cols.start..rows.start * inner + cols.end]);
        accumulate(acc, block, rows.start + 1..rows.end, cols);
    };
    let mut out = accumulator(outer * inner);
    if n == 0 {
        return out;
    }
    out.par_chunks_mut(inner).enumerate().for_each(|(i, acc_row)| {
        let block = &x[i * n * inner..(i + 1) * n * inner];
        if row_parts > 1 {
            let partials: Vec<Vec<T>> = (0..row_parts)
                .into_par_iter()
                .map(|p| {
                    let mut part = vec![T::ZERO; inner];
                    start_from_first_row(&mut part, block, n * p / row_parts..n * (p + 1) / row_parts, 0..inner);
                    part
                })
                .collect();
            acc_row.copy_from_slice(&partials[0]);
            for part in &partials[1..] {
                accumulate(acc_row, part, 0..1, 0..inner);
            }
            return;
        }
        acc_row.par_chunks_mut(chunk).enumerate().for_each(|(c, acc)| {
            let cols = c * chunk..c * chunk + acc.len();
            start_from_first_row(acc, block, 0..n, cols);
        });
    });
    out
}

/// acc[c] = f(acc[c], row[c]) for each row in turn.
#[inline(always)]
fn combine_rows<'a, T: Float>(acc: &mut [T], rows: impl Iterator<Item = &'a [T]>, f: impl Fn(T, T) -> T) {
    for row in rows {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a = f(*a, v);
        }
    }
}

/// Every split here depends on the shape alone, never on the number of threads, so a sum has the
/// same bits on any machine with the same vector unit (tests/determinism.rs). Below FEW_ROWS
/// outputs (rows, or outer blocks), one output's reduction is itself split into pieces.
const FEW_ROWS: usize = 16;

/// Elements per row part when the rows of a narrow reduction split into parts, and the most
/// parts (their partial rows are allocated and added in order).
const PARTIAL_ELEMENTS: usize = 1 << 14;
const MAX_ROW_PARTS: usize = 16;

/// The widest rows split into parts (their partial rows are combined on one thread); wider
/// ones split by column chunks only.
const PARTIAL_MAX_WIDTH: usize = 1 << 12;

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
