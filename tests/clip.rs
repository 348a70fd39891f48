//! CLIP: the tokenizer against OpenAI's ids and the Python `tokenizers` output, the models
//! against Hugging Face transformers' outputs on tiny random checkpoints (tests/fixtures, made by
//! scripts/make_fixtures.py), on the CPU and through the emulator, and bad checkpoint directories.

mod common;

use common::Scratch;
use vlk::data::tokenizer::ClipTokenizer;
use vlk::Device;

#[test]
fn tokenizer_matches_openai_ids() {
    let tok = ClipTokenizer::bundled().unwrap();
    assert_eq!(
        tok.encode("a photo of a cat").unwrap(),
        vec![49406, 320, 1125, 539, 320, 2368, 49407]
    );
    assert_eq!(tok.vocab_size(), 49408);
    // Padding with the end token, truncation keeping it last, and the mask.
    let long = "word ".repeat(100);
    let batch = tok.encode_batch(&["a photo of a cat", &long], 77, Device::Cpu).unwrap();
    assert_eq!(batch.ids.dims(), &[2, 77]);
    let ids = batch.ids.to_vec2::<u32>().unwrap();
    let mask = batch.mask.to_vec2::<u32>().unwrap();
    assert_eq!(ids[0][..8], [49406, 320, 1125, 539, 320, 2368, 49407, 49407]);
    assert_eq!(mask[0].iter().sum::<u32>(), 7);
    assert_eq!(ids[1][76], 49407);
    assert_eq!(mask[1].iter().sum::<u32>(), 77);
}

