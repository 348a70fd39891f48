//! Decoding text from the captioner: greedy, beam search (width, length penalty) and sampling
//! (temperature, top-k), each continuing a prompt (the start token, or a question) with the KV
//! cache, until the end token or the length limit.

use super::captioner::{Captioner, KvCache};
use crate::{Error, Result, Rng, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    Greedy,
    /// Keeps the `width` best partial outputs; finished ones compete by total log-probability
    /// divided by length^length_penalty (0: no normalisation, 1: mean log-probability).
    Beam {
        width: usize,
        length_penalty: f64,
    },
    /// Draws from softmax(logits / temperature) over the `top_k` most probable tokens (0: all).
    Sample {
        temperature: f64,
        top_k: usize,
        seed: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The new tokens, without the prompt and without the end token.
    pub tokens: Vec<u32>,
    /// Sum of the chosen tokens' log-probabilities (the end token's included when reached).
    pub log_prob: f64,
}

/// log-softmax of one row of logits.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    logits.iter().map(|&l| l as f64 - lse).collect()
}

/// The log-probabilities of the next token after each row's last position: [rows][vocab].
fn last_log_probs(logits: &Tensor) -> Result<Vec<Vec<f64>>> {
    let (b, t, v) = (logits.dims()[0], logits.dims()[1], logits.dims()[2]);
    let values = logits
        .narrow(1, t - 1, 1)?
        .contiguous()?
        .to_dtype(crate::DType::F32)?
        .to_vec::<f32>()?;
    Ok((0..b).map(|r| log_softmax(&values[r * v..(r + 1) * v])).collect())
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

impl Captioner {
    /// Continues `prompts[i]` (token ids, starting with the start token) for image i of
    /// `pixels` [B, C, S, S] by at most `max_new_tokens` tokens.
    pub fn generate(&self, pixels: &Tensor, prompts: &[Vec<u32>], max_new_tokens: usize, strategy: Strategy) -> Result<Vec<Generated>> {
        if prompts.len() != pixels.dims()[0] {
            return Err(Error::msg(format!(
                "generate: {} prompts for {} images",
                prompts.len(),
                pixels.dims()[0]
            )));
        }
        if let Some(p) = prompts.iter().find(|p| p.is_empty() || p.len() >= self.config.decoder.max_length) {
            return Err(Error::msg(format!(
                "generate: a prompt of {} tokens leaves no room in the model's {} positions",
                p.len(),
                self.config.decoder.max_length
            )));
        }
        let _guard = crate::NoGradGuard::new();
        let tokens = self.encode_image(pixels)?;
        let mut rng = match strategy {
            Strategy::Sample { seed, .. } => Rng::new(seed),
            _ => Rng::new(0),
        };
        prompts
            .iter()
            .enumerate()
            .map(|(i, prompt)| {
                let cache = self.start(&tokens.narrow(0, i, 1)?)?;
                let room = max_new_tokens.min(self.config.decoder.max_length - prompt.len());
                match strategy {
                    Strategy::Beam { width, length_penalty } if width > 1 => self.beam(cache, prompt, room, width, length_penalty),
                    _ => self.one_path(cache, prompt, room, strategy, &mut rng),
                }
            })
            .collect()
    }

    fn ids(&self, rows: &[u32], t: usize) -> Result<Tensor> {
        let device = self.store.device();
        Tensor::from_vec(rows.to_vec(), &[rows.len() / t, t], device)
    }

    /// Greedy or sampled decoding of one image.
    fn one_path(&self, mut cache: KvCache, prompt: &[u32], room: usize, strategy: Strategy, rng: &mut Rng) -> Result<Generated> {
        let eos = self.config.decoder.eos_token_id;
        let mut logits = self.step(&self.ids(prompt, prompt.len())?, &mut cache)?;
        let mut out = Generated {
            tokens: Vec::new(),
            log_prob: 0.0,
        };
        for _ in 0..room {
            let lp = last_log_probs(&logits)?.remove(0);
            let next = match strategy {
                Strategy::Sample { temperature, top_k, .. } => sample(&lp, temperature, top_k, rng),
                _ => argmax(&lp),
            };
            out.log_prob += lp[next];
            if next as u32 == eos {
                break;
            }
            out.tokens.push(next as u32);
            if out.tokens.len() == room {
                break;
            }
            logits = self.step(&self.ids(&[next as u32], 1)?, &mut cache)?;
        }
        Ok(out)
    }

    fn beam(&self, cache: KvCache, prompt: &[u32], room: usize, width: usize, length_penalty: f64) -> Result<Generated> {
        let eos = self.config.decoder.eos_token_id;
        let normalised = |g: &Generated| g.log_prob / ((g.tokens.len() + 1) as f64).powf(length_penalty);
        let mut cache = cache;
        let logits = self.step(&self.ids(prompt, prompt.len())?, &mut cache)?;
        let mut log_probs = last_log_probs(&logits)?;
        // The live hypotheses, each the parent row of the cache it continues.
        let mut alive = vec![Generated {
            tokens: Vec::new(),
            log_prob: 0.0,
        }];
        let mut finished: Vec<Generated> = Vec::new();
        for t in 0..room {
            let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
            for (r, (beam, lp)) in alive.iter().zip(&log_probs).enumerate() {
                let mut order: Vec<usize> = (0..lp.len()).collect();
                order.sort_unstable_by(|&a, &b| lp[b].total_cmp(&lp[a]));
                candidates.extend(order.into_iter().take(width).map(|tok| (beam.log_prob + lp[tok], r, tok)));
            }
            candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            let mut next_alive = Vec::new();
            let mut parents = Vec::new();
            for (score, r, tok) in candidates {
                if next_alive.len() == width {
                    break;
                }
                let mut g = Generated {
                    tokens: alive[r].tokens.clone(),
                    log_prob: score,
                };
                if tok as u32 == eos {
                    finished.push(g);
                } else {
                    g.tokens.push(tok as u32);
                    if t + 1 == room {
                        finished.push(g);
                    } else {
                        next_alive.push(g);
                        parents.push(r);
                    }
                }
            }
            // Stop once the best finished output beats every live one's best possible future
            // (log-probabilities only fall as tokens are added).
            let best_done = finished.iter().map(normalised).fold(f64::NEG_INFINITY, f64::max);
            let best_alive = next_alive.iter().map(|g| g.log_prob).fold(f64::NEG_INFINITY, f64::max);
            if next_alive.is_empty() || (finished.len() >= width && length_penalty == 0.0 && best_done >= best_alive) {
                break;
            }
            cache = cache.select(&parents)?;
            let last: Vec<u32> = next_alive.iter().map(|g| *g.tokens.last().expect("a token")).collect();
            log_probs = last_log_probs(&self.step(&self.ids(&last, 1)?, &mut cache)?)?;
            alive = next_alive;
        }
        if finished.is_empty() {
            finished = alive;
        }
        Ok(finished
            .into_iter()
            .max_by(|a, b| normalised(a).total_cmp(&normalised(b)))
            .expect("at least one hypothesis"))
    }
}

/// Draws a token from log-probabilities at `temperature` among the `top_k` most probable.
fn sample(lp: &[f64], temperature: f64, top_k: usize, rng: &mut Rng) -> usize {
    let mut order: Vec<usize> = (0..lp.len()).collect();
    order.sort_unstable_by(|&a, &b| lp[b].total_cmp(&lp[a]));
    if top_k > 0 {
        order.truncate(top_k);
    }
    let t = temperature.max(1e-6);
    let weights: Vec<f64> = order.iter().map(|&i| ((lp[i] - lp[order[0]]) / t).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform() * total;
    for (&i, w) in order.iter().zip(&weights) {
        if u < *w {
            return i;
        }
        u -= w;
    }
    order[0]
}
