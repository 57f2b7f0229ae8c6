//! A path as the kernel would resolve it in this worker's view: the shared
//! tree, overlaid by what the worker redirected (its own files, symlinks and
//! removals, `redirect::lookup`). Policy mode judges and redirects the
//! result of this walk, never a lexical folding of the spelling: `nodir/..`
//! fails with ENOENT, a symlinked parent is followed (wherever it lives), and
//! a symlink the worker put in place of a directory leads the write to
//! where bare would write — then judged again.
//!
//! Raw system calls only, no heap; buffers come from the caller's pool
//! block. Paths of any length: `at_path` opens a long path's directories
//! chunk by chunk.

use crate::{redirect, sys};
use libc::{c_char, c_int};
use mpaudit_core::path::MAX_ABS;

use mpaudit_core::namei::Kind;
use mpaudit_core::walk::{self, Follow, Lookup};
pub use mpaudit_core::walk::{Unresolved, PATH_MAX};

/// `scratch` layout: the walk's own (the remaining path, a link's text),
/// then a C-string buffer for the lookups.
pub const SCRATCH: usize = walk::SCRATCH + MAX_ABS + 1;

/// Resolves `given` (relative to `start`, an absolute canonical directory
/// path, when it is relative) into `out` in this worker's view
/// ([`mpaudit_core::walk::resolve`] over [`ThisView`]): every directory
/// component as the worker sees it, the leaf too when `follow_leaf` (open
/// without O_NOFOLLOW, truncate). Returns the length and whether the walk
/// went through something only the worker's view has (then the program's
/// own spelling would reach another file: the call must be given the
/// result).
pub fn resolve(
    given: &[u8],
    start: Option<&[u8]>,
    follow_leaf: bool,
    out: &mut [u8],
    scratch: &mut [u8],
) -> Result<(usize, bool), Unresolved> {
    let (walk_scratch, buf) = scratch.split_at_mut(walk::SCRATCH);
    walk::resolve(
        &mut ThisView { buf },
        given,
        start,
        follow_leaf,
        out,
        walk_scratch,
    )
}

/// This process's view: the redirect table over the shared tree, read with
/// raw system calls into `buf` (a C-string buffer, PATH_MAX + 1 bytes or
/// more).
struct ThisView<'b> {
    buf: &'b mut [u8],
}

impl Lookup for ThisView<'_> {
    fn lstat(&mut self, abs: &[u8]) -> Result<(Kind, bool), c_int> {
        // SAFETY: all-zero is a valid libc::stat (plain integers).
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        let (found, own) = view_lstat(abs, self.buf, &mut st)?;
        let kind = if found {
            Kind::of_mode(st.st_mode)
        } else {
            Kind::Absent
        };
        Ok((kind, own))
    }

    fn readlink(&mut self, abs: &[u8], link: &mut [u8]) -> Result<usize, c_int> {
        view_readlink(abs, self.buf, link)
    }

    fn search(&mut self, abs: &[u8]) -> Result<(), c_int> {
        search_in_view(abs, self.buf)
    }

    fn follow(
        &mut self,
        abs: &[u8],
        link: &mut [u8],
        len: usize,
        last: bool,
        slash_follows: bool,
    ) -> Follow {
        // A descriptor's link is followed to its open file, not by its
        // text: a file without a name is reached only so.
        match nameless(abs, link, len, last, slash_follows) {
            Some(Ok(())) => return Follow::Here,
            Some(Err(e)) => return Follow::Fail(e),
            None => {}
        }
        // A magic link (/proc/self/cwd after a rerouted chdir, a
        // descriptor's) into a directory of the worker's that stands for a
        // job directory leads to that job directory in the view, as the
        // cwd does (guard::as_job_path); the kernel, following the link,
        // would reach the worker's directory instead: the call must be
        // given the result.
        let (mut n, mut moved) = (len, false);
        if abs.starts_with(b"/proc/") && n > 0 && link[0] == b'/' {
            (n, moved) = crate::guard::job_path_of(link, n);
        }
        if walk::leads_to_no_path(abs, &link[..n]) {
            return Follow::NotAPath;
        }
        Follow::Text { len: n, moved }
    }
}

