//! CPU matrix product C = A B for f32/f64 (F16 is widened to f32 first; BF16 runs gemm_bf16.rs's
//! AMX or AVX512-BF16 kernels where the CPU has one, else is widened too).
//!
//! Blocked GEMM in the Goto/BLIS style: C's columns (or, for narrow products, its rows) are split
//! into one equal share per thread; each share, for each KC-deep slice of K, packs its A rows
//! into MR-row panels once, then for each column block (NC columns: as wide as keeps the packed B
//! block within 1 MiB of L2, in blocks of equal width) packs its B block into NR-column panels
//! (zero-padded) and runs an MR x NR register-tiled micro-kernel over every (A panel, B panel)
//! pair of each MC-row block, rows outside and columns inside; partial tiles run the kernel's
//! edge variant where it has one. C is zeroed tile by tile before its first K slice (or starts
//! from a bias). Packing accepts any strides, so transposed operands (as backward passes use)
//! cost nothing extra. Operand packing and kernels are pluggable (`Operands`, `MicroKernel`):
//! f32 8x48 (or 8x32 where n pads better) with AVX-512, f32 6x16 with AVX2+FMA (std::arch
//! intrinsics, picked at run time), a portable 4x8 for f64 and older CPUs, and gemm_bf16.rs's
//! bf16 kernels.
//! FLOPs: 2*m*n*k. With f32 at KC = 512 the A micro-panel (8 x 512 = 16 KiB) stays in L1 while
//! the packed B block (512 x up to 480 columns, 1 MiB) streams from L2; A and B are each packed
//! once, and C moves once per K slice (k / 512 times), from L3 when C is past L2.

use super::float::{filled, float_data, Float, FloatData, FloatOut};
use super::packed_weights::{self, PackedB};
use super::simd::{self, SimdLevel};
use super::vmath::vectorised;
use super::{gemm_bf16, CpuStorage};
use crate::backend::Derived;
use crate::{Error, Layout, Result};
use half::bf16;
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;

/// K slice: C is read and written once per slice, and past L2 (C of 4 MiB at n = 1024) that
/// traffic cost the micro-kernel 12-14% at KC = 256 (141 against 161 GFLOP/s on one core).
const KC: usize = 512;
const MC: usize = 96;
/// Bytes of one packed B block (KC deep x NC columns), kept in L2 (2 MiB per core here):
/// f32 blocks are up to 512 columns wide.
const B_BLOCK_BYTES: usize = 1 << 20;
/// Bytes of packed A rows per K slice (see `row_group`).
const A_GROUP_BYTES: usize = 4 << 20;

/// A strided matrix operand: element (i, j) is at data[offset + i*rs + j*cs].
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<T> MatRef<'_, T> {
    /// Offset, row stride and column stride.
    pub(super) fn place(&self) -> [usize; 3] {
        [self.offset, self.rs, self.cs]
    }
}

/// A register-tiled kernel: C[mr x nr] (row stride ldc) += packed A panel x packed B panel, both
/// `depth` packed elements deep. The packed element P is the operand type, or for bf16 a pair of
/// consecutive k; C is f32/f64.
#[derive(Clone, Copy)]
pub struct MicroKernel<P, C = P> {
    pub name: &'static str,
    pub mr: usize,
    pub nr: usize,
    pub(super) run: unsafe fn(depth: usize, a: *const P, b: *const P, c: *mut C, ldc: usize),
    /// The same for a partial tile, C[rows x cols] with rows <= mr and cols <= nr, computing only
    /// those rows and columns (to the vector) and writing straight into C. Kernels without one
    /// run a full tile into a scratch tile and add its valid part to C.
    pub(super) edge: Option<EdgeKernel<P, C>>,
}

/// A partial-tile kernel: (rows, cols, depth, A panel, B panel, C, ldc).
pub(super) type EdgeKernel<P, C> = unsafe fn(usize, usize, usize, *const P, *const P, *mut C, usize);

/// The two operands of one product and how they are packed into micro-panels.
pub(super) trait Operands<P>: Sync {
    /// How many k one packed element covers (2 for bf16 pairs).
    const K_PER_ELEMENT: usize;
    /// Packed elements per line for a K slice of `k_len` (more than k_len / K_PER_ELEMENT where a
    /// kernel consumes k in fixed chunks; the packing zero-fills the rest).
    fn depth(&self, k_len: usize) -> usize {
        k_len.div_ceil(Self::K_PER_ELEMENT)
    }
    /// k per K slice.
    fn k_slice(&self) -> usize {
        KC * Self::K_PER_ELEMENT
    }
    /// Rows `rows` of A over `ks` into panels of `mr` rows: out[panel][p][row].
    fn pack_a(&self, mr: usize, rows: Range<usize>, ks: Range<usize>, out: &mut [P]);
    /// Columns `cols` of B over `ks` into panels of `nr` columns: out[panel][p][col].
    fn pack_b(&self, nr: usize, cols: Range<usize>, ks: Range<usize>, out: &mut [P]);
    /// Where B lies in its storage (offset, row and column stride), which with the kernel and
    /// the sizes identifies its packed panels.
    fn b_place(&self) -> [usize; 3];
}

