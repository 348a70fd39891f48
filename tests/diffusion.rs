//! Diffusion: the schedules, timesteps and DDPM/DDIM steps against diffusers' schedulers, the
//! DiT against diffusers' DiTTransformer2DModel (tests/fixtures, made by
//! scripts/make_fixtures.py), the fused step through the emulator against the composed ops,
//! the text-conditioned denoiser's gradients, and bad input.

mod common;

use common::{assert_close, max_err_ratio};
use serde_json::Value;
use std::path::Path;
use vlk::diffusion::{NoiseSchedule, Sampler, SamplerKind, SchedulerConfig};
use vlk::models::{Dit, DitCondition, DitConditioning, DitConfig, TextCondition};
use vlk::{DType, Device, Prediction, Rng, Tensor};

fn fixtures() -> Value {
    let text = std::fs::read_to_string("tests/fixtures/schedulers.json").unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn tensor(v: &Value, shape: &[usize]) -> Tensor {
    Tensor::from_vec(floats(v), shape, Device::Cpu).unwrap()
}

fn shape(v: &Value) -> Vec<usize> {
    ints(v).into_iter().map(|x| x as usize).collect()
}

#[test]
fn beta_schedules_match_diffusers() {
    for case in fixtures()["schedules"].as_array().unwrap() {
        let config = SchedulerConfig::from_json(case).unwrap();
        let s = &config.schedule;
        let what = format!("{} over {}", case["beta_schedule"], case["num_train_timesteps"]);
        assert!(
            max_err_ratio(&s.betas, &floats(&case["betas"]), 1e-6, 0.0) <= 1.0,
            "betas of {what}"
        );
        assert!(
            max_err_ratio(&s.alphas_cumprod, &floats(&case["alphas_cumprod"]), 1e-6, 0.0) <= 1.0,
            "alphas_cumprod of {what}"
        );
    }
}

#[test]
fn timesteps_match_diffusers_for_every_spacing() {
    for case in fixtures()["timesteps"].as_array().unwrap() {
        let mut config = SchedulerConfig::from_json(case).unwrap();
        config.steps_offset = case["steps_offset"].as_u64().unwrap() as usize;
        let n = case["num_inference_steps"].as_u64().unwrap() as usize;
        for (kind, key) in [(SamplerKind::Ddpm, "ddpm"), (SamplerKind::Ddim { eta: 0.0 }, "ddim")] {
            let sampler = Sampler::new(config.clone(), kind, n).unwrap();
            let want = ints(&case[key]["timesteps"]);
            assert_eq!(sampler.timesteps(), want, "{key} timesteps of {case:?}");
            let prev: Vec<i64> = (0..n).map(|i| sampler.prev_timestep(i)).collect();
            let want_prev: Vec<i64> = ints(&case[key]["prev_timesteps"]);
            // Any negative previous timestep means "past the start".
            let norm = |v: &[i64]| v.iter().map(|&t| t.max(-1)).collect::<Vec<_>>();
            assert_eq!(norm(&prev), norm(&want_prev), "{key} previous timesteps of {case:?}");
        }
    }
}

/// Runs step `index` of `sampler` on f64 copies of the recorded tensors.
fn step(sampler: &Sampler, index: usize, sample: &Tensor, model: &Tensor, noise: Option<&Tensor>) -> Tensor {
    let p = sampler.params(index, 1.0);
    Tensor::denoise_step(sample, model, None, noise.filter(|_| sampler.is_stochastic(index)), &p).unwrap()
}

#[test]
fn ddpm_steps_match_diffusers() {
    for case in fixtures()["ddpm_steps"].as_array().unwrap() {
        let mut config = SchedulerConfig::from_json(&case["config"]).unwrap();
        let steps = case["num_inference_steps"]
            .as_u64()
            .map_or(config.schedule.num_train_timesteps(), |n| n as usize);
        config.steps_offset = 0;
        let sampler = Sampler::new(config, SamplerKind::Ddpm, steps).unwrap();
        let t = case["timestep"].as_i64().unwrap();
        let index = sampler.timesteps().iter().position(|&x| x == t).unwrap();
        assert_eq!(sampler.prev_timestep(index), case["prev_timestep"].as_i64().unwrap());
        assert_eq!(sampler.is_stochastic(index), case["noise_added"].as_bool().unwrap());
        let dims = shape(&case["shape"]);
        let [x, m, z, want] = ["sample", "model_output", "noise", "prev_sample"].map(|k| tensor(&case[k], &dims));
        let got = step(&sampler, index, &x, &m, Some(&z));
        // diffusers computes 1 - abar_t in f32, to 6e-8 absolute: near t = 0, where it is
        // small, its result carries that rounding divided by 1 - abar_t (up to ~1e-4);
        // elsewhere the two agree to 1e-6.
        let abar = sampler.config.schedule.alphas_cumprod[t as usize];
        let tol = (5e-8 / (1.0 - abar)).max(1e-6);
        // The reference went through about ten f32 operations with f32 coefficients (abar to
        // 4e-7 relative): 5e-6 relative on top.
        assert_close(&got, &want, tol, 5e-6, &format!("DDPM step at t = {t} of {:?}", case["config"]));
    }
}

#[test]
fn ddim_trajectories_match_diffusers() {
    for case in fixtures()["ddim_trajectories"].as_array().unwrap() {
        let config = SchedulerConfig::from_json(&case["config"]).unwrap();
        let eta = case["eta"].as_f64().unwrap();
        let n = case["num_inference_steps"].as_u64().unwrap() as usize;
        let sampler = Sampler::new(config, SamplerKind::Ddim { eta }, n).unwrap();
        assert_eq!(sampler.timesteps(), ints(&case["timesteps"]));
        let dims = shape(&case["shape"]);
        let mut x = tensor(&case["initial_sample"], &dims);
        for i in 0..n {
            let m = tensor(&case["model_outputs"][i], &dims);
            let noise = (eta > 0.0).then(|| tensor(&case["noises"][i], &dims));
            x = step(&sampler, i, &x, &m, noise.as_ref());
            let want = tensor(&case["samples"][i], &dims);
            assert_close(&x, &want, 1e-5, 1e-5, &format!("DDIM step {i} (eta {eta}) of {:?}", case["config"]));
            // Continue from diffusers' own sample so errors do not compound.
            x = want;
        }
    }
}

fn load_dit(name: &str, device: Device) -> (Dit, std::collections::HashMap<String, Tensor>) {
    let dir = Path::new("tests/fixtures").join(name);
    let dit = Dit::load(&dir, device, DType::F32).unwrap();
    let reference = vlk::io::safetensors::load(dir.join("reference.safetensors"), Device::Cpu).unwrap();
    (dit, reference)
}

#[test]
fn dit_matches_diffusers() {
    for name in ["dit-tiny", "dit-tiny-p4"] {
        for device in [Device::Cpu, Device::Emu] {
            let (dit, r) = load_dit(name, device);
            let grid = dit.config.sample_size / dit.config.patch_size;
            let positions = vlk::models::dit::sincos_positions(grid, dit.config.dim());
            let want = r["pos_embed"].to_vec::<f32>().unwrap();
            let err = positions.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 1e-6, "{name}: positions differ by {err}");
            let t: Vec<f64> = r["timestep"].to_f64_vec().unwrap();
            let features = vlk::models::dit::timestep_features(&t);
            let want = r["timestep_proj"].to_vec::<f32>().unwrap();
            let err = features.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            // PyTorch rounds t * f_k to f32 after its own f32 exp: one ulp of f_k moves the
            // argument by up to 6e-5 at t = 999.
            assert!(err < 1e-4, "{name}: timestep features differ by {err}");
            let labels: Vec<usize> = r["class_labels"].to_f64_vec().unwrap().iter().map(|&l| l as usize).collect();
            let x = r["hidden_states"].to_device(device).unwrap();
            let out = dit.forward(&x, &t, &DitCondition::Class(&labels)).unwrap();
            assert_close(
                &out.to_device(Device::Cpu).unwrap(),
                &r["sample"],
                1e-4,
                1e-4,
                &format!("{name} on {device}"),
            );
        }
    }
}

