//! The tensor: a shared, immutable handle to (storage, layout, dtype) plus, when it takes part in
//! autograd, the node that records how it was made. Views share storage; ops make new tensors.
//! Only optimisers write into storage in place (through [`Tensor::update_in_place`]).

use crate::autograd::{self, Node};
use crate::backend::{self, BackendStorage, CpuStorage, Derived, Storage};
use crate::{profile, DType, Device, Error, Layout, Result, Rng, WithDType};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

/// One storage, shared by every view of it, with what backends derived from it.
struct SharedStorage {
    data: RwLock<Storage>,
    derived: Derived,
}

pub(crate) struct TensorInner {
    id: TensorId,
    storage: Arc<SharedStorage>,
    layout: Layout,
    dtype: DType,
    device: Device,
    node: Option<Node>,
    is_var: bool,
}

#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {}, {}]", self.dims(), self.dtype(), self.device())
    }
}

impl Tensor {
    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        let (dtype, device) = (storage.dtype(), storage.device());
        Tensor(Arc::new(TensorInner {
            id: TensorId::next(),
            storage: Arc::new(SharedStorage {
                data: RwLock::new(storage),
                derived: Derived::default(),
            }),
            layout: Layout::contiguous(shape),
            dtype,
            device,
            node: None,
            is_var: false,
        }))
    }

    /// A view of the same storage with another layout (no autograd record; see ops/view.rs).
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: TensorId::next(),
            storage: self.0.storage.clone(),
            layout,
            dtype: self.0.dtype,
            device: self.0.device,
            node: None,
            is_var: false,
        }))
    }

    /// Attaches an autograd node when gradients are enabled and an input needs them.
    pub(crate) fn record(self, op: &'static str, inputs: &[&Tensor], backward: impl autograd::BackwardFn) -> Tensor {
        if !autograd::is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return self;
        }
        let node = Node::new(op, inputs.iter().map(|&t| t.clone()).collect(), Box::new(backward));
        let inner = &self.0;
        Tensor(Arc::new(TensorInner {
            id: inner.id,
            storage: inner.storage.clone(),
            layout: inner.layout.clone(),
            dtype: inner.dtype,
            device: inner.device,
            node: Some(node),
            is_var: false,
        }))
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn dims(&self) -> &[usize] {
        self.0.layout.shape()
    }
    pub fn rank(&self) -> usize {
        self.dims().len()
    }
    pub fn elem_count(&self) -> usize {
        self.0.layout.elem_count()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> Device {
        self.0.device
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    pub(crate) fn node(&self) -> Option<&Node> {
        self.0.node.as_ref()
    }
    pub fn is_var(&self) -> bool {
        self.0.is_var
    }
    /// True for variables and for results of ops recorded for autograd.
    pub fn requires_grad(&self) -> bool {
        self.0.is_var || self.0.node.is_some()
    }

    /// Size of `dim`, with a clear error when the tensor has fewer dims.
    pub fn dim(&self, dim: usize) -> Result<usize> {
        self.dims()
            .get(dim)
            .copied()
            .ok_or_else(|| Error::shape("dim", format!("dim {dim} out of range for shape {:?}", self.dims())))
    }

    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The storage for writing; what backends derived from it is dropped first (under the lock).
    pub(crate) fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        let guard = self.0.storage.data.write().unwrap_or_else(|e| e.into_inner());
        self.0.storage.derived.clear();
        guard
    }

    /// Where a backend may keep a prepared form of this tensor's storage, given only while the
    /// tensor is a constant operand: no gradient can flow to it now.
    pub(crate) fn constant_derived(&self) -> Option<&Derived> {
        (!autograd::is_grad_enabled() || !self.requires_grad()).then_some(&self.0.storage.derived)
    }

    pub(crate) fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    // ---- creation ----

    pub fn from_cpu_storage(data: CpuStorage, shape: &[usize], device: Device) -> Result<Tensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::shape(
                "from_vec",
                format!("{} elements do not fill shape {shape:?}", data.len()),
            ));
        }
        let _profile = profile::upload(shape, data.dtype(), device);
        let storage = backend::for_device(device)?.upload(data)?;
        Ok(Tensor::from_storage(storage, shape))
    }

    pub fn from_vec<T: WithDType>(data: Vec<T>, shape: &[usize], device: Device) -> Result<Tensor> {
        Tensor::from_cpu_storage(CpuStorage::from_vec(data), shape, device)
    }

    pub fn from_slice<T: WithDType>(data: &[T], shape: &[usize], device: Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    pub fn scalar<T: WithDType>(v: T, device: Device) -> Result<Tensor> {
        Tensor::from_vec(vec![v], &[], device)
    }

    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let storage = backend::for_device(device)?.zeros(shape.iter().product(), dtype)?;
        Ok(Tensor::from_storage(storage, shape))
    }

    pub fn full(value: f64, shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let n = shape.iter().product();
        Tensor::from_cpu_storage(CpuStorage::from_f64(&vec![value; n], dtype), shape, device)
    }

    pub fn ones(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype, device)
    }

    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.dims(), self.dtype(), self.device())
    }

    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.dims(), self.dtype(), self.device())
    }

    /// [start, start+step, ...) below `end`.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType, device: Device) -> Result<Tensor> {
        if step == 0.0 || !(start.is_finite() && end.is_finite() && step.is_finite()) {
            return Err(Error::shape("arange", format!("invalid range {start}..{end} step {step}")));
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let values: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Tensor::from_cpu_storage(CpuStorage::from_f64(&values, dtype), &[n], device)
    }

    /// Normal(mean, std) samples drawn from `rng` on the host.
    pub fn randn(rng: &mut Rng, shape: &[usize], mean: f64, std: f64, dtype: DType, device: Device) -> Result<Tensor> {
        let values: Vec<f64> = (0..shape.iter().product()).map(|_| mean + std * rng.normal()).collect();
        Tensor::from_cpu_storage(CpuStorage::from_f64(&values, dtype), shape, device)
    }

    /// Uniform samples in [lo, hi) drawn from `rng` on the host.
    pub fn rand_uniform(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64, dtype: DType, device: Device) -> Result<Tensor> {
        let values: Vec<f64> = (0..shape.iter().product()).map(|_| lo + (hi - lo) * rng.uniform()).collect();
        Tensor::from_cpu_storage(CpuStorage::from_f64(&values, dtype), shape, device)
    }

    // ---- autograd identity ----

    /// A leaf that autograd computes gradients for (a parameter).
    pub fn to_var(&self) -> Result<Tensor> {
        let t = self.contiguous_copy()?;
        let inner = &t.0;
        Ok(Tensor(Arc::new(TensorInner {
            id: TensorId::next(),
            storage: inner.storage.clone(),
            layout: inner.layout.clone(),
            dtype: inner.dtype,
            device: inner.device,
            node: None,
            is_var: true,
        })))
    }

    /// The same values, cut from the graph.
    pub fn detach(&self) -> Tensor {
        self.with_layout(self.layout().clone())
    }

    /// A fresh contiguous copy that shares nothing with self (and is not recorded).
    pub fn contiguous_copy(&self) -> Result<Tensor> {
        let _profile = profile::op("contiguous_copy", [self]);
        let storage = self.storage().copy_strided(self.layout())?;
        Ok(Tensor::from_storage(storage, self.dims()))
    }

    // ---- moving data out ----

    pub fn to_cpu_storage(&self) -> Result<CpuStorage> {
        let _profile = profile::op("to_host", [self]);
        self.storage().to_cpu(self.layout())
    }

    /// All elements in row-major order. T must be the tensor's dtype.
    pub fn to_vec<T: WithDType>(&self) -> Result<Vec<T>> {
        self.to_cpu_storage()?.into_vec::<T>()
    }

    /// All elements converted to f64 (any dtype).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(self.to_cpu_storage()?.to_f64_vec())
    }

    pub fn to_vec2<T: WithDType>(&self) -> Result<Vec<Vec<T>>> {
        let &[rows, cols] = self.dims() else {
            return Err(Error::shape("to_vec2", format!("expected a 2-d tensor, got {:?}", self.dims())));
        };
        let flat = self.to_vec::<T>()?;
        Ok((0..rows).map(|r| flat[r * cols..(r + 1) * cols].to_vec()).collect())
    }

    pub fn to_scalar<T: WithDType>(&self) -> Result<T> {
        if self.elem_count() != 1 {
            return Err(Error::shape(
                "to_scalar",
                format!("expected one element, got shape {:?}", self.dims()),
            ));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// The single value as f64, whatever the dtype.
    pub fn to_f64(&self) -> Result<f64> {
        if self.elem_count() != 1 {
            return Err(Error::shape("to_f64", format!("expected one element, got shape {:?}", self.dims())));
        }
        Ok(self.to_f64_vec()?[0])
    }

    /// Copies to another device (not recorded for autograd; parameters are moved before training).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let _profile = profile::op("to_device", [self]);
        let host = self.to_cpu_storage()?;
        Tensor::from_cpu_storage(host, self.dims(), device)
    }

    /// Runs `f` on this tensor's storage for writing. Only for contiguous tensors that no graph
    /// depends on (optimisers, loading weights).
    pub(crate) fn update_in_place<R>(&self, op: &'static str, f: impl FnOnce(&mut dyn BackendStorage, &Layout) -> Result<R>) -> Result<R> {
        if !self.is_contiguous() {
            return Err(Error::shape(
                op,
                format!("in-place update needs a contiguous tensor, got layout {:?}", self.layout()),
            ));
        }
        let mut guard = self.storage_mut();
        f(guard.as_mut(), self.layout())
    }

    /// Overwrites the values of self with those of `src` (same shape; converted to self's dtype).
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        let _profile = profile::op("assign", [self, src]);
        if src.dims() != self.dims() {
            return Err(Error::shape(
                "assign",
                format!("source shape {:?} differs from destination {:?}", src.dims(), self.dims()),
            ));
        }
        let src = src.to_dtype(self.dtype())?.to_device(self.device())?;
        if src.same_storage(self) {
            return Ok(());
        }
        let src_guard = src.storage();
        self.update_in_place("assign", |dst, layout| src_guard.copy_into(src.layout(), dst, layout))
    }
}
