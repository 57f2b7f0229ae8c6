//! libmpaudit.so under real programs: what it sees, and that the host never
//! notices it.

use mpaudit_tests::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

fn one_access<'a>(events: &'a [Value], name: &str, op: &str) -> &'a Value {
    accesses(events, name)
        .into_iter()
        .find(|e| e["op"] == op)
        .unwrap_or_else(|| panic!("no {op} event on {name}; ops: {:?}", ops(events)))
}

fn check_every_entry_point(probe: &str) {
    let dir = TestDir::new(probe);
    run_ok(dir.audited(fixture(probe)).arg("opens"));
    let ev = dir.events();
    let abs_of = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    // The read-only open takes its flags from a volatile: a fortified build
    // cannot prove them constant and calls __open_2.
    let read_op = if probe == "probe" { "open" } else { "__open_2" };
    let reads = accesses(&ev, "o-open")
        .into_iter()
        .filter(|e| e["op"] == read_op && e["mode"] == "read")
        .count();
    assert_eq!(reads, 1, "{read_op} read of o-open; ops: {:?}", ops(&ev));
    let e = accesses(&ev, "o-open")
        .into_iter()
        .find(|e| e["mode"] == "write")
        .expect("the write open");
    assert_eq!(e["abs"], abs_of("o-open"));
    assert_eq!(
        e["flags"],
        serde_json::json!(["O_WRONLY", "O_CREAT", "O_TRUNC"])
    );
    assert_eq!(
        (e["create"].clone(), e["truncate"].clone()),
        (Value::Bool(true), Value::Bool(true))
    );
    assert!(e["result"].as_i64().unwrap() >= 0);
    assert_eq!(e["errno"], Value::Null);
    one_access(&ev, "o-openat", "openat");
    // openat relative to a directory fd resolves against that directory.
    let via_dirfd: Vec<_> = accesses(&ev, "o-openat")
        .into_iter()
        .filter(|e| e["mode"] == "read")
        .collect();
    assert_eq!(via_dirfd.len(), 1);
    assert_eq!(via_dirfd[0]["abs"], abs_of("o-openat"));
    one_access(&ev, "o-creat", "creat");
    let fopen_a = accesses(&ev, "o-fopen");
    assert!(fopen_a
        .iter()
        .any(|e| e["op"] == "fopen" && e["mode"] == "write" && e["truncate"] == true));
    assert!(fopen_a
        .iter()
        .any(|e| e["op"] == "fopen" && e["mode"] == "readwrite" && e["append"] == true));
    let tmp = ev
        .iter()
        .find(|e| e["op"] == "mkstemp")
        .expect("mkstemp event");
    assert!(
        tmp["path"].as_str().unwrap().starts_with("o-tmp-")
            && !tmp["path"].as_str().unwrap().contains("XXXXXX")
    );
    let rename = ev
        .iter()
        .find(|e| e["op"] == "rename")
        .expect("rename event");
    assert_eq!(rename["path"], tmp["path"]);
    assert_eq!(rename["abs2"], abs_of("o-renamed"));
    for op in [
        "mkdir", "link", "symlink", "truncate", "unlink", "unlinkat", "remove", "rmdir",
    ] {
        let e = ev
            .iter()
            .find(|e| e["op"] == op)
            .unwrap_or_else(|| panic!("no {op} event"));
        assert_eq!(e["mode"], "write", "{op}");
        assert_eq!(e["errno"], Value::Null, "{op}");
        assert!(
            e["component"]["object"].as_str().unwrap().ends_with(probe),
            "{op} attributed to the program"
        );
    }
}

#[test]
fn c_program_every_entry_point_is_logged() {
    check_every_entry_point("probe");
}

#[test]
fn fortified_c_program_reaches_the_fortified_entry_points() {
    check_every_entry_point("probe-fortified");
}

e2e!(files_keep_the_permission_bits_they_asked_for, |dir| {
    let bare_dir = TestDir::new("modes-bare");
    let bare = run_ok(bare_dir.bare(fixture("probe")).arg("modes"));
    let audited = run_ok(dir.audited(fixture("probe")).arg("modes"));
    assert_eq!(
        stdout(&audited),
        "m-open 640\nm-openat 604\nm-creat 751\nm-dir 713\n"
    );
    assert_eq!(stdout(&audited), stdout(&bare));
});

