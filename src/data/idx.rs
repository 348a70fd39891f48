//! MNIST-format datasets (the idx files of MNIST and Fashion-MNIST, plain or gzipped, as
//! Debian's dataset-fashion-mnist installs them under /usr/share/datasets/fashion-mnist) read as
//! captioned images: each grey image becomes RGB, and its caption names its class through one of
//! a few templates.

use super::image::ImageProcessor;
use crate::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

const FASHION: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];
const DIGITS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
const TEMPLATES: [&str; 4] = ["a photo of {}", "a picture of {}", "an image of {}", "{}"];

pub struct IdxDataset {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
    classes: &'static [&'static str; 10],
}

/// `name` or `name.gz` in `dir`, decompressed.
fn read_maybe_gz(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    for (path, gz) in [(dir.join(name), false), (dir.join(format!("{name}.gz")), true)] {
        if !path.is_file() {
            continue;
        }
        let raw = std::fs::read(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
        if !gz {
            return Ok((path, raw));
        }
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::file(&path, format!("not a valid gzip file: {e}")))?;
        return Ok((path, out));
    }
    Err(Error::file(dir.join(name), "missing (also looked for .gz)"))
}

/// The dims of an idx file after checking its magic number (0x0000_08_NN: unsigned bytes).
fn idx_dims(path: &Path, bytes: &[u8], ndims: usize) -> Result<Vec<usize>> {
    if bytes.len() < 4 + 4 * ndims || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8 || bytes[3] as usize != ndims {
        return Err(Error::file(path, format!("not an idx file of unsigned bytes with {ndims} dims")));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    if bytes.len() != 4 + 4 * ndims + dims.iter().product::<usize>() {
        return Err(Error::file(
            path,
            format!("{} bytes do not hold dims {dims:?} (truncated?)", bytes.len()),
        ));
    }
    Ok(dims)
}

impl IdxDataset {
    /// True when `dir` holds MNIST-format training files.
    pub fn detect(dir: &Path) -> bool {
        ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]
            .iter()
            .any(|n| dir.join(n).is_file())
    }

    /// The training (`train-*`) or test (`t10k-*`) files of `dir`. Fashion-MNIST's class names are
    /// used when the folder's path mentions "fashion", digit names otherwise.
    pub fn open(dir: &Path, train: bool) -> Result<Self> {
        let prefix = if train { "train" } else { "t10k" };
        let (ipath, images) = read_maybe_gz(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let (lpath, labels) = read_maybe_gz(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let idims = idx_dims(&ipath, &images, 3)?;
        let ldims = idx_dims(&lpath, &labels, 1)?;
        if idims[0] != ldims[0] || idims[0] == 0 {
            return Err(Error::file(&lpath, format!("{} labels for {} images", ldims[0], idims[0])));
        }
        let labels = labels[8..].to_vec();
        if let Some(bad) = labels.iter().find(|&&l| l > 9) {
            return Err(Error::file(&lpath, format!("label {bad} outside 0..=9")));
        }
        let fashion = dir.to_string_lossy().to_ascii_lowercase().contains("fashion");
        Ok(IdxDataset {
            pixels: images[16..].to_vec(),
            labels,
            rows: idims[1],
            cols: idims[2],
            classes: if fashion { &FASHION } else { &DIGITS },
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn class_names(&self) -> &'static [&'static str; 10] {
        self.classes
    }

    /// The caption of image `i` (the template varies with the index).
    pub fn caption(&self, i: usize) -> String {
        let class = self.classes[self.labels[i] as usize];
        let article = if class.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        TEMPLATES[i % TEMPLATES.len()].replace("{}", &format!("{article} {class}"))
    }

    /// Preprocessed images [n, 3, H, W] and captions, from `start` (wrapping around).
    pub fn batch(&self, proc: &ImageProcessor, start: u64, n: usize) -> (Vec<f32>, Vec<String>) {
        let plane = self.rows * self.cols;
        let mut values = Vec::new();
        let mut captions = Vec::with_capacity(n);
        for j in 0..n {
            let i = (start as usize + j) % self.len();
            let grey = image::GrayImage::from_raw(self.cols as u32, self.rows as u32, self.pixels[i * plane..(i + 1) * plane].to_vec())
                .expect("sizes checked on open");
            values.extend(proc.process(&image::DynamicImage::ImageLuma8(grey)));
            captions.push(self.caption(i));
        }
        (values, captions)
    }
}
