//! How well a text-to-image model draws what `shapes` prompts ask for, measured automatically:
//! images are generated for "a <colour> <shape>" prompts of every seen and every held-out pair,
//! a CLIP trained on the set classifies each (zero-shot over all colour-shape labels), and the
//! hue of the drawn object is compared with the named colour's.
//!
//! The object's pixels are those far (> 0.2 in RGB) from the background, estimated as the
//! per-channel median of the border pixels; their hue is the chroma-weighted circular mean, and
//! the error is the angle to the hue of the colour the renderer paints (0 to 180 degrees).

use super::clip_eval::{classify, ZeroShot};
use crate::data::shapes::{Colour, Shape, Shapes};
use crate::diffusion::{SampleOptions, TextToImage};
use crate::{Error, Result, Tensor};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PromptScore {
    /// CLIP's reading of the images against the prompts.
    pub accuracy: ZeroShot,
    /// Mean hue error of the object pixels, in degrees, over images with an object.
    pub hue_error: f64,
    /// Images in which no object stood out from the background.
    pub no_object: usize,
}

impl PromptScore {
    pub fn to_json(&self) -> Value {
        json!({"colour_shape": self.accuracy.both, "colour": self.accuracy.colour, "shape": self.accuracy.shape,
               "images": self.accuracy.images, "hue_error_degrees": self.hue_error, "images_without_object": self.no_object})
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionMetrics {
    pub seen: PromptScore,
    pub held_out: PromptScore,
    pub options: SampleOptions,
}

impl DiffusionMetrics {
    pub fn to_json(&self) -> Value {
        let o = &self.options;
        json!({"seen": self.seen.to_json(), "held_out": self.held_out.to_json(),
               "sampling": {"steps": o.steps, "sampler": o.sampler.name(), "eta": o.sampler.eta(), "guidance": o.guidance,
                            "images_per_prompt": o.per_prompt, "seed": o.seed}})
    }
}

/// Hue in degrees and chroma of an RGB colour in [0, 1].
fn hue_chroma(rgb: [f32; 3]) -> (f64, f64) {
    let [r, g, b] = rgb.map(f64::from);
    // The hue angle of the point in the chromaticity plane (the hexagon's circular version).
    let x = r - 0.5 * (g + b);
    let y = 3f64.sqrt() / 2.0 * (g - b);
    (y.atan2(x).to_degrees().rem_euclid(360.0), x.hypot(y))
}

/// The hue error (degrees) of the object in one image [3, S, S] in [0, 1] against `colour`, or
/// None when nothing stands out from the background.
pub fn object_hue_error(pixels: &[f32], side: usize, colour: Colour) -> Option<f64> {
    let plane = side * side;
    let px = |i: usize| [pixels[i], pixels[plane + i], pixels[2 * plane + i]];
    let border: Vec<usize> = (0..plane)
        .filter(|&i| {
            let (y, x) = (i / side, i % side);
            y == 0 || x == 0 || y + 1 == side || x + 1 == side
        })
        .collect();
    let median = |c: usize| {
        let mut v: Vec<f32> = border.iter().map(|&i| px(i)[c]).collect();
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    let background = [median(0), median(1), median(2)];
    let (mut sx, mut sy) = (0.0, 0.0);
    let mut found = false;
    for i in 0..plane {
        let p = px(i);
        let dist = p.iter().zip(&background).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt();
        if dist > 0.2 {
            let (h, c) = hue_chroma(p);
            sx += c * h.to_radians().cos();
            sy += c * h.to_radians().sin();
            found = true;
        }
    }
    if !found || sx.hypot(sy) == 0.0 {
        return None;
    }
    let mean = sy.atan2(sx).to_degrees().rem_euclid(360.0);
    let want = hue_chroma(colour.rgb()).0;
    let d = (mean - want).abs() % 360.0;
    Some(d.min(360.0 - d))
}

/// Scores `images` ([n, 3, S, S] in [0, 1]) drawn for `pairs` (one per image).
fn score(model: &TextToImage, images: &Tensor, pairs: &[(Shape, Colour)]) -> Result<PromptScore> {
    let side = model.image_size();
    let clip = &model.encoder.clip;
    if clip.config.vision.image_size != side {
        return Err(Error::msg(format!(
            "diffusion eval: the CLIP that scores the images takes {0}x{0} images, the model draws {side}x{side}",
            clip.config.vision.image_size
        )));
    }
    let pixels = images.to_vec::<f32>()?;
    let device = clip.logit_scale.device();
    let predicted = classify(clip, &model.encoder.tokenizer, &pixels, side, device)?;
    let errors: Vec<Option<f64>> = pixels
        .chunks(3 * side * side)
        .zip(pairs)
        .map(|(img, &(_, colour))| object_hue_error(img, side, colour))
        .collect();
    let hues: Vec<f64> = errors.iter().flatten().copied().collect();
    Ok(PromptScore {
        accuracy: ZeroShot::score(&predicted, pairs),
        hue_error: hues.iter().sum::<f64>() / hues.len().max(1) as f64,
        no_object: errors.iter().filter(|e| e.is_none()).count(),
    })
}

/// Generates `opts.per_prompt` images for each seen and each held-out colour-shape pair and
/// scores them. Returns the metrics and the held-out images (prompt-major), for grids.
pub fn evaluate(model: &TextToImage, opts: &SampleOptions, mut on_step: impl FnMut()) -> Result<(DiffusionMetrics, Tensor)> {
    let (held, seen): (Vec<_>, Vec<_>) = Shapes::labels().into_iter().partition(|&(s, c)| Shapes::is_held_out(s, c));
    let mut scores = Vec::new();
    let mut last = None;
    for pairs in [&seen, &held] {
        let prompts: Vec<String> = pairs.iter().map(|&(s, c)| Shapes::prompt(s, c)).collect();
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let images = model.generate(&refs, opts, &mut on_step)?;
        let per_image: Vec<(Shape, Colour)> = pairs.iter().flat_map(|&p| std::iter::repeat_n(p, opts.per_prompt)).collect();
        scores.push(score(model, &images, &per_image)?);
        last = Some(images);
    }
    let metrics = DiffusionMetrics {
        seen: scores[0],
        held_out: scores[1],
        options: *opts,
    };
    Ok((metrics, last.expect("two passes")))
}
