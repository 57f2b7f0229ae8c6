//! What the kernel answers a namespace call, decided from what the names
//! involved are: the checks of `fs/namei.c` and `fs/open.c` (`do_rmdir`,
//! `do_unlinkat`, `do_symlinkat`, `do_mkdirat`, `do_linkat`,
//! `do_renameat2`, `path_openat`/`do_open`, `do_sys_truncate`) in the
//! kernel's own order, as pure functions of the looked-up facts.
//!
//! A redirected worker's call does not reach the names the program sees:
//! its worker directory lacks the shared entries to collide with (a shared
//! `d` to make `rmdir d` ENOTEMPTY, a shared file to make `symlink x f`
//! EEXIST). The library looks each name up in the worker's merged view
//! first, asks [`answer`] what the kernel would say there, and fails the
//! call that way before it changes anything. Only the checks the view can
//! change are modelled: permissions (CI and the batch nodes run as root),
//! read-only mounts, cross-device links and mount points are left to the
//! real call. Resolution errors of the parent directories (ENOENT,
//! ENOTDIR, ELOOP) come first in every call and are the view walk's, before
//! this (view.rs).
//!
//! No allocation, no I/O: hooks call this from signal handlers.

use libc::c_int;

/// What a name is in the worker's view (lstat: a symlink is not followed,
/// except where the call itself follows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Absent,
    Dir,
    Regular,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl Kind {
    /// From an `st_mode`.
    pub fn of_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::Regular,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    fn exists(self) -> bool {
        self != Kind::Absent
    }
}

/// The type of a path's last component, as `filename_parentat` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Last {
    Normal,
    /// `.` (`d/.`, `.`, `./`).
    Dot,
    /// `..`.
    DotDot,
    /// No last component at all: `/`, `//`.
    Root,
}

/// One name of a call, as the worker's view shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Name {
    pub kind: Kind,
    /// A directory without any entry (in the view); false otherwise.
    pub empty: bool,
    /// The spelling ends in `/` after its last component.
    pub trailing_slash: bool,
    pub last: Last,
    /// What `may_delete` (or, for a rename's absent new name,
    /// `may_create`) asks of the directory holding the name, as the view
    /// shows it: write and search permission (EACCES), the sticky rule
    /// (EPERM). Asked by the kernel after the name is found and before its
    /// type is compared with the call's (EISDIR, ENOTDIR) or a directory's
    /// emptiness (ENOTEMPTY); `Ok` when allowed or not asked. Only
    /// removals and renames look at it ([`may_delete`], [`may_create`]).
    pub dir_allows: Result<(), c_int>,
}

impl Name {
    /// A name spelled `spelling` whose entry is `kind` (`empty`: a directory
    /// without entries).
    pub fn new(spelling: &[u8], kind: Kind, empty: bool) -> Name {
        let (last, trailing_slash) = last_component(spelling);
        Name {
            kind,
            empty: kind == Kind::Dir && empty,
            trailing_slash,
            last,
            dir_allows: Ok(()),
        }
    }
}

/// Whether a name of the call `op` (a libc or system call's name) is an
/// entry the call makes or removes: its parent is looked up and its last
/// component taken as it is, so a trailing slash does not follow a final
/// symlink there (`rmdir l/` is ENOTDIR, `mkdir l/` EEXIST with `l -> d`).
/// `second`: the call's second name, always one (rename's destination,
/// link's and symlink's new name); a first name is for mkdir, mknod,
/// mkfifo, unlink, rmdir, remove and rename.
pub fn names_an_entry(op: &str, second: bool) -> bool {
    second
        || ["mkdir", "mknod", "mkfifo", "unlink", "rename"]
            .iter()
            .any(|p| op.starts_with(p))
        || matches!(op, "rmdir" | "remove")
}

/// `name` without its trailing slashes, as an entry is walked
/// ([`names_an_entry`]); a name of slashes only is kept.
pub fn without_trailing_slashes(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b != b'/') {
        Some(end) => &name[..=end],
        None => name,
    }
}

/// The type of the last component of `spelling`, and whether a slash
/// follows it.
pub fn last_component(spelling: &[u8]) -> (Last, bool) {
    let end = spelling
        .iter()
        .rposition(|&b| b != b'/')
        .map_or(0, |i| i + 1);
    if end == 0 {
        // "" is ENOENT before anything else; "/" has no last component.
        return (
            if spelling.is_empty() {
                Last::Normal
            } else {
                Last::Root
            },
            false,
        );
    }
    let start = spelling[..end]
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |i| i + 1);
    let last = match &spelling[start..end] {
        b"." => Last::Dot,
        b".." => Last::DotDot,
        _ => Last::Normal,
    };
    (last, end < spelling.len())
}

/// Whether the canonical absolute path `inner` lies strictly below `outer`
/// (component-wise: `/a/bc` is not below `/a/b`).
pub fn strictly_below(inner: &[u8], outer: &[u8]) -> bool {
    let outer = if outer == b"/" { &b""[..] } else { outer };
    inner.len() > outer.len() + 1 && inner.starts_with(outer) && inner[outer.len()] == b'/'
}

