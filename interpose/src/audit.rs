//! What every file hook does: resolve the path(s), judge the access against
//! the policy, redirect or deny it if the policy says so, call the real
//! function, and log the event. Hooks (hooks.rs) are one-liners into here.

use crate::guard::HookGuard;
use crate::pool::{self, Block, CwdCopy};
use crate::state::SAVED;
use crate::{log, redirect, stack, state, sys, view};
use libc::{c_char, c_int, c_void};
use mpaudit_core::event::{
    Access, AccessEvent, Attribution, Common, Frame, Judgement, PathPair, ProcessEvent,
};
use mpaudit_core::flags::OpenIntent;
use mpaudit_core::glob::GlobList;
use mpaudit_core::namei::Proceed;
use mpaudit_core::path::{absolutize, MAX_ABS};
use mpaudit_core::policy::{Action, ActionSetting, Policy, Verdict};

/// What a path argument is relative to.
#[derive(Clone, Copy)]
pub struct PathArg {
    pub dirfd: c_int,
    pub path: *const c_char,
}

impl PathArg {
    pub fn cwd(path: *const c_char) -> Self {
        PathArg {
            dirfd: libc::AT_FDCWD,
            path,
        }
    }
}

/// Which of a call's paths it writes (for the policy's verdict).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// The first path (open, unlink, mkdir, truncate, …).
    First,
    /// Both (rename: the source disappears, the destination appears).
    Both,
    /// Only the second (link and symlink create the new name).
    Second,
}

/// A one- or two-path access.
pub struct Call {
    pub op: &'static str,
    pub path: PathArg,
    pub path2: Option<PathArg>,
    pub intent: OpenIntent,
    /// open(2) flags, renameat2(2) flags (with `path2`), or -1 for calls
    /// without flags.
    pub flags: c_int,
    pub writes: Writes,
    /// mkstemp family: the path is a template the call fills in; the value
    /// is the length of the suffix after the `XXXXXX`.
    pub template_suffix: Option<usize>,
    /// unlink, rmdir, remove: the path disappears.
    pub removes: bool,
    /// rename's source and truncate: a redirect must start from the
    /// original's content.
    pub keeps_content: bool,
    /// chmod, chown, utimes: `Some(follows)` (whether the call follows a
    /// symlink in the leaf). A redirect gives the worker its own copy of
    /// the file or directory first (content or directory, mode, owner,
    /// times), which the call then changes.
    pub changes_metadata: Option<bool>,
    /// The `*at` flags of unlinkat and linkat (`AT_REMOVEDIR`,
    /// `AT_SYMLINK_FOLLOW`, `AT_EMPTY_PATH`); 0 for other calls.
    pub at_flags: c_int,
    /// mknod and mkfifo: the `st_mode` the kernel's mknodat gets (the
    /// node's type and permissions, mkfifo's with S_IFIFO as libc adds
    /// it); `None` for other calls (bind's socket is not checked so).
    pub node_mode: Option<u32>,
}

/// A hooked call's return value.
pub trait Outcome: Copy {
    /// The event's `result`.
    fn result(self) -> i64;
    /// The value for a call the policy refused (errno is set separately).
    fn failure() -> Self;
    /// The value for a call that succeeds without reaching libc (a removal of
    /// a path this worker only sees through its redirect table).
    fn success() -> Option<Self>;
}

impl Outcome for c_int {
    fn result(self) -> i64 {
        self as i64
    }
    fn failure() -> Self {
        -1
    }
    fn success() -> Option<Self> {
        Some(0)
    }
}

/// `syscall()`: -1 and errno on failure, like the wrappers.
impl Outcome for libc::c_long {
    fn result(self) -> i64 {
        self
    }
    fn failure() -> Self {
        -1
    }
    fn success() -> Option<Self> {
        Some(0)
    }
}

/// readlink's `ssize_t`.
impl Outcome for isize {
    fn result(self) -> i64 {
        self as i64
    }
    fn failure() -> Self {
        -1
    }
    fn success() -> Option<Self> {
        None
    }
}

/// opendir's stream.
impl Outcome for *mut c_void {
    fn result(self) -> i64 {
        if self.is_null() {
            -1
        } else {
            0
        }
    }
    fn failure() -> Self {
        core::ptr::null_mut()
    }
    fn success() -> Option<Self> {
        None
    }
}

impl Outcome for *mut libc::DIR {
    fn result(self) -> i64 {
        if self.is_null() {
            -1
        } else {
            0
        }
    }
    fn failure() -> Self {
        core::ptr::null_mut()
    }
    fn success() -> Option<Self> {
        None
    }
}

impl Outcome for *mut libc::FILE {
    fn result(self) -> i64 {
        if self.is_null() {
            -1
        } else {
            // SAFETY: a stream the real fopen just returned.
            unsafe { libc::fileno(self) as i64 }
        }
    }
    fn failure() -> Self {
        core::ptr::null_mut()
    }
    fn success() -> Option<Self> {
        None
    }
}

/// Longest path read from the program (Linux refuses longer ones anyway).
const MAX_GIVEN: usize = 8192;

/// Resolves `arg` into `out`: the given bytes and the absolute form. A
/// relative path starts from the cwd (`cwd`, the block's cached copy) or
/// from the directory descriptor's path (read into `base`).
///
/// # Safety
/// `arg.path` is NULL or a path argument as `sys::path_bytes` requires.
unsafe fn resolve<'a>(
    arg: PathArg,
    base: &mut [u8],
    cwd: &mut CwdCopy,
    out: &'a mut [u8],
) -> PathPair<'a> {
    if arg.path.is_null() {
        return PathPair {
            given: None,
            abs: None,
        };
    }
    // SAFETY: the caller's contract, non-NULL checked above.
    let given: &'a [u8] = unsafe { sys::path_bytes(arg.path, MAX_GIVEN) };
    let start: Option<&[u8]> = if given.first() == Some(&b'/') {
        None
    } else if arg.dirfd == libc::AT_FDCWD {
        crate::guard::cwd(cwd)
    } else {
        sys::fd_path(arg.dirfd, base).map(|n| &base[..n])
    };
    let len = absolutize(given, start, out)
        .and_then(|n| follow_magic_link(n, base, out).map(<[u8]>::len))
        .map(|n| state::unalias_job_dir(out, n));
    let out: &'a [u8] = out;
    let abs = len.map(|n| &out[..n]);
    PathPair {
        given: Some(given),
        abs,
    }
}

const _: () = assert!(view::SCRATCH <= crate::pool::WORK_SIZE);

/// How policy mode resolved one path argument (see view.rs): `Ok(true)`
/// when the walk went through the worker's own view, so the program's
/// spelling would reach another file.
pub(crate) type Viewed = Result<bool, view::Unresolved>;

/// [`resolve`] as the kernel would resolve the path in the worker's view
/// (view.rs), for policy mode, where the result decides the call. The
/// pair's `abs` is the resolved path; when the walk fails it is the lexical
/// form (for the event) and the second value says why. `scratch`: view::SCRATCH
/// bytes.
///
/// # Safety
/// As for [`resolve`].
unsafe fn resolve_in_view<'a>(
    arg: PathArg,
    follow_leaf: bool,
    entry: bool,
    base: &mut [u8],
    cwd: &mut CwdCopy,
    out: &'a mut [u8],
    scratch: &mut [u8],
) -> (PathPair<'a>, Viewed) {
    if arg.path.is_null() {
        return (
            PathPair {
                given: None,
                abs: None,
            },
            Ok(false),
        );
    }
    // SAFETY: the caller's contract, non-NULL checked above.
    let given: &'a [u8] = unsafe { sys::path_bytes(arg.path, MAX_GIVEN) };
    let (scratch, spare) = scratch.split_at_mut(view::SCRATCH);
    // Whether the start the view uses is not the kernel's (a directory of
    // the worker's that stands for a job directory): the program's relative
    // spelling would then reach another file (`..` from a directory the
    // worker made leads into the worker's directory, not the job's).
    let mut start_moved = false;
    let start: Option<&[u8]> = if given.first() == Some(&b'/') {
        None
    } else if arg.dirfd == libc::AT_FDCWD {
        crate::guard::cwd_as_job(cwd).map(|(path, moved)| {
            start_moved = moved;
            path
        })
    } else {
        // What the kernel says of a bad or non-directory dirfd first: a
        // deleted file's descriptor still has a path in /proc.
        match sys::fstat(arg.dirfd) {
            None => return bad_dirfd(given, None),
            Some(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {
                // A non-empty name against a file cannot resolve: the
                // kernel's to fail. An empty one (AT_EMPTY_PATH) names
                // the file itself, which the view cannot place.
                let e = given.is_empty().then_some(libc::ENOTDIR);
                return bad_dirfd(given, e);
            }
            Some(_) => sys::fd_path(arg.dirfd, base).map(|n| &base[..n]),
        }
    };
    let start = start.map(|s| {
        let seen = seen_from_job(s, spare);
        start_moved |= seen.as_ptr() != s.as_ptr();
        seen
    });
    // A relative name in a working directory that was removed: the
    // kernel finds nothing there (and makes nothing), but `.` and `..`.
    let first = given.split(|&b| b == b'/').next().unwrap_or(b"");
    if start.is_none()
        && arg.dirfd == libc::AT_FDCWD
        && !given.is_empty()
        && given[0] != b'/'
        && first != b"."
        && first != b".."
        && cwd_removed()
    {
        // SAFETY: as above.
        let lexical = unsafe { resolve(arg, base, cwd, out) };
        return (lexical, Err(view::Unresolved::Errno(libc::ENOENT)));
    }
    // The name a call makes or removes is its parent's entry: a trailing
    // slash does not follow a final symlink there (`rmdir l/` is ENOTDIR,
    // `mkdir l/` EEXIST); the spelling keeps it for the kernel's checks.
    let walked = match entry {
        true => mpaudit_core::namei::without_trailing_slashes(given),
        false => given,
    };
    match view::resolve(walked, start, follow_leaf, out, scratch) {
        Ok((n, via_view)) => (
            PathPair {
                given: Some(given),
                abs: Some(&out[..n]),
            },
            Ok(via_view || start_moved),
        ),
        Err(why) => {
            // SAFETY: as above.
            let lexical = unsafe { resolve(arg, base, cwd, out) };
            let viewed = match why {
                view::Unresolved::NotAPath => Ok(false),
                view::Unresolved::NoStart if lexical.abs.is_some() => Ok(false),
                other => Err(other),
            };
            (lexical, viewed)
        }
    }
}

/// Whether this process's working directory was removed (getcwd's
/// ENOENT, which the kernel checks before the buffer's size).
fn cwd_removed() -> bool {
    let mut buf = [0u8; 2];
    // SAFETY: the kernel writes at most buf.len() bytes.
    let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    r < 0 && sys::errno() == libc::ENOENT
}

/// A starting directory (the cwd, a directory descriptor) that is a
/// directory this redirecting worker redirected is where the worker's view put it
/// (`cd newdir` into a directory it made, an `openat` of one): the path it
/// stands for in the job, unmapped into `spare`, so that what is made
/// there is redirected and recorded like any write in the view.
fn seen_from_job<'s>(start: &'s [u8], spare: &'s mut [u8]) -> &'s [u8] {
    let saved = SAVED.get();
    let worker_dir = saved.worker_dir.as_bytes();
    if saved.action != ActionSetting::Redirect || worker_dir.is_empty() || state::worker().is_none()
    {
        return start;
    }
    // Only a directory the worker's view has as its own (a redirected one):
    // its own files (stdout.log, the manifest) and mirrors stay as they are.
    match mpaudit_core::map::unmap_from_worker(start, saved.job_dir.as_bytes(), worker_dir, spare) {
        Some(n) if redirect::lookup(&spare[..n]).is_some() => &spare[..n],
        _ => start,
    }
}

const _: () = assert!(view::SCRATCH + MAX_ABS <= crate::pool::WORK_SIZE);

fn bad_dirfd(given: &[u8], errno: Option<c_int>) -> (PathPair<'_>, Viewed) {
    (
        PathPair {
            given: Some(given),
            abs: None,
        },
        Err(errno.map_or(view::Unresolved::BadDirfd, view::Unresolved::Errno)),
    )
}

/// `out[..n]` with a leading kernel magic link (`/proc/self/cwd`,
/// `/dev/fd/N`, …) replaced by where it points, normalised again: the path
/// the call really reaches, so `/proc/self/cwd/out.txt` is judged (and
/// redirected) as the job's `out.txt`, not as `/proc/**`. A link that does
/// not lead to a path (a pipe, a socket, an unreadable process) keeps the
/// spelling. `base` is scratch here (the dirfd's path is used by then).
pub(crate) fn follow_magic_link<'a>(
    n: usize,
    base: &mut [u8],
    out: &'a mut [u8],
) -> Option<&'a [u8]> {
    let mut link = [0u8; 64];
    let Some((_, prefix)) = mpaudit_core::path::magic_link(&out[..n], &mut link) else {
        return Some(&out[..n]);
    };
    // SAFETY: `link` is NUL-terminated by magic_link; readlink writes at
    // most base.len() bytes into base.
    let Some(t) = (unsafe { sys::readlink(link.as_ptr().cast(), base) }) else {
        return Some(&out[..n]);
    };
    let rest = n - prefix;
    if base.first() != Some(&b'/') || t + rest > base.len() {
        return Some(&out[..n]);
    }
    base[t..t + rest].copy_from_slice(&out[prefix..n]);
    // The target fitted `base`, so its normal form fits `out` (MAX_ABS).
    let m = absolutize(&base[..t + rest], None, out)?;
    Some(&out[..m])
}

