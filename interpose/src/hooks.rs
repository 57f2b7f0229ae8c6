//! The exported entry points. Each is a one-liner handing over to audit.rs or
//! process.rs with a closure that calls the real function.
//!
//! `open`, `openat` and friends are C-variadic; stable Rust cannot define
//! variadic functions, so they take `mode` as a fixed argument. On x86-64 and
//! aarch64 Linux a variadic integer argument travels exactly like a fixed
//! one, and the real function is always given the mode the program passed.

#![allow(clippy::missing_safety_doc)]

use crate::audit::{file_access, magic_link_text, reroute, Call, PathArg, Writes};
use crate::descriptor::{empty_path, link_of_descriptor, metadata_change};
use crate::process;
use libc::{c_char, c_int, c_uint, c_void, mode_t, pid_t, FILE};
use mpaudit_core::flags::{fopen_mode_flags, OpenIntent};

macro_rules! hooks {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty => |$real:ident $(, $caller:ident)?| $body:expr; )*) => {
        #[allow(non_upper_case_globals)]
        pub(crate) mod real_fn {
            $( pub static $name: crate::real::Real = crate::real::Real::new(concat!(stringify!($name), "\0")); )*
        }

        /// Resolves every real function (called once, at load).
        pub(crate) fn resolve_all() {
            $( real_fn::$name.resolve(); )*
        }

        $( hook_fn!($name ($($arg : $ty),*) -> $ret, $real [$($caller)?] $body); )*
    };
}

/// One hook. `|real|`: a plain exported function. `|real, caller|`: the
/// exported symbol is a two-instruction naked stub that passes its return
/// address (the program's call site) in the sixth argument register to the
/// body, which gets its (at most five) integer arguments back by `as` casts.
/// A stack walk that may not run (`stack::frames_registered`) still knows
/// the immediate caller that way, with no frame pointers to trust.
macro_rules! hook_fn {
    ($name:ident ($($arg:ident : $ty:ty),*) -> $ret:ty, $real:ident [] $body:expr) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            let p = real_fn::$name.get();
            if p == 0 {
                return <$ret as crate::real::Missing>::missing();
            }
            // SAFETY: p is libc's definition of this very function.
            let $real: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
            // SAFETY: the body hands the program's arguments, untouched, to
            // audit.rs and process.rs helpers whose contract is just that
            // (pointers as valid as libc requires of its caller), and calls
            // `$real`, libc's function with this export's C signature.
            #[allow(unused_unsafe)]
            unsafe { $body }
        }
    };
    ($name:ident ($($arg:ident : $ty:ty),*) -> $ret:ty, $real:ident [$caller:ident] $body:expr) => {
        #[no_mangle]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            core::arch::naked_asm!("mov r9, [rsp]", "jmp {body}", body = sym $name::body);
            #[cfg(target_arch = "aarch64")]
            core::arch::naked_asm!("mov x5, x30", "b {body}", body = sym $name::body);
        }

        pub(crate) mod $name {
            #[allow(unused_imports)]
            use super::*;

            /// The hook's body: the stub's five argument registers, then
            /// the return address it passed in the sixth.
            pub(crate) unsafe extern "C" fn body(
                r0: usize, r1: usize, r2: usize, r3: usize, r4: usize, $caller: usize,
            ) -> $ret {
                // The ABI passes each integer or pointer argument in its
                // own register, the low bits holding the value.
                bind_args!([r0, r1, r2, r3, r4] $($arg: $ty),*);
                let p = real_fn::$name.get();
                if p == 0 {
                    return <$ret as crate::real::Missing>::missing();
                }
                // SAFETY: p is libc's definition of this very function.
                let $real: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { core::mem::transmute(p) };
                // SAFETY: the arguments bound from the stub's registers are
                // the program's own (the stub only adds the sixth); the body
                // hands them, untouched, to audit.rs and process.rs helpers
                // whose contract is just that, and calls `$real`, libc's
                // function with this export's C signature.
                #[allow(unused_unsafe)]
                unsafe { $body }
            }
        }
    };
}

/// `let arg = reg as Type;` for each argument in turn, from the registers
/// listed first (no array: hooks run on small signal stacks).
macro_rules! bind_args {
    ([$($reg:ident),*]) => {
        $( let _ = $reg; )*
    };
    ([$reg:ident $(, $rest:ident)*] $arg:ident : $ty:ty $(, $more:ident : $mty:ty)*) => {
        let $arg = $reg as $ty;
        bind_args!([$($rest),*] $($more : $mty),*);
    };
}

extern "C" {
    static environ: *const *const c_char;
}

fn open_call(op: &'static str, dirfd: c_int, path: *const c_char, flags: c_int) -> Call {
    // What open(2) keeps beside O_PATH; openat2 refuses the rest itself.
    let flags = if op == "openat2" {
        flags
    } else {
        mpaudit_core::flags::open_flags_in_effect(flags)
    };
    Call {
        op,
        path: PathArg { dirfd, path },
        path2: None,
        intent: OpenIntent::from_flags(flags),
        flags,
        writes: Writes::First,
        template_suffix: None,
        removes: false,
        keeps_content: false,
        changes_metadata: None,
        at_flags: 0,
        node_mode: None,
    }
}

/// mkstemp and friends: the template is filled in by the call.
fn temp_call(op: &'static str, template: *mut c_char, flags: c_int, suffix: c_int) -> Call {
    Call {
        template_suffix: Some(suffix.max(0) as usize),
        ..open_call(op, libc::AT_FDCWD, template, TEMP_FLAGS | flags)
    }
}

fn fopen_call(op: &'static str, path: *const c_char, mode: *const c_char) -> Call {
    let mode = if mode.is_null() {
        &b""[..]
    } else {
        // SAFETY: fopen requires its mode to be a C string, read here up to
        // its NUL or 16 bytes (the access letters come first).
        unsafe { crate::sys::c_bytes(mode, 16) }
    };
    open_call(
        op,
        libc::AT_FDCWD,
        path,
        fopen_mode_flags(mode).unwrap_or(libc::O_RDONLY),
    )
}

const TEMP_FLAGS: c_int = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;

/// A namespace change; the helpers below say what else it does (creates,
/// removes, which of its paths it writes).
fn ns(op: &'static str, path: PathArg, path2: Option<PathArg>) -> Call {
    Call {
        op,
        path,
        path2,
        intent: OpenIntent::NAMESPACE,
        flags: -1,
        writes: if path2.is_some() {
            Writes::Both
        } else {
            Writes::First
        },
        template_suffix: None,
        removes: false,
        keeps_content: false,
        changes_metadata: None,
        at_flags: 0,
        node_mode: None,
    }
}

fn removal(op: &'static str, path: PathArg) -> Call {
    Call {
        removes: true,
        ..ns(op, path, None)
    }
}

/// mkdir, link, symlink: the (last) path is created.
pub(crate) fn creation(op: &'static str, path: PathArg, path2: Option<PathArg>) -> Call {
    let base = ns(op, path, path2);
    Call {
        intent: OpenIntent {
            create: true,
            ..OpenIntent::NAMESPACE
        },
        writes: if path2.is_some() {
            Writes::Second
        } else {
            Writes::First
        },
        ..base
    }
}

/// rename: both paths are written; the source's content moves along.
fn renaming(op: &'static str, old: PathArg, new: PathArg) -> Call {
    Call {
        keeps_content: true,
        ..ns(op, old, Some(new))
    }
}

/// chmod, chown, utimes: an existing file's metadata changes; a redirect
/// starts from the original (copied up: a file's content, a directory as
/// a directory, with mode, owner and times), like a truncate. `follows`:
/// the call follows a symlink in the leaf (chmod, not lchown, nor
/// `AT_SYMLINK_NOFOLLOW`).
pub(crate) fn metadata(op: &'static str, path: PathArg, follows: bool) -> Call {
    Call {
        keeps_content: true,
        changes_metadata: Some(follows),
        ..ns(op, path, None)
    }
}

/// The `*at` calls' AT_SYMLINK_NOFOLLOW.
fn follows(flags: c_int) -> bool {
    flags & libc::AT_SYMLINK_NOFOLLOW == 0
}

/// After a stat-like call that filled the `struct stat` at `buf`: a
/// directory gets its link count in the worker's view (subdirectories the
/// worker made or removed count). The result is passed on.
fn statted(arg: PathArg, follows: bool, buf: *mut c_void, r: c_int) -> c_int {
    if r != 0 || buf.is_null() || !crate::redirect::any_redirected() {
        return r;
    }
    // SAFETY: the call succeeded, so `buf` is the stat it filled (the
    // kernel's layout, which is libc's struct stat on Linux).
    let st = unsafe { &mut *(buf as *mut libc::stat) };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        #[allow(clippy::unnecessary_cast)] // nlink_t is u32 on aarch64
        let mut n = st.st_nlink as u64;
        let reached = (st.st_dev, st.st_ino);
        // SAFETY: the program's path, which the call read.
        let copy = unsafe { crate::audit::view_dir_stat(arg, follows, reached, &mut n) };
        st.st_nlink = n as _;
        if let Some(c) = copy {
            // The copy's identity too: what stat of the name shows
            // (fts, os.fwalk compare the two).
            (st.st_dev, st.st_ino) = (c.st_dev, c.st_ino);
            st.st_mode = c.st_mode;
            (st.st_uid, st.st_gid) = (c.st_uid, c.st_gid);
            (st.st_atime, st.st_atime_nsec) = (c.st_atime, c.st_atime_nsec);
            (st.st_mtime, st.st_mtime_nsec) = (c.st_mtime, c.st_mtime_nsec);
            (st.st_ctime, st.st_ctime_nsec) = (c.st_ctime, c.st_ctime_nsec);
        }
    }
    r
}