e2e!(errors_and_errno_are_exactly_what_libc_gives, |dir| {
    let bare = run_ok(dir.bare(fixture("probe")).arg("errors"));
    let audited = run_ok(dir.audited(fixture("probe")).arg("errors"));
    assert_eq!(
        stdout(&bare),
        "null -1 EFAULT\nlong -1 ENAMETOOLONG\nmissing -1 ENOENT\nsuccess-errno 1234\nfopen null ENOENT\n"
    );
    assert_eq!(stdout(&audited), stdout(&bare));
    let ev = dir.events();
    let long = ev
        .iter()
        .find(|e| e["errno"] == "ENAMETOOLONG")
        .expect("the long path is logged");
    assert_eq!(long["path"].as_str().unwrap().len(), 5000);
    assert!(ev
        .iter()
        .any(|e| e["path"] == "does/not/exist" && e["op"] == "fopen" && e["result"] == -1));
});

// The kernel reads a path only up to PATH_MAX bytes; the library read on
// to its own longer limit, into the unreadable page, and crashed the program.
e2e!(
    unterminated_path_before_an_unreadable_page_does_not_crash,
    |dir| {
        let bare = run_ok(dir.bare(fixture("probe")).arg("unterminated"));
        assert_eq!(
            stdout(&bare),
            "read -1 ENAMETOOLONG\nwrite -1 ENAMETOOLONG\n"
        );
        let audited = run_ok(dir.audited(fixture("probe")).arg("unterminated"));
        assert_eq!(stdout(&audited), stdout(&bare));
        let long: Vec<_> = dir
            .events()
            .into_iter()
            .filter(|e| e["errno"] == "ENAMETOOLONG")
            .collect();
        assert_eq!(long.len(), 2, "both calls are logged");
        for e in &long {
            // Everything up to the unreadable page, nothing beyond it.
            assert_eq!(e["path"].as_str().unwrap().len(), 4096);
        }
    }
);

e2e!(sixty_four_threads_lose_no_event_and_tear_none, |dir| {
    run_ok(dir.audited(fixture("probe")).args(["threads", "64", "500"]));
    let (events, bad) = read_events(&dir.logs());
    assert_eq!(bad, 0, "torn or corrupt lines");
    let opens: Vec<_> = events
        .iter()
        .filter(|e| e["op"] == "open" && e["path"].as_str().unwrap().starts_with('t'))
        .collect();
    assert_eq!(opens.len(), 64 * 500);
    let distinct: BTreeSet<&str> = opens.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(distinct.len(), 64 * 500);
    let tids: BTreeSet<i64> = opens.iter().map(|e| e["tid"].as_i64().unwrap()).collect();
    assert_eq!(tids.len(), 64);
});

fn check_death(how: &str) {
    let dir = TestDir::new(&format!("die-{how}"));
    let out = run(
        dir.audited(fixture("probe")).args(["die", how, "300"]),
        DEADLINE,
    );
    assert!(!out.status.success());
    let ev = dir.events();
    let written: BTreeSet<&str> = ev
        .iter()
        .filter(|e| e["op"] == "open")
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(
        written.len(),
        300,
        "every open before the {how} is in the log"
    );
}

#[test]
fn no_event_lost_on_sigkill() {
    check_death("sigkill");
}

#[test]
fn no_event_lost_on_abort() {
    check_death("abort");
}

e2e!(
    no_event_lost_on_underscore_exit_and_its_status_logged,
    |dir| {
        let out = run(
            dir.audited(fixture("probe")).args(["die", "_exit", "50"]),
            DEADLINE,
        );
        assert_eq!(out.status.code(), Some(7));
        let ev = dir.events();
        assert_eq!(ev.iter().filter(|e| e["op"] == "open").count(), 50);
        let exit = ev.iter().find(|e| e["op"] == "exit").expect("exit event");
        assert_eq!(exit["status"], 7);
    }
);

