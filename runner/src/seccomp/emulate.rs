//! Performing a stopped call in the supervisor instead of letting the
//! kernel re-read the program's memory (seccomp_unotify(2) "Design
//! goals"): the path the supervisor read and judged is the path used, the
//! event gets the call's real result and errno, and an open's descriptor
//! is handed over with `SECCOMP_IOCTL_NOTIF_ADDFD`.
//!
//! The supervisor thread has its own filesystem context
//! (`unshare(CLONE_FS)`): before each call it takes the stopped task's
//! cwd (`fchdir` to `/proc/<tid>/cwd`) and umask (`/proc/<tid>/status`),
//! and relative `*at` calls get a descriptor of the task's directory
//! (`/proc/<tid>/fd/<n>`). The runner and the program are the same user;
//! a task whose filesystem ids differ from the runner's is not emulated.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What /proc says of a stopped task.
#[derive(Debug, Clone, Copy, Default)]
pub struct Task {
    pub tid: i32,
    pub pid: i32,
    pub ppid: i32,
    /// Filesystem user and group ids (the ones the kernel checks).
    pub fsuid: u32,
    pub fsgid: u32,
    pub umask: u32,
}

impl Task {
    pub fn of(tid: i32) -> Task {
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
        let num = |name: &str| field(name).and_then(|v| v.trim().parse::<i32>().ok());
        // "Uid:\treal\teffective\tsaved\tfs"
        let fs_id = |name: &str| {
            field(name)
                .and_then(|v| v.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
                .unwrap_or(u32::MAX)
        };
        Task {
            tid,
            pid: num("Tgid:").unwrap_or(tid),
            ppid: num("PPid:").unwrap_or(0),
            fsuid: fs_id("Uid:"),
            fsgid: fs_id("Gid:"),
            umask: field("Umask:")
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
                .unwrap_or(0o022),
        }
    }

    /// The supervisor acts with the runner's credentials: only for a task
    /// with the same filesystem ids.
    pub fn same_credentials(&self) -> bool {
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        self.fsuid == uid && self.fsgid == gid
    }
}

/// Gives the calling thread its own cwd and umask, so that taking a
/// task's never changes the runner's other threads.
pub fn own_fs_context() -> std::io::Result<()> {
    // SAFETY: unshare with a constant flag affects only this thread.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn open_path(path: &str, flags: i32) -> Result<OwnedFd, i32> {
    let c = CString::new(path).map_err(|_| libc::EINVAL)?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The task's filesystem context taken by this thread: its cwd (as the
/// thread's cwd) and umask, and the directory descriptors its `*at`
/// arguments name, kept open for the call.
pub struct Context {
    tid: i32,
    dirs: Vec<(i32, OwnedFd)>,
}

impl Context {
    pub fn enter(task: &Task) -> Result<Context, i32> {
        let cwd = open_path(&format!("/proc/{}/cwd", task.tid), libc::O_DIRECTORY)?;
        // SAFETY: fchdir on our O_PATH descriptor (allowed since 3.5);
        // umask on this thread's own fs context.
        unsafe {
            if libc::fchdir(cwd.as_raw_fd()) != 0 {
                return Err(errno());
            }
            libc::umask(task.umask as libc::mode_t);
        }
        Ok(Context {
            tid: task.tid,
            dirs: Vec::new(),
        })
    }

    /// Our descriptor for the task's directory descriptor `fd`
    /// (`AT_FDCWD` stays: this thread's cwd is the task's).
    pub fn dirfd(&mut self, fd: i32) -> Result<RawFd, i32> {
        if fd == libc::AT_FDCWD {
            return Ok(libc::AT_FDCWD);
        }
        if let Some((_, d)) = self.dirs.iter().find(|(n, _)| *n == fd) {
            return Ok(d.as_raw_fd());
        }
        if fd < 0 {
            return Err(libc::EBADF);
        }
        let d = open_path(&format!("/proc/{}/fd/{fd}", self.tid), 0).map_err(|e| {
            if e == libc::ENOENT {
                libc::EBADF
            } else {
                e
            }
        })?;
        let raw = d.as_raw_fd();
        self.dirs.push((fd, d));
        Ok(raw)
    }
}

/// Runs system call `nr` with `args`: its return value, or its errno.
pub fn syscall(nr: i64, args: &[u64; 6]) -> Result<i64, i32> {
    // SAFETY: the caller built `args` for `nr`: every pointer in them
    // points at memory of this process that outlives the call (C strings,
    // copied structures, result buffers of the right size).
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// An open made here: at once, or waiting for a FIFO's other end (its
/// `O_PATH` probe and the flags to open it with, waiting.rs).
pub enum Opened {
    Now(OwnedFd),
    Waits { probe: OwnedFd, flags: i32 },
}

/// Opens the way `openat2(dirfd, path, how)` would, refusing to follow
/// magic links (`/proc/self/…`, `/dev/stdout`: in the supervisor they
/// would name the runner's own files). `below_worker`: `dirfd` is the held
/// parent of a worker's copy and `path` its leaf (super::beneath): no
/// symlink is followed either, a final one the open would follow fails it
/// closed (the worker's own were followed in the view before). `Err(None)`:
/// not emulated here (a magic link on the way, a special file whose open
/// has side effects or blocks, flags openat2 refuses); the kernel must do
/// it, or, below a worker, the call is refused. The worker's own FIFO,
/// device or socket: see [`open_special`].
pub fn open(
    dirfd: RawFd,
    path: &CString,
    flags: i32,
    mode: u32,
    below_worker: bool,
) -> Result<Opened, Option<i32>> {
    let resolve = if below_worker {
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS
    } else {
        libc::RESOLVE_NO_MAGICLINKS
    };
    let creates = flags & (libc::O_CREAT | libc::O_TMPFILE) != 0;
    // What is there: a FIFO blocks an open for writing, a terminal or
    // device open acts on the opener; those are left to the kernel.
    let probe_nofollow = if below_worker {
        libc::O_NOFOLLOW
    } else {
        flags & libc::O_NOFOLLOW
    };
    let probe = openat2(dirfd, path, libc::O_PATH | probe_nofollow, 0, resolve);
    match probe {
        Ok(fd) => {
            // SAFETY: fstat into a zeroed stat.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: our descriptor, a valid out-pointer.
            if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0 {
                let kind = st.st_mode & libc::S_IFMT;
                // O_NOFOLLOW on a symlink leaf: the kernel's ELOOP.
                let nofollow = flags & (libc::O_NOFOLLOW | libc::O_PATH) == libc::O_NOFOLLOW;
                if kind == libc::S_IFLNK && nofollow {
                    return Err(Some(libc::ELOOP));
                }
                if kind == libc::S_IFLNK && below_worker {
                    let excl = libc::O_CREAT | libc::O_EXCL;
                    if flags & excl == excl {
                        return Err(Some(libc::EEXIST));
                    }
                    if flags & (libc::O_NOFOLLOW | libc::O_PATH) != libc::O_NOFOLLOW | libc::O_PATH
                    {
                        return Err(None); // would follow it: refused
                    }
                }
                let plain = kind == libc::S_IFCHR && is_plain_device(st.st_rdev);
                let special = matches!(
                    kind,
                    libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK | libc::S_IFSOCK
                );
                if below_worker && special && !plain && flags & libc::O_PATH == 0 {
                    return open_special(fd, kind, flags);
                }
                if kind != libc::S_IFREG && kind != libc::S_IFDIR && kind != libc::S_IFLNK && !plain
                {
                    return Err(None);
                }
            }
        }
        Err(libc::ELOOP | libc::EXDEV | libc::EINVAL | libc::EAGAIN) => return Err(None),
        Err(_) => {}
    }
    let mode = if creates { mode & 0o7777 } else { 0 };
    match openat2(dirfd, path, flags | libc::O_CLOEXEC, mode, resolve) {
        // Also a shared file reached through the worker's symlink: its
        // stand-in allows what a read-only open of it would (fchmod is not
        // judged under the supervisor either way: limitations.md).
        Ok(fd) if flags & libc::O_PATH != 0 => passable(fd).map(Opened::Now),
        Ok(fd) => Ok(Opened::Now(fd)),
        // ELOOP may be a magic link on the way; EINVAL flags openat2
        // refuses where open(2) ignores them; EAGAIN a racing rename
        // under RESOLVE_*: all left to the kernel.
        Err(libc::ELOOP | libc::EINVAL | libc::EAGAIN | libc::EXDEV) => Err(None),
        Err(e) => Err(Some(e)),
    }
}

use super::beneath::{fd_path, openat2, Place};

/// An open of the worker's own FIFO, device or socket (`probe`, its
/// `O_PATH` descriptor, found without following anything), made here when
/// it cannot block this thread, which serves every supervised task: a
/// FIFO opened read-write or `O_NONBLOCK`, for writing while a reader is
/// there (opened `O_NONBLOCK`, the flag then cleared), a device (opened
/// `O_NONBLOCK|O_NOCTTY`, the flag then set as asked: no wait for a
/// carrier, and no terminal becomes the supervisor's), a socket (ENXIO).
/// An open that would wait for its FIFO's partner is [`Opened::Waits`].
fn open_special(probe: OwnedFd, kind: u32, flags: i32) -> Result<Opened, Option<i32>> {
    let excl = libc::O_CREAT | libc::O_EXCL;
    if flags & excl == excl {
        return Err(Some(libc::EEXIST));
    }
    if flags & libc::O_DIRECTORY != 0 {
        return Err(Some(libc::ENOTDIR));
    }
    let nonblock = flags & libc::O_NONBLOCK != 0;
    let waits = kind == libc::S_IFIFO && !nonblock && flags & libc::O_ACCMODE != libc::O_RDWR;
    // Through the probe's link: O_NOFOLLOW would refuse the link itself,
    // O_CREAT does nothing on what is there (O_TRUNC still asks for write
    // permission, O_EXCL claims a block device: kept).
    let kept = flags & !(libc::O_NOFOLLOW | libc::O_CREAT);
    if waits && flags & libc::O_ACCMODE == libc::O_RDONLY {
        // Waits for a writer, which cannot be told from here.
        return Ok(Opened::Waits { probe, flags: kept });
    }
    let extra = match kind {
        libc::S_IFCHR | libc::S_IFBLK => libc::O_NONBLOCK | libc::O_NOCTTY,
        _ if waits => libc::O_NONBLOCK,
        _ => 0,
    };
    let link = fd_path(probe.as_raw_fd());
    // SAFETY: a NUL-terminated path; the descriptor is owned below.
    let r = unsafe { libc::open(link.as_ptr(), kept | extra | libc::O_CLOEXEC) };
    if r < 0 {
        return match errno() {
            // No reader yet: it waits for one.
            libc::ENXIO if waits => Ok(Opened::Waits { probe, flags: kept }),
            e => Err(Some(e)),
        };
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(r) };
    if extra & libc::O_NONBLOCK != 0 && !nonblock {
        // SAFETY: fcntl on our own descriptor.
        unsafe {
            let status = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, status & !libc::O_NONBLOCK);
        }
    }
    Ok(Opened::Now(fd))
}

/// A descriptor the task can be given for an `O_PATH` open of `fd`'s
/// file. `SECCOMP_IOCTL_NOTIF_ADDFD` takes no `O_PATH` descriptor (the
/// kernel's `fget` skips them: EBADF), so a regular file or a directory
/// is given opened without side effects, which serves every use of an
/// `O_PATH` descriptor (fstat, a directory for the `*at` calls, fchdir,
/// `/proc/self/fd/N`, fexecve) but `F_GETFL`. A regular file is opened
/// with access mode 3 (neither read nor write: `read` and `write` fail
/// with EBADF as on `O_PATH`), or read-only where its permissions refuse
/// that; a directory read-only. Anything else (a symlink under
/// `O_NOFOLLOW`, a FIFO, a device, a file the caller may not read) is
/// `Err(None)`: refused when routed (docs/policy.md, "Not emulated").
pub fn passable(fd: OwnedFd) -> Result<OwnedFd, Option<i32>> {
    // SAFETY: fstat into a zeroed stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: our descriptor, a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Some(errno()));
    }
    const NO_READ_NOR_WRITE: i32 = libc::O_ACCMODE;
    // O_NONBLOCK: a lease on the file is not broken, nor waited for, by
    // an open the task meant only as a handle (review 8, F3).
    let tries: &[i32] = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => &[
            NO_READ_NOR_WRITE | libc::O_NONBLOCK,
            libc::O_RDONLY | libc::O_NONBLOCK,
        ],
        libc::S_IFDIR => &[libc::O_RDONLY | libc::O_DIRECTORY],
        _ => return Err(None),
    };
    let link = fd_path(fd.as_raw_fd());
    for how in tries {
        // SAFETY: a NUL-terminated path; the descriptor is owned below.
        let r = unsafe { libc::open(link.as_ptr(), how | libc::O_CLOEXEC | libc::O_NOCTTY) };
        if r >= 0 {
            // SAFETY: a new descriptor we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(r) });
        }
    }
    Err(None)
}

