//! Ranks of a parallel launcher (Slurm's `srun`, Open MPI's `mpirun`, any
//! PMI/PMIx launcher): which environment variable gives a process its rank,
//! and how a node name is written into a log file name. The library and the
//! runner both read the rank through this module, so they agree on it.

/// The variables that give a process its rank, in the order they are
/// trusted: the first one present with a valid value wins. `SLURM_PROCID`
/// first: under `srun` of an MPI program both it and the MPI launcher's own
/// variables are set, and they agree; Slurm's is set even for non-MPI tasks.
pub const RANK_VARIABLES: [&str; 4] = [
    "SLURM_PROCID",
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
];

/// The position of `key` in [`RANK_VARIABLES`] (lower is trusted more).
pub fn rank_priority(key: &[u8]) -> Option<usize> {
    RANK_VARIABLES.iter().position(|v| v.as_bytes() == key)
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

/// Reads an environment one entry at a time (the library walks `envp`
/// once, in any order) and gives the rank at the end.
#[derive(Clone, Copy, Debug, Default)]
pub struct RankScan {
    /// (priority, rank) of the most trusted non-Slurm variable seen so far.
    best: Option<(usize, u32)>,
    slurm_procid: Option<u32>,
    in_slurm_step: bool,
}

impl RankScan {
    pub fn see(&mut self, key: &[u8], value: &[u8]) {
        if key == SLURM_STEP_VARIABLE.as_bytes() {
            self.in_slurm_step = true;
            return;
        }
        let (Some(p), Some(r)) = (rank_priority(key), parse_rank(value)) else {
            return;
        };
        if p == 0 {
            self.slurm_procid = Some(r);
        } else if self.best.map_or(true, |(bp, _)| p < bp) {
            self.best = Some((p, r));
        }
    }

    /// The most trusted variable of [`RANK_VARIABLES`] that holds a valid
    /// rank (`SLURM_PROCID` only inside a job step).
    pub fn rank(&self) -> Option<u32> {
        match self.slurm_procid {
            Some(r) if self.in_slurm_step => Some(r),
            _ => self.best.map(|(_, r)| r),
        }
    }
}

/// The variables that give the number of ranks of the step, in the order
/// they are trusted (the runner reads them; the library has no use for it).
pub const SIZE_VARIABLES: [&str; 3] = ["SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

/// The rank of an environment given as `(key, value)` pairs.
pub fn rank_of<'a>(env: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Option<u32> {
    let mut scan = RankScan::default();
    for (key, value) in env {
        scan.see(key, value);
    }
    scan.rank()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rank_outside_a_step(env: &[(&str, &str)]) -> Option<u32> {
        rank_of(env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    /// The rank inside a Slurm job step (`SLURM_STEP_ID` set, as srun does).
    fn rank(env: &[(&str, &str)]) -> Option<u32> {
        let mut with_step = env.to_vec();
        with_step.insert(env.len() / 2, ("SLURM_STEP_ID", "0"));
        rank_outside_a_step(&with_step)
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
        assert_eq!(
            rank(&[("OMPI_COMM_WORLD_RANK", "1"), ("SLURM_PROCID", "0")]),
            Some(0)
        );
        assert_eq!(rank(&[("SLURM_PROCID", "7"), ("PMI_RANK", "0")]), Some(7));
    }

    #[test]
    fn invalid_values_fall_through_to_the_next_variable() {
        assert_eq!(rank(&[("SLURM_PROCID", ""), ("PMI_RANK", "5")]), Some(5));
        assert_eq!(rank(&[("SLURM_PROCID", "-1"), ("PMI_RANK", "5")]), Some(5));
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
}