pub(crate) fn common() -> Common {
    crate::process::notice_unseen_fork();
    Common {
        ts: sys::now_ns(),
        pid: state::pid(),
        ppid: state::ppid(),
        tid: crate::guard::tid(),
        worker: state::worker(),
        rank: state::rank(),
        node: state::node(),
    }
}

fn policy() -> Policy<'static> {
    let s = SAVED.get();
    Policy {
        outputs: GlobList::new(s.outputs.as_bytes()),
        components: GlobList::new(s.components.as_bytes()),
        allow: GlobList::new(s.allow.as_bytes()),
        action: s.action,
        job_dir: s.job_dir.as_bytes(),
        own_dir: if s.workers_dir_sound {
            s.worker_dir.as_bytes()
        } else {
            b""
        },
        workers_dir: if s.workers_dir_sound {
            s.workers_dir.as_bytes()
        } else {
            b""
        },
        log_dir: s.log_dir.as_bytes(),
    }
}

/// Scratch space and devices, always allowed (see [`Policy::is_scratch`]).
fn is_scratch(abs: &[u8]) -> bool {
    policy().is_scratch(abs, SAVED.get().tmpdir.as_bytes())
}

/// The verdicts on a write: the worst over the paths it judges, and each
/// path's own (`Read` for a path the call does not judge). A hard link is
/// judged by its source too: it gives the source a second name through
/// which it can be written (docs/policy.md, "Hard links").
fn verdicts(
    call: &Call,
    path: &PathPair,
    path2: Option<&PathPair>,
    st: Option<&stack::Stack>,
) -> [Verdict; 3] {
    if !call.intent.is_write() {
        return [Verdict::Read; 3];
    }
    let p = policy();
    let registered = st.is_some_and(|st| {
        (0..st.n).any(|i| p.component_matches(st.frames[i].object.unwrap_or(b""), st.symbol(i)))
    });
    let judge = |pp: &PathPair| match pp.abs {
        Some(abs) if is_scratch(abs) => Verdict::Allowed,
        Some(abs) => p.verdict(true, abs, redirect::is_declared(abs), registered),
        None => Verdict::Allowed, // nothing a path-based policy can say
    };
    let first = if call.writes != Writes::Second || is_hard_link(call) {
        judge(path)
    } else {
        Verdict::Read
    };
    let second = match (path2, call.writes != Writes::First) {
        (Some(p2), true) => judge(p2),
        _ => Verdict::Read,
    };
    let worst = first.worse(second);
    if worst == Verdict::Read {
        [Verdict::Allowed, first, second]
    } else {
        [worst, first, second]
    }
}

/// An access resolved and judged: its paths, its caller's stack (writes
/// only) and the policy's verdict. Both policy modes start from this.
struct Assessed<'a> {
    path: PathPair<'a>,
    path2: Option<PathPair<'a>>,
    /// Policy mode: how each path resolved in the worker's view.
    viewed: Viewed,
    viewed2: Viewed,
    stack: Option<&'a stack::Stack>,
    verdict: Verdict,
    /// Each path's own verdict ([`verdicts`]).
    verdict1: Verdict,
    verdict2: Verdict,
}

/// open family: one path and open(2) flags.
fn is_open(call: &Call) -> bool {
    call.flags >= 0 && call.path2.is_none()
}

/// symlink's first "path" is the link's content, never resolved.
fn is_symlink(call: &Call) -> bool {
    call.op.starts_with("symlink")
}

/// link and linkat: a second name for an existing file.
fn is_hard_link(call: &Call) -> bool {
    call.op.starts_with("link")
}

/// mkdir and mkdirat: the directory is made in the worker's view (its
/// own directory, parents mirrored), failing with EEXIST when the view has
/// the name.
fn is_mkdir(call: &Call) -> bool {
    call.op.starts_with("mkdir")
}

/// Whether the kernel follows a symlink in the call's (first) leaf: open
/// without O_NOFOLLOW (O_CREAT|O_EXCL does not follow either), truncate.
fn follows_leaf(call: &Call) -> bool {
    if let Some(follows) = call.changes_metadata {
        return follows;
    }
    // linkat's AT_SYMLINK_FOLLOW links what the source leads to (a
    // descriptor's /proc/self/fd/N: its file).
    if is_hard_link(call) {
        return call.at_flags & libc::AT_SYMLINK_FOLLOW != 0;
    }
    if is_open(call) {
        let excl = libc::O_CREAT | libc::O_EXCL;
        call.flags & libc::O_NOFOLLOW == 0 && call.flags & excl != excl
    } else {
        call.path2.is_none() && call.intent.truncate
    }
}

/// # Safety
/// The call's paths are NULL or readable C strings.
#[allow(clippy::too_many_arguments)]
unsafe fn assess<'a>(
    call: &Call,
    raw_stack: Option<&stack::RawStack>,
    base: &mut [u8],
    cwd: &mut CwdCopy,
    abs: &'a mut [u8],
    abs2: &'a mut [u8],
    object_name: &mut [u8],
    view_scratch: Option<&mut [u8]>,
    stack_out: &'a mut stack::Stack,
) -> Assessed<'a> {
    let (path, path2, viewed, viewed2) = match view_scratch {
        Some(scratch) => {
            let (path, viewed) = if is_symlink(call) {
                // SAFETY: `call.path` is NULL or a readable C string (this
                // function's contract), which is all the resolvers need.
                (unsafe { resolve(call.path, base, cwd, abs) }, Ok(false))
            } else {
                // SAFETY: as above.
                unsafe {
                    resolve_in_view(
                        call.path,
                        follows_leaf(call),
                        mpaudit_core::namei::names_an_entry(call.op, false),
                        base,
                        cwd,
                        abs,
                        scratch,
                    )
                }
            };
            let (path2, viewed2) = match call.path2 {
                Some(p) => {
                    let entry = mpaudit_core::namei::names_an_entry(call.op, true);
                    // SAFETY: the contract covers the second path too.
                    let (pp, v) =
                        unsafe { resolve_in_view(p, false, entry, base, cwd, abs2, scratch) };
                    (Some(pp), v)
                }
                None => (None, Ok(false)),
            };
            (path, path2, viewed, viewed2)
        }
        None => {
            // SAFETY: as above.
            let path = unsafe { resolve(call.path, base, cwd, abs) };
            let path2 = call.path2.map(|p| {
                // SAFETY: the contract covers the second path too: NULL or the
                // readable C string the program passed (rename's target, link's
                // new name, ...).
                unsafe { resolve(p, base, cwd, abs2) }
            });
            (path, path2, Ok(false), Ok(false))
        }
    };
    // The frames' object names may need the cwd and room to make them
    // absolute.
    let mut names = stack::NameScratch {
        cwd,
        abs: object_name,
    };
    let stack = raw_stack.map(|raw| stack::symbolise_stack(raw, &mut names, stack_out));
    let [verdict, verdict1, verdict2] = verdicts(call, &path, path2.as_ref(), stack);
    Assessed {
        path,
        path2,
        viewed,
        viewed2,
        stack,
        verdict,
        verdict1,
        verdict2,
    }
}

/// Runs `real` on the program's paths, or on redirected ones, or not at all
/// (deny), and logs the access. `real` receives the path pointers to use.
///
/// Inlined into each hook so that a write's stack walk starts in the hook's
/// frame (see `stack::capture_raw`). `caller` is the hook's return address.
///
/// # Safety
/// The path arguments are what the program passed to the hooked function.
#[inline(always)]
pub unsafe fn file_access<R: Outcome>(
    caller: usize,
    call: Call,
    real: impl FnOnce(*const c_char, *const c_char) -> R,
) -> R {
    let p1 = call.path.path;
    let p2 = call.path2.map_or(core::ptr::null(), |p| p.path);
    if !state::ready() {
        return real(p1, p2);
    }
    let saved = SAVED.get();
    let is_write = call.intent.is_write();
    let in_worker = state::worker().is_some();
    // The fork-mode root reads in its workers' view (redirect.rs,
    // `root_lookup`); its writes are never acted on there.
    let may_act = redirect::any_redirected()
        || (!is_write && redirect::any_in_view())
        || (is_write
            && (saved.action == ActionSetting::Deny
                || (saved.action == ActionSetting::Redirect && in_worker)));
    if !may_act && !is_write && !log::enabled() {
        return real(p1, p2);
    }
    let Some(_guard) = HookGuard::enter() else {
        // A hook entered while this thread is inside one (a signal handler
        // that writes, review 3): it cannot be judged here (the interrupted
        // hook may be midway through the table or the log). A write that
        // may have to be redirected or denied must not reach the shared
        // file in place: it fails closed, and is counted among the exit
        // event's dropped ones (the audit is incomplete).
        if must_be_judged(is_write, saved.action, in_worker) {
            return unjudged();
        }
        return pass_through(real, p1, p2);
    };
    // Whatever we do before the real call (a failed lookup, a mkdir of a
    // redirect's parents) must not leave its errno behind: the program sees
    // exactly what libc leaves, over the errno it had.
    let entry_errno = sys::ErrnoGuard::save();
    // The walk first: libgcc interprets this function's unwind program up
    // to the call, so the earlier the call, the cheaper the walk.
    let raw_stack = if is_write {
        Some(stack::capture_raw(caller))
    } else {
        None
    };
    let raw_stack = raw_stack.as_ref();
    let Some(mut claimed) = pool::claim() else {
        // No buffers (an address-space cap): the same as a nested hook
        // (review 3: passed through, a worker's write made shared files).
        if must_be_judged(is_write, saved.action, in_worker) {
            core::mem::forget(entry_errno);
            return unjudged();
        }
        drop(entry_errno);
        return pass_through(real, p1, p2);
    };
    let b = claimed.block();
    if may_act {
        // The paths are read before the call: not if they are unreadable
        // (libc fails the call with EFAULT), nor judged if the kernel
        // refuses them anyway (it fails as bare, and is logged).
        match crate::checked::before_judging(call.path, call.path2) {
            crate::checked::Before::Judge => {}
            crate::checked::Before::Unreadable => {
                drop(entry_errno);
                return pass_through(real, p1, p2);
            }
            crate::checked::Before::Hopeless => {
                drop(entry_errno);
                // SAFETY: as for access().
                return unsafe { call_then_judge(&call, raw_stack, b, real) };
            }
        }
        // SAFETY: as for access().
        unsafe { judge_then_call(&call, raw_stack, b, entry_errno, real) }
    } else {
        drop(entry_errno);
        // SAFETY: as for access().
        unsafe { call_then_judge(&call, raw_stack, b, real) }
    }
}

