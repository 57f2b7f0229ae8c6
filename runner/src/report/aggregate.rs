//! Aggregation: events folded into per-path, per-component and per-process
//! counts, then sorted into the report's sections. Memory is bounded by
//! distinct paths, components and processes, never by the number of events:
//! events are folded in one by one as the reader streams them.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use crate::events::{Event, Kind, ReadStats, Taken, Verdict};

use super::model::*;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct WhoSet(Vec<Who>);

impl WhoSet {
    fn insert(&mut self, w: Who) {
        if let Err(i) = self.0.binary_search(&w) {
            self.0.insert(i, w);
        }
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn extend(&mut self, o: &WhoSet) {
        for w in o {
            self.insert(*w);
        }
    }
    fn iter(&self) -> std::slice::Iter<'_, Who> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a WhoSet {
    type Item = &'a Who;
    type IntoIter = std::slice::Iter<'a, Who>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[derive(Debug, Default, Clone)]
struct PathUse {
    writers: WhoSet,
    readers: WhoSet,
}

/// Per path of a rogue group: count, workers, actions taken, and the calls
/// that wrote it.
#[derive(Debug, Default, Clone)]
struct PathAgg {
    count: u64,
    workers: WhoSet,
    actions: BTreeMap<&'static str, u64>,
    calls: Vec<CallAgg>,
}

/// One kind of call on a rogue path: the operation, the path's role in it
/// and, for a two-path call, the other path (the first one seen).
#[derive(Debug, Clone)]
struct CallAgg {
    op: String,
    role: Option<Role>,
    count: u64,
    counterpart: Option<String>,
}

impl PathAgg {
    fn add_call(&mut self, op: &str, role: Option<Role>, counterpart: Option<&str>, n: u64) {
        match self.calls.iter_mut().find(|c| c.role == role && c.op == op) {
            Some(c) => {
                c.count += n;
                if c.counterpart.is_none() {
                    c.counterpart = counterpart.map(str::to_string);
                }
            }
            None => self.calls.push(CallAgg {
                op: op.to_string(),
                role,
                count: n,
                counterpart: counterpart.map(str::to_string),
            }),
        }
    }
}

/// A path a call wrote: the path, its role, the call's other path.
type WrittenPath<'e> = (&'e str, Option<Role>, Option<&'e str>);

/// The shape of an access call: which of its paths it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One path (open, unlink, truncate, mkdir, …), written when a write.
    Single,
    /// rename: the source disappears, the destination appears.
    Rename,
    /// link: the source is only looked at; the destination is created.
    Link,
    /// symlink: the source is the link's text, never touched; the
    /// destination (the link) is created.
    Symlink,
}

impl Shape {
    fn of(op: &str) -> Shape {
        if op.starts_with("rename") {
            Shape::Rename
        } else if op.starts_with("symlink") {
            Shape::Symlink
        } else if op.starts_with("link") {
            Shape::Link
        } else {
            Shape::Single
        }
    }
}

/// Failed calls that a rogue write would have been, per path: nothing was
/// written (docs/report.md, "attempts").
#[derive(Debug, Default)]
struct AttemptAgg {
    count: u64,
    workers: WhoSet,
    /// (op, errno) → count.
    calls: BTreeMap<(String, String), u64>,
    object: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct RogueAgg {
    events: u64,
    unmitigated: u64,
    workers: WhoSet,
    actions: BTreeMap<&'static str, u64>,
    paths: HashMap<String, PathAgg>,
}

impl RogueAgg {
    fn absorb(&mut self, b: RogueAgg) {
        self.events += b.events;
        self.unmitigated += b.unmitigated;
        self.workers.extend(&b.workers);
        add_counts(&mut self.actions, b.actions);
        merge_maps(&mut self.paths, b.paths, |a, b| {
            a.count += b.count;
            a.workers.extend(&b.workers);
            add_counts(&mut a.actions, b.actions);
            for c in b.calls {
                a.add_call(&c.op, c.role, c.counterpart.as_deref(), c.count);
            }
        });
    }
}

#[derive(Debug, Default)]
struct UnauditedAgg {
    count: u64,
    workers: BTreeSet<Who>,
    argv: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerCounts {
    pub events: u64,
    pub rogue: u64,
}

/// Folds events in.
#[derive(Debug, Default)]
pub struct Aggregator {
    pub stats: ReadStats,
    paths: HashMap<String, PathUse>,
    attempts: HashMap<String, AttemptAgg>,
    /// Keyed by the component's raw frame, (object, vaddr): call sites are
    /// named, and grouped by function, only for the report (`sections`).
    rogue: HashMap<(String, Option<u64>), RogueAgg>,
    /// Sorted by path for the report; a `HashMap` while folding events in.
    redirected: HashMap<String, BTreeMap<Who, BTreeSet<String>>>,
    unaudited: BTreeMap<(String, String), UnauditedAgg>,
    pub per_worker: BTreeMap<Who, WorkerCounts>,
    /// pid → worker, from each process's events (fork mode).
    pub pid_worker: BTreeMap<(u16, i64), Option<u64>>,
    /// pid → exit status, from `exit` events.
    pub exits: BTreeMap<(u16, i64), i64>,
    pub rogue_writes: u64,
    /// Write-class events without a verdict (a library without policy).
    pub unclassified_writes: u64,
    /// The objects write events named as their component: what a
    /// `components` glob can match.
    component_objects: HashSet<String>,
    /// The last of them inserted: most writes come from the component the
    /// previous one came from, and comparing is cheaper than hashing.
    last_component: String,
    /// Processes whose log stopped (`log_stopped`), with the reason.
    pub log_stopped: BTreeMap<(u16, i64), String>,
    /// Events processes could not log (the `dropped` of their `exit`).
    pub dropped_events: u64,
    /// Stack frames recorded without an object (the `unresolved_frames`
    /// of `exit` events): JIT code, or glibc < 2.35.
    pub unresolved_frames: u64,
    /// The earliest `start` event's `ts`: the run's start, against which
    /// call sites' objects are checked for a rebuild (`crate::symbols`).
    pub run_start_ns: Option<u64>,
    /// Each process's life as its logs tell it, for the gates on missing
    /// and unclosed logs (`status::incomplete`): by (source, pid), the
    /// `(ts, mark)` of its start, exit and exec events, and of the forks
    /// it made.
    pub lives: BTreeMap<(u16, i64), Vec<(u64, Mark)>>,
}

/// What a process event says about the log images of a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mark {
    /// A log image begins (`start`).
    Start,
    /// It closes: `exit`.
    Exit,
    /// It is about to exec (`exec` with `result` null); `true` when the
    /// program is one the library audits, so a new image must follow.
    ExecBefore(bool),
    /// The exec returned (failed): the image goes on.
    ExecFailed,
    /// It forked this child, which must have a log of its own.
    Forked(i64),
    /// It spawned this child running a program the library said it
    /// audits (not handed to the supervisor): the child must log too.
    Spawned(i64),
}

/// A log image of a process with no closing record, or a process the logs
/// say must have one: the gates' findings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogGaps {
    /// Pids whose last image has neither `exit` nor `exec` at its end.
    pub unclosed: BTreeSet<(u16, i64)>,
    /// Pids the logs say must have logged (a forked child, the image after
    /// an audited exec) that have no such log: `(source, pid, why)`.
    pub missing: Vec<(u16, i64, &'static str)>,
}

impl Aggregator {
    /// The gaps in the logs read ([`LogGaps`]).
    pub fn log_gaps(&self) -> LogGaps {
        let mut gaps = LogGaps::default();
        // A forked child may log its start before its parent logs the
        // fork: any image of the child's pid will do.
        let has_log = |key: &(u16, i64)| {
            self.lives
                .get(key)
                .is_some_and(|m| m.iter().any(|&(_, m)| m == Mark::Start))
        };
        for (key, marks) in &self.lives {
            let mut marks = marks.clone();
            marks.sort();
            let mut open = false;
            let mut exec_pending = None;
            for &(ts, m) in &marks {
                match m {
                    // An image never closed and followed by another of the
                    // same pid is a raw exec of a program the library
                    // loaded in again: seen, no gap.
                    Mark::Start => {
                        open = true;
                        exec_pending = None;
                    }
                    Mark::Exit => open = false,
                    Mark::ExecBefore(audited) => {
                        open = false;
                        exec_pending = Some((ts, audited));
                    }
                    Mark::ExecFailed => {
                        open = true;
                        exec_pending = None;
                    }
                    Mark::Forked(child) => {
                        if !has_log(&(key.0, child)) {
                            gaps.missing.push((key.0, child, "forked"));
                        }
                    }
                    Mark::Spawned(child) => {
                        if !has_log(&(key.0, child)) {
                            gaps.missing.push((key.0, child, "spawned"));
                        }
                    }
                }
            }
            if open {
                gaps.unclosed.insert(*key);
            }
            if let Some((_, true)) = exec_pending {
                gaps.missing.push((key.0, key.1, "exec"));
            }
        }
        gaps
    }
}

/// The dynamic loader's file name (`ld-linux-x86-64.so.2`, `ld64.so.2`),
/// as the library recognises it (`process::is_loader_name`).
pub fn is_loader(exe: &str) -> bool {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    (name.starts_with("ld-") || name.starts_with("ld64.so")) && name.contains(".so")
}

/// What makes two names one file ([`Aggregator::files`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FileKey {
    Inode(u64, u64),
    Path(PathBuf),
}

fn file_key(p: &str) -> FileKey {
    use std::os::unix::fs::MetadataExt;
    let path = std::path::Path::new(p);
    if !path.is_absolute() || ignorable(p) {
        return FileKey::Path(path.to_path_buf());
    }
    // Only regular files, not followed through a final symlink (a symlink
    // call writes the link, not its target: two `ln -s /etc/passwd`s are
    // two links). A FIFO or device is not opened, and a directory's inode
    // is no clobber.
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.is_file() {
            return FileKey::Inode(md.dev(), md.ino());
        }
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => match std::fs::canonicalize(dir) {
            Ok(d) => FileKey::Path(d.join(name)),
            Err(_) => FileKey::Path(path.to_path_buf()),
        },
        _ => FileKey::Path(path.to_path_buf()),
    }
}

