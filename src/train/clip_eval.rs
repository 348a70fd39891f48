//! Evaluation of a CLIP on the built-in `shapes` set: zero-shot classification over every
//! colour x shape label (each the mean embedding of its prompt in five templates), and the
//! colour and shape it implies by marginal probability, for
//! seen and held-out combinations separately; image-text retrieval recall@1/5/10 both ways on the
//! test split; and the mean cosine of matching versus non-matching pairs.

use crate::data::image::ImageProcessor;
use crate::data::shapes::{Colour, Sample, Shape, Shapes, Split};
use crate::data::tokenizer::ClipTokenizer;
use crate::models::Clip;
use crate::{DType, Device, Result, Tensor};
use serde_json::{json, Value};

/// Accuracies as fractions in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ZeroShot {
    pub both: f64,
    pub colour: f64,
    pub shape: f64,
    pub images: usize,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClipMetrics {
    pub seen: ZeroShot,
    pub held_out: ZeroShot,
    /// Image to text and text to image recall at 1, 5, 10.
    pub i2t: [f64; 3],
    pub t2i: [f64; 3],
    /// Image-caption pairs the retrieval ranks among.
    pub pairs: usize,
    pub mean_positive_cosine: f64,
    pub mean_negative_cosine: f64,
}

impl ClipMetrics {
    pub fn to_json(&self) -> Value {
        let zs = |z: &ZeroShot| json!({"colour_shape": z.both, "colour": z.colour, "shape": z.shape, "images": z.images});
        json!({
            "zero_shot": {"seen": zs(&self.seen), "held_out": zs(&self.held_out)},
            "retrieval": {"image_to_text": {"r1": self.i2t[0], "r5": self.i2t[1], "r10": self.i2t[2]},
                          "text_to_image": {"r1": self.t2i[0], "r5": self.t2i[1], "r10": self.t2i[2]},
                          "pairs": self.pairs},
            "mean_positive_cosine": self.mean_positive_cosine,
            "mean_negative_cosine": self.mean_negative_cosine,
        })
    }
}

const BATCH: usize = 128;

/// Embeddings of images given as values in [0, 1], [n, 3, size, size] flattened.
fn embed_pixels(clip: &Clip, pixels: &[f32], size: usize, device: Device) -> Result<Tensor> {
    let per_image = 3 * size * size;
    let mut parts = Vec::new();
    for chunk in pixels.chunks(BATCH * per_image) {
        let mut values = chunk.to_vec();
        ImageProcessor::clip(size).normalize(&mut values);
        parts.push(clip.image_embeds(&Tensor::from_vec(values, &[chunk.len() / per_image, 3, size, size], device)?)?);
    }
    Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)
}

fn embed_images(clip: &Clip, shapes: &Shapes, split: Split, indices: &[u64], device: Device) -> Result<Tensor> {
    let pixels: Vec<f32> = indices.iter().flat_map(|&i| shapes.sample(split, i).image).collect();
    embed_pixels(clip, &pixels, shapes.config().image_size, device)
}

fn embed_texts(clip: &Clip, tok: &ClipTokenizer, texts: &[String], device: Device) -> Result<Tensor> {
    let mut parts = Vec::new();
    for chunk in texts.chunks(BATCH) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let batch = tok.encode_batch(&refs, clip.config.text.max_position_embeddings, device)?;
        parts.push(clip.text_embeds(&batch.ids, Some(&batch.mask))?);
    }
    Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)
}

/// One embedding per label: the normalised mean of its prompts' embeddings.
fn label_embeds(clip: &Clip, tok: &ClipTokenizer, labels: &[(Shape, Colour)], device: Device) -> Result<Tensor> {
    let per_label = Shapes::prompts(Shape::Circle, Colour::Red).len();
    let prompts: Vec<String> = labels.iter().flat_map(|&(s, c)| Shapes::prompts(s, c)).collect();
    let embeds = embed_texts(clip, tok, &prompts, device)?;
    let d = embeds.dims()[1];
    embeds.reshape(&[labels.len(), per_label, d])?.mean(1, false)?.l2_normalize(1e-12)
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    t.to_dtype(DType::F32)?.to_vec2::<f32>()
}

/// Indices and samples of the first `n` single-object images of `split`.
fn single_object(shapes: &Shapes, split: Split, n: usize) -> (Vec<u64>, Vec<Sample>) {
    (0..)
        .map(|i| (i, shapes.sample(split, i)))
        .filter(|(_, s)| s.objects.len() == 1)
        .take(n)
        .unzip()
}

/// What zero-shot classification says of one image: the most probable colour-shape label, and
/// the colour and the shape of largest marginal probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub label: (Shape, Colour),
    pub colour: Colour,
    pub shape: Shape,
}

fn classify_rows(probs: &[Vec<f32>], labels: &[(Shape, Colour)]) -> Vec<Classification> {
    probs
        .iter()
        .map(|p| {
            let best = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| labels[i])
                .expect("labels");
            let marginal =
                |key: &dyn Fn(&(Shape, Colour)) -> bool| -> f32 { p.iter().zip(labels).filter(|(_, l)| key(l)).map(|(v, _)| v).sum() };
            let colour = Colour::ALL
                .iter()
                .copied()
                .max_by(|a, b| marginal(&|l| l.1 == *a).total_cmp(&marginal(&|l| l.1 == *b)))
                .expect("colours");
            let shape = Shape::ALL
                .iter()
                .copied()
                .max_by(|a, b| marginal(&|l| l.0 == *a).total_cmp(&marginal(&|l| l.0 == *b)))
                .expect("shapes");
            Classification {
                label: best,
                colour,
                shape,
            }
        })
        .collect()
}

