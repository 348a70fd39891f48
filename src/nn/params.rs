//! The parameter store: every trainable tensor under a dotted name
//! (`vision_model.encoder.layers.0.self_attn.q_proj.weight`), created through scopes so a model's
//! construction code spells the same names a Hugging Face checkpoint uses.

use super::Init;
use crate::{DType, Device, Error, Result, Rng, Tensor};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

struct StoreInner {
    params: BTreeMap<String, Tensor>,
    rng: Rng,
}

/// Shared handle to a set of named parameters on one device and dtype.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<StoreInner>>,
    device: Device,
    dtype: DType,
}

impl ParamStore {
    /// An empty store; `seed` drives every initialiser, in creation order.
    pub fn new(device: Device, dtype: DType, seed: u64) -> Self {
        ParamStore {
            inner: Arc::new(Mutex::new(StoreInner {
                params: BTreeMap::new(),
                rng: Rng::new(seed),
            })),
            device,
            dtype,
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The scope with no prefix.
    pub fn root(&self) -> Scope {
        Scope {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.lock().params.get(name).cloned()
    }

    /// All parameters, sorted by name.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        self.lock().params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total number of scalars.
    pub fn num_elements(&self) -> usize {
        self.lock().params.values().map(|t| t.elem_count()).sum()
    }

    fn get_or_create(&self, name: String, shape: &[usize], init: Init) -> Result<Tensor> {
        let mut inner = self.lock();
        if let Some(t) = inner.params.get(&name) {
            if t.dims() != shape {
                return Err(Error::shape(
                    "param",
                    format!("'{name}' exists with shape {:?}, requested {shape:?}", t.dims()),
                ));
            }
            return Ok(t.clone());
        }
        let t = init.tensor(&mut inner.rng, shape, self.dtype, self.device)?.to_var()?;
        inner.params.insert(name, t.clone());
        Ok(t)
    }
}

/// A prefix within a store.
#[derive(Clone)]
pub struct Scope {
    store: ParamStore,
    prefix: String,
}

impl Scope {
    /// The sub-scope `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Scope {
        Scope {
            store: self.store.clone(),
            prefix: self.path(&name.to_string()),
        }
    }

    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The parameter `prefix.name`, created with `init` the first time.
    pub fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.store.get_or_create(self.path(name), shape, init)
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }
}
