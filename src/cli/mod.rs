//! Subcommands of the `vlk` binary, one file each.

pub mod demo;
pub mod kernels;
