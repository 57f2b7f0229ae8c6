//! The notification loop: one thread polls every listener, and for each
//! stopped system call reads its paths, judges it and answers.
//!
//! A call judged a write is performed by the supervisor itself
//! ([`super::emulate`]), on the very path it read and judged, and its
//! result is handed back: an open's descriptor with
//! `SECCOMP_IOCTL_NOTIF_ADDFD` (with `SECCOMP_ADDFD_FLAG_SEND`, Linux
//! 5.14, atomically answering the call), any other call's return value or
//! errno. So the kernel never re-reads the program's memory after the
//! judgement (the time-of-check/time-of-use gap of
//! `SECCOMP_USER_NOTIF_FLAG_CONTINUE`, seccomp_unotify(2)), and the event
//! has the real result. Redirect opens the worker's copy the same way.
//! What is not emulated (special files, magic links, a task with other
//! credentials, i386 calls with 32-bit structures) is left to the kernel
//! with CONTINUE, logged with `result: null` (docs/limitations.md).
//! `SECCOMP_IOCTL_NOTIF_ID_VALID` after reading ensures that the memory
//! read belonged to the stopped call's process.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::mpsc;

use mpaudit_core::flags::put_flag_names;
use mpaudit_core::glob::GlobList;
use mpaudit_core::namei;
use mpaudit_core::path::{absolutize, MAX_ABS};
use mpaudit_core::policy::{Action, ActionSetting, Policy, Verdict};
use serde_json::{json, Map, Value};

use super::beneath::{self, Place};
use super::calls::{intent_of, Call, Intent, PathArg, Replay, Writes};
use super::emulate::{self, Context, Task};
use super::redirects::Redirects;
use super::Stats;
use crate::plan::Plan;

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (linux/seccomp.h, Linux 6.6).
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// A process that will send a listener: a child the runner is starting
/// (`hello: false`, worker known), or a preloaded process about to exec a
/// static or Go program, connected to the supervisor's socket, which first
/// says who it is and gets the filter ([`super::handoff`]).
pub struct NewChild {
    pub socket: OwnedFd,
    pub worker: Option<u32>,
    pub hello: bool,
}

/// One filter's listener: every process of one started worker's tree.
struct Listener {
    fd: OwnedFd,
    worker: Option<u32>,
    log: Option<File>,
    /// Processes already logged as not fully audited (io_uring).
    io_uring_noted: BTreeSet<i32>,
    /// A listener from the library: the task that installed it, until its
    /// exec (which the library logged; its own calls before it are not
    /// the program's).
    pre_exec: Option<i32>,
    /// Fork mode, a listener without a worker (the root's): the worker of
    /// each of its processes, numbered as the library numbers them.
    numbering: Option<Numbering>,
}

/// Worker numbering under the fork-mode root's filter, the library's rule
/// (interpose/src/state.rs, `before_fork`): each child the root forks is
/// the next worker, from 0 for each root image; every other process
/// belongs to its parent's worker. The supervisor learns of a process at
/// its first stopped call; it then numbers all the root's children it has
/// not numbered yet, oldest first (the order they were forked in), so a
/// worker that writes first is not numbered first.
#[derive(Default)]
struct Numbering {
    /// The root's pid (the first process the listener stopped).
    root: Option<i32>,
    next: u32,
    /// Process (by tid or pid) → its start time and worker.
    known: std::collections::HashMap<i32, (u64, Option<u32>)>,
}

/// `(parent pid, start time)` of task `tid`, from /proc/TID/stat.
fn parent_and_start(tid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    // After "pid (comm) ": state ppid ... field 22 is starttime.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some((f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
}

impl Numbering {
    /// The worker of task `tid` (process `pid`), `None` for the root (and
    /// a process whose ancestry is lost: its parent died before it was
    /// seen, so it was reparented).
    fn worker_of(&mut self, pid: i32) -> Option<u32> {
        let root = *self.root.get_or_insert(pid);
        if pid == root {
            return None;
        }
        self.of_process(pid, 0)
    }

    fn of_process(&mut self, pid: i32, depth: u32) -> Option<u32> {
        let root = self.root?;
        let (ppid, start) = parent_and_start(pid)?;
        if let Some(&(s, w)) = self.known.get(&pid) {
            if s == start {
                return w;
            }
        }
        let w = if ppid == root {
            self.number_children_of_root();
            match self.known.get(&pid) {
                Some(&(s, w)) if s == start => w,
                _ => Some(self.take_next()),
            }
        } else if depth < 64 && ppid > 1 {
            self.of_process(ppid, depth + 1)
        } else {
            None
        };
        self.known.insert(pid, (start, w));
        w
    }

    fn take_next(&mut self) -> u32 {
        self.next += 1;
        self.next - 1
    }

    /// Numbers the root's live children not numbered yet, in fork order.
    fn number_children_of_root(&mut self) {
        let Some(root) = self.root else { return };
        let mut children: Vec<(u64, i32)> = Vec::new();
        let tasks = std::fs::read_dir(format!("/proc/{root}/task"))
            .into_iter()
            .flatten();
        for t in tasks.flatten() {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in text
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                if let Some((ppid, start)) = parent_and_start(c) {
                    let known = self.known.get(&c).is_some_and(|&(s, _)| s == start);
                    if ppid == root && !known {
                        children.push((start, c));
                    }
                }
            }
        }
        // Pids grow with each fork (short of a wrap) within a clock tick.
        children.sort_unstable();
        for (start, c) in children {
            let w = self.take_next();
            self.known.insert(c, (start, Some(w)));
        }
    }
}

/// A process still to send its listener.
struct Pending {
    child: NewChild,
    /// From the library's hello: the task that will exec.
    tid: Option<i32>,
}

/// What a notification is judged with: the plan's policy, as the library
/// gets it through `MPAUDIT_*`.
pub struct Judge {
    outputs: String,
    components: String,
    allow: String,
    action: ActionSetting,
    pub(super) job_dir: String,
    workers_dir: String,
    /// This runner's workers' directories are `<run_workers_dir>/worker_<k>`
    /// (`Plan::worker_dir`).
    run_workers_dir: PathBuf,
    tmpdir: String,
    log_dir: PathBuf,
    /// Under a launcher: this runner's rank and the node name, written in
    /// every event and in log names, as the library does.
    rank: Option<(u32, String)>,
    /// Fork mode: the children the root forks are workers.
    fork_mode: bool,
    /// Under redirect: worker tables are followed (`MPAUDIT_REDIRECT_TABLE`).
    redirect: bool,
}

/// `uname -n`, as the library reads it.
fn node_name() -> String {
    // SAFETY: a zeroed utsname is valid; uname only fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let name: Vec<u8> = uts
        .nodename
        .iter()
        .take_while(|&&c| c != 0)
        .take(64)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&name).into_owned()
}

/// The allow globs as the library builds them (interpose/src/state.rs):
/// the job's, then the kernel interfaces. The workers and log directories
/// are guarded (`Policy::workers_dir`, `log_dir`), not allowed.
fn allow_list(plan: &Plan) -> String {
    let mut v = plan.policy.allow.clone();
    v.push(String::from_utf8_lossy(mpaudit_core::policy::ALWAYS_ALLOWED).into_owned());
    v.join(":")
}

impl Judge {
    pub fn new(plan: &Plan) -> Judge {
        use crate::jobfile::Action as A;
        // The library takes TMPDIR from its environment: the job's `env`
        // over the runner's.
        let tmpdir = plan
            .env
            .get("TMPDIR")
            .cloned()
            .or_else(|| std::env::var("TMPDIR").ok())
            .filter(|t| t.starts_with('/'))
            .unwrap_or_else(|| "/tmp".into());
        // Paths are judged where the kernel lands (`kernel_path`): the
        // scratch directory's real place too.
        let tmpdir = std::fs::canonicalize(&tmpdir)
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
            .unwrap_or(tmpdir);
        Judge {
            outputs: plan.policy.outputs.join(":"),
            components: plan.policy.components.join(":"),
            allow: allow_list(plan),
            action: match plan.policy.action {
                A::Log => ActionSetting::Log,
                A::Redirect => ActionSetting::Redirect,
                A::Deny => ActionSetting::Deny,
            },
            job_dir: plan.job_dir.display().to_string(),
            workers_dir: plan.shared_workers_dir.display().to_string(),
            run_workers_dir: plan.workers_dir.clone(),
            tmpdir,
            log_dir: plan.log_dir.clone(),
            rank: plan.rank.map(|r| (r, node_name())),
            fork_mode: plan.mode == crate::jobfile::Mode::Fork,
            redirect: plan.policy.action == A::Redirect,
        }
    }

    fn policy(&self) -> Policy<'_> {
        Policy {
            outputs: GlobList::new(self.outputs.as_bytes()),
            components: GlobList::new(self.components.as_bytes()),
            allow: GlobList::new(self.allow.as_bytes()),
            action: self.action,
            job_dir: self.job_dir.as_bytes(),
            // Set per call, from the worker of the process (`judge_call`).
            own_dir: b"",
            workers_dir: self.workers_dir.as_bytes(),
            log_dir: self.log_dir.as_os_str().as_encoded_bytes(),
        }
    }
}

/// Everything the loop serves calls with.
pub struct Supervision {
    pub judge: Judge,
    pub(super) redirects: Redirects,
    /// The BPF program, as bytes, for processes that connect to the socket.
    filter: Vec<u8>,
    stats: Stats,
}

impl Supervision {
    pub fn new(judge: Judge, filter: &[libc::sock_filter]) -> Supervision {
        let workers_dir = judge.run_workers_dir.clone();
        let log_dir = judge.redirect.then(|| judge.log_dir.clone());
        let mut bytes = Vec::with_capacity(filter.len() * 8);
        for i in filter {
            bytes.extend_from_slice(&i.code.to_ne_bytes());
            bytes.push(i.jt);
            bytes.push(i.jf);
            bytes.extend_from_slice(&i.k.to_ne_bytes());
        }
        Supervision {
            judge,
            redirects: Redirects::new(log_dir, move |k| workers_dir.join(format!("worker_{k}"))),
            filter: bytes,
            stats: Stats::default(),
        }
    }
}

pub fn run(
    mut sup: Supervision,
    rx: mpsc::Receiver<NewChild>,
    wake: OwnedFd,
    server: Option<OwnedFd>,
) -> Stats {
    if let Ok(release) = std::fs::read("/proc/sys/kernel/osrelease") {
        // The flag rules differ before Linux 5.6 (O_PATH|O_TMPFILE).
        mpaudit_core::flags::note_kernel_release(&release);
    }
    if let Err(e) = emulate::own_fs_context() {
        // Without its own cwd and umask the thread cannot take a task's:
        // emulated calls would resolve against the runner's cwd.
        eprintln!("mpaudit: warning: seccomp supervisor: unshare(CLONE_FS): {e}");
    }
    let mut pending: Vec<Pending> = Vec::new();
    let mut listeners: Vec<Listener> = Vec::new();
    let mut open = true;
    loop {
        loop {
            match rx.try_recv() {
                Ok(c) => pending.push(Pending {
                    child: c,
                    tid: None,
                }),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !open && pending.is_empty() && listeners.is_empty() {
            break;
        }
        let mut fds = vec![pollfd(wake.as_raw_fd())];
        // The socket is served while the job runs only.
        let server_fd = server.as_ref().filter(|_| open).map(|s| s.as_raw_fd());
        fds.push(pollfd(server_fd.unwrap_or(-1)));
        fds.extend(pending.iter().map(|c| pollfd(c.child.socket.as_raw_fd())));
        fds.extend(listeners.iter().map(|l| pollfd(l.fd.as_raw_fd())));
        // The runner stops us only when the job's processes are gone; a
        // listener still open then belongs to nothing that can call: a
        // short timeout lets the loop end.
        // A FIFO open waiting on its thread is checked every 50 ms: its
        // task may have been interrupted (waiting.rs).
        let timeout = match (open, super::waiting::any()) {
            (true, false) => -1,
            (true, true) => 50,
            (false, _) => 100,
        };
        // SAFETY: a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue; // EINTR
        }
        super::waiting::release_interrupted();
        if n == 0 && !open {
            break;
        }
        if fds[0].revents != 0 {
            let mut v = 0u64;
            // SAFETY: an 8-byte read from our eventfd.
            unsafe { libc::read(wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        }
        const FIXED: usize = 2;
        let np = pending.len();
        // Listeners first (indices shift when pending ones are resolved).
        let mut gone = Vec::new();
        for (i, l) in listeners.iter_mut().enumerate() {
            let re = fds[FIXED + np + i].revents;
            let received = re & libc::POLLIN != 0 && handle(&mut sup, l);
            if received {
                sup.stats.notifications += 1;
            } else if re & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                // No task uses the filter any more.
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            listeners.remove(i);
        }
        let mut resolved = Vec::new();
        for (i, c) in pending.iter_mut().enumerate() {
            let re = fds[FIXED + i].revents;
            if re & libc::POLLIN != 0 {
                if c.child.hello {
                    // A library process: who it is, then the filter.
                    match super::handoff::answer_hello(c.child.socket.as_raw_fd(), &sup.filter) {
                        Some((worker, tid)) => {
                            c.child.worker = worker;
                            c.tid = Some(tid);
                            c.child.hello = false;
                        }
                        None => resolved.push(i),
                    }
                    continue;
                }
                if let Some(fd) = recv_fd(c.child.socket.as_raw_fd()) {
                    // Linux ≥ 6.6: the kernel switches straight between the
                    // stopped task and this thread instead of a wake-up
                    // through the scheduler (one notified call costs about
                    // half as much). Older kernels refuse; that is fine.
                    // SAFETY: SET_FLAGS takes its flags by value.
                    unsafe {
                        libc::ioctl(
                            fd.as_raw_fd(),
                            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
                        )
                    };
                    let numbering = (c.child.worker.is_none() && sup.judge.fork_mode).then(|| {
                        Numbering {
                            // The library's root execs the program: it is
                            // the root (a child of the runner: its first
                            // stopped call, its exec, says).
                            root: c.tid.map(|t| Task::of(t).pid),
                            ..Numbering::default()
                        }
                    });
                    listeners.push(Listener {
                        fd,
                        worker: c.child.worker,
                        log: None,
                        io_uring_noted: BTreeSet::new(),
                        pre_exec: c.tid,
                        numbering,
                    });
                }
                resolved.push(i);
            } else if re & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                // The child never sent a listener (it failed to start).
                resolved.push(i);
            }
        }
        for i in resolved.into_iter().rev() {
            pending.remove(i);
        }
        if let (Some(s), true) = (server_fd, fds[1].revents & libc::POLLIN != 0) {
            if let Some(conn) = super::handoff::accept(s) {
                pending.push(Pending {
                    child: NewChild {
                        socket: conn,
                        worker: None,
                        hello: true,
                    },
                    tid: None,
                });
            }
        }
    }
    super::waiting::settle(&mut sup.stats);
    sup.stats
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Receives one descriptor sent with SCM_RIGHTS.
fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    let mut space = [0u64; 4];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data pointing at buffers that outlive the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&space);
        if libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) <= 0 {
            return None;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return None;
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Some(OwnedFd::from_raw_fd(fd))
    }
}