/// A namespace call, with the flags that change its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// open(2) flags. The name is the one the open reaches: the leaf's
    /// symlink already followed when the kernel follows it (no
    /// `O_NOFOLLOW`, not `O_CREAT|O_EXCL`).
    Open(c_int),
    /// truncate(2): the name with its symlink followed.
    Truncate,
    Unlink,
    Rmdir,
    Mkdir,
    /// mknod(2) (mkfifo, a socket's bind is not this) of a node of this
    /// `st_mode`: its type is checked before the name is looked up.
    Mknod(u32),
    /// The name is the new link's.
    Symlink,
    /// link(2) from the first name (followed when `AT_SYMLINK_FOLLOW`) to
    /// the second.
    Link,
    /// renameat2(2) flags.
    Rename(u32),
}

/// The facts a decision needs. `second` and the relations are for link
/// and rename only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub op: Op,
    pub first: Name,
    pub second: Name,
    /// Both names are the same file (same inode in the view): a rename then
    /// succeeds and changes nothing.
    pub same_file: bool,
    /// The second name lies strictly below the first (rename into its own
    /// subtree).
    pub second_below_first: bool,
    /// The first name lies strictly below the second.
    pub first_below_second: bool,
    /// The two names' parent directories are on different mounts: a rename
    /// fails with EXDEV as soon as both parents are found. (A link's is
    /// checked after the file system looked its new name up, which /proc
    /// answers its own way: the real call's to say.)
    pub cross_mount: bool,
}

/// What the kernel would do with a call that does not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proceed {
    /// The call does its work.
    Call,
    /// It succeeds without changing anything (a rename onto the same file).
    Nothing,
}

/// The kernel's answer: the errno it fails with, or how it succeeds.
pub fn answer(f: &Facts) -> Result<Proceed, c_int> {
    let call = |r: Result<(), c_int>| r.map(|()| Proceed::Call);
    match f.op {
        Op::Open(flags) => call(open(flags, &f.first)),
        Op::Truncate => call(truncate(&f.first)),
        Op::Unlink => call(unlink(&f.first)),
        Op::Rmdir => call(rmdir(&f.first)),
        Op::Mkdir => call(create(&f.first, true)),
        Op::Mknod(mode) => call(may_mknod(mode).and_then(|()| create(&f.first, false))),
        Op::Symlink => call(create(&f.first, false)),
        Op::Link => call(link(&f.first, &f.second)),
        Op::Rename(flags) => rename(flags, f),
    }
}

/// `path_openat`: `open_last_lookups`, then `do_open` and `may_open`.
fn open(flags: c_int, n: &Name) -> Result<(), c_int> {
    use libc::{EEXIST, EINVAL, EISDIR, ELOOP, ENOENT, ENOTDIR};
    let has = |f: c_int| flags & f == f;
    // O_TMPFILE makes its file in the directory the name is
    // (`do_tmpfile`: a lookup with LOOKUP_DIRECTORY; a symlink left
    // unfollowed by O_NOFOLLOW is no directory either).
    if has(libc::O_TMPFILE) {
        // build_open_flags: write access, and no O_CREAT, first.
        if flags & libc::O_ACCMODE == libc::O_RDONLY || has(libc::O_CREAT) {
            return Err(EINVAL);
        }
        let kind = if n.last == Last::Normal {
            n.kind
        } else {
            Kind::Dir
        };
        return match kind {
            Kind::Absent => Err(ENOENT),
            Kind::Dir => Ok(()),
            _ => Err(ENOTDIR),
        };
    }
    // O_PATH takes another path through the kernel.
    if has(libc::O_PATH) {
        return Ok(());
    }
    let creat = has(libc::O_CREAT);
    let excl = creat && has(libc::O_EXCL);
    // build_open_flags (Linux 6.4 and later).
    if creat && has(libc::O_DIRECTORY) {
        return Err(EINVAL);
    }
    let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || has(libc::O_TRUNC);
    // `.`, `..` and `/` name an existing directory.
    let kind = if n.last == Last::Normal {
        if creat && n.trailing_slash {
            return Err(EISDIR);
        }
        n.kind
    } else {
        Kind::Dir
    };
    if kind == Kind::Absent {
        return if creat { Ok(()) } else { Err(ENOENT) };
    }
    if excl {
        return Err(EEXIST);
    }
    if creat && kind == Kind::Dir {
        return Err(EISDIR);
    }
    if (has(libc::O_DIRECTORY) || n.trailing_slash) && kind != Kind::Dir {
        return Err(ENOTDIR);
    }
    match kind {
        Kind::Symlink => Err(ELOOP),
        Kind::Dir if writes => Err(EISDIR),
        _ => Ok(()),
    }
}

/// `do_sys_truncate` and `vfs_truncate` (the name followed).
fn truncate(n: &Name) -> Result<(), c_int> {
    let kind = if n.last == Last::Normal {
        n.kind
    } else {
        Kind::Dir
    };
    match kind {
        Kind::Absent => Err(libc::ENOENT),
        Kind::Dir => Err(libc::EISDIR),
        _ if n.trailing_slash => Err(libc::ENOTDIR),
        Kind::Regular => Ok(()),
        _ => Err(libc::EINVAL),
    }
}

