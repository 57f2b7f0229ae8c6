//! The seccomp supervisor: audits the processes the preload library cannot
//! see (static executables, Go programs, and any the job names), without
//! root, through seccomp user notification.
//!
//! Each such process the runner starts gets, between fork and exec, a BPF
//! filter ([`filter`]) that sends its file-changing system calls to a
//! listener descriptor, which the child passes back to the runner over a
//! socket pair before it execs. One thread ([`notify`]) receives the
//! notifications of every listener, reads the paths from the process's
//! memory, judges them with the library's policy (mpaudit-core), logs the
//! same events as the library (with `"via": "seccomp"`) and lets the call
//! answer: the call performed by the supervisor itself (log, or the
//! worker's copy under redirect, the descriptor handed over with ADDFD) or
//! `EACCES` (deny). The filter is inherited by the process's children and
//! survives their execs. Static and Go programs exec'd by preloaded
//! processes get the filter from the library, which hands the listener to
//! the supervisor's socket ([`handoff`]). See docs/hooks.md.

mod beneath;
mod calls;
pub mod detect;
mod emulate;
mod failing;
pub mod filter;
mod handoff;
mod holders;
mod linkfd;
mod notify;
mod reads;
mod redirects;
mod trampoline;
mod view;
mod waiting;

pub use handoff::SOCKET_VAR;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::plan::Plan;

pub use detect::Unseen;

/// What the supervisor reports at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Notifications received (each one a stopped system call).
    pub notifications: u64,
    /// Events logged.
    pub events: u64,
    /// Events that could not be written to the log.
    pub lost_events: u64,
}

/// Why the job's program is supervised: what the preload would miss, or
/// the job asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Unseen(Unseen),
    Asked,
}

impl Why {
    /// `static program`, `go program`, `uses io_uring`, `asked for`.
    pub fn describe(self) -> &'static str {
        match self {
            Why::Unseen(Unseen::Static) => "static program",
            Why::Unseen(Unseen::Go) => "Go program",
            Why::Unseen(Unseen::IoUring) => "links liburing",
            Why::Asked => "supervise = true",
        }
    }
}

/// Decides whether `program` runs under the supervisor.
pub fn why(plan: &Plan, program: &Path) -> Option<Why> {
    detect::unseen(program)
        .map(Why::Unseen)
        .or(plan.supervise.always.then_some(Why::Asked))
}

/// The running supervisor: its thread and the way to hand it new children.
pub struct Supervisor {
    filter: Vec<libc::sock_filter>,
    /// Why the job's own program runs under it ([`Why::describe`]);
    /// `None`: only for programs exec'd by preloaded processes.
    why: Option<&'static str>,
    quiet: bool,
    tx: mpsc::Sender<notify::NewChild>,
    wake: OwnedFd,
    thread: Option<JoinHandle<Stats>>,
    server: Option<handoff::Server>,
}

/// One child being armed: the runner's copy of the child's end of the
/// socket pair, closed once the child is started (or failed to start), so
/// that the supervisor sees the socket hang up if no listener ever comes.
pub struct Armed {
    _child_end: OwnedFd,
}

impl Supervisor {
    /// Starts the supervisor thread: for `program` itself if it needs it,
    /// and in any case for the static and Go programs the job's preloaded
    /// processes exec (their listeners come through the socket).
    pub fn start(plan: &Plan, program: &Path) -> Result<Supervisor, String> {
        let why = why(plan, program).map(Why::describe);
        if why.is_some() && plan.supervise.io_uring_allowed && !plan.quiet {
            eprintln!(
                "mpaudit: io_uring = \"allow\": file operations submitted through io_uring by {} are not audited",
                program.display()
            );
        }
        let filter = filter::program(filter::Options {
            io_uring_allowed: plan.supervise.io_uring_allowed,
            read_your_writes: plan.policy.action == crate::jobfile::Action::Redirect,
        });
        // SAFETY: eventfd with constant flags.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(efd) };
        let wake_thread = wake.try_clone().map_err(|e| format!("eventfd: {e}"))?;
        // Without a socket, exec'd static programs stay unaudited (listed
        // so by the library): worth a warning, not a failed run.
        let server = match handoff::Server::start() {
            Ok(s) => Some(s),
            Err(e) => {
                if !plan.quiet {
                    eprintln!("mpaudit: warning: no supervisor socket ({e}): static and Go programs exec'd by the job are not audited");
                }
                None
            }
        };
        let server_fd = match &server {
            Some(s) => Some(s.fd.try_clone().map_err(|e| format!("socket: {e}"))?),
            None => None,
        };
        let (tx, rx) = mpsc::channel();
        let sup = notify::Supervision::new(notify::Judge::new(plan), &filter);
        let thread = std::thread::Builder::new()
            .name("mpaudit-seccomp".into())
            .spawn(move || notify::run(sup, rx, wake_thread, server_fd))
            .map_err(|e| format!("cannot start the seccomp supervisor: {e}"))?;
        Ok(Supervisor {
            filter,
            why,
            quiet: plan.quiet,
            tx,
            wake,
            thread: Some(thread),
            server,
        })
    }

