//! Kept packed panels of constant GEMM operands (backend/cpu/packed_weights.rs): products that
//! read them give the same bits as products that pack B per call, every kind of B gets its own
//! panels, writing B drops them, gradient-tracked B never keeps any, and the bytes held go back
//! when B is dropped. One test function, in a file of its own, so no other test's panels move the
//! process-wide byte count while it looks.

mod common;

use common::assert_close;
use vlk::backend::cpu::packed_weights::{kept_bytes, without_kept_panels};
use vlk::{DType, Device, Rng, Tensor};

fn randn(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn(rng, shape, 0.0, 1.0, dtype, Device::Cpu).unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// x B three times (the second use packs and keeps B, the third reads the kept panels) against
/// the product with kept panels off, bit for bit; returns the bytes kept after the first use and
/// after the third.
fn check_uses(x: &Tensor, b: &Tensor, what: &str) -> (usize, usize) {
    let want = bits(&without_kept_panels(|| x.matmul(b)).unwrap());
    let mut held = Vec::new();
    for use_no in 1..=3 {
        let got = vlk::no_grad(|| x.matmul(b)).unwrap();
        assert_eq!(bits(&got), want, "{what}: use {use_no} differs from packing per call");
        held.push(kept_bytes());
    }
    (held[0], held[2])
}

#[test]
fn kept_panels_match_packing_per_call_and_follow_their_storage() {
    let mut rng = Rng::new(11);
    let base = kept_bytes();

    // Shapes across the 48- and 32-column panels, several K slices (k > 256) and column blocks
    // (n > 1008), and n or k of 1; x W^T (B transposed), row-major B and a batch with B broadcast.
    for (m, k, n) in [(1, 1, 1), (5, 300, 50), (37, 513, 1100), (64, 64, 64), (9, 1030, 33), (3, 7, 2500)] {
        for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
            let x = randn(&mut rng, &[m, k], dtype);
            let w = randn(&mut rng, &[n, k], dtype);
            let (first, third) = check_uses(&x, &w.t().unwrap(), &format!("{dtype} {m}x{k}x{n} x W^T"));
            assert_eq!(first, base, "{dtype} {m}x{k}x{n}: panels kept after one use");
            assert!(third > base, "{dtype} {m}x{k}x{n}: no panels kept after three uses");
            let b = randn(&mut rng, &[k, n], dtype);
            check_uses(&x, &b, &format!("{dtype} {m}x{k}x{n} row-major B"));
            let xb = randn(&mut rng, &[3, m, k], dtype);
            check_uses(&xb, &b, &format!("{dtype} {m}x{k}x{n} batch of 3, B broadcast"));
        }
    }
    assert_eq!(kept_bytes(), base, "panels outlived their storages");

    // Two views of one storage (two column ranges of one weight) keep panels of their own.
    let w = randn(&mut rng, &[40, 96], DType::F32);
    let x = randn(&mut rng, &[7, 96], DType::F32);
    let (left, right) = (w.narrow(0, 0, 20).unwrap(), w.narrow(0, 20, 20).unwrap());
    for _ in 0..3 {
        for (part, name) in [(&left, "rows 0..20"), (&right, "rows 20..40")] {
            let got = vlk::no_grad(|| x.matmul(&part.t().unwrap())).unwrap();
            let want = without_kept_panels(|| x.matmul(&part.t().unwrap())).unwrap();
            assert_eq!(bits(&got), bits(&want), "view {name}");
        }
    }

    // Writing the weight (as an optimiser step does) drops its panels: the next products see the
    // new values.
    let fresh = randn(&mut rng, &[40, 96], DType::F32);
    w.assign(&fresh).unwrap();
    let got = vlk::no_grad(|| x.matmul(&left.t().unwrap())).unwrap();
    let want = x.matmul(&fresh.narrow(0, 0, 20).unwrap().t().unwrap()).unwrap();
    assert_close(&got, &want, 0.0, 0.0, "product after assign");
    drop((w, left, right));
    assert_eq!(kept_bytes(), base, "panels of a dropped weight are still held");

    // A weight that gradients flow to keeps nothing while gradients are on, and its gradient is
    // right; under no_grad it is constant and keeps panels.
    // (x is new each step: a constant x used as the backward's B would rightly keep panels.)
    let w = randn(&mut rng, &[30, 20], DType::F64).to_var().unwrap();
    for _ in 0..3 {
        let x = randn(&mut rng, &[4, 20], DType::F64);
        let y = x.matmul(&w.t().unwrap()).unwrap().sum_all().unwrap();
        let grads = y.backward().unwrap();
        assert_eq!(kept_bytes(), base, "a gradient-tracked weight kept panels");
        let ones = Tensor::ones(&[30, 4], DType::F64, Device::Cpu).unwrap();
        let want = without_kept_panels(|| ones.matmul(&x)).unwrap();
        assert_close(grads.get(&w).unwrap(), &want, 1e-12, 1e-12, "weight gradient");
    }
    let x = randn(&mut rng, &[4, 20], DType::F64);
    let (_, third) = check_uses(&x, &w.t().unwrap(), "variable under no_grad");
    assert!(third > base);
    drop(w);
    assert_eq!(kept_bytes(), base);
}
