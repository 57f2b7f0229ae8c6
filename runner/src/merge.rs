//! Closing the repair loop: after a run (or `mpaudit merge DIR` after a job
//! step), the per-worker files of a path are merged back into one file at
//! the path's original place (or below `--merge-dir`).
//!
//! Workers are every `worker_<k>/` found in the workers directory, and
//! every `rank_<r>/worker_<k>/` of a launcher's ranks
//! (mpaudit_core::map::worker_dir_for), whatever the configured count: a
//! fork-mode framework forks as many as it likes. Inputs come from two
//! places: the library's manifests (`worker_<k>/mpaudit-redirects.jsonl`,
//! one line per redirected file) and, for outputs the framework itself
//! writes per worker, the files inside the worker directories that a
//! `[merge]` glob matches. Only files changed since `since` count (worker
//! directories may hold an earlier run's). Names are bytes throughout.
//!
//! Every merge writes a temporary file next to its output and renames it
//! into place. Without `--force` an existing output is replaced only when
//! it is exactly what an earlier merge wrote there (the record
//! `<workers dir>/mpaudit-merged.json` holds each merged output's size and
//! SHA-256); anything else is refused (`renameat2(RENAME_NOREPLACE)`,
//! else a hard link, so that a file appearing meanwhile is not replaced
//! either). Each merged output is journaled the moment it is in place
//! (`mpaudit-merged.journal`), so a pass killed half way still tells the
//! next run what it wrote. A symlink the job made is merged as a symlink.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::control::{Control, Ended};
use crate::jobfile::{MergeRule, Merger};

/// Name of the library's per-worker manifest.
pub const MANIFEST: &str = "mpaudit-redirects.jsonl";
/// The record of what the merges wrote, in the workers directory.
pub const RECORD: &str = "mpaudit-merged.json";
/// Each output merged during a pass, one JSON line as soon as it is in
/// place, so that a pass that dies half way (killed, out of memory) still
/// tells the next run what it wrote; folded into [`RECORD`] at the end.
pub const JOURNAL: &str = "mpaudit-merged.journal";
/// Below this depth, and beyond this many files, a worker directory is not
/// searched further.
const MAX_DEPTH: usize = 32;
const MAX_FILES: usize = 100_000;
/// Longest file name (NAME_MAX on Linux file systems).
const NAME_MAX: usize = 255;

/// A worker directory's identity: `worker_<k>` directly in the workers
/// directory (a worker of this run, or a rank that is its own worker), or
/// `rank_<r>/worker_<k>` (worker k of launcher rank r).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId {
    pub rank: Option<u32>,
    pub worker: u32,
}

impl WorkerId {
    /// As the report names workers: `3`, or `rank 1 worker 0`.
    pub fn label(&self) -> String {
        match self.rank {
            None => self.worker.to_string(),
            Some(r) => format!("rank {r} worker {}", self.worker),
        }
    }
}

/// `<prefix><decimal>` with the canonical digits (no sign, no leading zero).
fn numbered(name: &OsStr, prefix: &str) -> Option<u32> {
    let digits = name.as_bytes().strip_prefix(prefix.as_bytes())?;
    let s = std::str::from_utf8(digits).ok()?;
    let n: u32 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

/// Subdirectories (not symlinks) of `dir` named `<prefix><n>`, by n.
fn numbered_dirs(dir: &Path, prefix: &str) -> Vec<(u32, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((numbered(&e.file_name(), prefix)?, e.path())))
        .collect();
    out.sort();
    out
}

/// Every worker directory of a workers directory: `worker_<k>/` (labelled
/// with `rank` when the directory is one rank's) and `rank_<r>/worker_<k>/`.
pub fn worker_dirs(workers_dir: &Path, rank: Option<u32>) -> Vec<(WorkerId, PathBuf)> {
    let mut out: Vec<(WorkerId, PathBuf)> = numbered_dirs(workers_dir, "worker_")
        .into_iter()
        .map(|(k, p)| (WorkerId { rank, worker: k }, p))
        .collect();
    let rank_prefix = String::from_utf8_lossy(mpaudit_core::map::RANK_PREFIX).into_owned();
    for (r, rdir) in numbered_dirs(workers_dir, &rank_prefix) {
        out.extend(numbered_dirs(&rdir, "worker_").into_iter().map(|(k, p)| {
            (
                WorkerId {
                    rank: Some(r),
                    worker: k,
                },
                p,
            )
        }));
    }
    out.sort();
    out
}

/// Everything a merge pass needs.
pub struct Setup<'a> {
    pub job_dir: &'a Path,
    /// Holds the worker directories (and the merge record).
    pub workers_dir: &'a Path,
    /// The launcher rank whose workers directory this is (`worker_<k>/`
    /// then belongs to that rank), if any.
    pub rank: Option<u32>,
    pub rules: &'a [MergeRule],
    pub merge_dir: Option<&'a Path>,
    pub force: bool,
    /// Files older than this are left over from an earlier run.
    pub since: SystemTime,
    /// Limit for a merge command.
    pub timeout: Option<Duration>,
    /// Time between TERM and KILL when a merge command is stopped.
    pub grace: Duration,
    /// The command's owner of signals and processes: merge commands then
    /// run as the workers do (own process group, stopped by timeout or
    /// Ctrl-C with TERM, grace, KILL, nothing left behind). `None` only
    /// in unit tests: plain child processes.
    pub control: Option<&'a Control>,
}

/// Where an input was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Listed in a worker's redirect manifest.
    Redirected,
    /// Matched by a `[merge]` glob inside a worker directory.
    Declared,
    /// Listed in a manifest whose target is gone while the original is
    /// still there: the worker removed (or renamed away) a shared file.
    /// Removals are not merged back; the report names them.
    Removed,
}

/// One path to merge: its original (absolute) place and its worker files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub original: PathBuf,
    pub origin: Origin,
    /// (worker, file), in worker order.
    pub inputs: Vec<(WorkerId, PathBuf)>,
}

/// What happened to one group, for the report (paths still absolute here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub group: Group,
    pub output: PathBuf,
    pub rule: Option<String>,
    pub merger: String,
    pub status: Status,
    pub reason: Option<String>,
    pub bytes: Option<u64>,
    /// SHA-256 of the merged file, in hex.
    pub sha256: Option<String>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Merged,
    /// The merger failed: worker files kept, exit status 3.
    Failed,
    /// The output exists, is not what an earlier merge wrote, and
    /// `--force` was not given: exit status 3.
    Refused,
    /// Not attempted (the job failed, or no rule for several workers).
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Merged => "merged",
            Status::Failed => "failed",
            Status::Refused => "refused",
            Status::Skipped => "skipped",
        }
    }
    /// Counts as a failed merge (exit status 3).
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::Refused)
    }
}

/// The first rule whose glob matches the original path (job-relative when
/// inside the job directory, else absolute; a glob without `/` matches the
/// file name), as `[audit]` globs do.
pub fn rule_for<'r>(
    rules: &'r [MergeRule],
    original: &Path,
    job_dir: &Path,
) -> Option<&'r MergeRule> {
    let abs = original.as_os_str().as_bytes();
    let rel = original
        .strip_prefix(job_dir)
        .ok()
        .map(|r| r.as_os_str().as_bytes());
    rules.iter().find(|r| {
        let g = r.glob.as_bytes();
        rel.is_some_and(|rel| mpaudit_core::glob::glob_match(g, rel))
            || mpaudit_core::glob::glob_match(g, abs)
    })
}

/// Where the merged file goes: the original path, or below `merge_dir`
/// (job-relative part kept; `_abs/<absolute path>` for outside paths).
pub fn output_for(original: &Path, job_dir: &Path, merge_dir: Option<&Path>) -> PathBuf {
    let Some(m) = merge_dir else {
        return original.to_path_buf();
    };
    match original.strip_prefix(job_dir) {
        Ok(rel) => m.join(rel),
        Err(_) => m
            .join("_abs")
            .join(original.strip_prefix("/").unwrap_or(original)),
    }
}

/// The inverse of the library's mapping (mpaudit_core::map): the path the
/// program meant by `full`, a file found in the worker directory `wdir`;
/// `None` for the worker directory's own files (its captured output, the
/// manifest, the tables), which stand for no job file.
pub fn original_of(full: &Path, wdir: &Path, job_dir: &Path) -> Option<PathBuf> {
    let target = full.as_os_str().as_bytes();
    let mut buf = vec![0u8; target.len() + job_dir.as_os_str().len() + 2];
    let n = mpaudit_core::map::unmap_from_worker(
        target,
        job_dir.as_os_str().as_bytes(),
        wdir.as_os_str().as_bytes(),
        &mut buf,
    )?;
    buf.truncate(n);
    Some(PathBuf::from(OsString::from_vec(buf)))
}

/// Expands a command template: `{output}` anywhere in an argument,
/// `{inputs}` (a whole argument) to one argument per input.
pub fn expand(template: &[String], output: &Path, inputs: &[PathBuf]) -> Vec<OsString> {
    let mut out = Vec::new();
    for a in template {
        if a == "{inputs}" {
            out.extend(inputs.iter().map(|p| p.as_os_str().to_owned()));
        } else if a.contains("{output}") {
            let mut s = OsString::new();
            let mut parts = a.split("{output}");
            if let Some(first) = parts.next() {
                s.push(first);
            }
            for rest in parts {
                s.push(output.as_os_str());
                s.push(rest);
            }
            out.push(s);
        } else {
            out.push(OsString::from(a));
        }
    }
    out
}

