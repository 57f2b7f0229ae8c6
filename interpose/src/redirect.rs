//! Redirection state: which paths this worker has redirected (so later reads,
//! stats and renames of the same path follow the write), the outputs a
//! framework declared at run time, and the once-per-path warnings.
//!
//! The redirect table is the worker's, shared by all of its processes
//! through a mapped file (table.rs); each redirect is also appended to the
//! worker's manifest, `worker_<k>/mpaudit-redirects.jsonl`, which the
//! runner's merge reads. The two small per-process tables (declared
//! outputs, warnings) are fixed-size, lock-free and static.

use crate::state::SAVED;
use crate::sys;
use crate::table::{Refused, Table};
use mpaudit_core::json::{put_hex_string, put_i64, put_str, put_u64, Sink, SliceSink};
use mpaudit_core::path::MAX_ABS;
use mpaudit_core::policy::ActionSetting;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

// ---- a byte arena for the tables' strings -------------------------------------

const ARENA_SIZE: usize = 1 << 20;
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);
// SAFETY: each range is written once by the thread that reserved it, before
// the entry pointing at it is published with Release.
unsafe impl Sync for Arena {}
static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

fn store(bytes: &[u8]) -> Option<u64> {
    let off = ARENA_USED.fetch_add(bytes.len(), Relaxed);
    if off + bytes.len() > ARENA_SIZE || bytes.len() > u32::MAX as usize {
        return None;
    }
    // SAFETY: [off, off+len) is this thread's alone.
    unsafe {
        core::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (ARENA.0.get() as *mut u8).add(off),
            bytes.len(),
        )
    };
    Some(((off as u64) << 32) | bytes.len() as u64)
}

fn load(handle: u64) -> &'static [u8] {
    // SAFETY: published ranges never change.
    unsafe {
        core::slice::from_raw_parts(
            (ARENA.0.get() as *const u8).add((handle >> 32) as usize),
            handle as u32 as usize,
        )
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    h.max(2) // 0 = empty slot, 1 = being written
}

/// An open-addressing set of byte strings, each with an optional value.
struct StrMap<const N: usize> {
    hash: [AtomicU64; N],
    key: [AtomicU64; N],
    value: [AtomicU64; N],
    len: AtomicUsize,
}

impl<const N: usize> StrMap<N> {
    const fn new() -> Self {
        StrMap {
            hash: [const { AtomicU64::new(0) }; N],
            key: [const { AtomicU64::new(0) }; N],
            value: [const { AtomicU64::new(0) }; N],
            len: AtomicUsize::new(0),
        }
    }

    fn is_empty(&self) -> bool {
        self.len.load(Relaxed) == 0
    }

    fn get(&self, key: &[u8]) -> Option<&'static [u8]> {
        let h = fnv(key);
        for i in 0..N {
            let slot = (h as usize).wrapping_add(i) % N;
            match self.hash[slot].load(Acquire) {
                0 => return None,
                x if x == h && load(self.key[slot].load(Relaxed)) == key => {
                    return Some(load(self.value[slot].load(Relaxed)));
                }
                _ => {}
            }
        }
        None
    }

    /// Inserts `key` (with `value`); false when it was there already or the
    /// table is full.
    fn insert(&self, key: &[u8], value: &[u8]) -> bool {
        let h = fnv(key);
        for i in 0..N {
            let slot = (h as usize).wrapping_add(i) % N;
            match self.hash[slot].load(Acquire) {
                0 => {
                    if self.hash[slot]
                        .compare_exchange(0, 1, Acquire, Relaxed)
                        .is_err()
                    {
                        continue; // lost the slot; a racing insert of the same key is rare and harmless
                    }
                    let (Some(k), Some(v)) = (store(key), store(value)) else {
                        return false; // arena full: the slot stays claimed and unused
                    };
                    self.key[slot].store(k, Relaxed);
                    self.value[slot].store(v, Relaxed);
                    self.hash[slot].store(h, Release);
                    self.len.fetch_add(1, Relaxed);
                    return true;
                }
                x if x == h && load(self.key[slot].load(Relaxed)) == key => return false,
                _ => {}
            }
        }
        false
    }
}

static DECLARED: StrMap<1024> = StrMap::new();
static WARNED: StrMap<1024> = StrMap::new();

/// This worker's redirect table (table.rs), shared by all its processes.
pub static TABLE: Table = Table::new();

/// The redirected file for `abs`, if this worker redirected it (in any of
/// its processes); in the fork-mode root, which redirects nothing, the
/// file one of its workers made for it (`root_lookup`). The root only
/// reaches this for calls that read (its writes are not acted on:
/// audit.rs `file_access`), so its view never leads a write anywhere.
pub fn lookup(abs: &[u8]) -> Option<&'static [u8]> {
    if TABLE.is_attached() {
        return TABLE.get(abs);
    }
    root_lookup(abs)
}

pub fn any_redirected() -> bool {
    TABLE.entries() > 0
}

/// A read may find something in this process's view that is not in the
/// shared tree: its own redirects, or, in the fork-mode root, its
/// workers' (`root_lookup`).
pub fn any_in_view() -> bool {
    any_redirected() || root_view_active()
}

// ---- the fork-mode root's view of its workers' files ------------------------------
//
// The root (AthenaMP's mother, a multiprocessing pool's parent) is no
// worker: its writes go to the shared tree as they always did. Its reads
// see what its workers wrote, as bare: a name that exactly one worker's
// table has is read from that worker's file (a removal there is a
// removal); a name none has, or several have (which one wins is the
// merge's decision), is the shared one. Worker `k`'s table is
// `<counter file>.<k>.redirects` (create_table), attached read only on
// first use; the first ROOT_TABLES workers are seen.

/// Workers whose tables the root consults.
pub const ROOT_TABLES: usize = 256;
static ROOT_VIEW: [crate::table::ReadOnlyTable; ROOT_TABLES] =
    [const { crate::table::ReadOnlyTable::new() }; ROOT_TABLES];
/// Per table: 0 not attached, 1 being attached (by one thread), 2 attached.
static ROOT_VIEW_STATE: [core::sync::atomic::AtomicU8; ROOT_TABLES] =
    [const { core::sync::atomic::AtomicU8::new(0) }; ROOT_TABLES];
/// Names the root itself wrote (made, changed, removed, renamed): read
/// from the shared tree, where its write went.
static ROOT_WROTE: StrMap<1024> = StrMap::new();
/// The root's view is off for good (ROOT_WROTE is full: a name it wrote
/// could no longer be told from one it did not).
static ROOT_VIEW_OFF: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

pub fn root_view_active() -> bool {
    SAVED.get().action == ActionSetting::Redirect
        && !ROOT_VIEW_OFF.load(Relaxed)
        && crate::state::workers_counted().is_some_and(|n| n > 0)
}

/// In the fork-mode root, after a call that writes `abs` (in place): later
/// reads of `abs` are the shared file's.
pub fn root_wrote(abs: &[u8]) {
    if !root_view_active() {
        return;
    }
    if !ROOT_WROTE.insert(abs, b"") && ROOT_WROTE.get(abs).is_none() {
        ROOT_VIEW_OFF.store(true, Relaxed);
    }
}

/// Worker `k`'s table, attached on first use.
fn root_table(k: usize) -> Option<&'static crate::table::ReadOnlyTable> {
    let state = &ROOT_VIEW_STATE[k];
    match state.load(Acquire) {
        2 => return Some(&ROOT_VIEW[k]),
        1 => return None,
        _ => {}
    }
    if state.compare_exchange(0, 1, Acquire, Relaxed).is_err() {
        return (state.load(Acquire) == 2).then_some(&ROOT_VIEW[k]);
    }
    let attached = (|| {
        let mut claimed = crate::pool::claim()?;
        let b = claimed.block();
        let (path, owner) = (&mut b.target, &mut b.target2);
        let counter = SAVED.get().worker_counter.as_bytes();
        let mut s = SliceSink::new(path);
        s.put(counter);
        s.put(b".");
        put_u64(&mut s, k as u64);
        s.put(b".redirects");
        let (overflow, n) = (s.overflow, s.len);
        if overflow || n > mpaudit_core::table::MAX_PATH {
            return None;
        }
        let on = crate::state::worker_dir_of(k as u32, owner)?;
        // SAFETY: this thread alone attaches table `k` (state 1 above);
        // nobody reads it before state 2 is published.
        unsafe { ROOT_VIEW[k].open_existing(&path[..n], &owner[..on]) }.then_some(())
    })()
    .is_some();
    state.store(if attached { 2 } else { 0 }, Release);
    attached.then_some(&ROOT_VIEW[k])
}

