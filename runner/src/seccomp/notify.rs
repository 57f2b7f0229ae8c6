//! The notification loop: one thread polls every listener, and for each
//! stopped system call reads its paths, judges it and answers.
//!
//! What `SECCOMP_USER_NOTIF_FLAG_CONTINUE` cannot guarantee (see
//! seccomp_unotify(2)): the kernel reads the path again when the call goes
//! on, so another thread of the program (or a process sharing its memory)
//! can change the bytes between our read and the kernel's. The event then
//! names the path we read, and in deny mode a call that was judged allowed
//! can still reach a different path. This is an audit of cooperative
//! programs, not a sandbox. `SECCOMP_IOCTL_NOTIF_ID_VALID` after reading
//! ensures that the memory we read belonged to the stopped call's process.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use mpaudit_core::flags::put_flag_names;
use mpaudit_core::glob::GlobList;
use mpaudit_core::path::{absolutize, MAX_ABS};
use mpaudit_core::policy::{Action, ActionSetting, Policy, Verdict};
use serde_json::{json, Map, Value};

use super::calls::{intent_of, Call, Intent, PathArg, Writes};
use super::Stats;
use crate::plan::Plan;

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (linux/seccomp.h, Linux 6.6).
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// A child the runner is starting: the socket its listener will come on.
pub struct NewChild {
    pub socket: OwnedFd,
    pub worker: Option<u32>,
}

/// One filter's listener: every process of one started worker's tree.
struct Listener {
    fd: OwnedFd,
    worker: Option<u32>,
    log: Option<File>,
    /// Processes already logged as not fully audited (io_uring).
    io_uring_noted: BTreeSet<i32>,
}

