//! Packed B panels of constant GEMM operands, kept for reuse. When a product's B is constant (a
//! weight in inference, or a frozen layer: no gradient flows to it), the GEMM packs all of B once,
//! from its second use on, and keeps the panels beside B's storage (`Derived`); later products
//! read them instead of packing B again. For x W^T that packing is a transpose of every weight
//! element per call: 38% of a ViT-B/32 forward at batch 1 and 9% at batch 8 (measured by skipping
//! it). The panels go when the storage is dropped or written (an optimiser step), and all kept
//! panels together stay within `VLK_CPU_WEIGHT_CACHE_MB` (default 2048; 0 keeps none), past which
//! products pack B per call as before.

use super::env_whole_number;
use super::gemm::{workspace, MicroKernel, Operands};
use crate::backend::Derived;
use crate::Result;
use rayon::prelude::*;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Bytes held by all kept panels.
static HELD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SUSPENDED: Cell<bool> = const { Cell::new(false) };
}

/// Which B a set of panels packs, and for which kernel: the kernel fixes the panel width, the
/// packed element and the K slices.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct PackKey {
    kernel: &'static str,
    /// Offset, row stride and column stride of B in its storage.
    b: [usize; 3],
    k: usize,
    n: usize,
}

/// All of one B, packed as the GEMM packs a column block: per K slice, every nr-column panel in
/// order, so any panel-aligned column block of a slice is one contiguous run.
pub(super) struct PackedB {
    key: PackKey,
    /// Where each K slice's panels start, in packed elements.
    slice_starts: Vec<usize>,
    words: Vec<u64>,
}

impl PackedB {
    /// `len` packed elements of K slice `slice` from panel `first_panel` on (`panel_len` elements
    /// per panel).
    pub(super) fn block<P: bytemuck::Pod>(&self, slice: usize, first_panel: usize, panel_len: usize, len: usize) -> &[P] {
        let start = self.slice_starts[slice] + first_panel * panel_len;
        &bytemuck::cast_slice::<u64, P>(&self.words)[start..start + len]
    }
}

impl Drop for PackedB {
    fn drop(&mut self) {
        HELD.fetch_sub(self.words.len() * 8, Ordering::Relaxed);
    }
}

/// The budget when `VLK_CPU_WEIGHT_CACHE_MB` is unset.
const DEFAULT_BUDGET_MB: u64 = 2048;

/// `VLK_CPU_WEIGHT_CACHE_MB`: the most MiB of packed panels to keep (default 2048, 0 for none).
/// Anything but a whole number is an error naming the variable.
pub fn env_budget_mb() -> Result<u64> {
    env_whole_number("VLK_CPU_WEIGHT_CACHE_MB", DEFAULT_BUDGET_MB, "MiB (0 keeps no packed weights)")
}

/// The budget in bytes (read once; an invalid value, which the `vlk` binary rejects at start,
/// keeps the default here).
fn budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| (env_budget_mb().unwrap_or(DEFAULT_BUDGET_MB) as usize) << 20)
}

/// Runs `f` with kept panels neither used nor made on this thread: for measuring the GEMM
/// itself, as a product of operands it has not seen.
pub fn without_kept_panels<R>(f: impl FnOnce() -> R) -> R {
    let before = SUSPENDED.with(|s| s.replace(true));
    let out = f();
    SUSPENDED.with(|s| s.set(before));
    out
}

/// Bytes of packed panels kept now, across all storages.
pub fn kept_bytes() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Whether a product with this B (its storage's `Derived`, when B is constant) should use kept
/// panels: counts the use, and says yes from the second one on.
pub(super) fn wanted(derived: Option<&Derived>) -> Option<&Derived> {
    let derived = derived?;
    if SUSPENDED.with(Cell::get) || budget() == 0 {
        return None;
    }
    (derived.note_use() >= 2).then_some(derived)
}

/// The kept panels of `ops`' B for `uk`, packing and keeping them if they are not kept yet; None
/// where they would not fit in the budget.
pub(super) fn get_or_pack<P, C, O>(derived: &Derived, ops: &O, uk: &MicroKernel<P, C>, k: usize, n: usize) -> Option<Arc<PackedB>>
where
    P: bytemuck::Pod + Send + Sync,
    O: Operands<P>,
{
    let key = PackKey {
        kernel: uk.name,
        b: ops.b_place(),
        k,
        n,
    };
    derived.get_or_build(|kept: &PackedB| kept.key == key, || pack_all(key, ops, uk.nr))
}

/// Packs every K slice of B into nr-column panels, panels in parallel; None past the budget.
fn pack_all<P, O>(key: PackKey, ops: &O, nr: usize) -> Option<PackedB>
where
    P: bytemuck::Pod + Send + Sync,
    O: Operands<P>,
{
    let (k, n) = (key.k, key.n);
    let panels = n.div_ceil(nr);
    let slices: Vec<_> = (0..k).step_by(ops.k_slice()).map(|pc| pc..(pc + ops.k_slice()).min(k)).collect();
    let mut slice_starts = Vec::with_capacity(slices.len());
    let mut len = 0;
    for ks in &slices {
        slice_starts.push(len);
        len += panels * nr * ops.depth(ks.len());
    }
    let bytes = (len * std::mem::size_of::<P>()).div_ceil(8) * 8;
    let reserved = HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
        (held + bytes <= budget()).then_some(held + bytes)
    });
    reserved.ok()?;
    let mut words = Vec::new();
    let all = workspace::<P>(&mut words, len);
    for (ks, &start) in slices.iter().zip(&slice_starts) {
        let panel_len = nr * ops.depth(ks.len());
        all[start..start + panels * panel_len]
            .par_chunks_mut(panel_len)
            .enumerate()
            .for_each(|(p, dst)| ops.pack_b(nr, p * nr..(p * nr + nr).min(n), ks.clone(), dst));
    }
    Some(PackedB { key, slice_starts, words })
}
