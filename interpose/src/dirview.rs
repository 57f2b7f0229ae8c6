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
//! `getdents64` called by the program (the libc wrapper or
//! `syscall(SYS_getdents64)`) on a descriptor of such a directory gets the
//! same view ([`getdents`]): the kernel's records, filtered in place, then
//! the worker's own entries, per descriptor (a fixed table indexed by the
//! descriptor number). glibc's own readers (`scandir`, `glob`, `nftw`)
//! are in listings.rs.
//!
//! Not emulated: `telldir`/`seekdir` positions inside the worker's own
//! entries (a `seekdir` restarts them after the shared ones), and an
//! `lseek` of a descriptor into them (its own entries restart once the
//! kernel lists shared ones again); more than `STREAMS` merged streams open
//! at once (the extra ones list the shared directory only); `getdents64`
//! on descriptors numbered `FD_VIEWS` or more (shared entries filtered,
//! the worker's own not added).
//!
//! Renaming a shared directory copies it up into the worker (see [`renamed`]).

use crate::audit::PathArg;
use crate::guard::HookGuard;
use crate::pool::Block;
use crate::redirect::TABLE;
use crate::state::{self, SAVED};
use crate::sys;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
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
    cursor: Own,
    entry: dirent64,
}

/// Where a listing of the worker's own entries of a directory is: its
/// node's children lists in the table, one per segment.
#[derive(Clone, Copy)]
struct Own {
    /// The segment whose children list is being walked.
    seg: usize,
    seg_started: bool,
    /// Next entry id + 1 in that list (0: the list ended).
    link: u64,
    /// Synthesised entries are numbered past any real offset.
    serial: i64,
}

impl Own {
    const START: Own = Own {
        seg: 0,
        seg_started: false,
        link: 0,
        serial: 0,
    };
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
        cursor: Own::START,
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
    l.cursor = Own::START;
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
    let own = next_own(&mut l.cursor, node, fd, &mut b.target, &mut b.base);
    sys::set_errno(entry_errno);
    match own {
        Some((name, st, off)) => {
            fill(&mut l.entry, name, &st, off);
            &mut l.entry
        }
        None => core::ptr::null_mut(),
    }
}

