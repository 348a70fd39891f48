//! vlk: a from-scratch GPU kernel framework for vision-language models.
//!
//! Layers, bottom up: [`backend`] (device memory and primitive ops: the CPU backend here, the GPU
//! backend over hand-written CUDA kernels), [`Tensor`] (views over storage), [`ops`] (the tensor
//! API, each op with its backward), [`autograd`] (the backward walk), [`nn`] and [`optim`]
//! (layers, parameter store, optimisers), [`io`] (checkpoints), [`profile`] (a per-op profiler
//! writing Chrome traces).

pub mod autograd;
pub mod backend;
pub mod data;
mod device;
pub mod diffusion;
mod dtype;
mod error;
pub mod io;
mod layout;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod profile;
mod rng;
mod tensor;
pub mod train;

pub use autograd::{no_grad, Grads, NoGradGuard};
pub use backend::{AttentionParams, BinaryOp, CmpOp, DenoiseParams, Prediction, ReduceOp, UnaryOp};
pub use device::Device;
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use layout::Layout;
pub use rng::Rng;
pub use tensor::{Tensor, TensorId};
