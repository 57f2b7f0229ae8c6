//! The validated plan: everything a run needs, resolved from the job file,
//! the command line and the environment. Building it is pure; checks that
//! touch the file system live in [`crate::preflight`].

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cli::{Format, RunOpts};
use crate::duration::{format_duration, parse_duration};
use crate::jobfile::{Action, JobFile, MergeRule, Mode, OnFailure, WorkersSpec};
use crate::workers::{self, Facts};
use mpaudit_core::launcher::{RankDecision, RankOverride};

pub const DEFAULT_WORKERS_DIR: &str = "mpaudit-workers";
pub const DEFAULT_LOG_DIR: &str = "mpaudit-logs";

/// Where the job comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `mpaudit run/check JOB.toml`: the parsed file and its absolute path.
    JobFile { path: PathBuf, file: Box<JobFile> },
    /// `mpaudit exec ... -- CMD`.
    Exec {
        command: Vec<String>,
        mode: Mode,
        outputs: Vec<String>,
        components: Vec<String>,
        allow: Vec<String>,
        allow_conflicts: Vec<String>,
        /// `--merge GLOB=MERGER`, as written, in command-line order.
        merge: Vec<String>,
        seed: Option<u64>,
        /// `--report FILE` (default: standard error).
        report: Option<PathBuf>,
    },
}

/// Where the job's processes' standard streams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Streams {
    /// `mpaudit run`: stdin `/dev/null`, stdout and stderr into
    /// `worker_<k>/stdout.log`, `stderr.log`.
    Logs,
    /// `mpaudit exec` with one process (one worker, or fork mode): the very
    /// descriptors mpaudit got, a terminal staying the terminal (the
    /// process becomes its foreground group while mpaudit is).
    PassThrough,
    /// `mpaudit exec` with several workers: output lines prefixed `k: `
    /// on mpaudit's stdout and stderr, and kept in the log files; stdin to
    /// worker 0.
    Labelled,
}

/// Where the report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTo {
    Stdout,
    /// `mpaudit exec`: standard output is the program's.
    Stderr,
    File(PathBuf),
}

/// The outside world the plan depends on.
#[derive(Debug, Clone)]
pub struct Context {
    /// The runner's working directory (absolute).
    pub cwd: PathBuf,
    /// Environment, affinity and quota for `workers = "auto"`; `facts.env`
    /// is also the environment the workers inherit.
    pub facts: Facts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub action: Action,
    pub outputs: Vec<String>,
    pub components: Vec<String>,
    pub allow: Vec<String>,
    /// `[audit] allow_conflicts` / `--allow-conflicts`: judged by the
    /// report only (never sent to the library).
    pub allow_conflicts: Vec<String>,
}

/// The seccomp supervisor's settings (docs/hooks.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Supervise {
    /// `--supervise` / `[audit] supervise = true`: even a program the
    /// preload could audit.
    pub always: bool,
    /// `[audit] io_uring = "allow"`.
    pub io_uring_allowed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub job_file: Option<PathBuf>,
    pub command: Vec<String>,
    pub mode: Mode,
    pub workers: usize,
    /// Where the worker count came from, e.g. `--workers 4 (command line)`.
    pub workers_source: String,
    pub workers_notes: Vec<String>,
    pub job_dir: PathBuf,
    /// The directory holding this run's `worker_<k>/`: the configured
    /// workers directory, or under a launcher its `rank_<r>/`.
    pub workers_dir: PathBuf,
    /// This run's log directory: under a launcher, `rank_<r>/` of the
    /// configured one, so that ranks sharing a file system never read each
    /// other's logs (a job-wide report reads the configured one whole).
    pub log_dir: PathBuf,
    /// The launcher rank this runner is (mpaudit_core::launcher), if any.
    pub rank: Option<u32>,
    /// Which variable gave the rank, or why there is none (`mpaudit check`).
    #[serde(serialize_with = "ser_rank_decision")]
    pub rank_decision: RankDecision,
    /// The workers directory as configured: what the library is given; it
    /// adds `rank_<r>/` itself (mpaudit_core::map::worker_dir_for).
    pub shared_workers_dir: PathBuf,
    /// Why this run does not merge, when it must not: a rank of a step of
    /// several ranks would merge into the job directory the other ranks
    /// merge into, clobbering their results.
    pub merge_skipped: Option<String>,
    #[serde(serialize_with = "ser_opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(serialize_with = "ser_duration")]
    pub grace: Duration,
    pub seed: Option<u64>,
    /// Extra environment from the job file (`[job] env`).
    pub env: BTreeMap<String, String>,
    pub on_failure: OnFailure,
    pub policy: Policy,
    pub supervise: Supervise,
    /// `[merge]` rules, in file order.
    pub merge: Vec<MergeRule>,
    /// `--merge-dir`: merged outputs go below it instead of in place.
    pub merge_dir: Option<PathBuf>,
    /// `--force`: merges may replace existing files.
    pub force: bool,
    pub streams: Streams,
    #[serde(skip)]
    pub report_to: ReportTo,
    #[serde(skip)]
    pub format: Format,
    #[serde(skip)]
    pub quiet: bool,
}