#[test]
fn dit_round_trips_through_save() {
    let (dit, r) = load_dit("dit-tiny", Device::Cpu);
    let dir = common::Scratch::new("dit-save");
    dit.save(&dir).unwrap();
    let again = Dit::load(&dir, Device::Cpu, DType::F32).unwrap();
    assert_eq!(again.config, dit.config);
    let t: Vec<f64> = r["timestep"].to_f64_vec().unwrap();
    let out = again.forward(&r["hidden_states"], &t, &DitCondition::Class(&[1, 2, 10])).unwrap();
    let want = dit.forward(&r["hidden_states"], &t, &DitCondition::Class(&[1, 2, 10])).unwrap();
    assert_close(&out, &want, 0.0, 0.0, "reloaded DiT");
}

fn text_dit(seed: u64, dtype: DType) -> Dit {
    let config = DitConfig {
        sample_size: 8,
        patch_size: 4,
        in_channels: 3,
        out_channels: 3,
        num_layers: 2,
        num_attention_heads: 2,
        attention_head_dim: 4,
        norm_eps: 1e-5,
        conditioning: DitConditioning::Text {
            text_width: 6,
            text_len: 5,
        },
    };
    let dit = Dit::new(config, Device::Cpu, dtype, seed).unwrap();
    // Zero-initialised modulations and output would make the model constant; draw every
    // parameter instead so the test exercises every path.
    let mut rng = Rng::new(seed + 1);
    for (_, p) in dit.store.named() {
        p.assign(&Tensor::randn(&mut rng, p.dims(), 0.0, 0.3, dtype, Device::Cpu).unwrap())
            .unwrap();
    }
    dit
}

