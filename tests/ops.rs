//! Forward (and fused backward) results of the CPU kernels against plain references: the blocked
//! GEMM against a triple loop on shapes that cross every tile boundary, the fused attention
//! against matmul + mask + softmax + matmul, fused layer norm and cross-entropy against their
//! composed forms, and the half-precision paths against f32.

mod common;

use common::assert_close;
use proptest::prelude::*;
use vlk::ops::AttentionOptions;
use vlk::{DType, Device, Rng, Tensor};

fn randn(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn(rng, shape, 0.0, 1.0, dtype, Device::Cpu).unwrap()
}

fn naive_matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    c
}

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Wide, narrow and tall products the proptest's sizes do not reach: n past the 480-column block
/// (at k >= 512) inside one thread's column share, C too narrow for a column split (each thread
/// takes rows), a share taller than the 2048 rows of A packed at once for a K slice, and empty
/// products (k = 0 must still write zeros into the uninitialised output).
#[test]
fn gemm_wide_and_narrow_shares() {
    let mut rng = Rng::new(7);
    for (m, k, n) in [
        (3, 70, 1100),
        (5, 300, 2500),
        (1, 257, 2200),
        (130, 257, 1030),
        (130, 600, 1030),
        (700, 40, 5),
        (301, 300, 33),
        (4200, 520, 40),
        (5, 0, 7),
        (0, 3, 4),
    ] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = if ta {
                randn(&mut rng, &[k, m], DType::F32).t().unwrap()
            } else {
                randn(&mut rng, &[m, k], DType::F32)
            };
            let b = if tb {
                randn(&mut rng, &[n, k], DType::F32).t().unwrap()
            } else {
                randn(&mut rng, &[k, n], DType::F32)
            };
            let got = a.matmul(&b).unwrap();
            let want = naive_matmul(
                &a.contiguous().unwrap().to_f64_vec().unwrap(),
                &b.contiguous().unwrap().to_f64_vec().unwrap(),
                m,
                k,
                n,
            );
            let want = Tensor::from_vec(want, &[m, n], Device::Cpu).unwrap();
            assert_close(
                &got,
                &want,
                1e-4 * (k as f64).sqrt(),
                1e-4,
                &format!("gemm {m}x{k}x{n} ta={ta} tb={tb}"),
            );
        }
    }
}

