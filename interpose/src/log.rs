//! The per-process event log: a file appended through shared memory windows.
//!
//! Why this shape:
//! - Durability: bytes copied into a `MAP_SHARED` file mapping are in the page
//!   cache the moment the copy ends, so `SIGKILL`, `abort` and `_exit` lose
//!   nothing, with no system call per event.
//! - No descriptor is held. Descriptor numbers are the program's: it may
//!   close them all, `dup2` over them or reuse them (bash's `exec 3>`), and
//!   a held descriptor shifts the numbers it gets and counts against its
//!   `RLIMIT_NOFILE`. The log is opened by path only to grow it, map a
//!   window or `pwrite`, checked to be the very file we created (dev/ino),
//!   and closed before returning; the windows need no descriptor.
//! - Concurrency without locks: each event reserves its byte range with a
//!   compare-and-swap on the file offset, below the backed size; threads
//!   never wait for each other.
//! - No SIGBUS, no SIGXFSZ: a range is only written through the mapping
//!   after `fallocate` has backed it (fallocate never shrinks a file, so
//!   concurrent growers cannot undo each other), and the file never grows
//!   past `RLIMIT_FSIZE`.
//! - When the log cannot grow (size limit, full disk, no descriptor, file
//!   gone), logging stops for this process image: later events are counted
//!   as dropped, stderr is told once, and a `log_stopped` record goes into a
//!   tail (`RESERVE`) that is always backed beyond what events may use, so
//!   that it and the `exit` event (with the count) always fit.
//! - Trim at exit: the exiting thread sets `FINAL`, then reads the offset
//!   and truncates the file to it. Writers reserve, then read `FINAL`
//!   (both SeqCst): a writer that saw it clear reserved below the truncation
//!   point and may use its mapping; one that saw it set uses `pwrite`,
//!   which extends the file. So nothing is ever written through a mapping
//!   beyond the file's end. A pwrite that may have come before the
//!   truncation is repeated once it is done (`TRIMMED`).
//! - Each process writes only its own log. A fork child drops the inherited
//!   windows unseen (munmap) and starts its own file; a fork we never see
//!   (raw `clone`) is noticed through a `MADV_WIPEONFORK` page whose marker
//!   the child finds zeroed (process.rs, `adopt_fork_child`).
//! - Bounded address space: at most `SLOTS` windows of `WINDOW` bytes are
//!   mapped; a window is replaced only when nobody is writing into it.
//! - Anything that cannot take the fast path (an event straddling two
//!   windows, a busy slot, a filesystem without fallocate or mmap) is written
//!   with `pwrite` at its reserved offset: slower, never lost.

use crate::sys;
use core::cell::UnsafeCell;
use libc::{c_int, c_long};
use mpaudit_core::event::{Encode, LogStopped, StopReason};
use mpaudit_core::json::{Counter, Sink, SliceSink};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

const WINDOW: u64 = 1 << 20;
const SLOTS: usize = 4;
/// The file grows by an eighth of its size, in this much at least (a killed
/// process leaves at most one growth of NULs) ...
const MIN_CHUNK: u64 = 64 << 10;
/// ... and at most this much.
const MAX_CHUNK: u64 = 1 << 20;
/// Backed beyond what events may use: room for the records that end a log
/// (`log_stopped` and `exit`, about 200 bytes each).
const RESERVE: u64 = 1024;
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

/// The log's absolute path, NUL-terminated. Written only by `create`, while
/// no other thread can log (load time, a fork child before it logs).
struct LogPath(UnsafeCell<[u8; PATH_SIZE]>);
const PATH_SIZE: usize = 4200;
// SAFETY: see LogPath: written only while single-threaded, read afterwards.
unsafe impl Sync for LogPath {}
static PATH: LogPath = LogPath(UnsafeCell::new([0; PATH_SIZE]));
/// The identity of the file we created: only that file is ever written.
static DEV: AtomicU64 = AtomicU64::new(0);
static INO: AtomicU64 = AtomicU64::new(0);

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Next free byte of the log. Every event writes it: alone on its cache
/// line, so that the flags every event reads are not invalidated with it.
static OFFSET: CacheLine<AtomicU64> = CacheLine(AtomicU64::new(0));

