//! Real components the end-to-end tests run (a single-node Slurm, Open MPI,
//! the ROOT wheel), started by the project's own scripts in tests/scripts/.
//!
//! A missing component fails the test, naming the script that installs it.
//! Only with `MPAUDIT_TESTS_ALLOW_SKIP=1` (never set in CI) does a test skip
//! instead, loudly, on stderr.

use crate::{workspace_root, TestDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The variable that lets a test skip when a component is missing.
pub const ALLOW_SKIP: &str = "MPAUDIT_TESTS_ALLOW_SKIP";

/// `Ok` when present; otherwise panics (the default, and CI), or returns
/// `false` after a loud message when skipping is allowed.
pub fn require(component: &str, problem: Option<String>) -> bool {
    let Some(problem) = problem else {
        return true;
    };
    let install = "tests/scripts/install-components.sh (run by .ci/run)";
    if std::env::var(ALLOW_SKIP).as_deref() == Ok("1") {
        eprintln!(
            "\n*** SKIPPED: {component} is not available ({problem}); {ALLOW_SKIP}=1 lets this \
             test pass without it. Install it with {install}. ***\n"
        );
        return false;
    }
    panic!("{component} is not available: {problem}. Install it with {install}, or set {ALLOW_SKIP}=1 to skip locally");
}

pub fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/scripts").join(name)
}

fn missing_tools(tools: &[&str]) -> Option<String> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("PATH=\"$PATH:/usr/sbin\" command -v {t}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    (!missing.is_empty()).then(|| format!("not found: {}", missing.join(", ")))
}

/// Open MPI's `mpirun`, or `None` (skipping) when absent.
pub fn mpirun() -> Option<Command> {
    if !require("Open MPI (openmpi-bin)", missing_tools(&["mpirun"])) {
        return None;
    }
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe"]);
    Some(c)
}

/// A single-node Slurm of the test's own (tests/scripts/slurm-up.sh), in
/// the test's directory, with its own ports; stopped when dropped.
pub struct Slurm {
    state: PathBuf,
    pub conf: PathBuf,
}

impl Slurm {
    pub fn start(dir: &TestDir) -> Option<Slurm> {
        let tools = ["munged", "slurmctld", "slurmd", "srun", "sbatch"];
        if !require("Slurm (slurm-wlm, munge)", missing_tools(&tools)) {
            return None;
        }
        let state = dir.join("slurm-state");
        let (ctld, slurmd) = two_free_ports();
        let out = Command::new(script("slurm-up.sh"))
            .arg(&state)
            .arg(ctld.to_string())
            .arg(slurmd.to_string())
            .output()
            .expect("run slurm-up.sh");
        let slurm = Slurm {
            conf: state.join("slurm.conf"),
            state,
        };
        assert!(
            out.status.success(),
            "slurm-up.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(slurm)
    }

    /// A Slurm client command (`srun`, `sbatch`, `sinfo`) for this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        for v in [
            "SLURM_JOB_ID",
            "SLURM_JOBID",
            "SLURM_STEP_ID",
            "SLURM_PROCID",
        ] {
            c.env_remove(v);
        }
        c
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(script("slurm-down.sh"))
            .arg(&self.state)
            .status();
    }
}

/// Two ports free right now (both held while the second is chosen).
fn two_free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let b = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// The python of the cached ROOT venv (tests/scripts/root-venv.sh), made
/// once per test run; `None` (skipping) when it cannot be had.
pub fn root_python() -> Option<&'static Path> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let got = PY.get_or_init(|| {
        let out = Command::new(script("root-venv.sh"))
            .output()
            .map_err(|e| format!("root-venv.sh: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.lines().last() {
            Some(p) if out.status.success() => Ok(PathBuf::from(p)),
            _ => Err(format!(
                "root-venv.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    });
    match got {
        Ok(p) => Some(p.as_path()),
        Err(e) => {
            // Panics unless skipping is allowed.
            require("ROOT (PyPI wheel, Python 3.11)", Some(e.clone()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convention the component tests rely on: a missing component
    /// fails, unless MPAUDIT_TESTS_ALLOW_SKIP=1 (and only exactly "1").
    #[test]
    fn a_missing_component_fails_unless_skipping_is_allowed() {
        assert!(require("present", None));
        for (value, skips) in [(None, false), (Some("0"), false), (Some("1"), true)] {
            match value {
                Some(v) => std::env::set_var(ALLOW_SKIP, v),
                None => std::env::remove_var(ALLOW_SKIP),
            }
            let got = std::panic::catch_unwind(|| require("absent", Some("not found".into())));
            match got {
                Ok(ran) => assert!(skips && !ran, "{value:?}: skipped"),
                Err(_) => assert!(!skips, "{value:?}: failed"),
            }
        }
        std::env::remove_var(ALLOW_SKIP);
    }
}
