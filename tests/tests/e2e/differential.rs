//! The differential test of redirection (issue 12, docs/differential.md):
//! inside a worker, every sequence of file operations must give the same
//! results, errno and contents under `MPAUDIT_ACTION=redirect` as the same
//! worker alone writing in place. Random operation sequences over a small,
//! colliding name space run once bare in a scratch copy of an initial tree
//! and once redirected in a job directory holding the same tree; every
//! result line of the executor (tests/fixtures/ops_exec.c) must match, and
//! the shared tree must be exactly as it was. proptest shrinks a failure to
//! a minimal script.
//!
//! The same property holds for 2–4 workers with distinct indices running
//! their own scripts at once on one shared tree (same workers and log
//! directories, a start barrier so that they really overlap): each one's
//! results must be those of its script run bare alone.
//!
//! Knobs (environment): `MPAUDIT_DIFF_CASES` (default 300),
//! `MPAUDIT_DIFF_MULTI_CASES` (cases of several workers, default 150),
//! `MPAUDIT_DIFF_SEED` (a u64; default random, always printed),
//! `MPAUDIT_DIFF_EXCLUDE` (comma-separated features replacing
//! [`KNOWN_BROKEN`]; empty: exclude nothing).

use mpaudit_tests::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use std::fmt;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Operation features the CI run leaves out because today's redirect gets
/// them wrong, each with the reason (the minimal failing script is in
/// docs/differential.md). Remove an entry once its fix has landed; run
/// with `MPAUDIT_DIFF_EXCLUDE=` to see everything that still fails.
/// What the seccomp supervisor does not emulate, left out of its variant
/// (docs/limitations.md, "Under the supervisor"), besides [`KNOWN_BROKEN`].
const SUPERVISOR_GAPS: &[(&str, &str)] = &[
    (
        "chdir",
        "a supervisor cannot move the task into the worker directory",
    ),
    ("fchdir", "as chdir"),
    (
        "open-path",
        "no O_PATH descriptor passes through SECCOMP_IOCTL_NOTIF_ADDFD: a worker's file is given opened \
         with access mode 3, on which lseek, fchmod and the like succeed (EBADF bare)",
    ),
];

const KNOWN_BROKEN: &[(&str, &str)] = &[];

/// Names the operations use: a few files and directories, nested one level,
/// a symlink, a missing parent, `..`, absolute spellings (`@` is the
/// working directory), so that operations collide often.
/// `^` is /proc/self/cwd and `%H` is /proc/self/fd/N of handle H (a
/// directory, a file or nothing, depending on the script).
const PATHS: &[&str] = &[
    "a", "b", "c", "d", "e", "l", "d/a", "d/b", "e/a", "l/a", "x/a", "d/../a", "@/a", "@/d/b",
    "^/a", "^/d/b", "%0", "%1/a",
];

/// The paths in [`PATHS`] that can name a directory of the initial tree
/// (`l` may point to `d`).
const SHARED_DIRS: &[&str] = &["d", "e", "l", "@/d", "d/..", "^", "^/d"];

/// Directories to list: the paths above and the working directory.
const DIRS: &[&str] = &[".", "d", "e", "l", "x", "d/..", "@/d", "^/d", "%0"];

/// The longest script a case runs.
const MAX_OPS: usize = 24;

/// Every name component the scripts and trees use: what the final tree is
/// probed for when readdir is left out (`OPS_EXEC_WALK=probe`).
const NAMES: &str = "a b c d e l x zz";

const MODES: &[u32] = &[0o644, 0o600, 0o755, 0o700, 0o444];

fn path() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(PATHS)
}

fn data() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(&b"abcdefgh"[..]), 1..6)
        .prop_map(|v| String::from_utf8(v).expect("ascii"))
}

fn mode() -> impl Strategy<Value = u32> {
    proptest::sample::select(MODES)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    Read,
    Write,
    ReadWrite,
}

#[derive(Clone, Debug)]
struct OpenFlags {
    access: Access,
    creat: bool,
    excl: bool,
    trunc: bool,
    append: bool,
    directory: bool,
    nofollow: bool,
    tmpfile: bool,
    /// O_PATH: open(2) drops every other flag but O_DIRECTORY, O_NOFOLLOW.
    path: bool,
}

impl fmt::Display for OpenFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.access {
            Access::Read => "RDONLY",
            Access::Write => "WRONLY",
            Access::ReadWrite => "RDWR",
        })?;
        for (on, name) in [
            (self.creat, "CREAT"),
            (self.excl, "EXCL"),
            (self.trunc, "TRUNC"),
            (self.append, "APPEND"),
            (self.directory, "DIRECTORY"),
            (self.nofollow, "NOFOLLOW"),
            (self.tmpfile, "TMPFILE"),
            (self.path, "PATH"),
        ] {
            if on {
                write!(f, "|{name}")?;
            }
        }
        Ok(())
    }
}

fn open_flags() -> impl Strategy<Value = OpenFlags> {
    use proptest::bool::weighted;
    (
        prop_oneof![
            Just(Access::Read),
            Just(Access::Write),
            Just(Access::ReadWrite)
        ],
        weighted(0.5),
        weighted(0.3),
        weighted(0.3),
        weighted(0.3),
        weighted(0.1),
        weighted(0.1),
        weighted(0.06),
        weighted(0.05),
    )
        .prop_map(
            |(access, creat, excl, trunc, append, directory, nofollow, tmpfile, path)| OpenFlags {
                access,
                creat,
                excl,
                trunc,
                append,
                directory,
                nofollow,
                tmpfile,
                path,
            },
        )
}

#[derive(Clone, Copy, Debug)]
enum RenameFlag {
    Plain,
    NoReplace,
    Exchange,
}

