//! Telling runs apart in a log directory (docs/report.md, "Runs"): a log
//! directory keeps every run's logs, and `mpaudit report DIR` reports one.
//!
//! - A run of `mpaudit run`/`exec` is its metadata file,
//!   `mpaudit-run-<pid>-<ns>.json` (written before the first process
//!   starts); its logs are those loaded from then until the next run's
//!   metadata. Its id is `<pid>-<ns>`.
//! - Logs older than every metadata file (LD_PRELOAD alone) are grouped by
//!   process tree: a log whose process's parent (or, after exec, itself) has
//!   an earlier log joins that log's run, and so does one whose parent
//!   logged nothing but started another logged process that was running
//!   then or had ended less than 2 s before (the ranks of an unaudited
//!   launcher); any other starts a run, whose id is its root's `<pid>-<ns>`.
//!   When in doubt, logs join: a run shown whole is better than one cut
//!   short.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::events;

/// Processes of one unlogged parent started at most this long after the
/// previous one ended are one run (a launcher's quick ranks); a later one
/// starts a run (the same command run again from one shell).
const SIBLING_GAP_NS: u64 = 2_000_000_000;

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

/// What a log says about its process: its parent, first and last event
/// times (the last `None` when no line near the end parses: a killed
/// process, a torn line).
struct Span {
    ppid: i64,
    start_ts: u64,
    end_ts: Option<u64>,
}

/// Reads a log's first line and the last complete line of its last 64 KiB.
fn span(path: &Path) -> Option<Span> {
    use std::io::{Seek, SeekFrom};
    const WINDOW: u64 = 64 * 1024;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; WINDOW as usize];
    let n = f.read(&mut buf).ok()?;
    let clean = |l: &[u8]| -> Vec<u8> { l.iter().copied().filter(|&b| b != 0).collect() };
    let first = clean(buf[..n].split(|&b| b == b'\n').next()?);
    let ev = events::parse_line(&first).ok()?;
    let (ppid, start_ts) = (ev.ppid, ev.ts);
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(WINDOW);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut tail = Vec::new();
    f.take(WINDOW).read_to_end(&mut tail).ok()?;
    let end_ts = tail
        .split(|&b| b == b'\n')
        .rev()
        .map(clean)
        .filter(|l| !l.is_empty())
        .find_map(|l| events::parse_line(&l).ok().map(|e| e.ts));
    Some(Span {
        ppid,
        start_ts,
        end_ts,
    })
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
    let scan = events::scan_log_dir(dir)?;
    scan.warn_skipped();
    let mut logs: Vec<(i64, u128, PathBuf)> = scan
        .files
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
    // Unlogged parent → (run of its logged children, their latest end).
    let mut run_of_parent: HashMap<i64, (usize, u64)> = HashMap::new();
    for (pid, ns, path) in logs.iter().filter(|l| l.1 < first_meta) {
        let sp = span(path);
        let parent = sp.as_ref().map(|s| s.ppid);
        let sibling = sp.as_ref().and_then(|s| {
            run_of_parent
                .get(&s.ppid)
                .filter(|(_, end)| s.start_ts <= end.saturating_add(SIBLING_GAP_NS))
                .map(|(i, _)| *i)
        });
        let joined = parent
            .and_then(|pp| run_of_pid.get(&pp))
            .or_else(|| run_of_pid.get(pid))
            .copied()
            .or(sibling);
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
        if let Some(s) = &sp {
            if !run_of_pid.contains_key(&s.ppid) {
                let end = s.end_ts.unwrap_or(u64::MAX);
                let e = run_of_parent.entry(s.ppid).or_insert((i, end));
                if e.0 == i {
                    e.1 = e.1.max(end);
                } else {
                    *e = (i, end);
                }
            }
        }
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

    /// A log from `start` to `end` (ns; no exit event when `end` is None).
    fn start(pid: i64, ppid: i64, start: u128, end: Option<u128>) -> String {
        let mut s = format!(
            "{{\"v\":1,\"ts\":{start},\"kind\":\"process\",\"op\":\"start\",\"pid\":{pid},\"ppid\":{ppid},\"tid\":{pid},\"worker\":null,\"argv\":[],\"exe\":\"/bin/sh\",\"cwd\":\"/\",\"root\":false}}\n"
        );
        if let Some(e) = end {
            s += &format!("{{\"v\":1,\"ts\":{e},\"kind\":\"process\",\"op\":\"exit\",\"pid\":{pid},\"ppid\":{ppid},\"tid\":{pid},\"worker\":null,\"status\":0}}\n");
        }
        s
    }

    #[test]
    fn runs_by_metadata_then_by_process_tree() {
        let dir = std::env::temp_dir().join(format!("mpaudit-runs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Event times in seconds (the names' load times stay small).
        const S: u128 = 1_000_000_000;
        let log = |pid: i64, ns: u128, ppid: i64| {
            let text = start(pid, ppid, ns * S, Some((ns + 5) * S));
            std::fs::write(dir.join(format!("mpaudit-{pid}-{ns}.jsonl")), text).unwrap();
        };
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        // LD_PRELOAD alone, twice from one unaudited shell (pid 1): a tree
        // 10 → 11 → 12 (11 exec'd), then 20, which starts long after.
        log(10, 100, 1);
        log(11, 110, 10);
        log(11, 115, 10);
        log(20, 200, 1);
        log(12, 210, 11); // a late child of the first tree
                          // Ranks of an unaudited launcher (pid 50): running at once, one
                          // killed (no exit event), one started just after another ended.
        write(
            "mpaudit-51-230.jsonl",
            start(51, 50, 230 * S, Some(231 * S)),
        );
        write("mpaudit-52-240.jsonl", start(52, 50, 231 * S + S / 2, None));
        write(
            "mpaudit-53-250.jsonl",
            start(53, 50, 232 * S, Some(232 * S)),
        );
        // Two runs of the runner.
        std::fs::write(dir.join("mpaudit-run-7-300.json"), "{\"job_dir\":\"/j\"}").unwrap();
        log(30, 310, 7);
        log(31, 320, 7);
        std::fs::write(dir.join("mpaudit-run-8-400.json"), "{}").unwrap();
        log(40, 410, 8);
        let rs = runs(&dir).unwrap();
        let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["10-100", "20-200", "51-230", "7-300", "8-400"]);
        let n: Vec<usize> = rs.iter().map(|r| r.files.len()).collect();
        assert_eq!(n, [4, 1, 3, 2, 1]);
        assert_eq!(rs[3].meta.as_ref().unwrap()["job_dir"], "/j");
        let latest = select(rs.clone(), &Pick::Latest, "d").unwrap();
        assert_eq!(latest[0].id, "8-400");
        assert_eq!(select(rs.clone(), &Pick::All, "d").unwrap().len(), 5);
        let one = select(rs.clone(), &Pick::Id("20-200".into()), "d").unwrap();
        assert_eq!(one[0].files.len(), 1);
        let e = select(rs, &Pick::Id("9-9".into()), "d").unwrap_err();
        assert!(e.contains("no run `9-9`") && e.contains("8-400"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
