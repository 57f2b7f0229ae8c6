//! The runtime API for frameworks that cooperate (interpose/include/mpaudit.h).
//! Frameworks find these with `dlsym(RTLD_DEFAULT, "mpaudit_…")`, so they need
//! no link dependency and run unchanged without the library.

use crate::{redirect, state, sys};
use libc::{c_char, c_int};
use mpaudit_core::path::{absolutize, MAX_ABS};

/// Declares `path` an output managed by the framework (like Gaudi's
/// `IIoComponentMgr::io_register(…, WRITE, path)`): writes to it are
/// `declared`, never `rogue`. A relative path is resolved against the cwd
/// now. Returns 0, or -1 with errno EINVAL (NULL, unresolvable) or ENOMEM
/// (the table of declared outputs is full). Inherited by forked children.
#[no_mangle]
pub unsafe extern "C" fn mpaudit_declare_output(path: *const c_char) -> c_int {
    if path.is_null() {
        sys::set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the caller passes a C string.
    let given = unsafe { sys::c_bytes(path, MAX_ABS) };
    let Some(mut claimed) = crate::pool::claim() else {
        sys::set_errno(libc::ENOMEM);
        return -1;
    };
    let b = claimed.block();
    let cwd = crate::guard::cwd(&mut b.cwd);
    let Some(n) = absolutize(given, cwd, &mut b.abs) else {
        sys::set_errno(libc::EINVAL);
        return -1;
    };
    if redirect::declare(&b.abs[..n]) {
        0
    } else {
        sys::set_errno(libc::ENOMEM);
        -1
    }
}

/// 1: the library is loaded and initialised (0 before its constructor ran).
#[no_mangle]
pub extern "C" fn mpaudit_enabled() -> c_int {
    state::ready() as c_int
}
