//! Standard descriptors closed for mpaudit stay closed for the program
//! under `mpaudit exec` (review finding H5). Rust's runtime reopens a
//! closed fd 0, 1 or 2 on `/dev/null` before `main`, so which were closed
//! is recorded earlier, by a constructor in `.init_array` (run by the
//! loader before Rust's start-up), and the child closes them again just
//! before exec.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// Bit k set: fd k was closed when the process started.
static CLOSED_AT_START: AtomicU8 = AtomicU8::new(0);

extern "C" fn record_closed_std_fds() {
    let mut closed = 0u8;
    for fd in 0..3 {
        // SAFETY: F_GETFD on a small integer only queries the descriptor
        // table; nothing is dereferenced.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            closed |= 1 << fd;
        }
    }
    CLOSED_AT_START.store(closed, Relaxed);
}

#[used]
#[link_section = ".init_array"]
static RECORD_CLOSED_STD_FDS: extern "C" fn() = record_closed_std_fds;

/// Which of fds 0, 1, 2 were closed when mpaudit started.
pub fn closed_at_start() -> [bool; 3] {
    let bits = CLOSED_AT_START.load(Relaxed);
    [bits & 1 != 0, bits & 2 != 0, bits & 4 != 0]
}

/// Makes `cmd`'s child close, just before exec, the standard descriptors
/// that were closed for mpaudit (it inherits Rust's `/dev/null` otherwise).
pub fn keep_closed(cmd: &mut Command) {
    let closed = closed_at_start();
    if !closed.contains(&true) {
        return;
    }
    // SAFETY: the closure only calls close(2), which is async-signal-safe,
    // as code between fork and exec must be.
    unsafe {
        cmd.pre_exec(move || {
            for (fd, &c) in closed.iter().enumerate() {
                if c {
                    libc::close(fd as libc::c_int);
                }
            }
            Ok(())
        });
    }
}
