//! Process lifecycle: the log file of each image, fork bookkeeping, exec and
//! spawn with the environment doctored so that a scrubbed environment
//! (`env -i`, a sanitising launcher) cannot drop the audit, and exit.

use crate::audit::log_process;
use crate::state::{self, SAVED};
use crate::{log, sys};
use libc::{c_char, c_int};
use mpaudit_core::event::{Process, Strings};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering::*};

static EXIT_LOGGED: AtomicBool = AtomicBool::new(false);

/// A NULL-terminated C array of C strings.
pub struct CArgv(pub *const *const c_char);

impl Strings for CArgv {
    fn each(&self, f: &mut dyn FnMut(&[u8])) {
        if self.0.is_null() {
            return;
        }
        let mut i = 0;
        loop {
            // SAFETY: NULL-terminated array of C strings, as exec requires.
            let p = unsafe { *self.0.add(i) };
            if p.is_null() || i > 1 << 16 {
                break;
            }
            // SAFETY: each element is a C string.
            f(unsafe { sys::c_bytes(p, 1 << 20) });
            i += 1;
        }
    }
}

/// Opens this image's log file and writes its `start` event.
pub fn open_log_and_start() {
    let dir = SAVED.get().log_dir.as_bytes();
    if dir.is_empty() {
        return;
    }
    // Buffers from the pool: this runs in a forked child's atfork handler,
    // maybe on a signal handler's small stack.
    let Some(mut claimed) = crate::pool::claim() else {
        return;
    };
    let b = claimed.block();
    let path = &mut b.work[..4200];
    let Some(n) = log_file_name(dir, state::pid(), sys::now_ns(), path) else {
        return;
    };
    make_dirs(&mut path[..n]);
    if log::create(&path[..n]).is_err() {
        warn(b"mpaudit: cannot create the event log in MPAUDIT_LOG_DIR; this process is not logged\n");
        return;
    }
    let (_, argv) = state::argv();
    log_process(&Process::Start {
        argv: &CArgv(argv),
        exe: state::exe(),
        cwd: crate::guard::cwd(&mut b.cwd).unwrap_or(b""),
        root: state::is_root(),
    });
}

/// `<dir>/mpaudit-<pid>-<ns>.jsonl` with a NUL, into `out`; under a
/// launcher `<dir>/mpaudit-<node>-r<rank>-<pid>-<ns>.jsonl`, so that ranks
/// on different nodes sharing one directory never collide (pids repeat
/// across nodes).
fn log_file_name(dir: &[u8], pid: i32, ns: u64, out: &mut [u8]) -> Option<usize> {
    let mut sink = mpaudit_core::json::SliceSink::new(out);
    use mpaudit_core::json::Sink;
    sink.put(dir);
    sink.put(b"/mpaudit-");
    if let Some(rank) = state::rank() {
        mpaudit_core::launcher::put_node_file_name(state::node(), |b| sink.put(&[b]));
        sink.put(b"-r");
        mpaudit_core::json::put_u64(&mut sink, rank as u64);
        sink.put(b"-");
    }
    mpaudit_core::json::put_i64(&mut sink, pid as i64);
    sink.put(b"-");
    mpaudit_core::json::put_u64(&mut sink, ns);
    sink.put(b".jsonl\0");
    (!sink.overflow).then_some(sink.len - 1)
}

/// `mkdir -p` of the directory part of `path` (NUL-terminated after it).
fn make_dirs(path: &mut [u8]) {
    for i in 1..path.len() {
        if path[i] == b'/' {
            path[i] = 0;
            // SAFETY: NUL-terminated prefix of path.
            unsafe { sys::mkdirat(libc::AT_FDCWD, path.as_ptr().cast(), 0o755) };
            path[i] = b'/';
        }
    }
}

pub fn warn(msg: &[u8]) {
    sys::write_all(2, msg);
}

/// The `pthread_atfork` child handler: a fresh log for the child.
pub extern "C" fn atfork_child() {
    adopt_fork_child();
}

/// In a fork child, run by whoever notices the fork first: the atfork
/// handler, the `_Fork` hook, or the first event of a child whose fork we
/// never saw (raw `clone`/`syscall(SYS_fork)`; log.rs finds its
/// `MADV_WIPEONFORK` marker zeroed). Drops the parent's log state unseen
/// and starts the child's own log; later callers do nothing.
pub fn adopt_fork_child() {
    if !log::claim_after_fork() {
        return;
    }
    let _errno = sys::ErrnoGuard::save();
    state::after_fork_child();
    EXIT_LOGGED.store(false, SeqCst);
    log::forget_after_fork();
    open_log_and_start();
    log::mark_owned();
}

/// A fork no hook saw, noticed before its first event is built (so that
/// the event carries the child's pid).
#[inline]
pub fn notice_unseen_fork() {
    if log::enabled() && log::inherited() {
        adopt_fork_child();
    }
}

