//! Optimisers over named parameters, a learning-rate schedule and global gradient clipping.
//! Optimisers read gradients from a [`crate::Grads`] map and update parameters in place.

mod adamw;
mod schedule;
mod sgd;

pub use adamw::{AdamW, AdamWConfig, SlotState};
pub use schedule::CosineSchedule;
pub use sgd::Sgd;

use crate::{profile, Grads, Result, Tensor};

/// The L2 norm of all gradients together.
pub fn global_grad_norm(params: &[(String, Tensor)], grads: &Grads) -> Result<f64> {
    let _profile = profile::scope("grad_norm");
    let mut total = 0.0;
    for (_, p) in params {
        if let Some(g) = grads.get(p) {
            total += g.sqr()?.sum_all()?.to_f64()?;
        }
    }
    Ok(total.sqrt())
}

/// The factor that scales gradients of norm `norm` down to at most `max_norm` (1 if already
/// within; 0 for a non-finite norm, which skips the update rather than poisoning the weights).
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if !norm.is_finite() {
        0.0
    } else if norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}
