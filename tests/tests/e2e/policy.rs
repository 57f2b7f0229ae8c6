//! The I/O discipline: verdicts, redirection into worker directories with
//! read-your-writes, deny, declared outputs and registered components.

use mpaudit_tests::*;
use serde_json::Value;
use std::process::Command;

/// A command in `dir` under the library with a policy, as worker `worker`.
fn worker_cmd(dir: &TestDir, action: &str, worker: Option<u32>, program: &str) -> Command {
    let mut c = dir.audited(program);
    c.env("MPAUDIT_ACTION", action)
        .env("MPAUDIT_JOB_DIR", &dir.path);
    if let Some(k) = worker {
        c.env("MPAUDIT_WORKER", k.to_string());
    }
    c
}

fn worker_file(dir: &TestDir, k: u32, rel: &str) -> std::path::PathBuf {
    dir.join(&format!("mpaudit-workers/worker_{k}/{rel}"))
}

e2e!(
    four_spawned_workers_redirect_and_read_their_own_writes,
    |dir| {
        for k in 0..4 {
            let out = run_ok(
                worker_cmd(&dir, "redirect", Some(k), "bash")
                    .args(["-c", "echo $MPAUDIT_WORKER > out.txt; cat out.txt"]),
            );
            assert_eq!(
                stdout(&out),
                format!("{k}\n"),
                "cat reads the worker's own out.txt"
            );
        }
        assert!(
            !dir.join("out.txt").exists(),
            "nothing written to the shared job dir"
        );
        for k in 0..4 {
            assert_eq!(
                std::fs::read_to_string(worker_file(&dir, k, "out.txt")).unwrap(),
                format!("{k}\n")
            );
            let manifest =
                std::fs::read_to_string(worker_file(&dir, k, "mpaudit-redirects.jsonl")).unwrap();
            let line: Value = serde_json::from_str(manifest.lines().next().unwrap()).unwrap();
            assert_eq!(line["original"], dir.join("out.txt").to_str().unwrap());
            assert_eq!(line["worker"], k);
            use std::os::unix::fs::PermissionsExt;
            let top = std::fs::metadata(dir.join(&format!("mpaudit-workers/worker_{k}"))).unwrap();
            assert_eq!(top.permissions().mode() & 0o777, 0o700);
        }
        let ev = dir.events();
        let w = accesses(&ev, "out.txt")
            .into_iter()
            .find(|e| e["mode"] == "write")
            .unwrap();
        assert_eq!(
            (w["verdict"].clone(), w["action"].clone()),
            ("rogue".into(), "redirected".into())
        );
        assert!(w["target"]
            .as_str()
            .unwrap()
            .contains("/mpaudit-workers/worker_"));
    }
);

e2e!(
    sed_in_place_on_a_shared_file_edits_only_the_worker_copy,
    |dir| {
        std::fs::write(dir.join("conf.txt"), "alpha\n").unwrap();
        let out = run_ok(
            worker_cmd(&dir, "redirect", Some(1), "bash")
                .args(["-c", "sed -i s/alpha/beta/ conf.txt && cat conf.txt"]),
        );
        assert_eq!(stdout(&out), "beta\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("conf.txt")).unwrap(),
            "alpha\n",
            "shared file untouched"
        );
        assert_eq!(
            std::fs::read_to_string(worker_file(&dir, 1, "conf.txt")).unwrap(),
            "beta\n"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir.path)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("sed"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "sed's temporary file was redirected too"
        );
    }
);

e2e!(python_writes_stats_and_renames_a_redirected_file, |dir| {
    let script = "import os\n\
with open('a.txt', 'w') as f: f.write('hello')\n\
assert os.stat('a.txt').st_size == 5\n\
assert os.path.exists('a.txt')\n\
os.rename('a.txt', 'b.txt')\n\
assert not os.path.exists('a.txt')\n\
print(open('b.txt').read())\n";
    let out = run_ok(worker_cmd(&dir, "redirect", Some(2), "python3").args(["-c", script]));
    assert_eq!(stdout(&out), "hello\n");
    assert!(!dir.join("a.txt").exists() && !dir.join("b.txt").exists());
    assert_eq!(
        std::fs::read_to_string(worker_file(&dir, 2, "b.txt")).unwrap(),
        "hello"
    );
});

e2e!(sqlite_creates_its_database_in_the_worker_dir, |dir| {
    let sql = "create table t(x); insert into t values (42);";
    run_ok(worker_cmd(&dir, "redirect", Some(3), "sqlite3").args(["db.sqlite", sql]));
    let out = run_ok(
        worker_cmd(&dir, "redirect", Some(3), "sqlite3").args(["db.sqlite", "select x from t;"]),
    );
    assert_eq!(
        stdout(&out),
        "42\n",
        "a later process of the same worker reads its database"
    );
    assert!(!dir.join("db.sqlite").exists());
    assert!(worker_file(&dir, 3, "db.sqlite").exists());
});

