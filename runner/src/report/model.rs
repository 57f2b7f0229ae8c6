//! The report as data: what `mpaudit run`, `exec` and `report` print, in
//! text or JSON (docs/report.md). Built by [`super::aggregate`], judged by
//! [`super::status`], rendered by [`super::text`] and [`super::json`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::memory::Peak;

/// Who did something: which log directory (index) and which worker (None:
/// outside any worker, e.g. the root of fork mode before it forks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Who {
    pub source: u16,
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
    pub symbol: Option<String>,
    pub demangled: Option<String>,
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
    pub(super) fn whos<'w>(&self, s: impl IntoIterator<Item = &'w Who>) -> Vec<String> {
        s.into_iter().map(|w| self.who(*w)).collect()
    }
}
