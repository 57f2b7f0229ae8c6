//! Merging redirected outputs back (issue 12, "Merge loses outputs") and the
//! job-wide merge of ranks (issue 14): every worker that wrote, names byte
//! for byte, modes kept, re-runs in the same directory, `mpaudit merge DIR`
//! after a preload-only run and after real launchers, and ranks kept apart
//! in the report.

use mpaudit_tests::components::{mpirun, Slurm};
use mpaudit_tests::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn mpaudit(cwd: &Path) -> Command {
    let mut c = Command::new(&artifacts().runner);
    c.current_dir(cwd)
        .env_remove("LD_PRELOAD")
        .env_remove("MPAUDIT_WORKER")
        .env_remove("MPAUDIT_FORK_WORKERS")
        .env_remove("ATHENA_PROC_NUMBER")
        .env_remove("MPAUDIT_WORKERS_DIR")
        .env_remove("MPAUDIT_LOG_DIR");
    for v in mpaudit_core::launcher::RANK_VARIABLES {
        c.env_remove(v);
    }
    c
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): stdout={} stderr={}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `mpaudit run job.toml --format json ARGS` in `dir`: the exit status and
/// the report.
pub(crate) fn run_job(dir: &TestDir, args: &[&str]) -> (i32, Value, Output) {
    let out = run(
        mpaudit(&dir.path)
            .args(["run", "job.toml", "--format", "json", "--preload"])
            .arg(lib())
            .args(args),
        DEADLINE,
    );
    let v = json_of(&out);
    (out.status.code().unwrap_or(-1), v, out)
}

pub(crate) fn merge_of<'a>(r: &'a Value, original_ends: &str) -> &'a Value {
    r["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .find(|m| {
            m["original"]
                .as_str()
                .is_some_and(|o| o.ends_with(original_ends))
        })
        .unwrap_or_else(|| panic!("no merge of {original_ends}: {:#}", r["merges"]))
}

pub(crate) fn input_workers(m: &Value) -> Vec<String> {
    m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["worker"].as_str().unwrap().to_string())
        .collect()
}

/// A shell script that forks `n` workers one after the other (so that the
/// fork order, and with it the worker numbers, is the loop's), each
/// appending one line to `summary.log`.
/// (No command substitution: its subshell would be a forked worker too.)
fn forking_script(n: usize) -> String {
    let list: Vec<String> = (0..n).map(|k| k.to_string()).collect();
    format!(
        "for i in {}; do (echo worker $i >> summary.log) & wait; done",
        list.join(" ")
    )
}

// Regression (issue 12): in fork mode only worker_0..N-1 were merged, N the
// configured `workers` (default 1): `exec --mode fork` with 4 forked
// workers copied back worker 0's file as "first (only one worker wrote
// it)" and dropped workers 1-3 without a word.
e2e!(
    regression_fork_mode_merges_every_worker_that_forked,
    |dir| {
        let script = forking_script(4);
        let bare = run(dir.bare("bash").args(["-c", &script]), DEADLINE);
        assert!(bare.status.success());
        let expected = std::fs::read_to_string(dir.join("summary.log")).unwrap();
        assert_eq!(expected.lines().count(), 4);
        std::fs::remove_file(dir.join("summary.log")).unwrap();

        let report = dir.join("report.json");
        let out = run(
            mpaudit(&dir.path)
                .args(["exec", "--mode", "fork", "--action", "redirect"])
                .args([
                    "--merge",
                    "summary.log=concat",
                    "--format",
                    "json",
                    "--report",
                ])
                .arg(&report)
                .args(["--preload"])
                .arg(lib())
                .args(["--", "bash", "-c", &script]),
            DEADLINE,
        );
        let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "rogue writes, nothing else: {r:#}"
        );
        let m = merge_of(&r, "summary.log");
        assert_eq!(m["status"], "merged", "{m:#}");
        assert_eq!(m["merger"], "concat");
        assert_eq!(input_workers(m), ["0", "1", "2", "3"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("summary.log")).unwrap(),
            expected,
            "the merge holds what the bare run wrote"
        );
    }
);

