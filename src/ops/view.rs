//! Views and layout changes: reshape, permute, transpose, narrow, (un)squeeze, broadcast,
//! contiguous, dtype casts, and sum_to (the adjoint of broadcasting).

use super::axis;
use crate::{layout::broadcast_shape, profile, Error, Layout, Result, Tensor};

impl Tensor {
    /// Same elements, new shape. One dim may be given as `usize::MAX` to be inferred. Copies
    /// only when the tensor is not contiguous.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = self.elem_count();
        let known: usize = shape.iter().filter(|&&d| d != usize::MAX).product();
        let mut shape = shape.to_vec();
        match shape.iter().filter(|&&d| d == usize::MAX).count() {
            0 => {}
            1 if known > 0 && n.is_multiple_of(known) => {
                *shape.iter_mut().find(|d| **d == usize::MAX).expect("one inferred dim") = n / known
            }
            _ => {
                return Err(Error::shape(
                    "reshape",
                    format!("cannot infer a dim reshaping {:?} to {shape:?}", self.dims()),
                ))
            }
        }
        if shape.iter().product::<usize>() != n {
            return Err(Error::shape("reshape", format!("{:?} ({n} elements) to {shape:?}", self.dims())));
        }
        let src = self.contiguous()?;
        let layout = src.layout().reshape(&shape).expect("contiguous");
        let from = self.dims().to_vec();
        Ok(src
            .with_layout(layout)
            .record("reshape", &[self], move |g| Ok(vec![Some(g.reshape(&from)?)])))
    }

    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(&[self.elem_count()])
    }

    /// Merges dims `start..=end` into one.
    pub fn flatten(&self, start: usize, end: usize) -> Result<Tensor> {
        if start > end || end >= self.rank() {
            return Err(Error::shape("flatten", format!("dims {start}..={end} of {:?}", self.dims())));
        }
        let d = self.dims();
        let mut shape = d[..start].to_vec();
        shape.push(d[start..=end].iter().product());
        shape.extend_from_slice(&d[end + 1..]);
        self.reshape(&shape)
    }

    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permute(dims)?;
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(self
            .with_layout(layout)
            .record("permute", &[self], move |g| Ok(vec![Some(g.permute(&inverse)?)])))
    }

    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let (a, b) = (axis("transpose", d0, self.rank())?, axis("transpose", d1, self.rank())?);
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// Swaps the last two dims.
    pub fn t(&self) -> Result<Tensor> {
        self.transpose(-2, -1)
    }

    /// The slice [start, start+len) of `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let layout = self.layout().narrow(dim, start, len)?;
        let full = self.dims().to_vec();
        let (dtype, device) = (self.dtype(), self.device());
        Ok(self.with_layout(layout).record("narrow", &[self], move |g| {
            // The gradient is zero outside the slice.
            let out = Tensor::zeros(&full, dtype, device)?;
            let dst = out.layout().narrow(dim, start, len)?;
            let src = g.storage();
            out.update_in_place("narrow_backward", |s, _| src.copy_into(g.layout(), s, &dst))?;
            Ok(vec![Some(out)])
        }))
    }

    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::shape("unsqueeze", format!("dim {dim} for shape {:?}", self.dims())));
        }
        let mut shape = self.dims().to_vec();
        shape.insert(dim, 1);
        self.reshape(&shape)
    }

    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        if self.dim(dim)? != 1 {
            return Err(Error::shape("squeeze", format!("dim {dim} of {:?} is not 1", self.dims())));
        }
        let mut shape = self.dims().to_vec();
        shape.remove(dim);
        self.reshape(&shape)
    }

    /// A stride-0 view repeating size-1 dims (and new leading dims) to `shape`.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        if self.dims() == shape {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_as(shape)?;
        let from = self.dims().to_vec();
        Ok(self
            .with_layout(layout)
            .record("broadcast", &[self], move |g| Ok(vec![Some(g.sum_to(&from)?)])))
    }

    /// Sums a broadcast result back down to `shape` (the adjoint of broadcast_as).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.dims() == shape {
            return Ok(self.clone());
        }
        let target = broadcast_shape("sum_to", shape, self.dims())?;
        if target != self.dims() {
            return Err(Error::shape(
                "sum_to",
                format!("{:?} does not broadcast to {:?}", shape, self.dims()),
            ));
        }
        let extra = self.rank() - shape.len();
        let mut t = self.clone();
        for _ in 0..extra {
            t = t.sum(0, false)?;
        }
        for (i, &d) in shape.iter().enumerate() {
            if d == 1 && t.dims()[i] != 1 {
                t = t.sum(i as isize, true)?;
            }
        }
        Ok(t)
    }

    /// The same tensor if contiguous, else a contiguous copy (identity for autograd).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        Ok(self.contiguous_copy()?.record("contiguous", &[self], |g| Ok(vec![Some(g.clone())])))
    }

    /// Converts to another dtype; the gradient converts back.
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let _profile = profile::op("to_dtype", [self]);
        let storage = self.storage().cast(self.layout(), dtype)?;
        let from = self.dtype();
        let out = Tensor::from_storage(storage, self.dims());
        if !dtype.is_float() || !from.is_float() {
            return Ok(out);
        }
        Ok(out.record("to_dtype", &[self], move |g| Ok(vec![Some(g.to_dtype(from)?)])))
    }

    /// The layout of self broadcast to `shape`, for passing to backend ops.
    pub(crate) fn broadcast_layout(&self, shape: &[usize]) -> Result<Layout> {
        self.layout().broadcast_as(shape)
    }
}
