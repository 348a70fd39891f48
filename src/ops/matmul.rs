//! Batched matrix product with broadcasting batch dims, and its backward
//! (dA = dC B^T, dB = A^T dC, each summed over the batch dims its operand was broadcast on).

use super::same_device_dtype;
use crate::{layout::broadcast_shape, profile, Error, Result, Tensor};

impl Tensor {
    /// [.., m, k] x [.., k, n] -> [.., m, n]. Transposed views are read in place.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let _profile = profile::op("matmul", [self, rhs]);
        same_device_dtype("matmul", &[self, rhs])?;
        let (ra, rb) = (self.rank(), rhs.rank());
        if ra < 2 || rb < 2 || self.dims()[ra - 1] != rhs.dims()[rb - 2] {
            return Err(Error::shape("matmul", format!("{:?} x {:?}", self.dims(), rhs.dims())));
        }
        let (m, n) = (self.dims()[ra - 2], rhs.dims()[rb - 1]);
        let k = self.dims()[ra - 1];
        let batch = broadcast_shape("matmul", &self.dims()[..ra - 2], &rhs.dims()[..rb - 2])?;
        let la = self.broadcast_layout(&[batch.as_slice(), &[m, k]].concat())?;
        let lb = rhs.broadcast_layout(&[batch.as_slice(), &[k, n]].concat())?;
        let out_shape = [batch.as_slice(), &[m, n]].concat();
        let storage = self.storage().matmul(&la, &**rhs.storage(), &lb)?;
        let out = Tensor::from_storage(storage, &out_shape);
        let (a, b) = (self.clone(), rhs.clone());
        Ok(out.record("matmul", &[self, rhs], move |g| {
            let ga = if a.requires_grad() {
                Some(g.matmul(&b.t()?)?.sum_to(a.dims())?)
            } else {
                None
            };
            let gb = if b.requires_grad() {
                Some(a.t()?.matmul(g)?.sum_to(b.dims())?)
            } else {
                None
            };
            Ok(vec![ga, gb])
        }))
    }
}
