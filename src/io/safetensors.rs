//! Loading and saving tensors in the safetensors format (f32, f16, bf16, f64, i64, u32), with
//! errors that name the file and tensor. Saving is atomic (see [`super::write_atomic`]).

use crate::backend::CpuStorage;
use crate::nn::ParamStore;
use crate::{DType, Device, Error, Result, Tensor};
use half::{bf16, f16};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

fn to_st_dtype(d: DType) -> StDtype {
    match d {
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::I64 => StDtype::I64,
        DType::U32 => StDtype::U32,
    }
}

fn from_bytes<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    // pod_collect_to_vec copies, so unaligned file data is fine.
    bytemuck::pod_collect_to_vec(bytes)
}

fn storage_from_view(path: &Path, name: &str, view: &TensorView) -> Result<CpuStorage> {
    let data = view.data();
    Ok(match view.dtype() {
        StDtype::F32 => CpuStorage::F32(from_bytes::<f32>(data)),
        StDtype::F64 => CpuStorage::F64(from_bytes::<f64>(data)),
        StDtype::F16 => CpuStorage::F16(from_bytes::<u16>(data).into_iter().map(f16::from_bits).collect()),
        StDtype::BF16 => CpuStorage::BF16(from_bytes::<u16>(data).into_iter().map(bf16::from_bits).collect()),
        StDtype::I64 => CpuStorage::I64(from_bytes::<i64>(data)),
        StDtype::U32 => CpuStorage::U32(from_bytes::<u32>(data)),
        other => {
            return Err(Error::file(
                path,
                format!("tensor '{name}' has unsupported dtype {other:?} (vlk reads f32, f16, bf16, f64, i64, u32)"),
            ))
        }
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| Error::file(path, format!("not a valid safetensors file (truncated or corrupt?): {e}")))
}

/// Every tensor of a file, by name, on `device`, in the dtype it was stored in.
pub fn load(path: impl AsRef<Path>, device: Device) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    let st = parse(path, &bytes)?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let storage = storage_from_view(path, &name, &view)?;
        out.insert(name.clone(), Tensor::from_cpu_storage(storage, view.shape(), device)?);
    }
    Ok(out)
}

/// Saves named tensors (converted to their own dtype's bytes) atomically.
pub fn save(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<()> {
    save_with_metadata(path, tensors, None)
}

pub fn save_with_metadata(path: impl AsRef<Path>, tensors: &[(String, Tensor)], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let path = path.as_ref();
    let host: Vec<(String, CpuStorage, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_cpu_storage()?, t.dims().to_vec())))
        .collect::<Result<_>>()?;
    let views = host
        .iter()
        .map(|(n, s, shape)| {
            let view = TensorView::new(to_st_dtype(s.dtype()), shape.clone(), s.as_bytes())
                .map_err(|e| Error::file(path, format!("tensor '{n}': {e}")))?;
            Ok((n.as_str(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, metadata).map_err(|e| Error::file(path, format!("cannot serialise: {e}")))?;
    super::write_atomic(path, &bytes)
}

/// Options of [`load_into`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Tolerate tensors in the file that the store does not have.
    pub allow_unused: bool,
    /// Refuse files holding a tensor stored in a dtype outside this list.
    pub dtypes: Option<&'static [DType]>,
}

/// Fills every parameter of `store` from the file, converting dtypes; errors name the tensor
/// that is missing or whose shape differs (with both shapes). Returns the names in the file
/// that the store did not use.
pub fn load_into(store: &ParamStore, path: impl AsRef<Path>, opts: LoadOptions) -> Result<Vec<String>> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    let st = parse(path, &bytes)?;
    let names: std::collections::HashSet<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    if let Some(allowed) = opts.dtypes {
        for (name, view) in st.tensors() {
            if !allowed.iter().any(|&d| to_st_dtype(d) == view.dtype()) {
                let list: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
                return Err(Error::file(
                    path,
                    format!("tensor '{name}' is {:?}; this model reads {}", view.dtype(), list.join(", ")),
                ));
            }
        }
    }
    // Check everything before writing anything, so a bad file leaves the store untouched.
    let mut pending = Vec::new();
    for (name, param) in store.named() {
        let view = st.tensor(&name).map_err(|_| Error::Checkpoint {
            msg: format!("{}: missing tensor '{name}' (shape {:?})", path.display(), param.dims()),
        })?;
        if view.shape() != param.dims() {
            return Err(Error::Checkpoint {
                msg: format!(
                    "{}: tensor '{name}' has shape {:?}, the model expects {:?}",
                    path.display(),
                    view.shape(),
                    param.dims()
                ),
            });
        }
        let storage = storage_from_view(path, &name, &view)?;
        pending.push((param, Tensor::from_cpu_storage(storage, view.shape(), Device::Cpu)?));
    }
    for (param, value) in pending {
        param.assign(&value)?;
    }
    let used: std::collections::HashSet<String> = store.named().into_iter().map(|(n, _)| n).collect();
    let mut unused: Vec<String> = names.difference(&used).cloned().collect();
    unused.sort();
    if !opts.allow_unused && !unused.is_empty() {
        return Err(Error::Checkpoint {
            msg: format!("{}: unexpected tensors {:?}", path.display(), unused),
        });
    }
    Ok(unused)
}
