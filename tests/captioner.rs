//! The captioner: decoding with the KV cache gives the tokens (and logits) of decoding without
//! it, gradients through cross-attention match finite differences, the model matches itself on
//! the emulator, the decoding strategies agree where they must, teacher-forcing targets skip the
//! prompt and padding, training resumes exactly, and the metrics are right on known cases.

mod common;

use common::{assert_close, Scratch};
use vlk::data::tokenizer::ClipTokenizer;
use vlk::models::{Captioner, CaptionerConfig, ClipVisionConfig, DecoderConfig, KvCache, Strategy};
use vlk::nn::Activation;
use vlk::train::captioner::{CaptionTrainConfig, CaptionerTrainer, Example, Task};
use vlk::train::captioner_eval::{bleu4, token_f1, words};
use vlk::{DType, Device, Rng, Tensor};

fn config(vocab: usize, max_length: usize) -> CaptionerConfig {
    CaptionerConfig {
        vision: ClipVisionConfig {
            hidden_size: 12,
            intermediate_size: 24,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_channels: 3,
            image_size: 8,
            patch_size: 4,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        },
        decoder: DecoderConfig {
            vocab_size: vocab,
            hidden_size: 16,
            intermediate_size: 32,
            num_layers: 2,
            num_heads: 4,
            max_length,
            tie_embeddings: true,
            layer_norm_eps: 1e-5,
            bos_token_id: 0,
            eos_token_id: 1,
        },
    }
}

/// A model whose every parameter is drawn wide, so outputs are far from uniform.
fn model(seed: u64, dtype: DType, tied: bool) -> Captioner {
    let mut c = config(23, 14);
    c.decoder.tie_embeddings = tied;
    let m = Captioner::new(c, Device::Cpu, dtype, seed).unwrap();
    let mut rng = Rng::new(seed + 7);
    for (_, p) in m.store.named() {
        p.assign(&Tensor::randn(&mut rng, p.dims(), 0.0, 0.5, dtype, Device::Cpu).unwrap())
            .unwrap();
    }
    m
}

fn pixels(rng: &mut Rng, b: usize, dtype: DType) -> Tensor {
    Tensor::randn(rng, &[b, 3, 8, 8], 0.0, 1.0, dtype, Device::Cpu).unwrap()
}

#[test]
fn kv_cache_decoding_matches_full_recomputation() {
    for tied in [true, false] {
        let m = model(1, DType::F64, tied);
        let mut rng = Rng::new(2);
        let img = pixels(&mut rng, 1, DType::F64);
        // Without a cache: every step runs the whole prefix again.
        let prompt = vec![0u32, 5, 9];
        let mut seq = prompt.clone();
        let mut full_logits = Vec::new();
        while seq.len() < 14 {
            let ids = Tensor::from_vec(seq.clone(), &[1, seq.len()], Device::Cpu).unwrap();
            let logits = m.forward(&img, &ids).unwrap();
            let last = logits.narrow(1, seq.len() - 1, 1).unwrap().contiguous().unwrap();
            let row = last.to_f64_vec().unwrap();
            let next = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
            full_logits.push(last);
            if next == 1 {
                break;
            }
            seq.push(next);
        }
        let g = m
            .generate(&img, std::slice::from_ref(&prompt), 20, Strategy::Greedy)
            .unwrap()
            .remove(0);
        assert_eq!(g.tokens, seq[prompt.len()..].to_vec(), "tied {tied}");
        // The cached steps' logits equal the recomputed ones.
        let mut cache: KvCache = m.start(&m.encode_image(&img).unwrap()).unwrap();
        let mut logits = m
            .step(&Tensor::from_vec(prompt.clone(), &[1, 3], Device::Cpu).unwrap(), &mut cache)
            .unwrap();
        for (k, want) in full_logits.iter().enumerate() {
            let last = logits.narrow(1, logits.dims()[1] - 1, 1).unwrap().contiguous().unwrap();
            assert_close(&last, want, 1e-10, 1e-10, &format!("step {k}"));
            if prompt.len() + k >= seq.len() {
                break;
            }
            let next = seq[prompt.len() + k];
            logits = m
                .step(&Tensor::from_vec(vec![next], &[1, 1], Device::Cpu).unwrap(), &mut cache)
                .unwrap();
        }
    }
}

