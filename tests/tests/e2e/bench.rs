//! Smoke test of the overhead benchmark (src/bin/mpaudit-bench.rs): it runs
//! with tiny sizes and prints a table with every row. No timing is checked
//! here; the figures live in docs/performance.md.

use mpaudit_tests::*;

e2e!(benchmark_runs_and_prints_every_row, |dir| {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mpaudit-bench"));
    cmd.args(["--debug", "--scale", "1000", "--runs", "1", "--dir"])
        .arg(&dir.path)
        .arg("--output")
        .arg(dir.join("table.md"));
    let out = run(&mut cmd, std::time::Duration::from_secs(600));
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "mpaudit-bench failed: {:?}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("table.md")).expect("--output"),
        text
    );
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).collect();
    let has = |workload: &str, config: &str| {
        rows.iter()
            .any(|r| r.starts_with(&format!("| {workload} | {config} |")))
    };
    for w in [
        "read: open+close existing file",
        "write: create/truncate+write+close",
        "fopen+fputs+fclose",
        "8 threads x open+close",
    ] {
        for c in [
            "bare",
            "LD_PRELOAD, every access logged",
            "LD_PRELOAD, policy + redirect",
            "mpaudit exec (end to end, incl. report)",
        ] {
            assert!(has(w, c), "no row {w} / {c} in\n{text}");
        }
        // Measured, or skipped saying so where strace is missing.
        assert!(
            has(
                &format!("{w} (n/20)"),
                "strace -f -e trace=%file -o /dev/null"
            ),
            "no strace row for {w} in\n{text}"
        );
    }
    for w in [
        "static read: open+close existing file",
        "static write: create/truncate+write+close",
    ] {
        assert!(has(w, "bare"), "{text}");
        assert!(
            has(w, "mpaudit exec, seccomp supervisor (end to end)"),
            "{text}"
        );
    }
    assert!(has("true (process start-up)", "bare"), "{text}");
    assert!(
        has("true (process start-up)", "mpaudit exec -- true"),
        "{text}"
    );
    assert!(has("athena-like example job (4 workers)", "bare"), "{text}");
    assert!(
        has(
            "athena-like example job (4 workers)",
            "mpaudit run job.toml (end to end)"
        ),
        "{text}"
    );
    assert!(
        has(
            "athena-like example job (4 workers)",
            "bare, then the same [merge] command (sh -c)"
        ),
        "{text}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("| VmSize |"))
            && rows.iter().any(|r| r.starts_with("| VmRSS |")),
        "{text}"
    );
    assert_eq!(
        rows.iter().filter(|r| r.contains(" events | ")).count(),
        2,
        "report throughput rows (1M and 2M, scaled) in\n{text}"
    );
    // A row that failed says so instead of a time.
    assert!(!text.contains("failed: exit status"), "{text}");
});

e2e!(benchmark_only_runs_the_parts_it_is_given, |dir| {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mpaudit-bench"));
    cmd.args([
        "--debug",
        "--scale",
        "1000",
        "--runs",
        "1",
        "--only",
        "read,memory",
        "--dir",
    ])
    .arg(&dir.path);
    let out = run(&mut cmd, std::time::Duration::from_secs(600));
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let workloads: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| workload"))
        .filter_map(|l| l.split(" | ").next())
        .collect();
    assert_eq!(
        workloads,
        [
            "| VmRSS",
            "| VmSize",
            "| per-process memory",
            "| read: open+close existing file",
            "| read: open+close existing file (n/20)"
        ]
        .into_iter()
        .collect(),
        "{text}"
    );
    let mut bad = std::process::Command::new(env!("CARGO_BIN_EXE_mpaudit-bench"));
    let out = run(
        bad.args(["--only", "reads"]),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown part \"reads\""));
});

// Regression: README step 1 (`examples/athena-like/run.sh`) then step 2
// (`cargo test --workspace`) failed step 2: this smoke test copied the
// example with step 1's merged outputs, and the merge refused
// (`hist.txt already exists`). Here, the README's commands in that order on
// a fresh copy of the examples: the run, then the benchmark on that copy.
e2e!(
    readme_step_one_then_the_benchmark_on_the_same_examples,
    |dir| {
        let examples = dir.join("examples");
        super::examples::copy_tree(&workspace_root().join("examples"), &examples);
        let rel = dir.join("target/release");
        std::fs::create_dir_all(&rel).unwrap();
        std::os::unix::fs::symlink(&artifacts().runner, rel.join("mpaudit")).unwrap();
        // Step 1, as README.md has it (the build is the harness's).
        let out = run(
            std::process::Command::new("sh")
                .arg("-c")
                .arg("examples/athena-like/run.sh")
                .current_dir(&dir.path)
                .env_remove("MPAUDIT")
                .env_remove("LD_PRELOAD"),
            DEADLINE,
        );
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(
            examples.join("athena-like/hist.txt").is_file(),
            "step 1 merged"
        );
        // Step 2's part that depends on the checkout: the athena-like rows.
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mpaudit-bench"));
        cmd.args([
            "--debug", "--scale", "1000", "--runs", "1", "--only", "athena",
        ])
        .arg("--examples")
        .arg(&examples)
        .arg("--dir")
        .arg(dir.join("bench"));
        let out = run(&mut cmd, std::time::Duration::from_secs(600));
        let text = stdout(&out);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains(
                "| athena-like example job (4 workers) | mpaudit run job.toml (end to end) |"
            ),
            "{text}"
        );
        assert!(!text.contains("failed: exit status"), "{text}");
        assert!(!text.contains("skipped"), "{text}");
    }
);
