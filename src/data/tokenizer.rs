//! The CLIP tokenizer: byte-level BPE through the `tokenizers` crate, from a checkpoint's
//! `tokenizer.json` or the CLIP vocabulary shipped in the binary (assets/clip/tokenizer.json,
//! built by scripts/make_clip_tokenizer.py from OpenAI's bpe_simple_vocab_16e6). Batches are
//! padded with the end-of-text token (as OpenAI's CLIP and transformers do) and truncated to the
//! context length keeping the end token; an attention mask marks the real tokens.

use crate::{Device, Error, Result, Tensor};
use std::path::Path;

/// The CLIP BPE vocabulary shipped with vlk.
const BUNDLED: &str = include_str!("../../assets/clip/tokenizer.json");

pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    eos: u32,
}

/// A padded batch: ids [B, L] (u32) and attention mask [B, L] (1 = token, 0 = padding).
pub struct TokenBatch {
    pub ids: Tensor,
    pub mask: Tensor,
}

impl ClipTokenizer {
    fn from_tokenizer(inner: tokenizers::Tokenizer, origin: &str) -> Result<Self> {
        let eos = inner
            .token_to_id("<|endoftext|>")
            .ok_or_else(|| Error::msg(format!("{origin}: the tokenizer has no <|endoftext|> token")))?;
        Ok(ClipTokenizer { inner, eos })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::file(path, format!("not a usable tokenizer.json: {e}")))?;
        Self::from_tokenizer(inner, &path.display().to_string())
    }

    /// The CLIP vocabulary compiled into vlk.
    pub fn bundled() -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(BUNDLED.as_bytes()).map_err(|e| Error::msg(format!("bundled tokenizer: {e}")))?;
        Self::from_tokenizer(inner, "bundled tokenizer")
    }

    /// A word-level tokenizer over a closed vocabulary (the built-in datasets' captions): ids 0
    /// and 1 are the start and end tokens, 2 stands for unknown words, then `words` in order.
    /// Text is lower-cased and split on whitespace and punctuation.
    pub fn word_level(words: &[&str]) -> Result<Self> {
        let mut vocab = serde_json::Map::new();
        for (i, w) in ["<|startoftext|>", "<|endoftext|>", "<unk>"].iter().chain(words).enumerate() {
            if vocab.insert(w.to_string(), i.into()).is_some() {
                return Err(Error::msg(format!("tokenizer: word {w:?} appears twice in the vocabulary")));
            }
        }
        let special = |id: usize, content: &str| serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
        let spec = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [special(0, "<|startoftext|>"), special(1, "<|endoftext|>")],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]},
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<|startoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<|startoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}}],
                "special_tokens": {
                    "<|startoftext|>": {"id": "<|startoftext|>", "ids": [0], "tokens": ["<|startoftext|>"]},
                    "<|endoftext|>": {"id": "<|endoftext|>", "ids": [1], "tokens": ["<|endoftext|>"]}
                }
            },
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        let inner =
            tokenizers::Tokenizer::from_bytes(spec.to_string().as_bytes()).map_err(|e| Error::msg(format!("word-level tokenizer: {e}")))?;
        Self::from_tokenizer(inner, "word-level tokenizer")
    }

    /// Writes `tokenizer.json` (readable by the Python `tokenizers` library too).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| Error::msg(format!("tokenizer: cannot serialise: {e}")))?;
        crate::io::write_atomic(path, json.as_bytes())
    }

    /// Token ids with the start and end tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::msg(format!("tokenizer: cannot encode {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::msg(format!("tokenizer: cannot decode: {e}")))
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// The start token's id (the first id `encode` gives).
    pub fn bos_id(&self) -> Result<u32> {
        self.inner
            .token_to_id("<|startoftext|>")
            .ok_or_else(|| Error::msg("tokenizer: no <|startoftext|> token"))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes, truncates each row to `context` tokens (keeping the end token last) and pads
    /// with the end token to the longest row.
    pub fn encode_batch(&self, texts: &[&str], context: usize, device: Device) -> Result<TokenBatch> {
        if texts.is_empty() {
            return Err(Error::msg("tokenizer: no texts to encode"));
        }
        if context < 2 {
            return Err(Error::msg(format!(
                "tokenizer: context length {context} cannot hold the start and end tokens"
            )));
        }
        let rows = texts
            .iter()
            .map(|t| {
                let mut ids = self.encode(t)?;
                if ids.len() > context {
                    ids.truncate(context - 1);
                    ids.push(self.eos);
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for row in &rows {
            ids.extend(row.iter().copied().chain(std::iter::repeat(self.eos)).take(len));
            mask.extend((0..len).map(|i| u32::from(i < row.len())));
        }
        Ok(TokenBatch {
            ids: Tensor::from_vec(ids, &[rows.len(), len], device)?,
            mask: Tensor::from_vec(mask, &[rows.len(), len], device)?,
        })
    }
}