/// One line of an executor script (the format is in ops_exec.c).
#[derive(Clone, Debug)]
enum Op {
    Open {
        h: u8,
        dir: Option<u8>,
        path: &'static str,
        flags: OpenFlags,
        mode: u32,
    },
    Close {
        h: u8,
    },
    Write {
        h: u8,
        data: String,
    },
    Pwrite {
        h: u8,
        off: u32,
        data: String,
    },
    Lseek {
        h: u8,
        off: u32,
    },
    Read {
        h: u8,
        len: u32,
    },
    Pread {
        h: u8,
        off: u32,
        len: u32,
    },
    Fstat {
        h: u8,
    },
    Ftruncate {
        h: u8,
        len: u32,
    },
    Stat {
        path: &'static str,
    },
    Lstat {
        path: &'static str,
    },
    Readlink {
        path: &'static str,
    },
    Access {
        path: &'static str,
    },
    Readdir {
        path: &'static str,
    },
    Rename {
        from: &'static str,
        to: &'static str,
        flag: RenameFlag,
    },
    Link {
        from: &'static str,
        to: &'static str,
    },
    Symlink {
        target: &'static str,
        path: &'static str,
    },
    Unlink {
        path: &'static str,
    },
    Mkdir {
        path: &'static str,
        mode: u32,
    },
    Rmdir {
        path: &'static str,
    },
    Truncate {
        path: &'static str,
        len: u32,
    },
    Chmod {
        path: &'static str,
        mode: u32,
    },
    /// utimensat(path, 1000 s): times the executor prints exactly, so a
    /// copy that takes or loses them shows (review 8 F1).
    Utimes {
        path: &'static str,
    },
    /// The mtime ("recent" or exact) and owner.
    Times {
        path: &'static str,
    },
    /// fopen(3) with a mode of [`FOPEN_MODES`]; the handle gets a dup of
    /// the stream's descriptor.
    Fopen {
        h: u8,
        path: &'static str,
        mode: &'static str,
    },
    /// mkstemp of `path.XXXXXX`, then the temporary renamed to `path` (the
    /// usual atomic replacement; the random name never shows).
    Mkstemp {
        h: u8,
        path: &'static str,
    },
    /// renameat2 relative to directory handles (`None`: the working
    /// directory).
    Renameat {
        from_dir: Option<u8>,
        from: &'static str,
        to_dir: Option<u8>,
        to: &'static str,
        flag: RenameFlag,
    },
    /// linkat relative to handles, with AT_SYMLINK_FOLLOW and AT_EMPTY_PATH
    /// (`from` may be the empty path: the handle itself, an O_TMPFILE say).
    Linkat {
        from_dir: Option<u8>,
        from: &'static str,
        to_dir: Option<u8>,
        to: &'static str,
        follow: bool,
        empty: bool,
    },
    /// unlinkat relative to a handle, with or without AT_REMOVEDIR.
    Unlinkat {
        dir: Option<u8>,
        path: &'static str,
        removedir: bool,
    },
    /// Later relative paths resolve in `path` (the final tree is still
    /// walked from where the script started).
    Chdir {
        path: &'static str,
    },
    Fchdir {
        h: u8,
    },
    /// The next `k` operations run in a forked child; the parent waits.
    Fork {
        k: u8,
    },
    /// The process re-executes itself for the rest of its operations.
    Exec,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Open {
                h,
                dir: None,
                path,
                flags,
                mode,
            } => {
                write!(f, "open {h} {path} {flags} {mode:o}")
            }
            Op::Open {
                h,
                dir: Some(d),
                path,
                flags,
                mode,
            } => {
                write!(f, "openat {h} {d} {path} {flags} {mode:o}")
            }
            Op::Close { h } => write!(f, "close {h}"),
            Op::Write { h, data } => write!(f, "write {h} {data}"),
            Op::Pwrite { h, off, data } => write!(f, "pwrite {h} {off} {data}"),
            Op::Lseek { h, off } => write!(f, "lseek {h} {off}"),
            Op::Read { h, len } => write!(f, "read {h} {len}"),
            Op::Pread { h, off, len } => write!(f, "pread {h} {off} {len}"),
            Op::Fstat { h } => write!(f, "fstat {h}"),
            Op::Ftruncate { h, len } => write!(f, "ftruncate {h} {len}"),
            Op::Stat { path } => write!(f, "stat {path}"),
            Op::Lstat { path } => write!(f, "lstat {path}"),
            Op::Readlink { path } => write!(f, "readlink {path}"),
            Op::Access { path } => write!(f, "access {path}"),
            Op::Readdir { path } => write!(f, "readdir {path}"),
            Op::Rename { from, to, flag } => write!(f, "rename {from} {to} {}", flag.token()),
            Op::Link { from, to } => write!(f, "link {from} {to}"),
            Op::Symlink { target, path } => write!(f, "symlink {target} {path}"),
            Op::Unlink { path } => write!(f, "unlink {path}"),
            Op::Mkdir { path, mode } => write!(f, "mkdir {path} {mode:o}"),
            Op::Rmdir { path } => write!(f, "rmdir {path}"),
            Op::Truncate { path, len } => write!(f, "truncate {path} {len}"),
            Op::Chmod { path, mode } => write!(f, "chmod {path} {mode:o}"),
            Op::Utimes { path } => write!(f, "utimensat {path} 1000 0"),
            Op::Times { path } => write!(f, "times {path}"),
            Op::Fopen { h, path, mode } => write!(f, "fopen {h} {path} {mode}"),
            Op::Mkstemp { h, path } => write!(f, "mkstemp {h} {path}"),
            Op::Renameat {
                from_dir,
                from,
                to_dir,
                to,
                flag,
            } => write!(
                f,
                "renameat {} {from} {} {to} {}",
                DirArg(*from_dir),
                DirArg(*to_dir),
                flag.token()
            ),
            Op::Linkat {
                from_dir,
                from,
                to_dir,
                to,
                follow,
                empty,
            } => write!(
                f,
                "linkat {} {from} {} {to} {}",
                DirArg(*from_dir),
                DirArg(*to_dir),
                match (follow, empty) {
                    (false, false) => "0",
                    (true, false) => "FOLLOW",
                    (false, true) => "EMPTY",
                    (true, true) => "FOLLOW|EMPTY",
                }
            ),
            Op::Unlinkat {
                dir,
                path,
                removedir,
            } => write!(
                f,
                "unlinkat {} {path} {}",
                DirArg(*dir),
                if *removedir { "REMOVEDIR" } else { "0" }
            ),
            Op::Chdir { path } => write!(f, "chdir {path}"),
            Op::Fchdir { h } => write!(f, "fchdir {h}"),
            Op::Fork { k } => write!(f, "fork {k}"),
            Op::Exec => write!(f, "exec"),
        }
    }
}

