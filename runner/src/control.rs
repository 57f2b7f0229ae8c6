//! The one owner of the command's signals and of the job's processes, from
//! the first worker to the last merge (nextest's habit: one owner of the run
//! state and the signals).
//!
//! [`Control::take`] runs in the main thread before any other thread
//! exists: it blocks the signals the runner handles (every later thread
//! inherits the block, so only the signal thread sees them), remembers the
//! mask it found, starts the signal thread and the watchdog. Every process
//! the runner starts goes through [`Control::prepare`] and
//! [`Control::adopt`]: its own process group, the mask mpaudit was started
//! with, SIGKILL when the runner dies, the run's marker in its environment,
//! and the watchdog told its group. Ctrl-Z is forwarded: the job's groups
//! get SIGTSTP, then the runner stops itself; on SIGCONT they get SIGCONT.
//! Dropping the `Control` stops the signal thread, tells the watchdog the
//! run ended cleanly and restores the mask.
//!
//! The watchdog (`mpaudit __watchdog RUN_ID`, not a child of the runner)
//! reads a pipe whose only writer is the runner: at EOF without the
//! runner's "end" line (the runner was killed, even with `kill -9`), it
//! kills what is left of the job: the process groups it was told about,
//! every process whose environment holds `MPAUDIT_RUN_ID=<this run>` (the
//! library restores it across `exec`), and their descendants.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::os::unix::thread::JoinHandleExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::procs;

/// The per-run marker every process of the job inherits.
pub const RUN_ID_VAR: &str = "MPAUDIT_RUN_ID";
/// argv[1] of the watchdog process.
pub const WATCHDOG_ARG: &str = "__watchdog";

/// What the runner handles itself, in the signal thread.
const HANDLED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGCHLD,
    libc::SIGTSTP,
    libc::SIGCONT,
];
const POLL: Duration = Duration::from_millis(50);

/// Signals that ask the runner to stop the job.
pub fn is_interrupt(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP | Signal::SIGQUIT
    )
}

pub struct Control {
    rx: Receiver<Signal>,
    stop_thread: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The mask mpaudit was started with: restored here on drop, and in
    /// every child before exec.
    original_mask: libc::sigset_t,
    watchdog: RefCell<Option<File>>,
    run_id: String,
    me: i32,
    /// Process groups of the job still led by a live process.
    groups: RefCell<BTreeSet<i32>>,
    /// The first request to stop (INT, TERM, HUP, QUIT), in any phase.
    interrupted: Cell<Option<Signal>>,
    /// Time spent stopped by Ctrl-Z (timeouts do not count it).
    paused: Cell<Duration>,
    /// `mpaudit exec` with one process: the controlling terminal's
    /// descriptor and that process's group, which holds the terminal as
    /// its foreground group whenever mpaudit would.
    terminal: Cell<Option<(libc::c_int, i32)>>,
    /// What the job's processes get back before exec: the file-size limit
    /// and SIGXFSZ disposition mpaudit was started with (see
    /// [`RunnerLimits`]).
    job_limits: RunnerLimits,
}

/// The runner's own files (the supervisor's event logs, reports, merged
/// outputs) are the audit's, not the job's: a small RLIMIT_FSIZE given to
/// the job by its batch system must not kill the runner with SIGXFSZ
/// mid-run (and the job with it). The runner lifts its soft limit to the
/// hard one and ignores SIGXFSZ (past the hard limit a write then fails
/// with EFBIG, which is reported); every process of the job gets the
/// original limit and disposition back before it runs.
#[derive(Clone, Copy)]
struct RunnerLimits {
    file_size: libc::rlimit,
    xfsz_ignored: bool,
}

