//! The end-to-end harness: builds the artifacts it tests (never assuming an
//! earlier build), compiles the fixture programs, gives each test its own
//! directory, and reads event logs back.

pub mod components;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the harness builds: its own target dir, so the nested cargo never
/// waits for the lock of the outer `cargo test`.
fn harness_target() -> PathBuf {
    workspace_root().join("target").join("e2e")
}

pub struct Artifacts {
    pub lib: PathBuf,
    pub runner: PathBuf,
}

/// Builds libmpaudit.so and the mpaudit binary once per test run
/// (`cargo build --message-format=json`, reading the artifact paths).
/// `mpaudit exec -q --action redirect` in `job`, its workers, log and
/// merge directories in `outside` (so that the job directory holds only
/// the job's tree and the merge leaves it alone), without the audit
/// environment of the test's own; the caller adds `--` and the command.
pub fn redirecting_runner(job: &Path, outside: &Path) -> Command {
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(job)
        .args(["exec", "-q", "--action", "redirect", "--workers-dir"])
        .arg(outside.join("workers"))
        .arg("--log-dir")
        .arg(outside.join("logs"))
        .arg("--merge-dir")
        .arg(outside.join("merged"))
        .env_remove("LD_PRELOAD")
        .env_remove("MPAUDIT_WORKER");
    for v in mpaudit_core::launcher::RANK_VARIABLES {
        c.env_remove(v);
    }
    c
}

pub fn artifacts() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| build_artifacts(false, &harness_target()))
}

/// The same artifacts built with `--release`, in their own target dir
/// (target/bench), for the overhead benchmark (src/bin/mpaudit-bench.rs).
pub fn artifacts_release() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| build_artifacts(true, &workspace_root().join("target").join("bench")))
}

fn build_artifacts(release: bool, target: &Path) -> Artifacts {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "-p",
        "mpaudit-interpose",
        "-p",
        "mpaudit-runner",
        "--message-format=json",
    ]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .env("CARGO_TARGET_DIR", target)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "nested cargo build failed");
    let mut lib = None;
    let mut runner = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(exe) = msg["executable"].as_str() {
            if exe.ends_with("/mpaudit") {
                runner = Some(PathBuf::from(exe));
            }
        }
        for f in msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if f.ends_with("/libmpaudit.so") {
                lib = Some(PathBuf::from(f));
            }
        }
    }
    Artifacts {
        lib: lib.expect("cargo reported no libmpaudit.so"),
        runner: runner.expect("cargo reported no mpaudit binary"),
    }
}

pub fn lib() -> &'static Path {
    &artifacts().lib
}

