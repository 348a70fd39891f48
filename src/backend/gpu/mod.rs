//! The GPU backend: every op of [`BackendStorage`] written once, choosing kernels, grid and block
//! sizes and arguments, over a [`Runtime`] that is either a real GPU (cudarc) or the CPU emulator
//! of the same kernels. One file per op family, mirroring kernels/*.cu and src/backend/cpu/.
//! GPU tensors are f32, f16, bf16, i64 or u32 (f64 stays on the CPU).

mod adamw;
mod attention;
mod copy;
pub mod cuda;
mod denoise;
mod elementwise;
pub mod emu;
mod gemm;
mod index;
mod layernorm;
mod reduce;
pub mod runtime;
mod softmax;

use super::{
    AdamWStep, AttentionParams, Backend, BackendStorage, BinaryOp, CmpOp, CpuStorage, DenoiseParams, Derived, ReduceOp, Storage, UnaryOp,
};
use crate::{DType, Device, Error, Layout, Result};
use runtime::{Args, DeviceBuffer, DevicePtr, LaunchConfig, Runtime};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub struct GpuBackend {
    runtime: Arc<dyn Runtime>,
}

/// The backend of `device` (Emu, or Cuda(n) when a GPU is present), created on first use.
pub fn backend(device: Device) -> Result<&'static GpuBackend> {
    static BACKENDS: OnceLock<Mutex<HashMap<Device, &'static GpuBackend>>> = OnceLock::new();
    let mut map = BACKENDS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = map.get(&device) {
        return Ok(b);
    }
    let runtime: Arc<dyn Runtime> = match device {
        Device::Emu => Arc::new(EmuHandle),
        Device::Cuda(n) => Arc::new(cuda::CudaRuntime::new(n)?),
        Device::Cpu => return Err(Error::device("gpu backend", "the CPU is not a GPU device")),
    };
    // Backends live for the whole process, like the devices they stand for.
    let b: &'static GpuBackend = Box::leak(Box::new(GpuBackend { runtime }));
    map.insert(device, b);
    Ok(b)
}

impl GpuBackend {
    /// Milliseconds `work` takes on this device (CUDA events on a GPU).
    pub fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.runtime.time_ms(work)
    }
}

/// The process-wide emulator, as an owned runtime handle.
struct EmuHandle;

impl Runtime for EmuHandle {
    fn device(&self) -> Device {
        Device::Emu
    }
    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        emu::EmuRuntime::get().alloc(bytes)
    }
    fn free(&self, ptr: DevicePtr, bytes: usize) {
        emu::EmuRuntime::get().free(ptr, bytes)
    }
    fn upload(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        emu::EmuRuntime::get().upload(dst, src)
    }
    fn download(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        emu::EmuRuntime::get().download(src, dst)
    }
    fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &mut [*mut std::ffi::c_void]) -> Result<()> {
        emu::EmuRuntime::get().launch(kernel, cfg, args)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

impl Backend for GpuBackend {
    fn device(&self) -> Device {
        self.runtime.device()
    }
    fn zeros(&self, len: usize, dtype: DType) -> Result<Storage> {
        let s = GpuStorage::alloc(&self.runtime, len, dtype)?;
        s.fill(0.0)?;
        Ok(Box::new(s))
    }
    fn upload(&self, data: CpuStorage) -> Result<Storage> {
        suffix(data.dtype(), "upload")?;
        let s = GpuStorage::alloc(&self.runtime, data.len(), data.dtype())?;
        self.runtime.upload(s.ptr(), data.as_bytes())?;
        Ok(Box::new(s))
    }
    fn synchronize(&self) -> Result<()> {
        self.runtime.synchronize()
    }
}

/// The kernel-name suffix of a dtype.
pub(crate) fn suffix(dtype: DType, op: &'static str) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        DType::I64 => Ok("i64"),
        DType::U32 => Ok("u32"),
        DType::F64 => Err(Error::dtype(
            op,
            "f64 tensors live on the CPU only (use f32, f16 or bf16 on GPU devices)",
        )),
    }
}

pub(crate) fn float_suffix(dtype: DType, op: &'static str) -> Result<&'static str> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => suffix(dtype, op),
        other => Err(Error::dtype(op, format!("needs a float tensor, got {other}"))),
    }
}

#[derive(Clone)]
pub struct GpuStorage {
    buf: Arc<DeviceBuffer>,
    len: usize,
    dtype: DType,
}

impl std::fmt::Debug for GpuStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuStorage({} x {} on {})", self.len, self.dtype, self.runtime().device())
    }
}

impl GpuStorage {
    pub(crate) fn alloc(runtime: &Arc<dyn Runtime>, len: usize, dtype: DType) -> Result<GpuStorage> {
        let buf = DeviceBuffer::new(runtime.clone(), len * dtype.size_in_bytes())?;
        Ok(GpuStorage {
            buf: Arc::new(buf),
            len,
            dtype,
        })
    }

    pub(crate) fn runtime(&self) -> &Arc<dyn Runtime> {
        self.buf.runtime()
    }

