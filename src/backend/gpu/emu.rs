//! The emulator runtime: device memory is host memory from the emulator's allocator, and a
//! launch runs the kernel's C++ build (compiled by build.rs) on CPU fibers, synchronously.

use super::runtime::{DevicePtr, LaunchConfig, Runtime};
use crate::{profile, Device, Error, Result};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EmuDim3 {
    x: u32,
    y: u32,
    z: u32,
}

type EmuLaunchFn = unsafe extern "C" fn(EmuDim3, EmuDim3, usize, *mut *mut c_void, *mut c_char, usize) -> c_int;

include!(concat!(env!("OUT_DIR"), "/emu_kernels.rs"));

unsafe extern "C" {
    fn vlk_emu_alloc(bytes: usize) -> *mut c_void;
    fn vlk_emu_free(p: *mut c_void);
}

pub struct EmuRuntime {
    kernels: HashMap<&'static str, EmuLaunchFn>,
}

impl EmuRuntime {
    pub fn get() -> &'static EmuRuntime {
        static RUNTIME: OnceLock<EmuRuntime> = OnceLock::new();
        RUNTIME.get_or_init(|| EmuRuntime {
            kernels: EMU_KERNELS.iter().copied().collect(),
        })
    }

    /// Names of every kernel the emulator can run.
    pub fn kernel_names() -> Vec<&'static str> {
        EMU_KERNELS.iter().map(|(n, _)| *n).collect()
    }
}

impl Runtime for EmuRuntime {
    fn device(&self) -> Device {
        Device::Emu
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        // SAFETY: plain allocation; null means out of memory.
        let p = unsafe { vlk_emu_alloc(bytes) };
        if p.is_null() {
            return Err(Error::Kernel {
                msg: format!("emu: cannot allocate {bytes} bytes"),
            });
        }
        Ok(p as DevicePtr)
    }

    fn free(&self, ptr: DevicePtr, _bytes: usize) {
        // SAFETY: ptr came from vlk_emu_alloc and is freed once (DeviceBuffer's drop).
        unsafe { vlk_emu_free(ptr as *mut c_void) }
    }

    fn upload(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        // SAFETY: dst is a live emulator allocation of at least src.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        // SAFETY: src is a live emulator allocation of at least dst.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &mut [*mut c_void]) -> Result<()> {
        let f = self.kernels.get(kernel).ok_or_else(|| Error::Kernel {
            msg: format!("emu: no kernel named '{kernel}' in this build"),
        })?;
        let _profile = profile::kernel(kernel, cfg, Device::Emu);
        let dim = |(x, y, z): (u32, u32, u32)| EmuDim3 { x, y, z };
        let mut err = vec![0u8; 2048];
        // SAFETY: args holds one pointer per kernel parameter, each at a value of the right type
        // (the GPU backend builds them to the signatures documented in kernels/*.cu).
        let rc = unsafe {
            f(
                dim(cfg.grid),
                dim(cfg.block),
                cfg.shared_mem_bytes as usize,
                args.as_mut_ptr(),
                err.as_mut_ptr() as *mut c_char,
                err.len(),
            )
        };
        if rc != 0 {
            let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
            return Err(Error::Kernel {
                msg: format!("emu: {kernel}: {}", String::from_utf8_lossy(&err[..end])),
            });
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