/// At `abs`, a magic link of one of this process's descriptors that reads
/// `text`: when the descriptor's file has no name any more (removed,
/// renamed over, an `O_TMPFILE`: the text ends in ` (deleted)`), the kernel
/// still follows the link to it, where walking the text would find nothing.
/// `Some(Ok(()))`: the walk ends at the link itself, which leads the call
/// to that file as the program spelled it; `Some(Err(e))`: the kernel's
/// errno for a name below it (a file is no directory, a removed directory
/// has no entries); `None`: walk the text as any link's.
///
/// Below a descriptor's link of a file, any name is ENOTDIR, whatever the
/// text says.
///
/// A file that lost this name in the shared tree but still has another one
/// could be a shared file someone else removed a name of: a write through
/// the link would reach the other name. Such a descriptor, read-only, is
/// walked by its text, as before (fail closed). Not one: a file with no
/// name at all, one the worker's directory named, an `O_TMPFILE`'s (its
/// name is `#<inode>`, and the links the worker made are its own), and a
/// descriptor open for writing (the worker writes that file anyway).
fn nameless(
    abs: &[u8],
    link: &mut [u8],
    len: usize,
    last: bool,
    slash_follows: bool,
) -> Option<Result<(), c_int>> {
    let fd = mpaudit_core::path::own_descriptor(abs, crate::state::pid())?;
    let named = really_named(link, len, fd);
    let text = &link[..len];
    let st = sys::fstat(fd)?;
    let dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    // Whatever its name, a descriptor of a file is no directory: a name
    // below its link is ENOTDIR (its text may name what the view put in
    // its place, or nothing: a parent's descriptor of a shared file a
    // forked child's view moved away).
    if !dir && (!last || slash_follows) && text.first() == Some(&b'/') {
        return Some(Err(libc::ENOTDIR));
    }
    let gone = text.strip_suffix(b" (deleted)")?;
    if named {
        // A file whose name really ends in ` (deleted)` (review 7): the
        // text is its path, walked as any link's.
        return None;
    }
    if st.st_nlink > 0 && !dir && !named_by_the_worker(gone, &st) {
        // SAFETY: F_GETFL reads the descriptor's status flags, nothing else.
        let status = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) } as c_int;
        let writable =
            status >= 0 && status & libc::O_PATH == 0 && status & libc::O_ACCMODE != libc::O_RDONLY;
        if !writable {
            return None;
        }
    }
    Some(if !last {
        Err(if dir { libc::ENOENT } else { libc::ENOTDIR })
    } else if slash_follows && !dir {
        Err(libc::ENOTDIR)
    } else {
        Ok(())
    })
}

/// Whether the link text `link[..len]` of descriptor `fd` is a name the
/// file has (one that ends in ` (deleted)` may be: the kernel appends the
/// suffix to a removed file's name, and a file may be called so).
fn really_named(link: &mut [u8], len: usize, fd: c_int) -> bool {
    if len >= link.len() || !link[..len].ends_with(b" (deleted)") {
        return false;
    }
    let Some(held) = sys::fstat(fd) else {
        return false;
    };
    let kept = link[len];
    link[len] = 0;
    // SAFETY: NUL-terminated just above; the byte is put back below.
    let there = unsafe { sys::stat(link.as_ptr().cast(), libc::AT_SYMLINK_NOFOLLOW) };
    link[len] = kept;
    there.is_some_and(|st| st.st_dev == held.st_dev && st.st_ino == held.st_ino)
}

/// Whether the removed name `gone` of the file `st` was none of the shared
/// tree's: below the worker's directory, outside the job directory, or an
/// `O_TMPFILE`'s `#<inode>`.
fn named_by_the_worker(gone: &[u8], st: &libc::stat) -> bool {
    let saved = crate::state::SAVED.get();
    let (job, own) = (saved.job_dir.as_bytes(), saved.worker_dir.as_bytes());
    let below = |dir: &[u8]| {
        !dir.is_empty() && (gone == dir || mpaudit_core::path::strip_dir(gone, dir).is_some())
    };
    if below(own) || !below(job) {
        return true;
    }
    let leaf = &gone[gone.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1)..];
    let mut digits = [0u8; 24];
    leaf.strip_prefix(b"#") == Some(sys::decimal(st.st_ino, &mut digits))
}

