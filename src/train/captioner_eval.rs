//! Evaluating the captioner on the built-in `shapes` test splits (seen and held-out colour-shape
//! pairs apart): VQA exact match and token-level F1 per question type; caption BLEU-4 (corpus
//! level, one reference, with the brevity penalty) and the share of captions that name every
//! object's colour and shape correctly ("a red circle" for each object drawn).

use super::captioner::prompt_ids;
use crate::data::image::ImageProcessor;
use crate::data::shapes::{Object, Shapes, Split};
use crate::data::tokenizer::ClipTokenizer;
use crate::data::vqa::{question_for, QuestionKind};
use crate::models::{Captioner, Strategy};
use crate::{Device, Result, Tensor};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// Images decoded per batch of image encodings.
const BATCH: usize = 64;

/// Words of a text, lower-cased, punctuation dropped.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Token-level F1 of a predicted answer against the true one.
pub fn token_f1(predicted: &str, truth: &str) -> f64 {
    let (p, t) = (words(predicted), words(truth));
    if p.is_empty() || t.is_empty() {
        return f64::from(u8::from(p == t));
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in &t {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0;
    for w in &p {
        if let Some(c) = counts.get_mut(w.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let (precision, recall) = (common as f64 / p.len() as f64, common as f64 / t.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// Corpus BLEU-4 (Papineni et al.): geometric mean of the clipped 1- to 4-gram precisions times
/// the brevity penalty, each candidate against one reference. 0 when any precision is 0.
pub fn bleu4(candidates: &[Vec<String>], references: &[Vec<String>]) -> f64 {
    let (mut matched, mut total) = ([0usize; 4], [0usize; 4]);
    let (mut cand_len, mut ref_len) = (0, 0);
    for (c, r) in candidates.iter().zip(references) {
        cand_len += c.len();
        ref_len += r.len();
        for n in 1..=4 {
            let grams = |s: &[String]| -> HashMap<Vec<String>, usize> {
                let mut m = HashMap::new();
                for g in s.windows(n) {
                    *m.entry(g.to_vec()).or_default() += 1;
                }
                m
            };
            let (cg, rg) = (grams(c), grams(r));
            matched[n - 1] += cg.iter().map(|(g, &k)| k.min(rg.get(g).copied().unwrap_or(0))).sum::<usize>();
            total[n - 1] += c.len().saturating_sub(n - 1);
        }
    }
    if matched.contains(&0) || cand_len == 0 {
        return 0.0;
    }
    let log_p: f64 = (0..4).map(|i| (matched[i] as f64 / total[i] as f64).ln()).sum::<f64>() / 4.0;
    let bp = if cand_len >= ref_len {
        1.0
    } else {
        (1.0 - ref_len as f64 / cand_len as f64).exp()
    };
    bp * log_p.exp()
}

/// Whether a caption names each object's colour and shape ("red circle" for a red circle).
pub fn names_every_object(caption: &str, objects: &[Object]) -> bool {
    let w = words(caption);
    objects
        .iter()
        .all(|o| w.windows(2).any(|p| p[0] == o.colour.name() && p[1] == o.shape.name()))
}

fn images(shapes: &Shapes, split: Split, indices: &[u64], device: Device) -> Result<Tensor> {
    let size = shapes.config().image_size;
    let mut values: Vec<f32> = indices.iter().flat_map(|&i| shapes.sample(split, i).image).collect();
    ImageProcessor::clip(size).normalize(&mut values);
    Tensor::from_vec(values, &[indices.len(), 3, size, size], device)
}

/// Decodes the answer to each question (None: a caption) for the images of `indices`.
fn decode(
    model: &Captioner,
    tok: &ClipTokenizer,
    shapes: &Shapes,
    split: Split,
    indices: &[u64],
    questions: &[Option<String>],
    strategy: Strategy,
) -> Result<Vec<String>> {
    let device = model.store.device();
    let d = &model.config.decoder;
    let mut out = Vec::with_capacity(indices.len());
    for (chunk, qs) in indices.chunks(BATCH).zip(questions.chunks(BATCH)) {
        let pixels = images(shapes, split, chunk, device)?;
        let prompts = qs
            .iter()
            .map(|q| Ok(prompt_ids(tok, d.bos_token_id, q.as_deref(), d.max_length - 1)?.0))
            .collect::<Result<Vec<_>>>()?;
        for g in model.generate(&pixels, &prompts, d.max_length, strategy)? {
            out.push(tok.decode(&g.tokens)?);
        }
    }
    Ok(out)
}

/// Exact match and F1 over some answers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AnswerScore {
    pub exact: f64,
    pub f1: f64,
    pub questions: usize,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VqaSplitScore {
    pub overall: AnswerScore,
    pub by_kind: BTreeMap<QuestionKind, AnswerScore>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VqaMetrics {
    pub seen: VqaSplitScore,
    pub held_out: VqaSplitScore,
}

fn answer_json(a: &AnswerScore) -> Value {
    json!({"exact_match": a.exact, "f1": a.f1, "questions": a.questions})
}

impl VqaMetrics {
    pub fn to_json(&self) -> Value {
        let split = |s: &VqaSplitScore| {
            let kinds: Map<String, Value> = s.by_kind.iter().map(|(k, a)| (k.name().to_string(), answer_json(a))).collect();
            json!({"overall": answer_json(&s.overall), "by_question": kinds})
        };
        json!({"seen": split(&self.seen), "held_out": split(&self.held_out)})
    }
}

fn score_answers(kinds: &[QuestionKind], predicted: &[String], truth: &[String]) -> VqaSplitScore {
    let mut sums: BTreeMap<QuestionKind, (f64, f64, usize)> = BTreeMap::new();
    for ((k, p), t) in kinds.iter().zip(predicted).zip(truth) {
        let e = sums.entry(*k).or_default();
        e.0 += f64::from(u8::from(words(p) == words(t)));
        e.1 += token_f1(p, t);
        e.2 += 1;
    }
    let avg = |(e, f, n): (f64, f64, usize)| AnswerScore {
        exact: e / n.max(1) as f64,
        f1: f / n.max(1) as f64,
        questions: n,
    };
    let total = sums.values().fold((0.0, 0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    VqaSplitScore {
        overall: avg(total),
        by_kind: sums.into_iter().map(|(k, s)| (k, avg(s))).collect(),
    }
}

/// VQA on the first `n` images of each test split, one question each (greedy answers).
pub fn evaluate_vqa(model: &Captioner, tok: &ClipTokenizer, shapes: &Shapes, n: usize) -> Result<VqaMetrics> {
    let mut scores = Vec::new();
    for split in [Split::TestSeen, Split::TestHeldOut] {
        let indices: Vec<u64> = (0..n as u64).collect();
        let qs: Vec<_> = indices
            .iter()
            .map(|&i| question_for(shapes, split, i, &shapes.sample(split, i).objects))
            .collect();
        let questions: Vec<Option<String>> = qs.iter().map(|q| Some(q.text.clone())).collect();
        let predicted = decode(model, tok, shapes, split, &indices, &questions, Strategy::Greedy)?;
        let kinds: Vec<QuestionKind> = qs.iter().map(|q| q.kind).collect();
        let truth: Vec<String> = qs.into_iter().map(|q| q.answer).collect();
        scores.push(score_answers(&kinds, &predicted, &truth));
    }
    let held_out = scores.pop().expect("two splits");
    Ok(VqaMetrics {
        seen: scores.pop().expect("two splits"),
        held_out,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CaptionSplitScore {
    pub bleu4: f64,
    /// Share of captions naming every object's colour and shape.
    pub colour_shape: f64,
    pub images: usize,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CaptionMetrics {
    pub seen: CaptionSplitScore,
    pub held_out: CaptionSplitScore,
    /// A few (reference, generated) pairs of the held-out split.
    pub examples: Vec<(String, String)>,
}

impl CaptionMetrics {
    pub fn to_json(&self) -> Value {
        let s = |c: &CaptionSplitScore| json!({"bleu4": c.bleu4, "colour_shape_correct": c.colour_shape, "images": c.images});
        let ex: Vec<Value> = self.examples.iter().map(|(r, g)| json!({"reference": r, "generated": g})).collect();
        json!({"seen": s(&self.seen), "held_out": s(&self.held_out), "examples": ex})
    }
}

/// Captions of the first `n` images of each test split, decoded with `strategy`.
pub fn evaluate_captions(model: &Captioner, tok: &ClipTokenizer, shapes: &Shapes, n: usize, strategy: Strategy) -> Result<CaptionMetrics> {
    let mut out = CaptionMetrics::default();
    for split in [Split::TestSeen, Split::TestHeldOut] {
        let indices: Vec<u64> = (0..n as u64).collect();
        let samples: Vec<_> = indices.iter().map(|&i| shapes.sample(split, i)).collect();
        let generated = decode(model, tok, shapes, split, &indices, &vec![None; n], strategy)?;
        let cands: Vec<Vec<String>> = generated.iter().map(|g| words(g)).collect();
        let refs: Vec<Vec<String>> = samples.iter().map(|s| words(&s.caption)).collect();
        let correct = samples
            .iter()
            .zip(&generated)
            .filter(|(s, g)| names_every_object(g, &s.objects))
            .count();
        let score = CaptionSplitScore {
            bleu4: bleu4(&cands, &refs),
            colour_shape: correct as f64 / n.max(1) as f64,
            images: n,
        };
        if split == Split::TestSeen {
            out.seen = score;
        } else {
            out.held_out = score;
            out.examples = samples
                .iter()
                .zip(&generated)
                .take(6)
                .map(|(s, g)| (s.caption.clone(), g.clone()))
                .collect();
        }
    }
    Ok(out)
}
