//! CPU latency of a real-size CLIP (OpenAI ViT-B/32 shapes, random weights): the image tower at
//! batch 1 and 8 (224 x 224) and the text tower at batch 8 x 77 tokens, f32, inference.

use criterion::{criterion_group, criterion_main, Criterion};
use vlk::models::{Clip, ClipConfig};
use vlk::{DType, Device, Rng, Tensor};

/// Tensor buffers on 64-byte lines, as in the `vlk` binary.
#[global_allocator]
static ALLOC: vlk::backend::cpu::LineAlignedAlloc = vlk::backend::cpu::LineAlignedAlloc;

fn clip_towers(c: &mut Criterion) {
    let clip = Clip::new(ClipConfig::vit_b32(), Device::Cpu, DType::F32, 0).unwrap();
    let mut rng = Rng::new(1);
    let mut group = c.benchmark_group("clip_vit_b32_cpu");
    group.sample_size(10);
    for batch in [1usize, 8] {
        let pixels = Tensor::randn(&mut rng, &[batch, 3, 224, 224], 0.0, 1.0, DType::F32, Device::Cpu).unwrap();
        group.bench_function(format!("image_tower_batch{batch}"), |b| {
            b.iter(|| vlk::no_grad(|| clip.image_embeds(&pixels).unwrap()))
        });
    }
    let ids: Vec<u32> = (0..8 * 77)
        .map(|i| if i % 77 == 76 { 49407 } else { (i as u32 * 7919) % 49000 })
        .collect();
    let ids = Tensor::from_vec(ids, &[8, 77], Device::Cpu).unwrap();
    group.bench_function("text_tower_batch8x77", |b| {
        b.iter(|| vlk::no_grad(|| clip.text_embeds(&ids, None).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, clip_towers);
criterion_main!(benches);
