//! Per-token cost of decoding with the captioner's KV cache, against recomputing the whole
//! prefix (what decoding without a cache costs): one new token after 8, 32, 96 and 192 tokens,
//! for a decoder 256 wide with 4 layers cross-attending to 50 image tokens. With the cache the
//! cost stays close to flat (only attention grows with the prefix); without it it grows with
//! the prefix.

use criterion::{criterion_group, criterion_main, Criterion};
use vlk::models::{Captioner, CaptionerConfig, ClipVisionConfig, DecoderConfig};
use vlk::nn::Activation;
use vlk::{DType, Device, Rng, Tensor};

/// Tensor buffers on 64-byte lines, as in the `vlk` binary.
#[global_allocator]
static ALLOC: vlk::backend::cpu::LineAlignedAlloc = vlk::backend::cpu::LineAlignedAlloc;

fn model() -> Captioner {
    let config = CaptionerConfig {
        vision: ClipVisionConfig {
            hidden_size: 256,
            intermediate_size: 1024,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_channels: 3,
            image_size: 56,
            patch_size: 8,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        },
        decoder: DecoderConfig {
            vocab_size: 1000,
            hidden_size: 256,
            intermediate_size: 1024,
            num_layers: 4,
            num_heads: 4,
            max_length: 256,
            tie_embeddings: true,
            layer_norm_eps: 1e-5,
            bos_token_id: 0,
            eos_token_id: 1,
        },
    };
    Captioner::new(config, Device::Cpu, DType::F32, 0).unwrap()
}

fn decode(c: &mut Criterion) {
    let m = model();
    let mut rng = Rng::new(1);
    let pixels = Tensor::randn(&mut rng, &[1, 3, 56, 56], 0.0, 1.0, DType::F32, Device::Cpu).unwrap();
    let _guard = vlk::NoGradGuard::new();
    let image = m.encode_image(&pixels).unwrap();
    let ids = |n: usize| Tensor::from_vec((0..n as u32).map(|i| 2 + i % 900).collect(), &[1, n], Device::Cpu).unwrap();
    let mut group = c.benchmark_group("decode_one_token");
    group.sample_size(20);
    for prefix in [8usize, 32, 96, 192] {
        let mut cache = m.start(&image).unwrap();
        m.step(&ids(prefix), &mut cache).unwrap();
        let next = ids(1);
        group.bench_function(format!("kv_cache/after_{prefix}"), |b| {
            b.iter(|| {
                let mut c = cache.clone();
                m.step(&next, &mut c).unwrap()
            })
        });
        let all = ids(prefix + 1);
        group.bench_function(format!("recompute/after_{prefix}"), |b| {
            b.iter(|| {
                let mut c = m.start(&image).unwrap();
                m.step(&all, &mut c).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
