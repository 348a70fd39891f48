//! `vlk kernels`: what was compiled into this binary: the nvcc release, each kernel module's
//! ptxas resource report for sm_90a (registers, shared memory, stack frame, spills), and the
//! kernels the emulator can run.

use vlk::backend::gpu::{cuda, emu::EmuRuntime};
use vlk::Result;

#[derive(clap::Args)]
pub struct KernelsArgs {
    /// Print the full ptxas report of each module instead of one line per kernel.
    #[arg(long)]
    verbose: bool,
    /// Also write each module's sm_90a cubin and ptxas report into DIR (for cuobjdump).
    #[arg(long, value_name = "DIR")]
    write_cubins: Option<std::path::PathBuf>,
}

/// One line per kernel from ptxas -v output: "name: N registers, S bytes smem, F bytes stack, spills".
fn summarise(report: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut name = String::new();
    let mut detail = String::new();
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            name = rest.split('\'').next().unwrap_or("").to_string();
        } else if line.contains("bytes stack frame") {
            detail = line.split("info    : ").nth(1).unwrap_or(line).trim().to_string();
        } else if line.contains("Used") && line.contains("registers") && !name.is_empty() {
            let used = line.split("Used").nth(1).unwrap_or("").trim().to_string();
            lines.push(format!("  {name:<36} {used}; {detail}"));
            name.clear();
        }
    }
    lines
}

pub fn run(args: KernelsArgs) -> Result<()> {
    match cuda::NVCC_VERSION {
        Some(v) => println!("nvcc: {v}; PTX for sm_80, cubin for sm_90a"),
        None => println!("nvcc: not found at build time: no GPU kernels in this binary (run scripts/cuda-toolchain.sh and rebuild)"),
    }
    for m in cuda::MODULES {
        if let Some(dir) = &args.write_cubins {
            vlk::io::write_atomic(&dir.join(format!("{}.sm90a.cubin", m.name)), m.cubin_sm90a)?;
            vlk::io::write_atomic(&dir.join(format!("{}.ptxas.txt", m.name)), m.ptxas_report.as_bytes())?;
        }
        println!("{} ({} kernels)", m.name, m.kernels.len());
        if args.verbose {
            println!("{}", m.ptxas_report);
        } else {
            summarise(m.ptxas_report).iter().for_each(|l| println!("{l}"));
        }
    }
    println!(
        "emulator: {} kernels; GPUs visible: {}",
        EmuRuntime::kernel_names().len(),
        cuda::gpu_count()
    );
    Ok(())
}