/// The next of the worker's own entries below `node` that the directory
/// `fd` does not list itself (a name the shared directory lacks, whose
/// redirect target exists): its name, the target's `lstat` and the entry's
/// offset. `target` and `scratch` are scratch.
fn next_own(
    c: &mut Own,
    node: &[u8],
    fd: c_int,
    target: &mut [u8],
    scratch: &mut [u8],
) -> Option<(&'static [u8], libc::stat, i64)> {
    loop {
        if c.link == 0 {
            if c.seg_started {
                c.seg += 1;
                c.seg_started = false;
            }
            if c.seg >= TABLE.segments() {
                return None;
            }
            c.link = TABLE.children(c.seg, node);
            c.seg_started = true;
            continue;
        }
        let Some((found, after)) = TABLE.entry(c.link - 1) else {
            c.link = 0;
            continue;
        };
        c.link = after;
        // The first entry of this key only (a key may be in two segments).
        if TABLE.find(found.key).map(|f| f.id) != Some(found.id) {
            continue;
        }
        let Some(name) = found.key.get(node.len()..).filter(|n| !n.is_empty()) else {
            continue;
        };
        let Some(st) = lstat(found.value, target) else {
            continue; // removed by the worker
        };
        // Listed already from the real stream.
        if fd >= 0 && exists_in(fd, name, scratch) {
            continue;
        }
        c.serial += 1;
        return Some((name, st, i64::MAX - c.serial));
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

// ---- getdents64 called by the program ----------------------------------------

/// Descriptors below this number get the worker's own entries appended to
/// a merged `getdents64` (a cursor each, indexed by the number).
const FD_VIEWS: usize = 1024;

struct FdView {
    /// Held while one call uses the cursor (two threads reading one
    /// descriptor at once: the second gets the shared entries only).
    busy: AtomicBool,
    cursor: UnsafeCell<FdCursor>,
}

#[derive(Clone, Copy)]
struct FdCursor {
    /// The node the cursor lists (a reused descriptor number starts over).
    node_ptr: usize,
    node_len: usize,
    own: Own,
}

struct FdViews([FdView; FD_VIEWS]);
// SAFETY: a cursor is touched only by the call that set its `busy` flag.
unsafe impl Sync for FdViews {}

#[allow(clippy::declare_interior_mutable_const)]
const FD_VIEW_FREE: FdView = FdView {
    busy: AtomicBool::new(false),
    cursor: UnsafeCell::new(FdCursor {
        node_ptr: 0,
        node_len: 0,
        own: Own::START,
    }),
};
static FD_VIEW: FdViews = FdViews([FD_VIEW_FREE; FD_VIEWS]);

/// `getdents64(fd, buf, count)` (the libc wrapper, or the system call
/// through `syscall`) on a directory with redirected children: the kernel's
/// records with each redirected name shown as the worker's copy (`d_ino`,
/// `d_type`) and each removed one taken out, then, once the kernel has no
/// more, the worker's own entries, as many whole records as fit (`EINVAL`
/// when not even one does, as the kernel says). A call whose kernel
/// records were all removed reads on, so 0 still means the end. The
/// worker's entries restart whenever the kernel lists entries again (a
/// new descriptor, an `lseek` back). `real` makes the real call.
///
/// # Safety
/// The program's arguments.
pub unsafe fn getdents(fd: c_int, buf: *mut u8, count: usize, real: impl Fn() -> isize) -> isize {
    if buf.is_null() || !state::ready() || !crate::redirect::any_redirected() {
        return real();
    }
    let Some(_guard) = HookGuard::enter() else {
        return real();
    };
    let Some(mut claimed) = crate::pool::claim() else {
        return real();
    };
    let Block {
        abs,
        abs2,
        base,
        target,
        work,
        ..
    } = claimed.block();
    let entry_errno = sys::errno();
    let node = node_key(fd, abs, abs2).and_then(|n| TABLE.find(&abs[..n]));
    sys::set_errno(entry_errno);
    let Some(node) = node.map(|f| f.key) else {
        return real();
    };
    let view = usize::try_from(fd)
        .ok()
        .and_then(|i| FD_VIEW.0.get(i))
        .filter(|v| !v.busy.swap(true, Acquire));
    let mut untracked = FdCursor {
        node_ptr: 0,
        node_len: 0,
        own: Own::START,
    };
    let cursor = match view {
        // SAFETY: ours since the swap above.
        Some(v) => unsafe { &mut *v.cursor.get() },
        None => &mut untracked,
    };
    if (cursor.node_ptr, cursor.node_len) != (node.as_ptr() as usize, node.len()) {
        *cursor = FdCursor {
            node_ptr: node.as_ptr() as usize,
            node_len: node.len(),
            own: Own::START,
        };
    }
    let r = loop {
        let n = real();
        if n < 0 {
            break n; // as the kernel said
        }
        if n > 0 {
            cursor.own = Own::START;
            // SAFETY: the kernel just wrote n bytes of records there.
            let records = unsafe { core::slice::from_raw_parts_mut(buf, n as usize) };
            let kept = merge_records(records, node, abs, target);
            sys::set_errno(entry_errno);
            if kept > 0 {
                break kept as isize;
            }
            continue;
        }
        if view.is_none() {
            break 0;
        }
        let room = count.min(work.len());
        break own_records(
            cursor,
            node,
            fd,
            buf,
            &mut work[..room],
            target,
            base,
            entry_errno,
        );
    };
    if let Some(v) = view {
        v.busy.store(false, Release);
    }
    r
}

/// Rewrites the kernel's records in place: redirected names get the
/// worker's copy's inode and type, removed ones are dropped. The length
/// kept.
fn merge_records(records: &mut [u8], node: &[u8], key: &mut [u8], scratch: &mut [u8]) -> usize {
    let (mut read, mut kept) = (0, 0);
    while let Some(r) = Record::at(records, read) {
        let len = r.len;
        let keep = if r.name == b"." || r.name == b".." {
            true
        } else {
            match join(node, r.name, key).and_then(crate::redirect::lookup) {
                None => true,
                Some(t) => match lstat(t, scratch) {
                    Some(st) => {
                        records[read..read + 8].copy_from_slice(&st.st_ino.to_ne_bytes());
                        records[read + 18] = d_type(&st);
                        true
                    }
                    None => false, // removed by the worker
                },
            }
        };
        if keep {
            records.copy_within(read..read + len, kept);
            kept += len;
        }
        read += len;
    }
    kept
}

/// The worker's own entries after the kernel's, as records, copied out to
/// the program's `buf` (through the kernel: a bad buffer fails with
/// `EFAULT` as the real call would, never a fault of ours).
#[allow(clippy::too_many_arguments)]
fn own_records(
    cursor: &mut FdCursor,
    node: &[u8],
    fd: c_int,
    buf: *mut u8,
    out: &mut [u8],
    target: &mut [u8],
    scratch: &mut [u8],
    entry_errno: c_int,
) -> isize {
    let start = cursor.own;
    let (mut used, mut full) = (0, false);
    loop {
        let before = cursor.own;
        let Some((name, st, off)) = next_own(&mut cursor.own, node, fd, target, scratch) else {
            break;
        };
        match Record::put(&mut out[used..], st.st_ino, off, d_type(&st), name) {
            Some(n) => used += n,
            None => {
                cursor.own = before;
                full = true;
                break;
            }
        }
    }
    if used == 0 {
        if full {
            sys::set_errno(libc::EINVAL);
            return -1;
        }
        sys::set_errno(entry_errno);
        return 0;
    }
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: used,
    };
    let remote = libc::iovec {
        iov_base: buf.cast(),
        iov_len: used,
    };
    // SAFETY: the kernel copies `used` bytes of ours to the program's
    // buffer, or fails with EFAULT.
    let r = unsafe {
        libc::syscall(
            libc::SYS_process_vm_writev,
            sys::getpid(),
            &local as *const libc::iovec,
            1,
            &remote as *const libc::iovec,
            1,
            0,
        )
    };
    if r != used as libc::c_long {
        cursor.own = start;
        sys::set_errno(libc::EFAULT);
        return -1;
    }
    sys::set_errno(entry_errno);
    used as isize
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
    // SAFETY: NUL-terminated by c_path; the raw call on the stream's
    // descriptor (not the hooked fstatat).
    unsafe { sys::stat_at(fd, p, libc::AT_SYMLINK_NOFOLLOW) }.is_some()
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
    entry.d_type = d_type(st);
}

fn d_type(st: &libc::stat) -> u8 {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => libc::DT_REG,
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFLNK => libc::DT_LNK,
        libc::S_IFIFO => libc::DT_FIFO,
        libc::S_IFSOCK => libc::DT_SOCK,
        libc::S_IFCHR => libc::DT_CHR,
        libc::S_IFBLK => libc::DT_BLK,
        _ => libc::DT_UNKNOWN,
    }
}

