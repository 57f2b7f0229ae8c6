//! The text rendering: for a person at a terminal. Long lists are cut to
//! their first few entries ("and K more") and worker sets compressed to
//! ranges (`0-299`); the JSON rendering keeps everything.

use std::collections::BTreeMap;

use super::model::*;

/// Entries shown of a long list (paths of a component, conflicts, …).
const TOP: usize = 20;
/// Above this many workers, identical worker rows are shown as one.
const WORKER_ROWS: usize = 8;

impl Report {
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let s = &self.summary;
        o += &format!("mpaudit: {} (exit status {})\n", s.status, s.exit_code);
        for i in &s.incomplete {
            o += &format!("  incomplete audit: {}\n", i.detail);
        }
        for w in &s.warnings {
            o += &format!("  warning: {w}\n");
        }
        // Why a merge failed is part of the summary: `--quiet` shows it.
        for m in self.merges.iter().filter(|m| m.status.is_failure()) {
            o += &format!(
                "  merge {}: {}: {}\n",
                m.status.as_str(),
                m.output,
                m.reason.as_deref().unwrap_or("")
            );
        }
        if let Some(r) = &s.stop_reason {
            o += &format!("  stopped: {r}\n");
        }
        if let Some(j) = &s.job_dir {
            o += &format!("  job dir: {j}\n");
        }
        for r in &s.runs {
            let how = if r.recorded_by_runner {
                "mpaudit run/exec"
            } else {
                "LD_PRELOAD"
            };
            o += &format!("  run: {} ({how}) in {}", r.id, r.log_dir);
            if r.runs_in_dir > 1 && s.runs.iter().filter(|x| x.log_dir == r.log_dir).count() == 1 {
                o += &format!(
                    ", one of {} runs there (--run ID, --all-runs)",
                    r.runs_in_dir
                );
            }
            o.push('\n');
        }
        match &s.workers_dir {
            // `mpaudit merge`: no logs read.
            Some(w) => o += &format!("  workers dir: {w} ({} worker directories)\n", s.workers),
            None => {
                o += &format!(
                    "  logs: {} event(s) in {} file(s) from {}\n",
                    s.events,
                    s.log_files,
                    s.log_dirs.join(", ")
                )
            }
        }
        if s.skipped_lines > 0 {
            o += &format!(
                "  skipped {} unparseable line(s), e.g. {}\n",
                s.skipped_lines,
                s.skipped_examples.first().map(String::as_str).unwrap_or("")
            );
        }
        if s.earlier_log_files_ignored > 0 {
            o += &format!(
                "  ignored {} log file(s) from earlier runs in the log directory\n",
                s.earlier_log_files_ignored
            );
        }
        if s.unclassified_writes > 0 {
            o += &format!(
                "  {} write(s) carried no verdict (library without policy fields)\n",
                s.unclassified_writes
            );
        }
        if s.unresolved_frames > 0 {
            o += &format!(
                "  {} stack frame(s) in no known object (JIT code, or glibc < 2.35): those writes may lack a component\n",
                s.unresolved_frames
            );
        }
        if !s.strays_killed.is_empty() {
            o += &format!(
                "  stopped {} stray process(es) left behind by the job: {:?}\n",
                s.strays_killed.len(),
                s.strays_killed
            );
        }
        self.workers_text(&mut o);
        if !self.rogue.is_empty() {
            o += &format!(
                "\nrogue writes ({} in {} component(s), worst first):\n",
                s.rogue_writes,
                self.rogue.len()
            );
            for g in &self.rogue {
                o += &format!(
                    "  {}: {} write(s), workers {}, {}\n",
                    component_name(g),
                    g.events,
                    ranges(&g.workers),
                    actions(&g.actions)
                );
                for p in g.paths.iter().take(TOP) {
                    o += &format!(
                        "    {}  x{}  workers {}  {}  {}\n",
                        p.path,
                        p.count,
                        ranges(&p.workers),
                        calls(&p.calls),
                        actions(&p.actions)
                    );
                }
                more(&mut o, "    ", g.paths.len(), "path(s)");
            }
        }
        if !self.attempts.is_empty() {
            o += &format!(
                "\nattempts ({} failed call(s) that would have been rogue writes; nothing written):\n",
                s.attempts
            );
            for a in self.attempts.iter().take(TOP) {
                let how: Vec<String> = a
                    .calls
                    .iter()
                    .map(|c| format!("{} {} x{}", c.op, c.errno, c.count))
                    .collect();
                o += &format!(
                    "  {}  workers {}  {}\n",
                    a.path,
                    ranges(&a.workers),
                    how.join(", ")
                );
            }
            more(&mut o, "  ", self.attempts.len(), "path(s)");
        }
        if !self.conflicts.is_empty() {
            o += &format!(
                "\nconflicts: files written by more than one worker ({}, {} unresolved):\n",
                self.conflicts.len(),
                s.unresolved_conflicts
            );
            for c in self.conflicts.iter().take(TOP) {
                let note = match c.resolution {
                    Some("merged") => "  (merged by a [merge] rule)",
                    Some("allowed") => "  (allowed by [audit] allow_conflicts)",
                    _ => "",
                };
                o += &format!(
                    "  {}  written by workers {}{note}\n",
                    c.path,
                    ranges(&c.writers)
                );
            }
            more(&mut o, "  ", self.conflicts.len(), "conflict(s)");
        }
        if !self.overlaps.is_empty() {
            o += &format!(
                "\nread/write overlaps: written by one worker, read by another ({}):\n",
                self.overlaps.len()
            );
            for c in self.overlaps.iter().take(TOP) {
                o += &format!(
                    "  {}  written by worker {}, read by {}\n",
                    c.path,
                    ranges(&c.writers),
                    ranges(&c.readers)
                );
            }
            more(&mut o, "  ", self.overlaps.len(), "path(s)");
        }
        if !self.averted.is_empty() {
            o += &format!(
                "\nclobbers averted by redirection ({}):\n",
                self.averted.len()
            );
            for c in self.averted.iter().take(TOP) {
                o += &format!("  {}  written by workers {}\n", c.path, ranges(&c.writers));
            }
            more(&mut o, "  ", self.averted.len(), "path(s)");
        }
        if !self.redirected.is_empty() {
            o += &format!("\nredirected ({}):\n", self.redirected.len());
            for r in self.redirected.iter().take(TOP) {
                o += &format!("  {}\n", r.original);
                for t in r.targets.iter().take(4) {
                    o += &format!("    {} -> {}\n", one_worker(&t.worker), t.target);
                }
                more(&mut o, "    ", r.targets.len().max(4), "worker(s)");
            }
            more(&mut o, "  ", self.redirected.len(), "path(s)");
        }
        if !self.merges.is_empty() {
            o += &format!(
                "\nmerges ({}, {} failed):\n",
                self.merges.len(),
                s.merge_failures
            );
            for m in self.merges.iter().take(TOP) {
                let ws: Vec<String> = m.inputs.iter().map(|i| i.worker.clone()).collect();
                let size = m.bytes.map(|b| format!(", {b} bytes")).unwrap_or_default();
                o += &format!(
                    "  {}  <- workers {}  {}: {}{size}\n",
                    m.output,
                    ranges(&ws),
                    m.merger,
                    m.status.as_str()
                );
                if let Some(r) = &m.reason {
                    o += &format!("    {r}\n");
                }
            }
            more(&mut o, "  ", self.merges.len(), "merge(s)");
        }
        if !self.unaudited.is_empty() {
            o += &format!("\nunaudited processes ({}):\n", self.unaudited.len());
            for u in self.unaudited.iter().take(TOP) {
                o += &format!(
                    "  {} ({}): {} exec(s), workers {}\n",
                    u.exe,
                    u.reason,
                    u.count,
                    ranges(&u.workers)
                );
            }
            more(&mut o, "  ", self.unaudited.len(), "program(s)");
        }
        o
    }

    /// One row per worker; with many workers, rows alike (same outcome,
    /// same rogue count, no failure output) become one row with a range.
    fn workers_text(&self, o: &mut String) {
        if self.workers.is_empty() {
            return;
        }
        *o += "\nworkers:\n";
        let many = self.workers.len() > WORKER_ROWS;
        let mut alike: BTreeMap<(String, u64), Vec<&WorkerReport>> = BTreeMap::new();
        for w in &self.workers {
            if many && w.worker.is_some() && w.stderr_tail.is_empty() {
                alike
                    .entry((outcome(w), w.rogue_writes))
                    .or_default()
                    .push(w);
                continue;
            }
            *o += &worker_row(w);
        }
        for ((how, rogue), ws) in alike {
            let names: Vec<String> = ws.iter().map(|w| worker_name(w, false)).collect();
            let events: u64 = ws.iter().map(|w| w.events).sum();
            *o += &format!(
                "  workers {} ({})  {how}  events {events}  rogue {rogue} each\n",
                ranges(&names),
                ws.len()
            );
        }
    }
}

