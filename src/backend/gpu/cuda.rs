//! The CUDA runtime over cudarc's driver API: one context and stream per device, modules loaded
//! on first use (the sm_90a cubin on Hopper, else the sm_80 PTX, JIT-compiled by the driver), and
//! a caching allocator so training does not call cuMemAlloc for every op. While profiling, each
//! launch is bracketed by CUDA events, timed when the trace is written.

use super::runtime::{DevicePtr, LaunchConfig, Runtime};
use crate::profile::{self, DeviceTiming};
use crate::{Device, Error, Result};
use cudarc::driver::{result, sys};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Kernels compiled by nvcc at build time (see build.rs).
pub struct KernelModule {
    pub name: &'static str,
    pub kernels: &'static [&'static str],
    pub ptx: &'static str,
    pub cubin_sm90a: &'static [u8],
    pub ptxas_report: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));

fn driver_err(what: &str, e: result::DriverError) -> Error {
    Error::Kernel {
        msg: format!("cuda: {what}: {e:?}"),
    }
}

struct CudaState {
    functions: HashMap<String, sys::CUfunction>,
    modules: HashMap<&'static str, sys::CUmodule>,
    /// Freed blocks by size, reused before asking the driver again.
    pool: HashMap<usize, Vec<DevicePtr>>,
}

pub struct CudaRuntime {
    ordinal: usize,
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    sm90: bool,
    state: Mutex<CudaState>,
    /// The current profile's reference event, alive while its timed launches are.
    profile_reference: Mutex<Weak<ReferenceEvent>>,
}

// SAFETY: the context and stream handles are used only after binding the context to the calling
// thread (`bind`), and all mutable state is behind the mutex.
unsafe impl Send for CudaRuntime {}
unsafe impl Sync for CudaRuntime {}

/// Rounds allocation sizes up so freed blocks are reusable by similar requests.
fn size_class(bytes: usize) -> usize {
    if bytes <= 1 << 20 {
        bytes.next_power_of_two().max(512)
    } else {
        bytes.div_ceil(1 << 20) << 20
    }
}

/// Number of CUDA GPUs usable here (0 without a driver or a device).
pub fn gpu_count() -> usize {
    // SAFETY: probing for the library has no preconditions.
    if !unsafe { sys::is_culib_present() } || result::init().is_err() {
        return 0;
    }
    result::device::get_count().map_or(0, |n| n.max(0) as usize)
}

