//! glibc's own directory readers, made to list the worker's view (issue
//! 12). `glob`, `scandir`, `nftw`/`ftw` read directories through glibc's
//! internal `__opendir`/`__readdir64`/`__fstatat64`, which no PLT hook
//! sees, so in a redirecting worker they listed the shared directory only.
//! Here each runs on top of the hooked functions (dirview.rs's merged
//! streams, audit.rs's rerouted stats) when the worker has redirected
//! anything; otherwise the real function runs untouched.
//!
//! - `glob`/`glob64`: the real function with `GLOB_ALTDIRFUNC` and the
//!   hooked `opendir`/`readdir64`/`closedir`/`stat`/`lstat` (glibc's
//!   `glob` treats them exactly like its internal ones: same `errfunc`,
//!   `GLOB_ERR`, `GLOB_MARK`, `GLOB_ONLYDIR`, sorting, offsets). The
//!   caller's `glob_t` is given back as bare glibc leaves it: the five
//!   function fields restored, `GLOB_ALTDIRFUNC` cleared from `gl_flags`.
//! - `scandir`, `scandirat` (and `64`): glibc's algorithm (errno, the
//!   selector resetting errno, growth by doubling from 10, one `malloc`
//!   per entry of `d_reclen` bytes, `qsort`) over the merged stream.
//! - `nftw`, `ftw` (and `64`): glibc 2.36's walk, step for step (the
//!   descriptor budget that caches a parent's remaining names when it runs
//!   out, the visited-directory tree for non-`FTW_PHYS` walks, `FTW_CHDIR`
//!   through the hooked `fchdir`/`chdir`, `FTW_ACTIONRETVAL`, `FTW_SLN`
//!   with the link's `lstat`, the flag check of the `GLIBC_2.3.3` version).
//!
//! Memory comes from the program's `malloc`, as glibc's own would: these
//! are not hook paths (none of them is async-signal-safe in libc either),
//! and no hook guard is held while the program's callbacks run.

use crate::audit::{reroute_listing, PathArg};
use crate::sys;
use libc::{c_char, c_int, c_void, dirent64, DIR};

/// The worker has redirected something: listings must be merged.
fn merging() -> bool {
    crate::state::ready() && crate::redirect::any_redirected()
}

// ---- glob ----------------------------------------------------------------

/// glibc's `glob_t` (the same for `glob64` on LP64).
#[repr(C)]
pub struct GlobT {
    pathc: usize,
    pathv: *mut *mut c_char,
    offs: usize,
    flags: c_int,
    closedir: usize,
    readdir: usize,
    opendir: usize,
    lstat: usize,
    stat: usize,
}

const GLOB_ALTDIRFUNC: c_int = 1 << 9;

/// `glob`/`glob64`: `real` with the worker's view.
///
/// # Safety
/// The program's arguments to glob.
pub unsafe fn glob(
    pattern: *const c_char,
    flags: c_int,
    pglob: *mut GlobT,
    real: impl FnOnce(c_int) -> c_int,
) -> c_int {
    // The caller's own directory functions are the caller's business.
    if pglob.is_null() || pattern.is_null() || flags & GLOB_ALTDIRFUNC != 0 || !merging() {
        return real(flags);
    }
    // SAFETY: the program's glob_t, which glob writes anyway.
    let g = unsafe { &mut *pglob };
    let saved = (g.closedir, g.readdir, g.opendir, g.lstat, g.stat, g.flags);
    g.closedir = view_closedir as *const () as usize;
    g.readdir = view_readdir as *const () as usize;
    g.opendir = view_opendir as *const () as usize;
    g.lstat = view_lstat as *const () as usize;
    g.stat = view_stat as *const () as usize;
    let r = real(flags | GLOB_ALTDIRFUNC);
    // SAFETY: as above; glob returned.
    let g = unsafe { &mut *pglob };
    (g.closedir, g.readdir, g.opendir, g.lstat, g.stat) =
        (saved.0, saved.1, saved.2, saved.3, saved.4);
    if g.flags != saved.5 {
        g.flags &= !GLOB_ALTDIRFUNC;
    }
    r
}

unsafe extern "C" fn view_opendir(path: *const c_char) -> *mut c_void {
    // SAFETY: glob's NUL-terminated directory name.
    unsafe { crate::hooks::opendir(path).cast() }
}

