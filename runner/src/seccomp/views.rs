//! Reads answered in the worker's view under redirect (read-your-writes,
//! issue 12), beyond opens and stats: `readlink`/`readlinkat` of a name
//! the worker redirected ([`readlink`]). Each is notified only under
//! redirect ([`super::filter::Options::read_your_writes`]) and answered
//! here only when the worker's view has something of its own for the
//! name; otherwise the kernel performs it (CONTINUE).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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

/// One entry of a listing in the view: name, inode number, `d_type`.
struct Entry {
    name: Vec<u8>,
    ino: u64,
    kind: u8,
}

fn d_type(m: &std::fs::Metadata) -> u8 {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_file() {
        libc::DT_REG
    } else if t.is_dir() {
        libc::DT_DIR
    } else if t.is_symlink() {
        libc::DT_LNK
    } else if t.is_fifo() {
        libc::DT_FIFO
    } else if t.is_socket() {
        libc::DT_SOCK
    } else if t.is_char_device() {
        libc::DT_CHR
    } else if t.is_block_device() {
        libc::DT_BLK
    } else {
        libc::DT_UNKNOWN
    }
}

fn lstat(p: &[u8]) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(OsStr::from_bytes(p)).ok()
}

/// The kernel's records of the directory `dir` (`.` and `..` included),
/// in its order, read through a description of our own.
fn kernel_entries(dir: &[u8]) -> Option<Vec<Entry>> {
    let cs = std::ffi::CString::new(dir).ok()?;
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            cs.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: ours from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: our buffer and its length.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return None;
        }
        if n == 0 {
            return Some(out);
        }
        let mut at = 0usize;
        while at + 19 < n as usize {
            let ino = u64::from_ne_bytes(buf[at..at + 8].try_into().ok()?);
            let reclen = u16::from_ne_bytes(buf[at + 16..at + 18].try_into().ok()?) as usize;
            let kind = buf[at + 18];
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            out.push(Entry {
                name: name.to_vec(),
                ino,
                kind,
            });
            at += reclen.max(1);
        }
    }
}

/// The listing of the job directory `dir` in worker `w`'s view, or `None`
/// when it is the kernel's listing of `open` (the directory the
/// descriptor is open on) as it is: nothing of the worker's in it.
/// As the library's (dirview.rs): the shared entries first, in the
/// kernel's order (`.` and `..` as the kernel gives them), each the
/// worker redirected shown as its copy (`d_ino`, `d_type`), each it
/// removed left out; then the worker's own (its copy of the directory,
/// then its redirects below it) that the shared directory lacks. A
/// directory the worker made, moved or replaced is its copy's listing.
fn listing(
    sup: &mut Supervision,
    w: u32,
    open: &[u8],
    dir: &[u8],
) -> Option<Result<Vec<Entry>, i32>> {
    let children = sup.redirects.children(w, dir);
    let redirect = sup.redirects.lookup(w, dir);
    let on_shared = open == dir;
    if children.is_empty() && on_shared && redirect.is_none() {
        return None; // the common case, told without a look at the disk
    }
    let shared_dir = lstat(dir).is_some_and(|m| m.is_dir());
    // The worker's copy of the directory.
    let copy = redirect.clone().or_else(|| {
        let wd = sup.redirects.worker_dir(w);
        let mut out = vec![0u8; MAX_ABS];
        let job = sup.judge.job_dir.clone();
        mpaudit_core::map::map_to_worker(dir, job.as_bytes(), wd.as_os_str().as_bytes(), &mut out)
            .map(|n| out[..n].to_vec())
    });
    let copy_dir = copy
        .as_deref()
        .filter(|c| lstat(c).is_some_and(|m| m.is_dir()));
    if on_shared && redirect.is_some() && copy_dir.is_none() {
        // A shared directory the worker removed (or replaced by a file)
        // while this descriptor was open on it: a removed directory.
        return Some(Err(libc::ENOENT));
    }
    // The view merges a shared directory with the worker's copy of it
    // (a metadata copy, a directory made again after its removal).
    let merges = shared_dir;
    if children.is_empty() && (on_shared || !merges) {
        return None;
    }
    let primary: &[u8] = if merges { dir } else { open };
    let mut out: Vec<Entry> = Vec::new();
    let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let own: std::collections::HashMap<&[u8], &[u8]> = children
        .iter()
        .map(|(n, t)| (n.as_slice(), t.as_slice()))
        .collect();
    let first = kernel_entries(primary)?;
    for mut e in first {
        seen.insert(e.name.clone());
        if merges && e.name != b"." && e.name != b".." {
            if let Some(t) = own.get(e.name.as_slice()) {
                match lstat(t) {
                    Some(m) => {
                        use std::os::unix::fs::MetadataExt;
                        e.ino = m.ino();
                        e.kind = d_type(&m);
                    }
                    None => continue, // removed by the worker
                }
            }
        }
        out.push(e);
    }
    if merges {
        if let Some(c) = copy_dir {
            for mut e in kernel_entries(c).unwrap_or_default() {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                // The name it stands for (the top of the worker directory
                // escapes some, and keeps the runner's own files).
                let Some(name) = view_name(sup, w, c, &e.name) else {
                    continue;
                };
                if seen.insert(name.clone()) {
                    e.name = name;
                    out.push(e);
                }
            }
        }
    }
    for (name, target) in &children {
        if seen.contains(name) {
            continue;
        }
        if let Some(m) = lstat(target) {
            use std::os::unix::fs::MetadataExt;
            seen.insert(name.clone());
            out.push(Entry {
                name: name.clone(),
                ino: m.ino(),
                kind: d_type(&m),
            });
        }
    }
    Some(Ok(out))
}

