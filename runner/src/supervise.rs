//! The dispatcher: it alone owns the run's state. A signal thread only sends
//! it messages; it spawns every process in its own process group, reaps
//! every child (it is a child subreaper, so orphaned grandchildren come back
//! to it), stops the job with TERM, a grace period, then KILL, and returns
//! only when it has no child left.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Serialize;

use crate::control::Control;
use crate::jobfile::{Mode, OnFailure};
use crate::memory::{self, Peak};
use crate::plan::{Plan, Streams};
use crate::procs;

const TICK: Duration = Duration::from_millis(50);
/// Memory samples: every 250 ms, less often when a pass costs more than
/// 1% of a CPU (a pass reads `smaps_rollup`, whose cost grows with the
/// workers' resident memory: ~15 ms of CPU per GiB of 4 KiB pages), but
/// at least every 10 s.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const SAMPLE_COST_FACTOR: u32 = 100;
const SAMPLE_AT_LEAST: Duration = Duration::from_secs(10);
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// Why the runner stopped a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Timeout,
    /// `on_failure = "kill"` after this worker failed.
    WorkerFailed(usize),
    Interrupted,
}

/// How one process the runner started ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
    pub wall_time_ms: u64,
    /// Set when the runner had asked it to stop before it ended.
    pub stopped_by: Option<StopReason>,
    /// The process could not be started at all.
    pub spawn_error: Option<String>,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && self.spawn_error.is_none()
    }
}

/// A process the runner started: worker k (spawn mode) or the root (fork mode).
#[derive(Debug, Clone)]
pub struct Started {
    pub worker: Option<usize>,
    pub pid: i32,
    pub started: Instant,
    pub outcome: Option<Outcome>,
    pub memory: Peak,
    /// Its stdout and stderr files (`None`: passed through, `mpaudit exec`).
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
}

/// What the dispatcher hands back.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub procs: Vec<Started>,
    /// Fork mode: children of the root, by pid, with start time (clock
    /// ticks, for fork order) and peak memory.
    pub forked: BTreeMap<i32, (u64, Peak)>,
    /// Processes still alive after the started ones ended, which the runner
    /// stopped (daemonised grandchildren, orphaned workers).
    pub strays: Vec<i32>,
    /// The first signal that interrupted the run (Ctrl-C's SIGINT, a
    /// batch system's SIGTERM), which stopped the job.
    pub interrupted_by: Option<i32>,
    pub stop: Option<StopReason>,
    pub wall: Duration,
    /// Events the seccomp supervisor could not log (the audit is then
    /// incomplete).
    pub supervisor_lost_events: u64,
}

