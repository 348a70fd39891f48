//! Gradient checks: every differentiable op's backward against central finite differences in
//! f64, on random inputs and shapes drawn by proptest (sizes of 1 and odd sizes included).
//!
//! Ops covered: matmul (batched, broadcast batch dims, transposed operands), add, sub, mul, div
//! (broadcasting), maximum, minimum, affine / add_scalar / mul_scalar, powf, neg, exp, log, sqrt,
//! rsqrt, tanh, sigmoid, relu, abs, sqr, recip, gelu (erf), gelu_tanh, quick_gelu, silu, sum,
//! mean, max, min (over an axis, keepdim or not), sum_all, mean_all, softmax, log_softmax,
//! l2_normalize, layer_norm (fused), cross_entropy (fused, with ignore index), attention (fused;
//! causal, key padding, cross-attention with Sq != Sk), embedding / index_select, concat, stack,
//! where_cond, masked_fill, dropout, patchify, unpatchify, reshape, permute, transpose, narrow,
//! broadcast_as, unsqueeze, squeeze, contiguous, to_dtype.

mod common;

use common::{check_grad, kink_free, rand_range, randn};
use proptest::prelude::*;
use vlk::ops::AttentionOptions;
use vlk::{DType, Device, Rng, Tensor, UnaryOp};

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=5, 1..=3)
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn unary_ops(shape in shape(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = kink_free(&mut rng, &[&shape]).remove(0);
        let pos = rand_range(&mut rng, &shape, 0.3, 2.0);
        for op in [UnaryOp::Neg, UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Sigmoid, UnaryOp::Relu, UnaryOp::Abs, UnaryOp::Sqr,
                   UnaryOp::Gelu, UnaryOp::GeluTanh, UnaryOp::QuickGelu, UnaryOp::Silu, UnaryOp::Affine { mul: -1.7, add: 0.3 }] {
            check_grad(&format!("{op:?}"), &[&x], &[true], |v| v[0].unary(op));
        }
        for op in [UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt, UnaryOp::Recip, UnaryOp::Powf(1.5), UnaryOp::Powf(-2.0)] {
            check_grad(&format!("{op:?}"), &[&pos], &[true], |v| v[0].unary(op));
        }
        check_grad("scalar ops", &[&x], &[true], |v| v[0].add_scalar(2.0)?.mul_scalar(-0.5)?.sub_scalar(1.0)?.div_scalar(3.0));
    }

    #[test]
    fn binary_broadcast(shape in shape(), mask_bits in any::<u8>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        // The right operand has some dims squeezed to 1 and maybe fewer leading dims.
        let rhs_shape: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if mask_bits >> i & 1 == 1 { 1 } else { d }).collect();
        let rhs_shape = if mask_bits & 8 == 8 && rhs_shape.len() > 1 { rhs_shape[1..].to_vec() } else { rhs_shape };
        let [a, b]: [Tensor; 2] = kink_free(&mut rng, &[&shape, &rhs_shape]).try_into().unwrap();
        let bpos = rand_range(&mut rng, &rhs_shape, 0.5, 2.0);
        check_grad("add", &[&a, &b], &[true, true], |v| v[0].add(&v[1]));
        check_grad("sub", &[&b, &a], &[true, true], |v| v[0].sub(&v[1]));
        check_grad("mul", &[&a, &b], &[true, true], |v| v[0].mul(&v[1]));
        check_grad("div", &[&a, &bpos], &[true, true], |v| v[0].div(&v[1]));
        check_grad("maximum", &[&a, &b], &[true, true], |v| v[0].maximum(&v[1]));
        check_grad("minimum", &[&a, &b], &[true, true], |v| v[0].minimum(&v[1]));
    }

    #[test]
    fn matmul(b in 1usize..=3, m in 1usize..=6, k in 1usize..=6, n in 1usize..=6, transpose_a in any::<bool>(), broadcast in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let a = if transpose_a { randn(&mut rng, &[b, k, m]) } else { randn(&mut rng, &[b, m, k]) };
        let rhs = if broadcast { randn(&mut rng, &[k, n]) } else { randn(&mut rng, &[b, k, n]) };
        check_grad("matmul", &[&a, &rhs], &[true, true], |v| {
            let a = if transpose_a { v[0].t()? } else { v[0].clone() };
            a.matmul(&v[1])
        });
        let bias = randn(&mut rng, &[n]);
        check_grad("matmul_bias", &[&a, &rhs, &bias], &[true, true, true], |v| {
            let a = if transpose_a { v[0].t()? } else { v[0].clone() };
            a.matmul_bias(&v[1], &v[2])
        });
    }

    #[test]
    fn reductions(shape in shape(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = kink_free(&mut rng, &[&shape]).remove(0);
        let rank = shape.len() as isize;
        for axis in -rank..rank {
            for keepdim in [false, true] {
                check_grad("sum", &[&x], &[true], |v| v[0].sum(axis, keepdim));
                check_grad("mean", &[&x], &[true], |v| v[0].mean(axis, keepdim));
                check_grad("max", &[&x], &[true], |v| v[0].max(axis, keepdim));
                check_grad("min", &[&x], &[true], |v| v[0].min(axis, keepdim));
            }
        }
        check_grad("sum_all", &[&x], &[true], |v| v[0].sum_all());
        check_grad("mean_all", &[&x], &[true], |v| v[0].mean_all());
    }

    #[test]
    fn softmax_family(shape in shape(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&mut rng, &shape).mul_scalar(2.0).unwrap();
        check_grad("softmax", &[&x], &[true], |v| v[0].softmax());
        check_grad("log_softmax", &[&x], &[true], |v| v[0].log_softmax());
        check_grad("l2_normalize", &[&x], &[true], |v| v[0].l2_normalize(1e-12));
    }

    #[test]
    fn cross_entropy(rows in 1usize..=6, classes in 1usize..=7, ignore_bits in any::<u8>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let logits = randn(&mut rng, &[rows, classes]).mul_scalar(2.0).unwrap();
        let targets: Vec<i64> = (0..rows).map(|r| if ignore_bits >> r & 1 == 1 { -100 } else { rng.below(classes as u64) as i64 }).collect();
        let t = Tensor::from_vec(targets, &[rows], Device::Cpu).unwrap();
        check_grad("cross_entropy", &[&logits, &t], &[true, false], |v| v[0].cross_entropy(&v[1], -100));
        check_grad("cross_entropy_per_row", &[&logits, &t], &[true, false], |v| v[0].cross_entropy_per_row(&v[1], -100));
    }

    #[test]
    fn layer_norm(rows in 1usize..=5, c in 1usize..=9, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&mut rng, &[rows, c]).mul_scalar(3.0).unwrap().add_scalar(1.0).unwrap();
        let g = randn(&mut rng, &[c]);
        let b = randn(&mut rng, &[c]);
        check_grad("layer_norm", &[&x, &g, &b], &[true, true, true], |v| v[0].layer_norm(&v[1], &v[2], 1e-5));
    }

    #[test]
    fn attention(b in 1usize..=2, h in 1usize..=2, sq in 1usize..=5, sk in 1usize..=6, d in 1usize..=5, causal in any::<bool>(), padded in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let q = randn(&mut rng, &[b, h, sq, d]);
        let k = randn(&mut rng, &[b, h, sk, d]);
        let v = randn(&mut rng, &[b, h, sk, d]);
        // Batch i keeps its first sk - i keys (at least one).
        let mask_vals: Vec<u32> = (0..b).flat_map(|i| (0..sk).map(move |j| u32::from(j < sk.saturating_sub(i).max(1)))).collect();
        let mask = Tensor::from_vec(mask_vals, &[b, sk], Device::Cpu).unwrap();
        check_grad("attention", &[&q, &k, &v], &[true, true, true], |t| {
            let opts = AttentionOptions { causal, key_mask: if padded { Some(&mask) } else { None }, scale: None };
            Tensor::attention(&t[0], &t[1], &t[2], opts)
        });
    }

    #[test]
    fn indexing_and_joins(vocab in 1usize..=6, dim in 1usize..=4, n in 1usize..=5, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let table = randn(&mut rng, &[vocab, dim]);
        let ids: Vec<u32> = (0..n * 2).map(|_| rng.below(vocab as u64) as u32).collect();
        let ids = Tensor::from_vec(ids, &[2, n], Device::Cpu).unwrap();
        check_grad("embedding", &[&table, &ids], &[true, false], |v| v[0].embedding(&v[1]));
        check_grad("index_select dim 1", &[&table.t().unwrap().contiguous().unwrap(), &ids], &[true, false], |v| v[0].index_select(&v[1], 1));
        let other = randn(&mut rng, &[n, dim]);
        check_grad("concat", &[&table, &other], &[true, true], |v| Tensor::concat(&[&v[0], &v[1]], 0));
        let same = randn(&mut rng, &[vocab, dim]);
        check_grad("stack", &[&table, &same], &[true, true], |v| Tensor::stack(&[&v[0], &v[1]], 1));
        let cond = Tensor::from_vec((0..vocab * dim).map(|i| (i % 3 == 0) as u32 as f64).collect::<Vec<f64>>(), &[vocab, dim], Device::Cpu).unwrap();
        check_grad("where", &[&cond, &table, &same], &[false, true, true], |v| Tensor::where_cond(&v[0], &v[1], &v[2]));
        check_grad("masked_fill", &[&table, &cond], &[true, false], |v| v[0].masked_fill(&v[1], -3.0));
        let dropout_seed = rng.next_u64();
        check_grad("dropout", &[&table], &[true], |v| v[0].dropout(0.3, &mut Rng::new(dropout_seed)));
    }

    #[test]
    fn views(shape in prop::collection::vec(1usize..=4, 3), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&mut rng, &shape);
        let n: usize = shape.iter().product();
        check_grad("reshape", &[&x], &[true], |v| v[0].reshape(&[n]));
        check_grad("permute", &[&x], &[true], |v| v[0].permute(&[2, 0, 1])?.mul(&v[0].permute(&[2, 0, 1])?));
        check_grad("transpose+contiguous", &[&x], &[true], |v| v[0].transpose(0, 2)?.contiguous()?.sqr());
        check_grad("narrow", &[&x], &[true], |v| v[0].narrow(1, shape[1] / 2, shape[1] - shape[1] / 2));
        check_grad("broadcast_as", &[&x], &[true], |v| v[0].unsqueeze(0)?.broadcast_as(&[2, shape[0], shape[1], shape[2]]));
        check_grad("squeeze", &[&x], &[true], |v| v[0].unsqueeze(1)?.squeeze(1));
        // A cast's gradient is the incoming gradient cast back (finite differences through f32
        // rounding would be meaningless, so check it exactly).
        let var = x.to_var().unwrap();
        let w = randn(&mut rng, &shape).to_dtype(DType::F32).unwrap();
        let grads = var.to_dtype(DType::F32).unwrap().mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(&var).unwrap();
        prop_assert_eq!(g.dtype(), DType::F64);
        prop_assert_eq!(g.to_f64_vec().unwrap(), w.to_f64_vec().unwrap());
    }

    #[test]
    fn patchify(b in 1usize..=2, c in 1usize..=3, gh in 1usize..=3, gw in 1usize..=3, p in 1usize..=3, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&mut rng, &[b, c, gh * p, gw * p]);
        check_grad("patchify", &[&x], &[true], |v| v[0].patchify(p));
        let rows = randn(&mut rng, &[b, gh * gw, c * p * p]);
        check_grad("unpatchify", &[&rows], &[true], |v| v[0].unpatchify(p, c, gh * p, gw * p));
    }
}