/// Strided f32/f64 operands, packed element by element.
struct FloatOperands<'a, T> {
    a: &'a MatRef<'a, T>,
    b: &'a MatRef<'a, T>,
}

impl<T: Float> Operands<T> for FloatOperands<'_, T> {
    const K_PER_ELEMENT: usize = 1;
    fn pack_a(&self, mr: usize, rows: Range<usize>, ks: Range<usize>, out: &mut [T]) {
        pack(self.a, self.a.rs, self.a.cs, mr, rows, ks, out)
    }
    fn pack_b(&self, nr: usize, cols: Range<usize>, ks: Range<usize>, out: &mut [T]) {
        pack(self.b, self.b.cs, self.b.rs, nr, cols, ks, out)
    }
    fn b_place(&self) -> [usize; 3] {
        self.b.place()
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    /// C[R x 16*NV] += A B over kc k from packed panels of 8 rows of A and 16*BV columns of B
    /// (R <= 8, NV <= BV: a full tile, or the rows and vectors of a partial one): NV zmm
    /// accumulators per row, NV B vectors and one broadcast of A per row and k. The last vector
    /// of each C row is loaded and stored under `last`, so a partial tile touches only its
    /// columns.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const NV: usize, const BV: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        last: __mmask16,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        for p in 0..kc {
            // B streams from L2: fetch 8 k ahead (1-1.5 KiB), about a hundred cycles early.
            let bp = b.add(p * 16 * BV);
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_T0>(bp.add(128 * BV + 16 * v) as *const i8);
            }
            let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(bp.add(16 * v)));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(p * 8 + i));
                for (r, &bv) in row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(av, bv, *r);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let cp = c.add(i * ldc);
            for (v, &r) in row.iter().enumerate() {
                let at = cp.add(16 * v);
                if v + 1 < NV || last == 0xFFFF {
                    _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), r));
                } else {
                    _mm512_mask_storeu_ps(at, last, _mm512_add_ps(_mm512_maskz_loadu_ps(last, at), r));
                }
            }
        }
    }

    /// 8 x 48 f32 tile: 24 zmm accumulators, 24 FMAs per 3 loads of B. Measured alone on a
    /// 96 x 480 x 256 block on one core: 184-189 GFLOP/s, against 168-176 for 8 x 32.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_8x48_avx512(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        tile::<8, 3, 3>(kc, a, b, c, ldc, 0xFFFF)
    }

    /// 8 x 32 f32 tile (16 accumulators), for products whose n pads badly to 48 (attention's
    /// d = 64 outputs).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_8x32_avx512(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        tile::<8, 2, 2>(kc, a, b, c, ldc, 0xFFFF)
    }

    /// A partial tile of the 8 x 16*BV kernels: `rows` (1..=8) x `cols` (1..=16*BV) of C, with
    /// only the rows and 16-column vectors it has, straight into C. A padded full tile did up to
    /// 8x the work: ViT-B/32 batch 1's 50 rows ran as 56, small CLIP attention's 17 as 24.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn edge_tile<const BV: usize>(rows: usize, cols: usize, kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        let vectors = cols.div_ceil(16);
        let last = ((1u32 << (cols - 16 * (vectors - 1))) - 1) as __mmask16;
        match vectors {
            1 => edge_rows::<1, BV>(rows, kc, a, b, c, ldc, last),
            2 => edge_rows::<2, BV>(rows, kc, a, b, c, ldc, last),
            _ => edge_rows::<BV, BV>(rows, kc, a, b, c, ldc, last),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn edge_rows<const NV: usize, const BV: usize>(
        rows: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        last: __mmask16,
    ) {
        match rows {
            1 => tile::<1, NV, BV>(kc, a, b, c, ldc, last),
            2 => tile::<2, NV, BV>(kc, a, b, c, ldc, last),
            3 => tile::<3, NV, BV>(kc, a, b, c, ldc, last),
            4 => tile::<4, NV, BV>(kc, a, b, c, ldc, last),
            5 => tile::<5, NV, BV>(kc, a, b, c, ldc, last),
            6 => tile::<6, NV, BV>(kc, a, b, c, ldc, last),
            7 => tile::<7, NV, BV>(kc, a, b, c, ldc, last),
            _ => tile::<8, NV, BV>(kc, a, b, c, ldc, last),
        }
    }

    /// Transposes 8 rows of 8 f32 (row i at src + i*src_stride) into 8 rows at dst + q*dst_stride.
    #[target_feature(enable = "avx2")]
    pub unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        let r = |i: usize| _mm256_loadu_ps(src.add(i * src_stride));
        let (r0, r1, r2, r3, r4, r5, r6, r7) = (r(0), r(1), r(2), r(3), r(4), r(5), r(6), r(7));
        let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
        let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
        let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
        let (s0, s1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
        let (s2, s3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
        let (s4, s5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
        let (s6, s7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
        let rows = [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ];
        for (q, row) in rows.into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(q * dst_stride), row);
        }
    }

    /// 6 x 16 f32 tile: 12 ymm accumulators.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_6x16_avx2(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
        for p in 0..kc {
            let b0 = _mm256_loadu_ps(b.add(p * 16));
            let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*a.add(p * 6 + i));
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let cp = c.add(i * ldc);
            _mm256_storeu_ps(cp, _mm256_add_ps(_mm256_loadu_ps(cp), row[0]));
            _mm256_storeu_ps(cp.add(8), _mm256_add_ps(_mm256_loadu_ps(cp.add(8)), row[1]));
        }
    }
}

