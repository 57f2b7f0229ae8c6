//! Hostile review 6: the supervisor's calls below a worker directory made
//! through a held parent (runner/src/seccomp/beneath.rs, notify.rs
//! `perform`, emulate.rs `open` and `prepare_target`; commit 8e4d612).
//! Bare vs supervised, as redirect_exact::same_supervised_ops, with the
//! executor's `times`/`ltimes` (mtime and owner), `chown`/`lchown`,
//! `fchownat`, `utimensat` and `fchmodat2` operations and its `PATH` open
//! flag.

use crate::redirect_exact::{same_supervised_ops, sweep};
use mpaudit_tests::*;
use std::path::Path;

/// Shared `a`, `b`, an empty `d`, `e` holding `e/x`.
fn tree(d: &Path) {
    std::fs::create_dir(d.join("d")).unwrap();
    std::fs::write(d.join("a"), "A").unwrap();
    std::fs::write(d.join("b"), "B").unwrap();
    std::fs::create_dir(d.join("e")).unwrap();
    std::fs::write(d.join("e/x"), "X").unwrap();
}

/// The prelude making the worker's own `a`, `d/f` and `m`.
const PRELUDE: &str = "open 3 a WRONLY|APPEND\nwrite 3 x\nclose 3\n\
    open 3 d/f WRONLY|CREAT 644\nclose 3\nmkdir m 755\n";

/// Each of `ops` alone and after [`PRELUDE`], bare vs supervised: the
/// scripts whose runs differ, with how.
fn check(dir: &TestDir, ops: &[&str]) {
    let failed = sweep(&[PRELUDE], ops, |script| {
        same_supervised_ops(dir, tree, script)
    });
    assert!(
        failed.is_empty(),
        "{} differ:\n{}",
        failed.len(),
        failed.join("\n-----\n")
    );
}

/// [`check`] for the preloaded library: bare vs redirected.
fn check_library(dir: &TestDir, ops: &[&str]) {
    let failed = sweep(&[PRELUDE], ops, |script| {
        crate::redirect_exact::same_ops_or_err(dir, tree, script)
    });
    assert!(
        failed.is_empty(),
        "{} differ:\n{}",
        failed.len(),
        failed.join("\n-----\n")
    );
}

// Finding 1 (new in 8e4d612): a metadata change that does not follow a
// final symlink (utimensat AT_SYMLINK_NOFOLLOW, lchown, fchownat
// AT_SYMLINK_NOFOLLOW) of a routed name with a trailing slash is made on
// /proc/thread-self/fd/N of the leaf's O_PATH descriptor (`leaf_followed`
// is true for the slash) with the caller's NOFOLLOW kept: it acts on the
// magic link itself, answers ok, and the directory keeps its times and
// owner (bare: changed). notify.rs `perform` (through_leaf only adds
// AT_SYMLINK_FOLLOW for linkat).
e2e!(
    the_supervisor_changes_a_directory_named_with_a_slash_without_following_as_bare,
    |dir| {
        check(
            &dir,
            &[
                "utimensat d/ 1000 NOFOLLOW\ntimes d",
                "lchown d/ 1234\ntimes d",
                "fchownat d/ 1234 NOFOLLOW\ntimes d",
                "mkdir n 755\nutimensat n/ 1000 NOFOLLOW\ntimes n",
                "mkdir n 755\nlchown n/ 1234\ntimes n",
                "symlink d s\nutimensat s/ 1000 NOFOLLOW\ntimes d\nltimes s",
                "symlink d s\nlchown s/ 1234\ntimes d\nltimes s",
                "chdir d\nutimensat ./ 1000 NOFOLLOW\ntimes .",
            ],
        );
    }
);