/// `do_unlinkat` and `may_delete(dir, victim, false)`: a name spelled
/// with a trailing slash is refused by its type before `may_delete`, any
/// other after its permission and sticky checks.
fn unlink(n: &Name) -> Result<(), c_int> {
    if n.last != Last::Normal {
        return Err(libc::EISDIR);
    }
    match n.kind {
        Kind::Absent => Err(libc::ENOENT),
        Kind::Dir if n.trailing_slash => Err(libc::EISDIR),
        _ if n.trailing_slash => Err(libc::ENOTDIR),
        _ if n.dir_allows.is_err() => n.dir_allows,
        Kind::Dir => Err(libc::EISDIR),
        _ => Ok(()),
    }
}

/// `may_delete`'s answer for removing an entry owned by `entry_uid` from a
/// directory: `access` is faccessat(dir, W_OK|X_OK, AT_EACCESS)'s errno
/// (0: allowed; only EACCES and EROFS are the kernel's answer here, any
/// other leaves it to the call's own checks), `dir` its stat, `euid` the
/// caller's. Asked by the library and the supervisor for a removal the
/// view makes without a call (review 8 F2, review 9 F3).
pub fn may_delete(
    access: c_int,
    dir: Option<(u32, u32)>,
    entry_uid: u32,
    euid: u32,
) -> Result<(), c_int> {
    match access {
        libc::EACCES | libc::EROFS => return Err(access),
        _ => {}
    }
    match dir {
        Some((mode, uid)) if access == 0 && !sticky_allows(mode, uid, entry_uid, euid) => {
            Err(libc::EPERM)
        }
        _ => Ok(()),
    }
}

/// `may_create`'s permission answer for a new name in a directory (a
/// rename's absent new name): `access` as [`may_delete`]'s.
pub fn may_create(access: c_int) -> Result<(), c_int> {
    match access {
        libc::EACCES | libc::EROFS => Err(access),
        _ => Ok(()),
    }
}

/// `check_sticky` of `may_delete`: in a sticky directory (mode
/// `dir_mode`, owner `dir_uid`) only the entry's owner, the directory's
/// owner or root (`euid` 0, CAP_FOWNER) may remove an entry owned by
/// `entry_uid`.
fn sticky_allows(dir_mode: u32, dir_uid: u32, entry_uid: u32, euid: u32) -> bool {
    dir_mode & libc::S_ISVTX == 0 || euid == 0 || euid == entry_uid || euid == dir_uid
}

/// `do_rmdir`, `may_delete(dir, victim, true)` (permission and sticky
/// checks, then the type) and the file system's emptiness check.
fn rmdir(n: &Name) -> Result<(), c_int> {
    match n.last {
        Last::DotDot => return Err(libc::ENOTEMPTY),
        Last::Dot => return Err(libc::EINVAL),
        Last::Root => return Err(libc::EBUSY),
        Last::Normal => {}
    }
    match n.kind {
        Kind::Absent => Err(libc::ENOENT),
        _ if n.dir_allows.is_err() => n.dir_allows,
        Kind::Dir if n.empty => Ok(()),
        Kind::Dir => Err(libc::ENOTEMPTY),
        _ => Err(libc::ENOTDIR),
    }
}

/// `filename_create`: the new name must not exist; a trailing slash asks
/// for a directory, which only mkdir makes.
fn create(n: &Name, dir: bool) -> Result<(), c_int> {
    if n.last != Last::Normal || n.kind.exists() {
        return Err(libc::EEXIST);
    }
    if n.trailing_slash && !dir {
        return Err(libc::ENOENT);
    }
    Ok(())
}

/// `do_linkat` when the two names' parents are on different mounts: the
/// old name is looked up, then the new one is made (`filename_create`:
/// EEXIST for a name there, and a proc file system's own ENOENT for a name
/// it does not have), and only then is the link refused with EXDEV.
/// `answer`: [`answer`] of the link's facts; `new_on_proc`: the new
/// name's directory is on a proc file system.
pub fn link_across_mounts(answer: Result<Proceed, c_int>, new_on_proc: bool) -> c_int {
    match answer {
        Err(e) if e != libc::EPERM => e,
        _ if new_on_proc => libc::ENOENT,
        _ => libc::EXDEV,
    }
}

/// `may_mknod`: the node types mknod makes (0 is a regular file); a
/// directory is EPERM, anything else EINVAL. `do_mknodat` checks this
/// before it resolves the name, so it comes before any walk's errno.
pub fn may_mknod(mode: u32) -> Result<(), c_int> {
    match mode & libc::S_IFMT {
        0 | libc::S_IFREG | libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK => {
            Ok(())
        }
        libc::S_IFDIR => Err(libc::EPERM),
        _ => Err(libc::EINVAL),
    }
}

