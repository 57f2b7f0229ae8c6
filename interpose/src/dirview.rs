//! Directory listings in a redirecting worker: a directory lists what the
//! worker would see had it written in place. Its shared entries come first,
//! each shown as the worker's copy when the worker redirected it, hidden
//! when the worker removed it (its redirect target does not exist: a
//! whiteout); then the worker's redirected files that the directory does
//! not have. No name is listed twice.
//!
//! glibc's `readdir` calls `getdents64` internally, so the merge happens at
//! `readdir`: a stream opened (`opendir`, `fdopendir`) on a directory that
//! has redirected children (a node in the table, table.rs) gets a slot in a
//! fixed side table, keyed by its `DIR*`, that holds where the listing is
//! and the `dirent` last returned. Streams of other directories pay one
//! atomic load per `readdir`. No allocation, no locks: slots are claimed by
//! compare-and-swap, and a stream is used by one thread at a time (as POSIX
//! requires of the program).
//!
//! Not emulated: `telldir`/`seekdir` positions inside the worker's own
//! entries (a `seekdir` restarts them after the shared ones), `scandir`,
//! `glob(3)`, `nftw` and `getdents64` called directly (they read the
//! directory inside libc or the kernel); more than `STREAMS` merged streams
//! open at once (the extra ones list the shared directory only).
//!
//! Renaming a shared directory fails with `EXDEV` (see [`renamed`]).

use crate::audit::PathArg;
use crate::guard::HookGuard;
use crate::pool::Block;
use crate::redirect::TABLE;
use crate::state::{self, SAVED};
use crate::sys;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering::*};
use libc::{c_int, dirent64, DIR};
use mpaudit_core::path::MAX_ABS;
use mpaudit_core::policy::ActionSetting;

const STREAMS: usize = 256;

struct Listing {
    /// The directory's node key in the table (`P/`), in the shared mapping.
    node_ptr: usize,
    node_len: usize,
    /// False while the real stream is being read, true once it ended and
    /// the worker's own entries are listed.
    own: bool,
    /// The segment whose children list is being walked.
    seg: usize,
    seg_started: bool,
    /// Next entry id + 1 in that list (0: the list ended).
    link: u64,
    /// Synthesised entries are numbered past any real offset.
    serial: i64,
    entry: dirent64,
}

struct Slot {
    dir: AtomicUsize,
    listing: UnsafeCell<Listing>,
}

struct Slots([Slot; STREAMS]);
// SAFETY: a slot's listing is touched only by the thread that claimed it
// (the CAS on `dir`) or that reads the stream it belongs to, one at a time.
unsafe impl Sync for Slots {}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    dir: AtomicUsize::new(0),
    listing: UnsafeCell::new(Listing {
        node_ptr: 0,
        node_len: 0,
        own: false,
        seg: 0,
        seg_started: false,
        link: 0,
        serial: 0,
        // SAFETY: dirent64 is plain integers and bytes.
        entry: unsafe { core::mem::zeroed() },
    }),
};
static SLOTS: Slots = Slots([FREE; STREAMS]);
/// Slots in use: zero makes `readdir` a single load.
static IN_USE: AtomicUsize = AtomicUsize::new(0);

fn slot_of(dir: *mut DIR) -> Option<&'static Slot> {
    if dir.is_null() || IN_USE.load(Acquire) == 0 {
        return None;
    }
    SLOTS.0.iter().find(|s| s.dir.load(Acquire) == dir as usize)
}

fn release(dir: *mut DIR) {
    if let Some(s) = slot_of(dir) {
        if s.dir
            .compare_exchange(dir as usize, 0, AcqRel, Relaxed)
            .is_ok()
        {
            IN_USE.fetch_sub(1, AcqRel);
        }
    }
}

/// After a successful `opendir`/`fdopendir`: gives the stream a slot when
/// the directory it lists has redirected children.
pub fn opened(dir: *mut DIR) -> *mut DIR {
    if dir.is_null() || !state::ready() {
        return dir;
    }
    let _errno = sys::ErrnoGuard::save();
    release(dir); // a stale slot of a closed stream whose DIR* was reused
    if !crate::redirect::any_redirected() {
        return dir;
    }
    let Some(_guard) = HookGuard::enter() else {
        return dir;
    };
    let Some(mut claimed) = crate::pool::claim() else {
        return dir;
    };
    let b = claimed.block();
    // SAFETY: `dir` is the live stream libc just returned.
    let fd = unsafe { libc::dirfd(dir) };
    let Some(n) = node_key(fd, &mut b.abs, &mut b.abs2) else {
        return dir;
    };
    let Some(node) = TABLE.find(&b.abs[..n]) else {
        return dir;
    };
    claim(dir, node.key);
    dir
}