// Finding 2 (new in 8e4d612): a metadata change of the job directory
// spelled with a trailing slash (`@/`, `./`: the copy being the worker
// directory itself plus "/") fails with ENAMETOOLONG: prepare_target's
// `comps.split_last()` is None for no component (emulate.rs). Before:
// `chmod @/` and `lchown @/` answered ok. Bare: ok, the directory changed.
// Fixed; utimensat too since the manifest, made in the worker directory
// after the call, puts the directory's times back (redirects.rs).
e2e!(
    the_supervisor_changes_the_job_directory_named_with_a_slash_as_bare,
    |dir| {
        check(
            &dir,
            &[
                "chmod @/ 700\nstat @/",
                "lchown @/ 1234\ntimes @",
                "utimensat @/ 1000 NOFOLLOW\ntimes @",
                "utimensat @/ 1000 0\ntimes @",
                "chmod ./ 700\nstat .",
            ],
        );
    }
);

// Finding 3 (before 8e4d612 too): a metadata change of the job directory
// itself (`.` from it, or its absolute name) is ENAMETOOLONG:
// prepare_target refuses a target no longer than the worker directory
// (emulate.rs, `target.len() <= worker_dir.len()`). Fixed, as finding 2.
e2e!(
    the_supervisor_changes_the_job_directory_itself_as_bare,
    |dir| {
        check(
            &dir,
            &[
                "chmod . 700\nstat .",
                "chmod @ 700\nstat @",
                "utimensat . 1000 0\ntimes .",
                "fchownat . 1234 NOFOLLOW\ntimes .",
                "chmod d/.. 700\nstat .",
                "utimensat @/. 1000 0\ntimes .",
            ],
        );
    }
);

// Finding 4: O_PATH opens of the worker's names. O_PATH drops O_CREAT and
// O_EXCL (the kernel keeps only O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC), so
// `open(s, O_PATH|O_CREAT|O_EXCL)` of the worker's symlink to `a` opens
// `a` bare; the supervisor says EEXIST (8e4d612's `below_worker` check in
// emulate::open; EACCES before). `O_PATH|O_NOFOLLOW` of the worker's
// symlink is EBADF, with O_CREAT EACCES, and `O_PATH|O_CREAT` of a
// missing name EACCES (bare ENOENT): before 8e4d612 too.
// Fixed: `open(2)` keeps only O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC beside
// O_PATH (`build_open_how`); both the library and the supervisor judged
// such an open by its other flags, as a write (`OpenIntent::from_flags`).
// Under the supervisor, O_PATH descriptors of the worker's files are given
// opened read-only: SECCOMP_IOCTL_NOTIF_ADDFD takes no O_PATH descriptor
// (EBADF, which the task got), emulate::passable.
const O_PATH_OPENS: &[&str] = &[
    "symlink a s\nopen 0 s PATH|CREAT|EXCL 644\nfstat 0",
    "symlink d s\nopen 0 s PATH|NOFOLLOW|DIRECTORY\nfstat 0",
    "symlink d s\nopen 0 s PATH|DIRECTORY\nfstat 0",
    "open 0 n PATH|CREAT 644\nstat n",
    "open 0 a PATH|WRONLY|TRUNC\nfstat 0\nstat a",
    "open 0 a PATH|CREAT|EXCL 644\nfstat 0",
    "open 0 b PATH|RDWR|TRUNC\nfstat 0\nread 0 1",
    "open 0 d PATH|WRONLY\nfstat 0",
    "open 0 e/x PATH|TMPFILE|RDWR 600\nfstat 0",
    "open 0 d/f PATH|NOFOLLOW\nfstat 0",
    "open 0 a/ PATH|CREAT 644",
    "open 0 m/ PATH|TRUNC\nfstat 0",
    // An O_PATH descriptor follows the file where the worker's view
    // takes it: removed (nlink 0; library differential seed 7) or
    // written (the copy-up).
    "open 2 e/x PATH\nunlink e/x\nfstat 2",
    "open 2 b PATH\nopen 3 b WRONLY|APPEND\nwrite 3 zz\nclose 3\nfstat 2",
    "open 2 e PATH|DIRECTORY\nrename e n\nfstat 2\nopenat 3 2 x RDONLY\nread 3 9",
];

