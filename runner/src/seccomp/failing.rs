//! Under deny: what the kernel would answer a refused call by itself
//! (review 2, F20), as the library does (interpose/src/precheck.rs). A
//! call that fails anyway (`unlink` of a missing file, `mkdir` of an
//! existing directory, `open("data.txt/x")`) writes nothing, so nothing
//! needs refusing: it fails with the kernel's errno, as bare, and its
//! event is a failed call (an attempt). The names are looked up in the
//! task's tree (their directories by the kernel itself, through a
//! descriptor of the task's starting directory), and
//! `mpaudit_core::namei` decides in the kernel's order of checks. `None`
//! whenever that cannot be told here (a magic link, an `openat2`, an empty
//! name, an unreadable directory): the call is then refused with EACCES.

use super::view::{Seen, TaskView};
use mpaudit_core::namei::{self, Facts, Kind, Name, Op};
use mpaudit_core::walk::Unresolved;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// One of the call's names: the directory a relative name starts from
/// (the task's cwd or directory descriptor, as a path), and the name as
/// the program gave it.
pub struct Named<'a> {
    pub base: Option<Vec<u8>>,
    pub given: Option<&'a [u8]>,
    /// The task (thread, process) whose `/proc/self` the name's magic
    /// links are; without one, a name through `/proc` or `/dev` cannot be
    /// told.
    pub task: Option<(i32, i32)>,
}

/// A name looked up: where it is, what it is.
struct Looked {
    abs: Vec<u8>,
    file: Option<(u64, u64)>,
    kind: Kind,
    dir_empty: bool,
    /// What may_delete (may_create for no entry) asks of the directory
    /// holding it, as the view shows it; `Ok` when not asked.
    dir_allows: Result<(), i32>,
}

/// The worker's redirects, for a call answered in the worker's view: the
/// worker's copy of a shared path (a missing copy: the worker removed it),
/// `None` for a path it has not redirected.
pub type View<'v> = &'v mut dyn FnMut(&[u8]) -> Option<Vec<u8>>;

