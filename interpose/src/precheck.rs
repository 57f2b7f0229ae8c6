//! Before a redirected namespace call: what the kernel would answer it in
//! the worker's view. The worker directory lacks the shared entries the
//! call collides with (`rmdir d` with a shared `d/b`, `symlink x f` over a
//! shared `f`, `link d a` of a shared directory), so the real call, given
//! worker paths, would answer otherwise. The names are looked up in the
//! merged view (view.rs) and the decision is the kernel's order of checks
//! (`mpaudit_core::namei`); a call that would fail there fails so before
//! anything is seeded, created or recorded.
//!
//! Raw system calls on the caller's pool block, no heap, bounded stack.

use crate::audit::Call;
use crate::view;
use libc::c_int;
use mpaudit_core::namei::{self, Facts, Kind, Name, Op, Proceed};
use mpaudit_core::path::MAX_ABS;

/// One name of the call: as the program spelled it, and where it resolved
/// in the worker's view.
#[derive(Clone, Copy)]
pub struct Spelled<'a> {
    pub given: &'a [u8],
    pub abs: &'a [u8],
}

/// The namespace operation a call is, for the kernel's checks; `None` for
/// calls this does not model (mkstemp templates, metadata changes, bind,
/// O_TMPFILE links), which the real call answers. mkdir is modelled in
/// core but not applied here: it is not redirected. mknod and mkfifo are
/// (the worker's copy lacks the shared name they must fail EEXIST on).
pub fn op_of(call: &Call) -> Option<Op> {
    if call.template_suffix.is_some() {
        return None;
    }
    if let Some(mode) = call.node_mode {
        return Some(Op::Mknod(mode));
    }
    if call.flags >= 0 && call.path2.is_none() {
        return Some(Op::Open(call.flags));
    }
    Some(match call.op {
        "truncate" | "truncate64" => Op::Truncate,
        "unlink" | "remove" => Op::Unlink,
        "unlinkat" if call.at_flags & libc::AT_REMOVEDIR != 0 => Op::Rmdir,
        "unlinkat" => Op::Unlink,
        "rmdir" => Op::Rmdir,
        "symlink" | "symlinkat" => Op::Symlink,
        "link" | "linkat" => Op::Link,
        "rename" | "renameat" => Op::Rename(0),
        "renameat2" => Op::Rename(call.flags.max(0) as u32),
        _ => return None,
    })
}

/// [`op_of`] for a call that is refused rather than redirected (deny):
/// nothing is made in a worker's view, so mkdir is modelled too
/// (`filename_create`'s checks: an existing name is EEXIST). Not bind
/// (EADDRINUSE).
pub fn op_of_refused(call: &Call) -> Option<Op> {
    match call.op {
        "mkdir" | "mkdirat" => Some(Op::Mkdir),
        _ => op_of(call),
    }
}

