//! Hostile review 9 (of review 8's F1 and F2 fixes): what the library's
//! names through `/proc/self/fd/N` reach from a thread whose descriptor
//! table is its own.

use crate::review8::{assert_none, differing_as, nobody_s_tree, NOBODY};
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
    c.args([mode, outside.to_str().unwrap()]);
    crate::redirect_exact::as_redirecting_worker(&mut c, &job, dir, WORKER);
    let redirected = run(&mut c, DEADLINE);
    let _ = std::fs::remove_dir(&outside);
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

/// Review 8's tree owned by [`NOBODY`] (shared `a`, an empty `d`, `e`
/// holding `e/x` and `e/s/y`; the test's directory too), with root's
/// `t` (sticky, 1777) holding root's `t/x` and nobody's `t/n`, and root's
/// `r` (755) holding nobody's `r/x`.
fn nobody_s_tree_with_root_s_dirs(d: &Path) {
    nobody_s_tree(d);
    let own = |p: &Path| std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(d.join("t")).unwrap();
    std::fs::set_permissions(d.join("t"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(d.join("t/x"), "X").unwrap();
    std::fs::write(d.join("t/n"), "N").unwrap();
    own(&d.join("t/n"));
    std::fs::create_dir(d.join("r")).unwrap();
    std::fs::write(d.join("r/x"), "X").unwrap();
    own(&d.join("r/x"));
}

/// A removal the view makes without a call (a shared name hidden) asks
/// what the kernel's may_delete asks of the directory as the view shows
/// it: its owner is the shared directory's (root's `t`, `r`), not the
/// worker's mirror's. Bare: EPERM (sticky, neither the entry's nor the
/// directory's owner), EACCES (no write permission on root's 755 `r`).
const REMOVALS_IN_A_DIRECTORY_OF_ANOTHER_OWNER: &[&str] = &[
    "unlink t/x\nstat t/x",
    "unlink t/n\nstat t/n",
    "unlink r/x\nstat r/x",
];

fn differing_as_nobody(dir: &TestDir, ops: &[&str], supervised: bool) -> Vec<String> {
    differing_as(dir, nobody_s_tree_with_root_s_dirs, NOBODY, ops, supervised)
}

e2e!(
    the_library_removes_no_name_from_another_owner_s_directory_bare_keeps,
    |dir| {
        assert_none(differing_as_nobody(
            &dir,
            REMOVALS_IN_A_DIRECTORY_OF_ANOTHER_OWNER,
            false,
        ));
    }
);

e2e!(
    the_supervisor_removes_no_name_from_another_owner_s_directory_bare_keeps,
    |dir| {
        assert_none(differing_as_nobody(
            &dir,
            REMOVALS_IN_A_DIRECTORY_OF_ANOTHER_OWNER,
            true,
        ));
    }
);

/// Errno orders and times near review 8's scripts, as nobody in a
/// directory the worker made read-only or set the times of.
const NEAR_REVIEW_8: &[&str] = &[
    "chmod e 555\nrmdir e/s/y",
    "chmod . 555\nunlink a\nstat a",
    "chmod . 555\nrmdir d\nstat d",
    "chmod e 555\nrename e/x a",
    "chmod e 555\nlinkat cwd e/x cwd e/z 0\nstat e/z",
    "chmod e 555\nopen 0 e/x WRONLY|TRUNC\nchmod e 755\nunlink e/x\nstat e/x\nstat e",
    "chmod e 2755\nopen 0 e/x WRONLY|APPEND\nstat e",
    "chmod e 2555\nopen 0 e/x WRONLY|APPEND\nstat e",
    "chmod e 1555\nopen 0 e/x WRONLY|APPEND\nstat e",
    "utimensat e 1000 0\nunlink e/s\ntimes e",
    "utimensat e 1000 0\nrmdir e/s\ntimes e",
    "utimensat e 1000 0\nrmdir e/x\ntimes e",
    "utimensat e 1000 0\nunlink e/x/\ntimes e",
    "utimensat e 1000 0\nchmod e 555\nunlink e/x\ntimes e",
    "utimensat e 1000 0\nrename e/s/y e/y\ntimes e\ntimes e/s",
];

e2e!(the_library_answers_near_review_8_as_bare, |dir| {
    assert_none(differing_as_nobody(&dir, NEAR_REVIEW_8, false));
});

e2e!(the_supervisor_answers_near_review_8_as_bare, |dir| {
    assert_none(differing_as_nobody(&dir, NEAR_REVIEW_8, true));
});

/// may_delete asks for write and search permission on the directory
/// before it looks at the victim's type: bare, `unlink` of a directory,
/// `rmdir` of a file or of a non-empty directory, and a rename onto a
/// name of the other type in a read-only directory are EACCES (measured
/// as nobody on Linux 6.18); a trailing slash's ENOTDIR and EISDIR come
/// before it. The view's own answers (EISDIR, ENOTDIR, ENOTEMPTY) came
/// first redirected and supervised (review 9, F2).
const TYPE_ANSWERS_IN_A_READ_ONLY_DIRECTORY: &[&str] = &[
    "chmod e 555\nunlink e/s",
    "chmod e 555\nrmdir e/x",
    "chmod . 555\nunlink e",
    "chmod e 555\nrmdir e/s",
    "chmod e 555\nrmdir e/x/",
    "chmod e 555\nunlink e/x/",
    "chmod e 555\nunlink e/s/",
    "chmod e 555\nrmdir e/s/..",
    "chmod e 555\nrename e/s e/x",
    "chmod e 555\nrename e/x e/s",
    "chmod . 555\nrename a e",
    "chmod . 555\nrename e d",
    "chmod . 555\nrename e/x d\nstat e/x",
    "chmod e 555\nrename a e/s",
    "chmod e 555\nrename a e/x/",
    "chmod . 555\nchmod e 555\nrename e/x e/x",
];

e2e!(
    the_library_refuses_a_removal_of_the_wrong_type_in_a_read_only_directory_as_bare,
    |dir| {
        assert_none(differing_as_nobody(
            &dir,
            TYPE_ANSWERS_IN_A_READ_ONLY_DIRECTORY,
            false,
        ));
    }
);

e2e!(
    the_supervisor_refuses_a_removal_of_the_wrong_type_in_a_read_only_directory_as_bare,
    |dir| {
        assert_none(differing_as_nobody(
            &dir,
            TYPE_ANSWERS_IN_A_READ_ONLY_DIRECTORY,
            true,
        ));
    }
);

/// [`nobody_s_tree_with_root_s_dirs`] with `e` and the job directory
/// read-only (555) in the shared tree itself.
fn nobody_s_read_only_tree(d: &Path) {
    nobody_s_tree_with_root_s_dirs(d);
    use std::os::unix::fs::PermissionsExt;
    for p in ["e", ""] {
        std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(0o555)).unwrap();
    }
}

/// A removal of a shared name the view hides, in a directory that is
/// read-only in the shared tree (no copy of it the worker changed): bare,
/// EACCES.
const REMOVALS_IN_A_SHARED_READ_ONLY_DIRECTORY: &[&str] = &[
    "unlink e/x\nstat e/x",
    "unlink a\nstat a",
    "rmdir d\nstat d",
    "rename e/x e/y\nstat e/x",
    "chmod . 755\nunlink a\nstat a",
    "chmod e 755\nunlink e/x\nstat e/x",
    "chmod . 755\nchmod . 555\nunlink a\nstat a",
    "open 0 e/x WRONLY|APPEND\nwrite 0 z\nclose 0\nstat e",
    "utimensat e 1000 0\nunlink e/x\ntimes e",
    // may_delete's EACCES before the victim's type (review 9, F2).
    "unlink e/s",
    "rmdir e/x",
    "rmdir e/s",
    "unlink d",
    "rename e/s e/x",
    "rename e/x e/s",
    "rename a d",
    "chmod e 755\nrmdir e/s\nunlink e/s",
];

fn differing_in_a_read_only_tree(dir: &TestDir, ops: &[&str], supervised: bool) -> Vec<String> {
    differing_as(dir, nobody_s_read_only_tree, NOBODY, ops, supervised)
}

e2e!(
    the_library_removes_no_name_from_a_shared_read_only_directory,
    |dir| {
        assert_none(differing_in_a_read_only_tree(
            &dir,
            REMOVALS_IN_A_SHARED_READ_ONLY_DIRECTORY,
            false,
        ));
    }
);

e2e!(
    the_supervisor_removes_no_name_from_a_shared_read_only_directory,
    |dir| {
        assert_none(differing_in_a_read_only_tree(
            &dir,
            REMOVALS_IN_A_SHARED_READ_ONLY_DIRECTORY,
            true,
        ));
    }
);

/// A directory whose mode (as the view shows it: its copy's once the
/// worker changed it) denies search stops a walk through it with EACCES,
/// and one that denies read cannot be listed (EACCES), as bare: the
/// kernel's may_lookup on every directory a name is walked through
/// (`.` and `..` too), and open's read permission of a directory.
/// Measured as nobody on Linux 6.18: `stat e` is ok with `e` mode 0,
/// `stat e/x`, `stat e/.`, `stat e/missing` are EACCES; `readdir e` is
/// EACCES with mode 0 or 300, ok with 600.
const WALKS_THROUGH_AN_UNSEARCHABLE_DIRECTORY: &[&str] = &[
    "chmod e 0\nstat e/x",
    "chmod e 600\nstat e/x",
    "chmod e 0\nstat e",
    "chmod e 0\nstat e/.",
    "chmod e 0\nstat e/",
    "chmod e 0\naccess e",
    "chmod e 0\nstat e/..",
    "chmod e 0\nstat e/missing",
    "chmod e 0\nlstat e/s/y",
    "chmod e/s 0\nstat e/s/y\nstat e/x",
    "chmod e 100\nstat e/x\nreaddir e",
    "chmod e 0\nreaddir e",
    "chmod e 300\nreaddir e",
    "chmod e 600\nreaddir e",
    "chmod e 0\naccess e/x",
    "chmod e 0\nopen 0 e/x RDONLY",
    "chmod e 0\nopen 0 e/x WRONLY|APPEND\nwrite 0 z",
    "chmod e 0\nopen 0 e/n WRONLY|CREAT 644",
    "chmod e 0\ntruncate e/x 0",
    "chmod e 0\nchmod e/x 600",
    "chmod e 0\nunlink e/x",
    "chmod e 0\nrmdir e/s",
    "chmod e 0\nrename e/x a",
    "chmod e 0\nrename a e/x",
    "chmod e 0\nmkdir e/n 755",
    "chmod e 0\nsymlink x e/l",
    "chmod e 0\nlink a e/l",
    "chmod e 0\nchdir e",
    "chmod e 0\nchmod e 755\nstat e/x\nreaddir e",
    "open 0 e/x WRONLY|APPEND\nwrite 0 z\nclose 0\nchmod e 0\nstat e/x\nopen 1 e/x RDONLY",
    "open 0 e/x WRONLY|APPEND\nwrite 0 z\nclose 0\nchmod e 300\nreaddir e\nstat e/x",
    "chmod d 0\nstat d/..\nreaddir d",
    "chmod . 600\nstat a",
    "chmod . 600\nstat .",
    "chmod . 300\nreaddir .\nstat a",
];

e2e!(
    the_library_walks_no_directory_the_worker_made_unsearchable,
    |dir| {
        assert_none(differing_as(
            &dir,
            crate::review8::nobody_s_tree,
            NOBODY,
            WALKS_THROUGH_AN_UNSEARCHABLE_DIRECTORY,
            false,
        ));
    }
);

/// Of [`WALKS_THROUGH_AN_UNSEARCHABLE_DIRECTORY`], what the supervisor
/// still answers otherwise: `chdir` into a directory whose copy denies
/// search (the leaf's own search permission, bare EACCES, is not asked),
/// and the job directory's own mode once the worker changed it (its
/// copy, the worker directory, is not in the table the walk asks).
const SUPERVISOR_UNSEARCHABLE_LEFT: &[&str] = &[
    "chmod e 0\nchdir e",
    "chmod . 600\nstat a",
    "chmod . 600\nstat .",
];

e2e!(
    the_supervisor_walks_no_directory_the_worker_made_unsearchable,
    |dir| {
        let ops: Vec<&str> = WALKS_THROUGH_AN_UNSEARCHABLE_DIRECTORY
            .iter()
            .copied()
            .filter(|s| !SUPERVISOR_UNSEARCHABLE_LEFT.contains(s))
            .collect();
        assert_none(differing_as(
            &dir,
            crate::review8::nobody_s_tree,
            NOBODY,
            &ops,
            true,
        ));
    }
);

e2e!(
    #[ignore = "supervisor: chdir's own search permission and the job directory's changed mode are not asked (docs/policy.md, Directory modes)"]
    the_supervisor_walks_no_job_directory_the_worker_made_unsearchable,
    |dir| {
        assert_none(differing_as(
            &dir,
            crate::review8::nobody_s_tree,
            NOBODY,
            SUPERVISOR_UNSEARCHABLE_LEFT,
            true,
        ));
    }
);