/// The errno the kernel would fail `op` with on these names by itself, or
/// `None` (it would succeed, or that cannot be told). `flags`: the open
/// flags; `follow_first`: the call follows a symlink in the first name's
/// leaf; `at_flags`: unlinkat's, linkat's or renameat2's flags argument,
/// mknod's mode.
/// With `view` (redirect), the names are what the worker's view shows:
/// a leaf the worker redirected is its copy; a name whose directory the
/// worker changed (made, moved, removed) cannot be told.
pub fn failing_anyway(
    op: &str,
    flags: i32,
    at_flags: u64,
    follow_first: bool,
    first: Named,
    second: Option<Named>,
    mut view: Option<View>,
) -> Option<i32> {
    if invalid_at_flags(op, at_flags) {
        return Some(libc::EINVAL);
    }
    let empty = |n: &Named| n.given == Some(b"");
    if an_empty_name_fails(
        op,
        at_flags,
        empty(&first),
        second.as_ref().is_some_and(empty),
    ) {
        return Some(libc::ENOENT);
    }
    // Open flags the kernel refuses (O_TMPFILE without write access, with
    // O_CREAT): EINVAL before the name is looked at.
    if matches!(op, "open" | "openat") && invalid_open_flags(flags) {
        return Some(libc::EINVAL);
    }
    let call = op;
    let op = match op {
        "open" | "openat" | "creat" => Op::Open(flags),
        "truncate" => Op::Truncate,
        "unlink" => Op::Unlink,
        "unlinkat" if at_flags as i32 & libc::AT_REMOVEDIR != 0 => Op::Rmdir,
        "unlinkat" => Op::Unlink,
        "rmdir" => Op::Rmdir,
        "mkdir" | "mkdirat" => Op::Mkdir,
        // The node's type is checked before the name is looked up.
        "mknod" | "mknodat" => match namei::may_mknod(at_flags as u32) {
            Ok(()) => Op::Mknod(at_flags as u32),
            Err(e) => return Some(e),
        },
        "symlink" | "symlinkat" => Op::Symlink,
        "link" | "linkat" => Op::Link,
        "rename" | "renameat" => Op::Rename(0),
        "renameat2" => Op::Rename(at_flags as u32),
        "chmod" | "chown" | "lchown" | "utime" | "utimes" | "futimesat" | "fchmodat"
        | "fchmodat2" | "fchownat" | "utimensat" => {
            // A metadata change needs an existing file.
            let (given, l) = match look_up(&first, follow_first, false, false, false, &mut view) {
                Ok(r) => r,
                Err(e) => return e,
            };
            let n = Name::new(given, l.kind, false);
            return match l.kind {
                Kind::Absent => Some(libc::ENOENT),
                Kind::Symlink if n.trailing_slash => None,
                Kind::Dir => None,
                _ if n.trailing_slash => Some(libc::ENOTDIR),
                _ => None,
            };
        }
        // openat2 (its RESOLVE_* flags), anything else: the call is
        // refused.
        _ => return None,
    };
    let (first, second) = match op {
        // symlink's first path is the link's text; its name is the second.
        Op::Symlink => (second?, None),
        _ => (first, second),
    };
    // An empty source with AT_EMPTY_PATH names a descriptor: the kernel's.
    if op == Op::Link && at_flags as i32 & libc::AT_EMPTY_PATH != 0 && empty(&first) {
        return None;
    }
    let needs_empty = |is_second: bool| match op {
        Op::Rmdir => !is_second,
        Op::Rename(_) => is_second,
        _ => false,
    };
    // linkat's AT_SYMLINK_FOLLOW: the source is what its links lead to.
    let follow = matches!(op, Op::Open(_) | Op::Truncate | Op::Link) && follow_first;
    // The name a call makes or removes is its parent's entry, taken as it
    // is: a trailing slash does not follow a symlink there (`rmdir l/` is
    // ENOTDIR; review 4, finding 5). link's source is looked up whole.
    let taken_as_is = namei::names_an_entry(call, op == Op::Symlink);
    // may_delete's permission and sticky checks of the directories a
    // removal or a rename changes, which the kernel asks before it
    // compares the names' types (review 9 F2).
    let asks_dir = matches!(op, Op::Unlink | Op::Rmdir | Op::Rename(_));
    let (g1, l1) = match look_up(
        &first,
        follow,
        needs_empty(false),
        taken_as_is,
        asks_dir,
        &mut view,
    ) {
        Ok(r) => r,
        Err(e) => return e,
    };
    // link looks its source up whole before the new name: a missing one
    // is ENOENT whatever the new name is.
    if op == Op::Link && l1.kind == Kind::Absent {
        return Some(libc::ENOENT);
    }
    // linkat's AT_SYMLINK_FOLLOW follows a source symlink: the kernel's.
    if op == Op::Link && at_flags as i32 & libc::AT_SYMLINK_FOLLOW != 0 && l1.kind == Kind::Symlink
    {
        return None;
    }
    let mut facts = Facts {
        op,
        first: Name {
            dir_allows: l1.dir_allows,
            ..Name::new(g1, l1.kind, l1.dir_empty)
        },
        second: Name::new(b"", Kind::Absent, false),
        same_file: false,
        second_below_first: false,
        first_below_second: false,
        cross_mount: false,
    };
    if let Some(second) = second {
        let (g2, l2) = match look_up(&second, false, needs_empty(true), true, asks_dir, &mut view) {
            Ok(r) => r,
            Err(e) => return e,
        };
        facts.second = Name {
            dir_allows: l2.dir_allows,
            ..Name::new(g2, l2.kind, l2.dir_empty)
        };
        facts.same_file = l1.file.is_some() && l1.file == l2.file;
        facts.second_below_first = namei::strictly_below(&l2.abs, &l1.abs);
        facts.first_below_second = namei::strictly_below(&l1.abs, &l2.abs);
        // A link followed from a descriptor's link (an O_TMPFILE's) is on
        // its file's mount, which the real call checks.
        let pid = first.task.map_or(0, |(_, pid)| pid);
        let followed_descriptor = op == Op::Link
            && at_flags as i32 & libc::AT_SYMLINK_FOLLOW != 0
            && mpaudit_core::path::own_descriptor(&l1.abs, pid).is_some();
        let across = !followed_descriptor
            && matches!(
                (mount_of_parent(&l1.abs), mount_of_parent(&l2.abs)),
                (Some(a), Some(b)) if a != b
            );
        facts.cross_mount = across && matches!(op, Op::Rename(_));
        if across && op == Op::Link {
            let on_proc = on_proc(&l2.abs);
            return Some(namei::link_across_mounts(namei::answer(&facts), on_proc));
        }
    }
    namei::answer(&facts).err()
}

