//! Opens of the worker's own FIFO that wait for the other end (review 6,
//! finding 5): made on a thread of their own, which answers the stopped
//! call when the open returns, since the supervisor's one thread serves
//! every task, the partner's open included (emulate::open_special says
//! which opens wait).
//!
//! A task whose wait ends without its answer (a signal: the kernel drops
//! the notification and the task's open fails with EINTR or restarts;
//! its death) leaves the thread blocked in its open: the supervisor's loop
//! polls with a short timeout while any is outstanding and interrupts
//! those whose notification is gone with SIGURG (a handler that does
//! nothing, without SA_RESTART), and the thread gives up. A signal the
//! task catches, pending while it waits (the filter's WAIT_KILLABLE_RECV
//! holds it back), interrupts the open the same way, answered ERESTARTSYS
//! as the kernel's own FIFO wait does. A partner that
//! arrives in that gap (up to one tick) is met by the thread's open, which
//! is then closed: the partner sees its other end come and go.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};

use serde_json::{Map, Value};

use super::notify::{finished, respond_waited, still_valid};

/// The events these threads logged, and lost (added to the run's stats).
static LOGGED: AtomicU64 = AtomicU64::new(0);
static LOST: AtomicU64 = AtomicU64::new(0);

/// An open to make on a thread: notification `id` of `listener` (task
/// `tid`), the worker's FIFO by its `O_PATH` `probe`, opened with
/// `flags`; its event, logged with the result to a log of its own.
pub struct Open {
    pub listener: RawFd,
    pub id: u64,
    pub tid: i32,
    pub probe: OwnedFd,
    pub flags: i32,
    pub cloexec: bool,
    pub event: Option<(Map<String, Value>, PathBuf)>,
}

/// One open in progress: the notification it answers, through a
/// descriptor of the listener of its own.
struct Waiting {
    listener: OwnedFd,
    id: u64,
    /// The stopped task.
    tid: i32,
    /// A signal the task would take is pending: answer ERESTARTSYS.
    signalled: AtomicBool,
    done: AtomicBool,
}

/// The kernel's "restart if the handler says so": a blocking FIFO open
/// returns it when a signal comes (`wait_for_partner`); on the way out
/// the task runs the handler, then restarts the open (SA_RESTART) or
/// fails it with EINTR, as bare.
const ERESTARTSYS: i32 = 512;

/// Whether task `tid` has a pending signal it does not block and has a
/// handler for. The filter's SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV keeps
/// such a signal from interrupting a received notification: bare, it
/// would interrupt the open (ignored signals are discarded, fatal ones
/// kill the task either way).
fn signal_waits(tid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    pending & !mask("SigBlk:") & mask("SigCgt:") != 0
}

static OUTSTANDING: Mutex<Vec<(Arc<Waiting>, libc::pthread_t)>> = Mutex::new(Vec::new());

/// Whether any open is still waiting (the loop then polls with a timeout).
pub fn any() -> bool {
    let mut v = OUTSTANDING.lock().unwrap_or_else(|e| e.into_inner());
    v.retain(|(w, _)| !w.done.load(Ordering::Acquire));
    !v.is_empty()
}

/// Interrupts the opens whose call went away.
pub fn release_interrupted() {
    let v = OUTSTANDING.lock().unwrap_or_else(|e| e.into_inner());
    for (w, thread) in v.iter() {
        if w.done.load(Ordering::Acquire) {
            continue;
        }
        let gone = !still_valid(w.listener.as_raw_fd(), w.id);
        if !gone && signal_waits(w.tid) {
            w.signalled.store(true, Ordering::Release);
        }
        if gone || w.signalled.load(Ordering::Acquire) {
            // SAFETY: the thread is alive while `done` is false (it sets
            // it last); SIGURG has our handler.
            unsafe { libc::pthread_kill(*thread, libc::SIGURG) };
        }
    }
}

extern "C" fn interrupted(_: libc::c_int) {}

