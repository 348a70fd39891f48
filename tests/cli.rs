//! The `vlk` binary end to end: CLIP commands on a Hub-style fixture directory (JSON on stdout and
//! nothing else), and bad input giving one line on stderr and a non-zero exit, never a panic.

mod common;

use common::Scratch;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vlk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vlk"))
        .args(args)
        .env("VLK_DEVICE", "cpu")
        .output()
        .expect("run vlk")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn scratch(name: &str) -> Scratch {
    Scratch::new(name)
}

/// A small picture: a coloured rectangle on a gradient.
fn write_image(path: &Path, w: u32, h: u32, colour: [u8; 3]) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        if x > w / 4 && x < 3 * w / 4 && y > h / 4 && y < 3 * h / 4 {
            image::Rgb(colour)
        } else {
            image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        }
    });
    img.save(path).unwrap();
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success: {stderr}");
    assert!(!stderr.contains("panicked"), "panic instead of an error: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn clip_embed_json_is_one_value_matching_the_reference() {
    let dir = scratch("embed");
    let (a, b) = (dir.join("a.png"), dir.join("b.jpg"));
    write_image(&a, 40, 30, [220, 30, 30]);
    write_image(&b, 25, 50, [30, 30, 220]);
    let model = fixture("clip-f16");
    let out = vlk(&[
        "clip",
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--image",
        a.to_str().unwrap(),
        "--image",
        b.to_str().unwrap(),
        "--text",
        "a photo of a cat",
        "--text",
        "a diagram",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is exactly one JSON value");
    let rows = |k: &str| -> Vec<Vec<f64>> { serde_json::from_value(v[k].clone()).unwrap() };
    let (ie, te, lg) = (rows("image_embeds"), rows("text_embeds"), rows("logits_per_image"));
    assert_eq!((ie.len(), te.len(), lg.len(), lg[0].len()), (2, 2, 2, 2));
    for e in ie.iter().chain(&te) {
        let norm: f64 = e.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "embeddings are normalised: {norm}");
    }
    // The texts are the fixture's captions: the same embeddings as transformers computed.
    let reference = vlk::io::safetensors::load(model.join("reference.safetensors"), vlk::Device::Cpu).unwrap();
    let want = reference["text_embeds"].to_vec2::<f32>().unwrap();
    for (got, want) in te.iter().zip(&want) {
        let err = got.iter().zip(want).map(|(g, w)| (g - *w as f64).abs()).fold(0.0, f64::max);
        assert!(err < 2e-3, "text embeddings differ from transformers by {err}");
    }
}

#[test]
fn clip_zero_shot_and_retrieve() {
    let dir = scratch("zs");
    let img = dir.join("red.png");
    write_image(&img, 32, 32, [250, 10, 10]);
    let model = fixture("clip-f16");
    let out = vlk(&[
        "clip",
        "zero-shot",
        "--model",
        model.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--labels",
        "cat, dog ,red square",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 3);
    let probs: Vec<f64> = list.iter().map(|o| o["prob"].as_f64().unwrap()).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "best first: {probs:?}");
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    assert!(list.iter().any(|o| o["label"] == "red square"));

    let folder = scratch("retrieve");
    for (i, c) in [[200, 0, 0], [0, 200, 0], [0, 0, 200]].iter().enumerate() {
        write_image(&folder.join(format!("img{i}.png")), 24, 24, *c);
    }
    let args = [
        "clip",
        "retrieve",
        "--model",
        model.to_str().unwrap(),
        "--images",
        folder.to_str().unwrap(),
        "--query",
        "a green square",
        "--top",
        "2",
    ];
    let first = vlk(&args);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(String::from_utf8_lossy(&first.stdout).lines().count(), 2);
    assert!(
        folder.join(".vlk-clip-embeddings.json").is_file(),
        "embeddings are cached beside the images"
    );
    let second = vlk(&args);
    assert_eq!(first.stdout, second.stdout, "the cached embeddings give the same ranking");
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let empty = scratch("empty");
    assert_clean_failure(
        &vlk(&["clip", "embed", "--model", empty.to_str().unwrap(), "--text", "x"]),
        "config.json",
    );

    // A directory without a tokenizer.
    let gelu = fixture("clip-gelu");
    assert_clean_failure(
        &vlk(&["clip", "embed", "--model", gelu.to_str().unwrap(), "--text", "x"]),
        "tokenizer.json",
    );

    // Config and weights that do not fit together.
    let mismatch = scratch("mismatch");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(gelu.join("config.json")).unwrap()).unwrap();
    config["text_config"]["intermediate_size"] = 80.into();
    std::fs::write(mismatch.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(gelu.join("model.safetensors"), mismatch.join("model.safetensors")).unwrap();
    assert_clean_failure(
        &vlk(&["clip", "embed", "--model", mismatch.to_str().unwrap(), "--text", "x"]),
        "the model expects",
    );

    // A broken image, and an empty one.
    let model = fixture("clip-f16");
    let dir = scratch("broken");
    let broken = dir.join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    assert_clean_failure(
        &vlk(&[
            "clip",
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--image",
            broken.to_str().unwrap(),
        ]),
        "broken.png",
    );
    let empty_img = dir.join("empty.jpg");
    std::fs::write(&empty_img, b"").unwrap();
    assert_clean_failure(
        &vlk(&[
            "clip",
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--image",
            empty_img.to_str().unwrap(),
        ]),
        "empty.jpg",
    );
    assert_clean_failure(
        &vlk(&[
            "clip",
            "zero-shot",
            "--model",
            model.to_str().unwrap(),
            "--image",
            broken.to_str().unwrap(),
            "--labels",
            " , ",
        ]),
        "no label",
    );
    assert_clean_failure(&vlk(&["demo", "--device", "tpu"]), "unknown device");
}

/// The loss history written in a run's newest checkpoint.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    let ck = vlk::train::Checkpointer::new(run, 2).latest().unwrap().unwrap();
    let (state, _) = ck.state().unwrap();
    serde_json::from_value(state["losses"].clone()).unwrap()
}