// Regression (issue 12): `[job] workers = 2` and a framework forking 4:
// the merged summary.log had half its lines.
e2e!(
    regression_a_framework_forking_more_workers_than_configured_loses_none,
    |dir| {
        let script = forking_script(4);
        std::fs::write(
            dir.join("job.toml"),
            format!(
                "[job]\ncommand = [\"bash\", \"-c\", {}]\nmode = \"fork\"\nworkers = 2\n\
                 [audit]\naction = \"redirect\"\n[merge]\n\"summary.log\" = \"concat\"\n",
                serde_json::to_string(&script).unwrap()
            ),
        )
        .unwrap();
        let (code, r, _) = run_job(&dir, &[]);
        assert_eq!(code, 1, "{r:#}");
        let m = merge_of(&r, "summary.log");
        assert_eq!(m["status"], "merged", "{m:#}");
        assert_eq!(input_workers(m), ["0", "1", "2", "3"]);
        let merged = std::fs::read_to_string(dir.join("summary.log")).unwrap();
        assert_eq!(
            merged, "worker 0\nworker 1\nworker 2\nworker 3\n",
            "every worker's line"
        );
    }
);

/// The job file of the name tests: one worker runs `bash job.sh` under
/// redirect, with the given `[merge]` lines.
fn script_job(dir: &TestDir, script: &[u8], merge: &str) {
    std::fs::write(dir.join("job.sh"), script).unwrap();
    std::fs::write(
        dir.join("job.toml"),
        format!(
            "[job]\ncommand = [\"bash\", \"job.sh\"]\n[audit]\naction = \"redirect\"\n\
             [merge]\n{merge}"
        ),
    )
    .unwrap();
}

