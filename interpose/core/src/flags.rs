//! Decoding of `open(2)` flags and `fopen(3)` mode strings.

use crate::json::{put_str, Sink};

/// How a call accesses its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    Read,
    Write,
    ReadWrite,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Read => "read",
            AccessMode::Write => "write",
            AccessMode::ReadWrite => "readwrite",
        }
    }
}

/// What an open does to its file, derived from its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenIntent {
    pub mode: AccessMode,
    pub create: bool,
    pub truncate: bool,
    pub append: bool,
}

/// The flags `open(2)` keeps beside `O_PATH` (the kernel's
/// `O_PATH_FLAGS`); `build_open_how` drops every other one, access mode,
/// `O_CREAT`, `O_EXCL` and `O_TRUNC` included. `openat2` refuses them
/// with EINVAL instead.
pub const O_PATH_KEEPS: i32 = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// Whether the running kernel makes a tmpfile for `O_PATH|O_TMPFILE`:
/// before Linux 5.6, `build_open_flags` looked at `__O_TMPFILE` first and
/// only otherwise reduced an `O_PATH` open's flags (review 8 F6). Set once
/// at start ([`note_kernel_release`]); an atomic, so hooks read it from
/// signal handlers.
static O_PATH_TMPFILE_CREATES: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// `__O_TMPFILE`, the bit `O_TMPFILE` adds to `O_DIRECTORY`.
const TMPFILE_BIT: i32 = libc::O_TMPFILE & !libc::O_DIRECTORY;

/// Records the running kernel's release (`uname -r`, as `6.1.0-13-amd64`)
/// for [`open_flags_in_effect`]; one that does not parse counts as new.
pub fn note_kernel_release(release: &[u8]) {
    O_PATH_TMPFILE_CREATES.store(
        kernel_before(release, (5, 6)),
        core::sync::atomic::Ordering::Relaxed,
    );
}

/// Whether `release` names a kernel older than `major.minor`.
fn kernel_before(release: &[u8], (major, minor): (u32, u32)) -> bool {
    let mut parts = release.split(|&b| b == b'.').map(|p| {
        let digits = p.iter().take_while(|b| b.is_ascii_digit());
        digits.fold(None, |n: Option<u32>, &d| {
            Some(
                n.unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(u32::from(d - b'0')),
            )
        })
    });
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) < (major, minor),
        _ => false,
    }
}

/// The flags an `open`, `openat` or `creat` acts with: an `O_PATH` open
/// only finds its file (but for an `O_TMPFILE` one before Linux 5.6, which
/// makes its tmpfile).
pub fn open_flags_in_effect(flags: i32) -> i32 {
    in_effect(
        flags,
        O_PATH_TMPFILE_CREATES.load(core::sync::atomic::Ordering::Relaxed),
    )
}

/// [`open_flags_in_effect`] on a kernel that makes (`o_path_tmpfile`) or
/// does not make a tmpfile for `O_PATH|O_TMPFILE`.
fn in_effect(flags: i32, o_path_tmpfile: bool) -> i32 {
    let tmpfile = flags & TMPFILE_BIT != 0 && o_path_tmpfile;
    if flags & libc::O_PATH != 0 && !tmpfile {
        flags & O_PATH_KEEPS
    } else {
        flags
    }
}

impl OpenIntent {
    /// An `O_PATH` open neither reads nor writes its file: a read here,
    /// whatever else it says (`openat2` fails such flags with EINVAL).
    pub fn from_flags(flags: i32) -> Self {
        let flags = open_flags_in_effect(flags);
        let mode = match flags & libc::O_ACCMODE {
            libc::O_WRONLY => AccessMode::Write,
            libc::O_RDWR => AccessMode::ReadWrite,
            _ => AccessMode::Read,
        };
        // O_TMPFILE creates an unnamed file in a directory: a write there.
        let tmpfile = flags & libc::O_TMPFILE == libc::O_TMPFILE;
        OpenIntent {
            mode,
            create: flags & libc::O_CREAT != 0 || tmpfile,
            truncate: flags & libc::O_TRUNC != 0,
            append: flags & libc::O_APPEND != 0,
        }
    }

    /// The intent of a namespace change (rename, unlink, mkdir, …).
    pub const NAMESPACE: OpenIntent = OpenIntent {
        mode: AccessMode::Write,
        create: false,
        truncate: false,
        append: false,
    };

    /// Writes, creates or truncates: what the policy has to judge.
    pub fn is_write(&self) -> bool {
        self.mode != AccessMode::Read || self.create || self.truncate
    }
}

/// The `open(2)` flags glibc derives from an `fopen` mode string
/// (`r w a` then any of `+ x e m c`), or `None` for an invalid mode, which
/// glibc rejects with EINVAL without opening anything.
pub fn fopen_mode_flags(mode: &[u8]) -> Option<i32> {
    let (first, rest) = mode.split_first()?;
    let mut acc = match first {
        b'r' => libc::O_RDONLY,
        b'w' => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        b'a' => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => return None,
    };
    // glibc reads at most 6 more characters and stops at a ',' (ccs=...).
    for &c in rest.iter().take(6) {
        match c {
            b'+' => acc = (acc & !libc::O_ACCMODE) | libc::O_RDWR,
            b'x' => acc |= libc::O_EXCL,
            b'e' => acc |= libc::O_CLOEXEC,
            b',' => break,
            _ => {}
        }
    }
    Some(acc)
}

