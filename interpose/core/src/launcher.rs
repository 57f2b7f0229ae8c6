//! Ranks of a parallel launcher (Slurm's `srun`, Open MPI's `mpirun`, any
//! PMI/PMIx launcher): which environment variable gives a process its rank,
//! and how a node name is written into a log file name. The library and the
//! runner both read the rank through this module, so they agree on it.

/// The variables that give a process its rank, in the order they are
/// trusted: the innermost launcher wins. An MPI launcher's variables first
/// (`mpirun` run inside an `srun` step hands each of its ranks the step's
/// `SLURM_PROCID`, the same for all of them); `SLURM_PROCID` last, trusted
/// only inside a job step of more than one task. Under `srun --mpi=pmix`
/// both are set and agree.
pub const RANK_VARIABLES: [&str; 4] = [
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
    SLURM_RANK_VARIABLE,
];

/// Slurm's rank variable, set in each task of a job step.
pub const SLURM_RANK_VARIABLE: &str = "SLURM_PROCID";

/// The number of tasks of the current Slurm job step.
pub const SLURM_STEP_TASKS_VARIABLE: &str = "SLURM_STEP_NUM_TASKS";

/// `MPAUDIT_RANK=none` makes a process no rank whatever its launcher
/// variables say; `auto` (the default) lets them decide.
pub const RANK_OVERRIDE_VARIABLE: &str = "MPAUDIT_RANK";

/// The position of `key` in [`RANK_VARIABLES`] (lower is trusted more).
pub fn rank_priority(key: &[u8]) -> Option<usize> {
    RANK_VARIABLES.iter().position(|v| v.as_bytes() == key)
}

/// The variable holding the number of ranks of the launcher whose rank
/// variable is `rank_variable`; PMIx hands the size to its clients through
/// its API only.
pub fn size_variable(rank_variable: &str) -> Option<&'static str> {
    match rank_variable {
        "OMPI_COMM_WORLD_RANK" => Some("OMPI_COMM_WORLD_SIZE"),
        "PMI_RANK" => Some("PMI_SIZE"),
        SLURM_RANK_VARIABLE => Some(SLURM_STEP_TASKS_VARIABLE),
        _ => None,
    }
}

/// A rank value: decimal digits only, at most 9 of them (no sign, no
/// spaces); anything else is not a rank.
pub fn parse_rank(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 9 {
        return None;
    }
    value.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32)
    })
}

/// Set in every task of a Slurm job step (`srun`), absent from the batch
/// script itself, where Slurm sets `SLURM_PROCID=0` too: a batch script is
/// the whole job, not rank 0 of a step.
pub const SLURM_STEP_VARIABLE: &str = "SLURM_STEP_ID";

/// The value of `MPAUDIT_RANK`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RankOverride {
    #[default]
    Auto,
    None,
    /// Neither `none` nor `auto`: treated as `auto`, and said so.
    Invalid,
}

/// Why a process has the rank it has, or none (`mpaudit check` says it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankDecision {
    /// The rank, the variable of [`RANK_VARIABLES`] that gave it, and the
    /// one giving the number of ranks of that launcher (if it has one).
    Rank {
        rank: u32,
        variable: &'static str,
        size_variable: Option<&'static str>,
    },
    /// `MPAUDIT_RANK=none`.
    Disabled,
    /// `SLURM_PROCID` without `SLURM_STEP_ID`: a batch script.
    BatchScript,
    /// A Slurm job step of one task and no MPI variable (`srun --pty bash`,
    /// `sbatch` run inside a step): one task is no parallel job.
    OneTaskStep,
    /// No launcher variable with a valid value.
    NoLauncher,
}

impl RankDecision {
    pub fn rank(&self) -> Option<u32> {
        match *self {
            RankDecision::Rank { rank, .. } => Some(rank),
            _ => None,
        }
    }

