//! Report constructors: a run's report from what the runner knew and the
//! events its processes logged ([`Report::from_run`]), and a report from
//! log directories alone ([`Report::from_logs`]).

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::jobfile::Mode;
use crate::plan::Plan;
use crate::supervise::{self, RunResult};
use crate::{duration, memory};

use super::aggregate::Aggregator;
use super::model::*;
use super::status::Coverage;

/// Everything a run's report is made of.
pub struct RunFacts<'a> {
    pub plan: &'a Plan,
    pub result: &'a RunResult,
    pub agg: &'a Aggregator,
    pub merges: &'a [crate::merge::Outcome],
    /// Log files in the log directory from earlier runs (not read).
    pub earlier_log_files: u64,
}

impl Report {
    /// The report of a run the runner supervised.
    pub fn from_run(f: &RunFacts) -> Report {
        let (plan, result, agg) = (f.plan, f.result, f.agg);
        let labels = Labels {
            job_dir: Some(plan.job_dir.clone()),
            sources: vec![plan.log_dir.display().to_string()],
            own_dirs: vec![plan.workers_dir.clone(), plan.log_dir.clone()],
            log_dirs: vec![plan.log_dir.clone()],
            allow_conflicts: plan.policy.allow_conflicts.clone(),
            components: plan.policy.components.clone(),
        };
        let mut rep = Report::default();
        let s = &mut rep.summary;
        s.job_dir = Some(plan.job_dir.display().to_string());
        s.mode = Some(plan.mode.as_str().into());
        s.workers = plan.workers;
        s.wall_time_ms = Some(result.wall.as_millis() as u64);
        s.log_dirs = vec![labels.path(&plan.log_dir.display().to_string())];
        s.earlier_log_files_ignored = f.earlier_log_files;
        s.job_failed = result.failed();
        s.stop_reason = result.stop.as_ref().map(|s| match s {
            supervise::StopReason::Timeout => format!(
                "timeout after {}",
                plan.timeout
                    .map(duration::format_duration)
                    .unwrap_or_default()
            ),
            supervise::StopReason::WorkerFailed(k) => {
                format!("worker {k} failed (on_failure = kill)")
            }
            supervise::StopReason::Interrupted => "interrupted".into(),
        });
        s.strays_killed = result.strays.clone();
        rep.workers = worker_reports(plan, result, agg, &labels);
        rep.fill(agg, &labels);
        rep.set_merges(f.merges, &labels);
        rep.conclude(&coverage(plan, result, agg));
        rep
    }
}

/// The processes the runner started that logged nothing: the library was
/// not loaded in them (unless nothing logged at all: then the gate says
/// "no_library" once).
fn coverage(plan: &Plan, r: &RunResult, agg: &Aggregator) -> Coverage {
    let logged: BTreeSet<i64> = agg.pid_worker.keys().map(|(_, pid)| *pid).collect();
    let unlogged = r
        .procs
        .iter()
        .filter(|p| p.pid > 0 && p.outcome.as_ref().is_some_and(|o| o.spawn_error.is_none()))
        .filter(|p| !logged.contains(&(p.pid as i64)))
        .map(|p| {
            let who = match p.worker {
                Some(k) => format!("worker {k}"),
                None => "root".into(),
            };
            (who, plan.command.first().cloned().unwrap_or_default())
        })
        .collect();
    let started = r
        .procs
        .iter()
        .filter(|p| p.pid > 0)
        .filter_map(|p| {
            let o = p.outcome.as_ref()?;
            o.spawn_error
                .is_none()
                .then_some((p.pid as i64, o.signal.is_some() || o.stopped_by.is_some()))
        })
        .collect();
    Coverage {
        unlogged,
        recorded_not_preloaded: Vec::new(),
        log_dir_vanished: crate::run_meta::vanished(),
        started,
        started_unlogged: Vec::new(),
        run_stopped: r.stop.is_some(),
        gaps: agg.log_gaps(),
        supervisor_lost_events: r.supervisor_lost_events,
        merged_unfinished: Vec::new(),
    }
}