/// Zero-shot classification over every colour-shape label of images given as values in
/// [0, 1], [n, 3, size, size] flattened (generated images, for instance).
pub fn classify(clip: &Clip, tok: &ClipTokenizer, pixels: &[f32], size: usize, device: Device) -> Result<Vec<Classification>> {
    let _guard = crate::NoGradGuard::new();
    let labels = Shapes::labels();
    let prompts = label_embeds(clip, tok, &labels, device)?;
    let images = embed_pixels(clip, pixels, size, device)?;
    Ok(classify_rows(
        &rows(&clip.logits_per_image(&images, &prompts)?.softmax()?)?,
        &labels,
    ))
}

/// Zero-shot accuracy on the first `n` single-object images of `split`.
fn zero_shot(
    clip: &Clip,
    shapes: &Shapes,
    split: Split,
    n: usize,
    prompts: &Tensor,
    labels: &[(Shape, Colour)],
    device: Device,
) -> Result<ZeroShot> {
    let (indices, samples) = single_object(shapes, split, n);
    let truth: Vec<(Shape, Colour)> = samples.iter().map(|s| (s.objects[0].shape, s.objects[0].colour)).collect();
    let images = embed_images(clip, shapes, split, &indices, device)?;
    let predicted = classify_rows(&rows(&clip.logits_per_image(&images, prompts)?.softmax()?)?, labels);
    Ok(ZeroShot::score(&predicted, &truth))
}

impl ZeroShot {
    /// Accuracy of `predicted` against the true labels.
    pub fn score(predicted: &[Classification], truth: &[(Shape, Colour)]) -> ZeroShot {
        let count = |f: &dyn Fn(&Classification, &(Shape, Colour)) -> bool| predicted.iter().zip(truth).filter(|(p, t)| f(p, t)).count();
        let m = truth.len().max(1) as f64;
        ZeroShot {
            both: count(&|p, t| p.label == *t) as f64 / m,
            colour: count(&|p, t| p.colour == t.1) as f64 / m,
            shape: count(&|p, t| p.shape == t.0) as f64 / m,
            images: truth.len(),
        }
    }
}

/// A test image with its most probable zero-shot labels, best first.
#[derive(Debug, Clone)]
pub struct Example {
    pub sample: Sample,
    pub top: Vec<((Shape, Colour), f32)>,
}

/// The first `n` single-object images of `split` with their `k` most probable labels among all
/// colour x shape prompts.
pub fn zero_shot_examples(clip: &Clip, tok: &ClipTokenizer, shapes: &Shapes, split: Split, n: usize, k: usize) -> Result<Vec<Example>> {
    let _guard = crate::NoGradGuard::new();
    let device = clip.logit_scale.device();
    let labels = Shapes::labels();
    let prompt_embeds = label_embeds(clip, tok, &labels, device)?;
    let (indices, samples) = single_object(shapes, split, n);
    let images = embed_images(clip, shapes, split, &indices, device)?;
    let probs = rows(&clip.logits_per_image(&images, &prompt_embeds)?.softmax()?)?;
    Ok(samples
        .into_iter()
        .zip(probs)
        .map(|(sample, p)| {
            let mut ranked: Vec<((Shape, Colour), f32)> = labels.iter().copied().zip(p).collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            ranked.truncate(k);
            Example { sample, top: ranked }
        })
        .collect())
}

/// Recall@{1,5,10} of the matching column for each row of a similarity matrix.
fn recall(sim: &[Vec<f32>]) -> [f64; 3] {
    let mut hits = [0usize; 3];
    for (i, row) in sim.iter().enumerate() {
        let rank = row.iter().filter(|&&v| v > row[i]).count();
        for (h, k) in hits.iter_mut().zip([1, 5, 10]) {
            *h += usize::from(rank < k);
        }
    }
    hits.map(|h| h as f64 / sim.len().max(1) as f64)
}

/// All metrics over `n` images per split.
pub fn evaluate(clip: &Clip, tok: &ClipTokenizer, shapes: &Shapes, n: usize, device: Device) -> Result<ClipMetrics> {
    let _guard = crate::NoGradGuard::new();
    let labels = Shapes::labels();
    let prompt_embeds = label_embeds(clip, tok, &labels, device)?;
    let seen = zero_shot(clip, shapes, Split::TestSeen, n, &prompt_embeds, &labels, device)?;
    let held_out = zero_shot(clip, shapes, Split::TestHeldOut, n, &prompt_embeds, &labels, device)?;

    let indices: Vec<u64> = (0..n as u64).collect();
    let captions: Vec<String> = indices.iter().map(|&i| shapes.sample(Split::TestSeen, i).caption).collect();
    let images = embed_images(clip, shapes, Split::TestSeen, &indices, device)?;
    let texts = embed_texts(clip, tok, &captions, device)?;
    let cos = rows(&images.matmul(&texts.t()?)?)?;
    let transposed: Vec<Vec<f32>> = (0..n).map(|j| cos.iter().map(|r| r[j]).collect()).collect();
    let positive: f64 = (0..n).map(|i| cos[i][i] as f64).sum::<f64>() / n.max(1) as f64;
    let total: f64 = cos.iter().flatten().map(|&v| v as f64).sum();
    let negative = if n > 1 {
        (total - positive * n as f64) / (n * (n - 1)) as f64
    } else {
        0.0
    };
    Ok(ClipMetrics {
        seen,
        held_out,
        i2t: recall(&cos),
        t2i: recall(&transposed),
        pairs: n,
        mean_positive_cosine: positive,
        mean_negative_cosine: negative,
    })
}
