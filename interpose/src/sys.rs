//! Thin wrappers over raw system calls.
//!
//! The library never calls the libc functions it intercepts (that would
//! re-enter its own hooks, since a preloaded `open` is found first by every
//! caller, including this library). Everything here is async-signal-safe.

use libc::{c_char, c_int, c_long};

pub fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(e: c_int) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e }
}

/// Saves errno on creation and restores it on drop, so that nothing the
/// library does after the real call can change what the program sees.
pub struct ErrnoGuard(c_int);

impl ErrnoGuard {
    pub fn save() -> Self {
        ErrnoGuard(errno())
    }
    pub fn value(&self) -> c_int {
        self.0
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        set_errno(self.0)
    }
}

/// Result of a raw syscall: the value, or `-errno`.
fn ret(r: c_long) -> c_long {
    if r < 0 {
        -(errno() as c_long)
    } else {
        r
    }
}

pub unsafe fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: libc::mode_t) -> c_int {
    // SAFETY: the caller passes a NUL-terminated path.
    ret(unsafe { libc::syscall(libc::SYS_openat, dirfd, path, flags, mode as c_long) }) as c_int
}

/// execve(2) as a raw system call: returns only on failure (-1, errno set).
pub fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: the kernel checks the pointers (EFAULT); on success this
    // image is gone.
    unsafe { libc::syscall(libc::SYS_execve, path, argv, envp) as c_int }
}

pub fn close(fd: c_int) {
    // SAFETY: closing a descriptor this library owns.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

pub unsafe fn mkdirat(dirfd: c_int, path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: NUL-terminated path from the caller.
    ret(unsafe { libc::syscall(libc::SYS_mkdirat, dirfd, path, mode as c_long) }) as c_int
}

/// The cwd into `buf`, without the NUL; `None` if it does not fit or the
/// cwd is unreachable. (File hooks use the cached copy in their pool block
/// instead: `guard::cwd`.)
pub fn getcwd(buf: &mut [u8]) -> Option<usize> {
    getcwd_raw(buf)
}

/// The cwd straight from the kernel into `buf`, without the NUL; `None` if
/// it does not fit or the cwd is unreachable (the kernel then prefixes
/// "(unreachable)").
pub fn getcwd_raw(buf: &mut [u8]) -> Option<usize> {
    // SAFETY: the kernel writes at most buf.len() bytes.
    let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if r <= 1 || buf.first() != Some(&b'/') {
        return None;
    }
    Some(r as usize - 1)
}

pub unsafe fn readlink(path: *const c_char, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: NUL-terminated path; the kernel writes at most buf.len() bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_readlinkat,
            libc::AT_FDCWD,
            path,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if r < 0 || r as usize >= buf.len() {
        None
    } else {
        Some(r as usize)
    }
}

/// `v` in decimal, in `buf`.
pub fn decimal(v: u64, buf: &mut [u8; 24]) -> &[u8] {
    let mut sink = mpaudit_core::json::SliceSink::new(buf);
    mpaudit_core::json::put_u64(&mut sink, v);
    let n = sink.len;
    &buf[..n]
}

/// The path a directory descriptor refers to, via /proc/thread-self/fd/N
/// (this thread's descriptor table, which a thread that unshared its own
/// does not find in /proc/self/fd: review 9).
pub fn fd_path(fd: c_int, buf: &mut [u8]) -> Option<usize> {
    let mut link = [0u8; 32];
    let prefix = b"/proc/thread-self/fd/";
    link[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    let mut digits = [0u8; 24];
    let d = decimal(fd as u32 as u64, &mut digits);
    link[n..n + d.len()].copy_from_slice(d);
    n += d.len();
    link[n] = 0;
    // SAFETY: link is NUL-terminated.
    let len = unsafe { readlink(link.as_ptr().cast(), buf)? };
    (buf.first() == Some(&b'/')).then_some(len)
}

pub fn gettid() -> c_int {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as c_int }
}

pub fn getpid() -> c_int {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as c_int }
}

pub fn getppid() -> c_int {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getppid) as c_int }
}

/// Wall-clock nanoseconds (vDSO, no syscall).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Gives the file real blocks for `[off, off + len)`, growing it if needed
/// (never shrinks it, unlike ftruncate). Returns 0 or -errno.
pub fn fallocate(fd: c_int, off: u64, len: u64) -> c_long {
    // SAFETY: plain syscall on our own descriptor.
    ret(unsafe {
        libc::syscall(
            libc::SYS_fallocate,
            fd,
            0,
            off as libc::off_t,
            len as libc::off_t,
        )
    })
}