unsafe extern "C" fn view_readdir(dir: *mut c_void) -> *mut c_void {
    // SAFETY: a stream view_opendir returned.
    unsafe { crate::hooks::readdir64(dir.cast()).cast() }
}

unsafe extern "C" fn view_closedir(dir: *mut c_void) {
    // SAFETY: a stream view_opendir returned.
    unsafe { crate::hooks::closedir(dir.cast()) };
}

unsafe extern "C" fn view_stat(path: *const c_char, buf: *mut c_void) -> c_int {
    // SAFETY: glob's path and stat buffer.
    unsafe { crate::hooks::stat(path, buf) }
}

unsafe extern "C" fn view_lstat(path: *const c_char, buf: *mut c_void) -> c_int {
    // SAFETY: glob's path and stat buffer.
    unsafe { crate::hooks::lstat(path, buf) }
}

// ---- scandir -------------------------------------------------------------

pub type Select = Option<unsafe extern "C" fn(*const dirent64) -> c_int>;
pub type Compare =
    Option<unsafe extern "C" fn(*const *const dirent64, *const *const dirent64) -> c_int>;

/// `scandirat` (`dirfd` `AT_FDCWD` for `scandir`) over the worker's view;
/// `None` when nothing is merged (the caller runs the real function).
///
/// # Safety
/// The program's arguments to scandirat.
pub unsafe fn scandirat(
    dirfd: c_int,
    dir: *const c_char,
    namelist: *mut *mut *mut dirent64,
    select: Select,
    compare: Compare,
) -> Option<c_int> {
    if !merging() {
        return None;
    }
    // SAFETY: the program's arguments.
    let dp = unsafe {
        if dirfd == libc::AT_FDCWD {
            crate::hooks::opendir(dir)
        } else {
            opendirat(dirfd, dir, libc::O_CLOEXEC)
        }
    };
    // SAFETY: our stream and the program's out-pointer and callbacks.
    Some(unsafe { scandir_tail(dp, namelist, select, compare) })
}

/// glibc's `__opendirat`: the directory `name` relative to `dirfd`
/// (rerouted, opened without a log event, as libc's internal open is),
/// as a merged stream.
unsafe fn opendirat(dirfd: c_int, name: *const c_char, extra: c_int) -> *mut DIR {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_DIRECTORY | extra;
    // SAFETY: the program's path; sys::openat is the raw system call.
    let fd = unsafe {
        reroute_listing(PathArg { dirfd, path: name }, |p| {
            sys::openat(dirfd, p, flags, 0)
        })
    };
    if fd < 0 {
        sys::set_errno(-fd);
        return core::ptr::null_mut();
    }
    // SAFETY: our descriptor.
    let dp = unsafe { crate::hooks::fdopendir(fd) };
    if dp.is_null() {
        let e = sys::errno();
        sys::close(fd);
        sys::set_errno(e);
    }
    dp
}

/// glibc's `__scandir_tail`.
unsafe fn scandir_tail(
    dp: *mut DIR,
    namelist: *mut *mut *mut dirent64,
    select: Select,
    compare: Compare,
) -> c_int {
    if dp.is_null() {
        return -1;
    }
    let save = sys::errno();
    sys::set_errno(0);
    let mut v: *mut *mut dirent64 = core::ptr::null_mut();
    let (mut size, mut count) = (0usize, 0usize);
    loop {
        // SAFETY: our stream.
        let d = unsafe { crate::hooks::readdir64(dp) };
        if d.is_null() {
            break;
        }
        if let Some(select) = select {
            // SAFETY: the program's selector on a live entry.
            let selected = unsafe { select(d) };
            // It may have set errno on success; the test below needs 0.
            sys::set_errno(0);
            if selected == 0 {
                continue;
            }
        }
        if count == size {
            size = if size == 0 { 10 } else { size * 2 };
            // SAFETY: v is null or our earlier allocation.
            let new =
                unsafe { libc::realloc(v.cast(), size * core::mem::size_of::<*mut dirent64>()) };
            if new.is_null() {
                break;
            }
            v = new.cast();
        }
        // SAFETY: a live entry: d_reclen covers it and its name.
        let reclen = unsafe { (*d).d_reclen } as usize;
        // SAFETY: plain allocation.
        let copy = unsafe { libc::malloc(reclen) };
        if copy.is_null() {
            break;
        }
        // SAFETY: reclen bytes of the entry into the new block; v has room.
        unsafe {
            core::ptr::copy_nonoverlapping(d as *const u8, copy as *mut u8, reclen);
            *v.add(count) = copy.cast();
        }
        count += 1;
        sys::set_errno(0);
    }
    let result = if sys::errno() == 0 {
        // SAFETY: our stream; v holds count entries; the program's compar.
        unsafe {
            crate::hooks::closedir(dp);
            if let Some(compare) = compare {
                let compare: unsafe extern "C" fn(*const c_void, *const c_void) -> c_int =
                    core::mem::transmute(compare);
                libc::qsort(
                    v.cast(),
                    count,
                    core::mem::size_of::<*mut dirent64>(),
                    Some(compare),
                );
            }
            *namelist = v;
        }
        count as c_int
    } else {
        // SAFETY: our allocations and stream.
        unsafe {
            for i in 0..count {
                libc::free((*v.add(i)).cast());
            }
            libc::free(v.cast());
            crate::hooks::closedir(dp);
        }
        -1
    };
    if result >= 0 {
        sys::set_errno(save);
    }
    result
}