/// A regular file or a symlink (the job's own link, merged as a link)
/// changed since `since`. By its status-change time: a copy-up keeps the
/// original's modification time (a renamed or chmod'ed shared file, or
/// `cp -p`, would look older than the run), but a new inode, a rename or a
/// chmod always sets ctime, which no call can set back.
fn modified_since(p: &Path, since: SystemTime) -> bool {
    std::fs::symlink_metadata(p)
        .ok()
        .filter(|m| m.file_type().is_file() || m.file_type().is_symlink())
        .is_some_and(|m| changed_since(&m, since))
}

/// The status-change time of `m` is `since` or later (see
/// [`modified_since`]; directories too: `cp -a`, `tar x` or `touch -d`
/// set a new directory's mtime back, never its ctime).
fn changed_since(m: &std::fs::Metadata, since: SystemTime) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ctime = || {
        let secs = u64::try_from(m.ctime()).ok()?;
        let nanos = u32::try_from(m.ctime_nsec()).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    };
    ctime().is_some_and(|t| t >= since)
}

/// The first symlink among the directories leading to `output` below the
/// place merged outputs go (`--merge-dir`, else the job directory). The
/// originals are resolved names (the library records no symlink in
/// them), so such a link was made after the worker wrote below it: by
/// another worker (merged as a link just before) or by someone else
/// meanwhile. Writing through it would put the file somewhere no worker
/// wrote (outside the job directory, say).
fn symlink_on_the_way(output: &Path, s: &Setup) -> Option<PathBuf> {
    let root = [s.merge_dir, Some(s.job_dir)]
        .into_iter()
        .flatten()
        .find(|r| output.starts_with(r))?;
    let mut up: Vec<&Path> = output
        .ancestors()
        .skip(1)
        .take_while(|a| *a != root && a.starts_with(root))
        .collect();
    up.reverse();
    up.into_iter()
        .find(|a| std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()))
        .map(Path::to_path_buf)
}

/// One line of a manifest. Paths that are not UTF-8 come with their exact
/// bytes in hex beside the lossy string (docs/events.md).
#[derive(Deserialize)]
struct ManifestLine {
    original: String,
    target: String,
    #[serde(default)]
    original_hex: Option<String>,
    #[serde(default)]
    target_hex: Option<String>,
    /// The fork-mode root moved the worker's file back to `original` before
    /// writing it in place (docs/policy.md, "The fork-mode root's view of
    /// its workers"): not a removal, nothing to merge.
    #[serde(default)]
    taken: bool,
}

/// The bytes a hex string spells, if it does.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl ManifestLine {
    fn bytes(text: &str, hex: &Option<String>) -> Option<Vec<u8>> {
        match hex {
            Some(h) => from_hex(h),
            None => Some(text.as_bytes().to_vec()),
        }
    }
    /// The original and the target, byte for byte.
    fn paths(&self) -> Option<(PathBuf, PathBuf)> {
        let o = Self::bytes(&self.original, &self.original_hex)?;
        let t = Self::bytes(&self.target, &self.target_hex)?;
        Some((
            PathBuf::from(OsString::from_vec(o)),
            PathBuf::from(OsString::from_vec(t)),
        ))
    }
}

/// True when `target` is exactly where the library's shared mapping puts
/// `original` for worker directory `wdir`: a forged or stale line can then
/// neither merge from nor delete anything else.
fn target_is_mapped(original: &Path, target: &Path, job: &[u8], wdir: &Path) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    mpaudit_core::map::map_to_worker(
        original.as_os_str().as_bytes(),
        job,
        wdir.as_os_str().as_bytes(),
        &mut buf,
    )
    .is_some_and(|len| &buf[..len] == target.as_os_str().as_bytes())
}

/// The manifest lines of a worker directory that parse and map: (line
/// number, original, target); the others as warnings.
fn manifest_entries(
    wdir: &Path,
    job: &[u8],
    warnings: &mut Vec<String>,
) -> Vec<(PathBuf, PathBuf)> {
    manifest_lines(wdir, job, warnings)
        .into_iter()
        .filter(|(_, _, taken)| !taken)
        .map(|(original, target, _)| (original, target))
        .collect()
}

/// [`manifest_entries`], with the lines of files the fork-mode root took
/// back in place (`"taken":true`, third field true).
fn manifest_lines(
    wdir: &Path,
    job: &[u8],
    warnings: &mut Vec<String>,
) -> Vec<(PathBuf, PathBuf, bool)> {
    let manifest = wdir.join(MANIFEST);
    let Ok(f) = File::open(&manifest) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (n, line) in BufReader::new(f).split(b'\n').enumerate() {
        let Ok(line) = line else { break };
        let line: Vec<u8> = line.into_iter().filter(|&b| b != 0).collect();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Some((original, target, taken)) = serde_json::from_slice::<ManifestLine>(&line)
            .ok()
            .and_then(|m| m.paths().map(|(o, t)| (o, t, m.taken)))
        else {
            warnings.push(format!(
                "{}:{}: not a manifest line",
                manifest.display(),
                n + 1
            ));
            continue;
        };
        // A manifest cannot send a merge anywhere else.
        if !target_is_mapped(&original, &target, job, wdir) {
            warnings.push(format!(
                "{}:{}: target {} is not where {} maps; ignored",
                manifest.display(),
                n + 1,
                target.display(),
                original.display()
            ));
            continue;
        }
        out.push((original, target, taken));
    }
    out
}

/// Finds the groups to merge. Problems that do not stop the others (a
/// manifest line that does not parse or does not match the mapping) come
/// back as warnings.
pub fn collect(s: &Setup) -> (Vec<Group>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut groups: BTreeMap<PathBuf, Group> = BTreeMap::new();
    let mut removed: BTreeMap<PathBuf, Vec<(WorkerId, PathBuf)>> = BTreeMap::new();
    let job = s.job_dir.as_os_str().as_bytes();
    for (id, wdir) in worker_dirs(s.workers_dir, s.rank) {
        let (taken, lines): (Vec<_>, Vec<_>) = manifest_lines(&wdir, job, &mut warnings)
            .into_iter()
            .partition(|(_, _, taken)| *taken);
        for (original, target, _) in lines {
            // A directory the worker made is made again by make_directories,
            // not merged as a file.
            if std::fs::symlink_metadata(&target).is_ok_and(|md| md.is_dir()) {
                continue;
            }
            // A worker's write into another worker's directory was kept in
            // its own (docs/policy.md): merging it back would write over
            // the other worker's file.
            if original.starts_with(s.workers_dir) {
                warnings.push(format!(
                    "{}: written inside the workers directory; kept in {}, not merged back",
                    original.display(),
                    target.display()
                ));
                continue;
            }
            if !modified_since(&target, s.since) {
                // The worker's copy is gone and the shared file is not:
                // the worker removed it in its view.
                // Unless the fork-mode root took it back in place: the
                // shared file is the worker's, moved.
                let took = || taken.iter().any(|(o, t, _)| *o == original && *t == target);
                if std::fs::symlink_metadata(&target).is_err()
                    && std::fs::symlink_metadata(&original).is_ok()
                    && !took()
                {
                    let ids = removed.entry(original).or_default();
                    if !ids.iter().any(|(w, _)| *w == id) {
                        ids.push((id, target));
                    }
                }
                continue;
            }
            let g = groups.entry(original.clone()).or_insert_with(|| Group {
                original,
                origin: Origin::Redirected,
                inputs: Vec::new(),
            });
            if !g.inputs.iter().any(|(w, p)| *w == id && *p == target) {
                g.inputs.push((id, target));
            }
        }
        if s.rules.is_empty() {
            continue;
        }
        let mut found = 0;
        walk(&wdir, 0, &mut found, &mut |full| {
            let Some(original) = original_of(full, &wdir, s.job_dir) else {
                return;
            };
            if rule_for(s.rules, &original, s.job_dir).is_none() || !modified_since(full, s.since) {
                return;
            }
            let g = groups.entry(original.clone()).or_insert_with(|| Group {
                original,
                origin: Origin::Declared,
                inputs: Vec::new(),
            });
            if !g.inputs.iter().any(|(w, p)| *w == id && p == full) {
                g.inputs.push((id, full.to_path_buf()));
            }
        });
    }
    // Removals: one group each, unless a worker wrote the path (the write
    // is merged) or its directory was removed too (that one names it).
    let removed_dirs: Vec<PathBuf> = removed.keys().cloned().collect();
    for (original, inputs) in removed {
        if groups.contains_key(&original)
            || original.ancestors().skip(1).any(|a| {
                removed_dirs
                    .binary_search_by(|d| d.as_path().cmp(a))
                    .is_ok()
            })
        {
            continue;
        }
        groups.insert(
            original.clone(),
            Group {
                original,
                origin: Origin::Removed,
                inputs,
            },
        );
    }
    let mut out: Vec<Group> = groups.into_values().collect();
    for g in &mut out {
        g.inputs.sort();
    }
    (out, warnings)
}

