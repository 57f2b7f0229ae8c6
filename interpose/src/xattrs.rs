//! Extended attributes of a copy-up: the worker's copy of a shared file
//! carries the original's attributes, as `cp -a` does, so that reading,
//! removing or copying them later (`removexattr`, `shutil.copystat`, `ls -l`'s
//! ACL mark) sees what it sees bare (review 2, F9).

use libc::c_int;

/// Copies every extended attribute of `from` onto `to` (both open
/// descriptors), through `names` and `value`. Best effort: a name list
/// longer than `names`, a value longer than `value`, or an attribute the
/// kernel will not let this process set (`trusted.*`, `security.*` without
/// privilege) is left out, as `cp -a` leaves it out.
pub(crate) fn copy_all(to: c_int, from: c_int, names: &mut [u8], value: &mut [u8]) {
    let _errno = crate::sys::ErrnoGuard::save();
    // SAFETY: a descriptor and a writable buffer of that length.
    let n = unsafe { libc::syscall(libc::SYS_flistxattr, from, names.as_mut_ptr(), names.len()) };
    if n <= 0 {
        return;
    }
    let list = &mut names[..n as usize];
    // The kernel ends each name with a NUL; the last one too.
    let mut start = 0;
    while let Some(len) = list[start..].iter().position(|&b| b == 0) {
        let name = list[start..].as_ptr();
        // SAFETY: `name` is a NUL-terminated name in the kernel's list;
        // `value` is writable for its length.
        let k = unsafe {
            libc::syscall(
                libc::SYS_fgetxattr,
                from,
                name,
                value.as_mut_ptr(),
                value.len(),
            )
        };
        if k >= 0 {
            // SAFETY: as above; `k` bytes of `value` were written.
            unsafe { libc::syscall(libc::SYS_fsetxattr, to, name, value.as_ptr(), k as usize, 0) };
        }
        start += len + 1;
    }
}
