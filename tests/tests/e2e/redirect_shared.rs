//! The redirect state is the worker's, shared by all of its processes, with
//! no small limit, and directory listings show what the worker wrote
//! (issue 12). Each test runs a shell script once bare in a scratch job
//! directory and once redirected in worker 1 of an identical one, and
//! compares what the program saw.

use mpaudit_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Two identical job directories, `bare/` and `job/`, built by `setup`;
/// the workers directory and the logs lie outside both, so listings of the
/// job directory see only the program's files.
pub(crate) fn twin_jobs(dir: &TestDir, setup: impl Fn(&Path)) -> (PathBuf, PathBuf) {
    let (bare, job) = (dir.join("bare"), dir.join("job"));
    for d in [&bare, &job] {
        std::fs::create_dir_all(d).unwrap();
        setup(d);
    }
    (bare, job)
}

pub(crate) fn redirected(dir: &TestDir, job: &Path, script: &str) -> Command {
    let mut c = dir.audited("bash");
    c.current_dir(job)
        .args(["-c", script])
        .env("MPAUDIT_ACTION", "redirect")
        .env("MPAUDIT_WORKER", "1")
        .env("MPAUDIT_JOB_DIR", job)
        .env("MPAUDIT_WORKERS_DIR", dir.join("workers"));
    c
}

pub(crate) fn bare(dir: &TestDir, job: &Path, script: &str) -> Command {
    let mut c = dir.bare("bash");
    c.current_dir(job).args(["-c", script]);
    c
}

pub(crate) fn worker_dir(dir: &TestDir) -> PathBuf {
    dir.join("workers/worker_1")
}

