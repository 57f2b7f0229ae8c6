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

/// How the supervisor can perform the call itself (so that the path it
/// judged is the path used, and the event has the real result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// As this native call, with the path and directory arguments replaced
    /// and, if set, the struct at argument `.0` (`.1` bytes) copied in.
    Native(i64, Option<(usize, usize)>),
    /// Not emulated (an i386 call whose structures differ): the kernel
    /// performs it after the supervisor's answer.
    No,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Access {
        op: &'static str,
        path: PathArg,
        path2: Option<PathArg>,
        intent: Intent,
        writes: Writes,
        replay: Replay,
    },
    /// A stat-family call, notified only under redirect so that a path
    /// the worker redirected is stat'ed in the worker's copy: the native
    /// call, its path, and its result buffer (argument, size) if any.
    Stat {
        nr: i64,
        path: PathArg,
        out: Option<(usize, usize)>,
    },
    /// `readlink`/`readlinkat`, notified only under redirect (the
    /// worker's own symlinks, [`super::reads::readlink`]): its path, and
    /// the buffer and size arguments.
    Readlink {
        path: PathArg,
        buf: usize,
        size: usize,
    },
    /// `getdents64` (`wide`) or `getdents`, notified only under redirect
    /// (the worker's view of a directory, [`super::reads::getdents`]).
    Getdents { wide: bool },
    /// `execve`/`execveat`: path and argv arguments, and the width of a
    /// pointer in the caller's ABI.
    Exec {
        path: PathArg,
        argv: usize,
        pointer: usize,
    },
    /// `io_uring_setup` under `io_uring = "allow"`.
    IoUringSetup,
}

const STAT_SIZE: usize = std::mem::size_of::<libc::stat>();
const STATX_SIZE: usize = std::mem::size_of::<libc::statx>();
const TIMESPEC2: usize = 2 * std::mem::size_of::<libc::timespec>();
const TIMEVAL2: usize = 2 * std::mem::size_of::<libc::timeval>();

impl Call {
    /// The native call `nr`.
    pub fn of(nr: i64) -> Option<Call> {
        let mut call = Self::described(nr)?;
        if let Call::Access { replay, .. } = &mut call {
            let memory = match nr {
                libc::SYS_utimensat => Some((2, TIMESPEC2)),
                #[cfg(target_arch = "x86_64")]
                libc::SYS_utime => Some((1, std::mem::size_of::<libc::utimbuf>())),
                #[cfg(target_arch = "x86_64")]
                libc::SYS_utimes => Some((1, TIMEVAL2)),
                #[cfg(target_arch = "x86_64")]
                libc::SYS_futimesat => Some((2, TIMEVAL2)),
                _ => None,
            };
            *replay = Replay::Native(nr, memory);
        }
        Some(call)
    }