impl RunnerLimits {
    fn lift() -> RunnerLimits {
        let mut file_size = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: a valid rlimit to fill, then to set (raising the soft limit
        // up to the hard one needs no privilege).
        unsafe {
            if libc::getrlimit(libc::RLIMIT_FSIZE, &mut file_size) == 0
                && file_size.rlim_cur != file_size.rlim_max
            {
                let lifted = libc::rlimit {
                    rlim_cur: file_size.rlim_max,
                    rlim_max: file_size.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &lifted);
            }
        }
        // SAFETY: SIG_IGN is a valid disposition for SIGXFSZ; the previous
        // one is only compared, never called.
        let previous = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        RunnerLimits {
            file_size,
            xfsz_ignored: previous == libc::SIG_IGN,
        }
    }

    /// Puts the original limit and disposition back. Async-signal-safe
    /// (between fork and exec; an ignored signal stays ignored across exec).
    fn restore(&self) {
        // SAFETY: plain system calls on this process: lowering the soft
        // limit back is always allowed.
        unsafe {
            libc::setrlimit(libc::RLIMIT_FSIZE, &self.file_size);
            if !self.xfsz_ignored {
                libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            }
        }
    }
}

impl Control {
    /// Takes the signals and starts the watchdog. Call it from the main
    /// thread before any other thread is started.
    pub fn take() -> Result<Control, String> {
        let mut set = empty_set();
        for s in HANDLED {
            // SAFETY: a valid, initialised set and a valid signal number.
            unsafe { libc::sigaddset(&mut set, s) };
        }
        let mut original_mask = empty_set();
        // SAFETY: valid set pointers.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut original_mask) };
        if rc != 0 {
            return Err(format!(
                "cannot block signals: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        let (tx, rx) = mpsc::channel();
        let stop_thread = Arc::new(AtomicBool::new(false));
        let stop = stop_thread.clone();
        let thread = std::thread::Builder::new()
            .name("mpaudit-signals".into())
            .spawn(move || {
                // Bounded waits, so that the owner can stop this thread and
                // restore the mask with nothing left waiting for signals.
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: POLL.as_nanos() as libc::c_long,
                };
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: a valid set and timespec; no siginfo wanted.
                    let s = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
                    if s > 0 {
                        if let Ok(sig) = Signal::try_from(s) {
                            if tx.send(sig).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: valid set pointer.
                unsafe {
                    libc::pthread_sigmask(libc::SIG_SETMASK, &original_mask, std::ptr::null_mut())
                };
                return Err(format!("cannot start the signal thread: {e}"));
            }
        };
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let run_id = format!("{}-{ns}", std::process::id());
        let watchdog = match start_watchdog(&run_id) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("mpaudit: warning: no watchdog ({e}): if mpaudit is killed with SIGKILL, workers' descendants may survive it");
                None
            }
        };
        Ok(Control {
            rx,
            stop_thread,
            thread: Some(thread),
            original_mask,
            watchdog: RefCell::new(watchdog),
            run_id,
            me: std::process::id() as i32,
            groups: RefCell::new(BTreeSet::new()),
            interrupted: Cell::new(None),
            paused: Cell::new(Duration::ZERO),
            terminal: Cell::new(None),
            job_limits: RunnerLimits::lift(),
        })
    }

    /// The first stop request received, if any.
    pub fn interrupted(&self) -> Option<Signal> {
        self.interrupted.get()
    }

    /// Total time the job spent stopped by Ctrl-Z.
    pub fn paused(&self) -> Duration {
        self.paused.get()
    }

    /// Sets up `cmd` as a process of the job: the run's marker, its own
    /// process group, the mask mpaudit was started with, SIGKILL if the
    /// runner dies (the runner's own thread spawns it, and that thread
    /// lives as long as the runner).
    pub fn prepare(&self, cmd: &mut Command) {
        cmd.env(RUN_ID_VAR, &self.run_id);
        let mask = self.original_mask;
        let parent = self.me;
        let limits = self.job_limits;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                limits.restore();
                libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                // The runner died before the death signal was armed.
                if libc::getppid() != parent {
                    libc::_exit(137);
                }
                Ok(())
            });
        }
    }

