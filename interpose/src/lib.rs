//! libmpaudit.so: logs, classifies and (by policy) redirects or denies the
//! file accesses of a process and all its forked workers.
//!
//! Layout (mirrord's): `hooks` holds the exported one-line entry points,
//! `audit` and `process` the logic, `log` the crash-safe event log, `stack`
//! the attribution; pure encoding and path logic live in `mpaudit-core`.

mod api;
mod audit;
mod checked;
mod descriptor;
mod dirview;
mod guard;
mod hooks;
mod listings;
mod log;
mod pool;
mod precheck;
mod process;
mod real;
mod redirect;
mod script;
mod stack;
mod state;
mod supervised;
mod sys;
mod table;
mod unseen;
mod view;
mod xattrs;

use libc::{c_char, c_int};

extern "C" {
    /// glibc's on_exit(3): like atexit, but the handler gets the exit status.
    fn on_exit(handler: extern "C" fn(c_int, *mut libc::c_void), arg: *mut libc::c_void) -> c_int;
}

/// Runs at load, before `main`: glibc passes `argc`, `argv` and `envp` to
/// `.init_array` functions.
extern "C" fn mpaudit_init(argc: c_int, argv: *const *const c_char, envp: *const *const c_char) {
    let Some(_guard) = guard::HookGuard::enter() else {
        return;
    };
    let _errno = sys::ErrnoGuard::save();
    hooks::resolve_all();
    hooks::resolve_dlopen();
    hooks::resolve_syscall();
    hooks::resolve_frame_registry();
    hooks::resolve_dir_position();
    note_kernel_release();
    // SAFETY: load time; argv/envp come from the loader.
    unsafe { state::init(argc, argv, envp) };
    stack::init();
    // SAFETY: registering plain extern "C" handlers.
    unsafe {
        libc::pthread_atfork(None, None, Some(process::atfork_child));
        on_exit(process::on_exit_handler, core::ptr::null_mut());
    }
    // The first stack walk of a process pays one-time costs deep in the
    // stack (libgcc's lazy binding, which saves the full vector state on
    // the stack): pay them here, not in a handler on a small stack.
    let _ = stack::capture_raw(0);
    process::open_log_and_start();
    // After the log directory exists: the table file lives there.
    redirect::attach_at_load();
    state::map_worker_counter();
    state::set_ready();
}

/// Tells the flag rules which kernel this is (`O_PATH|O_TMPFILE` before
/// 5.6: mpaudit_core::flags).
fn note_kernel_release() {
    // SAFETY: an all-zero utsname is valid; uname fills it.
    let mut u: libc::utsname = unsafe { core::mem::zeroed() };
    // SAFETY: a live out-buffer.
    if unsafe { libc::syscall(libc::SYS_uname, &mut u) } == 0 {
        let release = &u.release;
        let n = release
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(release.len());
        // SAFETY: c_char and u8 have the same size; `n` is within the array.
        let bytes = unsafe { core::slice::from_raw_parts(release.as_ptr().cast::<u8>(), n) };
        mpaudit_core::flags::note_kernel_release(bytes);
    }
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = mpaudit_init;