fn worker_reports(plan: &Plan, r: &RunResult, agg: &Aggregator, l: &Labels) -> Vec<WorkerReport> {
    let counts = |w: Option<u64>| {
        agg.per_worker
            .get(&Who {
                source: 0,
                rank: plan.rank.map(u64::from),
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
        out.push(WorkerReport {
            worker: p.worker,
            rank: plan.rank.map(u64::from),
            log_dir: None,
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
    if plan.mode == Mode::Fork {
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
            out.push(WorkerReport {
                worker: Some(k as usize),
                rank: plan.rank.map(u64::from),
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
                    out.push(WorkerReport {
                        worker: Some(k as usize),
                        rank: who.rank,
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

/// One log directory's part of a report from logs.
pub struct LogSource {
    /// As given on the command line (the label of its workers).
    pub name: String,
    pub dir: PathBuf,
    /// The runs selected in it.
    pub runs: Vec<crate::runs::Run>,
    /// How many runs it holds in all.
    pub runs_in_dir: usize,
}

/// Everything a report from log directories is made of.
pub struct LogFacts<'a> {
    pub sources: &'a [LogSource],
    pub agg: &'a Aggregator,
    /// `--job-dir`, else the one the runs' metadata agree on.
    pub job_dir: Option<PathBuf>,
}

impl Report {
    /// The report of existing logs (`mpaudit report`): workers' outcomes,
    /// the job's failure, the merges and `allow_conflicts` come from the
    /// runs' metadata when the runner wrote it.
    pub fn from_logs(f: &LogFacts) -> Report {
        let several = f.sources.len() > 1;
        let metas: Vec<&serde_json::Value> = f
            .sources
            .iter()
            .flat_map(|s| s.runs.iter().filter_map(|r| r.meta.as_ref()))
            .collect();
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        };
        let mut own_dirs = Vec::new();
        let mut allow_conflicts = Vec::new();
        let mut components = Vec::new();
        for m in &metas {
            components.extend(strings(&m["plan"]["policy"]["components"]));
            allow_conflicts.extend(strings(&m["plan"]["policy"]["allow_conflicts"]));
        }
        for m in &metas {
            if let Some(w) = m["plan"]["workers_dir"].as_str() {
                own_dirs.push(PathBuf::from(w));
            }
        }
        let log_dirs: Vec<PathBuf> = f.sources.iter().map(|s| s.dir.clone()).collect();
        own_dirs.extend(log_dirs.iter().cloned());
        let labels = Labels {
            job_dir: f.job_dir.clone(),
            sources: f.sources.iter().map(|s| s.name.clone()).collect(),
            own_dirs,
            log_dirs,
            allow_conflicts,
            components,
        };
        let mut rep = Report::default();
        let s = &mut rep.summary;
        s.job_dir = f.job_dir.as_ref().map(|j| j.display().to_string());
        s.log_dirs = labels.sources.clone();
        s.runs = f
            .sources
            .iter()
            .flat_map(|src| {
                src.runs.iter().map(|r| RunRef {
                    log_dir: src.name.clone(),
                    id: r.id.clone(),
                    recorded_by_runner: r.meta.is_some(),
                    runs_in_dir: src.runs_in_dir,
                })
            })
            .collect();
        s.job_failed = metas
            .iter()
            .any(|m| m["summary"]["job_failed"].as_bool() == Some(true));
        if let Some(m) = metas.first() {
            s.mode = m["mode"].as_str().map(String::from);
        }

        for (i, src) in f.sources.iter().enumerate() {
            let log_dir = several.then(|| src.name.clone());
            let recorded: Vec<WorkerReport> = src
                .runs
                .iter()
                .filter_map(|r| r.meta.as_ref())
                .flat_map(|m| {
                    serde_json::from_value::<Vec<WorkerReport>>(m["worker_outcomes"].clone())
                        .unwrap_or_default()
                })
                .collect();
            if src.runs.len() == 1 && !recorded.is_empty() {
                rep.workers
                    .extend(recorded.into_iter().map(|w| WorkerReport {
                        log_dir: log_dir.clone(),
                        ..w
                    }));
                continue;
            }
            // Without metadata: a row per worker seen in the events, and
            // the root (events outside any worker).
            let roots: BTreeSet<i64> = src.runs.iter().filter_map(|r| r.root_pid).collect();
            for (who, c) in agg_rows(f.agg, i as u16) {
                let pid = match who.worker {
                    None => roots.iter().next().copied(),
                    Some(k) => f
                        .agg
                        .pid_worker
                        .iter()
                        .find(|((src, _), w)| *src == i as u16 && **w == Some(k))
                        .map(|((_, p), _)| *p),
                };
                rep.workers.push(WorkerReport {
                    worker: who.worker.map(|k| k as usize),
                    rank: who.rank,
                    log_dir: log_dir.clone(),
                    pid: pid.map(|p| p as i32),
                    exit_code: pid.and_then(|p| f.agg.exits.get(&(i as u16, p)).copied()),
                    events: c.events,
                    rogue_writes: c.rogue,
                    ..Default::default()
                });
            }
        }
        rep.summary.workers = rep.workers.iter().filter(|w| w.worker.is_some()).count();
        rep.fill(f.agg, &labels);
        // Conflicts the run's merges resolved (the merges themselves are
        // the runner's to report).
        let merged: BTreeSet<String> = metas
            .iter()
            .flat_map(|m| m["merged"].as_array().into_iter().flatten())
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        for c in &mut rep.conflicts {
            if c.resolution.is_none() && merged.contains(&c.path) {
                c.resolution = Some("merged");
            }
        }
        let recorded_not_preloaded = metas
            .iter()
            .flat_map(|m| m["summary"]["incomplete"].as_array().into_iter().flatten())
            .filter(|i| i["reason"] == "not_preloaded")
            .filter_map(|i| i["detail"].as_str().map(String::from))
            .collect();
        // The processes each run's record lists: a killed one needs no
        // closing record; one with no log at all was audited (unless the
        // run itself said it was not) and its log is gone.
        let mut started = Vec::new();
        let mut started_unlogged = Vec::new();
        let logged: BTreeSet<i64> = f.agg.lives.keys().map(|(_, pid)| *pid).collect();
        for src in f.sources {
            for m in src.runs.iter().filter_map(|r| r.meta.as_ref()) {
                let unaudited_run = m["summary"]["incomplete"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["reason"] == "not_preloaded" || x["reason"] == "no_library");
                let outcomes: Vec<WorkerReport> =
                    serde_json::from_value(m["worker_outcomes"].clone()).unwrap_or_default();
                for w in outcomes {
                    let Some(pid) = w.pid.filter(|&p| p > 0) else {
                        continue;
                    };
                    if w.spawn_error.is_some() {
                        continue;
                    }
                    let killed = w.signal.is_some() || w.stopped_by.is_some();
                    // Fork-mode rows of forked workers carry no outcome.
                    if w.exit_code.is_none() && !killed {
                        continue;
                    }
                    started.push((pid as i64, killed));
                    if !unaudited_run && !logged.contains(&(pid as i64)) {
                        let who = match w.worker {
                            Some(k) => format!("worker {k}"),
                            None => "root".into(),
                        };
                        let label = if several {
                            format!("{}: {who} (pid {pid})", src.name)
                        } else {
                            format!("{who} (pid {pid})")
                        };
                        started_unlogged.push(label);
                    }
                }
            }
        }
        let run_stopped = metas.iter().any(|m| !m["summary"]["stop_reason"].is_null());
        rep.conclude(&Coverage {
            unlogged: Vec::new(),
            recorded_not_preloaded,
            log_dir_vanished: false,
            started,
            started_unlogged,
            run_stopped,
            gaps: f.agg.log_gaps(),
            // Said by each run's own record, not by the logs.
            supervisor_lost_events: metas
                .iter()
                .flat_map(|m| m["summary"]["incomplete"].as_array().into_iter().flatten())
                .filter(|i| i["reason"] == "supervisor_lost_events")
                .map(|i| {
                    i["detail"]
                        .as_str()
                        .and_then(|d| d.split(' ').find_map(|w| w.parse::<u64>().ok()))
                        .unwrap_or(1)
                })
                .sum(),
            merged_unfinished: Vec::new(),
        });
        rep
    }
}

/// The rows of one log directory: each worker, and the root when it
/// logged anything.
fn agg_rows(agg: &Aggregator, source: u16) -> Vec<(Who, crate::report::aggregate::WorkerCounts)> {
    agg.per_worker
        .iter()
        .filter(|(w, _)| w.source == source)
        .map(|(w, c)| (*w, *c))
        .collect()
}

/// Everything the report of `mpaudit merge` is made of.
pub struct MergeFacts<'a> {
    pub job_dir: &'a std::path::Path,
    pub workers_dir: &'a std::path::Path,
    /// Worker directories found in it.
    pub worker_dirs: usize,
    pub merges: &'a [crate::merge::Outcome],
}

impl Report {
    /// The report of a job-wide merge (`mpaudit merge`): its merges only.
    pub fn from_merges(f: &MergeFacts) -> Report {
        let labels = Labels {
            job_dir: Some(f.job_dir.to_path_buf()),
            sources: Vec::new(),
            own_dirs: vec![f.workers_dir.to_path_buf()],
            log_dirs: Vec::new(),
            allow_conflicts: Vec::new(),
            components: Vec::new(),
        };
        let mut rep = Report::default();
        rep.set_merges(f.merges, &labels);
        let s = &mut rep.summary;
        s.job_dir = Some(f.job_dir.display().to_string());
        s.workers_dir = Some(labels.path(&f.workers_dir.display().to_string()));
        s.workers = f.worker_dirs;
        let unmerged = f
            .merges
            .iter()
            .filter(|o| o.status == crate::merge::Status::Skipped && o.group.inputs.len() > 1)
            .count();
        let (code, status) = super::status::decide_merges(s, unmerged);
        s.exit_code = code;
        s.status = status.into();
        rep
    }
}
