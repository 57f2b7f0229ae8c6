//! What every file hook does: resolve the path(s), call the real function,
//! attribute and log the access. Hooks (hooks.rs) are one-liners into here.

use crate::guard::HookGuard;
use crate::{log, stack, state, sys};
use libc::{c_char, c_int};
use mpaudit_core::event::{encode_access, Access, Attribution, Common, PathPair};
use mpaudit_core::flags::OpenIntent;
use mpaudit_core::path::{absolutize, MAX_ABS};
use std::cell::UnsafeCell;

/// What a path argument is relative to.
#[derive(Clone, Copy)]
pub struct PathArg {
    pub dirfd: c_int,
    pub path: *const c_char,
}

impl PathArg {
    pub fn cwd(path: *const c_char) -> Self {
        PathArg {
            dirfd: libc::AT_FDCWD,
            path,
        }
    }
}

/// A hooked call's return value, as the event's `result`.
pub trait Outcome: Copy {
    fn result(self) -> i64;
}

impl Outcome for c_int {
    fn result(self) -> i64 {
        self as i64
    }
}

impl Outcome for *mut libc::FILE {
    fn result(self) -> i64 {
        if self.is_null() {
            -1
        } else {
            // SAFETY: a stream the real fopen just returned.
            unsafe { libc::fileno(self) as i64 }
        }
    }
}

/// Per-thread scratch space for path resolution: too large for the stack of
/// a signal handler running on a small alternate stack. Only the thread's
/// single active hook (see HookGuard) uses it.
struct Scratch {
    base: [u8; 4096],
    abs: [u8; MAX_ABS],
    abs2: [u8; MAX_ABS],
}

thread_local! {
    static SCRATCH: UnsafeCell<Scratch> = const {
        UnsafeCell::new(Scratch { base: [0; 4096], abs: [0; MAX_ABS], abs2: [0; MAX_ABS] })
    };
}

/// Longest path read from the program (Linux refuses longer ones anyway).
const MAX_GIVEN: usize = 8192;

/// Resolves `arg` into `out`: the given bytes and the absolute form.
unsafe fn resolve<'a>(arg: PathArg, base: &mut [u8], out: &'a mut [u8]) -> PathPair<'a> {
    if arg.path.is_null() {
        return PathPair {
            given: None,
            abs: None,
        };
    }
    // SAFETY: the program passed a C string that the kernel could read (the
    // caller skips calls that failed with EFAULT).
    let given: &'a [u8] = unsafe { sys::c_bytes(arg.path, MAX_GIVEN) };
    let base_len = if given.first() == Some(&b'/') {
        None
    } else if arg.dirfd == libc::AT_FDCWD {
        sys::getcwd(base)
    } else {
        sys::fd_path(arg.dirfd, base)
    };
    let abs = match absolutize(given, base_len.map(|n| &base[..n]), out) {
        Some(n) => Some(&out[..n]),
        None => None,
    };
    PathPair {
        given: Some(given),
        abs,
    }
}

fn common() -> Common {
    Common {
        ts: sys::now_ns(),
        pid: state::pid(),
        ppid: state::ppid(),
        tid: crate::guard::tid(),
        worker: state::worker(),
    }
}

/// A one- or two-path access.
pub struct Call {
    pub op: &'static str,
    pub path: PathArg,
    pub path2: Option<PathArg>,
    pub intent: OpenIntent,
    /// open(2) flags, or -1 for calls without flags.
    pub flags: c_int,
}

/// Runs `real` and logs the access. `real` receives the path pointers to use
/// (the policy layer may substitute redirected ones).
pub unsafe fn access<R: Outcome>(
    call: Call,
    real: impl FnOnce(*const c_char, *const c_char) -> R,
) -> R {
    let p1 = call.path.path;
    let p2 = call.path2.map(|p| p.path).unwrap_or(core::ptr::null());
    if !state::ready() || !log::enabled() {
        return real(p1, p2);
    }
    let Some(_guard) = HookGuard::enter() else {
        return real(p1, p2);
    };
    // A NULL or unmapped path must fail exactly as libc makes it fail: call
    // first, then read the path only if the kernel could (not EFAULT).
    let r = real(p1, p2);
    let saved = sys::ErrnoGuard::save();
    let result = r.result();
    let errno = if result < 0 { saved.value() } else { 0 };
    if errno != libc::EFAULT {
        let _ = std::panic::catch_unwind(|| {
            // SAFETY: paths were readable by the kernel (no EFAULT).
            unsafe { log_access(&call, result, errno) }
        });
    }
    r
}

unsafe fn log_access(call: &Call, result: i64, errno: c_int) {
    SCRATCH.with(|cell| {
        // SAFETY: the HookGuard makes this the thread's only user.
        let s = unsafe { &mut *cell.get() };
        let Scratch { base, abs, abs2 } = s;
        // SAFETY: see access().
        let path = unsafe { resolve(call.path, base, abs) };
        let path2 = call.path2.map(|p| unsafe { resolve(p, base, abs2) });
        let stack = call.intent.is_write().then(stack::capture);
        let attribution = stack.as_ref().map(|st| Attribution {
            component: st.component.map(|i| st.frames[i]),
            stack: &st.frames[..st.n],
        });
        let event = Access {
            op: call.op,
            path,
            path2,
            intent: call.intent,
            flags: call.flags,
            result,
            errno,
            attribution,
            judgement: None,
        };
        let c = common();
        log::append(&|sink| encode_access(sink, &c, &event));
    })
}

/// Logs a process event (fork, exec, spawn, exit, start).
pub fn log_process(p: &mpaudit_core::event::Process) {
    if !log::enabled() {
        return;
    }
    let c = common();
    log::append(&|sink| mpaudit_core::event::encode_process(sink, &c, p));
}