#[repr(align(64))]
struct CacheLine<T>(T);

impl<T> core::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
/// Bytes of the file that fallocate has backed: mapped writes stay below.
static BACKED: AtomicU64 = AtomicU64::new(0);
/// Bytes that may be reserved (the last `RESERVE` only by closing records):
/// `BACKED`, or in pwrite-only mode a bound kept within `RLIMIT_FSIZE`.
static CAPACITY: AtomicU64 = AtomicU64::new(0);
/// Set when fallocate or mmap are not supported where the log lives, and
/// once the log is trimmed.
static PWRITE_ONLY: AtomicBool = AtomicBool::new(false);
/// The log could not grow: only closing records are written now.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// The log was trimmed (exit, exec): no more mapped writes above the offset.
static FINAL: AtomicBool = AtomicBool::new(false);
/// The truncation that `FINAL` announces is done; and who does it.
static TRIMMED: AtomicBool = AtomicBool::new(false);
static TRIMMER: AtomicI32 = AtomicI32::new(0);
/// Events not logged by this process image.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// A private page with `MADV_WIPEONFORK`: holds `OWNED` in the process
/// whose log state this is; any fork child finds 0 there (0 = no page).
static OWNER_PAGE: AtomicUsize = AtomicUsize::new(0);
const OWNED: u64 = 1;
/// A fork child is setting up its own log.
const ADOPTING: u64 = 2;

fn owner_mark() -> Option<&'static AtomicU64> {
    let p = OWNER_PAGE.load(Relaxed);
    // SAFETY: a page of ours, mapped once and never unmapped.
    (p != 0).then(|| unsafe { &*(p as *const AtomicU64) })
}

/// Whether this process is a fork child still holding its parent's log
/// state (a fork nobody told us about). A plain load.
#[inline]
pub fn inherited() -> bool {
    owner_mark().is_some_and(|m| m.load(Relaxed) == 0)
}

/// Claims the log state for a fork child: true for the first caller (the
/// atfork handler, the `_Fork` hook or the first event, whichever comes
/// first), false when it is claimed already. Without the page (logging off,
/// or no `MADV_WIPEONFORK`) every caller is first.
pub fn claim_after_fork() -> bool {
    owner_mark().map_or(true, |m| {
        m.compare_exchange(0, ADOPTING, SeqCst, SeqCst).is_ok()
    })
}

/// The claimed state is this process's now.
pub fn mark_owned() {
    if let Some(m) = owner_mark() {
        m.store(OWNED, SeqCst);
    }
}

fn map_owner_page() {
    if OWNER_PAGE.load(Relaxed) != 0 {
        return;
    }
    // SAFETY: a fresh private anonymous page.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return;
    }
    // SAFETY: advising our own page.
    if unsafe { libc::madvise(p, 4096, libc::MADV_WIPEONFORK) } != 0 {
        // SAFETY: our own page, never published.
        unsafe { libc::munmap(p, 4096) };
        return;
    }
    OWNER_PAGE.store(p as usize, SeqCst);
}