// ---- nftw / ftw ----------------------------------------------------------

/// `struct FTW`.
#[repr(C)]
pub struct Ftw {
    base: c_int,
    level: c_int,
}

pub type WalkFn =
    Option<unsafe extern "C" fn(*const c_char, *const libc::stat, c_int, *mut Ftw) -> c_int>;

const FTW_F: usize = 0;
const FTW_D: c_int = 1;
const FTW_DNR: c_int = 2;
const FTW_NS: usize = 3;
const FTW_SL: usize = 4;
const FTW_DP: c_int = 5;
const FTW_SLN: usize = 6;

const FTW_PHYS: c_int = 1;
const FTW_MOUNT: c_int = 2;
const FTW_CHDIR: c_int = 4;
const FTW_DEPTH: c_int = 8;
const FTW_ACTIONRETVAL: c_int = 16;

const FTW_STOP: c_int = 1;
const FTW_SKIP_SUBTREE: c_int = 2;
const FTW_SKIP_SIBLINGS: c_int = 3;

/// Types as `nftw` reports them, and as `ftw` does (no links, no
/// post-order).
const NFTW_TYPES: [c_int; 7] = [0, 1, 2, 3, 4, 5, 6];
const FTW_TYPES: [c_int; 7] = [0, 1, 2, 3, 0, 1, 3];

extern "C" {
    fn tsearch(key: *const c_void, root: *mut *mut c_void, compar: Compar) -> *mut c_void;
    fn tfind(key: *const c_void, root: *const *mut c_void, compar: Compar) -> *mut c_void;
    fn tdestroy(root: *mut c_void, free: unsafe extern "C" fn(*mut c_void));
}
type Compar = unsafe extern "C" fn(*const c_void, *const c_void) -> c_int;

/// `nftw` (`is_nftw`) or `ftw` over the worker's view; `None` when nothing
/// is merged (the caller runs the real function).
///
/// # Safety
/// The program's arguments to nftw or ftw (`func` of ftw's type when not
/// `is_nftw`: the C calling convention lets it be called with a fourth
/// argument, as glibc does).
pub unsafe fn walk(
    dir: *const c_char,
    func: WalkFn,
    descriptors: c_int,
    flags: c_int,
    is_nftw: bool,
) -> Option<c_int> {
    if !merging() {
        return None;
    }
    if flags & !(FTW_PHYS | FTW_MOUNT | FTW_CHDIR | FTW_DEPTH | FTW_ACTIONRETVAL) != 0 {
        sys::set_errno(libc::EINVAL);
        return Some(-1);
    }
    // SAFETY: the caller's contract.
    Some(unsafe { ftw_startup(dir, func?, descriptors, flags, is_nftw) })
}

struct DirData {
    stream: *mut DIR,
    streamfd: c_int,
    content: *mut c_char,
}

struct Walk {
    /// The open streams, `maxdir` of them at most, used round-robin.
    dirstreams: *mut *mut DirData,
    actdir: usize,
    maxdir: usize,
    dirbuf: *mut c_char,
    dirbufsize: usize,
    ftw: Ftw,
    flags: c_int,
    types: &'static [c_int; 7],
    func: unsafe extern "C" fn(*const c_char, *const libc::stat, c_int, *mut Ftw) -> c_int,
    dev: libc::dev_t,
    known: *mut c_void,
}

impl Walk {
    fn has(&self, flag: c_int) -> bool {
        self.flags & flag != 0
    }

