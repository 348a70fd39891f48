//! The original ViT (Dosovitskiy et al. 2021) as transformers' `ViTModel` lays it out
//! (`embeddings.cls_token`, `encoder.layer.N.attention.attention.query`, ..., `pooler.dense`):
//! the same pre-LN encoder as CLIP's towers under other names, a patch conv with bias, no
//! pre-encoder norm, a final `layernorm`, and a tanh pooler on the class token.

use super::{Encoder, EncoderLayer};
use crate::io::safetensors::{self, LoadOptions};
use crate::nn::{Activation, Init, LayerNorm, Linear, Mlp, MultiHeadAttention, ParamStore, PatchEmbed, Scope};
use crate::ops::AttentionOptions;
use crate::{DType, Device, Error, Result, Tensor};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub qkv_bias: bool,
}

impl VitConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let v = crate::io::read_json(&path, "the model config")?;
        let n = |k: &str, d: u64| -> Result<usize> {
            v.get(k)
                .map_or(Some(d), Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| Error::file(&path, format!("'{k}' must be a non-negative integer")))
        };
        let c = VitConfig {
            hidden_size: n("hidden_size", 768)?,
            num_hidden_layers: n("num_hidden_layers", 12)?,
            num_attention_heads: n("num_attention_heads", 12)?,
            intermediate_size: n("intermediate_size", 3072)?,
            hidden_act: Activation::from_name(v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu"))
                .map_err(|e| Error::file(&path, e))?,
            layer_norm_eps: v.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-12),
            image_size: n("image_size", 224)?,
            patch_size: n("patch_size", 16)?,
            num_channels: n("num_channels", 3)?,
            qkv_bias: v.get("qkv_bias").and_then(Value::as_bool).unwrap_or(true),
        };
        if c.patch_size == 0
            || !c.image_size.is_multiple_of(c.patch_size)
            || c.num_attention_heads == 0
            || !c.hidden_size.is_multiple_of(c.num_attention_heads)
        {
            return Err(Error::file(
                &path,
                "image_size must be a multiple of patch_size and hidden_size of num_attention_heads",
            ));
        }
        Ok(c)
    }
}

pub struct VitModel {
    pub config: VitConfig,
    pub store: ParamStore,
    pub cls_token: Tensor,
    pub position_embeddings: Tensor,
    pub patch_embeddings: PatchEmbed,
    pub encoder: Encoder,
    pub layernorm: LayerNorm,
    pub pooler: Linear,
}

pub struct VitOutput {
    /// The embeddings, then each layer's output.
    pub hidden_states: Vec<Tensor>,
    /// layernorm of the last hidden state.
    pub last_hidden_state: Tensor,
    /// tanh(dense(class token)).
    pub pooler_output: Tensor,
}

fn layer(s: &Scope, c: &VitConfig) -> Result<EncoderLayer> {
    let (d, eps) = (c.hidden_size, c.layer_norm_eps);
    let attn = s.pp("attention");
    Ok(EncoderLayer {
        layer_norm1: LayerNorm::new(&s.pp("layernorm_before"), d, eps)?,
        self_attn: MultiHeadAttention {
            q_proj: Linear::new(&attn.pp("attention").pp("query"), d, d, c.qkv_bias)?,
            k_proj: Linear::new(&attn.pp("attention").pp("key"), d, d, c.qkv_bias)?,
            v_proj: Linear::new(&attn.pp("attention").pp("value"), d, d, c.qkv_bias)?,
            out_proj: Linear::new(&attn.pp("output").pp("dense"), d, d, true)?,
            heads: c.num_attention_heads,
        },
        layer_norm2: LayerNorm::new(&s.pp("layernorm_after"), d, eps)?,
        mlp: Mlp {
            fc1: Linear::new(&s.pp("intermediate").pp("dense"), d, c.intermediate_size, true)?,
            fc2: Linear::new(&s.pp("output").pp("dense"), c.intermediate_size, d, true)?,
            act: c.hidden_act,
        },
    })
}

impl VitModel {
    pub fn new(config: VitConfig, device: Device, dtype: DType, seed: u64) -> Result<Self> {
        let store = ParamStore::new(device, dtype, seed);
        let root = store.root();
        let (d, c) = (config.hidden_size, &config);
        let e = root.pp("embeddings");
        let patches = (c.image_size / c.patch_size).pow(2);
        let layers = (0..c.num_hidden_layers)
            .map(|i| layer(&root.pp("encoder").pp("layer").pp(i), c))
            .collect::<Result<_>>()?;
        Ok(VitModel {
            cls_token: e.param("cls_token", &[1, 1, d], Init::Normal { std: 0.02 })?,
            position_embeddings: e.param("position_embeddings", &[1, patches + 1, d], Init::Normal { std: 0.02 })?,
            patch_embeddings: PatchEmbed::new(&e.pp("patch_embeddings").pp("projection"), c.num_channels, d, c.patch_size, true)?,
            encoder: Encoder { layers },
            layernorm: LayerNorm::new(&root.pp("layernorm"), d, c.layer_norm_eps)?,
            pooler: Linear::new(&root.pp("pooler").pp("dense"), d, d, true)?,
            config,
            store,
        })
    }

    /// Loads a transformers ViTModel directory (`config.json`, `model.safetensors`).
    pub fn load(dir: &Path, device: Device, dtype: DType) -> Result<Self> {
        let model = VitModel::new(VitConfig::load(dir)?, device, dtype, 0)?;
        let opts = LoadOptions {
            allow_unused: false,
            dtypes: Some(&[DType::F32, DType::F16, DType::BF16]),
        };
        safetensors::load_into(&model.store, dir.join("model.safetensors"), opts)?;
        Ok(model)
    }

    pub fn forward_all(&self, pixels: &Tensor) -> Result<VitOutput> {
        let c = &self.config;
        if pixels.rank() != 4 || pixels.dims()[1..] != [c.num_channels, c.image_size, c.image_size] {
            return Err(Error::shape(
                "vit",
                format!(
                    "pixel values {:?}; the model takes [B, {}, {}, {}]",
                    pixels.dims(),
                    c.num_channels,
                    c.image_size,
                    c.image_size
                ),
            ));
        }
        let b = pixels.dims()[0];
        let patches = self.patch_embeddings.forward(pixels)?;
        let cls = self.cls_token.broadcast_as(&[b, 1, c.hidden_size])?;
        let x = Tensor::concat(&[&cls, &patches], 1)?.add(&self.position_embeddings)?;
        let hidden_states = self.encoder.forward_all(&x, AttentionOptions::default())?;
        let last_hidden_state = self.layernorm.forward(hidden_states.last().expect("input state"))?;
        let pooler_output = self.pooler.forward(&last_hidden_state.narrow(1, 0, 1)?.squeeze(1)?)?.tanh()?;
        Ok(VitOutput {
            hidden_states,
            last_hidden_state,
            pooler_output,
        })
    }
}
