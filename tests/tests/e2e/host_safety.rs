//! The host never notices the log: its descriptors, resource limits, full
//! disks and forks are the program's (issue 10, items 1, 2 and 6), and a log
//! is trimmed to its content at exit (issue 13). Each test runs the program
//! bare and audited and compares what the program sees.

use mpaudit_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `args` bare in a directory of its own and audited in `dir`.
fn bare_and_audited(dir: &TestDir, prog: &str, args: &[&str]) -> (TestDir, Output, Output) {
    let bare_dir = TestDir::new("bare");
    let bare = run(bare_dir.bare(prog).args(args), DEADLINE);
    let audited = run(dir.audited(prog).args(args), DEADLINE);
    (bare_dir, bare, audited)
}

/// The same exit status (no SIGBUS, no SIGXFSZ), stdout and `files`.
fn assert_same(bare_dir: &TestDir, bare: &Output, dir: &TestDir, audited: &Output, files: &[&str]) {
    assert_eq!(
        audited.status,
        bare.status,
        "exit status (signal {:?}); stderr: {}",
        audited.status.signal(),
        String::from_utf8_lossy(&audited.stderr)
    );
    assert_eq!(stdout(audited), stdout(bare), "stdout");
    for f in files {
        let a = std::fs::read(dir.join(f)).expect("the audited run wrote it");
        let b = std::fs::read(bare_dir.join(f)).expect("the bare run wrote it");
        assert!(
            a == b,
            "{f}: {} bytes audited, {} bare (NULs: {})",
            a.len(),
            b.len(),
            a.iter().filter(|&&c| c == 0).count()
        );
    }
}

/// The events of each log file, by file name.
fn logs(dir: &Path) -> BTreeMap<String, Vec<Value>> {
    std::fs::read_dir(dir)
        .expect("log dir")
        .map(|e| {
            let p = e.expect("entry").path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, read_log_file(&p).0)
        })
        .collect()
}

fn kind<'a>(events: &'a [Value], k: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == k).collect()
}

