//! What each notified system call means: its name in events, which of its
//! arguments are paths (and relative to which directory), and what it does
//! to them, as the library's hooks describe the same libc calls.

use mpaudit_core::flags::OpenIntent;

/// A path argument: the argument holding the pointer and the one holding
/// its directory descriptor (`None`: the cwd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathArg {
    pub ptr: usize,
    pub dirfd: Option<usize>,
}

const fn cwd(ptr: usize) -> PathArg {
    PathArg { ptr, dirfd: None }
}
const fn at(dirfd: usize, ptr: usize) -> PathArg {
    PathArg {
        ptr,
        dirfd: Some(dirfd),
    }
}

/// Which paths the call writes (the policy judges the worst of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    First,
    Both,
    Second,
}

/// How the call's intent is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// open(2) flags in this argument.
    Flags(usize),
    /// `creat`: `O_WRONLY|O_CREAT|O_TRUNC`.
    Creat,
    /// `openat2`: the flags are the first field of the `open_how` struct
    /// this argument points to.
    OpenHow(usize),
    /// A namespace or metadata change: a write, no flags.
    Namespace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Access {
        op: &'static str,
        path: PathArg,
        path2: Option<PathArg>,
        intent: Intent,
        writes: Writes,
    },
    /// `execve`/`execveat`: path and argv arguments.
    Exec { path: PathArg, argv: usize },
    /// `io_uring_setup` under `io_uring = "allow"`.
    IoUringSetup,
}

impl Call {
    pub fn of(nr: i64) -> Option<Call> {
        use Intent::*;
        use Writes::*;
        let access = |op, path, path2, intent, writes| {
            Some(Call::Access {
                op,
                path,
                path2,
                intent,
                writes,
            })
        };
        let one = |op, path| access(op, path, None, Namespace, First);
        match nr {
            libc::SYS_openat => access("openat", at(0, 1), None, Flags(2), First),
            libc::SYS_openat2 => access("openat2", at(0, 1), None, OpenHow(2), First),
            libc::SYS_renameat2 => access("renameat2", at(0, 1), Some(at(2, 3)), Namespace, Both),
            libc::SYS_renameat => access("renameat", at(0, 1), Some(at(2, 3)), Namespace, Both),
            libc::SYS_unlinkat => one("unlinkat", at(0, 1)),
            libc::SYS_mkdirat => one("mkdirat", at(0, 1)),
            libc::SYS_linkat => access("linkat", at(0, 1), Some(at(2, 3)), Namespace, Second),
            // The symlink's target is text stored in the link; as the
            // library does, it is shown resolved against the cwd.
            libc::SYS_symlinkat => access("symlinkat", cwd(0), Some(at(1, 2)), Namespace, Second),
            libc::SYS_truncate => one("truncate", cwd(0)),
            libc::SYS_mknodat => one("mknodat", at(0, 1)),
            libc::SYS_fchmodat => one("fchmodat", at(0, 1)),
            super::filter::FCHMODAT2 => one("fchmodat2", at(0, 1)),
            libc::SYS_fchownat => one("fchownat", at(0, 1)),
            libc::SYS_utimensat => one("utimensat", at(0, 1)),
            libc::SYS_execve => Some(Call::Exec {
                path: cwd(0),
                argv: 1,
            }),
            libc::SYS_execveat => Some(Call::Exec {
                path: at(0, 1),
                argv: 2,
            }),
            libc::SYS_io_uring_setup => Some(Call::IoUringSetup),
            #[cfg(target_arch = "x86_64")]
            n => match n {
                libc::SYS_open => access("open", cwd(0), None, Flags(1), First),
                libc::SYS_creat => access("creat", cwd(0), None, Creat, First),
                libc::SYS_rename => access("rename", cwd(0), Some(cwd(1)), Namespace, Both),
                libc::SYS_unlink => one("unlink", cwd(0)),
                libc::SYS_rmdir => one("rmdir", cwd(0)),
                libc::SYS_mkdir => one("mkdir", cwd(0)),
                libc::SYS_link => access("link", cwd(0), Some(cwd(1)), Namespace, Second),
                libc::SYS_symlink => access("symlink", cwd(0), Some(cwd(1)), Namespace, Second),
                libc::SYS_mknod => one("mknod", cwd(0)),
                libc::SYS_chmod => one("chmod", cwd(0)),
                libc::SYS_chown => one("chown", cwd(0)),
                libc::SYS_lchown => one("lchown", cwd(0)),
                libc::SYS_utime => one("utime", cwd(0)),
                libc::SYS_utimes => one("utimes", cwd(0)),
                libc::SYS_futimesat => one("futimesat", at(0, 1)),
                _ => None,
            },
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }
}

/// The open intent and flags (`-1`: none) of an access.
pub fn intent_of(intent: Intent, flags: Option<i32>) -> (OpenIntent, i32) {
    match (intent, flags) {
        (Intent::Namespace, _) => (OpenIntent::NAMESPACE, -1),
        (Intent::Creat, _) => {
            let f = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
            (OpenIntent::from_flags(f), f)
        }
        (_, Some(f)) => (OpenIntent::from_flags(f), f),
        // openat2 whose struct could not be read: the kernel will fail it
        // with EFAULT too; judged as a write so that deny still holds.
        (_, None) => (OpenIntent::NAMESPACE, -1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notified_call_is_described() {
        for io_uring in [false, true] {
            for (nr, rule) in super::super::filter::rules(io_uring) {
                if matches!(rule, super::super::filter::Rule::Fail(_)) {
                    continue;
                }
                assert!(
                    Call::of(nr).is_some(),
                    "system call {nr} has no description"
                );
            }
        }
    }

    #[test]
    fn open_intents() {
        let (i, f) = intent_of(Intent::Creat, None);
        assert!(i.create && i.truncate && i.is_write());
        assert_eq!(f, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
        let (i, _) = intent_of(Intent::Flags(2), Some(libc::O_RDONLY));
        assert!(!i.is_write());
        assert!(intent_of(Intent::Namespace, None).0.is_write());
    }
}