/// Paths that are never a clobber: device files and kernel interfaces.
/// `/dev/shm` holds real files, shared between processes: not ignored.
fn ignorable(path: &str) -> bool {
    (path.starts_with("/dev/") && !path.starts_with("/dev/shm/"))
        || path.starts_with("/proc/")
        || path.starts_with("/sys/")
}

/// Calls `f` with `map[key]`, inserted (the key copied, the value default)
/// only when missing: events look keys up by `&str`, and most of them find
/// one already there.
fn with_slot<K, Q, V, R>(map: &mut HashMap<K, V>, key: &Q, f: impl FnOnce(&mut V) -> R) -> R
where
    K: Borrow<Q> + Hash + Eq,
    Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    V: Default,
{
    match map.get_mut(key) {
        Some(v) => f(v),
        None => f(map.entry(key.to_owned()).or_default()),
    }
}

/// A rogue group's key, `(object, vaddr)`, owned in the map and borrowed
/// from the event for a lookup: both hash and compare as the pair, so
/// `HashMap<(String, Option<u64>), _>` can be searched with a
/// `&dyn ComponentKey` built from the event's string.
trait ComponentKey {
    fn pair(&self) -> (&str, Option<u64>);
}

impl ComponentKey for (String, Option<u64>) {
    fn pair(&self) -> (&str, Option<u64>) {
        (&self.0, self.1)
    }
}

impl ComponentKey for (&str, Option<u64>) {
    fn pair(&self) -> (&str, Option<u64>) {
        (self.0, self.1)
    }
}

impl<'a> Borrow<dyn ComponentKey + 'a> for (String, Option<u64>) {
    fn borrow(&self) -> &(dyn ComponentKey + 'a) {
        self
    }
}

impl Hash for dyn ComponentKey + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // The same bytes as `(String, Option<u64>)::hash`.
        self.pair().hash(h)
    }
}

impl PartialEq for dyn ComponentKey + '_ {
    fn eq(&self, o: &Self) -> bool {
        self.pair() == o.pair()
    }
}

impl Eq for dyn ComponentKey + '_ {}

impl ToOwned for dyn ComponentKey + '_ {
    type Owned = (String, Option<u64>);
    fn to_owned(&self) -> Self::Owned {
        let (o, v) = self.pair();
        (o.to_string(), v)
    }
}

/// Moves the entries of `b` into `a`, combining those both hold with `f`.
fn merge_maps<K: Hash + Eq, V>(
    a: &mut HashMap<K, V>,
    b: HashMap<K, V>,
    mut f: impl FnMut(&mut V, V),
) {
    for (k, v) in b {
        match a.get_mut(&k) {
            Some(x) => f(x, v),
            None => {
                a.insert(k, v);
            }
        }
    }
}

fn add_counts(a: &mut BTreeMap<&'static str, u64>, b: BTreeMap<&'static str, u64>) {
    for (k, v) in b {
        *a.entry(k).or_default() += v;
    }
}