// Regression (issue 12): names that are not UTF-8 were never merged (the
// manifest's lossy `original` named another file) nor cleared at the next
// run, and names of ~236 bytes failed to merge ("File name too long": the
// temporary name added a prefix).
e2e!(regression_odd_names_merge_byte_for_byte, |dir| {
    let latin1 = b"caf\xe9.txt".to_vec();
    let long = "n".repeat(240);
    let mut script = b"echo one > '".to_vec();
    script.extend_from_slice(&latin1);
    script.extend_from_slice(format!("'\necho two > {long}\n").as_bytes());
    script_job(&dir, &script, "");

    // Bare, for the contents to compare with.
    let bare = run(dir.bare("bash").arg("job.sh"), DEADLINE);
    assert!(bare.status.success());
    let latin1_path = dir.path.join(OsStr::from_bytes(&latin1));
    let long_path = dir.join(&long);
    let expected = [
        std::fs::read(&latin1_path).unwrap(),
        std::fs::read(&long_path).unwrap(),
    ];
    std::fs::remove_file(&latin1_path).unwrap();
    std::fs::remove_file(&long_path).unwrap();

    let (code, r, out) = run_job(&dir, &[]);
    assert_eq!(code, 1, "{r:#}\n{}", String::from_utf8_lossy(&out.stderr));
    for (path, content) in [(&latin1_path, &expected[0]), (&long_path, &expected[1])] {
        assert_eq!(
            std::fs::read(path).ok().as_ref(),
            Some(content),
            "{} merged back under its own name: {:#}",
            path.display(),
            r["merges"]
        );
    }
    assert_eq!(r["summary"]["merge_failures"], 0, "{:#}", r["merges"]);
    // No file the merge wrote is left under another name.
    let names: Vec<Vec<u8>> = std::fs::read_dir(&dir.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .filter(|n| n.starts_with(b".mpaudit") || n.contains(&0xef))
        .collect();
    assert!(names.is_empty(), "{names:?}");

    // The next run clears this run's redirected copy of the odd name.
    let worker_copy = dir
        .join("mpaudit-workers/worker_0")
        .join(OsStr::from_bytes(&latin1));
    assert!(worker_copy.exists());
    script_job(&dir, b"true\n", "");
    let (code, r, _) = run_job(&dir, &[]);
    assert_eq!(code, 0, "{r:#}");
    assert!(
        !worker_copy.exists(),
        "an earlier run's redirected file is cleared"
    );
});

/// `st_mode & 0o7777` of a file.
fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

// Regression (issue 12): merged files lost their mode (0600 and 0700 came
// back 0644). When workers' copies disagree, the merged file gets the bits
// they all have (never wider than any worker's copy).
e2e!(regression_merged_files_keep_the_workers_mode, |dir| {
    let create = |name: &str, mode: &str| {
        format!(
            "python3 -c 'import os; os.umask(0); os.close(os.open(\"{name}\", os.O_WRONLY|os.O_CREAT, {mode}))'\n"
        )
    };
    let script = [
        create("secret.txt", "0o600"),
        create("tool.sh", "0o700"),
        // Two workers, two modes.
        format!(
            "if [ $MPAUDIT_WORKER = 0 ]; then {}else {}fi",
            create("both.txt", "0o640").replace('\n', "; "),
            create("both.txt", "0o604").replace('\n', "; ")
        ),
    ]
    .concat();
    let bare = run(
        dir.bare("bash")
            .args(["-c", &script])
            .env("MPAUDIT_WORKER", "0"),
        DEADLINE,
    );
    assert!(
        bare.status.success(),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
    assert_eq!(
        (mode(&dir.join("secret.txt")), mode(&dir.join("tool.sh"))),
        (0o600, 0o700)
    );
    for f in ["secret.txt", "tool.sh", "both.txt"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("job.sh"), &script).unwrap();
    std::fs::write(
        dir.join("job.toml"),
        "[job]\ncommand = [\"bash\", \"job.sh\"]\nworkers = 2\n[audit]\naction = \"redirect\"\n\
         [merge]\n\"secret.txt\" = \"first\"\n\"tool.sh\" = \"first\"\n\"both.txt\" = \"concat\"\n",
    )
    .unwrap();
    let (_, r, _) = run_job(&dir, &[]);
    assert_eq!(r["summary"]["merge_failures"], 0, "{:#}", r["merges"]);
    assert_eq!(mode(&dir.join("secret.txt")), 0o600);
    assert_eq!(mode(&dir.join("tool.sh")), 0o700);
    assert_eq!(mode(&dir.join("both.txt")), 0o600, "0640 & 0604");
});

// Regression (issue 12): a second `mpaudit run job.toml` in the same
// directory failed with "merge failed" (`already exists`), and `--quiet`
// hid why. An earlier run's merged output is replaced when it is exactly
// what that run merged; anything else is refused, and says so.
e2e!(
    regression_a_second_run_replaces_its_own_merged_outputs,
    |dir| {
        std::fs::write(
            dir.join("job.toml"),
            "[job]\ncommand = [\"sh\", \"-c\", \"echo $MPAUDIT_WORKER > out.txt\"]\nworkers = 2\n\
         [audit]\naction = \"redirect\"\n[merge]\n\"out.txt\" = \"concat\"\n",
        )
        .unwrap();
        for n in 1..=2 {
            let (code, r, _) = run_job(&dir, &[]);
            assert_eq!(code, 1, "run {n}: rogue writes, nothing else: {r:#}");
            assert_eq!(merge_of(&r, "out.txt")["status"], "merged", "run {n}");
            assert_eq!(
                std::fs::read_to_string(dir.join("out.txt")).unwrap(),
                "0\n1\n"
            );
        }
        // The user changed the merged file: the next run refuses to replace
        // it, and --quiet still says why.
        std::fs::write(dir.join("out.txt"), "mine\n").unwrap();
        let out = run(
            mpaudit(&dir.path)
                .args(["run", "job.toml", "--quiet", "--preload"])
                .arg(lib()),
            DEADLINE,
        );
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert!(
            text.contains("out.txt") && text.contains("changed since"),
            "the reason, under --quiet: {text}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("out.txt")).unwrap(),
            "mine\n"
        );
        // A file the job itself wrote in place (not a merge) is never
        // replaced either.
        std::fs::write(
        dir.join("job.toml"),
        "[job]\ncommand = [\"sh\", \"-c\", \"echo job > log.txt; echo $MPAUDIT_WORKER > mpaudit-workers/worker_$MPAUDIT_WORKER/log.txt\"]\n\
         workers = 2\n[audit]\naction = \"log\"\nallow = [\"log.txt\"]\n[merge]\n\"log.txt\" = \"concat\"\n",
    )
    .unwrap();
        let (code, r, _) = run_job(&dir, &[]);
        assert_eq!(code, 3, "{r:#}");
        let m = merge_of(&r, "log.txt");
        assert_eq!(m["status"], "refused", "{m:#}");
        assert_eq!(
            std::fs::read_to_string(dir.join("log.txt")).unwrap(),
            "job\n"
        );
    }
);

/// `mpaudit merge ARGS` in `dir`, JSON: the exit status and the report.
fn merge_cmd(dir: &Path, args: &[&str]) -> (i32, Value) {
    let out = run(
        mpaudit(dir).args(["merge", "--format", "json"]).args(args),
        DEADLINE,
    );
    (out.status.code().unwrap_or(-1), json_of(&out))
}

/// The merged `same.txt` of four ranks, and the merge's inputs.
fn assert_four_ranks_merged(dir: &Path, r: &Value, line: &dyn Fn(u32) -> String) {
    let m = merge_of(r, "same.txt");
    assert_eq!(m["status"], "merged", "{r:#}");
    assert_eq!(m["inputs"].as_array().map(Vec::len), Some(4), "{m:#}");
    let expected: String = (0..4).map(|k| line(k) + "\n").collect();
    assert_eq!(
        std::fs::read_to_string(dir.join("same.txt")).unwrap(),
        expected
    );
}

// Issue 14: a run done with LD_PRELOAD alone, four ranks (PMI_RANK set per
// process, as a launcher would) each writing same.txt under redirect into
// worker_<rank>/, merged job-wide by `mpaudit merge`.
e2e!(
    merge_command_merges_a_preload_only_run_of_four_ranks,
    |dir| {
        for r in 0..4 {
            let out = run(
                dir.audited("sh")
                    .args(["-c", "echo rank $PMI_RANK > same.txt"])
                    .env("PMI_RANK", r.to_string())
                    .env("PMI_SIZE", "4")
                    .env("MPAUDIT_ACTION", "redirect"),
                DEADLINE,
            );
            assert!(out.status.success());
        }
        assert!(!dir.join("same.txt").exists(), "redirected, not written");
        // Without a rule, four workers' files are left in place: exit 1.
        let (code, r) = merge_cmd(&dir.path, &[]);
        assert_eq!(code, 1, "{r:#}");
        assert_eq!(merge_of(&r, "same.txt")["status"], "skipped");
        assert!(!dir.join("same.txt").exists());
        let (code, r) = merge_cmd(
            &dir.path,
            &["mpaudit-workers", "--merge", "same.txt=concat"],
        );
        assert_eq!(code, 0, "{r:#}");
        assert_four_ranks_merged(&dir.path, &r, &|k| format!("rank {k}"));
        // Again: the merged file is this command's own, and is replaced.
        let (code, r) = merge_cmd(&dir.path, &["--merge", "same.txt=concat"]);
        assert_eq!(code, 0, "{r:#}");
        assert_four_ranks_merged(&dir.path, &r, &|k| format!("rank {k}"));
        // A merge command is supervised like `mpaudit run`'s, and its failure
        // is exit status 3 with the worker files kept.
        std::fs::remove_file(dir.join("same.txt")).unwrap();
        let (code, r) = merge_cmd(
            &dir.path,
            &[
                "--merge",
                r#"same.txt=["sh", "-c", "echo no >&2; exit 5", "{output}", "{inputs}"]"#,
            ],
        );
        assert_eq!(code, 3, "{r:#}");
        let m = merge_of(&r, "same.txt");
        assert_eq!(m["status"], "failed");
        assert!(
            m["reason"].as_str().unwrap().contains("exit status 5"),
            "{m:#}"
        );
        assert!(dir.join("mpaudit-workers/worker_3/same.txt").exists());
    }
);

// The guide's job-wide merge after `mpirun` (docs/guide.md, "Ranks"),
// verbatim, with a job file's [merge] rules.
const GUIDE_MPIRUN_MERGE: &str = "\
mpirun --allow-run-as-root --oversubscribe -np 4 \\
  -x LD_PRELOAD=\"$(mpaudit lib-path)\" -x MPAUDIT_LOG_DIR=\"$PWD/logs\" \\
  -x MPAUDIT_ACTION=redirect bash -c 'echo rank $OMPI_COMM_WORLD_RANK > same.txt'
mpaudit merge --job job.toml
";
const GUIDE_SRUN_MERGE: &str = "\
srun -n 4 --overcommit mpaudit exec --action redirect -- \\
  bash -c 'echo rank $SLURM_PROCID > same.txt'
mpaudit merge --merge same.txt=concat
";

/// `bash -c` of a command from the guide, in the test's directory, with
/// the `mpaudit` under test first on PATH.
fn guide_command(dir: &TestDir, command: &str, mut bash: Command) -> Command {
    let guide = std::fs::read_to_string(workspace_root().join("docs/guide.md")).unwrap();
    assert!(
        guide.contains(command),
        "docs/guide.md no longer shows:\n{command}"
    );
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&artifacts().runner, bin.join("mpaudit")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    bash.args(["-c", command])
        .current_dir(&dir.path)
        .env("PATH", path)
        .env("MPAUDIT_PRELOAD", lib())
        .env_remove("LD_PRELOAD")
        .env_remove("MPAUDIT_LOG_DIR");
    bash
}

e2e!(mpirun_ranks_redirected_then_merged_by_the_job_file, |dir| {
    if mpirun().is_none() {
        return;
    }
    std::fs::write(
        dir.join("job.toml"),
        "[job]\ncommand = [\"true\"]\n[merge]\n\"same.txt\" = \"concat\"\n",
    )
    .unwrap();
    let out = run(
        &mut guide_command(&dir, GUIDE_MPIRUN_MERGE, Command::new("bash")),
        DEADLINE,
    );
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("same.txt  <- workers 0-3  concat: merged"),
        "{text}"
    );
    let expected: String = (0..4).map(|k| format!("rank {k}\n")).collect();
    assert_eq!(
        std::fs::read_to_string(dir.join("same.txt")).unwrap(),
        expected
    );
});

e2e!(srun_ranks_of_mpaudit_exec_merged_after_the_step, |dir| {
    let Some(slurm) = Slurm::start(&dir) else {
        return;
    };
    let out = run(
        &mut guide_command(&dir, GUIDE_SRUN_MERGE, slurm.command("bash")),
        DEADLINE,
    );
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each rank kept its file in rank_<r>/worker_0; the merge took all four.
    for r in 0..4 {
        assert!(dir
            .join(&format!("mpaudit-workers/rank_{r}/worker_0/same.txt"))
            .exists());
    }
    assert!(
        text.contains("same.txt  <- workers rank 0 worker 0,rank 1 worker 0,rank 2 worker 0,rank 3 worker 0  concat: merged"),
        "{text}"
    );
    let expected: String = (0..4).map(|k| format!("rank {k}\n")).collect();
    assert_eq!(
        std::fs::read_to_string(dir.join("same.txt")).unwrap(),
        expected
    );
    println!("{text}");
});

// Issue 14: worker 1 of rank 0 and worker 1 of rank 1 writing one file in
// one directory are two different workers in conflict, not one.
e2e!(the_same_worker_number_in_two_ranks_is_two_workers, |dir| {
    for r in 0..2 {
        let out = run(
            dir.audited("sh")
                .args(["-c", "echo $PMI_RANK > shared.txt"])
                .env("PMI_RANK", r.to_string())
                .env("PMI_SIZE", "2")
                .env("MPAUDIT_WORKER", "1"),
            DEADLINE,
        );
        assert!(out.status.success());
    }
    let events = dir.events();
    let writers: Vec<(u64, u64)> = accesses(&events, "shared.txt")
        .iter()
        .filter(|e| e["mode"] == "write")
        .map(|e| (e["rank"].as_u64().unwrap(), e["worker"].as_u64().unwrap()))
        .collect();
    assert_eq!(writers, [(0, 1), (1, 1)], "the library's identities");
    let out = run(
        mpaudit(&dir.path).args(["report", "--format", "json", "logs"]),
        DEADLINE,
    );
    let r = json_of(&out);
    let c = r["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("shared.txt"))
        })
        .unwrap_or_else(|| panic!("a conflict: {r:#}"));
    assert_eq!(
        c["writers"],
        serde_json::json!(["rank 0 worker 1", "rank 1 worker 1"]),
        "{c:#}"
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&run(mpaudit(&dir.path).args(["report", "logs"]), DEADLINE));
    assert!(
        text.contains("shared.txt  written by workers rank 0 worker 1,rank 1 worker 1"),
        "{text}"
    );
});