/// [`statted`] for statx's `struct statx`.
fn statx_done(arg: PathArg, follows: bool, buf: *mut c_void, r: c_int) -> c_int {
    if r != 0 || buf.is_null() || !crate::redirect::any_redirected() {
        return r;
    }
    // SAFETY: the call succeeded, so `buf` is the statx it filled.
    let st = unsafe { &mut *(buf as *mut libc::statx) };
    let wanted = libc::STATX_TYPE | libc::STATX_NLINK;
    if st.stx_mask & wanted == wanted && st.stx_mode as u32 & libc::S_IFMT == libc::S_IFDIR {
        let mut n = st.stx_nlink as u64;
        let dev = libc::makedev(st.stx_dev_major, st.stx_dev_minor);
        // SAFETY: the program's path, which the call read.
        let copy = unsafe { crate::audit::view_dir_stat(arg, follows, (dev, st.stx_ino), &mut n) };
        st.stx_nlink = n as u32;
        if let Some(c) = copy {
            (st.stx_dev_major, st.stx_dev_minor) = (libc::major(c.st_dev), libc::minor(c.st_dev));
            st.stx_ino = c.st_ino;
            st.stx_mode = c.st_mode as u16;
            (st.stx_uid, st.stx_gid) = (c.st_uid, c.st_gid);
            for (t, s, ns) in [
                (&mut st.stx_atime, c.st_atime, c.st_atime_nsec),
                (&mut st.stx_mtime, c.st_mtime, c.st_mtime_nsec),
                (&mut st.stx_ctime, c.st_ctime, c.st_ctime_nsec),
            ] {
                (t.tv_sec, t.tv_nsec) = (s, ns as u32);
            }
        }
    }
    r
}

/// mkfifo, mknod, bind: a new file system node (redirected like a created
/// file, unlike mkdir); `mode`: mknod's (see `Call::node_mode`).
fn node(op: &'static str, path: PathArg, mode: Option<u32>) -> Call {
    Call {
        node_mode: mode,
        intent: OpenIntent {
            create: true,
            ..OpenIntent::NAMESPACE
        },
        ..ns(op, path, None)
    }
}

fn truncation(op: &'static str, path: PathArg) -> Call {
    Call {
        intent: OpenIntent {
            truncate: true,
            ..OpenIntent::NAMESPACE
        },
        keeps_content: true,
        ..ns(op, path, None)
    }
}

fn cwd(path: *const c_char) -> PathArg {
    PathArg::cwd(path)
}

fn at(dirfd: c_int, path: *const c_char) -> PathArg {
    PathArg { dirfd, path }
}

/// The descriptor `fd` itself (fstat): an empty name from it, as
/// `AT_EMPTY_PATH` reads it.
fn held(fd: c_int) -> PathArg {
    at(fd, c"".as_ptr())
}

