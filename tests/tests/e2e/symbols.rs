//! Stack attribution without the loader lock, and the runner's names for
//! the frames the library records as (object, vaddr) (issue 10, items 3-4).

use mpaudit_tests::*;
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;

/// A hang is the bug these tests look for: `run` kills the program and
/// fails the test past this.
const HANG: Duration = Duration::from_secs(60);

fn same_as_bare(bare: &Output, audited: &Output) {
    assert_eq!(
        (audited.status.code(), stdout(audited)),
        (bare.status.code(), stdout(bare)),
        "audited stderr: {}",
        String::from_utf8_lossy(&audited.stderr)
    );
}

// Regression: the stack walk named frames with dladdr, which waits for the
// loader lock; dlopen holds it while the constructor joins the thread that
// is inside our fopen hook: a deadlock.
e2e!(
    a_dlopen_constructor_joining_a_thread_that_fopens_does_not_deadlock,
    |dir| {
        let lib = fixture("libctor_thread.so");
        let prog = fixture("dlopen_locks");
        let bare = run(dir.bare(&prog).arg("ctor-thread").arg(&lib), HANG);
        let bare_file = std::fs::read(dir.join("ctor-thread.txt")).expect("bare run wrote");
        std::fs::remove_file(dir.join("ctor-thread.txt")).unwrap();
        let audited = run(dir.audited(&prog).arg("ctor-thread").arg(&lib), HANG);
        same_as_bare(&bare, &audited);
        assert_eq!(
            std::fs::read(dir.join("ctor-thread.txt")).unwrap(),
            bare_file
        );
        let ev = dir.events();
        let writes: Vec<&Value> = accesses(&ev, "ctor-thread.txt")
            .into_iter()
            .filter(|e| e["mode"] == "write")
            .collect();
        assert_eq!(writes.len(), 1, "{ev:#?}");
        let component = &writes[0]["component"];
        assert!(
            component["object"]
                .as_str()
                .is_some_and(|o| o.ends_with("/libctor_thread.so")),
            "the thread's frames are found inside dlopen: {component}"
        );
        assert_eq!(frame_function(component), "writer");
    }
);

// Regression: a SIGALRM handler's open() interrupting dlopen/dlclose
// called dladdr, which waited for the loader lock its own thread held.
e2e!(
    a_sigalrm_handler_opening_during_dlopen_and_dlclose_does_not_deadlock,
    |dir| {
        let lib = fixture("libcomp_legacy.so");
        let prog = fixture("dlopen_locks");
        let args = |c: &mut Command| {
            c.arg("alarm-loop").arg(&lib).arg("1500");
        };
        let mut bare = dir.bare(&prog);
        args(&mut bare);
        let bare = run(&mut bare, HANG);
        let mut audited = dir.audited(&prog);
        args(&mut audited);
        let audited = run(&mut audited, HANG);
        same_as_bare(&bare, &audited);
        assert_eq!(stdout(&audited), "done\n");
        let ev = dir.events();
        let opens = accesses(&ev, "alarm.txt");
        assert!(
            opens.len() >= 20,
            "the handler's opens are logged: {}",
            opens.len()
        );
        assert!(opens.iter().all(|e| e["component"]["object"]
            .as_str()
            .is_some_and(|o| o.ends_with("/dlopen_locks"))));
    }
);

/// The line of `marker` in a fixture's source (1-based).
fn line_of(source: &str, marker: &str) -> u64 {
    let text =
        std::fs::read_to_string(workspace_root().join("tests/fixtures").join(source)).unwrap();
    text.lines().position(|l| l.contains(marker)).expect(marker) as u64 + 1
}