/// A write that deny, or a worker's redirect, may have to act on: one the
/// library cannot judge (a nested hook, no buffers) must not pass through
/// to the shared file.
pub(crate) fn must_be_judged(is_write: bool, action: ActionSetting, in_worker: bool) -> bool {
    is_write && (action == ActionSetting::Deny || (action == ActionSetting::Redirect && in_worker))
}

/// Fails a write that could not be judged (must_be_judged) with EACCES,
/// counted among the exit event's dropped calls (the audit is incomplete).
#[cold]
#[inline(never)]
pub(crate) fn unjudged<R: Outcome>() -> R {
    pool::count_unaudited();
    sys::set_errno(libc::EACCES);
    R::failure()
}

/// The rare unaudited paths (a nested hook, no block). Cold and out of
/// line: the layout then keeps their epilogues after the stack walk's call,
/// so libgcc interprets fewer of the hook's unwind rows (~400 instructions
/// a write).
#[cold]
#[inline(never)]
fn pass_through<R>(
    real: impl FnOnce(*const c_char, *const c_char) -> R,
    p1: *const c_char,
    p2: *const c_char,
) -> R {
    real(p1, p2)
}

/// Log mode: the call runs first, untouched; paths are read afterwards only
/// if the kernel could read them (a bad pointer fails with EFAULT, exactly as
/// without us, and is not logged).
#[inline(never)]
unsafe fn call_then_judge<R: Outcome>(
    call: &Call,
    raw_stack: Option<&stack::RawStack>,
    b: &mut Block,
    real: impl FnOnce(*const c_char, *const c_char) -> R,
) -> R {
    let p1 = call.path.path;
    let p2 = call.path2.map_or(core::ptr::null(), |p| p.path);
    if call.intent.is_write() && redirect::root_view_active() {
        root_takes(call, b);
    }
    let r = real(p1, p2);
    let saved_errno = sys::ErrnoGuard::save();
    let result = r.result();
    let errno = if result < 0 { saved_errno.value() } else { 0 };
    if errno == libc::EFAULT {
        return r;
    }
    let _ = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
        let Block {
            base,
            abs,
            abs2,
            cwd,
            work,
            target,
            stack,
            ..
        } = b;
        // SAFETY: the paths are the program's arguments, which the hooked
        // function requires to be NULL or C strings; EFAULT, the kernel's
        // proof that one was unreadable, returned above.
        let a = unsafe { assess(call, raw_stack, base, cwd, abs, abs2, target, None, stack) };
        if call.intent.is_write() {
            // The fork-mode root's own writes: read back in place.
            for p in [a.path.abs, a.path2.as_ref().and_then(|p| p.abs)]
                .into_iter()
                .flatten()
            {
                redirect::root_wrote(p);
            }
        }
        // Deny and redirect were handled before the call; here only logging.
        let action = match policy().action_for(a.verdict, false) {
            Action::Redirected | Action::Denied => Action::Logged,
            other => other,
        };
        finish(call, &a, action, None, result, errno, work);
    }));
    r
}

/// The fork-mode root, before a write in place: what its view reads from
/// a worker at the names the call writes is put in place first
/// (redirect::root_take), so that the call changes the file the root
/// saw. Not for unreadable paths (the call fails with EFAULT) nor a
/// symlink's contents. Keeps errno.
#[cold]
#[inline(never)]
fn root_takes(call: &Call, b: &mut Block) {
    let _errno = sys::ErrnoGuard::save();
    if !matches!(
        crate::checked::before_judging(call.path, call.path2),
        crate::checked::Before::Judge
    ) {
        return;
    }
    let _ = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
        let Block {
            base,
            abs,
            abs2,
            cwd,
            work,
            ..
        } = b;
        if !is_symlink(call) {
            // SAFETY: a readable C string or NULL (before_judging).
            if let Some(a) = unsafe { resolve(call.path, base, cwd, abs) }.abs {
                redirect::root_take(a, work);
            }
        }
        if let Some(p) = call.path2 {
            // SAFETY: as above.
            if let Some(a) = unsafe { resolve(p, base, cwd, abs2) }.abs {
                redirect::root_take(a, work);
            }
        }
    }));
}

