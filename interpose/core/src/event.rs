//! The event log line format (docs/events.md), encoded without allocation.
//!
//! Encoding is generic over [`Sink`] (see [`Encode`]), so the library runs
//! it into whichever sink it needs (its staging buffer, a
//! [`crate::json::Counter`] to size the event, the log itself) with no
//! virtual call per fragment.

use crate::flags::{put_flag_names, OpenIntent};
use crate::json::{put_bool, put_hex_string, put_i64, put_str, put_str_checked, put_u64, Sink};

pub const SCHEMA_VERSION: u64 = 1;
/// Frames kept in an event's `stack`.
pub const MAX_FRAMES: usize = 16;

/// Fields every event carries.
#[derive(Clone, Copy, Debug)]
pub struct Common {
    pub ts: u64,
    pub pid: i32,
    pub ppid: i32,
    pub tid: i32,
    pub worker: Option<u32>,
    /// The launcher rank (docs/events.md, "Ranks"); `None` outside a
    /// launcher, and then neither `rank` nor `node` is written.
    pub rank: Option<u32>,
    /// The node name (`uname -n`), written beside `rank`.
    pub node: &'static [u8],
}

/// One stack frame: the object (shared library or executable) holding the
/// call, and the call's address in that object's ELF image (the run-time
/// address minus the object's load bias, so the number a symboliser such as
/// `addr2line -e <object>` takes). Both are `None`/0 for a frame in no
/// known object. The runner names the function (docs/events.md).
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame<'a> {
    pub object: Option<&'a [u8]>,
    pub vaddr: u64,
}

/// A path as the program gave it and its normalised absolute form.
#[derive(Clone, Copy, Debug)]
pub struct PathPair<'a> {
    /// `None` when the program passed a NULL pointer.
    pub given: Option<&'a [u8]>,
    pub abs: Option<&'a [u8]>,
}

/// The policy's judgement of an access (added by the policy layer).
#[derive(Clone, Copy, Debug)]
pub struct Judgement<'a> {
    pub verdict: &'a str,
    pub action: &'a str,
    pub target: Option<&'a [u8]>,
}

/// Attribution of a write: the component and the stack it was found in.
#[derive(Clone, Copy, Debug)]
pub struct Attribution<'a> {
    pub component: Option<Frame<'a>>,
    pub stack: &'a [Frame<'a>],
    /// The caller's stack goes on beyond `stack` but could not be walked
    /// (written as `"stack_truncated":true`, only when set).
    pub truncated: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    pub op: &'a str,
    pub path: PathPair<'a>,
    pub path2: Option<PathPair<'a>>,
    pub intent: OpenIntent,
    pub flags: i32,
    pub result: i64,
    /// 0 when the call succeeded.
    pub errno: i32,
    /// Present on write-class events.
    pub attribution: Option<Attribution<'a>>,
    pub judgement: Option<Judgement<'a>>,
}

/// A list of byte strings (a C `argv`, or a slice in tests) that can be
/// walked without allocating.
pub trait Strings {
    fn each(&self, f: &mut dyn FnMut(&[u8]));
}

impl Strings for &[&[u8]] {
    fn each(&self, f: &mut dyn FnMut(&[u8])) {
        for s in self.iter() {
            f(s)
        }
    }
}

/// An event that can be encoded into any sink. Generic rather than
/// `&mut dyn Sink`: the library's log path is then compiled per sink, with
/// the ~40 small writes of an event inlined instead of one virtual call each.
pub trait Encode {
    fn encode<S: Sink + ?Sized>(&self, s: &mut S);
}

pub struct AccessEvent<'a> {
    pub common: Common,
    pub access: Access<'a>,
}

impl Encode for AccessEvent<'_> {
    #[inline]
    fn encode<S: Sink + ?Sized>(&self, s: &mut S) {
        encode_access(s, &self.common, &self.access)
    }
}

pub struct ProcessEvent<'a> {
    pub common: Common,
    pub process: &'a Process<'a>,
}

