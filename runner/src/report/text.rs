//! The text rendering: for a person at a terminal.

use std::collections::BTreeMap;

use super::model::*;

impl Report {
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let s = &self.summary;
        o += &format!("mpaudit: {} (exit status {})\n", s.status, s.exit_code);
        if let Some(r) = &s.stop_reason {
            o += &format!("  stopped: {r}\n");
        }
        if let Some(j) = &s.job_dir {
            o += &format!("  job dir: {j}\n");
        }
        o += &format!(
            "  logs: {} event(s) in {} file(s) from {}\n",
            s.events,
            s.log_files,
            s.log_dirs.join(", ")
        );
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
        if !s.strays_killed.is_empty() {
            o += &format!(
                "  stopped {} stray process(es) left behind by the job: {:?}\n",
                s.strays_killed.len(),
                s.strays_killed
            );
        }
        if !self.workers.is_empty() {
            o += "\nworkers:\n";
            for w in &self.workers {
                let name = w
                    .worker
                    .map(|k| format!("worker {k}"))
                    .unwrap_or_else(|| "root".into());
                let how = if let Some(e) = &w.spawn_error {
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
                let mut line = format!("  {name:<10} {how}");
                if w.timed_out {
                    line += " [timeout]";
                } else if let Some(b) = &w.stopped_by {
                    line += &format!(" [stopped: {b}]");
                }
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
                line += &format!("  events {}  rogue {}", w.events, w.rogue_writes);
                o += &line;
                o.push('\n');
                if !w.stderr_tail.is_empty() {
                    o += &format!(
                        "    last lines of {}:\n",
                        w.stderr.as_deref().unwrap_or("stderr")
                    );
                    for t in &w.stderr_tail {
                        o += &format!("    | {t}\n");
                    }
                }
            }
        }
        if !self.rogue.is_empty() {
            o += &format!(
                "\nrogue writes ({} in {} component(s), worst first):\n",
                s.rogue_writes,
                self.rogue.len()
            );
            for g in &self.rogue {
                let sym = g
                    .demangled
                    .as_deref()
                    .or(g.symbol.as_deref())
                    .unwrap_or("?");
                o += &format!(
                    "  {} {}: {} write(s), workers {}, {}\n",
                    g.object,
                    sym,
                    g.events,
                    g.workers.join(","),
                    actions(&g.actions)
                );
                for p in &g.paths {
                    o += &format!(
                        "    {}  x{}  workers {}  {}\n",
                        p.path,
                        p.count,
                        p.workers.join(","),
                        actions(&p.actions)
                    );
                }
            }
        }
        if !self.conflicts.is_empty() {
            o += &format!("\nconflicts ({}):\n", self.conflicts.len());
            for c in &self.conflicts {
                match c.kind {
                    "clobber" => {
                        o += &format!("  {}  written by workers {}\n", c.path, c.writers.join(","))
                    }
                    _ => {
                        o += &format!(
                            "  {}  written by worker {}, read by {}\n",
                            c.path,
                            c.writers.join(","),
                            c.readers.join(",")
                        )
                    }
                }
            }
        }
        if !self.averted.is_empty() {
            o += &format!(
                "\nclobbers averted by redirection ({}):\n",
                self.averted.len()
            );
            for c in &self.averted {
                o += &format!("  {}  written by workers {}\n", c.path, c.writers.join(","));
            }
        }
        if !self.redirected.is_empty() {
            o += &format!("\nredirected ({}):\n", self.redirected.len());
            for r in &self.redirected {
                o += &format!("  {}\n", r.original);
                for t in &r.targets {
                    o += &format!("    worker {} -> {}\n", t.worker, t.target);
                }
            }
        }
        if !self.merges.is_empty() {
            o += &format!(
                "\nmerges ({}, {} failed):\n",
                self.merges.len(),
                s.merge_failures
            );
            for m in &self.merges {
                let ws: Vec<&str> = m.inputs.iter().map(|i| i.worker.as_str()).collect();
                let size = m.bytes.map(|b| format!(", {b} bytes")).unwrap_or_default();
                o += &format!(
                    "  {}  <- workers {}  {}: {}{size}\n",
                    m.output,
                    ws.join(","),
                    m.merger,
                    m.status.as_str()
                );
                if let Some(r) = &m.reason {
                    o += &format!("    {r}\n");
                }
            }
        }
        if !self.unaudited.is_empty() {
            o += &format!("\nunaudited processes ({}):\n", self.unaudited.len());
            for u in &self.unaudited {
                o += &format!(
                    "  {} ({}): {} exec(s), workers {}\n",
                    u.exe,
                    u.reason,
                    u.count,
                    u.workers.join(",")
                );
            }
        }
        o
    }
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
