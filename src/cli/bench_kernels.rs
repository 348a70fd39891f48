//! `vlk bench-kernels`: times the kernel workloads scripts/torch_kernels_bench.py times in
//! PyTorch, with the same names and shapes, so scripts/gpu-check.sh can set them side by side.
//! Each repeat is timed alone (CUDA events on a GPU) after the L2 cache is flushed by writing a
//! 256 MiB buffer; the median and the 10th/90th percentiles are reported. Inputs are random
//! normal, never zeros.

use vlk::backend::gpu;
use vlk::ops::AttentionOptions;
use vlk::{DType, DenoiseParams, Device, Prediction, Result, Rng, Tensor};

#[derive(clap::Args)]
pub struct BenchKernelsArgs {
    /// cuda, emu or cpu (default: VLK_DEVICE, else a GPU when present, else cpu).
    #[arg(long)]
    device: Option<String>,
    /// Only workloads whose name contains this (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// Timed repeats per workload.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Small shapes: a smoke run that also works on the emulator.
    #[arg(long)]
    quick: bool,
    /// Print one JSON list instead of a table.
    #[arg(long)]
    json: bool,
}

/// What a workload's rate is measured in.
enum Work {
    Flops(f64),
    Bytes(f64),
}

struct Row {
    name: String,
    shape: String,
    work: Work,
    ms: [f64; 3],
}

/// Times `f` `repeats` times (after one warm-up), flushing L2 before each; (median, p10, p90).
fn time(device: Device, repeats: usize, flush: Option<&Tensor>, f: &mut dyn FnMut() -> Result<()>) -> Result<[f64; 3]> {
    f()?;
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        if let Some(buf) = flush {
            buf.assign(&Tensor::zeros(&[], buf.dtype(), device)?.broadcast_as(buf.dims())?)?;
        }
        let ms = match device {
            Device::Cpu => {
                let start = std::time::Instant::now();
                f()?;
                start.elapsed().as_secs_f64() * 1e3
            }
            _ => gpu::backend(device)?.time_ms(f)?,
        };
        samples.push(ms);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Ok([at(0.5), at(0.1), at(0.9)])
}

