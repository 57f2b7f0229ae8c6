//! The event log contract (docs/events.md) as serde types that deny unknown
//! fields, and a streaming reader that skips NUL bytes and counts the lines
//! it could not parse.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Access,
    Process,
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

/// `{"object": ..., "symbol": ...}`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame<'a> {
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub object: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub symbol: Option<Cow<'a, str>>,
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
    #[serde(borrow)]
    pub op: Cow<'a, str>,
    pub pid: i64,
    pub ppid: i64,
    pub tid: i64,
    pub worker: Option<u64>,
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
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub errno: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub component: Option<Frame<'a>>,
    #[serde(borrow, default)]
    pub stack: Option<Vec<Frame<'a>>>,
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
    #[serde(default)]
    pub audited: Option<bool>,
    #[serde(borrow, default, deserialize_with = "opt_str")]
    pub reason: Option<Cow<'a, str>>,
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
    let ev: Event = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    if ev.v != 1 {
        return Err(format!("unsupported schema version {}", ev.v));
    }
    Ok(ev)
}

/// Streams the events of one reader, line by line: NUL bytes are dropped,
/// blank lines ignored, unparseable lines counted (and the first few kept
/// as examples, labelled with `name`).
pub fn read_events<R: BufRead>(
    mut r: R,
    name: &str,
    mut f: impl FnMut(Event<'_>),
) -> std::io::Result<ReadStats> {
    let mut stats = ReadStats {
        files: 1,
        ..Default::default()
    };
    let mut buf = Vec::with_capacity(4096);
    let mut lineno = 0u64;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        lineno += 1;
        buf.retain(|&b| b != 0);
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(&buf) {
            Ok(ev) => {
                stats.events += 1;
                f(ev);
            }
            Err(e) => {
                stats.skipped += 1;
                if stats.examples.len() < 5 {
                    stats.examples.push(format!("{name}:{lineno}: {e}"));
                }
            }
        }
    }
    Ok(stats)
}

pub fn read_file(path: &Path, f: impl FnMut(Event<'_>)) -> std::io::Result<ReadStats> {
    read_events(
        BufReader::with_capacity(64 * 1024, File::open(path)?),
        &path.display().to_string(),
        f,
    )
}

/// `mpaudit-<pid>-<ns>.jsonl`
pub fn is_log_name(name: &str) -> bool {
    let Some(mid) = name
        .strip_prefix("mpaudit-")
        .and_then(|s| s.strip_suffix(".jsonl"))
    else {
        return false;
    };
    let mut parts = mid.split('-');
    let ok =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Every log file under `dir`, recursively, sorted.
pub fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && is_log_name(&e.file_name().to_string_lossy()) {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const EXAMPLE: &str = r#"{"v":1,"ts":1763750000123456789,"kind":"access","op":"fopen","pid":4242,"ppid":4240,"tid":4242,"worker":2,"path":"summary.log","abs":"/job/summary.log","mode":"write","create":true,"truncate":false,"append":true,"flags":["O_WRONLY","O_CREAT","O_APPEND"],"result":5,"errno":null,"component":{"object":"/job/lib/libLegacyAlg.so","symbol":"_ZN9LegacyAlg7executeEv"},"stack":[{"object":"/job/lib/libLegacyAlg.so","symbol":"_ZN9LegacyAlg7executeEv"},{"object":"/job/bin/minifw","symbol":null}]}"#;

    #[test]
    fn parses_the_documented_example() {
        let e = parse_line(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(e.kind, Kind::Access);
        assert_eq!(e.worker, Some(2));
        assert_eq!(e.abs.as_deref(), Some("/job/summary.log"));
        assert!(e.is_write_class());
        assert!(e.succeeded());
        assert_eq!(
            e.component.unwrap().symbol.as_deref(),
            Some("_ZN9LegacyAlg7executeEv")
        );
        assert_eq!(e.stack.unwrap().len(), 2);
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
        assert_eq!(e.stack.unwrap()[1].symbol, None);
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
                "unknown field `x`, expected `object` or `symbol` at line 1 column 111",
            ),
            (
                r#","stack":[{"symbol":[]}]"#,
                "invalid type: sequence, expected a string at line 1 column 100",
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
    fn log_names() {
        assert!(is_log_name("mpaudit-123-1763750000123456789.jsonl"));
        assert!(!is_log_name("mpaudit-123.jsonl"));
        assert!(!is_log_name("mpaudit-run-1-2.json"));
        assert!(!is_log_name("mpaudit-1-2-3.jsonl"));
        assert!(!is_log_name("mpaudit-a-2.jsonl"));
    }
}
