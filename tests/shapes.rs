//! The `shapes` dataset: samples are reproducible, captions and objects say what is drawn, the
//! held-out pairs stay out of training, and bad configurations are errors.

mod common;

use common::Scratch;
use std::collections::BTreeMap;
use vlk::data::shapes::{Colour, Object, Position, Sample, Shape, Shapes, ShapesConfig, Size, Split, HELD_OUT};

fn dataset(image_size: usize, seed: u64, two_object_fraction: f64, noise: f32) -> Shapes {
    Shapes::new(ShapesConfig {
        image_size,
        seed,
        two_object_fraction,
        noise,
        ..Default::default()
    })
    .unwrap()
}

fn pixel(sample: &Sample, n: usize, x: usize, y: usize) -> [f32; 3] {
    [0, 1, 2].map(|c| sample.image[(c * n + y) * n + x])
}

fn distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|c| (a[c] - b[c]).powi(2)).sum::<f32>().sqrt()
}

fn words(caption: &str) -> Vec<&str> {
    caption.split(' ').collect()
}

/// The object a caption fragment names by its colour and shape words.
fn named_object<'a>(fragment: &str, objects: &'a [Object]) -> &'a Object {
    let w = words(fragment);
    objects
        .iter()
        .find(|o| w.contains(&o.colour.name()) && w.contains(&o.shape.name()))
        .unwrap_or_else(|| panic!("'{fragment}' names none of {objects:?}"))
}

#[test]
fn samples_are_a_pure_function_of_seed_split_and_index() {
    let d = dataset(32, 7, 0.3, 0.02);
    let a = d.sample(Split::Train, 12345);
    // Drawing others in between changes nothing: there is no hidden stream state.
    let _ = d.sample(Split::Train, 3);
    assert_eq!(a, d.sample(Split::Train, 12345));
    assert_eq!(a, dataset(32, 7, 0.3, 0.02).sample(Split::Train, 12345));
    assert_ne!(a.image, d.sample(Split::Train, 12346).image);
    assert_ne!(a.image, d.sample(Split::TestSeen, 12345).image);
    assert_ne!(a.image, dataset(32, 8, 0.3, 0.02).sample(Split::Train, 12345).image);
    // A batch is the samples it covers, in order, whatever thread built each.
    let (images, captions) = d.batch(Split::TestHeldOut, 40, 9);
    assert_eq!((images.len(), captions.len()), (9 * 3 * 32 * 32, 9));
    for i in 0..9 {
        let s = d.sample(Split::TestHeldOut, 40 + i as u64);
        assert_eq!(&images[i * 3 * 32 * 32..(i + 1) * 3 * 32 * 32], &s.image[..]);
        assert_eq!(captions[i], s.caption);
    }
}

