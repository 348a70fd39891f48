//! Diffusion: the noise schedules and the samplers that drive a denoiser (models::dit) from noise
//! to an image through the fused `denoise_step` op.

pub mod pipeline;
pub mod prompts;
pub mod schedule;
pub mod scheduler;

pub use pipeline::{SampleOptions, TextToImage};
pub use prompts::PromptEncoder;
pub use schedule::{BetaSchedule, NoiseSchedule, TimestepSpacing};
pub use scheduler::{Sampler, SamplerKind, SchedulerConfig};
