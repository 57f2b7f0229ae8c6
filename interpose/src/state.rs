//! Process-wide state: who this process is, and what the environment asked
//! for at load. Written only while the process is single-threaded in
//! practice (the load-time constructor, a freshly forked child), read
//! lock-free everywhere else.

use crate::sys;
use mpaudit_core::launcher;
use mpaudit_core::path::absolutize;
use mpaudit_core::policy::ActionSetting;
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicUsize, Ordering::*};

/// A fixed-capacity byte string in static memory.
pub struct FixedBuf<const N: usize> {
    data: [u8; N],
    len: usize,
}

impl<const N: usize> FixedBuf<N> {
    pub const fn new() -> Self {
        FixedBuf {
            data: [0; N],
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
    /// Replaces the content; false (and empty) if it does not fit with a NUL.
    pub fn set(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() >= N {
            self.len = 0;
            return false;
        }
        self.data[..bytes.len()].copy_from_slice(bytes);
        self.data[bytes.len()] = 0;
        self.len = bytes.len();
        true
    }
    /// Sets the contents to what `build` writes into the buffer itself
    /// (its length, or `None`: empty), NUL-terminated. No path-sized copy on
    /// the stack: used in a fork child's atfork handler, which may run on a
    /// signal handler's small stack.
    pub fn fill_with(&mut self, build: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let n = build(&mut self.data[..N - 1]).filter(|&n| n < N);
        self.len = n.unwrap_or(0);
        self.data[self.len] = 0;
        n.is_some()
    }
    /// Appends `bytes` and a NUL; false if it does not fit.
    pub fn push_cstr(&mut self, bytes: &[u8]) -> bool {
        if self.len + bytes.len() + 1 > N {
            return false;
        }
        self.data[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.data[self.len + bytes.len()] = 0;
        self.len += bytes.len() + 1;
        true
    }
}

pub struct Global<T>(UnsafeCell<T>);
// SAFETY: mutated only through `get_mut`, whose callers guarantee they run
// while no other thread can read (load time, or a freshly forked child).
unsafe impl<T> Sync for Global<T> {}
impl<T> Global<T> {
    pub const fn new(v: T) -> Self {
        Global(UnsafeCell::new(v))
    }
    pub fn get(&self) -> &T {
        // SAFETY: see the Sync impl.
        unsafe { &*self.0.get() }
    }
    /// For values whose parts are owned separately (pool.rs): the caller
    /// only forms references to the part it owns.
    pub fn as_ptr(&self) -> *mut T {
        self.0.get()
    }
    /// # Safety
    /// No other thread may access the value at the same time.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut(&self) -> &mut T {
        // SAFETY: the caller guarantees exclusivity.
        unsafe { &mut *self.0.get() }
    }
}

/// Settings and paths captured at load.
pub struct Saved {
    /// Absolute path of libmpaudit.so, for re-injecting LD_PRELOAD.
    pub lib_path: FixedBuf<4096>,
    /// `/proc/self/exe` of this image.
    pub exe: FixedBuf<4096>,
    /// The file of the main program's link map: `exe`, except when the
    /// dynamic loader was run explicitly (`ld-linux-x86-64.so.2 ./prog`),
    /// when `exe` is the loader and this is the program (`argv[0]`, which
    /// glibc has shifted to it, made absolute).
    pub main_program: FixedBuf<4096>,
    pub log_dir: FixedBuf<4096>,
    /// Every `MPAUDIT_*=…` entry of the environment at load except those
    /// the library computes (worker, root pid), NUL-separated, to restore
    /// in the environment of exec'ed programs.
    pub env_entries: FixedBuf<65536>,
    pub fork_workers: bool,
    /// The policy (docs/policy.md): glob lists as given, `:`-separated.
    pub outputs: FixedBuf<16384>,
    pub components: FixedBuf<16384>,
    /// MPAUDIT_ALLOW plus the defaults (/proc, /sys; /dev and the
    /// temporary directory are `is_scratch`, a worker's own directory is
    /// `Policy::own_dir`).
    pub allow: FixedBuf<20480>,
    pub action: ActionSetting,
    /// Normalised absolute job directory, symlinks resolved (its canonical
    /// spelling: paths are judged and mapped against this one).
    pub job_dir: FixedBuf<4096>,
    /// Other spellings of the job directory (through a symlink: `$PWD`, the
    /// MPAUDIT_JOB_DIR given), each rewritten to `job_dir` in the paths the
    /// hooks judge (empty: none).
    pub job_dir_aliases: [FixedBuf<4096>; 2],
    /// Normalised absolute directory holding worker_<k>/.
    pub workers_dir: FixedBuf<4096>,
    /// `workers_dir` may be guarded and its worker directories allowed
    /// (`mpaudit_core::policy::workers_dir_is_sound`): false when
    /// MPAUDIT_WORKERS_DIR is or holds the job directory.
    pub workers_dir_sound: bool,
    /// This process's worker directory (empty outside a worker).
    pub worker_dir: FixedBuf<4200>,
    /// The normalised temporary directory ($TMPDIR or /tmp).
    pub tmpdir: FixedBuf<4096>,
    /// MPAUDIT_WORKER_COUNTER: the file holding the job's next worker index.
    pub worker_counter: FixedBuf<4200>,
    /// MPAUDIT_REDIRECT_TABLE as found at load: the redirect table of the
    /// worker's other processes (redirect.rs; handed on by the exec hooks).
    pub redirect_table: FixedBuf<4300>,
}

pub static SAVED: Global<Saved> = Global::new(Saved {
    lib_path: FixedBuf::new(),
    exe: FixedBuf::new(),
    main_program: FixedBuf::new(),
    log_dir: FixedBuf::new(),
    env_entries: FixedBuf::new(),
    fork_workers: false,
    outputs: FixedBuf::new(),
    components: FixedBuf::new(),
    allow: FixedBuf::new(),
    action: ActionSetting::Log,
    job_dir: FixedBuf::new(),
    job_dir_aliases: [FixedBuf::new(), FixedBuf::new()],
    workers_dir: FixedBuf::new(),
    workers_dir_sound: false,
    worker_dir: FixedBuf::new(),
    tmpdir: FixedBuf::new(),
    worker_counter: FixedBuf::new(),
    redirect_table: FixedBuf::new(),
});

static READY: AtomicBool = AtomicBool::new(false);
static PID: AtomicI32 = AtomicI32::new(0);
static PPID: AtomicI32 = AtomicI32::new(0);
/// -1 when this process is not a worker.
static WORKER: AtomicI64 = AtomicI64::new(-1);
/// The pid of the fork-mode root process (0 outside fork mode).
static ROOT_PID: AtomicI32 = AtomicI32::new(0);
/// Next worker index a fork of the root process hands out, when the job has
/// no shared counter (below).
static NEXT_WORKER: AtomicU32 = AtomicU32::new(0);
/// Address of the job's shared next-index counter (0: none): the first word
/// of a `MAP_SHARED` page of the file MPAUDIT_WORKER_COUNTER names, so the
/// root and the forkservers exec'ed below it hand out one sequence.
static SHARED_NEXT: AtomicUsize = AtomicUsize::new(0);
/// This image is a fork server (Python's multiprocessing forkserver): not a
/// worker itself, it numbers the children it forks as workers.
static FORK_SERVER: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The worker index the fork under way on this thread hands to its
    /// child (-1: none). Per thread, because two threads may fork at once;
    /// the child is a copy of the forking thread, so it reads its own.
    static PENDING_WORKER: Cell<i64> = const { Cell::new(-1) };
}
/// Load address of libmpaudit.so itself: its frames are ours whatever the
/// file is called.
static OWN_BASE: AtomicUsize = AtomicUsize::new(0);
/// End of our highest loaded segment: [OWN_BASE, OWN_END) holds our code.
static OWN_END: AtomicUsize = AtomicUsize::new(0);
/// argv of this image, kept to describe forked children.
static ARGC: AtomicI32 = AtomicI32::new(0);
/// The launcher rank (docs/events.md, "Ranks"); -1 outside a launcher.
static RANK: AtomicI64 = AtomicI64::new(-1);
/// The worker index is the rank itself (no runner or fork-mode root numbers
/// the rank's workers): its directory is `worker_<rank>`, and exec'ed
/// programs find the rank again in the launcher's variable rather than in
/// `MPAUDIT_WORKER` (which would make them a local worker of the rank).
static WORKER_IS_RANK: AtomicBool = AtomicBool::new(false);
/// `uname -n`, read at load for the events of a rank.
static NODE: Global<FixedBuf<65>> = Global::new(FixedBuf::new());
static ARGV: AtomicUsize = AtomicUsize::new(0);

pub fn ready() -> bool {
    READY.load(Acquire)
}
pub fn set_ready() {
    READY.store(true, Release)
}
pub fn pid() -> i32 {
    PID.load(Relaxed)
}
pub fn ppid() -> i32 {
    PPID.load(Relaxed)
}
pub fn worker() -> Option<u32> {
    let w = WORKER.load(Relaxed);
    (w >= 0).then_some(w as u32)
}
pub fn rank() -> Option<u32> {
    let r = RANK.load(Relaxed);
    (r >= 0).then_some(r as u32)
}
pub fn worker_is_rank() -> bool {
    WORKER_IS_RANK.load(Relaxed)
}
pub fn node() -> &'static [u8] {
    NODE.get().as_bytes()
}
pub fn root_pid() -> i32 {
    ROOT_PID.load(Relaxed)
}
/// This process is the fork-mode root (its forked children are workers).
pub fn is_root() -> bool {
    SAVED.get().fork_workers && root_pid() == pid() && worker().is_none()
}
/// This process hands out worker indices to the children it forks: the
/// root, and a fork server below it that can reach the shared counter.
fn hands_out_workers() -> bool {
    is_root() || (FORK_SERVER.load(Relaxed) && SHARED_NEXT.load(Relaxed) != 0)
}
fn next_worker_counter() -> &'static AtomicU32 {
    match SHARED_NEXT.load(Relaxed) {
        0 => &NEXT_WORKER,
        // SAFETY: a page mapped once and never unmapped; its first word is
        // only ever accessed atomically, by every process of the job.
        p => unsafe { &*(p as *const AtomicU32) },
    }
}
/// In the fork-mode root, when its workers are numbered by the job's
/// shared counter (a log directory exists): how many indices it and the
/// fork servers below it handed out so far (each a worker whose redirect
/// table is `<counter>.<k>.redirects`, redirect.rs). `None` elsewhere.
pub fn workers_counted() -> Option<u32> {
    let p = SHARED_NEXT.load(Relaxed);
    (p != 0 && is_root() && !SAVED.get().worker_counter.as_bytes().is_empty())
        .then(|| next_worker_counter().load(Relaxed))
}
/// Worker `k`'s directory (as `set_worker_dir` computes it in the worker)
/// into `out`.
pub fn worker_dir_of(k: u32, out: &mut [u8]) -> Option<usize> {
    let rank = rank().filter(|_| !worker_is_rank());
    mpaudit_core::map::worker_dir_for(SAVED.get().workers_dir.as_bytes(), rank, k, out)
}
/// The worker index of this process came from the job's shared counter
/// (a fork of the root or of a fork server that maps it).
pub fn numbered_by_counter() -> bool {
    SHARED_NEXT.load(Relaxed) != 0 && !SAVED.get().worker_counter.as_bytes().is_empty()
}
/// Whether `addr` lies in libmpaudit.so's loaded segments.
#[inline]
pub fn is_own_address(addr: usize) -> bool {
    addr >= OWN_BASE.load(Relaxed) && addr < OWN_END.load(Relaxed)
}

