//! The `vlk` command line.

mod cli;

/// Tensor buffers on 64-byte lines (see `vlk::backend::cpu::LineAlignedAlloc`).
#[global_allocator]
static ALLOC: vlk::backend::cpu::LineAlignedAlloc = vlk::backend::cpu::LineAlignedAlloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "vlk", version, about = "GPU kernel framework for vision-language models")]
struct Cli {
    /// Record every op and kernel launch; at exit write a Chrome trace to FILE (open it in
    /// https://ui.perfetto.dev) and print the time by op. VLK_PROFILE=FILE does the same.
    #[arg(long, global = true, value_name = "FILE")]
    profile: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CLIP inference: embeddings, zero-shot classification, retrieval.
    #[command(subcommand)]
    Clip(cli::clip::ClipCommand),
    /// Describes an image; `train` and `eval` a captioning model.
    Caption(cli::caption::CaptionArgs),
    /// Answers a question about an image; `train` and `eval` a VQA model.
    Vqa(cli::caption::VqaArgs),
    /// Text-to-image diffusion: train a DiT, sample images from prompts, score them.
    #[command(subcommand)]
    Diffusion(cli::diffusion::DiffusionCommand),
    /// Trains a small model from scratch on generated data and shows that it learned.
    Demo(cli::demo::DemoArgs),
    /// Times named workloads (kernels, CLIP towers, training steps), optionally beside PyTorch.
    Bench(cli::bench::BenchArgs),
    /// Measures this CPU's FMA peak and memory bandwidth (the ceilings kernels are reported against).
    Ceilings(cli::ceilings::CeilingsArgs),
    /// Lists the compiled kernels with their register, shared-memory and spill report.
    Kernels(cli::kernels::KernelsArgs),
}

fn main() {
    cli::signals::restore_sigpipe();
    vlk::backend::cpu::keep_freed_buffers();
    let cli = Cli::parse();
    let env_checks = [
        vlk::backend::cpu::gemm_bf16::Bf16Kernel::env_cap().map(drop),
        vlk::backend::cpu::packed_weights::env_budget_mb().map(drop),
        vlk::backend::cpu::threads::env_spin_us().map(drop),
        vlk::backend::cpu::simd::env_cap().map(drop),
    ];
    if let Some(Err(e)) = env_checks.into_iter().find(Result::is_err) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    if let Some(path) = &cli.profile {
        vlk::profile::enable(path);
    }
    // The command runs on a worker of the thread pool, so each op's parallel loop starts on the
    // calling thread and is shared by work stealing, instead of being handed to the pool while
    // the main thread sleeps (a wake-up and a context switch per op; 10% of a training step).
    let result = rayon::scope(|_| match cli.command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Clip(cmd) => cli::clip::run(cmd),
        Command::Diffusion(cmd) => cli::diffusion::run(cmd),
        Command::Caption(args) => cli::caption::run_caption(args),
        Command::Vqa(args) => cli::caption::run_vqa(args),
        Command::Kernels(args) => cli::kernels::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Ceilings(args) => cli::ceilings::run(args),
    });
    let profiled = vlk::profile::finish();
    if let Err(e) = result.and(profiled.map(drop)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
