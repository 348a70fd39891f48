//! `shapes`: a built-in captioned image dataset, rendered on the fly. Each image holds one or two
//! flat-coloured objects (6 shapes x 8 colours x 2 sizes) on a dark or light, slightly tinted
//! background, with anti-aliased edges and mild noise; its caption comes from templates and names
//! exactly what is drawn. A sample is a pure function of (seed, split, index), so any index can be
//! regenerated in any order and batches can be built in parallel. Eight colour-shape pairs never
//! appear in the training split, so a model's compositional generalisation can be measured on the
//! held-out test split.

use crate::{Error, Result, Rng};
use rayon::prelude::*;
use std::path::Path;

/// Below this side a small object is under 5 pixels across and the shapes become indistinct.
pub const MIN_IMAGE_SIZE: usize = 16;
/// A bound on memory per sample, far above any size the models here train on.
pub const MAX_IMAGE_SIZE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Cross,
    Diamond,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Star,
        Shape::Cross,
        Shape::Diamond,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Cross => "cross",
            Shape::Diamond => "diamond",
        }
    }

    /// Whether (u, v), in units of the radius from the object's centre (v pointing down), is
    /// inside. Every shape fits the square [-1, 1]^2, so the radius bounds the drawn extent.
    fn contains(self, u: f32, v: f32) -> bool {
        match self {
            Shape::Circle => u * u + v * v <= 1.0,
            // Half-side 0.88 gives about the circle's area, so size reads the same across shapes.
            Shape::Square => u.abs() <= 0.88 && v.abs() <= 0.88,
            // Apex up at v = -1, base at v = 0.8 from u = -1 to 1: near equilateral.
            Shape::Triangle => v <= 0.8 && u.abs() <= (v + 1.0) / 1.8,
            Shape::Star => star_contains(u, v),
            Shape::Cross => (u.abs() <= 0.34 && v.abs() <= 1.0) || (v.abs() <= 0.34 && u.abs() <= 1.0),
            Shape::Diamond => u.abs() + v.abs() <= 1.0,
        }
    }
}

/// Five-pointed star, one point up, outer radius 1 and inner radius 0.45 (fatter than the regular
/// star's 0.38 so its arms survive at 32 pixels). The star is symmetric under rotation by 72 and
/// reflection, so folding the angle into [0, 36] degrees leaves one edge to test against.
fn star_contains(u: f32, v: f32) -> bool {
    const INNER: f32 = 0.45;
    let rho = (u * u + v * v).sqrt();
    if rho == 0.0 {
        return true;
    }
    let sector = std::f32::consts::TAU / 5.0;
    // Angle from the upward point.
    let mut phi = u.atan2(-v).rem_euclid(sector);
    if phi > sector / 2.0 {
        phi = sector - phi;
    }
    let (px, py) = (rho * phi.cos(), rho * phi.sin());
    // Edge from the outer point (1, 0) to the inner point at half a sector.
    let (ix, iy) = (INNER * (sector / 2.0).cos(), INNER * (sector / 2.0).sin());
    let (ex, ey) = (ix - 1.0, iy);
    // The origin lies on the positive side of this edge.
    ex * py - ey * (px - 1.0) >= 0.0
}

/// Eight saturated colours, pairwise at least 0.35 apart in RGB (orange-yellow is the closest)
/// and at least 0.3 from every possible background pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    Red,
    Orange,
    Yellow,
    Green,
    Cyan,
    Blue,
    Purple,
    Pink,
}

