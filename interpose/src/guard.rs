//! The per-thread re-entry guard, the per-thread id cache and the
//! per-thread copy of the working directory.
//!
//! All are const-initialised thread-locals of types without destructors, so
//! they compile to plain TLS slots: no lazy registration, no allocation.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicU64, Ordering::*};

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    static TID: Cell<i32> = const { Cell::new(0) };
    static CWD_BUSY: Cell<bool> = const { Cell::new(false) };
    static CWD: UnsafeCell<CwdCopy> = const {
        UnsafeCell::new(CwdCopy { generation: 0, len: NO_CWD, bytes: [0; CWD_MAX] })
    };
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
// `chdir`/`fchdir` (hooked in sys.rs, which bump `CWD_GENERATION` after the
// real call), so each thread keeps a copy tagged with the generation it was
// read under. The generation is read *before* the kernel is asked, so a
// copy taken while a `chdir` runs on another thread carries the old
// generation and is refreshed on next use: never a stale copy marked fresh.
//
// Not seen (documented in docs/performance.md): a directory change made
// inside libc through its internal alias (`nftw` with `FTW_CHDIR`), a raw
// `syscall(SYS_chdir)`, `chroot`, or another process renaming a directory
// above the cwd. Those events keep the cwd of the last hooked change.

const CWD_MAX: usize = 4096;
const NO_CWD: usize = usize::MAX;

struct CwdCopy {
    generation: u64,
    /// NO_CWD: the kernel gave no usable path (too long, unreachable).
    len: usize,
    bytes: [u8; CWD_MAX],
}

/// Starts at 1 so that a thread's zeroed copy is stale.
static CWD_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Called after every `chdir`/`fchdir` (successful or not).
pub fn cwd_changed() {
    CWD_GENERATION.fetch_add(1, SeqCst);
}

/// The cwd into `buf` (without NUL), from this thread's copy when it is
/// current. A signal handler that interrupts an update, or a thread whose
/// TLS is gone, asks the kernel directly.
pub fn cwd(buf: &mut [u8]) -> Option<usize> {
    let taken = CWD_BUSY.try_with(|b| b.replace(true)).unwrap_or(true);
    if taken {
        return crate::sys::getcwd_raw(buf);
    }
    let r = CWD
        .try_with(|cell| {
            // SAFETY: CWD_BUSY makes this the thread's only user of the copy.
            let c = unsafe { &mut *cell.get() };
            let generation = CWD_GENERATION.load(SeqCst);
            if c.generation != generation {
                c.len = crate::sys::getcwd_raw(&mut c.bytes).unwrap_or(NO_CWD);
                c.generation = generation;
            }
            if c.len == NO_CWD || c.len > buf.len() {
                return None;
            }
            buf[..c.len].copy_from_slice(&c.bytes[..c.len]);
            Some(c.len)
        })
        .unwrap_or_else(|_| crate::sys::getcwd_raw(buf));
    let _ = CWD_BUSY.try_with(|b| b.set(false));
    r
}