/// Creates the log file at `path` (absolute; no NUL) and starts logging
/// into it. Returns `-errno` when the file cannot be created.
pub fn create(path: &[u8]) -> Result<(), c_int> {
    map_owner_page();
    mark_owned();
    if path.len() >= PATH_SIZE {
        return Err(libc::ENAMETOOLONG);
    }
    // SAFETY: single-threaded here (see LogPath); nobody reads PATH while
    // ENABLED is false.
    let buf = unsafe { &mut *PATH.0.get() };
    buf[..path.len()].copy_from_slice(path);
    buf[path.len()] = 0;
    // SAFETY: NUL-terminated above.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            buf.as_ptr().cast(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644,
        )
    };
    if fd < 0 {
        return Err(-fd);
    }
    let Some(st) = sys::fstat(fd) else {
        sys::close(fd);
        return Err(libc::EIO);
    };
    DEV.store(st.st_dev, SeqCst);
    INO.store(st.st_ino, SeqCst);
    for v in [&*OFFSET, &BACKED, &CAPACITY, &DROPPED] {
        v.store(0, SeqCst);
    }
    for f in [&PWRITE_ONLY, &STOPPED, &FINAL, &TRIMMED] {
        f.store(false, SeqCst);
    }
    // The first chunk, with the descriptor at hand (saves an open); a
    // failure is met again, and reported, by the first event.
    let first = MIN_CHUNK.min(sys::file_size_limit() & !4095);
    if first > RESERVE && sys::fallocate(fd, 0, first) == 0 {
        BACKED.store(first, SeqCst);
        CAPACITY.store(first, SeqCst);
        if let Some(base) = map_window(fd, 0) {
            SLOT[0].base.store(base, SeqCst);
            SLOT[0].tag.store(1, SeqCst);
        }
    }
    sys::close(fd);
    ENABLED.store(true, SeqCst);
    Ok(())
}

pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Events this process image could not log.
pub fn dropped() -> u64 {
    DROPPED.load(SeqCst)
}

/// In a fork child: the windows are the parent's log; drop them without
/// touching the parent's file. The child is single-threaded here, so
/// plain resets are safe.
pub fn forget_after_fork() {
    ENABLED.store(false, SeqCst);
    // The parent's threads copying events are not the child's: its execs
    // must not wait for them.
    IN_FLIGHT.store(0, SeqCst);
    for s in SLOT.iter() {
        let base = s.base.swap(0, SeqCst);
        if base != 0 {
            // SAFETY: unmapping our own window in the child's address space.
            unsafe { libc::munmap(base as *mut libc::c_void, WINDOW as usize) };
        }
        s.tag.store(0, SeqCst);
        s.users.store(0, SeqCst);
    }
}

/// Appends one event produced by `encode`.
///
/// Usually encoded once, into a staging buffer from the pool (pool.rs),
/// then copied into the log with one `memcpy`. When no buffer is free or
/// the event does not fit, the event is encoded twice instead: once to size
/// it, once into the log.
pub fn append<E: Encode>(event: &E) {
    if !ready_to_write() {
        return;
    }
    if let Some(mut stage) = crate::pool::claim_stage() {
        let mut sink = StageSink {
            buf: stage.buf(),
            len: 0,
        };
        event.encode(&mut sink);
        if sink.len <= STAGE_SIZE {
            count_dropped(write_reserved(&Staged(&sink.buf[..sink.len]), false));
            return;
        }
    }
    count_dropped(write_reserved(event, false));
}

fn count_dropped(written: bool) {
    if !written {
        DROPPED.fetch_add(1, SeqCst);
    }
}

/// Appends the record that closes the log (`exit`): it may use the
/// reserved tail, so it is written even after logging stopped.
pub fn append_closing<E: Encode>(event: &E) {
    if ready_to_write() {
        count_dropped(write_reserved(event, true));
    }
}

/// Logging is on and the log state is this process's (a fork child that
/// nobody told about its fork sets up its own log first).
#[inline]
fn ready_to_write() -> bool {
    if !enabled() {
        return false;
    }
    match owner_mark().map(|m| m.load(Relaxed)) {
        None | Some(OWNED) => true,
        Some(0) => {
            crate::process::adopt_fork_child();
            enabled()
        }
        // A signal handler interrupting the child's own setup: the state
        // is not ready to be written to.
        Some(_) => false,
    }
}

/// An event already encoded in the staging buffer.
struct Staged<'a>(&'a [u8]);