fn touches(events: &[Value], prefix: &str) -> usize {
    events
        .iter()
        .filter(|e| e["kind"] == "access")
        .filter(|e| {
            e["path"].as_str().is_some_and(|p| {
                p.strip_prefix(prefix)
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .count()
}

const EXEC_3: &str =
    r#"exec 3> progress.log; for i in $(seq 800); do /bin/true; echo "step $i" >&3; done"#;

// Regression: bash reused fd 3, which the library held as its log, so the
// library grew and mapped progress.log: SIGBUS and a NUL-padded file.
e2e!(bash_exec_3_reusing_the_log_fd_is_not_corrupted, |dir| {
    let (bare_dir, bare, audited) = bare_and_audited(&dir, "bash", &["-c", EXEC_3]);
    assert_same(&bare_dir, &bare, &dir, &audited, &["progress.log"]);
    // And the audit is complete: bash logged each of its forks (800 for
    // /bin/true, one for $(seq 800)).
    let forks = dir.events().iter().filter(|e| e["op"] == "fork").count();
    assert_eq!(forks, 801);
});

fn fd_games(dir: &TestDir, mode: &str) {
    let prog = fixture("host_safety");
    let prog = prog.to_str().unwrap();
    let (bare_dir, bare, audited) = bare_and_audited(dir, prog, &[mode, "3000"]);
    assert!(bare.status.success(), "bare {mode}: {bare:?}");
    assert_same(&bare_dir, &bare, dir, &audited, &["progress.log"]);
    let events = dir.events();
    let scratch = accesses(&events, "scratch.txt").len();
    assert_eq!(scratch, 3000, "every step of {mode} is logged");
}

// Regression: after close_range(3, ~0U, 0) the program's next file got the
// log's number and the library wrote into it.
e2e!(close_range_then_reused_fd_is_not_corrupted, |dir| {
    fd_games(&dir, "close-range");
});

// Regression: the same with a loop closing 3..1023.
e2e!(close_loop_then_reused_fd_is_not_corrupted, |dir| {
    fd_games(&dir, "close-loop");
});

// Regression: dup2 of the program's file over the log's descriptor.
e2e!(dup2_over_the_log_fd_is_not_corrupted, |dir| {
    fd_games(&dir, "dup2-over");
});

// Regression: a classic daemon (fork, setsid, fork, close every fd).
e2e!(daemonised_process_is_not_corrupted, |dir| {
    let prog = fixture("host_safety");
    let prog = prog.to_str().unwrap();
    let (bare_dir, bare, audited) = bare_and_audited(&dir, prog, &["daemonise", "3000"]);
    assert!(bare.status.success(), "bare: {bare:?}");
    assert_same(&bare_dir, &bare, &dir, &audited, &["progress.log"]);
    assert_eq!(accesses(&dir.events(), "scratch.txt").len(), 3000);
});

// Regression: `ulimit -n 5` made the program's own open fail with EMFILE
// (the log held a descriptor) and shifted its fd numbers.
e2e!(ulimit_n_gives_the_program_the_same_fds_and_errors, |dir| {
    let prog = fixture("host_safety");
    let script = format!("ulimit -n 5; exec {} fds a b c", prog.display());
    let (bare_dir, bare, audited) = bare_and_audited(&dir, "bash", &["-c", &script]);
    assert_eq!(
        stdout(&bare),
        "a: fd 3\nb: fd 4\nc: Too many open files\n",
        "the bare run"
    );
    assert_same(&bare_dir, &bare, &dir, &audited, &["a", "b"]);
    assert_eq!(
        accesses(&dir.events(), "c").len(),
        1,
        "the failed open is logged"
    );
});

// Regression: `ulimit -f 48` killed even /bin/true with SIGXFSZ (the log
// grew in 64 KiB chunks past the limit).
e2e!(ulimit_f_48_does_not_kill_bin_true, |dir| {
    let script = "ulimit -f 48; /bin/true; echo true said $?";
    let (_, bare, audited) = bare_and_audited(&dir, "bash", &["-c", script]);
    assert_eq!(audited.status, bare.status, "{audited:?}");
    assert_eq!(stdout(&audited), stdout(&bare));
    assert_eq!(stdout(&bare), "true said 0\n");
    let events = dir.events();
    assert!(events.iter().any(|e| e["op"] == "exit"), "{events:?}");
    assert!(kind(&events, "log_stopped").is_empty());
});

// Regression: a larger limit killed jobs mid-run. Now the log stops at the
// limit, says so once (stderr and the log), counts what it dropped, and
// the runner reports it.
e2e!(ulimit_f_mid_run_stops_the_log_not_the_program, |dir| {
    let prog = fixture("host_safety");
    let script = format!("ulimit -f 100; exec {} events 3000", prog.display());
    let (bare_dir, bare, audited) = bare_and_audited(&dir, "bash", &["-c", &script]);
    assert!(bare.status.success());
    assert_same(&bare_dir, &bare, &dir, &audited, &["out.txt"]);
    let stderr = String::from_utf8_lossy(&audited.stderr);
    assert_eq!(stderr.matches("stopped logging").count(), 1, "{stderr}");
    assert!(
        stderr.contains("the audit of this process is incomplete"),
        "{stderr}"
    );
    let logs = logs(&dir.logs());
    let (name, events) = logs
        .iter()
        .find(|(_, ev)| !kind(ev, "log_stopped").is_empty())
        .expect("a log_stopped record");
    let stopped = kind(events, "log_stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["reason"], "file_size_limit");
    assert_eq!(stopped[0]["errno"], libc::EFBIG);
    let size = std::fs::metadata(dir.logs().join(name)).unwrap().len();
    assert!(size <= 100 * 1024, "{name}: {size} bytes");
    let exit = events
        .iter()
        .find(|e| e["op"] == "exit")
        .expect("the exit event fits in the reserved tail");
    let dropped = exit["dropped"].as_u64().unwrap();
    let logged = accesses(events, "scratch.txt").len() as u64;
    assert!(
        dropped > 0 && logged > 0,
        "{logged} logged, {dropped} dropped"
    );
    // Every event the program caused is either logged or counted (3000
    // touches and the fopen of out.txt).
    assert_eq!(logged + dropped, 3001, "{logged} logged, {dropped} dropped");

    let report = run(
        Command::new(&artifacts().runner)
            .args(["report", "--format", "json"])
            .arg(dir.logs()),
        DEADLINE,
    );
    let json: Value = serde_json::from_slice(&report.stdout).expect("report JSON");
    let s = &json["summary"];
    assert_eq!(s["dropped_events"], dropped, "{s:#}");
    assert_eq!(s["log_stopped"][0]["reason"], "file_size_limit", "{s:#}");
    // An audit with a stopped log is incomplete: exit status 4, and why.
    assert_eq!(report.status.code(), Some(4), "{s:#}");
    let reasons: Vec<&str> = s["incomplete"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"log_stopped") && reasons.contains(&"dropped_events"),
        "{s:#}"
    );
    let text = run(
        Command::new(&artifacts().runner)
            .arg("report")
            .arg(dir.logs()),
        DEADLINE,
    );
    let text = stdout(&text);
    assert!(
        text.contains(&format!("{dropped} event(s) not logged")),
        "{text}"
    );
});

// No descriptor left for the log to grow with (the program holds them
// all): the program sees what it sees bare, the log says no_descriptor.
e2e!(no_free_descriptor_stops_the_log_not_the_program, |dir| {
    let prog = fixture("host_safety");
    let script = format!("ulimit -n 16; exec {} exhaust-fds 3000", prog.display());
    let (_, bare, audited) = bare_and_audited(&dir, "bash", &["-c", &script]);
    assert!(bare.status.success(), "{bare:?}");
    assert_eq!(audited.status, bare.status, "{audited:?}");
    assert_eq!(stdout(&audited), stdout(&bare));
    assert!(
        stdout(&bare).contains("then Too many open files"),
        "{bare:?}"
    );
    let stderr = String::from_utf8_lossy(&audited.stderr);
    assert_eq!(stderr.matches("stopped logging").count(), 1, "{stderr}");
    let events = dir.events();
    let stopped = kind(&events, "log_stopped");
    assert_eq!(stopped.len(), 1, "{stderr}");
    assert_eq!(stopped[0]["reason"], "no_descriptor");
    assert_eq!(stopped[0]["errno"], libc::EMFILE);
});

// The program removes the log directory's files and puts files of its own
// in their place: the library never writes to them and stops logging.
e2e!(a_replaced_log_file_is_never_written, |dir| {
    let prog = fixture("host_safety");
    let bare_dir = TestDir::new("bare");
    std::fs::create_dir_all(bare_dir.logs()).unwrap();
    let bare = run(
        bare_dir
            .bare(&prog)
            .arg("replace")
            .arg(bare_dir.logs())
            .arg("3000"),
        DEADLINE,
    );
    let audited = run(
        dir.audited(&prog)
            .arg("replace")
            .arg(dir.logs())
            .arg("3000"),
        DEADLINE,
    );
    assert_eq!(stdout(&bare), "replaced none\n");
    assert_eq!(audited.status, bare.status, "{audited:?}");
    assert_eq!(stdout(&audited), "replaced some\n");
    let stderr = String::from_utf8_lossy(&audited.stderr);
    assert_eq!(stderr.matches("stopped logging").count(), 1, "{stderr}");
    assert!(stderr.contains("removed or replaced"), "{stderr}");
    let files: Vec<_> = std::fs::read_dir(dir.logs()).unwrap().collect();
    assert_eq!(files.len(), 1);
    for f in files {
        let p = f.unwrap().path();
        assert_eq!(std::fs::read(&p).unwrap(), b"theirs\n", "{}", p.display());
    }
});

/// A tmpfs of `size` mounted at `at`, unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(at: &Path, size: &str) -> Option<SmallFs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs(at.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

// A full disk under the log: the program runs on as bare, the log says
// no_space, nothing is written past what the disk holds.
e2e!(enospc_under_the_log_stops_the_log_not_the_program, |dir| {
    let small = dir.join("small");
    let Some(_fs) = SmallFs::mount(&small, "64k") else {
        eprintln!("SKIPPED enospc test: cannot mount a 64 KiB tmpfs here (needs root)");
        return;
    };
    let prog = fixture("host_safety");
    let bare_dir = TestDir::new("bare");
    let bare = run(bare_dir.bare(&prog).args(["events", "3000"]), DEADLINE);
    let audited = run(
        dir.audited(&prog)
            .args(["events", "3000"])
            .env("MPAUDIT_LOG_DIR", &small),
        DEADLINE,
    );
    assert_same(&bare_dir, &bare, &dir, &audited, &["out.txt"]);
    let stderr = String::from_utf8_lossy(&audited.stderr);
    assert_eq!(stderr.matches("stopped logging").count(), 1, "{stderr}");
    let logs = logs(&small);
    let events = logs.values().next().expect("one log");
    let stopped = kind(events, "log_stopped");
    assert_eq!(stopped.len(), 1, "{events:?}");
    assert_eq!(stopped[0]["reason"], "no_space");
    assert_eq!(stopped[0]["errno"], libc::ENOSPC);
    let exit = events.iter().find(|e| e["op"] == "exit").expect("exit");
    assert!(exit["dropped"].as_u64().unwrap() > 0);
});

/// One log per pid, and the events of each.
fn by_pid(dir: &Path) -> BTreeMap<i64, Vec<Value>> {
    let mut out = BTreeMap::new();
    for (name, events) in logs(dir) {
        let pid = events[0]["pid"].as_i64().expect("pid");
        assert!(
            events.iter().all(|e| e["pid"] == pid),
            "{name} mixes processes"
        );
        assert!(out.insert(pid, events).is_none(), "two logs for pid {pid}");
    }
    out
}

fn fork_keeps_two_logs(dir: &TestDir, mode: &str) {
    let prog = fixture("host_safety");
    let prog = prog.to_str().unwrap();
    let (bare_dir, bare, audited) = bare_and_audited(dir, prog, &[mode, "500"]);
    assert!(bare.status.success(), "{bare:?}");
    assert_eq!(audited.status, bare.status, "{audited:?}");
    let _ = bare_dir;
    let logs = by_pid(&dir.logs());
    assert_eq!(logs.len(), 2, "{:?}", logs.keys());
    let (parent, child): (Vec<_>, Vec<_>) = logs.values().partition(|ev| {
        ev.iter()
            .any(|e| e["op"] == "start" && touches(ev, "before-") > 0)
    });
    let (parent, child) = (parent[0], child[0]);
    assert_eq!(touches(parent, "before-"), 500);
    assert_eq!(touches(parent, "parent-"), 500);
    assert_eq!(touches(parent, "parent-after-"), 500);
    assert_eq!(touches(parent, "child-"), 0);
    assert_eq!(child[0]["op"], "start", "the child's log begins with start");
    assert_eq!(touches(child, "child-"), 500);
    assert_eq!(touches(child, "before-") + touches(child, "parent-"), 0);
    assert!(parent.iter().any(|e| e["op"] == "exit"));
    assert!(child.iter().any(|e| e["op"] == "exit"));
    assert_eq!(
        child[0]["ppid"], parent[0]["pid"],
        "the child knows its parent"
    );
}

// Regression: a `_Fork()` child (no atfork handlers) kept writing into its
// parent's log windows and overwrote the parent's later events.
e2e!(
    underscore_fork_child_and_parent_keep_their_own_logs,
    |dir| {
        fork_keeps_two_logs(&dir, "_Fork");
    }
);

// A fork no hook sees (syscall(SYS_fork)): the child notices at its first
// event and starts its own log.
e2e!(
    raw_syscall_fork_child_and_parent_keep_their_own_logs,
    |dir| {
        fork_keeps_two_logs(&dir, "raw-fork");
    }
);

/// Every log in `dir` holds whole JSON lines and no NUL; returns how many.
fn assert_trimmed(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("logs") {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.contains(&0),
            "{}: {} bytes, {} NULs",
            p.display(),
            bytes.len(),
            bytes.iter().filter(|&&b| b == 0).count()
        );
        assert_eq!(bytes.last(), Some(&b'\n'), "{}", p.display());
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            serde_json::from_slice::<Value>(line).expect("every line is JSON");
        }
        n += 1;
    }
    n
}

// Regression (issue 13): logs were 64 KiB NUL-padded chunks after a clean
// exit: trimmed now, whichever way the process ends (exit, _exit, exec).
e2e!(
    logs_are_trimmed_to_their_content_after_a_clean_exit,
    |dir| {
        let prog = fixture("host_safety");
        let script = format!(
            "/bin/true; {} events 10; {} _Fork 3; (exec /bin/true)",
            prog.display(),
            prog.display()
        );
        run_ok(dir.audited("bash").args(["-c", &script]));
        // bash, its forks (each exec'ing), the exec'ed images, the _Fork child.
        assert!(assert_trimmed(&dir.logs()) >= 8);
    }
);

// Trimming at exit while other threads still log: truncating under their
// mapping would raise SIGBUS; they switch to pwrite instead.
e2e!(exit_while_threads_log_never_raises_sigbus, |dir| {
    let prog = fixture("host_safety");
    for round in 0..20 {
        let out = run(dir.audited(&prog).args(["threads-exit", "8"]), DEADLINE);
        assert!(
            out.status.success(),
            "round {round}: {:?} (signal {:?})",
            out.status,
            out.status.signal()
        );
        assert_eq!(stdout(&out), "exiting\n");
    }
    let logs = logs(&dir.logs());
    assert_eq!(logs.len(), 20);
    for (name, events) in &logs {
        assert!(
            events.iter().any(|e| e["op"] == "exit"),
            "{name} has no exit event"
        );
        assert!(accesses(events, "thread.txt").len() >= 8000, "{name}");
        let (_, torn) = read_log_file(&dir.logs().join(name));
        // Only events under way when exit_group ended their threads.
        assert!(torn <= 8, "{name}: {torn} unparseable lines");
    }
});
