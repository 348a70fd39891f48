//! Bad checkpoints give errors that name the file, the tensor and the shapes, and saving never
//! destroys the previous file.

mod common;

use common::Scratch;
use std::path::PathBuf;
use vlk::io::safetensors::{load, load_into, save, LoadOptions};
use vlk::nn::{Init, ParamStore};
use vlk::{DType, Device, Tensor};

/// `model.safetensors` in a fresh temporary directory, removed when the returned guard drops.
fn tmp(name: &str) -> (Scratch, PathBuf) {
    let dir = Scratch::new(name);
    let path = dir.join("model.safetensors");
    (dir, path)
}

fn store_with(shape: &[usize]) -> ParamStore {
    let store = ParamStore::new(Device::Cpu, DType::F32, 0);
    store.root().pp("layer").param("weight", shape, Init::Normal { std: 1.0 }).unwrap();
    store
}

#[test]
fn truncated_file_is_an_error_naming_the_file() {
    let (_dir, path) = tmp("truncated");
    save(&path, &store_with(&[8, 8]).named()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let e = load(&path, Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("not a valid safetensors file"),
        "{e}"
    );
    std::fs::write(&path, b"garbage").unwrap();
    let e = load_into(&store_with(&[8, 8]), &path, LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let (_dir, path) = tmp("shape");
    save(&path, &store_with(&[4, 3]).named()).unwrap();
    let target = store_with(&[3, 4]);
    let before = target.get("layer.weight").unwrap().to_vec::<f32>().unwrap();
    let e = load_into(&target, &path, LoadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("'layer.weight'") && e.contains("[4, 3]") && e.contains("[3, 4]"), "{e}");
    assert_eq!(
        target.get("layer.weight").unwrap().to_vec::<f32>().unwrap(),
        before,
        "a failed load changes nothing"
    );
}

#[test]
fn missing_and_unexpected_tensors() {
    let (_dir, path) = tmp("missing");
    save(&path, &store_with(&[2]).named()).unwrap();
    let target = ParamStore::new(Device::Cpu, DType::F32, 0);
    target.root().param("other.bias", &[2], Init::Zeros).unwrap();
    let e = load_into(&target, &path, LoadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("missing tensor 'other.bias'"), "{e}");
    let empty = ParamStore::new(Device::Cpu, DType::F32, 0);
    let e = load_into(&empty, &path, LoadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("unexpected tensors") && e.contains("layer.weight"), "{e}");
    assert_eq!(
        load_into(
            &empty,
            &path,
            LoadOptions {
                allow_unused: true,
                ..Default::default()
            }
        )
        .unwrap(),
        vec!["layer.weight".to_string()]
    );
}

#[test]
fn unsupported_dtype_is_refused() {
    let (_dir, path) = tmp("dtype");
    // An int8 tensor, written with the safetensors crate directly.
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I8, vec![4], &[1u8, 2, 3, 4]).unwrap();
    let bytes = safetensors::serialize(vec![("layer.weight", view)], None).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let e = load(&path, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("'layer.weight'") && e.contains("unsupported dtype"), "{e}");
}

#[test]
fn dtypes_round_trip_and_save_is_atomic() {
    let (_dir, path) = tmp("roundtrip");
    let vals = vec![1.5f32, -2.25, 3.0, 0.125];
    let tensors: Vec<(String, Tensor)> = [DType::F32, DType::F16, DType::BF16, DType::F64]
        .iter()
        .map(|&d| {
            (
                format!("t_{d}"),
                Tensor::from_vec(vals.clone(), &[2, 2], Device::Cpu).unwrap().to_dtype(d).unwrap(),
            )
        })
        .chain([("ids".to_string(), Tensor::from_vec(vec![1i64, 2, 3], &[3], Device::Cpu).unwrap())])
        .collect();
    save(&path, &tensors).unwrap();
    let loaded = load(&path, Device::Cpu).unwrap();
    for (name, t) in &tensors {
        let l = &loaded[name];
        assert_eq!(l.dtype(), t.dtype());
        assert_eq!(l.to_f64_vec().unwrap(), t.to_f64_vec().unwrap(), "{name}");
    }
    // Saving into a path whose directory is a file fails, and the old checkpoint is intact.
    let blocker = path.parent().unwrap().join("file-not-dir");
    std::fs::write(&blocker, b"x").unwrap();
    assert!(save(blocker.join("model.safetensors"), &tensors).is_err());
    assert_eq!(load(&path, Device::Cpu).unwrap().len(), tensors.len());
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left behind");
}
