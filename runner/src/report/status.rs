//! The exit status, decided in one place from the report's findings
//! (docs/report.md, "Exit status"): 3 the job failed, 4 the audit is
//! incomplete, 1 rogue writes or unresolved conflicts, 0 clean; 2 (usage)
//! never comes from a report.

use super::aggregate::LogGaps;
use super::model::{Incomplete, Report, Summary, Unaudited};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FINDINGS: u8 = 1;
pub const EXIT_JOB_FAILED: u8 = 3;
pub const EXIT_INCOMPLETE: u8 = 4;

/// What the runner knows beyond the events, for the incomplete-audit gate.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// Processes the runner started that left no log at all (the library
    /// was not loaded in them: a static program, `--preload` naming
    /// something else, LD_PRELOAD dropped): `(who, program)`.
    pub unlogged: Vec<(String, String)>,
    /// `mpaudit report`: what the run's own report found missing that the
    /// logs cannot show again (processes that logged nothing), as it said.
    pub recorded_not_preloaded: Vec<String>,
    /// The log directory, or the run's metadata file in it, is gone since
    /// the run began: the job removed or emptied it.
    pub log_dir_vanished: bool,
    /// The processes the runner started, as `(pid, killed by a signal)`:
    /// one that ended without a signal must have closed its log.
    pub started: Vec<(i64, bool)>,
    /// Started processes that left no log at all although the run's
    /// record says they were audited (`mpaudit report`), as `who (pid)`.
    pub started_unlogged: Vec<String>,
    /// The run was stopped (timeout, interruption): processes killed then
    /// have no closing record.
    pub run_stopped: bool,
    /// Unclosed and missing logs ([`super::aggregate::Aggregator::log_gaps`]).
    pub gaps: LogGaps,
    /// Events the seccomp supervisor could not write to its logs.
    pub supervisor_lost_events: u64,
    /// Merged outputs that took the file of a worker that did not end
    /// with exit status 0 (set by [`Report::conclude`]), as
    /// `output <- worker(s) ...`.
    pub merged_unfinished: Vec<String>,
}

