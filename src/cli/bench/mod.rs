//! `vlk bench`: times named workloads (GEMM, attention, layer norm, softmax-xent, the denoise
//! step, a copy, CLIP towers and training steps) on one device, reports the median and spread,
//! the rate and its share of the machine's ceiling, and with `--vs torch` times the same work in
//! PyTorch in the same run, interleaved round by round, with the time ratio per row.
//!
//! Method: warm-up runs (one, then more until they add up to 300 ms), then `--repeats` timed
//! runs (fewer for slow workloads, so each takes about `--budget` seconds), split in rounds that
//! alternate vlk and PyTorch, 300 ms apart (`ROUND_GAP_MS`). Each run is timed
//! alone: wall clock on the CPU, CUDA events on a GPU after the L2 is flushed by a 256 MiB write.
//! CPU ceilings are measured at the start (`vlk ceilings`): FMA peak for FLOP rows (the bf16
//! instruction's peak for bf16 ones, where the CPU has one), copy bandwidth (bytes read + written)
//! for byte rows, which on the CPU is measured again beside each byte row (copies before its
//! rounds and after each); on a GPU the suite's copy row is the ceiling.

mod torch_peer;
mod workloads;

use crate::cli::ceilings;
use serde_json::{json, Value};
use std::path::PathBuf;
use torch_peer::TorchPeer;
use vlk::backend::cpu::simd::SimdLevel;
use vlk::backend::gpu;
use vlk::{DType, Device, Result, Tensor};
use workloads::{Suite, Work, Workload};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// cpu, cuda or emu (default: VLK_DEVICE, else a GPU when present, else cpu).
    #[arg(long)]
    device: Option<String>,
    /// Which shapes: sized for a cpu or a gpu (default: the device's), or quick (a smoke run).
    #[arg(long, value_enum)]
    suite: Option<Suite>,
    /// Only workloads whose name contains this (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// Timed repeats per workload (at most; see --budget).
    #[arg(long, default_value_t = 15)]
    repeats: usize,
    /// Seconds of timed runs per workload and side, which lowers the repeats of slow workloads (at least 3).
    #[arg(long, default_value_t = 8.0)]
    budget: f64,
    /// Also time the workloads in PyTorch: `--vs torch`.
    #[arg(long, value_parser = ["torch"])]
    vs: Option<String>,
    /// The python that has torch (default: VLK_PYTHON, else python3).
    #[arg(long)]
    python: Option<String>,
    /// The PyTorch side (default: scripts/torch_bench.py, else torch_bench.py beside the binary).
    #[arg(long)]
    torch_script: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to FILE, rewritten after every row (so a timeout keeps the rows done).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// List the suite's workloads and exit.
    #[arg(long)]
    list: bool,
}

/// Median and 10th/90th percentiles of samples in ms.
#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    p10: f64,
    p90: f64,
}

impl Stats {
    fn of(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Stats {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
        }
    }

    fn json(&self) -> Value {
        json!({"ms": self.median, "ms_p10": self.p10, "ms_p90": self.p90})
    }
}

struct Row {
    name: String,
    shape: String,
    dtype: DType,
    work: Work,
    repeats: usize,
    vlk: Stats,
    /// (implementation, timings) from PyTorch, or why it has none.
    torch: std::result::Result<Vec<(String, Stats)>, String>,
    /// The copy bandwidth measured beside the row (CPU byte rows; the read bandwidth for rows
    /// that only read), in GB/s: what its GB/s are held against instead of the run's opening
    /// figure.
    bandwidth_beside: Option<f64>,
}

/// What rates are held against: GFLOP/s and GB/s.
struct Ceiling {
    gflops: Option<f64>,
    /// For bf16 FLOP rows, where the CPU has a bf16 GEMM instruction.
    bf16_gflops: Option<f64>,
    gbps: Option<f64>,
    /// For rows that only read (the CPU's read probe; on a GPU the copy row stands in).
    read_gbps: Option<f64>,
    source: Value,
}

