//! The warm job that keeps the CPU thread pool awake between ops (backend/cpu/threads.rs) starts
//! with CPU ops and ends by itself once they stop. A file of its own, so no other test's ops keep
//! it alive while this one waits for it to end.

use std::time::{Duration, Instant};
use vlk::backend::cpu::threads::pool_kept_warm;
use vlk::{DType, Device, Rng, Tensor};

#[test]
fn the_pool_stays_awake_while_ops_run_and_sleeps_after() {
    let mut rng = Rng::new(3);
    let a = Tensor::randn(&mut rng, &[300, 200], 0.0, 1.0, DType::F32, Device::Cpu).unwrap();
    let b = Tensor::randn(&mut rng, &[200, 100], 0.0, 1.0, DType::F32, Device::Cpu).unwrap();
    let want = a.matmul(&b).unwrap().to_vec::<f32>().unwrap();
    let several_threads = rayon::current_num_threads() >= 2;
    // Ops from inside the pool, as the vlk binary runs them, and from outside it.
    rayon::scope(|_| {
        for _ in 0..50 {
            assert_eq!(a.matmul(&b).unwrap().to_vec::<f32>().unwrap(), want);
            assert_eq!(pool_kept_warm(), several_threads, "just after an op");
        }
    });
    for _ in 0..50 {
        assert_eq!(a.matmul(&b).unwrap().to_vec::<f32>().unwrap(), want);
    }
    // The idle window is 2 ms; allow a loaded machine a long while to schedule the job's end.
    let start = Instant::now();
    while pool_kept_warm() {
        assert!(start.elapsed() < Duration::from_secs(20), "the warm job outlived the ops by 20 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}
