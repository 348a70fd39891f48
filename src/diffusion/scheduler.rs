//! The diffusion process a denoiser is trained for and sampled with: forward noising and the
//! training target, and the DDPM (ancestral) and DDIM updates, each turned into the coefficients
//! of the fused `denoise_step` op, which folds classifier-free guidance into the same pass.
//!
//! Conventions are diffusers' `DDPMScheduler` (variance "fixed_small") and `DDIMScheduler`
//! (`use_clipped_model_output` false), so a model trained with either samples the same here:
//! - DDPM moves from timestep t to the next one in the list (t - 1 when every step is run):
//!   x_prev = c_x0 x0 + c_xt x_t + sigma z with the posterior's coefficients; no noise at t = 0.
//! - DDIM moves from t to t - N/n (integer division), and past the start to abar = 1
//!   (`set_alpha_to_one`) or abar_0:  x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps
//!   + s z, s = eta sqrt((1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev)).
//! - `clip_sample` clamps the predicted x0 (not eps) to [-r, r].

use super::schedule::{BetaSchedule, NoiseSchedule, TimestepSpacing};
use crate::{DenoiseParams, Error, Prediction, Result, Rng, Tensor};
use serde_json::{json, Value};

/// Everything that fixes the noise process and how its steps are taken.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub schedule: NoiseSchedule,
    pub prediction: Prediction,
    pub spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// Clamp range of the predicted x0; None: no clamping.
    pub clip_sample: Option<f64>,
    /// DDIM's final step goes to abar = 1 (true) or to abar_0.
    pub set_alpha_to_one: bool,
}

impl SchedulerConfig {
    /// The scheduler of a pixel-space model: cosine betas over 1000 steps, epsilon prediction,
    /// trailing spacing (so few-step sampling starts from pure noise), x0 clamped to [-1, 1].
    pub fn pixel_default() -> Result<Self> {
        Ok(SchedulerConfig {
            schedule: NoiseSchedule::new(BetaSchedule::SquaredCosCapV2, 1000, 1e-4, 0.02)?,
            prediction: Prediction::Epsilon,
            spacing: TimestepSpacing::Trailing,
            steps_offset: 0,
            clip_sample: Some(1.0),
            set_alpha_to_one: true,
        })
    }

    /// diffusers' scheduler_config.json keys.
    pub fn to_json(&self) -> Value {
        let mut v = self.schedule.to_json();
        v["prediction_type"] = json!(match self.prediction {
            Prediction::Epsilon => "epsilon",
            Prediction::V => "v_prediction",
        });
        v["timestep_spacing"] = json!(self.spacing.name());
        v["steps_offset"] = json!(self.steps_offset);
        v["clip_sample"] = json!(self.clip_sample.is_some());
        v["clip_sample_range"] = json!(self.clip_sample.unwrap_or(1.0));
        v["set_alpha_to_one"] = json!(self.set_alpha_to_one);
        v
    }

