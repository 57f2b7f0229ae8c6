//! `mpaudit run` as a person uses it: Ctrl-C once and twice, and the live
//! status line that appears on a terminal only.

use mpaudit_tests::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn write_job(dir: &TestDir, job: &str) {
    std::fs::write(dir.join("job.toml"), job).unwrap();
}

fn runner(dir: &TestDir, grace: &str) -> Command {
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(&dir.path)
        .args([
            "run",
            "job.toml",
            "--format",
            "json",
            "--grace",
            grace,
            "--preload",
        ])
        .arg(lib())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits until every worker wrote its pid file; returns the pids.
fn worker_pids(dir: &TestDir, n: usize) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let pids: Vec<i32> = (0..n)
            .filter_map(|k| std::fs::read_to_string(dir.join(&format!("w{k}.pid"))).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if pids.len() == n {
            return pids;
        }
        assert!(start.elapsed() < DEADLINE, "workers never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn interrupt(child: &std::process::Child) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

fn finish(child: std::process::Child, deadline: Duration) -> (i32, Value) {
    let start = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < deadline,
            "the runner did not stop within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report)
}

e2e!(ctrl_c_stops_every_worker_and_exits_3, |dir| {
    write_job(
        &dir,
        "[job]\ncommand = [\"sh\", \"-c\", \"echo $$ > w$MPAUDIT_WORKER.pid; exec sleep 60\"]\nworkers = 2\n\n[audit]\noutputs = [\"*.pid\"]\n",
    );
    let child = runner(&dir, "5s").spawn().unwrap();
    let pids = worker_pids(&dir, 2);
    interrupt(&child);
    let (code, report) = finish(child, Duration::from_secs(30));
    assert_eq!(code, 3, "{report:#}");
    assert!(
        report["summary"]["stop_reason"]
            .as_str()
            .unwrap_or("")
            .contains("interrupt"),
        "{report:#}"
    );
    assert!(
        pids.iter().all(|&p| !alive(p)),
        "no worker survives the runner"
    );
});

e2e!(
    second_ctrl_c_kills_at_once_even_workers_ignoring_term,
    |dir| {
        write_job(
        &dir,
        "[job]\ncommand = [\"sh\", \"-c\", \"trap '' TERM INT; echo $$ > w$MPAUDIT_WORKER.pid; while :; do sleep 1; done\"]\nworkers = 2\n\n[audit]\noutputs = [\"*.pid\"]\n",
    );
        // A 10-minute grace period: only the second Ctrl-C can end this soon.
        let child = runner(&dir, "10m").spawn().unwrap();
        let pids = worker_pids(&dir, 2);
        interrupt(&child);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child_alive(&child),
            "workers ignore TERM: the runner is still in its grace period"
        );
        interrupt(&child);
        let (code, _) = finish(child, Duration::from_secs(30));
        assert_eq!(code, 3);
        assert!(pids.iter().all(|&p| !alive(p)));
    }
);

fn child_alive(child: &std::process::Child) -> bool {
    alive(child.id() as i32)
}

e2e!(status_line_shows_on_a_terminal_and_never_in_a_pipe, |dir| {
    write_job(
        &dir,
        "[job]\ncommand = [\"sh\", \"-c\", \"echo x > out.txt; sleep 2\"]\nworkers = 2\n",
    );
    let cmd = format!(
        "{} run job.toml --preload {}",
        artifacts().runner.display(),
        lib().display()
    );
    // script(1) gives the runner a pseudo-terminal for its stderr.
    let tty = run(
        Command::new("script")
            .current_dir(&dir.path)
            .args(["-qec", &cmd, "/dev/null"]),
        DEADLINE,
    );
    let shown = String::from_utf8_lossy(&tty.stdout).into_owned();
    assert!(shown.contains("workers: 2 running, 0 finished"), "{shown}");
    assert!(shown.contains("rogue writes: "), "{shown}");

    let piped = run(
        Command::new(&artifacts().runner)
            .current_dir(&dir.path)
            .args(["run", "job.toml", "--preload"])
            .arg(lib()),
        DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains("running,"),
        "no status line without a terminal: {stderr}"
    );
});

/// `/proc/<pid>/stat`'s state letter, if the process exists.
fn state(pid: i32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].trim_start().chars().next()
}

/// Waits until `pred` holds, failing the test at the deadline.
fn wait_for(what: &str, pred: impl FnMut() -> bool) {
    wait_within(DEADLINE, what, pred)
}

fn wait_within(deadline: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pid a job wrote to `name` in its directory, once it has.
fn pid_file(dir: &TestDir, name: &str) -> i32 {
    let mut pid = 0;
    wait_for(&format!("{name} written"), || {
        pid = std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
    });
    pid
}

/// Processes (not zombies: those are dead, and init reaps what it inherits)
/// whose environment says they belong to a job in `dir`.
fn job_processes(dir: &TestDir) -> Vec<i32> {
    let marker = format!("MPAUDIT_JOB_DIR={}", dir.path.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| state(p).is_some_and(|s| s != 'Z' && s != 'X'))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == marker.as_bytes()))
        })
        .collect()
}

