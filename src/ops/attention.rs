//! Fused scaled-dot-product attention, forward and backward, one op each way: the forward keeps
//! only the output and the row logsumexp; the backward recomputes probabilities tile by tile.

use super::{same_device, same_device_dtype};
use crate::backend::AttentionParams;
use crate::{profile, Error, Result, Tensor};

/// Options of [`Tensor::attention`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionOptions<'a> {
    /// Hide key j from query i when j > i + (Sk - Sq).
    pub causal: bool,
    /// [B, Sk], nonzero where the key is real.
    pub key_mask: Option<&'a Tensor>,
    /// Defaults to 1/sqrt(D).
    pub scale: Option<f64>,
}

impl Tensor {
    /// softmax(q k^T * scale + masks) v for q [B, H, Sq, D], k and v [B, H, Sk, D].
    pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: AttentionOptions) -> Result<Tensor> {
        let _profile = profile::op("attention", [q, k, v]);
        same_device_dtype("attention", &[q, k, v])?;
        if q.rank() != 4 || k.rank() != 4 || v.rank() != 4 {
            return Err(Error::shape(
                "attention",
                format!("q {:?}, k {:?}, v {:?}: expected 4-d [B, H, S, D]", q.dims(), k.dims(), v.dims()),
            ));
        }
        let last_contiguous = |t: &Tensor| {
            if t.layout().strides()[3] == 1 || t.dims()[3] == 1 {
                Ok(t.clone())
            } else {
                t.contiguous()
            }
        };
        let (q, k, v) = (last_contiguous(q)?, last_contiguous(k)?, last_contiguous(v)?);
        let mask = match opts.key_mask {
            Some(m) => {
                same_device("attention", &[&q, m])?;
                Some(m.detach())
            }
            None => None,
        };
        let d = q.dims()[3];
        let params = AttentionParams {
            scale: opts.scale.unwrap_or(1.0 / (d.max(1) as f64).sqrt()),
            causal: opts.causal,
        };
        let (out, lse) = {
            let mask_guard = mask.as_ref().map(|m| m.storage());
            let mask_arg = mask_guard.as_ref().zip(mask.as_ref()).map(|(s, m)| (&***s, m.layout()));
            q.storage().attention(
                q.layout(),
                (&**k.storage(), k.layout()),
                (&**v.storage(), v.layout()),
                mask_arg,
                params,
            )?
        };
        let mut out_shape = q.dims().to_vec();
        out_shape[3] = v.dims()[3];
        let out = Tensor::from_storage(out, &out_shape);
        let lse = Tensor::from_storage(lse, &q.dims()[..3]);
        let saved_out = out.clone();
        let (qs, ks, vs) = (q.clone(), k.clone(), v.clone());
        Ok(out.record("attention", &[&q, &k, &v], move |g| {
            let mask_guard = mask.as_ref().map(|m| m.storage());
            let mask_arg = mask_guard.as_ref().zip(mask.as_ref()).map(|(s, m)| (&***s, m.layout()));
            let (dq, dk, dv) = qs.storage().attention_backward(
                qs.layout(),
                (&**ks.storage(), ks.layout()),
                (&**vs.storage(), vs.layout()),
                mask_arg,
                (&**saved_out.storage(), saved_out.layout()),
                &**lse.storage(),
                (&**g.storage(), g.layout()),
                params,
            )?;
            Ok(vec![
                Some(Tensor::from_storage(dq, qs.dims())),
                Some(Tensor::from_storage(dk, ks.dims())),
                Some(Tensor::from_storage(dv, vs.dims())),
            ])
        }))
    }
}
