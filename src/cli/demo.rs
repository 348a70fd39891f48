//! `vlk demo`: trains a 2-layer MLP with AdamW to classify points of three interleaved spirals,
//! reports the loss curve and accuracy, and saves the weights. (The CLIP demo replaces this once
//! the models land.)

use std::path::PathBuf;
use vlk::nn::{Activation, Linear, ParamStore};
use vlk::optim::{clip_factor, global_grad_norm, AdamW, AdamWConfig, CosineSchedule};
use vlk::{DType, Device, Result, Rng, Tensor};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Training steps.
    #[arg(long, default_value_t = 600)]
    steps: u64,
    /// Where the run is written.
    #[arg(long, default_value = "runs/mlp-demo")]
    out: PathBuf,
    /// cpu, cuda or emu (default: VLK_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Points of `classes` spiral arms with noise: (x [n, 2], labels [n]).
fn spirals(rng: &mut Rng, n: usize, classes: usize) -> (Vec<f32>, Vec<u32>) {
    let mut xs = Vec::with_capacity(n * 2);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        let r = rng.uniform();
        let theta = r * 4.0 + c as f64 * 2.0 * std::f64::consts::PI / classes as f64 + 0.15 * rng.normal();
        xs.push((r * theta.cos()) as f32);
        xs.push((r * theta.sin()) as f32);
        ys.push(c as u32);
    }
    (xs, ys)
}

pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    pub fn new(store: &ParamStore, hidden: usize, classes: usize) -> Result<Self> {
        let root = store.root();
        Ok(Mlp {
            fc1: Linear::new(&root.pp("fc1"), 2, hidden, true)?,
            fc2: Linear::new(&root.pp("fc2"), hidden, classes, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&Activation::Gelu.apply(&self.fc1.forward(x)?)?)
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    let device = match &args.device {
        Some(d) => Device::parse(d)?,
        None => Device::default_device()?,
    };
    let classes = 3;
    let mut rng = Rng::new(args.seed);
    let (train_x, train_y) = spirals(&mut rng, 1536, classes);
    let (test_x, test_y) = spirals(&mut rng, 768, classes);
    let store = ParamStore::new(device, DType::F32, args.seed);
    let model = Mlp::new(&store, 128, classes)?;
    let mut opt = AdamW::new(
        store.named(),
        AdamWConfig {
            lr: 1e-2,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let schedule = CosineSchedule {
        peak_lr: 1e-2,
        min_lr: 1e-4,
        warmup_steps: 20,
        total_steps: args.steps,
    };
    let x = Tensor::from_vec(train_x, &[train_y.len(), 2], device)?;
    let y = Tensor::from_vec(train_y.clone(), &[train_y.len()], device)?;
    let start = std::time::Instant::now();
    for step in 0..args.steps {
        let loss = model.forward(&x)?.cross_entropy(&y, -100)?;
        let grads = loss.backward()?;
        let scale = clip_factor(global_grad_norm(&store.named(), &grads)?, 1.0);
        opt.step(&grads, schedule.lr(step), scale)?;
        if step % 100 == 0 || step + 1 == args.steps {
            println!("step {step:>5}  loss {:.4}  lr {:.2e}", loss.to_f64()?, schedule.lr(step));
        }
    }
    let logits = vlk::no_grad(|| model.forward(&Tensor::from_vec(test_x, &[test_y.len(), 2], device)?))?;
    let rows = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let correct = rows
        .iter()
        .zip(&test_y)
        .filter(|(r, &t)| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32) == Some(t))
        .count();
    let path = args.out.join("model.safetensors");
    vlk::io::safetensors::save(&path, &store.named())?;
    println!(
        "test accuracy {:.1}% after {} steps in {:.1}s; weights in {}",
        100.0 * correct as f64 / test_y.len() as f64,
        args.steps,
        start.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}