/// The signal `mpaudit exec` ends by once its report is out (0: none).
static RERAISE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Records the job's terminating signal for [`job_signal_to_reraise`].
pub fn reraise_after_report(sig: Option<i32>) {
    RERAISE.store(sig.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
}

/// The signal that ended the job of `mpaudit exec`, if any.
pub fn job_signal_to_reraise() -> Option<i32> {
    match RERAISE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

impl RunResult {
    /// The signal that ended the job, as a shell would see it: the one
    /// that interrupted the run, else the one every
    /// started process that did not succeed died of the same signal, one
    /// that asks a program to stop (SIGINT, SIGTERM, SIGQUIT, SIGHUP).
    /// A crash (SIGSEGV, SIGABRT) stays exit status 3.
    pub fn terminating_signal(&self) -> Option<i32> {
        // Interrupted: the job was stopped because mpaudit got the signal
        // (with TERM, or KILL), and the caller (a shell) expects mpaudit to
        // end by the signal it sent.
        if let Some(s) = self.interrupted_by {
            return Some(s);
        }
        let mut found = None;
        for p in &self.procs {
            let o = p.outcome.as_ref()?;
            match o.signal {
                Some(s) if found.map_or(true, |f| f == s) => found = Some(s),
                Some(_) => return None,
                None if o.success() => {}
                None => return None,
            }
        }
        found.filter(|s| [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT, libc::SIGHUP].contains(s))
    }

    /// The job failed: a started process did not exit 0, or the run was
    /// stopped (timeout, interruption).
    pub fn failed(&self) -> bool {
        self.stop.is_some()
            || self
                .procs
                .iter()
                .any(|p| !p.outcome.as_ref().is_some_and(Outcome::success))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Running,
    /// TERM sent; KILL at the deadline.
    Terminating(Instant),
    Killing,
}

struct Dispatcher<'a> {
    plan: &'a Plan,
    control: &'a Control,
    me: i32,
    procs: Vec<Started>,
    forked: BTreeMap<i32, (u64, Peak)>,
    phase: Phase,
    stop: Option<StopReason>,
    cleaning: bool,
    strays: BTreeSet<i32>,
    interrupts: u32,
    interrupted_by: Option<i32>,
    no_children: bool,
    status: Option<StatusLine>,
    /// Threads copying labelled output (`mpaudit exec`, several workers).
    labellers: Vec<std::thread::JoinHandle<()>>,
    /// Audits the started processes the preload cannot (static, Go).
    seccomp: Option<crate::seccomp::Supervisor>,
}

/// Runs the plan to completion. `Err` only for failures before any process
/// was started (exit status 2).
pub fn run(
    plan: &Plan,
    program: &Path,
    preload: &Path,
    control: &Control,
) -> Result<RunResult, String> {
    let start = Instant::now();
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        ));
    }
    std::fs::create_dir_all(&plan.log_dir)
        .map_err(|e| format!("log directory {}: {e}", plan.log_dir.display()))?;
    std::fs::create_dir_all(&plan.workers_dir)
        .map_err(|e| format!("workers directory {}: {e}", plan.workers_dir.display()))?;
    for k in 0..plan.workers {
        let d = plan.worker_dir(k);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let inherited_ld = std::env::var("LD_PRELOAD").ok();
    let mut d = Dispatcher {
        plan,
        control,
        me: std::process::id() as i32,
        procs: Vec::new(),
        forked: BTreeMap::new(),
        phase: Phase::Running,
        stop: None,
        cleaning: false,
        strays: BTreeSet::new(),
        interrupts: 0,
        interrupted_by: None,
        no_children: false,
        // Not over the program's own output on the terminal (exec).
        status: (!plan.quiet && plan.streams == Streams::Logs && std::io::stderr().is_terminal())
            .then(|| StatusLine::new(&plan.log_dir)),
        labellers: Vec::new(),
        seccomp: Some(crate::seccomp::Supervisor::start(plan, program)?),
    };
    let labels: Vec<Option<usize>> = match plan.mode {
        Mode::Spawn => (0..plan.workers).map(Some).collect(),
        Mode::Fork => vec![None],
    };
    for k in labels {
        let mut env = plan.mpaudit_env(k, preload, inherited_ld.as_deref());
        for (var, value) in d.seccomp.as_ref().map(|s| s.env()).unwrap_or_default() {
            env.push((var.to_string(), value));
        }
        d.spawn(k, program, &env)?;
    }
    d.dispatch(start);
    let supervisor_lost_events = d.seccomp.take().map_or(0, |s| s.finish().lost_events);
    if let Some(s) = &mut d.status {
        s.clear();
    }
    // Every writer is gone: each pipe is at its end.
    for t in d.labellers.drain(..) {
        let _ = t.join();
    }
    Ok(RunResult {
        procs: d.procs,
        forked: d.forked,
        strays: d.strays.into_iter().collect(),
        interrupted_by: d.interrupted_by,
        stop: d.stop,
        wall: start.elapsed(),
        supervisor_lost_events,
    })
}

