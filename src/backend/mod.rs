//! The backend interface. A backend owns device memory (`BackendStorage`) and runs the primitive
//! ops on it; the tensor and autograd layers only ever talk to these two traits, so a new device
//! plugs in by implementing them and adding an arm to [`for_device`].
//!
//! Conventions for every op: inputs come with their `Layout` (any strides unless the op says
//! otherwise); outputs are new contiguous storages of the op's output shape; all float operands of
//! one op share a dtype; F16/BF16 are computed with f32 accumulation.

pub mod cpu;
pub mod gpu;

use crate::{DType, Device, Error, Layout, Result};
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use cpu::CpuStorage;

pub type Storage = Box<dyn BackendStorage>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Tanh,
    Sigmoid,
    Relu,
    Abs,
    Sqr,
    Recip,
    /// GELU, erf form: x * Phi(x).
    Gelu,
    /// GELU, tanh approximation (`gelu_new` / `gelu_pytorch_tanh`).
    GeluTanh,
    /// x * sigmoid(1.702 x), OpenAI CLIP's activation.
    QuickGelu,
    /// x * sigmoid(x).
    Silu,
    /// x * mul + add.
    Affine {
        mul: f64,
        add: f64,
    },
    /// x ^ e.
    Powf(f64),
}

impl UnaryOp {
    /// The op's name in traces and autograd errors.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Abs => "abs",
            UnaryOp::Sqr => "sqr",
            UnaryOp::Recip => "recip",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::QuickGelu => "quick_gelu",
            UnaryOp::Silu => "silu",
            UnaryOp::Affine { .. } => "affine",
            UnaryOp::Powf(_) => "powf",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
}

impl BinaryOp {
    /// The op's name in traces and autograd errors.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
        }
    }
}

/// Comparisons produce 1 or 0 in the dtype of the operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

impl ReduceOp {
    /// The op's name in traces and autograd errors.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// Scaled-dot-product attention parameters. q: [B, H, Sq, D], k and v: [B, H, Sk, D] with the
/// last dim contiguous. Causal masking aligns the ends of the two sequences: query i sees key j
/// when j <= i + (Sk - Sq), which is what decoding with a KV cache needs. The key-padding mask
/// ([B, Sk], u32, nonzero = a real key) hides padded keys. A query row that sees no key outputs 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionParams {
    pub scale: f64,
    pub causal: bool,
}

/// Sizes of an attention call: batch, heads, query length, key length, head dim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    pub b: usize,
    pub h: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
}

/// The second half of an unfused `matmul_bias`: product + bias, the bias layout broadcast to the
/// product's shape. The trait's default, and the CPU backend's path for the cases its fused GEMM
/// does not take.
pub fn add_bias(product: &dyn BackendStorage, bias: &dyn BackendStorage, bias_layout: &Layout) -> Result<Storage> {
    product.binary(&Layout::contiguous(bias_layout.shape()), bias, bias_layout, BinaryOp::Add)
}

/// Checks q [B, H, Sq, D] and k, v [B, H, Sk, D], each with a contiguous last dim.
pub fn attention_dims(q: &Layout, k: &Layout, v: &Layout, op: &'static str) -> Result<AttentionDims> {
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    let ok = qs.len() == 4 && ks.len() == 4 && vs.len() == 4 && qs[0] == ks[0] && qs[1] == ks[1] && qs[3] == ks[3] && ks == vs;
    if !ok {
        return Err(Error::shape(
            op,
            format!("q {qs:?}, k {ks:?}, v {vs:?}: expected [B, H, Sq, D] and two [B, H, Sk, D]"),
        ));
    }
    for (name, l) in [("q", q), ("k", k), ("v", v)] {
        if l.strides()[3] != 1 && l.shape()[3] > 1 {
            return Err(Error::shape(op, format!("{name} must have a contiguous last dim")));
        }
    }
    Ok(AttentionDims {
        b: qs[0],
        h: qs[1],
        sq: qs[2],
        sk: ks[2],
        d: qs[3],
    })
}

/// One AdamW update; `step` counts from 1 (bias correction). `lr` already includes any schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
    /// Gradients are multiplied by this first (global-norm clipping folds in here).
    pub grad_scale: f64,
}

/// What the denoiser's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The model predicts the noise.
    Epsilon,
    /// The model predicts v = sqrt(abar) eps - sqrt(1 - abar) x0.
    V,
}

/// One fused diffusion update (DDPM or DDIM; the scheduler computes the coefficients):
/// m = uncond + guidance (cond - uncond) (or cond alone); x0 and eps from m per `prediction`
/// (x0 clipped to [-clip, clip] when clip > 0; eps stays the model's prediction, as in
/// diffusers' DDIM);
/// out = c_x0 x0 + c_xt x_t + c_eps eps + c_noise noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DenoiseParams {
    pub guidance: f64,
    pub prediction: Prediction,
    pub sqrt_alpha_bar: f64,
    pub sqrt_one_minus_alpha_bar: f64,
    pub clip_sample: f64,
    pub c_x0: f64,
    pub c_xt: f64,
    pub c_eps: f64,
    pub c_noise: f64,
}