fn ser_rank_decision<S: serde::Serializer>(d: &RankDecision, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&describe_rank(*d))
}
fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}
fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// Joins `p` to `base` unless absolute, then removes `.` and `..` lexically.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Builds the plan. Errors are one line and mean exit status 2.
pub fn build(source: &Source, opts: &RunOpts, ctx: &Context) -> Result<Plan, String> {
    let grace = parse_duration(&opts.grace).map_err(|e| format!("--grace: {e}"))?;
    let cli_timeout = match &opts.timeout {
        Some(t) => Some(
            parse_duration(t)
                .map_err(|e| format!("--timeout: {}", e.replace("duration", "timeout")))?,
        ),
        None => None,
    };
    let cli_log_dir = opts.log_dir.as_ref().map(|d| resolve(&ctx.cwd, d));
    let cli_workers_dir = opts.workers_dir.as_ref().map(|d| resolve(&ctx.cwd, d));

    let (
        job_file,
        command,
        mode,
        file_workers,
        job_dir,
        timeout,
        seed,
        env,
        on_failure,
        policy,
        workers_dir,
        log_dir,
        merge,
        exec_report,
        mut supervise,
    );
    match source {
        Source::JobFile { path, file } => {
            let base = path.parent().unwrap_or(Path::new("/"));
            job_file = Some(path.clone());
            command = file.job.command.clone();
            mode = file.job.mode.unwrap_or(Mode::Spawn);
            file_workers = file.job.workers;
            job_dir = resolve(base, Path::new(file.job.dir.as_deref().unwrap_or(".")));
            timeout = file.job.timeout.map(|t| t.0);
            seed = file.job.seed;
            env = file.job.env.clone();
            on_failure = file.job.on_failure.unwrap_or(OnFailure::Kill);
            let a = &file.audit;
            policy = Policy {
                action: a.action.unwrap_or(Action::Log),
                outputs: a.outputs.clone().unwrap_or_default(),
                components: a.components.clone().unwrap_or_default(),
                allow: a.allow.clone().unwrap_or_default(),
                allow_conflicts: a.allow_conflicts.clone().unwrap_or_default(),
            };
            workers_dir = resolve(
                &job_dir,
                Path::new(a.workers_dir.as_deref().unwrap_or(DEFAULT_WORKERS_DIR)),
            );
            log_dir = resolve(
                &job_dir,
                Path::new(a.log_dir.as_deref().unwrap_or(DEFAULT_LOG_DIR)),
            );
            merge = file.merge.0.clone();
            exec_report = None;
            supervise = Supervise {
                always: a.supervise.unwrap_or(false),
                io_uring_allowed: a.io_uring == Some(crate::jobfile::IoUring::Allow),
            };
        }
        Source::Exec {
            command: c,
            mode: m,
            outputs,
            components,
            allow,
            allow_conflicts,
            merge: merge_options,
            seed: s,
            report,
        } => {
            if c.is_empty() {
                return Err("no command given after `--`".into());
            }
            job_file = None;
            command = c.clone();
            mode = *m;
            file_workers = None;
            job_dir = ctx.cwd.clone();
            timeout = None;
            seed = *s;
            env = BTreeMap::new();
            on_failure = OnFailure::Kill;
            policy = Policy {
                action: Action::Log,
                outputs: outputs.clone(),
                components: components.clone(),
                allow: allow.clone(),
                allow_conflicts: allow_conflicts.clone(),
            };
            workers_dir = job_dir.join(DEFAULT_WORKERS_DIR);
            log_dir = job_dir.join(DEFAULT_LOG_DIR);
            merge = merge_options
                .iter()
                .map(|m| crate::jobfile::parse_merge_option(m))
                .collect::<Result<_, _>>()?;
            exec_report = Some(match report {
                Some(f) => ReportTo::File(resolve(&ctx.cwd, f)),
                None => ReportTo::Stderr,
            });
            supervise = Supervise::default();
        }
    }

    // Command line over file over default.
    let (spec, origin) = match (opts.workers, file_workers) {
        (Some(w), _) => (w, "command line: --workers"),
        (None, Some(w)) => (w, "job file: workers"),
        (None, None) => (WorkersSpec::Count(1), "default"),
    };
    let (workers, workers_source, workers_notes) = match spec {
        WorkersSpec::Count(n) => (n, format!("{origin} = {n}"), Vec::new()),
        WorkersSpec::Auto => {
            // The job's own env (e.g. ATHENA_PROC_NUMBER) counts as part of
            // the allocation it describes.
            let mut facts = ctx.facts.clone();
            for (k, v) in &env {
                facts.env.insert(k.clone(), v.clone());
            }
            let d = workers::detect(&facts);
            (
                d.count,
                format!("{origin} = \"auto\": {}", d.source),
                d.notes,
            )
        }
    };

    supervise.always |= opts.supervise;
    let mut policy = policy;
    if let Some(a) = opts.action {
        policy.action = a;
    }
    for (name, globs) in [
        ("outputs", &policy.outputs),
        ("components", &policy.components),
        ("allow", &policy.allow),
    ] {
        for g in globs {
            if g.is_empty() {
                return Err(format!("{name}: empty glob"));
            }
            if g.contains(':') {
                return Err(format!(
                    "{name}: glob `{g}` contains `:`, which separates globs in MPAUDIT_{}",
                    name.to_uppercase()
                ));
            }
        }
    }
    if policy.allow_conflicts.iter().any(String::is_empty) {
        return Err("allow_conflicts: empty glob".into());
    }
    for k in env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("env: invalid variable name `{k}`"));
        }
        if k.starts_with("MPAUDIT_") || k == "LD_PRELOAD" {
            return Err(format!(
                "env: `{k}` is set by mpaudit itself and may not be overridden"
            ));
        }
    }

    let rank_scan = mpaudit_core::launcher::scan(
        ctx.facts
            .env
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    );
    if rank_scan.rank_override == RankOverride::Invalid {
        return Err(format!(
            "{}={:?}: must be none or auto",
            mpaudit_core::launcher::RANK_OVERRIDE_VARIABLE,
            ctx.facts.env[mpaudit_core::launcher::RANK_OVERRIDE_VARIABLE]
        ));
    }
    let rank_decision = rank_scan.decision();
    let rank = rank_decision.rank();
    let log_dir = cli_log_dir.unwrap_or(log_dir);
    let workers_dir = cli_workers_dir.unwrap_or(workers_dir);
    let merge_dir = opts.merge_dir.as_ref().map(|d| resolve(&ctx.cwd, d));
    // The step's size from the launcher that gave the rank: under
    // `srun -n1 mpirun -np 2` the step has one task, mpirun two ranks.
    let step_size = rank_decision
        .size_variable()
        .and_then(|v| ctx.facts.env.get(v)?.parse::<u32>().ok());
    let merge_skipped = match (rank, step_size) {
        (Some(r), Some(n)) if n > 1 && merge_dir.is_none() => Some(format!(
            "rank {r} of {n}: merging into the shared job directory would clobber the other \
             ranks' merges; the redirected files stay in {}/rank_{r}/: merge all ranks after \
             the step with `mpaudit merge` (or give each rank its own --merge-dir)",
            workers_dir.display()
        )),
        (Some(r), None) if merge_dir.is_none() => Some(format!(
            "rank {r} of a launcher that does not say how many ranks it started: merging into \
             the shared job directory could clobber the other ranks' merges; the redirected \
             files stay in {}/rank_{r}/: merge all ranks after the step with `mpaudit merge` \
             (or give each rank its own --merge-dir)",
            workers_dir.display()
        )),
        _ => None,
    };
    check_dirs(&job_dir, &workers_dir, &log_dir, source, opts)?;
    let (run_workers_dir, run_log_dir) = match rank {
        Some(r) => (rank_dir(&workers_dir, r), rank_dir(&log_dir, r)),
        None => (workers_dir.clone(), log_dir),
    };
    let (streams, report_to) = match exec_report {
        None => (Streams::Logs, ReportTo::Stdout),
        Some(r) if workers == 1 || mode == Mode::Fork => (Streams::PassThrough, r),
        Some(r) => (Streams::Labelled, r),
    };
    Ok(Plan {
        job_file,
        command,
        mode,
        workers,
        workers_source,
        workers_notes,
        job_dir,
        workers_dir: run_workers_dir,
        log_dir: run_log_dir,
        rank,
        rank_decision,
        shared_workers_dir: workers_dir,
        merge_skipped,
        timeout: cli_timeout.or(timeout),
        grace,
        seed,
        env,
        on_failure: opts.on_failure.unwrap_or(on_failure),
        policy,
        supervise,
        merge,
        merge_dir,
        force: opts.force,
        streams,
        report_to,
        format: opts.format,
        quiet: opts.quiet,
    })
}

