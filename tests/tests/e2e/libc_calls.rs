//! The libc calls that change files without the open/rename/unlink
//! wrappers (issue 11, item 3): raw `syscall()`, `execveat` with an empty
//! environment, `system`/`popen` after `unsetenv("LD_PRELOAD")`,
//! `posix_spawn` file actions, and the metadata calls (chmod, chown,
//! utimes, mkfifo, mknod, bind of a Unix socket). Each runs the real
//! program (tests/fixtures/libc_calls.c) bare and under `mpaudit exec
//! --workers 1` in the three modes: logged as a rogue write of worker 0
//! (exit 1, not 0), redirected into `worker_0/` where later reads see it,
//! denied with EACCES creating nothing. Also the hook layer's own findings:
//! bad pointers and hopeless paths fail as bare, and an exec while threads
//! log leaves no torn line.

use mpaudit_tests::*;
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One mode's run: the program's output, exit status, report and events.
struct Run {
    out: Output,
    report: Value,
    events: Vec<Value>,
    dir: PathBuf,
}

impl Run {
    fn code(&self) -> i32 {
        self.out.status.code().expect("exited")
    }
    fn stdout(&self) -> String {
        stdout(&self.out)
    }
    fn worker_file(&self, name: &str) -> PathBuf {
        self.dir.join("mpaudit-workers/worker_0").join(name)
    }
    /// The writes to `name` by an operation whose name starts with `op`.
    fn accesses_by(&self, name: &str, op: &str) -> Vec<&Value> {
        accesses(&self.events, name)
            .into_iter()
            .filter(|e| e["op"].as_str().is_some_and(|o| o.starts_with(op)))
            .filter(|e| e["verdict"] != "read")
            .collect()
    }
    fn context(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}\nreport: {:#}\nevents: {:#?}",
            self.stdout(),
            String::from_utf8_lossy(&self.out.stderr),
            self.report,
            self.events
        )
    }
}

/// `dir/<sub>`, fresh, with `shared.txt` ("hello\n", mode 644) in it: the
/// file the metadata calls change.
fn job_dir(dir: &TestDir, sub: &str) -> PathBuf {
    let d = dir.join(sub);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let shared = d.join("shared.txt");
    std::fs::write(&shared, "hello\n").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    d
}

fn bare(dir: &TestDir, args: &[&str]) -> String {
    let d = job_dir(dir, "bare");
    let mut c = Command::new(fixture("libc_calls"));
    c.current_dir(&d).args(args);
    stdout(&run(&mut c, DEADLINE))
}

/// `mpaudit exec --workers N [--action ACTION] -- libc_calls ARGS` in a
/// fresh `dir/<action>`.
fn exec(dir: &TestDir, action: &str, workers: u32, args: &[&str]) -> Run {
    exec_prepared(dir, action, workers, args, |_| {})
}