    unsafe fn call(&mut self, st: *const libc::stat, kind: c_int) -> c_int {
        // SAFETY: the program's callback with the current path.
        unsafe { (self.func)(self.dirbuf, st, kind, &mut self.ftw) }
    }

    /// Grows the path buffer to `size` bytes.
    unsafe fn allocate(&mut self, size: usize) -> bool {
        // SAFETY: dirbuf is null or our allocation.
        let p = unsafe { libc::realloc(self.dirbuf.cast(), size) };
        if p.is_null() {
            return false;
        }
        self.dirbuf = p.cast();
        self.dirbufsize = size;
        true
    }

    /// The stream slot before `actdir` (the one just filled) is free again.
    unsafe fn release_slot(&mut self) {
        self.actdir = if self.actdir == 0 {
            self.maxdir - 1
        } else {
            self.actdir - 1
        };
        // SAFETY: actdir < maxdir, the array's length.
        unsafe { *self.dirstreams.add(self.actdir) = core::ptr::null_mut() };
    }
}

unsafe extern "C" fn object_compare(a: *const c_void, b: *const c_void) -> c_int {
    // SAFETY: tsearch compares our (dev, ino) pairs.
    let (a, b) = unsafe { (*(a as *const [u64; 2]), *(b as *const [u64; 2])) };
    match (a[1].cmp(&b[1])).then(a[0].cmp(&b[0])) {
        core::cmp::Ordering::Less => -1,
        core::cmp::Ordering::Equal => 0,
        core::cmp::Ordering::Greater => 1,
    }
}

unsafe fn add_object(w: &mut Walk, st: &libc::stat) -> c_int {
    // SAFETY: plain allocation, freed by tdestroy.
    let p = unsafe { libc::malloc(16) } as *mut [u64; 2];
    if p.is_null() {
        return -1;
    }
    // SAFETY: our 16 bytes; the tree is ours.
    unsafe {
        *p = [st.st_dev, st.st_ino];
        if tsearch(p.cast(), &mut w.known, object_compare).is_null() {
            -1
        } else {
            0
        }
    }
}

unsafe fn find_object(w: &Walk, st: &libc::stat) -> bool {
    let key = [st.st_dev, st.st_ino];
    // SAFETY: the tree is ours.
    unsafe { !tfind(key.as_ptr().cast(), &w.known, object_compare).is_null() }
}