/// The root's view of `abs`: the file of the one worker that redirected
/// it, if exactly one did (and the root did not write it itself).
fn root_lookup(abs: &[u8]) -> Option<&'static [u8]> {
    root_lookup_worker(abs).map(|(_, target)| target)
}

/// [`root_lookup`], with the worker whose file it is.
fn root_lookup_worker(abs: &[u8]) -> Option<(usize, &'static [u8])> {
    if !root_view_active() || (!ROOT_WROTE.is_empty() && ROOT_WROTE.get(abs).is_some()) {
        return None;
    }
    let n = crate::state::workers_counted().unwrap_or(0) as usize;
    let mut found = None;
    for k in 0..n.min(ROOT_TABLES) {
        let Some(t) = root_table(k) else { continue };
        if let Some(v) = t.get(abs) {
            if found.is_some() {
                return None; // several workers wrote it: the merge decides
            }
            found = Some((k, v));
        }
    }
    found
}

/// In the fork-mode root, before a call that writes `abs` in place (an
/// open for writing, truncate, rename's either name, unlink, link,
/// chmod…): the root writes in place what its view shows there, as bare
/// (review 3, finding 3). The directories above `abs` that only a
/// worker's view has are made in the shared tree (make_shared_parents);
/// a file or symlink the root reads from worker `k` (root_lookup) is
/// moved from `k`'s directory to `abs` (one rename: the same inode and
/// content, replacing a shared file there, which the worker had
/// replaced in its view; a shared file the worker removed in its view is
/// removed), and worker `k`'s manifest gets a line saying
/// the root took it, so the merge neither reports it as removed nor
/// merges an old copy back. The call then runs in place on the file the
/// root saw: an append keeps the worker's content, a rename moves it.
/// Nothing is taken for a directory, or when the rename fails (a workers
/// directory on another file system): the call runs in place as before.
/// Keeps errno.
/// `work`: 2 * (PATH_MAX + 1) bytes of scratch at least.
pub fn root_take(abs: &[u8], work: &mut [u8]) {
    if !root_view_active() || abs.len() >= crate::view::PATH_MAX {
        return;
    }
    let _errno = sys::ErrnoGuard::save();
    // The parents only when the leaf's directory is missing (one lstat in
    // the common case, not one per component).
    let parent = &abs[..abs.iter().rposition(|&b| b == b'/').unwrap_or(0)];
    if !parent.is_empty() && matches!(crate::view::lstat(parent, work), Ok(None)) {
        make_shared_parents(abs, work);
    }
    let Some((k, target)) = root_lookup_worker(abs) else {
        return;
    };
    let (from, rest) = work.split_at_mut(crate::view::PATH_MAX + 1);
    let (to, rest) = rest.split_at_mut(crate::view::PATH_MAX + 1);
    let not_dir = |st: &libc::stat| st.st_mode & libc::S_IFMT != libc::S_IFDIR;
    let (Some(f), Some(t)) = (sys::c_path(target, from), sys::c_path(abs, to)) else {
        return;
    };
    let taken = match crate::view::lstat(target, rest) {
        // SAFETY: NUL-terminated paths; a plain rename.
        Ok(Some(st)) if not_dir(&st) => unsafe {
            libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, f, libc::AT_FDCWD, t, 0) == 0
        },
        // The worker removed (or renamed away) the name in its view, which
        // is the root's: its removal is taken in place too.
        Ok(None) => match crate::view::lstat(abs, rest) {
            // SAFETY: a NUL-terminated path; a plain unlink.
            Ok(Some(st)) if not_dir(&st) => unsafe { libc::unlink(t) == 0 },
            _ => false,
        },
        _ => false,
    };
    if !taken {
        return;
    }
    root_wrote(abs);
    let (path, line) = rest.split_at_mut(4300);
    let Some(n) = crate::state::worker_dir_of(k as u32, path) else {
        return;
    };
    let mut p = SliceSink::new(&mut path[n..]);
    p.put(MANIFEST_NAME);
    if !p.overflow {
        append_manifest_line(path, line, abs, target, k as u64, true);
    }
}

/// Whether a new redirect can be recorded: 0, or the errno a redirected
/// call must fail with (the table cannot grow: disk full, RLIMIT_FSIZE, no
/// address space, or no table). Checked before the call so that a redirect
/// the worker could not see again never happens (fail closed).
pub fn reserve() -> i32 {
    match TABLE.reserve() {
        Ok(()) => 0,
        Err(why) => {
            warn_refused(why);
            libc::ENOSPC
        }
    }
}

fn warn_refused(why: Refused) {
    TABLE.note_refused();
    static WARNED_FULL: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if WARNED_FULL.swap(true, Relaxed) {
        return;
    }
    crate::process::warn(match why {
        Refused::NoTable => {
            b"mpaudit: no redirect table for this worker; redirected writes fail (redirect-failed)\n"
        }
        Refused::Full(libc::EFBIG) => {
            b"mpaudit: the redirect table reached RLIMIT_FSIZE; further redirected writes fail (redirect-failed)\n"
        }
        Refused::Full(_) => {
            b"mpaudit: the redirect table cannot grow (disk full or all segments used); further redirected writes fail (redirect-failed)\n"
        }
    });
}

// ---- attaching the worker's table ------------------------------------------------

/// At load, in a redirecting worker: attach the table the environment names
/// (`MPAUDIT_REDIRECT_TABLE`, set by the exec hooks of the worker's other
/// processes) if it is this worker's, else create one (seeded from the
/// worker's manifest, so a later command in the same worker still sees what
/// an earlier one redirected).
pub fn attach_at_load() {
    let saved = SAVED.get();
    if saved.action != ActionSetting::Redirect || saved.worker_dir.as_bytes().is_empty() {
        return;
    }
    let named = saved.redirect_table.as_bytes();
    // SAFETY: load time, single-threaded.
    if !named.is_empty() && unsafe { TABLE.open_existing(named, saved.worker_dir.as_bytes()) } {
        return;
    }
    if create_table(None) {
        load_manifest();
    }
}

/// In a freshly forked child that became a worker (fork mode): a table of
/// its own (the parent's, if any, belongs to another worker).
pub fn attach_after_fork() {
    // SAFETY: the child of a fork is single-threaded here.
    unsafe { TABLE.detach() };
    let saved = SAVED.get();
    if saved.action == ActionSetting::Redirect && !saved.worker_dir.as_bytes().is_empty() {
        let indexed = crate::state::numbered_by_counter()
            .then(crate::state::worker)
            .flatten();
        create_table(indexed);
    }
}

/// The attached table's path, for `MPAUDIT_REDIRECT_TABLE` in the
/// environment of exec'ed programs (empty when none is attached).
pub fn table_path() -> &'static [u8] {
    if TABLE.is_attached() {
        TABLE.path()
    } else {
        b""
    }
}

/// Creates the table file: `<log dir>/mpaudit-<pid>-<ns>.redirects` (the
/// runner's log reader only reads `*.jsonl`), or, without a usable log
/// directory, `<worker dir>/.mpaudit-<pid>-<ns>.redirects`. A worker
/// `indexed` by the job's shared counter (fork mode) first tries
/// `<counter file>.<k>.redirects`, where its root finds it (root_table).
fn create_table(indexed: Option<u32>) -> bool {
    let saved = SAVED.get();
    let worker_dir = saved.worker_dir.as_bytes();
    // A pool block for the path: this runs in a forked child's atfork
    // handler, maybe on a signal handler's small stack.
    let Some(mut claimed) = crate::pool::claim() else {
        warn_refused(Refused::NoTable);
        return false;
    };
    let path = &mut claimed.block().target[..4300];
    if let Some(k) = indexed {
        let mut s = SliceSink::new(path);
        s.put(saved.worker_counter.as_bytes());
        s.put(b".");
        put_u64(&mut s, k as u64);
        s.put(b".redirects");
        let (overflow, n) = (s.overflow, s.len);
        // SAFETY: a freshly forked child: single-threaded.
        if !overflow && n < path.len() - 1 && unsafe { TABLE.create(&path[..n], worker_dir) } {
            return true;
        }
    }
    for in_log_dir in [true, false] {
        let dir = if in_log_dir {
            saved.log_dir.as_bytes()
        } else {
            worker_dir
        };
        if dir.is_empty() {
            continue;
        }
        let mut s = SliceSink::new(path);
        s.put(dir);
        s.put(if in_log_dir {
            b"/mpaudit-"
        } else {
            b"/.mpaudit-"
        });
        put_i64(&mut s, crate::state::pid() as i64);
        s.put(b"-");
        put_u64(&mut s, sys::now_ns());
        s.put(b".redirects");
        let (overflow, n) = (s.overflow, s.len);
        if overflow || n >= path.len() - 1 {
            continue;
        }
        if !in_log_dir {
            make_dirs(&mut path[..n]);
        }
        // SAFETY: load time or a freshly forked child: single-threaded.
        if unsafe { TABLE.create(&path[..n], worker_dir) } {
            return true;
        }
    }
    warn_refused(Refused::NoTable);
    false
}

