//! Hostile review 7: the supervisor's names through the task's descriptor
//! links (commits 3a62e1c, 5d6aa9c, b148900, 2865b6c): notify.rs
//! `resolve_name` and `perform` (`beneath::task_descriptor`), linkfd.rs
//! `named_by_the_worker`, reads.rs `descriptor_link_in_view`, view.rs
//! `TaskView::follow`, the early EINVAL/ENOENT of `access`. Bare vs
//! supervised, as redirect_exact::same_supervised_ops (which also checks
//! that the shared tree is untouched).

use crate::redirect_exact::{same_supervised_ops, sweep};
use mpaudit_tests::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Shared `a`, `b`, a file named `#<its inode> (deleted)` with the
/// symlink `s` to it, a file named `x (deleted)` with the symlink `l` to
/// it, a directory `d (deleted)` holding `f` with the symlink `e` to it
/// (the executor's names cannot hold a space: the symlinks spell them).
fn tree(d: &Path) {
    std::fs::write(d.join("a"), "A").unwrap();
    std::fs::write(d.join("b"), "B").unwrap();
    std::fs::write(d.join("t"), "T").unwrap();
    let ino = std::fs::metadata(d.join("t")).unwrap().ino();
    let odd = format!("#{ino} (deleted)");
    std::fs::rename(d.join("t"), d.join(&odd)).unwrap();
    std::os::unix::fs::symlink(&odd, d.join("s")).unwrap();
    std::fs::write(d.join("x (deleted)"), "X").unwrap();
    std::os::unix::fs::symlink("x (deleted)", d.join("l")).unwrap();
    std::fs::create_dir(d.join("d (deleted)")).unwrap();
    std::fs::write(d.join("d (deleted)/f"), "F").unwrap();
    std::os::unix::fs::symlink("d (deleted)", d.join("e")).unwrap();
}

fn check(dir: &TestDir, ops: &[&str]) {
    let failed = sweep(&[], ops, |script| same_supervised_ops(dir, tree, script));
    assert!(
        failed.is_empty(),
        "{} differ:\n{}",
        failed.len(),
        failed.join("\n-----\n")
    );
}

// Finding 1 (SECURITY, new in b148900): linkfd.rs `named_by_the_worker`
// takes a descriptor's file whose link text is `<dir>/#<its inode>
// (deleted)` for the worker's O_TMPFILE, whatever its link count. A
// shared file literally named `#<ino> (deleted)` (nlink 1, never removed)
// is then `Linkable::InPlace`: `linkat(/proc/self/fd/N, k, FOLLOW)` or
// `linkat(N, "", k, AT_EMPTY_PATH)` hard-links the SHARED inode as the
// worker's `k` in its directory, and a write to `k` changes the shared
// file (the run says ok). Bare: the shared file is written too, but in
// the worker's view it must stay a copy.
e2e!(
    the_supervisor_links_no_shared_file_named_like_a_lost_tmpfile_in_place,
    |dir| {
        check(
            &dir,
            &[
                "open 0 s RDONLY\nlinkat cwd %0 cwd k FOLLOW\nopen 1 k WRONLY|APPEND\nwrite 1 Z\nclose 1\nopen 2 s RDONLY\nread 2 9",
                "open 0 s RDONLY\nlinkat 0 \"\" cwd k EMPTY\nopen 1 k WRONLY|APPEND\nwrite 1 Z\nclose 1\nopen 2 s RDONLY\nread 2 9",
            ],
        );
    }
);

// Finding 2: view.rs `TaskView::follow` (the `!last && text.ends_with("
// (deleted)")` rule, and the older `abs.starts_with("/proc/")` one below
// it) judges a descriptor link by its text: a shared directory literally
// named `d (deleted)` is taken for a removed one, and every name below
// its descriptor link is ENOENT (bare: the directory's entries).
e2e!(
    the_supervisor_walks_below_a_descriptor_of_a_directory_named_deleted_as_bare,
    |dir| {
        check(
            &dir,
            &[
                "open 0 e RDONLY|DIRECTORY\nstat %0/f",
                "open 0 e RDONLY|DIRECTORY\nopen 1 %0/f WRONLY|APPEND\nwrite 1 Z\nclose 1\nopen 2 e/f RDONLY\nread 2 9",
                "open 0 e RDONLY|DIRECTORY\nunlink %0/f\nstat e/f",
                "open 0 e RDONLY|DIRECTORY\nopen 1 %0/g WRONLY|CREAT 644\nstat e/g",
                "open 0 e RDONLY|DIRECTORY\nrename %0/f %0/g\nstat e/g",
            ],
        );
    }
);

