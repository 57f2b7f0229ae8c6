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
//! Knobs (environment): `MPAUDIT_DIFF_CASES` (default 300),
//! `MPAUDIT_DIFF_SEED` (a u64; default random, always printed),
//! `MPAUDIT_DIFF_EXCLUDE` (comma-separated features replacing
//! [`KNOWN_BROKEN`]; empty: exclude nothing).

use mpaudit_tests::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Operation features the CI run leaves out because today's redirect gets
/// them wrong, each with the reason (the minimal failing script is in
/// docs/differential.md). Remove an entry once its fix has landed; run
/// with `MPAUDIT_DIFF_EXCLUDE=` to see everything that still fails.
const KNOWN_BROKEN: &[(&str, &str)] = &[
    (
        "rmdir",
        "rmdir of a shared file succeeds (bare: ENOTDIR; `rmdir @/d/b`)",
    ),
    (
        "symlink",
        "symlink onto an existing shared directory succeeds (bare: EEXIST; \
         `symlink a d`)",
    ),
    (
        "file-write-on-shared-dir",
        "file writes aimed at a shared directory do not always fail as in \
         place (the worker directory has no `d` to collide with)",
    ),
    (
        "rename",
        "renaming a directory onto a shared file succeeds (bare: ENOTDIR; \
         `rename d a`)",
    ),
    (
        "rename-noreplace",
        "with a missing source and an existing target, RENAME_NOREPLACE \
         gives EEXIST (bare: ENOENT): the target is checked first",
    ),
    (
        "rename-exchange",
        "RENAME_EXCHANGE of a shared symlink and a shared directory fails \
         with ENOENT (`rename l d EXCHANGE`)",
    ),
    (
        "link",
        "link of a shared directory gives ENOENT (bare: EPERM; `link d a`)",
    ),
];

/// Names the operations use: a few files and directories, nested one level,
/// a symlink, a missing parent, `..`, absolute spellings (`@` is the
/// working directory), so that operations collide often.
const PATHS: &[&str] = &[
    "a", "b", "c", "d", "e", "l", "d/a", "d/b", "e/a", "l/a", "x/a", "d/../a", "@/a", "@/d/b",
];

/// The paths in [`PATHS`] that can name a directory of the initial tree
/// (`l` may point to `d`).
const SHARED_DIRS: &[&str] = &["d", "e", "l", "@/d", "d/.."];

/// Directories to list: the paths above and the working directory.
const DIRS: &[&str] = &[".", "d", "e", "l", "x", "d/..", "@/d"];

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
    )
        .prop_map(
            |(access, creat, excl, trunc, append, directory, nofollow)| OpenFlags {
                access,
                creat,
                excl,
                trunc,
                append,
                directory,
                nofollow,
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
            Op::Rename { from, to, flag } => write!(
                f,
                "rename {from} {to} {}",
                match flag {
                    RenameFlag::Plain => "0",
                    RenameFlag::NoReplace => "NOREPLACE",
                    RenameFlag::Exchange => "EXCHANGE",
                }
            ),
            Op::Link { from, to } => write!(f, "link {from} {to}"),
            Op::Symlink { target, path } => write!(f, "symlink {target} {path}"),
            Op::Unlink { path } => write!(f, "unlink {path}"),
            Op::Mkdir { path, mode } => write!(f, "mkdir {path} {mode:o}"),
            Op::Rmdir { path } => write!(f, "rmdir {path}"),
            Op::Truncate { path, len } => write!(f, "truncate {path} {len}"),
            Op::Chmod { path, mode } => write!(f, "chmod {path} {mode:o}"),
            Op::Fork { k } => write!(f, "fork {k}"),
            Op::Exec => write!(f, "exec"),
        }
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
                if flags.access == Access::Read && !flags.creat && !flags.trunc {
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
                paths.push(path);
            }
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
                v.push(match flag {
                    RenameFlag::Plain => "rename",
                    RenameFlag::NoReplace => "rename-noreplace",
                    RenameFlag::Exchange => "rename-exchange",
                });
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
            Op::Symlink { path, .. }
            | Op::Mkdir { path, .. }
            | Op::Truncate { path, .. }
            | Op::Unlink { path } => Some(*path),
            Op::Link { to, .. } => Some(*to),
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
        }
        v
    }
}