/// The mount the directory holding `abs` (a name of the shared tree or
/// the task's /proc) is on, as a bare run finds it: the nearest directory
/// at or above that parent the tree has (one only the worker's view has
/// would be made there bare). `None` when the kernel does not say, so
/// that nothing is decided on it. As the library's (precheck.rs).
fn mount_of_parent(abs: &[u8]) -> Option<u64> {
    let mut end = abs.iter().rposition(|&b| b == b'/')?;
    loop {
        let dir = if end == 0 { &b"/"[..] } else { &abs[..end] };
        let c = std::ffi::CString::new(dir).ok()?;
        // SAFETY: all-zero is a valid statx (plain integers).
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a live statx.
        let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MNT_ID, &mut stx) };
        if r == 0 {
            let is_dir = u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFDIR;
            return (stx.stx_mask & libc::STATX_MNT_ID != 0 && is_dir).then_some(stx.stx_mnt_id);
        }
        match super::emulate::errno() {
            libc::ENOENT | libc::ENOTDIR if end > 0 => {
                end = abs[..end].iter().rposition(|&b| b == b'/')?;
            }
            _ => return None,
        }
    }
}

/// Whether the directory holding `abs` is on a proc file system, whose
/// lookup of a name it does not have fails (ENOENT) instead of leaving a
/// name to create.
fn on_proc(abs: &[u8]) -> bool {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    let end = abs.iter().rposition(|&b| b == b'/').unwrap_or(0).max(1);
    let Ok(c) = std::ffi::CString::new(&abs[..end]) else {
        return false;
    };
    // SAFETY: all-zero is a valid statfs (plain integers).
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live statfs.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut sf) };
    #[allow(clippy::unnecessary_cast)] // f_type's width differs by target
    let proc = sf.f_type as i64 == PROC_SUPER_MAGIC;
    r == 0 && proc
}

/// Flags the kernel refuses (EINVAL) before it looks at a name: unlinkat's
/// other than AT_REMOVEDIR, linkat's other than AT_SYMLINK_FOLLOW and
/// AT_EMPTY_PATH, renameat2's unknown ones and RENAME_EXCHANGE with
/// another (review 7, finding 3).
pub fn invalid_at_flags(op: &str, at_flags: u64) -> bool {
    let f = at_flags as u32;
    let (exchange, noreplace, whiteout) = (
        libc::RENAME_EXCHANGE,
        libc::RENAME_NOREPLACE,
        libc::RENAME_WHITEOUT,
    );
    match op {
        "unlinkat" => f & !(libc::AT_REMOVEDIR as u32) != 0,
        "linkat" => f & !((libc::AT_SYMLINK_FOLLOW | libc::AT_EMPTY_PATH) as u32) != 0,
        "renameat2" => {
            f & !(exchange | noreplace | whiteout) != 0
                || (f & exchange != 0 && f & (noreplace | whiteout) != 0)
        }
        _ => false,
    }
}

/// An empty name is ENOENT before anything else, but for the calls whose
/// AT_EMPTY_PATH form names a descriptor (their flags are not all known
/// here): whether the call's names (`first_empty`, `second_empty`) fail so.
pub fn an_empty_name_fails(op: &str, at_flags: u64, first_empty: bool, second_empty: bool) -> bool {
    let may_name_a_descriptor = matches!(
        op,
        "fchmodat" | "fchmodat2" | "fchownat" | "utimensat" | "futimesat" | "openat2"
    ) || (op == "linkat" && at_flags as i32 & libc::AT_EMPTY_PATH != 0);
    (first_empty && !may_name_a_descriptor) || second_empty
}