/// What the kernel would answer `op` on these names in the worker's view;
/// `None` when it cannot be said here (the real call answers). `first` is
/// the call's only name, symlink's new name, or link's and rename's
/// source; `second` link's and rename's destination. `work`: pool scratch
/// (at least `view::DIRENTS + MAX_ABS + PATH_MAX + 1` bytes).
#[inline(never)]
pub fn answer(
    call: &Call,
    op: Op,
    first: Spelled,
    second: Option<Spelled>,
    work: &mut [u8],
) -> Option<Result<Proceed, c_int>> {
    // An empty link source is ENOENT, or with AT_EMPTY_PATH the (open)
    // descriptor's file, which exists.
    let empty_source = op == Op::Link && first.given.is_empty();
    if empty_source && call.at_flags & libc::AT_EMPTY_PATH == 0 {
        return Some(Err(libc::ENOENT));
    }
    // A descriptor's link the walk ended at (a file without a name, which
    // the kernel reaches through it): the real call answers.
    let pid = crate::state::pid();
    if mpaudit_core::path::own_descriptor(first.abs, pid).is_some() && matches!(op, Op::Open(_)) {
        return None;
    }
    // `remove` is unlink, then rmdir for a directory.
    let (st1, kind1) = if empty_source {
        (None, Kind::Regular)
    } else {
        look(first.abs, work)?
    };
    // linkat's AT_SYMLINK_FOLLOW follows a source symlink the view walk did
    // not: only the new name's checks are said here (a link exists), the
    // rest is the kernel's.
    let followed_link =
        op == Op::Link && call.at_flags & libc::AT_SYMLINK_FOLLOW != 0 && kind1 == Kind::Symlink;
    let kind1 = if followed_link { Kind::Regular } else { kind1 };
    let op = match (op, call.op) {
        (Op::Unlink, "remove") if kind1 == Kind::Dir => Op::Rmdir,
        (op, _) => op,
    };
    let needs_empty = |op: Op, is_second: bool| match op {
        Op::Rmdir => !is_second,
        Op::Rename(_) => is_second,
        _ => false,
    };
    let empty1 = kind1 == Kind::Dir && needs_empty(op, false) && empty(first.abs, work)?;
    let mut facts = Facts {
        op,
        first: Name::new(first.given, kind1, empty1),
        second: Name::new(b"", Kind::Absent, false),
        same_file: false,
        second_below_first: false,
        first_below_second: false,
        cross_mount: false,
    };
    // may_delete's permission and sticky checks of the directories a
    // removal or a rename changes, as the view shows them (review 9 F2):
    // the kernel asks them before it compares the names' types.
    let asks_directories = matches!(op, Op::Unlink | Op::Rmdir | Op::Rename(_));
    if let (true, Some(st)) = (asks_directories, st1.as_ref()) {
        facts.first.dir_allows = dir_allows(first.abs, Some(st), work);
    }
    if let Some(second) = second {
        let (st2, kind2) = look(second.abs, work)?;
        let empty2 = kind2 == Kind::Dir && needs_empty(op, true) && empty(second.abs, work)?;
        facts.second = Name::new(second.given, kind2, empty2);
        if asks_directories {
            facts.second.dir_allows = dir_allows(second.abs, st2.as_ref(), work);
        }
        facts.same_file = matches!((st1, st2), (Some(a), Some(b))
            if a.st_dev == b.st_dev && a.st_ino == b.st_ino);
        facts.second_below_first = namei::strictly_below(second.abs, first.abs);
        facts.first_below_second = namei::strictly_below(first.abs, second.abs);
        // A link followed from a descriptor's link (an O_TMPFILE's) is on
        // its file's mount, which the real call checks.
        let followed_descriptor = op == Op::Link
            && call.at_flags & libc::AT_SYMLINK_FOLLOW != 0
            && mpaudit_core::path::own_descriptor(first.abs, crate::state::pid()).is_some();
        let across = !followed_descriptor
            && matches!(
                (mount_of_parent(first.abs, work), mount_of_parent(second.abs, work)),
                (Some(a), Some(b)) if a != b
            );
        facts.cross_mount = across && matches!(op, Op::Rename(_));
        if across && op == Op::Link {
            // do_linkat: the old name, then the new one (filename_create:
            // EEXIST, or /proc's own ENOENT for a name it does not have),
            // then EXDEV; the worker's path the new name is redirected to
            // would not collide.
            let on_proc = on_proc(second.abs, work);
            return Some(Err(namei::link_across_mounts(
                namei::answer(&facts),
                on_proc,
            )));
        }
    }
    match namei::answer(&facts) {
        Ok(_) if followed_link => None,
        r => Some(r),
    }
}

/// The entry at `abs` in the worker's view, and its kind; `None` when it
/// cannot be looked up (the real call answers).
fn look(abs: &[u8], work: &mut [u8]) -> Option<(Option<libc::stat>, Kind)> {
    // SAFETY: all-zero is a valid libc::stat (plain integers).
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let (found, _) = view::view_lstat(abs, &mut work[..view::PATH_MAX + 1], &mut st).ok()?;
    Some(if found {
        (Some(st), Kind::of_mode(st.st_mode))
    } else {
        (None, Kind::Absent)
    })
}

