//! `mpaudit-run-<pid>-<ns>.json` in the log directory: what `mpaudit run`
//! knew (job directory, mode, workers) and, once done, the report's summary
//! and workers, so that `mpaudit report LOGDIR` can show paths relative to
//! the job directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::plan::Plan;
use crate::report::Report;

static FILE: OnceLock<PathBuf> = OnceLock::new();

pub fn write(plan: &Plan) -> Result<(), String> {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = plan
        .log_dir
        .join(format!("mpaudit-run-{}-{ns}.json", std::process::id()));
    let v = serde_json::json!({ "job_dir": plan.job_dir, "mode": plan.mode, "workers": plan.workers, "plan": plan });
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default()).map_err(|e| {
        format!(
            "log directory {} is not writable: {e}",
            plan.log_dir.display()
        )
    })?;
    let _ = FILE.set(path);
    Ok(())
}

/// The metadata file this run wrote at its start is gone (or is no longer
/// a file): the job removed or emptied the log directory.
pub fn vanished() -> bool {
    FILE.get().is_some_and(|p| !p.is_file())
}

pub fn finish(plan: &Plan, rep: &Report) -> std::io::Result<()> {
    let Some(path) = FILE.get() else {
        return Ok(());
    };
    // Merged originals: the conflicts they resolve stay resolved in
    // `mpaudit report`.
    let merged: Vec<&str> = rep
        .merges
        .iter()
        .filter(|m| m.status == crate::merge::Status::Merged)
        .map(|m| m.original.as_str())
        .collect();
    // The merges themselves too, each merged output with its size and
    // SHA-256 (the record the next run checks is the workers directory's
    // mpaudit-merged.json).
    let v = serde_json::json!({ "job_dir": plan.job_dir, "mode": plan.mode, "workers": plan.workers, "plan": plan, "summary": rep.summary, "worker_outcomes": rep.workers, "merged": merged, "merges": rep.merges });
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap_or_default())
}

/// The job directory the runs' metadata record, if they all agree.
pub fn job_dir<'a>(metas: impl Iterator<Item = &'a serde_json::Value>) -> Option<PathBuf> {
    let mut found: Option<PathBuf> = None;
    for v in metas {
        let j = PathBuf::from(v.get("job_dir")?.as_str()?);
        match &found {
            Some(f) if f != &j => return None,
            _ => found = Some(j),
        }
    }
    found.filter(|p| Path::new(p).is_absolute())
}
