//! The frozen text encoder a text-conditioned denoiser reads prompts through: a CLIP text tower
//! (a `vlk clip train` model or a Hugging Face CLIP directory) with its tokenizer. Every prompt is
//! padded to the tower's full context, so its token states always have the length the
//! denoiser's learned null condition has.

use crate::data::tokenizer::ClipTokenizer;
use crate::models::{Clip, TextCondition};
use crate::{DType, Device, Error, Result, Tensor};
use std::path::Path;

pub struct PromptEncoder {
    pub clip: Clip,
    pub tokenizer: ClipTokenizer,
}

impl PromptEncoder {
    /// Loads `dir` (config.json, model.safetensors, tokenizer.json).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let clip = Clip::load(dir, device, DType::F32)?;
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(Error::file(&tok_path, "missing: the CLIP directory needs its tokenizer.json"));
        }
        let tokenizer = ClipTokenizer::from_file(&tok_path)?;
        Ok(PromptEncoder { clip, tokenizer })
    }

    /// Writes the encoder as a CLIP directory (so a saved denoiser carries its own encoder).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
        self.clip.save(dir)?;
        self.tokenizer.save(&dir.join("tokenizer.json"))
    }

    /// Width of the token states and the pooled embedding.
    pub fn width(&self) -> usize {
        self.clip.config.text.hidden_size
    }

    /// Tokens per prompt (the tower's context).
    pub fn context(&self) -> usize {
        self.clip.config.text.max_position_embeddings
    }

    /// Token states, key mask and pooled embedding of each prompt (no gradients).
    pub fn encode(&self, prompts: &[&str], device: Device) -> Result<TextCondition> {
        if prompts.is_empty() {
            return Err(Error::msg("prompt encoder: no prompts"));
        }
        let l = self.context();
        let batch = self.tokenizer.encode_batch(prompts, l, Device::Cpu)?;
        let (b, len) = (prompts.len(), batch.ids.dims()[1]);
        let pad = |t: &Tensor, fill: u32| -> Result<Tensor> {
            let v = t.to_vec::<u32>()?;
            let padded: Vec<u32> = v
                .chunks(len)
                .flat_map(|row| row.iter().copied().chain(std::iter::repeat(fill)).take(l))
                .collect();
            Tensor::from_vec(padded, &[b, l], device)
        };
        let ids = pad(&batch.ids, self.tokenizer.eos_id())?;
        let mask = pad(&batch.mask, 0)?;
        let out = crate::no_grad(|| self.clip.text_model.forward_all(&ids, Some(&mask)))?;
        Ok(TextCondition {
            states: out.last_hidden_state,
            mask: mask.to_dtype(DType::F32)?,
            pooled: out.pooled,
        })
    }
}