/// Runs `f` once alone, timed: wall clock on the CPU, CUDA events (or a synchronised wall clock
/// on Emu) on a GPU, after flushing the L2 when `flush` is given.
fn time_once(device: Device, flush: Option<&Tensor>, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    if let Some(buf) = flush {
        buf.assign(&Tensor::zeros(&[], buf.dtype(), device)?.broadcast_as(buf.dims())?)?;
    }
    match device {
        Device::Cpu => {
            let start = std::time::Instant::now();
            f()?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        }
        _ => gpu::backend(device)?.time_ms(f),
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let device = match &args.device {
        Some(d) => Device::parse(d)?,
        None => Device::default_device()?,
    };
    let suite = args.suite.unwrap_or(match device {
        Device::Cpu => Suite::Cpu,
        Device::Cuda(_) => Suite::Gpu,
        _ => Suite::Quick,
    });
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| name.contains(o.as_str()));
    let workloads: Vec<Workload> = workloads::suite(suite).into_iter().filter(|w| wanted(&w.name)).collect();
    if args.list {
        for w in &workloads {
            println!("{:<32} {:<5} {}", w.name, w.dtype, w.shape());
        }
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let mut peer = match args.vs.as_deref() {
        Some(_) => {
            let script = args
                .torch_script
                .clone()
                .or_else(torch_peer::default_script)
                .ok_or_else(|| vlk::Error::msg("bench --vs torch: scripts/torch_bench.py not found here; pass --torch-script PATH"))?;
            let python = args
                .python
                .clone()
                .or_else(|| std::env::var("VLK_PYTHON").ok())
                .unwrap_or_else(|| "python3".into());
            Some(TorchPeer::start(
                &python,
                &script,
                device,
                threads,
                matches!(device, Device::Cuda(_)),
            )?)
        }
        None => None,
    };
    // CPU: the buffers of the memory ceiling, measured at the start and again beside byte rows.
    let mut probe = matches!(device, Device::Cpu).then(ceilings::CopyProbe::new);
    let mut ceiling = match probe.as_mut() {
        Some(probe) => {
            let c = ceilings::measure(3, probe);
            Ceiling {
                gflops: Some(c.fma_gflops),
                bf16_gflops: c.bf16.map(|b| b.1),
                gbps: Some(c.copy_gbps),
                read_gbps: Some(c.read_gbps),
                source: c.to_json(),
            }
        }
        None => Ceiling {
            gflops: None,
            bf16_gflops: None,
            gbps: None,
            read_gbps: None,
            source: json!("the suite's copy row (bandwidth); no FLOP ceiling is measured on a GPU"),
        },
    };
    if !args.json {
        eprintln!("{}", describe(device, &ceiling, peer.as_ref().map(|p| &p.hello)));
    }
    let flush = match device {
        Device::Cuda(_) => Some(Tensor::zeros(&[64 << 20], DType::F32, device)?),
        _ => None,
    };
    let mut rows = Vec::new();
    for w in &workloads {
        match bench_one(w, device, &args, flush.as_ref(), peer.as_mut(), probe.as_mut()) {
            Ok(row) => {
                if !args.json {
                    eprintln!("  {}", row_text(&row, &ceiling));
                }
                if let (Device::Cuda(_), Work::Bytes(b), true) = (device, row.work, w.name.starts_with("copy")) {
                    ceiling.gbps = Some(b / row.vlk.median / 1e6);
                }
                rows.push(row);
            }
            Err(e) => eprintln!("  {}: skipped: {e}", w.name),
        }
        if let Some(path) = &args.out {
            let report = report_json(&rows, device, &ceiling, peer.as_ref());
            vlk::io::write_atomic(path, format!("{report:#}\n").as_bytes())?;
        }
    }
    if args.json {
        println!("{}", report_json(&rows, device, &ceiling, peer.as_ref()));
    } else {
        println!("{}", table(&rows, &ceiling));
    }
    Ok(())
}

fn report_json(rows: &[Row], device: Device, ceiling: &Ceiling, peer: Option<&TorchPeer>) -> Value {
    let items: Vec<Value> = rows.iter().map(|r| row_json(r, device, ceiling)).collect();
    let torch = peer.map(|p| p.hello.clone());
    json!({"device": device.to_string(), "threads": rayon::current_num_threads(), "cpu_simd": simd_name(), "ceiling": ceiling.source, "torch": torch, "rows": items})
}

/// The vector unit the CPU kernels use (`VLK_CPU_SIMD` may cap it below the CPU's).
fn simd_name() -> &'static str {
    match vlk::backend::cpu::simd::level() {
        SimdLevel::Avx512 => "AVX-512",
        SimdLevel::Avx2Fma => "AVX2+FMA",
        SimdLevel::Baseline => "baseline SIMD",
    }
}