// Regression (issue 12): a redirected mkdir makes the directory in the
// worker's view only; the merge makes it in the job directory, empty or
// not, with the worker's mode, and merges the files in it.
e2e!(
    regression_directories_a_worker_made_are_merged_back,
    |dir| {
        let script = "mkdir -p out/empty && mkdir -m 700 priv && echo x > out/f && \
                  [ -d out/empty ] && ls out > listing.txt";
        std::fs::write(dir.join("job.sh"), script).unwrap();
        std::fs::write(
        dir.join("job.toml"),
        "[job]\ncommand = [\"bash\", \"job.sh\"]\nworkers = 1\n[audit]\naction = \"redirect\"\n",
    )
    .unwrap();
        let (_, r, _) = run_job(&dir, &[]);
        assert_eq!(r["summary"]["merge_failures"], 0, "{:#}", r["merges"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("listing.txt")).unwrap_or_default(),
            "empty\nf\n",
            "the worker saw its directories: {:#}",
            r["merges"]
        );
        assert!(
            dir.join("out/empty").is_dir(),
            "the empty directory came back"
        );
        assert_eq!(std::fs::read_to_string(dir.join("out/f")).unwrap(), "x\n");
        assert_eq!(mode(&dir.join("priv")), 0o700);
        // The directories were never made in place while the job ran: the
        // worker's copies hold them.
        assert!(dir.join("mpaudit-workers/worker_0/out/empty").is_dir());
    }
);