/// What backends derived from one storage to reuse while it stays unchanged: the CPU GEMM keeps a
/// constant weight's packed panels here. It lives beside the storage, so it is dropped with it,
/// and the tensor layer clears it whenever it opens the storage for writing.
#[derive(Default)]
pub struct Derived {
    uses: AtomicUsize,
    forms: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl Derived {
    /// Counts one more use of the storage as a constant operand; returns the count so far.
    pub fn note_use(&self) -> usize {
        self.uses.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The kept form of type T that `matches`, else the one `build` makes (kept when Some). The
    /// lock is not held while building (a build may run parallel loops, whose work stealing could
    /// re-enter here); where two threads build at once, the first one kept wins.
    pub fn get_or_build<T: Any + Send + Sync>(&self, matches: impl Fn(&T) -> bool, build: impl FnOnce() -> Option<T>) -> Option<Arc<T>> {
        let find = |forms: &[Arc<dyn Any + Send + Sync>]| forms.iter().filter_map(|f| f.clone().downcast::<T>().ok()).find(|f| matches(f));
        if let Some(found) = find(&self.forms()) {
            return Some(found);
        }
        let built = Arc::new(build()?);
        let mut forms = self.forms();
        if let Some(found) = find(&forms) {
            return Some(found);
        }
        forms.push(built.clone());
        Some(built)
    }

    fn forms(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn Any + Send + Sync>>> {
        self.forms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every form and the use count (the storage is about to change).
    pub fn clear(&self) {
        self.forms().clear();
        self.uses.store(0, Ordering::Relaxed);
    }
}

/// A creator of storages on one device.
pub trait Backend: Send + Sync {
    fn device(&self) -> Device;
    fn zeros(&self, len: usize, dtype: DType) -> Result<Storage>;
    fn upload(&self, data: CpuStorage) -> Result<Storage>;
    /// Waits for all queued work (no-op on synchronous backends).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

/// Memory on one device and the primitive ops over it.
pub trait BackendStorage: Send + Sync + std::fmt::Debug {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn device(&self) -> Device;
    fn dtype(&self) -> DType;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the elements that `layout` selects to host memory, in row-major order.
    fn to_cpu(&self, layout: &Layout) -> Result<CpuStorage>;
    /// Contiguous copy of a strided view.
    fn copy_strided(&self, layout: &Layout) -> Result<Storage>;
    /// Writes the view `src_layout` of self into the view `dst_layout` of `dst` (same shape).
    fn copy_into(&self, src_layout: &Layout, dst: &mut dyn BackendStorage, dst_layout: &Layout) -> Result<()>;
    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Storage>;

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Storage>;
    /// dL/dx of a unary op given x (self) and dL/dy.
    fn unary_backward(&self, layout: &Layout, grad: &dyn BackendStorage, grad_layout: &Layout, op: UnaryOp) -> Result<Storage>;
    /// Both layouts already broadcast to the output shape.
    fn binary(&self, layout: &Layout, rhs: &dyn BackendStorage, rhs_layout: &Layout, op: BinaryOp) -> Result<Storage>;
    fn cmp(&self, layout: &Layout, rhs: &dyn BackendStorage, rhs_layout: &Layout, op: CmpOp) -> Result<Storage>;
    /// `cond ? on_true : on_false` elementwise; all three layouts have the output shape; cond is
    /// any dtype (nonzero = true).
    fn where_cond(
        &self,
        layout: &Layout,
        on_true: (&dyn BackendStorage, &Layout),
        on_false: (&dyn BackendStorage, &Layout),
    ) -> Result<Storage>;
    /// Reduces `axis`, which stays in the output with size 1.
    fn reduce(&self, layout: &Layout, op: ReduceOp, axis: usize) -> Result<Storage>;

    /// [batch.., m, k] x [batch.., k, n] with identical batch dims (broadcast done by the caller,
    /// so batch strides may be 0). Any strides. `rhs_derived` is given when rhs is constant for
    /// now (no gradient flows to it), so a backend may keep a prepared form of it there.
    fn matmul(&self, layout: &Layout, rhs: &dyn BackendStorage, rhs_layout: &Layout, rhs_derived: Option<&Derived>) -> Result<Storage>;
    /// `matmul` plus `bias`, whose layout is already broadcast to the output's shape. The default
    /// runs the two ops; a backend whose GEMM can start its sums from the bias overrides it.
    fn matmul_bias(
        &self,
        layout: &Layout,
        rhs: &dyn BackendStorage,
        rhs_layout: &Layout,
        rhs_derived: Option<&Derived>,
        bias: &dyn BackendStorage,
        bias_layout: &Layout,
    ) -> Result<Storage> {
        add_bias(&*self.matmul(layout, rhs, rhs_layout, rhs_derived)?, bias, bias_layout)
    }

    /// Softmax (or log-softmax) over the last dim.
    fn softmax(&self, layout: &Layout, log: bool) -> Result<Storage>;
    /// dL/dx from the forward's contiguous output y (self) and dL/dy.
    fn softmax_backward(&self, y_layout: &Layout, grad: &dyn BackendStorage, grad_layout: &Layout, log: bool) -> Result<Storage>;

    /// Layer norm over the last dim of size C; gamma and beta are contiguous [C]. Returns
    /// (y, mean, rstd) with mean and rstd [rows] in the compute dtype (f64 for f64, else f32).
    fn layer_norm(
        &self,
        layout: &Layout,
        gamma: &dyn BackendStorage,
        beta: &dyn BackendStorage,
        eps: f64,
    ) -> Result<(Storage, Storage, Storage)>;
    /// Returns (dx, dgamma, dbeta); self is x.
    fn layer_norm_backward(
        &self,
        layout: &Layout,
        gamma: &dyn BackendStorage,
        mean: &dyn BackendStorage,
        rstd: &dyn BackendStorage,
        grad: &dyn BackendStorage,
        grad_layout: &Layout,
    ) -> Result<(Storage, Storage, Storage)>;

    /// Fused softmax cross-entropy over the last dim of [rows, classes] logits (self) with u32/i64
    /// targets [rows]. Returns (loss per row, logsumexp per row in the compute dtype); rows whose
    /// target equals `ignore_index` get loss 0.
    fn softmax_xent(
        &self,
        layout: &Layout,
        targets: &dyn BackendStorage,
        targets_layout: &Layout,
        ignore_index: i64,
    ) -> Result<(Storage, Storage)>;
    /// dlogits = (softmax - onehot) * dloss[row], recomputed from the saved logsumexp.
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    fn softmax_xent_backward(
        &self,
        layout: &Layout,
        targets: &dyn BackendStorage,
        targets_layout: &Layout,
        lse: &dyn BackendStorage,
        grad: &dyn BackendStorage,
        grad_layout: &Layout,
        ignore_index: i64,
    ) -> Result<Storage>;

    /// Fused attention; self is q. Returns (out [B,H,Sq,D], logsumexp [B,H,Sq] in the compute dtype).
    fn attention(
        &self,
        q_layout: &Layout,
        k: (&dyn BackendStorage, &Layout),
        v: (&dyn BackendStorage, &Layout),
        key_mask: Option<(&dyn BackendStorage, &Layout)>,
        params: AttentionParams,
    ) -> Result<(Storage, Storage)>;
    /// Returns (dq, dk, dv) recomputing probabilities tile by tile from the saved logsumexp.
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<(Storage, Storage, Storage)>;

    /// Gathers slices of self along `dim` at integer `ids` (any shape); the output shape is
    /// self's shape with `dim` replaced by the ids' shape.
    fn index_select(&self, layout: &Layout, ids: &dyn BackendStorage, ids_layout: &Layout, dim: usize) -> Result<Storage>;
    /// The adjoint of index_select: a zero tensor of `dim_size` along `dim` into which the slices
    /// of self (the gathered gradient) are added at `ids`.
    fn index_add(&self, layout: &Layout, ids: &dyn BackendStorage, ids_layout: &Layout, dim: usize, dim_size: usize) -> Result<Storage>;

    /// The fused denoising step; self is x_t, all operands of its shape.
    fn denoise_step(
        &self,
        layout: &Layout,
        cond: (&dyn BackendStorage, &Layout),
        uncond: Option<(&dyn BackendStorage, &Layout)>,
        noise: Option<(&dyn BackendStorage, &Layout)>,
        params: &DenoiseParams,
    ) -> Result<Storage>;

    /// In-place AdamW on a contiguous parameter (self) with its moments.
    fn adamw_step(
        &mut self,
        grad: &dyn BackendStorage,
        grad_layout: &Layout,
        m: &mut dyn BackendStorage,
        v: &mut dyn BackendStorage,
        step: &AdamWStep,
    ) -> Result<()>;
}

/// The backend that owns memory on `device`.
pub fn for_device(device: Device) -> Result<&'static dyn Backend> {
    match device {
        Device::Cpu => {
            cpu::keep_freed_buffers();
            Ok(&cpu::CpuBackend)
        }
        Device::Emu | Device::Cuda(_) => Ok(gpu::backend(device)?),
    }
}

/// Downcasts an operand to the backend's own storage type, with an error naming the op.
pub fn expect_storage<'a, S: 'static>(s: &'a dyn BackendStorage, op: &'static str) -> Result<&'a S> {
    s.as_any()
        .downcast_ref::<S>()
        .ok_or_else(|| Error::device(op, format!("operand lives on {:?}", s.device())))
}

/// Downcasts an optional operand (storage and layout) the same way.
pub fn expect_operand<'a, S: 'static>(
    o: Option<(&'a dyn BackendStorage, &'a Layout)>,
    op: &'static str,
) -> Result<Option<(&'a S, &'a Layout)>> {
    o.map(|(s, l)| Ok((expect_storage::<S>(s, op)?, l))).transpose()
}

pub fn expect_storage_mut<'a, S: 'static>(s: &'a mut dyn BackendStorage, op: &'static str) -> Result<&'a mut S> {
    let device = s.device();
    s.as_any_mut()
        .downcast_mut::<S>()
        .ok_or_else(|| Error::device(op, format!("operand lives on {device:?}")))
}