/// `_Fork` (glibc 2.34): a fork that runs no atfork handlers, so the child
/// side of ours runs here.
pub fn fork_without_handlers(real: impl FnOnce() -> libc::pid_t) -> libc::pid_t {
    let pid = fork(real);
    if pid == 0 && state::ready() {
        adopt_fork_child();
    }
    pid
}

/// Runs the real fork (also used for vfork) with the worker bookkeeping.
pub fn fork(real: impl FnOnce() -> libc::pid_t) -> libc::pid_t {
    if !state::ready() {
        return real();
    }
    let assigned = state::before_fork();
    let pid = real();
    if pid != 0 {
        let saved = sys::ErrnoGuard::save();
        state::after_fork_parent(assigned, pid < 0);
        if pid > 0 {
            log_process(&Process::Fork { child: pid });
        }
        drop(saved);
    }
    pid
}

// ---- exec and spawn ----------------------------------------------------------

/// An environment block built in its own anonymous mapping (no malloc: exec
/// may run in a vfork/fork child or a signal handler); none when the
/// program's environment is used unchanged.
pub struct DoctoredEnv {
    map: Option<sys::Mapping>,
    envp: *const *const c_char,
    /// Offset of the mapping's unused bytes (room for one rewritten
    /// `LD_PRELOAD`, see [`DoctoredEnv::without_the_library`]).
    spare: usize,
}

impl DoctoredEnv {
    pub fn envp(&self) -> *const *const c_char {
        self.envp
    }

    /// For a program handed to the supervisor, which audits it whole: the
    /// library out of its `LD_PRELOAD` (mpaudit_core::handoff::preload_without),
    /// the variable dropped when nothing else is left in it. Nothing
    /// changes when the environment could not be doctored.
    pub fn without_the_library(&mut self) {
        let Some(map) = &self.map else {
            return;
        };
        let (base, size) = (map.base(), map.size());
        let lib = SAVED.get().lib_path.as_bytes();
        let ptrs = base as *mut *const c_char;
        let mut i = 0usize;
        // SAFETY: `ptrs` is the NULL-terminated array doctor_env built in
        // our mapping; its entries are C strings; the spare bytes from
        // `self.spare` to the mapping's end are ours and unused.
        unsafe {
            loop {
                let e = *ptrs.add(i);
                if e.is_null() {
                    return;
                }
                if starts_with(e, b"LD_PRELOAD=") {
                    break;
                }
                i += 1;
            }
            let value = &sys::c_bytes(*ptrs.add(i), 1 << 20)[11..];
            let spare = core::slice::from_raw_parts_mut(base.add(self.spare), size - self.spare);
            if spare.len() < 12 + value.len() {
                return;
            }
            spare[..11].copy_from_slice(b"LD_PRELOAD=");
            let end = spare.len() - 1;
            let Some(n) = mpaudit_core::handoff::preload_without(value, lib, &mut spare[11..end])
            else {
                return;
            };
            spare[11 + n] = 0;
            if n > 0 {
                *ptrs.add(i) = spare.as_ptr().cast();
                self.spare += 12 + n;
                return;
            }
            // Nothing else was preloaded: the variable goes.
            loop {
                let next = *ptrs.add(i + 1);
                *ptrs.add(i) = next;
                if next.is_null() {
                    return;
                }
                i += 1;
            }
        }
    }
}

fn starts_with(p: *const c_char, prefix: &[u8]) -> bool {
    // SAFETY: environment entries are C strings; we stop at a mismatch,
    // which the terminating NUL always is.
    prefix
        .iter()
        .enumerate()
        .all(|(i, &b)| unsafe { *p.add(i) } as u8 == b)
}

