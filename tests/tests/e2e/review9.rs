//! Hostile review 9 (of review 8's F1 and F2 fixes): what the library's
//! names through `/proc/self/fd/N` reach from a thread whose descriptor
//! table is its own.

use mpaudit_tests::*;
use std::path::Path;
use std::process::Command;

const WORKER: u32 = 1;

/// Shared `a` and `e/x`, every time 500.
fn tree(d: &Path) {
    std::fs::create_dir_all(d.join("e")).unwrap();
    std::fs::write(d.join("a"), "A").unwrap();
    std::fs::write(d.join("e/x"), "X").unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(500);
    let times = std::fs::FileTimes::new().set_accessed(t).set_modified(t);
    for p in ["a", "e/x", "e", "."] {
        std::fs::File::open(d.join(p))
            .unwrap()
            .set_times(times)
            .unwrap();
    }
}

/// `unshared_files MODE` bare and under the library's redirect: the same
/// output, and the shared tree as it was.
fn same_from_an_unshared_table(dir: &TestDir, mode: &str) {
    let exec = fixture("unshared_files");
    // Outside the job and the test's directory (a path the library takes
    // for one outside it, and passes through).
    let outside = std::env::temp_dir().join(format!("mpaudit-review9-{}", std::process::id()));
    std::fs::create_dir_all(&outside).unwrap();
    let (bare_dir, job) = (dir.join("bare"), dir.join("job"));
    for d in [&bare_dir, &job] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir(d).unwrap();
        tree(d);
    }
    let bare = run(
        Command::new(&exec)
            .args([mode, outside.to_str().unwrap()])
            .current_dir(&bare_dir),
        DEADLINE,
    );
    let before = shared_snapshot(&job);
    let mut c = Command::new(&exec);
    c.args([mode, outside.to_str().unwrap()])
        .current_dir(&job)
        .env("LD_PRELOAD", lib())
        .env("MPAUDIT_ACTION", "redirect")
        .env("MPAUDIT_JOB_DIR", &job)
        .env("MPAUDIT_WORKERS_DIR", dir.join("workers"))
        .env("MPAUDIT_LOG_DIR", dir.join("logs"))
        .env("MPAUDIT_WORKER", WORKER.to_string())
        .env_remove("MPAUDIT_FORK_WORKERS")
        .env_remove("MPAUDIT_ROOT_PID");
    for v in mpaudit_core::launcher::RANK_VARIABLES {
        c.env_remove(v);
    }
    let redirected = run(&mut c, DEADLINE);
    assert_eq!(
        shared_snapshot(&job),
        before,
        "the shared tree changed under redirect for {mode}:\n{}{}",
        stdout(&redirected),
        String::from_utf8_lossy(&redirected.stderr)
    );
    assert_eq!(
        stdout(&redirected),
        stdout(&bare),
        "redirected (left) vs bare (right) for {mode}:\n{}",
        String::from_utf8_lossy(&redirected.stderr)
    );
}

// Escape: a thread with a descriptor table of its own (unshare
// CLONE_FILES) opens the job directory and writes `a` through it. The
// library read the descriptor's path through /proc/self/fd/N, the main
// thread's table, where N is a directory outside the job: the write was
// taken for one outside, not redirected, and truncated the shared `a`.
e2e!(
    a_thread_with_its_own_descriptor_table_writes_no_shared_file_through_a_dirfd,
    |dir| {
        same_from_an_unshared_table(&dir, "dirfd");
    }
);

// Escape (review 8's F1 fix): the times put back on the directory's copy
// after a parent mirror or a copy-up is made, and the "now" of a removal
// the table records, went through /proc/self/fd/N: from a thread with a
// table of its own they set the times of whatever the main thread holds
// at N (here the shared `a`).
e2e!(
    a_thread_with_its_own_descriptor_table_sets_no_shared_file_s_times,
    |dir| {
        same_from_an_unshared_table(&dir, "unlink");
    }
);

// Escape (review 8's F2 fix): the owner write and search given to a
// read-only directory copy for a copy-up, and its mode put back, went
// through /proc/self/fd/N: from a thread with a table of its own they
// chmod whatever the main thread holds at N (here the shared `a`).
e2e!(
    a_thread_with_its_own_descriptor_table_chmods_no_shared_file,
    |dir| {
        same_from_an_unshared_table(&dir, "copyup");
    }
);