/// Portable 4 x 8 tile for any float type (f64, and f32 without AVX2).
unsafe fn kernel_4x8_portable<T: Float>(kc: usize, a: *const T, b: *const T, c: *mut T, ldc: usize) {
    let mut acc = [[T::ZERO; 8]; 4];
    for p in 0..kc {
        let (ap, bp) = (a.add(p * 4), b.add(p * 8));
        for (i, row) in acc.iter_mut().enumerate() {
            let av = *ap.add(i);
            for (j, slot) in row.iter_mut().enumerate() {
                *slot = av * *bp.add(j) + *slot;
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            *c.add(i * ldc + j) += v;
        }
    }
}

/// The fastest kernel this CPU runs for T and an n-column product (checked once per call;
/// detection is cached by std). With AVX-512 that is 8 x 48, which runs 7% faster than 8 x 32,
/// unless n is narrow and pads to 48 so much worse than to 32 that the padding costs more
/// (n = 64). From n = 96 on, 8 x 48 wins whatever the remainder, which its edge variant computes
/// to the 16 columns: the weight gradient [128, 1088] x [1088, 128] took 144 us against 200-206
/// with 8 x 32 (medians of six alternating runs; [1088, 128] x [128, 128] unchanged).
pub fn micro_kernel<T: Float>(n: usize) -> MicroKernel<T> {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32 here, so the function pointer types are identical.
        let cast = |f: unsafe fn(usize, *const f32, *const f32, *mut f32, usize)| unsafe {
            std::mem::transmute::<_, unsafe fn(usize, *const T, *const T, *mut T, usize)>(f)
        };
        // SAFETY: as above.
        let cast_edge = |f: EdgeKernel<f32, f32>| unsafe { std::mem::transmute::<_, EdgeKernel<T, T>>(f) };
        if simd::level() >= SimdLevel::Avx512 {
            let padded = |nr: usize| n.div_ceil(nr) * nr;
            return if n >= 96 || padded(48) as f64 / 1.07 <= padded(32) as f64 {
                MicroKernel {
                    name: "avx512 8x48",
                    mr: 8,
                    nr: 48,
                    run: cast(x86::kernel_8x48_avx512),
                    edge: Some(cast_edge(x86::edge_tile::<3>)),
                }
            } else {
                MicroKernel {
                    name: "avx512 8x32",
                    mr: 8,
                    nr: 32,
                    run: cast(x86::kernel_8x32_avx512),
                    edge: Some(cast_edge(x86::edge_tile::<2>)),
                }
            };
        }
        if simd::level() >= SimdLevel::Avx2Fma {
            return MicroKernel {
                name: "avx2 6x16",
                mr: 6,
                nr: 16,
                run: cast(x86::kernel_6x16_avx2),
                edge: None,
            };
        }
    }
    MicroKernel {
        name: "portable 4x8",
        mr: 4,
        nr: 8,
        run: kernel_4x8_portable::<T>,
        edge: None,
    }
}