/// Finds where our segments end (at load time: dl_iterate_phdr takes the
/// loader's lock, so never from a hook).
fn find_own_end(base: usize) {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid info; data is the base we gave.
        let (info, base) = unsafe { (&*info, *(data as *const usize)) };
        if info.dlpi_addr as usize != base {
            return 0;
        }
        let mut end = 0;
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: dlpi_phdr has dlpi_phnum entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD {
                end = end.max(base + (ph.p_vaddr + ph.p_memsz) as usize);
            }
        }
        OWN_END.store(end, Relaxed);
        1
    }
    let mut data = base;
    // SAFETY: visit only reads the loader's program headers.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut data as *mut usize as *mut libc::c_void) };
}
pub fn exe() -> &'static [u8] {
    SAVED.get().exe.as_bytes()
}
/// The main program's file (see [`Saved::main_program`]).
pub fn main_program() -> &'static [u8] {
    SAVED.get().main_program.as_bytes()
}
pub fn argv() -> (i32, *const *const libc::c_char) {
    (
        ARGC.load(Relaxed),
        ARGV.load(Relaxed) as *const *const libc::c_char,
    )
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32)
    })
}

/// Reads the environment and the process's identity. Runs once, at load.
///
/// # Safety
/// Called from the constructor, before any hook can run on another thread
/// of this library's making; `argv`/`envp` are the loader's arrays.
pub unsafe fn init(argc: i32, argv: *const *const libc::c_char, envp: *const *const libc::c_char) {
    // SAFETY: load time, see above.
    let saved = unsafe { SAVED.get_mut() };
    ARGC.store(argc, Relaxed);
    ARGV.store(argv as usize, Relaxed);
    PID.store(sys::getpid(), Relaxed);
    PPID.store(sys::getppid(), Relaxed);

    let mut env_root_pid = None;
    let mut launcher_rank = launcher::RankScan::default();
    let mut dirs = DirSettings {
        tmpdir: b"/tmp",
        ..DirSettings::default()
    };
    let mut i = 0;
    while !envp.is_null() {
        // SAFETY: envp is NULL-terminated.
        let entry = unsafe { *envp.add(i) };
        if entry.is_null() {
            break;
        }
        i += 1;
        // SAFETY: each entry is a C string.
        let kv = unsafe { sys::c_bytes(entry, 1 << 20) };
        let Some(eq) = kv.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        launcher_rank.see(key, value);
        match key {
            b"MPAUDIT_WORKER" => {
                if let Some(w) = parse_u32(value) {
                    WORKER.store(w as i64, Relaxed);
                }
            }
            b"MPAUDIT_ROOT_PID" => env_root_pid = parse_u32(value),
            b"MPAUDIT_WORKER_COUNTER" => _ = saved.worker_counter.set(value),
            b"MPAUDIT_REDIRECT_TABLE" => _ = saved.redirect_table.set(value),
            b"TMPDIR" if value.first() == Some(&b'/') => dirs.tmpdir = value,
            b"PWD" => dirs.pwd = value,
            _ => {
                match key {
                    b"MPAUDIT_LOG_DIR" => dirs.log_dir = value,
                    b"MPAUDIT_FORK_WORKERS" => saved.fork_workers = value == b"1",
                    b"MPAUDIT_OUTPUTS" => _ = saved.outputs.set(value),
                    b"MPAUDIT_COMPONENTS" => _ = saved.components.set(value),
                    b"MPAUDIT_ALLOW" => dirs.user_allow = value,
                    b"MPAUDIT_ACTION" => match ActionSetting::parse(value) {
                        Some(a) => saved.action = a,
                        None => crate::process::warn(
                            b"mpaudit: MPAUDIT_ACTION must be log, redirect or deny; using log\n",
                        ),
                    },
                    b"MPAUDIT_JOB_DIR" => dirs.job_dir = value,
                    b"MPAUDIT_WORKERS_DIR" => dirs.workers_dir = value,
                    _ => {}
                }
                // Directories are handed on in absolute form (below).
                let dir_setting = matches!(
                    key,
                    b"MPAUDIT_LOG_DIR" | b"MPAUDIT_JOB_DIR" | b"MPAUDIT_WORKERS_DIR"
                );
                if key.starts_with(b"MPAUDIT_") && !dir_setting {
                    saved.env_entries.push_cstr(kv);
                }
            }
        }
    }
    if saved.fork_workers {
        // The first image in fork mode is the root; its exec'ed successors
        // (same pid) stay root; everything else inherits its root's pid.
        ROOT_PID.store(env_root_pid.map(|p| p as i32).unwrap_or(pid()), Relaxed);
        // SAFETY: argv from the loader.
        if unsafe { is_fork_server(argc, argv) } && pid() != root_pid() {
            FORK_SERVER.store(true, Relaxed);
            WORKER.store(-1, Relaxed);
        }
    }

    if launcher_rank.rank_override == launcher::RankOverride::Invalid {
        crate::process::warn(b"mpaudit: MPAUDIT_RANK must be none or auto; using auto\n");
    }
    if let Some(r) = launcher_rank.rank() {
        init_rank(r, saved.fork_workers);
    }
    init_policy_dirs(saved, &dirs);

    // SAFETY: Dl_info is pointers and integers, for which all-zero is valid.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: `init` is an address inside this library and `info` a live,
    // writable Dl_info that dladdr only fills in.
    if unsafe { libc::dladdr(init as *const libc::c_void, &mut info) } != 0
        && !info.dli_fname.is_null()
    {
        OWN_BASE.store(info.dli_fbase as usize, Relaxed);
        find_own_end(info.dli_fbase as usize);
        // SAFETY: loader-owned C string.
        saved
            .lib_path
            .set(unsafe { sys::c_bytes(info.dli_fname, 4096) });
    }
    let mut buf = [0u8; 4096];
    // SAFETY: literal C string.
    if let Some(n) = unsafe { sys::readlink(c"/proc/self/exe".as_ptr(), &mut buf) } {
        saved.exe.set(&buf[..n]);
    }
    let exe_name = mpaudit_core::path::file_name(saved.exe.as_bytes());
    let loader_run_explicitly =
        exe_name.starts_with(b"ld-linux") || exe_name.starts_with(b"ld64.so");
    let mut program = None;
    // SAFETY: argv holds argc C strings, from the loader.
    if loader_run_explicitly && argc > 0 && !unsafe { *argv }.is_null() {
        // SAFETY: argv[0] is a C string; buf has PATH_MAX bytes.
        let r = unsafe { libc::realpath(*argv, buf.as_mut_ptr().cast()) };
        if !r.is_null() {
            // SAFETY: realpath wrote a NUL-terminated path into buf.
            program = Some(unsafe { sys::c_bytes(buf.as_ptr().cast(), buf.len()) });
        }
    }
    let _ = match program {
        Some(p) => saved.main_program.set(p),
        None => saved.main_program.set(saved.exe.as_bytes()),
    };
}