    /// The descriptions, with `replay` still to be set by [`Call::of`].
    fn described(nr: i64) -> Option<Call> {
        use Intent::*;
        use Writes::*;
        let access = |op, path, path2, intent, writes| {
            Some(Call::Access {
                op,
                path,
                path2,
                intent,
                writes,
                replay: Replay::No,
            })
        };
        let one = |op, path| access(op, path, None, Namespace, First);
        let stat = |path, out| Some(Call::Stat { nr, path, out });
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
                pointer: 8,
            }),
            libc::SYS_execveat => Some(Call::Exec {
                path: at(0, 1),
                argv: 2,
                pointer: 8,
            }),
            libc::SYS_io_uring_setup => Some(Call::IoUringSetup),
            libc::SYS_newfstatat => stat(at(0, 1), Some((2, STAT_SIZE))),
            libc::SYS_statx => stat(at(0, 1), Some((4, STATX_SIZE))),
            libc::SYS_faccessat => stat(at(0, 1), None),
            libc::SYS_getdents64 => Some(Call::Getdents { wide: true }),
            libc::SYS_readlinkat => Some(Call::Readlink {
                path: at(0, 1),
                buf: 2,
                size: 3,
            }),
            super::filter::FACCESSAT2 => stat(at(0, 1), None),
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
                libc::SYS_stat => stat(cwd(0), Some((1, STAT_SIZE))),
                libc::SYS_lstat => stat(cwd(0), Some((1, STAT_SIZE))),
                libc::SYS_access => stat(cwd(0), None),
                libc::SYS_getdents => Some(Call::Getdents { wide: false }),
                libc::SYS_readlink => Some(Call::Readlink {
                    path: cwd(0),
                    buf: 1,
                    size: 2,
                }),
                _ => None,
            },
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    /// An i386 call (`int 0x80`), described as the native call it matches.
    /// Calls whose arguments have the same meaning at 32 bits are replayed
    /// as that native call; those with 32-bit structures (time values),
    /// 16-bit ids or split 64-bit lengths are judged and logged, and left
    /// to the kernel (`Replay::No`).
    #[cfg(target_arch = "x86_64")]
    pub fn of_i386(nr: i64) -> Option<Call> {
        use super::filter::i386 as x;
        let (native, replayed) = match nr {
            x::OPEN => (libc::SYS_open, true),
            x::CREAT => (libc::SYS_creat, true),
            x::LINK => (libc::SYS_link, true),
            x::UNLINK => (libc::SYS_unlink, true),
            x::MKNOD => (libc::SYS_mknod, true),
            x::CHMOD => (libc::SYS_chmod, true),
            x::LCHOWN16 => (libc::SYS_lchown, false),
            x::UTIME => (libc::SYS_utime, false),
            x::RENAME => (libc::SYS_rename, true),
            x::MKDIR => (libc::SYS_mkdir, true),
            x::RMDIR => (libc::SYS_rmdir, true),
            x::SYMLINK => (libc::SYS_symlink, true),
            x::TRUNCATE => (libc::SYS_truncate, true),
            x::CHOWN16 => (libc::SYS_chown, false),
            x::TRUNCATE64 => (libc::SYS_truncate, false),
            x::LCHOWN32 => (libc::SYS_lchown, true),
            x::CHOWN32 => (libc::SYS_chown, true),
            x::UTIMES => (libc::SYS_utimes, false),
            x::OPENAT => (libc::SYS_openat, true),
            x::MKDIRAT => (libc::SYS_mkdirat, true),
            x::MKNODAT => (libc::SYS_mknodat, true),
            x::FCHOWNAT => (libc::SYS_fchownat, true),
            x::FUTIMESAT => (libc::SYS_futimesat, false),
            x::UNLINKAT => (libc::SYS_unlinkat, true),
            x::RENAMEAT => (libc::SYS_renameat, true),
            x::LINKAT => (libc::SYS_linkat, true),
            x::SYMLINKAT => (libc::SYS_symlinkat, true),
            x::FCHMODAT => (libc::SYS_fchmodat, true),
            x::UTIMENSAT | x::UTIMENSAT_TIME64 => (libc::SYS_utimensat, false),
            x::RENAMEAT2 => (libc::SYS_renameat2, true),
            x::OPENAT2 => (libc::SYS_openat2, true),
            x::FCHMODAT2 => (super::filter::FCHMODAT2, true),
            x::IO_URING_SETUP => return Some(Call::IoUringSetup),
            x::EXECVE => {
                return Some(Call::Exec {
                    path: cwd(0),
                    argv: 1,
                    pointer: 4,
                })
            }
            x::EXECVEAT => {
                return Some(Call::Exec {
                    path: at(0, 1),
                    argv: 2,
                    pointer: 4,
                })
            }
            _ => return None,
        };
        let mut call = Self::of(native)?;
        if let Call::Access { replay, .. } = &mut call {
            if !replayed {
                *replay = Replay::No;
            }
        }
        Some(call)
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
        // What open(2) keeps beside O_PATH (openat2 refuses the rest).
        (Intent::Flags(_), Some(f)) => {
            let f = mpaudit_core::flags::open_flags_in_effect(f);
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
            let o = super::super::filter::Options {
                io_uring_allowed: io_uring,
                read_your_writes: true,
            };
            #[cfg(target_arch = "x86_64")]
            for (nr, rule) in super::super::filter::i386_rules(o) {
                if !matches!(rule, super::super::filter::Rule::Fail(_)) {
                    assert!(Call::of_i386(nr).is_some(), "i386 call {nr}");
                }
            }
            for (nr, rule) in super::super::filter::rules(o) {
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