hooks! {
    // ---- open family ----
    fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, open_call("open", libc::AT_FDCWD, path, flags), |p, _| real(p, flags, mode));
    fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, open_call("open64", libc::AT_FDCWD, path, flags), |p, _| real(p, flags, mode));
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, open_call("openat", dirfd, path, flags), |p, _| real(dirfd, p, flags, mode));
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, open_call("openat64", dirfd, path, flags), |p, _| real(dirfd, p, flags, mode));
    fn creat(path: *const c_char, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, open_call("creat", libc::AT_FDCWD, path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC), |p, _| real(p, mode));
    fn creat64(path: *const c_char, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, open_call("creat64", libc::AT_FDCWD, path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC), |p, _| real(p, mode));
    // Fortified entry points (-D_FORTIFY_SOURCE): no mode argument.
    fn __open_2(path: *const c_char, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, open_call("__open_2", libc::AT_FDCWD, path, flags), |p, _| real(p, flags));
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, open_call("__open64_2", libc::AT_FDCWD, path, flags), |p, _| real(p, flags));
    fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, open_call("__openat_2", dirfd, path, flags), |p, _| real(dirfd, p, flags));
    fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, open_call("__openat64_2", dirfd, path, flags), |p, _| real(dirfd, p, flags));

    // ---- stdio ----
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE =>
        |real, caller| file_access(caller, fopen_call("fopen", path, mode), |p, _| real(p, mode));
    fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE =>
        |real, caller| file_access(caller, fopen_call("fopen64", path, mode), |p, _| real(p, mode));
    fn freopen(path: *const c_char, mode: *const c_char, stream: *mut FILE) -> *mut FILE =>
        |real, caller| file_access(caller, fopen_call("freopen", path, mode), |p, _| real(p, mode, stream));
    fn freopen64(path: *const c_char, mode: *const c_char, stream: *mut FILE) -> *mut FILE =>
        |real, caller| file_access(caller, fopen_call("freopen64", path, mode), |p, _| real(p, mode, stream));

    // ---- temporary files: the path is the filled-in template ----
    fn mkstemp(template: *mut c_char) -> c_int =>
        |real, caller| file_access(caller, temp_call("mkstemp", template, 0, 0), |p, _| real(p as *mut c_char));
    fn mkstemp64(template: *mut c_char) -> c_int =>
        |real, caller| file_access(caller, temp_call("mkstemp64", template, 0, 0), |p, _| real(p as *mut c_char));
    fn mkostemp(template: *mut c_char, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, temp_call("mkostemp", template, flags, 0), |p, _| real(p as *mut c_char, flags));
    fn mkostemp64(template: *mut c_char, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, temp_call("mkostemp64", template, flags, 0), |p, _| real(p as *mut c_char, flags));
    fn mkstemps(template: *mut c_char, suffixlen: c_int) -> c_int =>
        |real, caller| file_access(caller, temp_call("mkstemps", template, 0, suffixlen), |p, _| real(p as *mut c_char, suffixlen));
    fn mkstemps64(template: *mut c_char, suffixlen: c_int) -> c_int =>
        |real, caller| file_access(caller, temp_call("mkstemps64", template, 0, suffixlen), |p, _| real(p as *mut c_char, suffixlen));
    fn mkostemps(template: *mut c_char, suffixlen: c_int, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, temp_call("mkostemps", template, flags, suffixlen), |p, _| real(p as *mut c_char, suffixlen, flags));
    fn mkostemps64(template: *mut c_char, suffixlen: c_int, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, temp_call("mkostemps64", template, flags, suffixlen), |p, _| real(p as *mut c_char, suffixlen, flags));

    // ---- namespace changes ----
    fn rename(old: *const c_char, new: *const c_char) -> c_int =>
        |real, caller| crate::dirview::renamed(cwd(old), cwd(new), 0, file_access(caller, renaming("rename", cwd(old), cwd(new)), |a, b| real(a, b)));
    fn renameat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char) -> c_int =>
        |real, caller| crate::dirview::renamed(at(olddirfd, old), at(newdirfd, new), 0, file_access(caller, renaming("renameat", at(olddirfd, old), at(newdirfd, new)), |a, b| real(olddirfd, a, newdirfd, b)));
    fn renameat2(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char, flags: c_uint) -> c_int =>
        |real, caller| crate::dirview::renamed(at(olddirfd, old), at(newdirfd, new), flags, file_access(caller, Call { flags: flags as c_int, ..renaming("renameat2", at(olddirfd, old), at(newdirfd, new)) }, |a, b| real(olddirfd, a, newdirfd, b, flags)));
    fn unlink(path: *const c_char) -> c_int =>
        |real, caller| file_access(caller, removal("unlink", cwd(path)), |p, _| real(p));
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, Call { at_flags: flags, ..removal("unlinkat", at(dirfd, path)) }, |p, _| real(dirfd, p, flags));
    fn remove(path: *const c_char) -> c_int =>
        |real, caller| file_access(caller, removal("remove", cwd(path)), |p, _| real(p));
    fn rmdir(path: *const c_char) -> c_int =>
        |real, caller| file_access(caller, removal("rmdir", cwd(path)), |p, _| real(p));
    fn truncate(path: *const c_char, length: libc::off_t) -> c_int =>
        |real, caller| file_access(caller, truncation("truncate", cwd(path)), |p, _| real(p, length));
    fn truncate64(path: *const c_char, length: libc::off64_t) -> c_int =>
        |real, caller| file_access(caller, truncation("truncate64", cwd(path)), |p, _| real(p, length));
    fn mkdir(path: *const c_char, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, creation("mkdir", cwd(path), None), |p, _| real(p, mode));
    fn mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, creation("mkdirat", at(dirfd, path), None), |p, _| real(dirfd, p, mode));
    fn link(old: *const c_char, new: *const c_char) -> c_int =>
        |real, caller| file_access(caller, creation("link", cwd(old), Some(cwd(new))), |a, b| real(a, b));
    // AT_EMPTY_PATH with "" links the descriptor's file: judged by its path
    // (descriptor.rs).
    fn linkat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char, flags: c_int) -> c_int =>
        |real, caller| if empty_path(old, flags) {
            link_of_descriptor(caller, "linkat", olddirfd, old, at(newdirfd, new), flags, |d, a, b, f| real(d, a, newdirfd, b, f))
        } else {
            file_access(caller, Call { at_flags: flags, ..creation("linkat", at(olddirfd, old), Some(at(newdirfd, new))) }, |a, b| real(olddirfd, a, newdirfd, b, flags))
        };
    fn symlink(target: *const c_char, linkpath: *const c_char) -> c_int =>
        |real, caller| file_access(caller, creation("symlink", cwd(target), Some(cwd(linkpath))), |_, b| real(target, b));
    fn symlinkat(target: *const c_char, newdirfd: c_int, linkpath: *const c_char) -> c_int =>
        |real, caller| file_access(caller, creation("symlinkat", cwd(target), Some(at(newdirfd, linkpath))), |_, b| real(target, newdirfd, b));

    // ---- metadata changes (issue 11): write events; under redirect they
    // change the worker's copy (copied up first), and nodes are created
    // in the worker's directory ----
    fn chmod(path: *const c_char, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, metadata("chmod", cwd(path), true), |p, _| real(p, mode));
    fn fchmodat(dirfd: c_int, path: *const c_char, mode: mode_t, flags: c_int) -> c_int =>
        |real, caller| if empty_path(path, flags) {
            metadata_change(caller, "fchmodat", dirfd, |f| real(f, path, mode, flags))
        } else {
            file_access(caller, metadata("fchmodat", at(dirfd, path), follows(flags)), |p, _| real(dirfd, p, mode, flags))
        };
    fn lchmod(path: *const c_char, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, metadata("lchmod", cwd(path), false), |p, _| real(p, mode));
    fn chown(path: *const c_char, owner: libc::uid_t, group: libc::gid_t) -> c_int =>
        |real, caller| file_access(caller, metadata("chown", cwd(path), true), |p, _| real(p, owner, group));
    fn lchown(path: *const c_char, owner: libc::uid_t, group: libc::gid_t) -> c_int =>
        |real, caller| file_access(caller, metadata("lchown", cwd(path), false), |p, _| real(p, owner, group));
    fn fchownat(dirfd: c_int, path: *const c_char, owner: libc::uid_t, group: libc::gid_t, flags: c_int) -> c_int =>
        |real, caller| if empty_path(path, flags) {
            metadata_change(caller, "fchownat", dirfd, |f| real(f, path, owner, group, flags))
        } else {
            file_access(caller, metadata("fchownat", at(dirfd, path), follows(flags)), |p, _| real(dirfd, p, owner, group, flags))
        };
    // A NULL path (futimens) or an empty one with AT_EMPTY_PATH changes the
    // descriptor's file: judged by the descriptor's path (descriptor.rs).
    fn utimensat(dirfd: c_int, path: *const c_char, times: *const libc::timespec, flags: c_int) -> c_int =>
        |real, caller| if path.is_null() || empty_path(path, flags) {
            metadata_change(caller, "utimensat", dirfd, |f| real(f, path, times, flags))
        } else {
            file_access(caller, metadata("utimensat", at(dirfd, path), follows(flags)), |p, _| real(dirfd, p, times, flags))
        };
    fn futimesat(dirfd: c_int, path: *const c_char, times: *const libc::timeval) -> c_int =>
        |real, caller| if path.is_null() {
            metadata_change(caller, "futimesat", dirfd, |f| real(f, path, times))
        } else {
            file_access(caller, metadata("futimesat", at(dirfd, path), true), |p, _| real(dirfd, p, times))
        };
    // ---- metadata changes through a descriptor (review 2, F11): judged as
    // changes of the descriptor's file (descriptor.rs) ----
    fn fchmod(fd: c_int, mode: mode_t) -> c_int =>
        |real, caller| metadata_change(caller, "fchmod", fd, |f| real(f, mode));
    fn fchown(fd: c_int, owner: libc::uid_t, group: libc::gid_t) -> c_int =>
        |real, caller| metadata_change(caller, "fchown", fd, |f| real(f, owner, group));
    fn futimens(fd: c_int, times: *const libc::timespec) -> c_int =>
        |real, caller| metadata_change(caller, "futimens", fd, |f| real(f, times));
    fn futimes(fd: c_int, times: *const libc::timeval) -> c_int =>
        |real, caller| metadata_change(caller, "futimes", fd, |f| real(f, times));
    fn fsetxattr(fd: c_int, name: *const c_char, value: *const c_void, size: usize, flags: c_int) -> c_int =>
        |real, caller| metadata_change(caller, "fsetxattr", fd, |f| real(f, name, value, size, flags));
    fn fremovexattr(fd: c_int, name: *const c_char) -> c_int =>
        |real, caller| metadata_change(caller, "fremovexattr", fd, |f| real(f, name));
    // ---- extended attributes by path (review 2, F9): setting or removing
    // one is a metadata change, like chmod ----
    fn setxattr(path: *const c_char, name: *const c_char, value: *const c_void, size: usize, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, metadata("setxattr", cwd(path), true), |p, _| real(p, name, value, size, flags));
    fn lsetxattr(path: *const c_char, name: *const c_char, value: *const c_void, size: usize, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, metadata("lsetxattr", cwd(path), false), |p, _| real(p, name, value, size, flags));
    fn removexattr(path: *const c_char, name: *const c_char) -> c_int =>
        |real, caller| file_access(caller, metadata("removexattr", cwd(path), true), |p, _| real(p, name));
    fn lremovexattr(path: *const c_char, name: *const c_char) -> c_int =>
        |real, caller| file_access(caller, metadata("lremovexattr", cwd(path), false), |p, _| real(p, name));
    fn utimes(path: *const c_char, times: *const libc::timeval) -> c_int =>
        |real, caller| file_access(caller, metadata("utimes", cwd(path), true), |p, _| real(p, times));
    fn lutimes(path: *const c_char, times: *const libc::timeval) -> c_int =>
        |real, caller| file_access(caller, metadata("lutimes", cwd(path), false), |p, _| real(p, times));
    fn utime(path: *const c_char, times: *const libc::utimbuf) -> c_int =>
        |real, caller| file_access(caller, metadata("utime", cwd(path), true), |p, _| real(p, times));
    fn mkfifo(path: *const c_char, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, node("mkfifo", cwd(path), Some(mode | libc::S_IFIFO)), |p, _| real(p, mode));
    fn mkfifoat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int =>
        |real, caller| file_access(caller, node("mkfifoat", at(dirfd, path), Some(mode | libc::S_IFIFO)), |p, _| real(dirfd, p, mode));
    fn mknod(path: *const c_char, mode: mode_t, dev: libc::dev_t) -> c_int =>
        |real, caller| file_access(caller, node("mknod", cwd(path), Some(mode)), |p, _| real(p, mode, dev));
    fn mknodat(dirfd: c_int, path: *const c_char, mode: mode_t, dev: libc::dev_t) -> c_int =>
        |real, caller| file_access(caller, node("mknodat", at(dirfd, path), Some(mode)), |p, _| real(dirfd, p, mode, dev));
    // Binaries built against glibc < 2.33 call these instead.
    fn __xmknod(ver: c_int, path: *const c_char, mode: mode_t, dev: *mut libc::dev_t) -> c_int =>
        |real, caller| file_access(caller, node("__xmknod", cwd(path), Some(mode)), |p, _| real(ver, p, mode, dev));
    fn __xmknodat(ver: c_int, dirfd: c_int, path: *const c_char, mode: mode_t, dev: *mut libc::dev_t) -> c_int =>
        |real, caller| file_access(caller, node("__xmknodat", at(dirfd, path), Some(mode)), |p, _| real(ver, dirfd, p, mode, dev));
    fn bind(fd: c_int, addr: *const libc::sockaddr, len: libc::socklen_t) -> c_int =>
        |real, caller| bind_to_path(caller, fd, addr, len, |a, l| real(fd, a, l));

    // ---- read-your-writes: calls that only look at a path follow its redirect ----
    fn stat(path: *const c_char, buf: *mut c_void) -> c_int => |real| statted(cwd(path), true, buf, reroute(cwd(path), true, |p| real(p, buf)));
    fn stat64(path: *const c_char, buf: *mut c_void) -> c_int => |real| statted(cwd(path), true, buf, reroute(cwd(path), true, |p| real(p, buf)));
    fn lstat(path: *const c_char, buf: *mut c_void) -> c_int => |real| statted(cwd(path), false, buf, reroute(cwd(path), false, |p| real(p, buf)));
    fn lstat64(path: *const c_char, buf: *mut c_void) -> c_int => |real| statted(cwd(path), false, buf, reroute(cwd(path), false, |p| real(p, buf)));
    fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int =>
        |real| statted(at(dirfd, path), follows(flags), buf, reroute(at(dirfd, path), follows(flags), |p| real(dirfd, p, buf, flags)));
    fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int =>
        |real| statted(at(dirfd, path), follows(flags), buf, reroute(at(dirfd, path), follows(flags), |p| real(dirfd, p, buf, flags)));
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, buf: *mut c_void) -> c_int =>
        |real| statx_done(at(dirfd, path), follows(flags), buf, reroute(at(dirfd, path), follows(flags), |p| real(dirfd, p, flags, mask, buf)));
    // A held descriptor's own file: a directory's link count is the view's.
    fn fstat(fd: c_int, buf: *mut c_void) -> c_int => |real| statted(held(fd), true, buf, real(fd, buf));
    fn fstat64(fd: c_int, buf: *mut c_void) -> c_int => |real| statted(held(fd), true, buf, real(fd, buf));
    // Binaries built against glibc < 2.33 call these instead.
    fn __fxstat(ver: c_int, fd: c_int, buf: *mut c_void) -> c_int => |real| statted(held(fd), true, buf, real(ver, fd, buf));
    fn __fxstat64(ver: c_int, fd: c_int, buf: *mut c_void) -> c_int => |real| statted(held(fd), true, buf, real(ver, fd, buf));
    fn __xstat(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int => |real| statted(cwd(path), true, buf, reroute(cwd(path), true, |p| real(ver, p, buf)));
    fn __xstat64(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int => |real| statted(cwd(path), true, buf, reroute(cwd(path), true, |p| real(ver, p, buf)));
    fn __lxstat(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int => |real| statted(cwd(path), false, buf, reroute(cwd(path), false, |p| real(ver, p, buf)));
    fn __lxstat64(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int => |real| statted(cwd(path), false, buf, reroute(cwd(path), false, |p| real(ver, p, buf)));
    fn __fxstatat(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int =>
        |real| statted(at(dirfd, path), follows(flags), buf, reroute(at(dirfd, path), follows(flags), |p| real(ver, dirfd, p, buf, flags)));
    fn __fxstatat64(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int =>
        |real| statted(at(dirfd, path), follows(flags), buf, reroute(at(dirfd, path), follows(flags), |p| real(ver, dirfd, p, buf, flags)));
    fn readlink(path: *const c_char, buf: *mut c_char, size: libc::size_t) -> libc::ssize_t =>
        |real| magic_link_text(cwd(path), buf, size, reroute(cwd(path), false, |p| real(p, buf, size)));
    fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: libc::size_t) -> libc::ssize_t =>
        |real| magic_link_text(at(dirfd, path), buf, size, reroute(at(dirfd, path), false, |p| real(dirfd, p, buf, size)));
    fn access(path: *const c_char, mode: c_int) -> c_int => |real| reroute(cwd(path), true, |p| real(p, mode));
    // Extended attributes are read where stat looks (review 2, F9: `ls -l`,
    // shutil.copy2 read them).
    fn getxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize =>
        |real| reroute(cwd(path), true, |p| real(p, name, value, size));
    fn lgetxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize =>
        |real| reroute(cwd(path), false, |p| real(p, name, value, size));
    fn listxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize =>
        |real| reroute(cwd(path), true, |p| real(p, list, size));
    fn llistxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize =>
        |real| reroute(cwd(path), false, |p| real(p, list, size));
    fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int =>
        |real| reroute(at(dirfd, path), flags & libc::AT_SYMLINK_NOFOLLOW == 0, |p| real(dirfd, p, mode, flags));

    // ---- directory views (dirview.rs): a redirecting worker lists its own
    // files in place of (or alongside) the shared ones, removed ones hidden ----
    fn opendir(path: *const c_char) -> *mut libc::DIR =>
        |real| crate::dirview::opened(crate::audit::reroute_listing(cwd(path), |p| real(p)));
    fn fdopendir(fd: c_int) -> *mut libc::DIR => |real| crate::dirview::opened(real(fd));
    fn readdir(dir: *mut libc::DIR) -> *mut libc::dirent =>
        |real| crate::dirview::next(dir, |d| real(d).cast()).cast();
    fn readdir64(dir: *mut libc::DIR) -> *mut libc::dirent64 => |real| crate::dirview::next(dir, |d| real(d));
    fn readdir_r(dir: *mut libc::DIR, entry: *mut libc::dirent, result: *mut *mut libc::dirent) -> c_int =>
        |real| crate::dirview::next_r(dir, entry.cast(), result.cast(), real_fn::readdir64.get())
            .unwrap_or_else(|| real(dir, entry, result));
    fn readdir64_r(dir: *mut libc::DIR, entry: *mut libc::dirent64, result: *mut *mut libc::dirent64) -> c_int =>
        |real| crate::dirview::next_r(dir, entry, result, real_fn::readdir64.get())
            .unwrap_or_else(|| real(dir, entry, result));
    fn closedir(dir: *mut libc::DIR) -> c_int => |real| {
        crate::dirview::closing(dir);
        real(dir)
    };
    fn getdents64(fd: c_int, buf: *mut c_void, count: usize) -> isize =>
        |real| crate::dirview::getdents(fd, buf.cast(), count, || real(fd, buf, count));
    // glibc's own readers (listings.rs): they read directories inside libc.
    fn glob(pattern: *const c_char, flags: c_int, errfunc: *mut c_void, pglob: *mut crate::listings::GlobT) -> c_int =>
        |real| crate::listings::glob(pattern, flags, pglob, |f| real(pattern, f, errfunc, pglob));
    fn glob64(pattern: *const c_char, flags: c_int, errfunc: *mut c_void, pglob: *mut crate::listings::GlobT) -> c_int =>
        |real| crate::listings::glob(pattern, flags, pglob, |f| real(pattern, f, errfunc, pglob));
    fn scandir(dir: *const c_char, namelist: *mut *mut *mut libc::dirent64, select: crate::listings::Select, compare: crate::listings::Compare) -> c_int =>
        |real| crate::listings::scandirat(libc::AT_FDCWD, dir, namelist, select, compare).unwrap_or_else(|| real(dir, namelist, select, compare));
    fn scandir64(dir: *const c_char, namelist: *mut *mut *mut libc::dirent64, select: crate::listings::Select, compare: crate::listings::Compare) -> c_int =>
        |real| crate::listings::scandirat(libc::AT_FDCWD, dir, namelist, select, compare).unwrap_or_else(|| real(dir, namelist, select, compare));
    fn scandirat(dirfd: c_int, dir: *const c_char, namelist: *mut *mut *mut libc::dirent64, select: crate::listings::Select, compare: crate::listings::Compare) -> c_int =>
        |real| crate::listings::scandirat(dirfd, dir, namelist, select, compare).unwrap_or_else(|| real(dirfd, dir, namelist, select, compare));
    fn scandirat64(dirfd: c_int, dir: *const c_char, namelist: *mut *mut *mut libc::dirent64, select: crate::listings::Select, compare: crate::listings::Compare) -> c_int =>
        |real| crate::listings::scandirat(dirfd, dir, namelist, select, compare).unwrap_or_else(|| real(dirfd, dir, namelist, select, compare));
    fn nftw(dir: *const c_char, func: crate::listings::WalkFn, descriptors: c_int, flags: c_int) -> c_int =>
        |real| crate::listings::walk(dir, func, descriptors, flags, true).unwrap_or_else(|| real(dir, func, descriptors, flags));
    fn nftw64(dir: *const c_char, func: crate::listings::WalkFn, descriptors: c_int, flags: c_int) -> c_int =>
        |real| crate::listings::walk(dir, func, descriptors, flags, true).unwrap_or_else(|| real(dir, func, descriptors, flags));
    fn ftw(dir: *const c_char, func: crate::listings::WalkFn, descriptors: c_int) -> c_int =>
        |real| crate::listings::walk(dir, func, descriptors, 0, false).unwrap_or_else(|| real(dir, func, descriptors));
    fn ftw64(dir: *const c_char, func: crate::listings::WalkFn, descriptors: c_int) -> c_int =>
        |real| crate::listings::walk(dir, func, descriptors, 0, false).unwrap_or_else(|| real(dir, func, descriptors));
    // ---- end of directory views ----

    // ---- the cwd: hooked only to invalidate the per-thread cwd cache ----
    // A directory the worker made is entered in its worker directory.
    fn chdir(path: *const c_char) -> c_int => |real| after_chdir(reroute(cwd(path), true, |p| real(p)));
    fn getcwd(buf: *mut c_char, size: libc::size_t) -> *mut c_char => |real| cwd_in_view(real(buf, size), buf, size);
    // A held shared directory whose copy denies search fails as the
    // copy would (review 11, F3).
    fn fchdir(fd: c_int) -> c_int => |real| match crate::audit::fchdir_denied(fd) {
        Some(e) => { crate::sys::set_errno(e); -1 }
        None => after_chdir(real(fd)),
    };

    // ---- the loader: an unloaded object's cached call sites go stale.
    // (dlopen is hooked below, by a stub that keeps the program's return
    // address.) ----
    fn dlclose(handle: *mut c_void) -> c_int => |real| {
        crate::stack::objects_unloading();
        let r = real(handle);
        crate::stack::objects_unloading();
        r
    };

    // ---- processes ----
    fn fork() -> pid_t => |real| process::fork(|| real());
    fn _Fork() -> pid_t => |real| process::fork_without_handlers(|| real());
    // vfork runs as a real fork (as BuildXL does): the child then has its own
    // memory, so our logging in it cannot corrupt the suspended parent.
    fn vfork() -> pid_t => |_real| process::fork(|| {
        // SAFETY: Option<fn> has the layout of a pointer with 0 as None, and
        // a non-zero value is libc's fork, resolved like every other real
        // function.
        let f: Option<unsafe extern "C" fn() -> pid_t> = unsafe { core::mem::transmute(real_fn::fork.get()) };
        match f {
            Some(f) => f(),
            None => <pid_t as crate::real::Missing>::missing(),
        }
    });
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int =>
        |real| process::exec(path, FOLLOWS, argv, envp, |p, env| real(p.unwrap_or(path), argv, env));
    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int =>
        |_real| process::exec(path, FOLLOWS, argv, environ, |p, env| match real_execve() {
            Some(f) => f(p.unwrap_or(path), argv, env),
            None => <c_int as crate::real::Missing>::missing(),
        });
    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int =>
        |real| exec_searching(file, argv, envp, |p, env| real(p.unwrap_or(file), argv, env));
    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int =>
        |_real| exec_searching(file, argv, environ, |p, env| match real_execvpe() {
            Some(f) => f(p.unwrap_or(file), argv, env),
            None => <c_int as crate::real::Missing>::missing(),
        });
    fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int =>
        |real| {
            let mut claimed = crate::pool::claim();
            let mut none = [0u8; 1];
            let exe = claimed.as_mut().map_or(&mut none[..], |c| &mut c.block().target[..]);
            let room = exe.len() - 1;
            let n = crate::sys::fd_path(fd, &mut exe[..room]).unwrap_or(0);
            exe[n] = 0;
            process::exec(exe.as_ptr().cast(), process::Named::AsIs, argv, envp, |_, env| real(fd, argv, env))
        };
    fn posix_spawn(pid: *mut pid_t, path: *const c_char, file_actions: *const libc::posix_spawn_file_actions_t,
                   attrp: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int =>
        |real| process::spawn(pid, process::SpawnTarget { given: path, exe: path, resolved: true }, argv.cast(), envp.cast(), file_actions as usize,
            |p, prog, args, env| real(p, prog, file_actions, attrp, args.cast(), env.cast()));
    fn posix_spawnp(pid: *mut pid_t, file: *const c_char, file_actions: *const libc::posix_spawn_file_actions_t,
                    attrp: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int =>
        |real| {
            let mut claimed = crate::pool::claim();
            let resolved = resolve_program(file, claimed.as_mut());
            // Not found on PATH: a file of that name in the cwd is not
            // what glibc runs (it fails with ENOENT), so no trampoline.
            let target = process::SpawnTarget { given: file, exe: resolved, resolved: resolved != file };
            process::spawn(pid, target, argv.cast(), envp.cast(), file_actions as usize,
                |p, prog, args, env| real(p, prog, file_actions, attrp, args.cast(), env.cast()))
        };
    // ---- processes started inside libc, and execveat (issue 11) ----
    fn execveat(dirfd: c_int, path: *const c_char, argv: *const *const c_char, envp: *const *const c_char, flags: c_int) -> c_int =>
        |real| exec_at(dirfd, path, argv, envp, flags, |p, env| real(dirfd, p.unwrap_or(path), argv, env, flags));
    // glibc's system and popen spawn /bin/sh with `environ` through
    // internal calls: `environ` is doctored around them instead.
    fn system(command: *const c_char) -> c_int =>
        |real| if command.is_null() { real(command) } else { process::with_doctored_environ(|| real(command)) };
    fn popen(command: *const c_char, mode: *const c_char) -> *mut FILE =>
        |real| process::with_doctored_environ(|| real(command, mode));
    // A file action's open runs in the child, out of sight: judged here,
    // as an open (process.rs says how a denied one fails the spawn).
    fn posix_spawn_file_actions_addopen(file_actions: *mut libc::posix_spawn_file_actions_t, fd: c_int,
                                        path: *const c_char, oflag: c_int, mode: mode_t) -> c_int =>
        |real, caller| spawn_addopen(file_actions as usize, || file_access(caller,
            open_call("posix_spawn_file_actions_addopen", libc::AT_FDCWD, path, oflag),
            |p, _| ErrorNumber(real(file_actions, fd, p, oflag, mode))));
    fn posix_spawn_file_actions_init(file_actions: *mut libc::posix_spawn_file_actions_t) -> c_int =>
        |real| { process::forget_file_actions(file_actions as usize); real(file_actions) };
    fn posix_spawn_file_actions_destroy(file_actions: *mut libc::posix_spawn_file_actions_t) -> c_int =>
        |real| { process::forget_file_actions(file_actions as usize); real(file_actions) };

    fn exit(status: c_int) -> () => |real| { process::log_exit(status); real(status) };
    fn _exit(status: c_int) -> () => |real| { process::log_exit(status); real(status) };
    fn _Exit(status: c_int) -> () => |real| { process::log_exit(status); real(status) };
}

/// execve's program: a path, its symlink leaf followed.
const FOLLOWS: process::Named = process::Named::Path { follow: true };

type ExecFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;

/// libc's execve, or `None` when dlsym did not find it.
fn real_execve() -> Option<ExecFn> {
    // SAFETY: Option<fn> has the layout of a pointer with 0 as None, and a
    // non-zero value is libc's execve.
    unsafe { core::mem::transmute::<usize, Option<ExecFn>>(real_fn::execve.get()) }
}

/// libc's execvpe, or `None` when dlsym did not find it.
fn real_execvpe() -> Option<ExecFn> {
    // SAFETY: Option<fn> has the layout of a pointer with 0 as None, and a
    // non-zero value is libc's execvpe.
    unsafe { core::mem::transmute::<usize, Option<ExecFn>>(real_fn::execvpe.get()) }
}

/// execvp(e): the event names the program PATH resolves to; a program
/// the worker wrote (under redirect) is found in its view and run by its
/// routed path (which has a slash: no second search).
fn exec_searching(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    real: impl FnMut(Option<*const c_char>, *const *const c_char) -> c_int,
) -> c_int {
    let mut claimed = crate::pool::claim();
    let resolved = resolve_program(file, claimed.as_mut());
    // Not found on PATH: glibc's own search fails it, as bare.
    let named = if resolved == file {
        process::Named::AsIs
    } else {
        FOLLOWS
    };
    process::exec(resolved, named, argv, envp, real)
}

/// `file` resolved through PATH into a pool block (`file` itself without
/// a block or a hit).
fn resolve_program(
    file: *const c_char,
    claimed: Option<&mut crate::pool::Claimed>,
) -> *const c_char {
    // The search's own calls (faccessat, stat) must not change the errno
    // the program sees (review 3, R3-9: a successful posix_spawnp).
    let _errno = crate::sys::ErrnoGuard::save();
    match claimed {
        Some(c) => {
            let exe = &mut c.block().target;
            process::search_path(file, exe).map_or(file, |_| exe.as_ptr().cast())
        }
        None => file,
    }
}

// ---- execveat, posix_spawn file actions, bind (issue 11) ----------------------

/// execveat: the exec event names the program as a path.
fn exec_at(
    dirfd: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
    real: impl FnMut(Option<*const c_char>, *const *const c_char) -> c_int,
) -> c_int {
    let mut claimed = crate::pool::claim();
    let exe = match claimed.as_mut() {
        Some(c) => program_at(dirfd, path, flags, &mut c.block().target),
        None => path,
    };
    // An empty name with AT_EMPTY_PATH runs the descriptor's own file; a
    // name relative to a directory descriptor that could not be made a
    // path runs as is (program_at).
    // SAFETY: a checked read of the program's argument.
    let given = unsafe { crate::checked::Pages::default().c_bytes(path, 4096) };
    let as_path = match given {
        None | Some([]) => false,
        Some(g) => g[0] == b'/' || dirfd == libc::AT_FDCWD || exe != path,
    };
    let named = if as_path {
        process::Named::Path {
            follow: flags & libc::AT_SYMLINK_NOFOLLOW == 0,
        }
    } else {
        process::Named::AsIs
    };
    process::exec(exe, named, argv, envp, real)
}

/// execveat's program as a path in `out`: `path` itself when absolute or
/// relative to the cwd, else joined to the directory descriptor's path
/// (with `AT_EMPTY_PATH` and an empty path, the descriptor's own file).
/// An unreadable `path` is returned as is: the exec fails with EFAULT.
fn program_at(dirfd: c_int, path: *const c_char, flags: c_int, out: &mut [u8]) -> *const c_char {
    let mut pages = crate::checked::Pages::default();
    // SAFETY: a checked read of the program's argument.
    let Some(given) = (unsafe { pages.c_bytes(path, 4096) }) else {
        return path;
    };
    if given.first() == Some(&b'/') || (dirfd == libc::AT_FDCWD && !given.is_empty()) {
        return path;
    }
    if given.is_empty() && flags & libc::AT_EMPTY_PATH == 0 {
        return path;
    }
    let room = out.len() - 1;
    let Some(mut n) = crate::sys::fd_path(dirfd, &mut out[..room]) else {
        return path;
    };
    if !given.is_empty() {
        if n + 1 + given.len() > room {
            return path;
        }
        out[n] = b'/';
        out[n + 1..n + 1 + given.len()].copy_from_slice(given);
        n += 1 + given.len();
    }
    out[n] = 0;
    out.as_ptr().cast()
}

/// The return of `posix_spawn_file_actions_addopen`: 0 or an error number
/// (errno is not its channel); -1 only for a call the policy refused,
/// whose errno file_access sets.
#[derive(Clone, Copy)]
struct ErrorNumber(c_int);

impl crate::audit::Outcome for ErrorNumber {
    fn result(self) -> i64 {
        if self.0 == 0 {
            0
        } else {
            -1
        }
    }
    fn failure() -> Self {
        ErrorNumber(-1)
    }
    fn success() -> Option<Self> {
        None
    }
}

/// addopen judged as an open. The program's errno is left as it was; a
/// refused open succeeds here and fails the spawn that uses the actions
/// (see process.rs), unless too many are refused at once: then addopen
/// itself returns the error.
fn spawn_addopen(file_actions: usize, judge: impl FnOnce() -> ErrorNumber) -> c_int {
    let _errno = crate::sys::ErrnoGuard::save();
    let r = judge();
    if r.0 != -1 {
        return r.0;
    }
    let refused = match crate::sys::errno() {
        0 => libc::EACCES,
        e => e,
    };
    if process::refuse_spawn(file_actions, refused) {
        0
    } else {
        refused
    }
}

/// Longest `sun_path` bind takes, its NUL included.
const SUN_PATH: usize = 108;

/// bind of an AF_UNIX socket to a path creates a node there: judged like
/// mknod, and under redirect bound in the worker's directory. Other
/// families, abstract names and unreadable addresses go to libc as they
/// are.
fn bind_to_path(
    caller: usize,
    _fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    real: impl Fn(*const libc::sockaddr, libc::socklen_t) -> c_int,
) -> c_int {
    const PATH_AT: usize = core::mem::offset_of!(libc::sockaddr_un, sun_path);
    let n = (len as usize).min(core::mem::size_of::<libc::sockaddr_un>());
    if addr.is_null() || n <= PATH_AT || !crate::state::ready() {
        return real(addr, len);
    }
    let mut raw = [0u8; core::mem::size_of::<libc::sockaddr_un>()];
    let entry_errno = crate::sys::ErrnoGuard::save();
    if !crate::checked::copy_in(addr as usize, &mut raw[..n]) {
        drop(entry_errno);
        return real(addr, len);
    }
    drop(entry_errno);
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    if family != libc::AF_UNIX as u16 || raw[PATH_AT] == 0 {
        return real(addr, len);
    }
    // sun_path need not end with a NUL: a terminated copy.
    let mut path = [0u8; SUN_PATH + 1];
    let given = &raw[PATH_AT..n];
    let k = given.iter().position(|&b| b == 0).unwrap_or(given.len());
    path[..k].copy_from_slice(&given[..k]);
    let own = path.as_ptr().cast::<c_char>();
    // SAFETY: `own` is our NUL-terminated copy of the program's path.
    unsafe {
        file_access(caller, node("bind", cwd(own), None), |p, _| {
            if p == own {
                real(addr, len)
            } else {
                bind_redirected(p, &raw, &real)
            }
        })
    }
}

/// bind to the redirect's target `p`. A target too long for `sun_path`
/// (the worker directory is deep) is reached through its directory's
/// descriptor, `/proc/thread-self/fd/N/NAME` (this thread's table),
/// closed again after the call.
fn bind_redirected(
    p: *const c_char,
    raw: &[u8],
    real: &impl Fn(*const libc::sockaddr, libc::socklen_t) -> c_int,
) -> c_int {
    const PATH_AT: usize = core::mem::offset_of!(libc::sockaddr_un, sun_path);
    // SAFETY: the target is our own NUL-terminated buffer.
    let target = unsafe { crate::sys::c_bytes(p, 4096) };
    let mut moved = [0u8; core::mem::size_of::<libc::sockaddr_un>()];
    moved[..PATH_AT].copy_from_slice(&raw[..PATH_AT]);
    let bind_at = |moved: &[u8], path_len: usize| {
        real(
            moved.as_ptr().cast(),
            (PATH_AT + path_len + 1) as libc::socklen_t,
        )
    };
    if target.len() < SUN_PATH {
        moved[PATH_AT..PATH_AT + target.len()].copy_from_slice(target);
        return bind_at(&moved, target.len());
    }
    let slash = target.iter().rposition(|&b| b == b'/').unwrap_or(0);
    let (dir, name) = (&target[..slash.max(1)], &target[slash + 1..]);
    let Some(mut claimed) = crate::pool::claim() else {
        crate::sys::set_errno(libc::ENAMETOOLONG);
        return -1;
    };
    let buf = &mut claimed.block().base;
    let Some(dir_c) = crate::sys::c_path(dir, buf) else {
        crate::sys::set_errno(libc::ENAMETOOLONG);
        return -1;
    };
    // SAFETY: NUL-terminated by c_path; the descriptor is ours, closed below.
    let dfd = unsafe {
        crate::sys::openat(
            libc::AT_FDCWD,
            dir_c,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )
    };
    if dfd < 0 {
        crate::sys::set_errno(-dfd);
        return -1;
    }
    let mut via = mpaudit_core::json::SliceSink::new(&mut moved[PATH_AT..PATH_AT + SUN_PATH - 1]);
    {
        use mpaudit_core::json::Sink;
        via.put(b"/proc/thread-self/fd/");
        mpaudit_core::json::put_u64(&mut via, dfd as u64);
        via.put(b"/");
        via.put(name);
    }
    let (overflow, path_len) = (via.overflow, via.len);
    let r = if overflow {
        crate::sys::set_errno(libc::ENAMETOOLONG);
        -1
    } else {
        bind_at(&moved, path_len)
    };
    let e = crate::sys::ErrnoGuard::save();
    crate::sys::close(dfd);
    drop(e);
    r
}

// ---- syscall(): file system calls by number (issue 11) -------------------------

extern "C" {
    /// libc's syscall with six argument words (variadic.c).
    fn __mpaudit_real_syscall(number: libc::c_long, args: *const libc::c_long) -> libc::c_long;
    /// Resolves libc's syscall (variadic.c).
    fn __mpaudit_resolve_syscall();
}

/// Resolves libc's `syscall` for the C hook (once, at load).
pub(crate) fn resolve_syscall() {
    // SAFETY: a dlsym and a lock-free store.
    unsafe { __mpaudit_resolve_syscall() }
}

/// The file system calls `syscall()` makes, sent through the code of
/// their libc wrappers (variadic.c's `syscall` hands over only these
/// numbers, from the program's call site `caller`); the event's `op` is
/// the system call's name. The result and errno are libc's syscall's.
///
/// # Safety
/// `args` points to the six argument words the program passed.
#[no_mangle]
pub unsafe extern "C" fn __mpaudit_syscall(
    caller: usize,
    number: libc::c_long,
    args: *const libc::c_long,
) -> libc::c_long {
    use libc::c_long;
    // SAFETY: the C hook's array of six words.
    let a: [c_long; 6] = unsafe { *(args as *const [c_long; 6]) };
    // SAFETY: libc's syscall with the program's words (some replaced by
    // our own NUL-terminated paths or environment).
    let real = |w: [c_long; 6]| unsafe { __mpaudit_real_syscall(number, w.as_ptr()) };
    let s = |i: usize| a[i] as *const c_char;
    let d = |i: usize| a[i] as c_int;
    let with = |i: usize, p: *const c_char| {
        let mut w = a;
        w[i] = p as c_long;
        w
    };
    let with2 = |i: usize, p: *const c_char, j: usize, q: *const c_char| {
        let mut w = with(i, p);
        w[j] = q as c_long;
        w
    };
    // A call on the descriptor in word `i`: judged by its file's path.
    let by_descriptor = |op: &'static str, i: usize, call: &dyn Fn([c_long; 6]) -> c_long| {
        // SAFETY: the program's words, handed on with only the descriptor
        // (maybe) replaced by one of the worker's copy.
        let r = unsafe {
            metadata_change(caller, op, d(i), |f| {
                let mut w = a;
                w[i] = f as c_long;
                call(w) as c_int
            })
        };
        r as c_long
    };
    let exec_with = |at: usize, p: Option<*const c_char>, i: usize, env: *const *const c_char| {
        let mut w = a;
        if let Some(p) = p {
            w[at] = p as c_long;
        }
        w[i] = env as c_long;
        real(w) as c_int
    };
    // SAFETY: every arm hands the program's own arguments to the same
    // helpers as the wrappers' (pointers as valid as the kernel requires).
    unsafe {
        match number {
            #[cfg(target_arch = "x86_64")]
            libc::SYS_open => file_access(
                caller,
                open_call("open", libc::AT_FDCWD, s(0), d(1)),
                |p, _| real(with(0, p)),
            ),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_creat => file_access(
                caller,
                open_call(
                    "creat",
                    libc::AT_FDCWD,
                    s(0),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                ),
                |p, _| real(with(0, p)),
            ),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_rename => {
                file_access(caller, renaming("rename", cwd(s(0)), cwd(s(1))), |p, q| {
                    real(with2(0, p, 1, q))
                })
            }
            #[cfg(target_arch = "x86_64")]
            libc::SYS_unlink => file_access(caller, removal("unlink", cwd(s(0))), |p, _| {
                real(with(0, p))
            }),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_rmdir => {
                file_access(caller, removal("rmdir", cwd(s(0))), |p, _| real(with(0, p)))
            }
            #[cfg(target_arch = "x86_64")]
            libc::SYS_mkdir => file_access(caller, creation("mkdir", cwd(s(0)), None), |p, _| {
                real(with(0, p))
            }),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_link => file_access(
                caller,
                creation("link", cwd(s(0)), Some(cwd(s(1)))),
                |p, q| real(with2(0, p, 1, q)),
            ),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_symlink => file_access(
                caller,
                creation("symlink", cwd(s(0)), Some(cwd(s(1)))),
                |_, q| real(with(1, q)),
            ),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_chmod => file_access(caller, metadata("chmod", cwd(s(0)), true), |p, _| {
                real(with(0, p))
            }),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_chown => file_access(caller, metadata("chown", cwd(s(0)), true), |p, _| {
                real(with(0, p))
            }),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_lchown => {
                file_access(caller, metadata("lchown", cwd(s(0)), false), |p, _| {
                    real(with(0, p))
                })
            }
            #[cfg(target_arch = "x86_64")]
            libc::SYS_utime => file_access(caller, metadata("utime", cwd(s(0)), true), |p, _| {
                real(with(0, p))
            }),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_utimes => file_access(caller, metadata("utimes", cwd(s(0)), true), |p, _| {
                real(with(0, p))
            }),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_futimesat if a[1] != 0 => file_access(
                caller,
                metadata("futimesat", at(d(0), s(1)), true),
                |p, _| real(with(1, p)),
            ),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_mknod => file_access(
                caller,
                node("mknod", cwd(s(0)), Some(a[1] as u32)),
                |p, _| real(with(0, p)),
            ),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_stat | libc::SYS_access => reroute(cwd(s(0)), true, |p| real(with(0, p))),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_lstat => reroute(cwd(s(0)), false, |p| real(with(0, p))),
            libc::SYS_openat => {
                file_access(caller, open_call("openat", d(0), s(1), d(2)), |p, _| {
                    real(with(1, p))
                })
            }
            libc::SYS_openat2 => {
                // struct open_how begins with the u64 flags.
                let mut how = [0u8; 8];
                if !crate::checked::copy_in(a[2] as usize, &mut how) {
                    return real(a); // EFAULT, as bare
                }
                let flags = u64::from_ne_bytes(how) as c_int;
                file_access(caller, open_call("openat2", d(0), s(1), flags), |p, _| {
                    real(with(1, p))
                })
            }
            libc::SYS_renameat => file_access(
                caller,
                renaming("renameat", at(d(0), s(1)), at(d(2), s(3))),
                |p, q| real(with2(1, p, 3, q)),
            ),
            libc::SYS_renameat2 => file_access(
                caller,
                Call {
                    flags: d(4),
                    ..renaming("renameat2", at(d(0), s(1)), at(d(2), s(3)))
                },
                |p, q| real(with2(1, p, 3, q)),
            ),
            libc::SYS_unlinkat => {
                let call = removal("unlinkat", at(d(0), s(1)));
                let call = Call {
                    at_flags: d(2),
                    ..call
                };
                file_access(caller, call, |p, _| real(with(1, p)))
            }
            libc::SYS_mkdirat => {
                file_access(caller, creation("mkdirat", at(d(0), s(1)), None), |p, _| {
                    real(with(1, p))
                })
            }
            libc::SYS_linkat if empty_path(s(1), d(4)) => link_of_descriptor(
                caller,
                "linkat",
                d(0),
                s(1),
                at(d(2), s(3)),
                d(4),
                |fd, p, q, flags| {
                    let mut w = with2(1, p, 3, q);
                    w[0] = fd as c_long;
                    w[4] = flags as c_long;
                    real(w) as c_int
                },
            ) as c_long,
            libc::SYS_linkat => file_access(
                caller,
                Call {
                    at_flags: d(4),
                    ..creation("linkat", at(d(0), s(1)), Some(at(d(2), s(3))))
                },
                |p, q| real(with2(1, p, 3, q)),
            ),
            libc::SYS_symlinkat => file_access(
                caller,
                creation("symlinkat", cwd(s(0)), Some(at(d(1), s(2)))),
                |_, q| real(with(2, q)),
            ),
            libc::SYS_truncate => file_access(caller, truncation("truncate", cwd(s(0))), |p, _| {
                real(with(0, p))
            }),
            // The descriptor forms (review 2, F11) before the path forms.
            SYS_FCHMODAT2 if empty_path(s(1), d(3)) => by_descriptor("fchmodat2", 0, &|w| real(w)),
            libc::SYS_fchownat if empty_path(s(1), d(4)) => {
                by_descriptor("fchownat", 0, &|w| real(w))
            }
            libc::SYS_utimensat if a[1] == 0 || empty_path(s(1), d(3)) => {
                by_descriptor("utimensat", 0, &|w| real(w))
            }
            #[cfg(target_arch = "x86_64")]
            libc::SYS_futimesat if a[1] == 0 => by_descriptor("futimesat", 0, &|w| real(w)),
            libc::SYS_fchmod => by_descriptor("fchmod", 0, &|w| real(w)),
            libc::SYS_fchown => by_descriptor("fchown", 0, &|w| real(w)),
            libc::SYS_fsetxattr => by_descriptor("fsetxattr", 0, &|w| real(w)),
            libc::SYS_fremovexattr => by_descriptor("fremovexattr", 0, &|w| real(w)),
            libc::SYS_setxattr
            | libc::SYS_lsetxattr
            | libc::SYS_removexattr
            | libc::SYS_lremovexattr => {
                let op = match number {
                    libc::SYS_setxattr => "setxattr",
                    libc::SYS_lsetxattr => "lsetxattr",
                    libc::SYS_removexattr => "removexattr",
                    _ => "lremovexattr",
                };
                file_access(
                    caller,
                    metadata(op, cwd(s(0)), !op.starts_with('l')),
                    |p, _| real(with(0, p)),
                )
            }
            libc::SYS_getxattr
            | libc::SYS_lgetxattr
            | libc::SYS_listxattr
            | libc::SYS_llistxattr => reroute(
                cwd(s(0)),
                matches!(number, libc::SYS_getxattr | libc::SYS_listxattr),
                |p| real(with(0, p)),
            ),
            libc::SYS_fchmodat => file_access(
                caller,
                metadata("fchmodat", at(d(0), s(1)), true),
                |p, _| real(with(1, p)),
            ),
            SYS_FCHMODAT2 => file_access(
                caller,
                metadata("fchmodat2", at(d(0), s(1)), follows(d(3))),
                |p, _| real(with(1, p)),
            ),
            libc::SYS_fchownat => file_access(
                caller,
                metadata("fchownat", at(d(0), s(1)), follows(d(4))),
                |p, _| real(with(1, p)),
            ),
            libc::SYS_utimensat if a[1] != 0 => file_access(
                caller,
                metadata("utimensat", at(d(0), s(1)), follows(d(3))),
                |p, _| real(with(1, p)),
            ),
            libc::SYS_mknodat => file_access(
                caller,
                node("mknodat", at(d(0), s(1)), Some(a[2] as u32)),
                |p, _| real(with(1, p)),
            ),
            libc::SYS_getdents64 => {
                crate::dirview::getdents(d(0), a[1] as *mut u8, a[2] as usize, || real(a) as isize)
                    as c_long
            }
            libc::SYS_bind => bind_to_path(
                caller,
                d(0),
                a[1] as *const libc::sockaddr,
                a[2] as libc::socklen_t,
                |addr, len| {
                    let mut w = a;
                    w[1] = addr as c_long;
                    w[2] = len as c_long;
                    real(w) as c_int
                },
            ) as c_long,
            libc::SYS_execve => process::exec(
                s(0),
                FOLLOWS,
                a[1] as *const *const c_char,
                a[2] as *const *const c_char,
                |p, env| exec_with(0, p, 2, env),
            ) as c_long,
            libc::SYS_execveat => exec_at(
                d(0),
                s(1),
                a[2] as *const *const c_char,
                a[3] as *const *const c_char,
                d(4),
                |p, env| exec_with(1, p, 3, env),
            ) as c_long,
            // The flags: newfstatat's and faccessat2's fourth word,
            // statx's third (faccessat has none: it follows).
            libc::SYS_newfstatat | libc::SYS_faccessat2 => {
                reroute(at(d(0), s(1)), d(3) & libc::AT_SYMLINK_NOFOLLOW == 0, |p| {
                    real(with(1, p))
                })
            }
            libc::SYS_statx => {
                reroute(at(d(0), s(1)), d(2) & libc::AT_SYMLINK_NOFOLLOW == 0, |p| {
                    real(with(1, p))
                })
            }
            libc::SYS_faccessat => reroute(at(d(0), s(1)), true, |p| real(with(1, p))),
            _ => real(a),
        }
    }
}

/// fchmodat2 (Linux 6.6), not yet in every libc crate.
const SYS_FCHMODAT2: libc::c_long = 452;

/// Marks every thread's cached cwd stale (errno untouched), and passes the
/// result on.
fn after_chdir(r: c_int) -> c_int {
    let _errno = crate::sys::ErrnoGuard::save();
    crate::guard::cwd_changed();
    r
}

/// `__register_frame` and friends (libgcc), passed through after setting
/// `stack::FRAMES_REGISTERED`; the deregistering ones are not hooked.
/// Separate from [`hooks!`]: they return nothing, and a missing one must
/// do nothing rather than end the process.
macro_rules! frame_registry_hooks {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* ) registers $begin:ident, skip_empty = $skip_empty:literal; )*) => {
        #[allow(non_upper_case_globals)]
        mod real_registry {
            $( pub static $name: crate::real::Real = crate::real::Real::new(concat!(stringify!($name), "\0")); )*
        }

        /// Resolves the real registration functions (once, at load).
        pub(crate) fn resolve_frame_registry() {
            $( real_registry::$name.resolve(); )*
        }

        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) {
                // SAFETY: libgcc ignores an .eh_frame that starts with a
                // zero length word (it registers nothing); so do we.
                let empty = $skip_empty && ($begin.is_null() || unsafe { *($begin as *const u32) } == 0);
                if !empty {
                    crate::stack::note_frames_registered();
                }
                let p = real_registry::$name.get();
                if p != 0 {
                    // SAFETY: p is libgcc's definition of this very function.
                    let real: unsafe extern "C" fn($($ty),*) = unsafe { core::mem::transmute(p) };
                    // SAFETY: the program's own arguments.
                    unsafe { real($($arg),*) }
                }
            }
        )*
    };
}

