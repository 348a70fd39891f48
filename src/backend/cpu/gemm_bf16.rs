//! CPU bf16 matrix product with f32 accumulation: AMX tiles where the CPU and OS allow them,
//! else AVX512-BF16 (`vdpbf16ps`), else (matmul's fallback) bf16 widened to the f32 GEMM.
//!
//! The blocking, threading and edge handling are gemm.rs's; only the packing and the micro-kernels
//! differ. A packed element is a pair of consecutive k (low half k, high half k + 1, zero past the
//! end of a K slice); B is packed [depth][32 columns] of pairs for both kernels, which is also the
//! layout of AMX's B tiles (16 pair-rows x 64 bytes, row stride 128 bytes for a 32-column panel).
//! - AMX: a 32 x 32 C tile in four 16 x 16 f32 tiles; per chunk of 32 k, two A tiles (16 rows x
//!   32 k, A packed [chunk][32 rows][16 pairs]) and two B tiles feed four `tdpbf16ps`, 65536 FLOP
//!   on 4 KiB of tile loads. K slices of 1024.
//! - AVX512-BF16: an 8 x 32 C tile in 16 zmm accumulators; A packed [depth][8 rows] of pairs, one
//!   broadcast pair and two B vectors per step. On Intel cores `vdpbf16ps` runs at the f32 FMA
//!   rate, so this path gains only halved operand bytes; AMD Zen 4 runs it at twice the rate.
//!
//! FLOPs 2*m*n*k on half the bytes of f32 operands; products are exact in f32 and summed in f32
//! (both instructions flush bf16 subnormal inputs to zero).

use super::gemm::{gemm_batched_with, CStart, MatRef, MicroKernel, Operands};
use super::simd::{self, SimdLevel};
use crate::backend::Derived;
use crate::{Error, Result};
use half::bf16;
use std::mem::MaybeUninit;
use std::ops::Range;

/// The bf16 micro-kernels, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX tiles (`tdpbf16ps`): a 32 x 32 C tile as four 16 x 16 accumulator tiles.
    Amx,
    /// AVX512-BF16 (`vdpbf16ps`): an 8 x 32 C tile in 16 zmm accumulators.
    Avx512,
}

impl Bf16Kernel {
    /// The kernels this CPU (and OS, for AMX) runs, fastest first, within `env_cap`'s cap (an
    /// invalid cap, which the `vlk` binary rejects at start, caps nothing here).
    pub fn available() -> Vec<Bf16Kernel> {
        let cap = Bf16Kernel::env_cap().unwrap_or_default();
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = simd::level() >= SimdLevel::Avx512;
            if (cap.is_empty() || cap == "amx") && avx512 && amx::ready() {
                kernels.push(Bf16Kernel::Amx);
            }
            if cap != "f32" && avx512 && std::is_x86_feature_detected!("avx512bf16") {
                kernels.push(Bf16Kernel::Avx512);
            }
        }
        kernels
    }

    /// `VLK_CPU_BF16`, which caps the kernel choice for side-by-side measurements: `amx` (any),
    /// `avx512` (no AMX) or `f32` (widen to f32); unset or empty for no cap. Any other value is an
    /// error naming the variable.
    pub fn env_cap() -> Result<String> {
        let cap = std::env::var("VLK_CPU_BF16").unwrap_or_default();
        match cap.as_str() {
            "" | "amx" | "avx512" | "f32" => Ok(cap),
            other => Err(Error::msg(format!(
                "VLK_CPU_BF16={other:?}: expected amx, avx512 or f32 (or unset)"
            ))),
        }
    }

    /// The fastest available kernel, if any (checked once per process).
    pub fn best() -> Option<Bf16Kernel> {
        static BEST: std::sync::OnceLock<Option<Bf16Kernel>> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Bf16Kernel::available().first().copied())
    }

    fn micro_kernel(self) -> MicroKernel<u32, f32> {
        #[cfg(target_arch = "x86_64")]
        match self {
            Bf16Kernel::Amx => MicroKernel {
                name: "amx-bf16 32x32",
                mr: 32,
                nr: 32,
                run: amx::kernel_32x32,
                edge: None,
            },
            Bf16Kernel::Avx512 => MicroKernel {
                name: "avx512-bf16 8x32",
                mr: 8,
                nr: 32,
                run: x86::kernel_8x32_bf16,
                edge: None,
            },
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no bf16 kernel is available off x86_64")
    }
}

