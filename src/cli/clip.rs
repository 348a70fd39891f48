//! `vlk clip embed | zero-shot | retrieve`: CLIP inference on a Hugging Face CLIP directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`, optional `preprocessor_config.json`).
//! With `--json` each prints one JSON value on stdout and nothing else there.

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use vlk::data::image::ImageProcessor;
use vlk::data::tokenizer::ClipTokenizer;
use vlk::models::Clip;
use vlk::train::clip_eval::ClipMetrics;
use vlk::{DType, Device, Error, Result, Tensor};

#[derive(clap::Subcommand)]
pub enum ClipCommand {
    /// Normalised embeddings of images and texts, and their logits.
    Embed(EmbedArgs),
    /// Probabilities of text labels for an image.
    ZeroShot(ZeroShotArgs),
    /// The images of a folder that best match a text query.
    Retrieve(RetrieveArgs),
    /// Trains a CLIP contrastively from scratch.
    Train(super::clip_train::TrainArgs),
    /// Zero-shot accuracy (seen and held-out colour-shape pairs) and retrieval recall on `shapes`.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// `shapes` (the built-in set; its test splits are never trained on).
    #[arg(long, default_value = "shapes")]
    data: String,
    /// Images per test split.
    #[arg(long, default_value_t = 300)]
    n: usize,
    /// The seed the model was trained with (the dataset's seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ModelArgs {
    /// A CLIP checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// cpu, cuda or emu (default: VLK_DEVICE, else a GPU when present, else cpu).
    #[arg(long)]
    device: Option<String>,
}

#[derive(clap::Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    #[arg(long = "text")]
    texts: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ZeroShotArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    image: PathBuf,
    /// Comma-separated labels.
    #[arg(long)]
    labels: String,
    /// Prompt template; `{}` is replaced by each label.
    #[arg(long, default_value = "a photo of {}")]
    template: String,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RetrieveArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder of images (searched recursively for .png/.jpg/.jpeg).
    #[arg(long)]
    images: PathBuf,
    #[arg(long)]
    query: String,
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch: usize,
}

/// A loaded checkpoint with its tokenizer and image preprocessing.
pub struct Loaded {
    pub clip: Clip,
    pub tokenizer: ClipTokenizer,
    pub images: ImageProcessor,
    pub device: Device,
}

pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let device = super::device(&args.device)?;
    let dir = &args.model;
    let clip = Clip::load(dir, device, DType::F32)?;
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(Error::file(&tok_path, "missing: the CLIP directory has no tokenizer.json"));
    }
    let tokenizer = ClipTokenizer::from_file(&tok_path)?;
    if tokenizer.vocab_size() > clip.config.text.vocab_size {
        return Err(Error::file(
            &tok_path,
            format!(
                "{} tokens, but the model's vocabulary has {}",
                tokenizer.vocab_size(),
                clip.config.text.vocab_size
            ),
        ));
    }
    let images = ImageProcessor::from_dir(dir, clip.config.vision.image_size)?;
    if images.crop != (clip.config.vision.image_size, clip.config.vision.image_size) {
        return Err(Error::msg(format!(
            "{}: crop {:?} does not match the model's image size {}",
            dir.display(),
            images.crop,
            clip.config.vision.image_size
        )));
    }
    Ok(Loaded {
        clip,
        tokenizer,
        images,
        device,
    })
}

impl Loaded {
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        let batch = self
            .tokenizer
            .encode_batch(texts, self.clip.config.text.max_position_embeddings, self.device)?;
        self.clip.text_embeds(&batch.ids, Some(&batch.mask))
    }

    pub fn embed_images(&self, paths: &[&Path]) -> Result<Tensor> {
        self.clip.image_embeds(&self.images.load_batch(paths, self.device)?)
    }
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    t.to_dtype(DType::F32)?.to_vec2::<f32>()
}

