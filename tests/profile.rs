//! The profiler: a forward and backward pass on the CPU and on the emulator written as a Chrome
//! trace (names, shapes, nesting, kernel launches) with a table whose self times add up, and the
//! binary's `--profile` flag and VLK_PROFILE. Profiling is process-wide, so these tests run one
//! at a time and no other test shares this binary.

mod common;

use common::Scratch;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use vlk::{profile, DType, Device, Rng, Tensor};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// matmul, layer norm and softmax cross-entropy, forward and backward, inside a "test.step" scope.
fn forward_backward(device: Device) {
    let _step = profile::scope("test.step");
    let mut rng = Rng::new(7);
    let mut var = |shape: &[usize]| {
        Tensor::randn(&mut rng, shape, 0.0, 1.0, DType::F32, device)
            .unwrap()
            .to_var()
            .unwrap()
    };
    let (x, w, gamma, beta) = (var(&[8, 16]), var(&[16, 10]), var(&[10]), var(&[10]));
    let targets = Tensor::from_vec((0..8).map(|i| i % 10).collect::<Vec<i64>>(), &[8], device).unwrap();
    let loss = x
        .matmul(&w)
        .unwrap()
        .layer_norm(&gamma, &beta, 1e-5)
        .unwrap()
        .cross_entropy(&targets, -100)
        .unwrap();
    let grads = loss.backward().unwrap();
    assert_eq!(grads.len(), 4);
}

fn read_trace(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let trace: Value = serde_json::from_str(&text).expect("the trace is JSON");
    assert_eq!(trace["displayTimeUnit"], "ms");
    trace["traceEvents"].as_array().expect("traceEvents").clone()
}

fn complete_events<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["ph"] == "X" && e["name"] == name).collect()
}

fn span(e: &Value) -> (f64, f64) {
    let ts = e["ts"].as_f64().unwrap();
    (ts, ts + e["dur"].as_f64().unwrap())
}

/// Whether `inner` lies within `outer` on the same track.
fn contains(outer: &Value, inner: &Value) -> bool {
    let ((a, b), (c, d)) = (span(outer), span(inner));
    outer["tid"] == inner["tid"] && a <= c && d <= b
}

/// The share column of the printed op table.
fn printed_shares(table: &str) -> Vec<f64> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("op "))
        .skip(1)
        .take_while(|l| !l.starts_with("kernel ") && !l.starts_with("trace:"))
        .map(|l| {
            let share = l.split_whitespace().nth(3).unwrap();
            share.trim_end_matches('%').parse().unwrap()
        })
        .collect()
}

#[test]
fn cpu_ops_are_traced_with_shapes_nesting_and_self_times_that_add_up() {
    let _serial = serial();
    let dir = Scratch::new("cpu");
    let path = dir.join("trace.json");
    profile::enable(&path);
    forward_backward(Device::Cpu);
    let summary = profile::finish().unwrap().expect("was profiling");
    assert_eq!(summary.path, path);

    let events = read_trace(&path);
    let matmuls = complete_events(&events, "matmul");
    let forward = matmuls
        .iter()
        .find(|e| e["args"]["shapes"] == serde_json::json!([[8, 16], [16, 10]]))
        .expect("the forward matmul with its input shapes");
    assert_eq!(forward["args"]["dtype"], "f32");
    assert_eq!(forward["args"]["device"], "cpu");
    let norm = complete_events(&events, "layer_norm");
    assert_eq!(norm.len(), 1);
    assert_eq!(norm[0]["args"]["shapes"], serde_json::json!([[8, 10], [10], [10]]));
    assert_eq!(complete_events(&events, "cross_entropy").len(), 1);

    // Backward steps are named after their op and hold the ops they run.
    let backward = complete_events(&events, "backward");
    let matmul_backward = complete_events(&events, "matmul.backward");
    assert_eq!((backward.len(), matmul_backward.len()), (1, 1));
    assert!(contains(backward[0], matmul_backward[0]));
    let inside = matmuls.iter().filter(|m| contains(matmul_backward[0], m)).count();
    assert_eq!(inside, 2, "dx = dy w^T and dw = x^T dy run inside matmul.backward");
    for name in ["layer_norm.backward", "cross_entropy.backward"] {
        let e = complete_events(&events, name);
        assert_eq!(e.len(), 1, "{name}");
        assert!(contains(backward[0], e[0]), "{name} inside backward");
    }

    // Every op runs inside the step, so self times add up to the step's total, and the printed
    // shares to 100%.
    let op = |name: &str| {
        summary
            .ops
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} in {summary}"))
    };
    assert_eq!(op("matmul").calls, 3);
    let step = op("test.step");
    let diff = step.total.as_secs_f64() - summary.op_time().as_secs_f64();
    assert!(
        diff.abs() < 1e-6,
        "self times add to {:?}, the step took {:?}",
        summary.op_time(),
        step.total
    );
    let backward_row = op("backward");
    assert!(backward_row.total > backward_row.self_time);
    let shares = printed_shares(&summary.to_string());
    assert_eq!(shares.len(), summary.ops.len());
    let sum: f64 = shares.iter().sum();
    assert!((sum - 100.0).abs() <= 0.05 * shares.len() as f64 + 1e-9, "shares sum to {sum}");
    assert!(summary.kernels.is_empty(), "the CPU launches no kernels");

    // Finished: nothing is recorded any more.
    let t = Tensor::zeros(&[2], DType::F32, Device::Cpu).unwrap();
    assert!(profile::op("matmul", [&t]).is_none());
    assert!(profile::finish().unwrap().is_none());
}

