//! Workers isolated from each other and from the audit's logs, one verdict
//! per file whatever its spelling, and the gates that stop a falsely green
//! run when the logs were tampered with or a process left no closing
//! record (issue 12 "Workers are not isolated", "Spellings"; review
//! findings F3, F4, F5, W3).

use mpaudit_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn report_json(cwd: &Path, dir: &str) -> (i32, Value) {
    let out = run(
        mpaudit(cwd).args(["report", dir, "--format", "json"]),
        DEADLINE,
    );
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {} {}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn reasons(r: &Value) -> Vec<String> {
    r["summary"]["incomplete"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["reason"].as_str().map(str::to_owned))
        .collect()
}

fn rogue_paths(r: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for g in r["rogue"].as_array().into_iter().flatten() {
        for p in g["paths"].as_array().into_iter().flatten() {
            out.push(p["path"].as_str().unwrap_or_default().to_owned());
        }
    }
    out
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
}

/// Worker 3 writes its own `x`; worker 2 waits for it and writes the same
/// path, inside worker 3's directory.
const INTO_WORKER_3: &str = "case $MPAUDIT_WORKER in \
     3) mkdir -p mpaudit-workers/worker_3 && echo 3 > mpaudit-workers/worker_3/x ;; \
     2) while [ ! -s mpaudit-workers/worker_3/x ]; do sleep 0.01; done; \
        echo 2 > mpaudit-workers/worker_3/x ;; \
     esac";

// Regression: every worker could write anywhere under the workers
// directory (it was "allowed"): worker 2's write landed in place in
// `worker_3/x` and the report said ok.
e2e!(
    a_worker_writing_into_another_workers_directory_is_rogue,
    |dir| {
        // Bare, the second writer's bytes end up in worker 3's file.
        for k in ["3", "2"] {
            let out = run(
                dir.bare("sh")
                    .args(["-c", INTO_WORKER_3])
                    .env("MPAUDIT_WORKER", k),
                DEADLINE,
            );
            assert!(out.status.success());
        }
        assert_eq!(read(dir.join("mpaudit-workers/worker_3/x")), "2\n");
        std::fs::remove_dir_all(dir.join("mpaudit-workers")).unwrap();

        // Logged: the same bytes land in place, and the write is rogue.
        let (code, r, _) = exec_sh(&dir.path, &["--workers", "4"], INTO_WORKER_3);
        assert_eq!(code, 1, "{:#}", r["summary"]);
        assert_eq!(
            rogue_paths(&r),
            ["mpaudit-workers/worker_3/x"],
            "{:#}",
            r["rogue"]
        );
        assert_eq!(r["rogue"][0]["workers"], serde_json::json!(["2"]));
        assert_eq!(read(dir.join("mpaudit-workers/worker_3/x")), "2\n");

        // Redirected: worker 2's write goes into its own directory, as the
        // mapping table of docs/policy.md says; worker 3's file keeps its bytes.
        let (code, r, _) = exec_sh(
            &dir.path,
            &["--workers", "4", "--action", "redirect"],
            INTO_WORKER_3,
        );
        assert_eq!(code, 1, "{:#}", r["summary"]);
        assert_eq!(read(dir.join("mpaudit-workers/worker_3/x")), "3\n");
        assert_eq!(
            read(dir.join("mpaudit-workers/worker_2/mpaudit-workers/worker_3/x")),
            "2\n"
        );
    }
);

// Regression: a worker running `rm -rf ./*` deleted worker 0's redirected
// result, its stdout and most event logs, and the report said "ok".
e2e!(
    rm_rf_in_one_worker_cannot_erase_the_others_or_the_logs,
    |dir| {
        let script = "if [ $MPAUDIT_WORKER = 0 ]; then echo 0 > out.txt; \
                  else while [ ! -s mpaudit-workers/worker_0/out.txt ]; do sleep 0.01; done; \
                  rm -rf ./*; fi";
        let (code, r, _) = exec_sh(
            &dir.path,
            &["--workers", "2", "--action", "redirect"],
            script,
        );
        // Worker 1's rm cannot empty its own directory either: the audit's
        // files in it (captured output, manifest, redirect table) are
        // guarded (review 2, F13), so rm says "Directory not empty" there
        // and the job fails: exit 3, never "ok".
        assert_eq!(code, 3, "{:#}", r["summary"]);
        assert!(
            r["workers"]
                .to_string()
                .contains("worker_1': Directory not empty"),
            "{:#}",
            r["workers"]
        );
        assert_eq!(read(dir.join("mpaudit-workers/worker_0/out.txt")), "0\n");
        // Worker 0's write is still in the report, with its log.
        assert!(
            rogue_paths(&r).contains(&"out.txt".to_owned()),
            "{:#}",
            r["rogue"]
        );
        assert!(reasons(&r).is_empty(), "{:#}", r["summary"]["incomplete"]);
        let (code, r) = report_json(&dir.path, "mpaudit-logs");
        assert_eq!(
            code, 3,
            "the report remembers the failed job: {:#}",
            r["summary"]
        );

        // Logged (in place): rm really removes the logs, and the run must not
        // pass for complete.
        let _ = std::fs::remove_dir_all(dir.join("mpaudit-logs"));
        let _ = std::fs::remove_dir_all(dir.join("mpaudit-workers"));
        let script = "if [ $MPAUDIT_WORKER = 0 ]; then echo 0 > out.txt; \
                  else while [ ! -s out.txt ]; do sleep 0.01; done; rm -rf ./*; fi";
        let (code, r, _) = exec_sh(
            &dir.path,
            &["--workers", "2", "--outputs", "out.txt"],
            script,
        );
        assert_eq!(code, 4, "{:#}", r["summary"]);
        assert!(
            reasons(&r).contains(&"log_tampered".to_owned()),
            "{:#}",
            r["summary"]["incomplete"]
        );
    }
);

// Regression (W3): `rm -rf mpaudit-logs` during the run was reported as
// "no process loaded libmpaudit.so".
e2e!(a_removed_log_directory_is_said_to_be_removed, |dir| {
    for script in ["rm -rf mpaudit-logs", "rm -rf mpaudit-logs/*"] {
        let (code, r, _) = exec_sh(&dir.path, &["--outputs", "*"], script);
        assert_eq!(code, 4, "{script}: {:#}", r["summary"]);
        let rs = reasons(&r);
        assert!(rs.contains(&"log_tampered".to_owned()), "{script}: {rs:?}");
        assert!(
            !rs.iter().any(|r| r == "no_library" || r == "not_preloaded"),
            "{script}: {rs:?}"
        );
        let detail = r["summary"]["incomplete"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["reason"] == "log_tampered")
            .and_then(|i| i["detail"].as_str())
            .unwrap();
        assert!(
            detail.contains("the log directory was removed or emptied"),
            "{detail}"
        );
    }
    // Emptied after the run: the report says it may have been.
    let (_, _, _) = exec_sh(&dir.path, &[], "true");
    for f in std::fs::read_dir(dir.join("mpaudit-logs")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out = run(
        mpaudit(&dir.path).args(["report", "mpaudit-logs"]),
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stdout(&out).contains("the log directory was removed or emptied"),
        "{}",
        stdout(&out)
    );
});

// Regression (F4): deleting one process's log made its conflict disappear
// (`mpaudit report` then said ok); a process writing in the log directory
// went unnoticed.
e2e!(a_deleted_log_is_missing_not_clean, |dir| {
    let (code, r, _) = exec_sh(
        &dir.path,
        &["--workers", "2", "--outputs", "same.txt"],
        "echo $MPAUDIT_WORKER > same.txt",
    );
    assert_eq!(code, 1, "{:#}", r["summary"]);
    assert_eq!(r["conflicts"][0]["path"], "same.txt");
    // Delete worker 1's log by hand, after the run.
    let logs = dir.join("mpaudit-logs");
    let mut deleted = 0;
    for f in std::fs::read_dir(&logs).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "jsonl")
            && read_log_file(&p).0.iter().any(|e| e["worker"] == 1)
        {
            std::fs::remove_file(&p).unwrap();
            deleted += 1;
        }
    }
    assert!(deleted > 0);
    let (code, r) = report_json(&dir.path, "mpaudit-logs");
    assert_eq!(code, 4, "{:#}", r["summary"]);
    assert!(
        reasons(&r).contains(&"missing_log".to_owned()),
        "{:#}",
        r["summary"]["incomplete"]
    );

    // A forked child's log deleted: its parent's `fork` event names it.
    let _ = std::fs::remove_dir_all(&logs);
    let (code, r, _) = exec_sh(
        &dir.path,
        &["--workers", "2", "--outputs", "same.txt"],
        "(echo $MPAUDIT_WORKER > same.txt); true",
    );
    assert_eq!(code, 1, "{:#}", r["summary"]);
    for f in std::fs::read_dir(&logs).unwrap() {
        let p = f.unwrap().path();
        let evs = read_log_file(&p).0;
        if evs
            .iter()
            .any(|e| e["worker"] == 1 && e["kind"] == "access")
        {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let (code, r) = report_json(&dir.path, "mpaudit-logs");
    assert_eq!(code, 4, "{:#}", r["summary"]);
    assert!(reasons(&r).contains(&"missing_log".to_owned()));

    // The job deleting a log itself: the `unlink` in the log directory.
    let _ = std::fs::remove_dir_all(&logs);
    let (code, r, _) = exec_sh(
        &dir.path,
        &["--workers", "2", "--outputs", "same.txt"],
        "echo $MPAUDIT_WORKER > same.txt; [ $MPAUDIT_WORKER = 1 ] && rm -f mpaudit-logs/mpaudit-$$-*.jsonl; true",
    );
    assert_eq!(code, 4, "{:#}", r["summary"]);
    let rs = reasons(&r);
    assert!(rs.contains(&"log_tampered".to_owned()), "{rs:?}");
    assert!(rs.contains(&"missing_log".to_owned()), "{rs:?}");
});

// Regression (F5): a raw `syscall(SYS_execve)` of a static program was not
// seen, and the run said ok. Through libc's syscall() the library now sees
// the exec and hands the program to the supervisor (its write is rogue); an
// exec made with the program's own instruction stays unseen, and the gate
// on a log without its closing record keeps the run from being green.
e2e!(a_log_without_its_closing_record_is_incomplete, |dir| {
    let raw = fixture("raw_execve");
    let stat = fixture("static_writer");
    for how in ["libc", "inline"] {
        let out = run(dir.bare(&raw).arg(how).arg(&stat), DEADLINE);
        assert!(out.status.success(), "{how}");
        assert!(dir.join("static-out.txt").exists(), "{how}");
        std::fs::remove_file(dir.join("static-out.txt")).unwrap();
    }

    let script = format!("{} libc {}", raw.display(), stat.display());
    let (code, r, _) = exec_sh(&dir.path, &[], &format!("exec {script}"));
    assert_eq!(code, 1, "seen through syscall(): {:#}", r["summary"]);
    assert_eq!(r["summary"]["incomplete"], serde_json::json!([]));
    assert!(dir.join("static-out.txt").exists());
    std::fs::remove_file(dir.join("static-out.txt")).unwrap();

    let script = format!("{} inline {}", raw.display(), stat.display());
    let (code, r, _) = exec_sh(&dir.path, &[], &format!("exec {script}"));
    assert_eq!(code, 4, "{:#}", r["summary"]);
    assert!(
        reasons(&r).contains(&"unclosed_log".to_owned()),
        "{:#}",
        r["summary"]["incomplete"]
    );
    // Endings that are not a gap: exit, _exit, exec, a signal the runner
    // saw, a grandchild killed by a signal.
    for (script, want) in [
        ("true", 0),
        ("exec true", 0),
        ("exec sh -c 'exit 0'", 0),
        ("python3 -c 'import os; os._exit(0)'", 0),
        ("sh -c 'kill -9 $$'; true", 0),
        ("sh -c 'kill -ABRT $$'; true", 0),
        ("yes | head -n 1 >/dev/null", 0),
    ] {
        let (code, r, _) = exec_sh(&dir.path, &[], script);
        assert_eq!(code, want, "{script}: {:#}", r["summary"]);
        assert!(reasons(&r).is_empty(), "{script}: {:#}", r["summary"]);
    }
});

// Regression: `workers_dir = "."` (or "..") was accepted and made every
// write in the job directory "allowed".
e2e!(a_workers_dir_holding_the_job_dir_is_refused, |dir| {
    for (value, line) in [(".", 5), ("..", 5), ("/", 5)] {
        std::fs::write(
            dir.join("job.toml"),
            format!("[job]\ncommand = [\"true\"]\n\n[audit]\nworkers_dir = \"{value}\"\n"),
        )
        .unwrap();
        let out = run(mpaudit(&dir.path).args(["check", "job.toml"]), DEADLINE);
        assert_eq!(out.status.code(), Some(2), "{value}: {}", stdout(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("job.toml:{line}:1: key `audit.workers_dir`:")),
            "{value}: {err}"
        );
    }
    std::fs::write(
        dir.join("job.toml"),
        "[job]\ncommand = [\"true\"]\n\n[audit]\nworkers_dir = \"w\"\nlog_dir = \"w/worker_0/logs\"\n",
    )
    .unwrap();
    let out = run(mpaudit(&dir.path).args(["check", "job.toml"]), DEADLINE);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("job.toml:6:1: key `audit.log_dir`:"), "{err}");
    // On the command line.
    let (code, _, out) = {
        let out = run(
            mpaudit(&dir.path).args(["exec", "--workers-dir", ".", "--", "true"]),
            DEADLINE,
        );
        (out.status.code(), (), out)
    };
    assert_eq!(code, Some(2), "{}", String::from_utf8_lossy(&out.stderr));

    // The library given such a directory by hand allows nothing by it.
    let out = run(
        dir.audited("sh")
            .args(["-c", "echo x > job-file.txt"])
            .env("MPAUDIT_WORKERS_DIR", ".")
            .env("MPAUDIT_WORKER", "0"),
        DEADLINE,
    );
    assert!(out.status.success());
    let evs = dir.events();
    let w = accesses(&evs, "job-file.txt");
    assert!(!w.is_empty());
    assert!(w.iter().all(|e| e["verdict"] == "rogue"), "{w:?}");
});

// Regression: a job directory reached through a symlink: `$PWD/x` (the
// symlink's spelling) was judged by another rule than the resolved path;
// under /tmp both workers clobbered the same shared file and the run said
// ok.
e2e!(both_spellings_of_a_symlinked_job_dir_are_one_file, |dir| {
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _ = dir;
    let base =
        Gone(std::env::temp_dir().join(format!("mpaudit-isolation-link-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&base.0);
    let real = base.0.join("real");
    std::fs::create_dir_all(&real).unwrap();
    let link = base.0.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let script = "echo $MPAUDIT_WORKER > \"$PWD/x\"";
    let shared = real.join("x");
    let (code, r, _) = exec_sh(&link, &["--workers", "2", "--action", "redirect"], script);
    assert_eq!(code, 1, "{:#}", r["summary"]);
    assert!(!shared.exists(), "the shared file was written in place");
    assert_eq!(read(real.join("mpaudit-workers/worker_0/x")), "0\n");
    assert_eq!(read(real.join("mpaudit-workers/worker_1/x")), "1\n");
    assert_eq!(rogue_paths(&r), ["x"], "{:#}", r["rogue"]);
    // Logged: one rogue path, one clobber, whichever spelling.
    let _ = std::fs::remove_dir_all(real.join("mpaudit-workers"));
    let script = "if [ $MPAUDIT_WORKER = 0 ]; then echo 0 > \"$PWD/x\"; else echo 1 > x; fi";
    let (code, r, _) = exec_sh(&link, &["--workers", "2"], script);
    assert_eq!(code, 1, "{:#}", r["summary"]);
    assert_eq!(rogue_paths(&r), ["x"], "{:#}", r["rogue"]);
    let conflicts: Vec<&str> = r["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(conflicts, ["x"], "{:#}", r["conflicts"]);
});

// Review finding F3: aliases through symlinks and hard links hid a
// conflict (the report keyed conflicts by the name written).
e2e!(aliases_of_one_file_are_one_conflict, |dir| {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("data.txt"), "").unwrap();
    std::fs::hard_link(dir.join("data.txt"), dir.join("hard.txt")).unwrap();
    std::os::unix::fs::symlink(dir.join("sub"), dir.join("sublink")).unwrap();
    let script = "if [ $MPAUDIT_WORKER = 0 ]; then echo 0 >> data.txt; echo 0 > sub/f; \
                  else echo 1 >> hard.txt; echo 1 > sublink/f; fi";
    let (code, r, _) = exec_sh(
        &dir.path,
        &[
            "--workers",
            "2",
            "--outputs",
            "*.txt",
            "--outputs",
            "sub*/*",
        ],
        script,
    );
    assert_eq!(code, 1, "{:#}", r["summary"]);
    let conflicts: Vec<String> = r["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(conflicts.len(), 2, "{:#}", r["conflicts"]);
    assert!(conflicts.iter().any(|c| c == "sub/f"), "{conflicts:?}");
    assert!(
        conflicts.iter().any(|c| c == "data.txt" || c == "hard.txt"),
        "{conflicts:?}"
    );
});

// Regression (H5): a standard descriptor closed for `mpaudit exec`
// reached the program as /dev/null (Rust's start-up reopens fds 0-2).
e2e!(closed_standard_fds_stay_closed_under_exec, |dir| {
    // Which of fds 0 and 1 the program has, asked with fcntl (Python does
    // not reopen closed standard descriptors).
    std::fs::write(
        dir.join("probe.py"),
        "import fcntl, sys\nfor fd in (0, 1):\n    try:\n        fcntl.fcntl(fd, fcntl.F_GETFD)\n        sys.stderr.write(f'{fd} open\\n')\n    except OSError:\n        sys.stderr.write(f'{fd} closed\\n')\n",
    )
    .unwrap();
    let probe = "python3 probe.py";
    let runner = artifacts().runner.display().to_string();
    let bare = run(
        dir.bare("sh")
            .args(["-c", &format!("exec <&- >&-; sh -c '{probe}'")]),
        DEADLINE,
    );
    let audited = run(
        Command::new("sh").current_dir(&dir.path).args([
            "-c",
            &format!("exec <&- >&-; {runner} exec --report /dev/null -- {probe}"),
        ]),
        DEADLINE,
    );
    let bare_err = String::from_utf8_lossy(&bare.stderr);
    assert!(
        !bare_err.lines().any(|l| l == "0" || l == "1"),
        "{bare_err}"
    );
    assert_eq!(String::from_utf8_lossy(&audited.stderr), bare_err);
});

// Regression (H6): `mpaudit exec` exited 3 when its job died of SIGINT, so
// a shell loop around it went on after Ctrl-C.
e2e!(
    ctrl_c_stops_a_shell_loop_around_exec_as_around_the_program,
    |dir| {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        let runner = artifacts().runner.display().to_string();
        let body = "sh -c 'echo $$ > started.pid; exec sleep 30'";
        for (name, cmd) in [
            ("bare", body.to_string()),
            (
                "audited",
                format!("{runner} exec --report /dev/null -- {body}"),
            ),
        ] {
            let _ = std::fs::remove_file(dir.join("started.pid"));
            let script = format!("for i in 1 2; do {cmd}; echo after $i; done");
            let child = Command::new("bash")
                .current_dir(&dir.path)
                .args(["-c", &script])
                .env_remove("LD_PRELOAD")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .process_group(0)
                .spawn()
                .unwrap();
            let start = std::time::Instant::now();
            while !dir.join("started.pid").exists() {
                assert!(start.elapsed() < DEADLINE, "{name}: never started");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // Ctrl-C: SIGINT to the terminal's foreground group, the loop's.
            // SAFETY: kill(2) on the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
            let out = child.wait_with_output().unwrap();
            assert_eq!(stdout(&out), "", "{name}: the loop went on");
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGINT),
                "{name}: {:?}",
                out.status
            );
        }
        // Killed by SIGTERM: mpaudit ends by SIGTERM too; a crash stays 3.
        let term = run(
            mpaudit(&dir.path).args([
                "exec",
                "--report",
                "/dev/null",
                "--",
                "sh",
                "-c",
                "kill -TERM $$",
            ]),
            DEADLINE,
        );
        assert_eq!(
            term.status.signal(),
            Some(libc::SIGTERM),
            "{:?}",
            term.status
        );
        let segv = run(
            mpaudit(&dir.path).args([
                "exec",
                "--report",
                "/dev/null",
                "--",
                "sh",
                "-c",
                "kill -SEGV $$",
            ]),
            DEADLINE,
        );
        assert_eq!(segv.status.code(), Some(3));
    }
);