frame_registry_hooks! {
    fn __register_frame(begin: *mut c_void) registers begin, skip_empty = true;
    fn __register_frame_info(begin: *const c_void, ob: *mut c_void) registers begin, skip_empty = true;
    fn __register_frame_info_bases(begin: *const c_void, ob: *mut c_void, tbase: *mut c_void, dbase: *mut c_void)
        registers begin, skip_empty = true;
    fn __register_frame_table(begin: *mut c_void) registers begin, skip_empty = false;
    fn __register_frame_info_table(begin: *mut c_void, ob: *mut c_void) registers begin, skip_empty = false;
    fn __register_frame_info_table_bases(begin: *mut c_void, ob: *mut c_void, tbase: *mut c_void, dbase: *mut c_void)
        registers begin, skip_empty = false;
}

// ---- directory views (dirview.rs): the repositioning calls, which return
// nothing (so not in `hooks!`, whose missing-function case ends the
// process); a missing one does nothing ----
macro_rules! dir_position_hooks {
    ($( fn $name:ident ( $dir:ident : $dty:ty $(, $arg:ident : $ty:ty)* ); )*) => {
        #[allow(non_upper_case_globals)]
        mod real_dir_position {
            $( pub static $name: crate::real::Real = crate::real::Real::new(concat!(stringify!($name), "\0")); )*
        }

        /// Resolves the real repositioning functions (once, at load).
        pub(crate) fn resolve_dir_position() {
            $( real_dir_position::$name.resolve(); )*
        }

        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($dir: $dty $(, $arg: $ty)*) {
                let p = real_dir_position::$name.get();
                if p != 0 {
                    // SAFETY: p is libc's definition of this very function.
                    let real: unsafe extern "C" fn($dty $(, $ty)*) = unsafe { core::mem::transmute(p) };
                    // SAFETY: the program's own arguments.
                    unsafe { real($dir $(, $arg)*) };
                    crate::dirview::repositioned($dir);
                }
            }
        )*
    };
}