/// Waits (up to a second) for the threads still answering, then adds
/// what they logged and lost to `stats`.
pub fn settle(stats: &mut super::Stats) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while any() && std::time::Instant::now() < deadline {
        release_interrupted();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    stats.events += LOGGED.swap(0, Ordering::AcqRel);
    stats.lost_events += LOST.swap(0, Ordering::AcqRel);
}

/// Starts `open` on a thread, which answers the call when the open
/// returns. `Err`: no thread could be started (the caller refuses the
/// call and logs the event it gets back).
pub fn start(open: Open) -> Result<(), Option<Map<String, Value>>> {
    let Open {
        listener,
        id,
        tid,
        probe,
        flags,
        cloexec,
        event,
    } = open;
    static HANDLER: Once = Once::new();
    HANDLER.call_once(|| {
        // SAFETY: a handler that does nothing, installed once; zeroed
        // sigaction is valid (empty mask, no flags: no SA_RESTART).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = interrupted as extern "C" fn(libc::c_int) as usize;
            libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut());
        }
    });
    // SAFETY: duplicating our listener descriptor; owned below.
    let dup = unsafe { libc::fcntl(listener, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(event.map(|(e, _)| e));
    }
    let w = Arc::new(Waiting {
        // SAFETY: a new descriptor we own.
        listener: unsafe { OwnedFd::from_raw_fd(dup) },
        id,
        tid,
        signalled: AtomicBool::new(false),
        done: AtomicBool::new(false),
    });
    let mine = Arc::clone(&w);
    // The event comes back if no thread starts (the closure is dropped).
    let back = Arc::new(Mutex::new(event));
    let theirs = Arc::clone(&back);
    let mut v = OUTSTANDING.lock().unwrap_or_else(|e| e.into_inner());
    let spawned = std::thread::Builder::new()
        .name("mpaudit-fifo-open".into())
        .spawn(move || {
            let event = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
            let (result, errno) = wait_and_answer(&mine, probe, flags, cloexec);
            if let Some((e, path)) = event {
                log(&finished(e, result, errno), &path);
            }
            mine.done.store(true, Ordering::Release);
        });
    match spawned {
        Ok(handle) => {
            v.push((w, handle.as_pthread_t()));
            Ok(())
        }
        Err(_) => {
            let e = back.lock().unwrap_or_else(|e| e.into_inner()).take();
            Err(e.map(|(e, _)| e))
        }
    }
}

/// Writes one event line to a new log at `path`.
fn log(line: &[u8], path: &std::path::Path) {
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| f.write_all(line));
    match written {
        Ok(()) => LOGGED.fetch_add(1, Ordering::AcqRel),
        Err(_) => LOST.fetch_add(1, Ordering::AcqRel),
    };
}

/// The open, answered: what the program got (`None`: its call went away).
fn wait_and_answer(
    w: &Waiting,
    probe: OwnedFd,
    flags: i32,
    cloexec: bool,
) -> (Option<i64>, Option<i32>) {
    // SAFETY: unblocking SIGURG in this thread's own mask (the thread
    // that spawned it may block signals).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGURG);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    let link = super::beneath::fd_path(probe.as_raw_fd());
    let lfd = w.listener.as_raw_fd();
    let opened = loop {
        // SAFETY: a NUL-terminated path; the descriptor is owned below.
        let r = unsafe { libc::open(link.as_ptr(), flags | libc::O_CLOEXEC) };
        if r >= 0 {
            // SAFETY: a new descriptor we own.
            break Ok(unsafe { OwnedFd::from_raw_fd(r) });
        }
        let e = super::emulate::errno();
        if e == libc::EINTR && w.signalled.load(Ordering::Acquire) {
            break Err(ERESTARTSYS);
        }
        if e == libc::EINTR && still_valid(lfd, w.id) {
            continue;
        }
        break Err(e);
    };
    if !still_valid(lfd, w.id) {
        return (None, None);
    }
    respond_waited(lfd, w.id, opened, cloexec)
}