/// Policy mode: decide before the call, because the call itself changes.
/// `entry_errno` holds the program's errno from before the hook: it is put
/// back before the real call (and the call's own errno kept after it).
#[inline(never)]
unsafe fn judge_then_call<R: Outcome>(
    call: &Call,
    raw_stack: Option<&stack::RawStack>,
    b: &mut Block,
    entry_errno: sys::ErrnoGuard,
    real: impl FnOnce(*const c_char, *const c_char) -> R,
) -> R {
    let Block {
        base,
        abs,
        abs2,
        target,
        target2,
        work,
        cwd,
        stack,
    } = b;
    // SAFETY: paths are the program's C strings (NULL is handled).
    let a = unsafe {
        assess(
            call,
            raw_stack,
            base,
            cwd,
            abs,
            abs2,
            target,
            Some(work),
            stack,
        )
    };
    let truncated = a.stack.as_ref().is_some_and(|st| st.truncated);
    let in_worker = state::worker().is_some();
    let mut action = policy().action_for_stack(a.verdict, in_worker, truncated);
    let is_write = call.intent.is_write();

    // A write whose destination cannot be known is refused, never let
    // through to land in place (docs/policy.md, "Unresolvable paths").
    let no_start = |v: &Viewed, p: Option<&PathPair>| {
        *v == Err(view::Unresolved::NoStart) && p.is_some_and(|p| p.given.is_some())
    };
    let unresolvable = is_write
        && ((call.writes != Writes::Second && no_start(&a.viewed, Some(&a.path)))
            || (call.writes != Writes::First && no_start(&a.viewed2, a.path2.as_ref())));
    if unresolvable {
        if let Some(refused) = refusal_of_unresolvable(SAVED.get().action, in_worker) {
            return refuse(call, &a, refused, libc::EACCES, entry_errno, work);
        }
    }

    // The kernel resolves a rename's or link's first name before it looks
    // at the second's descriptor: a first name the worker's view fails
    // fails the call so (a link's source must also exist).
    if a.viewed2 == Err(view::Unresolved::BadDirfd)
        && is_write
        && !is_symlink(call)
        && a.path.given.is_some_and(|g| !g.is_empty())
    {
        // A rename looks up only the first name's parent before the second's
        // descriptor (do_renameat2: both parents, then the old entry): a
        // missing last component of the first name comes after EBADF.
        // (The lexical parent says nothing of a spelling with `..`: its
        // walk failed on the way, before its last component.)
        let dotdot = a
            .path
            .given
            .is_some_and(|g| g.split(|&b| b == b'/').any(|c| c == b".."));
        let mut first_parent_is_a_dir = || {
            !dotdot
                && a.path.abs.is_some_and(|p| {
                    // In the worker's view: a directory the worker removed is
                    // none, though the shared one is still there.
                    let parent = &p[..p.iter().rposition(|&b| b == b'/').unwrap_or(0).max(1)];
                    // SAFETY: all-zero is a valid libc::stat (plain integers).
                    let mut st: libc::stat = unsafe { core::mem::zeroed() };
                    view::view_lstat(parent, &mut work[..view::PATH_MAX + 1], &mut st)
                        .is_ok_and(|(found, _)| found)
                        && st.st_mode & libc::S_IFMT == libc::S_IFDIR
                })
        };
        let first = match a.viewed {
            Err(view::Unresolved::Errno(libc::ENOENT))
                if call.writes != Writes::Second && first_parent_is_a_dir() =>
            {
                0
            }
            Err(view::Unresolved::Errno(e)) => e,
            Ok(_)
                if call.writes == Writes::Second
                    && a.path.abs.is_some_and(|p| !exists_in_view(p, work)) =>
            {
                libc::ENOENT
            }
            _ => 0,
        };
        if first != 0 {
            return refuse(call, &a, Action::Logged, first, entry_errno, work);
        }
    }
    // A relative name against a descriptor that is not open reaches no
    // file: the kernel fails the call as it would without us.
    if a.viewed == Err(view::Unresolved::BadDirfd) || a.viewed2 == Err(view::Unresolved::BadDirfd) {
        // A first name found in the view is given as the view has it (the
        // worker's copy, or the shared path), so that the kernel gets past
        // it to the bad descriptor as it would in place.
        let mut p1 = call.path.path;
        if a.viewed.is_ok() && a.viewed2 == Err(view::Unresolved::BadDirfd) && !is_symlink(call) {
            if let Some(abs) = a.path.abs {
                let (own, buf) = work.split_at_mut(MAX_ABS + 1);
                // A name the view has not, in a directory only the view has
                // (one the worker made): that directory's target, so that
                // the kernel finds the parent as bare would.
                let cut = abs.iter().rposition(|&b| b == b'/').unwrap_or(0);
                let in_own_parent = |own: &mut [u8], buf: &mut [u8]| {
                    let t = redirect::lookup(&abs[..cut]).filter(|_| cut > 0)?;
                    // Not a shared directory the worker has a copy of.
                    if !matches!(view::lstat(&abs[..cut], buf), Ok(None)) {
                        return None;
                    }
                    let n = t.len() + abs.len() - cut;
                    (n < own.len()).then(|| {
                        own[..t.len()].copy_from_slice(t);
                        own[t.len()..n].copy_from_slice(&abs[cut..]);
                        n
                    })
                };
                let reached = match view::in_worker_dir(abs, own, buf) {
                    Some(n) => &own[..n],
                    None => match redirect::lookup(abs) {
                        Some(t) => t,
                        None => match in_own_parent(own, buf) {
                            Some(n) => &own[..n],
                            None => abs,
                        },
                    },
                };
                if reached.len() < view::PATH_MAX {
                    if let Some(p) = sys::c_path(reached, target) {
                        p1 = p;
                    }
                }
            }
        }
        drop(entry_errno);
        let r = real(p1, call.path2.map_or(core::ptr::null(), |p| p.path));
        let saved_errno = sys::ErrnoGuard::save();
        let result = r.result();
        let errno = if result < 0 { saved_errno.value() } else { 0 };
        let _ = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
            finish(call, &a, Action::Logged, None, result, errno, work)
        }));
        return r;
    }

    // The kernel, resolving the path in the worker's view, would fail the
    // call: a write fails so without reaching it (the shared tree may
    // differ from the view: a directory the worker removed is still there).
    // A read goes to the kernel as the program spelled it.
    let view_errno = |v: &Viewed| match v {
        Err(view::Unresolved::Errno(e)) => *e,
        _ => 0,
    };
    // Only the paths the call writes, and link's source, which the kernel
    // looks up first (but `linkat` with AT_EMPTY_PATH and "" names a
    // descriptor: the kernel's to judge).
    let written = |v: &Viewed, w: bool| if w { view_errno(v) } else { 0 };
    let is_link = call.writes == Writes::Second && !is_symlink(call);
    let link_source = is_link && a.path.given.is_some_and(|g| !g.is_empty());
    // An empty source name without AT_EMPTY_PATH: the kernel fails the
    // call (ENOENT) before it looks at any descriptor or the new name.
    let empty_source =
        is_link && a.path.given == Some(b"") && call.at_flags & libc::AT_EMPTY_PATH == 0;
    let first_errno = match written(&a.viewed, call.writes != Writes::Second || link_source) {
        _ if empty_source => libc::ENOENT,
        // The source must exist before the new name is looked at.
        0 if link_source && a.path.abs.is_some_and(|p| !exists_in_view(p, work)) => libc::ENOENT,
        e => e,
    };
    let failed_in_view = match (
        first_errno,
        written(&a.viewed2, call.writes != Writes::First),
    ) {
        (0, e) | (e, _) => e,
    };
    let failed_in_view = match failed_in_view {
        0 => 0,
        e => invalid_open_flags(call)
            .or_else(|| made_over_a_slash(call, &a, e, first_errno == 0, work))
            .unwrap_or(e),
    };
    if failed_in_view != 0 {
        // mknod checks the node's type before it resolves the name.
        if let Some(Err(e)) = call.node_mode.map(mpaudit_core::namei::may_mknod) {
            return refuse(call, &a, Action::Logged, e, entry_errno, work);
        }
        // A read through the view fails as the view says when the walk
        // cannot go on (a shared link to a file the worker made is no
        // directory); anything else is the kernel's to say.
        // (EACCES: a directory whose copy's mode denies search, which the
        // shared spelling would walk through.)
        let view_says = matches!(
            failed_in_view,
            libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EACCES
        );
        if is_write || view_says {
            return refuse(call, &a, Action::Logged, failed_in_view, entry_errno, work);
        }
        // A read the worker's own entries make fail (a removed directory, a
        // file put in place of one): the spelled path would reach the
        // shared entry the view hides.
        if hidden_by_view(failed_in_view) && a.path.given.is_some_and(|g| !g.is_empty()) {
            return refuse(call, &a, Action::Logged, failed_in_view, entry_errno, work);
        }
        drop(entry_errno);
        return pass_through(
            real,
            call.path.path,
            call.path2.map_or(core::ptr::null(), |p| p.path),
        );
    }

    // A refused call the kernel would fail anyway writes nothing: it fails
    // with the kernel's errno, as bare (an attempt, not a denied write;
    // review 2, F20: `rm -f missing` is ENOENT). EACCES only for a call
    // that would succeed, or when that cannot be said (fail closed).
    if action == Action::Denied {
        return match failing_anyway(call, &a, work) {
            Some(e) => refuse(call, &a, Action::Logged, e, entry_errno, work),
            None => refuse(call, &a, action, libc::EACCES, entry_errno, work),
        };
    }

    // What the kernel would answer in the worker's view (precheck.rs): the
    // worker paths a redirected call reaches lack the shared entries it
    // collides with. A call that would fail there fails so, leaving no
    // trace; a rename onto the same file succeeds without a call.
    let routed = |v: &Viewed, p: Option<&PathPair>| {
        *v == Ok(true)
            || p.and_then(|p| p.abs)
                .is_some_and(|p| redirect::lookup(p).is_some())
    };
    if is_write
        && (action == Action::Redirected
            || routed(&a.viewed, Some(&a.path))
            || routed(&a.viewed2, a.path2.as_ref()))
    {
        match crate::precheck::op_of(call).and_then(|op| precheck(call, &a, op, work)) {
            Some(Err(e)) => {
                // The kernel refuses bad open flags before it looks at the name.
                let e = invalid_open_flags(call).unwrap_or(e);
                return refuse(call, &a, Action::Logged, e, entry_errno, work);
            }
            Some(Ok(Proceed::Nothing)) => {
                if let Some(ok) = R::success() {
                    finish(call, &a, action, None, 0, 0, work);
                    return ok; // entry_errno restores the program's errno
                }
            }
            _ => {}
        }
    }

    // Where each path goes: its earlier redirect in this worker, a new
    // redirect (when this call writes it), or nowhere (the original).
    let redirect_new = action == Action::Redirected;
    let (mut route1, mut route2, mut failed) =
        routes(call, &a, redirect_new, target, target2, work);
    if failed != 0 {
        failed = invalid_open_flags(call).unwrap_or(failed);
    }
    if route1.is_some() || route2.is_some() {
        action = Action::Redirected;
    }
    let shown_is_first = route1.is_some();
    let shown_len = route1.or(route2).map(|r| r.len);
    macro_rules! shown_target {
        () => {
            shown_len.map(|n| {
                if shown_is_first {
                    &target[..n]
                } else {
                    &target2[..n]
                }
            })
        };
    }

    // The names the call is given: a worker target through its parent's
    // descriptor (call_path), a path resolved through the worker's view
    // as resolved, else the program's own.
    let (mut p1, mut p2, mut held) = call_names(
        call,
        &a,
        route1,
        route2,
        base,
        target,
        target2,
        &mut failed,
        None,
    );
    let release = |held: [c_int; 2]| {
        for fd in held.into_iter().filter(|&fd| fd >= 0) {
            sys::close(fd);
        }
    };
    let close_parents = |routes: [Option<Route>; 2]| {
        for r in routes.into_iter().flatten() {
            if r.parent >= 0 {
                sys::close(r.parent);
            }
        }
    };
    close_parents([route1, route2]);
    // No descriptor left for the routing (the program filled its table,
    // review 3): once more with the soft limit raised a little, the held
    // descriptors above the program's limit, which is back before the
    // call, so the call finds the table as bare.
    if failed == libc::EMFILE {
        if let Some(room) = FdRoom::raise() {
            release(held);
            unseed(route1, target);
            unseed(route2, target2);
            (route1, route2, failed) = routes(call, &a, redirect_new, target, target2, work);
            (p1, p2, held) = call_names(
                call,
                &a,
                route1,
                route2,
                base,
                target,
                target2,
                &mut failed,
                Some(room.limit()),
            );
            close_parents([route1, route2]);
            drop(room);
        }
    }

    if failed != 0 {
        release(held);
        unseed(route1, target);
        unseed(route2, target2);
        finish(
            call,
            &a,
            Action::RedirectFailed,
            shown_target!(),
            -1,
            failed,
            work,
        );
        core::mem::forget(entry_errno);
        sys::set_errno(failed);
        return R::failure();
    }

    // A write that goes in place (declared, allowed) into a directory
    // only the worker's view has: the directory is made in place first.
    if is_write {
        if let (None, Some(p), true) = (route1, a.path.abs, call.writes != Writes::Second) {
            redirect::make_shared_parents(p, work);
        }
        let abs2 = a.path2.as_ref().and_then(|p| p.abs);
        if let (None, Some(p), true) = (route2, abs2, call.writes != Writes::First) {
            redirect::make_shared_parents(p, work);
        }
    }

    // A removal of a path this worker redirected but never wrote (the
    // original exists, the worker copy does not): it vanishes from the
    // worker's view, and the shared file stays as it is.
    if let (true, Some(r)) = (call.removes, route1) {
        let target_exists = matches!(view::lstat(&target[..r.len], work), Ok(Some(_)));
        // (An earlier redirect whose target is gone is the worker's own
        // removal: the real call then fails as a second removal does.)
        if r.new && !target_exists && a.path.abs.is_some_and(|p| exists(p, work)) {
            if let Some(ok) = R::success() {
                // Bare, the kernel first asks whether the directory may
                // lose the name (may_delete; review 8 F2). Asked of the
                // directory as the view shows it: its copy where the
                // worker changed its metadata, else the shared one (a
                // mirror's owner is the worker's; review 9 F3).
                let owner = a.path.abs.and_then(|p| view::lstat(p, work).ok().flatten());
                let parent = a.path.abs.and_then(|p| {
                    let at = p.iter().rposition(|&b| b == b'/')?;
                    Some(&p[..at.max(1)])
                });
                let shared_shown = parent.is_some_and(|pp| {
                    // SAFETY: all-zero is a valid libc::stat.
                    let mut st: libc::stat = unsafe { core::mem::zeroed() };
                    let buf = &mut work[..view::PATH_MAX + 1];
                    matches!(view::view_lstat(pp, buf, &mut st), Ok((true, false)))
                });
                let refused = match (shared_shown, held[0] >= 0, owner, parent) {
                    (true, _, Some(st), Some(pp)) => match sys::c_path(pp, work) {
                        Some(c) => redirect::may_remove_in(c, st.st_uid).err(),
                        None => None,
                    },
                    (false, true, Some(st), _) => {
                        redirect::may_remove_from(held[0], st.st_uid).err()
                    }
                    _ => None,
                };
                if let Some(e) = refused {
                    release(held);
                    unseed(route1, target);
                    finish(call, &a, action, shown_target!(), -1, e, work);
                    core::mem::forget(entry_errno);
                    sys::set_errno(e);
                    return R::failure();
                }
                // Bare, the directory's times change (its copy's, when the
                // view shows them: review 8 F1).
                if held[0] >= 0 {
                    redirect::touch_dir(held[0]);
                }
                release(held);
                // Bare, this process's descriptors of it now hold a file
                // without a name: moved to a copy made at the target and
                // removed again.
                let at = &target[..r.len];
                let orphaned = redirect::orphan_readers(a.path.abs.unwrap_or_default(), at, work);
                if let Some((_, _, dir)) = orphaned {
                    let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
                    // SAFETY: the NUL-terminated target this call prepared.
                    unsafe {
                        libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, target.as_ptr(), flags)
                    };
                }
                redirect::record(a.path.abs.unwrap_or_default(), &target[..r.len], work);
                finish(call, &a, action, shown_target!(), 0, 0, work);
                return ok; // entry_errno restores the program's errno
            }
        }
    }

    // A rename over a shared file the view named: bare, this process's
    // descriptors of it then hold a file without a name. They are moved to
    // a copy at the new redirect's target, which the rename replaces (and
    // back to the shared file if the call fails).
    let exchanges = call.flags > 0 && call.flags as u32 & libc::RENAME_EXCHANGE != 0;
    let replaced = match (call.writes, exchanges, route2) {
        (Writes::Both, false, Some(r)) if r.new && r.len < target2.len() => a
            .path2
            .as_ref()
            .and_then(|p| p.abs)
            .and_then(|orig| redirect::orphan_readers(orig, &target2[..r.len], work)),
        _ => None,
    };
    // The same for an rmdir of a shared directory the worker's view has a
    // directory for (made for an earlier redirect below it, or its copy
    // after a metadata change, whose descriptors stay on the shared one:
    // review 11), which the call removes: its descriptors are moved there
    // first.
    let emptied = match (call.removes, route1) {
        (true, Some(r)) if r.len < target.len() && is_dir(&target[..r.len], work) => a
            .path
            .abs
            .and_then(|orig| redirect::orphan_readers(orig, &target[..r.len], work)),
        _ => None,
    };
    drop(entry_errno);
    let r = real(p1, p2);
    let saved_errno = sys::ErrnoGuard::save();
    release(held);
    let result = r.result();
    let errno = if result < 0 { saved_errno.value() } else { 0 };
    if let (Some((dev, ino, true)), Some(orig), true) = (emptied, a.path.abs, result < 0) {
        redirect::follow_dir_move(dev, ino, orig, work);
    }
    if let (Some((dev, ino, dir)), true) = (replaced, result < 0) {
        if let Some(orig) = a.path2.as_ref().and_then(|p| p.abs) {
            match dir {
                true => redirect::follow_dir_move(dev, ino, orig, work),
                false => redirect::follow_copy_up(dev, ino, orig, work),
            }
        }
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: the NUL-terminated target of the route.
        unsafe { libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, target2.as_ptr(), flags) };
    }
    if result < 0 {
        // A failed call leaves no trace: the copy made for it would
        // shadow the shared file.
        unseed(route1, target);
        unseed(route2, target2);
    }

    let _ = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
        let mut a = a;
        if let (Some(r), Some(suffix), true) = (route1, call.template_suffix, result >= 0) {
            // mkstemp filled in the name it was given (maybe our parent's
            // descriptor path): the target gets the same tail.
            let called_len = if p1 == target.as_ptr().cast() {
                r.len
            } else {
                // SAFETY: call_path NUL-terminated it in base.
                unsafe { sys::c_strlen(p1, 2048) }
            };
            let tail = (6 + suffix).min(r.len).min(called_len);
            if p1 != target.as_ptr().cast() {
                target[r.len - tail..r.len].copy_from_slice(&base[called_len - tail..called_len]);
            }
            // The program's own template gets the same name, and the event
            // and the table get the filled-in original path (built in
            // target2, unused here).
            let filled = &target[..r.len];
            copy_template_tail(call.path.path as *mut c_char, filled, suffix);
            if let Some(orig) = a.path.abs {
                let n = orig.len().min(MAX_ABS);
                target2[..n].copy_from_slice(&orig[..n]);
                let tail = (6 + suffix).min(n).min(filled.len());
                target2[n - tail..n].copy_from_slice(&filled[filled.len() - tail..]);
                a.path = PathPair {
                    given: a.path.given,
                    abs: Some(&target2[..n]),
                };
            }
        }
        if result >= 0 {
            if let (Some(r), Some(orig)) = (route1, a.path.abs) {
                if r.new {
                    redirect::record(orig, &target[..r.len], work);
                }
            }
            if let (Some(r), Some(orig)) = (route2, a.path2.as_ref().and_then(|p| p.abs)) {
                if r.new {
                    redirect::record(orig, &target2[..r.len], work);
                }
            }
            let exchange = call.writes == Writes::Both
                && call.flags > 0
                && call.flags as u32 & libc::RENAME_EXCHANGE != 0;
            // Where each copy is now: a rename moved the first path's copy
            // to the second name (and an exchange the second's to the
            // first); readers of a shared file follow its content there.
            let (len1, len2) = (route1.map_or(0, |r| r.len), route2.map_or(0, |r| r.len));
            let now_at: [(Option<Route>, &[u8]); 2] = match call.writes {
                Writes::Both if exchange => [(route1, &target2[..len2]), (route2, &target[..len1])],
                Writes::Both => [(route1, &target2[..len2]), (None, &[])],
                _ => [(route1, &target[..len1]), (route2, &target2[..len2])],
            };
            for (r, t) in now_at {
                match r.and_then(|r| r.copied).filter(|_| !t.is_empty()) {
                    Some((dev, ino, false)) => redirect::follow_copy_up(dev, ino, t, work),
                    // A moved directory; not one whose metadata the call
                    // changed: its descriptors stay on the shared one,
                    // whose listing the view merges (fstat shows the
                    // copy's metadata: view_dir_stat).
                    Some((dev, ino, true)) if call.writes == Writes::Both => {
                        redirect::follow_dir_move(dev, ino, t, work)
                    }
                    Some((_, _, true)) => {}
                    None => {}
                }
            }
        }
        finish(call, &a, action, shown_target!(), result, errno, work);
    }));
    r
}

