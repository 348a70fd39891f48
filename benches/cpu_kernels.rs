//! Criterion benches of the CPU kernels: f32 and bf16 GEMM at n = 256, 512, 1024 (bf16 on the
//! fastest kernel the CPU has: AMX, AVX512-BF16, or widened to f32), and the fused attention
//! forward and forward+backward at ViT-B/32 shape (b8 h8 s197 d64), layer norm (4096 x 768).
//! Throughput is reported in FLOPs (GEMM, attention) or bytes (layer norm).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vlk::ops::AttentionOptions;
use vlk::{DType, Device, Rng, Tensor};

/// Tensor buffers on 64-byte lines, as in the `vlk` binary.
#[global_allocator]
static ALLOC: vlk::backend::cpu::LineAlignedAlloc = vlk::backend::cpu::LineAlignedAlloc;

fn randn(rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::randn(rng, shape, 0.0, 1.0, DType::F32, Device::Cpu).unwrap()
}

fn gemm(c: &mut Criterion) {
    let mut rng = Rng::new(0);
    let mut group = c.benchmark_group("gemm_f32");
    for n in [256usize, 512, 1024] {
        let (a, b) = (randn(&mut rng, &[n, n]), randn(&mut rng, &[n, n]));
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        group.bench_function(format!("{n}"), |bench| bench.iter(|| a.matmul(&b).unwrap()));
    }
    group.finish();
    let mut group = c.benchmark_group("gemm_bf16");
    for n in [256usize, 512, 1024] {
        let bf16 = |t: Tensor| t.to_dtype(DType::BF16).unwrap();
        let (a, b) = (bf16(randn(&mut rng, &[n, n])), bf16(randn(&mut rng, &[n, n])));
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        group.bench_function(format!("{n}"), |bench| bench.iter(|| a.matmul(&b).unwrap()));
    }
    group.finish();
}

fn attention(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let (b, h, s, d) = (8, 8, 197, 64);
    let q = randn(&mut rng, &[b, h, s, d]).to_var().unwrap();
    let k = randn(&mut rng, &[b, h, s, d]).to_var().unwrap();
    let v = randn(&mut rng, &[b, h, s, d]).to_var().unwrap();
    let flops = (4 * b * h * s * s * d) as u64;
    let mut group = c.benchmark_group("attention_b8_h8_s197_d64");
    group.sample_size(20);
    group.throughput(Throughput::Elements(flops));
    group.bench_function("forward", |bench| {
        bench.iter(|| vlk::no_grad(|| Tensor::attention(&q, &k, &v, AttentionOptions::default()).unwrap()))
    });
    group.throughput(Throughput::Elements(flops * 7 / 2));
    group.bench_function("forward_backward", |bench| {
        bench.iter(|| {
            Tensor::attention(&q, &k, &v, AttentionOptions::default())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    group.finish();
}

fn layer_norm(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    let (rows, cols) = (4096, 768);
    let x = randn(&mut rng, &[rows, cols]);
    let (g, bias) = (randn(&mut rng, &[cols]), randn(&mut rng, &[cols]));
    let mut group = c.benchmark_group("layer_norm_4096x768");
    group.throughput(Throughput::Bytes((2 * rows * cols * 4) as u64));
    group.bench_function("forward", |bench| {
        bench.iter(|| vlk::no_grad(|| x.layer_norm(&g, &bias, 1e-5).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, gemm, attention, layer_norm);
criterion_main!(benches);
