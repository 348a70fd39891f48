//! Training a text-conditioned DiT with the DDPM objective: for a batch of images x0 in
//! [-1, 1] and their captions, a uniform timestep and Gaussian noise per image, the model sees
//! x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise and learns the scheduler's target (noise or
//! v) under mean squared error. Captions go through the frozen CLIP text encoder; a share of
//! them (`cond_dropout`) is replaced by the learned null condition, which classifier-free
//! guidance needs at sampling time.
//!
//! AdamW with warm-up and cosine decay and global gradient clipping, as CLIP training; an
//! exponential moving average of the weights (decay min(ema_decay, (1 + n) / (10 + n)) after n
//! updates) is what gets saved as the model and sampled from. Checkpoints hold the online
//! weights, the average, the optimizer, the RNG and the history, so a resumed run continues
//! exactly.

use super::checkpoint::{Checkpoint, Checkpointer};
use crate::diffusion::{PromptEncoder, SchedulerConfig, TextToImage};
use crate::io::safetensors::{self, LoadOptions};
use crate::models::{Dit, DitCondition, DitConfig};
use crate::optim::{clip_factor, global_grad_norm, AdamW, AdamWConfig, CosineSchedule};
use crate::{DType, Device, Error, Result, Rng, Tensor};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionTrainConfig {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Probability that a caption is replaced by the null condition.
    pub cond_dropout: f64,
    pub ema_decay: f64,
    /// Min-SNR loss weighting (Hang et al. 2023): each image's loss is scaled by
    /// min(SNR_t, gamma) / SNR_t (epsilon) or / (SNR_t + 1) (v), so the nearly clean timesteps
    /// do not dominate training; 0 weighs every timestep alike.
    pub snr_gamma: f64,
    /// bf16 compute over f32 master weights.
    pub mixed_precision: bool,
}

impl DiffusionTrainConfig {
    fn to_json(&self) -> Value {
        json!({"steps": self.steps, "batch": self.batch, "lr": self.lr, "min_lr": self.min_lr, "warmup_steps": self.warmup_steps,
               "weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm, "seed": self.seed,
               "cond_dropout": self.cond_dropout, "ema_decay": self.ema_decay, "snr_gamma": self.snr_gamma,
               "mixed_precision": self.mixed_precision})
    }