/// A directory handle argument of the executor: a handle, or `cwd`.
struct DirArg(Option<u8>);

impl fmt::Display for DirArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(h) => write!(f, "{h}"),
            None => f.write_str("cwd"),
        }
    }
}

impl RenameFlag {
    fn token(self) -> &'static str {
        match self {
            RenameFlag::Plain => "0",
            RenameFlag::NoReplace => "NOREPLACE",
            RenameFlag::Exchange => "EXCHANGE",
        }
    }

    /// The feature an exclusion names this flavour by.
    fn feature(self) -> &'static str {
        match self {
            RenameFlag::Plain => "rename",
            RenameFlag::NoReplace => "rename-noreplace",
            RenameFlag::Exchange => "rename-exchange",
        }
    }
}

/// The modes [`Op::Fopen`] uses.
const FOPEN_MODES: &[&str] = &["r", "r+", "w", "w+", "a", "a+", "wx"];

/// The open(2) flags glibc's fopen uses for a mode (the same open flavours
/// take the same paths through the library).
fn fopen_flags(mode: &str) -> OpenFlags {
    let access = match mode {
        "r" => Access::Read,
        "w" | "a" | "wx" => Access::Write,
        _ => Access::ReadWrite,
    };
    OpenFlags {
        access,
        creat: !mode.starts_with('r'),
        excl: mode == "wx",
        trunc: mode.starts_with('w'),
        append: mode.starts_with('a'),
        directory: false,
        nofollow: false,
        tmpfile: false,
        path: false,
    }
}

/// The open flavours a set of flags takes (see [`Op::features`]).
fn open_features(flags: &OpenFlags, v: &mut Vec<&'static str>) {
    if flags.path {
        // The other flags are dropped: what they would do is not done.
        v.push("open-path");
        if flags.nofollow {
            v.push("open-path-nofollow");
        }
        if flags.directory {
            v.push("open-directory");
        }
        return;
    }
    let writes = flags.access != Access::Read;
    if (writes || flags.trunc) && !flags.creat {
        v.push("open-write-nocreat");
    }
    if writes && !flags.trunc {
        v.push("open-write-keep");
    }
    if flags.creat && !flags.trunc {
        v.push("open-creat-keep");
    }
    if writes && flags.trunc {
        v.push("open-write-trunc");
    }
    if flags.access == Access::Read && !flags.creat && !flags.trunc && !flags.tmpfile {
        v.push("open-read");
    }
    if flags.access == Access::Read && (flags.creat || flags.trunc) {
        v.push("open-read-create");
    }
    if flags.creat && flags.excl {
        v.push("open-excl");
    }
    if flags.append {
        v.push("open-append");
    }
    if flags.directory {
        v.push("open-directory");
    }
    if flags.nofollow {
        v.push("open-nofollow");
    }
    if flags.tmpfile {
        v.push("open-tmpfile");
    }
}

