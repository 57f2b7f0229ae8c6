//! The job file (`job.toml`): serde types that deny unknown keys, and errors
//! that name the line, the column and the key, with the closest valid key.
//!
//! Every table is its own struct with `deny_unknown_fields`; `[merge]` is a
//! map from globs to mergers, kept in file order (the first match wins).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::duration::parse_duration;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub job: JobTable,
    #[serde(default)]
    pub audit: AuditTable,
    #[serde(default)]
    pub merge: MergeTable,
}

/// `[job]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobTable {
    pub command: Vec<String>,
    pub workers: Option<WorkersSpec>,
    pub mode: Option<Mode>,
    pub dir: Option<String>,
    pub timeout: Option<Timeout>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub on_failure: Option<OnFailure>,
}

/// `[audit]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditTable {
    pub action: Option<Action>,
    pub outputs: Option<Vec<String>>,
    pub components: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
    /// Paths several workers may write without failing the audit (a
    /// shared scratch file the job knows about): the conflict is reported,
    /// marked allowed.
    pub allow_conflicts: Option<Vec<String>>,
    pub workers_dir: Option<String>,
    pub log_dir: Option<String>,
    /// Run the job's command under the seccomp supervisor even when the
    /// preload could audit it (docs/hooks.md).
    pub supervise: Option<bool>,
    /// `io_uring_setup` under the supervisor: `"enosys"` (default) or `"allow"`.
    pub io_uring: Option<IoUring>,
}

/// `[audit] io_uring`: what a supervised process's `io_uring_setup` gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoUring {
    /// Fails with ENOSYS: programs fall back to ordinary, audited calls.
    #[default]
    Enosys,
    /// Let through; the run lists those processes as not fully audited.
    Allow,
}

/// Valid keys per table, for "did you mean" suggestions.
pub const TABLES: &[(&str, &[&str])] = &[
    ("", &["job", "audit", "merge"]),
    (
        "job",
        &[
            "command",
            "workers",
            "mode",
            "dir",
            "timeout",
            "seed",
            "env",
            "on_failure",
        ],
    ),
    (
        "audit",
        &[
            "action",
            "outputs",
            "components",
            "allow",
            "allow_conflicts",
            "workers_dir",
            "log_dir",
            "supervise",
            "io_uring",
        ],
    ),
];

/// `[merge]`: `"glob" = merger` entries, in the order of the file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MergeTable(pub Vec<MergeRule>);

/// One `[merge]` entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MergeRule {
    pub glob: String,
    pub merger: Merger,
}

/// How the worker files of one path become one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Merger {
    /// The inputs one after the other, in worker order (text, logs).
    Concat,
    /// The lowest-numbered worker's file.
    First,
    /// A command template: `{output}` (also inside an argument) is the file
    /// to write, `{inputs}` (a whole argument) one argument per worker file.
    Command(Vec<String>),
}

