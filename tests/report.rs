//! Training reports: the charts are real PNGs with text in them (the bundled font renders), and
//! bad tiles are refused by name.

mod common;

use common::Scratch;
use vlk::train::report::{image_grid, training_chart, Series, Tile};

fn is_white(p: &image::Rgb<u8>) -> bool {
    p.0 == [255, 255, 255]
}

#[test]
fn training_chart_draws_curves_and_labelled_axes() {
    let dir = Scratch::new("chart");
    let loss: Vec<(f64, f64)> = (1..=200).map(|s| (s as f64, 4.0 / (1.0 + s as f64 / 20.0))).collect();
    let accuracy = vec![
        Series {
            name: "seen".into(),
            points: vec![(50.0, 0.2), (100.0, 0.6), (200.0, 0.9)],
        },
        Series {
            name: "held-out".into(),
            points: vec![(50.0, 0.1), (100.0, 0.3), (200.0, 0.7)],
        },
    ];
    let path = dir.join("training.png");
    training_chart(&path, &loss, &accuracy).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (900, 820), "two panels");
    // The y-axis description is drawn rotated in the leftmost strip of each panel: text there
    // means the font rendered (a chart without labels would leave it white).
    let label_pixels = |y0: u32, y1: u32| {
        (0..24)
            .flat_map(|x| (y0..y1).map(move |y| (x, y)))
            .filter(|&(x, y)| !is_white(img.get_pixel(x, y)))
            .count()
    };
    assert!(label_pixels(60, 360) > 50, "loss axis label");
    assert!(label_pixels(470, 770) > 50, "accuracy axis label");
    // The loss curve's colour is present.
    assert!(img.pixels().any(|p| p.0 == [31, 119, 180]), "loss curve drawn");

    // Without evaluations there is one panel; non-finite losses are skipped, not fatal.
    let mut loss = loss;
    loss[10].1 = f64::NAN;
    training_chart(&path, &loss, &[]).unwrap();
    assert_eq!(image::open(&path).unwrap().to_rgb8().dimensions(), (900, 420));
}

#[test]
fn image_grid_lays_out_tiles_and_refuses_bad_ones() {
    let dir = Scratch::new("grid");
    let side = 8;
    let red: Vec<f32> = (0..3 * side * side).map(|i| if i < side * side { 1.0 } else { 0.0 }).collect();
    let tile = |title: &str| Tile {
        pixels: red.clone(),
        side,
        title: title.into(),
        lines: vec![("90% a red square".into(), true), ("5% a red circle".into(), false)],
    };
    let tiles: Vec<Tile> = (0..5).map(|i| tile(&format!("tile {i}"))).collect();
    let path = dir.join("grid.png");
    image_grid(&path, &tiles, 3, 64).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    // 3 columns of max(64, 180) + 12 pixels; 2 rows of the image, a margin and 3 text lines.
    assert_eq!(img.dimensions(), (3 * 192, 2 * (64 + 12 + 3 * 16)));
    // Each image is scaled to 64 pixels: the middle of the first tile is pure red.
    assert_eq!(img.get_pixel(8 + 32, 6 + 32).0, [255, 0, 0]);
    // Text under the first tile.
    let text = (8..180)
        .flat_map(|x| (74..118).map(move |y| (x, y)))
        .filter(|&(x, y)| !is_white(img.get_pixel(x, y)))
        .count();
    assert!(text > 100, "labels drawn under the tile ({text} pixels)");

    let mut bad = tile("broken");
    bad.pixels.pop();
    let err = image_grid(&path, &[bad], 3, 64).unwrap_err().to_string();
    assert!(err.contains("broken") && err.contains("grid.png"), "{err}");
    assert!(image_grid(&path, &[], 3, 64).is_err());
}