impl CudaRuntime {
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: probing for the library has no preconditions.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::device(
                "cuda",
                "the CUDA driver library (libcuda) is not installed on this machine",
            ));
        }
        result::init().map_err(|e| driver_err("init", e))?;
        let count = result::device::get_count().map_err(|e| driver_err("device count", e))?;
        if ordinal >= count as usize {
            return Err(Error::device(
                "cuda",
                format!("cuda:{ordinal} requested but {count} GPU(s) present"),
            ));
        }
        let dev = result::device::get(ordinal as i32).map_err(|e| driver_err("device", e))?;
        // SAFETY: dev comes from device::get.
        let ctx = unsafe { result::primary_ctx::retain(dev) }.map_err(|e| driver_err("context", e))?;
        unsafe { result::ctx::set_current(ctx) }.map_err(|e| driver_err("context", e))?;
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking).map_err(|e| driver_err("stream", e))?;
        let major = unsafe { result::device::get_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) }
            .map_err(|e| driver_err("attribute", e))?;
        Ok(CudaRuntime {
            ordinal,
            ctx,
            stream,
            sm90: major == 9,
            state: Mutex::new(CudaState {
                functions: HashMap::new(),
                modules: HashMap::new(),
                pool: HashMap::new(),
            }),
            profile_reference: Mutex::new(Weak::new()),
        })
    }

    fn bind(&self) -> Result<()> {
        // SAFETY: ctx is a retained primary context that lives as long as self.
        unsafe { result::ctx::set_current(self.ctx) }.map_err(|e| driver_err("bind context", e))
    }

    fn function(&self, state: &mut CudaState, kernel: &str) -> Result<sys::CUfunction> {
        if let Some(&f) = state.functions.get(kernel) {
            return Ok(f);
        }
        let module = MODULES.iter().find(|m| m.kernels.contains(&kernel)).ok_or_else(|| Error::Kernel {
            msg: format!("cuda: no kernel named '{kernel}' (was the crate built with nvcc?)"),
        })?;
        let handle = match state.modules.get(module.name) {
            Some(&h) => h,
            None => {
                let h = if self.sm90 {
                    // SAFETY: the image is a complete cubin embedded at build time.
                    unsafe { result::module::load_data(module.cubin_sm90a.as_ptr() as *const c_void) }
                } else {
                    let ptx = CString::new(module.ptx).map_err(|_| Error::Kernel {
                        msg: format!("cuda: PTX of {} contains a NUL", module.name),
                    })?;
                    // SAFETY: a NUL-terminated PTX image.
                    unsafe { result::module::load_data(ptx.as_ptr() as *const c_void) }
                }
                .map_err(|e| driver_err(&format!("load module {}", module.name), e))?;
                state.modules.insert(module.name, h);
                h
            }
        };
        let name = CString::new(kernel).expect("kernel names have no NUL");
        // SAFETY: handle is a loaded module.
        let f = unsafe { result::module::get_function(handle, name) }.map_err(|e| driver_err(&format!("function {kernel}"), e))?;
        state.functions.insert(kernel.to_string(), f);
        Ok(f)
    }

    fn launch_function(&self, kernel: &str, f: sys::CUfunction, cfg: LaunchConfig, args: &mut [*mut c_void]) -> Result<()> {
        // SAFETY: args match the kernel's parameters (built to the signatures in kernels/*.cu).
        unsafe { result::launch_kernel(f, cfg.grid, cfg.block, cfg.shared_mem_bytes, self.stream, args) }
            .map_err(|e| driver_err(&format!("launch {kernel}"), e))
    }

    /// The event this profile's kernel times are measured from, recorded on an idle stream at a
    /// known profile time; made at the first launch of each profile.
    fn profile_reference(&self) -> Result<Arc<ReferenceEvent>> {
        let mut slot = self.profile_reference.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reference) = slot.upgrade() {
            return Ok(reference);
        }
        self.synchronize()?;
        let event = CudaEvent::new()?;
        event.record(self.stream)?;
        let reference = Arc::new(ReferenceEvent {
            event,
            at: profile::since_start(),
        });
        *slot = Arc::downgrade(&reference);
        Ok(reference)
    }
}

/// A CUDA event with timing enabled, destroyed when dropped.
struct CudaEvent(sys::CUevent);

// SAFETY: an event handle may be recorded, waited on, compared and destroyed from any thread.
unsafe impl Send for CudaEvent {}
unsafe impl Sync for CudaEvent {}

impl CudaEvent {
    fn new() -> Result<CudaEvent> {
        let event = result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).map_err(|e| driver_err("event", e))?;
        Ok(CudaEvent(event))
    }

    fn record(&self, stream: sys::CUstream) -> Result<()> {
        // SAFETY: the event is live and the stream belongs to the calling runtime.
        unsafe { result::event::record(self.0, stream) }.map_err(|e| driver_err("event record", e))
    }

    /// Milliseconds from this event to `later` (both recorded), waiting for `later` to complete.
    fn ms_until(&self, later: &CudaEvent) -> Result<f32> {
        // SAFETY: both events are live and have been recorded.
        unsafe {
            result::event::synchronize(later.0).map_err(|e| driver_err("event sync", e))?;
            result::event::elapsed(self.0, later.0).map_err(|e| driver_err("event elapsed", e))
        }
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        // SAFETY: the event was created by `new` and is destroyed once.
        unsafe { result::event::destroy(self.0) }.ok();
    }
}

