//! End-to-end checks of the nn and optim layers: an MLP learns with AdamW; a transformer block
//! gives identical outputs after a safetensors round trip; optimiser and schedule arithmetic.

mod common;

use common::Scratch;
use vlk::io::safetensors::{load_into, save, LoadOptions};
use vlk::nn::{Activation, LayerNorm, Linear, Mlp, MultiHeadAttention, ParamStore, Scope};
use vlk::ops::AttentionOptions;
use vlk::optim::{clip_factor, global_grad_norm, AdamW, AdamWConfig, CosineSchedule, Sgd};
use vlk::{DType, Device, Result, Rng, Tensor};

struct Block {
    ln1: LayerNorm,
    attn: MultiHeadAttention,
    ln2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn new(s: &Scope, dim: usize, heads: usize) -> Result<Self> {
        Ok(Block {
            ln1: LayerNorm::new(&s.pp("layer_norm1"), dim, 1e-5)?,
            attn: MultiHeadAttention::new(&s.pp("self_attn"), dim, dim, heads)?,
            ln2: LayerNorm::new(&s.pp("layer_norm2"), dim, 1e-5)?,
            mlp: Mlp::new(&s.pp("mlp"), dim, 4 * dim, Activation::QuickGelu)?,
        })
    }

    fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let h = self.ln1.forward(x)?;
        let x = x.add(&self.attn.forward(
            &h,
            &h,
            AttentionOptions {
                causal,
                ..Default::default()
            },
        )?)?;
        x.add(&self.mlp.forward(&self.ln2.forward(&x)?)?)
    }
}

#[test]
fn mlp_learns_xor_like_problem_with_adamw() {
    let store = ParamStore::new(Device::Cpu, DType::F32, 7);
    let root = store.root();
    let fc1 = Linear::new(&root.pp("fc1"), 2, 32, true).unwrap();
    let fc2 = Linear::new(&root.pp("fc2"), 32, 2, true).unwrap();
    // Label = sign(x0 * x1): not linearly separable.
    let mut rng = Rng::new(1);
    let n = 256;
    let xs: Vec<f32> = (0..n * 2).map(|_| (rng.uniform() * 2.0 - 1.0) as f32).collect();
    let ys: Vec<u32> = (0..n).map(|i| u32::from(xs[2 * i] * xs[2 * i + 1] > 0.0)).collect();
    let x = Tensor::from_vec(xs, &[n, 2], Device::Cpu).unwrap();
    let y = Tensor::from_vec(ys, &[n], Device::Cpu).unwrap();
    let mut opt = AdamW::new(
        store.named(),
        AdamWConfig {
            lr: 0.02,
            ..Default::default()
        },
    )
    .unwrap();
    let mut last = f64::INFINITY;
    let first = fc2
        .forward(&fc1.forward(&x).unwrap().tanh().unwrap())
        .unwrap()
        .cross_entropy(&y, -100)
        .unwrap()
        .to_f64()
        .unwrap();
    for _ in 0..300 {
        let loss = fc2
            .forward(&fc1.forward(&x).unwrap().tanh().unwrap())
            .unwrap()
            .cross_entropy(&y, -100)
            .unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(grads.len(), 4, "every parameter gets a gradient");
        opt.step(&grads, 0.02, 1.0).unwrap();
        last = loss.to_f64().unwrap();
    }
    assert!(first > 0.6, "starts near ln 2: {first}");
    assert!(last < 0.15, "loss after 300 AdamW steps: {last}");
}

#[test]
fn transformer_block_round_trips_through_safetensors() {
    let dir = Scratch::new("block");
    let path = dir.join("block.safetensors");
    let mut rng = Rng::new(5);
    let x = Tensor::randn(&mut rng, &[2, 7, 16], 0.0, 1.0, DType::F32, Device::Cpu).unwrap();

    let store = ParamStore::new(Device::Cpu, DType::F32, 11);
    let block = Block::new(&store.root().pp("encoder.layers.0"), 16, 4).unwrap();
    let before = block.forward(&x, true).unwrap().to_vec::<f32>().unwrap();
    save(&path, &store.named()).unwrap();

    let other = ParamStore::new(Device::Cpu, DType::F32, 99);
    let loaded = Block::new(&other.root().pp("encoder.layers.0"), 16, 4).unwrap();
    assert_ne!(
        loaded.forward(&x, true).unwrap().to_vec::<f32>().unwrap(),
        before,
        "different seeds differ"
    );
    let unused = load_into(&other, &path, LoadOptions::default()).unwrap();
    assert!(unused.is_empty());
    assert_eq!(loaded.forward(&x, true).unwrap().to_vec::<f32>().unwrap(), before);
    assert!(other.get("encoder.layers.0.self_attn.q_proj.weight").is_some());

    // Loading into half precision converts on the way in.
    let half = ParamStore::new(Device::Cpu, DType::BF16, 0);
    let hb = Block::new(&half.root().pp("encoder.layers.0"), 16, 4).unwrap();
    load_into(&half, &path, LoadOptions::default()).unwrap();
    let out = hb
        .forward(&x.to_dtype(DType::BF16).unwrap(), true)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let err = out.iter().zip(&before).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(err < 0.2, "bf16 block output within bf16 rounding: {err}");
}