proptest! {
    #![proptest_config(cfg(16))]

    /// Shapes up to 600 cross the micro-tile (8 x 48 or 8 x 32 with AVX-512), the K slice (512) and the M
    /// block (96).
    #[test]
    fn gemm_matches_triple_loop(m in 1usize..=140, k in 1usize..=600, n in 1usize..=140, ta in any::<bool>(), tb in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        for dtype in [DType::F32, DType::F64] {
            let a = if ta { randn(&mut rng, &[k, m], dtype).t().unwrap() } else { randn(&mut rng, &[m, k], dtype) };
            let b = if tb { randn(&mut rng, &[n, k], dtype).t().unwrap() } else { randn(&mut rng, &[k, n], dtype) };
            let got = a.matmul(&b).unwrap();
            let want = naive_matmul(&a.contiguous().unwrap().to_f64_vec().unwrap(), &b.contiguous().unwrap().to_f64_vec().unwrap(), m, k, n);
            let want = Tensor::from_vec(want, &[m, n], Device::Cpu).unwrap();
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
            assert_close(&got, &want, tol * (k as f64).sqrt(), tol, "gemm");
        }
    }

    /// bf16 x bf16 (the AVX512-BF16 kernel where the CPU has it, else widened to f32) against the
    /// f64 product of the same bf16 values: k up to 600 crosses the 512-deep bf16 K slice, odd k
    /// leaves half a pair, a column offset makes the pairs straddle 32-bit words.
    #[test]
    fn bf16_gemm_matches_triple_loop(m in 1usize..=70, k in 1usize..=600, n in 1usize..=70, ta in any::<bool>(), tb in any::<bool>(), skip in 0usize..=1, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let bf = |t: Tensor| t.to_dtype(DType::BF16).unwrap();
        let a = if ta { bf(randn(&mut rng, &[k, m], DType::F32)).t().unwrap() } else { bf(randn(&mut rng, &[m, k + skip], DType::F32)).narrow(1, skip, k).unwrap() };
        let b = if tb { bf(randn(&mut rng, &[n, k], DType::F32)).t().unwrap() } else { bf(randn(&mut rng, &[k, n + skip], DType::F32)).narrow(1, skip, n).unwrap() };
        let got = a.matmul(&b).unwrap();
        prop_assert_eq!(got.dtype(), DType::BF16);
        let want = naive_matmul(&a.contiguous().unwrap().to_f64_vec().unwrap(), &b.contiguous().unwrap().to_f64_vec().unwrap(), m, k, n);
        let want = Tensor::from_vec(want, &[m, n], Device::Cpu).unwrap();
        // The f32 sums are close to exact; the result is rounded to bf16 (relative 2^-9).
        assert_close(&got.to_dtype(DType::F64).unwrap(), &want, 1e-4 * (k as f64).sqrt(), 4e-3, "bf16 gemm");
    }

    /// The fused bias (C starts from the bias rows) and its fallbacks (a strided bias, bf16, the
    /// GPU backend's default through the emulator) all equal matmul + add.
    #[test]
    fn matmul_bias_matches_matmul_plus_add(b in 1usize..=3, m in 1usize..=40, k in 1usize..=40, n in 1usize..=40, strided in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        for (dtype, device) in [(DType::F32, Device::Cpu), (DType::BF16, Device::Cpu), (DType::F32, Device::Emu)] {
            let on = |t: Tensor| t.to_dtype(dtype).unwrap().to_device(device).unwrap();
            let a = on(randn(&mut rng, &[b, m, k], DType::F32));
            let w = on(randn(&mut rng, &[n, k], DType::F32)).t().unwrap();
            let bias = if strided { on(randn(&mut rng, &[n, 2], DType::F32)).narrow(1, 1, 1).unwrap().reshape(&[n]).unwrap() } else { on(randn(&mut rng, &[n], DType::F32)) };
            let got = a.matmul_bias(&w, &bias).unwrap().to_dtype(DType::F64).unwrap().to_device(Device::Cpu).unwrap();
            let want = a.matmul(&w).unwrap().add(&bias).unwrap().to_dtype(DType::F64).unwrap().to_device(Device::Cpu).unwrap();
            let tol = if dtype == DType::BF16 { 2e-2 } else { 1e-5 };
            assert_close(&got, &want, tol, tol, "matmul_bias");
        }
        let a = randn(&mut rng, &[m, k], DType::F32);
        prop_assert!(a.matmul_bias(&randn(&mut rng, &[k, n], DType::F32), &randn(&mut rng, &[n + 1], DType::F32)).is_err());
    }

    #[test]
    fn batched_broadcast_gemm(b in 1usize..=4, m in 1usize..=20, k in 1usize..=20, n in 1usize..=20, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let a = randn(&mut rng, &[b, 1, m, k], DType::F64);
        let w = randn(&mut rng, &[3, k, n], DType::F64);
        let got = a.matmul(&w).unwrap();
        prop_assert_eq!(got.dims(), &[b, 3, m, n]);
        let av = a.to_f64_vec().unwrap();
        let wv = w.to_f64_vec().unwrap();
        let mut want = Vec::new();
        for bi in 0..b {
            for j in 0..3 {
                want.extend(naive_matmul(&av[bi * m * k..(bi + 1) * m * k], &wv[j * k * n..(j + 1) * k * n], m, k, n));
            }
        }
        assert_close(&got, &Tensor::from_vec(want, &[b, 3, m, n], Device::Cpu).unwrap(), 1e-10, 1e-10, "batched gemm");
    }

    /// Sequences longer than the tiles (GPU: 32 queries, 64 keys; CPU: forward blocks of 256
    /// queries at these key counts, backward blocks of 128) so every loop crosses a block.
    #[test]
    fn attention_matches_composed(b in 1usize..=2, h in 1usize..=2, sq in 1usize..=300, sk in 1usize..=140, d in prop::sample::select(vec![1usize, 7, 16, 32]), causal in any::<bool>(), padded in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let dtype = DType::F32;
        let q = randn(&mut rng, &[b, h, sq, d], dtype).to_var().unwrap();
        let k = randn(&mut rng, &[b, h, sk, d], dtype).to_var().unwrap();
        let v = randn(&mut rng, &[b, h, sk, d], dtype).to_var().unwrap();
        let lens: Vec<usize> = (0..b).map(|_| 1 + rng.below(sk as u64) as usize).collect();
        let mask_vals: Vec<u32> = lens.iter().flat_map(|&l| (0..sk).map(move |j| u32::from(j < l))).collect();
        let mask = Tensor::from_vec(mask_vals.clone(), &[b, sk], Device::Cpu).unwrap();
        let opts = AttentionOptions { causal, key_mask: padded.then_some(&mask), scale: None };
        let fused = Tensor::attention(&q, &k, &v, opts).unwrap();

        // Reference: scores, additive -inf mask, softmax, weighted sum; rows that see no key give 0.
        let scale = 1.0 / (d as f64).sqrt();
        let scores = q.matmul(&k.t().unwrap()).unwrap().mul_scalar(scale).unwrap();
        let mut hidden = vec![0f32; b * sq * sk];
        for bi in 0..b {
            for i in 0..sq {
                for j in 0..sk {
                    let causal_hide = causal && (j as isize) > i as isize + sk as isize - sq as isize;
                    let pad_hide = padded && mask_vals[bi * sk + j] == 0;
                    hidden[(bi * sq + i) * sk + j] = f32::from(causal_hide || pad_hide);
                }
            }
        }
        let hidden = Tensor::from_vec(hidden, &[b, 1, sq, sk], Device::Cpu).unwrap();
        let masked = scores.masked_fill(&hidden, -1e30).unwrap();
        let all_hidden = hidden.min(-1, true).unwrap(); // 1 where the row sees nothing
        let probs = masked.softmax().unwrap().masked_fill(&all_hidden, 0.0).unwrap();
        let reference = probs.matmul(&v).unwrap();
        assert_close(&fused, &reference, 1e-5, 1e-4, "attention forward");

        let w = randn(&mut rng, fused.dims(), dtype);
        let g1 = fused.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = reference.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, t) in [("dq", &q), ("dk", &k), ("dv", &v)] {
            assert_close(g1.get(t).unwrap(), g2.get(t).unwrap(), 1e-4, 1e-3, name);
        }
    }

    #[test]
    fn fused_norm_and_loss_match_composed(rows in 1usize..=40, c in 1usize..=300, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&mut rng, &[rows, c], DType::F64).mul_scalar(3.0).unwrap().to_var().unwrap();
        let g = randn(&mut rng, &[c], DType::F64).to_var().unwrap();
        let bias = randn(&mut rng, &[c], DType::F64).to_var().unwrap();
        let fused = x.layer_norm(&g, &bias, 1e-5).unwrap();
        let mean = x.mean(-1, true).unwrap();
        let centered = x.sub(&mean).unwrap();
        let var = centered.sqr().unwrap().mean(-1, true).unwrap();
        let composed = centered.div(&var.add_scalar(1e-5).unwrap().sqrt().unwrap()).unwrap().mul(&g).unwrap().add(&bias).unwrap();
        assert_close(&fused, &composed, 1e-10, 1e-10, "layer_norm forward");
        let w = randn(&mut rng, &[rows, c], DType::F64);
        let gf = fused.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = composed.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, t) in [("dx", &x), ("dgamma", &g), ("dbeta", &bias)] {
            assert_close(gf.get(t).unwrap(), gc.get(t).unwrap(), 1e-9, 1e-8, name);
        }

        let targets: Vec<u32> = (0..rows).map(|_| rng.below(c as u64) as u32).collect();
        let t = Tensor::from_vec(targets.clone(), &[rows], Device::Cpu).unwrap();
        let fused = x.cross_entropy_per_row(&t, -100).unwrap();
        let logp = x.log_softmax().unwrap().to_f64_vec().unwrap();
        let want: Vec<f64> = targets.iter().enumerate().map(|(r, &tt)| -logp[r * c + tt as usize]).collect();
        assert_close(&fused, &Tensor::from_vec(want, &[rows], Device::Cpu).unwrap(), 1e-10, 1e-10, "cross_entropy");
    }

    #[test]
    fn half_precision_paths_track_f32(rows in 1usize..=9, c in 1usize..=70, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&mut rng, &[rows, c], DType::F32);
        let w = randn(&mut rng, &[c, 5], DType::F32);
        let g = randn(&mut rng, &[c], DType::F32);
        let b = randn(&mut rng, &[c], DType::F32);
        for dtype in [DType::F16, DType::BF16] {
            let h = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let tol = if dtype == DType::F16 { 1e-2 } else { 3e-2 };
            let mm = h(&x).matmul(&h(&w)).unwrap();
            assert_eq!(mm.dtype(), dtype);
            let ref_mm = h(&x).to_dtype(DType::F32).unwrap().matmul(&h(&w).to_dtype(DType::F32).unwrap()).unwrap();
            assert_close(&mm.to_dtype(DType::F32).unwrap(), &ref_mm, tol * (c as f64).sqrt(), tol, "half matmul");
            let ln = h(&x).layer_norm(&h(&g), &h(&b), 1e-5).unwrap().to_dtype(DType::F32).unwrap();
            let ref_ln = h(&x).to_dtype(DType::F32).unwrap().layer_norm(&h(&g).to_dtype(DType::F32).unwrap(), &h(&b).to_dtype(DType::F32).unwrap(), 1e-5).unwrap();
            assert_close(&ln, &ref_ln, tol, tol, "half layer_norm");
            let sm = h(&x).softmax().unwrap().to_dtype(DType::F32).unwrap();
            assert_close(&sm, &h(&x).to_dtype(DType::F32).unwrap().softmax().unwrap(), tol, tol, "half softmax");
            let ge = h(&x).gelu().unwrap().to_dtype(DType::F32).unwrap();
            assert_close(&ge, &h(&x).to_dtype(DType::F32).unwrap().gelu().unwrap(), tol, tol, "half gelu");
        }
    }
}