// ---- renaming a shared directory ---------------------------------------------

/// After a `rename`, `renameat` or `renameat2` in a redirecting worker whose
/// source is a shared directory: the redirected call moved only the
/// worker's copy of it (made empty before the call when the worker had
/// none, redirect.rs), so what the shared directory holds is copied up into
/// the moved copy (each file redirected, the old names hidden), and the
/// table learns every name below the new one. With `RENAME_EXCHANGE` both
/// sides are completed so. The worker then sees the bare result. Costs a
/// copy of the shared tree (bare: one system call). A call that failed
/// (the kernel's answer in the view, precheck.rs) changes nothing.
///
/// # Safety
/// `source` and `dest` are the program's arguments of the rename.
#[inline(always)]
pub unsafe fn renamed(source: PathArg, dest: PathArg, flags: libc::c_uint, r: c_int) -> c_int {
    if r != 0 || !crate::redirect::any_redirected() {
        return r;
    }
    if !state::ready() || SAVED.get().action != ActionSetting::Redirect || state::worker().is_none()
    {
        return r;
    }
    // SAFETY: the caller's contract.
    unsafe { complete_directory_rename(source, dest, flags & libc::RENAME_EXCHANGE != 0) };
    r
}

/// See [`renamed`].
#[cold]
#[inline(never)]
unsafe fn complete_directory_rename(source: PathArg, dest: PathArg, exchange: bool) {
    let Some(_guard) = HookGuard::enter() else {
        return;
    };
    let _errno = sys::ErrnoGuard::save();
    let Some(mut claimed) = crate::pool::claim() else {
        return;
    };
    let Block {
        abs,
        abs2,
        base,
        target,
        target2,
        work,
        ..
    } = claimed.block();
    // SAFETY: the kernel read both paths (no EFAULT).
    let (Some(n), Some(m)) = (unsafe { absolute(source, base, abs) }, unsafe {
        absolute(dest, base, abs2)
    }) else {
        return;
    };
    // The names the table has: each parent as the view resolves it.
    let n = parent_in_view(abs, n, target, work);
    let m = parent_in_view(abs2, m, target, work);
    // Copy both sides up first: the names each records (its old entries
    // hidden) must not keep the other side's entries from being copied.
    copy_side(abs, n, &abs2[..m], target, target2, work);
    if exchange {
        copy_side(abs2, m, &abs[..n], target, target2, work);
    }
    // Descriptors of a moved shared directory follow it, as bare.
    follow_side(&abs[..n], &abs2[..m], target, work);
    if exchange {
        follow_side(&abs2[..m], &abs[..n], target, work);
    }
    // A moved directory, shared or the worker's own: the table learns the
    // names below its new place.
    record_side(abs2, m, target, work);
    if exchange {
        record_side(abs, n, target, work);
    }
}

