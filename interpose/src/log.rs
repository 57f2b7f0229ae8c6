//! The per-process event log: a file appended through shared memory windows.
//!
//! Why this shape:
//! - Durability: bytes copied into a `MAP_SHARED` file mapping are in the page
//!   cache the moment the copy ends, so `SIGKILL`, `abort` and `_exit` lose
//!   nothing, with no system call per event.
//! - Concurrency without locks: each event reserves its byte range with one
//!   `fetch_add` on the file offset; threads never wait for each other.
//! - No SIGBUS: a range is only written after `fallocate` has backed it
//!   (fallocate never shrinks a file, so concurrent growers cannot undo each
//!   other, as racing `ftruncate`s could).
//! - Bounded address space: at most `SLOTS` windows of `WINDOW` bytes are
//!   mapped; a window is replaced only when nobody is writing into it.
//! - Anything that cannot take the fast path (an event straddling two
//!   windows, a busy slot, a filesystem without fallocate or mmap) is written
//!   with `pwrite` at its reserved offset: slower, never lost.

use crate::sys;
use mpaudit_core::event::Encode;
use mpaudit_core::json::{Counter, Sink, SliceSink};
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

const WINDOW: u64 = 1 << 20;
const SLOTS: usize = 4;
/// The file grows in chunks this size; a crash leaves at most one chunk of NULs.
const CHUNK: u64 = 64 << 10;
/// Slot tag bit: being replaced.
const BUSY: u64 = 1 << 63;

struct Slot {
    /// window index + 1 (0 = empty), or BUSY while being replaced.
    tag: AtomicU64,
    base: AtomicUsize,
    users: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    tag: AtomicU64::new(0),
    base: AtomicUsize::new(0),
    users: AtomicU32::new(0),
};
static SLOT: [Slot; SLOTS] = [EMPTY_SLOT; SLOTS];
static FD: AtomicI32 = AtomicI32::new(-1);
static OFFSET: AtomicU64 = AtomicU64::new(0);
static BACKED: AtomicU64 = AtomicU64::new(0);
/// Set when fallocate or mmap are not supported where the log lives.
static PWRITE_ONLY: AtomicBool = AtomicBool::new(false);

/// Starts logging into the already opened file `fd` (owned from now on).
pub fn start(fd: i32) {
    OFFSET.store(0, SeqCst);
    BACKED.store(0, SeqCst);
    PWRITE_ONLY.store(false, SeqCst);
    FD.store(fd, SeqCst);
}

pub fn enabled() -> bool {
    FD.load(Relaxed) >= 0
}

/// In a freshly forked child: the windows and descriptor are the parent's
/// log; drop them without touching the parent's file. The child is
/// single-threaded here, so plain resets are safe.
pub fn forget_after_fork() {
    for s in SLOT.iter() {
        let base = s.base.swap(0, SeqCst);
        if base != 0 {
            // SAFETY: unmapping our own window in the child's address space.
            unsafe { libc::munmap(base as *mut libc::c_void, WINDOW as usize) };
        }
        s.tag.store(0, SeqCst);
        s.users.store(0, SeqCst);
    }
    let fd = FD.swap(-1, SeqCst);
    if fd >= 0 {
        sys::close(fd);
    }
}

/// Appends one event produced by `encode`.
///
/// Usually encoded once, into this thread's staging buffer, then copied
/// into the log with one `memcpy`. When the buffer is in use (a signal
/// handler logging while this thread logs) or the event does not fit, the
/// event is encoded twice instead: once to size it, once into the log.
pub fn append<E: Encode>(event: &E) {
    let fd = FD.load(Relaxed);
    if fd < 0 {
        return;
    }
    let staged = STAGE_BUSY.try_with(|b| !b.replace(true)).unwrap_or(false);
    if staged {
        let done = STAGE
            .try_with(|cell| {
                // SAFETY: STAGE_BUSY makes this the thread's only user.
                let buf = unsafe { &mut *cell.get() };
                let mut sink = StageSink { buf, len: 0 };
                event.encode(&mut sink);
                if sink.len > STAGE_SIZE {
                    return false;
                }
                write_reserved(fd, &Staged(&sink.buf[..sink.len]));
                true
            })
            .unwrap_or(false);
        let _ = STAGE_BUSY.try_with(|b| b.set(false));
        if done {
            return;
        }
    }
    write_reserved(fd, event);
}

/// An event already encoded in the staging buffer.
struct Staged<'a>(&'a [u8]);

impl Encode for Staged<'_> {
    fn encode<S: Sink + ?Sized>(&self, s: &mut S) {
        s.put(self.0)
    }
}

/// Sizes the event, reserves its bytes and writes it: through the mapping
/// when it can, else with pwrite.
fn write_reserved<E: Encode>(fd: i32, event: &E) {
    let mut counter = Counter::default();
    event.encode(&mut counter);
    let len = counter.0 as u64;
    let off = OFFSET.fetch_add(len, Relaxed);
    if !PWRITE_ONLY.load(Relaxed)
        && ensure_backed(fd, off + len)
        && write_mapped(fd, off, len, event)
    {
        return;
    }
    let mut sink = PwriteSink {
        fd,
        off,
        buf: [0; 512],
        n: 0,
    };
    event.encode(&mut sink);
    sink.flush();
}