/// Strided bf16 operands, packed in k pairs for `kernel`.
pub(super) struct Bf16Operands<'a> {
    pub a: &'a MatRef<'a, bf16>,
    pub b: &'a MatRef<'a, bf16>,
    pub kernel: Bf16Kernel,
}

impl Operands<u32> for Bf16Operands<'_> {
    const K_PER_ELEMENT: usize = 2;
    fn depth(&self, k_len: usize) -> usize {
        match self.kernel {
            // AMX consumes 16 pairs (one 64-byte tile row) at a time.
            Bf16Kernel::Amx => k_len.div_ceil(32) * 16,
            Bf16Kernel::Avx512 => k_len.div_ceil(2),
        }
    }
    fn k_slice(&self) -> usize {
        match self.kernel {
            // Fewer passes over C (a tile load and store each) measured faster: 2.6 -> 2.4 ms at
            // 1024^3 against 512.
            Bf16Kernel::Amx => 1024,
            Bf16Kernel::Avx512 => 512,
        }
    }
    fn pack_a(&self, mr: usize, rows: Range<usize>, ks: Range<usize>, out: &mut [u32]) {
        let depth = self.depth(ks.len());
        match self.kernel {
            Bf16Kernel::Amx => pack_row_chunks(self.a, mr, rows, ks, depth, out),
            Bf16Kernel::Avx512 => pack_pairs(self.a, self.a.rs, self.a.cs, mr, rows, ks, depth, out),
        }
    }
    fn pack_b(&self, nr: usize, cols: Range<usize>, ks: Range<usize>, out: &mut [u32]) {
        let depth = self.depth(ks.len());
        pack_pairs(self.b, self.b.cs, self.b.rs, nr, cols, ks, depth, out)
    }
    fn b_place(&self) -> [usize; 3] {
        self.b.place()
    }
}

/// The pair word of line `line` at k (low half) and k + 1 (high half), zero at or past `end`.
fn pair(m: &MatRef<bf16>, line_stride: usize, k_stride: usize, line: usize, k: usize, end: usize) -> u32 {
    let bits = |k: usize| {
        if k < end {
            m.data[m.offset + line * line_stride + k * k_stride].to_bits() as u32
        } else {
            0
        }
    };
    bits(k) | bits(k + 1) << 16
}

/// Packs `lines` over the k range `ks` into panels of `w` lines of `depth` pairs, k-major:
/// out[panel][p][l] = pair (l0 + l, k0 + 2p), zero past the last line and past the end of `ks`.
/// Element (line, k) sits at offset + line * line_stride + k * k_stride.
#[allow(clippy::too_many_arguments)]
fn pack_pairs(
    m: &MatRef<bf16>,
    line_stride: usize,
    k_stride: usize,
    w: usize,
    lines: Range<usize>,
    ks: Range<usize>,
    depth: usize,
    out: &mut [u32],
) {
    let real = ks.len().div_ceil(2);
    let at = |line: usize, k: usize| m.offset + line * line_stride + k * k_stride;
    for (panel, l0) in lines.clone().step_by(w).enumerate() {
        let dst = &mut out[panel * depth * w..(panel + 1) * depth * w];
        let valid = w.min(lines.end - l0);
        if valid < w {
            dst.fill(0);
        }
        dst[real * w..].fill(0);
        // Per line, the first pair the fast paths left to the element-by-element loop.
        let mut from_p = [0usize; 32];
        let from_p = &mut from_p[..valid];
        if k_stride == 1 && line_stride.is_multiple_of(2) {
            // Pairs are adjacent: each line is a row of words, transposed 8 x 8 in registers.
            transpose_words(m, line_stride, w, l0, valid, ks.clone(), dst, from_p);
        } else if line_stride == 1 {
            // Lines are adjacent (B row-major): interleave two k rows.
            for p in 0..real {
                let k = ks.start + 2 * p;
                let low = &m.data[at(l0, k)..at(l0, k) + valid];
                let row = &mut dst[p * w..p * w + valid];
                if k + 1 < ks.end {
                    let high = &m.data[at(l0, k + 1)..at(l0, k + 1) + valid];
                    for ((o, lo), hi) in row.iter_mut().zip(low).zip(high) {
                        *o = lo.to_bits() as u32 | (hi.to_bits() as u32) << 16;
                    }
                } else {
                    for (o, lo) in row.iter_mut().zip(low) {
                        *o = lo.to_bits() as u32;
                    }
                }
            }
            from_p.fill(real);
        }
        for (l, &p0) in from_p.iter().enumerate() {
            for p in p0..real {
                dst[p * w + l] = pair(m, line_stride, k_stride, l0 + l, ks.start + 2 * p, ks.end);
            }
        }
    }
}

