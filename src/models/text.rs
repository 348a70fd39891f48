//! The CLIP text transformer: token and position embeddings, a causal encoder (padding hidden
//! by a key mask), `final_layer_norm`, and pooling at the first end-of-text token of each row.

use super::{ClipTextConfig, Encoder};
use crate::nn::{Embedding, LayerNorm, Scope};
use crate::ops::AttentionOptions;
use crate::{DType, Error, Result, Tensor};

pub struct TextTransformer {
    pub config: ClipTextConfig,
    pub token_embedding: Embedding,
    pub position_embedding: Embedding,
    pub encoder: Encoder,
    pub final_layer_norm: LayerNorm,
    /// The dtype activations are computed in (see `VisionTransformer::compute_dtype`).
    pub compute_dtype: DType,
}

pub struct TextOutput {
    /// Input to the encoder (embeddings), then each layer's output.
    pub hidden_states: Vec<Tensor>,
    /// final_layer_norm of the last hidden state: [B, L, D].
    pub last_hidden_state: Tensor,
    /// The last hidden state at each row's first end-of-text token: [B, D].
    pub pooled: Tensor,
}

impl TextTransformer {
    pub fn new(s: &Scope, c: &ClipTextConfig) -> Result<Self> {
        let d = c.hidden_size;
        let e = s.pp("embeddings");
        Ok(TextTransformer {
            compute_dtype: s.store().dtype(),
            token_embedding: Embedding::new(&e.pp("token_embedding"), c.vocab_size, d, 0.02)?,
            position_embedding: Embedding::new(&e.pp("position_embedding"), c.max_position_embeddings, d, 0.01)?,
            encoder: Encoder::new(
                &s.pp("encoder"),
                c.num_hidden_layers,
                d,
                c.intermediate_size,
                c.num_attention_heads,
                c.hidden_act,
                c.layer_norm_eps,
            )?,
            final_layer_norm: LayerNorm::new(&s.pp("final_layer_norm"), d, c.layer_norm_eps)?,
            config: c.clone(),
        })
    }

    /// The pooled position of each row: the first end-of-text token (the last token if a row
    /// has none). Configs from before transformers fixed the eos id (eos_token_id == 2) pool at
    /// the largest id instead, as transformers does for them.
    fn eos_positions(&self, ids: &[i64], rows: usize, len: usize) -> Vec<u32> {
        (0..rows)
            .map(|r| {
                let row = &ids[r * len..(r + 1) * len];
                let pos = if self.config.eos_token_id == 2 {
                    row.iter()
                        .enumerate()
                        .max_by_key(|&(i, &t)| (t, std::cmp::Reverse(i)))
                        .map(|(i, _)| i)
                } else {
                    row.iter().position(|&t| t == self.config.eos_token_id)
                };
                pos.unwrap_or(len - 1) as u32
            })
            .collect()
    }

    /// ids [B, L] (i64 or u32); `attention_mask` [B, L] (nonzero = real token) hides padding.
    pub fn forward_all(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<TextOutput> {
        let &[b, l] = ids.dims() else {
            return Err(Error::shape(
                "text_model",
                format!("token ids must be [B, L], got {:?}", ids.dims()),
            ));
        };
        if l == 0 || l > self.config.max_position_embeddings {
            return Err(Error::shape(
                "text_model",
                format!(
                    "sequence length {l} outside 1..={} (max_position_embeddings)",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let device = ids.device();
        let positions = Tensor::arange(0.0, l as f64, 1.0, DType::U32, device)?;
        let dtype = self.compute_dtype;
        let x = self
            .token_embedding
            .forward(ids)?
            .to_dtype(dtype)?
            .add(&self.position_embedding.forward(&positions)?.to_dtype(dtype)?)?;
        let opts = AttentionOptions {
            causal: true,
            key_mask: attention_mask,
            scale: None,
        };
        let hidden_states = self.encoder.forward_all(&x, opts)?;
        let last = self.final_layer_norm.forward(hidden_states.last().expect("input state"))?;
        let host_ids: Vec<i64> = ids.to_f64_vec()?.into_iter().map(|v| v as i64).collect();
        let rows: Vec<u32> = self
            .eos_positions(&host_ids, b, l)
            .into_iter()
            .enumerate()
            .map(|(r, p)| (r * l) as u32 + p)
            .collect();
        let d = self.config.hidden_size;
        let pooled = last.reshape(&[b * l, d])?.index_select(&Tensor::from_vec(rows, &[b], device)?, 0)?;
        Ok(TextOutput {
            hidden_states,
            last_hidden_state: last,
            pooled,
        })
    }

    pub fn forward(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.forward_all(ids, attention_mask)?.pooled)
    }
}
