//! The verdict on an access and the action it calls for, decided from the
//! job's configuration alone (no I/O), so the library and the runner agree.

use crate::glob::{glob_match, glob_match_whole, GlobList};
use crate::path::strip_dir;

/// How an access relates to the job's I/O discipline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a write.
    Read,
    /// A write to a path the job always tolerates (allow globs).
    Allowed,
    /// A write to a declared output (output globs or declared at run time).
    Declared,
    /// A write made by a registered component (it manages its own outputs).
    Registered,
    /// Any other write.
    Rogue,
}

impl Verdict {
    /// The worse of two verdicts: rogue, registered, declared, allowed,
    /// read, in that order (a call's verdict is the worst over the paths
    /// it writes).
    pub fn worse(self, other: Verdict) -> Verdict {
        let rank = |v: Verdict| match v {
            Verdict::Rogue => 4,
            Verdict::Registered => 3,
            Verdict::Declared => 2,
            Verdict::Allowed => 1,
            Verdict::Read => 0,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Read => "read",
            Verdict::Allowed => "allowed",
            Verdict::Declared => "declared",
            Verdict::Registered => "registered",
            Verdict::Rogue => "rogue",
        }
    }
}

/// What the job asked to happen to rogue writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionSetting {
    Log,
    Redirect,
    Deny,
}

impl ActionSetting {
    /// Parses `log`, `redirect` or `deny` (exactly, as the variable holds it).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        match bytes {
            b"log" => Some(ActionSetting::Log),
            b"redirect" => Some(ActionSetting::Redirect),
            b"deny" => Some(ActionSetting::Deny),
            _ => None,
        }
    }
}

/// What was done about one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Logged,
    Redirected,
    Denied,
    /// Redirection was called for but could not be done (the library sets
    /// this; [`Policy::action_for`] never returns it).
    RedirectFailed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Logged => "logged",
            Action::Redirected => "redirected",
            Action::Denied => "denied",
            Action::RedirectFailed => "redirect-failed",
        }
    }
}

/// Capacity for a demangled qualified name; longer names are matched only
/// in their mangled form.
const DEMANGLED_MAX: usize = 256;

/// The job's configuration, borrowed from the environment's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    /// Declared outputs.
    pub outputs: GlobList<'a>,
    /// Registered components: shared-object names or symbols.
    pub components: GlobList<'a>,
    /// Paths whose writes are always tolerated.
    pub allow: GlobList<'a>,
    pub action: ActionSetting,
    /// Normalised absolute job directory; globs also see paths relative to it.
    pub job_dir: &'a [u8],
    /// This process's own worker directory (empty outside a worker): its
    /// writes there are always allowed.
    pub own_dir: &'a [u8],
    /// The workers directory (may be empty): outside `own_dir`, a write at
    /// or below it is judged like a job file's, whatever the allow globs or
    /// scratch rules say, so that workers cannot write over each other's
    /// results.
    pub workers_dir: &'a [u8],
    /// The log directory (may be empty), guarded the same way from every
    /// process: the job writing there would tamper with its own audit.
    pub log_dir: &'a [u8],
}

