//! `vlk diffusion train | sample | eval`: a text-conditioned DiT trained with the DDPM objective
//! under a frozen CLIP text encoder, sampled with DDIM or DDPM and classifier-free guidance,
//! and scored on the built-in `shapes` prompts.

use super::device;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vlk::data::captions::CaptionFolder;
use vlk::data::image::ImageProcessor;
use vlk::data::shapes::{Shapes, ShapesConfig, Split};
use vlk::diffusion::{PromptEncoder, SampleOptions, SamplerKind, SchedulerConfig, TextToImage};
use vlk::models::{DitConditioning, DitConfig};
use vlk::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use vlk::train::diffusion_eval::{evaluate, DiffusionMetrics};
use vlk::train::report::{image_grid, image_png, training_chart, Tile};
use vlk::train::Checkpointer;
use vlk::{Device, Error, Result, Tensor};

#[derive(clap::Subcommand)]
pub enum DiffusionCommand {
    /// Trains a text-conditioned DiT from scratch under a frozen CLIP text encoder.
    Train(TrainArgs),
    /// Generates images for prompts: a PNG grid, one row per prompt.
    Sample(SampleArgs),
    /// Generates images for every `shapes` colour-shape prompt and scores them with CLIP.
    Eval(EvalArgs),
}

// The settings the demo was tuned at (BENCHMARKS.md).
pub const DEFAULT_STEPS: u64 = 1200;
pub const DEFAULT_BATCH: usize = 64;
pub const DEFAULT_LR: f64 = 1e-3;
/// The guidance scale of the evaluation and report grid after training (the best of 1.5, 3, 5
/// and 8 on the demo's model; BENCHMARKS.md).
pub const EVAL_GUIDANCE: f64 = 5.0;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// `shapes` (the built-in captioned set) or a folder with captions.jsonl / captions.csv.
    #[arg(long, default_value = "shapes")]
    pub data: String,
    /// The CLIP directory whose text tower conditions the denoiser (a `vlk clip train` model or
    /// a Hugging Face CLIP with tokenizer.json); taken from the checkpoint with --resume.
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// Run directory: checkpoints/, model/ and report/ are written there.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: u64,
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    #[arg(long, default_value_t = DEFAULT_LR)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Width of the denoiser (a multiple of --heads and of 4).
    #[arg(long, default_value_t = 128)]
    pub width: usize,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Side of the square patches; must divide --image-size.
    #[arg(long, default_value_t = 4)]
    pub patch_size: usize,
    /// Side of the training images (folders are resized and centre-cropped to it).
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Share of captions replaced by the null condition (what guidance contrasts against).
    #[arg(long, default_value_t = 0.1)]
    pub cond_dropout: f64,
    /// Decay of the weight average that is saved and sampled (0.995: about the last 200 steps).
    #[arg(long, default_value_t = 0.995)]
    pub ema_decay: f64,
    /// Min-SNR loss weighting: each timestep's loss scaled by min(SNR, gamma) / SNR (0: off).
    #[arg(long, default_value_t = 5.0)]
    pub snr_gamma: f64,
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: u64,
    /// Images per colour-shape prompt in the final evaluation on `shapes` (0: none).
    #[arg(long, default_value_t = 4)]
    pub eval_per_prompt: usize,
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

impl TrainArgs {
    /// The defaults `vlk diffusion train` has, on `shapes` (the demo overrides paths and steps).
    pub fn demo() -> Self {
        TrainArgs {
            data: "shapes".into(),
            clip: None,
            out: PathBuf::new(),
            steps: DEFAULT_STEPS,
            batch: DEFAULT_BATCH,
            lr: DEFAULT_LR,
            weight_decay: 0.0,
            width: 128,
            layers: 4,
            heads: 4,
            patch_size: 4,
            image_size: 32,
            cond_dropout: 0.1,
            ema_decay: 0.995,
            snr_gamma: 5.0,
            checkpoint_every: 250,
            eval_per_prompt: 4,
            seed: 0,
            resume: false,
            device: None,
            precision: "auto".into(),
        }
    }
}

