//! Closing the repair loop: after a run, the per-worker files of a path are
//! merged back into one file at the path's original place (or below
//! `--merge-dir`).
//!
//! Inputs come from two places: the library's manifests
//! (`worker_<k>/mpaudit-redirects.jsonl`, one line per redirected file) and,
//! for outputs the framework itself writes per worker, the files inside the
//! worker directories that a `[merge]` glob matches. Only files modified
//! during this run count (worker directories may hold an earlier run's).
//!
//! Every merge writes a temporary file next to its output and renames it
//! into place; without `--force` the rename refuses to replace an existing
//! file (`renameat2(RENAME_NOREPLACE)`, else a hard link).

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::control::{Control, Ended};
use crate::jobfile::{MergeRule, Merger};

/// Name of the library's per-worker manifest.
pub const MANIFEST: &str = "mpaudit-redirects.jsonl";
/// Files of the runner and the library in a worker directory, never merged.
const OWN_FILES: &[&str] = &["stdout.log", "stderr.log", MANIFEST];
/// Below this depth, and beyond this many files, a worker directory is not
/// searched further.
const MAX_DEPTH: usize = 32;
const MAX_FILES: usize = 100_000;

/// Everything a merge pass needs.
pub struct Setup<'a> {
    pub job_dir: &'a Path,
    pub workers_dir: &'a Path,
    pub workers: usize,
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
    /// outside `mpaudit run`/`exec` (unit tests): plain child processes.
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
}

/// One path to merge: its original (absolute) place and its worker files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub original: PathBuf,
    pub origin: Origin,
    /// (worker, file), in worker order.
    pub inputs: Vec<(usize, PathBuf)>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Merged,
    /// The merger failed: worker files kept, exit status 3.
    Failed,
    /// The output exists and `--force` was not given: exit status 3.
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

/// The inverse of the library's mapping: a path relative to a worker
/// directory back to the path the program meant.
pub fn original_of(worker_rel: &Path, job_dir: &Path) -> PathBuf {
    match worker_rel.strip_prefix("_abs") {
        Ok(rest) => Path::new("/").join(rest),
        Err(_) => job_dir.join(worker_rel),
    }
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

fn modified_since(p: &Path, since: SystemTime) -> bool {
    std::fs::symlink_metadata(p)
        .ok()
        .filter(|m| m.file_type().is_file())
        .and_then(|m| m.modified().ok())
        .is_some_and(|t| t >= since)
}

#[derive(serde::Deserialize)]
struct ManifestLine {
    original: String,
    target: String,
}

impl ManifestLine {
    /// True when `target` is exactly where the library's shared mapping puts
    /// `original` for worker directory `wdir`: a forged or stale line can
    /// then neither merge from nor delete anything else.
    fn target_is_mapped(&self, job: &[u8], wdir: &Path) -> bool {
        let mut buf = vec![0u8; 16 * 1024];
        mpaudit_core::map::map_to_worker(
            self.original.as_bytes(),
            job,
            wdir.as_os_str().as_bytes(),
            &mut buf,
        )
        .is_some_and(|len| &buf[..len] == self.target.as_bytes())
    }
}

/// Finds the groups to merge. Problems that do not stop the others (a
/// manifest line that does not parse or does not match the mapping) come
/// back as warnings.
pub fn collect(s: &Setup) -> (Vec<Group>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut groups: BTreeMap<PathBuf, Group> = BTreeMap::new();
    let job = s.job_dir.as_os_str().as_bytes();
    for k in 0..s.workers {
        let wdir = s.workers_dir.join(format!("worker_{k}"));
        let manifest = wdir.join(MANIFEST);
        if let Ok(f) = File::open(&manifest) {
            for (n, line) in BufReader::new(f).split(b'\n').enumerate() {
                let Ok(line) = line else { break };
                let line: Vec<u8> = line.into_iter().filter(|&b| b != 0).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Ok(m) = serde_json::from_slice::<ManifestLine>(&line) else {
                    warnings.push(format!(
                        "{}:{}: not a manifest line",
                        manifest.display(),
                        n + 1
                    ));
                    continue;
                };
                // A manifest cannot send a merge anywhere else.
                if !m.target_is_mapped(job, &wdir) {
                    warnings.push(format!(
                        "{}:{}: target {} is not where {} maps; ignored",
                        manifest.display(),
                        n + 1,
                        m.target,
                        m.original
                    ));
                    continue;
                }
                let target = PathBuf::from(&m.target);
                if !modified_since(&target, s.since) {
                    continue;
                }
                let g = groups
                    .entry(PathBuf::from(&m.original))
                    .or_insert_with(|| Group {
                        original: PathBuf::from(&m.original),
                        origin: Origin::Redirected,
                        inputs: Vec::new(),
                    });
                if !g.inputs.iter().any(|(w, p)| *w == k && *p == target) {
                    g.inputs.push((k, target));
                }
            }
        }
        if s.rules.is_empty() {
            continue;
        }
        let mut found = 0;
        walk(&wdir, Path::new(""), 0, &mut found, &mut |rel, full| {
            if rel.parent() == Some(Path::new("")) && OWN_FILES.iter().any(|o| rel == Path::new(o))
            {
                return;
            }
            let original = original_of(rel, s.job_dir);
            if rule_for(s.rules, &original, s.job_dir).is_none() || !modified_since(full, s.since) {
                return;
            }
            let g = groups.entry(original.clone()).or_insert_with(|| Group {
                original,
                origin: Origin::Declared,
                inputs: Vec::new(),
            });
            if !g.inputs.iter().any(|(w, p)| *w == k && p == full) {
                g.inputs.push((k, full.to_path_buf()));
            }
        });
    }
    let mut out: Vec<Group> = groups.into_values().collect();
    for g in &mut out {
        g.inputs.sort();
    }
    (out, warnings)
}

/// Removes what an earlier run's redirection left in the worker
/// directories (the files its manifests list, and the manifests), so that
/// this run's appends do not land after an earlier run's lines. Returns how
/// many files were removed.
pub fn clear_previous(job_dir: &Path, workers_dir: &Path) -> usize {
    let mut removed = 0;
    let Ok(rd) = std::fs::read_dir(workers_dir) else {
        return 0;
    };
    let job = job_dir.as_os_str().as_bytes();
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("worker_") {
            continue;
        }
        let wdir = e.path();
        let manifest = wdir.join(MANIFEST);
        let Ok(text) = std::fs::read(&manifest) else {
            continue;
        };
        for line in text.split(|&b| b == b'\n') {
            let line: Vec<u8> = line.iter().copied().filter(|&b| b != 0).collect();
            let Ok(m) = serde_json::from_slice::<ManifestLine>(&line) else {
                continue;
            };
            // Only a target the mapping puts inside this worker directory.
            if m.target_is_mapped(job, &wdir)
                && std::fs::symlink_metadata(&m.target).is_ok_and(|md| !md.is_dir())
                && std::fs::remove_file(&m.target).is_ok()
            {
                removed += 1;
            }
        }
        let _ = std::fs::remove_file(&manifest);
    }
    removed
}