/// The task whose call is stopped, and its worker.
pub(super) struct Caller<'j> {
    pub(super) task: Task,
    pub(super) worker: Option<u32>,
    rank: Option<&'j (u32, String)>,
}

/// What to answer a stopped call.
pub(super) enum Answer {
    /// Let the kernel perform it (not emulated, or nothing to do).
    Continue,
    Fail(i32),
    /// The call was performed here: its return value.
    Value(i64),
    /// An open performed here: the descriptor to hand over.
    Fd {
        fd: OwnedFd,
        cloexec: bool,
    },
    /// An open of the worker's FIFO that waits for its other end: made on
    /// a thread of its own, which answers (waiting.rs).
    Waits {
        tid: i32,
        probe: OwnedFd,
        flags: i32,
        cloexec: bool,
    },
}

/// The answer of an open made by waiting.rs.
pub(super) fn respond_waited(
    listener: RawFd,
    id: u64,
    opened: Result<OwnedFd, i32>,
    cloexec: bool,
) -> (Option<i64>, Option<i32>) {
    respond(
        listener,
        id,
        match opened {
            Ok(fd) => Answer::Fd { fd, cloexec },
            Err(e) => Answer::Fail(e),
        },
    )
}

/// What the program got: `(result, errno)`; `None` when the kernel
/// performs the call (CONTINUE) or the call went away.
fn respond(listener: RawFd, id: u64, a: Answer) -> (Option<i64>, Option<i32>) {
    let send = |val: i64, error: i32, flags: u32| {
        let resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: SEND reads the response it is given. ENOENT: the caller
        // was interrupted or killed meanwhile.
        unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) == 0 }
    };
    match a {
        Answer::Continue => {
            send(0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32);
            (None, None)
        }
        // `handle` gives these to waiting.rs; refused if one gets here.
        Answer::Waits { .. } => {
            send(0, -libc::EACCES, 0);
            (Some(-1), Some(libc::EACCES))
        }
        Answer::Fail(e) => {
            send(0, -e, 0);
            (Some(-1), Some(e))
        }
        Answer::Value(v) => {
            send(v, 0, 0);
            (Some(v), None)
        }
        Answer::Fd { fd, cloexec } => {
            let add = |flags: u64| {
                let addfd = libc::seccomp_notif_addfd {
                    id,
                    flags: flags as u32,
                    srcfd: fd.as_raw_fd() as u32,
                    newfd: 0,
                    newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
                };
                // SAFETY: ADDFD reads the struct it is given; the kernel
                // installs a copy of our descriptor in the stopped task.
                let r = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) };
                if r < 0 {
                    Err(emulate::errno())
                } else {
                    Ok(r as i64)
                }
            };
            // Linux ≥ 5.14: the descriptor and the answer in one step.
            match add(libc::SECCOMP_ADDFD_FLAG_SEND) {
                Ok(n) => (Some(n), None),
                Err(libc::EINVAL) => match add(0) {
                    Ok(n) => {
                        send(n, 0, 0);
                        (Some(n), None)
                    }
                    Err(e) => {
                        send(0, -e, 0);
                        (Some(-1), Some(e))
                    }
                },
                // EMFILE and the like: the task's own limits, its errno.
                Err(libc::ENOENT) => (None, None),
                Err(e) => {
                    send(0, -e, 0);
                    (Some(-1), Some(e))
                }
            }
        }
    }
}

/// Whether the stopped call still waits (the memory read was its).
pub(super) fn still_valid(listener: RawFd, id: u64) -> bool {
    // SAFETY: ID_VALID reads the u64 id it is given.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
}

/// The value of variable `var` (`NAME=`) in the environment array at
/// `envp_addr` of task `tid` (an exec's `envp`: the library's doctored
/// environment when a preloaded process execs).
fn env_value(tid: i32, envp_addr: u64, pointer: usize, var: &[u8]) -> Option<Vec<u8>> {
    let mut at = envp_addr;
    for _ in 0..100_000 {
        if at == 0 {
            return None;
        }
        let mut b = [0u8; 8];
        if read_mem(tid, at, &mut b[..pointer]) != pointer {
            return None;
        }
        let entry = u64::from_le_bytes(b);
        if entry == 0 {
            return None; // the end of the array
        }
        if let Some(v) = read_cstr(tid, entry)
            .as_deref()
            .and_then(|e| e.strip_prefix(var))
        {
            return Some(v.to_vec());
        }
        at += pointer as u64;
    }
    None
}

/// Takes the redirect table an exec'ing task hands its new image
/// (`MPAUDIT_REDIRECT_TABLE`) as worker `w`'s.
fn adopt_named_table(sup: &mut Supervision, tid: i32, envp_addr: u64, pointer: usize, w: u32) {
    if let Some(path) = env_value(tid, envp_addr, pointer, b"MPAUDIT_REDIRECT_TABLE=") {
        sup.redirects.adopt(w, &path);
    }
}

