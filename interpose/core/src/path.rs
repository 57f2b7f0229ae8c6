//! Lexical path normalisation into caller-provided buffers.
//!
//! "Lexical" means no filesystem access: `.` and empty components vanish,
//! `..` removes the previous component and never climbs above `/`. This is
//! what the event's `abs` field holds and what redirection maps, so the same
//! input always yields the same output whatever the filesystem holds.

/// Largest absolute path the library will build (twice Linux's PATH_MAX, as a
/// relative path can be as long as PATH_MAX on top of a cwd of PATH_MAX).
pub const MAX_ABS: usize = 8192;

/// Normalises `path`, resolved against `base` when relative, into `out`.
/// `base` must be absolute (a cwd or a directory fd's path). Returns the
/// length written, or `None` when the result does not fit or `path` is
/// relative with no base.
pub fn absolutize(path: &[u8], base: Option<&[u8]>, out: &mut [u8]) -> Option<usize> {
    let mut len = 0usize;
    if path.first() != Some(&b'/') {
        let base = base?;
        if base.first() != Some(&b'/') {
            return None;
        }
        len = push_components(base, out, len)?;
    }
    len = push_components(path, out, len)?;
    if len == 0 {
        *out.first_mut()? = b'/';
        len = 1;
    }
    Some(len)
}

/// Appends the components of `path` to the normalised absolute path
/// `out[..len]` (empty meaning `/`), applying `.` and `..`.
fn push_components(path: &[u8], out: &mut [u8], mut len: usize) -> Option<usize> {
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                while len > 0 && out[len - 1] != b'/' {
                    len -= 1;
                }
                len = len.saturating_sub(1);
            }
            _ => {
                if len + 1 + comp.len() > out.len() {
                    return None;
                }
                out[len] = b'/';
                out[len + 1..len + 1 + comp.len()].copy_from_slice(comp);
                len += 1 + comp.len();
            }
        }
    }
    Some(len)
}

/// When the normalised absolute `path` lies strictly inside the normalised
/// absolute `dir`, returns the part below it (without a leading slash).
pub fn strip_dir<'a>(path: &'a [u8], dir: &[u8]) -> Option<&'a [u8]> {
    if dir == b"/" {
        return path.get(1..).filter(|rest| !rest.is_empty());
    }
    let rest = path.strip_prefix(dir)?;
    match rest.split_first() {
        Some((b'/', below)) if !below.is_empty() => Some(below),
        _ => None,
    }
}

/// The last component of a path (the file name), or the whole input.
pub fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abs(p: &str, base: Option<&str>) -> Option<String> {
        let mut out = [0u8; 256];
        let n = absolutize(p.as_bytes(), base.map(str::as_bytes), &mut out)?;
        Some(String::from_utf8(out[..n].to_vec()).unwrap())
    }

    #[test]
    fn normalises_lexically() {
        assert_eq!(abs("/a/./b//c/", None).unwrap(), "/a/b/c");
        assert_eq!(abs("/a/b/../../..", None).unwrap(), "/");
        assert_eq!(abs("x/../y", Some("/job")).unwrap(), "/job/y");
        assert_eq!(abs("../../../../etc", Some("/job/w")).unwrap(), "/etc");
        assert_eq!(abs(".", Some("/")).unwrap(), "/");
        assert_eq!(abs("", Some("/job")).unwrap(), "/job");
        assert_eq!(abs("rel", None), None);
        assert_eq!(abs("rel", Some("not/abs")), None);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut out = [0u8; 8];
        assert_eq!(absolutize(b"/abcdefgh", None, &mut out), None);
        assert_eq!(absolutize(b"/abc", None, &mut out), Some(4));
    }

    #[test]
    fn strips_dir_only_below_it() {
        assert_eq!(strip_dir(b"/job/a/b", b"/job"), Some(&b"a/b"[..]));
        assert_eq!(strip_dir(b"/jobs/a", b"/job"), None);
        assert_eq!(strip_dir(b"/job", b"/job"), None);
        assert_eq!(strip_dir(b"/x", b"/"), Some(&b"x"[..]));
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(b"/usr/lib/libc.so.6"), b"libc.so.6");
        assert_eq!(file_name(b"plain"), b"plain");
    }

    proptest::proptest! {
        #[test]
        fn output_is_normal(p in "[a-z./]{0,40}", base in "(/[a-z.]{0,5}){0,4}") {
            let base = if base.is_empty() { "/".to_string() } else { base };
            let out = abs(&p, Some(&base)).unwrap();
            proptest::prop_assert!(out.starts_with('/'));
            proptest::prop_assert!(out == "/" || !out.ends_with('/'));
            for comp in out.split('/').skip(1) {
                proptest::prop_assert!(comp != "." && comp != ".." && (out == "/" || !comp.is_empty()));
            }
            // Normalising twice changes nothing.
            proptest::prop_assert_eq!(abs(&out, None).unwrap(), out);
        }
    }
}

