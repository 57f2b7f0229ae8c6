//! Names below a worker directory, reached without following a symlink.
//!
//! The program may write its own worker directory, and a process the
//! supervisor does not stop (or io_uring) may do so at any moment. A check
//! that no directory of a copy is a symlink, followed by a call on the
//! copy's absolute path, is therefore a race: the kernel resolves the path
//! again and follows a symlink swapped in meanwhile into the shared tree
//! (review 4). Every name the supervisor makes, changes or removes below a
//! worker directory is reached through a descriptor of its parent, opened
//! beneath the worker directory with `RESOLVE_NO_SYMLINKS`; the call is
//! then made on that descriptor and the leaf, so nothing resolves the
//! directories again. A symlink in the way fails the call closed.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// How a name below the worker directory is resolved: never through a
/// symlink, a magic link or `..` out of the directory it starts from.
const BENEATH: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// Whether an errno from here means a symlink (or a racing rename) was in
/// the way rather than the answer the call would give: the call is then
/// refused, never made by name.
pub fn is_escape(errno: i32) -> bool {
    matches!(errno, libc::ELOOP | libc::EXDEV | libc::EAGAIN)
}

/// `openat2(dirfd, path, flags | O_CLOEXEC, resolve)`, retrying the
/// `EAGAIN` a concurrent rename gives under `RESOLVE_BENEATH` a few times.
pub fn openat2(
    dirfd: RawFd,
    path: &CString,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> Result<OwnedFd, i32> {
    // struct open_how { u64 flags; u64 mode; u64 resolve; } (libc's is
    // non-exhaustive: built as the kernel's three words).
    let how: [u64; 3] = [
        (flags | libc::O_CLOEXEC) as u32 as u64,
        mode as u64,
        resolve,
    ];
    let mut tries = 0;
    loop {
        // SAFETY: a NUL-terminated path and an open_how of the size given.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                how.as_ptr(),
                std::mem::size_of_val(&how),
            )
        };
        if fd >= 0 {
            // SAFETY: a new descriptor we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let e = super::emulate::errno();
        tries += 1;
        if e != libc::EAGAIN || tries == 8 {
            return Err(e);
        }
    }
}

/// The path through which this thread names the file of its descriptor
/// `fd` (the magic link, followed by the kernel to the open file itself).
pub fn fd_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/thread-self/fd/{fd}")).expect("no NUL in a number")
}

/// Our descriptor (`O_PATH`) of the file the task's descriptor `n`
/// holds, when that file is still the one the call was judged on:
/// `judged`, its link text as read before (a file that lost its name,
/// `… (deleted)`, which only the link reaches). Checked on our own
/// descriptor, so a `dup2` racing in the task cannot change what is used.
pub fn task_descriptor(tid: i32, n: i32, judged: &[u8]) -> Result<OwnedFd, i32> {
    let link = CString::new(format!("/proc/{tid}/fd/{n}")).map_err(|_| libc::EINVAL)?;
    // SAFETY: a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe { libc::open(link.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(super::emulate::errno());
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let now = std::fs::read_link(std::ffi::OsStr::from_bytes(
        fd_path(fd.as_raw_fd()).as_bytes(),
    ))
    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    if now.as_os_str().as_bytes() != judged {
        return Err(libc::EAGAIN);
    }
    Ok(fd)
}

/// `name` in the directory of descriptor `dir`, as a path.
pub fn in_dir(dir: RawFd, name: &[u8]) -> CString {
    let mut p = fd_path(dir).into_bytes();
    p.push(b'/');
    p.extend_from_slice(name);
    CString::new(p).unwrap_or_else(|_| fd_path(dir))
}

/// The worker directory itself, held: its own name is not followed
/// either (a process outside the supervisor's calls could put a symlink to
/// the job directory there; review 6, finding 6).
pub fn open_worker_dir(worker_dir: &[u8]) -> Result<OwnedFd, i32> {
    let cs = |b: &[u8]| CString::new(b).map_err(|_| libc::EINVAL);
    let cut = worker_dir
        .iter()
        .rposition(|&b| b == b'/')
        .ok_or(libc::EXDEV)?;
    let parent = if cut == 0 {
        &b"/"[..]
    } else {
        &worker_dir[..cut]
    };
    let parent = openat2(
        libc::AT_FDCWD,
        &cs(parent)?,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        libc::RESOLVE_NO_MAGICLINKS,
    )?;
    openat2(
        parent.as_raw_fd(),
        &cs(&worker_dir[cut + 1..])?,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        BENEATH,
    )
}

