//! Strided copies (making views contiguous, writing into views) and dtype casts.

use super::float::filled;
use super::stream::Writer;
use super::vmath::{narrow_bf16, widen};
use super::{map_storage, CpuStorage};
use crate::{DType, Error, Layout, Result};
use half::f16;
use rayon::prelude::*;
use std::mem::MaybeUninit;

fn gather_vec<T: Copy + Send + Sync>(v: &[T], layout: &Layout) -> Vec<T> {
    if let Some((start, end)) = layout.contiguous_range() {
        return copied(&v[start..end]);
    }
    if layout.strides().last() == Some(&0) {
        return gather_broadcast(v, layout);
    }
    let (outer, block) = layout.blocks();
    let rank = layout.rank();
    if block == 1 && rank >= 2 {
        return gather_tiled(v, layout);
    }
    if block == 1 {
        return layout.offsets().map(|o| v[o]).collect();
    }
    gather_blocks(v, block, &outer)
}

/// Elements below which a gather stays on the calling thread.
const PARALLEL_GATHER: usize = 1 << 15;

/// A copy of `src`, in parallel shares when large (one thread's memcpy moved 256 MiB at half
/// the rate two reach), streamed past the cache when very large.
fn copied<T: Copy + Send + Sync>(src: &[T]) -> Vec<T> {
    let writer = Writer::for_output::<T>(src.len());
    let copy = |dst: &mut [MaybeUninit<T>], first: usize| {
        writer.copy(dst, &src[first..first + dst.len()]);
        writer.finish();
    };
    // SAFETY: copy writes every element of each share.
    unsafe { filled_in_shares(src.len(), 8 * PARALLEL_GATHER, copy) }
}

/// The `block` elements from each of `starts` in turn (a view whose last dims are contiguous in
/// runs of `block`, such as attention heads permuted back to [B, S, H, D]), in parallel shares
/// of whole blocks when large: [64, 17, 4, 32] from [64, 4, 17, 32], 4352 runs of 32, took 83 us
/// on one thread inside a training step.
fn gather_blocks<T: Copy + Send + Sync>(v: &[T], block: usize, starts: &[usize]) -> Vec<T> {
    let len = block * starts.len();
    let copy = |dst: &mut [MaybeUninit<T>], first: usize| {
        for (d, &s) in dst.chunks_mut(block).zip(&starts[first..]) {
            let src = &v[s..s + block];
            // SAFETY: d holds block elements (dst is whole blocks) and src is in bounds.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), d.as_mut_ptr() as *mut T, block) };
        }
    };
    // SAFETY: shares are whole blocks, and copy writes every block of each.
    unsafe { filled_in_shares(len, PARALLEL_GATHER.div_ceil(block) * block, |dst, first| copy(dst, first / block)) }
}

/// A Vec of `len` elements written by `write(dst, first)`, where dst is output elements first..:
/// on the calling thread below 2 * PARALLEL_GATHER elements, else in parallel shares of `share`.
///
/// # Safety
/// `write` must initialise every element of each dst it is given.
unsafe fn filled_in_shares<T: Send>(len: usize, share: usize, write: impl Fn(&mut [MaybeUninit<T>], usize) + Sync) -> Vec<T> {
    // SAFETY: the shares cover the output, and the caller's write initialises each.
    unsafe {
        filled(len, |out| {
            if len < 2 * PARALLEL_GATHER {
                write(out, 0)
            } else {
                out.par_chunks_mut(share).enumerate().for_each(|(i, dst)| write(dst, i * share))
            }
        })
    }
}

/// Gather of a view whose last dim is a broadcast (stride 0: a scalar or a column expanded, as
/// the backward of a sum or a mean makes): each row of the output is one value repeated, filled
/// in parallel shares when large. Element by element, [1088, 512] from a scalar took 2.9 ms.
fn gather_broadcast<T: Copy + Send + Sync>(v: &[T], layout: &Layout) -> Vec<T> {
    let rank = layout.rank();
    let (shape, strides) = (layout.shape(), layout.strides());
    let cols = shape[rank - 1];
    let len = layout.elem_count();
    if len == 0 {
        return Vec::new();
    }
    let rows = Layout::new(shape[..rank - 1].to_vec(), strides[..rank - 1].to_vec(), layout.offset());
    let starts: Vec<usize> = rows.offsets().collect();
    // Elements first.. of the output, however many dst holds.
    let fill = |dst: &mut [MaybeUninit<T>], first: usize| {
        let mut at = first;
        let mut rest = dst;
        while !rest.is_empty() {
            let take = (cols - at % cols).min(rest.len());
            let (run, tail) = rest.split_at_mut(take);
            run.fill(MaybeUninit::new(v[starts[at / cols]]));
            (at, rest) = (at + take, tail);
        }
    };
    // SAFETY: fill writes every element of each share.
    unsafe { filled_in_shares(len, PARALLEL_GATHER, fill) }
}

