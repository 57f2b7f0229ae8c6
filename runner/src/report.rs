//! Aggregation of events into the report, and its text and JSON renderings
//! (docs/report.md). Memory is bounded by distinct paths, components and
//! processes, never by the number of events: events are folded in one by
//! one as the reader streams them.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::events::{Event, Kind, ReadStats, Taken, Verdict};
use crate::memory::Peak;

/// Exit status: 0 ok, 1 rogue writes, 3 job failed (wins over 1).
pub fn exit_code(job_failed: bool, rogue_writes: u64) -> u8 {
    if job_failed {
        3
    } else if rogue_writes > 0 {
        1
    } else {
        0
    }
}

/// Who did something: which log directory (index) and which worker (None:
/// outside any worker, e.g. the root of fork mode before it forks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Who {
    pub source: u16,
    pub worker: Option<u64>,
}

/// A set of workers in `Who` order, as a sorted `Vec`: the sets kept per
/// path hold a few workers each, and a `BTreeSet`'s node (11 slots) was
/// most of the report's memory and of its cache misses.
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

#[derive(Debug, Default)]
struct PathUse {
    writers: WhoSet,
    readers: WhoSet,
}

/// Per path of a rogue group: count, workers, actions taken.
type PathAgg = (u64, WhoSet, BTreeMap<&'static str, u64>);

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
            a.0 += b.0;
            a.1.extend(&b.1);
            add_counts(&mut a.2, b.2);
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
    /// Processes whose log stopped (`log_stopped`), with the reason.
    pub log_stopped: BTreeMap<(u16, i64), String>,
    /// Events processes could not log (the `dropped` of their `exit`).
    pub dropped_events: u64,
}

