//! Training infrastructure shared by the models' training loops: checkpoints that survive
//! crashes and resume a run exactly.

pub mod captioner;
pub mod captioner_eval;
pub mod checkpoint;
pub mod clip;
pub mod clip_eval;
pub mod clip_report;
pub mod diffusion;
pub mod diffusion_eval;
pub mod report;

pub use checkpoint::{Checkpoint, Checkpointer};
