//! The small interface the GPU backend needs from a device runtime: memory, copies and kernel
//! launches by name with cuLaunchKernel-style arguments. Two implementations: cudarc on a real
//! GPU (cuda.rs) and the CPU emulator of the same kernels (emu.rs).

use crate::{Device, Result};
use std::ffi::c_void;
use std::sync::Arc;

/// A device address (on the emulator, a host address).
pub type DevicePtr = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_mem_bytes: u32,
}

pub trait Runtime: Send + Sync {
    fn device(&self) -> Device;
    fn alloc(&self, bytes: usize) -> Result<DevicePtr>;
    /// Returns memory from `alloc` (a runtime may keep it for reuse).
    fn free(&self, ptr: DevicePtr, bytes: usize);
    fn upload(&self, dst: DevicePtr, src: &[u8]) -> Result<()>;
    fn download(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()>;
    /// Launches `kernel` (an exported name such as `gemm_bf16`); `args[i]` points at the i-th
    /// parameter's value.
    fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &mut [*mut c_void]) -> Result<()>;
    fn synchronize(&self) -> Result<()>;
    /// Milliseconds `work` takes on the device (all its queued work included).
    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.synchronize()?;
        let start = std::time::Instant::now();
        work()?;
        self.synchronize()?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }
}

/// Device memory that returns itself to its runtime when dropped.
pub struct DeviceBuffer {
    runtime: Arc<dyn Runtime>,
    ptr: DevicePtr,
    bytes: usize,
}

impl DeviceBuffer {
    pub fn new(runtime: Arc<dyn Runtime>, bytes: usize) -> Result<Self> {
        let ptr = runtime.alloc(bytes.max(1))?;
        Ok(DeviceBuffer {
            runtime,
            ptr,
            bytes: bytes.max(1),
        })
    }
    pub fn ptr(&self) -> DevicePtr {
        self.ptr
    }
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.runtime.free(self.ptr, self.bytes);
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer({:#x}, {} bytes on {})",
            self.ptr,
            self.bytes,
            self.runtime.device()
        )
    }
}

/// Kernel arguments: each value lives in its own 8-byte-aligned slot, and `pointers()` gives
/// the array of addresses cuLaunchKernel (and the emulator's launcher) reads.
#[derive(Default)]
pub struct Args {
    slots: Vec<Vec<u64>>,
}

impl Args {
    pub fn new() -> Self {
        Args::default()
    }

    /// Any plain value whose layout matches the kernel parameter's C type.
    pub fn push<T: Copy>(&mut self, v: T) -> &mut Self {
        let size = std::mem::size_of::<T>();
        let mut slot = vec![0u64; size.div_ceil(8).max(1)];
        // SAFETY: the slot holds at least size bytes and is 8-byte aligned (align_of::<T>() <= 8
        // for every parameter type used: pointers, integers, floats, StridedLayout).
        unsafe { std::ptr::copy_nonoverlapping(&v as *const T as *const u8, slot.as_mut_ptr() as *mut u8, size) };
        self.slots.push(slot);
        self
    }

    pub fn ptr(&mut self, p: DevicePtr) -> &mut Self {
        self.push(p)
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.push(v)
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.push(v)
    }
    pub fn f32(&mut self, v: f32) -> &mut Self {
        self.push(v)
    }

    pub fn pointers(&mut self) -> Vec<*mut c_void> {
        self.slots.iter_mut().map(|s| s.as_mut_ptr() as *mut c_void).collect()
    }
}

/// kernels/common.cuh's `StridedLayout`, passed by value.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StridedLayout {
    pub rank: i32,
    pub shape: [i64; 8],
    pub stride: [i64; 8],
    pub offset: i64,
}

impl StridedLayout {
    pub fn from_layout(l: &crate::Layout, op: &'static str) -> Result<Self> {
        if l.rank() > 8 {
            return Err(crate::Error::shape(
                op,
                format!("GPU kernels take at most 8 dims, got {:?}", l.shape()),
            ));
        }
        let mut s = StridedLayout {
            rank: l.rank() as i32,
            shape: [1; 8],
            stride: [0; 8],
            offset: l.offset() as i64,
        };
        for (i, (&d, &st)) in l.shape().iter().zip(l.strides()).enumerate() {
            s.shape[i] = d as i64;
            s.stride[i] = st as i64;
        }
        Ok(s)
    }
}

/// Grid for the grid-stride elementwise kernels: 256 threads a block.
pub fn elementwise_config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65535) as u32;
    LaunchConfig {
        grid: (blocks, 1, 1),
        block: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}