/// `object function (file:line)`, as much of it as is known; an unnamed
/// call site is `object+0xvaddr`: how a component is named.
pub(super) fn component_name(g: &RogueGroup) -> String {
    let mut s = match (&g.function, g.vaddr) {
        (Some(f), _) => format!("{} {f}", g.object),
        (None, Some(v)) => format!("{}+{v:#x}", g.object),
        (None, None) => g.object.clone(),
    };
    if let (Some(file), Some(line)) = (&g.file, g.line) {
        s += &format!(" ({file}:{line})");
    }
    if let Some(why) = &g.unnamed {
        s += &format!(" (not named: {why})");
    }
    s
}

/// One worker in a sentence: `worker 3`, `n1:worker 3`, but `rank 1 worker
/// 3` as it is.
fn one_worker(label: &str) -> String {
    let (dir, name) = match label.rfind(':') {
        Some(i) => label.split_at(i + 1),
        None => ("", label),
    };
    if name.starts_with("rank ") || name == "root" {
        label.to_string()
    } else {
        format!("{dir}worker {name}")
    }
}

fn worker_name(w: &WorkerReport, padded: bool) -> String {
    let base = worker_label(w.rank, w.worker.map(|k| k as u64));
    let base = match &w.log_dir {
        Some(d) => format!("{d}:{base}"),
        None => base,
    };
    if padded && w.worker.is_some() && w.rank.is_none() {
        format!("worker {base}")
    } else {
        base
    }
}