/// The table key of the directory `fd` is open on, as the worker sees it
/// (`P/`; a redirected directory's original), into `out`.
fn node_key(fd: c_int, out: &mut [u8], scratch: &mut [u8]) -> Option<usize> {
    let n = sys::fd_path(fd, &mut scratch[..MAX_ABS - 1])?;
    let saved = SAVED.get();
    let mut m = mpaudit_core::map::unmap_from_worker(
        &scratch[..n],
        saved.job_dir.as_bytes(),
        saved.worker_dir.as_bytes(),
        &mut out[..MAX_ABS - 1],
    )
    .unwrap_or_else(|| {
        out[..n].copy_from_slice(&scratch[..n]);
        n
    });
    if m == 1 {
        m = 0; // "/" has the node key "/"
    }
    out[m] = b'/';
    Some(m + 1)
}

fn claim(dir: *mut DIR, node: &'static [u8]) {
    for s in &SLOTS.0 {
        if s.dir.load(Relaxed) == 0
            && s.dir
                .compare_exchange(0, dir as usize, AcqRel, Relaxed)
                .is_ok()
        {
            // SAFETY: the slot is ours since the CAS; nobody reads its
            // listing before this stream's next readdir, on this thread or
            // after the program handed the stream over.
            let l = unsafe { &mut *s.listing.get() };
            l.node_ptr = node.as_ptr() as usize;
            l.node_len = node.len();
            rewind(l);
            IN_USE.fetch_add(1, AcqRel);
            return;
        }
    }
}

fn rewind(l: &mut Listing) {
    l.own = false;
    l.seg = 0;
    l.seg_started = false;
    l.link = 0;
    l.serial = 0;
}

/// Before `closedir`: frees the stream's slot.
pub fn closing(dir: *mut DIR) {
    release(dir);
}

/// After `rewinddir`/`seekdir`: the shared entries are read again from
/// the stream's new position, the worker's own ones after them. A stream
/// without a slot gets one if its directory has redirected children now.
pub fn repositioned(dir: *mut DIR) {
    let _errno = sys::ErrnoGuard::save();
    match slot_of(dir) {
        // SAFETY: the program's stream, read by one thread at a time.
        Some(s) => rewind(unsafe { &mut *s.listing.get() }),
        None => _ = opened(dir),
    }
}

/// `readdir`/`readdir64`: the next entry of the worker's view. `real`
/// reads the real stream.
///
/// # Safety
/// `dir` is the program's stream argument.
pub unsafe fn next(dir: *mut DIR, real: impl Fn(*mut DIR) -> *mut dirent64) -> *mut dirent64 {
    let Some(slot) = slot_of(dir) else {
        return real(dir);
    };
    let Some(_guard) = HookGuard::enter() else {
        return real(dir);
    };
    let Some(mut claimed) = crate::pool::claim() else {
        return real(dir);
    };
    let b = claimed.block();
    // SAFETY: the stream's slot, used by the one thread reading it.
    let l = unsafe { &mut *slot.listing.get() };
    // SAFETY: node_ptr/len point into the table's shared mapping, which
    // stays mapped and whose published records never change.
    let node = unsafe { core::slice::from_raw_parts(l.node_ptr as *const u8, l.node_len) };
    let entry_errno = sys::errno();
    while !l.own {
        sys::set_errno(0);
        let e = real(dir);
        if e.is_null() {
            if sys::errno() != 0 {
                return e; // a read error: as libc reported it
            }
            sys::set_errno(entry_errno);
            l.own = true;
            break;
        }
        // SAFETY: libc's entry, valid until the next call on the stream.
        let name = unsafe { name_of(e) };
        if name == b"." || name == b".." {
            sys::set_errno(entry_errno);
            return e;
        }
        let Some(key) = join(node, name, &mut b.abs) else {
            sys::set_errno(entry_errno);
            return e;
        };
        let Some(target) = crate::redirect::lookup(key) else {
            sys::set_errno(entry_errno);
            return e;
        };
        match lstat(target, &mut b.target) {
            // Redirected: the worker's copy, under the same name.
            Some(st) => {
                // SAFETY: as above.
                let off = unsafe { (*e).d_off };
                fill(&mut l.entry, name, &st, off);
                sys::set_errno(entry_errno);
                return &mut l.entry;
            }
            None => continue, // removed by the worker
        }
    }
    // SAFETY: `dir` is a live stream.
    let fd = unsafe { libc::dirfd(dir) };
    loop {
        if l.link == 0 {
            if l.seg_started {
                l.seg += 1;
                l.seg_started = false;
            }
            if l.seg >= TABLE.segments() {
                sys::set_errno(entry_errno);
                return core::ptr::null_mut();
            }
            l.link = TABLE.children(l.seg, node);
            l.seg_started = true;
            continue;
        }
        let Some((found, after)) = TABLE.entry(l.link - 1) else {
            l.link = 0;
            continue;
        };
        l.link = after;
        // The first entry of this key only (a key may be in two segments).
        if TABLE.find(found.key).map(|f| f.id) != Some(found.id) {
            continue;
        }
        let Some(name) = found.key.get(node.len()..).filter(|n| !n.is_empty()) else {
            continue;
        };
        let Some(st) = lstat(found.value, &mut b.target) else {
            continue; // removed by the worker
        };
        // Listed already from the real stream.
        if fd >= 0 && exists_in(fd, name, &mut b.base) {
            continue;
        }
        l.serial += 1;
        fill(&mut l.entry, name, &st, i64::MAX - l.serial);
        sys::set_errno(entry_errno);
        return &mut l.entry;
    }
}