    /// The variable holding the number of ranks of the launcher that gave
    /// the rank.
    pub fn size_variable(&self) -> Option<&'static str> {
        match *self {
            RankDecision::Rank { size_variable, .. } => size_variable,
            _ => None,
        }
    }
}

/// Reads an environment one entry at a time (the library walks `envp`
/// once, in any order) and gives the rank at the end.
#[derive(Clone, Copy, Debug, Default)]
pub struct RankScan {
    /// (priority, rank) of the most trusted MPI variable seen so far.
    mpi: Option<(usize, u32)>,
    slurm_procid: Option<u32>,
    in_slurm_step: bool,
    slurm_step_tasks: Option<u32>,
    pub rank_override: RankOverride,
}

impl RankScan {
    pub fn see(&mut self, key: &[u8], value: &[u8]) {
        if key == SLURM_STEP_VARIABLE.as_bytes() {
            self.in_slurm_step = true;
            return;
        }
        if key == SLURM_STEP_TASKS_VARIABLE.as_bytes() {
            self.slurm_step_tasks = parse_rank(value);
            return;
        }
        if key == RANK_OVERRIDE_VARIABLE.as_bytes() {
            self.rank_override = match value {
                b"none" => RankOverride::None,
                b"auto" => RankOverride::Auto,
                _ => RankOverride::Invalid,
            };
            return;
        }
        let (Some(p), Some(r)) = (rank_priority(key), parse_rank(value)) else {
            return;
        };
        if RANK_VARIABLES[p] == SLURM_RANK_VARIABLE {
            self.slurm_procid = Some(r);
        } else if self.mpi.map_or(true, |(bp, _)| p < bp) {
            self.mpi = Some((p, r));
        }
    }

    /// The rank and the variable that gave it, or why there is none.
    pub fn decision(&self) -> RankDecision {
        if self.rank_override == RankOverride::None {
            return RankDecision::Disabled;
        }
        let slurm = self.slurm_procid.filter(|_| self.in_slurm_step);
        let rank = |rank, variable: &'static str, size_variable| RankDecision::Rank {
            rank,
            variable,
            size_variable,
        };
        match (self.mpi, slurm) {
            (Some((p, r)), _) => {
                let v = RANK_VARIABLES[p];
                // srun as the MPI launcher (`--mpi=pmix`, equal ranks): PMIx
                // has no size variable, the step's is the same.
                let size = size_variable(v)
                    .or_else(|| (slurm == Some(r)).then_some(SLURM_STEP_TASKS_VARIABLE));
                rank(r, v, size)
            }
            (None, Some(_)) if self.slurm_step_tasks == Some(1) => RankDecision::OneTaskStep,
            (None, Some(s)) => rank(s, SLURM_RANK_VARIABLE, Some(SLURM_STEP_TASKS_VARIABLE)),
            (None, None) if self.slurm_procid.is_some() => RankDecision::BatchScript,
            (None, None) => RankDecision::NoLauncher,
        }
    }

    pub fn rank(&self) -> Option<u32> {
        self.decision().rank()
    }
}

/// The scan of an environment given as `(key, value)` pairs.
pub fn scan<'a>(env: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> RankScan {
    let mut scan = RankScan::default();
    for (key, value) in env {
        scan.see(key, value);
    }
    scan
}

/// The rank of an environment given as `(key, value)` pairs.
pub fn rank_of<'a>(env: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Option<u32> {
    scan(env).rank()
}

/// The byte a node name keeps in a file name: letters, digits, `.`, `_`,
/// `-`; anything else (a `/` above all) becomes `_`.
pub fn file_name_byte(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
        b
    } else {
        b'_'
    }
}

