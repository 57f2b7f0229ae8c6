//! `mpaudit`: run forked batch jobs under libmpaudit.so, supervise them and
//! report rogue writers. See `mpaudit --help` and docs/.

mod cli;
mod control;
mod duration;
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
mod seccomp;
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(control::WATCHDOG_ARG) {
        return ExitCode::from(control::watchdog_main(&args[1..]));
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
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("mpaudit: error: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
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
        Command::Check(a) => {
            let (plan, program) = prepare_job(&a.job, &a.opts)?;
            let lib = libpath::find_here(a.opts.preload.as_deref());
            print!(
                "{}",
                plan.render(lib.as_deref().map_err(|e| e.as_str()), Some(&program))
            );
            Ok(0)
        }
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
                seed: a.seed,
                report: a.report,
            };
            let plan = plan::build(&source, &a.opts, &ctx)?;
            let program = preflight::check(&plan, ctx.facts.env.get("PATH").map(String::as_str))?;
            execute(&plan, &program, a.opts.preload.as_deref())
        }
        Command::Report(a) => report_dirs(&a),
    }
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
    let (merges, merge_warnings) = match &plan.merge_skipped {
        Some(why) => (Vec::new(), vec![format!("not merging: {why}")]),
        None => merge::run(
            &merge::Setup {
                job_dir: &plan.job_dir,
                workers_dir: &plan.workers_dir,
                workers: plan.workers,
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
    let files: Vec<PathBuf> = events::log_files(&plan.log_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !earlier.contains(f))
        .collect();
    let logs: Vec<(u16, PathBuf)> = files.iter().map(|f| (0, f.clone())).collect();
    read_logs(&mut agg, &logs);
    let labels = report::Labels {
        job_dir: Some(plan.job_dir.clone()),
        sources: vec![plan.log_dir.display().to_string()],
    };
    let mut rep = report::Report::default();
    rep.summary.job_dir = Some(plan.job_dir.display().to_string());
    rep.summary.mode = Some(plan.mode.as_str().into());
    rep.summary.workers = plan.workers;
    rep.summary.wall_time_ms = Some(result.wall.as_millis() as u64);
    rep.summary.log_dirs = vec![labels.path(&plan.log_dir.display().to_string())];
    rep.summary.earlier_log_files_ignored = earlier.len() as u64;
    rep.summary.job_failed = result.failed();
    rep.summary.stop_reason = result.stop.as_ref().map(|s| match s {
        supervise::StopReason::Timeout => format!(
            "timeout after {}",
            plan.timeout
                .map(duration::format_duration)
                .unwrap_or_default()
        ),
        supervise::StopReason::WorkerFailed(k) => format!("worker {k} failed (on_failure = kill)"),
        supervise::StopReason::Interrupted => "interrupted".into(),
    });
    rep.summary.strays_killed = result.strays.clone();
    rep.workers = worker_reports(plan, &result, &agg, &labels);
    rep.fill(&agg, &labels);
    rep.set_merges(&merges, &labels);
    let _ = run_meta::finish(plan, &rep);
    print_report(&rep, plan.format, plan.quiet, &plan.report_to);
    Ok(rep.summary.exit_code)
}

fn print_report(rep: &report::Report, format: cli::Format, quiet: bool, to: &plan::ReportTo) {
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
    match to {
        plan::ReportTo::Stdout => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        plan::ReportTo::Stderr => {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
        plan::ReportTo::File(f) => {
            if let Err(e) = std::fs::write(f, text) {
                eprintln!("mpaudit: cannot write the report to {}: {e}", f.display());
            }
        }
    }
}

fn worker_reports(
    plan: &plan::Plan,
    r: &supervise::RunResult,
    agg: &report::Aggregator,
    l: &report::Labels,
) -> Vec<report::WorkerReport> {
    let counts = |w: Option<u64>| {
        agg.per_worker
            .get(&report::Who {
                source: 0,
                worker: w,
            })
            .copied()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for p in &r.procs {
        let o = p.outcome.clone();
        let failed = !o.as_ref().is_some_and(|o| o.success())
            && o.as_ref().map_or(true, |o| o.stopped_by.is_none());
        let c = counts(p.worker.map(|k| k as u64));
        // Streams passed through (`mpaudit exec`) have no file: their tail
        // is already on the user's screen.
        let tail_of = |f: &Option<PathBuf>| {
            f.as_deref()
                .map_or_else(Vec::new, |f| supervise::tail(f, 10))
        };
        let mut tail = if failed {
            tail_of(&p.stderr)
        } else {
            Vec::new()
        };
        let mut tail_file = &p.stderr;
        if failed && tail.is_empty() {
            tail = tail_of(&p.stdout);
            tail_file = &p.stdout;
        }
        let o = o.unwrap_or(supervise::Outcome {
            exit_code: None,
            signal: None,
            core_dumped: false,
            wall_time_ms: 0,
            stopped_by: None,
            spawn_error: None,
        });
        out.push(report::WorkerReport {
            worker: p.worker,
            pid: (p.pid > 0).then_some(p.pid),
            exit_code: o.exit_code.map(i64::from),
            signal: o.signal,
            signal_name: o.signal.map(supervise::signal_name),
            core_dumped: o.core_dumped,
            timed_out: o.stopped_by == Some(supervise::StopReason::Timeout),
            stopped_by: o.stopped_by.as_ref().map(|s| match s {
                supervise::StopReason::Timeout => "timeout".to_string(),
                supervise::StopReason::WorkerFailed(k) => format!("worker {k} failed"),
                supervise::StopReason::Interrupted => "interrupted".into(),
            }),
            spawn_error: o.spawn_error,
            wall_time_ms: Some(o.wall_time_ms),
            memory: Some(p.memory),
            events: c.events,
            rogue_writes: c.rogue,
            stdout: p.stdout.as_ref().map(|f| l.path(&f.display().to_string())),
            stderr: tail_file.as_ref().map(|f| l.path(&f.display().to_string())),
            stderr_tail: tail,
        });
    }
    if plan.mode == jobfile::Mode::Fork {
        // Workers are the root's children: index from their own events
        // (`worker` of their records), else fork order (start time, pid).
        let mut order: Vec<(&i32, &(u64, memory::Peak))> = r.forked.iter().collect();
        order.sort_by_key(|(pid, (start, _))| (*start, **pid));
        let mut seen = BTreeSet::new();
        for (i, (pid, (_, peak))) in order.iter().enumerate() {
            let k = agg
                .pid_worker
                .get(&(0, **pid as i64))
                .copied()
                .flatten()
                .unwrap_or(i as u64);
            seen.insert(k);
            let c = counts(Some(k));
            out.push(report::WorkerReport {
                worker: Some(k as usize),
                pid: Some(**pid),
                exit_code: agg.exits.get(&(0, **pid as i64)).copied(),
                memory: Some(*peak),
                events: c.events,
                rogue_writes: c.rogue,
                ..Default::default()
            });
        }
        // Workers seen only in the events (too short-lived to sample).
        for (who, c) in &agg.per_worker {
            if let Some(k) = who.worker {
                if seen.insert(k) {
                    let pid = agg
                        .pid_worker
                        .iter()
                        .find(|(_, w)| **w == Some(k))
                        .map(|((_, p), _)| *p);
                    out.push(report::WorkerReport {
                        worker: Some(k as usize),
                        pid: pid.map(|p| p as i32),
                        exit_code: pid.and_then(|p| agg.exits.get(&(0, p)).copied()),
                        events: c.events,
                        rogue_writes: c.rogue,
                        ..Default::default()
                    });
                }
            }
        }
        out[1..].sort_by_key(|w| w.worker);
    }
    out
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

/// `mpaudit report LOGDIR...`
fn report_dirs(a: &cli::ReportArgs) -> Result<u8, String> {
    let cwd = cwd()?;
    let mut agg = report::Aggregator::default();
    let mut names = Vec::new();
    let mut all_files = Vec::new();
    for (i, d) in a.logdirs.iter().enumerate() {
        let dir = plan::resolve(&cwd, d);
        let files =
            events::log_files(&dir).map_err(|e| format!("log directory {}: {e}", d.display()))?;
        all_files.push((i as u16, files));
        names.push(d.display().to_string());
    }
    if u16::try_from(a.logdirs.len()).is_err() {
        return Err("too many log directories".into());
    }
    let logs: Vec<(u16, PathBuf)> = all_files
        .into_iter()
        .flat_map(|(i, files)| files.into_iter().map(move |f| (i, f)))
        .collect();
    read_logs(&mut agg, &logs);
    let job_dir = match &a.job_dir {
        Some(j) => Some(plan::resolve(&cwd, j)),
        None => run_meta::job_dir(
            &a.logdirs
                .iter()
                .map(|d| plan::resolve(&cwd, d))
                .collect::<Vec<_>>(),
        ),
    };
    let labels = report::Labels {
        job_dir: job_dir.clone(),
        sources: names.clone(),
    };
    let mut rep = report::Report::default();
    rep.summary.job_dir = job_dir.map(|j| j.display().to_string());
    rep.summary.log_dirs = names;
    rep.summary.workers = agg.per_worker.keys().filter(|w| w.worker.is_some()).count();
    rep.workers = agg
        .per_worker
        .iter()
        .filter(|(w, _)| a.logdirs.len() == 1 || w.source == 0)
        .filter_map(|(w, c)| {
            let k = w.worker? as usize;
            Some(report::WorkerReport {
                worker: Some(k),
                events: c.events,
                rogue_writes: c.rogue,
                ..Default::default()
            })
        })
        .collect();
    rep.fill(&agg, &labels);
    print_report(&rep, a.format, false, &plan::ReportTo::Stdout);
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
    let plan = plan::build(&source, opts, &ctx)?;
    let program = preflight::check(&plan, ctx.facts.env.get("PATH").map(String::as_str))?;
    Ok((plan, program))
}