thread_local! {
    // Reused packing buffers (u64 words, so f32 and f64 both fit aligned): no allocation per call.
    static PACKED_B: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    static PACK_A: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Packs `lines` (rows of A, or columns of B) over the k range `ks` into panels of `w`
/// interleaved lines: out[panel][p][l] = element (line l0 + l, k0 + p), zero past the last line.
/// Element (line, k) sits at offset + line * line_stride + k * k_stride. Operands contiguous along
/// k (A row-major, B transposed) or along lines (A transposed, B row-major) are copied in runs.
fn pack<T: Float>(m: &MatRef<T>, line_stride: usize, k_stride: usize, w: usize, lines: Range<usize>, ks: Range<usize>, out: &mut [T]) {
    let kc = ks.len();
    if line_stride == 1 && k_stride != 1 {
        // Lines adjacent (B row-major, A transposed): each k's run of lines is read once, in
        // order, and dealt out to the panels. Panel by panel, the reads would stride by a whole
        // row per k (4 KiB at n = 1024), which measured 1 ns per element.
        vectorised(
            #[inline(always)]
            || match w {
                8 => deal_lines::<T, 8>(m, k_stride, lines, ks, out),
                16 => deal_lines::<T, 16>(m, k_stride, lines, ks, out),
                32 => deal_lines::<T, 32>(m, k_stride, lines, ks, out),
                48 => deal_lines::<T, 48>(m, k_stride, lines, ks, out),
                _ => deal_lines_any(m, k_stride, w, lines, ks, out),
            },
        );
        return;
    }
    for (panel, l0) in lines.clone().step_by(w).enumerate() {
        let dst = &mut out[panel * kc * w..(panel + 1) * kc * w];
        let valid = w.min(lines.end - l0);
        let at = |l: usize, k: usize| m.offset + (l0 + l) * line_stride + k * k_stride;
        if valid < w {
            dst.iter_mut().for_each(|x| *x = T::ZERO);
        }
        if k_stride == 1 {
            if !transpose_pack_f32(m, line_stride, w, l0, valid, ks.clone(), dst) {
                for l in 0..valid {
                    let src = &m.data[at(l, ks.start)..at(l, ks.start) + kc];
                    for (p, &v) in src.iter().enumerate() {
                        dst[p * w + l] = v;
                    }
                }
            }
        } else {
            for (p, k) in ks.clone().enumerate() {
                for l in 0..valid {
                    dst[p * w + l] = m.data[at(l, k)];
                }
            }
        }
    }
}

/// The lines-adjacent case of `pack` for a panel width W known at compile time: full panels are
/// fixed-size moves (vector moves under `vectorised`), the last, partial one is zero-padded.
/// A run-length dispatch per (k, panel) had made packing as slow as the micro-kernel for small
/// products such as a weight gradient [128, 1088] x [1088, 128].
#[inline(always)]
fn deal_lines<T: Float, const W: usize>(m: &MatRef<T>, k_stride: usize, lines: Range<usize>, ks: Range<usize>, out: &mut [T]) {
    let (kc, full, valid) = (ks.len(), lines.len() / W, lines.len() % W);
    for (p, k) in ks.enumerate() {
        let row = &m.data[m.offset + lines.start + k * k_stride..][..lines.len()];
        for panel in 0..full {
            let src: &[T; W] = row[panel * W..][..W].try_into().unwrap();
            let dst: &mut [T; W] = (&mut out[panel * kc * W + p * W..][..W]).try_into().unwrap();
            *dst = *src;
        }
        if valid > 0 {
            let dst = &mut out[full * kc * W + p * W..][..W];
            dst[..valid].copy_from_slice(&row[full * W..]);
            dst[valid..].fill(T::ZERO);
        }
    }
}

/// `deal_lines` for any panel width.
fn deal_lines_any<T: Float>(m: &MatRef<T>, k_stride: usize, w: usize, lines: Range<usize>, ks: Range<usize>, out: &mut [T]) {
    let kc = ks.len();
    for (p, k) in ks.enumerate() {
        let row = &m.data[m.offset + lines.start + k * k_stride..][..lines.len()];
        for (panel, src) in row.chunks(w).enumerate() {
            let dst = &mut out[panel * kc * w + p * w..][..w];
            dst[..src.len()].copy_from_slice(src);
            dst[src.len()..].fill(T::ZERO);
        }
    }
}

/// The k-contiguous case of `pack` for f32 with AVX2 (A row-major, B transposed as in x W^T):
/// 8 lines x 8 k at a time are loaded as 8 rows, transposed in registers and stored as 8 k-rows
/// of the panel; the edges go element by element. Returns false where it does not apply.
fn transpose_pack_f32<T: Float>(
    m: &MatRef<T>,
    line_stride: usize,
    w: usize,
    l0: usize,
    valid: usize,
    ks: Range<usize>,
    dst: &mut [T],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && w >= 8 && simd::level() >= SimdLevel::Avx2Fma {
        let kc = ks.len();
        let base = m.offset + l0 * line_stride + ks.start;
        if valid > 0 {
            // The last element read: line valid-1 at k = kc-1.
            assert!(base + (valid - 1) * line_stride + kc <= m.data.len() && dst.len() >= kc * w);
        }
        let (full_l, full_k) = (valid / 8 * 8, kc / 8 * 8);
        // SAFETY: T is f32; every read is inside the bounds checked above and every write inside
        // dst (kc rows of w).
        unsafe {
            let src = m.data.as_ptr() as *const f32;
            let out = dst.as_mut_ptr() as *mut f32;
            for lb in (0..full_l).step_by(8) {
                for kb in (0..full_k).step_by(8) {
                    x86::transpose_8x8(src.add(base + lb * line_stride + kb), line_stride, out.add(kb * w + lb), w);
                }
            }
            for l in 0..valid {
                let k_from = if l < full_l { full_k } else { 0 };
                for p in k_from..kc {
                    *out.add(p * w + l) = *src.add(base + l * line_stride + p);
                }
            }
        }
        return true;
    }
    false
}

/// All micro-tiles of one packed (mc x depth) x (depth x nc) block. Partial tiles at the block's
/// edges run the kernel's edge variant where it has one, else a full tile into a scratch tile.
/// Rows outside, columns inside: the A micro-panel (8 x 512 f32 = 16 KiB) stays in L1 while the
/// B block streams from L2, and C is walked along its rows.
#[allow(clippy::too_many_arguments)]
unsafe fn macro_kernel<P, C: Float>(
    uk: &MicroKernel<P, C>,
    mc: usize,
    nc: usize,
    depth: usize,
    pa: *const P,
    pb: *const P,
    c: *mut C,
    ldc: usize,
) {
    let mut scratch = [C::ZERO; 32 * 32];
    debug_assert!(uk.mr * uk.nr <= scratch.len());
    for ir in (0..mc).step_by(uk.mr) {
        for jr in (0..nc).step_by(uk.nr) {
            let (a, b) = (pa.add(ir * depth), pb.add(jr * depth));
            let (mr, nr) = (uk.mr.min(mc - ir), uk.nr.min(nc - jr));
            let ct = c.add(ir * ldc + jr);
            if mr == uk.mr && nr == uk.nr {
                (uk.run)(depth, a, b, ct, ldc);
            } else if let Some(edge) = uk.edge {
                edge(mr, nr, depth, a, b, ct, ldc);
            } else {
                scratch[..uk.mr * uk.nr].fill(C::ZERO);
                (uk.run)(depth, a, b, scratch.as_mut_ptr(), uk.nr);
                for i in 0..mr {
                    for j in 0..nr {
                        *ct.add(i * ldc + j) += scratch[i * uk.nr + j];
                    }
                }
            }
        }
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

/// A reusable, 8-byte aligned buffer viewed as `len` elements of T (f32, f64 or packed bf16 pairs).
pub fn workspace<T: bytemuck::Pod>(buf: &mut Vec<u64>, len: usize) -> &mut [T] {
    let words = (len * std::mem::size_of::<T>()).div_ceil(8);
    if buf.len() < words {
        buf.resize(words, 0);
    }
    // SAFETY: the buffer holds at least len Ts, is 8-byte aligned, and any bits are a valid T (Pod).
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut T, len) }
}

/// What C holds when a product starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CStart {
    /// Nothing (uninitialised memory): each tile of C is zeroed just before its first K slice,
    /// while it is in cache, rather than by a memset of all of C beforehand (one more pass over
    /// memory, on one thread).
    Zero,
    /// Values the product adds to (a bias repeated per row, or earlier sums).
    Add,
}