fn gone(pid: i32) -> bool {
    state(pid).map_or(true, |s| s == 'Z' || s == 'X')
}

fn send(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// A job whose two workers each write `hist.txt` in their worker directory,
/// merged by `merge`, a shell script run as `sh -c SCRIPT OUTPUT INPUTS...`.
fn merge_job(dir: &TestDir, extra_job: &str, merge: &str) {
    write_job(
        dir,
        &format!(
            "[job]\ncommand = [\"sh\", \"-c\", \"echo $MPAUDIT_WORKER > mpaudit-workers/worker_$MPAUDIT_WORKER/hist.txt\"]\nworkers = 2\n{extra_job}\n[merge]\n\"hist.txt\" = [\"sh\", \"-c\", {}, \"{{output}}\", \"{{inputs}}\"]\n",
            serde_json::to_string(merge).unwrap()
        ),
    );
}

const SLOW_MERGE: &str =
    "echo $$ > merge.pid; sleep 60 & echo $! > merge-child.pid; wait; cat \"$@\" > \"$0\"";

e2e!(
    regression_sigint_and_sigterm_during_a_slow_merge_stop_it_and_its_children,
    |dir| {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            for f in ["merge.pid", "merge-child.pid", "hist.txt"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            merge_job(&dir, "", SLOW_MERGE);
            let child = runner(&dir, "5s").spawn().unwrap();
            let sh = pid_file(&dir, "merge.pid");
            let sleeper = pid_file(&dir, "merge-child.pid");
            send(&child, sig);
            // Before the fix the signal was never read: the merge ran its
            // full minute, and this deadline failed.
            let (code, report) = finish(child, Duration::from_secs(30));
            assert_eq!(code, 3, "signal {sig}: {report:#}");
            let m = &report["merges"][0];
            assert_eq!(m["status"], "failed", "{m:#}");
            assert!(
                m["reason"].as_str().unwrap_or("").contains("interrupted"),
                "{m:#}"
            );
            assert!(
                gone(sh) && gone(sleeper),
                "the merge and its child are gone"
            );
            assert!(!dir.join("hist.txt").exists(), "no half-merged output");
        }
    }
);

e2e!(merge_command_sees_the_signal_mask_of_a_bare_run, |dir| {
    merge_job(
        &dir,
        "",
        "grep -E '^Sig(Blk|Ign)' /proc/self/status > mask.txt; cat \"$@\" > \"$0\"",
    );
    let (code, report) = finish(runner(&dir, "5s").spawn().unwrap(), DEADLINE);
    assert_eq!(report["merges"][0]["status"], "merged", "{report:#}");
    assert_eq!(code, 0, "{report:#}");
    let mask = std::fs::read_to_string(dir.join("mask.txt")).unwrap();
    // The runner blocks INT, TERM, HUP, QUIT, CHLD, TSTP and CONT for its
    // own use; the merge command must see what it would see run bare.
    let bare = Command::new("sh")
        .args(["-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"])
        .output()
        .unwrap();
    let field = |text: &str, name: &str| {
        let hex = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {text}"));
        u64::from_str_radix(hex.trim(), 16).unwrap()
    };
    let bare = String::from_utf8_lossy(&bare.stdout).into_owned();
    assert_eq!(
        field(&mask, "SigBlk:"),
        0,
        "blocked in the merge command: {mask}"
    );
    assert_eq!(field(&bare, "SigBlk:"), 0, "{bare}");
    // Signals 1-31 ignored as bare (32 and up are glibc's own).
    let standard = |m: u64| m & 0x7fff_ffff;
    assert_eq!(
        standard(field(&mask, "SigIgn:")),
        standard(field(&bare, "SigIgn:")),
        "{mask} vs bare {bare}"
    );
});

e2e!(
    regression_a_timed_out_merges_grandchildren_are_gone,
    |dir| {
        // The shell ignores TERM: only the KILL after the grace period ends it,
        // and its child must go with it.
        merge_job(
            &dir,
            "timeout = \"3s\"",
            &format!("trap '' TERM; {SLOW_MERGE}"),
        );
        let (code, report) = finish(runner(&dir, "200ms").spawn().unwrap(), DEADLINE);
        assert_eq!(code, 3, "{report:#}");
        let m = &report["merges"][0];
        assert!(
            m["reason"].as_str().unwrap_or("").contains("timeout"),
            "{m:#}"
        );
        let sleeper = pid_file(&dir, "merge-child.pid");
        let sh = pid_file(&dir, "merge.pid");
        assert!(gone(sh), "the merge command {sh} is gone");
        assert!(gone(sleeper), "its child {sleeper} is gone");
    }
);

/// Starts a job, waits for the pids it names, kills the runner with
/// SIGKILL, and checks that nothing of the job stays alive.
fn kill_9_leaves_nothing(dir: &TestDir, job: &str, pid_files: &[&str]) {
    write_job(dir, job);
    let mut child = runner(dir, "5s").spawn().unwrap();
    let pids: Vec<i32> = pid_files.iter().map(|f| pid_file(dir, f)).collect();
    assert!(pids.iter().all(|&p| !gone(p)));
    assert!(!job_processes(dir).is_empty(), "the job runs");
    send(&child, libc::SIGKILL);
    child.wait().unwrap();
    // The job's sleeps last 300 s: well past this wait.
    wait_within(Duration::from_secs(30), "every job process gone", || {
        pids.iter().all(|&p| gone(p)) && job_processes(dir).is_empty()
    });
}

e2e!(
    regression_kill_9_of_mpaudit_leaves_no_job_process_in_spawn_mode,
    |dir| {
        kill_9_leaves_nothing(
        &dir,
        // A grandchild in the worker's group, and one that left it (its
        // own session) with an emptied environment: the library restores
        // the run's marker across that exec, and the watchdog finds it.
        "[job]\ncommand = [\"sh\", \"-c\", \"sleep 300 & echo $! > gc$MPAUDIT_WORKER.pid; setsid env -i sh -c 'echo $$ > hidden$MPAUDIT_WORKER.pid; exec sleep 300' & echo $$ > w$MPAUDIT_WORKER.pid; wait\"]\nworkers = 2\n[audit]\noutputs = [\"*.pid\"]\n",
        &["w0.pid", "w1.pid", "gc0.pid", "gc1.pid", "hidden0.pid", "hidden1.pid"],
    );
    }
);

e2e!(
    regression_kill_9_of_mpaudit_leaves_no_job_process_in_fork_mode,
    |dir| {
        kill_9_leaves_nothing(
        &dir,
        "[job]\nmode = \"fork\"\ncommand = [\"sh\", \"-c\", \"(sleep 300; true) & echo $! > f1.pid; (sleep 300; true) & echo $! > f2.pid; echo $$ > root.pid; wait\"]\n[audit]\noutputs = [\"*.pid\"]\n",
        &["root.pid", "f1.pid", "f2.pid"],
    );
    }
);

e2e!(
    regression_ctrl_z_stops_the_workers_and_sigcont_resumes_them,
    |dir| {
        write_job(
        &dir,
        "[job]\ncommand = [\"sh\", \"-c\", \"echo $$ > w$MPAUDIT_WORKER.pid; i=0; while [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; echo done\"]\nworkers = 2\n[audit]\noutputs = [\"*.pid\"]\n",
    );
        let child = runner(&dir, "5s").spawn().unwrap();
        let pids = worker_pids(&dir, 2);
        let me = child.id() as i32;
        send(&child, libc::SIGTSTP);
        // Before the fix the runner stopped and the workers ran on.
        wait_for("workers and runner stopped", || {
            state(me) == Some('T') && pids.iter().all(|&p| state(p) == Some('T'))
        });
        send(&child, libc::SIGCONT);
        wait_for("workers running again", || {
            pids.iter().all(|&p| state(p) != Some('T'))
        });
        let (code, report) = finish(child, DEADLINE);
        assert_eq!(code, 0, "{report:#}");
        for k in 0..2 {
            assert_eq!(
                std::fs::read_to_string(
                    dir.join(&format!("mpaudit-workers/worker_{k}/stdout.log"))
                )
                .unwrap(),
                "done\n"
            );
        }
    }
);

// `mpaudit exec` keeps the terminal: the program's streams are its own.

/// `mpaudit exec [args] -- cmd...` in `dir`, report to `report.json`.
fn exec(dir: &TestDir, args: &[&str], cmd: &[&str]) -> Command {
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(&dir.path)
        .arg("exec")
        .arg("--preload")
        .arg(lib())
        .args(["--format", "json", "--report", "report.json"])
        .args(args)
        .arg("--")
        .args(cmd);
    c
}

fn report(dir: &TestDir) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

/// Runs `cmd` with `input` on its stdin; (status, stdout, stderr).
fn with_input(cmd: &mut Command, input: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

e2e!(regression_exec_passes_stdin_and_stdout_through, |dir| {
    // Before: stdin was /dev/null and stdout went to worker_0/stdout.log,
    // so this printed nothing.
    let bare = with_input(Command::new("sort").current_dir(&dir.path), b"b\na\n");
    let (code, out, err) = with_input(&mut exec(&dir, &[], &["sort"]), b"b\na\n");
    assert_eq!((code, out.as_str()), (0, "a\nb\n"), "{err}");
    assert_eq!((code, out, err), bare, "as bare");
    // Without --report the report goes to stderr: stdout stays the program's.
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(&dir.path)
        .args(["exec", "--preload"])
        .arg(lib())
        .args(["--", "sort"]);
    let (code, out, err) = with_input(&mut c, b"b\na\n");
    assert_eq!((code, out.as_str()), (0, "a\nb\n"), "{err}");
    assert!(err.contains("mpaudit: ok"), "{err}");
});

e2e!(
    exec_passes_stderr_through_and_reports_the_programs_exit_status,
    |dir| {
        let script = "echo to-stdout; echo to-stderr >&2; exit 7";
        let bare = with_input(
            Command::new("sh")
                .args(["-c", script])
                .current_dir(&dir.path),
            b"",
        );
        let (code, out, err) = with_input(&mut exec(&dir, &[], &["sh", "-c", script]), b"");
        assert_eq!(bare.0, 7);
        assert_eq!((out, err), (bare.1, bare.2), "streams as bare");
        // mpaudit's own status keeps its meaning (3: the job failed); the
        // program's is in the report.
        assert_eq!(code, 3);
        let r = report(&dir);
        assert_eq!(r["workers"][0]["exit_code"], 7, "{r:#}");
        let (code, _, _) = with_input(&mut exec(&dir, &[], &["true"]), b"");
        assert_eq!(code, 0);
    }
);

/// Runs `sh -c script` on a pseudo-terminal (script(1)), with `input`
/// typed on it; what the terminal showed.
fn on_a_terminal(dir: &TestDir, script: &str, input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("script")
        .current_dir(&dir.path)
        .args(["-qec", script, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    // A program stopped in the background (SIGTTIN) would hang here.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "hung on the terminal: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    shown.replace('\r', "")
}

e2e!(regression_exec_keeps_a_terminal_a_terminal, |dir| {
    let probe = "for fd in 0 1 2; do test -t $fd && echo fd$fd-tty || echo fd$fd-not; done";
    let cmd = format!(
        "{} exec --preload {} --report report.json -- sh -c '{probe}'",
        artifacts().runner.display(),
        lib().display()
    );
    let bare = on_a_terminal(&dir, &format!("sh -c '{probe}'"), b"");
    assert_eq!(bare, "fd0-tty\nfd1-tty\nfd2-tty\n");
    assert_eq!(on_a_terminal(&dir, &cmd, b""), bare);
});

e2e!(
    exec_program_reads_the_terminal_as_its_foreground_job,
    |dir| {
        // In a background process group, reading the terminal stops the
        // program (SIGTTIN): it must hold the terminal as a shell job would.
        let cmd = format!(
            "{} exec --preload {} --format json --report report.json -- sh -c 'read line; echo got $line'",
            artifacts().runner.display(),
            lib().display()
        );
        let shown = on_a_terminal(&dir, &cmd, b"hello\n");
        assert!(shown.contains("got hello"), "{shown}");
        assert_eq!(report(&dir)["workers"][0]["exit_code"], 0);
    }
);

e2e!(exec_labels_the_lines_of_several_workers, |dir| {
    let (code, out, err) = with_input(
        &mut exec(
            &dir,
            &["--workers", "2"],
            &[
                "sh",
                "-c",
                "echo one; echo two; echo oops >&2; printf 'no newline'",
            ],
        ),
        b"",
    );
    assert_eq!(code, 0, "{err}");
    for (stream, want) in [
        (&out, ["one", "two", "no newline"].as_slice()),
        (&err, ["oops"].as_slice()),
    ] {
        for k in 0..2 {
            let mine: Vec<&str> = stream
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{k}: ")))
                .collect();
            assert_eq!(mine, want, "worker {k} in order: {stream}");
        }
        assert!(
            stream
                .lines()
                .all(|l| l.starts_with("0: ") || l.starts_with("1: ")),
            "{stream}"
        );
    }
    for k in 0..2 {
        let wd = dir.join(&format!("mpaudit-workers/worker_{k}"));
        assert_eq!(
            std::fs::read_to_string(wd.join("stdout.log")).unwrap(),
            "one\ntwo\nno newline",
            "the log keeps the output as written"
        );
        assert_eq!(
            std::fs::read_to_string(wd.join("stderr.log")).unwrap(),
            "oops\n"
        );
    }
});

/// A read-only directory: a tmpfs mounted on `dir` and remounted read-only
/// (chmod is no obstacle to root). `None` when mounting is not permitted.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn mount(dir: &std::path::Path, file: &str) -> Option<ReadOnly> {
        std::fs::create_dir_all(dir).unwrap();
        let sh = |c: &str| {
            Command::new("sh")
                .args(["-c", c])
                .status()
                .is_ok_and(|s| s.success())
        };
        let d = dir.display();
        if !sh(&format!("mount -t tmpfs mpaudit-ro '{d}'")) {
            return None;
        }
        let ro = ReadOnly(dir.to_path_buf());
        std::fs::write(dir.join(file), "input\n").unwrap();
        sh(&format!("mount -o remount,ro '{d}'")).then_some(ro)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

e2e!(regression_exec_runs_from_a_read_only_job_directory, |dir| {
    let job = dir.join("release");
    let Some(_ro) = ReadOnly::mount(&job, "data.txt") else {
        eprintln!(
            "SKIPPED: cannot mount a read-only tmpfs here (not root, or no mount permission)"
        );
        return;
    };
    assert!(
        std::fs::write(job.join("probe"), "").is_err(),
        "the job directory is read-only"
    );
    let w = dir.join("w");
    let l = dir.join("l");
    let out = Command::new(&artifacts().runner)
        .current_dir(&job)
        .args(["exec", "--preload"])
        .arg(lib())
        .arg("--workers-dir")
        .arg(&w)
        .arg("--log-dir")
        .arg(&l)
        .args(["--format", "json", "--", "cat", "data.txt"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "input\n");
    let r: Value = serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert!(r["summary"]["events"].as_u64().unwrap_or(0) > 0, "{r:#}");
    assert!(w.join("worker_0").is_dir() && l.is_dir());
});

/// Drives an interactive bash on a pseudo-terminal: runs argv[1] (a
/// command line), presses Ctrl-Z once `started` shows, checks the job's
/// process (pid in ./w.pid) is stopped, types `fg`, and waits for the end.
const CTRL_Z_ON_A_TERMINAL: &str = r#"
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
buf = b""
def until(needle, t=60):
    global buf
    end = time.time() + t
    while needle not in buf and time.time() < end:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                buf += os.read(fd, 4096)
            except OSError:
                break
    if needle not in buf:
        sys.exit("never saw %r in %r" % (needle, buf))
def state(p):
    with open("/proc/%d/stat" % p) as f:
        return f.read().rsplit(")", 1)[1].split()[0]
os.write(fd, (sys.argv[1] + "\n").encode())
until(b"started\r\n")
os.write(fd, b"\x1a")
until(b"Stopped", 20)
worker = int(open("w.pid").read())
print("worker while stopped:", state(worker))
os.write(fd, b"fg\n")
until(b"finished")
os.write(fd, b"echo status=$?\n")
until(b"status=0", 10)
print(buf.decode(errors="replace"))
os.write(fd, b"exit\n")
"#;

e2e!(
    exec_ctrl_z_on_a_terminal_stops_the_program_and_fg_resumes_it,
    |dir| {
        if Command::new("python3")
            .arg("-c")
            .arg("import pty")
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("SKIPPED: python3 with the pty module is needed for this test");
            return;
        }
        // The terminal's Ctrl-Z reaches the program's group (it holds the
        // terminal); mpaudit must stop too, so that the shell gets it back.
        let line = format!(
        "{} exec --preload {} --outputs w.pid --report report.json -- sh -c 'echo $$ > w.pid; echo started; sleep 1; echo finished'",
        artifacts().runner.display(),
        lib().display()
    );
        let out = run(
            Command::new("python3").current_dir(&dir.path).args([
                "-c",
                CTRL_Z_ON_A_TERMINAL,
                &line,
            ]),
            DEADLINE,
        );
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{shown}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(shown.contains("worker while stopped: T"), "{shown}");
        assert!(shown.contains("status=0"), "{shown}");
    }
);

e2e!(
    kill_9_of_mpaudit_during_a_merge_leaves_no_merge_process,
    |dir| {
        merge_job(
            &dir,
            "",
            "echo $$ > merge.pid; sleep 300 & echo $! > merge-child.pid; wait",
        );
        let mut child = runner(&dir, "5s").spawn().unwrap();
        let pids = [
            pid_file(&dir, "merge.pid"),
            pid_file(&dir, "merge-child.pid"),
        ];
        send(&child, libc::SIGKILL);
        child.wait().unwrap();
        wait_within(
            Duration::from_secs(30),
            "the merge command and its child gone",
            || pids.iter().all(|&p| gone(p)),
        );
    }
);

e2e!(exec_merges_by_rules_given_on_the_command_line, |dir| {
    // Two workers each write their number into the same two names; redirect
    // gives each its own copy; the command-line rules merge them back.
    let script = "echo $MPAUDIT_WORKER > out.txt; echo w$MPAUDIT_WORKER >> sorted.txt";
    let (code, _, err) = with_input(
        &mut exec(
            &dir,
            &[
                "--workers",
                "2",
                "--action",
                "redirect",
                "--merge",
                "out.txt=concat",
                "--merge",
                "sorted.txt=sort -r -o {output} {inputs}",
            ],
            &["sh", "-c", script],
        ),
        b"",
    );
    let r = report(&dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "0\n1\n",
        "{r}\n{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("sorted.txt")).unwrap(),
        "w1\nw0\n",
        "{r}"
    );
    let merges: Vec<(String, String)> = r["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap_or_default().to_owned(),
                m["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(merges.len(), 2, "{r}");
    assert!(merges.iter().all(|(_, s)| s == "merged"), "{r}");
    // Every conflict was merged: none is left to fail the audit.
    assert_eq!(r["summary"]["unresolved_conflicts"], 0, "{r}");
    // The rogue writes themselves still fail the audit (exit 1, not 0 or 3).
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["summary"]["merge_failures"], 0, "{r}");
});

e2e!(exec_refuses_a_bad_merge_rule_before_starting, |dir| {
    let (code, _, err) = with_input(
        &mut exec(
            &dir,
            &["--merge", "hist.root=hadd -f {output}"],
            &["sh", "-c", "echo ran > ran.txt"],
        ),
        b"",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--merge 'hist.root=hadd -f {output}'") && err.contains("{inputs}"),
        "{err}"
    );
    assert!(!dir.join("ran.txt").exists(), "nothing ran");
    assert!(!dir.join("mpaudit-workers").exists(), "nothing created");
});
