//! Handing a process to the runner's seccomp supervisor, client side: the
//! library's exec and spawn hooks and the runner's spawn trampoline run this
//! just before they exec a program the preload cannot audit (static, Go).
//!
//! The process connects (`SOCK_SEQPACKET`) to the socket the runner names in
//! [`SOCKET_VAR`] and sends a hello, [`HELLO_LEN`] bytes: [`HELLO_MAGIC`],
//! its worker (`u32`, `u32::MAX` for none) and its task id (`i32`), native
//! byte order. The supervisor checks the peer is the runner's own user and
//! answers with the BPF program (`sock_filter` array). The process sets
//! `PR_SET_NO_NEW_PRIVS`, installs the program with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`, sends the listener (`SCM_RIGHTS`) and
//! execs. Raw system calls on caller-provided buffers only: this runs in
//! fork children, signal handlers and before a program's runtime starts.
//!
//! The spawn trampoline: posix_spawn execs its target inside glibc's own
//! clone child, out of every hook's reach, so a spawn of a static or Go
//! program is made a spawn of the runner ([`TRAMPOLINE_VAR`]) with
//! arguments saying what to exec; the runner, before its own runtime
//! starts (runner/src/seccomp/trampoline.rs), hands itself over and execs
//! the program, reporting to the spawning process ([`Report`]).

use core::ffi::c_int;

pub const HELLO_LEN: usize = 16;
pub const HELLO_MAGIC: &[u8; 4] = b"MPA1";
/// The variable naming the supervisor's socket.
pub const SOCKET_VAR: &str = "MPAUDIT_SUPERVISOR_SOCKET";
/// The variable naming the runner's executable, the spawn trampoline.
pub const TRAMPOLINE_VAR: &str = "MPAUDIT_SPAWN_TRAMPOLINE";
/// The trampoline's first argument: `mpaudit ARG REPORT WORKER TARGET ARGV...`.
pub const TRAMPOLINE_ARG: &[u8] = b"__mpaudit-spawn-supervised";
/// Prefixed to each `LD_PRELOAD=` entry of the environment the trampoline
/// gets, so that the library is not loaded into the runner; the trampoline
/// takes it off again for the program.
pub const HIDDEN_PRELOAD_PREFIX: &[u8] = b"MPAUDIT_TRAMPOLINE_HIDES_";
/// How long to wait for the supervisor's answer (and the spawning process
/// for the trampoline's) before going on unsupervised, listed as unaudited.
pub const ANSWER_TIMEOUT_S: i64 = 10;

/// What the trampoline tells the spawning process over its report socket,
/// one message each: first whether the program was handed to the
/// supervisor, then, only if the exec of the program failed, its errno
/// (the trampoline then exits 127, as glibc's spawn child does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    HandedOver(bool),
    ExecFailed(i32),
}

impl Report {
    pub const LEN: usize = 8;
    pub fn encode(self) -> [u8; Self::LEN] {
        let mut m = [0u8; Self::LEN];
        match self {
            Report::HandedOver(yes) => {
                m[0] = b'H';
                m[1] = yes as u8;
            }
            Report::ExecFailed(e) => {
                m[0] = b'E';
                m[4..].copy_from_slice(&e.to_ne_bytes());
            }
        }
        m
    }
    pub fn decode(m: &[u8]) -> Option<Report> {
        if m.len() != Self::LEN {
            return None;
        }
        match m[0] {
            b'H' => Some(Report::HandedOver(m[1] != 0)),
            b'E' => Some(Report::ExecFailed(i32::from_ne_bytes([
                m[4], m[5], m[6], m[7],
            ]))),
            _ => None,
        }
    }
}

fn errno() -> c_int {
    // SAFETY: the calling thread's errno location.
    unsafe { *libc::__errno_location() }
}

struct Fd(c_int);
impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::syscall(libc::SYS_close, self.0) };
    }
}

