//! The named workloads of `vlk bench`: what each one computes, its FLOP or byte count, how vlk
//! runs it, and the JSON description scripts/torch_bench.py rebuilds the same work from.
//! Inputs are random normal, never zeros; text workloads send PyTorch the token ids vlk uses.

use crate::cli::clip_train::small_clip;
use serde_json::{json, Value};
use vlk::backend::cpu::packed_weights::without_kept_panels;
use vlk::data::shapes::{Shapes, ShapesConfig, Split};
use vlk::data::tokenizer::ClipTokenizer;
use vlk::models::{Clip, ClipConfig};
use vlk::ops::AttentionOptions;
use vlk::train::clip::{ClipTrainer, TrainConfig};
use vlk::{DType, DenoiseParams, Device, Prediction, Result, Rng, Tensor};

/// What a workload's rate is measured in, and so which ceiling it is held against: the FMA
/// peak, the copy bandwidth (bytes read plus written), or for a row that only reads, the read
/// bandwidth.
#[derive(Clone, Copy)]
pub enum Work {
    Flops(f64),
    Bytes(f64),
    ReadBytes(f64),
}

/// A CLIP size: the demo's small model (image 32, patch 8, 4 layers 128 wide, the shapes
/// vocabulary) or OpenAI's ViT-B/32.
#[derive(Clone, Copy)]
pub enum Model {
    Small,
    VitB32,
}

/// A kernel-level workload: one op on random inputs.
#[derive(Clone, Copy)]
pub enum Kernel {
    Gemm {
        m: usize,
        n: usize,
        k: usize,
    },
    Attention {
        b: usize,
        h: usize,
        s: usize,
        d: usize,
        causal: bool,
        backward: bool,
    },
    LayerNorm {
        rows: usize,
        cols: usize,
        backward: bool,
    },
    Xent {
        rows: usize,
        classes: usize,
        backward: bool,
    },
    Denoise {
        n: usize,
    },
    Copy {
        n: usize,
    },
}

/// What a CLIP workload runs: the image tower, the text tower (inference), or a training step.
#[derive(Clone, Copy)]
pub enum ClipTask {
    Image,
    Text,
    Train,
}

#[derive(Clone, Copy)]
pub enum Op {
    Kernel(Kernel),
    Clip { task: ClipTask, model: Model, batch: usize },
}

/// A workload made ready to time: the run itself, its work, and its description for PyTorch.
pub struct Prepared {
    pub run: Box<dyn FnMut() -> Result<()>>,
    pub work: Work,
    pub spec: Value,
}

pub struct Workload {
    pub name: String,
    pub op: Op,
    pub dtype: DType,
}

/// Which set of shapes to run: sized for a CPU, for a GPU, or tiny (a smoke run, also on Emu).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    Cpu,
    Gpu,
    Quick,
}

fn w(name: &str, op: Op, dtype: DType) -> Workload {
    Workload {
        name: name.to_string(),
        op,
        dtype,
    }
}