/// The start of a profile's device timeline: an event and the profile time it was recorded at.
struct ReferenceEvent {
    event: CudaEvent,
    at: Duration,
}

/// A profiled launch: events recorded on the stream just before and after the kernel.
struct TimedLaunch {
    ctx: sys::CUcontext,
    reference: Arc<ReferenceEvent>,
    start: CudaEvent,
    stop: CudaEvent,
}

// SAFETY: the context handle is only made current (cuCtxSetCurrent), which any thread may do.
unsafe impl Send for TimedLaunch {}

impl DeviceTiming for TimedLaunch {
    fn resolve(&self) -> Result<(Duration, Duration)> {
        // SAFETY: the context is a retained primary context that lives as long as the process.
        unsafe { result::ctx::set_current(self.ctx) }.map_err(|e| driver_err("bind context", e))?;
        let ms = |ms: f32| Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3);
        let offset = self.reference.event.ms_until(&self.start)?;
        let duration = self.start.ms_until(&self.stop)?;
        Ok((self.reference.at + ms(offset), ms(duration)))
    }
}

impl Runtime for CudaRuntime {
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        let class = size_class(bytes);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = state.pool.get_mut(&class).and_then(|v| v.pop()) {
            return Ok(p);
        }
        self.bind()?;
        // SAFETY: plain allocation.
        match unsafe { result::malloc_sync(class) } {
            Ok(p) => Ok(p),
            Err(_) => {
                // Out of memory: give the cached blocks back and try once more.
                for (_, ptrs) in state.pool.drain() {
                    for p in ptrs {
                        unsafe { result::free_sync(p) }.ok();
                    }
                }
                unsafe { result::malloc_sync(class) }.map_err(|e| driver_err(&format!("allocate {bytes} bytes"), e))
            }
        }
    }

    fn free(&self, ptr: DevicePtr, bytes: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pool.entry(size_class(bytes)).or_default().push(ptr);
    }

    fn upload(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        self.bind()?;
        self.synchronize()?;
        // SAFETY: dst is an allocation of at least src.len() bytes.
        unsafe { result::memcpy_htod_sync(dst, src) }.map_err(|e| driver_err("copy to device", e))
    }

    fn download(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        self.bind()?;
        self.synchronize()?;
        // SAFETY: src is an allocation of at least dst.len() bytes.
        unsafe { result::memcpy_dtoh_sync(dst, src) }.map_err(|e| driver_err("copy to host", e))
    }

    fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &mut [*mut c_void]) -> Result<()> {
        self.bind()?;
        let f = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            self.function(&mut state, kernel)?
        };
        if cfg.shared_mem_bytes > 48 * 1024 {
            let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
            // SAFETY: f is a loaded function.
            unsafe { result::function::set_function_attribute(f, attr, cfg.shared_mem_bytes as i32) }
                .map_err(|e| driver_err(&format!("{kernel}: shared memory"), e))?;
        }
        if !profile::is_enabled() {
            return self.launch_function(kernel, f, cfg, args);
        }
        let reference = self.profile_reference()?;
        let (start, stop) = (CudaEvent::new()?, CudaEvent::new()?);
        start.record(self.stream)?;
        self.launch_function(kernel, f, cfg, args)?;
        stop.record(self.stream)?;
        let timing = TimedLaunch {
            ctx: self.ctx,
            reference,
            start,
            stop,
        };
        profile::device_kernel(kernel, cfg, self.device(), Box::new(timing));
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        // SAFETY: the stream belongs to this runtime.
        unsafe { result::stream::synchronize(self.stream) }.map_err(|e| driver_err("synchronize", e))
    }

    /// CUDA events recorded on the stream around `work`.
    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.bind()?;
        let (start, stop) = (CudaEvent::new()?, CudaEvent::new()?);
        start.record(self.stream)?;
        work()?;
        stop.record(self.stream)?;
        Ok(f64::from(start.ms_until(&stop)?))
    }
}
