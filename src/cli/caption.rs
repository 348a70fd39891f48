//! `vlk caption` and `vlk vqa`: describe an image, or answer a question about it, with an
//! encoder-decoder captioner; `train` and `eval` subcommands for each task.

use super::device;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vlk::data::captions::CaptionFolder;
use vlk::data::image::ImageProcessor;
use vlk::data::shapes::{Shapes, ShapesConfig, Split};
use vlk::data::tokenizer::ClipTokenizer;
use vlk::data::vqa::{question_for, VqaFolder, QUESTION_WORDS};
use vlk::models::{Captioner, CaptionerConfig, ClipConfig, DecoderConfig, Strategy};
use vlk::train::captioner::{prompt_ids, CaptionTrainConfig, CaptionerTrainer, Example, Task};
use vlk::train::captioner_eval::{evaluate_captions, evaluate_vqa};
use vlk::train::report::training_chart;
use vlk::train::Checkpointer;
use vlk::{Device, Error, Result, Tensor};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CaptionArgs {
    #[command(subcommand)]
    command: Option<TaskCommand>,
    #[command(flatten)]
    describe: DescribeArgs,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct VqaArgs {
    #[command(subcommand)]
    command: Option<TaskCommand>,
    #[command(flatten)]
    describe: DescribeArgs,
    /// The question to answer about the image.
    #[arg(long)]
    question: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum TaskCommand {
    /// Trains a captioner from scratch (or from a CLIP's vision tower) by teacher forcing.
    Train(TrainArgs),
    /// Scores a model on the built-in `shapes` test splits (seen and held-out pairs).
    Eval(EvalArgs),
}

#[derive(clap::Args)]
pub struct DescribeArgs {
    /// A model directory (the `model/` of a training run).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    image: Option<PathBuf>,
    /// Beam width (1: greedy).
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Beam search scores finished outputs by log-probability / length^this.
    #[arg(long, default_value_t = 0.6)]
    length_penalty: f64,
    /// Sample instead of searching, at this temperature (with --top-k).
    #[arg(long)]
    temperature: Option<f64>,
    /// With --temperature: draw among the k most probable tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 30)]
    max_tokens: usize,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// cpu, cuda or emu (default: VLK_DEVICE, else a GPU when present, else cpu).
    #[arg(long)]
    device: Option<String>,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// `shapes` (built-in; captions or generated questions), or a folder with captions.jsonl /
    /// captions.csv (caption) or vqa.jsonl (vqa).
    #[arg(long, default_value = "shapes")]
    data: String,
    /// Run directory: checkpoints/, model/ and report/ are written there.
    #[arg(long)]
    out: PathBuf,
    /// Training steps (default: 2500 for vqa, about 6 minutes on 2 cores; 1500 for caption).
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Start the vision tower from this CLIP directory's (its vision config is used).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Keep the vision tower fixed (with --clip: a frozen CLIP encoder).
    #[arg(long)]
    freeze_vision: bool,
    /// Width of the decoder (and of the vision tower unless --clip gives one).
    #[arg(long, default_value_t = 128)]
    width: usize,
    #[arg(long, default_value_t = 3)]
    decoder_layers: usize,
    #[arg(long, default_value_t = 4)]
    vision_layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    #[arg(long, default_value_t = 8)]
    patch_size: usize,
    /// Longest token sequence (question and answer, or caption).
    #[arg(long, default_value_t = 32)]
    max_length: usize,
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// Test images per split in the final evaluation on `shapes`.
    #[arg(long, default_value_t = 300)]
    eval_images: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    #[arg(long)]
    device: Option<String>,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// Test images per split.
    #[arg(long, default_value_t = 300)]
    n: usize,
    /// Beam width for captions (1: greedy).
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// The seed the model was trained with (the dataset's).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    device: Option<String>,
}

pub fn run_caption(args: CaptionArgs) -> Result<()> {
    match args.command {
        Some(TaskCommand::Train(t)) => train_and_report(&t, Task::Caption),
        Some(TaskCommand::Eval(e)) => eval(&e, Task::Caption),
        None => describe(&args.describe, None),
    }
}

pub fn run_vqa(args: VqaArgs) -> Result<()> {
    match args.command {
        Some(TaskCommand::Train(t)) => train_and_report(&t, Task::Vqa),
        Some(TaskCommand::Eval(e)) => eval(&e, Task::Vqa),
        None => {
            let q = args
                .question
                .ok_or_else(|| Error::msg("vqa: give --question TEXT (and --model DIR --image PATH)"))?;
            describe(&args.describe, Some(q))
        }
    }
}

fn strategy(a: &DescribeArgs) -> Result<Strategy> {
    if let Some(t) = a.temperature {
        if !(t > 0.0 && t.is_finite()) {
            return Err(Error::msg(format!("--temperature must be a positive number, got {t}")));
        }
        return Ok(Strategy::Sample {
            temperature: t,
            top_k: a.top_k,
            seed: a.seed,
        });
    }
    match a.beam {
        0 => Err(Error::msg("--beam must be at least 1")),
        1 => Ok(Strategy::Greedy),
        width => Ok(Strategy::Beam {
            width,
            length_penalty: a.length_penalty,
        }),
    }
}

/// Loads a model directory: weights, tokenizer and image preprocessing.
fn load(dir: &Path, device: Device) -> Result<(Captioner, ClipTokenizer, ImageProcessor)> {
    let model = Captioner::load(dir, device)?;
    let tok = ClipTokenizer::from_file(&dir.join("tokenizer.json"))?;
    let proc = ImageProcessor::from_dir(dir, model.config.vision.image_size)?;
    Ok((model, tok, proc))
}

fn describe(a: &DescribeArgs, question: Option<String>) -> Result<()> {
    let what = if question.is_some() { "vqa" } else { "caption" };
    let (Some(model_dir), Some(image)) = (&a.model, &a.image) else {
        return Err(Error::msg(format!(
            "{what}: give --model DIR and --image PATH (or a train/eval subcommand)"
        )));
    };
    let strategy = strategy(a)?;
    let device = device(&a.device)?;
    let (model, tok, proc) = load(model_dir, device)?;
    let pixels = proc.load_batch(&[image.as_path()], device)?;
    let d = &model.config.decoder;
    // Leave at least 4 positions for the answer.
    let room = d.max_length.saturating_sub(4).max(2);
    let (prompt, cut) = prompt_ids(&tok, d.bos_token_id, question.as_deref(), room)?;
    if cut {
        eprintln!("warning: the question is longer than the model's {room} prompt tokens; it was cut to fit");
    }
    let g = model.generate(&pixels, &[prompt], a.max_tokens, strategy)?.remove(0);
    let text = tok.decode(&g.tokens)?;
    let key = if question.is_some() { "answer" } else { "caption" };
    if a.json {
        println!(
            "{}",
            json!({key: text, "log_prob": g.log_prob, "tokens": g.tokens.len(), "truncated_question": cut})
        );
    } else {
        println!("{text}");
    }
    Ok(())
}

fn eval(e: &EvalArgs, task: Task) -> Result<()> {
    let device = device(&e.device)?;
    let (model, tok, _) = load(&e.model, device)?;
    let shapes = Shapes::new(ShapesConfig {
        image_size: model.config.vision.image_size,
        seed: e.seed,
        ..Default::default()
    })?;
    let beam = if e.beam > 1 {
        Strategy::Beam {
            width: e.beam,
            length_penalty: 0.6,
        }
    } else {
        Strategy::Greedy
    };
    let metrics = match task {
        Task::Vqa => evaluate_vqa(&model, &tok, &shapes, e.n)?.to_json(),
        Task::Caption => evaluate_captions(&model, &tok, &shapes, e.n, beam)?.to_json(),
    };
    if e.json {
        println!("{metrics}");
    } else {
        print_metrics(task, &metrics);
    }
    Ok(())
}

pub fn print_metrics(task: Task, m: &serde_json::Value) {
    for split in ["seen", "held_out"] {
        let s = &m[split];
        match task {
            Task::Vqa => {
                let o = &s["overall"];
                let kinds: Vec<String> = s["by_question"]
                    .as_object()
                    .map(|k| {
                        k.iter()
                            .map(|(name, v)| format!("{name} {:.1}%", 100.0 * v["exact_match"].as_f64().unwrap_or(0.0)))
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{split}: exact match {:.1}%, F1 {:.1}% over {} questions ({})",
                    100.0 * o["exact_match"].as_f64().unwrap_or(0.0),
                    100.0 * o["f1"].as_f64().unwrap_or(0.0),
                    o["questions"],
                    kinds.join(", ")
                );
            }
            Task::Caption => println!(
                "{split}: BLEU-4 {:.3}, colour and shape of every object named in {:.1}% of {} captions",
                s["bleu4"].as_f64().unwrap_or(0.0),
                100.0 * s["colour_shape_correct"].as_f64().unwrap_or(0.0),
                s["images"]
            ),
        }
    }
}

/// Where training batches come from.
enum Data {
    Shapes(Shapes),
    Captions(CaptionFolder),
    Questions(VqaFolder),
}

impl Data {
    fn open(data: &str, task: Task, image_size: usize, seed: u64) -> Result<Self> {
        if data == "shapes" {
            return Ok(Data::Shapes(Shapes::new(ShapesConfig {
                image_size,
                seed,
                ..Default::default()
            })?));
        }
        let dir = Path::new(data);
        let (rows, bad, data) = match task {
            Task::Caption => {
                let f = CaptionFolder::open(dir)?;
                (f.rows.len(), f.bad_rows.clone(), Data::Captions(f))
            }
            Task::Vqa => {
                let f = VqaFolder::open(dir)?;
                (f.rows.len(), f.bad_rows.clone(), Data::Questions(f))
            }
        };
        eprintln!("{}: {rows} rows, {} bad rows skipped", dir.display(), bad.len());
        for (line, reason) in bad.iter().take(5) {
            eprintln!("  line {line}: {reason}");
        }
        Ok(data)
    }

    fn tokenizer(&self) -> Result<ClipTokenizer> {
        match self {
            Data::Shapes(_) => {
                let mut words = Shapes::vocabulary();
                words.extend(QUESTION_WORDS);
                words.sort_unstable();
                words.dedup();
                ClipTokenizer::word_level(&words)
            }
            _ => ClipTokenizer::bundled(),
        }
    }

    fn batch(&self, task: Task, proc: &ImageProcessor, start: u64, n: usize) -> Result<(Vec<f32>, Vec<Example>)> {
        match self {
            Data::Shapes(shapes) => {
                let samples: Vec<_> = (0..n as u64).map(|i| (start + i, shapes.sample(Split::Train, start + i))).collect();
                let mut pixels: Vec<f32> = samples.iter().flat_map(|(_, s)| s.image.iter().copied()).collect();
                proc.normalize(&mut pixels);
                let examples = samples
                    .into_iter()
                    .map(|(i, s)| match task {
                        Task::Caption => Example {
                            question: None,
                            target: s.caption,
                        },
                        Task::Vqa => {
                            let q = question_for(shapes, Split::Train, i, &s.objects);
                            Example {
                                question: Some(q.text),
                                target: q.answer,
                            }
                        }
                    })
                    .collect();
                Ok((pixels, examples))
            }
            Data::Captions(f) => {
                let (pixels, captions) = f.batch(proc, start, n)?;
                Ok((
                    pixels,
                    captions.into_iter().map(|c| Example { question: None, target: c }).collect(),
                ))
            }
            Data::Questions(f) => {
                let (pixels, qa) = f.batch(proc, start, n)?;
                Ok((
                    pixels,
                    qa.into_iter()
                        .map(|row| Example {
                            question: Some(row.question),
                            target: row.answer,
                        })
                        .collect(),
                ))
            }
        }
    }
}

fn new_trainer(args: &TrainArgs, task: Task, data: &Data, device: Device) -> Result<CaptionerTrainer> {
    let tokenizer = data.tokenizer()?;
    let vision = match &args.clip {
        Some(dir) => ClipConfig::load(dir)?.vision,
        None => {
            let mut v = super::clip_train::small_clip(1, args.image_size, args.patch_size).vision;
            v.hidden_size = args.width;
            v.intermediate_size = 4 * args.width;
            v.num_hidden_layers = args.vision_layers;
            v.num_attention_heads = args.heads;
            v
        }
    };
    if vision.image_size != args.image_size {
        return Err(Error::msg(format!(
            "caption train: the CLIP's vision tower takes {0}x{0} images; pass --image-size {0}",
            vision.image_size
        )));
    }
    let config = CaptionerConfig {
        vision,
        decoder: DecoderConfig {
            vocab_size: tokenizer.vocab_size(),
            hidden_size: args.width,
            intermediate_size: 4 * args.width,
            num_layers: args.decoder_layers,
            num_heads: args.heads,
            max_length: args.max_length,
            tie_embeddings: true,
            layer_norm_eps: 1e-5,
            bos_token_id: tokenizer.bos_id()?,
            eos_token_id: tokenizer.eos_id(),
        },
    };
    let steps = args.steps.unwrap_or(match task {
        Task::Vqa => 2500,
        Task::Caption => 1500,
    });
    let model = Captioner::new(config, device, vlk::DType::F32, args.seed)?;
    if let Some(dir) = &args.clip {
        model.init_vision_from_clip(dir)?;
    }
    CaptionerTrainer::new(
        model,
        tokenizer,
        CaptionTrainConfig {
            task,
            steps,
            batch: args.batch,
            lr: args.lr,
            min_lr: args.lr * 0.02,
            warmup_steps: (steps / 20).max(1),
            weight_decay: args.weight_decay,
            max_grad_norm: 1.0,
            seed: args.seed,
            freeze_vision: args.freeze_vision,
        },
    )
}

fn train_and_report(args: &TrainArgs, task: Task) -> Result<()> {
    let name = task.name();
    let device = device(&args.device)?;
    let checkpoints = Checkpointer::new(&args.out, 2);
    let (mut trainer, data) = match checkpoints.resume_point(args.resume)? {
        Some(ck) => {
            let trainer = CaptionerTrainer::resume(&ck, device)?;
            if trainer.config.task != task {
                return Err(Error::msg(format!("{name} train: this run trains {}", trainer.config.task.name())));
            }
            eprintln!("resuming from {} (step {})", ck.dir.display(), ck.step);
            // A resumed run keeps the image size it started with.
            let data = Data::open(&args.data, task, trainer.model.config.vision.image_size, args.seed)?;
            (trainer, data)
        }
        None => {
            let data = Data::open(&args.data, task, args.image_size, args.seed)?;
            (new_trainer(args, task, &data, device)?, data)
        }
    };
    let size = trainer.model.config.vision.image_size;
    let proc = ImageProcessor::clip(size);
    super::signals::catch_ctrl_c();
    let started = Instant::now();
    let total = trainer.config.steps;
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}").map_err(|e| Error::msg(e.to_string()))?);
    bar.set_position(trainer.step);
    while trainer.step < total {
        let t0 = Instant::now();
        let batch = trainer.config.batch;
        let (pixels, examples) = data.batch(task, &proc, trainer.step * batch as u64, batch)?;
        let pixels = Tensor::from_vec(pixels, &[batch, 3, size, size], device)?;
        let loss = trainer.train_step(&pixels, &examples)?;
        bar.set_message(format!("loss {loss:.4} {:.0} img/s", batch as f64 / t0.elapsed().as_secs_f64()));
        bar.inc(1);
        let interrupted = super::signals::interrupted();
        if trainer.step % args.checkpoint_every.max(1) == 0 || trainer.step == total || interrupted {
            let ck = trainer.save_checkpoint(&checkpoints, json!({"data": args.data}))?;
            if interrupted {
                bar.abandon();
                eprintln!("interrupted: checkpoint at step {} in {}", ck.step, ck.dir.display());
                return Ok(());
            }
        }
    }
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let model_dir = args.out.join("model");
    trainer.save_model(&model_dir)?;
    let metrics = match &data {
        Data::Shapes(shapes) if args.eval_images > 0 => Some(match task {
            Task::Vqa => evaluate_vqa(&trainer.model, &trainer.tokenizer, shapes, args.eval_images)?.to_json(),
            Task::Caption => evaluate_captions(&trainer.model, &trainer.tokenizer, shapes, args.eval_images, Strategy::Greedy)?.to_json(),
        }),
        _ => None,
    };
    let report = args.out.join("report");
    std::fs::create_dir_all(&report).map_err(|e| Error::file(&report, format!("cannot create: {e}")))?;
    let loss: Vec<(f64, f64)> = trainer.losses.iter().map(|&(s, l)| (s as f64, l)).collect();
    training_chart(&report.join("training.png"), &loss, &[])?;
    let body = json!({"summary": {"task": name, "data": args.data, "device": device.to_string(), "steps": trainer.step,
                                  "batch": trainer.config.batch, "seconds": seconds,
                                  "parameters": trainer.model.store.num_elements(), "final": metrics},
                      "losses": trainer.losses});
    let text = serde_json::to_string_pretty(&body).map_err(|e| Error::msg(e.to_string()))?;
    vlk::io::write_atomic(&report.join("metrics.json"), text.as_bytes())?;
    if let Some(m) = &metrics {
        print_metrics(task, m);
    }
    println!(
        "trained {} steps in {seconds:.0} s; model in {}, report in {}",
        trainer.step,
        model_dir.display(),
        report.display()
    );
    Ok(())
}