/// How sampling runs, shared by `sample` and `eval`.
#[derive(clap::Args)]
pub struct SamplingArgs {
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// ddim or ddpm.
    #[arg(long, default_value = "ddim")]
    sampler: String,
    /// DDIM's eta: 0 is deterministic.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Classifier-free guidance scale: 1 is the conditional model alone, 0 unconditional.
    #[arg(long, default_value_t = EVAL_GUIDANCE, allow_negative_numbers = true)]
    guidance: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or emu (default: VLK_DEVICE, else a GPU when present, else cpu).
    #[arg(long)]
    device: Option<String>,
}

impl SamplingArgs {
    fn options(&self, per_prompt: usize) -> Result<SampleOptions> {
        if self.steps == 0 {
            return Err(Error::msg("--steps must be at least 1"));
        }
        if !(self.guidance >= 0.0 && self.guidance.is_finite()) {
            return Err(Error::msg(format!(
                "--guidance must be a finite number >= 0, got {}",
                self.guidance
            )));
        }
        Ok(SampleOptions {
            steps: self.steps,
            sampler: SamplerKind::parse(&self.sampler, self.eta)?,
            guidance: self.guidance,
            seed: self.seed,
            per_prompt,
        })
    }
}

#[derive(clap::Args)]
pub struct SampleArgs {
    /// A text-to-image model directory (the `model/` of a `vlk diffusion train` run).
    #[arg(long)]
    model: PathBuf,
    /// A prompt; repeat for more (one grid row each).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// Images per prompt.
    #[arg(long, default_value_t = 8)]
    n: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Use this CLIP directory as the text encoder instead of the model's own.
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// The PNG grid to write.
    #[arg(long)]
    out: PathBuf,
    /// Also write each image on its own into this directory.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// Images per colour-shape prompt.
    #[arg(long, default_value_t = 4)]
    per_prompt: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: DiffusionCommand) -> Result<()> {
    match cmd {
        DiffusionCommand::Train(args) => {
            let outcome = train(&args)?;
            if let Some(m) = &outcome.metrics {
                print_metrics(m);
            }
            if let (Some(model), Some(report)) = (&outcome.model_dir, &outcome.report_dir) {
                println!(
                    "trained {} steps in {:.0} s; model in {}, report in {}",
                    outcome.steps,
                    outcome.seconds,
                    model.display(),
                    report.display()
                );
            }
            Ok(())
        }
        DiffusionCommand::Sample(args) => sample(&args),
        DiffusionCommand::Eval(args) => eval(&args),
    }
}

fn progress(total: u64, what: &str) -> Result<ProgressBar> {
    let bar = ProgressBar::new(total);
    let template = format!("{what} {{bar:30}} {{pos}}/{{len}} {{msg}} ETA {{eta}}");
    bar.set_style(ProgressStyle::with_template(&template).map_err(|e| Error::msg(e.to_string()))?);
    Ok(bar)
}

fn sample(args: &SampleArgs) -> Result<()> {
    if args.prompts.is_empty() {
        return Err(Error::msg("diffusion sample: no prompts: give at least one --prompt TEXT"));
    }
    let opts = args.sampling.options(args.n)?;
    if args.n == 0 {
        return Err(Error::msg("diffusion sample: --n must be at least 1"));
    }
    let device = device(&args.sampling.device)?;
    let mut model = TextToImage::load(&args.model, device)?;
    if let Some(dir) = &args.text_encoder {
        model = TextToImage::new(model.dit, PromptEncoder::load(dir, device)?, model.scheduler)
            .map_err(|e| Error::file(dir, format!("cannot condition {} on it: {e}", args.model.display())))?;
    }
    let prompts: Vec<&str> = args.prompts.iter().map(String::as_str).collect();
    let batches = (prompts.len() * args.n).div_ceil(64) as u64;
    let bar = progress(batches * opts.steps as u64, "denoising")?;
    let images = model.generate(&prompts, &opts, || bar.inc(1))?;
    bar.finish_and_clear();
    let side = model.image_size();
    sample_grid(&args.out, &images, &prompts, args.n, side)?;
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
        let pixels = images.to_vec::<f32>()?;
        for (i, img) in pixels.chunks(3 * side * side).enumerate() {
            let (p, k) = (i / args.n, i % args.n);
            image_png(&dir.join(format!("{p:02}-{}-{k:02}.png", slug(prompts[p]))), img, side)?;
        }
    }
    println!(
        "wrote {} images of {} prompts to {}",
        prompts.len() * args.n,
        prompts.len(),
        args.out.display()
    );
    Ok(())
}

