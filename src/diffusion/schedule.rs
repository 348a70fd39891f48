//! Noise schedules and the timesteps a sampler visits, with diffusers' conventions (so a
//! scheduler config from the Hub means the same thing here):
//!
//! - betas: `linear` (linspace(beta_start, beta_end)), `scaled_linear` (linspace of the square
//!   roots, squared: Stable Diffusion's) and `squaredcos_cap_v2` (the cosine schedule of
//!   Nichol & Dhariwal: beta_i = min(1 - abar((i+1)/N) / abar(i/N), 0.999) with
//!   abar(s) = cos((s + 0.008) / 1.008 * pi/2)^2);
//! - alphas_cumprod[t] = prod_{i <= t} (1 - beta_i);
//! - inference timesteps for n steps out of N, descending: `leading` (multiples of N / n, floor,
//!   plus `steps_offset`), `trailing` (round(N - k N / n) - 1, which ends at the last trained
//!   step) and `linspace` (round(linspace(0, N - 1, n))).

use crate::{Error, Result};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
}

impl BetaSchedule {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "linear" => Ok(BetaSchedule::Linear),
            "scaled_linear" => Ok(BetaSchedule::ScaledLinear),
            "squaredcos_cap_v2" => Ok(BetaSchedule::SquaredCosCapV2),
            other => Err(Error::msg(format!(
                "unknown beta_schedule '{other}' (expected linear, scaled_linear or squaredcos_cap_v2)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BetaSchedule::Linear => "linear",
            BetaSchedule::ScaledLinear => "scaled_linear",
            BetaSchedule::SquaredCosCapV2 => "squaredcos_cap_v2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

impl TimestepSpacing {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "leading" => Ok(TimestepSpacing::Leading),
            "trailing" => Ok(TimestepSpacing::Trailing),
            "linspace" => Ok(TimestepSpacing::Linspace),
            other => Err(Error::msg(format!(
                "unknown timestep_spacing '{other}' (expected leading, trailing or linspace)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TimestepSpacing::Leading => "leading",
            TimestepSpacing::Trailing => "trailing",
            TimestepSpacing::Linspace => "linspace",
        }
    }
}

/// The training-time noise process: N steps with their betas and cumulative alphas.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    pub kind: BetaSchedule,
    pub beta_start: f64,
    pub beta_end: f64,
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
}

/// n evenly spaced values from a to b inclusive.
fn linspace(a: f64, b: f64, n: usize) -> impl Iterator<Item = f64> {
    let step = if n > 1 { (b - a) / (n - 1) as f64 } else { 0.0 };
    (0..n).map(move |i| if i + 1 == n && n > 1 { b } else { a + step * i as f64 })
}

impl NoiseSchedule {
    pub fn new(kind: BetaSchedule, num_train_timesteps: usize, beta_start: f64, beta_end: f64) -> Result<Self> {
        if num_train_timesteps == 0 {
            return Err(Error::msg("noise schedule: num_train_timesteps must be at least 1"));
        }
        if kind != BetaSchedule::SquaredCosCapV2 && !(0.0 < beta_start && beta_start <= beta_end && beta_end < 1.0) {
            return Err(Error::msg(format!(
                "noise schedule: need 0 < beta_start <= beta_end < 1, got {beta_start} and {beta_end}"
            )));
        }
        let n = num_train_timesteps;
        let betas: Vec<f64> = match kind {
            BetaSchedule::Linear => linspace(beta_start, beta_end, n).collect(),
            BetaSchedule::ScaledLinear => linspace(beta_start.sqrt(), beta_end.sqrt(), n).map(|b| b * b).collect(),
            BetaSchedule::SquaredCosCapV2 => {
                let abar = |s: f64| ((s + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..n)
                    .map(|i| (1.0 - abar((i + 1) as f64 / n as f64) / abar(i as f64 / n as f64)).min(0.999))
                    .collect()
            }
        };
        let alphas_cumprod = betas
            .iter()
            .scan(1.0, |acc, b| {
                *acc *= 1.0 - b;
                Some(*acc)
            })
            .collect();
        Ok(NoiseSchedule {
            kind,
            beta_start,
            beta_end,
            betas,
            alphas_cumprod,
        })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// abar at `t`, or `before_start` for t < 0 (the state past the last denoising step).
    pub fn alpha_bar(&self, t: i64, before_start: f64) -> f64 {
        if t < 0 {
            before_start
        } else {
            self.alphas_cumprod[t as usize]
        }
    }

    /// `n` inference timesteps, descending, as diffusers' `set_timesteps` makes them.
    pub fn timesteps(&self, n: usize, spacing: TimestepSpacing, steps_offset: usize) -> Result<Vec<i64>> {
        let total = self.num_train_timesteps();
        if n == 0 || n > total {
            return Err(Error::msg(format!(
                "sampler: the number of inference steps must be in 1..={total} (the schedule's training steps), got {n}"
            )));
        }
        let ts: Vec<i64> = match spacing {
            TimestepSpacing::Leading => {
                let ratio = total / n;
                (0..n).rev().map(|k| (k * ratio + steps_offset) as i64).collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = total as f64 / n as f64;
                (0..n)
                    .map(|k| round_half_even(total as f64 - k as f64 * ratio) as i64 - 1)
                    .collect()
            }
            TimestepSpacing::Linspace => {
                let mut v: Vec<i64> = linspace(0.0, (total - 1) as f64, n).map(|x| round_half_even(x) as i64).collect();
                v.reverse();
                v
            }
        };
        if let Some(bad) = ts.iter().find(|&&t| t < 0 || t as usize >= total) {
            return Err(Error::msg(format!(
                "sampler: timestep {bad} falls outside the schedule's {total} steps (steps_offset {steps_offset} too large?)"
            )));
        }
        Ok(ts)
    }

    pub fn to_json(&self) -> Value {
        json!({"beta_schedule": self.kind.name(), "num_train_timesteps": self.num_train_timesteps(),
               "beta_start": self.beta_start, "beta_end": self.beta_end})
    }
}

/// numpy's and torch's rounding: halves go to the even neighbour.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}