/// `name` looked up in the worker's view (the shared tree without one),
/// by the library's walk: its directories (`Err(Some(errno))` when that
/// fails), then its leaf (followed when `follow`). `Err(None)`: it cannot
/// be told here. `taken_as_is`: a trailing slash does not follow a final
/// symlink (the name a call makes or removes). `asks_dir`: ask what
/// may_delete or may_create asks of the name's directory.
fn look_up<'a>(
    name: &Named<'a>,
    follow: bool,
    want_empty: bool,
    taken_as_is: bool,
    asks_dir: bool,
    view: &mut Option<View>,
) -> Result<(&'a [u8], Looked), Option<i32>> {
    let given = name.given.filter(|g| !g.is_empty()).ok_or(None)?;
    // The task's magic links (/proc/self, /dev/fd/N) are not the
    // supervisor's.
    let magic = |p: &[u8]| {
        p.starts_with(b"/proc") || p.starts_with(b"/dev") || p.windows(6).any(|w| w == b"/proc/")
    };
    let base: &[u8] = if given[0] == b'/' {
        b"/"
    } else {
        name.base.as_deref().ok_or(None)?
    };
    if (magic(given) || magic(base)) && name.task.is_none() {
        return Err(None);
    }
    // A relative name against a descriptor of a file: ENOTDIR.
    if given[0] != b'/' {
        match std::fs::metadata(OsStr::from_bytes(base)) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Some(libc::ENOTDIR)),
            Err(_) => return Err(None),
        }
    }
    let mut shared = |_: &[u8]| None;
    let in_view = view.is_some();
    let mut tv = TaskView {
        task: name.task,
        view: match view.as_mut() {
            Some(v) => &mut **v,
            None => &mut shared,
        },
    };
    let errno = |u| match u {
        Unresolved::Errno(e) => Some(e),
        _ => None,
    };
    let end = given.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    let body = &given[..end];
    let (dir, leaf): (&[u8], &[u8]) = match body.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/", &body[1..]),
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (b".", body),
    };
    // `.`, `..` and `/` name a directory: all of it is looked up as one.
    let (dir, leaf) = if matches!(leaf, b"" | b"." | b"..") {
        (if body.is_empty() { &b"/"[..] } else { body }, &b"."[..])
    } else {
        (dir, leaf)
    };
    // The directory, resolved in the view (its links followed), must be
    // one there.
    let (mut abs, _) = super::view::resolve(&mut tv, dir, Some(base), true).map_err(errno)?;
    match super::view::look(&mut tv, &abs).map_err(|_| None)?.kind {
        Kind::Dir => {}
        Kind::Absent => return Err(Some(libc::ENOENT)),
        _ => return Err(Some(libc::ENOTDIR)),
    }
    if leaf != b"." {
        if abs != b"/" {
            abs.push(b'/');
        }
        abs.extend_from_slice(leaf);
    }
    let Seen {
        mut kind,
        mut file,
        place,
    } = super::view::look(&mut tv, &abs).map_err(|_| None)?;
    if kind == Kind::Symlink && (follow || (!taken_as_is && body.len() < given.len())) {
        if !follow {
            return Err(None); // a trailing slash follows it too
        }
        // Where the link leads is not `abs`: only renames (which do not
        // follow) need it.
        let (to, _) = super::view::resolve(&mut tv, &abs, None, true).map_err(errno)?;
        let seen = super::view::look(&mut tv, &to).map_err(|_| None)?;
        (kind, file) = (seen.kind, seen.file);
    }
    let dir_empty = match (kind == Kind::Dir && want_empty, in_view) {
        (false, _) => false,
        // A directory's entries as the worker sees them.
        (true, true) => {
            let copy = (place != abs).then_some(&place[..]);
            empty_in_view(&abs, copy, &mut tv.view).ok_or(None)?
        }
        (true, false) => std::fs::read_dir(OsStr::from_bytes(&abs))
            .map_err(|_| None)?
            .next()
            .is_none(),
    };
    let dir_allows = match asks_dir {
        true => dir_allows(&mut tv, &abs, &place, kind),
        false => Ok(()),
    };
    Ok((
        given,
        Looked {
            abs,
            file,
            kind,
            dir_empty,
            dir_allows,
        },
    ))
}