/// Under a launcher: the rank, the node name, and the rank as the worker
/// when nothing else numbers this process (no `MPAUDIT_WORKER` from a
/// runner, no fork-mode root that will hand out indices).
fn init_rank(rank: u32, fork_workers: bool) {
    RANK.store(rank as i64, Relaxed);
    if worker().is_none() && !fork_workers {
        WORKER.store(rank as i64, Relaxed);
        WORKER_IS_RANK.store(true, Relaxed);
    }
    // SAFETY: a zeroed utsname is valid; uname only fills it.
    let mut uts: libc::utsname = unsafe { core::mem::zeroed() };
    // SAFETY: load time (see `init`), and uts is a valid out-pointer.
    if unsafe { libc::uname(&mut uts) } == 0 {
        let name = &uts.nodename;
        let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        let mut bytes = [0u8; 65];
        for (b, &c) in bytes.iter_mut().zip(&name[..len.min(64)]) {
            *b = c as u8;
        }
        // SAFETY: load time, single-threaded.
        unsafe { NODE.get_mut() }.set(&bytes[..len.min(64)]);
    }
}

/// The directory and allow settings as found in the environment.
#[derive(Default)]
struct DirSettings<'a> {
    log_dir: &'a [u8],
    job_dir: &'a [u8],
    workers_dir: &'a [u8],
    user_allow: &'a [u8],
    tmpdir: &'a [u8],
    /// `$PWD`: the shell's spelling of the cwd, maybe through a symlink.
    pwd: &'a [u8],
}

