//! The report as data: what `mpaudit run`, `exec` and `report` print, in
//! text or JSON (docs/report.md). Built by [`super::aggregate`], judged by
//! [`super::status`], rendered by [`super::text`] and [`super::json`].

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::memory::Peak;

/// Who did something: which log directory (index), which launcher rank
/// (None: no launcher) and which worker (None: outside any worker, e.g. the
/// root of fork mode before it forks). Worker k of rank 0 and worker k of
/// rank 1 are two workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Who {
    pub source: u16,
    pub rank: Option<u64>,
    pub worker: Option<u64>,
}

/// A set of workers in `Who` order, as a sorted `Vec`: the sets kept per
/// path hold a few workers each, and a `BTreeSet`'s node (11 slots) was

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
    /// `mpaudit merge`: the workers directory it merged, and how many
    /// worker directories it found there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers_dir: Option<String>,
    pub log_files: u64,
    pub events: u64,
    pub skipped_lines: u64,
    pub skipped_examples: Vec<String>,
    pub earlier_log_files_ignored: u64,
    pub rogue_writes: u64,
    pub rogue_components: usize,
    /// Failed calls that would have been rogue writes: nothing written.
    pub attempts: u64,
    pub conflicts: usize,
    /// Conflicts neither merged nor allowed: they make the exit status 1.
    pub unresolved_conflicts: usize,
    /// Paths one worker wrote and another read (a lesser finding).
    pub overlaps: usize,
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
    /// Stack frames in no known object (JIT code, glibc < 2.35): their
    /// writes may lack a component.
    pub unresolved_frames: u64,
    /// Paths in a log directory the job wrote, renamed or removed
    /// (labelled): the audit's own record was tampered with.
    pub log_writes: Vec<String>,
    /// Why the audit is incomplete (exit status 4); empty when it is not.
    pub incomplete: Vec<Incomplete>,
    /// `mpaudit report`: the runs reported (docs/report.md, "Runs").
    pub runs: Vec<RunRef>,
    /// Things that look wrong in the setup (a `components` glob that
    /// matches nothing seen), for a person; no effect on the exit status.
    pub warnings: Vec<String>,
}

/// A run a report covers, and how many runs its log directory holds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunRef {
    pub log_dir: String,
    pub id: String,
    /// Has `mpaudit-run-*.json` (a run of `mpaudit run`/`exec`), else
    /// LD_PRELOAD alone.
    pub recorded_by_runner: bool,
    pub runs_in_dir: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogStoppedProcess {
    pub pid: i64,
    /// `file_size_limit`, `no_space`, `no_descriptor`, `log_gone` or `io_error`.
    pub reason: String,
}

/// One reason the audit did not see everything (docs/report.md).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Incomplete {
    /// `"no_library"`, `"unaudited"`, …: stable, for programs.
    pub reason: &'static str,
    /// For a person: what was missed, and what to do about it.
    pub detail: String,
}

/// A worker's row; also read back from the run metadata (`worker_outcomes`
/// of `mpaudit-run-*.json`) by `mpaudit report`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct WorkerReport {
    /// Worker index; null for the root process of fork mode.
    pub worker: Option<usize>,
    /// The launcher rank it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<u64>,
    /// The log directory it came from, when a report reads several.
    pub log_dir: Option<String>,
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
    /// The calls that wrote it, most frequent first.
    pub calls: Vec<CallUse>,
}

/// A path's role in a two-path call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// rename's old name, link's existing file, symlink's text.
    Source,
    /// rename's new name, the link created by link or symlink.
    Destination,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Destination => "destination",
        }
    }
}

/// How a rogue path was written: `op` (`"openat"`, `"rename"`, …), the
/// path's `role` in a two-path call, and the `counterpart` (the call's other
/// path, first seen).
#[derive(Debug, Clone, Serialize)]
pub struct CallUse {
    pub op: String,
    pub role: Option<Role>,
    pub count: u64,
    pub counterpart: Option<String>,
}