    /// Reads diffusers' keys; absent ones take diffusers' defaults.
    pub fn from_json(v: &Value) -> Result<Self> {
        let f = |k: &str, d: f64| v.get(k).and_then(Value::as_f64).unwrap_or(d);
        let s = |k: &str, d: &'static str| v.get(k).and_then(Value::as_str).map(str::to_string).unwrap_or(d.to_string());
        let b = |k: &str, d: bool| v.get(k).and_then(Value::as_bool).unwrap_or(d);
        let prediction = match s("prediction_type", "epsilon").as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            other => {
                return Err(Error::msg(format!(
                    "scheduler: prediction_type '{other}' is not supported (expected epsilon or v_prediction)"
                )))
            }
        };
        let steps = v.get("num_train_timesteps").and_then(Value::as_u64).unwrap_or(1000) as usize;
        Ok(SchedulerConfig {
            schedule: NoiseSchedule::new(
                BetaSchedule::from_name(&s("beta_schedule", "linear"))?,
                steps,
                f("beta_start", 1e-4),
                f("beta_end", 0.02),
            )?,
            prediction,
            spacing: TimestepSpacing::from_name(&s("timestep_spacing", "leading"))?,
            steps_offset: v.get("steps_offset").and_then(Value::as_u64).unwrap_or(0) as usize,
            clip_sample: b("clip_sample", true).then(|| f("clip_sample_range", 1.0)),
            set_alpha_to_one: b("set_alpha_to_one", true),
        })
    }

    /// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, one timestep per batch row.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let (a, b) = self.row_coefficients(x0, timesteps, |abar| (abar.sqrt(), (1.0 - abar).sqrt()))?;
        x0.mul(&a)?.add(&noise.mul(&b)?)
    }

    /// What the denoiser learns to output: the noise (epsilon) or
    /// v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0.
    pub fn target(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        match self.prediction {
            Prediction::Epsilon => Ok(noise.clone()),
            Prediction::V => {
                let (a, b) = self.row_coefficients(x0, timesteps, |abar| (abar.sqrt(), (1.0 - abar).sqrt()))?;
                noise.mul(&a)?.sub(&x0.mul(&b)?)
            }
        }
    }

    /// Two [B, 1, ..., 1] tensors of per-row coefficients f(abar_t) for a batch shaped like x.
    fn row_coefficients(&self, x: &Tensor, timesteps: &[usize], f: impl Fn(f64) -> (f64, f64)) -> Result<(Tensor, Tensor)> {
        let n = self.schedule.num_train_timesteps();
        if x.dims().first() != Some(&timesteps.len()) {
            return Err(Error::shape(
                "add_noise",
                format!("{} timesteps for a batch {:?}", timesteps.len(), x.dims()),
            ));
        }
        if let Some(t) = timesteps.iter().find(|&&t| t >= n) {
            return Err(Error::msg(format!("add_noise: timestep {t} outside the schedule's {n} steps")));
        }
        let (a, b): (Vec<f64>, Vec<f64>) = timesteps.iter().map(|&t| f(self.schedule.alphas_cumprod[t])).unzip();
        let mut shape = vec![1; x.rank()];
        shape[0] = timesteps.len();
        let make = |v: Vec<f64>| {
            Tensor::from_vec(v, &shape, crate::Device::Cpu)?
                .to_dtype(x.dtype())?
                .to_device(x.device())
        };
        Ok((make(a)?, make(b)?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerKind {
    /// Ancestral sampling with the posterior variance.
    Ddpm,
    /// eta = 0 is deterministic; eta = 1 matches DDPM's variance.
    Ddim { eta: f64 },
}

impl SamplerKind {
    pub fn parse(name: &str, eta: f64) -> Result<Self> {
        match name {
            "ddpm" => Ok(SamplerKind::Ddpm),
            "ddim" if (0.0..=1.0).contains(&eta) => Ok(SamplerKind::Ddim { eta }),
            "ddim" => Err(Error::msg(format!("sampler: eta must be in [0, 1], got {eta}"))),
            other => Err(Error::msg(format!("unknown sampler '{other}' (expected ddim or ddpm)"))),
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim { .. } => "ddim",
        }
    }

    /// DDIM's eta; DDPM's noise is the posterior's, which DDIM gives at eta = 1.
    pub fn eta(self) -> f64 {
        match self {
            SamplerKind::Ddpm => 1.0,
            SamplerKind::Ddim { eta } => eta,
        }
    }
}

/// A sampler over a fixed list of timesteps.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub config: SchedulerConfig,
    pub kind: SamplerKind,
    timesteps: Vec<i64>,
}

impl Sampler {
    pub fn new(config: SchedulerConfig, kind: SamplerKind, steps: usize) -> Result<Self> {
        let timesteps = config.schedule.timesteps(steps, config.spacing, config.steps_offset)?;
        Ok(Sampler { config, kind, timesteps })
    }

    /// The timesteps visited, descending.
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// The timestep step `i` moves to (-1: past the start).
    pub fn prev_timestep(&self, i: usize) -> i64 {
        match self.kind {
            SamplerKind::Ddpm => self.timesteps.get(i + 1).copied().unwrap_or(-1),
            SamplerKind::Ddim { .. } => {
                let n = self.config.schedule.num_train_timesteps() / self.timesteps.len();
                self.timesteps[i] - n as i64
            }
        }
    }

    /// Whether step `i` adds noise.
    pub fn is_stochastic(&self, i: usize) -> bool {
        match self.kind {
            SamplerKind::Ddpm => self.timesteps[i] > 0,
            SamplerKind::Ddim { eta } => eta > 0.0,
        }
    }

    /// The fused op's parameters for step `i` (see the module comment).
    pub fn params(&self, i: usize, guidance: f64) -> DenoiseParams {
        let s = &self.config.schedule;
        let (t, prev) = (self.timesteps[i], self.prev_timestep(i));
        let abar = s.alpha_bar(t, 1.0);
        let (c_x0, c_xt, c_eps, c_noise) = match self.kind {
            SamplerKind::Ddpm => {
                let abar_prev = s.alpha_bar(prev, 1.0);
                let alpha = abar / abar_prev;
                let beta = 1.0 - alpha;
                let variance = ((1.0 - abar_prev) / (1.0 - abar) * beta).max(1e-20);
                let sigma = if t > 0 { variance.sqrt() } else { 0.0 };
                (
                    abar_prev.sqrt() * beta / (1.0 - abar),
                    alpha.sqrt() * (1.0 - abar_prev) / (1.0 - abar),
                    0.0,
                    sigma,
                )
            }
            SamplerKind::Ddim { eta } => {
                let final_abar = if self.config.set_alpha_to_one { 1.0 } else { s.alphas_cumprod[0] };
                let abar_prev = s.alpha_bar(prev, final_abar);
                let variance = (1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev);
                let sigma = eta * variance.sqrt();
                (abar_prev.sqrt(), 0.0, (1.0 - abar_prev - sigma * sigma).max(0.0).sqrt(), sigma)
            }
        };
        DenoiseParams {
            guidance,
            prediction: self.config.prediction,
            sqrt_alpha_bar: abar.sqrt(),
            sqrt_one_minus_alpha_bar: (1.0 - abar).sqrt(),
            clip_sample: self.config.clip_sample.unwrap_or(0.0),
            c_x0,
            c_xt,
            c_eps,
            c_noise,
        }
    }

    /// Step `i`: x_t and the model's conditional (and, with guidance, unconditional) outputs to
    /// x_prev, drawing the step's noise from `rng` when it needs any.
    pub fn step(&self, i: usize, x: &Tensor, cond: &Tensor, uncond: Option<&Tensor>, guidance: f64, rng: &mut Rng) -> Result<Tensor> {
        let noise = if self.is_stochastic(i) {
            Some(Tensor::randn(rng, x.dims(), 0.0, 1.0, x.dtype(), x.device())?)
        } else {
            None
        };
        Tensor::denoise_step(x, cond, uncond, noise.as_ref(), &self.params(i, guidance))
    }
}