impl Encode for Staged<'_> {
    fn encode<S: Sink + ?Sized>(&self, s: &mut S) {
        s.put(self.0)
    }
}

/// Sizes the event, reserves its bytes and writes it: through the mapping
/// when it can, else with pwrite. `closing` records may use the tail.
/// Returns whether the event was written.
fn write_reserved<E: Encode>(event: &E, closing: bool) -> bool {
    let mut counter = Counter::default();
    event.encode(&mut counter);
    let len = counter.0 as u64;
    // Once the log is trimmed (exit, exec) events go by pwrite, which the
    // kill of an exec or exit_group can cut at a page boundary: such an
    // event gets a page to itself when it fits one (NULs before it).
    let whole_page = FINAL.load(SeqCst);
    let Some(off) = reserve(len, closing, whole_page) else {
        return false;
    };
    // Counted in flight before FINAL is read: an exec that sets FINAL and
    // then finds none in flight knows that no copy through the mapping is
    // under way or will start (both SeqCst).
    let in_flight = InFlight::enter();
    // Read after the reservation (see the module comment: trim at exit).
    let after_final = FINAL.load(SeqCst);
    if !after_final && !PWRITE_ONLY.load(Relaxed) && write_mapped(off, len, event) {
        return true;
    }
    drop(in_flight);
    let trimmed = TRIMMED.load(SeqCst);
    let mut r = write_at(off, len, event);
    if r.is_ok() && after_final && !trimmed && wait_for_trim() {
        // The truncation may have cut what we wrote: write it again (the
        // same bytes at the same offset), now that it is done.
        r = write_at(off, len, event);
    }
    match r {
        Ok(()) => true,
        Err((reason, errno)) => {
            stop(reason, errno);
            false
        }
    }
}

/// Events being copied through a mapping. An exec kills every other
/// thread where it stands: one killed halfway through copying its event
/// leaves a torn line, so exec waits for this to drain first
/// ([`wait_for_writers`]). Writers that find `FINAL` set use `pwrite`.
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);

struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Saturating: a copy a fork child's signal handler interrupted was
        // counted in the parent and reset in the child.
        let _ = IN_FLIGHT.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
    }
}

/// Before an exec (after [`finish`], which sets `FINAL`): waits, bounded,
/// until no thread is copying an event through a mapping, so that the exec
/// cannot tear a line; none starts afterwards. Spins with `sched_yield`
/// (async-signal-safe, no lock); gives up after a while (an exec from a
/// signal handler that interrupted this thread's own copy would wait for
/// itself), leaving at worst the torn line readers already skip. Writers
/// use `pwrite` from then on: an event within one page is written whole
/// or not at all when the exec kills its thread.
pub fn wait_for_writers() {
    for _ in 0..100_000 {
        if IN_FLIGHT.load(SeqCst) == 0 {
            return;
        }
        // SAFETY: no arguments.
        unsafe { libc::syscall(libc::SYS_sched_yield) };
    }
}

/// Waits, briefly, for the truncation at exit to be done: true once it
/// is. Not when this thread does it (a signal handler interrupting it);
/// and never for long, so a stuck exiting thread cannot block this one.
fn wait_for_trim() -> bool {
    if TRIMMER.load(SeqCst) == sys::gettid() {
        return false;
    }
    for _ in 0..100_000 {
        if TRIMMED.load(SeqCst) {
            return true;
        }
        // SAFETY: no arguments.
        unsafe { libc::syscall(libc::SYS_sched_yield) };
    }
    false
}

