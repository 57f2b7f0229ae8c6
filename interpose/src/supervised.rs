//! Handing a static or Go program to the runner's seccomp supervisor
//! (protocol and client: mpaudit_core::handoff).
//!
//! - exec: just before the real `execve`, this process puts itself under
//!   the supervisor's filter ([`hand_over`]); the program then runs under
//!   it, audited by the supervisor.
//! - posix_spawn: glibc execs the target inside its own clone child, where
//!   no hook runs, so [`spawn_through_trampoline`] spawns the runner's
//!   trampoline instead, with the program's file actions and attributes;
//!   the trampoline hands itself over and execs the program (same pid,
//!   argv, environment) and reports to this process, which waits for it as
//!   glibc waits for its child's exec.

use crate::state::SAVED;
use crate::sys;
use libc::{c_char, c_int, pid_t};
use mpaudit_core::handoff::{self, Report};

/// The value of `MPAUDIT_<var>=` in the saved environment, if not empty.
fn saved_var(var: &str) -> Option<&'static [u8]> {
    SAVED
        .get()
        .env_entries
        .as_bytes()
        .split(|&b| b == 0)
        .find_map(|e| {
            e.strip_prefix(var.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="))
        })
        .filter(|p| !p.is_empty())
}

/// Puts this process under the supervisor's filter. True when the
/// listener was handed over: the exec that follows is audited. `buf`
/// holds the BPF program (at least a few KiB). False, with nothing
/// changed, when there is no supervisor or it does not answer.
pub fn hand_over(buf: &mut [u8]) -> bool {
    let Some(path) = saved_var(handoff::SOCKET_VAR) else {
        return false;
    };
    handoff::hand_over(path, crate::state::worker(), buf)
}

struct Fd(c_int);
impl Drop for Fd {
    fn drop(&mut self) {
        sys::close(self.0);
    }
}

/// What a spawn through the trampoline came to.
pub struct Spawned {
    /// posix_spawn's return: 0, or the error number.
    pub result: c_int,
    /// The program's pid (-1 when the spawn failed).
    pub child: pid_t,
    /// Whether the program runs under the supervisor.
    pub handed_over: bool,
}

/// Entries of a NULL-terminated array (read by the caller beforehand with
/// checked reads: `exec_arguments_readable`).
fn count(array: *const *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: a readable NULL-terminated array (see above).
    while !array.is_null() && !unsafe { *array.add(n) }.is_null() {
        n += 1;
    }
    n
}

/// Spawns `exe` (NUL-terminated; posix_spawnp's already resolved) through
/// the runner's trampoline: `real(pid_out, path, argv, envp)` is the real
/// posix_spawn with the program's file actions and attributes, `envp` the
/// environment the program gets (doctored). `Err(real)`, unused, when
/// there is no trampoline or supervisor to hand it to.
pub fn spawn_through_trampoline<F>(
    exe: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    real: F,
) -> Result<Spawned, F>
where
    F: FnOnce(*mut pid_t, *const c_char, *const *const c_char, *const *const c_char) -> c_int,
{
    match prepare(exe, argv, envp) {
        Some(p) => Ok(p.spawn(real)),
        None => Err(real),
    }
}

/// The trampoline's report socket, argv and envp, ready to spawn.
struct Prepared {
    listener: Fd,
    block: crate::sys::Mapping,
    env_at: usize,
}