/// `readdir_r`/`readdir64_r` on a merged stream: `next`, copied into the
/// caller's entry. `None` for a stream without a slot (the caller uses the
/// real function).
///
/// # Safety
/// The program's arguments to readdir_r.
pub unsafe fn next_r(
    dir: *mut DIR,
    entry: *mut dirent64,
    result: *mut *mut dirent64,
    real_readdir64: usize,
) -> Option<c_int> {
    slot_of(dir)?;
    if real_readdir64 == 0 || entry.is_null() || result.is_null() {
        return None;
    }
    // SAFETY: libc's readdir64.
    let real: unsafe extern "C" fn(*mut DIR) -> *mut dirent64 =
        unsafe { core::mem::transmute(real_readdir64) };
    let errno = sys::ErrnoGuard::save();
    sys::set_errno(0);
    // SAFETY: the program's stream.
    let e = unsafe { next(dir, |d| real(d)) };
    if e.is_null() {
        let err = sys::errno();
        // SAFETY: result is the program's out-pointer.
        unsafe { *result = core::ptr::null_mut() };
        return Some(if err != errno.value() { err } else { 0 });
    }
    // SAFETY: both are dirent64s; the program's entry has room for one.
    unsafe {
        let reclen = ((*e).d_reclen as usize).min(core::mem::size_of::<dirent64>());
        core::ptr::copy_nonoverlapping(e as *const u8, entry as *mut u8, reclen);
        *result = entry;
    }
    Some(0)
}

/// # Safety
/// `e` is a dirent64 from libc or this module.
unsafe fn name_of<'a>(e: *const dirent64) -> &'a [u8] {
    // SAFETY: d_name is NUL-terminated within the entry.
    unsafe { sys::c_bytes((*e).d_name.as_ptr(), 256) }
}

/// `<P>/<name>` (the node key is `P/`) into `out`.
fn join<'a>(node: &[u8], name: &[u8], out: &'a mut [u8]) -> Option<&'a [u8]> {
    let n = node.len() + name.len();
    if n >= out.len() || node.is_empty() {
        return None;
    }
    out[..node.len()].copy_from_slice(node);
    out[node.len()..n].copy_from_slice(name);
    Some(&out[..n])
}

fn lstat(path: &[u8], buf: &mut [u8]) -> Option<libc::stat> {
    let p = sys::c_path(path, buf)?;
    // SAFETY: NUL-terminated by c_path.
    unsafe { sys::stat(p, libc::AT_SYMLINK_NOFOLLOW) }
}

fn exists_in(fd: c_int, name: &[u8], buf: &mut [u8]) -> bool {
    let Some(p) = sys::c_path(name, buf) else {
        return false;
    };
    // SAFETY: zeroed stat is a valid out-parameter; p is NUL-terminated.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: raw newfstatat on the stream's descriptor (not the hooked
    // fstatat): only fills `st`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            fd,
            p,
            &mut st as *mut libc::stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    r == 0
}