fn is(st: &libc::stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

fn stat_buf() -> libc::stat {
    // SAFETY: plain integers.
    unsafe { core::mem::zeroed() }
}

unsafe fn do_stat(path: *const c_char, st: &mut libc::stat, follow: bool) -> c_int {
    let buf = (st as *mut libc::stat).cast();
    // SAFETY: a NUL-terminated path and a stat buffer.
    unsafe {
        if follow {
            crate::hooks::stat(path, buf)
        } else {
            crate::hooks::lstat(path, buf)
        }
    }
}

unsafe fn do_fstatat(fd: c_int, name: *const c_char, st: &mut libc::stat, flags: c_int) -> c_int {
    // SAFETY: a NUL-terminated name and a stat buffer.
    unsafe { crate::hooks::fstatat(fd, name, (st as *mut libc::stat).cast(), flags) }
}

const DOT: *const c_char = c".".as_ptr();

unsafe fn ftw_startup(
    dir: *const c_char,
    func: unsafe extern "C" fn(*const c_char, *const libc::stat, c_int, *mut Ftw) -> c_int,
    descriptors: c_int,
    flags: c_int,
    is_nftw: bool,
) -> c_int {
    // SAFETY: the program's NUL-terminated path.
    let len = unsafe { libc::strlen(dir) };
    if len == 0 {
        sys::set_errno(libc::ENOENT);
        return -1;
    }
    let maxdir = descriptors.max(1) as usize;
    let mut w = Walk {
        // SAFETY: plain allocation.
        dirstreams: unsafe { libc::calloc(maxdir, core::mem::size_of::<*mut DirData>()) }.cast(),
        actdir: 0,
        maxdir,
        dirbuf: core::ptr::null_mut(),
        dirbufsize: 0,
        ftw: Ftw { base: 0, level: 0 },
        flags,
        types: if is_nftw { &NFTW_TYPES } else { &FTW_TYPES },
        func,
        dev: 0,
        known: core::ptr::null_mut(),
    };
    // SAFETY: our allocations; `dir` is len bytes and a NUL.
    unsafe {
        if w.dirstreams.is_null() {
            return -1;
        }
        if !w.allocate((2 * len).max(libc::PATH_MAX as usize)) {
            libc::free(w.dirstreams.cast());
            return -1;
        }
        core::ptr::copy_nonoverlapping(dir, w.dirbuf, len + 1);
        let mut cp = len;
        while cp > 1 && *w.dirbuf.add(cp - 1) == b'/' as c_char {
            cp -= 1;
        }
        *w.dirbuf.add(cp) = 0;
        while cp > 0 && *w.dirbuf.add(cp - 1) != b'/' as c_char {
            cp -= 1;
        }
        w.ftw.base = cp as c_int;
    }
    let base = w.ftw.base as usize;
    let mut result = 0;
    let mut cwdfd = -1;
    let mut cwd: *mut c_char = core::ptr::null_mut();
    // SAFETY: our buffers; hooked libc calls with NUL-terminated paths; the
    // program's callback.
    unsafe {
        'out: {
            if w.has(FTW_CHDIR) {
                // To come back to; libc's internal open, unlogged.
                cwdfd = sys::openat(libc::AT_FDCWD, DOT, libc::O_RDONLY | libc::O_DIRECTORY, 0);
                if cwdfd < 0 {
                    sys::set_errno(-cwdfd);
                    cwdfd = -1;
                    if sys::errno() == libc::EACCES {
                        cwd = libc::getcwd(core::ptr::null_mut(), 0);
                    }
                    if cwd.is_null() {
                        break 'out;
                    }
                } else if w.maxdir > 1 {
                    w.maxdir -= 1;
                }
                if base > 0 {
                    result = if base == 1 {
                        crate::hooks::chdir(c"/".as_ptr())
                    } else {
                        let ch = *w.dirbuf.add(base - 1);
                        *w.dirbuf.add(base - 1) = 0;
                        let r = crate::hooks::chdir(w.dirbuf);
                        *w.dirbuf.add(base - 1) = ch;
                        r
                    };
                }
            }
            if result == 0 {
                let name = if w.has(FTW_CHDIR) {
                    let n = w.dirbuf.add(base);
                    if *n == 0 {
                        DOT
                    } else {
                        n
                    }
                } else {
                    w.dirbuf
                };
                let mut st = stat_buf();
                if do_stat(name, &mut st, !w.has(FTW_PHYS)) < 0 {
                    result = if !w.has(FTW_PHYS)
                        && sys::errno() == libc::ENOENT
                        && do_stat(name, &mut st, false) == 0
                        && is(&st, libc::S_IFLNK)
                    {
                        w.call(&st, w.types[FTW_SLN])
                    } else {
                        -1
                    };
                } else if is(&st, libc::S_IFDIR) {
                    w.dev = st.st_dev;
                    if !w.has(FTW_PHYS) {
                        result = add_object(&mut w, &st);
                    }
                    if result == 0 {
                        result = ftw_dir(&mut w, &st, core::ptr::null_mut());
                    }
                } else {
                    let kind = if is(&st, libc::S_IFLNK) {
                        FTW_SL
                    } else {
                        FTW_F
                    };
                    result = w.call(&st, w.types[kind]);
                }
                if w.has(FTW_ACTIONRETVAL)
                    && (result == FTW_SKIP_SUBTREE || result == FTW_SKIP_SIBLINGS)
                {
                    result = 0;
                }
            }
            let save = sys::errno();
            if cwdfd != -1 {
                crate::hooks::fchdir(cwdfd);
                sys::close(cwdfd);
            } else if !cwd.is_null() {
                crate::hooks::chdir(cwd);
                libc::free(cwd.cast());
            }
            sys::set_errno(save);
        }
        let save = sys::errno();
        tdestroy(w.known, libc::free);
        libc::free(w.dirbuf.cast());
        libc::free(w.dirstreams.cast());
        sys::set_errno(save);
    }
    result
}