/// What the kernel asks of the directory holding `abs` (in the worker's
/// view, at `place`), as the view shows it: its copy once the worker
/// changed its metadata (the table has it, or it stands over a shared
/// non-directory), else the shared one, only asked (as the library's
/// `view::place`). For an entry there (`kind`), may_delete's write and
/// search permission and sticky rule; for none, may_create's permission.
/// `Ok` when it cannot be asked: the real call answers.
fn dir_allows(tv: &mut TaskView, abs: &[u8], place: &[u8], kind: Kind) -> Result<(), i32> {
    let Some(at) = abs.iter().rposition(|&b| b == b'/') else {
        return Ok(());
    };
    let dir = &abs[..at.max(1)];
    let shared_is_dir =
        || std::fs::symlink_metadata(OsStr::from_bytes(dir)).is_ok_and(|m| m.is_dir());
    let shown = match (tv.place(dir), (tv.view)(dir)) {
        ((copy, true), Some(_)) => copy,
        ((copy, true), None) if !shared_is_dir() => copy,
        _ => dir.to_vec(),
    };
    if kind == Kind::Absent {
        return super::beneath::may_create_in(&shown);
    }
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(OsStr::from_bytes(place)) {
        Ok(m) => super::beneath::may_remove_in(&shown, m.uid()),
        Err(_) => Ok(()),
    }
}

/// Whether the kernel refuses these open flags whatever the name (it
/// checks them first): asked of the kernel with an empty name, which fails
/// with ENOENT unless the flags fail first with EINVAL.
pub(super) fn invalid_open_flags(flags: i32) -> bool {
    // SAFETY: a NUL-terminated empty name; a descriptor returned is closed.
    let fd = unsafe { libc::openat(libc::AT_FDCWD, c"".as_ptr(), flags, 0) };
    if fd >= 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        return false;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
}

/// A directory `shared` of a path, which the worker redirected to `copy`:
/// removed (ENOENT), a file (ENOTDIR), or the worker's own directory or
/// symlink (the view's walk: `Err(None)`); a directory copy of a shared
/// directory merges with it (`Ok`: the shared walk stands).
pub fn in_view(copy: &[u8], shared: &[u8]) -> Result<(), Option<i32>> {
    let is_dir = |p: &[u8]| std::fs::symlink_metadata(OsStr::from_bytes(p)).map(|m| m.is_dir());
    match std::fs::symlink_metadata(OsStr::from_bytes(copy)) {
        Err(_) => Err(Some(libc::ENOENT)),
        Ok(m) if !m.is_dir() && !m.is_symlink() => Err(Some(libc::ENOTDIR)),
        Ok(m) if m.is_dir() && is_dir(shared).unwrap_or(false) => Ok(()),
        Ok(_) => Err(None),
    }
}