dir_position_hooks! {
    fn rewinddir(dir: *mut libc::DIR);
    fn seekdir(dir: *mut libc::DIR, pos: libc::c_long);
}

/// glibc's dlopen, found at load like the hooks' real functions.
static REAL_DLOPEN: crate::real::Real = crate::real::Real::new("dlopen\0");

/// Resolves [`REAL_DLOPEN`] (at load, with the hooks' real functions).
pub(crate) fn resolve_dlopen() {
    REAL_DLOPEN.resolve();
}

/// dlopen: a library the worker built (and so redirected) is loaded from
/// its worker copy. glibc takes the caller from dlopen's return address
/// (for the caller's RPATH/RUNPATH with a bare name, `$ORIGIN` in the name,
/// the caller's namespace), so this stub keeps it: it asks
/// [`dlopen_target`] where to go and jumps there with the program's
/// arguments and return address untouched. Only a name that is routed
/// (an absolute or relative path, no `$`) is loaded from our frame, by its
/// worker-side path, where none of that matters.
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void {
    #[cfg(target_arch = "x86_64")]
    core::arch::naked_asm!(
        "push rdi",
        "push rsi",
        "sub rsp, 8",
        "call {choose}",
        "add rsp, 8",
        "pop rsi",
        "pop rdi",
        "jmp rax",
        choose = sym dlopen_target,
    );
    #[cfg(target_arch = "aarch64")]
    core::arch::naked_asm!(
        "stp x29, x30, [sp, #-32]!",
        "stp x0, x1, [sp, #16]",
        "bl {choose}",
        "mov x16, x0",
        "ldp x0, x1, [sp, #16]",
        "ldp x29, x30, [sp], #32",
        "br x16",
        choose = sym dlopen_target,
    );
}

