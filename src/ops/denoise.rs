//! The fused diffusion update as a tensor op (inference only: samplers do not differentiate
//! through it).

use super::same_device_dtype;
use crate::backend::DenoiseParams;
use crate::{profile, Error, Result, Tensor};

impl Tensor {
    /// x_{t-1} from x_t and the denoiser's conditional (and optionally unconditional) outputs,
    /// with classifier-free guidance and the noise folded into one pass. See [`DenoiseParams`].
    pub fn denoise_step(
        x_t: &Tensor,
        cond: &Tensor,
        uncond: Option<&Tensor>,
        noise: Option<&Tensor>,
        params: &DenoiseParams,
    ) -> Result<Tensor> {
        let mut operands = vec![x_t, cond];
        operands.extend(uncond);
        operands.extend(noise);
        let _profile = profile::op("denoise_step", operands.iter().copied());
        same_device_dtype("denoise_step", &operands)?;
        if let Some(bad) = operands.iter().find(|t| t.dims() != x_t.dims()) {
            return Err(Error::shape(
                "denoise_step",
                format!("operand {:?} does not match x_t {:?}", bad.dims(), x_t.dims()),
            ));
        }
        if params.sqrt_alpha_bar <= 0.0 || params.sqrt_one_minus_alpha_bar < 0.0 {
            return Err(Error::msg(format!(
                "denoise_step: invalid schedule values sqrt(abar) = {}, sqrt(1 - abar) = {}",
                params.sqrt_alpha_bar, params.sqrt_one_minus_alpha_bar
            )));
        }
        let (u, n) = (uncond.map(|t| t.storage()), noise.map(|t| t.storage()));
        let storage = x_t.storage().denoise_step(
            x_t.layout(),
            (&**cond.storage(), cond.layout()),
            u.as_ref().zip(uncond).map(|(s, t)| (&***s, t.layout())),
            n.as_ref().zip(noise).map(|(s, t)| (&***s, t.layout())),
            params,
        )?;
        Ok(Tensor::from_storage(storage, x_t.dims()))
    }
}
