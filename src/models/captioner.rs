//! An encoder-decoder vision-language model for captioning and visual question answering: a CLIP
//! vision transformer encodes the image into tokens (all of them, after `post_layernorm`), a
//! linear map takes them to the decoder's width, and a causal pre-LN transformer decoder reads
//! them through cross-attention in every layer: x += self_attn(ln(x)) (causal), x +=
//! cross_attn(ln(x), image), x += mlp(ln(x)). Token and learned position embeddings in, a final
//! norm and the vocabulary projection (the token embedding itself when tied) out.
//!
//! Decoding keeps a KV cache: the image's cross-attention keys and values are computed once, and
//! each new token appends its own keys and values per layer, so one more token costs one step of
//! the decoder rather than a pass over the whole prefix. Training runs the same code on the
//! whole sequence from an empty cache, which is also how the tests check the cache.
//!
//! Tensor names: `vision_model.*` as in CLIP (so a CLIP checkpoint's vision tower loads into
//! it), `visual_proj`, `decoder.embed_tokens`, `decoder.embed_positions`,
//! `decoder.layers.N.{self_attn_layer_norm, self_attn, cross_attn_layer_norm, cross_attn,
//! mlp_layer_norm, mlp.fc1, mlp.fc2}`, `decoder.layer_norm`, `lm_head` (untied only).

use super::config::ClipVisionConfig;
use super::vit::VisionTransformer;
use crate::io::safetensors::{self, LoadOptions};
use crate::nn::{Activation, Embedding, Init, LayerNorm, Linear, Mlp, MultiHeadAttention, ParamStore, Scope};
use crate::ops::AttentionOptions;
use crate::{DType, Device, Error, Result, Tensor};
use serde_json::{json, Value};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Longest token sequence (prompt and output together).
    pub max_length: usize,
    pub tie_embeddings: bool,
    pub layer_norm_eps: f64,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaptionerConfig {
    pub vision: ClipVisionConfig,
    pub decoder: DecoderConfig,
}

impl CaptionerConfig {
    pub fn to_json(&self) -> Value {
        let d = &self.decoder;
        json!({
            "model_type": "vlk-captioner",
            "vision_config": self.vision.to_json(),
            "decoder_config": {"vocab_size": d.vocab_size, "hidden_size": d.hidden_size, "intermediate_size": d.intermediate_size,
                               "num_layers": d.num_layers, "num_heads": d.num_heads, "max_length": d.max_length,
                               "tie_embeddings": d.tie_embeddings, "layer_norm_eps": d.layer_norm_eps,
                               "bos_token_id": d.bos_token_id, "eos_token_id": d.eos_token_id},
        })
    }

    pub fn from_json(v: &Value, context: &str) -> Result<Self> {
        if v.get("model_type").and_then(Value::as_str) != Some("vlk-captioner") {
            return Err(Error::msg(format!(
                "{context}: not a captioning model (model_type is not \"vlk-captioner\")"
            )));
        }
        let vision = ClipVisionConfig::from_json(&v["vision_config"], context)?;
        let d = &v["decoder_config"];
        let u = |k: &str| {
            d.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| Error::msg(format!("{context}: decoder_config needs a non-negative integer '{k}'")))
        };
        let c = CaptionerConfig {
            vision,
            decoder: DecoderConfig {
                vocab_size: u("vocab_size")? as usize,
                hidden_size: u("hidden_size")? as usize,
                intermediate_size: u("intermediate_size")? as usize,
                num_layers: u("num_layers")? as usize,
                num_heads: u("num_heads")? as usize,
                max_length: u("max_length")? as usize,
                tie_embeddings: d.get("tie_embeddings").and_then(Value::as_bool).unwrap_or(true),
                layer_norm_eps: d.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-5),
                bos_token_id: u("bos_token_id")? as u32,
                eos_token_id: u("eos_token_id")? as u32,
            },
        };
        c.validate(context)?;
        Ok(c)
    }

    pub fn validate(&self, context: &str) -> Result<()> {
        let d = &self.decoder;
        if d.num_heads == 0 || !d.hidden_size.is_multiple_of(d.num_heads) {
            return Err(Error::msg(format!(
                "{context}: decoder hidden_size {} is not divisible by num_heads {}",
                d.hidden_size, d.num_heads
            )));
        }
        if d.vocab_size == 0 || d.max_length < 2 || d.num_layers == 0 {
            return Err(Error::msg(format!(
                "{context}: decoder needs a vocabulary, max_length >= 2 and a layer"
            )));
        }
        if d.bos_token_id as usize >= d.vocab_size || d.eos_token_id as usize >= d.vocab_size {
            return Err(Error::msg(format!(
                "{context}: bos/eos token ids outside the vocabulary of {}",
                d.vocab_size
            )));
        }
        Ok(())
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let v = crate::io::read_json(&path, "the model config")?;
        Self::from_json(&v, &path.display().to_string())
    }
}

