//! Supervision tests: real processes under the real `mpaudit` binary, with
//! the real libmpaudit.so preloaded (built here into its own target dir).
//! They assert on outcomes, files and pids, never on events, so they hold
//! whatever the library logs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mpaudit");

/// Builds libmpaudit.so once per test binary, in a target dir of its own
/// (the outer `cargo test` holds the lock on ours).
fn preload() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let out = Command::new(cargo)
            .args(["build", "-p", "mpaudit-interpose", "--message-format=json"])
            .current_dir(workspace)
            .env(
                "CARGO_TARGET_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("interpose-target"),
            )
            .output()
            .expect("cargo build -p mpaudit-interpose");
        assert!(
            out.status.success(),
            "building libmpaudit.so failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["reason"] == "compiler-artifact" {
                for f in v["filenames"].as_array().into_iter().flatten() {
                    let f = f.as_str().unwrap_or_default();
                    if f.ends_with("/libmpaudit.so") {
                        return PathBuf::from(f);
                    }
                }
            }
        }
        panic!("cargo did not report libmpaudit.so");
    })
}

fn tempdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("supervise-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mpaudit(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("MPAUDIT_PRELOAD")
        .output()
        .unwrap()
}

fn run_job(dir: &Path, job: &str, extra: &[&str]) -> (i32, Value, String) {
    std::fs::write(dir.join("job.toml"), job).unwrap();
    let lib = preload().to_str().unwrap().to_string();
    let mut args = vec![
        "run",
        "job.toml",
        "--format",
        "json",
        "--grace",
        "200ms",
        "--preload",
        &lib,
    ];
    args.extend_from_slice(extra);
    let out = mpaudit(dir, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive, but it would mean someone did not reap it:
    // after the runner exits nobody of ours may be left in any state.
    std::fs::metadata(format!("/proc/{pid}")).is_ok()
}

fn worker(report: &Value, k: u64) -> &Value {
    report["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker"] == k)
        .unwrap_or_else(|| panic!("no worker {k}: {report}"))
}

