//! Outputs past the cache (32 MiB and more), which the CPU backend writes with non-temporal
//! stores a piece at a time, against the same ops on outputs small enough to be written plainly:
//! row-wise ops must give the same bits row for row, elementwise ops the exact per-element value.
//! The shapes are odd so that pieces, rows and the output's first 64-byte line all fall out of
//! step.

use vlk::{DType, Device, Rng, Tensor};

/// 8197 x 1025 f32: 33.6 MB, past the 32 MiB threshold (and 8197 x 1024 still is).
const ROWS: usize = 8197;
const COLS: usize = 1025;

fn randn(rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::randn(rng, shape, 0.0, 1.0, DType::F32, Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn rows(t: &Tensor, start: usize, len: usize) -> Tensor {
    t.narrow(0, start, len).unwrap().contiguous_copy().unwrap()
}

/// Row ranges spread over the output: the first rows, ones in the middle, the last ones.
const SPANS: [(usize, usize); 3] = [(0, 5), (4099, 7), (ROWS - 3, 3)];

/// Both row widths: 1025 puts every row on a different line offset (the generic forward rows and
/// the AVX-512 backward rows, which store it plainly); 1024 (a multiple of 16) gets the AVX-512
/// kernel's non-temporal stores, after a masked head when the output does not start on a line.
#[test]
fn layer_norm_rows_match_small_outputs() {
    for cols in [COLS, COLS - 1] {
        let mut rng = Rng::new(1);
        let (x, g, b) = (randn(&mut rng, &[ROWS, cols]), randn(&mut rng, &[cols]), randn(&mut rng, &[cols]));
        let dy = randn(&mut rng, &[ROWS, cols]);
        let xv = x.to_var().unwrap();
        let y = vlk::autograd::with_grad(|| xv.layer_norm(&g, &b, 1e-5)).unwrap();
        let dx = y.backward_with_grad(&dy).unwrap().get(&xv).unwrap().clone();
        let (y, dx) = (values(&y), values(&dx));
        for (start, len) in SPANS {
            let xs = rows(&x, start, len).to_var().unwrap();
            let ys = vlk::autograd::with_grad(|| xs.layer_norm(&g, &b, 1e-5)).unwrap();
            let dxs = ys.backward_with_grad(&rows(&dy, start, len)).unwrap().get(&xs).unwrap().clone();
            let span = start * cols..(start + len) * cols;
            assert_eq!(
                &y[span.clone()],
                &values(&ys)[..],
                "layer norm {cols} wide, rows {start}..{}",
                start + len
            );
            assert_eq!(
                &dx[span],
                &values(&dxs)[..],
                "layer norm backward {cols} wide, rows {start}..{}",
                start + len
            );
        }
    }
}

#[test]
fn elementwise_ops_write_every_element() {
    let mut rng = Rng::new(2);
    let (a, b) = (randn(&mut rng, &[ROWS, COLS]), randn(&mut rng, &[ROWS, COLS]));
    let row = randn(&mut rng, &[COLS]);
    let (av, bv, rv) = (values(&a), values(&b), values(&row));
    let sum = values(&a.add(&b).unwrap());
    assert!(sum.iter().zip(av.iter().zip(&bv)).all(|(s, (x, y))| *s == x + y), "a + b");
    // A broadcast row: the pieces of the output start and end inside rows.
    let biased = values(&a.add(&row).unwrap());
    assert!(biased.iter().enumerate().all(|(i, s)| *s == av[i] + rv[i % COLS]), "a + row");
    let relu = values(&vlk::no_grad(|| a.relu()).unwrap());
    assert!(relu.iter().zip(&av).all(|(r, x)| *r == x.max(0.0)), "relu");
    // A copy starting at an odd element.
    let view = a.reshape(&[ROWS * COLS]).unwrap().narrow(0, 3, ROWS * COLS - 5).unwrap();
    assert_eq!(values(&view.contiguous_copy().unwrap()), av[3..ROWS * COLS - 2], "copy of a view");
}

#[test]
fn denoise_step_matches_small_outputs() {
    let mut rng = Rng::new(3);
    let n = ROWS * COLS;
    let [x, c, u, z] = [0, 1, 2, 3].map(|_| randn(&mut rng, &[n]));
    for prediction in [vlk::Prediction::Epsilon, vlk::Prediction::V] {
        let p = vlk::DenoiseParams {
            guidance: 4.5,
            prediction,
            sqrt_alpha_bar: 0.8,
            sqrt_one_minus_alpha_bar: 0.6,
            clip_sample: 1.5,
            c_x0: 0.5,
            c_xt: 0.4,
            c_eps: 0.1,
            c_noise: 0.05,
        };
        let big = values(&Tensor::denoise_step(&x, &c, Some(&u), Some(&z), &p).unwrap());
        for (start, len) in [(0, 1000), (n / 2 + 1, 999), (n - 77, 77)] {
            let [xs, cs, us, zs] = [&x, &c, &u, &z].map(|t| rows(t, start, len));
            let small = values(&Tensor::denoise_step(&xs, &cs, Some(&us), Some(&zs), &p).unwrap());
            assert_eq!(&big[start..start + len], &small[..], "denoise {start}..{}", start + len);
        }
    }
}

#[test]
fn cross_entropy_backward_rows_match_small_outputs() {
    let mut rng = Rng::new(4);
    let x = randn(&mut rng, &[ROWS, COLS]);
    // Targets at both ends of a row, at piece boundaries and past them, and ignored rows.
    let target_of = |row: usize| match row % 7 {
        0 => 0,
        1 => COLS as i64 - 1,
        2 => -100,
        3 => 128,
        4 => 127,
        _ => ((row * 7919) % COLS) as i64,
    };
    let targets: Vec<i64> = (0..ROWS).map(target_of).collect();
    let t = Tensor::from_vec(targets.clone(), &[ROWS], Device::Cpu).unwrap();
    let g = randn(&mut rng, &[ROWS]);
    let xv = x.to_var().unwrap();
    let loss = vlk::autograd::with_grad(|| xv.cross_entropy_per_row(&t, -100)).unwrap();
    let dx = values(loss.backward_with_grad(&g).unwrap().get(&xv).unwrap());
    for (start, len) in SPANS {
        let xs = rows(&x, start, len).to_var().unwrap();
        let ts = Tensor::from_vec(targets[start..start + len].to_vec(), &[len], Device::Cpu).unwrap();
        let ls = vlk::autograd::with_grad(|| xs.cross_entropy_per_row(&ts, -100)).unwrap();
        let dxs = ls.backward_with_grad(&rows(&g, start, len)).unwrap().get(&xs).unwrap().clone();
        let span = start * COLS..(start + len) * COLS;
        assert_eq!(&dx[span], &values(&dxs)[..], "cross-entropy backward rows {start}..{}", start + len);
    }
}
