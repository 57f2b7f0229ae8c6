//! The event log contract (docs/events.md) as serde types that deny unknown
//! fields, and a streaming reader that skips NUL bytes and counts the lines
//! it could not parse.

use std::borrow::Cow;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Access,
    Process,
    /// The process's log could not grow: its later events are not logged.
    #[serde(rename = "log_stopped")]
    LogStopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    Read,
    Write,
    Readwrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Read,
    Allowed,
    Declared,
    Registered,
    Rogue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Taken {
    None,
    Logged,
    Redirected,
    Denied,
    RedirectFailed,
}

impl Taken {
    pub fn as_str(self) -> &'static str {
        match self {
            Taken::None => "none",
            Taken::Logged => "logged",
            Taken::Redirected => "redirected",
            Taken::Denied => "denied",
            Taken::RedirectFailed => "redirect-failed",
        }
    }
    /// The write went where the program asked: nothing prevented a clobber.
    pub fn unmitigated(self) -> bool {
        matches!(self, Taken::None | Taken::Logged | Taken::RedirectFailed)
    }
}

/// A JSON string borrowed from the line when it holds no escapes (the
/// usual case), owned otherwise. Same errors as `String`: "expected a
/// string".
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// `Option<Cow<str>>` that borrows: serde's own impl for `Cow` always owns.
fn opt_str<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<Str<'a>>::deserialize(d)?.map(|s| s.0))
}

/// `Option<Vec<Cow<str>>>` whose strings borrow.
fn opt_str_vec<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Cow<'a, str>>>, D::Error> {
    Ok(Option::<Vec<Str<'a>>>::deserialize(d)?.map(|v| v.into_iter().map(|s| s.0).collect()))
}

/// `errno`: an error name (access and process events) or, in `log_stopped`,
/// the error number, kept as its decimal digits.
fn opt_errno<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an error name, an error number or null")
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_option(V)
}

/// `{"object": ..., "vaddr": ...}`: the object holding a call, and the
/// call's address in the object's ELF image (docs/events.md), named by
/// `crate::symbols`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame<'a> {
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub object: Option<Cow<'a, str>>,
    #[serde(default)]
    pub vaddr: Option<u64>,
}

/// One line of a log. Common fields are required; the others depend on
/// `kind`/`op` and are optional here. Strings borrow from the line they
/// were parsed from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event<'a> {
    pub v: u32,
    pub ts: u64,
    pub kind: Kind,
    /// Empty for `log_stopped`, which has none.
    #[serde(borrow, default)]
    pub op: Cow<'a, str>,
    pub pid: i64,
    pub ppid: i64,
    pub tid: i64,
    pub worker: Option<u64>,
    /// Under a launcher only (docs/events.md, "Ranks").
    #[serde(default)]
    pub rank: Option<u64>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub node: Option<Cow<'a, str>>,
    // access
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub path: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub abs: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub path2: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub abs2: Option<Cow<'a, str>>,
    #[serde(default)]
    pub mode: Option<AccessMode>,
    #[serde(default)]
    pub create: Option<bool>,
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub append: Option<bool>,
    #[serde(borrow, default, deserialize_with = "opt_str_vec")]
    pub flags: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    pub result: Option<i64>,
    #[serde(borrow, default, deserialize_with = "opt_errno")]
    pub errno: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub component: Option<Frame<'a>>,
    #[serde(borrow, default)]
    pub stack: Option<Vec<Frame<'a>>>,
    /// `true` when the stack could not be walked in full (docs/events.md).
    #[serde(default)]
    pub stack_truncated: Option<bool>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub path_hex: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub path2_hex: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub abs_hex: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub abs2_hex: Option<Cow<'a, str>>,
    // policy (added by the library to access events)
    #[serde(default)]
    pub verdict: Option<Verdict>,
    #[serde(default)]
    pub action: Option<Taken>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub target: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub target_hex: Option<Cow<'a, str>>,
    // process
    #[serde(borrow, default, deserialize_with = "opt_str_vec")]
    pub argv: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub exe: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub cwd: Option<Cow<'a, str>>,
    #[serde(default)]
    pub root: Option<bool>,
    #[serde(default)]
    pub child: Option<i64>,
    #[serde(default)]
    pub status: Option<i64>,
    /// `exit`: events the process could not log.
    #[serde(default)]
    pub dropped: Option<u64>,
    /// `exit`: stack frames recorded without an object.
    #[serde(default)]
    pub unresolved_frames: Option<u64>,
    #[serde(default)]
    pub audited: Option<bool>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub reason: Option<Cow<'a, str>>,
    /// `exec`, `spawn`: the program was handed to the seccomp supervisor,
    /// which audits it (no log image of the library's follows).
    #[serde(default)]
    pub supervised: Option<bool>,
    /// `"seccomp"` on events the runner's seccomp supervisor logged.
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub via: Option<Cow<'a, str>>,
}