#[test]
fn captions_name_exactly_the_drawn_objects() {
    let d = dataset(32, 1, 0.5, 0.02);
    let mut templates = std::collections::BTreeSet::new();
    for i in 0..1500 {
        let s = d.sample(Split::Train, i);
        let w = words(&s.caption);
        assert!(s.caption.chars().all(|c| c.is_ascii_lowercase() || c == ' '), "{}", s.caption);
        let count = |name: &str| w.iter().filter(|&&x| x == name).count();
        for c in Colour::ALL {
            assert_eq!(count(c.name()), s.objects.iter().filter(|o| o.colour == c).count(), "{}", s.caption);
        }
        for sh in Shape::ALL {
            assert_eq!(
                count(sh.name()),
                s.objects.iter().filter(|o| o.shape == sh).count(),
                "{}",
                s.caption
            );
        }
        // Sizes are said for every object or for none, always right before the object's colour.
        let sized = Size::ALL.iter().map(|z| count(z.name())).sum::<usize>();
        assert!(sized == 0 || sized == s.objects.len(), "{}", s.caption);
        for o in &s.objects {
            let bare = format!("{} {}", o.colour.name(), o.shape.name());
            let with_size = format!("{} {bare}", o.size.name());
            assert!(
                s.caption.contains(if sized > 0 { &with_size } else { &bare }),
                "{} vs {o:?}",
                s.caption
            );
        }
        if let [o] = &s.objects[..] {
            for p in Position::ALL {
                assert_eq!(
                    s.caption.ends_with(p.phrase()),
                    p == o.position && s.caption.contains(p.phrase()),
                    "{}",
                    s.caption
                );
            }
        }
        for a in ["a orange", "an red", "an small", "an large"] {
            assert!(!s.caption.contains(a), "{}", s.caption);
        }
        // Template shape: the caption with vocabulary words blanked out.
        let blanked: Vec<&str> = w
            .iter()
            .map(|&x| match x {
                _ if Colour::ALL.iter().any(|c| c.name() == x) => "C",
                _ if Shape::ALL.iter().any(|c| c.name() == x) => "S",
                _ if Size::ALL.iter().any(|c| c.name() == x) => "Z",
                "a" | "an" => "A",
                _ => x,
            })
            .collect();
        templates.insert(blanked.join(" "));
    }
    assert!(templates.len() >= 20, "only {} caption forms: {templates:?}", templates.len());
}

#[test]
fn objects_are_in_their_regions_and_relations_hold() {
    for n in [32, 48] {
        let d = dataset(n, 2, 0.5, 0.02);
        let s = n as f32;
        let (mut pairs, mut relations) = (0, 0);
        for i in 0..1500 {
            let sample = d.sample(Split::TestSeen, i);
            for o in &sample.objects {
                let (x, y) = o.centre;
                assert!(
                    x - o.radius >= 0.0 && x + o.radius <= s && y - o.radius >= 0.0 && y + o.radius <= s,
                    "{o:?}"
                );
                assert!((o.radius / s - o.size.radius_fraction()).abs() < 1e-6);
                let ok = match o.position {
                    Position::Left => x < 0.4 * s,
                    Position::Right => x > 0.6 * s,
                    Position::Top => y < 0.4 * s,
                    Position::Bottom => y > 0.6 * s,
                    Position::Centre => (x - 0.5 * s).abs() < 0.1 * s && (y - 0.5 * s).abs() < 0.1 * s,
                };
                assert!(ok, "{o:?} at size {n}");
            }
            if let [a, b] = &sample.objects[..] {
                pairs += 1;
                // Bounding squares disjoint: the objects cannot overlap.
                let apart = |p: f32, q: f32| (p - q).abs() >= a.radius + b.radius;
                assert!(apart(a.centre.0, b.centre.0) || apart(a.centre.1, b.centre.1), "{a:?} {b:?}");
                let c = &sample.caption;
                for (rel, holds) in [
                    (
                        " to the left of ",
                        (|p: &Object, q: &Object| p.centre.0 < q.centre.0) as fn(&Object, &Object) -> bool,
                    ),
                    (" to the right of ", |p, q| p.centre.0 > q.centre.0),
                    (" above ", |p, q| p.centre.1 < q.centre.1),
                    (" below ", |p, q| p.centre.1 > q.centre.1),
                ] {
                    if let Some(at) = c.find(rel) {
                        relations += 1;
                        let (p, q) = (
                            named_object(&c[..at], &sample.objects),
                            named_object(&c[at + rel.len()..], &sample.objects),
                        );
                        assert!(!std::ptr::eq(p, q) && holds(p, q), "'{c}' but {p:?} vs {q:?}");
                    }
                }
            }
        }
        assert!(pairs > 600 && relations > pairs / 2, "{pairs} pairs, {relations} relations");
    }
}

