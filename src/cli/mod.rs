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

/// The device a `--device` flag names, else VLK_DEVICE, else a GPU when present, else the CPU.
pub fn device(flag: &Option<String>) -> vlk::Result<vlk::Device> {
    match flag {
        Some(d) => vlk::Device::parse(d),
        None => vlk::Device::default_device(),
    }
}