/// Writes all of `buf` at `off`. Returns 0 or -errno.
pub fn pwrite_all(fd: c_int, mut buf: &[u8], mut off: u64) -> c_long {
    while !buf.is_empty() {
        // SAFETY: buf is valid for its length.
        let r = ret(unsafe {
            libc::syscall(
                libc::SYS_pwrite64,
                fd,
                buf.as_ptr(),
                buf.len(),
                off as libc::off_t,
            )
        });
        if r == -(libc::EINTR as c_long) {
            continue;
        }
        if r < 0 {
            return r;
        }
        if r == 0 {
            return -(libc::EIO as c_long);
        }
        buf = &buf[r as usize..];
        off += r as u64;
    }
    0
}

/// sendfile(2) from the current offset of `from` to that of `to`: the bytes
/// copied, or -errno.
pub fn sendfile(to: c_int, from: c_int, len: u64) -> c_long {
    // SAFETY: plain syscall on descriptors of ours; a NULL offset uses and
    // advances `from`'s file offset; the kernel copies without our memory.
    ret(unsafe {
        libc::syscall(
            libc::SYS_sendfile,
            to,
            from,
            core::ptr::null_mut::<libc::off_t>(),
            len,
        )
    })
}

/// Sets the file's size (here only ever to shrink it). Returns 0 or -errno.
pub fn ftruncate(fd: c_int, len: u64) -> c_long {
    // SAFETY: plain syscall on our own descriptor.
    ret(unsafe { libc::syscall(libc::SYS_ftruncate, fd, len as libc::off_t) })
}

pub fn fstat(fd: c_int) -> Option<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: st is a valid out-pointer.
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) };
    (r == 0).then_some(st)
}

/// The file position of `fd` (unchanged), or `None`.
pub fn tell(fd: c_int) -> Option<u64> {
    // SAFETY: lseek by 0 from the current position moves nothing.
    let r = unsafe { libc::syscall(libc::SYS_lseek, fd, 0 as libc::off_t, libc::SEEK_CUR) };
    (r >= 0).then_some(r as u64)
}

/// This process's limit `resource` (prlimit64, not libc's wrapper).
pub fn rlimit(resource: libc::__rlimit_resource_t) -> Option<libc::rlimit64> {
    let mut lim = libc::rlimit64 {
        rlim_cur: libc::RLIM64_INFINITY,
        rlim_max: libc::RLIM64_INFINITY,
    };
    // SAFETY: prlimit64 on ourselves, reading only; lim is a valid out-pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            resource,
            core::ptr::null::<libc::rlimit64>(),
            &mut lim as *mut libc::rlimit64,
        )
    };
    (r == 0).then_some(lim)
}

/// Sets this process's limit `resource`; whether it was set.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, lim: &libc::rlimit64) -> bool {
    // SAFETY: prlimit64 on ourselves from a valid struct, not reading back.
    let r = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            resource,
            lim as *const libc::rlimit64,
            core::ptr::null_mut::<libc::rlimit64>(),
        )
    };
    r == 0
}

/// The soft `RLIMIT_FSIZE` in bytes (`u64::MAX` when unlimited): a write or
/// growth past it raises SIGXFSZ.
pub fn file_size_limit() -> u64 {
    match rlimit(libc::RLIMIT_FSIZE) {
        Some(lim) if lim.rlim_cur != libc::RLIM64_INFINITY => lim.rlim_cur,
        _ => u64::MAX,
    }
}

pub fn write_all(fd: c_int, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is valid for its length.
        let r = ret(unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) });
        if r == -(libc::EINTR as c_long) {
            continue;
        }
        if r <= 0 {
            return;
        }
        buf = &buf[r as usize..];
    }
}

/// `stat` through the raw syscall (newfstatat), for checks of our own.
///
/// # Safety
/// `path` points to a NUL-terminated string.
pub unsafe fn stat(path: *const c_char, flags: c_int) -> Option<libc::stat> {
    // SAFETY: the caller's contract.
    unsafe { stat_at(libc::AT_FDCWD, path, flags) }
}

/// [`stat`] of `name` relative to the directory `dirfd`.
///
/// # Safety
/// `name` points to a NUL-terminated string.
pub unsafe fn stat_at(dirfd: c_int, name: *const c_char, flags: c_int) -> Option<libc::stat> {
    // SAFETY: libc::stat is plain integers, for which all-zero is valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated (the caller's contract) and `st` is a
    // live, writable libc::stat, the layout newfstatat fills on this target.
    let r = unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            dirfd,
            name,
            &mut st as *mut libc::stat,
            flags,
        )
    };
    (r == 0).then_some(st)
}