/// Opens the stream of the directory in `dirbuf` into `dirp`, relative to
/// `*dfdp` when that is a descriptor (read after a stream was closed: it
/// may be the one closed). When all `maxdir` streams are open, the next
/// one in turn is read to its end into its `content` and closed first.
unsafe fn open_dir_stream(w: &mut Walk, dfdp: *const c_int, dirp: *mut DirData) -> c_int {
    // SAFETY: our buffers and streams; every DirData pointer in
    // dirstreams is a live frame of ftw_dir up the stack.
    unsafe {
        let slot = w.dirstreams.add(w.actdir);
        let old = *slot;
        if !old.is_null() {
            let mut bufsize = 1024usize;
            let mut buf = libc::malloc(bufsize) as *mut c_char;
            if buf.is_null() {
                return -1;
            }
            let st = (*old).stream;
            let mut actsize = 0usize;
            loop {
                let d = crate::hooks::readdir64(st);
                if d.is_null() {
                    break;
                }
                let name = (*d).d_name.as_ptr();
                let this_len = libc::strlen(name);
                if actsize + this_len + 2 >= bufsize {
                    bufsize += 1024usize.max(2 * this_len);
                    let newp = libc::realloc(buf.cast(), bufsize) as *mut c_char;
                    if newp.is_null() {
                        let e = sys::errno();
                        libc::free(buf.cast());
                        sys::set_errno(e);
                        return -1;
                    }
                    buf = newp;
                }
                core::ptr::copy_nonoverlapping(name, buf.add(actsize), this_len);
                *buf.add(actsize + this_len) = 0;
                actsize += this_len + 1;
            }
            *buf.add(actsize) = 0;
            actsize += 1;
            let content = libc::realloc(buf.cast(), actsize) as *mut c_char;
            (*old).content = content;
            if content.is_null() {
                let e = sys::errno();
                libc::free(buf.cast());
                sys::set_errno(e);
                return -1;
            }
            crate::hooks::closedir(st);
            (*old).stream = core::ptr::null_mut();
            (*old).streamfd = -1;
            *slot = core::ptr::null_mut();
        }
        if !dfdp.is_null() && *dfdp != -1 {
            (*dirp).stream = opendirat(*dfdp, w.dirbuf.add(w.ftw.base as usize), 0);
        } else {
            let name = if w.has(FTW_CHDIR) {
                let n = w.dirbuf.add(w.ftw.base as usize);
                if *n == 0 {
                    DOT
                } else {
                    n
                }
            } else {
                w.dirbuf
            };
            (*dirp).stream = crate::hooks::opendir(name);
        }
        if (*dirp).stream.is_null() {
            return -1;
        }
        (*dirp).streamfd = libc::dirfd((*dirp).stream);
        (*dirp).content = core::ptr::null_mut();
        *slot = dirp;
        w.actdir += 1;
        if w.actdir == w.maxdir {
            w.actdir = 0;
        }
        0
    }
}

unsafe fn process_entry(
    w: &mut Walk,
    dir: *mut DirData,
    name: *const c_char,
    namlen: usize,
) -> c_int {
    // SAFETY: `name` is NUL-terminated (namlen bytes); our buffers; `dir`
    // is the calling ftw_dir's live frame.
    unsafe {
        if *name == b'.' as c_char
            && (*name.add(1) == 0 || (*name.add(1) == b'.' as c_char && *name.add(2) == 0))
        {
            return 0;
        }
        let base = w.ftw.base as usize;
        let needed = base + namlen + 2;
        if w.dirbufsize < needed && !w.allocate(2 * needed) {
            return -1;
        }
        core::ptr::copy_nonoverlapping(name, w.dirbuf.add(base), namlen);
        *w.dirbuf.add(base + namlen) = 0;
        let mut name = name;
        let mut st = stat_buf();
        let phys = w.has(FTW_PHYS);
        let streamfd = (*dir).streamfd;
        let statres = if streamfd != -1 {
            do_fstatat(
                streamfd,
                name,
                &mut st,
                if phys { libc::AT_SYMLINK_NOFOLLOW } else { 0 },
            )
        } else {
            if !w.has(FTW_CHDIR) {
                name = w.dirbuf;
            }
            do_stat(name, &mut st, !phys)
        };
        let mut result = 0;
        let mut kind = FTW_F;
        if statres < 0 {
            let e = sys::errno();
            if e != libc::EACCES && e != libc::ENOENT {
                result = -1;
            } else if phys {
                kind = FTW_NS;
            } else {
                // A dangling link: reported with the link's own stat.
                let r = if streamfd != -1 {
                    do_fstatat(streamfd, name, &mut st, libc::AT_SYMLINK_NOFOLLOW)
                } else {
                    do_stat(name, &mut st, false)
                };
                kind = if r == 0 && is(&st, libc::S_IFLNK) {
                    FTW_SLN
                } else {
                    FTW_NS
                };
            }
        } else if is(&st, libc::S_IFDIR) {
            kind = FTW_D as usize;
        } else if is(&st, libc::S_IFLNK) {
            kind = FTW_SL;
        }
        if result == 0 && (kind == FTW_NS || !w.has(FTW_MOUNT) || st.st_dev == w.dev) {
            if kind == FTW_D as usize {
                if phys
                    || (!find_object(w, &st) && {
                        result = add_object(w, &st);
                        result == 0
                    })
                {
                    result = ftw_dir(w, &st, dir);
                }
            } else {
                result = w.call(&st, w.types[kind]);
            }
        }
        if w.has(FTW_ACTIONRETVAL) && result == FTW_SKIP_SUBTREE {
            result = 0;
        }
        result
    }
}

