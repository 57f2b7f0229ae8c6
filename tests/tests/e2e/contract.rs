//! The event schema is a contract (docs/events.md): the runner parses events
//! with its own serde types that deny unknown fields. Here the library writes
//! every kind of event it can, and the runner must parse every line.

use mpaudit_tests::*;
use serde_json::Value;

e2e!(runner_parses_every_event_the_library_writes, |dir| {
    let probe = fixture("probe");
    let mut runs: Vec<std::process::Command> = Vec::new();
    for args in [
        vec!["opens"],
        vec!["errors"],
        vec!["bad-utf8"],
        vec!["forks", "2"],
        vec!["exec-missing"],
    ] {
        let mut c = dir.audited(&probe);
        c.args(&args);
        runs.push(c);
    }
    let mut c = dir.audited(&probe);
    c.args(["exec", "true"]);
    runs.push(c);
    // posix_spawn, a rogue write redirected in a worker, a denied one.
    let mut c = dir.audited("python3");
    c.args([
        "-c",
        "import os; os.waitpid(os.posix_spawn('/bin/true', ['true'], os.environ), 0)",
    ]);
    runs.push(c);
    let mut c = dir.audited("bash");
    c.args(["-c", "echo x > redirected.txt; echo y >> redirected.txt"])
        .env("MPAUDIT_ACTION", "redirect")
        .env("MPAUDIT_WORKER", "1");
    runs.push(c);
    let mut c = dir.audited("bash");
    c.args(["-c", "echo x > denied.txt || true"])
        .env("MPAUDIT_ACTION", "deny");
    runs.push(c);
    // A launcher rank (the variable a launcher sets): rank and node fields.
    let mut c = dir.audited("bash");
    c.args(["-c", "echo r > ranked.txt"]).env("PMI_RANK", "3");
    runs.push(c);
    // A log that stops at the file size limit: log_stopped, and an exit
    // with a non-zero dropped count.
    let mut c = dir.audited("bash");
    c.args(["-c", "ulimit -f 64; for i in $(seq 400); do : > f$i; done"]);
    runs.push(c);
    // Registered unwind tables: a truncated stack.
    let mut c = dir.audited(fixture("frames_registered_fork"));
    c.args(["1", "reg"]);
    runs.push(c);
    // The libc calls that are not opens: raw syscall(), metadata and node
    // changes, a posix_spawn file action.
    for args in [
        ["raw-openat", "raw.txt"],
        ["chmod", "raw.txt"],
        ["utimensat", "raw.txt"],
        ["mkfifo", "fifo"],
        ["bind", "sock"],
        ["spawn-open", "spawned.txt"],
    ] {
        let mut c = dir.audited(fixture("libc_calls"));
        c.args(args);
        runs.push(c);
    }
    // A static program posix_spawn'd without the runner: a spawn event
    // with `audited: false` and its reason.
    let mut c = dir.audited(fixture("spawner"));
    c.args([fixture("static_spawned").to_str().unwrap(), "none", "0"]);
    runs.push(c);
    for mut c in runs {
        run(&mut c, DEADLINE);
    }
    assert!(
        events_of(&dir)
            .iter()
            .any(|e| e["op"] == "spawn" && e["audited"] == false && e["reason"] == "static"),
        "an unaudited spawn event"
    );
    let (events, bad) = read_events(&dir.logs());
    assert_eq!(bad, 0);
    let stopped = events
        .iter()
        .find(|e| e["kind"] == "log_stopped")
        .expect("a log_stopped event");
    assert_eq!(stopped["reason"], "file_size_limit");
    assert!(
        events
            .iter()
            .any(|e| e["op"] == "exit" && e["dropped"].as_u64() > Some(0)),
        "an exit event with dropped events"
    );
    for op in [
        "start",
        "fork",
        "spawn",
        "exec",
        "exit",
        "open",
        "rename",
        "mkstemp",
        "symlink",
        "chmod",
        "utimensat",
        "mkfifo",
        "bind",
        "posix_spawn_file_actions_addopen",
    ] {
        assert!(
            events.iter().any(|e| e["op"] == op),
            "the logs hold a {op} event"
        );
    }
    for field in [
        "path_hex",
        "target",
        "component",
        "stack",
        "stack_truncated",
        "rank",
        "node",
    ] {
        assert!(
            events.iter().any(|e| e.get(field).is_some()),
            "the logs hold a {field} field"
        );
    }
    // Frames are exactly {"object", "vaddr"} (docs/events.md#frames), and a
    // vaddr is an address binutils resolves in that object's file.
    let frames: Vec<&Value> = events
        .iter()
        .flat_map(|e| {
            e["stack"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(e.get("component"))
        })
        .filter(|f| !f.is_null())
        .collect();
    assert!(!frames.is_empty());
    for f in &frames {
        let keys: Vec<&String> = f
            .as_object()
            .expect("a frame is an object")
            .keys()
            .collect();
        assert_eq!(keys, ["object", "vaddr"], "{f}");
    }
    let probe_frame = frames
        .iter()
        .find(|f| f["object"].as_str().is_some_and(|o| o.ends_with("/probe")))
        .expect("a frame in the probe");
    let function = frame_function(probe_frame);
    assert!(
        !function.is_empty() && function != "??",
        "{probe_frame}: {function}"
    );
    for action in ["redirected", "denied", "logged", "none"] {
        assert!(
            events.iter().any(|e| e["action"] == action),
            "an event with action {action}"
        );
    }

    let out = run(
        std::process::Command::new(&artifacts().runner)
            // Every process above ran on its own: one LD_PRELOAD run each.
            .args(["report", "--all-runs", "--format", "json"])
            .arg(dir.logs()),
        DEADLINE,
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report JSON: {e}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        report["summary"]["skipped_lines"], 0,
        "{:#}",
        report["summary"]
    );
    assert_eq!(
        report["summary"]["events"].as_u64(),
        Some(events.len() as u64),
        "{:#}",
        report["summary"]
    );
    assert!(
        report["summary"]["dropped_events"].as_u64() > Some(0),
        "{:#}",
        report["summary"]
    );
});

fn events_of(dir: &TestDir) -> Vec<Value> {
    read_events(&dir.logs()).0
}

e2e!(static_binaries_are_reported_as_unaudited, |dir| {
    let exe = fixture("static_writer");
    run(
        dir.audited(fixture("probe"))
            .args(["exec", exe.to_str().unwrap()]),
        DEADLINE,
    );
    assert!(
        dir.join("static-out.txt").exists(),
        "the static program ran"
    );
    let ev = dir.events();
    let exec = ev.iter().find(|e| e["op"] == "exec").expect("exec event");
    assert_eq!(
        (exec["audited"].clone(), exec["reason"].clone()),
        (Value::Bool(false), "static".into())
    );
    assert!(
        accesses(&ev, "static-out.txt").is_empty(),
        "nothing is seen inside a static binary"
    );
    let out = run(
        std::process::Command::new(&artifacts().runner)
            // Every process above ran on its own: one LD_PRELOAD run each.
            .args(["report", "--all-runs", "--format", "json"])
            .arg(dir.logs()),
        DEADLINE,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = report["unaudited"].to_string();
    assert!(
        listed.contains("static_writer") && listed.contains("static"),
        "{listed}"
    );
});

e2e!(
    runner_parses_every_event_the_seccomp_supervisor_writes,
    |dir| {
        let calls = fixture("static_calls");
        let logs = dir.join("mpaudit-logs");
        let exec = |args: &[&str], prog: &std::path::Path| {
            let mut c = std::process::Command::new(&artifacts().runner);
            c.current_dir(&dir.path)
                .args(["exec", "-q", "--preload"])
                .arg(lib())
                .arg("--log-dir")
                .arg(&logs)
                .args(args)
                .arg("--")
                .arg(prog);
            run(&mut c, DEADLINE)
        };
        exec(&["--workers", "2"], &calls);
        exec(&["--action", "deny"], &calls);
        exec(&["--outputs", "calls-*"], &calls);
        if let Some(uring) = uring_fixture() {
            std::fs::write(
                dir.join("job.toml"),
                format!(
                    "[job]\ncommand = [{:?}]\n[audit]\nio_uring = \"allow\"\nlog_dir = {:?}\n",
                    uring.to_str().unwrap(),
                    logs.to_str().unwrap()
                ),
            )
            .unwrap();
            let mut c = std::process::Command::new(&artifacts().runner);
            c.current_dir(&dir.path)
                .args(["run", "-q", "job.toml", "--preload"])
                .arg(lib());
            run(&mut c, DEADLINE);
        }
        let (events, _) = read_events(&logs);
        let events: Vec<Value> = events.into_iter().filter(|e| e["v"] == 1).collect();
        for e in &events {
            assert_eq!(e["via"], "seccomp", "{e}");
        }
        for op in [
            "exec",
            "openat",
            "rename",
            "mkdir",
            "symlink",
            "link",
            "chmod",
            "utimensat",
            "truncate",
            "unlink",
            "rmdir",
        ] {
            assert!(
                events.iter().any(|e| e["op"] == op),
                "the logs hold a {op} event: {events:#?}"
            );
        }
        for field in ["path_hex", "abs_hex", "path2", "component", "stack"] {
            assert!(
                events.iter().any(|e| e.get(field).is_some()),
                "the logs hold a {field} field"
            );
        }
        for action in ["denied", "logged", "none"] {
            assert!(
                events.iter().any(|e| e["action"] == action),
                "an event with action {action}"
            );
        }
        let out = run(
            std::process::Command::new(&artifacts().runner)
                .args(["report", "--all-runs", "--format", "json"])
                .arg(&logs),
            DEADLINE,
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("report JSON: {e}\n{}", String::from_utf8_lossy(&out.stderr))
        });
        assert_eq!(
            report["summary"]["skipped_lines"], 0,
            "{:#}",
            report["summary"]
        );
        assert_eq!(
            report["summary"]["events"].as_u64(),
            Some(events.len() as u64),
            "{:#}",
            report["summary"]
        );
    }
);