/// The workloads of a suite, in the order they run.
pub fn suite(suite: Suite) -> Vec<Workload> {
    use ClipTask::{Image, Text, Train};
    use DType::{BF16, F32};
    use Model::{Small, VitB32};
    let attn = |b, h, s, d, causal, backward| {
        Op::Kernel(Kernel::Attention {
            b,
            h,
            s,
            d,
            causal,
            backward,
        })
    };
    let gemm = |m, n, k| Op::Kernel(Kernel::Gemm { m, n, k });
    let square = |n| gemm(n, n, n);
    let denoise = |n| Op::Kernel(Kernel::Denoise { n });
    let copy = |n| Op::Kernel(Kernel::Copy { n });
    let clip = |task, model, batch| Op::Clip { task, model, batch };
    match suite {
        Suite::Cpu => vec![
            w("gemm_f32_n512", square(512), F32),
            w("gemm_f32_n1024", square(1024), F32),
            w("gemm_f32_n2048", square(2048), F32),
            w("gemm_f32_vit_mlp", gemm(400, 3072, 768), F32),
            w("gemm_bf16_n1024", square(1024), BF16),
            w("attn_fwd_f32_s197_d64", attn(8, 8, 197, 64, false, false), F32),
            w("attn_bwd_f32_s197_d64", attn(8, 8, 197, 64, false, true), F32),
            w("attn_fwd_causal_f32_s77_d64", attn(8, 8, 77, 64, true, false), F32),
            w("layernorm_fwd_f32_4096x768", ln(4096, 768, false), F32),
            w("layernorm_fwd_f32_32768x1024", ln(32768, 1024, false), F32),
            w("layernorm_bwd_f32_32768x1024", ln(32768, 1024, true), F32),
            w("xent_fwd_f32_2048x32768", xent(2048, 32768, false), F32),
            w("xent_bwd_f32_2048x32768", xent(2048, 32768, true), F32),
            w("denoise_f32", denoise(1 << 24), F32),
            w("copy_f32", copy(1 << 26), F32),
            w("vit_b32_image_b1", clip(Image, VitB32, 1), F32),
            w("vit_b32_image_b8", clip(Image, VitB32, 8), F32),
            w("vit_b32_text_b8", clip(Text, VitB32, 8), F32),
            w("clip_train_small_b64", clip(Train, Small, 64), F32),
            w("clip_train_vit_b32_b8", clip(Train, VitB32, 8), F32),
        ],
        Suite::Gpu => {
            let mut v: Vec<Workload> = [1024, 4096, 8192]
                .into_iter()
                .map(|n| w(&format!("gemm_bf16_n{n}"), square(n), BF16))
                .collect();
            v.push(w("gemm_f32_n4096", square(4096), F32));
            for d in [64, 128] {
                v.push(w(&format!("attn_fwd_bf16_d{d}"), attn(4, 16, 4096, d, false, false), BF16));
                v.push(w(&format!("attn_fwd_causal_bf16_d{d}"), attn(4, 16, 4096, d, true, false), BF16));
                v.push(w(&format!("attn_bwd_bf16_d{d}"), attn(4, 16, 4096, d, false, true), BF16));
            }
            v.extend([
                w("layernorm_fwd_bf16", ln(32768, 4096, false), BF16),
                w("layernorm_bwd_bf16", ln(32768, 4096, true), BF16),
                w("xent_fwd_bf16", xent(8192, 32768, false), BF16),
                w("xent_bwd_bf16", xent(8192, 32768, true), BF16),
                w("denoise_bf16", denoise(1 << 26), BF16),
                w("copy_bf16", copy(1 << 28), BF16),
                w("vit_b32_image_b8_bf16", clip(Image, VitB32, 8), BF16),
                w("vit_b32_image_b256_bf16", clip(Image, VitB32, 256), BF16),
                w("vit_b32_text_b256_bf16", clip(Text, VitB32, 256), BF16),
                w("clip_train_vit_b32_b256_bf16", clip(Train, VitB32, 256), BF16),
            ]);
            v
        }
        Suite::Quick => vec![
            w("gemm_f32_n67", gemm(67, 45, 33), F32),
            w("attn_fwd_f32", attn(1, 2, 19, 8, true, false), F32),
            w("attn_bwd_f32", attn(1, 2, 19, 8, false, true), F32),
            w("layernorm_fwd_f32", ln(33, 40, false), F32),
            w("layernorm_bwd_f32", ln(33, 40, true), F32),
            w("xent_fwd_f32", xent(9, 70, false), F32),
            w("xent_bwd_f32", xent(9, 70, true), F32),
            w("denoise_f32", denoise(1000), F32),
            w("copy_f32", copy(1000), F32),
            w("clip_train_small_b4", clip(Train, Small, 4), F32),
        ],
    }
}

fn ln(rows: usize, cols: usize, backward: bool) -> Op {
    Op::Kernel(Kernel::LayerNorm { rows, cols, backward })
}

fn xent(rows: usize, classes: usize, backward: bool) -> Op {
    Op::Kernel(Kernel::Xent { rows, classes, backward })
}

fn denoise_params() -> DenoiseParams {
    DenoiseParams {
        guidance: 4.5,
        prediction: Prediction::Epsilon,
        sqrt_alpha_bar: 0.8,
        sqrt_one_minus_alpha_bar: 0.6,
        clip_sample: 0.0,
        c_x0: 0.35,
        c_xt: 0.55,
        c_eps: 0.0,
        c_noise: 0.1,
    }
}