/// `realpath(abs)` into `out` when it resolves, else `abs` unchanged (a
/// directory that does not exist yet keeps its lexical form). Load time
/// only: realpath walks the file system.
fn canonical_into(abs: &[u8], out: &mut [u8; 4096]) -> usize {
    let mut c = [0u8; 4097];
    let mut resolved = [0u8; 4097];
    let fallback = |out: &mut [u8; 4096]| {
        let n = abs.len().min(out.len());
        out[..n].copy_from_slice(&abs[..n]);
        n
    };
    let Some(p) = sys::c_path(abs, &mut c) else {
        return fallback(out);
    };
    // SAFETY: `p` is NUL-terminated in `c`; `resolved` has PATH_MAX + 1
    // bytes, as realpath requires of a caller's buffer.
    let r = unsafe { libc::realpath(p, resolved.as_mut_ptr().cast()) };
    if r.is_null() {
        return fallback(out);
    }
    // SAFETY: realpath wrote a NUL-terminated path into `resolved`.
    let bytes = unsafe { sys::c_bytes(resolved.as_ptr().cast(), resolved.len()) };
    if bytes.len() >= out.len() {
        return fallback(out);
    }
    out[..bytes.len()].copy_from_slice(bytes);
    bytes.len()
}

/// Rewrites a leading alias of the job directory in `buf[..n]` (a
/// normalised absolute path) to the canonical job directory, in place, so
/// that `$PWD/x` through a symlink is judged, mapped and logged as the
/// job's `x`. Returns the new length (`n` when nothing matched, or when the
/// result would not fit).
pub fn unalias_job_dir(buf: &mut [u8], n: usize) -> usize {
    let saved = SAVED.get();
    let job = saved.job_dir.as_bytes();
    for alias in &saved.job_dir_aliases {
        let alias = alias.as_bytes();
        let path = &buf[..n];
        let matches = !alias.is_empty()
            && (path == alias || mpaudit_core::path::strip_dir(path, alias).is_some());
        if !matches || n - alias.len() + job.len() > buf.len() {
            continue;
        }
        let new_len = n - alias.len() + job.len();
        buf.copy_within(alias.len()..n, job.len());
        buf[..job.len()].copy_from_slice(job);
        return new_len;
    }
    n
}

