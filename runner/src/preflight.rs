//! Checks that touch the file system, done before anything starts: the
//! program exists and is executable, the job directory exists, the log and
//! workers directories can be created and written.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::plan::Plan;

/// Resolves `program` like `execvp`: with a `/` relative to `dir`, else
/// through `path_var`. Errors say what was looked for, in one line.
pub fn resolve_program(
    program: &str,
    dir: &Path,
    path_var: Option<&str>,
) -> Result<PathBuf, String> {
    if program.is_empty() {
        return Err("the command's program is an empty string".into());
    }
    if program.contains('/') {
        let p = crate::plan::resolve(dir, Path::new(program));
        return check_executable(&p)
            .map(|_| p)
            .map_err(|e| format!("command `{program}`: {e}"));
    }
    let path_var = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    let mut not_exec = None;
    for d in path_var.split(':') {
        let d = if d.is_empty() {
            Path::new(".")
        } else {
            Path::new(d)
        };
        let candidate = crate::plan::resolve(dir, &d.join(program));
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if candidate.exists() => {
                not_exec = Some(format!("{}: {e}", candidate.display()))
            }
            Err(_) => {}
        }
    }
    Err(match not_exec {
        Some(e) => format!("command `{program}` is not executable ({e})"),
        None => format!("command `{program}` not found in PATH"),
    })
}

fn check_executable(p: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        _ => e.to_string(),
    })?;
    if meta.is_dir() {
        return Err("is a directory".into());
    }
    if meta.permissions().mode() & 0o111 == 0 || !access(p, libc::X_OK) {
        return Err("is not executable".into());
    }
    Ok(())
}

fn access(p: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated CString that outlives the call;
    // access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

/// `dir` exists and is writable, or could be created (its nearest existing
/// ancestor is a writable directory).
pub fn check_writable_dir(what: &str, dir: &Path) -> Result<(), String> {
    let mut p = dir.to_path_buf();
    loop {
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => {
                return if access(&p, libc::W_OK | libc::X_OK) {
                    Ok(())
                } else if p == dir {
                    Err(format!("{what} {} is not writable", dir.display()))
                } else {
                    Err(format!(
                        "{what} {} cannot be created: {} is not writable",
                        dir.display(),
                        p.display()
                    ))
                };
            }
            Ok(_) => {
                return Err(format!(
                    "{what} {}: {} is not a directory",
                    dir.display(),
                    p.display()
                ));
            }
            Err(_) => {
                if !p.pop() {
                    return Err(format!("{what} {} cannot be created", dir.display()));
                }
            }
        }
    }
}

/// Everything `run` and `check` verify before starting.
pub fn check(plan: &Plan, path_var: Option<&str>) -> Result<PathBuf, String> {
    match std::fs::metadata(&plan.job_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "job directory {} is not a directory",
                plan.job_dir.display()
            ))
        }
        Err(e) => return Err(format!("job directory {}: {e}", plan.job_dir.display())),
    }
    let program = resolve_program(&plan.command[0], &plan.job_dir, path_var)?;
    check_writable_dir("log directory", &plan.log_dir)?;
    check_writable_dir("workers directory", &plan.workers_dir)?;
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs() {
        let p = resolve_program("sh", Path::new("/"), Some("/nonexistent:/bin:/usr/bin")).unwrap();
        assert!(p.ends_with("sh"));
        let e =
            resolve_program("no-such-program-mpaudit", Path::new("/"), Some("/bin")).unwrap_err();
        assert_eq!(e, "command `no-such-program-mpaudit` not found in PATH");
        let e = resolve_program("./nope", Path::new("/"), None).unwrap_err();
        assert_eq!(e, "command `./nope`: no such file");
    }

    #[test]
    fn not_executable() {
        let dir = std::env::temp_dir().join(format!("mpaudit-pf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("script.sh");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = resolve_program("./script.sh", &dir, None).unwrap_err();
        assert!(e.contains("is not executable"), "{e}");
        assert!(check_writable_dir("log directory", &dir.join("a/b")).is_ok());
        let e = check_writable_dir("log directory", &f.join("x")).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
