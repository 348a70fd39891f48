//! The two signals the command line cares about, through libc's `signal` (declared here once).

use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(unix)]
unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

/// Lets `vlk ... | head` end quietly: Rust ignores SIGPIPE, which turns a closed pipe into a
/// panic inside println!. The default action ends the process as other Unix tools do.
pub fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: resetting a signal to its default action (SIG_DFL = 0) has no preconditions.
    unsafe {
        signal(13, 0);
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_sigint(_: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on Ctrl-C only raises a flag (see [`interrupted`]), so a long loop can stop at a
/// safe point, e.g. after writing a checkpoint.
pub fn catch_ctrl_c() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(2, on_sigint as *const () as usize);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
