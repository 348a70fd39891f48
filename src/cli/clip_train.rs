//! `vlk clip train`: contrastive training of a small CLIP from scratch on the built-in `shapes`
//! set or a folder of captioned images, with a progress bar, checkpoints every N steps and at the end (Hugging Face layout plus
//! optimizer and RNG state), `--resume` continuing the exact same run, and Ctrl-C saving a
//! checkpoint before exiting.

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use vlk::data::captions::CaptionFolder;
use vlk::data::idx::IdxDataset;
use vlk::data::image::ImageProcessor;
use vlk::data::shapes::{Shapes, ShapesConfig, Split};
use vlk::data::tokenizer::ClipTokenizer;
use vlk::models::{ClipConfig, ClipTextConfig, ClipVisionConfig};
use vlk::nn::Activation;
use vlk::train::clip::{ClipTrainer, TrainConfig};
use vlk::train::clip_eval::{evaluate, ClipMetrics};
use vlk::train::clip_report;
use vlk::train::Checkpointer;
use vlk::{Device, Error, Result, Tensor};

// The defaults `vlk clip train` and `vlk demo` share: the settings the demo was tuned at
// (BENCHMARKS.md).
pub const DEFAULT_STEPS: u64 = 1500;
pub const DEFAULT_BATCH: usize = 64;
pub const DEFAULT_LR: f64 = 2e-3;
pub const DEFAULT_WEIGHT_DECAY: f64 = 0.1;
pub const DEFAULT_IMAGE_SIZE: usize = 32;
pub const DEFAULT_PATCH_SIZE: usize = 8;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// `shapes` (the built-in captioned set), a folder with captions.jsonl / captions.csv, or a
    /// folder of MNIST-format idx files (MNIST, Fashion-MNIST).
    #[arg(long, default_value = "shapes")]
    pub data: String,
    /// Run directory: checkpoints/ and model/ are written there.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: u64,
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    #[arg(long, default_value_t = DEFAULT_LR)]
    pub lr: f64,
    #[arg(long, default_value_t = DEFAULT_WEIGHT_DECAY)]
    pub weight_decay: f64,
    /// Steps at the start during which the text tower is held at its random initialisation, so
    /// the image tower learns every attribute the captions name before the towers co-adapt
    /// (default: 40% of --steps; 0 trains both from the start).
    #[arg(long)]
    pub text_freeze: Option<u64>,
    /// Image side of the generated shapes.
    #[arg(long, default_value_t = DEFAULT_IMAGE_SIZE)]
    pub image_size: usize,
    /// Side of the vision transformer's square patches; must divide the image side.
    #[arg(long, default_value_t = DEFAULT_PATCH_SIZE)]
    pub patch_size: usize,
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Evaluate on the built-in set's test splits every N steps (0: only at the end), for the
    /// report's accuracy curves.
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Test images per split in those evaluations and the final one (at least 10).
    #[arg(long, default_value_t = 300)]
    pub eval_images: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// cpu, cuda or emu (default: VLK_DEVICE, else a GPU when present, else cpu).
    #[arg(long)]
    pub device: Option<String>,
    /// f32, or bf16 (bf16 compute over f32 master weights); auto: bf16 on CUDA, f32 elsewhere.
    #[arg(long, default_value = "auto")]
    pub precision: String,
}

/// A CLIP small enough to train on two CPU cores in minutes: 4-layer towers 128 wide.
pub fn small_clip(vocab_size: usize, image_size: usize, patch_size: usize) -> ClipConfig {
    ClipConfig {
        text: ClipTextConfig {
            vocab_size,
            hidden_size: 128,
            intermediate_size: 512,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            max_position_embeddings: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 1,
            pad_token_id: 1,
            bos_token_id: 0,
        },
        vision: ClipVisionConfig {
            hidden_size: 128,
            intermediate_size: 512,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_channels: 3,
            image_size,
            patch_size,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        },
        projection_dim: 128,
        logit_scale_init_value: 2.6592,
    }
}

/// Where training batches come from.
enum Data {
    Shapes(Shapes),
    Folder(CaptionFolder),
    Idx(IdxDataset),
}