    /// Whether the job's own program runs under the filter.
    pub fn for_the_program(&self) -> bool {
        self.why.is_some()
    }

    /// The environment every job process gets: where to hand listeners,
    /// and the spawn trampoline (this executable) for the static and Go
    /// programs the job's processes posix_spawn.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let Some(server) = &self.server else {
            return Vec::new();
        };
        let mut env = vec![(SOCKET_VAR, server.path.display().to_string())];
        match std::env::current_exe() {
            Ok(me) => env.push((
                mpaudit_core::handoff::TRAMPOLINE_VAR,
                me.display().to_string(),
            )),
            Err(e) if !self.quiet => eprintln!(
                "mpaudit: warning: cannot name the spawn trampoline ({e}): static and Go programs posix_spawn'd by the job are not audited"
            ),
            Err(_) => {}
        }
        env
    }

    /// Prepares `cmd` (worker `worker`) to run under the filter: the child
    /// installs it just before exec and sends its listener to the
    /// supervisor. The child does not get `LD_PRELOAD` with the library:
    /// the supervisor is its one auditor (a dynamic Go program would
    /// otherwise have its libc calls logged twice), and the filter covers
    /// everything it runs.
    pub fn arm(&self, cmd: &mut Command, worker: Option<usize>) -> Result<Armed, String> {
        let mut fds = [0; 2];
        // SAFETY: a valid out-array of two ints.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(format!("socketpair: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: two new descriptors we own.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        self.tx
            .send(notify::NewChild {
                socket: ours,
                worker: worker.map(|k| k as u32),
                hello: false,
            })
            .map_err(|_| "the seccomp supervisor has stopped".to_string())?;
        self.wake_up();
        match std::env::var_os("LD_PRELOAD") {
            Some(v) if !v.is_empty() => cmd.env("LD_PRELOAD", v),
            _ => cmd.env_remove("LD_PRELOAD"),
        };
        let prog = self.filter.clone();
        let sock = theirs.as_raw_fd();
        // SAFETY: the closure makes only async-signal-safe system calls and
        // does not allocate (the program was copied before the fork).
        unsafe {
            cmd.pre_exec(move || install_in_child(&prog, sock));
        }
        Ok(Armed { _child_end: theirs })
    }

    fn wake_up(&self) {
        let one = 1u64;
        // SAFETY: an 8-byte write to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Stops the supervisor once the job's processes are gone, says what
    /// it saw (so a run shows it was supervised), and warns about events it
    /// could not log.
    pub fn finish(mut self) -> Stats {
        drop(std::mem::replace(&mut self.tx, mpsc::channel().0));
        self.wake_up();
        drop(self.server.take());
        let stats = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        if !self.quiet && (self.why.is_some() || stats.notifications > 0) {
            eprintln!(
                "mpaudit: seccomp supervisor ({}): {} call(s) stopped, {} event(s) logged",
                self.why.unwrap_or("programs exec'd by the job"),
                stats.notifications,
                stats.events
            );
        }
        if stats.lost_events > 0 {
            eprintln!(
                "mpaudit: warning: the seccomp supervisor could not log {} event(s): the report is incomplete",
                stats.lost_events
            );
        }
        stats
    }
}

/// In the child, after fork: no new privileges (required to install a
/// filter without CAP_SYS_ADMIN), the filter with a new listener, the
/// listener sent over `sock`, then closed here.
fn install_in_child(prog: &[libc::sock_filter], sock: RawFd) -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(err());
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // Linux ≥ 5.19: once the supervisor has received a call, only a fatal
    // signal interrupts the wait, so a call it performs is never restarted
    // and performed twice (an O_EXCL create would then fail).
    let install = |flags: libc::c_ulong| {
        // SAFETY: a valid sock_fprog that outlives the call.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        }
    };
    let mut listener = install(
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    ) as RawFd;
    if listener < 0 {
        listener = install(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER) as RawFd;
    }
    if listener < 0 {
        return Err(err());
    }
    let sent = mpaudit_core::handoff::send_fd(sock, listener);
    // SAFETY: our own descriptor; the program must not inherit it.
    unsafe { libc::close(listener) };
    sent.map_err(std::io::Error::from_raw_os_error)
}