/// What handling a call produced: the answer, and an event whose
/// `result`/`errno` are filled in from what the program got.
pub(super) struct Handled {
    answer: Answer,
    event: Option<Map<String, Value>>,
    /// New redirects to record once the call succeeded.
    record: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Handled {
    pub(super) fn quiet(answer: Answer) -> Handled {
        Handled {
            answer,
            event: None,
            record: Vec::new(),
        }
    }
}

/// Receives and answers one notification; false when there was none to
/// receive.
fn handle(sup: &mut Supervision, l: &mut Listener) -> bool {
    // SAFETY: seccomp_notif is plain data; RECV requires it zeroed.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV fills the struct it is given.
    if unsafe { libc::ioctl(l.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
        return false; // ENOENT: the caller was interrupted or died meanwhile.
    }
    let lfd = l.fd.as_raw_fd();
    let tid = req.pid as i32;
    let nr = req.data.nr as i64;
    let call = match req.data.arch {
        a if a == super::filter::AUDIT_ARCH => Call::of(nr),
        #[cfg(target_arch = "x86_64")]
        a if a == super::filter::AUDIT_ARCH_I386 => Call::of_i386(nr),
        _ => None,
    };
    let args = req.data.args;
    if l.pre_exec == Some(tid) {
        // The library's own calls between installing the filter and the
        // exec it logged itself; the exec names the worker's table.
        if let Some(Call::Exec { argv, pointer, .. }) = call {
            l.pre_exec = None;
            if let (Some(w), true) = (l.worker, sup.judge.redirect) {
                adopt_named_table(sup, tid, args[argv + 1], pointer, w);
            }
            // Without a worker, the process numbers its forks only if it is
            // the root (the library's `MPAUDIT_ROOT_PID`): the children of
            // another process without a worker have none either.
            let root = env_value(tid, args[argv + 1], pointer, b"MPAUDIT_ROOT_PID=")
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i32>().ok());
            if let (Some(n), Some(root)) = (&l.numbering, root) {
                if n.root != Some(root) {
                    l.numbering = None;
                }
            }
        }
        respond(lfd, req.id, Answer::Continue);
        return true;
    }
    // Reads and stats are notified only to follow redirects: most of them
    // are answered here, before any /proc read.
    let follows = |sup: &mut Supervision| match l.worker {
        Some(w) => sup.redirects.any(w),
        // The root's processes: whichever worker they are.
        None => l.numbering.is_some() && sup.redirects.any_worker(),
    };
    let quick = match call {
        Some(Call::Stat { .. } | Call::Readlink { .. } | Call::Getdents { .. }) => !follows(sup),
        Some(Call::Access {
            intent: Intent::Flags(i),
            ..
        }) => {
            !mpaudit_core::flags::OpenIntent::from_flags(args[i] as i32).is_write() && !follows(sup)
        }
        None => true,
        _ => false,
    };
    if quick {
        respond(lfd, req.id, Answer::Continue);
        return true;
    }
    let task = Task::of(tid);
    let worker = match &mut l.numbering {
        Some(n) => n.worker_of(task.pid),
        None => l.worker,
    };
    let c = Caller {
        task,
        worker,
        rank: sup.judge.rank.as_ref(),
    };
    let rank = sup.judge.rank.clone();
    let c = Caller {
        rank: rank.as_ref(),
        ..c
    };
    let h = match call {
        Some(Call::Access {
            op,
            path,
            path2,
            intent,
            writes,
            replay,
        }) => access(
            sup,
            &c,
            &args,
            AccessCall {
                op,
                path,
                path2,
                intent,
                writes,
                replay,
            },
            lfd,
            req.id,
        ),
        Some(Call::Stat { nr, path, out }) => {
            follow_stat(sup, &c, &args, nr, path, out, lfd, req.id)
        }
        Some(Call::Getdents { wide }) => super::reads::getdents(sup, &c, &args, wide, lfd, req.id),
        Some(Call::Readlink { path, buf, size }) => {
            super::reads::readlink(sup, &c, &args, path, buf, size, lfd, req.id)
        }
        Some(Call::Exec {
            path,
            argv,
            pointer,
        }) => {
            if let (Some(w), true) = (c.worker, sup.judge.redirect) {
                adopt_named_table(sup, tid, args[argv + 1], pointer, w);
            }
            Handled {
                answer: Answer::Continue,
                event: Some(exec(&c, &args, path, argv, pointer)),
                record: Vec::new(),
            }
        }
        Some(Call::IoUringSetup) => {
            let pid = c.task.pid;
            let event = l.io_uring_noted.insert(pid).then(|| {
                let exe = std::fs::read_link(format!("/proc/{tid}/exe"))
                    .map(|p| p.as_os_str().as_bytes().to_vec())
                    .unwrap_or_default();
                exec_event(&c, &exe, &cmdline(tid), Some("io_uring"))
            });
            Handled {
                answer: Answer::Continue,
                event,
                record: Vec::new(),
            }
        }
        None => Handled::quiet(Answer::Continue),
    };
    // The paths read belong to the stopped call only if it still waits.
    // A call performed here whose task went away meanwhile (killed) has
    // changed the file system all the same: its event is logged (result
    // unknown) and its redirect recorded, so no write goes unseen.
    if let Answer::Waits {
        tid,
        probe,
        flags,
        cloexec,
    } = h.answer
    {
        // Answered, and its event logged with the result, by its thread.
        if still_valid(lfd, req.id) {
            let open = super::waiting::Open {
                listener: lfd,
                id: req.id,
                tid,
                probe,
                flags,
                cloexec,
                event: h.event.map(|e| (e, log_path(&sup.judge, c.task.pid))),
            };
            if let Err(unlogged) = super::waiting::start(open) {
                let (result, errno) = respond(lfd, req.id, Answer::Fail(libc::EACCES));
                if let Some(e) = unlogged {
                    match write_event(&sup.judge, l, c.task.pid, &finished(e, result, errno)) {
                        Ok(()) => sup.stats.events += 1,
                        Err(_) => sup.stats.lost_events += 1,
                    }
                }
            }
        }
        return true;
    }
    let performed = matches!(h.answer, Answer::Value(_) | Answer::Fd { .. });
    let (result, errno) = if still_valid(lfd, req.id) {
        respond(lfd, req.id, h.answer)
    } else if performed {
        (None, None)
    } else {
        return true;
    };
    if result.is_some_and(|r| r >= 0) || (result.is_none() && performed) {
        if let Some(w) = c.worker {
            for (o, t) in &h.record {
                sup.redirects.record(w, c.task.pid, o, t);
            }
        }
    }
    if let Some(e) = h.event {
        match write_event(&sup.judge, l, c.task.pid, &finished(e, result, errno)) {
            Ok(()) => sup.stats.events += 1,
            Err(_) => sup.stats.lost_events += 1,
        }
    }
    true
}

/// Event `e`'s line, an access event with what the program got.
pub(super) fn finished(
    mut e: Map<String, Value>,
    result: Option<i64>,
    errno: Option<i32>,
) -> Vec<u8> {
    if e.get("kind") == Some(&json!("access")) {
        e.insert("result".into(), json!(result));
        e.insert(
            "errno".into(),
            json!(errno.map(|n| mpaudit_core::event::errno_name(n)
                .map_or_else(|| n.to_string(), str::to_string))),
        );
    }
    line(e)
}

/// A new log of process `pid`'s events: `mpaudit-<pid>-<ns>.jsonl` (the
/// name the report looks for).
fn log_path(judge: &Judge, pid: i32) -> std::path::PathBuf {
    let launcher = match &judge.rank {
        Some((rank, node)) => {
            let mut name = String::new();
            mpaudit_core::launcher::put_node_file_name(node.as_bytes(), |b| name.push(b as char));
            let node = name;
            format!("{node}-r{rank}-")
        }
        None => String::new(),
    };
    judge
        .log_dir
        .join(format!("mpaudit-{launcher}{pid}-{}.jsonl", now_ns()))
}

/// Appends one event line to the listener's log, created on first use.
fn write_event(judge: &Judge, l: &mut Listener, pid: i32, line: &[u8]) -> std::io::Result<()> {
    if l.log.is_none() {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(log_path(judge, pid))?;
        l.log = Some(f);
    }
    l.log.as_mut().map_or(Ok(()), |f| f.write_all(line))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Reads `len` bytes at `addr` in task `tid`'s memory; short at an
/// unmapped page.
fn read_mem(tid: i32, addr: u64, buf: &mut [u8]) -> usize {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local buffer is ours and valid for its length; the remote
    // address is only read by the kernel, which checks it.
    let n = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
    n.max(0) as usize
}

/// A C string at `addr` in the task's memory (at most 8 KiB), read page by
/// page so that a string ending just before an unmapped page is read.
/// `None` for NULL or unreadable memory.
fn read_cstr(tid: i32, addr: u64) -> Option<Vec<u8>> {
    if addr == 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < MAX_ABS {
        let to_page_end = 4096 - (at % 4096) as usize;
        let mut buf = vec![0u8; to_page_end];
        let n = read_mem(tid, at, &mut buf);
        if n == 0 {
            return None;
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..i]);
            return Some(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    None
}

/// The directory a relative path is resolved against: the task's cwd, or
/// the directory its descriptor names.
pub(super) fn base_dir(tid: i32, dirfd: Option<i32>) -> Option<Vec<u8>> {
    let link = match dirfd {
        None | Some(libc::AT_FDCWD) => format!("/proc/{tid}/cwd"),
        Some(fd) => format!("/proc/{tid}/fd/{fd}"),
    };
    std::fs::read_link(link)
        .ok()
        .map(|p| p.as_os_str().as_bytes().to_vec())
}

/// A path argument as given, and made absolute.
pub(super) type Resolved = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A path argument read and made absolute: (as given, absolute). A
/// leading magic link (`/proc/self/cwd/x`, `/dev/fd/3/x`) is followed in
/// the task's /proc, so the path is judged as the file it names (the
/// library does the same, review 2's F2).
pub(super) fn resolve(tid: i32, args: &[u64; 6], p: PathArg) -> Resolved {
    resolve_name(tid, args, p, true)
}

/// [`resolve`] for a call that follows a final symlink of its name or
/// not (`follow_final`): a name that is itself one of the task's magic
/// links (`unlink("/proc/self/fd/3")`) is then /proc's entry, not the file
/// it leads to.
pub(super) fn resolve_name(tid: i32, args: &[u64; 6], p: PathArg, follow_final: bool) -> Resolved {
    let dirfd = p.dirfd.map(|i| args[i] as i32);
    let given = read_cstr(tid, args[p.ptr]);
    let base = match &given {
        Some(g) if g.first() == Some(&b'/') => None,
        _ => base_dir(tid, dirfd),
    };
    let mut out = vec![0u8; MAX_ABS];
    let abs = match &given {
        Some(g) => absolutize(g, base.as_deref(), &mut out).map(|n| out[..n].to_vec()),
        // A NULL path (utimensat on a descriptor): the descriptor's file.
        None => base.filter(|b| b.first() == Some(&b'/')),
    };
    let ends_in_magic_link = |a: &[u8]| {
        let mut link = [0u8; 64];
        mpaudit_core::path::magic_link(a, &mut link).is_some_and(|(_, prefix)| prefix == a.len())
    };
    let abs = abs.map(|a| match follow_final || !ends_in_magic_link(&a) {
        true => follow_magic_link(tid, a),
        false => a,
    });
    (given, abs)
}

/// A redirecting worker's name walked in its view, by the library's walk
/// (mpaudit_core::walk): through the symlinks it made, wherever they are,
/// the directories it made or moved, and not past a name it removed. The
/// name found, and whether the walk went through something only the view
/// has. `None`: not walked here (an empty name, a magic link of the
/// task's, not a redirecting worker); `Err`: the kernel would fail the
/// call with this errno in the view.
pub(super) fn walk_in_view(
    sup: &mut Supervision,
    c: &Caller,
    args: &[u64; 6],
    p: PathArg,
    given: Option<&[u8]>,
    follow: bool,
) -> Option<Result<(Vec<u8>, bool), i32>> {
    let (Some(w), ActionSetting::Redirect) = (c.worker, sup.judge.action) else {
        return None;
    };
    let given = given?;
    if given.is_empty() {
        return None;
    }
    let tid = c.task.tid;
    let base = match given[0] {
        b'/' => None,
        _ => Some(base_dir(tid, p.dirfd.map(|d| args[d] as i32))?),
    };
    // A start that is no directory (a file's descriptor, a removed
    // directory): the kernel's errno, said elsewhere.
    if let Some(b) = &base {
        if !std::fs::metadata(std::ffi::OsStr::from_bytes(b)).is_ok_and(|m| m.is_dir()) {
            return None;
        }
    }
    // A start in the worker's directory (a descriptor of a directory the
    // worker made, opened through its view) is the job directory it stands
    // for, as in the library (audit.rs, `seen_from_job`): what is made
    // there is redirected and recorded like any write in the view, and
    // the call must be given the result.
    let mut start_moved = false;
    let base = base.map(|b| match job_path_of(sup, w, &b) {
        Some(job) => {
            start_moved = true;
            job
        }
        None => b,
    });
    let mut lookup = |abs: &[u8]| sup.redirects.lookup(w, abs);
    let mut view = super::view::TaskView {
        task: Some((tid, c.task.pid)),
        view: &mut lookup,
    };
    match super::view::resolve(&mut view, given, base.as_deref(), follow)
        .map(|(abs, via)| (abs, via || start_moved))
    {
        // A name that ends in the task's /proc or /dev (a descriptor's
        // link to a closed descriptor, a terminal): the kernel's walk of
        // the magic links, not the supervisor's.
        Ok((abs, _)) if emulate::is_opener_relative(&abs) => None,
        Ok(found) => Some(Ok(found)),
        Err(mpaudit_core::walk::Unresolved::Errno(e)) => Some(Err(e)),
        Err(_) => None,
    }
}

/// The job path the directory `dir` in worker `w`'s directory stands for:
/// the one whose redirect it is. `None` for any other directory.
fn job_path_of(sup: &mut Supervision, w: u32, dir: &[u8]) -> Option<Vec<u8>> {
    let job = job_name_of(sup, w, dir)?;
    (sup.redirects.lookup(w, &job).as_deref() == Some(dir)).then_some(job)
}

/// The job path whose worker's name (mpaudit_core::map) `path` in worker
/// `w`'s directory is, recorded or not.
pub(super) fn job_name_of(sup: &Supervision, w: u32, path: &[u8]) -> Option<Vec<u8>> {
    let wd = sup.redirects.worker_dir(w);
    let mut out = vec![0u8; MAX_ABS];
    let n = mpaudit_core::map::unmap_from_worker(
        path,
        sup.judge.job_dir.as_bytes(),
        wd.as_os_str().as_bytes(),
        &mut out,
    )?;
    out.truncate(n);
    Some(out)
}

/// `abs` with a leading `/proc/self/…`, `/proc/thread-self/…`,
/// `/dev/std*` or `/dev/fd/N` link replaced by its target in task `tid`.
fn follow_magic_link(tid: i32, abs: Vec<u8>) -> Vec<u8> {
    let mut link = [0u8; 64];
    let Some((n, prefix)) = mpaudit_core::path::magic_link(&abs, &mut link) else {
        return abs;
    };
    let l = &link[..n];
    // `/proc/<pid>/…` names the same file for the supervisor (one pid
    // namespace); `self` and `thread-self` are the task's.
    let ours = [&b"/proc/self/"[..], b"/proc/thread-self/"]
        .iter()
        .find_map(|p| l.strip_prefix(*p))
        .map(|rest| format!("/proc/{tid}/{}", String::from_utf8_lossy(rest)))
        .unwrap_or_else(|| String::from_utf8_lossy(l).into_owned());
    match std::fs::read_link(&ours) {
        Ok(t) if t.as_os_str().as_bytes().first() == Some(&b'/') => {
            let mut joined = t.as_os_str().as_bytes().to_vec();
            joined.extend_from_slice(&abs[prefix..]);
            let mut out = vec![0u8; MAX_ABS];
            absolutize(&joined, None, &mut out).map_or(abs, |n| out[..n].to_vec())
        }
        _ => abs,
    }
}

/// The absolute path the kernel reaches for `given` in task `tid`: its
/// directories resolved by the kernel (symlinks and `..` in their order),
/// and a final symlink followed when `follow_final`. `None` when that
/// cannot be told here (a directory that does not exist, so the call fails
/// as bare; a magic link on the way, followed by [`follow_magic_link`]).
/// The task's root is taken to be the supervisor's.
pub(super) fn kernel_path(
    tid: i32,
    dirfd: Option<i32>,
    given: &[u8],
    follow_final: bool,
) -> Option<Vec<u8>> {
    let mut base = if given.first() == Some(&b'/') {
        b"/".to_vec()
    } else {
        base_dir(tid, dirfd)?
    };
    let mut path = given.to_vec();
    // The kernel's bound on symlinks followed in one lookup.
    for _ in 0..40 {
        let trimmed_len = path.len() - path.iter().rev().take_while(|&&b| b == b'/').count();
        let body = &path[..trimmed_len.max(1).min(path.len())];
        let (dir, leaf): (&[u8], &[u8]) = match body.iter().rposition(|&b| b == b'/') {
            Some(0) => (b"/", &body[1..]),
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (b".", body),
        };
        let (dir, leaf) = if matches!(leaf, b"" | b"." | b"..") || trimmed_len < path.len() {
            (body, &b""[..]) // a directory, all of it resolved
        } else {
            (dir, leaf)
        };
        let start = if dir.first() == Some(&b'/') {
            &b"/"[..]
        } else {
            &base[..]
        };
        let start_fd = std::fs::File::open(std::ffi::OsStr::from_bytes(start)).ok()?;
        let real_dir = emulate::resolved_dir(start_fd.as_raw_fd(), dir)?;
        if leaf.is_empty() {
            return Some(real_dir);
        }
        let mut full = real_dir.clone();
        if full != b"/" {
            full.push(b'/');
        }
        full.extend_from_slice(leaf);
        if follow_final {
            if let Ok(t) = std::fs::read_link(std::ffi::OsStr::from_bytes(&full)) {
                path = t.as_os_str().as_bytes().to_vec();
                base = real_dir;
                continue;
            }
        }
        return (full.len() < MAX_ABS).then_some(full);
    }
    None
}

/// An access call's description ([`Call::Access`]).
struct AccessCall {
    op: &'static str,
    path: PathArg,
    path2: Option<PathArg>,
    intent: Intent,
    writes: Writes,
    replay: Replay,
}

fn cstring(b: &[u8]) -> Option<CString> {
    CString::new(b.to_vec()).ok()
}

/// Where one path of a call goes.
struct Route {
    /// The worker's copy, when the path is redirected.
    target: Option<Vec<u8>>,
    /// This call makes the redirect (the table does not have it yet).
    new: bool,
}

fn access(
    sup: &mut Supervision,
    c: &Caller,
    args: &[u64; 6],
    a: AccessCall,
    lfd: RawFd,
    id: u64,
) -> Handled {
    let tid = c.task.tid;
    let mut how: Option<[u64; 3]> = None;
    let flags = match a.intent {
        Intent::Flags(i) => Some(args[i] as i32),
        Intent::OpenHow(i) => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let mut b = [0u8; 24];
            if args[3] >= 24 && read_mem(tid, args[i], &mut b) == 24 {
                let f =
                    |k: usize| u64::from_le_bytes(b[8 * k..8 * k + 8].try_into().unwrap_or([0; 8]));
                how = Some([f(0), f(1), f(2)]);
            }
            how.map(|h| h[0] as i32)
        }
        _ => None,
    };
    let (intent, flags) = intent_of(a.intent, flags);
    // Judged where the kernel lands (review 2, F5): `lnk/../f` with `lnk`
    // a symlink is not the lexical `f`, nor is a final symlink its name
    // when the call follows it.
    let follows_final = |i: usize| follows_final(a.op, args, flags, i);
    let in_kernel_view = |i: usize, p: PathArg, r: Resolved| -> Resolved {
        let (given, abs) = r;
        let text = a.op.starts_with("symlink") && i == 0;
        let kernel = match (&given, text) {
            (Some(g), false) if !g.is_empty() && !emulate::is_opener_relative(g) => {
                kernel_path(tid, p.dirfd.map(|d| args[d] as i32), g, follows_final(i))
            }
            _ => None,
        };
        (given, kernel.or(abs))
    };
    let r1 = resolve_name(tid, args, a.path, follows_final(0));
    let r2 = a
        .path2
        .map(|p| (p, resolve_name(tid, args, p, follows_final(1))));
    let text = |i: usize| a.op.starts_with("symlink") && i == 0;
    // The name a call makes or removes (its parent looked up, the last
    // component taken as it is): a trailing slash does not follow a
    // symlink there (`mkdir l/` is EEXIST, `rmdir l/`, `rename l/ x`
    // ENOTDIR with `l -> d`), so it is walked without its trailing
    // slashes, which the call keeps (review 4, finding 5).
    let walk_name = |i: usize, g: Option<&[u8]>| -> Option<Vec<u8>> {
        let g = g?;
        Some(match namei::names_an_entry(a.op, i == 1) {
            true => namei::without_trailing_slashes(g).to_vec(),
            false => g.to_vec(),
        })
    };
    let walked1 = match text(0) {
        false => {
            let name = walk_name(0, r1.0.as_deref());
            walk_in_view(sup, c, args, a.path, name.as_deref(), follows_final(0))
        }
        true => None,
    };
    let walked2 = match &r2 {
        Some((p, r)) => {
            let name = walk_name(1, r.0.as_deref());
            walk_in_view(sup, c, args, *p, name.as_deref(), follows_final(1))
        }
        None => None,
    };
    let walked = walked1.is_some();
    // The event keeps the program's spelling.
    let spelled = r1.0.clone();
    let spelled2 = r2.as_ref().and_then(|(_, r)| r.0.clone());
    let mut walk_errno = None;
    let mut via_view = false;
    let mut placed =
        |i: usize, p: PathArg, r: Resolved, walked: Option<Result<(Vec<u8>, bool), i32>>| {
            match walked {
                // Where the program's spelling would reach another file, the
                // call is given the name the walk found (the trailing slash,
                // the kernel's to judge, kept).
                Some(Ok((abs, true))) => {
                    via_view = true;
                    let mut given = abs.clone();
                    if r.0.as_ref().is_some_and(|g| g.ends_with(b"/")) && !given.ends_with(b"/") {
                        given.push(b'/');
                    }
                    (Some(given), Some(abs))
                }
                Some(Ok((abs, false))) => (r.0, Some(abs)),
                Some(Err(e)) => {
                    walk_errno.get_or_insert((i, e));
                    r
                }
                None => in_kernel_view(i, p, r),
            }
        };
    let p1 = placed(0, a.path, r1, walked1);
    let p2 = r2.map(|(p, r)| placed(1, p, r, walked2));
    // Without the walk, a final symlink the worker made is followed in the
    // view all the same: the call is then made on the name it leads to,
    // given as an absolute path.
    let (p1, through_own_link) = match (c.worker, follows_final(0), walked) {
        (Some(w), true, false) => {
            let (p1, through) = through_own_symlinks(sup, w, tid, p1);
            if through && p1.1.is_none() {
                // Fails in the kernel's walk, before anything is written.
                return Handled::quiet(Answer::Fail(libc::ELOOP));
            }
            (p1, through)
        }
        // (A first name without a path here is one the walk could not
        // place, a descriptor that is not open: `hopeless`, below. The
        // second name's walk may still have gone through the view:
        // differential seed 99, `linkat 9 a cwd d/../g` after `chmod d`,
        // was ELOOP, bare EBADF.)
        _ => (p1, via_view),
    };
    // A link of a descriptor's file: judged as the link of its path
    // (super::linkfd), none followed.
    // (A descriptor that is not open fails the call: `hopeless`, below.)
    let (link_fd, closed_link_fd) = match super::linkfd::source(tid, a.op, args, spelled.as_deref())
    {
        Some(Err(errno)) => (None, Some(errno)),
        Some(Ok(s)) => (Some(s), None),
        None => (None, None),
    };
    let (p1, through_own_link) = match &link_fd {
        Some(s) => ((p1.0, s.path.clone()), false),
        None => (p1, through_own_link),
    };
    if !still_valid(lfd, id) {
        return Handled::quiet(Answer::Continue);
    }
    let judge = &sup.judge;
    let exe = std::fs::read_link(format!("/proc/{tid}/exe"))
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    // A worker's own directory is allowed to it, as in the library.
    let own_dir = c
        .worker
        .map(|k| judge.run_workers_dir.join(format!("worker_{k}")))
        .unwrap_or_default();
    let policy = Policy {
        own_dir: own_dir.as_os_str().as_bytes(),
        ..judge.policy()
    };
    let registered = policy.component_matches(&exe, None);
    let write = intent.is_write();
    let judge_one = |abs: &Option<Vec<u8>>| match abs {
        Some(a) if write && policy.is_scratch(a, judge.tmpdir.as_bytes()) => Verdict::Allowed,
        Some(a) => policy.verdict(write, a, false, registered),
        None => Verdict::Allowed,
    };
    let rank = |v: Verdict| match v {
        Verdict::Rogue => 4,
        Verdict::Registered => 3,
        Verdict::Declared => 2,
        Verdict::Allowed => 1,
        Verdict::Read => 0,
    };
    let mut verdict = if write {
        Verdict::Allowed
    } else {
        Verdict::Read
    };
    // A hard link is judged by its source too: a second name through which
    // the source can be written (docs/policy.md, review 2, F3).
    if a.writes != Writes::Second || !write || matches!(a.op, "link" | "linkat") {
        verdict = judge_one(&p1.1);
    }
    if let (Some(p2), true) = (&p2, a.writes != Writes::First) {
        let v = judge_one(&p2.1);
        if rank(v) > rank(verdict) {
            verdict = v;
        }
    }
    let mut action = if write {
        policy.action_for(verdict, c.worker.is_some())
    } else {
        Action::None
    };
    // Where each path goes: an earlier redirect of this worker, a new one
    // (a path this call writes, under redirect), or the path itself.
    let written = |i: usize| match a.writes {
        Writes::First => i == 0,
        Writes::Second => i == 1,
        Writes::Both => true,
    };
    let symlink_text = a.op.starts_with("symlink");
    let mut routes: Vec<Route> = Vec::new();
    for (i, p) in std::iter::once(&p1).chain(p2.as_ref()).enumerate() {
        let earlier = match (c.worker, &p.1) {
            // A read finds a name below a directory of the worker's own
            // that the table does not list (made through a descriptor).
            (Some(w), Some(abs)) if !(write || symlink_text && i == 0) => {
                super::view::own_copy(&mut |p: &[u8]| sup.redirects.lookup(w, p), abs)
            }
            (Some(w), Some(abs)) if !(symlink_text && i == 0) => sup.redirects.lookup(w, abs),
            _ => None,
        };
        let route = match earlier {
            Some(t) => Route {
                target: Some(t),
                new: false,
            },
            // A hard link judged rogue by its source only makes its new
            // name in place (scratch, the worker's own directory): the
            // source is what is redirected (below), as in the library.
            None if action == Action::Redirected
                && write
                && written(i)
                && !(matches!(a.op, "link" | "linkat")
                    && i == 1
                    && judge_one(&p.1) != Verdict::Rogue) =>
            {
                let target = match (c.worker, &p.1) {
                    (Some(w), Some(abs)) => {
                        let wd = sup.redirects.worker_dir(w);
                        let mut out = vec![0u8; MAX_ABS];
                        mpaudit_core::map::map_to_worker(
                            abs,
                            judge.job_dir.as_bytes(),
                            wd.as_os_str().as_bytes(),
                            &mut out,
                        )
                        .map(|n| out[..n].to_vec())
                    }
                    _ => None,
                };
                Route { target, new: true }
            }
            None => Route {
                target: None,
                new: false,
            },
        };
        routes.push(route);
    }
    // A hard link of a shared file links the worker's copy of it, never
    // the shared file (a write through the new name would reach it), as
    // the library does (mpaudit_core::policy::link_copies_source).
    let hard_link = matches!(a.op, "link" | "linkat");
    if let (true, Action::Redirected, Some(w), Some(src)) = (hard_link, action, c.worker, &p1.1) {
        let new_name_routed = routes.get(1).is_some_and(|r| r.target.is_some());
        // A regular file or a FIFO, socket or device node (its copy is a
        // node of the same kind), or a symlink linked itself (without
        // AT_SYMLINK_FOLLOW): its copy is a symlink (prepare_target).
        let follows = a.op == "linkat" && args[4] as i32 & libc::AT_SYMLINK_FOLLOW != 0;
        let regular = std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(src))
            .is_ok_and(|m| !(m.is_dir() || m.is_symlink() && follows));
        if routes[0].target.is_none()
            && regular
            && mpaudit_core::policy::link_copies_source(judge_one(&p1.1), new_name_routed, true)
        {
            let wd = sup.redirects.worker_dir(w);
            let mut out = vec![0u8; MAX_ABS];
            let target = mpaudit_core::map::map_to_worker(
                src,
                judge.job_dir.as_bytes(),
                wd.as_os_str().as_bytes(),
                &mut out,
            )
            .map(|n| out[..n].to_vec());
            routes[0] = Route { target, new: true };
        }
    }
    if let (false, Some((_, errno))) = (write, walk_errno) {
        return Handled::quiet(Answer::Fail(errno));
    }
    if let (false, Some(w), Some(abs), false) = (write, c.worker, &p1.1, walked) {
        let spelling = spelled.as_deref().unwrap_or_default();
        if let Some(errno) = read_blocked_in_view(sup, w, tid, args, a.path, spelling, abs) {
            return Handled::quiet(Answer::Fail(errno));
        }
    }
    if !write && !through_own_link && routes.iter().all(|r| r.target.is_none()) {
        // A read of a path not redirected: nothing to follow.
        return Handled::quiet(Answer::Continue);
    }
    let redirected = routes.iter().any(|r| r.target.is_some());
    if redirected {
        action = Action::Redirected;
    }
    let shown_target = routes.iter().find_map(|r| r.target.clone());
    let mut e = common(c, "access", a.op);
    put_path(&mut e, "path", spelled.as_deref());
    put_path(&mut e, "abs", p1.1.as_deref());
    if let Some((_, ab)) = &p2 {
        put_path(&mut e, "path2", spelled2.as_deref());
        put_path(&mut e, "abs2", ab.as_deref());
    }
    e.insert("mode".into(), json!(intent.mode.as_str()));
    e.insert("create".into(), json!(intent.create));
    e.insert("truncate".into(), json!(intent.truncate));
    e.insert("append".into(), json!(intent.append));
    let names: Vec<String> = if flags < 0 || p2.is_some() {
        Vec::new()
    } else {
        let mut v = Vec::new();
        put_flag_names(&mut v, flags);
        serde_json::from_slice(&v).unwrap_or_default()
    };
    e.insert("flags".into(), json!(names));
    e.insert("result".into(), Value::Null);
    e.insert("errno".into(), Value::Null);
    // The only frame the supervisor knows is the program itself.
    let frame = json!({"object": String::from_utf8_lossy(&exe), "vaddr": null});
    e.insert("component".into(), frame.clone());
    e.insert("stack".into(), json!([frame]));
    e.insert("verdict".into(), json!(verdict.as_str()));
    let finish = |mut e: Map<String, Value>, action: Action, answer: Answer, record| {
        e.insert("action".into(), json!(action.as_str()));
        if action == Action::Redirected || action == Action::RedirectFailed {
            if let Some(t) = &shown_target {
                put_path(&mut e, "target", Some(t));
            }
        }
        e.insert("via".into(), json!("seccomp"));
        Handled {
            answer,
            event: Some(e),
            record,
        }
    };
    // A write whose destination cannot be known (a working directory
    // deeper than /proc reports, a path too long once made absolute) is
    // refused under deny and under redirect in a worker, never let through
    // to land in place, as in the library (docs/policy.md, "Unresolvable
    // paths fail closed"). A directory descriptor that is not open reaches
    // no file: the call fails as bare (EBADF).
    let bad_dirfd = |p: PathArg| {
        p.dirfd
            .map(|d| args[d] as i32)
            .filter(|&fd| fd != libc::AT_FDCWD)
            .is_some_and(|fd| std::fs::symlink_metadata(format!("/proc/{tid}/fd/{fd}")).is_err())
    };
    // A relative name against a descriptor that is not open, or not a
    // directory: the kernel fails the call at that name's lookup (EBADF,
    // ENOTDIR, or an earlier name's errno) before anything is changed.
    let not_a_dir = |p: PathArg| {
        p.dirfd
            .map(|d| args[d] as i32)
            .filter(|&fd| fd != libc::AT_FDCWD)
            .is_some_and(|fd| {
                std::fs::metadata(format!("/proc/{tid}/fd/{fd}")).is_ok_and(|m| !m.is_dir())
            })
    };
    // The errno of the first such name: EBADF, or ENOTDIR for a file's.
    // A name through the descriptor link of a descriptor the task does
    // not have (`/proc/self/fd/N…`): the kernel's lookup ends there with
    // ENOENT. `Some(true)`: the link is the name's last component, looked
    // up after every name's parent (a later name's bad descriptor first).
    let no_such_link = |g: &[u8]| -> Option<bool> {
        // `self` is the process's table, `thread-self` the thread's (a
        // thread may have its own: unshare(CLONE_FILES)).
        let (rest, whose) = match g.strip_prefix(b"/proc/self/fd/") {
            Some(rest) => (rest, c.task.pid),
            None => (g.strip_prefix(b"/proc/thread-self/fd/")?, tid),
        };
        let n = rest
            .split(|&b| b == b'/')
            .next()
            .filter(|n| !n.is_empty())?;
        let mut at = format!("/proc/{whose}/fd/").into_bytes();
        at.extend_from_slice(n);
        // Only a missing entry (EACCES is not ours to tell).
        let missing = std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(&at))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        missing.then(|| rest[n.len()..].iter().all(|&b| b == b'/'))
    };
    // (whether at the last component, errno) of each name's first failure.
    let failures: Vec<(bool, i32)> = std::iter::once((&p1, a.path))
        .chain(p2.as_ref().zip(a.path2))
        .enumerate()
        .filter(|(i, _)| !(a.op.starts_with("symlink") && *i == 0))
        .filter_map(|(_, ((given, _), arg))| {
            let relative = given
                .as_ref()
                .is_some_and(|g| !g.is_empty() && g[0] != b'/');
            match (relative, bad_dirfd(arg), not_a_dir(arg)) {
                (true, true, _) => Some((false, libc::EBADF)),
                (true, _, true) => Some((false, libc::ENOTDIR)),
                _ => Some((given.as_deref().and_then(no_such_link)?, libc::ENOENT)),
            }
        })
        .collect();
    let hopeless = closed_link_fd.or_else(|| {
        let walk = failures.iter().find(|(last, _)| !last);
        walk.map(|&(_, errno)| errno)
    });
    // A missing descriptor link as a name's last component: after every
    // name's walk (below, where the name proves unresolvable).
    let missing_last = failures.iter().any(|&(last, _)| last);
    // The directory a relative name starts from, as the view has it: a
    // descriptor of a directory of the worker's stands for its job
    // directory (as in `walk_in_view`; review 4, finding 4).
    let mut start_of = |p: PathArg, given: Option<&[u8]>| -> Option<Vec<u8>> {
        let b = match given {
            Some(g) if g.first() != Some(&b'/') => base_dir(tid, p.dirfd.map(|d| args[d] as i32)),
            _ => None,
        }?;
        // Only a directory stands for one (a file's descriptor is ENOTDIR
        // whatever its name in the view).
        let dir = std::fs::metadata(std::ffi::OsStr::from_bytes(&b)).is_ok_and(|m| m.is_dir());
        match (c.worker, sup.judge.action) {
            (Some(w), ActionSetting::Redirect) if dir => Some(job_path_of(sup, w, &b).unwrap_or(b)),
            _ => Some(b),
        }
    };
    let start1 = start_of(a.path, spelled.as_deref());
    let start2 = a.path2.and_then(|p| start_of(p, spelled2.as_deref()));
    let named = |base: &Option<Vec<u8>>, given| super::failing::Named {
        task: Some((tid, c.task.pid)),
        base: base.clone(),
        given,
    };
    let at_flags = match a.op {
        "unlinkat" | "mknodat" => args[2],
        "linkat" | "renameat2" => args[4],
        "mknod" => args[1],
        _ => 0,
    };
    let anyway = |view: Option<super::failing::View<'_>>| {
        if let Some(s) = &link_fd {
            let second = a.path2.map(|_| named(&start2, spelled2.as_deref()));
            return super::linkfd::failing_anyway(s, at_flags, second, view);
        }
        super::failing::failing_anyway(
            a.op,
            flags,
            at_flags,
            follows_final(0),
            named(&start1, spelled.as_deref()),
            a.path2.map(|_| named(&start2, spelled2.as_deref())),
            view,
        )
    };
    // A write under redirect or deny is answered here, never given to the
    // kernel as spelled: another thread of the task could make the
    // descriptor one of the job's directories before the kernel looks
    // (fail closed).
    let answers_here = write
        && matches!(
            sup.judge.action,
            ActionSetting::Redirect | ActionSetting::Deny
        );
    if let (Some(_), false) = (hopeless, answers_here) {
        return finish(e, Action::Logged, Answer::Continue, Vec::new());
    }
    if let Some(bad_name) = hopeless {
        // An earlier name the view (or the shared tree) fails first;
        // else the name with the bad descriptor (a link's missing source,
        // ENOENT, is said by `anyway`).
        let first = match (sup.judge.action, c.worker) {
            (ActionSetting::Redirect, Some(w)) => {
                let mut lookup = |abs: &[u8]| sup.redirects.lookup(w, abs);
                anyway(Some(&mut lookup))
            }
            _ => anyway(None),
        };
        let errno = first.unwrap_or(bad_name);
        return finish(e, Action::Logged, Answer::Fail(errno), Vec::new());
    }
    // Open flags the kernel refuses fail before it looks at a name, then
    // an empty name (not a descriptor's AT_EMPTY_PATH).
    if write
        && matches!(a.op, "open" | "openat" | "creat")
        && super::failing::invalid_open_flags(flags)
    {
        return finish(e, Action::Logged, Answer::Fail(libc::EINVAL), Vec::new());
    }
    if write && super::failing::invalid_at_flags(a.op, at_flags) {
        return finish(e, Action::Logged, Answer::Fail(libc::EINVAL), Vec::new());
    }
    let empty = |g: &Option<Vec<u8>>| g.as_deref() == Some(b"");
    if write
        && super::failing::an_empty_name_fails(a.op, at_flags, empty(&spelled), empty(&spelled2))
    {
        return finish(e, Action::Logged, Answer::Fail(libc::ENOENT), Vec::new());
    }
    let unresolvable = write
        && std::iter::once((&p1, a.path))
            .chain(p2.as_ref().zip(a.path2))
            .enumerate()
            .any(|(i, ((given, abs), arg))| {
                written(i)
                    && !(symlink_text && i == 0)
                    && given.as_ref().is_some_and(|g| !g.is_empty())
                    && abs.is_none()
                    && !bad_dirfd(arg)
            });
    if answers_here && missing_last {
        // Nothing is written: the kernel fails the call at its own checks
        // (EXDEV across mounts), a name's walk, or the link it cannot find.
        let errno = match (sup.judge.action, c.worker) {
            (ActionSetting::Redirect, Some(w)) => {
                let mut lookup = |abs: &[u8]| sup.redirects.lookup(w, abs);
                anyway(Some(&mut lookup))
            }
            _ => anyway(None),
        };
        let errno = errno.or(walk_errno.map(|(_, e)| e)).unwrap_or(libc::ENOENT);
        return finish(e, Action::Logged, Answer::Fail(errno), Vec::new());
    }
    if unresolvable {
        match sup.judge.action {
            ActionSetting::Deny => {
                return finish(e, Action::Denied, Answer::Fail(libc::EACCES), Vec::new())
            }
            ActionSetting::Redirect if c.worker.is_some() => {
                return finish(
                    e,
                    Action::RedirectFailed,
                    Answer::Fail(libc::EACCES),
                    Vec::new(),
                )
            }
            _ => {}
        }
    }
    if action == Action::Denied {
        // A call the kernel would fail anyway writes nothing: it fails as
        // bare, an attempt (review 2, F20); EACCES for one that would
        // succeed, or when that cannot be told.
        return match anyway(None) {
            Some(errno) => finish(e, Action::Logged, Answer::Fail(errno), Vec::new()),
            None => finish(e, action, Answer::Fail(libc::EACCES), Vec::new()),
        };
    }
    if let (true, Some(w)) = (redirected || routes.iter().any(|r| r.new), c.worker) {
        // What the kernel would answer in the worker's view, as the
        // library's precheck: the worker paths lack the shared entries the
        // call collides with, and the spelling's trailing slash or `.`
        // (`mkdir a/`, `rmdir d/.`, `rename a b NOREPLACE`) would be lost.
        let mut lookup = |abs: &[u8]| sup.redirects.lookup(w, abs);
        if let Some(errno) = anyway(Some(&mut lookup)) {
            return finish(e, Action::Logged, Answer::Fail(errno), Vec::new());
        }
    }
    if let Some((at, errno)) = walk_errno {
        // A name the view's walk cannot reach: nothing is written (open
        // flags the kernel refuses fail first).
        let opens = matches!(a.op, "open" | "openat" | "openat2" | "creat");
        let errno = match opens && super::failing::invalid_open_flags(flags) {
            true => libc::EINVAL,
            false => errno,
        };
        // The second name's walk fails after the first name's own checks
        // (a link's missing or empty source is ENOENT first).
        let errno = match (at, c.worker, sup.judge.action) {
            (1, Some(w), ActionSetting::Redirect) => {
                let mut lookup = |abs: &[u8]| sup.redirects.lookup(w, abs);
                anyway(Some(&mut lookup)).unwrap_or(errno)
            }
            _ => errno,
        };
        return finish(e, Action::Logged, Answer::Fail(errno), Vec::new());
    }
    let failed_redirect = |e| {
        finish(
            e,
            Action::RedirectFailed,
            Answer::Fail(libc::EACCES),
            Vec::new(),
        )
    };
    if routes.iter().any(|r| r.new && r.target.is_none()) {
        return failed_redirect(e); // the worker's path does not fit
    }
    if let (true, Some(w)) = (routes.iter().any(|r| r.new), c.worker) {
        // Room in the worker's table first: a redirect its processes could
        // not find again must not happen (fail closed, as the library).
        if let Err(errno) = sup.redirects.reserve(w) {
            return finish(e, Action::RedirectFailed, Answer::Fail(errno), Vec::new());
        }
    }
    // A shared directory renamed (or exchanged) under redirect: the
    // worker's copy is made first, holding what the shared one holds that
    // the worker has not redirected (docs/policy.md, "Renaming a
    // directory"); the worker's copies then move in the worker directory.
    let renames = matches!(a.op, "rename" | "renameat" | "renameat2");
    // Each shared directory copied up: its name, its copy, and whether
    // the copy was made here (removed again if the call fails).
    let mut made_dirs: Vec<(Vec<u8>, Vec<u8>, bool)> = Vec::new();
    // The shared directories whose copies the rename moves: the task's
    // descriptors of them follow (super::holders).
    let mut moved_dirs: Vec<(usize, super::holders::Held)> = Vec::new();
    if let (true, Some(w)) = (renames, c.worker) {
        let exchange = a.op == "renameat2" && args[4] as u32 & libc::RENAME_EXCHANGE != 0;
        let sides = std::iter::once(&p1).chain(p2.as_ref()).zip(&routes);
        for (i, (p, r)) in sides.enumerate() {
            let (Some(abs), Some(t), true) = (&p.1, &r.target, i == 0 || exchange) else {
                continue;
            };
            // The worker's copy may exist already, made as the parent of
            // a file it wrote: the shared entries are added to it.
            // A copy made earlier for a metadata change (`chmod d`) holds
            // none of the shared entries yet: they are added to it too,
            // as the library's rename completion does.
            // (Only a directory is copied up: the worker's own symlink or
            // file at the name is renamed as it is.)
            if emulate::is_dir(abs) && (r.new || emulate::is_dir(t)) {
                moved_dirs.extend(super::holders::Held::at(abs).map(|h| (i, h)));
                let created = !emulate::exists(t);
                let wd = sup.redirects.worker_dir(w);
                let made = emulate::prepare_target(abs, t, wd.as_os_str().as_bytes(), false)
                    .and_then(|()| copy_dir_up(sup, w, abs, t));
                if let Err(errno) = made {
                    if created {
                        remove_below(sup, w, t);
                    }
                    return finish(e, Action::RedirectFailed, Answer::Fail(errno), Vec::new());
                }
                // A copy that was there already (the parent of a file the
                // worker wrote) got the shared entries too: their old
                // names are removed from the view as well.
                made_dirs.push((abs.clone(), t.clone(), created));
            }
        }
    }
    // The task's descriptors of what the call copies or takes from the
    // view follow it (super::holders).
    let moves = super::holders::Call {
        stopped: super::holders::Stopped { lfd, id, tid },
        op: a.op,
        args,
        sides: std::iter::once(&p1)
            .chain(p2.as_ref())
            .zip(&routes)
            .map(|(p, r)| super::holders::Side {
                abs: p.1.clone(),
                target: r.target.clone(),
                new: r.new,
            })
            .collect(),
        worker_dir: c
            .worker
            .map(|w| sup.redirects.worker_dir(w).into_os_string().into_vec()),
    };
    let before = moves.before();
    let mut copies = Vec::new();
    let performed = perform(
        sup,
        c,
        args,
        &a,
        flags,
        how,
        &p1,
        p2.as_ref(),
        &routes,
        intent,
        &mut copies,
        link_fd.as_ref().map(|s| {
            let own = c.worker.map(|w| sup.redirects.worker_dir(w));
            (
                s.fd,
                s.linkable(own.as_ref().map(|d| d.as_os_str().as_bytes())),
            )
        }),
    );
    let succeeded = matches!(
        &performed,
        Performed::Done(Answer::Value(0..) | Answer::Fd { .. })
    );
    moves.after(before, succeeded, &copies, &moved_dirs);
    match performed {
        Performed::Done(answer) => {
            let mut record: Vec<(Vec<u8>, Vec<u8>)> = routes
                .iter()
                .zip(std::iter::once(&p1).chain(p2.as_ref()))
                .filter(|(r, _)| r.new)
                .filter_map(|(r, p)| Some((p.1.clone()?, r.target.clone()?)))
                .collect();
            let moved = matches!(answer, Answer::Value(0));
            if renames && moved {
                // Every name below a moved directory, under its new name
                // (what the merge takes back), and the old names of the
                // copied-up entries as removed.
                let sides: Vec<_> = std::iter::once(&p1)
                    .chain(p2.as_ref())
                    .zip(&routes)
                    .collect();
                for (p, r) in &sides {
                    if let (Some(abs), Some(t)) = (&p.1, &r.target) {
                        below(t, &mut |rel| record.push((join(abs, rel), join(t, rel))));
                    }
                }
                for (old, copy, _) in &made_dirs {
                    // The copied entries now lie below the other name.
                    let other = sides.iter().find(|(p, _)| p.1.as_ref() != Some(old));
                    if let Some(moved_to) = other.and_then(|(_, r)| r.target.as_ref()) {
                        below(moved_to, &mut |rel| {
                            record.push((join(old, rel), join(copy, rel)))
                        });
                    }
                }
                let mut seen = std::collections::HashSet::new();
                record.retain(|(original, _)| seen.insert(original.clone()));
            } else {
                for (_, copy, _) in made_dirs.iter().filter(|d| d.2) {
                    if let Some(w) = c.worker {
                        remove_below(sup, w, copy);
                    }
                }
            }
            finish(e, action, answer, record)
        }
        Performed::Refused(errno) => {
            finish(e, Action::RedirectFailed, Answer::Fail(errno), Vec::new())
        }
        Performed::NotEmulated if redirected => failed_redirect(e),
        // The view's walk went elsewhere than the spelling (through a
        // symlink of the worker's, to a magic link of the task's): the
        // kernel, given the spelling, would reach another file. The call
        // fails where that name does not exist, else closed.
        Performed::NotEmulated if through_own_link => {
            // Open flags the kernel refuses fail before any lookup.
            let opens = matches!(a.op, "open" | "openat" | "openat2" | "creat");
            if opens && super::failing::invalid_open_flags(flags) {
                return finish(e, Action::Logged, Answer::Fail(libc::EINVAL), Vec::new());
            }
            let missing = p1.1.as_ref().and_then(|abs| {
                std::fs::metadata(std::ffi::OsStr::from_bytes(abs))
                    .err()
                    .and_then(|e| e.raw_os_error())
            });
            match missing {
                Some(errno) => finish(e, Action::Logged, Answer::Fail(errno), Vec::new()),
                None => failed_redirect(e),
            }
        }
        // A change of the worker's own directory is never left to the
        // kernel: made outside the supervisor's order of calls, it could
        // swap a copy's parent for a symlink between another call's check
        // and its performing (review 4; a name through a symlink to
        // /proc/self/cwd is not performed here, so it would be).
        Performed::NotEmulated
            if write
                && c.worker.is_some()
                && sup.judge.action == ActionSetting::Redirect
                // (A link's source is not changed, nor a symlink's text:
                // their new name is.)
                && std::iter::once(&p1.1)
                    .filter(|_| !matches!(a.op, "link" | "linkat") && !text(0))
                    .chain(p2.as_ref().map(|p| &p.1))
                    .flatten()
                    .any(|a| {
                        mpaudit_core::policy::is_at_or_below(a, own_dir.as_os_str().as_bytes())
                    }) =>
        {
            failed_redirect(e)
        }
        Performed::NotEmulated => finish(e, action, Answer::Continue, Vec::new()),
    }
}

