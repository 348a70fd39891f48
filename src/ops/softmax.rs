//! Softmax and log-softmax over the last dim, and the fused softmax cross-entropy with integer
//! targets and an ignore index.

use super::same_device;
use crate::{profile, Error, Result, Tensor};

impl Tensor {
    fn softmax_impl(&self, log: bool) -> Result<Tensor> {
        let name = if log { "log_softmax" } else { "softmax" };
        let _profile = profile::op(name, [self]);
        let y = Tensor::from_storage(self.storage().softmax(self.layout(), log)?, self.dims());
        let y_saved = y.clone();
        Ok(y.record(name, &[self], move |g| {
            let dx = y_saved
                .storage()
                .softmax_backward(y_saved.layout(), &**g.storage(), g.layout(), log)?;
            Ok(vec![Some(Tensor::from_storage(dx, y_saved.dims()))])
        }))
    }

    /// Softmax over the last dim.
    pub fn softmax(&self) -> Result<Tensor> {
        self.softmax_impl(false)
    }

    /// Log-softmax over the last dim.
    pub fn log_softmax(&self) -> Result<Tensor> {
        self.softmax_impl(true)
    }

    /// Per-row cross-entropy of logits [.., C] against integer targets [..] in one fused op;
    /// rows whose target is `ignore_index` have loss 0 and no gradient.
    pub fn cross_entropy_per_row(&self, targets: &Tensor, ignore_index: i64) -> Result<Tensor> {
        let _profile = profile::op("cross_entropy", [self, targets]);
        same_device("cross_entropy", &[self, targets])?;
        let rank = self.rank();
        if rank == 0 || targets.dims() != &self.dims()[..rank - 1] {
            return Err(Error::shape(
                "cross_entropy",
                format!(
                    "logits {:?} with targets {:?} (expected targets of shape {:?})",
                    self.dims(),
                    targets.dims(),
                    &self.dims()[..rank.saturating_sub(1)]
                ),
            ));
        }
        let (loss, lse) = self
            .storage()
            .softmax_xent(self.layout(), &**targets.storage(), targets.layout(), ignore_index)?;
        let loss = Tensor::from_storage(loss, targets.dims());
        let rows = targets.elem_count();
        let lse = Tensor::from_storage(lse, &[rows]);
        let (x, t) = (self.clone(), targets.clone());
        Ok(loss.record("cross_entropy", &[self], move |g| {
            let dx = x.storage().softmax_xent_backward(
                x.layout(),
                &**t.storage(),
                t.layout(),
                &**lse.storage(),
                &**g.storage(),
                g.layout(),
                ignore_index,
            )?;
            Ok(vec![Some(Tensor::from_storage(dx, x.dims()))])
        }))
    }

    /// Mean cross-entropy over the rows whose target is not `ignore_index` (0 if there are none).
    pub fn cross_entropy(&self, targets: &Tensor, ignore_index: i64) -> Result<Tensor> {
        let per_row = self.cross_entropy_per_row(targets, ignore_index)?;
        let valid = targets
            .to_cpu_storage()?
            .to_f64_vec()
            .iter()
            .filter(|&&t| t as i64 != ignore_index)
            .count();
        per_row.sum_all()?.div_scalar(valid.max(1) as f64)
    }
}