fn describe(device: Device, ceiling: &Ceiling, torch: Option<&Value>) -> String {
    let mut s = format!("vlk bench on {device}, {} threads", rayon::current_num_threads());
    if device == Device::Cpu {
        s += &format!(" ({})", simd_name());
    }
    if let (Some(f), Some(b)) = (ceiling.gflops, ceiling.gbps) {
        s += &format!("; ceilings: FMA {f:.0} GFLOP/s, copy {b:.1} GB/s");
        if let Some(r) = ceiling.read_gbps {
            s += &format!(", read {r:.1} GB/s");
        }
        if let Some(h) = ceiling.bf16_gflops {
            s += &format!(", bf16 GEMM {h:.0} GFLOP/s");
        }
    }
    if let Some(t) = torch {
        s += &format!("; vs torch {} ({} threads)", t["torch"].as_str().unwrap_or("?"), t["threads"]);
    }
    s
}

/// Runs of a workload before its timed ones: one (which may set things up: kernels loaded,
/// compiled graphs), then more until they add up to `WARM_UP_MS`. A short op's first calls pay
/// for memory the heap has not reached yet (GEMM 512 on the CPU: 256 page faults, 1.5-4 ms
/// against 1.2, in each of its first 14 calls, until freed blocks serve its output), which one
/// warm-up run left in the timings. The PyTorch side warms up the same way
/// (`scripts/torch_bench.py`).
const WARM_UP_MS: f64 = 300.0;

/// Warms a workload up; returns the last warm-up run's time.
fn warm_up(device: Device, flush: Option<&Tensor>, run: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    time_once(device, flush, &mut *run)?;
    let (mut spent, mut last) = (0.0, 0.0);
    while spent < WARM_UP_MS {
        last = time_once(device, flush, &mut *run)?;
        spent += last;
    }
    Ok(last)
}

/// The pause before each side's round when PyTorch runs beside vlk. A side's threads keep
/// spinning for a while after its round (PyTorch's OpenMP workers; vlk's warm worker, 2 ms),
/// taking a core from the other side's first runs: GEMM 512 right after PyTorch's rounds ran
/// 2.4-4.9 ms, against 1.2-1.3 alone, which moved the median. With 100 ms between rounds it
/// still did, with 300 ms one run in fifteen.
const ROUND_GAP_MS: u64 = 300;

fn quiet_gap(beside_peer: bool) {
    if beside_peer {
        std::thread::sleep(std::time::Duration::from_millis(ROUND_GAP_MS));
    }
}