/// Compiles a fixture once per run; returns the output path. `kind` picks
/// the compiler and flags.
pub fn fixture(name: &str) -> PathBuf {
    // Dependencies first: the map's lock is not reentrant.
    let writer_lib = (name == "writer_main").then(|| fixture("libfixture_writer.so"));
    let jit_lib = (name == "jit_main").then(|| fixture("libjit_writer.so"));
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> =
        OnceLock::new();
    let map = BUILT.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(name) {
        return p.clone();
    }
    let src = workspace_root().join("tests/fixtures");
    let dir = harness_target().join("fixtures");
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let out = dir.join(name);
    let mut cmd = match name {
        "probe" => cc(&["-O0", "-g"], &src.join("probe.c"), &out, &["-lpthread"]),
        "probe-fortified" => cc(
            &["-O2", "-D_FORTIFY_SOURCE=2"],
            &src.join("probe.c"),
            &out,
            &["-lpthread"],
        ),
        "libfixture_writer.so" => cc(
            &["-shared", "-fPIC", "-O1"],
            &src.join("fixture_writer.c"),
            &out,
            &[],
        ),
        "writer_main" => {
            let lib = writer_lib.expect("built above");
            let libdir = lib
                .parent()
                .expect("dir")
                .to_str()
                .expect("utf-8")
                .to_owned();
            cc(
                &["-O1"],
                &src.join("writer_main.c"),
                &out,
                &[
                    &format!("-L{libdir}"),
                    "-lfixture_writer",
                    &format!("-Wl,-rpath,{libdir}"),
                ],
            )
        }
        "libcomp_registered.so" | "libcomp_legacy.so" => {
            let func = if name.contains("registered") {
                "-DFUNC=registered_write"
            } else {
                "-DFUNC=legacy_write"
            };
            cc(
                &["-shared", "-fPIC", "-O1", func],
                &src.join("component.c"),
                &out,
                &[],
            )
        }
        "host_safety" => cc(&["-O1"], &src.join("host_safety.c"), &out, &["-lpthread"]),
        "static_writer" => cc(&["-static", "-O1"], &src.join("static_writer.c"), &out, &[]),
        "dlopen_locks" => cc(&["-O1"], &src.join("dlopen_locks.c"), &out, &["-ldl"]),
        "hidden_main" => cc(&["-O1"], &src.join("hidden_main.c"), &out, &["-ldl"]),
        "libctor_thread.so" => cc(
            &["-shared", "-fPIC", "-O1"],
            &src.join("ctor_thread_lib.c"),
            &out,
            &["-lpthread"],
        ),
        "libhidden_writers.so" => cc(
            &["-shared", "-fPIC", "-O0", "-g", "-fvisibility=hidden"],
            &src.join("hidden_writers.c"),
            &out,
            &[],
        ),
        "static_calls" => cc(&["-static", "-O1"], &src.join("static_calls.c"), &out, &[]),
        "static_failing" => cc(
            &["-static", "-O1"],
            &src.join("static_failing.c"),
            &out,
            &[],
        ),
        "static_append" => cc(&["-static", "-O1"], &src.join("static_append.c"), &out, &[]),
        "rename_race" => cc(&["-O1"], &src.join("rename_race.c"), &out, &["-lpthread"]),
        "fill_race" => cc(&["-O1"], &src.join("fill_race.c"), &out, &["-lpthread"]),
        "unshared_files" => cc(
            &["-O1", "-Wall"],
            &src.join("unshared_files.c"),
            &out,
            &["-lpthread"],
        ),
        "sigchld_exec" => cc(&["-O1"], &src.join("sigchld_exec.c"), &out, &[]),
        "static_spawned" => cc(
            &["-static", "-O1"],
            &src.join("static_spawned.c"),
            &out,
            &[],
        ),
        "spawner" => cc(&["-O1", "-Wall"], &src.join("spawner.c"), &out, &[]),
        "static_loops" => cc(&["-static", "-O2"], &src.join("static_loops.c"), &out, &[]),
        "static_redirect" => cc(
            &["-static", "-O1"],
            &src.join("static_redirect.c"),
            &out,
            &[],
        ),
        "static_table" => cc(&["-static", "-O1"], &src.join("static_table.c"), &out, &[]),
        "static_i386" => cc(
            &["-static", "-no-pie", "-O1"],
            &src.join("static_i386.c"),
            &out,
            &[],
        ),
        "static_race" => cc(
            &["-static", "-O1"],
            &src.join("static_race.c"),
            &out,
            &["-lpthread"],
        ),
        "uring_writer" => cc(&["-O1"], &src.join("uring_writer.c"), &out, &["-luring"]),
        "go_static" | "go_cgo" => {
            let scratch = harness_target().join("go");
            let mut c = Command::new("go");
            c.current_dir(src.join("go_writer"))
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .env("GOCACHE", scratch.join("cache"))
                .env("GOPATH", scratch.join("path"))
                .env("GOFLAGS", "-mod=mod")
                .env("GO111MODULE", "on")
                .env("CGO_ENABLED", if name == "go_cgo" { "1" } else { "0" });
            c
        }
        "small_stacks"
        | "errno_after_success"
        | "fork_threads"
        | "address_space_limit"
        | "libc_calls" => cc(
            &["-O1"],
            &src.join(format!("{name}.c")),
            &out,
            &["-lpthread"],
        ),
        "redirect_ops" => cc(&["-O1"], &src.join("redirect_ops.c"), &out, &[]),
        "listings" => cc(&["-O1"], &src.join("listings.c"), &out, &[]),
        "components_main" => cc(&["-O1"], &src.join("components_main.c"), &out, &["-ldl"]),
        "abi_tagged" => {
            // -rdynamic: the writer is in .dynsym, where hooks read names.
            let mut c = Command::new("g++");
            c.args(["-O1", "-g", "-rdynamic", "-o"])
                .arg(&out)
                .arg(src.join("abi_tagged.cpp"));
            c
        }
        "frames_registered_signal" | "frames_registered_fork" => {
            let mut c = Command::new("g++");
            c.args(["-O1", "-g", "-o"])
                .arg(&out)
                .arg(src.join(format!("{name}.cpp")))
                .arg("-lpthread");
            c
        }
        "libjit_writer.so" => cc(
            &["-shared", "-fPIC", "-O1"],
            &src.join("jit_writer_lib.c"),
            &out,
            &[],
        ),
        "jit_main" => {
            let lib = jit_lib.expect("built above");
            let libdir = lib.parent().expect("dir").to_str().expect("utf-8");
            cc(
                &["-O1"],
                &src.join("jit_main.c"),
                &out,
                &[
                    &format!("-L{libdir}"),
                    "-ljit_writer",
                    &format!("-Wl,-rpath,{libdir}"),
                ],
            )
        }
        "main_writer" => cc(&["-O1", "-g"], &src.join("main_writer.c"), &out, &[]),
        "raw_execve" => cc(&["-O1"], &src.join("raw_execve.c"), &out, &[]),
        "ops_exec" => cc(&["-O1", "-Wall"], &src.join("ops_exec.c"), &out, &[]),
        // The same executor for the seccomp supervisor (static: no preload).
        "ops_exec_static" => cc(
            &["-static", "-O1", "-Wall"],
            &src.join("ops_exec.c"),
            &out,
            &[],
        ),
        "stale_main" => cc(&["-O1"], &src.join("stale_main.c"), &out, &["-ldl"]),
        "libstale_good.so" | "libstale_bad.so" => cc(
            &["-shared", "-fPIC", "-O1"],
            &src.join("stale_writer.c"),
            &out,
            &[],
        ),
        "ofstream" => {
            let mut c = Command::new("g++");
            c.args(["-O1", "-o"])
                .arg(&out)
                .arg(src.join("ofstream.cpp"));
            c
        }
        "signal_writer" => cc(&["-O1"], &src.join("signal_writer.c"), &out, &[]),
        "rust_create" => {
            let mut c = Command::new("rustc");
            c.args(["-O", "-o"])
                .arg(&out)
                .arg(src.join("rust_create.rs"));
            c
        }
        other => panic!("unknown fixture {other}"),
    };
    let status = cmd.status().expect("run the compiler");
    assert!(status.success(), "building fixture {name} failed");
    map.insert(name.to_owned(), out.clone());
    out
}