#[test]
fn adamw_step_matches_the_formula() {
    let store = ParamStore::new(Device::Cpu, DType::F64, 0);
    let p = store.root().param("w", &[2, 2], vlk::nn::Init::Const(1.0)).unwrap();
    let cfg = AdamWConfig {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.5,
    };
    let mut opt = AdamW::new(store.named(), cfg).unwrap();
    let grads = p.mul_scalar(3.0).unwrap().sum_all().unwrap().backward().unwrap(); // dL/dw = 3
    opt.step(&grads, 0.1, 1.0).unwrap();
    // m = 0.3, v = 0.09 * 0.01... bias-corrected: m_hat = 3, v_hat = 9 -> update = 3/(3+eps) = 1.
    let want = 1.0 * (1.0 - 0.1 * 0.5) - 0.1 * (3.0 / (3.0 + 1e-8));
    for v in p.to_vec::<f64>().unwrap() {
        assert!((v - want).abs() < 1e-12, "{v} vs {want}");
    }
}

#[test]
fn adamw_reads_transposed_and_contiguous_gradients_in_parameter_order() {
    // dL/dw[i][j] = c[j][i] arrives as a transposed view (through t()'s backward); each element's
    // first update is -lr * sign(g), so reading the view in the wrong order flips signs.
    let store = ParamStore::new(Device::Cpu, DType::F32, 0);
    let w = store.root().param("w", &[3, 2], vlk::nn::Init::Const(1.0)).unwrap();
    let c_vals = [1.0f32, -2.0, 3.0, -4.0, 5.0, 6.0];
    let c = Tensor::from_vec(c_vals.to_vec(), &[2, 3], Device::Cpu).unwrap();
    let cfg = AdamWConfig {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut opt = AdamW::new(store.named(), cfg).unwrap();
    let grads = w.t().unwrap().mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    opt.step(&grads, 0.1, 1.0).unwrap();
    let got = w.to_vec::<f32>().unwrap();
    for i in 0..3 {
        for j in 0..2 {
            let want = 1.0 - 0.1 * c_vals[j * 3 + i].signum();
            assert!((got[i * 2 + j] - want).abs() < 1e-5, "w[{i}][{j}] = {} vs {want}", got[i * 2 + j]);
        }
    }
}

#[test]
fn adamw_bias_correction_counts_each_parameters_own_updates() {
    // `a` is updated three times while `b` has no gradient; b's first update must then be the
    // bias-corrected first step (exactly lr without decay), not one corrected for step 4.
    let store = ParamStore::new(Device::Cpu, DType::F64, 0);
    let a = store.root().param("a", &[3], vlk::nn::Init::Const(1.0)).unwrap();
    let b = store.root().param("b", &[3], vlk::nn::Init::Const(1.0)).unwrap();
    let cfg = AdamWConfig {
        lr: 0.1,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = AdamW::new(store.named(), cfg).unwrap();
    for _ in 0..3 {
        let grads = a.mul_scalar(2.0).unwrap().sum_all().unwrap().backward().unwrap();
        opt.step(&grads, 0.1, 1.0).unwrap();
    }
    assert_eq!(b.to_vec::<f64>().unwrap(), vec![1.0; 3], "no gradient, no update");
    let grads = b.mul_scalar(5.0).unwrap().sum_all().unwrap().backward().unwrap();
    opt.step(&grads, 0.1, 1.0).unwrap();
    for v in b.to_vec::<f64>().unwrap() {
        assert!((v - 0.9).abs() < 1e-9, "first step of b moves it by lr: {v}");
    }
    let steps: Vec<(String, u64)> = opt.state().into_iter().map(|s| (s.name, s.steps)).collect();
    assert_eq!(steps, vec![("a".to_string(), 3), ("b".to_string(), 1)]);
}

#[test]
fn sgd_momentum_schedule_and_clipping() {
    let store = ParamStore::new(Device::Cpu, DType::F64, 0);
    let p = store.root().param("w", &[3], vlk::nn::Init::Const(2.0)).unwrap();
    let mut sgd = Sgd::new(vec![p.clone()], 0.1, 0.9);
    for _ in 0..2 {
        let grads = p.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        sgd.step(&grads).unwrap();
    }
    // g1 = 4 -> p = 1.6; g2 = 3.2, buf = 0.9*4 + 3.2 = 6.8 -> p = 0.92
    assert!((p.to_vec::<f64>().unwrap()[0] - 0.92).abs() < 1e-12);

    let s = CosineSchedule {
        peak_lr: 1.0,
        min_lr: 0.0,
        warmup_steps: 10,
        total_steps: 110,
    };
    assert!((s.lr(0) - 0.1).abs() < 1e-12 && (s.lr(9) - 1.0).abs() < 1e-12);
    assert!((s.lr(60) - 0.5).abs() < 1e-12 && s.lr(110).abs() < 1e-12);

    let grads = p.mul_scalar(3.0).unwrap().sum_all().unwrap().backward().unwrap();
    let norm = global_grad_norm(&store.named(), &grads).unwrap();
    assert!((norm - (27.0f64).sqrt()).abs() < 1e-12);
    assert!((clip_factor(norm, 1.0) * norm - 1.0).abs() < 1e-6);
    assert_eq!(clip_factor(0.5, 1.0), 1.0);
    assert_eq!(clip_factor(f64::NAN, 1.0), 0.0);
}

#[test]
fn no_grad_and_detach_cut_the_graph() {
    let x = Tensor::ones(&[3], DType::F32, Device::Cpu).unwrap().to_var().unwrap();
    let y = vlk::no_grad(|| x.mul_scalar(2.0).unwrap());
    assert!(!y.requires_grad());
    assert!(x.mul_scalar(2.0).unwrap().detach().sum_all().unwrap().backward().is_err());
    // A value used twice accumulates both paths.
    let g = x.mul(&x).unwrap().add(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f32>().unwrap(), vec![3.0; 3]);
}