/// Removes what an earlier run's redirection left in this run's worker
/// directories (`worker_<k>/` of `workers_dir`: the files its manifests
/// list, and the manifests), so that this run's appends do not land after
/// an earlier run's lines. Other ranks' `rank_<r>/` are theirs to clear.
/// Returns how many files were removed.
pub fn clear_previous(job_dir: &Path, workers_dir: &Path) -> usize {
    let mut removed = 0;
    let job = job_dir.as_os_str().as_bytes();
    for (_, wdir) in numbered_dirs(workers_dir, "worker_") {
        // Only targets the mapping puts inside this worker directory.
        for (_, target) in manifest_entries(&wdir, job, &mut Vec::new()) {
            if std::fs::symlink_metadata(&target).is_ok_and(|md| !md.is_dir())
                && std::fs::remove_file(&target).is_ok()
            {
                removed += 1;
            }
        }
        let _ = std::fs::remove_file(wdir.join(MANIFEST));
    }
    removed
}

fn walk(dir: &Path, depth: usize, found: &mut usize, f: &mut dyn FnMut(&Path)) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if *found >= MAX_FILES {
            return;
        }
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            walk(&e.path(), depth + 1, found, f);
        } else if t.is_file() {
            *found += 1;
            f(&e.path());
        }
    }
}

/// What the merges wrote, kept in the workers directory from one run (or
/// `mpaudit merge`) to the next: an output that still has the size and hash
/// recorded for it is the earlier merge's, and may be replaced.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// By the output's path bytes in hex.
    outputs: BTreeMap<String, Written>,
}

/// One line of [`JOURNAL`].
#[derive(Serialize, Deserialize)]
struct JournalLine {
    output_hex: String,
    written: Written,
}

