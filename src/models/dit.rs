//! DiT (Peebles & Xie, "Scalable Diffusion Models with Transformers"): the image is cut into
//! patches (a strided conv) plus fixed 2-d sin-cos positions; each transformer block is
//! modulated by the conditioning vector c through adaLN-Zero (shift, scale and a residual gate
//! for attention and for the MLP, all from Linear(SiLU(c))); a final adaLN layer and a linear
//! map each token back to its patch of the output.
//!
//! Two conditionings share the blocks:
//! - `Class`: diffusers' `DiTTransformer2DModel` (tensor names and config keys included, so its
//!   checkpoints load): c = timestep MLP(sinusoid(t)) + class embedding, computed by each
//!   block's own `norm1.emb` (the final layer uses block 0's), class `num_classes` being the
//!   null label of classifier-free guidance.
//! - `Text`: c = timestep MLP + a projection of a frozen CLIP text encoder's pooled embedding,
//!   computed once (`condition_embed`), and every block adds cross-attention from the image
//!   tokens to the encoder's token states after its self-attention (`norm2`, `attn2`; the MLP's
//!   norm is then `norm3`, diffusers' naming). A learned null condition (`null_hidden_states`,
//!   `null_pooled`) stands for "no prompt" in guidance and in condition dropout.

use crate::io::safetensors::{self, LoadOptions};
use crate::nn::{Embedding, Init, LayerNorm, Linear, MultiHeadAttention, ParamStore, PatchEmbed, Scope, DIFFUSERS_ATTENTION_NAMES};
use crate::ops::AttentionOptions;
use crate::{DType, Device, Error, Result, Tensor};
use serde_json::{json, Value};
use std::path::Path;