/// may_lookup's search permission of the directory `abs` as the view
/// shows it, where the kernel would not ask it itself: a directory the
/// table has (its copy, whose mode the worker changed, stands for the
/// shared one a call is given). `Err(EACCES)` when this process's
/// effective ids may not search the copy (root may); `Ok` otherwise (a
/// shared directory is the kernel's, or the walk's own lstat's, to
/// refuse). `buf`: PATH_MAX + 1 bytes.
pub(crate) fn search_in_view(abs: &[u8], buf: &mut [u8]) -> Result<(), c_int> {
    match copy_denies(abs, libc::X_OK, buf) {
        true => Err(libc::EACCES),
        false => Ok(()),
    }
}

/// Whether the worker's copy of `abs` (the table's target) denies this
/// process's effective ids the access `how` (faccessat's EACCES); false
/// when the table has none or it does not fit below PATH_MAX. `buf`:
/// PATH_MAX + 1 bytes.
pub(crate) fn copy_denies(abs: &[u8], how: c_int, buf: &mut [u8]) -> bool {
    let Some(t) = redirect::lookup(abs) else {
        return false;
    };
    let Some(p) = (t.len() < PATH_MAX).then(|| sys::c_path(t, buf)).flatten() else {
        return false;
    };
    redirect::access(p, how) == libc::EACCES
}

/// The stat of the worker's copy of `abs` when `abs` is a shared directory
/// whose metadata the worker changed (the table has it, and its copy is a
/// directory): the view shows the copy's mode, owner and times, and the
/// shared directory's entries merged with the worker's. `buf`: PATH_MAX +
/// 1 bytes or more.
pub(crate) fn copy_of_shared_dir(abs: &[u8], buf: &mut [u8]) -> Option<libc::stat> {
    let t = redirect::lookup(abs)?;
    let is_dir = |st: &libc::stat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let copy = lstat(t, buf).ok().flatten().filter(is_dir)?;
    lstat(abs, buf).ok().flatten().filter(is_dir)?;
    Some(copy)
}

/// lstat of `abs` in the worker's view into `st`: its redirect's target
/// when it has one (a missing target is a removal), else the shared path.
/// `Ok(false)` for a path that does not exist; `.1`: the worker's file was
/// looked at.
pub(crate) fn view_lstat(
    abs: &[u8],
    buf: &mut [u8],
    st: &mut libc::stat,
) -> Result<(bool, bool), c_int> {
    match redirect::lookup(abs) {
        Some(t) => lstat_into(t, buf, st).map(|found| (found, true)),
        None => {
            // Below a directory of the worker's that stands over a shared
            // file or symlink: the shared spelling would go through that.
            if let Some(r) = below_own_dir(abs, buf, st) {
                return r.map(|found| (found, true));
            }
            // The walk reached `abs`'s parent as a directory of the view: a
            // shared parent that is no directory (the worker replaced a file
            // with a directory) has no such child.
            match lstat_into(abs, buf, st) {
                Err(libc::ENOTDIR) => Ok((false, false)),
                r => r.map(|found| (found, false)),
            }
        }
    }
}

/// [`in_worker_dir`] for [`view_lstat`], in its own buffer: when an
/// ancestor of `abs` the table has is a directory of the worker's
/// standing over a shared non-directory, the lstat of `abs`'s place below
/// it (`Ok(false)`: absent). `None` otherwise, or when that path does not
/// fit `buf` below PATH_MAX.
fn below_own_dir(abs: &[u8], buf: &mut [u8], st: &mut libc::stat) -> Option<Result<bool, c_int>> {
    own_place(abs, buf, st)?;
    let stp = st as *mut libc::stat;
    // SAFETY: `buf` holds a NUL-terminated path; `stp` is a live stat.
    Some(
        match unsafe { newfstatat(libc::AT_FDCWD, buf.as_ptr().cast(), stp) } {
            0 => Ok(true),
            e if e == libc::ENOENT => Ok(false),
            e => Err(e),
        },
    )
}

