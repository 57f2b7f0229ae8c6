//! The supervisor's redirect table, per worker: which paths a worker's
//! supervised processes redirected (so their later opens, stats and
//! renames of the path use the worker's copy), shared with the library
//! through the worker's manifest, `worker_<k>/mpaudit-redirects.jsonl`
//! (docs/events.md): the supervisor appends what it redirects, and reads
//! what the worker's preloaded processes redirected.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use serde_json::Value;

use crate::merge::MANIFEST;

#[derive(Default)]
struct Table {
    map: HashMap<Vec<u8>, Vec<u8>>,
    /// Bytes of the manifest already read.
    read: u64,
}

pub struct Redirects {
    /// `worker_<k>` directory of each worker.
    worker_dir: Box<dyn Fn(u32) -> PathBuf + Send>,
    tables: HashMap<u32, Table>,
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

impl Redirects {
    pub fn new(worker_dir: impl Fn(u32) -> PathBuf + Send + 'static) -> Redirects {
        Redirects {
            worker_dir: Box::new(worker_dir),
            tables: HashMap::new(),
        }
    }

    pub fn worker_dir(&self, worker: u32) -> PathBuf {
        (self.worker_dir)(worker)
    }

    /// Reads the manifest lines added since the last look.
    fn refresh(&mut self, worker: u32) -> &mut Table {
        let path = self.worker_dir(worker).join(MANIFEST);
        let t = self.tables.entry(worker).or_default();
        let Ok(mut f) = std::fs::File::open(&path) else {
            return t;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len <= t.read || f.seek(SeekFrom::Start(t.read)).is_err() {
            return t;
        }
        let mut text = Vec::new();
        if f.read_to_end(&mut text).is_err() {
            return t;
        }
        // Only whole lines: a line being written is read next time.
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in text[..whole].split(|&b| b == b'\n') {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if let (Some(o), Some(tg)) = (field(&v, "original"), field(&v, "target")) {
                t.map.entry(o).or_insert(tg);
            }
        }
        t.read += whole as u64;
        t
    }

    /// The worker's copy of `abs`, if the worker redirected it.
    pub fn lookup(&mut self, worker: u32, abs: &[u8]) -> Option<Vec<u8>> {
        self.refresh(worker).map.get(abs).cloned()
    }

    /// Whether the worker has redirected anything (a cheap test for the
    /// reads and stats that are notified only to follow redirects).
    pub fn any(&mut self, worker: u32) -> bool {
        !self.refresh(worker).map.is_empty()
    }

    /// Records a new redirect in the table and the worker's manifest (for
    /// the merge, and for the worker's other processes).
    pub fn record(&mut self, worker: u32, pid: i32, original: &[u8], target: &[u8]) {
        let path = self.worker_dir(worker).join(MANIFEST);
        let t = self.refresh(worker);
        if t.map.contains_key(original) {
            return;
        }
        t.map.insert(original.to_vec(), target.to_vec());
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
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
        {
            if f.write_all(&line).is_ok() {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                // Our own line is in the table already: skip it when
                // nothing else was appended meanwhile.
                let t = self.tables.entry(worker).or_default();
                if len == t.read + line.len() as u64 {
                    t.read = len;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_shared_with_the_library_both_ways() {
        let dir = std::env::temp_dir().join(format!("mpaudit-redirects-{}", std::process::id()));
        let w0 = dir.join("worker_0");
        std::fs::create_dir_all(&w0).unwrap();
        // A line the library wrote, one of them in hex.
        std::fs::write(
            w0.join(MANIFEST),
            "{\"original\":\"/j/a\",\"target\":\"/j/w/worker_0/a\",\"worker\":0,\"pid\":1}\n\
             {\"original\":\"/j/\u{fffd}\",\"target\":\"?\",\"original_hex\":\"2f6a2fff\",\"target_hex\":\"2f6a2f772f776f726b65725f302fff\",\"worker\":0,\"pid\":1}\n",
        )
        .unwrap();
        let d = dir.clone();
        let mut r = Redirects::new(move |k| d.join(format!("worker_{k}")));
        assert_eq!(
            r.lookup(0, b"/j/a").as_deref(),
            Some(&b"/j/w/worker_0/a"[..])
        );
        assert_eq!(
            r.lookup(0, b"/j/\xff").as_deref(),
            Some(&b"/j/w/worker_0/\xff"[..])
        );
        assert!(!r.any(1));
        r.record(0, 7, b"/j/b", b"/j/w/worker_0/b");
        let text = std::fs::read_to_string(w0.join(MANIFEST)).unwrap();
        assert!(
            text.ends_with(
                "{\"original\":\"/j/b\",\"pid\":7,\"target\":\"/j/w/worker_0/b\",\"worker\":0}\n"
            ),
            "{text}"
        );
        let d = dir.clone();
        let mut fresh = Redirects::new(move |k| d.join(format!("worker_{k}")));
        assert_eq!(
            fresh.lookup(0, b"/j/b").as_deref(),
            Some(&b"/j/w/worker_0/b"[..])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
