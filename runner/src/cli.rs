//! Command-line arguments, as clap parses them: the low-level form. They are
//! validated into a [`crate::plan::Plan`] before anything runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::jobfile::{Action, Mode, OnFailure, WorkersSpec};

const EXAMPLES: &str = "\
Examples:
  # Run a job file: 4 workers (or \"auto\"), per-worker logs in mpaudit-workers/worker_<k>/
  mpaudit run job.toml
  mpaudit run job.toml --workers auto --action redirect --timeout 30m
  # Redirect rogue writes, then merge them ([merge] in the job file) elsewhere
  mpaudit run job.toml --action redirect --merge-dir merged

  # Check a job file and print the resolved plan, without running anything
  SLURM_CPUS_PER_TASK=8 mpaudit check job.toml

  # Ad hoc, like strace: 2 copies of a command, each with MPAUDIT_WORKER=k
  mpaudit exec --workers 2 --outputs '*.root' -- python3 job.py --events 200
  # A framework that forks its own workers (AthenaMP style)
  mpaudit exec --mode fork --action redirect -- athena.py --nprocs=4 jobOptions.py
  # ... and merge what each worker wrote to hist.root, and summary.log
  mpaudit exec --mode fork --action redirect --merge 'hist.root=hadd -f {output} {inputs}' \\
    --merge 'summary.log=concat' -- athena.py --nprocs=4 jobOptions.py

  # After `srun -n 4 mpaudit exec --action redirect -- prog`: merge the ranks
  mpaudit merge --job job.toml

  # Report from existing logs, e.g. gathered from several nodes, as JSON
  mpaudit report node1/mpaudit-logs node2/mpaudit-logs --format json

  # Where is libmpaudit.so?
  mpaudit lib-path

Exit status:
  0  the job succeeded, every process was audited, no rogue write, no conflict
  1  rogue writes, or files written by several workers (conflicts) that no
     [merge] rule merged and no allow_conflicts glob allows
  2  usage or job-file error (nothing was started)
  3  the job failed: a worker failed, timed out or was interrupted, or a merge
     failed or was interrupted (wins over all below)
  4  the audit is incomplete: no process loaded the library, or some ran
     unaudited (wins over 1 and 0)

Library lookup: --preload PATH, then $MPAUDIT_PRELOAD, then libmpaudit.so next
to the mpaudit executable, then ../lib/ relative to it, then the copy built into
mpaudit, written out to $XDG_CACHE_HOME/mpaudit/<hash>/ (or ~/.cache/mpaudit,
then $TMPDIR/mpaudit-<uid>).";

/// Run forked batch jobs under libmpaudit.so, supervise them, and report the
/// rogue writers: legacy code that writes files directly instead of through
/// per-worker output components, so that workers clobber each other.
#[derive(Debug, Parser)]
#[command(name = "mpaudit", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the job described by a job file and report rogue writes.
    #[command(
        after_help = "Example:\n  mpaudit run job.toml --workers auto --timeout 30m --format json > report.json\n\nCommand-line options override the job file. Exit status: 0 ok, 1 rogue writes or conflicts, 2 usage error, 3 job or merge failed, 4 audit incomplete."
    )]
    Run(RunArgs),
    /// Run a command ad hoc, without a job file (like strace).
    #[command(
        after_help = "Examples:\n  printf 'b\\na\\n' | mpaudit exec -- sort\n  mpaudit exec --workers 4 --outputs '*.root' -- ./myjob --events 100\n  mpaudit exec --mode fork --action redirect -- athena.py --nprocs=4 jo.py\n  cd /cvmfs/release && mpaudit exec --workers-dir /tmp/w --log-dir /tmp/l -- ./job\n\nThe job directory is the current directory. The program keeps the terminal: one process (one worker, or fork mode) gets mpaudit's stdin, stdout and stderr themselves; several workers' output lines are prefixed `k: ` (also kept in worker_<k>/stdout.log, stderr.log) and worker 0 gets stdin. The report goes to stderr (or --report FILE). Exit status: 0 ok, 1 rogue writes or conflicts, 2 usage error, 3 job failed, 4 audit incomplete."
    )]
    Exec(ExecArgs),
    /// Report from existing event logs (one or more log directories).
    #[command(
        after_help = "Examples:\n  mpaudit report mpaudit-logs\n  mpaudit report mpaudit-logs --run 4242-1763750000123456789\n  mpaudit report node*/mpaudit-logs --format json --job-dir /scratch/job42\n\nReports the latest run in each log directory unless --run or --all-runs.\nExit status: 0 clean, 1 rogue writes or conflicts, 2 usage error, 3 the run's job failed, 4 the audit is incomplete (no logs, unaudited processes)."
    )]
    Report(ReportArgs),
    /// Merge the per-worker files of a workers directory by [merge] rules:
    /// after a job step's ranks, or a run with LD_PRELOAD alone.
    #[command(
        after_help = "Examples:\n  mpaudit merge --merge 'same.txt=concat'\n  mpaudit merge --job job.toml\n  mpaudit merge /scratch/job/mpaudit-workers --job-dir /scratch/job --merge '*.root=hadd -f {output} {inputs}'\n\nEvery worker_<k>/ and rank_<r>/worker_<k>/ of the workers directory is merged: the files their manifests list, and those a rule matches. Exit status: 0 all merged, 1 files several workers wrote that no rule merges (left in place), 2 usage error, 3 a merge failed or was refused."
    )]
    Merge(MergeArgs),
    /// Validate a job file and print the resolved plan; runs nothing.
    #[command(
        after_help = "Example:\n  SLURM_CPUS_PER_TASK=8 mpaudit check job.toml --workers auto\n\nExit status: 0 the job file is valid, 2 it is not."
    )]
    Check(CheckArgs),
    /// Print the absolute path of libmpaudit.so.
    #[command(
        name = "lib-path",
        after_help = "Example:\n  LD_PRELOAD=$(mpaudit lib-path) MPAUDIT_LOG_DIR=logs ./prog"
    )]
    LibPath(LibPathArgs),
}