/// A normalised absolute path that starts with one of the kernel's magic
/// links (`/proc/self/cwd`, `/proc/<pid>/fd/3`, `/dev/fd/3`, `/dev/stdout`,
/// …): the kernel resolves such a link to another path, so a policy that
/// judged the spelling would call `/proc/self/cwd/out.txt` "allowed"
/// (`/proc/**`) while it writes the job's `out.txt`.
///
/// Returns the link to read (NUL-terminated, in `link`) and the length of
/// the prefix it replaces; the rest of `abs` (from that length on) follows
/// the link's target.
pub fn magic_link(abs: &[u8], link: &mut [u8; 64]) -> Option<(usize, usize)> {
    // Never indexes past the end: this runs in hooks, where a panic must not
    // happen (a component that would start past the end ends at the end).
    let component_end = |from: usize| {
        abs.get(from..)
            .and_then(|tail| tail.iter().position(|&b| b == b'/'))
            .map_or(abs.len(), |i| from + i)
    };
    let digits = |s: &[u8]| !s.is_empty() && s.len() <= 20 && s.iter().all(u8::is_ascii_digit);
    let mut put = |parts: &[&[u8]]| -> Option<usize> {
        let mut n = 0;
        for p in parts {
            if n + p.len() >= link.len() {
                return None;
            }
            link[n..n + p.len()].copy_from_slice(p);
            n += p.len();
        }
        link[n] = 0;
        Some(n)
    };
    if let Some(rest) = abs.strip_prefix(b"/dev/") {
        let name_end = component_end(5);
        let name = &rest[..name_end - 5];
        let fd: &[u8] = match name {
            b"stdin" => b"0",
            b"stdout" => b"1",
            b"stderr" => b"2",
            b"fd" => {
                let fd_end = component_end(name_end + 1);
                let fd = abs.get(name_end + 1..fd_end)?;
                if !digits(fd) {
                    return None;
                }
                let n = put(&[b"/proc/self/fd/", fd])?;
                return Some((n, fd_end));
            }
            _ => return None,
        };
        let n = put(&[b"/proc/self/fd/", fd])?;
        return Some((n, name_end));
    }
    let rest = abs.strip_prefix(b"/proc/")?;
    let who_end = 6 + rest.iter().position(|&b| b == b'/')?;
    let who = &abs[6..who_end];
    if !(who == b"self" || who == b"thread-self" || digits(who)) {
        return None;
    }
    let mut what_start = who_end + 1;
    // `/proc/<pid>/task/<tid>/…` holds the same links for one thread.
    if abs.get(what_start..component_end(what_start)) == Some(&b"task"[..]) {
        let tid_start = component_end(what_start) + 1;
        let tid_end = component_end(tid_start);
        if !abs.get(tid_start..tid_end).is_some_and(digits) {
            return None;
        }
        what_start = tid_end + 1;
    }
    let what_end = component_end(what_start);
    let what = abs.get(what_start..what_end)?;
    match what {
        b"cwd" | b"root" | b"exe" => {
            let n = put(&[&abs[..what_end]])?;
            Some((n, what_end))
        }
        b"fd" => {
            let fd_end = component_end(what_end + 1);
            let fd = abs.get(what_end + 1..fd_end)?;
            if !digits(fd) {
                return None;
            }
            let n = put(&[&abs[..fd_end]])?;
            Some((n, fd_end))
        }
        _ => None,
    }
}

/// The descriptor number `abs` names when it is exactly a descriptor's
/// magic link of the process `pid` (`/proc/self/fd/N`,
/// `/proc/thread-self/fd/N`, `/proc/<pid>/fd/N`, and the same below
/// `task/<tid>/`): the kernel follows such a link to the descriptor's open
/// file, whatever its text says (a removed file, an `O_TMPFILE`).
pub fn own_descriptor(abs: &[u8], pid: i32) -> Option<i32> {
    let rest = abs.strip_prefix(b"/proc/")?;
    let mut parts = rest.split(|&b| b == b'/');
    let digits = |s: &[u8]| !s.is_empty() && s.len() <= 10 && s.iter().all(u8::is_ascii_digit);
    let number = |s: &[u8]| -> Option<i64> {
        digits(s).then(|| s.iter().fold(0i64, |v, &c| v * 10 + i64::from(c - b'0')))
    };
    let who = parts.next()?;
    let ours =
        who == b"self" || who == b"thread-self" || (pid > 0 && number(who) == Some(i64::from(pid)));
    if !ours {
        return None;
    }
    let mut what = parts.next()?;
    if what == b"task" && who != b"thread-self" {
        number(parts.next()?)?;
        what = parts.next()?;
    }
    if what != b"fd" {
        return None;
    }
    let fd = number(parts.next()?)?;
    if parts.next().is_some() || fd > i64::from(i32::MAX) {
        return None;
    }
    Some(fd as i32)
}