impl Op {
    /// What an exclusion can name: the operation itself, its flavour (open
    /// flags that take a different path through the library, rename flags)
    /// and the kinds of path it uses.
    fn features(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut paths: Vec<&str> = Vec::new();
        match self {
            Op::Open {
                dir, path, flags, ..
            } => {
                v.push("open");
                if dir.is_some() {
                    v.push("openat-dirfd");
                }
                open_features(flags, &mut v);
                paths.push(path);
            }
            Op::Fopen { path, mode, .. } => {
                v.push("fopen");
                open_features(&fopen_flags(mode), &mut v);
                paths.push(path);
            }
            Op::Mkstemp { path, .. } => {
                v.push("mkstemp");
                paths.push(path);
            }
            Op::Renameat { from, to, flag, .. } => {
                // Its own names: whether renameat shares rename's bugs is
                // for the test to find out.
                v.push(match flag {
                    RenameFlag::Plain => "renameat",
                    RenameFlag::NoReplace => "renameat-noreplace",
                    RenameFlag::Exchange => "renameat-exchange",
                });
                paths.extend([from, to]);
            }
            Op::Linkat {
                from,
                to,
                follow,
                empty,
                ..
            } => {
                v.push("linkat");
                if *follow {
                    v.push("linkat-follow");
                }
                if *empty {
                    v.push("linkat-empty-path");
                }
                paths.extend([from, to]);
            }
            Op::Unlinkat {
                path, removedir, ..
            } => {
                v.push(if *removedir {
                    "unlinkat-removedir"
                } else {
                    "unlinkat"
                });
                paths.push(path);
            }
            Op::Chdir { path } => {
                v.push("chdir");
                paths.push(path);
            }
            Op::Fchdir { .. } => v.push("fchdir"),
            Op::Close { .. } => v.push("close"),
            Op::Write { .. } => v.push("write"),
            Op::Pwrite { .. } => v.push("pwrite"),
            Op::Lseek { .. } => v.push("lseek"),
            Op::Read { .. } => v.push("read"),
            Op::Pread { .. } => v.push("pread"),
            Op::Fstat { .. } => v.push("fstat"),
            Op::Ftruncate { .. } => v.push("ftruncate"),
            Op::Stat { path } => {
                v.push("stat");
                paths.push(path);
            }
            Op::Lstat { path } => {
                v.push("lstat");
                paths.push(path);
            }
            Op::Readlink { path } => {
                v.push("readlink");
                paths.push(path);
            }
            Op::Access { path } => {
                v.push("access");
                paths.push(path);
            }
            Op::Readdir { path } => {
                v.push("readdir");
                paths.push(path);
            }
            Op::Rename { from, to, flag } => {
                v.push(flag.feature());
                paths.extend([from, to]);
            }
            Op::Link { from, to } => {
                v.push("link");
                paths.extend([from, to]);
            }
            Op::Symlink { path, .. } => {
                // The target is only text; the link's own path is judged.
                v.push("symlink");
                paths.push(path);
            }
            Op::Unlink { path } => {
                v.push("unlink");
                paths.push(path);
            }
            Op::Mkdir { path, .. } => {
                v.push("mkdir");
                paths.push(path);
            }
            Op::Rmdir { path } => {
                v.push("rmdir");
                paths.push(path);
            }
            Op::Truncate { path, .. } => {
                v.push("truncate");
                paths.push(path);
            }
            Op::Chmod { path, .. } => {
                v.push("chmod");
                paths.push(path);
            }
            Op::Utimes { path } => {
                v.push("utimes");
                paths.push(path);
            }
            Op::Times { path } => {
                v.push("times");
                paths.push(path);
            }
            Op::Fork { .. } => v.push("fork"),
            Op::Exec => v.push("exec"),
        }
        // A write that the kernel refuses on a directory (EISDIR, EEXIST,
        // EPERM), aimed at one of the shared tree's.
        let writes_at = match self {
            Op::Open { path, flags, .. }
                if flags.creat || flags.trunc || flags.access != Access::Read =>
            {
                Some(*path)
            }
            Op::Fopen { path, mode, .. } if *mode != "r" => Some(*path),
            Op::Symlink { path, .. }
            | Op::Mkdir { path, .. }
            | Op::Truncate { path, .. }
            | Op::Mkstemp { path, .. }
            | Op::Unlinkat {
                path,
                removedir: false,
                ..
            }
            | Op::Unlink { path } => Some(*path),
            Op::Link { to, .. } | Op::Linkat { to, .. } => Some(*to),
            _ => None,
        };
        if writes_at.is_some_and(|p| SHARED_DIRS.contains(&p)) {
            v.push("file-write-on-shared-dir");
        }
        for p in paths {
            if p.contains("..") {
                v.push("path-dotdot");
            }
            if p.starts_with('@') {
                v.push("path-absolute");
            }
            if p.starts_with("x/") || p == "x" {
                v.push("path-missing-parent");
            }
            if p.starts_with("l/") || p == "l" {
                v.push("path-symlink");
            }
            if p.starts_with('^') {
                v.push("path-proc-cwd");
            }
            if p.starts_with('%') {
                v.push("path-proc-fd");
            }
        }
        v
    }
}

/// The empty path, as the executor spells it (AT_EMPTY_PATH's source).
const EMPTY_PATH: &str = "\"\"";

/// Where a chdir goes: the directories of the tree, a missing one, the
/// start (`@`), and the /proc spellings. Never above the start: a bare run
/// and a redirected one have different things there.
const CHDIRS: &[&str] = &[".", "d", "e", "l", "x", "@", "@/d", "^/d", "%0", "d/.."];

fn rename_flag() -> impl Strategy<Value = RenameFlag> {
    prop_oneof![
        Just(RenameFlag::Plain),
        Just(RenameFlag::NoReplace),
        Just(RenameFlag::Exchange)
    ]
}

/// A directory handle for the *at calls, or the working directory.
fn dir_arg() -> impl Strategy<Value = Option<u8>> {
    proptest::option::weighted(0.5, 0u8..4)
}

