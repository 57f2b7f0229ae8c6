//! Hostile review 8 (of stop 22's diff): what a directory's times and mode
//! do once the worker changed them, bare vs redirected (library) and bare
//! vs supervised, as review 6's sweeps.

use crate::redirect_exact::{same_ops_or_err, same_supervised_ops, sweep};
use mpaudit_tests::*;
use std::path::Path;

/// Shared `a`, an empty `d`, `e` holding `e/x` and `e/s/y`.
fn tree(d: &Path) {
    std::fs::create_dir(d.join("d")).unwrap();
    std::fs::write(d.join("a"), "A").unwrap();
    std::fs::create_dir(d.join("e")).unwrap();
    std::fs::write(d.join("e/x"), "X").unwrap();
    std::fs::create_dir(d.join("e/s")).unwrap();
    std::fs::write(d.join("e/s/y"), "Y").unwrap();
}

/// [`tree`] with every entry's times set to 500 (the job directory's
/// too): a copy that takes the time it was made, where bare keeps the
/// original's, shows (the executor prints times before 2001 exactly).
fn old_tree(d: &Path) {
    tree(d);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(500);
    let times = std::fs::FileTimes::new().set_accessed(t).set_modified(t);
    for p in ["a", "d", "e/x", "e/s/y", "e/s", "e", "."] {
        let f = std::fs::File::open(d.join(p)).unwrap();
        f.set_times(times).unwrap();
    }
}

/// The prelude making the worker's own `a` (a copy-up in `.`).
const PRELUDE: &str = "open 3 a WRONLY|APPEND\nwrite 3 x\nclose 3\n";

fn differing(dir: &TestDir, ops: &[&str], supervised: bool) -> Vec<String> {
    let mut failed = Vec::new();
    for setup in [tree, old_tree] {
        failed.extend(sweep(&[PRELUDE], ops, |script| {
            if supervised {
                same_supervised_ops(dir, setup, script)
            } else {
                same_ops_or_err(dir, setup, script)
            }
        }));
    }
    failed
}

fn assert_none(failed: Vec<String>) {
    assert!(
        failed.is_empty(),
        "{} differ:\n{}",
        failed.len(),
        failed.join("\n-----\n")
    );
}

/// F1: once a directory's times are set, only what changes its entries in
/// the worker's view changes them again. A copy-up, a parent made for
/// one, or a copy of a subdirectory made for a metadata change adds an
/// entry to the directory's copy that the view already showed: bare keeps
/// the times the worker set; a removal or a new name changes them.
const TIMES_OF_A_DIRECTORY_THE_WORKER_SET: &[&str] = &[
    "utimensat . 1000 0\nopen 0 a WRONLY|APPEND\ntimes .",
    "utimensat . 1000 0\nopen 0 a RDWR\ntimes .",
    "utimensat . 1000 0\ntruncate a 0\ntimes .",
    "utimensat . 1000 0\nchmod a 600\ntimes .",
    "utimensat . 1000 0\nopen 0 e/x WRONLY\ntimes .\ntimes e",
    "utimensat . 1000 0\nopen 0 d/f WRONLY|CREAT 644\ntimes .",
    "utimensat . 1000 0\nutimensat d 1000 0\nopen 0 d/f WRONLY|CREAT 644\ntimes .\ntimes d",
    "utimensat . 1000 0\nchmod e 700\ntimes .",
    "utimensat . 1000 0\nutimensat e 1000 0\ntimes .\ntimes e",
    "utimensat e 1000 0\nopen 0 e/x WRONLY\ntimes e",
    "utimensat e 1000 0\nchmod e/x 600\ntimes e",
    "utimensat e 1000 0\ntruncate e/x 0\ntimes e",
    "utimensat e 1000 0\nopen 0 e/x RDONLY\ntimes e",
    "chmod e 700\nutimensat e 1000 0\nopen 0 e/x WRONLY\ntimes e",
    // A directory renamed or exchanged keeps its times; its copy, filled
    // with the shared entries, too.
    "utimensat e 1000 0\nrename e f\ntimes f\ntimes f/s",
    "utimensat e 1000 0\nrename e d\ntimes d",
    "utimensat e 1000 0\nrename e d EXCHANGE\ntimes d",
    "utimensat d 1000 0\nrename e d EXCHANGE\ntimes e",
    // What changes the entries changes the times, bare and redirected.
    // (Of a directory whose own metadata the worker never changed, the
    // view shows the shared directory's times: docs/limitations.md.)
    "utimensat . 1000 0\nmkdir m 755\ntimes .",
    "utimensat . 1000 0\nsymlink a s\ntimes .",
    "utimensat . 1000 0\nlinkat cwd a cwd g 0\ntimes .",
    "utimensat e 1000 0\nopen 0 e/n WRONLY|CREAT 644\ntimes e",
    "utimensat e 1000 0\nrename e/x e/y\ntimes e",
    "utimensat e 1000 0\nunlink e/x\ntimes e",
    "utimensat e 1000 0\nrename e/x a\ntimes e",
    "utimensat . 1000 0\nutimensat e 1000 0\nrename e/x a\ntimes e\ntimes .",
    "utimensat . 1000 0\nunlink a\ntimes .",
];

e2e!(
    the_library_keeps_the_times_the_worker_set_on_a_directory,
    |dir| {
        assert_none(differing(&dir, TIMES_OF_A_DIRECTORY_THE_WORKER_SET, false));
    }
);

e2e!(
    the_supervisor_keeps_the_times_the_worker_set_on_a_directory,
    |dir| {
        assert_none(differing(&dir, TIMES_OF_A_DIRECTORY_THE_WORKER_SET, true));
    }
);