/// `mkdir -p` of the directory part of `path` (the worker directory's top
/// gets 0700, as in prepare_target).
fn make_dirs(path: &mut [u8]) {
    let top = SAVED.get().worker_dir.as_bytes().len();
    for i in 1..path.len() {
        if path[i] == b'/' {
            path[i] = 0;
            let mode = if i == top { 0o700 } else { 0o755 };
            // SAFETY: NUL-terminated prefix of path.
            unsafe { sys::mkdirat(libc::AT_FDCWD, path.as_ptr().cast(), mode) };
            path[i] = b'/';
        }
    }
}

pub fn declare(abs: &[u8]) -> bool {
    DECLARED.insert(abs, b"") || DECLARED.get(abs).is_some()
}

pub fn is_declared(abs: &[u8]) -> bool {
    !DECLARED.is_empty() && DECLARED.get(abs).is_some()
}

/// True the first time a path is warned about in this process.
pub fn first_warning(abs: &[u8]) -> bool {
    WARNED.insert(abs, b"")
}

// ---- preparing a target --------------------------------------------------------

/// What the worker's copy starts from when a redirect is created.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Seed {
    /// Nothing: the call itself creates (or fails to find) the file.
    Nothing,
    /// The original's content, mode and times (append, read-write or
    /// write-only opens without O_TRUNC, truncate, rename's source, a
    /// link's source, both sides of RENAME_EXCHANGE); a symlink is copied
    /// as a symlink, a directory as an empty one with its mode (a rename
    /// moves it; dirview.rs fills it).
    Content,
    /// An empty file with the original's mode (O_TRUNC of an existing file
    /// keeps its mode, whatever mode the call passes).
    ModeOnly,
    /// As `Content`, and a directory as a directory with the original's
    /// mode, owner and times (chmod, chown, utimes: the worker's own copy
    /// of its metadata; its entries stay the shared ones).
    Metadata,
}

/// What preparing a target made in the worker's tree for the call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Seeded {
    Nothing,
    /// A file or symlink (a copy of the original).
    File,
    /// A directory (Seed::Metadata).
    Directory,
}

/// A worker-side target ready for the call: a descriptor (O_PATH) of its
/// parent directory, opened component by component below the worker
/// directory without following any symlink, and where the leaf's name
/// starts in the target.
pub struct Prepared {
    pub parent: libc::c_int,
    pub leaf: usize,
    pub seeded: Seeded,
}

/// Opens `target`'s parent directory (inside the worker directory) for the
/// redirected call of `original` (the path the program reached; for a
/// write, its parent exists in the worker's view). With `create`, missing
/// directories are made, each with the mode of the shared directory it
/// stands for (the worker's top one 0700): a shared directory that does not
/// exist gives ENOENT and a non-directory ENOTDIR, as the bare call would.
/// A symlink or non-directory among the worker's components gives ELOOP:
/// nothing reaches outside the worker directory. `first`: a first
/// redirect of `original` (the table has none), whose place must not
/// hold a symlink unless the original is one (ELOOP). Then, as `seed` says,
/// the original (`orig`: its lstat) is copied in. Returns the descriptor,
/// which the caller closes, or the errno the call must fail with. `work` is
/// scratch space (pool.rs; at least 3 * (MAX_ABS + 1) bytes).
pub fn prepare_target(
    original: &[u8],
    target: &[u8],
    create: bool,
    seed: Seed,
    orig: Option<&libc::stat>,
    first: bool,
    work: &mut [u8],
) -> Result<Prepared, i32> {
    let worker_dir = SAVED.get().worker_dir.as_bytes();
    if target == worker_dir && !worker_dir.is_empty() {
        return prepare_worker_dir(seed, orig, work);
    }
    let below = match target.strip_prefix(worker_dir) {
        Some([b'/', rest @ ..]) if !rest.is_empty() && !worker_dir.is_empty() => rest,
        _ => return Err(libc::EACCES),
    };
    let (buf, rest) = work.split_at_mut(MAX_ABS + 1);
    let mut fd = open_worker_dir(create, buf)?;
    let leaf_at = below.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let mut start = 0;
    while start < leaf_at {
        let len = below[start..].iter().position(|&b| b == b'/').unwrap_or(0);
        let comp = &below[start..start + len];
        let end = worker_dir.len() + 1 + start + len; // in `target`
        start += len + 1;
        let next = match open_dir_below(fd, comp, buf) {
            Err(libc::ENOENT) if create => {
                let mode = shared_counterpart_mode(original, target, end, worker_dir.len(), rest);
                let made = mode.and_then(|m| adding_unseen(fd, || mkdir_below(fd, comp, m, buf)));
                match made {
                    Ok(_) => open_dir_below(fd, comp, buf),
                    Err(e) => Err(e),
                }
            }
            r => r,
        };
        sys::close(fd);
        fd = next?;
    }
    let leaf = worker_dir.len() + 1 + leaf_at;
    // A first redirect's place holds no symlink of ours unless the shared
    // original is one: a symlink the program put in its worker directory
    // there (it may write it) would be taken for an earlier copy and
    // followed by the seeding and the call into the shared tree (review
    // 10, F1). As the supervisor, the call fails with ELOOP.
    let orig_is_link = orig.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
    if first && !orig_is_link {
        let is_link = sys::c_path(&target[leaf..], buf).is_some_and(|p| {
            // SAFETY: NUL-terminated name below our descriptor.
            unsafe { sys::stat_at(fd, p, libc::AT_SYMLINK_NOFOLLOW) }
                .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
        });
        if is_link {
            sys::close(fd);
            return Err(libc::ELOOP);
        }
    }
    let mut seeded = Seeded::Nothing;
    if let (Seed::Content | Seed::ModeOnly | Seed::Metadata, Some(st)) = (seed, orig) {
        let (name, rest) = rest.split_at_mut(MAX_ABS + 1);
        if let Some(name) = sys::c_path(&target[leaf..], name) {
            match adding_unseen(fd, || {
                copy_original(original, st, seed, fd, name, buf, rest)
            }) {
                Ok(s) => seeded = s,
                Err(e) => {
                    sys::close(fd);
                    return Err(e);
                }
            }
        }
    }
    Ok(Prepared {
        parent: fd,
        leaf,
        seeded,
    })
}

/// The job directory's own copy, the worker directory itself (a metadata
/// change of `.`): the call is given `/proc/self/fd/N/` of it (an empty
/// leaf; the trailing slash makes the kernel follow the descriptor link,
/// also for the no-follow calls, as bare `.` names the directory). Its
/// metadata is first seeded from the job directory's, as a copy's is.
fn prepare_worker_dir(
    seed: Seed,
    orig: Option<&libc::stat>,
    work: &mut [u8],
) -> Result<Prepared, i32> {
    let (buf, rest) = work.split_at_mut(MAX_ABS + 1);
    let fd = open_worker_dir(true, buf)?;
    if let (Seed::Metadata, Some(st)) = (seed, orig) {
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let (link, _) = rest.split_at_mut(MAX_ABS + 1);
            // `.` exists: only its owner, mode and times are set.
            copy_original(b"", st, seed, fd, c".".as_ptr(), buf, link)?;
        }
    }
    Ok(Prepared {
        parent: fd,
        leaf: SAVED.get().worker_dir.as_bytes().len(),
        seeded: Seeded::Nothing,
    })
}

