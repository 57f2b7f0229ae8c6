//! The overhead benchmark (docs/performance.md):
//!
//!     cargo run --release -p mpaudit-tests --bin mpaudit-bench -- [--quick] [--runs N]
//!
//! Builds release artifacts and the C workloads (tests/fixtures/bench.c),
//! then runs every workload bare and under each configuration interleaved
//! (A B C … A B C …), so that a machine slowing down mid-run slows every
//! configuration alike. Prints one Markdown table: median, min–max, and
//! the ratio of medians to bare. No hyperfine: `Command` + `Instant`, and
//! `wait4` for the children's peak RSS.
//!
//! Options:
//!   --quick        sizes / 10, 3 runs (for iterating)
//!   --runs N       runs per configuration (default 5, at least 1)
//!   --scale D      divide every workload size by D (the smoke test uses 1000)
//!   --dir PATH     scratch directory (default: /dev/shm if present, as
//!                  the peers were measured on tmpfs; else target/bench/tmp)
//!   --output FILE  also write the report (Markdown) to FILE
//!   --only LIST    run only these parts, comma-separated: read, write,
//!                  fopen, threads, true, athena, memory, report, seccomp
//!                  (default all)
//!   --debug        use the debug artifacts of the test harness (the smoke
//!                  test: no release build; figures then mean nothing)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use mpaudit_tests::{artifacts, artifacts_release, workspace_root};

struct Opts {
    runs: usize,
    scale: u64,
    dir: Option<PathBuf>,
    output: Option<PathBuf>,
    debug: bool,
    /// Parts to run (`--only`); empty means all.
    only: Vec<String>,
    /// Where the example jobs are (`--examples`; default: the checkout's).
    examples: Option<PathBuf>,
}

/// The parts `--only` can name.
const PARTS: [&str; 9] = [
    "read", "write", "fopen", "threads", "true", "athena", "memory", "report", "seccomp",
];

