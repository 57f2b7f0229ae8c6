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
    events_under(&dir.path)
}

/// The events of the run in job directory `job`.
fn events_under(job: &Path) -> Vec<Value> {
    read_events(&job.join("mpaudit-logs"))
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

// Issue 11 item 1: a static program exec'd by a preloaded shell was listed
// as unaudited and its write unseen. Under the runner the library's exec
// hook installs the filter and hands the listener to the supervisor.
e2e!(
    a_static_program_execed_by_a_preloaded_shell_is_supervised,
    |dir| {
        let prog = fixture("static_writer");
        let script = format!("{} && echo done", prog.display());
        let (out, report) = exec(
            &dir,
            &["--workers", "1"],
            Path::new("/bin/sh"),
            &["-c", &script],
        );
        assert_eq!(exit_code(&out), 1, "rogue write: {report:#}");
        assert_eq!(stdout(&out).trim(), "done");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("not audited"), "{err}");
        assert_eq!(report["unaudited"], serde_json::json!([]), "{report:#}");
        let ev = supervised_events(&dir);
        let w = writes_to(&ev, "static-out.txt");
        assert_eq!(w.len(), 1, "{ev:#?}");
        assert_eq!(
            (&w[0]["verdict"], &w[0]["worker"], &w[0]["action"]),
            (&"rogue".into(), &0.into(), &"logged".into())
        );
        assert!(w[0]["result"].as_i64().is_some_and(|r| r >= 0), "{}", w[0]);
        // The exec is logged once, by the shell's library, as audited.
        let execs: Vec<&Value> = ev
            .iter()
            .filter(|e| e["op"] == "exec" && e["exe"].as_str() == prog.to_str())
            .collect();
        assert_eq!(execs.len(), 1, "{execs:#?}");
        assert_eq!(execs[0]["audited"], true);

        // Deny reaches it too.
        std::fs::remove_file(dir.join("static-out.txt")).unwrap();
        let (out, report) = exec(
            &dir,
            &["--workers", "1", "--action", "deny"],
            Path::new("/bin/sh"),
            &["-c", &script],
        );
        assert_eq!(exit_code(&out), 1, "{report:#}");
        assert!(!dir.join("static-out.txt").exists(), "deny creates nothing");
    }
);

