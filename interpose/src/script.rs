//! A script the worker wrote, run as the kernel would run it from its job
//! path. Exec of the worker's file would give the interpreter that file's
//! path as its script argument (the kernel passes the name exec was given),
//! so `$0`, `__file__` and `$BASH_SOURCE` would name the worker directory,
//! and `cd "$(dirname "$0")"` would leave the job's tree. Instead the
//! library does what `fs/binfmt_script.c` does, with the program's own
//! name: it execs the `#!` line's interpreter with argv `[interpreter,
//! (argument,) name, argv[1..]]`. The interpreter, preloaded, reads the
//! name in the worker's view, which is the worker's file.

use core::ffi::c_char;

use mpaudit_core::path::MAX_ABS;
use mpaudit_core::script::HEADER_SIZE;

use crate::sys;

/// The exec of a script's interpreter: its argv, the `#!` line and room
/// for the interpreter's path in the worker's view, in one anonymous
/// mapping (no heap in a hook).
pub struct ScriptExec {
    map: sys::Mapping,
    argv_len: usize,
    /// The interpreter as the `#!` line names it (NUL-terminated, in the
    /// mapping).
    pub interpreter: *const c_char,
}

impl ScriptExec {
    /// The argv to exec the interpreter with (NULL-terminated).
    pub fn argv(&self) -> *const *const c_char {
        self.map.base() as *const *const c_char
    }

    /// Room for the interpreter's path in the worker's view.
    pub fn program_buf(&mut self) -> &mut [u8] {
        // SAFETY: the mapping holds the argv, then the header, then
        // MAX_ABS + 1 bytes of room (prepare); it is ours until drop.
        unsafe {
            core::slice::from_raw_parts_mut(
                self.map.base().add(self.argv_len + HEADER_SIZE + 1),
                MAX_ABS + 1,
            )
        }
    }
}

/// When `file` (the worker's copy of the program exec runs, a
/// NUL-terminated path) is a script the kernel would run, executable and
/// readable by this process, the exec of its interpreter with `name` (what
/// exec was called with) as the script argument. `None`: exec `file`
/// itself (a binary, no script, a file the kernel refuses: it answers
/// with the errno it would give the job path too).
///
/// # Safety
/// `file` and `name` are NUL-terminated; `argv` is a readable
/// NULL-terminated array (exec_arguments_readable).
pub unsafe fn prepare(
    file: *const c_char,
    name: *const c_char,
    argv: *const *const c_char,
) -> Option<ScriptExec> {
    // SAFETY: the caller's contract.
    let argc = (0..)
        .take_while(|&i| !unsafe { *argv.add(i) }.is_null())
        .count();
    if argc == 0 {
        return None; // the kernel's argv[0] handling differs: left to it
    }
    // The permission exec checks; a directory or special file is refused
    // by the kernel, so is left to it.
    // SAFETY: a NUL-terminated path; the raw call is not hooked.
    let runnable = unsafe { libc::syscall(libc::SYS_faccessat, libc::AT_FDCWD, file, libc::X_OK) };
    if runnable != 0 {
        return None;
    }
    let argv_len = (argc + 3) * core::mem::size_of::<*const c_char>();
    let mut exec = ScriptExec {
        map: sys::Mapping::anonymous(argv_len + HEADER_SIZE + 1 + MAX_ABS + 1)?,
        argv_len,
        interpreter: core::ptr::null(),
    };
    // SAFETY: the header's place in the mapping (above), zeroed by mmap.
    let header =
        unsafe { core::slice::from_raw_parts_mut(exec.map.base().add(argv_len), HEADER_SIZE + 1) };
    if !read_header(file, &mut header[..HEADER_SIZE]) {
        return None;
    }
    let found = mpaudit_core::script::interpreter(&header[..HEADER_SIZE])?;
    // Both end before the header's last byte (the kernel's rule): room
    // for their NULs, and the name's end is a blank before the argument.
    header[found.name.end] = 0;
    let arg = found.arg.map(|a| {
        header[a.end] = 0;
        header[a.start..].as_ptr().cast::<c_char>()
    });
    let interpreter: *const c_char = header[found.name.start..].as_ptr().cast();
    exec.interpreter = interpreter;
    let ptrs = exec.map.base() as *mut *const c_char;
    let mut n = 0;
    let mut push = |p: *const c_char| {
        // SAFETY: room for argc + 3 pointers: the interpreter, its
        // argument, the name, argv[1..argc] and the NULL.
        unsafe { *ptrs.add(n) = p };
        n += 1;
    };
    push(interpreter);
    if let Some(a) = arg {
        push(a);
    }
    push(name);
    for i in 1..argc {
        // SAFETY: i < argc, counted above.
        push(unsafe { *argv.add(i) });
    }
    push(core::ptr::null());
    Some(exec)
}

/// The first bytes of `file` (a regular file) into `out` (zero past what
/// the file holds); false when it cannot be opened or read.
fn read_header(file: *const c_char, out: &mut [u8]) -> bool {
    // SAFETY: a NUL-terminated path (prepare's contract).
    let fd = unsafe { sys::openat(libc::AT_FDCWD, file, libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    let regular = sys::fstat(fd).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
    let mut got = 0;
    while regular && got < out.len() {
        let r = sys::pread(fd, &mut out[got..], got as u64);
        if r < 0 {
            sys::close(fd);
            return false; // a part of the header would be misread
        }
        if r == 0 {
            break;
        }
        got += r as usize;
    }
    sys::close(fd);
    regular && got > 0
}