pub fn run(args: BenchKernelsArgs) -> Result<()> {
    let device = match &args.device {
        Some(d) => Device::parse(d)?,
        None => Device::default_device()?,
    };
    let q = args.quick;
    let mut rng = Rng::new(0);
    let mut randn = |shape: &[usize], dtype: DType| Tensor::randn(&mut rng, shape, 0.0, 1.0, dtype, device);
    let flush = if device == Device::Cpu || q {
        None
    } else {
        Some(Tensor::zeros(&[64 << 20], DType::F32, device)?)
    };
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| name.contains(o.as_str()));
    let mut rows = Vec::new();
    let mut bench = |name: String, shape: String, work: Work, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let ms = time(device, args.repeats, flush.as_ref(), f)?;
        if !args.json {
            eprintln!("{name:<28} {ms:>10.3?} ms", ms = ms[0]);
        }
        rows.push(Row { name, shape, work, ms });
        Ok(())
    };
    let _guard = vlk::NoGradGuard::new();

    let gemm_sizes: &[usize] = if q { &[64, 96] } else { &[1024, 4096, 8192] };
    for &n in gemm_sizes {
        let name = format!("gemm_bf16_n{n}");
        if wanted(&name) {
            let (a, b) = (randn(&[n, n], DType::BF16)?, randn(&[n, n], DType::BF16)?);
            bench(name, format!("{n}x{n}x{n}"), Work::Flops(2.0 * (n as f64).powi(3)), &mut || {
                a.matmul(&b).map(drop)
            })?;
        }
    }
    let n = if q { 64 } else { 4096 };
    if wanted("gemm_f32") {
        let (a, b) = (randn(&[n, n], DType::F32)?, randn(&[n, n], DType::F32)?);
        bench(
            format!("gemm_f32_n{n}"),
            format!("{n}x{n}x{n}"),
            Work::Flops(2.0 * (n as f64).powi(3)),
            &mut || a.matmul(&b).map(drop),
        )?;
    }

    let (b, h, s) = if q { (1, 2, 96) } else { (4, 16, 4096) };
    for d in [64usize, 128] {
        for causal in [false, true] {
            let name = if causal {
                format!("attn_fwd_causal_bf16_d{d}")
            } else {
                format!("attn_fwd_bf16_d{d}")
            };
            let bwd_name = format!("attn_bwd_bf16_d{d}");
            let time_bwd = !causal && wanted(&bwd_name);
            if !wanted(&name) && !time_bwd {
                continue;
            }
            let shape = format!("b{b} h{h} s{s} d{d}");
            let flops = 4.0 * (b * h * s * s * d) as f64 * if causal { 0.5 } else { 1.0 };
            let [qt, kt, vt] = [0, 1, 2].map(|_| randn(&[b, h, s, d], DType::BF16));
            let (qt, kt, vt) = (qt?, kt?, vt?);
            let opts = AttentionOptions {
                causal,
                ..Default::default()
            };
            if wanted(&name) {
                bench(name, shape.clone(), Work::Flops(flops), &mut || {
                    Tensor::attention(&qt, &kt, &vt, opts).map(drop)
                })?;
            }
            if time_bwd {
                let (qv, kv, vv) = (qt.to_var()?, kt.to_var()?, vt.to_var()?);
                let out = vlk::autograd::with_grad(|| Tensor::attention(&qv, &kv, &vv, opts))?;
                let g = randn(out.dims(), DType::BF16)?;
                bench(bwd_name, shape, Work::Flops(2.5 * flops), &mut || {
                    out.backward_with_grad(&g).map(drop)
                })?;
            }
        }
    }

    let (rows_ln, c_ln) = if q { (64, 96) } else { (32768, 4096) };
    if wanted("layernorm") {
        let x = randn(&[rows_ln, c_ln], DType::BF16)?;
        let (gm, bt) = (randn(&[c_ln], DType::BF16)?, randn(&[c_ln], DType::BF16)?);
        let numel = (rows_ln * c_ln) as f64;
        let shape = format!("{rows_ln}x{c_ln}");
        if wanted("layernorm_fwd") {
            bench(
                "layernorm_fwd_bf16".into(),
                shape.clone(),
                Work::Bytes(2.0 * numel * 2.0),
                &mut || x.layer_norm(&gm, &bt, 1e-5).map(drop),
            )?;
        }
        if wanted("layernorm_bwd") {
            let xv = x.to_var()?;
            let y = vlk::autograd::with_grad(|| xv.layer_norm(&gm, &bt, 1e-5))?;
            let g = randn(y.dims(), DType::BF16)?;
            bench("layernorm_bwd_bf16".into(), shape, Work::Bytes(3.0 * numel * 2.0), &mut || {
                y.backward_with_grad(&g).map(drop)
            })?;
        }
    }

    let (rows_x, classes) = if q { (32, 200) } else { (8192, 32768) };
    if wanted("xent") {
        let logits = randn(&[rows_x, classes], DType::BF16)?;
        let targets: Vec<i64> = (0..rows_x).map(|i| (i * 7919 % classes) as i64).collect();
        let t = Tensor::from_vec(targets, &[rows_x], device)?;
        let numel = (rows_x * classes) as f64;
        let shape = format!("{rows_x}x{classes}");
        if wanted("xent_fwd") {
            bench("xent_fwd_bf16".into(), shape.clone(), Work::Bytes(numel * 2.0), &mut || {
                logits.cross_entropy_per_row(&t, -100).map(drop)
            })?;
        }
        if wanted("xent_bwd") {
            let lv = logits.to_var()?;
            let loss = vlk::autograd::with_grad(|| lv.cross_entropy_per_row(&t, -100))?;
            let g = randn(loss.dims(), DType::BF16)?;
            bench("xent_bwd_bf16".into(), shape, Work::Bytes(2.0 * numel * 2.0), &mut || {
                loss.backward_with_grad(&g).map(drop)
            })?;
        }
    }

    let n = if q { 4096 } else { 1 << 26 };
    if wanted("denoise") {
        let [x, c, u, z] = [0, 1, 2, 3].map(|_| randn(&[n], DType::BF16));
        let (x, c, u, z) = (x?, c?, u?, z?);
        let p = DenoiseParams {
            guidance: 3.0,
            prediction: Prediction::Epsilon,
            sqrt_alpha_bar: 0.8,
            sqrt_one_minus_alpha_bar: 0.6,
            clip_sample: 0.0,
            c_x0: 0.7,
            c_xt: 0.2,
            c_eps: 0.0,
            c_noise: 0.1,
        };
        bench(
            "denoise_bf16".into(),
            format!("{n}"),
            Work::Bytes(5.0 * n as f64 * 2.0),
            &mut || Tensor::denoise_step(&x, &c, Some(&u), Some(&z), &p).map(drop),
        )?;
    }
    if wanted("copy") {
        // The bandwidth ceiling: a device-to-device copy of 2^28 elements (512 MiB each way).
        let n = if q { 4096 } else { 1 << 28 };
        let x = randn(&[n], DType::BF16)?;
        bench("copy_bf16".into(), format!("{n}"), Work::Bytes(2.0 * n as f64 * 2.0), &mut || {
            x.contiguous_copy().map(drop)
        })?;
    }
    report(&rows, device, args.json);
    Ok(())
}

fn report(rows: &[Row], device: Device, json: bool) {
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut o = serde_json::json!({"name": r.name, "dtype": if r.name.contains("f32") { "f32" } else { "bf16" }, "shape": r.shape, "impl": "vlk", "device": device.to_string(), "ms": r.ms[0], "ms_p10": r.ms[1], "ms_p90": r.ms[2]});
                match r.work {
                    Work::Flops(f) => {
                        o["flops"] = f.into();
                        o["tflops"] = (f / (r.ms[0] * 1e-3) / 1e12).into();
                    }
                    Work::Bytes(b) => {
                        o["bytes"] = b.into();
                        o["gbps"] = (b / (r.ms[0] * 1e-3) / 1e9).into();
                    }
                }
                o
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return;
    }
    println!(
        "{:<28} {:>18} {:>10} {:>10} {:>10} {:>12}",
        "workload", "shape", "median ms", "p10 ms", "p90 ms", "rate"
    );
    for r in rows {
        let rate = match r.work {
            Work::Flops(f) => format!("{:.2} TFLOP/s", f / (r.ms[0] * 1e-3) / 1e12),
            Work::Bytes(b) => format!("{:.1} GB/s", b / (r.ms[0] * 1e-3) / 1e9),
        };
        println!(
            "{:<28} {:>18} {:>10.3} {:>10.3} {:>10.3} {:>12}",
            r.name, r.shape, r.ms[0], r.ms[1], r.ms[2], rate
        );
    }
}