const NAMED_FLAGS: &[(i32, &str)] = &[
    (libc::O_CREAT, "O_CREAT"),
    (libc::O_EXCL, "O_EXCL"),
    (libc::O_NOCTTY, "O_NOCTTY"),
    (libc::O_TRUNC, "O_TRUNC"),
    (libc::O_APPEND, "O_APPEND"),
    (libc::O_NONBLOCK, "O_NONBLOCK"),
    (libc::O_DSYNC, "O_DSYNC"),
    (libc::O_DIRECT, "O_DIRECT"),
    (libc::O_LARGEFILE, "O_LARGEFILE"),
    (libc::O_NOFOLLOW, "O_NOFOLLOW"),
    (libc::O_NOATIME, "O_NOATIME"),
    (libc::O_CLOEXEC, "O_CLOEXEC"),
    (libc::O_PATH, "O_PATH"),
];

/// Writes the flag names as a JSON array: the access mode first, then the
/// other set flags. Composite flags (`O_SYNC`, `O_TMPFILE`, `O_DIRECTORY`)
/// are named once, not as their parts.
pub fn put_flag_names<S: Sink + ?Sized>(s: &mut S, flags: i32) {
    s.put(b"[");
    put_str(
        s,
        match flags & libc::O_ACCMODE {
            libc::O_WRONLY => b"O_WRONLY",
            libc::O_RDWR => b"O_RDWR",
            libc::O_RDONLY => b"O_RDONLY",
            _ => b"O_ACCMODE",
        },
    );
    let mut rest = flags & !libc::O_ACCMODE;
    for (composite, name) in [
        (libc::O_TMPFILE, "O_TMPFILE"),
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
    ] {
        if rest & composite == composite {
            s.put(b",");
            put_str(s, name.as_bytes());
            rest &= !composite;
        }
    }
    for &(bit, name) in NAMED_FLAGS {
        if rest & bit != 0 {
            s.put(b",");
            put_str(s, name.as_bytes());
            rest &= !bit;
        }
    }
    s.put(b"]");
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        use super::kernel_before;
        assert!(kernel_before(b"5.5.19-generic", (5, 6)));
        assert!(kernel_before(b"4.18.0-513.el8.x86_64", (5, 6)));
        assert!(!kernel_before(b"5.6.0", (5, 6)));
        assert!(!kernel_before(b"6.1.0-13-amd64", (5, 6)));
        assert!(!kernel_before(b"10.0", (5, 6)));
        assert!(!kernel_before(b"garbage", (5, 6)));
        assert!(!kernel_before(b"", (5, 6)));
    }

    #[test]
    fn o_path_o_tmpfile_makes_a_tmpfile_only_before_5_6() {
        let flags = libc::O_PATH | libc::O_TMPFILE | libc::O_RDWR;
        assert_eq!(
            super::in_effect(flags, false),
            libc::O_PATH | libc::O_DIRECTORY
        );
        assert_eq!(super::in_effect(flags, true), flags);
        let create = libc::O_PATH | libc::O_CREAT;
        assert_eq!(super::in_effect(create, true), libc::O_PATH);
    }

    use super::*;

    fn names(flags: i32) -> Vec<String> {
        let mut v = Vec::new();
        put_flag_names(&mut v, flags);
        serde_json::from_slice(&v).unwrap()
    }

    #[test]
    fn names_common_combinations() {
        assert_eq!(names(libc::O_RDONLY), ["O_RDONLY"]);
        assert_eq!(
            names(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC),
            ["O_WRONLY", "O_CREAT", "O_TRUNC", "O_CLOEXEC"]
        );
        assert_eq!(
            names(libc::O_RDWR | libc::O_TMPFILE),
            ["O_RDWR", "O_TMPFILE"]
        );
        assert_eq!(
            names(libc::O_RDONLY | libc::O_DIRECTORY),
            ["O_RDONLY", "O_DIRECTORY"]
        );
        assert_eq!(names(libc::O_WRONLY | libc::O_SYNC), ["O_WRONLY", "O_SYNC"]);
    }

    #[test]
    fn intent_from_flags() {
        let i = OpenIntent::from_flags(libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND);
        assert_eq!(
            (i.mode, i.create, i.truncate, i.append),
            (AccessMode::Write, true, false, true)
        );
        assert!(i.is_write());
        assert!(!OpenIntent::from_flags(libc::O_RDONLY).is_write());
        // O_RDONLY|O_TRUNC truncates: a write for the policy.
        assert!(OpenIntent::from_flags(libc::O_RDONLY | libc::O_TRUNC).is_write());
        assert!(OpenIntent::from_flags(libc::O_RDWR | libc::O_TMPFILE).create);
        // O_PATH drops everything but O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC.
        let path = libc::O_PATH | libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC;
        assert!(!OpenIntent::from_flags(path).is_write());
        assert!(!OpenIntent::from_flags(libc::O_PATH | libc::O_TMPFILE | libc::O_RDWR).is_write());
        assert_eq!(
            open_flags_in_effect(path | libc::O_NOFOLLOW | libc::O_CLOEXEC),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC
        );
    }

    #[test]
    fn fopen_modes_match_glibc() {
        assert_eq!(fopen_mode_flags(b"r"), Some(libc::O_RDONLY));
        assert_eq!(fopen_mode_flags(b"rb"), Some(libc::O_RDONLY));
        assert_eq!(
            fopen_mode_flags(b"w"),
            Some(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
        );
        assert_eq!(
            fopen_mode_flags(b"a+"),
            Some(libc::O_RDWR | libc::O_CREAT | libc::O_APPEND)
        );
        assert_eq!(
            fopen_mode_flags(b"r+e"),
            Some(libc::O_RDWR | libc::O_CLOEXEC)
        );
        assert_eq!(
            fopen_mode_flags(b"wx"),
            Some(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL)
        );
        assert_eq!(fopen_mode_flags(b"q"), None);
        assert_eq!(fopen_mode_flags(b""), None);
    }
}
