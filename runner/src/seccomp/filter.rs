//! The BPF program the supervisor installs: which system calls reach it
//! (`SECCOMP_RET_USER_NOTIF`), which pass at full speed, and what a foreign
//! architecture gets.

use libc::{sock_filter, BPF_ABS, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W};

/// `AUDIT_ARCH_*` of the architecture the runner is built for: a process
/// of another ABI (an `int 0x80` call on x86-64, an x32 call) is killed,
/// since its call numbers mean something else.
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;

/// x32 system calls are x86-64 calls with this bit set in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Open flags that can make an open a write for the policy
/// (`OpenIntent::is_write`): the access mode bits, `O_CREAT`, `O_TRUNC`
/// and `__O_TMPFILE`. An open with none of them is a read and never
/// reaches the supervisor.
/// (`O_TMPFILE` is `__O_TMPFILE | O_DIRECTORY`: only its own bit counts,
/// or every read-only `O_DIRECTORY` open would be stopped.)
pub const WRITE_INTENT_BITS: u32 = (libc::O_WRONLY
    | libc::O_RDWR
    | libc::O_CREAT
    | libc::O_TRUNC
    | (libc::O_TMPFILE & !libc::O_DIRECTORY)) as u32;

/// What the filter does with one system call number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Always notify the supervisor.
    Notify,
    /// Notify only when argument `n` (open flags) has a write-intent bit.
    NotifyIfWriteFlags(u8),
    /// Fail with this errno without notifying.
    Fail(i32),
}

/// The calls the filter looks at, most frequent first (the filter is a
/// linear chain; the kernel's per-filter cache lets every other call
/// through without running it at all).
pub fn rules(io_uring_allowed: bool) -> Vec<(i64, Rule)> {
    use Rule::*;
    let mut v: Vec<(i64, Rule)> = vec![
        (libc::SYS_openat, NotifyIfWriteFlags(2)),
        (libc::SYS_openat2, Notify),
        (libc::SYS_renameat2, Notify),
        (libc::SYS_renameat, Notify),
        (libc::SYS_unlinkat, Notify),
        (libc::SYS_mkdirat, Notify),
        (libc::SYS_linkat, Notify),
        (libc::SYS_symlinkat, Notify),
        (libc::SYS_truncate, Notify),
        (libc::SYS_mknodat, Notify),
        (libc::SYS_fchmodat, Notify),
        (FCHMODAT2, Notify),
        (libc::SYS_fchownat, Notify),
        (libc::SYS_utimensat, Notify),
        (libc::SYS_execve, Notify),
        (libc::SYS_execveat, Notify),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        (libc::SYS_open, NotifyIfWriteFlags(1)),
        (libc::SYS_creat, Notify),
        (libc::SYS_rename, Notify),
        (libc::SYS_unlink, Notify),
        (libc::SYS_rmdir, Notify),
        (libc::SYS_mkdir, Notify),
        (libc::SYS_link, Notify),
        (libc::SYS_symlink, Notify),
        (libc::SYS_mknod, Notify),
        (libc::SYS_chmod, Notify),
        (libc::SYS_chown, Notify),
        (libc::SYS_lchown, Notify),
        (libc::SYS_utime, Notify),
        (libc::SYS_utimes, Notify),
        (libc::SYS_futimesat, Notify),
    ]);
    v.push((
        libc::SYS_io_uring_setup,
        if io_uring_allowed {
            Notify
        } else {
            Fail(libc::ENOSYS)
        },
    ));
    v
}

/// `fchmodat2` (Linux 6.6); not in every libc crate's tables.
pub const FCHMODAT2: i64 = 452;

// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_low(n: u8) -> u32 {
    16 + 8 * n as u32
}

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The program for `rules`.
pub fn program(rules: &[(i64, Rule)]) -> Vec<sock_filter> {
    let ret = |v: u32| stmt(BPF_RET | BPF_K, v);
    let mut p = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD | BPF_W | BPF_ABS, NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.extend([
        jump(BPF_JMP | BPF_JSET | BPF_K, X32_SYSCALL_BIT, 0, 1),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
    ]);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = X32_SYSCALL_BIT;
    for &(nr, rule) in rules {
        let nr = nr as u32;
        match rule {
            Rule::Notify => {
                p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1));
                p.push(ret(libc::SECCOMP_RET_USER_NOTIF));
            }
            Rule::Fail(errno) => {
                p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1));
                p.push(ret(libc::SECCOMP_RET_ERRNO | (errno as u32 & 0xffff)));
            }
            Rule::NotifyIfWriteFlags(arg) => {
                // Flags are an int: the low half of the 64-bit argument.
                p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 4));
                p.push(stmt(BPF_LD | BPF_W | BPF_ABS, arg_low(arg)));
                p.push(jump(BPF_JMP | BPF_JSET | BPF_K, WRITE_INTENT_BITS, 0, 1));
                p.push(ret(libc::SECCOMP_RET_USER_NOTIF));
                p.push(ret(libc::SECCOMP_RET_ALLOW));
            }
        }
    }
    p.push(ret(libc::SECCOMP_RET_ALLOW));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the instructions `program` emits, so the
    /// program's decisions can be checked without installing it.
    fn run(p: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            let code = i.code as u32;
            match code {
                c if c == BPF_LD | BPF_W | BPF_ABS => {
                    let o = i.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                    pc += 1;
                }
                c if c == BPF_RET | BPF_K => return i.k,
                c if c == BPF_JMP | BPF_JEQ | BPF_K || c == BPF_JMP | BPF_JSET | BPF_K => {
                    let hit = if c & 0xf0 == BPF_JEQ {
                        acc == i.k
                    } else {
                        acc & i.k != 0
                    };
                    pc += 1 + if hit { i.jt } else { i.jf } as usize;
                }
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    #[test]
    fn read_only_opens_pass_and_writes_are_notified() {
        let p = program(&rules(false));
        let openat = |flags: i32| {
            run(
                &p,
                AUDIT_ARCH,
                libc::SYS_openat as u32,
                [libc::AT_FDCWD as u64, 0x1000, flags as u64, 0, 0, 0],
            )
        };
        assert_eq!(openat(libc::O_RDONLY), libc::SECCOMP_RET_ALLOW);
        assert_eq!(
            openat(libc::O_RDONLY | libc::O_CLOEXEC | libc::O_DIRECTORY),
            libc::SECCOMP_RET_ALLOW
        );
        for f in [
            libc::O_WRONLY,
            libc::O_RDWR,
            libc::O_RDONLY | libc::O_CREAT,
            libc::O_RDONLY | libc::O_TRUNC,
            libc::O_RDWR | libc::O_TMPFILE,
            libc::O_WRONLY | libc::O_TMPFILE,
        ] {
            assert_eq!(openat(f), libc::SECCOMP_RET_USER_NOTIF, "{f:#o}");
        }
        // The upper half of a 64-bit flags argument is ignored, as the
        // kernel ignores it.
        assert_eq!(
            run(
                &p,
                AUDIT_ARCH,
                libc::SYS_openat as u32,
                [0, 0, 0xffff_ffff_0000_0000, 0, 0, 0]
            ),
            libc::SECCOMP_RET_ALLOW
        );
        for nr in [libc::SYS_renameat2, libc::SYS_unlinkat, libc::SYS_execve] {
            assert_eq!(
                run(&p, AUDIT_ARCH, nr as u32, [0; 6]),
                libc::SECCOMP_RET_USER_NOTIF
            );
        }
        for nr in [libc::SYS_read, libc::SYS_write, libc::SYS_close] {
            assert_eq!(
                run(&p, AUDIT_ARCH, nr as u32, [0; 6]),
                libc::SECCOMP_RET_ALLOW
            );
        }
    }

    #[test]
    fn io_uring_fails_with_enosys_unless_allowed() {
        let nr = libc::SYS_io_uring_setup as u32;
        assert_eq!(
            run(&program(&rules(false)), AUDIT_ARCH, nr, [0; 6]),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(
            run(&program(&rules(true)), AUDIT_ARCH, nr, [0; 6]),
            libc::SECCOMP_RET_USER_NOTIF
        );
    }

    #[test]
    fn foreign_architectures_and_x32_are_killed() {
        let p = program(&rules(false));
        assert_eq!(
            run(&p, 0x4000_0003, libc::SYS_read as u32, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            run(&p, AUDIT_ARCH, X32_SYSCALL_BIT | 2, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        let p = program(&rules(true));
        for (i, ins) in p.iter().enumerate() {
            if ins.code as u32 & 0x07 == BPF_JMP {
                assert!(i + 1 + (ins.jt.max(ins.jf) as usize) < p.len());
            }
        }
        assert!(p.len() < 4096);
    }
}