    /// Also hands the controlling terminal `fd` to `cmd`'s process group
    /// before it runs, when mpaudit's group holds it: the program reads the
    /// terminal and gets Ctrl-C and Ctrl-Z from it exactly as it would run
    /// bare (a shell does the same for a job). Call after
    /// [`prepare`](Self::prepare), then [`adopt_terminal`](Self::adopt_terminal).
    pub fn prepare_terminal(&self, cmd: &mut Command, fd: libc::c_int) {
        // SAFETY: getpgrp has no preconditions.
        let ours = unsafe { libc::getpgrp() };
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::tcgetpgrp(fd) == ours {
                    with_ttou_blocked(|| libc::tcsetpgrp(fd, libc::getpid()));
                }
                Ok(())
            });
        }
        self.terminal.set(Some((fd, 0)));
    }

    /// `pid` is the process [`prepare_terminal`](Self::prepare_terminal) set up.
    pub fn adopt_terminal(&self, pid: i32) {
        if let Some((fd, _)) = self.terminal.get() {
            self.terminal.set(Some((fd, pid)));
        }
    }

    pub fn holds_terminal(&self, pid: i32) -> bool {
        self.terminal.get().is_some_and(|(_, p)| p == pid)
    }

    /// The terminal back to mpaudit's group, if the job's holds it.
    fn take_terminal(&self) {
        if let Some((fd, pg)) = self.terminal.get() {
            // SAFETY: plain terminal calls on a descriptor we hold.
            unsafe {
                if libc::tcgetpgrp(fd) == pg {
                    with_ttou_blocked(|| libc::tcsetpgrp(fd, libc::getpgrp()));
                }
            }
        }
    }

    /// The terminal to the job's group, if mpaudit's holds it (it was
    /// continued in the foreground, not with `bg`).
    fn give_terminal(&self) {
        if let Some((fd, pg)) = self.terminal.get().filter(|t| t.1 > 0) {
            // SAFETY: plain terminal calls on a descriptor we hold.
            unsafe {
                if libc::tcgetpgrp(fd) == libc::getpgrp() {
                    with_ttou_blocked(|| libc::tcsetpgrp(fd, pg));
                }
            }
        }
    }

    /// Ctrl-Z: the job stopped, the terminal back to mpaudit's group, and
    /// mpaudit stopped; when the shell continues it, the terminal (if it is
    /// in the foreground) and SIGCONT to the job.
    pub fn suspend(&self) {
        self.signal_job(Signal::SIGTSTP);
        self.take_terminal();
        let t = Instant::now();
        // SIGSTOP cannot be blocked: the whole runner stops here and goes
        // on when the shell continues it.
        let _ = nix::sys::signal::kill(Pid::from_raw(self.me), Signal::SIGSTOP);
        self.paused.set(self.paused.get() + t.elapsed());
        self.give_terminal();
        self.signal_job(Signal::SIGCONT);
    }

    /// A process started with [`prepare`](Self::prepare): its group is the
    /// job's, and the watchdog learns it.
    pub fn adopt(&self, pid: i32) {
        // The parent sets the group too, so that a signal sent right after
        // spawn reaches the right group (both may race).
        let _ = nix::unistd::setpgid(Pid::from_raw(pid), Pid::from_raw(pid));
        self.groups.borrow_mut().insert(pid);
        self.tell_watchdog(&format!("pgid {pid}\n"));
    }

    /// The leader of group `pid` was reaped.
    pub fn release(&self, pid: i32) {
        self.groups.borrow_mut().remove(&pid);
        if self.holds_terminal(pid) {
            self.take_terminal();
            self.terminal.set(None);
        }
    }

    fn tell_watchdog(&self, line: &str) {
        let mut w = self.watchdog.borrow_mut();
        if let Some(f) = w.as_mut() {
            if f.write_all(line.as_bytes()).is_err() {
                *w = None;
            }
        }
    }

    /// The next signal, waiting at most `timeout`. Ctrl-Z is handled here
    /// (the job stopped, then the runner; the job continued when the runner
    /// is) and reported as SIGTSTP; a stop request is remembered.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Signal> {
        let sig = match self.rx.recv_timeout(timeout) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) => return None,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                return None;
            }
        };
        match sig {
            Signal::SIGTSTP => self.suspend(),
            Signal::SIGCONT => {
                self.give_terminal();
                self.signal_job(Signal::SIGCONT)
            }
            s if is_interrupt(s) && self.interrupted.get().is_none() => {
                self.interrupted.set(Some(s))
            }
            _ => {}
        }
        Some(sig)
    }

    /// Handles the signals already received, without waiting.
    pub fn poll(&self) {
        while self.recv_timeout(Duration::ZERO).is_some() {}
    }

    /// Sends `sig` to every live group of the job, and to each descendant of
    /// the runner outside those groups (one that called setsid or setpgid).
    pub fn signal_job(&self, sig: Signal) {
        let groups = self.groups.borrow().clone();
        for &g in &groups {
            let _ = killpg(Pid::from_raw(g), sig);
        }
        for pid in procs::descendants(self.me) {
            if !procs::stat(pid).is_some_and(|(_, pgid, _)| groups.contains(&pgid)) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
            }
        }
    }

    /// Runs `cmd` as a process of the job (for merge commands) under the
    /// workers' rules: stopped with TERM, `grace`, then KILL at `limit` or
    /// when the user interrupts (a second interrupt: KILL at once); what it
    /// leaves behind gets the same, and every child is reaped before this
    /// returns.
    pub fn run_command(
        &self,
        cmd: &mut Command,
        limit: Option<Duration>,
        grace: Duration,
    ) -> std::io::Result<Ended> {
        self.prepare(cmd);
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        self.adopt(pid);
        // Reaped below with waitpid(-1), which also reaps its orphans.
        drop(child);
        let start = Instant::now();
        // Only time stopped while this command runs extends its limit.
        let paused_before = self.paused();
        let mut status = None;
        // Why the runner stops it (timeout, interrupt), when it does.
        let mut why: Option<Ended> = None;
        // TERM was sent; KILL at this instant.
        let mut kill_at: Option<Instant> = None;
        let mut killing = false;
        let mut swept = false;
        loop {
            let no_child = reap_all(|p, st| {
                if p == pid {
                    status = Some(std::process::ExitStatus::from_raw(st));
                    self.release(pid);
                }
            });
            if no_child {
                break;
            }
            let now = Instant::now();
            if why.is_none()
                && status.is_none()
                && limit.is_some_and(|l| now >= start + l + (self.paused() - paused_before))
            {
                why = Some(Ended::TimedOut);
                kill_at = Some(now + grace);
                self.signal_job(Signal::SIGTERM);
            }
            if status.is_some() && !swept {
                // The command is gone; what it left behind goes too.
                swept = true;
                kill_at = kill_at.or(Some(now + grace));
                self.signal_job(Signal::SIGTERM);
            }
            killing |= kill_at.is_some_and(|d| now >= d);
            if killing {
                self.signal_job(Signal::SIGKILL);
            }
            match self.recv_timeout(POLL) {
                Some(sig) if is_interrupt(sig) => {
                    if kill_at.is_some() {
                        // Already stopping (or cleaning up): at once now.
                        killing = true;
                    } else {
                        eprintln!(
                            "mpaudit: {sig}: stopping the merge command (TERM, {} grace period, then KILL); again to kill at once",
                            crate::duration::format_duration(grace)
                        );
                        why = Some(Ended::Interrupted(sig));
                        kill_at = Some(Instant::now() + grace);
                        self.signal_job(Signal::SIGTERM);
                    }
                }
                _ => {}
            }
        }
        Ok(match (why, status) {
            (Some(w), _) => w,
            (None, Some(st)) => Ended::Exited(st),
            (None, None) => Ended::Exited(std::process::ExitStatus::from_raw(0xff00)),
        })
    }
}

