//! Finding `libmpaudit.so`: `--preload PATH`, then `$MPAUDIT_PRELOAD`, then
//! next to the mpaudit executable, then `../lib/` relative to it, then the
//! copy embedded in the executable, written out to a cache directory
//! ([`crate::embedded`]). A library beside the binary comes first so that a
//! development build uses the library just built with it.

use std::path::{Path, PathBuf};

pub const LIB_NAME: &str = "libmpaudit.so";

/// Candidate locations in order, each with how it was chosen.
pub fn candidates(
    flag: Option<&Path>,
    env: Option<&str>,
    exe: Option<&Path>,
    cwd: &Path,
) -> Vec<(PathBuf, String)> {
    if let Some(p) = flag {
        return vec![(crate::plan::resolve(cwd, p), "--preload".into())];
    }
    if let Some(p) = env.filter(|s| !s.is_empty()) {
        return vec![(
            crate::plan::resolve(cwd, Path::new(p)),
            "MPAUDIT_PRELOAD".into(),
        )];
    }
    let mut v = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        v.push((dir.join(LIB_NAME), "next to the mpaudit executable".into()));
        v.push((
            crate::plan::resolve(dir, Path::new("../lib")).join(LIB_NAME),
            "../lib/ of the mpaudit executable".into(),
        ));
    }
    v
}

/// The library's absolute path, or a one-line error listing where it looked.
pub fn find(
    flag: Option<&Path>,
    env: Option<&str>,
    exe: Option<&Path>,
    cwd: &Path,
) -> Result<PathBuf, String> {
    let c = candidates(flag, env, exe, cwd);
    for (p, _) in &c {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    if c.is_empty() {
        return Err(format!("{LIB_NAME} not found: no --preload, no MPAUDIT_PRELOAD and the executable's location is unknown"));
    }
    let looked: Vec<String> = c
        .iter()
        .map(|(p, why)| format!("{} ({why})", p.display()))
        .collect();
    let hint = if flag.is_none() && env.is_none() {
        "; build it with `cargo build -p mpaudit-interpose` or pass --preload PATH / set MPAUDIT_PRELOAD"
    } else {
        ""
    };
    Err(format!(
        "{LIB_NAME} not found; looked at: {}{hint}",
        looked.join(", ")
    ))
}

/// [`find`] for this process, then the embedded copy (unless --preload or
/// MPAUDIT_PRELOAD named a library: a wrong explicit path is an error).
pub fn find_here(flag: Option<&Path>) -> Result<PathBuf, String> {
    let env = std::env::var("MPAUDIT_PRELOAD")
        .ok()
        .filter(|s| !s.is_empty());
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    match find(flag, env.as_deref(), exe.as_deref(), &cwd) {
        Ok(p) => Ok(p),
        Err(e) if flag.is_none() && env.is_none() => {
            crate::embedded::write_out_here().map_err(|w| format!("{e}; and {w}"))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_error() {
        let c = candidates(
            None,
            None,
            Some(Path::new("/opt/mp/bin/mpaudit")),
            Path::new("/"),
        );
        assert_eq!(c[0].0, PathBuf::from("/opt/mp/bin/libmpaudit.so"));
        assert_eq!(c[1].0, PathBuf::from("/opt/mp/lib/libmpaudit.so"));
        let c = candidates(
            None,
            Some("rel/l.so"),
            Some(Path::new("/x/mpaudit")),
            Path::new("/w"),
        );
        assert_eq!(
            c,
            vec![(PathBuf::from("/w/rel/l.so"), "MPAUDIT_PRELOAD".to_string())]
        );
        let c = candidates(
            Some(Path::new("/f.so")),
            Some("/e.so"),
            None,
            Path::new("/"),
        );
        assert_eq!(c[0].0, PathBuf::from("/f.so"));
        let e = find(
            None,
            None,
            Some(Path::new("/nonexistent/bin/mpaudit")),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(
            e.contains("/nonexistent/bin/libmpaudit.so (next to the mpaudit executable)"),
            "{e}"
        );
        assert!(e.contains("/nonexistent/lib/libmpaudit.so"), "{e}");
        let e = find(
            Some(Path::new("/nonexistent/x.so")),
            None,
            None,
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.contains("/nonexistent/x.so (--preload)"), "{e}");
    }
}
