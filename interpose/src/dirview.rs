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

use crate::guard::HookGuard;
use crate::redirect::TABLE;
use crate::state::{self, SAVED};
use crate::sys;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering::*};
use libc::{c_int, dirent64, DIR};
use mpaudit_core::path::MAX_ABS;

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