#[cfg(test)]
mod own_descriptor_tests {
    use super::own_descriptor;

    #[test]
    fn only_this_process_s_descriptor_links_are_descriptors() {
        let fd = |p: &str| own_descriptor(p.as_bytes(), 42);
        assert_eq!(fd("/proc/self/fd/3"), Some(3));
        assert_eq!(fd("/proc/thread-self/fd/0"), Some(0));
        assert_eq!(fd("/proc/42/fd/17"), Some(17));
        assert_eq!(fd("/proc/42/task/43/fd/5"), Some(5));
        assert_eq!(fd("/proc/self/task/43/fd/5"), Some(5));
        assert_eq!(fd("/proc/41/fd/3"), None);
        assert_eq!(fd("/proc/self/fd/3/x"), None);
        assert_eq!(fd("/proc/self/fd/-1"), None);
        assert_eq!(fd("/proc/self/fd"), None);
        assert_eq!(fd("/proc/self/cwd"), None);
        assert_eq!(fd("/proc/self/fd/99999999999"), None);
        assert_eq!(fd("/proc/thread-self/task/1/fd/3"), None);
    }
}

#[cfg(test)]
mod magic_link_tests {
    use super::magic_link;

    fn link(abs: &str) -> Option<(String, String)> {
        let mut buf = [0u8; 64];
        magic_link(abs.as_bytes(), &mut buf).map(|(n, prefix)| {
            (
                String::from_utf8(buf[..n].to_vec()).unwrap(),
                abs[prefix..].to_string(),
            )
        })
    }

    #[test]
    fn proc_and_dev_magic_links_are_found_with_what_follows_them() {
        let l = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(
            link("/proc/self/cwd/out.txt"),
            l("/proc/self/cwd", "/out.txt")
        );
        assert_eq!(link("/proc/self/cwd"), l("/proc/self/cwd", ""));
        assert_eq!(
            link("/proc/thread-self/root/etc/x"),
            l("/proc/thread-self/root", "/etc/x")
        );
        assert_eq!(link("/proc/4242/fd/7"), l("/proc/4242/fd/7", ""));
        assert_eq!(
            link("/proc/self/fd/3/sub/f"),
            l("/proc/self/fd/3", "/sub/f")
        );
        assert_eq!(
            link("/proc/self/task/77/cwd/out.txt"),
            l("/proc/self/task/77/cwd", "/out.txt")
        );
        assert_eq!(
            link("/proc/4242/task/4243/fd/5/x"),
            l("/proc/4242/task/4243/fd/5", "/x")
        );
        assert_eq!(link("/dev/fd/3"), l("/proc/self/fd/3", ""));
        assert_eq!(link("/dev/stdout"), l("/proc/self/fd/1", ""));
        assert_eq!(link("/dev/stderr/x"), l("/proc/self/fd/2", "/x"));
    }

    proptest::proptest! {
        // It runs in hooks: no input may make it panic.
        #[test]
        fn never_panics(tail in proptest::collection::vec(proptest::sample::select(
            b"/0123selfthread-cwdrootexefdstdinoutrxtask".to_vec()), 0..40),
            prefix in proptest::sample::select(vec![&b"/proc/"[..], b"/dev/", b"/dev/fd/", b"/proc/self/fd/", b"/proc/self/task/"])) {
            let mut abs = prefix.to_vec();
            abs.extend_from_slice(&tail);
            let mut buf = [0u8; 64];
            if let Some((n, end)) = magic_link(&abs, &mut buf) {
                proptest::prop_assert!(n < 64 && end <= abs.len());
            }
        }
    }

    #[test]
    fn other_proc_and_dev_paths_are_not_links() {
        for p in [
            "/proc/self/status",
            "/proc/self/fd",
            "/proc/self/fd/x",
            "/proc/self/task",
            "/proc/self/task/77",
            "/proc/self/task/x/cwd",
            "/proc/self/task/77/status",
            "/proc/sys/kernel/x",
            "/proc/cpuinfo",
            "/dev/null",
            "/dev/shm/x",
            "/dev/fd",
            "/dev/fdx/3",
            "/devx/fd/3",
            "/job/proc/self/cwd",
        ] {
            assert_eq!(link(p), None, "{p}");
        }
    }
}