fn text_condition(rng: &mut Rng, b: usize, dtype: DType) -> TextCondition {
    let mask: Vec<f32> = (0..b * 5).map(|i| if i % 5 < 2 + i / 5 % 3 { 1.0 } else { 0.0 }).collect();
    TextCondition {
        states: Tensor::randn(rng, &[b, 5, 6], 0.0, 1.0, dtype, Device::Cpu).unwrap(),
        mask: Tensor::from_vec(mask, &[b, 5], Device::Cpu).unwrap(),
        pooled: Tensor::randn(rng, &[b, 6], 0.0, 1.0, dtype, Device::Cpu).unwrap(),
    }
}

#[test]
fn text_dit_gradients_match_finite_differences() {
    // The loss sum(out * w) through condition dropout, cross-attention with key padding and
    // the adaLN modulations; its gradient in a sample of each parameter's entries against
    // central differences.
    let dit = text_dit(3, DType::F64);
    let mut rng = Rng::new(9);
    let cond = text_condition(&mut rng, 2, DType::F64);
    let x = common::randn(&mut rng, &[2, 3, 8, 8]);
    let w = common::randn(&mut rng, &[2, 3, 8, 8]);
    let loss = || {
        let dropped = dit.drop_text(&cond, &[true, false]).unwrap();
        let out = dit.forward(&x, &[3.0, 700.0], &DitCondition::Text(&dropped)).unwrap();
        out.mul(&w).unwrap().sum_all().unwrap()
    };
    let grads = loss().backward().unwrap();
    let names = [
        "transformer_blocks.1.attn2.to_k.weight",
        "transformer_blocks.0.attn2.to_q.bias",
        "condition_embed.null_hidden_states",
        "condition_embed.null_pooled",
        "condition_embed.text_proj.weight",
        "condition_embed.timestep_embedder.linear_1.weight",
        "transformer_blocks.0.norm1.linear.bias",
        "transformer_blocks.1.ff.net.0.proj.weight",
        "proj_out_1.weight",
        "pos_embed.proj.weight",
    ];
    for name in names {
        let p = dit.store.get(name).unwrap();
        let analytic = grads
            .get(&p)
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .to_f64_vec()
            .unwrap();
        let values = p.to_f64_vec().unwrap();
        for k in (0..values.len()).step_by(values.len().div_ceil(6)) {
            let at = |v: f64| {
                let mut moved = values.clone();
                moved[k] = v;
                p.assign(&Tensor::from_vec(moved, p.dims(), Device::Cpu).unwrap()).unwrap();
                loss().to_f64().unwrap()
            };
            let h = 1e-5;
            let numeric = (at(values[k] + h) - at(values[k] - h)) / (2.0 * h);
            p.assign(&Tensor::from_vec(values.clone(), p.dims(), Device::Cpu).unwrap()).unwrap();
            let err = (analytic[k] - numeric).abs() / (1e-6 + 1e-4 * numeric.abs());
            assert!(err <= 1.0, "{name}[{k}]: analytic {} numeric {numeric}", analytic[k]);
        }
    }
}