/// `O_PATH|O_NOFOLLOW` opens of the worker's own symlink (a descriptor of
/// the symlink itself, which nothing but `O_PATH` opens) and `O_PATH`
/// opens of its FIFO or device (which open no other way without side
/// effects).
const O_PATH_OF_A_WORKER_S_SYMLINK: &[&str] = &[
    "symlink a s\nopen 0 s PATH|NOFOLLOW\nfstat 0",
    "symlink a s\nopen 0 s PATH|NOFOLLOW|CREAT 644\nfstat 0",
    "symlink zz s\nopen 0 s PATH|NOFOLLOW\nfstat 0",
    "mkfifo s 644\nopen 0 s PATH\nfstat 0",
    "mknod s 020644\nopen 0 s PATH|NOFOLLOW\nfstat 0",
];

e2e!(the_supervisor_opens_o_path_as_bare, |dir| {
    check(&dir, O_PATH_OPENS);
});

// Not emulated (docs/policy.md): no O_PATH descriptor passes through
// ADDFD, and a symlink opens no other way. The open fails closed with
// EACCES (it was EBADF, from the ioctl) and nothing shared changes.
e2e!(
    the_supervisor_refuses_an_o_path_open_of_the_worker_s_own_symlink_with_eacces,
    |dir| {
        for script in O_PATH_OF_A_WORKER_S_SYMLINK {
            let e = same_supervised_ops(&dir, tree, script)
                .expect_err("ADDFD passes no O_PATH descriptor");
            let supervised = e.split("\nbare:").next().unwrap();
            assert!(
                supervised.contains("\n1 open 0 s PATH")
                    && supervised.contains(" -> err EACCES\n2 fstat 0 -> err EBADF"),
                "{e}"
            );
        }
    }
);

// The library refused a metadata change of the job directory itself with
// EACCES (redirect.rs prepare_target: no leaf below the worker
// directory), and its manifest, made after the call, changed the times.
e2e!(
    the_library_changes_the_job_directory_itself_as_bare,
    |dir| {
        let ops = [
            "utimensat @/ 1000 NOFOLLOW\ntimes @",
            "utimensat @/ 1000 0\ntimes @",
            "utimensat . 1000 0\ntimes .",
            "utimensat @/. 1000 0\ntimes .",
            "chmod . 700\nstat .",
            "fchownat . 1234 NOFOLLOW\ntimes .",
        ];
        check_library(&dir, &ops);
    }
);

e2e!(the_library_opens_o_path_as_bare, |dir| {
    let all: Vec<&str> = O_PATH_OPENS
        .iter()
        .chain(O_PATH_OF_A_WORKER_S_SYMLINK)
        .copied()
        .collect();
    check_library(&dir, &all);
});