/// The worker directory (O_PATH), made first (with its parents, the top
/// one 0700) when missing and `create`.
fn open_worker_dir(create: bool, buf: &mut [u8]) -> Result<libc::c_int, i32> {
    let saved = SAVED.get();
    let worker_dir = saved.worker_dir.as_bytes();
    let dir_flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let p = sys::c_path(worker_dir, buf).ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: NUL-terminated by c_path.
    let fd = unsafe { sys::openat(libc::AT_FDCWD, p, dir_flags, 0) };
    if fd >= 0 || fd != -libc::ENOENT || !create {
        return if fd >= 0 { Ok(fd) } else { Err(-fd) };
    }
    for i in 1..=worker_dir.len() {
        if i != worker_dir.len() && buf[i] != b'/' {
            continue;
        }
        let saved_byte = buf[i];
        buf[i] = 0;
        let mode = if i == worker_dir.len() { 0o700 } else { 0o755 };
        // SAFETY: NUL-terminated prefix.
        unsafe { sys::mkdirat(libc::AT_FDCWD, buf.as_ptr().cast(), mode) };
        buf[i] = saved_byte;
    }
    // SAFETY: `buf` still holds the NUL-terminated worker directory.
    let fd = unsafe { sys::openat(libc::AT_FDCWD, buf.as_ptr().cast(), dir_flags, 0) };
    if fd >= 0 {
        Ok(fd)
    } else {
        Err(-fd)
    }
}

/// The worker's directory `target` (a path in or below the worker
/// directory, as the table has it), opened (O_PATH) component by component
/// below the worker directory without following any symlink, as
/// [`prepare_target`] opens a parent. `buf`: MAX_ABS + 1 bytes.
pub(crate) fn open_copy(target: &[u8], buf: &mut [u8]) -> Result<libc::c_int, i32> {
    let worker_dir = SAVED.get().worker_dir.as_bytes();
    let below = match target.strip_prefix(worker_dir) {
        _ if worker_dir.is_empty() => return Err(libc::EACCES),
        Some([]) => &[][..],
        Some([b'/', rest @ ..]) => rest,
        _ => return Err(libc::EACCES),
    };
    let mut fd = open_worker_dir(false, buf)?;
    for comp in below.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        // The table's names are normal: a `..` would leave the worker
        // directory.
        let next = match comp {
            b"." | b".." => Err(libc::EACCES),
            _ => open_dir_below(fd, comp, buf),
        };
        sys::close(fd);
        fd = next?;
    }
    Ok(fd)
}

/// `comp` below the directory `fd`, as a directory (O_PATH), refusing a
/// symlink (ELOOP) or anything else that is not a directory.
pub(crate) fn open_dir_below(
    fd: libc::c_int,
    comp: &[u8],
    buf: &mut [u8],
) -> Result<libc::c_int, i32> {
    let p = sys::c_path(comp, buf).ok_or(libc::ENAMETOOLONG)?;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: NUL-terminated by c_path.
    let next = unsafe { sys::openat(fd, p, flags, 0) };
    if next < 0 {
        return Err(if next == -libc::ENOTDIR {
            libc::ELOOP
        } else {
            -next
        });
    }
    match sys::fstat(next) {
        Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(next),
        _ => {
            sys::close(next);
            Err(libc::ELOOP)
        }
    }
}

/// Makes the directory `comp` below `fd` with `mode` (whatever the
/// umask); whether it made it (`false`: it exists, and is left as it is).
pub(crate) fn mkdir_below(
    fd: libc::c_int,
    comp: &[u8],
    mode: u32,
    buf: &mut [u8],
) -> Result<bool, i32> {
    let p = sys::c_path(comp, buf).ok_or(libc::ENAMETOOLONG)?;
    // SAFETY: NUL-terminated by c_path.
    let r = unsafe { sys::mkdirat(fd, p, mode) };
    if r == -libc::EEXIST {
        return Ok(false);
    }
    if r < 0 {
        return Err(-r);
    }
    // The umask must not change what the mirror's mode says.
    set_mode_below(fd, p, libc::S_IFDIR, mode);
    Ok(true)
}

/// chmod of the entry `name` (NUL-terminated) below `dir` that this
/// module just made as a `kind` (its S_IFMT bits), through a held
/// descriptor of it: never by name, which would follow a symlink a thread
/// of the program swapped in since (review 10, F2); nothing when what is
/// there is of another kind.
fn set_mode_below(dir: libc::c_int, name: *const libc::c_char, kind: u32, mode: u32) {
    set_made(dir, name, kind, mode, None);
}

/// [`set_mode_below`], and the entry's times when given (its
/// descriptor's link: not the name, which a thread could swap).
fn set_made(
    dir: libc::c_int,
    name: *const libc::c_char,
    kind: u32,
    mode: u32,
    times: Option<&[libc::timespec; 2]>,
) {
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated name below our descriptor.
    let fd = unsafe { sys::openat(dir, name, flags, 0) };
    if fd < 0 {
        return;
    }
    if sys::fstat(fd).is_some_and(|st| st.st_mode & libc::S_IFMT == kind) {
        let mut link = [0u8; 32];
        let p = descriptor_link(fd, &mut link);
        // SAFETY: a NUL-terminated path: the descriptor's own link; two
        // timespecs.
        unsafe {
            libc::syscall(libc::SYS_fchmodat, libc::AT_FDCWD, p, mode & 0o7777, 0);
            if let Some(t) = times {
                libc::syscall(libc::SYS_utimensat, libc::AT_FDCWD, p, t.as_ptr(), 0);
            }
        }
    }
    sys::close(fd);
}

/// The mode for the worker's directory `target[..end]`: that of the shared
/// directory it stands for (`original`'s prefix with the same tail), 0755
/// for one that stands for none (`_abs`). ENOENT or ENOTDIR when the shared
/// one is missing or no directory: the bare call would fail so.
fn shared_counterpart_mode(
    original: &[u8],
    target: &[u8],
    end: usize,
    worker_len: usize,
    buf: &mut [u8],
) -> Result<u32, i32> {
    let shift = target.len() as isize - original.len() as isize;
    let shared_end = end as isize - shift;
    let has_counterpart = end > worker_len
        && shared_end > 0
        && (shared_end as usize) < original.len()
        && original[shared_end as usize] == b'/'
        && original[shared_end as usize..] == target[end..];
    if !has_counterpart {
        return Ok(0o755);
    }
    match crate::view::lstat(&original[..shared_end as usize], buf)? {
        Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(st.st_mode & 0o7777),
        Some(_) => Err(libc::ENOTDIR),
        None => Err(libc::ENOENT),
    }
}

/// Runs `make`, which adds to the worker's directory `dir` (O_PATH) an
/// entry the worker's view already showed (a copy-up, a parent made for
/// one, a copy of a subdirectory's metadata, the manifest). Bare, the
/// directory is not written:
/// - a copy the worker made read-only (`chmod 555 d`, or the shared
///   directory's own mode) is given owner write and search for the time
///   of `make`, then its mode back (review 8 F2: a non-root worker's
///   copy-ups failed with EACCES where bare succeeds);
/// - its times stay, so they are put back (review 8 F1; the view shows
///   them once the worker set them).
///
/// A change of the program's own to the directory between the two is lost
/// with them (docs/policy.md, "Not emulated").
pub(crate) fn adding_unseen<R>(dir: libc::c_int, make: impl FnOnce() -> R) -> R {
    let before = sys::fstat(dir);
    let mut link = [0u8; 32];
    let p = descriptor_link(dir, &mut link);
    let locked = before.filter(|b| b.st_mode & 0o300 != 0o300);
    let chmod = |mode: u32| {
        // SAFETY: a NUL-terminated path; the descriptor's directory.
        unsafe { libc::syscall(libc::SYS_fchmodat, libc::AT_FDCWD, p, mode, 0) }
    };
    if let Some(b) = locked {
        chmod(b.st_mode & 0o7777 | 0o300);
    }
    let made = make();
    if let Some(b) = locked {
        chmod(b.st_mode & 0o7777);
    }
    if let (Some(b), Some(a)) = (before, sys::fstat(dir)) {
        if mpaudit_core::times::modified_between(&b, &a) {
            set_dir_times(dir, &mpaudit_core::times::of(&b));
        }
    }
    made
}