/// Copies into `copy` (the worker's new copy of the shared directory
/// `shared`) every entry of `shared` the worker has not redirected or
/// removed: files with their content and mode, symlinks as symlinks,
/// directories recursively.
fn copy_dir_up(sup: &mut Supervision, w: u32, shared: &[u8], copy: &[u8]) -> Result<(), i32> {
    use std::os::unix::fs::PermissionsExt;
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let os = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_owned();
    let mode = std::fs::metadata(os(shared))
        .map_err(errno)?
        .permissions()
        .mode();
    // Everything is made through the copy's descriptor, held beneath the
    // worker directory (super::beneath): the program may write its worker
    // directory, and a symlink it put where an entry's copy goes would be
    // followed by the copy (or the recursion) into the shared tree
    // (review 4, finding 2).
    let wd = sup.redirects.worker_dir(w);
    let place = Place::of(wd.as_os_str().as_bytes(), copy)?;
    // A copy that exists already keeps its own mode (a `chmod` of the
    // shared directory made it) and times; a new one takes the shared
    // directory's, as the moved directory keeps them bare (review 8 F1).
    let made = place.make_dir(mode)?;
    let dir = place.held_dir()?;
    let shared_times = std::fs::symlink_metadata(os(shared)).map_err(errno)?;
    for entry in std::fs::read_dir(os(shared)).map_err(errno)? {
        let entry = entry.map_err(errno)?;
        let name = entry.file_name();
        let (from, to) = (join(shared, name.as_bytes()), join(copy, name.as_bytes()));
        let kind = entry.file_type().map_err(errno)?;
        let here = Place::in_held(&dir, name.as_bytes())?;
        let there = here.lstat();
        if let Some(own) = sup.redirects.lookup(w, &from) {
            // The worker's own, or removed by it; but a shared directory
            // whose copy a metadata change made (`chmod d/s`) holds none
            // of the shared entries yet: they are added to it too.
            let metadata_copy = own == to
                && kind.is_dir()
                && there.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            if metadata_copy {
                copy_dir_up(sup, w, &from, &to)?;
            }
            continue;
        }
        if there.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK) {
            return Err(libc::ELOOP);
        }
        if kind.is_dir() {
            copy_dir_up(sup, w, &from, &to)?;
        } else if there.is_some() {
            // What the copy holds already is the worker's (made through a
            // descriptor of the copy): never overwritten by the shared one.
            continue;
        } else if kind.is_symlink() {
            let text = std::fs::read_link(os(&from)).map_err(errno)?;
            here.make_symlink(text.as_os_str().as_bytes())?;
        } else if kind.is_file() {
            let mut f = File::open(os(&from)).map_err(errno)?;
            let m = f.metadata().map_err(errno)?;
            here.copy_file(&mut f, &m)?;
        } else {
            here.make_node(&std::fs::symlink_metadata(os(&from)).map_err(errno)?)?;
        }
    }
    if made {
        use std::os::unix::fs::MetadataExt;
        let m = &shared_times;
        let times =
            mpaudit_core::times::pair((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()));
        beneath::set_times(dir.as_raw_fd(), &times);
    }
    Ok(())
}