/// A file-name-safe short form of a prompt.
fn slug(prompt: &str) -> String {
    let s: String = prompt
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let s: Vec<&str> = s.split('-').filter(|w| !w.is_empty()).collect();
    let s = s.join("-");
    if s.is_empty() {
        "prompt".into()
    } else {
        s.chars().take(40).collect()
    }
}

/// A grid of `images` ([P * n, 3, S, S] in [0, 1]), one row per prompt, titled by it.
fn sample_grid(path: &Path, images: &Tensor, prompts: &[&str], n: usize, side: usize) -> Result<()> {
    let pixels = images.to_vec::<f32>()?;
    let tiles: Vec<Tile> = pixels
        .chunks(3 * side * side)
        .enumerate()
        .map(|(i, img)| Tile {
            pixels: img.to_vec(),
            side,
            title: if i % n == 0 {
                prompts[i / n].chars().take(26).collect()
            } else {
                String::new()
            },
            lines: Vec::new(),
        })
        .collect();
    image_grid(path, &tiles, n, 96)
}

fn eval(args: &EvalArgs) -> Result<()> {
    let opts = args.sampling.options(args.per_prompt)?;
    if args.per_prompt == 0 {
        return Err(Error::msg("diffusion eval: --per-prompt must be at least 1"));
    }
    let device = device(&args.sampling.device)?;
    let model = TextToImage::load(&args.model, device)?;
    let bar = progress(eval_batches(&opts) * opts.steps as u64, "denoising")?;
    let (m, _) = evaluate(&model, &opts, || bar.inc(1))?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", m.to_json());
    } else {
        print_metrics(&m);
    }
    Ok(())
}

/// Denoiser batches an evaluation runs (for progress bars).
fn eval_batches(opts: &SampleOptions) -> u64 {
    let seen = Shapes::seen_labels().len();
    let held = Shapes::labels().len() - seen;
    ((seen * opts.per_prompt).div_ceil(64) + (held * opts.per_prompt).div_ceil(64)) as u64
}

pub fn print_metrics(m: &DiffusionMetrics) {
    for (name, s) in [("seen pairs", &m.seen), ("held-out pairs", &m.held_out)] {
        println!(
            "{name}: CLIP reads colour {:.1}%, shape {:.1}%, both {:.1}% of {} images; object hue error {:.1} degrees ({} without an object)",
            100.0 * s.accuracy.colour,
            100.0 * s.accuracy.shape,
            100.0 * s.accuracy.both,
            s.accuracy.images,
            s.hue_error,
            s.no_object
        );
    }
}

/// Where training images come from: values in [-1, 1].
enum Data {
    Shapes(Shapes),
    Folder(CaptionFolder, ImageProcessor),
}

impl Data {
    fn open(data: &str, image_size: usize, seed: u64) -> Result<Self> {
        if data == "shapes" {
            return Ok(Data::Shapes(Shapes::new(ShapesConfig {
                image_size,
                seed,
                ..Default::default()
            })?));
        }
        let folder = CaptionFolder::open(Path::new(data))?;
        eprintln!(
            "{data}: {} captioned images, {} bad rows skipped",
            folder.rows.len(),
            folder.bad_rows.len()
        );
        // mean 0.5 and std 0.5 map [0, 1] to [-1, 1].
        let proc = ImageProcessor {
            mean: [0.5; 3],
            std: [0.5; 3],
            ..ImageProcessor::clip(image_size)
        };
        Ok(Data::Folder(folder, proc))
    }

