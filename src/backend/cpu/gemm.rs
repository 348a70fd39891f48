//! CPU matrix product C = A B for f32/f64 (F16/BF16 are widened to f32 first).
//!
//! Blocked GEMM in the Goto/BLIS style: C is cut into MC x NC tiles that threads share out; each
//! tile walks K in KC slices, packs its A slice into MR-row panels and its B slice into NR-column
//! panels (zero-padded, so edges need no special case), and runs an MR x NR register-tiled
//! micro-kernel over them. Packing accepts any strides, so transposed operands (as backward
//! passes use) cost nothing extra. The micro-kernel is compiled three times, for AVX-512,
//! AVX2+FMA and baseline x86-64/other, and picked at run time.
//! FLOPs: 2*m*n*k; the packed panels stay in L1 (B panel: KC*NR*4 = 16 KiB) and L2 (A block).

use super::float::{float_data, Float, FloatOut};
use super::CpuStorage;
use crate::{Error, Layout, Result};
use rayon::prelude::*;
use std::cell::RefCell;

pub const MR: usize = 8;
pub const NR: usize = 16;
const KC: usize = 256;
const MC: usize = 64;
const NC: usize = 512;

/// A strided matrix operand: element (i, j) is at data[offset + i*rs + j*cs].
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<T: Copy> MatRef<'_, T> {
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> T {
        self.data[self.offset + i * self.rs + j * self.cs]
    }
}

