//! Hugging Face CLIP configs (`config.json` of a CLIPModel), with the library's defaults for
//! absent keys and errors that name the file and the key.

use crate::nn::Activation;
use crate::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub eos_token_id: i64,
    pub pad_token_id: i64,
    pub bos_token_id: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    pub projection_dim: usize,
    pub logit_scale_init_value: f64,
}

/// Reads keys of one JSON object with defaults, naming `context` in errors.
struct Keys<'a> {
    obj: &'a Value,
    context: String,
}

impl Keys<'_> {
    fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| Error::msg(format!("{}: '{key}' must be a non-negative integer, got {v}", self.context))),
        }
    }
    fn i64(&self, key: &str, default: i64) -> Result<i64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| Error::msg(format!("{}: '{key}' must be an integer, got {v}", self.context))),
        }
    }
    fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| Error::msg(format!("{}: '{key}' must be a number, got {v}", self.context))),
        }
    }
    fn act(&self, key: &str, default: &str) -> Result<Activation> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Activation::from_name(default),
            Some(Value::String(s)) => Activation::from_name(s).map_err(|e| Error::msg(format!("{}: {e}", self.context))),
            Some(v) => Err(Error::msg(format!("{}: '{key}' must be a string, got {v}", self.context))),
        }
    }
}

impl ClipTextConfig {
    fn from_json(v: &Value, context: &str) -> Result<Self> {
        let k = Keys {
            obj: v,
            context: format!("{context} text_config"),
        };
        let c = ClipTextConfig {
            vocab_size: k.usize("vocab_size", 49408)?,
            hidden_size: k.usize("hidden_size", 512)?,
            intermediate_size: k.usize("intermediate_size", 2048)?,
            num_hidden_layers: k.usize("num_hidden_layers", 12)?,
            num_attention_heads: k.usize("num_attention_heads", 8)?,
            max_position_embeddings: k.usize("max_position_embeddings", 77)?,
            hidden_act: k.act("hidden_act", "quick_gelu")?,
            layer_norm_eps: k.f64("layer_norm_eps", 1e-5)?,
            eos_token_id: k.i64("eos_token_id", 49407)?,
            pad_token_id: k.i64("pad_token_id", 1)?,
            bos_token_id: k.i64("bos_token_id", 49406)?,
        };
        c.validate(&k.context)?;
        Ok(c)
    }

    fn validate(&self, context: &str) -> Result<()> {
        check_heads(self.hidden_size, self.num_attention_heads, context)
    }

    fn to_json(&self) -> Value {
        json!({
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
            "max_position_embeddings": self.max_position_embeddings, "hidden_act": self.hidden_act.name(),
            "layer_norm_eps": self.layer_norm_eps, "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id, "model_type": "clip_text_model",
        })
    }
}

impl ClipVisionConfig {
    pub fn from_json(v: &Value, context: &str) -> Result<Self> {
        let k = Keys {
            obj: v,
            context: format!("{context} vision_config"),
        };
        let c = ClipVisionConfig {
            hidden_size: k.usize("hidden_size", 768)?,
            intermediate_size: k.usize("intermediate_size", 3072)?,
            num_hidden_layers: k.usize("num_hidden_layers", 12)?,
            num_attention_heads: k.usize("num_attention_heads", 12)?,
            num_channels: k.usize("num_channels", 3)?,
            image_size: k.usize("image_size", 224)?,
            patch_size: k.usize("patch_size", 32)?,
            hidden_act: k.act("hidden_act", "quick_gelu")?,
            layer_norm_eps: k.f64("layer_norm_eps", 1e-5)?,
        };
        c.validate(&k.context)?;
        Ok(c)
    }

    pub fn validate(&self, context: &str) -> Result<()> {
        check_heads(self.hidden_size, self.num_attention_heads, context)?;
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::msg(format!(
                "{context}: image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "num_channels": self.num_channels, "image_size": self.image_size,
            "patch_size": self.patch_size, "hidden_act": self.hidden_act.name(), "layer_norm_eps": self.layer_norm_eps,
            "model_type": "clip_vision_model",
        })
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Multiply-add FLOPs (2 per MAC) of one image through the tower, up to the pooled token:
    /// patch embedding plus the encoder (projections, MLP and attention over patches + 1 tokens).
    pub fn forward_flops(&self) -> f64 {
        let patches = self.num_patches() as f64;
        let patch_in = (self.num_channels * self.patch_size * self.patch_size) as f64;
        2.0 * patches * patch_in * self.hidden_size as f64
            + encoder_flops(
                self.num_hidden_layers,
                self.hidden_size,
                self.intermediate_size,
                self.num_patches() + 1,
            )
    }
}

impl ClipTextConfig {
    /// Multiply-add FLOPs of one sequence of `tokens` through the encoder (the attention counted
    /// in full, as if not causal).
    pub fn forward_flops(&self, tokens: usize) -> f64 {
        encoder_flops(self.num_hidden_layers, self.hidden_size, self.intermediate_size, tokens)
    }
}

/// FLOPs of a pre-LN encoder on one sequence: per layer the q/k/v/out projections (4 d^2 MACs a
/// token), the MLP (2 d ff) and attention's two s x s x d products.
fn encoder_flops(layers: usize, d: usize, ff: usize, s: usize) -> f64 {
    let (d, ff, s) = (d as f64, ff as f64, s as f64);
    layers as f64 * (2.0 * s * (4.0 * d * d + 2.0 * d * ff) + 4.0 * s * s * d)
}

fn check_heads(hidden: usize, heads: usize, context: &str) -> Result<()> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(Error::msg(format!(
            "{context}: hidden_size {hidden} is not divisible by num_attention_heads {heads}"
        )));
    }
    Ok(())
}

impl ClipConfig {
    /// OpenAI's ViT-B/32 CLIP: vision 768 wide, 12 layers, 12 heads, patch 32 on 224 pixels;
    /// text 512 wide, 12 layers, 8 heads, 77 positions; projection 512.
    pub fn vit_b32() -> Self {
        ClipConfig::from_json(&json!({}), "ViT-B/32").expect("the defaults are ViT-B/32")
    }

    pub fn from_json(v: &Value, context: &str) -> Result<Self> {
        let empty = json!({});
        let k = Keys {
            obj: v,
            context: context.to_string(),
        };
        Ok(ClipConfig {
            text: ClipTextConfig::from_json(v.get("text_config").unwrap_or(&empty), context)?,
            vision: ClipVisionConfig::from_json(v.get("vision_config").unwrap_or(&empty), context)?,
            projection_dim: k.usize("projection_dim", 512)?,
            logit_scale_init_value: k.f64("logit_scale_init_value", 2.6592)?,
        })
    }

    /// Checks what the models rely on (heads divide the width, patches tile the image), for
    /// configs built in code; `from_json` checks every config it reads.
    pub fn validate(&self, context: &str) -> Result<()> {
        self.text.validate(&format!("{context} text_config"))?;
        self.vision.validate(&format!("{context} vision_config"))
    }

    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let v = crate::io::read_json(&path, "the model config")?;
        Self::from_json(&v, &path.display().to_string())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "text_config": self.text.to_json(), "vision_config": self.vision.to_json(),
        })
    }
}
