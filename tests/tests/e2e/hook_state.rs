//! What the hooks cost the program's threads and stacks, and the state they
//! must leave as they found it: thread-local storage, small stacks, errno,
//! and worker numbering under concurrent forks.

use mpaudit_tests::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Output};

/// The library builds the e2e tests must hold for: the harness's dev build
/// and the release build users install.
fn both_builds() -> [&'static Path; 2] {
    [lib(), &artifacts_release().lib]
}

/// `PT_TLS` memsz from an ELF64 little-endian file's program headers: the
/// thread-local storage every thread of the program pays for the library.
fn tls_memsz(elf: &Path) -> u64 {
    let b = std::fs::read(elf).expect("read the library");
    assert_eq!(&b[..4], b"\x7fELF", "{} is ELF", elf.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54), u16_at(56));
    let mut tls = 0;
    let mut loads = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(ph) {
            1 => loads += 1,             // PT_LOAD
            7 => tls += u64_at(ph + 40), // PT_TLS: p_memsz
            _ => {}
        }
    }
    assert!(loads > 0, "program headers parsed (no PT_LOAD found)");
    tls
}

e2e!(thread_local_storage_is_at_most_4_kib, |_dir| {
    for lib in both_builds() {
        let tls = tls_memsz(lib);
        assert!(
            tls <= 4096,
            "{}: PT_TLS memsz {tls} bytes (every thread of the program pays it)",
            lib.display()
        );
    }
});

fn same_as_bare(bare: &Output, audited: &Output, what: &str) {
    assert_eq!(
        (audited.status.code(), audited.status.signal_name()),
        (bare.status.code(), bare.status.signal_name()),
        "{what}: exit status; stderr: {}",
        String::from_utf8_lossy(&audited.stderr)
    );
    assert_eq!(stdout(audited), stdout(bare), "{what}: output");
}

trait SignalName {
    fn signal_name(&self) -> Option<i32>;
}
impl SignalName for std::process::ExitStatus {
    fn signal_name(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self)
    }
}

e2e!(
    threads_with_16_and_32_kib_stacks_start_and_are_logged,
    |dir| {
        for size in ["16384", "32768"] {
            let file = format!("t-{size}.txt");
            let bare = run(
                dir.bare(fixture("small_stacks"))
                    .args(["thread", size, &file]),
                DEADLINE,
            );
            assert!(bare.status.success(), "bare run: {}", stdout(&bare));
            let audited = run(
                dir.audited(fixture("small_stacks"))
                    .args(["thread", size, &file]),
                DEADLINE,
            );
            same_as_bare(&bare, &audited, &format!("{size}-byte thread stack"));
            let ev = dir.events();
            let open = accesses(&ev, &file)
                .into_iter()
                .find(|e| e["mode"] == "write")
                .unwrap_or_else(|| panic!("the thread's open of {file} is logged; {:?}", ops(&ev)));
            assert_ne!(open["tid"], open["pid"], "logged from the new thread");
        }
    }
);

/// The crash-handler run in `mode` ("log", "redirect" or "deny"; `fork`:
/// the crash happens in a forked fork-mode worker).
fn crash_run(dir: &TestDir, lib: &Path, mode: &str, fork: bool, report: &str) -> Output {
    let mut c = dir.audited(fixture("small_stacks"));
    c.env("LD_PRELOAD", lib)
        .env("MPAUDIT_ACTION", mode)
        .env("MPAUDIT_JOB_DIR", &dir.path);
    if fork {
        c.env("MPAUDIT_FORK_WORKERS", "1");
    } else if mode == "redirect" {
        c.env("MPAUDIT_WORKER", "1");
    }
    c.args([if fork { "fork-crash" } else { "crash" }, "8192", report]);
    run(&mut c, DEADLINE)
}