/// The job name an entry `name` of the worker's directory `copy` stands
/// for; `None` for the runner's and the library's own files.
fn view_name(sup: &Supervision, w: u32, copy: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let wd = sup.redirects.worker_dir(w);
    let mut full = copy.to_vec();
    full.push(b'/');
    full.extend_from_slice(name);
    let mut out = vec![0u8; MAX_ABS];
    let n = mpaudit_core::map::unmap_from_worker(
        &full,
        sup.judge.job_dir.as_bytes(),
        wd.as_os_str().as_bytes(),
        &mut out,
    )?;
    let job = &out[..n];
    let cut = job.iter().rposition(|&b| b == b'/')?;
    let leaf = &job[cut + 1..];
    (!leaf.is_empty()).then(|| leaf.to_vec())
}

/// The records of `entries[from..]` that fit in `count` bytes, as
/// `getdents64` (`wide`) or the old `getdents` lays them out, each
/// `d_off` the position after it; and that position.
fn records(entries: &[Entry], from: usize, count: usize, wide: bool) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut at = from;
    for e in entries.iter().skip(from) {
        let header = if wide { 19 } else { 18 };
        let tail = if wide { 1 } else { 2 };
        let reclen = (header + e.name.len() + tail).next_multiple_of(8);
        if out.len() + reclen > count || reclen > u16::MAX as usize {
            break;
        }
        let start = out.len();
        out.resize(start + reclen, 0);
        let r = &mut out[start..];
        r[0..8].copy_from_slice(&e.ino.to_ne_bytes());
        r[8..16].copy_from_slice(&((at + 1) as u64).to_ne_bytes());
        r[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
        if wide {
            r[18] = e.kind;
            r[19..19 + e.name.len()].copy_from_slice(&e.name);
        } else {
            r[18..18 + e.name.len()].copy_from_slice(&e.name);
            r[reclen - 1] = e.kind;
        }
        at += 1;
    }
    (out, at)
}