impl Dispatcher<'_> {
    fn spawn(
        &mut self,
        k: Option<usize>,
        program: &Path,
        env: &[(String, String)],
    ) -> Result<(), String> {
        let plan = self.plan;
        let dir = plan.output_dir(k);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (out_path, err_path) = (dir.join("stdout.log"), dir.join("stderr.log"));
        let mut cmd = Command::new(program);
        cmd.arg0(&plan.command[0])
            .args(&plan.command[1..])
            .current_dir(&plan.job_dir)
            .envs(plan.env.iter())
            .envs(env.iter().map(|(k, v)| (k, v)));
        self.control.prepare(&mut cmd);
        // The labelled copies are made before the program starts: once it
        // runs, it may remove its worker directory (`rm -rf ./*`), and a
        // copy made after that would end the run with no report.
        let mut label_logs: [Option<File>; 2] = [None, None];
        let files = match plan.streams {
            Streams::Logs => {
                let out =
                    File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
                let err =
                    File::create(&err_path).map_err(|e| format!("{}: {e}", err_path.display()))?;
                cmd.stdin(Stdio::null()).stdout(out).stderr(err);
                true
            }
            Streams::PassThrough => {
                // The very descriptors mpaudit got; a terminal is handed
                // over as its foreground while mpaudit holds it.
                cmd.stdin(Stdio::inherit())
                    .stdout(Stdio::inherit())
                    .stderr(Stdio::inherit());
                crate::stdfds::keep_closed(&mut cmd);
                if let Some(fd) = crate::control::controlling_terminal() {
                    self.control.prepare_terminal(&mut cmd, fd);
                }
                false
            }
            Streams::Labelled => {
                // One reader of a terminal among several workers would be a
                // race, and Ctrl-C must reach mpaudit: the terminal is
                // nobody's; other input goes to worker 0.
                let stdin = if k == Some(0) && !std::io::stdin().is_terminal() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                };
                cmd.stdin(stdin)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                for (slot, path) in label_logs.iter_mut().zip([&out_path, &err_path]) {
                    *slot =
                        Some(File::create(path).map_err(|e| format!("{}: {e}", path.display()))?);
                }
                true
            }
        };
        let (out_path, err_path) = if files {
            (Some(out_path), Some(err_path))
        } else {
            (None, None)
        };
        let _armed = match &self.seccomp {
            Some(s) if s.for_the_program() => Some(s.arm(&mut cmd, k)?),
            _ => None,
        };
        let started = Instant::now();
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id() as i32;
                self.control.adopt(pid);
                self.control.adopt_terminal(pid);
                let pipes = [
                    (
                        child
                            .stdout
                            .take()
                            .map(|o| File::from(std::os::fd::OwnedFd::from(o))),
                        label_logs[0].take(),
                        false,
                    ),
                    (
                        child
                            .stderr
                            .take()
                            .map(|e| File::from(std::os::fd::OwnedFd::from(e))),
                        label_logs[1].take(),
                        true,
                    ),
                ];
                for (pipe, log, to_stderr) in pipes {
                    let (Some(pipe), Some(log)) = (pipe, log) else {
                        continue;
                    };
                    let label = k.unwrap_or(0);
                    let t = std::thread::Builder::new()
                        .name(format!("mpaudit-label-{label}"))
                        .spawn(move || label_lines(label, pipe, log, to_stderr))
                        .map_err(|e| format!("cannot start an output thread: {e}"))?;
                    self.labellers.push(t);
                }
                // `child` is dropped without waiting: the dispatcher reaps
                // every pid itself with waitpid(-1).
                drop(child);
                self.procs.push(Started {
                    worker: k,
                    pid,
                    started,
                    outcome: None,
                    memory: Peak::default(),
                    stdout: out_path,
                    stderr: err_path,
                });
            }
            Err(e) => {
                let msg = format!("mpaudit: cannot start {}: {e}\n", program.display());
                match &err_path {
                    Some(p) => {
                        let _ = File::options()
                            .create(true)
                            .append(true)
                            .open(p)
                            .and_then(|mut f| f.write_all(msg.as_bytes()));
                    }
                    None => eprint!("{msg}"),
                }
                self.procs.push(Started {
                    worker: k,
                    pid: 0,
                    started,
                    outcome: Some(Outcome {
                        exit_code: None,
                        signal: None,
                        core_dumped: false,
                        wall_time_ms: 0,
                        stopped_by: None,
                        spawn_error: Some(e.to_string()),
                    }),
                    memory: Peak::default(),
                    stdout: out_path,
                    stderr: err_path,
                });
                self.on_failure(k);
            }
        }
        Ok(())
    }

    fn all_done(&self) -> bool {
        self.procs.iter().all(|p| p.outcome.is_some())
    }

    fn dispatch(&mut self, start: Instant) {
        let mut next_sample = Instant::now();
        let mut next_status = start + Duration::from_secs(1);
        loop {
            self.reap();
            let now = Instant::now();
            if self.phase == Phase::Running && !self.all_done() {
                if let Some(t) = self.plan.timeout {
                    if now >= start + t + self.control.paused() {
                        self.begin_stop(StopReason::Timeout);
                    }
                }
            }
            if self.all_done() {
                if self.no_children {
                    break;
                }
                if !self.cleaning {
                    // The started processes are gone but something they
                    // left behind is still alive (or not yet reaped).
                    self.cleaning = true;
                    if self.phase == Phase::Running {
                        self.phase = Phase::Terminating(now + self.plan.grace);
                    }
                    self.signal_all(Signal::SIGTERM);
                }
            }
            if let Phase::Terminating(deadline) = self.phase {
                if now >= deadline {
                    self.phase = Phase::Killing;
                }
            }
            if self.phase == Phase::Killing {
                self.signal_all(Signal::SIGKILL);
            }
            if now >= next_sample && !self.all_done() {
                let cpu = thread_cpu_time();
                self.sample_memory();
                next_sample = now + sample_interval(thread_cpu_time().saturating_sub(cpu));
            }
            if now >= next_status {
                let (running, done) = self.counts();
                if let Some(s) = &mut self.status {
                    s.update(running, done, start.elapsed());
                }
                next_status = now + STATUS_EVERY;
            }
            if let Some(sig) = self.control.recv_timeout(TICK) {
                self.on_signal(sig);
            }
        }
    }

    fn counts(&self) -> (usize, usize) {
        let done = self.procs.iter().filter(|p| p.outcome.is_some()).count();
        let total = match self.plan.mode {
            Mode::Spawn => self.procs.len(),
            Mode::Fork => self.forked.len().max(self.procs.len()),
        };
        match self.plan.mode {
            Mode::Spawn => (total - done, done),
            Mode::Fork => {
                let root = self.procs.first().map(|p| p.pid).unwrap_or(0);
                let running = procs::children(root).len();
                (running, self.forked.len().saturating_sub(running))
            }
        }
    }

    fn on_signal(&mut self, sig: Signal) {
        match sig {
            // Ctrl-Z and continuing: done by the control itself.
            Signal::SIGCHLD | Signal::SIGTSTP | Signal::SIGCONT => {}
            _ => {
                self.interrupts += 1;
                self.interrupted_by.get_or_insert(sig as i32);
                if self.interrupts == 1 && self.phase == Phase::Running {
                    if let Some(s) = &mut self.status {
                        s.clear();
                    }
                    eprintln!("mpaudit: {sig}: stopping the job (TERM, {} grace period, then KILL); again to kill at once", crate::duration::format_duration(self.plan.grace));
                    self.begin_stop(StopReason::Interrupted);
                } else {
                    self.phase = Phase::Killing;
                    if self.stop.is_none() {
                        self.stop = Some(StopReason::Interrupted);
                    }
                    self.signal_all(Signal::SIGKILL);
                }
            }
        }
    }

    fn begin_stop(&mut self, why: StopReason) {
        if self.phase != Phase::Running {
            return;
        }
        self.stop = Some(why);
        self.phase = Phase::Terminating(Instant::now() + self.plan.grace);
        self.signal_all(Signal::SIGTERM);
    }

    fn on_failure(&mut self, k: Option<usize>) {
        if self.plan.on_failure == OnFailure::Kill
            && self.phase == Phase::Running
            && !self.all_done()
        {
            self.begin_stop(StopReason::WorkerFailed(k.unwrap_or(0)));
        }
    }

    /// Sends `sig` to the job ([`Control::signal_job`]); while cleaning
    /// up, whatever is still alive besides the started processes is a
    /// stray.
    fn signal_all(&mut self, sig: Signal) {
        if self.cleaning {
            let tracked: BTreeSet<i32> = self
                .procs
                .iter()
                .filter(|p| p.outcome.is_none())
                .map(|p| p.pid)
                .collect();
            for pid in procs::descendants(self.me) {
                if !tracked.contains(&pid) {
                    self.strays.insert(pid);
                }
            }
        }
        self.control.signal_job(sig);
    }

    /// Reaps every child that has ended, without blocking.
    fn reap(&mut self) {
        loop {
            match waitpid(
                Pid::from_raw(-1),
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED),
            ) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(WaitStatus::Stopped(pid, sig)) => {
                    // The process holding the terminal stopped by Ctrl-Z
                    // (or reading it in the background): the runner stops
                    // too, so that the shell gets the terminal back.
                    if self.control.holds_terminal(pid.as_raw())
                        && matches!(sig, Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU)
                        && procs::state(pid.as_raw()) == Some('T')
                    {
                        if let Some(s) = &mut self.status {
                            s.clear();
                        }
                        self.control.suspend();
                    }
                }
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    let raw = match status {
                        WaitStatus::Exited(_, code) => Some((Some(code), None, false)),
                        WaitStatus::Signaled(_, sig, core) => Some((None, Some(sig as i32), core)),
                        _ => None,
                    };
                    let Some((exit_code, signal, core_dumped)) = raw else {
                        continue;
                    };
                    let stop = match self.phase {
                        Phase::Running => None,
                        _ => self.stop.clone(),
                    };
                    let mut failed = None;
                    if let Some(p) = self
                        .procs
                        .iter_mut()
                        .find(|p| p.pid == pid.as_raw() && p.outcome.is_none())
                    {
                        let o = Outcome {
                            exit_code,
                            signal,
                            core_dumped,
                            wall_time_ms: p.started.elapsed().as_millis() as u64,
                            stopped_by: stop,
                            spawn_error: None,
                        };
                        if !o.success() && o.stopped_by.is_none() {
                            failed = Some(p.worker);
                        }
                        p.outcome = Some(o);
                        self.control.release(p.pid);
                    }
                    // Anything else is an orphan that came back to us as
                    // subreaper: reaped here, counted as a stray only if
                    // the cleanup had to signal it.
                    if let Some(k) = failed {
                        self.on_failure(k);
                    }
                }
                Err(nix::errno::Errno::ECHILD) => {
                    self.no_children = true;
                    return;
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    fn sample_memory(&mut self) {
        for p in &mut self.procs {
            if p.pid > 0 && p.outcome.is_none() {
                if let Some(s) = memory::sample(p.pid) {
                    p.memory.add(s);
                }
            }
        }
        if self.plan.mode == Mode::Fork {
            let Some(root) = self
                .procs
                .first()
                .filter(|p| p.outcome.is_none())
                .map(|p| p.pid)
            else {
                return;
            };
            for c in procs::children(root) {
                let Some((_, _, starttime)) = procs::stat(c) else {
                    continue;
                };
                let entry = self.forked.entry(c).or_insert((starttime, Peak::default()));
                if let Some(s) = memory::sample(c) {
                    entry.1.add(s);
                }
            }
        }
    }
}