/// Channels of the sinusoidal timestep features (diffusers' DiT: 256).
const TIME_FEATURES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DitConditioning {
    /// Class labels 0..num_classes, and num_classes for "no class".
    Class { num_classes: usize },
    /// A text encoder's token states [B, text_len, text_width] and pooled embedding.
    Text { text_width: usize, text_len: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DitConfig {
    pub sample_size: usize,
    pub patch_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub norm_eps: f64,
    pub conditioning: DitConditioning,
}

impl DitConfig {
    pub fn dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn num_patches(&self) -> usize {
        (self.sample_size / self.patch_size).pow(2)
    }

    pub fn validate(&self, context: &str) -> Result<()> {
        let bad = |msg: String| Err(Error::msg(format!("{context}: {msg}")));
        if self.patch_size == 0 || self.sample_size == 0 || !self.sample_size.is_multiple_of(self.patch_size) {
            return bad(format!(
                "patch_size {} must divide sample_size {}",
                self.patch_size, self.sample_size
            ));
        }
        if self.dim() == 0 || !self.dim().is_multiple_of(4) {
            return bad(format!(
                "the width (heads x head dim = {}) must be a positive multiple of 4",
                self.dim()
            ));
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.num_layers == 0 {
            return bad("in_channels, out_channels and num_layers must be at least 1".into());
        }
        match self.conditioning {
            DitConditioning::Class { num_classes: 0 } => bad("num_embeds_ada_norm must be at least 1".into()),
            DitConditioning::Text { text_width: 0, .. } | DitConditioning::Text { text_len: 0, .. } => {
                bad("cross_attention_dim and text_max_length must be at least 1".into())
            }
            _ => Ok(()),
        }
    }

    /// diffusers' keys; the text variant adds `cross_attention_dim` and `text_max_length`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "_class_name": "DiTTransformer2DModel", "sample_size": self.sample_size, "patch_size": self.patch_size,
            "in_channels": self.in_channels, "out_channels": self.out_channels, "num_layers": self.num_layers,
            "num_attention_heads": self.num_attention_heads, "attention_head_dim": self.attention_head_dim,
            "norm_eps": self.norm_eps, "norm_type": "ada_norm_zero", "activation_fn": "gelu-approximate",
            "norm_elementwise_affine": false, "attention_bias": true,
        });
        match self.conditioning {
            DitConditioning::Class { num_classes } => v["num_embeds_ada_norm"] = json!(num_classes),
            DitConditioning::Text { text_width, text_len } => {
                v["cross_attention_dim"] = json!(text_width);
                v["text_max_length"] = json!(text_len);
            }
        }
        v
    }

    pub fn from_json(v: &Value, context: &str) -> Result<Self> {
        let get = |k: &str, default: Option<u64>| -> Result<usize> {
            match v.get(k) {
                None | Some(Value::Null) => default
                    .map(|d| d as usize)
                    .ok_or_else(|| Error::msg(format!("{context}: missing '{k}'"))),
                Some(x) => x
                    .as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| Error::msg(format!("{context}: '{k}' must be a non-negative integer, got {x}"))),
            }
        };
        let expect = |k: &str, want: &[&str]| -> Result<()> {
            match v.get(k).and_then(Value::as_str) {
                Some(s) if !want.contains(&s) => Err(Error::msg(format!("{context}: {k} '{s}' is not supported (expected {want:?})"))),
                _ => Ok(()),
            }
        };
        expect("norm_type", &["ada_norm_zero"])?;
        expect("activation_fn", &["gelu-approximate"])?;
        if v.get("norm_elementwise_affine").and_then(Value::as_bool) == Some(true) {
            return Err(Error::msg(format!("{context}: norm_elementwise_affine true is not supported")));
        }
        let in_channels = get("in_channels", Some(4))?;
        let conditioning = match v.get("cross_attention_dim") {
            Some(Value::Null) | None => DitConditioning::Class {
                num_classes: get("num_embeds_ada_norm", Some(1000))?,
            },
            Some(_) => DitConditioning::Text {
                text_width: get("cross_attention_dim", None)?,
                text_len: get("text_max_length", None)?,
            },
        };
        let c = DitConfig {
            sample_size: get("sample_size", Some(32))?,
            patch_size: get("patch_size", Some(2))?,
            in_channels,
            out_channels: get("out_channels", Some(in_channels as u64))?,
            num_layers: get("num_layers", Some(28))?,
            num_attention_heads: get("num_attention_heads", Some(16))?,
            attention_head_dim: get("attention_head_dim", Some(72))?,
            norm_eps: v.get("norm_eps").and_then(Value::as_f64).unwrap_or(1e-5),
            conditioning,
        };
        c.validate(context)?;
        Ok(c)
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let v = crate::io::read_json(&path, "the model config")?;
        Self::from_json(&v, &path.display().to_string())
    }
}

/// sinusoid(t) as diffusers' `Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)`:
/// [cos(t f_k), sin(t f_k)] with f_k = exp(-ln(10000) k / (128 - 1)), k < 128, computed in f32
/// as PyTorch does (the rounding of t f_k matters at t ~ 1000).
pub fn timestep_features(timesteps: &[f64]) -> Vec<f32> {
    let half = TIME_FEATURES / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|k| ((-(10000f64.ln() as f32) * k as f32) / (half - 1) as f32).exp())
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * TIME_FEATURES);
    for &t in timesteps {
        let args: Vec<f64> = freqs.iter().map(|&f| (t as f32 * f) as f64).collect();
        out.extend(args.iter().map(|a| a.cos() as f32));
        out.extend(args.iter().map(|a| a.sin() as f32));
    }
    out
}