/// Resolves the job, workers and allow settings into normalised absolute
/// form. The job directory defaults to the cwd of the first process and is
/// then handed to every exec'ed descendant, so they all agree on it.
fn init_policy_dirs(saved: &mut Saved, dirs: &DirSettings) {
    let mut cwd = [0u8; 4096];
    let cwd_len = sys::getcwd(&mut cwd).unwrap_or(0);
    let cwd = (cwd_len > 0).then_some(&cwd[..cwd_len]);
    let mut buf = [0u8; 4096];
    let job = if dirs.job_dir.is_empty() {
        cwd.unwrap_or(b"/")
    } else {
        dirs.job_dir
    };
    let n = absolutize(job, cwd, &mut buf).unwrap_or(0);
    let mut canonical = [0u8; 4096];
    let cn = canonical_into(&buf[..n], &mut canonical);
    saved.job_dir.set(&canonical[..cn]);
    // The spelling given, and the shell's `$PWD` when it names the same
    // directory, are aliases of the canonical one.
    let mut aliases = 0;
    if buf[..n] != canonical[..cn] {
        saved.job_dir_aliases[aliases].set(&buf[..n]);
        aliases += 1;
    }
    if dirs.pwd.first() == Some(&b'/') {
        let mut pwd = [0u8; 4096];
        let pn = absolutize(dirs.pwd, None, &mut pwd).unwrap_or(0);
        let mut resolved = [0u8; 4096];
        let rn = canonical_into(&pwd[..pn], &mut resolved);
        if pn > 0 && pwd[..pn] != canonical[..cn] && resolved[..rn] == canonical[..cn] {
            saved.job_dir_aliases[aliases].set(&pwd[..pn]);
        }
    }
    let workers: &[u8] = if dirs.workers_dir.is_empty() {
        b"mpaudit-workers"
    } else {
        dirs.workers_dir
    };
    let wn = absolutize(workers, Some(saved.job_dir.as_bytes()), &mut buf).unwrap_or(0);
    let wn = unalias_job_dir(&mut buf, wn);
    saved.workers_dir.set(&buf[..wn]);
    if !dirs.log_dir.is_empty() {
        let ln = absolutize(dirs.log_dir, cwd, &mut buf).unwrap_or(0);
        let ln = unalias_job_dir(&mut buf, ln);
        saved.log_dir.set(&buf[..ln]);
    }
    saved.workers_dir_sound = mpaudit_core::policy::workers_dir_is_sound(
        saved.workers_dir.as_bytes(),
        saved.job_dir.as_bytes(),
        saved.log_dir.as_bytes(),
    );
    if !saved.workers_dir_sound {
        crate::process::warn(
            b"mpaudit: MPAUDIT_WORKERS_DIR is or holds the job directory (or holds the log directory); its worker directories get no special status\n",
        );
    }
    for (key, value) in [
        (&b"MPAUDIT_JOB_DIR="[..], saved.job_dir.as_bytes()),
        (b"MPAUDIT_WORKERS_DIR=", saved.workers_dir.as_bytes()),
        (b"MPAUDIT_LOG_DIR=", saved.log_dir.as_bytes()),
    ] {
        if value.is_empty() {
            continue;
        }
        let mut entry = [0u8; 4200];
        let mut sink = mpaudit_core::json::SliceSink::new(&mut entry);
        mpaudit_core::json::Sink::put(&mut sink, key);
        mpaudit_core::json::Sink::put(&mut sink, value);
        let len = sink.len;
        saved.env_entries.push_cstr(&entry[..len]);
    }

    // The allow list: the user's globs, then the defaults.
    let mut allow = [0u8; 20480];
    let mut sink = mpaudit_core::json::SliceSink::new(&mut allow);
    let mut add = |parts: &[&[u8]]| {
        if sink.len > 0 {
            mpaudit_core::json::Sink::put(&mut sink, b":");
        }
        for p in parts {
            mpaudit_core::json::Sink::put(&mut sink, p);
        }
    };
    if !dirs.user_allow.is_empty() {
        add(&[dirs.user_allow]);
    }
    add(&[mpaudit_core::policy::ALWAYS_ALLOWED]);
    // /dev and the temporary directory are allowed too, but outside the job
    // directory only (a job may run in /tmp or /dev/shm): see
    // `audit::is_scratch`.
    let mut t = [0u8; 4096];
    let tn = absolutize(dirs.tmpdir, None, &mut t).unwrap_or(0);
    saved.tmpdir.set(&t[..tn]);
    let len = sink.len;
    saved.allow.set(&allow[..len]);
    set_worker_dir(saved);
}