/// `c` viewed as possibly uninitialised elements, to pass with `CStart::Add`.
pub fn as_uninit<T>(c: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: MaybeUninit<T> has T's layout, and the GEMM writes only initialised values.
    unsafe { &mut *(c as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// For each batch b: C_b (row-major m x n, contiguous after one another) = A_b B_b, or += with
/// `CStart::Add`, with A_b (m x k) and B_b (k x n) strided. `c` holds batch * m * n elements;
/// all of them are initialised on return. Products big enough to pay for it are split across
/// threads. `b_derived` is B's storage's slot when B is constant: its packed panels are kept
/// there (packed_weights.rs).
#[allow(clippy::too_many_arguments)]
pub fn gemm_batched<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: &[MatRef<T>],
    b: &[MatRef<T>],
    c: &mut [MaybeUninit<T>],
    start: CStart,
    b_derived: Option<&Derived>,
) {
    let operands: Vec<FloatOperands<T>> = a.iter().zip(b).map(|(a, b)| FloatOperands { a, b }).collect();
    gemm_batched_with(m, n, k, &operands, &micro_kernel::<T>(n), c, start, b_derived)
}

/// `gemm_batched` for any packing: one product per entry of `operands`, C_b after one another.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_batched_with<P: bytemuck::Pod + Send + Sync, C: Float, O: Operands<P>>(
    m: usize,
    n: usize,
    k: usize,
    operands: &[O],
    uk: &MicroKernel<P, C>,
    c: &mut [MaybeUninit<C>],
    start: CStart,
    b_derived: Option<&Derived>,
) {
    assert!(c.len() >= operands.len() * m * n, "gemm: C is too small");
    if k == 0 {
        if start == CStart::Zero {
            c.fill(MaybeUninit::new(C::ZERO));
        }
        return;
    }
    let parallel = m * n * k * operands.len() >= (1 << 17);
    let kept = packed_weights::wanted(b_derived);
    let cptr = SendPtr(c.as_mut_ptr() as *mut C);
    for (bi, ops) in operands.iter().enumerate() {
        let packed_b = kept.and_then(|d| packed_weights::get_or_pack(d, ops, uk, k, n));
        // SAFETY: c holds batch * m * n elements, so C_b (m rows of n) lies inside it.
        let c_b = SendPtr(unsafe { cptr.get().add(bi * m * n) });
        gemm_blocked(m, n, k, ops, uk, c_b, n, parallel, packed_b.as_deref(), start);
    }
}

/// C (row stride `ldc`) += A B, m x n x k, on the calling thread: for small products that a
/// caller already runs in parallel (attention's per-head blocks).
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial<T: Float>(m: usize, n: usize, k: usize, a: &MatRef<T>, b: &MatRef<T>, c: &mut [T], ldc: usize) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "gemm_serial: C is too small");
    let cptr = SendPtr(c.as_mut_ptr());
    let uk = micro_kernel::<T>(n);
    gemm_blocked(m, n, k, &FloatOperands { a, b }, &uk, cptr, ldc, false, None, CStart::Add);
}