fn outcome(w: &WorkerReport) -> String {
    let mut how = if let Some(e) = &w.spawn_error {
        format!("could not start: {e}")
    } else if let Some(sig) = &w.signal_name {
        format!(
            "killed by {sig}{}",
            if w.core_dumped { " (core dumped)" } else { "" }
        )
    } else if let Some(c) = w.exit_code {
        format!("exit {c}")
    } else {
        "outcome not recorded".into()
    };
    if w.timed_out {
        how += " [timeout]";
    } else if let Some(b) = &w.stopped_by {
        how += &format!(" [stopped: {b}]");
    }
    how
}

fn worker_row(w: &WorkerReport) -> String {
    let mut line = format!("  {:<10} {}", worker_name(w, true), outcome(w));
    if let Some(ms) = w.wall_time_ms {
        line += &format!("  {:.1}s", ms as f64 / 1000.0);
    }
    if let Some(m) = &w.memory {
        if m.samples > 0 {
            line += &format!(
                "  mem peak pss {} private {} shared {}",
                kib(m.peak_pss_kib),
                kib(m.peak_private_kib),
                kib(m.peak_shared_kib)
            );
        }
    }
    line += &format!("  events {}  rogue {}\n", w.events, w.rogue_writes);
    if !w.stderr_tail.is_empty() {
        line += &format!(
            "    last lines of {}:\n",
            w.stderr.as_deref().unwrap_or("stderr")
        );
        for t in &w.stderr_tail {
            line += &format!("    | {t}\n");
        }
    }
    line
}

/// "  … and K more path(s)" when a list was cut at [`TOP`].
fn more(o: &mut String, indent: &str, len: usize, what: &str) {
    if len > TOP {
        *o += &format!("{indent}… and {} more {what}\n", len - TOP);
    }
}

/// The first `n` entries, comma-separated, then "and K more".
pub fn top(items: &[String], n: usize) -> String {
    let mut s = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        s += &format!(" and {} more", items.len() - n);
    }
    s
}

