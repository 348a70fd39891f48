//! Reductions over one axis (sum, mean, max, min) and L2 normalisation.

use super::axis;
use crate::backend::{CmpOp, ReduceOp};
use crate::{profile, Error, Result, Tensor};

impl Tensor {
    fn reduce(&self, op: ReduceOp, ax: isize, keepdim: bool) -> Result<Tensor> {
        let _profile = profile::op(op.name(), [self]);
        if !self.dtype().is_float() {
            return Err(Error::dtype("reduce", format!("needs a float tensor, got {}", self.dtype())));
        }
        let a = axis("reduce", ax, self.rank())?;
        let mut kept = self.dims().to_vec();
        kept[a] = 1;
        let out = Tensor::from_storage(self.storage().reduce(self.layout(), op, a)?, &kept);
        let x = self.clone();
        let kept_shape = kept.clone();
        let out_for_grad = out.clone();
        let out = out.record(op.name(), &[self], move |g| {
            let g = g.reshape(&kept_shape)?;
            let dx = match op {
                ReduceOp::Sum => g.broadcast_as(x.dims())?,
                ReduceOp::Max | ReduceOp::Min => {
                    // The gradient goes to the elements equal to the extreme value.
                    let hit = x.cmp(&out_for_grad, CmpOp::Eq)?;
                    hit.mul(&g)?
                }
            };
            Ok(vec![Some(dx)])
        });
        if keepdim {
            Ok(out)
        } else {
            let mut shape = self.dims().to_vec();
            shape.remove(a);
            out.reshape(&shape)
        }
    }

    pub fn sum(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, axis, keepdim)
    }

    pub fn mean(&self, ax: isize, keepdim: bool) -> Result<Tensor> {
        let n = self.dim(axis("mean", ax, self.rank())?)?;
        self.sum(ax, keepdim)?.div_scalar(n.max(1) as f64)
    }

    pub fn max(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, axis, keepdim)
    }

    pub fn min(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Min, axis, keepdim)
    }

    /// Sum of all elements, as a 0-d tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.flatten_all()?.sum(0, false)
    }

    pub fn mean_all(&self) -> Result<Tensor> {
        self.sum_all()?.div_scalar(self.elem_count().max(1) as f64)
    }

    /// x / max(||x||, eps) over the last dim.
    pub fn l2_normalize(&self, eps: f64) -> Result<Tensor> {
        let _profile = profile::op("l2_normalize", [self]);
        let norm = self.sqr()?.sum(-1, true)?.sqrt()?;
        let floor = Tensor::full(eps, &[], self.dtype(), self.device())?;
        self.div(&norm.maximum(&floor)?)
    }
}