impl Aggregator {
    /// Folds in `o`, which holds the events that come after this one's:
    /// the result is the same as adding every event to one aggregator
    /// (first-seen and first-non-empty values come from `self`, the last
    /// exit status from `o`).
    pub fn merge(&mut self, o: Aggregator) {
        self.stats.merge(o.stats);
        merge_maps(&mut self.paths, o.paths, |a, b| {
            a.writers.extend(&b.writers);
            a.readers.extend(&b.readers);
        });
        merge_maps(&mut self.rogue, o.rogue, RogueAgg::absorb);
        merge_maps(&mut self.attempts, o.attempts, |a, b| {
            a.count += b.count;
            a.workers.extend(&b.workers);
            for (k, n) in b.calls {
                *a.calls.entry(k).or_default() += n;
            }
            if a.object.is_none() {
                a.object = b.object;
            }
        });
        merge_maps(&mut self.redirected, o.redirected, |a, b| {
            for (w, ts) in b {
                a.entry(w).or_default().extend(ts);
            }
        });
        for (k, b) in o.unaudited {
            let a = self.unaudited.entry(k).or_default();
            a.count += b.count;
            a.workers.extend(b.workers);
            if a.argv.is_empty() {
                a.argv = b.argv;
            }
        }
        for (w, b) in o.per_worker {
            let a = self.per_worker.entry(w).or_default();
            a.events += b.events;
            a.rogue += b.rogue;
        }
        for (k, w) in o.pid_worker {
            self.pid_worker.entry(k).or_insert(w);
        }
        self.exits.extend(o.exits);
        self.rogue_writes += o.rogue_writes;
        self.unclassified_writes += o.unclassified_writes;
        self.component_objects.extend(o.component_objects);
        self.log_stopped.extend(o.log_stopped);
        self.dropped_events += o.dropped_events;
        self.unresolved_frames += o.unresolved_frames;
        self.run_start_ns = match (self.run_start_ns, o.run_start_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (k, marks) in o.lives {
            self.lives.entry(k).or_default().extend(marks);
        }
    }

    pub fn add(&mut self, source: u16, ev: &Event<'_>) {
        let who = Who {
            source,
            rank: ev.rank,
            worker: ev.worker,
        };
        let c = self.per_worker.entry(who).or_default();
        c.events += 1;
        self.pid_worker.entry((source, ev.pid)).or_insert(ev.worker);
        match ev.kind {
            Kind::Process => self.add_process(source, who, ev),
            Kind::Access => self.add_access(who, ev),
            Kind::LogStopped => {
                let reason = ev.reason.as_deref().unwrap_or("unknown").to_string();
                self.log_stopped.insert((source, ev.pid), reason);
            }
        }
    }

    fn add_process(&mut self, source: u16, who: Who, ev: &Event<'_>) {
        // The supervisor's logs have no start or exit (docs/events.md).
        let mark = match &*ev.op {
            _ if ev.via.is_some() => None,
            "start" => Some(Mark::Start),
            "exit" => Some(Mark::Exit),
            // The dynamic loader run as a program may only print
            // (`ld.so --version`) and load no library: no image must follow.
            // A program handed to the seccomp supervisor has no log of
            // its own either: the supervisor's has no `start`.
            "exec" if ev.result.is_none() => Some(Mark::ExecBefore(
                ev.audited != Some(false)
                    && ev.supervised != Some(true)
                    && !ev.exe.as_deref().is_some_and(is_loader),
            )),
            "exec" => Some(Mark::ExecFailed),
            "fork" => ev.child.filter(|&c| c > 0).map(Mark::Forked),
            "spawn"
                if ev.result == Some(0)
                    && ev.audited != Some(false)
                    && ev.supervised != Some(true)
                    && !ev.exe.as_deref().is_some_and(is_loader) =>
            {
                ev.child.filter(|&c| c > 0).map(Mark::Spawned)
            }
            _ => None,
        };
        if let Some(m) = mark {
            self.lives
                .entry((source, ev.pid))
                .or_default()
                .push((ev.ts, m));
        }
        if ev.op == "start" {
            self.run_start_ns = Some(self.run_start_ns.map_or(ev.ts, |t| t.min(ev.ts)));
        }
        if ev.op == "exit" {
            if let Some(s) = ev.status {
                self.exits.insert((source, ev.pid), s);
            }
            self.dropped_events += ev.dropped.unwrap_or(0);
            self.unresolved_frames += ev.unresolved_frames.unwrap_or(0);
        }
        // A spawn that started a program the library cannot audit (and no
        // supervisor took) is as unaudited as such an exec.
        let started_unaudited = match &*ev.op {
            "exec" => true,
            "spawn" => ev.result == Some(0),
            _ => false,
        };
        if started_unaudited && ev.audited == Some(false) {
            let exe = ev.exe.as_deref().unwrap_or_default().to_string();
            let reason = ev
                .reason
                .as_deref()
                .unwrap_or("outcome not recorded")
                .to_string();
            let u = self.unaudited.entry((exe, reason)).or_default();
            u.count += 1;
            u.workers.insert(who);
            if u.argv.is_empty() {
                u.argv = ev.argv.iter().flatten().map(|a| a.to_string()).collect();
            }
        }
    }

    fn add_access(&mut self, who: Who, ev: &Event<'_>) {
        let write = ev.is_write_class();
        let action = ev.action.unwrap_or(Taken::None);
        if write && ev.verdict.is_none() {
            self.unclassified_writes += 1;
        }
        if let Some(obj) = ev.component.as_ref().and_then(|c| c.object.as_deref()) {
            if obj != self.last_component {
                if !self.component_objects.contains(obj) {
                    self.component_objects.insert(obj.to_string());
                }
                self.last_component.clear();
                self.last_component.push_str(obj);
            }
        }
        let shape = Shape::of(&ev.op);
        let first_path = ev.abs.as_deref().or(ev.path.as_deref()).unwrap_or_default();
        let second_path = ev.abs2.as_deref().or(ev.path2.as_deref());
        // Creating a directory overwrites nothing (docs/policy.md).
        let makes_directory = ev.op == "mkdir" || ev.op == "mkdirat";
        // The call failed by itself (not because the policy refused it):
        // it wrote nothing, an attempt rather than a write.
        let attempt = !ev.succeeded()
            && !matches!(action, Taken::Denied | Taken::RedirectFailed)
            && !failed_by_the_redirect(action, ev.errno.as_deref(), first_path, second_path);
        if ev.verdict == Some(Verdict::Rogue) && !makes_directory && attempt {
            let shown = match shape {
                Shape::Link | Shape::Symlink => second_path.unwrap_or(first_path),
                _ => first_path,
            };
            let comp = ev.component.as_ref().and_then(|c| c.object.as_deref());
            with_slot(&mut self.attempts, shown, |a| {
                a.count += 1;
                a.workers.insert(who);
                let errno = ev.errno.as_deref().unwrap_or("?");
                match a
                    .calls
                    .iter_mut()
                    .find(|((o, e), _)| *o == *ev.op && e == errno)
                {
                    Some((_, n)) => *n += 1,
                    None => {
                        a.calls.insert((ev.op.to_string(), errno.to_string()), 1);
                    }
                }
                if a.object.is_none() {
                    a.object = comp.map(str::to_string);
                }
            });
        } else if ev.verdict == Some(Verdict::Rogue) && !makes_directory {
            self.rogue_writes += 1;
            if let Some(c) = self.per_worker.get_mut(&who) {
                c.rogue += 1;
            }
            let comp = ev.component.as_ref();
            let key: &dyn ComponentKey = &(
                comp.and_then(|c| c.object.as_deref())
                    .unwrap_or("(unknown)"),
                comp.and_then(|c| c.vaddr),
            );
            // The paths the call wrote, each with its role and the other
            // path: a symlink's text and a link's source are not written.
            let written: [Option<WrittenPath>; 2] = match shape {
                Shape::Single => [Some((first_path, None, None)), None],
                Shape::Rename => [
                    Some((first_path, Some(Role::Source), second_path)),
                    second_path.map(|p2| (p2, Some(Role::Destination), Some(first_path))),
                ],
                Shape::Link | Shape::Symlink => [
                    Some((
                        second_path.unwrap_or(first_path),
                        Some(Role::Destination),
                        Some(first_path),
                    )),
                    None,
                ],
            };
            with_slot(&mut self.rogue, key, |g| {
                g.events += 1;
                if action.unmitigated() {
                    g.unmitigated += 1;
                }
                g.workers.insert(who);
                *g.actions.entry(action.as_str()).or_default() += 1;
                for (path, role, other) in written.into_iter().flatten() {
                    with_slot(&mut g.paths, path, |p| {
                        p.count += 1;
                        p.workers.insert(who);
                        *p.actions.entry(action.as_str()).or_default() += 1;
                        p.add_call(&ev.op, role, other, 1);
                    });
                }
            });
        }
        let redirected = action == Taken::Redirected;
        // The event's `target` belongs to the path the call writes first:
        // a link's or symlink's destination, else the first path.
        let (target_of, target) = match shape {
            Shape::Link | Shape::Symlink => {
                (second_path.unwrap_or(first_path), ev.target.as_deref())
            }
            _ => (first_path, ev.target.as_deref()),
        };
        // A redirected rename of a rogue write moves the worker's copy to
        // the worker's copy of the destination (both paths are redirected;
        // the event names the source's target only).
        let destination_redirected =
            redirected && shape == Shape::Rename && ev.verdict == Some(Verdict::Rogue);
        // A directory the worker made is no redirected file (and no
        // clobber when several workers make it); a read in a worker's
        // view (the fork-mode root reading its workers' outputs) wrote
        // nothing.
        if redirected && write && !makes_directory {
            if let Some(t) = target {
                with_slot(&mut self.redirected, target_of, |per| {
                    let ts = per.entry(who).or_default();
                    if !ts.contains(t) {
                        ts.insert(t.to_string());
                    }
                });
            }
            if let (true, Some(p2)) = (destination_redirected && ev.succeeded(), second_path) {
                with_slot(&mut self.redirected, p2, |per| {
                    per.entry(who).or_default();
                });
            }
        }
        if !ev.succeeded() || makes_directory || ev.op == "rmdir" {
            return;
        }
        // Where the bytes really went: a redirected access is not one of
        // the shared file.
        let (first, second) = match shape {
            Shape::Single | Shape::Rename => {
                let first = if redirected {
                    target
                } else {
                    ev.abs.as_deref()
                };
                let second = if shape == Shape::Rename && !destination_redirected {
                    ev.abs2.as_deref()
                } else {
                    None
                };
                (first, second)
            }
            // The source is only looked at (link) or not at all (symlink).
            Shape::Link | Shape::Symlink => (
                None,
                if redirected {
                    target
                } else {
                    ev.abs2.as_deref()
                },
            ),
        };
        for p in [first, second].into_iter().flatten() {
            if ignorable(p) {
                continue;
            }
            with_slot(&mut self.paths, p, |u| {
                if write {
                    u.writers.insert(who);
                } else {
                    u.readers.insert(who);
                }
            });
        }
    }

    /// The paths used, one entry per file whatever the names it was
    /// reached by (review finding F3): names of one regular file (hard
    /// links, symlinks on the way) are one entry, keyed by its (device,
    /// inode) when it still exists, else by its parent directory with
    /// symlinks resolved. Each entry is shown by the first of its names.
    /// With one writer in all, no two names can conflict, and the files
    /// are not looked at.
    fn files(&self) -> BTreeMap<String, PathUse> {
        let mut writers = WhoSet::default();
        for u in self.paths.values() {
            writers.extend(&u.writers);
            if writers.len() > 1 {
                break;
            }
        }
        if writers.len() <= 1 {
            return self
                .paths
                .iter()
                .map(|(p, u)| (p.clone(), u.clone()))
                .collect();
        }
        let mut by_file: HashMap<FileKey, (String, PathUse)> = HashMap::new();
        let mut names: Vec<&String> = self.paths.keys().collect();
        names.sort();
        for p in names {
            let u = &self.paths[p];
            let e = by_file
                .entry(file_key(p))
                .or_insert_with(|| (p.clone(), PathUse::default()));
            e.1.writers.extend(&u.writers);
            e.1.readers.extend(&u.readers);
        }
        by_file.into_values().collect()
    }

    pub fn merge_stats(&mut self, s: ReadStats) {
        self.stats.merge(s);
    }
}

/// Reads `files` (each with its log directory's index) into `agg`, with the
/// same result as reading them one after the other, on up to `threads`
/// threads: each file is folded into an aggregator of its own and those are
/// merged in file order. At most `2 * threads` files are read ahead of the
/// merge, so memory stays bounded by distinct paths. Returns the files that
/// could not be read (or not to the end), in order.
pub fn read_logs(
    agg: &mut Aggregator,
    files: &[(u16, PathBuf)],
    threads: usize,
) -> Vec<(PathBuf, std::io::Error)> {
    let read = |a: &mut Aggregator, (source, path): &(u16, PathBuf)| match crate::events::read_file(
        path,
        |ev| a.add(*source, ev),
    ) {
        Ok(s) => {
            a.merge_stats(s);
            None
        }
        Err(e) => Some(e),
    };
    let mut failed = Vec::new();
    let threads = threads.min(files.len());
    if threads <= 1 {
        for f in files {
            if let Some(e) = read(agg, f) {
                failed.push((f.1.clone(), e));
            }
        }
        return failed;
    }
    let ahead = 2 * threads;
    let (job_tx, job_rx) = std::sync::mpsc::channel::<usize>();
    let job_rx = std::sync::Mutex::new(job_rx);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        // Dropped when this closure ends, even by a panic: the readers then
        // find no more work and stop, so the scope can join them.
        let job_tx = job_tx;
        for _ in 0..threads {
            let (job_rx, done_tx) = (&job_rx, done_tx.clone());
            scope.spawn(move || loop {
                let Ok(i) = job_rx
                    .lock()
                    .map_err(drop)
                    .and_then(|r| r.recv().map_err(drop))
                else {
                    return;
                };
                // A panic is handed to the merging thread, which re-raises
                // it: waiting for this file would never end.
                let one = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut a = Aggregator::default();
                    let e = read(&mut a, &files[i]);
                    (a, e)
                }));
                if done_tx.send((i, one)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let mut sent = 0;
        while sent < files.len().min(ahead) {
            let _ = job_tx.send(sent);
            sent += 1;
        }
        let mut pending = BTreeMap::new();
        let mut next = 0;
        while next < files.len() {
            let Ok((i, one)) = done_rx.recv() else {
                break;
            };
            pending.insert(i, one);
            while let Some(one) = pending.remove(&next) {
                let (a, e) = one.unwrap_or_else(|p| std::panic::resume_unwind(p));
                agg.merge(a);
                if let Some(e) = e {
                    failed.push((files[next].1.clone(), e));
                }
                next += 1;
                if sent < files.len() {
                    let _ = job_tx.send(sent);
                    sent += 1;
                }
            }
        }
    });
    failed
}

/// The event-derived sections of the report, sorted for the reader.
#[derive(Debug, Default)]
pub struct Sections {
    pub rogue: Vec<RogueGroup>,
    pub attempts: Vec<Attempt>,
    pub conflicts: Vec<Conflict>,
    pub overlaps: Vec<Conflict>,
    pub redirected: Vec<Redirect>,
    pub averted: Vec<Conflict>,
    pub unaudited: Vec<Unaudited>,
    /// Paths in a log directory that the job wrote or removed, labelled.
    pub log_writes: Vec<String>,
}