/// `envp` with mpaudit's variables restored: LD_PRELOAD holds the library,
/// and the `MPAUDIT_*` settings are those of this process (worker index and
/// root pid as this process knows them). Falls back to `envp` unchanged
/// when anything fails.
pub fn doctor_env(envp: *const *const c_char) -> DoctoredEnv {
    let unchanged = DoctoredEnv {
        map: None,
        envp,
        spare: 0,
    };
    let saved = SAVED.get();
    let lib = saved.lib_path.as_bytes();
    if lib.is_empty() {
        return unchanged;
    }
    let mut count = 0usize;
    let mut preload: *const c_char = core::ptr::null();
    if !envp.is_null() {
        // SAFETY: a non-NULL `envp` is the program's environment array, which
        // execve(2) and posix_spawn(3) require to end with a NULL pointer;
        // `count` never passes that terminator.
        while !unsafe { *envp.add(count) }.is_null() {
            // SAFETY: the same slot just read: in bounds, before the NULL.
            let e = unsafe { *envp.add(count) };
            if starts_with(e, b"LD_PRELOAD=") {
                preload = e;
            }
            count += 1;
        }
    }
    // SAFETY: `preload` is one of the program's environment entries, a C
    // string that starts with the 11 bytes of "LD_PRELOAD=".
    let preload_value =
        (!preload.is_null()).then(|| unsafe { &sys::c_bytes(preload, 1 << 20)[11..] });
    let has_lib =
        preload_value.is_some_and(|v| v.split(|&b| b == b':' || b == b' ').any(|p| p == lib));
    let entries = saved.env_entries.as_bytes();
    let table = crate::redirect::table_path();
    // The last term: room for the LD_PRELOAD without the library
    // (DoctoredEnv::without_the_library).
    let strings_size = 11
        + lib.len()
        + 1
        + preload_value.map_or(0, |v| v.len())
        + 1
        + 64
        + 64
        + 32
        + table.len()
        + 12
        + lib.len()
        + preload_value.map_or(0, |v| v.len());
    let extra = entries.iter().filter(|&&b| b == 0).count() + 4;
    let ptrs_size = (count + extra + 1) * core::mem::size_of::<*const c_char>();
    let Some(map) = sys::Mapping::anonymous(ptrs_size + strings_size) else {
        return unchanged;
    };
    let (base, size) = (map.base(), map.size());
    let ptrs = base as *mut *const c_char;
    // SAFETY: strings area follows the pointer array inside the mapping.
    let strings = unsafe { core::slice::from_raw_parts_mut(base.add(ptrs_size), size - ptrs_size) };
    let mut used = 0usize;
    let mut put = |parts: &[&[u8]]| -> *const c_char {
        let start = used;
        for p in parts {
            strings[used..used + p.len()].copy_from_slice(p);
            used += p.len();
        }
        strings[used] = 0;
        used += 1;
        strings[start..].as_ptr().cast()
    };
    let mut n = 0usize;
    let mut push = |p: *const c_char| {
        // SAFETY: the array has room for `count + extra + 1` pointers, and
        // at most that many are pushed: up to `count` of the program's
        // entries, one LD_PRELOAD, one per NUL-terminated saved entry, the
        // worker, the redirect table, the root pid and the NULL. The mapping is page-aligned.
        unsafe { *ptrs.add(n) = p };
        n += 1;
    };
    for i in 0..count {
        // SAFETY: i < count.
        let e = unsafe { *envp.add(i) };
        let ours = starts_with(e, b"MPAUDIT_");
        if ours || (e == preload && !has_lib) {
            continue;
        }
        push(e);
    }
    if !has_lib {
        match preload_value {
            Some(v) if !v.is_empty() => push(put(&[b"LD_PRELOAD=", lib, b":", v])),
            _ => push(put(&[b"LD_PRELOAD=", lib])),
        }
    }
    for entry in entries.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        // SAFETY: entries are NUL-terminated inside SAVED, which is static.
        push(entry.as_ptr().cast());
    }
    let mut num = [0u8; 24];
    if let Some(w) = state::worker().filter(|_| !state::worker_is_rank()) {
        push(put(&[b"MPAUDIT_WORKER=", sys::decimal(w as u64, &mut num)]));
    }
    if !table.is_empty() {
        push(put(&[b"MPAUDIT_REDIRECT_TABLE=", table]));
    }
    if state::root_pid() > 0 {
        push(put(&[
            b"MPAUDIT_ROOT_PID=",
            sys::decimal(state::root_pid() as u64, &mut num),
        ]));
    }
    push(core::ptr::null());
    DoctoredEnv {
        map: Some(map),
        envp: ptrs as *const *const c_char,
        spare: ptrs_size + used,
    }
}

/// Why an exec target cannot be audited by a preload library, if so.
pub fn unaudited_reason(path: *const c_char) -> Option<&'static str> {
    if path.is_null() {
        return None;
    }
    // SAFETY: C string from the program.
    let st = unsafe { sys::stat(path, 0) }?;
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if (st.st_mode & libc::S_ISUID != 0 && st.st_uid != uid)
        || (st.st_mode & libc::S_ISGID != 0 && st.st_gid != gid)
    {
        return Some("setuid");
    }
    // SAFETY: C string.
    let fd = unsafe { sys::openat(libc::AT_FDCWD, path, libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // The dynamic loader run as a program (`ld-linux-x86-64.so.2 --version`,
    // as ROOT does) has no PT_INTERP either, but it is no static program: it
    // honours LD_PRELOAD for the program it runs.
    // SAFETY: C string from the program (checked non-NULL above).
    let loader = is_loader_name(unsafe { core::ffi::CStr::from_ptr(path) }.to_bytes());
    let reason = if crate::unseen::is_go_elf(fd) {
        Some("go")
    } else {
        (!loader && is_static_elf(fd)).then_some("static")
    };
    sys::close(fd);
    reason
}

/// `ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`, `ld-2.31.so`,
/// `ld64.so.2`, `ld-musl-x86_64.so.1`: the file name of a dynamic loader.
fn is_loader_name(path: &[u8]) -> bool {
    let name = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    };
    (name.starts_with(b"ld-") || name.starts_with(b"ld64.so"))
        && name.windows(3).any(|w| w == b".so")
}

