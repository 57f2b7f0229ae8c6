//! A hard link of a descriptor's file under the supervisor:
//! `linkat(fd, "", newdirfd, new, AT_EMPTY_PATH)`, or the source
//! `/proc/self/fd/N` (`/proc/thread-self/fd/N`, `/dev/fd/N`) with
//! `AT_SYMLINK_FOLLOW`. As the library does (interpose/src/descriptor.rs,
//! `link_of_descriptor`), it is judged and redirected as a link of the
//! path the descriptor's `/proc/<tid>/fd/N` link names: a descriptor of a
//! shared file links the worker's copy (copied up first), never the
//! shared file. A descriptor without a name (an `O_TMPFILE` file, a
//! removed one: its link says ` (deleted)` and it has no links left) is
//! linked as it is, its new name judged and redirected as usual; one whose
//! link says ` (deleted)` but that still has a name elsewhere could be a
//! shared file's: refused under redirect and deny (`EACCES`, fail closed:
//! a new name in scratch would let the worker write it). Not redirected, the
//! call is made on the task's file itself: the supervisor's descriptor of
//! it with `AT_EMPTY_PATH` (so a directory is `EPERM`, a removed file
//! `ENOENT`, as bare). The kernel's own check for `AT_EMPTY_PATH` (the
//! descriptor opened with the caller's credentials, or
//! `CAP_DAC_READ_SEARCH`) is not made: the supervisor only performs calls
//! of tasks with its own credentials.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// The source of a link that names a descriptor's file.
pub struct Source {
    /// The task's descriptor.
    pub fd: i32,
    /// The path its link names; `None`: the file has no name.
    pub path: Option<Vec<u8>>,
    /// The file's link count (0: an `O_TMPFILE` or removed file).
    pub nlink: u64,
    /// The name it had, for a file that lost it (the link's text without
    /// ` (deleted)`).
    pub lost: Option<Vec<u8>>,
    pub ino: u64,
}

/// The descriptor number a source spelled `/proc/self/fd/N`,
/// `/proc/thread-self/fd/N` or `/dev/fd/N` names (nothing after `N`).
fn magic_fd(given: &[u8]) -> Option<i32> {
    let n = [
        &b"/proc/self/fd/"[..],
        b"/proc/thread-self/fd/",
        b"/dev/fd/",
    ]
    .iter()
    .find_map(|p| given.strip_prefix(*p))?;
    if n.is_empty() || n.len() > 9 || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

/// The descriptor source of a `linkat` of task `tid` (`args` its
/// arguments, `given` its source as spelled), if it names one: `Err`
/// with the errno when the descriptor is not open (`EBADF`, as bare).
pub fn source(
    tid: i32,
    op: &str,
    args: &[u64; 6],
    given: Option<&[u8]>,
) -> Option<Result<Source, i32>> {
    if op != "linkat" {
        return None;
    }
    let flags = args[4] as i32;
    let fd = match given? {
        b"" if flags & libc::AT_EMPTY_PATH != 0 => args[0] as i32,
        g if flags & libc::AT_SYMLINK_FOLLOW != 0 => magic_fd(g)?,
        _ => return None,
    };
    let link = if fd == libc::AT_FDCWD {
        format!("/proc/{tid}/cwd")
    } else {
        format!("/proc/{tid}/fd/{fd}")
    };
    let (Ok(text), Ok(m)) = (std::fs::read_link(&link), std::fs::metadata(&link)) else {
        // Spelled as a magic link, a closed descriptor is the /proc
        // lookup's ENOENT.
        return Some(Err(if given == Some(b"") {
            libc::EBADF
        } else {
            libc::ENOENT
        }));
    };
    let text = text.as_os_str().as_bytes().to_vec();
    let named = text.first() == Some(&b'/')
        && (!text.ends_with(b" (deleted)") || super::view::really_named(&text, &m));
    let lost = match named {
        true => None,
        false => text.strip_suffix(b" (deleted)").map(<[u8]>::to_vec),
    };
    Some(Ok(Source {
        fd,
        path: named.then_some(text),
        nlink: m.nlink(),
        lost,
        ino: m.ino(),
    }))
}

/// How a descriptor's file may be linked under redirect or deny.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Linkable {
    /// As it is, also into the worker's directory: a file without a name
    /// and without links, or one of the worker's own directory.
    InPlace,
    /// As the link of its path (a shared file: the worker's copy).
    ByPath,
    /// Never: its link says ` (deleted)` but it has links left, which
    /// may be a shared file's names.
    Never,
}

impl Source {
    /// How the file may be linked, `own_dir` the worker's directory.
    pub fn linkable(&self, own_dir: Option<&[u8]>) -> Linkable {
        match (&self.path, own_dir) {
            (None, _) if self.nlink == 0 => Linkable::InPlace,
            // The names an O_TMPFILE (its name `#<inode>`) or a file of
            // the worker's directory has since are the worker's own (as
            // the library's view.rs `named_by_the_worker`).
            (None, _) if self.named_by_the_worker(own_dir) => Linkable::InPlace,
            (None, _) => Linkable::Never,
            (Some(p), Some(d)) if below(p, d) => Linkable::InPlace,
            (Some(_), _) => Linkable::ByPath,
        }
    }
}

impl Source {
    fn named_by_the_worker(&self, own_dir: Option<&[u8]>) -> bool {
        let Some(lost) = &self.lost else {
            return false;
        };
        if own_dir.is_some_and(|d| below(lost, d)) {
            return true;
        }
        let leaf = &lost[lost.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1)..];
        leaf.strip_prefix(b"#") == Some(self.ino.to_string().as_bytes())
    }
}

/// Whether `path` is below the directory `dir` (or its resolved name).
pub fn below(path: &[u8], dir: &[u8]) -> bool {
    let under = |d: &[u8]| {
        !d.is_empty()
            && path
                .strip_prefix(d)
                .is_some_and(|r| r.first() == Some(&b'/'))
    };
    under(dir)
        || std::fs::canonicalize(std::ffi::OsStr::from_bytes(dir))
            .is_ok_and(|d| under(d.as_os_str().as_bytes()))
}

/// The errno the kernel fails the link with before anything is made
/// (`super::failing::failing_anyway`), for a descriptor source: the link
/// of its path (its own file, neither followed nor empty), or, for a file
/// without a name, the new name's checks alone (those of a symlink's).
pub fn failing_anyway(
    s: &Source,
    at_flags: u64,
    second: Option<super::failing::Named>,
    view: Option<super::failing::View>,
) -> Option<i32> {
    use super::failing::Named;
    let at_flags = at_flags & !((libc::AT_EMPTY_PATH | libc::AT_SYMLINK_FOLLOW) as u64);
    let (op, first) = match &s.path {
        Some(p) => ("linkat", p.as_slice()),
        None => ("symlinkat", &b"-"[..]),
    };
    let first = Named {
        base: None,
        given: Some(first),
        task: None,
    };
    super::failing::failing_anyway(op, -1, at_flags, false, first, second, view)
}
