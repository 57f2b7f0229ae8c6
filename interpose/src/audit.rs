//! What every file hook does: resolve the path(s), judge the access against
//! the policy, redirect or deny it if the policy says so, call the real
//! function, and log the event. Hooks (hooks.rs) are one-liners into here.

use crate::guard::HookGuard;
use crate::pool::{self, Block, CwdCopy};
use crate::state::SAVED;
use crate::{log, redirect, stack, state, sys};
use libc::{c_char, c_int};
use mpaudit_core::event::{
    Access, AccessEvent, Attribution, Common, Frame, Judgement, PathPair, ProcessEvent,
};
use mpaudit_core::flags::OpenIntent;
use mpaudit_core::glob::GlobList;
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
    /// open(2) flags, or -1 for calls without flags.
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
    /// mkdir: creating a directory cannot clobber anything, and declared
    /// outputs may be written into it, so it is judged and logged but never
    /// redirected (rogue files inside it are, with their parents).
    pub makes_directory: bool,
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

/// `out[..n]` with a leading kernel magic link (`/proc/self/cwd`,
/// `/dev/fd/N`, …) replaced by where it points, normalised again: the path
/// the call really reaches, so `/proc/self/cwd/out.txt` is judged (and
/// redirected) as the job's `out.txt`, not as `/proc/**`. A link that does
/// not lead to a path (a pipe, a socket, an unreadable process) keeps the
/// spelling. `base` is scratch here (the dirfd's path is used by then).
fn follow_magic_link<'a>(n: usize, base: &mut [u8], out: &'a mut [u8]) -> Option<&'a [u8]> {
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

/// The verdict on a write: the worst over the paths it writes.
fn verdict(
    call: &Call,
    path: &PathPair,
    path2: Option<&PathPair>,
    st: Option<&stack::Stack>,
) -> Verdict {
    if !call.intent.is_write() {
        return Verdict::Read;
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
    let rank = |v: Verdict| match v {
        Verdict::Rogue => 4,
        Verdict::Registered => 3,
        Verdict::Declared => 2,
        Verdict::Allowed => 1,
        Verdict::Read => 0,
    };
    let mut worst = Verdict::Read;
    let mut consider = |v: Verdict| {
        if rank(v) > rank(worst) {
            worst = v
        }
    };
    if call.writes != Writes::Second {
        consider(judge(path));
    }
    if let (Some(p2), true) = (path2, call.writes != Writes::First) {
        consider(judge(p2));
    }
    if worst == Verdict::Read {
        Verdict::Allowed
    } else {
        worst
    }
}

/// An access resolved and judged: its paths, its caller's stack (writes
/// only) and the policy's verdict. Both policy modes start from this.
struct Assessed<'a> {
    path: PathPair<'a>,
    path2: Option<PathPair<'a>>,
    stack: Option<stack::Stack>,
    verdict: Verdict,
}