/// A `sockaddr_un` for `name`: a path, or with `abstract_name` a name in
/// the abstract namespace. `None` when it does not fit.
pub fn unix_address(name: &[u8], abstract_name: bool) -> Option<(libc::sockaddr_un, u32)> {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    let skip = abstract_name as usize;
    if name.is_empty() || name.len() + skip >= addr.sun_path.len() {
        return None;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path[skip..].iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let len = if abstract_name {
        (core::mem::size_of::<libc::sa_family_t>() + 1 + name.len()) as u32
    } else {
        core::mem::size_of::<libc::sockaddr_un>() as u32
    };
    Some((addr, len))
}

/// CLOCK_MONOTONIC in nanoseconds (a raw call: no vDSO, no libc state).
fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into our timespec.
    unsafe {
        libc::syscall(
            libc::SYS_clock_gettime,
            libc::CLOCK_MONOTONIC,
            &mut ts as *mut libc::timespec,
        )
    };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The time a socket call may still wait before `deadline` (monotonic ns),
/// as a socket timeout: `None` when it has passed. Never the zero
/// timeval, which means "wait for ever".
pub fn remaining(deadline: i64, now: i64) -> Option<libc::timeval> {
    let left = deadline.checked_sub(now).filter(|&l| l > 0)?;
    let us = (left / 1000).max(1);
    Some(libc::timeval {
        tv_sec: us / 1_000_000,
        tv_usec: us % 1_000_000,
    })
}

/// Sets `sock`'s send and receive timeouts (connect waits by the send
/// one) to `timeout`.
fn set_timeouts(sock: c_int, timeout: &libc::timeval) {
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: setsockopt with a valid pointer and size.
        unsafe {
            libc::syscall(
                libc::SYS_setsockopt,
                sock,
                libc::SOL_SOCKET,
                opt,
                timeout as *const libc::timeval,
                core::mem::size_of::<libc::timeval>(),
            )
        };
    }
}

/// Runs the socket call `call` on `sock` until it is not interrupted: a
/// socket with a timeout is never restarted after a signal handler, even
/// with `SA_RESTART` (a process forking children gets SIGCHLD all the
/// time). Each new try waits only what is left until `deadline`; when
/// nothing is, the call's EINTR stands. Returns the call's return.
fn uninterrupted(sock: c_int, deadline: i64, mut call: impl FnMut() -> i64) -> i64 {
    loop {
        let r = call();
        if r >= 0 || errno() != libc::EINTR {
            return r;
        }
        match remaining(deadline, monotonic_ns()) {
            Some(t) => set_timeouts(sock, &t),
            None => return r,
        }
    }
}

/// A `SOCK_SEQPACKET` socket connected to `name` (see [`unix_address`]),
/// with send and receive timeouts of [`ANSWER_TIMEOUT_S`]; close-on-exec.
pub fn connect(name: &[u8], abstract_name: bool) -> Option<c_int> {
    let deadline = monotonic_ns() + ANSWER_TIMEOUT_S * 1_000_000_000;
    connect_by(name, abstract_name, deadline)
}

/// [`connect`], the timeouts (and retries after a signal) what is left
/// until `deadline` (monotonic ns).
fn connect_by(name: &[u8], abstract_name: bool, deadline: i64) -> Option<c_int> {
    let (addr, len) = unix_address(name, abstract_name)?;
    // SAFETY: socket with constant arguments.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_socket,
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
        )
    } as c_int;
    if fd < 0 {
        return None;
    }
    let sock = Fd(fd);
    set_timeouts(sock.0, &remaining(deadline, monotonic_ns())?);
    // An interrupted connect of a Unix socket has not connected (it was
    // waiting for room in the listener's backlog): it is tried again.
    let r = uninterrupted(sock.0, deadline, || {
        // SAFETY: connect with a valid address and its size.
        unsafe {
            libc::syscall(
                libc::SYS_connect,
                sock.0,
                &addr as *const libc::sockaddr_un,
                len,
            )
        }
    });
    if r != 0 && errno() != libc::EISCONN {
        return None;
    }
    let fd = sock.0;
    core::mem::forget(sock);
    Some(fd)
}

/// Sends `msg` as one message on `sock`. True when all of it went.
pub fn send(sock: c_int, msg: &[u8]) -> bool {
    send_by(sock, msg, monotonic_ns() + ANSWER_TIMEOUT_S * 1_000_000_000)
}

/// [`send`], tried again after a signal until `deadline` (monotonic ns).
fn send_by(sock: c_int, msg: &[u8], deadline: i64) -> bool {
    let n = uninterrupted(sock, deadline, || {
        // SAFETY: sendto on the caller's socket from the caller's buffer.
        unsafe {
            libc::syscall(
                libc::SYS_sendto,
                sock,
                msg.as_ptr(),
                msg.len(),
                libc::MSG_NOSIGNAL,
                0usize,
                0usize,
            )
        }
    });
    n == msg.len() as i64
}