/// Sums, maxima and minima of rows long enough to be split across threads (fewer rows than
/// threads) and of many rows, against f64 folds.
#[test]
fn long_row_reductions_match_a_plain_fold() {
    let mut rng = Rng::new(11);
    for shape in [vec![300_001], vec![1, 200_003], vec![3, 140_001], vec![257, 513]] {
        let x = randn(&mut rng, &shape, DType::F32);
        let v = x.to_f64_vec().unwrap();
        let n = *shape.last().unwrap();
        let rows: Vec<&[f64]> = v.chunks(n).collect();
        let sum = x.sum(-1, false).unwrap().to_f64_vec().unwrap();
        let max = x.max(-1, false).unwrap().to_f64_vec().unwrap();
        let min = x.min(-1, false).unwrap().to_f64_vec().unwrap();
        for (r, row) in rows.iter().enumerate() {
            let want: f64 = row.iter().sum();
            assert!(
                (sum[r] - want).abs() < 1e-6 * (n as f64),
                "{shape:?} row {r}: sum {} vs {want}",
                sum[r]
            );
            assert_eq!(max[r], row.iter().cloned().fold(f64::MIN, f64::max), "{shape:?} max");
            assert_eq!(min[r], row.iter().cloned().fold(f64::MAX, f64::min), "{shape:?} min");
        }
    }
}