// Finding 3: an empty name answers ENOENT before the kernel's check of
// the call's flags (notify.rs `access`, the early
// `failing::an_empty_name_fails` return; failing_anyway's first rule):
// unlinkat and linkat refuse unknown flags with EINVAL before they look
// at a name.
e2e!(
    the_supervisor_refuses_bad_at_flags_before_an_empty_name_as_bare,
    |dir| {
        check(
            &dir,
            &[
                "unlinkat cwd \"\" FOLLOW",
                "linkat cwd \"\" cwd k REMOVEDIR",
                "linkat cwd a cwd \"\" REMOVEDIR",
            ],
        );
    }
);

// Regression sweep (passes): the new rules on names that are, or pass
// through, the task's descriptor links, on the shared files above: a
// shared file named `x (deleted)` is still routed to a copy (never
// reopened in place through beneath::task_descriptor), a final magic
// link is /proc's entry only for calls the kernel does not follow it
// for, and readlink of the links maps the worker's copies.
e2e!(
    the_supervisor_keeps_the_shared_tree_through_descriptor_links,
    |dir| {
        check(
            &dir,
            &[
                "open 0 l RDONLY\nopen 1 %0 RDWR\nwrite 1 Z\nclose 1\nopen 2 l RDONLY\nread 2 9",
                "open 0 l RDONLY\ntruncate %0 0\nopen 2 l RDONLY\nread 2 9",
                "open 0 l RDONLY\nchmod %0 600\nstat l",
                "open 0 l RDONLY\nopen 1 %0 WRONLY|TRUNC\nclose 1\nstat l",
                "open 0 s RDONLY\nopen 1 %0 WRONLY|APPEND\nwrite 1 Z\nclose 1\nopen 2 s RDONLY\nread 2 9",
                "open 0 l RDONLY\nreadlink %0",
                "open 0 a WRONLY|APPEND\nreadlink %0",
                "open 0 a WRONLY|APPEND\nunlink a\nreadlink %0",
                "open 0 e RDONLY|DIRECTORY\nreadlink %0",
                "open 0 a RDONLY\nlinkat cwd %0 cwd k\nstat k",
                "open 0 a RDONLY\nlink %0 k\nstat k",
                "open 0 a RDONLY\nunlink a\nopen 1 %0 RDWR\nwrite 1 Z\nclose 1\nread 0 9",
                "open 0 a RDONLY\nunlink a\nreadlink %0",
                "open 0 a RDONLY\nlchown %0 1234\nstat a",
                "open 0 a RDONLY\nutimensat %0 1000 NOFOLLOW\ntimes a",
                "open 0 a RDONLY\nfchownat %0 1234 NOFOLLOW\nstat a",
                "open 0 a RDONLY\nchown %0 1234\nstat a",
                "open 0 a RDONLY\nopen 1 %0 WRONLY|CREAT 644\nwrite 1 Z\nclose 1\nread 0 9",
                "open 0 a RDONLY\nopen 1 %0 WRONLY|CREAT|EXCL 644",
                "open 0 a RDONLY\nrename %0 k\nstat a",
                "open 0 a RDONLY\nopen 1 k WRONLY|CREAT 644\nrename k %0\nstat a",
                "open 0 a RDONLY\nopen 1 /dev/fd/3 WRONLY|APPEND\nwrite 1 Z\nclose 1\nread 0 9",
                "open 0 a RDONLY\nopen 1 /proc/thread-self/fd/3 WRONLY|APPEND\nwrite 1 Z\nclose 1\nread 0 9",
                "open 0 a RDONLY\ntruncate /dev/fd/3 0\nread 0 9",
                "open 0 a RDONLY\nunlink /dev/fd/3\nstat a",
                "open 0 a RDONLY\nmkdir %0 755",
                "open 0 a RDONLY\nsymlink a %0",
                "open 0 a RDONLY\nunlink %0\nstat a",
                "open 0 a RDONLY\nopen 1 %0 WRONLY|NOFOLLOW",
                "open 0 a RDONLY\nopen 1 %0/ WRONLY",
                "open 0 a WRONLY|APPEND\nunlink a\nlinkat cwd %0 cwd k FOLLOW\nopen 1 k RDONLY\nread 1 9",
                "open 0 a RDONLY\nunlink a\nlinkat cwd %0 cwd k FOLLOW\nopen 1 k WRONLY|APPEND\nwrite 1 Z",
                "open 0 a RDONLY\nunlink a\nlinkat 0 \"\" cwd k EMPTY\nopen 1 k WRONLY|APPEND\nwrite 1 Z",
                "open 0 @ RDWR|TMPFILE 600\nwrite 0 Q\nlinkat cwd %0 cwd k FOLLOW\nunlink k\nlinkat cwd %0 cwd m FOLLOW\nopen 1 m RDONLY\nread 1 9",
                "open 0 a RDONLY\nopen 1 \"\" WRONLY|TMPFILE",
                "open 1 \"\" RDONLY|TMPFILE",
                "open 1 a RDONLY|TMPFILE",
            ],
        );
    }
);