/// Puts this process under the supervisor's filter. True when the
/// listener was handed over: the exec that follows is audited. `buf`
/// holds the BPF program (at least a few KiB). False, with nothing
/// changed, when there is no supervisor or it does not answer; once the
/// filter is installed there is no way back, so every step that can fail
/// comes before it.
pub fn hand_over(socket_path: &[u8], worker: Option<u32>, buf: &mut [u8]) -> bool {
    // One deadline for the whole exchange, however many signals come.
    let deadline = monotonic_ns() + ANSWER_TIMEOUT_S * 1_000_000_000;
    let Some(fd) = connect_by(socket_path, false, deadline) else {
        return false;
    };
    let sock = Fd(fd);
    let mut hello = [0u8; HELLO_LEN];
    hello[..4].copy_from_slice(HELLO_MAGIC);
    hello[4..8].copy_from_slice(&worker.unwrap_or(u32::MAX).to_ne_bytes());
    // SAFETY: gettid takes no arguments.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    hello[8..12].copy_from_slice(&tid.to_ne_bytes());
    if !send_by(sock.0, &hello, deadline) {
        return false;
    }
    // A message comes whole or not at all (SOCK_SEQPACKET): an interrupted
    // wait has taken nothing.
    let n = uninterrupted(sock.0, deadline, || {
        // SAFETY: recvfrom on our socket into the caller's buffer.
        unsafe {
            libc::syscall(
                libc::SYS_recvfrom,
                sock.0,
                buf.as_mut_ptr(),
                buf.len(),
                0,
                0usize,
                0usize,
            )
        }
    });
    let instruction = core::mem::size_of::<libc::sock_filter>();
    if n <= 0 || n as usize % instruction != 0 || n as usize / instruction > 4096 {
        return false;
    }
    let fprog = libc::sock_fprog {
        len: (n as usize / instruction) as u16,
        filter: buf.as_mut_ptr().cast(),
    };
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return false;
    }
    let listener = match install_with_listener(&fprog) {
        Ok(fd) => Fd(fd),
        // A filter of this process already has a listener (it runs under
        // the supervisor already), which sees the program too.
        Err(e) => return e == libc::EBUSY,
    };
    send_fd(sock.0, listener.0).is_ok()
}

/// Installs `fprog` with a new listener (the caller has set
/// `PR_SET_NO_NEW_PRIVS`): the listener, or the errno.
pub fn install_with_listener(fprog: &libc::sock_fprog) -> Result<c_int, c_int> {
    // Linux ≥ 5.19: once the supervisor has received a call, only a fatal
    // signal interrupts the wait, so a call it performs is never restarted
    // and performed twice (an O_EXCL create would then fail).
    let install = |flags: libc::c_ulong| {
        // SAFETY: a sock_fprog whose program outlives the call (the kernel
        // copies it).
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                fprog as *const libc::sock_fprog,
            )
        }
    };
    let mut listener = install(
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    ) as c_int;
    if listener < 0 && errno() == libc::EINVAL {
        listener = install(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER) as c_int;
    }
    if listener < 0 {
        Err(errno())
    } else {
        Ok(listener)
    }
}

/// Sends `fd` over the Unix socket `sock` (SCM_RIGHTS, one byte of data),
/// without allocating: `Err(errno)` on failure.
pub fn send_fd(sock: c_int, fd: c_int) -> Result<(), c_int> {
    // Room for one cmsghdr with one int, 8-byte aligned.
    let mut space = [0u64; 4];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; the pointers set below stay valid for
    // the sendmsg call; the control buffer has room for one descriptor.
    unsafe {
        let mut msg: libc::msghdr = core::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(core::mem::size_of::<c_int>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(core::mem::size_of::<c_int>() as u32) as usize;
        core::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd);
        loop {
            let r = libc::syscall(
                libc::SYS_sendmsg,
                sock,
                &msg as *const libc::msghdr,
                libc::MSG_NOSIGNAL,
            );
            if r >= 0 {
                return Ok(());
            }
            if errno() != libc::EINTR {
                return Err(errno());
            }
        }
    }
}

