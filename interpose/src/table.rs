//! The worker's redirect table: one file shared by every process of the
//! worker (parent, children, exec'ed images) and by the runner's seccomp
//! supervisor for the worker's supervised processes. Its format and logic
//! are `mpaudit_core::table`; this module gives it the library's raw
//! system calls (no libc wrappers, no heap: usable in any hook).

use crate::sys;

pub use mpaudit_core::table::Refused;

/// The table's file operations as raw system calls.
pub struct RawIo;

impl mpaudit_core::table::TableIo for RawIo {
    fn open(path: &[u8], create: bool) -> Option<i32> {
        let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
        if create {
            flags |= libc::O_CREAT | libc::O_EXCL;
        }
        // SAFETY: the table passes its path with a NUL after it.
        let fd = unsafe { sys::openat(libc::AT_FDCWD, path.as_ptr().cast(), flags, 0o600) };
        (fd >= 0).then_some(fd)
    }

    fn close(fd: i32) {
        sys::close(fd)
    }

    fn fallocate(fd: i32, off: u64, len: u64) -> i64 {
        sys::fallocate(fd, off, len) as i64
    }

    fn file_size_limit() -> u64 {
        sys::file_size_limit()
    }

    fn set_size(fd: i32, len: u64) -> i64 {
        sys::ftruncate(fd, len) as i64
    }
}

pub type Table = mpaudit_core::table::Table<RawIo>;

/// Another worker's table, read only: the fork-mode root's view of what
/// its workers redirected (redirect.rs, `root_lookup`). Opened `O_RDONLY`
/// and mapped `PROT_READ`: the root can never change a worker's table.
pub struct ReadOnlyIo;

impl mpaudit_core::table::TableIo for ReadOnlyIo {
    fn open(path: &[u8], create: bool) -> Option<i32> {
        if create {
            return None;
        }
        // SAFETY: the table passes its path with a NUL after it.
        let fd = unsafe {
            sys::openat(
                libc::AT_FDCWD,
                path.as_ptr().cast(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0,
            )
        };
        (fd >= 0).then_some(fd)
    }

    fn close(fd: i32) {
        sys::close(fd)
    }

    fn fallocate(_fd: i32, _off: u64, _len: u64) -> i64 {
        -(libc::EBADF as i64)
    }

    fn size(fd: i32) -> Option<u64> {
        sys::fstat(fd).map(|st| st.st_size as u64)
    }

    fn map(fd: i32, off: u64, len: u64) -> Option<usize> {
        // A segment the worker has not given blocks to yet is never mapped
        // (the table maps only published segments), so no read faults.
        mpaudit_core::table::map_shared(fd, off, len, libc::PROT_READ)
    }

    fn file_size_limit() -> u64 {
        0
    }

    fn set_size(_fd: i32, _len: u64) -> i64 {
        -(libc::EBADF as i64)
    }
}

pub type ReadOnlyTable = mpaudit_core::table::Table<ReadOnlyIo>;