/// Reserves `len` bytes, growing the log when needed. `None`: the event
/// cannot be logged (logging stopped, or stops now). `whole_page`: an
/// event that fits in a page does not straddle two (it starts at the next
/// page when it would).
fn reserve(len: u64, closing: bool, whole_page: bool) -> Option<u64> {
    const PAGE: u64 = 4096;
    let tail = if closing { 0 } else { RESERVE };
    let mut off = OFFSET.load(Relaxed);
    loop {
        if !closing && STOPPED.load(Relaxed) {
            return None;
        }
        let start = if whole_page && len <= PAGE && off % PAGE + len > PAGE {
            off.next_multiple_of(PAGE)
        } else {
            off
        };
        let room = CAPACITY.load(Acquire).saturating_sub(tail);
        if start + len > room {
            if STOPPED.load(Relaxed) || !grow(start + len + tail) {
                return None;
            }
            off = OFFSET.load(Relaxed);
            continue;
        }
        match OFFSET.compare_exchange_weak(off, start + len, SeqCst, Relaxed) {
            Ok(_) => return Some(start),
            Err(now) => off = now,
        }
    }
}

/// How much the file grows past `backed` at a time.
fn chunk(backed: u64) -> u64 {
    (backed / 8).clamp(MIN_CHUNK, MAX_CHUNK) & !(MIN_CHUNK - 1)
}

/// Raises `CAPACITY` to at least `need`, within `RLIMIT_FSIZE`; on failure
/// stops logging and returns false. Several threads may grow at once:
/// each backs `[backed, want)` as it saw it, and `fetch_max` keeps the
/// largest ("every byte below is backed" holds whoever wins). Only the new
/// range is allocated: asking for `[0, want)` makes the kernel walk every
/// page already allocated (quadratic on tmpfs).
fn grow(need: u64) -> bool {
    let limit = sys::file_size_limit();
    if need > limit {
        stop(StopReason::FileSizeLimit, libc::EFBIG);
        return false;
    }
    let backed = BACKED.load(Acquire);
    let round = |to: u64| (need.div_ceil(to) * to).min(limit).max(need);
    if PWRITE_ONLY.load(SeqCst) {
        // pwrite extends the file itself: only the limit bounds it.
        CAPACITY.fetch_max(round(chunk(CAPACITY.load(Relaxed))), AcqRel);
        return true;
    }
    if need <= backed {
        CAPACITY.fetch_max(backed, AcqRel);
        return true;
    }
    let r = with_log(|fd| {
        let mut want = round(chunk(backed));
        let mut e = sys::fallocate(fd, backed, want - backed);
        if e == -(libc::ENOSPC as c_long) && round(4096) < want {
            // A nearly full disk may still hold what this event needs.
            want = round(4096);
            e = sys::fallocate(fd, backed, want - backed);
        }
        (e, want)
    });
    match r {
        Ok((0, want)) => {
            BACKED.fetch_max(want, AcqRel);
            CAPACITY.fetch_max(want, AcqRel);
            true
        }
        Ok((e, _)) if e == -(libc::EOPNOTSUPP as c_long) || e == -(libc::ENOSYS as c_long) => {
            PWRITE_ONLY.store(true, SeqCst);
            grow(need)
        }
        Ok((e, _)) => {
            let errno = -e as c_int;
            let reason = match errno {
                libc::ENOSPC | libc::EDQUOT => StopReason::NoSpace,
                libc::EFBIG => StopReason::FileSizeLimit,
                _ => StopReason::IoError,
            };
            stop(reason, errno);
            false
        }
        Err((reason, errno)) => {
            stop(reason, errno);
            false
        }
    }
}

