//! Contrastive CLIP training: batches of (image, caption) pairs, the symmetric loss, AdamW with
//! warm-up and cosine decay (no weight decay on norms, biases and the temperature), global
//! gradient clipping, and the learnable temperature clamped as in CLIP (logit scale at most
//! 100). Checkpoints carry everything needed to continue the same run exactly.
//!
//! With `mixed_precision` both towers compute in bf16 over f32 master weights: every layer
//! casts its parameters to the activations' dtype, and the casts' backward carries gradients
//! to the f32 parameters that AdamW updates.
//!
//! The text tower can be held fixed for the first steps (`text_freeze_steps`). Trained jointly
//! from the start, both towers settle on the easiest attribute that tells captions apart (colour
//! on `shapes`): once every "red ..." caption embeds alike, no gradient asks the image tower for
//! shape, and none asks the text tower either. Against the fixed random text tower's
//! embeddings, which differ for every caption, the image tower must learn all the attributes the
//! captions name, as with supervised labels; the towers are then trained together, the text
//! tower's learning rate ramping up over the warm-up length.

use super::checkpoint::{Checkpoint, Checkpointer};
use crate::data::image::ImageProcessor;
use crate::data::tokenizer::ClipTokenizer;
use crate::models::{Clip, ClipConfig};
use crate::optim::{clip_factor, global_grad_norm, AdamW, AdamWConfig, CosineSchedule};
use crate::{DType, Device, Error, Result, Rng, Tensor};
use serde_json::{json, Value};
use std::path::Path;

/// The hyper-parameters of a run (saved in every checkpoint so a resume uses the same ones).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Steps during which the text tower and its projection are not trained.
    pub text_freeze_steps: u64,
    /// Compute in bf16 over f32 master weights (the optimizer, embeddings and loss stay f32).
    pub mixed_precision: bool,
}

impl TrainConfig {
    fn to_json(&self) -> Value {
        json!({"steps": self.steps, "batch": self.batch, "lr": self.lr, "min_lr": self.min_lr, "warmup_steps": self.warmup_steps,
               "weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm, "seed": self.seed,
               "text_freeze_steps": self.text_freeze_steps, "mixed_precision": self.mixed_precision})
    }

    fn from_json(v: &Value, context: &Path) -> Result<Self> {
        let f = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| Error::file(context, format!("trainer state: missing '{k}'")))
        };
        let u = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| Error::file(context, format!("trainer state: missing '{k}'")))
        };
        Ok(TrainConfig {
            steps: u("steps")?,
            batch: u("batch")? as usize,
            lr: f("lr")?,
            min_lr: f("min_lr")?,
            warmup_steps: u("warmup_steps")?,
            weight_decay: f("weight_decay")?,
            max_grad_norm: f("max_grad_norm")?,
            seed: u("seed")?,
            text_freeze_steps: u("text_freeze_steps")?,
            mixed_precision: v
                .get("mixed_precision")
                .and_then(Value::as_bool)
                .ok_or_else(|| Error::file(context, "trainer state: missing 'mixed_precision'"))?,
        })
    }

    /// AdamW over every parameter of `clip` (decay on matrices only: see `AdamW::new`).
    fn optimizer(&self, clip: &Clip) -> Result<AdamW> {
        AdamW::new(
            clip.store.named(),
            AdamWConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                ..Default::default()
            },
        )
    }

    fn set_precision(&self, clip: &mut Clip) {
        if self.mixed_precision {
            clip.set_compute_dtype(DType::BF16);
        }
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

/// What one step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub logit_scale: f64,
}

pub struct ClipTrainer {
    pub clip: Clip,
    pub tokenizer: ClipTokenizer,
    pub config: TrainConfig,
    opt: AdamW,
    /// Steps done so far.
    pub step: u64,
    /// Randomness of the run beyond the data order (kept in checkpoints).
    pub rng: Rng,
    /// (step, loss) of every step, for reports.
    pub losses: Vec<(u64, f64)>,
    /// (step, metrics) of every evaluation during the run, for reports.
    pub evals: Vec<(u64, Value)>,
}

/// ln(100): CLIP clamps the temperature so logits never exceed 100 times the cosine.
const MAX_LOGIT_SCALE: f64 = 4.605_170_185_988_092;

impl ClipTrainer {
    pub fn new(model: ClipConfig, tokenizer: ClipTokenizer, config: TrainConfig, device: Device) -> Result<Self> {
        if tokenizer.vocab_size() > model.text.vocab_size {
            return Err(Error::msg(format!(
                "clip train: the tokenizer has {} tokens, the text model only {}",
                tokenizer.vocab_size(),
                model.text.vocab_size
            )));
        }
        if config.batch < 2 {
            return Err(Error::msg("clip train: a contrastive batch needs at least 2 pairs"));
        }
        let mut clip = Clip::new(model, device, DType::F32, config.seed)?;
        config.set_precision(&mut clip);
        let opt = config.optimizer(&clip)?;
        let rng = Rng::new(config.seed ^ 0x5EED);
        Ok(ClipTrainer {
            clip,
            tokenizer,
            config,
            opt,
            step: 0,
            rng,
            losses: Vec::new(),
            evals: Vec::new(),
        })
    }

