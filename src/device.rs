//! Where a tensor lives. `Cpu` is the host backend; `Cuda(n)` is GPU n through cudarc; `Emu` runs
//! the same CUDA kernels on the host through vlk's emulator. `VLK_DEVICE=cpu|cuda|emu` picks the
//! default device; without it, a GPU is used when one is present.

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(usize),
    Emu,
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N` or `emu`.
    pub fn parse(s: &str) -> Result<Device> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "emu" => Ok(Device::Emu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(Device::Cuda(n)),
                None => Err(Error::device(
                    "device",
                    format!("unknown device '{s}' (expected cpu, cuda, cuda:N or emu)"),
                )),
            },
        }
    }

    /// The device named by `VLK_DEVICE`; else the first GPU when one is present; else the CPU.
    pub fn default_device() -> Result<Device> {
        match std::env::var("VLK_DEVICE") {
            Ok(s) if !s.is_empty() => Device::parse(&s),
            _ if crate::backend::gpu::cuda::gpu_count() > 0 => Ok(Device::Cuda(0)),
            _ => Ok(Device::Cpu),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Emu => f.write_str("emu"),
        }
    }
}