/// A fixture that needs a tool the machine may lack (`go`, liburing's
/// header): built if the tool is there; otherwise the test fails, or skips
/// loudly under `MPAUDIT_TESTS_ALLOW_SKIP=1` ([`components::require`]).
pub fn fixture_needing(name: &str, tool: &str, present: bool) -> Option<PathBuf> {
    let problem = (!present).then(|| format!("fixture {name} needs {tool}"));
    components::require(tool, problem).then(|| fixture(name))
}

/// The Go fixtures (tests/fixtures/go_writer): `go_static` (CGO_ENABLED=0)
/// or `go_cgo` (dynamically linked through cgo).
pub fn go_fixture(name: &str) -> Option<PathBuf> {
    let has_go = Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    fixture_needing(name, "go (Debian: golang-go)", has_go)
}

/// The io_uring fixture, linked against liburing.
pub fn uring_fixture() -> Option<PathBuf> {
    let has = Path::new("/usr/include/liburing.h").exists();
    fixture_needing("uring_writer", "liburing (Debian: liburing-dev)", has)
}

fn cc(flags: &[&str], src: &Path, out: &Path, libs: &[&str]) -> Command {
    let mut c = Command::new("cc");
    c.args(flags).arg("-o").arg(out).arg(src).args(libs);
    c
}