// Regression: components were named after the nearest *exported* symbol
// (dladdr), so a static or hidden function got its exported neighbour's
// name or none; the report now reads .symtab and DWARF.
e2e!(
    static_and_hidden_functions_are_named_with_file_and_line,
    |dir| {
        let lib = fixture("libhidden_writers.so");
        run_ok(dir.audited(fixture("hidden_main")).arg(&lib));
        let report = |format: &str| {
            run(
                Command::new(&artifacts().runner)
                    .args(["report", "--format", format])
                    .arg(dir.logs()),
                DEADLINE,
            )
        };
        let json: Value = serde_json::from_slice(&report("json").stdout).unwrap();
        let text = stdout(&report("text"));
        for function in ["static_write", "hidden_write"] {
            let line = line_of("hidden_writers.c", &format!("{function}'s fopen"));
            let g = json["rogue"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["function"] == function)
                .unwrap_or_else(|| panic!("no group for {function}: {:#}", json["rogue"]));
            assert_eq!(g["symbol"], function, "{g:#}");
            assert!(
                g["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("hidden_writers.c")),
                "{g:#}"
            );
            assert_eq!(g["line"].as_u64(), Some(line), "{g:#}");
            assert!(
                text.contains(&format!(" {function} ("))
                    && text.contains(&format!("hidden_writers.c:{line})")),
                "{text}"
            );
        }
    }
);

// The policy's symbol patterns are matched at hook time from the object's
// own dynamic symbol table (no dladdr): a component registered by function
// name is `registered`, its neighbour in another library is not.
e2e!(components_registered_by_symbol_match_at_hook_time, |dir| {
    let libdir = fixture("libcomp_registered.so")
        .parent()
        .unwrap()
        .to_path_buf();
    fixture("libcomp_legacy.so");
    let mut cmd = dir.audited(fixture("components_main"));
    cmd.arg(&libdir).env("MPAUDIT_COMPONENTS", "registered_w*");
    run_ok(&mut cmd);
    let ev = dir.events();
    let verdict = |name: &str| {
        accesses(&ev, name)
            .into_iter()
            .find(|e| e["mode"] == "write")
            .unwrap_or_else(|| panic!("{name}: {ev:#?}"))["verdict"]
            .clone()
    };
    assert_eq!(verdict("reg.txt"), "registered");
    assert_eq!(verdict("legacy.txt"), "rogue");
});

// The writer's mangled name carries an ABI tag, which the policy's
// qualified-name rendering refuses: a raw pattern still matches it at hook
// time, and the report names it as c++filt does.
e2e!(
    an_abi_tagged_component_matches_raw_and_is_named_readably,
    |dir| {
        let prog = fixture("abi_tagged");
        let mut cmd = dir.audited(&prog);
        cmd.arg("registered.txt")
            .env("MPAUDIT_COMPONENTS", "_ZN7HistSvc*B5cxx11*");
        run_ok(&mut cmd);
        run_ok(dir.audited(&prog).arg("rogue.txt"));
        let ev = dir.events();
        let verdict = |name: &str| accesses(&ev, name)[0]["verdict"].clone();
        assert_eq!(verdict("registered.txt"), "registered");
        assert_eq!(verdict("rogue.txt"), "rogue");
        let out = run(
            Command::new(&artifacts().runner)
                .args(["report", "--format", "json"])
                .arg(dir.logs()),
            DEADLINE,
        );
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        let g = &json["rogue"][0];
        assert_eq!(g["symbol"], "_ZN7HistSvc11write_namedB5cxx11EPKc", "{g:#}");
        assert_eq!(
            g["function"], "HistSvc::write_named[abi:cxx11](char const*)",
            "{g:#}"
        );
        assert!(
            g["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("abi_tagged.cpp")),
            "{g:#}"
        );
    }
);

// The report is made after the run, from the object files: one deleted
// since (a job's scratch build) leaves its call sites unnamed, never a
// failure or a wrong name.
e2e!(a_deleted_object_leaves_its_call_sites_unnamed, |dir| {
    let lib = dir.join("libgone.so");
    std::fs::copy(fixture("libhidden_writers.so"), &lib).unwrap();
    run_ok(dir.audited(fixture("hidden_main")).arg(&lib));
    std::fs::remove_file(&lib).unwrap();
    let out = run(
        Command::new(&artifacts().runner)
            .args(["report", "--format", "json"])
            .arg(dir.logs()),
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(1), "rogue writes, reported");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = json["rogue"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "one per call site: {groups:#?}");
    for g in groups {
        assert!(
            g["object"].as_str().unwrap().ends_with("libgone.so"),
            "{g:#}"
        );
        assert!(
            g["vaddr"].is_u64() && g["function"].is_null() && g["symbol"].is_null(),
            "{g:#}"
        );
    }
    let text = run(
        Command::new(&artifacts().runner)
            .args(["report"])
            .arg(dir.logs()),
        DEADLINE,
    );
    assert!(stdout(&text).contains("libgone.so+0x"), "{}", stdout(&text));
});

/// The write events on `name`.
fn writes_to<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    accesses(events, name)
        .into_iter()
        .filter(|e| e["mode"] == "write")
        .collect()
}

// Regression (review1 item 1): once a program registered unwind tables
// (__register_frame, as JITs do), libgcc's _Unwind_Find_FDE takes a mutex
// at every unwind step; a SIGALRM handler's open() interrupting a throw
// walked the stack into that mutex and hung.
e2e!(
    registered_unwind_tables_and_a_signal_handler_open_do_not_deadlock,
    |dir| {
        let prog = fixture("frames_registered_signal");
        // 50,000 throws under a 50 us timer: the previous library hung in
        // every run.
        let bare = run(dir.bare(&prog).arg("50000"), HANG);
        assert_eq!(stdout(&bare), "caught 50000\n");
        let audited = run(dir.audited(&prog).arg("50000"), HANG);
        same_as_bare(&bare, &audited);
        let ev = dir.events();
        let writes = writes_to(&ev, "sig.out");
        assert!(!writes.is_empty(), "the handler's opens are logged");
        for w in &writes {
            assert_eq!(w["stack_truncated"], true, "{w}");
            let stack = w["stack"].as_array().expect("a stack");
            assert_eq!(stack.len(), 1, "only the immediate caller: {w}");
            assert!(
                w["component"]["object"]
                    .as_str()
                    .is_some_and(|o| o.ends_with("/frames_registered_signal")),
                "{w}"
            );
            assert!(frame_function(&w["component"]).contains("on_alarm"), "{w}");
        }
    }
);

// Regression (review1 item 1): a worker forked while another thread was
// inside a throw (holding libgcc's object_mutex, frames registered) hung
// in its first write's stack walk.
e2e!(
    registered_unwind_tables_and_forked_writers_do_not_deadlock,
    |dir| {
        let prog = fixture("frames_registered_fork");
        let bare = run(dir.bare(&prog).args(["300", "reg"]), HANG);
        assert_eq!(stdout(&bare), "300/300 workers ok\n");
        std::fs::remove_file(dir.join("worker.out")).unwrap();
        let audited = run(dir.audited(&prog).args(["300", "reg"]), HANG);
        same_as_bare(&bare, &audited);
        let ev = dir.events();
        let writes = writes_to(&ev, "worker.out");
        assert_eq!(writes.len(), 300);
        assert!(writes.iter().all(|w| w["stack_truncated"] == true));
    }
);

// Without registered tables the stack is walked in full, and no event
// says it was cut short.
e2e!(unregistered_unwind_tables_keep_the_full_stack, |dir| {
    let prog = fixture("frames_registered_fork");
    run_ok(dir.audited(&prog).arg("3"));
    let ev = dir.events();
    let writes = writes_to(&ev, "worker.out");
    assert_eq!(writes.len(), 3);
    for w in writes {
        assert!(w.get("stack_truncated").is_none(), "{w}");
        assert!(w["stack"].as_array().unwrap().len() > 1, "{w}");
    }
});

// A truncated stack may hide a registered component: with components
// configured its rogue write is logged, never denied (the bare run
// succeeds); with none configured nothing could be hidden, and deny holds.
e2e!(
    a_truncated_stack_never_denies_when_components_are_configured,
    |dir| {
        let prog = fixture("frames_registered_fork");
        let bare = run(dir.bare(&prog).args(["5", "reg"]), HANG);
        assert_eq!(stdout(&bare), "5/5 workers ok\n");
        let audited = run(
            dir.audited(&prog)
                .args(["5", "reg"])
                .env("MPAUDIT_ACTION", "deny")
                .env("MPAUDIT_COMPONENTS", "libnot_on_this_stack.so"),
            HANG,
        );
        same_as_bare(&bare, &audited);
        let ev = dir.events();
        let writes = writes_to(&ev, "worker.out");
        assert_eq!(writes.len(), 5);
        for w in writes {
            assert_eq!(
                (&w["verdict"], &w["action"], &w["stack_truncated"]),
                (
                    &Value::from("rogue"),
                    &Value::from("logged"),
                    &Value::from(true)
                ),
                "{w}"
            );
        }
        let denied = run(
            dir.audited(&prog)
                .args(["5", "reg"])
                .env("MPAUDIT_ACTION", "deny"),
            HANG,
        );
        assert_eq!(stdout(&denied), "0/5 workers ok\n");
    }
);

/// Runs stale_main over two libraries built from one source (so dlopen
/// puts the second where the first was): the first writes good.out, the
/// second bad.out, with `libstale_good.so` registered and rogue writes
/// denied; returns stdout and the events.
fn load_in_turn(dir: &TestDir, first: &str, second: &str) -> (String, Vec<Value>) {
    let out = run(
        dir.audited(fixture("stale_main"))
            .arg(fixture(first))
            .arg(fixture(second))
            .env("MPAUDIT_ACTION", "deny")
            .env("MPAUDIT_COMPONENTS", "libstale_good.so"),
        HANG,
    );
    let text = stdout(&out);
    let addresses: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split(" at ").nth(1))
        .collect();
    assert_eq!(addresses.len(), 2, "{text}");
    assert_eq!(
        addresses[0], addresses[1],
        "the test needs both at one address"
    );
    (text, dir.events())
}

