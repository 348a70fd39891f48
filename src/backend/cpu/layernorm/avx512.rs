//! Layer norm rows in f32 for AVX-512, written with intrinsics, one row at a time (rows in
//! lockstep, sharing gamma's loads, measured slower: at 4 KiB strides their lines contend for
//! the same L1 sets).
//!
//! Forward: three sweeps of a row (sum, sum of squared deviations, output), the first from
//! memory, the other two from L1. Backward: two sweeps (the sums of dxhat and dxhat * xhat; then
//! dx, dgamma and dbeta). The sums keep four accumulators each, so the adds are not one
//! dependency chain. The output sweep prefetches the inputs `AHEAD_BYTES` on, into L2
//! (`vmath::prefetch`): spread over the sweep that computes most, the requests keep memory busy
//! while the row is worked on (prefetching from the first sweep measured 10-20% slower).
//!
//! A large output's whole 16-column blocks are written with non-temporal stores
//! (`stream::Writer`'s reasoning) when they start on 64-byte lines: a masked head block gets
//! them there. Rows whose width is not a multiple of 16 fall on different line offsets and are
//! stored plainly (the forward leaves such widths to the generic rows). Sums go by
//! blocks from the row's start whatever the output's alignment, so a row's result is the same
//! bits in any output.
//!
//! Per element: forward 3 loads (two from L1), 1 store, 7 flops; backward 6 loads (4 from L1), 3
//! stores (dgamma and dbeta to L1), 12 flops.

use super::super::vmath::prefetch;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// How far ahead of the block being read the input is prefetched: sixteen rows of 1024. On the
/// EPYC VM, 32768x1024 backward took 14.0 ms (medians of four alternating runs) against 15.2 at
/// 32 KiB and 14.0 at 128 KiB; the forward was the same (16 KiB was a little slower than 32).
/// Prefetching every fourth line only, or only x (for the hardware prefetcher to fill in),
/// was 20-40% slower.
const AHEAD_BYTES: usize = 64 << 10;

/// Accumulators per sum.
const CHAINS: usize = 4;

/// Where the 16-column blocks of a row start and how the output is stored.
#[derive(Clone, Copy)]
struct Blocks {
    c: usize,
    /// Columns before the first whole block (to reach a 64-byte line of the output).
    head: usize,
    /// Whole blocks stored non-temporally.
    stream: bool,
}

impl Blocks {
    /// The blocks of a sum: from the row's start, so that a row's sum does not depend on
    /// where the output lies.
    fn sum(c: usize) -> Blocks {
        Blocks { c, head: 0, stream: false }
    }

    /// The blocks of an output sweep. Streaming needs every row's blocks on the same line
    /// offsets, so c a multiple of 16.
    fn output(c: usize, out: *const MaybeUninit<f32>, stream: bool) -> Blocks {
        let stream = stream && c.is_multiple_of(16);
        let head = if stream { out.align_offset(64).min(c) } else { 0 };
        Blocks { c, head, stream }
    }

    /// Calls f(first column, lanes, whole, chain) for the head, the whole blocks and the tail;
    /// chain (< CHAINS) picks an accumulator, so that consecutive whole blocks use different
    /// ones.
    #[inline(always)]
    fn each(self, mut f: impl FnMut(usize, __mmask16, bool, usize)) {
        if self.head > 0 {
            f(0, lanes(self.head), false, 0);
        }
        let mut j = self.head;
        while j + 16 * CHAINS <= self.c {
            for chain in 0..CHAINS {
                f(j + 16 * chain, !0, true, chain);
            }
            j += 16 * CHAINS;
        }
        while j + 16 <= self.c {
            f(j, !0, true, 0);
            j += 16;
        }
        if j < self.c {
            f(j, lanes(self.c - j), false, 0);
        }
    }
}