/// Spawns `cmd`, retrying while the kernel says ETXTBSY: an executable a
/// test has just written can still be open for writing in a child another
/// test thread forked before its own exec closed the descriptor (CI saw
/// this once with a copied `mpaudit`).
pub fn spawn_retrying_busy_text(cmd: &mut Command) -> std::process::Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.expect("spawn"),
        }
    }
}

/// Puts an executable at `to` without ever holding it open for writing
/// (a hard link; a copy only across file systems), so that running it
/// cannot fail with ETXTBSY because another thread forked meanwhile.
pub fn install_executable(from: &Path, to: &Path) {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).expect("copy executable");
    }
}

/// A directory of one's own for a test, under target/e2e/tmp.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = harness_target()
            .join("tmp")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// The directory's path, kept after the test (a template several
    /// tests copy from).
    pub fn kept(self) -> PathBuf {
        let path = self.path.clone();
        std::mem::forget(self);
        path
    }

    pub fn logs(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// A command run in this directory with the library preloaded and
    /// logging into `logs/`.
    pub fn audited(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.path)
            .env("LD_PRELOAD", lib())
            .env("MPAUDIT_LOG_DIR", self.logs())
            .env_remove("MPAUDIT_WORKER")
            .env_remove("MPAUDIT_FORK_WORKERS")
            .env_remove("MPAUDIT_ROOT_PID");
        // A suite run inside a launcher must not make every test a rank.
        for v in mpaudit_core::launcher::RANK_VARIABLES {
            c.env_remove(v);
        }
        c
    }

    /// The same command without the library, for comparisons.
    pub fn bare(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.path);
        c
    }

    pub fn events(&self) -> Vec<Value> {
        read_events(&self.logs()).0
    }
}

/// A passing test's directory is removed (some hold hundreds of MB, and a
/// suite run leaves thousands); a failing one's is kept for inspection,
/// and every one with `MPAUDIT_TESTS_KEEP=1`.
impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("MPAUDIT_TESTS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Gives each test its own directory (ripgrep's `rgtest!` habit).
#[macro_export]
macro_rules! e2e {
    ($(#[$attr:meta])* $name:ident, |$dir:ident| $body:block) => {
        #[test]
        $(#[$attr])*
        fn $name() {
            let $dir = $crate::TestDir::new(stringify!($name));
            $body
        }
    };
}

/// Every event in a log directory, and the number of lines that did not
/// parse. NUL bytes (unfilled log space) end a line, as docs/events.md says.
pub fn read_events(dir: &Path) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut bad = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (events, bad);
    };
    // Event logs only: a runner's log directory also holds its run's
    // metadata (`mpaudit-run-*.json`).
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    for f in files {
        let (mut ev, b) = read_log_file(&f);
        events.append(&mut ev);
        bad += b;
    }
    (events, bad)
}

/// The events of one log file, and the number of lines that did not parse.
pub fn read_log_file(path: &Path) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut bad = 0;
    let bytes = std::fs::read(path).expect("read log");
    // A NUL ends a line too (docs/events.md): what a killed writer left
    // unfilled after a torn event.
    for line in bytes.split(|&b| b == b'\n' || b == 0) {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(v) => events.push(v),
            Err(_) => bad += 1,
        }
    }
    (events, bad)
}

