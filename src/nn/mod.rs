//! Layers over the tensor API. Weights are laid out as PyTorch lays them out ([out, in] for
//! Linear, [D, C, P, P] for the patch conv) so Hugging Face checkpoints load as they are.

mod init;
mod layers;
mod params;

pub use init::Init;
pub use layers::{
    Activation, Embedding, LayerNorm, Linear, Mlp, MultiHeadAttention, PatchEmbed, DIFFUSERS_ATTENTION_NAMES, HF_ATTENTION_NAMES,
};
pub use params::{ParamStore, Scope};
