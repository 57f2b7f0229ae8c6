//! The BPF program the supervisor installs: which system calls reach it
//! (`SECCOMP_RET_USER_NOTIF`), which pass at full speed, and what a foreign
//! architecture gets.

use libc::{
    sock_filter, BPF_ABS, BPF_JA, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W,
};

/// `AUDIT_ARCH_*` of the architecture the runner is built for. Calls of
/// another ABI are killed, except i386 calls on x86-64 (`int 0x80`, a
/// 32-bit program), which have their own chain ([`I386_RULES`]).
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;

/// `AUDIT_ARCH_I386`: `int 0x80` from any process, or a 32-bit program.
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;

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

/// What the filter is built for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `[audit] io_uring = "allow"`: `io_uring_setup` is notified (the
    /// process is listed as not fully audited) instead of failing.
    pub io_uring_allowed: bool,
    /// The policy redirects: read-only opens, the stat family, `readlink`
    /// and `getdents` are notified too, so that a worker reads and stats what it wrote
    /// (read-your-writes); the supervisor lets the others go on unlogged.
    pub read_your_writes: bool,
}

/// The calls the filter looks at, most frequent first (the filter is a
/// linear chain; the kernel's per-filter cache lets every other call
/// through without running it at all).
pub fn rules(o: Options) -> Vec<(i64, Rule)> {
    use Rule::*;
    let open_rule = |arg| {
        if o.read_your_writes {
            Notify
        } else {
            NotifyIfWriteFlags(arg)
        }
    };
    let mut v: Vec<(i64, Rule)> = vec![
        (libc::SYS_openat, open_rule(2)),
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
        (libc::SYS_open, open_rule(1)),
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
    if o.read_your_writes {
        v.extend([
            (libc::SYS_newfstatat, Notify),
            (libc::SYS_statx, Notify),
            (libc::SYS_faccessat, Notify),
            (FACCESSAT2, Notify),
            (libc::SYS_readlinkat, Notify),
            (libc::SYS_getdents64, Notify),
        ]);
        #[cfg(target_arch = "x86_64")]
        v.extend([
            (libc::SYS_stat, Notify),
            (libc::SYS_lstat, Notify),
            (libc::SYS_access, Notify),
            (libc::SYS_readlink, Notify),
            (libc::SYS_getdents, Notify),
        ]);
    }
    v.push((
        libc::SYS_io_uring_setup,
        if o.io_uring_allowed {
            Notify
        } else {
            Fail(libc::ENOSYS)
        },
    ));
    v
}

/// `fchmodat2` (Linux 6.6); not in every libc crate's tables.
pub const FCHMODAT2: i64 = 452;
/// `faccessat2` (Linux 5.8).
pub const FACCESSAT2: i64 = 439;

/// i386 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl) of
/// the file-changing calls: an `int 0x80` (or a 32-bit program) reaches
/// the supervisor with these, which [`super::calls::Call::of_i386`] maps to
/// the native calls. Every other i386 call is allowed.
#[cfg(target_arch = "x86_64")]
pub mod i386 {
    pub const OPEN: i64 = 5;
    pub const CREAT: i64 = 8;
    pub const LINK: i64 = 9;
    pub const UNLINK: i64 = 10;
    pub const EXECVE: i64 = 11;
    pub const MKNOD: i64 = 14;
    pub const CHMOD: i64 = 15;
    pub const LCHOWN16: i64 = 16;
    pub const UTIME: i64 = 30;
    pub const RENAME: i64 = 38;
    pub const MKDIR: i64 = 39;
    pub const RMDIR: i64 = 40;
    pub const SYMLINK: i64 = 83;
    pub const TRUNCATE: i64 = 92;
    pub const CHOWN16: i64 = 182;
    pub const TRUNCATE64: i64 = 193;
    pub const LCHOWN32: i64 = 198;
    pub const CHOWN32: i64 = 212;
    pub const UTIMES: i64 = 271;
    pub const OPENAT: i64 = 295;
    pub const MKDIRAT: i64 = 296;
    pub const MKNODAT: i64 = 297;
    pub const FCHOWNAT: i64 = 298;
    pub const FUTIMESAT: i64 = 299;
    pub const UNLINKAT: i64 = 301;
    pub const RENAMEAT: i64 = 302;
    pub const LINKAT: i64 = 303;
    pub const SYMLINKAT: i64 = 304;
    pub const FCHMODAT: i64 = 306;
    pub const UTIMENSAT: i64 = 320;
    pub const RENAMEAT2: i64 = 353;
    pub const EXECVEAT: i64 = 358;
    pub const UTIMENSAT_TIME64: i64 = 412;
    pub const IO_URING_SETUP: i64 = 425;
    pub const OPENAT2: i64 = 437;
    pub const FCHMODAT2: i64 = 452;
}

/// The i386 chain: the same rules as the native one, by i386 number.
#[cfg(target_arch = "x86_64")]
pub fn i386_rules(o: Options) -> Vec<(i64, Rule)> {
    use i386::*;
    use Rule::*;
    // Read-only i386 opens and stats are not followed to a redirected file
    // (docs/limitations.md): only the write-intent ones are notified.
    let mut v = vec![
        (OPENAT, NotifyIfWriteFlags(2)),
        (OPEN, NotifyIfWriteFlags(1)),
    ];
    v.extend(
        [
            OPENAT2,
            CREAT,
            LINK,
            UNLINK,
            EXECVE,
            MKNOD,
            CHMOD,
            LCHOWN16,
            UTIME,
            RENAME,
            MKDIR,
            RMDIR,
            SYMLINK,
            TRUNCATE,
            CHOWN16,
            TRUNCATE64,
            LCHOWN32,
            CHOWN32,
            UTIMES,
            MKDIRAT,
            MKNODAT,
            FCHOWNAT,
            FUTIMESAT,
            UNLINKAT,
            RENAMEAT,
            LINKAT,
            SYMLINKAT,
            FCHMODAT,
            UTIMENSAT,
            RENAMEAT2,
            EXECVEAT,
            UTIMENSAT_TIME64,
            FCHMODAT2,
        ]
        .map(|nr| (nr, Notify)),
    );
    v.push((
        IO_URING_SETUP,
        if o.io_uring_allowed {
            Notify
        } else {
            Fail(libc::ENOSYS)
        },
    ));
    v
}

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

/// One architecture's chain: the call number loaded, then the rules, then
/// allow.
fn chain(rules: &[(i64, Rule)], reject_x32: bool) -> Vec<sock_filter> {
    let ret = |v: u32| stmt(BPF_RET | BPF_K, v);
    let mut p = vec![stmt(BPF_LD | BPF_W | BPF_ABS, NR)];
    if reject_x32 {
        p.extend([
            jump(BPF_JMP | BPF_JSET | BPF_K, X32_SYSCALL_BIT, 0, 1),
            ret(libc::SECCOMP_RET_KILL_PROCESS),
        ]);
    }
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

/// `if arch == audit_arch { chain } else fall through`: a test and a long
/// jump (`BPF_JA`, 32-bit offset) over the chain.
fn arch_block(p: &mut Vec<sock_filter>, audit_arch: u32, body: Vec<sock_filter>) {
    p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, audit_arch, 1, 0));
    p.push(stmt(BPF_JMP | BPF_JA, body.len() as u32));
    p.extend(body);
}