fn prepare(
    exe: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Option<Prepared> {
    saved_var(handoff::SOCKET_VAR)?;
    let trampoline = saved_var(handoff::TRAMPOLINE_VAR)?;
    // A runner gone (or not executable) would fail the spawn, after the
    // file actions ran: keep the program's own spawn then.
    let mut path = [0u8; 4096];
    let t = sys::c_path(trampoline, &mut path)?;
    // SAFETY: a NUL-terminated path in our buffer.
    if unsafe { libc::syscall(libc::SYS_faccessat, libc::AT_FDCWD, t, libc::X_OK, 0) } != 0 {
        return None;
    }
    // The report socket: an abstract name no file stands for.
    let mut name = [0u8; 80];
    let name_len = {
        use mpaudit_core::json::{put_u64, Sink, SliceSink};
        let mut s = SliceSink::new(&mut name);
        s.put(b"mpaudit-spawn-");
        put_u64(&mut s, sys::getpid() as u64);
        s.put(b"-");
        put_u64(&mut s, sys::gettid() as u64);
        s.put(b"-");
        put_u64(&mut s, sys::now_ns());
        if s.overflow {
            return None;
        }
        s.len
    };
    let listener = listen_on(&name[..name_len])?;

    // argv: TRAMPOLINE ARG NAME WORKER EXE argv..., envp: the program's
    // with LD_PRELOAD hidden; the strings after the two arrays.
    let nargs = count(argv);
    let nenv = count(envp);
    let mut worker = [0u8; 24];
    let worker = match crate::state::worker() {
        Some(w) => {
            let mut s = mpaudit_core::json::SliceSink::new(&mut worker);
            mpaudit_core::json::put_u64(&mut s, w as u64);
            let n = s.len;
            &worker[..n]
        }
        None => &b"-"[..],
    };
    let preloads: usize = (0..nenv)
        .map(|i| {
            // SAFETY: i < nenv: an entry of the array.
            let e = unsafe { *envp.add(i) };
            if starts_with(e, b"LD_PRELOAD=") {
                // SAFETY: an environment entry is a C string.
                unsafe { sys::c_bytes(e, 1 << 20) }.len() + 1
            } else {
                0
            }
        })
        .sum();
    let ptrs = (5 + nargs + 1) + (nenv + 1);
    let strings = trampoline.len()
        + handoff::TRAMPOLINE_ARG.len()
        + name_len
        + worker.len()
        + 4
        + preloads
        + nenv * handoff::HIDDEN_PRELOAD_PREFIX.len();
    // The trampoline's argv and envp (no malloc: hooks do not allocate).
    let block =
        crate::sys::Mapping::anonymous(ptrs * core::mem::size_of::<*const c_char>() + strings)?;
    let size = block.size();
    // SAFETY: the mapping is `size` bytes, page-aligned; the pointer
    // arrays take the first `ptrs` slots, the strings the rest.
    let (slots, text) = unsafe {
        let slots = core::slice::from_raw_parts_mut(block.base().cast::<*const c_char>(), ptrs);
        let off = ptrs * core::mem::size_of::<*const c_char>();
        (
            slots,
            core::slice::from_raw_parts_mut(block.base().add(off), size - off),
        )
    };
    let mut used = 0usize;
    let mut put = |parts: &[&[u8]]| -> *const c_char {
        let start = used;
        for p in parts {
            text[used..used + p.len()].copy_from_slice(p);
            used += p.len();
        }
        text[used] = 0;
        used += 1;
        text[start..].as_ptr().cast()
    };
    slots[0] = put(&[trampoline]);
    slots[1] = put(&[handoff::TRAMPOLINE_ARG]);
    slots[2] = put(&[&name[..name_len]]);
    slots[3] = put(&[worker]);
    slots[4] = exe;
    for i in 0..nargs {
        // SAFETY: i < nargs.
        slots[5 + i] = unsafe { *argv.add(i) };
    }
    slots[5 + nargs] = core::ptr::null();
    let env_at = 5 + nargs + 1;
    for i in 0..nenv {
        // SAFETY: i < nenv.
        let e = unsafe { *envp.add(i) };
        slots[env_at + i] = if starts_with(e, b"LD_PRELOAD=") {
            // SAFETY: an environment entry is a C string.
            put(&[handoff::HIDDEN_PRELOAD_PREFIX, unsafe {
                sys::c_bytes(e, 1 << 20)
            }])
        } else {
            e
        };
    }
    slots[env_at + nenv] = core::ptr::null();
    Some(Prepared {
        listener,
        block,
        env_at,
    })
}

impl Prepared {
    fn spawn(
        self,
        real: impl FnOnce(
            *mut pid_t,
            *const c_char,
            *const *const c_char,
            *const *const c_char,
        ) -> c_int,
    ) -> Spawned {
        let slots = self.block.base().cast::<*const c_char>();
        let mut child: pid_t = -1;
        // SAFETY: the block's arrays, NULL-terminated, built by `prepare`;
        // slot 0 is the trampoline's path.
        let r = unsafe { real(&mut child, *slots, slots, slots.add(self.env_at)) };
        drop(self.block);
        self.listener.await_spawned(r, child)
    }
}

impl Fd {
    fn await_spawned(self, r: c_int, child: pid_t) -> Spawned {
        let listener = self;
        if r != 0 {
            // The trampoline was not started: a file action failed (as it
            // would have for the program), or the trampoline is gone.
            return Spawned {
                result: r,
                child: -1,
                handed_over: false,
            };
        }
        let (handed_over, exec_errno) = await_report(listener.0, child);
        drop(listener);
        if let Some(e) = exec_errno {
            // As glibc: the child that could not exec its program is reaped
            // and the spawn fails with the exec's errno.
            reap(child);
            return Spawned {
                result: e,
                child: -1,
                handed_over,
            };
        }
        Spawned {
            result: 0,
            child,
            handed_over,
        }
    }
}

fn starts_with(p: *const c_char, prefix: &[u8]) -> bool {
    // SAFETY: a C string; we stop at a mismatch, which its NUL always is.
    prefix
        .iter()
        .enumerate()
        .all(|(i, &b)| unsafe { *p.add(i) } as u8 == b)
}

/// A listening `SOCK_SEQPACKET` socket on the abstract `name`.
fn listen_on(name: &[u8]) -> Option<Fd> {
    let (addr, len) = handoff::unix_address(name, true)?;
    // SAFETY: socket with constant arguments.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_socket,
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    } as c_int;
    if fd < 0 {
        return None;
    }
    let sock = Fd(fd);
    // SAFETY: bind and listen on our socket with a valid address.
    let ok = unsafe {
        libc::syscall(
            libc::SYS_bind,
            sock.0,
            &addr as *const libc::sockaddr_un,
            len,
        ) == 0
            && libc::syscall(libc::SYS_listen, sock.0, 1) == 0
    };
    ok.then_some(sock)
}