/// Recomputes `worker_dir` for the current worker index.
fn set_worker_dir(saved: &mut Saved) {
    // A rank that is its own worker is `worker_<rank>`; a local worker of a
    // rank is `rank_<r>/worker_<k>` (mpaudit_core::map::worker_dir_for).
    let rank = rank().filter(|_| !worker_is_rank());
    let Saved {
        workers_dir,
        worker_dir,
        ..
    } = saved;
    worker_dir.fill_with(|out| {
        worker()
            .and_then(|w| mpaudit_core::map::worker_dir_for(workers_dir.as_bytes(), rank, w, out))
    });
}

/// Python's multiprocessing forkserver, recognised by the command line
/// multiprocessing gives it: `python [flags] -c 'from
/// multiprocessing.forkserver import main; main(…)'`.
///
/// # Safety
/// `argv` has `argc` C strings.
unsafe fn is_fork_server(argc: i32, argv: *const *const libc::c_char) -> bool {
    const FORKSERVER_MAIN: &[u8] = b"from multiprocessing.forkserver import main";
    if argv.is_null() {
        return false;
    }
    // SAFETY: the caller's contract.
    let arg = |i: i32| unsafe { sys::c_bytes(*argv.add(i as usize), 1 << 16) };
    (1..argc - 1).any(|i| arg(i) == b"-c" && arg(i + 1).starts_with(FORKSERVER_MAIN))
}