/// Sums, maxima and minima over a leading or middle axis: narrow ones whose rows split across
/// threads (a bias gradient, [1088, 128] over rows), wide ones split by column chunks, a single
/// row, and a middle axis with several outer blocks, for f32 and f64, against f64 folds.
#[test]
fn leading_and_middle_axis_reductions_match_a_plain_fold() {
    let mut rng = Rng::new(12);
    for (shape, axis) in [
        (vec![1088, 128], 0),
        (vec![40_000, 3], 0),
        (vec![1, 77], 0),
        (vec![700, 1030], 0),
        (vec![3, 5000, 7], 1),
        (vec![2, 1, 9], 1),
    ] {
        for dtype in [DType::F32, DType::F64] {
            let x = randn(&mut rng, &shape, dtype);
            let v = x.to_f64_vec().unwrap();
            let (outer, n, inner) = (
                shape[..axis].iter().product::<usize>(),
                shape[axis],
                shape[axis + 1..].iter().product::<usize>(),
            );
            let at = |o: usize, r: usize, c: usize| v[(o * n + r) * inner + c];
            let sum = x.sum(axis as isize, false).unwrap().to_f64_vec().unwrap();
            let max = x.max(axis as isize, false).unwrap().to_f64_vec().unwrap();
            let min = x.min(axis as isize, false).unwrap().to_f64_vec().unwrap();
            for o in 0..outer {
                for c in 0..inner {
                    let column = (0..n).map(|r| at(o, r, c));
                    let want: f64 = column.clone().sum();
                    let tol = if dtype == DType::F32 { 1e-5 * n as f64 } else { 1e-12 * n as f64 };
                    let got = sum[o * inner + c];
                    assert!(
                        (got - want).abs() <= tol,
                        "{dtype} {shape:?} axis {axis} ({o}, {c}): sum {got} vs {want}"
                    );
                    assert_eq!(max[o * inner + c], column.clone().fold(f64::MIN, f64::max), "{shape:?} max");
                    assert_eq!(min[o * inner + c], column.fold(f64::MAX, f64::min), "{shape:?} min");
                }
            }
        }
    }
}