/// Failed calls on a path that would have been rogue writes.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub path: String,
    pub count: u64,
    pub workers: Vec<String>,
    /// `{"op", "errno", "count"}`
    pub calls: Vec<AttemptCall>,
    pub object: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptCall {
    pub op: String,
    pub errno: String,
    pub count: u64,
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
    /// Why the call site is not named although its object may exist (it
    /// changed after the run started, is no regular file, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unnamed: Option<String>,
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
    /// Why a clobber does not fail the audit: `"merged"` (a `[merge]` rule
    /// merged the path) or `"allowed"` (`[audit] allow_conflicts`); null
    /// when it does (exit status 1).
    pub resolution: Option<&'static str>,
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
    /// SHA-256 of the merged file (hex): what the next run checks before
    /// it replaces the file.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub summary: Summary,
    pub workers: Vec<WorkerReport>,
    pub rogue: Vec<RogueGroup>,
    /// Failed calls that would have been rogue writes.
    pub attempts: Vec<Attempt>,
    /// Paths written by more than one worker (`kind` is "clobber").
    pub conflicts: Vec<Conflict>,
    /// Paths written by one worker and read by another ("write-read").
    pub overlaps: Vec<Conflict>,
    pub redirected: Vec<Redirect>,
    /// Clobbers that redirection averted: original paths redirected in
    /// more than one worker (`kind` is "clobber").
    pub averted: Vec<Conflict>,
    pub merges: Vec<MergeReport>,
    pub unaudited: Vec<Unaudited>,
}

/// Renders paths relative to the job directory, and worker identities.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    pub job_dir: Option<PathBuf>,
    /// Names of the log directories when there are several.
    pub sources: Vec<String>,
    /// The runner's own directories (workers and logs): writes there are
    /// never conflicts (a worker writing in another's directory is a rogue
    /// write already).
    pub own_dirs: Vec<PathBuf>,
    /// The log directories: every write there is tampering with the audit
    /// (`Summary::log_writes`).
    pub log_dirs: Vec<PathBuf>,
    /// `[audit] allow_conflicts`: clobbers of these paths are allowed.
    pub allow_conflicts: Vec<String>,
    /// `[audit] components`: each should match an object seen writing.
    pub components: Vec<String>,
}

/// A worker's name in the report: `3` or `root`, and under a launcher
/// `rank 1 worker 3` or `rank 1` (a rank's process outside any worker).
pub fn worker_label(rank: Option<u64>, worker: Option<u64>) -> String {
    match (rank, worker) {
        (None, Some(k)) => k.to_string(),
        (None, None) => "root".into(),
        (Some(r), Some(k)) => format!("rank {r} worker {k}"),
        (Some(r), None) => format!("rank {r}"),
    }
}

impl Labels {
    /// Inside the runner's own directories (workers, logs).
    pub fn is_own(&self, p: &str) -> bool {
        self.own_dirs.iter().any(|d| Path::new(p).starts_with(d))
    }
    /// Inside a log directory.
    pub fn is_log(&self, p: &str) -> bool {
        self.log_dirs.iter().any(|d| Path::new(p).starts_with(d))
    }
    /// Matched by an `allow_conflicts` glob, as `[audit]` globs match: the
    /// job-relative path or the absolute one (a glob without `/`: the name).
    pub fn conflict_allowed(&self, p: &str) -> bool {
        let rel = self
            .job_dir
            .as_deref()
            .and_then(|j| Path::new(p).strip_prefix(j).ok())
            .map(|r| r.as_os_str().as_bytes());
        self.allow_conflicts.iter().any(|g| {
            let g = g.as_bytes();
            rel.is_some_and(|rel| mpaudit_core::glob::glob_match(g, rel))
                || mpaudit_core::glob::glob_match(g, p.as_bytes())
        })
    }
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
        let base = worker_label(w.rank, w.worker);
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
    pub(super) fn whos<'w>(&self, s: impl IntoIterator<Item = &'w Who>) -> Vec<String> {
        s.into_iter().map(|w| self.who(*w)).collect()
    }
}