/// dst = src for the runs `pack_row_chunks` copies (one tile row: up to 32 bf16), with the common
/// lengths as fixed-size moves rather than a memmove call per run.
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    fn fixed<T: Copy, const N: usize>(dst: &mut [T], src: &[T]) -> bool {
        match (<&mut [T; N]>::try_from(dst), <&[T; N]>::try_from(src)) {
            (Ok(d), Ok(s)) => {
                *d = *s;
                true
            }
            _ => false,
        }
    }
    if !(fixed::<T, 32>(dst, src) || fixed::<T, 16>(dst, src) || fixed::<T, 8>(dst, src)) {
        dst.copy_from_slice(src);
    }
}

/// Packs rows of A for the AMX kernel: panels of `w` rows, each a run of chunks of 16 pairs
/// (one 64-byte tile row per matrix row): out[panel][chunk][row][16], zero-padded. A row-major
/// A (pairs adjacent) is copied 64 bytes at a time.
fn pack_row_chunks(a: &MatRef<bf16>, w: usize, rows: Range<usize>, ks: Range<usize>, depth: usize, out: &mut [u32]) {
    let chunks = depth / 16;
    for (panel, r0) in rows.clone().step_by(w).enumerate() {
        let dst = &mut out[panel * depth * w..(panel + 1) * depth * w];
        let valid = w.min(rows.end - r0);
        if valid < w || ks.len() < depth * 2 {
            dst.fill(0);
        }
        for r in 0..valid {
            for c in 0..chunks {
                let k0 = ks.start + 32 * c;
                let run = &mut dst[(c * w + r) * 16..(c * w + r + 1) * 16];
                let len = 32.min(ks.end - k0);
                if a.cs == 1 {
                    let start = a.offset + (r0 + r) * a.rs + k0;
                    let src: &[u16] = bytemuck::cast_slice(&a.data[start..start + len]);
                    copy_run(&mut bytemuck::cast_slice_mut::<u32, u16>(run)[..len], src);
                } else {
                    for (p, word) in run.iter_mut().enumerate().take(len.div_ceil(2)) {
                        *word = pair(a, a.rs, a.cs, r0 + r, k0 + 2 * p, ks.end);
                    }
                }
            }
        }
    }
}