/// Contiguous copies of views whose last dim stays contiguous (attention heads permuted back,
/// column slices), large enough to be gathered in parallel shares and small, against indexing.
#[test]
fn gathers_of_blocked_views_match_indexing() {
    let mut rng = Rng::new(13);
    for (shape, perm) in [
        (vec![64, 4, 17, 32], vec![0, 2, 1, 3]),
        (vec![3, 5, 7, 9], vec![2, 0, 1, 3]),
        (vec![8, 12, 50, 64], vec![0, 2, 1, 3]),
        (vec![1, 1, 3, 5], vec![1, 0, 2, 3]),
    ] {
        let x = randn(&mut rng, &shape, DType::F32);
        let v = x.to_f64_vec().unwrap();
        let got = x.permute(&perm).unwrap().contiguous().unwrap().to_f64_vec().unwrap();
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let strides: Vec<usize> = (0..4).map(|d| shape[d + 1..].iter().product()).collect();
        let mut want = Vec::with_capacity(v.len());
        for i0 in 0..out_shape[0] {
            for i1 in 0..out_shape[1] {
                for i2 in 0..out_shape[2] {
                    for i3 in 0..out_shape[3] {
                        let idx = [i0, i1, i2, i3];
                        want.push(v[(0..4).map(|d| idx[d] * strides[perm[d]]).sum::<usize>()]);
                    }
                }
            }
        }
        assert_eq!(got, want, "{shape:?} permuted {perm:?}");
    }
    // Column slices: runs of 100 from rows of 1000.
    let x = randn(&mut rng, &[700, 1000], DType::F32);
    let v = x.to_f64_vec().unwrap();
    let got = x.narrow(1, 450, 100).unwrap().contiguous().unwrap().to_f64_vec().unwrap();
    let want: Vec<f64> = (0..700).flat_map(|r| v[r * 1000 + 450..r * 1000 + 550].to_vec()).collect();
    assert_eq!(got, want, "column slice");
}

