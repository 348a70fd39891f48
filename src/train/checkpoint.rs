//! Checkpoints of a training run: `RUN/checkpoints/step-00000100/` holds the model as its own
//! format wants it (for CLIP, a Hugging Face directory), `optimizer.safetensors` (AdamW's moments
//! by parameter name) and `trainer_state.json` (step, RNG state, and whatever the loop records).
//! A checkpoint is written into a temporary directory and renamed into place, so a crash never
//! leaves a half-written one under its final name; the newest `keep` are kept, so a checkpoint
//! found corrupt on resume still has its predecessor beside it.

use crate::io::safetensors::{self, LoadOptions};
use crate::optim::{AdamW, SlotState};
use crate::{Device, Error, Result, Rng, Tensor};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// (step, loss) of every step and (step, metrics) of every evaluation of a run.
pub type History = (Vec<(u64, f64)>, Vec<(u64, Value)>);

pub struct Checkpointer {
    dir: PathBuf,
    keep: usize,
}

/// A checkpoint found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub step: u64,
    pub dir: PathBuf,
}

const PREFIX: &str = "step-";

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::file(path, format!("{what}: {e}"))
}

/// RNG state as hex strings (JSON numbers lose u64 precision).
pub fn rng_to_json(rng: &Rng) -> Value {
    Value::Array(rng.state().iter().map(|w| Value::String(format!("{w:016x}"))).collect())
}

pub fn rng_from_json(v: &Value, context: &Path) -> Result<Rng> {
    let words: Option<Vec<u64>> = v.as_array().map(|a| {
        a.iter()
            .filter_map(|w| w.as_str().and_then(|s| u64::from_str_radix(s, 16).ok()))
            .collect()
    });
    match words {
        Some(w) if w.len() == 6 => Ok(Rng::from_state([w[0], w[1], w[2], w[3], w[4], w[5]])),
        _ => Err(Error::file(context, "trainer state: 'rng' must be six hex words")),
    }
}

impl Checkpointer {
    pub fn new(run_dir: &Path, keep: usize) -> Self {
        Checkpointer {
            dir: run_dir.join("checkpoints"),
            keep: keep.max(2),
        }
    }