e2e!(
    crash_handler_on_an_8_kib_altstack_opens_in_every_mode,
    |dir| {
        let bare = |fork: bool| {
            let report = format!("bare-{fork}.txt");
            let mut c = dir.bare(fixture("small_stacks"));
            c.args([if fork { "fork-crash" } else { "crash" }, "8192", &report]);
            let out = run(&mut c, DEADLINE);
            assert!(dir.join(&report).exists(), "bare handler wrote its report");
            out
        };
        let (bare_direct, bare_forked) = (bare(false), bare(true));
        assert_eq!(bare_direct.status.code(), Some(7));
        assert_eq!(stdout(&bare_direct), "crash report written\n");
        for (n, lib) in both_builds().into_iter().enumerate() {
            for mode in ["log", "redirect", "deny"] {
                for fork in [false, true] {
                    let report = format!("report-{n}-{mode}-{fork}.txt");
                    let out = crash_run(&dir, lib, mode, fork, &report);
                    let what = format!("{} {mode} fork={fork}", lib.display());
                    let bare = if fork { &bare_forked } else { &bare_direct };
                    if mode == "deny" {
                        // The policy refuses a rogue write: EACCES, as documented.
                        let want = stdout(bare).replace(
                            "crash report written",
                            &format!("crash report open failed, errno {}", libc_eacces()),
                        );
                        assert_eq!(stdout(&out), want, "{what}");
                        assert_eq!(out.status.code(), bare.status.code(), "{what}");
                    } else {
                        same_as_bare(bare, &out, &what);
                    }
                    let written = match (mode, fork) {
                        ("log", _) => dir.join(&report),
                        ("redirect", false) => {
                            dir.join(&format!("mpaudit-workers/worker_1/{report}"))
                        }
                        ("redirect", true) => {
                            dir.join(&format!("mpaudit-workers/worker_0/{report}"))
                        }
                        _ => {
                            assert!(!dir.join(&report).exists(), "{what}: denied");
                            continue;
                        }
                    };
                    assert_eq!(
                        std::fs::read_to_string(&written).unwrap_or_default(),
                        "crashed\n",
                        "{what}: report at {}",
                        written.display()
                    );
                }
            }
        }
        let ev = dir.events();
        assert!(
            !accesses(&ev, "report-0-log-false.txt").is_empty(),
            "the handler's open is logged"
        );
    }
);

e2e!(
    crash_handler_on_an_8_kib_altstack_can_fork_a_reporter,
    |dir| {
        let bare = run(
            dir.bare(fixture("small_stacks"))
                .args(["crash-fork", "8192", "bare.txt"]),
            DEADLINE,
        );
        assert_eq!(stdout(&bare), "reporter exited 5\n");
        for lib in both_builds() {
            for mode in ["log", "redirect"] {
                let report = format!("{mode}.txt");
                let out = run(
                    dir.audited(fixture("small_stacks"))
                        .env("LD_PRELOAD", lib)
                        .env("MPAUDIT_ACTION", mode)
                        .env("MPAUDIT_FORK_WORKERS", "1")
                        .env("MPAUDIT_JOB_DIR", &dir.path)
                        .args(["crash-fork", "8192", &report]),
                    DEADLINE,
                );
                // The child starts its own log in its atfork handler, on the
                // handler's 8 KiB stack.
                same_as_bare(&bare, &out, &format!("{} {mode}", lib.display()));
            }
        }
    }
);

/// Steady-state stack use per call ("open" → bytes) from the paint fixture.
fn painted(out: &Output) -> HashMap<String, i64> {
    assert!(
        out.status.success(),
        "paint run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[2].parse().expect("bytes"))
        })
        .collect()
}

/// The budget behind "hooks run on an 8 KiB alternate stack": the kernel's
/// signal frame takes about 3 KiB of it (AT_MINSIGSTKSZ), the program's
/// handler and libc's own call some more; the hook may add at most 4 KiB
/// over the bare call (docs/hooks.md has the measured figures).
const HOOK_STACK_BUDGET: i64 = 4096;

e2e!(
    hooks_stack_use_over_the_bare_call_stays_within_budget,
    |dir| {
        let bare = painted(&run(
            dir.bare(fixture("small_stacks")).args(["paint", "bare"]),
            DEADLINE,
        ));
        assert_eq!(bare.len(), 5, "five calls measured: {bare:?}");
        for lib in both_builds() {
            for mode in ["log", "redirect", "deny", "fork-redirect"] {
                let mut c = dir.audited(fixture("small_stacks"));
                c.env("LD_PRELOAD", lib).env("MPAUDIT_JOB_DIR", &dir.path);
                match mode {
                    "log" => {}
                    "fork-redirect" => {
                        c.env("MPAUDIT_ACTION", "redirect")
                            .env("MPAUDIT_FORK_WORKERS", "1");
                    }
                    m => {
                        c.env("MPAUDIT_ACTION", m).env("MPAUDIT_WORKER", "1");
                    }
                }
                let verb = if mode.starts_with("fork") {
                    "fork-paint"
                } else {
                    "paint"
                };
                let got = painted(&run(c.args([verb, mode]), DEADLINE));
                for (call, bytes) in &got {
                    let extra = bytes - bare[call];
                    assert!(
                        extra <= HOOK_STACK_BUDGET,
                        "{} {mode} {call}: the hook adds {extra} bytes of stack ({bytes} in all)",
                        lib.display()
                    );
                }
            }
        }
    }
);