/// The wait before the next memory sample, after a pass that cost `cost`
/// of CPU time.
fn sample_interval(cost: Duration) -> Duration {
    cost.saturating_mul(SAMPLE_COST_FACTOR)
        .clamp(SAMPLE_EVERY, SAMPLE_AT_LEAST)
}

/// CPU time used by the calling thread (zero if the clock is unavailable).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Copies worker `k`'s output to mpaudit's stdout (or stderr), each line
/// prefixed `k: ` as `srun --label` does, and into its log file as it
/// came. A line longer than 64 KiB is cut; a last line without newline
/// gets one on the terminal (not in the log).
fn label_lines(k: usize, mut from: File, mut log: File, to_stderr: bool) {
    const LONGEST: usize = 64 * 1024;
    let prefix = format!("{k}: ");
    let mut out_ok = true;
    let mut emit = |line: &[u8]| {
        let _ = log.write_all(line);
        if !out_ok {
            return;
        }
        let mut v = Vec::with_capacity(prefix.len() + line.len() + 1);
        v.extend_from_slice(prefix.as_bytes());
        v.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            v.push(b'\n');
        }
        // Whole lines under the stream's lock: workers never interleave
        // within a line. A reader that went away: the log still gets all.
        out_ok = if to_stderr {
            std::io::stderr().lock().write_all(&v).is_ok()
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(&v).and_then(|_| o.flush()).is_ok()
        };
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &buf[start..]) {
            emit(&buf[start..start + i + 1]);
            start += i + 1;
        }
        buf.drain(..start);
        if buf.len() >= LONGEST {
            emit(&buf);
            buf.clear();
        }
    }
    if !buf.is_empty() {
        emit(&buf);
    }
}