    /// One optimisation step on a batch: pixel values [B, 3, S, S] and B captions.
    pub fn train_step(&mut self, pixels: &Tensor, captions: &[&str]) -> Result<StepReport> {
        let _profile = crate::profile::scope("clip.train_step");
        let device = pixels.device();
        let tokens = self
            .tokenizer
            .encode_batch(captions, self.clip.config.text.max_position_embeddings, device)?;
        let image_embeds = self.clip.image_embeds(pixels)?;
        let embed_texts = || self.clip.text_embeds(&tokens.ids, Some(&tokens.mask));
        // A frozen text tower is a constant of the step: no graph, no gradients, no update.
        let text_embeds = if self.step < self.config.text_freeze_steps {
            crate::no_grad(embed_texts)?
        } else {
            embed_texts()?
        };
        let loss = self
            .clip
            .contrastive_loss(&self.clip.logits_per_image(&image_embeds, &text_embeds)?)?;
        let grads = loss.backward()?;
        let params = self.clip.store.named();
        let grad_norm = global_grad_norm(&params, &grads)?;
        let lr = self.config.schedule().lr(self.step);
        let text_scale = self.text_lr_scale();
        let is_text = |name: &str| name.starts_with("text_model.") || name.starts_with("text_projection.");
        self.opt
            .step_scaled(&grads, lr, clip_factor(grad_norm, self.config.max_grad_norm), |name| {
                if is_text(name) {
                    text_scale
                } else {
                    1.0
                }
            })?;
        let scale = &self.clip.logit_scale;
        let clamped = scale.to_f64()?.min(MAX_LOGIT_SCALE);
        scale.assign(&Tensor::full(clamped, &[], scale.dtype(), scale.device())?)?;
        self.step += 1;
        let loss = loss.to_f64()?;
        self.losses.push((self.step, loss));
        Ok(StepReport {
            loss,
            lr,
            grad_norm,
            logit_scale: clamped,
        })
    }

    /// The text tower's learning-rate multiplier at this step: 0 while frozen, then a linear
    /// ramp to 1 over `warmup_steps`, so its first updates (which AdamW makes about lr in size
    /// for every weight at once) do not wreck what the image tower learned against it.
    fn text_lr_scale(&self) -> f64 {
        let since = self.step.saturating_sub(self.config.text_freeze_steps) + 1;
        if self.config.text_freeze_steps == 0 {
            1.0
        } else {
            (since as f64 / self.config.warmup_steps.max(1) as f64).min(1.0)
        }
    }

    /// Writes a checkpoint: the model as a Hugging Face directory with its tokenizer, the
    /// optimizer, the RNG, the run's configuration and loss history, and `extra`.
    pub fn save_checkpoint(&self, checkpoints: &Checkpointer, extra: Value) -> Result<Checkpoint> {
        let state = json!({"train": self.config.to_json(), "losses": self.losses, "evals": self.evals, "extra": extra});
        checkpoints.save(self.step, |dir| self.save_model(dir), &self.opt, &self.rng, state)
    }

    /// The model alone, loadable by `vlk clip embed` and transformers: weights, config,
    /// tokenizer and the image preprocessing it was trained with (CLIP's mean and std).
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        self.clip.save(dir)?;
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        ImageProcessor::clip(self.clip.config.vision.image_size).save(dir)
    }

    /// Continues a run from its checkpoint: model, tokenizer, optimizer, step, RNG and history.
    pub fn resume(checkpoint: &Checkpoint, device: Device) -> Result<Self> {
        let (state, rng) = checkpoint.state()?;
        let context = checkpoint.dir.join("trainer_state.json");
        let config = TrainConfig::from_json(&state["train"], &context)?;
        let tokenizer = ClipTokenizer::from_file(&checkpoint.dir.join("tokenizer.json"))?;
        let mut clip = Clip::load(&checkpoint.dir, device, DType::F32)?;
        config.set_precision(&mut clip);
        let mut opt = config.optimizer(&clip)?;
        checkpoint.restore_optimizer(&mut opt)?;
        let (losses, evals) = checkpoint.history(&state)?;
        Ok(ClipTrainer {
            clip,
            tokenizer,
            config,
            opt,
            step: checkpoint.step,
            rng,
            losses,
            evals,
        })
    }
}