e2e!(
    open_from_a_signal_handler_during_hooks_does_not_deadlock,
    |dir| {
        // A 200us interval timer fires constantly while the main thread is inside
        // the open hook; the handler opens too. Finishing at all is the test
        // (run() fails a hang after its deadline); most handler opens are seen.
        let out = run_ok(dir.audited(fixture("probe")).args(["signal-open", "20000"]));
        let handler_opens: usize = stdout(&out)
            .trim()
            .strip_prefix("handler-opens ")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            handler_opens > 0,
            "the timer never fired: the test tested nothing"
        );
        let ev = dir.events();
        assert_eq!(accesses(&ev, "main-loop").len(), 20000);
        let logged = accesses(&ev, "from-handler").len();
        assert!(logged <= handler_opens);
        eprintln!("handler opens: {handler_opens}, logged: {logged}");
    }
);

e2e!(exec_keeps_both_images_logs, |dir| {
    run_ok(
        dir.audited(fixture("probe"))
            .args(["exec", "sh", "-c", "echo x > after-exec"]),
    );
    let ev = dir.events();
    let before = accesses(&ev, "before-exec-0");
    let after = accesses(&ev, "after-exec");
    assert_eq!((before.len(), after.len()), (1, 1));
    assert_eq!(
        before[0]["pid"], after[0]["pid"],
        "same process, two images"
    );
    let exec = ev.iter().find(|e| e["op"] == "exec").expect("exec event");
    assert!(exec["exe"].as_str().unwrap().ends_with("/sh"));
    assert_eq!(exec["result"], Value::Null);
    let files = std::fs::read_dir(dir.logs()).unwrap().count();
    assert!(files >= 2, "each image has its own log");
});

e2e!(failed_exec_is_logged_with_its_errno, |dir| {
    let out = run_ok(dir.audited(fixture("probe")).arg("exec-missing"));
    assert_eq!(stdout(&out), "exec failed ENOENT\n");
    let ev = dir.events();
    let execs: Vec<_> = ev.iter().filter(|e| e["op"] == "exec").collect();
    assert_eq!(execs.len(), 2);
    assert_eq!(execs[1]["result"], -1);
    assert_eq!(execs[1]["errno"], "ENOENT");
});

e2e!(scrubbed_environment_stays_audited, |dir| {
    run_ok(
        dir.audited("sh")
            .args(["-c", "env -i /bin/sh -c 'echo x > scrubbed.txt'"]),
    );
    let ev = dir.events();
    let e = accesses(&ev, "scrubbed.txt");
    assert_eq!(e.len(), 1, "the env -i child was audited");
    assert_eq!(e[0]["mode"], "write");
});

e2e!(
    forked_and_vforked_children_log_into_their_own_files,
    |dir| {
        run_ok(dir.audited(fixture("probe")).args(["forks", "6"]));
        let ev = dir.events();
        let parent = ev
            .iter()
            .find(|e| e["op"] == "start" && e["argv"][1] == "forks")
            .unwrap()["pid"]
            .clone();
        let forks = ev
            .iter()
            .filter(|e| e["op"] == "fork" && e["pid"] == parent)
            .count();
        assert_eq!(forks, 6);
        for i in 0..6 {
            let e = accesses(&ev, &format!("child-{i}"));
            assert_eq!(e.len(), 1, "child {i}");
            assert_ne!(e[0]["pid"], parent);
            assert_eq!(e[0]["ppid"], parent);
        }
    }
);

e2e!(fork_mode_numbers_workers_in_fork_order, |dir| {
    let mut cmd = dir.audited(fixture("probe"));
    cmd.args(["forks", "4"]).env("MPAUDIT_FORK_WORKERS", "1");
    run_ok(&mut cmd);
    let ev = dir.events();
    let mut by_child: HashMap<String, i64> = HashMap::new();
    for i in 0..4 {
        let e = accesses(&ev, &format!("child-{i}"));
        by_child.insert(
            format!("child-{i}"),
            e[0]["worker"].as_i64().expect("child has a worker"),
        );
    }
    let workers: BTreeSet<i64> = by_child.values().copied().collect();
    assert_eq!(workers, (0..4).collect());
    assert_eq!(by_child["child-0"], 0, "fork order");
    assert!(
        ev.iter()
            .filter(|e| e["op"] == "start" && e["root"] == true)
            .count()
            == 1
    );
});

