//! The stopped task's descriptors of a shared file or directory whose
//! worker's copy a call made, moved to the copy, as the library moves its
//! own process's (interpose/src/redirect.rs: `follow_copy_up`,
//! `follow_dir_move`, `orphan_readers`; docs/policy.md, "Descriptors
//! opened before the copy-up"): bare, such a descriptor and a later write
//! through the name reach one file.
//!
//! The descriptors are listed from `/proc/<tid>/fd` (the task's table,
//! which its threads share) and told by device and inode; each is opened
//! again here on the copy, with the access mode, status flags and offset
//! `/proc/<tid>/fdinfo/<n>` gives, and put at the same number with
//! `SECCOMP_IOCTL_NOTIF_ADDFD` and `SECCOMP_ADDFD_FLAG_SETFD` (an atomic
//! replacement, as the library's `dup3`), close-on-exec kept, while the
//! call is still stopped. A directory's are moved for a rename and a
//! removal only, not to the copy a metadata change or an `O_TMPFILE`
//! makes (names relative to them would be resolved in the copy, which
//! lacks the shared entries). As in the library, a regular file's read-only
//! and `O_PATH` descriptors are moved (a write descriptor of a shared file
//! is the worker's copy already), and a directory's of any access mode
//! (read-only with its status flags; its listing starts again). ADDFD
//! installs no `O_PATH` descriptor, so an `O_PATH` one is replaced by the
//! descriptor `emulate::passable` gives (docs/policy.md). A descriptor that cannot be moved (the copy
//! cannot be opened, no /proc, the call went away) keeps the shared file,
//! as in the library: it can only read it (a write open through its
//! `/proc/self/fd/N` is judged as the shared path and redirected), so
//! nothing escapes. The worker's other processes' descriptors are not
//! reached (ADDFD acts on the stopped task only).

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// A shared regular file or directory, by device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    dev: u64,
    ino: u64,
    dir: bool,
}

impl Held {
    /// The regular file or directory at `abs` (a final symlink is not
    /// followed: nothing to move for one).
    pub fn at(abs: &[u8]) -> Option<Held> {
        let m = std::fs::symlink_metadata(OsStr::from_bytes(abs)).ok()?;
        let t = m.file_type();
        (t.is_file() || t.is_dir()).then(|| Held {
            dev: m.dev(),
            ino: m.ino(),
            dir: t.is_dir(),
        })
    }

    pub fn is_dir(&self) -> bool {
        self.dir
    }
}

/// The stopped call (its listener and id) and its task.
#[derive(Clone, Copy)]
pub struct Stopped {
    pub lfd: RawFd,
    pub id: u64,
    pub tid: i32,
}

/// One descriptor of the task: its number, its `fdinfo` flags (status
/// flags, access mode, `O_CLOEXEC` for close-on-exec) and offset.
struct Holder {
    fd: i32,
    flags: i32,
    pos: i64,
}

/// `(flags, pos)` of descriptor `fd` of task `tid`.
fn fdinfo(tid: i32, fd: i32) -> Option<(i32, i64)> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}")).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let flags = i32::from_str_radix(field("flags:")?, 8).ok()?;
    let pos = field("pos:")?.parse().ok()?;
    Some((flags, pos))
}

/// The task's descriptors that hold `held` and are moved for it.
fn holders(tid: i32, held: Held) -> Vec<Holder> {
    let Ok(list) = std::fs::read_dir(format!("/proc/{tid}/fd")) else {
        return Vec::new();
    };
    list.flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            // Through the descriptor's magic link: its open file.
            let m = std::fs::metadata(e.path()).ok()?;
            let kind_matches = if held.dir { m.is_dir() } else { m.is_file() };
            if m.dev() != held.dev || m.ino() != held.ino || !kind_matches {
                return None;
            }
            let (flags, pos) = fdinfo(tid, fd)?;
            // Access mode 3 (neither read nor write): one passable gave.
            let read_only = matches!(
                flags & (libc::O_ACCMODE | libc::O_PATH),
                libc::O_RDONLY | libc::O_PATH | libc::O_ACCMODE
            );
            (held.dir || read_only).then_some(Holder { fd, flags, pos })
        })
        .collect()
}

/// Whether the task holds descriptors of the file or directory at `abs`
/// that [`orphan`] would move.
pub fn holds(tid: i32, abs: &[u8]) -> bool {
    Held::at(abs).is_some_and(|h| !holders(tid, h).is_empty())
}