/// A rogue group's first call site (lowest vaddr) and what it resolved to.
struct CallSite {
    vaddr: Option<u64>,
    resolved: crate::symbols::Resolved,
}

impl Aggregator {
    /// The rogue groups by component function: call sites named
    /// (`crate::symbols`), those in one function of one object merged. A
    /// site that cannot be named stays a group of its own.
    fn rogue_by_function(&self) -> Vec<((String, CallSite), RogueAgg)> {
        let mut symbols = crate::symbols::Symbols::for_run(self.run_start_ns);
        let mut sites: Vec<(&(String, Option<u64>), &RogueAgg)> = self.rogue.iter().collect();
        sites.sort_by(|a, b| a.0.cmp(b.0));
        let mut groups: Vec<((String, CallSite), RogueAgg)> = Vec::new();
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        for ((object, vaddr), g) in sites {
            let resolved = match vaddr {
                Some(v) => symbols.resolve(object, *v).clone(),
                None => Default::default(),
            };
            let function = resolved.symbol.clone();
            let site = CallSite {
                vaddr: *vaddr,
                resolved,
            };
            match function.map(|f| (object.clone(), f)) {
                Some(key) if index.contains_key(&key) => groups[index[&key]].1.absorb(g.clone()),
                Some(key) => {
                    index.insert(key, groups.len());
                    groups.push(((object.clone(), site), g.clone()));
                }
                None => groups.push(((object.clone(), site), g.clone())),
            }
        }
        groups
    }

    /// The event-derived sections, sorted for the reader: rogue components
    /// worst first, clobbers by reach.
    pub fn sections(&self, l: &Labels) -> Sections {
        let mut rogue: Vec<RogueGroup> = self
            .rogue_by_function()
            .into_iter()
            .map(|((object, site), g)| {
                let mut paths: Vec<RoguePath> = g
                    .paths
                    .iter()
                    .map(|(p, a)| {
                        let mut calls: Vec<CallUse> = a
                            .calls
                            .iter()
                            .map(|c| CallUse {
                                op: c.op.clone(),
                                role: c.role,
                                count: c.count,
                                counterpart: c.counterpart.as_deref().map(|p| l.path(p)),
                            })
                            .collect();
                        calls.sort_by(|a, b| b.count.cmp(&a.count).then(a.op.cmp(&b.op)));
                        RoguePath {
                            path: l.path(p),
                            count: a.count,
                            workers: l.whos(&a.workers),
                            actions: a.actions.clone(),
                            calls,
                        }
                    })
                    .collect();
                paths.sort_by(|a, b| {
                    b.workers
                        .len()
                        .cmp(&a.workers.len())
                        .then(b.count.cmp(&a.count))
                        .then(a.path.cmp(&b.path))
                });
                RogueGroup {
                    object: l.path(&object),
                    vaddr: site.vaddr,
                    symbol: site.resolved.symbol,
                    function: site.resolved.function,
                    file: site.resolved.file,
                    line: site.resolved.line,
                    unnamed: site.resolved.unnamed,
                    events: g.events,
                    unmitigated: g.unmitigated,
                    workers: l.whos(&g.workers),
                    actions: g.actions.clone(),
                    paths,
                }
            })
            .collect();
        // Worst first: writes that nothing stopped, then reach (workers),
        // then volume, then distinct paths; ties by name.
        rogue.sort_by(|a, b| {
            b.unmitigated
                .cmp(&a.unmitigated)
                .then(b.workers.len().cmp(&a.workers.len()))
                .then(b.events.cmp(&a.events))
                .then(b.paths.len().cmp(&a.paths.len()))
                .then(a.object.cmp(&b.object))
                .then(a.symbol.cmp(&b.symbol))
                .then(a.vaddr.cmp(&b.vaddr))
        });

        let mut attempts: Vec<Attempt> = self
            .attempts
            .iter()
            .map(|(p, a)| Attempt {
                path: l.path(p),
                count: a.count,
                workers: l.whos(&a.workers),
                calls: a
                    .calls
                    .iter()
                    .map(|((op, errno), n)| AttemptCall {
                        op: op.clone(),
                        errno: errno.clone(),
                        count: *n,
                    })
                    .collect(),
                object: a.object.as_deref().map(|o| l.path(o)),
            })
            .collect();
        attempts.sort_by(|a, b| b.count.cmp(&a.count).then(a.path.cmp(&b.path)));

        let mut conflicts = Vec::new();
        let mut overlaps = Vec::new();
        let mut log_writes = Vec::new();
        for (p, u) in &self.files() {
            let p = p.as_str();
            if l.is_log(p) && u.writers.len() > 0 {
                log_writes.push(l.path(p));
            }
            if l.is_own(p) {
                continue;
            }
            if u.writers.len() > 1 {
                conflicts.push(Conflict {
                    path: l.path(p),
                    kind: "clobber",
                    writers: l.whos(&u.writers),
                    readers: l.whos(&u.readers),
                    resolution: l.conflict_allowed(p).then_some("allowed"),
                });
            } else if let Some(w) = u.writers.iter().next() {
                // A worker's output read by someone else. The root writing
                // before it forks and workers reading is the normal pattern.
                if w.worker.is_some() && u.readers.iter().any(|r| r != w) {
                    let readers: BTreeSet<Who> =
                        u.readers.iter().filter(|r| *r != w).copied().collect();
                    overlaps.push(Conflict {
                        path: l.path(p),
                        kind: "write-read",
                        writers: l.whos(&u.writers),
                        readers: l.whos(&readers),
                        resolution: None,
                    });
                }
            }
        }
        let by_reach = |a: &Conflict, b: &Conflict| {
            b.writers
                .len()
                .cmp(&a.writers.len())
                .then(a.path.cmp(&b.path))
        };
        conflicts.sort_by(by_reach);
        overlaps.sort_by(by_reach);

        let mut originals: Vec<_> = self.redirected.iter().collect();
        originals.sort_unstable_by_key(|(orig, _)| *orig);
        let redirected = originals
            .iter()
            .map(|(orig, per)| Redirect {
                original: l.path(orig),
                targets: per
                    .iter()
                    .flat_map(|(w, ts)| ts.iter().map(move |t| (*w, t)))
                    .map(|(w, t)| RedirectTarget {
                        worker: l.who(w),
                        target: l.path(t),
                    })
                    .collect(),
            })
            .collect();
        // The clobbers redirection averted: originals redirected in more
        // than one worker.
        let averted = originals
            .iter()
            .filter(|(_, per)| per.len() > 1)
            .map(|(orig, per)| Conflict {
                path: l.path(orig),
                kind: "clobber",
                writers: l.whos(per.keys()),
                readers: Vec::new(),
                resolution: Some("redirected"),
            })
            .collect();

        let mut unaudited: Vec<Unaudited> = self
            .unaudited
            .iter()
            .map(|((exe, reason), u)| Unaudited {
                exe: l.path(exe),
                reason: reason.clone(),
                count: u.count,
                workers: l.whos(&u.workers),
                argv: u.argv.clone(),
            })
            .collect();
        unaudited.sort_by(|a, b| b.count.cmp(&a.count).then(a.exe.cmp(&b.exe)));
        Sections {
            rogue,
            attempts,
            conflicts,
            overlaps,
            redirected,
            averted,
            unaudited,
            log_writes: {
                log_writes.sort();
                log_writes
            },
        }
    }
}

/// A warning for each `components` glob that matches no object seen
/// writing (matched as the library does: the object's file name, or its
/// path), with the seen objects it was probably meant for.
fn unmatched_components(globs: &[String], seen: &HashSet<String>) -> Vec<String> {
    use mpaudit_core::glob::glob_match;
    if seen.is_empty() {
        return Vec::new();
    }
    let name = |o: &str| o.rsplit('/').next().unwrap_or(o).to_string();
    let mut out = Vec::new();
    for g in globs {
        let gb = g.as_bytes();
        let hit = seen
            .iter()
            .any(|o| glob_match(gb, o.as_bytes()) || glob_match(gb, name(o).as_bytes()));
        if hit {
            continue;
        }
        let stem = g.trim_end_matches('*');
        let mut near: Vec<String> = seen
            .iter()
            .map(|o| name(o))
            .filter(|n| !stem.is_empty() && (n.starts_with(stem) || n.contains(stem)))
            .collect();
        near.sort();
        near.dedup();
        let mut w = format!("components glob `{g}` matches no object seen writing");
        if !near.is_empty() {
            w += &format!(
                " (seen: {}; did you mean `{stem}*`?)",
                super::text::top(&near, 3)
            );
        }
        out.push(w);
    }
    out
}

impl Report {
    /// Fills the event sections and the summary's counts from `agg`. The
    /// exit status is decided later, once, by [`Report::conclude`].
    pub fn fill(&mut self, agg: &Aggregator, l: &Labels) {
        let sec = agg.sections(l);
        let s = &mut self.summary;
        s.log_files = agg.stats.files;
        s.events = agg.stats.events;
        s.skipped_lines = agg.stats.skipped;
        s.skipped_examples = agg.stats.examples.clone();
        s.rogue_writes = agg.rogue_writes;
        s.rogue_components = sec.rogue.len();
        s.attempts = sec.attempts.iter().map(|a| a.count).sum();
        s.conflicts = sec.conflicts.len();
        s.overlaps = sec.overlaps.len();
        s.redirected_paths = sec.redirected.len();
        s.unaudited = sec.unaudited.len();
        s.unclassified_writes = agg.unclassified_writes;
        s.log_stopped = agg
            .log_stopped
            .iter()
            .map(|(&(_, pid), reason)| LogStoppedProcess {
                pid,
                reason: reason.clone(),
            })
            .collect();
        s.dropped_events = agg.dropped_events;
        s.unresolved_frames = agg.unresolved_frames;
        s.averted = sec.averted.len();
        s.log_writes = sec.log_writes;
        s.warnings = unmatched_components(&l.components, &agg.component_objects);
        self.rogue = sec.rogue;
        self.attempts = sec.attempts;
        self.conflicts = sec.conflicts;
        self.overlaps = sec.overlaps;
        self.averted = sec.averted;
        self.redirected = sec.redirected;
        self.unaudited = sec.unaudited;
    }