fn fill(entry: &mut dirent64, name: &[u8], st: &libc::stat, off: i64) {
    let n = name.len().min(entry.d_name.len() - 1);
    for (d, &c) in entry.d_name.iter_mut().zip(&name[..n]) {
        *d = c as libc::c_char;
    }
    entry.d_name[n] = 0;
    entry.d_ino = st.st_ino;
    entry.d_off = off;
    let header = core::mem::offset_of!(dirent64, d_name);
    entry.d_reclen = ((header + n + 1).next_multiple_of(8)) as u16;
    entry.d_type = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => libc::DT_REG,
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFLNK => libc::DT_LNK,
        libc::S_IFIFO => libc::DT_FIFO,
        libc::S_IFSOCK => libc::DT_SOCK,
        libc::S_IFCHR => libc::DT_CHR,
        libc::S_IFBLK => libc::DT_BLK,
        _ => libc::DT_UNKNOWN,
    };
}

// ---- renaming a shared directory ---------------------------------------------

/// After a `rename`, `renameat` or `renameat2` in a redirecting worker: a
/// shared directory is not moved, and the program gets `EXDEV`, as from
/// overlayfs, which does not move a lower directory either. `mv` and
/// Python's `shutil.move` then copy the tree (each file redirected) and
/// remove the source (hidden from the worker): the bare result, as the
/// worker sees it. Two shapes reach here: the redirected rename failed with
/// `ENOENT` (the worker has no copy of the directory), or it moved only the
/// worker's copies while the shared directory stays behind (undone, so no
/// half-moved tree is ever seen). Anything else passes on as it is.
///
/// # Safety
/// `source` and `dest` are the program's arguments of the rename.
#[inline(always)]
pub unsafe fn renamed(source: PathArg, dest: PathArg, r: c_int) -> c_int {
    let failed_enoent = r == -1 && sys::errno() == libc::ENOENT;
    if !(failed_enoent || r == 0 && crate::redirect::any_redirected()) {
        return r;
    }
    if !state::ready() || SAVED.get().action != ActionSetting::Redirect || state::worker().is_none()
    {
        return r;
    }
    // SAFETY: the caller's contract.
    if unsafe { shared_directory_left_behind(source, dest, r == 0) } {
        sys::set_errno(libc::EXDEV);
        return -1;
    }
    r
}

/// See [`renamed`]: true when the program must get `EXDEV` (after undoing
/// the worker-side move when `moved`).
#[cold]
#[inline(never)]
unsafe fn shared_directory_left_behind(source: PathArg, dest: PathArg, moved: bool) -> bool {
    let Some(_guard) = HookGuard::enter() else {
        return false;
    };
    let _errno = sys::ErrnoGuard::save();
    let Some(mut claimed) = crate::pool::claim() else {
        return false;
    };
    let b = claimed.block();
    // SAFETY: the kernel read the source path (no EFAULT).
    let Some(n) = (unsafe { absolute(source, &mut b.base, &mut b.abs) }) else {
        return false;
    };
    let src = &b.abs[..n];
    let shared_dir =
        lstat(src, &mut b.target).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    if !shared_dir {
        return false;
    }
    let src_target = crate::redirect::lookup(src);
    if !moved {
        return src_target.is_none();
    }
    // Moved inside the worker directory: complete when everything the
    // shared directory holds is the worker's (redirected, or removed).
    let Some(from) = src_target else {
        return false; // renamed in place: nothing shared stays behind
    };
    let Block {
        abs,
        abs2,
        base,
        target,
        target2,
        work,
        ..
    } = b;
    if !has_unredirected_entries(&abs[..n], work, target) {
        // The move stands: what was below the old name is now below the
        // new one, in the worker directory; the table learns the new names.
        // SAFETY: as above, for the destination.
        if let Some(m) = unsafe { absolute(dest, base, abs2) } {
            if let Some(to) = crate::redirect::lookup(&abs2[..m]) {
                if to.len() < target.len() {
                    target[..to.len()].copy_from_slice(to);
                    record_tree(abs2, m, target, to.len(), 0, work);
                }
            }
        }
        return false;
    }
    // SAFETY: as above, for the destination.
    let Some(m) = (unsafe { absolute(dest, base, abs2) }) else {
        return false;
    };
    let Some(to) = crate::redirect::lookup(&abs2[..m]) else {
        return false;
    };
    // Put the worker's copies back where they were.
    let (Some(to_c), Some(from_c)) = (sys::c_path(to, target), sys::c_path(from, target2)) else {
        return false;
    };
    // SAFETY: two NUL-terminated paths inside the worker directory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat,
            libc::AT_FDCWD,
            to_c,
            libc::AT_FDCWD,
            from_c,
        )
    };
    r == 0
}