// Regression (passes): calls on routed names that 8e4d612 makes through a
// held parent or the leaf's O_PATH descriptor: the worker's own symlinks
// (relative, absolute, dangling, looping) changed with and without
// following, linked with and without AT_SYMLINK_FOLLOW, opened
// O_CREAT|O_EXCL; `.` and trailing-slash leaves; mknod variants;
// directory renames and exchanges whose copies hold routed
// subdirectories. `fchmodat2 s NOFOLLOW` of a worker's symlink was ok
// (the link's target chmod'ed; bare EOPNOTSUPP) before 8e4d612.
/// Calls on routed names below the worker directory and on the job
/// directory itself (`@`, `.`).
const BELOW_WORKER_OPS: &[&str] = &[
    "utimensat a/ 1000 NOFOLLOW",
    "symlink d s\nlchown s 1234\nltimes s\ntimes d",
    "symlink a s\nutimensat s 1000 NOFOLLOW\nltimes s\ntimes a",
    "symlink a s\nutimensat s 1000 0\nltimes s\ntimes a",
    "symlink a s\nfchownat s 1234 NOFOLLOW\nltimes s\ntimes a",
    "symlink a s\nchown s 1234\nltimes s\ntimes a",
    "symlink a s\nfchmodat2 s 600 NOFOLLOW\nlstat s\nstat a",
    "symlink a s\nfchmodat2 s 600 0\nlstat s\nstat a",
    "symlink /nonexistent s\nchmod s 600",
    "symlink zz s\ntruncate s 0",
    "symlink s s\nchmod s 600",
    "symlink s s\nopen 0 s/x WRONLY|CREAT 644",
    "symlink @/a s\ntruncate s 0\nstat a",
    "symlink @/d s\nopen 0 s/f WRONLY|CREAT 644\nclose 0\nstat d/f",
    "symlink @/e s\nchmod s/ 700\nstat e",
    "symlink d s\nchmod s/ 700\nstat d",
    "symlink a s\nopen 0 s WRONLY|CREAT|EXCL 644",
    "symlink zz s\nopen 0 s WRONLY|CREAT|EXCL 644",
    "symlink a s\nlinkat cwd s cwd g 0\nlstat g",
    "symlink a s\nlinkat cwd s cwd g FOLLOW\nlstat g",
    "symlink zz s\nlinkat cwd s cwd g 0\nlstat g",
    "linkat cwd a cwd g FOLLOW\nstat g",
    "linkat cwd e/x cwd g FOLLOW\nstat g",
    "symlink e/x s\nlinkat cwd s cwd g FOLLOW\nstat g\nlstat s",
    "symlink @/e/x s\nlinkat cwd s cwd g FOLLOW\nstat g",
    "symlink @/e/x s\nlinkat cwd s cwd g 0\nlstat g",
    "symlink e s\nlinkat cwd s/x cwd g 0\nstat g",
    "symlink s s\nlinkat cwd s cwd g FOLLOW",
    "rmdir @",
    "rmdir @/",
    "rmdir .",
    "mkdir @ 755",
    "unlink @",
    "unlink @/",
    "truncate . 0",
    "truncate @/ 0",
    "open 0 . WRONLY",
    "open 0 @/ WRONLY|CREAT 644",
    "rename a @/.",
    "rename a .",
    "rename @ n",
    "link a @/.",
    "symlink a @/",
    "mknod @/ 010644",
    "mknod . 010644",
    "mknod d/ 010644",
    "mknod n/ 010644",
    "mknod n 0100644\nstat n",
    "mknod n 0140644\nstat n",
    "mknod n 020644\nstat n",
    "mknod d/. 010644",
    "mknod d/n 010644\nstat d/n",
    "mknod a 0100644",
    "truncate d/ 0",
    "chdir e\nchmod . 700\nstat .\nstat x",
    "chdir e\nopen 0 ./y WRONLY|CREAT 644\nclose 0\nstat y",
    "chdir d\nrename . ../n",
    "chdir d\nmkdir ./ 755",
    "rename d/ e/ EXCHANGE\nstat d/x\nstat e/x",
    "rename d/. e",
    "rename e/ n/\nstat n/x",
    "rename e n/\nstat n/x",
    "mkdir n 755\nrename n e\nstat e",
    "mkdir n 755\nrename n d\nstat d",
    "rename e d/\nstat d/x",
    "chmod e 700\nrename e n\nstat n/x",
    "chmod e 700\nrename d e EXCHANGE\nstat d/x\nstat e",
    "mkdir e/y 755\nrename e n\nstat n/y\nstat n/x",
    "chmod e 700\nmkdir e/y 755\nrename e n\nstat n/y\nstat n/x",
    "mkdir e/y 755\nopen 0 e/y/z WRONLY|CREAT 644\nclose 0\nrename e n\nstat n/y/z\nstat n/x",
    "mkdir e/y 755\nchmod e/y 700\nrename e n\nstat n/y\nstat n/x",
    "rename e/x e/y\nmkdir e/x 755\nrename e n\nstat n/x\nstat n/y",
    "mkdir e/y 755\nrename e d EXCHANGE\nstat d/y\nstat d/x\nstat e",
    "mkdir e/y 755\nrename d e EXCHANGE\nstat d/y\nstat d/x",
    "symlink x e/l\nrename e n\nlstat n/l\nstat n/l",
    "symlink @/e e/l\nrename e n\nlstat n/l\nstat n/l/x",
    "rename e n\nrename n e\nstat e/x",
    "rename e/. n",
    "rename e d/.",
    "rename e e/n",
    "rename e/x e/x/",
    "open 0 e RDONLY\nrename e n\nopenat 1 0 x RDONLY\nread 1 9",
    "open 0 e RDONLY\nrename e n\nopenat 1 0 z WRONLY|CREAT 644\nclose 1\nstat n/z",
    "open 0 e RDONLY\nrmdir e",
    "open 0 e/x RDONLY\nunlink e/x\nread 0 9",
    "open 0 a RDONLY\nrename b a\nread 0 9",
    "rmdir d/..",
    "mkdir d/.. 755",
    "rename a d/..",
    "unlink d/..",
    "open 0 d/.. WRONLY",
    "chmod e/. 700\nstat e",
    "lchown e/. 1234\ntimes e",
    "utimensat e/. 1000 NOFOLLOW\ntimes e",
    "symlink a s\ntruncate s/ 0",
    "symlink d s\nrmdir s/",
    "symlink d s\nunlink s/",
    "symlink d s\nrename s/ n",
    "symlink d s\nrename s n/",
    "symlink d s\nmkdir s/ 755",
    "open 0 a WRONLY\nunlink a\nwrite 0 z\nfstat 0\nopen 1 a WRONLY|CREAT 644\nfstat 1",
    "open 0 e RDONLY|DIRECTORY\nrmdir e\nrename e/x b\nrmdir e\nstat e",
];