/// The live status line on a terminal's stderr: workers, events, rogue
/// writes so far. It counts complete lines in the log files as they grow.
struct StatusLine {
    log_dir: PathBuf,
    offsets: BTreeMap<PathBuf, u64>,
    events: u64,
    rogue: u64,
    shown: bool,
}

impl StatusLine {
    fn new(log_dir: &Path) -> Self {
        // Logs of earlier runs are not this run's: start past their end.
        let offsets = crate::events::log_files(log_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|f| {
                let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                (f, len)
            })
            .collect();
        StatusLine {
            log_dir: log_dir.to_path_buf(),
            offsets,
            events: 0,
            rogue: 0,
            shown: false,
        }
    }

    fn scan(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.log_dir) else {
            return;
        };
        for e in dir.flatten() {
            let path = e.path();
            if !crate::events::is_log_name(&e.file_name().to_string_lossy()) {
                continue;
            }
            let off = self.offsets.entry(path.clone()).or_insert(0);
            let Ok(mut f) = File::open(&path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(*off)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            if f.take(4 << 20).read_to_end(&mut buf).is_err() {
                continue;
            }
            // Only complete lines; NUL padding is not content.
            let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            for line in buf[..last_nl].split(|&b| b == b'\n') {
                if line.iter().any(|&b| b != 0) {
                    self.events += 1;
                    if memchr_str(line, b"\"verdict\":\"rogue\"") {
                        self.rogue += 1;
                    }
                }
            }
            *off += last_nl as u64 + 1;
        }
    }

    fn update(&mut self, running: usize, done: usize, elapsed: Duration) {
        self.scan();
        let line = format!(
            "mpaudit: {}  workers: {running} running, {done} finished  events: {}  rogue writes: {}",
            crate::duration::format_duration(Duration::from_secs(elapsed.as_secs())),
            self.events,
            self.rogue
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

fn memchr_str(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The last `n` lines of a file (reading at most its last 64 KiB).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let skip_partial = usize::from(start > 0 && lines.len() > n);
    lines[skip_partial.max(lines.len().saturating_sub(n))..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Signal number to name (`SIGSEGV`), for reports.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_samples_keep_within_their_cpu_budget() {
        let ms = Duration::from_millis;
        // Cheap passes: every 250 ms.
        assert_eq!(sample_interval(Duration::ZERO), ms(250));
        assert_eq!(sample_interval(ms(2)), ms(250));
        // Dearer ones: 1% of a CPU, at least every 10 s.
        assert_eq!(sample_interval(ms(6)), ms(600));
        assert_eq!(sample_interval(ms(240)), ms(10_000));
        assert_eq!(sample_interval(Duration::MAX), ms(10_000));
        let a = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        assert!(thread_cpu_time() > a, "{x}");
    }
}