impl Encode for ProcessEvent<'_> {
    #[inline]
    fn encode<S: Sink + ?Sized>(&self, s: &mut S) {
        encode_process(s, &self.common, self.process)
    }
}

pub enum Process<'a> {
    Start {
        argv: &'a dyn Strings,
        exe: &'a [u8],
        cwd: &'a [u8],
        root: bool,
    },
    Fork {
        child: i32,
    },
    Spawn {
        child: i32,
        argv: &'a dyn Strings,
        exe: &'a [u8],
        result: i64,
        errno: i32,
        /// `Some(reason)` when the spawned program runs unaudited
        /// (`"static"`, `"go"`, `"setuid"`).
        unaudited: Option<&'a str>,
        /// It was handed to the seccomp supervisor, which audits it.
        supervised: bool,
    },
    Exec {
        argv: &'a dyn Strings,
        exe: &'a [u8],
        cwd: &'a [u8],
        result: Option<i64>,
        errno: i32,
        /// `Some(reason)` when the target cannot be audited (`"static"`, `"setuid"`).
        unaudited: Option<&'a str>,
        /// The target was handed to the seccomp supervisor, which audits
        /// it: no log image of the library's follows.
        supervised: bool,
    },
    Exit {
        status: i32,
        /// Events this process image could not log (0 unless its log stopped).
        dropped: u64,
        /// Stack frames recorded without an object (JIT code, glibc <
        /// 2.35); written only when not 0.
        unresolved_frames: u64,
    },
}

/// Why a process stopped logging (the `reason` of a `log_stopped` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Growing the log would pass `RLIMIT_FSIZE` (and raise `SIGXFSZ`).
    FileSizeLimit,
    /// The filesystem holding the log is full.
    NoSpace,
    /// No descriptor was free to open the log with (EMFILE/ENFILE).
    NoDescriptor,
    /// The log file was removed or replaced.
    LogGone,
    /// Any other failure.
    IoError,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::FileSizeLimit => "file_size_limit",
            StopReason::NoSpace => "no_space",
            StopReason::NoDescriptor => "no_descriptor",
            StopReason::LogGone => "log_gone",
            StopReason::IoError => "io_error",
        }
    }
}

/// The record that ends a log which could not grow: every later event of
/// the process image is dropped and counted (the `dropped` of its `exit`).
pub struct LogStopped {
    pub common: Common,
    pub reason: StopReason,
    /// The error number behind `reason` (EFBIG for the size limit).
    pub errno: i32,
}

impl Encode for LogStopped {
    fn encode<S: Sink + ?Sized>(&self, s: &mut S) {
        let c = &self.common;
        s.put(b"{\"v\":");
        put_u64(s, SCHEMA_VERSION);
        s.put(b",\"ts\":");
        put_u64(s, c.ts);
        s.put(b",\"kind\":\"log_stopped\"");
        put_ids(s, c);
        s.put(b",\"reason\":\"");
        s.put(self.reason.as_str().as_bytes());
        s.put(b"\",\"errno\":");
        put_i64(s, self.errno as i64);
        s.put(b"}\n");
    }
}