/// [`exec`] with more set up in the job directory first.
fn exec_prepared(
    dir: &TestDir,
    action: &str,
    workers: u32,
    args: &[&str],
    prepare: impl Fn(&Path),
) -> Run {
    let d = job_dir(dir, action);
    prepare(&d);
    let report_file = d.join("report.json");
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(&d)
        .args(["exec", "--format", "json", "--report"])
        .arg(&report_file)
        .arg("--preload")
        .arg(lib())
        .args(["--workers", &workers.to_string()]);
    if action != "log" {
        c.args(["--action", action]);
    }
    if action == "redirect" {
        // Merged elsewhere: the job directory shows what the run itself did
        // (merging back into it is the runner's business, tested there).
        c.args(["--merge-dir", "merged"]);
    }
    c.arg("--").arg(fixture("libc_calls")).args(args);
    let out = run(&mut c, DEADLINE);
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap_or_default())
        .unwrap_or_else(|e| {
            panic!(
                "report is not JSON ({e}): stdout={} stderr={}",
                stdout(&out),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let (events, bad) = read_events(&d.join("mpaudit-logs"));
    assert_eq!(bad, 0, "torn or unparsable log lines");
    Run {
        out,
        report,
        events,
        dir: d,
    }
}

/// How the shared directory must look after a run, by mode.
struct Expect<'a> {
    /// The file name the call writes.
    name: &'a str,
    /// The event's `op`.
    op: &'a str,
    /// The program's output in deny mode (the call fails with EACCES).
    denied_stdout: &'a str,
    /// The run's exit status in deny mode: 1 (rogue), or 3 when the
    /// program itself fails for it (the job failed).
    denied_code: i32,
    /// The file as the call leaves it (checked on the shared file in log
    /// mode and on the worker's copy under redirect).
    changed: &'a dyn Fn(&Path) -> bool,
    /// The shared file as it was before (checked under redirect and deny).
    untouched: &'a dyn Fn(&Path) -> bool,
}

/// The whole contract for one call: bare, log, redirect and deny.
fn rogue_write_in_every_mode(dir: &TestDir, args: &[&str], want: Expect) {
    let bare_out = bare(dir, args);
    assert!(
        (want.changed)(&dir.join("bare").join(want.name)),
        "the bare run makes the change: {bare_out}"
    );

    let log = exec(dir, "log", 1, args);
    assert_eq!(log.stdout(), bare_out, "log mode changes nothing");
    assert_eq!(log.code(), 1, "a rogue write: exit 1\n{}", log.context());
    assert!(
        (want.changed)(&log.dir.join(want.name)),
        "{}",
        log.context()
    );
    let w = log.accesses_by(want.name, want.op);
    assert_eq!(w.len(), 1, "one {} event\n{}", want.op, log.context());
    assert_eq!(w[0]["verdict"], "rogue", "{}", w[0]);
    assert_eq!(w[0]["action"], "logged", "{}", w[0]);
    assert_eq!(w[0]["mode"], "write", "{}", w[0]);
    assert_eq!(w[0]["worker"], 0, "{}", w[0]);
    assert!(log.report["summary"]["rogue_writes"].as_u64() >= Some(1));

    let redirect = exec(dir, "redirect", 1, args);
    assert_eq!(
        redirect.stdout(),
        bare_out,
        "the program sees its own change\n{}",
        redirect.context()
    );
    assert_eq!(redirect.code(), 1, "{}", redirect.context());
    assert!(
        (want.untouched)(&redirect.dir.join(want.name)),
        "the shared file is untouched\n{}",
        redirect.context()
    );
    assert!(
        (want.changed)(&redirect.worker_file(want.name)),
        "the worker's copy has the change\n{}",
        redirect.context()
    );
    let w = redirect.accesses_by(want.name, want.op);
    assert_eq!(w.len(), 1, "{}", redirect.context());
    assert_eq!(w[0]["action"], "redirected", "{}", w[0]);
    assert_eq!(
        w[0]["target"],
        redirect.worker_file(want.name).to_str().unwrap(),
        "{}",
        w[0]
    );

    let deny = exec(dir, "deny", 1, args);
    assert_eq!(deny.stdout(), want.denied_stdout, "{}", deny.context());
    assert_eq!(deny.code(), want.denied_code, "{}", deny.context());
    assert!(
        (want.untouched)(&deny.dir.join(want.name)),
        "deny changes nothing\n{}",
        deny.context()
    );
    assert!(!deny.worker_file(want.name).exists());
    let w = deny.accesses_by(want.name, want.op);
    assert_eq!(w.len(), 1, "{}", deny.context());
    assert_eq!(
        (&w[0]["action"], &w[0]["errno"]),
        (&"denied".into(), &"EACCES".into()),
        "{}",
        w[0]
    );
}

fn missing(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_err()
}

fn mode_of(p: &Path) -> Option<u32> {
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

fn shared_as_before(p: &Path) -> bool {
    mode_of(p) == Some(0o644) && std::fs::read_to_string(p).ok().as_deref() == Some("hello\n")
}

fn mtime_of(p: &Path) -> Option<i64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.mtime())
}

