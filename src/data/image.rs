//! CLIP's image preprocessing: decode (PNG or JPEG), convert to RGB, resize the shortest side
//! with a bicubic filter, centre-crop, rescale to [0, 1] and normalise with the checkpoint's
//! mean and std (`preprocessor_config.json`; CLIP's values when absent).

use crate::{Device, Error, Result, Tensor};
use serde_json::Value;
use std::path::Path;

pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// Target of the shortest side after resizing.
    pub shortest_edge: usize,
    /// (height, width) of the centre crop.
    pub crop: (usize, usize),
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub rescale: f32,
}

impl ImageProcessor {
    /// CLIP's defaults for a model taking `size` x `size` images.
    pub fn clip(size: usize) -> Self {
        ImageProcessor {
            shortest_edge: size,
            crop: (size, size),
            mean: CLIP_MEAN,
            std: CLIP_STD,
            rescale: 1.0 / 255.0,
        }
    }

    /// From `dir/preprocessor_config.json` when present, else CLIP's defaults for `size`.
    pub fn from_dir(dir: &Path, size: usize) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            return Ok(Self::clip(size));
        }
        let v = crate::io::read_json(&path, "the preprocessor config")?;
        let mut p = Self::clip(size);
        let dim = |v: &Value, keys: &[&str]| -> Option<usize> {
            match v {
                Value::Number(n) => n.as_u64().map(|x| x as usize),
                Value::Object(o) => keys.iter().find_map(|k| o.get(*k).and_then(Value::as_u64)).map(|x| x as usize),
                _ => None,
            }
        };
        if let Some(s) = v.get("size").and_then(|s| dim(s, &["shortest_edge", "height"])) {
            p.shortest_edge = s;
        }
        if let Some(c) = v.get("crop_size") {
            let h = dim(c, &["height"]).unwrap_or(p.crop.0);
            let w = match c {
                Value::Object(o) => o.get("width").and_then(Value::as_u64).map_or(h, |x| x as usize),
                _ => h,
            };
            p.crop = (h, w);
        }
        let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
                    Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.0) as f32))
                }
                Some(other) => Err(Error::file(&path, format!("'{key}' must be a list of 3 numbers, got {other}"))),
            }
        };
        p.mean = triple("image_mean", CLIP_MEAN)?;
        p.std = triple("image_std", CLIP_STD)?;
        if let Some(r) = v.get("rescale_factor").and_then(Value::as_f64) {
            p.rescale = r as f32;
        }
        if p.std.contains(&0.0) || p.shortest_edge == 0 || p.crop.0 == 0 || p.crop.1 == 0 {
            return Err(Error::file(&path, "zero size or zero std"));
        }
        Ok(p)
    }

    /// Normalises channel-major [.., 3, H, W] values already in [0, 1] (rendered images) in
    /// place, exactly as `process` treats decoded ones.
    pub fn normalize(&self, values: &mut [f32]) {
        let plane = self.crop.0 * self.crop.1;
        for (i, v) in values.iter_mut().enumerate() {
            let c = (i / plane) % 3;
            *v = (*v - self.mean[c]) / self.std[c];
        }
    }

    /// Writes `preprocessor_config.json` as transformers' CLIPImageProcessor reads it.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let v = serde_json::json!({
            "image_processor_type": "CLIPImageProcessor", "do_resize": true, "size": {"shortest_edge": self.shortest_edge},
            "resample": 3, "do_center_crop": true, "crop_size": {"height": self.crop.0, "width": self.crop.1},
            "do_rescale": true, "rescale_factor": self.rescale, "do_normalize": true, "image_mean": self.mean, "image_std": self.std,
            "do_convert_rgb": true,
        });
        let body = serde_json::to_vec_pretty(&v).map_err(|e| Error::msg(e.to_string()))?;
        crate::io::write_atomic(&dir.join("preprocessor_config.json"), &body)
    }

    /// [3, crop_h, crop_w] values of one decoded image.
    pub fn process(&self, img: &image::DynamicImage) -> Vec<f32> {
        let rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        // As transformers sizes it: the short side becomes `shortest_edge`, the long side is
        // scaled and truncated.
        let short = self.shortest_edge as u64;
        let (nw, nh) = if w <= h {
            (short, h as u64 * short / w as u64)
        } else {
            (w as u64 * short / h as u64, short)
        };
        let (nw, nh) = ((nw as u32).max(self.crop.1 as u32), (nh as u32).max(self.crop.0 as u32));
        let resized = image::imageops::resize(&rgb, nw, nh, image::imageops::FilterType::CatmullRom);
        let (ch, cw) = (self.crop.0 as u32, self.crop.1 as u32);
        let (top, left) = ((nh - ch) / 2, (nw - cw) / 2);
        let mut out = vec![0f32; 3 * (ch * cw) as usize];
        for y in 0..ch {
            for x in 0..cw {
                let px = resized.get_pixel(left + x, top + y).0;
                for c in 0..3 {
                    out[(c * ch as usize + y as usize) * cw as usize + x as usize] =
                        (px[c] as f32 * self.rescale - self.mean[c]) / self.std[c];
                }
            }
        }
        out
    }

    /// Decodes and preprocesses image files into pixel values [B, 3, H, W], with an error naming
    /// any file that cannot be read or decoded.
    pub fn load_batch(&self, paths: &[&Path], device: Device) -> Result<Tensor> {
        let mut values = Vec::with_capacity(paths.len() * 3 * self.crop.0 * self.crop.1);
        for path in paths {
            values.extend(self.process(&load_image(path)?));
        }
        Tensor::from_vec(values, &[paths.len(), 3, self.crop.0, self.crop.1], device)
    }
}

/// Decodes a PNG or JPEG file.
pub fn load_image(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read image: {e}")))?;
    if bytes.is_empty() {
        return Err(Error::file(path, "empty file, not an image"));
    }
    let img =
        image::load_from_memory(&bytes).map_err(|e| Error::file(path, format!("cannot decode image (PNG and JPEG are supported): {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::file(path, "image has no pixels"));
    }
    Ok(img)
}
