//! Hostile review 4: the seccomp supervisor's walk of a redirecting
//! worker's names in its view (runner/src/seccomp/view.rs, notify.rs). Each
//! test runs the static executor (tests/fixtures/ops_exec.c) under
//! `mpaudit exec --action redirect` and checks the shared tree untouched
//! (and, where a bare run means something, the same results as bare).

use mpaudit_tests::*;
use std::path::Path;

/// Runs `script` (`{J}` stands for the job directory's absolute path, `{W}`
/// for the worker's directory) under the supervisor in `dir/job`, set up by
/// `setup`; the executor's output, and whether the shared tree changed.
fn supervised(dir: &TestDir, setup: impl Fn(&Path), script: &str) -> (String, bool) {
    for d in ["job", "workers", "logs", "merged"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    let job = dir.join("job");
    std::fs::create_dir_all(&job).unwrap();
    setup(&job);
    let wd = dir.join("workers").join("worker_0");
    let script = script
        .replace("{J}", job.to_str().unwrap())
        .replace("{W}", wd.to_str().unwrap());
    let script_file = dir.join("script.txt");
    std::fs::write(&script_file, &script).unwrap();
    let before = shared_snapshot(&job);
    let mut c = redirecting_runner(&job, &dir.path);
    c.arg("--")
        .arg(fixture("ops_exec_static"))
        .arg(&script_file);
    let out = run(&mut c, DEADLINE);
    let changed = shared_snapshot(&job) != before;
    (
        format!(
            "{script}\n{}\n{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        ),
        changed,
    )
}

// Finding 1: a write routed to a copy the worker redirected earlier is
// performed on the copy's path in the worker's directory without looking
// at its components; the worker's own directory is open to the program's
// writes, so it can put a symlink to the shared directory where the
// copy's parent was (`rename W/d W/dold; symlink J/d W/d`): the next
// `open d/f O_TRUNC` is routed to `W/d/f`, which the kernel follows into
// the shared `d/f` (truncated and written).
e2e!(
    a_redirected_write_does_not_follow_a_symlink_put_over_the_copy_s_parent,
    |dir| {
        let (out, changed) = supervised(
            &dir,
            |j| {
                std::fs::create_dir(j.join("d")).unwrap();
                std::fs::write(j.join("d/f"), "shared\n").unwrap();
            },
            "open 0 d/f WRONLY|APPEND\nwrite 0 one\nclose 0\n\
             rename {W}/d {W}/dold 0\nsymlink {J}/d {W}/d\n\
             open 1 d/f WRONLY|TRUNC\nwrite 1 pwned\nclose 1\n",
        );
        assert!(!changed, "the shared tree changed:\n{out}");
    }
);

// Finding 2: a shared directory renamed under redirect is copied up into
// the worker's copy (copy_dir_up) when that copy exists already; each
// entry is written with `std::fs::copy`, which follows a symlink the
// program put there (its own directory is writable to it): the shared
// `e/x` was copied over the shared file `a` the symlink names.
e2e!(
    a_directory_copy_up_does_not_follow_a_symlink_in_the_worker_s_copy,
    |dir| {
        let (out, changed) = supervised(
            &dir,
            |j| {
                std::fs::create_dir(j.join("e")).unwrap();
                std::fs::write(j.join("e/x"), "X\n").unwrap();
                std::fs::write(j.join("a"), "A\n").unwrap();
            },
            "mkdir {W} 700\nmkdir {W}/e 755\nsymlink {J}/a {W}/e/x\nrename e e2 0\n",
        );
        assert!(!changed, "the shared tree changed:\n{out}");
    }
);

// Finding 2, the directory case: copy_dir_up recurses into an entry the
// program made a symlink to a shared directory, sets that directory's mode
// and copies the entries into it.
e2e!(
    a_directory_copy_up_does_not_recurse_through_a_symlink_in_the_worker_s_copy,
    |dir| {
        let (out, changed) = supervised(
            &dir,
            |j| {
                std::fs::create_dir_all(j.join("e/sub")).unwrap();
                std::fs::write(j.join("e/sub/y"), "Y\n").unwrap();
                std::fs::create_dir(j.join("t")).unwrap();
                std::fs::write(j.join("t/y"), "T\n").unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(j.join("e/sub"), std::fs::Permissions::from_mode(0o700))
                    .unwrap();
            },
            "mkdir {W} 700\nmkdir {W}/e 755\nsymlink {J}/t {W}/e/sub\nrename e e2 0\n",
        );
        assert!(!changed, "the shared tree changed:\n{out}");
    }
);