struct DecoderLayer {
    self_attn_layer_norm: LayerNorm,
    self_attn: MultiHeadAttention,
    cross_attn_layer_norm: LayerNorm,
    cross_attn: MultiHeadAttention,
    mlp_layer_norm: LayerNorm,
    mlp: Mlp,
}

/// What decoding keeps between steps: per layer, the self-attention keys and values of every
/// token so far and the cross-attention keys and values of the image ([B, H, S, D/H] each).
#[derive(Clone)]
pub struct KvCache {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross_kv: Vec<(Tensor, Tensor)>,
    /// Tokens seen so far.
    pub len: usize,
}

impl KvCache {
    /// Keeps the rows `rows` of every cached tensor, in that order (beam search reordering).
    pub fn select(&self, rows: &[usize]) -> Result<KvCache> {
        let device = self.cross_kv[0].0.device();
        let idx = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<u32>>(), &[rows.len()], device)?;
        let pick = |(k, v): &(Tensor, Tensor)| -> Result<(Tensor, Tensor)> { Ok((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?)) };
        Ok(KvCache {
            self_kv: self
                .self_kv
                .iter()
                .map(|kv| kv.as_ref().map(pick).transpose())
                .collect::<Result<_>>()?,
            cross_kv: self.cross_kv.iter().map(pick).collect::<Result<_>>()?,
            len: self.len,
        })
    }
}

pub struct Captioner {
    pub config: CaptionerConfig,
    pub store: ParamStore,
    pub vision_model: VisionTransformer,
    visual_proj: Linear,
    embed_tokens: Embedding,
    embed_positions: Embedding,
    layers: Vec<DecoderLayer>,
    layer_norm: LayerNorm,
    lm_head: Option<Linear>,
}