fn embed(args: EmbedArgs) -> Result<()> {
    if args.images.is_empty() && args.texts.is_empty() {
        return Err(Error::msg("clip embed: give at least one --image or --text"));
    }
    let m = load(&args.model)?;
    let _guard = vlk::NoGradGuard::new();
    let paths: Vec<&Path> = args.images.iter().map(PathBuf::as_path).collect();
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let image_embeds = if paths.is_empty() { None } else { Some(m.embed_images(&paths)?) };
    let text_embeds = if texts.is_empty() { None } else { Some(m.embed_texts(&texts)?) };
    let logits = match (&image_embeds, &text_embeds) {
        (Some(i), Some(t)) => Some(m.clip.logits_per_image(i, t)?),
        _ => None,
    };
    let as_rows = |t: &Option<Tensor>| -> Result<Vec<Vec<f32>>> { t.as_ref().map(rows).transpose().map(Option::unwrap_or_default) };
    let (ie, te, lg) = (as_rows(&image_embeds)?, as_rows(&text_embeds)?, as_rows(&logits)?);
    if args.json {
        println!("{}", json!({"image_embeds": ie, "text_embeds": te, "logits_per_image": lg}));
        return Ok(());
    }
    for (p, e) in args.images.iter().zip(&ie) {
        println!(
            "image {}: [{:.4}, {:.4}, ... ] ({} dims)",
            p.display(),
            e[0],
            e[1.min(e.len() - 1)],
            e.len()
        );
    }
    for (t, e) in args.texts.iter().zip(&te) {
        println!("text {t:?}: [{:.4}, {:.4}, ... ] ({} dims)", e[0], e[1.min(e.len() - 1)], e.len());
    }
    for (p, row) in args.images.iter().zip(&lg) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.2}")).collect();
        println!("logits {}: {}", p.display(), cells.join(" "));
    }
    Ok(())
}

fn zero_shot(args: ZeroShotArgs) -> Result<()> {
    let labels: Vec<&str> = args.labels.split(',').map(str::trim).filter(|l| !l.is_empty()).collect();
    if labels.is_empty() {
        return Err(Error::msg("clip zero-shot: --labels has no label"));
    }
    let m = load(&args.model)?;
    let _guard = vlk::NoGradGuard::new();
    let prompts: Vec<String> = labels
        .iter()
        .map(|l| {
            if args.template.contains("{}") {
                args.template.replace("{}", l)
            } else {
                format!("{} {l}", args.template)
            }
        })
        .collect();
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let logits = m
        .clip
        .logits_per_image(&m.embed_images(&[args.image.as_path()])?, &m.embed_texts(&texts)?)?;
    let probs = logits.softmax()?.to_dtype(DType::F32)?.to_vec::<f32>()?;
    let mut ranked: Vec<(&str, f32)> = labels.iter().copied().zip(probs).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    if args.json {
        let list: Vec<_> = ranked.iter().map(|(l, p)| json!({"label": l, "prob": p})).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for (l, p) in ranked {
            println!("{:>6.2}%  {l}", p * 100.0);
        }
    }
    Ok(())
}

fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::file(&d, format!("cannot list: {e}")))?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Identity of a file's content as seen by the cache: size and modification time.
fn stamp(p: &Path) -> String {
    let meta = std::fs::metadata(p).ok();
    let mtime = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}:{mtime}", meta.map_or(0, |m| m.len()))
}

/// Image embeddings cached beside the images, keyed by model and by each file's stamp.
struct EmbeddingCache {
    path: PathBuf,
    key: String,
    entries: std::collections::HashMap<String, Vec<f32>>,
}

impl EmbeddingCache {
    fn open(dir: &Path, model: &Path) -> Self {
        let path = dir.join(".vlk-clip-embeddings.json");
        let key = format!(
            "{}|{}",
            model.canonicalize().unwrap_or_else(|_| model.to_path_buf()).display(),
            stamp(&model.join("model.safetensors"))
        );
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(|v| v["model"] == key.as_str())
            .and_then(|v| serde_json::from_value(v["entries"].clone()).ok())
            .unwrap_or_default();
        EmbeddingCache { path, key, entries }
    }