/// Where [`dlopen`] goes: glibc's dlopen itself, unless the name is a path
/// this worker may have redirected.
extern "C" fn dlopen_target(file: *const c_char) -> usize {
    let real = REAL_DLOPEN.get();
    if real == 0 {
        return dlopen_missing as *const () as usize;
    }
    // SAFETY: `file` is the program's dlopen argument (NULL, or a C
    // string, as dlopen requires); read at most PATH_MAX bytes of it.
    let routed = crate::state::ready()
        && crate::redirect::any_redirected()
        && !file.is_null()
        && unsafe { routable_library_name(file) };
    if routed {
        dlopen_routed as *const () as usize
    } else {
        real
    }
}

/// A name with a `/` and no dynamic string token (`$ORIGIN`, `$LIB`…):
/// the loader opens it as it stands, with no search path.
///
/// # Safety
/// `file` is a readable C string.
unsafe fn routable_library_name(file: *const c_char) -> bool {
    // SAFETY: the caller's contract; bounded read.
    let name = unsafe { crate::sys::c_bytes(file, crate::view::PATH_MAX) };
    name.contains(&b'/') && !name.contains(&b'$')
}

unsafe extern "C" fn dlopen_routed(file: *const c_char, mode: c_int) -> *mut c_void {
    let p = REAL_DLOPEN.get();
    // SAFETY: p is glibc's dlopen ([`dlopen_target`] checked it is found).
    let real: unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void =
        unsafe { core::mem::transmute(p) };
    // SAFETY: the program's argument, a readable C string (checked by
    // reroute before use); the routed name is a NUL-terminated path.
    unsafe { crate::audit::reroute_unguarded(cwd(file), true, |p| real(p, mode)) }
}