impl Opts {
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

fn parse_args() -> Opts {
    let mut o = Opts {
        runs: 5,
        scale: 1,
        dir: None,
        output: None,
        debug: false,
        only: Vec::new(),
        examples: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next()
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--quick" => {
                o.scale = 10;
                o.runs = 3;
            }
            "--runs" => o.runs = val("--runs").parse().unwrap_or_else(|_| die("--runs N")),
            "--scale" => o.scale = val("--scale").parse().unwrap_or_else(|_| die("--scale D")),
            "--dir" => o.dir = Some(PathBuf::from(val("--dir"))),
            "--output" => o.output = Some(PathBuf::from(val("--output"))),
            "--debug" => o.debug = true,
            "--examples" => o.examples = Some(PathBuf::from(val("--examples"))),
            "--only" => {
                for part in val("--only").split(',') {
                    if !PARTS.contains(&part) {
                        die(&format!(
                            "--only: unknown part {part:?} (one of {})",
                            PARTS.join(", ")
                        ));
                    }
                    o.only.push(part.to_string());
                }
            }
            "-h" | "--help" => {
                println!("usage: mpaudit-bench [--quick] [--runs N] [--scale D] [--dir PATH] [--output FILE] [--only LIST] [--examples DIR] [--debug]");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    o.runs = o.runs.max(1);
    o.scale = o.scale.max(1);
    o
}

fn die(msg: &str) -> ! {
    eprintln!("mpaudit-bench: {msg}");
    std::process::exit(2)
}

/// One finished run: wall time, the child's peak RSS, its exit code.
struct Sample {
    secs: f64,
    /// User + system CPU time of the child and its reaped descendants:
    /// steadier than wall time when other work shares the machine.
    cpu_secs: f64,
    maxrss_kib: u64,
    code: i32,
}

/// Runs `cmd` (stdout and stderr to /dev/null unless set), timing it from
/// spawn to reap; `wait4` gives the peak RSS of the child and its reaped
/// descendants.
fn time(cmd: &mut Command) -> Sample {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| die(&format!("spawn {cmd:?}: {e}")));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: our own child; status and ru are valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            die("wait4 failed");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::mem::forget(child); // reaped above
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Sample {
        secs,
        cpu_secs: tv(ru.ru_utime) + tv(ru.ru_stime),
        maxrss_kib: ru.ru_maxrss as u64,
        code,
    }
}

/// Builds a configuration's command.
type MakeCmd = Box<dyn Fn() -> Result<Command, String>>;
/// Builds a command from the workload's arguments.
type ArgsCmd = Box<dyn Fn(&[String]) -> Command>;

/// A way to run a workload.
struct Config {
    name: &'static str,
    /// Builds the command; `None` when the configuration cannot run here
    /// (the string says why).
    make: MakeCmd,
    /// Exit codes that count as success (mpaudit exits 1 on rogue writes).
    ok_codes: &'static [i32],
    /// Run before each run, outside the timing (cleaning logs, fresh copies).
    prepare: Box<dyn Fn()>,
}

struct Row {
    workload: String,
    config: String,
    /// Err: skipped, with the reason.
    samples: Result<Vec<f64>, String>,
    /// CPU seconds of the same runs, and the ratio of their median to bare's.
    cpu: Vec<f64>,
    cpu_ratio: Option<f64>,
    target: Option<f64>,
    /// Ratio to this row's own bare (index into the rows of the group).
    ratio: Option<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Runs `configs` interleaved `runs` times; the first config is the
/// baseline. Returns one row per config.
fn interleave(
    workload: &str,
    configs: &[Config],
    runs: usize,
    targets: &[Option<f64>],
) -> Vec<Row> {
    let mut samples: Vec<Result<Vec<f64>, String>> = configs
        .iter()
        .map(|c| (c.make)().map(|_| Vec::new()))
        .collect();
    let mut cpu: Vec<Vec<f64>> = configs.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for (i, c) in configs.iter().enumerate() {
            let Ok(v) = &mut samples[i] else { continue };
            (c.prepare)();
            let mut cmd = (c.make)().expect("checked above");
            let s = time(&mut cmd);
            if !c.ok_codes.contains(&s.code) {
                samples[i] = Err(format!("failed: exit status {} (run {})", s.code, run + 1));
                continue;
            }
            v.push(s.secs);
            cpu[i].push(s.cpu_secs);
        }
        eprint!(".");
    }
    eprintln!(" {workload}");
    let base = samples[0].as_ref().ok().map(|v| median(v));
    let base_cpu = (!cpu[0].is_empty()).then(|| median(&cpu[0]));
    configs
        .iter()
        .zip(samples.into_iter().zip(cpu))
        .enumerate()
        .map(|(i, (c, (s, cpu)))| {
            let ratio = match (&s, base) {
                (Ok(v), Some(b)) if b > 0.0 => Some(median(v) / b),
                _ => None,
            };
            let cpu_ratio = match base_cpu {
                Some(b) if b > 0.0 && !cpu.is_empty() => Some(median(&cpu) / b),
                _ => None,
            };
            Row {
                workload: workload.to_string(),
                config: c.name.to_string(),
                samples: s,
                cpu,
                cpu_ratio,
                target: targets.get(i).copied().flatten(),
                ratio,
            }
        })
        .collect()
}

fn rm(p: &Path) {
    let _ = std::fs::remove_dir_all(p);
}

/// Copies an example's directory, without what a run of it leaves behind
/// (the runner's directories, and the merged outputs: files the job file's
/// `[merge]` names), so that the copy is as fresh as the checkout whatever
/// the user ran there before (README step 1 runs this very example).
fn copy_dir(from: &Path, to: &Path) {
    let job = std::fs::read_to_string(from.join("job.toml")).unwrap_or_default();
    let outputs: Vec<String> = table_entries(&job, "merge")
        .into_iter()
        .map(|(k, _)| serde_json::from_str::<String>(k).unwrap_or_else(|_| k.to_string()))
        .collect();
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read example dir") {
        let e = e.expect("entry");
        let name = e.file_name();
        let n = name.to_string_lossy();
        if n.starts_with("mpaudit-") || n == "src" || outputs.iter().any(|o| *o == n) {
            continue;
        }
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else if ft.is_file() {
            std::fs::copy(e.path(), to.join(&name)).expect("copy");
        }
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn first_line(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn machine(dir: &Path) -> String {
    let cpu = first_line("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
    let cores = first_line("nproc");
    let mem = first_line("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo");
    let kernel = first_line("uname -sr");
    let libc = first_line("ldd --version 2>&1");
    let fs = first_line(&format!("stat -f -c %T {}", dir.display()));
    let strace = first_line("strace -V 2>&1");
    format!(
        "machine: {cpu}, {cores} cores, {mem}; {kernel}; {libc}\n\
         scratch directory: {} ({fs}); {}",
        dir.display(),
        if strace.is_empty() {
            "strace not installed".into()
        } else {
            strace
        }
    )
}

fn compile_bench(out_dir: &Path) -> PathBuf {
    compile_bench_as(out_dir, "bench", &[])
}

/// The same workloads linked with extra flags (`-static`: a program the
/// preload cannot see, which the runner's seccomp supervisor audits).
fn compile_bench_as(out_dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    std::fs::create_dir_all(out_dir).expect("fixture dir");
    let out = out_dir.join(name);
    // Built under a private name and renamed into place: two benchmarks
    // running at once (the smoke tests) must never run a half-written file.
    let tmp = out_dir.join(format!("{name}.{}.tmp", std::process::id()));
    let src = workspace_root().join("tests/fixtures/bench.c");
    let st = Command::new("cc")
        .args(flags)
        .args(["-O2", "-pthread", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(st.success(), "cc failed on {}", src.display());
    std::fs::rename(&tmp, &out).expect("rename the workload into place");
    out
}

/// Environment of a preloaded run.
fn preload_env(cmd: &mut Command, lib: &Path, logs: &Path) {
    cmd.env("LD_PRELOAD", lib)
        .env("MPAUDIT_LOG_DIR", logs)
        .env_remove("MPAUDIT_WORKER")
        .env_remove("MPAUDIT_FORK_WORKERS")
        .env_remove("MPAUDIT_ROOT_PID");
}

fn quiet(mut c: Command) -> Command {
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn main() {
    let o = parse_args();
    let root = workspace_root();
    let bench_target = root.join("target").join("bench");
    let art = if o.debug {
        artifacts()
    } else {
        eprintln!("mpaudit-bench: building release artifacts (target/bench) ...");
        artifacts_release()
    };
    let lib = art.lib.clone();
    let runner = art.runner.clone();
    let bench = compile_bench(&bench_target.join("fixtures"));
    let scratch_parent = o.dir.clone().unwrap_or_else(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && std::fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly()) {
            shm.to_path_buf()
        } else {
            bench_target.join("tmp")
        }
    });
    let work = scratch_parent.join(format!("mpaudit-bench-{}", std::process::id()));
    rm(&work);
    std::fs::create_dir_all(&work).expect("scratch dir");
    std::fs::write(work.join("input.dat"), b"some input\n").expect("input file");
    let strace = have("strace");
    let runs = o.runs;
    let sc = o.scale;

    let mut rows: Vec<Row> = Vec::new();
    // Lines printed under the table.
    let mut notes: Vec<String> = Vec::new();

    // ---- micro workloads ----
    let micro: [(&str, Vec<String>, Option<f64>); 4] = [
        (
            "read: open+close existing file",
            vec![
                "read".into(),
                (200_000 / sc).max(1).to_string(),
                "input.dat".into(),
            ],
            Some(1.10),
        ),
        (
            "write: create/truncate+write+close",
            vec![
                "write".into(),
                (100_000 / sc).max(1).to_string(),
                "out.root".into(),
            ],
            Some(1.10),
        ),
        (
            "fopen+fputs+fclose",
            vec![
                "fopen".into(),
                (100_000 / sc).max(1).to_string(),
                "out.root".into(),
            ],
            None,
        ),
        (
            "8 threads x open+close",
            vec![
                "threads".into(),
                "8".into(),
                (50_000 / sc).max(1).to_string(),
                "input.dat".into(),
            ],
            Some(1.15),
        ),
    ];
    for (name, args, target) in &micro {
        if !o.wants(&args[0]) {
            continue;
        }
        let mk = |f: ArgsCmd, args: Vec<String>| -> MakeCmd { Box::new(move || Ok(f(&args))) };
        let (w, b, l, r, bn) = (
            work.clone(),
            bench.clone(),
            lib.clone(),
            runner.clone(),
            bench.clone(),
        );
        let logs = work.join("logs");
        let bare = {
            let (w, b) = (w.clone(), b.clone());
            mk(
                Box::new(move |a| {
                    let mut c = Command::new(&b);
                    c.args(a).current_dir(&w);
                    quiet(c)
                }),
                args.clone(),
            )
        };
        let logged = {
            let (w, b, l, logs) = (w.clone(), b.clone(), l.clone(), logs.clone());
            mk(
                Box::new(move |a| {
                    let mut c = Command::new(&b);
                    c.args(a).current_dir(&w);
                    preload_env(&mut c, &l, &logs);
                    quiet(c)
                }),
                args.clone(),
            )
        };
        let policy = {
            let (w, b, l, logs) = (w.clone(), b.clone(), l.clone(), logs.clone());
            mk(
                Box::new(move |a| {
                    let mut c = Command::new(&b);
                    c.args(a).current_dir(&w);
                    preload_env(&mut c, &l, &logs);
                    c.env("MPAUDIT_ACTION", "redirect")
                        .env("MPAUDIT_WORKER", "0")
                        .env("MPAUDIT_OUTPUTS", "*.root")
                        .env("MPAUDIT_JOB_DIR", &w);
                    quiet(c)
                }),
                args.clone(),
            )
        };
        let exec = {
            let (w, logs) = (w.clone(), logs.clone());
            mk(
                Box::new(move |a| {
                    let mut c = Command::new(&r);
                    c.arg("exec")
                        .args(["--workers", "1", "--quiet", "--preload"])
                        .arg(&l)
                        .arg("--log-dir")
                        .arg(&logs)
                        .arg("--")
                        .arg(&bn)
                        .args(a)
                        .current_dir(&w);
                    quiet(c)
                }),
                args.clone(),
            )
        };
        let clean = {
            let w = w.clone();
            move || {
                rm(&w.join("logs"));
                rm(&w.join("mpaudit-workers"));
                rm(&w.join("mpaudit-logs"));
            }
        };
        let cfg = |name: &'static str, make, ok: &'static [i32]| Config {
            name,
            make,
            ok_codes: ok,
            prepare: Box::new(clean.clone()),
        };
        let configs = vec![
            cfg("bare", bare, &[0]),
            cfg("LD_PRELOAD, every access logged", logged, &[0]),
            cfg("LD_PRELOAD, policy + redirect", policy, &[0]),
            cfg("mpaudit exec (end to end, incl. report)", exec, &[0, 1]),
        ];
        rows.extend(interleave(name, &configs, runs, &[None, *target]));

        // strace: 1/20 of the size (it is ~100x slower), against its own
        // bare run of that size, interleaved the same way.
        let mut small = args.clone();
        let ni = if small[0] == "threads" { 2 } else { 1 };
        small[ni] = (small[ni].parse::<u64>().unwrap_or(1) / 20)
            .max(1)
            .to_string();
        let sname = format!("{name} (n/20)");
        if strace {
            let (w1, b1, w2, b2) = (w.clone(), b.clone(), w.clone(), b.clone());
            let configs = vec![
                cfg(
                    "bare",
                    mk(
                        Box::new(move |a| {
                            let mut c = Command::new(&b1);
                            c.args(a).current_dir(&w1);
                            quiet(c)
                        }),
                        small.clone(),
                    ),
                    &[0],
                ),
                cfg(
                    "strace -f -e trace=%file -o /dev/null",
                    mk(
                        Box::new(move |a| {
                            let mut c = Command::new("strace");
                            c.args(["-f", "-e", "trace=%file", "-o", "/dev/null"])
                                .arg(&b2)
                                .args(a)
                                .current_dir(&w2);
                            quiet(c)
                        }),
                        small.clone(),
                    ),
                    &[0],
                ),
            ];
            let mut r = interleave(&sname, &configs, runs, &[]);
            rows.push(r.remove(1));
        } else {
            rows.push(Row {
                workload: sname,
                config: "strace -f -e trace=%file -o /dev/null".into(),
                samples: Err("skipped: strace is not installed".into()),
                cpu: Vec::new(),
                cpu_ratio: None,
                target: None,
                ratio: None,
            });
        }
    }

    // ---- the seccomp supervisor: the same workloads linked statically ----
    if o.wants("seccomp") {
        let sbench = compile_bench_as(&bench_target.join("fixtures"), "bench-static", &["-static"]);
        let n_read = (200_000 / sc).max(1);
        let n_write = (100_000 / sc).max(1);
        for (name, args, target, notified) in [
            (
                "static read: open+close existing file",
                vec!["read".to_string(), n_read.to_string(), "input.dat".into()],
                Some(1.05),
                0,
            ),
            (
                "static write: create/truncate+write+close",
                vec!["write".to_string(), n_write.to_string(), "out.root".into()],
                None,
                n_write,
            ),
        ] {
            let (w1, b1, w2, b2, r, l) = (
                work.clone(),
                sbench.clone(),
                work.clone(),
                sbench.clone(),
                runner.clone(),
                lib.clone(),
            );
            let (w3, b3, r3, l3) = (work.clone(), sbench.clone(), runner.clone(), lib.clone());
            let a1 = args.clone();
            let a3 = args.clone();
            let logs = work.join("logs");
            // Under redirect the workers, logs and merge directories lie
            // outside the job directory (`work`), as jobs keep them.
            let outside = work.with_extension("outside");
            let clean = {
                let (w, o) = (work.clone(), outside.clone());
                move || {
                    rm(&w.join("logs"));
                    rm(&w.join("mpaudit-workers"));
                    rm(&o);
                }
            };
            let configs = vec![
                Config {
                    name: "bare",
                    make: Box::new(move || {
                        let mut c = Command::new(&b1);
                        c.args(&a1).current_dir(&w1);
                        Ok(quiet(c))
                    }),
                    ok_codes: &[0],
                    prepare: Box::new(clean.clone()),
                },
                Config {
                    name: "mpaudit exec, seccomp supervisor (end to end)",
                    make: Box::new(move || {
                        let mut c = Command::new(&r);
                        c.args(["exec", "--workers", "1", "--quiet", "--preload"])
                            .arg(&l)
                            .arg("--log-dir")
                            .arg(&logs)
                            .arg("--")
                            .arg(&b2)
                            .args(&args)
                            .current_dir(&w2);
                        Ok(quiet(c))
                    }),
                    ok_codes: &[0, 1],
                    prepare: Box::new(clean.clone()),
                },
                Config {
                    name: "mpaudit exec --action redirect, seccomp supervisor (end to end)",
                    make: Box::new(move || {
                        let o = w3.with_extension("outside");
                        let mut c = Command::new(&r3);
                        c.args(["exec", "--workers", "1", "--quiet", "--action", "redirect"])
                            .arg("--preload")
                            .arg(&l3)
                            .arg("--workers-dir")
                            .arg(o.join("workers"))
                            .arg("--log-dir")
                            .arg(o.join("logs"))
                            .arg("--merge-dir")
                            .arg(o.join("merged"))
                            .arg("--")
                            .arg(&b3)
                            .args(&a3)
                            .current_dir(&w3);
                        Ok(quiet(c))
                    }),
                    ok_codes: &[0, 1],
                    prepare: Box::new(clean),
                },
            ];
            let r = interleave(name, &configs, runs, &[None, target, None]);
            // The read loop's opens are notified under redirect only
            // (read-your-writes).
            let stopped = [notified, notified.max(n_read * (notified == 0) as u64)];
            for (k, how) in [(1, "the supervisor"), (2, "the supervisor, redirecting")] {
                let calls = stopped[k - 1];
                if calls == 0 {
                    continue;
                }
                if let (Ok(b), Ok(s)) = (&r[0].samples, &r[k].samples) {
                    notes.push(format!(
                        "{name}: {:.1} µs per notified call under {how} (median difference / {calls} calls, runner start-up included)",
                        (median(s) - median(b)) / calls as f64 * 1e6
                    ));
                }
            }
            rows.extend(r);
        }
    }

    // ---- mpaudit exec -- true ----
    if o.wants("true") {
        let tdir = work.join("exec-true");
        std::fs::create_dir_all(&tdir).expect("mkdir");
        let (t1, t2, r, l) = (tdir.clone(), tdir.clone(), runner.clone(), lib.clone());
        let clean_dir = tdir.clone();
        let configs = vec![
            Config {
                name: "bare",
                make: Box::new(move || {
                    let mut c = Command::new("true");
                    c.current_dir(&t1);
                    Ok(quiet(c))
                }),
                ok_codes: &[0],
                prepare: Box::new(|| {}),
            },
            Config {
                name: "mpaudit exec -- true",
                make: Box::new(move || {
                    let mut c = Command::new(&r);
                    c.args(["exec", "--workers", "1", "--quiet", "--preload"])
                        .arg(&l)
                        .args(["--", "true"])
                        .current_dir(&t2);
                    Ok(quiet(c))
                }),
                ok_codes: &[0, 1],
                prepare: Box::new(move || rm(&clean_dir.join("mpaudit-logs"))),
            },
        ];
        // Start-up costs are small: more runs for a stable median.
        rows.extend(interleave(
            "true (process start-up)",
            &configs,
            runs * 4,
            &[],
        ));
    }

    // ---- the athena-like example job end to end ----
    let example = o
        .examples
        .clone()
        .unwrap_or_else(|| root.join("examples"))
        .join("athena-like");
    let athena_name = "athena-like example job (4 workers)";
    let athena_mpaudit = "mpaudit run job.toml (end to end)";
    // The bare job never merges the per-worker files its framework writes
    // (mpaudit-workers/worker_<k>/hist.txt); `mpaudit run` does, with the
    // job's [merge] command. This row does that same work after the bare
    // job, so the runner's own overhead can be told from the merge's.
    let athena_merge = "bare, then the same [merge] command (sh -c)";
    if !o.wants("athena") {
    } else if example.join("job.toml").is_file() {
        let built = !example.join("build.sh").is_file()
            || Command::new("sh")
                .arg(example.join("build.sh"))
                .status()
                .is_ok_and(|s| s.success());
        let job_text = std::fs::read_to_string(example.join("job.toml")).unwrap_or_default();
        let command = job_command(&job_text);
        let merge_line = command
            .as_deref()
            .and_then(|c| bare_then_merge(c, &merge_commands(&job_text)));
        match (built, command) {
            (true, Some(command)) => {
                let a = work.join("athena-bare");
                let b = work.join("athena-run");
                let m = work.join("athena-merge");
                let (ex1, ex2, ex3) = (example.clone(), example.clone(), example.clone());
                let (a1, b1, m1) = (a.clone(), b.clone(), m.clone());
                let (a2, b2, r) = (a.clone(), b.clone(), runner.clone());
                let l = lib.clone();
                let configs = vec![
                    Config {
                        name: "bare",
                        make: Box::new(move || {
                            let mut c = Command::new(&command[0]);
                            c.args(&command[1..])
                                .env("ATHENA_PROC_NUMBER", "4")
                                .current_dir(&a2);
                            Ok(quiet(c))
                        }),
                        ok_codes: &[0],
                        prepare: Box::new(move || {
                            rm(&a1);
                            copy_dir(&ex1, &a1);
                        }),
                    },
                    Config {
                        name: athena_mpaudit,
                        make: Box::new(move || {
                            let mut c = Command::new(&r);
                            c.args(["run", "job.toml", "--quiet", "--preload"])
                                .arg(&l)
                                .current_dir(&b2);
                            Ok(quiet(c))
                        }),
                        ok_codes: &[0, 1],
                        prepare: Box::new(move || {
                            rm(&b1);
                            copy_dir(&ex2, &b1);
                        }),
                    },
                    Config {
                        name: athena_merge,
                        make: Box::new(move || {
                            let line = merge_line.as_ref().ok_or(
                                "skipped: no [merge] command over plain file names in job.toml",
                            )?;
                            let mut c = Command::new("sh");
                            c.args(["-c", line])
                                .env("ATHENA_PROC_NUMBER", "4")
                                .current_dir(&m);
                            Ok(quiet(c))
                        }),
                        ok_codes: &[0],
                        prepare: Box::new(move || {
                            rm(&m1);
                            copy_dir(&ex3, &m1);
                        }),
                    },
                ];
                let r = interleave(athena_name, &configs, runs, &[None, Some(1.03), None]);
                if let (Ok(run), Ok(merged)) = (&r[1].samples, &r[2].samples) {
                    notes.push(format!(
                        "athena-like: `{athena_mpaudit}` against `{athena_merge}` \
                         (the same work without mpaudit): {:.2}x, +{:.1} ms (medians)",
                        median(run) / median(merged),
                        (median(run) - median(merged)) * 1000.0
                    ));
                }
                rows.extend(r);
            }
            (built, _) => {
                let why = if built {
                    "skipped: no [job] command found in examples/athena-like/job.toml"
                } else {
                    "skipped: examples/athena-like/build.sh failed"
                };
                for c in ["bare", athena_mpaudit, athena_merge] {
                    rows.push(skipped(athena_name, c, why));
                }
            }
        }
    } else {
        for c in ["bare", athena_mpaudit, athena_merge] {
            rows.push(skipped(
                athena_name,
                c,
                "skipped: examples/athena-like not present",
            ));
        }
    }

    // ---- memory ----
    let mem = o.wants("memory").then(|| memory(&bench, &lib, &work, runs));

    // ---- report throughput ----
    let report = if o.wants("report") {
        report_throughput(&runner, &work, sc, runs)
    } else {
        Vec::new()
    };

    rm(&work);
    let text = render(
        &o,
        &machine(&scratch_parent),
        &rows,
        &notes,
        mem.as_ref(),
        &report,
    );
    print!("{text}");
    if let Some(out) = &o.output {
        std::fs::write(out, &text).unwrap_or_else(|e| die(&format!("{}: {e}", out.display())));
    }
    let _ = std::io::stdout().flush();
}

fn skipped(workload: &str, config: &str, why: &str) -> Row {
    Row {
        workload: workload.into(),
        config: config.into(),
        samples: Err(why.into()),
        cpu: Vec::new(),
        cpu_ratio: None,
        target: None,
        ratio: None,
    }
}

/// The `key = value` lines of a job file's `[table]`, as text: the crude
/// reading the benchmark needs (one line per entry), not a TOML parser.
fn table_entries<'t>(text: &'t str, table: &str) -> Vec<(&'t str, &'t str)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') && !t.starts_with("[[") && t.ends_with(']') && !t.contains('=') {
            inside = t == format!("[{table}]");
            continue;
        }
        if inside && !t.starts_with('#') {
            if let Some((k, v)) = t.split_once('=') {
                out.push((k.trim(), v.trim()));
            }
        }
    }
    out
}