#[test]
fn key_padding_hides_padded_text_tokens() {
    let dit = text_dit(5, DType::F64);
    let mut rng = Rng::new(2);
    let cond = text_condition(&mut rng, 2, DType::F64);
    let x = common::randn(&mut rng, &[2, 3, 8, 8]);
    let base = dit.forward(&x, &[10.0, 10.0], &DitCondition::Text(&cond)).unwrap();
    // Change only the states behind the mask: the output must not move.
    let mask = cond.mask.to_dtype(DType::F64).unwrap().unsqueeze(2).unwrap();
    let noise = common::randn(&mut rng, &[2, 5, 6]);
    let hidden = noise.mul(&mask.neg().unwrap().add_scalar(1.0).unwrap()).unwrap();
    let moved = TextCondition {
        states: cond.states.add(&hidden).unwrap(),
        ..cond.clone()
    };
    let out = dit.forward(&x, &[10.0, 10.0], &DitCondition::Text(&moved)).unwrap();
    assert_close(&out, &base, 1e-12, 1e-12, "padded tokens");
}

/// The update each sampler makes, written with plain tensor ops from diffusers' formulas.
fn composed_step(sampler: &Sampler, i: usize, x: &Tensor, cond: &Tensor, uncond: Option<&Tensor>, g: f64, z: &Tensor) -> Tensor {
    let s = &sampler.config.schedule;
    let t = sampler.timesteps()[i];
    let prev = sampler.prev_timestep(i);
    let at = s.alphas_cumprod[t as usize];
    let m = match uncond {
        Some(u) => u.add(&cond.sub(u).unwrap().mul_scalar(g).unwrap()).unwrap(),
        None => cond.clone(),
    };
    let (mut x0, eps) = match sampler.config.prediction {
        Prediction::Epsilon => (
            x.sub(&m.mul_scalar((1.0 - at).sqrt()).unwrap())
                .unwrap()
                .div_scalar(at.sqrt())
                .unwrap(),
            m.clone(),
        ),
        Prediction::V => (
            x.mul_scalar(at.sqrt())
                .unwrap()
                .sub(&m.mul_scalar((1.0 - at).sqrt()).unwrap())
                .unwrap(),
            m.mul_scalar(at.sqrt())
                .unwrap()
                .add(&x.mul_scalar((1.0 - at).sqrt()).unwrap())
                .unwrap(),
        ),
    };
    if let Some(r) = sampler.config.clip_sample {
        let lo = Tensor::full(-r, x0.dims(), x0.dtype(), x0.device()).unwrap();
        let hi = Tensor::full(r, x0.dims(), x0.dtype(), x0.device()).unwrap();
        x0 = x0.maximum(&lo).unwrap().minimum(&hi).unwrap();
    }
    match sampler.kind {
        SamplerKind::Ddpm => {
            let ap = if prev >= 0 { s.alphas_cumprod[prev as usize] } else { 1.0 };
            let (cur_a, bt, bp) = (at / ap, 1.0 - at, 1.0 - ap);
            let mean = x0
                .mul_scalar(ap.sqrt() * (1.0 - cur_a) / bt)
                .unwrap()
                .add(&x.mul_scalar(cur_a.sqrt() * bp / bt).unwrap())
                .unwrap();
            let sigma = if t > 0 { (bp / bt * (1.0 - cur_a)).max(1e-20).sqrt() } else { 0.0 };
            mean.add(&z.mul_scalar(sigma).unwrap()).unwrap()
        }
        SamplerKind::Ddim { eta } => {
            let ap = if prev >= 0 { s.alphas_cumprod[prev as usize] } else { 1.0 };
            let std = eta * ((1.0 - ap) / (1.0 - at) * (1.0 - at / ap)).sqrt();
            x0.mul_scalar(ap.sqrt())
                .unwrap()
                .add(&eps.mul_scalar((1.0 - ap - std * std).sqrt()).unwrap())
                .unwrap()
                .add(&z.mul_scalar(std).unwrap())
                .unwrap()
        }
    }
}

