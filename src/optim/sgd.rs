//! SGD with momentum (PyTorch's form: buf = momentum * buf + g; p -= lr * buf).

use crate::{profile, Grads, Result, Tensor};

pub struct Sgd {
    params: Vec<(Tensor, Option<Tensor>)>,
    pub lr: f64,
    pub momentum: f64,
}

impl Sgd {
    pub fn new(params: Vec<Tensor>, lr: f64, momentum: f64) -> Self {
        Sgd {
            params: params.into_iter().map(|p| (p, None)).collect(),
            lr,
            momentum,
        }
    }

    pub fn step(&mut self, grads: &Grads) -> Result<()> {
        let _profile = profile::scope("sgd.step");
        for (p, buf) in &mut self.params {
            let Some(g) = grads.get(p) else { continue };
            let update = match buf.take() {
                Some(b) if self.momentum != 0.0 => b.mul_scalar(self.momentum)?.add(g)?,
                _ => g.clone(),
            };
            p.assign(&p.detach().sub(&update.mul_scalar(self.lr)?)?)?;
            if self.momentum != 0.0 {
                *buf = Some(update);
            }
        }
        Ok(())
    }
}