e2e!(append_to_a_shared_file_starts_from_its_content, |dir| {
    std::fs::write(dir.join("summary.log"), "original\n").unwrap();
    run_ok(worker_cmd(&dir, "redirect", Some(0), "bash").args(["-c", "echo w0 >> summary.log"]));
    assert_eq!(
        std::fs::read_to_string(dir.join("summary.log")).unwrap(),
        "original\n"
    );
    assert_eq!(
        std::fs::read_to_string(worker_file(&dir, 0, "summary.log")).unwrap(),
        "original\nw0\n"
    );
});

e2e!(
    deny_fails_with_eacces_and_leaves_the_shared_file_alone,
    |dir| {
        std::fs::write(dir.join("shared.txt"), "keep\n").unwrap();
        let out = run(
            worker_cmd(&dir, "deny", Some(0), "bash").args(["-c", "echo x > shared.txt"]),
            DEADLINE,
        );
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
        assert_eq!(
            std::fs::read_to_string(dir.join("shared.txt")).unwrap(),
            "keep\n"
        );
        let ev = dir.events();
        let e = accesses(&ev, "shared.txt")
            .into_iter()
            .find(|e| e["mode"] == "write")
            .unwrap();
        assert_eq!(
            (e["action"].clone(), e["errno"].clone()),
            ("denied".into(), "EACCES".into())
        );
    }
);

e2e!(outside_a_worker_redirect_falls_back_to_logging, |dir| {
    run_ok(worker_cmd(&dir, "redirect", None, "bash").args(["-c", "echo x > parent.txt"]));
    assert!(dir.join("parent.txt").exists());
    let ev = dir.events();
    let e = accesses(&ev, "parent.txt")[0];
    assert_eq!(
        (e["verdict"].clone(), e["action"].clone()),
        ("rogue".into(), "logged".into())
    );
});

