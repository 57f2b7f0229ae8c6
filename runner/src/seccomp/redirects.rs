//! The supervisor's side of the worker's redirect table: the very table
//! the library's processes of the worker use (`mpaudit_core::table`, a
//! `MAP_SHARED` file), so a redirect made by a supervised process is seen
//! by the worker's preloaded ones and the other way round, at once.
//!
//! Which file: the one a process of the worker names when it execs
//! (`MPAUDIT_REDIRECT_TABLE`, which the library puts in the environment of
//! every program it execs, [`Redirects::adopt`]); for a worker that has
//! none (a static program started by the runner, a worker the supervisor
//! numbered), one the supervisor creates, as the library would:
//! `<log dir>/mpaudit-<pid>-<ns>.redirects`, seeded from the worker's
//! manifest. Every new redirect is also appended to the manifest,
//! `worker_<k>/mpaudit-redirects.jsonl` (docs/events.md), which the merge
//! reads.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mpaudit_core::table::{LibcIo, Refused};
use serde_json::Value;

use crate::merge::MANIFEST;

type Table = mpaudit_core::table::Table<LibcIo>;

pub struct Redirects {
    /// `worker_<k>` directory of each worker.
    worker_dir: Box<dyn Fn(u32) -> PathBuf + Send>,
    /// Where the tables the supervisor creates go; `None` when the policy
    /// does not redirect (no worker has a table then).
    log_dir: Option<PathBuf>,
    /// Each worker's table, once attached (boxed: its mappings are
    /// referenced for the run's duration, and never unmapped), and whether
    /// it is one the supervisor created and recorded nothing in yet (its
    /// entries are the manifest's).
    tables: HashMap<u32, (Box<Table>, bool)>,
    /// Whether the refused-insert warning was printed.
    warned: bool,
}