use std::path::{Path, PathBuf};
use vlk::models::Clip;
use vlk::{DType, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn assert_close(got: &Tensor, want: &Tensor, atol: f64, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (got.to_dtype(DType::F32).unwrap().to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    let err = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err <= atol, "{what}: max abs error {err:.2e} > {atol:.0e}");
}

/// Every hidden state, pooled output, projection and logit of a transformers checkpoint.
fn check_against_transformers(name: &str, device: Device, atol: f64) {
    let dir = fixture(name);
    let reference = vlk::io::safetensors::load(dir.join("reference.safetensors"), device).unwrap();
    let r = |k: &str| reference.get(k).unwrap_or_else(|| panic!("{name}: reference has no {k}")).clone();
    let clip = Clip::load(&dir, device, DType::F32).unwrap();
    let _guard = vlk::NoGradGuard::new();
    let vision = clip.vision_model.forward_all(&r("pixel_values")).unwrap();
    for (i, h) in vision.hidden_states.iter().enumerate() {
        assert_close(
            h,
            &r(&format!("vision_hidden_states.{i}")),
            atol,
            &format!("{name} vision hidden state {i} on {device}"),
        );
    }
    assert_close(&vision.pooled, &r("vision_pooled"), atol, "vision pooled");
    let ids = r("input_ids");
    let mask = r("attention_mask");
    let text = clip.text_model.forward_all(&ids, Some(&mask)).unwrap();
    for (i, h) in text.hidden_states.iter().enumerate() {
        assert_close(
            h,
            &r(&format!("text_hidden_states.{i}")),
            atol,
            &format!("{name} text hidden state {i} on {device}"),
        );
    }
    assert_close(
        &text.last_hidden_state,
        &r("text_last_hidden_state"),
        atol,
        "text last hidden state",
    );
    assert_close(&text.pooled, &r("text_pooled"), atol, "text pooled");
    let image_embeds = clip.image_embeds(&r("pixel_values")).unwrap();
    let text_embeds = clip.text_embeds(&ids, Some(&mask)).unwrap();
    assert_close(&image_embeds, &r("image_embeds"), atol, "image embeds");
    assert_close(&text_embeds, &r("text_embeds"), atol, "text embeds");
    let logits = clip.logits_per_image(&image_embeds, &text_embeds).unwrap();
    assert_close(&logits, &r("logits_per_image"), atol * 100.0, "logits per image");
}

#[test]
fn clip_matches_transformers_gelu() {
    check_against_transformers("clip-gelu", Device::Cpu, 1e-4);
    check_against_transformers("clip-gelu", Device::Emu, 1e-4);
}

#[test]
fn clip_matches_transformers_quick_gelu_unequal_towers() {
    check_against_transformers("clip-quickgelu", Device::Cpu, 1e-4);
    check_against_transformers("clip-quickgelu", Device::Emu, 1e-4);
}

#[test]
fn clip_matches_transformers_f16_checkpoint() {
    check_against_transformers("clip-f16", Device::Cpu, 2e-3);
    check_against_transformers("clip-f16", Device::Emu, 2e-3);
}

#[test]
fn tokenizer_matches_python_tokenizers_on_100_strings() {
    let tok = ClipTokenizer::from_file(&fixture("clip-f16/tokenizer.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_cases.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 100);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
    }
}

#[test]
fn save_and_reload_round_trips() {
    let dir = Scratch::new("save");
    let clip = Clip::load(&fixture("clip-gelu"), Device::Cpu, DType::F32).unwrap();
    clip.save(&dir).unwrap();
    let again = Clip::load(&dir, Device::Cpu, DType::F32).unwrap();
    for ((n1, t1), (n2, t2)) in clip.store.named().iter().zip(again.store.named()) {
        assert_eq!(n1, &n2);
        assert_eq!(t1.to_vec::<f32>().unwrap(), t2.to_vec::<f32>().unwrap(), "{n1}");
    }
    assert_eq!(again.config, clip.config);
}

#[test]
fn bad_checkpoint_directories_are_clear_errors() {
    let tmp = Scratch::new("bad");
    // No config.
    let e = Clip::load(&tmp, Device::Cpu, DType::F32).err().unwrap().to_string();
    assert!(e.contains("config.json") && e.contains("cannot read the model config"), "{e}");
    // A config whose sizes do not match the weights.
    let src = fixture("clip-gelu");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["vision_config"]["hidden_size"] = 64.into();
    std::fs::write(tmp.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), tmp.join("model.safetensors")).unwrap();
    let e = Clip::load(&tmp, Device::Cpu, DType::F32).err().unwrap().to_string();
    assert!(e.contains("vision_model.") && e.contains("the model expects"), "{e}");
    // An f64 tensor.
    std::fs::copy(src.join("config.json"), tmp.join("config.json")).unwrap();
    let mut tensors: Vec<(String, Tensor)> = vlk::io::safetensors::load(src.join("model.safetensors"), Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    tensors
        .iter_mut()
        .filter(|(n, _)| n == "logit_scale")
        .for_each(|(_, t)| *t = t.to_dtype(DType::F64).unwrap());
    vlk::io::safetensors::save(tmp.join("model.safetensors"), &tensors).unwrap();
    let e = Clip::load(&tmp, Device::Cpu, DType::F32).err().unwrap().to_string();
    assert!(
        e.contains("'logit_scale'") && e.contains("F64") && e.contains("f32, f16, bf16"),
        "{e}"
    );
}

#[test]
fn vit_matches_transformers() {
    for device in [Device::Cpu, Device::Emu] {
        let dir = fixture("vit-tiny");
        let reference = vlk::io::safetensors::load(dir.join("reference.safetensors"), device).unwrap();
        let model = vlk::models::vit_hf::VitModel::load(&dir, device, DType::F32).unwrap();
        let out = vlk::no_grad(|| model.forward_all(&reference["pixel_values"])).unwrap();
        for (i, h) in out.hidden_states.iter().enumerate() {
            assert_close(
                h,
                &reference[&format!("hidden_states.{i}")],
                1e-4,
                &format!("vit hidden state {i} on {device}"),
            );
        }
        assert_close(
            &out.last_hidden_state,
            &reference["last_hidden_state"],
            1e-4,
            "vit last hidden state",
        );
        assert_close(&out.pooler_output, &reference["pooler_output"], 1e-4, "vit pooler");
    }
}

#[test]
fn real_size_vit_b32_config_embeds_end_to_end() {
    let config = vlk::models::ClipConfig::vit_b32();
    assert_eq!(
        (
            config.vision.hidden_size,
            config.vision.num_hidden_layers,
            config.vision.patch_size,
            config.vision.image_size
        ),
        (768, 12, 32, 224)
    );
    assert_eq!(
        (
            config.text.hidden_size,
            config.text.num_hidden_layers,
            config.text.num_attention_heads
        ),
        (512, 12, 8)
    );
    let clip = Clip::new(config, Device::Cpu, DType::F32, 1).unwrap();
    let mut rng = vlk::Rng::new(2);
    let pixels = Tensor::randn(&mut rng, &[1, 3, 224, 224], 0.0, 1.0, DType::F32, Device::Cpu).unwrap();
    let tok = ClipTokenizer::bundled().unwrap();
    let batch = tok.encode_batch(&["a photo of a cat"], 77, Device::Cpu).unwrap();
    let _guard = vlk::NoGradGuard::new();
    let (i, t) = (
        clip.image_embeds(&pixels).unwrap(),
        clip.text_embeds(&batch.ids, Some(&batch.mask)).unwrap(),
    );
    assert_eq!((i.dims(), t.dims()), (&[1, 512][..], &[1, 512][..]));
    let logit = clip.logits_per_image(&i, &t).unwrap().to_f64().unwrap();
    assert!(logit.is_finite() && logit.abs() <= 14.3, "cosine times exp(2.6592): {logit}");
}

#[test]
fn image_preprocessing_matches_transformers() {
    let dir = fixture("preprocess");
    let reference = vlk::io::safetensors::load(dir.join("reference.safetensors"), Device::Cpu).unwrap();
    let proc = vlk::data::image::ImageProcessor::clip(16);
    for name in ["wide.png", "tall.jpg", "square.png"] {
        let got = proc.process(&vlk::data::image::load_image(&dir.join(name)).unwrap());
        let want = reference[name].to_vec::<f32>().unwrap();
        // PIL's and the image crate's bicubic filters differ in the last bits of each pixel,
        // and JPEG decoders may differ by a level: compare per pixel and on average.
        let diffs: Vec<f32> = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).collect();
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        let max = diffs.iter().copied().fold(0.0, f32::max);
        assert!(
            mean < 0.01 && max < 0.08,
            "{name}: mean |diff| {mean:.4}, max {max:.4} (normalised units)"
        );
    }
}

#[test]
fn contrastive_loss_is_the_symmetric_cross_entropy_and_reaches_every_part() {
    let dir = fixture("clip-gelu");
    let reference = vlk::io::safetensors::load(dir.join("reference.safetensors"), Device::Cpu).unwrap();
    let clip = Clip::load(&dir, Device::Cpu, DType::F32).unwrap();
    let (i, t) = (
        clip.image_embeds(&reference["pixel_values"]).unwrap(),
        clip.text_embeds(&reference["input_ids"], Some(&reference["attention_mask"]))
            .unwrap(),
    );
    let logits = clip.logits_per_image(&i, &t).unwrap();
    let loss = clip.contrastive_loss(&logits).unwrap();
    let l: Vec<Vec<f64>> = logits
        .to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(f64::from).collect())
        .collect();
    let n = l.len();
    let xent = |row: &dyn Fn(usize, usize) -> f64| -> f64 {
        (0..n)
            .map(|a| (0..n).map(|b| row(a, b).exp()).sum::<f64>().ln() - row(a, a))
            .sum::<f64>()
            / n as f64
    };
    let want = 0.5 * (xent(&|a, b| l[a][b]) + xent(&|a, b| l[b][a]));
    assert!((loss.to_f64().unwrap() - want).abs() < 1e-5, "{} vs {want}", loss.to_f64().unwrap());
    let grads = loss.backward().unwrap();
    for name in [
        "logit_scale",
        "visual_projection.weight",
        "text_projection.weight",
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.class_embedding",
        "text_model.embeddings.token_embedding.weight",
        "text_model.encoder.layers.1.mlp.fc2.weight",
    ] {
        let p = clip.store.get(name).unwrap();
        let g = grads
            .get(&p)
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .to_f64_vec()
            .unwrap();
        assert!(
            g.iter().all(|x| x.is_finite()) && g.iter().any(|&x| x != 0.0),
            "{name}: gradient missing or not finite"
        );
    }
}

#[test]
fn word_level_tokenizer_round_trips_through_a_file() {
    let tok = ClipTokenizer::word_level(&["a", "red", "circle", "on", "the", "left"]).unwrap();
    assert_eq!(tok.encode("A red  circle, on the LEFT").unwrap(), vec![0, 3, 4, 5, 2, 6, 7, 8, 1]);
    assert_eq!(tok.eos_id(), 1);
    let dir = Scratch::new("wordlevel");
    let path = dir.join("tokenizer.json");
    tok.save(&path).unwrap();
    let again = ClipTokenizer::from_file(&path).unwrap();
    assert_eq!(again.encode("the red circle").unwrap(), vec![0, 7, 4, 5, 1]);
    assert!(ClipTokenizer::word_level(&["a", "a"]).is_err());
}
