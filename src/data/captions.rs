//! Folders of captioned images: `DIR/captions.jsonl` (one `{"image": "relative/path.jpg",
//! "caption": "..."}` per line) or `DIR/captions.csv` (a header naming `image` and `caption`
//! columns; fields may be quoted). Rows with an empty caption, a missing image or a line that
//! does not parse are counted and skipped; images that fail to decode are skipped when loaded and
//! counted too. Only a folder where every row is bad is an error.

use super::image::{load_image, ImageProcessor};
use crate::{Error, Result};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub image: PathBuf,
    pub caption: String,
}

#[derive(Debug)]
pub struct CaptionFolder {
    pub rows: Vec<Row>,
    /// (line number, reason) of every row skipped when the folder was read.
    pub bad_rows: Vec<(usize, String)>,
    /// Rows whose image failed to decode (skipped from then on).
    undecodable: Mutex<HashSet<usize>>,
}

/// Splits one CSV line into fields ("" escapes a quote inside a quoted field).
fn csv_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(field);
    Some(fields)
}

impl CaptionFolder {
    pub fn open(dir: &Path) -> Result<Self> {
        let (jsonl, csv) = (dir.join("captions.jsonl"), dir.join("captions.csv"));
        let (path, is_csv) = if jsonl.is_file() {
            (jsonl, false)
        } else if csv.is_file() {
            (csv, true)
        } else {
            return Err(Error::file(dir, "no captions.jsonl or captions.csv in this folder"));
        };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let columns = if is_csv {
            let (_, header) = lines.next().ok_or_else(|| Error::file(&path, "empty file"))?;
            let names = csv_fields(header).unwrap_or_default();
            let find = |n: &str| names.iter().position(|h| h.trim().eq_ignore_ascii_case(n));
            match (find("image"), find("caption")) {
                (Some(i), Some(c)) => Some((i, c)),
                _ => return Err(Error::file(&path, "the header must name an 'image' and a 'caption' column")),
            }
        } else {
            None
        };
        let (mut rows, mut bad_rows) = (Vec::new(), Vec::new());
        for (n, line) in lines {
            let parsed: std::result::Result<(String, String), String> = match columns {
                Some((ic, cc)) => csv_fields(line)
                    .filter(|f| f.len() > ic.max(cc))
                    .map(|f| (f[ic].clone(), f[cc].clone()))
                    .ok_or_else(|| "malformed CSV row".to_string()),
                None => serde_json::from_str::<Value>(line)
                    .map_err(|e| format!("not JSON: {e}"))
                    .and_then(|v| match (v["image"].as_str(), v["caption"].as_str()) {
                        (Some(i), Some(c)) => Ok((i.to_string(), c.to_string())),
                        _ => Err("needs string fields 'image' and 'caption'".to_string()),
                    }),
            };
            let row = parsed.and_then(|(image, caption)| {
                let caption = caption.trim().to_string();
                let image = dir.join(image.trim());
                if caption.is_empty() {
                    Err("empty caption".to_string())
                } else if !image.is_file() {
                    Err(format!("missing image {}", image.display()))
                } else {
                    Ok(Row { image, caption })
                }
            });
            match row {
                Ok(r) => rows.push(r),
                Err(reason) => bad_rows.push((n + 1, reason)),
            }
        }
        if rows.is_empty() {
            let first = bad_rows.first().map_or("no rows".to_string(), |(n, r)| format!("line {n}: {r}"));
            return Err(Error::file(&path, format!("every row is bad ({} rows; {first})", bad_rows.len())));
        }
        Ok(CaptionFolder {
            rows,
            bad_rows,
            undecodable: Mutex::new(HashSet::new()),
        })
    }

    /// Images skipped so far because they could not be decoded.
    pub fn undecodable(&self) -> usize {
        self.undecodable.lock().map_or(0, |s| s.len())
    }

    /// `n` preprocessed images [n, 3, H, W] and their captions, taking rows in order from
    /// `start` (wrapping around) and skipping images that do not decode.
    pub fn batch(&self, proc: &ImageProcessor, start: u64, n: usize) -> Result<(Vec<f32>, Vec<String>)> {
        let (mut values, mut captions) = (Vec::new(), Vec::new());
        let mut i = start as usize;
        while captions.len() < n {
            if self.undecodable() == self.rows.len() {
                return Err(Error::msg(format!("none of the {} images decodes", self.rows.len())));
            }
            let index = i % self.rows.len();
            i += 1;
            if self.undecodable.lock().is_ok_and(|s| s.contains(&index)) {
                continue;
            }
            let row = &self.rows[index];
            match load_image(&row.image) {
                Ok(img) => {
                    values.extend(proc.process(&img));
                    captions.push(row.caption.clone());
                }
                Err(_) => {
                    if let Ok(mut s) = self.undecodable.lock() {
                        s.insert(index);
                    }
                }
            }
        }
        Ok((values, captions))
    }
}