fn field(v: &Value, key: &str) -> Option<Vec<u8>> {
    if let Some(hex) = v.get(format!("{key}_hex")).and_then(Value::as_str) {
        return (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
    }
    v.get(key)
        .and_then(Value::as_str)
        .map(|s| s.as_bytes().to_vec())
}

/// Whether two spellings name one directory (the library normalises its
/// worker directory; the runner's may differ in spelling only).
fn same_dir(a: &[u8], b: &Path) -> bool {
    let a = Path::new(std::ffi::OsStr::from_bytes(a));
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

impl Redirects {
    /// `log_dir`: where to create tables, `None` when nothing is
    /// redirected.
    pub fn new(
        log_dir: Option<PathBuf>,
        worker_dir: impl Fn(u32) -> PathBuf + Send + 'static,
    ) -> Redirects {
        Redirects {
            worker_dir: Box::new(worker_dir),
            log_dir,
            tables: HashMap::new(),
            warned: false,
        }
    }

    pub fn worker_dir(&self, worker: u32) -> PathBuf {
        (self.worker_dir)(worker)
    }

    /// Takes `path`, the table a process of `worker` names, as the
    /// worker's table, unless the worker has one already (one the
    /// supervisor created and recorded nothing in gives way: another
    /// thread's call may have come before the exec that names the file)
    /// or the file is not that worker's.
    pub fn adopt(&mut self, worker: u32, path: &[u8]) {
        if let Some((t, unused)) = self.tables.get(&worker) {
            if !*unused || t.path() == path {
                return;
            }
        }
        let wd = self.worker_dir(worker);
        let t = Box::new(Table::new());
        // SAFETY: a table no other thread sees yet.
        if unsafe { t.open_existing_if(path, |owner| same_dir(owner, &wd)) } {
            // A replaced table stays mapped (nothing refers to it).
            if let Some((old, _)) = self.tables.insert(worker, (t, false)) {
                Box::leak(old);
            }
        }
    }

    /// The worker's table, created (and seeded from its manifest) if it
    /// has none yet; `None` when none can be created.
    fn table(&mut self, worker: u32) -> Option<&Table> {
        if !self.tables.contains_key(&worker) {
            let log_dir = self.log_dir.as_ref()?;
            let wd = self.worker_dir(worker);
            let t = Box::new(Table::new());
            let ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let name = format!("mpaudit-{}-{ns}.redirects", std::process::id());
            let path = log_dir.join(name);
            // SAFETY: a table no other thread sees yet.
            if !unsafe { t.create(path.as_os_str().as_bytes(), wd.as_os_str().as_bytes()) } {
                return None;
            }
            seed_from_manifest(&t, &wd.join(MANIFEST));
            self.tables.insert(worker, (t, true));
        }
        self.tables.get(&worker).map(|(t, _)| &**t)
    }

    /// The worker's copy of `abs`, if the worker redirected it (in any of
    /// its processes, supervised or preloaded).
    pub fn lookup(&mut self, worker: u32, abs: &[u8]) -> Option<Vec<u8>> {
        self.table(worker)?.get(abs).map(<[u8]>::to_vec)
    }

    /// [`Redirects::lookup`] without making the worker's table (without
    /// one, the worker redirected nothing this run saw).
    pub fn lookup_made(&self, worker: u32, abs: &[u8]) -> Option<Vec<u8>> {
        self.tables.get(&worker)?.0.get(abs).map(<[u8]>::to_vec)
    }

    /// The names the worker redirected directly below the directory `dir`
    /// (an absolute path), each with its copy (a missing copy: removed),
    /// in the table's order (as the library lists them, dirview.rs).
    pub fn children(&mut self, worker: u32, dir: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let Some(t) = self.table(worker) else {
            return Vec::new();
        };
        let mut node = dir.to_vec();
        if node != b"/" {
            node.push(b'/');
        }
        let mut out = Vec::new();
        for seg in 0..t.segments() {
            let mut link = t.children(seg, &node);
            // Bounded by the table's size: a damaged list cannot loop.
            for _ in 0..=t.entries() {
                if link == 0 {
                    break;
                }
                let Some((found, after)) = t.entry(link - 1) else {
                    break;
                };
                link = after;
                // The first entry of a key only (a key may be in two
                // segments).
                if t.find(found.key).map(|f| f.id) != Some(found.id) {
                    continue;
                }
                match found.key.get(node.len()..) {
                    Some(name) if !name.is_empty() && !name.contains(&b'/') => {
                        out.push((name.to_vec(), found.value.to_vec()));
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Whether the worker has redirected anything (a cheap test for the
    /// reads and stats that are notified only to follow redirects).
    pub fn any(&mut self, worker: u32) -> bool {
        self.table(worker).is_some_and(|t| t.entries() > 0)
    }

    /// Whether any worker has redirected anything.
    pub fn any_worker(&self) -> bool {
        self.tables.values().any(|(t, _)| t.entries() > 0)
    }

    /// Whether a new redirect of the worker can be recorded, as the
    /// library checks before a redirected call (so a redirect the worker
    /// could not see again never happens): `Err(errno)` to fail with.
    pub fn reserve(&mut self, worker: u32) -> Result<(), i32> {
        let r = match self.table(worker) {
            None => Err(Refused::NoTable),
            Some(t) => t.reserve(),
        };
        r.map_err(|why| {
            self.refused(worker, why);
            libc::ENOSPC
        })
    }

    fn refused(&mut self, worker: u32, why: Refused) {
        if let Some((t, _)) = self.tables.get(&worker) {
            t.note_refused();
        }
        if !std::mem::replace(&mut self.warned, true) {
            let what = match why {
                Refused::NoTable => "no redirect table".to_string(),
                Refused::Full(e) => format!(
                    "the redirect table cannot grow ({})",
                    std::io::Error::from_raw_os_error(e)
                ),
            };
            eprintln!("mpaudit: seccomp supervisor: worker {worker}: {what}; further redirected writes fail (redirect-failed)");
        }
    }

    /// Records a new redirect in the worker's table and its manifest (for
    /// the merge).
    pub fn record(&mut self, worker: u32, pid: i32, original: &[u8], target: &[u8]) {
        let inserted = match self.table(worker) {
            None => Err(Refused::NoTable),
            Some(t) => t.insert(original, target),
        };
        if let Some((_, unused)) = self.tables.get_mut(&worker) {
            *unused = false;
        }
        match inserted {
            Ok(false) => return, // in the table (and the manifest) already
            Ok(true) => {}
            // Rare (reserve made room before the call): the manifest still
            // gets the line, so the merge has the file.
            Err(why) => self.refused(worker, why),
        }
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut v = serde_json::json!({
            "original": lossy(original),
            "target": lossy(target),
            "worker": worker,
            "pid": pid,
        });
        if std::str::from_utf8(original).is_err() || std::str::from_utf8(target).is_err() {
            v["original_hex"] = hex(original).into();
            v["target_hex"] = hex(target).into();
        }
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        // One O_APPEND write per line, as the library writes its lines.
        // Through the worker directory held, the name not followed: the
        // program may put a symlink there (review 6, finding 7).
        let wd = self.worker_dir(worker);
        let path = wd.join(MANIFEST);
        let written =
            super::beneath::Place::of(wd.as_os_str().as_bytes(), path.as_os_str().as_bytes())
                // Made now, the manifest would change the worker
                // directory's times after the call: in the worker's view
                // they are the job directory's own (`touch .`; review 6,
                // findings 2 and 3), so they are put back.
                .and_then(|place| place.adding_unseen(|| place.open_append(0o644)))
                .map_err(std::io::Error::from_raw_os_error)
                .and_then(|mut f| f.write_all(&line));
        if let Err(e) = written {
            eprintln!(
                "mpaudit: seccomp supervisor: {}: {e}: the merge will miss {}",
                path.display(),
                lossy(original)
            );
        }
    }
}

/// Puts the redirects of the worker's manifest into a new table (a later
/// command of the worker sees what an earlier one redirected, as in the
/// library's `load_manifest`).
fn seed_from_manifest(t: &Table, manifest: &Path) {
    let Ok(text) = std::fs::read(manifest) else {
        return;
    };
    for line in text.split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if let (Some(o), Some(tg)) = (field(&v, "original"), field(&v, "target")) {
            let _ = t.insert(&o, &tg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_shared_with_the_library_and_seeded_from_the_manifest() {
        let dir = std::env::temp_dir().join(format!("mpaudit-redirects-{}", std::process::id()));
        let w0 = dir.join("worker_0");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&w0).unwrap();
        std::fs::create_dir_all(&logs).unwrap();
        // A line the library wrote, one of them in hex.
        std::fs::write(
            w0.join(MANIFEST),
            "{\"original\":\"/j/a\",\"target\":\"/j/w/worker_0/a\",\"worker\":0,\"pid\":1}\n\
             {\"original\":\"/j/\u{fffd}\",\"target\":\"?\",\"original_hex\":\"2f6a2fff\",\"target_hex\":\"2f6a2f772f776f726b65725f302fff\",\"worker\":0,\"pid\":1}\n",
        )
        .unwrap();
        let d = dir.clone();
        let mut r = Redirects::new(Some(logs.clone()), move |k| d.join(format!("worker_{k}")));
        assert_eq!(
            r.lookup(0, b"/j/a").as_deref(),
            Some(&b"/j/w/worker_0/a"[..])
        );
        assert_eq!(
            r.lookup(0, b"/j/\xff").as_deref(),
            Some(&b"/j/w/worker_0/\xff"[..])
        );
        r.record(0, 7, b"/j/b", b"/j/w/worker_0/b");
        let text = std::fs::read_to_string(w0.join(MANIFEST)).unwrap();
        assert!(
            text.ends_with(
                "{\"original\":\"/j/b\",\"pid\":7,\"target\":\"/j/w/worker_0/b\",\"worker\":0}\n"
            ),
            "{text}"
        );
        // A second user of the file (a library process of the worker)
        // sees the supervisor's redirect at once, and the other way round.
        let path = r.tables[&0].0.path().to_vec();
        let d = dir.clone();
        let mut other = Redirects::new(Some(logs.clone()), move |k| d.join(format!("worker_{k}")));
        // A table of its own first (a call before the exec that names
        // the worker's), which gives way, having recorded nothing.
        assert!(other.any(0), "seeded from the manifest");
        other.adopt(0, &path);
        assert_eq!(
            other.lookup(0, b"/j/b").as_deref(),
            Some(&b"/j/w/worker_0/b"[..])
        );
        other.record(0, 8, b"/j/c", b"/j/w/worker_0/c");
        assert_eq!(
            r.lookup(0, b"/j/c").as_deref(),
            Some(&b"/j/w/worker_0/c"[..])
        );
        // Another worker's table is not taken.
        let mut third = Redirects::new(Some(logs), {
            let d = dir.clone();
            move |k| d.join(format!("worker_{}", k + 1))
        });
        third.adopt(0, &path);
        assert_eq!(third.lookup(0, b"/j/c"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