/// EINVAL when the kernel refuses the open's flags themselves
/// (O_CREAT|O_DIRECTORY, O_TMPFILE without write access): it says so
/// before it looks at the path, so that comes first. Asked of the kernel
/// with an empty name, which no open can create or reach.
fn invalid_open_flags(call: &Call) -> Option<c_int> {
    if !is_open(call) {
        return None;
    }
    // SAFETY: an empty NUL-terminated name: the call fails (ENOENT) unless
    // the flags are refused first (EINVAL).
    let fd = unsafe { sys::openat(libc::AT_FDCWD, c"".as_ptr(), call.flags, 0) };
    if fd >= 0 {
        sys::close(fd);
    }
    (fd == -libc::EINVAL).then_some(libc::EINVAL)
}

/// A name the call makes, spelled with a trailing slash after an existing
/// non-directory (`mkdir a/`, `open("a/", O_CREAT)` with a file `a`): the
/// view's walk stops there with ENOTDIR, but the kernel answers from the
/// creation's own checks first: EISDIR for an open with O_CREAT (a
/// trailing slash asks for a directory, which open never makes), EEXIST
/// for mkdir, mknod, mkfifo, symlink and link (`filename_create` finds the
/// name). `e`: the walk's errno; `second_failed`: it was the second name's
/// (link's and symlink's new name). The name is looked up as its lexical
/// path, which the walk gives when it fails; a spelling with `..` is left
/// as the walk said.
fn made_over_a_slash(
    call: &Call,
    a: &Assessed,
    e: c_int,
    second_failed: bool,
    work: &mut [u8],
) -> Option<c_int> {
    if e != libc::ENOTDIR {
        return None;
    }
    let makes_node =
        is_mkdir(call) || call.op.starts_with("mkfifo") || call.op.starts_with("mknod");
    let (name, errno) = if is_open(call) && call.flags & libc::O_CREAT != 0 {
        (&a.path, libc::EISDIR)
    } else if makes_node {
        (&a.path, libc::EEXIST)
    } else if (is_symlink(call) || is_hard_link(call)) && second_failed {
        (a.path2.as_ref()?, libc::EEXIST)
    } else {
        return None;
    };
    let given = name.given?;
    if !given.ends_with(b"/") || given.split(|&b| b == b'/').any(|c| c == b"..") {
        return None;
    }
    // SAFETY: all-zero is a valid libc::stat (plain integers).
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let found = view::view_lstat(name.abs?, &mut work[..view::PATH_MAX + 1], &mut st).ok()?;
    (found.0 && st.st_mode & libc::S_IFMT != libc::S_IFDIR).then_some(errno)
}

/// Removes the worker's copy a route's preparation made (redirect::Seeded)
/// for a call that then failed or was not made.
fn unseed(route: Option<Route>, target: &[u8]) {
    let Some(r) = route else { return };
    let flags = match r.seeded {
        redirect::Seeded::Nothing => return,
        redirect::Seeded::File => 0,
        redirect::Seeded::Directory => libc::AT_REMOVEDIR,
    };
    if r.len < view::PATH_MAX && target.get(r.len) == Some(&0) {
        // SAFETY: the NUL-terminated target this call prepared.
        unsafe { libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, target.as_ptr(), flags) };
    }
}

/// Under deny: the errno the kernel would fail a write with by itself
/// (its names are resolved, and the resolution's errors handled, before
/// this), so that nothing needs refusing; `None` when the call would
/// succeed or that cannot be said. A metadata change (chmod, utimes,
/// setxattr, ...) needs an existing file; the namespace calls, mkdir,
/// mknod and mkfifo get [`crate::precheck::answer`]'s decision. Not
/// modelled, so refused with EACCES: permissions, read-only mounts, a
/// truncate's negative length, an xattr's own errors (ENODATA, EEXIST),
/// bind.
fn failing_anyway(call: &Call, a: &Assessed, work: &mut [u8]) -> Option<c_int> {
    if call.changes_metadata.is_some() {
        // The walk followed the leaf when the call does: a dangling link's
        // target is missing too. (A lookup that fails counts as existing.)
        let abs = a.path.abs?;
        return (!exists_in_view(abs, work)).then_some(libc::ENOENT);
    }
    let op = crate::precheck::op_of_refused(call)?;
    // Proceed::Nothing (a rename onto the same file) succeeds bare: it is
    // refused like any write that would succeed.
    precheck(call, a, op, work)?.err()
}

/// [`crate::precheck::answer`] for the call's names as resolved in the
/// view; `None` when a name is missing.
fn precheck(
    call: &Call,
    a: &Assessed,
    op: mpaudit_core::namei::Op,
    work: &mut [u8],
) -> Option<Result<Proceed, c_int>> {
    use crate::precheck::Spelled;
    fn spelled<'p>(p: &PathPair<'p>) -> Option<Spelled<'p>> {
        Some(Spelled {
            given: p.given?,
            abs: p.abs?,
        })
    }
    let two = match &a.path2 {
        Some(p) => Some(spelled(p)?),
        None => None,
    };
    // symlink's first path is the link's text; its name is the second.
    // A link's empty source names its descriptor (AT_EMPTY_PATH), which
    // has no path to resolve (a removed file's): the new name is checked.
    let empty_source = is_hard_link(call) && a.path.given == Some(b"");
    let (first, second) = if is_symlink(call) {
        (two?, None)
    } else if empty_source {
        let none = Spelled {
            given: b"",
            abs: b"",
        };
        (spelled(&a.path).unwrap_or(none), two)
    } else {
        (spelled(&a.path)?, two)
    };
    crate::precheck::answer(call, op, first, second, work)
}

/// Where each of the call's paths goes (see [`route`]), and the errno the
/// call must fail with (0: none). Out of line: its locals stay off the
/// stack while the paths are resolved (hooks run on small signal stacks).
#[inline(never)]
fn routes(
    call: &Call,
    a: &Assessed,
    redirect_new: bool,
    target: &mut [u8],
    target2: &mut [u8],
    work: &mut [u8],
) -> (Option<Route>, Option<Route>, i32) {
    let is_write = call.intent.is_write();
    let rename_flags = if call.path2.is_some() && call.flags > 0 {
        call.flags as u32
    } else {
        0
    };
    let mut failed = 0;
    let route2 = a.path2.as_ref().and_then(|p| p.abs).and_then(|abs| {
        let exchange = rename_flags & libc::RENAME_EXCHANGE != 0;
        // A hard link judged rogue by its source only makes its new name
        // in place (scratch, the worker's own directory): the source is
        // what is redirected (route1).
        let new2 =
            call.writes != Writes::First && (!is_hard_link(call) || a.verdict2 == Verdict::Rogue);
        let want = Want {
            new: redirect_new && new2,
            seed: if exchange {
                redirect::Seed::Content
            } else {
                redirect::Seed::Nothing
            },
            excl: rename_flags & libc::RENAME_NOREPLACE != 0,
            opens: false,
            create_parents: is_write,
        };
        route(abs, want, target2, work, &mut failed)
    });
    let route1 = a.path.abs.filter(|_| !is_symlink(call)).and_then(|abs| {
        // A hard link of a shared file links the worker's copy of it,
        // never the shared file (a write through the new name would reach
        // it): when the new name is redirected, or wherever it is when a
        // write of the source would be (scratch and the worker's own
        // directory take writes in place). A source whose writes go in
        // place anyway (allowed) is linked as it is.
        let link_source = is_hard_link(call)
            && mpaudit_core::policy::link_copies_source(a.verdict1, route2.is_some(), redirect_new)
            && a.viewed.is_ok()
            && a.path.given.is_some_and(|g| !g.is_empty());
        // A rename of a scratch file (or one of the worker's own) into
        // the job directory moves it in place: only the new name is
        // redirected (an earlier redirect of the source is still followed).
        let saved = SAVED.get();
        let moves_in_place = call.writes == Writes::Both
            && rename_flags & libc::RENAME_EXCHANGE == 0
            && mpaudit_core::policy::rename_source_moves_in_place(
                a.verdict1,
                abs,
                saved.job_dir.as_bytes(),
                saved.worker_dir.as_bytes(),
            );
        let want = Want {
            new: (redirect_new && call.writes != Writes::Second && !moves_in_place) || link_source,
            seed: if link_source {
                redirect::Seed::Content
            } else {
                seed_for(call)
            },
            excl: is_mkdir(call)
                || (is_open(call)
                    && call.flags & libc::O_CREAT != 0
                    && call.flags & libc::O_EXCL != 0),
            opens: is_open(call),
            create_parents: is_write,
        };
        // A read open of a shared directory whose metadata the worker
        // changed (its copy holds only the worker's entries): the shared
        // one, whose listing the view merges (dirview.rs); its metadata
        // is the copy's all the same (fstat: view_dir_stat). Unless the
        // copy denies reading: the kernel's EACCES from the copy.
        if is_open(call) && !is_write && view::copy_of_shared_dir(abs, work).is_some() {
            let path_only = call.flags & libc::O_PATH != 0;
            if path_only || !view::copy_denies(abs, libc::R_OK, work) {
                return None;
            }
        }
        route(abs, want, target, work, &mut failed)
    });
    (route1, route2, failed)
}

