//! Ranks under real launchers: a single-node Slurm of the test's own and
//! Open MPI (tests/src/components.rs starts them through tests/scripts/).
//! Each rank is a worker; ranks writing one name are a conflict between
//! them; a runner per rank keeps its own workers and logs.

use mpaudit_tests::components::{mpirun, Slurm};
use mpaudit_tests::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

// The commands of docs/guide.md ("Ranks: srun and mpirun"), verbatim: each
// test checks that the guide still shows its command, then runs it with
// bash, the `mpaudit` under test first on PATH.
const GUIDE_SRUN: &str = "\
srun -n 4 --overcommit env LD_PRELOAD=\"$(mpaudit lib-path)\" \\
  MPAUDIT_LOG_DIR=\"$PWD/logs\" bash -c 'echo rank $SLURM_PROCID > same.txt'
mpaudit report logs
";
const GUIDE_MPIRUN: &str = "\
mpirun --allow-run-as-root --oversubscribe -np 4 \\
  -x LD_PRELOAD=\"$(mpaudit lib-path)\" -x MPAUDIT_LOG_DIR=\"$PWD/logs\" \\
  bash -c 'echo rank $OMPI_COMM_WORLD_RANK > same.txt'
mpaudit report logs
";
const GUIDE_SRUN_EXEC: &str = "\
srun -n 2 --overcommit mpaudit exec --workers 1 --action redirect -- \\
  bash -c 'echo rank $SLURM_PROCID > out.txt'
mpaudit report mpaudit-logs/rank_0 mpaudit-logs/rank_1
";