/// Fixed 2-d sin-cos positions [g*g, dim] for a g x g grid of patches (row-major), as diffusers'
/// `get_2d_sincos_pos_embed` with base size g: the first half encodes the column, the second the
/// row, each as [sin(pos w_k), cos(pos w_k)] with w_k = 10000^(-k / (dim/4)).
pub fn sincos_positions(grid: usize, dim: usize) -> Vec<f32> {
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter).map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64)).collect();
    let mut out = Vec::with_capacity(grid * grid * dim);
    for row in 0..grid {
        for col in 0..grid {
            for pos in [col as f64, row as f64] {
                out.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                out.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    out
}

/// Linear(256 -> D), SiLU, Linear(D -> D): `timestep_embedder.linear_1` / `linear_2`.
#[derive(Clone)]
struct TimestepEmbedder {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedder {
    fn new(s: &Scope, dim: usize) -> Result<Self> {
        let init = Init::Normal { std: 0.02 };
        Ok(TimestepEmbedder {
            linear_1: Linear::with_init(&s.pp("linear_1"), TIME_FEATURES, dim, init, Some(Init::Zeros))?,
            linear_2: Linear::with_init(&s.pp("linear_2"), dim, dim, init, Some(Init::Zeros))?,
        })
    }

    fn forward(&self, features: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(features)?.silu()?)
    }
}

/// The text conditioning: what replaces the prompt when there is none, and c's text part.
#[derive(Clone)]
struct TextConditioner {
    timestep: TimestepEmbedder,
    text_proj: Linear,
    null_hidden_states: Tensor,
    null_pooled: Tensor,
}

/// A text encoder's view of a batch of prompts.
#[derive(Clone)]
pub struct TextCondition {
    /// [B, L, W] token states (the encoder's last hidden state).
    pub states: Tensor,
    /// [B, L], nonzero where the token is real.
    pub mask: Tensor,
    /// [B, W] pooled embedding.
    pub pooled: Tensor,
}

pub enum DitCondition<'a> {
    /// One label per image; `num_classes` is the null label.
    Class(&'a [usize]),
    Text(&'a TextCondition),
}

fn xavier(s: &Scope, in_dim: usize, out_dim: usize) -> Result<Linear> {
    let init = Init::XavierUniform {
        fan_in: in_dim,
        fan_out: out_dim,
    };
    Linear::with_init(s, in_dim, out_dim, init, Some(Init::Zeros))
}

#[derive(Clone)]
struct DitBlock {
    /// `norm1.emb`: the class variant's per-block timestep and label embedders.
    class_embed: Option<(TimestepEmbedder, Embedding)>,
    /// `norm1.linear`: SiLU(c) -> the six modulations.
    modulation: Linear,
    attn1: MultiHeadAttention,
    /// `norm2`, `attn2`: the text variant's cross-attention.
    cross: Option<(LayerNorm, MultiHeadAttention)>,
    ff_in: Linear,
    ff_out: Linear,
}

/// x * (1 + scale) + shift, with scale and shift [B, D] broadcast over the tokens of x [B, N, D].
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.mul(&scale.unsqueeze(1)?.add_scalar(1.0)?)?.add(&shift.unsqueeze(1)?)
}

pub struct Dit {
    pub config: DitConfig,
    pub store: ParamStore,
    patch_embed: PatchEmbed,
    /// [N, D], fixed.
    positions: Tensor,
    text: Option<TextConditioner>,
    blocks: Vec<DitBlock>,
    proj_out_1: Linear,
    proj_out_2: Linear,
    compute_dtype: DType,
}

impl Dit {
    /// A freshly initialised model as DiT initialises it: Xavier-uniform linears, zero biases,
    /// N(0, 0.02) timestep MLP and embeddings, and zero adaLN-Zero modulations and output layer
    /// (so every block starts as the identity and the model predicts 0).
    pub fn new(config: DitConfig, device: Device, dtype: DType, seed: u64) -> Result<Self> {
        config.validate("dit config")?;
        let store = ParamStore::new(device, dtype, seed);
        let root = store.root();
        let d = config.dim();
        let heads = config.num_attention_heads;
        let p = config.patch_size;
        let patch_embed = PatchEmbed::new(&root.pp("pos_embed.proj"), config.in_channels, d, p, true)?;
        let text = match config.conditioning {
            DitConditioning::Text { text_width, text_len } => {
                let s = root.pp("condition_embed");
                let small = Init::Normal { std: 0.02 };
                Some(TextConditioner {
                    timestep: TimestepEmbedder::new(&s.pp("timestep_embedder"), d)?,
                    text_proj: xavier(&s.pp("text_proj"), text_width, d)?,
                    null_hidden_states: s.param("null_hidden_states", &[text_len, text_width], small)?,
                    null_pooled: s.param("null_pooled", &[text_width], small)?,
                })
            }
            DitConditioning::Class { .. } => None,
        };
        let mut blocks = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let s = root.pp(format!("transformer_blocks.{i}"));
            let class_embed = match config.conditioning {
                DitConditioning::Class { num_classes } => {
                    let e = s.pp("norm1.emb");
                    Some((
                        TimestepEmbedder::new(&e.pp("timestep_embedder"), d)?,
                        Embedding::new(&e.pp("class_embedder.embedding_table"), num_classes + 1, d, 0.02)?,
                    ))
                }
                DitConditioning::Text { .. } => None,
            };
            let cross = match config.conditioning {
                DitConditioning::Text { text_width, .. } => Some((
                    LayerNorm::new(&s.pp("norm2"), d, 1e-5)?,
                    MultiHeadAttention::named(&s.pp("attn2"), d, text_width, heads, DIFFUSERS_ATTENTION_NAMES)?,
                )),
                DitConditioning::Class { .. } => None,
            };
            blocks.push(DitBlock {
                class_embed,
                modulation: Linear::with_init(&s.pp("norm1.linear"), d, 6 * d, Init::Zeros, Some(Init::Zeros))?,
                attn1: MultiHeadAttention::named(&s.pp("attn1"), d, d, heads, DIFFUSERS_ATTENTION_NAMES)?,
                cross,
                ff_in: xavier(&s.pp("ff.net.0.proj"), d, 4 * d)?,
                ff_out: xavier(&s.pp("ff.net.2"), 4 * d, d)?,
            });
        }
        let out = p * p * config.out_channels;
        let grid = config.sample_size / p;
        Ok(Dit {
            positions: Tensor::from_vec(sincos_positions(grid, d), &[grid * grid, d], device)?.to_dtype(dtype)?,
            proj_out_1: Linear::with_init(&root.pp("proj_out_1"), d, 2 * d, Init::Zeros, Some(Init::Zeros))?,
            proj_out_2: Linear::with_init(&root.pp("proj_out_2"), d, out, Init::Zeros, Some(Init::Zeros))?,
            patch_embed,
            text,
            blocks,
            config,
            store,
            compute_dtype: dtype,
        })
    }

    /// Loads `config.json` and `model.safetensors` (or diffusers' `diffusion_pytorch_model.safetensors`).
    pub fn load(dir: &Path, device: Device, dtype: DType) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "not a model directory"));
        }
        let config = DitConfig::load(dir)?;
        let model = Dit::new(config, device, dtype, 0)?;
        let weights = ["model.safetensors", "diffusion_pytorch_model.safetensors"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::file(dir, "missing model.safetensors (or diffusion_pytorch_model.safetensors)"))?;
        let opts = LoadOptions {
            allow_unused: false,
            dtypes: Some(&[DType::F32, DType::F16, DType::BF16]),
        };
        safetensors::load_into(&model.store, &weights, opts)?;
        Ok(model)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
        crate::io::write_json(&dir.join("config.json"), &self.config.to_json())?;
        safetensors::save(dir.join("model.safetensors"), &self.store.named())
    }

    /// Computes in `dtype` over the parameters as stored (bf16 over f32: mixed precision).
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute_dtype = dtype;
    }

    /// The null text condition for `batch` images: "no prompt".
    pub fn null_text(&self, batch: usize) -> Result<TextCondition> {
        let t = self.text_conditioner()?;
        let (l, w) = (t.null_hidden_states.dims()[0], t.null_hidden_states.dims()[1]);
        let device = t.null_pooled.device();
        Ok(TextCondition {
            states: t.null_hidden_states.unsqueeze(0)?.broadcast_as(&[batch, l, w])?,
            mask: Tensor::ones(&[batch, l], DType::F32, device)?,
            pooled: t.null_pooled.unsqueeze(0)?.broadcast_as(&[batch, w])?,
        })
    }

    /// `cond` with the rows where `keep` is false replaced by the null condition (condition
    /// dropout; differentiable in the null parameters).
    pub fn drop_text(&self, cond: &TextCondition, keep: &[bool]) -> Result<TextCondition> {
        let b = keep.len();
        let null = self.null_text(b)?;
        let device = cond.states.device();
        let k: Vec<f32> = keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
        let k3 = Tensor::from_vec(k.clone(), &[b, 1, 1], device)?.to_dtype(cond.states.dtype())?;
        let k2 = k3.reshape(&[b, 1])?;
        let select = |c: &Tensor, n: &Tensor, k: &Tensor| c.mul(k)?.add(&n.to_dtype(c.dtype())?.mul(&k.neg()?.add_scalar(1.0)?)?);
        let mask: Vec<f32> = cond.mask.to_dtype(DType::F32)?.to_vec::<f32>()?;
        let l = cond.mask.dims()[1];
        let mask: Vec<f32> = mask
            .chunks(l)
            .zip(keep)
            .flat_map(|(row, &k)| row.iter().map(move |&m| if k { m } else { 1.0 }))
            .collect();
        Ok(TextCondition {
            states: select(&cond.states, &null.states, &k3)?,
            mask: Tensor::from_vec(mask, &[b, l], device)?,
            pooled: select(&cond.pooled, &null.pooled, &k2)?,
        })
    }

    fn text_conditioner(&self) -> Result<&TextConditioner> {
        self.text
            .as_ref()
            .ok_or_else(|| Error::msg("dit: this model is class-conditioned; it takes class labels, not text"))
    }

    /// The denoiser's output [B, out_channels, S, S] for noisy images x [B, in_channels, S, S]
    /// at `timesteps` (one per image) under `condition`.
    pub fn forward(&self, x: &Tensor, timesteps: &[f64], condition: &DitCondition) -> Result<Tensor> {
        let c = &self.config;
        let s = c.sample_size;
        let b = x.dims()[0];
        if x.dims() != [b, c.in_channels, s, s] {
            return Err(Error::shape(
                "dit",
                format!("input {:?}: expected [B, {}, {s}, {s}]", x.dims(), c.in_channels),
            ));
        }
        if timesteps.len() != b {
            return Err(Error::shape("dit", format!("{} timesteps for a batch of {b}", timesteps.len())));
        }
        let device = x.device();
        let dt = self.compute_dtype;
        let features = Tensor::from_vec(timestep_features(timesteps), &[b, TIME_FEATURES], device)?.to_dtype(dt)?;
        let (labels, text) = match (condition, c.conditioning) {
            (DitCondition::Class(labels), DitConditioning::Class { num_classes }) => {
                if labels.len() != b {
                    return Err(Error::shape("dit", format!("{} class labels for a batch of {b}", labels.len())));
                }
                if let Some(bad) = labels.iter().find(|&&l| l > num_classes) {
                    return Err(Error::msg(format!(
                        "dit: class label {bad} outside 0..={num_classes} ({num_classes} is the null label)"
                    )));
                }
                let ids: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
                (Some(Tensor::from_vec(ids, &[b], device)?), None)
            }
            (DitCondition::Text(t), DitConditioning::Text { text_width, .. }) => {
                if t.states.rank() != 3 || t.states.dims()[0] != b || t.states.dims()[2] != text_width || t.pooled.dims() != [b, text_width]
                {
                    return Err(Error::shape(
                        "dit",
                        format!(
                            "text states {:?} / pooled {:?}: expected [{b}, L, {text_width}] and [{b}, {text_width}] (the text encoder's width must match the denoiser's cross_attention_dim)",
                            t.states.dims(),
                            t.pooled.dims()
                        ),
                    ));
                }
                (None, Some(*t))
            }
            (DitCondition::Text(_), _) => return Err(Error::msg("dit: this model is class-conditioned; it takes class labels, not text")),
            (DitCondition::Class(_), _) => {
                return Err(Error::msg(
                    "dit: this model is text-conditioned; it takes a prompt, not class labels",
                ))
            }
        };
        let shared = match (&self.text, text) {
            (Some(tc), Some(t)) => Some(
                tc.timestep
                    .forward(&features)?
                    .add(&tc.text_proj.forward(&t.pooled.to_dtype(dt)?)?)?,
            ),
            _ => None,
        };
        let text_states = text.map(|t| t.states.to_dtype(dt)).transpose()?;
        let key_mask = text.map(|t| &t.mask);
        let d = c.dim();
        let ones = Tensor::ones(&[d], dt, device)?;
        let zeros = Tensor::zeros(&[d], dt, device)?;
        // adaLN-Zero's and the final layer's norms use 1e-6 whatever the config says; the MLP's
        // uses norm_eps (as in diffusers).
        let norm = |h: &Tensor, eps: f64| h.layer_norm(&ones, &zeros, eps);
        let mut h = self.patch_embed.forward(&x.to_dtype(dt)?)?.add(&self.positions.to_dtype(dt)?)?;
        let mut first_c = None;
        for blk in &self.blocks {
            let cond = match (&blk.class_embed, &labels, &shared) {
                (Some((te, table)), Some(ids), _) => te.forward(&features)?.add(&table.forward(ids)?.to_dtype(dt)?)?,
                (_, _, Some(shared)) => shared.clone(),
                _ => return Err(Error::msg("dit: internal error: no conditioning for a block")),
            };
            let m = blk.modulation.forward(&cond.silu()?)?;
            let chunk = |k: usize| m.narrow(1, k * d, d);
            let n = modulate(&norm(&h, 1e-6)?, &chunk(0)?, &chunk(1)?)?;
            let attn = blk.attn1.forward(&n, &n, AttentionOptions::default())?;
            h = h.add(&attn.mul(&chunk(2)?.unsqueeze(1)?)?)?;
            if let (Some((norm2, attn2)), Some(states)) = (&blk.cross, &text_states) {
                let opts = AttentionOptions {
                    causal: false,
                    key_mask,
                    scale: None,
                };
                h = h.add(&attn2.forward(&norm2.forward(&h)?, states, opts)?)?;
            }
            let n = modulate(&norm(&h, c.norm_eps)?, &chunk(3)?, &chunk(4)?)?;
            let ff = blk.ff_out.forward(&blk.ff_in.forward(&n)?.gelu_tanh()?)?;
            h = h.add(&ff.mul(&chunk(5)?.unsqueeze(1)?)?)?;
            first_c.get_or_insert(cond);
        }
        let first_c = first_c.ok_or_else(|| Error::msg("dit: the model has no blocks"))?;
        let m = self.proj_out_1.forward(&first_c.silu()?)?;
        let h = modulate(&norm(&h, 1e-6)?, &m.narrow(1, 0, d)?, &m.narrow(1, d, d)?)?;
        let h = self.proj_out_2.forward(&h)?;
        // Tokens hold their patch as (row, column, channel); unpatchify wants channel first.
        let (p, oc, n) = (c.patch_size, c.out_channels, c.num_patches());
        h.reshape(&[b, n, p, p, oc])?
            .permute(&[0, 1, 4, 2, 3])?
            .reshape(&[b, n, oc * p * p])?
            .unpatchify(p, oc, s, s)?
            .to_dtype(self.store.dtype())
    }
}
