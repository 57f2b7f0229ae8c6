//! Handing a static or Go exec target to the runner's seccomp supervisor:
//! just before the real `execve`, this process connects to the socket the
//! runner named (`MPAUDIT_SUPERVISOR_SOCKET`), says who it is, receives the
//! BPF program, sets `PR_SET_NO_NEW_PRIVS`, installs the filter with a new
//! listener and sends the listener over (`SCM_RIGHTS`); the program then
//! runs under the filter, audited by the supervisor (runner/src/seccomp/
//! handoff.rs has the protocol). Raw system calls on caller-provided
//! buffers only: exec may run in a fork child or a signal handler.

use crate::state::SAVED;
use crate::sys;

const VAR: &[u8] = b"MPAUDIT_SUPERVISOR_SOCKET=";
const HELLO_MAGIC: &[u8; 4] = b"MPA1";
/// How long to wait for the supervisor's answer before exec'ing
/// unsupervised (listed as unaudited, as without the runner).
const ANSWER_TIMEOUT_S: i64 = 10;

/// The socket path from the saved environment, if the runner gave one.
fn socket_path() -> Option<&'static [u8]> {
    SAVED
        .get()
        .env_entries
        .as_bytes()
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(VAR))
        .filter(|p| !p.is_empty())
}

struct Fd(i32);
impl Drop for Fd {
    fn drop(&mut self) {
        sys::close(self.0);
    }
}

/// Puts this process under the supervisor's filter. True when the
/// listener was handed over: the exec that follows is audited. `buf`
/// holds the BPF program (at least a few KiB). False, with nothing
/// changed, when there is no supervisor or it does not answer; once the
/// filter is installed there is no way back, so every step that can fail
/// comes before it.
pub fn hand_over(buf: &mut [u8]) -> bool {
    let Some(path) = socket_path() else {
        return false;
    };
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    if path.len() >= addr.sun_path.len() {
        return false;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket with constant arguments.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_socket,
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
        )
    } as i32;
    if fd < 0 {
        return false;
    }
    let sock = Fd(fd);
    let timeout = libc::timeval {
        tv_sec: ANSWER_TIMEOUT_S,
        tv_usec: 0,
    };
    // SAFETY: setsockopt and connect with valid pointers and sizes.
    let connected = unsafe {
        for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            libc::syscall(
                libc::SYS_setsockopt,
                sock.0,
                libc::SOL_SOCKET,
                opt,
                &timeout as *const libc::timeval,
                core::mem::size_of::<libc::timeval>(),
            );
        }
        libc::syscall(
            libc::SYS_connect,
            sock.0,
            &addr as *const libc::sockaddr_un,
            core::mem::size_of::<libc::sockaddr_un>(),
        ) == 0
    };
    if !connected {
        return false;
    }
    let mut hello = [0u8; 16];
    hello[..4].copy_from_slice(HELLO_MAGIC);
    hello[4..8].copy_from_slice(&crate::state::worker().unwrap_or(u32::MAX).to_ne_bytes());
    // SAFETY: gettid takes no arguments.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    hello[8..12].copy_from_slice(&tid.to_ne_bytes());
    // SAFETY: sendto/recvfrom on our socket with our buffers.
    let n = unsafe {
        if libc::syscall(
            libc::SYS_sendto,
            sock.0,
            hello.as_ptr(),
            hello.len(),
            libc::MSG_NOSIGNAL,
            0usize,
            0usize,
        ) != hello.len() as i64
        {
            return false;
        }
        libc::syscall(
            libc::SYS_recvfrom,
            sock.0,
            buf.as_mut_ptr(),
            buf.len(),
            0,
            0usize,
            0usize,
        )
    };
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
    // Linux ≥ 5.19: a call the supervisor has received is interrupted only
    // by a fatal signal, so it is never performed twice.
    let install = |flags: libc::c_ulong| {
        // SAFETY: a sock_fprog pointing at the received program, which
        // outlives the call (the kernel copies it).
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        }
    };
    let mut listener = install(
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    ) as i32;
    if listener < 0 && sys::errno() == libc::EINVAL {
        listener = install(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER) as i32;
    }
    if listener < 0 {
        // EBUSY: a filter of this process already has a listener (it runs
        // under the supervisor already), which sees the program too.
        return sys::errno() == libc::EBUSY;
    }
    let listener = Fd(listener);
    send_fd(sock.0, listener.0)
}

/// Sends `fd` over `sock` with SCM_RIGHTS (one byte of data).
fn send_fd(sock: i32, fd: i32) -> bool {
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
        msg.msg_controllen = libc::CMSG_SPACE(core::mem::size_of::<i32>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(core::mem::size_of::<i32>() as u32) as usize;
        core::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        loop {
            let r = libc::syscall(
                libc::SYS_sendmsg,
                sock,
                &msg as *const libc::msghdr,
                libc::MSG_NOSIGNAL,
            );
            if r >= 0 {
                return true;
            }
            if sys::errno() != libc::EINTR {
                return false;
            }
        }
    }
}
