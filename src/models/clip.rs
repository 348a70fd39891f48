//! CLIP (Radford et al. 2021): the two towers, bias-free projections into a shared space,
//! L2-normalised embeddings, a learnable temperature (`logit_scale`, stored as its log), and the
//! symmetric contrastive loss through the fused softmax cross-entropy.
//! Checkpoints are Hugging Face CLIPModel directories: `config.json` + `model.safetensors`.

use super::text::TextTransformer;
use super::vit::VisionTransformer;
use super::ClipConfig;
use crate::io::safetensors::{self, LoadOptions};
use crate::nn::{Init, Linear, ParamStore};
use crate::{DType, Device, Error, Result, Tensor};
use std::path::Path;

pub struct Clip {
    pub config: ClipConfig,
    pub store: ParamStore,
    pub vision_model: VisionTransformer,
    pub text_model: TextTransformer,
    pub visual_projection: Linear,
    pub text_projection: Linear,
    pub logit_scale: Tensor,
}

impl Clip {
    /// A freshly initialised model (parameters drawn from `seed`).
    pub fn new(config: ClipConfig, device: Device, dtype: DType, seed: u64) -> Result<Self> {
        config.validate("clip config")?;
        let store = ParamStore::new(device, dtype, seed);
        let root = store.root();
        let p = config.projection_dim;
        Ok(Clip {
            vision_model: VisionTransformer::new(&root.pp("vision_model"), &config.vision)?,
            text_model: TextTransformer::new(&root.pp("text_model"), &config.text)?,
            visual_projection: Linear::new(&root.pp("visual_projection"), config.vision.hidden_size, p, false)?,
            text_projection: Linear::new(&root.pp("text_projection"), config.text.hidden_size, p, false)?,
            logit_scale: root.param("logit_scale", &[], Init::Const(config.logit_scale_init_value))?,
            config,
            store,
        })
    }

    /// Loads a Hugging Face CLIPModel directory (`config.json`, `model.safetensors` in f32, f16
    /// or bf16), converting weights to `dtype` on `device`.
    pub fn load(dir: &Path, device: Device, dtype: DType) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "not a model directory"));
        }
        let config = ClipConfig::load(dir)?;
        let model = Clip::new(config, device, dtype, 0)?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(Error::file(&weights, "missing: a CLIP directory needs model.safetensors"));
        }
        let opts = LoadOptions {
            allow_unused: true,
            dtypes: Some(&[DType::F32, DType::F16, DType::BF16]),
        };
        let unused = safetensors::load_into(&model.store, &weights, opts)?;
        // transformers may keep `*.position_ids` buffers; anything else means another model.
        let unexpected: Vec<&String> = unused.iter().filter(|n| !n.ends_with("position_ids")).collect();
        if !unexpected.is_empty() {
            return Err(Error::Checkpoint {
                msg: format!("{}: tensors this CLIP config does not have: {unexpected:?}", weights.display()),
            });
        }
        Ok(model)
    }

    /// Writes `config.json` and `model.safetensors` (f32 unless the model is in another dtype)
    /// into `dir`, in the layout transformers reads.
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::io::write_json(&dir.join("config.json"), &self.config.to_json())?;
        safetensors::save(dir.join("model.safetensors"), &self.store.named())
    }

    /// Computes both towers in `dtype` over the parameters as stored: bf16 over f32 parameters
    /// is mixed precision (f32 master weights, which the optimizer updates). Embeddings, logits
    /// and the loss stay in the parameters' dtype.
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.vision_model.compute_dtype = dtype;
        self.text_model.compute_dtype = dtype;
    }

    /// L2-normalised image embeddings [B, P] from pixel values [B, C, S, S].
    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor> {
        self.visual_projection
            .forward(&self.vision_model.forward(pixels)?)?
            .to_dtype(self.logit_scale.dtype())?
            .l2_normalize(1e-12)
    }

    /// L2-normalised text embeddings [B, P] from ids [B, L] and an optional attention mask.
    pub fn text_embeds(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        self.text_projection
            .forward(&self.text_model.forward(ids, attention_mask)?)?
            .to_dtype(self.logit_scale.dtype())?
            .l2_normalize(1e-12)
    }

    /// logits_per_image [Bi, Bt] = exp(logit_scale) * image_embeds text_embeds^T.
    pub fn logits_per_image(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        image_embeds.matmul(&text_embeds.t()?)?.mul(&self.logit_scale.exp()?)
    }

    /// The symmetric contrastive loss over a batch of matching (image, text) pairs: the mean of
    /// the cross-entropies over rows and over columns of the logit matrix.
    pub fn contrastive_loss(&self, logits_per_image: &Tensor) -> Result<Tensor> {
        let n = logits_per_image.dim(0)?;
        if logits_per_image.dims() != [n, n] {
            return Err(Error::shape(
                "contrastive_loss",
                format!("needs a square logit matrix, got {:?}", logits_per_image.dims()),
            ));
        }
        let targets = Tensor::arange(0.0, n as f64, 1.0, DType::U32, logits_per_image.device())?;
        let rows = logits_per_image.cross_entropy(&targets, -100)?;
        let cols = logits_per_image.t()?.contiguous()?.cross_entropy(&targets, -100)?;
        rows.add(&cols)?.mul_scalar(0.5)
    }
}