/// The workers directory must be one of its own (docs/job-file.md): one
/// that is or holds the job directory (`"."`, `".."`) would put every job
/// file "in a worker directory", and a log directory inside it would be
/// open to the workers. Errors name the setting: `audit.workers_dir: …`
/// for the job file (located by the caller), `--workers-dir: …` for the
/// command line.
fn check_dirs(
    job_dir: &Path,
    workers_dir: &Path,
    log_dir: &Path,
    source: &Source,
    opts: &RunOpts,
) -> Result<(), String> {
    let name = |cli: bool, key: &str, flag: &str| match (cli, source) {
        (false, Source::JobFile { .. }) => format!("audit.{key}"),
        _ => flag.to_string(),
    };
    if job_dir.starts_with(workers_dir) {
        return Err(format!(
            "{}: {} is or holds the job directory {}: every job file would count as a worker's own; give the workers a directory of their own, e.g. \"{DEFAULT_WORKERS_DIR}\"",
            name(opts.workers_dir.is_some(), "workers_dir", "--workers-dir"),
            workers_dir.display(),
            job_dir.display()
        ));
    }
    if log_dir.starts_with(workers_dir) && log_dir != workers_dir {
        return Err(format!(
            "{}: {} is inside the workers directory {}: the workers could write over the logs; give it a directory of its own, e.g. \"{DEFAULT_LOG_DIR}\"",
            name(opts.log_dir.is_some(), "log_dir", "--log-dir"),
            log_dir.display(),
            workers_dir.display()
        ));
    }
    if log_dir == workers_dir {
        return Err(format!(
            "{}: {} is also the workers directory",
            name(opts.log_dir.is_some(), "log_dir", "--log-dir"),
            log_dir.display()
        ));
    }
    Ok(())
}