/// Runs `script` bare and redirected; asserts both print the same and
/// succeed, and returns that output.
pub(crate) fn same_output(dir: &TestDir, bare_job: &Path, job: &Path, script: &str) -> String {
    let b = run_ok(&mut bare(dir, bare_job, script));
    let r = run(&mut redirected(dir, job, script), DEADLINE);
    assert_eq!(
        stdout(&r),
        stdout(&b),
        "redirected run differs from the bare run\nscript: {script}\nstderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(r.status.code(), b.status.code(), "exit status");
    stdout(&b)
}

pub(crate) fn write(p: PathBuf, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

// Regression: a redirect made by a child was invisible to its parent
// (`touch f; [ -f f ]` false in a shell; `(echo > f); cat < f` failed).
e2e!(regression_a_childs_redirect_is_seen_by_its_parent, |dir| {
    let (bare_job, job) = twin_jobs(&dir, |_| {});
    let out = same_output(
        &dir,
        &bare_job,
        &job,
        "touch f; [ -f f ] && echo yes || echo no; (echo hi > g); cat < g; \
         bash -c 'echo child > h'; cat h; echo parent >> h; cat h",
    );
    assert_eq!(out, "yes\nhi\nchild\nchild\nparent\n");
    for name in ["f", "g", "h"] {
        assert!(!job.join(name).exists(), "{name} was written in place");
        assert!(worker_dir(&dir).join(name).exists(), "{name} redirected");
    }
});

// Regression: after 8192 redirected paths the table was full: later files
// could not be read back and only 8192 reached the manifest.
e2e!(
    regression_ten_thousand_redirected_paths_are_read_back_and_listed,
    |dir| {
        let (bare_job, job) = twin_jobs(&dir, |_| {});
        let out = same_output(
            &dir,
            &bare_job,
            &job,
            "for i in $(seq 10000); do echo $i > f$i; done; n=0; \
         for i in $(seq 10000); do read x < f$i && [ \"$x\" = $i ] && n=$((n+1)); done; echo $n",
        );
        assert_eq!(out, "10000\n");
        let manifest =
            std::fs::read_to_string(worker_dir(&dir).join("mpaudit-redirects.jsonl")).unwrap();
        let originals: std::collections::BTreeSet<String> = manifest
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["original"].to_string())
            .collect();
        assert_eq!(originals.len(), 10000, "every redirect is in the manifest");
        assert_eq!(
            std::fs::read_dir(&job).unwrap().count(),
            0,
            "nothing in place"
        );
    }
);

// Several processes of one worker redirecting at the same time share one
// table: the parent reads back every file each of them wrote.
e2e!(concurrent_processes_of_a_worker_share_one_table, |dir| {
    let (bare_job, job) = twin_jobs(&dir, |_| {});
    let out = same_output(
        &dir,
        &bare_job,
        &job,
        "for j in 1 2 3 4; do (for i in $(seq 600); do echo $j-$i > f$j-$i; done) & done; wait; \
         n=0; for j in 1 2 3 4; do for i in $(seq 600); do read x < f$j-$i && [ \"$x\" = $j-$i ] && n=$((n+1)); done; done; \
         echo $n; ls | wc -l",
    );
    assert_eq!(out, "2400\n2400\n");
});

// Regression: `ls`, globs and `find` did not show redirected files, and
// showed files the worker had removed.
e2e!(
    regression_listings_show_redirected_files_once_and_hide_removed_ones,
    |dir| {
        let (bare_job, job) = twin_jobs(&dir, |d| {
            for f in ["a", "b", "c", "sub/x", "sub/z"] {
                write(d.join(f), "shared\n");
            }
        });
        let out = same_output(
            &dir,
            &bare_job,
            &job,
            "echo new > c; echo mine > d; rm b; rm sub/z; echo y > sub/y; \
         ls; echo *; echo sub/*; find . | sort; ls -l c d | awk '{print $5, $9}'; \
         python3 -c 'import os; print(sorted(os.listdir(\"sub\")))'; cat c d",
        );
        assert!(out.contains("a\nc\nd\nsub\n"), "{out}");
        // The shared files are untouched.
        assert_eq!(std::fs::read_to_string(job.join("b")).unwrap(), "shared\n");
        assert_eq!(std::fs::read_to_string(job.join("c")).unwrap(), "shared\n");
        assert!(!job.join("d").exists());
    }
);

// Regression: `rm -rf dir` failed with ENOTEMPTY when the directory had
// redirected entries (fts: openat + fdopendir + readdir + unlinkat).
e2e!(
    regression_rm_rf_of_a_directory_with_redirected_entries_succeeds,
    |dir| {
        let (bare_job, job) = twin_jobs(&dir, |d| {
            write(d.join("d/a"), "shared\n");
            write(d.join("d/sub/s"), "shared\n");
            write(d.join("keep"), "shared\n");
        });
        let out = same_output(
        &dir,
        &bare_job,
        &job,
        "echo x > d/b; echo y > d/sub/t; rm -rf d && echo removed; [ -e d ] || echo gone; ls; find . | sort",
    );
        assert_eq!(out, "removed\ngone\nkeep\n.\n./keep\n");
        assert_eq!(
            std::fs::read_to_string(job.join("d/a")).unwrap(),
            "shared\n"
        );
    }
);

// Regression: `mv dir newdir` failed with ENOENT (the worker had no copy of
// the shared directory). The worker's copy is moved, what only the shared
// directory holds is copied up into it, and the old names are hidden.
e2e!(
    regression_mv_of_a_shared_directory_gives_the_bare_result,
    |dir| {
        let (bare_job, job) = twin_jobs(&dir, |d| {
            write(d.join("d/a"), "shared a\n");
            write(d.join("d/sub/s"), "shared s\n");
        });
        let out = same_output(
            &dir,
            &bare_job,
            &job,
            "echo mine > d/b; mv d newd && echo moved; [ -e d ] || echo gone; find . | sort; \
         cat newd/a newd/b newd/sub/s; mv newd/b newd/c && cat newd/c; ls newd",
        );
        assert!(out.starts_with("moved\ngone\n"), "{out}");
        assert_eq!(
            std::fs::read_to_string(job.join("d/a")).unwrap(),
            "shared a\n"
        );
    }
);

// `mkdir tmp; write; rename(tmp, final)` (the directory made in place, its
// files redirected), and `os.rename` of a shared directory the worker never
// touched: the files are found under the new names, as bare.
e2e!(
    rename_of_directories_made_in_place_or_untouched_gives_the_bare_result,
    |dir| {
        let (bare_job, job) = twin_jobs(&dir, |d| {
            std::fs::create_dir_all(d.join("top")).unwrap();
            write(d.join("untouched/a"), "a\n");
            write(d.join("untouched/s/b"), "b\n");
            std::os::unix::fs::symlink("a", d.join("untouched/l")).unwrap();
        });
        let out = same_output(
        &dir,
        &bare_job,
        &job,
        "mkdir top/new; echo x > top/new/f; python3 -c 'import os; os.rename(\"top/new\", \"top/moved\")'; \
         find . | sort; cat top/moved/f; \
         python3 -c 'import os; os.rename(\"untouched\", \"renamed\"); print(sorted(os.listdir(\"renamed\")))'; \
         cat renamed/s/b renamed/l; rm -rf renamed && find . | sort",
    );
        assert!(
            out.ends_with("x\n['a', 'l', 's']\nb\na\n.\n./top\n./top/moved\n./top/moved/f\n"),
            "{out}"
        );
    }
);