    fn save(&self) -> Result<()> {
        let body = serde_json::to_vec(&json!({"model": self.key, "entries": self.entries})).map_err(|e| Error::msg(e.to_string()))?;
        vlk::io::write_atomic(&self.path, &body)
    }
}

fn retrieve(args: RetrieveArgs) -> Result<()> {
    let files = image_files(&args.images)?;
    if files.is_empty() {
        return Err(Error::file(&args.images, "no .png or .jpg images found"));
    }
    let m = load(&args.model)?;
    let _guard = vlk::NoGradGuard::new();
    let mut cache = EmbeddingCache::open(&args.images, &args.model.model);
    let keyed: Vec<(String, &PathBuf)> = files.iter().map(|p| (format!("{}|{}", p.display(), stamp(p)), p)).collect();
    let missing: Vec<&(String, &PathBuf)> = keyed.iter().filter(|(k, _)| !cache.entries.contains_key(k)).collect();
    if !missing.is_empty() {
        let bar = ProgressBar::new(missing.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("embedding {pos}/{len} images [{bar:30}] {per_sec} ETA {eta}")
                .map_err(|e| Error::msg(e.to_string()))?,
        );
        for chunk in missing.chunks(args.batch.max(1)) {
            let paths: Vec<&Path> = chunk.iter().map(|(_, p)| p.as_path()).collect();
            for ((k, _), e) in chunk.iter().zip(rows(&m.embed_images(&paths)?)?) {
                cache.entries.insert(k.clone(), e);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        cache.save()?;
    }
    let query = rows(&m.embed_texts(&[args.query.as_str()])?)?.remove(0);
    let mut scored: Vec<(f32, &PathBuf)> = keyed
        .iter()
        .map(|(k, p)| (cache.entries[k].iter().zip(&query).map(|(a, b)| a * b).sum(), *p))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (score, p) in scored.into_iter().take(args.top) {
        println!("{score:.4}  {}", p.display());
    }
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    if args.data != "shapes" {
        return Err(Error::msg(format!(
            "clip eval: --data {}: only the built-in 'shapes' set is supported so far",
            args.data
        )));
    }
    if args.n < 10 {
        return Err(Error::msg("clip eval: --n must be at least 10 (recall@10 needs ten candidates)"));
    }
    let m = load(&args.model)?;
    let cfg = vlk::data::shapes::ShapesConfig {
        image_size: m.clip.config.vision.image_size,
        seed: args.seed,
        ..Default::default()
    };
    let shapes = vlk::data::shapes::Shapes::new(cfg)?;
    let metrics = vlk::train::clip_eval::evaluate(&m.clip, &m.tokenizer, &shapes, args.n, m.device)?;
    if args.json {
        println!("{}", metrics.to_json());
        return Ok(());
    }
    print_metrics(&metrics);
    Ok(())
}

/// The evaluation as a few human-readable lines on stdout.
pub fn print_metrics(metrics: &ClipMetrics) {
    for (name, z) in [("seen", metrics.seen), ("held-out", metrics.held_out)] {
        println!(
            "zero-shot {name:<9} colour+shape {:5.1}%  colour {:5.1}%  shape {:5.1}%  ({} images)",
            100.0 * z.both,
            100.0 * z.colour,
            100.0 * z.shape,
            z.images
        );
    }
    let pct = |r: [f64; 3]| format!("R@1 {:5.1}%  R@5 {:5.1}%  R@10 {:5.1}%", 100.0 * r[0], 100.0 * r[1], 100.0 * r[2]);
    println!("image->text {}\ntext->image {}", pct(metrics.i2t), pct(metrics.t2i));
    println!(
        "mean cosine: matching {:.3}, non-matching {:.3}",
        metrics.mean_positive_cosine, metrics.mean_negative_cosine
    );
}

pub fn run(cmd: ClipCommand) -> Result<()> {
    match cmd {
        ClipCommand::Embed(a) => embed(a),
        ClipCommand::ZeroShot(a) => zero_shot(a),
        ClipCommand::Retrieve(a) => retrieve(a),
        ClipCommand::Train(a) => super::clip_train::run(a),
        ClipCommand::Eval(a) => eval(a),
    }
}
