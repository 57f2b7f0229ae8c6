//! Reads answered in the worker's view under redirect (read-your-writes,
//! issue 12), beyond opens and stats: `readlink`/`readlinkat` of a name
//! the worker redirected ([`readlink`]). Each is notified only under
//! redirect ([`super::filter::Options::read_your_writes`]) and answered
//! here only when the worker's view has something of its own for the
//! name; otherwise the kernel performs it (CONTINUE).

use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;

use mpaudit_core::path::{absolutize, MAX_ABS};

use super::calls::PathArg;
use super::notify::{self, Answer, Caller, Handled, Supervision};

/// The longest text a symlink holds (the kernel's PATH_MAX).
const LINK_MAX: usize = 4096;

/// The worker's copy of `abs` in its view: its redirect, or the name
/// below a directory of the worker's own (one it made or moved, which
/// does not merge with a shared one) that the table does not list by
/// itself. `None`: the view has nothing of the worker's for `abs`.
fn own_copy(sup: &mut Supervision, w: u32, abs: &[u8]) -> Option<Vec<u8>> {
    if let Some(copy) = sup.redirects.lookup(w, abs) {
        return Some(copy);
    }
    let mut end = abs.len();
    while let Some(i) = abs[..end].iter().rposition(|&b| b == b'/') {
        if i == 0 {
            break;
        }
        end = i;
        if let Some(copy) = sup.redirects.lookup(w, &abs[..end]) {
            let dir = std::fs::symlink_metadata(OsStr::from_bytes(&copy)).is_ok_and(|m| m.is_dir());
            let shared_dir =
                std::fs::symlink_metadata(OsStr::from_bytes(&abs[..end])).is_ok_and(|m| m.is_dir());
            if dir && !shared_dir {
                let mut p = copy;
                p.extend_from_slice(&abs[end..]);
                return Some(p);
            }
            return None;
        }
    }
    None
}

/// `readlink(path, buf, bufsiz)` / `readlinkat(dirfd, path, buf, bufsiz)`
/// of a name the worker redirected: the text of the worker's copy (a
/// symlink it made, or made again), `ENOENT` for a name it removed,
/// `EINVAL` for a copy that is no symlink, truncated to `bufsiz` without
/// a NUL as the kernel does, written into the task's buffer (`EFAULT`
/// when it cannot be). The kernel answers every other name, and a
/// `bufsiz` it refuses (`EINVAL` before any lookup, whatever the view).
#[allow(clippy::too_many_arguments)]
pub fn readlink(
    sup: &mut Supervision,
    c: &Caller,
    args: &[u64; 6],
    path: PathArg,
    buf: usize,
    size: usize,
    lfd: RawFd,
    id: u64,
) -> Handled {
    let continue_ = || Handled::quiet(Answer::Continue);
    let Some(w) = c.worker else {
        return continue_();
    };
    let bufsiz = args[size] as i32;
    if bufsiz <= 0 {
        return continue_();
    }
    let tid = c.task.tid;
    let (given, lexical) = notify::resolve(tid, args, path);
    let (Some(given), Some(lexical)) = (given, lexical) else {
        return continue_();
    };
    // An empty name (a descriptor's own link) and the task's magic links
    // (`/proc/self/fd/N`, whose text is the kernel's) are the kernel's.
    let mut plain = vec![0u8; MAX_ABS];
    let base = match given.first() {
        Some(b'/') => None,
        _ => notify::base_dir(tid, path.dirfd.map(|d| args[d] as i32)),
    };
    let Some(n) = absolutize(&given, base.as_deref(), &mut plain) else {
        return continue_();
    };
    let plain = &plain[..n];
    if given.is_empty() || plain.starts_with(b"/proc/") || plain.starts_with(b"/dev/") {
        return continue_();
    }
    // The directories as the kernel walks them in the shared tree.
    let dirfd = path.dirfd.map(|d| args[d] as i32);
    let abs = notify::kernel_path(tid, dirfd, &given, false).unwrap_or(lexical);
    if let Some(errno) = notify::read_blocked_in_view(sup, w, tid, args, path, &given, &abs) {
        return Handled::quiet(Answer::Fail(errno));
    }
    let Some(copy) = own_copy(sup, w, &abs) else {
        return continue_();
    };
    let answer = if given.ends_with(b"/") {
        // `readlink("s/")` follows `s`: what it leads to in the view is
        // a directory (EINVAL), a file (ENOTDIR) or nothing (ENOENT).
        Answer::Fail(through_slash(sup, w, tid, &given, &abs, &copy))
    } else {
        let mut text = vec![0u8; LINK_MAX + 1];
        let cs = match std::ffi::CString::new(copy) {
            Ok(cs) => cs,
            Err(_) => return continue_(),
        };
        // SAFETY: a NUL-terminated path and our buffer of its length.
        let r = unsafe { libc::readlink(cs.as_ptr(), text.as_mut_ptr().cast(), text.len()) };
        if r < 0 {
            Answer::Fail(super::emulate::errno())
        } else {
            let k = (r as usize).min(bufsiz as usize);
            if !notify::still_valid(lfd, id) {
                return continue_();
            }
            if notify::write_mem(tid, args[buf], &text[..k]) == k {
                Answer::Value(k as i64)
            } else {
                Answer::Fail(libc::EFAULT)
            }
        }
    };
    Handled::quiet(answer)
}

/// The errno of `readlink("<name>/")` whose name's copy in the view is
/// `copy`: the name followed (through the worker's symlinks) to what it
/// leads to in the view.
fn through_slash(
    sup: &mut Supervision,
    w: u32,
    tid: i32,
    given: &[u8],
    abs: &[u8],
    copy: &[u8],
) -> i32 {
    let kind = |p: &[u8]| std::fs::symlink_metadata(OsStr::from_bytes(p)).ok();
    match kind(copy) {
        None => return libc::ENOENT,
        Some(m) if m.is_dir() => return libc::EINVAL,
        Some(m) if !m.is_symlink() => return libc::ENOTDIR,
        _ => {}
    }
    let (r, _) =
        notify::through_own_symlinks(sup, w, tid, (Some(given.to_vec()), Some(abs.to_vec())));
    let Some(end) = r.1 else {
        return libc::ELOOP;
    };
    let seen = match sup.redirects.lookup(w, &end) {
        Some(c) => kind(&c),
        None => std::fs::metadata(OsStr::from_bytes(&end)).ok(),
    };
    match seen {
        None => libc::ENOENT,
        Some(m) if m.is_dir() => libc::EINVAL,
        Some(_) => libc::ENOTDIR,
    }
}