/// The whole program: the native chain first (the only one a 64-bit
/// program's ordinary calls run), then the i386 one, then kill.
pub fn program(o: Options) -> Vec<sock_filter> {
    let mut p = vec![stmt(BPF_LD | BPF_W | BPF_ABS, ARCH)];
    arch_block(
        &mut p,
        AUDIT_ARCH,
        chain(&rules(o), cfg!(target_arch = "x86_64")),
    );
    #[cfg(target_arch = "x86_64")]
    arch_block(&mut p, AUDIT_ARCH_I386, chain(&i386_rules(o), false));
    p.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS));
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
                c if c == BPF_JMP | BPF_JA => pc += 1 + i.k as usize,
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
        let p = program(Options::default());
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
            run(&program(Options::default()), AUDIT_ARCH, nr, [0; 6]),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(
            run(
                &program(Options {
                    io_uring_allowed: true,
                    ..Options::default()
                }),
                AUDIT_ARCH,
                nr,
                [0; 6]
            ),
            libc::SECCOMP_RET_USER_NOTIF
        );
    }

    #[test]
    fn foreign_architectures_and_x32_are_killed() {
        let p = program(Options::default());
        assert_eq!(
            run(&p, 0xC000_0028, libc::SYS_read as u32, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            run(&p, AUDIT_ARCH, X32_SYSCALL_BIT | 2, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    // Regression (review 2, H3): an `int 0x80` call was killed; now the
    // i386 file-changing calls are notified and the others allowed.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_calls_are_notified_not_killed() {
        let p = program(Options::default());
        let i =
            |nr: i64, flags: u64| run(&p, AUDIT_ARCH_I386, nr as u32, [0, flags, flags, 0, 0, 0]);
        assert_eq!(i(3, 0), libc::SECCOMP_RET_ALLOW, "read");
        assert_eq!(
            i(i386::OPEN, libc::O_RDONLY as u64),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(
            i(i386::OPEN, (libc::O_WRONLY | libc::O_CREAT) as u64),
            libc::SECCOMP_RET_USER_NOTIF
        );
        for nr in [i386::UNLINK, i386::RENAME, i386::EXECVE, i386::CHOWN32] {
            assert_eq!(i(nr, 0), libc::SECCOMP_RET_USER_NOTIF, "{nr}");
        }
        assert_eq!(
            i(i386::IO_URING_SETUP, 0),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn read_your_writes_notifies_reads_and_stats() {
        let p = program(Options {
            read_your_writes: true,
            ..Options::default()
        });
        let at = |nr: i64, flags: i32| {
            run(
                &p,
                AUDIT_ARCH,
                nr as u32,
                [libc::AT_FDCWD as u64, 0, flags as u64, 0, 0, 0],
            )
        };
        assert_eq!(
            at(libc::SYS_openat, libc::O_RDONLY),
            libc::SECCOMP_RET_USER_NOTIF
        );
        assert_eq!(at(libc::SYS_newfstatat, 0), libc::SECCOMP_RET_USER_NOTIF);
        assert_eq!(at(libc::SYS_statx, 0), libc::SECCOMP_RET_USER_NOTIF);
        assert_eq!(at(libc::SYS_readlinkat, 0), libc::SECCOMP_RET_USER_NOTIF);
        assert_eq!(at(libc::SYS_getdents64, 0), libc::SECCOMP_RET_USER_NOTIF);
        assert_eq!(at(libc::SYS_read, 0), libc::SECCOMP_RET_ALLOW);
        let plain = program(Options::default());
        assert_eq!(
            run(&plain, AUDIT_ARCH, libc::SYS_newfstatat as u32, [0; 6]),
            libc::SECCOMP_RET_ALLOW
        );
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        let p = program(Options {
            io_uring_allowed: true,
            read_your_writes: true,
        });
        for (i, ins) in p.iter().enumerate() {
            if ins.code as u32 == BPF_JMP | BPF_JA {
                assert!(i + 1 + (ins.k as usize) < p.len());
            } else if ins.code as u32 & 0x07 == BPF_JMP {
                assert!(i + 1 + (ins.jt.max(ins.jf) as usize) < p.len());
            }
        }
        assert!(p.len() < 4096);
    }
}