#[test]
fn fused_step_on_the_emulator_matches_composed_ops() {
    let mut rng = Rng::new(11);
    let dims = [2, 3, 5, 7];
    for kind in [SamplerKind::Ddpm, SamplerKind::Ddim { eta: 0.0 }, SamplerKind::Ddim { eta: 0.7 }] {
        for prediction in [Prediction::Epsilon, Prediction::V] {
            for guidance in [None, Some(3.5)] {
                let mut config = SchedulerConfig::pixel_default().unwrap();
                config.prediction = prediction;
                config.clip_sample = Some(1.5);
                let sampler = Sampler::new(config, kind, 20).unwrap();
                for i in [0, 9, 19] {
                    let [x, c, u, z] = [0; 4].map(|_| Tensor::randn(&mut rng, &dims, 0.0, 1.0, DType::F32, Device::Cpu).unwrap());
                    let want = composed_step(&sampler, i, &x, &c, guidance.map(|_| &u), guidance.unwrap_or(1.0), &z);
                    let emu = |t: &Tensor| t.to_device(Device::Emu).unwrap();
                    let p = sampler.params(i, guidance.unwrap_or(1.0));
                    let noise = sampler.is_stochastic(i).then(|| emu(&z));
                    let uncond = guidance.map(|_| emu(&u));
                    let got = Tensor::denoise_step(&emu(&x), &emu(&c), uncond.as_ref(), noise.as_ref(), &p).unwrap();
                    let what = format!("{kind:?} {prediction:?} guidance {guidance:?} step {i}");
                    assert_close(&got.to_device(Device::Cpu).unwrap(), &want, 2e-5, 2e-5, &what);
                }
            }
        }
    }
}

#[test]
fn forward_noising_and_targets() {
    let config = SchedulerConfig::pixel_default().unwrap();
    let mut rng = Rng::new(1);
    let x0 = common::randn(&mut rng, &[2, 3]);
    let noise = common::randn(&mut rng, &[2, 3]);
    let xt = config.add_noise(&x0, &noise, &[0, 999]).unwrap();
    let a = config.schedule.alphas_cumprod[999];
    let row1: Vec<f64> = xt.to_vec2::<f64>().unwrap()[1].clone();
    let (x1, n1) = (&x0.to_vec2::<f64>().unwrap()[1], &noise.to_vec2::<f64>().unwrap()[1]);
    for k in 0..3 {
        assert!((row1[k] - (a.sqrt() * x1[k] + (1.0 - a).sqrt() * n1[k])).abs() < 1e-12);
    }
    let mut v = config.clone();
    v.prediction = Prediction::V;
    let target = v.target(&x0, &noise, &[0, 999]).unwrap().to_vec2::<f64>().unwrap();
    assert!((target[1][0] - (a.sqrt() * n1[0] - (1.0 - a).sqrt() * x1[0])).abs() < 1e-12);
    assert!(config
        .add_noise(&x0, &noise, &[0, 1000])
        .unwrap_err()
        .to_string()
        .contains("outside"));
    assert!(config.add_noise(&x0, &noise, &[0]).unwrap_err().to_string().contains("timesteps"));
}