impl Event<'_> {
    /// docs/events.md: mode other than read, or create or truncate set.
    pub fn is_write_class(&self) -> bool {
        self.kind == Kind::Access
            && (self.mode.is_some_and(|m| m != AccessMode::Read)
                || self.create == Some(true)
                || self.truncate == Some(true))
    }
    pub fn succeeded(&self) -> bool {
        self.errno.is_none() && self.result.map_or(true, |r| r >= 0)
    }
}

/// Counts for one file or a set of files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub files: u64,
    pub events: u64,
    pub skipped: u64,
    /// The first few skipped lines, as `file:line: reason`.
    pub examples: Vec<String>,
}

impl ReadStats {
    pub fn merge(&mut self, o: ReadStats) {
        self.files += o.files;
        self.events += o.events;
        self.skipped += o.skipped;
        for e in o.examples {
            if self.examples.len() < 5 {
                self.examples.push(e);
            }
        }
    }
}

/// Parses one line (NUL bytes already removed). Schema versions other than
/// 1 are rejected.
pub fn parse_line(line: &[u8]) -> Result<Event<'_>, String> {
    // One UTF-8 check of the whole line costs less than serde_json's check
    // of each string; a line that fails it goes the checking way, for the
    // same error (and position) as ever.
    let ev: Event = match std::str::from_utf8(line) {
        Ok(s) => serde_json::from_str(s),
        Err(_) => serde_json::from_slice(line),
    }
    .map_err(|e| e.to_string())?;
    if ev.v != 1 {
        return Err(format!("unsupported schema version {}", ev.v));
    }
    Ok(ev)
}

/// How much of a log is read at a time. Lines are parsed where they lie in
/// this buffer; only a line cut by its end is moved (to the front).
const CHUNK: usize = 256 * 1024;