/// A name below a worker directory: a descriptor of its parent (reached
/// without a symlink) and its last component (with the spelling's
/// trailing slashes, which are the kernel's to judge).
pub struct Place {
    dir: OwnedFd,
    leaf: CString,
}

impl Place {
    /// `target` (absolute, below `worker_dir` or the directory itself).
    /// `Err`: the errno of the walk (`ENOENT`, `ENOTDIR`, `EACCES`: what
    /// the call gives bare too), or one [`is_escape`] tells.
    pub fn of(worker_dir: &[u8], target: &[u8]) -> Result<Place, i32> {
        let cs = |b: &[u8]| CString::new(b).map_err(|_| libc::EINVAL);
        let below = target.strip_prefix(worker_dir).ok_or(libc::EXDEV)?;
        if !below.is_empty() && below[0] != b'/' {
            return Err(libc::EXDEV);
        }
        let root = open_worker_dir(worker_dir)?;
        let base_len = below.len() - below.iter().rev().take_while(|&&b| b == b'/').count();
        let base = &below[..base_len];
        if base.is_empty() {
            // The worker directory itself (the job directory's copy).
            return Ok(Place {
                dir: root,
                leaf: cs(b".")?,
            });
        }
        let cut = base.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let parent = &base[..cut];
        let leaf = cs(&below[cut + 1..])?;
        if parent.iter().all(|&b| b == b'/') {
            return Ok(Place { dir: root, leaf });
        }
        let rel = &parent[parent.iter().take_while(|&&b| b == b'/').count()..];
        let dir = match openat2(
            root.as_raw_fd(),
            &cs(rel)?,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            BENEATH,
        ) {
            // A parent beyond PATH_MAX from here: walked a name at a time.
            Err(libc::ENAMETOOLONG) => {
                let mut cur = root;
                for c in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
                    cur = openat2(
                        cur.as_raw_fd(),
                        &cs(c)?,
                        libc::O_PATH | libc::O_DIRECTORY,
                        0,
                        BENEATH,
                    )?;
                }
                cur
            }
            r => r?,
        };
        Ok(Place { dir, leaf })
    }

    /// A place in a directory already held (an entry of a copy being
    /// filled).
    pub fn in_held(dir: &OwnedFd, name: &[u8]) -> Result<Place, i32> {
        let dir = dir
            .try_clone()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EMFILE))?;
        let leaf = CString::new(name).map_err(|_| libc::EINVAL)?;
        Ok(Place { dir, leaf })
    }

    /// The held parent, kept open while a call uses [`Place::dir`].
    pub fn into_dir(self) -> OwnedFd {
        self.dir
    }

    pub fn dir(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    pub fn leaf(&self) -> &CString {
        &self.leaf
    }

    /// The name as one path, for calls without a directory argument.
    pub fn path(&self) -> CString {
        in_dir(self.dir(), self.leaf.as_bytes())
    }

    /// An `O_PATH` descriptor of the leaf itself, a symlink not followed
    /// (a trailing slash through one: `ELOOP`), with `flags` added
    /// (`O_DIRECTORY`).
    pub fn open_leaf(&self, flags: i32) -> Result<OwnedFd, i32> {
        openat2(
            self.dir(),
            &self.leaf,
            libc::O_PATH | libc::O_NOFOLLOW | flags,
            0,
            BENEATH,
        )
    }

    /// The leaf as a held directory, for the names in it.
    pub fn held_dir(&self) -> Result<OwnedFd, i32> {
        self.open_leaf(libc::O_DIRECTORY)
    }

    /// What is at the leaf, not following it.
    pub fn lstat(&self) -> Option<libc::stat> {
        // SAFETY: an all-zero stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: our descriptor, a NUL-terminated name, a live buffer.
        let r = unsafe {
            libc::fstatat(
                self.dir(),
                self.leaf.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        (r == 0).then_some(st)
    }

    /// Runs `make`, which adds the leaf to the held parent where the
    /// worker's view already showed a name (every copy the supervisor
    /// makes: a copy-up, a parent made for one, a directory's copy being
    /// filled, the manifest). Bare, the directory is not written:
    /// - a copy the worker made read-only (`chmod 555 d`, or the shared
    ///   directory's own mode) is given owner write and search for the
    ///   time of `make`, then its mode back (review 8 F2);
    /// - its times stay, so they are put back (review 8 F1; the view
    ///   shows them once the worker set them).
    ///
    /// A change of the program's own to the directory between the two is
    /// lost with them (docs/policy.md, "Not emulated").
    pub fn adding_unseen<R>(&self, make: impl FnOnce() -> R) -> R {
        let before = fstat(self.dir());
        let locked = before.filter(|b| b.st_mode & 0o300 != 0o300);
        if let Some(b) = locked {
            let _ = set_mode(self.dir(), b.st_mode | 0o300);
        }
        let made = make();
        if let Some(b) = locked {
            let _ = set_mode(self.dir(), b.st_mode);
        }
        if let (Some(b), Some(a)) = (before, fstat(self.dir())) {
            if mpaudit_core::times::modified_between(&b, &a) {
                set_times(self.dir(), &mpaudit_core::times::of(&b));
            }
        }
        made
    }

    /// Marks the held parent changed now, as removing an entry does bare:
    /// for a removal the view makes without touching the directory's copy
    /// (a shared name hidden by the table).
    pub fn touch_parent(&self) {
        set_times(self.dir(), &mpaudit_core::times::ENTRY_REMOVED);
    }

    /// Whether the supervisor (with the task's filesystem ids: it acts
    /// only for such tasks) may remove an entry owned by `owner` from the
    /// held parent, as the kernel's may_delete asks: write and search
    /// permission (EACCES), and in a sticky directory the entry's or the
    /// directory's ownership (EPERM). For a removal the view makes without
    /// a call (review 8 F2).
    pub fn may_remove(&self, owner: u32) -> Result<(), i32> {
        may_delete(&fd_path(self.dir()), fstat(self.dir()), owner)
    }

    /// Makes the leaf a directory with exactly `mode` (umask aside).
    /// `Ok(false)`: something is there already, left as it is.
    pub fn make_dir(&self, mode: u32) -> Result<bool, i32> {
        self.adding_unseen(|| {
            // SAFETY: our descriptor and a NUL-terminated name.
            if unsafe { libc::mkdirat(self.dir(), self.leaf.as_ptr(), mode as libc::mode_t) } != 0 {
                return match super::emulate::errno() {
                    libc::EEXIST => Ok(false),
                    e => Err(e),
                };
            }
            let made = self.open_leaf(libc::O_DIRECTORY)?;
            set_mode(made.as_raw_fd(), mode)?;
            Ok(true)
        })
    }

    /// Makes the leaf a node of the FIFO, socket or device `shared` with
    /// its mode and times (a device node needs CAP_MKNOD: mknod's errno).
    pub fn make_node(&self, shared: &std::fs::Metadata) -> Result<(), i32> {
        use std::os::unix::fs::MetadataExt;
        let kind = shared.mode() & libc::S_IFMT;
        if !matches!(
            kind,
            libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK
        ) {
            return Err(libc::EINVAL);
        }
        let times = mpaudit_core::times::pair(
            (shared.atime(), shared.atime_nsec()),
            (shared.mtime(), shared.mtime_nsec()),
        );
        self.adding_unseen(|| {
            // SAFETY: our descriptor and a NUL-terminated name.
            let r = unsafe {
                libc::mknodat(self.dir(), self.leaf.as_ptr(), kind | 0o600, shared.rdev())
            };
            if r != 0 {
                return Err(super::emulate::errno());
            }
            let made = self.open_leaf(0)?;
            set_mode(made.as_raw_fd(), shared.mode())?;
            set_times(made.as_raw_fd(), &times);
            Ok(())
        })
    }

    /// Makes the leaf a symlink with `text`.
    pub fn make_symlink(&self, text: &[u8]) -> Result<(), i32> {
        let text = CString::new(text).map_err(|_| libc::EINVAL)?;
        self.adding_unseen(|| {
            // SAFETY: two NUL-terminated strings and our descriptor.
            if unsafe { libc::symlinkat(text.as_ptr(), self.dir(), self.leaf.as_ptr()) } != 0 {
                return Err(super::emulate::errno());
            }
            Ok(())
        })
    }

    /// Makes the leaf a new regular file with `mode`, holding what `fill`
    /// writes into it; a file left short (disk full, RLIMIT_FSIZE) is
    /// removed, never taken for the copy.
    pub fn make_file(
        &self,
        mode: u32,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<(), i32> {
        self.adding_unseen(|| self.make_file_now(mode, fill))
    }

    fn make_file_now(
        &self,
        mode: u32,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<(), i32> {
        let fd = openat2(
            self.dir(),
            &self.leaf,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
            BENEATH,
        )?;
        let mut f = std::fs::File::from(fd);
        let done = fill(&mut f).and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
        });
        if let Err(e) = done {
            self.remove(false);
            return Err(e.raw_os_error().unwrap_or(libc::EIO));
        }
        Ok(())
    }

    /// Makes the leaf a copy of the regular file `from` (whose metadata is
    /// `shared`): its content, mode and times, as a copy-up or a moved
    /// directory's file keeps them bare (the same inode).
    pub fn copy_file(
        &self,
        from: &mut std::fs::File,
        shared: &std::fs::Metadata,
    ) -> Result<(), i32> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let times = mpaudit_core::times::pair(
            (shared.atime(), shared.atime_nsec()),
            (shared.mtime(), shared.mtime_nsec()),
        );
        self.make_file(shared.permissions().mode(), |to| {
            std::io::copy(from, to)?;
            // SAFETY: our own descriptor and two live timespecs.
            if unsafe { libc::futimens(to.as_raw_fd(), times.as_ptr()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }

    /// The leaf opened for appending, made with `mode` if missing, never
    /// through a symlink.
    pub fn open_append(&self, mode: u32) -> Result<std::fs::File, i32> {
        let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOFOLLOW;
        openat2(self.dir(), &self.leaf, flags, mode, BENEATH).map(std::fs::File::from)
    }

    /// Removes the leaf's entry (an empty directory when `dir`).
    pub fn remove_entry(&self, dir: bool) {
        let flag = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: our descriptor and a NUL-terminated name.
        unsafe { libc::unlinkat(self.dir(), self.leaf.as_ptr(), flag) };
    }

    /// Removes the leaf (a directory with its contents when `dir`), never
    /// following a symlink.
    pub fn remove(&self, dir: bool) {
        if dir {
            let _ = std::fs::remove_dir_all(std::ffi::OsStr::from_bytes(self.path().as_bytes()));
        } else {
            // SAFETY: our descriptor and a NUL-terminated name.
            unsafe { libc::unlinkat(self.dir(), self.leaf.as_ptr(), 0) };
        }
    }
}

/// [`Place::may_remove`] of the directory at the path `dir` (the one the
/// worker's view shows; the shared one where the worker never changed
/// its metadata: its mirror, if any, is the worker's, and the worker
/// directory standing for the job directory has neither the job
/// directory's mode nor owner: review 9, F3). Only asked, never written.
pub fn may_remove_in(dir: &[u8], owner: u32) -> Result<(), i32> {
    let path = CString::new(dir).map_err(|_| libc::EINVAL)?;
    // SAFETY: an all-zero stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path, a live buffer.
    let st = (unsafe { libc::stat(path.as_ptr(), &mut st) } == 0).then_some(st);
    may_delete(&path, st, owner)
}

/// may_create's question of the directory at the path `dir` the worker's
/// view shows, for a rename's new name: write and search permission
/// (EACCES). Only asked.
pub fn may_create_in(dir: &[u8]) -> Result<(), i32> {
    let path = CString::new(dir).map_err(|_| libc::EINVAL)?;
    mpaudit_core::namei::may_create(access(&path, libc::W_OK | libc::X_OK))
}

/// faccessat(path, how, AT_EACCESS)'s errno (0: allowed), with the
/// supervisor's ids (the task's filesystem ids).
fn access(path: &std::ffi::CStr, how: i32) -> i32 {
    // SAFETY: a NUL-terminated path; plain integers.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), how, libc::AT_EACCESS) };
    if r != 0 {
        super::emulate::errno()
    } else {
        0
    }
}

/// may_delete's questions of the directory `path`, whose stat is `st`:
/// write and search permission (EACCES), the sticky bit's ownership rule
/// (EPERM).
fn may_delete(path: &std::ffi::CStr, st: Option<libc::stat>, owner: u32) -> Result<(), i32> {
    let access = access(path, libc::W_OK | libc::X_OK);
    // SAFETY: a plain getter.
    let euid = unsafe { libc::geteuid() };
    let dir = st.map(|st| (st.st_mode, st.st_uid));
    mpaudit_core::namei::may_delete(access, dir, owner, euid)
}

/// The stat of the file of descriptor `fd` (an `O_PATH` one too).
fn fstat(fd: RawFd) -> Option<libc::stat> {
    // SAFETY: an all-zero stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor of ours, a live buffer.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st)
}

/// Sets the times of the file of descriptor `fd` (an `O_PATH` one too:
/// through its descriptor link, no name resolved again).
pub fn set_times(fd: RawFd, times: &[libc::timespec; 2]) {
    let link = fd_path(fd);
    // SAFETY: a NUL-terminated path, two timespecs.
    unsafe { libc::utimensat(libc::AT_FDCWD, link.as_ptr(), times.as_ptr(), 0) };
}

/// `chmod` of the file of descriptor `fd` (an `O_PATH` one too).
pub fn set_mode(fd: RawFd, mode: u32) -> Result<(), i32> {
    let p = fd_path(fd);
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::chmod(p.as_ptr(), (mode & 0o7777) as libc::mode_t) } != 0 {
        return Err(super::emulate::errno());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mpaudit-beneath-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("wd/sub")).unwrap();
        std::fs::create_dir_all(d.join("shared")).unwrap();
        d
    }

    #[test]
    fn a_symlinked_parent_is_an_escape_and_a_real_one_is_held() {
        let d = scratch("parent");
        std::os::unix::fs::symlink(d.join("shared"), d.join("wd/link")).unwrap();
        let wd = d.join("wd");
        let wd = wd.as_os_str().as_bytes();
        let t = |rel: &str| [wd, rel.as_bytes()].concat();
        let e = Place::of(wd, &t("/link/f")).err().unwrap();
        assert!(is_escape(e), "errno {e}");
        let p = Place::of(wd, &t("/sub/f/")).unwrap();
        assert_eq!(p.leaf().as_bytes(), b"f/");
        p.make_file(0o640, |_| Ok(())).err(); // "f/": the kernel's EISDIR
        let p = Place::of(wd, &t("/sub/f")).unwrap();
        p.make_file(0o640, |f| std::io::Write::write_all(f, b"x"))
            .unwrap();
        assert_eq!(std::fs::read(d.join("wd/sub/f")).unwrap(), b"x");
        assert_eq!(Place::of(wd, &t("/none/f")).err(), Some(libc::ENOENT));
        assert_eq!(Place::of(wd, &t("/sub/f/g")).err(), Some(libc::ENOTDIR));
        assert_eq!(Place::of(wd, wd).unwrap().leaf().as_bytes(), b".");
        assert!(Place::of(wd, &[wd, b"x/f"].concat()).is_err());
        // The shared tree was never written.
        assert_eq!(std::fs::read_dir(d.join("shared")).unwrap().count(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlink_leaf_is_opened_as_itself() {
        let d = scratch("leaf");
        std::os::unix::fs::symlink(d.join("shared"), d.join("wd/l")).unwrap();
        let wd = d.join("wd");
        let wd = wd.as_os_str().as_bytes();
        let p = Place::of(wd, &[wd, b"/l"].concat()).unwrap();
        let fd = p.open_leaf(0).unwrap();
        // SAFETY: zeroed stat, our descriptor.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        let p = Place::of(wd, &[wd, b"/l/"].concat()).unwrap();
        assert!(is_escape(p.open_leaf(0).err().unwrap()));
        assert_eq!(p.make_dir(0o755), Ok(false));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
