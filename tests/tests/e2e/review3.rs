//! Hostile review 3: the descriptor-routed calls (F8), the `..` rule, links
//! judged by source, and real programs under redirect. Each test compares
//! the audited run with the bare run (review2's twin job directories) and
//! is named after the bug.

use crate::review2::{
    audited_bash, bare_bash, fork_mode_like_bare, read, redirected_as_bare, twin_jobs,
};
use mpaudit_tests::*;

// Finding 1 (a shared file reached): a signal handler that writes a job
// file while the main thread is inside one of the library's hooks met the
// re-entry guard and passed straight through to libc: under redirect the
// handler appended to the shared data.txt in place.
e2e!(
    a_signal_handler_writing_a_job_file_during_a_hook_does_not_reach_the_shared_file,
    |dir| {
        let (bare, job) = twin_jobs(&dir, |d| {
            std::fs::write(d.join("data.txt"), "orig\n").unwrap();
            std::fs::write(d.join("r.txt"), "r\n").unwrap();
        });
        let script = format!("{} data.txt r.txt 400", fixture("signal_writer").display());
        let b = run_ok(&mut bare_bash(&dir, &bare, &script));
        assert!(
            stdout(&b).contains("failed 0 size-ok 1"),
            "bare: {}",
            stdout(&b)
        );
        let r = run_ok(&mut audited_bash(&dir, &job, "redirect", &script));
        assert_eq!(
            read(job.join("data.txt")),
            "orig\n",
            "a signal handler's write reached the shared data.txt: {}",
            stdout(&r)
        );
        // What the worker appended is what its view holds (a write the
        // library could not judge fails: EACCES, counted as dropped).
        assert!(stdout(&r).contains("size-ok 1"), "{}", stdout(&r));
    }
);

/// Fills the descriptor table under a soft limit of 64 (the hard one
/// unchanged), leaves one descriptor free, then writes, makes, renames and
/// removes job files; prints each call's result.
const FULL_TABLE: &str = r#"
import os, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
fds = []
while True:
    try: fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError: break
os.close(fds.pop())
def t(name, f):
    try: print(name, f())
    except OSError as e: print(name, "errno", e.errno)