/// Deepest level of a moved tree whose names the table learns.
const MOVED_TREE_DEPTH: usize = 16;

/// Records every entry below the worker's directory `target[..tlen]` as the
/// redirect of the same name below `orig[..olen]` (a directory moved inside
/// the worker directory). Directory entries are read into a temporary
/// mapping per level (no stack buffers), at most `MOVED_TREE_DEPTH` deep.
fn record_tree(
    orig: &mut [u8],
    olen: usize,
    target: &mut [u8],
    tlen: usize,
    depth: usize,
    work: &mut [u8],
) {
    const BUF: usize = 16384;
    if depth >= MOVED_TREE_DEPTH || tlen >= target.len() {
        return;
    }
    target[tlen] = 0;
    // SAFETY: NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            target.as_ptr().cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return;
    }
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let map = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            BUF,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        sys::close(fd);
        return;
    }
    // SAFETY: the mapping is ours, BUF bytes.
    let buf = unsafe { core::slice::from_raw_parts_mut(map as *mut u8, BUF) };
    loop {
        // SAFETY: the kernel writes at most BUF bytes of entries.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), BUF) };
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 < n as usize {
            // SAFETY: a linux_dirent64 the kernel wrote at `off`: d_reclen
            // at byte 16, d_type at 18, the NUL-terminated name from 19.
            let (reclen, kind, name) = unsafe {
                let e = buf.as_ptr().add(off);
                (
                    (e.add(16) as *const u16).read_unaligned() as usize,
                    *e.add(18),
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
            let (o, t) = (olen + 1 + name.len(), tlen + 1 + name.len());
            if o >= orig.len() || t >= target.len() {
                continue;
            }
            orig[olen] = b'/';
            orig[olen + 1..o].copy_from_slice(name);
            target[tlen] = b'/';
            target[tlen + 1..t].copy_from_slice(name);
            crate::redirect::record(&orig[..o], &target[..t], work);
            if kind == libc::DT_DIR {
                record_tree(orig, o, target, t, depth + 1, work);
            }
        }
    }
    // SAFETY: our own mapping, no longer referenced.
    unsafe { libc::munmap(map, BUF) };
    sys::close(fd);
}

/// Whether the shared directory `dir` holds an entry the worker's table
/// does not cover (so the worker's copy of the directory is not all of it).
/// `buf` receives directory entries, `path` the entries' paths.
fn has_unredirected_entries(dir: &[u8], buf: &mut [u8], path: &mut [u8]) -> bool {
    let Some(c) = sys::c_path(dir, path) else {
        return true;
    };
    // SAFETY: NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            c,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return true;
    }
    let mut found = false;
    'read: loop {
        // SAFETY: the kernel writes at most buf.len() bytes of entries.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            found |= n < 0;
            break;
        }
        let mut off = 0usize;
        while off + 19 < n as usize {
            // SAFETY: a linux_dirent64 the kernel wrote at `off`: d_reclen
            // at byte 16, the NUL-terminated name from byte 19.
            let (reclen, name) = unsafe {
                let e = buf.as_ptr().add(off);
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
            let covered = dir.len() + 1 + name.len() < path.len() && {
                path[dir.len()] = b'/';
                path[dir.len() + 1..dir.len() + 1 + name.len()].copy_from_slice(name);
                crate::redirect::lookup(&path[..dir.len() + 1 + name.len()]).is_some()
            };
            if !covered {
                found = true;
                break 'read;
            }
        }
    }
    sys::close(fd);
    found
}

/// The absolute path of a path argument, into `out` (`base` is scratch).
///
/// # Safety
/// `arg.path` is a path the kernel has read (the call did not fail with
/// EFAULT).
unsafe fn absolute(arg: PathArg, base: &mut [u8], out: &mut [u8]) -> Option<usize> {
    if arg.path.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    let given = unsafe { sys::path_bytes(arg.path, MAX_ABS) };
    let base = if given.first() == Some(&b'/') {
        None
    } else if arg.dirfd == libc::AT_FDCWD {
        let n = sys::getcwd_raw(base)?;
        Some(&base[..n])
    } else {
        let n = sys::fd_path(arg.dirfd, base)?;
        Some(&base[..n])
    };
    mpaudit_core::path::absolutize(given, base, out)
}