/// Waits for the trampoline `child` to report on `listener`: whether it
/// was handed over, and the errno of its exec if that failed. Gives up
/// (not handed over, exec'd) when the child dies first or after
/// [`handoff::ANSWER_TIMEOUT_S`] without a word.
fn await_report(listener: c_int, child: pid_t) -> (bool, Option<c_int>) {
    // SAFETY: pidfd_open with integer arguments; -1 when unsupported.
    let pidfd = Fd(unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) } as c_int);
    let deadline = sys::now_ns() + handoff::ANSWER_TIMEOUT_S as u64 * 1_000_000_000;
    let conn = loop {
        let now = sys::now_ns();
        if now >= deadline {
            return (false, None);
        }
        let mut fds = [
            libc::pollfd {
                fd: listener,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.0,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = ((deadline - now) / 1_000_000).max(1) as c_int;
        // SAFETY: poll on our array of two pollfds (a negative fd is
        // ignored).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 && sys::errno() != libc::EINTR {
            return (false, None);
        }
        if fds[0].revents & libc::POLLIN != 0 {
            // SAFETY: accept4 without an address.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_accept4,
                    listener,
                    0usize,
                    0usize,
                    libc::SOCK_CLOEXEC,
                )
            } as c_int;
            if fd >= 0 {
                let conn = Fd(fd);
                if peer_pid(conn.0) == Some(child) {
                    break conn;
                }
            }
            continue;
        }
        if fds[1].revents != 0 {
            return (false, None); // it died before reporting
        }
    };
    let timeout = libc::timeval {
        tv_sec: handoff::ANSWER_TIMEOUT_S,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a valid timeval.
    unsafe {
        libc::setsockopt(
            conn.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            core::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let mut handed_over = false;
    loop {
        let mut m = [0u8; Report::LEN];
        // SAFETY: recv into our buffer.
        let n = unsafe { libc::recv(conn.0, m.as_mut_ptr().cast(), m.len(), 0) };
        if n < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            // The socket closed on exec: the program runs.
            return (handed_over, None);
        }
        match Report::decode(&m[..n as usize]) {
            Some(Report::HandedOver(yes)) => handed_over = yes,
            Some(Report::ExecFailed(e)) => return (handed_over, Some(e)),
            None => return (false, None),
        }
    }
}

/// The pid of the process at the other end of `sock`.
fn peer_pid(sock: c_int) -> Option<pid_t> {
    // SAFETY: a zeroed ucred is valid; getsockopt fills it.
    let mut cred: libc::ucred = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid out-pointer and length.
    let ok = unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    } == 0;
    ok.then_some(cred.pid)
}

/// Reaps the trampoline that could not exec its program.
fn reap(child: pid_t) {
    loop {
        // SAFETY: waitpid on our own child, no status wanted.
        let r = unsafe { libc::waitpid(child, core::ptr::null_mut(), 0) };
        if r >= 0 || sys::errno() != libc::EINTR {
            return;
        }
    }
}