/// Times one workload: warm-up, then rounds alternating vlk and (when asked) PyTorch.
fn bench_one(
    w: &Workload,
    device: Device,
    args: &BenchArgs,
    flush: Option<&Tensor>,
    peer: Option<&mut TorchPeer>,
    probe: Option<&mut ceilings::CopyProbe>,
) -> Result<Row> {
    let mut prepared = w.prepare(device)?;
    // Byte rows: copies (reads, for rows that only read) timed before the rounds and after each,
    // for the row's own ceiling; each the faster of two, since the first also writes back what
    // the workload left in the cache.
    let reads_only = matches!(prepared.work, Work::ReadBytes(_));
    let mut probe = probe.filter(|_| matches!(prepared.work, Work::Bytes(_) | Work::ReadBytes(_)));
    let mut bandwidth_now = || {
        probe.as_deref_mut().map(|p| {
            if reads_only {
                p.read_gbps().max(p.read_gbps())
            } else {
                p.copy_gbps().max(p.copy_gbps())
            }
        })
    };
    let mut beside: Vec<f64> = bandwidth_now().into_iter().collect();
    let run = &mut prepared.run;
    let last_warm_up = warm_up(device, flush, &mut *run)?;
    let repeats = ((args.budget * 1e3 / last_warm_up.max(1e-3)) as usize).clamp(3, args.repeats.max(3));
    let rounds = if peer.is_some() { 3.min(repeats) } else { 1 };
    let per_round = repeats.div_ceil(rounds);
    let mut vlk_ms = Vec::new();
    let mut torch_ms: Vec<(String, Vec<f64>)> = Vec::new();
    let mut torch_err = None;
    let mut peer = match peer {
        Some(p) => match p.setup(&prepared.spec) {
            Ok(_) => Some(p),
            Err(e) => {
                torch_err = Some(e.to_string());
                None
            }
        },
        None => {
            torch_err = Some("not asked (--vs torch)".into());
            None
        }
    };
    for _ in 0..rounds {
        quiet_gap(peer.is_some());
        for _ in 0..per_round {
            vlk_ms.push(time_once(device, flush, &mut *run)?);
        }
        if let Some(p) = peer.as_deref_mut() {
            quiet_gap(true);
            match p.time(per_round) {
                Ok(samples) => {
                    for (impl_name, s) in samples {
                        match torch_ms.iter_mut().find(|(n, _)| *n == impl_name) {
                            Some((_, all)) => all.extend(s),
                            None => torch_ms.push((impl_name, s)),
                        }
                    }
                }
                Err(e) => {
                    torch_err = Some(e.to_string());
                    peer = None;
                }
            }
        }
        beside.extend(bandwidth_now());
    }
    let torch = match torch_err {
        Some(e) => Err(e),
        None => Ok(torch_ms
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(n, s)| (n, Stats::of(s)))
            .collect()),
    };
    Ok(Row {
        name: w.name.clone(),
        shape: w.shape(),
        dtype: w.dtype,
        work: prepared.work,
        repeats: vlk_ms.len(),
        vlk: Stats::of(vlk_ms),
        torch,
        bandwidth_beside: (!beside.is_empty()).then(|| ceilings::median(beside)),
    })
}

/// The rate of a run of `ms`: (value, unit, share of the ceiling in %).
/// `beside` replaces the ceiling's copy (or read) bandwidth where measured.
fn rate(work: Work, dtype: DType, ms: f64, ceiling: &Ceiling, beside: Option<f64>) -> (f64, &'static str, Option<f64>) {
    match work {
        Work::Flops(f) => {
            let g = f / ms / 1e6;
            let peak = if dtype == DType::BF16 {
                ceiling.bf16_gflops.or(ceiling.gflops)
            } else {
                ceiling.gflops
            };
            (g, "GFLOP/s", peak.map(|c| 100.0 * g / c))
        }
        Work::Bytes(b) => {
            let g = b / ms / 1e6;
            (g, "GB/s", beside.or(ceiling.gbps).map(|c| 100.0 * g / c))
        }
        Work::ReadBytes(b) => {
            let g = b / ms / 1e6;
            (g, "GB/s", beside.or(ceiling.read_gbps).or(ceiling.gbps).map(|c| 100.0 * g / c))
        }
    }
}