impl Policy<'_> {
    /// Classifies an access. `abs` must be normalised (as events' `abs` is):
    /// globs see it and, inside the job directory, the part below it.
    pub fn verdict(
        &self,
        is_write: bool,
        abs: &[u8],
        declared_at_runtime: bool,
        in_registered_component: bool,
    ) -> Verdict {
        if !is_write {
            return Verdict::Read;
        }
        let rel = strip_dir(abs, self.job_dir);
        if self.in_own_dir(abs) || (!self.is_guarded(abs) && self.allow.matches_path(rel, abs)) {
            Verdict::Allowed
        } else if declared_at_runtime || self.outputs.matches_path(rel, abs) {
            Verdict::Declared
        } else if in_registered_component {
            Verdict::Registered
        } else {
            Verdict::Rogue
        }
    }

    /// `abs` is this process's own worker directory or lies below it (and
    /// not in the log directory, should that be inside it).
    pub fn in_own_dir(&self, abs: &[u8]) -> bool {
        is_at_or_below(abs, self.own_dir)
            && !is_at_or_below(abs, self.log_dir)
            && !is_worker_dir_own_file(abs, self.own_dir)
    }

    /// `abs` is the log directory or below it, the workers directory or
    /// below it outside this process's own worker directory, or one of the
    /// audit's own files at the top of that directory (its redirect
    /// manifest and tables, the captured output): the job writing there
    /// would tamper with its own audit.
    pub fn is_guarded(&self, abs: &[u8]) -> bool {
        is_at_or_below(abs, self.log_dir)
            || (is_at_or_below(abs, self.workers_dir) && !self.in_own_dir(abs))
            || is_worker_dir_own_file(abs, self.own_dir)
    }

    /// Scratch space and devices ([`is_scratch`]), unless guarded: a
    /// workers or log directory under `/tmp` is no scratch.
    pub fn is_scratch(&self, abs: &[u8], tmpdir: &[u8]) -> bool {
        is_scratch(abs, self.job_dir, tmpdir) && !self.is_guarded(abs)
    }

    /// True when a component glob matches the object's file name (or, for a
    /// glob with `/`, its whole path), the raw symbol, or the symbol's
    /// qualified name when it is a simple Itanium-mangled one
    /// (`_ZN7HistSvc5writeEv` is also seen as `HistSvc::write`).
    pub fn component_matches(&self, object_path: &[u8], symbol: Option<&[u8]>) -> bool {
        let mut buf = [0u8; DEMANGLED_MAX];
        let qualified = symbol.and_then(|s| qualified_name(s, &mut buf));
        self.components.iter().any(|pattern| {
            glob_match(pattern, object_path)
                || symbol.is_some_and(|s| glob_match_whole(pattern, s))
                || qualified.is_some_and(|q| glob_match_whole(pattern, q))
        })
    }

    /// The action for a verdict. Redirection needs a worker directory, so
    /// outside a worker a rogue write is only logged.
    pub fn action_for(&self, verdict: Verdict, in_worker: bool) -> Action {
        match (verdict, self.action) {
            (Verdict::Rogue, ActionSetting::Log) => Action::Logged,
            (Verdict::Rogue, ActionSetting::Deny) => Action::Denied,
            (Verdict::Rogue, ActionSetting::Redirect) if in_worker => Action::Redirected,
            (Verdict::Rogue, ActionSetting::Redirect) => Action::Logged,
            _ => Action::None,
        }
    }

    /// The action for a write whose caller's stack may be incomplete
    /// (`stack_truncated`). When components are configured, the unseen
    /// frames may hold a registered one: such a rogue write is only logged
    /// (fails open, docs/policy.md), never denied or redirected on a guess.
    /// Its verdict stays rogue: never falsely green.
    pub fn action_for_stack(
        &self,
        verdict: Verdict,
        in_worker: bool,
        stack_truncated: bool,
    ) -> Action {
        match self.action_for(verdict, in_worker) {
            Action::Denied | Action::Redirected
                if stack_truncated && !self.components.is_empty() =>
            {
                Action::Logged
            }
            action => action,
        }
    }
}

/// Under redirect, whether a hard link must link the worker's copy of its
/// source (copied up first) rather than the source itself, given the
/// source's own verdict as a write: a rogue source always when this call
/// redirects (wherever the new name is: a second name of the shared file
/// in scratch or the worker's own directory would take writes in place),
/// a declared or registered one only when the new name is itself routed
/// into the worker's directory (`new_name_routed`), an allowed one never
/// (its writes go in place anyway).
pub fn link_copies_source(source: Verdict, new_name_routed: bool, redirecting: bool) -> bool {
    match source {
        Verdict::Rogue => new_name_routed || redirecting,
        Verdict::Declared | Verdict::Registered => new_name_routed,
        Verdict::Allowed | Verdict::Read => false,
    }
}

/// A rename's source whose writes go in place (`source` allowed) and that
/// lies outside the job directory `job` (scratch, /tmp) or in the worker's
/// own directory `own`: it is moved as it is, in place, to a redirected
/// new name. Copying it into the worker's directory first (as a shared
/// file's source is) left it behind in scratch under another inode: its
/// other hard links no longer reached the moved file (review 3). An
/// allowed source in the job directory is still copied (the shared tree
/// keeps its file until the merge).
pub fn rename_source_moves_in_place(source: Verdict, abs: &[u8], job: &[u8], own: &[u8]) -> bool {
    source == Verdict::Allowed && (!is_at_or_below(abs, job) || is_at_or_below(abs, own))
}