impl Model {
    fn config(self) -> Result<(ClipConfig, ClipTokenizer)> {
        Ok(match self {
            Model::Small => {
                let tokenizer = ClipTokenizer::word_level(&Shapes::vocabulary())?;
                (small_clip(tokenizer.vocab_size(), 32, 8), tokenizer)
            }
            Model::VitB32 => (ClipConfig::vit_b32(), ClipTokenizer::bundled()?),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Model::Small => "small CLIP",
            Model::VitB32 => "ViT-B/32",
        }
    }
}

/// Token ids for a text batch (row-major, `len` a row), with the captions they encode when a
/// training step needs them, and the padding mask.
struct TextBatch {
    captions: Vec<String>,
    ids: Vec<u32>,
    mask: Option<Vec<u32>>,
    len: usize,
}

/// What a CLIP workload is built from, made once: the config, its tokenizer and the tokens.
struct ClipInputs {
    config: ClipConfig,
    tokenizer: ClipTokenizer,
    text: TextBatch,
}

impl ClipInputs {
    /// A training step gets shapes captions, tokenized and padded as training does; the text
    /// tower full-context random ids ending in the end token; the image tower no tokens.
    fn new(task: ClipTask, model: Model, batch: usize) -> Result<Self> {
        let (config, tokenizer) = model.config()?;
        let text = &config.text;
        let text = match task {
            ClipTask::Train => {
                let shapes = Shapes::new(ShapesConfig::default())?;
                let (_, captions) = shapes.batch(Split::Train, 0, batch);
                let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
                let tokens = tokenizer.encode_batch(&refs, text.max_position_embeddings, Device::Cpu)?;
                TextBatch {
                    captions,
                    len: tokens.ids.dims()[1],
                    ids: tokens.ids.to_vec::<u32>()?,
                    mask: Some(tokens.mask.to_vec::<u32>()?),
                }
            }
            ClipTask::Text => {
                let len = text.max_position_embeddings;
                // The end token last (the highest id where the config uses transformers' legacy
                // rule of pooling at the largest id), random ordinary tokens before it.
                let vocab = text.vocab_size as u32;
                let end = if text.eos_token_id == 2 {
                    vocab - 1
                } else {
                    text.eos_token_id as u32
                };
                let ids = (0..batch * len)
                    .map(|i| {
                        if i % len == len - 1 {
                            end
                        } else {
                            3 + (i as u32).wrapping_mul(7919) % (vocab - 4)
                        }
                    })
                    .collect();
                TextBatch {
                    captions: Vec::new(),
                    ids,
                    mask: None,
                    len,
                }
            }
            ClipTask::Image => TextBatch {
                captions: Vec::new(),
                ids: Vec::new(),
                mask: None,
                len: 0,
            },
        };
        Ok(ClipInputs { config, tokenizer, text })
    }

    /// FLOPs of one run: the towers' forward, three times over for a training step (backward
    /// costs twice the forward, a product for each operand).
    fn work(&self, task: ClipTask, batch: usize) -> Work {
        let (c, b) = (&self.config, batch as f64);
        Work::Flops(match task {
            ClipTask::Image => b * c.vision.forward_flops(),
            ClipTask::Text => b * c.text.forward_flops(self.text.len),
            ClipTask::Train => 3.0 * b * (c.vision.forward_flops() + c.text.forward_flops(self.text.len)),
        })
    }

    fn spec(&self, task: ClipTask, batch: usize) -> Value {
        let op = match task {
            ClipTask::Image => "clip_image",
            ClipTask::Text => "clip_text",
            ClipTask::Train => "clip_train",
        };
        let mut v = json!({"op": op, "batch": batch, "config": self.config.to_json()});
        if !self.text.ids.is_empty() {
            v["ids"] = json!(self.text.ids);
        }
        if let Some(mask) = &self.text.mask {
            v["mask"] = json!(mask);
        }
        v
    }