#[test]
fn decoding_strategies_agree_where_they_must() {
    let m = model(3, DType::F32, true);
    let mut rng = Rng::new(4);
    let img = pixels(&mut rng, 3, DType::F32);
    let prompts = vec![vec![0u32], vec![0, 7, 1], vec![0, 3]];
    let greedy = m.generate(&img, &prompts, 10, Strategy::Greedy).unwrap();
    let beam1 = m
        .generate(
            &img,
            &prompts,
            10,
            Strategy::Beam {
                width: 1,
                length_penalty: 0.6,
            },
        )
        .unwrap();
    assert_eq!(greedy, beam1);
    let top1 = m
        .generate(
            &img,
            &prompts,
            10,
            Strategy::Sample {
                temperature: 0.7,
                top_k: 1,
                seed: 5,
            },
        )
        .unwrap();
    assert_eq!(
        greedy.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
        top1.iter().map(|g| &g.tokens).collect::<Vec<_>>()
    );
    // Without a length penalty a wide beam finds an output at least as probable as greedy's.
    let beam = m
        .generate(
            &img,
            &prompts,
            10,
            Strategy::Beam {
                width: 6,
                length_penalty: 0.0,
            },
        )
        .unwrap();
    for (b, g) in beam.iter().zip(&greedy) {
        assert!(b.log_prob >= g.log_prob - 1e-9, "beam {} < greedy {}", b.log_prob, g.log_prob);
        assert!(b.tokens.len() <= 10);
    }
    // Sampling is reproducible from its seed.
    let s = |seed| {
        m.generate(
            &img,
            &prompts,
            10,
            Strategy::Sample {
                temperature: 1.5,
                top_k: 0,
                seed,
            },
        )
        .unwrap()
    };
    assert_eq!(s(9), s(9));
    // A prompt filling the model leaves no room: a clear error.
    let err = m
        .generate(&img.narrow(0, 0, 1).unwrap(), &[vec![0; 14]], 5, Strategy::Greedy)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no room"), "{err}");
}

#[test]
fn captioner_gradients_match_finite_differences() {
    let m = model(5, DType::F64, true);
    let mut rng = Rng::new(6);
    let img = pixels(&mut rng, 2, DType::F64);
    let ids = Tensor::from_vec(vec![0u32, 4, 9, 2, 0, 7, 7, 1], &[2, 4], Device::Cpu).unwrap();
    let w = Tensor::randn(&mut rng, &[2, 4, 23], 0.0, 1.0, DType::F64, Device::Cpu).unwrap();
    let loss = || m.forward(&img, &ids).unwrap().mul(&w).unwrap().sum_all().unwrap();
    let grads = loss().backward().unwrap();
    for name in [
        "decoder.layers.1.cross_attn.k_proj.weight",
        "decoder.layers.0.cross_attn.q_proj.bias",
        "decoder.layers.0.self_attn.v_proj.weight",
        "decoder.embed_tokens.weight",
        "visual_proj.weight",
        "vision_model.encoder.layers.0.mlp.fc1.weight",
        "vision_model.post_layernorm.weight",
    ] {
        let p = m.store.get(name).unwrap();
        let analytic = grads
            .get(&p)
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .to_f64_vec()
            .unwrap();
        let values = p.to_f64_vec().unwrap();
        for k in (0..values.len()).step_by(values.len().div_ceil(5)) {
            let at = |v: f64| {
                let mut moved = values.clone();
                moved[k] = v;
                p.assign(&Tensor::from_vec(moved, p.dims(), Device::Cpu).unwrap()).unwrap();
                loss().to_f64().unwrap()
            };
            let numeric = (at(values[k] + 1e-5) - at(values[k] - 1e-5)) / 2e-5;
            p.assign(&Tensor::from_vec(values.clone(), p.dims(), Device::Cpu).unwrap()).unwrap();
            let err = (analytic[k] - numeric).abs() / (1e-6 + 1e-4 * numeric.abs());
            assert!(err <= 1.0, "{name}[{k}]: analytic {} numeric {numeric}", analytic[k]);
        }
    }
}

