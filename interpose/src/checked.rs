//! Reading the program's arguments before the real call without trusting
//! them. Deny, redirect and exec must read a path (or an argv) before libc
//! does; bare libc hands an invalid pointer to the kernel, which fails with
//! EFAULT, where a plain read of ours would fault. So every page such a read
//! touches is first found readable by the kernel (a zero-timeout futex wait
//! on a word of it, one system call per page), and a call whose arguments
//! are not readable goes to libc untouched, which fails it as bare.
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
    /// by asking the kernel. Where the kernel will not say (futex refused)
    /// every address counts as readable, as before this check existed.
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

/// The kernel's word that the byte at `addr` cannot be read (EFAULT):
/// `futex(FUTEX_WAIT_PRIVATE)` on the aligned word holding it, with a zero
/// timeout, reads that word (a private futex needs no other lookup) and
/// returns at once: EAGAIN when it differs from the value given, ETIMEDOUT
/// when it is equal, EFAULT when it cannot be read. No side effect, no
/// process id (unlike `process_vm_readv`, which would read the parent's
/// memory with a pid cached before an unseen fork, and costs twice as
/// much). Any other error (a seccomp profile refusing futex) says nothing.
fn unreadable(addr: usize) -> bool {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel only reads the word at the aligned address,
    // checked, and the timespec on our stack.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr & !3,
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            0x5a5a_5a5a_u32,
            &zero as *const libc::timespec,
            0usize,
            0u32,
        )
    };
    r != 0 && crate::sys::errno() == libc::EFAULT
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
    // A link's source may be "" with AT_EMPTY_PATH (an O_TMPFILE named by
    // linkat): the descriptor is the source, and the new name is judged.
    let two_paths = path2.is_some();
    for (i, arg) in [Some(path), path2].into_iter().flatten().enumerate() {
        if arg.path.is_null() {
            continue;
        }
        // SAFETY: only checked here; the path is read again by `assess`.
        match unsafe { pages.c_bytes(arg.path, PATH_MAX + 1) } {
            None => return Before::Unreadable,
            Some([]) if i == 0 && two_paths => {}
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

/// Copies `out.len()` bytes (at most a page) of the program's memory at
/// `addr` into `out` (a struct argument such as bind's address or
/// openat2's `open_how`): false when the kernel says they are unreadable.
pub fn copy_in(addr: usize, out: &mut [u8]) -> bool {
    if out.is_empty() {
        return true;
    }
    debug_assert!(out.len() <= PAGE);
    let mut pages = Pages::default();
    if !pages.readable(addr) || !pages.readable(addr + out.len() - 1) {
        return false;
    }
    // SAFETY: both ends, so (at most a page long) every byte, lie in
    // readable pages.
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
