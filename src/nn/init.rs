//! Parameter initialisers.

use crate::{DType, Device, Result, Rng, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Const(f64),
    Normal {
        std: f64,
    },
    Uniform {
        lo: f64,
        hi: f64,
    },
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear and Conv weights.
    FanInUniform {
        fan_in: usize,
    },
    /// Glorot: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
    XavierUniform {
        fan_in: usize,
        fan_out: usize,
    },
}

impl Init {
    pub fn tensor(self, rng: &mut Rng, shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        match self {
            Init::Zeros => Tensor::zeros(shape, dtype, device),
            Init::Ones => Tensor::ones(shape, dtype, device),
            Init::Const(v) => Tensor::full(v, shape, dtype, device),
            Init::Normal { std } => Tensor::randn(rng, shape, 0.0, std, dtype, device),
            Init::Uniform { lo, hi } => Tensor::rand_uniform(rng, shape, lo, hi, dtype, device),
            Init::FanInUniform { fan_in } => {
                let a = 1.0 / (fan_in.max(1) as f64).sqrt();
                Tensor::rand_uniform(rng, shape, -a, a, dtype, device)
            }
            Init::XavierUniform { fan_in, fan_out } => {
                let a = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                Tensor::rand_uniform(rng, shape, -a, a, dtype, device)
            }
        }
    }
}