/// Paths that are never a clobber: devices, kernel interfaces.
fn ignorable(path: &str) -> bool {
    ["/dev/", "/proc/", "/sys/"]
        .iter()
        .any(|p| path.starts_with(p))
        || path == "/dev/null"
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
        self.log_stopped.extend(o.log_stopped);
        self.dropped_events += o.dropped_events;
    }

    pub fn add(&mut self, source: u16, ev: &Event<'_>) {
        let who = Who {
            source,
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
        if ev.op == "exit" {
            if let Some(s) = ev.status {
                self.exits.insert((source, ev.pid), s);
            }
            self.dropped_events += ev.dropped.unwrap_or(0);
        }
        if ev.op == "exec" && ev.audited == Some(false) {
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
        let shown_path = ev.abs.as_deref().or(ev.path.as_deref()).unwrap_or_default();
        if ev.verdict == Some(Verdict::Rogue) {
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
            with_slot(&mut self.rogue, key, |g| {
                g.events += 1;
                if action.unmitigated() {
                    g.unmitigated += 1;
                }
                g.workers.insert(who);
                *g.actions.entry(action.as_str()).or_default() += 1;
                with_slot(&mut g.paths, shown_path, |p| {
                    p.0 += 1;
                    p.1.insert(who);
                    *p.2.entry(action.as_str()).or_default() += 1;
                });
            });
        }
        if action == Taken::Redirected {
            if let Some(t) = ev.target.as_deref() {
                with_slot(&mut self.redirected, shown_path, |per| {
                    let ts = per.entry(who).or_default();
                    if !ts.contains(t) {
                        ts.insert(t.to_string());
                    }
                });
            }
        }
        if !ev.succeeded() || ev.op == "mkdir" || ev.op == "rmdir" {
            return;
        }
        // Where the bytes really went: a redirected write is not a clobber.
        let first = if write && action == Taken::Redirected {
            ev.target.as_deref()
        } else {
            ev.abs.as_deref()
        };
        let second = if write { ev.abs2.as_deref() } else { None };
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

// ---- the report ----

#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub status: String,
    pub exit_code: u8,
    pub job_failed: bool,
    pub stop_reason: Option<String>,
    pub job_dir: Option<String>,
    pub mode: Option<String>,
    pub workers: usize,
    pub wall_time_ms: Option<u64>,
    pub log_dirs: Vec<String>,
    pub log_files: u64,
    pub events: u64,
    pub skipped_lines: u64,
    pub skipped_examples: Vec<String>,
    pub earlier_log_files_ignored: u64,
    pub rogue_writes: u64,
    pub rogue_components: usize,
    pub conflicts: usize,
    pub redirected_paths: usize,
    pub unaudited: usize,
    pub unclassified_writes: u64,
    pub strays_killed: Vec<i32>,
    /// Paths merged back (or attempted), and how many of them failed.
    pub merges: usize,
    pub merge_failures: usize,
    /// Paths several workers wrote, kept apart by redirection.
    pub averted: usize,
    /// Processes whose log stopped (it could not grow), and the events
    /// they could not log: facts that make the audit incomplete.
    pub log_stopped: Vec<LogStoppedProcess>,
    pub dropped_events: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogStoppedProcess {
    pub pid: i64,
    /// `file_size_limit`, `no_space`, `no_descriptor`, `log_gone` or `io_error`.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct WorkerReport {
    /// Worker index; null for the root process of fork mode.
    pub worker: Option<usize>,
    pub pid: Option<i32>,
    pub exit_code: Option<i64>,
    pub signal: Option<i32>,
    pub signal_name: Option<String>,
    pub core_dumped: bool,
    pub timed_out: bool,
    pub stopped_by: Option<String>,
    pub spawn_error: Option<String>,
    pub wall_time_ms: Option<u64>,
    pub memory: Option<Peak>,
    pub events: u64,
    pub rogue_writes: u64,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stderr_tail: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoguePath {
    pub path: String,
    pub count: u64,
    pub workers: Vec<String>,
    pub actions: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RogueGroup {
    pub object: String,
    /// The call site's address in `object` (docs/events.md); of the first
    /// one when the function writes from several.
    pub vaddr: Option<u64>,
    /// The function as the object names it (mangled), its readable form,
    /// and the call's source location: see `crate::symbols`.
    pub symbol: Option<String>,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub events: u64,
    pub unmitigated: u64,
    pub workers: Vec<String>,
    pub actions: BTreeMap<&'static str, u64>,
    pub paths: Vec<RoguePath>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub path: String,
    /// "clobber": written by more than one; "write-read": written by one
    /// worker, read by another.
    pub kind: &'static str,
    pub writers: Vec<String>,
    pub readers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RedirectTarget {
    pub worker: String,
    pub target: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    pub original: String,
    pub targets: Vec<RedirectTarget>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unaudited {
    pub exe: String,
    pub reason: String,
    pub count: u64,
    pub workers: Vec<String>,
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MergeInput {
    pub worker: String,
    pub path: String,
}

/// One merge after the run (docs/report.md).
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    pub output: String,
    pub original: String,
    /// "redirected" (from the manifests) or "declared" (matched in the
    /// worker directories by a `[merge]` glob).
    pub source: crate::merge::Origin,
    pub inputs: Vec<MergeInput>,
    pub rule: Option<String>,
    pub merger: String,
    pub status: crate::merge::Status,
    pub reason: Option<String>,
    pub bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub summary: Summary,
    pub workers: Vec<WorkerReport>,
    pub rogue: Vec<RogueGroup>,
    pub conflicts: Vec<Conflict>,
    pub redirected: Vec<Redirect>,
    /// Clobbers that redirection averted: original paths redirected in
    /// more than one worker (`kind` is "clobber").
    pub averted: Vec<Conflict>,
    pub merges: Vec<MergeReport>,
    pub unaudited: Vec<Unaudited>,
}

/// `object function (file:line)`, as much of it as is known; an unnamed
/// call site is `object+0xvaddr`.
fn component_name(g: &RogueGroup) -> String {
    let mut s = match (&g.function, g.vaddr) {
        (Some(f), _) => format!("{} {f}", g.object),
        (None, Some(v)) => format!("{}+{v:#x}", g.object),
        (None, None) => g.object.clone(),
    };
    if let (Some(file), Some(line)) = (&g.file, g.line) {
        s += &format!(" ({file}:{line})");
    }
    s
}

/// Renders paths relative to the job directory, and worker identities.
pub struct Labels {
    pub job_dir: Option<PathBuf>,
    /// Names of the log directories when there are several.
    pub sources: Vec<String>,
}

impl Labels {
    pub fn path(&self, p: &str) -> String {
        if let Some(j) = &self.job_dir {
            if let Ok(rest) = Path::new(p).strip_prefix(j) {
                let r = rest.to_string_lossy();
                return if r.is_empty() {
                    ".".into()
                } else {
                    r.into_owned()
                };
            }
        }
        p.to_string()
    }
    pub fn who(&self, w: Who) -> String {
        let base = match w.worker {
            Some(k) => k.to_string(),
            None => "root".into(),
        };
        if self.sources.len() > 1 {
            format!(
                "{}:{base}",
                self.sources
                    .get(w.source as usize)
                    .map(String::as_str)
                    .unwrap_or("?")
            )
        } else {
            base
        }
    }
    fn whos<'w>(&self, s: impl IntoIterator<Item = &'w Who>) -> Vec<String> {
        s.into_iter().map(|w| self.who(*w)).collect()
    }
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
        let mut symbols = crate::symbols::Symbols::new();
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
    /// worst first, clobbers before write-read conflicts.
    pub fn sections(
        &self,
        l: &Labels,
    ) -> (
        Vec<RogueGroup>,
        Vec<Conflict>,
        Vec<Redirect>,
        Vec<Unaudited>,
    ) {
        let mut rogue: Vec<RogueGroup> = self
            .rogue_by_function()
            .into_iter()
            .map(|((object, site), g)| {
                let mut paths: Vec<RoguePath> = g
                    .paths
                    .iter()
                    .map(|(p, (n, ws, acts))| RoguePath {
                        path: l.path(p),
                        count: *n,
                        workers: l.whos(ws),
                        actions: acts.clone(),
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

        let mut conflicts = Vec::new();
        for (p, u) in &self.paths {
            if u.writers.len() > 1 {
                conflicts.push(Conflict {
                    path: l.path(p),
                    kind: "clobber",
                    writers: l.whos(&u.writers),
                    readers: l.whos(&u.readers),
                });
            } else if let Some(w) = u.writers.iter().next() {
                // A worker's output read by someone else. The root writing
                // before it forks and workers reading is the normal pattern.
                if w.worker.is_some() && u.readers.iter().any(|r| r != w) {
                    let readers: BTreeSet<Who> =
                        u.readers.iter().filter(|r| *r != w).copied().collect();
                    conflicts.push(Conflict {
                        path: l.path(p),
                        kind: "write-read",
                        writers: l.whos(&u.writers),
                        readers: l.whos(&readers),
                    });
                }
            }
        }
        conflicts.sort_by(|a, b| {
            (a.kind != "clobber")
                .cmp(&(b.kind != "clobber"))
                .then(b.writers.len().cmp(&a.writers.len()))
                .then(a.path.cmp(&b.path))
        });

        let mut redirected: Vec<_> = self.redirected.iter().collect();
        redirected.sort_unstable_by_key(|(orig, _)| *orig);
        let redirected = redirected
            .into_iter()
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
        (rogue, conflicts, redirected, unaudited)
    }
}

impl Report {
    /// Fills the event sections and the summary's counts from `agg`.
    pub fn fill(&mut self, agg: &Aggregator, l: &Labels) {
        let (rogue, conflicts, redirected, unaudited) = agg.sections(l);
        let s = &mut self.summary;
        s.log_files = agg.stats.files;
        s.events = agg.stats.events;
        s.skipped_lines = agg.stats.skipped;
        s.skipped_examples = agg.stats.examples.clone();
        s.rogue_writes = agg.rogue_writes;
        s.rogue_components = rogue.len();
        s.conflicts = conflicts.len();
        s.redirected_paths = redirected.len();
        s.unaudited = unaudited.len();
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
        s.exit_code = exit_code(s.job_failed, agg.rogue_writes);
        s.status = match s.exit_code {
            0 => "ok",
            1 => "rogue writes",
            _ => "job failed",
        }
        .into();
        self.rogue = rogue;
        self.conflicts = conflicts;
        self.averted = redirected
            .iter()
            .filter_map(|r| {
                let mut ws: Vec<String> = r.targets.iter().map(|t| t.worker.clone()).collect();
                ws.dedup();
                (ws.len() > 1).then(|| Conflict {
                    path: r.original.clone(),
                    kind: "clobber",
                    writers: ws,
                    readers: Vec::new(),
                })
            })
            .collect();
        self.summary.averted = self.averted.len();
        self.redirected = redirected;
        self.unaudited = unaudited;
    }

    /// Adds the merges; a failed or refused one makes the exit status 3.
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
                        worker: k.to_string(),
                        path: l.path(&p.display().to_string()),
                    })
                    .collect(),
                rule: o.rule.clone(),
                merger: o.merger.clone(),
                status: o.status,
                reason: o.reason.clone(),
                bytes: o.bytes,
            })
            .collect();
        let s = &mut self.summary;
        s.merges = self.merges.len();
        s.merge_failures = outcomes.iter().filter(|o| o.status.is_failure()).count();
        if s.merge_failures > 0 && s.exit_code != 3 {
            s.exit_code = 3;
            s.status = "merge failed".into();
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let s = &self.summary;
        o += &format!("mpaudit: {} (exit status {})\n", s.status, s.exit_code);
        if let Some(r) = &s.stop_reason {
            o += &format!("  stopped: {r}\n");
        }
        if let Some(j) = &s.job_dir {
            o += &format!("  job dir: {j}\n");
        }
        o += &format!(
            "  logs: {} event(s) in {} file(s) from {}\n",
            s.events,
            s.log_files,
            s.log_dirs.join(", ")
        );
        if s.skipped_lines > 0 {
            o += &format!(
                "  skipped {} unparseable line(s), e.g. {}\n",
                s.skipped_lines,
                s.skipped_examples.first().map(String::as_str).unwrap_or("")
            );
        }
        if !s.log_stopped.is_empty() || s.dropped_events > 0 {
            let which: Vec<String> = s
                .log_stopped
                .iter()
                .take(5)
                .map(|p| format!("pid {}: {}", p.pid, p.reason))
                .collect();
            o += &format!(
                "  incomplete: the log stopped in {} process(es) ({}{}); {} event(s) not logged\n",
                s.log_stopped.len(),
                which.join(", "),
                if s.log_stopped.len() > 5 { ", ..." } else { "" },
                s.dropped_events
            );
        }
        if s.earlier_log_files_ignored > 0 {
            o += &format!(
                "  ignored {} log file(s) from earlier runs in the log directory\n",
                s.earlier_log_files_ignored
            );
        }
        if s.unclassified_writes > 0 {
            o += &format!(
                "  {} write(s) carried no verdict (library without policy fields)\n",
                s.unclassified_writes
            );
        }
        if !s.strays_killed.is_empty() {
            o += &format!(
                "  stopped {} stray process(es) left behind by the job: {:?}\n",
                s.strays_killed.len(),
                s.strays_killed
            );
        }
        if !self.workers.is_empty() {
            o += "\nworkers:\n";
            for w in &self.workers {
                let name = w
                    .worker
                    .map(|k| format!("worker {k}"))
                    .unwrap_or_else(|| "root".into());
                let how = if let Some(e) = &w.spawn_error {
                    format!("could not start: {e}")
                } else if let Some(sig) = &w.signal_name {
                    format!(
                        "killed by {sig}{}",
                        if w.core_dumped { " (core dumped)" } else { "" }
                    )
                } else if let Some(c) = w.exit_code {
                    format!("exit {c}")
                } else {
                    "outcome not recorded".into()
                };
                let mut line = format!("  {name:<10} {how}");
                if w.timed_out {
                    line += " [timeout]";
                } else if let Some(b) = &w.stopped_by {
                    line += &format!(" [stopped: {b}]");
                }
                if let Some(ms) = w.wall_time_ms {
                    line += &format!("  {:.1}s", ms as f64 / 1000.0);
                }
                if let Some(m) = &w.memory {
                    if m.samples > 0 {
                        line += &format!(
                            "  mem peak pss {} private {} shared {}",
                            kib(m.peak_pss_kib),
                            kib(m.peak_private_kib),
                            kib(m.peak_shared_kib)
                        );
                    }
                }
                line += &format!("  events {}  rogue {}", w.events, w.rogue_writes);
                o += &line;
                o.push('\n');
                if !w.stderr_tail.is_empty() {
                    o += &format!(
                        "    last lines of {}:\n",
                        w.stderr.as_deref().unwrap_or("stderr")
                    );
                    for t in &w.stderr_tail {
                        o += &format!("    | {t}\n");
                    }
                }
            }
        }
        if !self.rogue.is_empty() {
            o += &format!(
                "\nrogue writes ({} in {} component(s), worst first):\n",
                s.rogue_writes,
                self.rogue.len()
            );
            for g in &self.rogue {
                o += &format!(
                    "  {}: {} write(s), workers {}, {}\n",
                    component_name(g),
                    g.events,
                    g.workers.join(","),
                    actions(&g.actions)
                );
                for p in &g.paths {
                    o += &format!(
                        "    {}  x{}  workers {}  {}\n",
                        p.path,
                        p.count,
                        p.workers.join(","),
                        actions(&p.actions)
                    );
                }
            }
        }
        if !self.conflicts.is_empty() {
            o += &format!("\nconflicts ({}):\n", self.conflicts.len());
            for c in &self.conflicts {
                match c.kind {
                    "clobber" => {
                        o += &format!("  {}  written by workers {}\n", c.path, c.writers.join(","))
                    }
                    _ => {
                        o += &format!(
                            "  {}  written by worker {}, read by {}\n",
                            c.path,
                            c.writers.join(","),
                            c.readers.join(",")
                        )
                    }
                }
            }
        }
        if !self.averted.is_empty() {
            o += &format!(
                "\nclobbers averted by redirection ({}):\n",
                self.averted.len()
            );
            for c in &self.averted {
                o += &format!("  {}  written by workers {}\n", c.path, c.writers.join(","));
            }
        }
        if !self.redirected.is_empty() {
            o += &format!("\nredirected ({}):\n", self.redirected.len());
            for r in &self.redirected {
                o += &format!("  {}\n", r.original);
                for t in &r.targets {
                    o += &format!("    worker {} -> {}\n", t.worker, t.target);
                }
            }
        }
        if !self.merges.is_empty() {
            o += &format!(
                "\nmerges ({}, {} failed):\n",
                self.merges.len(),
                s.merge_failures
            );
            for m in &self.merges {
                let ws: Vec<&str> = m.inputs.iter().map(|i| i.worker.as_str()).collect();
                let size = m.bytes.map(|b| format!(", {b} bytes")).unwrap_or_default();
                o += &format!(
                    "  {}  <- workers {}  {}: {}{size}\n",
                    m.output,
                    ws.join(","),
                    m.merger,
                    m.status.as_str()
                );
                if let Some(r) = &m.reason {
                    o += &format!("    {r}\n");
                }
            }
        }
        if !self.unaudited.is_empty() {
            o += &format!("\nunaudited processes ({}):\n", self.unaudited.len());
            for u in &self.unaudited {
                o += &format!(
                    "  {} ({}): {} exec(s), workers {}\n",
                    u.exe,
                    u.reason,
                    u.count,
                    u.workers.join(",")
                );
            }
        }
        o
    }
}

fn kib(k: u64) -> String {
    if k >= 1024 * 1024 {
        format!("{:.1}G", k as f64 / 1048576.0)
    } else if k >= 1024 {
        format!("{:.1}M", k as f64 / 1024.0)
    } else {
        format!("{k}K")
    }
}

fn actions(a: &BTreeMap<&'static str, u64>) -> String {
    a.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::parse_line;

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
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(false, 0), 0);
        assert_eq!(exit_code(false, 3), 1);
        assert_eq!(exit_code(true, 0), 3);
        assert_eq!(exit_code(true, 3), 3);
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
        let (r, _, _, _) = a.sections(&labels());
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
            function("exit_codes"),
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
        let (r, _, _, _) = a.sections(&labels());
        assert_eq!(r.len(), 2, "{r:#?}");
        let g = r.iter().find(|g| g.events == 2).expect("the merged group");
        assert_eq!(g.vaddr, Some(one + 1), "the first call site");
        assert!(
            g.function
                .as_deref()
                .is_some_and(|f| f.contains("::exit_codes")),
            "{g:?}"
        );
        assert!(
            g.symbol.as_deref().is_some_and(|s| s.starts_with("_ZN")),
            "{g:?}"
        );
        assert!(
            g.file.as_deref().is_some_and(|f| f.ends_with("report.rs")) && g.line.is_some(),
            "the test binary has line tables: {g:?}"
        );
        assert!(component_name(g).contains("exit_codes"));
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
        let (_, c, _, _) = a.sections(&labels());
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!((c[0].path.as_str(), c[0].kind), ("out.root", "clobber"));
        assert_eq!(c[0].writers, ["0", "1"]);
        assert_eq!((c[1].path.as_str(), c[1].kind), ("w0.txt", "write-read"));
        assert_eq!(c[1].readers, ["1"]);
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
        let (_, c, r, _) = a.sections(&labels());
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
        let (_, c, _, _) = a.sections(&labels());
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
        };
        let (_, c, _, u) = a.sections(&l);
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
        let (_, _, r, _) = a.sections(&labels());
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
        let (r, _, _, _) = a.sections(&labels());
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
        assert_eq!(r.summary.exit_code, 3);
    }
}