/// The place of `abs` below a directory of the worker's standing over a
/// shared non-directory ([`below_own_dir`]), NUL-terminated in `buf`; its
/// length. `st`: scratch.
fn own_place(abs: &[u8], buf: &mut [u8], st: &mut libc::stat) -> Option<usize> {
    let mut end = abs.len();
    // Every ancestor the table has, nearest first, until one is a
    // directory of the worker's standing over a shared non-directory (a
    // nearer one may lie below it; review 4, finding 3).
    let (cut, t, n) = loop {
        let cut = abs[..end].iter().rposition(|&b| b == b'/')?;
        if cut == 0 {
            return None;
        }
        end = cut;
        let Some(t) = redirect::lookup(&abs[..cut]) else {
            continue;
        };
        let n = t.len() + (abs.len() - cut);
        if n >= PATH_MAX || n >= buf.len() {
            return None;
        }
        let is_dir = lstat_into(t, buf, st).ok()? && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let replaced = match lstat_into(&abs[..cut], buf, st) {
            Ok(true) => st.st_mode & libc::S_IFMT != libc::S_IFDIR,
            Ok(false) => false,
            Err(_) => true,
        };
        if is_dir && replaced {
            break (cut, t, n);
        }
    };
    buf[..t.len()].copy_from_slice(t);
    buf[t.len()..n].copy_from_slice(&abs[cut..]);
    buf[n] = 0;
    Some(n)
}

/// Where the worker's view has `abs` (as [`view_lstat`] looks at it: its
/// redirect's target, its place below a directory of the worker's, else
/// the shared path), NUL-terminated in `out` (PATH_MAX + 1 bytes or
/// more); whether it is the worker's. `None` when it does not fit below
/// PATH_MAX. For the questions the kernel asks of a directory the view
/// shows (its mode, owner, permissions).
pub(crate) fn place(abs: &[u8], out: &mut [u8]) -> Option<(*const c_char, bool)> {
    if let Some(t) = redirect::lookup(abs) {
        return (t.len() < PATH_MAX)
            .then(|| sys::c_path(t, out))
            .flatten()
            .map(|p| (p, true));
    }
    // SAFETY: all-zero is a valid libc::stat (plain integers).
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    if own_place(abs, out, &mut st).is_some() {
        return Some((out.as_ptr().cast(), true));
    }
    (abs.len() < PATH_MAX)
        .then(|| sys::c_path(abs, out))
        .flatten()
        .map(|p| (p, false))
}

/// Where the kernel finds `abs` (canonical, resolved in the worker's view)
/// when it has no entry of its own but lies below a directory of the
/// worker's that stands where the shared tree has something else (an
/// exchange or rename put it over a shared file or symlink): that
/// directory's target with the rest of `abs` appended,
/// NUL-terminated in `out`; its length. The shared spelling would be
/// resolved through the shared file (ENOTDIR) or symlink instead. `None`
/// when `abs` has an entry, no such directory is above it, or the result
/// does not fit `out`. A directory the worker made where the shared tree
/// has nothing is not one: the spelling meets no shared file there, and a
/// write allowed in place makes its directories in place (audit.rs).
/// `buf`: PATH_MAX + 1 bytes of scratch.
pub fn in_worker_dir(abs: &[u8], out: &mut [u8], buf: &mut [u8]) -> Option<usize> {
    if redirect::lookup(abs).is_some() {
        return None;
    }
    let is_dir = |p: &[u8], buf: &mut [u8]| {
        lstat(p, buf)
            .ok()
            .flatten()
            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    };
    // Something that is no directory: a file, a symlink, or a name the
    // kernel cannot reach (ENOTDIR, ELOOP on the way).
    let replaced = |p: &[u8], buf: &mut [u8]| match lstat(p, buf) {
        Ok(Some(st)) => st.st_mode & libc::S_IFMT != libc::S_IFDIR,
        Ok(None) => false,
        Err(_) => true,
    };
    let mut end = abs.len();
    loop {
        let cut = abs[..end].iter().rposition(|&b| b == b'/')?;
        if cut == 0 {
            return None;
        }
        let above = &abs[..cut];
        if let Some(t) = redirect::lookup(above) {
            // A nearer directory of the worker's whose shared name is a
            // directory may lie below one that replaced a shared symlink
            // (`l/sub` after `rename m l EXCHANGE`, `l -> d`): the higher
            // ones are looked at too (review 4, finding 3).
            if !is_dir(t, buf) || !replaced(above, buf) {
                end = cut;
                continue;
            }
            let rest = &abs[cut..];
            let n = t.len() + rest.len();
            if n >= out.len() {
                return None;
            }
            out[..t.len()].copy_from_slice(t);
            out[t.len()..n].copy_from_slice(rest);
            out[n] = 0;
            return Some(n);
        }
        end = cut;
    }
}

