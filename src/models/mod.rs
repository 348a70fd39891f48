//! Models built directly on vlk's tensors and nn layers: the CLIP vision transformer, the CLIP
//! text transformer, and CLIP itself, laid out with Hugging Face's tensor names so checkpoints
//! from the Hub load as they are.

pub mod captioner;
pub mod clip;
mod config;
pub mod dit;
mod encoder;
pub mod generate;
pub mod text;
pub mod vit;
pub mod vit_hf;

pub use captioner::{Captioner, CaptionerConfig, DecoderConfig, KvCache};
pub use clip::Clip;
pub use config::{ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use dit::{Dit, DitCondition, DitConditioning, DitConfig, TextCondition};
pub use encoder::{Encoder, EncoderLayer};
pub use generate::{Generated, Strategy};