/// Globs every job allows besides its own `allow` list (kernel
/// interfaces). A worker's own directory is allowed too
/// ([`Policy::own_dir`]); the rest of the workers directory and the log
/// directory are not ([`Policy::guarded`]).
pub const ALWAYS_ALLOWED: &[u8] = b"/proc/**:/sys/**";

/// `abs` equals the normalised absolute `dir` or lies below it; never for
/// an empty `dir`.
/// `abs` is, or lies below, one of the audit's own files at the top of
/// the worker directory `own_dir` ([`crate::map::is_own_top_name`]).
pub fn is_worker_dir_own_file(abs: &[u8], own_dir: &[u8]) -> bool {
    !own_dir.is_empty()
        && strip_dir(abs, own_dir).is_some_and(|rel| {
            crate::map::is_own_top_name(rel.split(|&b| b == b'/').next().unwrap_or(rel))
        })
}

pub fn is_at_or_below(abs: &[u8], dir: &[u8]) -> bool {
    !dir.is_empty() && (abs == dir || strip_dir(abs, dir).is_some())
}

/// The workers directory is usable as one (docs/policy.md): it neither is
/// nor contains the job directory, and the log directory is not inside one
/// of its worker directories. A workers directory of `.` or `..` would make
/// every job file "in a worker directory".
pub fn workers_dir_is_sound(workers_dir: &[u8], job_dir: &[u8], log_dir: &[u8]) -> bool {
    !workers_dir.is_empty()
        && !is_at_or_below(job_dir, workers_dir)
        && strip_dir(log_dir, workers_dir).is_none()
}

/// Inside /dev or the temporary directory `tmpdir` but not inside the job
/// directory (which may itself live in /tmp or /dev/shm): scratch space and
/// devices, whose writes are always allowed. `tmpdir` may be empty (none).
pub fn is_scratch(abs: &[u8], job_dir: &[u8], tmpdir: &[u8]) -> bool {
    let under_scratch = strip_dir(abs, b"/dev").is_some()
        || (!tmpdir.is_empty() && strip_dir(abs, tmpdir).is_some());
    under_scratch && strip_dir(abs, job_dir).is_none() && abs != job_dir
}

/// Renders the qualified name of a simple Itanium-mangled symbol into `out`:
/// `_ZN7HistSvc5writeEv` → `HistSvc::write`, `_Z5writePKc` → `write`.
///
/// Understood: `_Z` with an optional `L` (internal linkage), then either a
/// nested name `N [CV/ref qualifiers] [St] <source-name>... E` whose parts
/// may include constructors (`C1`…) and destructors (`D0`…), or a single
/// `[St] <source-name>`. Parameters after the name are ignored. Anything
/// else (templates, substitutions, operators, ABI tags, local names) gives
/// `None`, and callers match the raw symbol only.
pub fn qualified_name<'b>(symbol: &[u8], out: &'b mut [u8]) -> Option<&'b [u8]> {
    let mut rest = symbol.strip_prefix(b"_Z")?;
    rest = rest.strip_prefix(b"L").unwrap_or(rest);
    let mut name = NameWriter {
        out,
        len: 0,
        last: None,
        parts: 0,
    };
    if let Some(mut nested) = rest.strip_prefix(b"N") {
        while let Some((b'r' | b'V' | b'K' | b'R' | b'O', after)) = nested.split_first() {
            nested = after;
        }
        if let Some(after) = nested.strip_prefix(b"St") {
            name.push_part(b"std")?;
            nested = after;
        }
        loop {
            match nested.split_first() {
                Some((b'E', _)) => break,
                Some((b'0'..=b'9', _)) => {
                    let (id, after) = source_name(nested)?;
                    name.push_part(id)?;
                    nested = after;
                }
                Some((b'C', after)) => {
                    let (kind, after) = after.split_first()?;
                    if !matches!(kind, b'1'..=b'5') {
                        return None;
                    }
                    let class = name.last?;
                    name.push_ctor(class, b"")?;
                    nested = after;
                }
                Some((b'D', after)) => {
                    let (kind, after) = after.split_first()?;
                    if !matches!(kind, b'0'..=b'2' | b'4' | b'5') {
                        return None;
                    }
                    let class = name.last?;
                    name.push_ctor(class, b"~")?;
                    nested = after;
                }
                _ => return None,
            }
        }
        // A nested name has at least two parts; `_ZN3FooE` is not a name.
        if name.parts < 2 {
            return None;
        }
    } else {
        if let Some(after) = rest.strip_prefix(b"St") {
            name.push_part(b"std")?;
            rest = after;
        }
        let (id, _) = source_name(rest)?;
        name.push_part(id)?;
    }
    let len = name.len;
    name.out.get(..len)
}

