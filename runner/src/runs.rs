//! Telling runs apart in a log directory (docs/report.md, "Runs"): a log
//! directory keeps every run's logs, and `mpaudit report DIR` reports one.
//!
//! - A run of `mpaudit run`/`exec` is its metadata file,
//!   `mpaudit-run-<pid>-<ns>.json` (written before the first process
//!   starts); its logs are those loaded from then until the next run's
//!   metadata. Its id is `<pid>-<ns>`.
//! - Logs older than every metadata file (LD_PRELOAD alone) are grouped by
//!   process tree: a log whose process's parent (or, after exec, itself) has
//!   an earlier log joins that log's run; any other starts a run, whose id
//!   is its root's `<pid>-<ns>`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::events;

/// One run's logs in one directory.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    /// Start (ns since the epoch): the metadata's, else the root's load time.
    pub start_ns: u128,
    pub files: Vec<PathBuf>,
    /// The `mpaudit-run-*.json` contents, for runs of the runner.
    pub meta: Option<serde_json::Value>,
    /// The root's pid (LD_PRELOAD-only runs).
    pub root_pid: Option<i64>,
}

/// Which runs a report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Latest,
    Id(String),
    All,
}

/// `mpaudit-run-<pid>-<ns>.json` → `(id, ns)`.
fn meta_name_parts(name: &str) -> Option<(String, u128)> {
    let mid = name.strip_prefix("mpaudit-run-")?.strip_suffix(".json")?;
    let (pid, ns) = mid.split_once('-')?;
    pid.parse::<u64>().ok()?;
    Some((mid.to_string(), ns.parse().ok()?))
}

/// (pid, ppid) from a log's first line, its `start` event.
fn first_event(path: &Path) -> Option<(i64, i64)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(&mut buf).ok()?;
    let line = buf[..n].split(|&b| b == b'\n').next()?;
    let line: Vec<u8> = line.iter().copied().filter(|&b| b != 0).collect();
    let ev = events::parse_line(&line).ok()?;
    Some((ev.pid, ev.ppid))
}

/// Every run in `dir`, oldest first.
pub fn runs(dir: &Path) -> std::io::Result<Vec<Run>> {
    let mut metas: Vec<(String, u128, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        if let Some((id, ns)) = meta_name_parts(&e.file_name().to_string_lossy()) {
            metas.push((id, ns, e.path()));
        }
    }
    metas.sort_by_key(|m| m.1);
    let mut logs: Vec<(i64, u128, PathBuf)> = events::log_files(dir)?
        .into_iter()
        .filter_map(|p| {
            let (pid, ns) = events::log_name_parts(&p.file_name()?.to_string_lossy())?;
            Some((pid, ns, p))
        })
        .collect();
    logs.sort_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));

    let first_meta = metas.first().map_or(u128::MAX, |m| m.1);
    let mut out: Vec<Run> = Vec::new();
    // Before any metadata: process trees.
    let mut run_of_pid: HashMap<i64, usize> = HashMap::new();
    for (pid, ns, path) in logs.iter().filter(|l| l.1 < first_meta) {
        let parent = first_event(path).map(|(_, ppid)| ppid);
        let joined = parent
            .and_then(|pp| run_of_pid.get(&pp))
            .or_else(|| run_of_pid.get(pid))
            .copied();
        let i = match joined {
            Some(i) => i,
            None => {
                out.push(Run {
                    id: format!("{pid}-{ns}"),
                    start_ns: *ns,
                    files: Vec::new(),
                    meta: None,
                    root_pid: Some(*pid),
                });
                out.len() - 1
            }
        };
        out[i].files.push(path.clone());
        run_of_pid.insert(*pid, i);
    }
    // From the first metadata on: by time.
    for (k, (id, ns, path)) in metas.iter().enumerate() {
        let until = metas.get(k + 1).map_or(u128::MAX, |m| m.1);
        let meta = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        out.push(Run {
            id: id.clone(),
            start_ns: *ns,
            files: logs
                .iter()
                .filter(|l| l.1 >= *ns && l.1 < until)
                .map(|l| l.2.clone())
                .collect(),
            meta,
            root_pid: None,
        });
    }
    out.sort_by_key(|r| r.start_ns);
    for r in &mut out {
        r.files.sort();
    }
    Ok(out)
}

/// The runs `pick` selects; an unknown id is an error naming the known ones.
pub fn select(runs: Vec<Run>, pick: &Pick, dir: &str) -> Result<Vec<Run>, String> {
    match pick {
        Pick::All => Ok(runs),
        Pick::Latest => Ok(runs.into_iter().last().into_iter().collect()),
        Pick::Id(id) => {
            let known: Vec<String> = runs.iter().rev().take(5).map(|r| r.id.clone()).collect();
            let found: Vec<Run> = runs.into_iter().filter(|r| &r.id == id).collect();
            if found.is_empty() {
                Err(format!(
                    "{dir}: no run `{id}` (latest: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            } else {
                Ok(found)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(pid: i64, ppid: i64) -> String {
        format!(
            "{{\"v\":1,\"ts\":1,\"kind\":\"process\",\"op\":\"start\",\"pid\":{pid},\"ppid\":{ppid},\"tid\":{pid},\"worker\":null,\"argv\":[],\"exe\":\"/bin/sh\",\"cwd\":\"/\",\"root\":false}}\n"
        )
    }

    #[test]
    fn runs_by_metadata_then_by_process_tree() {
        let dir = std::env::temp_dir().join(format!("mpaudit-runs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = |pid: i64, ns: u128, ppid: i64| {
            std::fs::write(
                dir.join(format!("mpaudit-{pid}-{ns}.jsonl")),
                start(pid, ppid),
            )
            .unwrap();
        };
        // LD_PRELOAD alone, twice: a tree 10 → 11 → 12 (12 exec'd), then 20.
        log(10, 100, 1);
        log(11, 110, 10);
        log(11, 115, 10);
        log(20, 200, 1);
        log(12, 210, 11); // a late child of the first tree
                          // Two runs of the runner.
        std::fs::write(dir.join("mpaudit-run-7-300.json"), "{\"job_dir\":\"/j\"}").unwrap();
        log(30, 310, 7);
        log(31, 320, 7);
        std::fs::write(dir.join("mpaudit-run-8-400.json"), "{}").unwrap();
        log(40, 410, 8);
        let rs = runs(&dir).unwrap();
        let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["10-100", "20-200", "7-300", "8-400"]);
        let n: Vec<usize> = rs.iter().map(|r| r.files.len()).collect();
        assert_eq!(n, [4, 1, 2, 1]);
        assert_eq!(rs[2].meta.as_ref().unwrap()["job_dir"], "/j");
        let latest = select(rs.clone(), &Pick::Latest, "d").unwrap();
        assert_eq!(latest[0].id, "8-400");
        assert_eq!(select(rs.clone(), &Pick::All, "d").unwrap().len(), 4);
        let one = select(rs.clone(), &Pick::Id("20-200".into()), "d").unwrap();
        assert_eq!(one[0].files.len(), 1);
        let e = select(rs, &Pick::Id("9-9".into()), "d").unwrap_err();
        assert!(e.contains("no run `9-9`") && e.contains("8-400"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