impl Captioner {
    pub fn new(config: CaptionerConfig, device: Device, dtype: DType, seed: u64) -> Result<Self> {
        config.validate("captioner config")?;
        config.vision.validate("captioner vision_config")?;
        let store = ParamStore::new(device, dtype, seed);
        let root = store.root();
        let d = &config.decoder;
        let h = d.hidden_size;
        let dec = root.pp("decoder");
        let layer = |s: &Scope| -> Result<DecoderLayer> {
            Ok(DecoderLayer {
                self_attn_layer_norm: LayerNorm::new(&s.pp("self_attn_layer_norm"), h, d.layer_norm_eps)?,
                self_attn: MultiHeadAttention::new(&s.pp("self_attn"), h, h, d.num_heads)?,
                cross_attn_layer_norm: LayerNorm::new(&s.pp("cross_attn_layer_norm"), h, d.layer_norm_eps)?,
                cross_attn: MultiHeadAttention::new(&s.pp("cross_attn"), h, h, d.num_heads)?,
                mlp_layer_norm: LayerNorm::new(&s.pp("mlp_layer_norm"), h, d.layer_norm_eps)?,
                mlp: Mlp::new(&s.pp("mlp"), h, d.intermediate_size, Activation::Gelu)?,
            })
        };
        Ok(Captioner {
            vision_model: VisionTransformer::new(&root.pp("vision_model"), &config.vision)?,
            visual_proj: Linear::new(&root.pp("visual_proj"), config.vision.hidden_size, h, true)?,
            embed_tokens: Embedding::new(&dec.pp("embed_tokens"), d.vocab_size, h, 0.02)?,
            embed_positions: Embedding::new(&dec.pp("embed_positions"), d.max_length, h, 0.02)?,
            layers: (0..d.num_layers).map(|i| layer(&dec.pp("layers").pp(i))).collect::<Result<_>>()?,
            layer_norm: LayerNorm::new(&dec.pp("layer_norm"), h, d.layer_norm_eps)?,
            lm_head: if d.tie_embeddings {
                None
            } else {
                Some(Linear::with_init(
                    &root.pp("lm_head"),
                    h,
                    d.vocab_size,
                    Init::Normal { std: 0.02 },
                    None,
                )?)
            },
            config,
            store,
        })
    }

    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "not a model directory"));
        }
        let config = CaptionerConfig::load(dir)?;
        let model = Captioner::new(config, device, DType::F32, 0)?;
        safetensors::load_into(&model.store, dir.join("model.safetensors"), LoadOptions::default())?;
        Ok(model)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
        crate::io::write_json(&dir.join("config.json"), &self.config.to_json())?;
        safetensors::save(dir.join("model.safetensors"), &self.store.named())
    }

    /// Copies a CLIP checkpoint's vision tower (`vision_model.*` of `model.safetensors` in `dir`)
    /// into this model; its config must match.
    pub fn init_vision_from_clip(&self, dir: &Path) -> Result<()> {
        let clip = super::ClipConfig::load(dir)?;
        if clip.vision != self.config.vision {
            return Err(Error::file(dir, "the CLIP's vision_config differs from the captioner's"));
        }
        let tensors = safetensors::load(dir.join("model.safetensors"), self.store.device())?;
        for (name, p) in self.store.named().into_iter().filter(|(n, _)| n.starts_with("vision_model.")) {
            let t = tensors
                .get(&name)
                .ok_or_else(|| Error::file(dir, format!("model.safetensors has no '{name}'")))?;
            p.assign(&t.to_dtype(p.dtype())?)?;
        }
        Ok(())
    }

    /// Image tokens in the decoder's width: [B, patches + 1, hidden].
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        let out = self.vision_model.forward_all(pixels)?;
        let last = out.hidden_states.last().expect("input state");
        self.visual_proj.forward(&self.vision_model.post_layernorm.forward(last)?)
    }

    /// A cache holding the image's cross-attention keys and values and no tokens.
    pub fn start(&self, image_tokens: &Tensor) -> Result<KvCache> {
        Ok(KvCache {
            self_kv: vec![None; self.layers.len()],
            cross_kv: self
                .layers
                .iter()
                .map(|l| l.cross_attn.keys_values(image_tokens))
                .collect::<Result<_>>()?,
            len: 0,
        })
    }

    /// Runs `ids` [B, T] (positions cache.len .. cache.len + T) through the decoder, appending
    /// their keys and values to the cache; returns logits [B, T, vocab].
    pub fn step(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let &[b, t] = ids.dims() else {
            return Err(Error::shape("captioner", format!("token ids must be [B, T], got {:?}", ids.dims())));
        };
        let max = self.config.decoder.max_length;
        if cache.len + t > max {
            return Err(Error::shape(
                "captioner",
                format!("{} tokens exceed the model's max_length {max}", cache.len + t),
            ));
        }
        if cache.cross_kv[0].0.dims()[0] != b {
            return Err(Error::shape(
                "captioner",
                format!("{b} token rows for a cache of {} images", cache.cross_kv[0].0.dims()[0]),
            ));
        }
        let device = ids.device();
        let positions = Tensor::arange(cache.len as f64, (cache.len + t) as f64, 1.0, DType::U32, device)?;
        let mut x = self.embed_tokens.forward(ids)?.add(&self.embed_positions.forward(&positions)?)?;
        let causal = AttentionOptions {
            causal: true,
            key_mask: None,
            scale: None,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.self_attn_layer_norm.forward(&x)?;
            let (k, v) = layer.self_attn.keys_values(&h)?;
            let (k, v) = match &cache.self_kv[i] {
                Some((pk, pv)) => (Tensor::concat(&[pk, &k], 2)?, Tensor::concat(&[pv, &v], 2)?),
                None => (k, v),
            };
            x = x.add(&layer.self_attn.attend(&h, &k, &v, causal)?)?;
            cache.self_kv[i] = Some((k, v));
            let (ck, cv) = &cache.cross_kv[i];
            let h = layer.cross_attn_layer_norm.forward(&x)?;
            x = x.add(&layer.cross_attn.attend(&h, ck, cv, AttentionOptions::default())?)?;
            x = x.add(&layer.mlp.forward(&layer.mlp_layer_norm.forward(&x)?)?)?;
        }
        cache.len += t;
        let x = self.layer_norm.forward(&x)?;
        match &self.lm_head {
            Some(head) => head.forward(&x),
            None => {
                let h = self.config.decoder.hidden_size;
                x.reshape(&[b * t, h])?
                    .matmul(&self.embed_tokens.weight.t()?)?
                    .reshape(&[b, t, self.config.decoder.vocab_size])
            }
        }
    }

    /// Teacher forcing: logits [B, T, vocab] for every position of `ids` [B, T] given the image.
    pub fn forward(&self, pixels: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let mut cache = self.start(&self.encode_image(pixels)?)?;
        self.step(ids, &mut cache)
    }
}
