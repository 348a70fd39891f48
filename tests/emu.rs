//! Every kernel, run through the CUDA emulator (`Device::Emu`), against the CPU backend on the
//! same random inputs drawn by proptest: shapes that are not multiples of any tile, sizes of 1,
//! both transposes, causal and padded attention with Sq != Sk; forward and backward; f32, f16
//! and bf16. Emulator memory starts as NaN, so an output element a kernel never writes fails.
//! Ends with a whole transformer training step on Emu matching the CPU.
//!
//! `VLK_TEST_DEVICE=cuda` runs the same tests on a real GPU instead of the emulator
//! (scripts/gpu-check.sh does).

mod common;

use common::max_err_ratio;
use proptest::prelude::*;
use vlk::nn::{Activation, LayerNorm, Mlp, MultiHeadAttention, ParamStore};
use vlk::ops::AttentionOptions;
use vlk::optim::{AdamW, AdamWConfig};
use vlk::{DType, Device, Result, Rng, Tensor};

/// The device under test: the emulator unless VLK_TEST_DEVICE names another.
fn device() -> Device {
    std::env::var("VLK_TEST_DEVICE")
        .map(|d| Device::parse(&d).expect("VLK_TEST_DEVICE"))
        .unwrap_or(Device::Emu)
}

fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-5, 1e-4),
        DType::F16 => (5e-3, 1e-2),
        _ => (3e-2, 3e-2),
    }
}