impl Plan {
    /// Resolves symlinks in the job directory (and the directories derived
    /// from it), as the library does: both judge and map paths against the
    /// canonical spelling, and the report's paths are relative to it. A
    /// directory that does not exist yet keeps its lexical form. Touches
    /// the file system; called once the plan is built.
    pub fn canonicalize_dirs(&mut self) {
        let old = self.job_dir.clone();
        let real = std::fs::canonicalize(&old).unwrap_or_else(|_| old.clone());
        let fix = |p: &mut PathBuf| {
            if let Ok(c) = std::fs::canonicalize(&*p) {
                *p = c;
            } else if let Ok(rest) = p.strip_prefix(&old) {
                *p = real.join(rest);
            }
        };
        fix(&mut self.workers_dir);
        fix(&mut self.shared_workers_dir);
        fix(&mut self.log_dir);
        if let Some(m) = &mut self.merge_dir {
            fix(m);
        }
        self.job_dir = real;
    }
}

/// The rank line of `mpaudit check`: the rank and the variable that gave
/// it, or why there is none.
fn describe_rank(d: RankDecision) -> String {
    match d {
        RankDecision::Rank { rank, variable, .. } => {
            format!("{rank} (from {variable}; workers and logs in rank_{rank}/)")
        }
        RankDecision::Disabled => "none (MPAUDIT_RANK=none)".into(),
        RankDecision::BatchScript => {
            "none (SLURM_PROCID outside a job step: a batch script is the whole job)".into()
        }
        RankDecision::OneTaskStep => "none (SLURM_PROCID of a one-task Slurm step with no MPI \
                                      rank variable: one task is no parallel job)"
            .into(),
        RankDecision::NoLauncher => "none (no launcher rank variable)".into(),
    }
}

/// `<dir>/rank_<r>`, named as the library names it.
fn rank_dir(dir: &Path, rank: u32) -> PathBuf {
    let name = String::from_utf8_lossy(mpaudit_core::map::RANK_PREFIX);
    dir.join(format!("{name}{rank}"))
}

/// SplitMix64: a documented, stable mixing function.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Worker k's seed: `splitmix64(seed + k)` (wrapping), in decimal.
pub fn worker_seed(seed: u64, k: usize) -> u64 {
    splitmix64(seed.wrapping_add(k as u64))
}

impl Plan {
    pub fn worker_dir(&self, k: usize) -> PathBuf {
        self.workers_dir.join(format!("worker_{k}"))
    }

    /// Directory of a process's stdout/stderr: `worker_<k>/` in spawn mode,
    /// `root/` for the single process of fork mode.
    pub fn output_dir(&self, k: Option<usize>) -> PathBuf {
        match k {
            Some(k) => self.worker_dir(k),
            None => self.workers_dir.join("root"),
        }
    }

    /// The variables mpaudit sets for a process (worker `k` in spawn mode,
    /// `None` for the root of fork mode), on top of the inherited
    /// environment and the job's `env`.
    pub fn mpaudit_env(
        &self,
        k: Option<usize>,
        preload: &Path,
        inherited_ld_preload: Option<&str>,
    ) -> Vec<(String, String)> {
        let mut ld = preload.display().to_string();
        if let Some(old) = inherited_ld_preload.filter(|s| !s.is_empty()) {
            ld.push(':');
            ld.push_str(old);
        }
        let mut v = vec![
            ("LD_PRELOAD".to_string(), ld),
            ("MPAUDIT_LOG_DIR".into(), self.log_dir.display().to_string()),
            ("MPAUDIT_JOB_DIR".into(), self.job_dir.display().to_string()),
            (
                "MPAUDIT_WORKERS_DIR".into(),
                self.shared_workers_dir.display().to_string(),
            ),
            ("MPAUDIT_WORKERS".into(), self.workers.to_string()),
            ("MPAUDIT_ACTION".into(), self.policy.action.as_str().into()),
            ("MPAUDIT_OUTPUTS".into(), self.policy.outputs.join(":")),
            (
                "MPAUDIT_COMPONENTS".into(),
                self.policy.components.join(":"),
            ),
            ("MPAUDIT_ALLOW".into(), self.policy.allow.join(":")),
        ];
        match k {
            Some(k) => v.push(("MPAUDIT_WORKER".into(), k.to_string())),
            None => v.push(("MPAUDIT_FORK_WORKERS".into(), "1".into())),
        }
        if let Some(seed) = self.seed {
            v.push(("MPAUDIT_SEED_BASE".into(), seed.to_string()));
            if let Some(k) = k {
                v.push(("MPAUDIT_SEED".into(), worker_seed(seed, k).to_string()));
            }
        }
        v
    }