/// Marks the worker's directory `dir` (a descriptor) changed now, as
/// removing an entry does bare: for a removal the view makes without
/// touching the directory's copy (a shared name hidden by the table).
pub fn touch_dir(dir: libc::c_int) {
    set_dir_times(dir, &mpaudit_core::times::ENTRY_REMOVED);
}

/// Whether this process may remove an entry owned by `owner` from the
/// worker's directory `dir` (a descriptor of it), as the kernel's
/// may_delete asks: write and search permission on it (EACCES), and in a
/// sticky directory the entry's or the directory's ownership (EPERM).
pub fn may_remove_from(dir: libc::c_int, owner: libc::uid_t) -> Result<(), i32> {
    let mut link = [0u8; 32];
    may_delete(descriptor_link(dir, &mut link), sys::fstat(dir), owner)
}

/// [`may_remove_from`] of the directory at the NUL-terminated path `dir`
/// (the one the view shows: `view::place`; the shared one where the
/// worker never changed its metadata: its mirror, if any, has the
/// worker's owner, and the worker directory standing for the job
/// directory neither the job directory's mode nor owner: review 9, F3).
/// Only asked, never written.
pub fn may_remove_in(dir: *const libc::c_char, owner: libc::uid_t) -> Result<(), i32> {
    // SAFETY: the caller's NUL-terminated path.
    may_delete(dir, unsafe { sys::stat(dir, 0) }, owner)
}

/// may_create's question of the directory `dir` (a NUL-terminated path)
/// the view shows, for a rename's new name: write and search permission
/// (EACCES). Only asked.
pub fn may_create_in(dir: *const libc::c_char) -> Result<(), i32> {
    mpaudit_core::namei::may_create(access(dir, libc::W_OK | libc::X_OK))
}

/// may_delete's questions of the directory `p` (a NUL-terminated path),
/// whose stat is `st`.
fn may_delete(
    p: *const libc::c_char,
    st: Option<libc::stat>,
    owner: libc::uid_t,
) -> Result<(), i32> {
    let access = access(p, libc::W_OK | libc::X_OK);
    // SAFETY: a plain getter.
    let euid = unsafe { libc::geteuid() };
    let dir = st.map(|st| (st.st_mode, st.st_uid));
    mpaudit_core::namei::may_delete(access, dir, owner, euid)
}

/// faccessat(p, how, AT_EACCESS)'s errno (0: allowed) for the
/// NUL-terminated path `p`: the kernel's permission answer for this
/// process's effective ids.
pub fn access(p: *const libc::c_char, how: libc::c_int) -> i32 {
    // SAFETY: a NUL-terminated path; plain integers.
    let mut r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            libc::AT_FDCWD,
            p,
            how,
            libc::AT_EACCESS,
        )
    };
    if r < 0 && sys::errno() == libc::ENOSYS {
        // Before Linux 5.8: the real ids, which a worker rarely sets apart.
        // SAFETY: as above.
        r = unsafe { libc::syscall(libc::SYS_faccessat, libc::AT_FDCWD, p, how) };
    }
    if r < 0 {
        sys::errno()
    } else {
        0
    }
}

/// utimensat of the directory a descriptor (O_PATH too) holds, through
/// its `/proc/thread-self/fd` link: no name below the worker directory is
/// resolved again.
pub(crate) fn set_dir_times(dir: libc::c_int, times: &[libc::timespec; 2]) {
    let mut link = [0u8; 32];
    let p = descriptor_link(dir, &mut link);
    // SAFETY: a NUL-terminated path and two timespecs.
    unsafe { libc::syscall(libc::SYS_utimensat, libc::AT_FDCWD, p, times.as_ptr(), 0) };
}

/// Creates `name` below `dir` as the worker's copy of `original` (whose
/// lstat is `st`), unless it exists already (an earlier copy): a regular
/// file gets the content (Seed::Content, Seed::Metadata) or none
/// (Seed::ModeOnly), its mode, and for a content copy its times; a symlink
/// is copied as one; for Seed::Metadata a directory is made (or the mirror
/// made for its entries taken) with the original's mode, owner and times.
/// Says what it made. A content copy is whole or absent: when it cannot
/// be completed the partial copy is removed and the errno returned, so the
/// call fails rather than go on with a file that does not hold the
/// original.
pub(crate) fn copy_original(
    original: &[u8],
    st: &libc::stat,
    seed: Seed,
    dir: libc::c_int,
    name: *const libc::c_char,
    buf: &mut [u8],
    link: &mut [u8],
) -> Result<Seeded, i32> {
    let times = mpaudit_core::times::of(st);
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFDIR if seed == Seed::Metadata => {
            // SAFETY: NUL-terminated name below our descriptor.
            let made = unsafe { sys::mkdirat(dir, name, 0o700) } == 0;
            // SAFETY: as above; plain integers and two timespecs.
            unsafe {
                libc::syscall(
                    libc::SYS_fchownat,
                    dir,
                    name,
                    st.st_uid,
                    st.st_gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                );
                libc::syscall(
                    libc::SYS_utimensat,
                    dir,
                    name,
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                );
            }
            set_mode_below(dir, name, libc::S_IFDIR, st.st_mode);
            return Ok(if made {
                Seeded::Directory
            } else {
                Seeded::Nothing
            });
        }
        // A shared directory about to be renamed: an empty copy with its
        // mode and times (bare, the moved directory keeps them), which the
        // rename moves and dirview.rs then fills.
        libc::S_IFDIR if seed == Seed::Content => {
            // SAFETY: NUL-terminated name below our descriptor.
            let made = unsafe { sys::mkdirat(dir, name, 0o700) } == 0;
            if made {
                // The umask must not change the mode.
                set_made(dir, name, libc::S_IFDIR, st.st_mode, Some(&times));
            }
            return Ok(if made {
                Seeded::Directory
            } else {
                Seeded::Nothing
            });
        }
        libc::S_IFLNK if matches!(seed, Seed::Content | Seed::Metadata) => {
            let n = crate::view::at_path(original, buf, |d, p| {
                // SAFETY: NUL-terminated path; the kernel writes at most
                // link.len() - 1 bytes, leaving room for the NUL.
                unsafe {
                    libc::syscall(
                        libc::SYS_readlinkat,
                        d,
                        p,
                        link.as_mut_ptr(),
                        link.len() - 1,
                    )
                }
            });
            if let Ok(n @ 0..) = n {
                link[n as usize] = 0;
                // SAFETY: two NUL-terminated strings, a descriptor of ours.
                if unsafe { libc::syscall(libc::SYS_symlinkat, link.as_ptr(), dir, name) } == 0 {
                    return Ok(Seeded::File);
                }
            }
            return Ok(Seeded::Nothing);
        }
        // A FIFO, socket or device node: a node of the same kind, mode and
        // times (a rename's or link's source, a moved directory's entry).
        // A device node needs CAP_MKNOD: the call fails with mknod's errno.
        libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK
            if matches!(seed, Seed::Content | Seed::Metadata) =>
        {
            let kind = st.st_mode & libc::S_IFMT;
            // SAFETY: NUL-terminated name below our descriptor.
            let r =
                unsafe { libc::syscall(libc::SYS_mknodat, dir, name, kind | 0o600, st.st_rdev) };
            if r != 0 {
                return match sys::errno() {
                    libc::EEXIST => Ok(Seeded::Nothing), // an earlier copy
                    e => Err(e),
                };
            }
            // The umask must not change the mode.
            set_made(dir, name, kind, st.st_mode, Some(&times));
            return Ok(Seeded::File);
        }
        _ => return Ok(Seeded::Nothing),
    }
    // The copy is written under the program's RLIMIT_FSIZE: past it the
    // kernel would kill the program with SIGXFSZ, where in place the open
    // itself writes nothing.
    if matches!(seed, Seed::Content | Seed::Metadata) && st.st_size as u64 > sys::file_size_limit()
    {
        return Err(libc::EFBIG);
    }
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: NUL-terminated name below our descriptor.
    let to = unsafe { sys::openat(dir, name, flags, 0o600) };
    if to < 0 {
        return Ok(Seeded::Nothing); // an earlier copy
    }
    let content = matches!(seed, Seed::Content | Seed::Metadata);
    if content {
        let from = crate::view::at_path(original, buf, |d, p| {
            // SAFETY: NUL-terminated path.
            unsafe { sys::openat(d, p, libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW, 0) }
        });
        let copied = match from {
            Ok(from @ 0..) => {
                let r = copy_content(to, from, st.st_size as u64, buf);
                if r.is_ok() {
                    crate::xattrs::copy_all(to, from, buf, link);
                }
                sys::close(from);
                r
            }
            Ok(e) => Err(-e),
            Err(e) => Err(e),
        };
        if let Err(e) = copied {
            sys::close(to);
            // SAFETY: NUL-terminated name below our descriptor: the file we
            // just created.
            unsafe { libc::syscall(libc::SYS_unlinkat, dir, name, 0) };
            return Err(e);
        }
    }
    // SAFETY: our descriptor; the mode bits of the original.
    unsafe { libc::syscall(libc::SYS_fchmod, to, st.st_mode & 0o7777) };
    if content {
        // SAFETY: our descriptor (NULL path: the descriptor itself) and two
        // timespecs.
        unsafe {
            libc::syscall(
                libc::SYS_utimensat,
                to,
                core::ptr::null::<libc::c_char>(),
                times.as_ptr(),
                0,
            )
        };
    }
    sys::close(to);
    Ok(Seeded::File)
}