fn the_write<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let w = writes_to(events, name);
    assert_eq!(w.len(), 1, "{events:#?}");
    w[0]
}

// Regression (review1 item 2): call sites were cached by address alone;
// after dlclose + dlopen at the same address the second library's write
// was named as the first (registered <-> rogue, in either order).
e2e!(
    a_library_loaded_where_a_closed_one_was_is_named_afresh,
    |dir| {
        let (_, ev) = load_in_turn(&dir, "libstale_good.so", "libstale_bad.so");
        let good = the_write(&ev, "good.out");
        let bad = the_write(&ev, "bad.out");
        let object = |w: &Value| w["component"]["object"].as_str().unwrap_or("").to_owned();
        assert!(object(good).ends_with("/libstale_good.so"), "{good}");
        assert_eq!(good["verdict"], "registered");
        assert!(object(bad).ends_with("/libstale_bad.so"), "{bad}");
        assert_eq!(
            (&bad["verdict"], &bad["action"]),
            (&"rogue".into(), &"denied".into())
        );
        std::fs::remove_dir_all(dir.logs()).unwrap();
        // stale_main names the outputs by position: now libstale_good.so,
        // loaded second, writes bad.out.
        let (_, ev) = load_in_turn(&dir, "libstale_bad.so", "libstale_good.so");
        let first = the_write(&ev, "good.out");
        assert!(object(first).ends_with("/libstale_bad.so"), "{first}");
        let second = the_write(&ev, "bad.out");
        assert!(object(second).ends_with("/libstale_good.so"), "{second}");
        assert_eq!(
            (&second["verdict"], &second["action"]),
            (&"registered".into(), &"none".into())
        );
    }
);

