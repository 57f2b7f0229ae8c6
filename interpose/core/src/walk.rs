//! A path resolved as the kernel would resolve it in a worker's view: the
//! shared tree, overlaid by what the worker redirected (its own files,
//! symlinks and removals). One walk for both sides of the audit: the
//! preload library (interpose/src/view.rs, raw system calls, pool buffers)
//! and the seccomp supervisor (runner/src/seccomp, the task's view). Each
//! says what a name is in its view through [`Lookup`]; the walk applies the
//! kernel's rules: components in order, `..` after its parent is seen, a
//! symlink's text spliced in place of the rest (up to 40 links), ENOTDIR
//! below a file, a trailing slash that follows the last symlink.
//!
//! No I/O and no heap: the caller's buffers hold everything.

use crate::namei::Kind;
use crate::path::MAX_ABS;

/// Linux's PATH_MAX: a longer name given to a call is ENAMETOOLONG.
pub const PATH_MAX: usize = 4096;
/// Symlinks followed in one resolution before ELOOP (the kernel's 40).
pub const MAX_LINKS: usize = 40;
/// `scratch` for [`resolve`]: the remaining path, then a link's text.
pub const SCRATCH: usize = MAX_ABS + PATH_MAX;

/// Why a path has no resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// The kernel would fail the call with this errno (ENOENT, ENOTDIR,
    /// ELOOP, EACCES, ENAMETOOLONG).
    Errno(i32),
    /// The starting directory (the cwd, a directory descriptor) has no
    /// usable path: nothing can be said about where the call lands.
    NoStart,
    /// A directory descriptor that is not open, or not a directory (with a
    /// non-empty name): the kernel cannot resolve a relative name against
    /// it, so the call fails however it is made, and which errno comes
    /// first (EBADF, or EINVAL for bad open flags) is the kernel's to say.
    BadDirfd,
    /// A magic link that does not lead to a path (a pipe or socket behind
    /// `/dev/stdout`): only the spelling can be judged.
    NotAPath,
}

/// How the walk goes on at a symlink, once its text is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Walk the first `len` bytes of the link buffer (possibly rewritten);
    /// `moved`: the text now names something other than the kernel would
    /// reach by the link (the call must be given the result).
    Text { len: usize, moved: bool },
    /// The walk ends at the link itself (a descriptor's link to a file
    /// without a name, which the kernel follows to the open file).
    Here,
    /// The kernel fails the call here with this errno.
    Fail(i32),
    /// The link leads to no path.
    NotAPath,
}

/// What a name is in one worker's view.
pub trait Lookup {
    /// The kind of the canonical path `abs` in the view (without following
    /// a final symlink; `Kind::Absent` when there is nothing), and whether
    /// the worker's own file was looked at (a redirect of the worker's).
    fn lstat(&mut self, abs: &[u8]) -> Result<(Kind, bool), i32>;
    /// The text of the symlink `abs` in the view, into `link`; its length.
    fn readlink(&mut self, abs: &[u8], link: &mut [u8]) -> Result<usize, i32>;
    /// Where the link `abs`, which reads `link[..len]`, leads: the text
    /// itself unless the link is a magic one of the program's (a
    /// descriptor, the cwd) that the view follows otherwise. `last`: it is
    /// the path's last component; `slash_follows`: a slash comes after it.
    fn follow(
        &mut self,
        abs: &[u8],
        link: &mut [u8],
        len: usize,
        last: bool,
        slash_follows: bool,
    ) -> Follow {
        let _ = (last, slash_follows);
        if leads_to_no_path(abs, &link[..len]) {
            return Follow::NotAPath;
        }
        Follow::Text { len, moved: false }
    }
    /// Whether the directory `abs` (canonical, a directory of the view)
    /// may be searched, as the kernel's `may_lookup` asks of every
    /// directory a component is looked up in: `Err(EACCES)` when the
    /// mode the view shows denies it. Asked only where the view shows a
    /// directory the kernel would not check itself (the worker's copy
    /// whose mode the worker changed, while the call goes to the shared
    /// directory); `Ok` by default.
    fn search(&mut self, abs: &[u8]) -> Result<(), i32> {
        let _ = abs;
        Ok(())
    }
}

/// Whether the link `abs` reading `text` is a descriptor's magic link to
/// no path: `pipe:[42]`, `socket:[7]`, `anon_inode:[eventfd]`.
pub fn leads_to_no_path(abs: &[u8], text: &[u8]) -> bool {
    abs.starts_with(b"/proc/") && text.first() != Some(&b'/') && text.contains(&b':')
}