/// The fastest PyTorch implementation of a row.
fn best_torch(row: &Row) -> Option<&(String, Stats)> {
    row.torch.as_ref().ok()?.iter().min_by(|a, b| a.1.median.total_cmp(&b.1.median))
}

fn row_text(r: &Row, ceiling: &Ceiling) -> String {
    let (value, unit, share) = rate(r.work, r.dtype, r.vlk.median, ceiling, r.bandwidth_beside);
    let spread = 50.0 * (r.vlk.p90 - r.vlk.p10) / r.vlk.median;
    let share = share.map(|s| format!("{s:.0}%")).unwrap_or_else(|| "-".into());
    let (torch_ms, ratio) = match best_torch(r) {
        Some((name, s)) => (format!("{:.3} {name}", s.median), format!("{:.2}", r.vlk.median / s.median)),
        None => ("-".into(), "-".into()),
    };
    format!(
        "{:<30} {:<22} {:>10.3} {:>6} {:>9.1} {:<7} {:>6} {:>18} {:>9}",
        r.name,
        r.shape,
        r.vlk.median,
        format!("±{spread:.0}%"),
        value,
        unit,
        share,
        torch_ms,
        ratio
    )
}

fn table(rows: &[Row], ceiling: &Ceiling) -> String {
    let mut out = format!(
        "{:<30} {:<22} {:>10} {:>6} {:>17} {:>6} {:>18} {:>9}\n",
        "workload", "shape", "median ms", "spread", "rate", "%ceil", "torch ms", "vlk/torch"
    );
    for r in rows {
        out += &row_text(r, ceiling);
        out.push('\n');
    }
    let ratios: Vec<f64> = rows
        .iter()
        .filter_map(|r| best_torch(r).map(|t| r.vlk.median / t.1.median))
        .collect();
    if !ratios.is_empty() {
        let geo = (ratios.iter().map(|x| x.ln()).sum::<f64>() / ratios.len() as f64).exp();
        let faster = ratios.iter().filter(|&&x| x < 1.0).count();
        out += &format!(
            "vlk/torch = vlk's median time over PyTorch's fastest (< 1: vlk is faster); geometric mean {geo:.2} over {} rows, vlk faster on {faster}\n",
            ratios.len()
        );
    }
    out += "spread = half the 10th-90th percentile range, as a share of the median; %ceil = share of the FMA peak (FLOP rows; the bf16 instruction peak for bf16 GEMM) or copy bandwidth (byte rows; on the CPU the median of copies timed before and between the row's rounds), or read bandwidth for rows that only read (softmax-xent forward; timed beside the same way)";
    out
}

fn row_json(r: &Row, device: Device, ceiling: &Ceiling) -> Value {
    let (value, unit, share) = rate(r.work, r.dtype, r.vlk.median, ceiling, r.bandwidth_beside);
    let mut o = json!({"name": r.name, "shape": r.shape, "dtype": r.dtype.to_string(), "device": device.to_string(),
    "repeats": r.repeats, "vlk": r.vlk.json(), "rate": value, "unit": unit, "pct_of_ceiling": share,
    });
    match r.work {
        Work::Flops(f) => o["flops"] = json!(f),
        Work::Bytes(b) => {
            o["bytes"] = json!(b);
            o["copy_gb_per_s_beside"] = json!(r.bandwidth_beside);
        }
        Work::ReadBytes(b) => {
            o["bytes"] = json!(b);
            o["reads_only"] = json!(true);
            o["read_gb_per_s_beside"] = json!(r.bandwidth_beside);
        }
    }
    match &r.torch {
        Ok(impls) => {
            o["torch"] = impls
                .iter()
                .map(|(n, s)| {
                    let mut v = s.json();
                    v["ratio_vlk_over_torch"] = json!(r.vlk.median / s.median);
                    v["rate"] = json!(rate(r.work, r.dtype, s.median, ceiling, r.bandwidth_beside).0);
                    (n.clone(), v)
                })
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        Err(e) => o["torch_error"] = json!(e),
    }
    o
}