/// Events up to this size (every read and most writes) are encoded once.
const STAGE_SIZE: usize = 4096;

thread_local! {
    static STAGE_BUSY: Cell<bool> = const { Cell::new(false) };
    static STAGE: UnsafeCell<[u8; STAGE_SIZE]> = const { UnsafeCell::new([0; STAGE_SIZE]) };
}

/// Fills the staging buffer; past its end only counts, so an oversized
/// event is detected (`len > STAGE_SIZE`) and re-encoded the slow way.
struct StageSink<'a> {
    buf: &'a mut [u8; STAGE_SIZE],
    len: usize,
}

impl Sink for StageSink<'_> {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if end <= STAGE_SIZE {
            self.buf[self.len..end].copy_from_slice(bytes);
        }
        self.len = end;
    }
}

/// Makes sure the file has blocks up to `end`. On failure, switches the
/// process to pwrite-only (pwrite extends the file itself).
///
/// Only the new range `[backed, want)` is allocated: asking for `[0, want)`
/// each time makes the kernel walk every page already allocated (on tmpfs
/// that made logging quadratic in the log's size). `BACKED` means "every
/// byte below is backed": a thread that read `backed` and then allocated
/// `[backed, want)` may raise it to `want`, whatever other threads do.
fn ensure_backed(fd: i32, end: u64) -> bool {
    let backed = BACKED.load(Acquire);
    if end <= backed {
        return true;
    }
    let want = end.div_ceil(CHUNK) * CHUNK;
    if sys::fallocate(fd, backed, want - backed) != 0 {
        PWRITE_ONLY.store(true, Relaxed);
        return false;
    }
    BACKED.fetch_max(want, AcqRel);
    true
}

fn write_mapped<E: Encode>(fd: i32, off: u64, len: u64, event: &E) -> bool {
    let window = off / WINDOW;
    if (off + len - 1) / WINDOW != window || len == 0 {
        return false;
    }
    let slot = &SLOT[(window % SLOTS as u64) as usize];
    let want = window + 1;
    slot.users.fetch_add(1, SeqCst);
    let mut tag = slot.tag.load(SeqCst);
    if tag != want {
        slot.users.fetch_sub(1, SeqCst);
        // An older window (or none) sits here: try to replace it. A newer
        // window or a replacement under way means we take the slow path.
        if tag & BUSY != 0 || tag > want || !replace_window(fd, slot, tag, window) {
            return false;
        }
        slot.users.fetch_add(1, SeqCst);
        tag = slot.tag.load(SeqCst);
        if tag != want {
            slot.users.fetch_sub(1, SeqCst);
            return false;
        }
    }
    let base = slot.base.load(Acquire);
    // SAFETY: the window [window*WINDOW, +WINDOW) is mapped at base while
    // users > 0 and tag == want (replace_window only unmaps at users == 0),
    // and [off, off+len) is backed by the file, so the pages cannot fault.
    let region = unsafe {
        core::slice::from_raw_parts_mut((base + (off % WINDOW) as usize) as *mut u8, len as usize)
    };
    let mut sink = SliceSink::new(region);
    event.encode(&mut sink);
    slot.users.fetch_sub(1, SeqCst);
    true
}

/// Maps `window` into `slot` in place of the window tagged `old`. Gives up
/// (returns false) when another thread won the slot or someone still writes
/// into the old window; the caller then uses pwrite.
fn replace_window(fd: i32, slot: &Slot, old: u64, window: u64) -> bool {
    if slot
        .tag
        .compare_exchange(old, BUSY, SeqCst, SeqCst)
        .is_err()
    {
        return false;
    }
    // Writers increment users before reading the tag (both SeqCst), so a
    // writer that saw the old tag is counted here.
    if slot.users.load(SeqCst) != 0 {
        slot.tag.store(old, SeqCst);
        return false;
    }
    let old_base = slot.base.swap(0, SeqCst);
    if old_base != 0 {
        // SAFETY: no writer uses the old window (users == 0, tag BUSY).
        unsafe { libc::munmap(old_base as *mut libc::c_void, WINDOW as usize) };
    }
    // SAFETY: a fresh shared mapping of our own log file.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            WINDOW as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            (window * WINDOW) as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        PWRITE_ONLY.store(true, Relaxed);
        slot.tag.store(0, SeqCst);
        return false;
    }
    slot.base.store(p as usize, Release);
    slot.tag.store(window + 1, SeqCst);
    true
}

/// Streams an event to its reserved offset through a small stack buffer.
struct PwriteSink {
    fd: i32,
    off: u64,
    buf: [u8; 512],
    n: usize,
}

impl PwriteSink {
    fn flush(&mut self) {
        if self.n > 0 {
            sys::pwrite_all(self.fd, &self.buf[..self.n], self.off);
            self.off += self.n as u64;
            self.n = 0;
        }
    }
}

impl Sink for PwriteSink {
    fn put(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.n == self.buf.len() {
                self.flush();
            }
            let k = bytes.len().min(self.buf.len() - self.n);
            self.buf[self.n..self.n + k].copy_from_slice(&bytes[..k]);
            self.n += k;
            bytes = &bytes[k..];
        }
    }
}
