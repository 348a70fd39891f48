//! Checkpoints: resuming from step k reproduces, bit for bit, the losses of an uninterrupted
//! run (parameters, AdamW moments, step counter and RNG all restored); a corrupted checkpoint is
//! refused with a message naming the file while its predecessor is still there.

mod common;

use common::Scratch;
use std::path::Path;
use vlk::nn::{Linear, ParamStore};
use vlk::optim::{AdamW, AdamWConfig, CosineSchedule};
use vlk::train::Checkpointer;
use vlk::{DType, Device, Rng, Tensor};

struct Run {
    store: ParamStore,
    fc1: Linear,
    fc2: Linear,
    opt: AdamW,
    rng: Rng,
}

fn new_run() -> Run {
    let store = ParamStore::new(Device::Cpu, DType::F32, 3);
    let fc1 = Linear::new(&store.root().pp("fc1"), 6, 16, true).unwrap();
    let fc2 = Linear::new(&store.root().pp("fc2"), 16, 4, true).unwrap();
    let opt = AdamW::new(
        store.named(),
        AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    Run {
        store,
        fc1,
        fc2,
        opt,
        rng: Rng::new(9),
    }
}

const SCHEDULE: CosineSchedule = CosineSchedule {
    peak_lr: 1e-2,
    min_lr: 1e-4,
    warmup_steps: 3,
    total_steps: 20,
};

/// One step on a batch drawn from the run's RNG (with dropout from it too); returns the loss bits.
fn step(run: &mut Run, step: u64) -> u32 {
    let x = Tensor::randn(&mut run.rng, &[8, 6], 0.0, 1.0, DType::F32, Device::Cpu).unwrap();
    let y: Vec<u32> = (0..8).map(|_| run.rng.below(4) as u32).collect();
    let y = Tensor::from_vec(y, &[8], Device::Cpu).unwrap();
    let h = run.fc1.forward(&x).unwrap().gelu().unwrap().dropout(0.1, &mut run.rng).unwrap();
    let loss = run.fc2.forward(&h).unwrap().cross_entropy(&y, -100).unwrap();
    let grads = loss.backward().unwrap();
    run.opt.step(&grads, SCHEDULE.lr(step), 1.0).unwrap();
    loss.to_scalar::<f32>().unwrap().to_bits()
}

fn save(ck: &Checkpointer, run: &Run, step: u64) {
    let store = run.store.clone();
    ck.save(
        step,
        move |dir: &Path| vlk::io::safetensors::save(dir.join("model.safetensors"), &store.named()),
        &run.opt,
        &run.rng,
        serde_json::json!({"note": "test"}),
    )
    .unwrap();
}

#[test]
fn resume_reproduces_the_uninterrupted_run_bit_for_bit() {
    let dir = Scratch::new("resume");
    let ck = Checkpointer::new(&dir, 2);
    let mut full = new_run();
    let mut losses = Vec::new();
    for s in 0..20 {
        losses.push(step(&mut full, s));
        if s == 9 || s == 14 {
            save(&ck, &full, s + 1);
        }
    }

    // A new process would start from nothing but the checkpoint at step 10.
    let first = ck.list().unwrap().into_iter().find(|c| c.step == 10).unwrap();
    let mut resumed = new_run();
    first.restore_params(&resumed.store).unwrap();
    first.restore_optimizer(&mut resumed.opt).unwrap();
    let (state, rng) = first.state().unwrap();
    assert_eq!(state["note"], "test");
    resumed.rng = rng;
    let again: Vec<u32> = (10..20).map(|s| step(&mut resumed, s)).collect();
    assert_eq!(again, losses[10..], "losses after resuming at step 10");
    assert_ne!(losses[10], losses[11], "the run is not constant");

    // Corrupt the newest checkpoint: refused by name, and the previous one is still there.
    let latest = ck.latest().unwrap().unwrap();
    assert_eq!(latest.step, 15);
    let model = latest.dir.join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let e = latest.restore_params(&new_run().store).unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors file"), "{e}");
    assert!(first.dir.join("model.safetensors").is_file(), "the previous checkpoint survives");
    std::fs::write(latest.dir.join("trainer_state.json"), b"{ truncated").unwrap();
    assert!(latest.state().unwrap_err().to_string().contains("corrupt trainer state"));

    // Only the newest two are kept.
    save(&ck, &full, 20);
    let steps: Vec<u64> = ck.list().unwrap().iter().map(|c| c.step).collect();
    assert_eq!(steps, vec![15, 20]);
}