#[test]
fn daemonised_grandchild_does_not_survive() {
    let dir = tempdir("daemon");
    let job = r#"[job]
command = ["sh", "-c", "setsid sh -c 'trap \"\" TERM; sleep 30' > /dev/null 2>&1 & echo $! > daemon.pid; sleep 0.2"]

[audit]
outputs = ["*.pid"]
"#;
    let (code, report, stderr) = run_job(&dir, job, &[]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let pid: i32 = std::fs::read_to_string(dir.join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "daemon {pid} survived the runner");
    let strays: Vec<i64> = report["summary"]["strays_killed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert!(strays.contains(&(pid as i64)), "{report}");
    assert_eq!(worker(&report, 0)["exit_code"], 0);
}

#[test]
fn worker_ignoring_term_is_killed_after_grace_on_timeout() {
    let dir = tempdir("ignore-term");
    let job = r#"[job]
command = ["sh", "-c", "trap '' TERM; echo $$ > w$MPAUDIT_WORKER.pid; sleep 30; echo still here"]
workers = 2
timeout = "500ms"
"#;
    let (code, report, stderr) = run_job(&dir, job, &[]);
    assert_eq!(code, 3, "{report}\n{stderr}");
    assert!(
        report["summary"]["stop_reason"]
            .as_str()
            .unwrap()
            .starts_with("timeout"),
        "{report}"
    );
    for k in 0..2u64 {
        let w = worker(&report, k);
        assert_eq!(w["timed_out"], true, "{w}");
        assert_eq!(
            w["signal_name"], "SIGKILL",
            "TERM was ignored, so KILL: {w}"
        );
        let pid: i32 = std::fs::read_to_string(dir.join(format!("w{k}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(pid));
    }
}

#[test]
fn segfaulting_worker_is_reported_as_signal_11() {
    let dir = tempdir("segv");
    let job = r#"[job]
command = ["sh", "-c", "echo about to crash >&2; kill -SEGV $$"]
"#;
    let (code, report, _) = run_job(&dir, job, &[]);
    assert_eq!(code, 3, "{report}");
    let w = worker(&report, 0);
    assert_eq!(w["signal"], 11, "{w}");
    assert_eq!(w["signal_name"], "SIGSEGV");
    assert_eq!(w["stderr_tail"][0], "about to crash", "{w}");
    assert_eq!(report["summary"]["job_failed"], true);
}

const FAIL_ONE: &str = r#"command = ["sh", "-c", "if [ $MPAUDIT_WORKER = 1 ]; then echo bad input >&2; exit 4; fi; sleep 2; echo done"]
workers = 2
"#;

#[test]
fn on_failure_kill_stops_the_others() {
    let dir = tempdir("fail-kill");
    let (code, report, _) = run_job(
        &dir,
        &format!("[job]\n{FAIL_ONE}on_failure = \"kill\"\n"),
        &[],
    );
    assert_eq!(code, 3, "{report}");
    assert_eq!(worker(&report, 1)["exit_code"], 4);
    assert_eq!(worker(&report, 1)["stderr_tail"][0], "bad input");
    let w0 = worker(&report, 0);
    assert_eq!(w0["stopped_by"], "worker 1 failed", "{w0}");
    assert_eq!(w0["signal_name"], "SIGTERM", "{w0}");
    assert_eq!(
        report["summary"]["stop_reason"],
        "worker 1 failed (on_failure = kill)"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("mpaudit-workers/worker_0/stdout.log")).unwrap(),
        ""
    );
}

#[test]
fn on_failure_continue_lets_the_others_finish() {
    let dir = tempdir("fail-continue");
    let (code, report, _) = run_job(
        &dir,
        &format!("[job]\n{FAIL_ONE}on_failure = \"continue\"\n"),
        &[],
    );
    assert_eq!(code, 3, "{report}");
    assert_eq!(worker(&report, 1)["exit_code"], 4);
    let w0 = worker(&report, 0);
    assert_eq!(w0["exit_code"], 0, "{w0}");
    assert_eq!(w0["stopped_by"], Value::Null);
    assert_eq!(
        std::fs::read_to_string(dir.join("mpaudit-workers/worker_0/stdout.log")).unwrap(),
        "done\n"
    );
}

#[test]
fn per_worker_stdout_and_stderr_files() {
    let dir = tempdir("outputs");
    let job = r#"[job]
command = ["sh", "-c", "echo out $MPAUDIT_WORKER $MPAUDIT_WORKERS $GREETING; echo err $MPAUDIT_WORKER >&2"]
workers = 3
seed = 7
env = { GREETING = "hello" }
"#;
    let (code, report, _) = run_job(&dir, job, &[]);
    assert!(code == 0 || code == 1, "{report}");
    for k in 0..3 {
        let wd = dir.join(format!("mpaudit-workers/worker_{k}"));
        assert_eq!(
            std::fs::read_to_string(wd.join("stdout.log")).unwrap(),
            format!("out {k} 3 hello\n")
        );
        assert_eq!(
            std::fs::read_to_string(wd.join("stderr.log")).unwrap(),
            format!("err {k}\n")
        );
        assert_eq!(worker(&report, k)["exit_code"], 0);
    }
}

#[test]
fn workers_get_the_library_and_their_index() {
    let dir = tempdir("env");
    let job = r#"[job]
command = ["sh", "-c", "echo \"$LD_PRELOAD|$MPAUDIT_WORKER|$MPAUDIT_LOG_DIR|$MPAUDIT_ACTION|$MPAUDIT_OUTPUTS\""]
workers = 2
[audit]
action = "redirect"
outputs = ["*.root", "h-*.txt"]
"#;
    run_job(&dir, job, &[]);
    let out = std::fs::read_to_string(dir.join("mpaudit-workers/worker_1/stdout.log")).unwrap();
    let want = format!(
        "{}|1|{}|redirect|*.root:h-*.txt\n",
        preload().display(),
        dir.join("mpaudit-logs").display()
    );
    assert_eq!(out, want);
}

fn usage_error(dir: &Path, job: &str, extra: &[&str], needle: &str) {
    std::fs::write(dir.join("job.toml"), job).unwrap();
    let lib = preload().to_str().unwrap().to_string();
    let mut args = vec!["run", "job.toml"];
    if !extra.contains(&"--preload") {
        args.extend(["--preload", lib.as_str()]);
    }
    args.extend_from_slice(extra);
    let out = mpaudit(dir, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{job}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err} should name {needle}");
    assert!(out.stdout.is_empty());
    assert!(
        !dir.join("mpaudit-workers").exists(),
        "nothing may start: {job}"
    );
}

#[test]
fn bad_inputs_exit_2_with_one_line() {
    let dir = tempdir("bad");
    usage_error(&dir, "[job]\ncommand = [\"true\"\n", &[], "job.toml:");
    usage_error(
        &dir,
        "[job]\ncommand = [\"true\"]\nworkrs = 2\n",
        &[],
        "job.toml:3:1: key `job.workrs`: unknown key in [job]; did you mean `workers`?",
    );
    usage_error(
        &dir,
        "[job]\ncommand = [\"true\"]\nworkers = 0\n",
        &[],
        "job.toml:3:11: key `job.workers`: workers must be at least 1",
    );
    usage_error(
        &dir,
        "[job]\ncommand = [\"true\"]\ntimeout = \"-3m\"\n",
        &[],
        "key `job.timeout`: negative timeout",
    );
    usage_error(
        &dir,
        "[job]\ncommand = [\"true\"]\n",
        &["--timeout", "-1s"],
        "--timeout: negative timeout",
    );
    usage_error(
        &dir,
        "[job]\ncommand = [\"no-such-program-xyz\"]\n",
        &[],
        "command `no-such-program-xyz` not found in PATH",
    );
    std::fs::write(dir.join("data.txt"), "not a program").unwrap();
    usage_error(
        &dir,
        "[job]\ncommand = [\"./data.txt\"]\n",
        &[],
        "is not executable",
    );
    usage_error(
        &dir,
        "[job]\ncommand = [\"true\"]\n[audit]\nlog_dir = \"data.txt/logs\"\n",
        &[],
        "log directory",
    );
    usage_error(
        &dir,
        "[job]\ncommand = [\"true\"]\n",
        &["--preload", "/nonexistent/libmpaudit.so"],
        "libmpaudit.so not found; looked at: /nonexistent/libmpaudit.so (--preload)",
    );
}

#[test]
fn check_reports_auto_workers_for_each_batch_variable() {
    let dir = tempdir("check");
    std::fs::write(
        dir.join("job.toml"),
        "[job]\ncommand = [\"true\"]\nworkers = \"auto\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("nodes"), "localhost-not-this\n").unwrap();
    // `check` fails without a library; this test is about the worker count
    // (and `cargo test -p mpaudit-runner` does not build the library).
    let lib = dir.join("libmpaudit.so");
    std::fs::write(&lib, "").unwrap();
    let vars = [
        ("ATHENA_PROC_NUMBER", "1", "ATHENA_PROC_NUMBER=1 [AthenaMP]"),
        ("SLURM_CPUS_PER_TASK", "1", "SLURM_CPUS_PER_TASK=1 [Slurm]"),
        ("SLURM_CPUS_ON_NODE", "1", "SLURM_CPUS_ON_NODE=1 [Slurm]"),
        ("PBS_NP", "1", "PBS_NP=1 [PBS/Torque]"),
        ("PBS_NCPUS", "1", "PBS_NCPUS=1 [PBS/Torque]"),
        (
            "PBS_NODEFILE",
            "nodes",
            "PBS_NODEFILE (1 slots for this host in nodes) [PBS/Torque]",
        ),
        ("NSLOTS", "1", "NSLOTS=1 [SGE]"),
        ("LSB_DJOB_NUMPROC", "1", "LSB_DJOB_NUMPROC=1 [LSF]"),
    ];
    for (var, value, source) in vars {
        let mut cmd = Command::new(BIN);
        cmd.args(["check", "job.toml"])
            .current_dir(&dir)
            .env("MPAUDIT_PRELOAD", &lib);
        for (v, _, _) in vars {
            cmd.env_remove(v);
        }
        let out = cmd.env(var, value).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{var}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = text.lines().find(|l| l.starts_with("workers:")).unwrap();
        assert_eq!(
            line,
            format!("workers:     1 (job file: workers = \"auto\": {source})"),
            "{var}"
        );
    }
    // No batch variable: CPU affinity.
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "job.toml"])
        .current_dir(&dir)
        .env("MPAUDIT_PRELOAD", &lib);
    for (v, _, _) in vars {
        cmd.env_remove(v);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CPU affinity") || text.contains("cgroup CPU quota"),
        "{text}"
    );
}

#[test]
fn exec_runs_a_command_without_a_job_file() {
    let dir = tempdir("exec");
    let lib = preload().to_str().unwrap();
    let out = mpaudit(
        &dir,
        &[
            "exec",
            "--workers",
            "2",
            "--preload",
            lib,
            "--format",
            "json",
            "--report",
            "report.json",
            "--",
            "sh",
            "-c",
            "echo w$MPAUDIT_WORKER",
        ],
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{report}");
    // Several workers: labelled lines on mpaudit's stdout, and the logs.
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(lines, ["0: w0", "1: w1"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("mpaudit-workers/worker_1/stdout.log")).unwrap(),
        "w1\n"
    );
    assert_eq!(report["summary"]["workers"], 2);
}

#[test]
fn fork_mode_runs_one_root() {
    let dir = tempdir("fork");
    let lib = preload().to_str().unwrap();
    let out = mpaudit(
        &dir,
        &[
            "exec",
            "--mode",
            "fork",
            "--preload",
            lib,
            "--format",
            "json",
            "--report",
            "report.json",
            "--",
            "sh",
            "-c",
            "echo $MPAUDIT_FORK_WORKERS; (sleep 0.3) & (sleep 0.3) & wait",
        ],
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{report}");
    // One process: mpaudit's own stdout, passed through.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
    let root = &report["workers"][0];
    assert_eq!(root["worker"], Value::Null);
    assert_eq!(root["exit_code"], 0);
}