t("open", lambda: os.open("sub/data.txt", os.O_WRONLY | os.O_APPEND) - fds[-1])
t("open2", lambda: os.open("sub/new.txt", os.O_WRONLY | os.O_CREAT, 0o644))
t("mkdir", lambda: os.mkdir("sub/newdir"))
t("rename", lambda: os.rename("sub/data.txt", "sub/d2"))
t("unlink", lambda: os.unlink("top.txt"))
print("limit", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
for fd in fds[:5]: os.close(fd)
os.write(os.open("sub/d2", os.O_WRONLY | os.O_APPEND), b"more\n")
print(sorted(os.listdir("sub")), sorted(os.listdir(".")), open("sub/d2").read())
"#;

// Finding 2 (errno): a routed call holds its target's parent directory
// (F8) in a descriptor of its own: with the program's table full but for
// one descriptor, the open that bare gets that descriptor failed with
// EMFILE, and with the table full mkdir, rename and unlink did too.
e2e!(
    a_redirected_open_with_one_descriptor_left_gets_it_as_bare_not_emfile,
    |dir| {
        let setup = |d: &std::path::Path| {
            std::fs::create_dir(d.join("sub")).unwrap();
            std::fs::write(d.join("sub/data.txt"), "old\n").unwrap();
            std::fs::write(d.join("top.txt"), "t\n").unwrap();
            std::fs::write(d.join("full.py"), FULL_TABLE).unwrap();
        };
        let (bare, job) = twin_jobs(&dir, setup);
        let script = "python3 full.py";
        let b = run_ok(&mut bare_bash(&dir, &bare, script));
        assert!(stdout(&b).starts_with("open 1\n"), "{}", stdout(&b));
        redirected_as_bare(&dir, &job, script, &b);
        assert_eq!(read(job.join("sub/data.txt")), "old\n");
        assert_eq!(read(job.join("top.txt")), "t\n");
    }
);

// Finding 3 (F26, content and errno): the fork-mode root reads a worker's
// file from the worker's directory, but its own writes go in place, to a
// shared name that does not exist: an append to a worker's output makes a
// new shared file with only the root's line (bare: the worker's line,
// then the root's), and a rename of a worker's output fails with ENOENT
// (bare: it is renamed). After the run the merge brought `out_1.txt`
// back from worker 1's directory and refused `out_0.txt` (the root's
// file was in the way).
e2e!(
    in_fork_mode_the_root_appends_to_and_renames_its_workers_outputs_as_bare,
    |dir| {
        let script = r#"import multiprocessing as mp, os
def work(k):
    open(f"out_{k}.txt", "w").write(f"w{k}\n")
if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(2) as p: p.map(work, range(2))
    with open("out_0.txt", "a") as f: f.write("root\n")
    print(open("out_0.txt").read().split())
    try: os.rename("out_1.txt", "final.txt"); print(open("final.txt").read().split(), os.path.exists("out_1.txt"))
    except OSError as e: print("rename errno", e.errno)
"#;
        let out = fork_mode_like_bare(&dir, script, |_| {});
        assert_eq!(out, "['w0', 'root']\n['w1'] False\n");
        // The job directory after the run (and its merge) is the bare one's.
        for d in ["bare", "job"] {
            let d = dir.join(d);
            assert_eq!(read(d.join("out_0.txt")), "w0\nroot\n", "{}", d.display());
            assert_eq!(read(d.join("final.txt")), "w1\n", "{}", d.display());
            assert!(
                !d.join("out_1.txt").exists(),
                "{}: the old name came back",
                d.display()
            );
        }
    }
);

// Finding 3, the other writes: the root writes a file into a directory
// only a worker made (bare: it is there; in place: ENOENT), removes one
// worker's output (bare: gone; in place: ENOENT, and the merge brought it
// back), truncates another's, and appends to a shared file a worker
// removed (bare: a new file with the root's line). (A listing of `d/e` in the root shows
// only its shared entries once the root made it there: policy.md.)
e2e!(
    in_fork_mode_the_root_writes_into_removes_and_truncates_its_workers_files_as_bare,
    |dir| {
        let script = r#"import multiprocessing as mp, os
def work(k):
    if k == 0:
        os.makedirs("d/e")
        open("d/e/w.txt", "w").write("w0\n")
    else:
        os.unlink("old.txt")
    open(f"out_{k}.txt", "w").write(f"w{k}\n")
if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(2) as p: p.map(work, range(2))
    def t(name, f):
        try: print(name, f())
        except OSError as e: print(name, "errno", e.errno)
    t("into", lambda: open("d/e/root.txt", "w").write("r\n"))
    t("unlink", lambda: os.unlink("out_0.txt"))
    t("trunc", lambda: open("out_1.txt", "w").write("r1\n"))
    t("removed", lambda: open("old.txt", "a").write("r\n"))
    print(open("d/e/w.txt").read().split(), os.path.exists("out_0.txt"), open("out_1.txt").read().split())
"#;
        let out = fork_mode_like_bare(&dir, script, |d| {
            std::fs::write(d.join("old.txt"), "old\n").unwrap();
        });
        assert_eq!(
            out,
            "into 2\nunlink None\ntrunc 3\nremoved 2\n['w0'] False ['r1']\n"
        );
        for d in ["bare", "job"] {
            let d = dir.join(d);
            assert_eq!(read(d.join("d/e/w.txt")), "w0\n", "{}", d.display());
            assert_eq!(read(d.join("d/e/root.txt")), "r\n", "{}", d.display());
            assert_eq!(read(d.join("out_1.txt")), "r1\n", "{}", d.display());
            assert!(!d.join("out_0.txt").exists(), "{}: came back", d.display());
            assert_eq!(
                read(d.join("old.txt")),
                "r\n",
                "{}: the worker removed it",
                d.display()
            );
        }
    }
);

// Finding 4 (content, inode): a rename of a scratch file into the job
// directory (write in $TMPDIR, then move into place) copied the scratch
// file into the worker's directory and renamed the copy: a second hard
// link of it in scratch no longer reached the moved file, the inode
// changed, and the scratch file stayed behind (the disk held it twice).
e2e!(
    a_scratch_file_moved_into_the_job_dir_is_moved_not_copied,
    |dir| {
        let (bare, job) = twin_jobs(&dir, |_| {});
        let script = "echo t > \"$TMPDIR/t\"; ln \"$TMPDIR/t\" \"$TMPDIR/h\"; \
                      i=$(stat -c %i \"$TMPDIR/t\"); mv \"$TMPDIR/t\" out.txt; \
                      echo more >> \"$TMPDIR/h\"; cat out.txt; stat -c %h out.txt; \
                      [ \"$i\" = \"$(stat -c %i out.txt)\" ] && echo same inode";
        let b = run_ok(&mut bare_bash(&dir, &bare, script));
        assert_eq!(stdout(&b), "t\nmore\n2\nsame inode\n");
        redirected_as_bare(&dir, &job, script, &b);
        let names = |d: std::path::PathBuf| {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(dir.join("scratch")),
            names(dir.join("bare-scratch")),
            "the scratch directory after the move"
        );
    }
);

// Finding 5 (a shared file reached): under an address-space cap the pool
// cannot give a hook its buffers and the call passed through: a
// redirected worker's opens created and appended to shared job files
// (as/wN.txt, 150 threads) in place.
e2e!(
    a_redirected_write_without_hook_buffers_does_not_reach_the_shared_file,
    |dir| {
        let (_, job) = twin_jobs(&dir, |d| std::fs::create_dir(d.join("as")).unwrap());
        let script = fixture("address_space_limit").display().to_string();
        let r = run_ok(&mut audited_bash(&dir, &job, "redirect", &script));
        let shared: Vec<_> = std::fs::read_dir(job.join("as"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            shared.is_empty(),
            "{} shared files made in place ({}): {:?}",
            shared.len(),
            stdout(&r),
            &shared[..shared.len().min(5)]
        );
    }
);

// Finding 6 (a shared file reached): the same cap, for a descriptor's
// metadata change: 150 threads' fchmod of a shared file opened for
// reading changed the shared file's mode in place when no buffers were
// left (with them it is the worker's copy's).
e2e!(
    a_redirected_fchmod_without_hook_buffers_does_not_change_the_shared_file,
    |dir| {
        use std::os::unix::fs::PermissionsExt;
        let (_, job) = twin_jobs(&dir, |d| {
            std::fs::create_dir(d.join("as")).unwrap();
            std::fs::write(d.join("as/shared.txt"), "s\n").unwrap();
            std::fs::set_permissions(
                d.join("as/shared.txt"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        });
        let script = format!("AS_FCHMOD=1 {}", fixture("address_space_limit").display());
        run_ok(&mut audited_bash(&dir, &job, "redirect", &script));
        let mode = std::fs::metadata(job.join("as/shared.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "the shared file's mode changed");
    }
);
