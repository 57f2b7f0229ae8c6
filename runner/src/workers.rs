//! `workers = "auto"`: the number of workers from the batch allocation.
//!
//! [`detect`] is pure (an environment map, the CPU-affinity count and the
//! cgroup CPU quota in, a count and its provenance out); [`probe`] gathers
//! those facts from the running process.

use std::collections::BTreeMap;

/// What auto detection looks at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub env: BTreeMap<String, String>,
    /// Slots of this host listed in `$PBS_NODEFILE` (read by [`probe`]).
    pub pbs_nodefile_slots: Option<usize>,
    /// CPUs in the process's affinity mask.
    pub affinity: Option<usize>,
    /// cgroup CPU quota in CPUs (`cpu.max` quota / period), if limited.
    pub cgroup_quota: Option<f64>,
}

/// The detected count and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub count: usize,
    /// e.g. `SLURM_CPUS_PER_TASK=4`, `CPU affinity (2 CPUs)`.
    pub source: String,
    /// Variables that were set but ignored, and caps applied.
    pub notes: Vec<String>,
}

/// The batch variables, in the order they are consulted.
pub const BATCH_VARS: &[(&str, &str)] = &[
    ("ATHENA_PROC_NUMBER", "AthenaMP"),
    ("SLURM_CPUS_PER_TASK", "Slurm"),
    ("SLURM_CPUS_ON_NODE", "Slurm"),
    ("PBS_NP", "PBS/Torque"),
    ("PBS_NCPUS", "PBS/Torque"),
    ("PBS_NODEFILE", "PBS/Torque"),
    ("NSLOTS", "SGE"),
    ("LSB_DJOB_NUMPROC", "LSF"),
];

fn positive(value: &str) -> Option<usize> {
    let v = value.trim();
    // Slurm may write `4(x2)` in some variables: take the leading integer.
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() || (digits.len() != v.len() && !v[digits.len()..].starts_with('(')) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

/// Decides the worker count. Never more than the CPUs the process may use
/// (affinity, cgroup quota): a batch variable larger than that is capped.
pub fn detect(facts: &Facts) -> Detected {
    let mut notes = Vec::new();
    let mut batch: Option<(usize, String)> = None;
    for &(var, system) in BATCH_VARS {
        if var == "PBS_NODEFILE" {
            if let Some(path) = facts.env.get(var) {
                match facts.pbs_nodefile_slots {
                    Some(n) if n > 0 => {
                        batch = Some((
                            n,
                            format!("PBS_NODEFILE ({n} slots for this host in {path}) [{system}]"),
                        ));
                        break;
                    }
                    _ => notes.push(format!(
                        "ignored PBS_NODEFILE={path}: unreadable or no slots"
                    )),
                }
            }
            continue;
        }
        if let Some(value) = facts.env.get(var) {
            match positive(value) {
                Some(n) => {
                    batch = Some((n, format!("{var}={} [{system}]", value.trim())));
                    break;
                }
                None => notes.push(format!("ignored {var}={value:?}: not a positive integer")),
            }
        }
    }
    let quota = facts
        .cgroup_quota
        .filter(|q| q.is_finite() && *q > 0.0)
        .map(|q| (q.floor() as usize).max(1));
    let mut limit: Option<(usize, String)> = None;
    if let Some(a) = facts.affinity.filter(|&a| a > 0) {
        limit = Some((a, format!("CPU affinity ({a} CPUs)")));
    }
    if let Some(q) = quota {
        if limit.as_ref().map_or(true, |(l, _)| q < *l) {
            limit = Some((
                q,
                format!(
                    "cgroup CPU quota ({} CPUs)",
                    fmt_quota(facts.cgroup_quota.unwrap_or(0.0))
                ),
            ));
        }
    }
    match (batch, limit) {
        (Some((n, source)), Some((l, why))) if l < n => {
            notes.push(format!(
                "capped {n} to {l} by the {why} so as not to overbook"
            ));
            Detected {
                count: l,
                source,
                notes,
            }
        }
        (Some((n, source)), _) => Detected {
            count: n,
            source,
            notes,
        },
        (None, Some((l, why))) => Detected {
            count: l,
            source: why,
            notes,
        },
        (None, None) => {
            notes.push("no batch variable, CPU affinity or cgroup quota found".into());
            Detected {
                count: 1,
                source: "default (1)".into(),
                notes,
            }
        }
    }
}

fn fmt_quota(q: f64) -> String {
    if q.fract() == 0.0 {
        format!("{q:.0}")
    } else {
        format!("{q:.2}")
    }
}

/// Gathers [`Facts`] from this process: its environment, `$PBS_NODEFILE`,
/// `sched_getaffinity` and the cgroup v2 (or v1) CPU quota.
pub fn probe(env: &BTreeMap<String, String>) -> Facts {
    let pbs_nodefile_slots = env.get("PBS_NODEFILE").and_then(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        Some(nodefile_slots(&text, &hostname()))
    });
    Facts {
        env: env.clone(),
        pbs_nodefile_slots,
        affinity: affinity_count(),
        cgroup_quota: cgroup_quota(),
    }
}