e2e!(
    declared_outputs_and_registered_components_are_never_rogue,
    |dir| {
        let libdir = fixture("libcomp_registered.so")
            .parent()
            .unwrap()
            .to_path_buf();
        fixture("libcomp_legacy.so");
        let mut cmd = worker_cmd(
            &dir,
            "redirect",
            Some(0),
            fixture("components_main").to_str().unwrap(),
        );
        cmd.arg(&libdir)
            .env("MPAUDIT_COMPONENTS", "libcomp_registered.so")
            .env("MPAUDIT_OUTPUTS", "*.root");
        let out = run_ok(&mut cmd);
        assert_eq!(stdout(&out), "api present\n");
        let ev = dir.events();
        let verdict = |name: &str| {
            let e = accesses(&ev, name)
                .into_iter()
                .find(|e| e["mode"] == "write")
                .expect(name)
                .clone();
            (
                e["verdict"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e,
            )
        };
        let (v, a, _) = verdict("reg.txt");
        assert_eq!((v.as_str(), a.as_str()), ("registered", "none"));
        assert!(dir.join("reg.txt").exists());
        let (v, a, e) = verdict("legacy.txt");
        assert_eq!((v.as_str(), a.as_str()), ("rogue", "redirected"));
        assert!(e["component"]["object"]
            .as_str()
            .unwrap()
            .ends_with("/libcomp_legacy.so"));
        assert_eq!(frame_function(&e["component"]), "legacy_write");
        assert!(worker_file(&dir, 0, "legacy.txt").exists() && !dir.join("legacy.txt").exists());
        let (v, a, _) = verdict("declared.out");
        assert_eq!(
            (v.as_str(), a.as_str()),
            ("declared", "none"),
            "declared through mpaudit_declare_output"
        );
        assert!(dir.join("declared.out").exists());
    }
);

e2e!(output_globs_declare_outputs, |dir| {
    let mut cmd = worker_cmd(&dir, "redirect", Some(0), "bash");
    cmd.args([
        "-c",
        "echo h > hist-0.root; mkdir -p sub; echo h > sub/deep.root",
    ])
    .env("MPAUDIT_OUTPUTS", "*.root");
    run_ok(&mut cmd);
    assert!(dir.join("hist-0.root").exists() && dir.join("sub/deep.root").exists());
    let ev = dir.events();
    assert_eq!(accesses(&ev, "deep.root")[0]["verdict"], "declared");
});

e2e!(without_a_log_each_rogue_path_is_warned_once, |dir| {
    let mut cmd = worker_cmd(&dir, "log", Some(3), "bash");
    cmd.env_remove("MPAUDIT_LOG_DIR")
        .args(["-c", "for i in 1 2 3 4 5; do echo $i > loop.txt; done"]);
    let out = run_ok(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("mpaudit: rogue write"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let expected = format!(
        "mpaudit: rogue write {} by /usr/bin/bash+0x",
        dir.join("loop.txt").display()
    );
    assert!(lines[0].starts_with(&expected), "{}", lines[0]);
    assert!(lines[0].ends_with(" worker 3 -> logged"), "{}", lines[0]);
    assert!(
        !dir.logs().exists(),
        "nothing written without MPAUDIT_LOG_DIR"
    );
});

e2e!(fork_mode_workers_redirect_into_their_own_dirs, |dir| {
    let mut cmd = worker_cmd(&dir, "redirect", None, fixture("probe").to_str().unwrap());
    cmd.args(["forks", "4"]).env("MPAUDIT_FORK_WORKERS", "1");
    run_ok(&mut cmd);
    for i in 0..4 {
        let name = format!("child-{i}");
        assert!(
            !dir.join(&name).exists(),
            "{name} stayed out of the job dir"
        );
        let found = (0..4)
            .filter(|k| worker_file(&dir, *k, &name).exists())
            .count();
        assert_eq!(found, 1, "{name} is in exactly one worker dir");
    }
});

e2e!(
    regression_a_symlink_in_the_worker_dir_cannot_lead_a_write_out,
    |dir| {
        let outside = TestDir::new("symlink-outside");
        let script = format!("ln -s {} esc && echo pwned > esc/f", outside.path.display());
        // The checkout may live under /tmp, whose files outside the job are
        // scratch (allowed): the program's TMPDIR is elsewhere, so the file
        // the link leads to is judged like any shared one.
        let out = run(
            worker_cmd(&dir, "redirect", Some(0), "bash")
                .env("TMPDIR", dir.join("scratch"))
                .args(["-c", &script]),
            DEADLINE,
        );
        // The worker's symlink is followed as the kernel would follow it
        // in place, and the file it leads to, outside the job directory, is
        // itself redirected (below `_abs/`): the write succeeds as bare and
        // lands in the worker directory, never outside it.
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !outside.join("f").exists(),
            "nothing escaped the worker directory"
        );
        let canonical = std::fs::canonicalize(&outside.path).unwrap();
        let rel = format!("_abs{}/f", canonical.display());
        assert_eq!(
            std::fs::read_to_string(worker_file(&dir, 0, &rel)).unwrap(),
            "pwned\n"
        );
    }
);

e2e!(
    regression_a_job_directory_inside_tmp_is_still_audited,
    |dir| {
        // The temporary directory is allowed by default, but a job that runs in
        // it must not be allowed wholesale.
        let job = std::env::temp_dir().join(format!("mpaudit-e2e-job-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&job);
        std::fs::create_dir_all(&job).unwrap();
        let scratch =
            std::env::temp_dir().join(format!("mpaudit-e2e-scratch-{}", std::process::id()));
        let mut cmd = dir.audited("bash");
        cmd.current_dir(&job)
            .env("MPAUDIT_ACTION", "log")
            .env_remove("MPAUDIT_JOB_DIR")
            .args([
                "-c",
                &format!("echo x > in-job.txt; echo y > {}", scratch.display()),
            ]);
        run_ok(&mut cmd);
        let ev = dir.events();
        assert_eq!(accesses(&ev, "in-job.txt")[0]["verdict"], "rogue");
        let name = scratch.file_name().unwrap().to_str().unwrap();
        assert_eq!(accesses(&ev, name)[0]["verdict"], "allowed");
        let _ = std::fs::remove_dir_all(&job);
        let _ = std::fs::remove_file(&scratch);
    }
);

// Regression: `/dev/**` was allowed wholesale, so a job run from /dev/shm
// (as the benchmark did) had every write judged "allowed".
e2e!(
    regression_a_job_directory_inside_dev_shm_is_still_audited,
    |dir| {
        let shm = std::path::Path::new("/dev/shm");
        if !shm.is_dir() {
            eprintln!("skipped: no /dev/shm here");
            return;
        }
        let job = shm.join(format!("mpaudit-e2e-job-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&job);
        std::fs::create_dir_all(&job).unwrap();
        let mut cmd = dir.audited("bash");
        cmd.current_dir(&job)
            .env("MPAUDIT_ACTION", "log")
            .env_remove("MPAUDIT_JOB_DIR")
            .args(["-c", "echo x > in-job.txt; echo y > /dev/null"]);
        run_ok(&mut cmd);
        let ev = dir.events();
        assert_eq!(accesses(&ev, "in-job.txt")[0]["verdict"], "rogue");
        let null: Vec<_> = ev.iter().filter(|e| e["abs"] == "/dev/null").collect();
        assert!(!null.is_empty(), "no /dev/null event: {:?}", ops(&ev));
        assert!(null.iter().all(|e| e["verdict"] == "allowed"));
        let _ = std::fs::remove_dir_all(&job);
    }
);
