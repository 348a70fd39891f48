//! The building blocks of the models: Linear, LayerNorm, Embedding, Mlp, MultiHeadAttention and
//! PatchEmbed. Each is a few tensor ops over parameters taken from a [`Scope`].

use super::{Init, Scope};
use crate::ops::AttentionOptions;
use crate::{Error, Result, Tensor};

/// y = x W^T + b, W stored [out, in]. Parameters are cast to the input's dtype, so f32
/// parameters can serve bf16 activations (mixed precision); the cast is differentiable, and
/// gradients reach the f32 parameters.
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default initialisation (weight and bias uniform in +-1/sqrt(in_dim)).
    pub fn new(scope: &Scope, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let init = Init::FanInUniform { fan_in: in_dim };
        Self::with_init(scope, in_dim, out_dim, init, bias.then_some(init))
    }

    /// A layer whose weight and bias (when `bias` is given) start as the initialisers say.
    pub fn with_init(scope: &Scope, in_dim: usize, out_dim: usize, weight: Init, bias: Option<Init>) -> Result<Self> {
        Ok(Linear {
            weight: scope.param("weight", &[out_dim, in_dim], weight)?,
            bias: bias.map(|init| scope.param("bias", &[out_dim], init)).transpose()?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let in_dim = self.weight.dims()[1];
        if x.dims().last() != Some(&in_dim) {
            return Err(Error::shape(
                "linear",
                format!("input {:?} does not end in {in_dim} (weight {:?})", x.dims(), self.weight.dims()),
            ));
        }
        // One 2-d product over all leading dims, so the weight is packed once.
        let lead = &x.dims()[..x.rank() - 1];
        let weight = self.weight.to_dtype(x.dtype())?;
        let x2 = x.reshape(&[lead.iter().product(), in_dim])?;
        let y = match &self.bias {
            Some(b) => x2.matmul_bias(&weight.t()?, &b.to_dtype(x.dtype())?)?,
            None => x2.matmul(&weight.t()?)?,
        };
        y.reshape(&[lead, &[self.weight.dims()[0]]].concat())
    }
}

#[derive(Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(scope: &Scope, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: scope.param("weight", &[dim], Init::Ones)?,
            bias: scope.param("bias", &[dim], Init::Zeros)?,
            eps,
        })
    }

    /// Normalises in the input's dtype (the kernels keep statistics in f32), with the
    /// parameters cast to it as in [`Linear`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm(&self.weight.to_dtype(x.dtype())?, &self.bias.to_dtype(x.dtype())?, self.eps)
    }
}

#[derive(Clone)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(scope: &Scope, vocab: usize, dim: usize, std: f64) -> Result<Self> {
        Ok(Embedding {
            weight: scope.param("weight", &[vocab, dim], Init::Normal { std })?,
        })
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.weight.embedding(ids)
    }
}

/// Activation functions by their Hugging Face config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Gelu,
    GeluTanh,
    QuickGelu,
    Relu,
    Silu,
}

impl Activation {
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "quick_gelu" => Activation::QuickGelu,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(Error::msg(format!(
                    "unsupported activation '{other}' (expected gelu, gelu_new, quick_gelu, relu or silu)"
                )))
            }
        })
    }

    /// The Hugging Face config name.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_new",
            Activation::QuickGelu => "quick_gelu",
            Activation::Relu => "relu",
            Activation::Silu => "silu",
        }
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => x.gelu(),
            Activation::GeluTanh => x.gelu_tanh(),
            Activation::QuickGelu => x.quick_gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// fc2(act(fc1(x))).
#[derive(Clone)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub act: Activation,
}

impl Mlp {
    pub fn new(scope: &Scope, dim: usize, hidden: usize, act: Activation) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::new(&scope.pp("fc1"), dim, hidden, true)?,
            fc2: Linear::new(&scope.pp("fc2"), hidden, dim, true)?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.act.apply(&self.fc1.forward(x)?)?)
    }
}

/// Multi-head attention with separate q/k/v/out projections (`q_proj`, `k_proj`, `v_proj`,
/// `out_proj`), through the fused attention op. Self-attention passes the same tensor twice;
/// cross-attention passes the other sequence as `kv`.
#[derive(Clone)]
pub struct MultiHeadAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