impl Data {
    fn open(args: &TrainArgs) -> Result<Self> {
        if args.data == "shapes" {
            return Ok(Data::Shapes(Shapes::new(ShapesConfig {
                image_size: args.image_size,
                seed: args.seed,
                ..Default::default()
            })?));
        }
        let dir = std::path::Path::new(&args.data);
        if IdxDataset::detect(dir) {
            let idx = IdxDataset::open(dir, true)?;
            eprintln!(
                "{}: {} MNIST-format images, captions naming {}",
                args.data,
                idx.len(),
                idx.class_names().join(", ")
            );
            return Ok(Data::Idx(idx));
        }
        let folder = CaptionFolder::open(dir)?;
        eprintln!(
            "{}: {} captioned images, {} bad rows skipped",
            args.data,
            folder.rows.len(),
            folder.bad_rows.len()
        );
        for (line, reason) in folder.bad_rows.iter().take(5) {
            eprintln!("  line {line}: {reason}");
        }
        Ok(Data::Folder(folder))
    }

    /// A fitted word-level vocabulary for the built-in set; CLIP's BPE for user captions.
    fn tokenizer(&self) -> Result<ClipTokenizer> {
        match self {
            Data::Shapes(_) => ClipTokenizer::word_level(&Shapes::vocabulary()),
            Data::Folder(_) | Data::Idx(_) => ClipTokenizer::bundled(),
        }
    }

    /// Normalised pixel values [n, 3, S, S] and captions of the batch starting at `start`.
    fn batch(&self, images: &ImageProcessor, start: u64, n: usize) -> Result<(Vec<f32>, Vec<String>)> {
        match self {
            Data::Shapes(shapes) => {
                // Rendered images are normalised as `vlk clip embed` normalises image files.
                let (mut pixels, captions) = shapes.batch(Split::Train, start, n);
                images.normalize(&mut pixels);
                Ok((pixels, captions))
            }
            Data::Folder(folder) => folder.batch(images, start, n),
            Data::Idx(idx) => Ok(idx.batch(images, start, n)),
        }
    }
}

/// What a finished (or interrupted) run leaves behind.
pub struct Outcome {
    pub steps: u64,
    pub seconds: f64,
    pub interrupted: bool,
    pub model_dir: Option<PathBuf>,
    pub report_dir: Option<PathBuf>,
    /// The final evaluation, on the built-in set only.
    pub metrics: Option<ClipMetrics>,
}