/// Removes the copy at `t` (with what it holds) below the worker
/// directory, never through a symlink (super::beneath).
fn remove_below(sup: &Supervision, w: u32, t: &[u8]) {
    let wd = sup.redirects.worker_dir(w);
    if let Ok(place) = Place::of(wd.as_os_str().as_bytes(), t) {
        place.remove(true);
    }
}

/// Every path below the directory `dir` (none when it is no directory),
/// relative to it, parents first.
fn below(dir: &[u8], each: &mut dyn FnMut(&[u8])) {
    fn walk(root: &[u8], rel: &mut Vec<u8>, each: &mut dyn FnMut(&[u8])) {
        let here = if rel.is_empty() {
            root.to_vec()
        } else {
            join(root, rel)
        };
        let Ok(entries) = std::fs::read_dir(std::ffi::OsStr::from_bytes(&here)) else {
            return;
        };
        for entry in entries.flatten() {
            let n = rel.len();
            if n > 0 {
                rel.push(b'/');
            }
            rel.extend_from_slice(entry.file_name().as_bytes());
            each(rel);
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, rel, each);
            }
            rel.truncate(n);
        }
    }
    if emulate::is_dir(dir) {
        walk(dir, &mut Vec::new(), each);
    }
}

/// `dir/name`.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// The errno a read of `spelling` (resolved by the kernel in the shared
/// tree to `abs`) gets in the worker's view: [`blocked_in_view`], and a
/// spelling through a directory the worker removed (`d/../a`), where the
/// kernel's walk of the shared tree goes on and the view's does not.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_blocked_in_view(
    sup: &mut Supervision,
    w: u32,
    tid: i32,
    args: &[u64; 6],
    path: PathArg,
    spelling: &[u8],
    abs: &[u8],
) -> Option<i32> {
    if let Some(errno) = blocked_in_view(sup, w, abs) {
        return Some(errno);
    }
    // A last `..` (or `.`) is a directory of the walk too (`d/..`).
    let dir = match spelling.rsplit(|&b| b == b'/').next() {
        Some(b".." | b".") => spelling,
        _ => &spelling[..spelling.iter().rposition(|&b| b == b'/').unwrap_or(0)],
    };
    if !dir.split(|&b| b == b'/').any(|c| c == b"..") {
        return None;
    }
    let base = base_dir(tid, path.dirfd.map(|d| args[d] as i32));
    let mut lookup = |p: &[u8]| sup.redirects.lookup(w, p);
    let mut view: super::failing::View = &mut lookup;
    match super::failing::spelled_dirs_in_view(base.as_deref().unwrap_or(b"/"), dir, &mut view) {
        Err(Some(errno)) => Some(errno),
        _ => None,
    }
}