/// `path[..len]` (absolute) with its parent as the worker's view resolves
/// it, through the symlinks the worker made or moved (`rename e/s k/s` with
/// the worker's `k -> d` moved the copy to `d/s`'s redirect); the leaf is
/// not followed. Unchanged when the parent does not resolve. `tmp`: MAX_ABS
/// bytes; `scratch`: view::SCRATCH bytes. Returns the new length.
fn parent_in_view(path: &mut [u8], len: usize, tmp: &mut [u8], scratch: &mut [u8]) -> usize {
    let Some(cut) = path[..len].iter().rposition(|&b| b == b'/') else {
        return len;
    };
    if cut == 0 || cut + 1 >= len || tmp.len() < MAX_ABS || scratch.len() < crate::view::SCRATCH {
        return len;
    }
    let leaf = len - cut - 1;
    let (parent, tmp) = (&path[..cut], &mut tmp[..MAX_ABS]);
    let m = match crate::view::resolve(parent, None, true, tmp, scratch) {
        Ok((m, _)) if tmp[..m] == *b"/" => 0,
        Ok((m, _)) => m,
        Err(_) => return len,
    };
    if tmp[..m] == path[..cut] || m + 1 + leaf > path.len() {
        return len;
    }
    path.copy_within(cut + 1..len, m + 1);
    path[..m].copy_from_slice(&tmp[..m]);
    path[m] = b'/';
    m + 1 + leaf
}

/// If `from[..flen]` is a shared directory whose worker copy was moved to
/// `to`'s target, copies its shared entries there (see [`copy_up`]).
fn copy_side(
    from: &mut [u8],
    flen: usize,
    to: &[u8],
    target: &mut [u8],
    scratch: &mut [u8],
    work: &mut [u8],
) {
    let shared_dir =
        lstat(&from[..flen], target).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    // Only a redirected move (both names in the table) left it behind.
    if !shared_dir || crate::redirect::lookup(&from[..flen]).is_none() {
        return;
    }
    let Some(t) = crate::redirect::lookup(to) else {
        return;
    };
    // The copy is held, and every entry made below a descriptor of it: a
    // symlink a thread of the program swaps into the worker's tree is
    // never followed (review 9).
    let Ok(copy) = crate::redirect::open_copy(t, target) else {
        return;
    };
    copy_up(from, flen, copy, target, scratch, work, 0);
    sys::close(copy);
}

/// If `from` is a shared directory whose worker copy is now `to`'s
/// target: this process's descriptors of the shared one are moved there
/// (redirect::follow_dir_move).
fn follow_side(from: &[u8], to: &[u8], scratch: &mut [u8], work: &mut [u8]) {
    let Some(st) = lstat(from, scratch).filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    else {
        return;
    };
    if crate::redirect::lookup(from).is_none() {
        return;
    }
    if let Some(t) = crate::redirect::lookup(to) {
        crate::redirect::follow_dir_move(st.st_dev, st.st_ino, t, work);
    }
}

/// Records every name below `key[..klen]`'s worker directory, if it is one
/// (see [`record_tree`]).
fn record_side(key: &mut [u8], klen: usize, target: &mut [u8], work: &mut [u8]) {
    let Some(t) = crate::redirect::lookup(&key[..klen]).filter(|t| t.len() < target.len()) else {
        return;
    };
    target[..t.len()].copy_from_slice(t);
    record_tree(key, klen, target, t.len(), 0, work);
}