/// Runs a command to completion with a deadline; panics with its output on
/// timeout (a hang is a failure, never a stuck CI).
pub fn run(cmd: &mut Command, deadline: std::time::Duration) -> Output {
    let child = spawn_retrying_busy_text(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
    wait_with_deadline(child, deadline)
}

/// Waits for a spawned child (its output piped) like [`run`]: a child
/// still running after `deadline` is killed and the test fails.
pub fn wait_with_deadline(mut child: std::process::Child, deadline: std::time::Duration) -> Output {
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "command timed out after {deadline:?} (a hang): stdout={} stderr={}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs a command to completion (see [`run`]) and fails the test, showing
/// its status and output, unless it succeeded.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd, DEADLINE);
    assert!(
        out.status.success(),
        "command failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The function binutils' `addr2line` finds at an event frame's
/// `{"object", "vaddr"}`: an independent check of what the library records
/// (docs/events.md) and of the runner's names.
pub fn frame_function(frame: &Value) -> String {
    let object = frame["object"]
        .as_str()
        .unwrap_or_else(|| panic!("no object: {frame}"));
    let vaddr = frame["vaddr"]
        .as_u64()
        .unwrap_or_else(|| panic!("no vaddr: {frame}"));
    let out = Command::new("addr2line")
        .args(["-f", "-e", object, &format!("{vaddr:#x}")])
        .output()
        .expect("binutils' addr2line is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().unwrap_or("").to_string()
}

/// Access events on paths whose file name is `name`.
pub fn accesses<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "access")
        .filter(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.rsplit('/').next() == Some(name))
        })
        .collect()
}

pub fn ops(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["op"].as_str().map(str::to_owned))
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `mpaudit` runner as a test starts it in `cwd`: nothing of the
/// suite's own environment leaks in (no library preloaded, no worker
/// number, no launcher's rank, no workers directory, Python allowed to
/// write bytecode as a user's would), and `PWD` says `cwd` the way a shell
/// would, so that a script's `$PWD` is the spelling the test chose (a
/// symlinked job directory, say).
pub fn mpaudit(cwd: &Path) -> Command {
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(cwd)
        .env_remove("LD_PRELOAD")
        .env_remove("MPAUDIT_WORKER")
        .env_remove("MPAUDIT_FORK_WORKERS")
        .env_remove("ATHENA_PROC_NUMBER")
        .env_remove("MPAUDIT_WORKERS_DIR")
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .env("PWD", cwd);
    for v in mpaudit_core::launcher::RANK_VARIABLES {
        c.env_remove(v);
    }
    c
}

/// `mpaudit exec --format json --report FILE ARGS -- sh -c SCRIPT` in `cwd`:
/// its exit status, its report and its output (see [`exec_json`]).
pub fn exec_sh(cwd: &Path, args: &[&str], script: &str) -> (i32, Value, Output) {
    exec_json(cwd, args, &["sh", "-c", script])
}

/// `mpaudit exec --format json --report FILE ARGS -- CMD` in `cwd`: its exit
/// status, its report and its output. exec leaves stdout and stderr to the
/// program, so the report goes to a file, kept outside `cwd` (which a
/// script may empty).
pub fn exec_json(cwd: &Path, args: &[&str], cmd: &[&str]) -> (i32, Value, Output) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!(
        "mpaudit-e2e-report-{}-{n}.json",
        std::process::id()
    ));
    let out = run(
        mpaudit(cwd)
            .args(["exec", "--format", "json", "--report"])
            .arg(&file)
            .args(args)
            .arg("--")
            .args(cmd),
        DEADLINE,
    );
    let code = out.status.code().unwrap_or(-1);
    let text = std::fs::read(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    let v = serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): stdout={} stderr={}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, v, out)
}

/// Everything a shared tree holds that a redirected worker must not
/// change, one line per entry (sorted walk): inode number, mode, link
/// count, size, modification time and content or link target (a file
/// replaced or rewritten with the same bytes is still a write).
pub fn shared_snapshot(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("read a shared dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for p in names {
            let m = std::fs::symlink_metadata(&p).expect("lstat a shared entry");
            let rel = p
                .strip_prefix(root)
                .expect("below root")
                .display()
                .to_string();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).expect("readlink").display())
            } else if m.is_file() {
                format!(
                    "{:?}",
                    String::from_utf8_lossy(&std::fs::read(&p).expect("read"))
                )
            } else {
                String::from("dir")
            };
            out.push(format!(
                "{rel} ino={} mode={:o} uid={} nlink={} size={} mtime={}.{} {what}",
                m.ino(),
                m.mode(),
                m.uid(),
                m.nlink(),
                if m.is_dir() { 0 } else { m.size() },
                m.mtime(),
                m.mtime_nsec()
            ));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}