/// The errno a read of `abs` gets where one of its directories is, in the
/// worker's view, something the shared tree does not say: removed by the
/// worker (ENOENT) or a file of the worker's (ENOTDIR). `None`: the
/// shared tree's walk stands (or the directory is the worker's own).
fn blocked_in_view(sup: &mut Supervision, w: u32, abs: &[u8]) -> Option<i32> {
    let mut end = 0;
    while let Some(i) = abs[end + 1..].iter().position(|&b| b == b'/') {
        end += 1 + i;
        if let Some(copy) = sup.redirects.lookup(w, &abs[..end]) {
            // A directory or symlink of the worker's: the shared walk's.
            return super::failing::in_view(&copy, &abs[..end]).err().flatten();
        }
    }
    None
}

/// `p` (a name the call follows to its end) through the symlinks the
/// worker made under redirect: their copies are symlinks in the worker
/// directory, whose targets the kernel would resolve there, not from the
/// job path they stand for. Each is read and its text resolved from the
/// link's job directory, up to the kernel's 40 links; the result is the
/// name in the shared tree (its directories resolved by the kernel) and
/// is what the call is then given. The flag: a link of the worker's was
/// followed (with no name: more than the kernel's 40, ELOOP).
pub(super) fn through_own_symlinks(
    sup: &mut Supervision,
    w: u32,
    tid: i32,
    p: Resolved,
) -> (Resolved, bool) {
    let (given, Some(mut abs)) = p else {
        return (p, false);
    };
    let original = abs.clone();
    let mut followed = false;
    for hop in 0..=40 {
        // The worker's copy, or the shared name (a chain may pass both).
        // The task's own magic links (`/proc/self/cwd/…`), not ours.
        abs = follow_magic_link(tid, abs);
        let (link, own) = match sup.redirects.lookup(w, &abs) {
            Some(copy) => (copy, true),
            None => (abs.clone(), false),
        };
        let Ok(text) = std::fs::read_link(std::ffi::OsStr::from_bytes(&link)) else {
            break; // no symlink (or removed): the copy itself
        };
        if hop == 40 {
            // The kernel's limit: a 41st link is ELOOP.
            return ((given, None), true);
        }
        if !own && !followed {
            break; // a shared link first: the kernel's own walk
        }
        let parent = &abs[..abs.iter().rposition(|&b| b == b'/').unwrap_or(0).max(1)];
        let mut out = vec![0u8; MAX_ABS];
        match mpaudit_core::path::absolutize(text.as_os_str().as_bytes(), Some(parent), &mut out) {
            Some(n) => abs = out[..n].to_vec(),
            None => break,
        }
        followed = true;
    }
    if !followed {
        return ((given, Some(original)), false);
    }
    let abs = kernel_path(tid, None, &abs, true).unwrap_or(abs);
    ((Some(abs.clone()), Some(abs)), true)
}

/// Whether call `op` follows a final symlink of its path argument `i`.
fn follows_final(op: &str, args: &[u64; 6], flags: i32, i: usize) -> bool {
    match op {
        "open" | "openat" | "openat2" => {
            flags & libc::O_NOFOLLOW == 0
                && flags & (libc::O_CREAT | libc::O_EXCL) != libc::O_CREAT | libc::O_EXCL
        }
        "creat" | "truncate" | "chmod" | "chown" | "utime" | "utimes" | "futimesat" => true,
        "fchmodat" => true,
        "fchmodat2" => args[3] as i32 & libc::AT_SYMLINK_NOFOLLOW == 0,
        "fchownat" => args[4] as i32 & libc::AT_SYMLINK_NOFOLLOW == 0,
        "utimensat" => args[3] as i32 & libc::AT_SYMLINK_NOFOLLOW == 0,
        "linkat" => i == 0 && args[4] as i32 & libc::AT_SYMLINK_FOLLOW != 0,
        _ => false,
    }
}

enum Performed {
    /// The call was performed (or answered) here.
    Done(Answer),
    /// A redirect could not be prepared: the call fails with this errno
    /// and the shared file is not touched.
    Refused(i32),
    /// Left to the kernel.
    NotEmulated,
}

