//! The pre-LN transformer encoder both CLIP towers use: per layer, x += attn(ln1(x)) and
//! x += mlp(ln2(x)), with Hugging Face's names (`layer_norm1`, `self_attn`, `layer_norm2`, `mlp`).

use crate::nn::{Activation, LayerNorm, Mlp, MultiHeadAttention, Scope};
use crate::ops::AttentionOptions;
use crate::{Result, Tensor};

pub struct EncoderLayer {
    pub layer_norm1: LayerNorm,
    pub self_attn: MultiHeadAttention,
    pub layer_norm2: LayerNorm,
    pub mlp: Mlp,
}

impl EncoderLayer {
    pub fn new(s: &Scope, dim: usize, hidden: usize, heads: usize, act: Activation, eps: f64) -> Result<Self> {
        Ok(EncoderLayer {
            layer_norm1: LayerNorm::new(&s.pp("layer_norm1"), dim, eps)?,
            self_attn: MultiHeadAttention::new(&s.pp("self_attn"), dim, dim, heads)?,
            layer_norm2: LayerNorm::new(&s.pp("layer_norm2"), dim, eps)?,
            mlp: Mlp::new(&s.pp("mlp"), dim, hidden, act)?,
        })
    }

    pub fn forward(&self, x: &Tensor, opts: AttentionOptions) -> Result<Tensor> {
        let h = self.layer_norm1.forward(x)?;
        let x = x.add(&self.self_attn.forward(&h, &h, opts)?)?;
        x.add(&self.mlp.forward(&self.layer_norm2.forward(&x)?)?)
    }
}

/// `layers.0 ..` under an `encoder` scope.
pub struct Encoder {
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub fn new(s: &Scope, n: usize, dim: usize, hidden: usize, heads: usize, act: Activation, eps: f64) -> Result<Self> {
        let layers = (0..n)
            .map(|i| EncoderLayer::new(&s.pp("layers").pp(i), dim, hidden, heads, act, eps))
            .collect::<Result<_>>()?;
        Ok(Encoder { layers })
    }

    /// The output of every layer (the input first), as Hugging Face's `hidden_states`.
    pub fn forward_all(&self, x: &Tensor, opts: AttentionOptions) -> Result<Vec<Tensor>> {
        let mut states = vec![x.clone()];
        for layer in &self.layers {
            let next = layer.forward(states.last().expect("at least the input"), opts)?;
            states.push(next);
        }
        Ok(states)
    }

    pub fn forward(&self, x: &Tensor, opts: AttentionOptions) -> Result<Tensor> {
        self.layers.iter().try_fold(x.clone(), |x, layer| layer.forward(&x, opts))
    }
}