fn op() -> impl Strategy<Value = Op> {
    let h = || 0u8..4;
    let off = || 0u32..24;
    let len = || 0u32..24;
    prop_oneof![
        6 => (h(), proptest::option::weighted(0.25, h()), path(), open_flags(), mode())
            .prop_map(|(h, dir, path, flags, mode)| Op::Open { h, dir, path, flags, mode }),
        2 => h().prop_map(|h| Op::Close { h }),
        3 => (h(), data()).prop_map(|(h, data)| Op::Write { h, data }),
        3 => (h(), off(), data()).prop_map(|(h, off, data)| Op::Pwrite { h, off, data }),
        1 => (h(), off()).prop_map(|(h, off)| Op::Lseek { h, off }),
        2 => (h(), len()).prop_map(|(h, len)| Op::Read { h, len }),
        2 => (h(), off(), len()).prop_map(|(h, off, len)| Op::Pread { h, off, len }),
        1 => h().prop_map(|h| Op::Fstat { h }),
        1 => (h(), len()).prop_map(|(h, len)| Op::Ftruncate { h, len }),
        2 => path().prop_map(|path| Op::Stat { path }),
        1 => path().prop_map(|path| Op::Lstat { path }),
        1 => path().prop_map(|path| Op::Readlink { path }),
        1 => path().prop_map(|path| Op::Access { path }),
        2 => proptest::sample::select(DIRS).prop_map(|path| Op::Readdir { path }),
        3 => (path(), path(), rename_flag())
            .prop_map(|(from, to, flag)| Op::Rename { from, to, flag }),
        1 => (path(), path()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => (path(), path()).prop_map(|(target, path)| Op::Symlink { target, path }),
        2 => path().prop_map(|path| Op::Unlink { path }),
        1 => (path(), mode()).prop_map(|(path, mode)| Op::Mkdir { path, mode }),
        1 => path().prop_map(|path| Op::Rmdir { path }),
        1 => (path(), len()).prop_map(|(path, len)| Op::Truncate { path, len }),
        1 => (path(), mode()).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        1 => path().prop_map(|path| Op::Utimes { path }),
        1 => path().prop_map(|path| Op::Times { path }),
        2 => (h(), path(), proptest::sample::select(FOPEN_MODES))
            .prop_map(|(h, path, mode)| Op::Fopen { h, path, mode }),
        1 => (h(), path()).prop_map(|(h, path)| Op::Mkstemp { h, path }),
        1 => (dir_arg(), path(), dir_arg(), path(), rename_flag()).prop_map(
            |(from_dir, from, to_dir, to, flag)| Op::Renameat { from_dir, from, to_dir, to, flag }
        ),
        1 => (
            dir_arg(),
            prop_oneof![4 => path(), 1 => Just(EMPTY_PATH)],
            dir_arg(),
            path(),
            proptest::bool::weighted(0.4),
            proptest::bool::weighted(0.4)
        )
            .prop_map(|(from_dir, from, to_dir, to, follow, empty)| Op::Linkat {
                from_dir,
                from,
                to_dir,
                to,
                follow,
                empty
            }),
        1 => (dir_arg(), path(), proptest::bool::weighted(0.4))
            .prop_map(|(dir, path, removedir)| Op::Unlinkat { dir, path, removedir }),
        1 => proptest::sample::select(CHDIRS).prop_map(|path| Op::Chdir { path }),
        1 => h().prop_map(|h| Op::Fchdir { h }),
        1 => (1u8..5).prop_map(|k| Op::Fork { k }),
        1 => Just(Op::Exec),
    ]
}

/// The shared tree the job starts with (and the bare scratch copy).
#[derive(Clone, Debug)]
struct Tree {
    /// `d` always; `e` sometimes.
    e: bool,
    /// Files among `a`, `b`, `d/a`, `d/b`, with content and mode.
    files: Vec<(&'static str, String, u32)>,
    /// `l`, a symlink to a file, a directory or nothing.
    symlink: Option<&'static str>,
}

fn tree() -> impl Strategy<Value = Tree> {
    let file = |name: &'static str| {
        proptest::option::weighted(
            0.6,
            (
                proptest::collection::vec(proptest::sample::select(&b"ABCDEFGH"[..]), 0..12)
                    .prop_map(|v| String::from_utf8(v).expect("ascii")),
                mode(),
            ),
        )
        .prop_map(move |f| f.map(|(content, mode)| (name, content, mode)))
    };
    (
        any::<bool>(),
        (file("a"), file("b"), file("d/a"), file("d/b")),
        proptest::option::weighted(0.6, proptest::sample::select(&["a", "d", "zz"][..])),
    )
        .prop_map(|(e, (a, b, da, db), symlink)| Tree {
            e,
            files: [a, b, da, db].into_iter().flatten().collect(),
            symlink,
        })
}

impl Tree {
    fn build(&self, root: &Path) {
        std::fs::create_dir_all(root.join("d")).expect("mkdir d");
        if self.e {
            std::fs::create_dir(root.join("e")).expect("mkdir e");
        }
        for (name, content, mode) in &self.files {
            let p = root.join(name);
            std::fs::write(&p, content).expect("write a tree file");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                .expect("chmod a tree file");
        }
        if let Some(target) = self.symlink {
            std::os::unix::fs::symlink(target, root.join("l")).expect("symlink l");
        }
    }
}

/// One worker's part of a case: its index and its script.
#[derive(Clone, Debug)]
struct Worker {
    index: u32,
    ops: Vec<Op>,
}

impl Worker {
    fn script(&self) -> String {
        self.ops.iter().map(|o| format!("{o}\n")).collect()
    }
}

#[derive(Clone, Debug)]
struct Case {
    tree: Tree,
    /// One worker, or several with distinct indices that run at the same
    /// time on the same shared tree.
    workers: Vec<Worker>,
    /// The final tree is listed with readdir, or, when readdir is left
    /// out, probed name by name.
    walk_by_readdir: bool,
    /// The final tree shows symlink targets (read with readlink) unless
    /// readlink is left out.
    walk_reads_links: bool,
    /// Stats show a directory's link count unless `dir-nlink` is left out.
    shows_dir_nlink: bool,
}

impl Case {
    fn ops(&self) -> usize {
        self.workers.iter().map(|w| w.ops.len()).sum()
    }

    /// Every worker's index and script, for a failure message.
    fn scripts(&self) -> String {
        self.workers
            .iter()
            .map(|w| format!("worker {}:\n{}", w.index, w.script()))
            .collect()
    }
}

/// The features excluded in this run: [`KNOWN_BROKEN`], or
/// `MPAUDIT_DIFF_EXCLUDE` when set.
fn excluded() -> Vec<String> {
    match std::env::var("MPAUDIT_DIFF_EXCLUDE") {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Err(_) => KNOWN_BROKEN.iter().map(|(f, _)| (*f).to_owned()).collect(),
    }
}

/// A script without the excluded features.
fn script(excluded: &[String]) -> impl Strategy<Value = Vec<Op>> {
    let excluded = excluded.to_vec();
    let one_mode = excluded.iter().any(|x| x == "open-creat-mode");
    // Left-out operations are dropped, so more are drawn to keep scripts
    // of up to MAX_OPS.
    let drawn = if excluded.is_empty() {
        MAX_OPS
    } else {
        3 * MAX_OPS
    };
    proptest::collection::vec(op(), 1..drawn).prop_map(move |ops| {
        ops.into_iter()
            .filter_map(|mut o| {
                let out = |f: &str| excluded.iter().any(|x| x == f);
                // An open whose flags are left out is first mended (EXCL
                // dropped, CREAT and TRUNC added) rather than dropped, so
                // that writes stay frequent.
                if let Op::Open { flags, mode, .. } = &mut o {
                    if out("open-excl") {
                        flags.excl = false;
                    }
                    let writes = flags.access != Access::Read || flags.trunc;
                    if out("open-write-nocreat") && writes && !flags.creat {
                        flags.creat = true;
                    }
                    if out("open-creat-keep") && flags.creat && !flags.trunc {
                        flags.trunc = true;
                    }
                    if one_mode {
                        *mode = 0o644;
                    }
                }
                (!o.features().iter().any(|f| out(f))).then_some(o)
            })
            .take(MAX_OPS)
            .collect()
    })
}

/// Cases of `workers` scripts (one worker: index 0–3; several: distinct
/// indices 0–7) over one initial tree. Shrinking drops whole scripts down
/// to the least number of workers, and operations from each.
fn case(
    excluded: Vec<String>,
    workers: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Case> {
    // Without missing parents, `e` is always there (`x` never is).
    let e_always = excluded.iter().any(|x| x == "path-missing-parent");
    // Without the mode of an existing file, every file and every open's
    // creation mode is 0644, so a recreated file cannot show another mode.
    let one_mode = excluded.iter().any(|x| x == "open-creat-mode");
    let walk_by_readdir = !excluded.iter().any(|x| x == "readdir");
    let walk_reads_links = !excluded.iter().any(|x| x == "readlink");
    let shows_dir_nlink = !excluded.iter().any(|x| x == "dir-nlink");
    let indices: Vec<u32> = if *workers.end() == 1 {
        (0..4).collect()
    } else {
        (0..8).collect()
    };
    (
        tree(),
        proptest::collection::vec(script(&excluded), workers),
        proptest::sample::select(indices.clone()),
        Just(indices).prop_shuffle(),
    )
        .prop_map(move |(mut tree, scripts, one, distinct)| {
            tree.e |= e_always;
            if one_mode {
                for f in &mut tree.files {
                    f.2 = 0o644;
                }
            }
            let single = scripts.len() == 1;
            Case {
                tree,
                workers: scripts
                    .into_iter()
                    .zip(distinct)
                    .map(|(ops, index)| Worker {
                        index: if single { one } else { index },
                        ops,
                    })
                    .collect(),
                walk_by_readdir,
                walk_reads_links,
                shows_dir_nlink,
            }
        })
}

/// One run of the executor: exit status, output, error output.
#[derive(Debug, PartialEq)]
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// How the second run of a case is made (the first is always bare).
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// Bare again in another scratch copy: proves the executor and the
    /// comparison deterministic.
    Bare,
    /// Under the library as worker k with `MPAUDIT_ACTION=redirect`.
    Redirect,
    /// A static executor under the runner's seccomp supervisor, `mpaudit
    /// exec --action redirect` (one worker; its output only: the runner's
    /// report and exit status are its own), without the features the
    /// supervisor does not emulate ([`SUPERVISOR_GAPS`]).
    Supervised,
    /// Self-tests of the comparison, which must fail: bare again, in a
    /// tree with an extra file `c`...
    SelfTestExtraFile,
    /// ... and bare in the job directory itself, with the check that the
    /// shared tree is untouched.
    SelfTestInPlace,
}

/// What a passing case showed: how many writes the library redirected
/// (so that a run where nothing was redirected cannot pass for a proof),
/// and whether two workers' file operations overlapped in time.
#[derive(Debug)]
struct Outcome {
    redirected: usize,
    overlapped: bool,
}

/// A pipe whose write end, once closed, lets every executor holding the
/// read end as its standard input start (`OPS_EXEC_BARRIER`).
fn start_gate() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Runs the commands at the same time; with `barrier`, none starts its
/// script before all of them have been started.
fn execute_all(cmds: Vec<Command>, barrier: bool) -> Vec<Run> {
    let gate = barrier.then(start_gate);
    let children: Vec<_> = cmds
        .into_iter()
        .map(|mut c| {
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            match &gate {
                Some((read_end, _)) => {
                    c.stdin(Stdio::from(read_end.try_clone().expect("dup the gate")))
                        .env("OPS_EXEC_BARRIER", "1");
                }
                None => {
                    c.stdin(Stdio::null());
                }
            }
            spawn_retrying_busy_text(&mut c)
        })
        .collect();
    // The last write end closes: every executor reads end-of-file at once.
    drop(gate);
    children
        .into_iter()
        .map(|child| {
            let out = wait_with_deadline(child, DEADLINE);
            Run {
                status: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .collect()
}

/// Whether the file operations of two workers overlapped in time, from
/// the access events' timestamps.
fn workers_overlapped(events: &[serde_json::Value]) -> bool {
    let mut spans: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for e in events.iter().filter(|e| e["kind"] == "access") {
        let (Some(w), Some(ts)) = (e["worker"].as_u64(), e["ts"].as_u64()) else {
            continue;
        };
        let span = spans.entry(w).or_insert((ts, ts));
        span.0 = span.0.min(ts);
        span.1 = span.1.max(ts);
    }
    let spans: Vec<_> = spans.into_values().collect();
    spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans[i + 1..].iter().any(|b| a.0 <= b.1 && b.0 <= a.1))
}

/// Runs one case in a fresh directory below `base`: each worker's script
/// bare in its own scratch copy, then all of them at once as their workers
/// in the job directory (or the variant's second run); `Err` says how the
/// runs differ.
fn compare(base: &Path, n: usize, case: &Case, variant: Variant) -> Result<Outcome, String> {
    let supervised = variant == Variant::Supervised;
    let exec = fixture(if supervised {
        "ops_exec_static"
    } else {
        "ops_exec"
    });
    let dir = base.join(format!("case-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("case dir");
    let walk = if case.walk_by_readdir {
        "readdir"
    } else {
        "probe"
    };
    let executor = |script: &Path, cwd: &Path| {
        let mut c = Command::new(&exec);
        c.arg(script)
            .current_dir(cwd)
            .env("OPS_EXEC_WALK", walk)
            .env("OPS_EXEC_NAMES", NAMES)
            .env_remove("OPS_EXEC_START_CWD");
        if !case.walk_reads_links {
            c.env("OPS_EXEC_NO_READLINK", "1");
        }
        if !case.shows_dir_nlink {
            c.env("OPS_EXEC_NO_DIR_NLINK", "1");
        }
        c
    };
    let scripts: Vec<_> = case
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let script = dir.join(format!("script-{i}.txt"));
            std::fs::write(&script, w.script()).expect("write the script");
            script
        })
        .collect();

    let bare_runs = scripts
        .iter()
        .enumerate()
        .map(|(i, script)| {
            let bare_dir = dir.join(format!("bare-{i}"));
            case.tree.build(&bare_dir);
            executor(script, &bare_dir)
        })
        .collect();
    let expected = execute_all(bare_runs, false);

    let job = dir.join("job");
    case.tree.build(&job);
    if variant == Variant::SelfTestExtraFile {
        std::fs::write(job.join("c"), "X").expect("write the extra file");
    }
    let before = shared_snapshot(&job);
    let second_runs = case
        .workers
        .iter()
        .zip(&scripts)
        .enumerate()
        .map(|(i, (w, script))| {
            if variant == Variant::Bare {
                let again = dir.join(format!("again-{i}"));
                case.tree.build(&again);
                return executor(script, &again);
            }
            if supervised {
                let mut c = redirecting_runner(&job, &dir);
                c.arg("--")
                    .arg(&exec)
                    .arg(script)
                    .envs(
                        executor(script, &job)
                            .get_envs()
                            .filter_map(|(k, v)| Some((k, v?))),
                    )
                    .env_remove("OPS_EXEC_START_CWD");
                return c;
            }
            let mut c = executor(script, &job);
            if variant == Variant::Redirect {
                c.env("LD_PRELOAD", lib())
                    .env("MPAUDIT_ACTION", "redirect")
                    .env("MPAUDIT_JOB_DIR", &job)
                    // Outside the job directory, so that the worker's view
                    // of its tree holds exactly what a bare run's does. All
                    // workers share them, as in a real job.
                    .env("MPAUDIT_WORKERS_DIR", dir.join("workers"))
                    .env("MPAUDIT_LOG_DIR", dir.join("logs"))
                    .env("MPAUDIT_WORKER", w.index.to_string())
                    .env_remove("MPAUDIT_FORK_WORKERS")
                    .env_remove("MPAUDIT_ROOT_PID");
                for v in mpaudit_core::launcher::RANK_VARIABLES {
                    c.env_remove(v);
                }
            }
            c
        })
        .collect();
    let got = execute_all(second_runs, case.workers.len() > 1);

    let mut problems = Vec::new();
    for ((w, expected), got) in case.workers.iter().zip(&expected).zip(&got) {
        // The runner's exit status and report are its own.
        let differs = if supervised {
            got.stdout != expected.stdout
        } else {
            got != expected
        };
        if differs {
            problems.push(format!(
                "worker {}: results differ (first difference: {})\n--- bare ---\n{}{}--- {} ---\n{}{}",
                w.index,
                first_difference(&expected.stdout, &got.stdout),
                expected.stdout,
                status_and_stderr(expected),
                match variant {
                    Variant::Redirect => "redirect",
                    Variant::Supervised => "supervised",
                    _ => "bare again",
                },
                got.stdout,
                status_and_stderr(got),
            ));
        }
    }
    if matches!(
        variant,
        Variant::Redirect | Variant::Supervised | Variant::SelfTestInPlace
    ) {
        let after = shared_snapshot(&job);
        if after != before {
            problems.push(format!(
                "the shared job tree changed\n--- before ---\n{}\n--- after ---\n{}",
                before.join("\n"),
                after.join("\n")
            ));
        }
    }
    if problems.is_empty() {
        let events = read_events(&dir.join("logs")).0;
        let redirected = events
            .iter()
            .filter(|e| e["action"] == "redirected")
            .count();
        let overlapped = workers_overlapped(&events);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Outcome {
            redirected,
            overlapped,
        })
    } else {
        Err(problems.join("\n"))
    }
}

fn first_difference(a: &str, b: &str) -> String {
    let (mut la, mut lb) = (a.lines(), b.lines());
    loop {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (None, None) => return "exit status or error output".into(),
            (x, y) => return format!("{:?} vs {:?}", x.unwrap_or("<end>"), y.unwrap_or("<end>")),
        }
    }
}

fn status_and_stderr(r: &Run) -> String {
    format!("(exit {:?}) stderr: {:?}\n", r.status, r.stderr)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// How many workers a case has, and the knob that says how many cases.
#[derive(Clone, Copy, PartialEq)]
enum Workers {
    /// One worker (`MPAUDIT_DIFF_CASES`, default 300).
    One,
    /// 2–4 workers at once (`MPAUDIT_DIFF_MULTI_CASES`, default 150).
    Several,
    /// One worker under the supervisor (`MPAUDIT_DIFF_SUPERVISED_CASES`,
    /// default 100).
    Supervised,
}

/// Runs the property over the configured number of cases from a printed
/// seed and fails with the minimal case found.
fn check(dir: &TestDir, variant: Variant, workers: Workers) {
    let (cases, range) = match workers {
        Workers::One => (env_u64("MPAUDIT_DIFF_CASES").unwrap_or(300), 1..=1),
        Workers::Several => (env_u64("MPAUDIT_DIFF_MULTI_CASES").unwrap_or(150), 2..=4),
        Workers::Supervised => (
            env_u64("MPAUDIT_DIFF_SUPERVISED_CASES").unwrap_or(100),
            1..=1,
        ),
    };
    let cases = cases as u32;
    let seed = env_u64("MPAUDIT_DIFF_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    // Bare against bare must agree on everything: nothing is left out.
    let excluded = match variant {
        Variant::Redirect => excluded(),
        Variant::Supervised => {
            let mut x = excluded();
            x.extend(SUPERVISOR_GAPS.iter().map(|(f, _)| (*f).to_owned()));
            x
        }
        _ => Vec::new(),
    };
    eprintln!(
        "differential: {cases} cases of {range:?} workers, MPAUDIT_DIFF_SEED={seed}, \
         excluded features: {excluded:?}"
    );
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let counter = std::cell::Cell::new(0usize);
    let (ops, redirected, overlapped) = (
        std::cell::Cell::new(0),
        std::cell::Cell::new(0),
        std::cell::Cell::new(0),
    );
    let result = runner.run(&case(excluded, range), |c| {
        let n = counter.get();
        counter.set(n + 1);
        let r = compare(&dir.path, n, &c, variant).map_err(TestCaseError::fail)?;
        ops.set(ops.get() + c.ops());
        redirected.set(redirected.get() + r.redirected);
        overlapped.set(overlapped.get() + usize::from(r.overlapped));
        Ok(())
    });
    match result {
        Ok(()) => {
            eprintln!(
                "differential: {cases} cases passed, {} operations, {} redirected writes{}",
                ops.get(),
                redirected.get(),
                if workers == Workers::Several {
                    format!(
                        ", {} cases where two workers' operations overlapped in time",
                        overlapped.get()
                    )
                } else {
                    String::new()
                }
            );
            if matches!(variant, Variant::Redirect | Variant::Supervised) && cases >= 50 {
                assert!(
                    redirected.get() > 0,
                    "no write was redirected in {cases} cases: the test proved nothing"
                );
                // The start barrier makes the workers race; a run where
                // none did proved nothing about concurrency.
                assert!(
                    workers != Workers::Several || overlapped.get() > 0,
                    "no two workers overlapped in {cases} cases: the test proved no isolation \
                     under concurrency"
                );
            }
        }
        Err(TestError::Fail(_, minimal)) => {
            // Run the minimal case once more, kept on disk, for the message.
            let why = compare(&dir.path, usize::MAX, &minimal, variant)
                .err()
                .unwrap_or_else(|| "the minimal case passed when re-run (nondeterminism?)".into());
            panic!(
                "differential test failed (reproduce: MPAUDIT_DIFF_SEED={seed})\n\
                 initial tree: {:?}\nfinal tree by readdir: {}, with link targets: {}\n\
                 minimal scripts:\n{}\n{why}\n(case dir {})",
                minimal.tree,
                minimal.walk_by_readdir,
                minimal.walk_reads_links,
                minimal.scripts(),
                dir.path.join(format!("case-{}", usize::MAX)).display()
            );
        }
        Err(e) => panic!("differential test aborted: {e} (MPAUDIT_DIFF_SEED={seed})"),
    }
}

e2e!(differential_bare_runs_agree_with_each_other, |dir| {
    check(&dir, Variant::Bare, Workers::One);
});

e2e!(differential_redirect_behaves_like_writing_in_place, |dir| {
    check(&dir, Variant::Redirect, Workers::One);
});

e2e!(
    differential_supervised_redirect_behaves_like_writing_in_place,
    |dir| {
        check(&dir, Variant::Supervised, Workers::Supervised);
    }
);

e2e!(differential_concurrent_workers_are_isolated, |dir| {
    check(&dir, Variant::Redirect, Workers::Several);
});

/// A case of one script over a tree with `a` = "A" and `d`.
fn fixed_case(ops: Vec<Op>) -> Case {
    Case {
        tree: Tree {
            e: false,
            files: vec![("a", "A".into(), 0o644)],
            symlink: None,
        },
        workers: vec![Worker { index: 0, ops }],
        walk_by_readdir: true,
        walk_reads_links: true,
        shows_dir_nlink: true,
    }
}

e2e!(differential_comparison_notices_a_different_result, |dir| {
    let case = fixed_case(vec![Op::Stat { path: "c" }]);
    let why = compare(&dir.path, 0, &case, Variant::SelfTestExtraFile)
        .expect_err("a run over another tree must differ");
    assert!(
        why.contains("results differ") && why.contains("0 stat c -> err ENOENT"),
        "{why}"
    );
});

e2e!(
    differential_comparison_notices_a_write_to_the_shared_tree,
    |dir| {
        let write_a = OpenFlags {
            access: Access::Write,
            creat: true,
            excl: false,
            trunc: true,
            append: false,
            directory: false,
            nofollow: false,
            tmpfile: false,
            path: false,
        };
        let case = fixed_case(vec![
            Op::Open {
                h: 0,
                dir: None,
                path: "a",
                flags: write_a,
                mode: 0o644,
            },
            Op::Write {
                h: 0,
                data: "x".into(),
            },
        ]);
        let why = compare(&dir.path, 0, &case, Variant::SelfTestInPlace)
            .expect_err("writing the job directory in place must be noticed");
        assert!(
            why.contains("the shared job tree changed") && !why.contains("results differ"),
            "{why}"
        );
    }
);

e2e!(
    differential_comparison_judges_each_worker_by_its_own_script,
    |dir| {
        // Two workers over a tree with an extra file `c` that their bare
        // runs do not have: each one's difference is reported, against its
        // own script (worker 2's first line, worker 0's final tree).
        let mut case = fixed_case(vec![Op::Stat { path: "a" }]);
        case.workers.push(Worker {
            index: 2,
            ops: vec![Op::Stat { path: "c" }],
        });
        let why = compare(&dir.path, 0, &case, Variant::SelfTestExtraFile)
            .expect_err("runs over another tree must differ");
        assert!(
            why.contains("worker 2: results differ (first difference: \"0 stat c -> err ENOENT\"")
                && why.contains(
                    "worker 0: results differ (first difference: \"tree ./d: ok d mode=755 nlink=2\" \
                     vs \"tree ./c: ok f size=1 mode=644 nlink=1\")"
                ),
            "{why}"
        );
    }
);