// Static and cgo Go alike. Regression: a cgo (dynamic) Go program handed
// over kept the library in its LD_PRELOAD, so the supervisor judged the
// library's own log file a write of the job's into the log directory (exit
// 4, "the job wrote or removed 1 path(s) in the log directory", and the log
// listed as a rogue write).
e2e!(
    a_go_program_execed_by_a_preloaded_shell_is_supervised,
    |dir| {
        for name in ["go_static", "go_cgo"] {
            let Some(prog) = go_fixture(name) else {
                return;
            };
            let _ = std::fs::remove_file(dir.join("go-out.txt"));
            let _ = std::fs::remove_dir_all(dir.join("mpaudit-logs"));
            let (out, report) = exec(
                &dir,
                &["--workers", "1"],
                Path::new("/bin/sh"),
                &["-c", prog.to_str().unwrap()],
            );
            assert_eq!(exit_code(&out), 1, "{name}: {report:#}");
            assert_eq!(report["unaudited"], serde_json::json!([]), "{report:#}");
            assert_eq!(report["summary"]["rogue_writes"], 1, "{name}: {report:#}");
            let ev = supervised_events(&dir);
            let w = writes_to(&ev, "go-out.txt");
            assert_eq!((w.len(), &w[0]["verdict"]), (1, &"rogue".into()), "{ev:#?}");
        }
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

/// Runs `prog` bare in `<dir>/bare` and under `mpaudit exec` in
/// `<dir>/job`, both prepared by `setup`; returns (bare stdout, audited
/// output, report).
fn bare_and_audited(
    dir: &TestDir,
    prog: &Path,
    prog_args: &[&str],
    args: &[&str],
    setup: &dyn Fn(&Path),
) -> (String, Output, Value) {
    let bare_dir = dir.join("bare");
    std::fs::create_dir_all(&bare_dir).unwrap();
    setup(&bare_dir);
    let bare = run_ok(Command::new(prog).args(prog_args).current_dir(&bare_dir));
    let job = dir.join("job");
    std::fs::create_dir_all(&job).unwrap();
    setup(&job);
    let report_file = dir.join("report.json");
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(&job)
        .args(["exec", "--format", "json", "--report"])
        .arg(&report_file)
        .arg("--preload")
        .arg(lib())
        .args(args)
        .arg("--")
        .arg(prog)
        .args(prog_args);
    let out = run(&mut c, DEADLINE);
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap_or_default())
        .unwrap_or_else(|e| panic!("report: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (stdout(&bare), out, report)
}

fn redirect_setup(d: &Path) {
    std::fs::write(d.join("keep.txt"), "shared\n").unwrap();
    std::fs::write(d.join("keep-shared.txt"), "x").unwrap();
    std::fs::create_dir_all(d.join("sub")).unwrap();
}

// Issue 11 item 1 (redirect): a rogue write under redirect failed with
// EACCES ("redirect-failed"). Now the supervisor opens the worker's copy
// and hands the descriptor over (ADDFD): the program sees the same fds,
// results, errnos, contents and modes as bare, and later opens, stats,
// renames and removals of the path act on the worker's copy.
e2e!(
    redirect_gives_a_static_program_its_own_copy_and_its_own_view,
    |dir| {
        let prog = fixture("static_redirect");
        let (bare, out, report) = bare_and_audited(
            &dir,
            &prog,
            &[],
            &[
                "--workers",
                "1",
                "--action",
                "redirect",
                "--merge-dir",
                "merged",
            ],
            &redirect_setup,
        );
        assert_eq!(stdout(&out), bare, "the program sees what it sees bare");
        assert!(bare.contains("open rw.txt: 3"), "{bare}");
        assert_eq!(exit_code(&out), 1, "rogue writes, redirected: {report:#}");
        let job = dir.join("job");
        let w0 = job.join("mpaudit-workers/worker_0");
        // The shared directory is untouched.
        assert_eq!(
            std::fs::read_to_string(job.join("keep.txt")).unwrap(),
            "shared\n"
        );
        assert!(
            job.join("keep-shared.txt").exists(),
            "its unlink stayed in the worker"
        );
        for name in ["rw.txt", "rw2.txt", "made", "sub/deep.txt"] {
            assert!(!job.join(name).exists(), "{name} written in the shared dir");
        }
        // The worker's copies.
        assert_eq!(
            std::fs::read_to_string(w0.join("keep.txt")).unwrap(),
            "shared\nmore\n"
        );
        assert!(w0.join("made").is_dir());
        assert!(w0.join("sub/deep.txt").is_file());
        assert!(!w0.join("nodir").exists());
        let ev = events_under(&dir.join("job"));
        let opens = writes_to(&ev, "rw.txt");
        let first = opens
            .iter()
            .find(|e| e["op"] == "openat")
            .expect("the open");
        assert_eq!(
            (&first["action"], &first["result"], &first["target"]),
            (
                &"redirected".into(),
                &3.into(),
                &w0.join("rw.txt").to_str().unwrap().into()
            )
        );
        // The repair loop closes on the worker's copy (merged apart, so the
        // shared directory stays as it was for the checks above).
        assert_eq!(
            std::fs::read_to_string(job.join("merged/keep.txt")).unwrap(),
            "shared\nmore\n",
            "{report:#}"
        );
    }
);

// Review 2, F3 under the supervisor: a static program's hard link of a job
// file into scratch was judged by its new name only ("allowed"), and the
// append through that name changed the job file with no rogue event. The
// link is judged by its source too.
// Regression: under redirect, a supervised hard link of a job file into
// scratch was refused (EACCES), then, once the source was copied up, its
// new name was redirected into `worker_<k>/_abs/…`, whose parents do not
// exist (ENOENT). The library links the worker's copy where the new name
// is; so does the supervisor now: the write through the link reaches the
// worker's copy, never the shared file, and the run reports it.
e2e!(
    a_supervised_hard_link_of_a_job_file_into_scratch_links_the_workers_copy,
    |dir| {
        let (job, scratch) = (dir.join("job"), dir.join("scratch"));
        for d in [&job, &scratch] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(job.join("data.txt"), "orig\n").unwrap();
        let mut c = Command::new(&artifacts().runner);
        c.current_dir(&job)
            .env("TMPDIR", &scratch)
            .args(["exec", "-q", "--action", "redirect", "--workers-dir"])
            .arg(dir.join("workers"))
            .arg("--merge-dir")
            .arg(dir.join("merged"))
            .arg("--preload")
            .arg(lib())
            .args(["--workers", "1", "--"])
            .arg(fixture("static_redirect"))
            .arg("link-scratch");
        let out = run(&mut c, DEADLINE);
        assert!(
            stdout(&out).contains("link data.txt: 0") && stdout(&out).contains("write: 4"),
            "{}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "a rogue write is reported");
        assert_eq!(
            std::fs::read_to_string(job.join("data.txt")).unwrap(),
            "orig\n"
        );
        let copy = dir.join("workers/worker_0/data.txt");
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), "orig\ntmp\n");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(scratch.join("h")).unwrap().ino(),
            std::fs::metadata(&copy).unwrap().ino(),
            "the new name is a link to the worker's copy"
        );
    }
);

e2e!(
    a_supervised_hard_link_of_a_job_file_into_scratch_is_not_judged_allowed,
    |dir| {
        // Scratch outside the job directory (inside it, it is no scratch).
        let (job, scratch) = (dir.join("job"), dir.join("scratch"));
        for d in [&job, &scratch] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(job.join("data.txt"), "orig\n").unwrap();
        let report_file = dir.join("report.json");
        let mut c = Command::new(&artifacts().runner);
        c.current_dir(&job)
            .env("TMPDIR", &scratch)
            .args(["exec", "--format", "json", "--report"])
            .arg(&report_file)
            .arg("--preload")
            .arg(lib())
            .args(["--workers", "1", "--"])
            .arg(fixture("static_redirect"))
            .arg("link-scratch");
        let out = run(&mut c, DEADLINE);
        assert!(
            stdout(&out).contains("link data.txt: 0"),
            "{}",
            stdout(&out)
        );
        assert_eq!(
            std::fs::read_to_string(job.join("data.txt")).unwrap(),
            "orig\ntmp\n",
            "log mode writes through the link"
        );
        let ev = events_under(&job);
        let links: Vec<&Value> = writes_to(&ev, "data.txt")
            .into_iter()
            .filter(|e| e["op"] == "link" || e["op"] == "linkat")
            .collect();
        assert!(
            !links.is_empty() && links.iter().all(|e| e["verdict"] == "rogue"),
            "{ev:#?}"
        );
    }
);

// Review 2, W1: a call the supervisor let through was logged with
// `result: null`, so a failed open counted as a rogue write. The
// supervisor now performs it and logs its real result: a failed call is
// an attempt.
e2e!(
    regression_a_failed_supervised_open_is_an_attempt_not_a_rogue_write,
    |dir| {
        let prog = fixture("static_redirect");
        let (bare, out, report) =
            bare_and_audited(&dir, &prog, &["fail"], &["--workers", "1"], &|_| {});
        assert_eq!(stdout(&out), bare);
        assert!(bare.contains("-1 No such file or directory"), "{bare}");
        assert_eq!(exit_code(&out), 0, "nothing was written: {report:#}");
        assert_eq!(report["summary"]["rogue_writes"], 0, "{report:#}");
        let ev = events_under(&dir.join("job"));
        let w = writes_to(&ev, "out.txt");
        assert_eq!(
            (w.len(), &w[0]["result"], &w[0]["errno"]),
            (1, &Value::from(-1), &"ENOENT".into())
        );
    }
);

// Review 2, F6: the supervisor read the path, judged it, and let the
// kernel read it again (CONTINUE): a thread rewriting the path in between
// reached a denied file. Now the supervisor opens the path it judged.
e2e!(
    regression_a_path_rewritten_after_the_check_cannot_bypass_deny,
    |dir| {
        let prog = fixture("static_race");
        let bare_dir = dir.join("bare");
        std::fs::create_dir_all(&bare_dir).unwrap();
        // The race is real bare: some of the tries reach the other name (on
        // a loaded machine not in every round of 3000: up to ten rounds).
        let raced = (0..10).any(|_| {
            run_ok(
                Command::new(&prog)
                    .args(["3000", "allowed.txt", "shared.txt"])
                    .current_dir(&bare_dir),
            );
            bare_dir.join("shared.txt").exists()
        });
        assert!(raced, "the race writes both bare");
        let (out, report) = exec(
            &dir,
            &[
                "--workers",
                "1",
                "--action",
                "deny",
                "--outputs",
                "allowed.txt",
            ],
            &prog,
            &["3000", "allowed.txt", "shared.txt"],
        );
        assert!(
            !dir.join("shared.txt").exists(),
            "a denied file was created: {report:#}"
        );
        assert!(dir.join("allowed.txt").exists());
        let ev = supervised_events(&dir);
        let shared = writes_to(&ev, "shared.txt");
        assert!(!shared.is_empty(), "the race was tried: {}", stdout(&out));
        assert!(
            shared.iter().all(|e| e["action"] == "denied"),
            "{shared:#?}"
        );
        for e in writes_to(&ev, "allowed.txt") {
            assert!(e["result"].as_i64().is_some_and(|r| r >= 0), "{e}");
        }
    }
);

// Review 2, H3: an i386 system call (`int 0x80`) killed the process
// (SIGSYS). It is now judged like the native call.
e2e!(regression_an_i386_system_call_is_judged_not_killed, |dir| {
    let prog = fixture("static_i386");
    let bare = run_ok(&mut dir.bare(&prog));
    assert_eq!(
        stdout(&bare).trim(),
        "i386 open: 0",
        "the kernel runs i386 calls"
    );
    std::fs::remove_file(dir.join("i386.txt")).unwrap();
    let (out, report) = exec(&dir, &["--workers", "1"], &prog, &[]);
    assert_eq!(stdout(&out).trim(), "i386 open: 0");
    assert_eq!(exit_code(&out), 1, "a rogue write: {report:#}");
    let ev = supervised_events(&dir);
    let w = writes_to(&ev, "i386.txt");
    assert_eq!(
        (w.len(), &w[0]["op"], &w[0]["verdict"]),
        (1, &"open".into(), &"rogue".into())
    );
    std::fs::remove_file(dir.join("i386.txt")).unwrap();
    let (out, _) = exec(&dir, &["--workers", "1", "--action", "deny"], &prog, &[]);
    assert_eq!(stdout(&out).trim(), format!("i386 open: -{}", libc::EACCES));
    assert!(!dir.join("i386.txt").exists());
});

// Review 2, H2: under the filter (PR_SET_NO_NEW_PRIVS) a set-user-ID
// program runs without its privileges, silently. The run now says the
// audit is incomplete.
e2e!(
    regression_a_setuid_program_under_the_filter_makes_the_audit_incomplete,
    |dir| {
        // SAFETY: a plain getter.
        let root = unsafe { libc::geteuid() } == 0;
        if !components::require(
            "root (to make a set-user-ID file of another owner)",
            (!root).then(|| "not running as root".to_string()),
        ) {
            return;
        }
        let prog = dir.join("suid_writer");
        std::fs::copy(fixture("static_writer"), &prog).unwrap();
        run_ok(Command::new("chown").arg("nobody").arg(&prog));
        run_ok(Command::new("chmod").arg("4755").arg(&prog));
        let (out, report) = exec(
            &dir,
            &["--workers", "1", "--supervise", "--allow", "**"],
            Path::new("/bin/sh"),
            &["-c", prog.to_str().unwrap()],
        );
        assert_eq!(exit_code(&out), 4, "{report:#}");
        let listed = report["unaudited"].to_string();
        assert!(
            listed.contains("suid_writer") && listed.contains("no_new_privs"),
            "{report:#}"
        );
    }
);

// A magic link resolved by the supervisor would name the runner's own
// files: a symlink to /proc/self/exe must touch the program, never mpaudit.
e2e!(
    a_call_through_a_magic_link_acts_on_the_program_not_the_supervisor,
    |dir| {
        let prog = dir.join("self_toucher");
        std::fs::copy(fixture("static_redirect"), &prog).unwrap();
        let runner_mtime = std::fs::metadata(&artifacts().runner)
            .unwrap()
            .modified()
            .unwrap();
        let (out, report) = exec(
            &dir,
            &["--workers", "1", "--allow", "**"],
            &prog,
            &["touch-self"],
        );
        assert_eq!(exit_code(&out), 0, "{report:#}");
        assert!(
            stdout(&out).contains("utimes self-link: 0"),
            "{}",
            stdout(&out)
        );
        assert_eq!(
            std::fs::metadata(&prog).unwrap().modified().unwrap(),
            std::time::UNIX_EPOCH,
            "the program's own executable was touched"
        );
        assert_eq!(
            std::fs::metadata(&artifacts().runner)
                .unwrap()
                .modified()
                .unwrap(),
            runner_mtime,
            "the supervisor touched its own executable"
        );
        let ev = supervised_events(&dir);
        assert!(!writes_to(&ev, "self-link").is_empty(), "{ev:#?}");
    }
);

// Issue 12 (last requirement): the supervisor kept a redirect table of its
// own, fed from the worker's manifest: a redirected shell never saw what a
// static program it ran had redirected (`cat b.txt` failed after it), and
// the program saw the shell's redirects only as far as the manifest said.
// Now the supervisor maps the worker's one table file (mpaudit-core's
// table, the file the library named in `MPAUDIT_REDIRECT_TABLE`): each
// side sees the other's redirects, whiteouts and O_EXCL results at once,
// and a second static process of the worker sees them too.
e2e!(
    regression_a_static_program_and_its_shell_share_the_workers_redirect_table,
    |dir| {
        let prog = fixture("static_table");
        let script = format!(
            "echo shell > a.txt\nrm gone.txt\n{} check\ncat b.txt\n\
             [ -e gone.txt ] && echo gone-visible || echo gone-hidden\n",
            prog.display()
        );
        let setup = |d: &Path| std::fs::write(d.join("gone.txt"), "shared\n").unwrap();
        let (bare, out, report) = bare_and_audited(
            &dir,
            Path::new("/bin/sh"),
            &["-c", &script],
            &[
                "--workers",
                "1",
                "--action",
                "redirect",
                "--merge-dir",
                "merged",
            ],
            &setup,
        );
        for line in [
            "read a.txt: [shell\n]",
            "size 6",
            "open a.txt O_EXCL: -1 File exists",
            "open gone.txt: -1 No such file or directory",
            "stat gone.txt: -1 No such file or directory",
            "read b.txt: [from static\n]",
            "from static\ngone-hidden",
        ] {
            assert!(bare.contains(line), "{line:?} in the bare run: {bare}");
        }
        assert_eq!(stdout(&out), bare, "the worker sees what it sees bare");
        assert_eq!(exit_code(&out), 1, "rogue writes, redirected: {report:#}");
        let job = dir.join("job");
        let w0 = job.join("mpaudit-workers/worker_0");
        assert!(!job.join("a.txt").exists() && !job.join("b.txt").exists());
        assert!(job.join("gone.txt").exists(), "the rm stayed in the worker");
        assert_eq!(
            std::fs::read_to_string(w0.join("b.txt")).unwrap(),
            "from static\n"
        );
        let ev = events_under(&job);
        let b: Vec<&Value> = accesses(&ev, "b.txt")
            .into_iter()
            .filter(|e| e["via"] == "seccomp" && e["create"] == true)
            .collect();
        assert_eq!(b.len(), 1, "{ev:#?}");
        assert_eq!(b[0]["action"], "redirected");
        assert_eq!(b[0]["worker"], 0);
        // The merge has both sides' redirects.
        assert_eq!(
            std::fs::read_to_string(job.join("merged/b.txt")).unwrap(),
            "from static\n",
            "{report:#}"
        );
        assert_eq!(
            std::fs::read_to_string(job.join("merged/a.txt")).unwrap(),
            "shell\n"
        );
    }
);

/// `mpaudit exec --mode fork ARGS -- static_table fork 3` in `dir`: the
/// output and the report.
fn forked_static_workers(dir: &TestDir, args: &[&str]) -> (Output, Value) {
    let mut all = vec!["--mode", "fork"];
    all.extend_from_slice(args);
    exec(dir, &all, &fixture("static_table"), &["fork", "3"])
}

// Issue 11/12, fork mode: a static framework forking its workers got no
// worker numbering under the supervisor (every event had `worker: null`),
// so three workers writing out.txt were one anonymous writer, no clobber
// was reported, and redirect had no worker to redirect to. The supervisor
// now numbers the root's children as the library does (fork order, from
// 0), and each child's descendants belong to its worker.
e2e!(
    regression_workers_forked_by_a_static_framework_are_numbered,
    |dir| {
        let bare_dir = dir.join("bare");
        std::fs::create_dir_all(&bare_dir).unwrap();
        run_ok(
            Command::new(fixture("static_table"))
                .args(["fork", "3"])
                .current_dir(&bare_dir),
        );
        let bare = std::fs::read_to_string(bare_dir.join("out.txt")).unwrap();
        assert!(bare.starts_with("worker "), "one survivor bare: {bare}");

        let (out, report) = forked_static_workers(&dir, &[]);
        assert_eq!(exit_code(&out), 1, "rogue writes: {report:#}");
        let ev = supervised_events(&dir);
        let w = writes_to(&ev, "out.txt");
        let mut workers: Vec<i64> = w
            .iter()
            .map(|e| e["worker"].as_i64().expect("a worker"))
            .collect();
        workers.sort_unstable();
        assert_eq!(workers, [0, 1, 2], "{w:#?}");
        assert!(w.iter().all(|e| e["verdict"] == "rogue"));
        let c = report["conflicts"]
            .as_array()
            .expect("conflicts")
            .iter()
            .find(|c| c["path"] == "out.txt")
            .unwrap_or_else(|| panic!("no conflict on out.txt: {report:#}"));
        assert_eq!(c["kind"], "clobber", "{c:#}");
        let mut writers: Vec<String> = c["writers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().map_or_else(|| w.to_string(), str::to_string))
            .collect();
        writers.sort();
        assert_eq!(writers, ["0", "1", "2"], "{c:#}");
    }
);

e2e!(
    regression_a_static_frameworks_forked_workers_are_redirected_and_merged,
    |dir| {
        let (out, report) =
            forked_static_workers(&dir, &["--action", "redirect", "--merge", "out.txt=concat"]);
        assert_eq!(exit_code(&out), 1, "rogue writes, redirected: {report:#}");
        let workers = dir.join("mpaudit-workers");
        for k in 0..3 {
            assert_eq!(
                std::fs::read_to_string(workers.join(format!("worker_{k}/out.txt"))).unwrap(),
                format!("worker {k}\n"),
                "worker k is the k-th child forked"
            );
        }
        assert_eq!(
            std::fs::read_to_string(dir.join("out.txt")).unwrap(),
            "worker 0\nworker 1\nworker 2\n",
            "every worker's copy merged: {report:#}"
        );
    }
);

// Issue 12 ("Fails open"), under the supervisor: a write from a working
// directory deeper than /proc/PID/cwd can name had no absolute path, was
// judged "allowed" and was performed in place, under deny and under
// redirect. It now fails closed with EACCES, as in the library
// (docs/policy.md, "Unresolvable paths fail closed").
e2e!(
    regression_a_supervised_write_from_an_unnameable_cwd_fails_closed,
    |dir| {
        let prog = fixture("static_table");
        let setup = |d: &Path| _ = run_ok(Command::new(&prog).arg("mkdeep").current_dir(d));
        for action in ["deny", "redirect"] {
            let (bare, out, report) = bare_and_audited(
                &dir,
                &prog,
                &["deep"],
                &["--workers", "1", "--action", action],
                &setup,
            );
            assert_eq!(bare, "open deep.txt: 3 \n", "bare, it is created");
            assert_eq!(
                stdout(&out),
                "open deep.txt: -1 Permission denied\n",
                "{action}: {report:#}"
            );
            let check = |d: &Path| {
                stdout(&run_ok(
                    Command::new(&prog).arg("deep-check").current_dir(d),
                ))
            };
            assert_eq!(check(&dir.join("job")), "deep.txt absent\n", "{action}");
            let ev = events_under(&dir.join("job"));
            let w = writes_to(&ev, "deep.txt");
            let expected = if action == "deny" {
                "denied"
            } else {
                "redirect-failed"
            };
            assert_eq!(
                (w.len(), &w[0]["action"], &w[0]["errno"]),
                (1, &expected.into(), &"EACCES".into()),
                "{w:#?}"
            );
            for d in ["bare", "job"] {
                std::fs::remove_dir_all(dir.join(d)).unwrap();
            }
        }
    }
);

// Review of what the supervisor leaves to the kernel: a path through
// other spellings of the task's own magic links, `/proc/<pid>/cwd/…` (its
// pid, not `self`) and `/proc/self/task/<tid>/cwd/…`, was judged as a
// `/proc/**` path ("allowed") and left to the kernel, which wrote the
// job's file: a rogue write reported as allowed, performed in place under
// deny and redirect. These links are now followed as `/proc/self/…` is
// (the task form in mpaudit-core, for the library too).
e2e!(
    regression_a_write_through_proc_pid_cwd_is_judged_as_the_file_it_names,
    |dir| {
        let prog = fixture("static_table");
        for (mode, action) in [
            ("procpid", "log"),
            ("procpid", "deny"),
            ("procpid", "redirect"),
            ("proctask", "log"),
            ("proctask", "redirect"),
        ] {
            let (bare, out, report) = bare_and_audited(
                &dir,
                &prog,
                &[mode],
                &[
                    "--workers",
                    "1",
                    "--action",
                    action,
                    "--merge-dir",
                    "merged",
                ],
                &|_| {},
            );
            assert_eq!(bare, "open /proc/PID/cwd/procpid.txt: 3 \n");
            assert_eq!(
                exit_code(&out),
                1,
                "{mode} {action}: a rogue write: {report:#}"
            );
            let job = dir.join("job");
            let ev = events_under(&job);
            let w = writes_to(&ev, "procpid.txt");
            assert_eq!(w.len(), 1, "{w:#?}");
            assert_eq!(w[0]["abs"], job.join("procpid.txt").to_str().unwrap());
            assert_eq!(w[0]["verdict"], "rogue", "{action}");
            let (action_logged, in_place, out_text) = match action {
                "log" => ("logged", true, "open /proc/PID/cwd/procpid.txt: 3 \n"),
                "deny" => (
                    "denied",
                    false,
                    "open /proc/PID/cwd/procpid.txt: -1 Permission denied\n",
                ),
                _ => ("redirected", false, "open /proc/PID/cwd/procpid.txt: 3 \n"),
            };
            assert_eq!(w[0]["action"], action_logged);
            assert_eq!(stdout(&out), out_text, "{action}");
            assert_eq!(job.join("procpid.txt").exists(), in_place, "{action}");
            if action == "redirect" {
                assert!(job.join("mpaudit-workers/worker_0/procpid.txt").exists());
            }
            for d in ["bare", "job"] {
                std::fs::remove_dir_all(dir.join(d)).unwrap();
            }
        }
    }
);

// Review of what the supervisor leaves to the kernel: every open of a
// `/dev` path was left to the kernel (CONTINUE, `result: null`), the one
// Go's os/exec makes for `/dev/null` included, so another thread could
// change the path between the judgement and the kernel's read. The memory
// devices, the same for every opener, are now opened by the supervisor.
e2e!(
    regression_an_open_of_dev_null_is_performed_by_the_supervisor,
    |dir| {
        let prog = fixture("static_table");
        let (bare, out, report) = bare_and_audited(
            &dir,
            &prog,
            &["devnull"],
            &["--workers", "1", "--action", "deny"],
            &|_| {},
        );
        assert_eq!(bare, "open /dev/null: 3 \nwrite: 1 \ncloexec: 1 \n");
        assert_eq!(stdout(&out), bare, "{report:#}");
        assert_eq!(exit_code(&out), 0, "{report:#}");
        let ev = events_under(&dir.join("job"));
        let w: Vec<&Value> = ev.iter().filter(|e| e["abs"] == "/dev/null").collect();
        assert_eq!(w.len(), 1, "{ev:#?}");
        assert_eq!(
            (&w[0]["result"], &w[0]["verdict"], &w[0]["via"]),
            (&Value::from(3), &"allowed".into(), &"seccomp".into()),
            "performed here: its real result"
        );
    }
);

// The same through the library's hand-over: the preloaded root (a shell)
// execs the static framework in its place, so the framework is the root
// and its children are workers 0, 1, 2, as the library would number them.
e2e!(
    regression_a_static_framework_execd_by_a_preloaded_root_numbers_its_workers,
    |dir| {
        let script = format!("exec {} fork 3", fixture("static_table").display());
        let (out, report) = exec(
            &dir,
            &[
                "--mode",
                "fork",
                "--action",
                "redirect",
                "--merge",
                "out.txt=concat",
            ],
            Path::new("/bin/sh"),
            &["-c", &script],
        );
        assert_eq!(exit_code(&out), 1, "rogue writes, redirected: {report:#}");
        assert_eq!(
            std::fs::read_to_string(dir.join("out.txt")).unwrap(),
            "worker 0\nworker 1\nworker 2\n",
            "every worker's copy merged: {report:#}"
        );
    }
);

// ---- posix_spawn of a static or Go program (issue 11) -------------------------
//
// Regression: glibc's posix_spawn execs its target inside its own
// clone(CLONE_VM|CLONE_VFORK) child, past every hook, so a static or Go
// program spawned by a preloaded process was neither handed to the
// supervisor nor listed as unaudited: `mpaudit exec` said ok while files
// were written unseen. The spawn hook now starts it through the runner's
// trampoline, which puts it under the filter before exec'ing it.

/// `mpaudit exec --workers 1 [ARGS] -- PROG PROG_ARGS` in `dir` with `env`
/// added to the runner's environment (so the job's).
fn exec_with_env(
    dir: &TestDir,
    args: &[&str],
    prog: &Path,
    prog_args: &[&str],
    env: &[(&str, &str)],
) -> (Output, Value) {
    let report_file = dir.join("report.json");
    let _ = std::fs::remove_file(&report_file);
    // Each run's events on their own.
    let _ = std::fs::remove_dir_all(dir.join("mpaudit-logs"));
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(&dir.path)
        .args(["exec", "--workers", "1", "--format", "json", "--report"])
        .arg(&report_file)
        .arg("--preload")
        .arg(lib())
        .args(args)
        .arg("--")
        .arg(prog)
        .args(prog_args)
        .envs(env.iter().copied());
    let out = run(&mut c, DEADLINE);
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap_or_default())
        .unwrap_or_else(|e| {
            panic!(
                "report is not JSON ({e}): stdout={} stderr={}",
                stdout(&out),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out, report)
}

/// The run wrote `name` through the supervisor, once, as a rogue write of
/// worker 0, with nothing listed as unaudited and exit status 1.
fn supervised_rogue_write(dir: &TestDir, out: &Output, report: &Value, name: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(exit_code(out), 1, "rogue write: {report:#}\n{err}");
    assert!(!err.contains("not audited"), "{err}");
    assert_eq!(report["unaudited"], serde_json::json!([]), "{report:#}");
    // The runner parsed every event (its types deny unknown fields, such
    // as a spawn's `supervised`).
    assert_eq!(report["summary"]["skipped_lines"], 0, "{report:#}");
    let ev = supervised_events(dir);
    let w = writes_to(&ev, name);
    assert_eq!(w.len(), 1, "{ev:#?}");
    assert_eq!(
        (&w[0]["verdict"], &w[0]["worker"], &w[0]["action"]),
        (&"rogue".into(), &0.into(), &"logged".into())
    );
    assert!(dir.join(name).exists(), "log mode lets it write");
}

e2e!(
    regression_a_static_program_posix_spawned_escaped_the_supervisor,
    |dir| {
        let child = fixture("static_spawned");
        let spawner = fixture("spawner");
        let (out, report) = exec_with_env(
            &dir,
            &[],
            &spawner,
            &[child.to_str().unwrap(), "spawned.txt", "0"],
            &[],
        );
        supervised_rogue_write(&dir, &out, &report, "spawned.txt");
        // The spawn event says who audits the program.
        let ev = supervised_events(&dir);
        let spawn: Vec<&Value> = ev.iter().filter(|e| e["op"] == "spawn").collect();
        assert_eq!(spawn.len(), 1, "{ev:#?}");
        assert_eq!(
            (
                &spawn[0]["audited"],
                &spawn[0]["supervised"],
                &spawn[0]["exe"]
            ),
            (&true.into(), &true.into(), &child.to_str().unwrap().into()),
            "{}",
            spawn[0]
        );

        // posix_spawnp, found through PATH.
        std::fs::remove_file(dir.join("spawned.txt")).unwrap();
        let path = format!(
            "/nonexistent:{}:{}",
            child.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let (out, report) = exec_with_env(
            &dir,
            &[],
            &spawner,
            &["-p", "static_spawned", "spawned.txt", "0"],
            &[("PATH", &path)],
        );
        supervised_rogue_write(&dir, &out, &report, "spawned.txt");

        // Deny reaches it too: the child's open fails, it exits 3.
        std::fs::remove_file(dir.join("spawned.txt")).unwrap();
        let (out, report) = exec_with_env(
            &dir,
            &["--action", "deny"],
            &spawner,
            &[child.to_str().unwrap(), "spawned.txt", "0"],
            &[],
        );
        assert_eq!(exit_code(&out), 1, "{report:#}");
        assert!(!dir.join("spawned.txt").exists(), "deny creates nothing");
        assert!(stdout(&out).contains("exit=3"), "{}", stdout(&out));
    }
);

e2e!(
    regression_a_go_program_posix_spawned_escaped_the_supervisor,
    |dir| {
        let spawner = fixture("spawner");
        // Static and cgo alike (a cgo program spawned through the
        // trampoline runs without the library: the supervisor audits it
        // whole).
        for name in ["go_static", "go_cgo"] {
            let Some(prog) = go_fixture(name) else {
                return;
            };
            let _ = std::fs::remove_file(dir.join("go-out.txt"));
            let (out, report) = exec_with_env(&dir, &[], &spawner, &[prog.to_str().unwrap()], &[]);
            supervised_rogue_write(&dir, &out, &report, "go-out.txt");
            assert_eq!(report["summary"]["rogue_writes"], 1, "{name}: {report:#}");
            assert!(stdout(&out).contains("exit=0"), "{}", stdout(&out));
        }
    }
);

e2e!(
    regression_python_posix_spawn_of_a_static_program_escaped_the_supervisor,
    |dir| {
        let child = fixture("static_spawned");
        // os.posix_spawn directly, and subprocess, which uses posix_spawn
        // for a path with a directory and close_fds=False.
        for (script, name) in [
            (
                "import os,sys; p=os.posix_spawn(sys.argv[1], [sys.argv[1], 'py-spawn.txt'], os.environ); print(os.waitpid(p, 0)[1])",
                "py-spawn.txt",
            ),
            (
                "import subprocess,sys; print(subprocess.run([sys.argv[1], 'py-subprocess.txt'], close_fds=False).returncode)",
                "py-subprocess.txt",
            ),
        ] {
            let (out, report) = exec_with_env(
                &dir,
                &[],
                Path::new("python3"),
                &["-c", script, child.to_str().unwrap()],
                &[],
            );
            supervised_rogue_write(&dir, &out, &report, name);
            assert!(stdout(&out).ends_with("0\n"), "{}", stdout(&out));
        }
    }
);

/// The spawner's report with the pids taken out, after checking that the
/// pid posix_spawn returned is the program's own.
fn spawn_outcome(text: &str) -> Vec<String> {
    let field = |line: &str, key: &str| -> Option<String> {
        line.split(' ')
            .find_map(|w| w.strip_prefix(key).map(String::from))
    };
    let child_pid = text
        .lines()
        .find(|l| l.starts_with("child "))
        .and_then(|l| field(l, "pid="));
    let spawn_pid = text
        .lines()
        .find(|l| l.starts_with("spawn "))
        .and_then(|l| field(l, "pid="));
    // (A child whose stdout was closed says nothing.)
    if let (Some(c), Some(s)) = (&child_pid, &spawn_pid) {
        assert_eq!(c, s, "the pid is the program's: {text}");
    }
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.starts_with("pid="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    // The child's line and the spawner's race: compare them as a set.
    lines.sort();
    lines
}

// posix_spawn's semantics are kept when the program is handed to the
// supervisor: return value, the pid (the program's own, argv[0] and
// /proc/PID/exe unchanged), attributes (setsid, pgroup, sigmask,
// sigdefault, ignored signals, resetids), file actions (open, dup2,
// close, chdir), the exit status, and the error of a missing or
// non-executable target.
e2e!(
    a_supervised_posix_spawn_keeps_posix_spawns_semantics,
    |dir| {
        let child = fixture("static_spawned");
        let spawner = fixture("spawner");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let not_executable = dir.join("not-executable");
        std::fs::copy(&child, &not_executable).unwrap();
        std::fs::set_permissions(
            &not_executable,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        std::fs::copy(&child, dir.join("static_spawned")).unwrap();
        let abs = child.to_str().unwrap();
        let cases: Vec<Vec<&str>> = vec![
            vec![abs, "none", "7"],
            vec!["-setsid", "-mask", "-ignore-pipe", abs, "none", "0"],
            vec!["-pgroup", "-ignore-term", "-default-term", abs],
            vec!["-ignore-term", "-resetids", abs, "none", "0"],
            vec!["-dup3", "-close1", abs, "none", "4"],
            vec!["-out", "spawned-stdout.txt", abs, "none", "0"],
            vec!["-chdir", "sub", abs, "in-sub.txt", "0"],
            vec!["/nonexistent/static_spawned"],
            vec![not_executable.to_str().unwrap()],
            vec!["-p", "no-such-program-anywhere"],
            // Not on PATH, only in the cwd: posix_spawnp fails with ENOENT.
            vec!["-p", "static_spawned"],
        ];
        for case in cases {
            for f in ["spawned-stdout.txt", "sub/in-sub.txt", "none"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            let bare = run(dir.bare(&spawner).args(&case), DEADLINE);
            let bare_stdout_file = std::fs::read_to_string(dir.join("spawned-stdout.txt")).ok();
            let bare_in_sub = dir.join("sub/in-sub.txt").exists();
            for f in ["spawned-stdout.txt", "sub/in-sub.txt"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            let (out, report) = exec_with_env(&dir, &["--allow", "**"], &spawner, &case, &[]);
            assert_eq!(exit_code(&out), 0, "{case:?}: {report:#}");
            assert_eq!(
                spawn_outcome(&stdout(&out)),
                spawn_outcome(&stdout(&bare)),
                "{case:?}"
            );
            let stdout_file = std::fs::read_to_string(dir.join("spawned-stdout.txt")).ok();
            assert_eq!(
                stdout_file.as_deref().map(spawn_outcome),
                bare_stdout_file.as_deref().map(spawn_outcome),
                "{case:?}"
            );
            assert_eq!(dir.join("sub/in-sub.txt").exists(), bare_in_sub, "{case:?}");
            let ev = supervised_events(&dir);
            let spawns: Vec<&Value> = ev
                .iter()
                .filter(|e| e["op"] == "spawn" && e["kind"] == "process")
                .collect();
            assert!(
                spawns
                    .iter()
                    .all(|e| e["audited"] != false || e["result"] != 0),
                "{case:?}: {spawns:#?}"
            );
        }
    }
);

// Without the runner (LD_PRELOAD alone) a static program spawned is listed
// as unaudited, with one stderr line, as an exec'd one is.
e2e!(
    a_static_program_posix_spawned_without_the_runner_is_unaudited,
    |dir| {
        let child = fixture("static_spawned");
        let out = run(
            dir.audited(fixture("spawner"))
                .args([child.to_str().unwrap(), "none", "0"]),
            DEADLINE,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("mpaudit: not audited (static): {}", child.display());
        assert_eq!(
            err.lines()
                .filter(|l| l.starts_with("mpaudit: not audited"))
                .collect::<Vec<_>>(),
            [want.as_str()],
            "{err}"
        );
        let ev = dir.events();
        let spawn = ev.iter().find(|e| e["op"] == "spawn").expect("spawn event");
        assert_eq!(
            (&spawn["audited"], &spawn["reason"], &spawn["result"]),
            (&Value::Bool(false), &Value::from("static"), &Value::from(0)),
            "{spawn}"
        );
        // The report of these logs says the audit is incomplete.
        let mut c = Command::new(&artifacts().runner);
        c.args(["report", "--format", "json"]).arg(dir.logs());
        let rep = run(&mut c, DEADLINE);
        assert_eq!(exit_code(&rep), 4, "{}", stdout(&rep));
        assert!(stdout(&rep).contains("static_spawned"), "{}", stdout(&rep));
    }
);