/// The names the call is given, and the descriptors held for it: a worker
/// target through its parent's descriptor (call_path, in `base`), a path
/// resolved through the worker's view as resolved, else the program's
/// own. Sets `failed` when a name cannot be given.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn call_names(
    call: &Call,
    a: &Assessed,
    route1: Option<Route>,
    route2: Option<Route>,
    base: &mut [u8],
    target: &mut [u8],
    target2: &mut [u8],
    failed: &mut i32,
    held_from: Option<c_int>,
) -> (*const c_char, *const c_char, [c_int; 2]) {
    let mut failed_here = *failed;
    let (call1, call2) = base.split_at_mut(2048);
    let mut held = [-1; 2];
    // The child of a posix_spawn makes the open later, by this name.
    let keeps_name = call.op == "posix_spawn_file_actions_addopen";
    let mut p1 = call.path.path;
    let mut p2 = call.path2.map_or(core::ptr::null(), |p| p.path);
    if failed_here == 0 {
        match route1 {
            Some(r) => match call_path(r, target, call1, keeps_name, held_from) {
                Ok((p, fd)) => (p1, held[0]) = (p, fd),
                Err(e) => failed_here = e,
            },
            None if a.viewed == Ok(true) => match a.path.abs.and_then(|p| sys::c_path(p, target)) {
                Some(p) if a.path.abs.is_some_and(|p| p.len() < view::PATH_MAX) => p1 = p,
                _ => failed_here = libc::ENAMETOOLONG,
            },
            None => {}
        }
    }
    if failed_here == 0 {
        let abs2 = a.path2.as_ref().and_then(|p| p.abs);
        match route2 {
            Some(r) => match call_path(r, target2, call2, keeps_name, held_from) {
                Ok((p, fd)) => (p2, held[1]) = (p, fd),
                Err(e) => failed_here = e,
            },
            None if a.viewed2 == Ok(true) => match abs2.and_then(|p| sys::c_path(p, target2)) {
                Some(p) if abs2.is_some_and(|p| p.len() < view::PATH_MAX) => p2 = p,
                _ => failed_here = libc::ENAMETOOLONG,
            },
            None => {}
        }
    }
    *failed = failed_here;
    (p1, p2, held)
}

/// Fails the call with `errno` without calling it, and logs it.
fn refuse<R: Outcome>(
    call: &Call,
    a: &Assessed,
    action: Action,
    errno: c_int,
    entry_errno: sys::ErrnoGuard,
    work: &mut [u8],
) -> R {
    finish(call, a, action, None, -1, errno, work);
    core::mem::forget(entry_errno);
    sys::set_errno(errno);
    R::failure()
}

/// What becomes of a write whose path cannot be resolved (a cwd deeper
/// than the kernel reports, a directory descriptor without a path in
/// /proc): under deny it is denied, under redirect in a worker it fails as
/// a redirect that could not be done; both with EACCES. `None`: the call
/// goes ahead (log mode; redirect outside a worker).
pub(crate) fn refusal_of_unresolvable(setting: ActionSetting, in_worker: bool) -> Option<Action> {
    match setting {
        ActionSetting::Deny => Some(Action::Denied),
        ActionSetting::Redirect if in_worker => Some(Action::RedirectFailed),
        _ => None,
    }
}

/// What a new redirect of an open (or truncate, rename's source) starts
/// from.
fn seed_for(call: &Call) -> redirect::Seed {
    if call.changes_metadata.is_some() {
        redirect::Seed::Metadata
    } else if call.keeps_content || (is_open(call) && keeps_content(call.intent)) {
        redirect::Seed::Content
    } else if is_open(call) && call.intent.truncate {
        redirect::Seed::ModeOnly
    } else {
        redirect::Seed::Nothing
    }
}

/// What a path's route must do.
#[derive(Clone, Copy)]
struct Want {
    /// This call may create a redirect (it writes the path).
    new: bool,
    seed: redirect::Seed,
    /// Fail with EEXIST when the original exists (O_CREAT|O_EXCL,
    /// RENAME_NOREPLACE): the worker's view has it.
    excl: bool,
    /// An open: one of an existing non-regular file (directory, FIFO,
    /// device) is not redirected (nothing to clobber; the call fails or
    /// works as in place), one of a symlink with O_NOFOLLOW fails (ELOOP).
    opens: bool,
    /// Missing worker directories may be made (writes).
    create_parents: bool,
}

/// A path's destination: `len` bytes of NUL-terminated target; `new` when
/// this call creates the redirect (rather than following an earlier one);
/// `parent`: its parent directory's descriptor (or -1), and the leaf's
/// offset in the target.
#[derive(Clone, Copy)]
struct Route {
    len: usize,
    new: bool,
    parent: c_int,
    leaf: usize,
    /// This call made the worker's copy (redirect::Seeded): a failed call
    /// removes it again.
    seeded: redirect::Seeded,
    /// The device and inode of the shared regular file the copy was made
    /// from: after the call, this process's read-only descriptors of it
    /// are moved to the copy (redirect::follow_copy_up).
    /// `.2`: a shared directory whose metadata the worker's copy took
    /// (its descriptors are moved to the copy, redirect::follow_dir_move).
    copied: Option<(u64, u64, bool)>,
}

/// Decides where `abs` goes and writes the NUL-terminated target into `out`.
/// `None`: the original path. Sets `failed` to an errno when the redirect
/// cannot be prepared (the call must then fail: never fall back to the
/// shared file). `work` is scratch space for preparing the target.
fn route(
    abs: &[u8],
    want: Want,
    out: &mut [u8],
    work: &mut [u8],
    failed: &mut i32,
) -> Option<Route> {
    if let Some(t) = redirect::lookup(abs) {
        let n = t.len().min(out.len() - 1);
        out[..n].copy_from_slice(&t[..n]);
        out[n] = 0;
        return Some(existing(abs, n, want, out, work, failed));
    }
    // Below a directory of the worker's that stands over a shared
    // non-directory: the kernel must be given the worker's path, the
    // shared spelling leads through the shared file or symlink.
    // (Written to `out`, which a new redirect overwrites below.)
    let below_own_dir = view::in_worker_dir(abs, out, &mut work[..MAX_ABS + 1]);
    if !want.new {
        let n = below_own_dir?;
        return Some(existing(abs, n, want, out, work, failed));
    }
    let saved = SAVED.get();
    let cap = out.len() - 1;
    let Some(n) = mpaudit_core::map::map_normal_to_worker(
        abs,
        saved.job_dir.as_bytes(),
        saved.worker_dir.as_bytes(),
        &mut out[..cap],
    ) else {
        *failed = libc::ENAMETOOLONG;
        return None;
    };
    out[n] = 0;
    let unprepared = Route {
        len: n,
        new: true,
        parent: -1,
        leaf: 0,
        seeded: redirect::Seeded::Nothing,
        copied: None,
    };
    let orig = match view::lstat(abs, work) {
        // The view hides the shared path (the walk reached a directory of
        // the worker's): nothing is seeded from it.
        _ if below_own_dir.is_some() => None,
        Ok(st) => st,
        Err(e) => {
            *failed = e;
            return Some(unprepared);
        }
    };
    let kind = orig.map(|st| st.st_mode & libc::S_IFMT);
    if want.excl && orig.is_some() {
        *failed = libc::EEXIST;
        return Some(unprepared);
    }
    if want.opens && kind == Some(libc::S_IFLNK) {
        *failed = libc::ELOOP;
        return Some(unprepared);
    }
    if want.opens && kind.is_some_and(|k| k != libc::S_IFREG) {
        return None;
    }
    Some(prepared(
        abs,
        n,
        want,
        want.seed,
        orig.as_ref(),
        true,
        // (Below a directory of the worker's, its own entries, symlinks
        // too, are not in the table.)
        below_own_dir.is_none(),
        out,
        work,
        failed,
    ))
}

/// The route to `out[..n]`, a worker path that already exists in the view
/// (the table's redirect, or a name below the worker's own directory):
/// nothing is seeded.
fn existing(
    abs: &[u8],
    n: usize,
    want: Want,
    out: &[u8],
    work: &mut [u8],
    failed: &mut i32,
) -> Route {
    prepared(
        abs,
        n,
        want,
        redirect::Seed::Nothing,
        None,
        false,
        false,
        out,
        work,
        failed,
    )
}

/// The route to `out[..n]` with its parent prepared (redirect::prepare_target;
/// `first`: a first redirect, whose place holds no symlink the program put).
#[allow(clippy::too_many_arguments)]
fn prepared(
    abs: &[u8],
    n: usize,
    want: Want,
    seed: redirect::Seed,
    orig: Option<&libc::stat>,
    new: bool,
    first: bool,
    out: &[u8],
    work: &mut [u8],
    failed: &mut i32,
) -> Route {
    // A write needs room in the shared table for the entries it may make
    // (its own, a renamed directory's names); a read in a worker's view
    // makes none (the fork-mode root, which has no table, warned that
    // redirected writes fail).
    let room = if new || want.new {
        redirect::reserve()
    } else {
        0
    };
    let prepared = match room {
        0 => redirect::prepare_target(abs, &out[..n], want.create_parents, seed, orig, first, work),
        e => Err(e),
    };
    match prepared {
        Ok(p) => Route {
            len: n,
            new,
            parent: p.parent,
            leaf: p.leaf,
            seeded: p.seeded,
            copied: orig
                .filter(|st| {
                    let kind = st.st_mode & libc::S_IFMT;
                    (p.seeded == redirect::Seeded::File && kind == libc::S_IFREG)
                        || (p.seeded == redirect::Seeded::Directory && kind == libc::S_IFDIR)
                })
                .map(|st| {
                    let dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                    (st.st_dev, st.st_ino, dir)
                }),
        },
        Err(e) => {
            // A read whose worker directory is missing goes to the target's
            // path, where the kernel says ENOENT; a write fails, and so
            // does a new redirect the table has no room for.
            if want.create_parents || room != 0 {
                *failed = e;
            }
            Route {
                len: n,
                new,
                parent: -1,
                leaf: 0,
                seeded: redirect::Seeded::Nothing,
                copied: None,
            }
        }
    }
}

/// The name to give the real call for a routed path: `/proc/thread-self/fd/N/leaf`
/// (this thread's table: review 9)
/// with N a descriptor (high, close-on-exec, held during the call; the
/// second value) of the target's parent, opened without following any
/// symlink below the worker directory by prepare_target. The kernel
/// resolves only the leaf by name, inside that directory: no component the
/// worker's own threads swap for a symlink between the check and the call
/// (review 2, F8) can lead it out, and a target longer than PATH_MAX works.
/// Fails closed (EACCES) when /proc does not resolve the descriptor.
///
/// `keeps_name`: the call keeps the name past its return, when the
/// descriptor is closed (posix_spawn_file_actions_addopen: the child opens
/// it): the target's own path (when it fits). A route without a parent
/// (a read whose worker directory is missing) gets the target's path too,
/// where the kernel answers ENOENT.
///
/// `held_from`: the descriptor is numbered from there (the program's own
/// soft limit while it is raised, FdRoom), or fails with EMFILE.
fn call_path(
    r: Route,
    target: &[u8],
    buf: &mut [u8],
    keeps_name: bool,
    held_from: Option<c_int>,
) -> Result<(*const c_char, c_int), c_int> {
    let fits = r.len < view::PATH_MAX;
    if keeps_name || r.parent < 0 {
        return if fits {
            Ok((target.as_ptr().cast(), -1))
        } else {
            Err(libc::ENAMETOOLONG)
        };
    }
    let mut high = match held_from {
        // SAFETY: duplicating a descriptor of ours.
        Some(from) => unsafe {
            libc::syscall(libc::SYS_fcntl, r.parent, libc::F_DUPFD_CLOEXEC, from) as c_int
        },
        None => high_descriptor(r.parent),
    };
    if high < 0 && held_from.is_none() {
        // No room near the top (a small RLIMIT_NOFILE): any number. A
        // descriptor the call makes may then get a higher number than bare.
        // SAFETY: duplicating a descriptor of ours.
        high =
            unsafe { libc::syscall(libc::SYS_fcntl, r.parent, libc::F_DUPFD_CLOEXEC, 0) } as c_int;
    }
    if high < 0 {
        return Err(if fits {
            libc::EMFILE
        } else {
            libc::ENAMETOOLONG
        });
    }
    let leaf = &target[r.leaf..r.len];
    let mut s = mpaudit_core::json::SliceSink::new(buf);
    use mpaudit_core::json::Sink;
    s.put(b"/proc/thread-self/fd/");
    mpaudit_core::json::put_u64(&mut s, high as u64);
    let dir_len = s.len;
    s.put(b"/");
    s.put(leaf);
    s.put(b"\0");
    if s.overflow {
        // A leaf longer than any name the kernel takes (NAME_MAX).
        sys::close(high);
        return Err(libc::ENAMETOOLONG);
    }
    // /proc is there when the descriptor's link is (its target may be too
    // long for readlink). Probed until it once worked: a /proc that goes
    // away later (a chroot) fails the call in the kernel (ENOENT), which
    // still never reaches a shared file.
    if PROC_FD_WORKS.load(core::sync::atomic::Ordering::Relaxed) {
        return Ok((buf.as_ptr().cast(), high));
    }
    buf[dir_len] = 0;
    // SAFETY: NUL-terminated path.
    let proc_works = unsafe { sys::stat(buf.as_ptr().cast(), libc::AT_SYMLINK_NOFOLLOW) }.is_some();
    buf[dir_len] = b'/';
    if proc_works {
        PROC_FD_WORKS.store(true, core::sync::atomic::Ordering::Relaxed);
        return Ok((buf.as_ptr().cast(), high));
    }
    sys::close(high);
    // Without /proc the name would be walked again by the kernel: fail
    // closed rather than risk following a swapped-in symlink.
    Err(libc::EACCES)
}

