//! The runner's seccomp supervisor: programs the preload library cannot
//! audit (static C, Go static and dynamic, liburing users, and any the job
//! names) are audited through seccomp user notification. Each test runs a
//! real program directly under `mpaudit exec`, and compares with the bare
//! run where the program's own behaviour matters.

use mpaudit_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// `mpaudit exec --format json --report FILE ARGS -- PROG PROG_ARGS` in
/// `dir`: the program's own output (one worker: its very streams) and the
/// report.
fn exec(dir: &TestDir, args: &[&str], prog: &Path, prog_args: &[&str]) -> (Output, Value) {
    let report_file = dir.join("report.json");
    let _ = std::fs::remove_file(&report_file);
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(&dir.path)
        .args(["exec", "--format", "json", "--report"])
        .arg(&report_file)
        .arg("--preload")
        .arg(lib())
        .args(args)
        .arg("--")
        .arg(prog)
        .args(prog_args);
    let out = run(&mut c, DEADLINE);
    let text = std::fs::read(&report_file).unwrap_or_default();
    let report: Value = serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}): stdout={} stderr={}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

/// The events in the run's log directory (not the run's own metadata).
fn supervised_events(dir: &TestDir) -> Vec<Value> {
    read_events(&dir.join("mpaudit-logs"))
        .0
        .into_iter()
        .filter(|e| e["v"] == 1)
        .collect()
}

/// The access events on `name` (file name), all of which must come from
/// the supervisor.
fn writes_to<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    let w = accesses(events, name);
    for e in &w {
        assert_eq!(e["via"], "seccomp", "{e}");
    }
    w
}

/// "N call(s) stopped" from the supervisor's closing line.
fn calls_stopped(out: &Output) -> u64 {
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("mpaudit: seccomp supervisor"))
        .unwrap_or_else(|| panic!("no supervisor line in: {err}"));
    let after = line.split("): ").nth(1).expect("count");
    after.split(' ').next().unwrap().parse().expect("a number")
}

fn exit_code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

e2e!(a_static_program_started_directly_is_audited, |dir| {
    let prog = fixture("static_writer");
    run_ok(&mut dir.bare(&prog));
    assert!(dir.join("static-out.txt").exists(), "the bare run writes");
    std::fs::remove_file(dir.join("static-out.txt")).unwrap();

    let (out, report) = exec(&dir, &["--workers", "1"], &prog, &[]);
    assert_eq!(
        exit_code(&out),
        1,
        "rogue write: exit 1, not ok; {report:#}"
    );
    assert!(
        dir.join("static-out.txt").exists(),
        "log mode lets it write"
    );
    let ev = supervised_events(&dir);
    let w = writes_to(&ev, "static-out.txt");
    assert_eq!(w.len(), 1, "{ev:#?}");
    let abs = dir.join("static-out.txt");
    assert_eq!(w[0]["abs"], abs.to_str().unwrap());
    assert_eq!(w[0]["verdict"], "rogue");
    assert_eq!(w[0]["action"], "logged");
    assert_eq!(w[0]["worker"], 0);
    assert_eq!(w[0]["pid"], report["workers"][0]["pid"]);
    assert_eq!(report["summary"]["rogue_writes"], 1);
    assert!(calls_stopped(&out) >= 2, "the exec and the open");
});

e2e!(a_static_programs_rogue_write_is_denied_with_eacces, |dir| {
    let prog = fixture("static_writer");
    let (out, report) = exec(&dir, &["--workers", "1", "--action", "deny"], &prog, &[]);
    assert_eq!(exit_code(&out), 1, "{report:#}");
    assert!(!dir.join("static-out.txt").exists(), "deny creates nothing");
    let ev = supervised_events(&dir);
    let w = writes_to(&ev, "static-out.txt");
    assert_eq!(w.len(), 1, "{ev:#?}");
    assert_eq!(
        (&w[0]["action"], &w[0]["errno"], &w[0]["result"]),
        (&"denied".into(), &"EACCES".into(), &Value::from(-1))
    );
});

e2e!(
    a_supervised_job_writing_only_declared_outputs_exits_0,
    |dir| {
        let prog = fixture("static_writer");
        let (out, report) = exec(
            &dir,
            &["--workers", "1", "--outputs", "static-out.txt"],
            &prog,
            &[],
        );
        assert_eq!(exit_code(&out), 0, "{report:#}");
        let ev = supervised_events(&dir);
        let w = writes_to(&ev, "static-out.txt");
        assert_eq!(w.len(), 1);
        assert_eq!(w[0]["verdict"], "declared");
        assert_eq!(w[0]["action"], "none");
    }
);

