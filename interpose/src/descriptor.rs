//! Metadata changes made through a descriptor (fchmod, fchown, futimens,
//! fsetxattr, fremovexattr, and the `AT_EMPTY_PATH` / NULL-path forms of
//! fchmodat, fchownat, utimensat, futimesat). A read-only open of a shared
//! file is never redirected, so its descriptor is a handle on the shared
//! inode (review 2, F11): the change is judged as a metadata write of the
//! descriptor's file, by the path `/proc/self/fd/N` names, exactly as the
//! same change by path. Under redirect the worker's copy is changed (copied
//! up first) and, when the descriptor was opened read-only or `O_PATH`, the
//! copy is put in its place (`dup3`, same number, flags and offset), so a
//! later `fstat` or read on it sees what the worker made; a directory's
//! descriptor stays on the shared directory (its listing merged, its
//! `fstat` the copy's metadata). Under deny the
//! call fails as the path form does.

use crate::audit::{file_access, Call, PathArg};
use crate::{state, sys};
use libc::{c_char, c_int};
use mpaudit_core::policy::ActionSetting;

/// `real` changes the file of the descriptor it is given. `fd` is the
/// program's descriptor; `op` names the call in the event.
///
/// # Safety
/// `real` is the libc function with the program's other arguments, which
/// are as valid as libc requires of its caller.
#[inline(always)]
pub(crate) unsafe fn metadata_change(
    caller: usize,
    op: &'static str,
    fd: c_int,
    real: impl Fn(c_int) -> c_int,
) -> c_int {
    if !state::ready() {
        return real(fd);
    }
    let saved = state::SAVED.get();
    let may_act = crate::redirect::any_redirected()
        || saved.action == ActionSetting::Deny
        || (saved.action == ActionSetting::Redirect && state::worker().is_some());
    if !may_act && !crate::log::enabled() {
        return real(fd);
    }
    let entry_errno = sys::ErrnoGuard::save();
    let Some(mut claimed) = crate::pool::claim() else {
        // No buffers: the descriptor may be a shared file's (review 3:
        // fchmod changed it in place); fail closed where a redirect or
        // deny may have to act.
        let in_worker = state::worker().is_some();
        if crate::audit::must_be_judged(true, saved.action, in_worker) {
            core::mem::forget(entry_errno);
            return crate::audit::unjudged::<c_int>();
        }
        drop(entry_errno);
        return real(fd);
    };
    let name = &mut claimed.block().target;
    let room = name.len() - 1;
    // Pipes, sockets, anonymous inodes (no `/`) and files already removed
    // (" (deleted)": no name to judge or copy) change as bare.
    let n = match sys::fd_path(fd, &mut name[..room]) {
        Some(n) if !name[..n].ends_with(b" (deleted)") => n,
        _ => {
            drop(entry_errno);
            return real(fd);
        }
    };
    name[n] = 0;
    // SAFETY: F_GETFL reads the descriptor's status flags, nothing else.
    let status = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) } as c_int;
    drop(entry_errno);
    if status < 0 {
        // Not an open descriptor: EBADF, as bare.
        return real(fd);
    }
    let own: *const c_char = name.as_ptr().cast();
    let own_bytes = &name[..n];
    let call = crate::hooks::metadata(op, PathArg::cwd(own), false);
    // SAFETY: `own` is our NUL-terminated copy of the descriptor's path.
    unsafe {
        file_access(caller, call, |p, _| {
            // The call's path is NUL-terminated (ours or the route's).
            if p == own || sys::c_bytes(p, 4096) == own_bytes {
                real(fd)
            } else {
                change_the_copy(p, fd, status, &real)
            }
        })
    }
}

/// The change applied to the worker's copy `copy` of the descriptor's file
/// (already copied up), then the copy put in the descriptor's place when
/// that keeps its access mode.
fn change_the_copy(
    copy: *const c_char,
    fd: c_int,
    status: c_int,
    real: &impl Fn(c_int) -> c_int,
) -> c_int {
    let path_only = status & libc::O_PATH != 0;
    let access = if path_only {
        libc::O_PATH
    } else {
        libc::O_RDONLY
    };
    // SAFETY: `copy` is the route's NUL-terminated path.
    let cfd = unsafe { sys::openat(libc::AT_FDCWD, copy, access | libc::O_CLOEXEC, 0) };
    if cfd < 0 {
        sys::set_errno(-cfd);
        return -1;
    }
    let r = real(cfd);
    let errno = sys::ErrnoGuard::save();
    // A directory's descriptor stays on the shared directory, whose
    // listing the view merges (the copy holds only the worker's entries);
    // fstat through it shows the copy's metadata (audit::view_dir_stat).
    let is_dir = || sys::fstat(cfd).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    if r == 0 && (path_only || status & libc::O_ACCMODE == libc::O_RDONLY) && !is_dir() {
        replace(fd, cfd, status);
    }
    sys::close(cfd);
    drop(errno);
    r
}

