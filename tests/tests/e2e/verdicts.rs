//! Verdicts a user can act on (issue 13), against real programs: no false
//! greens (clobbers outside the job directory, an audit that saw nothing),
//! no false alarms (symlinks, two-path calls, failed calls, mkdir, redirected
//! renames, read/write overlaps, the dynamic loader), and `mpaudit report`
//! on repeated runs, several directories and many workers.

use mpaudit_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): stdout={} stderr={}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

fn paths(section: &Value) -> Vec<String> {
    section
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["path"].as_str().map(str::to_owned))
        .collect()
}

/// Every rogue path with the calls that wrote it: (path, op, role, counterpart).
fn rogue_calls(r: &Value) -> Vec<(String, String, Value, Value)> {
    let mut out = Vec::new();
    for g in r["rogue"].as_array().unwrap() {
        for p in g["paths"].as_array().unwrap() {
            for c in p["calls"].as_array().unwrap() {
                out.push((
                    p["path"].as_str().unwrap().to_owned(),
                    c["op"].as_str().unwrap().to_owned(),
                    c["role"].clone(),
                    c["counterpart"].clone(),
                ));
            }
        }
    }
    out
}

/// A directory of our own outside the job directory, under the system's
/// temporary directory or /dev/shm.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(base: &str, name: &str) -> Scratch {
        let p = Path::new(base).join(format!("mpaudit-verdicts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// Regression: two workers writing one fixed name under /tmp (or /dev/shm,
// or a declared output) were listed as a conflict, and the run said
// "ok (exit status 0)".
e2e!(a_clobber_outside_the_job_directory_fails_the_audit, |dir| {
    for base in [
        std::env::temp_dir().to_str().unwrap().to_owned(),
        "/dev/shm".into(),
    ] {
        if !Path::new(&base).is_dir() {
            continue;
        }
        let s = Scratch::new(&base, "clobber");
        let fixed = s.0.join("fixed.txt");
        let script = format!("echo $MPAUDIT_WORKER > {}", fixed.display());
        let (code, r, _) = exec_sh(&dir.path, &["--workers", "2"], &script);
        assert_eq!(code, 1, "{base}: {:#}", r["summary"]);
        assert_eq!(r["summary"]["status"], "conflicts");
        let c = &r["conflicts"][0];
        assert_eq!(c["path"], fixed.to_str().unwrap());
        assert_eq!(strs(&c["writers"]), ["0", "1"]);
        assert_eq!(c["resolution"], Value::Null);
        assert_eq!(r["summary"]["rogue_writes"], 0, "scratch is allowed");

        // Allowed explicitly: reported, marked, exit status 0.
        let allow = fixed.to_str().unwrap();
        let (code, r, _) = exec_sh(
            &dir.path,
            &["--workers", "2", "--allow-conflicts", allow],
            &script,
        );
        assert_eq!(code, 0, "{:#}", r["conflicts"]);
        assert_eq!(r["conflicts"][0]["resolution"], "allowed");
    }
    // A declared output both workers write.
    let (code, r, _) = exec_sh(
        &dir.path,
        &["--workers", "2", "--outputs", "*.root"],
        "echo $MPAUDIT_WORKER > out.root",
    );
    assert_eq!(code, 1, "{:#}", r["summary"]);
    assert_eq!(paths(&r["conflicts"]), ["out.root"]);
    // Devices are not conflicts.
    let (code, r, _) = exec_sh(&dir.path, &["--workers", "2"], "echo x > /dev/null");
    assert_eq!(code, 0, "{:#}", r["conflicts"]);
});

e2e!(allow_conflicts_in_the_job_file, |dir| {
    let s = Scratch::new(std::env::temp_dir().to_str().unwrap(), "jobfile");
    let lock = s.0.join("job.lock");
    let job = format!(
        "[job]\ncommand = [\"sh\", \"-c\", \"echo $MPAUDIT_WORKER > {}\"]\nworkers = 2\n\n[audit]\nallow_conflicts = [\"{}\"]\n",
        lock.display(),
        lock.display()
    );
    std::fs::write(dir.join("job.toml"), &job).unwrap();
    let out = run(
        mpaudit(&dir.path).args(["run", "job.toml", "--format", "json"]),
        DEADLINE,
    );
    let r = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{:#}", r["conflicts"]);
    assert_eq!(r["conflicts"][0]["resolution"], "allowed");
    // An empty glob is an error naming the file, line and key.
    std::fs::write(
        dir.join("bad.toml"),
        "[job]\ncommand = [\"true\"]\n\n[audit]\nallow_conflicts = [\"\"]\n",
    )
    .unwrap();
    let out = run(mpaudit(&dir.path).args(["check", "bad.toml"]), DEADLINE);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5:1: key `audit.allow_conflicts`: empty glob"),
        "{err}"
    );
});

// Regression: `mpaudit report` on an empty directory (or /etc) said
// "ok (exit status 0), 0 events".
e2e!(a_report_without_logs_is_never_ok, |dir| {
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    for d in ["empty", "/etc"] {
        let out = run(
            mpaudit(&dir.path).args(["report", d, "--format", "json"]),
            DEADLINE,
        );
        let code = out.status.code().unwrap_or(-1);
        assert!(code == 4 || code == 2, "{d}: {}", stdout(&out));
        if code == 4 {
            let r = json_of(&out);
            assert_eq!(r["summary"]["incomplete"][0]["reason"], "no_library");
        }
    }
    let out = run(mpaudit(&dir.path).args(["report", "empty"]), DEADLINE);
    assert!(
        stdout(&out).starts_with("mpaudit: audit incomplete (exit status 4)\n  incomplete audit: no process loaded libmpaudit.so"),
        "{}",
        stdout(&out)
    );
    let out = run(mpaudit(&dir.path).args(["report", "missing"]), DEADLINE);
    assert_eq!(out.status.code(), Some(2));
});

// A run in which no process loaded the library ends with status 4, not 0.
e2e!(a_run_that_loaded_no_library_is_incomplete, |dir| {
    let (code, r, _) = exec_sh(&dir.path, &["--preload", "/bin/true"], "echo x > out.txt");
    assert_eq!(code, 4, "{:#}", r["summary"]);
    assert_eq!(r["summary"]["status"], "audit incomplete");
    assert_eq!(r["summary"]["incomplete"][0]["reason"], "no_library");
    // A static program exec'd beside audited ones: it used to be listed as
    // unaudited (exit 4); the library now hands it to the runner's seccomp
    // supervisor, so its write is seen and the run is not incomplete.
    let exe = fixture("static_writer");
    let script = format!(
        "if [ $MPAUDIT_WORKER = 1 ]; then exec {} out.txt; fi; true",
        exe.display()
    );
    let (code, r, _) = exec_sh(&dir.path, &["--workers", "2"], &script);
    assert_eq!(code, 1, "a rogue write, seen: {:#}", r["summary"]);
    assert_eq!(
        r["summary"]["incomplete"],
        serde_json::json!([]),
        "{:#}",
        r["summary"]
    );
    assert_eq!(r["summary"]["rogue_writes"], 1, "{:#}", r["summary"]);
    // The report of that run, from its logs, says the same.
    let out = run(
        mpaudit(&dir.path).args(["report", "mpaudit-logs"]),
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
});

// Regression: ROOT runs `ld-linux-x86-64.so.2 --version` at start-up; it
// was listed as an unaudited static process.
e2e!(
    the_dynamic_loader_run_as_a_program_is_not_unaudited,
    |dir| {
        let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(loader) = loader else {
            eprintln!("no dynamic loader at a known path: skipped");
            return;
        };
        let script = format!("{loader} --version > /dev/null && {loader} /bin/true");
        let (code, r, _) = exec_sh(&dir.path, &[], &script);
        assert_eq!(
            r["unaudited"],
            serde_json::json!([]),
            "{:#}",
            r["unaudited"]
        );
        assert_eq!(code, 0, "{:#}", r["summary"]);
    }
);

// Regression: `ln -s /etc/passwd mylink` was a rogue write to (and with
// two workers a clobber of) /etc/passwd.
e2e!(ln_s_writes_the_link_not_its_target, |dir| {
    let (code, r, _) = exec_sh(
        &dir.path,
        &["--workers", "2"],
        "ln -s /etc/passwd mylink$MPAUDIT_WORKER",
    );
    assert_eq!(code, 1, "{:#}", r["summary"]);
    assert_eq!(r["conflicts"], serde_json::json!([]));
    let calls = rogue_calls(&r);
    let written: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    assert!(!written.contains(&"/etc/passwd"), "{calls:?}");
    let link = calls.iter().find(|c| c.0 == "mylink0").expect("mylink0");
    assert_eq!(link.2, "destination");
    assert_eq!(link.3, "/etc/passwd");
    let out = run(
        mpaudit(&dir.path).args(["report", "mpaudit-logs"]),
        DEADLINE,
    );
    assert!(
        stdout(&out).contains("destination (from /etc/passwd)"),
        "{}",
        stdout(&out)
    );
});

// Regression: `mv a b` listed only `a`, `ln b hard` only `b`, and `sed -i`,
// `perl -i` only their temporary names.
e2e!(two_path_calls_name_both_paths_with_roles, |dir| {
    std::fs::write(dir.join("data.txt"), "data\n").unwrap();
    let (_, r, _) = exec_sh(
        &dir.path,
        &[],
        "echo a > a && mv a b && ln b hard && gzip -f data.txt && \
         printf 'x\\n' > in.txt && sed -i s/x/y/ in.txt && perl -pi -e s/y/z/ in.txt",
    );
    let calls = rogue_calls(&r);
    let has = |path: &str, op: &str, role: &str, other: &str| {
        calls.iter().any(|c| {
            c.0 == path && c.1.starts_with(op) && c.2 == role && c.3.as_str() == Some(other)
        })
    };
    assert!(has("b", "rename", "destination", "a"), "{calls:#?}");
    assert!(has("a", "rename", "source", "b"), "{calls:#?}");
    assert!(has("hard", "link", "destination", "b"), "{calls:#?}");
    // sed and perl write a temporary file, then rename it over in.txt.
    let over_in: Vec<&(String, String, Value, Value)> = calls
        .iter()
        .filter(|c| c.0 == "in.txt" && c.1.starts_with("rename") && c.2 == "destination")
        .collect();
    assert!(!over_in.is_empty(), "{calls:#?}");
    assert!(calls.iter().any(|c| c.0 == "data.txt.gz"), "{calls:#?}");
    assert_eq!(std::fs::read_to_string(dir.join("in.txt")).unwrap(), "z\n");
});

// The in.txt two workers edit in place is a conflict, and the rogue
// section names who wrote it.
e2e!(sed_i_in_two_workers_is_a_conflict_with_a_writer, |dir| {
    std::fs::write(dir.join("in.txt"), "x\n").unwrap();
    let (code, r, _) = exec_sh(
        &dir.path,
        &["--workers", "2"],
        "if [ $MPAUDIT_WORKER = 1 ]; then i=0; while [ ! -e done0 ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; fi; \
         sed -i s/x/y/ in.txt; touch done$MPAUDIT_WORKER",
    );
    assert_eq!(code, 1);
    assert!(
        paths(&r["conflicts"]).contains(&"in.txt".to_string()),
        "{:#}",
        r["conflicts"]
    );
    let writers: Vec<String> = r["rogue"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["paths"].as_array().unwrap().iter())
        .filter(|p| p["path"] == "in.txt")
        .flat_map(|p| strs(&p["workers"]))
        .collect();
    assert!(
        writers.contains(&"0".into()) && writers.contains(&"1".into()),
        "{writers:?}"
    );
});

// Regression: git's failed `unlink(.git/MERGE_HEAD)` counted as a rogue
// write, and a bare `mkdir -p` made the exit status 1.
e2e!(failed_calls_are_attempts_and_mkdir_is_not_rogue, |dir| {
    let (code, r, _) = exec_sh(&dir.path, &[], "mkdir -p d/e/f");
    assert_eq!(code, 0, "{:#}", r["rogue"]);
    assert!(dir.join("d/e/f").is_dir());
    let (code, r, _) = exec_sh(
        &dir.path,
        &[],
        "rm -f nothere; mv nothere x 2>/dev/null; true",
    );
    assert_eq!(code, 0, "{:#}", r["rogue"]);
    assert_eq!(r["summary"]["rogue_writes"], 0);
    let attempts = &r["attempts"];
    assert!(
        attempts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["path"] == "nothere" && a["calls"][0]["errno"] == "ENOENT"),
        "{attempts:#}"
    );
    if Command::new("git").arg("--version").output().is_ok() {
        let (_, r, _) = exec_sh(
            &dir.path,
            &[],
            "git init -q repo && cd repo && git -c user.email=a@b -c user.name=n commit -q --allow-empty -m x",
        );
        let failed: Vec<String> = paths(&r["attempts"]);
        let rogue: Vec<String> = rogue_calls(&r).into_iter().map(|c| c.0).collect();
        assert!(
            failed.iter().any(|p| p.ends_with(".git/MERGE_HEAD")),
            "{failed:?}"
        );
        assert!(
            !rogue.iter().any(|p| p.ends_with(".git/MERGE_HEAD")),
            "{rogue:?}"
        );
    }
});

// Regression: under redirect, `echo > t.tmp; mv t.tmp final.txt` in two
// workers gave "conflicts: final.txt" beside the averted clobber.
e2e!(a_redirected_rename_is_an_averted_clobber_only, |dir| {
    let (code, r, _) = exec_sh(
        &dir.path,
        &["--workers", "2", "--action", "redirect"],
        "echo $MPAUDIT_WORKER > t.tmp; mv t.tmp final.txt; cat final.txt > seen$MPAUDIT_WORKER.txt",
    );
    assert_eq!(code, 1, "rogue writes, redirected: {:#}", r["summary"]);
    assert_eq!(r["conflicts"], serde_json::json!([]));
    assert!(
        paths(&r["averted"]).contains(&"final.txt".to_string()),
        "{:#}",
        r["averted"]
    );
    assert!(!dir.join("final.txt").exists());
});

// Python's atomic .pyc replacement: worker 0 writes the cache, worker 1
// reads it. An overlap, not a clobber.
e2e!(a_read_write_overlap_is_not_a_conflict, |dir| {
    std::fs::write(dir.join("helper.py"), "X = 1\n").unwrap();
    let (_, r, _) = exec_sh(
        &dir.path,
        &["--workers", "2"],
        "if [ $MPAUDIT_WORKER = 1 ]; then i=0; while ! ls __pycache__/helper.*.pyc >/dev/null 2>&1 && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; fi; \
         python3 -c 'import sys; sys.path.insert(0, \".\"); import helper'",
    );
    let overlaps = paths(&r["overlaps"]);
    let conflicts = paths(&r["conflicts"]);
    assert!(
        overlaps
            .iter()
            .any(|p| p.starts_with("__pycache__/helper.")),
        "overlaps {overlaps:?}, conflicts {conflicts:?}"
    );
    assert!(
        !conflicts
            .iter()
            .any(|p| p.starts_with("__pycache__/helper.")),
        "{conflicts:?}"
    );
});

// Regression: `mpaudit report DIR` mixed every run in DIR, and showed
// "outcome not recorded" for workers the run's metadata described.
e2e!(report_shows_the_latest_run_with_its_outcomes, |dir| {
    let (_, first, _) = exec_sh(
        &dir.path,
        &["--workers", "2"],
        "echo 1 > a$MPAUDIT_WORKER.txt",
    );
    let (_, second, _) = exec_sh(
        &dir.path,
        &["--workers", "2", "--on-failure", "continue"],
        "echo 2 > a$MPAUDIT_WORKER.txt; exit $MPAUDIT_WORKER",
    );
    let report = |args: &[&str]| {
        let out = run(
            mpaudit(&dir.path)
                .args(["report", "mpaudit-logs", "--format", "json"])
                .args(args),
            DEADLINE,
        );
        (out.status.code().unwrap_or(-1), json_of(&out))
    };
    let (code, latest) = report(&[]);
    assert_eq!(latest["summary"]["events"], second["summary"]["events"]);
    assert_eq!(code, 3, "the run's job failed: {:#}", latest["summary"]);
    let exits: Vec<Value> = latest["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["exit_code"].clone())
        .collect();
    assert_eq!(exits, [serde_json::json!(0), serde_json::json!(1)]);
    let (_, all) = report(&["--all-runs"]);
    assert_eq!(
        all["summary"]["events"].as_u64().unwrap(),
        first["summary"]["events"].as_u64().unwrap()
            + second["summary"]["events"].as_u64().unwrap()
    );
    let ids: Vec<String> = all["summary"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    let (code, one) = report(&["--run", &ids[0]]);
    assert_eq!(code, 1);
    assert_eq!(one["summary"]["events"], first["summary"]["events"]);
    let out = run(
        mpaudit(&dir.path).args(["report", "mpaudit-logs", "--run", "1-2"]),
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no run `1-2` (latest: {}", ids[1])),
        "{err}"
    );
});

// LD_PRELOAD alone: separate invocations (from two shells, as from two
// terminals) are separate runs, each with its root row.
e2e!(report_tells_ld_preload_runs_apart, |dir| {
    for k in 0..2 {
        // The unaudited shell around it stays its parent (`; true`: no exec).
        let audited = format!(
            "LD_PRELOAD={} MPAUDIT_LOG_DIR=logs sh -c \"echo {k} > out{k}.txt; sh -c 'echo > sub{k}.txt'\"; true",
            lib().display()
        );
        run_ok(
            dir.bare("sh")
                .args(["-c", &audited])
                .env_remove("LD_PRELOAD"),
        );
    }
    let out = run(
        mpaudit(&dir.path).args(["report", "logs", "--format", "json"]),
        DEADLINE,
    );
    let r = json_of(&out);
    let runs = r["summary"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["runs_in_dir"], 2);
    let written: Vec<String> = rogue_calls(&r)
        .into_iter()
        .map(|c| c.0.rsplit('/').next().unwrap_or_default().to_owned())
        .collect();
    assert!(written.contains(&"out1.txt".into()), "{written:?}");
    assert!(written.contains(&"sub1.txt".into()), "{written:?}");
    assert!(!written.contains(&"out0.txt".into()), "{written:?}");
    let root = &r["workers"][0];
    assert_eq!(root["worker"], Value::Null, "{:#}", r["workers"]);
    assert_eq!(root["exit_code"], 0);
});

// Regression: `mpaudit report node1/logs node2/logs` showed one "worker 0".
e2e!(
    workers_of_several_directories_are_different_workers,
    |dir| {
        for node in ["node1", "node2"] {
            let d = dir.join(node);
            std::fs::create_dir_all(&d).unwrap();
            exec_sh(&d, &[], "echo x > out.txt");
        }
        let out = run(
            mpaudit(&dir.path).args([
                "report",
                "node1/mpaudit-logs",
                "node2/mpaudit-logs",
                "--format",
                "json",
            ]),
            DEADLINE,
        );
        let r = json_of(&out);
        let rows: Vec<(Value, Value)> = r["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["log_dir"].clone(), w["worker"].clone()))
            .collect();
        assert_eq!(
            rows,
            [
                (
                    serde_json::json!("node1/mpaudit-logs"),
                    serde_json::json!(0)
                ),
                (
                    serde_json::json!("node2/mpaudit-logs"),
                    serde_json::json!(0)
                ),
            ]
        );
        let out = run(
            mpaudit(&dir.path).args(["report", "node1/mpaudit-logs", "node2/mpaudit-logs"]),
            DEADLINE,
        );
        assert!(
            stdout(&out).contains("worker node1/mpaudit-logs:0"),
            "{}",
            stdout(&out)
        );
    }
);

// Regression: with 300 workers, `workers 0,1,2,...,299` ran to 1,100
// characters and there were 300 worker rows.
e2e!(three_hundred_workers_read_as_ranges, |dir| {
    let (code, r, _) = exec_sh(&dir.path, &["--workers", "300"], "echo x > shared.txt");
    assert_eq!(code, 1);
    assert_eq!(r["conflicts"][0]["writers"].as_array().unwrap().len(), 300);
    assert_eq!(r["workers"].as_array().unwrap().len(), 300);
    let out = run(
        mpaudit(&dir.path).args(["report", "mpaudit-logs"]),
        DEADLINE,
    );
    let text = stdout(&out);
    assert!(
        text.contains("  shared.txt  written by workers 0-299\n"),
        "{text}"
    );
    assert!(text.contains("  workers 0-299 (300)  exit 0"), "{text}");
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 200, "a line of {longest} characters:\n{text}");
    assert!(text.lines().count() < 40, "{text}");
});

// Regression: `check --format json` printed text, `--quiet` printed the
// plan, and "command not found in PATH" did not name the file and line.
e2e!(
    check_speaks_json_stays_quiet_and_locates_its_errors,
    |dir| {
        std::fs::write(
            dir.join("job.toml"),
            "[job]\ncommand = [\"true\"]\nworkers = 2\n",
        )
        .unwrap();
        let out = run(
            mpaudit(&dir.path).args(["check", "job.toml", "--format", "json"]),
            DEADLINE,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json_of(&out);
        assert_eq!(v["valid"], true);
        assert_eq!(v["plan"]["workers"], 2);
        assert!(v["preload"].as_str().unwrap().ends_with("libmpaudit.so"));
        let out = run(
            mpaudit(&dir.path).args(["check", "job.toml", "--quiet"]),
            DEADLINE,
        );
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(stdout(&out), "");
        std::fs::write(
            dir.join("typo.toml"),
            "[job]\nworkers = 2\ncommand = [\"no-such-program-mpaudit\"]\n",
        )
        .unwrap();
        let out = run(mpaudit(&dir.path).args(["check", "typo.toml"]), DEADLINE);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "mpaudit: error: typo.toml:3:1: key `job.command`: command `no-such-program-mpaudit` not found in PATH\n"
    );
        // A library that cannot be found fails the check, as it fails a run.
        let out = run(
            mpaudit(&dir.path).args([
                "check",
                "job.toml",
                "--preload",
                "/nonexistent/libmpaudit.so",
            ]),
            DEADLINE,
        );
        assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("libmpaudit.so not found"));
    }
);

// Regression: a components glob that matched nothing loaded (`libsqlite3.so`
// for `libsqlite3.so.0`) gave no warning.
e2e!(a_components_glob_that_matches_nothing_warns, |dir| {
    if Command::new("sqlite3").arg("-version").output().is_err() {
        eprintln!("sqlite3 missing (.ci/run installs it): skipped");
        return;
    }
    let run_sqlite = |glob: &str, db: &str| {
        let (code, r, _) = exec_json(
            &dir.path,
            &["--components", glob],
            &["sqlite3", db, "create table t(x)"],
        );
        (Some(code), r)
    };
    let (code, r) = run_sqlite("libsqlite3.so", "a.db");
    assert_eq!(
        code,
        Some(1),
        "not registered, so rogue: {:#}",
        r["summary"]
    );
    let w = strs(&r["summary"]["warnings"]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("components glob `libsqlite3.so` matches no object seen writing"),
        "{w:?}"
    );
    assert!(w[0].contains("did you mean `libsqlite3.so*`?"), "{w:?}");
    let (code, r) = run_sqlite("libsqlite3.so*", "b.db");
    assert_eq!(code, Some(0), "{:#}", r["summary"]);
    assert_eq!(r["summary"]["warnings"], serde_json::json!([]));
});

// Regression: `cargo install --path runner` installs mpaudit without
// libmpaudit.so, and `mpaudit check` still said the job was fine (exit 0).
// Now the binary embeds the library (tests/e2e/install.rs); when it cannot
// write it anywhere and none is beside it, check still fails loudly.
e2e!(
    an_installed_runner_that_cannot_write_its_library_fails_check,
    |dir| {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        install_executable(&artifacts().runner, &bin.join("mpaudit"));
        std::fs::write(dir.join("job.toml"), "[job]\ncommand = [\"true\"]\n").unwrap();
        // Every cache location is a regular file: no directory can be made.
        let not_a_dir = dir.join("not-a-dir");
        std::fs::write(&not_a_dir, "").unwrap();
        let out = run(
            Command::new(bin.join("mpaudit"))
                .args(["check", "job.toml"])
                .current_dir(&dir.path)
                .env_remove("MPAUDIT_PRELOAD")
                .env("XDG_CACHE_HOME", &not_a_dir)
                .env("HOME", &not_a_dir)
                .env("TMPDIR", &not_a_dir),
            DEADLINE,
        );
        assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot write the embedded libmpaudit.so"),
            "{err}"
        );
        assert!(err.contains("libmpaudit.so not found"), "{err}");
        // Put where the README says, it is found.
        std::fs::copy(lib(), bin.join("libmpaudit.so")).unwrap();
        let out = run(
            Command::new(bin.join("mpaudit"))
                .args(["check", "job.toml", "--quiet"])
                .current_dir(&dir.path)
                .env_remove("MPAUDIT_PRELOAD")
                .env("XDG_CACHE_HOME", &not_a_dir)
                .env("HOME", &not_a_dir)
                .env("TMPDIR", &not_a_dir),
            DEADLINE,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
);

// Review 2, F7: `exec --report` into a missing directory, or a report to a
// full device, exited 0: a CI job reading the report found nothing (or an
// older one) behind a green status.
e2e!(a_report_that_cannot_be_written_is_an_error, |dir| {
    let out = run(
        mpaudit(&dir.path).args([
            "exec",
            "-q",
            "--report",
            "/nonexistent-mpaudit-dir/report.txt",
            "--",
            "true",
        ]),
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot write the report"),
        "{out:?}"
    );
    // A log directory with one real run in it, reported into /dev/full.
    run_ok(&mut dir.audited("true"));
    // Through a shell: the harness captures stdout itself.
    let out = run(
        Command::new("sh")
            .arg("-c")
            .arg(r#""$0" report --format json "$1" > /dev/full"#)
            .arg(&artifacts().runner)
            .arg(dir.logs())
            .current_dir(&dir.path),
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
});

// Review 2, F2: a job file written through a kernel magic link
// (`/proc/self/cwd/x`, `/dev/fd/N`) was judged by its spelling ("allowed",
// `/proc/**` and `/dev`): two workers clobbered it and the run said ok;
// under redirect the shared file was written in place.
e2e!(
    writes_through_proc_self_cwd_and_dev_fd_are_judged_as_the_real_file,
    |dir| {
        let script = "echo $MPAUDIT_WORKER > /proc/self/cwd/shared_out.txt";
        let (code, r, _) = exec_sh(&dir.path, &["--workers", "2"], script);
        assert_eq!(code, 1, "{:#}", r["summary"]);
        let shared = dir.join("shared_out.txt");
        // Inside the job directory, paths are shown relative to it.
        assert_eq!(r["conflicts"][0]["path"], "shared_out.txt");
        assert_eq!(strs(&r["conflicts"][0]["writers"]), ["0", "1"]);

        std::fs::write(&shared, "original\n").expect("seed the shared file");
        let (_, r, _) = exec_sh(
            &dir.path,
            &["--workers", "2", "--action", "redirect"],
            script,
        );
        assert_eq!(
            std::fs::read_to_string(&shared).expect("shared file"),
            "original\n",
            "{:#}",
            r["summary"]
        );
        for k in ["0", "1"] {
            let copy = dir.join(&format!("mpaudit-workers/worker_{k}/shared_out.txt"));
            assert_eq!(
                std::fs::read_to_string(&copy).expect("worker copy").trim(),
                k
            );
        }

        // A read-only descriptor on a job file reopened for writing as /dev/fd/N.
        std::fs::write(dir.join("plain.txt"), "").expect("seed plain.txt");
        let (code, r, _) = exec_sh(
            &dir.path,
            &["--workers", "1"],
            "exec 3< plain.txt; echo clobbered > /dev/fd/3",
        );
        assert_eq!(code, 1, "{:#}", r["summary"]);
        assert!(
            r["rogue"].to_string().contains("\"plain.txt\""),
            "{:#}",
            r["rogue"]
        );
    }
);