e2e!(read_only_opens_are_not_stopped_by_the_filter, |dir| {
    let prog = fixture("static_loops");
    let (out, _) = exec(
        &dir,
        &["--workers", "1", "--outputs", "*.txt"],
        &prog,
        &["read", "1000"],
    );
    assert_eq!(exit_code(&out), 0);
    // The exec and the one creating open; none of the 1000 reads.
    let reads = calls_stopped(&out);
    assert!(reads <= 3, "{reads} calls stopped for 1000 read-only opens");
    let (out, _) = exec(
        &dir,
        &["--workers", "1", "--outputs", "*.txt"],
        &prog,
        &["write", "1000"],
    );
    assert_eq!(exit_code(&out), 0);
    let writes = calls_stopped(&out);
    assert!(writes >= 1001, "every creating open is stopped: {writes}");
});

/// Go programs: `os.WriteFile` makes its own system calls.
fn go_writes_are_seen(dir: &TestDir, name: &str) {
    let Some(prog) = go_fixture(name) else { return };
    run_ok(&mut dir.bare(&prog));
    assert!(dir.join("go-out.txt").exists(), "the bare run writes");
    std::fs::remove_file(dir.join("go-out.txt")).unwrap();

    let (out, report) = exec(dir, &["--workers", "2"], &prog, &[]);
    assert_eq!(exit_code(&out), 1, "{report:#}");
    let ev = supervised_events(dir);
    let w = writes_to(&ev, "go-out.txt");
    // One per worker: a dynamic (cgo) program is not also preloaded, so
    // nothing is logged twice.
    assert_eq!(w.len(), 2, "{ev:#?}");
    for k in 0..2u64 {
        let e = w.iter().find(|e| e["worker"] == k).expect("worker's write");
        assert_eq!(e["verdict"], "rogue");
        assert_eq!(
            e["pid"], report["workers"][k as usize]["pid"],
            "the worker that wrote"
        );
    }
    assert!(
        ev.iter().all(|e| e["via"] == "seccomp"),
        "only the supervisor logged: {ev:#?}"
    );
}

/// Deny: the call fails with EACCES, which the Go program reports.
fn go_writes_are_denied(dir: &TestDir, name: &str) {
    let Some(prog) = go_fixture(name) else { return };
    let (out, report) = exec(dir, &["--workers", "1", "--action", "deny"], &prog, &[]);
    // The program fails (exit 3) when its write is refused: the job failed.
    assert_eq!(exit_code(&out), 3, "{report:#}");
    assert_eq!(report["summary"]["rogue_writes"], 1);
    assert_eq!(report["workers"][0]["exit_code"], 3, "{report:#}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    assert!(!dir.join("go-out.txt").exists());
}

e2e!(a_static_go_programs_write_is_a_rogue_write, |dir| {
    go_writes_are_seen(&dir, "go_static");
});

e2e!(
    a_dynamic_go_programs_write_is_a_rogue_write_logged_once,
    |dir| {
        go_writes_are_seen(&dir, "go_cgo");
    }
);

e2e!(a_static_go_programs_write_is_denied, |dir| {
    go_writes_are_denied(&dir, "go_static");
});

e2e!(a_dynamic_go_programs_write_is_denied, |dir| {
    go_writes_are_denied(&dir, "go_cgo");
});

e2e!(
    io_uring_fails_with_enosys_and_the_fallback_is_audited,
    |dir| {
        let Some(prog) = uring_fixture() else { return };
        let bare = run_ok(&mut dir.bare(&prog));
        assert_eq!(
            stdout(&bare).trim(),
            "io_uring openat",
            "the kernel has io_uring, so the test means something"
        );
        std::fs::remove_file(dir.join("uring-out.txt")).unwrap();
        let (out, report) = exec(&dir, &["--workers", "1"], &prog, &[]);
        assert_eq!(exit_code(&out), 1, "{report:#}");
        assert_eq!(
            stdout(&out).trim(),
            "io_uring unavailable: Function not implemented; fallback openat"
        );
        assert_eq!(
            std::fs::read(dir.join("uring-out.txt")).unwrap(),
            b"uring\n"
        );
        let ev = supervised_events(&dir);
        let w = writes_to(&ev, "uring-out.txt");
        assert_eq!((w.len(), &w[0]["verdict"]), (1, &"rogue".into()));
    }
);

e2e!(
    io_uring_allowed_lists_the_process_as_not_fully_audited,
    |dir| {
        let Some(prog) = uring_fixture() else { return };
        std::fs::write(
            dir.join("job.toml"),
            format!(
                "[job]\ncommand = [{:?}]\n[audit]\nio_uring = \"allow\"\n",
                prog.to_str().unwrap()
            ),
        )
        .unwrap();
        let mut c = Command::new(&artifacts().runner);
        c.current_dir(&dir.path)
            .args(["run", "job.toml", "--format", "json", "--preload"])
            .arg(lib());
        let out = run(&mut c, DEADLINE);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let said =
            std::fs::read_to_string(dir.join("mpaudit-workers/worker_0/stdout.log")).unwrap();
        assert_eq!(said.trim(), "io_uring openat");
        let listed = report["unaudited"].to_string();
        assert!(
            listed.contains("io_uring") && listed.contains("uring_writer"),
            "{report:#}"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("not audited"));
    }
);

e2e!(
    a_program_named_with_supervise_is_audited_by_the_supervisor_only,
    |dir| {
        let (out, report) = exec(
            &dir,
            &["--workers", "1", "--supervise"],
            Path::new("/bin/sh"),
            &["-c", "echo x > named.txt"],
        );
        assert_eq!(exit_code(&out), 1, "{report:#}");
        let ev = supervised_events(&dir);
        let w = writes_to(&ev, "named.txt");
        assert_eq!(w.len(), 1, "logged once, by the supervisor: {ev:#?}");
        assert_eq!(w[0]["worker"], 0);
    }
);

/// Without the runner, an exec of a program the preload cannot audit is
/// logged as unaudited with its reason, and named on stderr once.
fn exec_without_runner_is_unaudited(dir: &TestDir, prog: &Path, reason: &str) {
    let out = run(
        dir.audited(fixture("probe"))
            .args(["exec", prog.to_str().unwrap()]),
        DEADLINE,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("mpaudit: not audited ({reason}): {}", prog.display());
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("mpaudit: not audited"))
            .collect::<Vec<_>>(),
        [want.as_str()],
        "{err}"
    );
    let ev = dir.events();
    let exec = ev
        .iter()
        .find(|e| e["op"] == "exec" && e["result"].is_null())
        .expect("exec event");
    assert_eq!(
        (&exec["audited"], &exec["reason"]),
        (&Value::Bool(false), &Value::from(reason)),
        "{exec}"
    );
}

