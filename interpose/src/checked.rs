//! Reading the program's arguments before the real call without trusting
//! them. Deny, redirect and exec must read a path (or an argv) before libc
//! does; bare libc hands an invalid pointer to the kernel, which fails with
//! EFAULT, where a plain read of ours would fault. So every page such a read
//! touches is first found readable by the kernel (`process_vm_readv` on
//! ourselves, one system call per page), and a call whose arguments are not
//! readable goes to libc untouched, which fails it as bare.
//!
//! Also here: paths the kernel refuses whatever the policy says (too long,
//! empty), which a deny must not turn into EACCES.

use crate::audit::PathArg;
use libc::c_char;

const PAGE: usize = 4096;

/// Pages found readable so far (the last one): consecutive strings of an
/// argv usually share a page, so most need no system call.
#[derive(Default)]
pub struct Pages {
    last: usize,
}

impl Pages {
    /// Whether the byte at `addr` is readable: by the page cache above, or
    /// by asking the kernel. Where `process_vm_readv` is refused (a seccomp
    /// profile that forbids it: EPERM, ENOSYS) every address counts as
    /// readable, as before this check existed.
    pub fn readable(&mut self, addr: usize) -> bool {
        let page = addr & !(PAGE - 1);
        if page == self.last && page != 0 {
            return true;
        }
        if addr < PAGE || unreadable(addr) {
            return false;
        }
        self.last = page;
        true
    }

    /// The C string at `p` as bytes (without the NUL, at most `max`), or
    /// `None` when it is NULL or runs into an unreadable page.
    ///
    /// # Safety
    /// The bytes found readable must stay so, unchanged, for `'a` (the
    /// program does not unmap an argument during the call it passed it to).
    pub unsafe fn c_bytes<'a>(&mut self, p: *const c_char, max: usize) -> Option<&'a [u8]> {
        if p.is_null() {
            return None;
        }
        let mut n = 0;
        while n < max {
            let at = p as usize + n;
            if (n == 0 || at % PAGE == 0) && !self.readable(at) {
                return None;
            }
            // SAFETY: `at` lies in a page just found readable (a byte that
            // does not start a page lies in the page of the byte before).
            if unsafe { *(at as *const u8) } == 0 {
                break;
            }
            n += 1;
        }
        // SAFETY: all `n` bytes were found readable above; the caller keeps
        // them so for `'a`.
        Some(unsafe { core::slice::from_raw_parts(p.cast(), n) })
    }

    /// Whether a NULL-terminated array of C strings (argv, envp) and every
    /// string in it are readable. NULL counts as readable (Linux takes it
    /// as an empty array). At most `max_entries` entries are checked, the
    /// number the library reads itself.
    pub fn string_array(&mut self, array: *const *const c_char, max_entries: usize) -> bool {
        if array.is_null() {
            return true;
        }
        let size = core::mem::size_of::<*const c_char>();
        for i in 0..max_entries {
            let slot = array as usize + i * size;
            if !self.readable(slot) || !self.readable(slot + size - 1) {
                return false;
            }
            // SAFETY: both ends of the slot lie in readable pages.
            let p = unsafe { *(slot as *const *const c_char) };
            if p.is_null() {
                return true;
            }
            // SAFETY: only checked here, not kept.
            if unsafe { self.c_bytes(p, 1 << 20) }.is_none() {
                return false;
            }
        }
        true
    }
}

/// The kernel's word that the byte at `addr` cannot be read (EFAULT).
fn unreadable(addr: usize) -> bool {
    let mut byte = 0u8;
    let local = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: `local` describes our own live byte; `remote` is only read by
    // the kernel, which checks it and fails with EFAULT instead of faulting.
    let r = unsafe {
        libc::syscall(
            libc::SYS_process_vm_readv,
            crate::sys::getpid(),
            &local as *const libc::iovec,
            1usize,
            &remote as *const libc::iovec,
            1usize,
            0usize,
        )
    };
    r != 1 && crate::sys::errno() == libc::EFAULT
}

/// What a policy hook may do with a call before running it.
pub enum Before {
    /// Judge it, then redirect or deny it as the policy says.
    Judge,
    /// A path argument is unreadable: libc fails the call with EFAULT (not
    /// logged, as in log mode).
    Unreadable,
    /// The kernel refuses a path whatever the policy says (longer than
    /// PATH_MAX, a component longer than NAME_MAX, empty): run the call
    /// first, as in log mode, so that it fails as bare and is logged.
    Hopeless,
}

