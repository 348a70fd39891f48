//! Layer norm over the last dim as one fused op: the forward saves mean and 1/std per row, the
//! backward computes dx, dgamma and dbeta in one backend call.

use super::same_device_dtype;
use crate::{profile, Result, Tensor};

impl Tensor {
    pub fn layer_norm(&self, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
        let _profile = profile::op("layer_norm", [self, gamma, beta]);
        same_device_dtype("layer_norm", &[self, gamma, beta])?;
        let (gamma, beta) = (gamma.contiguous()?, beta.contiguous()?);
        let (y, mean, rstd) = self
            .storage()
            .layer_norm(self.layout(), &**gamma.storage(), &**beta.storage(), eps)?;
        let y = Tensor::from_storage(y, self.dims());
        let rows = self.elem_count() / self.dims().last().copied().unwrap_or(1).max(1);
        let (mean, rstd) = (Tensor::from_storage(mean, &[rows]), Tensor::from_storage(rstd, &[rows]));
        let (x, g) = (self.clone(), gamma.clone());
        Ok(y.record("layer_norm", &[self, &gamma, &beta], move |dy| {
            let (dx, dg, db) = x.storage().layer_norm_backward(
                x.layout(),
                &**g.storage(),
                &**mean.storage(),
                &**rstd.storage(),
                &**dy.storage(),
                dy.layout(),
            )?;
            let c = g.dims().to_vec();
            Ok(vec![
                Some(Tensor::from_storage(dx, x.dims())),
                Some(Tensor::from_storage(dg, &c)),
                Some(Tensor::from_storage(db, &c)),
            ])
        }))
    }
}
