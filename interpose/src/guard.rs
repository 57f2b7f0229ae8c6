//! The per-thread re-entry guard, the per-thread id cache, and the
//! generation that keeps the copies of the working directory honest.
//!
//! The thread-locals are const-initialised, of types without destructors, so
//! they compile to plain TLS slots: no lazy registration, no allocation. They
//! are a few bytes: every byte of TLS is paid by every thread of the program
//! (pool.rs holds the buffers).

use crate::pool::CwdCopy;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::*};

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    static TID: Cell<i32> = const { Cell::new(0) };
}

/// Held while a hook runs its logic. A second hook entered on the same thread
/// (a signal handler that calls `open` while we are logging, or a libc
/// function we call internally) gets `None` and passes straight through.
pub struct HookGuard(());

impl HookGuard {
    pub fn enter() -> Option<HookGuard> {
        let taken = IN_HOOK.try_with(|c| c.replace(true)).unwrap_or(true);
        (!taken).then_some(HookGuard(()))
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        let _ = IN_HOOK.try_with(|c| c.set(false));
    }
}

/// This thread's id, cached after the first call.
pub fn tid() -> i32 {
    TID.try_with(|c| {
        let t = c.get();
        if t != 0 {
            return t;
        }
        let t = crate::sys::gettid();
        c.set(t);
        t
    })
    .unwrap_or_else(|_| crate::sys::gettid())
}

/// After fork the calling thread is the child's only thread, with a new tid.
pub fn forget_tid() {
    let _ = TID.try_with(|c| c.set(0));
}

// ---- the working directory ----------------------------------------------------
//
// Every relative path is resolved against the cwd. Asking the kernel each
// time (`getcwd(2)`, ~300 ns: it rebuilds the path from the dentries) was
// the largest single cost of logging a read. The cwd only changes through
// `chdir`/`fchdir` (hooked in hooks.rs, which bump `CWD_GENERATION` after
// the real call), so each pool block keeps a copy (the cwd is per process,
// so any thread's copy will do) tagged with the generation it was read
// under. The generation is read *before* the kernel is asked, so a
// copy taken while a `chdir` runs on another thread carries the old
// generation and is refreshed on next use: never a stale copy marked fresh.
//
// Not seen (documented in docs/performance.md): a directory change made
// inside libc through its internal alias (`nftw` with `FTW_CHDIR`), a raw
// `syscall(SYS_chdir)`, `chroot`, or another process renaming a directory
// above the cwd. Those events keep the cwd of the last hooked change.

/// Starts at 1 so that a never-read copy (generation 0) is stale.
static CWD_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Called after every `chdir`/`fchdir` (successful or not).
pub fn cwd_changed() {
    CWD_GENERATION.fetch_add(1, SeqCst);
}

/// The cwd from `copy` (a pool block's, see pool.rs), refreshed from the
/// kernel when a `chdir` happened since it was read. `None` when the kernel
/// gives no usable path.
pub fn cwd(copy: &mut CwdCopy) -> Option<&[u8]> {
    let generation = CWD_GENERATION.load(SeqCst);
    if copy.generation != generation {
        let len = crate::sys::getcwd_raw(&mut copy.bytes);
        copy.valid = len.is_some();
        copy.len = len.unwrap_or(0);
        copy.generation = generation;
    }
    copy.valid.then(|| &copy.bytes[..copy.len])
}