/// Lines of a PBS node file naming this host (short or full name); all
/// non-empty lines when none does (a file written for this node only).
pub fn nodefile_slots(text: &str, host: &str) -> usize {
    let short = host.split('.').next().unwrap_or(host);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mine = lines
        .iter()
        .filter(|l| {
            let ls = l.split('.').next().unwrap_or(l);
            **l == host || ls == short
        })
        .count();
    if mine > 0 {
        mine
    } else {
        lines.len()
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`, a live
    // local array; a name truncated without NUL is handled below.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn affinity_count() -> Option<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let n = (0..nix::sched::CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .count();
    (n > 0).then_some(n)
}

/// `quota/period` from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`.
fn cgroup_quota() -> Option<f64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrl, path) = (parts.next()?, parts.next()?, parts.next()?);
        if ctrl.is_empty() {
            candidates.push(format!("/sys/fs/cgroup{path}/cpu.max"));
        } else if ctrl.split(',').any(|c| c == "cpu") {
            candidates.push(format!("/sys/fs/cgroup/{ctrl}{path}/cpu.cfs_quota_us"));
        }
    }
    candidates.push("/sys/fs/cgroup/cpu.max".into());
    for c in candidates {
        if let Ok(text) = std::fs::read_to_string(&c) {
            if c.ends_with("cpu.max") {
                return parse_cpu_max(&text);
            }
            let period =
                std::fs::read_to_string(c.replace("cfs_quota_us", "cfs_period_us")).ok()?;
            let q: f64 = text.trim().parse().ok()?;
            let p: f64 = period.trim().parse().ok()?;
            return (q > 0.0 && p > 0.0).then(|| q / p);
        }
    }
    None
}

