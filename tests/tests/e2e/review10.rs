//! Hostile review 10 (of the renamed directory's fill below a held
//! descriptor, the node copy-ups, and the view's search permission).

use mpaudit_tests::*;
use std::path::Path;
use std::process::Command;

/// Shared `a`, `b` and an empty `e`.
fn tree(d: &Path) {
    std::fs::write(d.join("a"), "A").unwrap();
    std::fs::write(d.join("b"), "B").unwrap();
    std::fs::create_dir(d.join("e")).unwrap();
}

/// `script` run under the library's redirect (worker 1) over [`tree`]:
/// its output, after checking that the shared tree is as it was.
fn redirected_leaves_the_shared_tree(dir: &TestDir, setup: fn(&Path), script: &str) -> String {
    for d in ["job", "workers", "logs"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    let job = dir.join("job");
    std::fs::create_dir_all(&job).unwrap();
    setup(&job);
    let script_file = dir.join("script.txt");
    std::fs::write(&script_file, script).unwrap();
    let before = shared_snapshot(&job);
    let mut c = Command::new(fixture("ops_exec"));
    c.arg(&script_file);
    crate::redirect_exact::as_redirecting_worker(&mut c, &job, dir, 1);
    let out = run(&mut c, DEADLINE);
    assert_eq!(
        shared_snapshot(&job),
        before,
        "the shared tree changed under redirect for\n{script}\n{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// The worker's directory (worker 1), as the executor spells it.
const W: &str = "@/../workers/worker_1";

// Escape: the program may write its own worker directory. A symlink it
// put where a first redirect's copy goes (the table has no entry for the
// name) was taken for "an earlier copy" (copy_original's EEXIST), and the
// call, given /proc/thread-self/fd/N/<leaf>, followed it into the shared
// tree: an append wrote the shared `b`, an O_CREAT of a new name wrote
// it, a chmod of a shared directory chmodded it (twice: the seeding's
// fchmodat by name, then the call). The supervisor fails such a call
// with ELOOP (emulate.rs prepare_target), as the library now does.
e2e!(
    a_symlink_the_program_puts_at_a_first_copy_s_place_leads_no_write_out,
    |dir| {
        // (The first write makes the worker directory.)
        let pre = "open 0 c WRONLY|CREAT 644\nclose 0\n";
        for op in [
            "open 0 a WRONLY|APPEND\nwrite 0 Z",
            "open 0 a WRONLY|TRUNC\nwrite 0 Z",
            "open 0 a RDWR\nwrite 0 Z",
            "truncate a 0",
            "chmod a 711",
            "chown a 1",
            "utimensat a 1000 0",
            "open 0 n WRONLY|CREAT 644\nwrite 0 Z",
            "chmod e 711",
            "chown e 1",
            "utimensat e 1000 0",
        ] {
            let leaf = op.split(' ').nth(if op.starts_with("open") { 2 } else { 1 });
            let leaf = leaf.unwrap();
            let script = format!("{pre}symlink @/b {W}/{leaf}\n{op}\n");
            let out = redirected_leaves_the_shared_tree(&dir, tree, &script);
            assert!(out.contains(&format!("symlink @/b {W}/{leaf} -> ok")), "{out}");
        }
    }
);
