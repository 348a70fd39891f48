//! The CPU backend: host memory as typed vectors, ops as multi-threaded loops (rayon). One file
//! per op family, mirroring kernels/*.cu and the GPU backend.

mod adamw;
mod alloc;
mod attention;
mod copy;
mod denoise;
mod elementwise;
pub mod float;
pub mod gemm;
pub mod gemm_bf16;
mod index;
mod layernorm;
pub mod packed_weights;
mod reduce;
pub mod simd;
mod softmax;
pub mod stream;
pub mod threads;
mod vmath;

use super::{AdamWStep, AttentionParams, Backend, BackendStorage, BinaryOp, CmpOp, DenoiseParams, Derived, ReduceOp, Storage, UnaryOp};
use crate::{DType, Device, Error, Layout, Result, WithDType};
use half::{bf16, f16};
use std::any::Any;

pub use alloc::{keep_freed_buffers, LineAlignedAlloc};

pub struct CpuBackend;

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn zeros(&self, len: usize, dtype: DType) -> Result<Storage> {
        Ok(Box::new(CpuStorage::zeros(len, dtype)))
    }
    fn upload(&self, data: CpuStorage) -> Result<Storage> {
        Ok(Box::new(data))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    U32(Vec<u32>),
}

/// Applies one expression to the vector inside any variant.
macro_rules! map_storage {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CpuStorage::F32($v) => CpuStorage::F32($body),
            CpuStorage::F64($v) => CpuStorage::F64($body),
            CpuStorage::F16($v) => CpuStorage::F16($body),
            CpuStorage::BF16($v) => CpuStorage::BF16($body),
            CpuStorage::I64($v) => CpuStorage::I64($body),
            CpuStorage::U32($v) => CpuStorage::U32($body),
        }
    };
}
pub(crate) use map_storage;

impl CpuStorage {
    pub fn zeros(len: usize, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; len]),
            DType::F64 => CpuStorage::F64(vec![0.0; len]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; len]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; len]),
            DType::I64 => CpuStorage::I64(vec![0; len]),
            DType::U32 => CpuStorage::U32(vec![0; len]),
        }
    }

    pub fn from_vec<T: WithDType>(v: Vec<T>) -> CpuStorage {
        let any: Box<dyn Any> = Box::new(v);
        // The dtype constant is tied to the type, so exactly one downcast succeeds.
        match T::DTYPE {
            DType::F32 => CpuStorage::F32(*any.downcast().expect("f32")),
            DType::F64 => CpuStorage::F64(*any.downcast().expect("f64")),
            DType::F16 => CpuStorage::F16(*any.downcast().expect("f16")),
            DType::BF16 => CpuStorage::BF16(*any.downcast().expect("bf16")),
            DType::I64 => CpuStorage::I64(*any.downcast().expect("i64")),
            DType::U32 => CpuStorage::U32(*any.downcast().expect("u32")),
        }
    }

    pub fn from_f64(values: &[f64], dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(values.iter().map(|&x| x as f32).collect()),
            DType::F64 => CpuStorage::F64(values.to_vec()),
            DType::F16 => CpuStorage::F16(values.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::BF16 => CpuStorage::BF16(values.iter().map(|&x| bf16::from_f64(x)).collect()),
            DType::I64 => CpuStorage::I64(values.iter().map(|&x| x as i64).collect()),
            DType::U32 => CpuStorage::U32(values.iter().map(|&x| x as u32).collect()),
        }
    }

    pub fn into_vec<T: WithDType>(self) -> Result<Vec<T>> {
        if self.dtype() != T::DTYPE {
            return Err(Error::dtype(
                "to_vec",
                format!("tensor is {}, asked for {}", self.dtype(), T::DTYPE),
            ));
        }
        let any: Box<dyn Any> = match self {
            CpuStorage::F32(v) => Box::new(v),
            CpuStorage::F64(v) => Box::new(v),
            CpuStorage::F16(v) => Box::new(v),
            CpuStorage::BF16(v) => Box::new(v),
            CpuStorage::I64(v) => Box::new(v),
            CpuStorage::U32(v) => Box::new(v),
        };
        Ok(*any.downcast::<Vec<T>>().expect("dtype checked above"))
    }

    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            CpuStorage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v.clone(),
            CpuStorage::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuStorage::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuStorage::I64(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::U32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::U32(_) => DType::U32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same values in another dtype.
    pub fn to_dtype(&self, dtype: DType) -> CpuStorage {
        copy::cast(self, dtype)
    }

    /// The raw little-endian bytes (for writing files).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::F64(v) => bytemuck::cast_slice(v),
            CpuStorage::F16(v) => bytemuck::cast_slice(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice(v),
            CpuStorage::I64(v) => bytemuck::cast_slice(v),
            CpuStorage::U32(v) => bytemuck::cast_slice(v),
        }
    }

    /// Integer ids of a view as indices below `bound`, with an error naming the op otherwise.
    pub fn indices(&self, layout: &Layout, bound: usize, op: &'static str) -> Result<Vec<usize>> {
        let check = |i: i64| -> Result<usize> {
            if i < 0 || i as usize >= bound {
                Err(Error::index(op, format!("index {i} out of range for size {bound}")))
            } else {
                Ok(i as usize)
            }
        };
        match self {
            CpuStorage::I64(v) => layout.offsets().map(|o| check(v[o])).collect(),
            CpuStorage::U32(v) => layout.offsets().map(|o| check(v[o] as i64)).collect(),
            other => Err(Error::dtype(op, format!("indices must be i64 or u32, got {}", other.dtype()))),
        }
    }
}

