//! The CLIP vision transformer: patch embedding (a bias-free conv as patchify + matmul), a class
//! token, learned position embeddings, `pre_layrnorm` (Hugging Face's spelling), the encoder,
//! and `post_layernorm` on the class token.

use super::{ClipVisionConfig, Encoder};
use crate::nn::{Init, LayerNorm, PatchEmbed, Scope};
use crate::ops::AttentionOptions;
use crate::{DType, Error, Result, Tensor};

pub struct VisionTransformer {
    pub config: ClipVisionConfig,
    pub class_embedding: Tensor,
    pub patch_embedding: PatchEmbed,
    pub position_embedding: Tensor,
    pub pre_layrnorm: LayerNorm,
    pub encoder: Encoder,
    pub post_layernorm: LayerNorm,
    /// The dtype activations are computed in: the parameters' dtype unless set otherwise (bf16
    /// over f32 parameters for mixed-precision training).
    pub compute_dtype: DType,
}

/// The outputs of the vision tower.
pub struct VisionOutput {
    /// Input to the encoder (after pre_layrnorm), then each layer's output.
    pub hidden_states: Vec<Tensor>,
    /// post_layernorm of the class token: [B, D].
    pub pooled: Tensor,
}

impl VisionTransformer {
    pub fn new(s: &Scope, c: &ClipVisionConfig) -> Result<Self> {
        let d = c.hidden_size;
        let e = s.pp("embeddings");
        Ok(VisionTransformer {
            compute_dtype: s.store().dtype(),
            class_embedding: e.param(
                "class_embedding",
                &[d],
                Init::Normal {
                    std: (d as f64).powf(-0.5),
                },
            )?,
            patch_embedding: PatchEmbed::new(&e.pp("patch_embedding"), c.num_channels, d, c.patch_size, false)?,
            position_embedding: e
                .pp("position_embedding")
                .param("weight", &[c.num_patches() + 1, d], Init::Normal { std: 0.02 })?,
            pre_layrnorm: LayerNorm::new(&s.pp("pre_layrnorm"), d, c.layer_norm_eps)?,
            encoder: Encoder::new(
                &s.pp("encoder"),
                c.num_hidden_layers,
                d,
                c.intermediate_size,
                c.num_attention_heads,
                c.hidden_act,
                c.layer_norm_eps,
            )?,
            post_layernorm: LayerNorm::new(&s.pp("post_layernorm"), d, c.layer_norm_eps)?,
            config: c.clone(),
        })
    }

    fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let want = [c.num_channels, c.image_size, c.image_size];
        if pixels.rank() != 4 || pixels.dims()[1..] != want {
            return Err(Error::shape(
                "vision_model",
                format!(
                    "pixel values {:?}; the model takes [B, {}, {}, {}]",
                    pixels.dims(),
                    want[0],
                    want[1],
                    want[2]
                ),
            ));
        }
        let (b, d) = (pixels.dims()[0], c.hidden_size);
        let dtype = self.compute_dtype;
        let patches = self.patch_embedding.forward(&pixels.to_dtype(dtype)?)?;
        let cls = self
            .class_embedding
            .to_dtype(dtype)?
            .reshape(&[1, 1, d])?
            .broadcast_as(&[b, 1, d])?;
        let x = Tensor::concat(&[&cls, &patches], 1)?;
        self.pre_layrnorm.forward(&x.add(&self.position_embedding.to_dtype(dtype)?)?)
    }

    /// Every hidden state and the pooled output.
    pub fn forward_all(&self, pixels: &Tensor) -> Result<VisionOutput> {
        let hidden_states = self.encoder.forward_all(&self.embed(pixels)?, AttentionOptions::default())?;
        let last = hidden_states.last().expect("input state");
        let pooled = self.post_layernorm.forward(&last.narrow(1, 0, 1)?.squeeze(1)?)?;
        Ok(VisionOutput { hidden_states, pooled })
    }

    /// The pooled class token [B, D].
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self.encoder.forward(&self.embed(pixels)?, AttentionOptions::default())?;
        self.post_layernorm.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)
    }
}