e2e!(raw_syscall_openat_is_a_rogue_write, |dir| {
    rogue_write_in_every_mode(
        &dir,
        &["raw-openat", "raw.txt"],
        Expect {
            name: "raw.txt",
            op: "openat",
            denied_code: 1,
            denied_stdout: "syscall(SYS_openat): errno 13\ncontent of raw.txt: missing (errno 2)\n",
            changed: &|p| std::fs::read_to_string(p).ok().as_deref() == Some("raw\n"),
            untouched: &missing,
        },
    );
});

e2e!(raw_syscalls_are_dispatched_like_their_wrappers, |dir| {
    let args = ["raw-namespace"];
    let bare_out = bare(&dir, &args);
    let log = exec(&dir, "log", 1, &args);
    assert_eq!(log.stdout(), bare_out, "same results, errno included");
    assert_eq!(log.code(), 1, "{}", log.context());
    for (name, op) in [
        ("raw-creat.txt", "creat"),
        ("raw-dir", "mkdirat"),
        // A symlink's event names its text first, the link second.
        ("target", "symlinkat"),
        ("raw-link", "renameat"),
        ("raw-moved", "unlinkat"),
        ("shared.txt", "fchmodat"),
        ("shared.txt", "truncate"),
    ] {
        let e = log.accesses_by(name, op);
        assert_eq!(e.len(), 1, "{op} {name}\n{}", log.context());
        assert!(e[0]["result"].as_i64() >= Some(0), "{}", e[0]);
        assert_eq!(e[0]["verdict"], "rogue", "{}", e[0]);
        assert_eq!(e[0]["worker"], 0, "{}", e[0]);
    }
    assert!(
        !log.events.iter().any(|e| e["op"] == "getpid"),
        "other calls pass through unlogged"
    );
});

e2e!(chmod_of_a_shared_file_is_a_rogue_write, |dir| {
    rogue_write_in_every_mode(
        &dir,
        &["chmod", "shared.txt"],
        Expect {
            name: "shared.txt",
            op: "chmod",
            denied_code: 1,
            denied_stdout: "chmod: errno 13\nstat of shared.txt: file mode 644\n",
            changed: &|p| {
                mode_of(p) == Some(0o600)
                    && std::fs::read_to_string(p).ok().as_deref() == Some("hello\n")
            },
            untouched: &shared_as_before,
        },
    );
});