/// How a command run by [`Control::run_command`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(std::process::ExitStatus),
    TimedOut,
    Interrupted(Signal),
}

/// Reaps every child that has ended, without blocking: `f(pid, raw wait
/// status)` for each. True when the runner has no child left.
fn reap_all(mut f: impl FnMut(i32, i32)) -> bool {
    loop {
        let mut st = 0;
        // SAFETY: a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid > 0 {
            f(pid, st);
            continue;
        }
        if pid < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return true,
                _ => {}
            }
        }
        return false;
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.tell_watchdog("end\n");
        // EOF after "end": the watchdog exits without a sweep.
        self.watchdog.borrow_mut().take();
        self.stop_thread.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // Wake it now rather than at the end of its current wait: a
            // SIGCHLD for that thread alone, which it takes and drops.
            // SAFETY: the thread has not been joined, so its id is valid.
            unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGCHLD) };
            let _ = t.join();
        }
        self.job_limits.restore();
        // SAFETY: valid set pointer.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.original_mask, std::ptr::null_mut())
        };
    }
}

/// The first of stdin, stdout, stderr that is mpaudit's controlling
/// terminal.
pub fn controlling_terminal() -> Option<libc::c_int> {
    // SAFETY: plain terminal queries on descriptors 0-2.
    (0..3).find(|&fd| unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) > 0 })
}

