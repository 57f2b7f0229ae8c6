//! Where a redirected write lands: a path inside the worker's own directory.
//!
//! The one promise this module makes, whatever bytes it is given: a mapped
//! path is the worker directory itself or lies strictly below it, with no
//! `.`, `..` or empty component, so a redirected write can never escape into
//! the job directory, another worker's directory or anywhere else.

use crate::path::{absolutize, strip_dir, MAX_ABS};

/// Component under the worker directory that holds paths from outside the
/// job directory (`/tmp/x` becomes `<worker_dir>/_abs/tmp/x`).
pub const OUTSIDE_JOB: &[u8] = b"_abs";

/// Component under the worker directory that holds the job's top names an
/// escape would make too long (`/job/_<254 bytes>` becomes
/// `<worker_dir>/_long/_<254 bytes>`): the escaped form of a name of
/// [`NAME_MAX`] bytes has one byte more than any file system takes, so such
/// a name keeps its own bytes, one directory down. `long` is no escaped
/// name, so no job path maps to `_long` itself.
pub const LONG_ESCAPED: &[u8] = b"_long";

/// The longest file name Linux file systems take.
pub const NAME_MAX: usize = 255;

/// Names the runner and the library keep at the top of a worker directory
/// for themselves: the worker's captured output, its redirect manifest and
/// its redirect tables (`.mpaudit-<pid>-<ns>.redirects`).
pub fn is_own_top_name(name: &[u8]) -> bool {
    matches!(
        name,
        b"stdout.log" | b"stderr.log" | b"mpaudit-redirects.jsonl"
    ) || name.starts_with(b".mpaudit-")
}

/// True when a job file whose path starts with the component `first` is
/// kept below an escaped name, `_<first>`: names the worker directory uses
/// for itself ([`OUTSIDE_JOB`], [`is_own_top_name`]) and, so that the
/// escape is reversible, every name that starts with `_`. A job file
/// called `stdout.log` then never lands on the worker's captured output,
/// and a job directory `_abs` never meets the paths from outside the job.
fn is_escaped_top_name(first: &[u8]) -> bool {
    first.starts_with(b"_") || is_own_top_name(first)
}

fn first_component(rel: &[u8]) -> &[u8] {
    rel.split(|&b| b == b'/').next().unwrap_or(rel)
}

/// How a job-relative path `rel` (not empty) is kept below the worker
/// directory: the prefix that goes before it. Plain names go as they are;
/// escaped ones ([`is_escaped_top_name`]) get one more `_` in front, or,
/// when that would not fit [`NAME_MAX`], go below [`LONG_ESCAPED`] as
/// they are.
fn escape_of(rel: &[u8]) -> &'static [u8] {
    let first = first_component(rel);
    if !is_escaped_top_name(first) {
        b""
    } else if first.len() < NAME_MAX {
        b"_"
    } else {
        b"_long/"
    }
}

/// The job-relative path a worker-relative path `rel` (below the worker
/// directory, not empty) stands for: a suffix of `rel`, with the escape
/// of [`escape_of`] taken off; `None` for a name no job path maps to (the
/// worker directory's own files, [`OUTSIDE_JOB`], [`LONG_ESCAPED`] itself,
/// or a `_` name whose rest needs no escape).
pub fn job_rel_of(rel: &[u8]) -> Option<&[u8]> {
    let first = first_component(rel);
    if first == OUTSIDE_JOB || is_own_top_name(first) {
        return None;
    }
    let job_rel = if first == LONG_ESCAPED {
        rel.get(LONG_ESCAPED.len() + 1..)?
    } else if first.starts_with(b"_") {
        rel.get(1..)?
    } else {
        rel
    };
    // One to one: only the form escape_of gives the job path stands for it.
    let escaped_so = rel.len() - job_rel.len() == escape_of(job_rel).len();
    (!job_rel.is_empty() && escaped_so).then_some(job_rel)
}

/// Maps the absolute path `abs` into `worker_dir`, writing it to `out`.
///
/// Inside `job_dir` the path keeps its job-relative part
/// (`/job/a/b` → `<worker_dir>/a/b`); `job_dir` itself maps to `worker_dir`;
/// anything else goes below `<worker_dir>/_abs`. A path already inside
/// `worker_dir` maps to itself, so mapping twice changes nothing.
///
/// `abs` is normalised again here rather than trusted. Returns the length
/// written, or `None` when `abs` is relative or too long, when `job_dir` or
/// `worker_dir` is not a normalised absolute path (or `worker_dir` is `/`),
/// or when the result does not fit `out`.
pub fn map_to_worker(
    abs: &[u8],
    job_dir: &[u8],
    worker_dir: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let mut normal = [0u8; MAX_ABS];
    let normal_len = absolutize(abs, None, &mut normal)?;
    map_normal_to_worker(normal.get(..normal_len)?, job_dir, worker_dir, out)
}