    /// A new storage on the same device.
    pub(crate) fn new_like(&self, len: usize, dtype: DType) -> Result<GpuStorage> {
        GpuStorage::alloc(self.runtime(), len, dtype)
    }

    pub(crate) fn ptr(&self) -> DevicePtr {
        self.buf.ptr()
    }

    /// The address of element `offset`.
    pub(crate) fn ptr_at(&self, offset: usize) -> DevicePtr {
        self.ptr() + (offset * self.dtype.size_in_bytes()) as u64
    }

    pub(crate) fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &mut Args) -> Result<()> {
        self.runtime().launch(kernel, cfg, &mut args.pointers())
    }

    /// Address of the view's elements in row-major order, copying only if the view is not
    /// contiguous (the copy, if any, is returned to be kept alive).
    pub(crate) fn contiguous_ptr(&self, layout: &Layout) -> Result<(DevicePtr, Option<GpuStorage>)> {
        if let Some((start, _)) = layout.contiguous_range() {
            return Ok((self.ptr_at(start), None));
        }
        let copy = self.copy_strided_gpu(layout)?;
        Ok((copy.ptr(), Some(copy)))
    }
}

fn gpu<'a>(s: &'a dyn BackendStorage, op: &'static str) -> Result<&'a GpuStorage> {
    super::expect_storage::<GpuStorage>(s, op)
}

fn boxed(s: GpuStorage) -> Storage {
    Box::new(s)
}