#[test]
fn captioner_on_the_emulator_matches_the_cpu() {
    let m = model(8, DType::F32, false);
    let dir = Scratch::new("captioner-emu");
    m.save(&dir).unwrap();
    let e = Captioner::load(&dir, Device::Emu).unwrap();
    let mut rng = Rng::new(9);
    let img = pixels(&mut rng, 2, DType::F32);
    let ids = Tensor::from_vec(vec![0u32, 4, 9, 0, 7, 7], &[2, 3], Device::Cpu).unwrap();
    let want = m.forward(&img, &ids).unwrap();
    let got = e
        .forward(&img.to_device(Device::Emu).unwrap(), &ids.to_device(Device::Emu).unwrap())
        .unwrap();
    assert_close(&got.to_device(Device::Cpu).unwrap(), &want, 1e-4, 1e-4, "emulator");
}

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::word_level(&["a", "red", "circle", "what", "colour", "is", "the", "?", "blue"]).unwrap()
}

fn trainer(steps: u64) -> CaptionerTrainer {
    let tok = tokenizer();
    let mut c = config(tok.vocab_size(), 12);
    c.decoder.bos_token_id = tok.bos_id().unwrap();
    c.decoder.eos_token_id = tok.eos_id();
    let model = Captioner::new(c, Device::Cpu, DType::F32, 3).unwrap();
    let config = CaptionTrainConfig {
        task: Task::Vqa,
        steps,
        batch: 2,
        lr: 3e-3,
        min_lr: 1e-4,
        warmup_steps: 1,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
        seed: 1,
        freeze_vision: false,
    };
    CaptionerTrainer::new(model, tok, config).unwrap()
}

fn examples() -> Vec<Example> {
    vec![
        Example {
            question: Some("what colour is the circle?".into()),
            target: "red".into(),
        },
        Example {
            question: None,
            target: "a blue circle".into(),
        },
    ]
}

#[test]
fn teacher_forcing_scores_only_the_target() {
    let t = trainer(1);
    let (ids, targets) = t.sequences(&examples(), Device::Cpu).unwrap();
    let tok = tokenizer();
    let q = tok.encode("what colour is the circle?").unwrap();
    let red = tok.encode("red").unwrap()[1];
    let ids = ids.to_vec2::<u32>().unwrap();
    let targets = targets.to_vec2::<i64>().unwrap();
    // Row 0: the question then the answer; only the answer and the end token are scored.
    assert_eq!(ids[0][..q.len()], q[..]);
    assert_eq!(ids[0][q.len()], red);
    let scored: Vec<i64> = targets[0].iter().copied().filter(|&t| t != -100).collect();
    assert_eq!(scored, vec![red as i64, tok.eos_id() as i64]);
    // Row 1: a caption after the start token, padded; the padding is not scored.
    let caption = tok.encode("a blue circle").unwrap();
    assert_eq!(targets[1].iter().filter(|&&t| t != -100).count(), caption.len() - 1);
    assert_eq!(ids[1][0], tok.bos_id().unwrap());
}

#[test]
fn captioner_training_resumes_exactly() {
    let dir = Scratch::new("captioner-resume");
    let checkpoints = vlk::train::Checkpointer::new(&dir, 2);
    let batch = |s: u64| pixels(&mut Rng::new(50 + s), 2, DType::F32);
    let mut straight = trainer(4);
    let want: Vec<f64> = (0..4).map(|s| straight.train_step(&batch(s), &examples()).unwrap()).collect();
    let mut first = trainer(4);
    let mut got: Vec<f64> = (0..2).map(|s| first.train_step(&batch(s), &examples()).unwrap()).collect();
    let ck = first.save_checkpoint(&checkpoints, serde_json::json!({})).unwrap();
    let mut resumed = CaptionerTrainer::resume(&ck, Device::Cpu).unwrap();
    got.extend((2..4).map(|s| resumed.train_step(&batch(s), &examples()).unwrap()));
    assert_eq!(got, want);
    assert!(want[3] < want[0], "the loss falls on a fixed batch: {want:?}");
}

#[test]
fn answer_and_caption_metrics() {
    assert_eq!(words("What colour, is it?"), vec!["what", "colour", "is", "it"]);
    assert_eq!(token_f1("red", "red"), 1.0);
    assert_eq!(token_f1("blue", "red"), 0.0);
    assert!((token_f1("a red circle", "red circle") - 0.8).abs() < 1e-12);
    let s = |t: &str| words(t);
    let refs = vec![s("a red circle on the left of the image")];
    assert!((bleu4(&refs, &refs) - 1.0).abs() < 1e-12);
    assert_eq!(bleu4(&[s("blue star")], &refs), 0.0);
    // Shorter than the reference: the brevity penalty applies.
    let short = bleu4(&[s("a red circle on the left")], &refs);
    assert!(short > 0.0 && short < 1.0, "{short}");
}
