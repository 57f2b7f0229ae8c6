//! The exported entry points. Each is a one-liner handing over to audit.rs or
//! process.rs with a closure that calls the real function.
//!
//! `open`, `openat` and friends are C-variadic; stable Rust cannot define
//! variadic functions, so they take `mode` as a fixed argument. On x86-64 and
//! aarch64 Linux a variadic integer argument travels exactly like a fixed
//! one, and the real function is always given the mode the program passed.

#![allow(clippy::missing_safety_doc)]

use crate::audit::{file_access, reroute, Call, PathArg, Writes};
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
        makes_directory: false,
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
        makes_directory: false,
    }
}

fn removal(op: &'static str, path: PathArg) -> Call {
    Call {
        removes: true,
        ..ns(op, path, None)
    }
}

/// mkdir, link, symlink: the (last) path is created.
fn creation(op: &'static str, path: PathArg, path2: Option<PathArg>) -> Call {
    let base = ns(op, path, path2);
    Call {
        makes_directory: path2.is_none(),
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
        |real, caller| crate::dirview::renamed(cwd(old), cwd(new), crate::sys::errno(), file_access(caller, renaming("rename", cwd(old), cwd(new)), |a, b| real(a, b)));
    fn renameat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char) -> c_int =>
        |real, caller| crate::dirview::renamed(at(olddirfd, old), at(newdirfd, new), crate::sys::errno(), file_access(caller, renaming("renameat", at(olddirfd, old), at(newdirfd, new)), |a, b| real(olddirfd, a, newdirfd, b)));
    fn renameat2(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char, flags: c_uint) -> c_int =>
        |real, caller| crate::dirview::renamed(at(olddirfd, old), at(newdirfd, new), crate::sys::errno(), file_access(caller, renaming("renameat2", at(olddirfd, old), at(newdirfd, new)), |a, b| real(olddirfd, a, newdirfd, b, flags)));
    fn unlink(path: *const c_char) -> c_int =>
        |real, caller| file_access(caller, removal("unlink", cwd(path)), |p, _| real(p));
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, removal("unlinkat", at(dirfd, path)), |p, _| real(dirfd, p, flags));
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
    fn linkat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char, flags: c_int) -> c_int =>
        |real, caller| file_access(caller, creation("linkat", at(olddirfd, old), Some(at(newdirfd, new))), |a, b| real(olddirfd, a, newdirfd, b, flags));
    fn symlink(target: *const c_char, linkpath: *const c_char) -> c_int =>
        |real, caller| file_access(caller, creation("symlink", cwd(target), Some(cwd(linkpath))), |_, b| real(target, b));
    fn symlinkat(target: *const c_char, newdirfd: c_int, linkpath: *const c_char) -> c_int =>
        |real, caller| file_access(caller, creation("symlinkat", cwd(target), Some(at(newdirfd, linkpath))), |_, b| real(target, newdirfd, b));

    // ---- read-your-writes: calls that only look at a path follow its redirect ----
    fn stat(path: *const c_char, buf: *mut c_void) -> c_int => |real| reroute(cwd(path), |p| real(p, buf));
    fn stat64(path: *const c_char, buf: *mut c_void) -> c_int => |real| reroute(cwd(path), |p| real(p, buf));
    fn lstat(path: *const c_char, buf: *mut c_void) -> c_int => |real| reroute(cwd(path), |p| real(p, buf));
    fn lstat64(path: *const c_char, buf: *mut c_void) -> c_int => |real| reroute(cwd(path), |p| real(p, buf));
    fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int =>
        |real| reroute(at(dirfd, path), |p| real(dirfd, p, buf, flags));
    fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int =>
        |real| reroute(at(dirfd, path), |p| real(dirfd, p, buf, flags));
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, buf: *mut c_void) -> c_int =>
        |real| reroute(at(dirfd, path), |p| real(dirfd, p, flags, mask, buf));
    // Binaries built against glibc < 2.33 call these instead.
    fn __xstat(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int => |real| reroute(cwd(path), |p| real(ver, p, buf));
    fn __xstat64(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int => |real| reroute(cwd(path), |p| real(ver, p, buf));
    fn __lxstat(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int => |real| reroute(cwd(path), |p| real(ver, p, buf));
    fn __lxstat64(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int => |real| reroute(cwd(path), |p| real(ver, p, buf));
    fn __fxstatat(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int =>
        |real| reroute(at(dirfd, path), |p| real(ver, dirfd, p, buf, flags));
    fn __fxstatat64(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int =>
        |real| reroute(at(dirfd, path), |p| real(ver, dirfd, p, buf, flags));
    fn access(path: *const c_char, mode: c_int) -> c_int => |real| reroute(cwd(path), |p| real(p, mode));
    fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int =>
        |real| reroute(at(dirfd, path), |p| real(dirfd, p, mode, flags));

    // ---- directory views (dirview.rs): a redirecting worker lists its own
    // files in place of (or alongside) the shared ones, removed ones hidden ----
    fn opendir(path: *const c_char) -> *mut libc::DIR =>
        |real| crate::dirview::opened(reroute(cwd(path), |p| real(p)));
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
    // ---- end of directory views ----

    // ---- the cwd: hooked only to invalidate the per-thread cwd cache ----
    fn chdir(path: *const c_char) -> c_int => |real| after_chdir(real(path));
    fn fchdir(fd: c_int) -> c_int => |real| after_chdir(real(fd));

    // ---- the loader: an unloaded object's cached call sites go stale.
    // (dlopen is not hooked: glibc resolves its search path from the
    // caller's RPATH/RUNPATH, which would then be ours.) ----
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
        |real| process::exec(path, argv, envp, |env| real(path, argv, env));
    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int =>
        |_real| process::exec(path, argv, environ, |env| match real_execve() {
            Some(f) => f(path, argv, env),
            None => <c_int as crate::real::Missing>::missing(),
        });
    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int =>
        |real| exec_searching(file, argv, envp, |env| real(file, argv, env));
    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int =>
        |_real| exec_searching(file, argv, environ, |env| match real_execvpe() {
            Some(f) => f(file, argv, env),
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
            process::exec(exe.as_ptr().cast(), argv, envp, |env| real(fd, argv, env))
        };
    fn posix_spawn(pid: *mut pid_t, path: *const c_char, file_actions: *const libc::posix_spawn_file_actions_t,
                   attrp: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int =>
        |real| process::spawn(pid, path, argv.cast(), envp.cast(), |env| real(pid, path, file_actions, attrp, argv, env.cast()));
    fn posix_spawnp(pid: *mut pid_t, file: *const c_char, file_actions: *const libc::posix_spawn_file_actions_t,
                    attrp: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int =>
        |real| {
            let mut claimed = crate::pool::claim();
            let resolved = resolve_program(file, claimed.as_mut());
            process::spawn(pid, resolved, argv.cast(), envp.cast(), |env| real(pid, file, file_actions, attrp, argv, env.cast()))
        };
    fn exit(status: c_int) -> () => |real| { process::log_exit(status); real(status) };
    fn _exit(status: c_int) -> () => |real| { process::log_exit(status); real(status) };
    fn _Exit(status: c_int) -> () => |real| { process::log_exit(status); real(status) };
}

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

/// execvp(e): the event names the program PATH resolves to.
fn exec_searching(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    real: impl FnOnce(*const *const c_char) -> c_int,
) -> c_int {
    let mut claimed = crate::pool::claim();
    let resolved = resolve_program(file, claimed.as_mut());
    process::exec(resolved, argv, envp, real)
}

/// `file` resolved through PATH into a pool block (`file` itself without
/// a block or a hit).
fn resolve_program(
    file: *const c_char,
    claimed: Option<&mut crate::pool::Claimed>,
) -> *const c_char {
    match claimed {
        Some(c) => {
            let exe = &mut c.block().target;
            process::search_path(file, exe).map_or(file, |_| exe.as_ptr().cast())
        }
        None => file,
    }
}

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