impl BackendStorage for GpuStorage {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn device(&self) -> Device {
        self.runtime().device()
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn len(&self) -> usize {
        self.len
    }
    fn to_cpu(&self, layout: &Layout) -> Result<CpuStorage> {
        self.download(layout)
    }
    fn copy_strided(&self, layout: &Layout) -> Result<Storage> {
        self.copy_strided_gpu(layout).map(boxed)
    }
    fn copy_into(&self, src_layout: &Layout, dst: &mut dyn BackendStorage, dst_layout: &Layout) -> Result<()> {
        let dst = super::expect_storage_mut::<GpuStorage>(dst, "copy_into")?;
        self.copy_into_gpu(src_layout, dst, dst_layout)
    }
    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Storage> {
        self.cast_gpu(layout, dtype).map(boxed)
    }
    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Storage> {
        self.unary_gpu(layout, op).map(boxed)
    }
    fn unary_backward(&self, layout: &Layout, grad: &dyn BackendStorage, grad_layout: &Layout, op: UnaryOp) -> Result<Storage> {
        self.unary_backward_gpu(layout, gpu(grad, "unary_backward")?, grad_layout, op)
            .map(boxed)
    }
    fn binary(&self, layout: &Layout, rhs: &dyn BackendStorage, rhs_layout: &Layout, op: BinaryOp) -> Result<Storage> {
        self.binary_gpu(layout, gpu(rhs, "binary")?, rhs_layout, op).map(boxed)
    }
    fn cmp(&self, layout: &Layout, rhs: &dyn BackendStorage, rhs_layout: &Layout, op: CmpOp) -> Result<Storage> {
        self.cmp_gpu(layout, gpu(rhs, "cmp")?, rhs_layout, op).map(boxed)
    }
    fn where_cond(
        &self,
        layout: &Layout,
        on_true: (&dyn BackendStorage, &Layout),
        on_false: (&dyn BackendStorage, &Layout),
    ) -> Result<Storage> {
        self.where_gpu(
            layout,
            (gpu(on_true.0, "where")?, on_true.1),
            (gpu(on_false.0, "where")?, on_false.1),
        )
        .map(boxed)
    }
    fn reduce(&self, layout: &Layout, op: ReduceOp, axis: usize) -> Result<Storage> {
        self.reduce_gpu(layout, op, axis).map(boxed)
    }
    fn matmul(&self, layout: &Layout, rhs: &dyn BackendStorage, rhs_layout: &Layout, _rhs_derived: Option<&Derived>) -> Result<Storage> {
        self.matmul_gpu(layout, gpu(rhs, "matmul")?, rhs_layout).map(boxed)
    }
    fn softmax(&self, layout: &Layout, log: bool) -> Result<Storage> {
        self.softmax_gpu(layout, log).map(boxed)
    }
    fn softmax_backward(&self, y_layout: &Layout, grad: &dyn BackendStorage, grad_layout: &Layout, log: bool) -> Result<Storage> {
        self.softmax_backward_gpu(y_layout, gpu(grad, "softmax_backward")?, grad_layout, log)
            .map(boxed)
    }
    fn layer_norm(
        &self,
        layout: &Layout,
        gamma: &dyn BackendStorage,
        beta: &dyn BackendStorage,
        eps: f64,
    ) -> Result<(Storage, Storage, Storage)> {
        let (y, m, r) = self.layer_norm_gpu(layout, gpu(gamma, "layer_norm")?, gpu(beta, "layer_norm")?, eps)?;
        Ok((boxed(y), boxed(m), boxed(r)))
    }
    fn layer_norm_backward(
        &self,
        layout: &Layout,
        gamma: &dyn BackendStorage,
        mean: &dyn BackendStorage,
        rstd: &dyn BackendStorage,
        grad: &dyn BackendStorage,
        grad_layout: &Layout,
    ) -> Result<(Storage, Storage, Storage)> {
        let op = "layer_norm_backward";
        let (dx, dg, db) =
            self.layer_norm_backward_gpu(layout, gpu(gamma, op)?, gpu(mean, op)?, gpu(rstd, op)?, gpu(grad, op)?, grad_layout)?;
        Ok((boxed(dx), boxed(dg), boxed(db)))
    }
    fn softmax_xent(
        &self,
        layout: &Layout,
        targets: &dyn BackendStorage,
        targets_layout: &Layout,
        ignore_index: i64,
    ) -> Result<(Storage, Storage)> {
        let (loss, lse) = self.xent_gpu(layout, gpu(targets, "softmax_xent")?, targets_layout, ignore_index)?;
        Ok((boxed(loss), boxed(lse)))
    }
    fn softmax_xent_backward(
        &self,
        layout: &Layout,
        targets: &dyn BackendStorage,
        targets_layout: &Layout,
        lse: &dyn BackendStorage,
        grad: &dyn BackendStorage,
        grad_layout: &Layout,
        ignore_index: i64,
    ) -> Result<Storage> {
        let op = "softmax_xent_backward";
        self.xent_backward_gpu(
            layout,
            gpu(targets, op)?,
            targets_layout,
            gpu(lse, op)?,
            gpu(grad, op)?,
            grad_layout,
            ignore_index,
        )
        .map(boxed)
    }
    fn attention(
        &self,
        q_layout: &Layout,
        k: (&dyn BackendStorage, &Layout),
        v: (&dyn BackendStorage, &Layout),
        key_mask: Option<(&dyn BackendStorage, &Layout)>,
        params: AttentionParams,
    ) -> Result<(Storage, Storage)> {
        let op = "attention";
        let mask = super::expect_operand::<GpuStorage>(key_mask, op)?;
        let (o, lse) = self.attention_gpu(q_layout, (gpu(k.0, op)?, k.1), (gpu(v.0, op)?, v.1), mask, params)?;
        Ok((boxed(o), boxed(lse)))
    }
    fn attention_backward(
        &self,
        q_layout: &Layout,
        k: (&dyn BackendStorage, &Layout),
        v: (&dyn BackendStorage, &Layout),
        key_mask: Option<(&dyn BackendStorage, &Layout)>,
        out: (&dyn BackendStorage, &Layout),
        lse: &dyn BackendStorage,
        grad: (&dyn BackendStorage, &Layout),
        params: AttentionParams,
    ) -> Result<(Storage, Storage, Storage)> {
        let op = "attention_backward";
        let mask = super::expect_operand::<GpuStorage>(key_mask, op)?;
        let (dq, dk, dv) = self.attention_backward_gpu(
            q_layout,
            (gpu(k.0, op)?, k.1),
            (gpu(v.0, op)?, v.1),
            mask,
            (gpu(out.0, op)?, out.1),
            gpu(lse, op)?,
            (gpu(grad.0, op)?, grad.1),
            params,
        )?;
        Ok((boxed(dq), boxed(dk), boxed(dv)))
    }
    fn index_select(&self, layout: &Layout, ids: &dyn BackendStorage, ids_layout: &Layout, dim: usize) -> Result<Storage> {
        self.index_select_gpu(layout, gpu(ids, "index_select")?, ids_layout, dim).map(boxed)
    }
    fn index_add(&self, layout: &Layout, ids: &dyn BackendStorage, ids_layout: &Layout, dim: usize, dim_size: usize) -> Result<Storage> {
        self.index_add_gpu(layout, gpu(ids, "index_add")?, ids_layout, dim, dim_size)
            .map(boxed)
    }
    fn denoise_step(
        &self,
        layout: &Layout,
        cond: (&dyn BackendStorage, &Layout),
        uncond: Option<(&dyn BackendStorage, &Layout)>,
        noise: Option<(&dyn BackendStorage, &Layout)>,
        params: &DenoiseParams,
    ) -> Result<Storage> {
        let op = "denoise_step";
        let u = super::expect_operand::<GpuStorage>(uncond, op)?;
        let z = super::expect_operand::<GpuStorage>(noise, op)?;
        self.denoise_gpu(layout, (gpu(cond.0, op)?, cond.1), u, z, params).map(boxed)
    }
    fn adamw_step(
        &mut self,
        grad: &dyn BackendStorage,
        grad_layout: &Layout,
        m: &mut dyn BackendStorage,
        v: &mut dyn BackendStorage,
        step: &AdamWStep,
    ) -> Result<()> {
        let op = "adamw";
        let grad = gpu(grad, op)?;
        let m = super::expect_storage_mut::<GpuStorage>(m, op)?;
        let v = super::expect_storage_mut::<GpuStorage>(v, op)?;
        self.adamw_gpu(grad, grad_layout, m, v, step)
    }
}