fn libc_eacces() -> i32 {
    13
}

e2e!(
    errno_is_untouched_after_successful_calls_in_every_mode,
    |dir| {
        let bare = run_ok(dir.bare(fixture("errno_after_success")).arg("bare"));
        assert!(
            stdout(&bare).lines().all(|l| l.ends_with(" ok errno=4242")),
            "every call succeeds bare and leaves errno alone:\n{}",
            stdout(&bare)
        );
        let run_dir = |mode: &str| -> Command {
            let mut c = dir.audited(fixture("errno_after_success"));
            c.arg(mode).env("MPAUDIT_JOB_DIR", &dir.path);
            match mode {
                "redirect" => {
                    c.env("MPAUDIT_ACTION", "redirect")
                        .env("MPAUDIT_WORKER", "3");
                }
                "deny" => {
                    // Declared outputs: allowed writes under deny.
                    let d = dir.join("deny");
                    let d = d.to_str().unwrap();
                    c.env("MPAUDIT_ACTION", "deny")
                        .env("MPAUDIT_OUTPUTS", format!("{d}:{d}/**"));
                }
                _ => {}
            }
            c
        };
        for mode in ["log", "redirect", "deny"] {
            let out = run_ok(&mut run_dir(mode));
            assert_eq!(stdout(&out), stdout(&bare), "{mode}: errno after each call");
        }
        // The redirect really happened (so its mkdir/lookup work ran).
        assert!(dir.join("mpaudit-workers/worker_3/redirect/b").exists());
    }
);

// ---- worker numbering ----------------------------------------------------------

/// Worker index of each forked child (by pid), from the `start` events.
fn child_workers(ev: &[Value]) -> HashMap<i64, Option<i64>> {
    ev.iter()
        .filter(|e| e["op"] == "start" && e["root"] != true)
        .map(|e| (e["pid"].as_i64().unwrap(), e["worker"].as_i64()))
        .collect()
}

e2e!(
    two_threads_forking_at_once_give_every_child_its_own_worker_index,
    |dir| {
        let out = run_ok(
            dir.audited(fixture("fork_threads"))
                .args(["2", "200"])
                .env("MPAUDIT_FORK_WORKERS", "1"),
        );
        assert_eq!(stdout(&out), "400 children exited 0\n");
        let workers = child_workers(&dir.events());
        assert_eq!(workers.len(), 400, "one start event per child");
        let indices: BTreeSet<i64> = workers
            .values()
            .map(|w| w.expect("every child of the root is a worker"))
            .collect();
        assert_eq!(
            indices,
            (0..400).collect(),
            "400 distinct indices, none skipped"
        );
    }
);

const FORKSERVER_POOL: &str = r#"
import multiprocessing as mp, os, sys, time

def task(i):
    time.sleep(0.1)  # spreads the tasks over the pool's processes
    with open(f"task-{i}.txt", "w") as f:
        f.write(f"{i}\n")
    return os.getpid()

if __name__ == "__main__":
    ctx = mp.get_context("forkserver")
    with ctx.Pool(4) as pool:
        pids = pool.map(task, range(16), chunksize=1)
    print(len(set(pids)) > 0, sum(1 for _ in pids))
"#;