/// Calls `f` with each line of `r`, its `\n` included (the last line may
/// have none). A NUL byte ends a line too, and is dropped: events never
/// hold one, and the NULs after a torn event (a thread killed while it
/// copied its bytes) are what keeps the next event from being glued to it.
/// Runs of NULs (unfilled log space) yield nothing. Lines are handed over
/// where they lie in the read buffer, which starts at `chunk` bytes and
/// grows to the longest line.
fn for_each_line<R: Read>(mut r: R, chunk: usize, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buf = vec![0u8; chunk.max(1)];
    // buf[start..end] holds what is read and not yet handed over.
    let (mut start, mut end) = (0, 0);
    loop {
        let n = loop {
            match r.read(&mut buf[end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            if start < end {
                f(&buf[start..end]);
            }
            return Ok(());
        }
        // The new bytes can only end lines begun before them: scan from the
        // first byte not already known to hold no newline or NUL.
        let mut scan = end;
        end += n;
        while let Some(i) = memchr::memchr2(b'\n', 0, &buf[scan..end]) {
            let at = scan + i;
            if buf[at] == b'\n' {
                f(&buf[start..=at]);
                start = at + 1;
            } else {
                if start < at {
                    f(&buf[start..at]);
                }
                start = at + 1;
                while start < end && buf[start] == 0 {
                    start += 1;
                }
            }
            scan = start;
        }
        // Keep the unfinished line: at the front, in a larger buffer if it
        // fills this one.
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
        if end == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Streams the events of one reader, line by line: NUL bytes end a line
/// and are dropped, blank lines ignored, unparseable lines counted (and the first few kept
/// as examples, labelled with `name`).
pub fn read_events<R: Read>(
    r: R,
    name: &str,
    mut f: impl FnMut(&Event<'_>),
) -> std::io::Result<ReadStats> {
    let mut stats = ReadStats {
        files: 1,
        ..Default::default()
    };
    // Lines end at a newline; a NUL splits one only for parsing.
    let mut newlines = 0u64;
    for_each_line(r, CHUNK, |line| {
        let lineno = newlines + 1;
        if line.last() == Some(&b'\n') {
            newlines += 1;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match parse_line(line) {
            Ok(ev) => {
                stats.events += 1;
                f(&ev);
            }
            Err(e) => {
                stats.skipped += 1;
                if stats.examples.len() < 5 {
                    stats.examples.push(format!("{name}:{lineno}: {e}"));
                }
            }
        }
    })?;
    Ok(stats)
}

pub fn read_file(path: &Path, f: impl FnMut(&Event<'_>)) -> std::io::Result<ReadStats> {
    read_events(File::open(path)?, &path.display().to_string(), f)
}

/// `mpaudit-<pid>-<ns>.jsonl`
pub fn is_log_name(name: &str) -> bool {
    log_name_parts(name).is_some()
}

/// The pid and load time (ns) in a log's name: `mpaudit-<pid>-<ns>.jsonl`,
/// or under a launcher `mpaudit-<node>-r<rank>-<pid>-<ns>.jsonl` (node
/// names may hold `-`, so split from the right).
pub fn log_name_parts(name: &str) -> Option<(i64, u128)> {
    let mid = name.strip_prefix("mpaudit-")?.strip_suffix(".jsonl")?;
    let mut parts = mid.rsplitn(3, '-');
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (ns, pid) = (parts.next()?, parts.next()?);
    if !digits(ns) || !digits(pid) {
        return None;
    }
    if let Some(rank_part) = parts.next() {
        let (node, rank) = rank_part.rsplit_once("-r")?;
        if node.is_empty() || !digits(rank) {
            return None;
        }
    }
    Some((pid.parse().ok()?, ns.parse().ok()?))
}

/// Every log file under `dir`, recursively, sorted.
pub fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(scan_log_dir(dir)?.files)
}

/// The log files under a directory, and the files that look like logs but
/// are not read: the report warns about each, never ignoring a log quietly.
#[derive(Debug, Default)]
pub struct LogDir {
    pub files: Vec<PathBuf>,
    /// Named `mpaudit-*.jsonl` but not a log name, or not a regular file.
    pub skipped: Vec<PathBuf>,
}

impl LogDir {
    pub fn warn_skipped(&self) {
        for f in &self.skipped {
            eprintln!(
                "mpaudit: warning: {}: named like an event log but not one mpaudit \
                 reads (mpaudit-[<node>-r<rank>-]<pid>-<ns>.jsonl, a regular file); \
                 its events are not in this report",
                f.display()
            );
        }
    }
}

/// A name that is no log but would be taken for one at a glance.
fn looks_like_a_log(name: &str) -> bool {
    name.starts_with("mpaudit-") && name.ends_with(".jsonl") && name != crate::merge::MANIFEST
}

/// [`LogDir`] of `dir`, recursively, sorted.
pub fn scan_log_dir(dir: &Path) -> std::io::Result<LogDir> {
    let mut out = LogDir::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            let name = e.file_name().to_string_lossy().into_owned();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && is_log_name(&name) {
                out.files.push(e.path());
            } else if looks_like_a_log(&name) {
                out.skipped.push(e.path());
            }
        }
    }
    out.files.sort();
    out.skipped.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (review 1, item 8): `mpaudit--r1-….jsonl` (a rank on a
    /// node with an empty name) was skipped without a word and the report
    /// said ok with 0 events.
    #[test]
    fn files_named_like_logs_but_not_read_are_listed() {
        let dir = std::env::temp_dir().join(format!("mpaudit-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rank_1")).unwrap();
        for name in [
            "mpaudit-1-2.jsonl",
            "rank_1/mpaudit--r1-3-4.jsonl",
            "rank_1/mpaudit-redirects.jsonl",
            "notes.txt",
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        std::os::unix::fs::symlink("mpaudit-1-2.jsonl", dir.join("mpaudit-5-6.jsonl")).unwrap();
        let scan = scan_log_dir(&dir).unwrap();
        assert_eq!(scan.files, vec![dir.join("mpaudit-1-2.jsonl")]);
        assert_eq!(
            scan.skipped,
            vec![
                dir.join("mpaudit-5-6.jsonl"),
                dir.join("rank_1/mpaudit--r1-3-4.jsonl")
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    pub const EXAMPLE: &str = r#"{"v":1,"ts":1763750000123456789,"kind":"access","op":"fopen","pid":4242,"ppid":4240,"tid":4242,"worker":2,"path":"summary.log","abs":"/job/summary.log","mode":"write","create":true,"truncate":false,"append":true,"flags":["O_WRONLY","O_CREAT","O_APPEND"],"result":5,"errno":null,"component":{"object":"/job/lib/libLegacyAlg.so","vaddr":4409},"stack":[{"object":"/job/lib/libLegacyAlg.so","vaddr":4409},{"object":null,"vaddr":null}]}"#;

    #[test]
    fn parses_the_documented_example() {
        let e = parse_line(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(e.kind, Kind::Access);
        assert_eq!(e.worker, Some(2));
        assert_eq!(e.abs.as_deref(), Some("/job/summary.log"));
        assert!(e.is_write_class());
        assert!(e.succeeded());
        assert_eq!(e.component.unwrap().vaddr, Some(4409));
        assert_eq!(e.stack.unwrap().len(), 2);
    }

    // Regression: the library writes `target_hex` beside a non-UTF-8
    // redirect target (docs/events.md), but the runner's type had no such
    // field, so deny_unknown_fields dropped those events from the report.
    #[test]
    fn a_non_utf8_redirect_target_is_parsed() {
        let line = r#"{"v":1,"ts":1,"kind":"access","op":"openat","pid":1,"ppid":0,"tid":1,"worker":0,"path":"o\ufffd.root","abs":"/j/o\ufffd.root","mode":"write","create":true,"truncate":true,"append":false,"flags":[],"result":3,"errno":null,"component":null,"stack":[],"path_hex":"6fff2e726f6f74","abs_hex":"2f6a2f6fff2e726f6f74","verdict":"rogue","action":"redirected","target":"/j/w/worker_0/o\ufffd.root","target_hex":"2f6a2f772f776f726b65725f302f6fff2e726f6f74"}"#;
        let e = parse_line(line.as_bytes()).unwrap();
        assert_eq!(
            e.target_hex.as_deref(),
            Some("2f6a2f772f776f726b65725f302f6fff2e726f6f74")
        );
    }

    #[test]
    fn policy_and_process_fields() {
        let line = r#"{"v":1,"ts":1,"kind":"access","op":"openat","pid":1,"ppid":0,"tid":1,"worker":0,"path":"o.root","abs":"/j/o.root","mode":"write","create":true,"truncate":true,"append":false,"flags":[],"result":3,"errno":null,"component":null,"stack":[],"verdict":"rogue","action":"redirected","target":"/j/w/worker_0/o.root"}"#;
        let e = parse_line(line.as_bytes()).unwrap();
        assert_eq!(
            (e.verdict, e.action),
            (Some(Verdict::Rogue), Some(Taken::Redirected))
        );
        let line = r#"{"v":1,"ts":1,"kind":"process","op":"exec","pid":1,"ppid":0,"tid":1,"worker":null,"argv":["/bin/su"],"exe":"/bin/su","cwd":"/","result":null,"errno":null,"audited":false,"reason":"setuid"}"#;
        let e = parse_line(line.as_bytes()).unwrap();
        assert_eq!(
            (e.audited, e.reason.as_deref()),
            (Some(false), Some("setuid"))
        );
        let line = r#"{"v":1,"ts":1,"kind":"process","op":"start","pid":1,"ppid":0,"tid":1,"worker":null,"argv":[],"exe":"/x","cwd":"/","root":true}"#;
        assert_eq!(parse_line(line.as_bytes()).unwrap().root, Some(true));
    }

    #[test]
    fn log_stopped_and_dropped() {
        let line = r#"{"v":1,"ts":1,"kind":"process","op":"spawn","pid":1,"ppid":0,"tid":1,"worker":0,"child":2,"argv":["/x/static"],"exe":"/x/static","result":0,"errno":null,"audited":true,"supervised":true}"#;
        let e = parse_line(line.as_bytes()).expect("a supervised spawn parses");
        assert_eq!(
            (e.audited, e.supervised, e.child),
            (Some(true), Some(true), Some(2))
        );
        let line = r#"{"v":1,"ts":1,"kind":"log_stopped","pid":7,"ppid":1,"tid":7,"worker":null,"reason":"file_size_limit","errno":27}"#;
        let e = parse_line(line.as_bytes()).unwrap();
        assert_eq!(e.kind, Kind::LogStopped);
        assert_eq!(e.op, "");
        assert_eq!(e.reason.as_deref(), Some("file_size_limit"));
        assert_eq!(e.errno.as_deref(), Some("27"));
        let line = r#"{"v":1,"ts":1,"kind":"process","op":"exit","pid":7,"ppid":1,"tid":7,"worker":null,"status":0,"dropped":12}"#;
        assert_eq!(parse_line(line.as_bytes()).unwrap().dropped, Some(12));
        let line = r#"{"v":1,"ts":1,"kind":"access","op":"open","pid":1,"ppid":0,"tid":1,"worker":null,"errno":true}"#;
        assert!(parse_line(line.as_bytes()).is_err());
    }

    #[test]
    fn rejects_unknown_fields_and_versions() {
        let e = parse_line(br#"{"v":1,"ts":1,"kind":"process","op":"exit","pid":1,"ppid":0,"tid":1,"worker":null,"status":0,"bogus":1}"#).unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = parse_line(br#"{"v":2,"ts":1,"kind":"process","op":"exit","pid":1,"ppid":0,"tid":1,"worker":null}"#).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        assert!(parse_line(br#"{"v":1,"ts":1,"kind":"access","op":"open","pid":1,"ppid":0,"tid":1,"worker":null,"verdict":"evil"}"#).is_err());
    }

    #[test]
    fn reader_skips_nuls_and_counts_bad_lines() {
        let mut data = Vec::new();
        data.extend_from_slice(EXAMPLE.as_bytes());
        data.push(b'\n');
        data.extend_from_slice(&[0u8; 100]); // a reserved, never filled slot
        data.extend_from_slice(EXAMPLE.as_bytes());
        data.push(b'\n');
        data.extend_from_slice(b"{\"v\":1,\"ts\":\n"); // corrupt
        data.extend_from_slice(b"\n\n");
        data.extend_from_slice(&EXAMPLE.as_bytes()[..50]); // torn last line
        data.extend_from_slice(&[0u8; 65536]);
        let mut n = 0;
        let stats = read_events(&data[..], "log", |_| n += 1).unwrap();
        assert_eq!(n, 2);
        assert_eq!(stats.events, 2);
        assert_eq!(stats.skipped, 2);
        assert!(
            stats.examples[0].starts_with("log:3: "),
            "{:?}",
            stats.examples
        );
        assert!(
            stats.examples[1].starts_with("log:6: "),
            "{:?}",
            stats.examples
        );
    }

    /// The lines `for_each_line` must give: split after each newline and
    /// at each NUL (dropped), no empty pieces.
    fn lines_by_bytes(data: &[u8]) -> Vec<Vec<u8>> {
        let (mut out, mut cur) = (Vec::new(), Vec::new());
        for &b in data {
            match b {
                0 => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                b'\n' => {
                    cur.push(b);
                    out.push(std::mem::take(&mut cur));
                }
                _ => cur.push(b),
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    fn lines(data: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for_each_line(data, chunk, |l| out.push(l.to_vec())).unwrap();
        out
    }

    // Regression: a thread killed by exit_group while copying its event
    // leaves a torn line and NULs; the exit event after them was glued to
    // the torn bytes and lost with them.
    #[test]
    fn a_torn_line_does_not_swallow_the_next_event() {
        let exit = r#"{"v":1,"ts":1,"kind":"process","op":"exit","pid":1,"ppid":0,"tid":1,"worker":null,"status":0,"dropped":0}"#;
        let mut data = EXAMPLE.as_bytes()[..80].to_vec();
        data.extend_from_slice(&[0u8; 300]);
        data.extend_from_slice(exit.as_bytes());
        data.push(b'\n');
        let mut ops = Vec::new();
        let stats = read_events(&data[..], "log", |e| ops.push(e.op.to_string())).unwrap();
        assert_eq!(ops, ["exit"]);
        assert_eq!((stats.events, stats.skipped), (1, 1));
        assert!(
            stats.examples[0].starts_with("log:1: "),
            "{:?}",
            stats.examples
        );
    }

    #[test]
    fn lines_split_at_newlines_and_nuls_for_every_chunk_size() {
        let mut cases: Vec<Vec<u8>> = [
            &b""[..],
            b"\n",
            b"\n\n\n",
            b"a",
            b"a\nb",
            b"a\nb\n",
            b"\0",
            b"\0\0\n\0",
            b"ab\0c\nd\0\0\n\0\0\0",
            b"a line longer than every small chunk\nand one more\n",
        ]
        .iter()
        .map(|c| c.to_vec())
        .collect();
        // Pseudo-random mixes of line bytes, newlines, NULs and blanks.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..300 {
            let mut c = Vec::new();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.push(b"ab\n\0 {"[(x % 6) as usize]);
            }
            cases.push(c);
        }
        for c in &cases {
            let want = lines_by_bytes(c);
            for chunk in [1, 2, 3, 5, 8, 64, CHUNK] {
                assert_eq!(lines(c, chunk), want, "chunk {chunk}, input {c:?}");
            }
        }
    }

    /// Hands out one byte at a time, failing with `Interrupted` in between,
    /// then fails for good if asked to.
    struct Stutter<'a> {
        data: &'a [u8],
        interrupt: bool,
        fail_at_end: bool,
    }

    impl Read for Stutter<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(ErrorKind::Interrupted.into());
            }
            match self.data.split_first() {
                Some((&b, rest)) if !out.is_empty() => {
                    out[0] = b;
                    self.data = rest;
                    Ok(1)
                }
                None if self.fail_at_end => Err(ErrorKind::InvalidData.into()),
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn lines_survive_short_and_interrupted_reads() {
        let data = b"ab\0c\n\nlast";
        let mut got = Vec::new();
        let r = Stutter {
            data,
            interrupt: false,
            fail_at_end: false,
        };
        for_each_line(r, 2, |l| got.push(l.to_vec())).unwrap();
        assert_eq!(got, lines_by_bytes(data));
        let r = Stutter {
            data,
            interrupt: false,
            fail_at_end: true,
        };
        let e = for_each_line(r, 2, |_| {}).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn strings_borrow_from_the_line_unless_escaped() {
        let line = br#"{"v":1,"ts":1,"kind":"process","op":"exec","pid":1,"ppid":0,"tid":1,"worker":null,"argv":["/bin/su","a\"b"],"exe":"/bin/\u0073u","cwd":"/","result":null,"errno":null,"audited":false,"reason":"setuid"}"#;
        let e = parse_line(line).unwrap();
        assert!(matches!(e.op, Cow::Borrowed("exec")));
        assert!(matches!(e.reason, Some(Cow::Borrowed("setuid"))));
        assert!(matches!(e.exe, Some(Cow::Owned(ref s)) if s == "/bin/su"));
        let argv = e.argv.unwrap();
        assert!(matches!(argv[0], Cow::Borrowed("/bin/su")));
        assert!(matches!(argv[1], Cow::Owned(ref s) if s == "a\"b"));
        assert_eq!(e.errno, None);
        let e = parse_line(EXAMPLE.as_bytes()).unwrap();
        let c = e.component.unwrap();
        assert!(matches!(
            c.object,
            Some(Cow::Borrowed("/job/lib/libLegacyAlg.so"))
        ));
        assert_eq!(e.stack.unwrap()[1].object, None);
    }

    #[test]
    fn string_fields_reject_other_types_as_before() {
        // The messages the owned `String` fields gave (taken from the
        // runner before they borrowed): reports quote them.
        let common =
            r#"{"v":1,"ts":1,"kind":"access","op":"open","pid":1,"ppid":0,"tid":1,"worker":null"#;
        for (extra, want) in [
            (
                r#","path":5"#,
                "invalid type: integer `5`, expected a string at line 1 column 89",
            ),
            (
                r#","flags":"O_RDONLY""#,
                "invalid type: string \"O_RDONLY\", expected a sequence at line 1 column 99",
            ),
            (
                r#","flags":[1]"#,
                "invalid type: integer `1`, expected a string at line 1 column 91",
            ),
            (
                r#","component":{"object":true}"#,
                "invalid type: boolean `true`, expected a string at line 1 column 107",
            ),
            (
                r#","component":{"object":null,"x":1}"#,
                "unknown field `x`, expected `object` or `vaddr` at line 1 column 111",
            ),
            (
                r#","stack":[{"object":[]}]"#,
                "invalid type: sequence, expected a string at line 1 column 100",
            ),
            (
                r#","stack":[{"vaddr":-1}]"#,
                "invalid value: integer `-1`, expected u64 at line 1 column 101",
            ),
        ] {
            let line = format!("{common}{extra}}}");
            assert_eq!(parse_line(line.as_bytes()).unwrap_err(), want, "{line}");
        }
        let e =
            parse_line(b"{\"v\":1,\"ts\":1,\"kind\":\"access\",\"op\":\"op\xff\"}").unwrap_err();
        assert_eq!(e, "invalid unicode code point at line 1 column 39");
    }

    #[test]
    fn lines_that_are_not_utf8_fail_as_before() {
        // Valid UTF-8 takes the from_str way, anything else from_slice: the
        // messages below are the ones from_slice always gave.
        let e = parse_line(b"{\"v\":1,\xff\"ts\":1}").unwrap_err();
        assert_eq!(e, "key must be a string at line 1 column 8");
        let e = parse_line(b"{\"v\":1,\"ts\":1,\"kind\":\"access\",\"op\":\"\xc3\xa9\",\"pid\":1,\"ppid\":0,\"tid\":1,\"worker\":null,\"path\":\"a\xc3\",\"x\":1}").unwrap_err();
        assert_eq!(e, "invalid unicode code point at line 1 column 89");
        let e = parse_line("{\"v\":1,\"ts\":1,\"kind\":\"access\",\"op\":\"\u{e9}t\u{e9}\",\"pid\":1,\"ppid\":0,\"tid\":1,\"worker\":null,\"path\":\"\u{fffd}\"}".as_bytes()).unwrap();
        assert_eq!(
            (&*e.op, e.path.as_deref()),
            ("\u{e9}t\u{e9}", Some("\u{fffd}"))
        );
    }

    #[test]
    fn log_names() {
        assert!(is_log_name("mpaudit-123-1763750000123456789.jsonl"));
        assert!(!is_log_name("mpaudit-123.jsonl"));
        assert!(!is_log_name("mpaudit-run-1-2.json"));
        assert!(!is_log_name("mpaudit-1-2-3.jsonl"));
        assert!(!is_log_name("mpaudit-a-2.jsonl"));
        // Under a launcher: node (which may hold `-`) and rank first.
        assert!(is_log_name("mpaudit-wn-01.cern.ch-r3-123-99.jsonl"));
        assert!(is_log_name("mpaudit-vm-r0-1-2.jsonl"));
        assert!(!is_log_name("mpaudit--r0-1-2.jsonl"));
        assert!(!is_log_name("mpaudit-vm-r-1-2.jsonl"));
        assert!(!is_log_name("mpaudit-vm-rx-1-2.jsonl"));
        assert!(!is_log_name("mpaudit-redirects.jsonl"));
        // An empty node name is written `_` (mpaudit_core::launcher).
        assert!(is_log_name("mpaudit-_-r1-1-2.jsonl"));
    }
}
