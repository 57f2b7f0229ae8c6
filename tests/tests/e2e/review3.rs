//! Hostile review 3: the descriptor-routed calls (F8), the `..` rule, links
//! judged by source, and real programs under redirect. Each test compares
//! the audited run with the bare run (review2's twin job directories) and
//! is named after the bug.

use crate::review2::{audited_bash, bare_bash, read, redirected_as_bare, twin_jobs};
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