/// A program with `sites` distinct functions, each opening /dev/null for
/// writing; `prog PASSES LIB` calls them all PASSES times, then LIB's
/// do_write("good.out"), printing its result.
fn many_call_sites(dir: &TestDir, sites: usize) -> std::path::PathBuf {
    let mut c = String::from(
        "#include <dlfcn.h>\n#include <fcntl.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n",
    );
    for i in 0..sites {
        c += &format!(
            "__attribute__((noinline)) void f{i}(void) {{ int fd = open(\"/dev/null\", O_WRONLY); if (fd >= 0) close(fd); }}\n"
        );
    }
    c += "void (*tab[])(void) = {";
    c += &(0..sites)
        .map(|i| format!("f{i}"))
        .collect::<Vec<_>>()
        .join(",");
    c += &format!(
        "}};\nint main(int argc, char **argv) {{\n  for (int p = 0; p < atoi(argv[1]); p++) for (int i = 0; i < {sites}; i++) tab[i]();\n  void *h = dlopen(argv[2], RTLD_NOW); if (!h) return 2;\n  int (*w)(const char *) = (int (*)(const char *))dlsym(h, \"do_write\");\n  int r = w(\"good.out\"); printf(\"do_write=%d\\n\", r); return r ? 1 : 0;\n}}\n"
    );
    let src = dir.join("many_sites.c");
    std::fs::write(&src, c).unwrap();
    let out = dir.join("many_sites");
    run_ok(
        Command::new("cc")
            .args(["-O1", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-ldl"),
    );
    out
}

// Regression (review1 item 3): every uncached lookup copied the object's
// path into a 1 MiB arena; with more call sites than cache slots it ran
// out, frames became {null, null}, and a registered component's write was
// judged rogue and denied.
e2e!(many_call_sites_never_make_a_registered_write_rogue, |dir| {
    let prog = many_call_sites(&dir, 6000);
    let lib = fixture("libstale_good.so");
    let bare = run(dir.bare(&prog).arg("20").arg(&lib), HANG);
    assert_eq!(stdout(&bare), "do_write=0\n");
    std::fs::remove_file(dir.join("good.out")).unwrap();
    // No log: 120,000 events would only slow the test down; the deny is
    // what the program sees.
    let audited = run(
        dir.audited(&prog)
            .arg("20")
            .arg(&lib)
            .env_remove("MPAUDIT_LOG_DIR")
            .env("MPAUDIT_ACTION", "deny")
            .env("MPAUDIT_COMPONENTS", "libstale_good.so"),
        HANG,
    );
    same_as_bare(&bare, &audited);
    assert!(dir.join("good.out").exists());
});

// Regression (review1 item 4): dlopen("./libstale_good.so") left the
// object named "./libstale_good.so", so a component registered by its
// absolute path did not match: the registered write was denied.
e2e!(
    a_library_opened_by_a_relative_path_is_named_absolutely,
    |dir| {
        std::fs::copy(fixture("libstale_good.so"), dir.join("libstale_good.so")).unwrap();
        std::fs::copy(fixture("libstale_bad.so"), dir.join("libstale_bad.so")).unwrap();
        let abs = dir.join("libstale_good.so").to_str().unwrap().to_owned();
        let prog = fixture("stale_main");
        let bare = run(
            dir.bare(&prog)
                .args(["./libstale_good.so", "./libstale_bad.so"]),
            HANG,
        );
        let audited = run(
            dir.audited(&prog)
                .args(["./libstale_good.so", "./libstale_bad.so"])
                .env("MPAUDIT_ACTION", "deny")
                .env("MPAUDIT_COMPONENTS", &abs),
            HANG,
        );
        assert!(bare.status.success());
        let ev = dir.events();
        let good = the_write(&ev, "good.out");
        assert_eq!(good["component"]["object"], abs.as_str(), "{good}");
        assert_eq!(
            (&good["verdict"], &good["action"], &good["errno"]),
            (&"registered".into(), &"none".into(), &Value::Null),
            "{good}"
        );
        // The unregistered one is denied, so the program fails there only.
        let bad = the_write(&ev, "bad.out");
        assert!(bad["component"]["object"]
            .as_str()
            .unwrap()
            .starts_with('/'));
        assert_eq!(bad["action"], "denied");
        assert_eq!(audited.status.code(), Some(1));
    }
);

/// The dynamic loader, for running a program through it explicitly.
#[cfg(target_arch = "x86_64")]
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
#[cfg(target_arch = "aarch64")]
const LOADER: &str = "/lib/ld-linux-aarch64.so.1";

// Regression (review1 item 10): under `ld-linux-x86-64.so.2 ./prog`,
// /proc/self/exe is the loader, and the main program's frames were named
// as the loader (classified as libc: no component).
e2e!(a_program_run_through_the_loader_is_named_as_itself, |dir| {
    install_executable(&fixture("main_writer"), &dir.join("main_writer"));
    let bare = run(dir.bare(LOADER).arg("./main_writer"), HANG);
    let audited = run(dir.audited(LOADER).arg("./main_writer"), HANG);
    same_as_bare(&bare, &audited);
    let ev = dir.events();
    let w = the_write(&ev, "p.out");
    let program = std::fs::canonicalize(dir.join("main_writer")).unwrap();
    assert_eq!(w["component"]["object"], program.to_str().unwrap(), "{w}");
    assert_eq!(frame_function(&w["component"]), "writer");
});

// Regression (review1 item 12): a registered library writing through a
// JIT stub left a one-frame stack [{null, null}] (the unwinder stops at
// code it has no tables for), so the write was judged rogue and denied
// where the bare run succeeds. The stack is now marked truncated, and with
// components configured such a write is only logged.
#[cfg(target_arch = "x86_64")]
e2e!(a_write_through_jit_code_is_truncated_not_denied, |dir| {
    let prog = fixture("jit_main");
    let bare = run(&mut dir.bare(&prog), HANG);
    assert_eq!(stdout(&bare), "jit_write=0\n");
    let audited = run(
        dir.audited(&prog)
            .env("MPAUDIT_ACTION", "deny")
            .env("MPAUDIT_COMPONENTS", "libjit_writer.so"),
        HANG,
    );
    same_as_bare(&bare, &audited);
    let ev = dir.events();
    let w = the_write(&ev, "jit.out");
    assert_eq!(
        (&w["stack_truncated"], &w["verdict"], &w["action"]),
        (&true.into(), &"rogue".into(), &"logged".into()),
        "{w}"
    );
    assert_eq!(w["stack"][0]["object"], Value::Null, "{w}");
    let exit = ev
        .iter()
        .find(|e| e["op"] == "exit")
        .expect("an exit event");
    assert!(exit["unresolved_frames"].as_u64() >= Some(1), "{exit}");
    let out = run(
        Command::new(&artifacts().runner)
            .args(["report", "--format", "json"])
            .arg(dir.logs()),
        DEADLINE,
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["summary"]["unresolved_frames"].as_u64() >= Some(1),
        "{:#}",
        json["summary"]
    );
});

/// Builds `prog` (prints `answer()` from the library named by argv[1], or
/// the dlerror) and a library `libanswer.so` answering 42, in `at`.
fn dlopen_answer_pair(at: &std::path::Path) {
    std::fs::create_dir_all(at).unwrap();
    std::fs::write(
        at.join("prog.c"),
        "#include <dlfcn.h>\n#include <stdio.h>\nint main(int c, char **v) {\n  void *h = dlopen(v[1], RTLD_NOW);\n  if (!h) { printf(\"dlopen failed\\n\"); return 1; }\n  int (*f)(void) = (int (*)(void))dlsym(h, \"answer\");\n  printf(\"%d\\n\", f());\n  return 0;\n}\n",
    )
    .unwrap();
    std::fs::write(at.join("answer.c"), "int answer(void) { return 42; }\n").unwrap();
    for args in [
        &["-o", "prog", "prog.c", "-ldl"][..],
        &["-shared", "-fPIC", "-o", "libanswer.so", "answer.c"],
    ] {
        run_ok(Command::new("cc").current_dir(at).args(args));
    }
}

// dlopen is hooked to load a library the worker built from its worker copy;
// glibc reads the caller from dlopen's return address ($ORIGIN in the name,
// the caller's RUNPATH for a bare name), so the hook must keep it: a
// `$ORIGIN/...` name and a bare name found through the program's RUNPATH
// load as bare, while the worker has redirected files.
e2e!(
    dlopen_keeps_the_callers_origin_and_runpath_while_the_worker_redirects,
    |dir| {
        let bin = dir.join("bin");
        dlopen_answer_pair(&bin);
        run_ok(Command::new("cc").current_dir(&bin).args([
            "-o",
            "prog_runpath",
            "prog.c",
            "-ldl",
            "-Wl,--enable-new-dtags,-rpath,$ORIGIN",
        ]));
        let script = "echo first > first.txt; bin/prog '$ORIGIN/libanswer.so'; bin/prog_runpath libanswer.so";
        let bare = run(dir.bare("bash").args(["-c", script]), HANG);
        std::fs::remove_file(dir.join("first.txt")).unwrap();
        let audited = run(
            dir.audited("bash")
                .args(["-c", script])
                .env("MPAUDIT_ACTION", "redirect")
                .env("MPAUDIT_JOB_DIR", &dir.path)
                .env("MPAUDIT_WORKER", "1"),
            HANG,
        );
        assert_eq!(stdout(&bare), "42\n42\n");
        same_as_bare(&bare, &audited);
        assert!(
            dir.join("mpaudit-workers/worker_1/first.txt").exists(),
            "the worker redirected before it loaded"
        );
    }
);

// Regression (review 2, F24): a library the worker built under redirect
// (ROOT's ACLiC, `gcc -shared` then ctypes) could not be dlopen'ed: the
// loader looked for it in the shared directory. Its constructor's writes
// are audited (the hook does not hold its re-entry guard over dlopen).
e2e!(
    a_library_the_worker_built_under_redirect_is_dlopened_and_its_constructor_audited,
    |dir| {
        let bin = dir.join("bin");
        dlopen_answer_pair(&bin);
        std::fs::write(
            bin.join("ctor.c"),
            "#include <stdio.h>\n__attribute__((constructor)) static void init(void) {\n  FILE *f = fopen(\"ctor.txt\", \"w\");\n  if (f) { fputs(\"ctor\\n\", f); fclose(f); }\n}\nint answer(void) { return 7; }\n",
        )
        .unwrap();
        let script = "cc -shared -fPIC -o libbuilt.so bin/ctor.c && bin/prog ./libbuilt.so && bin/prog \"$PWD/libbuilt.so\" && cat ctor.txt";
        let bare = run(dir.bare("bash").args(["-c", script]), HANG);
        assert_eq!(stdout(&bare), "7\n7\nctor\n");
        for f in ["libbuilt.so", "ctor.txt"] {
            std::fs::remove_file(dir.join(f)).unwrap();
        }
        let audited = run(
            dir.audited("bash")
                .args(["-c", script])
                .env("MPAUDIT_ACTION", "redirect")
                .env("MPAUDIT_JOB_DIR", &dir.path)
                .env("MPAUDIT_WORKER", "1"),
            HANG,
        );
        same_as_bare(&bare, &audited);
        for f in ["libbuilt.so", "ctor.txt"] {
            assert!(!dir.join(f).exists(), "{f} reached the shared directory");
            assert!(dir.join("mpaudit-workers/worker_1").join(f).exists(), "{f}");
        }
        let ev = dir.events();
        let ctor = writes_to(&ev, "ctor.txt");
        assert!(
            !ctor.is_empty(),
            "the constructor's write is logged: {ev:#?}"
        );
        assert!(
            ctor.iter().all(|e| e["action"] == "redirected"),
            "{ctor:#?}"
        );
    }
);