unsafe fn ftw_dir(w: &mut Walk, st: &libc::stat, old_dir: *mut DirData) -> c_int {
    let mut dir = DirData {
        stream: core::ptr::null_mut(),
        streamfd: -1,
        content: core::ptr::null_mut(),
    };
    // Only through this pointer from here on: a deeper level may close
    // this stream (open_dir_stream) while this frame is live.
    let dirp: *mut DirData = &mut dir;
    let previous_base = w.ftw.base;
    // SAFETY: our buffers and streams; `old_dir` is null or the caller's
    // live frame; the program's callback.
    unsafe {
        let dfdp = if old_dir.is_null() {
            core::ptr::null()
        } else {
            &raw const (*old_dir).streamfd
        };
        let mut result = open_dir_stream(w, dfdp, dirp);
        if result != 0 {
            if sys::errno() == libc::EACCES {
                result = w.call(st, FTW_DNR);
            }
            return result;
        }
        let fail = |w: &mut Walk, result: c_int| {
            let e = sys::errno();
            crate::hooks::closedir((*dirp).stream);
            (*dirp).streamfd = -1;
            sys::set_errno(e);
            w.release_slot();
            result
        };
        if !w.has(FTW_DEPTH) {
            result = w.call(st, FTW_D);
            if result != 0 {
                return fail(w, result);
            }
        }
        if w.has(FTW_CHDIR) && crate::hooks::fchdir(libc::dirfd((*dirp).stream)) < 0 {
            return fail(w, -1);
        }
        w.ftw.level += 1;
        let mut end = libc::strlen(w.dirbuf);
        if *w.dirbuf.add(end - 1) != b'/' as c_char {
            *w.dirbuf.add(end) = b'/' as c_char;
            end += 1;
        }
        w.ftw.base = end as c_int;
        while !(*dirp).stream.is_null() {
            let d = crate::hooks::readdir64((*dirp).stream);
            if d.is_null() {
                break;
            }
            let name = (*d).d_name.as_ptr();
            result = process_entry(w, dirp, name, libc::strlen(name));
            if result != 0 {
                break;
            }
        }
        if !(*dirp).stream.is_null() {
            let e = sys::errno();
            crate::hooks::closedir((*dirp).stream);
            (*dirp).streamfd = -1;
            sys::set_errno(e);
            w.release_slot();
        } else {
            // A deeper level closed the stream: the rest of its names.
            let mut runp = (*dirp).content;
            while result == 0 && *runp != 0 {
                let n = libc::strlen(runp);
                result = process_entry(w, dirp, runp, n);
                runp = runp.add(n + 1);
            }
            let e = sys::errno();
            libc::free((*dirp).content.cast());
            sys::set_errno(e);
        }
        if w.has(FTW_ACTIONRETVAL) && result == FTW_SKIP_SIBLINGS {
            result = 0;
        }
        *w.dirbuf.add(w.ftw.base as usize - 1) = 0;
        w.ftw.level -= 1;
        w.ftw.base = previous_base;
        if result == 0 && w.has(FTW_DEPTH) {
            result = w.call(st, FTW_DP);
        }
        if !old_dir.is_null()
            && w.has(FTW_CHDIR)
            && (result == 0 || (w.has(FTW_ACTIONRETVAL) && result != -1 && result != FTW_STOP))
        {
            let back = !(*old_dir).stream.is_null()
                && crate::hooks::fchdir(libc::dirfd((*old_dir).stream)) == 0;
            if !back {
                let up = if w.ftw.base == 1 { c"/" } else { c".." };
                if crate::hooks::chdir(up.as_ptr()) < 0 {
                    result = -1;
                }
            }
        }
        result
    }
}
