//! The `vlk` command line.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "vlk", version, about = "GPU kernel framework for vision-language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CLIP inference: embeddings, zero-shot classification, retrieval.
    #[command(subcommand)]
    Clip(cli::clip::ClipCommand),
    /// Trains a small model from scratch on generated data and shows that it learned.
    Demo(cli::demo::DemoArgs),
    /// Times the kernel workloads that scripts/torch_kernels_bench.py times in PyTorch.
    BenchKernels(cli::bench_kernels::BenchKernelsArgs),
    /// Measures this CPU's FMA peak and memory bandwidth (the ceilings kernels are reported against).
    Ceilings(cli::ceilings::CeilingsArgs),
    /// Lists the compiled kernels with their register, shared-memory and spill report.
    Kernels(cli::kernels::KernelsArgs),
}

fn main() {
    cli::signals::restore_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Clip(cmd) => cli::clip::run(cmd),
        Command::Kernels(args) => cli::kernels::run(args),
        Command::BenchKernels(args) => cli::bench_kernels::run(args),
        Command::Ceilings(args) => cli::ceilings::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
