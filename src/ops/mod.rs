//! The tensor API. Each file holds one op family: the forward call into the backend and, right
//! next to it, the closure autograd runs for its backward.

mod attention;
pub use attention::AttentionOptions;
mod concat;
mod denoise;
mod elementwise;
mod index;
mod layernorm;
mod matmul;
mod patchify;
mod reduce;
mod softmax;
mod view;

use crate::{Error, Result, Tensor};

/// Checks that all operands of an op share a device and a dtype.
pub(crate) fn same_device_dtype(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    let first = ts[0];
    for t in &ts[1..] {
        if t.device() != first.device() {
            return Err(Error::device(op, format!("operands on {} and {}", first.device(), t.device())));
        }
        if t.dtype() != first.dtype() {
            return Err(Error::dtype(op, format!("operands of {} and {}", first.dtype(), t.dtype())));
        }
    }
    Ok(())
}

pub(crate) fn same_device(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    let first = ts[0];
    for t in &ts[1..] {
        if t.device() != first.device() {
            return Err(Error::device(op, format!("operands on {} and {}", first.device(), t.device())));
        }
    }
    Ok(())
}

/// Resolves a possibly negative axis against a rank.
pub(crate) fn axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as isize } else { axis };
    if a < 0 || a as usize >= rank {
        return Err(Error::shape(op, format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}