#[test]
fn clip_train_resumes_the_exact_same_run() {
    let full = scratch("train-full");
    let args = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "clip",
            "train",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "6",
            "--batch",
            "8",
            "--image-size",
            "16",
            "--checkpoint-every",
            "3",
            // Frozen text tower until step 4: the resumed run unfreezes it, so per-parameter
            // optimizer step counts must survive the checkpoint.
            "--text-freeze",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| vlk(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(args(&full, &[]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let uninterrupted = losses(&full);
    assert_eq!(uninterrupted.len(), 6);

    // Start a second run from the first one's step-3 checkpoint only.
    let resumed = scratch("train-resumed");
    std::fs::create_dir_all(resumed.join("checkpoints")).unwrap();
    let step3 = full.join("checkpoints/step-00000003");
    assert!(step3.is_dir());
    std::fs::rename(&step3, resumed.join("checkpoints/step-00000003")).unwrap();
    let out = run(args(&resumed, &["--resume"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(losses(&resumed), uninterrupted, "identical losses, bit for bit");

    // The trained model loads with `vlk clip embed`; a second fresh run into the same folder is refused.
    let model = resumed.join("model");
    let out = vlk(&[
        "clip",
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--text",
        "a red circle",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_clean_failure(&run(args(&resumed, &[])), "--resume");

    // Evaluation: one JSON object with zero-shot accuracies and recalls that grow with k.
    let out = vlk(&["clip", "eval", "--model", model.to_str().unwrap(), "--n", "20", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for split in ["seen", "held_out"] {
        let z = &m["zero_shot"][split];
        assert_eq!(z["images"], 20);
        for k in ["colour_shape", "colour", "shape"] {
            let v = z[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{split} {k}: {v}");
        }
        assert!(
            z["colour_shape"].as_f64() <= z["colour"].as_f64(),
            "getting both right implies the colour"
        );
    }
    for dir in ["image_to_text", "text_to_image"] {
        let r = &m["retrieval"][dir];
        let (r1, r5, r10) = (r["r1"].as_f64().unwrap(), r["r5"].as_f64().unwrap(), r["r10"].as_f64().unwrap());
        assert!(r1 <= r5 && r5 <= r10 && r10 <= 1.0, "{dir}: {r1} {r5} {r10}");
    }
    assert_clean_failure(&vlk(&["clip", "eval", "--model", model.to_str().unwrap(), "--n", "3"]), "--n");
}

#[test]
fn demo_trains_evaluates_and_writes_a_report() {
    let dir = scratch("demo");
    let run = dir.join("run");
    let out = vlk(&["demo", "--out", run.to_str().unwrap(), "--steps", "4", "--batch", "8", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is exactly one JSON value");
    assert_eq!(v["steps"], 4);
    for key in ["colour_shape", "colour", "shape"] {
        assert!(v["metrics"]["zero_shot"]["held_out"][key].as_f64().is_some(), "{key} in {v}");
    }
    assert!(v["metrics"]["retrieval"]["text_to_image"]["r1"].as_f64().is_some());
    let report = PathBuf::from(v["report"].as_str().unwrap());
    for png in ["training.png", "zero_shot.png"] {
        let img = image::open(report.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(img.width() > 100 && img.height() > 100, "{png}");
    }
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(report.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["losses"].as_array().unwrap().len(), 4);
    assert_eq!(metrics["summary"]["final"], v["metrics"], "the report holds the final evaluation");
    // The model directory loads for inference.
    let model = PathBuf::from(v["model"].as_str().unwrap());
    let img = dir.join("red.png");
    write_image(&img, 32, 32, [220, 30, 30]);
    let out = vlk(&[
        "clip",
        "zero-shot",
        "--model",
        model.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--labels",
        "a red circle, a blue star",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn clip_train_on_a_folder_counts_and_skips_bad_rows() {
    let dir = scratch("folder-data");
    for (i, c) in [
        [200, 20, 20],
        [20, 200, 20],
        [20, 20, 200],
        [200, 200, 20],
        [20, 200, 200],
        [200, 20, 200],
    ]
    .iter()
    .enumerate()
    {
        write_image(&dir.join(format!("img{i}.png")), 20, 16, *c);
    }
    std::fs::write(dir.join("corrupt.png"), b"not an image at all").unwrap();
    let mut lines: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"image": "img{i}.png", "caption": "a photo number {i}"}}"#))
        .collect();
    lines.push(r#"{"image": "missing.png", "caption": "gone"}"#.into());
    lines.push(r#"{"image": "img0.png", "caption": "   "}"#.into());
    lines.push("this is not json".into());
    lines.push(r#"{"image": "corrupt.png", "caption": "unreadable"}"#.into());
    std::fs::write(dir.join("captions.jsonl"), lines.join("\n")).unwrap();
    let out_dir = scratch("folder-run");
    let out = vlk(&[
        "clip",
        "train",
        "--data",
        dir.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--steps",
        "2",
        "--batch",
        "4",
        "--image-size",
        "16",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("7 captioned images, 3 bad rows skipped"), "{stderr}");
    assert!(
        stderr.contains("missing image") && stderr.contains("empty caption") && stderr.contains("not JSON"),
        "{stderr}"
    );
    assert!(stderr.contains("1 images could not be decoded"), "{stderr}");
    assert!(out_dir.join("model/tokenizer.json").is_file());

    // A folder where every row is bad is an error naming the file.
    let bad = scratch("folder-bad");
    std::fs::write(bad.join("captions.csv"), "image,caption\nnope.png,a caption\n").unwrap();
    assert_clean_failure(
        &vlk(&[
            "clip",
            "train",
            "--data",
            bad.to_str().unwrap(),
            "--out",
            out_dir.join("x").to_str().unwrap(),
        ]),
        "every row is bad",
    );
}

#[test]
fn csv_captions_with_quotes_and_commas() {
    let dir = scratch("csv");
    write_image(&dir.join("a.png"), 8, 8, [1, 2, 3]);
    write_image(&dir.join("b b.png"), 8, 8, [1, 2, 3]);
    std::fs::write(
        dir.join("captions.csv"),
        "id,caption,image\n1,\"a cat, sitting\",a.png\n2,\"the \"\"big\"\" one\",b b.png\n3,\"unterminated,a.png\n",
    )
    .unwrap();
    let folder = vlk::data::captions::CaptionFolder::open(&dir).unwrap();
    let captions: Vec<&str> = folder.rows.iter().map(|r| r.caption.as_str()).collect();
    assert_eq!(captions, ["a cat, sitting", "the \"big\" one"]);
    assert_eq!(folder.rows[1].image, dir.join("b b.png"));
    assert_eq!(folder.bad_rows, vec![(4, "malformed CSV row".to_string())]);
}

/// Writes MNIST-format files: `n` 28x28 images (gzipped) and their labels (plain).
fn write_idx(dir: &Path, n: usize) {
    use std::io::Write;
    let mut images = vec![0u8, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    images.extend((0..n * 784).map(|i| ((i * 37) % 251) as u8));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&images).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
    let mut labels = vec![0u8, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    labels.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels).unwrap();
}

#[test]
fn clip_train_on_mnist_format_files() {
    let dir = scratch("fashion-mnist");
    write_idx(&dir, 12);
    let data = vlk::data::idx::IdxDataset::open(&dir, true).unwrap();
    assert_eq!(data.len(), 12);
    assert_eq!(data.caption(9), "a picture of an ankle boot");
    assert_eq!(data.caption(4), "a photo of a coat");
    let out_dir = scratch("idx-run");
    let out = vlk(&[
        "clip",
        "train",
        "--data",
        dir.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--steps",
        "1",
        "--batch",
        "4",
        "--image-size",
        "16",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("12 MNIST-format images"), "{stderr}");

    // A truncated image file is an error naming it.
    let bad = scratch("mnist-bad");
    write_idx(&bad, 3);
    std::fs::write(bad.join("train-images-idx3-ubyte.gz"), b"\x1f\x8b\x08\x00garbage").unwrap();
    assert_clean_failure(
        &vlk(&[
            "clip",
            "train",
            "--data",
            bad.to_str().unwrap(),
            "--out",
            out_dir.join("x").to_str().unwrap(),
        ]),
        "train-images-idx3-ubyte.gz",
    );
}

#[test]
fn ceilings_json_reports_positive_rates() {
    let out = vlk(&["ceilings", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is exactly one JSON value");
    for key in ["fma_gflops_one_thread", "fma_gflops_all_threads", "read_gb_per_s", "copy_gb_per_s"] {
        let rate = v[key].as_f64().unwrap_or(0.0);
        assert!(rate > 0.0 && rate.is_finite(), "{key}: {v}");
    }
    assert!(v["isa"].is_string() && v["threads"].as_u64() >= Some(1), "{v}");
}

/// `vlk bench --suite quick --list` with environment variable `name` set to `value`, which must
/// end in a clean failure naming the variable.
fn assert_env_refused(name: &str, value: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_vlk"))
        .args(["bench", "--suite", "quick", "--list"])
        .env(name, value)
        .output()
        .expect("run vlk");
    assert_clean_failure(&out, name);
}

#[test]
fn an_unknown_bf16_kernel_cap_is_refused() {
    assert_env_refused("VLK_CPU_BF16", "amxx");
}

#[test]
fn an_unknown_simd_cap_is_refused() {
    assert_env_refused("VLK_CPU_SIMD", "avx1024");
}

#[test]
fn a_malformed_weight_cache_budget_is_refused() {
    assert_env_refused("VLK_CPU_WEIGHT_CACHE_MB", "2G");
}

#[test]
fn a_malformed_spin_window_is_refused() {
    assert_env_refused("VLK_CPU_SPIN_US", "-1");
}

/// `vlk bench --suite quick` with more arguments.
fn bench_quick(args: &[&str]) -> Output {
    vlk(&[&["bench", "--suite", "quick"], args].concat())
}

#[test]
fn bench_quick_suite_reports_every_workload_with_a_rate() {
    let listed = bench_quick(&["--list"]);
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    let out = bench_quick(&["--json", "--repeats", "3", "--budget", "0.05"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is exactly one JSON value");
    let rows = v["rows"].as_array().expect("rows");
    let got: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
    for r in rows {
        let (ms, rate, share) = (r["vlk"]["ms"].as_f64(), r["rate"].as_f64(), r["pct_of_ceiling"].as_f64());
        assert!(ms > Some(0.0) && rate > Some(0.0) && share > Some(0.0), "{r}");
        assert!(r["vlk"]["ms_p10"].as_f64() <= ms && ms <= r["vlk"]["ms_p90"].as_f64(), "{r}");
        assert!(r["flops"].as_f64() > Some(0.0) || r["bytes"].as_f64() > Some(0.0), "{r}");
        // Byte rows are held against a bandwidth timed beside them: the read rate for the row
        // that only reads (softmax-xent forward), the copy rate for the others.
        if r["bytes"].as_f64().is_some() {
            let (read, copy) = (r["read_gb_per_s_beside"].as_f64(), r["copy_gb_per_s_beside"].as_f64());
            let xent_forward = r["name"].as_str().is_some_and(|n| n.starts_with("xent_fwd"));
            assert_eq!((read.is_some(), copy.is_some()), (xent_forward, !xent_forward), "{r}");
            let beside = read.or(copy).unwrap();
            let want = 100.0 * r["rate"].as_f64().unwrap() / beside;
            assert!((share.unwrap() - want).abs() < 1e-6 * want, "{r}");
        }
    }
    assert!(v["ceiling"]["fma_gflops_all_threads"].as_f64() > Some(0.0), "{v}");
}

#[test]
fn bench_runs_kernels_through_the_emulator() {
    let out = bench_quick(&[
        "--device",
        "emu",
        "--only",
        "gemm",
        "--only",
        "attn_fwd",
        "--json",
        "--repeats",
        "3",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON value");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{v}");
    assert!(
        rows.iter().all(|r| r["device"] == "emu" && r["vlk"]["ms"].as_f64() > Some(0.0)),
        "{v}"
    );
}

#[test]
fn bench_vs_torch_names_the_missing_piece() {
    let out = bench_quick(&["--only", "copy", "--vs", "torch", "--python", "/nonexistent/python3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/python3") && err.contains("--python"), "{err}");
    // python3 itself: without torch the script says how to install it; with torch the row has a ratio.
    let out = bench_quick(&["--only", "copy", "--vs", "torch", "--python", "python3", "--json", "--repeats", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON value");
        assert!(v["rows"][0]["torch"]["torch"]["ratio_vlk_over_torch"].as_f64() > Some(0.0), "{v}");
    } else {
        assert!(err.contains("cannot import torch") && err.contains("pip install torch"), "{err}");
    }
}

/// Trains a tiny text-to-image model on `shapes` at the CLIP fixture's 16-pixel size (so its
/// evaluation runs), returns the run directory.
fn tiny_diffusion_run(name: &str) -> Scratch {
    let run = scratch(name);
    let clip = fixture("clip-f16");
    let out = vlk(&[
        "diffusion",
        "train",
        "--clip",
        clip.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "3",
        "--batch",
        "4",
        "--width",
        "16",
        "--heads",
        "2",
        "--layers",
        "1",
        "--image-size",
        "16",
        "--patch-size",
        "8",
        "--eval-per-prompt",
        "1",
        "--checkpoint-every",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("held-out pairs: CLIP reads colour"), "{stdout}");
    run
}

#[test]
fn diffusion_train_then_sample_writes_a_grid_and_images() {
    let run = tiny_diffusion_run("diffusion-e2e");
    let model = run.join("model");
    for f in [
        "config.json",
        "model.safetensors",
        "scheduler_config.json",
        "text_encoder/tokenizer.json",
    ] {
        assert!(model.join(f).is_file(), "missing {f}");
    }
    for f in ["training.png", "samples.png", "metrics.json"] {
        assert!(run.join("report").join(f).is_file(), "missing report/{f}");
    }
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("report/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["summary"]["final"]["held_out"]["images"], 8);
    let (grid, each) = (run.join("grid.png"), run.join("each"));
    let out = vlk(&[
        "diffusion",
        "sample",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red circle",
        "--prompt",
        "a blue star",
        "--n",
        "3",
        "--steps",
        "4",
        "--sampler",
        "ddpm",
        "--out",
        grid.to_str().unwrap(),
        "--out-dir",
        each.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(image::open(&grid).is_ok());
    let files: Vec<_> = std::fs::read_dir(&each).unwrap().flatten().collect();
    assert_eq!(files.len(), 6);
    let one = image::open(each.join("01-a-blue-star-02.png")).unwrap();
    assert_eq!((one.width(), one.height()), (16, 16));
    // Resuming a finished run is refused without --resume, and --resume on a fresh directory too.
    let out = vlk(&[
        "diffusion",
        "train",
        "--clip",
        fixture("clip-f16").to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "already has checkpoints");
}

#[test]
fn diffusion_bad_input_is_one_line_and_a_non_zero_exit() {
    let run = tiny_diffusion_run("diffusion-bad");
    let model = run.join("model");
    let m = model.to_str().unwrap();
    let grid = run.join("g.png");
    let g = grid.to_str().unwrap();
    assert_clean_failure(&vlk(&["diffusion", "sample", "--model", m, "--out", g]), "no prompts");
    assert_clean_failure(
        &vlk(&["diffusion", "sample", "--model", m, "--prompt", "a", "--guidance", "-1", "--out", g]),
        "--guidance",
    );
    assert_clean_failure(
        &vlk(&["diffusion", "sample", "--model", m, "--prompt", "a", "--steps", "0", "--out", g]),
        "--steps",
    );
    assert_clean_failure(
        &vlk(&["diffusion", "sample", "--model", m, "--prompt", "a", "--steps", "5000", "--out", g]),
        "inference steps",
    );
    assert_clean_failure(
        &vlk(&[
            "diffusion",
            "sample",
            "--model",
            m,
            "--prompt",
            "a",
            "--sampler",
            "euler",
            "--out",
            g,
        ]),
        "unknown sampler",
    );
    // A CLIP whose text tower is 48 wide cannot condition a model trained on a 32-wide one.
    let other = run.join("other-clip");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("clip-quickgelu").join(f), other.join(f)).unwrap();
    }
    std::fs::copy(fixture("clip-f16").join("tokenizer.json"), other.join("tokenizer.json")).unwrap();
    let out = vlk(&[
        "diffusion",
        "sample",
        "--model",
        m,
        "--prompt",
        "a",
        "--text-encoder",
        other.to_str().unwrap(),
        "--out",
        g,
    ]);
    assert_clean_failure(&out, "expects 77 x 32");
    assert!(!grid.exists(), "no grid after a failure");
    assert_clean_failure(
        &vlk(&["diffusion", "train", "--out", run.join("new").to_str().unwrap()]),
        "--clip DIR is required",
    );
    assert_clean_failure(
        &vlk(&["diffusion", "train", "--out", run.join("new2").to_str().unwrap(), "--resume"]),
        "no checkpoint",
    );
    assert_clean_failure(
        &vlk(&["diffusion", "sample", "--model", run.to_str().unwrap(), "--prompt", "a", "--out", g]),
        "config.json",
    );
}

/// Trains a tiny VQA model on `shapes` for a few steps and returns the run directory.
fn tiny_vqa_run(name: &str) -> Scratch {
    let run = scratch(name);
    let out = vlk(&[
        "vqa",
        "train",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "3",
        "--batch",
        "4",
        "--width",
        "16",
        "--heads",
        "2",
        "--decoder-layers",
        "1",
        "--vision-layers",
        "1",
        "--image-size",
        "16",
        "--patch-size",
        "8",
        "--eval-images",
        "10",
        "--checkpoint-every",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("held_out: exact match"), "{stdout}");
    run
}

#[test]
fn vqa_and_caption_answer_in_json_and_refuse_bad_input() {
    let run = tiny_vqa_run("vqa-e2e");
    let model = run.join("model");
    let m = model.to_str().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"] {
        assert!(model.join(f).is_file(), "missing {f}");
    }
    let image = run.join("x.png");
    write_image(&image, 20, 16, [220, 30, 30]);
    let img = image.to_str().unwrap();
    let out = vlk(&[
        "vqa",
        "--model",
        m,
        "--image",
        img,
        "--question",
        "what colour is the circle?",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["answer"].is_string() && v["log_prob"].is_number(), "{v}");
    let out = vlk(&["caption", "--model", m, "--image", img, "--beam", "3", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["caption"].is_string(), "{v}");
    // An over-long question is cut with a warning, not refused.
    let long = "what colour is the circle ".repeat(20) + "?";
    let out = vlk(&["vqa", "--model", m, "--image", img, "--question", &long, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: the question is longer"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["truncated_question"], true);
    assert_clean_failure(
        &vlk(&["vqa", "--model", m, "--image", img, "--question", "  "]),
        "question is empty",
    );
    assert_clean_failure(&vlk(&["vqa", "--model", m, "--image", img]), "--question");
    let broken = run.join("broken.png");
    std::fs::write(&broken, b"not an image").unwrap();
    assert_clean_failure(
        &vlk(&["vqa", "--model", m, "--image", broken.to_str().unwrap(), "--question", "what?"]),
        "broken.png",
    );
    assert_clean_failure(
        &vlk(&["caption", "--model", m, "--image", run.join("none.png").to_str().unwrap()]),
        "none.png",
    );
    assert_clean_failure(&vlk(&["caption", "--model", run.to_str().unwrap(), "--image", img]), "config.json");
    // The eval subcommand scores the model per question type.
    let out = vlk(&["vqa", "eval", "--model", m, "--n", "10", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["held_out"]["overall"]["questions"], 10);
    let out = vlk(&["caption", "eval", "--model", m, "--n", "10", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["seen"]["bleu4"].is_number());
}

#[test]
fn vqa_train_on_a_folder_and_resume() {
    let dir = scratch("vqa-folder");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_image(&data.join("r.png"), 24, 24, [220, 30, 30]);
    write_image(&data.join("b.png"), 24, 24, [30, 30, 220]);
    std::fs::write(
        data.join("vqa.jsonl"),
        "{\"image\": \"r.png\", \"question\": \"what colour is it?\", \"answer\": \"red\"}\n\
         {\"image\": \"b.png\", \"question\": \"what colour is it?\", \"answer\": \"blue\"}\n\
         {\"image\": \"missing.png\", \"question\": \"q\", \"answer\": \"a\"}\n\
         not json\n",
    )
    .unwrap();
    let run = dir.join("run");
    let args = |steps: &str| {
        vec![
            "vqa".to_string(),
            "train".into(),
            "--data".into(),
            data.to_str().unwrap().into(),
            "--out".into(),
            run.to_str().unwrap().into(),
            "--steps".into(),
            steps.into(),
            "--batch".into(),
            "2".into(),
            "--width".into(),
            "16".into(),
            "--heads".into(),
            "2".into(),
            "--decoder-layers".into(),
            "1".into(),
            "--vision-layers".into(),
            "1".into(),
            "--image-size".into(),
            "16".into(),
            "--patch-size".into(),
            "8".into(),
            "--checkpoint-every".into(),
            "1".into(),
        ]
    };
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let a = args("2");
    let out = vlk(&refs(&a));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 bad rows skipped"));
    let mut again = args("2");
    again.push("--resume".into());
    let out = vlk(&refs(&again));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = vlk(&[
        "caption",
        "train",
        "--out",
        run.to_str().unwrap(),
        "--resume",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "this run trains vqa");
}