/// A copy of the task's descriptor `fd`: the same open file description
/// (its position is the program's), through `pidfd_getfd` (Linux 5.6).
fn their_description(pid: i32, fd: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open with integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return None;
    }
    // SAFETY: a new descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd with integer arguments.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return None;
    }
    // SAFETY: a new descriptor we own.
    Some(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// `getdents64(fd, buf, count)` (`wide`) or `getdents` of a directory
/// whose view differs from what the kernel lists (the worker made,
/// removed or redirected names in it, or it is the worker's copy of a
/// shared directory): the records of [`listing`], from the position of
/// the task's open file description, which is then moved past them. The
/// position is the description's own, so it is shared as bare (across
/// `dup` and `fork`), starts at 0 for every new open (a reused descriptor
/// number included) and goes back with `lseek(fd, 0, SEEK_SET)`
/// (`rewinddir`); each record's `d_off` is the position after it
/// (`telldir`/`seekdir` work with it). `EINVAL` when not one record fits,
/// `EFAULT` for a buffer the task cannot have written. Anything else
/// (nothing of the worker's, not a directory, an `O_PATH` descriptor) is
/// the kernel's.
#[allow(clippy::too_many_arguments)]
pub fn getdents(
    sup: &mut Supervision,
    c: &Caller,
    args: &[u64; 6],
    wide: bool,
    lfd: RawFd,
    id: u64,
) -> Handled {
    let continue_ = || Handled::quiet(Answer::Continue);
    let Some(w) = c.worker else {
        return continue_();
    };
    let (fd, buf, count) = (args[0] as i32, args[1], args[2] as u32 as usize);
    let tid = c.task.tid;
    let Ok(open) = std::fs::read_link(format!("/proc/{tid}/fd/{fd}")) else {
        return continue_();
    };
    let open = open.as_os_str().as_bytes().to_vec();
    if open.first() != Some(&b'/') {
        return continue_();
    }
    // The job path the descriptor's directory stands for.
    let wd = sup.redirects.worker_dir(w);
    let mut out = vec![0u8; MAX_ABS];
    let dir = mpaudit_core::map::unmap_from_worker(
        &open,
        sup.judge.job_dir.as_bytes(),
        wd.as_os_str().as_bytes(),
        &mut out,
    )
    .map_or_else(|| open.clone(), |n| out[..n].to_vec());
    let entries = match listing(sup, w, &open, &dir) {
        None => return continue_(),
        Some(Err(e)) => return Handled::quiet(Answer::Fail(e)),
        Some(Ok(v)) => v,
    };
    let Some(desc) = their_description(c.task.pid, fd) else {
        return continue_();
    };
    // SAFETY: fcntl and lseek on our copy of the description.
    let (flags, pos) = unsafe {
        (
            libc::fcntl(desc.as_raw_fd(), libc::F_GETFL),
            libc::lseek(desc.as_raw_fd(), 0, libc::SEEK_CUR),
        )
    };
    if flags < 0 || flags & libc::O_PATH != 0 || pos < 0 {
        return continue_();
    }
    let from = usize::try_from(pos)
        .unwrap_or(usize::MAX)
        .min(entries.len());
    let (bytes, next) = records(&entries, from, count, wide);
    if bytes.is_empty() {
        return Handled::quiet(if next < entries.len() {
            Answer::Fail(libc::EINVAL)
        } else {
            Answer::Value(0)
        });
    }
    if !notify::still_valid(lfd, id) {
        return continue_();
    }
    // SAFETY: lseek on our copy of the description.
    if unsafe { libc::lseek(desc.as_raw_fd(), next as libc::off_t, libc::SEEK_SET) } < 0 {
        return continue_();
    }
    if notify::write_mem(tid, buf, &bytes) != bytes.len() {
        // SAFETY: as above: the position as it was.
        unsafe { libc::lseek(desc.as_raw_fd(), pos, libc::SEEK_SET) };
        return Handled::quiet(Answer::Fail(libc::EFAULT));
    }
    Handled::quiet(Answer::Value(bytes.len() as i64))
}