/// dlopen when glibc's could not be found: fails as a missing library.
extern "C" fn dlopen_missing(_file: *const c_char, _mode: c_int) -> *mut c_void {
    core::ptr::null_mut()
}

/// After getcwd: a cwd inside the worker's directory that stands for a job
/// directory (entered by a rerouted chdir: one the worker made or moved)
/// reads as the job path, as in place (`guard::as_job_path`). ERANGE when
/// that does not fit the caller's buffer; a buffer glibc allocated
/// (`buf` NULL) is grown with realloc.
fn cwd_in_view(r: *mut c_char, buf: *mut c_char, size: libc::size_t) -> *mut c_char {
    if r.is_null() || !crate::redirect::any_redirected() {
        return r;
    }
    let _errno = crate::sys::ErrnoGuard::save();
    let Some(mut claimed) = crate::pool::claim() else {
        return r;
    };
    let work = &mut claimed.block().work;
    // SAFETY: getcwd returned a NUL-terminated path in `r`.
    let given = unsafe { crate::sys::c_bytes(r, work.len() - 1) };
    let len = given.len();
    work[..len].copy_from_slice(given);
    let n = crate::guard::as_job_path(work, len);
    if n == len && work[..n] == *given {
        return r;
    }
    let out = if !buf.is_null() {
        if n + 1 > size {
            drop(_errno);
            crate::sys::set_errno(libc::ERANGE);
            return core::ptr::null_mut();
        }
        buf
    } else {
        // SAFETY: `r` is the block glibc's getcwd allocated for the caller.
        let grown = unsafe { libc::realloc(r.cast(), (n + 1).max(size)) }.cast::<c_char>();
        if grown.is_null() {
            return r;
        }
        grown
    };
    // SAFETY: `out` holds at least n + 1 bytes (checked or allocated above).
    unsafe {
        core::ptr::copy_nonoverlapping(work.as_ptr(), out.cast::<u8>(), n);
        *out.add(n) = 0;
    }
    out
}