/// The absolute path of directory `dir` resolved by the kernel from
/// `start` (symlinks followed, magic links refused): `None` when it does
/// not resolve to a directory here.
pub fn resolved_dir(start: RawFd, dir: &[u8]) -> Option<Vec<u8>> {
    let c = CString::new(dir).ok()?;
    let fd = openat2(
        start,
        &c,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        libc::RESOLVE_NO_MAGICLINKS,
    )
    .ok()?;
    let p = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let b = p.as_os_str().as_bytes();
    (b.first() == Some(&b'/')).then(|| b.to_vec())
}

/// Whether resolving `path` from `dirfd` in the supervisor would pass a
/// magic link (a symlink into `/proc/<pid>/…`, whose target depends on
/// who resolves it): the directory part always, the whole path when the
/// call follows a final symlink. `false` means the call must be left to
/// the kernel.
pub fn resolves_like_the_task(dirfd: RawFd, path: &CString, follows_final: bool) -> bool {
    let bytes = path.as_bytes();
    let no_magic = |p: &CString, flags: i32| {
        !matches!(
            openat2(
                dirfd,
                p,
                libc::O_PATH | flags,
                0,
                libc::RESOLVE_NO_MAGICLINKS
            ),
            Err(libc::ELOOP | libc::EXDEV | libc::EAGAIN | libc::EINVAL)
        )
    };
    if follows_final {
        return no_magic(path, 0);
    }
    match bytes.iter().rposition(|&b| b == b'/') {
        None => true, // the directory is `dirfd` itself
        Some(0) => true,
        Some(i) => CString::new(&bytes[..i]).is_ok_and(|d| no_magic(&d, libc::O_DIRECTORY)),
    }
}

