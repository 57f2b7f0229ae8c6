//! The spawn trampoline: `mpaudit __mpaudit-spawn-supervised REPORT WORKER
//! PROGRAM ARGV...`, spawned by the library's posix_spawn hook in place of
//! a static or Go program (glibc execs a spawn's target in a child no hook
//! sees; mpaudit_core::handoff has the protocol). It runs from
//! `.init_array`, before Rust's runtime starts, which would otherwise open
//! `/dev/null` on closed standard descriptors and ignore SIGPIPE: the
//! program must get the descriptors, signal mask and dispositions that
//! posix_spawn's file actions and attributes made. It hands itself to the
//! supervisor, tells the spawning process (the abstract socket `REPORT`),
//! puts `LD_PRELOAD` back and execs the program with its own argv; if that
//! exec fails it reports the errno and exits 127, as glibc's child does.

use std::ffi::{c_char, c_int, CStr};

use mpaudit_core::handoff::{self, Report};

#[used]
#[link_section = ".init_array"]
static RUN_IF_ASKED: extern "C" fn(c_int, *const *const c_char, *const *const c_char) =
    run_if_asked;

extern "C" fn run_if_asked(argc: c_int, argv: *const *const c_char, envp: *const *const c_char) {
    if argc < 5 || argv.is_null() {
        return;
    }
    // SAFETY: glibc passes the program's argc, argv and envp to the main
    // executable's initialisers; argv has argc entries.
    let arg = |i: usize| unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes();
    if arg(1) != handoff::TRAMPOLINE_ARG {
        return;
    }
    let report = handoff::connect(arg(2), true);
    let worker = std::str::from_utf8(arg(3))
        .ok()
        .and_then(|w| w.parse::<u32>().ok());
    let env = envp as *mut *const c_char;
    let socket_var = handoff::SOCKET_VAR.as_bytes();
    let mut socket = None;
    let mut i = 0;
    // SAFETY: envp is the NULL-terminated environment array on this
    // process's stack, writable; its entries are C strings.
    unsafe {
        while !env.is_null() && !(*env.add(i)).is_null() {
            let e = *env.add(i);
            let bytes = CStr::from_ptr(e).to_bytes();
            if let Some(rest) = bytes.strip_prefix(handoff::HIDDEN_PRELOAD_PREFIX) {
                // The program's LD_PRELOAD, hidden from this process's loader.
                *env.add(i) = e.add(bytes.len() - rest.len());
            } else if let Some(v) = bytes
                .strip_prefix(socket_var)
                .and_then(|v| v.strip_prefix(b"="))
            {
                socket = Some(v);
            }
            i += 1;
        }
    }
    let mut filter = [0u8; 4096 * 8];
    let handed = socket.is_some_and(|s| handoff::hand_over(s, worker, &mut filter));
    if let Some(r) = report {
        handoff::send(r, &Report::HandedOver(handed).encode());
    }
    // SAFETY: argv[4] is the program, argv[5..] its argv (NULL-terminated,
    // as argv is), env the environment; the report socket closes on exec.
    let e = unsafe {
        libc::execve(*argv.add(4), argv.add(5), env as *const *const c_char);
        *libc::__errno_location()
    };
    if let Some(r) = report {
        handoff::send(r, &Report::ExecFailed(e).encode());
    }
    // SAFETY: ends this process without running anything of the runner's.
    unsafe { libc::_exit(127) }
}
