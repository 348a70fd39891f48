//! Define-by-run reverse-mode autograd. Each op that takes a tensor requiring gradients records
//! a [`Node`]: its inputs and a closure that maps the output's gradient to the inputs'. The
//! closure lives next to the op's forward (in src/ops/), so an op and its derivative are read
//! together. `loss.backward()` walks the nodes in reverse topological order and returns the
//! gradients of the variables in a [`Grads`] map; it never touches the parameters themselves.

use crate::tensor::TensorId;
use crate::{profile, Error, Result, Tensor};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// Maps dL/d(output) to dL/d(input) for each input (`None` where no gradient flows).
pub trait BackwardFn: Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static {}
impl<F: Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static> BackwardFn for F {}

pub(crate) struct Node {
    op: &'static str,
    inputs: Vec<Tensor>,
    backward: Box<dyn BackwardFn>,
}

impl Node {
    pub(crate) fn new(op: &'static str, inputs: Vec<Tensor>, backward: Box<dyn BackwardFn>) -> Self {
        Node { op, inputs, backward }
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// While alive, ops record nothing (inference, and the backward pass itself).
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    pub fn new() -> Self {
        NoGradGuard {
            previous: GRAD_ENABLED.with(|g| g.replace(false)),
        }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Runs `f` with recording on, even inside a no_grad scope.
pub fn with_grad<T>(f: impl FnOnce() -> T) -> T {
    let previous = GRAD_ENABLED.with(|g| g.replace(true));
    let out = f();
    GRAD_ENABLED.with(|g| g.set(previous));
    out
}

/// Runs `f` with recording off.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = NoGradGuard::new();
    f()
}

/// Gradients of the variables reached by a backward pass, keyed by tensor id.
#[derive(Default)]
pub struct Grads {
    map: HashMap<TensorId, Tensor>,
}

impl Grads {
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }
    pub fn insert(&mut self, t: &Tensor, grad: Tensor) {
        self.map.insert(t.id(), grad);
    }
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn topological_order(root: &Tensor) -> Vec<Tensor> {
    // Iterative DFS (deep graphs such as long training loops would overflow a recursive one).
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, children_done)) = stack.pop() {
        if children_done {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = t.node() {
            for input in &node.inputs {
                if input.requires_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

impl Tensor {
    /// Backward from a scalar (any shape with one element), seeding dL/dL = 1.
    pub fn backward(&self) -> Result<Grads> {
        if self.elem_count() != 1 {
            return Err(Error::shape(
                "backward",
                format!(
                    "backward() needs a single-element loss, got shape {:?}; use backward_with_grad",
                    self.dims()
                ),
            ));
        }
        self.backward_with_grad(&self.ones_like()?)
    }

    /// Backward seeded with an explicit gradient of self's shape.
    pub fn backward_with_grad(&self, seed: &Tensor) -> Result<Grads> {
        if seed.dims() != self.dims() {
            return Err(Error::shape(
                "backward",
                format!("seed gradient {:?} does not match output {:?}", seed.dims(), self.dims()),
            ));
        }
        if !self.requires_grad() {
            return Err(Error::msg(
                "backward: the tensor does not depend on any variable (was it computed under no_grad or from detached values?)",
            ));
        }
        let _profile = profile::scope("backward");
        let _guard = NoGradGuard::new();
        let order = topological_order(self);
        let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
        pending.insert(self.id(), seed.clone());
        let mut grads = Grads::default();
        for t in order.iter().rev() {
            let Some(grad) = pending.remove(&t.id()) else { continue };
            let Some(node) = t.node() else {
                if t.is_var() {
                    grads.map.insert(t.id(), grad);
                }
                continue;
            };
            let input_grads = {
                let _profile = profile::backward(node.op, &node.inputs);
                (node.backward)(&grad)?
            };
            if input_grads.len() != node.inputs.len() {
                return Err(Error::msg(format!(
                    "backward of {}: {} gradients for {} inputs",
                    node.op,
                    input_grads.len(),
                    node.inputs.len()
                )));
            }
            for (input, g) in node.inputs.iter().zip(input_grads) {
                let Some(g) = g else { continue };
                if !input.requires_grad() {
                    continue;
                }
                if g.dims() != input.dims() {
                    return Err(Error::shape(
                        "backward",
                        format!(
                            "{} produced a gradient of shape {:?} for an input of shape {:?}",
                            node.op,
                            g.dims(),
                            input.dims()
                        ),
                    ));
                }
                let g = match pending.remove(&input.id()) {
                    Some(acc) => acc.add(&g)?,
                    None => g,
                };
                pending.insert(input.id(), g);
            }
        }
        Ok(grads)
    }
}
