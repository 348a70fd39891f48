//! Training infrastructure shared by the models' training loops: checkpoints that survive
//! crashes and resume a run exactly.

pub mod checkpoint;
pub mod clip;

pub use checkpoint::{Checkpoint, Checkpointer};