/// Whether the directory `dir` (a canonical path, a directory in the
/// worker's view) has no entry in that view: none of the names its shared
/// directory, its worker copy (if the table has one) or the table's
/// entries below it hold is visible through [`view_lstat`] (each may be a
/// removal). `work`: at least `DIRENTS + MAX_ABS + PATH_MAX + 1` bytes.
pub fn empty_in_view(dir: &[u8], work: &mut [u8]) -> Result<bool, c_int> {
    let (dirents, rest) = work.split_at_mut(DIRENTS);
    let (child, buf) = rest.split_at_mut(MAX_ABS);
    if dir.len() + 1 >= child.len() {
        return Err(libc::ENAMETOOLONG);
    }
    let base = if dir == b"/" { 0 } else { dir.len() };
    child[..base].copy_from_slice(&dir[..base]);
    child[base] = b'/';
    // SAFETY: all-zero is a valid libc::stat (plain integers).
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let mut visible = |name: &[u8], buf: &mut [u8], st: &mut libc::stat| -> Result<bool, c_int> {
        let end = base + 1 + name.len();
        if end > child.len() {
            return Ok(false);
        }
        child[base + 1..end].copy_from_slice(name);
        Ok(view_lstat(&child[..end], buf, st)?.0)
    };
    let own = redirect::lookup(dir).filter(|t| *t != dir);
    for physical in [Some(dir), own].into_iter().flatten() {
        let fd = at_path(physical, buf, |d, name| {
            // SAFETY: NUL-terminated name; the descriptor is closed below.
            unsafe {
                sys::openat(
                    d,
                    name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0,
                )
            }
        })?;
        if fd < 0 {
            continue; // nothing there (a removed or never copied directory)
        }
        let found = loop {
            // SAFETY: the kernel writes at most DIRENTS bytes of entries.
            let n =
                unsafe { libc::syscall(libc::SYS_getdents64, fd, dirents.as_mut_ptr(), DIRENTS) };
            if n <= 0 {
                break Ok(false);
            }
            let mut off = 0usize;
            let mut hit = Ok(false);
            while off + 19 < n as usize {
                // SAFETY: a linux_dirent64 the kernel wrote at `off`: d_reclen
                // at byte 16, the NUL-terminated name from byte 19.
                let (reclen, name) = unsafe {
                    let e = dirents.as_ptr().add(off);
                    (
                        (e.add(16) as *const u16).read_unaligned() as usize,
                        sys::c_bytes(e.add(19).cast(), 256),
                    )
                };
                if reclen == 0 {
                    break;
                }
                off += reclen;
                if name == b"." || name == b".." {
                    continue;
                }
                hit = visible(name, buf, &mut st);
                if hit != Ok(false) {
                    break;
                }
            }
            if hit != Ok(false) {
                break hit;
            }
        };
        sys::close(fd);
        if found? {
            return Ok(false);
        }
    }
    // The worker's own entries below it (files it made, removals).
    let node = &mut child[..base + 1];
    let node: &[u8] = node;
    for seg in 0..redirect::TABLE.segments() {
        let mut link = redirect::TABLE.children(seg, node);
        while link != 0 {
            let Some((entry, after)) = redirect::TABLE.entry(link - 1) else {
                break;
            };
            link = after;
            if view_lstat(entry.key, buf, &mut st)?.0 {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Room for one batch of directory entries in [`empty_in_view`].
pub const DIRENTS: usize = 4096;

/// lstat of an absolute path of any length; `Ok(None)` when it does not
/// exist.
pub fn lstat(path: &[u8], buf: &mut [u8]) -> Result<Option<libc::stat>, c_int> {
    // SAFETY: all-zero is a valid libc::stat (plain integers).
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    Ok(lstat_into(path, buf, &mut st)?.then_some(st))
}

/// lstat into `st` (kept small on the stack: hooks run on signal stacks);
/// `Ok(false)` when the path does not exist.
pub fn lstat_into(path: &[u8], buf: &mut [u8], st: &mut libc::stat) -> Result<bool, c_int> {
    let stp = st as *mut libc::stat;
    let r = if path.len() < PATH_MAX {
        let name = sys::c_path(path, buf).ok_or(libc::ENAMETOOLONG)?;
        // SAFETY: NUL-terminated name; `stp` is a live, writable stat.
        unsafe { newfstatat(libc::AT_FDCWD, name, stp) }
    } else {
        // SAFETY: as above; at_path gives a NUL-terminated name.
        at_path(path, buf, |dirfd, name| unsafe {
            newfstatat(dirfd, name, stp)
        })?
    };
    match r {
        0 => Ok(true),
        e if e == libc::ENOENT => Ok(false),
        e => Err(e),
    }
}

/// fstatat(AT_SYMLINK_NOFOLLOW): 0 or the errno.
///
/// # Safety
/// `name` is NUL-terminated, `st` points to a writable libc::stat.
unsafe fn newfstatat(dirfd: c_int, name: *const c_char, st: *mut libc::stat) -> c_int {
    // SAFETY: the caller's contract.
    let r = unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            dirfd,
            name,
            st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        0
    } else {
        sys::errno()
    }
}

fn view_readlink(abs: &[u8], buf: &mut [u8], link: &mut [u8]) -> Result<usize, c_int> {
    let path = redirect::lookup(abs).unwrap_or(abs);
    let r = at_path(path, buf, |dirfd, name| {
        // SAFETY: NUL-terminated name; the kernel writes at most link.len().
        unsafe {
            libc::syscall(
                libc::SYS_readlinkat,
                dirfd,
                name,
                link.as_mut_ptr(),
                link.len(),
            )
        }
    })?;
    if r < 0 {
        Err(sys::errno())
    } else if r as usize >= link.len() {
        Err(libc::ENAMETOOLONG)
    } else {
        Ok(r as usize)
    }
}

/// The link count the directory `abs` (canonical, resolved in the
/// worker's view) has in that view, given `statted`, the count of the
/// directory the call reached: the shared one, or the worker's own copy
/// when the worker redirected `abs`. A worker-only directory's count is its
/// own (all its entries are the worker's); otherwise it is the shared
/// directory's, plus each redirected child that is a directory in the view
/// but not in the shared tree, minus each one the other way round (a
/// subdirectory the worker made, removed or replaced). Costs an lstat pair
/// per redirected child. `buf`: MAX_ABS + PATH_MAX + 1 bytes of scratch.
pub fn dir_nlink(abs: &[u8], statted: u64, buf: &mut [u8]) -> u64 {
    let is_dir =
        |st: Option<libc::stat>| st.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    let (key, buf) = buf.split_at_mut(MAX_ABS);
    let shared = lstat(abs, buf).ok().flatten();
    #[allow(clippy::unnecessary_cast)] // nlink_t is u32 on aarch64
    let mut nlink = match (redirect::lookup(abs), shared) {
        (_, Some(st)) if is_dir(Some(st)) => st.st_nlink as u64,
        (Some(_), _) => return statted,
        (None, _) => statted,
    };
    let node_len = if abs == b"/" { 1 } else { abs.len() + 1 };
    if node_len > key.len() {
        return statted;
    }
    key[..abs.len()].copy_from_slice(abs);
    key[node_len - 1] = b'/';
    let table = &redirect::TABLE;
    for seg in 0..table.segments() {
        let mut link = table.children(seg, &key[..node_len]);
        while link != 0 {
            let Some((found, after)) = table.entry(link - 1) else {
                break;
            };
            link = after;
            // The first entry of this key only (a key may be in two segments).
            if table.find(found.key).map(|f| f.id) != Some(found.id) {
                continue;
            }
            let in_view = is_dir(lstat(found.value, buf).ok().flatten());
            let in_shared = is_dir(lstat(found.key, buf).ok().flatten());
            match (in_view, in_shared) {
                (true, false) => nlink += 1,
                (false, true) => nlink = nlink.saturating_sub(1),
                _ => {}
            }
        }
    }
    nlink
}

/// Runs `f(dirfd, name)` for the absolute `path`, whatever its length: as
/// is (`AT_FDCWD`) when it fits PATH_MAX, else `name` relative to a
/// descriptor of a directory prefix, opened piece by piece (each piece
/// shorter than PATH_MAX) and closed afterwards. `buf` holds the C strings
/// (at least PATH_MAX + 1 bytes). Err: why a piece could not be opened.
pub fn at_path<R>(
    path: &[u8],
    buf: &mut [u8],
    f: impl FnOnce(c_int, *const c_char) -> R,
) -> Result<R, c_int> {
    let mut fd = libc::AT_FDCWD;
    let mut p = path;
    while p.len() >= PATH_MAX {
        let Some(cut) = p[..PATH_MAX - 1]
            .iter()
            .rposition(|&b| b == b'/')
            .filter(|&i| i > 0)
        else {
            close_dirfd(fd);
            return Err(libc::ENAMETOOLONG);
        };
        let Some(piece) = sys::c_path(&p[..cut], buf) else {
            close_dirfd(fd);
            return Err(libc::ENAMETOOLONG);
        };
        // SAFETY: NUL-terminated piece.
        let next = unsafe {
            sys::openat(
                fd,
                piece,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
            )
        };
        close_dirfd(fd);
        if next < 0 {
            return Err(-next);
        }
        fd = next;
        p = &p[cut + 1..];
    }
    let Some(name) = sys::c_path(p, buf) else {
        close_dirfd(fd);
        return Err(libc::ENAMETOOLONG);
    };
    let r = f(fd, name);
    let keep = sys::ErrnoGuard::save();
    close_dirfd(fd);
    drop(keep);
    Ok(r)
}

fn close_dirfd(fd: c_int) {
    if fd >= 0 {
        sys::close(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> Vec<u8> {
        vec![0u8; SCRATCH]
    }

    /// A fresh directory tree: a/b, lnk -> a/b, file, loop -> loop.
    fn tree(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mpaudit-view-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::os::unix::fs::symlink("a/b", d.join("lnk")).unwrap();
        std::os::unix::fs::symlink("loop", d.join("loop")).unwrap();
        std::fs::write(d.join("file"), "").unwrap();
        // Canonical, as the kernel reports a cwd.
        d.canonicalize().unwrap()
    }

    fn run(d: &std::path::Path, given: &str, follow: bool) -> Result<String, Unresolved> {
        let mut out = vec![0u8; MAX_ABS];
        let start = d.to_str().unwrap().as_bytes();
        resolve(
            given.as_bytes(),
            Some(start),
            follow,
            &mut out,
            &mut scratch(),
        )
        .map(|(n, _)| String::from_utf8(out[..n].to_vec()).unwrap())
    }

    #[test]
    fn dotdot_is_applied_after_the_parent_is_seen() {
        let d = tree("dotdot");
        let s = d.to_str().unwrap();
        assert_eq!(
            run(&d, "nodir/../f", true),
            Err(Unresolved::Errno(libc::ENOENT))
        );
        assert_eq!(
            run(&d, "file/../f", true),
            Err(Unresolved::Errno(libc::ENOTDIR))
        );
        assert_eq!(run(&d, "lnk/../g", true), Ok(format!("{s}/a/g")));
        assert_eq!(run(&d, "./a//b/./x", false), Ok(format!("{s}/a/b/x")));
        assert_eq!(
            run(&d, "loop/x", false),
            Err(Unresolved::Errno(libc::ELOOP))
        );
        // The leaf is followed only when asked.
        assert_eq!(run(&d, "lnk", false), Ok(format!("{s}/lnk")));
        assert_eq!(run(&d, "lnk", true), Ok(format!("{s}/a/b")));
        assert_eq!(run(&d, "", true), Err(Unresolved::Errno(libc::ENOENT)));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_relative_path_without_a_start_is_unresolvable() {
        let mut out = vec![0u8; MAX_ABS];
        let r = resolve(b"f", None, true, &mut out, &mut scratch());
        assert_eq!(r, Err(Unresolved::NoStart));
        let r = resolve(b"/", None, true, &mut out, &mut scratch());
        assert_eq!(r, Ok((1, false)));
    }

    #[test]
    fn paths_longer_than_path_max_are_walked_in_pieces() {
        let d = tree("long");
        let comp = "c".repeat(200);
        let mut p = d.clone();
        let mut cmd = std::process::Command::new("bash");
        cmd.current_dir(&d).args([
            "-c",
            &format!("for i in $(seq 25); do mkdir {comp} && cd {comp} || exit 1; done; : > leaf"),
        ]);
        assert!(cmd.status().unwrap().success());
        for _ in 0..25 {
            p = p.join(&comp);
        }
        let leaf = p.join("leaf");
        let bytes = leaf.to_str().unwrap().as_bytes();
        assert!(bytes.len() > PATH_MAX);
        let mut buf = vec![0u8; PATH_MAX + 1];
        let st = lstat(bytes, &mut buf).unwrap().expect("exists");
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFREG);
        assert!(matches!(
            lstat(&bytes[..bytes.len() - 1], &mut buf),
            Ok(None)
        ));
        let _ = std::process::Command::new("rm").arg("-rf").arg(&d).status();
    }
}
