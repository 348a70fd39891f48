//! Subcommands of the `vlk` binary, one file each.

pub mod bench;
pub mod caption;
pub mod ceilings;
pub mod clip;
pub mod clip_train;
pub mod demo;
pub mod diffusion;
pub mod kernels;
pub mod signals;