/// [`map_to_worker`] for a path already in normal form (checked, not
/// trusted: anything else is refused), without the 8 KiB normalisation
/// buffer: the library maps on the stack of whatever thread or signal
/// handler made the call.
pub fn map_normal_to_worker(
    abs: &[u8],
    job_dir: &[u8],
    worker_dir: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    if !is_normal_abs(job_dir) || !is_normal_abs(worker_dir) || worker_dir == b"/" {
        return None;
    }
    if !is_normal_abs(abs) || abs.len() > MAX_ABS {
        return None;
    }
    if let Some(rel) = strip_dir(abs, worker_dir) {
        // The worker directory's own files are the audit's: a write aimed
        // at one lands beside them, as a path from outside the job would.
        if is_own_top_name(first_component(rel)) {
            return copy_parts(out, &[worker_dir, b"/", OUTSIDE_JOB, abs]);
        }
        return copy_parts(out, &[abs]);
    }
    if abs == worker_dir {
        return copy_parts(out, &[abs]);
    }
    if abs == job_dir {
        return copy_parts(out, &[worker_dir]);
    }
    if let Some(rel) = strip_dir(abs, job_dir) {
        return copy_parts(out, &[worker_dir, b"/", escape_of(rel), rel]);
    }
    match abs.get(1..) {
        Some(below_root) if !below_root.is_empty() => {
            copy_parts(out, &[worker_dir, b"/", OUTSIDE_JOB, b"/", below_root])
        }
        _ => copy_parts(out, &[worker_dir, b"/", OUTSIDE_JOB]),
    }
}

/// Builds `<workers_dir>/worker_<worker>` into `out`; the length, or `None`
/// when it does not fit.
pub fn worker_dir_into(workers_dir: &[u8], worker: u32, out: &mut [u8]) -> Option<usize> {
    numbered_dir_into(workers_dir, b"worker_", worker, out)
}

/// `<dir>/<prefix><n>` into `out`.
fn numbered_dir_into(dir: &[u8], prefix: &[u8], n: u32, out: &mut [u8]) -> Option<usize> {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start = start.checked_sub(1)?;
        *digits.get_mut(start)? = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let separator: &[u8] = if dir.ends_with(b"/") { b"" } else { b"/" };
    copy_parts(out, &[dir, separator, prefix, digits.get(start..)?])
}

/// Component under the workers directory that holds the worker directories
/// of launcher rank `r` when the rank runs several workers itself:
/// `rank_<r>/worker_<k>`.
pub const RANK_PREFIX: &[u8] = b"rank_";

/// Builds `<workers_dir>/rank_<rank>` into `out`: the directory a rank's own
/// runner (or fork-mode root) keeps its workers in. The length, or `None`
/// when it does not fit.
pub fn rank_dir_into(workers_dir: &[u8], rank: u32, out: &mut [u8]) -> Option<usize> {
    numbered_dir_into(workers_dir, RANK_PREFIX, rank, out)
}

/// The directory of a worker, composing the two sources of identity (see
/// docs/policy.md, "Ranks"): local worker `k` of launcher rank `r` is
/// `<workers_dir>/rank_<r>/worker_<k>`; without a rank it is
/// `<workers_dir>/worker_<k>`. A rank that is itself the worker (no local
/// numbering) passes its rank as `worker` and `None` as `rank`.
pub fn worker_dir_for(
    workers_dir: &[u8],
    rank: Option<u32>,
    worker: u32,
    out: &mut [u8],
) -> Option<usize> {
    match rank {
        None => worker_dir_into(workers_dir, worker, out),
        Some(r) => {
            // Built in `out` itself, leaf last: no path-sized buffer on the
            // stack (the library runs this in a fork child's atfork
            // handler, maybe on a signal handler's small stack).
            let n = rank_dir_into(workers_dir, r, out)?;
            let mut leaf = [0u8; 24];
            let m = numbered_dir_into(b"", b"worker_", worker, &mut leaf)?;
            copy_parts(out.get_mut(n..)?, &[&leaf[..m]]).map(|k| n + k)
        }
    }
}

/// True for `/` and for `/a/b` forms: absolute, no trailing slash, and no
/// empty, `.` or `..` component.
pub fn is_normal_abs(path: &[u8]) -> bool {
    match path.split_first() {
        Some((b'/', b"")) => true,
        Some((b'/', rest)) => rest
            .split(|&b| b == b'/')
            .all(|c| !matches!(c, b"" | b"." | b"..")),
        _ => false,
    }
}

