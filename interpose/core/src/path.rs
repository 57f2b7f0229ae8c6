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