/// Runs `f` on a descriptor of the log, opened by path for this one use
/// and closed before returning, if it is still the file we created.
/// errno is left as it was.
fn with_log<R>(f: impl FnOnce(c_int) -> R) -> Result<R, (StopReason, c_int)> {
    let _errno = sys::ErrnoGuard::save();
    // SAFETY: PATH is NUL-terminated and no longer written (see LogPath).
    let path = unsafe { (*PATH.0.get()).as_ptr() };
    // An open of a regular file is not interrupted, except under the
    // supervisor's filter (between an exec's hand-over and the exec): a
    // signal that comes before the supervisor took the call fails it with
    // EINTR when the program's handler has no SA_RESTART. Bounded.
    let mut fd = -libc::EINTR;
    for _ in 0..10_000 {
        // SAFETY: as above.
        fd = unsafe {
            sys::openat(
                libc::AT_FDCWD,
                path.cast(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY,
                0,
            )
        };
        if fd != -libc::EINTR {
            break;
        }
    }
    if fd < 0 {
        let reason = match -fd {
            libc::EMFILE | libc::ENFILE => StopReason::NoDescriptor,
            libc::ENOENT | libc::ENOTDIR | libc::ELOOP => StopReason::LogGone,
            _ => StopReason::IoError,
        };
        return Err((reason, -fd));
    }
    let ours = sys::fstat(fd)
        .is_some_and(|st| st.st_dev == DEV.load(Relaxed) && st.st_ino == INO.load(Relaxed));
    let r = ours.then(|| f(fd));
    sys::close(fd);
    r.ok_or((StopReason::LogGone, libc::ESTALE))
}

/// Stops logging (once): tells stderr and writes a `log_stopped` record
/// into the reserved tail.
fn stop(reason: StopReason, errno: c_int) {
    if STOPPED.swap(true, SeqCst) {
        return;
    }
    let _errno = sys::ErrnoGuard::save();
    tell_stderr(reason);
    write_reserved(
        &LogStopped {
            common: crate::audit::common(),
            reason,
            errno,
        },
        true,
    );
}

/// One line on stderr, gathered from its pieces (no path-sized buffer on
/// the stack: this may run in a signal handler on a small alternate stack).
fn tell_stderr(reason: StopReason) {
    let mut head = [0u8; 64];
    let mut s = SliceSink::new(&mut head);
    s.put(b"mpaudit: process ");
    mpaudit_core::json::put_i64(&mut s, crate::state::pid() as i64);
    s.put(b" stopped logging to ");
    let n = s.len;
    // SAFETY: PATH is NUL-terminated and no longer written.
    let path = unsafe { sys::c_bytes((*PATH.0.get()).as_ptr().cast(), PATH_SIZE) };
    let why: &[u8] = match reason {
        StopReason::FileSizeLimit => b": the file size limit (ulimit -f) is reached",
        StopReason::NoSpace => b": no space left on the device",
        StopReason::NoDescriptor => b": no file descriptor free (ulimit -n)",
        StopReason::LogGone => b": the log file was removed or replaced",
        StopReason::IoError => b": an I/O error",
    };
    let tail: &[u8] = b"; the audit of this process is incomplete\n";
    let pieces = [&head[..n], path, why, tail];
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    // stderr may itself be a file under the same size limit: a write past
    // it would raise SIGXFSZ in the program.
    if let Some(st) = sys::fstat(2) {
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            let end = (st.st_size as u64).max(sys::tell(2).unwrap_or(0));
            if end + len as u64 > sys::file_size_limit() {
                return;
            }
        }
    }
    // One writev: the line is not interleaved with the program's output.
    let iov = pieces.map(|p| libc::iovec {
        iov_base: p.as_ptr() as *mut libc::c_void,
        iov_len: p.len(),
    });
    // SAFETY: four iovecs over live slices.
    unsafe { libc::syscall(libc::SYS_writev, 2, iov.as_ptr(), iov.len()) };
}

/// At exit (and before exec): trims the log to its content. Writers that
/// reserve from now on see `FINAL` and use pwrite.
pub fn finish() {
    if !ready_to_write() || FINAL.load(SeqCst) {
        return;
    }
    PWRITE_ONLY.store(true, SeqCst);
    TRIMMER.store(sys::gettid(), SeqCst);
    if FINAL.swap(true, SeqCst) {
        return;
    }
    let end = OFFSET.load(SeqCst);
    let _ = with_log(|fd| sys::ftruncate(fd, end));
    TRIMMED.store(true, SeqCst);
}