/// Performs an access call in the supervisor, on the routed paths.
#[allow(clippy::too_many_arguments)]
fn perform(
    sup: &Supervision,
    c: &Caller,
    args: &[u64; 6],
    a: &AccessCall,
    flags: i32,
    how: Option<[u64; 3]>,
    p1: &Resolved,
    p2: Option<&Resolved>,
    routes: &[Route],
    intent: mpaudit_core::flags::OpenIntent,
    copies: &mut Vec<(usize, super::holders::Held)>,
    link_fd: Option<(i32, super::linkfd::Linkable)>,
) -> Performed {
    let Replay::Native(nr, memory) = a.replay else {
        return Performed::NotEmulated;
    };
    if !c.task.same_credentials() {
        return Performed::NotEmulated;
    }
    let symlink_text = a.op.starts_with("symlink");
    let paths: Vec<(PathArg, &Resolved)> = std::iter::once((a.path, p1))
        .chain(a.path2.zip(p2))
        .collect();
    // The bytes each path argument gets, and whether its directory
    // argument must be translated (a relative path, not redirected).
    let mut used: Vec<(Vec<u8>, bool)> = Vec::new();
    for (i, ((_, (given, abs)), route)) in paths.iter().zip(routes).enumerate() {
        if i == 0 && link_fd.is_some() && route.target.is_none() {
            // The task's descriptor itself (below).
            used.push((Vec::new(), false));
            continue;
        }
        if let Some(t) = &route.target {
            // The spelling's trailing slash is the kernel's to judge on
            // the worker's copy too (`stat("a/")` of a file: ENOTDIR).
            let mut t = t.clone();
            if given.as_ref().is_some_and(|g| g.ends_with(b"/")) {
                t.push(b'/');
            }
            used.push((t, false));
            continue;
        }
        let Some(g) = given else {
            return Performed::NotEmulated; // a NULL path: on a descriptor
        };
        if symlink_text && i == 0 {
            used.push((g.clone(), false));
        } else if !emulate::is_opener_relative(g) {
            used.push((g.clone(), g.first() != Some(&b'/')));
        } else if let Some(ab) = abs.as_ref().filter(|ab| !emulate::is_opener_relative(ab)) {
            // Through a magic link of the task: the file it names.
            used.push((ab.clone(), false));
        } else {
            return Performed::NotEmulated;
        }
    }
    // Prepare new redirects: parents where the shared ones exist, the
    // original's content for calls that keep or change it.
    let removes = matches!(a.op, "unlink" | "unlinkat" | "rmdir");
    let is_tmpfile = matches!(a.intent, Intent::Flags(_) | Intent::OpenHow(_))
        && flags >= 0
        && flags & libc::O_TMPFILE == libc::O_TMPFILE;
    let rmdir = a.op == "rmdir" || (a.op == "unlinkat" && args[2] as i32 & libc::AT_REMOVEDIR != 0);
    for (i, (((_, (_, abs)), route), (u, _))) in paths.iter().zip(routes).zip(&used).enumerate() {
        // The second name the first one (`rename l l`): prepared once.
        if !route.new || (i == 1 && routes[0].target == route.target) {
            continue;
        }
        let Some(abs) = abs else {
            return Performed::Refused(libc::EACCES);
        };
        // An exchange moves both names' files: both are the worker's.
        let exchange = a.op == "renameat2" && args[4] as u32 & libc::RENAME_EXCHANGE != 0;
        let copy = match a.op {
            "rename" | "renameat" | "renameat2" => i == 0 || exchange,
            "link" | "linkat" => i == 0,
            "truncate" | "chmod" | "fchmodat" | "fchmodat2" | "chown" | "lchown" | "fchownat"
            | "utime" | "utimes" | "utimensat" | "futimesat" => true,
            // O_TMPFILE names a directory, whose copy it needs whatever
            // O_TRUNC says (the kernel ignores it there).
            _ if is_tmpfile => true,
            _ => a.intent != Intent::Namespace && intent.is_write() && !intent.truncate,
        };
        let Some(w) = c.worker else {
            return Performed::Refused(libc::EACCES);
        };
        let wd = sup.redirects.worker_dir(w);
        let seeds = copy || (a.intent != Intent::Namespace && intent.truncate);
        // The shared regular file this call copies, for the task's
        // descriptors of it (super::holders). Not a directory's copy (a
        // metadata change, O_TMPFILE): the supervisor resolves a name
        // relative to a descriptor of the worker's copy in the worker's
        // directory, which lacks the shared entries.
        let held = (seeds && !emulate::exists(u))
            .then(|| super::holders::Held::at(abs))
            .flatten()
            .filter(|h| !h.is_dir());
        if let Err(e) = emulate::prepare_target(abs, u, wd.as_os_str().as_bytes(), copy) {
            return Performed::Refused(e);
        }
        // A truncating open of an existing file keeps its mode (with
        // O_CREAT too: the mode argument applies only to a new file).
        if a.intent != Intent::Namespace && intent.truncate && !copy {
            if let Err(e) = emulate::seed_empty(abs, wd.as_os_str().as_bytes(), u) {
                return Performed::Refused(e);
            }
        }
        if let Some(h) = held.filter(|_| emulate::exists(u)) {
            copies.push((i, h));
        }
        if removes && !emulate::exists(u) && emulate::exists(abs) {
            // A removal of a shared file this worker never wrote: it
            // vanishes from the worker's view (the new redirect names a
            // copy that does not exist); the shared file stays. The
            // kernel first asks whether the directory may lose the name
            // (may_delete; review 8 F2), of the directory as the view
            // shows it: its copy where the worker changed its metadata,
            // else the shared one (a mirror's owner is the worker's;
            // review 9 F3).
            let place = Place::of(wd.as_os_str().as_bytes(), u).ok();
            let owner = std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(abs)).ok();
            let parent = abs
                .iter()
                .rposition(|&b| b == b'/')
                .map(|at| &abs[..at.max(1)]);
            let shared_shown = parent.filter(|p| sup.redirects.lookup_made(w, p).is_none());
            if let Some(owner) = owner {
                use std::os::unix::fs::MetadataExt;
                let asked = match (shared_shown, &place) {
                    (Some(p), _) => beneath::may_remove_in(p, owner.uid()),
                    (None, Some(place)) => place.may_remove(owner.uid()),
                    (None, None) => Ok(()),
                };
                if let Err(e) = asked {
                    return Performed::Done(Answer::Fail(e));
                }
            }
            let answer = if rmdir {
                match emulate::removable_dir(abs) {
                    Ok(()) => Answer::Value(0),
                    Err(e) => Answer::Fail(e),
                }
            } else if std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(abs))
                .is_ok_and(|m| m.is_dir())
            {
                Answer::Fail(libc::EISDIR)
            } else {
                Answer::Value(0)
            };
            // Bare, the directory's times change (its copy's, when the
            // view shows them: review 8 F1).
            if let (Answer::Value(0), Some(place)) = (&answer, &place) {
                place.touch_parent();
            }
            return Performed::Done(answer);
        }
    }
    if link_fd.is_some_and(|(_, l)| l == super::linkfd::Linkable::Never)
        && sup.judge.action != ActionSetting::Log
    {
        return Performed::Refused(libc::EACCES);
    }
    if matches!(a.op, "link" | "linkat")
        && routes.get(1).is_some_and(|r| r.new)
        && routes[0].target.is_none()
        && !link_fd.is_some_and(|(_, l)| l == super::linkfd::Linkable::InPlace)
    {
        // A source neither the shared tree nor the worker's table has (a
        // name below a directory only the view has) is missing in the
        // view too: the kernel's ENOENT, looked up before the new name.
        let missing = |p: &Resolved| {
            p.1.as_ref().is_some_and(|abs| {
                std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(abs)).is_err()
            })
        };
        if link_fd.is_none() && missing(p1) {
            return Performed::Done(Answer::Fail(libc::ENOENT));
        }
        // A hard link in the worker's directory to a shared file would let
        // the worker change the shared file through it.
        return Performed::Refused(libc::EACCES);
    }
    let Ok(mut ctx) = Context::enter(&c.task) else {
        return Performed::NotEmulated;
    };
    let mut a6 = *args;
    let mut keep: Vec<CString> = Vec::new();
    let mut dirs: Vec<RawFd> = Vec::new();
    // The routed names' held parents and leaves (super::beneath).
    let mut held: Vec<OwnedFd> = Vec::new();
    let wd = c.worker.map(|w| sup.redirects.worker_dir(w));
    // Which names are given as a descriptor of their leaf (a magic link
    // the call must follow).
    let mut through_leaf = [false; 2];
    // Which names are our descriptor of a task's descriptor's file.
    let mut through_task_fd = [false; 2];
    // A descriptor source is not walked (super::linkfd).
    let walked_at = |i: usize| i > 0 || link_fd.is_none();
    // Calls that may act on what a final symlink points to (the magic
    // link check below).
    let may_follow_final = |i: usize| match a.op {
        "truncate" | "chmod" | "fchmodat" | "fchmodat2" | "chown" | "fchownat" | "utime"
        | "utimes" | "futimesat" | "utimensat" => true,
        "link" | "linkat" => i == 0,
        _ => false,
    };
    // Whether the call acts on what its final symlink points to (a
    // trailing slash makes a metadata change follow one too).
    let leaf_followed = |i: usize, slash: bool| {
        follows_final(a.op, args, flags, i) || (slash && emulate::changes_metadata(a.op))
    };
    let is_open = matches!(
        a.intent,
        Intent::Flags(_) | Intent::OpenHow(_) | Intent::Creat
    );
    for (i, ((p, _), (u, relative))) in paths.iter().zip(&used).enumerate() {
        if routes[i].target.is_some() {
            // A name below the worker directory: made on its parent held
            // beneath it, a symlink in the way refused (review 4).
            let Some(wd) = &wd else {
                return Performed::Refused(libc::EACCES);
            };
            let place = match Place::of(wd.as_os_str().as_bytes(), u) {
                Ok(place) => place,
                Err(e) if beneath::is_escape(e) => return Performed::Refused(libc::EACCES),
                Err(e) => return Performed::Done(Answer::Fail(e)),
            };
            let (dirfd, name) = if is_open {
                (place.dir(), place.leaf().clone())
            } else if leaf_followed(i, u.ends_with(b"/")) {
                // Acted on through a descriptor of the leaf itself: a
                // symlink there (none of the worker's, those were
                // followed in the view) is refused, not followed.
                let leaf = match place.open_leaf(0) {
                    Ok(fd) => fd,
                    Err(e) if beneath::is_escape(e) => return Performed::Refused(libc::EACCES),
                    Err(e) => return Performed::Done(Answer::Fail(e)),
                };
                if emulate::is_symlink_fd(leaf.as_raw_fd()) {
                    return Performed::Refused(libc::EACCES);
                }
                let name = beneath::fd_path(leaf.as_raw_fd());
                held.push(leaf);
                through_leaf[i] = true;
                (libc::AT_FDCWD, name)
            } else if p.dirfd.is_some() {
                (place.dir(), place.leaf().clone())
            } else {
                (libc::AT_FDCWD, place.path())
            };
            if let Some(d) = p.dirfd {
                a6[d] = dirfd as i64 as u64;
            }
            dirs.push(dirfd);
            a6[p.ptr] = name.as_ptr() as u64;
            keep.push(name);
            held.push(place.into_dir());
            continue;
        }
        // The task's descriptor link to a file that lost its name (the
        // worker's orphaned copy, `… (deleted)`): only the link reaches
        // it, so the call is made through our descriptor of that file.
        let lost_name = paths[i].1 .1.as_ref().filter(|ab| {
            ab.ends_with(b" (deleted)")
                && std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(ab)).is_err()
        });
        let descriptor = paths[i]
            .1
             .0
            .as_ref()
            .and_then(|g| mpaudit_core::path::own_descriptor(g, c.task.pid));
        let follows = if is_open {
            follows_final(a.op, args, flags, 0)
        } else {
            leaf_followed(i, false)
        };
        if let (Some(judged), Some(n), true, true) = (lost_name, descriptor, follows, walked_at(i))
        {
            let fd = match beneath::task_descriptor(c.task.tid, n, judged) {
                Ok(fd) => fd,
                Err(_) => return Performed::NotEmulated,
            };
            let name = beneath::fd_path(fd.as_raw_fd());
            if let Some(d) = p.dirfd {
                a6[d] = libc::AT_FDCWD as i64 as u64;
            }
            dirs.push(libc::AT_FDCWD);
            a6[p.ptr] = name.as_ptr() as u64;
            keep.push(name);
            held.push(fd);
            through_task_fd[i] = true;
            continue;
        }
        let Some(cs) = cstring(u) else {
            return Performed::NotEmulated;
        };
        let dirfd = match (p.dirfd, relative) {
            (Some(d), true) => match ctx.dirfd(args[d] as i32) {
                Ok(fd) => fd,
                Err(e) => return Performed::Done(Answer::Fail(e)),
            },
            _ => libc::AT_FDCWD,
        };
        // Opens refuse magic links themselves (emulate::open).
        let text = symlink_text && i == 0;
        if !text
            && !is_open
            && walked_at(i)
            && routes[i].target.is_none()
            && !emulate::resolves_like_the_task(dirfd, &cs, may_follow_final(i))
        {
            return Performed::NotEmulated;
        }
        if let Some(d) = p.dirfd {
            a6[d] = dirfd as i64 as u64;
        }
        dirs.push(dirfd);
        a6[p.ptr] = cs.as_ptr() as u64;
        keep.push(cs);
    }
    if let Some((fd, _)) = link_fd {
        // The source is the task's file, linked as it is through the
        // supervisor's descriptor of it, or the worker's copy by its path.
        let flags = args[4] as i32 & !(libc::AT_EMPTY_PATH | libc::AT_SYMLINK_FOLLOW);
        a6[4] = flags as u64;
        if routes[0].target.is_none() {
            match ctx.dirfd(fd) {
                Ok(d) => a6[a.path.dirfd.unwrap_or(0)] = d as i64 as u64,
                Err(e) => return Performed::Done(Answer::Fail(e)),
            }
            a6[4] = (flags | libc::AT_EMPTY_PATH) as u64;
        } else if through_leaf[0] {
            // The worker's copy through its leaf's descriptor: followed.
            a6[4] = (flags | libc::AT_SYMLINK_FOLLOW) as u64;
        }
    }
    if is_open {
        let (flags, mode) = match (a.intent, how) {
            (Intent::Creat, _) => (
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                args[1] as u32,
            ),
            (Intent::OpenHow(_), Some([f, m, 0])) => (f as i32, m as u32),
            (Intent::OpenHow(_), _) => return Performed::NotEmulated,
            (Intent::Flags(i), _) => (flags, args[i + 1] as u32),
            _ => return Performed::NotEmulated,
        };
        if through_task_fd[0] {
            if flags & libc::O_PATH != 0 {
                // Only a handle on the task's own file: the kernel's to
                // give (no O_PATH descriptor passes through ADDFD).
                return Performed::NotEmulated;
            }
            // A reopen through the magic link of our descriptor (which
            // emulate::open refuses to follow).
            // SAFETY: a NUL-terminated path; the descriptor is owned below.
            let fd = unsafe { libc::open(keep[0].as_ptr(), flags | libc::O_CLOEXEC, mode) };
            if fd < 0 {
                return Performed::Done(Answer::Fail(emulate::errno()));
            }
            return Performed::Done(Answer::Fd {
                // SAFETY: a new descriptor we own.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                cloexec: flags & libc::O_CLOEXEC != 0,
            });
        }
        let cloexec = flags & libc::O_CLOEXEC != 0;
        return match emulate::open(dirs[0], &keep[0], flags, mode, routes[0].target.is_some()) {
            Ok(emulate::Opened::Now(fd)) => Performed::Done(Answer::Fd { fd, cloexec }),
            Ok(emulate::Opened::Waits { probe, flags }) => Performed::Done(Answer::Waits {
                tid: c.task.tid,
                probe,
                flags,
                cloexec,
            }),
            Err(Some(e)) => Performed::Done(Answer::Fail(e)),
            Err(None) if routes[0].target.is_some() => Performed::Refused(libc::EACCES),
            Err(None) => Performed::NotEmulated,
        };
    }
    // A structure the call reads (times): copied from the task.
    let mut copied = Vec::new();
    if let Some((i, size)) = memory {
        if args[i] != 0 {
            copied = vec![0u8; size];
            if read_mem(c.task.tid, args[i], &mut copied) != size {
                return Performed::Done(Answer::Fail(libc::EFAULT));
            }
            a6[i] = copied.as_ptr() as u64;
        }
    }
    // A name given as its leaf's descriptor link must be followed to the
    // leaf (a trailing slash made a no-follow change follow; the leaf is
    // no symlink): the call's own no-follow would act on the magic link
    // (review 6, finding 1).
    let mut nr = nr;
    if through_leaf[0] {
        let nofollow = libc::AT_SYMLINK_NOFOLLOW as u64;
        match a.op {
            "fchownat" => a6[4] &= !nofollow,
            "utimensat" | "fchmodat2" => a6[3] &= !nofollow,
            "lchown" => nr = libc::SYS_chown,
            _ => {}
        }
    }
    let r = emulate::syscall(nr, &a6);
    drop((keep, copied, held, ctx));
    Performed::Done(match r {
        Ok(v) => Answer::Value(v),
        Err(e) => Answer::Fail(e),
    })
}