    fn from_json(v: &Value, context: &Path) -> Result<Self> {
        let missing = |k: &str| Error::file(context, format!("trainer state: missing '{k}'"));
        let f = |k: &str| v.get(k).and_then(Value::as_f64).ok_or_else(|| missing(k));
        let u = |k: &str| v.get(k).and_then(Value::as_u64).ok_or_else(|| missing(k));
        Ok(DiffusionTrainConfig {
            steps: u("steps")?,
            batch: u("batch")? as usize,
            lr: f("lr")?,
            min_lr: f("min_lr")?,
            warmup_steps: u("warmup_steps")?,
            weight_decay: f("weight_decay")?,
            max_grad_norm: f("max_grad_norm")?,
            seed: u("seed")?,
            cond_dropout: f("cond_dropout")?,
            ema_decay: f("ema_decay")?,
            snr_gamma: f("snr_gamma")?,
            mixed_precision: v
                .get("mixed_precision")
                .and_then(Value::as_bool)
                .ok_or_else(|| missing("mixed_precision"))?,
        })
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.steps == 0 {
            return Err(Error::msg("diffusion train: --steps and --batch must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.cond_dropout) {
            return Err(Error::msg(format!(
                "diffusion train: condition dropout {} outside [0, 1)",
                self.cond_dropout
            )));
        }
        if !(self.snr_gamma >= 0.0 && self.snr_gamma.is_finite()) {
            return Err(Error::msg(format!(
                "diffusion train: SNR gamma {} must be a finite number >= 0",
                self.snr_gamma
            )));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(Error::msg(format!("diffusion train: EMA decay {} outside [0, 1)", self.ema_decay)));
        }
        Ok(())
    }

    fn schedule(&self) -> CosineSchedule {
        CosineSchedule {
            peak_lr: self.lr,
            min_lr: self.min_lr,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiffusionStepReport {
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

pub struct DiffusionTrainer {
    /// The weight average, with the encoder and scheduler: what sampling uses.
    pub model: TextToImage,
    /// The weights the optimizer updates.
    pub online: Dit,
    pub config: DiffusionTrainConfig,
    /// Where the text encoder came from (recorded in checkpoints).
    pub clip_dir: PathBuf,
    opt: AdamW,
    pub step: u64,
    pub rng: Rng,
    pub losses: Vec<(u64, f64)>,
    pub evals: Vec<(u64, Value)>,
}

fn optimizer(dit: &Dit, config: &DiffusionTrainConfig) -> Result<AdamW> {
    // Decay on weight matrices only: not on biases, nor on the null condition and the class
    // table, which are matrices of embeddings rather than maps.
    AdamW::with_decay_rule(
        dit.store.named(),
        AdamWConfig {
            lr: config.lr,
            weight_decay: config.weight_decay,
            ..Default::default()
        },
        |name, t| t.rank() >= 2 && !name.contains("null_") && !name.contains("embedding_table"),
    )
}

impl DiffusionTrainer {
    pub fn new(
        dit_config: DitConfig,
        encoder: PromptEncoder,
        clip_dir: &Path,
        scheduler: SchedulerConfig,
        config: DiffusionTrainConfig,
        device: Device,
    ) -> Result<Self> {
        config.validate()?;
        let mut online = Dit::new(dit_config.clone(), device, DType::F32, config.seed)?;
        let ema = Dit::new(dit_config, device, DType::F32, config.seed)?;
        if config.mixed_precision {
            online.set_compute_dtype(DType::BF16);
        }
        let opt = optimizer(&online, &config)?;
        Ok(DiffusionTrainer {
            model: TextToImage::new(ema, encoder, scheduler)?,
            online,
            rng: Rng::new(config.seed ^ 0xD1FF),
            config,
            clip_dir: clip_dir.to_path_buf(),
            opt,
            step: 0,
            losses: Vec::new(),
            evals: Vec::new(),
        })
    }

    /// One optimisation step on images [B, C, S, S] in [-1, 1] and their B captions.
    pub fn train_step(&mut self, images: &Tensor, captions: &[&str]) -> Result<DiffusionStepReport> {
        let _profile = crate::profile::scope("diffusion.train_step");
        let b = images.dims()[0];
        if captions.len() != b {
            return Err(Error::msg(format!("diffusion train: {} captions for {b} images", captions.len())));
        }
        let device = images.device();
        let cond = self.model.encoder.encode(captions, device)?;
        let keep: Vec<bool> = (0..b).map(|_| self.rng.uniform() >= self.config.cond_dropout).collect();
        let cond = self.online.drop_text(&cond, &keep)?;
        let n = self.model.scheduler.schedule.num_train_timesteps() as u64;
        let timesteps: Vec<usize> = (0..b).map(|_| self.rng.below(n) as usize).collect();
        let noise = Tensor::randn(&mut self.rng, images.dims(), 0.0, 1.0, images.dtype(), device)?;
        let scheduler = &self.model.scheduler;
        let noisy = scheduler.add_noise(images, &noise, &timesteps)?;
        let target = scheduler.target(images, &noise, &timesteps)?;
        let t: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
        let pred = self.online.forward(&noisy, &t, &DitCondition::Text(&cond))?;
        let per_image = pred.sub(&target)?.sqr()?.reshape(&[b, pred.elem_count() / b])?.mean(1, false)?;
        let loss = match self.loss_weights(&timesteps) {
            Some(w) => {
                let w = Tensor::from_vec(w, &[b], Device::Cpu)?
                    .to_dtype(per_image.dtype())?
                    .to_device(device)?;
                per_image.mul(&w)?.mean_all()?
            }
            None => per_image.mean_all()?,
        };
        let grads = loss.backward()?;
        let params = self.online.store.named();
        let grad_norm = global_grad_norm(&params, &grads)?;
        let lr = self.config.schedule().lr(self.step);
        self.opt.step(&grads, lr, clip_factor(grad_norm, self.config.max_grad_norm))?;
        self.step += 1;
        self.update_ema()?;
        let loss = loss.to_f64()?;
        self.losses.push((self.step, loss));
        Ok(DiffusionStepReport { loss, lr, grad_norm })
    }

    /// The min-SNR weight of each timestep, or None without weighting.
    fn loss_weights(&self, timesteps: &[usize]) -> Option<Vec<f64>> {
        let gamma = self.config.snr_gamma;
        if gamma == 0.0 {
            return None;
        }
        let abar = &self.model.scheduler.schedule.alphas_cumprod;
        Some(
            timesteps
                .iter()
                .map(|&t| {
                    let snr = abar[t] / (1.0 - abar[t]).max(1e-12);
                    match self.model.scheduler.prediction {
                        crate::Prediction::Epsilon => snr.min(gamma) / snr,
                        crate::Prediction::V => snr.min(gamma) / (snr + 1.0),
                    }
                })
                .collect(),
        )
    }

    fn update_ema(&self) -> Result<()> {
        let n = self.step as f64;
        let decay = self.config.ema_decay.min((1.0 + n) / (10.0 + n));
        crate::no_grad(|| {
            for (name, p) in self.online.store.named() {
                let e = self
                    .model
                    .dit
                    .store
                    .get(&name)
                    .ok_or_else(|| Error::msg(format!("ema: no parameter {name}")))?;
                e.assign(&e.mul_scalar(decay)?.add(&p.detach().mul_scalar(1.0 - decay)?)?)?;
            }
            Ok(())
        })
    }

    /// Writes a checkpoint: the online model (config.json, model.safetensors), the average
    /// (ema.safetensors), the scheduler, the optimizer, the RNG and the run's history.
    pub fn save_checkpoint(&self, checkpoints: &Checkpointer, extra: Value) -> Result<Checkpoint> {
        let state = json!({"train": self.config.to_json(), "losses": self.losses, "evals": self.evals,
                           "clip": self.clip_dir, "scheduler": self.model.scheduler.to_json(), "extra": extra});
        let write = |dir: &Path| -> Result<()> {
            self.online.save(dir)?;
            safetensors::save(dir.join("ema.safetensors"), &self.model.dit.store.named())
        };
        checkpoints.save(self.step, write, &self.opt, &self.rng, state)
    }

    /// The averaged model with its encoder and scheduler, loadable by `vlk diffusion sample`.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        self.model.save(dir)
    }

    /// Continues a run from its checkpoint.
    pub fn resume(checkpoint: &Checkpoint, device: Device) -> Result<Self> {
        let (state, rng) = checkpoint.state()?;
        let context = checkpoint.dir.join("trainer_state.json");
        let config = DiffusionTrainConfig::from_json(&state["train"], &context)?;
        let clip_dir = PathBuf::from(
            state["clip"]
                .as_str()
                .ok_or_else(|| Error::file(&context, "trainer state: missing 'clip'"))?,
        );
        let scheduler = SchedulerConfig::from_json(&state["scheduler"]).map_err(|e| Error::file(&context, e))?;
        let encoder = PromptEncoder::load(&clip_dir, device)?;
        let mut online = Dit::load(&checkpoint.dir, device, DType::F32)?;
        if config.mixed_precision {
            online.set_compute_dtype(DType::BF16);
        }
        let ema = Dit::new(online.config.clone(), device, DType::F32, 0)?;
        safetensors::load_into(&ema.store, checkpoint.dir.join("ema.safetensors"), LoadOptions::default())?;
        let mut opt = optimizer(&online, &config)?;
        checkpoint.restore_optimizer(&mut opt)?;
        let (losses, evals) = checkpoint.history(&state)?;
        Ok(DiffusionTrainer {
            model: TextToImage::new(ema, encoder, scheduler)?,
            online,
            losses,
            evals,
            config,
            clip_dir,
            opt,
            step: checkpoint.step,
            rng,
        })
    }
}