#[test]
fn object_centres_have_the_named_colour_and_backgrounds_stay_clear() {
    for (n, noise, tol) in [(32, 0.02, 0.1), (48, 0.02, 0.1), (32, 0.0, 1e-6)] {
        let d = dataset(n, 3, 0.4, noise);
        for i in 0..400 {
            let s = d.sample(Split::Train, i);
            for o in &s.objects {
                let got = pixel(&s, n, o.centre.0 as usize, o.centre.1 as usize);
                let want = o.colour.rgb();
                assert!(
                    (0..3).all(|c| (got[c] - want[c]).abs() <= tol),
                    "{o:?}: {got:?} at size {n}, noise {noise}"
                );
            }
            if noise == 0.0 {
                // Pixels away from every object are background, which no colour comes near.
                let clear = |x: usize, y: usize| {
                    s.objects.iter().all(|o| {
                        (x as f32 + 0.5 - o.centre.0).abs() > o.radius + 1.0 || (y as f32 + 0.5 - o.centre.1).abs() > o.radius + 1.0
                    })
                };
                for y in 0..n {
                    for x in (0..n).filter(|&x| clear(x, y)) {
                        let p = pixel(&s, n, x, y);
                        for c in Colour::ALL {
                            assert!(distance(p, c.rgb()) >= 0.3, "background {p:?} at ({x}, {y}) is near {}", c.name());
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn sizes_are_drawn_to_scale() {
    // Pixels of the object's colour (noise-free) grow with the size word, for every shape.
    let n = 32;
    let d = dataset(n, 4, 0.0, 0.0);
    let mut area: BTreeMap<(Shape, Size), Vec<usize>> = BTreeMap::new();
    for i in 0..1200 {
        let s = d.sample(Split::Train, i);
        let o = &s.objects[0];
        let count = (0..n * n)
            .filter(|&k| distance(pixel(&s, n, k % n, k / n), o.colour.rgb()) < 0.05)
            .count();
        area.entry((o.shape, o.size)).or_default().push(count);
    }
    let mean = |v: &Vec<usize>| v.iter().sum::<usize>() as f32 / v.len() as f32;
    for sh in Shape::ALL {
        let (small, large) = (mean(&area[&(sh, Size::Small)]), mean(&area[&(sh, Size::Large)]));
        // Radii 0.14 and 0.23 of the side: area ratio about 2.7.
        assert!(small > 15.0 && large > 2.0 * small, "{}: small {small}, large {large}", sh.name());
    }
}

#[test]
fn held_out_pairs_never_train_and_always_test() {
    let d = dataset(32, 5, 0.3, 0.02);
    let mut trained = std::collections::BTreeSet::new();
    let mut two = 0;
    for i in 0..2000 {
        let s = d.sample(Split::Train, i);
        two += (s.objects.len() == 2) as usize;
        for o in &s.objects {
            assert!(!Shapes::is_held_out(o.shape, o.colour), "train {i}: {}", s.caption);
            trained.insert((o.shape, o.colour));
        }
        let t = d.sample(Split::TestSeen, i);
        assert!(
            t.objects.iter().all(|o| !Shapes::is_held_out(o.shape, o.colour)),
            "test-seen {i}: {}",
            t.caption
        );
    }
    assert_eq!(trained.into_iter().collect::<Vec<_>>(), Shapes::seen_labels());
    assert!((500..700).contains(&two), "{two} of 2000 with two objects at fraction 0.3");
    let (mut tested, mut held_first) = (std::collections::BTreeSet::new(), [0; 2]);
    for i in 0..600 {
        let s = d.sample(Split::TestHeldOut, i);
        let held: Vec<_> = s.objects.iter().filter(|o| Shapes::is_held_out(o.shape, o.colour)).collect();
        assert!(!held.is_empty(), "test-held-out {i}: {}", s.caption);
        tested.extend(held.iter().map(|o| (o.shape, o.colour)));
        // The held-out object is not always the left or top one.
        if let [a, _] = &s.objects[..] {
            held_first[Shapes::is_held_out(a.shape, a.colour) as usize] += 1;
        }
    }
    assert!(
        held_first.iter().all(|&k| k > 30),
        "pairs by whether the first is held out: {held_first:?}"
    );
    let mut all_held: Vec<_> = HELD_OUT.to_vec();
    all_held.sort();
    assert_eq!(tested.into_iter().collect::<Vec<_>>(), all_held);
}

#[test]
fn vocabulary_and_label_space() {
    let labels = Shapes::labels();
    assert_eq!(labels.len(), Shape::ALL.len() * Colour::ALL.len());
    assert_eq!(Shapes::seen_labels().len(), labels.len() - HELD_OUT.len());
    // Every colour and every shape still trains with others.
    for c in Colour::ALL {
        assert!(Shapes::seen_labels().iter().filter(|l| l.1 == c).count() >= 4, "{}", c.name());
    }
    for sh in Shape::ALL {
        assert!(Shapes::seen_labels().iter().filter(|l| l.0 == sh).count() >= 5, "{}", sh.name());
    }
    for (i, a) in Colour::ALL.iter().enumerate() {
        for b in &Colour::ALL[i + 1..] {
            assert!(distance(a.rgb(), b.rgb()) >= 0.35, "{} and {} too close", a.name(), b.name());
        }
    }
    assert_eq!(Shapes::prompt(Shape::Circle, Colour::Red), "a red circle");
    assert_eq!(Shapes::prompt(Shape::Star, Colour::Orange), "an orange star");
    assert!(Shapes::is_held_out(HELD_OUT[0].0, HELD_OUT[0].1));
    assert!(!Shapes::is_held_out(Shape::Circle, Colour::Red));
}

#[test]
fn images_are_sized_and_bounded() {
    for n in [16, 32, 48] {
        let d = dataset(n, 6, 0.5, 0.05);
        for i in 0..50 {
            let s = d.sample(Split::Train, i);
            assert_eq!(s.image.len(), 3 * n * n);
            assert!(s.image.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }
    assert_eq!(dataset(32, 6, 0.0, 0.0).sample(Split::Train, 0).objects.len(), 1);
    assert_eq!(dataset(32, 6, 1.0, 0.0).sample(Split::Train, 0).objects.len(), 2);
}

#[test]
fn bad_configs_are_errors() {
    let bad = [
        ShapesConfig {
            image_size: 8,
            ..Default::default()
        },
        ShapesConfig {
            image_size: 100_000,
            ..Default::default()
        },
        ShapesConfig {
            two_object_fraction: 1.5,
            ..Default::default()
        },
        ShapesConfig {
            two_object_fraction: f64::NAN,
            ..Default::default()
        },
        ShapesConfig {
            noise: -0.1,
            ..Default::default()
        },
        ShapesConfig {
            noise: f32::NAN,
            ..Default::default()
        },
        ShapesConfig {
            jitter: 0.5,
            ..Default::default()
        },
    ];
    for (cfg, field) in bad.into_iter().zip([
        "image_size",
        "image_size",
        "two_object_fraction",
        "two_object_fraction",
        "noise",
        "noise",
        "jitter",
    ]) {
        let e = Shapes::new(cfg.clone()).unwrap_err().to_string();
        assert!(e.contains(field), "{cfg:?}: {e}");
    }
    assert!(Shapes::new(ShapesConfig::default()).is_ok());
}

#[test]
fn png_round_trips_and_bad_paths_name_the_path() {
    let d = dataset(32, 7, 0.3, 0.02);
    let s = d.sample(Split::Train, 0);
    let dir = Scratch::new("png");
    let path = dir.join("sample.png");
    d.to_png(&s, &path).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (32, 32));
    for (x, y, p) in img.enumerate_pixels() {
        let want = pixel(&s, 32, x as usize, y as usize);
        assert!((0..3).all(|c| (p.0[c] as f32 / 255.0 - want[c]).abs() <= 0.5 / 255.0 + 1e-6));
    }
    let bad = dir.join("missing-dir").join("sample.png");
    let e = d.to_png(&s, &bad).unwrap_err().to_string();
    assert!(e.contains(&bad.display().to_string()), "{e}");
    let e = dataset(48, 7, 0.3, 0.02).to_png(&s, &path).unwrap_err().to_string();
    assert!(e.contains("48x48"), "{e}");
}

#[test]
fn vocabulary_covers_every_caption_word() {
    let vocab = Shapes::vocabulary();
    let shapes = Shapes::new(ShapesConfig::default()).unwrap();
    for split in [Split::Train, Split::TestSeen, Split::TestHeldOut] {
        for i in 0..500 {
            for word in shapes.sample(split, i).caption.split_whitespace() {
                assert!(vocab.contains(&word), "{word:?} is missing from the vocabulary");
            }
        }
    }
    for (shape, colour) in Shapes::labels() {
        let prompts = Shapes::prompts(shape, colour);
        assert_eq!(prompts[0], Shapes::prompt(shape, colour));
        for word in prompts.iter().flat_map(|p| p.split_whitespace()) {
            assert!(vocab.contains(&word), "prompt word {word:?} is missing from the vocabulary");
        }
    }
    assert!(vocab.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
}

#[test]
fn rendered_images_preprocess_like_their_png_files() {
    // Training normalises rendered images; `vlk clip embed` decodes files: both must agree.
    let shapes = Shapes::new(ShapesConfig::default()).unwrap();
    let proc = vlk::data::image::ImageProcessor::clip(32);
    let sample = shapes.sample(Split::TestSeen, 7);
    let dir = Scratch::new("preprocess");
    let path = dir.join("sample.png");
    shapes.to_png(&sample, &path).unwrap();
    let from_file = proc.process(&vlk::data::image::load_image(&path).unwrap());
    let mut rendered = sample.image.clone();
    proc.normalize(&mut rendered);
    let worst = from_file.iter().zip(&rendered).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    // One 8-bit level over the smallest std (0.26) is 0.015.
    assert!(worst < 0.016, "largest difference {worst}");
}

#[test]
fn questions_are_unambiguous_and_in_the_vocabulary() {
    use vlk::data::shapes::{Shapes, ShapesConfig, Split};
    use vlk::data::tokenizer::ClipTokenizer;
    use vlk::data::vqa::{question_for, questions, QuestionKind, QUESTION_WORDS};
    let shapes = Shapes::new(ShapesConfig::default()).unwrap();
    let mut words = Shapes::vocabulary();
    words.extend(QUESTION_WORDS);
    words.sort_unstable();
    words.dedup();
    let tok = ClipTokenizer::word_level(&words).unwrap();
    let unk = 2;
    let mut kinds = std::collections::BTreeSet::new();
    for i in 0..400 {
        let s = shapes.sample(Split::Train, i);
        for q in questions(&s.objects) {
            for text in [&q.text, &q.answer] {
                assert!(!tok.encode(text).unwrap().contains(&unk), "unknown word in {text:?}");
            }
            match q.kind {
                QuestionKind::Count => assert_eq!(q.answer, if s.objects.len() == 1 { "one" } else { "two" }),
                QuestionKind::Colour => {
                    // The shape named is drawn once, in the colour answered.
                    let named: Vec<_> = s.objects.iter().filter(|o| q.text.contains(o.shape.name())).collect();
                    assert_eq!(named.len(), 1, "{q:?}");
                    assert_eq!(named[0].colour.name(), q.answer);
                }
                QuestionKind::LeftOf => assert!(q.answer == "yes" || q.answer == "no"),
                _ => {}
            }
            kinds.insert(q.kind);
        }
        let asked = question_for(&shapes, Split::Train, i, &s.objects);
        assert_eq!(
            asked,
            question_for(&shapes, Split::Train, i, &s.objects),
            "a pure function of the index"
        );
    }
    assert_eq!(kinds.len(), QuestionKind::ALL.len(), "every kind of question occurs");
}