e2e!(non_utf8_paths_keep_their_bytes, |dir| {
    run_ok(dir.audited(fixture("probe")).arg("bad-utf8"));
    let ev = dir.events();
    let e = ev
        .iter()
        .find(|e| e["path_hex"].is_string())
        .expect("an event with path_hex");
    assert_eq!(e["path_hex"], "636166e92e747874");
    assert_eq!(e["path"], "caf\u{FFFD}.txt");
});

e2e!(component_names_the_library_and_function_not_libc, |dir| {
    run_ok(dir.audited(fixture("writer_main")).arg("report.txt"));
    let ev = dir.events();
    let e = one_access(&ev, "report.txt", "fopen");
    assert!(
        e["component"]["object"]
            .as_str()
            .unwrap()
            .ends_with("/libfixture_writer.so"),
        "{e}"
    );
    assert_eq!(frame_function(&e["component"]), "fixture_write_report");
    let stack = e["stack"].as_array().unwrap();
    assert!(stack.len() >= 2 && stack.len() <= 16);
    assert!(stack
        .iter()
        .all(|f| !f["object"].as_str().unwrap_or("").contains("libmpaudit")));
    assert!(stack
        .iter()
        .any(|f| f["object"].as_str().unwrap().ends_with("/writer_main")));
});

e2e!(cpp_ofstream_is_seen_and_attributed_to_the_program, |dir| {
    run_ok(&mut dir.audited(fixture("ofstream")));
    let ev = dir.events();
    let w: Vec<_> = accesses(&ev, "cpp-out.txt")
        .into_iter()
        .filter(|e| e["mode"] == "write")
        .collect();
    assert_eq!(w.len(), 1, "{:?}", ops(&ev));
    assert!(w[0]["component"]["object"]
        .as_str()
        .unwrap()
        .ends_with("/ofstream"));
});

e2e!(rust_file_create_is_seen, |dir| {
    run_ok(&mut dir.audited(fixture("rust_create")));
    let ev = dir.events();
    let w = accesses(&ev, "rust-out.txt");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0]["op"], "open64");
    assert_eq!(w[0]["create"], true);
});

e2e!(python_open_and_os_open_are_seen, |dir| {
    run_ok(dir.audited("python3").args([
        "-c",
        "import os\nopen('py-open.txt','w').write('x')\nos.close(os.open('py-osopen.txt', os.O_WRONLY|os.O_CREAT, 0o600))",
    ]));
    let ev = dir.events();
    for name in ["py-open.txt", "py-osopen.txt"] {
        let w = accesses(&ev, name);
        assert_eq!(w.len(), 1, "{name}");
        assert_eq!(w[0]["mode"], "write");
        assert!(
            w[0]["component"].is_object(),
            "python writes are attributed (to the interpreter)"
        );
    }
});

e2e!(bash_redirection_cp_tar_sed_are_seen, |dir| {
    std::fs::write(dir.join("in.txt"), "hello\n").unwrap();
    run_ok(dir.audited("bash").args([
        "-c",
        "echo x > redir.txt && cp in.txt copy.txt && tar -cf arch.tar in.txt && sed -i s/hello/bye/ copy.txt",
    ]));
    let ev = dir.events();
    assert_eq!(accesses(&ev, "redir.txt")[0]["mode"], "write");
    assert!(accesses(&ev, "copy.txt")
        .iter()
        .any(|e| e["mode"] == "write" && e["create"] == true));
    assert!(accesses(&ev, "arch.tar")
        .iter()
        .any(|e| e["mode"] == "write"));
    // sed -i writes a temporary file and renames it over the original.
    let rename = ev
        .iter()
        .find(|e| e["op"] == "rename")
        .expect("sed's rename");
    assert!(rename["abs2"].as_str().unwrap().ends_with("/copy.txt"));
    assert_eq!(
        std::fs::read_to_string(dir.join("copy.txt")).unwrap(),
        "bye\n"
    );
});

e2e!(sqlite_database_and_journal_are_seen, |dir| {
    run_ok(
        dir.audited("sqlite3")
            .args(["db.sqlite", "create table t(x); insert into t values (1);"]),
    );
    let ev = dir.events();
    assert!(accesses(&ev, "db.sqlite")
        .iter()
        .any(|e| e["create"] == true));
    let journal = accesses(&ev, "db.sqlite-journal");
    assert!(
        journal.iter().any(|e| e["mode"] != "read"),
        "the rollback journal is written"
    );
    assert!(journal.iter().any(|e| e["op"] == "unlink"), "and removed");
});