/// `"200000 100000"` → 2.0; `"max 100000"` → None.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let q = it.next()?;
    let p: f64 = it.next()?.parse().ok()?;
    if q == "max" || p <= 0.0 {
        return None;
    }
    let q: f64 = q.parse().ok()?;
    (q > 0.0).then(|| q / p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(vars: &[(&str, &str)]) -> Facts {
        Facts {
            env: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pbs_nodefile_slots: None,
            affinity: Some(64),
            cgroup_quota: None,
        }
    }

    #[test]
    fn each_batch_variable() {
        for &(var, system) in BATCH_VARS {
            if var == "PBS_NODEFILE" {
                continue;
            }
            let d = detect(&facts(&[(var, "6")]));
            assert_eq!(d.count, 6, "{var}");
            assert_eq!(d.source, format!("{var}=6 [{system}]"));
            assert!(d.notes.is_empty(), "{var}: {:?}", d.notes);
        }
    }

    #[test]
    fn pbs_nodefile() {
        let mut f = facts(&[("PBS_NODEFILE", "/var/spool/pbs/aux/1.node")]);
        f.pbs_nodefile_slots = Some(3);
        let d = detect(&f);
        assert_eq!(d.count, 3);
        assert!(
            d.source.starts_with("PBS_NODEFILE (3 slots"),
            "{}",
            d.source
        );
        f.pbs_nodefile_slots = None;
        let d = detect(&f);
        assert_eq!(d.source, "CPU affinity (64 CPUs)");
        assert!(d.notes[0].contains("ignored PBS_NODEFILE"));
    }

    #[test]
    fn nodefile_counts_this_host() {
        let text = "n1.cluster\nn1.cluster\nn2.cluster\n\nn1.cluster\n";
        assert_eq!(nodefile_slots(text, "n1"), 3);
        assert_eq!(nodefile_slots(text, "n2.cluster"), 1);
        assert_eq!(nodefile_slots(text, "other"), 4);
    }

    #[test]
    fn order_of_precedence() {
        let d = detect(&facts(&[
            ("LSB_DJOB_NUMPROC", "9"),
            ("NSLOTS", "8"),
            ("PBS_NP", "7"),
            ("SLURM_CPUS_ON_NODE", "5"),
            ("SLURM_CPUS_PER_TASK", "4"),
            ("ATHENA_PROC_NUMBER", "3"),
        ]));
        assert_eq!(
            (d.count, d.source.as_str()),
            (3, "ATHENA_PROC_NUMBER=3 [AthenaMP]")
        );
        let d = detect(&facts(&[
            ("SLURM_CPUS_ON_NODE", "5"),
            ("SLURM_CPUS_PER_TASK", "4"),
        ]));
        assert_eq!(d.count, 4);
        let d = detect(&facts(&[("PBS_NCPUS", "5"), ("PBS_NP", "7")]));
        assert_eq!(d.count, 7);
        let d = detect(&facts(&[("LSB_DJOB_NUMPROC", "9"), ("NSLOTS", "8")]));
        assert_eq!(d.count, 8);
    }

    #[test]
    fn bad_values_are_skipped_and_noted() {
        let d = detect(&facts(&[
            ("ATHENA_PROC_NUMBER", "0"),
            ("SLURM_CPUS_PER_TASK", "four"),
            ("NSLOTS", "2"),
        ]));
        assert_eq!(d.count, 2);
        assert_eq!(d.notes.len(), 2, "{:?}", d.notes);
        assert!(d.notes[0].contains("ATHENA_PROC_NUMBER"));
        let d = detect(&facts(&[("SLURM_CPUS_ON_NODE", "4(x2)")]));
        assert_eq!(d.count, 4);
    }

    #[test]
    fn never_overbooks() {
        let mut f = facts(&[("SLURM_CPUS_PER_TASK", "16")]);
        f.affinity = Some(4);
        let d = detect(&f);
        assert_eq!(d.count, 4);
        assert!(
            d.notes[0].contains("capped 16 to 4 by the CPU affinity"),
            "{:?}",
            d.notes
        );
        f.cgroup_quota = Some(2.5);
        let d = detect(&f);
        assert_eq!(d.count, 2);
        assert!(
            d.notes[0].contains("cgroup CPU quota (2.50 CPUs)"),
            "{:?}",
            d.notes
        );
    }

    #[test]
    fn affinity_and_quota_without_batch() {
        let mut f = facts(&[]);
        f.affinity = Some(8);
        assert_eq!(detect(&f).source, "CPU affinity (8 CPUs)");
        f.cgroup_quota = Some(3.0);
        let d = detect(&f);
        assert_eq!(
            (d.count, d.source.as_str()),
            (3, "cgroup CPU quota (3 CPUs)")
        );
        f.cgroup_quota = Some(0.5);
        assert_eq!(detect(&f).count, 1);
        f.affinity = None;
        f.cgroup_quota = None;
        let d = detect(&f);
        assert_eq!((d.count, d.source.as_str()), (1, "default (1)"));
    }

    #[test]
    fn cpu_max() {
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("garbage"), None);
    }
}
