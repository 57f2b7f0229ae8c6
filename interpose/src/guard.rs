//! The per-thread re-entry guard and the per-thread id cache.
//!
//! Both are const-initialised thread-locals of types without destructors, so
//! they compile to plain TLS slots: no lazy registration, no allocation.

use std::cell::Cell;

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