/// Runs `f` on the CPU and on the emulator in `dtype` (the CPU backend, like the kernels,
/// computes each op in f32 and rounds its output to the dtype, so the two round alike), and
/// compares the outputs and, where `grads`, the gradients of sum(out * w).
fn parity(name: &str, dtype: DType, inputs: &[&Tensor], grads: &[bool], scale: f64, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let run = |device: Device, compute: DType| -> (Vec<f64>, Vec<Vec<f64>>) {
        let xs: Vec<Tensor> = inputs
            .iter()
            .zip(grads)
            .map(|(t, &g)| {
                let t = if t.dtype().is_float() {
                    t.to_dtype(dtype).unwrap().to_dtype(compute).unwrap()
                } else {
                    (*t).clone()
                };
                let t = t.to_device(device).unwrap();
                if g {
                    t.to_var().unwrap()
                } else {
                    t
                }
            })
            .collect();
        let out = f(&xs).unwrap_or_else(|e| panic!("{name} on {device}: {e}"));
        let mut rng = Rng::new(out.elem_count() as u64);
        let w = Tensor::randn(&mut rng, out.dims(), 0.0, 1.0, DType::F32, Device::Cpu)
            .unwrap()
            .to_dtype(compute)
            .unwrap()
            .to_device(device)
            .unwrap();
        let values = out.to_dtype(DType::F32).unwrap().to_f64_vec().unwrap();
        let mut gs = Vec::new();
        if grads.iter().any(|&g| g) {
            let g = out
                .mul(&w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap_or_else(|e| panic!("{name} backward on {device}: {e}"));
            for (x, &wanted) in xs.iter().zip(grads) {
                if wanted {
                    gs.push(
                        g.get(x)
                            .map(|t| t.to_dtype(DType::F32).unwrap().to_f64_vec().unwrap())
                            .unwrap_or_else(|| vec![0.0; x.elem_count()]),
                    );
                }
            }
        }
        (values, gs)
    };
    let (want, want_g) = run(Device::Cpu, dtype);
    let (got, got_g) = run(device(), dtype);
    let (atol, rtol) = tol(dtype);
    let r = max_err_ratio(&got, &want, atol * scale, rtol);
    assert!(
        r <= 1.0,
        "{name} {dtype}: forward error ratio {r:.2}\n emu {:?}\n cpu {:?}",
        &got[..got.len().min(8)],
        &want[..want.len().min(8)]
    );
    for (i, (g, w)) in got_g.iter().zip(&want_g).enumerate() {
        let r = max_err_ratio(g, w, atol * scale * 4.0, rtol * 4.0);
        assert!(
            r <= 1.0,
            "{name} {dtype}: gradient {i} error ratio {r:.2}\n emu {:?}\n cpu {:?}",
            &g[..g.len().min(8)],
            &w[..w.len().min(8)]
        );
    }
}

fn randn(rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::randn(rng, shape, 0.0, 1.0, DType::F32, Device::Cpu).unwrap()
}

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn elementwise(shape in prop::collection::vec(1usize..=9, 1..=3), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&mut rng, &shape);
        let pos = Tensor::rand_uniform(&mut rng, &shape, 0.5, 2.0, DType::F32, Device::Cpu).unwrap();
        let row = randn(&mut rng, &shape[shape.len() - 1..]);
        for dtype in DTYPES {
            parity("activations", dtype, &[&x], &[true], 1.0, |v| v[0].gelu()?.add(&v[0].gelu_tanh()?)?.add(&v[0].quick_gelu()?)?.add(&v[0].silu()?)?.add(&v[0].tanh()?)?.add(&v[0].sigmoid()?));
            parity("affine/abs/relu/sqr", dtype, &[&x], &[true], 1.0, |v| v[0].affine(1.5, -0.25)?.abs()?.add(&v[0].relu()?)?.add(&v[0].sqr()?)?.add(&v[0].neg()?));
            parity("exp/log/sqrt/rsqrt/recip/powf", dtype, &[&pos], &[true], 1.0, |v| v[0].exp()?.add(&v[0].log()?)?.add(&v[0].sqrt()?)?.add(&v[0].rsqrt()?)?.add(&v[0].recip()?)?.add(&v[0].powf(1.5)?));
            parity("broadcast binary", dtype, &[&x, &row, &pos], &[true, true, true], 1.0, |v| v[0].add(&v[1])?.mul(&v[0])?.sub(&v[1])?.div(&v[2])?.maximum(&v[1])?.minimum(&v[2]));
            parity("transposed view", dtype, &[&x], &[true], 1.0, |v| if v[0].rank() >= 2 { v[0].t()?.contiguous()?.exp() } else { v[0].exp() });
            parity("where/cmp", dtype, &[&x, &row], &[true, true], 1.0, |v| {
                let mask = v[0].cmp(&v[1], vlk::CmpOp::Gt)?;
                Tensor::where_cond(&mask, &v[0], &v[1])
            });
        }
    }

    #[test]
    fn reductions_and_softmax(rows in 1usize..=7, cols in 1usize..=300, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&mut rng, &[rows, cols]).mul_scalar(2.0).unwrap();
        let big = rows.max(cols) as f64;
        for dtype in DTYPES {
            parity("sum axis 1", dtype, &[&x], &[true], big.sqrt(), |v| v[0].sum(1, false));
            parity("sum axis 0", dtype, &[&x], &[true], big.sqrt(), |v| v[0].sum(0, true));
            parity("max/min", dtype, &[&x], &[false], 1.0, |v| v[0].max(1, false)?.add(&v[0].min(1, false)?));
            parity("softmax", dtype, &[&x], &[true], 1.0, |v| v[0].softmax());
            parity("log_softmax", dtype, &[&x], &[true], 1.0, |v| v[0].log_softmax());
        }
    }

    #[test]
    fn fused_rows(rows in 1usize..=40, c in 1usize..=130, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&mut rng, &[rows, c]).mul_scalar(2.0).unwrap().add_scalar(0.5).unwrap();
        let g = randn(&mut rng, &[c]);
        let b = randn(&mut rng, &[c]);
        let targets: Vec<i64> = (0..rows).map(|r| if r % 5 == 3 { -100 } else { rng.below(c as u64) as i64 }).collect();
        let t = Tensor::from_vec(targets, &[rows], Device::Cpu).unwrap();
        for dtype in DTYPES {
            parity("layer_norm", dtype, &[&x, &g, &b], &[true, true, true], (rows as f64).sqrt(), |v| v[0].layer_norm(&v[1], &v[2], 1e-5));
            parity("cross_entropy", dtype, &[&x, &t], &[true, false], 1.0, |v| v[0].cross_entropy_per_row(&v[1], -100));
        }
    }

    #[test]
    fn matmul(b in 1usize..=2, m in 1usize..=70, k in 1usize..=40, n in 1usize..=70, ta in any::<bool>(), tb in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let a = if ta { randn(&mut rng, &[b, k, m]) } else { randn(&mut rng, &[b, m, k]) };
        let w = if tb { randn(&mut rng, &[n, k]) } else { randn(&mut rng, &[k, n]) };
        for dtype in DTYPES {
            parity("matmul", dtype, &[&a, &w], &[true, true], (k.max(m).max(n) as f64).sqrt(), |v| {
                let a = if ta { v[0].t()? } else { v[0].clone() };
                let w = if tb { v[1].t()? } else { v[1].clone() };
                a.matmul(&w)
            });
        }
    }

    #[test]
    fn attention(b in 1usize..=2, h in 1usize..=2, sq in 1usize..=70, sk in 1usize..=70, d in prop::sample::select(vec![7usize, 16, 32, 64]), causal in any::<bool>(), padded in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        // q is built [B, Sq, H, D] and permuted, so its strides are not contiguous.
        let q = randn(&mut rng, &[b, sq, h, d]);
        let k = randn(&mut rng, &[b, h, sk, d]);
        let v = randn(&mut rng, &[b, h, sk, d]);
        let lens: Vec<usize> = (0..b).map(|_| 1 + rng.below(sk as u64) as usize).collect();
        let mask_vals: Vec<u32> = lens.iter().flat_map(|&l| (0..sk).map(move |j| u32::from(j < l))).collect();
        let mask = Tensor::from_vec(mask_vals, &[b, sk], Device::Cpu).unwrap();
        for dtype in DTYPES {
            parity("attention", dtype, &[&q, &k, &v, &mask], &[true, true, true, false], 1.0, |t| {
                let opts = AttentionOptions { causal, key_mask: padded.then_some(&t[3]), scale: None };
                Tensor::attention(&t[0].permute(&[0, 2, 1, 3])?, &t[1], &t[2], opts)
            });
        }
    }

    #[test]
    fn denoise_step(n in 1usize..=3000, guided in any::<bool>(), noisy in any::<bool>(), v_pred in any::<bool>(), clip in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let xs: Vec<Tensor> = (0..4).map(|_| randn(&mut rng, &[n])).collect();
        let p = vlk::DenoiseParams {
            guidance: 3.0,
            prediction: if v_pred { vlk::Prediction::V } else { vlk::Prediction::Epsilon },
            sqrt_alpha_bar: 0.8,
            sqrt_one_minus_alpha_bar: 0.6,
            clip_sample: if clip { 1.0 } else { 0.0 },
            c_x0: 0.7,
            c_xt: 0.25,
            c_eps: 0.1,
            c_noise: 0.05,
        };
        for dtype in DTYPES {
            parity("denoise_step", dtype, &xs.iter().collect::<Vec<_>>(), &[false; 4], 4.0, |t| Tensor::denoise_step(&t[0], &t[1], guided.then_some(&t[2]), noisy.then_some(&t[3]), &p));
        }
    }

    #[test]
    fn gather_scatter_copy(vocab in 1usize..=20, dim in 1usize..=9, n in 1usize..=12, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let table = randn(&mut rng, &[vocab, dim]);
        let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab as u64) as u32).collect();
        let ids = Tensor::from_vec(ids, &[n], Device::Cpu).unwrap();
        let other = randn(&mut rng, &[3, dim]);
        let img = randn(&mut rng, &[2, 3, 4, 6]);
        for dtype in DTYPES {
            parity("embedding", dtype, &[&table, &ids], &[true, false], (n as f64).sqrt(), |v| v[0].embedding(&v[1]));
            parity("concat/narrow", dtype, &[&table, &other], &[true, true], 1.0, |v| Tensor::concat(&[&v[0], &v[1]], 0)?.narrow(0, 1, vocab + 2));
            parity("patchify", dtype, &[&img], &[true], 1.0, |v| v[0].patchify(2));
        }
    }
}