/// An `LD_PRELOAD` value without `lib`: the environment of a program
/// handed to the supervisor, which audits it whole (loaded into a dynamic
/// Go program, the library would log its few libc calls a second time and
/// the supervisor would judge the library's own log file a write of the
/// job's). The loader's separators are `:` and ` `; each entry that is
/// `lib` goes with one separator after it (before it, when last), and
/// every other byte stays as it was: the runner's `lib:<host value>`
/// gives back the host's value exactly, spaces and empty entries
/// included. The length written into `out`, or `None` when it does not
/// fit.
pub fn preload_without(value: &[u8], lib: &[u8], out: &mut [u8]) -> Option<usize> {
    let is_sep = |b: u8| b == b':' || b == b' ';
    let mut n = 0;
    let mut push = |bytes: &[u8], n: &mut usize| -> Option<()> {
        let end = *n + bytes.len();
        out.get_mut(*n..end)?.copy_from_slice(bytes);
        *n = end;
        Some(())
    };
    let mut i = 0;
    // A separator kept so far that a last removed entry takes back.
    let mut pending_sep: Option<u8> = None;
    while i < value.len() {
        if is_sep(value[i]) {
            if let Some(p) = pending_sep.replace(value[i]) {
                push(&[p], &mut n)?;
            }
            i += 1;
            continue;
        }
        let end = value[i..]
            .iter()
            .position(|&b| is_sep(b))
            .map_or(value.len(), |p| i + p);
        let entry = &value[i..end];
        if entry == lib {
            if end < value.len() {
                // The entry and the separator after it.
                if let Some(p) = pending_sep.take() {
                    push(&[p], &mut n)?;
                }
                i = end + 1;
            } else {
                // Last: the separator before it goes instead.
                pending_sep = None;
                i = end;
            }
            continue;
        }
        if let Some(p) = pending_sep.take() {
            push(&[p], &mut n)?;
        }
        push(entry, &mut n)?;
        i = end;
    }
    if let Some(p) = pending_sep {
        push(&[p], &mut n)?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::HandedOver(true),
            Report::HandedOver(false),
            Report::ExecFailed(libc::EACCES),
        ] {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
        assert_eq!(Report::decode(b"X0000000"), None);
        assert_eq!(Report::decode(b"H"), None);
    }

    #[test]
    fn a_retry_waits_only_what_is_left_of_the_deadline() {
        let s = 1_000_000_000;
        let t = remaining(10 * s, 7 * s + 250_000_000).unwrap();
        assert_eq!((t.tv_sec, t.tv_usec), (2, 750_000));
        // Less than a microsecond left is still a wait, never the zero
        // timeval (no timeout at all).
        let t = remaining(10 * s, 10 * s - 1).unwrap();
        assert_eq!((t.tv_sec, t.tv_usec), (0, 1));
        assert!(remaining(10 * s, 10 * s).is_none());
        assert!(remaining(10 * s, 11 * s).is_none());
    }

    #[test]
    fn addresses_fit_or_are_refused() {
        let (a, len) = unix_address(b"name", true).unwrap();
        assert_eq!((a.sun_path[0], a.sun_path[1] as u8), (0, b'n'));
        assert_eq!(len as usize, 2 + 1 + 4);
        assert!(unix_address(&[b'x'; 200], false).is_none());
        assert!(unix_address(b"", false).is_none());
    }

    #[test]
    fn the_library_leaves_ld_preload_and_the_rest_stays_in_order() {
        let lib = b"/c/libmpaudit.so";
        let mut out = [0u8; 64];
        let mut without = |v: &[u8]| {
            let n = preload_without(v, lib, &mut out).unwrap();
            String::from_utf8(out[..n].to_vec()).unwrap()
        };
        assert_eq!(without(b"/c/libmpaudit.so"), "");
        assert_eq!(without(b"/c/libmpaudit.so:/a.so"), "/a.so");
        // The runner's `lib:<host>` gives back the host's value exactly.
        assert_eq!(without(b"/c/libmpaudit.so:a.so  b.so"), "a.so  b.so");
        assert_eq!(without(b"/c/libmpaudit.so::/b.so:"), ":/b.so:");
        assert_eq!(without(b"/c/libmpaudit.so: "), " ");
        assert_eq!(without(b"/a.so /c/libmpaudit.so::/b.so"), "/a.so :/b.so");
        assert_eq!(without(b"/a.so /c/libmpaudit.so"), "/a.so");
        assert_eq!(without(b"/a.so::/c/libmpaudit.so"), "/a.so:");
        assert_eq!(
            without(b"/a.so:/c/libmpaudit.so.1"),
            "/a.so:/c/libmpaudit.so.1"
        );
        assert_eq!(without(b""), "");
        assert_eq!(preload_without(b"/a.so:/b.so", lib, &mut [0u8; 8]), None);
    }
}
