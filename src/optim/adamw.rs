//! AdamW (Loshchilov & Hutter): Adam with decoupled weight decay and bias correction, one fused
//! backend step per parameter.

use crate::backend::AdamWStep;
use crate::{profile, Error, Grads, Result, Tensor};

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
    /// Updates this parameter has had: its bias correction counts these, so a parameter held
    /// fixed for a while (no gradient) starts with a correctly corrected first step.
    steps: u64,
}

pub struct AdamW {
    slots: Vec<Slot>,
    pub config: AdamWConfig,
}

/// One parameter's optimizer state, as checkpoints store it.
#[derive(Clone)]
pub struct SlotState {
    pub name: String,
    pub m: Tensor,
    pub v: Tensor,
    pub steps: u64,
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
                Ok(Slot {
                    name,
                    param,
                    m,
                    v,
                    decay,
                    steps: 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW { slots, config })
    }

    /// One update at learning rate `lr` with gradients multiplied by `grad_scale` (clipping).
    /// Parameters without a gradient are left alone (their step count too).
    pub fn step(&mut self, grads: &Grads, lr: f64, grad_scale: f64) -> Result<()> {
        self.step_scaled(grads, lr, grad_scale, |_| 1.0)
    }

    /// [`AdamW::step`] with each parameter's learning rate multiplied by `lr_scale(name)`
    /// (parameter groups: say, a tower warming up after being held fixed).
    pub fn step_scaled(&mut self, grads: &Grads, lr: f64, grad_scale: f64, lr_scale: impl Fn(&str) -> f64) -> Result<()> {
        let _profile = profile::scope("adamw.step");
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.param) else { continue };
            let _profile = profile::op("adamw", [&slot.param, g]);
            if g.dims() != slot.param.dims() {
                return Err(Error::shape(
                    "adamw",
                    format!("gradient {:?} for '{}' of shape {:?}", g.dims(), slot.name, slot.param.dims()),
                ));
            }
            slot.steps += 1;
            let c = &self.config;
            let step = AdamWStep {
                lr: lr * lr_scale(&slot.name),
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: if slot.decay { c.weight_decay } else { 0.0 },
                step: slot.steps,
                grad_scale,
            };
            let g = g.to_dtype(slot.param.dtype())?;
            let (gs, mut ms, mut vs) = (g.storage(), slot.m.storage_mut(), slot.v.storage_mut());
            slot.param
                .update_in_place("adamw", |p, _| p.adamw_step(&**gs, g.layout(), ms.as_mut(), vs.as_mut(), &step))?;
        }
        Ok(())
    }

    /// Every parameter's moments and step count, for checkpoints.
    pub fn state(&self) -> Vec<SlotState> {
        self.slots
            .iter()
            .map(|s| SlotState {
                name: s.name.clone(),
                m: s.m.clone(),
                v: s.v.clone(),
                steps: s.steps,
            })
            .collect()
    }

    /// Restores the state saved by [`AdamW::state`]; every parameter must have an entry.
    pub fn load_state(&mut self, state: &[SlotState]) -> Result<()> {
        for slot in &mut self.slots {
            let Some(saved) = state.iter().find(|s| s.name == slot.name) else {
                return Err(Error::Checkpoint {
                    msg: format!("optimizer state has no moments for '{}'", slot.name),
                });
            };
            slot.m.assign(&saved.m)?;
            slot.v.assign(&saved.v)?;
            slot.steps = saved.steps;
        }
        Ok(())
    }
}