/// Resolves `given` (relative to `start`, an absolute canonical directory
/// path, when it is relative) into `out`: every directory component as the
/// worker sees it, the leaf too when `follow_leaf` (open without
/// O_NOFOLLOW, truncate) or a slash follows it. Returns the length and
/// whether the walk went through something only the worker's view has
/// (then the program's own spelling would reach another file: the call
/// must be given the result). `scratch`: [`SCRATCH`] bytes.
pub fn resolve(
    view: &mut dyn Lookup,
    given: &[u8],
    start: Option<&[u8]>,
    follow_leaf: bool,
    out: &mut [u8],
    scratch: &mut [u8],
) -> Result<(usize, bool), Unresolved> {
    use Unresolved::Errno;
    if given.is_empty() {
        return Err(Errno(libc::ENOENT));
    }
    if given.len() >= PATH_MAX {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    if scratch.len() < SCRATCH {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    let (rem, link) = scratch.split_at_mut(MAX_ABS);
    let link = &mut link[..PATH_MAX];
    let mut len = 0usize; // out[..len] is canonical; empty means "/"
    if given[0] != b'/' {
        let s = start.ok_or(Unresolved::NoStart)?;
        if s.first() != Some(&b'/') || s.len() > out.len() {
            return Err(Unresolved::NoStart);
        }
        len = if s == b"/" { 0 } else { s.len() };
        out[..len].copy_from_slice(&s[..len]);
    }
    rem[..given.len()].copy_from_slice(given);
    let (mut pos, mut end) = (0usize, given.len());
    let mut links = 0;
    let mut via_view = false;
    // The length of `out` when it first took in a directory the worker's
    // view has as its own: a `..` back above it leaves a walk the kernel
    // could not make by the spelling (the shared tree may lack that
    // directory), so the result must be given.
    let mut in_own_dir: Option<usize> = None;
    loop {
        while pos < end && rem[pos] == b'/' {
            pos += 1;
        }
        if pos == end {
            break;
        }
        // may_lookup: search permission on the directory every component
        // is looked up in (`.`, `..` and the last one too), before it is.
        let here = if len == 0 { &b"/"[..] } else { &out[..len] };
        view.search(here).map_err(Errno)?;
        let c0 = pos;
        while pos < end && rem[pos] != b'/' {
            pos += 1;
        }
        let comp_len = pos - c0;
        let slash_follows = pos < end;
        let last = rem[pos..end].iter().all(|&b| b == b'/');
        match &rem[c0..pos] {
            b"." => continue,
            b".." => {
                while len > 0 && out[len - 1] != b'/' {
                    len -= 1;
                }
                len = len.saturating_sub(1);
                if in_own_dir.is_some_and(|at| len < at) {
                    via_view = true;
                    in_own_dir = None;
                }
                continue;
            }
            _ => {}
        }
        if comp_len > 255 {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        let cand = len + 1 + comp_len;
        if cand > out.len() {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        out[len] = b'/';
        out[len + 1..cand].copy_from_slice(&rem[c0..pos]);
        if last && !slash_follows && !follow_leaf {
            len = cand;
            break;
        }
        let (kind, from_worker) = view.lstat(&out[..cand]).map_err(Errno)?;
        match kind {
            Kind::Absent if last => {
                len = cand;
                break;
            }
            Kind::Absent => return Err(Errno(libc::ENOENT)),
            Kind::Dir => {
                if from_worker && in_own_dir.is_none() {
                    in_own_dir = Some(cand);
                }
                len = cand;
            }
            Kind::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno(libc::ELOOP));
                }
                via_view |= from_worker;
                let n = view.readlink(&out[..cand], link).map_err(Errno)?;
                if n >= link.len() {
                    return Err(Errno(libc::ENAMETOOLONG));
                }
                let n = match view.follow(&out[..cand], link, n, last, slash_follows) {
                    Follow::Text { len, moved } => {
                        via_view |= moved;
                        len
                    }
                    Follow::Here => {
                        len = cand;
                        break;
                    }
                    Follow::Fail(e) => return Err(Errno(e)),
                    Follow::NotAPath => return Err(Unresolved::NotAPath),
                };
                if n == 0 {
                    return Err(Errno(libc::ENOENT));
                }
                // The rest of the path now follows the link's target.
                let tail = end - pos;
                if n + tail > rem.len() {
                    return Err(Errno(libc::ENAMETOOLONG));
                }
                rem.copy_within(pos..end, n);
                rem[..n].copy_from_slice(&link[..n]);
                pos = 0;
                end = n + tail;
                if link[0] == b'/' {
                    len = 0;
                }
                continue;
            }
            _ if last && !slash_follows => len = cand,
            _ => return Err(Errno(libc::ENOTDIR)),
        }
        if last {
            break;
        }
    }
    if len == 0 {
        *out.first_mut().ok_or(Errno(libc::ENAMETOOLONG))? = b'/';
        len = 1;
    }
    Ok((len, via_view))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A view held in memory: canonical path → what it is (a link with
    /// its text), and which entries are the worker's.
    #[derive(Default)]
    struct Tree {
        nodes: BTreeMap<Vec<u8>, (Kind, Vec<u8>, bool)>,
        /// Directories whose mode (in the view) denies search.
        closed: Vec<Vec<u8>>,
    }

    impl Tree {
        fn dir(mut self, p: &str) -> Self {
            self.nodes.insert(p.into(), (Kind::Dir, Vec::new(), false));
            self
        }
        fn file(mut self, p: &str) -> Self {
            self.nodes
                .insert(p.into(), (Kind::Regular, Vec::new(), false));
            self
        }
        fn link(mut self, p: &str, to: &str, own: bool) -> Self {
            self.nodes.insert(p.into(), (Kind::Symlink, to.into(), own));
            self
        }
        fn own_dir(mut self, p: &str) -> Self {
            self.nodes.insert(p.into(), (Kind::Dir, Vec::new(), true));
            self
        }
        fn closed(mut self, p: &str) -> Self {
            self.closed.push(p.into());
            self
        }
    }

    impl Lookup for Tree {
        fn lstat(&mut self, abs: &[u8]) -> Result<(Kind, bool), i32> {
            Ok(self
                .nodes
                .get(abs)
                .map_or((Kind::Absent, false), |(k, _, own)| (*k, *own)))
        }
        fn readlink(&mut self, abs: &[u8], link: &mut [u8]) -> Result<usize, i32> {
            let (_, text, _) = self.nodes.get(abs).ok_or(libc::ENOENT)?;
            link[..text.len()].copy_from_slice(text);
            Ok(text.len())
        }
        fn search(&mut self, abs: &[u8]) -> Result<(), i32> {
            match self.closed.iter().any(|c| c == abs) {
                true => Err(libc::EACCES),
                false => Ok(()),
            }
        }
    }

    /// may_lookup: every directory a component is looked up in must be
    /// searchable, `.` and `..` and the last component's too; the last
    /// component itself need not be (`stat d` of a mode-0 `d` is ok,
    /// `stat d/.` EACCES; measured as nobody on Linux 6.18).
    #[test]
    fn a_directory_that_denies_search_stops_the_walk_through_it() {
        let mut t = base().own_dir("/j/o").file("/j/o/x").closed("/j/o");
        let denied = Err(Unresolved::Errno(libc::EACCES));
        let path = |r: Result<(String, bool), Unresolved>| r.map(|(p, _)| p);
        assert_eq!(path(run(&mut t, "o", "/j", true)), Ok("/j/o".into()));
        assert_eq!(path(run(&mut t, "o", "/j", false)), Ok("/j/o".into()));
        assert_eq!(path(run(&mut t, "o/", "/j", false)), Ok("/j/o".into()));
        for given in ["o/x", "o/.", "o/..", "o/missing", "/j/o/x"] {
            assert_eq!(run(&mut t, given, "/j", false), denied, "{given}");
        }
        assert_eq!(run(&mut t, ".", "/j/o", false), denied);
        assert_eq!(run(&mut t, "x", "/j/o", false), denied);
        assert_eq!(path(run(&mut t, "d/f", "/j", false)), Ok("/j/d/f".into()));
        // Through a symlink: the directories its text is walked through.
        let mut t = base()
            .link("/j/l", "o/x", false)
            .own_dir("/j/o")
            .closed("/j/o");
        assert_eq!(run(&mut t, "l", "/j", true), denied);
        assert_eq!(path(run(&mut t, "l", "/j", false)), Ok("/j/l".into()));
    }

    fn run(
        t: &mut Tree,
        given: &str,
        start: &str,
        follow: bool,
    ) -> Result<(String, bool), Unresolved> {
        let mut out = vec![0u8; MAX_ABS];
        let mut scratch = vec![0u8; SCRATCH];
        let (n, via) = resolve(
            t,
            given.as_bytes(),
            Some(start.as_bytes()),
            follow,
            &mut out,
            &mut scratch,
        )?;
        Ok((String::from_utf8(out[..n].to_vec()).unwrap(), via))
    }

    fn base() -> Tree {
        Tree::default()
            .dir("/j")
            .dir("/j/d")
            .file("/j/d/f")
            .file("/j/a")
            .dir("/other")
    }

    #[test]
    fn dotdot_is_applied_after_the_parent_is_seen() {
        let mut t = base().link("/j/l", "/other", false);
        assert_eq!(run(&mut t, "d/../a", "/j", false).unwrap().0, "/j/a");
        // `..` of the link's target, not of the link's directory.
        assert_eq!(run(&mut t, "l/../a", "/j", false).unwrap().0, "/a");
        assert_eq!(run(&mut t, "l/../j/a", "/j", false).unwrap().0, "/j/a");
        assert_eq!(
            run(&mut t, "nodir/../a", "/j", false),
            Err(Unresolved::Errno(libc::ENOENT))
        );
        assert_eq!(
            run(&mut t, "a/../a", "/j", false),
            Err(Unresolved::Errno(libc::ENOTDIR))
        );
    }

    #[test]
    fn a_symlink_of_the_workers_in_the_middle_is_followed_and_said() {
        let mut t = base().link("/j/s", "d", true);
        assert_eq!(
            run(&mut t, "s/f", "/j", false).unwrap(),
            ("/j/d/f".into(), true)
        );
        // A shared link: the kernel's own walk reaches the same file.
        let mut t = base().link("/j/s", "d", false);
        assert_eq!(
            run(&mut t, "s/f", "/j", false).unwrap(),
            ("/j/d/f".into(), false)
        );
    }

    #[test]
    fn a_final_symlink_is_followed_only_when_asked_or_before_a_slash() {
        let mut t = base().link("/j/s", "d", true);
        assert_eq!(
            run(&mut t, "s", "/j", false).unwrap(),
            ("/j/s".into(), false)
        );
        assert_eq!(
            run(&mut t, "s/", "/j", false).unwrap(),
            ("/j/d".into(), true)
        );
        assert_eq!(run(&mut t, "s", "/j", true).unwrap(), ("/j/d".into(), true));
        // A link to nothing: the name it leads to, to be created.
        let mut t = base().link("/j/s", "new", true);
        assert_eq!(run(&mut t, "s", "/j", true).unwrap().0, "/j/new");
    }

    #[test]
    fn leaving_a_directory_of_the_workers_by_dotdot_is_said() {
        let mut t = base().own_dir("/j/m");
        assert_eq!(
            run(&mut t, "m/../a", "/j", false).unwrap(),
            ("/j/a".into(), true)
        );
        assert_eq!(
            run(&mut t, "m/x", "/j", false).unwrap(),
            ("/j/m/x".into(), false)
        );
    }

    #[test]
    fn loops_and_long_names_fail_as_the_kernel() {
        let mut t = base().link("/j/x", "y", true).link("/j/y", "x", true);
        assert_eq!(
            run(&mut t, "x", "/j", true),
            Err(Unresolved::Errno(libc::ELOOP))
        );
        assert_eq!(
            run(&mut t, "x/", "/j", false),
            Err(Unresolved::Errno(libc::ELOOP))
        );
        let long = "a".repeat(256);
        assert_eq!(
            run(&mut t, &long, "/j", false),
            Err(Unresolved::Errno(libc::ENAMETOOLONG))
        );
        let too_long = "d/".repeat(PATH_MAX / 2);
        assert_eq!(
            run(&mut t, &too_long, "/j", false),
            Err(Unresolved::Errno(libc::ENAMETOOLONG))
        );
        assert_eq!(
            run(&mut t, "", "/j", false),
            Err(Unresolved::Errno(libc::ENOENT))
        );
    }

    #[test]
    fn a_chain_of_forty_links_resolves_and_forty_one_does_not() {
        let mut t = base();
        for i in 0..41 {
            let next = if i == 40 {
                "/j/a".to_string()
            } else {
                format!("/j/l{}", i + 1)
            };
            t = t.link(&format!("/j/l{i}"), &next, true);
        }
        assert_eq!(run(&mut t, "l1", "/j", true).unwrap().0, "/j/a");
        assert_eq!(
            run(&mut t, "l0", "/j", true),
            Err(Unresolved::Errno(libc::ELOOP))
        );
    }

    #[test]
    fn a_relative_path_without_a_start_is_unresolvable() {
        let mut t = base();
        let mut out = vec![0u8; MAX_ABS];
        let mut scratch = vec![0u8; SCRATCH];
        assert_eq!(
            resolve(&mut t, b"a", None, false, &mut out, &mut scratch),
            Err(Unresolved::NoStart)
        );
        assert_eq!(run(&mut t, "/", "/j", false).unwrap().0, "/");
        assert_eq!(run(&mut t, "/..", "/j", false).unwrap().0, "/");
    }

    #[test]
    fn a_descriptors_link_to_no_path_is_not_a_path() {
        let mut t = base().dir("/proc").dir("/proc/1").dir("/proc/1/fd").link(
            "/proc/1/fd/1",
            "pipe:[42]",
            false,
        );
        assert_eq!(
            run(&mut t, "/proc/1/fd/1", "/", true),
            Err(Unresolved::NotAPath)
        );
    }
}