/// Concatenates `parts` into `out`; the length, or `None` when too long.
/// The inverse of [`map_normal_to_worker`]: the original path a path inside
/// `worker_dir` stands for (`<worker_dir>/a` → `<job_dir>/a`,
/// `<worker_dir>/_abs/tmp/x` → `/tmp/x`), into `out`; `None` when `target`
/// is not inside `worker_dir`, is one of the worker directory's own files
/// ([`is_own_top_name`]) or a name no mapping makes, or the result does not
/// fit.
pub fn unmap_from_worker(
    target: &[u8],
    job_dir: &[u8],
    worker_dir: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    if target == worker_dir {
        return copy_parts(out, &[job_dir]);
    }
    let rel = strip_dir(target, worker_dir)?;
    let first = first_component(rel);
    if first == OUTSIDE_JOB {
        return match rel.get(OUTSIDE_JOB.len() + 1..) {
            Some(below) if !below.is_empty() => copy_parts(out, &[b"/", below]),
            _ => copy_parts(out, &[b"/"]),
        };
    }
    let job_rel = job_rel_of(rel)?;
    let separator: &[u8] = if job_dir == b"/" { b"" } else { b"/" };
    copy_parts(out, &[job_dir, separator, job_rel])
}

fn copy_parts(out: &mut [u8], parts: &[&[u8]]) -> Option<usize> {
    let mut len = 0usize;
    for part in parts {
        let end = len.checked_add(part.len())?;
        out.get_mut(len..end)?.copy_from_slice(part);
        len = end;
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmapping_inverts_the_mapping() {
        let (job, w) = (&b"/job"[..], &b"/job/mpaudit-workers/worker_1"[..]);
        for abs in [
            &b"/job"[..],
            b"/job/a/b",
            b"/tmp/x",
            b"/",
            b"/job/mpaudit-workers/worker_1/z",
        ] {
            let mut t = [0u8; 256];
            let n = map_normal_to_worker(abs, job, w, &mut t).unwrap();
            let mut back = [0u8; 256];
            let m = unmap_from_worker(&t[..n], job, w, &mut back).unwrap();
            let expect: &[u8] = if abs.starts_with(w) { b"/job/z" } else { abs };
            assert_eq!(&back[..m], expect, "{}", String::from_utf8_lossy(abs));
        }
        assert_eq!(
            unmap_from_worker(b"/elsewhere/a", job, w, &mut [0u8; 64]),
            None
        );
        // The worker directory's own files stand for no job file.
        for own in [
            &b"/job/mpaudit-workers/worker_1/stdout.log"[..],
            b"/job/mpaudit-workers/worker_1/mpaudit-redirects.jsonl",
            b"/job/mpaudit-workers/worker_1/.mpaudit-7-9.redirects",
            b"/job/mpaudit-workers/worker_1/_unescaped",
        ] {
            assert_eq!(unmap_from_worker(own, job, w, &mut [0u8; 256]), None);
        }
    }

    /// Regression (review 2, F1): a job file named `stdout.log` was mapped
    /// onto the worker's captured stdout, and a job directory `_abs` onto the
    /// paths from outside the job.
    #[test]
    fn regression_job_files_named_like_the_worker_dirs_own_never_meet_them() {
        let (job, w) = ("/job", "/w/worker_0");
        assert_eq!(
            map("/job/stdout.log", job, w).unwrap(),
            "/w/worker_0/_stdout.log"
        );
        assert_eq!(
            map("/job/_abs/tmp/x", job, w).unwrap(),
            "/w/worker_0/__abs/tmp/x"
        );
        assert_ne!(map("/job/_abs/tmp/x", job, w), map("/tmp/x", job, w));
    }

    /// The worker-relative part of `abs` mapped for `/job` into `/w/worker_0`,
    /// and what it unmaps to.
    fn round_trip(abs: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
        let (job, w) = (&b"/job"[..], &b"/w/worker_0"[..]);
        let mut t = vec![0u8; 4 * NAME_MAX];
        let n = map_normal_to_worker(abs, job, w, &mut t).unwrap();
        let mut back = vec![0u8; 4 * NAME_MAX];
        let m = unmap_from_worker(&t[..n], job, w, &mut back);
        let rel = strip_dir(&t[..n], w).unwrap().to_vec();
        (rel, m.map(|m| back[..m].to_vec()))
    }

    /// Regression (review 3, R3-5): a job file at the top whose name starts
    /// with `_` (or is one of the worker directory's own names) and is 255
    /// bytes long was escaped to 256 bytes, which no file system takes: the
    /// redirected write failed with ENAMETOOLONG where in place it worked.
    /// Every length up to NAME_MAX now has a worker-side name whose every
    /// component fits, and maps back.
    #[test]
    fn regression_every_top_name_up_to_name_max_has_a_worker_side_name_that_fits() {
        for len in 1..=NAME_MAX {
            for lead in [&b"_"[..], b"__", b".mpaudit-", b"z", b"_abs", b"_long"] {
                if lead.len() > len {
                    continue;
                }
                let mut name = lead.to_vec();
                name.resize(len, b'z');
                for tail in [&b""[..], b"/x", b"/_y/stdout.log"] {
                    let mut abs = b"/job/".to_vec();
                    abs.extend_from_slice(&name);
                    abs.extend_from_slice(tail);
                    let (rel, back) = round_trip(&abs);
                    let shown = String::from_utf8_lossy(&rel).into_owned();
                    assert!(
                        rel.split(|&b| b == b'/').all(|c| c.len() <= NAME_MAX),
                        "{len}: {shown}"
                    );
                    assert_eq!(back.as_deref(), Some(&abs[..]), "{len}: {shown}");
                }
            }
        }
        let mut long = b"/job/_".to_vec();
        long.resize(5 + NAME_MAX, b'z');
        let mut want = b"_long/_".to_vec();
        want.resize(6 + NAME_MAX, b'z');
        assert_eq!(
            round_trip(&long).0,
            want,
            "the name's own bytes, below _long"
        );
        // One byte less still takes the `_` escape, as before.
        long.pop();
        assert_eq!(round_trip(&long).0[..2], *b"__");
    }

    /// The layout of worker directories written before `_long` still reads
    /// back the same, and `_long` holds nothing but the names that need it.
    #[test]
    fn existing_layouts_unmap_as_before_and_long_holds_only_long_names() {
        let (job, w) = (&b"/job"[..], &b"/w/worker_0"[..]);
        let unmap = |t: &str| {
            let mut out = [0u8; 1024];
            let n = unmap_from_worker(t.as_bytes(), job, w, &mut out)?;
            Some(String::from_utf8(out[..n].to_vec()).unwrap())
        };
        for (t, want) in [
            ("/w/worker_0/__x/y", Some("/job/_x/y")),
            ("/w/worker_0/__abs/tmp/x", Some("/job/_abs/tmp/x")),
            ("/w/worker_0/_stdout.log", Some("/job/stdout.log")),
            (
                "/w/worker_0/_.mpaudit-1-2.redirects",
                Some("/job/.mpaudit-1-2.redirects"),
            ),
            ("/w/worker_0/_abs/tmp/x", Some("/tmp/x")),
            ("/w/worker_0/long", Some("/job/long")),
            ("/w/worker_0/__long", Some("/job/_long")),
            ("/w/worker_0/_long", None),
            ("/w/worker_0/_long/x", None),
            ("/w/worker_0/_long/_short", None),
            ("/w/worker_0/_x", None),
        ] {
            assert_eq!(unmap(t).as_deref(), want, "{t}");
        }
        let mut t = b"/w/worker_0/_long/_".to_vec();
        t.resize(t.len() + NAME_MAX - 1, b'z');
        assert!(unmap(std::str::from_utf8(&t).unwrap()).is_some());
    }

    /// A top name of any legal bytes and length, often one the escape is
    /// for, with a short rest.
    fn any_top_name_path() -> impl Strategy<Value = Vec<u8>> {
        let lead = prop::sample::select(vec![
            &b""[..],
            b"_",
            b"__",
            b"_long",
            b"_abs",
            b".mpaudit-",
            b"stdout.log",
        ]);
        let byte = (1u8..=255).prop_filter("no slash", |&b| b != b'/');
        (
            lead,
            prop::collection::vec(byte, 0..=NAME_MAX),
            prop::sample::select(vec![&b""[..], b"/a", b"/_b/c"]),
        )
            .prop_filter_map("a real name", |(lead, body, tail)| {
                let mut name = lead.to_vec();
                name.extend_from_slice(&body);
                name.truncate(NAME_MAX);
                if name.is_empty() || name == b"." || name == b".." {
                    return None;
                }
                let mut abs = b"/job/".to_vec();
                abs.extend_from_slice(&name);
                abs.extend_from_slice(tail);
                Some(abs)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Every legal top name: its worker-side components fit NAME_MAX,
        /// it maps back byte for byte, and two names never share one.
        #[test]
        fn every_legal_top_name_fits_maps_back_and_is_its_own(a in any_top_name_path(), b in any_top_name_path()) {
            let (ra, back) = round_trip(&a);
            prop_assert!(ra.split(|&c| c == b'/').all(|c| c.len() <= NAME_MAX));
            prop_assert_eq!(back, Some(a.clone()));
            prop_assert!(!is_own_top_name(first_component(&ra)));
            prop_assert!(first_component(&ra) != OUTSIDE_JOB);
            if a != b {
                prop_assert_ne!(ra, round_trip(&b).0);
            }
        }
    }

    fn tricky_path() -> impl Strategy<Value = Vec<u8>> {
        let names = prop::sample::select(vec![
            "a",
            "_",
            "__",
            "_abs",
            "__abs",
            "abs",
            "stdout.log",
            "_stdout.log",
            "stderr.log",
            "mpaudit-redirects.jsonl",
            ".mpaudit-1-2.redirects",
            "_.mpaudit-x",
            "_long",
            "__long",
            "long",
            "w",
            "worker_0",
            "job",
        ]);
        (
            prop::sample::select(vec!["/job", "/", "/elsewhere", "/w", "/w/worker_0"]),
            prop::collection::vec(names, 0..4),
        )
            .prop_map(|(root, parts)| {
                let mut p = root.to_string();
                for c in parts {
                    if !p.ends_with('/') {
                        p.push('/');
                    }
                    p.push_str(c);
                }
                p.into_bytes()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Distinct paths never share a worker-side name, and unmapping gives
        /// the path back (paths already in the worker directory stand for
        /// themselves, so they are left out of the round trip).
        #[test]
        fn mapping_is_injective_and_unmapping_inverts_it(a in tricky_path(), b in tricky_path()) {
            let (job, w) = (&b"/job"[..], &b"/w/worker_0"[..]);
            let mut ta = [0u8; 256];
            let mut tb = [0u8; 256];
            let na = map_normal_to_worker(&a, job, w, &mut ta).unwrap();
            let nb = map_normal_to_worker(&b, job, w, &mut tb).unwrap();
            let inside = |p: &[u8]| p == w || strip_dir(p, w).is_some();
            if !inside(&a) && !inside(&b) && a != b {
                prop_assert_ne!(&ta[..na], &tb[..nb]);
            }
            if !inside(&a) {
                let mut back = [0u8; 256];
                let m = unmap_from_worker(&ta[..na], job, w, &mut back).unwrap();
                prop_assert_eq!(&back[..m], &a[..]);
                // No job file lands on one of the worker directory's own names.
                let top = first_component(strip_dir(&ta[..na], w).unwrap_or(b""));
                prop_assert!(!is_own_top_name(top));
            }
        }
    }
    use proptest::prelude::*;

    const WORKER: &str = "/job/mpaudit-workers/worker_2";

    fn map(abs: &str, job: &str, worker: &str) -> Option<String> {
        let mut out = [0u8; 256];
        let n = map_to_worker(abs.as_bytes(), job.as_bytes(), worker.as_bytes(), &mut out)?;
        Some(String::from_utf8(out[..n].to_vec()).unwrap())
    }

    fn m(abs: &str) -> String {
        map(abs, "/job", WORKER).unwrap()
    }

    #[test]
    fn maps_job_paths_below_the_worker() {
        assert_eq!(m("/job/out.root"), format!("{WORKER}/out.root"));
        assert_eq!(
            m("/job/sub/dir/hist.txt"),
            format!("{WORKER}/sub/dir/hist.txt")
        );
        assert_eq!(m("/job"), WORKER);
        assert_eq!(m("/job/"), WORKER);
        assert_eq!(m("/jobs/x"), format!("{WORKER}/_abs/jobs/x"));
        assert_eq!(
            m("/tmp/scratch.dat"),
            format!("{WORKER}/_abs/tmp/scratch.dat")
        );
        assert_eq!(m("/"), format!("{WORKER}/_abs"));
    }

    /// The worked example in docs/policy.md, row for row.
    #[test]
    fn documented_example() {
        let rows = [
            ("/job/out.root", Some("W/out.root")),
            ("/job/sub/hist.txt", Some("W/sub/hist.txt")),
            ("/job/./a//b/", Some("W/a/b")),
            ("/job", Some("W")),
            ("/tmp/scratch.dat", Some("W/_abs/tmp/scratch.dat")),
            ("/job/../etc/passwd", Some("W/_abs/etc/passwd")),
            ("/jobs/x", Some("W/_abs/jobs/x")),
            ("/", Some("W/_abs")),
            ("/job/mpaudit-workers/worker_2/out.root", Some("W/out.root")),
            (
                "/job/mpaudit-workers/worker_2/mpaudit-redirects.jsonl",
                Some("W/_abs/job/mpaudit-workers/worker_2/mpaudit-redirects.jsonl"),
            ),
            (
                "/job/mpaudit-workers/worker_3/x",
                Some("W/mpaudit-workers/worker_3/x"),
            ),
            ("sub/out.root", None),
            ("/job/_abs/tmp/x", Some("W/__abs/tmp/x")),
            ("/job/stdout.log", Some("W/_stdout.log")),
            ("/job/stderr.log/x", Some("W/_stderr.log/x")),
            (
                "/job/mpaudit-redirects.jsonl",
                Some("W/_mpaudit-redirects.jsonl"),
            ),
            (
                "/job/.mpaudit-1-2.redirects",
                Some("W/_.mpaudit-1-2.redirects"),
            ),
            ("/job/_x", Some("W/__x")),
            ("/job/sub/stdout.log", Some("W/sub/stdout.log")),
        ];
        let mut worker = [0u8; 64];
        let n = worker_dir_into(b"/job/mpaudit-workers", 2, &mut worker).unwrap();
        assert_eq!(&worker[..n], WORKER.as_bytes());
        for (input, want) in rows {
            let want = want.map(|w| w.replacen('W', WORKER, 1));
            assert_eq!(map(input, "/job", WORKER), want, "{input}");
        }
    }

    #[test]
    fn normalises_before_mapping() {
        assert_eq!(m("/job/./a//b/"), format!("{WORKER}/a/b"));
        assert_eq!(m("/job/../etc/passwd"), format!("{WORKER}/_abs/etc/passwd"));
        assert_eq!(m("/job/a/../../../../etc"), format!("{WORKER}/_abs/etc"));
        assert_eq!(
            m("/job/mpaudit-workers/worker_2/../worker_3/x"),
            format!("{WORKER}/mpaudit-workers/worker_3/x")
        );
        assert_eq!(
            m("/job/mpaudit-workers/worker_2/x/../../../../job/y"),
            format!("{WORKER}/y")
        );
    }

    #[test]
    fn paths_in_the_worker_map_to_themselves() {
        assert_eq!(m(WORKER), WORKER);
        assert_eq!(m(&format!("{WORKER}/a/b")), format!("{WORKER}/a/b"));
        assert_eq!(m(&format!("{WORKER}/./a/")), format!("{WORKER}/a"));
        // A sibling with the worker directory as a name prefix is not inside.
        assert_eq!(
            m(&format!("{WORKER}0/a")),
            format!("{WORKER}/mpaudit-workers/worker_20/a")
        );
    }

    #[test]
    fn root_as_job_dir() {
        assert_eq!(
            map("/etc/x", "/", "/w/worker_0").unwrap(),
            "/w/worker_0/etc/x"
        );
        assert_eq!(map("/", "/", "/w/worker_0").unwrap(), "/w/worker_0");
        assert_eq!(
            map("/w/worker_0/x", "/", "/w/worker_0").unwrap(),
            "/w/worker_0/x"
        );
    }

    #[test]
    fn refuses_what_it_cannot_map_safely() {
        assert_eq!(map("relative/x", "/job", WORKER), None);
        assert_eq!(map("", "/job", WORKER), None);
        assert_eq!(map("/x", "/job", "/"), None);
        assert_eq!(map("/x", "/job", "rel/worker"), None);
        assert_eq!(map("/x", "/job", "/job/w/../w2"), None);
        assert_eq!(map("/x", "/job", "/job/w/"), None);
        assert_eq!(map("/x", "/job/", WORKER), None);
        assert_eq!(map("/x", "", WORKER), None);
        let mut small = [0u8; 8];
        assert_eq!(
            map_to_worker(b"/job/a", b"/job", b"/w", &mut small),
            Some(4)
        );
        assert_eq!(
            map_to_worker(b"/job/abcdefg", b"/job", b"/w", &mut small),
            None
        );
        let long_name = "n".repeat(4000);
        let mut out = vec![0u8; MAX_ABS];
        let n = map_to_worker(
            format!("/job/../{long_name}/..//{long_name}").as_bytes(),
            b"/job",
            WORKER.as_bytes(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out[..n], *format!("{WORKER}/_abs/{long_name}").as_bytes());
        let long = format!("/{}", "x".repeat(MAX_ABS));
        assert_eq!(map(&long, "/job", WORKER), None);
    }

    #[test]
    fn worker_dirs() {
        let name = |dir: &[u8], k| {
            let mut out = [0u8; 64];
            let n = worker_dir_into(dir, k, &mut out)?;
            Some(String::from_utf8(out[..n].to_vec()).unwrap())
        };
        assert_eq!(
            name(b"/job/mpaudit-workers", 2).unwrap(),
            "/job/mpaudit-workers/worker_2"
        );
        assert_eq!(
            name(b"/job/mpaudit-workers", 0).unwrap(),
            "/job/mpaudit-workers/worker_0"
        );
        assert_eq!(
            name(b"/w", u32::MAX).unwrap(),
            format!("/w/worker_{}", u32::MAX)
        );
        assert_eq!(name(b"/", 7).unwrap(), "/worker_7");
        let mut tiny = [0u8; 11];
        assert_eq!(worker_dir_into(b"/w", 12, &mut tiny), None);
        assert_eq!(worker_dir_into(b"/w", 1, &mut tiny), Some(11));
    }

    #[test]
    fn ranks_and_workers_compose() {
        let dir = |rank, k| {
            let mut out = [0u8; 64];
            let n = worker_dir_for(b"/job/w", rank, k, &mut out)?;
            Some(String::from_utf8(out[..n].to_vec()).unwrap())
        };
        assert_eq!(dir(None, 3).unwrap(), "/job/w/worker_3");
        assert_eq!(dir(Some(2), 0).unwrap(), "/job/w/rank_2/worker_0");
        assert_eq!(dir(Some(0), 2).unwrap(), "/job/w/rank_0/worker_2");
        // Rank 1's worker 0 and rank 0's worker 1 never share a directory,
        // nor do they share one with the plain workers of a rank-less run.
        assert_ne!(dir(Some(1), 0), dir(Some(0), 1));
        assert_ne!(dir(Some(1), 0), dir(None, 1));
        let mut rank_dir = [0u8; 64];
        let n = rank_dir_into(b"/job/w", 12, &mut rank_dir).unwrap();
        assert_eq!(&rank_dir[..n], b"/job/w/rank_12");
        let mut tiny = [0u8; 20];
        assert_eq!(worker_dir_for(b"/job/w", Some(1), 0, &mut tiny), None);
    }

    #[test]
    fn normal_abs() {
        for good in ["/", "/a", "/a/b", "/.a/..b/...", "/a\u{ff}"] {
            assert!(is_normal_abs(good.as_bytes()), "{good}");
        }
        for bad in ["", "a", "//", "/a/", "/a//b", "/./a", "/a/..", "a/b"] {
            assert!(!is_normal_abs(bad.as_bytes()), "{bad}");
        }
    }

    /// The guarantee: `worker` itself or strictly below it, all components
    /// real names.
    fn assert_contained(out: &[u8], worker: &[u8]) -> Result<(), TestCaseError> {
        prop_assert!(
            is_normal_abs(out),
            "not normal: {:?}",
            String::from_utf8_lossy(out)
        );
        if out != worker {
            prop_assert!(
                strip_dir(out, worker).is_some(),
                "escaped: {:?}",
                String::from_utf8_lossy(out)
            );
        }
        Ok(())
    }

    fn path_atom() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"..".to_vec()),
            Just(b".".to_vec()),
            Just(b"/".to_vec()),
            Just(b"//".to_vec()),
            Just(b"/../../".to_vec()),
            Just(b"...".to_vec()),
            Just(b"job".to_vec()),
            Just(b"mpaudit-workers".to_vec()),
            Just(b"worker_2".to_vec()),
            Just(b"_abs".to_vec()),
            Just(b"\xff".to_vec()),
            Just(b"\xc3\x28".to_vec()),
            "[a-z]{1,6}".prop_map(String::into_bytes),
            proptest::collection::vec(1u8..=255, 1..8),
            (1usize..600).prop_map(|n| vec![b'n'; n]),
        ]
    }

    fn garbage_path() -> impl Strategy<Value = Vec<u8>> {
        (any::<bool>(), proptest::collection::vec(path_atom(), 0..24)).prop_map(
            |(absolute, atoms)| {
                let mut path = if absolute { b"/".to_vec() } else { Vec::new() };
                for atom in atoms {
                    path.extend_from_slice(&atom);
                }
                path
            },
        )
    }

    /// A normalised absolute directory (possibly `/`).
    fn normal_dir() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b"job".to_vec()),
                Just(b"a".to_vec()),
                "[a-z.]{1,4}".prop_map(String::into_bytes)
            ],
            0..4,
        )
        .prop_map(|comps| {
            let mut dir = Vec::new();
            for comp in comps {
                if comp == b"." || comp == b".." {
                    continue;
                }
                dir.push(b'/');
                dir.extend_from_slice(&comp);
            }
            if dir.is_empty() {
                dir.push(b'/');
            }
            dir
        })
    }

    /// A job directory and a worker directory, the worker usually nested in
    /// the job directory as the library sets it up.
    fn dirs() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        (normal_dir(), normal_dir(), any::<bool>(), 0u32..64).prop_map(|(job, other, nested, k)| {
            let workers = if nested {
                let mut w = job.clone();
                if w != b"/" {
                    w.push(b'/');
                }
                w.extend_from_slice(b"mpaudit-workers");
                w
            } else if other == b"/" {
                b"/w".to_vec()
            } else {
                other
            };
            let mut worker = [0u8; 512];
            let n = worker_dir_into(&workers, k, &mut worker).unwrap();
            (job, worker[..n].to_vec())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn output_never_escapes_the_worker_dir(abs in garbage_path(), (job, worker) in dirs()) {
            let mut out = vec![0u8; 3 * MAX_ABS];
            if let Some(n) = map_to_worker(&abs, &job, &worker, &mut out) {
                let mapped = &out[..n];
                assert_contained(mapped, &worker)?;
                // Mapping is idempotent: a mapped path is inside the worker.
                let mut again = vec![0u8; 3 * MAX_ABS];
                let m = map_to_worker(mapped, &job, &worker, &mut again).unwrap();
                prop_assert_eq!(&again[..m], mapped);
            } else {
                // Only relative or over-long inputs are refused by these dirs.
                let mut scratch = [0u8; MAX_ABS];
                prop_assert!(absolutize(&abs, None, &mut scratch).is_none());
            }
        }

        #[test]
        fn normal_paths_map_the_same_without_the_normalisation_buffer(abs in garbage_path(), (job, worker) in dirs()) {
            let mut normal = [0u8; MAX_ABS];
            let mut out = vec![0u8; 3 * MAX_ABS];
            let mut direct = vec![0u8; 3 * MAX_ABS];
            let via_normal = map_to_worker(&abs, &job, &worker, &mut out);
            match absolutize(&abs, None, &mut normal) {
                Some(n) => {
                    let got = map_normal_to_worker(&normal[..n], &job, &worker, &mut direct);
                    prop_assert_eq!(got.map(|m| direct[..m].to_vec()), via_normal.map(|m| out[..m].to_vec()));
                }
                None => prop_assert_eq!(via_normal, None),
            }
            if !is_normal_abs(&abs) {
                prop_assert_eq!(map_normal_to_worker(&abs, &job, &worker, &mut direct), None, "non-normal input is refused");
            }
        }

        #[test]
        fn job_paths_keep_their_relative_part(rel in "[a-z]{1,5}(/[a-z]{1,5}){0,4}", (job, worker) in dirs()) {
            let mut abs = job.clone();
            if abs != b"/" {
                abs.push(b'/');
            }
            abs.extend_from_slice(rel.as_bytes());
            let mut out = [0u8; 1024];
            let n = map_to_worker(&abs, &job, &worker, &mut out).unwrap();
            if strip_dir(&abs, &worker).is_none() && abs != worker {
                let mut want = worker.clone();
                want.push(b'/');
                want.extend_from_slice(rel.as_bytes());
                prop_assert_eq!(&out[..n], &want[..]);
            }
        }

        #[test]
        fn any_bytes_for_every_argument_stay_contained(
            abs in proptest::collection::vec(any::<u8>(), 0..64),
            job in proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'.'), Just(b'a')], 0..12),
            worker in proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'.'), Just(b'w')], 0..12),
        ) {
            let mut out = [0u8; 256];
            if let Some(n) = map_to_worker(&abs, &job, &worker, &mut out) {
                assert_contained(&out[..n], &worker)?;
            }
        }

        #[test]
        fn small_outputs_are_refused_not_truncated(abs in garbage_path(), (job, worker) in dirs(), size in 0usize..64) {
            let mut big = vec![0u8; 3 * MAX_ABS];
            let full = map_to_worker(&abs, &job, &worker, &mut big);
            let mut small = vec![0u8; size];
            let got = map_to_worker(&abs, &job, &worker, &mut small);
            match full {
                Some(n) if n <= size => prop_assert_eq!(got.map(|m| small[..m].to_vec()), Some(big[..n].to_vec())),
                _ => prop_assert_eq!(got, None),
            }
        }
    }
}