/// Copies `size` bytes from `from` to `to` (both at offset 0), in the
/// kernel where it can (sendfile), through `buf` where it cannot. Signals
/// restart the copy where it was (a program's interval timer must not
/// leave a truncated copy); a source that ends early ends the copy, as a
/// read in place would.
fn copy_content(to: libc::c_int, from: libc::c_int, size: u64, buf: &mut [u8]) -> Result<(), i32> {
    let mut done = 0u64;
    while done < size {
        let n = sys::sendfile(to, from, (size - done).min(1 << 30));
        match n {
            0 => return Ok(()),
            1.. => done += n as u64,
            _ if n == -(libc::EINTR as libc::c_long) || n == -(libc::EAGAIN as libc::c_long) => {}
            _ if n == -(libc::EINVAL as libc::c_long) || n == -(libc::ENOSYS as libc::c_long) => {
                return copy_by_reads(to, from, done, size, buf);
            }
            _ => return Err(-n as i32),
        }
    }
    Ok(())
}

/// [`copy_content`]'s fallback for files sendfile cannot read.
fn copy_by_reads(
    to: libc::c_int,
    from: libc::c_int,
    mut done: u64,
    size: u64,
    buf: &mut [u8],
) -> Result<(), i32> {
    while done < size {
        let want = buf.len().min((size - done) as usize);
        let n = sys::pread(from, &mut buf[..want], done);
        if n == 0 {
            return Ok(());
        }
        if n < 0 {
            match sys::errno() {
                libc::EINTR | libc::EAGAIN => continue,
                e => return Err(e),
            }
        }
        let w = sys::pwrite_all(to, &buf[..n as usize], done);
        if w < 0 {
            return Err(-w as i32);
        }
        done += n as u64;
    }
    Ok(())
}

/// After a copy-up of the shared regular file `(dev, ino)` to the worker's
/// `target`: every read-only descriptor of this process still open on the
/// shared file is moved to the copy (a new open description at the same
/// offset, with the same status and close-on-exec flags, put in its place
/// with dup3), so a file opened for reading before the worker's first write
/// to it reads what the worker wrote, as in place. The open descriptors are
/// listed from /proc/self/fd (`work`: scratch for the listing, at least
/// 4 KiB). Not emulated: descriptors held by the worker's other processes
/// and open file descriptions shared with them (an offset stays shared
/// only within this process), mappings, and descriptors without /proc.
pub fn follow_copy_up(dev: u64, ino: u64, target: &[u8], work: &mut [u8]) {
    if target.len() >= crate::view::PATH_MAX || work.len() < 4096 {
        return;
    }
    let (listing, name) = work.split_at_mut(work.len() - (crate::view::PATH_MAX + 1));
    let Some(target_c) = sys::c_path(target, name) else {
        return;
    };
    each_descriptor(listing, |fd| move_reader(fd, dev, ino, target_c));
}

/// When the worker's view is about to stop naming the shared path `abs`
/// (a removal it records, a rename of the worker's over it) while this
/// process holds read-only descriptors of the regular file there: bare,
/// they would then hold a file without a name (`fstat` says nlink 0,
/// `/proc/self/fd/N` reads `… (deleted)`, and opens through it reach it).
/// They are moved to a copy made at `at` (the worker's path the removal or
/// the rename then takes away: the same content, mode and times), as
/// [`follow_copy_up`] moves them. The shared file is left as it is.
/// Returns the copy's device and inode, `None` when nothing was moved.
/// Costs a listing of /proc/self/fd, and the copy only when a descriptor
/// holds the file. `work`: pool scratch.
///
/// A directory's descriptors (any access mode) are moved so to an empty
/// directory made at `at`, or the worker's directory already there (the
/// removal then removes it: bare, a removed directory has no entries and
/// link count 0). `.2`: it was a directory.
pub fn orphan_readers(abs: &[u8], at: &[u8], work: &mut [u8]) -> Option<(u64, u64, bool)> {
    let st = crate::view::lstat(abs, work).ok()??;
    let dir = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => false,
        libc::S_IFDIR => true,
        _ => return None,
    };
    let (dev, ino) = (st.st_dev, st.st_ino);
    let mut reader = -1;
    each_descriptor(work, |fd| {
        if reader < 0 && (is_reader(fd, dev, ino) || holds_dir(fd, dev, ino)) {
            reader = fd;
        }
    });
    if reader < 0 || at.len() >= crate::view::PATH_MAX {
        return None;
    }
    let (name, rest) = work.split_at_mut(crate::view::PATH_MAX + 1);
    let at_c = sys::c_path(at, name)?;
    if dir {
        // SAFETY: a NUL-terminated path.
        let r =
            unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, at_c, st.st_mode & 0o7777) };
        // A directory already there (made as a parent of an earlier
        // redirect, which the removal then removes) is used as it is.
        let made = if r == 0 || sys::errno() == libc::EEXIST {
            lstat_c(at_c).filter(|m| m.st_mode & libc::S_IFMT == libc::S_IFDIR)
        } else {
            None
        };
        let made = made?;
        each_descriptor(rest, |fd| move_dir_holder(fd, dev, ino, at_c));
        return Some((made.st_dev, made.st_ino, true));
    }
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let copy = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            at_c,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if copy < 0 {
        return None;
    }
    let mut from_name = [0u8; 32];
    let from = descriptor_link(reader, &mut from_name);
    // SAFETY: a NUL-terminated path; a new description, so the reader's
    // offset stays where it is.
    let src = unsafe { sys::openat(libc::AT_FDCWD, from, libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    let copied = src >= 0 && copy_content(copy, src, st.st_size as u64, rest).is_ok();
    if src >= 0 {
        sys::close(src);
    }
    let copy_st = sys::fstat(copy);
    let moved = match (copied, copy_st) {
        (true, Some(cst)) => {
            let times = [
                libc::timespec {
                    tv_sec: st.st_atime,
                    tv_nsec: st.st_atime_nsec,
                },
                libc::timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: st.st_mtime_nsec,
                },
            ];
            // SAFETY: plain syscalls on our own descriptor; `times` is live.
            unsafe {
                libc::syscall(libc::SYS_fchmod, copy, st.st_mode & 0o7777);
                libc::syscall(
                    libc::SYS_utimensat,
                    copy,
                    core::ptr::null::<libc::c_char>(),
                    times.as_ptr(),
                    0,
                );
            }
            each_descriptor(rest, |fd| move_reader(fd, dev, ino, at_c));
            Some((cst.st_dev, cst.st_ino, false))
        }
        _ => {
            // SAFETY: the NUL-terminated path made above.
            unsafe { libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, at_c, 0) };
            None
        }
    };
    sys::close(copy);
    moved
}

/// `/proc/thread-self/fd/N`, NUL-terminated in `buf`: this thread's
/// descriptor table (`/proc/self` names the process's, the main thread's,
/// which a thread that called `unshare(CLONE_FILES)` does not use:
/// review 9).
fn descriptor_link(fd: libc::c_int, buf: &mut [u8; 32]) -> *const libc::c_char {
    let mut s = mpaudit_core::json::SliceSink::new(&mut buf[..31]);
    use mpaudit_core::json::Sink;
    s.put(b"/proc/thread-self/fd/");
    mpaudit_core::json::put_u64(&mut s, fd as u64);
    let n = s.len;
    buf[n] = 0;
    buf.as_ptr().cast()
}