/// The soft RLIMIT_NOFILE raised by a few descriptors for one routed call
/// whose routing found the program's table full (judge_then_call), put
/// back on drop. One call at a time (RAISED): two raising threads could
/// otherwise leave the limit raised. Not emulated: while it is raised,
/// another thread's open that would fail with EMFILE bare succeeds, and a
/// limit at its hard maximum cannot be raised (the call fails with EMFILE
/// as before).
struct FdRoom {
    old: libc::rlimit64,
}

static RAISED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

impl FdRoom {
    fn raise() -> Option<FdRoom> {
        use core::sync::atomic::Ordering::*;
        let old = sys::rlimit(libc::RLIMIT_NOFILE)?;
        if old.rlim_cur >= old.rlim_max || old.rlim_cur > c_int::MAX as u64 - 8 {
            return None;
        }
        if RAISED.swap(true, Acquire) {
            return None;
        }
        let new = libc::rlimit64 {
            rlim_cur: (old.rlim_cur + 8).min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        if !sys::set_rlimit(libc::RLIMIT_NOFILE, &new) {
            RAISED.store(false, Release);
            return None;
        }
        Some(FdRoom { old })
    }

    /// The program's own soft limit: the first number above its table.
    fn limit(&self) -> c_int {
        self.old.rlim_cur as c_int
    }
}

impl Drop for FdRoom {
    fn drop(&mut self) {
        // Puts back our own limit, read by raise(); descriptors above it
        // stay open (the kernel checks the limit on allocation).
        sys::set_rlimit(libc::RLIMIT_NOFILE, &self.old);
        RAISED.store(false, core::sync::atomic::Ordering::Release);
    }
}

/// `/proc/self/fd/N` resolved a held descriptor once (call_path).
static PROC_FD_WORKS: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A close-on-exec duplicate of `fd` numbered near the top of the usual
/// descriptor table (below min(RLIMIT_NOFILE, 1024)), so that the call it
/// is held across gets the descriptor number it would get bare; -1 if none.
fn high_descriptor(fd: c_int) -> c_int {
    let Some(lim) = sys::rlimit(libc::RLIMIT_NOFILE) else {
        return -1;
    };
    let top = lim.rlim_cur.min(1024);
    if top < 128 {
        return -1;
    }
    // SAFETY: duplicating a descriptor of ours.
    let high = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, top - 32) };
    high as c_int
}

/// An open that changes an existing file's content without replacing it
/// (append, read-write, write-only, all without truncation) needs the
/// original's content in the worker's copy first.
fn keeps_content(intent: OpenIntent) -> bool {
    // Any open a redirect is made for writes (or creates) the path; without
    // O_TRUNC the existing content stays, O_RDONLY|O_CREAT included.
    !intent.truncate
}

/// Whether `abs` exists in the worker's view (its redirect's target, or
/// the shared path); an error counts as existing (the call answers).
fn exists_in_view(abs: &[u8], work: &mut [u8]) -> bool {
    // SAFETY: all-zero is a valid libc::stat (plain integers).
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    view::view_lstat(abs, &mut work[..view::PATH_MAX + 1], &mut st).map_or(true, |(found, _)| found)
}