    /// The plan as `mpaudit check` prints it.
    pub fn render(&self, preload: Result<&Path, &str>, program: Option<&Path>) -> String {
        let mut s = String::new();
        let q = |v: &[String]| {
            v.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if let Some(f) = &self.job_file {
            s += &format!("job file:    {}\n", f.display());
        }
        s += &format!("command:     {}\n", q(&self.command));
        if let Some(p) = program {
            s += &format!("program:     {}\n", p.display());
            if let Some(why) = crate::seccomp::why(self, p) {
                s += &format!(
                    "             audited by the seccomp supervisor ({})\n",
                    why.describe()
                );
            }
        }
        s += &format!("mode:        {}\n", self.mode.as_str());
        s += &format!("workers:     {} ({})\n", self.workers, self.workers_source);
        for n in &self.workers_notes {
            s += &format!("             note: {n}\n");
        }
        s += &format!("job dir:     {}\n", self.job_dir.display());
        s += &format!(
            "workers dir: {} (worker_<k>/stdout.log, stderr.log)\n",
            self.workers_dir.display()
        );
        s += &format!("log dir:     {}\n", self.log_dir.display());
        s += &format!("rank:        {}\n", describe_rank(self.rank_decision));
        if let Some(why) = &self.merge_skipped {
            s += &format!("             note: not merging: {why}\n");
        }
        s += &format!(
            "timeout:     {}\n",
            self.timeout
                .map(format_duration)
                .unwrap_or_else(|| "none".into())
        );
        s += &format!("grace:       {}\n", format_duration(self.grace));
        s += &format!("on failure:  {}\n", self.on_failure.as_str());
        s += &format!(
            "seed:        {}\n",
            self.seed
                .map(|x| x.to_string())
                .unwrap_or_else(|| "none".into())
        );
        s += "policy:\n";
        s += &format!("  action:     {}\n", self.policy.action.as_str());
        s += &format!("  outputs:    {}\n", list(&self.policy.outputs));
        s += &format!("  components: {}\n", list(&self.policy.components));
        s += &format!("  allow:      {}\n", list(&self.policy.allow));
        if !self.policy.allow_conflicts.is_empty() {
            s += &format!(
                "  allow conflicts: {}\n",
                list(&self.policy.allow_conflicts)
            );
        }
        if !self.merge.is_empty() || self.merge_dir.is_some() {
            s += "merge:\n";
            for r in &self.merge {
                s += &format!("  {}  ->  {}\n", r.glob, r.merger.describe());
            }
            if let Some(d) = &self.merge_dir {
                s += &format!("  into:       {}\n", d.display());
            }
            if self.force {
                s += "  (--force: existing files are replaced)\n";
            }
        }
        s += "environment:\n";
        for (k, v) in &self.env {
            s += &format!("  {k}={v}\n");
        }
        let preload_path = match preload {
            Ok(p) => p.to_path_buf(),
            Err(e) => {
                s += &format!("  (libmpaudit.so not found: {e})\n");
                PathBuf::from("<libmpaudit.so>")
            }
        };
        let example = match self.mode {
            Mode::Spawn => Some(0),
            Mode::Fork => None,
        };
        for (k, v) in self.mpaudit_env(example, &preload_path, None) {
            s += &format!("  {k}={v}\n");
        }
        if self.mode == Mode::Spawn && self.workers > 1 {
            s += &format!(
                "  (worker k gets MPAUDIT_WORKER=k, k = 0..{})\n",
                self.workers - 1
            );
        }
        s
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

pub fn shell_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobfile;

    fn ctx(env: &[(&str, &str)]) -> Context {
        Context {
            cwd: PathBuf::from("/home/u"),
            facts: Facts {
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                pbs_nodefile_slots: None,
                affinity: Some(8),
                cgroup_quota: None,
            },
        }
    }

    fn opts() -> RunOpts {
        RunOpts {
            grace: "10s".into(),
            ..Default::default()
        }
    }

    fn src(text: &str) -> Source {
        Source::JobFile {
            path: PathBuf::from("/jobs/a/job.toml"),
            file: Box::new(jobfile::parse(text).unwrap()),
        }
    }

    #[test]
    fn a_rank_keeps_its_workers_and_logs_in_rank_dirs() {
        let text = "[job]\ncommand = [\"./run.sh\"]\n";
        let step = [
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "3"),
            ("SLURM_STEP_NUM_TASKS", "4"),
        ];
        let p = build(&src(text), &opts(), &ctx(&step)).unwrap();
        assert_eq!(p.rank, Some(3));
        assert_eq!(
            p.shared_workers_dir,
            PathBuf::from("/jobs/a/mpaudit-workers")
        );
        assert_eq!(
            p.workers_dir,
            PathBuf::from("/jobs/a/mpaudit-workers/rank_3")
        );
        assert_eq!(p.log_dir, PathBuf::from("/jobs/a/mpaudit-logs/rank_3"));
        // The library is given the shared directory and composes the same
        // path from it (mpaudit_core::map::worker_dir_for).
        let env = p.mpaudit_env(Some(1), Path::new("/lib.so"), None);
        let given = &env
            .iter()
            .find(|(k, _)| k == "MPAUDIT_WORKERS_DIR")
            .unwrap()
            .1;
        let mut out = [0u8; 256];
        let n = mpaudit_core::map::worker_dir_for(given.as_bytes(), Some(3), 1, &mut out).unwrap();
        assert_eq!(
            p.worker_dir(1),
            PathBuf::from(std::str::from_utf8(&out[..n]).unwrap())
        );
        assert!(p.merge_skipped.as_deref().unwrap().contains("rank 3 of 4"));
        let shown = p.render(Ok(Path::new("/lib.so")), None);
        assert!(shown.contains("rank:        3 "), "{shown}");
        assert!(shown.contains("not merging: rank 3 of 4"), "{shown}");

        // One rank merges as usual; so does a rank given its own merge dir.
        let one = [
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_NUM_TASKS", "1"),
        ];
        assert_eq!(
            build(&src(text), &opts(), &ctx(&one))
                .unwrap()
                .merge_skipped,
            None
        );
        let mut o = opts();
        o.merge_dir = Some("merged".into());
        assert_eq!(
            build(&src(text), &o, &ctx(&step)).unwrap().merge_skipped,
            None
        );

        // Not under a launcher (nor in a Slurm batch script): as before.
        for env in [&[][..], &[("SLURM_PROCID", "0")][..]] {
            let p = build(&src(text), &opts(), &ctx(env)).unwrap();
            assert_eq!(p.rank, None);
            assert_eq!(p.workers_dir, p.shared_workers_dir);
            assert_eq!(p.log_dir, PathBuf::from("/jobs/a/mpaudit-logs"));
        }
    }

    /// Regression (review 1, item 6): `srun -n1 mpirun -np 2 mpaudit run`
    /// made both runners rank 0 (SLURM_PROCID won), both used rank_0/ and
    /// merged into the job directory (the step's size, 1, allowed it).
    #[test]
    fn mpirun_inside_an_srun_step_takes_mpirun_s_rank_and_size() {
        let text = "[job]\ncommand = [\"./run.sh\"]\n";
        for r in [0u32, 1] {
            let rank = r.to_string();
            let env = [
                ("SLURM_STEP_ID", "0"),
                ("SLURM_PROCID", "0"),
                ("SLURM_STEP_NUM_TASKS", "1"),
                ("OMPI_COMM_WORLD_RANK", rank.as_str()),
                ("OMPI_COMM_WORLD_SIZE", "2"),
            ];
            let p = build(&src(text), &opts(), &ctx(&env)).unwrap();
            assert_eq!(p.rank, Some(r));
            assert_eq!(
                p.log_dir,
                PathBuf::from(format!("/jobs/a/mpaudit-logs/rank_{r}"))
            );
            let why = p.merge_skipped.as_deref().unwrap_or("");
            assert!(why.contains(&format!("rank {r} of 2")), "{why:?}");
            let shown = p.render(Ok(Path::new("/lib.so")), None);
            assert!(
                shown.contains(&format!("rank:        {r} (from OMPI_COMM_WORLD_RANK;")),
                "{shown}"
            );
        }
    }

    /// Regression (review 1, item 7): a batch script submitted from an
    /// srun step (or a shell of `srun --pty bash`) was rank 0 of its
    /// one-task step; `MPAUDIT_RANK=none` turns any rank off.
    #[test]
    fn a_one_task_step_is_no_rank_and_check_says_why() {
        let text = "[job]\ncommand = [\"./run.sh\"]\n";
        let one_task = [
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_NUM_TASKS", "1"),
        ];
        let p = build(&src(text), &opts(), &ctx(&one_task)).unwrap();
        assert_eq!(p.rank, None);
        assert_eq!(p.workers_dir, PathBuf::from("/jobs/a/mpaudit-workers"));
        let shown = p.render(Ok(Path::new("/lib.so")), None);
        assert!(
            shown.contains("rank:        none (SLURM_PROCID of a one-task"),
            "{shown}"
        );

        let off = [
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "2"),
            ("SLURM_STEP_NUM_TASKS", "4"),
            ("MPAUDIT_RANK", "none"),
        ];
        let p = build(&src(text), &opts(), &ctx(&off)).unwrap();
        assert_eq!(p.rank, None);
        assert_eq!(p.merge_skipped, None);
        let shown = p.render(Ok(Path::new("/lib.so")), None);
        assert!(
            shown.contains("rank:        none (MPAUDIT_RANK=none)"),
            "{shown}"
        );

        let bad = [("MPAUDIT_RANK", "0")];
        let e = build(&src(text), &opts(), &ctx(&bad)).unwrap_err();
        assert!(
            e.contains("MPAUDIT_RANK") && e.contains("none or auto"),
            "{e}"
        );
    }

