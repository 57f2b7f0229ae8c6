//! Metadata changes and extended attributes under redirect and deny
//! (review 2, F9 and F11): real programs that read or set xattrs, copy
//! with their metadata, or change a file through a descriptor opened
//! read-only see, redirected, what they see bare, and the shared files
//! keep their mode, times, attributes and content.

use crate::redirect_shared::{redirected, same_output, twin_jobs, worker_dir};
use mpaudit_tests::*;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// 2000-01-01, the shared files' mtime: a change to "now" shows.
const OLD: i64 = 946_684_800;

/// data.txt (0640, one user xattr) and ref.txt (0600, mtime OLD + 100).
fn shared_files(d: &Path) {
    std::fs::write(d.join("data.txt"), "orig\n").unwrap();
    std::fs::write(d.join("ref.txt"), "ref\n").unwrap();
    set_xattr(&d.join("data.txt"), "user.k", b"v");
    set_mode(&d.join("data.txt"), 0o640);
    set_mode(&d.join("ref.txt"), 0o600);
    set_mtime(&d.join("data.txt"), OLD);
    set_mtime(&d.join("ref.txt"), OLD + 100);
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let (p, n) = (c_path(p), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings and a readable value.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(p: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// The user xattrs of `p` (name → value), not following a symlink.
fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let p = c_path(p);
    let mut names = vec![0u8; 4096];
    // SAFETY: a NUL-terminated path and a writable buffer of that size.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr: {}", std::io::Error::last_os_error());
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let c = CString::new(name).unwrap();
        let mut value = vec![0u8; 4096];
        // SAFETY: as above.
        let k = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                c.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(k >= 0, "lgetxattr: {}", std::io::Error::last_os_error());
        value.truncate(k as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    out
}

/// One file's mode, mtime, content and xattrs.
type FileState = (u32, i64, Vec<u8>, BTreeMap<String, Vec<u8>>);

/// Every file of the shared tree by name.
fn snapshot(job: &Path) -> BTreeMap<String, FileState> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(job).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.insert(
            p.file_name().unwrap().to_string_lossy().into_owned(),
            (m.mode(), m.mtime(), content, xattrs(&p)),
        );
    }
    out
}

/// Runs each script bare in a fresh `bare/` and redirected in a fresh
/// `job/`; the outputs must match and the shared tree must not change.
fn bare_and_redirected_alike(dir: &TestDir, scripts: &[&str]) {
    for script in scripts {
        for d in ["bare", "job", "workers"] {
            let _ = std::fs::remove_dir_all(dir.join(d));
        }
        let (bare, job) = twin_jobs(dir, shared_files);
        let before = snapshot(&job);
        same_output(dir, &bare, &job, script);
        assert_eq!(
            snapshot(&job),
            before,
            "the redirected run changed the shared tree\nscript: {script}"
        );
    }
}

e2e!(
    ls_cp_and_touch_on_redirected_and_shared_files_see_the_workers_metadata,
    |dir| {
        bare_and_redirected_alike(
            &dir,
            &[
                // ls -l reads lgetxattr/listxattr (ACLs, SELinux labels).
                "echo hi > newf; ls -l --time-style=+%s newf data.txt | awk '{print $1, $5, $7}'",
                "cp -a data.txt c1 && stat -c '%a %Y %s' c1 && ls -l c1 | cut -c1-10",
                "cp --preserve=all data.txt c2 && stat -c '%a %Y' c2 && \
                 python3 -c 'import os; print(os.getxattr(\"c2\", \"user.k\"))'",
                // touch opens for writing, then futimens on that descriptor.
                "touch -r ref.txt data.txt && stat -c %Y data.txt",
                "chmod --reference=ref.txt data.txt && stat -c %a data.txt",
                "cp -a data.txt c3 && chmod 600 c3 && touch -d @5 c3 && cp -a c3 data.txt && \
                 stat -c '%a %Y' data.txt",
            ],
        );
    }
);

e2e!(
    python_copy2_copystat_and_xattrs_under_redirect_act_on_the_workers_copy,
    |dir| {
        bare_and_redirected_alike(
            &dir,
            &[
                "echo hi > newf; python3 -c 'import shutil; shutil.copy2(\"newf\", \"copy\")' && cat copy",
                "python3 -c 'import shutil, os\n\
                 shutil.copy2(\"data.txt\", \"c\"); st = os.stat(\"c\")\n\
                 print(oct(st.st_mode), int(st.st_mtime), os.listxattr(\"c\"))\n\
                 shutil.copystat(\"ref.txt\", \"data.txt\"); st = os.stat(\"data.txt\")\n\
                 print(oct(st.st_mode), int(st.st_mtime), sorted(os.listxattr(\"data.txt\")))'",
                "python3 -c 'import os\n\
                 os.setxattr(\"data.txt\", \"user.n\", b\"2\")\n\
                 os.removexattr(\"data.txt\", \"user.k\")\n\
                 print(sorted(os.listxattr(\"data.txt\")), os.getxattr(\"data.txt\", \"user.n\"))\n\
                 print(sorted(os.listxattr(\"data.txt\", follow_symlinks=False)))\n\
                 open(\"newf\", \"w\").close(); os.setxattr(\"newf\", \"user.a\", b\"1\")\n\
                 print(os.getxattr(\"newf\", \"user.a\"), os.listxattr(\"newf\"))'",
            ],
        );
    }
);

e2e!(
    metadata_changes_through_a_read_only_descriptor_act_on_the_workers_copy,
    |dir| {
        bare_and_redirected_alike(
            &dir,
            &[
                // Every descriptor form on one read-only descriptor; fstat,
                // flistxattr and read on it afterwards see the change.
                "python3 -c 'import os\n\
                 fd = os.open(\"data.txt\", os.O_RDONLY)\n\
                 os.fchmod(fd, 0o600); os.utime(fd, (5, 5))\n\
                 os.chown(fd, os.getuid(), os.getgid())\n\
                 os.setxattr(fd, \"user.k2\", b\"w\"); os.removexattr(fd, \"user.k\")\n\
                 st = os.fstat(fd); print(oct(st.st_mode), st.st_mtime, sorted(os.listxattr(fd)))\n\
                 print(os.read(fd, 100), os.lseek(fd, 0, 1))\n\
                 st = os.stat(\"data.txt\"); print(oct(st.st_mode), st.st_mtime)\n\
                 print(sorted(os.listxattr(\"data.txt\")))'",
                // The AT_EMPTY_PATH forms on an O_PATH descriptor, and
                // utimensat(fd, NULL) and fchmod by syscall(), by ctypes.
                "python3 -c 'import os, ctypes\n\
                 libc = ctypes.CDLL(None, use_errno=True)\n\
                 fd = os.open(\"data.txt\", os.O_PATH)\n\
                 print(libc.utimensat(fd, b\"\", None, 0x1000), ctypes.get_errno())\n\
                 print(libc.fchownat(fd, b\"\", os.getuid(), os.getgid(), 0x1000))\n\
                 print(os.stat(\"data.txt\").st_mtime > 1e9 + 1e8)\n\
                 r = os.open(\"ref.txt\", os.O_RDONLY)\n\
                 print(libc.utimensat(r, None, None, 0), os.fstat(r).st_mtime > 1e9 + 1e8)\n\
                 print(libc.syscall(91 if os.uname().machine == \"x86_64\" else 52, r, 0o604), oct(os.fstat(r).st_mode))\n\
                 print(oct(os.stat(\"ref.txt\").st_mode))'",
                // A descriptor of a file the worker made changes in place,
                // and one that is no file fails as bare.
                "python3 -c 'import os\n\
                 fd = os.open(\"own\", os.O_RDWR | os.O_CREAT, 0o644)\n\
                 os.fchmod(fd, 0o600); print(oct(os.fstat(fd).st_mode), oct(os.stat(\"own\").st_mode))\n\
                 r, w = os.pipe()\n\
                 try: os.fchmod(r, 0o600); print(\"pipe ok\")\n\
                 except OSError as e: print(\"pipe\", e.errno)\n\
                 try: os.fchmod(99, 0o600)\n\
                 except OSError as e: print(\"bad\", e.errno)'",
            ],
        );
    }
);

// The redirected descriptor change is the worker's: its copy holds it,
// and under log the call is an event judged like the path form.
e2e!(
    a_metadata_change_through_a_descriptor_is_an_event_and_lands_in_the_workers_copy,
    |dir| {
        let (_, job) = twin_jobs(&dir, shared_files);
        let script = "python3 -c 'import os\n\
                      fd = os.open(\"data.txt\", os.O_RDONLY); os.fchmod(fd, 0o604)'";
        run_ok(&mut redirected(&dir, &job, script));
        let copy = worker_dir(&dir).join("data.txt");
        let m = std::fs::metadata(&copy)
            .unwrap_or_else(|e| panic!("no worker copy {}: {e}", copy.display()));
        assert_eq!(m.mode() & 0o7777, 0o604, "the copy holds the change");
        assert_eq!(std::fs::read(&copy).unwrap(), b"orig\n", "copied up whole");
        assert_eq!(
            xattrs(&copy),
            xattrs(&job.join("data.txt")),
            "with its xattrs"
        );

        let mut log = dir.audited("bash");
        log.current_dir(&job)
            .args(["-c", script])
            .env("MPAUDIT_JOB_DIR", &job)
            .env("MPAUDIT_WORKER", "2");
        run_ok(&mut log);
        let events = dir.events();
        let fchmod: Vec<_> = events.iter().filter(|e| e["op"] == "fchmod").collect();
        assert!(
            fchmod.iter().any(|e| e["worker"] == 2
                && e["verdict"] == "rogue"
                && e["abs"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/job/data.txt"))),
            "the fchmod of a shared file is a rogue write event: {fchmod:?}"
        );
    }
);

e2e!(
    deny_refuses_each_metadata_change_through_a_descriptor_of_a_shared_file,
    |dir| {
        let (_, job) = twin_jobs(&dir, shared_files);
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let before = snapshot(&job);
        let script = "python3 -c 'import os, ctypes\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             fd = os.open(\"data.txt\", os.O_RDONLY)\n\
             p = os.open(\"data.txt\", os.O_PATH)\n\
             calls = [lambda: libc.fchmod(fd, 0o600), lambda: libc.fchown(fd, os.getuid(), -1),\n\
               lambda: libc.futimens(fd, None), lambda: libc.futimes(fd, None),\n\
               lambda: libc.fsetxattr(fd, b\"user.x\", b\"1\", 1, 0),\n\
               lambda: libc.fremovexattr(fd, b\"user.k\"),\n\
               lambda: libc.utimensat(fd, None, None, 0),\n\
               lambda: libc.utimensat(p, b\"\", None, 0x1000),\n\
               lambda: libc.fchownat(p, b\"\", os.getuid(), -1, 0x1000),\n\
               lambda: libc.syscall(91 if os.uname().machine == \"x86_64\" else 52, fd, 0o600),\n\
               lambda: libc.setxattr(b\"data.txt\", b\"user.x\", b\"1\", 1, 0),\n\
               lambda: libc.removexattr(b\"data.txt\", b\"user.k\")]\n\
             for c in calls: ctypes.set_errno(0); print(c(), ctypes.get_errno())\n\
             own = os.open(os.environ[\"TMPDIR\"] + \"/own\", os.O_RDWR | os.O_CREAT, 0o644)\n\
             print(\"own\", libc.fchmod(own, 0o600), libc.fsetxattr(own, b\"user.x\", b\"1\", 1, 0))'";
        let mut c = dir.audited("bash");
        c.current_dir(&job)
            .args(["-c", script])
            .env("MPAUDIT_ACTION", "deny")
            .env("MPAUDIT_WORKER", "1")
            .env("MPAUDIT_JOB_DIR", &job)
            .env("MPAUDIT_WORKERS_DIR", dir.join("workers"))
            .env("TMPDIR", &scratch);
        let out = stdout(&run_ok(&mut c));
        let lines: Vec<&str> = out.lines().collect();
        let denied = format!("-1 {}", libc::EACCES);
        assert_eq!(lines.len(), 13, "{out}");
        for (i, l) in lines[..12].iter().enumerate() {
            assert_eq!(*l, denied, "call {i} was not refused: {out}");
        }
        assert_eq!(
            lines[12], "own 0 0",
            "a scratch file's descriptor changes: {out}"
        );
        assert_eq!(
            snapshot(&job),
            before,
            "a denied worker changed the shared tree"
        );
    }
);