/// What the kernel asks of the directory holding `abs` (canonical,
/// resolved in the worker's view), as the view shows it (`view::place`:
/// its copy once the worker changed its metadata, else the shared one,
/// only asked), before it removes the entry `entry` there (may_delete:
/// EACCES, EPERM) or, for no entry, makes one (may_create: EACCES). `Ok`
/// when it cannot be asked: the real call answers.
fn dir_allows(abs: &[u8], entry: Option<&libc::stat>, work: &mut [u8]) -> Result<(), c_int> {
    let Some(at) = abs.iter().rposition(|&b| b == b'/') else {
        return Ok(());
    };
    let Some((dir, _)) = view::place(&abs[..at.max(1)], &mut work[..view::PATH_MAX + 1]) else {
        return Ok(());
    };
    match entry {
        Some(st) => crate::redirect::may_remove_in(dir, st.st_uid),
        None => crate::redirect::may_create_in(dir),
    }
}

fn empty(abs: &[u8], work: &mut [u8]) -> Option<bool> {
    const _: () = assert!(view::DIRENTS + MAX_ABS + view::PATH_MAX < crate::pool::WORK_SIZE);
    view::empty_in_view(abs, work).ok()
}

/// The mount the directory holding `abs` (canonical, resolved in the
/// worker's view) is on, as a bare run would find it: the nearest
/// directory at or above that parent that the shared tree has (a directory
/// only the worker's view has would be made there bare). `None` when the
/// kernel does not say (before Linux 5.8), so that nothing is decided on it.
fn mount_of_parent(abs: &[u8], work: &mut [u8]) -> Option<u64> {
    let mut end = abs.iter().rposition(|&b| b == b'/')?;
    loop {
        let dir = if end == 0 { &b"/"[..] } else { &abs[..end] };
        match mount_id(dir, work) {
            Ok(id) => return Some(id),
            Err(libc::ENOENT | libc::ENOTDIR) if end > 0 => {
                end = abs[..end].iter().rposition(|&b| b == b'/')?;
            }
            Err(_) => return None,
        }
    }
}

/// statx's mount id of the directory `dir` (followed).
fn mount_id(dir: &[u8], work: &mut [u8]) -> Result<u64, c_int> {
    // SAFETY: all-zero is a valid statx (plain integers).
    let mut stx: libc::statx = unsafe { core::mem::zeroed() };
    let stxp = &mut stx as *mut libc::statx;
    let r = view::at_path(dir, &mut work[..view::PATH_MAX + 1], |dirfd, name| {
        // SAFETY: a NUL-terminated name; `stxp` points to a live statx.
        unsafe {
            libc::syscall(
                libc::SYS_statx,
                dirfd,
                name,
                0,
                libc::STATX_TYPE | libc::STATX_MNT_ID,
                stxp,
            )
        }
    })?;
    if r != 0 {
        return Err(crate::sys::errno());
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0
        || u32::from(stx.stx_mode) & libc::S_IFMT != libc::S_IFDIR
    {
        return Err(libc::ENOTDIR);
    }
    Ok(stx.stx_mnt_id)
}

/// Whether the directory holding `abs` is on a proc file system, whose
/// lookup of a name it does not have fails (ENOENT) instead of leaving a
/// name to create.
fn on_proc(abs: &[u8], work: &mut [u8]) -> bool {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    let end = abs.iter().rposition(|&b| b == b'/').unwrap_or(0).max(1);
    // SAFETY: all-zero is a valid statfs (plain integers).
    let mut sf: libc::statfs = unsafe { core::mem::zeroed() };
    let sfp = &mut sf as *mut libc::statfs;
    let r = view::at_path(
        &abs[..end],
        &mut work[..view::PATH_MAX + 1],
        |dirfd, name| {
            if dirfd != libc::AT_FDCWD {
                return -1;
            }
            // SAFETY: a NUL-terminated name; `sfp` points to a live statfs.
            unsafe { libc::syscall(libc::SYS_statfs, name, sfp) }
        },
    );
    #[allow(clippy::unnecessary_cast)] // f_type's width differs by target
    let proc = sf.f_type as i64 == PROC_SUPER_MAGIC;
    r == Ok(0) && proc
}