impl Colour {
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Cyan,
        Colour::Blue,
        Colour::Purple,
        Colour::Pink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Cyan => "cyan",
            Colour::Blue => "blue",
            Colour::Purple => "purple",
            Colour::Pink => "pink",
        }
    }

    /// 8-bit sRGB: red (220, 30, 30), orange (245, 135, 15), yellow (245, 225, 40), green
    /// (40, 175, 55), cyan (30, 205, 215), blue (35, 75, 230), purple (145, 50, 205), pink
    /// (240, 110, 180).
    pub fn rgb8(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 30, 30],
            Colour::Orange => [245, 135, 15],
            Colour::Yellow => [245, 225, 40],
            Colour::Green => [40, 175, 55],
            Colour::Cyan => [30, 205, 215],
            Colour::Blue => [35, 75, 230],
            Colour::Purple => [145, 50, 205],
            Colour::Pink => [240, 110, 180],
        }
    }

    /// [`Colour::rgb8`] in [0, 1], the values the renderer paints.
    pub fn rgb(self) -> [f32; 3] {
        self.rgb8().map(|c| c as f32 / 255.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    /// Radius as a fraction of the image side. Two large objects side by side still fit with a
    /// gap (4 x 0.23 + 0.03 < 1), which the two-object layout relies on.
    pub fn radius_fraction(self) -> f32 {
        match self {
            Size::Small => 0.14,
            Size::Large => 0.23,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Position {
    Left,
    Right,
    Top,
    Bottom,
    Centre,
}

impl Position {
    pub const ALL: [Position; 5] = [Position::Left, Position::Right, Position::Top, Position::Bottom, Position::Centre];

    pub fn name(self) -> &'static str {
        match self {
            Position::Left => "left",
            Position::Right => "right",
            Position::Top => "top",
            Position::Bottom => "bottom",
            Position::Centre => "centre",
        }
    }

    /// How captions say it: "on the left", "at the top", "in the centre".
    pub fn phrase(self) -> &'static str {
        match self {
            Position::Left => "on the left",
            Position::Right => "on the right",
            Position::Top => "at the top",
            Position::Bottom => "at the bottom",
            Position::Centre => "in the centre",
        }
    }

    /// Nominal centre of the region, as fractions of the image side (x, y).
    fn anchor(self) -> (f32, f32) {
        match self {
            Position::Left => (0.25, 0.5),
            Position::Right => (0.75, 0.5),
            Position::Top => (0.5, 0.25),
            Position::Bottom => (0.5, 0.75),
            Position::Centre => (0.5, 0.5),
        }
    }
}

/// The colour-shape pairs that never appear in [`Split::Train`]. One per colour; star and square
/// are used twice, so every colour still trains with 5 shapes and every shape with 6 or 7 colours.
pub const HELD_OUT: [(Shape, Colour); 8] = [
    (Shape::Triangle, Colour::Red),
    (Shape::Circle, Colour::Orange),
    (Shape::Star, Colour::Yellow),
    (Shape::Square, Colour::Green),
    (Shape::Cross, Colour::Cyan),
    (Shape::Diamond, Colour::Blue),
    (Shape::Star, Colour::Purple),
    (Shape::Square, Colour::Pink),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Only seen (not held-out) pairs.
    Train,
    /// Only seen pairs, from a stream disjoint from training's.
    TestSeen,
    /// Every image has at least one object of a held-out pair.
    TestHeldOut,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::TestSeen => "test-seen",
            Split::TestHeldOut => "test-held-out",
        }
    }

    fn salt(self) -> u64 {
        match self {
            Split::Train => 0x5452_4149_4E00_0001,
            Split::TestSeen => 0x5345_454E_0000_0002,
            Split::TestHeldOut => 0x484F_4C44_0000_0003,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShapesConfig {
    /// Side of the square images, in pixels: [`MIN_IMAGE_SIZE`] to [`MAX_IMAGE_SIZE`].
    pub image_size: usize,
    pub seed: u64,
    /// Probability that an image holds two objects rather than one.
    pub two_object_fraction: f64,
    /// Standard deviation of the gaussian noise added to every channel of every pixel, at most
    /// 0.5; values are clamped to [0, 1] after it.
    pub noise: f32,
    /// How far an object may stray from its region's anchor, as a fraction of the side along each
    /// axis, at most [`MAX_JITTER`]. Translation is what a small ViT finds hardest to learn: at
    /// the default (about a pixel at 32) the demo's CLIP learns shapes in minutes on a CPU; with
    /// 0.07 to 0.15 (this set's first version) it had not after 1,000 steps.
    pub jitter: f32,
}

/// Beyond this an object near an edge could no longer be told to be on the left (right, ...).
pub const MAX_JITTER: f32 = 0.12;

impl Default for ShapesConfig {
    fn default() -> Self {
        ShapesConfig {
            image_size: 32,
            seed: 0,
            two_object_fraction: 0.3,
            noise: 0.02,
            jitter: 0.03,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    /// The region it was placed in; for two objects, their side of the pair (left/right or
    /// top/bottom), which is also true of the image as a whole.
    pub position: Position,
    /// (x, y) in pixels from the top-left corner; pixel (i, j) covers [i, i+1) x [j, j+1).
    pub centre: (f32, f32),
    /// Half the side of the object's bounding square, in pixels.
    pub radius: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// [3, H, W], channel-major, values in [0, 1].
    pub image: Vec<f32>,
    /// Lower-case words, naming each object's colour and shape (and sometimes size and position).
    pub caption: String,
    pub objects: Vec<Object>,
}

#[derive(Debug, Clone)]
pub struct Shapes {
    cfg: ShapesConfig,
    seen: Vec<(Shape, Colour)>,
}

impl Shapes {
    pub fn new(cfg: ShapesConfig) -> Result<Self> {
        if !(MIN_IMAGE_SIZE..=MAX_IMAGE_SIZE).contains(&cfg.image_size) {
            return Err(Error::msg(format!(
                "shapes: image_size must be in {MIN_IMAGE_SIZE}..={MAX_IMAGE_SIZE}, got {}",
                cfg.image_size
            )));
        }
        if !(0.0..=1.0).contains(&cfg.two_object_fraction) {
            return Err(Error::msg(format!(
                "shapes: two_object_fraction must be in [0, 1], got {}",
                cfg.two_object_fraction
            )));
        }
        if !(0.0..=0.5).contains(&cfg.noise) {
            return Err(Error::msg(format!("shapes: noise must be in [0, 0.5], got {}", cfg.noise)));
        }
        if !(0.0..=MAX_JITTER).contains(&cfg.jitter) {
            return Err(Error::msg(format!(
                "shapes: jitter must be in [0, {MAX_JITTER}], got {}",
                cfg.jitter
            )));
        }
        Ok(Shapes {
            cfg,
            seen: Self::seen_labels(),
        })
    }

    pub fn config(&self) -> &ShapesConfig {
        &self.cfg
    }

    pub fn is_held_out(shape: Shape, colour: Colour) -> bool {
        HELD_OUT.contains(&(shape, colour))
    }

    /// All 48 shape-colour pairs, shape-major: the class list for zero-shot evaluation.
    pub fn labels() -> Vec<(Shape, Colour)> {
        Shape::ALL.iter().flat_map(|&s| Colour::ALL.iter().map(move |&c| (s, c))).collect()
    }

    /// The 40 pairs the training split uses, in [`Shapes::labels`] order.
    pub fn seen_labels() -> Vec<(Shape, Colour)> {
        Self::labels().into_iter().filter(|&(s, c)| !Self::is_held_out(s, c)).collect()
    }

    /// Every word a caption or prompt can contain, sorted (for fitting a word-level tokenizer).
    pub fn vocabulary() -> Vec<&'static str> {
        let fixed = [
            "a", "an", "picture", "photo", "image", "of", "there", "is", "and", "to", "the", "left", "right", "above", "below",
        ];
        let mut words: Vec<&'static str> = fixed
            .into_iter()
            .chain(Shape::ALL.iter().map(|s| s.name()))
            .chain(Colour::ALL.iter().map(|c| c.name()))
            .chain(Size::ALL.iter().map(|s| s.name()))
            .chain(Position::ALL.iter().flat_map(|p| p.phrase().split_whitespace()))
            .collect();
        words.sort_unstable();
        words.dedup();
        words
    }

    /// The canonical zero-shot prompt, "a red circle" ("an orange star"), phrased as captions
    /// phrase an object.
    pub fn prompt(shape: Shape, colour: Colour) -> String {
        with_article(&format!("{} {}", colour.name(), shape.name()))
    }

    /// The canonical prompt in each of the caption templates' openings ("a red circle", "a
    /// picture of a red circle", ...): zero-shot classification averages their embeddings
    /// (prompt ensembling, as CLIP does).
    pub fn prompts(shape: Shape, colour: Colour) -> Vec<String> {
        let object = Self::prompt(shape, colour);
        ["", "a picture of ", "a photo of ", "an image of ", "there is "]
            .iter()
            .map(|lead| format!("{lead}{object}"))
            .collect()
    }

    /// Sample `index` of `split`: the same (seed, split, index) always gives the same sample.
    pub fn sample(&self, split: Split, index: u64) -> Sample {
        // Hashing (seed, split) first keeps streams of different seeds and splits unrelated.
        let stream = Rng::new(self.cfg.seed ^ split.salt()).next_u64();
        let mut rng = Rng::new(stream ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let two = rng.uniform() < self.cfg.two_object_fraction;
        let pairs = self.draw_pairs(&mut rng, split, two);
        let s = self.cfg.image_size as f32;
        let sizes: Vec<Size> = pairs.iter().map(|_| Size::ALL[rng.below(2) as usize]).collect();
        let objects = if two {
            place_pair(&mut rng, s, self.cfg.jitter, [(pairs[0], sizes[0]), (pairs[1], sizes[1])])
        } else {
            vec![place_single(&mut rng, s, self.cfg.jitter, pairs[0], sizes[0])]
        };
        let caption = caption(&mut rng, &objects);
        let image = self.render(&mut rng, &objects);
        Sample { image, caption, objects }
    }

    /// Samples `start..start + n` of `split`, built in parallel: images [n, 3, H, W] and captions.
    pub fn batch(&self, split: Split, start: u64, n: usize) -> (Vec<f32>, Vec<String>) {
        let samples: Vec<Sample> = (0..n as u64)
            .into_par_iter()
            .map(|i| self.sample(split, start.wrapping_add(i)))
            .collect();
        let mut images = Vec::with_capacity(n * 3 * self.cfg.image_size * self.cfg.image_size);
        let mut captions = Vec::with_capacity(n);
        for s in samples {
            images.extend_from_slice(&s.image);
            captions.push(s.caption);
        }
        (images, captions)
    }

    /// Writes the sample's image as an 8-bit RGB PNG.
    pub fn to_png(&self, sample: &Sample, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let n = self.cfg.image_size;
        if sample.image.len() != 3 * n * n {
            return Err(Error::file(
                path,
                format!("sample has {} values, a {n}x{n} RGB image needs {}", sample.image.len(), 3 * n * n),
            ));
        }
        let img = image::RgbImage::from_fn(n as u32, n as u32, |x, y| {
            let at = |c: usize| (sample.image[(c * n + y as usize) * n + x as usize].clamp(0.0, 1.0) * 255.0).round() as u8;
            image::Rgb([at(0), at(1), at(2)])
        });
        img.save_with_format(path, image::ImageFormat::Png)
            .map_err(|e| Error::file(path, format!("cannot write PNG: {e}")))
    }

    /// One or two distinct pairs allowed in `split`, in drawing order.
    fn draw_pairs(&self, rng: &mut Rng, split: Split, two: bool) -> Vec<(Shape, Colour)> {
        let pick = |rng: &mut Rng, from: &[(Shape, Colour)]| from[rng.below(from.len() as u64) as usize];
        let first = match split {
            Split::Train | Split::TestSeen => pick(rng, &self.seen),
            Split::TestHeldOut => pick(rng, &HELD_OUT),
        };
        if !two {
            return vec![first];
        }
        // Distinct pairs, so the caption names each object unambiguously.
        let others: Vec<(Shape, Colour)> = match split {
            Split::Train | Split::TestSeen => self.seen.iter().copied().filter(|&p| p != first).collect(),
            Split::TestHeldOut => Self::labels().into_iter().filter(|&p| p != first).collect(),
        };
        let second = pick(rng, &others);
        // The held-out object must not always come first (always left or top).
        if rng.below(2) == 0 {
            vec![first, second]
        } else {
            vec![second, first]
        }
    }

    /// Background, objects (anti-aliased by 4x4 supersampling), then noise.
    fn render(&self, rng: &mut Rng, objects: &[Object]) -> Vec<f32> {
        let n = self.cfg.image_size;
        let plane = n * n;
        let mut img = vec![0f32; 3 * plane];
        let (c0, c1) = (background_colour(rng), background_colour(rng));
        // A third of backgrounds are solid; the rest a linear gradient in a random direction.
        let solid = rng.below(3) == 0;
        let angle = rng.uniform() as f32 * std::f32::consts::TAU;
        let (dx, dy) = (angle.cos(), angle.sin());
        let half = n as f32 / 2.0;
        for y in 0..n {
            for x in 0..n {
                let along = ((x as f32 + 0.5 - half) * dx + (y as f32 + 0.5 - half) * dy) / (n as f32 * std::f32::consts::SQRT_2);
                let t = if solid { 0.0 } else { (along + 0.5).clamp(0.0, 1.0) };
                for c in 0..3 {
                    img[c * plane + y * n + x] = c0[c] + (c1[c] - c0[c]) * t;
                }
            }
        }
        const SS: usize = 4;
        for o in objects {
            let rgb = o.colour.rgb();
            let (cx, cy) = o.centre;
            let x0 = (cx - o.radius).floor().max(0.0) as usize;
            let y0 = (cy - o.radius).floor().max(0.0) as usize;
            let x1 = ((cx + o.radius).ceil() as usize).min(n);
            let y1 = ((cy + o.radius).ceil() as usize).min(n);
            for y in y0..y1 {
                for x in x0..x1 {
                    let mut hits = 0;
                    for sy in 0..SS {
                        let v = (y as f32 + (sy as f32 + 0.5) / SS as f32 - cy) / o.radius;
                        for sx in 0..SS {
                            let u = (x as f32 + (sx as f32 + 0.5) / SS as f32 - cx) / o.radius;
                            hits += o.shape.contains(u, v) as usize;
                        }
                    }
                    if hits > 0 {
                        let cover = hits as f32 / (SS * SS) as f32;
                        for c in 0..3 {
                            let p = &mut img[c * plane + y * n + x];
                            *p = *p * (1.0 - cover) + rgb[c] * cover;
                        }
                    }
                }
            }
        }
        if self.cfg.noise > 0.0 {
            for p in &mut img {
                *p = (*p + self.cfg.noise * rng.normal() as f32).clamp(0.0, 1.0);
            }
        }
        img
    }
}

/// A near-grey, dark or light background colour: lightness in [0.04, 0.25] or [0.75, 0.96], each
/// channel tinted by at most 0.04. Objects are saturated, so every background pixel (a blend of
/// two such colours) stays at least 0.3 from every object colour.
fn background_colour(rng: &mut Rng) -> [f32; 3] {
    let base = 0.04 + 0.21 * rng.uniform() as f32;
    let lightness = if rng.below(2) == 0 { base } else { 1.0 - base };
    [(); 3].map(|_| lightness + 0.08 * (rng.uniform() as f32 - 0.5))
}

fn uniform_in(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.uniform() as f32
}

/// One object at its region's anchor, moved by up to `jitter` of the side along each axis and
/// kept wholly inside the image.
fn place_single(rng: &mut Rng, s: f32, jitter: f32, (shape, colour): (Shape, Colour), size: Size) -> Object {
    let position = Position::ALL[rng.below(Position::ALL.len() as u64) as usize];
    let (ax, ay) = position.anchor();
    let radius = size.radius_fraction() * s;
    let cx = (s * (ax + uniform_in(rng, -jitter, jitter))).clamp(radius, s - radius);
    let cy = (s * (ay + uniform_in(rng, -jitter, jitter))).clamp(radius, s - radius);
    Object {
        shape,
        colour,
        size,
        position,
        centre: (cx, cy),
        radius,
    }
}

/// Two objects side by side (left/right) or stacked (top/bottom), the first on the left or top,
/// half the side apart (more if two large objects need it for a gap of 3% of the side). The
/// pair moves together by up to `jitter` along that axis, staying inside the image, and each
/// object by up to `jitter` across it. Their bounding squares are disjoint and each object is on
/// its side of the image.
fn place_pair(rng: &mut Rng, s: f32, jitter: f32, items: [((Shape, Colour), Size); 2]) -> Vec<Object> {
    let horizontal = rng.below(2) == 0;
    let [ra, rb] = items.map(|(_, size)| size.radius_fraction() * s);
    let d = (ra + rb + 0.03 * s).max(0.5 * s);
    // The midpoint range that keeps both inside: [ra + d/2, s - rb - d/2], which contains s/2
    // because d/2 + max radius <= s/2 for the sizes here.
    let mid = (s * (0.5 + uniform_in(rng, -jitter, jitter))).clamp(ra + d / 2.0, s - rb - d / 2.0);
    let along = [mid - d / 2.0, mid + d / 2.0];
    let sides = if horizontal {
        [Position::Left, Position::Right]
    } else {
        [Position::Top, Position::Bottom]
    };
    let mut out = Vec::with_capacity(2);
    for (k, ((shape, colour), size)) in items.into_iter().enumerate() {
        let radius = [ra, rb][k];
        let across = (s * (0.5 + uniform_in(rng, -jitter, jitter))).clamp(radius, s - radius);
        let centre = if horizontal { (along[k], across) } else { (across, along[k]) };
        out.push(Object {
            shape,
            colour,
            size,
            position: sides[k],
            centre,
            radius,
        });
    }
    out
}

/// "a" or "an" before a phrase of vocabulary words.
fn with_article(phrase: &str) -> String {
    let vowel = phrase.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {phrase}", if vowel { "an" } else { "a" })
}

fn noun_phrase(o: &Object, with_size: bool) -> String {
    if with_size {
        with_article(&format!("{} {} {}", o.size.name(), o.colour.name(), o.shape.name()))
    } else {
        with_article(&format!("{} {}", o.colour.name(), o.shape.name()))
    }
}

/// A caption naming every object's colour and shape; size (half the time), position (single
/// objects, 60%) and the spatial relation (pairs, 80%, either way round) as drawn.
fn caption(rng: &mut Rng, objects: &[Object]) -> String {
    let with_size = rng.below(2) == 0;
    let prefix = ["", "a picture of ", "a photo of ", "an image of "][rng.below(4) as usize];
    if let [a, b] = objects {
        let (na, nb) = (noun_phrase(a, with_size), noun_phrase(b, with_size));
        let horizontal = a.position == Position::Left;
        let body = match (rng.below(10), rng.below(2) == 0, horizontal) {
            (0 | 1, true, _) => format!("{na} and {nb}"),
            (0 | 1, false, _) => format!("{nb} and {na}"),
            (_, true, true) => format!("{na} to the left of {nb}"),
            (_, false, true) => format!("{nb} to the right of {na}"),
            (_, true, false) => format!("{na} above {nb}"),
            (_, false, false) => format!("{nb} below {na}"),
        };
        return format!("{prefix}{body}");
    }
    let o = &objects[0];
    let np = noun_phrase(o, with_size);
    if rng.uniform() < 0.6 {
        let lead = ["", "a picture of ", "a photo of ", "there is "][rng.below(4) as usize];
        format!("{lead}{np} {}", o.position.phrase())
    } else {
        format!("{prefix}{np}")
    }
}