#[derive(Debug, Clone, Args, Default)]
pub struct RunOpts {
    /// Number of workers, or "auto" for the batch allocation (ATHENA_PROC_NUMBER,
    /// Slurm, PBS, SGE, LSF, then CPU affinity and cgroup quota).
    #[arg(long, value_name = "N|auto", value_parser = parse_workers)]
    pub workers: Option<WorkersSpec>,
    /// What the library does with a rogue write.
    #[arg(long, value_enum)]
    pub action: Option<Action>,
    /// Stop the job after this long (e.g. 30m, 1h30m, 90s).
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    pub timeout: Option<String>,
    /// Time between SIGTERM and SIGKILL when stopping workers.
    #[arg(
        long,
        value_name = "DUR",
        default_value = "10s",
        allow_hyphen_values = true
    )]
    pub grace: String,
    /// Directory for the event logs (default: <job dir>/mpaudit-logs).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Directory holding worker_<k>/ (redirected files, per-worker output)
    /// (default: <job dir>/mpaudit-workers). With --log-dir, a job directory
    /// that is read-only (a CVMFS release area) works.
    #[arg(long, value_name = "DIR")]
    pub workers_dir: Option<PathBuf>,
    /// What to do with the other workers when one fails.
    #[arg(long, value_enum)]
    pub on_failure: Option<OnFailure>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Print only the report's summary (the status and its reasons; no live
    /// status line on the terminal); `check`: print nothing unless wrong.
    #[arg(long, short)]
    pub quiet: bool,
    /// Path of libmpaudit.so (default: $MPAUDIT_PRELOAD, then next to mpaudit,
    /// then the copy built into mpaudit; see "Library lookup" in --help).
    #[arg(long, value_name = "PATH")]
    pub preload: Option<PathBuf>,
    /// Write merged outputs below DIR (job-relative paths kept) instead of
    /// at their original place.
    #[arg(long, value_name = "DIR")]
    pub merge_dir: Option<PathBuf>,
    /// Let merges replace files that already exist.
    #[arg(long)]
    pub force: bool,
    /// Run the command under the seccomp supervisor even if the preload
    /// library could audit it (static and Go programs always are).
    #[arg(long)]
    pub supervise: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (see docs/job-file.md).
    #[arg(value_name = "JOB.toml")]
    pub job: PathBuf,
    #[command(flatten)]
    pub opts: RunOpts,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub opts: RunOpts,
    /// spawn: N copies of the command; fork: one process that forks its workers.
    #[arg(long, value_enum, default_value = "spawn")]
    pub mode: Mode,
    /// Declared outputs (glob; repeatable).
    #[arg(long, value_name = "GLOB")]
    pub outputs: Vec<String>,
    /// Registered I/O components (glob on the object's path; repeatable).
    #[arg(long, value_name = "GLOB")]
    pub components: Vec<String>,
    /// Paths anyone may write (glob; repeatable).
    #[arg(long, value_name = "GLOB")]
    pub allow: Vec<String>,
    /// Paths several workers may write without failing the audit (glob;
    /// repeatable), like `[audit] allow_conflicts`.
    #[arg(long, value_name = "GLOB")]
    pub allow_conflicts: Vec<String>,
    /// Merge rule, like a `[merge]` entry (repeatable; the first matching
    /// glob wins): GLOB=concat, GLOB=first, GLOB=PROG ARG... (split at
    /// spaces: no quoting, no shell; write `sh` yourself if you need one)
    /// or GLOB=["prog", "arg", ...] (a JSON array, for arguments with
    /// spaces). {output} is the merged file, {inputs} the worker files.
    #[arg(long, value_name = "GLOB=MERGER")]
    pub merge: Vec<String>,
    /// Seed from which each worker's MPAUDIT_SEED is derived.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the report to FILE instead of standard error.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Log directories (searched recursively for mpaudit-<pid>-<ns>.jsonl).
    #[arg(required = true, value_name = "LOGDIR")]
    pub logdirs: Vec<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Show paths relative to this directory (default: the job directory
    /// recorded by `mpaudit run` in the log directory, if any).
    #[arg(long, value_name = "DIR")]
    pub job_dir: Option<PathBuf>,
    /// Report this run (an id the report shows, `<pid>-<ns>`) instead of
    /// the latest in each log directory.
    #[arg(long, value_name = "ID", conflicts_with = "all_runs")]
    pub run: Option<String>,
    /// Report every run in the log directories together.
    #[arg(long)]
    pub all_runs: bool,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The workers directory: its worker_<k>/ and rank_<r>/worker_<k>/
    /// (default: the job file's workers_dir with --job, else
    /// ./mpaudit-workers).
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Take the [merge] rules, the job directory, the workers directory and
    /// the timeout from this job file.
    #[arg(long, value_name = "JOB.toml")]
    pub job: Option<PathBuf>,
    /// Merge rule, as for `exec` (repeatable; before the job file's rules).
    #[arg(long, value_name = "GLOB=MERGER")]
    pub merge: Vec<String>,
    /// The job directory the workers wrote in (default: the job file's,
    /// else the current directory).
    #[arg(long, value_name = "DIR")]
    pub job_dir: Option<PathBuf>,
    /// Write merged outputs below DIR instead of at their original place.
    #[arg(long, value_name = "DIR")]
    pub merge_dir: Option<PathBuf>,
    /// Let merges replace files that already exist.
    #[arg(long)]
    pub force: bool,
    /// Stop a merge command after this long (default: the job file's
    /// timeout, else none).
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    pub timeout: Option<String>,
    /// Time between SIGTERM and SIGKILL when stopping a merge command.
    #[arg(
        long,
        value_name = "DUR",
        default_value = "10s",
        allow_hyphen_values = true
    )]
    pub grace: String,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Print only the summary (the status, and each failed merge's reason).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The job file.
    #[arg(value_name = "JOB.toml")]
    pub job: PathBuf,
    #[command(flatten)]
    pub opts: RunOpts,
}

#[derive(Debug, Args)]
pub struct LibPathArgs {
    /// Path of libmpaudit.so to check instead of searching.
    #[arg(long, value_name = "PATH")]
    pub preload: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

fn parse_workers(s: &str) -> Result<WorkersSpec, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_command_after_dashes() {
        let cli = Cli::try_parse_from([
            "mpaudit",
            "exec",
            "--workers",
            "3",
            "--outputs",
            "*.root",
            "--outputs",
            "x",
            "--",
            "sh",
            "-c",
            "true",
        ])
        .unwrap();
        let Command::Exec(e) = cli.command else {
            panic!()
        };
        assert_eq!(e.command, ["sh", "-c", "true"]);
        assert_eq!(e.outputs, ["*.root", "x"]);
        assert_eq!(e.opts.workers, Some(WorkersSpec::Count(3)));
    }

    #[test]
    fn workers_flag_validates() {
        assert!(Cli::try_parse_from(["mpaudit", "run", "j.toml", "--workers", "0"]).is_err());
        let cli = Cli::try_parse_from(["mpaudit", "run", "j.toml", "--workers", "auto"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.opts.workers, Some(WorkersSpec::Auto));
    }
}