/// A line of [`JOURNAL`] written before a merger starts: the temporary
/// file it writes. A pass killed meanwhile leaves it half written; the
/// next pass removes it.
#[derive(Serialize, Deserialize)]
struct TempLine {
    temp_hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Written {
    /// The path, for a person reading the file (lossy when not UTF-8).
    path: String,
    size: u64,
    sha256: String,
}

impl Record {
    /// The record, with what an interrupted pass journaled on top.
    fn load(workers_dir: &Path) -> Record {
        let mut r: Record = std::fs::read(workers_dir.join(RECORD))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Ok(j) = std::fs::read(workers_dir.join(JOURNAL)) {
            for line in j.split(|&b| b == b'\n') {
                if let Ok(e) = serde_json::from_slice::<JournalLine>(line) {
                    r.outputs.insert(e.output_hex, e.written);
                }
            }
        }
        r
    }
    /// Writes the record and drops the journal it now holds.
    fn save(&self, workers_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(workers_dir)?;
        let path = workers_dir.join(RECORD);
        let tmp = workers_dir.join(format!(".{RECORD}.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())?;
        std::fs::rename(&tmp, path)?;
        match std::fs::remove_file(workers_dir.join(JOURNAL)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
    /// Appends one merged output to the journal, synced.
    fn journal(workers_dir: &Path, output: &Path, w: &Written) -> std::io::Result<()> {
        let line = serde_json::to_vec(&JournalLine {
            output_hex: to_hex(output.as_os_str().as_bytes()),
            written: w.clone(),
        })
        .map_err(std::io::Error::other)?;
        Self::append(workers_dir, line)
    }
    /// Appends the temporary file a merger is about to write, synced.
    fn journal_temp(workers_dir: &Path, temp: &Path) -> std::io::Result<()> {
        let line = serde_json::to_vec(&TempLine {
            temp_hex: to_hex(temp.as_os_str().as_bytes()),
        })
        .map_err(std::io::Error::other)?;
        Self::append(workers_dir, line)
    }
    /// The temporary files an interrupted pass journaled.
    fn journaled_temps(workers_dir: &Path) -> Vec<PathBuf> {
        let Ok(j) = std::fs::read(workers_dir.join(JOURNAL)) else {
            return Vec::new();
        };
        j.split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice::<TempLine>(l).ok())
            .filter_map(|t| from_hex(&t.temp_hex))
            .map(|b| PathBuf::from(OsString::from_vec(b)))
            .collect()
    }
    fn append(workers_dir: &Path, mut line: Vec<u8>) -> std::io::Result<()> {
        line.push(b'\n');
        std::fs::create_dir_all(workers_dir)?;
        let mut f = File::options()
            .create(true)
            .append(true)
            .open(workers_dir.join(JOURNAL))?;
        f.write_all(&line)?;
        f.sync_data()
    }
    fn get(&self, output: &Path) -> Option<&Written> {
        self.outputs.get(&to_hex(output.as_os_str().as_bytes()))
    }
    fn set(&mut self, output: &Path, w: Written) {
        self.outputs
            .insert(to_hex(output.as_os_str().as_bytes()), w);
    }
}

/// Size and SHA-256 (hex) of a regular file, not following a symlink;
/// of a symlink, its text's length and `symlink:` + the SHA-256 of its
/// text (never a file's).
fn fingerprint(p: &Path) -> Option<(u64, String)> {
    let md = std::fs::symlink_metadata(p).ok()?;
    if md.file_type().is_symlink() {
        let text = std::fs::read_link(p).ok()?;
        let text = text.as_os_str().as_bytes();
        let sha = to_hex(&Sha256::digest(text));
        return Some((text.len() as u64, format!("symlink:{sha}")));
    }
    if !md.file_type().is_file() {
        return None;
    }
    let mut f = File::open(p).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Some((size, to_hex(&h.finalize())))
}

/// Runs every merge (or, when the job failed, reports them as skipped).
/// Makes in the job directory (or below `--merge-dir`) each directory a
/// worker made (a redirected mkdir: a manifest line whose target is a
/// directory), parents first, with the worker's mode, so that a directory
/// the job left empty comes back too; a directory that exists already is
/// left as it is. Problems come back as warnings.
pub fn make_directories(s: &Setup) -> Vec<String> {
    let mut warnings = Vec::new();
    let job = s.job_dir.as_os_str().as_bytes();
    let mut dirs: BTreeMap<PathBuf, u32> = BTreeMap::new();
    for (_, wdir) in worker_dirs(s.workers_dir, s.rank) {
        for (original, target) in manifest_entries(&wdir, job, &mut Vec::new()) {
            let Ok(md) = std::fs::symlink_metadata(&target) else {
                continue;
            };
            // Made (or changed) by this run: by ctime, as files are.
            let recent = changed_since(&md, s.since);
            if md.is_dir() && !original.starts_with(s.workers_dir) && recent {
                dirs.entry(original)
                    .or_insert(md.permissions().mode() & 0o7777);
            }
        }
    }
    // Sorted paths put a parent before its children.
    for (original, mode) in dirs {
        let output = output_for(&original, s.job_dir, s.merge_dir);
        match std::fs::symlink_metadata(&output) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => {
                warnings.push(format!(
                    "{}: a worker made a directory there, but it exists and is no directory; not made",
                    output.display()
                ));
                continue;
            }
            Err(_) => {}
        }
        if let Some(link) = symlink_on_the_way(&output, s) {
            warnings.push(format!(
                "{}: a worker made a directory there, but {} is now a symlink; not made through it",
                output.display(),
                link.display()
            ));
            continue;
        }
        let made = std::fs::create_dir_all(&output).and_then(|()| {
            std::fs::set_permissions(&output, std::fs::Permissions::from_mode(mode))
        });
        if let Err(e) = made {
            warnings.push(format!(
                "cannot make the directory {}: {e}",
                output.display()
            ));
        }
    }
    warnings
}

pub fn run(s: &Setup, job_failed: bool) -> (Vec<Outcome>, Vec<String>) {
    let (groups, mut warnings) = collect(s);
    if !job_failed {
        warnings.extend(make_directories(s));
    }
    warnings.extend(remove_interrupted_temps(s.workers_dir));
    let mut record = Record::load(s.workers_dir);
    let mut recorded = false;
    let mut out = Vec::new();
    for g in groups {
        // A stop request between two merges (Ctrl-C, TERM) ends the pass.
        let interrupted = s.control.and_then(|c| {
            c.poll();
            c.interrupted()
        });
        let output = output_for(&g.original, s.job_dir, s.merge_dir);
        let rule = rule_for(s.rules, &g.original, s.job_dir);
        let (merger, label) = match rule {
            _ if g.origin == Origin::Removed => (None, "none".into()),
            Some(r) => (Some(r.merger.clone()), r.merger.describe()),
            None if g.inputs.len() == 1 => (
                Some(Merger::First),
                "first (only one worker wrote it)".into(),
            ),
            None => (None, "none".into()),
        };
        let through = merger.as_ref().and_then(|_| symlink_on_the_way(&output, s));
        let mut o = Outcome {
            group: g,
            output,
            rule: rule.map(|r| r.glob.clone()),
            merger: label,
            status: Status::Skipped,
            reason: None,
            bytes: None,
            sha256: None,
        };
        match merger {
            _ if o.group.origin == Origin::Removed => {
                let who: Vec<String> = o.group.inputs.iter().map(|(w, _)| w.label()).collect();
                o.reason = Some(format!(
                    "removed (or renamed away) by worker(s) {} in its view; removals are not \
                     merged back: the original is left in place",
                    who.join(",")
                ));
            }
            _ if job_failed => o.reason = Some("the job failed; worker files left in place".into()),
            _ if interrupted.is_some() => {
                o.status = Status::Failed;
                o.reason = Some(format!(
                    "not attempted: mpaudit was interrupted ({}); worker files left in place",
                    interrupted.map(|s| s.as_str()).unwrap_or_default()
                ));
            }
            None => {
                o.reason = Some(format!(
                "no [merge] rule matches it and {} workers wrote it; worker files left in place",
                o.group.inputs.len()
            ))
            }
            Some(_) if through.is_some() => {
                let link = through.unwrap_or_default();
                o.status = Status::Failed;
                o.reason = Some(format!(
                    "{} is a symlink made after the workers wrote below it (by another worker, \
                     or since): not merged through it; worker files left in place",
                    link.display()
                ));
            }
            Some(m) => {
                let inputs: Vec<PathBuf> = o.group.inputs.iter().map(|(_, p)| p.clone()).collect();
                let replace = if s.force {
                    Replace::Always
                } else {
                    match record.get(&o.output) {
                        Some(w) => Replace::IfStill(w.size, w.sha256.clone()),
                        None => Replace::Never,
                    }
                };
                match merge_one(&m, &inputs, &o.output, Some(&o.group.original), replace, s) {
                    Ok((bytes, sha256)) => {
                        o.status = Status::Merged;
                        o.bytes = Some(bytes);
                        let w = Written {
                            path: o.output.display().to_string(),
                            size: bytes,
                            sha256: sha256.clone(),
                        };
                        if let Err(e) = Record::journal(s.workers_dir, &o.output, &w) {
                            warnings.push(format!(
                                "cannot journal the merge of {} in {}: {e}",
                                o.output.display(),
                                s.workers_dir.join(JOURNAL).display()
                            ));
                        }
                        record.set(&o.output, w);
                        recorded = true;
                        o.sha256 = Some(sha256);
                    }
                    Err(Refusal::Exists) => {
                        o.status = Status::Refused;
                        o.reason = Some(format!(
                            "{} already exists and no earlier merge wrote it (the job, or \
                             someone else, did): not replaced (use --force to replace it, or \
                             --merge-dir); worker files left in place",
                            o.output.display()
                        ));
                    }
                    Err(Refusal::Changed) => {
                        o.status = Status::Refused;
                        o.reason = Some(format!(
                            "{} was written by an earlier merge but has changed since: not \
                             replaced (use --force to replace it, or --merge-dir); worker \
                             files left in place",
                            o.output.display()
                        ));
                    }
                    Err(Refusal::Failed(why)) => {
                        o.status = Status::Failed;
                        o.reason = Some(format!("{why}; worker files left in place"));
                    }
                }
            }
        }
        out.push(o);
    }
    if recorded {
        if let Err(e) = record.save(s.workers_dir) {
            warnings.push(format!(
                "cannot record the merged outputs in {}: {e} (the next run will refuse to \
                 replace them)",
                s.workers_dir.join(RECORD).display()
            ));
        }
    }
    (out, warnings)
}

/// Removes the temporary files of merges a killed pass left half
/// written (journaled by [`merge_one`] before each merger ran), unless
/// the process named in the file (`.mpaudit-merge-<pid>…`) still runs.
fn remove_interrupted_temps(workers_dir: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    for t in Record::journaled_temps(workers_dir) {
        let Some(pid) = t.file_name().and_then(|n| {
            let rest = n.as_bytes().strip_prefix(b".mpaudit-merge-")?;
            let digits: Vec<u8> = rest
                .iter()
                .copied()
                .take_while(u8::is_ascii_digit)
                .collect();
            std::str::from_utf8(&digits).ok()?.parse::<i32>().ok()
        }) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = pid == std::process::id() as i32 || unsafe { libc::kill(pid, 0) } == 0;
        let is_file = std::fs::symlink_metadata(&t)
            .is_ok_and(|m| m.file_type().is_file() || m.file_type().is_symlink());
        if alive || !is_file {
            continue;
        }
        match std::fs::remove_file(&t) {
            Ok(()) => warnings.push(format!(
                "removed {}: the half-written output of a merge that was interrupted (the \
                 runner was killed)",
                t.display()
            )),
            Err(e) => warnings.push(format!(
                "cannot remove {}, the half-written output of an interrupted merge: {e}",
                t.display()
            )),
        }
    }
    warnings
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The output exists and no earlier merge wrote it.
    Exists,
    /// An earlier merge wrote the output, and it changed since.
    Changed,
    Failed(String),
}

/// When a merge may replace an existing output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replace {
    Never,
    /// `--force`.
    Always,
    /// Only while it still has this size and SHA-256: what an earlier
    /// merge wrote.
    IfStill(u64, String),
}

/// Merges `inputs` into `output` atomically; the size written and its
/// SHA-256.
///
/// For `concat`, `base` is the original path: when it exists (a file the
/// workers appended to, which the library copied into each worker's file
/// before the first append), its content comes once, then each worker's
/// additions. The merged file gets the permission bits of `base` when it
/// exists (a file written in place keeps its mode), else those every
/// input has (the workers' copies agree, or the merged file is never
/// more open than any of them).
pub fn merge_one(
    m: &Merger,
    inputs: &[PathBuf],
    output: &Path,
    base: Option<&Path>,
    replace: Replace,
    s: &Setup,
) -> Result<(u64, String), Refusal> {
    if let Some(link) = symlink_inputs(inputs)? {
        return write_atomic(output, replace, None, |tmp| {
            std::os::unix::fs::symlink(&link, tmp).map_err(|e| format!("{}: {e}", tmp.display()))
        });
    }
    // Journaled before the merger runs: a pass killed meanwhile leaves
    // this file half written, and the next pass removes it. (Best effort:
    // a journal that cannot be written is said after the merge.)
    if let (Some(name), Some(dir)) = (output.file_name(), output.parent()) {
        let _ = Record::journal_temp(s.workers_dir, &dir.join(temp_name(name)));
    }
    let mode = base
        .and_then(|b| std::fs::metadata(b).ok())
        .filter(|md| md.is_file())
        .map(|md| md.permissions().mode() & 0o777)
        .or_else(|| common_mode(inputs));
    write_atomic(output, replace, mode, |tmp| match m {
        Merger::Concat => concat_onto(base, inputs, tmp),
        Merger::First => concat(&inputs[..inputs.len().min(1)], tmp),
        Merger::Command(t) => command(t, inputs, tmp, s),
    })
}

/// When the inputs are symlinks (the job made a link under redirect), the
/// one text they all have: the merge makes that link, never a copy of
/// what it points to. Links with different texts, or links and files,
/// cannot be merged. `None`: no input is a symlink.
fn symlink_inputs(inputs: &[PathBuf]) -> Result<Option<PathBuf>, Refusal> {
    let is_link =
        |p: &PathBuf| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    if !inputs.iter().any(is_link) {
        return Ok(None);
    }
    if !inputs.iter().all(is_link) {
        return Err(Refusal::Failed(
            "some workers made a symlink there and others a file: not merged".into(),
        ));
    }
    let texts: Vec<PathBuf> = inputs
        .iter()
        .map(std::fs::read_link)
        .collect::<Result<_, _>>()
        .map_err(|e| Refusal::Failed(format!("cannot read a worker's symlink: {e}")))?;
    if texts.windows(2).any(|w| w[0] != w[1]) {
        return Err(Refusal::Failed(
            "the workers made symlinks with different targets: not merged".into(),
        ));
    }
    Ok(texts.into_iter().next())
}

/// The permission bits every one of `files` has (`None`: no file).
fn common_mode(files: &[PathBuf]) -> Option<u32> {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|md| md.permissions().mode() & 0o777)
        .reduce(|a, b| a & b)
}

/// A temporary name next to `output` that fits NAME_MAX whatever the
/// output's name: `.mpaudit-merge-<pid>`, then the output's extension
/// when short (a merger that looks at it, hadd and `.root`, sees it).
fn temp_name(output_name: &OsStr) -> OsString {
    let mut t = format!(".mpaudit-merge-{}", std::process::id()).into_bytes();
    let name = output_name.as_bytes();
    if let Some(dot) = name.iter().rposition(|&b| b == b'.').filter(|&i| i > 0) {
        let ext = &name[dot..];
        if t.len() + ext.len() <= NAME_MAX && ext.len() <= 64 {
            t.extend_from_slice(ext);
        }
    }
    OsString::from_vec(t)
}

/// Writes through `make(tmp)` into a temporary file next to `output`, then
/// renames it into place with `mode`; replaces an existing file only as
/// `replace` says. The size written and its SHA-256.
pub fn write_atomic(
    output: &Path,
    replace: Replace,
    mode: Option<u32>,
    make: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(u64, String), Refusal> {
    // May it be replaced now? Checked again just before the rename.
    let replaceable = |replace: &Replace| -> Result<bool, Refusal> {
        if std::fs::symlink_metadata(output).is_err() {
            return Ok(false);
        }
        match replace {
            Replace::Always => Ok(true),
            Replace::Never => Err(Refusal::Exists),
            Replace::IfStill(size, sha) => match fingerprint(output) {
                Some((n, h)) if n == *size && h == *sha => Ok(true),
                _ => Err(Refusal::Changed),
            },
        }
    };
    replaceable(&replace)?;
    let name = output
        .file_name()
        .ok_or_else(|| Refusal::Failed(format!("{}: not a file name", output.display())))?;
    let dir = output.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Refusal::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let tmp = dir.join(temp_name(name));
    let _ = std::fs::remove_file(&tmp);
    let cleanup = |e: Refusal| {
        let _ = std::fs::remove_file(&tmp);
        e
    };
    make(&tmp).map_err(|e| cleanup(Refusal::Failed(e)))?;
    let meta = std::fs::symlink_metadata(&tmp).map_err(|_| {
        cleanup(Refusal::Failed(
            "the merger wrote no output file".to_string(),
        ))
    })?;
    let is_link = meta.file_type().is_symlink();
    if !meta.file_type().is_file() && !is_link {
        return Err(cleanup(Refusal::Failed(
            "the merger's output is not a regular file".into(),
        )));
    }
    if let (Some(m), false) = (mode, is_link) {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(m)).map_err(|e| {
            cleanup(Refusal::Failed(format!(
                "cannot set mode {m:o} on {}: {e}",
                tmp.display()
            )))
        })?;
    }
    if let (Ok(f), false) = (File::open(&tmp), is_link) {
        let _ = f.sync_all();
    }
    let Some((size, sha)) = fingerprint(&tmp) else {
        return Err(cleanup(Refusal::Failed(format!(
            "cannot read back {}",
            tmp.display()
        ))));
    };
    let renamed = match replaceable(&replace).map_err(cleanup)? {
        true => std::fs::rename(&tmp, output),
        false => rename_noreplace(&tmp, output),
    };
    renamed.map_err(|e| {
        cleanup(if e.kind() == std::io::ErrorKind::AlreadyExists {
            Refusal::Exists
        } else {
            Refusal::Failed(format!("rename to {}: {e}", output.display()))
        })
    })?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((size, sha))
}

/// `rename` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // File systems without RENAME_NOREPLACE: a hard link never replaces.
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(e),
    }
}