/// `do_linkat`: the old name is looked up first, then the new one is
/// created (`filename_create`), then `vfs_link`.
fn link(old: &Name, new: &Name) -> Result<(), c_int> {
    let old_kind = if old.last == Last::Normal {
        old.kind
    } else {
        Kind::Dir
    };
    match old_kind {
        Kind::Absent => return Err(libc::ENOENT),
        Kind::Dir => {}
        _ if old.trailing_slash => return Err(libc::ENOTDIR),
        _ => {}
    }
    create(new, false)?;
    if old_kind == Kind::Dir {
        return Err(libc::EPERM);
    }
    Ok(())
}

/// `do_renameat2`, then `vfs_rename` (`may_delete` of both sides) and the
/// file system's emptiness check of a replaced directory.
fn rename(flags: u32, f: &Facts) -> Result<Proceed, c_int> {
    use libc::{EBUSY, EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY};
    let (noreplace, exchange, whiteout) = (
        flags & libc::RENAME_NOREPLACE != 0,
        flags & libc::RENAME_EXCHANGE != 0,
        flags & libc::RENAME_WHITEOUT != 0,
    );
    let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT;
    if flags & !known != 0 || ((noreplace || whiteout) && exchange) {
        return Err(EINVAL);
    }
    let (old, new) = (&f.first, &f.second);
    if f.cross_mount {
        return Err(libc::EXDEV);
    }
    if old.last != Last::Normal {
        return Err(EBUSY);
    }
    if new.last != Last::Normal {
        return Err(if noreplace { EEXIST } else { EBUSY });
    }
    if old.kind == Kind::Absent {
        return Err(ENOENT);
    }
    if noreplace && new.kind.exists() {
        return Err(EEXIST);
    }
    if exchange {
        if new.kind == Kind::Absent {
            return Err(ENOENT);
        }
        if new.kind != Kind::Dir && new.trailing_slash {
            return Err(ENOTDIR);
        }
    }
    if old.kind != Kind::Dir && (old.trailing_slash || (!exchange && new.trailing_slash)) {
        return Err(ENOTDIR);
    }
    // lock_rename's trap: the source may not be an ancestor of the target,
    // nor the target of the source.
    if f.second_below_first {
        return Err(EINVAL);
    }
    if f.first_below_second {
        return Err(if exchange { EINVAL } else { ENOTEMPTY });
    }
    if f.same_file {
        return Ok(Proceed::Nothing);
    }
    // vfs_rename: may_delete of the old name, then may_create of an absent
    // new one or may_delete of an existing one (its permission and sticky
    // checks before the types).
    old.dir_allows?;
    new.dir_allows?;
    if new.kind.exists() && !exchange {
        match (old.kind == Kind::Dir, new.kind == Kind::Dir) {
            (true, false) => return Err(ENOTDIR),
            (false, true) => return Err(EISDIR),
            (true, true) if !new.empty => return Err(ENOTEMPTY),
            _ => {}
        }
    }
    Ok(Proceed::Call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::*;

    fn name(kind: Kind) -> Name {
        Name::new(b"x", kind, false)
    }

    fn facts(op: Op, first: Name, second: Name) -> Facts {
        Facts {
            op,
            first,
            second,
            same_file: false,
            second_below_first: false,
            first_below_second: false,
            cross_mount: false,
        }
    }

    fn one(op: Op, n: Name) -> Result<Proceed, c_int> {
        answer(&facts(op, n, name(Kind::Absent)))
    }

    fn two(op: Op, a: Kind, b: Kind) -> Result<Proceed, c_int> {
        answer(&facts(op, name(a), name(b)))
    }

    const OK: Result<Proceed, c_int> = Ok(Proceed::Call);

    #[test]
    fn last_components_are_typed_as_the_kernel_does() {
        assert_eq!(last_component(b"d/a"), (Last::Normal, false));
        assert_eq!(last_component(b"d/a//"), (Last::Normal, true));
        assert_eq!(last_component(b"d/."), (Last::Dot, false));
        assert_eq!(last_component(b"./"), (Last::Dot, true));
        assert_eq!(last_component(b"d/.."), (Last::DotDot, false));
        assert_eq!(last_component(b"//"), (Last::Root, false));
        assert_eq!(last_component(b"..a"), (Last::Normal, false));
        assert!(strictly_below(b"/j/d/a", b"/j/d"));
        assert!(!strictly_below(b"/j/da", b"/j/d"));
        assert!(!strictly_below(b"/j/d", b"/j/d"));
        assert!(strictly_below(b"/j", b"/"));
    }

    #[test]
    fn the_names_a_call_makes_or_removes_are_entries() {
        for op in [
            "mkdir",
            "mkdirat",
            "mknodat",
            "mkfifo",
            "unlink",
            "unlinkat",
            "rmdir",
            "remove",
            "renameat2",
        ] {
            assert!(names_an_entry(op, false), "{op}");
        }
        for op in [
            "open", "openat", "creat", "truncate", "link", "linkat", "symlink", "chmod",
        ] {
            assert!(!names_an_entry(op, false), "{op}");
        }
        assert!(names_an_entry("linkat", true) && names_an_entry("symlink", true));
        assert_eq!(without_trailing_slashes(b"l//"), b"l");
        assert_eq!(without_trailing_slashes(b"d/l/"), b"d/l");
        assert_eq!(without_trailing_slashes(b"l"), b"l");
        assert_eq!(without_trailing_slashes(b"//"), b"//");
    }

    #[test]
    fn rmdir_of_a_file_or_a_full_directory_fails() {
        assert_eq!(one(Op::Rmdir, name(Kind::Regular)), Err(ENOTDIR));
        assert_eq!(one(Op::Rmdir, name(Kind::Symlink)), Err(ENOTDIR));
        assert_eq!(one(Op::Rmdir, name(Kind::Dir)), Err(ENOTEMPTY));
        assert_eq!(one(Op::Rmdir, Name::new(b"d", Kind::Dir, true)), OK);
        assert_eq!(one(Op::Rmdir, name(Kind::Absent)), Err(ENOENT));
        assert_eq!(
            one(Op::Rmdir, Name::new(b"d/..", Kind::Dir, true)),
            Err(ENOTEMPTY)
        );
        assert_eq!(
            one(Op::Rmdir, Name::new(b".", Kind::Dir, true)),
            Err(EINVAL)
        );
    }

    #[test]
    fn creating_over_an_existing_name_fails_with_eexist() {
        for k in [Kind::Dir, Kind::Regular, Kind::Symlink] {
            assert_eq!(one(Op::Symlink, name(k)), Err(EEXIST));
            assert_eq!(one(Op::Mkdir, name(k)), Err(EEXIST));
            assert_eq!(two(Op::Link, Kind::Regular, k), Err(EEXIST));
        }
        assert_eq!(
            one(Op::Symlink, Name::new(b"x/", Kind::Absent, false)),
            Err(ENOENT)
        );
        assert_eq!(one(Op::Mkdir, Name::new(b"x/", Kind::Absent, false)), OK);
    }

    #[test]
    fn may_delete_asks_permission_before_the_sticky_rule() {
        let sticky = Some((libc::S_IFDIR | 0o1777, 1));
        assert_eq!(may_delete(libc::EACCES, sticky, 2, 3), Err(libc::EACCES));
        assert_eq!(may_delete(libc::EROFS, None, 2, 3), Err(libc::EROFS));
        assert_eq!(may_delete(0, sticky, 2, 3), Err(libc::EPERM));
        assert_eq!(may_delete(0, sticky, 3, 3), Ok(()));
        assert_eq!(may_delete(libc::ENOENT, sticky, 2, 3), Ok(()));
        assert_eq!(may_delete(0, None, 2, 3), Ok(()));
    }

    #[test]
    fn may_delete_s_permission_comes_before_the_victim_s_type() {
        let denied = |kind, spelling: &[u8], empty| Name {
            dir_allows: Err(EACCES),
            ..Name::new(spelling, kind, empty)
        };
        // unlink: after the trailing slash's own answer, before EISDIR.
        assert_eq!(one(Op::Unlink, denied(Kind::Dir, b"s", false)), Err(EACCES));
        assert_eq!(
            one(Op::Unlink, denied(Kind::Regular, b"x", false)),
            Err(EACCES)
        );
        assert_eq!(
            one(Op::Unlink, denied(Kind::Regular, b"x/", false)),
            Err(ENOTDIR)
        );
        assert_eq!(
            one(Op::Unlink, denied(Kind::Dir, b"s/", false)),
            Err(EISDIR)
        );
        assert_eq!(
            one(Op::Unlink, denied(Kind::Absent, b"m", false)),
            Err(ENOENT)
        );
        assert_eq!(
            one(Op::Unlink, denied(Kind::Dir, b"s/.", false)),
            Err(EISDIR)
        );
        // rmdir: before ENOTDIR and ENOTEMPTY, after `.`/`..` and ENOENT.
        assert_eq!(
            one(Op::Rmdir, denied(Kind::Regular, b"x", false)),
            Err(EACCES)
        );
        assert_eq!(
            one(Op::Rmdir, denied(Kind::Regular, b"x/", false)),
            Err(EACCES)
        );
        assert_eq!(one(Op::Rmdir, denied(Kind::Dir, b"s", false)), Err(EACCES));
        assert_eq!(one(Op::Rmdir, denied(Kind::Dir, b"s", true)), Err(EACCES));
        assert_eq!(
            one(Op::Rmdir, denied(Kind::Absent, b"m", false)),
            Err(ENOENT)
        );
        assert_eq!(
            one(Op::Rmdir, denied(Kind::Dir, b"s/..", false)),
            Err(ENOTEMPTY)
        );
        assert_eq!(
            one(Op::Rmdir, denied(Kind::Dir, b"s/.", false)),
            Err(EINVAL)
        );
        let mut sticky = name(Kind::Regular);
        sticky.dir_allows = Err(EPERM);
        assert_eq!(one(Op::Unlink, sticky), Err(EPERM));
        // rename: after the trailing slashes, the trap and the same file,
        // before the types and the emptiness of a replaced directory.
        let r = Op::Rename(0);
        let mut f = facts(r, denied(Kind::Dir, b"s", false), name(Kind::Regular));
        assert_eq!(answer(&f), Err(EACCES));
        f.first = name(Kind::Dir);
        f.second = denied(Kind::Dir, b"full", false);
        assert_eq!(answer(&f), Err(EACCES));
        f.second = denied(Kind::Absent, b"y/", false);
        f.first = name(Kind::Regular);
        assert_eq!(answer(&f), Err(ENOTDIR));
        f.first = denied(Kind::Dir, b"s", false);
        f.second = name(Kind::Dir);
        f.same_file = true;
        assert_eq!(answer(&f), Ok(Proceed::Nothing));
        assert_eq!(may_create(EACCES), Err(EACCES));
        assert_eq!(may_create(ENOENT), Ok(()));
        assert_eq!(may_create(0), Ok(()));
    }

    #[test]
    fn a_sticky_directory_lets_only_owners_and_root_remove() {
        let sticky = libc::S_IFDIR | 0o1777;
        assert!(sticky_allows(libc::S_IFDIR | 0o777, 1, 2, 3));
        assert!(!sticky_allows(sticky, 1, 2, 3));
        assert!(sticky_allows(sticky, 1, 2, 2));
        assert!(sticky_allows(sticky, 3, 2, 3));
        assert!(sticky_allows(sticky, 1, 2, 0));
    }

    #[test]
    fn mknod_checks_its_type_before_the_name() {
        let fifo = Op::Mknod(libc::S_IFIFO | 0o644);
        assert_eq!(one(fifo, name(Kind::Regular)), Err(EEXIST));
        assert_eq!(
            one(fifo, Name::new(b"x/", Kind::Absent, false)),
            Err(ENOENT)
        );
        assert_eq!(one(fifo, Name::new(b"d/.", Kind::Dir, false)), Err(EEXIST));
        assert_eq!(one(Op::Mknod(0o644), name(Kind::Absent)), OK);
        let dir = Op::Mknod(libc::S_IFDIR | 0o755);
        assert_eq!(one(dir, name(Kind::Regular)), Err(EPERM));
        assert_eq!(
            one(Op::Mknod(libc::S_IFMT), name(Kind::Regular)),
            Err(EINVAL)
        );
    }

    #[test]
    fn link_checks_the_source_then_the_new_name_then_the_directory() {
        assert_eq!(two(Op::Link, Kind::Dir, Kind::Absent), Err(EPERM));
        assert_eq!(two(Op::Link, Kind::Dir, Kind::Regular), Err(EEXIST));
        assert_eq!(two(Op::Link, Kind::Absent, Kind::Regular), Err(ENOENT));
        assert_eq!(two(Op::Link, Kind::Symlink, Kind::Absent), OK);
    }

    #[test]
    fn file_writes_aimed_at_a_directory_fail_as_in_place() {
        let dir = name(Kind::Dir);
        assert_eq!(
            one(Op::Open(O_RDONLY | O_CREAT | O_TRUNC), dir),
            Err(EISDIR)
        );
        assert_eq!(one(Op::Open(O_WRONLY), dir), Err(EISDIR));
        assert_eq!(one(Op::Open(O_RDONLY | O_TRUNC), dir), Err(EISDIR));
        assert_eq!(one(Op::Open(O_RDONLY | O_CREAT | O_EXCL), dir), Err(EEXIST));
        assert_eq!(one(Op::Open(O_RDONLY), dir), OK);
        assert_eq!(one(Op::Truncate, dir), Err(EISDIR));
        assert_eq!(one(Op::Unlink, dir), Err(EISDIR));
        assert_eq!(
            one(
                Op::Open(O_WRONLY | O_CREAT | O_DIRECTORY),
                name(Kind::Absent)
            ),
            Err(EINVAL)
        );
        assert_eq!(
            one(Op::Open(O_WRONLY | O_NOFOLLOW), name(Kind::Symlink)),
            Err(ELOOP)
        );
    }

    #[test]
    fn a_link_across_mounts_fails_on_its_names_first_then_exdev() {
        assert_eq!(link_across_mounts(Err(libc::ENOENT), true), libc::ENOENT);
        assert_eq!(link_across_mounts(Err(libc::EEXIST), false), libc::EEXIST);
        // EPERM (a directory's link) comes after the mounts are compared.
        assert_eq!(link_across_mounts(Err(libc::EPERM), false), libc::EXDEV);
        assert_eq!(link_across_mounts(Ok(Proceed::Call), true), libc::ENOENT);
        assert_eq!(link_across_mounts(Ok(Proceed::Call), false), libc::EXDEV);
    }

    #[test]
    fn a_rename_across_mounts_is_exdev_before_its_names_are_looked_at() {
        // rename: as soon as both parents are found, before the old name.
        let mut r = facts(Op::Rename(0), name(Kind::Absent), name(Kind::Absent));
        r.cross_mount = true;
        assert_eq!(answer(&r), Err(EXDEV));
        r.first = Name::new(b"d/..", Kind::Dir, false);
        assert_eq!(answer(&r), Err(EXDEV));
        r.op = Op::Rename(RENAME_EXCHANGE | RENAME_NOREPLACE);
        assert_eq!(answer(&r), Err(EINVAL));
    }

    #[test]
    fn rename_checks_in_the_kernels_order() {
        let nr = Op::Rename(RENAME_NOREPLACE);
        let x = Op::Rename(RENAME_EXCHANGE);
        assert_eq!(two(nr, Kind::Absent, Kind::Dir), Err(ENOENT));
        assert_eq!(two(nr, Kind::Regular, Kind::Dir), Err(EEXIST));
        assert_eq!(two(Op::Rename(0), Kind::Dir, Kind::Regular), Err(ENOTDIR));
        assert_eq!(two(Op::Rename(0), Kind::Regular, Kind::Dir), Err(EISDIR));
        assert_eq!(two(Op::Rename(0), Kind::Dir, Kind::Dir), Err(ENOTEMPTY));
        assert_eq!(two(x, Kind::Symlink, Kind::Dir), OK);
        assert_eq!(two(x, Kind::Dir, Kind::Absent), Err(ENOENT));
        let mut into_itself = facts(Op::Rename(0), name(Kind::Dir), name(Kind::Absent));
        into_itself.second_below_first = true;
        assert_eq!(answer(&into_itself), Err(EINVAL));
        let mut onto_parent = facts(Op::Rename(0), name(Kind::Regular), name(Kind::Dir));
        onto_parent.first_below_second = true;
        assert_eq!(answer(&onto_parent), Err(ENOTEMPTY));
        let mut same = facts(Op::Rename(0), name(Kind::Regular), name(Kind::Regular));
        same.same_file = true;
        assert_eq!(answer(&same), Ok(Proceed::Nothing));
        same.op = nr;
        assert_eq!(answer(&same), Err(EEXIST));
    }

    /// The decision against the real kernel: random trees of two names
    /// (each absent, an empty or a full directory, a file, a symlink to a
    /// file, a directory or nothing), spelled with or without a trailing
    /// slash, side by side, one inside the other or the same; every call
    /// with random flags is made for real in a scratch directory and its
    /// errno compared with [`answer`] over the looked-up facts.
    mod against_the_kernel {
        use super::*;
        use proptest::prelude::*;
        use std::ffi::CString;
        use std::os::unix::fs::MetadataExt;
        use std::path::{Path, PathBuf};

        #[derive(Clone, Copy, Debug)]
        enum Make {
            Nothing,
            EmptyDir,
            FullDir,
            File,
            LinkToFile,
            LinkToDir,
            Dangling,
        }

        #[derive(Clone, Copy, Debug, PartialEq)]
        enum Rel {
            Apart,
            SecondInsideFirst,
            FirstInsideSecond,
            Same,
        }

        fn make(base: &Path, p: &Path, m: Make) {
            match m {
                Make::Nothing => {}
                Make::EmptyDir => std::fs::create_dir(p).unwrap(),
                Make::FullDir => {
                    std::fs::create_dir(p).unwrap();
                    std::fs::write(p.join("inner"), "i").unwrap();
                }
                Make::File => std::fs::write(p, "f").unwrap(),
                Make::LinkToFile => std::os::unix::fs::symlink(base.join("t"), p).unwrap(),
                Make::LinkToDir => std::os::unix::fs::symlink(base.join("td"), p).unwrap(),
                Make::Dangling => std::os::unix::fs::symlink("nothing", p).unwrap(),
            }
        }

        fn kind_of(m: Option<std::fs::Metadata>) -> Kind {
            m.map_or(Kind::Absent, |m| Kind::of_mode(m.mode()))
        }

        fn empty(p: &Path) -> bool {
            std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
        }

        fn make_strategy() -> impl Strategy<Value = Make> {
            prop_oneof![
                Just(Make::Nothing),
                Just(Make::EmptyDir),
                Just(Make::FullDir),
                Just(Make::File),
                Just(Make::LinkToFile),
                Just(Make::LinkToDir),
                Just(Make::Dangling),
            ]
        }

        fn op_strategy() -> impl Strategy<Value = Op> {
            let open_flags =
                (0..3i32, proptest::collection::vec(any::<bool>(), 6)).prop_map(|(acc, b)| {
                    let bits = [O_CREAT, O_EXCL, O_TRUNC, O_DIRECTORY, O_NOFOLLOW, O_APPEND];
                    bits.iter()
                        .zip(&b)
                        .filter(|(_, on)| **on)
                        .fold(acc, |f, (bit, _)| f | bit)
                });
            prop_oneof![
                open_flags.prop_map(Op::Open),
                Just(Op::Truncate),
                Just(Op::Unlink),
                Just(Op::Rmdir),
                Just(Op::Mkdir),
                Just(Op::Symlink),
                // The node types mknod makes, and refuses (a directory, a
                // type that is none).
                prop_oneof![
                    Just(0),
                    Just(libc::S_IFIFO),
                    Just(libc::S_IFREG),
                    Just(libc::S_IFSOCK),
                    Just(libc::S_IFDIR),
                    Just(libc::S_IFMT),
                ]
                .prop_map(|t| Op::Mknod(t | 0o644)),
                Just(Op::Link),
                prop_oneof![Just(0), Just(RENAME_NOREPLACE), Just(RENAME_EXCHANGE)]
                    .prop_map(Op::Rename),
            ]
        }

        fn errno_of(r: c_long) -> c_int {
            if r < 0 {
                std::io::Error::last_os_error().raw_os_error().unwrap()
            } else {
                0
            }
        }

        /// The call made for real; 0 or its errno.
        fn kernel(op: Op, a: &CString, b: &CString) -> c_int {
            // SAFETY: two NUL-terminated paths in a scratch directory.
            let r = unsafe {
                match op {
                    Op::Open(flags) => {
                        let fd = libc::open(a.as_ptr(), flags | O_CLOEXEC, 0o644);
                        if fd >= 0 {
                            libc::close(fd);
                        }
                        fd as c_long
                    }
                    Op::Truncate => libc::truncate(a.as_ptr(), 0) as c_long,
                    Op::Unlink => libc::unlink(a.as_ptr()) as c_long,
                    Op::Rmdir => libc::rmdir(a.as_ptr()) as c_long,
                    Op::Mkdir => libc::mkdir(a.as_ptr(), 0o755) as c_long,
                    Op::Symlink => libc::symlink(c"t".as_ptr(), a.as_ptr()) as c_long,
                    Op::Mknod(mode) => libc::mknod(a.as_ptr(), mode, 0) as c_long,
                    Op::Link => libc::link(a.as_ptr(), b.as_ptr()) as c_long,
                    Op::Rename(flags) => libc::syscall(
                        SYS_renameat2,
                        AT_FDCWD,
                        a.as_ptr(),
                        AT_FDCWD,
                        b.as_ptr(),
                        flags,
                    ),
                }
            };
            errno_of(r)
        }

        fn case_dir() -> PathBuf {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let d = std::env::temp_dir().join(format!(
                "mpaudit-namei-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(d.join("td")).unwrap();
            std::fs::write(d.join("t"), "t").unwrap();
            d
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn answers_as_the_kernel_does(
                op in op_strategy(),
                first in make_strategy(),
                second in make_strategy(),
                rel in prop_oneof![Just(Rel::Apart), Just(Rel::SecondInsideFirst), Just(Rel::FirstInsideSecond), Just(Rel::Same)],
                slash1 in proptest::bool::weighted(0.2),
                slash2 in proptest::bool::weighted(0.2),
            ) {
                let d = case_dir();
                // The names, and which of them must be a directory to hold
                // the other.
                let (p1, p2) = match rel {
                    Rel::Apart => (d.join("x"), d.join("y")),
                    Rel::SecondInsideFirst => {
                        std::fs::create_dir(d.join("x")).unwrap();
                        make(&d, &d.join("x/z"), second);
                        (d.join("x"), d.join("x/z"))
                    }
                    Rel::FirstInsideSecond => {
                        std::fs::create_dir(d.join("y")).unwrap();
                        make(&d, &d.join("y/z"), first);
                        (d.join("y/z"), d.join("y"))
                    }
                    Rel::Same => (d.join("x"), d.join("x")),
                };
                match rel {
                    Rel::Apart => { make(&d, &p1, first); make(&d, &p2, second) }
                    Rel::Same => make(&d, &p1, first),
                    _ => {}
                }
                let spell = |p: &Path, slash: bool| {
                    let mut s = p.to_str().unwrap().to_owned();
                    if rel == Rel::Same && p == p2 { s = s.replace("/x", "/./x"); }
                    if slash { s.push('/'); }
                    s
                };
                let (s1, s2) = (spell(&p1, slash1), spell(&p2, slash2));
                let lst = |p: &Path| std::fs::symlink_metadata(p).ok();
                let (m1, m2) = (lst(&p1), lst(&p2));
                // What the call reaches at its first name: open follows the
                // leaf unless O_NOFOLLOW or O_CREAT|O_EXCL (a trailing
                // slash always follows, without O_CREAT); truncate follows.
                let follows = match op {
                    Op::Open(f) => {
                        let excl = f & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL;
                        (f & O_NOFOLLOW == 0 && !excl) || (slash1 && f & O_CREAT == 0)
                    }
                    Op::Truncate => true,
                    Op::Link => slash1,
                    _ => false,
                };
                let k1 = if follows { kind_of(std::fs::metadata(&p1).ok()) } else { kind_of(m1.clone()) };
                let facts = Facts {
                    op,
                    first: Name::new(s1.as_bytes(), k1, empty(&p1)),
                    second: Name::new(s2.as_bytes(), kind_of(m2.clone()), empty(&p2)),
                    same_file: matches!((&m1, &m2), (Some(a), Some(b)) if a.ino() == b.ino() && a.dev() == b.dev()),
                    second_below_first: rel == Rel::SecondInsideFirst,
                    first_below_second: rel == Rel::FirstInsideSecond,
                    cross_mount: false,
                };
                let (c1, c2) = (CString::new(s1).unwrap(), CString::new(s2).unwrap());
                let got = kernel(op, &c1, &c2);
                let _ = std::fs::remove_dir_all(&d);
                let want = match answer(&facts) { Ok(_) => 0, Err(e) => e };
                prop_assert_eq!(want, got, "facts {:?}", facts);
            }
        }
    }
}