fn lanes(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// # Safety
/// AVX-512F; the lanes of p under m readable.
#[inline(always)]
unsafe fn load(p: *const f32, m: __mmask16, whole: bool) -> __m512 {
    // SAFETY: as the caller guarantees.
    unsafe {
        if whole {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(m, p)
        }
    }
}

/// # Safety
/// AVX-512F; the lanes of p under m writable, and p 64-byte aligned when whole and streaming.
#[inline(always)]
unsafe fn store(p: *mut f32, v: __m512, m: __mmask16, whole: bool, stream: bool) {
    // SAFETY: as the caller guarantees.
    unsafe {
        if whole && stream {
            _mm512_stream_ps(p, v)
        } else if whole {
            _mm512_storeu_ps(p, v)
        } else {
            _mm512_mask_storeu_ps(p, m, v)
        }
    }
}

/// Asks for the line `AHEAD_BYTES` past p, into L2.
#[inline(always)]
fn prefetch_ahead(p: *const f32) {
    prefetch((p as *const u8).wrapping_add(AHEAD_BYTES));
}

/// The sum of the lanes of all accumulators.
#[inline(always)]
fn total(acc: [__m512; CHAINS]) -> f32 {
    // SAFETY: only reached from the AVX-512F functions below.
    unsafe { _mm512_reduce_add_ps(acc.into_iter().reduce(|a, b| _mm512_add_ps(a, b)).unwrap_or(_mm512_setzero_ps())) }
}

/// y, mean and 1/std for rows of x (rows x c, c = g.len()).
///
/// # Safety
/// AVX-512F present; y and x hold mean.len() rows of g.len() elements; b and g, and rstd and
/// mean, have equal lengths.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn forward_rows(
    stream: bool,
    y: &mut [MaybeUninit<f32>],
    x: &[f32],
    g: &[f32],
    b: &[f32],
    eps: f32,
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let c = g.len();
    let (sums, blocks) = (Blocks::sum(c), Blocks::output(c, y.as_ptr(), stream));
    let n = c as f32;
    let (g, b) = (g.as_ptr(), b.as_ptr());
    for (row, (mu_out, rstd_out)) in mean.iter_mut().zip(rstd).enumerate() {
        let x = x.as_ptr().add(row * c);
        let y = y.as_mut_ptr().add(row * c) as *mut f32;

        let mut sum = [_mm512_setzero_ps(); CHAINS];
        sums.each(|j, m, whole, k| {
            sum[k] = _mm512_add_ps(sum[k], load(x.add(j), m, whole));
        });
        let mu = total(sum) / n;
        let mu_v = _mm512_set1_ps(mu);

        let mut sq = [_mm512_setzero_ps(); CHAINS];
        sums.each(|j, m, whole, k| {
            // Masked lanes load 0; their deviation is kept out of the sum.
            let d = _mm512_maskz_sub_ps(m, load(x.add(j), m, whole), mu_v);
            sq[k] = _mm512_fmadd_ps(d, d, sq[k]);
        });
        let r = 1.0 / (total(sq) / n + eps).sqrt();
        let r_v = _mm512_set1_ps(r);

        blocks.each(|j, m, whole, _| {
            prefetch_ahead(x.add(j));
            let xhat = _mm512_mul_ps(_mm512_sub_ps(load(x.add(j), m, whole), mu_v), r_v);
            let out = _mm512_fmadd_ps(xhat, load(g.add(j), m, whole), load(b.add(j), m, whole));
            store(y.add(j), out, m, whole, blocks.stream);
        });
        (*mu_out, *rstd_out) = (mu, r);
    }
}

/// dx for rows of x and dy (rows x c, c = g.len()), adding their dgamma and dbeta terms into dg
/// and db.
///
/// # Safety
/// AVX-512F present; dx, x and dy hold mean.len() rows of g.len() elements; rstd has
/// mean.len(), dg and db g.len().
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn backward_rows(
    stream: bool,
    dx: &mut [MaybeUninit<f32>],
    x: &[f32],
    dy: &[f32],
    g: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dg: &mut [f32],
    db: &mut [f32],
) {
    let c = g.len();
    let (sums, blocks) = (Blocks::sum(c), Blocks::output(c, dx.as_ptr(), stream));
    let n = c as f32;
    let (g, dg, db) = (g.as_ptr(), dg.as_mut_ptr(), db.as_mut_ptr());
    for (row, (&mu, &r)) in mean.iter().zip(rstd).enumerate() {
        let (x, dy) = (x.as_ptr().add(row * c), dy.as_ptr().add(row * c));
        let dx = dx.as_mut_ptr().add(row * c) as *mut f32;
        let (mu, r) = (_mm512_set1_ps(mu), _mm512_set1_ps(r));

        // dxhat = dy * gamma, xhat = (x - mean) * rstd: sum(dxhat) and sum(dxhat * xhat).
        let (mut sum, mut sum_xhat) = ([_mm512_setzero_ps(); CHAINS], [_mm512_setzero_ps(); CHAINS]);
        sums.each(|j, m, whole, k| {
            let dxhat = _mm512_mul_ps(load(dy.add(j), m, whole), load(g.add(j), m, whole));
            let xhat = _mm512_mul_ps(_mm512_sub_ps(load(x.add(j), m, whole), mu), r);
            sum[k] = _mm512_add_ps(sum[k], dxhat);
            sum_xhat[k] = _mm512_fmadd_ps(dxhat, xhat, sum_xhat[k]);
        });
        let (a, bq) = (_mm512_set1_ps(total(sum) / n), _mm512_set1_ps(total(sum_xhat) / n));

        // dx = rstd * (dxhat - a - xhat * bq); dgamma += dy * xhat; dbeta += dy.
        blocks.each(|j, m, whole, _| {
            prefetch_ahead(x.add(j));
            prefetch_ahead(dy.add(j));
            let dyj = load(dy.add(j), m, whole);
            let xhat = _mm512_mul_ps(_mm512_sub_ps(load(x.add(j), m, whole), mu), r);
            let t = _mm512_fnmadd_ps(xhat, bq, _mm512_fmsub_ps(dyj, load(g.add(j), m, whole), a));
            store(dx.add(j), _mm512_mul_ps(t, r), m, whole, blocks.stream);
            store(dg.add(j), _mm512_fmadd_ps(dyj, xhat, load(dg.add(j), m, whole)), m, whole, false);
            store(db.add(j), _mm512_add_ps(dyj, load(db.add(j), m, whole)), m, whole, false);
        });
    }
}