fn put_common<S: Sink + ?Sized>(s: &mut S, c: &Common, kind: &str, op: &str) {
    s.put(b"{\"v\":");
    put_u64(s, SCHEMA_VERSION);
    s.put(b",\"ts\":");
    put_u64(s, c.ts);
    // kind and op are our own identifiers: nothing to escape.
    debug_assert!(kind
        .bytes()
        .chain(op.bytes())
        .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    s.put(b",\"kind\":\"");
    s.put(kind.as_bytes());
    s.put(b"\",\"op\":\"");
    s.put(op.as_bytes());
    s.put(b"\"");
    put_ids(s, c);
}

/// `,"pid":…,"ppid":…,"tid":…,"worker":…`
fn put_ids<S: Sink + ?Sized>(s: &mut S, c: &Common) {
    s.put(b",\"pid\":");
    put_i64(s, c.pid as i64);
    s.put(b",\"ppid\":");
    put_i64(s, c.ppid as i64);
    s.put(b",\"tid\":");
    put_i64(s, c.tid as i64);
    s.put(b",\"worker\":");
    match c.worker {
        Some(w) => put_u64(s, w as u64),
        None => s.put(b"null"),
    }
    // Under a launcher only: pids are unique per node, so a line must name
    // its node to say which process it is; outside one it costs nothing.
    if let Some(rank) = c.rank {
        s.put(b",\"rank\":");
        put_u64(s, rank as u64);
        // Host names are ASCII; anything else is written lossily.
        s.put(b",\"node\":");
        put_str(s, c.node);
    }
}

/// `,"key":"text"` and, when not UTF-8, `,"key_hex":"…"`.
fn put_path_field<S: Sink + ?Sized>(s: &mut S, key: &str, value: Option<&[u8]>) {
    s.put(b",\"");
    s.put(key.as_bytes());
    s.put(b"\":");
    match value {
        None => s.put(b"null"),
        Some(v) => {
            if !put_str_checked(s, v) {
                s.put(b",\"");
                s.put(key.as_bytes());
                s.put(b"_hex\":");
                put_hex_string(s, v);
            }
        }
    }
}

fn put_frame<S: Sink + ?Sized>(s: &mut S, f: &Frame) {
    match f.object {
        Some(object) => {
            s.put(b"{\"object\":");
            put_str(s, object);
            s.put(b",\"vaddr\":");
            put_u64(s, f.vaddr);
            s.put(b"}");
        }
        None => s.put(b"{\"object\":null,\"vaddr\":null}"),
    }
}

fn put_errno<S: Sink + ?Sized>(s: &mut S, errno: i32) {
    s.put(b",\"errno\":");
    if errno == 0 {
        s.put(b"null");
    } else {
        match errno_name(errno) {
            Some(name) => put_str(s, name.as_bytes()),
            None => {
                s.put(b"\"E");
                put_i64(s, errno as i64);
                s.put(b"\"");
            }
        }
    }
}

fn put_strings<S: Sink + ?Sized>(s: &mut S, key: &str, list: &dyn Strings) {
    s.put(b",\"");
    s.put(key.as_bytes());
    s.put(b"\":[");
    let mut first = true;
    list.each(&mut |item| {
        if !first {
            s.put(b",");
        }
        first = false;
        put_str(s, item);
    });
    s.put(b"]");
}

/// Encodes one access event as a JSON line (with the trailing newline).
pub fn encode_access<S: Sink + ?Sized>(s: &mut S, c: &Common, a: &Access) {
    put_common(s, c, "access", a.op);
    put_path_field(s, "path", a.path.given);
    put_path_field(s, "abs", a.path.abs);
    if let Some(p2) = &a.path2 {
        put_path_field(s, "path2", p2.given);
        put_path_field(s, "abs2", p2.abs);
    }
    s.put(b",\"mode\":");
    put_str(s, a.intent.mode.as_str().as_bytes());
    s.put(b",\"create\":");
    put_bool(s, a.intent.create);
    s.put(b",\"truncate\":");
    put_bool(s, a.intent.truncate);
    s.put(b",\"append\":");
    put_bool(s, a.intent.append);
    s.put(b",\"flags\":");
    if a.path2.is_some() || a.flags < 0 {
        s.put(b"[]");
    } else {
        put_flag_names(s, a.flags);
    }
    s.put(b",\"result\":");
    put_i64(s, a.result);
    put_errno(s, a.errno);
    if let Some(attr) = &a.attribution {
        s.put(b",\"component\":");
        match &attr.component {
            Some(f) => put_frame(s, f),
            None => s.put(b"null"),
        }
        s.put(b",\"stack\":[");
        for (i, f) in attr.stack.iter().take(MAX_FRAMES).enumerate() {
            if i > 0 {
                s.put(b",");
            }
            put_frame(s, f);
        }
        s.put(b"]");
        if attr.truncated {
            s.put(b",\"stack_truncated\":true");
        }
    }
    if let Some(j) = &a.judgement {
        s.put(b",\"verdict\":");
        put_str(s, j.verdict.as_bytes());
        s.put(b",\"action\":");
        put_str(s, j.action.as_bytes());
        if j.target.is_some() {
            put_path_field(s, "target", j.target);
        }
    }
    s.put(b"}\n");
}

/// `argv`, `exe` and (for start and exec) `cwd`: what a process runs.
fn put_program<S: Sink + ?Sized>(s: &mut S, argv: &dyn Strings, exe: &[u8], cwd: Option<&[u8]>) {
    put_strings(s, "argv", argv);
    s.put(b",\"exe\":");
    put_str(s, exe);
    if let Some(cwd) = cwd {
        s.put(b",\"cwd\":");
        put_str(s, cwd);
    }
}

/// `"audited"`, with `"reason"` when false, and `"supervised":true` when
/// the program was handed to the seccomp supervisor (exec and spawn).
fn put_audited<S: Sink + ?Sized>(s: &mut S, unaudited: Option<&str>, supervised: bool) {
    s.put(b",\"audited\":");
    put_bool(s, unaudited.is_none());
    if let Some(reason) = unaudited {
        s.put(b",\"reason\":");
        put_str(s, reason.as_bytes());
    }
    if supervised {
        s.put(b",\"supervised\":true");
    }
}

/// Encodes one process event as a JSON line (with the trailing newline).
pub fn encode_process<S: Sink + ?Sized>(s: &mut S, c: &Common, p: &Process) {
    let op = match p {
        Process::Start { .. } => "start",
        Process::Fork { .. } => "fork",
        Process::Spawn { .. } => "spawn",
        Process::Exec { .. } => "exec",
        Process::Exit { .. } => "exit",
    };
    put_common(s, c, "process", op);
    match p {
        Process::Start {
            argv,
            exe,
            cwd,
            root,
        } => {
            put_program(s, *argv, exe, Some(cwd));
            s.put(b",\"root\":");
            put_bool(s, *root);
        }
        Process::Fork { child } => {
            s.put(b",\"child\":");
            put_i64(s, *child as i64);
        }
        Process::Spawn {
            child,
            argv,
            exe,
            result,
            errno,
            unaudited,
            supervised,
        } => {
            s.put(b",\"child\":");
            put_i64(s, *child as i64);
            put_program(s, *argv, exe, None);
            s.put(b",\"result\":");
            put_i64(s, *result);
            put_errno(s, *errno);
            put_audited(s, *unaudited, *supervised);
        }
        Process::Exec {
            argv,
            exe,
            cwd,
            result,
            errno,
            unaudited,
            supervised,
        } => {
            put_program(s, *argv, exe, Some(cwd));
            s.put(b",\"result\":");
            match result {
                Some(r) => put_i64(s, *r),
                None => s.put(b"null"),
            }
            put_errno(s, *errno);
            put_audited(s, *unaudited, *supervised);
        }
        Process::Exit {
            status,
            dropped,
            unresolved_frames,
        } => {
            s.put(b",\"status\":");
            put_i64(s, *status as i64);
            s.put(b",\"dropped\":");
            put_u64(s, *dropped);
            if *unresolved_frames > 0 {
                s.put(b",\"unresolved_frames\":");
                put_u64(s, *unresolved_frames);
            }
        }
    }
    s.put(b"}\n");
}

/// Symbolic name of an errno value (the ones file calls return).
pub fn errno_name(e: i32) -> Option<&'static str> {
    use libc::*;
    Some(match e {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        ESRCH => "ESRCH",
        EINTR => "EINTR",
        EIO => "EIO",
        ENXIO => "ENXIO",
        E2BIG => "E2BIG",
        ENOEXEC => "ENOEXEC",
        EBADF => "EBADF",
        ECHILD => "ECHILD",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        EEXIST => "EEXIST",
        EXDEV => "EXDEV",
        ENODEV => "ENODEV",
        ENOTDIR => "ENOTDIR",
        EISDIR => "EISDIR",
        EINVAL => "EINVAL",
        ENFILE => "ENFILE",
        EMFILE => "EMFILE",
        ETXTBSY => "ETXTBSY",
        EFBIG => "EFBIG",
        ENOSPC => "ENOSPC",
        ESPIPE => "ESPIPE",
        EROFS => "EROFS",
        EMLINK => "EMLINK",
        ENAMETOOLONG => "ENAMETOOLONG",
        ENOSYS => "ENOSYS",
        ENOTEMPTY => "ENOTEMPTY",
        ELOOP => "ELOOP",
        EOVERFLOW => "EOVERFLOW",
        EOPNOTSUPP => "EOPNOTSUPP",
        EDQUOT => "EDQUOT",
        ESTALE => "ESTALE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::OpenIntent;
    use serde_json::Value;

    const C: Common = Common {
        ts: 1,
        pid: 10,
        ppid: 9,
        tid: 11,
        worker: Some(2),
        rank: None,
        node: b"",
    };

    fn access(path: &[u8], abs: Option<&[u8]>, attribution: Option<Attribution>) -> Value {
        let a = Access {
            op: "openat",
            path: PathPair {
                given: Some(path),
                abs,
            },
            path2: None,
            intent: OpenIntent::from_flags(libc::O_WRONLY | libc::O_CREAT),
            flags: libc::O_WRONLY | libc::O_CREAT,
            result: 3,
            errno: 0,
            attribution,
            judgement: None,
        };
        let mut v = Vec::new();
        encode_access(&mut v, &C, &a);
        assert_eq!(v.last(), Some(&b'\n'));
        let mut count = crate::json::Counter::default();
        encode_access(&mut count, &C, &a);
        assert_eq!(
            count.0,
            v.len(),
            "counting pass must size the event exactly"
        );
        serde_json::from_slice(&v).unwrap()
    }

    #[test]
    fn access_event_has_the_documented_fields() {
        let frames = [
            Frame {
                object: Some(b"/lib/libx.so"),
                vaddr: 0x1139,
            },
            Frame {
                object: Some(b"/bin/a"),
                vaddr: u64::MAX,
            },
            Frame::default(),
        ];
        let v = access(
            b"out.txt",
            Some(b"/job/out.txt"),
            Some(Attribution {
                component: Some(frames[0]),
                stack: &frames,
                truncated: false,
            }),
        );
        assert!(v.get("stack_truncated").is_none(), "{v}");
        let cut = access(
            b"out.txt",
            Some(b"/job/out.txt"),
            Some(Attribution {
                component: None,
                stack: &frames[2..],
                truncated: true,
            }),
        );
        assert_eq!(cut["stack_truncated"], true);
        assert_eq!(v["v"], 1);
        assert_eq!(v["kind"], "access");
        assert_eq!(v["worker"], 2);
        assert_eq!(v["abs"], "/job/out.txt");
        assert_eq!(v["mode"], "write");
        assert_eq!(v["create"], true);
        assert_eq!(v["flags"], serde_json::json!(["O_WRONLY", "O_CREAT"]));
        assert_eq!(v["errno"], Value::Null);
        assert_eq!(
            v["component"],
            serde_json::json!({"object": "/lib/libx.so", "vaddr": 0x1139})
        );
        assert_eq!(v["stack"][1]["vaddr"].as_u64(), Some(u64::MAX));
        assert_eq!(
            v["stack"][2],
            serde_json::json!({"object": null, "vaddr": null})
        );
        assert!(v.get("path_hex").is_none());
    }

    #[test]
    fn non_utf8_paths_keep_their_bytes() {
        let v = access(b"caf\xe9", None, None);
        assert_eq!(v["path"], "caf\u{FFFD}");
        assert_eq!(v["path_hex"], "636166e9");
        assert_eq!(v["abs"], Value::Null);
    }

    #[test]
    fn process_events() {
        let argv: &[&[u8]] = &[b"prog", b"-x"];
        let mut v = Vec::new();
        encode_process(
            &mut v,
            &C,
            &Process::Exec {
                argv: &argv,
                exe: b"/bin/prog",
                cwd: b"/",
                result: None,
                errno: 0,
                unaudited: Some("static"),
                supervised: false,
            },
        );
        let j: Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["op"], "exec");
        assert_eq!(j["argv"], serde_json::json!(["prog", "-x"]));
        assert_eq!(j["audited"], false);
        assert_eq!(j["reason"], "static");
        assert_eq!(j["result"], Value::Null);
        assert!(j.get("supervised").is_none());
    }

    #[test]
    fn a_spawn_says_who_audits_its_program() {
        let argv: &[&[u8]] = &[b"prog"];
        let line = |unaudited, supervised| {
            let mut v = Vec::new();
            encode_process(
                &mut v,
                &C,
                &Process::Spawn {
                    child: 42,
                    argv: &argv,
                    exe: b"/bin/prog",
                    result: 0,
                    errno: 0,
                    unaudited,
                    supervised,
                },
            );
            serde_json::from_slice::<Value>(&v).unwrap()
        };
        let handed = line(None, true);
        assert_eq!(
            (&handed["audited"], &handed["supervised"], &handed["child"]),
            (&Value::Bool(true), &Value::Bool(true), &Value::from(42))
        );
        let unseen = line(Some("go"), false);
        assert_eq!(
            (&unseen["audited"], &unseen["reason"]),
            (&Value::Bool(false), &Value::from("go"))
        );
        assert!(unseen.get("supervised").is_none());
    }

    #[test]
    fn rank_and_node_only_under_a_launcher() {
        let plain = access(b"a", Some(b"/a"), None);
        assert!(plain.get("rank").is_none() && plain.get("node").is_none());
        let ranked = Common {
            rank: Some(3),
            node: b"wn\"01",
            ..C
        };
        for line in [
            {
                let mut v = Vec::new();
                encode_process(
                    &mut v,
                    &ranked,
                    &Process::Exit {
                        status: 0,
                        dropped: 0,
                        unresolved_frames: 0,
                    },
                );
                v
            },
            {
                let mut v = Vec::new();
                let mut count = crate::json::Counter::default();
                let p = Process::Fork { child: 4 };
                encode_process(&mut v, &ranked, &p);
                encode_process(&mut count, &ranked, &p);
                assert_eq!(count.0, v.len());
                v
            },
        ] {
            let j: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(j["rank"], 3);
            assert_eq!(j["node"], "wn\"01");
            assert_eq!(j["worker"], 2);
        }
    }

    #[test]
    fn exit_and_log_stopped_events() {
        let mut v = Vec::new();
        encode_process(
            &mut v,
            &C,
            &Process::Exit {
                status: 3,
                dropped: 12,
                unresolved_frames: 0,
            },
        );
        let j: Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(
            (j["op"].as_str(), j["status"].as_i64()),
            (Some("exit"), Some(3))
        );
        assert_eq!(j["dropped"], 12);
        assert!(j.get("unresolved_frames").is_none(), "{j}");
        let mut v = Vec::new();
        encode_process(
            &mut v,
            &C,
            &Process::Exit {
                status: 0,
                dropped: 0,
                unresolved_frames: 7,
            },
        );
        let j: Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(j["unresolved_frames"], 7);
        let mut v = Vec::new();
        LogStopped {
            common: C,
            reason: StopReason::FileSizeLimit,
            errno: libc::EFBIG,
        }
        .encode(&mut v);
        assert_eq!(v.last(), Some(&b'\n'));
        let j: Value = serde_json::from_slice(&v).unwrap();
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            ["errno", "kind", "pid", "ppid", "reason", "tid", "ts", "v", "worker"]
        );
        assert_eq!(j["kind"], "log_stopped");
        assert_eq!(j["reason"], "file_size_limit");
        assert_eq!(j["errno"], libc::EFBIG);
        assert_eq!(j["worker"], 2);
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::ENOENT), Some("ENOENT"));
        let mut v = Vec::new();
        put_errno(&mut v, 4095);
        assert_eq!(v, b",\"errno\":\"E4095\"");
    }
}