/// Runs `f` on every descriptor this thread's table has open (listed from
/// /proc/thread-self/fd through `work`, at least 4 KiB), but the listing's own.
fn each_descriptor(work: &mut [u8], mut f: impl FnMut(libc::c_int)) {
    // SAFETY: a NUL-terminated literal; the descriptor is closed below.
    let dir = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            c"/proc/thread-self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )
    };
    if dir < 0 {
        return;
    }
    let room = work.len().min(16384);
    let buf = &mut work[..room];
    loop {
        // SAFETY: the kernel writes at most buf.len() bytes of entries.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 < n as usize {
            // SAFETY: a linux_dirent64 the kernel wrote at `off`: d_reclen
            // at byte 16, the NUL-terminated name from byte 19.
            let (reclen, fd) = unsafe {
                let e = buf.as_ptr().add(off);
                let name = sys::c_bytes(e.add(19).cast(), 256);
                (
                    (e.add(16) as *const u16).read_unaligned() as usize,
                    name.iter().try_fold(0i32, |v, &c| {
                        c.is_ascii_digit().then(|| v * 10 + (c - b'0') as i32)
                    }),
                )
            };
            if reclen == 0 {
                break;
            }
            off += reclen;
            match fd {
                Some(fd) if fd != dir => f(fd),
                _ => {}
            }
        }
    }
    sys::close(dir);
}

/// lstat of a NUL-terminated path.
fn lstat_c(p: *const libc::c_char) -> Option<libc::stat> {
    // SAFETY: a NUL-terminated path.
    unsafe { sys::stat(p, libc::AT_SYMLINK_NOFOLLOW) }
}

/// After the worker's view moved the shared directory `(dev, ino)` to the
/// worker's `target` (a rename of it, completed by dirview.rs): this
/// process's descriptors of it are moved there, as bare they would follow
/// the directory (see [`move_dir_holder`]). `work`: at least 4 KiB.
pub fn follow_dir_move(dev: u64, ino: u64, target: &[u8], work: &mut [u8]) {
    if target.len() >= crate::view::PATH_MAX || work.len() < 4096 + crate::view::PATH_MAX + 1 {
        return;
    }
    let (listing, name) = work.split_at_mut(work.len() - (crate::view::PATH_MAX + 1));
    let Some(target_c) = sys::c_path(target, name) else {
        return;
    };
    each_descriptor(listing, |fd| move_dir_holder(fd, dev, ino, target_c));
}

/// Whether `fd` is a descriptor of the directory `(dev, ino)`.
fn holds_dir(fd: libc::c_int, dev: u64, ino: u64) -> bool {
    sys::fstat(fd).is_some_and(|st| {
        st.st_dev == dev && st.st_ino == ino && st.st_mode & libc::S_IFMT == libc::S_IFDIR
    })
}

/// Moves `fd`, a descriptor of the directory `(dev, ino)`, to the
/// directory `target`: a new description (O_PATH if it was one, else
/// read-only, with its status flags; listing from the start) put in its
/// place with dup3, close-on-exec kept.
fn move_dir_holder(fd: libc::c_int, dev: u64, ino: u64, target: *const libc::c_char) {
    if !holds_dir(fd, dev, ino) {
        return;
    }
    let Some((status, fd_flags)) = descriptor_flags(fd) else {
        return;
    };
    let access = if status as i32 & libc::O_PATH != 0 {
        libc::O_PATH
    } else {
        libc::O_RDONLY
    };
    let flags = access | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path; the new descriptor is closed below.
    let copy = unsafe { sys::openat(libc::AT_FDCWD, target, flags, 0) };
    if copy < 0 {
        return;
    }
    if access != libc::O_PATH {
        // SAFETY: an fcntl on our own new descriptor.
        unsafe { libc::syscall(libc::SYS_fcntl, copy, libc::F_SETFL, status) };
    }
    replace_description(copy, fd, fd_flags);
}

/// Whether `fd` is a read-only (or `O_PATH`) descriptor of the regular
/// file `(dev, ino)`.
fn is_reader(fd: libc::c_int, dev: u64, ino: u64) -> bool {
    let Some(st) = sys::fstat(fd) else {
        return false;
    };
    if st.st_dev != dev || st.st_ino != ino || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return false;
    }
    // SAFETY: an fcntl query on a descriptor of this process.
    let status = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) };
    status >= 0
        && matches!(
            status as i32 & (libc::O_ACCMODE | libc::O_PATH),
            libc::O_RDONLY | libc::O_PATH
        )
}

/// Moves the descriptor `fd` to `target` if it is a read-only descriptor
/// of the regular file `(dev, ino)` (see [`follow_copy_up`]).
fn move_reader(fd: libc::c_int, dev: u64, ino: u64, target: *const libc::c_char) {
    if !is_reader(fd, dev, ino) {
        return;
    }
    let Some((status, fd_flags)) = descriptor_flags(fd) else {
        return;
    };
    // An O_PATH descriptor has no offset nor status flags to keep.
    let handle = status as i32 & libc::O_PATH != 0;
    // SAFETY: reads the descriptor's offset.
    let offset = unsafe { libc::syscall(libc::SYS_lseek, fd, 0, libc::SEEK_CUR) };
    let access = if handle { libc::O_PATH } else { libc::O_RDONLY };
    // SAFETY: a NUL-terminated path; the new descriptor is closed below.
    let copy = unsafe { sys::openat(libc::AT_FDCWD, target, access | libc::O_CLOEXEC, 0) };
    if copy < 0 {
        return;
    }
    if !handle {
        // SAFETY: plain syscalls on our own new descriptor.
        unsafe {
            libc::syscall(libc::SYS_fcntl, copy, libc::F_SETFL, status);
            if offset >= 0 {
                libc::syscall(libc::SYS_lseek, copy, offset, libc::SEEK_SET);
            }
        }
    }
    replace_description(copy, fd, fd_flags);
}

/// A descriptor's status flags and descriptor flags (F_GETFL, F_GETFD).
fn descriptor_flags(fd: libc::c_int) -> Option<(libc::c_long, libc::c_long)> {
    // SAFETY: fcntl queries on a descriptor of this process.
    let (status, fd_flags) = unsafe {
        (
            libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL),
            libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD),
        )
    };
    (status >= 0 && fd_flags >= 0).then_some((status, fd_flags))
}

/// Puts `copy`'s open file description in `fd`'s place (dup3, atomic),
/// keeping `fd`'s close-on-exec from `fd_flags`, and closes `copy`.
fn replace_description(copy: libc::c_int, fd: libc::c_int, fd_flags: libc::c_long) {
    let cloexec = if fd_flags as i32 & libc::FD_CLOEXEC != 0 {
        libc::O_CLOEXEC
    } else {
        0
    };
    // SAFETY: dup3 between descriptors of this process.
    unsafe { libc::syscall(libc::SYS_dup3, copy, fd, cloexec) };
    sys::close(copy);
}

/// Before a write that goes to `abs` in place (declared, registered or
/// allowed: not redirected): the directories above it that only the
/// worker's view has (it made them: their redirect targets are
/// directories) are made in the shared tree, outermost first, each with
/// the mode of the worker's, so that a declared output written into a
/// directory the worker made lands where the program put it. `work`:
/// 2 * (PATH_MAX + 1) bytes of scratch.
pub fn make_shared_parents(abs: &[u8], work: &mut [u8]) {
    if !any_in_view() || abs.len() >= crate::view::PATH_MAX {
        return;
    }
    let job = SAVED.get().job_dir.as_bytes();
    let Some(below) = abs.strip_prefix(job).filter(|b| b.first() == Some(&b'/')) else {
        return;
    };
    let (name, buf) = work.split_at_mut(crate::view::PATH_MAX + 1);
    let parent_end = job.len() + below.iter().rposition(|&b| b == b'/').unwrap_or(0);
    for i in job.len() + 1..=parent_end {
        if i != parent_end && abs[i] != b'/' {
            continue;
        }
        let prefix = &abs[..i];
        if !matches!(crate::view::lstat(prefix, buf), Ok(None)) {
            continue; // there (or not to be made)
        }
        let mode = match lookup(prefix).map(|t| crate::view::lstat(t, buf)) {
            Some(Ok(Some(st))) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => st.st_mode & 0o7777,
            _ => return,
        };
        let Some(p) = sys::c_path(prefix, name) else {
            return;
        };
        // SAFETY: a NUL-terminated path; plain mkdir and chmod (past the umask).
        unsafe {
            if sys::mkdirat(libc::AT_FDCWD, p, mode) == 0 {
                libc::syscall(libc::SYS_fchmodat, libc::AT_FDCWD, p, mode, 0);
            }
        }
    }
}