/// In fork mode, maps the job's shared worker-index counter: each root
/// image creates one (a one-page file `mpaudit-<pid>-<ns>.workers` in the
/// log directory, which the log reader ignores; an image the root execs
/// starts counting again from 0, as it always did) and hands its path down
/// in MPAUDIT_WORKER_COUNTER; fork servers below it map it. Without a log
/// directory the root counts alone, and fork servers do not number their
/// children. Runs at load, after the log directory exists.
pub fn map_worker_counter() {
    let saved = SAVED.get();
    let root = is_root();
    if !saved.fork_workers || !(root || FORK_SERVER.load(Relaxed)) {
        pass_on_worker_counter();
        return;
    }
    let mut path = [0u8; 4200];
    let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
    let n = if root {
        let dir = saved.log_dir.as_bytes();
        if dir.is_empty() {
            return;
        }
        use mpaudit_core::json::{put_i64, put_u64, Sink, SliceSink};
        let mut s = SliceSink::new(&mut path);
        s.put(dir);
        s.put(b"/mpaudit-");
        put_i64(&mut s, pid() as i64);
        s.put(b"-");
        put_u64(&mut s, sys::now_ns());
        s.put(b".workers");
        if s.overflow || s.len >= 4199 {
            return;
        }
        flags |= libc::O_CREAT | libc::O_EXCL;
        s.len
    } else {
        let p = saved.worker_counter.as_bytes();
        if p.is_empty() {
            return;
        }
        path[..p.len()].copy_from_slice(p);
        p.len()
    };
    path[n] = 0;
    // SAFETY: NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { sys::openat(libc::AT_FDCWD, path.as_ptr().cast(), flags, 0o644) };
    if fd < 0 {
        return;
    }
    // SAFETY: our own descriptor; a shared mapping of one page.
    let p = unsafe {
        if flags & libc::O_CREAT != 0 && libc::syscall(libc::SYS_ftruncate, fd, 4096) != 0 {
            sys::close(fd);
            return;
        }
        libc::mmap(
            core::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    sys::close(fd);
    if p == libc::MAP_FAILED {
        return;
    }
    if flags & libc::O_CREAT != 0 {
        // Carry on from what this root handed out before (nothing, at load).
        // SAFETY: the fresh page; its first word is the counter.
        unsafe { &*(p as *const AtomicU32) }.store(NEXT_WORKER.load(Relaxed), Relaxed);
        // SAFETY: load time, single-threaded.
        unsafe { SAVED.get_mut() }.worker_counter.set(&path[..n]);
    }
    pass_on_worker_counter();
    SHARED_NEXT.store(p as usize, Relaxed);
}

/// Puts MPAUDIT_WORKER_COUNTER (`worker_counter`, if set) into the
/// environment exec'ed programs get.
fn pass_on_worker_counter() {
    let path = SAVED.get().worker_counter.as_bytes();
    if path.is_empty() {
        return;
    }
    let mut entry = [0u8; 4300];
    let mut s = mpaudit_core::json::SliceSink::new(&mut entry);
    mpaudit_core::json::Sink::put(&mut s, b"MPAUDIT_WORKER_COUNTER=");
    mpaudit_core::json::Sink::put(&mut s, path);
    if s.overflow {
        return;
    }
    let len = s.len;
    // SAFETY: load time, single-threaded.
    unsafe { SAVED.get_mut() }
        .env_entries
        .push_cstr(&entry[..len]);
}

/// Called by a fork hook in the parent just before the real fork: the root
/// (or a fork server) assigns the next worker index to the child to be.
pub fn before_fork() -> Option<u32> {
    let w = hands_out_workers().then(|| next_worker_counter().fetch_add(1, Relaxed));
    let _ = PENDING_WORKER.try_with(|p| p.set(w.map(|w| w as i64).unwrap_or(-1)));
    w
}

/// In the parent after the fork: clears the pending index and gives it back
/// if the fork failed (when no later fork took one meanwhile).
pub fn after_fork_parent(assigned: Option<u32>, failed: bool) {
    let _ = PENDING_WORKER.try_with(|p| p.set(-1));
    if let (Some(w), true) = (assigned, failed) {
        let _ = next_worker_counter().compare_exchange(w + 1, w, Relaxed, Relaxed);
    }
}

/// In the child, from the `pthread_atfork` child handler (which runs for
/// every fork through glibc, whether or not our hook saw it).
pub fn after_fork_child() {
    // Still the parent's tid (cached): the blocks this thread holds stay held.
    crate::pool::after_fork_child(crate::guard::tid());
    crate::guard::forget_tid();
    PID.store(sys::getpid(), Relaxed);
    PPID.store(sys::getppid(), Relaxed);
    let pending = PENDING_WORKER.try_with(|p| p.replace(-1)).unwrap_or(-1);
    // A fork server's children are ordinary processes (their own forks
    // belong to their worker).
    FORK_SERVER.store(false, Relaxed);
    if pending >= 0 {
        WORKER.store(pending, Relaxed);
        // SAFETY: the child of a fork is single-threaded here.
        set_worker_dir(unsafe { SAVED.get_mut() });
        crate::redirect::attach_after_fork();
    }
}
