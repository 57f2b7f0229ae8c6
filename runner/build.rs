//! Builds `libmpaudit.so` for this runner and hands it to `include_bytes!`
//! (src/embedded.rs), so that an installed `mpaudit` (`cargo install --path
//! runner`) is the whole tool.
//!
//! A nested `cargo build -p mpaudit-interpose` of this workspace, in its own
//! target directory below OUT_DIR: the outer build holds the lock of its
//! own target directory, and a separate one never waits for it. The
//! variables cargo sets for build scripts describe *this* package and would
//! mislead the nested build, so they are removed; the compiler, its wrapper,
//! the target and the rustflags are passed on, so that the library is built
//! like the runner it goes with.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("runner/ has a parent");
    let interpose = workspace.join("interpose");
    for p in [
        interpose.join("Cargo.toml"),
        interpose.join("build.rs"),
        interpose.join("src"),
        interpose.join("include"),
        interpose.join("core/Cargo.toml"),
        interpose.join("core/src"),
        workspace.join("Cargo.toml"),
        workspace.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=MPAUDIT_EMBED_LIB");

    let lib = match env::var_os("MPAUDIT_EMBED_LIB") {
        // A prebuilt library (packagers, or a build without cargo's
        // network access to the workspace sources).
        Some(p) => {
            println!("cargo:rerun-if-changed={}", Path::new(&p).display());
            PathBuf::from(p)
        }
        None => build_interpose(workspace),
    };
    let bytes =
        std::fs::read(&lib).unwrap_or_else(|e| panic!("cannot read {}: {e}", lib.display()));
    assert!(
        bytes.starts_with(b"\x7fELF"),
        "{} is not an ELF shared library",
        lib.display()
    );
    println!("cargo:rustc-env=MPAUDIT_EMBEDDED_LIB={}", lib.display());
    println!(
        "cargo:rustc-env=MPAUDIT_EMBEDDED_LIB_HASH={:016x}",
        fnv1a64(&bytes)
    );
}

fn build_interpose(workspace: &Path) -> PathBuf {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out_dir.join("interpose-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let target = env::var("TARGET").expect("set by cargo");

    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).args([
        "build",
        "--manifest-path",
        &workspace.join("Cargo.toml").display().to_string(),
        "-p",
        "mpaudit-interpose",
        "--target-dir",
        &target_dir.display().to_string(),
    ]);
    if release {
        cmd.arg("--release");
    }
    // Always named, even when it is the host: the runner's target, whatever
    // a cargo config's `build.target` says, and one output layout.
    cmd.args(["--target", &target]);
    for (k, _) in env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if is_build_script_var(k) {
            cmd.env_remove(k);
        }
    }
    // The runner's own rustflags (cargo passes them encoded); the plain
    // variable would be ignored in favour of these anyway.
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run the nested cargo build of mpaudit-interpose: {e}"));
    assert!(
        status.success(),
        "the nested `cargo build -p mpaudit-interpose` (target dir {}) failed: {status}; \
         set MPAUDIT_EMBED_LIB=/path/to/libmpaudit.so to embed a prebuilt library",
        target_dir.display()
    );
    target_dir
        .join(&target)
        .join(if release { "release" } else { "debug" })
        .join("libmpaudit.so")
}

/// Variables cargo sets for this build script (they describe the runner
/// package, its output directory and its target), and cargo's internal
/// ones. Configuration variables (`CARGO_HOME`, `CARGO_NET_OFFLINE`,
/// `CARGO_REGISTRIES_*`, the jobserver's `CARGO_MAKEFLAGS`) are kept.
fn is_build_script_var(k: &str) -> bool {
    const EXACT: &[&str] = &[
        "OUT_DIR",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
        "RUSTC_LINKER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        // `cargo clippy` lints workspace members through this wrapper; the
        // embedded library needs compiling, not linting.
        "RUSTC_WORKSPACE_WRAPPER",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_PKG_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "DEP_",
        "__CARGO",
    ];
    EXACT.contains(&k) || PREFIXES.iter().any(|p| k.starts_with(p))
}

/// FNV-1a, 64 bits: names the cache directory of this library's bytes
/// (src/embedded.rs compares the bytes themselves before reusing a file).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
