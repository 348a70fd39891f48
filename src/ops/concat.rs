//! Concatenation along a dim, and stacking along a new one.

use super::same_device_dtype;
use crate::{profile, Error, Result, Tensor};

impl Tensor {
    pub fn concat(ts: &[&Tensor], dim: usize) -> Result<Tensor> {
        let _profile = profile::op("concat", ts.iter().copied());
        let Some(first) = ts.first() else {
            return Err(Error::shape("concat", "no tensors to concatenate"));
        };
        same_device_dtype("concat", ts)?;
        let rank = first.rank();
        if dim >= rank {
            return Err(Error::shape(
                "concat",
                format!("dim {dim} out of range for shape {:?}", first.dims()),
            ));
        }
        for t in ts {
            let same = t.rank() == rank && (0..rank).all(|d| d == dim || t.dims()[d] == first.dims()[d]);
            if !same {
                return Err(Error::shape(
                    "concat",
                    format!("{:?} and {:?} differ outside dim {dim}", first.dims(), t.dims()),
                ));
            }
        }
        let mut shape = first.dims().to_vec();
        shape[dim] = ts.iter().map(|t| t.dims()[dim]).sum();
        let out = Tensor::zeros(&shape, first.dtype(), first.device())?;
        let mut sizes = Vec::with_capacity(ts.len());
        let mut start = 0;
        for t in ts {
            let len = t.dims()[dim];
            let dst = out.layout().narrow(dim, start, len)?;
            let src = t.storage();
            out.update_in_place("concat", |s, _| src.copy_into(t.layout(), s, &dst))?;
            sizes.push((start, len));
            start += len;
        }
        Ok(out.record("concat", ts, move |g| {
            sizes.iter().map(|&(s, l)| Ok(Some(g.narrow(dim, s, l)?.contiguous()?))).collect()
        }))
    }

    /// Stacks same-shape tensors along a new dim.
    pub fn stack(ts: &[&Tensor], dim: usize) -> Result<Tensor> {
        let expanded = ts.iter().map(|t| t.unsqueeze(dim)).collect::<Result<Vec<_>>>()?;
        Tensor::concat(&expanded.iter().collect::<Vec<_>>(), dim)
    }
}
