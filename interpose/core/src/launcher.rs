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

/// Picks the rank from `(key, value)` pairs of an environment: the most
/// trusted variable of [`RANK_VARIABLES`] that holds a valid rank.
pub fn rank_of<'a>(env: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Option<u32> {
    let mut best: Option<(usize, u32)> = None;
    for (key, value) in env {
        let (Some(p), Some(r)) = (rank_priority(key), parse_rank(value)) else {
            continue;
        };
        if best.map_or(true, |(bp, _)| p < bp) {
            best = Some((p, r));
        }
    }
    best.map(|(_, r)| r)
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

    fn rank(env: &[(&str, &str)]) -> Option<u32> {
        rank_of(env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
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
