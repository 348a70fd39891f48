//! Keeps the thread pool awake between CPU ops. A rayon worker with nothing to do goes to sleep
//! after a few tens of microseconds, and waking it costs 45-75 us on the development VM (a join
//! of two 100 us halves takes 144-175 us after a 20 us pause, 102 us back to back): more than
//! many ops of a small model take. So after each CPU op, if no "warm" job exists, one is spawned;
//! it stays on an idle worker and takes pool work the moment it appears (`rayon::yield_now`),
//! until no CPU op has finished for `VLK_CPU_SPIN_US` microseconds (default 2000; 0 turns this
//! off); then it ends and the worker sleeps as before. OpenMP runtimes do the same (KMP_BLOCKTIME,
//! 200 ms by default), which is part of why PyTorch's small ops start fast. Small CLIP training
//! step: 91-93 ms against 102-105.
//!
//! The warm job never spins on the thread that last finished an op: a worker that picks up a job
//! while it waits inside a join runs that job above its wait, which would hold the wait until
//! the job ended. There it ends at once, and the next op spawns another.

use super::env_whole_number;
use crate::Result;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// CPU ops finished so far: the warm job ends when this stops moving.
static ACTIVITY: AtomicU64 = AtomicU64::new(0);
/// Whether a warm job is queued or running.
static WARM: AtomicBool = AtomicBool::new(false);
/// The pool index of the thread that last finished an op (usize::MAX: outside the pool).
static OP_THREAD: AtomicUsize = AtomicUsize::new(usize::MAX);

const DEFAULT_SPIN_US: u64 = 2000;

/// `VLK_CPU_SPIN_US`: how long the pool stays awake after a CPU op, in microseconds (default
/// 2000, 0 for not at all). Anything but a whole number is an error naming the variable.
pub fn env_spin_us() -> Result<u64> {
    env_whole_number(
        "VLK_CPU_SPIN_US",
        DEFAULT_SPIN_US,
        "microseconds (0 lets idle workers sleep at once)",
    )
}

/// The idle window (read once; an invalid value, which the `vlk` binary rejects at start, keeps
/// the default here).
fn window() -> Duration {
    static WINDOW: OnceLock<Duration> = OnceLock::new();
    *WINDOW.get_or_init(|| Duration::from_micros(env_spin_us().unwrap_or(DEFAULT_SPIN_US)))
}

/// Called as each CPU op finishes: counts the op and makes sure a warm job exists.
pub(super) fn op_finished() {
    if window().is_zero() || rayon::current_num_threads() < 2 {
        return;
    }
    ACTIVITY.fetch_add(1, Ordering::Relaxed);
    OP_THREAD.store(rayon::current_thread_index().unwrap_or(usize::MAX), Ordering::Relaxed);
    // A plain load first: most ops find the job running, and skip the locked swap.
    if !WARM.load(Ordering::Acquire) && !WARM.swap(true, Ordering::AcqRel) {
        rayon::spawn(warm_job);
    }
}

/// Whether a warm job is queued or running now.
pub fn pool_kept_warm() -> bool {
    WARM.load(Ordering::Acquire)
}

/// Takes pool work as it appears until no op has finished for the idle window.
fn warm_job() {
    if rayon::current_thread_index() != Some(OP_THREAD.load(Ordering::Relaxed)) {
        let mut seen = ACTIVITY.load(Ordering::Relaxed);
        let mut since = Instant::now();
        while let Some(outcome) = rayon::yield_now() {
            let now = ACTIVITY.load(Ordering::Relaxed);
            if now != seen || outcome == rayon::Yield::Executed {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() > window() {
                break;
            } else {
                std::hint::spin_loop();
            }
        }
    }
    WARM.store(false, Ordering::Release);
}