#[test]
fn casts_between_dtypes_and_devices() {
    let mut rng = Rng::new(9);
    let x = randn(&mut rng, &[5, 7]);
    for from in DTYPES {
        for to in DTYPES {
            let cpu = x.to_dtype(from).unwrap().to_dtype(to).unwrap();
            let emu = x.to_dtype(from).unwrap().to_device(device()).unwrap().to_dtype(to).unwrap();
            assert_eq!(emu.to_cpu_storage().unwrap(), cpu.to_cpu_storage().unwrap(), "{from} -> {to}");
        }
    }
    let ids = Tensor::from_vec(vec![3u32, 0, 7], &[3], device()).unwrap();
    assert_eq!(ids.to_dtype(DType::I64).unwrap().to_vec::<i64>().unwrap(), vec![3, 0, 7]);
    let e = Tensor::zeros(&[2], DType::F64, device()).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("f64 tensors live on the CPU only"), "{e}");
    let table = Tensor::zeros(&[4, 2], DType::F32, device()).unwrap();
    let bad = Tensor::from_vec(vec![9u32], &[1], device()).unwrap();
    let e = table.embedding(&bad).unwrap_err().to_string();
    assert!(e.contains("index 9 out of range for size 4"), "{e}");
}

/// A pre-LN transformer block plus a token classifier, trained one AdamW step on each device.
fn train_step(device: Device) -> (f64, Vec<(String, Vec<f64>)>) {
    let store = ParamStore::new(Device::Cpu, DType::F32, 42);
    let root = store.root();
    let (dim, heads, vocab, seq, batch) = (32, 2, 11, 9, 3);
    vlk::nn::Embedding::new(&root.pp("embed"), vocab, dim, 0.5).unwrap();
    let ln1 = LayerNorm::new(&root.pp("ln1"), dim, 1e-5).unwrap();
    let attn = MultiHeadAttention::new(&root.pp("attn"), dim, dim, heads).unwrap();
    let ln2 = LayerNorm::new(&root.pp("ln2"), dim, 1e-5).unwrap();
    let mlp = Mlp::new(&root.pp("mlp"), dim, 4 * dim, Activation::Gelu).unwrap();
    let head = vlk::nn::Linear::new(&root.pp("head"), dim, vocab, true).unwrap();
    // Move every parameter to the device (in place of the CPU originals).
    let params: Vec<(String, Tensor)> = store
        .named()
        .into_iter()
        .map(|(n, t)| (n, t.to_device(device).unwrap().to_var().unwrap()))
        .collect();
    let get = |name: &str| params.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let lin = |p: &str| vlk::nn::Linear {
        weight: get(&format!("{p}.weight")),
        bias: Some(get(&format!("{p}.bias"))),
    };
    let emb = vlk::nn::Embedding {
        weight: get("embed.weight"),
    };
    let ln1 = LayerNorm {
        weight: get("ln1.weight"),
        bias: get("ln1.bias"),
        eps: ln1.eps,
    };
    let ln2 = LayerNorm {
        weight: get("ln2.weight"),
        bias: get("ln2.bias"),
        eps: ln2.eps,
    };
    let attn = MultiHeadAttention {
        q_proj: lin("attn.q_proj"),
        k_proj: lin("attn.k_proj"),
        v_proj: lin("attn.v_proj"),
        out_proj: lin("attn.out_proj"),
        heads: attn.heads,
    };
    let mlp = Mlp {
        fc1: lin("mlp.fc1"),
        fc2: lin("mlp.fc2"),
        act: mlp.act,
    };
    let head = vlk::nn::Linear {
        weight: get("head.weight"),
        bias: head.bias.as_ref().map(|_| get("head.bias")),
    };

    let mut rng = Rng::new(1);
    let ids: Vec<u32> = (0..batch * seq).map(|_| rng.below(vocab as u64) as u32).collect();
    let targets: Vec<i64> = ids.iter().map(|&i| ((i + 1) % vocab as u32) as i64).collect();
    let ids = Tensor::from_vec(ids, &[batch, seq], device).unwrap();
    let targets = Tensor::from_vec(targets, &[batch * seq], device).unwrap();
    let x = emb.forward(&ids).unwrap();
    let h = ln1.forward(&x).unwrap();
    let x = x
        .add(
            &attn
                .forward(
                    &h,
                    &h,
                    AttentionOptions {
                        causal: true,
                        ..Default::default()
                    },
                )
                .unwrap(),
        )
        .unwrap();
    let x = x.add(&mlp.forward(&ln2.forward(&x).unwrap()).unwrap()).unwrap();
    let logits = head.forward(&x).unwrap().reshape(&[batch * seq, vocab]).unwrap();
    let loss = logits.cross_entropy(&targets, -100).unwrap();
    let grads = loss.backward().unwrap();
    // eps well above rounding noise: the key projection's bias has an exactly zero gradient
    // (softmax ignores a shift shared by all keys), and Adam would turn its rounding noise into
    // full-size steps of either sign.
    let mut opt = AdamW::new(
        params.clone(),
        AdamWConfig {
            lr: 1e-2,
            eps: 1e-3,
            ..Default::default()
        },
    )
    .unwrap();
    opt.step(&grads, 1e-2, 1.0).unwrap();
    let after = params.iter().map(|(n, t)| (n.clone(), t.to_f64_vec().unwrap())).collect();
    (loss.to_f64().unwrap(), after)
}