fn is_dir(abs: &[u8], work: &mut [u8]) -> bool {
    matches!(view::lstat(abs, work), Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

fn exists(abs: &[u8], work: &mut [u8]) -> bool {
    matches!(view::lstat(abs, work), Ok(Some(_)))
}

/// Copies the filled-in `XXXXXX` (and suffix) of `filled` into the program's
/// template, whose tail has the same layout.
fn copy_template_tail(template: *mut c_char, filled: &[u8], suffix: usize) {
    // SAFETY: the program's template is a writable C string.
    let len = unsafe { sys::c_strlen(template, MAX_GIVEN) };
    let tail = (6 + suffix).min(len).min(filled.len());
    for i in 0..tail {
        // SAFETY: within the template's length.
        unsafe { *template.add(len - tail + i) = filled[filled.len() - tail + i] as c_char };
    }
}

/// Logs the event and, without a log, warns once per path on stderr.
fn finish(
    call: &Call,
    a: &Assessed,
    action: Action,
    target: Option<&[u8]>,
    result: i64,
    errno: c_int,
    work: &mut [u8],
) {
    let attribution = a.stack.as_ref().map(|st| Attribution {
        component: st.component.map(|i| st.frames[i]),
        stack: &st.frames[..st.n],
        truncated: st.truncated,
    });
    if a.verdict == Verdict::Rogue && !log::enabled() {
        warn_rogue(
            a.path.abs.or(a.path.given).unwrap_or(b"?"),
            attribution.as_ref(),
            action,
            work,
        );
    }
    if !log::enabled() {
        return;
    }
    let event = Access {
        op: call.op,
        path: a.path,
        path2: a.path2,
        intent: call.intent,
        flags: call.flags,
        result,
        errno,
        attribution,
        judgement: Some(Judgement {
            verdict: a.verdict.as_str(),
            action: action.as_str(),
            target,
        }),
    };
    log::append(&AccessEvent {
        common: common(),
        access: event,
    });
}

/// `mpaudit: rogue write <path> by <object>+0x<vaddr> pid <pid> worker <k> -> <action>`
fn warn_rogue(path: &[u8], attribution: Option<&Attribution>, action: Action, work: &mut [u8]) {
    if !redirect::first_warning(path) {
        return;
    }
    use mpaudit_core::json::{put_hex_u64, put_i64, put_u64, Sink, SliceSink};
    let buf = &mut work[..2048];
    let mut s = SliceSink::new(buf);
    s.put(b"mpaudit: rogue write ");
    s.put(&path[..path.len().min(1024)]);
    s.put(b" by ");
    match attribution.and_then(|a| a.component) {
        Some(Frame {
            object: Some(object),
            vaddr,
        }) => {
            s.put(&object[..object.len().min(512)]);
            s.put(b"+");
            put_hex_u64(&mut s, vaddr);
        }
        _ => s.put(b"?"),
    }
    s.put(b" pid ");
    put_i64(&mut s, state::pid() as i64);
    s.put(b" worker ");
    match state::worker() {
        Some(w) => put_u64(&mut s, w as u64),
        None => s.put(b"none"),
    }
    s.put(b" -> ");
    s.put(action.as_str().as_bytes());
    let n = s.len.min(2047);
    buf[n] = b'\n';
    sys::write_all(2, &buf[..n + 1]);
}

/// Logs a process event (fork, exec, spawn, exit, start).
pub fn log_process(p: &mpaudit_core::event::Process) {
    if !log::enabled() {
        return;
    }
    log::append(&ProcessEvent {
        common: common(),
        process: p,
    });
}

/// Whether a read whose path fails to resolve in the worker's view with
/// `errno` must fail so rather than reach the kernel as spelled: a missing
/// entry, a non-directory on the way or a symlink loop is what the
/// worker's removals, files and symlinks make of the shared tree.
/// ENAMETOOLONG is the kernel's to give (its limits, not the view's); an
/// EACCES of the walk (a directory whose copy denies search) is refused
/// before this is asked.
fn hidden_by_view(errno: c_int) -> bool {
    redirect::any_in_view() && matches!(errno, libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
}

/// Reroutes a call that only reads a path (stat, access, opendir,
/// readlink, …) to its redirected file, so a worker sees what it wrote.
/// `follow`: the call follows a symlink in the leaf (stat, not lstat), so
/// the leaf is resolved in the worker's view too (a shared link to a file
/// the worker redirected leads to the worker's file). A path the kernel
/// could not resolve in the worker's view (ENOENT, ENOTDIR, ELOOP: the view
/// differs from the shared tree along the way) fails so without reaching
/// the kernel. Not logged.
///
/// # Safety
/// `arg.path` is what the program passed.
pub unsafe fn reroute<R: Outcome>(
    arg: PathArg,
    follow: bool,
    real: impl FnOnce(*const c_char) -> R,
) -> R {
    // SAFETY: the caller's contract.
    unsafe { reroute_as(arg, follow, false, true, real) }
}

/// [`reroute`] for a call that runs the program's own code (dlopen runs
/// constructors): the re-entry guard is released before the real call, so
/// what that code opens is audited. A path the worker's view hides goes to
/// the kernel as spelled (dlopen reports through dlerror, not errno).
///
/// # Safety
/// `arg.path` is what the program passed.
pub unsafe fn reroute_unguarded<R: Outcome>(
    arg: PathArg,
    follow: bool,
    real: impl FnOnce(*const c_char) -> R,
) -> R {
    // SAFETY: the caller's contract.
    unsafe { reroute_as(arg, follow, false, false, real) }
}

/// Where an exec (execve, execveat, posix_spawn, a PATH search's
/// candidate) finds its program in the worker's view, as open-for-read
/// does: `Ok(true)` with the redirected file's NUL-terminated path in
/// `out` (a script or binary the worker wrote is in its directory),
/// `Ok(false)` for the path as spelled, `Err(errno)` when the view hides
/// it (the worker removed it or a directory on the way: ENOENT, ENOTDIR,
/// ELOOP), the exec then failing so without the kernel. A routed path
/// that does not fit PATH_MAX is given as spelled. The program's errno is
/// kept.
///
/// # Safety
/// `arg.path` is what the program passed (a readable C string, checked
/// by the caller).
pub unsafe fn exec_in_view(arg: PathArg, follow: bool, out: &mut [u8]) -> Result<bool, c_int> {
    if !state::ready() || !redirect::any_in_view() || arg.path.is_null() {
        return Ok(false);
    }
    let Some(_guard) = HookGuard::enter() else {
        return Ok(false);
    };
    let _errno = sys::ErrnoGuard::save();
    let Some(mut claimed) = pool::claim() else {
        return Ok(false);
    };
    if !matches!(
        crate::checked::before_judging(arg, None),
        crate::checked::Before::Judge
    ) {
        return Ok(false);
    }
    let Block {
        base,
        abs,
        target,
        work,
        cwd,
        ..
    } = claimed.block();
    // SAFETY: the program's C string, found readable above.
    let (path, viewed) = unsafe { resolve_in_view(arg, follow, false, base, cwd, abs, work) };
    let named = path.given.is_some_and(|g| !g.is_empty());
    if let (
        true,
        Err(view::Unresolved::Errno(
            e @ (libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EACCES),
        )),
    ) = (named, viewed)
    {
        return Err(e);
    }
    let want = Want {
        new: false,
        seed: redirect::Seed::Nothing,
        excl: false,
        opens: false,
        create_parents: false,
    };
    let mut failed = 0;
    let routed = match (viewed, path.abs) {
        (Ok(_), Some(p)) => route(p, want, target, work, &mut failed),
        _ => None,
    };
    let chosen: Option<&[u8]> = match (routed, viewed, path.abs) {
        (Some(r), _, _) => {
            if r.parent >= 0 {
                sys::close(r.parent);
            }
            Some(&target[..r.len])
        }
        (None, Ok(true), Some(p)) => Some(p),
        _ => None,
    };
    match chosen {
        Some(p) if p.len() < view::PATH_MAX && sys::c_path(p, out).is_some() => Ok(true),
        _ => Ok(false),
    }
}

/// [`reroute`] for opendir: a directory the worker redirected that is a
/// directory in the shared tree too (a copy of its metadata, a directory
/// removed and made again) is listed from the shared one, which the
/// directory view (dirview.rs) merges with the worker's entries.
///
/// # Safety
/// `arg.path` is what the program passed.
pub unsafe fn reroute_listing<R: Outcome>(
    arg: PathArg,
    real: impl FnOnce(*const c_char) -> R,
) -> R {
    // SAFETY: the caller's contract.
    unsafe { reroute_as(arg, true, true, true, real) }
}

/// After a stat-like call on `arg` that reached a directory: `nlink` becomes
/// its link count in the worker's view (view::dir_nlink), and the copy's
/// stat is returned when the view shows the metadata of a copy the call
/// did not reach (`dev`, `ino`: the one it reached; a descriptor of a
/// shared directory whose metadata the worker changed): its mode, owner
/// and times are the view's. A held directory's descriptor (fstat,
/// `AT_EMPTY_PATH`) counts as `.` from it: its name in /proc, as the job
/// path it stands for. The program's errno is kept.
///
/// # Safety
/// `arg.path` is what the program passed (the call read it).
pub unsafe fn view_dir_stat(
    arg: PathArg,
    follow: bool,
    reached: (u64, u64),
    nlink: &mut u64,
) -> Option<libc::stat> {
    if !state::ready() || !redirect::any_redirected() {
        return None;
    }
    // A call that succeeded with no name (fstat, `AT_EMPTY_PATH` with ""
    // or NULL) stat'ed the descriptor's own directory: `.` from it.
    // SAFETY: a non-NULL path is the program's C string, which the call read.
    let unnamed = arg.path.is_null() || unsafe { *arg.path } == 0;
    let arg = if unnamed {
        PathArg {
            dirfd: arg.dirfd,
            path: c".".as_ptr(),
        }
    } else {
        arg
    };
    let _guard = HookGuard::enter()?;
    let _errno = sys::ErrnoGuard::save();
    let mut claimed = pool::claim()?;
    let Block {
        base,
        abs,
        work,
        cwd,
        ..
    } = claimed.block();
    // A descriptor's own directory is its path (the job path a copy
    // stands for), not walked: the kernel asks no search permission of
    // the directory a descriptor holds (review 10, F3).
    // (Read only for such a call: a stat by name costs no readlink.)
    let held = match unnamed && arg.dirfd >= 0 {
        true => sys::fd_path(arg.dirfd, abs).map(|n| {
            let n = crate::guard::as_job_path(abs, n);
            state::unalias_job_dir(abs, n)
        }),
        false => None,
    };
    let p = match held {
        Some(n) => &abs[..n],
        None => {
            // SAFETY: the program's C string, which the call just read.
            let (path, viewed) =
                unsafe { resolve_in_view(arg, follow, false, base, cwd, abs, work) };
            match (viewed, path.abs) {
                (Ok(_), Some(p)) => p,
                _ => return None,
            }
        }
    };
    *nlink = view::dir_nlink(p, *nlink, work);
    view::copy_of_shared_dir(p, work).filter(|c| (c.st_dev, c.st_ino) != reached)
}

/// fchdir(`fd`): `EACCES` when `fd` holds a shared directory whose
/// metadata the worker changed and the copy (its mode in the view) denies
/// search, as the kernel's fchdir of the copy would (review 11, F3);
/// `None` to let the call go on.
pub fn fchdir_denied(fd: c_int) -> Option<c_int> {
    if fd < 0 || !state::ready() || !redirect::any_redirected() {
        return None;
    }
    let _guard = HookGuard::enter()?;
    let _errno = sys::ErrnoGuard::save();
    let mut claimed = pool::claim()?;
    let Block { abs, work, .. } = claimed.block();
    let n = sys::fd_path(fd, abs)?;
    let n = crate::guard::as_job_path(abs, n);
    let n = state::unalias_job_dir(abs, n);
    view::copy_of_shared_dir(&abs[..n], work)?;
    view::search_in_view(&abs[..n], work).err()
}

/// After a readlink that read `r` bytes into the program's `buf` (`size`
/// bytes): when the link is a magic one of /proc (a descriptor's
/// `/proc/self/fd/N`, `/proc/self/cwd`) whose text names a file or
/// directory of the worker's that stands for a job path (a redirected file,
/// a directory the worker made), the text is that job path, as bare would
/// read it (` (deleted)` kept), truncated to `size` as the kernel
/// truncates. Anything else is passed on.
///
/// # Safety
/// `arg.path` is what the program passed, and the call read it; `buf` is
/// writable for `size` bytes.
pub unsafe fn magic_link_text(arg: PathArg, buf: *mut c_char, size: usize, r: isize) -> isize {
    if r < 0 || buf.is_null() || arg.path.is_null() || !state::ready() {
        return r;
    }
    if !redirect::any_redirected() {
        return r;
    }
    let Some(_guard) = HookGuard::enter() else {
        return r;
    };
    let _errno = sys::ErrnoGuard::save();
    let Some(mut claimed) = pool::claim() else {
        return r;
    };
    let Block {
        base,
        abs,
        target,
        work,
        cwd,
        ..
    } = claimed.block();
    // SAFETY: the program's C string, which the call just read.
    let (path, viewed) = unsafe { resolve_in_view(arg, false, false, base, cwd, abs, work) };
    let Some(p) = path.abs.filter(|_| viewed.is_ok()) else {
        return r;
    };
    let mut link = [0u8; 64];
    let whole =
        matches!(mpaudit_core::path::magic_link(p, &mut link), Some((_, end)) if end == p.len());
    if !whole || !p.starts_with(b"/proc/") {
        return r;
    }
    let room = target.len() - 16;
    // SAFETY: `link` is NUL-terminated by magic_link.
    let Some(n) = (unsafe { sys::readlink(link.as_ptr().cast(), &mut target[..room]) }) else {
        return r;
    };
    const DELETED: &[u8] = b" (deleted)";
    let deleted = target[..n].ends_with(DELETED);
    let len = if deleted { n - DELETED.len() } else { n };
    let (mut len, moved) = crate::guard::job_path_of(&mut target[..room], len);
    if !moved {
        return r;
    }
    if deleted {
        target[len..len + DELETED.len()].copy_from_slice(DELETED);
        len += DELETED.len();
    }
    let k = len.min(size);
    // SAFETY: the program's buffer is writable for `size` bytes, k <= size.
    unsafe { core::ptr::copy_nonoverlapping(target.as_ptr(), buf.cast::<u8>(), k) };
    k as isize
}

unsafe fn reroute_as<R: Outcome>(
    arg: PathArg,
    follow: bool,
    lists: bool,
    guard_the_call: bool,
    real: impl FnOnce(*const c_char) -> R,
) -> R {
    if !state::ready() || !redirect::any_in_view() || arg.path.is_null() {
        return real(arg.path);
    }
    let Some(guard) = HookGuard::enter() else {
        return real(arg.path);
    };
    let entry_errno = sys::ErrnoGuard::save();
    let Some(mut claimed) = pool::claim() else {
        drop(entry_errno);
        return real(arg.path);
    };
    let b = claimed.block();
    if !matches!(
        crate::checked::before_judging(arg, None),
        crate::checked::Before::Judge
    ) {
        drop(entry_errno);
        return real(arg.path);
    }
    let Block {
        base,
        abs,
        target,
        work,
        cwd,
        ..
    } = b;
    // SAFETY: the program's C string, found readable above.
    let (path, viewed) = unsafe { resolve_in_view(arg, follow, false, base, cwd, abs, work) };
    // A read the view says fails, fails so without the kernel; not a dlopen
    // (the unguarded caller), whose failure must come with the loader's
    // dlerror message: the loader then meets the shared tree's answer.
    // (An empty name with AT_EMPTY_PATH names the descriptor itself.)
    let named = path.given.is_some_and(|g| !g.is_empty());
    if let (
        true,
        true,
        Err(view::Unresolved::Errno(
            e @ (libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EACCES),
        )),
    ) = (guard_the_call, named, viewed)
    {
        core::mem::forget(entry_errno);
        sys::set_errno(e);
        return R::failure();
    }
    let mut failed = 0;
    let want = Want {
        new: false,
        seed: redirect::Seed::Nothing,
        excl: false,
        opens: false,
        create_parents: false,
    };
    let routed = match (viewed, path.abs) {
        (Ok(_), Some(p)) => route(p, want, target, work, &mut failed),
        _ => None,
    };
    if let (true, Some(r), Some(p)) = (lists, routed, path.abs) {
        let dir = |st: Option<libc::stat>| {
            st.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        };
        if dir(view::lstat(p, work).ok().flatten())
            && dir(view::lstat(&target[..r.len], work).ok().flatten())
            && p.len() < view::PATH_MAX
        {
            if r.parent >= 0 {
                sys::close(r.parent);
            }
            // The listing opens the shared directory: bare, the open asks
            // read permission of the directory as the view shows it (its
            // copy, whose mode the worker changed).
            let denied = sys::c_path(&target[..r.len], work)
                .is_some_and(|c| redirect::access(c, libc::R_OK) == libc::EACCES);
            if denied {
                core::mem::forget(entry_errno);
                sys::set_errno(libc::EACCES);
                return R::failure();
            }
            if let Some(c) = sys::c_path(p, target) {
                drop(entry_errno);
                let r = real(c);
                return r;
            }
            drop(entry_errno);
            return real(arg.path);
        }
    }
    let (call_buf, _) = base.split_at_mut(2048);
    let called = match (routed, viewed, path.abs) {
        (Some(r), _, _) => {
            if r.parent >= 0 {
                let c = call_path(r, target, call_buf, false, None);
                sys::close(r.parent);
                match c {
                    Ok(c) => Some(c),
                    // The worker's copy cannot be reached through its
                    // directory: never the shared file in its place.
                    Err(e) => {
                        core::mem::forget(entry_errno);
                        sys::set_errno(e);
                        return R::failure();
                    }
                }
            } else {
                Some((target.as_ptr().cast(), -1))
            }
        }
        (None, Ok(true), Some(p)) if p.len() < view::PATH_MAX => {
            sys::c_path(p, target).map(|p| (p, -1))
        }
        _ => None,
    };
    drop(entry_errno);
    if !guard_the_call {
        drop(guard);
    }
    match called {
        Some((p, held)) => {
            let r = real(p);
            let _errno = sys::ErrnoGuard::save();
            if held >= 0 {
                sys::close(held);
            }
            r
        }
        None => real(arg.path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path of a write cannot be resolved (cwd deeper than getcwd
    /// reports, a dirfd without a /proc path): deny and redirect refuse it
    /// rather than let it land in place.
    #[test]
    fn an_unresolvable_write_fails_closed_under_deny_and_redirect() {
        for in_worker in [false, true] {
            assert_eq!(
                refusal_of_unresolvable(ActionSetting::Deny, in_worker),
                Some(Action::Denied)
            );
            assert_eq!(refusal_of_unresolvable(ActionSetting::Log, in_worker), None);
        }
        assert_eq!(
            refusal_of_unresolvable(ActionSetting::Redirect, true),
            Some(Action::RedirectFailed)
        );
        assert_eq!(
            refusal_of_unresolvable(ActionSetting::Redirect, false),
            None
        );
    }
}
