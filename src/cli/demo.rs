//! `vlk demo`: trains a small CLIP from scratch on the built-in `shapes` set at settings that
//! finish in minutes on a 2-core CPU, evaluates it (zero-shot on seen and held-out colour-shape
//! pairs, retrieval), writes the run (checkpoints, model, report) under `runs/`, and prints
//! where everything is and how well it learned.

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
}

/// runs/clip-shapes, or runs/clip-shapes-2, -3, ... when taken.
fn free_run_dir() -> Result<PathBuf> {
    let runs = Path::new("runs");
    (1..10_000)
        .map(|n| {
            if n == 1 {
                runs.join("clip-shapes")
            } else {
                runs.join(format!("clip-shapes-{n}"))
            }
        })
        .find(|p| !p.exists())
        .ok_or_else(|| Error::file(runs, "no free clip-shapes-N name; remove old runs"))
}

pub fn run(args: DemoArgs) -> Result<()> {
    // Bad settings fail before the banner, so the error is the only line.
    if let Some(device) = &args.device {
        Device::parse(device)?;
    }
    let out = match args.out {
        Some(out) => out,
        None => free_run_dir()?,
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
        device: args.device,
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
    if args.json {
        let summary = json!({
            "run": out, "model": model, "report": report, "seconds": outcome.seconds, "steps": outcome.steps,
            "metrics": m.to_json(), "chance_colour_shape": chance,
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
    Ok(())
}
