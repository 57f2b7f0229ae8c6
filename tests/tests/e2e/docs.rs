//! The docs cannot rot: every fenced block marked ```` ```sh tested ```` in
//! README.md, docs/guide.md and the examples' READMEs is run, in a scratch
//! copy of the examples with `target/release/mpaudit` pointing at the
//! binary under test, and must end with the status the block declares.
//!
//! Info string: `sh tested [exit=N] [env=NAME=VALUE]...`. In a block,
//! `cargo build --release` is taken as done (the harness built the
//! artifacts) and `cargo test --workspace` (this very suite) is skipped;
//! everything else runs as written, with `bash`, from the top of the copy.

use mpaudit_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Files whose shell blocks are commands for the reader.
const DOCS: &[&str] = &[
    "README.md",
    "docs/guide.md",
    "examples/athena-like/README.md",
    "examples/python-mp/README.md",
    "examples/legacy-spawn/README.md",
];

#[derive(Debug)]
struct Block {
    file: &'static str,
    line: usize,
    exit: i32,
    env: Vec<(String, String)>,
    script: String,
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    for &file in DOCS {
        let text = std::fs::read_to_string(workspace_root().join(file)).expect(file);
        let mut lines = text.lines().enumerate();
        while let Some((n, l)) = lines.next() {
            let Some(info) = l.strip_prefix("```") else {
                continue;
            };
            let words: Vec<&str> = info.split_whitespace().collect();
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|(_, l)| !l.starts_with("```"))
                .map(|(_, l)| l)
                .collect();
            if words.first() != Some(&"sh") {
                continue;
            }
            if words.get(1) != Some(&"tested") {
                // README.md predates this test: its other blocks show
                // placeholders (`./legacy_job`). Everywhere else, every
                // shell block is a command that runs.
                assert!(
                    file == "README.md",
                    "{file}:{}: a shell block that no test runs; mark it `sh tested`",
                    n + 1
                );
                continue;
            }
            let mut b = Block {
                file,
                line: n + 1,
                exit: 0,
                env: Vec::new(),
                script: String::new(),
            };
            for w in &words[2..] {
                if let Some(v) = w.strip_prefix("exit=") {
                    b.exit = v.parse().expect("exit=N");
                } else if let Some(kv) = w.strip_prefix("env=") {
                    let (k, v) = kv.split_once('=').expect("env=NAME=VALUE");
                    b.env.push((k.into(), v.into()));
                } else {
                    panic!("{file}:{}: unknown block attribute {w}", n + 1);
                }
            }
            for l in body {
                let t = l.trim();
                if t == "cargo test --workspace" {
                    continue;
                }
                b.script += &l.replace("cargo build --release", "true");
                b.script.push('\n');
            }
            out.push(b);
        }
    }
    out
}

/// The examples, copied once and built once (g++), to copy from.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let t = TestDir::new("docs-template").kept();
        super::examples::copy_tree(&workspace_root().join("examples"), &t.join("examples"));
        let b = run(
            &mut Command::new(t.join("examples/athena-like/build.sh")),
            DEADLINE,
        );
        assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
        t
    })
}

/// A scratch "repository": the examples (already built) and
/// target/release/mpaudit.
pub(crate) fn scratch(name: &str) -> TestDir {
    let d = TestDir::new(name);
    let t = template();
    super::examples::copy_tree(&t.join("examples"), &d.join("examples"));
    // Built files after the sources, so build.sh finds nothing stale.
    for sub in ["bin", "lib"] {
        let from = t.join("examples/athena-like").join(sub);
        let to = d.join("examples/athena-like").join(sub);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap().filter_map(|e| e.ok()) {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    let rel = d.join("target/release");
    std::fs::create_dir_all(&rel).unwrap();
    std::os::unix::fs::symlink(&artifacts().runner, rel.join("mpaudit")).unwrap();
    d
}

#[test]
fn every_shell_block_in_the_docs_is_marked_and_parsed() {
    let b = blocks();
    let count = |f: &str| b.iter().filter(|b| b.file == f).count();
    assert_eq!(count("README.md"), 1, "{b:#?}");
    assert!(count("docs/guide.md") >= 8, "{b:#?}");
    // The README's main command, verbatim.
    assert!(b[0]
        .script
        .contains("true && examples/athena-like/run.sh\n"));
}

#[test]
fn every_tested_shell_block_in_the_docs_runs() {
    let mut failures = Vec::new();
    for (i, b) in blocks().iter().enumerate() {
        let d = scratch(&format!("doc-block-{i}"));
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(&b.script)
            .current_dir(&d.path)
            .env_remove("LD_PRELOAD")
            .env_remove("ATHENA_PROC_NUMBER")
            .env_remove("SLURM_CPUS_PER_TASK")
            .env_remove("SLURM_CPUS_ON_NODE")
            .env_remove("PBS_NP")
            .env_remove("PBS_NCPUS")
            .env_remove("PBS_NODEFILE")
            .env_remove("NSLOTS")
            .env_remove("LSB_DJOB_NUMPROC")
            .env_remove("MPAUDIT")
            .env_remove("MPAUDIT_WORKER")
            .env_remove("MPAUDIT_FORK_WORKERS")
            .env_remove("MPAUDIT_WORKERS_DIR");
        for (k, v) in &b.env {
            c.env(k, v);
        }
        let out = run(&mut c, DEADLINE);
        let code = out.status.code().unwrap_or(-1);
        if code != b.exit {
            failures.push(format!(
                "{}:{}: exit status {code}, the doc says {}\n--- script\n{}--- stdout\n{}--- stderr\n{}",
                b.file,
                b.line,
                b.exit,
                b.script,
                stdout(&out),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_batch_variable_shows_in_check() {
    let d = scratch("doc-check-auto");
    for (var, val, source) in [
        ("SLURM_CPUS_PER_TASK", "2", "SLURM_CPUS_PER_TASK=2 [Slurm]"),
        ("PBS_NP", "2", "PBS_NP=2 [PBS"),
        ("ATHENA_PROC_NUMBER", "2", "ATHENA_PROC_NUMBER=2"),
    ] {
        let out = run(
            Command::new(d.join("target/release/mpaudit"))
                .args([
                    "check",
                    "examples/athena-like/job.toml",
                    "--workers",
                    "auto",
                ])
                .current_dir(&d.path)
                .env_remove("SLURM_CPUS_PER_TASK")
                .env_remove("ATHENA_PROC_NUMBER")
                .env_remove("PBS_NP")
                .env(var, val),
            DEADLINE,
        );
        let text = stdout(&out);
        assert!(out.status.success(), "{text}");
        let line = text.lines().find(|l| l.starts_with("workers:")).unwrap();
        assert!(line.contains(source), "{var}: {line}");
    }
}