/// A path the supervisor must not resolve itself: `/proc/…` and `/dev/…`
/// name things relative to the opener (`/proc/self`, `/dev/fd/N`,
/// `/dev/tty`), except the memory devices, which are the same for every
/// opener (so a Go program's `/dev/null` is opened here, with no window
/// for another thread to change the path before the kernel reads it).
pub fn is_opener_relative(path: &[u8]) -> bool {
    const SAME_FOR_ALL: [&[u8]; 5] = [
        b"/dev/null",
        b"/dev/zero",
        b"/dev/full",
        b"/dev/random",
        b"/dev/urandom",
    ];
    (path.starts_with(b"/proc/")
        || path.starts_with(b"/dev/")
        || path == b"/proc"
        || path == b"/dev")
        && !SAME_FOR_ALL.contains(&path)
}

/// The memory devices (major 1: null 3, zero 5, full 7, random 8,
/// urandom 9): opening one has no side effect and does not depend on who
/// opens it.
fn is_plain_device(rdev: libc::dev_t) -> bool {
    libc::major(rdev) == 1 && matches!(libc::minor(rdev), 3 | 5 | 7 | 8 | 9)
}

fn lstat(path: &Path) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(path).ok()
}

/// Makes `target` (below `worker_dir`) ready for a redirected call: each
/// missing parent is created only where the shared parent exists (with its
/// mode), so a call the bare run would fail with `ENOENT` fails the same
/// way; no component below the worker directory may be a symlink (it could
/// lead out of it); with `copy`, the original's content is copied in first
/// (a write that keeps content, a rename's source, a metadata change).
pub fn prepare_target(
    original: &[u8],
    target: &[u8],
    worker_dir: &[u8],
    copy: bool,
) -> Result<(), i32> {
    if !target.starts_with(worker_dir) {
        return Err(libc::ENAMETOOLONG);
    }
    let wd = Path::new(std::ffi::OsStr::from_bytes(worker_dir));
    if lstat(wd).is_none() {
        // A worker beyond the configured count (fork mode): its directory
        // is made on its first redirect, 0700 as the library makes it.
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(wd);
    }
    let below = &target[worker_dir.len()..];
    let comps: Vec<&[u8]> = below
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let orig_comps: Vec<&[u8]> = original
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    // Each directory is held as it is reached (super::beneath): a symlink
    // in the way is ELOOP, never followed into the shared tree.
    let mut cur = Place::of(worker_dir, worker_dir)?;
    let Some((leaf, dirs)) = comps.split_last() else {
        // The worker directory itself, the job directory's copy (`chmod
        // .`): there already.
        return Ok(());
    };
    for (i, c) in dirs.iter().enumerate() {
        let here = Place::in_held(&cur.held_dir()?, c)?;
        match here.lstat() {
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => return Err(libc::ELOOP),
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
            Some(_) => return Ok(()), // a file in the way: the call's ENOTDIR
            None => {
                // The shared counterpart: as many components up from the
                // original's end as this one is from the target's.
                let up = comps.len() - 1 - i;
                if orig_comps.len() <= up {
                    return Ok(());
                }
                let mut o = Vec::new();
                for oc in &orig_comps[..orig_comps.len() - up] {
                    o.push(b'/');
                    o.extend_from_slice(oc);
                }
                match std::fs::metadata(std::ffi::OsStr::from_bytes(&o)) {
                    Ok(m) if m.is_dir() => {
                        use std::os::unix::fs::{MetadataExt, PermissionsExt};
                        match here.make_dir(m.permissions().mode()) {
                            // The copy stands for the shared directory in
                            // the view: its times too (review 8 F1).
                            Ok(true) => {
                                let times = mpaudit_core::times::pair(
                                    (m.atime(), m.atime_nsec()),
                                    (m.mtime(), m.mtime_nsec()),
                                );
                                let made = here.held_dir()?;
                                super::beneath::set_times(made.as_raw_fd(), &times);
                            }
                            Ok(false) => {}
                            Err(_) => return Ok(()), // the call's own errno
                        }
                    }
                    _ => return Ok(()), // no shared parent: the call fails as it would bare
                }
            }
        }
        cur = here;
    }
    let place = Place::in_held(&cur.held_dir()?, leaf)?;
    if place
        .lstat()
        .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
    {
        return Err(libc::ELOOP);
    }
    if copy && place.lstat().is_none() {
        let op = Path::new(std::ffi::OsStr::from_bytes(original));
        // A shared symlink (a rename's or link's source): the worker's
        // copy is a symlink with the same text; a shared directory (a
        // metadata change): an empty one with its mode, whose entries the
        // shared one still gives.
        if let Ok(text) = std::fs::read_link(op) {
            return place.make_symlink(text.as_os_str().as_bytes());
        }
        use std::os::unix::fs::PermissionsExt;
        match lstat(op) {
            Some(m) if m.is_dir() => {
                place.make_dir(m.permissions().mode())?;
            }
            // A copy that fails (disk full, RLIMIT_FSIZE) must not leave a
            // short worker's copy that later calls and the merge would
            // take for the file: the call fails instead.
            Some(m) if m.is_file() => {
                let mut from =
                    std::fs::File::open(op).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
                place.copy_file(&mut from, &m)?;
            }
            // A FIFO, socket or device node: the same kind of node.
            Some(m) => place.make_node(&m)?,
            None => {}
        }
    }
    Ok(())
}