/// The whole number in environment variable `name`, or `default` when it is unset or empty;
/// anything else is an error naming the variable and what it counts (`expected`).
fn env_whole_number(name: &str, default: u64, expected: &str) -> Result<u64> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) if v.is_empty() => Ok(default),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| Error::msg(format!("{name}={v:?}: expected a whole number of {expected}"))),
    }
}

fn cpu<'a>(s: &'a dyn BackendStorage, op: &'static str) -> Result<&'a CpuStorage> {
    super::expect_storage::<CpuStorage>(s, op)
}

/// An op's result as a backend storage; every CPU op's output passes here, so it is also where
/// ops are counted for keeping the thread pool awake (threads.rs).
fn boxed(s: CpuStorage) -> Storage {
    threads::op_finished();
    Box::new(s)
}

impl BackendStorage for CpuStorage {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn dtype(&self) -> DType {
        CpuStorage::dtype(self)
    }
    fn len(&self) -> usize {
        CpuStorage::len(self)
    }

    fn to_cpu(&self, layout: &Layout) -> Result<CpuStorage> {
        Ok(self.gather(layout))
    }
    fn copy_strided(&self, layout: &Layout) -> Result<Storage> {
        Ok(boxed(self.gather(layout)))
    }
    fn copy_into(&self, src_layout: &Layout, dst: &mut dyn BackendStorage, dst_layout: &Layout) -> Result<()> {
        let dst = super::expect_storage_mut::<CpuStorage>(dst, "copy_into")?;
        copy::scatter(self, src_layout, dst, dst_layout)
    }
    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Storage> {
        Ok(boxed(copy::cast(&self.gather(layout), dtype)))
    }

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Storage> {
        elementwise::unary(self, layout, op).map(boxed)
    }
    fn unary_backward(&self, layout: &Layout, grad: &dyn BackendStorage, grad_layout: &Layout, op: UnaryOp) -> Result<Storage> {
        elementwise::unary_backward(self, layout, cpu(grad, "unary_backward")?, grad_layout, op).map(boxed)
    }
    fn binary(&self, layout: &Layout, rhs: &dyn BackendStorage, rhs_layout: &Layout, op: BinaryOp) -> Result<Storage> {
        elementwise::binary(self, layout, cpu(rhs, "binary")?, rhs_layout, op).map(boxed)
    }
    fn cmp(&self, layout: &Layout, rhs: &dyn BackendStorage, rhs_layout: &Layout, op: CmpOp) -> Result<Storage> {
        elementwise::cmp(self, layout, cpu(rhs, "cmp")?, rhs_layout, op).map(boxed)
    }
    fn where_cond(
        &self,
        layout: &Layout,
        on_true: (&dyn BackendStorage, &Layout),
        on_false: (&dyn BackendStorage, &Layout),
    ) -> Result<Storage> {
        let t = (cpu(on_true.0, "where")?, on_true.1);
        let f = (cpu(on_false.0, "where")?, on_false.1);
        elementwise::where_cond(self, layout, t, f).map(boxed)
    }
    fn reduce(&self, layout: &Layout, op: ReduceOp, axis: usize) -> Result<Storage> {
        reduce::reduce(self, layout, op, axis).map(boxed)
    }
    fn matmul(&self, layout: &Layout, rhs: &dyn BackendStorage, rhs_layout: &Layout, rhs_derived: Option<&Derived>) -> Result<Storage> {
        gemm::matmul(self, layout, (cpu(rhs, "matmul")?, rhs_layout, rhs_derived)).map(boxed)
    }
    fn matmul_bias(
        &self,
        layout: &Layout,
        rhs: &dyn BackendStorage,
        rhs_layout: &Layout,
        rhs_derived: Option<&Derived>,
        bias: &dyn BackendStorage,
        bias_layout: &Layout,
    ) -> Result<Storage> {
        let b = (cpu(rhs, "matmul_bias")?, rhs_layout, rhs_derived);
        match gemm::matmul_bias(self, layout, b, cpu(bias, "matmul_bias")?, bias_layout)? {
            Some(out) => Ok(boxed(out)),
            None => super::add_bias(&*self.matmul(layout, rhs, rhs_layout, rhs_derived)?, bias, bias_layout),
        }
    }
    fn softmax(&self, layout: &Layout, log: bool) -> Result<Storage> {
        softmax::softmax(self, layout, log).map(boxed)
    }
    fn softmax_backward(&self, y_layout: &Layout, grad: &dyn BackendStorage, grad_layout: &Layout, log: bool) -> Result<Storage> {
        softmax::softmax_backward(self, y_layout, cpu(grad, "softmax_backward")?, grad_layout, log).map(boxed)
    }
    fn layer_norm(
        &self,
        layout: &Layout,
        gamma: &dyn BackendStorage,
        beta: &dyn BackendStorage,
        eps: f64,
    ) -> Result<(Storage, Storage, Storage)> {
        let (y, mean, rstd) = layernorm::forward(self, layout, cpu(gamma, "layer_norm")?, cpu(beta, "layer_norm")?, eps)?;
        Ok((boxed(y), boxed(mean), boxed(rstd)))
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
        let (dx, dg, db) = layernorm::backward(
            self,
            layout,
            cpu(gamma, op)?,
            cpu(mean, op)?,
            cpu(rstd, op)?,
            cpu(grad, op)?,
            grad_layout,
        )?;
        Ok((boxed(dx), boxed(dg), boxed(db)))
    }
    fn softmax_xent(
        &self,
        layout: &Layout,
        targets: &dyn BackendStorage,
        targets_layout: &Layout,
        ignore_index: i64,
    ) -> Result<(Storage, Storage)> {
        let (loss, lse) = softmax::xent_forward(self, layout, cpu(targets, "softmax_xent")?, targets_layout, ignore_index)?;
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
        softmax::xent_backward(
            self,
            layout,
            cpu(targets, op)?,
            targets_layout,
            cpu(lse, op)?,
            cpu(grad, op)?,
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
        let mask = super::expect_operand::<CpuStorage>(key_mask, op)?;
        let (out, lse) = attention::forward((self, q_layout), (cpu(k.0, op)?, k.1), (cpu(v.0, op)?, v.1), mask, params)?;
        Ok((boxed(out), boxed(lse)))
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
        let mask = super::expect_operand::<CpuStorage>(key_mask, op)?;
        let (dq, dk, dv) = attention::backward(
            (self, q_layout),
            (cpu(k.0, op)?, k.1),
            (cpu(v.0, op)?, v.1),
            mask,
            (cpu(out.0, op)?, out.1),
            cpu(lse, op)?,
            (cpu(grad.0, op)?, grad.1),
            params,
        )?;
        Ok((boxed(dq), boxed(dk), boxed(dv)))
    }
    fn index_select(&self, layout: &Layout, ids: &dyn BackendStorage, ids_layout: &Layout, dim: usize) -> Result<Storage> {
        index::index_select(self, layout, cpu(ids, "index_select")?, ids_layout, dim).map(boxed)
    }
    fn index_add(&self, layout: &Layout, ids: &dyn BackendStorage, ids_layout: &Layout, dim: usize, dim_size: usize) -> Result<Storage> {
        index::index_add(self, layout, cpu(ids, "index_add")?, ids_layout, dim, dim_size).map(boxed)
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
        let u = super::expect_operand::<CpuStorage>(uncond, op)?;
        let z = super::expect_operand::<CpuStorage>(noise, op)?;
        denoise::step(self, layout, (cpu(cond.0, op)?, cond.1), u, z, params).map(boxed)
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
        let grad = cpu(grad, op)?;
        let m = super::expect_storage_mut::<CpuStorage>(m, op)?;
        let v = super::expect_storage_mut::<CpuStorage>(v, op)?;
        let done = adamw::step(self, grad, grad_layout, m, v, step);
        threads::op_finished();
        done
    }
}