/// The parameter names of the four projections: transformers' and diffusers'.
pub const HF_ATTENTION_NAMES: [&str; 4] = ["q_proj", "k_proj", "v_proj", "out_proj"];
pub const DIFFUSERS_ATTENTION_NAMES: [&str; 4] = ["to_q", "to_k", "to_v", "to_out.0"];

impl MultiHeadAttention {
    pub fn new(scope: &Scope, dim: usize, kv_dim: usize, heads: usize) -> Result<Self> {
        Self::named(scope, dim, kv_dim, heads, HF_ATTENTION_NAMES)
    }

    /// The projections `names` = [query, key, value, output] under `scope`.
    pub fn named(scope: &Scope, dim: usize, kv_dim: usize, heads: usize, names: [&str; 4]) -> Result<Self> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(Error::shape("attention", format!("width {dim} is not divisible by {heads} heads")));
        }
        let [q, k, v, out] = names;
        Ok(MultiHeadAttention {
            q_proj: Linear::new(&scope.pp(q), dim, dim, true)?,
            k_proj: Linear::new(&scope.pp(k), kv_dim, dim, true)?,
            v_proj: Linear::new(&scope.pp(v), kv_dim, dim, true)?,
            out_proj: Linear::new(&scope.pp(out), dim, dim, true)?,
            heads,
        })
    }

    /// [B, S, dim] -> [B, H, S, dim/H]
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let &[b, s, d] = x.dims() else {
            return Err(Error::shape("attention", format!("expected [B, S, D], got {:?}", x.dims())));
        };
        x.reshape(&[b, s, self.heads, d / self.heads])?.permute(&[0, 2, 1, 3])
    }

    /// x [B, Sq, dim] attends to kv [B, Sk, kv_dim].
    pub fn forward(&self, x: &Tensor, kv: &Tensor, opts: AttentionOptions) -> Result<Tensor> {
        let (k, v) = self.keys_values(kv)?;
        self.attend(x, &k, &v, opts)
    }

    /// The keys and values of kv [B, Sk, kv_dim], split into heads: [B, H, Sk, dim/H] each (what a
    /// decoder caches).
    pub fn keys_values(&self, kv: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.k_proj.forward(kv)?)?,
            self.split_heads(&self.v_proj.forward(kv)?)?,
        ))
    }

    /// x [B, Sq, dim] attends to keys and values already projected and split into heads.
    pub fn attend(&self, x: &Tensor, k: &Tensor, v: &Tensor, opts: AttentionOptions) -> Result<Tensor> {
        let q = self.split_heads(&self.q_proj.forward(x)?)?;
        let o = Tensor::attention(&q, k, v, opts)?;
        let (b, sq) = (x.dims()[0], x.dims()[1]);
        let o = o.permute(&[0, 2, 1, 3])?.reshape(&[b, sq, self.q_proj.weight.dims()[0]])?;
        self.out_proj.forward(&o)
    }
}

/// The ViT patch embedding: a conv with stride = kernel = patch, weight [D, C, P, P], as
/// patchify + one matmul.
#[derive(Clone)]
pub struct PatchEmbed {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub patch: usize,
}

impl PatchEmbed {
    pub fn new(scope: &Scope, channels: usize, dim: usize, patch: usize, bias: bool) -> Result<Self> {
        let fan_in = channels * patch * patch;
        let weight = scope.param("weight", &[dim, channels, patch, patch], Init::FanInUniform { fan_in })?;
        let bias = if bias {
            Some(scope.param("bias", &[dim], Init::FanInUniform { fan_in })?)
        } else {
            None
        };
        Ok(PatchEmbed { weight, bias, patch })
    }

    /// [B, C, H, W] -> [B, (H/P)(W/P), D]
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let dim = self.weight.dims()[0];
        let w = self.weight.reshape(&[dim, self.weight.elem_count() / dim])?;
        let proj = Linear {
            weight: w,
            bias: self.bias.clone(),
        };
        proj.forward(&images.patchify(self.patch)?)
    }
}
