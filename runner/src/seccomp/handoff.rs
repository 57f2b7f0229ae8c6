//! The supervisor's socket: a preloaded process about to exec a program the
//! library cannot audit (static, Go), or the spawn trampoline about to exec
//! one for a posix_spawn, hands the supervisor a listener for it.
//!
//! The runner puts the socket's path in every job process's environment
//! ([`SOCKET_VAR`]). The client (mpaudit_core::handoff, which has the
//! protocol) sends a hello with its worker and task id; the supervisor
//! checks the peer is the runner's own user and answers with the BPF
//! program; the client installs it and sends the listener back. Its own
//! calls until its exec are not logged: the library logged the exec or
//! the spawn.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

pub use mpaudit_core::handoff::{HELLO_LEN, HELLO_MAGIC, SOCKET_VAR};

/// The listening socket and the private directory holding it, removed on
/// drop.
pub struct Server {
    pub fd: OwnedFd,
    pub path: PathBuf,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A directory only we can enter, short enough for `sun_path` (108 bytes).
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let tmp = std::env::temp_dir();
    let base = if tmp.as_os_str().len() <= 60 {
        tmp
    } else {
        PathBuf::from("/tmp")
    };
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = base.join(format!("mpaudit-sv-{}-{ns:x}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

impl Server {
    pub fn start() -> std::io::Result<Server> {
        let dir = private_dir()?;
        let path = dir.join("s");
        let bytes = path.as_os_str().as_bytes();
        // SAFETY: a zeroed sockaddr_un is valid.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        if bytes.len() >= addr.sun_path.len() {
            let _ = std::fs::remove_dir(&dir);
            return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: socket with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            let _ = std::fs::remove_dir(&dir);
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let server = Server {
            fd,
            path: path.clone(),
            dir,
        };
        // SAFETY: a valid sockaddr_un of the size given.
        let ok = unsafe {
            libc::bind(
                server.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            ) == 0
                && libc::listen(server.fd.as_raw_fd(), 64) == 0
        };
        if !ok {
            return Err(std::io::Error::last_os_error());
        }
        Ok(server)
    }
}

/// Accepts one connection (`None`: nothing to accept).
pub fn accept(server: RawFd) -> Option<OwnedFd> {
    // SAFETY: accept4 without an address.
    let fd = unsafe {
        libc::accept4(
            server,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    // SAFETY: a new descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads a connection's hello and sends it the filter: `(worker, tid)`, or
/// `None` for a peer of another user or a malformed hello (the
/// connection is then dropped and the process execs unsupervised, listed
/// as unaudited by the library's exec event).
pub fn answer_hello(conn: RawFd, filter: &[u8]) -> Option<(Option<u32>, i32)> {
    // SAFETY: a zeroed ucred is valid; getsockopt fills it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid out-pointer and length.
    let got = unsafe {
        libc::getsockopt(
            conn,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    } == 0;
    // SAFETY: a plain getter.
    if !got || cred.uid != unsafe { libc::geteuid() } {
        return None;
    }
    let mut hello = [0u8; HELLO_LEN];
    // SAFETY: reading into our buffer.
    let n = unsafe { libc::recv(conn, hello.as_mut_ptr().cast(), HELLO_LEN, 0) };
    if n != HELLO_LEN as isize || &hello[..4] != HELLO_MAGIC {
        return None;
    }
    let worker = u32::from_ne_bytes(hello[4..8].try_into().ok()?);
    let tid = i32::from_ne_bytes(hello[8..12].try_into().ok()?);
    // SAFETY: sending from our buffer.
    let sent = unsafe {
        libc::send(
            conn,
            filter.as_ptr().cast(),
            filter.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    (sent == filter.len() as isize).then_some(((worker != u32::MAX).then_some(worker), tid))
}