/// Sorts a call before a policy hook reads its paths (errno may change:
/// the caller restores the program's).
pub fn before_judging(path: PathArg, path2: Option<PathArg>) -> Before {
    let mut pages = Pages::default();
    let mut hopeless = false;
    for arg in [Some(path), path2].into_iter().flatten() {
        if arg.path.is_null() {
            continue;
        }
        // SAFETY: only checked here; the path is read again by `assess`.
        match unsafe { pages.c_bytes(arg.path, PATH_MAX + 1) } {
            None => return Before::Unreadable,
            Some(bytes) => hopeless |= kernel_refuses(bytes),
        }
    }
    if hopeless {
        Before::Hopeless
    } else {
        Before::Judge
    }
}

const PATH_MAX: usize = libc::PATH_MAX as usize;
const NAME_MAX: usize = 255;

/// A path no call can reach: ENAMETOOLONG (PATH_MAX with its NUL, or a
/// component past NAME_MAX, which every Linux file system refuses) or
/// ENOENT (empty; with `AT_EMPTY_PATH` the call acts on a descriptor, no
/// path, and is not judged by path either).
fn kernel_refuses(path: &[u8]) -> bool {
    path.is_empty()
        || path.len() >= PATH_MAX
        || path.split(|&b| b == b'/').any(|c| c.len() > NAME_MAX)
}

/// Copies `out.len()` bytes of the program's memory at `addr` into `out`
/// (a struct argument such as bind's address or openat2's `open_how`):
/// false when the kernel says they are unreadable. Where
/// `process_vm_readv` is refused, they are read directly, as before.
pub fn copy_in(addr: usize, out: &mut [u8]) -> bool {
    if out.is_empty() {
        return true;
    }
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: out.len(),
    };
    // SAFETY: `local` is our own writable buffer; the kernel checks
    // `remote` and fails with EFAULT instead of faulting.
    let r = unsafe {
        libc::syscall(
            libc::SYS_process_vm_readv,
            crate::sys::getpid(),
            &local as *const libc::iovec,
            1usize,
            &remote as *const libc::iovec,
            1usize,
            0usize,
        )
    };
    if r == out.len() as libc::c_long {
        return true;
    }
    if r >= 0 || crate::sys::errno() == libc::EFAULT || addr < PAGE {
        return false;
    }
    // SAFETY: the kernel would not say; the program's own argument, which
    // libc requires to be readable for its length.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopeless_paths() {
        assert!(kernel_refuses(b""));
        assert!(kernel_refuses(&[b'a'; 4096]));
        assert!(!kernel_refuses(&[b'a'; 255]));
        assert!(kernel_refuses(&[b'a'; 256]));
        let mut p = b"/job/".to_vec();
        p.extend_from_slice(&[b'x'; 256]);
        p.extend_from_slice(b"/out.txt");
        assert!(kernel_refuses(&p));
        assert!(!kernel_refuses(b"/job/out.txt"));
    }

    #[test]
    fn unreadable_pointers_are_found_without_faulting() {
        let mut pages = Pages::default();
        let good = c"hello";
        // SAFETY: checked reads only.
        unsafe {
            assert_eq!(pages.c_bytes(good.as_ptr(), 100), Some(&b"hello"[..]));
            assert_eq!(pages.c_bytes(16 as *const c_char, 100), None);
            assert_eq!(pages.c_bytes(core::ptr::null(), 100), None);
        }
        // A string running into an unmapped page.
        // SAFETY: a fresh anonymous mapping of two pages, the second made
        // inaccessible; unmapped at the end.
        unsafe {
            let m = libc::mmap(
                core::ptr::null_mut(),
                2 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            assert_ne!(m as *mut libc::c_void, libc::MAP_FAILED);
            core::ptr::write_bytes(m, b'a', PAGE);
            libc::mprotect(m.add(PAGE).cast(), PAGE, libc::PROT_NONE);
            let mut pages = Pages::default();
            assert_eq!(pages.c_bytes(m.cast(), 2 * PAGE), None);
            let argv = [m.add(PAGE - 2) as *const c_char, core::ptr::null()];
            assert!(!Pages::default().string_array(argv.as_ptr(), 16));
            *m.add(PAGE - 1) = 0;
            assert!(Pages::default().string_array(argv.as_ptr(), 16));
            assert!(Pages::default().string_array(core::ptr::null(), 16));
            assert!(!Pages::default().string_array(16 as *const *const c_char, 16));
            libc::munmap(m.cast(), 2 * PAGE);
        }
    }
}