/// Splits `<decimal length><identifier>` off the front of `mangled`.
fn source_name(mangled: &[u8]) -> Option<(&[u8], &[u8])> {
    let digits = mangled.iter().take_while(|b| b.is_ascii_digit()).count();
    // Leading zeros are not valid lengths, and five digits is beyond any name.
    if digits == 0 || digits > 4 || mangled.first() == Some(&b'0') {
        return None;
    }
    let length = mangled
        .get(..digits)?
        .iter()
        .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
    let after_digits = mangled.get(digits..)?;
    let id = after_digits.get(..length)?;
    Some((id, after_digits.get(length..)?))
}

/// Appends `::`-joined parts into a fixed buffer.
struct NameWriter<'o> {
    out: &'o mut [u8],
    len: usize,
    /// The latest identifier, as `(start, end)` in `out`, for constructors.
    last: Option<(usize, usize)>,
    parts: usize,
}

impl NameWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.out.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    fn separate(&mut self) -> Option<()> {
        if self.parts > 0 {
            self.put(b"::")?;
        }
        self.parts += 1;
        Some(())
    }

    fn push_part(&mut self, id: &[u8]) -> Option<()> {
        self.separate()?;
        let start = self.len;
        self.put(id)?;
        self.last = Some((start, self.len));
        Some(())
    }

    /// Appends `::<prefix><class>`, the class name copied from earlier output.
    fn push_ctor(&mut self, (start, end): (usize, usize), prefix: &[u8]) -> Option<()> {
        self.separate()?;
        self.put(prefix)?;
        let new_end = self.len.checked_add(end.checked_sub(start)?)?;
        if new_end > self.out.len() || end > self.len {
            return None;
        }
        self.out.copy_within(start..end, self.len);
        self.len = new_end;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Verdict; 5] = [
        Verdict::Read,
        Verdict::Allowed,
        Verdict::Declared,
        Verdict::Registered,
        Verdict::Rogue,
    ];

    #[test]
    fn only_an_allowed_rename_source_outside_the_job_dir_or_in_the_own_dir_moves_in_place() {
        let (job, own) = (&b"/j"[..], &b"/j/mpaudit-workers/worker_1"[..]);
        for v in ALL {
            let allowed = v == Verdict::Allowed;
            assert_eq!(
                rename_source_moves_in_place(v, b"/tmp/t", job, own),
                allowed
            );
            assert_eq!(
                rename_source_moves_in_place(v, b"/j/mpaudit-workers/worker_1/s", job, own),
                allowed
            );
            assert!(!rename_source_moves_in_place(v, b"/j/x.log", job, own));
            assert!(!rename_source_moves_in_place(v, b"/j", job, own));
        }
        assert!(rename_source_moves_in_place(
            Verdict::Allowed,
            b"/jx/t",
            job,
            own
        ));
    }

    #[test]
    fn the_worse_verdict_is_the_later_in_rogue_registered_declared_allowed_read() {
        for (i, &a) in ALL.iter().enumerate() {
            for (j, &b) in ALL.iter().enumerate() {
                assert_eq!(a.worse(b), ALL[i.max(j)], "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn a_rogue_link_source_is_copied_wherever_the_new_name_is() {
        // `ln data.txt "$TMPDIR/h"` under redirect: the new name is in place.
        assert!(link_copies_source(Verdict::Rogue, false, true));
        assert!(link_copies_source(Verdict::Rogue, true, false));
        // Log mode, or a rogue write only logged (truncated stack).
        assert!(!link_copies_source(Verdict::Rogue, false, false));
        for v in [Verdict::Declared, Verdict::Registered] {
            assert!(link_copies_source(v, true, true));
            assert!(!link_copies_source(v, false, true));
        }
        for v in [Verdict::Allowed, Verdict::Read] {
            assert!(!link_copies_source(v, true, true));
        }
    }

    fn policy(action: ActionSetting) -> Policy<'static> {
        Policy {
            outputs: GlobList::new(b"*.root:hist-*.txt:out/**"),
            components: GlobList::new(
                b"libHistSvc.so:HistSvc::*:/opt/lcg/**/libTHist*.so:write_summary",
            ),
            allow: GlobList::new(b"/tmp/**:*.log:/dev/null"),
            action,
            job_dir: b"/job",
            own_dir: b"",
            workers_dir: b"",
            log_dir: b"",
        }
    }

    #[test]
    fn names() {
        let verdicts = [
            Verdict::Read,
            Verdict::Allowed,
            Verdict::Declared,
            Verdict::Registered,
            Verdict::Rogue,
        ];
        let names: Vec<&str> = verdicts.iter().map(|v| v.as_str()).collect();
        assert_eq!(
            names,
            ["read", "allowed", "declared", "registered", "rogue"]
        );
        let actions = [
            Action::None,
            Action::Logged,
            Action::Redirected,
            Action::Denied,
            Action::RedirectFailed,
        ];
        let names: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            names,
            ["none", "logged", "redirected", "denied", "redirect-failed"]
        );
        assert_eq!(ActionSetting::parse(b"log"), Some(ActionSetting::Log));
        assert_eq!(
            ActionSetting::parse(b"redirect"),
            Some(ActionSetting::Redirect)
        );
        assert_eq!(ActionSetting::parse(b"deny"), Some(ActionSetting::Deny));
        for bad in [&b""[..], b"Log", b"deny ", b"redirected", b"\xff"] {
            assert_eq!(ActionSetting::parse(bad), None);
        }
    }

    #[test]
    fn verdict_precedence() {
        let p = policy(ActionSetting::Log);
        // Reads are reads whatever else holds.
        assert_eq!(p.verdict(false, b"/job/x.root", true, true), Verdict::Read);
        // Allow beats declared beats registered.
        assert_eq!(p.verdict(true, b"/tmp/a/b", true, true), Verdict::Allowed);
        assert_eq!(
            p.verdict(true, b"/job/run.log", true, true),
            Verdict::Allowed
        );
        assert_eq!(
            p.verdict(true, b"/job/x.root", false, true),
            Verdict::Declared
        );
        assert_eq!(
            p.verdict(true, b"/job/data.bin", true, true),
            Verdict::Declared
        );
        assert_eq!(
            p.verdict(true, b"/job/data.bin", false, true),
            Verdict::Registered
        );
        assert_eq!(
            p.verdict(true, b"/job/data.bin", false, false),
            Verdict::Rogue
        );
    }

    #[test]
    fn globs_see_job_relative_and_absolute_paths() {
        let p = policy(ActionSetting::Log);
        assert_eq!(
            p.verdict(true, b"/job/out/a/b.dat", false, false),
            Verdict::Declared
        );
        assert_eq!(
            p.verdict(true, b"/elsewhere/out/a/b.dat", false, false),
            Verdict::Rogue
        );
        assert_eq!(
            p.verdict(true, b"/elsewhere/hist-3.txt", false, false),
            Verdict::Declared
        );
        assert_eq!(p.verdict(true, b"/job", false, false), Verdict::Rogue);
        assert_eq!(
            p.verdict(true, b"/dev/null", false, false),
            Verdict::Allowed
        );
        assert_eq!(p.verdict(true, b"/dev/nullx", false, false), Verdict::Rogue);
        let rooted = Policy { job_dir: b"/", ..p };
        assert_eq!(
            rooted.verdict(true, b"/out/x", false, false),
            Verdict::Declared
        );
    }

    // Regression: every worker could write anywhere under the workers and
    // log directories (both were allowed).
    #[test]
    fn only_the_own_worker_directory_is_allowed() {
        let p = Policy {
            own_dir: b"/job/w/worker_2",
            workers_dir: b"/job/w",
            log_dir: b"/job/logs",
            ..policy(ActionSetting::Redirect)
        };
        let v = |abs: &[u8]| p.verdict(true, abs, false, false);
        assert_eq!(v(b"/job/w/worker_2"), Verdict::Allowed);
        assert_eq!(v(b"/job/w/worker_2/x"), Verdict::Allowed);
        assert_eq!(v(b"/job/w/worker_3/x"), Verdict::Rogue);
        assert_eq!(v(b"/job/w/worker_20/x"), Verdict::Rogue);
        assert_eq!(v(b"/job/w"), Verdict::Rogue);
        assert_eq!(v(b"/job/logs/mpaudit-1-2.jsonl"), Verdict::Rogue);
        assert_eq!(v(b"/job/logs"), Verdict::Rogue);
        // Guarded beats the allow globs (`*.log`, `/tmp/**`) and scratch.
        assert_eq!(v(b"/job/w/worker_3/stdout.log"), Verdict::Rogue);
        // Regression (review 2, F13): the audit's own files at the top of
        // the worker's own directory were "allowed" to the job, which could
        // truncate the redirect table under every process of the worker.
        assert_eq!(v(b"/job/w/worker_2/.mpaudit-1-2.redirects"), Verdict::Rogue);
        assert_eq!(
            v(b"/job/w/worker_2/mpaudit-redirects.jsonl"),
            Verdict::Rogue
        );
        assert_eq!(v(b"/job/w/worker_2/stdout.log"), Verdict::Rogue);
        assert_eq!(v(b"/job/w/worker_2/sub/stdout.log"), Verdict::Allowed);
        assert_eq!(v(b"/job/w/worker_2/_stdout.log"), Verdict::Allowed);
        assert_eq!(v(b"/job/run.log"), Verdict::Allowed);
        assert_eq!(v(b"/job/w/worker_3/x.root"), Verdict::Declared);
        let in_tmp = Policy {
            job_dir: b"/home/job",
            own_dir: b"/tmp/w/worker_0",
            workers_dir: b"/tmp/w",
            log_dir: b"/tmp/logs",
            ..p
        };
        assert!(in_tmp.is_scratch(b"/tmp/other", b"/tmp"));
        assert!(in_tmp.is_scratch(b"/tmp/w/worker_0/x", b"/tmp"));
        assert!(!in_tmp.is_scratch(b"/tmp/w/worker_1/x", b"/tmp"));
        assert!(!in_tmp.is_scratch(b"/tmp/logs/x", b"/tmp"));
        // A log directory inside the worker's own directory stays guarded.
        let nested = Policy {
            log_dir: b"/job/w/worker_2/logs",
            ..p
        };
        assert!(nested.is_guarded(b"/job/w/worker_2/logs/x"));
        assert!(!nested.is_guarded(b"/job/w/worker_2/x"));
        // Outside a worker nothing is its own.
        let root = Policy { own_dir: b"", ..p };
        assert_eq!(
            root.verdict(true, b"/job/w/worker_2/x", false, false),
            Verdict::Rogue
        );
    }

    #[test]
    fn a_workers_dir_that_holds_the_job_is_unsound() {
        let ok = |w: &[u8], l: &[u8]| workers_dir_is_sound(w, b"/job", l);
        assert!(ok(b"/job/mpaudit-workers", b"/job/mpaudit-logs"));
        assert!(ok(b"/scratch/w", b"/job/logs"));
        assert!(!ok(b"/job", b"/job/logs"));
        assert!(!ok(b"/", b"/job/logs"));
        assert!(!ok(b"", b"/job/logs"));
        assert!(!ok(b"/job/w", b"/job/w/worker_0/logs"));
        assert!(ok(b"/job/w", b"/job/w2"));
    }

    #[test]
    fn actions() {
        use Verdict::*;
        for setting in [
            ActionSetting::Log,
            ActionSetting::Redirect,
            ActionSetting::Deny,
        ] {
            let p = policy(setting);
            for verdict in [Read, Allowed, Declared, Registered] {
                assert_eq!(p.action_for(verdict, true), Action::None);
                assert_eq!(p.action_for(verdict, false), Action::None);
            }
        }
        assert_eq!(
            policy(ActionSetting::Log).action_for(Rogue, true),
            Action::Logged
        );
        assert_eq!(
            policy(ActionSetting::Log).action_for(Rogue, false),
            Action::Logged
        );
        assert_eq!(
            policy(ActionSetting::Deny).action_for(Rogue, true),
            Action::Denied
        );
        assert_eq!(
            policy(ActionSetting::Deny).action_for(Rogue, false),
            Action::Denied
        );
        assert_eq!(
            policy(ActionSetting::Redirect).action_for(Rogue, true),
            Action::Redirected
        );
        assert_eq!(
            policy(ActionSetting::Redirect).action_for(Rogue, false),
            Action::Logged
        );
    }

    #[test]
    fn a_truncated_stack_only_logs_when_components_are_configured() {
        use Verdict::*;
        for setting in [ActionSetting::Redirect, ActionSetting::Deny] {
            let with = policy(setting);
            let without = Policy {
                components: GlobList::new(b""),
                ..with
            };
            assert_eq!(with.action_for_stack(Rogue, true, true), Action::Logged);
            assert_eq!(
                with.action_for_stack(Rogue, true, false),
                with.action_for(Rogue, true)
            );
            // No component could have been missed: the stack does not matter.
            assert_eq!(
                without.action_for_stack(Rogue, true, true),
                without.action_for(Rogue, true)
            );
            assert_ne!(without.action_for(Rogue, true), Action::Logged);
        }
    }

    #[test]
    fn components_by_object_name_path_or_symbol() {
        let p = policy(ActionSetting::Log);
        assert!(p.component_matches(b"/job/lib/libHistSvc.so", None));
        assert!(!p.component_matches(b"/job/lib/libHistSvc.so.1", None));
        assert!(p.component_matches(b"/opt/lcg/ROOT/6.30/lib/libTHistPainter.so", None));
        assert!(!p.component_matches(b"/usr/lib/libTHistPainter.so", None));
        // Demangled qualified name.
        assert!(p.component_matches(b"/job/lib/libAlg.so", Some(b"_ZN7HistSvc5writeEv")));
        assert!(p.component_matches(b"/job/lib/libAlg.so", Some(b"_ZNK7HistSvc4nameEv")));
        assert!(p.component_matches(b"/job/lib/libAlg.so", Some(b"_ZN7HistSvc4Impl5flushEv")));
        assert!(!p.component_matches(b"/job/lib/libAlg.so", Some(b"_ZN9LegacyAlg7executeEv")));
        assert!(!p.component_matches(b"/job/lib/libAlg.so", Some(b"_ZN8HistSvcX5writeEv")));
        // Raw symbols: C functions, and mangled names the glob spells out.
        assert!(p.component_matches(b"/job/bin/minifw", Some(b"write_summary")));
        let raw = Policy {
            components: GlobList::new(b"_ZN9LegacyAlg*"),
            ..p
        };
        assert!(raw.component_matches(b"/x", Some(b"_ZN9LegacyAlg7executeEv")));
        // A template is not demangled, so only its raw form can match.
        assert!(!p.component_matches(b"/x", Some(b"_ZN7HistSvc5writeIiEEvT_")));
        assert!(!p.component_matches(b"/job/bin/minifw", None));
        let none = Policy {
            components: GlobList::new(b""),
            ..p
        };
        assert!(!none.component_matches(b"/job/lib/libHistSvc.so", Some(b"_ZN7HistSvc5writeEv")));
    }

    #[test]
    fn double_colons_do_not_split_component_lists() {
        let p = Policy {
            components: GlobList::new(b"HistSvc::write:libX.so"),
            ..policy(ActionSetting::Log)
        };
        assert!(p.component_matches(b"/a/libY.so", Some(b"_ZN7HistSvc5writeEv")));
        assert!(!p.component_matches(b"/a/libY.so", Some(b"_ZN7HistSvc4readEv")));
        assert!(p.component_matches(b"/a/libX.so", None));
        assert!(!p.component_matches(b"/a/HistSvc", Some(b"write")));
    }

    fn qualified(symbol: &[u8]) -> Option<String> {
        let mut buf = [0u8; DEMANGLED_MAX];
        qualified_name(symbol, &mut buf).map(|q| String::from_utf8(q.to_vec()).unwrap())
    }

    #[test]
    fn qualified_names_of_simple_manglings() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"_ZN7HistSvc5writeEv", Some("HistSvc::write")),
            (b"_ZNK7HistSvc4nameEv", Some("HistSvc::name")),
            (b"_ZNVKR2ns3Obj3getEv", Some("ns::Obj::get")),
            (
                b"_ZN6Athena7HistSvc5writeERKSs",
                Some("Athena::HistSvc::write"),
            ),
            (b"_ZN7HistSvcC2Ev", Some("HistSvc::HistSvc")),
            (b"_ZN2ns7HistSvcD1Ev", Some("ns::HistSvc::~HistSvc")),
            (b"_ZNSt6thread4joinEv", Some("std::thread::join")),
            (b"_Z5writePKc", Some("write")),
            (b"_ZL6helperv", Some("helper")),
            (b"_ZSt4cout", Some("std::cout")),
            (b"_Z3foo", Some("foo")),
            (b"_ZN12_GLOBAL__N_14implEv", Some("_GLOBAL__N_1::impl")),
            (b"_ZN7HistSvc5writeEv.cold", Some("HistSvc::write")),
            // Not simple enough: fall back to the raw symbol.
            (b"_ZN3FooE", None),
            (b"_ZN3FooIiE3barEv", None),
            (b"_ZN3Foo4nameB5cxx11Ev", None),
            (b"_ZNSt6vectorIiSaIiEE9push_backEOi", None),
            (b"_ZN3FooplERKS_", None),
            (b"_ZZ4mainE5local", None),
            (b"_ZN7HistSvc5write", None),
            (b"_ZN9HistSvc", None),
            (b"_ZN99999x", None),
            (b"_ZN05abcdeEv", None),
            (b"_ZNC1Ev", None),
            (b"_ZN3FooC9Ev", None),
            (b"_Z", None),
            (b"_Z0", None),
            (b"main", None),
            (b"", None),
        ];
        for (symbol, want) in cases {
            assert_eq!(
                qualified(symbol).as_deref(),
                *want,
                "{}",
                String::from_utf8_lossy(symbol)
            );
        }
    }

    #[test]
    fn qualified_names_that_do_not_fit_are_refused() {
        let long = format!("_ZN{}{}5writeEv", 300, "x".repeat(300));
        assert_eq!(qualified(long.as_bytes()), None);
        let mut small = [0u8; 14];
        assert_eq!(
            qualified_name(b"_ZN7HistSvc5writeEv", &mut small),
            Some(&b"HistSvc::write"[..])
        );
        let mut smaller = [0u8; 13];
        assert_eq!(qualified_name(b"_ZN7HistSvc5writeEv", &mut smaller), None);
        let mut ctor = [0u8; 16];
        assert_eq!(qualified_name(b"_ZN7HistSvcD0Ev", &mut ctor), None);
        let mut ctor = [0u8; 17];
        assert_eq!(
            qualified_name(b"_ZN7HistSvcD0Ev", &mut ctor),
            Some(&b"HistSvc::~HistSvc"[..])
        );
    }

    fn mangled_atom() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"_Z".to_vec()),
            Just(b"N".to_vec()),
            Just(b"E".to_vec()),
            Just(b"K".to_vec()),
            Just(b"St".to_vec()),
            Just(b"C1".to_vec()),
            Just(b"D0".to_vec()),
            Just(b"I".to_vec()),
            "[0-9]{1,3}".prop_map(String::into_bytes),
            "[A-Za-z_]{1,6}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 1..4),
        ]
    }

    proptest! {
        #[test]
        fn demangling_never_panics_and_stays_in_bounds(
            atoms in proptest::collection::vec(mangled_atom(), 0..12),
            size in 0usize..40,
        ) {
            let symbol = atoms.concat();
            let mut buf = vec![0u8; size];
            if let Some(name) = qualified_name(&symbol, &mut buf) {
                prop_assert!(name.len() <= size);
                prop_assert!(!name.is_empty());
            }
            let _ = policy(ActionSetting::Redirect).component_matches(&symbol, Some(&symbol));
        }

        #[test]
        fn nested_names_round_trip(parts in proptest::collection::vec("[A-Za-z_][A-Za-z0-9_]{0,11}", 2..5)) {
            let mut mangled = b"_ZN".to_vec();
            for part in &parts {
                mangled.extend_from_slice(part.len().to_string().as_bytes());
                mangled.extend_from_slice(part.as_bytes());
            }
            mangled.extend_from_slice(b"Ev");
            prop_assert_eq!(qualified(&mangled), Some(parts.join("::")));
        }

        #[test]
        fn writes_get_exactly_one_verdict_and_reads_no_action(
            abs in "(/[a-z.]{1,6}){1,4}",
            is_write in any::<bool>(),
            declared in any::<bool>(),
            registered in any::<bool>(),
            in_worker in any::<bool>(),
        ) {
            let p = policy(ActionSetting::Redirect);
            let verdict = p.verdict(is_write, abs.as_bytes(), declared, registered);
            prop_assert_eq!(verdict == Verdict::Read, !is_write);
            if is_write && declared && verdict != Verdict::Allowed {
                prop_assert_eq!(verdict, Verdict::Declared);
            }
            let action = p.action_for(verdict, in_worker);
            prop_assert_eq!(action != Action::None, verdict == Verdict::Rogue);
        }
    }
}