/// `command = [...]` of the `[job]` table: a TOML array of plain strings
/// is also a JSON array.
fn job_command(text: &str) -> Option<Vec<String>> {
    let (_, v) = table_entries(text, "job")
        .into_iter()
        .find(|(k, _)| *k == "command")?;
    let cmd: Vec<String> = serde_json::from_str(v).ok()?;
    (!cmd.is_empty()).then_some(cmd)
}

/// The `[merge]` rules whose merger is a command: (glob, template).
fn merge_commands(text: &str) -> Vec<(String, Vec<String>)> {
    table_entries(text, "merge")
        .into_iter()
        .filter_map(|(k, v)| {
            let glob = serde_json::from_str::<String>(k).unwrap_or_else(|_| k.to_string());
            let template: Vec<String> = serde_json::from_str(v).ok()?;
            (!template.is_empty()).then_some((glob, template))
        })
        .collect()
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A shell line that runs the job, then each merge command over the files
/// its workers wrote in their own directories (mpaudit-workers/worker_<k>/,
/// the framework's default), as `mpaudit run` does after the job. Only for
/// rules over a plain file name in the job directory (the output's name).
fn bare_then_merge(command: &[String], merges: &[(String, Vec<String>)]) -> Option<String> {
    if merges.is_empty() {
        return None;
    }
    let mut parts = vec![command
        .iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ")];
    for (glob, template) in merges {
        if glob.contains(['/', '*', '?', '[', '{']) {
            return None;
        }
        let args: Vec<String> = template
            .iter()
            .map(|a| {
                if a == "{inputs}" {
                    format!("mpaudit-workers/worker_*/{}", sh_quote(glob))
                } else {
                    sh_quote(&a.replace("{output}", glob))
                }
            })
            .collect();
        parts.push(args.join(" "));
    }
    Some(parts.join(" && "))
}

struct Memory {
    /// (VmSize, VmRSS) in KiB: bare, preloaded; medians.
    bare: (u64, u64),
    preloaded: (u64, u64),
}

fn status_kib(out: &[u8]) -> (u64, u64) {
    let text = String::from_utf8_lossy(out);
    let get = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmSize:"), get("VmRSS:"))
}

fn memory(bench: &Path, lib: &Path, work: &Path, runs: usize) -> Memory {
    let mut bare = Vec::new();
    let mut pre = Vec::new();
    let status_of = |mut c: Command| {
        let out = c.output().expect("run bench mem");
        if !out.status.success() {
            die(&format!(
                "bench mem failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        status_kib(&out.stdout)
    };
    for _ in 0..runs {
        let mut c = Command::new(bench);
        c.args(["mem", "out.root"]).current_dir(work);
        bare.push(status_of(c));
        let mut c = Command::new(bench);
        c.args(["mem", "out.root"]).current_dir(work);
        preload_env(&mut c, lib, &work.join("logs"));
        pre.push(status_of(c));
        rm(&work.join("logs"));
    }
    let med = |v: &[(u64, u64)]| {
        let a: Vec<f64> = v.iter().map(|x| x.0 as f64).collect();
        let b: Vec<f64> = v.iter().map(|x| x.1 as f64).collect();
        (median(&a) as u64, median(&b) as u64)
    };
    Memory {
        bare: med(&bare),
        preloaded: med(&pre),
    }
}

struct ReportRun {
    events: u64,
    distinct_paths: u64,
    secs: Vec<f64>,
    maxrss_kib: u64,
}

/// Call sites for the synthetic events' component: `sites` function
/// addresses (+4, inside each) spread over a real object with line tables
/// (the runner itself), so `mpaudit report` pays for naming them.
fn call_sites(object: &Path, sites: usize) -> Vec<u64> {
    let out = Command::new("nm")
        .args(["--defined-only", "-n"])
        .arg(object)
        .output()
        .unwrap_or_else(|e| die(&format!("nm: {e}")));
    let text: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, kind) = (f.next()?, f.next()?);
            matches!(kind, "t" | "T").then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .collect();
    if text.is_empty() {
        die(&format!("no functions in {}", object.display()));
    }
    (0..sites)
        .map(|i| text[i * text.len() / sites] + 4)
        .collect()
}

/// Synthetic logs: 8 workers (one log file each), reads and writes over a
/// fixed set of distinct paths, writes attributed with a 4-frame stack and
/// a verdict (the component one of `sites` in `object`), as a library with the policy writes them (docs/events.md).
fn write_logs(dir: &Path, events: u64, paths: u64, object: &Path, sites: &[u64]) -> u64 {
    let object = object.display();
    let mut written = 0;
    std::fs::create_dir_all(dir).expect("log dir");
    let workers = 8u64;
    let per = events / workers;
    for w in 0..workers {
        let pid = 1000 + w;
        let f = std::fs::File::create(dir.join(format!(
            "mpaudit-{pid}-{}.jsonl",
            1_763_750_000_000_000_000u64 + w
        )))
        .expect("create log");
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        let common = |op: &str, kind: &str, i: u64| {
            format!(
                r#"{{"v":1,"ts":{},"kind":"{kind}","op":"{op}","pid":{pid},"ppid":999,"tid":{pid},"worker":{w}"#,
                1_763_750_000_000_000_000u64 + i
            )
        };
        writeln!(
            out,
            r#"{},"argv":["bin/minifw","jobOptions.txt"],"exe":"/job/bin/minifw","cwd":"/job","root":false}}"#,
            common("start", "process", 0)
        )
        .expect("write");
        for i in 1..per.saturating_sub(1).max(1) {
            let p = (i * 7919 + w * 104_729) % paths;
            if i % 10 < 7 {
                writeln!(
                    out,
                    r#"{},"path":"data/in-{p}.dat","abs":"/job/data/in-{p}.dat","mode":"read","create":false,"truncate":false,"append":false,"flags":["O_RDONLY","O_CLOEXEC"],"result":5,"errno":null}}"#,
                    common("openat", "access", i)
                )
                .expect("write");
            } else {
                let (verdict, action) = if p % 3 == 0 {
                    ("rogue", "logged")
                } else {
                    ("declared", "redirected")
                };
                let target = if action == "redirected" {
                    format!(r#","target":"/job/mpaudit-workers/worker_{w}/out-{p}.root""#)
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    r#"{},"path":"out-{p}.root","abs":"/job/out-{p}.root","mode":"write","create":true,"truncate":true,"append":false,"flags":["O_WRONLY","O_CREAT","O_TRUNC"],"result":6,"errno":null,"component":{{"object":"{object}","vaddr":{site}}},"stack":[{{"object":"{object}","vaddr":{site}}},{{"object":"/job/bin/minifw","vaddr":4660}},{{"object":"/lib/x86_64-linux-gnu/libc.so.6","vaddr":160329}},{{"object":"/job/bin/minifw","vaddr":4181}}],"verdict":"{verdict}","action":"{action}"{target}}}"#,
                    common("openat", "access", i),
                    site = sites[p as usize % sites.len()],
                )
                .expect("write");
            }
        }
        writeln!(out, r#"{},"status":0}}"#, common("exit", "process", per)).expect("write");
        written += per.saturating_sub(1).max(1) + 1;
    }
    written
}

fn report_throughput(runner: &Path, work: &Path, sc: u64, runs: usize) -> Vec<ReportRun> {
    let paths = (5_000 / sc).max(10);
    let sites = call_sites(runner, 200);
    let mut out = Vec::new();
    for events in [1_000_000 / sc, 2_000_000 / sc] {
        let events = events.max(16);
        let dir = work.join(format!("report-{events}"));
        let written = write_logs(&dir, events, paths, runner, &sites);
        let mut secs = Vec::new();
        let mut maxrss = 0;
        for _ in 0..runs {
            let mut c = Command::new(runner);
            c.args(["report", "--format", "json"])
                .arg(&dir)
                .current_dir(work);
            let s = time(&mut quiet(c));
            if s.code != 0 && s.code != 1 {
                die(&format!("mpaudit report failed with status {}", s.code));
            }
            secs.push(s.secs);
            maxrss = maxrss.max(s.maxrss_kib);
        }
        // The figure is only worth something if the report read every
        // event (a report that picked one run of many once read 1 file).
        let j = Command::new(runner)
            .args(["report", "--format", "json"])
            .arg(&dir)
            .output()
            .expect("run mpaudit report");
        let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap_or_default();
        if v["summary"]["events"].as_u64() != Some(written) {
            die(&format!(
                "mpaudit report read {} of the {written} events",
                v["summary"]["events"]
            ));
        }
        rm(&dir);
        out.push(ReportRun {
            events: written,
            distinct_paths: paths,
            secs,
            maxrss_kib: maxrss,
        });
    }
    out
}

fn fmt_s(s: f64) -> String {
    if s < 0.1 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.3} s")
    }
}

fn render(
    o: &Opts,
    machine: &str,
    rows: &[Row],
    notes: &[String],
    mem: Option<&Memory>,
    report: &[ReportRun],
) -> String {
    let mut t = String::new();
    t += "## mpaudit overhead benchmark\n\n";
    t += &format!(
        "{machine}\nruns: {} per configuration, interleaved; sizes divided by {}; {} build\n\n",
        o.runs,
        o.scale,
        if o.debug { "DEBUG" } else { "release" }
    );
    t += "| workload | configuration | median | min–max | ratio to bare | target | met | CPU median | CPU ratio |\n";
    t += "|---|---|---|---|---|---|---|---|---|\n";
    let mut bare_median = std::collections::HashMap::new();
    for r in rows {
        if r.config == "bare" {
            if let Ok(v) = &r.samples {
                bare_median.insert(r.workload.clone(), median(v));
            }
        }
    }
    for r in rows {
        let (med, range, ratio) = match &r.samples {
            Ok(v) if !v.is_empty() => {
                let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = v.iter().cloned().fold(0.0, f64::max);
                let ratio = if r.config == "bare" {
                    "1.00x".to_string()
                } else if r.workload.starts_with("true") {
                    // Start-up: the difference matters, not the ratio.
                    let b = bare_median.get(&r.workload).copied().unwrap_or(0.0);
                    format!("+{:.1} ms", (median(v) - b) * 1000.0)
                } else {
                    r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default()
                };
                (
                    fmt_s(median(v)),
                    format!("{}–{}", fmt_s(lo), fmt_s(hi)),
                    ratio,
                )
            }
            Ok(_) => ("no runs".into(), String::new(), String::new()),
            Err(why) => (why.clone(), String::new(), String::new()),
        };
        let (target, met) = if r.workload.starts_with("true") && r.config != "bare" {
            let b = bare_median.get(&r.workload).copied().unwrap_or(0.0);
            let d = r.samples.as_ref().ok().map(|v| (median(v) - b) * 1000.0);
            (
                "≤ +20 ms".to_string(),
                d.map(|d| yes(d <= 20.0)).unwrap_or_default(),
            )
        } else {
            match (r.target, r.ratio) {
                (Some(tg), Some(x)) => (format!("≤ {tg:.2}x"), yes(x <= tg)),
                (Some(tg), None) => (format!("≤ {tg:.2}x"), String::new()),
                _ => (String::new(), String::new()),
            }
        };
        let (cpu_med, cpu_ratio) = if r.cpu.is_empty() {
            (String::new(), String::new())
        } else {
            let ratio = match r.cpu_ratio {
                Some(x) if !r.workload.starts_with("true") => format!("{x:.2}x"),
                _ => String::new(),
            };
            (fmt_s(median(&r.cpu)), ratio)
        };
        t += &format!(
            "| {} | {} | {med} | {range} | {ratio} | {target} | {met} | {cpu_med} | {cpu_ratio} |\n",
            r.workload, r.config
        );
    }
    if !notes.is_empty() {
        t += "\n";
        for n in notes {
            t += &format!("{n}\n");
        }
    }
    if let Some(mem) = mem {
        let dsize = mem.preloaded.0 as i64 - mem.bare.0 as i64;
        let drss = mem.preloaded.1 as i64 - mem.bare.1 as i64;
        t += "\n| per-process memory | bare | LD_PRELOAD | added | target | met |\n|---|---|---|---|---|---|\n";
        t += &format!(
            "| VmSize | {} KiB | {} KiB | {} KiB | ≤ 65536 KiB | {} |\n",
            mem.bare.0,
            mem.preloaded.0,
            dsize,
            yes(dsize <= 65536)
        );
        t += &format!(
            "| VmRSS | {} KiB | {} KiB | {} KiB | ≤ 4096 KiB | {} |\n",
            mem.bare.1,
            mem.preloaded.1,
            drss,
            yes(drss <= 4096)
        );
    }
    if !report.is_empty() {
        t += "\n| `mpaudit report --format json` | distinct paths | median | min–max | events/s | peak RSS | target | met |\n|---|---|---|---|---|---|---|---|\n";
        for r in report {
            let med = median(&r.secs);
            let lo = r.secs.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = r.secs.iter().cloned().fold(0.0, f64::max);
            let eps = r.events as f64 / med;
            t += &format!(
                "| {} events | {} | {} | {}–{} | {:.2}M | {:.1} MiB | ≥ 1M events/s | {} |\n",
                r.events,
                r.distinct_paths,
                fmt_s(med),
                fmt_s(lo),
                fmt_s(hi),
                eps / 1e6,
                r.maxrss_kib as f64 / 1024.0,
                yes(eps >= 1e6)
            );
        }
        if report.len() == 2 {
            let (a, b) = (report[0].maxrss_kib as f64, report[1].maxrss_kib as f64);
            t += &format!(
            "\npeak RSS of the report, 2x the events over the same paths: {:.2}x (bounded by distinct paths: {})\n",
            b / a.max(1.0),
            yes(b <= a * 1.25)
        );
        }
    }
    t
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "**no**" }.to_string()
}
