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