#[test]
fn emulator_kernels_are_traced_inside_the_ops_that_launch_them() {
    let _serial = serial();
    let dir = Scratch::new("emu");
    let path = dir.join("nested/emu-trace.json");
    profile::enable(&path);
    forward_backward(Device::Emu);
    let summary = profile::finish().unwrap().expect("was profiling");

    let events = read_trace(&path);
    let norm = complete_events(&events, "layer_norm");
    assert_eq!(norm[0]["args"]["device"], "emu");
    let kernels: Vec<&Value> = events
        .iter()
        .filter(|e| e["name"].as_str().unwrap_or("").starts_with("kernel:"))
        .collect();
    assert!(kernels.len() > 10, "{} kernel events", kernels.len());
    for k in &kernels {
        assert_eq!(k["cat"], "kernel");
        assert_eq!(k["args"]["grid"].as_array().map(Vec::len), Some(3), "{k}");
        assert_eq!(k["args"]["block"].as_array().map(Vec::len), Some(3), "{k}");
        assert_eq!(k["args"]["device"], "emu");
    }
    let ops: Vec<&Value> = events.iter().filter(|e| e["cat"] == "op").collect();
    for k in &kernels {
        assert!(ops.iter().any(|op| contains(op, k)), "{k} is not inside an op");
    }
    let launched_by_norm = kernels.iter().filter(|k| contains(norm[0], k)).count();
    assert!(launched_by_norm >= 1, "layer_norm launched no kernel");
    assert!(summary.kernels.iter().any(|k| k.name.starts_with("kernel:gemm")), "{summary}");
    assert!(summary.to_string().contains("kernel:"));
}

#[test]
fn an_unwritable_trace_is_an_error_naming_the_path() {
    let _serial = serial();
    let dir = Scratch::new("unwritable");
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, "a file").unwrap();
    profile::enable(blocker.join("trace.json"));
    let err = profile::finish().expect_err("the trace cannot be written under a file");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn the_binary_writes_a_trace_with_profile_or_vlk_profile() {
    let _serial = serial();
    let dir = Scratch::new("cli");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-f16");
    let embed = [
        "clip",
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--text",
        "a photo of a cat",
        "--json",
    ];
    let (flag_trace, env_trace) = (dir.join("flag.json"), dir.join("env.json"));
    let with_flag = Command::new(env!("CARGO_BIN_EXE_vlk"))
        .args(embed)
        .args(["--profile", flag_trace.to_str().unwrap()])
        .env("VLK_DEVICE", "cpu")
        .env_remove("VLK_PROFILE")
        .output()
        .unwrap();
    let with_env = Command::new(env!("CARGO_BIN_EXE_vlk"))
        .args(embed)
        .env("VLK_DEVICE", "cpu")
        .env("VLK_PROFILE", &env_trace)
        .output()
        .unwrap();
    for (out, trace) in [(with_flag, flag_trace), (with_env, env_trace)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let stdout: Value = serde_json::from_slice(&out.stdout).expect("stdout stays one JSON value");
        assert!(stdout["text_embeds"].is_array());
        assert!(stderr.contains("profile: ") && stderr.contains("matmul"), "{stderr}");
        assert!(stderr.contains(&format!("trace: {}", trace.display())), "{stderr}");
        let events = read_trace(&trace);
        assert!(!complete_events(&events, "matmul").is_empty());
        assert!(!complete_events(&events, "attention").is_empty());
    }
}
