//! Writing outputs too large for the cache. A plain store to a line that is not cached first
//! reads it (read for ownership), so an op that reads x and writes y moves three bytes for every
//! two it needs; a non-temporal store writes whole lines without reading them. On the
//! development VM, y = a x + b over 128 MiB ran at 20 GB/s with plain stores and 31 GB/s with
//! non-temporal ones (the memcpy ceiling); at 16 MiB and below, plain stores won as soon as y was
//! read back, since y was still cached. So outputs of `STREAM_BYTES` or more are streamed.
//!
//! Element loops written generically (and vectorised by the compiler) cannot emit non-temporal
//! stores, so a streamed output is filled a piece at a time into a small scratch in L1 that is
//! then stored out in 64-byte lines. Pieces of 512 bytes keep the loads of the inputs and the
//! stores interleaved: 16 KiB pieces, computed and then stored in bursts, lost a third of the
//! gain.

use std::mem::{size_of, MaybeUninit};

/// Outputs of this many bytes or more are written with non-temporal stores.
const STREAM_BYTES: usize = 32 << 20;

/// Bytes of one scratch piece.
const PIECE_BYTES: usize = 512;

#[repr(C, align(64))]
struct Scratch([MaybeUninit<u8>; PIECE_BYTES]);

/// How one op writes its output: plain stores, or non-temporal ones for a large output.
#[derive(Clone, Copy)]
pub struct Writer {
    stream: bool,
}

impl Writer {
    /// The writer for an output of `len` elements of T.
    pub fn for_output<T>(len: usize) -> Writer {
        Writer {
            stream: Self::can_stream::<T>() && len * size_of::<T>() >= STREAM_BYTES,
        }
    }

    /// Whether this output is streamed: kernels that store for themselves stream their whole
    /// 64-byte lines when it is.
    pub fn streams(self) -> bool {
        self.stream
    }

    /// Whether outputs of T can be streamed here: the target has non-temporal stores and T
    /// divides a 64-byte line.
    fn can_stream<T>() -> bool {
        let size = size_of::<T>();
        cfg!(target_arch = "x86_64") && size > 0 && 64 % size == 0
    }

    /// The elements of dst written plainly before the streamed rest: those before its first
    /// 64-byte boundary, or all of them when not streaming.
    fn plain_head<T>(self, dst: &[MaybeUninit<T>]) -> usize {
        if self.stream {
            dst.as_ptr().align_offset(64).min(dst.len())
        } else {
            dst.len()
        }
    }

    /// Writes `dst` by `fill(first, piece)`, where piece stands for dst[first..first +
    /// piece.len()]: dst itself when plain, else consecutive pieces of a scratch that are then
    /// streamed. `fill` must write every element of each piece it is given. Call `finish` before
    /// the thread's task ends. `fill` has one call site here, so that it is inlined once into the
    /// caller's vectorised build (called from two places, it was left out of line, in SSE2).
    #[inline(always)]
    pub fn fill<T: Copy>(self, dst: &mut [MaybeUninit<T>], mut fill: impl FnMut(usize, &mut [MaybeUninit<T>])) {
        // Plain: all of dst at once. Streamed: the plain head, then the rest in scratch pieces.
        let head = self.plain_head(dst);
        let mut scratch = Scratch([MaybeUninit::uninit(); PIECE_BYTES]);
        // SAFETY: the scratch is 64-byte aligned and holds PIECE_BYTES bytes, a whole number of
        // T when streaming (size_of::<T>() divides 64, checked in for_output).
        let piece =
            unsafe { std::slice::from_raw_parts_mut(scratch.0.as_mut_ptr() as *mut MaybeUninit<T>, PIECE_BYTES / size_of::<T>().max(1)) };
        let mut first = 0;
        while first < dst.len() {
            let streamed = first >= head;
            let len = if streamed {
                piece.len().min(dst.len() - first)
            } else {
                head - first
            };
            let target = if streamed {
                &mut piece[..len]
            } else {
                &mut dst[first..first + len]
            };
            fill(first, target);
            if streamed {
                // SAFETY: both hold len elements; this piece of dst starts on a 64-byte
                // boundary (head moved it there and every piece is a whole number of lines);
                // fill wrote the scratch.
                unsafe {
                    store_lines(
                        dst[first..].as_mut_ptr() as *mut u8,
                        piece.as_ptr() as *const u8,
                        len * size_of::<T>(),
                    )
                };
            }
            first += len;
        }
    }

