//! `vlk clip train`: contrastive training of a small CLIP from scratch on the built-in `shapes`
//! set, with a progress bar, checkpoints every N steps and at the end (Hugging Face layout plus
//! optimizer and RNG state), `--resume` continuing the exact same run, and Ctrl-C saving a
//! checkpoint before exiting.

use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use vlk::data::shapes::{Shapes, ShapesConfig, Split};
use vlk::data::tokenizer::ClipTokenizer;
use vlk::models::{ClipConfig, ClipTextConfig, ClipVisionConfig};
use vlk::nn::Activation;
use vlk::train::clip::{ClipTrainer, TrainConfig};
use vlk::train::Checkpointer;
use vlk::{Device, Error, Result, Tensor};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// `shapes` (the built-in captioned set).
    #[arg(long, default_value = "shapes")]
    data: String,
    /// Run directory: checkpoints/ and model/ are written there.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 600)]
    steps: u64,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Image side of the generated shapes.
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// cpu, cuda or emu (default: VLK_DEVICE, else a GPU when present, else cpu).
    #[arg(long)]
    device: Option<String>,
}

/// A CLIP small enough to train on two CPU cores in minutes: 4-layer towers 128 wide.
pub fn small_clip(vocab_size: usize, image_size: usize) -> ClipConfig {
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
            patch_size: image_size / 8,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        },
        projection_dim: 128,
        logit_scale_init_value: 2.6592,
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    if args.data != "shapes" {
        return Err(Error::msg(format!(
            "clip train: --data {}: only the built-in 'shapes' set is supported so far",
            args.data
        )));
    }
    let device = match &args.device {
        Some(d) => Device::parse(d)?,
        None => Device::default_device()?,
    };
    let shapes = Shapes::new(ShapesConfig {
        image_size: args.image_size,
        seed: args.seed,
        ..Default::default()
    })?;
    let checkpoints = Checkpointer::new(&args.out, 2);
    let mut trainer = match (args.resume, checkpoints.latest()?) {
        (true, Some(ck)) => {
            eprintln!("resuming from {} (step {})", ck.dir.display(), ck.step);
            ClipTrainer::resume(&ck, device)?
        }
        (true, None) => return Err(Error::file(&args.out, "--resume: no checkpoint in this run directory")),
        (false, Some(ck)) => {
            return Err(Error::file(
                &ck.dir,
                "the run directory already has checkpoints: pass --resume to continue it, or choose another --out",
            ))
        }
        (false, None) => {
            let tokenizer = ClipTokenizer::word_level(&Shapes::vocabulary())?;
            let config = TrainConfig {
                steps: args.steps,
                batch: args.batch,
                lr: args.lr,
                min_lr: args.lr * 0.02,
                warmup_steps: (args.steps / 20).max(1),
                weight_decay: args.weight_decay,
                max_grad_norm: 1.0,
                seed: args.seed,
            };
            ClipTrainer::new(small_clip(tokenizer.vocab_size(), args.image_size), tokenizer, config, device)?
        }
    };
    super::signals::catch_ctrl_c();
    let total = trainer.config.steps;
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}").map_err(|e| Error::msg(e.to_string()))?);
    bar.set_position(trainer.step);
    let size = args.image_size;
    // Rendered images are normalised as `vlk clip embed` will normalise image files.
    let images = vlk::data::image::ImageProcessor::clip(size);
    while trainer.step < total {
        let start = std::time::Instant::now();
        let batch = trainer.config.batch;
        let (mut pixels, captions) = shapes.batch(Split::Train, trainer.step * batch as u64, batch);
        images.normalize(&mut pixels);
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
        let interrupted = super::signals::interrupted();
        if trainer.step % args.checkpoint_every == 0 || trainer.step == total || interrupted {
            let ck = trainer.save_checkpoint(&checkpoints, serde_json::json!({"data": "shapes", "image_size": size}))?;
            if interrupted {
                bar.abandon();
                eprintln!("interrupted: checkpoint at step {} in {}", ck.step, ck.dir.display());
                return Ok(());
            }
        }
    }
    bar.finish();
    let model_dir = args.out.join("model");
    trainer.save_model(&model_dir)?;
    println!("trained {} steps; model in {}", trainer.step, model_dir.display());
    Ok(())
}