fn walk(dir: &Path, rel: &Path, depth: usize, found: &mut usize, f: &mut dyn FnMut(&Path, &Path)) {
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
        let r = rel.join(e.file_name());
        if t.is_dir() {
            walk(&e.path(), &r, depth + 1, found, f);
        } else if t.is_file() {
            *found += 1;
            f(&r, &e.path());
        }
    }
}

/// Runs every merge (or, when the job failed, reports them as skipped).
pub fn run(s: &Setup, job_failed: bool) -> (Vec<Outcome>, Vec<String>) {
    let (groups, warnings) = collect(s);
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
            Some(r) => (Some(r.merger.clone()), r.merger.describe()),
            None if g.inputs.len() == 1 => (
                Some(Merger::First),
                "first (only one worker wrote it)".into(),
            ),
            None => (None, "none".into()),
        };
        let mut o = Outcome {
            group: g,
            output,
            rule: rule.map(|r| r.glob.clone()),
            merger: label,
            status: Status::Skipped,
            reason: None,
            bytes: None,
        };
        match merger {
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
            Some(m) => {
                let inputs: Vec<PathBuf> = o.group.inputs.iter().map(|(_, p)| p.clone()).collect();
                match merge_one(&m, &inputs, &o.output, Some(&o.group.original), s) {
                    Ok(bytes) => {
                        o.status = Status::Merged;
                        o.bytes = Some(bytes);
                    }
                    Err(Refusal::Exists) => {
                        o.status = Status::Refused;
                        o.reason = Some(format!(
                            "{} already exists (use --force to replace it, or --merge-dir); worker files left in place",
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
    (out, warnings)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Exists,
    Failed(String),
}

/// Merges `inputs` into `output` atomically; the size written.
///
/// For `concat`, `base` is the original path: when it exists (a file the
/// workers appended to, which the library copied into each worker's file
/// before the first append), its content comes once, then each worker's
/// additions.
pub fn merge_one(
    m: &Merger,
    inputs: &[PathBuf],
    output: &Path,
    base: Option<&Path>,
    s: &Setup,
) -> Result<u64, Refusal> {
    write_atomic(output, s.force, |tmp| match m {
        Merger::Concat => concat_onto(base, inputs, tmp),
        Merger::First => concat(&inputs[..inputs.len().min(1)], tmp),
        Merger::Command(t) => command(t, inputs, tmp, s),
    })
}

/// Writes through `make(tmp)` into a temporary file next to `output`, then
/// renames it into place; never replaces an existing file unless `force`.
pub fn write_atomic(
    output: &Path,
    force: bool,
    make: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<u64, Refusal> {
    if !force && std::fs::symlink_metadata(output).is_ok() {
        return Err(Refusal::Exists);
    }
    let name = output
        .file_name()
        .ok_or_else(|| Refusal::Failed(format!("{}: not a file name", output.display())))?;
    let dir = output.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Refusal::Failed(format!("cannot create {}: {e}", dir.display())))?;
    // The output's own name last, so a merger that looks at the extension
    // (hadd and .root) sees the right one.
    let mut tmp_name = OsString::from(format!(".mpaudit-merge-{}-", std::process::id()));
    tmp_name.push(name);
    let tmp = dir.join(tmp_name);
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
    if !meta.file_type().is_file() {
        return Err(cleanup(Refusal::Failed(
            "the merger's output is not a regular file".into(),
        )));
    }
    if let Ok(f) = File::open(&tmp) {
        let _ = f.sync_all();
    }
    if force {
        std::fs::rename(&tmp, output).map_err(|e| {
            cleanup(Refusal::Failed(format!(
                "rename to {}: {e}",
                output.display()
            )))
        })?;
    } else {
        rename_noreplace(&tmp, output).map_err(|e| {
            cleanup(if e.kind() == std::io::ErrorKind::AlreadyExists {
                Refusal::Exists
            } else {
                Refusal::Failed(format!("rename to {}: {e}", output.display()))
            })
        })?;
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(meta.len())
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
/// `base` it starts with, if it does.
pub fn concat_onto(base: Option<&Path>, inputs: &[PathBuf], out: &Path) -> Result<(), String> {
    let b = base
        .filter(|b| std::fs::metadata(b).is_ok_and(|m| m.is_file()))
        .map(std::fs::read)
        .transpose()
        .map_err(|e| format!("{}: {e}", base.unwrap_or(Path::new("")).display()))?;
    let Some(b) = b.filter(|b| !b.is_empty()) else {
        return concat(inputs, out);
    };
    let mut w = File::options()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    w.write_all(&b).map_err(|e| e.to_string())?;
    for i in inputs {
        let mut r = File::open(i).map_err(|e| format!("{}: {e}", i.display()))?;
        let mut head = Vec::with_capacity(b.len());
        std::io::Read::by_ref(&mut r)
            .take(b.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| format!("{}: {e}", i.display()))?;
        if head != b {
            w.write_all(&head).map_err(|e| e.to_string())?;
        }
        std::io::copy(&mut r, &mut w).map_err(|e| format!("{}: {e}", i.display()))?;
    }
    w.flush().map_err(|e| e.to_string())
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
        std::io::copy(&mut r, &mut w).map_err(|e| format!("{}: {e}", i.display()))?;
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
            workers: 3,
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
        assert_eq!(original_of(Path::new("_abs/tmp/x"), j), Path::new("/tmp/x"));
        assert_eq!(
            original_of(Path::new("sub/h.txt"), j),
            Path::new("/job/sub/h.txt")
        );
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
        let n = write_atomic(&out, false, |t| concat(&[a.clone(), b.clone()], t)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "worker 0\nworker 1\n"
        );
        assert_eq!(n, 18);
        let s = setup(&d, &d, &[]);
        let first = d.join("first.log");
        merge_one(&Merger::First, &[b.clone(), a.clone()], &first, None, &s).unwrap();
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
        let r = write_atomic(&out, false, |t| {
            ran = true;
            concat(std::slice::from_ref(&a), t)
        });
        assert_eq!(r, Err(Refusal::Exists));
        assert!(!ran, "the merger does not even run");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
        // The output appearing while the merger runs: still not replaced.
        let r = write_atomic(&d.join("race.log"), false, |t| {
            std::fs::write(d.join("race.log"), "theirs\n").unwrap();
            concat(std::slice::from_ref(&a), t)
        });
        assert_eq!(r, Err(Refusal::Exists));
        assert_eq!(
            std::fs::read_to_string(d.join("race.log")).unwrap(),
            "theirs\n"
        );
        write_atomic(&out, true, |t| concat(std::slice::from_ref(&a), t)).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new\n");
    }

    #[test]
    fn a_failing_merger_leaves_nothing() {
        let d = tmp("fail");
        let out = d.join("x.log");
        let r = write_atomic(&out, false, |t| {
            std::fs::write(t, "partial").unwrap();
            Err("boom".into())
        });
        assert_eq!(r, Err(Refusal::Failed("boom".into())));
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        let r = write_atomic(&out, false, |_| Ok(()));
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
        merge_one(&Merger::Command(t), &inputs, &d.join("sum"), None, &s).unwrap();
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
        let r = merge_one(&Merger::Command(t), &inputs, &d.join("h"), None, &s);
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
        let r = merge_one(&Merger::Command(t), &[input], &d.join("out"), None, &s);
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
        let ws: Vec<usize> = groups[1].inputs.iter().map(|(k, _)| *k).collect();
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
}
