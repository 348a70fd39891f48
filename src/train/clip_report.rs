//! The `report/` folder of a CLIP training run: the loss and evaluation curves, a grid of test
//! images with their top zero-shot labels (on the built-in `shapes` set), and `metrics.json`
//! holding the final metrics, the run's summary and its whole history.

use super::clip::ClipTrainer;
use super::clip_eval::{zero_shot_examples, Example};
use super::report::{image_grid, training_chart, Series, Tile};
use crate::data::shapes::{Shapes, Split};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Zero-shot examples per test split in the grid.
const GRID_PER_SPLIT: usize = 8;

/// The curves drawn from the evaluations recorded during training: (label, JSON pointer).
const CURVES: [(&str, &str); 4] = [
    ("colour x shape, seen pairs", "/zero_shot/seen/colour_shape"),
    ("colour x shape, held-out pairs", "/zero_shot/held_out/colour_shape"),
    ("shape only, held-out pairs", "/zero_shot/held_out/shape"),
    ("text-to-image recall@1", "/retrieval/text_to_image/r1"),
];

/// Writes `run_dir/report/` and returns its path. `shapes` (the built-in set the model trained
/// on) adds the zero-shot image grid; `summary` (final metrics, timings, settings) heads
/// metrics.json.
pub fn write(run_dir: &Path, trainer: &ClipTrainer, summary: Value, shapes: Option<&Shapes>) -> Result<PathBuf> {
    let dir = run_dir.join("report");
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, format!("cannot create directory: {e}")))?;
    let loss: Vec<(f64, f64)> = trainer.losses.iter().map(|&(s, l)| (s as f64, l)).collect();
    let accuracy: Vec<Series> = CURVES
        .iter()
        .map(|(name, pointer)| Series {
            name: name.to_string(),
            points: trainer
                .evals
                .iter()
                .filter_map(|(step, m)| m.pointer(pointer).and_then(Value::as_f64).map(|v| (*step as f64, v)))
                .collect(),
        })
        .collect();
    training_chart(&dir.join("training.png"), &loss, &accuracy)?;
    if let Some(shapes) = shapes {
        let mut tiles = Vec::new();
        for split in [Split::TestSeen, Split::TestHeldOut] {
            let examples = zero_shot_examples(&trainer.clip, &trainer.tokenizer, shapes, split, GRID_PER_SPLIT, 3)?;
            tiles.extend(examples.iter().map(|e| tile(e, shapes.config().image_size, split)));
        }
        image_grid(&dir.join("zero_shot.png"), &tiles, GRID_PER_SPLIT, 128)?;
    }
    let metrics = json!({
        "summary": summary,
        "evaluations": trainer.evals.iter().map(|(step, m)| json!({"step": step, "metrics": m})).collect::<Vec<_>>(),
        "losses": trainer.losses,
    });
    let text = serde_json::to_string_pretty(&metrics).map_err(|e| Error::msg(e.to_string()))?;
    crate::io::write_atomic(&dir.join("metrics.json"), text.as_bytes())?;
    Ok(dir)
}

fn tile(example: &Example, side: usize, split: Split) -> Tile {
    let object = &example.sample.objects[0];
    let truth = (object.shape, object.colour);
    let kind = if split == Split::TestHeldOut {
        "held-out pair"
    } else {
        "seen pair"
    };
    Tile {
        pixels: example.sample.image.clone(),
        side,
        title: format!("{}: {kind}", Shapes::prompt(truth.0, truth.1)),
        lines: example
            .top
            .iter()
            .map(|&(label, p)| (format!("{:>3.0}% {}", 100.0 * p, Shapes::prompt(label.0, label.1)), label == truth))
            .collect(),
    }
}