    fn runner(self, task: ClipTask, batch: usize, dtype: DType, device: Device) -> Result<Box<dyn FnMut() -> Result<()>>> {
        let size = self.config.vision.image_size;
        Ok(match task {
            ClipTask::Image => {
                let pixels = Tensor::randn(&mut Rng::new(0), &[batch, 3, size, size], 0.0, 1.0, dtype, device)?;
                let clip = Clip::new(self.config, device, dtype, 0)?;
                Box::new(move || vlk::no_grad(|| clip.image_embeds(&pixels)).map(drop))
            }
            ClipTask::Text => {
                let ids = Tensor::from_vec(self.text.ids, &[batch, self.text.len], device)?;
                let clip = Clip::new(self.config, device, dtype, 0)?;
                Box::new(move || vlk::no_grad(|| clip.text_embeds(&ids, None)).map(drop))
            }
            ClipTask::Train => {
                let pixels = Tensor::randn(&mut Rng::new(1), &[batch, 3, size, size], 0.0, 1.0, DType::F32, device)?;
                let train = TrainConfig {
                    steps: u64::MAX,
                    batch,
                    lr: 1e-4,
                    min_lr: 1e-4,
                    warmup_steps: 0,
                    weight_decay: 0.1,
                    max_grad_norm: 1.0,
                    seed: 0,
                    text_freeze_steps: 0,
                    mixed_precision: dtype != DType::F32,
                };
                let mut trainer = ClipTrainer::new(self.config, self.tokenizer, train, device)?;
                let captions = self.text.captions;
                Box::new(move || {
                    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
                    trainer.train_step(&pixels, &refs).map(drop)
                })
            }
        })
    }
}

impl Workload {
    /// A short text of the shape, for the table.
    pub fn shape(&self) -> String {
        match self.op {
            Op::Kernel(k) => k.shape(),
            Op::Clip { model, batch, .. } => format!("{} batch {batch}", model.name()),
        }
    }

    /// Builds the inputs (and model) on `device`: the run to time, its FLOPs (compute-bound
    /// work) or bytes moved (memory-bound work), and the description for scripts/torch_bench.py.
    pub fn prepare(&self, device: Device) -> Result<Prepared> {
        let mut prepared = match self.op {
            Op::Kernel(k) => Prepared {
                work: k.work(self.dtype),
                spec: k.spec(),
                run: k.runner(self.dtype, device)?,
            },
            Op::Clip { task, model, batch } => {
                let inputs = ClipInputs::new(task, model, batch)?;
                Prepared {
                    work: inputs.work(task, batch),
                    spec: inputs.spec(task, batch),
                    run: inputs.runner(task, batch, self.dtype, device)?,
                }
            }
        };
        prepared.spec["dtype"] = json!(self.dtype.to_string());
        Ok(prepared)
    }
}

impl Kernel {
    fn shape(self) -> String {
        match self {
            Kernel::Gemm { m, n, k } => format!("{m}x{n}x{k}"),
            Kernel::Attention { b, h, s, d, causal, .. } => format!("b{b} h{h} s{s} d{d}{}", if causal { " causal" } else { "" }),
            Kernel::LayerNorm { rows, cols, .. } => format!("{rows}x{cols}"),
            Kernel::Xent { rows, classes, .. } => format!("{rows}x{classes}"),
            Kernel::Denoise { n } | Kernel::Copy { n } => format!("{n}"),
        }
    }

    fn work(self, dtype: DType) -> Work {
        let e = dtype.size_in_bytes() as f64;
        match self {
            Kernel::Gemm { m, n, k } => Work::Flops(2.0 * (m * n * k) as f64),
            Kernel::Attention {
                b,
                h,
                s,
                d,
                causal,
                backward,
            } => {
                let fwd = 4.0 * (b * h * s * s * d) as f64 * if causal { 0.5 } else { 1.0 };
                // Backward: dV, dP, dS->dQ, dK (four products) plus recomputing S (one).
                Work::Flops(if backward { 2.5 * fwd } else { fwd })
            }
            // Forward reads x and writes y; backward reads x and dy and writes dx.
            Kernel::LayerNorm { rows, cols, backward } => Work::Bytes((rows * cols) as f64 * e * if backward { 3.0 } else { 2.0 }),
            // Forward only reads the logits; backward reads them and writes the gradient.
            Kernel::Xent {
                rows,
                classes,
                backward: false,
            } => Work::ReadBytes((rows * classes) as f64 * e),
            Kernel::Xent {
                rows,
                classes,
                backward: true,
            } => Work::Bytes(2.0 * (rows * classes) as f64 * e),
            Kernel::Denoise { n } => Work::Bytes(5.0 * n as f64 * e),
            Kernel::Copy { n } => Work::Bytes(2.0 * n as f64 * e),
        }
    }

