//! Visual question answering data: questions with exact answers about `shapes` images, generated
//! from the objects drawn, and folders of user questions (`DIR/vqa.jsonl`, one `{"image":
//! "relative/path.jpg", "question": "...", "answer": "..."}` per line; bad rows counted and
//! skipped as for captions).

use super::image::{load_image, ImageProcessor};
use super::shapes::{Object, Position, Shapes, Split};
use crate::{Error, Result, Rng};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuestionKind {
    /// "what colour is the circle?"
    Colour,
    /// "what shape is on the left?"
    ShapeAt,
    /// "how many shapes are there?"
    Count,
    /// "is the red shape left of the blue one?"
    LeftOf,
    /// "what size is the star?"
    Size,
}

impl QuestionKind {
    pub const ALL: [QuestionKind; 5] = [
        QuestionKind::Colour,
        QuestionKind::ShapeAt,
        QuestionKind::Count,
        QuestionKind::LeftOf,
        QuestionKind::Size,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuestionKind::Colour => "colour",
            QuestionKind::ShapeAt => "shape_at",
            QuestionKind::Count => "count",
            QuestionKind::LeftOf => "left_of",
            QuestionKind::Size => "size",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub kind: QuestionKind,
    pub text: String,
    pub answer: String,
}

/// Words the questions and answers use beyond the captions' vocabulary.
pub const QUESTION_WORDS: [&str; 13] = [
    "what", "colour", "shape", "how", "many", "shapes", "are", "size", "yes", "no", "one", "two", "?",
];

/// Every question the objects answer without ambiguity.
pub fn questions(objects: &[Object]) -> Vec<Question> {
    let mut out = Vec::new();
    let q = |kind, text: String, answer: &str| Question {
        kind,
        text,
        answer: answer.to_string(),
    };
    let unique_shape = |o: &Object| objects.iter().filter(|p| p.shape == o.shape).count() == 1;
    for o in objects {
        if unique_shape(o) {
            out.push(q(
                QuestionKind::Colour,
                format!("what colour is the {}?", o.shape.name()),
                o.colour.name(),
            ));
            out.push(q(
                QuestionKind::Size,
                format!("what size is the {}?", o.shape.name()),
                o.size.name(),
            ));
        }
        out.push(q(
            QuestionKind::ShapeAt,
            format!("what shape is {}?", o.position.phrase()),
            o.shape.name(),
        ));
    }
    out.push(q(
        QuestionKind::Count,
        "how many shapes are there?".into(),
        if objects.len() == 1 { "one" } else { "two" },
    ));
    if let [a, b] = objects {
        if a.position == Position::Left && a.colour != b.colour {
            let (ca, cb) = (a.colour.name(), b.colour.name());
            out.push(q(QuestionKind::LeftOf, format!("is the {ca} shape left of the {cb} one?"), "yes"));
            out.push(q(QuestionKind::LeftOf, format!("is the {cb} shape left of the {ca} one?"), "no"));
        }
    }
    out
}

/// The question asked of sample `index` of `split`: a question type drawn uniformly among those
/// the image allows, then one of its questions (a pure function of the index).
pub fn question_for(shapes: &Shapes, split: Split, index: u64, objects: &[Object]) -> Question {
    let all = questions(objects);
    let mut rng = Rng::new(shapes.config().seed ^ 0x5141_0000 ^ index.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ split_salt(split));
    let kinds: Vec<QuestionKind> = QuestionKind::ALL.into_iter().filter(|k| all.iter().any(|q| q.kind == *k)).collect();
    let kind = kinds[rng.below(kinds.len() as u64) as usize];
    let of_kind: Vec<&Question> = all.iter().filter(|q| q.kind == kind).collect();
    of_kind[rng.below(of_kind.len() as u64) as usize].clone()
}

fn split_salt(split: Split) -> u64 {
    match split {
        Split::Train => 1,
        Split::TestSeen => 2,
        Split::TestHeldOut => 3,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VqaRow {
    pub image: PathBuf,
    pub question: String,
    pub answer: String,
}

#[derive(Debug)]
pub struct VqaFolder {
    pub rows: Vec<VqaRow>,
    /// (line number, reason) of every row skipped.
    pub bad_rows: Vec<(usize, String)>,
}

impl VqaFolder {
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("vqa.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
        let (mut rows, mut bad_rows) = (Vec::new(), Vec::new());
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let parsed: std::result::Result<Value, _> = serde_json::from_str(line);
            let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::trim).map(str::to_string);
            match parsed {
                Ok(v) => match (field(&v, "image"), field(&v, "question"), field(&v, "answer")) {
                    (Some(img), Some(q), Some(a)) if !q.is_empty() && !a.is_empty() => {
                        let image = dir.join(img);
                        if image.is_file() {
                            rows.push(VqaRow {
                                image,
                                question: q,
                                answer: a,
                            });
                        } else {
                            bad_rows.push((n + 1, format!("no image {}", image.display())));
                        }
                    }
                    _ => bad_rows.push((n + 1, "needs non-empty \"image\", \"question\" and \"answer\" strings".into())),
                },
                Err(e) => bad_rows.push((n + 1, format!("not JSON: {e}"))),
            }
        }
        if rows.is_empty() {
            return Err(Error::file(&path, format!("no usable rows ({} bad)", bad_rows.len())));
        }
        Ok(VqaFolder { rows, bad_rows })
    }

    /// Pixel values and rows of rows start.. (cycling), skipping images that do not decode.
    pub fn batch(&self, proc: &ImageProcessor, start: u64, n: usize) -> Result<(Vec<f32>, Vec<VqaRow>)> {
        let (mut values, mut qa) = (Vec::new(), Vec::new());
        let mut failures = 0;
        let mut i = start as usize;
        while qa.len() < n {
            let row = &self.rows[i % self.rows.len()];
            i += 1;
            match load_image(&row.image) {
                Ok(img) => {
                    values.extend(proc.process(&img));
                    qa.push(row.clone());
                }
                Err(_) => {
                    failures += 1;
                    if failures >= self.rows.len() {
                        return Err(Error::msg(format!("none of the {} images decodes", self.rows.len())));
                    }
                }
            }
        }
        Ok((values, qa))
    }
}
