//! Reads answered in the worker's view under redirect (read-your-writes,
//! issue 12), beyond opens and stats: `readlink`/`readlinkat` of a name
//! the worker redirected ([`readlink`]), and `getdents64`/`getdents` of a
//! directory the worker changed ([`getdents`]). Each is notified only under
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
    // The task's descriptor link of a worker's copy reads as the job path
    // it stands for (as the library's readlink, guard::job_path_of).
    if let Some(text) = descriptor_link_in_view(sup, w, c, args, path, &given) {
        let k = text.len().min(bufsiz as usize);
        if !notify::still_valid(lfd, id) {
            return continue_();
        }
        return Handled::quiet(match notify::write_mem(tid, args[buf], &text[..k]) == k {
            true => Answer::Value(k as i64),
            false => Answer::Fail(libc::EFAULT),
        });
    }
    // The name walked in the worker's view (through its symlinks and
    // directories, the task's /proc/self/cwd): a name the view cannot
    // reach fails there; a name ending in the task's /proc or /dev (a
    // descriptor's own link), or an empty one, is the kernel's.
    let walked = match notify::walk_in_view(sup, c, args, path, Some(&given), false) {
        Some(Err(errno)) => return Handled::quiet(Answer::Fail(errno)),
        Some(Ok(found)) => Some(found),
        None => None,
    };
    let (abs, via_view) = match walked {
        Some(found) => found,
        None => {
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
            if let Some(errno) = notify::read_blocked_in_view(sup, w, tid, args, path, &given, &abs)
            {
                return Handled::quiet(Answer::Fail(errno));
            }
            (abs, false)
        }
    };
    // The worker's copy; or, where the walk went elsewhere than the
    // spelling, the name it reached (read here, not by the kernel).
    let copy = match super::view::own_copy(&mut |p: &[u8]| sup.redirects.lookup(w, p), &abs) {
        Some(copy) => copy,
        None if via_view => abs.clone(),
        None => return continue_(),
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

/// One entry of a listing: name, inode number, `d_type`, and the
/// position after it (`d_off`).
struct Entry {
    name: Vec<u8>,
    ino: u64,
    kind: u8,
    off: u64,
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

/// The two record layouts: `getdents64`'s (`wide`) and the old
/// `getdents`'s (`d_type` in the record's last byte).
fn parse(buf: &[u8], wide: bool) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let name_at = if wide { 19 } else { 18 };
    while at + name_at <= buf.len() {
        let word =
            |o: usize| u64::from_ne_bytes(buf[at + o..at + o + 8].try_into().unwrap_or([0; 8]));
        let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
        if reclen < name_at || at + reclen > buf.len() {
            break;
        }
        let rec = &buf[at..at + reclen];
        let kind = if wide { rec[18] } else { rec[reclen - 1] };
        let name = &rec[name_at..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        out.push(Entry {
            name: name.to_vec(),
            ino: word(0),
            kind,
            off: word(8),
        });
        at += reclen;
    }
    out
}

/// `e` as one record of the layout, or `None` when it does not fit in
/// `room` bytes.
fn put(out: &mut Vec<u8>, e: &Entry, room: usize, wide: bool) -> bool {
    let (header, tail) = if wide { (19, 1) } else { (18, 2) };
    let reclen = (header + e.name.len() + tail).next_multiple_of(8);
    if out.len() + reclen > room || reclen > u16::MAX as usize {
        return false;
    }
    let start = out.len();
    out.resize(start + reclen, 0);
    let r = &mut out[start..];
    r[0..8].copy_from_slice(&e.ino.to_ne_bytes());
    r[8..16].copy_from_slice(&e.off.to_ne_bytes());
    r[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
    if wide {
        r[18] = e.kind;
        r[19..19 + e.name.len()].copy_from_slice(&e.name);
    } else {
        r[18..18 + e.name.len()].copy_from_slice(&e.name);
        r[reclen - 1] = e.kind;
    }
    true
}

/// One `getdents` call of the given layout on our descriptor `fd`, into
/// `len` bytes: the records, or the kernel's errno.
fn read_records(fd: RawFd, len: usize, wide: bool) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    #[cfg(target_arch = "x86_64")]
    let nr = if wide {
        libc::SYS_getdents64
    } else {
        libc::SYS_getdents
    };
    #[cfg(not(target_arch = "x86_64"))]
    let nr = libc::SYS_getdents64;
    // SAFETY: our buffer and its length.
    let n = unsafe { libc::syscall(nr, fd, buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        return Err(super::emulate::errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn open_dir(dir: &[u8]) -> Option<OwnedFd> {
    let cs = std::ffi::CString::new(dir).ok()?;
    // SAFETY: a NUL-terminated path; the descriptor returned is ours.
    let fd = unsafe {
        libc::open(
            cs.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    // SAFETY: a new descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The names of the directory `dir` (without `.` and `..`).
fn names_of(dir: &[u8]) -> std::collections::HashSet<Vec<u8>> {
    let mut out = std::collections::HashSet::new();
    let Some(fd) = open_dir(dir) else {
        return out;
    };
    while let Ok(b) = read_records(fd.as_raw_fd(), 32 * 1024, true) {
        if b.is_empty() {
            break;
        }
        out.extend(parse(&b, true).into_iter().map(|e| e.name));
    }
    out
}

/// What a directory is in the worker's view, for a listing: the
/// directory whose kernel records come first (`primary`: the shared one,
/// or the worker's copy when it does not merge with a shared one), the
/// worker's copy of it, and its redirected names.
struct DirView {
    primary: Vec<u8>,
    /// The primary is the shared directory (its names are the job's, the
    /// worker's redirects apply to them).
    merges: bool,
    copy: Option<Vec<u8>>,
    children: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The view of the job directory `dir` the descriptor open on `open`
/// lists, or `None` when the kernel's listing of `open` is the view
/// (nothing of the worker's below it); `Err(ENOENT)` for a shared
/// directory the worker removed while the descriptor was open on it.
fn dir_view(
    sup: &mut Supervision,
    w: u32,
    open: &[u8],
    dir: &[u8],
) -> Option<Result<DirView, i32>> {
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
    let copy = copy.filter(|c| lstat(c).is_some_and(|m| m.is_dir()));
    if on_shared && shared_dir && redirect.is_some() && copy.is_none() {
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
    Some(Ok(DirView {
        primary: if merges { dir.to_vec() } else { open.to_vec() },
        merges,
        copy,
        children,
    }))
}

/// Positions from this one to [`OWN_END`] are the supervisor's, in the
/// worker's own entries (those after the primary directory's):
/// `OWN_BASE + k` before the `k`-th. Past every offset tmpfs, ext4 (its
/// 64-bit hash cookies but for one in 2^31) and most file systems give,
/// and below ext4's end of directory (`i64::MAX`).
const OWN_BASE: u64 = (i64::MAX as u64) - (1 << 32);
const OWN_END: u64 = OWN_BASE + (1 << 31);

fn in_own_range(pos: u64) -> bool {
    (OWN_BASE..OWN_END).contains(&pos)
}

/// The kernel's records of the primary directory from the position, as
/// the view shows them: the shared names the worker redirected with
/// their copy's `d_ino` and `d_type`, those it removed left out; the
/// worker's copy's names as the job names they stand for.
fn view_records(sup: &Supervision, w: u32, v: &DirView, raw: &[u8], wide: bool) -> Vec<Entry> {
    let own: std::collections::HashMap<&[u8], &[u8]> = v
        .children
        .iter()
        .map(|(n, t)| (n.as_slice(), t.as_slice()))
        .collect();
    let mut out = Vec::new();
    for mut e in parse(raw, wide) {
        if e.name == b"." || e.name == b".." {
            out.push(e);
            continue;
        }
        if !v.merges {
            match view_name(sup, w, &v.primary, &e.name) {
                Some(n) => e.name = n,
                None => continue,
            }
        }
        if let Some(t) = own.get(e.name.as_slice()) {
            if !v.merges && v.primary.len() < t.len() && t.starts_with(&v.primary) {
                // The copy's own entry (the name is its redirect's).
            } else {
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
    out
}

/// The worker's own entries after the primary directory's: its copy's
/// names (when the primary is the shared directory), then its redirects
/// below the directory, that the primary does not have.
fn own_entries(sup: &Supervision, w: u32, v: &DirView) -> Vec<Entry> {
    let mut seen = names_of(&v.primary);
    if !v.merges {
        // The primary's names are the copy's spelling: as the job's.
        seen = seen
            .into_iter()
            .filter_map(|n| view_name(sup, w, &v.primary, &n))
            .collect();
    }
    let mut out = Vec::new();
    if let (true, Some(c)) = (v.merges, &v.copy) {
        let Some(fd) = open_dir(c) else {
            return out;
        };
        while let Ok(b) = read_records(fd.as_raw_fd(), 32 * 1024, true) {
            if b.is_empty() {
                break;
            }
            for mut e in parse(&b, true) {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
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
    for (name, target) in &v.children {
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
                off: 0,
            });
        }
    }
    for (k, e) in out.iter_mut().enumerate() {
        e.off = OWN_BASE + k as u64 + 1;
    }
    out
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

fn seek(fd: RawFd, pos: u64) -> bool {
    // SAFETY: lseek on a descriptor of ours.
    unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_SET) >= 0 }
}

fn position(fd: RawFd) -> Option<u64> {
    // SAFETY: lseek on a descriptor of ours.
    let p = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    u64::try_from(p).ok()
}

/// `getdents64(fd, buf, count)` (`wide`) or `getdents` of a directory
/// whose view differs from what the kernel lists (the worker made,
/// removed or redirected names in it, or it is the worker's copy of a
/// shared directory), as the library's view (dirview.rs): the kernel's
/// records of the shared directory (or of the worker's own copy) from the
/// task's position, filtered ([`view_records`]; a call whose records were
/// all left out reads on, so 0 still means the end), then the worker's
/// own entries ([`own_entries`]). The position is the task's open file
/// description's (taken with `pidfd_getfd`): the kernel's offsets while
/// the primary directory is read, `OWN_BASE + k` in the worker's
/// entries; so it is shared across `fork` and `dup` as bare, starts
/// again for each open (a reused descriptor number too) and with
/// `rewinddir`, goes on from where the kernel was when the worker wrote
/// between two reads, and `telldir`/`seekdir` take the records' `d_off`.
/// `EINVAL` when not one record fits, `EFAULT` for a buffer the task
/// cannot have written. Anything else (nothing of the worker's, not a
/// directory, an `O_PATH` descriptor) is the kernel's.
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
    let v = match dir_view(sup, w, &open, &dir) {
        None => return continue_(),
        Some(Err(e)) => return Handled::quiet(Answer::Fail(e)),
        Some(Ok(v)) => v,
    };
    let Some(desc) = their_description(c.task.pid, fd) else {
        return continue_();
    };
    // SAFETY: fcntl on our copy of the description.
    let flags = unsafe { libc::fcntl(desc.as_raw_fd(), libc::F_GETFL) };
    let Some(pos) = position(desc.as_raw_fd()) else {
        return continue_();
    };
    if flags < 0 || flags & libc::O_PATH != 0 {
        return continue_();
    }
    // As many records as fit, as the kernel gives: the primary
    // directory's from the task's position (through a description of our
    // own: the task's may be on the copy), then the worker's own.
    let room = count.min(1 << 20);
    let mut bytes = Vec::new();
    let mut next = pos;
    let mut own_from = None;
    if in_own_range(pos) {
        own_from = Some((pos - OWN_BASE) as usize);
    } else {
        let Some(pfd) = open_dir(&v.primary) else {
            return continue_();
        };
        if pos != 0 && !seek(pfd.as_raw_fd(), pos) {
            return continue_();
        }
        loop {
            let raw = match read_records(pfd.as_raw_fd(), room - bytes.len(), wide) {
                Ok(r) => r,
                // The next record does not fit: the call's end.
                Err(libc::EINVAL) if !bytes.is_empty() => break,
                Err(e) => return Handled::quiet(Answer::Fail(e)),
            };
            if raw.is_empty() {
                own_from = Some(0);
                break;
            }
            for e in view_records(sup, w, &v, &raw, wide) {
                put(&mut bytes, &e, room, wide);
            }
            let Some(p) = position(pfd.as_raw_fd()) else {
                return continue_();
            };
            next = p;
        }
    }
    if let Some(from) = own_from {
        let own = own_entries(sup, w, &v);
        let mut k = from.min(own.len());
        while k < own.len() && put(&mut bytes, &own[k], room, wide) {
            k += 1;
        }
        next = OWN_BASE + k as u64;
        if bytes.is_empty() && k < own.len() {
            return Handled::quiet(Answer::Fail(libc::EINVAL));
        }
    }
    if !notify::still_valid(lfd, id) {
        return continue_();
    }
    if !seek(desc.as_raw_fd(), next) {
        return continue_();
    }
    if !bytes.is_empty() && notify::write_mem(tid, buf, &bytes) != bytes.len() {
        seek(desc.as_raw_fd(), pos);
        return Handled::quiet(Answer::Fail(libc::EFAULT));
    }
    Handled::quiet(Answer::Value(bytes.len() as i64))
}

/// A directory's link count in the view: `nlink`, the count of the
/// directory whose entries the view starts from (with `subdirs` of its own
/// subdirectories), moved by the subdirectories the view adds or removes
/// (`view_subdirs` in all). Only where the count follows the rule of ext4
/// and tmpfs (2 + subdirectories); a file system that counts otherwise
/// (btrfs' 1) is left alone.
pub(super) fn view_link_count(nlink: u64, subdirs: u64, view_subdirs: u64) -> u64 {
    if nlink == 2 + subdirs {
        2 + view_subdirs
    } else {
        nlink
    }
}

/// The link count worker `w`'s view gives the directory `dir` (a job path
/// the view resolved to a directory) whose stat reached `reached` (the
/// shared directory, or the worker's copy): counted from the merged
/// listing (as getdents lists it) when the worker changed something below
/// it, `Some(0)` for a shared directory the worker removed (a descriptor
/// still open on it), `None` when the kernel's count is the view's.
pub(super) fn view_nlink(sup: &mut Supervision, w: u32, dir: &[u8], reached: &[u8]) -> Option<u64> {
    let v = match dir_view(sup, w, reached, dir)? {
        Ok(v) => v,
        Err(_) => return Some(0),
    };
    let fd = open_dir(&v.primary)?;
    // SAFETY: all-zero is a valid libc::stat (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: our descriptor, a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    let mut raw = Vec::new();
    loop {
        match read_records(fd.as_raw_fd(), 32 * 1024, true) {
            Ok(b) if b.is_empty() => break,
            Ok(b) => raw.extend_from_slice(&b),
            Err(_) => return None,
        }
    }
    let is_dir = |e: &Entry| {
        if e.name == b"." || e.name == b".." {
            return false;
        }
        match e.kind {
            libc::DT_DIR => true,
            libc::DT_UNKNOWN => {
                let mut p = v.primary.clone();
                p.push(b'/');
                p.extend_from_slice(&e.name);
                lstat(&p).is_some_and(|m| m.is_dir())
            }
            _ => false,
        }
    };
    let subdirs = parse(&raw, true).iter().filter(|e| is_dir(e)).count() as u64;
    let mut listed = view_records(sup, w, &v, &raw, true);
    listed.extend(own_entries(sup, w, &v));
    let view_subdirs = listed.iter().filter(|e| is_dir(e)).count() as u64;
    #[allow(clippy::unnecessary_cast)] // nlink_t is u32 on aarch64
    Some(view_link_count(st.st_nlink as u64, subdirs, view_subdirs))
}

/// The text of the task's descriptor link `given` names
/// (`/proc/self/fd/N`), when it is the worker's copy of a job path (a
/// file that lost its name too, ` (deleted)` kept): that job path, as bare.
/// `None`: any other name, left to the kernel.
fn descriptor_link_in_view(
    sup: &Supervision,
    w: u32,
    c: &Caller,
    args: &[u64; 6],
    path: PathArg,
    given: &[u8],
) -> Option<Vec<u8>> {
    let base = match given.first() {
        Some(b'/') => None,
        _ => notify::base_dir(c.task.tid, path.dirfd.map(|d| args[d] as i32)),
    };
    let mut plain = vec![0u8; MAX_ABS];
    let n = absolutize(given, base.as_deref(), &mut plain)?;
    let fd = mpaudit_core::path::own_descriptor(&plain[..n], c.task.pid)?;
    let text = std::fs::read_link(format!("/proc/{}/fd/{fd}", c.task.tid)).ok()?;
    let text = text.as_os_str().as_bytes();
    let (name, suffix) = match text.strip_suffix(b" (deleted)") {
        Some(name) => (name, &b" (deleted)"[..]),
        None => (text, &b""[..]),
    };
    let mut out = notify::job_name_of(sup, w, name)?;
    out.extend_from_slice(suffix);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::view_link_count;

    #[test]
    fn a_view_link_count_counts_the_subdirectories_of_the_view_where_the_file_system_does() {
        // ext4/tmpfs: 2 + subdirectories, whatever the view adds or removes.
        assert_eq!(view_link_count(2, 0, 0), 2);
        assert_eq!(view_link_count(2, 0, 1), 3);
        assert_eq!(view_link_count(3, 1, 0), 2);
        assert_eq!(view_link_count(5, 3, 1), 3);
        // btrfs counts 1 for every directory; other counts are left alone.
        assert_eq!(view_link_count(1, 0, 1), 1);
        assert_eq!(view_link_count(1, 2, 0), 1);
        assert_eq!(view_link_count(7, 1, 2), 7);
    }
}