/// Why the audit is incomplete, from the summary and the report's sections.
/// One reason per line: a new one is one more `gap(...)`.
pub fn incomplete(s: &Summary, unaudited: &[Unaudited], cov: &Coverage) -> Vec<Incomplete> {
    let mut out = Vec::new();
    let tampered = cov.log_dir_vanished || !s.log_writes.is_empty();
    let mut gap = |missed: bool, reason: &'static str, detail: &dyn Fn() -> String| {
        if missed {
            out.push(Incomplete {
                reason,
                detail: detail(),
            });
        }
    };
    gap(
        s.log_files == 0 && !cov.log_dir_vanished,
        "no_library",
        &|| {
            format!(
            "no process loaded libmpaudit.so: no event log in {} (check --preload / LD_PRELOAD and MPAUDIT_LOG_DIR), or the log directory was removed or emptied",
            s.log_dirs.join(", ")
        )
        },
    );
    gap(
        cov.log_dir_vanished || !s.log_writes.is_empty(),
        "log_tampered",
        &|| {
            let mut d = Vec::new();
            if cov.log_dir_vanished {
                d.push(format!(
                    "the log directory was removed or emptied during the run ({})",
                    s.log_dirs.join(", ")
                ));
            }
            if !s.log_writes.is_empty() {
                d.push(format!(
                    "the job wrote or removed {} path(s) in the log directory: {}",
                    s.log_writes.len(),
                    super::text::top(&s.log_writes, 5)
                ));
            }
            format!("{}: the events of its processes may be gone", d.join("; "))
        },
    );
    let missing: Vec<String> = cov
        .gaps
        .missing
        .iter()
        .map(|(_, pid, why)| match *why {
            "exec" => format!("pid {pid} after an audited exec"),
            _ => format!("pid {pid} ({why})"),
        })
        .chain(cov.started_unlogged.iter().cloned())
        .chain(
            cov.unlogged
                .iter()
                .filter(|_| tampered)
                .map(|(who, _)| who.clone()),
        )
        .collect();
    gap(
        s.log_files > 0 && !missing.is_empty(),
        "missing_log",
        &|| {
            format!(
            "{} process(es) the logs or the run's record say were audited have no log of their own (deleted?): {}",
            missing.len(),
            super::text::top(&missing, 5)
        )
        },
    );
    let unclosed: Vec<String> = cov
        .started
        .iter()
        .filter(|(pid, killed)| {
            !killed && !cov.run_stopped && cov.gaps.unclosed.iter().any(|(_, p)| p == pid)
        })
        .map(|(pid, _)| format!("pid {pid}"))
        .collect();
    gap(!unclosed.is_empty(), "unclosed_log", &|| {
        format!(
            "{} process(es) exited without a signal yet their log has no closing exit or exec record: what ran after its last event (a raw execve of a static program, say) was not seen: {}",
            unclosed.len(),
            super::text::top(&unclosed, 5)
        )
    });
    gap(
        // Logs the job removed are missing, not a preload problem.
        s.log_files > 0 && !cov.unlogged.is_empty() && !tampered,
        "not_preloaded",
        &|| {
            let list: Vec<String> = cov
                .unlogged
                .iter()
                .map(|(who, prog)| format!("{who} ({prog})"))
                .collect();
            format!(
            "{} process(es) the runner started logged nothing (a static program, or the library was not preloaded): {}",
            cov.unlogged.len(),
            super::text::top(&list, 5)
        )
        },
    );
    for detail in &cov.recorded_not_preloaded {
        gap(cov.unlogged.is_empty(), "not_preloaded", &|| detail.clone());
    }
    gap(!unaudited.is_empty(), "unaudited", &|| {
        let n: u64 = unaudited.iter().map(|u| u.count).sum();
        let exes: Vec<String> = unaudited
            .iter()
            .map(|u| format!("{} ({})", u.exe, u.reason))
            .collect();
        format!(
            "{n} exec(s) of programs the library cannot audit: {}",
            super::text::top(&exes, 5)
        )
    });
    gap(s.skipped_lines > 0, "unparsed_events", &|| {
        format!(
            "{} log line(s) could not be read as events (torn, corrupt, or from another schema version), e.g. {}",
            s.skipped_lines,
            s.skipped_examples.first().map(String::as_str).unwrap_or("?")
        )
    });
    gap(!s.log_stopped.is_empty(), "log_stopped", &|| {
        let which: Vec<String> = s
            .log_stopped
            .iter()
            .map(|p| format!("pid {}: {}", p.pid, p.reason))
            .collect();
        format!(
            "the log stopped in {} process(es) ({}): what they did after it is not in the report",
            s.log_stopped.len(),
            super::text::top(&which, 5)
        )
    });
    gap(s.dropped_events > 0, "dropped_events", &|| {
        format!(
            "{} event(s) not logged (counted by the processes' exit events)",
            s.dropped_events
        )
    });
    gap(
        cov.supervisor_lost_events > 0,
        "supervisor_lost_events",
        &|| {
            format!(
                "the seccomp supervisor could not log {} event(s)",
                cov.supervisor_lost_events
            )
        },
    );
    gap(
        !cov.merged_unfinished.is_empty(),
        "merged_unfinished",
        &|| {
            format!(
            "{} merged output(s) took the file of a worker that did not end with exit status 0 (killed by a signal, or its outcome not recorded): what it wrote may be partial: {}",
            cov.merged_unfinished.len(),
            super::text::top(&cov.merged_unfinished, 5)
        )
        },
    );
    out
}