e2e!(
    a_static_program_execed_without_the_runner_is_named_on_stderr,
    |dir| {
        exec_without_runner_is_unaudited(&dir, &fixture("static_writer"), "static");
    }
);

e2e!(
    a_dynamic_go_program_execed_without_the_runner_is_unaudited,
    |dir| {
        let Some(prog) = go_fixture("go_cgo") else {
            return;
        };
        exec_without_runner_is_unaudited(&dir, &prog, "go");
    }
);

e2e!(
    a_static_go_program_execed_without_the_runner_is_unaudited,
    |dir| {
        let Some(prog) = go_fixture("go_static") else {
            return;
        };
        exec_without_runner_is_unaudited(&dir, &prog, "go");
    }
);

e2e!(
    under_the_runner_an_unaudited_exec_is_reported_not_printed,
    |dir| {
        let prog = fixture("static_writer");
        let script = format!("{} && echo done", prog.display());
        let (out, report) = exec(
            &dir,
            &["--workers", "1"],
            Path::new("/bin/sh"),
            &["-c", &script],
        );
        assert!(out.status.code().is_some());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("not audited"),
            "the program's stderr is its own: {err}"
        );
        let listed = report["unaudited"].to_string();
        assert!(listed.contains("static_writer"), "{report:#}");
    }
);

// Regression: the supervisor judged with the job's allow globs only, not
// the ones the library always adds (/proc, /sys, the log and workers
// directories), so a supervised write there was a rogue write.
e2e!(the_supervisor_allows_what_the_library_allows, |dir| {
    let prog = fixture("static_loops");
    std::fs::create_dir_all(dir.join("mpaudit-workers/worker_0")).unwrap();
    for target in ["mpaudit-workers/worker_0/own.txt", "/dev/null"] {
        let (out, report) = exec(&dir, &["--workers", "1"], &prog, &["write", "1", target]);
        assert_eq!(exit_code(&out), 0, "{target}: {report:#}");
    }
    let ev = supervised_events(&dir);
    let w = writes_to(&ev, "own.txt");
    assert_eq!((w.len(), &w[0]["verdict"]), (1, &"allowed".into()));
});

// Under a launcher the supervisor's events and log names carry the rank
// and the node, as the library's do, in the rank's own log directory.
e2e!(a_supervised_rank_logs_its_rank_and_node, |dir| {
    let prog = fixture("static_writer");
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(&dir.path)
        .args(["exec", "-q", "--workers", "1", "--preload"])
        .arg(lib())
        .arg("--")
        .arg(&prog)
        .env("PMI_RANK", "3")
        .env("PMI_SIZE", "1");
    let out = run(&mut c, DEADLINE);
    assert_eq!(exit_code(&out), 1, "{}", stdout(&out));
    let logs = dir.join("mpaudit-logs/rank_3");
    let node = String::from_utf8(run_ok(Command::new("uname").arg("-n")).stdout).unwrap();
    let node = node.trim();
    let names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let safe: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    assert!(
        names[0].starts_with(&format!("mpaudit-{safe}-r3-")),
        "{names:?}"
    );
    let ev: Vec<Value> = read_events(&logs)
        .0
        .into_iter()
        .filter(|e| e["v"] == 1)
        .collect();
    let w = writes_to(&ev, "static-out.txt");
    assert_eq!(w.len(), 1);
    assert_eq!(
        (&w[0]["rank"], &w[0]["node"], &w[0]["worker"]),
        (&3.into(), &node.into(), &0.into())
    );
});