e2e!(
    chmod_of_a_shared_directory_is_redirected_to_the_workers_copy,
    |dir| {
        // The worker gets its own copy of the directory's metadata, which
        // the chmod changes (the worker sees the bare result); the shared
        // directory keeps its mode. Denied like any rogue write.
        let args = ["chmod", "sub"];
        let make_sub = |d: &Path| {
            std::fs::create_dir(d.join("sub")).unwrap();
            std::fs::set_permissions(d.join("sub"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        };
        let bare_out = {
            let d = job_dir(&dir, "bare");
            make_sub(&d);
            let mut c = Command::new(fixture("libc_calls"));
            c.current_dir(&d).args(args);
            stdout(&run(&mut c, DEADLINE))
        };
        assert_eq!(bare_out, "chmod: ok\nstat of sub: dir mode 600\n");
        for (mode, want_stdout, want_action) in [
            ("redirect", bare_out.as_str(), "redirected"),
            (
                "deny",
                "chmod: errno 13\nstat of sub: dir mode 755\n",
                "denied",
            ),
        ] {
            let r = exec_prepared(&dir, mode, 1, &args, make_sub);
            assert_eq!(r.stdout(), want_stdout, "{mode}\n{}", r.context());
            let w = r.accesses_by("sub", "chmod");
            assert_eq!(w.len(), 1, "{}", r.context());
            assert_eq!(w[0]["action"], want_action, "{}", w[0]);
            assert_eq!(w[0]["verdict"], "rogue", "{}", w[0]);
            let shared = std::fs::metadata(dir.join(mode).join("sub")).unwrap();
            assert_eq!(shared.permissions().mode() & 0o7777, 0o755, "{mode}");
        }
    }
);

e2e!(fchmodat_of_a_shared_file_is_a_rogue_write, |dir| {
    rogue_write_in_every_mode(
        &dir,
        &["fchmodat", "shared.txt"],
        Expect {
            name: "shared.txt",
            op: "fchmodat",
            denied_code: 1,
            denied_stdout: "fchmodat: errno 13\nstat of shared.txt: file mode 644\n",
            changed: &|p| mode_of(p) == Some(0o640),
            untouched: &shared_as_before,
        },
    );
});

e2e!(utimensat_of_a_shared_file_is_a_rogue_write, |dir| {
    rogue_write_in_every_mode(
        &dir,
        &["utimensat", "shared.txt"],
        Expect {
            name: "shared.txt",
            op: "utimensat",
            denied_code: 1,
            denied_stdout: "utimensat: errno 13\nstat of shared.txt: file mode 644\n",
            changed: &|p| mtime_of(p) == Some(1_000_000_000),
            untouched: &|p| shared_as_before(p) && mtime_of(p) != Some(1_000_000_000),
        },
    );
});

e2e!(utimes_of_a_shared_file_is_a_rogue_write, |dir| {
    rogue_write_in_every_mode(
        &dir,
        &["utimes", "shared.txt"],
        Expect {
            name: "shared.txt",
            op: "utimes",
            denied_code: 1,
            denied_stdout: "utimes: errno 13\nstat of shared.txt: file mode 644\n",
            changed: &|p| mtime_of(p) == Some(1_000_000_000),
            untouched: &|p| shared_as_before(p) && mtime_of(p) != Some(1_000_000_000),
        },
    );
});

e2e!(chown_of_a_shared_file_is_a_rogue_write, |dir| {
    // To the owner it has: allowed unprivileged, and visible only as the
    // event (and, redirected, as the worker's copy).
    rogue_write_in_every_mode(
        &dir,
        &["chown", "shared.txt"],
        Expect {
            name: "shared.txt",
            op: "chown",
            denied_code: 1,
            denied_stdout: "chown: errno 13\nstat of shared.txt: file mode 644\n",
            changed: &|p| std::fs::read_to_string(p).ok().as_deref() == Some("hello\n"),
            untouched: &shared_as_before,
        },
    );
});

e2e!(mkfifo_in_the_job_directory_is_a_rogue_write, |dir| {
    rogue_write_in_every_mode(
        &dir,
        &["mkfifo", "fifo"],
        Expect {
            name: "fifo",
            op: "mkfifo",
            denied_code: 1,
            denied_stdout: "mkfifo: errno 13\nstat of fifo: missing (errno 2)\n",
            changed: &|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo()),
            untouched: &missing,
        },
    );
});

e2e!(mknod_in_the_job_directory_is_a_rogue_write, |dir| {
    rogue_write_in_every_mode(
        &dir,
        &["mknod", "node"],
        Expect {
            name: "node",
            op: "mknod",
            denied_code: 1,
            denied_stdout: "mknod: errno 13\nstat of node: missing (errno 2)\n",
            changed: &|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()),
            untouched: &missing,
        },
    );
});

e2e!(binding_a_unix_socket_to_a_path_is_a_rogue_write, |dir| {
    rogue_write_in_every_mode(
        &dir,
        &["bind", "sock"],
        Expect {
            name: "sock",
            op: "bind",
            denied_code: 1,
            denied_stdout: "bind: errno 13\nstat of sock: missing (errno 2)\n",
            changed: &|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()),
            untouched: &missing,
        },
    );
});

e2e!(posix_spawn_file_action_opens_are_rogue_writes, |dir| {
    rogue_write_in_every_mode(
        &dir,
        &["spawn-open", "spawned.txt"],
        Expect {
            name: "spawned.txt",
            op: "posix_spawn_file_actions_addopen",
            // The open would fail in the child: posix_spawn returns its errno.
            denied_code: 1,
            denied_stdout:
                "addopen: 0\nposix_spawn: 13\ncontent of spawned.txt: missing (errno 2)\n",
            changed: &|p| std::fs::read_to_string(p).ok().as_deref() == Some("spawned\n"),
            untouched: &missing,
        },
    );
});