/// The directories of `dir` (relative to `base`) as spelled, in order,
/// in the worker's view: one the worker removed is `Err(Some(ENOENT))`
/// (the shared tree still has it: the kernel, walking the shared tree,
/// would go on, `d/..` included), one the worker made or moved there
/// `Err(None)` (the view's own walk). Stops at a shared symlink, which the
/// kernel's walk below follows.
pub fn spelled_dirs_in_view(base: &[u8], dir: &[u8], view: &mut View) -> Result<(), Option<i32>> {
    let mut p: Vec<u8> = if dir.first() == Some(&b'/') {
        Vec::new()
    } else {
        base.to_vec()
    };
    for comp in dir.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => {
                let cut = p.iter().rposition(|&b| b == b'/').unwrap_or(0);
                p.truncate(cut);
                continue;
            }
            _ => {}
        }
        p.push(b'/');
        p.extend_from_slice(comp);
        if let Some(copy) = view(&p) {
            in_view(&copy, &p)?;
        }
        if std::fs::symlink_metadata(OsStr::from_bytes(&p)).is_ok_and(|m| m.is_symlink()) {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether the directory `abs` has no entry in the worker's view: its
/// worker's `copy` (when it has one) and the shared directory, less the
/// shared entries the worker removed. `None`: a directory that cannot be
/// read.
fn empty_in_view(abs: &[u8], copy: Option<&[u8]>, view: &mut View) -> Option<bool> {
    if let Some(copy) = copy {
        if std::fs::read_dir(OsStr::from_bytes(copy))
            .ok()?
            .next()
            .is_some()
        {
            return Some(false);
        }
    }
    // A copy standing where the shared tree has a symlink (an exchange)
    // merges with nothing: the link's target is not below it.
    let shared_dir = std::fs::symlink_metadata(OsStr::from_bytes(abs)).is_ok_and(|m| m.is_dir());
    let shared = match std::fs::read_dir(OsStr::from_bytes(abs)) {
        Ok(d) if shared_dir || copy.is_none() => d,
        _ if copy.is_some() => return Some(true),
        _ => return None,
    };
    for entry in shared {
        let mut child = abs.to_vec();
        child.push(b'/');
        child.extend_from_slice(entry.ok()?.file_name().as_bytes());
        let removed =
            view(&child).is_some_and(|t| std::fs::symlink_metadata(OsStr::from_bytes(&t)).is_err());
        if !removed {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named<'a>(base: &std::path::Path, given: &'a [u8]) -> Named<'a> {
        Named {
            base: Some(base.as_os_str().as_bytes().to_vec()),
            given: Some(given),
            task: None,
        }
    }

    /// The kernel's errno for calls that fail by themselves; `None` for
    /// those that would succeed (deny refuses them) or cannot be told.
    #[test]
    fn calls_that_fail_anyway_get_the_kernels_errno() {
        let d = std::env::temp_dir().join(format!("mpaudit-failing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("full")).unwrap();
        std::fs::write(d.join("full/x"), "").unwrap();
        std::fs::write(d.join("data.txt"), "a\n").unwrap();
        std::fs::create_dir_all(d.join("empty")).unwrap();
        let creat = libc::O_WRONLY | libc::O_CREAT;
        let one = |op: &str, flags: i32, at: u64, p: &[u8]| {
            failing_anyway(op, flags, at, true, named(&d, p), None, None)
        };
        let two = |op: &str, a: &[u8], b: &[u8]| {
            failing_anyway(op, -1, 0, false, named(&d, a), Some(named(&d, b)), None)
        };
        assert_eq!(one("unlink", -1, 0, b"missing"), Some(libc::ENOENT));
        assert_eq!(one("unlink", -1, 0, b"full"), Some(libc::EISDIR));
        assert_eq!(one("unlink", -1, 0, b"data.txt"), None);
        assert_eq!(
            one("unlinkat", -1, libc::AT_REMOVEDIR as u64, b"full"),
            Some(libc::ENOTEMPTY)
        );
        assert_eq!(one("rmdir", -1, 0, b"empty"), None);
        assert_eq!(one("mkdir", -1, 0, b"full"), Some(libc::EEXIST));
        assert_eq!(one("mkdir", -1, 0, b"new"), None);
        assert_eq!(one("openat", creat, 0, b"nodir/f"), Some(libc::ENOENT));
        assert_eq!(one("openat", creat, 0, b"data.txt/x"), Some(libc::ENOTDIR));
        assert_eq!(
            one("openat", creat | libc::O_EXCL, 0, b"data.txt"),
            Some(libc::EEXIST)
        );
        assert_eq!(
            one("openat", libc::O_WRONLY, 0, b"full"),
            Some(libc::EISDIR)
        );
        assert_eq!(one("openat", creat, 0, b"data.txt"), None);
        assert_eq!(one("chmod", -1, 0, b"missing"), Some(libc::ENOENT));
        assert_eq!(one("chmod", -1, 0, b"data.txt"), None);
        let fifo = u64::from(libc::S_IFIFO | 0o644);
        assert_eq!(one("mknodat", -1, fifo, b"data.txt"), Some(libc::EEXIST));
        assert_eq!(one("mknodat", -1, fifo, b"nodir/f"), Some(libc::ENOENT));
        assert_eq!(one("mknodat", -1, fifo, b"new"), None);
        // The type before the name: a directory node is EPERM even where
        // the name exists.
        let dir = u64::from(libc::S_IFDIR | 0o755);
        assert_eq!(one("mknodat", -1, dir, b"data.txt"), Some(libc::EPERM));
        assert_eq!(two("rename", b"full", b"full/sub"), Some(libc::EINVAL));
        assert_eq!(two("rename", b"missing", b"x"), Some(libc::ENOENT));
        assert_eq!(two("rename", b"data.txt", b"y"), None);
        assert_eq!(two("symlink", b"t", b"data.txt"), Some(libc::EEXIST));
        assert_eq!(two("link", b"missing", b"x2"), Some(libc::ENOENT));
        // A magic link is not looked up in the supervisor's own /proc.
        assert_eq!(one("unlink", -1, 0, b"/proc/self/cwd/missing"), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