impl Merger {
    /// `concat`, `first`, or the template as written (`hadd -f {output} {inputs}`).
    pub fn describe(&self) -> String {
        match self {
            Merger::Concat => "concat".into(),
            Merger::First => "first".into(),
            Merger::Command(argv) => argv
                .iter()
                .map(|a| match a.as_str() {
                    "{output}" | "{inputs}" => a.clone(),
                    _ => crate::plan::shell_quote(a),
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

impl<'de> Deserialize<'de> for Merger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Merger;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "\"concat\", \"first\" or a command such as [\"hadd\", \"-f\", \"{output}\", \"{inputs}\"]",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Merger, E> {
                match s {
                    "concat" => Ok(Merger::Concat),
                    "first" => Ok(Merger::First),
                    _ => Err(E::custom(format!(
                        "unknown merger \"{s}\": expected \"concat\", \"first\" or a command array such as [\"hadd\", \"-f\", \"{{output}}\", \"{{inputs}}\"]"
                    ))),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Merger, A::Error> {
                let mut argv = Vec::new();
                while let Some(a) = seq.next_element::<String>()? {
                    argv.push(a);
                }
                check_template(&argv).map_err(de::Error::custom)?;
                Ok(Merger::Command(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// `mpaudit exec --merge GLOB=MERGER`: the glob is everything before the
/// first `=`; the merger is `concat`, `first`, a JSON/TOML array of strings
/// (`["sh", "-c", "cat \"$@\" > {output}", "sh", "{inputs}"]`), or else
/// words split at whitespace with no quoting and no shell
/// (`hadd -f {output} {inputs}`).
pub fn parse_merge_option(spec: &str) -> Result<MergeRule, String> {
    const FORMS: &str = "expected GLOB=concat, GLOB=first, GLOB=PROG ARG... (split at spaces, no quoting, no shell) or GLOB=[\"prog\", \"arg\", ...]";
    let fail = |why: &str| format!("--merge '{spec}': {why}; {FORMS}");
    let Some((glob, merger)) = spec.split_once('=') else {
        return Err(fail("no `=` between the glob and the merger"));
    };
    if glob.trim().is_empty() {
        return Err(fail("empty glob"));
    }
    let merger = merger.trim();
    let merger = match merger {
        "" => return Err(fail("no merger after `=`")),
        "concat" => Merger::Concat,
        "first" => Merger::First,
        m if m.starts_with('[') => {
            let argv: Vec<String> = serde_json::from_str(m)
                .map_err(|e| fail(&format!("not an array of strings ({e})")))?;
            check_template(&argv).map_err(|e| fail(&e))?;
            Merger::Command(argv)
        }
        m => {
            let argv: Vec<String> = m.split_whitespace().map(str::to_owned).collect();
            check_template(&argv).map_err(|e| fail(&e))?;
            Merger::Command(argv)
        }
    };
    Ok(MergeRule {
        glob: glob.to_owned(),
        merger,
    })
}

/// A command template needs a program, `{output}` somewhere and `{inputs}`
/// as one whole argument.
pub fn check_template(argv: &[String]) -> Result<(), String> {
    if argv.is_empty() {
        return Err("the merge command is empty".into());
    }
    if argv[0].contains('{') {
        return Err("the merge command must start with a program, not a placeholder".into());
    }
    if !argv.iter().any(|a| a.contains("{output}")) {
        return Err("the merge command has no {output} argument".into());
    }
    let whole = argv.iter().filter(|a| *a == "{inputs}").count();
    if whole != 1
        || argv
            .iter()
            .any(|a| a != "{inputs}" && a.contains("{inputs}"))
    {
        return Err("the merge command needs {inputs} exactly once, as a whole argument (it expands to one argument per worker file)".into());
    }
    Ok(())
}

impl<'de> Deserialize<'de> for MergeTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MergeTable;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of \"glob\" = merger")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<MergeTable, A::Error> {
                let mut rules = Vec::new();
                while let Some(glob) = map.next_key::<String>()? {
                    let merger = map.next_value::<Merger>()?;
                    if glob.is_empty() {
                        return Err(de::Error::custom("empty glob"));
                    }
                    rules.push(MergeRule { glob, merger });
                }
                Ok(MergeTable(rules))
            }
        }
        d.deserialize_map(V)
    }
}

/// `workers = 4` or `workers = "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkersSpec {
    Count(usize),
    Auto,
}

impl std::str::FromStr for WorkersSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(WorkersSpec::Auto);
        }
        match s.trim().parse::<i64>() {
            Ok(n) => WorkersSpec::from_int(n),
            Err(_) => Err(format!(
                "invalid worker count `{s}`: expected a positive integer or \"auto\""
            )),
        }
    }
}

impl WorkersSpec {
    fn from_int(n: i64) -> Result<Self, String> {
        if n < 1 {
            Err(format!("workers must be at least 1 (got {n})"))
        } else if n > 4096 {
            Err(format!("workers = {n} is more than the limit of 4096"))
        } else {
            Ok(WorkersSpec::Count(n as usize))
        }
    }
}

impl<'de> Deserialize<'de> for WorkersSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WorkersSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a positive integer or \"auto\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WorkersSpec, E> {
                WorkersSpec::from_int(n).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<WorkersSpec, E> {
                WorkersSpec::from_int(n.min(i64::MAX as u64) as i64).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<WorkersSpec, E> {
                if s == "auto" {
                    Ok(WorkersSpec::Auto)
                } else {
                    Err(E::custom(format!(
                        "invalid workers value \"{s}\": expected a positive integer or \"auto\""
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `timeout = "30m"` or `timeout = 1800` (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Timeout;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration such as \"30m\", \"1h30m\", \"90s\", or a number of seconds",
                )
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Timeout, E> {
                if n < 0 {
                    Err(E::custom(format!("negative timeout {n}")))
                } else {
                    Ok(Timeout(Duration::from_secs(n as u64)))
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Timeout, E> {
                Ok(Timeout(Duration::from_secs(n)))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Timeout, E> {
                parse_duration(&n.to_string())
                    .map(Timeout)
                    .map_err(|e| E::custom(e.replace("duration", "timeout")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Timeout, E> {
                parse_duration(s)
                    .map(Timeout)
                    .map_err(|e| E::custom(e.replace("duration", "timeout")))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// N copies of the command, each with MPAUDIT_WORKER=k
    Spawn,
    /// one process; the children it forks become workers 0,1,2,...
    Fork,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// stop the other workers (TERM, grace period, KILL)
    Kill,
    /// let the other workers finish
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// log rogue writes, change nothing
    Log,
    /// send rogue writes to worker_<k>/ instead
    Redirect,
    /// make rogue writes fail (EACCES)
    Deny,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Spawn => "spawn",
            Mode::Fork => "fork",
        }
    }
}
impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Kill => "kill",
            OnFailure::Continue => "continue",
        }
    }
}
impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Log => "log",
            Action::Redirect => "redirect",
            Action::Deny => "deny",
        }
    }
}

/// A job-file error, already located: `file:line:col: key `k`: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFileError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl JobFileError {
    /// One line: `job.toml:3:1: key `job.comand`: unknown key; did you mean `command`?`
    pub fn render(&self, file: &str) -> String {
        let mut out = String::from(file);
        if let (Some(l), Some(c)) = (self.line, self.column) {
            out.push_str(&format!(":{l}:{c}"));
        }
        out.push_str(": ");
        if let Some(k) = &self.key {
            out.push_str(&format!("key `{k}`: "));
        }
        out.push_str(&self.message);
        out
    }
}

/// Parses a job file's text.
pub fn parse(text: &str) -> Result<JobFile, JobFileError> {
    match toml::from_str::<JobFile>(text) {
        Ok(job) => {
            if job.job.command.is_empty() {
                let (line, column) = locate_key(text, "job", "command")
                    .map(|(l, c)| (Some(l), Some(c)))
                    .unwrap_or((None, None));
                return Err(JobFileError {
                    line,
                    column,
                    key: Some("job.command".into()),
                    message: "the command is empty: give at least the program, e.g. command = [\"python3\", \"job.py\"]".into(),
                });
            }
            if let Some(globs) = &job.audit.allow_conflicts {
                if globs.iter().any(String::is_empty) {
                    let (line, column) = locate_key(text, "audit", "allow_conflicts")
                        .map(|(l, c)| (Some(l), Some(c)))
                        .unwrap_or((None, None));
                    return Err(JobFileError {
                        line,
                        column,
                        key: Some("audit.allow_conflicts".into()),
                        message: "empty glob: give the paths workers may all write, e.g. allow_conflicts = [\"/tmp/lock\", \"*.cache\"]".into(),
                    });
                }
            }
            Ok(job)
        }
        Err(e) => Err(explain(text, &e)),
    }
}

fn explain(text: &str, e: &toml::de::Error) -> JobFileError {
    let message = e.message().trim().replace('\n', " ");
    let span = e.span();
    let (line, column) = match &span {
        Some(r) => {
            let (l, c) = line_col(text, r.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    let table = span
        .as_ref()
        .map(|r| table_at(text, r.start))
        .unwrap_or_default();

    // Unknown key: serde says "unknown field `x`, expected one of `a`, `b`".
    if let Some(unknown) = between(&message, "unknown field `", "`") {
        let valid = TABLES
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, keys)| *keys)
            .unwrap_or(&[]);
        let key = qualified(&table, &unknown);
        let place = if table.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in [{table}]")
        };
        let mut msg = format!("unknown key {place}");
        match closest(&unknown, valid) {
            Some(best) => msg.push_str(&format!("; did you mean `{best}`?")),
            None if !valid.is_empty() => {
                msg.push_str(&format!("; valid keys: {}", valid.join(", ")))
            }
            None => {}
        }
        return JobFileError {
            line,
            column,
            key: Some(key),
            message: msg,
        };
    }
    if let Some(missing) = between(&message, "missing field `", "`") {
        let key = if table.is_empty() && missing == "job" {
            "job".to_string()
        } else if table.is_empty() {
            // toml reports a missing key of a table at the table's start or
            // at the file's start; `command` is the only required key.
            format!("job.{missing}")
        } else {
            qualified(&table, &missing)
        };
        let message = if missing == "job" {
            "missing the [job] table (it needs at least `command = [...]`)".to_string()
        } else {
            format!("missing required key `{missing}`")
        };
        return JobFileError {
            line: if missing == "job" { None } else { line },
            column: if missing == "job" { None } else { column },
            key: Some(key),
            message,
        };
    }
    // Other errors: the key is the one written on the span's line.
    let key = span
        .as_ref()
        .and_then(|r| key_on_line(text, r.start))
        .map(|k| qualified(&table, &k));
    JobFileError {
        line,
        column,
        key,
        message,
    }
}

fn qualified(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(s[i..j].to_string())
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// The `[table]` header in force at a byte offset ("" at the top level).
/// An error on a header line itself (`[adit]`) belongs to the top level.
fn table_at(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos + line.len() > offset {
            let t = line.trim_start();
            if t.starts_with('[') {
                table.clear();
            }
            break;
        }
        let t = line.trim();
        if t.starts_with('[') && !t.starts_with("[[") {
            if let Some(end) = t.find(']') {
                table = t[1..end].trim().to_string();
            }
        }
        pos += line.len();
    }
    table
}

/// The key assigned on the line holding `offset`, if the line is `key = ...`.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[offset..]
        .find('\n')
        .map(|i| i + offset)
        .unwrap_or(text.len());
    let line = &text[start..end];
    let eq = line.find('=')?;
    let key = line[..eq].trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    Some(key.to_string())
}

/// Line and column of `key =` inside `[table]`.
/// Line and column (1-based) of `key = ...` in `[table]`.
pub fn locate_key(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            continue;
        }
        if current == table {
            if let Some(eq) = t.find('=') {
                if t[..eq].trim() == key {
                    let col = line.find(key).unwrap_or(0) + 1;
                    return Some((i + 1, col));
                }
            }
        }
    }
    None
}

/// The valid name closest to `name` (edit distance at most a third of its
/// length, at least 2), or one that `name` is a prefix or suffix of.
pub fn closest<'a>(name: &str, valid: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase().replace('-', "_");
    let mut best: Option<(usize, &str)> = None;
    for &v in valid {
        let d = levenshtein(&lower, v);
        if best.map_or(true, |(bd, _)| d < bd) {
            best = Some((d, v));
        }
    }
    let (d, v) = best?;
    let limit = (name.chars().count() / 3).max(2);
    if d <= limit || (lower.len() >= 3 && (v.starts_with(&lower) || v.ends_with(&lower))) {
        Some(v)
    } else {
        None
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            // Transposition counts as one edit ("comamnd").
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev[j - 1].saturating_sub(cost) + 1).min(cur[j]);
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[job]
command = ["python3", "job.py", "--events", "200"]
workers = 4
mode = "spawn"
dir = "."
timeout = "30m"
seed = 12345
env = { ATHENA_PROC_NUMBER = "4" }
on_failure = "kill"

[audit]
action = "redirect"
outputs = ["*.root", "hist-*.txt"]
components = ["libHistSvc.so"]
allow = ["/scratch/**"]
workers_dir = "mpaudit-workers"
log_dir = "mpaudit-logs"
"#;

    #[test]
    fn parses_the_documented_example() {
        let j = parse(FULL).unwrap();
        assert_eq!(j.job.command, ["python3", "job.py", "--events", "200"]);
        assert_eq!(j.job.workers, Some(WorkersSpec::Count(4)));
        assert_eq!(j.job.mode, Some(Mode::Spawn));
        assert_eq!(j.job.timeout, Some(Timeout(Duration::from_secs(1800))));
        assert_eq!(j.job.seed, Some(12345));
        assert_eq!(j.job.env["ATHENA_PROC_NUMBER"], "4");
        assert_eq!(j.job.on_failure, Some(OnFailure::Kill));
        assert_eq!(j.audit.action, Some(Action::Redirect));
        assert_eq!(
            j.audit.outputs.as_deref().unwrap(),
            ["*.root", "hist-*.txt"]
        );
        assert_eq!(j.audit.allow.as_deref().unwrap(), ["/scratch/**"]);
        assert_eq!(j.audit.log_dir.as_deref(), Some("mpaudit-logs"));
    }

    #[test]
    fn auto_workers_and_minimal_file() {
        let j = parse("[job]\ncommand = [\"true\"]\nworkers = \"auto\"\n").unwrap();
        assert_eq!(j.job.workers, Some(WorkersSpec::Auto));
        assert_eq!(j.audit, AuditTable::default());
    }

    #[test]
    fn unknown_key_in_job_suggests_closest() {
        let e = parse("[job]\ncomand = [\"true\"]\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(1)));
        assert_eq!(e.key.as_deref(), Some("job.comand"));
        assert!(e.message.contains("did you mean `command`?"), "{e:?}");
        assert_eq!(
            e.render("job.toml"),
            "job.toml:2:1: key `job.comand`: unknown key in [job]; did you mean `command`?"
        );
    }

    #[test]
    fn unknown_key_in_audit_suggests_closest() {
        let e =
            parse("[job]\ncommand = [\"true\"]\n\n[audit]\n  output = [\"*.root\"]\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(5), Some(3)));
        assert_eq!(e.key.as_deref(), Some("audit.output"));
        assert!(e.message.contains("did you mean `outputs`?"), "{e:?}");
        let e = parse("[job]\ncommand = [\"true\"]\n[audit]\nworkersdir = \"w\"\n").unwrap_err();
        assert!(e.message.contains("`workers_dir`"), "{e:?}");
        let e = parse("[job]\ncommand = [\"true\"]\non-failure = \"kill\"\n").unwrap_err();
        assert!(e.message.contains("`on_failure`"), "{e:?}");
    }

    #[test]
    fn unknown_table_suggests_closest() {
        let e = parse("[job]\ncommand = [\"true\"]\n[adit]\naction = \"log\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("adit"));
        assert!(e.message.contains("did you mean `audit`?"), "{e:?}");
    }

    #[test]
    fn far_away_key_lists_valid_keys() {
        let e = parse("[job]\ncommand = [\"true\"]\nzzzzzzzz = 1\n").unwrap_err();
        assert!(e.message.contains("valid keys: command, workers"), "{e:?}");
    }

    #[test]
    fn zero_workers() {
        let e = parse("[job]\ncommand = [\"true\"]\nworkers = 0\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("job.workers"));
        assert!(e.message.contains("at least 1"), "{e:?}");
        let e = parse("[job]\ncommand = [\"true\"]\nworkers = \"many\"\n").unwrap_err();
        assert!(e.message.contains("\"auto\""), "{e:?}");
    }

    #[test]
    fn negative_timeout() {
        let e = parse("[job]\ncommand = [\"true\"]\ntimeout = \"-5m\"\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("job.timeout"));
        assert!(e.message.contains("negative timeout"), "{e:?}");
        let e = parse("[job]\ncommand = [\"true\"]\ntimeout = -5\n").unwrap_err();
        assert!(e.message.contains("negative timeout"), "{e:?}");
        let j = parse("[job]\ncommand = [\"true\"]\ntimeout = 90\n").unwrap();
        assert_eq!(j.job.timeout, Some(Timeout(Duration::from_secs(90))));
    }

    #[test]
    fn wrong_types_and_values_name_the_key() {
        let e = parse("[job]\ncommand = \"python3 job.py\"\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("job.command"));
        let e = parse("[job]\ncommand = [\"true\"]\nmode = \"thread\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("job.mode"));
        assert!(e.message.contains("spawn"), "{e:?}");
        let e = parse("[job]\ncommand = [\"true\"]\n[audit]\naction = \"warn\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("audit.action"));
        assert_eq!(e.line, Some(4));
    }

    #[test]
    fn malformed_toml_names_line_and_column() {
        let e = parse("[job]\ncommand = [\"true\"\nworkers = 2\n").unwrap_err();
        assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
        let e = parse("[job]\ncommand = [\"true\"]\nworkers = = 2\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("job.workers"));
        assert!(!e.render("j.toml").contains('\n'));
    }

    #[test]
    fn missing_pieces() {
        let e = parse("[audit]\naction = \"log\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("job"));
        let e = parse("[job]\nworkers = 2\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("job.command"));
        let e = parse("[job]\ncommand = []\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("job.command"));
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn merge_option_forms_and_errors() {
        let r = parse_merge_option("hist.root=hadd -f {output} {inputs}").unwrap();
        assert_eq!(r.glob, "hist.root");
        assert_eq!(r.merger.describe(), "hadd -f {output} {inputs}");
        assert_eq!(
            parse_merge_option("summary.log=concat").unwrap().merger,
            Merger::Concat
        );
        assert_eq!(
            parse_merge_option("a*= first ").unwrap().merger,
            Merger::First
        );
        // The glob ends at the first `=`; the array form keeps spaces.
        let r =
            parse_merge_option(r#"*.txt=["sh", "-c", "cat \"$@\" > {output}", "sh", "{inputs}"]"#)
                .unwrap();
        assert_eq!(r.glob, "*.txt");
        assert_eq!(
            r.merger,
            Merger::Command(
                ["sh", "-c", "cat \"$@\" > {output}", "sh", "{inputs}"]
                    .map(String::from)
                    .to_vec()
            )
        );
        for (spec, why) in [
            ("hist.root", "no `=`"),
            ("=concat", "empty glob"),
            ("x=", "no merger"),
            ("x=hadd {inputs}", "no {output}"),
            ("x=cat", "no {output}"),
            ("x=m {output} --in={inputs}", "{inputs} exactly once"),
            ("x=[\"m\", 1]", "not an array of strings"),
        ] {
            let e = parse_merge_option(spec).unwrap_err();
            assert!(e.starts_with(&format!("--merge '{spec}': ")), "{e}");
            assert!(e.contains(why), "{spec}: {e}");
        }
    }

    #[test]
    fn merge_table_keeps_file_order_and_checks_mergers() {
        let j = parse(
            "[job]\ncommand = [\"x\"]\n[merge]\n\"*.root\" = [\"hadd\", \"-f\", \"{output}\", \"{inputs}\"]\n\"summary.log\" = \"concat\"\n\"a*\" = \"first\"\n",
        )
        .unwrap();
        let globs: Vec<_> = j.merge.0.iter().map(|r| r.glob.as_str()).collect();
        assert_eq!(globs, ["*.root", "summary.log", "a*"]);
        assert_eq!(
            j.merge.0[0].merger,
            Merger::Command(vec![
                "hadd".into(),
                "-f".into(),
                "{output}".into(),
                "{inputs}".into()
            ])
        );
        assert_eq!(j.merge.0[0].merger.describe(), "hadd -f {output} {inputs}");
        assert_eq!(j.merge.0[1].merger, Merger::Concat);
        assert_eq!(j.merge.0[2].merger, Merger::First);
        assert!(parse("[job]\ncommand = [\"x\"]\n")
            .unwrap()
            .merge
            .0
            .is_empty());

        let e = parse("[job]\ncommand = [\"x\"]\n[merge]\n\"*.log\" = \"cat\"\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("merge.*.log"));
        assert!(e.message.contains("unknown merger \"cat\""), "{e:?}");
        let e = parse("[job]\ncommand = [\"x\"]\n[merge]\n\"*.root\" = [\"hadd\", \"{inputs}\"]\n")
            .unwrap_err();
        assert!(e.message.contains("{output}"), "{e:?}");
        let e = parse(
            "[job]\ncommand = [\"x\"]\n[merge]\n\"*.root\" = [\"m\", \"{output}\", \"--in={inputs}\"]\n",
        )
        .unwrap_err();
        assert!(e.message.contains("whole argument"), "{e:?}");
        let e = parse("[job]\ncommand = [\"x\"]\n[merg]\n\"a\" = \"concat\"\n").unwrap_err();
        assert!(e.message.contains("did you mean `merge`?"), "{e:?}");
    }

    #[test]
    fn closest_names() {
        assert_eq!(closest("comand", &["command", "workers"]), Some("command"));
        assert_eq!(closest("comamnd", &["command", "workers"]), Some("command"));
        assert_eq!(closest("worker", &["command", "workers"]), Some("workers"));
        assert_eq!(closest("xyzzy", &["command", "workers"]), None);
        assert_eq!(closest("LOG_DIR", &["log_dir", "allow"]), Some("log_dir"));
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}