#[test]
fn bad_sampler_settings_are_clear_errors() {
    let config = SchedulerConfig::pixel_default().unwrap();
    let err = Sampler::new(config.clone(), SamplerKind::Ddim { eta: 0.0 }, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("inference steps"), "{err}");
    assert!(SamplerKind::parse("ddim", 1.5).unwrap_err().to_string().contains("eta"));
    assert!(SamplerKind::parse("euler", 0.0)
        .unwrap_err()
        .to_string()
        .contains("unknown sampler"));
    assert!(NoiseSchedule::new(vlk::diffusion::BetaSchedule::Linear, 0, 1e-4, 0.02).is_err());
    let err = SchedulerConfig::from_json(&serde_json::json!({"prediction_type": "sample"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("prediction_type"), "{err}");
    // A text-conditioned model refuses labels and mismatched text widths.
    let dit = text_dit(1, DType::F32);
    let x = Tensor::zeros(&[1, 3, 8, 8], DType::F32, Device::Cpu).unwrap();
    assert!(dit
        .forward(&x, &[1.0], &DitCondition::Class(&[0]))
        .unwrap_err()
        .to_string()
        .contains("text-conditioned"));
    let wide = TextCondition {
        states: Tensor::zeros(&[1, 5, 9], DType::F32, Device::Cpu).unwrap(),
        mask: Tensor::ones(&[1, 5], DType::F32, Device::Cpu).unwrap(),
        pooled: Tensor::zeros(&[1, 9], DType::F32, Device::Cpu).unwrap(),
    };
    let err = dit.forward(&x, &[1.0], &DitCondition::Text(&wide)).unwrap_err().to_string();
    assert!(err.contains("cross_attention_dim"), "{err}");
}

fn tiny_trainer(steps: u64) -> vlk::train::diffusion::DiffusionTrainer {
    tiny_trainer_on(steps, Device::Cpu)
}

fn tiny_trainer_on(steps: u64, device: Device) -> vlk::train::diffusion::DiffusionTrainer {
    use vlk::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
    let clip = Path::new("tests/fixtures/clip-f16");
    let encoder = vlk::diffusion::PromptEncoder::load(clip, device).unwrap();
    let dit = DitConfig {
        sample_size: 8,
        patch_size: 4,
        in_channels: 3,
        out_channels: 3,
        num_layers: 1,
        num_attention_heads: 2,
        attention_head_dim: 4,
        norm_eps: 1e-6,
        conditioning: DitConditioning::Text {
            text_width: encoder.width(),
            text_len: encoder.context(),
        },
    };
    let config = DiffusionTrainConfig {
        steps,
        batch: 3,
        lr: 3e-3,
        min_lr: 1e-4,
        warmup_steps: 1,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
        seed: 5,
        cond_dropout: 0.3,
        ema_decay: 0.9,
        snr_gamma: 5.0,
        mixed_precision: false,
    };
    DiffusionTrainer::new(dit, encoder, clip, SchedulerConfig::pixel_default().unwrap(), config, device).unwrap()
}

fn train_on(trainer: &mut vlk::train::diffusion::DiffusionTrainer, step: u64) -> f64 {
    let mut rng = Rng::new(100 + step);
    let device = trainer.online.store.device();
    let images = Tensor::rand_uniform(&mut rng, &[3, 3, 8, 8], -1.0, 1.0, DType::F32, Device::Cpu)
        .unwrap()
        .to_device(device)
        .unwrap();
    let captions = ["a red circle", "a blue star on the left", "two shapes"];
    trainer.train_step(&images, &captions).unwrap().loss
}

#[test]
fn diffusion_training_resumes_exactly() {
    let dir = common::Scratch::new("diffusion-resume");
    let checkpoints = vlk::train::Checkpointer::new(&dir, 2);
    let mut straight = tiny_trainer(4);
    let want: Vec<f64> = (0..4).map(|s| train_on(&mut straight, s)).collect();
    let mut first = tiny_trainer(4);
    let mut got: Vec<f64> = (0..2).map(|s| train_on(&mut first, s)).collect();
    let ck = first.save_checkpoint(&checkpoints, serde_json::json!({})).unwrap();
    drop(first);
    let mut resumed = vlk::train::diffusion::DiffusionTrainer::resume(&ck, Device::Cpu).unwrap();
    assert_eq!(resumed.step, 2);
    got.extend((2..4).map(|s| train_on(&mut resumed, s)));
    assert_eq!(got, want, "losses after resuming");
    for (name, p) in straight.model.dit.store.named() {
        let q = resumed.model.dit.store.get(&name).unwrap();
        assert_eq!(p.to_vec::<f32>().unwrap(), q.to_vec::<f32>().unwrap(), "EMA weights of {name}");
    }
    assert!(want.iter().all(|l| l.is_finite()));
}

#[test]
fn text_to_image_samples_round_trip_and_reject_bad_settings() {
    use vlk::diffusion::{SampleOptions, TextToImage};
    let mut trainer = tiny_trainer(2);
    train_on(&mut trainer, 0);
    let dir = common::Scratch::new("t2i");
    trainer.save_model(&dir).unwrap();
    let model = TextToImage::load(&dir, Device::Cpu).unwrap();
    let opts = SampleOptions {
        steps: 4,
        sampler: SamplerKind::Ddim { eta: 0.0 },
        guidance: 2.0,
        seed: 3,
        per_prompt: 2,
    };
    let mut calls = 0;
    let a = model.generate(&["a red circle", "a green star"], &opts, || calls += 1).unwrap();
    assert_eq!(a.dims(), &[4, 3, 8, 8]);
    assert_eq!(calls, 4);
    let values = a.to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    // Same seed, same images; the saved model samples as the trainer's own.
    let b = trainer.model.generate(&["a red circle", "a green star"], &opts, || {}).unwrap();
    assert_close(&a, &b, 1e-6, 0.0, "reloaded model");
    let ddpm = SampleOptions {
        sampler: SamplerKind::Ddpm,
        guidance: 1.0,
        ..opts
    };
    assert_eq!(model.generate(&["x"], &ddpm, || {}).unwrap().dims(), &[2, 3, 8, 8]);
    let err = |o: SampleOptions, prompts: &[&str]| model.generate(prompts, &o, || {}).unwrap_err().to_string();
    assert!(err(opts, &[]).contains("no prompts"));
    assert!(err(SampleOptions { guidance: -1.0, ..opts }, &["a"]).contains("guidance"));
    assert!(err(SampleOptions { steps: 0, ..opts }, &["a"]).contains("inference steps"));
    assert!(err(SampleOptions { per_prompt: 0, ..opts }, &["a"]).contains("per prompt"));
}

#[test]
fn diffusion_training_and_sampling_run_on_the_emulator_as_on_the_cpu() {
    use vlk::diffusion::SampleOptions;
    let (mut cpu, mut emu) = (tiny_trainer_on(2, Device::Cpu), tiny_trainer_on(2, Device::Emu));
    for step in 0..2 {
        let (a, b) = (train_on(&mut cpu, step), train_on(&mut emu, step));
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "step {step}: cpu {a}, emu {b}");
    }
    let opts = SampleOptions {
        steps: 3,
        sampler: SamplerKind::Ddpm,
        guidance: 2.0,
        seed: 4,
        per_prompt: 1,
    };
    let a = cpu.model.generate(&["a red circle"], &opts, || {}).unwrap();
    let b = emu.model.generate(&["a red circle"], &opts, || {}).unwrap();
    assert_close(&b, &a, 1e-3, 1e-3, "samples on the emulator");
}