/// The k-contiguous case of `pack_pairs` with AVX2: 8 lines x 8 whole pairs at a time go through
/// the f32 8 x 8 register transpose (a pair is 32 bits). Sets `from_p[l]` to the first pair of
/// line l it did not write (the caller packs the rest one by one).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn transpose_words(
    m: &MatRef<bf16>,
    line_stride: usize,
    w: usize,
    l0: usize,
    valid: usize,
    ks: Range<usize>,
    dst: &mut [u32],
    from_p: &mut [usize],
) {
    #[cfg(target_arch = "x86_64")]
    if w >= 8 && simd::level() >= SimdLevel::Avx2Fma {
        let whole = ks.len() / 2;
        let (full_l, full_p) = (valid / 8 * 8, whole / 8 * 8);
        let base = m.offset + l0 * line_stride + ks.start;
        if full_l > 0 && full_p > 0 {
            // The last element read: line full_l - 1, k = ks.start + 2 * full_p - 1.
            assert!(base + (full_l - 1) * line_stride + 2 * full_p <= m.data.len() && dst.len() >= full_p * w);
            // SAFETY: every read is inside the bounds checked above (unaligned 32-byte loads of
            // bf16 pairs), every write inside dst; f32 loads and stores move the bits unchanged.
            unsafe {
                let src = m.data.as_ptr().add(base);
                let out = dst.as_mut_ptr() as *mut f32;
                for lb in (0..full_l).step_by(8) {
                    for pb in (0..full_p).step_by(8) {
                        let from = src.add(lb * line_stride + 2 * pb) as *const f32;
                        super::gemm::x86::transpose_8x8(from, line_stride / 2, out.add(pb * w + lb), w);
                    }
                }
            }
            from_p[..full_l].fill(full_p);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 8 x 32 tile over `depth` k pairs: 16 zmm accumulators, two B vectors (32 columns x 2 k)
    /// and one broadcast pair per step.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn kernel_8x32_bf16(depth: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize) {
        let mut acc = [[_mm512_setzero_ps(); 2]; 8];
        for p in 0..depth {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * 32) as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * 32 + 16) as *const _));
            for (i, row) in acc.iter_mut().enumerate() {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(p * 8 + i) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let cp = c.add(i * ldc);
            _mm512_storeu_ps(cp, _mm512_add_ps(_mm512_loadu_ps(cp), row[0]));
            _mm512_storeu_ps(cp.add(16), _mm512_add_ps(_mm512_loadu_ps(cp.add(16)), row[1]));
        }
    }

    /// `vdpbf16ps` on 12 independent accumulators: 12 x 64 FLOPs per iteration.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn peak_loop(iterations: u64) -> f64 {
        let ones: __m512bh = std::mem::transmute(_mm512_set1_epi16(0x3f80));
        let mut acc = [_mm512_setzero_ps(); 12];
        for _ in 0..iterations {
            for x in &mut acc {
                *x = _mm512_dpbf16_ps(*x, ones, ones);
            }
        }
        std::hint::black_box(acc);
        (iterations * 12 * 64) as f64
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use std::arch::asm;
    use std::cell::Cell;

    /// Whether the CPU has AMX-TILE and AMX-BF16 and the OS lets this process use tile data
    /// (Linux grants it on request, once per process).
    pub fn ready() -> bool {
        static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *READY.get_or_init(|| {
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
            amx_bf16 && amx_tile && request_tile_data()
        })
    }

    /// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): 0 when granted.
    #[cfg(target_os = "linux")]
    fn request_tile_data() -> bool {
        const SYS_ARCH_PRCTL: isize = 158;
        const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
        const XFEATURE_XTILEDATA: usize = 18;
        let ret: isize;
        // SAFETY: a plain system call; it changes only this process's permission.
        unsafe {
            asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM, in("rsi") XFEATURE_XTILEDATA,
                 lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret == 0
    }

    #[cfg(not(target_os = "linux"))]
    fn request_tile_data() -> bool {
        false
    }

    /// ldtilecfg's operand: palette 1, eight tiles of 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    thread_local! {
        // Tile configuration is per thread (saved with the thread's state); set it once.
        static CONFIGURED: Cell<bool> = const { Cell::new(false) };
    }

    unsafe fn configure() {
        if CONFIGURED.get() {
            return;
        }
        let mut cfg = TileConfig([0; 64]);
        cfg.0[0] = 1;
        for t in 0..8 {
            cfg.0[16 + 2 * t] = 64;
            cfg.0[48 + t] = 16;
        }
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        CONFIGURED.set(true);
    }

    /// 32 x 32 f32 C tile += A panel (chunks of 32 rows x 16 pairs) x B panel (16 pairs x 32
    /// columns per chunk). tmm0..3 hold C's four 16 x 16 quarters, tmm4/5 A's upper and lower
    /// rows, tmm6/7 B's left and right columns: four `tdpbf16ps` (16 x 16 x 32 each) per chunk.
    pub unsafe fn kernel_32x32(depth: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize) {
        configure();
        let (c1, c2, c3) = (c.add(16), c.add(16 * ldc), c.add(16 * ldc + 16));
        asm!(
            "tileloadd tmm0, [{c0} + {s}*1]",
            "tileloadd tmm1, [{c1} + {s}*1]",
            "tileloadd tmm2, [{c2} + {s}*1]",
            "tileloadd tmm3, [{c3} + {s}*1]",
            c0 = in(reg) c, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) ldc * 4,
            options(nostack, readonly),
        );
        for chunk in 0..depth / 16 {
            let (ap, bp) = (a.add(chunk * 32 * 16), b.add(chunk * 16 * 32));
            asm!(
                "tileloadd tmm4, [{a0} + {s64}*1]",
                "tileloadd tmm5, [{a1} + {s64}*1]",
                "tileloadd tmm6, [{b0} + {s128}*1]",
                "tileloadd tmm7, [{b1} + {s128}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) ap, a1 = in(reg) ap.add(16 * 16), b0 = in(reg) bp, b1 = in(reg) bp.add(16),
                s64 = in(reg) 64usize, s128 = in(reg) 128usize,
                options(nostack, readonly),
            );
        }
        asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) c, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) ldc * 4,
            options(nostack),
        );
    }

    /// Four `tdpbf16ps` on zeroed tiles per iteration: 4 x 16 x 16 x 32 x 2 FLOPs.
    pub unsafe fn peak_loop(iterations: u64) -> f64 {
        configure();
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7",
            options(nostack, nomem)
        );
        for _ in 0..iterations {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            );
        }
        (iterations * 4 * 16 * 16 * 32 * 2) as f64
    }
}