thread_local! {
    // Reused packing buffers (u64 words so f32 and f64 both fit aligned): no allocation per tile.
    static PACK_BUFFERS: RefCell<(Vec<u64>, Vec<u64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn pack_a<T: Float>(a: &MatRef<T>, rows: std::ops::Range<usize>, ks: std::ops::Range<usize>, out: &mut [T]) {
    let kc = ks.len();
    for (panel, r0) in rows.clone().step_by(MR).enumerate() {
        let dst = &mut out[panel * kc * MR..(panel + 1) * kc * MR];
        let valid = MR.min(rows.end - r0);
        for (p, k) in ks.clone().enumerate() {
            for i in 0..MR {
                dst[p * MR + i] = if i < valid { a.at(r0 + i, k) } else { T::ZERO };
            }
        }
    }
}

fn pack_b<T: Float>(b: &MatRef<T>, ks: std::ops::Range<usize>, cols: std::ops::Range<usize>, out: &mut [T]) {
    let kc = ks.len();
    for (panel, c0) in cols.clone().step_by(NR).enumerate() {
        let dst = &mut out[panel * kc * NR..(panel + 1) * kc * NR];
        let valid = NR.min(cols.end - c0);
        for (p, k) in ks.clone().enumerate() {
            for j in 0..NR {
                dst[p * NR + j] = if j < valid { b.at(k, c0 + j) } else { T::ZERO };
            }
        }
    }
}

/// C[mr x nr] += packed A panel x packed B panel over kc.
#[inline(always)]
unsafe fn micro_kernel<T: Float, const FUSED: bool>(kc: usize, a: *const T, b: *const T, c: *mut T, ldc: usize, mr: usize, nr: usize) {
    let mut acc = [[T::ZERO; NR]; MR];
    for p in 0..kc {
        let ap = a.add(p * MR);
        let bp = b.add(p * NR);
        for (i, row) in acc.iter_mut().enumerate() {
            let av = *ap.add(i);
            for (j, slot) in row.iter_mut().enumerate() {
                let bv = *bp.add(j);
                *slot = if FUSED { av.fma(bv, *slot) } else { av * bv + *slot };
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(mr) {
        for (j, &v) in row.iter().enumerate().take(nr) {
            *c.add(i * ldc + j) += v;
        }
    }
}

/// All micro-tiles of one packed (mc x kc) x (kc x nc) block.
#[inline(always)]
unsafe fn macro_kernel<T: Float, const FUSED: bool>(mc: usize, nc: usize, kc: usize, pa: *const T, pb: *const T, c: *mut T, ldc: usize) {
    for jr in (0..nc).step_by(NR) {
        for ir in (0..mc).step_by(MR) {
            micro_kernel::<T, FUSED>(kc, pa.add(ir * kc), pb.add(jr * kc), c.add(ir * ldc + jr), ldc, MR.min(mc - ir), NR.min(nc - jr));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn macro_kernel_avx512<T: Float>(mc: usize, nc: usize, kc: usize, pa: *const T, pb: *const T, c: *mut T, ldc: usize) {
    macro_kernel::<T, true>(mc, nc, kc, pa, pb, c, ldc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn macro_kernel_avx2<T: Float>(mc: usize, nc: usize, kc: usize, pa: *const T, pb: *const T, c: *mut T, ldc: usize) {
    macro_kernel::<T, true>(mc, nc, kc, pa, pb, c, ldc)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

pub fn detected_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

unsafe fn run_macro_kernel<T: Float>(isa: Isa, mc: usize, nc: usize, kc: usize, pa: *const T, pb: *const T, c: *mut T, ldc: usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => macro_kernel_avx512(mc, nc, kc, pa, pb, c, ldc),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => macro_kernel_avx2(mc, nc, kc, pa, pb, c, ldc),
        _ => macro_kernel::<T, false>(mc, nc, kc, pa, pb, c, ldc),
    }
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// Through a method, so closures capture the Send wrapper rather than the raw field.
    fn get(&self) -> *mut T {
        self.0
    }
}

/// One C tile: rows `rows`, columns `cols`, all of K.
fn gemm_tile<T: Float>(isa: Isa, a: &MatRef<T>, b: &MatRef<T>, k: usize, c: SendPtr<T>, ldc: usize, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
    PACK_BUFFERS.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let words = |n: usize| (n * std::mem::size_of::<T>()).div_ceil(8);
        let a_len = rows.len().div_ceil(MR) * MR * KC;
        let b_len = cols.len().div_ceil(NR) * NR * KC;
        let (ba, bb) = &mut *bufs;
        if ba.len() < words(a_len) {
            ba.resize(words(a_len), 0);
        }
        if bb.len() < words(b_len) {
            bb.resize(words(b_len), 0);
        }
        // SAFETY: the buffers are 8-byte aligned u64 storage large enough for a_len/b_len Ts,
        // and T is f32 or f64 (any bit pattern is valid).
        let pa = unsafe { std::slice::from_raw_parts_mut(ba.as_mut_ptr() as *mut T, a_len) };
        let pb = unsafe { std::slice::from_raw_parts_mut(bb.as_mut_ptr() as *mut T, b_len) };
        for k0 in (0..k).step_by(KC) {
            let ks = k0..(k0 + KC).min(k);
            pack_a(a, rows.clone(), ks.clone(), pa);
            pack_b(b, ks.clone(), cols.clone(), pb);
            // SAFETY: this task owns C[rows, cols]; the kernels write only inside it.
            unsafe {
                let c_tile = c.get().add(rows.start * ldc + cols.start);
                run_macro_kernel(isa, rows.len(), cols.len(), ks.len(), pa.as_ptr(), pb.as_ptr(), c_tile, ldc);
            }
        }
    });
}

/// C (row-major, ldc) = sum over batches of A_b B_b for each batch b, with A_b = a[b] (m x k) and
/// B_b = b[b] (k x n) as strided matrices. `c` holds batch * m * ldc elements, zeroed by the caller.
pub fn gemm_batched<T: Float>(m: usize, n: usize, k: usize, a: &[MatRef<T>], b: &[MatRef<T>], c: &mut [T]) {
    let isa = detected_isa();
    let batch = a.len();
    let cptr = SendPtr(c.as_mut_ptr());
    let mut tasks = Vec::new();
    for bi in 0..batch {
        for r0 in (0..m).step_by(MC) {
            for c0 in (0..n).step_by(NC) {
                tasks.push((bi, r0..(r0 + MC).min(m), c0..(c0 + NC).min(n)));
            }
        }
    }
    let run = |(bi, rows, cols): (usize, std::ops::Range<usize>, std::ops::Range<usize>)| {
        let c_batch = SendPtr(unsafe { cptr.get().add(bi * m * n) });
        gemm_tile(isa, &a[bi], &b[bi], k, c_batch, n, rows, cols);
    };
    if (m * n * k * batch) < (1 << 18) || tasks.len() == 1 {
        tasks.into_iter().for_each(run);
    } else {
        tasks.into_par_iter().for_each(run);
    }
}

/// Offsets of each batch matrix for a [batch.., r, c] layout.
fn batch_offsets(layout: &Layout) -> Vec<usize> {
    let rank = layout.rank();
    Layout::new(layout.shape()[..rank - 2].to_vec(), layout.strides()[..rank - 2].to_vec(), layout.offset()).offsets().collect()
}

fn matmul_impl<T: Float>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let rank = la.rank();
    let (m, k, n) = (la.shape()[rank - 2], la.shape()[rank - 1], lb.shape()[rank - 1]);
    let (ars, acs) = (la.strides()[rank - 2], la.strides()[rank - 1]);
    let (brs, bcs) = (lb.strides()[rank - 2], lb.strides()[rank - 1]);
    let mats_a: Vec<MatRef<T>> = batch_offsets(la).into_iter().map(|offset| MatRef { data: a, offset, rs: ars, cs: acs }).collect();
    let mats_b: Vec<MatRef<T>> = batch_offsets(lb).into_iter().map(|offset| MatRef { data: b, offset, rs: brs, cs: bcs }).collect();
    let mut c = vec![T::ZERO; mats_a.len() * m * n];
    if k > 0 {
        gemm_batched(m, n, k, &mats_a, &mats_b, &mut c);
    }
    c
}

pub fn matmul(a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout) -> Result<CpuStorage> {
    let rank = la.rank();
    if rank < 2 || lb.rank() != rank || la.shape()[..rank - 2] != lb.shape()[..rank - 2] || la.shape()[rank - 1] != lb.shape()[rank - 2] {
        return Err(Error::shape("matmul", format!("{:?} x {:?}", la.shape(), lb.shape())));
    }
    if a.dtype() != b.dtype() {
        return Err(Error::dtype("matmul", format!("{} x {}", a.dtype(), b.dtype())));
    }
    let whole = |s: &CpuStorage| Layout::contiguous(&[s.len()]);
    let out = match (float_data(a, &whole(a), "matmul")?, float_data(b, &whole(b), "matmul")?) {
        (super::float::FloatData::F32(x), super::float::FloatData::F32(y)) => FloatOut::F32(matmul_impl(&x, la, &y, lb)),
        (super::float::FloatData::F64(x), super::float::FloatData::F64(y)) => FloatOut::F64(matmul_impl(&x, la, &y, lb)),
        _ => return Err(Error::dtype("matmul", "mixed operand types")),
    };
    Ok(out.into_storage(a.dtype()))
}