/// Runs `f` with SIGTTOU blocked in the calling thread: `tcsetpgrp` from a
/// background group then succeeds instead of stopping the caller.
/// Async-signal-safe (used between fork and exec).
fn with_ttou_blocked(f: impl FnOnce() -> libc::c_int) {
    let mut ttou = empty_set();
    let mut old = empty_set();
    // SAFETY: valid, initialised sets.
    unsafe {
        libc::sigaddset(&mut ttou, libc::SIGTTOU);
        libc::pthread_sigmask(libc::SIG_BLOCK, &ttou, &mut old);
    }
    f();
    // SAFETY: the set saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
}

fn empty_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe {
        let mut s = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut s);
        s
    }
}

/// Starts the watchdog outside the runner's process tree (it forks and its
/// first process exits, so it is never the runner's child: the runner's
/// reaping and signalling never see it); returns the pipe's write end.
fn start_watchdog(run_id: &str) -> Result<File, String> {
    let mut fds = [0; 2];
    // SAFETY: a valid two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // This very binary, even if its file was replaced or removed since.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("mpaudit")
        .arg(WATCHDOG_ARG)
        .arg(run_id)
        .env_remove(RUN_ID_VAR)
        .stdin(Stdio::from(read))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .current_dir("/");
    let mut first = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let st = first.wait().map_err(|e| format!("wait: {e}"))?;
    if !st.success() {
        return Err(format!("watchdog start: {st}"));
    }
    Ok(File::from(write))
}

/// The watchdog's `main`, when argv[1] is [`WATCHDOG_ARG`]: returns the exit
/// status (the first process returns at once; the watchdog itself when
/// its sweep is done).
pub fn watchdog_main(args: &[String]) -> u8 {
    let Some(run_id) = args.first().filter(|r| !r.is_empty()) else {
        return 2;
    };
    // SAFETY: this process is single-threaded here (nothing has started a
    // thread yet), so the child may go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => return 1,
        0 => {}
        _ => return 0,
    }
    // Out of the runner's session: a terminal's signals and hangup are not
    // the watchdog's.
    // SAFETY: plain system calls.
    unsafe {
        libc::setsid();
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let mut told = BTreeSet::new();
    let mut clean = false;
    for line in BufReader::new(std::io::stdin().lock()).lines() {
        let Ok(line) = line else { break };
        if let Some(g) = line
            .strip_prefix("pgid ")
            .and_then(|g| g.parse::<i32>().ok())
        {
            told.insert(g);
        } else if line == "end" {
            clean = true;
        }
    }
    // A clean end: the runner itself stopped and reaped every process of
    // the job (it is their subreaper), and the group ids may be reused.
    if clean {
        return 0;
    }
    let killed = sweep(run_id, &told);
    if killed > 0 {
        eprintln!("mpaudit: the runner is gone; its watchdog killed {killed} process(es) left of run {run_id}");
    }
    0
}