/// Gather of a view whose last dim is strided (a transpose, as weight gradients often are): each
/// [rows, cols] matrix of the last two dims is copied in TILE x TILE tiles, so reads and writes
/// both stay within a few cache lines instead of one of them striding through memory.
fn gather_tiled<T: Copy>(v: &[T], layout: &Layout) -> Vec<T> {
    const TILE: usize = 32;
    let rank = layout.rank();
    let (shape, strides) = (layout.shape(), layout.strides());
    let (rows, cols, rs, cs) = (shape[rank - 2], shape[rank - 1], strides[rank - 2], strides[rank - 1]);
    let outer = Layout::new(shape[..rank - 2].to_vec(), strides[..rank - 2].to_vec(), layout.offset());
    let mut out = Vec::with_capacity(layout.elem_count());
    if layout.elem_count() == 0 {
        return out;
    }
    for base in outer.offsets() {
        let start = out.len();
        out.resize(start + rows * cols, v[base]);
        let dst = &mut out[start..];
        for i0 in (0..rows).step_by(TILE) {
            for j0 in (0..cols).step_by(TILE) {
                for i in i0..(i0 + TILE).min(rows) {
                    for j in j0..(j0 + TILE).min(cols) {
                        dst[i * cols + j] = v[base + i * rs + j * cs];
                    }
                }
            }
        }
    }
    out
}

fn scatter_vec<T: Copy>(src: &[T], src_layout: &Layout, dst: &mut [T], dst_layout: &Layout) {
    if let (Some((s0, s1)), Some((d0, _))) = (src_layout.contiguous_range(), dst_layout.contiguous_range()) {
        dst[d0..d0 + (s1 - s0)].copy_from_slice(&src[s0..s1]);
        return;
    }
    for (s, d) in src_layout.offsets().zip(dst_layout.offsets()) {
        dst[d] = src[s];
    }
}

impl CpuStorage {
    /// The elements a view selects, as a new contiguous storage.
    pub fn gather(&self, layout: &Layout) -> CpuStorage {
        map_storage!(self, v => gather_vec(v, layout))
    }
}

pub fn scatter(src: &CpuStorage, src_layout: &Layout, dst: &mut CpuStorage, dst_layout: &Layout) -> Result<()> {
    if src_layout.shape() != dst_layout.shape() {
        return Err(Error::shape(
            "copy_into",
            format!("source {:?} vs destination {:?}", src_layout.shape(), dst_layout.shape()),
        ));
    }
    match (src, dst) {
        (CpuStorage::F32(s), CpuStorage::F32(d)) => scatter_vec(s, src_layout, d, dst_layout),
        (CpuStorage::F64(s), CpuStorage::F64(d)) => scatter_vec(s, src_layout, d, dst_layout),
        (CpuStorage::F16(s), CpuStorage::F16(d)) => scatter_vec(s, src_layout, d, dst_layout),
        (CpuStorage::BF16(s), CpuStorage::BF16(d)) => scatter_vec(s, src_layout, d, dst_layout),
        (CpuStorage::I64(s), CpuStorage::I64(d)) => scatter_vec(s, src_layout, d, dst_layout),
        (CpuStorage::U32(s), CpuStorage::U32(d)) => scatter_vec(s, src_layout, d, dst_layout),
        (s, d) => {
            return Err(Error::dtype(
                "copy_into",
                format!("source is {}, destination {}", s.dtype(), d.dtype()),
            ))
        }
    }
    Ok(())
}

/// Converts a contiguous storage to `dtype` (floats round to nearest even; float to integer
/// truncates toward zero, as `as` does).
pub fn cast(src: &CpuStorage, dtype: DType) -> CpuStorage {
    if src.dtype() == dtype {
        return src.clone();
    }
    match (src, dtype) {
        (CpuStorage::F32(v), DType::F16) => CpuStorage::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        (CpuStorage::F32(v), DType::BF16) => CpuStorage::BF16(narrow_bf16(v)),
        (CpuStorage::F16(v), DType::F32) => CpuStorage::F32(widen(v)),
        (CpuStorage::BF16(v), DType::F32) => CpuStorage::F32(widen(v)),
        (CpuStorage::I64(v), DType::U32) => CpuStorage::U32(v.iter().map(|&x| x as u32).collect()),
        (CpuStorage::U32(v), DType::I64) => CpuStorage::I64(v.iter().map(|&x| x as i64).collect()),
        (src, dtype) => CpuStorage::from_f64(&src.to_f64_vec(), dtype),
    }
}