/// Trains as `args` say (or resumes), evaluating on the built-in set every `--eval-every` steps,
/// and at the end saves the model and writes the report.
pub fn train(args: &TrainArgs) -> Result<Outcome> {
    if args.eval_images < 10 {
        return Err(Error::msg(
            "clip train: --eval-images must be at least 10 (recall@10 needs ten candidates)",
        ));
    }
    let device = super::device(&args.device)?;
    let data = Data::open(args)?;
    let checkpoints = Checkpointer::new(&args.out, 2);
    let mut trainer = match checkpoints.resume_point(args.resume)? {
        Some(ck) => {
            eprintln!("resuming from {} (step {})", ck.dir.display(), ck.step);
            ClipTrainer::resume(&ck, device)?
        }
        None => {
            let tokenizer = data.tokenizer()?;
            let config = TrainConfig {
                steps: args.steps,
                batch: args.batch,
                lr: args.lr,
                min_lr: args.lr * 0.02,
                warmup_steps: (args.steps / 20).max(1),
                weight_decay: args.weight_decay,
                max_grad_norm: 1.0,
                seed: args.seed,
                text_freeze_steps: args.text_freeze.unwrap_or(args.steps * 2 / 5),
                mixed_precision: match args.precision.as_str() {
                    "auto" => matches!(device, Device::Cuda(_)),
                    "f32" => false,
                    "bf16" => true,
                    other => return Err(Error::msg(format!("clip train: --precision {other}: expected auto, f32 or bf16"))),
                },
            };
            ClipTrainer::new(
                small_clip(tokenizer.vocab_size(), args.image_size, args.patch_size),
                tokenizer,
                config,
                device,
            )?
        }
    };
    super::signals::catch_ctrl_c();
    let started = Instant::now();
    let first_step = trainer.step;
    let mut eval_seconds = 0.0;
    let total = trainer.config.steps;
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}").map_err(|e| Error::msg(e.to_string()))?);
    bar.set_position(trainer.step);
    let size = trainer.clip.config.vision.image_size;
    let images = ImageProcessor::clip(size);
    let extra = json!({"data": args.data, "image_size": size});
    while trainer.step < total {
        let start = Instant::now();
        let batch = trainer.config.batch;
        let (pixels, captions) = data.batch(&images, trainer.step * batch as u64, batch)?;
        let pixels = Tensor::from_vec(pixels, &[batch, 3, size, size], device)?;
        let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
        let r = trainer.train_step(&pixels, &texts)?;
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} img/s",
            r.loss,
            r.lr,
            batch as f64 / start.elapsed().as_secs_f64()
        ));
        bar.inc(1);
        if let Data::Shapes(shapes) = &data {
            if args.eval_every > 0 && trainer.step % args.eval_every == 0 && trainer.step < total {
                let eval_start = Instant::now();
                let m = evaluate(&trainer.clip, &trainer.tokenizer, shapes, args.eval_images, device)?;
                eval_seconds += eval_start.elapsed().as_secs_f64();
                let line = format!(
                    "step {}: colour x shape {:.1}% seen, {:.1}% held-out; text-to-image R@1 {:.1}%",
                    trainer.step,
                    100.0 * m.seen.both,
                    100.0 * m.held_out.both,
                    100.0 * m.t2i[0]
                );
                // A hidden bar (stderr not a terminal) swallows println.
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
                trainer.evals.push((trainer.step, m.to_json()));
            }
        }
        let interrupted = super::signals::interrupted();
        if trainer.step % args.checkpoint_every == 0 || trainer.step == total || interrupted {
            let ck = trainer.save_checkpoint(&checkpoints, extra.clone())?;
            if interrupted {
                bar.abandon();
                eprintln!("interrupted: checkpoint at step {} in {}", ck.step, ck.dir.display());
                return Ok(Outcome {
                    steps: trainer.step,
                    seconds: started.elapsed().as_secs_f64(),
                    interrupted: true,
                    model_dir: None,
                    report_dir: None,
                    metrics: None,
                });
            }
        }
    }
    bar.finish();
    let train_seconds = started.elapsed().as_secs_f64();
    let model_dir = args.out.join("model");
    trainer.save_model(&model_dir)?;
    if let Data::Folder(folder) = &data {
        eprintln!("{} images could not be decoded and were skipped", folder.undecodable());
    }
    let shapes = match &data {
        Data::Shapes(shapes) => Some(shapes),
        _ => None,
    };
    let metrics = match shapes {
        Some(shapes) => {
            let m = evaluate(&trainer.clip, &trainer.tokenizer, shapes, args.eval_images, device)?;
            trainer.evals.push((trainer.step, m.to_json()));
            Some(m)
        }
        None => None,
    };
    let summary = json!({
        "data": args.data,
        "device": device.to_string(),
        "steps": trainer.step,
        "batch": trainer.config.batch,
        "seconds": train_seconds,
        "evaluation_seconds": eval_seconds,
        "images_per_second": (trainer.step - first_step) as f64 * trainer.config.batch as f64 / (train_seconds - eval_seconds),
        "final": metrics.as_ref().map(ClipMetrics::to_json),
    });
    let report_dir = clip_report::write(&args.out, &trainer, summary, shapes)?;
    Ok(Outcome {
        steps: trainer.step,
        seconds: started.elapsed().as_secs_f64(),
        interrupted: false,
        model_dir: Some(model_dir),
        report_dir: Some(report_dir),
        metrics,
    })
}

pub fn run(args: TrainArgs) -> Result<()> {
    let outcome = train(&args)?;
    if outcome.interrupted {
        return Ok(());
    }
    if let Some(m) = &outcome.metrics {
        super::clip::print_metrics(m);
    }
    let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    println!(
        "trained {} steps in {:.0} s; model in {}, report in {}",
        outcome.steps,
        outcome.seconds,
        shown(&outcome.model_dir),
        shown(&outcome.report_dir)
    );
    Ok(())
}
