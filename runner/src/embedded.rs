//! The `libmpaudit.so` built with this runner (runner/build.rs), written out
//! on first use so that one installed binary is the whole tool.
//!
//! The file goes to `<cache>/<hash>/libmpaudit.so`, `<cache>` being the
//! first usable of `$XDG_CACHE_HOME/mpaudit`, `~/.cache/mpaudit` and
//! `$TMPDIR/mpaudit-<uid>` (`/tmp` without TMPDIR). A file already there
//! is used only if its bytes are the embedded ones; otherwise (a crash
//! mid-write, a corrupted or replaced file) it is written afresh: to a
//! temporary name in the same directory, then renamed into place, so a
//! concurrent `mpaudit` never preloads a half-written library.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::libpath::LIB_NAME;

static LIB: &[u8] = include_bytes!(env!("MPAUDIT_EMBEDDED_LIB"));
/// FNV-1a of [`LIB`], computed by the build script: names its directory.
const HASH: &str = env!("MPAUDIT_EMBEDDED_LIB_HASH");

/// Where the embedded copy may go, best first.
pub fn cache_roots(
    xdg_cache_home: Option<&OsStr>,
    home: Option<&OsStr>,
    tmpdir: Option<&OsStr>,
    uid: u32,
) -> Vec<PathBuf> {
    // Relative values are invalid by the XDG specification; ignore them.
    let absolute = |v: Option<&OsStr>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let mut roots = Vec::new();
    if let Some(x) = absolute(xdg_cache_home) {
        roots.push(x.join("mpaudit"));
    }
    if let Some(h) = absolute(home) {
        roots.push(h.join(".cache").join("mpaudit"));
    }
    let tmp = absolute(tmpdir).unwrap_or_else(|| PathBuf::from("/tmp"));
    roots.push(tmp.join(format!("mpaudit-{uid}")));
    roots
}

/// Writes the embedded library below the first usable cache root (or finds
/// it there intact) and returns its path; the error lists each root's
/// failure.
pub fn write_out_here() -> Result<PathBuf, String> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let roots = cache_roots(
        std::env::var_os("XDG_CACHE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
        std::env::var_os("TMPDIR").as_deref(),
        uid,
    );
    let mut failures = Vec::new();
    for root in &roots {
        match write_out(root, HASH, LIB, uid) {
            Ok(p) => return Ok(p),
            Err(e) => failures.push(format!("{}: {e}", root.display())),
        }
    }
    Err(format!(
        "cannot write the embedded {LIB_NAME} to a cache directory ({})",
        failures.join("; ")
    ))
}

/// `<root>/<hash>/libmpaudit.so` holding exactly `bytes`, written if absent
/// or different. `root` must end up a directory owned by `uid` that nobody
/// else may write (it may be below a shared /tmp).
pub fn write_out(root: &Path, hash: &str, bytes: &[u8], uid: u32) -> io::Result<PathBuf> {
    make_private_dir(root, uid)?;
    let dir = root.join(hash);
    make_private_dir(&dir, uid)?;
    let path = dir.join(LIB_NAME);
    if is_regular_file_with(&path, bytes) {
        return Ok(path);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(".{LIB_NAME}.{}.{nanos}.tmp", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        // The umask must not decide: the loader needs it readable, and
        // other users of a shared installation may preload it.
        f.set_permissions(fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, &path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| path)
}

/// Creates `dir` (mode 0700) if needed; it must be a real directory owned by
/// `uid` and not writable by group or others.
fn make_private_dir(dir: &Path, uid: u32) -> io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    if m.uid() != uid || m.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "not a private directory (owner uid {}, mode {:o}): another user could replace the library",
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

fn is_regular_file_with(path: &Path, bytes: &[u8]) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == bytes.len() as u64 => {}
        _ => return false,
    }
    fs::read(path).is_ok_and(|b| b == bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mpaudit-embedded-test-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn uid() -> u32 {
        // SAFETY: getuid has no preconditions and cannot fail.
        unsafe { libc::getuid() }
    }

    #[test]
    fn roots_in_order_and_relative_values_ignored() {
        let r = cache_roots(
            Some(OsStr::new("/x/cache")),
            Some(OsStr::new("/home/u")),
            Some(OsStr::new("/scratch")),
            7,
        );
        assert_eq!(
            r,
            [
                PathBuf::from("/x/cache/mpaudit"),
                PathBuf::from("/home/u/.cache/mpaudit"),
                PathBuf::from("/scratch/mpaudit-7"),
            ]
        );
        let r = cache_roots(Some(OsStr::new("rel")), None, None, 7);
        assert_eq!(r, [PathBuf::from("/tmp/mpaudit-7")]);
    }

    #[test]
    fn writes_reuses_and_replaces_a_corrupted_copy() {
        let d = scratch("corrupt");
        let root = d.join("cache");
        let p = write_out(&root, "h1", b"\x7fELF-one", uid()).unwrap();
        assert_eq!(p, root.join("h1").join(LIB_NAME));
        assert_eq!(fs::read(&p).unwrap(), b"\x7fELF-one");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o755);
        let ino = fs::metadata(&p).unwrap().ino();
        // Intact: used as is.
        write_out(&root, "h1", b"\x7fELF-one", uid()).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().ino(), ino);
        // Same length, other bytes; then truncated: both replaced.
        fs::write(&p, b"\x7fELF-two").unwrap();
        write_out(&root, "h1", b"\x7fELF-one", uid()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"\x7fELF-one");
        fs::write(&p, b"\x7f").unwrap();
        write_out(&root, "h1", b"\x7fELF-one", uid()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"\x7fELF-one");
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(root.join("h1")).unwrap().collect();
        assert_eq!(names.len(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlink_in_place_of_the_library_is_not_trusted() {
        let d = scratch("symlink");
        let root = d.join("cache");
        fs::create_dir_all(root.join("h")).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(root.join("h"), fs::Permissions::from_mode(0o700)).unwrap();
        let elsewhere = d.join("elsewhere.so");
        fs::write(&elsewhere, b"\x7fELF-one").unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("h").join(LIB_NAME)).unwrap();
        let p = write_out(&root, "h", b"\x7fELF-one", uid()).unwrap();
        assert!(fs::symlink_metadata(&p).unwrap().is_file());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let d = scratch("shared");
        let root = d.join("cache");
        fs::create_dir_all(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        let e = write_out(&root, "h", b"\x7fELF", uid()).unwrap_err();
        assert!(e.to_string().contains("not a private directory"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_embedded_library_is_an_elf_shared_object() {
        assert!(LIB.starts_with(b"\x7fELF"));
        assert_eq!(HASH.len(), 16);
    }
}