/// What a notification is judged with: the plan's policy, as the library
/// gets it through `MPAUDIT_*`.
pub struct Judge {
    outputs: String,
    components: String,
    allow: String,
    action: ActionSetting,
    job_dir: String,
    workers_dir: String,
    /// This runner's workers' directories are `<run_workers_dir>/worker_<k>`
    /// (`Plan::worker_dir`).
    run_workers_dir: PathBuf,
    tmpdir: String,
    log_dir: PathBuf,
    /// Under a launcher: this runner's rank and the node name, written in
    /// every event and in log names, as the library does.
    rank: Option<(u32, String)>,
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
    pub fn new(plan: &Plan, _program: &Path) -> Judge {
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

pub fn run(judge: Judge, rx: mpsc::Receiver<NewChild>, wake: OwnedFd) -> Stats {
    let mut stats = Stats::default();
    let mut pending: Vec<NewChild> = Vec::new();
    let mut listeners: Vec<Listener> = Vec::new();
    let mut open = true;
    loop {
        loop {
            match rx.try_recv() {
                Ok(c) => pending.push(c),
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
        fds.extend(pending.iter().map(|c| pollfd(c.socket.as_raw_fd())));
        fds.extend(listeners.iter().map(|l| pollfd(l.fd.as_raw_fd())));
        // The runner stops us only when the job's processes are gone; a
        // listener still open then belongs to nothing that can call: a
        // short timeout lets the loop end.
        let timeout = if open { -1 } else { 100 };
        // SAFETY: a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue; // EINTR
        }
        if n == 0 && !open {
            break;
        }
        if fds[0].revents != 0 {
            let mut v = 0u64;
            // SAFETY: an 8-byte read from our eventfd.
            unsafe { libc::read(wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        }
        let np = pending.len();
        // Listeners first (indices shift when pending ones are resolved).
        let mut gone = Vec::new();
        for (i, l) in listeners.iter_mut().enumerate() {
            let re = fds[1 + np + i].revents;
            let received = re & libc::POLLIN != 0 && handle(&judge, l, &mut stats);
            if received {
                stats.notifications += 1;
            } else if re & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                // No task uses the filter any more.
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            listeners.remove(i);
        }
        let mut resolved = Vec::new();
        for (i, c) in pending.iter().enumerate() {
            let re = fds[1 + i].revents;
            if re & libc::POLLIN != 0 {
                if let Some(fd) = recv_fd(c.socket.as_raw_fd()) {
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
                    listeners.push(Listener {
                        fd,
                        worker: c.worker,
                        log: None,
                        io_uring_noted: BTreeSet::new(),
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
    }
    stats
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
struct Caller<'j> {
    tid: i32,
    pid: i32,
    ppid: i32,
    worker: Option<u32>,
    rank: Option<&'j (u32, String)>,
}

/// What to answer a stopped call.
enum Answer {
    Continue,
    Fail(i32),
}

/// Receives and answers one notification; false when there was none to
/// receive.
fn handle(judge: &Judge, l: &mut Listener, stats: &mut Stats) -> bool {
    // SAFETY: seccomp_notif is plain data; RECV requires it zeroed.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV fills the struct it is given.
    if unsafe { libc::ioctl(l.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
        return false; // ENOENT: the caller was interrupted or died meanwhile.
    }
    let tid = req.pid as i32;
    let (pid, ppid) = task_ids(tid);
    let c = Caller {
        tid,
        pid,
        ppid,
        worker: l.worker,
        rank: judge.rank.as_ref(),
    };
    let args = req.data.args;
    let (answer, line) = match Call::of(req.data.nr as i64) {
        Some(Call::Access {
            op,
            path,
            path2,
            intent,
            writes,
        }) => access(judge, &c, &args, op, path, path2, intent, writes),
        Some(Call::Exec { path, argv }) => (Answer::Continue, Some(exec(&c, &args, path, argv))),
        Some(Call::IoUringSetup) => {
            let line = l.io_uring_noted.insert(pid).then(|| {
                let exe = std::fs::read_link(format!("/proc/{tid}/exe"))
                    .map(|p| p.as_os_str().as_bytes().to_vec())
                    .unwrap_or_default();
                exec_event(&c, &exe, &cmdline(tid), Some("io_uring"))
            });
            (Answer::Continue, line)
        }
        None => (Answer::Continue, None),
    };
    // The paths we read belong to the stopped call only if it still waits.
    // SAFETY: ID_VALID reads the u64 id it is given.
    let valid = unsafe {
        libc::ioctl(
            l.fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &req.id,
        )
    } == 0;
    if !valid {
        return true;
    }
    if let Some(line) = line {
        match write_event(judge, l, pid, &line) {
            Ok(()) => stats.events += 1,
            Err(_) => stats.lost_events += 1,
        }
    }
    let resp = match answer {
        Answer::Continue => libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        },
        Answer::Fail(errno) => libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: -errno,
            flags: 0,
        },
    };
    // SAFETY: SEND reads the response it is given. ENOENT: the caller was
    // interrupted meanwhile; the kernel restarts or fails the call itself.
    unsafe { libc::ioctl(l.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    true
}

/// Appends one event line to the listener's log, created on first use as
/// `mpaudit-<pid>-<ns>.jsonl` (the name the report looks for).
fn write_event(judge: &Judge, l: &mut Listener, pid: i32, line: &[u8]) -> std::io::Result<()> {
    if l.log.is_none() {
        let launcher = match &judge.rank {
            Some((rank, node)) => {
                let mut name = String::new();
                mpaudit_core::launcher::put_node_file_name(node.as_bytes(), |b| {
                    name.push(b as char)
                });
                let node = name;
                format!("{node}-r{rank}-")
            }
            None => String::new(),
        };
        let name = format!("mpaudit-{launcher}{pid}-{}.jsonl", now_ns());
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(judge.log_dir.join(name))?;
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

/// The thread group id and parent of task `tid`, from /proc.
fn task_ids(tid: i32) -> (i32, i32) {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    (field("Tgid:").unwrap_or(tid), field("PPid:").unwrap_or(0))
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
fn base_dir(tid: i32, dirfd: Option<i32>) -> Option<Vec<u8>> {
    let link = match dirfd {
        None | Some(libc::AT_FDCWD) => format!("/proc/{tid}/cwd"),
        Some(fd) => format!("/proc/{tid}/fd/{fd}"),
    };
    std::fs::read_link(link)
        .ok()
        .map(|p| p.as_os_str().as_bytes().to_vec())
}

/// A path argument read and made absolute: (as given, absolute).
fn resolve(tid: i32, args: &[u64; 6], p: PathArg) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
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
    (given, abs)
}

#[allow(clippy::too_many_arguments)]
fn access(
    judge: &Judge,
    c: &Caller,
    args: &[u64; 6],
    op: &'static str,
    path: PathArg,
    path2: Option<PathArg>,
    intent: Intent,
    writes: Writes,
) -> (Answer, Option<Vec<u8>>) {
    let tid = c.tid;
    let flags = match intent {
        Intent::Flags(i) => Some(args[i] as i32),
        Intent::OpenHow(i) => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let mut b = [0u8; 8];
            (read_mem(tid, args[i], &mut b) == 8).then(|| u64::from_le_bytes(b) as i32)
        }
        _ => None,
    };
    let (intent, flags) = intent_of(intent, flags);
    if !intent.is_write() {
        // openat2 for reading: notified only because its flags are not in
        // the registers.
        return (Answer::Continue, None);
    }
    let p1 = resolve(tid, args, path);
    let p2 = path2.map(|p| resolve(tid, args, p));
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
    let judge_one = |abs: &Option<Vec<u8>>| match abs {
        Some(a) if policy.is_scratch(a, judge.tmpdir.as_bytes()) => Verdict::Allowed,
        Some(a) => policy.verdict(true, a, false, registered),
        None => Verdict::Allowed,
    };
    let rank = |v: Verdict| match v {
        Verdict::Rogue => 4,
        Verdict::Registered => 3,
        Verdict::Declared => 2,
        Verdict::Allowed => 1,
        Verdict::Read => 0,
    };
    let mut verdict = Verdict::Allowed;
    if writes != Writes::Second {
        verdict = judge_one(&p1.1);
    }
    if let (Some(p2), true) = (&p2, writes != Writes::First) {
        let v = judge_one(&p2.1);
        if rank(v) > rank(verdict) {
            verdict = v;
        }
    }
    let action = match policy.action_for(verdict, c.worker.is_some()) {
        // Redirect needs SECCOMP_IOCTL_NOTIF_ADDFD, not done yet: the
        // shared file is protected by failing the call instead, shown as a
        // failed redirect (docs/limitations.md).
        Action::Redirected => Action::RedirectFailed,
        a => a,
    };
    let (answer, result, errno) = match action {
        Action::Denied | Action::RedirectFailed => {
            (Answer::Fail(libc::EACCES), json!(-1), json!("EACCES"))
        }
        // The call goes on: its result is the kernel's, unknown here.
        _ => (Answer::Continue, Value::Null, Value::Null),
    };
    let mut e = common(c, "access", op);
    put_path(&mut e, "path", p1.0.as_deref());
    put_path(&mut e, "abs", p1.1.as_deref());
    if let Some((g, a)) = &p2 {
        put_path(&mut e, "path2", g.as_deref());
        put_path(&mut e, "abs2", a.as_deref());
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
    e.insert("result".into(), result);
    e.insert("errno".into(), errno);
    // The only frame the supervisor knows is the program itself.
    let frame = json!({"object": String::from_utf8_lossy(&exe), "vaddr": null});
    e.insert("component".into(), frame.clone());
    e.insert("stack".into(), json!([frame]));
    e.insert("verdict".into(), json!(verdict.as_str()));
    e.insert("action".into(), json!(action.as_str()));
    e.insert("via".into(), json!("seccomp"));
    (answer, Some(line(e)))
}

/// An `exec` event for a call the filter stopped (the exec is audited:
/// the filter stays on across it).
fn exec(c: &Caller, args: &[u64; 6], path: PathArg, argv_arg: usize) -> Vec<u8> {
    let tid = c.tid;
    let (given, abs) = resolve(tid, args, path);
    let exe = abs.or(given).unwrap_or_default();
    let mut argv = Vec::new();
    let mut at = args[argv_arg];
    while at != 0 && argv.len() < 4096 {
        let mut b = [0u8; 8];
        if read_mem(tid, at, &mut b) != 8 {
            break;
        }
        let Some(s) = read_cstr(tid, u64::from_le_bytes(b)) else {
            break;
        };
        argv.push(s);
        at += 8;
    }
    exec_event(c, &exe, &argv, None)
}

fn exec_event(c: &Caller, exe: &[u8], argv: &[Vec<u8>], unaudited: Option<&str>) -> Vec<u8> {
    let cwd = base_dir(c.tid, None).unwrap_or_default();
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
    line(e)
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
    e.insert("pid".into(), json!(c.pid));
    e.insert("ppid".into(), json!(c.ppid));
    e.insert("tid".into(), json!(c.tid));
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