    /// dst = src, streamed straight from src when the output is large.
    pub fn copy<T: Copy>(self, dst: &mut [MaybeUninit<T>], src: &[T]) {
        assert_eq!(dst.len(), src.len(), "Writer::copy: lengths differ");
        let head = self.plain_head(dst);
        // SAFETY: both ranges are in bounds, of equal lengths, and a fresh dst cannot overlap src.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr() as *mut T, head);
            store_lines(
                dst[head..].as_mut_ptr() as *mut u8,
                src[head..].as_ptr() as *const u8,
                std::mem::size_of_val(&src[head..]),
            );
        }
    }

    /// Orders this thread's non-temporal stores before anything after it, which Rust requires
    /// before the memory is used again; call it once at the end of each task that wrote.
    #[inline(always)]
    pub fn finish(self) {
        #[cfg(target_arch = "x86_64")]
        if self.stream {
            // SAFETY: sfence has no preconditions (SSE is part of x86_64).
            unsafe { std::arch::x86_64::_mm_sfence() };
        }
    }
}

/// dst = src with non-temporal stores whatever the size (where the target has them): the copy
/// `vlk ceilings` and `vlk bench` time as the memory ceiling. glibc's memcpy of 256 MiB per
/// thread moved 15-20 GB/s on the development VM, this copy 30-35.
pub fn copy_streamed<T: Copy>(dst: &mut [T], src: &[T]) {
    let writer = Writer {
        stream: Writer::can_stream::<T>(),
    };
    // SAFETY: MaybeUninit<T> has T's layout, and the copy writes only initialised values.
    let dst = unsafe { &mut *(dst as *mut [T] as *mut [MaybeUninit<T>]) };
    writer.copy(dst, src);
    writer.finish();
}

/// Copies `bytes` from src to dst (64-byte aligned): whole lines with non-temporal stores, the
/// rest plainly.
///
/// # Safety
/// Both ranges must be valid for `bytes` and not overlap; dst must be 64-byte aligned.
unsafe fn store_lines(dst: *mut u8, src: *const u8, bytes: usize) {
    let lines = bytes / 64;
    #[cfg(target_arch = "x86_64")]
    {
        if super::simd::level() == super::simd::SimdLevel::Avx512 {
            // SAFETY: the feature was detected; the caller's guarantees cover the lines.
            unsafe { x86::lines_avx512(dst, src, lines) };
        } else {
            // SAFETY: SSE2 is part of x86_64; as above.
            unsafe { x86::lines_sse2(dst, src, lines) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let lines = 0;
    let done = lines * 64;
    // SAFETY: the rest of both ranges, as the caller guarantees.
    unsafe { std::ptr::copy_nonoverlapping(src.add(done), dst.add(done), bytes - done) };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F present; `lines` 64-byte lines readable at src and writable at dst (aligned).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn lines_avx512(dst: *mut u8, src: *const u8, lines: usize) {
        for i in 0..lines {
            // SAFETY: line i is within both ranges and dst's lines are aligned.
            unsafe {
                let v = _mm512_loadu_si512(src.add(64 * i) as *const _);
                _mm512_stream_si512(dst.add(64 * i) as *mut _, v);
            }
        }
    }

    /// # Safety
    /// `lines` 64-byte lines readable at src and writable at dst (64-byte aligned).
    pub unsafe fn lines_sse2(dst: *mut u8, src: *const u8, lines: usize) {
        for i in 0..4 * lines {
            // SAFETY: 16-byte unit i is within both ranges and dst's units are aligned.
            unsafe {
                let v = _mm_loadu_si128(src.add(16 * i) as *const __m128i);
                _mm_stream_si128(dst.add(16 * i) as *mut __m128i, v);
            }
        }
    }
}