/// Copies what the shared directory `src[..slen]` holds and the worker's
/// table does not cover into the worker's directory `copy` (a descriptor),
/// hiding each copied name under the old path (its redirect target, below
/// the moved-away copy, does not exist). Each file is copied as a copy-up
/// copies it (content, mode, times, extended attributes: redirect.rs
/// copy_original), as bare the moved inode keeps them. `buf` and `scratch`
/// (MAX_ABS + 1 bytes each) are scratch space; `work` records.
fn copy_up(
    src: &mut [u8],
    slen: usize,
    copy: c_int,
    buf: &mut [u8],
    scratch: &mut [u8],
    work: &mut [u8],
    depth: usize,
) {
    if depth >= MOVED_TREE_DEPTH || slen >= src.len() {
        return;
    }
    // Bare, the moved directory keeps its times: the entries added to its
    // copy change none (review 8 F1); a copy the shared directory's mode
    // made read-only still takes them (F2).
    crate::redirect::adding_unseen(copy, || {
        each_entry(&mut src[..], slen, |src, name, _| {
            copy_entry(src, slen, name, copy, buf, scratch, work, depth);
        })
    });
}

/// [`copy_up`] of the shared entry `name` of `src[..slen]`.
#[allow(clippy::too_many_arguments)]
fn copy_entry(
    src: &mut [u8],
    slen: usize,
    name: &[u8],
    copy: c_int,
    buf: &mut [u8],
    scratch: &mut [u8],
    work: &mut [u8],
    depth: usize,
) {
    let s = slen + 1 + name.len();
    if s >= src.len() || name.len() >= scratch.len() {
        return;
    }
    src[slen] = b'/';
    src[slen + 1..s].copy_from_slice(name);
    src[s] = 0;
    // SAFETY: NUL-terminated path.
    let st = unsafe { sys::stat(src.as_ptr().cast(), libc::AT_SYMLINK_NOFOLLOW) };
    let is_dir = st.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    if crate::redirect::lookup(&src[..s]).is_some() {
        // The worker's own version (moved along) or removed; but a shared
        // directory whose copy a metadata change made (`chmod d/s`) holds
        // none of the shared entries yet: they are added (its removed
        // names are in the table, so stay removed).
        if is_dir {
            if let Ok(sub) = crate::redirect::open_dir_below(copy, name, buf) {
                copy_up(src, s, sub, buf, scratch, work, depth + 1);
                sys::close(sub);
            }
        }
        return;
    }
    let Some(st) = st else {
        return;
    };
    let copied = if is_dir {
        // Exists already: the worker's copy has it (files of it moved
        // along), and keeps its own mode and times.
        match crate::redirect::mkdir_below(copy, name, st.st_mode & 0o7777, buf) {
            Ok(made) => {
                if let Ok(sub) = crate::redirect::open_dir_below(copy, name, buf) {
                    copy_up(src, s, sub, buf, scratch, work, depth + 1);
                    if made {
                        // A new copy: the shared directory's times.
                        crate::redirect::set_dir_times(sub, &mpaudit_core::times::of(&st));
                    }
                    sys::close(sub);
                }
                true
            }
            Err(_) => false,
        }
    } else {
        scratch[..name.len()].copy_from_slice(name);
        scratch[name.len()] = 0;
        let (link, _) = work.split_at_mut(MAX_ABS + 1);
        matches!(
            crate::redirect::copy_original(
                &src[..s],
                &st,
                crate::redirect::Seed::Content,
                copy,
                scratch.as_ptr().cast(),
                buf,
                link,
            ),
            Ok(crate::redirect::Seeded::File)
        )
    };
    if copied {
        let saved = SAVED.get();
        if let Some(t) = mpaudit_core::map::map_normal_to_worker(
            &src[..s],
            saved.job_dir.as_bytes(),
            saved.worker_dir.as_bytes(),
            &mut scratch[..MAX_ABS],
        ) {
            crate::redirect::record(&src[..s], &scratch[..t], work);
        }
    }
}

/// The one walker of directories this module reads itself: calls
/// `each(path, name, d_type)` for every entry but `.` and `..` of the
/// directory `path[..len]` (opened without following a final symlink),
/// read with raw `getdents64` into a temporary mapping (no stack buffers).
/// `path` is handed back for the callback to extend past `len`.
fn each_entry(path: &mut [u8], len: usize, mut each: impl FnMut(&mut [u8], &[u8], u8)) {
    const BUF: usize = 16384;
    if len >= path.len() {
        return;
    }
    path[len] = 0;
    // SAFETY: NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            path.as_ptr().cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return;
    }
    if let Some(map) = Scratch::new(BUF) {
        let buf = map.bytes();
        loop {
            // SAFETY: the kernel writes at most BUF bytes of entries.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), BUF) };
            if n <= 0 {
                break;
            }
            let mut off = 0;
            while let Some(r) = Record::at(&buf[..n as usize], off) {
                off += r.len;
                if r.name != b"." && r.name != b".." {
                    each(path, r.name, r.kind);
                }
            }
        }
    }
    sys::close(fd);
}