/// Runs `f` with this thread's packed-B buffer. A thread that waits inside rayon may be handed
/// another product while its buffer is in use: that one packs into a buffer of its own.
fn with_packed_b(f: impl FnOnce(&mut Vec<u64>)) {
    PACKED_B.with(|packed| {
        let mut own = Vec::new();
        let mut guard = packed.try_borrow_mut().ok();
        f(guard.as_deref_mut().unwrap_or(&mut own))
    })
}

/// C (at `c`, row stride `ldc`; m x n) = A B, or += with `CStart::Add`.
///
/// `split_work` gives each thread one share of C's columns (or rows, where that balances better)
/// for the whole product, and each share runs the BLIS loops on its own: for each group of rows
/// (`row_group`) and K slice it packs those A rows, then for each column block its B block, and
/// runs the micro-kernels over the rows MC at a time. Shares never wait for one another: one
/// fork-join per product rather than two per block (B packed by all threads, then a barrier),
/// which cost 10% of a 2-thread GEMM. A column share packs only its own B but all of A; a row
/// share its own A rows but all of B (`split_work` weighs it). With `packed_b` (all of B packed
/// already) the shares read their B blocks from it instead. Packing A once per K slice rather
/// than once per column block, with KC 512, took gemm 2048^3 from 62-64 ms to 58 ms and
/// 400x3072x768 from 7.0-7.6 to 6.7-6.9 (two alternating runs each).
#[allow(clippy::too_many_arguments)]
fn gemm_blocked<P: bytemuck::Pod + Send + Sync, C: Float, O: Operands<P>>(
    m: usize,
    n: usize,
    k: usize,
    ops: &O,
    uk: &MicroKernel<P, C>,
    c: SendPtr<C>,
    ldc: usize,
    parallel: bool,
    packed_b: Option<&PackedB>,
    start: CStart,
) {
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    let panels = n.div_ceil(uk.nr);
    let column_bytes = (ops.depth(ops.k_slice().min(k)) * std::mem::size_of::<P>()).max(1);
    let share = |(rows, prange): (Range<usize>, Range<usize>), packed: &mut Vec<u64>| {
        let share_cols = prange.start * uk.nr..(prange.end * uk.nr).min(n);
        let block_panels = column_block(prange.len(), uk.nr, column_bytes);
        let group_rows = row_group(column_bytes);
        for group in (rows.start..rows.end)
            .step_by(group_rows)
            .map(|r0| r0..(r0 + group_rows).min(rows.end))
        {
            for (slice, pc) in (0..k).step_by(ops.k_slice()).enumerate() {
                let ks = pc..(pc + ops.k_slice()).min(k);
                let depth = ops.depth(ks.len());
                PACK_A.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    let pa = workspace::<P>(&mut buf, group.len().div_ceil(uk.mr) * uk.mr * depth);
                    ops.pack_a(uk.mr, group.clone(), ks.clone(), pa);
                    for jc in share_cols.clone().step_by(block_panels * uk.nr) {
                        let cols = jc..(jc + block_panels * uk.nr).min(share_cols.end);
                        let block_len = cols.len().div_ceil(uk.nr) * uk.nr * depth;
                        let pb: &[P] = match packed_b {
                            // Share and block bounds are whole panels, so cols.start is one.
                            Some(kept) => kept.block(slice, cols.start / uk.nr, uk.nr * depth, block_len),
                            None => {
                                let pb = workspace::<P>(packed, block_len);
                                ops.pack_b(uk.nr, cols.clone(), ks.clone(), pb);
                                pb
                            }
                        };
                        for r0 in group.clone().step_by(MC) {
                            let block = r0..(r0 + MC).min(group.end);
                            // MC is a whole number of panels, so the block's panels start here.
                            let pa_block = &pa[(r0 - group.start) * depth..];
                            // SAFETY: each share owns C rows `rows` x its columns.
                            unsafe {
                                let c_tile = c.get().add(block.start * ldc + cols.start);
                                if start == CStart::Zero && slice == 0 {
                                    for i in 0..block.len() {
                                        c_tile.add(i * ldc).write_bytes(0, cols.len());
                                    }
                                }
                                macro_kernel(uk, block.len(), cols.len(), depth, pa_block.as_ptr(), pb.as_ptr(), c_tile, ldc);
                            }
                        }
                    }
                })
            }
        }
    };
    let tasks = split_work(m, k, panels, uk.mr, uk.nr, column_bytes, threads, packed_b.is_some());
    let run = |task| with_packed_b(|packed| share(task, packed));
    if tasks.len() > 1 {
        tasks.into_par_iter().for_each(run);
    } else {
        tasks.into_iter().for_each(run);
    }
}