e2e!(
    forkserver_pool_tasks_are_numbered_as_distinct_workers,
    |dir| {
        std::fs::write(dir.join("pool.py"), FORKSERVER_POOL).unwrap();
        // The interpreter itself, not a shell shim (pyenv's `python3` forks
        // subshells before it execs it: docs/limitations.md).
        let python = stdout(&run_ok(
            Command::new("python3").args(["-c", "import sys; print(sys.executable)"]),
        ))
        .trim()
        .to_owned();
        let bare = run_ok(dir.bare(&python).arg("pool.py"));
        for i in 0..16 {
            std::fs::remove_file(dir.join(&format!("task-{i}.txt"))).unwrap();
        }
        let out = run_ok(
            dir.audited(&python)
                .arg("pool.py")
                .env("MPAUDIT_FORK_WORKERS", "1")
                .env("MPAUDIT_ACTION", "redirect")
                .env("MPAUDIT_JOB_DIR", &dir.path),
        );
        assert_eq!(stdout(&out), stdout(&bare));
        let ev = dir.events();
        // Each pool process writes its tasks' files: one worker per process,
        // distinct across processes.
        let mut worker_of_pid: HashMap<i64, i64> = HashMap::new();
        for i in 0..16 {
            let name = format!("task-{i}.txt");
            let e = accesses(&ev, &name)
                .into_iter()
                .find(|e| e["mode"] == "write")
                .unwrap_or_else(|| panic!("{name} logged"));
            let w = e["worker"]
                .as_i64()
                .unwrap_or_else(|| panic!("{name} written by a worker: {e}"));
            let pid = e["pid"].as_i64().unwrap();
            assert_eq!(*worker_of_pid.entry(pid).or_insert(w), w);
            let target = dir.join(&format!("mpaudit-workers/worker_{w}/{name}"));
            assert_eq!(
                std::fs::read_to_string(&target).unwrap_or_default(),
                format!("{i}\n"),
                "{name} redirected into worker_{w}"
            );
            assert!(!dir.join(&name).exists(), "{name} not in the shared dir");
        }
        let distinct: BTreeSet<i64> = worker_of_pid.values().copied().collect();
        assert_eq!(
            distinct.len(),
            worker_of_pid.len(),
            "pool processes share no index: {worker_of_pid:?}"
        );
        assert!(worker_of_pid.len() >= 2, "several pool processes ran tasks");
        // Distinct from every other worker index handed out in the job (the
        // root's own forks, such as the one that started the forkserver).
        let starts = child_workers(&ev);
        for (pid, w) in &worker_of_pid {
            let sharing: Vec<_> = starts
                .iter()
                .filter(|(p, x)| **x == Some(*w) && *p != pid)
                .collect();
            assert!(
                sharing.is_empty(),
                "worker {w} of pid {pid} shared with {sharing:?}"
            );
        }
    }
);

// Review 2, F1: under an address-space cap the pool's temporary blocks can
// fail and those calls pass through unlogged. Every write must then be
// either logged or counted in the exit event's `dropped`, and a run that
// dropped any must not pass (exit 4, "audit incomplete").
e2e!(
    calls_passed_through_for_want_of_memory_are_counted_as_dropped,
    |dir| {
        let prog = fixture("address_space_limit");
        let bare = run_ok(&mut dir.bare(&prog));
        std::fs::remove_dir_all(dir.join("as")).expect("clear the bare run's files");
        let audited = run_ok(dir.audited(&prog).env("MPAUDIT_OUTPUTS", "as/*"));
        assert_eq!(stdout(&audited), stdout(&bare), "same writes as bare");
        let total: u64 = stdout(&bare)
            .trim()
            .strip_prefix("writes=")
            .and_then(|n| n.parse().ok())
            .expect("writes=N");
        let events = dir.events();
        let logged = events
            .iter()
            .filter(|e| {
                e["op"] == "open" && e["path"].as_str().is_some_and(|p| p.starts_with("as/"))
            })
            .count() as u64;
        let dropped: u64 = events
            .iter()
            .filter(|e| e["kind"] == "process" && e["op"] == "exit")
            .filter_map(|e| e["dropped"].as_u64())
            .sum();
        // The fixture's own fopen/stat calls are not in `as/`; every write open
        // is either an event or a dropped one (a dropped call may also be one
        // of those, hence >=).
        assert!(
            logged + dropped >= total,
            "{logged} logged + {dropped} dropped < {total} writes"
        );
        let report = run(
            Command::new(&artifacts().runner)
                .args(["report", "--format", "json"])
                .arg(dir.logs()),
            std::time::Duration::from_secs(60),
        );
        let code = report.status.code();
        let json: Value = serde_json::from_slice(&report.stdout).expect("report JSON");
        if dropped > 0 {
            assert_eq!(code, Some(4), "{:#}", json["summary"]);
            assert_eq!(json["summary"]["dropped_events"].as_u64(), Some(dropped));
        } else {
            assert_eq!(logged, total, "nothing dropped: every write logged");
        }
    }
);