e2e!(
    the_supervisor_acts_on_names_below_the_worker_directory_as_bare,
    |dir| {
        check(&dir, BELOW_WORKER_OPS);
    }
);

// The library on the same calls (the job directory itself is routed to
// the worker directory's descriptor link since prepare_worker_dir).
e2e!(
    the_library_acts_on_names_below_the_worker_directory_as_bare,
    |dir| {
        check_library(&dir, BELOW_WORKER_OPS);
    }
);

// Finding 5 (before 8e4d612 too): an open of a FIFO or device the worker
// made (its copy) is refused with EACCES (emulate::open leaves them to
// the kernel, Err(None), which perform refuses for a routed name); bare:
// a FIFO opened O_RDWR does not block, a device 0 is ENXIO. Fixed for the
// opens that cannot block (emulate::open_special).
e2e!(
    the_supervisor_opens_a_fifo_or_device_of_the_worker_s_as_bare,
    |dir| {
        check(
            &dir,
            &[
                "mkfifo p 644\nopen 0 p RDWR\nwrite 0 x\nread 0 1",
                "mkfifo d/p 644\nopen 0 d/p RDWR\nwrite 0 x\nread 0 1",
                "mknod n 020644\nopen 0 n RDWR",
            ],
        );
    }
);

// Finding 5, the opens that do not block, inline in the supervisor: the
// status flags are the caller's (a blocking O_WRONLY made through
// O_NONBLOCK has it cleared), creation and type flags answer as bare.
e2e!(
    the_supervisor_opens_a_fifo_of_the_worker_s_without_blocking_as_bare,
    |dir| {
        check(
            &dir,
            &[
                "mkfifo p 644\nopen 0 p RDONLY|NONBLOCK\ngetfl 0\nread 0 1",
                "mkfifo p 644\nopen 0 p WRONLY|NONBLOCK",
                "mkfifo p 644\nopen 0 p RDWR|NONBLOCK\ngetfl 0\nwrite 0 x\nread 0 1",
                "mkfifo p 644\nopen 0 p RDONLY|NONBLOCK\nopen 1 p WRONLY\ngetfl 1\nwrite 1 y\nread 0 1",
                "mkfifo p 644\nopen 0 p RDONLY|NONBLOCK\nopen 1 p WRONLY|APPEND\ngetfl 1",
                "mkfifo p 644\nopen 0 p RDWR|CREAT|EXCL 644",
                "mkfifo p 644\nopen 0 p RDWR|CREAT 644\nwrite 0 x\nread 0 1",
                "mkfifo p 644\nopen 0 p RDWR|DIRECTORY",
                "mkfifo p 644\nopen 0 p RDWR|NOFOLLOW|TRUNC\ngetfl 0",
                "mkfifo p 000\nopen 0 p RDWR",
                "mkfifo p 644\nsymlink p s\nopen 0 s RDWR\nwrite 0 x\nread 0 1",
                "mkfifo p 644\nsymlink p s\nopen 0 s RDWR|NOFOLLOW",
                "mknod p 0140644\nopen 0 p RDWR",
                "mkdir n 755\nmkfifo n/p 644\nopen 0 n/p RDWR\ngetfl 0",
            ],
        );
    }
);