/// Runs `iterations` rounds of `kernel`'s multiply instruction on register-resident operands (no
/// memory traffic) on the calling thread and returns the FLOPs done: the bf16 peak that
/// `vlk ceilings` reports.
pub fn peak_probe(kernel: Bf16Kernel, iterations: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: `kernel` came from `available`, so the CPU (and OS) run its instructions.
        Bf16Kernel::Amx => unsafe { amx::peak_loop(iterations) },
        Bf16Kernel::Avx512 => unsafe { x86::peak_loop(iterations) },
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no bf16 kernel is available off x86_64 ({kernel:?}, {iterations})")
}

/// For each batch b: C_b (f32, contiguous after one another) = A_b B_b, or += with
/// `CStart::Add`, in bf16 with f32 sums, on `kernel`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_batched_bf16(
    kernel: Bf16Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: &[MatRef<bf16>],
    b: &[MatRef<bf16>],
    c: &mut [MaybeUninit<f32>],
    start: CStart,
    b_derived: Option<&Derived>,
) {
    let operands: Vec<Bf16Operands> = a.iter().zip(b).map(|(a, b)| Bf16Operands { a, b, kernel }).collect();
    gemm_batched_with(m, n, k, &operands, &kernel.micro_kernel(), c, start, b_derived);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::gemm::as_uninit;

    /// Every kernel this CPU has, on shapes that cross the 8/32-row and 32-column tiles, the
    /// 32-k AMX chunk and the 512-k slice, with odd k and all four operand orders.
    #[test]
    fn each_kernel_matches_f64() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        };
        for kernel in Bf16Kernel::available() {
            for &(m, n, k) in &[(1, 1, 1), (7, 33, 31), (33, 31, 65), (40, 70, 600), (96, 64, 1030), (5, 100, 2)] {
                let a: Vec<bf16> = (0..m * k).map(|_| bf16::from_f32(next())).collect();
                let b: Vec<bf16> = (0..k * n).map(|_| bf16::from_f32(next())).collect();
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    // Row-major, or the transpose's storage read through strides.
                    let ma = if ta {
                        MatRef {
                            data: &a,
                            offset: 0,
                            rs: 1,
                            cs: m,
                        }
                    } else {
                        MatRef {
                            data: &a,
                            offset: 0,
                            rs: k,
                            cs: 1,
                        }
                    };
                    let mb = if tb {
                        MatRef {
                            data: &b,
                            offset: 0,
                            rs: 1,
                            cs: k,
                        }
                    } else {
                        MatRef {
                            data: &b,
                            offset: 0,
                            rs: n,
                            cs: 1,
                        }
                    };
                    let at = |i: usize, p: usize| a[i * ma.rs + p * ma.cs].to_f64();
                    let bt = |p: usize, j: usize| b[p * mb.rs + j * mb.cs].to_f64();
                    let mut c = vec![0f32; m * n];
                    gemm_batched_bf16(kernel, m, n, k, &[ma], &[mb], as_uninit(&mut c), CStart::Add, None);
                    for i in 0..m {
                        for j in 0..n {
                            let want: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() < 1e-5 * (k as f64).sqrt() * 4.0,
                                "{kernel:?} {m}x{n}x{k} ta {ta} tb {tb} ({i},{j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