    #[test]
    fn defaults_from_minimal_file() {
        let p = build(
            &src("[job]\ncommand = [\"./run.sh\"]\n"),
            &opts(),
            &ctx(&[]),
        )
        .unwrap();
        assert_eq!(p.workers, 1);
        assert_eq!(p.workers_source, "default = 1");
        assert_eq!(p.mode, Mode::Spawn);
        assert_eq!(p.job_dir, PathBuf::from("/jobs/a"));
        assert_eq!(p.workers_dir, PathBuf::from("/jobs/a/mpaudit-workers"));
        assert_eq!(p.log_dir, PathBuf::from("/jobs/a/mpaudit-logs"));
        assert_eq!(p.timeout, None);
        assert_eq!(p.on_failure, OnFailure::Kill);
        assert_eq!(p.policy.action, Action::Log);
    }

    #[test]
    fn dirs_resolve_relative_to_job_file_then_job_dir() {
        let p = build(
            &src("[job]\ncommand = [\"x\"]\ndir = \"../run\"\n[audit]\nworkers_dir = \"w\"\nlog_dir = \"/tmp/logs\"\n"),
            &opts(),
            &ctx(&[]),
        )
        .unwrap();
        assert_eq!(p.job_dir, PathBuf::from("/jobs/run"));
        assert_eq!(p.workers_dir, PathBuf::from("/jobs/run/w"));
        assert_eq!(p.log_dir, PathBuf::from("/tmp/logs"));
    }