/// Writes a node name as one component of a log file name: each byte
/// through [`file_name_byte`], and `_` for an empty name (a container's
/// `uname -n` may be empty), so `mpaudit-<node>-r<rank>-…` always has a
/// node for the report to recognise.
pub fn put_node_file_name(node: &[u8], mut put: impl FnMut(u8)) {
    if node.is_empty() {
        put(b'_');
    }
    for &b in node {
        put(file_name_byte(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_of(env: &[(&str, &str)], in_step: bool) -> RankScan {
        let mut env = env.to_vec();
        if in_step {
            env.insert(env.len() / 2, ("SLURM_STEP_ID", "0"));
        }
        scan(env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    fn rank_outside_a_step(env: &[(&str, &str)]) -> Option<u32> {
        scan_of(env, false).rank()
    }

    /// Inside a Slurm job step (`SLURM_STEP_ID` set, as srun does).
    fn decision(env: &[(&str, &str)]) -> RankDecision {
        scan_of(env, true).decision()
    }

    fn rank(env: &[(&str, &str)]) -> Option<u32> {
        decision(env).rank()
    }

    #[test]
    fn a_slurm_batch_script_is_not_a_rank() {
        // sbatch sets SLURM_PROCID=0 in the batch script, without a step.
        assert_eq!(rank_outside_a_step(&[("SLURM_PROCID", "0")]), None);
        assert_eq!(rank(&[("SLURM_PROCID", "0")]), Some(0));
        assert_eq!(
            rank_outside_a_step(&[("SLURM_PROCID", "0"), ("PMI_RANK", "2")]),
            Some(2)
        );
    }

    #[test]
    fn the_documented_order_decides() {
        assert_eq!(rank(&[]), None);
        assert_eq!(rank(&[("HOME", "/root")]), None);
        assert_eq!(rank(&[("PMI_RANK", "3")]), Some(3));
        assert_eq!(rank(&[("PMI_RANK", "3"), ("PMIX_RANK", "2")]), Some(2));
        assert_eq!(
            rank(&[("PMIX_RANK", "2"), ("OMPI_COMM_WORLD_RANK", "1")]),
            Some(1)
        );
        assert_eq!(rank(&[("SLURM_PROCID", "7")]), Some(7));
    }

    /// Regression (review 1, item 6): `srun -n1 mpirun -np 2` gave both of
    /// mpirun's ranks the step's SLURM_PROCID=0, and Slurm's variable won:
    /// two ranks 0, one worker_0, their clobber unreported.
    #[test]
    fn mpirun_inside_an_srun_step_gives_mpirun_s_ranks() {
        for r in [0, 1] {
            let rank = r.to_string();
            let d = decision(&[
                ("SLURM_PROCID", "0"),
                ("SLURM_STEP_NUM_TASKS", "1"),
                ("OMPI_COMM_WORLD_RANK", &rank),
                ("OMPI_COMM_WORLD_SIZE", "2"),
            ]);
            // Rank and size from mpirun, for rank 0 too (its rank agrees
            // with Slurm's, its size does not).
            assert_eq!(
                d,
                RankDecision::Rank {
                    rank: r,
                    variable: "OMPI_COMM_WORLD_RANK",
                    size_variable: Some("OMPI_COMM_WORLD_SIZE")
                }
            );
        }
        assert_eq!(
            decision(&[("SLURM_PROCID", "3"), ("PMI_RANK", "0")]),
            RankDecision::Rank {
                rank: 0,
                variable: "PMI_RANK",
                size_variable: Some("PMI_SIZE")
            }
        );
        assert_eq!(
            decision(&[("SLURM_PROCID", "1")]).size_variable(),
            Some("SLURM_STEP_NUM_TASKS")
        );
    }

    /// `srun --mpi=pmix` sets PMIX_RANK equal to SLURM_PROCID: the rank is
    /// the same either way, the size the step's.
    #[test]
    fn srun_with_pmix_is_one_launcher() {
        for r in [0, 3] {
            let rank = r.to_string();
            let env = [
                ("SLURM_PROCID", rank.as_str()),
                ("SLURM_STEP_NUM_TASKS", "4"),
                ("PMIX_RANK", rank.as_str()),
            ];
            assert_eq!(decision(&env).rank(), Some(r));
            assert_eq!(decision(&env).size_variable(), Some("SLURM_STEP_NUM_TASKS"));
        }
        // A PMIx launcher of its own: no size variable.
        assert_eq!(decision(&[("PMIX_RANK", "1")]).size_variable(), None);
        // One task, but an MPI program's: still a rank.
        assert_eq!(
            decision(&[
                ("SLURM_PROCID", "0"),
                ("SLURM_STEP_NUM_TASKS", "1"),
                ("PMIX_RANK", "0")
            ])
            .rank(),
            Some(0)
        );
    }

    /// Regression (review 1, item 7): `srun -n1 sbatch` hands the batch
    /// script SLURM_STEP_ID and SLURM_STEP_NUM_TASKS=1, and every process
    /// of `srun --pty bash` is task 0 of a one-task step: they were all
    /// rank 0 (worker 0).
    #[test]
    fn a_one_task_slurm_step_without_mpi_is_not_a_rank() {
        let one_task = [("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "1")];
        assert_eq!(decision(&one_task), RankDecision::OneTaskStep);
        assert_eq!(
            decision(&[("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "2")]).rank(),
            Some(0)
        );
        assert_eq!(
            rank_outside_a_step(&[("SLURM_PROCID", "0")]),
            None,
            "a batch script"
        );
        assert_eq!(
            scan_of(&[("SLURM_PROCID", "0")], false).decision(),
            RankDecision::BatchScript
        );
        assert_eq!(decision(&[]), RankDecision::NoLauncher);
    }

    #[test]
    fn mpaudit_rank_none_overrides_every_launcher() {
        let mut env = vec![
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_NUM_TASKS", "4"),
            ("OMPI_COMM_WORLD_RANK", "2"),
        ];
        assert_eq!(decision(&env).rank(), Some(2));
        env.push(("MPAUDIT_RANK", "auto"));
        assert_eq!(decision(&env).rank(), Some(2));
        env.push(("MPAUDIT_RANK", "none"));
        assert_eq!(decision(&env), RankDecision::Disabled);
        let s = scan_of(&[("MPAUDIT_RANK", "0"), ("PMI_RANK", "1")], true);
        assert_eq!(s.rank_override, RankOverride::Invalid);
        assert_eq!(s.rank(), Some(1), "an invalid override is auto");
    }

    #[test]
    fn invalid_values_fall_through_to_the_next_variable() {
        assert_eq!(rank(&[("PMI_RANK", ""), ("SLURM_PROCID", "5")]), Some(5));
        assert_eq!(rank(&[("PMI_RANK", "-1"), ("SLURM_PROCID", "5")]), Some(5));
        assert_eq!(rank(&[("SLURM_PROCID", " 1")]), None);
        assert_eq!(rank(&[("SLURM_PROCID", "1234567890")]), None);
        assert_eq!(rank(&[("SLURM_PROCID", "123456789")]), Some(123456789));
    }

    #[test]
    fn node_names_stay_one_file_name_component() {
        let safe: Vec<u8> = b"wn-01.cern.ch/x y\xff"
            .iter()
            .map(|&b| file_name_byte(b))
            .collect();
        assert_eq!(safe, b"wn-01.cern.ch_x_y_");
    }

    /// Regression (review 1, item 8): an empty node name gave
    /// `mpaudit--r1-…`, a name the report did not recognise.
    #[test]
    fn an_empty_node_name_is_written_as_underscore() {
        let name = |node: &[u8]| {
            let mut out = [0u8; 16];
            let mut n = 0;
            put_node_file_name(node, |b| {
                out[n] = b;
                n += 1;
            });
            (out, n)
        };
        let (out, n) = name(b"");
        assert_eq!(&out[..n], b"_");
        let (out, n) = name(b"a/b");
        assert_eq!(&out[..n], b"a_b");
    }
}