/// `script` bare and supervised (the job's tree from [`tree`]): the same
/// output lines, sorted (the processes of a script that `bg`s print in
/// either order), within `deadline`; the supervised run's events.
fn same_lines(
    dir: &TestDir,
    script: &str,
    deadline: std::time::Duration,
) -> Vec<serde_json::Value> {
    use std::process::Command;
    let (bare_dir, job, script_file) = crate::redirect_exact::fresh_runs(dir, tree, script);
    let exec = fixture("ops_exec_static");
    let sorted = |o: &std::process::Output| {
        let mut v: Vec<String> = stdout(o).lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    let bare = run(
        Command::new(&exec).arg(&script_file).current_dir(&bare_dir),
        deadline,
    );
    let mut c = redirecting_runner(&job, &dir.path);
    c.arg("--").arg(&exec).arg(&script_file);
    let sup = run(&mut c, deadline);
    assert_eq!(
        sorted(&sup),
        sorted(&bare),
        "{script}\nsupervised: {}\nbare: {}\n{}",
        stdout(&sup),
        stdout(&bare),
        String::from_utf8_lossy(&sup.stderr)
    );
    // The runner's own status says rogue writes (the FIFO): the
    // processes' are the `wait` lines compared above.
    read_events(&dir.join("logs")).0
}

// Finding 5, the opens that block: a FIFO of the worker's opened for
// reading by one supervised process and for writing by another (a
// partner whose own open waits for the supervisor, so the supervisor
// must not wait in the first open), in either order; data passes, both
// exit as bare, each open's event has its result.
e2e!(
    the_supervisor_opens_a_fifo_of_the_worker_s_for_two_processes_as_bare,
    |dir| {
        let scripts = [
            // The writer first (blocked until the reader comes).
            "mkfifo p 644\nbg 4\nopen 1 p WRONLY\ngetfl 1\nwrite 1 hello\nclose 1\n\
             sleep 300\nopen 0 p RDONLY\ngetfl 0\nread 0 5\nwait",
            // The reader first.
            "mkfifo p 644\nbg 5\nsleep 300\nopen 1 p WRONLY\ngetfl 1\nwrite 1 hello\nclose 1\n\
             open 0 p RDONLY\ngetfl 0\nread 0 5\nwait",
            // At once, the reader in the child.
            "mkfifo d/p 644\nbg 3\nopen 1 d/p RDONLY\nread 1 2\nclose 1\n\
             open 0 d/p WRONLY\nwrite 0 hi\nclose 0\nwait",
        ];
        for script in scripts {
            let events = same_lines(&dir, script, std::time::Duration::from_secs(60));
            let opens: Vec<_> = events
                .iter()
                .filter(|e| {
                    e["kind"] == "access" && e["op"].as_str().is_some_and(|o| o.starts_with("open"))
                })
                .filter(|e| e["path"].as_str().is_some_and(|p| p.ends_with('p')))
                .collect();
            assert_eq!(opens.len(), 2, "{script}: {opens:?}");
            for e in opens {
                assert!(
                    e["result"].as_i64().is_some_and(|r| r >= 0),
                    "{script}: {e}"
                );
                assert_eq!(e["action"], "redirected", "{script}: {e}");
            }
        }
    }
);

// Finding 5: a blocking open of a FIFO of the worker's interrupted by a
// signal: without SA_RESTART it fails with EINTR, with SA_RESTART it
// goes on waiting and opens when the partner comes; the supervisor
// releases the open it was making for the interrupted call, and the run
// does not hang.
e2e!(
    the_supervisor_lets_a_signal_interrupt_a_blocking_fifo_open_as_bare,
    |dir| {
        let scripts = [
            "mkfifo p 644\nsigalrm 200 0\nopen 0 p RDONLY\nopen 1 p RDWR\nwrite 1 x\nread 1 1",
            "mkfifo p 644\nsigalrm 200 0\nopen 0 p WRONLY\nopen 1 p RDWR\nwrite 1 x\nread 1 1",
            "mkfifo p 644\nbg 3\nsleep 800\nopen 1 p WRONLY\nwrite 1 x\n\
             sigalrm 100 RESTART\nopen 0 p RDONLY\nread 0 1\nwait",
            "mkfifo p 644\nbg 3\nsleep 800\nopen 1 p RDONLY\nread 1 1\n\
             sigalrm 100 RESTART\nopen 0 p WRONLY\nwrite 0 x\nwait",
        ];
        for script in scripts {
            same_lines(&dir, script, std::time::Duration::from_secs(60));
        }
    }
);

/// Runs a script under the supervisor that redirects `b`, then waits on
/// a FIFO outside the job while `swap(workers_dir)` runs (a process the
/// supervisor does not stop), then truncates `a`, makes `n` and appends
/// to `e/x`: the shared tree before and after, and the run's output.
fn raced(dir: &TestDir, swap: impl FnOnce(&Path, &Path)) -> (Vec<String>, Vec<String>, String) {
    use std::io::Write;
    for d in ["job", "workers", "logs", "merged"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    let job = dir.join("job");
    std::fs::create_dir_all(&job).unwrap();
    tree(&job);
    let sync = dir.join("sync");
    let _ = std::fs::remove_file(&sync);
    let c = std::ffi::CString::new(sync.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let script = format!(
        "open 1 b WRONLY|APPEND\nwrite 1 x\nclose 1\nopen 0 {} RDONLY\nread 0 1\nclose 0\n\
         open 2 a WRONLY|TRUNC\nwrite 2 Z\nclose 2\nmkdir n 755\nopen 3 e/x WRONLY|APPEND\nwrite 3 y\nclose 3\n",
        sync.display()
    );
    let script_file = dir.join("script.txt");
    std::fs::write(&script_file, &script).unwrap();
    let before = shared_snapshot(&job);
    let mut cmd = redirecting_runner(&job, &dir.path);
    cmd.arg("--")
        .arg(fixture("ops_exec_static"))
        .arg(&script_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Blocks until the script opens the FIFO: its worker directory exists.
    let mut w = std::fs::OpenOptions::new().write(true).open(&sync).unwrap();
    swap(&dir.join("workers"), &job);
    w.write_all(b"g").unwrap();
    drop(w);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (before, shared_snapshot(&job), text)
}

// Finding 6 (goal 2): Place::of opens the worker directory itself with
// only RESOLVE_NO_MAGICLINKS (beneath.rs, `root`), following a symlink
// at its own name, and the manifest line is appended by absolute path
// (redirects.rs, `record`): a process the supervisor does not stop that
// swaps `workers/worker_0` for a symlink to the job directory once the
// worker directory exists makes every later routed call land in the
// shared tree (`a` truncated, `n` made, `e/x` appended, the manifest
// written into the job). Deterministic: the script waits on a FIFO.
e2e!(
    a_worker_directory_swapped_for_a_symlink_is_not_followed,
    |dir| {
        let (before, after, out) = raced(&dir, |workers, job| {
            let wd = workers.join("worker_0");
            assert!(wd.is_dir());
            std::fs::rename(&wd, workers.join("worker_0.old")).unwrap();
            std::os::unix::fs::symlink(job, &wd).unwrap();
        });
        assert_eq!(after, before, "the shared tree changed:\n{out}");
    }
);

// Finding 7 (goal 2): the manifest is opened O_APPEND|O_CREAT by its
// absolute path (redirects.rs `record`), following a symlink: one put at
// `workers/worker_0/mpaudit-redirects.jsonl` by a process the supervisor
// does not stop gets the next redirect's JSON line appended to the shared
// file it names.
e2e!(a_manifest_swapped_for_a_symlink_is_not_followed, |dir| {
    let (before, after, out) = raced(&dir, |workers, job| {
        let m = workers.join("worker_0").join("mpaudit-redirects.jsonl");
        std::fs::rename(&m, workers.join("manifest.old")).unwrap();
        std::os::unix::fs::symlink(job.join("b"), &m).unwrap();
    });
    assert_eq!(after, before, "the shared tree changed:\n{out}");
});
