//! The `report/` folder of a training run: `training.png` (training loss, and evaluation
//! accuracies when there are any, against the step), `zero_shot.png` (test images, each with its
//! top zero-shot labels and their probabilities) and `metrics.json`. Charts are drawn with
//! plotters into an RGB buffer; text uses the DejaVu Sans font compiled into the binary, so a
//! report needs no font installed on the machine.

use crate::{Error, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

const FONT: &str = "vlk-sans";

/// Registers the bundled font with plotters (once per process) and returns its family name.
fn font() -> Result<&'static str> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    static BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
    if *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, BYTES).is_ok()) {
        Ok(FONT)
    } else {
        Err(Error::msg("report: the bundled font assets/DejaVuSans.ttf does not parse"))
    }
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::file(path, format!("cannot draw: {e}"))
}

/// Encodes an RGB8 buffer as PNG and writes it atomically.
fn save_png(path: &Path, rgb: &[u8], (w, h): (u32, u32)) -> Result<()> {
    let mut bytes = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut bytes),
        rgb,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| Error::file(path, format!("cannot encode PNG: {e}")))?;
    crate::io::write_atomic(path, &bytes)
}

/// Writes one image, channel-major [3, side, side] values in [0, 1], as an 8-bit PNG.
pub fn image_png(path: &Path, pixels: &[f32], side: usize) -> Result<()> {
    if side == 0 || pixels.len() != 3 * side * side {
        return Err(Error::file(
            path,
            format!("{} values do not make a 3 x {side} x {side} image", pixels.len()),
        ));
    }
    let plane = side * side;
    let rgb: Vec<u8> = (0..plane)
        .flat_map(|i| (0..3).map(move |c| (pixels[c * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8))
        .collect();
    save_png(path, &rgb, (side as u32, side as u32))
}

/// A named series of (step, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

type StepChart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A titled panel with the step on x (0 to `max_step`) and `y` on y, both axes labelled; y tick
/// labels as whole numbers when `whole_y`.
#[allow(clippy::too_many_arguments)]
fn step_panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    path: &Path,
    font: &str,
    title: &str,
    max_step: f64,
    y: Range<f64>,
    y_desc: &str,
    whole_y: bool,
) -> Result<StepChart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (font, 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_step, y)
        .map_err(|e| plot_err(path, e))?;
    let whole = |v: &f64| format!("{v:.0}");
    let mut mesh = chart.configure_mesh();
    mesh.x_desc("step")
        .x_label_formatter(&whole)
        .y_desc(y_desc)
        .label_style((font, 14))
        .axis_desc_style((font, 16));
    if whole_y {
        mesh.y_label_formatter(&whole);
    }
    mesh.draw().map_err(|e| plot_err(path, e))?;
    Ok(chart)
}

/// Training loss over steps (top panel) and, when `accuracy` has points, evaluation
/// accuracies in percent over steps (bottom panel), with labelled axes and a legend.
pub fn training_chart(path: &Path, loss: &[(f64, f64)], accuracy: &[Series]) -> Result<()> {
    let font = font()?;
    let with_accuracy = accuracy.iter().any(|s| !s.points.is_empty());
    let (w, h) = (900u32, if with_accuracy { 820 } else { 420 });
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let panels = if with_accuracy {
            root.split_evenly((2, 1))
        } else {
            vec![root.clone()]
        };
        let max_step = loss
            .iter()
            .map(|p| p.0)
            .chain(accuracy.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
            .fold(1.0, f64::max);
        let finite = loss.iter().map(|p| p.1).filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo.is_finite() {
            (lo.min(0.0), hi.max(lo + 1e-3) * 1.05)
        } else {
            (0.0, 1.0)
        };
        let mut chart = step_panel(&panels[0], path, font, "training loss", max_step, lo..hi, "contrastive loss", false)?;
        chart
            .draw_series(LineSeries::new(
                loss.iter().copied().filter(|p| p.1.is_finite()),
                PALETTE[0].stroke_width(1),
            ))
            .map_err(|e| plot_err(path, e))?;
        if with_accuracy {
            let mut chart = step_panel(
                &panels[1],
                path,
                font,
                "evaluation on the test splits",
                max_step,
                0.0..100.0,
                "accuracy / recall (%)",
                true,
            )?;
            for (i, s) in accuracy.iter().enumerate() {
                let colour = PALETTE[i % PALETTE.len()];
                let points: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (x, 100.0 * y)).collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                    .map_err(|e| plot_err(path, e))?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
                chart
                    .draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                    .map_err(|e| plot_err(path, e))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font((font, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_png(path, &rgb, (w, h))
}

/// One cell of an image grid: an RGB image [3, side, side] in [0, 1] and lines of text under it,
/// each drawn green when `true` (a correct label) and dark grey otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    pub pixels: Vec<f32>,
    pub side: usize,
    pub title: String,
    pub lines: Vec<(String, bool)>,
}

/// Tiles in rows of `columns`, each image scaled up to `cell` pixels wide (columns are at least
/// 180 pixels wide so the text fits).
pub fn image_grid(path: &Path, tiles: &[Tile], columns: usize, cell: u32) -> Result<()> {
    let font = font()?;
    if tiles.is_empty() || columns == 0 {
        return Err(Error::file(path, "an image grid needs at least one tile and one column"));
    }
    if let Some(t) = tiles.iter().find(|t| t.side == 0 || t.pixels.len() != 3 * t.side * t.side) {
        return Err(Error::file(
            path,
            format!("tile '{}' has {} values, not 3 x {} x {}", t.title, t.pixels.len(), t.side, t.side),
        ));
    }
    let text_lines = tiles.iter().map(|t| t.lines.len() + 1).max().unwrap_or(1) as u32;
    let line_h = 16u32;
    let (cell_w, cell_h) = (cell.max(180) + 12, cell + 12 + text_lines * line_h);
    let rows = tiles.len().div_ceil(columns) as u32;
    let (w, h) = (cell_w * columns as u32, cell_h * rows);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        for (n, tile) in tiles.iter().enumerate() {
            let x0 = (n % columns) as i32 * cell_w as i32 + 8;
            let y0 = (n / columns) as i32 * cell_h as i32 + 6;
            let side = tile.side;
            let px = cell as f32 / side as f32;
            for y in 0..side {
                for x in 0..side {
                    let c = |ch: usize| (tile.pixels[ch * side * side + y * side + x].clamp(0.0, 1.0) * 255.0).round() as u8;
                    let (ax, ay) = (x0 + (x as f32 * px) as i32, y0 + (y as f32 * px) as i32);
                    let (bx, by) = (x0 + ((x + 1) as f32 * px) as i32, y0 + ((y + 1) as f32 * px) as i32);
                    root.draw(&Rectangle::new([(ax, ay), (bx, by)], RGBColor(c(0), c(1), c(2)).filled()))
                        .map_err(|e| plot_err(path, e))?;
                }
            }
            let text_y = y0 + cell as i32 + 4;
            root.draw(&Text::new(tile.title.clone(), (x0, text_y), (font, 13).into_font().color(&BLACK)))
                .map_err(|e| plot_err(path, e))?;
            for (i, (line, good)) in tile.lines.iter().enumerate() {
                let colour = if *good { RGBColor(20, 140, 40) } else { RGBColor(90, 90, 90) };
                let y = text_y + (i as i32 + 1) * line_h as i32;
                root.draw(&Text::new(line.clone(), (x0, y), (font, 13).into_font().color(&colour)))
                    .map_err(|e| plot_err(path, e))?;
            }
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_png(path, &rgb, (w, h))
}