/// Kills what is left of run `run_id`: members of `groups`, processes with
/// the run's marker, and their descendants. Each round stops them first
/// (so none can fork meanwhile), then kills them once a round finds no new
/// one. Returns how many it killed.
fn sweep(run_id: &str, groups: &BTreeSet<i32>) -> usize {
    let marker = format!("{RUN_ID_VAR}={run_id}");
    let me = std::process::id() as i32;
    let mut stopped: BTreeSet<i32> = BTreeSet::new();
    let mut killed = 0;
    for _ in 0..200 {
        let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        let mut victims = BTreeSet::new();
        for (pid, ppid, pgid, zombie) in all_processes() {
            if pid == me || zombie {
                continue;
            }
            children.entry(ppid).or_default().push(pid);
            if groups.contains(&pgid) || has_marker(pid, &marker) {
                victims.insert(pid);
            }
        }
        let mut stack: Vec<i32> = victims.iter().copied().collect();
        while let Some(p) = stack.pop() {
            for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
                if c != me && victims.insert(c) {
                    stack.push(c);
                }
            }
        }
        if victims.is_empty() {
            break;
        }
        let new = victims.iter().any(|p| !stopped.contains(p));
        for &p in &victims {
            let sig = if new { libc::SIGSTOP } else { libc::SIGKILL };
            // SAFETY: kill(2) with a pid found just now.
            unsafe { libc::kill(p, sig) };
        }
        if new {
            stopped.extend(victims);
        } else {
            killed += victims.len();
            stopped.clear();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Never leave one stopped.
    for &p in &stopped {
        // SAFETY: kill(2) on a pid this sweep stopped.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    killed + stopped.len()
}

/// `(pid, ppid, pgid, zombie)` of every process.
fn all_processes() -> Vec<(i32, i32, i32, bool)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = text[text.rfind(')')? + 1..].split_whitespace().next()?;
            let (ppid, pgid, _) = procs::parse_stat(&text)?;
            Some((pid, ppid, pgid, state == "Z" || state == "X"))
        })
        .collect()
}

fn has_marker(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == marker.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn the_sweep_kills_marked_processes_and_their_unmarked_children() {
        let id = format!("sweep-test-{}", std::process::id());
        // The shell carries the marker; its child was exec'ed with a
        // scrubbed environment, as a process hiding from the sweep would.
        let mut sh = Command::new("sh")
            .args(["-c", "env -i sleep 60 & echo $!; wait"])
            .env(RUN_ID_VAR, &id)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(sh.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let sleeper: i32 = line.trim().parse().unwrap();
        // Until `env -i` has exec'ed sleep, the child is still the shell's
        // fork, marker included.
        let start = Instant::now();
        while has_marker(sleeper, &format!("{RUN_ID_VAR}={id}")) {
            assert!(start.elapsed() < Duration::from_secs(30), "no exec");
            std::thread::sleep(Duration::from_millis(5));
        }
        let other = Command::new("sleep").arg("60").spawn().unwrap();
        assert!(sweep(&id, &BTreeSet::new()) >= 2);
        assert_eq!(sh.wait().unwrap().signal(), Some(libc::SIGKILL));
        let gone = |p: i32| procs::state(p).map_or(true, |s| s == 'Z' || s == 'X');
        let start = Instant::now();
        while !gone(sleeper) {
            assert!(start.elapsed() < Duration::from_secs(30), "{sleeper} lives");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Not of this run: untouched.
        let mut other = other;
        assert!(other.try_wait().unwrap().is_none());
        other.kill().unwrap();
        other.wait().unwrap();
        // Nothing left: nothing to kill.
        assert_eq!(sweep(&id, &BTreeSet::new()), 0);
    }
}
