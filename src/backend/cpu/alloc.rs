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
