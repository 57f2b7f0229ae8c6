//! A stopped task's path resolved in its worker's view, by the library's
//! own walk (`mpaudit_core::walk`): the shared tree overlaid by the
//! worker's redirects, as the library resolves it in a preloaded process.
//! Symlinks the worker made are followed wherever they are in a path, a
//! directory the worker made or moved is walked through its copy, and a
//! name the worker removed stops the walk, as the kernel would in the
//! worker's place.

use mpaudit_core::namei::Kind;
use mpaudit_core::path::MAX_ABS;
use mpaudit_core::walk::{self, Follow, Lookup, Unresolved};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// The view of one worker, for task `task` (its `/proc/self` is the
/// task's, not the supervisor's), or for no task (a path that passes no
/// magic link).
pub struct TaskView<'a> {
    pub task: Option<(i32, i32)>,
    pub view: &'a mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
}

impl TaskView<'_> {
    /// Where the worker's view has `abs`: its copy ([`own_copy`]), or the
    /// shared path; whether it is the worker's.
    pub fn place(&mut self, abs: &[u8]) -> (Vec<u8>, bool) {
        match own_copy(self.view, abs) {
            Some(p) => (p, true),
            None => (abs.to_vec(), false),
        }
    }
}

/// The worker's copy of `abs` in its view (`lookup`: the worker's
/// redirects): its redirect, or its place below a directory the worker
/// redirected that is a directory of the worker's: below one that stands
/// where the shared tree has no directory (made, moved, exchanged over a
/// shared file or symlink: the shared spelling would go through that),
/// at any height, whatever the copy has (review 4, finding 3: `l/sub/y`
/// after `rename m l EXCHANGE` with `l -> d` is not the shared `d/sub/y`);
/// else below the nearest one, a copy of a shared directory, only what the
/// copy has (made there through a descriptor of the copy; the rest is the
/// shared directory's). `None`: the view has nothing of the worker's for
/// `abs`.
pub fn own_copy(lookup: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>, abs: &[u8]) -> Option<Vec<u8>> {
    if let Some(copy) = lookup(abs) {
        return Some(copy);
    }
    let is_dir =
        |p: &[u8]| std::fs::symlink_metadata(OsStr::from_bytes(p)).is_ok_and(|m| m.is_dir());
    let mut nearest: Option<Vec<u8>> = None;
    let mut end = abs.len();
    while let Some(i) = abs[..end].iter().rposition(|&b| b == b'/') {
        if i == 0 {
            break;
        }
        end = i;
        let Some(mut p) = lookup(&abs[..end]) else {
            continue;
        };
        if !is_dir(&p) {
            // Removed, or a file of the worker's: nothing below it (the
            // walk stops there); higher up only if a nearer one merged.
            nearest.as_ref()?;
            continue;
        }
        let replaced = !is_dir(&abs[..end]);
        p.extend_from_slice(&abs[end..]);
        if replaced {
            return Some(p);
        }
        nearest.get_or_insert(p);
    }
    nearest.filter(|p| std::fs::symlink_metadata(OsStr::from_bytes(p)).is_ok())
}

/// lstat of `p`: `None` when there is nothing (a missing name, or a
/// parent that is no directory).
fn lstat(p: &[u8]) -> Result<Option<std::fs::Metadata>, i32> {
    match std::fs::symlink_metadata(OsStr::from_bytes(p)) {
        Ok(m) => Ok(Some(m)),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => Ok(None),
            e => Err(e.unwrap_or(libc::EIO)),
        },
    }
}