e2e!(
    python_multiprocessing_fork_pool_children_are_workers,
    |dir| {
        let script = "import multiprocessing as mp, os\n\
def work(i):\n    open('mp-%d.txt' % i, 'w').write(str(i))\n    return os.getpid()\n\
if __name__ == '__main__':\n    ctx = mp.get_context('fork')\n    with ctx.Pool(4) as p:\n        pids = p.map(work, range(16), chunksize=1)\n    print(len(set(pids)))\n";
        let mut cmd = dir.audited("python3");
        cmd.args(["-c", script]).env("MPAUDIT_FORK_WORKERS", "1");
        run_ok(&mut cmd);
        let ev = dir.events();
        let mut workers = BTreeSet::new();
        for i in 0..16 {
            let w = accesses(&ev, &format!("mp-{i}.txt"));
            assert_eq!(w.len(), 1, "mp-{i}.txt");
            workers.insert(w[0]["worker"].as_i64().expect("written by a worker"));
        }
        assert!(workers.iter().all(|w| (0..4).contains(w)), "{workers:?}");
        // Pool children end with os._exit: their exit events are still there.
        let exits = ev
            .iter()
            .filter(|e| e["op"] == "exit" && e["worker"].is_i64())
            .count();
        assert!(exits >= 4, "exits of the 4 pool workers: {exits}");
    }
);

e2e!(child_killed_by_sigkill_keeps_its_events, |dir| {
    let mut cmd = dir.audited("bash");
    cmd.args(["-c", "for i in $(seq 1 40); do : > k$i; done; kill -9 $$"]);
    let out = run(&mut cmd, DEADLINE);
    assert!(!out.status.success());
    let ev = dir.events();
    for i in 1..=40 {
        assert_eq!(accesses(&ev, &format!("k{i}")).len(), 1, "k{i}");
    }
});

e2e!(
    variadic_exec_family_is_logged_and_execle_stays_audited,
    |dir| {
        for (mode, name) in [
            ("l", "via-execl"),
            ("lp", "via-execlp"),
            ("le", "via-execle"),
        ] {
            run_ok(dir.audited(fixture("probe")).args(["execl", mode]));
            let ev = dir.events();
            let exec = ev.iter().find(|e| {
                e["op"] == "exec" && e["argv"][2].as_str().is_some_and(|a| a.contains(name))
            });
            assert!(exec.is_some(), "exec event for exec{mode}");
            assert_eq!(
                accesses(&ev, name).len(),
                1,
                "the program exec{mode} started was audited"
            );
        }
    }
);

e2e!(relative_paths_follow_chdir_and_fchdir, |dir| {
    run_ok(dir.audited(fixture("probe")).arg("chdir"));
    let ev = dir.events();
    let abs = |name: &str| accesses(&ev, name)[0]["abs"].as_str().unwrap().to_owned();
    assert_eq!(abs("before"), dir.join("before").to_str().unwrap());
    assert_eq!(
        abs("after-chdir"),
        dir.join("sub/after-chdir").to_str().unwrap()
    );
    assert_eq!(
        abs("after-fchdir"),
        dir.join("after-fchdir").to_str().unwrap()
    );
});

// Regression: frames were recognised as ours by file name only, so a copy
// installed under another name (libmpaudit-1.2.so) was the "component" of
// every write, and its own frames filled the stack.
e2e!(a_renamed_copy_of_the_library_never_blames_itself, |dir| {
    let copy = dir.join("libaudit-copy-1.2.so");
    std::fs::copy(lib(), &copy).unwrap();
    let mut cmd = dir.audited(fixture("writer_main"));
    run_ok(cmd.env("LD_PRELOAD", &copy).arg("report.txt"));
    let ev = dir.events();
    let e = one_access(&ev, "report.txt", "fopen");
    assert_eq!(
        frame_function(&e["component"]),
        "fixture_write_report",
        "{e}"
    );
    let stack = e["stack"].as_array().unwrap();
    assert!(
        stack.iter().all(|f| !f["object"]
            .as_str()
            .unwrap_or("")
            .ends_with("libaudit-copy-1.2.so")),
        "{e}"
    );
});