/// A child started with a scrubbed environment still writes as worker 0.
fn child_is_audited(
    dir: &TestDir,
    args: &[&str],
    name: &str,
    denied_stdout: &str,
    denied_code: i32,
) {
    rogue_write_in_every_mode(
        dir,
        args,
        Expect {
            name,
            op: "open",
            denied_code,
            denied_stdout,
            changed: &|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0),
            untouched: &missing,
        },
    );
}

e2e!(execveat_with_an_empty_environment_stays_audited, |dir| {
    // Denied, the shell fails to create its file: the job failed (exit 3).
    child_is_audited(&dir, &["execveat"], "execveat.txt", "", 3);
    let log = exec(&dir, "log", 1, &["execveat"]);
    let exec_event = log
        .events
        .iter()
        .find(|e| e["op"] == "exec" && e["exe"] == "/bin/sh")
        .unwrap_or_else(|| panic!("an exec event\n{}", log.context()));
    assert_eq!(exec_event["audited"], true);
});

e2e!(system_after_unsetenv_ld_preload_stays_audited, |dir| {
    child_is_audited(&dir, &["system"], "system.txt", "system: status 512\n", 1);
});

e2e!(popen_after_unsetenv_ld_preload_stays_audited, |dir| {
    child_is_audited(
        &dir,
        &["popen"],
        "popen.txt",
        "popen read: pclose: 512\n",
        1,
    );
});

e2e!(chmod_of_one_file_by_two_workers_is_a_conflict, |dir| {
    let r = exec(&dir, "log", 2, &["chmod", "shared.txt"]);
    assert_eq!(r.code(), 1, "{}", r.context());
    let conflicts = r.report["conflicts"].as_array().expect("conflicts");
    let c = conflicts
        .iter()
        .find(|c| c["path"] == "shared.txt")
        .unwrap_or_else(|| panic!("shared.txt is a conflict\n{}", r.context()));
    assert_eq!(c["writers"], serde_json::json!(["0", "1"]), "{c}");
    assert_eq!(c["resolution"], Value::Null, "{c}");
});

e2e!(
    invalid_path_pointers_fail_with_efault_in_every_mode,
    |dir| {
        // Before: deny and redirect read the path before the call and crashed
        // (SIGSEGV) where libc returns EFAULT; exec did in every mode.
        let args = ["bad-pointers"];
        let bare_out = bare(&dir, &args);
        assert!(bare_out.contains("execve envp: errno 14"), "{bare_out}");
        for mode in ["log", "redirect", "deny"] {
            let r = exec(&dir, mode, 1, &args);
            assert_eq!(r.stdout(), bare_out, "{mode}\n{}", r.context());
        }
    }
);

e2e!(deny_of_a_hopeless_path_fails_as_bare, |dir| {
    // Before: a path of 4096 bytes or more under deny gave EACCES where
    // the kernel gives ENAMETOOLONG.
    let args = ["hopeless-paths"];
    let bare_out = bare(&dir, &args);
    assert!(bare_out.contains("errno 36"), "{bare_out}");
    for mode in ["log", "redirect", "deny"] {
        let r = exec(&dir, mode, 1, &args);
        assert_eq!(r.stdout(), bare_out, "{mode}\n{}", r.context());
    }
});

e2e!(exec_while_threads_log_leaves_no_torn_line, |dir| {
    // Before: another thread's event half copied when exec killed it left
    // a torn line, and the run ended with exit 4 (unparsed events).
    let r = exec(&dir, "log", 1, &["exec-while-logging", "40"]);
    assert_eq!(r.code(), 0, "{}", r.context());
    let execs = r.events.iter().filter(|e| e["op"] == "exec").count();
    assert!(execs >= 40, "{execs} exec events");
});