/// A new open description of `to` for holder `h`: as the library's
/// `move_reader` and `move_dir_holder` open it.
fn reopen(h: &Holder, dir: bool, to: &CString) -> Option<OwnedFd> {
    let path = h.flags & libc::O_PATH != 0 || h.flags & libc::O_ACCMODE == libc::O_ACCMODE;
    let flags = match (dir, path) {
        (_, true) => libc::O_PATH,
        (true, false) => libc::O_RDONLY | libc::O_DIRECTORY,
        // The copy is a regular file this call made.
        (false, false) => libc::O_RDONLY,
    } | libc::O_NOFOLLOW
        | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe { libc::open(to.as_ptr(), flags) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if path {
        // ADDFD installs no O_PATH descriptor: the task's is replaced by
        // one that serves the same uses (emulate::passable).
        return super::emulate::passable(fd).ok();
    }
    // The status flags F_SETFL can set (O_APPEND, O_NONBLOCK, O_NOATIME,
    // O_DIRECT, O_ASYNC); it ignores the others.
    // SAFETY: fcntl on our own descriptor.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, h.flags & !libc::O_CLOEXEC) };
    if !dir && h.pos > 0 {
        // SAFETY: lseek on our own descriptor.
        unsafe { libc::lseek(fd.as_raw_fd(), h.pos, libc::SEEK_SET) };
    }
    Some(fd)
}

/// Puts `src` at number `at` in the stopped task (replacing what is
/// there, atomically), close-on-exec as `cloexec`.
fn install(s: Stopped, src: RawFd, at: i32, cloexec: bool) -> bool {
    let addfd = libc::seccomp_notif_addfd {
        id: s.id,
        flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        srcfd: src as u32,
        newfd: at as u32,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: ADDFD reads the struct it is given; the kernel installs a
    // copy of our descriptor in the stopped task (ENOENT: the call went
    // away).
    unsafe { libc::ioctl(s.lfd, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) >= 0 }
}

/// Moves the stopped task's descriptors of `held` to `to` (the worker's
/// copy, or the shared name again). Returns how many were moved.
pub fn follow(s: Stopped, held: Held, to: &[u8]) -> usize {
    let Ok(to) = CString::new(to) else {
        return 0;
    };
    let mut moved = 0;
    for h in holders(s.tid, held) {
        let Some(fd) = reopen(&h, held.dir, &to) else {
            continue;
        };
        if install(s, fd.as_raw_fd(), h.fd, h.flags & libc::O_CLOEXEC != 0) {
            moved += 1;
        }
    }
    moved
}

/// What [`orphan`] made at the worker's path: a copy of a shared file or
/// an empty directory (`made`: this call made it; a directory already
/// there is used as it is), now holding the task's descriptors.
pub struct Orphaned {
    pub copy: Held,
    pub made: bool,
}

/// When the worker's view is about to stop naming the shared `abs` (a
/// removal it records, a rename of the worker's over it) while the task
/// holds descriptors of it: bare they would then hold a file without a
/// name. They are moved to a copy made at `at` (the worker's path the
/// removal or the rename then takes away: the same content, mode and
/// times; a directory: an empty one with its mode), as the library's
/// `orphan_readers` does. `None`: nothing held, or the copy could not be
/// made (the descriptors then keep the shared file).
pub fn orphan(s: Stopped, abs: &[u8], worker_dir: &[u8], at: &[u8]) -> Option<Orphaned> {
    use std::os::unix::fs::PermissionsExt;
    let held = Held::at(abs)?;
    let reader = holders(s.tid, held).into_iter().next()?;
    let shared = std::fs::symlink_metadata(OsStr::from_bytes(abs)).ok()?;
    let mode = shared.permissions().mode() & 0o7777;
    // Made through its parent held beneath the worker directory
    // (super::beneath), never through a symlink.
    let place = super::beneath::Place::of(worker_dir, at).ok()?;
    let made = if held.dir {
        place.make_dir(mode).ok()?
    } else {
        // The content through the task's own descriptor: the same file,
        // whatever the name holds by now.
        let mut from = std::fs::File::open(format!("/proc/{}/fd/{}", s.tid, reader.fd)).ok()?;
        place.copy_file(&mut from, &shared).ok()?;
        true
    };
    let copy = Held::at(at).filter(|c| c.dir == held.dir)?;
    follow(s, held, at);
    Some(Orphaned { copy, made })
}

/// One of a call's names as the supervisor routed it.
pub struct Side {
    /// The name in the shared tree.
    pub abs: Option<Vec<u8>>,
    /// The worker's path it goes to, when redirected.
    pub target: Option<Vec<u8>>,
    /// The call makes the redirect.
    pub new: bool,
}

/// A redirected call whose task's descriptors may have to follow it.
pub struct Call<'a> {
    pub stopped: Stopped,
    pub op: &'a str,
    pub args: &'a [u64; 6],
    pub sides: Vec<Side>,
    /// The worker's directory (`None`: no worker, nothing redirected).
    pub worker_dir: Option<Vec<u8>>,
}

/// What [`Call::before`] did to the task's descriptors before the call,
/// for [`Call::after`] to finish or undo.
pub enum Before {
    Nothing,
    /// A removal the view answers (the shared name stays, the call does
    /// nothing): the descriptors are moved after it succeeds.
    RemovalInView(Vec<u8>, Vec<u8>),
    /// The descriptors of the shared name were moved to the worker's path
    /// the call then removes or replaces (the name, the worker's path).
    Orphaned(Vec<u8>, Vec<u8>, Orphaned),
}

impl Call<'_> {
    fn renames(&self) -> bool {
        matches!(self.op, "rename" | "renameat" | "renameat2")
    }

    fn exchange(&self) -> bool {
        self.op == "renameat2" && self.args[4] as u32 & libc::RENAME_EXCHANGE != 0
    }

    /// Side `i`'s shared name and worker's path, when the call makes its
    /// redirect.
    fn new_side(&self, i: usize) -> Option<(Vec<u8>, Vec<u8>)> {
        let side = self.sides.get(i).filter(|r| r.new)?;
        Some((side.abs.clone()?, side.target.clone()?))
    }

    /// Before a redirected call that makes the worker's view stop naming
    /// a shared file or directory the task holds: as the library (audit.rs,
    /// `orphan_readers`), the descriptors are moved to a copy at the
    /// worker's path that a rename over it replaces, or to the worker's
    /// directory an rmdir removes. A removal of a shared name the worker
    /// never wrote is noted for after the call (it changes nothing on disk).
    pub fn before(&self) -> Before {
        use super::emulate;
        let s = self.stopped;
        let rmdir = self.op == "rmdir"
            || (self.op == "unlinkat" && self.args[2] as i32 & libc::AT_REMOVEDIR != 0);
        if self.renames() && !self.exchange() {
            let (Some((abs, t)), Some(wd)) = (self.new_side(1), &self.worker_dir) else {
                return Before::Nothing;
            };
            if (emulate::exists(&t) && !emulate::is_dir(&t)) || !holds(s.tid, &abs) {
                return Before::Nothing;
            }
            // The parents the call's own preparation makes (perform).
            if emulate::prepare_target(&abs, &t, wd, false).is_err() {
                return Before::Nothing;
            }
            return match orphan(s, &abs, wd, &t) {
                Some(o) => Before::Orphaned(abs, t, o),
                None => Before::Nothing,
            };
        }
        if !matches!(self.op, "unlink" | "unlinkat" | "rmdir") {
            return Before::Nothing;
        }
        let Some((abs, t)) = self.new_side(0) else {
            return Before::Nothing;
        };
        if !emulate::exists(&t) {
            return match emulate::exists(&abs) {
                true => Before::RemovalInView(abs, t),
                false => Before::Nothing,
            };
        }
        let wd = self.worker_dir.as_deref().unwrap_or_default();
        if rmdir && emulate::is_dir(&t) {
            if let Some(o) = orphan(s, &abs, wd, &t) {
                return Before::Orphaned(abs, t, o);
            }
        }
        Before::Nothing
    }

    /// After the call, while it is still stopped: the task's descriptors
    /// of the shared files whose copies the call made (`copies`: by side)
    /// and of the shared directories a rename moved (`moved_dirs`) follow
    /// them (a rename's copy is at the other name now), a removal the
    /// view answered leaves them on a copy without a name, and what
    /// [`Call::before`] moved is moved back when the call failed.
    pub fn after(
        &self,
        before: Before,
        succeeded: bool,
        copies: &[(usize, Held)],
        moved_dirs: &[(usize, Held)],
    ) {
        let s = self.stopped;
        let wd = self.worker_dir.as_deref().unwrap_or_default();
        let remove = |t: &[u8], dir: bool| {
            if let Ok(place) = super::beneath::Place::of(wd, t) {
                place.remove_entry(dir);
            }
        };
        match before {
            Before::Nothing => {}
            Before::RemovalInView(abs, t) if succeeded => {
                if let Some(o) = orphan(s, &abs, wd, &t) {
                    remove(&t, o.copy.is_dir());
                }
            }
            Before::RemovalInView(..) => {}
            Before::Orphaned(abs, t, o) if !succeeded => {
                follow(s, o.copy, &abs);
                if o.made {
                    remove(&t, o.copy.is_dir());
                }
            }
            Before::Orphaned(..) => {}
        }
        if !succeeded {
            return;
        }
        let (renames, exchange) = (self.renames(), self.exchange());
        // Where side `i`'s copy is after the call.
        let now_at = |i: usize| {
            if renames && !exchange && i == 1 {
                return None;
            }
            let j = if renames { 1 - i.min(1) } else { i };
            let side = self.sides.get(j)?;
            side.target.clone().or_else(|| side.abs.clone())
        };
        for &(i, held) in copies.iter().chain(moved_dirs) {
            if let Some(t) = now_at(i) {
                follow(s, held, &t);
            }
        }
    }
}