impl Lookup for TaskView<'_> {
    /// may_lookup's search permission of a directory the worker's table
    /// has (its copy, whose mode the worker changed, stands for the shared
    /// one a call is given), asked with the supervisor's ids (the task's
    /// filesystem ids); a shared directory is the kernel's to refuse.
    fn search(&mut self, abs: &[u8]) -> Result<(), i32> {
        let Some(copy) = (self.view)(abs) else {
            return Ok(());
        };
        let Ok(c) = std::ffi::CString::new(copy) else {
            return Ok(());
        };
        // SAFETY: a NUL-terminated path; plain integers.
        let r =
            unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
        match r != 0 && super::emulate::errno() == libc::EACCES {
            true => Err(libc::EACCES),
            false => Ok(()),
        }
    }

    fn lstat(&mut self, abs: &[u8]) -> Result<(Kind, bool), i32> {
        let (place, own) = self.place(abs);
        let kind = lstat(&place)?.map_or(Kind::Absent, |m| Kind::of_mode(m.mode()));
        Ok((kind, own))
    }

    fn readlink(&mut self, abs: &[u8], link: &mut [u8]) -> Result<usize, i32> {
        // The task's own /proc/self and /proc/thread-self.
        let own_text = match self.task {
            Some((_, pid)) if abs == b"/proc/self" => Some(pid.to_string()),
            Some((tid, pid)) if abs == b"/proc/thread-self" => Some(format!("{pid}/task/{tid}")),
            _ => None,
        };
        let text = match own_text {
            Some(t) => t.into_bytes(),
            None => {
                let (place, _) = self.place(abs);
                std::fs::read_link(OsStr::from_bytes(&place))
                    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?
                    .into_os_string()
                    .into_encoded_bytes()
            }
        };
        let n = text.len().min(link.len());
        link[..n].copy_from_slice(&text[..n]);
        Ok(text.len())
    }

    fn follow(
        &mut self,
        abs: &[u8],
        link: &mut [u8],
        len: usize,
        last: bool,
        slash_follows: bool,
    ) -> Follow {
        // A descriptor's link to no path (`pipe:[42]`), or to a file that
        // lost its name (`/job/a (deleted)`), which only the kernel
        // reaches through the link.
        let text = &link[..len];
        // A descriptor's link leads to its open file, not by its text
        // (as the library's view.rs `nameless`): a name below the link of
        // a file is ENOTDIR whatever the text says, and below that of a
        // file that lost its name, ENOTDIR (a file) or ENOENT (a removed
        // directory has no entries).
        let mut named = true;
        if let Some((tid, pid)) = self.task {
            if let Some(n) = mpaudit_core::path::own_descriptor(abs, pid) {
                if let Ok(m) = std::fs::metadata(format!("/proc/{tid}/fd/{n}")) {
                    let dir = m.is_dir();
                    if !dir && (!last || slash_follows) && text.first() == Some(&b'/') {
                        return Follow::Fail(libc::ENOTDIR);
                    }
                    named = !text.ends_with(b" (deleted)") || really_named(text, &m);
                    if !last && !named {
                        return Follow::Fail(libc::ENOENT);
                    }
                }
            }
        }
        if walk::leads_to_no_path(abs, text)
            || (abs.starts_with(b"/proc/") && text.ends_with(b" (deleted)") && !named)
        {
            return Follow::NotAPath;
        }
        Follow::Text { len, moved: false }
    }
}

/// Whether a descriptor's link text that ends in ` (deleted)` (a removed
/// file's name, with the kernel's suffix) is a name the descriptor's file
/// `held` really has: a file may be called so (review 7: a shared
/// `#<inode> (deleted)` taken for a lost O_TMPFILE was written).
pub fn really_named(text: &[u8], held: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(OsStr::from_bytes(text))
        .is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino())
}

/// `given`, relative to `base` (the task's cwd or directory descriptor, a
/// canonical path) when relative, resolved in the view: the path, and
/// whether the walk went through something only the view has (the
/// kernel, given the spelling, would reach another file). The leaf is
/// followed when `follow` (or a slash follows it).
pub fn resolve(
    view: &mut TaskView,
    given: &[u8],
    base: Option<&[u8]>,
    follow: bool,
) -> Result<(Vec<u8>, bool), Unresolved> {
    let mut out = vec![0u8; MAX_ABS];
    let mut scratch = vec![0u8; walk::SCRATCH];
    let (n, via_view) = walk::resolve(view, given, base, follow, &mut out, &mut scratch)?;
    out.truncate(n);
    Ok((out, via_view))
}

/// What a name resolved in the view is there.
pub struct Seen {
    pub kind: Kind,
    /// Its file's (device, inode).
    pub file: Option<(u64, u64)>,
    /// Where it is: the worker's copy, or the shared path.
    pub place: Vec<u8>,
}

/// What `abs` (resolved in the view) is there.
pub fn look(view: &mut TaskView, abs: &[u8]) -> Result<Seen, i32> {
    let (place, _) = view.place(abs);
    let m = lstat(&place)?;
    Ok(Seen {
        kind: m.as_ref().map_or(Kind::Absent, |m| Kind::of_mode(m.mode())),
        file: m.map(|m| (m.dev(), m.ino())),
        place,
    })
}
