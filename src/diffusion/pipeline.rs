//! Text to image: a text-conditioned DiT, its frozen prompt encoder and its scheduler, saved
//! together as one directory (`config.json` + `model.safetensors` for the denoiser,
//! `scheduler_config.json`, and `text_encoder/`, a CLIP directory), and the sampling loop with
//! classifier-free guidance: the conditional and unconditional passes run as one batch, and
//! the guidance, the sampler's update and the noise meet in one `denoise_step`.
//! Images live in [-1, 1] inside the model and come out in [0, 1].

use super::prompts::PromptEncoder;
use super::scheduler::{Sampler, SamplerKind, SchedulerConfig};
use crate::models::{Dit, DitCondition, DitConditioning, TextCondition};
use crate::{DType, Device, Error, Result, Rng, Tensor};
use std::path::Path;

/// Images per denoiser batch while sampling (twice that with guidance).
const SAMPLE_BATCH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    pub steps: usize,
    pub sampler: SamplerKind,
    /// 1: the conditional prediction alone; 0: unconditional; above 1: pushed away from the
    /// unconditional prediction.
    pub guidance: f64,
    pub seed: u64,
    /// Images per prompt.
    pub per_prompt: usize,
}

pub struct TextToImage {
    pub dit: Dit,
    pub encoder: PromptEncoder,
    pub scheduler: SchedulerConfig,
}

impl TextToImage {
    /// Checks that the denoiser reads this encoder's states.
    pub fn new(dit: Dit, encoder: PromptEncoder, scheduler: SchedulerConfig) -> Result<Self> {
        match dit.config.conditioning {
            DitConditioning::Text { text_width, text_len } if text_width == encoder.width() && text_len == encoder.context() => {
                Ok(TextToImage { dit, encoder, scheduler })
            }
            DitConditioning::Text { text_width, text_len } => Err(Error::msg(format!(
                "the text encoder gives {} x {} token states but the denoiser expects {text_len} x {text_width} (cross_attention_dim, text_max_length): it was trained with another CLIP",
                encoder.context(),
                encoder.width()
            ))),
            DitConditioning::Class { .. } => Err(Error::msg("text to image needs a text-conditioned denoiser; this one takes class labels")),
        }
    }

    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let dit = Dit::load(dir, device, DType::F32)?;
        let encoder = PromptEncoder::load(&dir.join("text_encoder"), device)?;
        let path = dir.join("scheduler_config.json");
        let v = crate::io::read_json(&path, "the scheduler config")?;
        let scheduler = SchedulerConfig::from_json(&v).map_err(|e| Error::file(&path, e))?;
        Self::new(dit, encoder, scheduler)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        self.dit.save(dir)?;
        self.encoder.save(&dir.join("text_encoder"))?;
        crate::io::write_json(&dir.join("scheduler_config.json"), &self.scheduler.to_json())
    }

    pub fn image_size(&self) -> usize {
        self.dit.config.sample_size
    }

    /// `per_prompt` images of each prompt, prompt-major: [P * n, C, S, S] in [0, 1], on the CPU.
    /// `on_step` is called after every denoising step of every batch.
    pub fn generate(&self, prompts: &[&str], opts: &SampleOptions, mut on_step: impl FnMut()) -> Result<Tensor> {
        if prompts.is_empty() {
            return Err(Error::msg("sample: no prompts given"));
        }
        if opts.per_prompt == 0 {
            return Err(Error::msg("sample: the number of images per prompt must be at least 1"));
        }
        if !(opts.guidance >= 0.0 && opts.guidance.is_finite()) {
            return Err(Error::msg(format!(
                "sample: guidance must be a finite number >= 0, got {}",
                opts.guidance
            )));
        }
        let sampler = Sampler::new(self.scheduler.clone(), opts.sampler, opts.steps)?;
        let device = self.dit.store.device();
        let all: Vec<&str> = prompts.iter().flat_map(|p| std::iter::repeat_n(*p, opts.per_prompt)).collect();
        let mut rng = Rng::new(opts.seed);
        let mut images = Vec::new();
        for chunk in all.chunks(SAMPLE_BATCH) {
            let cond = self.encoder.encode(chunk, device)?;
            images.push(self.denoise(&sampler, &cond, opts.guidance, &mut rng, &mut on_step)?);
        }
        let x = Tensor::concat(&images.iter().collect::<Vec<_>>(), 0)?;
        let pixels: Vec<f32> = x.to_vec::<f32>()?.into_iter().map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0)).collect();
        Tensor::from_vec(pixels, x.dims(), Device::Cpu)
    }

    /// The sampling loop for one batch of conditions, from pure noise.
    fn denoise(&self, sampler: &Sampler, cond: &TextCondition, guidance: f64, rng: &mut Rng, on_step: &mut impl FnMut()) -> Result<Tensor> {
        let c = &self.dit.config;
        let b = cond.pooled.dims()[0];
        let device = self.dit.store.device();
        let mut x = Tensor::randn(rng, &[b, c.in_channels, c.sample_size, c.sample_size], 0.0, 1.0, DType::F32, device)?;
        let guided = guidance != 1.0;
        let joint = if guided {
            let null = self.dit.null_text(b)?;
            let cat = |a: &Tensor, n: &Tensor| Tensor::concat(&[a, &n.to_dtype(a.dtype())?], 0);
            TextCondition {
                states: cat(&cond.states, &null.states)?,
                mask: cat(&cond.mask, &null.mask)?,
                pooled: cat(&cond.pooled, &null.pooled)?,
            }
        } else {
            cond.clone()
        };
        crate::no_grad(|| {
            for (i, &t) in sampler.timesteps().iter().enumerate() {
                let input = if guided { Tensor::concat(&[&x, &x], 0)? } else { x.clone() };
                let out = self
                    .dit
                    .forward(&input, &vec![t as f64; input.dims()[0]], &DitCondition::Text(&joint))?;
                x = if guided {
                    let (cond_out, uncond_out) = (out.narrow(0, 0, b)?, out.narrow(0, b, b)?);
                    sampler.step(i, &x, &cond_out.contiguous()?, Some(&uncond_out.contiguous()?), guidance, rng)?
                } else {
                    sampler.step(i, &x, &out, None, 1.0, rng)?
                };
                on_step();
            }
            Ok(x)
        })
    }
}