/// Worker names with consecutive indices folded into ranges, per log
/// directory: `0-3,7`, `root,0-299`, `node1:0-1,node2:0-1`; cut after 12
/// pieces ("and K more").
pub fn ranges(names: &[String]) -> String {
    let mut pieces: Vec<String> = Vec::new();
    // (prefix, first, last) of the run being built.
    let mut run: Option<(String, u64, u64)> = None;
    let flush = |run: &mut Option<(String, u64, u64)>, pieces: &mut Vec<String>| {
        if let Some((p, a, b)) = run.take() {
            pieces.push(match b - a {
                0 => format!("{p}{a}"),
                1 => format!("{p}{a},{p}{b}"),
                _ => format!("{p}{a}-{b}"),
            });
        }
    };
    for n in names {
        // `n1:3` and `rank 0 worker 3`: the number after the last `:` or
        // space.
        let (prefix, last) = match n.rfind([':', ' ']) {
            Some(i) => (&n[..=i], &n[i + 1..]),
            None => ("", n.as_str()),
        };
        match last.parse::<u64>() {
            Ok(k) => match &mut run {
                Some((p, _, b)) if p == prefix && *b + 1 == k => *b = k,
                _ => {
                    flush(&mut run, &mut pieces);
                    run = Some((prefix.to_string(), k, k));
                }
            },
            Err(_) => {
                flush(&mut run, &mut pieces);
                pieces.push(n.clone());
            }
        }
    }
    flush(&mut run, &mut pieces);
    // "a,b" pieces from two-element runs count as one piece each here.
    top(&pieces, 12).replace(", ", ",")
}

/// `openat`, `rename destination (from t.tmp)`, `symlink destination (to
/// /etc/passwd)`: how a path was written.
fn calls(calls: &[CallUse]) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in calls.iter().take(4) {
        let mut s = c.op.clone();
        if let Some(r) = c.role {
            s += " ";
            s += r.as_str();
            if let Some(other) = &c.counterpart {
                let dir = match r {
                    Role::Destination => "from",
                    Role::Source => "to",
                };
                s += &format!(" ({dir} {other})");
            }
        }
        if calls.len() > 1 {
            s += &format!(" x{}", c.count);
        }
        out.push(s);
    }
    if calls.len() > 4 {
        out.push(format!("and {} more", calls.len() - 4));
    }
    out.join(", ")
}

fn kib(k: u64) -> String {
    if k >= 1024 * 1024 {
        format!("{:.1}G", k as f64 / 1048576.0)
    } else if k >= 1024 {
        format!("{:.1}M", k as f64 / 1024.0)
    } else {
        format!("{k}K")
    }
}

fn actions(a: &BTreeMap<&'static str, u64>) -> String {
    a.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_worker_is_named_once() {
        assert_eq!(one_worker("3"), "worker 3");
        assert_eq!(one_worker("n1:3"), "n1:worker 3");
        assert_eq!(one_worker("rank 1 worker 3"), "rank 1 worker 3");
        assert_eq!(one_worker("root"), "root");
    }

    #[test]
    fn worker_sets_fold_into_ranges() {
        let all: Vec<String> = (0..300).map(|k| k.to_string()).collect();
        assert_eq!(ranges(&all), "0-299");
        assert_eq!(ranges(&names(&["root", "0", "1", "2", "5"])), "root,0-2,5");
        assert_eq!(ranges(&names(&["0", "1", "3"])), "0,1,3");
        assert_eq!(
            ranges(&names(&["n1:0", "n1:1", "n1:2", "n2:0", "n2:1", "n2:2"])),
            "n1:0-2,n2:0-2"
        );
        let ranked: Vec<String> = (0..4).map(|k| format!("rank 1 worker {k}")).collect();
        assert_eq!(ranges(&ranked), "rank 1 worker 0-3");
        assert_eq!(
            ranges(&names(&["rank 0 worker 1", "rank 1 worker 1"])),
            "rank 0 worker 1,rank 1 worker 1"
        );
        let odd: Vec<String> = (0..40).map(|k| (2 * k).to_string()).collect();
        let r = ranges(&odd);
        assert!(r.ends_with("and 28 more"), "{r}");
        assert!(r.len() < 80, "{r}");
    }

    #[test]
    fn many_alike_workers_are_one_row() {
        let mut rep = Report::default();
        for k in 0..300 {
            rep.workers.push(WorkerReport {
                worker: Some(k),
                exit_code: Some(0),
                events: 2,
                ..Default::default()
            });
        }
        rep.workers[7].exit_code = Some(1);
        rep.workers[7].stderr_tail = vec!["boom".into()];
        let t = rep.to_text();
        assert!(
            t.contains("  workers 0-6,8-299 (299)  exit 0  events 598  rogue 0 each\n"),
            "{t}"
        );
        assert!(t.contains("  worker 7   exit 1"), "{t}");
        assert!(t.lines().count() < 20, "{t}");
    }
}