use crate::pool::STAGE_SIZE;

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

fn write_mapped<E: Encode>(off: u64, len: u64, event: &E) -> bool {
    let window = off / WINDOW;
    if (off + len - 1) / WINDOW != window || len == 0 || off + len > BACKED.load(Acquire) {
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
        if tag & BUSY != 0 || tag > want || !replace_window(slot, tag, window) {
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
    // and [off, off+len) is backed by the file and below any truncation
    // (FINAL was clear after the reservation), so the pages cannot fault.
    let region = unsafe {
        core::slice::from_raw_parts_mut((base + (off % WINDOW) as usize) as *mut u8, len as usize)
    };
    let mut sink = SliceSink::new(region);
    event.encode(&mut sink);
    slot.users.fetch_sub(1, SeqCst);
    true
}

/// A shared mapping of `window` of the log open as `fd`.
fn map_window(fd: c_int, window: u64) -> Option<usize> {
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
    (p != libc::MAP_FAILED).then_some(p as usize)
}

/// Maps `window` into `slot` in place of the window tagged `old`. Gives up
/// (returns false) when another thread won the slot or someone still writes
/// into the old window; the caller then uses pwrite.
fn replace_window(slot: &Slot, old: u64, window: u64) -> bool {
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
    let p = match with_log(|fd| map_window(fd, window)) {
        Ok(Some(p)) => p,
        Ok(None) => {
            PWRITE_ONLY.store(true, SeqCst);
            slot.tag.store(old, SeqCst);
            return false;
        }
        Err(_) => {
            // The slow path meets the same failure and reports it.
            slot.tag.store(old, SeqCst);
            return false;
        }
    };
    let old_base = slot.base.swap(p, SeqCst);
    if old_base != 0 {
        // SAFETY: no writer uses the old window (users == 0, tag BUSY).
        unsafe { libc::munmap(old_base as *mut libc::c_void, WINDOW as usize) };
    }
    slot.tag.store(window + 1, SeqCst);
    true
}

/// Writes the event at its reserved offset with pwrite (which extends the
/// file), never past `RLIMIT_FSIZE`.
fn write_at<E: Encode>(off: u64, len: u64, event: &E) -> Result<(), (StopReason, c_int)> {
    if off + len > sys::file_size_limit() {
        return Err((StopReason::FileSizeLimit, libc::EFBIG));
    }
    let e = with_log(|fd| {
        let mut sink = PwriteSink {
            fd,
            off,
            buf: [0; 512],
            n: 0,
            err: 0,
        };
        event.encode(&mut sink);
        sink.flush();
        sink.err
    })?;
    match -e as c_int {
        0 => Ok(()),
        libc::ENOSPC | libc::EDQUOT => Err((StopReason::NoSpace, -e as c_int)),
        libc::EFBIG => Err((StopReason::FileSizeLimit, libc::EFBIG)),
        errno => Err((StopReason::IoError, errno)),
    }
}

/// Streams an event to its reserved offset through a small stack buffer.
struct PwriteSink {
    fd: c_int,
    off: u64,
    buf: [u8; 512],
    n: usize,
    /// The first failure (-errno), 0 if none.
    err: c_long,
}

impl PwriteSink {
    fn flush(&mut self) {
        if self.n > 0 && self.err == 0 {
            self.err = sys::pwrite_all(self.fd, &self.buf[..self.n], self.off);
            self.off += self.n as u64;
        }
        self.n = 0;
    }
}

impl Sink for PwriteSink {
    fn put(&mut self, mut bytes: &[u8]) {
        if self.n == 0 && bytes.len() >= self.buf.len() {
            // A staged event: one pwrite, so that it is never torn.
            if self.err == 0 {
                self.err = sys::pwrite_all(self.fd, bytes, self.off);
            }
            self.off += bytes.len() as u64;
            return;
        }
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