/// The manifest's name in the worker directory, NUL-terminated, with its
/// slash.
const MANIFEST_NAME: &[u8] = b"/mpaudit-redirects.jsonl\0";

/// `<worker dir>/mpaudit-redirects.jsonl` with a NUL, into `out`; false
/// outside a worker or when it does not fit.
fn manifest_path(out: &mut [u8]) -> bool {
    let worker_dir = SAVED.get().worker_dir.as_bytes();
    let mut p = SliceSink::new(out);
    p.put(worker_dir);
    p.put(MANIFEST_NAME);
    !worker_dir.is_empty() && !p.overflow
}

/// Records a redirect: in the table (for read-your-writes) and, the first
/// time, in the worker's manifest for the runner's merge. `work` is scratch
/// space (pool.rs) for the manifest's path and line.
pub fn record(original: &[u8], target: &[u8], work: &mut [u8]) {
    match TABLE.insert(original, target) {
        Ok(true) => {}
        Ok(false) => return,
        // Rare (reserve() made room before the call; another process took
        // it meanwhile): the manifest still gets the line, so the merge
        // loses nothing; the worker's later calls may not see the file.
        Err(why) => warn_refused(why),
    }
    let (path, line) = work.split_at_mut(4300);
    if !manifest_path(path) {
        return;
    }
    let worker = crate::state::worker().unwrap_or(0) as u64;
    append_manifest_line(path, line, original, target, worker, false);
}

/// Appends one manifest line to the NUL-terminated `path`, built in
/// `line`: `original` redirected to `target` by `worker`, or, with
/// `taken`, `target` moved back to `original` by the fork-mode root
/// (root_take; `"taken":true`, read by the runner's merge).
fn append_manifest_line(
    path: &mut [u8],
    line: &mut [u8],
    original: &[u8],
    target: &[u8],
    worker: u64,
    taken: bool,
) {
    let mut s = SliceSink::new(line);
    s.put(b"{\"original\":");
    put_str(&mut s, original);
    s.put(b",\"target\":");
    put_str(&mut s, target);
    if !mpaudit_core::json::is_utf8(original) || !mpaudit_core::json::is_utf8(target) {
        s.put(b",\"original_hex\":");
        put_hex_string(&mut s, original);
        s.put(b",\"target_hex\":");
        put_hex_string(&mut s, target);
    }
    s.put(b",\"worker\":");
    put_u64(&mut s, worker);
    s.put(b",\"pid\":");
    put_i64(&mut s, crate::state::pid() as i64);
    if taken {
        s.put(b",\"taken\":true");
    }
    s.put(b"}\n");
    if s.overflow {
        return;
    }
    let n = s.len;
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: NUL-terminated path. One O_APPEND write per line keeps lines
    // whole across the worker's processes.
    let mut fd = unsafe { sys::openat(libc::AT_FDCWD, path.as_ptr().cast(), flags, 0) };
    if fd == -libc::ENOENT {
        // Made now in the worker directory, which stands for the job
        // directory in the worker's view (its times, `touch .`; its mode,
        // `chmod 555 .`): made without a trace there.
        let dir_flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a NUL-terminated path.
        let dir = in_parent(path, |d| unsafe {
            sys::openat(libc::AT_FDCWD, d, dir_flags, 0)
        });
        if let Some(dir @ 0..) = dir {
            let leaf = &MANIFEST_NAME[1..];
            fd = adding_unseen(dir, || {
                // SAFETY: a NUL-terminated name below our descriptor.
                unsafe { sys::openat(dir, leaf.as_ptr().cast(), flags | libc::O_CREAT, 0o644) }
            });
            sys::close(dir);
        }
    }
    if fd >= 0 {
        sys::write_all(fd, &line[..n]);
        sys::close(fd);
    } else {
        warn_manifest_unwritable();
    }
}

/// Once per process: the manifest could not be written (its line is
/// lost; the merge finds the worker's files by walking its directory).
fn warn_manifest_unwritable() {
    static WARNED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, Relaxed) {
        crate::process::warn(
            b"mpaudit: cannot write the worker's redirect manifest; the merge may miss removals and renames of this worker\n",
        );
    }
}

/// `f` given the directory of the NUL-terminated `path` (cut at its last
/// slash for the call, then restored); `None` without a slash.
fn in_parent<R>(path: &mut [u8], f: impl FnOnce(*const libc::c_char) -> R) -> Option<R> {
    let end = path.iter().position(|&b| b == 0)?;
    let at = path[..end].iter().rposition(|&b| b == b'/')?;
    path[at] = 0;
    let r = f(path.as_ptr().cast());
    path[at] = b'/';
    Some(r)
}

/// Seeds a new table with what the worker's manifest lists (an earlier
/// command in the same worker directory).
fn load_manifest() {
    let mut path = [0u8; 4300];
    if !manifest_path(&mut path) {
        return;
    }
    // SAFETY: NUL-terminated path.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            path.as_ptr().cast(),
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return;
    }
    // Lines are at most ~2*MAX_ABS*2 (hex); read in a sliding buffer.
    let mut buf = [0u8; 4 * MAX_ABS + 1024];
    let mut have = 0usize;
    loop {
        // SAFETY: reading into our buffer.
        let n = unsafe {
            libc::syscall(
                libc::SYS_read,
                fd,
                buf[have..].as_mut_ptr(),
                buf.len() - have,
            )
        };
        if n <= 0 {
            break;
        }
        have += n as usize;
        let mut start = 0;
        while let Some(nl) = buf[start..have].iter().position(|&b| b == b'\n') {
            load_line(&buf[start..start + nl]);
            start += nl + 1;
        }
        buf.copy_within(start..have, 0);
        have -= start;
        if have == buf.len() {
            have = 0; // a line longer than any we write: skip it
        }
    }
    sys::close(fd);
}

fn load_line(line: &[u8]) {
    let mut o = [0u8; MAX_ABS];
    let mut t = [0u8; MAX_ABS];
    let original = hex_field(line, b"\"original_hex\":\"", &mut o)
        .or_else(|| str_field(line, b"\"original\":\"", &mut o));
    let Some(on) = original else { return };
    let target = hex_field(line, b"\"target_hex\":\"", &mut t)
        .or_else(|| str_field(line, b"\"target\":\"", &mut t));
    let Some(tn) = target else { return };
    let _ = TABLE.insert(&o[..on], &t[..tn]);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + needle.len())
}

/// A JSON string field as written by `put_str` (escapes \" \\ \n \r \t \u00XX).
fn str_field(line: &[u8], key: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut i = find(line, key)?;
    let mut n = 0;
    while i < line.len() && n < out.len() {
        let b = line[i];
        let (byte, step) = match b {
            b'"' => return Some(n),
            b'\\' => match line.get(i + 1)? {
                b'n' => (b'\n', 2),
                b'r' => (b'\r', 2),
                b't' => (b'\t', 2),
                b'u' => (
                    u8::from_str_radix(core::str::from_utf8(line.get(i + 4..i + 6)?).ok()?, 16)
                        .ok()?,
                    6,
                ),
                &c => (c, 2),
            },
            _ => (b, 1),
        };
        out[n] = byte;
        n += 1;
        i += step;
    }
    None
}

fn hex_field(line: &[u8], key: &[u8], out: &mut [u8]) -> Option<usize> {
    let i = find(line, key)?;
    let end = line[i..].iter().position(|&b| b == b'"')? + i;
    let hex = &line[i..end];
    if hex.len() % 2 != 0 || hex.len() / 2 > out.len() {
        return None;
    }
    for (k, pair) in hex.chunks(2).enumerate() {
        out[k] = u8::from_str_radix(core::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(hex.len() / 2)
}