/// Whether descriptor `fd` (an `O_PATH` one) is of a symlink.
pub fn is_symlink_fd(fd: RawFd) -> bool {
    // SAFETY: an all-zero stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor of ours and a live buffer.
    unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK }
}

/// Whether call `op` changes a file's metadata (content size, mode,
/// owner, times) rather than a directory's entries.
pub fn changes_metadata(op: &str) -> bool {
    matches!(
        op,
        "truncate"
            | "chmod"
            | "fchmodat"
            | "fchmodat2"
            | "chown"
            | "lchown"
            | "fchownat"
            | "utime"
            | "utimes"
            | "utimensat"
            | "futimesat"
    )
}

/// An empty worker's copy of `original` (a regular file) with its mode, for
/// an open that truncates it without `O_CREAT`: the kernel opens the
/// existing file, so the worker's copy must exist (without it the open
/// would fail with ENOENT), and its content is not needed. Nothing is done
/// when the copy exists or the original is no regular file.
pub fn seed_empty(original: &[u8], worker_dir: &[u8], target: &[u8]) -> Result<(), i32> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = std::fs::metadata(std::ffi::OsStr::from_bytes(original)) else {
        return Ok(());
    };
    if !m.is_file() {
        return Ok(());
    }
    let place = match Place::of(worker_dir, target) {
        Ok(p) => p,
        Err(e) if super::beneath::is_escape(e) => return Err(e),
        Err(_) => return Ok(()), // no parent: the call's own errno
    };
    if place.lstat().is_some() {
        return Ok(());
    }
    place.make_file(m.permissions().mode(), |_| Ok(()))
}