/// A stat-family call of a path this worker redirected: performed on the
/// worker's copy, its result structure written back into the task.
#[allow(clippy::too_many_arguments)]
fn follow_stat(
    sup: &mut Supervision,
    c: &Caller,
    args: &[u64; 6],
    nr: i64,
    path: PathArg,
    out: Option<(usize, usize)>,
    lfd: RawFd,
    id: u64,
) -> Handled {
    let (given, abs) = resolve(c.task.tid, args, path);
    let nofollow = |flags: u64| flags as i32 & libc::AT_SYMLINK_NOFOLLOW != 0;
    let follows = match nr {
        libc::SYS_newfstatat => !nofollow(args[3]),
        libc::SYS_statx => !nofollow(args[2]),
        super::filter::FACCESSAT2 => !nofollow(args[3]),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_lstat => false,
        _ => true,
    };
    // The name in the view (a job path) of what the call reaches, and the
    // descriptor's path when it is the descriptor's own file.
    let (mut in_view, mut held) = (None, None);
    let target = match walk_in_view(sup, c, args, path, given.as_deref(), follows) {
        Some(Err(errno)) => return Handled::quiet(Answer::Fail(errno)),
        // The worker's copy, or where the walk went when the spelling
        // would reach another file.
        Some(Ok((abs, via_view))) => {
            in_view = Some(abs.clone());
            match c.worker.and_then(|w| {
                super::view::own_copy(&mut |p: &[u8]| sup.redirects.lookup(w, p), &abs)
            }) {
                Some(copy) => Some(copy),
                None => via_view.then_some(abs),
            }
        }
        None => {
            // The descriptor itself (an empty name): its directory's name,
            // as the job path a directory of the worker's stands for.
            if let (Some(w), Some(a), true) =
                (c.worker, &abs, matches!(given.as_deref(), None | Some(b"")))
            {
                held = Some(a.clone());
                in_view = Some(job_path_of(sup, w, a).unwrap_or_else(|| a.clone()));
            }
            if let (Some(w), Some(abs)) = (c.worker, &abs) {
                let spelling = given.as_deref().unwrap_or_default();
                if let Some(errno) =
                    read_blocked_in_view(sup, w, c.task.tid, args, path, spelling, abs)
                {
                    return Handled::quiet(Answer::Fail(errno));
                }
            }
            match (c.worker, abs) {
                (Some(w), Some(abs)) => {
                    super::view::own_copy(&mut |p: &[u8]| sup.redirects.lookup(w, p), &abs)
                }
                _ => None,
            }
        }
    };
    // A directory's link count in the view (the subdirectories the worker
    // made, moved or removed count): the call is answered here when the
    // kernel's count is not the view's.
    let nlink = match (c.worker, &in_view, out) {
        (Some(w), Some(dir), Some(_)) => {
            let reached = target.clone().or(held).unwrap_or_else(|| dir.clone());
            super::reads::view_nlink(sup, w, dir, &reached).map(|n| (n, reached))
        }
        _ => None,
    };
    let (mut target, nlink) = match (target, nlink) {
        (Some(t), n) => (t, n.map(|(n, _)| n)),
        (None, Some((n, reached))) => (reached, Some(n)),
        (None, None) => return Handled::quiet(Answer::Continue),
    };
    // An empty (or NULL) name is the descriptor itself (`fstat`'s
    // `AT_EMPTY_PATH`): a shared file whose name the worker removed is
    // still the descriptor's file (not ENOENT).
    if matches!(given.as_deref(), None | Some(b"")) && !emulate::exists(&target) {
        return Handled::quiet(Answer::Continue);
    }
    // `stat("a/")` of a file is ENOTDIR on the worker's copy too.
    if given.is_some_and(|g| g.ends_with(b"/")) {
        target.push(b'/');
    }
    if !still_valid(lfd, id) {
        return Handled::quiet(Answer::Continue);
    }
    let Some(cs) = cstring(&target) else {
        return Handled::quiet(Answer::Continue);
    };
    let mut a6 = *args;
    a6[path.ptr] = cs.as_ptr() as u64;
    let mut buf = Vec::new();
    if let Some((i, size)) = out {
        buf = vec![0u8; size];
        a6[i] = buf.as_mut_ptr() as u64;
    }
    let answer = match emulate::syscall(nr, &a6) {
        Ok(v) => match out {
            Some((i, size))
                if write_mem(c.task.tid, args[i], &with_nlink(nr, buf, nlink)) != size =>
            {
                Answer::Fail(libc::EFAULT)
            }
            _ => Answer::Value(v),
        },
        Err(e) => Answer::Fail(e),
    };
    Handled::quiet(answer)
}

/// The stat-family result `buf` of the call `nr` (a `struct statx` for
/// statx, else a `struct stat`) with a directory's link count `nlink`.
fn with_nlink(nr: i64, mut buf: Vec<u8>, nlink: Option<u64>) -> Vec<u8> {
    let Some(n) = nlink else {
        return buf;
    };
    let is_dir = |mode: u32| mode & libc::S_IFMT == libc::S_IFDIR;
    if nr == libc::SYS_statx {
        if buf.len() < std::mem::size_of::<libc::statx>() {
            return buf;
        }
        // SAFETY: buf holds a whole statx (read unaligned: a Vec<u8>).
        let mut st: libc::statx = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
        let wanted = libc::STATX_TYPE | libc::STATX_NLINK;
        if st.stx_mask & wanted == wanted && is_dir(st.stx_mode as u32) {
            st.stx_nlink = n as u32;
            // SAFETY: as above, written back in place.
            unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), st) };
        }
    } else {
        if buf.len() < std::mem::size_of::<libc::stat>() {
            return buf;
        }
        // SAFETY: buf holds a whole struct stat (read unaligned).
        let mut st: libc::stat = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
        if is_dir(st.st_mode) {
            st.st_nlink = n as _;
            // SAFETY: as above, written back in place.
            unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), st) };
        }
    }
    buf
}

/// Writes `buf` at `addr` in task `tid`'s memory; the bytes written.
pub(super) fn write_mem(tid: i32, addr: u64, buf: &[u8]) -> usize {
    let local = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local buffer is ours and valid for its length; the remote
    // address is only written by the kernel, which checks it.
    let n = unsafe { libc::process_vm_writev(tid, &local, 1, &remote, 1, 0) };
    n.max(0) as usize
}

/// An `exec` event for a call the filter stopped (the exec is audited:
/// the filter stays on across it). A set-user-ID program, or one with file
/// capabilities, runs without them under `PR_SET_NO_NEW_PRIVS`: its run is
/// not the bare run, so it is listed as not fully audited (review 2, H2).
fn exec(
    c: &Caller,
    args: &[u64; 6],
    path: PathArg,
    argv_arg: usize,
    pointer: usize,
) -> Map<String, Value> {
    let tid = c.task.tid;
    let (given, abs) = resolve(tid, args, path);
    let dropped = abs
        .as_ref()
        .is_some_and(|a| emulate::gains_privileges(a, &c.task));
    let exe = abs.or(given).unwrap_or_default();
    let mut argv = Vec::new();
    let mut at = args[argv_arg];
    while at != 0 && argv.len() < 4096 {
        let mut b = [0u8; 8];
        if read_mem(tid, at, &mut b[..pointer]) != pointer {
            break;
        }
        let Some(s) = read_cstr(tid, u64::from_le_bytes(b)) else {
            break;
        };
        argv.push(s);
        at += pointer as u64;
    }
    exec_event(c, &exe, &argv, dropped.then_some("no_new_privs"))
}

fn exec_event(
    c: &Caller,
    exe: &[u8],
    argv: &[Vec<u8>],
    unaudited: Option<&str>,
) -> Map<String, Value> {
    let cwd = base_dir(c.task.tid, None).unwrap_or_default();
    let mut e = common(c, "process", "exec");
    let argv: Vec<String> = argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    e.insert("argv".into(), json!(argv));
    e.insert("exe".into(), json!(String::from_utf8_lossy(exe)));
    e.insert("cwd".into(), json!(String::from_utf8_lossy(&cwd)));
    e.insert("result".into(), Value::Null);
    e.insert("errno".into(), Value::Null);
    e.insert("audited".into(), json!(unaudited.is_none()));
    if let Some(r) = unaudited {
        e.insert("reason".into(), json!(r));
    }
    e.insert("via".into(), json!("seccomp"));
    e
}

/// The program's argv from /proc (for events about a running process).
fn cmdline(tid: i32) -> Vec<Vec<u8>> {
    std::fs::read(format!("/proc/{tid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn common(c: &Caller, kind: &str, op: &str) -> Map<String, Value> {
    let mut e = Map::new();
    e.insert("v".into(), json!(mpaudit_core::event::SCHEMA_VERSION));
    e.insert("ts".into(), json!(now_ns()));
    e.insert("kind".into(), json!(kind));
    e.insert("op".into(), json!(op));
    e.insert("pid".into(), json!(c.task.pid));
    e.insert("ppid".into(), json!(c.task.ppid));
    e.insert("tid".into(), json!(c.task.tid));
    e.insert("worker".into(), json!(c.worker));
    if let Some((rank, node)) = c.rank {
        e.insert("rank".into(), json!(rank));
        e.insert("node".into(), json!(node));
    }
    e
}

/// `key` as lossy UTF-8 and, when not UTF-8, `key_hex` with the bytes.
fn put_path(e: &mut Map<String, Value>, key: &str, v: Option<&[u8]>) {
    match v {
        None => {
            e.insert(key.into(), Value::Null);
        }
        Some(b) => {
            e.insert(key.into(), json!(String::from_utf8_lossy(b)));
            if std::str::from_utf8(b).is_err() {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                e.insert(format!("{key}_hex"), json!(hex));
            }
        }
    }
}

fn line(e: Map<String, Value>) -> Vec<u8> {
    let mut v = serde_json::to_vec(&Value::Object(e)).unwrap_or_default();
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_paths_get_their_hex() {
        let mut e = Map::new();
        put_path(&mut e, "abs", Some(b"/j/o\xff"));
        put_path(&mut e, "path", Some(b"o"));
        put_path(&mut e, "path2", None);
        assert_eq!(e["abs_hex"], "2f6a2f6fff");
        assert_eq!(e["abs"], "/j/o\u{fffd}");
        assert!(!e.contains_key("path_hex"));
        assert_eq!(e["path2"], Value::Null);
    }

    #[test]
    fn strings_are_read_across_pages_from_our_own_memory() {
        let me = std::process::id() as i32;
        // A string that straddles a page boundary.
        let mut buf = vec![b'x'; 3 * 4096];
        let base = buf.as_ptr() as u64;
        let start = (4096 - base % 4096) as usize + 4000;
        buf[start + 200] = 0;
        let got = read_cstr(me, base + start as u64).unwrap();
        assert_eq!(got.len(), 200);
        assert_eq!(read_cstr(me, 0), None);
        assert_eq!(read_cstr(me, 8), None);
    }
}