/// Contiguous copies of views whose last dim is a broadcast (a scalar, a column, a row of a
/// matrix expanded across a middle dim and the last), large enough to be filled in parallel
/// shares and small, against indexing.
#[test]
fn gathers_of_broadcast_views_match_indexing() {
    let mut rng = Rng::new(17);
    let scalar = randn(&mut rng, &[1, 1], DType::F32);
    let s = scalar.to_f64_vec().unwrap()[0];
    for shape in [[1088, 512], [3, 5], [1, 1]] {
        let got = scalar.broadcast_as(&shape).unwrap().contiguous().unwrap().to_f64_vec().unwrap();
        assert_eq!(got, vec![s; shape[0] * shape[1]], "scalar to {shape:?}");
    }
    for (rows, cols) in [(700, 300), (7, 3), (70_000, 1)] {
        let column = randn(&mut rng, &[rows, 1], DType::F32);
        let v = column.to_f64_vec().unwrap();
        let got = column
            .broadcast_as(&[rows, cols])
            .unwrap()
            .contiguous()
            .unwrap()
            .to_f64_vec()
            .unwrap();
        let want: Vec<f64> = v.iter().flat_map(|&x| vec![x; cols]).collect();
        assert_eq!(got, want, "column {rows} to {cols}");
    }
    // [4, 1, 50, 1] -> [4, 30, 50, 70]: the rows repeat across a middle dim too.
    let x = randn(&mut rng, &[4, 1, 50, 1], DType::F32);
    let v = x.to_f64_vec().unwrap();
    let got = x
        .broadcast_as(&[4, 30, 50, 70])
        .unwrap()
        .contiguous()
        .unwrap()
        .to_f64_vec()
        .unwrap();
    let want: Vec<f64> = (0..4 * 30 * 50 * 70)
        .map(|e| v[(e / (30 * 50 * 70)) * 50 + (e / 70) % 50])
        .collect();
    assert_eq!(got, want, "[4, 1, 50, 1] to [4, 30, 50, 70]");
}

#[test]
fn denoise_step_matches_composed_ops() {
    let mut rng = Rng::new(4);
    let [x, cond, uncond, noise] = [0, 1, 2, 3].map(|_| randn(&mut rng, &[3, 17], DType::F64));
    let (s0, s1, g) = (0.9f64, (1.0f64 - 0.81).sqrt(), 2.5);
    for prediction in [vlk::Prediction::Epsilon, vlk::Prediction::V] {
        let p = vlk::DenoiseParams {
            guidance: g,
            prediction,
            sqrt_alpha_bar: s0,
            sqrt_one_minus_alpha_bar: s1,
            clip_sample: 0.0,
            c_x0: 0.6,
            c_xt: 0.3,
            c_eps: 0.2,
            c_noise: 0.1,
        };
        let fused = Tensor::denoise_step(&x, &cond, Some(&uncond), Some(&noise), &p).unwrap();
        let m = uncond.add(&cond.sub(&uncond).unwrap().mul_scalar(g).unwrap()).unwrap();
        let (x0, eps) = match prediction {
            vlk::Prediction::Epsilon => (x.sub(&m.mul_scalar(s1).unwrap()).unwrap().div_scalar(s0).unwrap(), m.clone()),
            vlk::Prediction::V => (
                x.mul_scalar(s0).unwrap().sub(&m.mul_scalar(s1).unwrap()).unwrap(),
                m.mul_scalar(s0).unwrap().add(&x.mul_scalar(s1).unwrap()).unwrap(),
            ),
        };
        let composed = x0
            .mul_scalar(0.6)
            .unwrap()
            .add(&x.mul_scalar(0.3).unwrap())
            .unwrap()
            .add(&eps.mul_scalar(0.2).unwrap())
            .unwrap()
            .add(&noise.mul_scalar(0.1).unwrap())
            .unwrap();
        assert_close(&fused, &composed, 1e-12, 1e-12, "denoise");
    }
    let bad = randn(&mut rng, &[2, 2], DType::F64);
    let p = vlk::DenoiseParams {
        guidance: 1.0,
        prediction: vlk::Prediction::Epsilon,
        sqrt_alpha_bar: 1.0,
        sqrt_one_minus_alpha_bar: 0.0,
        clip_sample: 0.0,
        c_x0: 1.0,
        c_xt: 0.0,
        c_eps: 0.0,
        c_noise: 0.0,
    };
    assert!(Tensor::denoise_step(&x, &bad, None, None, &p)
        .unwrap_err()
        .to_string()
        .contains("does not match x_t"));
}

