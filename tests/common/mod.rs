//! Helpers shared by the integration tests: random tensors, the finite-difference gradient
//! check, and scratch directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use vlk::{DType, Device, Result, Rng, Tensor};

/// A fresh directory under the system temp dir, named by the test binary, the process and
/// `name`, removed when the test is done with it.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("vlk-{}-{}-{name}", env!("CARGO_CRATE_NAME"), std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

pub fn randn(rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::randn(rng, shape, 0.0, 1.0, DType::F64, Device::Cpu).unwrap()
}

/// Tensors of the given shapes whose values, all taken together, are distinct points of a
/// shuffled grid over (-2, 2): no two closer than 4/total and none closer than 1/total to 0. Ops
/// with kinks (relu and abs at 0, max/min/maximum/minimum at ties) have no derivative there, and
/// a central difference that straddles one (plain normal draws do, a few runs in a hundred)
/// measures a blend of the two sides.
pub fn kink_free(rng: &mut Rng, shapes: &[&[usize]]) -> Vec<Tensor> {
    let counts: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
    let total: usize = counts.iter().sum();
    let mut grid: Vec<f64> = (0..total).map(|i| (i as f64 + 0.25) / total as f64 * 4.0 - 2.0).collect();
    rng.shuffle(&mut grid);
    let mut rest = grid.as_slice();
    shapes
        .iter()
        .zip(counts)
        .map(|(shape, n)| {
            let (mine, others) = rest.split_at(n);
            rest = others;
            Tensor::from_vec(mine.to_vec(), shape, Device::Cpu).unwrap()
        })
        .collect()
}

pub fn rand_range(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    Tensor::rand_uniform(rng, shape, lo, hi, DType::F64, Device::Cpu).unwrap()
}

/// Largest |a - b| / (atol + rtol * |b|) over all elements (<= 1 means within tolerance).
pub fn max_err_ratio(a: &[f64], b: &[f64], atol: f64, rtol: f64) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs() / (atol + rtol * y.abs())
            }
        })
        .fold(0.0, f64::max)
}

pub fn assert_close(a: &Tensor, b: &Tensor, atol: f64, rtol: f64, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let (x, y) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    let r = max_err_ratio(&x, &y, atol, rtol);
    assert!(
        r <= 1.0,
        "{what}: error ratio {r:.3} (atol {atol}, rtol {rtol})\n got {:?}\nwant {:?}",
        &x[..x.len().min(12)],
        &y[..y.len().min(12)]
    );
}

/// Checks the analytic gradient of `f` at `inputs` (f64) against central finite differences.
/// The scalar checked is sum(f(inputs) * w) for a random weight w, so every output element's
/// gradient matters. `differentiable` marks which inputs to check.
pub fn check_grad(name: &str, inputs: &[&Tensor], differentiable: &[bool], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let vars: Vec<Tensor> = inputs
        .iter()
        .zip(differentiable)
        .map(|(t, &d)| if d { t.to_var().unwrap() } else { (*t).clone() })
        .collect();
    let out = f(&vars).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let mut rng = Rng::new(out.elem_count() as u64 + 17);
    let w = randn(&mut rng, out.dims());
    let loss = out.mul(&w).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    let scalar = |xs: &[Tensor]| -> f64 { vlk::no_grad(|| f(xs).unwrap().mul(&w).unwrap().sum_all().unwrap().to_f64().unwrap()) };
    let h = 1e-5;
    for (i, var) in vars.iter().enumerate() {
        if !differentiable[i] {
            continue;
        }
        let analytic = match grads.get(var) {
            Some(g) => g.to_f64_vec().unwrap(),
            None => vec![0.0; var.elem_count()],
        };
        let base = inputs[i].to_f64_vec().unwrap();
        let mut numeric = vec![0.0; base.len()];
        for j in 0..base.len() {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                let mut xs: Vec<Tensor> = inputs.iter().map(|&t| t.clone()).collect();
                xs[i] = Tensor::from_vec(v, inputs[i].dims(), Device::Cpu).unwrap();
                scalar(&xs)
            };
            numeric[j] = (eval(h) - eval(-h)) / (2.0 * h);
        }
        let r = max_err_ratio(&analytic, &numeric, 1e-6, 1e-5);
        assert!(
            r <= 1.0,
            "{name}: gradient of input {i} {:?} off (ratio {r:.2})\nanalytic {:?}\nnumeric  {:?}",
            inputs[i].dims(),
            &analytic[..analytic.len().min(10)],
            &numeric[..numeric.len().min(10)]
        );
    }
}
