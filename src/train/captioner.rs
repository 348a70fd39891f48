//! Training the captioner by teacher forcing: each example is a prompt (the start token for a
//! caption, the question for VQA) and a target (the caption or the answer, then the end token);
//! the decoder reads prompt and target shifted by one and the fused softmax cross-entropy scores
//! the target positions only (prompt and padding are ignored). AdamW with warm-up and cosine
//! decay, gradient clipping, checkpoints and exact resume as in CLIP training; the vision tower
//! can start from a CLIP checkpoint and be frozen.

use super::checkpoint::{Checkpoint, Checkpointer};
use crate::data::image::ImageProcessor;
use crate::data::tokenizer::ClipTokenizer;
use crate::models::Captioner;
use crate::optim::{clip_factor, global_grad_norm, AdamW, AdamWConfig, CosineSchedule};
use crate::{Device, Error, Result, Rng, Tensor};
use serde_json::{json, Value};
use std::path::Path;

/// Target positions the loss skips.
const IGNORE: i64 = -100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Caption,
    Vqa,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Caption => "caption",
            Task::Vqa => "vqa",
        }
    }

    fn from_name(s: &str) -> Option<Task> {
        match s {
            "caption" => Some(Task::Caption),
            "vqa" => Some(Task::Vqa),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaptionTrainConfig {
    pub task: Task,
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Leave the vision tower as it is (a CLIP's, typically).
    pub freeze_vision: bool,
}

impl CaptionTrainConfig {
    fn to_json(&self) -> Value {
        json!({"task": self.task.name(), "steps": self.steps, "batch": self.batch, "lr": self.lr, "min_lr": self.min_lr,
               "warmup_steps": self.warmup_steps, "weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm,
               "seed": self.seed, "freeze_vision": self.freeze_vision})
    }

    fn from_json(v: &Value, context: &Path) -> Result<Self> {
        let missing = |k: &str| Error::file(context, format!("trainer state: missing '{k}'"));
        let f = |k: &str| v.get(k).and_then(Value::as_f64).ok_or_else(|| missing(k));
        let u = |k: &str| v.get(k).and_then(Value::as_u64).ok_or_else(|| missing(k));
        Ok(CaptionTrainConfig {
            task: v
                .get("task")
                .and_then(Value::as_str)
                .and_then(Task::from_name)
                .ok_or_else(|| missing("task"))?,
            steps: u("steps")?,
            batch: u("batch")? as usize,
            lr: f("lr")?,
            min_lr: f("min_lr")?,
            warmup_steps: u("warmup_steps")?,
            weight_decay: f("weight_decay")?,
            max_grad_norm: f("max_grad_norm")?,
            seed: u("seed")?,
            freeze_vision: v
                .get("freeze_vision")
                .and_then(Value::as_bool)
                .ok_or_else(|| missing("freeze_vision"))?,
        })
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

/// The prompt's token ids: the start token for captions; the question (start token, its words,
/// end token as the separator) for VQA, cut to `room` tokens (its end token kept) when longer.
/// Returns the ids and whether the question was cut.
pub fn prompt_ids(tok: &ClipTokenizer, bos: u32, question: Option<&str>, room: usize) -> Result<(Vec<u32>, bool)> {
    let Some(q) = question else {
        return Ok((vec![bos], false));
    };
    if q.trim().is_empty() {
        return Err(Error::msg("vqa: the question is empty"));
    }
    let mut ids = tok.encode(q)?;
    if ids.len() > room {
        ids.truncate(room.max(2) - 1);
        ids.push(tok.eos_id());
        return Ok((ids, true));
    }
    Ok((ids, false))
}

/// A training example: the question (VQA only) and the caption or answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub question: Option<String>,
    pub target: String,
}

pub struct CaptionerTrainer {
    pub model: Captioner,
    pub tokenizer: ClipTokenizer,
    pub config: CaptionTrainConfig,
    opt: AdamW,
    pub step: u64,
    pub rng: Rng,
    pub losses: Vec<(u64, f64)>,
    pub evals: Vec<(u64, Value)>,
}

fn optimizer(model: &Captioner, config: &CaptionTrainConfig) -> Result<AdamW> {
    let params = model
        .store
        .named()
        .into_iter()
        .filter(|(n, _)| !(config.freeze_vision && n.starts_with("vision_model.")))
        .collect();
    AdamW::with_decay_rule(
        params,
        AdamWConfig {
            lr: config.lr,
            weight_decay: config.weight_decay,
            ..Default::default()
        },
        |name, t| t.rank() >= 2 && !name.contains("embed"),
    )
}

impl CaptionerTrainer {
    pub fn new(model: Captioner, tokenizer: ClipTokenizer, config: CaptionTrainConfig) -> Result<Self> {
        if tokenizer.vocab_size() > model.config.decoder.vocab_size {
            return Err(Error::msg(format!(
                "caption train: the tokenizer has {} tokens, the decoder only {}",
                tokenizer.vocab_size(),
                model.config.decoder.vocab_size
            )));
        }
        if config.batch == 0 || config.steps == 0 {
            return Err(Error::msg("caption train: --steps and --batch must be at least 1"));
        }
        let opt = optimizer(&model, &config)?;
        Ok(CaptionerTrainer {
            rng: Rng::new(config.seed ^ 0xCA97),
            model,
            tokenizer,
            config,
            opt,
            step: 0,
            losses: Vec::new(),
            evals: Vec::new(),
        })
    }

    /// Decoder inputs [B, L] and targets [B, L] (IGNORE outside the target tokens).
    pub fn sequences(&self, examples: &[Example], device: Device) -> Result<(Tensor, Tensor)> {
        let d = &self.model.config.decoder;
        let max = d.max_length;
        let rows = examples
            .iter()
            .map(|e| {
                let mut target = self.tokenizer.encode(&e.target)?;
                target.remove(0);
                target.truncate(max - 2);
                let (prompt, _) = prompt_ids(&self.tokenizer, d.bos_token_id, e.question.as_deref(), max + 1 - target.len())?;
                let seq: Vec<u32> = prompt.iter().chain(&target).copied().collect();
                let inputs = seq[..seq.len() - 1].to_vec();
                let targets: Vec<i64> = (1..seq.len())
                    .map(|j| if j < prompt.len() { IGNORE } else { seq[j] as i64 })
                    .collect();
                Ok((inputs, targets))
            })
            .collect::<Result<Vec<_>>>()?;
        let l = rows.iter().map(|(i, _)| i.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(rows.len() * l);
        let mut targets = Vec::with_capacity(rows.len() * l);
        for (i, t) in &rows {
            ids.extend(i.iter().copied().chain(std::iter::repeat(d.eos_token_id)).take(l));
            targets.extend(t.iter().copied().chain(std::iter::repeat(IGNORE)).take(l));
        }
        let b = rows.len();
        Ok((Tensor::from_vec(ids, &[b, l], device)?, Tensor::from_vec(targets, &[b, l], device)?))
    }

    /// The mean cross-entropy of the target tokens (no update).
    pub fn loss(&self, pixels: &Tensor, examples: &[Example]) -> Result<Tensor> {
        let (ids, targets) = self.sequences(examples, pixels.device())?;
        let logits = self.model.forward(pixels, &ids)?;
        let v = self.model.config.decoder.vocab_size;
        let (b, l) = (ids.dims()[0], ids.dims()[1]);
        logits.reshape(&[b * l, v])?.cross_entropy(&targets.reshape(&[b * l])?, IGNORE)
    }

    /// One optimisation step on pixel values [B, 3, S, S] and B examples; returns the loss.
    pub fn train_step(&mut self, pixels: &Tensor, examples: &[Example]) -> Result<f64> {
        let _profile = crate::profile::scope("caption.train_step");
        if examples.len() != pixels.dims()[0] {
            return Err(Error::msg(format!(
                "caption train: {} examples for {} images",
                examples.len(),
                pixels.dims()[0]
            )));
        }
        let loss = self.loss(pixels, examples)?;
        let grads = loss.backward()?;
        let params = self.model.store.named();
        let norm = global_grad_norm(&params, &grads)?;
        let lr = self.config.schedule().lr(self.step);
        self.opt.step(&grads, lr, clip_factor(norm, self.config.max_grad_norm))?;
        self.step += 1;
        let loss = loss.to_f64()?;
        self.losses.push((self.step, loss));
        Ok(loss)
    }

    pub fn save_checkpoint(&self, checkpoints: &Checkpointer, extra: Value) -> Result<Checkpoint> {
        let state = json!({"train": self.config.to_json(), "losses": self.losses, "evals": self.evals, "extra": extra});
        checkpoints.save(self.step, |dir| self.save_model(dir), &self.opt, &self.rng, state)
    }

    /// The model with its tokenizer and image preprocessing: what `vlk caption` / `vlk vqa` load.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        self.model.save(dir)?;
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        ImageProcessor::clip(self.model.config.vision.image_size).save(dir)
    }

    pub fn resume(checkpoint: &Checkpoint, device: Device) -> Result<Self> {
        let (state, rng) = checkpoint.state()?;
        let context = checkpoint.dir.join("trainer_state.json");
        let config = CaptionTrainConfig::from_json(&state["train"], &context)?;
        let tokenizer = ClipTokenizer::from_file(&checkpoint.dir.join("tokenizer.json"))?;
        let model = Captioner::load(&checkpoint.dir, device)?;
        let mut opt = optimizer(&model, &config)?;
        checkpoint.restore_optimizer(&mut opt)?;
        let (losses, evals) = checkpoint.history(&state)?;
        Ok(CaptionerTrainer {
            model,
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
