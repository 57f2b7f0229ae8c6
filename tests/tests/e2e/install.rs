//! The installed command on its own: `cargo install --path runner` copies
//! only the `mpaudit` binary, which must find (write out) the library it
//! was built with.

use mpaudit_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The runner copied alone into `dir/bin/` (no library beside it nor in
/// `dir/lib/`), as `cargo install` leaves it.
fn installed(dir: &TestDir) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("mpaudit");
    install_executable(&artifacts().runner, &exe);
    exe
}

fn command(exe: &Path, dir: &TestDir) -> Command {
    let job = dir.join("job");
    std::fs::create_dir_all(&job).unwrap();
    let mut c = Command::new(exe);
    c.current_dir(&job)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("MPAUDIT_PRELOAD");
    c
}

fn lib_path(exe: &Path, dir: &TestDir) -> PathBuf {
    let out = run_ok(command(exe, dir).arg("lib-path"));
    PathBuf::from(stdout(&out).trim())
}

/// `exec -- sh -c 'echo x > f'`: exit 1 for the rogue write, which the
/// library (loaded from wherever mpaudit found it) logged.
fn exec_rogue_write(exe: &Path, dir: &TestDir) {
    let _ = std::fs::remove_dir_all(dir.join("job/mpaudit-logs"));
    let out = run(
        command(exe, dir).args([
            "exec",
            "--format",
            "json",
            "--report",
            "report.json",
            "--",
            "sh",
            "-c",
            "echo x > f",
        ]),
        DEADLINE,
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("job/report.json")).unwrap()).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report["summary"]["events"].as_u64().unwrap() > 0,
        "{report}"
    );
    let paths: Vec<&str> = report["rogue"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["paths"].as_array().unwrap())
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert_eq!(paths, ["f"], "{report}");
}

e2e!(an_installed_mpaudit_alone_writes_out_its_library, |dir| {
    let exe = installed(&dir);
    let cache = dir.join("cache").join("mpaudit");
    exec_rogue_write(&exe, &dir);
    let lib = lib_path(&exe, &dir);
    assert_eq!(lib.parent().unwrap().parent().unwrap(), cache, "{lib:?}");
    let bytes = std::fs::read(&lib).unwrap();
    assert!(bytes.starts_with(b"\x7fELF"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&lib).unwrap().permissions().mode() & 0o777,
        0o755
    );

    // A corrupted copy with the right name (same length, other bytes) is
    // not trusted: the next run replaces it and audits as before.
    let mut bad = bytes.clone();
    bad[bytes.len() / 2..].fill(0xcc);
    std::fs::write(&lib, &bad).unwrap();
    exec_rogue_write(&exe, &dir);
    assert!(std::fs::read(&lib).unwrap() == bytes, "restored");
    // Truncated (a crash mid-copy by a writer that did not rename).
    std::fs::write(&lib, &bytes[..4096]).unwrap();
    assert_eq!(lib_path(&exe, &dir), lib);
    assert!(std::fs::read(&lib).unwrap() == bytes, "restored");
});

e2e!(
    a_library_beside_the_binary_wins_over_the_embedded_copy,
    |dir| {
        // Development builds use the library built with them, not the cache.
        let exe = installed(&dir);
        let beside = dir.join("bin").join("libmpaudit.so");
        std::fs::copy(lib(), &beside).unwrap();
        assert_eq!(lib_path(&exe, &dir), beside);
        assert!(!dir.join("cache").exists(), "nothing written to the cache");
        // An explicit MPAUDIT_PRELOAD that is wrong is an error, never silently
        // replaced by the embedded copy.
        let out = run(
            command(&exe, &dir)
                .env("MPAUDIT_PRELOAD", "/nonexistent/libmpaudit.so")
                .arg("lib-path"),
            DEADLINE,
        );
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("/nonexistent/libmpaudit.so"),
            "{out:?}"
        );
    }
);