#[test]
fn activations_match_known_values() {
    let x = Tensor::from_vec(vec![-3.0f64, -1.0, 0.0, 0.5, 2.0], &[5], Device::Cpu).unwrap();
    // GELU(x) = x * Phi(x): Phi(-3) = 0.0013498980316301, Phi(-1) = 0.15865525393145707,
    // Phi(0.5) = 0.6914624612740131, Phi(2) = 0.9772498680518208.
    let want = [
        -3.0 * 0.0013498980316301,
        -0.15865525393145707,
        0.0,
        0.5 * 0.6914624612740131,
        2.0 * 0.9772498680518208,
    ];
    let got = x.gelu().unwrap().to_vec::<f64>().unwrap();
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-14, "gelu {g} vs {w}");
    }
    let f32x = x.to_dtype(DType::F32).unwrap();
    let got32 = f32x.gelu().unwrap().to_vec::<f32>().unwrap();
    for (g, w) in got32.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 3e-7, "f32 gelu {g} vs {w}");
    }
    let qg = x.quick_gelu().unwrap().to_vec::<f64>().unwrap();
    assert!((qg[4] - 2.0 / (1.0 + (-3.404f64).exp())).abs() < 1e-15);
}

/// f32 GELU and its derivative (the vectorised erf and exp) against f64 over the whole range,
/// tails and tiny inputs included.
#[test]
fn gelu_f32_matches_f64_across_the_range() {
    let mut xs: Vec<f64> = (0..=40_000).map(|i| -10.0 + i as f64 * 5e-4).collect();
    xs.extend((0..60).map(|i| 1e-9 * 1.4f64.powi(i)));
    let x64 = Tensor::from_vec(xs.iter().map(|&x| x as f32 as f64).collect(), &[xs.len()], Device::Cpu).unwrap();
    let x32 = x64.to_dtype(DType::F32).unwrap();
    // GELU's values and derivative at x, in x's dtype, as f64.
    let gelu_and_derivative = |x: &Tensor| {
        let v = x.to_var().unwrap();
        let y = vlk::autograd::with_grad(|| v.gelu()).unwrap();
        let d = y.backward_with_grad(&y.ones_like().unwrap()).unwrap().get(&v).unwrap().clone();
        let as_f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap();
        (as_f64(&y), as_f64(&d))
    };
    let ((y64, d64), (y32, d32)) = (gelu_and_derivative(&x64), gelu_and_derivative(&x32));
    for (i, x) in x64.to_vec::<f64>().unwrap().into_iter().enumerate() {
        let tol = 1.5e-7 * (1.0 + x.abs());
        assert!((y32[i] - y64[i]).abs() <= tol, "gelu({x}): f32 {} against f64 {}", y32[i], y64[i]);
        assert!(
            (d32[i] - d64[i]).abs() <= 2.0 * tol,
            "gelu'({x}): f32 {} against f64 {}",
            d32[i],
            d64[i]
        );
    }
}

#[test]
fn fully_masked_attention_rows_are_zero() {
    let mut rng = Rng::new(3);
    let q = randn(&mut rng, &[1, 1, 4, 8], DType::F32).to_var().unwrap();
    let k = randn(&mut rng, &[1, 1, 2, 8], DType::F32).to_var().unwrap();
    let v = randn(&mut rng, &[1, 1, 2, 8], DType::F32).to_var().unwrap();
    // Causal with Sq > Sk: the first two queries see no key.
    let out = Tensor::attention(
        &q,
        &k,
        &v,
        AttentionOptions {
            causal: true,
            ..Default::default()
        },
    )
    .unwrap();
    let vals = out.to_vec::<f32>().unwrap();
    assert!(vals[..16].iter().all(|&x| x == 0.0), "hidden rows must be 0: {:?}", &vals[..16]);
    assert!(vals[16..].iter().all(|x| x.is_finite() && *x != 0.0));
    let grads = out.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&q).unwrap().to_vec::<f32>().unwrap().iter().all(|x| x.is_finite()));
}