/// One `linux_dirent64` record in a buffer the kernel filled: `d_ino` at
/// byte 0, `d_off` at 8, `d_reclen` at 16, `d_type` at 18, the
/// NUL-terminated name from 19.
struct Record<'a> {
    len: usize,
    kind: u8,
    name: &'a [u8],
}

impl<'a> Record<'a> {
    const NAME: usize = 19;

    fn at(buf: &'a [u8], off: usize) -> Option<Record<'a>> {
        let head = buf.get(off..off + Self::NAME)?;
        let len = u16::from_ne_bytes([head[16], head[17]]) as usize;
        let rec = buf.get(off..off + len).filter(|_| len > Self::NAME)?;
        let name = &rec[Self::NAME..];
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
        Some(Record {
            len,
            kind: head[18],
            name,
        })
    }

    /// Writes a record for `name` at the start of `out`; its length, or
    /// `None` when it does not fit.
    fn put(out: &mut [u8], ino: u64, off: i64, kind: u8, name: &[u8]) -> Option<usize> {
        let len = (Self::NAME + name.len() + 1).next_multiple_of(8);
        let rec = out.get_mut(..len)?;
        rec.fill(0);
        rec[..8].copy_from_slice(&ino.to_ne_bytes());
        rec[8..16].copy_from_slice(&off.to_ne_bytes());
        rec[16..18].copy_from_slice(&(len as u16).to_ne_bytes());
        rec[18] = kind;
        rec[Self::NAME..Self::NAME + name.len()].copy_from_slice(name);
        Some(len)
    }
}

/// A private anonymous mapping for directory entries (no stack buffers).
struct Scratch(crate::sys::Mapping);

impl Scratch {
    fn new(len: usize) -> Option<Scratch> {
        crate::sys::Mapping::anonymous(len).map(Scratch)
    }
    #[allow(clippy::mut_from_ref)]
    fn bytes(&self) -> &mut [u8] {
        // SAFETY: our mapping of its size in bytes, used by one caller at
        // a time.
        unsafe { core::slice::from_raw_parts_mut(self.0.base(), self.0.size()) }
    }
}

/// Deepest level of a moved tree whose names the table learns.
const MOVED_TREE_DEPTH: usize = 16;

/// Records every entry below the worker's directory `target[..tlen]` as the
/// redirect of the same name below `orig[..olen]` (a directory moved inside
/// the worker directory), at most `MOVED_TREE_DEPTH` deep.
fn record_tree(
    orig: &mut [u8],
    olen: usize,
    target: &mut [u8],
    tlen: usize,
    depth: usize,
    work: &mut [u8],
) {
    if depth >= MOVED_TREE_DEPTH {
        return;
    }
    each_entry(target, tlen, |target, name, kind| {
        let (o, t) = (olen + 1 + name.len(), tlen + 1 + name.len());
        if o >= orig.len() || t >= target.len() {
            return;
        }
        orig[olen] = b'/';
        orig[olen + 1..o].copy_from_slice(name);
        target[tlen] = b'/';
        target[tlen + 1..t].copy_from_slice(name);
        crate::redirect::record(&orig[..o], &target[..t], work);
        if kind == libc::DT_DIR {
            record_tree(orig, o, target, t, depth + 1, work);
        }
    });
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
    let n = {
        let start = if given.first() == Some(&b'/') {
            None
        } else if arg.dirfd == libc::AT_FDCWD {
            let n = sys::getcwd_raw(base)?;
            let n = crate::guard::as_job_path(base, n);
            Some(&base[..n])
        } else {
            let n = sys::fd_path(arg.dirfd, base)?;
            Some(&base[..n])
        };
        mpaudit_core::path::absolutize(given, start, out)?
    };
    // Spelled as the redirect table has it: through /proc/self/cwd or
    // /proc/self/fd/N, and the job directory's other spellings (audit.rs).
    let n = crate::audit::follow_magic_link(n, base, out)?.len();
    Some(state::unalias_job_dir(out, n))
}
