//! `vlk ceilings`: this CPU's FMA peak and memory bandwidth, the ceilings the CPU kernels are
//! reported against.
//!
//! FMA: each thread runs a loop of independent fused multiply-adds on 12 vector accumulators
//! (enough to cover the FMA latency of current cores), AVX-512 where the CPU has it, else
//! AVX2+FMA; FLOPs = 2 x lanes x accumulators x iterations. bf16: the same with the fastest bf16
//! GEMM instruction the CPU has (AMX `tdpbf16ps` on zeroed tiles, or `vdpbf16ps`), the ceiling of
//! bf16 GEMM rows. Memory: a sum over a 512 MiB f32
//! buffer (read) and a copy between two such buffers with non-temporal stores (copy, counted as
//! bytes read plus bytes written, as STREAM counts it; glibc's memcpy reached half its rate on
//! the development VM), split across threads. Each figure is the median of 5 runs.

use rayon::prelude::*;
use serde_json::json;
use std::time::Instant;
use vlk::backend::cpu::gemm_bf16::{peak_probe, Bf16Kernel};
use vlk::backend::cpu::stream::copy_streamed;
use vlk::Result;

#[derive(clap::Args)]
pub struct CeilingsArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

const ACCUMULATORS: usize = 12;
const FMA_ITERATIONS: u64 = 50_000_000;
const BF16_TILE_ITERATIONS: u64 = 2_000_000;
const BUFFER_BYTES: usize = 512 << 20;
const RUNS: usize = 5;

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// FLOPs done by one call of `fma_loop`, and the instruction set it used.
fn fma_loop() -> (f64, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            unsafe { x86::fma_avx512(FMA_ITERATIONS) };
            return ((2 * 16 * ACCUMULATORS as u64 * FMA_ITERATIONS) as f64, "avx512f");
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            unsafe { x86::fma_avx2(FMA_ITERATIONS) };
            return ((2 * 8 * ACCUMULATORS as u64 * FMA_ITERATIONS) as f64, "avx2+fma");
        }
    }
    let n = FMA_ITERATIONS / 8;
    let mut acc = [1.0f32; ACCUMULATORS];
    for _ in 0..n {
        for a in &mut acc {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc);
    ((2 * ACCUMULATORS as u64 * n) as f64, "scalar")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::ACCUMULATORS;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_avx512(iterations: u64) {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); ACCUMULATORS];
        for _ in 0..iterations {
            for x in &mut acc {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        std::hint::black_box(acc);
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_avx2(iterations: u64) {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); ACCUMULATORS];
        for _ in 0..iterations {
            for x in &mut acc {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        std::hint::black_box(acc);
    }
}

/// A sum with 16 independent partial sums, so it runs at memory speed rather than at the
/// latency of one chain of dependent adds.
fn sum_lanes(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut blocks = v.chunks_exact(16);
    for b in &mut blocks {
        for (a, x) in acc.iter_mut().zip(b) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + blocks.remainder().iter().sum::<f32>()
}

/// GFLOP/s of `threads` threads running the FMA loop at once.
fn fma_rate(threads: usize) -> (f64, &'static str) {
    let start = Instant::now();
    let parts: Vec<(f64, &'static str)> = (0..threads).into_par_iter().map(|_| fma_loop()).collect();
    let secs = start.elapsed().as_secs_f64();
    (parts.iter().map(|p| p.0).sum::<f64>() / secs / 1e9, parts[0].1)
}

/// GFLOP/s of `threads` threads running `kernel`'s bf16 instruction at once.
fn bf16_rate(kernel: Bf16Kernel, threads: usize) -> f64 {
    let iterations = match kernel {
        Bf16Kernel::Amx => BF16_TILE_ITERATIONS,
        Bf16Kernel::Avx512 => FMA_ITERATIONS,
    };
    let start = Instant::now();
    let flops: f64 = (0..threads).into_par_iter().map(|_| peak_probe(kernel, iterations)).sum();
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// Two buffers past the cache, kept so that memory bandwidth can be measured again at any time:
/// `vlk bench` measures the copy rate beside each bandwidth row, since this VM's bandwidth
/// drifts by up to 2x within minutes.
pub struct CopyProbe {
    src: Vec<f32>,
    dst: Vec<f32>,
}

impl CopyProbe {
    pub fn new() -> CopyProbe {
        let n = BUFFER_BYTES / 4;
        let src: Vec<f32> = (0..n).into_par_iter().map(|i| (i % 251) as f32).collect();
        // Written, so that no timed run pays for the pages' first touch.
        let dst = src.clone();
        CopyProbe { src, dst }
    }

    fn chunk(&self) -> usize {
        self.src.len().div_ceil(rayon::current_num_threads())
    }

    /// One sum over the source buffer, split across threads: bytes read per second, in GB/s.
    pub fn read_gbps(&mut self) -> f64 {
        let start = Instant::now();
        let sum: f32 = self.src.par_chunks(self.chunk()).map(sum_lanes).sum();
        std::hint::black_box(sum);
        BUFFER_BYTES as f64 / start.elapsed().as_secs_f64() / 1e9
    }

    /// One copy between the buffers, split across threads: bytes read plus bytes written per
    /// second, in GB/s.
    pub fn copy_gbps(&mut self) -> f64 {
        let chunk = self.chunk();
        let start = Instant::now();
        self.dst
            .par_chunks_mut(chunk)
            .zip(self.src.par_chunks(chunk))
            .for_each(|(d, s)| copy_streamed(d, s));
        std::hint::black_box(&self.dst);
        2.0 * BUFFER_BYTES as f64 / start.elapsed().as_secs_f64() / 1e9
    }
}

/// This machine's measured ceilings (medians).
pub struct Ceilings {
    pub isa: &'static str,
    pub threads: usize,
    pub fma_gflops_one_thread: f64,
    pub fma_gflops: f64,
    /// The bf16 GEMM instruction's peak on all threads, and which kernel (None: bf16 is widened).
    pub bf16: Option<(Bf16Kernel, f64)>,
    pub read_gbps: f64,
    pub copy_gbps: f64,
}

/// Measures the ceilings, each the median of `runs` runs, memory through `probe`.
pub fn measure(runs: usize, probe: &mut CopyProbe) -> Ceilings {
    let threads = rayon::current_num_threads();
    let mut isa = "";
    let one: Vec<f64> = (0..runs)
        .map(|_| {
            let (r, i) = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .map(|pool| pool.install(|| fma_rate(1)))
                .unwrap_or_else(|_| fma_rate(1));
            isa = i;
            r
        })
        .collect();
    let all: Vec<f64> = (0..runs).map(|_| fma_rate(threads).0).collect();
    let bf16 = Bf16Kernel::best().map(|k| (k, median((0..runs).map(|_| bf16_rate(k, threads)).collect())));
    let read: Vec<f64> = (0..runs).map(|_| probe.read_gbps()).collect();
    let copy: Vec<f64> = (0..runs).map(|_| probe.copy_gbps()).collect();
    Ceilings {
        isa,
        threads,
        fma_gflops_one_thread: median(one),
        fma_gflops: median(all),
        bf16,
        read_gbps: median(read),
        copy_gbps: median(copy),
    }
}

impl Ceilings {
    pub fn to_json(&self) -> serde_json::Value {
        json!({"isa": self.isa, "threads": self.threads, "fma_gflops_one_thread": self.fma_gflops_one_thread,
               "fma_gflops_all_threads": self.fma_gflops, "bf16_kernel": self.bf16.map(|b| format!("{:?}", b.0).to_lowercase()),
               "bf16_gflops_all_threads": self.bf16.map(|b| b.1), "read_gb_per_s": self.read_gbps, "copy_gb_per_s": self.copy_gbps})
    }
}

pub fn run(args: CeilingsArgs) -> Result<()> {
    let c = measure(RUNS, &mut CopyProbe::new());
    if args.json {
        println!("{}", c.to_json());
        return Ok(());
    }
    let (isa, threads) = (c.isa, c.threads);
    println!(
        "FMA peak ({isa}): {:.0} GFLOP/s on one thread, {:.0} GFLOP/s on {threads}",
        c.fma_gflops_one_thread, c.fma_gflops
    );
    match c.bf16 {
        Some((kernel, g)) => println!("bf16 GEMM instruction peak ({kernel:?}): {g:.0} GFLOP/s on {threads}"),
        None => println!("bf16 GEMM: no bf16 instruction (bf16 is widened to f32)"),
    }
    println!(
        "memory: read {:.1} GB/s, copy {:.1} GB/s (read + written bytes), 512 MiB buffers",
        c.read_gbps, c.copy_gbps
    );
    Ok(())
}