/// `base` (when it is a file) once, then each input without the copy of
/// `base` it starts with. When no input starts with `base` (the workers
/// truncated or replaced it), `base` is not part of the result.
pub fn concat_onto(base: Option<&Path>, inputs: &[PathBuf], out: &Path) -> Result<(), String> {
    let b = base
        .filter(|b| std::fs::metadata(b).is_ok_and(|m| m.is_file()))
        .map(std::fs::read)
        .transpose()
        .map_err(|e| format!("{}: {e}", base.unwrap_or(Path::new("")).display()))?;
    let Some(b) = b.filter(|b| !b.is_empty()) else {
        return concat(inputs, out);
    };
    let starts_with_base = |i: &PathBuf| -> Result<bool, String> {
        let mut head = Vec::with_capacity(b.len());
        File::open(i)
            .and_then(|f| f.take(b.len() as u64).read_to_end(&mut head))
            .map_err(|e| format!("{}: {e}", i.display()))?;
        Ok(head == b)
    };
    let mut copied_up = Vec::with_capacity(inputs.len());
    for i in inputs {
        copied_up.push(starts_with_base(i)?);
    }
    if !copied_up.contains(&true) {
        return concat(inputs, out);
    }
    let mut w = File::options()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    w.write_all(&b)
        .map_err(|e| format!("writing the merged output {}: {e}", out.display()))?;
    for (i, has_base) in inputs.iter().zip(copied_up) {
        let mut r = File::open(i).map_err(|e| format!("{}: {e}", i.display()))?;
        if has_base {
            std::io::copy(
                &mut std::io::Read::by_ref(&mut r).take(b.len() as u64),
                &mut std::io::sink(),
            )
            .map_err(|e| format!("{}: {e}", i.display()))?;
        }
        copy_into(&mut r, i, &mut w, out)?;
    }
    w.flush().map_err(|e| e.to_string())
}

/// Copies `r` (the file `rname`) to the end of `w` (the file `wname`): an
/// error names the file it came from, the input for a read, the merged
/// output for a write (a full disk is the output's, not a worker's file).
fn copy_into(
    r: &mut impl Read,
    rname: &Path,
    w: &mut impl Write,
    wname: &Path,
) -> Result<(), String> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading {}: {e}", rname.display())),
        };
        w.write_all(&buf[..n])
            .map_err(|e| format!("writing the merged output {}: {e}", wname.display()))?;
    }
}

/// The inputs one after the other.
pub fn concat(inputs: &[PathBuf], out: &Path) -> Result<(), String> {
    let mut w = File::options()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    for i in inputs {
        let mut r = File::open(i).map_err(|e| format!("{}: {e}", i.display()))?;
        copy_into(&mut r, i, &mut w, out)?;
    }
    w.flush().map_err(|e| e.to_string())
}

/// Runs a merge command in the job directory; its output goes to
/// `<workers_dir>/merge.log`, whose last lines explain a failure.
fn command(template: &[String], inputs: &[PathBuf], out: &Path, s: &Setup) -> Result<(), String> {
    let argv = expand(template, out, inputs);
    let log_path = s.workers_dir.join("merge.log");
    let mut log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let shown = template.join(" ");
    let _ = writeln!(log, "== {} -> {}", shown, out.display());
    let start_len = log.metadata().map(|m| m.len()).unwrap_or(0);
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(s.job_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    let cannot_run = |e: std::io::Error| format!("cannot run {}: {e}", template[0]);
    let timed_out = || format!("{} did not finish within the job's timeout", template[0]);
    let status = if let Some(c) = s.control {
        match c
            .run_command(&mut cmd, s.timeout, s.grace)
            .map_err(cannot_run)?
        {
            Ended::Exited(st) => st,
            Ended::TimedOut => return Err(timed_out()),
            Ended::Interrupted(sig) => {
                return Err(format!(
                    "{} was stopped: mpaudit was interrupted ({sig})",
                    template[0]
                ))
            }
        }
    } else {
        plain_command(&mut cmd, s.timeout).map_err(|e| match e {
            None => timed_out(),
            Some(e) => cannot_run(e),
        })?
    };
    if status.success() {
        return Ok(());
    }
    let tail = tail_since(&log_path, start_len, 3);
    let how = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "failed".into(),
    };
    Err(if tail.is_empty() {
        format!("{} failed ({how})", template[0])
    } else {
        format!("{} failed ({how}): {}", template[0], tail.join(" | "))
    })
}

/// A merge command as a plain child, without a [`Control`]: `Err(None)`
/// when it was still running at `limit` (then killed).
fn plain_command(
    cmd: &mut Command,
    limit: Option<Duration>,
) -> Result<std::process::ExitStatus, Option<std::io::Error>> {
    let mut child = cmd.spawn().map_err(Some)?;
    match wait_timeout(&mut child, limit) {
        Ok(Some(st)) => Ok(st),
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(None)
        }
        Err(e) => Err(Some(e)),
    }
}

/// Waits for `child` to exit, for at most `limit` (`None`: no limit).
/// `Ok(None)`: still running at the limit. It sleeps in `poll` on a pidfd,
/// which wakes the moment the child exits; where pidfds are not available
/// (Linux before 5.3, some sandboxes), it checks every 20 ms instead.
fn wait_timeout(
    child: &mut std::process::Child,
    limit: Option<Duration>,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let Some(limit) = limit else {
        return child.wait().map(Some);
    };
    let deadline = Instant::now() + limit;
    let pidfd = pidfd_open(child.id());
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match &pidfd {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(fd),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // Whole milliseconds, rounded up: never a busy loop.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
                // SAFETY: one valid pollfd. EINTR and the rest: try again.
                unsafe { libc::poll(&mut p, 1, ms) };
            }
            None => std::thread::sleep(left.min(Duration::from_millis(20))),
        }
    }
}

/// A pidfd for our own unreaped child (its pid cannot be reused meanwhile).
fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a fresh fd that nothing else owns.
    (fd >= 0).then(|| unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as libc::c_int)
    })
}

