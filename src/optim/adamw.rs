//! AdamW (Loshchilov & Hutter): Adam with decoupled weight decay and bias correction, one fused
//! backend step per parameter.

use crate::backend::AdamWStep;
use crate::{Error, Grads, Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    name: String,
    param: Tensor,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

pub struct AdamW {
    slots: Vec<Slot>,
    pub config: AdamWConfig,
    step: u64,
}

impl AdamW {
    /// Weight decay applies to matrices (rank >= 2) only: norms, biases, embeddings' scalars and
    /// other vectors are exempt, the usual rule for transformers.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Result<Self> {
        Self::with_decay_rule(params, config, |_, t| t.rank() >= 2)
    }

    pub fn with_decay_rule(params: Vec<(String, Tensor)>, config: AdamWConfig, decay: impl Fn(&str, &Tensor) -> bool) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, param)| {
                if !param.is_var() {
                    return Err(Error::msg(format!("adamw: '{name}' is not a variable")));
                }
                let (m, v) = (param.zeros_like()?, param.zeros_like()?);
                let decay = decay(&name, &param);
                Ok(Slot { name, param, m, v, decay })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW { slots, config, step: 0 })
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update at learning rate `lr` with gradients multiplied by `grad_scale` (clipping).
    /// Parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &Grads, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        for slot in &self.slots {
            let Some(g) = grads.get(&slot.param) else { continue };
            if g.dims() != slot.param.dims() {
                return Err(Error::shape(
                    "adamw",
                    format!("gradient {:?} for '{}' of shape {:?}", g.dims(), slot.name, slot.param.dims()),
                ));
            }
            let c = &self.config;
            let step = AdamWStep {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: if slot.decay { c.weight_decay } else { 0.0 },
                step: self.step,
                grad_scale,
            };
            let g = g.to_dtype(slot.param.dtype())?;
            let (gs, mut ms, mut vs) = (g.storage(), slot.m.storage_mut(), slot.v.storage_mut());
            slot.param
                .update_in_place("adamw", |p, _| p.adamw_step(&**gs, g.layout(), ms.as_mut(), vs.as_mut(), &step))?;
        }
        Ok(())
    }

    /// (name, first moment, second moment) of every parameter, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor, Tensor)> {
        self.slots.iter().map(|s| (s.name.clone(), s.m.clone(), s.v.clone())).collect()
    }

    /// Restores moments saved by [`AdamW::state`] and the step counter.
    pub fn load_state(&mut self, step: u64, state: &[(String, Tensor, Tensor)]) -> Result<()> {
        for slot in &mut self.slots {
            let Some((_, m, v)) = state.iter().find(|(n, _, _)| *n == slot.name) else {
                return Err(Error::Checkpoint {
                    msg: format!("optimizer state has no moments for '{}'", slot.name),
                });
            };
            slot.m.assign(m)?;
            slot.v.assign(v)?;
        }
        self.step = step;
        Ok(())
    }
}
