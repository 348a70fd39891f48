//! Training must be reproducible: the same inputs give the same bits from run to run and for any
//! number of threads. The ops here split their work over rayon's threads and then combine
//! partial results (layer norm's dgamma/dbeta, a bias gradient's sum over rows, attention's dK and
//! dV, cross-entropy's mean, the GEMMs' blocks), so each is run in pools of 1, 2, 3 and 5
//! threads, twice each, and every gradient is compared bit for bit with the first run's.
//!
//! The shapes are large enough that every op splits into many pieces (4100 rows of 96 for the
//! layer norm and the bias, 8 heads of 197 tokens for attention).

use vlk::ops::AttentionOptions;
use vlk::{DType, Device, Rng, Tensor};

const ROWS: usize = 4100;
const WIDTH: usize = 96;

fn randn(rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::randn(rng, shape, 0.0, 1.0, DType::F32, Device::Cpu)
        .unwrap()
        .to_var()
        .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

/// The loss's gradients with respect to every input, as bits.
fn gradients() -> Vec<Vec<u32>> {
    let mut rng = Rng::new(7);
    let x = randn(&mut rng, &[ROWS, WIDTH]);
    let (gamma, beta) = (randn(&mut rng, &[WIDTH]), randn(&mut rng, &[WIDTH]));
    let w = randn(&mut rng, &[WIDTH, WIDTH]);
    let bias = randn(&mut rng, &[WIDTH]);
    let (q, k, v) = (
        randn(&mut rng, &[2, 8, 197, 64]),
        randn(&mut rng, &[2, 8, 197, 64]),
        randn(&mut rng, &[2, 8, 197, 64]),
    );
    let targets: Vec<i64> = (0..ROWS).map(|_| rng.below(WIDTH as u64) as i64).collect();
    let targets = Tensor::from_vec(targets, &[ROWS], Device::Cpu).unwrap();
    let loss = vlk::autograd::with_grad(|| -> vlk::Result<Tensor> {
        let h = x.layer_norm(&gamma, &beta, 1e-5)?.matmul(&w)?.add(&bias)?;
        let xent = h.cross_entropy(&targets, -100)?;
        let attn = Tensor::attention(&q, &k, &v, AttentionOptions::default())?;
        xent.add(&attn.sqr()?.mean_all()?)
    })
    .unwrap();
    let grads = loss.backward().unwrap();
    [&x, &gamma, &beta, &w, &bias, &q, &k, &v]
        .iter()
        .map(|t| bits(grads.get(t).unwrap()))
        .collect()
}

#[test]
fn gradients_have_the_same_bits_for_any_thread_count() {
    let first = gradients();
    let names = ["x", "gamma", "beta", "w", "bias", "q", "k", "v"];
    for threads in [1, 2, 3, 5] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for run in 0..2 {
            let again = pool.install(gradients);
            for ((name, want), got) in names.iter().zip(&first).zip(&again) {
                let differ = want.iter().zip(got).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ,
                    0,
                    "d{name}: {differ} of {} values differ ({threads} threads, run {run})",
                    want.len()
                );
            }
        }
    }
}