/// An ELF executable without a PT_INTERP program header is statically linked.
fn is_static_elf(fd: c_int) -> bool {
    let mut hdr = [0u8; 64];
    if sys::pread(fd, &mut hdr, 0) < 64 || &hdr[..4] != b"\x7fELF" || hdr[4] != 2 {
        return false; // scripts and 32-bit objects: not judged here
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let (phoff, phentsize, phnum) = (u64_at(&hdr, 32), u16_at(&hdr, 54), u16_at(&hdr, 56));
    if phentsize < 56 {
        return false;
    }
    let mut ph = [0u8; 56];
    for i in 0..phnum.min(128) {
        if sys::pread(fd, &mut ph, phoff + i * phentsize) < 56 {
            return false;
        }
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == libc::PT_INTERP {
            return false;
        }
    }
    true
}

/// Resolves `file` through PATH the way execvp and posix_spawnp do (the
/// caller's PATH, else `/bin:/usr/bin`; the first executable regular file),
/// into `out`; a name with a slash is used as is.
pub fn search_path(file: *const c_char, out: &mut [u8]) -> Option<usize> {
    // SAFETY: a checked read of the program's argument (an unreadable one
    // is left to libc, which fails with EFAULT).
    let name = unsafe { crate::checked::Pages::default().c_bytes(file, 4096) }?;
    if name.contains(&b'/') || name.is_empty() {
        let n = name.len().min(out.len() - 1);
        out[..n].copy_from_slice(&name[..n]);
        out[n] = 0;
        return Some(n);
    }
    // SAFETY: getenv reads environ; no allocation.
    let path = unsafe { libc::getenv(c"PATH".as_ptr()) };
    let dirs: &[u8] = if path.is_null() {
        b"/bin:/usr/bin"
    } else {
        // SAFETY: a non-NULL getenv result points at the value of a
        // NUL-terminated `environ` entry; glibc never frees entries replaced
        // by setenv/putenv, so it stays readable while we walk it here.
        unsafe { sys::c_bytes(path, 1 << 16) }
    };
    // A block for a candidate's path in the worker's view, only when the
    // worker has redirected anything.
    let mut claimed = if crate::redirect::any_redirected() {
        crate::pool::claim()
    } else {
        None
    };
    let mut hidden: Option<&[u8]> = None;
    for dir in dirs.split(|&b| b == b':') {
        let Some(n) = candidate(dir, name, out) else {
            continue;
        };
        match runnable_in_view(out.as_ptr().cast(), &mut claimed) {
            Some(true) => return Some(n),
            Some(false) => {}
            None => hidden = hidden.or(Some(dir)),
        }
    }
    // Nothing to run, but the worker's view hides a file glibc's own
    // search would find in the shared tree (the worker removed it): that
    // candidate, which the exec then fails with the view's ENOENT.
    candidate(hidden?, name, out)
}

/// The path glibc's PATH search tries for `name` in `dir`, NUL-terminated
/// in `out`: `dir/name`, or `name` alone for an empty entry (the cwd:
/// glibc adds no `./`, and a script run from there sees that name as
/// `$0`). `None` when it does not fit.
fn candidate(dir: &[u8], name: &[u8], out: &mut [u8]) -> Option<usize> {
    let sep = usize::from(!dir.is_empty());
    let n = dir.len() + sep + name.len();
    if n + 1 > out.len() {
        return None;
    }
    out[..dir.len()].copy_from_slice(dir);
    out[dir.len()..dir.len() + sep].fill(b'/');
    out[dir.len() + sep..n].copy_from_slice(name);
    out[n] = 0;
    Some(n)
}

/// Whether a PATH candidate is what glibc's search would run: an
/// executable regular file, in the worker's view (a program the worker
/// wrote is in its directory); `None` when the view hides it (the worker
/// removed it).
fn runnable_in_view(
    candidate: *const c_char,
    claimed: &mut Option<crate::pool::Claimed>,
) -> Option<bool> {
    let out = claimed.as_mut().map(|c| &mut c.block().target2[..]);
    let (path, routed) = match routed_program(candidate, Named::Path { follow: true }, out) {
        Ok(Some(p)) => (p, true),
        Ok(None) => (candidate, false),
        Err(_) => return None,
    };
    // SAFETY: NUL-terminated path.
    let executable =
        unsafe { libc::syscall(libc::SYS_faccessat, libc::AT_FDCWD, path, libc::X_OK, 0) } == 0;
    // A file the worker removed is routed to its absence.
    if routed && !executable && sys::errno() == libc::ENOENT {
        return None;
    }
    // A directory passes X_OK, but exec fails on it and glibc's
    // search goes on to the next entry.
    // SAFETY: NUL-terminated path.
    Some(
        executable
            && unsafe { sys::stat(path, 0) }
                .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG),
    )
}