    #[test]
    fn command_line_overrides_file() {
        let text = "[job]\ncommand = [\"x\"]\nworkers = 4\ntimeout = \"30m\"\non_failure = \"continue\"\n[audit]\naction = \"redirect\"\n";
        let mut o = opts();
        o.workers = Some(WorkersSpec::Count(2));
        o.timeout = Some("5s".into());
        o.action = Some(Action::Deny);
        o.on_failure = Some(OnFailure::Kill);
        o.log_dir = Some("logs".into());
        let p = build(&src(text), &o, &ctx(&[])).unwrap();
        assert_eq!(p.workers, 2);
        assert_eq!(p.workers_source, "command line: --workers = 2");
        assert_eq!(p.timeout, Some(Duration::from_secs(5)));
        assert_eq!(p.policy.action, Action::Deny);
        assert_eq!(p.on_failure, OnFailure::Kill);
        assert_eq!(p.log_dir, PathBuf::from("/home/u/logs"));
        let p = build(&src(text), &opts(), &ctx(&[])).unwrap();
        assert_eq!(p.workers, 4);
        assert_eq!(p.workers_source, "job file: workers = 4");
        assert_eq!(p.timeout, Some(Duration::from_secs(1800)));
        assert_eq!(p.on_failure, OnFailure::Continue);
    }

    #[test]
    fn auto_workers_use_the_environment_and_job_env() {
        let text = "[job]\ncommand = [\"x\"]\nworkers = \"auto\"\n";
        let p = build(&src(text), &opts(), &ctx(&[("NSLOTS", "3")])).unwrap();
        assert_eq!(p.workers, 3);
        assert_eq!(
            p.workers_source,
            "job file: workers = \"auto\": NSLOTS=3 [SGE]"
        );
        let text =
            "[job]\ncommand = [\"x\"]\nworkers = \"auto\"\nenv = { ATHENA_PROC_NUMBER = \"2\" }\n";
        let p = build(&src(text), &opts(), &ctx(&[("NSLOTS", "3")])).unwrap();
        assert_eq!(p.workers, 2);
    }

    #[test]
    fn bad_options() {
        let text = "[job]\ncommand = [\"x\"]\n";
        let mut o = opts();
        o.timeout = Some("-1m".into());
        assert!(build(&src(text), &o, &ctx(&[]))
            .unwrap_err()
            .contains("negative timeout"));
        let mut o = opts();
        o.grace = "soon".into();
        assert!(build(&src(text), &o, &ctx(&[]))
            .unwrap_err()
            .starts_with("--grace"));
        let e = build(
            &src("[job]\ncommand = [\"x\"]\n[audit]\noutputs = [\"a:b\"]\n"),
            &opts(),
            &ctx(&[]),
        )
        .unwrap_err();
        assert!(e.contains("MPAUDIT_OUTPUTS"), "{e}");
        let e = build(
            &src("[job]\ncommand = [\"x\"]\nenv = { LD_PRELOAD = \"x\" }\n"),
            &opts(),
            &ctx(&[]),
        )
        .unwrap_err();
        assert!(e.contains("LD_PRELOAD"), "{e}");
    }

    #[test]
    fn exec_source() {
        let s = Source::Exec {
            command: vec!["sh".into(), "-c".into(), "true".into()],
            mode: Mode::Fork,
            outputs: vec!["*.root".into()],
            components: vec![],
            allow: vec![],
            allow_conflicts: vec![],
            merge: vec![
                "hist.root=hadd -f {output} {inputs}".into(),
                "*.log=concat".into(),
            ],
            seed: Some(1),
            report: None,
        };
        let p = build(&s, &opts(), &ctx(&[])).unwrap();
        assert_eq!(p.job_dir, PathBuf::from("/home/u"));
        assert_eq!(p.mode, Mode::Fork);
        assert_eq!(p.policy.outputs, ["*.root"]);
        let rules: Vec<_> = p
            .merge
            .iter()
            .map(|r| format!("{} -> {}", r.glob, r.merger.describe()))
            .collect();
        assert_eq!(
            rules,
            ["hist.root -> hadd -f {output} {inputs}", "*.log -> concat"]
        );
        // A bad rule is a plan error naming the option.
        let mut bad = s.clone();
        if let Source::Exec { merge, .. } = &mut bad {
            merge.push("x.root=hadd {inputs}".into());
        }
        let e = build(&bad, &opts(), &ctx(&[])).unwrap_err();
        assert!(e.starts_with("--merge 'x.root=hadd {inputs}'"), "{e}");
    }