    /// Adds the merges (a failed or refused one makes the exit status 3).
    pub fn set_merges(&mut self, outcomes: &[crate::merge::Outcome], l: &Labels) {
        self.merges = outcomes
            .iter()
            .map(|o| MergeReport {
                output: l.path(&o.output.display().to_string()),
                original: l.path(&o.group.original.display().to_string()),
                source: o.group.origin,
                inputs: o
                    .group
                    .inputs
                    .iter()
                    .map(|(k, p)| MergeInput {
                        worker: k.label(),
                        path: l.path(&p.display().to_string()),
                    })
                    .collect(),
                rule: o.rule.clone(),
                merger: o.merger.clone(),
                status: o.status,
                reason: o.reason.clone(),
                bytes: o.bytes,
                sha256: o.sha256.clone(),
            })
            .collect();
        let s = &mut self.summary;
        s.merges = self.merges.len();
        s.merge_failures = outcomes.iter().filter(|o| o.status.is_failure()).count();
    }
}

/// A redirected call that failed with ENAMETOOLONG although every name
/// the program gave fits (components of at most NAME_MAX bytes, the
/// whole under PATH_MAX): the name in the worker directory was too long
/// (the worker directory's prefix took the whole past PATH_MAX), and the bare call would have
/// written. A write the redirect broke, not an attempt that wrote
/// nothing by itself: it counts as a rogue write, never as "ok".
fn failed_by_the_redirect(
    action: Taken,
    errno: Option<&str>,
    first: &str,
    second: Option<&str>,
) -> bool {
    let fits = |p: &str| p.len() < 4096 && p.split('/').all(|c| c.len() <= 255);
    action == Taken::Redirected
        && errno == Some("ENAMETOOLONG")
        && fits(first)
        && second.map_or(true, fits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::parse_line;
    use crate::report::status::Coverage;
    use crate::report::text::component_name;

    fn access(worker: Option<u64>, op: &str, abs: &str, mode: &str, extra: &str) -> Event<'static> {
        let w = worker.map(|k| k.to_string()).unwrap_or("null".into());
        let create = mode != "read";
        let line = format!(
            r#"{{"v":1,"ts":1,"kind":"access","op":"{op}","pid":{},"ppid":1,"tid":1,"worker":{w},"path":"{abs}","abs":"{abs}","mode":"{mode}","create":{create},"truncate":false,"append":false,"flags":[],"result":3,"errno":null{extra}}}"#,
            100 + worker.unwrap_or(99)
        );
        // The event borrows from its line: leaked, as a test may keep it.
        let line: &'static str = Box::leak(line.into_boxed_str());
        parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn process(pid: i64, ts: u64, op: &str, extra: &str) -> Event<'static> {
        let line = format!(
            r#"{{"v":1,"ts":{ts},"kind":"process","op":"{op}","pid":{pid},"ppid":1,"tid":{pid},"worker":0{extra}}}"#
        );
        let line: &'static str = Box::leak(line.into_boxed_str());
        parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    // Review findings F4 and F5: a deleted log and a log with no closing
    // record are gaps, whatever order the files are read in.
    #[test]
    fn missing_and_unclosed_logs_are_gaps() {
        let events = [
            // pid 10 forks 11 (logged) and 12 (no log), execs an audited
            // program (new image, closed), then one with no log.
            process(10, 1, "start", ""),
            process(11, 2, "start", ""),
            process(10, 3, "fork", r#","child":11"#),
            process(11, 4, "exit", r#","status":0"#),
            process(10, 5, "fork", r#","child":12"#),
            process(10, 6, "exec", r#","result":null,"audited":true"#),
            process(10, 7, "start", ""),
            process(10, 8, "exec", r#","result":null,"audited":false"#),
            // pid 20: an exec that failed, then nothing (unclosed).
            process(20, 1, "start", ""),
            process(20, 2, "exec", r#","result":null,"audited":true"#),
            process(20, 3, "exec", r#","result":-1,"audited":true"#),
            // pid 30: audited exec and no image after it.
            process(30, 1, "start", ""),
            process(30, 2, "exec", r#","result":null,"audited":true"#),
            // pid 40: an exec handed to the supervisor: no image follows,
            // and none is missing.
            process(40, 1, "start", ""),
            process(
                40,
                2,
                "exec",
                r#","result":null,"audited":true,"supervised":true"#,
            ),
        ];
        for order in [false, true] {
            let mut a = Aggregator::default();
            let mut evs: Vec<&Event> = events.iter().collect();
            if order {
                evs.reverse();
            }
            for e in evs {
                a.add(0, e);
            }
            let g = a.log_gaps();
            assert_eq!(g.unclosed.iter().collect::<Vec<_>>(), [&(0, 20)]);
            assert_eq!(g.missing, [(0, 12, "forked"), (0, 30, "exec")]);
        }
    }

    // A spawn of a program no one audits is listed as an unaudited
    // process, as such an exec is; a failed one or a supervised one is not.
    #[test]
    fn an_unaudited_spawn_is_listed() {
        let mut a = Aggregator::default();
        for (pid, extra) in [
            (
                1,
                r#","child":2,"argv":["s"],"exe":"/x/s","result":0,"audited":false,"reason":"static""#,
            ),
            (
                3,
                r#","child":-1,"argv":["s"],"exe":"/x/s","result":2,"audited":true"#,
            ),
            (
                4,
                r#","child":5,"argv":["g"],"exe":"/x/g","result":0,"audited":true,"supervised":true"#,
            ),
        ] {
            a.add(0, &process(pid, 1, "spawn", extra));
        }
        let listed: Vec<_> = a
            .unaudited
            .iter()
            .map(|((e, r), u)| (e.as_str(), r.as_str(), u.count))
            .collect();
        assert_eq!(listed, [("/x/s", "static", 1)]);
    }

    fn rogue(worker: u64, abs: &str, obj: &str, vaddr: u64, action: &str) -> Event<'static> {
        let extra = format!(
            r#","component":{{"object":"{obj}","vaddr":{vaddr}}},"stack":[],"verdict":"rogue","action":"{action}""#
        );
        access(Some(worker), "openat", abs, "write", &extra)
    }

    fn labels() -> Labels {
        Labels {
            job_dir: Some(PathBuf::from("/job")),
            sources: vec!["logs".into()],
            ..Default::default()
        }
    }

    #[test]
    fn groups_rogue_writes_by_component_worst_first() {
        let mut a = Aggregator::default();
        // Legacy: 2 workers, logged (unmitigated).
        for w in [0, 1] {
            a.add(
                0,
                &rogue(
                    w,
                    "/job/summary.log",
                    "/job/lib/libLegacyAlg.so",
                    0x1139,
                    "logged",
                ),
            );
        }
        a.add(
            0,
            &rogue(
                0,
                "/job/other.txt",
                "/job/lib/libLegacyAlg.so",
                0x1139,
                "logged",
            ),
        );
        // Histo: many events but all redirected.
        for _ in 0..5 {
            a.add(
                0,
                &rogue(2, "/job/h.root", "/opt/libHist.so", 0x2000, "redirected"),
            );
        }
        let Sections { rogue: r, .. } = a.sections(&labels());
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].object, "lib/libLegacyAlg.so");
        // The objects do not exist: the call sites stay unnamed.
        assert_eq!((r[0].vaddr, r[0].function.as_deref()), (Some(0x1139), None));
        assert_eq!(
            component_name(&r[0]),
            "lib/libLegacyAlg.so+0x1139",
            "the text report's name"
        );
        assert_eq!((r[0].events, r[0].unmitigated), (3, 3));
        assert_eq!(r[0].workers, ["0", "1"]);
        assert_eq!(r[0].paths[0].path, "summary.log");
        assert_eq!(r[0].paths[0].workers, ["0", "1"]);
        assert_eq!(r[0].paths[1].path, "other.txt");
        assert_eq!(r[0].actions["logged"], 3);
        assert_eq!(r[1].object, "/opt/libHist.so");
        assert_eq!(r[1].actions["redirected"], 5);
        assert_eq!(a.rogue_writes, 8);
    }

    /// Two call sites in one function of a real object (this test binary)
    /// are one group, named by the function; a site in another function
    /// is a group of its own.
    #[test]
    fn call_sites_in_one_function_are_one_component() {
        use object::{Object, ObjectSymbol};
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let function = |part: &str| {
            file.symbols()
                .find(|s| s.name().is_ok_and(|n| n.contains(part)) && s.size() > 8)
                .map(|s| s.address())
                .unwrap_or_else(|| panic!("a symbol for {part}"))
        };
        let (one, other) = (
            function("relative_paths"),
            function("who_sets_keep_btree_order"),
        );
        let exe = exe.to_str().unwrap();
        let mut a = Aggregator::default();
        for (vaddr, path) in [
            (one + 1, "/job/a"),
            (one + 5, "/job/b"),
            (other + 1, "/job/c"),
        ] {
            a.add(0, &rogue(0, path, exe, vaddr, "logged"));
        }
        let Sections { rogue: r, .. } = a.sections(&labels());
        assert_eq!(r.len(), 2, "{r:#?}");
        let g = r.iter().find(|g| g.events == 2).expect("the merged group");
        assert_eq!(g.vaddr, Some(one + 1), "the first call site");
        assert!(
            g.function
                .as_deref()
                .is_some_and(|f| f.contains("::relative_paths")),
            "{g:?}"
        );
        assert!(
            g.symbol.as_deref().is_some_and(|s| s.starts_with("_ZN")),
            "{g:?}"
        );
        assert!(
            g.file
                .as_deref()
                .is_some_and(|f| f.ends_with("aggregate.rs"))
                && g.line.is_some(),
            "the test binary has line tables: {g:?}"
        );
        assert!(component_name(g).contains("relative_paths"));
    }

    #[test]
    fn conflicts_clobbers_and_write_read() {
        let mut a = Aggregator::default();
        a.add(0, &access(Some(0), "openat", "/job/out.root", "write", ""));
        a.add(0, &access(Some(1), "openat", "/job/out.root", "write", ""));
        a.add(0, &access(Some(0), "openat", "/job/w0.txt", "write", ""));
        a.add(0, &access(Some(1), "openat", "/job/w0.txt", "read", ""));
        a.add(0, &access(Some(0), "openat", "/job/own.txt", "write", ""));
        a.add(0, &access(Some(0), "openat", "/job/own.txt", "read", ""));
        a.add(0, &access(None, "openat", "/job/conf.txt", "write", ""));
        a.add(0, &access(Some(1), "openat", "/job/conf.txt", "read", ""));
        a.add(0, &access(Some(0), "openat", "/dev/null", "write", ""));
        a.add(0, &access(Some(1), "openat", "/dev/null", "write", ""));
        a.add(0, &access(Some(0), "mkdir", "/job/d", "write", ""));
        a.add(0, &access(Some(1), "mkdir", "/job/d", "write", ""));
        // A failed open clobbers nothing.
        let mut failed = access(Some(2), "openat", "/job/out2.root", "write", "");
        failed.result = Some(-1);
        failed.errno = Some("EACCES".into());
        a.add(0, &failed);
        a.add(0, &access(Some(3), "openat", "/job/out2.root", "write", ""));
        let sec = a.sections(&labels());
        let c = &sec.conflicts;
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].path.as_str(), c[0].kind), ("out.root", "clobber"));
        assert_eq!(c[0].writers, ["0", "1"]);
        // One writer and another reader: a lesser finding, kept apart.
        let o = &sec.overlaps;
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!((o[0].path.as_str(), o[0].kind), ("w0.txt", "write-read"));
        assert_eq!(o[0].readers, ["1"]);
    }

    // Regression: in fork mode the root's read of a worker's output, which
    // the library makes in the workers' view (action `redirected`, mode
    // `read`), was listed as a redirect of the root's and made the output
    // a "clobber averted", "written by workers root,0".
    #[test]
    fn a_read_in_a_workers_view_is_no_redirected_write() {
        let mut a = Aggregator::default();
        let target = r#","action":"redirected","target":"/job/mpaudit-workers/worker_0/out.txt""#;
        a.add(
            0,
            &access(
                None,
                "open64",
                "/job/out.txt",
                "read",
                &format!(r#","verdict":"read"{target}"#),
            ),
        );
        a.add(
            0,
            &access(
                Some(0),
                "open64",
                "/job/out.txt",
                "write",
                &format!(r#","verdict":"rogue"{target}"#),
            ),
        );
        let sec = a.sections(&labels());
        assert!(sec.averted.is_empty(), "{:?}", sec.averted);
        assert_eq!(sec.redirected.len(), 1);
        assert_eq!(sec.redirected[0].targets.len(), 1, "{:?}", sec.redirected);
        assert_eq!(sec.redirected[0].targets[0].worker, "0");
    }

    #[test]
    fn redirected_writes_are_not_clobbers() {
        let mut a = Aggregator::default();
        for w in [0u64, 1] {
            let extra = format!(
                r#","verdict":"declared","action":"redirected","target":"/job/mpaudit-workers/worker_{w}/out.root""#
            );
            a.add(
                0,
                &access(Some(w), "openat", "/job/out.root", "write", &extra),
            );
        }
        let mut rep = Report::default();
        rep.fill(&a, &labels());
        assert_eq!(rep.averted.len(), 1);
        assert_eq!(rep.averted[0].path, "out.root");
        assert_eq!(rep.averted[0].writers, ["0", "1"]);
        assert!(rep.to_text().contains(
            "clobbers averted by redirection (1):\n  out.root  written by workers 0,1\n"
        ));
        let Sections {
            conflicts: c,
            redirected: r,
            ..
        } = a.sections(&labels());
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].original, "out.root");
        assert_eq!(r[0].targets[1].worker, "1");
        assert_eq!(r[0].targets[1].target, "mpaudit-workers/worker_1/out.root");
        assert_eq!(a.rogue_writes, 0);
    }

    #[test]
    fn rename_writes_its_target() {
        let mut a = Aggregator::default();
        for w in [0u64, 1] {
            let extra = r#","path2":"/job/final.root","abs2":"/job/final.root""#;
            a.add(
                0,
                &access(Some(w), "rename", &format!("/job/tmp{w}"), "write", extra),
            );
        }
        let Sections { conflicts: c, .. } = a.sections(&labels());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "final.root");
    }

    #[test]
    fn unaudited_and_several_sources() {
        let mut a = Aggregator::default();
        let line = r#"{"v":1,"ts":1,"kind":"process","op":"exec","pid":5,"ppid":1,"tid":5,"worker":1,"argv":["/bin/su","-"],"exe":"/bin/su","cwd":"/","result":null,"errno":null,"audited":false,"reason":"setuid"}"#;
        a.add(0, &parse_line(line.as_bytes()).unwrap());
        a.add(1, &parse_line(line.as_bytes()).unwrap());
        a.add(0, &access(Some(0), "openat", "/shared/o", "write", ""));
        a.add(1, &access(Some(0), "openat", "/shared/o", "write", ""));
        let l = Labels {
            job_dir: None,
            sources: vec!["node1".into(), "node2".into()],
            ..Default::default()
        };
        let Sections {
            conflicts: c,
            unaudited: u,
            ..
        } = a.sections(&l);
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].count, u[0].reason.as_str()), (2, "setuid"));
        assert_eq!(u[0].workers, ["node1:1", "node2:1"]);
        assert_eq!(c[0].writers, ["node1:0", "node2:0"]);
        assert_eq!(c[0].path, "/shared/o");
    }

    #[test]
    fn keys_are_looked_up_borrowed_and_copied_once() {
        use std::hash::BuildHasher;
        let h =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        for (o, v) in [("a", None), ("a", Some(7u64)), ("", Some(0))] {
            let owned = (o.to_string(), v);
            let k: &dyn ComponentKey = &(o, v);
            assert_eq!(h.hash_one(&owned), h.hash_one(k), "{o:?} {v:?}");
        }
        let mut m: HashMap<(String, Option<u64>), u32> = HashMap::new();
        for (o, v) in [("a", None), ("a", Some(7u64)), ("a", None), ("b", Some(1))] {
            with_slot(&mut m, &(o, v) as &dyn ComponentKey, |n| *n += 1);
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m[&("a".to_string(), None)], 2);
        assert_eq!(m[&("a".to_string(), Some(7))], 1);
    }

    #[test]
    fn who_sets_keep_btree_order() {
        let mut x = 7u64;
        let mut set = WhoSet::default();
        let mut tree = BTreeSet::new();
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let w = Who {
                source: (x >> 60) as u16 % 3,
                rank: ((x >> 30) % 5 != 0).then_some((x >> 10) % 3),
                worker: ((x >> 40) % 7 != 0).then_some((x >> 20) % 9),
            };
            set.insert(w);
            tree.insert(w);
            assert!(set.iter().eq(tree.iter()));
        }
        assert_eq!(set.len(), tree.len());
    }

    #[test]
    fn redirected_originals_sorted_by_path() {
        let mut a = Aggregator::default();
        for (w, p) in [
            (1u64, "/job/b"),
            (0, "/job/a"),
            (1, "/job/a"),
            (0, "/job/c"),
            (0, "/job/b"),
        ] {
            let extra =
                format!(r#","verdict":"declared","action":"redirected","target":"/job/w{w}{p}""#);
            a.add(0, &access(Some(w), "openat", p, "write", &extra));
        }
        let Sections { redirected: r, .. } = a.sections(&labels());
        let got: Vec<(&str, Vec<&str>)> = r
            .iter()
            .map(|r| {
                let ts = r.targets.iter().map(|t| t.target.as_str()).collect();
                (r.original.as_str(), ts)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", vec!["w0/job/a", "w1/job/a"]),
                ("b", vec!["w0/job/b", "w1/job/b"]),
                ("c", vec!["w0/job/c"]),
            ]
        );
    }

    #[test]
    fn components_without_object_group_as_unknown() {
        let mut a = Aggregator::default();
        for comp in [
            r#","component":null"#,
            r#","component":{"object":null,"vaddr":null}"#,
            r#","component":{"object":"(unknown)","vaddr":null}"#,
            r#","component":{"object":null,"vaddr":5}"#,
            "",
        ] {
            let extra = format!(r#"{comp},"verdict":"rogue","action":"logged""#);
            a.add(0, &access(Some(0), "openat", "/job/x", "write", &extra));
        }
        let Sections { rogue: r, .. } = a.sections(&labels());
        let groups: Vec<_> = r
            .iter()
            .map(|g| (g.object.as_str(), g.vaddr, g.events))
            .collect();
        assert_eq!(groups, [("(unknown)", None, 4), ("(unknown)", Some(5), 1)]);
    }

    /// A pseudo-random mix of the events the aggregator treats apart.
    fn random_events(seed: u64, n: usize) -> Vec<(u16, Event<'static>)> {
        random_lines(seed, n)
            .into_iter()
            .map(|(source, line)| {
                let line: &'static str = Box::leak(line.into_boxed_str());
                let ev = parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"));
                (source, ev)
            })
            .collect()
    }

    /// The lines of `random_events`, with the index of their log directory.
    fn random_lines(seed: u64, n: usize) -> Vec<(u16, String)> {
        let mut x = seed;
        let mut pick = |k: usize| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize % k
        };
        let mut out = Vec::new();
        for _ in 0..n {
            let source = pick(2) as u16;
            let worker = [None, Some(0), Some(1), Some(2)][pick(4)];
            let w = worker.map_or("null".to_string(), |k| k.to_string());
            let pid = 100 + pick(5);
            let line = match pick(10) {
                0 => {
                    let argv = ["[]", r#"["/bin/su"]"#, r#"["/bin/su","-"]"#][pick(3)];
                    let reason = [r#","reason":"setuid""#, r#","reason":"static""#, ""][pick(3)];
                    format!(
                        r#"{{"v":1,"ts":1,"kind":"process","op":"exec","pid":{pid},"ppid":1,"tid":1,"worker":{w},"argv":{argv},"exe":"/bin/su","cwd":"/","result":null,"errno":null,"audited":false{reason}}}"#
                    )
                }
                1 => format!(
                    r#"{{"v":1,"ts":1,"kind":"process","op":"exit","pid":{pid},"ppid":1,"tid":1,"worker":{w},"status":{}}}"#,
                    pick(3)
                ),
                _ => {
                    let op = ["openat", "openat", "rename", "mkdir"][pick(4)];
                    let abs = ["/job/a", "/job/b", "/job/c", "/dev/null"][pick(4)];
                    let mode = ["read", "write", "readwrite"][pick(3)];
                    let res = [
                        r#""result":3,"errno":null"#,
                        r#""result":-1,"errno":"EACCES""#,
                    ][pick(2)];
                    let abs2 = ["", r#","path2":"d","abs2":"/job/d""#][pick(2)];
                    let policy = match pick(4) {
                        0 => String::new(),
                        1 => r#","verdict":"declared","action":"redirected","target":"/job/w/T""#
                            .replace('T', &pick(3).to_string()),
                        _ => {
                            let comp = [
                                r#""component":null"#,
                                r#""component":{"object":"/job/lib/libA.so","vaddr":4096}"#,
                                r#""component":{"object":"/job/lib/libB.so","vaddr":null}"#,
                            ][pick(3)];
                            let action = ["logged", "denied", "redirected"][pick(3)];
                            format!(
                                r#",{comp},"verdict":"rogue","action":"{action}","target":"/job/w/r{}""#,
                                pick(2)
                            )
                        }
                    };
                    format!(
                        r#"{{"v":1,"ts":1,"kind":"access","op":"{op}","pid":{pid},"ppid":1,"tid":1,"worker":{w},"path":"p","abs":"{abs}","mode":"{mode}","create":false,"truncate":false,{res}{abs2}{policy}}}"#
                    )
                }
            };
            out.push((source, line));
        }
        out
    }

    /// Everything the report and main.rs read from an aggregator.
    fn rendered(a: &Aggregator) -> String {
        let l = Labels {
            job_dir: Some(PathBuf::from("/job")),
            sources: vec!["one".into(), "two".into()],
            ..Default::default()
        };
        let mut r = Report::default();
        r.fill(a, &l);
        format!(
            "{}{}{:?}{:?}{:?}",
            r.to_json(),
            r.to_text(),
            a.per_worker,
            a.pid_worker,
            a.exits
        )
    }

    #[test]
    fn merging_in_order_is_adding_in_order() {
        for seed in 0..40 {
            let events = random_events(seed, 300);
            let mut whole = Aggregator::default();
            for (s, e) in &events {
                whole.add(*s, e);
            }
            // Cut into pieces of varied sizes (some empty), merged in order.
            let mut merged = Aggregator::default();
            let mut rest = &events[..];
            let mut k = seed as usize;
            while !rest.is_empty() {
                k = (k * 7 + 3) % 61;
                let (piece, tail) = rest.split_at(k.min(rest.len()));
                let mut a = Aggregator::default();
                for (s, e) in piece {
                    a.add(*s, e);
                }
                merged.merge(a);
                rest = tail;
            }
            assert_eq!(rendered(&merged), rendered(&whole), "seed {seed}");
        }
    }

    #[test]
    fn read_logs_gives_the_same_on_any_number_of_threads() {
        let dir = std::env::temp_dir().join(format!("mpaudit-read-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = Vec::new();
        for (i, chunk) in random_lines(7, 900).chunks(90).enumerate() {
            let path = dir.join(format!("mpaudit-{i}-1.jsonl"));
            let mut text: String = chunk.iter().map(|(_, l)| format!("{l}\n")).collect();
            text += "{\"v\":1,\"ts\":\n"; // a bad line in every file
            std::fs::write(&path, text).unwrap();
            files.push(((i % 2) as u16, path));
        }
        files.insert(4, (0, dir.join("mpaudit-9999-1.jsonl"))); // missing
        let mut want = None;
        for threads in 1..=4 {
            let mut a = Aggregator::default();
            let failed = read_logs(&mut a, &files, threads);
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].0, files[4].1);
            assert_eq!(
                (a.stats.files, a.stats.events, a.stats.skipped),
                (10, 900, 10)
            );
            let got = (rendered(&a), a.stats.examples.clone());
            assert!(got.1[0].contains("mpaudit-0-1.jsonl:91: "), "{:?}", got.1);
            match &want {
                None => want = Some(got),
                Some(w) => assert_eq!(&got, w, "{threads} threads"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_paths() {
        let l = labels();
        assert_eq!(l.path("/job/a/b.root"), "a/b.root");
        assert_eq!(l.path("/job"), ".");
        assert_eq!(l.path("/jobs/x"), "/jobs/x");
        assert_eq!(l.path("/tmp/x"), "/tmp/x");
    }

    #[test]
    fn report_fill_and_render() {
        let mut a = Aggregator::default();
        a.stats.files = 1;
        a.add(
            0,
            &rogue(
                0,
                "/job/summary.log",
                "/job/lib/libLegacyAlg.so",
                0x1139,
                "logged",
            ),
        );
        let mut r = Report::default();
        r.fill(&a, &labels());
        r.conclude(&Default::default());
        assert_eq!(r.summary.exit_code, 1);
        assert_eq!(r.summary.status, "rogue writes");
        let t = r.to_text();
        assert!(
            t.contains("lib/libLegacyAlg.so+0x1139: 1 write(s), workers 0, logged 1"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for k in [
            "summary",
            "workers",
            "rogue",
            "conflicts",
            "redirected",
            "averted",
            "merges",
            "unaudited",
        ] {
            assert!(j.get(k).is_some(), "{k}");
        }
        let mut r = Report::default();
        r.summary.job_failed = true;
        r.fill(&a, &labels());
        r.conclude(&Default::default());
        assert_eq!(r.summary.exit_code, 3);
    }

    /// The report of `a` as a run's would be concluded: one log file read,
    /// the runner's own directories and `allow` globs as given.
    fn concluded(a: &mut Aggregator, allow: &[&str], merged: &[&str]) -> Report {
        a.stats.files = a.stats.files.max(1);
        let l = Labels {
            job_dir: Some(PathBuf::from("/job")),
            sources: vec!["logs".into()],
            own_dirs: vec![PathBuf::from("/job/mpaudit-workers")],
            allow_conflicts: allow.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        };
        let mut r = Report::default();
        r.fill(a, &l);
        r.merges = merged
            .iter()
            .map(|p| MergeReport {
                output: p.to_string(),
                original: p.to_string(),
                source: crate::merge::Origin::Redirected,
                inputs: vec![],
                rule: None,
                merger: "concat".into(),
                status: crate::merge::Status::Merged,
                reason: None,
                bytes: None,
                sha256: None,
            })
            .collect();
        r.conclude(&Default::default());
        r
    }

    fn two_writers(path: &str) -> Aggregator {
        let mut a = Aggregator::default();
        for w in [0, 1] {
            let extra = r#","verdict":"allowed","action":"none""#;
            a.add(0, &access(Some(w), "openat", path, "write", extra));
        }
        a
    }

    // Regression: two workers writing one fixed name under /tmp (allowed
    // scratch for the library) were listed as a conflict, yet "ok".
    #[test]
    fn a_clobber_of_a_real_file_fails_the_audit() {
        for path in ["/tmp/fixed.txt", "/dev/shm/fixed", "/job/out.root"] {
            let r = concluded(&mut two_writers(path), &[], &[]);
            assert_eq!(
                (r.summary.exit_code, r.summary.status.as_str()),
                (1, "conflicts"),
                "{path}"
            );
            assert_eq!(r.summary.unresolved_conflicts, 1);
            assert!(r.to_text().contains("1 unresolved"), "{}", r.to_text());
        }
        // Devices and the workers' own directories are not conflicts.
        for path in ["/dev/null", "/dev/tty", "/job/mpaudit-workers/merge.log"] {
            let r = concluded(&mut two_writers(path), &[], &[]);
            assert_eq!(r.summary.exit_code, 0, "{path}: {:?}", r.conflicts);
            assert!(r.conflicts.is_empty());
        }
    }

    #[test]
    fn a_clobber_allowed_or_merged_does_not_fail_the_audit() {
        let r = concluded(&mut two_writers("/tmp/lock"), &["/tmp/lock"], &[]);
        assert_eq!(r.summary.exit_code, 0, "{:?}", r.conflicts);
        assert_eq!(r.conflicts[0].resolution, Some("allowed"));
        let r = concluded(&mut two_writers("/job/sub/a.txt"), &["*.txt"], &[]);
        assert_eq!(r.summary.exit_code, 0);
        let r = concluded(&mut two_writers("/job/sub/a.txt"), &["sub/*"], &[]);
        assert_eq!(r.summary.exit_code, 0);
        let r = concluded(&mut two_writers("/job/a.txt"), &["*.root"], &[]);
        assert_eq!(r.summary.exit_code, 1);
        let r = concluded(&mut two_writers("/job/hist.txt"), &[], &["hist.txt"]);
        assert_eq!(r.summary.exit_code, 0);
        assert_eq!(r.conflicts[0].resolution, Some("merged"));
        assert!(r.to_text().contains("(merged by a [merge] rule)"));
    }

    #[test]
    fn the_job_failing_wins_then_an_incomplete_audit() {
        let mut a = two_writers("/job/x");
        let mut r = concluded(&mut a, &[], &[]);
        assert_eq!(r.summary.exit_code, 1);
        r.unaudited.push(Unaudited {
            exe: "/bin/static".into(),
            reason: "static".into(),
            count: 1,
            workers: vec!["0".into()],
            argv: vec![],
        });
        r.conclude(&Default::default());
        assert_eq!(r.summary.exit_code, 4);
        assert_eq!(r.summary.incomplete[0].reason, "unaudited");
        let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(j["summary"]["incomplete"][0]["reason"], "unaudited");
        assert!(
            r.to_text().contains("incomplete audit: 1 exec(s)"),
            "{}",
            r.to_text()
        );
        r.summary.job_failed = true;
        r.conclude(&Default::default());
        assert_eq!(r.summary.exit_code, 3);
        // Nothing logged at all: incomplete, never "ok".
        let mut r = Report::default();
        r.fill(&Aggregator::default(), &labels());
        r.conclude(&Default::default());
        assert_eq!(r.summary.exit_code, 4);
        assert_eq!(r.summary.incomplete[0].reason, "no_library");
        // Lines the reader could not parse are events nobody judged.
        let mut r = concluded(&mut two_writers("/job/x"), &[], &[]);
        r.summary.skipped_lines = 1;
        r.conclude(&Default::default());
        assert_eq!(r.summary.exit_code, 4);
        assert_eq!(r.summary.incomplete[0].reason, "unparsed_events");
        // A process the runner started that logged nothing.
        let mut r = concluded(&mut Aggregator::default(), &[], &[]);
        r.conclude(&Coverage {
            unlogged: vec![("worker 1".into(), "./static".into())],
            ..Default::default()
        });
        assert_eq!(r.summary.exit_code, 4);
        assert_eq!(r.summary.incomplete[0].reason, "not_preloaded");
        // Events the supervisor could not write: the run said so on
        // stderr only, and exited 0 (an "ok" with writes missing).
        let mut r = concluded(&mut Aggregator::default(), &[], &[]);
        r.conclude(&Coverage {
            supervisor_lost_events: 2,
            ..Default::default()
        });
        assert_eq!(r.summary.exit_code, 4);
        assert_eq!(r.summary.incomplete[0].reason, "supervisor_lost_events");
    }

    // Regression: `ln -s /etc/passwd mylink` was a rogue write to, and with
    // two workers a clobber of, /etc/passwd.
    #[test]
    fn a_symlink_writes_its_link_not_its_target() {
        let mut a = Aggregator::default();
        for w in [0, 1] {
            let extra = format!(
                r#","path2":"mylink{w}","abs2":"/job/mylink{w}","verdict":"rogue","action":"logged""#
            );
            a.add(
                0,
                &access(Some(w), "symlinkat", "/etc/passwd", "write", &extra),
            );
        }
        let r = concluded(&mut a, &[], &[]);
        assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
        let paths: Vec<&str> = r.rogue[0].paths.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["mylink0", "mylink1"]);
        let call = &r.rogue[0].paths[0].calls[0];
        assert_eq!(
            (call.op.as_str(), call.role, call.counterpart.as_deref()),
            ("symlinkat", Some(Role::Destination), Some("/etc/passwd"))
        );
        let t = r.to_text();
        assert!(
            t.contains("mylink0  x1  workers 0  symlinkat destination (from /etc/passwd)"),
            "{t}"
        );
        assert!(!t.contains("/etc/passwd  x"), "{t}");
    }

    #[test]
    fn two_path_calls_list_both_paths_with_roles() {
        let mut a = Aggregator::default();
        let extra = r#","path2":"b","abs2":"/job/b","verdict":"rogue","action":"logged""#;
        a.add(0, &access(Some(0), "rename", "/job/a", "write", extra));
        let extra = r#","path2":"hard","abs2":"/job/hard","verdict":"rogue","action":"logged""#;
        a.add(0, &access(Some(0), "link", "/job/b", "write", extra));
        let r = concluded(&mut a, &[], &[]);
        let mut got: Vec<(String, String, Option<Role>, Option<String>)> = r.rogue[0]
            .paths
            .iter()
            .flat_map(|p| {
                p.calls
                    .iter()
                    .map(|c| (p.path.clone(), c.op.clone(), c.role, c.counterpart.clone()))
            })
            .collect();
        got.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        assert_eq!(
            got,
            [
                (
                    "a".into(),
                    "rename".into(),
                    Some(Role::Source),
                    Some("b".into())
                ),
                (
                    "b".into(),
                    "rename".into(),
                    Some(Role::Destination),
                    Some("a".into())
                ),
                (
                    "hard".into(),
                    "link".into(),
                    Some(Role::Destination),
                    Some("b".into())
                ),
            ]
        );
        assert_eq!(r.summary.rogue_writes, 2);
        assert!(
            r.to_text().contains("rename source (to b)"),
            "{}",
            r.to_text()
        );
    }

    // Regression: git's failed unlink(.git/MERGE_HEAD) and `mkdir -p` made
    // the exit status 1.
    #[test]
    fn failed_calls_are_attempts_and_mkdir_is_never_rogue() {
        let mut a = Aggregator::default();
        let mut failed = access(
            Some(0),
            "unlink",
            "/job/.git/MERGE_HEAD",
            "write",
            r#","verdict":"rogue","action":"logged""#,
        );
        failed.result = Some(-1);
        failed.errno = Some("ENOENT".into());
        a.add(0, &failed);
        a.add(
            0,
            &access(
                Some(0),
                "mkdir",
                "/job/d",
                "write",
                r#","verdict":"rogue","action":"logged""#,
            ),
        );
        // A denied write failed because of the policy: still a rogue write.
        let mut denied = access(
            Some(0),
            "openat",
            "/job/x",
            "write",
            r#","verdict":"rogue","action":"denied""#,
        );
        denied.result = Some(-1);
        denied.errno = Some("EACCES".into());
        a.add(0, &denied);
        let r = concluded(&mut a, &[], &[]);
        assert_eq!(r.summary.rogue_writes, 1);
        assert_eq!(r.rogue[0].paths[0].path, "x");
        assert_eq!(r.summary.attempts, 1);
        assert_eq!(r.attempts[0].path, ".git/MERGE_HEAD");
        assert_eq!(r.attempts[0].calls[0].errno, "ENOENT");
        assert!(r
            .to_text()
            .contains(".git/MERGE_HEAD  workers 0  unlink ENOENT x1"));
        let mut only_failures = Aggregator::default();
        only_failures.add(0, &failed);
        only_failures.add(
            0,
            &access(
                Some(0),
                "mkdir",
                "/job/d",
                "write",
                r#","verdict":"rogue","action":"logged""#,
            ),
        );
        assert_eq!(concluded(&mut only_failures, &[], &[]).summary.exit_code, 0);
    }

    // Regression: `echo > t.tmp; mv t.tmp final.txt` under redirect in two
    // workers gave "conflicts: final.txt" beside the averted clobber.
    #[test]
    fn a_redirected_rename_is_an_averted_clobber_only() {
        let mut a = Aggregator::default();
        for w in [0u64, 1] {
            let t = format!("/job/mpaudit-workers/worker_{w}/t.tmp");
            let open = format!(r#","verdict":"rogue","action":"redirected","target":"{t}""#);
            a.add(0, &access(Some(w), "openat", "/job/t.tmp", "write", &open));
            a.add(0, &access(Some(w), "openat", "/job/t.tmp", "read", &open));
            let mv = format!(
                r#","path2":"final.txt","abs2":"/job/final.txt","verdict":"rogue","action":"redirected","target":"{t}""#
            );
            a.add(0, &access(Some(w), "rename", "/job/t.tmp", "write", &mv));
        }
        let r = concluded(&mut a, &[], &[]);
        assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
        assert!(r.overlaps.is_empty(), "{:?}", r.overlaps);
        let averted: Vec<&str> = r.averted.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(averted, ["final.txt", "t.tmp"]);
    }
}