/// How an exec names its program: by a path the worker's view routes
/// (`follow`: through a symlink leaf, as execve does; not with execveat's
/// `AT_SYMLINK_NOFOLLOW`), or as is: a descriptor (fexecve, execveat's
/// `AT_EMPTY_PATH`) names the file itself, and a name PATH does not hold
/// is left to libc's search to fail.
#[derive(Clone, Copy)]
pub enum Named {
    Path { follow: bool },
    AsIs,
}

/// Where an exec or spawn of `exe` finds its program in the worker's view
/// (audit::exec_in_view): `Ok(Some(path))` the worker's file, in `out`.
fn routed_program(
    exe: *const c_char,
    named: Named,
    out: Option<&mut [u8]>,
) -> Result<Option<*const c_char>, c_int> {
    let (Named::Path { follow }, Some(out)) = (named, out) else {
        return Ok(None);
    };
    // SAFETY: `exe` was found readable (exec_arguments_readable).
    match unsafe { crate::audit::exec_in_view(crate::audit::PathArg::cwd(exe), follow, out) } {
        Ok(true) => Ok(Some(out.as_ptr().cast())),
        Ok(false) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Logs an exec about to happen, runs it with a doctored environment, and
/// logs its failure if it returns. `exe` is the resolved target
/// (NUL-terminated), which the event names; `real(routed, envp)` runs it,
/// `routed` the worker's file when the worker's view has the program in
/// its directory (a script or binary the job wrote under redirect), `None`
/// for the program's own path. A program the view hides fails with the
/// view's errno (ENOENT) without the kernel.
pub fn exec(
    exe: *const c_char,
    named: Named,
    argv: *const *const c_char,
    envp: *const *const c_char,
    mut real: impl FnMut(Option<*const c_char>, *const *const c_char) -> c_int,
) -> c_int {
    if !state::ready() {
        return real(None, envp);
    }
    // Our checks (a stat that fails, say) must not change the errno the
    // program sees: put it back before the real call.
    let entry_errno = sys::ErrnoGuard::save();
    if !exec_arguments_readable(exe, argv, envp) {
        drop(entry_errno);
        return real(None, envp); // fails with EFAULT, as bare
    }
    let mut env = doctor_env(envp);
    let exe_bytes = sys::c_bytes_or_empty(exe, 4096);
    // The cwd from a pool block: no 4 KiB on a possibly small stack; the
    // block's target buffer holds the supervisor's filter if needed, its
    // second one the program's path in the worker's view.
    let mut claimed = crate::pool::claim();
    let (cwd, scratch, routed): (&[u8], Option<&mut [u8]>, Option<&mut [u8]>) =
        match claimed.as_mut() {
            Some(c) => {
                let b = c.block();
                (
                    crate::guard::cwd(&mut b.cwd).unwrap_or(b""),
                    Some(&mut b.target[..]),
                    Some(&mut b.target2[..]),
                )
            }
            None => (b"", None, None),
        };
    let routed = routed_program(exe, named, routed);
    // A script the worker wrote runs as from its job path: its interpreter
    // is exec'ed, itself as found in the view (script.rs).
    let mut script = match routed {
        // SAFETY: `p` is the routed path, NUL-terminated; `exe` and `argv`
        // were found readable.
        Ok(Some(p)) => unsafe { crate::script::prepare(p, exe, argv) },
        _ => None,
    };
    let routed = match (&mut script, routed) {
        (Some(s), Ok(Some(_))) => {
            let interpreter = s.interpreter;
            routed_program(
                interpreter,
                Named::Path { follow: true },
                Some(s.program_buf()),
            )
            .map(|r| Some(r.unwrap_or(interpreter)))
        }
        (_, r) => r,
    };
    let program = match routed {
        Ok(Some(p)) => p,
        _ => exe,
    };
    let (unaudited, supervised) = if routed.is_ok() {
        hand_over_if_needed(program, exe_bytes, scratch)
    } else {
        (None, false) // fails without the kernel: stays here, unfiltered
    };
    let args = CArgv(argv);
    let event = |result, errno| Process::Exec {
        argv: &args,
        exe: exe_bytes,
        cwd,
        result,
        errno,
        unaudited,
        supervised,
    };
    log_process(&event(None, 0));
    // A successful exec leaves this log behind: trim it now (if exec
    // fails, later events are written with pwrite).
    log::finish();
    log::wait_for_writers();
    drop(entry_errno);
    let r = match (routed, &script) {
        (Ok(Some(interpreter)), Some(s)) => {
            if supervised {
                env.without_the_library();
                exec_under_the_filter(|| sys::execve(interpreter, s.argv(), env.envp()))
            } else {
                sys::execve(interpreter, s.argv(), env.envp())
            }
        }
        (Ok(p), _) if supervised => {
            env.without_the_library();
            exec_under_the_filter(|| real(p, env.envp()))
        }
        (Ok(p), _) => real(p, env.envp()),
        (Err(e), _) => {
            sys::set_errno(e);
            -1
        }
    };
    drop(script);
    let saved = sys::ErrnoGuard::save();
    log_process(&event(Some(r as i64), saved.value()));
    drop(env);
    drop(saved);
    r
}

/// The real exec once this process is under the supervisor's filter: the
/// filter stops execve for the supervisor, and a signal that comes before
/// the supervisor took the call fails it with EINTR when the program's
/// handler has no SA_RESTART (an exec never fails so bare): the call did
/// not happen and is made again, for at most
/// [`mpaudit_core::handoff::ANSWER_TIMEOUT_S`].
fn exec_under_the_filter(mut exec: impl FnMut() -> c_int) -> c_int {
    let deadline = sys::now_ns() + mpaudit_core::handoff::ANSWER_TIMEOUT_S as u64 * 1_000_000_000;
    let program_errno = sys::errno();
    loop {
        let r = exec();
        if r != -1 || sys::errno() != libc::EINTR || sys::now_ns() > deadline {
            return r;
        }
        sys::set_errno(program_errno);
    }
}

/// Whether `exe` needs the supervisor (static or Go), and if so puts this
/// process under its filter (`buf` receives the BPF program; without one
/// the program stays unaudited): `(why the
/// program is not audited, whether it was handed over)`. Warns on stderr
/// without a runner. The exec hook's decision; the spawn hook makes the
/// same one with [`needs_the_supervisor`].
fn hand_over_if_needed(
    exe: *const c_char,
    exe_bytes: &[u8],
    buf: Option<&mut [u8]>,
) -> (Option<&'static str>, bool) {
    let reason = unaudited_reason(exe);
    if let (true, Some(buf)) = (needs_the_supervisor(reason), buf) {
        if crate::supervised::hand_over(buf) {
            return (None, true);
        }
    }
    if let Some(r) = reason {
        crate::unseen::warn_without_runner(exe_bytes, r);
    }
    (reason, false)
}

/// The programs the supervisor audits in the library's stead: static and
/// Go ones (a setuid program stays unaudited: the filter would drop its
/// privileges).
fn needs_the_supervisor(reason: Option<&str>) -> bool {
    matches!(reason, Some("static" | "go"))
}

/// Whether exec's path, argv and envp can be read: the kernel fails an
/// exec of unreadable ones with EFAULT, which our reads must not turn into
/// a crash (`exe` is the resolved target, NULL when there is none).
fn exec_arguments_readable(
    exe: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> bool {
    let mut pages = crate::checked::Pages::default();
    // SAFETY: checked reads only, nothing kept.
    let exe_ok = unsafe { pages.c_bytes(exe, 4096) }.is_some();
    exe_ok && pages.string_array(argv, ARGV_ENTRIES) && pages.string_array(envp, ARGV_ENTRIES)
}

/// Entries of argv and envp the library reads (`CArgv`, `doctor_env`).
const ARGV_ENTRIES: usize = (1 << 16) + 2;

/// A spawn's program: `given` as passed, `exe` as resolved (posix_spawnp's
/// PATH search), `resolved` false when that search found nothing.
pub struct SpawnTarget {
    pub given: *const c_char,
    pub exe: *const c_char,
    pub resolved: bool,
}

/// posix_spawn(p): doctored environment, a `spawn` event after the call;
/// refused up front when one of its file actions was (`file_actions` is
/// the program's `posix_spawn_file_actions_t` pointer);
/// `real(pid_out, path, argv, envp)` is the real call with the program's
/// file actions and attributes. A static or Go program is spawned through
/// the runner's trampoline, which hands it to the supervisor
/// (supervised.rs): glibc execs it in a child no hook sees.
pub fn spawn(
    pid: *mut libc::pid_t,
    program: SpawnTarget,
    argv: *const *const c_char,
    envp: *const *const c_char,
    file_actions: usize,
    real: impl FnOnce(
        *mut libc::pid_t,
        *const c_char,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
) -> c_int {
    let SpawnTarget {
        given,
        exe,
        resolved,
    } = program;
    if !state::ready() {
        return real(pid, given, argv, envp);
    }
    let entry_errno = sys::ErrnoGuard::save();
    if !exec_arguments_readable(exe, argv, envp) {
        drop(entry_errno);
        return real(pid, given, argv, envp); // fails with EFAULT, as bare
    }
    let exe_bytes = sys::c_bytes_or_empty(exe, 4096);
    // The program in the worker's view (a script or binary the job wrote
    // under redirect), run in its stead; the event names the job's path.
    let mut claimed = crate::pool::claim();
    let routed = if resolved {
        let out = claimed.as_mut().map(|c| &mut c.block().target2[..]);
        routed_program(exe, Named::Path { follow: true }, out)
    } else {
        Ok(None)
    };
    // The file actions run in the child before its exec: theirs first.
    let refused =
        spawn_refusal(file_actions).map_or(routed.err().map(|e| (e, true)), |e| Some((e, false)));
    if let Some((e, exec_failed)) = refused {
        // A file action's open was denied (or could not be redirected), or
        // the worker's view hides the program: the spawn fails with its
        // errno, as when the child's open or exec fails.
        drop(entry_errno);
        if exec_failed {
            // glibc's child shares the caller's errno: its failed exec
            // leaves it there.
            sys::set_errno(e);
        }
        log_process(&Process::Spawn {
            child: -1,
            argv: &CArgv(argv),
            exe: exe_bytes,
            result: e as i64,
            errno: e,
            unaudited: None,
            supervised: false,
        });
        return e;
    }
    // A script the worker wrote runs as from its job path (script.rs).
    // posix_spawnp would search PATH for an interpreter named without a
    // slash, where the kernel does not: such a one runs the worker's file.
    let mut script = match routed {
        // SAFETY: `p` is the routed path, NUL-terminated; `exe` and `argv`
        // were found readable.
        Ok(Some(p)) => unsafe { crate::script::prepare(p, exe, argv) }
            .filter(|s| sys::c_bytes_or_empty(s.interpreter, 4096).contains(&b'/')),
        _ => None,
    };
    let interpreter = script.as_mut().and_then(|s| {
        let named = s.interpreter;
        let found = routed_program(named, Named::Path { follow: true }, Some(s.program_buf()));
        found.ok().map(|p| (p.unwrap_or(named), s.argv()))
    });
    let (run, program, run_argv) = match (routed, interpreter) {
        (Ok(Some(_)), Some((i, a))) => (i, i, a),
        (Ok(Some(p)), None) => (p, p, argv),
        _ => (given, exe, argv),
    };
    let mut env = doctor_env(envp);
    let mut unaudited = unaudited_reason(program);
    let mut supervised = false;
    let program_errno = entry_errno.value();
    let real = |p, path, a, e| {
        sys::set_errno(program_errno);
        real(p, path, a, e)
    };
    let outcome = if resolved && needs_the_supervisor(unaudited) {
        env.without_the_library();
        crate::supervised::spawn_through_trampoline(program, run_argv, env.envp(), real)
    } else {
        Err(real)
    };
    drop(entry_errno);
    let (r, child) = match outcome {
        Ok(s) => {
            if s.handed_over {
                (unaudited, supervised) = (None, true);
            }
            if s.result == 0 && !pid.is_null() {
                // SAFETY: the program's posix_spawn out-pointer, non-NULL,
                // written on success as glibc does.
                unsafe { *pid = s.child };
            } else if s.result != 0 {
                // glibc leaves errno as the failed call in its child left it.
                sys::set_errno(s.result);
            }
            (s.result, s.child)
        }
        Err(real) => {
            let r = real(pid, run, run_argv, env.envp());
            let child = if r == 0 && !pid.is_null() {
                // SAFETY: `pid` is the program's posix_spawn out-pointer, checked
                // non-NULL; on success (r == 0) the real call has stored the child's
                // pid through it, so it is valid and initialised.
                unsafe { *pid }
            } else {
                -1
            };
            (r, child)
        }
    };
    let saved = sys::ErrnoGuard::save();
    if r == 0 {
        if let Some(reason) = unaudited {
            crate::unseen::warn_without_runner(exe_bytes, reason);
        }
    }
    log_process(&Process::Spawn {
        child,
        argv: &CArgv(argv),
        exe: exe_bytes,
        result: r as i64,
        errno: r,
        unaudited: unaudited.filter(|_| r == 0),
        supervised,
    });
    drop(env);
    drop(saved);
    r
}

// ---- posix_spawn file actions ------------------------------------------------
//
// glibc opens a file action's path in the child, between clone and exec,
// with internal calls no hook sees, and its file-actions struct is private.
// So `posix_spawn_file_actions_addopen` is judged when it is called, with
// its caller's stack, as an open: logged, its path replaced by the
// redirect's target (glibc keeps a copy of the path it is given), or, when
// denied, remembered here so that the spawn using these actions fails with
// EACCES, as it does when the child's open fails.

const REFUSALS: usize = 64;
/// (file-actions address, errno) of each refused addopen; 0: a free slot.
static REFUSED_ACTIONS: [AtomicUsize; REFUSALS] = [const { AtomicUsize::new(0) }; REFUSALS];
static REFUSED_ERRNO: [AtomicI32; REFUSALS] = [const { AtomicI32::new(0) }; REFUSALS];

/// Makes the spawns that use `file_actions` fail with `errno`. False when
/// the table is full (the caller then fails the addopen itself).
pub fn refuse_spawn(file_actions: usize, errno: c_int) -> bool {
    if spawn_refusal(file_actions).is_some() {
        return true;
    }
    for (slot, e) in REFUSED_ACTIONS.iter().zip(&REFUSED_ERRNO) {
        if slot
            .compare_exchange(0, file_actions, SeqCst, Relaxed)
            .is_ok()
        {
            e.store(errno, SeqCst);
            return true;
        }
    }
    false
}

/// The errno a spawn with these file actions fails with, if refused.
fn spawn_refusal(file_actions: usize) -> Option<c_int> {
    if file_actions == 0 {
        return None;
    }
    REFUSED_ACTIONS
        .iter()
        .position(|slot| slot.load(SeqCst) == file_actions)
        .map(|i| REFUSED_ERRNO[i].load(SeqCst))
}

/// `posix_spawn_file_actions_init`/`_destroy`: the address may be reused
/// for other actions.
pub fn forget_file_actions(file_actions: usize) {
    for slot in &REFUSED_ACTIONS {
        let _ = slot.compare_exchange(file_actions, 0, SeqCst, Relaxed);
    }
}

// ---- system and popen ---------------------------------------------------------

extern "C" {
    #[link_name = "environ"]
    static mut ENVIRON: *const *const c_char;
}

/// Runs `real` (glibc's `system` or `popen`, which spawn `/bin/sh` with
/// `environ` through internal calls no hook sees) with `environ` doctored
/// for the duration: a program that `unsetenv("LD_PRELOAD")` still has its
/// shell audited. Put back afterwards unless the program changed `environ`
/// meanwhile (another thread's `setenv`); the doctored block is then left
/// mapped, since the program's new environment may point into it.
pub fn with_doctored_environ<R>(real: impl FnOnce() -> R) -> R {
    if !state::ready() {
        return real();
    }
    let entry_errno = sys::ErrnoGuard::save();
    // SAFETY: reading the program's environment pointer (a plain load, as
    // getenv does).
    let old = unsafe { core::ptr::addr_of!(ENVIRON).read() };
    let env = doctor_env(old);
    if env.map.is_none() {
        drop(entry_errno);
        return real();
    }
    let doctored = env.envp();
    // SAFETY: a valid NULL-terminated environment in our own mapping, which
    // stays mapped at least until it is put back below.
    unsafe { core::ptr::addr_of_mut!(ENVIRON).write(doctored) };
    drop(entry_errno);
    let r = real();
    let saved = sys::ErrnoGuard::save();
    // SAFETY: as above.
    unsafe {
        if core::ptr::addr_of!(ENVIRON).read() == doctored {
            core::ptr::addr_of_mut!(ENVIRON).write(old);
            drop(env);
        } else {
            core::mem::forget(env);
        }
    }
    drop(saved);
    r
}

/// Logs the exit once, whichever way it comes (exit, _exit, return from main).
pub fn log_exit(status: c_int) {
    // A child of a fork nobody saw starts its own log (and exit flag) first.
    notice_unseen_fork();
    if state::ready() && !EXIT_LOGGED.swap(true, SeqCst) {
        let _saved = sys::ErrnoGuard::save();
        if log::enabled() {
            log::append_closing(&mpaudit_core::event::ProcessEvent {
                common: crate::audit::common(),
                process: &Process::Exit {
                    status,
                    // Calls that passed through unaudited for want of a
                    // hook buffer are as lost as events that were not written.
                    dropped: log::dropped() + crate::pool::passed_through(),
                    unresolved_frames: crate::stack::unresolved_frames(),
                },
            });
        }
        log::finish();
    }
}

/// Registered with on_exit(3): covers a return from main and exit().
pub extern "C" fn on_exit_handler(status: c_int, _arg: *mut libc::c_void) {
    log_exit(status)
}

#[cfg(test)]
mod loader_tests {
    #[test]
    fn loader_names() {
        for n in [
            &b"/lib64/ld-linux-x86-64.so.2"[..],
            b"/lib/ld-linux-aarch64.so.1",
            b"ld-2.31.so",
            b"/lib/ld-musl-x86_64.so.1",
            b"/lib64/ld64.so.2",
        ] {
            assert!(super::is_loader_name(n), "{:?}", core::str::from_utf8(n));
        }
        for n in [
            &b"/bin/ld"[..],
            b"/usr/bin/ld.gold",
            b"/x/old-tool.so",
            b"/opt/ld-tool",
        ] {
            assert!(!super::is_loader_name(n), "{:?}", core::str::from_utf8(n));
        }
    }
}