    /// Every complete checkpoint, oldest first.
    pub fn list(&self) -> Result<Vec<Checkpoint>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir, "cannot list checkpoints", e)),
        };
        let mut found: Vec<Checkpoint> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let step = name.strip_prefix(PREFIX)?.parse().ok()?;
                Some(Checkpoint { step, dir: e.path() })
            })
            .collect();
        found.sort_by_key(|c| c.step);
        Ok(found)
    }

    pub fn latest(&self) -> Result<Option<Checkpoint>> {
        Ok(self.list()?.pop())
    }

    /// Where a run starts: the newest checkpoint when `resume` asks for one (an error when there
    /// is none), nothing for a fresh run (an error when the directory already holds one, so a
    /// finished run is never overwritten by accident).
    pub fn resume_point(&self, resume: bool) -> Result<Option<Checkpoint>> {
        let run_dir = self.dir.parent().unwrap_or(&self.dir);
        match (resume, self.latest()?) {
            (true, Some(ck)) => Ok(Some(ck)),
            (true, None) => Err(Error::file(run_dir, "--resume: no checkpoint in this run directory")),
            (false, Some(ck)) => Err(Error::file(
                &ck.dir,
                "the run directory already has checkpoints: pass --resume to continue it, or choose another --out",
            )),
            (false, None) => Ok(None),
        }
    }

    /// Writes a checkpoint for `step`: `write_model` fills the directory with the model's own
    /// files, then the optimizer and `state` (to which the step and RNG are added) follow.
    pub fn save(
        &self,
        step: u64,
        write_model: impl FnOnce(&Path) -> Result<()>,
        opt: &AdamW,
        rng: &Rng,
        mut state: Value,
    ) -> Result<Checkpoint> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, "cannot create the checkpoint directory", e))?;
        let final_dir = self.dir.join(format!("{PREFIX}{step:08}"));
        let tmp = self.dir.join(format!(".{PREFIX}{step:08}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, "cannot clear a stale temporary checkpoint", e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, "cannot create", e))?;
        let written = (|| {
            write_model(&tmp)?;
            let mut moments = Vec::new();
            for slot in opt.state() {
                let steps = Tensor::from_vec(vec![slot.steps as i64], &[], Device::Cpu)?;
                moments.push((format!("m.{}", slot.name), slot.m));
                moments.push((format!("v.{}", slot.name), slot.v));
                moments.push((format!("steps.{}", slot.name), steps));
            }
            safetensors::save(tmp.join("optimizer.safetensors"), &moments)?;
            if !state.is_object() {
                state = json!({});
            }
            state["step"] = step.into();
            state["rng"] = rng_to_json(rng);
            let body = serde_json::to_vec_pretty(&state).map_err(|e| Error::msg(e.to_string()))?;
            crate::io::write_atomic(&tmp.join("trainer_state.json"), &body)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(|e| io_err(&final_dir, "cannot replace", e))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(|e| io_err(&final_dir, "cannot move the checkpoint into place", e))?;
        let all = self.list()?;
        for old in all.iter().take(all.len().saturating_sub(self.keep)) {
            std::fs::remove_dir_all(&old.dir).map_err(|e| io_err(&old.dir, "cannot remove an old checkpoint", e))?;
        }
        Ok(Checkpoint { step, dir: final_dir })
    }
}

impl Checkpoint {
    /// The trainer state, validated: step, RNG and anything the loop stored.
    pub fn state(&self) -> Result<(Value, Rng)> {
        let path = self.dir.join("trainer_state.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| io_err(&path, "cannot read the trainer state (incomplete checkpoint?)", e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("corrupt trainer state: {e}")))?;
        if v.get("step").and_then(Value::as_u64) != Some(self.step) {
            return Err(Error::file(&path, format!("trainer state does not belong to step {}", self.step)));
        }
        let rng = rng_from_json(&v["rng"], &path)?;
        Ok((v, rng))
    }

    /// The (step, loss) and (step, metrics) history a training loop stored in its state under
    /// "losses" and "evals".
    pub fn history(&self, state: &Value) -> Result<History> {
        let context = self.dir.join("trainer_state.json");
        let bad = |key: &str, e: serde_json::Error| Error::file(&context, format!("trainer state: bad '{key}': {e}"));
        let losses = serde_json::from_value(state["losses"].clone()).map_err(|e| bad("losses", e))?;
        let evals = serde_json::from_value(state["evals"].clone()).map_err(|e| bad("evals", e))?;
        Ok((losses, evals))
    }

    /// Restores AdamW's moments and per-parameter step counts.
    pub fn restore_optimizer(&self, opt: &mut AdamW) -> Result<()> {
        let path = self.dir.join("optimizer.safetensors");
        let tensors = safetensors::load(&path, Device::Cpu)?;
        let get = |key: String| -> Result<Tensor> {
            tensors.get(&key).cloned().ok_or_else(|| Error::Checkpoint {
                msg: format!("{}: no tensor '{key}'", path.display()),
            })
        };
        let saved = opt
            .state()
            .into_iter()
            .map(|slot| {
                let steps = get(format!("steps.{}", slot.name))?.to_vec::<i64>()?;
                let steps = match steps[..] {
                    [n] if n >= 0 => n as u64,
                    _ => {
                        return Err(Error::Checkpoint {
                            msg: format!("{}: 'steps.{}' is not one non-negative count", path.display(), slot.name),
                        })
                    }
                };
                Ok(SlotState {
                    m: get(format!("m.{}", slot.name))?,
                    v: get(format!("v.{}", slot.name))?,
                    steps,
                    name: slot.name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        opt.load_state(&saved)
    }

    /// Loads parameters saved by the model's writer into a store (for models saved with
    /// `io::safetensors::save` under `model.safetensors`).
    pub fn restore_params(&self, store: &crate::nn::ParamStore) -> Result<()> {
        safetensors::load_into(store, self.dir.join("model.safetensors"), LoadOptions::default()).map(drop)
    }
}