    #[test]
    fn exec_keeps_the_terminal_and_reports_elsewhere() {
        let exec = |mode: Mode, report: Option<&str>| Source::Exec {
            command: vec!["sort".into()],
            mode,
            outputs: vec![],
            components: vec![],
            allow: vec![],
            allow_conflicts: vec![],
            merge: vec![],
            seed: None,
            report: report.map(PathBuf::from),
        };
        let p = build(&exec(Mode::Spawn, None), &opts(), &ctx(&[])).unwrap();
        assert_eq!(
            (p.streams, p.report_to),
            (Streams::PassThrough, ReportTo::Stderr)
        );
        let mut two = opts();
        two.workers = Some(WorkersSpec::Count(2));
        let p = build(&exec(Mode::Spawn, Some("r.json")), &two, &ctx(&[])).unwrap();
        assert_eq!(p.streams, Streams::Labelled);
        assert_eq!(p.report_to, ReportTo::File(PathBuf::from("/home/u/r.json")));
        // Fork mode: one process, whatever the worker count.
        let p = build(&exec(Mode::Fork, None), &two, &ctx(&[])).unwrap();
        assert_eq!(p.streams, Streams::PassThrough);
        let p = build(&src("[job]\ncommand = [\"x\"]\n"), &two, &ctx(&[])).unwrap();
        assert_eq!((p.streams, p.report_to), (Streams::Logs, ReportTo::Stdout));
    }

    #[test]
    fn workers_and_log_dirs_from_the_command_line() {
        let mut o = opts();
        o.workers_dir = Some("../scratch/w".into());
        o.log_dir = Some("/tmp/l".into());
        let s = Source::Exec {
            command: vec!["true".into()],
            mode: Mode::Spawn,
            outputs: vec![],
            components: vec![],
            allow: vec![],
            allow_conflicts: vec![],
            merge: vec![],
            seed: None,
            report: None,
        };
        let p = build(&s, &o, &ctx(&[])).unwrap();
        assert_eq!(p.job_dir, PathBuf::from("/home/u"));
        assert_eq!(p.workers_dir, PathBuf::from("/home/scratch/w"));
        assert_eq!(p.log_dir, PathBuf::from("/tmp/l"));
        let p = build(&src("[job]\ncommand = [\"x\"]\n"), &o, &ctx(&[])).unwrap();
        assert_eq!(p.workers_dir, PathBuf::from("/home/scratch/w"));
    }

    #[test]
    fn environment_for_workers() {
        let text = "[job]\ncommand = [\"x\"]\nworkers = 2\nseed = 0\n[audit]\naction = \"redirect\"\noutputs = [\"*.root\", \"h-*.txt\"]\n";
        let p = build(&src(text), &opts(), &ctx(&[])).unwrap();
        let env: BTreeMap<_, _> = p
            .mpaudit_env(Some(1), Path::new("/opt/libmpaudit.so"), Some("/other.so"))
            .into_iter()
            .collect();
        assert_eq!(env["LD_PRELOAD"], "/opt/libmpaudit.so:/other.so");
        assert_eq!(env["MPAUDIT_WORKER"], "1");
        assert_eq!(env["MPAUDIT_OUTPUTS"], "*.root:h-*.txt");
        assert_eq!(env["MPAUDIT_ACTION"], "redirect");
        assert_eq!(env["MPAUDIT_LOG_DIR"], "/jobs/a/mpaudit-logs");
        assert_eq!(env["MPAUDIT_WORKERS_DIR"], "/jobs/a/mpaudit-workers");
        assert_eq!(env["MPAUDIT_JOB_DIR"], "/jobs/a");
        assert_eq!(env["MPAUDIT_SEED"], worker_seed(0, 1).to_string());
        assert!(!env.contains_key("MPAUDIT_FORK_WORKERS"));
        let env: BTreeMap<_, _> = p
            .mpaudit_env(None, Path::new("/l.so"), None)
            .into_iter()
            .collect();
        assert_eq!(env["MPAUDIT_FORK_WORKERS"], "1");
        assert_eq!(env["LD_PRELOAD"], "/l.so");
        assert!(!env.contains_key("MPAUDIT_WORKER"));
        assert_eq!(env["MPAUDIT_SEED_BASE"], "0");
    }

    #[test]
    fn seeds_are_stable_and_distinct() {
        // The published SplitMix64 reference value for state 0.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(worker_seed(12345, 0), splitmix64(12345));
        assert_ne!(worker_seed(12345, 0), worker_seed(12345, 1));
    }

    #[test]
    fn lexical_resolution() {
        assert_eq!(
            resolve(Path::new("/a/b"), Path::new("../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(
            resolve(Path::new("/a"), Path::new("/x/y")),
            PathBuf::from("/x/y")
        );
    }
}
