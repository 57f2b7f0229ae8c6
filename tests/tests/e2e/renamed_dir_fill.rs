//! What a shared directory renamed by a redirected worker holds (the
//! library's fill of its copy, dirview.rs): every file as bare `rename`
//! keeps it, the same inode moved, so its mode (whatever the umask), its
//! times and its links' targets; and every name the fill writes is made
//! below a descriptor of the worker's copy, never through a path a thread
//! of the program can swap a symlink into.

use crate::redirect_exact::{same_ops_or_err, same_supervised_ops, sweep};
use crate::review8::{assert_none, differing_as, NOBODY};
use mpaudit_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `e/x` (0666), `e/r` (0640), `e/s/` (0777) holding `e/s/y` (0777),
/// `e/l -> x`, every time 500: a copy that takes the umask or the time it
/// was made shows.
fn tree(d: &Path) {
    std::fs::create_dir_all(d.join("e/s")).unwrap();
    for (p, mode) in [("e/x", 0o666), ("e/r", 0o640), ("e/s/y", 0o777)] {
        std::fs::write(d.join(p), p).unwrap();
        std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(d.join("e/s"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink("x", d.join("e/l")).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(500);
    let times = std::fs::FileTimes::new().set_accessed(t).set_modified(t);
    for p in ["e/x", "e/r", "e/s/y", "e/s", "e"] {
        let f = std::fs::File::open(d.join(p)).unwrap();
        f.set_times(times).unwrap();
    }
}

const RENAMED: &[&str] = &[
    "rename e f\nstat f/x\nstat f/r\nstat f/s\nstat f/s/y\ntimes f/x\ntimes f/r\ntimes f/s/y\ntimes f/s\nreadlink f/l\nltimes f/l",
    "mkdir f 755\nrename e f\nstat f/x\ntimes f/x\nstat f/s\ntimes f/s",
    "chmod e/s 700\nrename e f\nstat f/s/y\ntimes f/s/y",
    "rename e/s e/t\nrename e f\nstat f/t/y\ntimes f/t/y",
    "mkdir g 755\nrename e g EXCHANGE\nstat g/x\ntimes g/x\ntimes g/s/y",
];

/// A shared file's own copy-up keeps its times as well (bare, the open,
/// chmod or rename changes no content).
const COPIED_UP: &[&str] = &[
    "open 0 e/x RDWR\ntimes e/x",
    "open 0 e/x WRONLY|APPEND\nclose 0\ntimes e/x",
    "chmod e/x 600\ntimes e/x",
    "chown e/x 0\ntimes e/x",
    "rename e/x e/y\ntimes e/y\nstat e/y",
    "rename e/x e/s/x\ntimes e/s/x",
    "linkat cwd e/x cwd g 0\ntimes g\ntimes e/x",
];

/// [`tree`] owned by [`NOBODY`], with `e` and `e/s` read-only (a worker
/// not root renames them; their copies take the shared entries all the
/// same).
fn nobody_s_read_only_tree(d: &Path) {
    tree(d);
    let own = |p: &Path| std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    own(d.parent().unwrap());
    for p in ["", "e", "e/x", "e/r", "e/s", "e/s/y", "e/l"] {
        own(&d.join(p));
    }
    for p in ["e/s", "e"] {
        std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(0o555)).unwrap();
    }
}

const RENAMED_READ_ONLY: &[&str] = &[
    "rename e f\nstat f\nstat f/x\nstat f/s\nstat f/s/y\ntimes f\ntimes f/s\ntimes f/s/y\nreadlink f/l",
    "chmod e 755\nrename e/s e/t\nchmod e 555\nrename e f\nstat f/t/y",
];

e2e!(
    a_read_only_shared_directory_renamed_by_a_worker_not_root_keeps_its_files,
    |dir| {
        for supervised in [false, true] {
            assert_none(differing_as(
                &dir,
                nobody_s_read_only_tree,
                NOBODY,
                RENAMED_READ_ONLY,
                supervised,
            ));
        }
    }
);

e2e!(
    a_renamed_shared_directory_s_files_keep_their_mode_and_times_in_the_library,
    |dir| {
        assert_none(sweep(&[], &[RENAMED, COPIED_UP].concat(), |script| {
            same_ops_or_err(&dir, tree, script)
        }));
    }
);

e2e!(
    a_renamed_shared_directory_s_files_keep_their_mode_and_times_under_the_supervisor,
    |dir| {
        assert_none(sweep(&[], &[RENAMED, COPIED_UP].concat(), |script| {
            same_supervised_ops(&dir, tree, script)
        }));
    }
);

/// [`tree`] with a FIFO `e/p` (0640) and a socket node `e/k`.
fn tree_with_special_files(d: &Path) {
    tree(d);
    for (p, kind) in [("e/p", libc::S_IFIFO), ("e/k", libc::S_IFSOCK)] {
        let c = std::ffi::CString::new(d.join(p).as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; a FIFO or socket node needs no device.
        assert_eq!(unsafe { libc::mknod(c.as_ptr(), kind | 0o640, 0) }, 0);
    }
}

/// A special file moves with its directory, and by its own rename, as
/// bare: under its new name with its mode, gone under the old one.
const SPECIAL: &[&str] = &[
    "rename e f\nlstat f/p\nlstat e/p\nlstat f/k\nreaddir f",
    "rename e/p e/q\nlstat e/q\nlstat e/p\nreaddir e",
    "rename e/k k\nlstat k\nlstat e/k",
    "linkat cwd e/p cwd q 0\nlstat q\nlstat e/p",
];

e2e!(
    a_special_file_moves_with_its_renamed_shared_directory,
    |dir| {
        assert_none(sweep(&[], SPECIAL, |script| {
            same_ops_or_err(&dir, tree_with_special_files, script)
        }));
        assert_none(sweep(&[], SPECIAL, |script| {
            same_supervised_ops(&dir, tree_with_special_files, script)
        }));
    }
);