    fn spec(self) -> Value {
        match self {
            Kernel::Gemm { m, n, k } => json!({"op": "gemm", "m": m, "n": n, "k": k}),
            Kernel::Attention {
                b,
                h,
                s,
                d,
                causal,
                backward,
            } => json!({"op": if backward { "attn_bwd" } else { "attn_fwd" }, "b": b, "h": h, "s": s, "d": d, "causal": causal}),
            Kernel::LayerNorm { rows, cols, backward } => {
                json!({"op": if backward { "layernorm_bwd" } else { "layernorm_fwd" }, "rows": rows, "cols": cols})
            }
            Kernel::Xent { rows, classes, backward } => {
                json!({"op": if backward { "xent_bwd" } else { "xent_fwd" }, "rows": rows, "classes": classes})
            }
            Kernel::Denoise { n } => {
                let p = denoise_params();
                json!({"op": "denoise", "n": n, "params": {"guidance": p.guidance, "sqrt_alpha_bar": p.sqrt_alpha_bar,
                       "sqrt_one_minus_alpha_bar": p.sqrt_one_minus_alpha_bar, "c_x0": p.c_x0, "c_xt": p.c_xt, "c_noise": p.c_noise}})
            }
            Kernel::Copy { n } => json!({"op": "copy", "n": n}),
        }
    }

    /// Random inputs on `device` and the run to time.
    fn runner(self, dtype: DType, device: Device) -> Result<Box<dyn FnMut() -> Result<()>>> {
        let mut rng = Rng::new(0);
        let mut randn = |shape: &[usize]| Tensor::randn(&mut rng, shape, 0.0, 1.0, dtype, device);
        Ok(match self {
            Kernel::Gemm { m, n, k } => {
                let (a, b) = (randn(&[m, k])?, randn(&[k, n])?);
                // Without kept panels: the row times a product of operands new to the GEMM, as
                // PyTorch's does (the ViT rows show what keeping a weight's panels saves).
                Box::new(move || without_kept_panels(|| vlk::no_grad(|| a.matmul(&b))).map(drop))
            }
            Kernel::Attention {
                b,
                h,
                s,
                d,
                causal,
                backward,
            } => {
                let opts = AttentionOptions {
                    causal,
                    ..Default::default()
                };
                let (q, k, v) = (randn(&[b, h, s, d])?, randn(&[b, h, s, d])?, randn(&[b, h, s, d])?);
                if !backward {
                    return Ok(Box::new(move || vlk::no_grad(|| Tensor::attention(&q, &k, &v, opts)).map(drop)));
                }
                let (q, k, v) = (q.to_var()?, k.to_var()?, v.to_var()?);
                let out = vlk::autograd::with_grad(|| Tensor::attention(&q, &k, &v, opts))?;
                let g = randn(out.dims())?;
                Box::new(move || out.backward_with_grad(&g).map(drop))
            }
            Kernel::LayerNorm { rows, cols, backward } => {
                let (x, gamma, beta) = (randn(&[rows, cols])?, randn(&[cols])?, randn(&[cols])?);
                if !backward {
                    return Ok(Box::new(move || vlk::no_grad(|| x.layer_norm(&gamma, &beta, 1e-5)).map(drop)));
                }
                let (x, gamma, beta) = (x.to_var()?, gamma.to_var()?, beta.to_var()?);
                let y = vlk::autograd::with_grad(|| x.layer_norm(&gamma, &beta, 1e-5))?;
                let g = randn(y.dims())?;
                Box::new(move || y.backward_with_grad(&g).map(drop))
            }
            Kernel::Xent { rows, classes, backward } => {
                let logits = randn(&[rows, classes])?;
                let targets: Vec<i64> = (0..rows).map(|i| (i * 7919 % classes) as i64).collect();
                let targets = Tensor::from_vec(targets, &[rows], device)?;
                if !backward {
                    return Ok(Box::new(move || {
                        vlk::no_grad(|| logits.cross_entropy_per_row(&targets, -100)).map(drop)
                    }));
                }
                let logits = logits.to_var()?;
                let loss = vlk::autograd::with_grad(|| logits.cross_entropy_per_row(&targets, -100))?;
                let g = randn(loss.dims())?;
                Box::new(move || loss.backward_with_grad(&g).map(drop))
            }
            Kernel::Denoise { n } => {
                let (x, c, u, z) = (randn(&[n])?, randn(&[n])?, randn(&[n])?, randn(&[n])?);
                let p = denoise_params();
                Box::new(move || Tensor::denoise_step(&x, &c, Some(&u), Some(&z), &p).map(drop))
            }
            Kernel::Copy { n } => {
                let x = randn(&[n])?;
                Box::new(move || x.contiguous_copy().map(drop))
            }
        })
    }
}