/// The last `n` non-empty lines written to a file after byte `from`.
fn tail_since(p: &Path, from: u64, n: usize) -> Vec<String> {
    let Ok(bytes) = std::fs::read(p) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or_default());
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.chars().take(300).collect())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mpaudit-merge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rule(glob: &str, merger: Merger) -> MergeRule {
        MergeRule {
            glob: glob.into(),
            merger,
        }
    }

    fn setup<'a>(job: &'a Path, workers: &'a Path, rules: &'a [MergeRule]) -> Setup<'a> {
        Setup {
            job_dir: job,
            workers_dir: workers,
            rank: None,
            rules,
            merge_dir: None,
            force: false,
            since: SystemTime::UNIX_EPOCH,
            timeout: Some(Duration::from_secs(30)),
            grace: Duration::from_millis(100),
            control: None,
        }
    }

    #[test]
    fn an_earlier_runs_redirected_files_are_cleared() {
        let job = tmp("clear");
        let w = job.join("mpaudit-workers");
        let wd = w.join("worker_0");
        std::fs::create_dir_all(&wd).unwrap();
        std::fs::write(wd.join("summary.log"), "old\n").unwrap();
        std::fs::write(wd.join("hist.txt"), "declared\n").unwrap();
        std::fs::write(job.join("keep"), "x").unwrap();
        let m = format!(
            "{{\"original\":\"{0}/summary.log\",\"target\":\"{1}/summary.log\",\"worker\":0,\"pid\":1}}\n{{\"original\":\"{0}/keep\",\"target\":\"{0}/keep\",\"worker\":0,\"pid\":1}}\n",
            job.display(),
            wd.display()
        );
        std::fs::write(wd.join(MANIFEST), m).unwrap();
        assert_eq!(clear_previous(&job, &w), 1);
        assert!(!wd.join("summary.log").exists() && !wd.join(MANIFEST).exists());
        assert!(wd.join("hist.txt").exists() && job.join("keep").exists());
    }

    #[test]
    fn regression_a_forged_manifest_line_cannot_feed_a_merge() {
        let job = tmp("forged");
        let w = job.join("mpaudit-workers");
        let wd = w.join("worker_0");
        std::fs::create_dir_all(&wd).unwrap();
        let outside = job.join("secret.txt");
        std::fs::write(&outside, "not a worker file\n").unwrap();
        let m = format!(
            "{{\"original\":\"{}/summary.log\",\"target\":\"{}\",\"worker\":0,\"pid\":1}}\n",
            job.display(),
            outside.display()
        );
        std::fs::write(wd.join(MANIFEST), m).unwrap();
        let rules = [rule("*.log", Merger::Concat)];
        let (groups, warnings) = collect(&setup(&job, &w, &rules));
        assert!(groups.is_empty(), "the forged target fed no merge");
        assert!(
            warnings.iter().any(|w| w.contains("is not where")),
            "{warnings:?}"
        );
    }

    #[test]
    fn template_expansion() {
        let t: Vec<String> = ["hadd", "-f", "{output}", "{inputs}", "--log={output}.log"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let got = expand(
            &t,
            Path::new("/j/.tmp-out.root"),
            &[
                PathBuf::from("/w/0/out.root"),
                PathBuf::from("/w/1/out.root"),
            ],
        );
        assert_eq!(
            got,
            [
                "hadd",
                "-f",
                "/j/.tmp-out.root",
                "/w/0/out.root",
                "/w/1/out.root",
                "--log=/j/.tmp-out.root.log"
            ]
            .map(OsString::from)
        );
        assert_eq!(expand(&t, Path::new("/o"), &[]).len(), 4);
    }

    #[test]
    fn output_places() {
        let j = Path::new("/job");
        assert_eq!(
            output_for(Path::new("/job/a/b.log"), j, None),
            Path::new("/job/a/b.log")
        );
        assert_eq!(
            output_for(Path::new("/job/a/b.log"), j, Some(Path::new("/m"))),
            Path::new("/m/a/b.log")
        );
        assert_eq!(
            output_for(Path::new("/tmp/x"), j, Some(Path::new("/m"))),
            Path::new("/m/_abs/tmp/x")
        );
        let w = Path::new("/w/worker_0");
        let original = |rel: &str| original_of(&w.join(rel), w, j);
        assert_eq!(original("_abs/tmp/x").unwrap(), Path::new("/tmp/x"));
        assert_eq!(original("sub/h.txt").unwrap(), Path::new("/job/sub/h.txt"));
        assert_eq!(
            original("_stdout.log").unwrap(),
            Path::new("/job/stdout.log")
        );
        assert_eq!(original("__abs/x").unwrap(), Path::new("/job/_abs/x"));
        // A 255-byte `_` name keeps its bytes below `_long` (review 3, R3-5).
        let long = format!("_{}", "z".repeat(254));
        assert_eq!(
            original(&format!("_long/{long}/f")).unwrap(),
            j.join(&long).join("f")
        );
        assert_eq!(original("_long"), None);
        assert_eq!(
            original("my-mpaudit-notes").unwrap(),
            Path::new("/job/my-mpaudit-notes")
        );
        for own in [
            "stdout.log",
            "stderr.log",
            "mpaudit-redirects.jsonl",
            ".mpaudit-1-2.redirects",
        ] {
            assert_eq!(original(own), None, "{own}");
        }
    }

    #[test]
    fn rules_match_file_names_and_relative_paths_first_wins() {
        let rules = [
            rule("out/*.txt", Merger::First),
            rule("*.txt", Merger::Concat),
            rule("/tmp/**", Merger::First),
        ];
        let j = Path::new("/job");
        let r = |p: &str| rule_for(&rules, Path::new(p), j).map(|r| r.glob.as_str());
        assert_eq!(r("/job/out/a.txt"), Some("out/*.txt"));
        assert_eq!(r("/job/a.txt"), Some("*.txt"));
        assert_eq!(r("/tmp/x/y.dat"), Some("/tmp/**"));
        assert_eq!(r("/job/a.root"), None);
    }

    #[test]
    fn concat_and_first_in_worker_order() {
        let d = tmp("concat");
        let a = d.join("a");
        let b = d.join("b");
        std::fs::write(&a, "worker 0\n").unwrap();
        std::fs::write(&b, "worker 1\n").unwrap();
        let out = d.join("out.log");
        let (n, _) = write_atomic(&out, Replace::Never, None, |t| {
            concat(&[a.clone(), b.clone()], t)
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "worker 0\nworker 1\n"
        );
        assert_eq!(n, 18);
        let s = setup(&d, &d, &[]);
        let first = d.join("first.log");
        merge_one(
            &Merger::First,
            &[b.clone(), a.clone()],
            &first,
            None,
            Replace::Never,
            &s,
        )
        .unwrap();
        // Appends onto an existing file: its content once, then the additions.
        let base = d.join("base");
        std::fs::write(&base, "old\n").unwrap();
        std::fs::write(&a, "old\nworker 0\n").unwrap();
        std::fs::write(&b, "worker 1\n").unwrap();
        let onto = d.join("onto.log");
        merge_one(
            &Merger::Concat,
            &[a.clone(), b.clone()],
            &onto,
            Some(&base),
            Replace::Never,
            &s,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&onto).unwrap(),
            "old\nworker 0\nworker 1\n"
        );
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "worker 1\n");
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".mpaudit-merge")
            })
            .collect();
        assert!(left.is_empty());
    }

    #[test]
    fn refuses_to_overwrite_unless_forced() {
        let d = tmp("refuse");
        let a = d.join("a");
        std::fs::write(&a, "new\n").unwrap();
        let out = d.join("summary.log");
        std::fs::write(&out, "precious\n").unwrap();
        let mut ran = false;
        let r = write_atomic(&out, Replace::Never, None, |t| {
            ran = true;
            concat(std::slice::from_ref(&a), t)
        });
        assert_eq!(r, Err(Refusal::Exists));
        assert!(!ran, "the merger does not even run");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
        // The output appearing while the merger runs: still not replaced.
        let r = write_atomic(&d.join("race.log"), Replace::Never, None, |t| {
            std::fs::write(d.join("race.log"), "theirs\n").unwrap();
            concat(std::slice::from_ref(&a), t)
        });
        assert_eq!(r, Err(Refusal::Exists));
        assert_eq!(
            std::fs::read_to_string(d.join("race.log")).unwrap(),
            "theirs\n"
        );
        write_atomic(&out, Replace::Always, None, |t| {
            concat(std::slice::from_ref(&a), t)
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new\n");
    }

    #[test]
    fn symlinks_merge_as_the_one_link_the_workers_made() {
        let d = tmp("links");
        let (job, workers) = (d.join("job"), d.join("w"));
        std::fs::create_dir_all(&job).unwrap();
        let s = setup(&job, &workers, &[]);
        let link = |name: &str, text: &str| {
            let p = d.join(name);
            std::os::unix::fs::symlink(text, &p).unwrap();
            p
        };
        let (a, b, c) = (link("a", "t.txt"), link("b", "t.txt"), link("c", "other"));
        let file = d.join("plain");
        std::fs::write(&file, "x").unwrap();
        let out = job.join("l");
        let (size, sha) = merge_one(
            &Merger::First,
            &[a.clone(), b],
            &out,
            None,
            Replace::Never,
            &s,
        )
        .unwrap();
        assert_eq!(std::fs::read_link(&out).unwrap(), Path::new("t.txt"));
        assert_eq!(fingerprint(&out), Some((size, sha.clone())));
        assert!(sha.starts_with("symlink:"), "never a file's fingerprint");
        // Replaced while it is still the earlier merge's link.
        merge_one(
            &Merger::Concat,
            std::slice::from_ref(&c),
            &out,
            None,
            Replace::IfStill(size, sha),
            &s,
        )
        .unwrap();
        assert_eq!(std::fs::read_link(&out).unwrap(), Path::new("other"));
        for inputs in [vec![a.clone(), c], vec![a, file]] {
            let r = merge_one(
                &Merger::Concat,
                &inputs,
                &job.join("m"),
                None,
                Replace::Never,
                &s,
            );
            assert!(matches!(r, Err(Refusal::Failed(_))), "{r:?}");
            assert!(std::fs::symlink_metadata(job.join("m")).is_err());
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn removals_are_groups_of_their_own_named_once_per_removed_tree() {
        let d = tmp("removed");
        let (job, workers) = (d.join("job"), d.join("w"));
        let wd = workers.join("worker_0");
        std::fs::create_dir_all(job.join("d/sub")).unwrap();
        std::fs::create_dir_all(&wd).unwrap();
        for f in ["old.txt", "d/f", "d/sub/g", "kept.txt"] {
            std::fs::write(job.join(f), "x").unwrap();
        }
        // The worker removed old.txt and the tree d, and rewrote kept.txt.
        std::fs::write(wd.join("kept.txt"), "new").unwrap();
        let line = |o: &str| {
            format!(
                "{{\"original\":\"{}\",\"target\":\"{}\",\"worker\":0,\"pid\":1}}\n",
                job.join(o).display(),
                wd.join(o).display()
            )
        };
        let manifest: String = [
            "old.txt", "d/f", "d/sub/g", "d/sub", "d", "kept.txt", "tmp.txt",
        ]
        .iter()
        .map(|o| line(o))
        .collect();
        std::fs::write(wd.join(MANIFEST), manifest).unwrap();
        let (groups, _) = collect(&setup(&job, &workers, &[]));
        let got: Vec<(PathBuf, Origin)> = groups
            .iter()
            .map(|g| (g.original.clone(), g.origin))
            .collect();
        assert_eq!(
            got,
            vec![
                (job.join("d"), Origin::Removed),
                (job.join("kept.txt"), Origin::Redirected),
                (job.join("old.txt"), Origin::Removed),
            ],
            "tmp.txt (made and removed by the job) is no removal of a shared file"
        );
        let (out, _) = run(&setup(&job, &workers, &[]), false);
        let old = out
            .iter()
            .find(|o| o.group.original == job.join("old.txt"))
            .unwrap();
        assert_eq!(old.status, Status::Skipped);
        assert!(old.reason.as_deref().unwrap().contains("not merged back"));
        assert!(job.join("old.txt").exists(), "left in place");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Review 3, finding 3: a file the fork-mode root took back in place
    /// (moved from the worker directory, `"taken":true` in the worker's
    /// manifest) is neither a removal nor merged again; a worker's new copy
    /// written after the take still is.
    #[test]
    fn files_the_fork_mode_root_took_back_in_place_are_no_removals() {
        let d = tmp("taken");
        let (job, workers) = (d.join("job"), d.join("w"));
        let wd = workers.join("worker_0");
        std::fs::create_dir_all(&job).unwrap();
        std::fs::create_dir_all(&wd).unwrap();
        // out.txt: taken and appended to by the root; again.txt: taken, then
        // written by the worker again; gone.txt: removed by the worker.
        std::fs::write(job.join("out.txt"), "w0\nroot\n").unwrap();
        std::fs::write(job.join("again.txt"), "w0\n").unwrap();
        std::fs::write(wd.join("again.txt"), "w0 later\n").unwrap();
        std::fs::write(job.join("gone.txt"), "g\n").unwrap();
        let line = |o: &str, taken: bool| {
            format!(
                "{{\"original\":\"{}\",\"target\":\"{}\",\"worker\":0,\"pid\":1{}}}\n",
                job.join(o).display(),
                wd.join(o).display(),
                if taken { ",\"taken\":true" } else { "" }
            )
        };
        let manifest = [
            line("out.txt", false),
            line("again.txt", false),
            line("gone.txt", false),
            line("out.txt", true),
            line("again.txt", true),
        ]
        .concat();
        std::fs::write(wd.join(MANIFEST), manifest).unwrap();
        let (groups, warnings) = collect(&setup(&job, &workers, &[]));
        assert!(warnings.is_empty(), "{warnings:?}");
        let got: Vec<(PathBuf, Origin)> = groups
            .iter()
            .map(|g| (g.original.clone(), g.origin))
            .collect();
        assert_eq!(
            got,
            vec![
                (job.join("again.txt"), Origin::Redirected),
                (job.join("gone.txt"), Origin::Removed),
            ]
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_journaled_merge_is_in_the_record_until_the_record_is_saved() {
        let w = tmp("journal");
        std::fs::create_dir_all(&w).unwrap();
        let out = Path::new("/job/a.txt");
        let written = Written {
            path: out.display().to_string(),
            size: 4,
            sha256: "ab".into(),
        };
        Record::journal(&w, out, &written).unwrap();
        let r = Record::load(&w);
        assert_eq!(
            r.get(out),
            Some(&written),
            "an interrupted pass's merge counts"
        );
        r.save(&w).unwrap();
        assert!(!w.join(JOURNAL).exists(), "folded into the record");
        assert_eq!(Record::load(&w).get(out), Some(&written));
        let _ = std::fs::remove_dir_all(&w);
    }

    #[test]
    fn a_killed_passs_temporary_file_is_removed_by_the_next_pass() {
        let d = tmp("temps");
        let w = d.join("w");
        // A pid that no longer runs: a child we reaped.
        let mut c = Command::new("true").spawn().unwrap();
        let dead = c.id();
        c.wait().unwrap();
        let stale = d.join(format!(".mpaudit-merge-{dead}.txt"));
        let ours = d.join(format!(".mpaudit-merge-{}.txt", std::process::id()));
        let other = d.join("not-a-temp");
        for t in [&stale, &ours, &other] {
            std::fs::write(t, "part").unwrap();
            Record::journal_temp(&w, t).unwrap();
        }
        let warnings = remove_interrupted_temps(&w);
        assert!(!stale.exists(), "half written, its pass gone");
        assert!(
            ours.exists() && other.exists(),
            "a live pass's, and no temp"
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("interrupted"), "{warnings:?}");
        // The journal's temp lines are no record entries.
        assert!(Record::load(&w).outputs.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_disk_is_said_of_the_output_not_of_an_input() {
        let d = tmp("full");
        let input = d.join("worker_1.txt");
        std::fs::write(&input, "x".repeat(1000)).unwrap();
        let mut full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let e = copy_into(
            &mut File::open(&input).unwrap(),
            &input,
            &mut full,
            Path::new("/job/out.txt"),
        )
        .unwrap_err();
        assert!(
            e.starts_with("writing the merged output /job/out.txt:") && !e.contains("worker_1"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failing_merger_leaves_nothing() {
        let d = tmp("fail");
        let out = d.join("x.log");
        let r = write_atomic(&out, Replace::Never, None, |t| {
            std::fs::write(t, "partial").unwrap();
            Err("boom".into())
        });
        assert_eq!(r, Err(Refusal::Failed("boom".into())));
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        let r = write_atomic(&out, Replace::Never, None, |_| Ok(()));
        assert!(matches!(r, Err(Refusal::Failed(m)) if m.contains("no output")));
    }

    #[test]
    fn command_mergers_run_in_the_job_dir_and_explain_failures() {
        let d = tmp("cmd");
        let w = d.join("mpaudit-workers");
        std::fs::create_dir_all(&w).unwrap();
        let inputs = [d.join("i0"), d.join("i1")];
        std::fs::write(&inputs[0], "1\n").unwrap();
        std::fs::write(&inputs[1], "2\n").unwrap();
        let s = setup(&d, &w, &[]);
        let t: Vec<String> = ["sh", "-c", "cat \"$@\" > \"$0\"", "{output}", "{inputs}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        merge_one(
            &Merger::Command(t),
            &inputs,
            &d.join("sum"),
            None,
            Replace::Never,
            &s,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(d.join("sum")).unwrap(), "1\n2\n");
        let t: Vec<String> = [
            "sh",
            "-c",
            "echo bad binning >&2; exit 4",
            "{output}",
            "{inputs}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = merge_one(
            &Merger::Command(t),
            &inputs,
            &d.join("h"),
            None,
            Replace::Never,
            &s,
        );
        let Err(Refusal::Failed(why)) = r else {
            panic!("{r:?}")
        };
        assert!(
            why.contains("exit status 4") && why.contains("bad binning"),
            "{why}"
        );
        assert!(!d.join("h").exists());
    }

    #[test]
    fn a_merge_command_is_waited_for_and_stopped_at_the_timeout() {
        let ok = |cmd: &str| Command::new("sh").args(["-c", cmd]).spawn().unwrap();
        let mut c = ok("exit 3");
        let st = wait_timeout(&mut c, Some(Duration::from_secs(60))).unwrap();
        assert_eq!(st.and_then(|s| s.code()), Some(3));
        let st = wait_timeout(&mut ok("exit 0"), None).unwrap();
        assert!(st.is_some_and(|s| s.success()));
        let mut c = ok("sleep 30");
        assert!(wait_timeout(&mut c, Some(Duration::from_millis(50)))
            .unwrap()
            .is_none());
        c.kill().unwrap();
        c.wait().unwrap();

        let d = tmp("cmd-timeout");
        let w = d.join("mpaudit-workers");
        std::fs::create_dir_all(&w).unwrap();
        let input = d.join("i0");
        std::fs::write(&input, "1\n").unwrap();
        let s = Setup {
            timeout: Some(Duration::from_millis(50)),
            ..setup(&d, &w, &[])
        };
        let t: Vec<String> = ["sleep", "30"].iter().map(|s| s.to_string()).collect();
        let r = merge_one(
            &Merger::Command(t),
            &[input],
            &d.join("out"),
            None,
            Replace::Never,
            &s,
        );
        let Err(Refusal::Failed(why)) = r else {
            panic!("{r:?}")
        };
        assert!(
            why.contains("did not finish within the job's timeout"),
            "{why}"
        );
        assert!(!d.join("out").exists());
    }

    #[test]
    fn collects_manifests_and_declared_files() {
        let job = tmp("collect");
        let w = job.join("mpaudit-workers");
        for k in 0..3 {
            let wd = w.join(format!("worker_{k}"));
            std::fs::create_dir_all(wd.join("_abs/tmp")).unwrap();
            std::fs::write(wd.join("stdout.log"), "").unwrap();
            std::fs::write(wd.join("hist.txt"), format!("h{k}\n")).unwrap();
            if k != 1 {
                std::fs::write(wd.join("summary.log"), format!("s{k}\n")).unwrap();
                std::fs::write(wd.join("_abs/tmp/x"), "x").unwrap();
                let mut m = String::new();
                for name in ["summary.log", "summary.log"] {
                    m += &format!(
                        "{{\"original\":\"{}\",\"target\":\"{}\",\"worker\":{k},\"pid\":1}}\n",
                        job.join(name).display(),
                        wd.join(name).display()
                    );
                }
                m += &format!(
                    "{{\"original\":\"/tmp/x\",\"target\":\"{}\",\"worker\":{k},\"pid\":1}}\n",
                    wd.join("_abs/tmp/x").display()
                );
                // A line pointing somewhere the mapping does not: ignored.
                m += &format!(
                    "{{\"original\":\"{}\",\"target\":\"/etc/passwd\",\"worker\":{k},\"pid\":1}}\nnot json\n",
                    job.join("evil").display()
                );
                std::fs::write(wd.join(MANIFEST), m).unwrap();
            }
        }
        let rules = [rule("hist.txt", Merger::Concat)];
        let s = setup(&job, &w, &rules);
        let (groups, warnings) = collect(&s);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        let names: Vec<_> = groups.iter().map(|g| g.original.clone()).collect();
        assert_eq!(
            names,
            [
                job.join("hist.txt"),
                job.join("summary.log"),
                PathBuf::from("/tmp/x")
            ]
        );
        assert_eq!(groups[0].origin, Origin::Declared);
        assert_eq!(groups[0].inputs.len(), 3);
        assert_eq!(groups[1].origin, Origin::Redirected);
        let ws: Vec<u32> = groups[1].inputs.iter().map(|(k, _)| k.worker).collect();
        assert_eq!(ws, [0, 2]);

        // Run: hist merged by rule, summary and /tmp/x have no rule and two
        // workers: skipped.
        let merged = job.join("merged");
        let s = Setup {
            merge_dir: Some(&merged),
            ..setup(&job, &w, &rules)
        };
        let (out, _) = run(&s, false);
        let st: Vec<_> = out.iter().map(|o| o.status).collect();
        assert_eq!(st, [Status::Merged, Status::Skipped, Status::Skipped]);
        assert_eq!(
            std::fs::read_to_string(merged.join("hist.txt")).unwrap(),
            "h0\nh1\nh2\n"
        );
        // Stale files (older than the run) are not inputs.
        let s = Setup {
            since: SystemTime::now() + Duration::from_secs(60),
            ..setup(&job, &w, &rules)
        };
        assert!(collect(&s).0.is_empty());
        // A failed job merges nothing.
        let (out, _) = run(&setup(&job, &w, &rules), true);
        assert!(out.iter().all(|o| o.status == Status::Skipped));
        assert!(!job.join("hist.txt").exists());
    }

    #[test]
    fn temporary_names_fit_name_max_and_keep_the_extension() {
        let long = OsString::from(format!("{}.root", "n".repeat(250)));
        let t = temp_name(&long);
        assert!(t.len() <= NAME_MAX, "{t:?}");
        assert!(t.as_bytes().ends_with(b".root"), "{t:?}");
        let odd = OsString::from_vec(b"caf\xe9.t\xffxt".to_vec());
        assert!(temp_name(&odd).as_bytes().ends_with(b".t\xffxt"));
        let huge_ext = OsString::from(format!("a.{}", "x".repeat(250)));
        assert!(temp_name(&huge_ext).len() <= NAME_MAX);
        assert!(!temp_name(OsStr::new(".bashrc"))
            .as_bytes()
            .ends_with(b".bashrc"));
    }

    #[test]
    fn worker_dirs_are_found_whatever_the_count_with_ranks() {
        let w = tmp("dirs");
        for d in [
            "worker_0",
            "worker_10",
            "worker_2",
            "worker_01",
            "worker_x",
            "rank_1/worker_0",
            "rank_0/worker_3",
            "rank_00/worker_1",
            "root",
        ] {
            std::fs::create_dir_all(w.join(d)).unwrap();
        }
        std::fs::write(w.join("worker_5"), "a file, not a worker").unwrap();
        std::os::unix::fs::symlink(w.join("worker_0"), w.join("worker_7")).unwrap();
        let ids: Vec<String> = worker_dirs(&w, None)
            .iter()
            .map(|(k, _)| k.label())
            .collect();
        assert_eq!(ids, ["0", "2", "10", "rank 0 worker 3", "rank 1 worker 0"]);
        // One rank's own directory: its worker_<k>/ are that rank's.
        let ids: Vec<String> = worker_dirs(&w, Some(4))
            .iter()
            .map(|(k, _)| k.label())
            .filter(|l| l.starts_with("rank 4 "))
            .collect();
        assert_eq!(
            ids,
            ["rank 4 worker 0", "rank 4 worker 2", "rank 4 worker 10"]
        );
    }

    #[test]
    fn an_earlier_merge_is_replaced_only_while_unchanged() {
        let d = tmp("record");
        let out = d.join("out.log");
        let a = d.join("a");
        std::fs::write(&a, "one\n").unwrap();
        let (n, sha) = write_atomic(&out, Replace::Never, None, |t| {
            concat(std::slice::from_ref(&a), t)
        })
        .unwrap();
        assert_eq!(fingerprint(&out), Some((n, sha.clone())));
        std::fs::write(&a, "two\n").unwrap();
        let again = Replace::IfStill(n, sha.clone());
        write_atomic(&out, again.clone(), None, |t| {
            concat(std::slice::from_ref(&a), t)
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "two\n");
        // Now it is not what was recorded: refused, the file kept.
        let r = write_atomic(&out, again, None, |t| concat(std::slice::from_ref(&a), t));
        assert_eq!(r, Err(Refusal::Changed));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "two\n");

        // Through a whole pass: the record in the workers directory.
        let job = tmp("record-job");
        let w = job.join("mpaudit-workers");
        for k in 0..2 {
            std::fs::create_dir_all(w.join(format!("worker_{k}"))).unwrap();
            std::fs::write(w.join(format!("worker_{k}/h.txt")), format!("{k}\n")).unwrap();
        }
        let rules = [rule("h.txt", Merger::Concat)];
        let pass = || run(&setup(&job, &w, &rules), false).0;
        assert_eq!(pass()[0].status, Status::Merged);
        assert_eq!(pass()[0].status, Status::Merged, "its own output");
        assert_eq!(
            std::fs::read_to_string(job.join("h.txt")).unwrap(),
            "0\n1\n"
        );
        std::fs::write(job.join("h.txt"), "edited\n").unwrap();
        let o = &pass()[0];
        assert_eq!(o.status, Status::Refused);
        assert!(
            o.reason.as_deref().unwrap().contains("changed since"),
            "{o:?}"
        );
        std::fs::remove_file(w.join(RECORD)).unwrap();
        std::fs::remove_file(job.join("h.txt")).unwrap();
        std::fs::write(job.join("h.txt"), "the job's\n").unwrap();
        let o = &pass()[0];
        assert_eq!(o.status, Status::Refused);
        assert!(
            o.reason.as_deref().unwrap().contains("no earlier merge"),
            "{o:?}"
        );
    }

    #[test]
    fn concat_onto_a_file_the_workers_truncated_leaves_it_out() {
        let d = tmp("onto-trunc");
        let base = d.join("base");
        std::fs::write(&base, "0\n1\n").unwrap();
        let (a, b) = (d.join("a"), d.join("b"));
        std::fs::write(&a, "0\n").unwrap();
        std::fs::write(&b, "1\n").unwrap();
        concat_onto(Some(&base), &[a.clone(), b.clone()], &d.join("o1")).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("o1")).unwrap(), "0\n1\n");
        // One worker appended (its copy starts with the base), one replaced.
        std::fs::write(&a, "0\n1\nmore\n").unwrap();
        concat_onto(Some(&base), &[a, b], &d.join("o2")).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("o2")).unwrap(),
            "0\n1\nmore\n1\n"
        );
    }

    #[test]
    fn modes_of_the_inputs_and_of_an_existing_original() {
        let d = tmp("modes");
        let set = |p: &Path, m: u32| {
            std::fs::write(p, "x").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        let (a, b, base) = (d.join("a"), d.join("b"), d.join("base"));
        set(&a, 0o640);
        set(&b, 0o604);
        let s = setup(&d, &d, &[]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let both = [a.clone(), b.clone()];
        merge_one(
            &Merger::Concat,
            &both,
            &d.join("o"),
            None,
            Replace::Never,
            &s,
        )
        .unwrap();
        assert_eq!(mode(&d.join("o")), 0o600);
        set(&base, 0o751);
        merge_one(
            &Merger::First,
            &both,
            &d.join("o2"),
            Some(&base),
            Replace::Never,
            &s,
        )
        .unwrap();
        assert_eq!(mode(&d.join("o2")), 0o751, "the original keeps its mode");
    }

    #[test]
    fn manifest_lines_with_hex_paths_are_taken_byte_for_byte() {
        let job = tmp("hex");
        let w = job.join("mpaudit-workers");
        let wd = w.join("rank_2/worker_1");
        std::fs::create_dir_all(&wd).unwrap();
        let name = OsStr::from_bytes(b"caf\xe9.txt");
        std::fs::write(wd.join(name), "x\n").unwrap();
        let (o, t) = (job.join(name), wd.join(name));
        let hex = |p: &Path| to_hex(p.as_os_str().as_bytes());
        let line = format!(
            "{{\"original\":\"{}\",\"target\":\"{}\",\"original_hex\":\"{}\",\"target_hex\":\"{}\",\"worker\":1,\"pid\":1}}\n",
            o.to_string_lossy(),
            t.to_string_lossy(),
            hex(&o),
            hex(&t)
        );
        std::fs::write(wd.join(MANIFEST), line).unwrap();
        let (groups, warnings) = collect(&setup(&job, &w, &[]));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].original, o);
        assert_eq!(
            groups[0].inputs,
            [(
                WorkerId {
                    rank: Some(2),
                    worker: 1
                },
                t.clone()
            )]
        );
        // A rank's directory is that rank's to clear, not another run's.
        assert_eq!(clear_previous(&job, &w), 0);
        assert!(t.exists());
        assert_eq!(clear_previous(&job, &w.join("rank_2")), 1);
        assert!(!t.exists());
        assert_eq!(from_hex("6x"), None);
        assert_eq!(from_hex("616"), None);
    }
}