/// Whether the path is a directory (not following a final symlink).
pub fn is_dir(path: &[u8]) -> bool {
    lstat(Path::new(std::ffi::OsStr::from_bytes(path))).is_some_and(|m| m.is_dir())
}

/// Whether the path exists (not following a final symlink).
pub fn exists(path: &[u8]) -> bool {
    lstat(Path::new(std::ffi::OsStr::from_bytes(path))).is_some()
}

/// An empty directory, for `rmdir` of a path the worker never wrote:
/// `Ok` or the errno rmdir would give.
pub fn removable_dir(path: &[u8]) -> Result<(), i32> {
    let p = Path::new(std::ffi::OsStr::from_bytes(path));
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => match std::fs::read_dir(p) {
            Ok(mut d) => match d.next() {
                None => Ok(()),
                Some(_) => Err(libc::ENOTEMPTY),
            },
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::EACCES)),
        },
        Ok(_) => Err(libc::ENOTDIR),
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::ENOENT)),
    }
}

/// A set-user-ID or set-group-ID file of another owner, or one with file
/// capabilities: `PR_SET_NO_NEW_PRIVS` makes exec ignore them, so the
/// program runs without the privileges it runs with bare.
pub fn gains_privileges(path: &[u8], task: &Task) -> bool {
    let p = Path::new(std::ffi::OsStr::from_bytes(path));
    let Ok(m) = std::fs::metadata(p) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    let mode = m.mode();
    if (mode & libc::S_ISUID != 0 && m.uid() != task.fsuid)
        || (mode & libc::S_ISGID != 0 && m.gid() != task.fsgid)
    {
        return true;
    }
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and name; a NULL buffer of size 0
    // asks for the attribute's size only.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n > 0
}