/// # Safety
/// The call's paths are NULL or readable C strings.
unsafe fn assess<'a>(
    call: &Call,
    raw_stack: Option<&stack::RawStack>,
    base: &mut [u8],
    cwd: &mut CwdCopy,
    abs: &'a mut [u8],
    abs2: &'a mut [u8],
    object_name: &mut [u8],
) -> Assessed<'a> {
    // SAFETY: `call.path` is NULL or a readable C string (this function's
    // contract), which is all `resolve` needs.
    let path = unsafe { resolve(call.path, base, cwd, abs) };
    let path2 = call.path2.map(|p| {
        // SAFETY: the contract covers the second path too: NULL or the
        // readable C string the program passed (rename's target, link's
        // new name, ...).
        unsafe { resolve(p, base, cwd, abs2) }
    });
    // The frames' object names may need the cwd and room to make them
    // absolute.
    let mut names = stack::NameScratch {
        cwd,
        abs: object_name,
    };
    let stack = raw_stack.map(|raw| stack::symbolise_stack(raw, &mut names));
    let verdict = verdict(call, &path, path2.as_ref(), stack.as_ref());
    Assessed {
        path,
        path2,
        stack,
        verdict,
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
    let may_act = redirect::any_redirected()
        || (is_write
            && (saved.action == ActionSetting::Deny
                || (saved.action == ActionSetting::Redirect && in_worker)));
    if !may_act && !is_write && !log::enabled() {
        return real(p1, p2);
    }
    let Some(_guard) = HookGuard::enter() else {
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
            ..
        } = b;
        // SAFETY: the paths are the program's arguments, which the hooked
        // function requires to be NULL or C strings; EFAULT, the kernel's
        // proof that one was unreadable, returned above.
        let a = unsafe { assess(call, raw_stack, base, cwd, abs, abs2, target) };
        // Deny and redirect were handled before the call; here only logging.
        let action = match policy().action_for(a.verdict, false) {
            Action::Redirected | Action::Denied => Action::Logged,
            other => other,
        };
        finish(call, &a, action, None, result, errno, work);
    }));
    r
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
    } = b;
    // SAFETY: paths are the program's C strings (NULL is handled).
    let a = unsafe { assess(call, raw_stack, base, cwd, abs, abs2, target) };
    let truncated = a.stack.as_ref().is_some_and(|st| st.truncated);
    let mut action = policy().action_for_stack(a.verdict, state::worker().is_some(), truncated);
    if call.makes_directory && action == Action::Redirected {
        action = Action::Logged;
    }

    if action == Action::Denied {
        finish(call, &a, action, None, -1, libc::EACCES, work);
        core::mem::forget(entry_errno);
        sys::set_errno(libc::EACCES);
        return R::failure();
    }

    // Where each path goes: its earlier redirect in this worker, a new
    // redirect (when this call writes it), or nowhere (the original).
    let redirect_new = action == Action::Redirected;
    let mut failed = 0;
    let route1 = a.path.abs.and_then(|abs| {
        let copy = call.keeps_content || (call.flags >= 0 && keeps_content(call.intent));
        route(
            abs,
            redirect_new && call.writes != Writes::Second,
            copy,
            target,
            work,
            &mut failed,
        )
    });
    let route2 = a.path2.as_ref().and_then(|p| p.abs).and_then(|abs| {
        route(
            abs,
            redirect_new && call.writes != Writes::First,
            false,
            target2,
            work,
            &mut failed,
        )
    });
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

    if failed != 0 {
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

    // A removal of a path this worker redirected but never wrote (the
    // original exists, the worker copy does not): it vanishes from the
    // worker's view, and the shared file stays as it is.
    if let (true, Some(r)) = (call.removes, route1) {
        // SAFETY: NUL-terminated target.
        let target_exists =
            unsafe { sys::stat(target.as_ptr().cast(), libc::AT_SYMLINK_NOFOLLOW) }.is_some();
        if !target_exists && a.path.abs.is_some_and(|p| exists(p, work)) {
            if let Some(ok) = R::success() {
                if r.new {
                    redirect::record(a.path.abs.unwrap_or_default(), &target[..r.len], work);
                }
                finish(call, &a, action, shown_target!(), 0, 0, work);
                return ok; // entry_errno restores the program's errno
            }
        }
    }

    let p1 = if route1.is_some() {
        target.as_ptr().cast()
    } else {
        call.path.path
    };
    let p2 = match (route2, call.path2) {
        (Some(_), _) => target2.as_ptr().cast(),
        (None, Some(p)) => p.path,
        (None, None) => core::ptr::null(),
    };
    drop(entry_errno);
    let r = real(p1, p2);
    let saved_errno = sys::ErrnoGuard::save();
    let result = r.result();
    let errno = if result < 0 { saved_errno.value() } else { 0 };

    let _ = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
        let mut a = a;
        if let (Some(r), Some(suffix), true) = (route1, call.template_suffix, result >= 0) {
            // mkstemp filled in the redirected template: the program's own
            // template gets the same name, and the event and the table get
            // the filled-in original path (built in target2, unused here).
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
        }
        finish(call, &a, action, shown_target!(), result, errno, work);
    }));
    r
}

/// A path's destination: `len` bytes of NUL-terminated target; `new` when
/// this call creates the redirect (rather than following an earlier one).
#[derive(Clone, Copy)]
struct Route {
    len: usize,
    new: bool,
}

/// Decides where `abs` goes and writes the NUL-terminated target into `out`.
/// `None`: the original path. Sets `failed` to an errno when a new redirect
/// cannot be prepared (the call must then fail: never fall back to the
/// shared file). `work` is scratch space for preparing the target.
fn route(
    abs: &[u8],
    redirect_new: bool,
    copy: bool,
    out: &mut [u8],
    work: &mut [u8],
    failed: &mut i32,
) -> Option<Route> {
    if let Some(t) = redirect::lookup(abs) {
        let n = t.len().min(out.len() - 1);
        out[..n].copy_from_slice(&t[..n]);
        out[n] = 0;
        return Some(Route { len: n, new: false });
    }
    if !redirect_new {
        return None;
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
    let e = redirect::prepare_target(abs, &out[..n], copy, work);
    if e != 0 {
        *failed = e;
    }
    Some(Route { len: n, new: true })
}

/// An open that changes an existing file's content without replacing it
/// (append, read-write, write without truncation) needs the original's
/// content in the worker's copy first.
fn keeps_content(intent: OpenIntent) -> bool {
    use mpaudit_core::flags::AccessMode;
    intent.mode != AccessMode::Read
        && !intent.truncate
        && (intent.append || intent.mode == AccessMode::ReadWrite)
}

fn exists(abs: &[u8], work: &mut [u8]) -> bool {
    // SAFETY: c_path gives a NUL-terminated copy.
    sys::c_path(abs, work)
        .is_some_and(|p| unsafe { sys::stat(p, libc::AT_SYMLINK_NOFOLLOW) }.is_some())
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

/// Reroutes a call that only reads a path (stat, access, opendir, …) to its
/// redirected file, so a worker sees what it wrote. Not logged.
///
/// # Safety
/// `arg.path` is what the program passed.
pub unsafe fn reroute<R>(arg: PathArg, real: impl FnOnce(*const c_char) -> R) -> R {
    if !state::ready() || !redirect::any_redirected() || arg.path.is_null() {
        return real(arg.path);
    }
    let Some(_guard) = HookGuard::enter() else {
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
    // SAFETY: the program's C string, found readable above.
    let path = unsafe { resolve(arg, &mut b.base, &mut b.cwd, &mut b.abs) };
    let mut failed = 0;
    let routed = path
        .abs
        .and_then(|a| route(a, false, false, &mut b.target, &mut b.work, &mut failed))
        .is_some();
    drop(entry_errno);
    if routed {
        real(b.target.as_ptr().cast())
    } else {
        real(arg.path)
    }
}