/// The exit status and its one-word reason. The job failing wins over
/// everything, an incomplete audit over the findings.
pub fn decide(s: &Summary) -> (u8, &'static str) {
    if s.job_failed {
        (EXIT_JOB_FAILED, "job failed")
    } else if s.merge_failures > 0 {
        (EXIT_JOB_FAILED, "merge failed")
    } else if !s.incomplete.is_empty() {
        (EXIT_INCOMPLETE, "audit incomplete")
    } else if s.rogue_writes > 0 && s.unresolved_conflicts > 0 {
        (EXIT_FINDINGS, "rogue writes and conflicts")
    } else if s.rogue_writes > 0 {
        (EXIT_FINDINGS, "rogue writes")
    } else if s.unresolved_conflicts > 0 {
        (EXIT_FINDINGS, "conflicts")
    } else {
        (EXIT_OK, "ok")
    }
}

/// The status of `mpaudit merge`: 3 a merge failed or was refused, 1 some
/// path several workers wrote was left unmerged (no rule), else 0.
pub fn decide_merges(s: &Summary, unmerged: usize) -> (u8, &'static str) {
    if s.merge_failures > 0 {
        (EXIT_JOB_FAILED, "merge failed")
    } else if unmerged > 0 {
        (EXIT_FINDINGS, "not merged")
    } else {
        (EXIT_OK, "ok")
    }
}

impl Report {
    /// Resolves conflicts by the merges, runs the incomplete-audit gate and
    /// sets the exit status: call once, when every section is in.
    pub fn conclude(&mut self, cov: &Coverage) {
        for c in &mut self.conflicts {
            if c.resolution.is_none()
                && self
                    .merges
                    .iter()
                    .any(|m| m.original == c.path && m.status == crate::merge::Status::Merged)
            {
                c.resolution = Some("merged");
            }
        }
        self.summary.unresolved_conflicts = self
            .conflicts
            .iter()
            .filter(|c| c.resolution.is_none())
            .count();
        let mut cov = cov.clone();
        cov.merged_unfinished = self.mark_merges_of_unfinished_workers(&cov.gaps.unclosed);
        self.summary.incomplete = incomplete(&self.summary, &self.unaudited, &cov);
        let (code, status) = decide(&self.summary);
        self.summary.exit_code = code;
        self.summary.status = status.into();
    }
}

impl Report {
    /// Says, in each merged output's reason, which of its inputs came from
    /// a worker that did not end with exit status 0 (a forked worker killed
    /// mid-write: its file may be partial); one line per such output. A
    /// worker without a recorded outcome counts when its log image was
    /// left unclosed (`unclosed`, by source and pid): a program the
    /// supervisor audits has no `exit` record of its own.
    fn mark_merges_of_unfinished_workers(
        &mut self,
        unclosed: &std::collections::BTreeSet<(u16, i64)>,
    ) -> Vec<String> {
        let unfinished: std::collections::BTreeSet<String> = self
            .workers
            .iter()
            .filter(|w| match (w.exit_code, w.signal) {
                (_, Some(_)) => true,
                (Some(c), None) => c != 0,
                (None, None) => w.pid.is_some_and(|p| unclosed.contains(&(0, i64::from(p)))),
            })
            .filter_map(|w| {
                let k = w.worker?;
                Some(match w.rank {
                    None => k.to_string(),
                    Some(r) => format!("rank {r} worker {k}"),
                })
            })
            .collect();
        let mut out = Vec::new();
        for m in &mut self.merges {
            if m.status != crate::merge::Status::Merged {
                continue;
            }
            let mut who: Vec<&str> = m
                .inputs
                .iter()
                .map(|i| i.worker.as_str())
                .filter(|w| unfinished.contains(*w))
                .collect();
            who.dedup();
            if who.is_empty() {
                continue;
            }
            let who = who.join(",");
            m.reason = Some(format!(
                "merged, but worker(s) {who} did not end with exit status 0 (killed by a \
                 signal, or the outcome not recorded): what they wrote may be partial"
            ));
            out.push(format!("{} <- worker(s) {who}", m.output));
        }
        out
    }
}