/// Shared `a`, `d/x`, the symlink `s -> d`, and `o -> ../<outside>`, a
/// symlink outside the job directory back to it.
fn tree3(d: &Path) {
    std::fs::write(d.join("a"), "A").unwrap();
    std::fs::create_dir(d.join("d")).unwrap();
    std::fs::write(d.join("d/x"), "X").unwrap();
    std::os::unix::fs::symlink("d", d.join("s")).unwrap();
    let name = format!("outside-{}", d.file_name().unwrap().to_str().unwrap());
    let out = d.parent().unwrap().join(&name);
    let _ = std::fs::remove_file(&out);
    std::os::unix::fs::symlink(d, &out).unwrap();
    std::os::unix::fs::symlink(format!("../{name}"), d.join("o")).unwrap();
}

// Regression sweep (passes): an O_PATH descriptor of a symlink (names
// below its link are ENOTDIR), and links of the worker's own file (a
// source 2865b6c no longer counts as a change of the worker directory)
// to new names reaching the job directory through a symlink outside it,
// the task's cwd link, or a shared directory's descriptor link.
e2e!(
    the_supervisor_keeps_the_shared_tree_linking_the_worker_s_files_through_links,
    |dir| {
        let mut failed = Vec::new();
        for op in [
            "open 0 s PATH|NOFOLLOW\nstat %0/x",
            "open 0 s PATH|NOFOLLOW\nopen 1 %0/x RDONLY",
            "open 0 s PATH|NOFOLLOW\nopen 1 %0/k WRONLY|CREAT 644\nstat d/k",
            "open 0 s PATH|NOFOLLOW\nunlink %0/x\nstat d/x",
            "open 0 s PATH|NOFOLLOW\nstat %0",
            "open 0 s PATH|NOFOLLOW\nopen 1 %0 RDONLY|DIRECTORY",
            "open 3 m WRONLY|CREAT 644\nclose 3\nlink m o/k\nstat k",
            "open 3 m WRONLY|CREAT 644\nclose 3\nlink m o/d/k\nstat d/k",
            "open 3 m WRONLY|CREAT 644\nopen 0 d RDONLY|DIRECTORY\nlinkat 3 \"\" cwd %0/k EMPTY\nstat d/k",
            "open 3 m WRONLY|CREAT 644\nopen 0 o RDONLY|DIRECTORY\nlinkat 3 \"\" cwd %0/k EMPTY\nstat k",
            "open 3 m WRONLY|CREAT 644\nopen 0 o RDONLY|DIRECTORY\nlinkat 3 \"\" 0 k EMPTY\nstat k",
            "open 3 m WRONLY|CREAT 644\nlinkat cwd m cwd ^/k\nstat k",
            "open 3 m WRONLY|CREAT 644\nlinkat cwd %3 cwd o/k FOLLOW\nstat k",
            "open 3 m WRONLY|CREAT 644\nlinkat cwd %3 cwd %3 FOLLOW",
            "open 3 m WRONLY|CREAT 644\nlink m %3",
        ] {
            if let Err(e) = same_supervised_ops(&dir, tree3, &format!("{op}\n")) {
                failed.push(e);
            }
        }
        assert!(
            failed.is_empty(),
            "{} differ:\n{}",
            failed.len(),
            failed.join("\n-----\n")
        );
    }
);

