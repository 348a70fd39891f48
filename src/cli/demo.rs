//! `vlk demo`: trains a small CLIP from scratch on the built-in `shapes` set at settings that
//! finish in minutes on a 2-core CPU, evaluates it (zero-shot on seen and held-out colour-shape
//! pairs, retrieval), writes the run (checkpoints, model, report) under `runs/`, and prints
//! where everything is and how well it learned. With `--diffusion` it then trains a
//! text-to-image DiT conditioned on that CLIP's text tower, scores its images of every
//! colour-shape prompt with the same CLIP and samples a grid (runs/diffusion-shapes).

use super::clip_train::{
    train, TrainArgs, DEFAULT_BATCH, DEFAULT_IMAGE_SIZE, DEFAULT_LR, DEFAULT_PATCH_SIZE, DEFAULT_STEPS, DEFAULT_WEIGHT_DECAY,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use vlk::data::shapes::Shapes;
use vlk::{Device, Error, Result};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Run directory (default: the first free runs/clip-shapes[-N] in the current directory).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: u64,
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
    #[arg(long, default_value_t = DEFAULT_LR)]
    lr: f64,
    /// cpu, cuda or emu (default: VLK_DEVICE, else a GPU when present, else cpu).
    #[arg(long)]
    device: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the summary as one JSON value on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// After the CLIP stage, train and evaluate a text-to-image diffusion model on it.
    #[arg(long)]
    diffusion: bool,
    /// Training steps of the diffusion stage.
    #[arg(long, default_value_t = super::diffusion::DEFAULT_STEPS)]
    diffusion_steps: u64,
}

/// runs/NAME, or runs/NAME-2, -3, ... when taken.
fn free_run_dir(name: &str) -> Result<PathBuf> {
    let runs = Path::new("runs");
    (1..10_000)
        .map(|n| {
            if n == 1 {
                runs.join(name)
            } else {
                runs.join(format!("{name}-{n}"))
            }
        })
        .find(|p| !p.exists())
        .ok_or_else(|| Error::file(runs, format!("no free {name}-N name; remove old runs")))
}

pub fn run(args: DemoArgs) -> Result<()> {
    // Bad settings fail before the banner, so the error is the only line.
    if let Some(device) = &args.device {
        Device::parse(device)?;
    }
    let out = match args.out.clone() {
        Some(out) => out,
        None => free_run_dir("clip-shapes")?,
    };
    let train_args = TrainArgs {
        data: "shapes".into(),
        out: out.clone(),
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        weight_decay: DEFAULT_WEIGHT_DECAY,
        text_freeze: None,
        image_size: DEFAULT_IMAGE_SIZE,
        patch_size: DEFAULT_PATCH_SIZE,
        checkpoint_every: 250,
        eval_every: 250,
        eval_images: 400,
        seed: args.seed,
        resume: false,
        device: args.device.clone(),
        precision: "auto".into(),
    };
    eprintln!(
        "vlk demo: training a small CLIP from scratch on generated shapes ({} steps of {} pairs) into {}",
        args.steps,
        args.batch,
        out.display()
    );
    let outcome = train(&train_args)?;
    if outcome.interrupted {
        return Ok(());
    }
    let (Some(m), Some(model), Some(report)) = (&outcome.metrics, &outcome.model_dir, &outcome.report_dir) else {
        return Err(Error::msg("demo: the run finished without a model, report or evaluation"));
    };
    let chance = 1.0 / Shapes::labels().len() as f64;
    let diffusion = if args.diffusion {
        let out = match &args.out {
            Some(clip_out) => clip_out.join("diffusion"),
            None => free_run_dir("diffusion-shapes")?,
        };
        eprintln!(
            "vlk demo: training a text-to-image DiT on the CLIP's text tower ({} steps) into {}",
            args.diffusion_steps,
            out.display()
        );
        let d = super::diffusion::train(&super::diffusion::TrainArgs {
            clip: Some(model.clone()),
            out,
            steps: args.diffusion_steps,
            seed: args.seed,
            device: args.device.clone(),
            ..super::diffusion::TrainArgs::demo()
        })?;
        if d.model_dir.is_none() {
            return Ok(());
        }
        Some(d)
    } else {
        None
    };
    if args.json {
        let summary = json!({
            "run": out, "model": model, "report": report, "seconds": outcome.seconds, "steps": outcome.steps,
            "metrics": m.to_json(), "chance_colour_shape": chance,
            "diffusion": diffusion.as_ref().map(|d| json!({
                "model": d.model_dir, "report": d.report_dir, "seconds": d.seconds, "steps": d.steps,
                "metrics": d.metrics.as_ref().map(|m| m.to_json()),
            })),
        });
        println!("{summary}");
        return Ok(());
    }
    let seconds = outcome.seconds.round() as u64;
    println!("trained {} steps in {} min {:02} s", outcome.steps, seconds / 60, seconds % 60);
    println!(
        "zero-shot colour x shape: {:.1}% on seen pairs, {:.1}% on held-out pairs never trained on (chance {:.1}%)",
        100.0 * m.seen.both,
        100.0 * m.held_out.both,
        100.0 * chance
    );
    println!(
        "retrieval on {} test pairs: text-to-image R@1 {:.1}%, image-to-text R@1 {:.1}%",
        m.pairs,
        100.0 * m.t2i[0],
        100.0 * m.i2t[0]
    );
    println!(
        "model:  {} (Hugging Face CLIP layout; try `vlk clip zero-shot --model ...`)",
        model.display()
    );
    println!("report: {} (training.png, zero_shot.png, metrics.json)", report.display());
    if let Some(d) = diffusion {
        let seconds = d.seconds.round() as u64;
        println!("diffusion: trained {} steps in {} min {:02} s", d.steps, seconds / 60, seconds % 60);
        if let Some(m) = &d.metrics {
            super::diffusion::print_metrics(m);
        }
        let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        println!(
            "diffusion model:  {} (try `vlk diffusion sample --model ... --prompt \"a red star\" --out grid.png`)",
            shown(&d.model_dir)
        );
        println!(
            "diffusion report: {} (training.png, samples.png, metrics.json)",
            shown(&d.report_dir)
        );
    }
    Ok(())
}
