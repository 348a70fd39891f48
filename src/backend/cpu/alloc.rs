//! Host allocation policy for tensor buffers.
//!
//! glibc serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB) with a
//! fresh mmap and returns it with munmap on free. Tensors above that size (activations, gradients,
//! logits) are then new pages on every op: each first touch is a page fault that zeroes 4 KiB, and
//! a 256 MiB output costs ~65k faults, several times the op itself (a copy of 64M floats: 190 ms
//! against 26 ms once pages are reused). Raising the mmap and trim thresholds keeps freed buffers
//! in the heap, so the next op of the same size reuses pages that are already mapped: the
//! reusable workspace, without a second allocator. Threads other than the main one get glibc
//! arenas of their own, which serve large blocks by mmap whatever the threshold, so all threads
//! share the main arena. Done once, on the first use of the CPU backend; the `vlk` binary does it
//! before its thread pool starts (an arena is tied to a thread at its first allocation).
//!
//! `LineAlignedAlloc` starts every allocation of 1 KiB or more on a 64-byte cache line, as
//! PyTorch's CPU allocator does. glibc aligns to 16 bytes, so a tensor's rows usually begin 16,
//! 32 or 48 bytes into a line, and every 64-byte AVX-512 load or store of them straddles two
//! lines, which costs two L1 accesses (a misaligned store, more). Layer norm at 32768x1024 on the
//! EPYC VM (2 threads, alternating runs): backward 14.6-16.8 -> 9.4-10.1 ms, forward 7.4-8.2 ->
//! 5.6-6.2 ms; one thread, backward 24-28 -> 13.6-15.8 ms. The `vlk` binary installs it, and the
//! benches; a program embedding vlk can too (`#[global_allocator]`). Kernels are correct at any
//! alignment (views start anywhere), so it is a matter of speed only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Once;

pub fn keep_freed_buffers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; called before any large allocation
        // this backend makes, and glibc's allocator is thread-safe.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    });
}

/// The system allocator, with allocations of `LINE_ALIGNED_BYTES` or more on 64-byte lines.
pub struct LineAlignedAlloc;

/// The size from which allocations start on a cache line: rows of a few hundred floats (gamma
/// at 768, a 1 KiB partial row) are aligned, small objects keep glibc's packing.
const LINE_ALIGNED_BYTES: usize = 1024;

/// The layout the system allocator is asked for, in place of `layout`. It depends on the size
/// and alignment alone, so alloc and dealloc of one block agree.
fn line_layout(layout: Layout) -> Layout {
    if layout.size() >= LINE_ALIGNED_BYTES {
        layout.align_to(64).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every call goes to the system allocator with `line_layout` of the caller's layout,
// which keeps its size and never lowers its alignment; a block is freed or resized with the
// layout it was allocated with, since line_layout is a function of the layout.
unsafe impl GlobalAlloc for LineAlignedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: line_layout(layout) has layout's non-zero size.
        unsafe { System.alloc(line_layout(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(line_layout(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated above with line_layout(layout).
        unsafe { System.dealloc(ptr, line_layout(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that new_size, rounded to layout's alignment, fits isize.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let (old_line, new_line) = (line_layout(layout), line_layout(new));
        if old_line.align() == new_line.align() {
            // SAFETY: ptr was allocated with old_line; the system allocator keeps its alignment.
            return unsafe { System.realloc(ptr, old_line, new_size) };
        }
        // Across the threshold: a new block, the bytes both hold, the old one freed.
        // SAFETY: new_line has a non-zero size; both blocks hold at least the bytes copied.
        unsafe {
            let out = System.alloc(new_line);
            if !out.is_null() {
                std::ptr::copy_nonoverlapping(ptr, out, layout.size().min(new_size));
                System.dealloc(ptr, old_line);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_start_on_lines_and_keep_their_bytes_when_resized() {
        let a = LineAlignedAlloc;
        // Sizes below, at and above the threshold; resized up and down across it.
        for (size, new_size) in [(8, 4096), (1000, 1024), (1024, 100_000), (100_000, 1500), (5000, 16), (1, 1)] {
            let layout = Layout::from_size_align(size, 4).unwrap();
            // SAFETY: non-zero sizes; each block is freed once, with its current layout.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert!(
                    size < LINE_ALIGNED_BYTES || (p as usize).is_multiple_of(64),
                    "{size} bytes at {p:?}"
                );
                for i in 0..size {
                    *p.add(i) = (i % 251) as u8;
                }
                let q = a.realloc(p, layout, new_size);
                assert!(!q.is_null());
                assert!(
                    new_size < LINE_ALIGNED_BYTES || (q as usize).is_multiple_of(64),
                    "{new_size} bytes at {q:?}"
                );
                for i in 0..size.min(new_size) {
                    assert_eq!(*q.add(i), (i % 251) as u8, "byte {i} of {size} -> {new_size}");
                }
                a.dealloc(q, Layout::from_size_align(new_size, 4).unwrap());
                let z = a.alloc_zeroed(layout);
                assert!((0..size).all(|i| *z.add(i) == 0));
                a.dealloc(z, layout);
            }
        }
    }
}