/// Rows of A packed at once for a K slice (a whole number of MC blocks): as many as keep the
/// packed rows within A_GROUP_BYTES (`column_bytes` per packed row), so that A is packed once per
/// K slice rather than once per column block, and B once per group (once up to 2048 f32 rows).
fn row_group(column_bytes: usize) -> usize {
    (A_GROUP_BYTES / column_bytes / MC).max(1) * MC
}

/// Panels per column block (NC = that times nr) for a share of `panels` panels: as few blocks as
/// keep a packed B block within B_BLOCK_BYTES (`column_bytes` per packed column), of equal width,
/// so that no block is a thin remainder.
fn column_block(panels: usize, nr: usize, column_bytes: usize) -> usize {
    let max_panels = (B_BLOCK_BYTES / (nr * column_bytes)).max(1);
    let blocks = panels.div_ceil(max_panels).max(1);
    panels.div_ceil(blocks).max(1)
}

/// Splits an m x n C (`panels` panels of `nr` columns, k deep) into one share per thread, by
/// panels or by rows in whole micro-tile rows (`mr`), whichever gives the busiest share the least
/// work: its multiply-adds plus its packing, which differs between the two. A row share packs its
/// rows of A and all of B (once per group of rows); a column share packs its own B panels and all
/// of A. Narrow products (small CLIP's n = 128) split rows, wide ones
/// columns. With B's panels kept (`b_packed`) no share packs B, so rows win more often: ViT-B/32
/// batch 8 forward 252 ms against 267 (A/B medians of six). Equal static shares matter on few
/// cores: 5 row blocks over 2 threads cost 20%.
#[allow(clippy::too_many_arguments)]
fn split_work(
    m: usize,
    k: usize,
    panels: usize,
    mr: usize,
    nr: usize,
    column_bytes: usize,
    threads: usize,
    b_packed: bool,
) -> Vec<(Range<usize>, Range<usize>)> {
    let units = m.div_ceil(mr);
    if threads <= 1 {
        return vec![(0..m, 0..panels)];
    }
    // Packing one element costs about as much time as this many flops of the micro-kernel.
    const PACK_FLOPS: usize = 16;
    let cost = |rows: usize, share_panels: usize| {
        let groups = rows.div_ceil(row_group(column_bytes));
        let packed = rows * k + if b_packed { 0 } else { k * share_panels * nr * groups };
        2 * rows * share_panels * nr * k + PACK_FLOPS * packed
    };
    let busiest = |n: usize| n.div_ceil(threads);
    let pieces = |n: usize| {
        let parts = threads.min(n);
        (0..parts).map(move |i| (n * i / parts)..(n * (i + 1) / parts))
    };
    let by_rows = cost(busiest(units) * mr, panels);
    let by_cols = cost(units * mr, busiest(panels));
    if by_rows < by_cols {
        pieces(units).map(|u| (u.start * mr..(u.end * mr).min(m), 0..panels)).collect()
    } else {
        pieces(panels).map(|p| (0..m, p)).collect()
    }
}

/// Offsets of each batch matrix for a [batch.., r, c] layout.
fn batch_offsets(layout: &Layout) -> Vec<usize> {
    let rank = layout.rank();
    Layout::new(
        layout.shape()[..rank - 2].to_vec(),
        layout.strides()[..rank - 2].to_vec(),
        layout.offset(),
    )
    .offsets()
    .collect()
}

/// One MatRef per batch matrix of a [batch.., rows, cols] view.
fn batch_mats<'a, T>(data: &'a [T], layout: &Layout) -> Vec<MatRef<'a, T>> {
    let rank = layout.rank();
    let (rs, cs) = (layout.strides()[rank - 2], layout.strides()[rank - 1]);
    batch_offsets(layout)
        .into_iter()
        .map(|offset| MatRef { data, offset, rs, cs })
        .collect()
}

/// The product's B: its storage, layout and, when B is constant, its storage's `Derived` slot.
pub type RhsOperand<'a> = (&'a CpuStorage, &'a Layout, Option<&'a Derived>);

/// The signature of gemm_batched and the bf16 kernels' counterpart.
type BatchedGemm<'a, T, C> =
    dyn Fn(usize, usize, usize, &[MatRef<'a, T>], &[MatRef<'a, T>], &mut [MaybeUninit<C>], CStart, Option<&Derived>) + 'a;