/// Puts a duplicate of `cfd` at number `fd`, with `fd`'s close-on-exec
/// flag, status flags and offset. Left as it was if any step fails before
/// the `dup3`.
fn replace(fd: c_int, cfd: c_int, status: c_int) {
    // SAFETY: fcntl and lseek on descriptors of this process, by value.
    unsafe {
        let fd_flags = libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD);
        if fd_flags < 0 {
            return;
        }
        let offset = sys::tell(fd);
        let cloexec = if fd_flags as c_int & libc::FD_CLOEXEC != 0 {
            libc::O_CLOEXEC
        } else {
            0
        };
        if libc::syscall(libc::SYS_dup3, cfd, fd, cloexec) < 0 {
            return;
        }
        const KEPT: c_int = libc::O_APPEND | libc::O_NONBLOCK | libc::O_NOATIME | libc::O_ASYNC;
        libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFL, status & KEPT);
        if let Some(off) = offset {
            libc::syscall(libc::SYS_lseek, fd, off as libc::off_t, libc::SEEK_SET);
        }
    }
}

/// `linkat(fd, "", newdirfd, new, AT_EMPTY_PATH)`: a new name for the
/// descriptor's file (review 2, F12), judged and redirected as the link of
/// the path `/proc/self/fd/N` names, so that a descriptor of a shared file
/// never gives the worker a hard link to it: under redirect the worker's
/// copy is linked (copied up first) by its path. A descriptor without a
/// path (a pipe, a removed or `O_TMPFILE` file: not a shared file's name)
/// is linked as it is, its new name judged and redirected as usual.
/// `real(olddirfd, old, new, flags)` is the libc call with the program's
/// `newdirfd`.
///
/// # Safety
/// The program's arguments, as valid as libc requires of its caller.
#[inline(always)]
pub(crate) unsafe fn link_of_descriptor(
    caller: usize,
    op: &'static str,
    fd: c_int,
    old: *const c_char,
    new: PathArg,
    flags: c_int,
    real: impl Fn(c_int, *const c_char, *const c_char, c_int) -> c_int,
) -> c_int {
    let as_given = Call {
        at_flags: flags,
        ..crate::hooks::creation(
            op,
            PathArg {
                dirfd: fd,
                path: old,
            },
            Some(new),
        )
    };
    if !state::ready() {
        return real(fd, old, new.path, flags);
    }
    let entry_errno = sys::ErrnoGuard::save();
    let Some(mut claimed) = crate::pool::claim() else {
        drop(entry_errno);
        // SAFETY: the program's arguments.
        return unsafe { file_access(caller, as_given, |_, q| real(fd, old, q, flags)) };
    };
    let name = &mut claimed.block().target;
    let room = name.len() - 1;
    let n = match sys::fd_path(fd, &mut name[..room]) {
        Some(n) if !name[..n].ends_with(b" (deleted)") => n,
        _ => {
            drop(entry_errno);
            drop(claimed);
            // SAFETY: the program's arguments.
            return unsafe { file_access(caller, as_given, |_, q| real(fd, old, q, flags)) };
        }
    };
    name[n] = 0;
    drop(entry_errno);
    let own: *const c_char = name.as_ptr().cast();
    let own_bytes = &name[..n];
    // The descriptor's file itself: its path's leaf is not followed.
    let by_path = Call {
        at_flags: flags & !(libc::AT_EMPTY_PATH | libc::AT_SYMLINK_FOLLOW),
        ..crate::hooks::creation(op, PathArg::cwd(own), Some(new))
    };
    // SAFETY: `own` is our NUL-terminated copy of the descriptor's path;
    // the rest are the program's arguments.
    unsafe {
        file_access(caller, by_path, |p, q| {
            if p == own || sys::c_bytes(p, 4096) == own_bytes {
                return real(fd, old, q, flags);
            }
            // The worker's copy, by its path. The kernel's lookup of the
            // descriptor comes first (AT_EMPTY_PATH needs the opener's
            // credentials or CAP_DAC_READ_SEARCH): asked with "/" as the
            // new name, which a lookup that passes fails with EEXIST,
            // creating nothing.
            let probe = libc::syscall(
                libc::SYS_linkat,
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                c"/".as_ptr(),
                flags,
            );
            if probe < 0 && sys::errno() != libc::EEXIST {
                return -1;
            }
            real(libc::AT_FDCWD, p, q, 0)
        })
    }
}

/// Whether a `*at` call's path is the empty one `AT_EMPTY_PATH` makes act
/// on the descriptor (an unreadable path is not: the call fails EFAULT).
pub(crate) fn empty_path(path: *const c_char, flags: c_int) -> bool {
    if flags & libc::AT_EMPTY_PATH == 0 || path.is_null() {
        return false;
    }
    let _errno = sys::ErrnoGuard::save();
    let mut pages = crate::checked::Pages::default();
    // SAFETY: a checked read of the program's argument.
    matches!(unsafe { pages.c_bytes(path, 1) }, Some([]))
}
