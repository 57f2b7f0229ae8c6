//! The per-thread re-entry guard, the per-thread id cache, and the
//! generation that keeps the copies of the working directory honest.
//!
//! The thread-locals are const-initialised, of types without destructors, so
//! they compile to plain TLS slots: no lazy registration, no allocation. They
//! are a few bytes: every byte of TLS is paid by every thread of the program
//! (pool.rs holds the buffers).

use crate::pool::CwdCopy;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::*};

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    static TID: Cell<i32> = const { Cell::new(0) };
}

/// Held while a hook runs its logic. A second hook entered on the same thread
/// (a signal handler that calls `open` while we are logging, or a libc
/// function we call internally) gets `None` and passes straight through.
pub struct HookGuard(());

impl HookGuard {
    pub fn enter() -> Option<HookGuard> {
        let taken = IN_HOOK.try_with(|c| c.replace(true)).unwrap_or(true);
        (!taken).then_some(HookGuard(()))
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        let _ = IN_HOOK.try_with(|c| c.set(false));
    }
}

/// This thread's id, cached after the first call.
pub fn tid() -> i32 {
    TID.try_with(|c| {
        let t = c.get();
        if t != 0 {
            return t;
        }
        let t = crate::sys::gettid();
        c.set(t);
        t
    })
    .unwrap_or_else(|_| crate::sys::gettid())
}

/// After fork the calling thread is the child's only thread, with a new tid.
pub fn forget_tid() {
    let _ = TID.try_with(|c| c.set(0));
}

// ---- the working directory ----------------------------------------------------
//
// Every relative path is resolved against the cwd. Asking the kernel each
// time (`getcwd(2)`, ~300 ns: it rebuilds the path from the dentries) was
// the largest single cost of logging a read. The cwd only changes through
// `chdir`/`fchdir` (hooked in hooks.rs, which bump `CWD_GENERATION` after
// the real call), so each pool block keeps a copy (the cwd is per process,
// so any thread's copy will do) tagged with the generation it was read
// under. The generation is read *before* the kernel is asked, so a
// copy taken while a `chdir` runs on another thread carries the old
// generation and is refreshed on next use: never a stale copy marked fresh.
//
// Not seen (documented in docs/performance.md): a directory change made
// inside libc through its internal alias (`nftw` with `FTW_CHDIR`), a raw
// `syscall(SYS_chdir)`, `chroot`, or another process renaming a directory
// above the cwd. Those events keep the cwd of the last hooked change.

/// Starts at 1 so that a never-read copy (generation 0) is stale.
static CWD_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Called after every `chdir`/`fchdir` (successful or not).
pub fn cwd_changed() {
    CWD_GENERATION.fetch_add(1, SeqCst);
}

/// The cwd from `copy` (a pool block's, see pool.rs), refreshed from the
/// kernel when a `chdir` happened since it was read. `None` when the kernel
/// gives no usable path.
pub fn cwd(copy: &mut CwdCopy) -> Option<&[u8]> {
    cwd_as_job(copy).map(|(path, _)| path)
}

/// [`cwd`], and whether it is a directory of the worker's that stands for
/// a job directory ([`as_job_path`] rewrote it).
pub fn cwd_as_job(copy: &mut CwdCopy) -> Option<(&[u8], bool)> {
    let generation = CWD_GENERATION.load(SeqCst);
    if copy.generation != generation {
        let len = crate::sys::getcwd_raw(&mut copy.bytes);
        copy.valid = len.is_some();
        let (n, moved) = len.map_or((0, false), |n| job_path_of(&mut copy.bytes, n));
        (copy.len, copy.stands_for_job) = (n, moved);
        copy.generation = generation;
    }
    copy.valid
        .then(|| (&copy.bytes[..copy.len], copy.stands_for_job))
}

/// A cwd inside the worker's directory that stands for a job directory (a
/// directory the worker made or moved under redirect, entered by a
/// rerouted chdir) is the job path it stands for, rewritten in place in
/// `bytes[..len]`: relative paths from there are then judged, redirected
/// and recorded as the job's, as they would be from the shared directory.
/// The worker's own directory entered for itself (a framework writing its
/// per-worker outputs there) stays what it is. Returns the new length.
pub(crate) fn as_job_path(bytes: &mut [u8], len: usize) -> usize {
    job_path_of(bytes, len).0
}

/// [`as_job_path`], and whether the path was rewritten.
pub(crate) fn job_path_of(bytes: &mut [u8], len: usize) -> (usize, bool) {
    let saved = crate::state::SAVED.get();
    let (job, wdir) = (saved.job_dir.as_bytes(), saved.worker_dir.as_bytes());
    if job.len() < 2 || wdir.is_empty() || !crate::redirect::any_redirected() {
        return (len, false);
    }
    if bytes[..len] == *wdir {
        // The worker directory as the copy of the job directory itself (a
        // walk's fchdir to a rerouted descriptor of the job directory).
        let stands_for_job = crate::redirect::lookup(job).is_some_and(|t| t == wdir);
        if stands_for_job && job.len() <= bytes.len() {
            bytes[..job.len()].copy_from_slice(job);
            return (job.len(), true);
        }
        return (len, false);
    }
    let Some(rel) = mpaudit_core::path::strip_dir(&bytes[..len], wdir) else {
        return (len, false);
    };
    // Only names the mapping makes for job paths (mpaudit_core::map): the
    // escape in front of the job-relative part is kept to be put back.
    let Some(job_rel) = mpaudit_core::map::job_rel_of(rel) else {
        return (len, false);
    };
    let skip = rel.len() - job_rel.len();
    let mut escape = [0u8; 8];
    let Some(escape) = escape.get_mut(..skip) else {
        return (len, false);
    };
    escape.copy_from_slice(&rel[..skip]);
    let prefix = job;
    let rel_start = len - rel.len() + skip;
    let moved_to = prefix.len() + 1;
    let new_len = moved_to + (len - rel_start);
    if new_len > bytes.len() {
        return (len, false);
    }
    bytes.copy_within(rel_start..len, moved_to);
    bytes[..prefix.len()].copy_from_slice(prefix);
    bytes[prefix.len()] = b'/';
    // The table must send the job path to exactly this directory.
    let stands_for_it = crate::redirect::lookup(&bytes[..new_len])
        .is_some_and(|t| t.len() == len && mpaudit_core::path::strip_dir(t, wdir).is_some());
    if stands_for_it {
        return (new_len, true);
    }
    // Not a redirected directory: the worker directory's own path, back.
    bytes.copy_within(moved_to..new_len, rel_start);
    bytes[..wdir.len()].copy_from_slice(wdir);
    bytes[wdir.len()] = b'/';
    bytes[wdir.len() + 1..wdir.len() + 1 + skip].copy_from_slice(escape);
    (len, false)
}