fn op() -> impl Strategy<Value = Op> {
    let h = || 0u8..4;
    let off = || 0u32..24;
    let len = || 0u32..24;
    prop_oneof![
        6 => (h(), proptest::option::weighted(0.15, h()), path(), open_flags(), mode())
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
        3 => (
            path(),
            path(),
            prop_oneof![
                Just(RenameFlag::Plain),
                Just(RenameFlag::NoReplace),
                Just(RenameFlag::Exchange)
            ]
        )
            .prop_map(|(from, to, flag)| Op::Rename { from, to, flag }),
        1 => (path(), path()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => (path(), path()).prop_map(|(target, path)| Op::Symlink { target, path }),
        2 => path().prop_map(|path| Op::Unlink { path }),
        1 => (path(), mode()).prop_map(|(path, mode)| Op::Mkdir { path, mode }),
        1 => path().prop_map(|path| Op::Rmdir { path }),
        1 => (path(), len()).prop_map(|(path, len)| Op::Truncate { path, len }),
        1 => (path(), mode()).prop_map(|(path, mode)| Op::Chmod { path, mode }),
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

#[derive(Clone, Debug)]
struct Case {
    tree: Tree,
    ops: Vec<Op>,
    worker: u32,
    /// The final tree is listed with readdir, or, when readdir is left
    /// out, probed name by name.
    walk_by_readdir: bool,
    /// The final tree shows symlink targets (read with readlink) unless
    /// readlink is left out.
    walk_reads_links: bool,
}

impl Case {
    fn script(&self) -> String {
        self.ops.iter().map(|o| format!("{o}\n")).collect()
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

fn case(excluded: Vec<String>) -> impl Strategy<Value = Case> {
    // Without missing parents, `e` is always there (`x` never is).
    let e_always = excluded.iter().any(|x| x == "path-missing-parent");
    // Without the mode of an existing file, every file and every open's
    // creation mode is 0644, so a recreated file cannot show another mode.
    let one_mode = excluded.iter().any(|x| x == "open-creat-mode");
    let walk_by_readdir = !excluded.iter().any(|x| x == "readdir");
    let walk_reads_links = !excluded.iter().any(|x| x == "readlink");
    // Left-out operations are dropped, so more are drawn to keep scripts
    // of up to MAX_OPS.
    let drawn = if excluded.is_empty() {
        MAX_OPS
    } else {
        3 * MAX_OPS
    };
    (tree(), proptest::collection::vec(op(), 1..drawn), 0u32..4).prop_map(
        move |(mut tree, ops, worker)| Case {
            tree: {
                tree.e |= e_always;
                if one_mode {
                    for f in &mut tree.files {
                        f.2 = 0o644;
                    }
                }
                tree
            },
            ops: ops
                .into_iter()
                .filter_map(|mut o| {
                    let out = |f: &str| excluded.iter().any(|x| x == f);
                    // An open whose flags are left out is first mended
                    // (EXCL dropped, CREAT and TRUNC added) rather than
                    // dropped, so that writes stay frequent.
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
                .collect(),
            worker,
            walk_by_readdir,
            walk_reads_links,
        },
    )
}

/// One run of the executor: exit status, output, error output.
#[derive(Debug, PartialEq)]
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn execute(mut cmd: Command) -> Run {
    let out = run(&mut cmd, DEADLINE);
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// How the second run of a case is made (the first is always bare).
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// Bare again in another scratch copy: proves the executor and the
    /// comparison deterministic.
    Bare,
    /// Under the library as worker k with `MPAUDIT_ACTION=redirect`.
    Redirect,
    /// Self-tests of the comparison, which must fail: bare again, in a
    /// tree with an extra file `c`...
    SelfTestExtraFile,
    /// ... and bare in the job directory itself, with the check that the
    /// shared tree is untouched.
    SelfTestInPlace,
}

/// Runs one case in a fresh directory below `base`; `Ok` holds how many
/// writes the library redirected (so that a run where nothing was
/// redirected cannot pass for a proof), `Err` says how the two runs differ.
fn compare(base: &Path, n: usize, case: &Case, variant: Variant) -> Result<usize, String> {
    let exec = fixture("ops_exec");
    let dir = base.join(format!("case-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("case dir");
    let script = dir.join("script.txt");
    std::fs::write(&script, case.script()).expect("write the script");

    let bare_dir = dir.join("bare");
    case.tree.build(&bare_dir);
    let walk = if case.walk_by_readdir {
        "readdir"
    } else {
        "probe"
    };
    let walk_env = |c: &mut Command| {
        c.env("OPS_EXEC_WALK", walk).env("OPS_EXEC_NAMES", NAMES);
        if !case.walk_reads_links {
            c.env("OPS_EXEC_NO_READLINK", "1");
        }
    };
    let mut bare = Command::new(&exec);
    bare.arg(&script).current_dir(&bare_dir);
    walk_env(&mut bare);
    let expected = execute(bare);

    let job = dir.join("job");
    case.tree.build(&job);
    if variant == Variant::SelfTestExtraFile {
        std::fs::write(job.join("c"), "X").expect("write the extra file");
    }
    let before = shared_snapshot(&job);
    let mut second = Command::new(&exec);
    second.arg(&script).current_dir(&job);
    walk_env(&mut second);
    if variant == Variant::Redirect {
        second
            .env("LD_PRELOAD", lib())
            .env("MPAUDIT_ACTION", "redirect")
            .env("MPAUDIT_JOB_DIR", &job)
            // Outside the job directory, so that the worker's view of its
            // tree holds exactly what a bare run's does.
            .env("MPAUDIT_WORKERS_DIR", dir.join("workers"))
            .env("MPAUDIT_LOG_DIR", dir.join("logs"))
            .env("MPAUDIT_WORKER", case.worker.to_string())
            .env_remove("MPAUDIT_FORK_WORKERS")
            .env_remove("MPAUDIT_ROOT_PID");
        for v in mpaudit_core::launcher::RANK_VARIABLES {
            second.env_remove(v);
        }
    }
    let got = execute(second);

    let mut problems = Vec::new();
    if got != expected {
        problems.push(format!(
            "results differ (first difference: {})\n--- bare ---\n{}{}--- {} ---\n{}{}",
            first_difference(&expected.stdout, &got.stdout),
            expected.stdout,
            status_and_stderr(&expected),
            match variant {
                Variant::Redirect => "redirect",
                _ => "bare again",
            },
            got.stdout,
            status_and_stderr(&got),
        ));
    }
    if matches!(variant, Variant::Redirect | Variant::SelfTestInPlace) {
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
        let redirected = read_events(&dir.join("logs"))
            .0
            .iter()
            .filter(|e| e["action"] == "redirected")
            .count();
        let _ = std::fs::remove_dir_all(&dir);
        Ok(redirected)
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

/// Runs the property over `MPAUDIT_DIFF_CASES` cases from a printed seed
/// and fails with the minimal script found.
fn check(dir: &TestDir, variant: Variant) {
    let cases = env_u64("MPAUDIT_DIFF_CASES").unwrap_or(300) as u32;
    let seed = env_u64("MPAUDIT_DIFF_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    // Bare against bare must agree on everything: nothing is left out.
    let excluded = match variant {
        Variant::Redirect => excluded(),
        _ => Vec::new(),
    };
    eprintln!(
        "differential: {cases} cases, MPAUDIT_DIFF_SEED={seed}, excluded features: {excluded:?}"
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
    let (ops, redirected) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let result = runner.run(&case(excluded), |c| {
        let n = counter.get();
        counter.set(n + 1);
        let r = compare(&dir.path, n, &c, variant).map_err(TestCaseError::fail)?;
        ops.set(ops.get() + c.ops.len());
        redirected.set(redirected.get() + r);
        Ok(())
    });
    match result {
        Ok(()) => {
            eprintln!(
                "differential: {cases} cases passed, {} operations, {} redirected writes",
                ops.get(),
                redirected.get()
            );
            if variant == Variant::Redirect && cases >= 50 {
                assert!(
                    redirected.get() > 0,
                    "no write was redirected in {cases} cases: the test proved nothing"
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
                 initial tree: {:?}\nworker: {}, final tree by readdir: {}, with link targets: {}\n\
                 minimal script:\n{}\n{why}\n(case dir {})",
                minimal.tree,
                minimal.worker,
                minimal.walk_by_readdir,
                minimal.walk_reads_links,
                minimal.script(),
                dir.path.join(format!("case-{}", usize::MAX)).display()
            );
        }
        Err(e) => panic!("differential test aborted: {e} (MPAUDIT_DIFF_SEED={seed})"),
    }
}

e2e!(differential_bare_runs_agree_with_each_other, |dir| {
    check(&dir, Variant::Bare);
});

e2e!(differential_redirect_behaves_like_writing_in_place, |dir| {
    check(&dir, Variant::Redirect);
});

/// A case of one script over a tree with `a` = "A" and `d`.
fn fixed_case(ops: Vec<Op>) -> Case {
    Case {
        tree: Tree {
            e: false,
            files: vec![("a", "A".into(), 0o644)],
            symlink: None,
        },
        ops,
        worker: 0,
        walk_by_readdir: true,
        walk_reads_links: true,
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