#[test]
fn transformer_training_step_matches_cpu() {
    let (cpu_loss, cpu_params) = train_step(Device::Cpu);
    let (emu_loss, emu_params) = train_step(device());
    assert!(
        (cpu_loss - emu_loss).abs() < 1e-5 * cpu_loss.abs().max(1.0),
        "loss {cpu_loss} vs {emu_loss}"
    );
    for ((name, c), (_, e)) in cpu_params.iter().zip(&emu_params) {
        // AdamW's first steps move each weight by about lr, so compare at that scale.
        let r = max_err_ratio(e, c, 2e-4, 1e-3);
        assert!(r <= 1.0, "{name}: parameters after one step differ (ratio {r:.2})");
    }
}

/// Two contrastive CLIP training steps on the built-in shapes: the same losses on the device as
/// on the CPU.
#[test]
fn clip_training_steps_match_cpu() {
    use vlk::data::shapes::{Shapes, ShapesConfig, Split};
    use vlk::data::tokenizer::ClipTokenizer;
    use vlk::models::{ClipConfig, ClipTextConfig, ClipVisionConfig};
    use vlk::train::clip::{ClipTrainer, TrainConfig};

    let run = |device: Device, mixed_precision: bool| -> Vec<f64> {
        let tokenizer = ClipTokenizer::word_level(&Shapes::vocabulary()).unwrap();
        let act = Activation::QuickGelu;
        let model = ClipConfig {
            text: ClipTextConfig {
                vocab_size: tokenizer.vocab_size(),
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 1,
                num_attention_heads: 2,
                max_position_embeddings: 24,
                hidden_act: act,
                layer_norm_eps: 1e-5,
                eos_token_id: 1,
                pad_token_id: 1,
                bos_token_id: 0,
            },
            vision: ClipVisionConfig {
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 1,
                num_attention_heads: 2,
                num_channels: 3,
                image_size: 16,
                patch_size: 4,
                hidden_act: act,
                layer_norm_eps: 1e-5,
            },
            projection_dim: 16,
            logit_scale_init_value: 2.6592,
        };
        let config = TrainConfig {
            steps: 3,
            batch: 6,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 1,
            weight_decay: 0.1,
            max_grad_norm: 1.0,
            seed: 5,
            // The first step with the text tower frozen, the others training both towers.
            text_freeze_steps: 1,
            mixed_precision,
        };
        let mut trainer = ClipTrainer::new(model, tokenizer, config, device).unwrap();
        let params = trainer.clip.store.named();
        let shapes = Shapes::new(ShapesConfig {
            image_size: 16,
            ..Default::default()
        })
        .unwrap();
        let losses: Vec<f64> = (0..3u64)
            .map(|step| {
                let (pixels, captions) = shapes.batch(Split::Train, step * 6, 6);
                let pixels = Tensor::from_vec(pixels, &[6, 3, 16, 16], device).unwrap();
                trainer
                    .train_step(&pixels, &captions.iter().map(String::as_str).collect::<Vec<_>>())
                    .unwrap()
                    .loss
            })
            .collect();
        assert!(params.iter().all(|(_, p)| p.dtype() == DType::F32), "master weights stay f32");
        losses
    };
    let (cpu, dev) = (run(Device::Cpu, false), run(device(), false));
    for (c, d) in cpu.iter().zip(&dev) {
        assert!((c - d).abs() < 1e-4 * c.abs().max(1.0), "losses {cpu:?} vs {dev:?}");
    }
    assert!(cpu[0] != cpu[2], "the run moves");
    // Mixed precision (bf16 kernels over f32 master weights): the same run within bf16 error.
    let mixed = run(device(), true);
    for (c, m) in cpu.iter().zip(&mixed) {
        assert!((c - m).abs() < 3e-2 * c.abs().max(1.0), "f32 {cpu:?} vs mixed {mixed:?}");
    }
    assert!(mixed != dev, "mixed precision really computes in bf16");
}