/// Length of a NUL-terminated C string, bounded.
///
/// # Safety
/// `p` points to a NUL-terminated string or to at least `max` readable bytes.
pub unsafe fn c_strlen(p: *const c_char, max: usize) -> usize {
    let mut n = 0;
    // SAFETY: the caller guarantees p is a C string; we stop at max.
    while n < max && unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    n
}

/// A C string as bytes (without NUL), bounded to `max` bytes.
///
/// # Safety
/// As for `c_strlen`, and the bytes stay unchanged and readable for `'a`.
pub unsafe fn c_bytes<'a>(p: *const c_char, max: usize) -> &'a [u8] {
    // SAFETY: p points to at least c_strlen(p) readable bytes.
    unsafe { core::slice::from_raw_parts(p.cast(), c_strlen(p, max)) }
}

/// Bytes of a path argument the kernel reads at most (PATH_MAX, its NUL
/// included): a path call that did not fail with EFAULT has found that many
/// bytes, or the bytes up to the NUL, readable.
pub const KERNEL_PATH_READ: usize = 4096;

/// Whether the byte at `addr` is readable, asked of the kernel, which fails
/// with EFAULT where a load would fault (checked.rs says how).
fn readable(addr: *const u8) -> bool {
    crate::checked::Pages::default().readable(addr as usize)
}

/// A path argument of the program as bytes (without NUL), bounded to `max`.
/// Linux reads a path only up to `KERNEL_PATH_READ` bytes and fails a
/// longer one with ENAMETOOLONG, so a buffer with no NUL there may end in
/// an unreadable page that the bare call never touches. Past those bytes,
/// each new page is read only after the kernel says it is readable; the
/// path ends where one is not.
///
/// # Safety
/// `p` is readable up to its NUL or for `KERNEL_PATH_READ` bytes, whichever
/// comes first (a C string, or memory the kernel reads as a path), and the
/// bytes stay unchanged and readable for `'a`.
pub unsafe fn path_bytes<'a>(p: *const c_char, max: usize) -> &'a [u8] {
    let first = max.min(KERNEL_PATH_READ);
    // SAFETY: `c_strlen` reads at most `first` bytes, stopping at the NUL:
    // the part the contract covers.
    let mut n = unsafe { c_strlen(p, first) };
    if n == first {
        while n < max {
            let at = p.wrapping_add(n).cast::<u8>();
            // Pages are at least 4 KiB: a byte that does not start one lies
            // in the page of the byte before it, read already.
            if at as usize % 4096 == 0 && !readable(at) {
                break;
            }
            // SAFETY: `at` lies in a page just found readable, or in the
            // page of the byte read before it.
            if unsafe { *at } == 0 {
                break;
            }
            n += 1;
        }
    }
    // SAFETY: all `n` bytes were read above, so they are readable; the
    // caller's contract keeps them so for `'a`.
    unsafe { core::slice::from_raw_parts(p.cast(), n) }
}

/// A NUL-terminated copy of `bytes` in `buf`, or `None` if it does not fit.
pub fn c_path(bytes: &[u8], buf: &mut [u8]) -> Option<*const c_char> {
    if bytes.len() >= buf.len() {
        return None;
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    buf[bytes.len()] = 0;
    Some(buf.as_ptr().cast())
}

/// A C string from the program as bytes, or empty for NULL.
pub fn c_bytes_or_empty<'a>(p: *const c_char, max: usize) -> &'a [u8] {
    if p.is_null() {
        b""
    } else {
        // SAFETY: a non-NULL C string from the program.
        unsafe { c_bytes(p, max) }
    }
}

/// pread(2) as a raw system call (not hooked, errno-only side effects):
/// the bytes read, or -1.
pub fn pread(fd: c_int, buf: &mut [u8], off: u64) -> isize {
    // SAFETY: the kernel writes at most buf.len() bytes into buf, which is
    // valid for writes for its whole length.
    unsafe {
        libc::syscall(
            libc::SYS_pread64,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            off as libc::off_t,
        ) as isize
    }
}

/// An anonymous private read-write mapping, unmapped on drop: the hooks'
/// heap-free room for the argv and environment blocks they build (exec may
/// run in a fork child or a signal handler, where malloc may not).
pub struct Mapping {
    base: *mut u8,
    size: usize,
}

impl Mapping {
    /// At least `len` bytes, whole pages, zeroed; `None` when mmap fails.
    pub fn anonymous(len: usize) -> Option<Mapping> {
        let size = len.max(1).div_ceil(4096) * 4096;
        // SAFETY: a fresh anonymous private mapping; the kernel checks the
        // arguments.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (base != libc::MAP_FAILED).then(|| Mapping {
            base: base.cast(),
            size,
        })
    }

    /// Its first byte (page-aligned).
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Its length in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, used by nothing after this.
        unsafe { libc::munmap(self.base.cast(), self.size) };
    }
}