// Finding 1 under `deny` (the same cause, linkfd.rs `named_by_the_worker`
// making the source `Linkable::InPlace`): a hard link of the shared file
// named `#<ino> (deleted)` to a scratch name (/tmp) is `allowed`, and a
// write through it changes the shared file in a run that reports no
// rogue write (exit 0). policy.md: under deny a hard link of a job file
// fails with EACCES wherever its new name is, as `a`'s and `x
// (deleted)`'s do.
e2e!(
    the_supervisor_denies_a_hard_link_of_a_job_file_named_deleted,
    |dir| {
        let mut failed = Vec::new();
        for (i, src) in ["a", "s", "l"].iter().enumerate() {
            let job = dir.join(&format!("job{i}"));
            std::fs::create_dir_all(&job).unwrap();
            tree(&job);
            let before = shared_snapshot(&job);
            // A scratch name (/tmp): its write is `allowed`.
            let k = std::path::PathBuf::from(format!(
                "/tmp/mpaudit-review7-{}-{i}",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&k);
            let script = format!(
                "open 0 {src} RDONLY\nlinkat cwd %0 cwd {k} FOLLOW\nopen 1 {k} WRONLY|APPEND\nwrite 1 Z\nclose 1\n",
                k = k.display()
            );
            let script_file = dir.join(&format!("script{i}.txt"));
            std::fs::write(&script_file, &script).unwrap();
            let mut c = std::process::Command::new(&artifacts().runner);
            c.current_dir(&job)
                .args(["exec", "-q", "--action", "deny", "--workers-dir"])
                .arg(dir.join(&format!("workers{i}")))
                .arg("--log-dir")
                .arg(dir.join(&format!("logs{i}")))
                .env_remove("LD_PRELOAD")
                .env_remove("MPAUDIT_WORKER")
                .arg("--")
                .arg(fixture("ops_exec_static"))
                .arg(&script_file);
            for v in mpaudit_core::launcher::RANK_VARIABLES {
                c.env_remove(v);
            }
            let out = run(&mut c, DEADLINE);
            let _ = std::fs::remove_file(&k);
            let said = stdout(&out);
            if !said.contains("FOLLOW -> err EACCES") || shared_snapshot(&job) != before {
                failed.push(format!("{script}{said}"));
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n-----\n"));
    }
);

// Finding 4 (SECURITY, the library: interpose/src/view.rs `nameless`
// and `named_by_the_worker`, the rule linkfd.rs copied; older than the
// reviewed commits): a read-only descriptor of a shared file named
// `#<ino> (deleted)` counts as an O_TMPFILE's, so the walk of
// /proc/self/fd/N ends at the link and the call is made on the shared
// file: `open(/proc/self/fd/N, O_WRONLY|O_APPEND)` + write, `truncate`,
// `chmod` and `linkat(.., AT_SYMLINK_FOLLOW)` + write all change it under
// redirect. (The runs' outputs are not compared with bare: the listing
// shows the name, which holds the inode number.) `x (deleted)` and
// `d (deleted)/f` stay routed.
e2e!(
    the_library_writes_no_shared_file_named_like_a_lost_tmpfile_through_its_descriptor_link,
    |dir| {
        let mut failed = Vec::new();
        for (i, op) in [
        "open 0 s RDONLY\nopen 1 %0 WRONLY|APPEND\nwrite 1 Z\nclose 1\nopen 2 s RDONLY\nread 2 9",
        "open 0 s RDONLY\ntruncate %0 0\nopen 2 s RDONLY\nread 2 9",
        "open 0 s RDONLY\nchmod %0 600\nstat s",
        "open 0 s RDONLY\nlinkat cwd %0 cwd k FOLLOW\nopen 1 k WRONLY|APPEND\nwrite 1 Z\nclose 1\nopen 2 s RDONLY\nread 2 9",
        "open 0 l RDONLY\nopen 1 %0 WRONLY|APPEND\nwrite 1 Z\nclose 1\nopen 2 l RDONLY\nread 2 9",
        "open 0 e RDONLY|DIRECTORY\nopen 1 %0/f WRONLY|APPEND\nwrite 1 Z\nclose 1\nopen 2 e/f RDONLY\nread 2 9",
    ]
    .iter()
    .enumerate()
    {
        let job = dir.join(&format!("job{i}"));
        std::fs::create_dir_all(&job).unwrap();
        tree(&job);
        let before = shared_snapshot(&job);
        let script_file = dir.join(&format!("script{i}.txt"));
        std::fs::write(&script_file, format!("{op}\n")).unwrap();
        let mut c = std::process::Command::new(fixture("ops_exec"));
        c.arg(&script_file)
            .current_dir(&job)
            .env("LD_PRELOAD", &artifacts().lib)
            .env("MPAUDIT_ACTION", "redirect")
            .env("MPAUDIT_JOB_DIR", &job)
            .env("MPAUDIT_WORKERS_DIR", dir.join(&format!("workers{i}")))
            .env("MPAUDIT_LOG_DIR", dir.join(&format!("logs{i}")))
            .env("MPAUDIT_WORKER", "0")
            .env_remove("MPAUDIT_FORK_WORKERS")
            .env_remove("MPAUDIT_ROOT_PID");
        for v in mpaudit_core::launcher::RANK_VARIABLES {
            c.env_remove(v);
        }
        let out = run(&mut c, DEADLINE);
        if shared_snapshot(&job) != before {
            failed.push(format!("{op}\n{}", stdout(&out)));
        }
    }
        assert!(
            failed.is_empty(),
            "{} changed the shared tree:\n{}",
            failed.len(),
            failed.join("\n-----\n")
        );
    }
);