#[test]
fn shape_errors_name_the_op() {
    let a = Tensor::zeros(&[2, 3], DType::F32, Device::Cpu).unwrap();
    let b = Tensor::zeros(&[4, 5], DType::F32, Device::Cpu).unwrap();
    let e = a.matmul(&b).unwrap_err().to_string();
    assert!(e.contains("matmul") && e.contains("[2, 3]") && e.contains("[4, 5]"), "{e}");
    let e = a.add(&b).unwrap_err().to_string();
    assert!(e.contains("broadcast") && e.contains("[2, 3]"), "{e}");
    let e = a.reshape(&[7]).unwrap_err().to_string();
    assert!(e.contains("reshape"), "{e}");
    let ids = Tensor::from_vec(vec![0u32, 9], &[2], Device::Cpu).unwrap();
    let e = b.embedding(&ids).unwrap_err().to_string();
    assert!(e.contains("index 9 out of range for size 4"), "{e}");
    let half = a.to_dtype(DType::F16).unwrap();
    let e = a.add(&half).unwrap_err().to_string();
    assert!(e.contains("dtype"), "{e}");
    let t = Tensor::from_vec(vec![0i64, 3], &[2], Device::Cpu).unwrap();
    let e = a.cross_entropy(&t, -100).unwrap_err().to_string();
    assert!(e.contains("target 3 out of range for 3 classes"), "{e}");
    // No machine this runs on has eight GPUs (and most have none): a clear error, not a panic.
    let e = Tensor::zeros(&[2], DType::F32, Device::Cuda(7))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cuda: device error"), "{e}");
}

/// bf16 and f16 elementwise ops (taken a tile at a time when the operands are contiguous views
/// of one shape) give the bits of the op on the f32-widened operands rounded back: at lengths
/// around the 16384-element tile, 1, and for strided and broadcast views (which widen whole).
#[test]
fn half_elementwise_ops_round_the_f32_results() {
    let mut rng = Rng::new(5);
    for len in [1usize, 7, 16384, 16385, 3 * 16384 + 11] {
        for dtype in [DType::BF16, DType::F16] {
            let a = randn(&mut rng, &[len], DType::F32).to_dtype(dtype).unwrap();
            let b = randn(&mut rng, &[len], DType::F32).to_dtype(dtype).unwrap();
            let wide = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let same = |got: Tensor, want: Tensor, what: &str| {
                assert_eq!(got.dtype(), dtype, "{what}");
                let (g, w) = (got.to_f64_vec().unwrap(), want.to_dtype(dtype).unwrap().to_f64_vec().unwrap());
                let differ = g.iter().zip(&w).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                assert_eq!(differ, 0, "{what} {dtype:?} of {len}: {differ} values differ");
            };
            same(a.mul(&b).unwrap(), wide(&a).mul(&wide(&b)).unwrap(), "mul");
            same(a.sub(&b).unwrap(), wide(&a).sub(&wide(&b)).unwrap(), "sub");
            same(a.gelu().unwrap(), wide(&a).gelu().unwrap(), "gelu");
            same(a.exp().unwrap(), wide(&a).exp().unwrap(), "exp");
            let gelu_grad = |x: &Tensor, dy: &Tensor| {
                let x = x.to_var().unwrap();
                let y = vlk::autograd::with_grad(|| x.gelu()).unwrap();
                y.backward_with_grad(dy).unwrap().get(&x).unwrap().clone()
            };
            same(gelu_grad(&a, &b), gelu_grad(&wide(&a), &wide(&b)), "gelu backward");
            if len > 1 {
                // A strided view (every other element) and a broadcast one (a scalar).
                let half = len / 2;
                let (sa, sb) = (
                    a.narrow(0, 0, 2 * half).unwrap().reshape(&[half, 2]).unwrap(),
                    b.narrow(0, 0, 2 * half).unwrap().reshape(&[half, 2]).unwrap(),
                );
                let (sa, sb) = (sa.narrow(1, 0, 1).unwrap(), sb.narrow(1, 1, 1).unwrap());
                same(sa.add(&sb).unwrap(), wide(&sa).add(&wide(&sb)).unwrap(), "strided add");
                let s = b.narrow(0, 0, 1).unwrap().broadcast_as(&[len]).unwrap();
                same(a.mul(&s).unwrap(), wide(&a).mul(&wide(&s)).unwrap(), "broadcast mul");
            }
        }
    }
}
