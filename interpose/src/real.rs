//! The real libc functions, found with `dlsym(RTLD_NEXT)` once at load.
//!
//! Not redhook: its `hook!` resolves lazily behind a `Once` on first call
//! (a lock, and `dlsym` inside a hook, which has deadlocked and looped in
//! redhook's own history), and panics when a symbol is missing. Here every
//! pointer is resolved by the constructor; a hook that runs earlier (from
//! another library's constructor) resolves its own pointer with a lock-free
//! store, and a missing symbol makes the call fail with ENOSYS instead of
//! crashing the host.

use std::sync::atomic::{AtomicUsize, Ordering::*};

pub struct Real {
    name: &'static str,
    ptr: AtomicUsize,
}

impl Real {
    /// `name` must end with a NUL.
    pub const fn new(name: &'static str) -> Self {
        Real {
            name,
            ptr: AtomicUsize::new(0),
        }
    }

    pub fn resolve(&self) -> usize {
        // SAFETY: name is NUL-terminated; RTLD_NEXT finds the definition
        // after this library in the lookup order (libc's).
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr().cast()) } as usize;
        self.ptr.store(p, Release);
        p
    }

    #[inline]
    pub fn get(&self) -> usize {
        match self.ptr.load(Acquire) {
            0 => self.resolve(),
            p => p,
        }
    }
}

/// What a hook returns when libc lacks the function it wraps.
pub trait Missing {
    fn missing() -> Self;
}

impl Missing for libc::c_int {
    fn missing() -> Self {
        crate::sys::set_errno(libc::ENOSYS);
        -1
    }
}

impl Missing for isize {
    fn missing() -> Self {
        crate::sys::set_errno(libc::ENOSYS);
        -1
    }
}

impl<T> Missing for *mut T {
    fn missing() -> Self {
        crate::sys::set_errno(libc::ENOSYS);
        core::ptr::null_mut()
    }
}

impl Missing for () {
    fn missing() -> Self {
        // Only the exit family returns nothing: end the process regardless.
        // SAFETY: exit_group never returns.
        unsafe { libc::syscall(libc::SYS_exit_group, 127) };
    }
}
