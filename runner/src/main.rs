//! `mpaudit`: run forked batch jobs under libmpaudit.so, supervise them and
//! report rogue writers. See `mpaudit --help` and docs/.

mod cli;
mod control;
mod duration;
mod embedded;
mod events;
mod jobfile;
mod libpath;
mod memory;
mod merge;
mod plan;
mod preflight;
mod procs;
mod report;
mod run_meta;
mod runs;
mod seccomp;
mod stdfds;
mod supervise;
mod symbols;
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// Exit status 2: usage or job-file error, nothing was started.
pub const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // `args_os`: an argument that is not UTF-8 is clap's to reject, not a
    // panic here.
    let first = std::env::args_os().nth(1);
    if first.as_deref() == Some(std::ffi::OsStr::new(control::WATCHDOG_ARG)) {
        let args: Vec<String> = std::env::args().skip(2).collect();
        return ExitCode::from(control::watchdog_main(&args));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => {
            if let Some(sig) = supervise::job_signal_to_reraise() {
                reraise(sig);
            }
            ExitCode::from(code)
        }
        Err(msg) => {
            eprintln!("mpaudit: error: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Ends mpaudit by the signal that ended its job, as a shell's child does
/// (docs/report.md, "Exit status"): a shell loop around `mpaudit exec`
/// then stops at Ctrl-C as it would around the program itself. No core
/// file for SIGQUIT: the job's was the one that counted.
fn reraise(sig: i32) {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on this process: a default disposition,
    // a zero core limit, the signal unblocked, then raised.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
}

/// Usage errors come back as `Err(one line)`; everything else as a code.
fn run(cli: Cli) -> Result<u8, String> {
    match cli.command {
        Command::LibPath(a) => {
            let p = libpath::find_here(a.preload.as_deref())?;
            println!("{}", p.display());
            Ok(0)
        }
        Command::Check(a) => check(&a),
        Command::Run(a) => {
            let (plan, program) = prepare_job(&a.job, &a.opts)?;
            execute(&plan, &program, a.opts.preload.as_deref())
        }
        Command::Exec(a) => {
            let ctx = context()?;
            let source = plan::Source::Exec {
                command: a.command,
                mode: a.mode,
                outputs: a.outputs,
                components: a.components,
                allow: a.allow,
                allow_conflicts: a.allow_conflicts,
                merge: a.merge,
                seed: a.seed,
                report: a.report,
            };
            let mut plan = plan::build(&source, &a.opts, &ctx)?;
            plan.canonicalize_dirs();
            let program = preflight::check(&plan, ctx.facts.env.get("PATH").map(String::as_str))?;
            execute(&plan, &program, a.opts.preload.as_deref())
        }
        Command::Report(a) => report_dirs(&a),
        Command::Merge(a) => merge_workers(&a),
    }
}

/// `mpaudit check JOB.toml`: the plan, as text or JSON; a job that could
/// not run (no library) is an error like any other.
fn check(a: &cli::CheckArgs) -> Result<u8, String> {
    let (plan, program) = prepare_job(&a.job, &a.opts)?;
    let lib = libpath::find_here(a.opts.preload.as_deref());
    let out = match a.opts.format {
        cli::Format::Json => {
            let v = serde_json::json!({
                "valid": lib.is_ok(),
                "plan": plan,
                "program": program,
                "preload": lib.as_ref().ok(),
                "error": lib.as_ref().err(),
            });
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        cli::Format::Text if a.opts.quiet => String::new(),
        cli::Format::Text => plan.render(lib.as_deref().map_err(|e| e.as_str()), Some(&program)),
    };
    print!("{out}");
    lib.map(|_| 0)
}

/// Runs a validated plan: everything that can fail with status 2 is
/// checked before the first process starts.
fn execute(plan: &plan::Plan, program: &Path, preload: Option<&Path>) -> Result<u8, String> {
    let lib = libpath::find_here(preload)?;
    std::fs::create_dir_all(&plan.log_dir)
        .map_err(|e| format!("log directory {}: {e}", plan.log_dir.display()))?;
    let probe = plan
        .log_dir
        .join(format!(".mpaudit-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        format!(
            "log directory {} is not writable: {e}",
            plan.log_dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    let earlier: BTreeSet<PathBuf> = events::log_files(&plan.log_dir)
        .unwrap_or_default()
        .into_iter()
        .collect();
    run_meta::write(plan)?;
    let cleared = merge::clear_previous(&plan.job_dir, &plan.workers_dir);
    if cleared > 0 && !plan.quiet {
        eprintln!(
            "mpaudit: removed {cleared} redirected file(s) an earlier run left in {}",
            plan.workers_dir.display()
        );
    }

    // File times lag the clock by up to a tick: a little slack, so a file
    // the job wrote at once is not taken for an earlier run's.
    let since = std::time::SystemTime::now() - std::time::Duration::from_millis(100);
    // From here to the last merge, one owner of the signals and processes.
    let control = control::Control::take()?;
    let result = supervise::run(plan, program, &lib, &control)?;
    if plan.streams != plan::Streams::Logs {
        supervise::reraise_after_report(result.terminating_signal());
    }
    let (merges, merge_warnings) = match &plan.merge_skipped {
        Some(why) => (Vec::new(), vec![format!("not merging: {why}")]),
        None => merge::run(
            &merge::Setup {
                job_dir: &plan.job_dir,
                workers_dir: &plan.workers_dir,
                rank: plan.rank,
                rules: &plan.merge,
                merge_dir: plan.merge_dir.as_deref(),
                force: plan.force,
                since,
                timeout: plan.timeout,
                grace: plan.grace,
                control: Some(&control),
            },
            result.failed(),
        ),
    };
    drop(control);
    for w in &merge_warnings {
        eprintln!("mpaudit: warning: merge: {w}");
    }

    let mut agg = report::Aggregator::default();
    let scan = events::scan_log_dir(&plan.log_dir).unwrap_or_default();
    scan.warn_skipped();
    let files: Vec<PathBuf> = scan
        .files
        .into_iter()
        .filter(|f| !earlier.contains(f))
        .collect();
    let logs: Vec<(u16, PathBuf)> = files.iter().map(|f| (0, f.clone())).collect();
    read_logs(&mut agg, &logs);
    let rep = report::Report::from_run(&report::RunFacts {
        plan,
        result: &result,
        agg: &agg,
        merges: &merges,
        earlier_log_files: earlier.len() as u64,
    });
    let _ = run_meta::finish(plan, &rep);
    print_report(&rep, plan.format, plan.quiet, &plan.report_to)?;
    Ok(rep.summary.exit_code)
}

/// `mpaudit merge [DIR]`: the job-wide merge of a workers directory, after
/// a job step (`srun`/`mpirun` ranks) or a run with LD_PRELOAD alone, by
/// the `[merge]` rules of `--merge` and `--job`, its commands supervised as
/// `mpaudit run`'s are.
fn merge_workers(a: &cli::MergeArgs) -> Result<u8, String> {
    let cwd = cwd()?;
    let file = match &a.job {
        Some(j) => {
            let path = plan::resolve(&cwd, j);
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", j.display()))?;
            let file = jobfile::parse(&text).map_err(|e| e.render(&j.display().to_string()))?;
            Some((path, file))
        }
        None => None,
    };
    let mut rules: Vec<jobfile::MergeRule> = a
        .merge
        .iter()
        .map(|m| jobfile::parse_merge_option(m))
        .collect::<Result<_, _>>()?;
    let (job_dir, workers_dir, timeout) = match &file {
        Some((path, f)) => {
            rules.extend(f.merge.0.iter().cloned());
            let base = path.parent().unwrap_or(Path::new("/"));
            let job_dir = plan::resolve(base, Path::new(f.job.dir.as_deref().unwrap_or(".")));
            let workers = plan::resolve(
                &job_dir,
                Path::new(
                    f.audit
                        .workers_dir
                        .as_deref()
                        .unwrap_or(plan::DEFAULT_WORKERS_DIR),
                ),
            );
            (job_dir, workers, f.job.timeout.map(|t| t.0))
        }
        None => (cwd.clone(), cwd.join(plan::DEFAULT_WORKERS_DIR), None),
    };
    let job_dir = a
        .job_dir
        .as_ref()
        .map_or(job_dir, |d| plan::resolve(&cwd, d));
    let workers_dir = a
        .dir
        .as_ref()
        .map_or(workers_dir, |d| plan::resolve(&cwd, d));
    let timeout = match &a.timeout {
        Some(t) => Some(duration::parse_duration(t).map_err(|e| format!("--timeout: {e}"))?),
        None => timeout,
    };
    let grace = duration::parse_duration(&a.grace).map_err(|e| format!("--grace: {e}"))?;
    if !workers_dir.is_dir() {
        return Err(format!(
            "workers directory {}: not a directory (give DIR, or --job)",
            workers_dir.display()
        ));
    }
    let found = merge::worker_dirs(&workers_dir, None).len();
    let merge_dir = a.merge_dir.as_ref().map(|d| plan::resolve(&cwd, d));
    let control = control::Control::take()?;
    let (merges, warnings) = merge::run(
        &merge::Setup {
            job_dir: &job_dir,
            workers_dir: &workers_dir,
            rank: None,
            rules: &rules,
            merge_dir: merge_dir.as_deref(),
            force: a.force,
            // No run to date the files: every file counts (each run's
            // start clears its manifests' files of the run before).
            since: std::time::SystemTime::UNIX_EPOCH,
            timeout,
            grace,
            control: Some(&control),
        },
        false,
    );
    drop(control);
    for w in &warnings {
        eprintln!("mpaudit: warning: merge: {w}");
    }
    let rep = report::Report::from_merges(&report::MergeFacts {
        job_dir: &job_dir,
        workers_dir: &workers_dir,
        worker_dirs: found,
        merges: &merges,
    });
    print_report(&rep, a.format, a.quiet, &plan::ReportTo::Stdout)?;
    Ok(rep.summary.exit_code)
}

/// Writes the report where the plan says. A report that could not be
/// written is an error (exit 2): a CI job reading it would otherwise find
/// nothing, or an older report, behind a green status.
fn print_report(
    rep: &report::Report,
    format: cli::Format,
    quiet: bool,
    to: &plan::ReportTo,
) -> Result<(), String> {
    use std::io::Write;
    let text = match format {
        cli::Format::Json => rep.to_json() + "\n",
        cli::Format::Text if quiet => {
            rep.to_text()
                .lines()
                .take_while(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        }
        cli::Format::Text => rep.to_text(),
    };
    let written = match to {
        plan::ReportTo::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
        plan::ReportTo::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
        plan::ReportTo::File(f) => std::fs::write(f, text)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", f.display()))),
    };
    written.map_err(|e| format!("cannot write the report: {e}"))
}

/// Reads the logs into `agg` on as many threads as this process may use, at
/// most 4 (each file in flight holds an aggregator of its own); a log that
/// cannot be read is a warning, not an error.
fn read_logs(agg: &mut report::Aggregator, logs: &[(u16, PathBuf)]) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    for (f, e) in report::read_logs(agg, logs, threads) {
        eprintln!("mpaudit: warning: {}: {e}", f.display());
    }
}

/// `mpaudit report LOGDIR...`: the latest run of each directory (or the
/// one `--run` names, or all of them).
fn report_dirs(a: &cli::ReportArgs) -> Result<u8, String> {
    let cwd = cwd()?;
    if u16::try_from(a.logdirs.len()).is_err() {
        return Err("too many log directories".into());
    }
    let pick = match (&a.run, a.all_runs) {
        (Some(id), _) => runs::Pick::Id(id.clone()),
        (None, true) => runs::Pick::All,
        (None, false) => runs::Pick::Latest,
    };
    let mut sources = Vec::new();
    for d in &a.logdirs {
        let dir = plan::resolve(&cwd, d);
        let all = runs::runs(&dir).map_err(|e| format!("log directory {}: {e}", d.display()))?;
        let runs_in_dir = all.len();
        let name = d.display().to_string();
        let picked = match runs::select(all, &pick, &name) {
            // --run names one run: the other directories may not hold it.
            Err(_) if a.logdirs.len() > 1 => Vec::new(),
            other => other?,
        };
        sources.push(report::LogSource {
            name,
            dir,
            runs: picked,
            runs_in_dir,
        });
    }
    if let runs::Pick::Id(id) = &pick {
        if sources.iter().all(|s| s.runs.is_empty()) {
            return Err(format!(
                "no run `{id}` in any of the {} log directories",
                a.logdirs.len()
            ));
        }
    }
    let logs: Vec<(u16, PathBuf)> = sources
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.runs
                .iter()
                .flat_map(move |r| r.files.iter().map(move |f| (i as u16, f.clone())))
        })
        .collect();
    let mut agg = report::Aggregator::default();
    read_logs(&mut agg, &logs);
    let job_dir = match &a.job_dir {
        Some(j) => Some(plan::resolve(&cwd, j)),
        None => run_meta::job_dir(
            sources
                .iter()
                .flat_map(|s| s.runs.iter().filter_map(|r| r.meta.as_ref())),
        ),
    };
    let rep = report::Report::from_logs(&report::LogFacts {
        sources: &sources,
        agg: &agg,
        job_dir,
    });
    print_report(&rep, a.format, false, &plan::ReportTo::Stdout)?;
    Ok(rep.summary.exit_code)
}

fn env_map() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn cwd() -> Result<PathBuf, String> {
    std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))
}

fn context() -> Result<plan::Context, String> {
    Ok(plan::Context {
        cwd: cwd()?,
        facts: workers::probe(&env_map()),
    })
}

/// Reads, parses and validates a job file into a plan and the program path.
fn prepare_job(job: &Path, opts: &cli::RunOpts) -> Result<(plan::Plan, PathBuf), String> {
    let ctx = context()?;
    let path = plan::resolve(&ctx.cwd, job);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", job.display()))?;
    let file = jobfile::parse(&text).map_err(|e| e.render(&job.display().to_string()))?;
    let source = plan::Source::JobFile {
        path,
        file: Box::new(file),
    };
    let mut plan = plan::build(&source, opts, &ctx).map_err(|e| {
        // Directory errors point at their key in the file.
        for key in ["workers_dir", "log_dir"] {
            if let Some(msg) = e.strip_prefix(&format!("audit.{key}: ")) {
                if let Some((l, c)) = jobfile::locate_key(&text, "audit", key) {
                    return format!("{}:{l}:{c}: key `audit.{key}`: {msg}", job.display());
                }
            }
        }
        e
    })?;
    plan.canonicalize_dirs();
    let program =
        preflight::check(&plan, ctx.facts.env.get("PATH").map(String::as_str)).map_err(|e| {
            // The command's errors point at the command in the file.
            match jobfile::locate_key(&text, "job", "command") {
                Some((l, c)) if e.starts_with("command `") => {
                    format!("{}:{l}:{c}: key `job.command`: {e}", job.display())
                }
                _ => e,
            }
        })?;
    Ok((plan, program))
}