/// C = A B for every batch matrix, plus `bias_rows` where given (batch * m * n elements: a bias
/// repeated per row), through `gemm` (gemm_batched, or the bf16 kernels).
fn batched_product<'a, T, C>(
    a: &'a [T],
    la: &Layout,
    b: (&'a [T], &Layout, Option<&Derived>),
    bias_rows: Option<Vec<C>>,
    gemm: &BatchedGemm<'a, T, C>,
) -> Vec<C> {
    let (b, lb, b_derived) = b;
    let rank = la.rank();
    let (m, k, n) = (la.shape()[rank - 2], la.shape()[rank - 1], lb.shape()[rank - 1]);
    let (am, bm) = (batch_mats(a, la), batch_mats(b, lb));
    match bias_rows {
        Some(mut c) => {
            gemm(m, n, k, &am, &bm, as_uninit(&mut c), CStart::Add, b_derived);
            c
        }
        // SAFETY: with CStart::Zero the GEMM writes all of C (batch * m * n elements).
        None => unsafe { filled(product_len(la, lb), |c| gemm(m, n, k, &am, &bm, c, CStart::Zero, b_derived)) },
    }
}

/// Output elements of a product: batch * m * n.
fn product_len(la: &Layout, lb: &Layout) -> usize {
    la.shape()[..la.rank() - 1].iter().product::<usize>() * lb.shape()[lb.rank() - 1]
}

/// bf16 x bf16 with f32 sums on the fastest bf16 micro-kernel; None where the CPU has none.
fn matmul_bf16(a: &[bf16], la: &Layout, b: (&[bf16], &Layout, Option<&Derived>)) -> Option<Vec<f32>> {
    let kernel = gemm_bf16::Bf16Kernel::best()?;
    let gemm = move |m, n, k, a: &[_], b: &[_], c: &mut [_], start, d: Option<&Derived>| {
        gemm_bf16::gemm_batched_bf16(kernel, m, n, k, a, b, c, start, d)
    };
    Some(batched_product(a, la, b, None, &gemm))
}

pub fn matmul(a: &CpuStorage, la: &Layout, (b, lb, b_derived): RhsOperand) -> Result<CpuStorage> {
    let rank = la.rank();
    if rank < 2 || lb.rank() != rank || la.shape()[..rank - 2] != lb.shape()[..rank - 2] || la.shape()[rank - 1] != lb.shape()[rank - 2] {
        return Err(Error::shape("matmul", format!("{:?} x {:?}", la.shape(), lb.shape())));
    }
    if a.dtype() != b.dtype() {
        return Err(Error::dtype("matmul", format!("{} x {}", a.dtype(), b.dtype())));
    }
    if let (CpuStorage::BF16(x), CpuStorage::BF16(y)) = (a, b) {
        if let Some(c) = matmul_bf16(x, la, (y, lb, b_derived)) {
            return Ok(FloatOut::F32(c).into_storage(a.dtype()));
        }
    }
    let whole = |s: &CpuStorage| Layout::contiguous(&[s.len()]);
    let out = match (float_data(a, &whole(a), "matmul")?, float_data(b, &whole(b), "matmul")?) {
        (FloatData::F32(x), FloatData::F32(y)) => FloatOut::F32(batched_product(&x, la, (&y, lb, b_derived), None, &gemm_batched)),
        (FloatData::F64(x), FloatData::F64(y)) => FloatOut::F64(batched_product(&x, la, (&y, lb, b_derived), None, &gemm_batched)),
        _ => return Err(Error::dtype("matmul", "mixed operand types")),
    };
    Ok(out.into_storage(a.dtype()))
}

/// A B + bias for f32/f64 operands and a bias row broadcast over the output (the bias layout has
/// stride 1 along the last dim and 0 elsewhere): C starts as the bias rows rather than zeros, so
/// the bias costs nothing. None for other cases, which the caller composes from two ops.
pub fn matmul_bias(
    a: &CpuStorage,
    la: &Layout,
    (b, lb, b_derived): RhsOperand,
    bias: &CpuStorage,
    lbias: &Layout,
) -> Result<Option<CpuStorage>> {
    let rank = lbias.rank();
    let strides = lbias.strides();
    let bias_row = strides[rank - 1] == 1 && strides[..rank - 1].iter().all(|&s| s == 0);
    let n = lbias.shape()[rank - 1];
    let start = lbias.offset();
    let out = match (a, b, bias) {
        (CpuStorage::F32(x), CpuStorage::F32(y), CpuStorage::F32(z)) if bias_row => {
            let init = repeat_row(&z[start..start + n], product_len(la, lb));
            FloatOut::F32(batched_product(x, la, (y, lb, b_derived), Some(init), &gemm_batched))
        }
        (CpuStorage::F64(x), CpuStorage::F64(y), CpuStorage::F64(z)) if bias_row => {
            let init = repeat_row(&z[start..start + n], product_len(la, lb));
            FloatOut::F64(batched_product(x, la, (y, lb, b_derived), Some(init), &gemm_batched))
        }
        _ => return Ok(None),
    };
    Ok(Some(out.into_storage(a.dtype())))
}

/// `row` repeated to `len` elements.
fn repeat_row<T: Float>(row: &[T], len: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        out.extend_from_slice(&row[..row.len().min(len - out.len())]);
    }
    out
}