/// `bash -c` of a command from the guide, in the test's directory.
fn guide_command(dir: &TestDir, command: &str, mut bash: Command) -> Command {
    let guide = std::fs::read_to_string(workspace_root().join("docs/guide.md")).unwrap();
    assert!(
        guide.contains(command),
        "docs/guide.md no longer shows:\n{command}"
    );
    let bin = dir.join("bin");
    if !bin.exists() {
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(&artifacts().runner, bin.join("mpaudit")).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    bash.args(["-c", command])
        .current_dir(&dir.path)
        .env("PATH", path)
        .env_remove("LD_PRELOAD")
        .env_remove("MPAUDIT_LOG_DIR");
    bash
}

/// The report's status is 1 (rogue writes) and it names the shared file.
fn assert_report_names(out: &std::process::Output, name: &str) {
    let text = stdout(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(name), "{text}");
}

fn hostname() -> String {
    let out = run_ok(Command::new("uname").arg("-n"));
    stdout(&out).trim().to_string()
}

fn report_json(logs: &[std::path::PathBuf]) -> Value {
    let out = run(
        Command::new(&artifacts().runner)
            .args(["report", "--format", "json"])
            .args(logs),
        DEADLINE,
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report JSON: {e}\n{}\n{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The four ranks are four workers (0-3, each on this node) in the events,
/// in four log files named after node and rank, and the report lists the
/// shared name as a conflict between all four.
fn assert_four_ranks_conflict(dir: &TestDir) {
    let (events, bad) = read_events(&dir.logs());
    assert_eq!(bad, 0);
    let node = hostname();
    let starts: Vec<&Value> = events.iter().filter(|e| e["op"] == "start").collect();
    let ranks: BTreeSet<u64> = starts.iter().map(|e| e["rank"].as_u64().unwrap()).collect();
    assert_eq!(ranks, BTreeSet::from([0, 1, 2, 3]), "{starts:#?}");
    for e in &events {
        assert_eq!(e["worker"], e["rank"], "a rank is its own worker: {e}");
        assert_eq!(e["node"], node.as_str(), "{e}");
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.logs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for r in 0..4 {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("mpaudit-{node}-r{r}-"))),
            "a log named after node and rank {r}: {names:?}"
        );
    }
    let writers: BTreeSet<u64> = accesses(&events, "same.txt")
        .iter()
        .filter(|e| e["mode"] == "write")
        .map(|e| e["worker"].as_u64().unwrap())
        .collect();
    assert_eq!(writers, BTreeSet::from([0, 1, 2, 3]));

    let report = report_json(&[dir.logs()]);
    let conflicts = report["conflicts"].as_array().expect("conflicts");
    let same = conflicts
        .iter()
        .find(|c| c["path"].as_str().is_some_and(|p| p.ends_with("same.txt")))
        .unwrap_or_else(|| panic!("same.txt is a conflict: {conflicts:#?}"));
    assert_eq!(
        same["writers"].as_array().map(Vec::len),
        Some(4),
        "written by all four ranks: {same}"
    );
}

e2e!(
    srun_ranks_writing_one_name_are_four_workers_in_conflict,
    |dir| {
        let Some(slurm) = Slurm::start(&dir) else {
            return;
        };
        let out = run(
            &mut guide_command(&dir, GUIDE_SRUN, slurm.command("bash")),
            DEADLINE,
        );
        assert_report_names(&out, "same.txt");
        assert_four_ranks_conflict(&dir);
    }
);

e2e!(
    mpirun_ranks_writing_one_name_are_four_workers_in_conflict,
    |dir| {
        if mpirun().is_none() {
            return;
        }
        let out = run(
            &mut guide_command(&dir, GUIDE_MPIRUN, Command::new("bash")),
            DEADLINE,
        );
        assert_report_names(&out, "same.txt");
        assert_four_ranks_conflict(&dir);
    }
);

// Regression (issue 14): under `srun -n 2 mpaudit exec --workers 1` both
// ranks called themselves worker 0, redirected into one worker_0/ and
// read each other's logs. Each rank's runner now keeps rank_<r>/.
e2e!(srun_of_mpaudit_exec_keeps_each_rank_to_itself, |dir| {
    let Some(slurm) = Slurm::start(&dir) else {
        return;
    };
    let out = run(
        &mut guide_command(&dir, GUIDE_SRUN_EXEC, slurm.command("bash")),
        DEADLINE,
    );
    let text = stdout(&out);
    let errors = String::from_utf8_lossy(&out.stderr);
    // Neither the ranks nor their runners' merges wrote the shared name: a
    // rank of two does not merge into the shared job directory.
    assert!(
        !dir.join("out.txt").exists(),
        "the shared name was not written: {text}\n{errors}"
    );
    for r in 0..2 {
        assert!(
            errors.contains(&format!("not merging: rank {r} of 2")),
            "{errors}"
        );
    }
    // The job-wide report of the guide's second line: both directories.
    assert!(text.contains("rank_0") && text.contains("rank_1"), "{text}");
    for r in 0..2u64 {
        let worker = dir.join(&format!("mpaudit-workers/rank_{r}/worker_0"));
        assert_eq!(
            std::fs::read_to_string(worker.join("out.txt")).unwrap(),
            format!("rank {r}\n"),
            "rank {r} redirected into its own directory"
        );
        // `mpaudit exec` passes the rank's stdout through to srun, which
        // collects it: no copy in the worker directory.
        assert!(!worker.join("stdout.log").exists());
        let logs = dir.join(&format!("mpaudit-logs/rank_{r}"));
        let (events, bad) = read_events(&logs);
        assert_eq!(bad, 0);
        assert!(!events.is_empty());
        for e in &events {
            assert_eq!(e["rank"], r, "rank {r}'s logs hold only rank {r}: {e}");
            assert_eq!(e["worker"], 0, "{e}");
        }
        let targets = report_json(&[logs])["redirected"].to_string();
        assert!(targets.contains(&format!("rank_{r}/worker_0")), "{targets}");
        assert!(!targets.contains(&format!("rank_{}/", 1 - r)), "{targets}");
    }
    // Bare: the same step without mpaudit writes out.txt (one rank wins).
    let bare = run(
        slurm
            .command("srun")
            .args(["-n", "2", "--overcommit", "bash", "-c"])
            .arg("echo rank $SLURM_PROCID > out.txt")
            .current_dir(&dir.path),
        DEADLINE,
    );
    assert!(bare.status.success());
    assert!(dir.join("out.txt").exists());
});

// The guide's Slurm script, taken from docs/guide.md, submitted with
// `sbatch --wait`: the audit's status is the job's (1: rogue writes).
e2e!(sbatch_of_the_guides_slurm_script, |dir| {
    let Some(slurm) = Slurm::start(&dir) else {
        return;
    };
    let guide = std::fs::read_to_string(workspace_root().join("docs/guide.md")).unwrap();
    let script = guide
        .split("**Slurm**")
        .nth(1)
        .and_then(|s| s.split("```sh tested").nth(1))
        .and_then(|s| s.split_once('\n').map(|(_, body)| body))
        .and_then(|s| s.split("```").next())
        .expect("the guide's Slurm block");
    assert!(script.starts_with("#!/bin/bash\n#SBATCH"), "{script}");
    let repo = super::docs::scratch("sbatch-guide");
    std::fs::write(repo.join("minifw.slurm"), script).unwrap();
    // A 2-CPU test node: the command line overrides the script's 8 CPUs,
    // as a user on a small allocation would.
    let out = run(
        slurm
            .command("sbatch")
            .args(["--wait", "--cpus-per-task=2", "--output=job.out"])
            .arg("minifw.slurm")
            .current_dir(&repo.path),
        DEADLINE,
    );
    let job_out = std::fs::read_to_string(repo.join("job.out")).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(1),
        "sbatch --wait exits with the job's status (rogue writes)\n{}\n{job_out}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `--workers auto` took the allocation's 2 CPUs: workers 0 and 1.
    assert!(job_out.contains("worker 1 "), "{job_out}");
    assert!(!job_out.contains("worker 2 "), "{job_out}");
    let example = repo.join("examples/athena-like");
    assert!(
        example.join("hist.txt").exists(),
        "merged in the job: {job_out}"
    );
    // A batch script is the whole job, not a rank: plain worker_<k>/.
    assert!(
        example.join("mpaudit-workers/worker_0").is_dir(),
        "{job_out}"
    );
    assert!(!example.join("mpaudit-workers/rank_0").exists());
});

// A rank that forks workers itself (a fork-mode framework run as a rank):
// its workers are rank_<r>/worker_<k>, numbered within the rank, and keep
// the rank in their events.
e2e!(fork_workers_of_a_rank_nest_inside_the_rank, |dir| {
    let script = "(echo a > shared.txt) & wait; (echo b > shared.txt) & wait";
    let out = run(
        dir.audited("bash")
            .args(["-c", script])
            .env("PMI_RANK", "5")
            .env("MPAUDIT_FORK_WORKERS", "1")
            .env("MPAUDIT_ACTION", "redirect"),
        DEADLINE,
    );
    assert!(out.status.success());
    assert!(!dir.join("shared.txt").exists());
    for (k, content) in [(0, "a\n"), (1, "b\n")] {
        let target = dir.join(&format!("mpaudit-workers/rank_5/worker_{k}/shared.txt"));
        assert_eq!(
            std::fs::read_to_string(&target).ok().as_deref(),
            Some(content),
            "{}",
            target.display()
        );
    }
    let events = dir.events();
    assert!(events.iter().all(|e| e["rank"] == 5));
    let root = events.iter().find(|e| e["op"] == "start").unwrap();
    assert_eq!(root["worker"], Value::Null, "the forking rank is the root");
});

// Regression: a rank that is its own worker handed MPAUDIT_WORKER=<rank> to
// the programs it execs, which then took themselves for worker <rank> of
// the rank (rank_<r>/worker_<r>) and redirected elsewhere than their parent.
e2e!(programs_a_rank_execs_stay_that_rank_s_worker, |dir| {
    let out = run(
        dir.audited("bash")
            .args(["-c", "echo one > a.txt; bash -c 'echo two > b.txt'"])
            .env("PMI_RANK", "2")
            .env("MPAUDIT_ACTION", "redirect"),
        DEADLINE,
    );
    assert!(out.status.success());
    for (name, content) in [("a.txt", "one\n"), ("b.txt", "two\n")] {
        let target = dir.join(&format!("mpaudit-workers/worker_2/{name}"));
        assert_eq!(
            std::fs::read_to_string(&target).ok().as_deref(),
            Some(content),
            "{}",
            target.display()
        );
    }
    assert!(!dir.join("mpaudit-workers/rank_2").exists());
    let events = dir.events();
    assert!(events.len() > 2);
    assert!(events.iter().all(|e| e["rank"] == 2 && e["worker"] == 2));
});

// Regression (review 1, item 6): `srun -n1 mpirun -np 2` handed both of
// mpirun's ranks the step's SLURM_PROCID=0, which won over
// OMPI_COMM_WORLD_RANK: both ranks were rank 0 (worker 0), their logs
// `-r0-`, and the clobber between them was not reported. The innermost
// launcher (mpirun) now gives the rank.
e2e!(mpirun_inside_an_srun_step_gives_mpirun_s_ranks, |dir| {
    let Some(slurm) = Slurm::start(&dir) else {
        return;
    };
    let Some(mpirun) = mpirun() else {
        return;
    };
    let mut srun = slurm.command("srun");
    srun.args(["-n", "1", "-c", "2"])
        .arg(mpirun.get_program())
        .args(mpirun.get_args())
        .args(["-np", "2", "-x"])
        .arg(format!("LD_PRELOAD={}", lib().display()))
        .arg("-x")
        .arg(format!("MPAUDIT_LOG_DIR={}", dir.logs().display()))
        .args(["bash", "-c", "echo rank $OMPI_COMM_WORLD_RANK > same.txt"])
        .current_dir(&dir.path);
    let out = run(&mut srun, DEADLINE);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let (events, bad) = read_events(&dir.logs());
    assert_eq!(bad, 0);
    let ranks: BTreeSet<u64> = events
        .iter()
        .filter(|e| e["op"] == "start")
        .map(|e| e["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, BTreeSet::from([0, 1]), "{events:#?}");
    let writers: BTreeSet<u64> = accesses(&events, "same.txt")
        .iter()
        .filter(|e| e["mode"] == "write")
        .map(|e| e["worker"].as_u64().unwrap())
        .collect();
    assert_eq!(writers, BTreeSet::from([0, 1]));
    let report = report_json(&[dir.logs()]);
    let conflicts = report["conflicts"].as_array().expect("conflicts");
    assert!(
        conflicts.iter().any(
            |c| c["path"].as_str().is_some_and(|p| p.ends_with("same.txt"))
                && c["writers"].as_array().map(Vec::len) == Some(2)
        ),
        "same.txt written by both ranks: {conflicts:#?}"
    );
});

// Regression (review 1, item 7): every process of a one-task step (`srun
// --pty bash`, or a batch script `sbatch` submitted from inside a step,
// which inherits SLURM_STEP_ID and SLURM_STEP_NUM_TASKS=1) was rank 0: its
// redirected files went to worker_0/ as if it were a rank's worker. A
// one-task step without an MPI rank is no rank: the process is the root,
// as outside Slurm.
e2e!(a_one_task_srun_step_is_no_rank, |dir| {
    let Some(slurm) = Slurm::start(&dir) else {
        return;
    };
    let out = run(
        slurm
            .command("srun")
            .args(["-n", "1", "env"])
            .arg(format!("LD_PRELOAD={}", lib().display()))
            .arg(format!("MPAUDIT_LOG_DIR={}", dir.logs().display()))
            .arg("MPAUDIT_ACTION=redirect")
            .args(["bash", "-c", "echo one > summary.log"])
            .current_dir(&dir.path),
        DEADLINE,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A root's write of a new file is not rogue: it stays in place.
    assert_eq!(
        std::fs::read_to_string(dir.join("summary.log"))
            .ok()
            .as_deref(),
        Some("one\n")
    );
    assert!(!dir.join("mpaudit-workers/worker_0").exists());
    let events = dir.events();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(e.get("rank"), None, "no rank: {e}");
        assert_eq!(e["worker"], Value::Null, "the root: {e}");
    }
    for f in std::fs::read_dir(dir.logs()).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("-r0-"), "{name}");
    }
});

// Regression (review 1, item 8): a rank on a node whose name is empty (a
// container's UTS namespace) logged into `mpaudit--r1-….jsonl`, which the
// report did not recognise: "ok", 0 events. The empty name is now `_`, and
// a file named like a log that the report does not read is warned about.
e2e!(a_rank_on_a_node_with_an_empty_name_is_reported, |dir| {
    let script = "import os, socket; socket.sethostname(''); \
                  os.execvp('bash', ['bash', '-c', 'echo x > a.txt'])";
    let out = run(
        dir.audited("unshare")
            .args(["-u", "python3", "-c", script])
            .env("OMPI_COMM_WORLD_RANK", "1"),
        DEADLINE,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = std::fs::read_dir(dir.logs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("mpaudit-_-r1-")),
        "{names:?}"
    );
    let report = report_json(&[dir.logs()]);
    let lines: usize = names
        .iter()
        .map(|n| {
            std::fs::read_to_string(dir.logs().join(n))
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(
        report["summary"]["events"].as_u64(),
        Some(lines as u64),
        "every log read: {report}"
    );
    // A log the report cannot read is named, not skipped quietly.
    std::fs::write(dir.logs().join("mpaudit--r1-1-2.jsonl"), "").unwrap();
    let out = run(
        Command::new(&artifacts().runner)
            .args(["report"])
            .arg(dir.logs()),
        DEADLINE,
    );
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        errors.contains("mpaudit--r1-1-2.jsonl") && errors.contains("not in this report"),
        "{errors}"
    );
});