    fn batch(&self, start: u64, n: usize) -> Result<(Vec<f32>, Vec<String>)> {
        match self {
            Data::Shapes(shapes) => {
                let (pixels, captions) = shapes.batch(Split::Train, start, n);
                Ok((pixels.into_iter().map(|v| 2.0 * v - 1.0).collect(), captions))
            }
            Data::Folder(folder, proc) => folder.batch(proc, start, n),
        }
    }
}

pub struct Outcome {
    pub steps: u64,
    pub seconds: f64,
    pub model_dir: Option<PathBuf>,
    pub report_dir: Option<PathBuf>,
    pub metrics: Option<DiffusionMetrics>,
}

/// Prompts of the report's sample grid: four seen and four held-out colour-shape pairs.
fn grid_prompts() -> Vec<String> {
    let seen = Shapes::seen_labels();
    let held: Vec<_> = Shapes::labels().into_iter().filter(|&(s, c)| Shapes::is_held_out(s, c)).collect();
    [0, 11, 22, 33]
        .iter()
        .map(|&i| seen[i % seen.len()])
        .chain(held.into_iter().take(4))
        .map(|(s, c)| Shapes::prompt(s, c))
        .collect()
}

pub fn train(args: &TrainArgs) -> Result<Outcome> {
    let device = device(&args.device)?;
    let checkpoints = Checkpointer::new(&args.out, 2);
    let mut trainer = match checkpoints.resume_point(args.resume)? {
        Some(ck) => {
            let trainer = DiffusionTrainer::resume(&ck, device)?;
            eprintln!("resuming from {} (step {})", ck.dir.display(), ck.step);
            trainer
        }
        None => {
            let clip_dir = args
                .clip
                .as_ref()
                .ok_or_else(|| Error::msg("diffusion train: --clip DIR is required (the text encoder to condition on)"))?;
            let encoder = PromptEncoder::load(clip_dir, device)?;
            if args.heads == 0 || !args.width.is_multiple_of(args.heads) {
                return Err(Error::msg(format!(
                    "diffusion train: --width {} is not divisible by --heads {}",
                    args.width, args.heads
                )));
            }
            let dit = DitConfig {
                sample_size: args.image_size,
                patch_size: args.patch_size,
                in_channels: 3,
                out_channels: 3,
                num_layers: args.layers,
                num_attention_heads: args.heads,
                attention_head_dim: args.width / args.heads,
                norm_eps: 1e-6,
                conditioning: DitConditioning::Text {
                    text_width: encoder.width(),
                    text_len: encoder.context(),
                },
            };
            dit.validate("diffusion train")?;
            let config = DiffusionTrainConfig {
                steps: args.steps,
                batch: args.batch,
                lr: args.lr,
                min_lr: args.lr * 0.05,
                warmup_steps: (args.steps / 20).max(1),
                weight_decay: args.weight_decay,
                max_grad_norm: 1.0,
                seed: args.seed,
                cond_dropout: args.cond_dropout,
                ema_decay: args.ema_decay,
                snr_gamma: args.snr_gamma,
                mixed_precision: match args.precision.as_str() {
                    "auto" => matches!(device, Device::Cuda(_)),
                    "f32" => false,
                    "bf16" => true,
                    other => {
                        return Err(Error::msg(format!(
                            "diffusion train: --precision {other}: expected auto, f32 or bf16"
                        )))
                    }
                },
            };
            DiffusionTrainer::new(dit, encoder, clip_dir, SchedulerConfig::pixel_default()?, config, device)?
        }
    };
    super::signals::catch_ctrl_c();
    let started = Instant::now();
    let first_step = trainer.step;
    let total = trainer.config.steps;
    let bar = progress(total, "training")?;
    bar.set_position(trainer.step);
    // A resumed run keeps the image size it started with.
    let side = trainer.model.image_size();
    let data = Data::open(&args.data, side, args.seed)?;
    let extra = json!({"data": args.data, "image_size": side});
    while trainer.step < total {
        let start = Instant::now();
        let batch = trainer.config.batch;
        let (pixels, captions) = data.batch(trainer.step * batch as u64, batch)?;
        let images = Tensor::from_vec(pixels, &[batch, 3, side, side], device)?;
        let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
        let r = trainer.train_step(&images, &texts)?;
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} img/s",
            r.loss,
            r.lr,
            batch as f64 / start.elapsed().as_secs_f64()
        ));
        bar.inc(1);
        let interrupted = super::signals::interrupted();
        if trainer.step % args.checkpoint_every.max(1) == 0 || trainer.step == total || interrupted {
            let ck = trainer.save_checkpoint(&checkpoints, extra.clone())?;
            if interrupted {
                bar.abandon();
                eprintln!("interrupted: checkpoint at step {} in {}", ck.step, ck.dir.display());
                return Ok(Outcome {
                    steps: trainer.step,
                    seconds: started.elapsed().as_secs_f64(),
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
    let eval_started = Instant::now();
    let opts = SampleOptions {
        steps: 25,
        sampler: SamplerKind::Ddim { eta: 0.0 },
        guidance: EVAL_GUIDANCE,
        seed: 1,
        per_prompt: args.eval_per_prompt,
    };
    let clip_side = trainer.model.encoder.clip.config.vision.image_size;
    if args.eval_per_prompt > 0 && clip_side != side {
        eprintln!("no evaluation: the CLIP's vision tower takes {clip_side}x{clip_side} images, the model draws {side}x{side}");
    }
    let metrics = match &data {
        Data::Shapes(_) if args.eval_per_prompt > 0 && clip_side == side => {
            let bar = progress(eval_batches(&opts) * opts.steps as u64, "evaluating")?;
            let (m, _) = evaluate(&trainer.model, &opts, || bar.inc(1))?;
            bar.finish_and_clear();
            trainer.evals.push((trainer.step, m.to_json()));
            Some(m)
        }
        _ => None,
    };
    let report_dir = args.out.join("report");
    std::fs::create_dir_all(&report_dir).map_err(|e| Error::file(&report_dir, format!("cannot create: {e}")))?;
    let loss: Vec<(f64, f64)> = trainer.losses.iter().map(|&(s, l)| (s as f64, l)).collect();
    training_chart(&report_dir.join("training.png"), &loss, &[])?;
    let prompts = match &data {
        Data::Shapes(_) => grid_prompts(),
        Data::Folder(folder, _) => folder.rows.iter().take(6).map(|r| r.caption.clone()).collect(),
    };
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let grid_opts = SampleOptions { per_prompt: 6, ..opts };
    let grid = trainer.model.generate(&refs, &grid_opts, || {})?;
    sample_grid(&report_dir.join("samples.png"), &grid, &refs, grid_opts.per_prompt, side)?;
    let summary = json!({
        "data": args.data, "device": device.to_string(), "steps": trainer.step, "batch": trainer.config.batch,
        "seconds": train_seconds, "evaluation_seconds": eval_started.elapsed().as_secs_f64(),
        "images_per_second": (trainer.step - first_step) as f64 * trainer.config.batch as f64 / train_seconds,
        "parameters": trainer.online.store.num_elements(), "dit": trainer.online.config.to_json(),
        "scheduler": trainer.model.scheduler.to_json(), "grid_prompts": prompts,
        "final": metrics.as_ref().map(DiffusionMetrics::to_json),
    });
    let body = json!({"summary": summary, "losses": trainer.losses,
                      "evaluations": trainer.evals.iter().map(|(s, m)| json!({"step": s, "metrics": m})).collect::<Vec<_>>()});
    let text = serde_json::to_string_pretty(&body).map_err(|e| Error::msg(e.to_string()))?;
    vlk::io::write_atomic(&report_dir.join("metrics.json"), text.as_bytes())?;
    Ok(Outcome {
        steps: trainer.step,
        seconds: train_seconds,
        model_dir: Some(model_dir),
        report_dir: Some(report_dir),
        metrics,
    })
}
