//! Per-process memory from `/proc/<pid>/smaps_rollup`: PSS, private and
//! shared resident memory, and their peaks over the samples taken.

use serde::{Deserialize, Serialize};

/// One sample, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub rss: u64,
    pub pss: u64,
    pub private: u64,
    pub shared: u64,
}

/// Peaks over a process's samples, KiB (each field's own maximum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Peak {
    pub peak_pss_kib: u64,
    pub peak_private_kib: u64,
    pub peak_shared_kib: u64,
    pub peak_rss_kib: u64,
    pub samples: u64,
}

impl Peak {
    pub fn add(&mut self, s: Sample) {
        self.peak_pss_kib = self.peak_pss_kib.max(s.pss);
        self.peak_private_kib = self.peak_private_kib.max(s.private);
        self.peak_shared_kib = self.peak_shared_kib.max(s.shared);
        self.peak_rss_kib = self.peak_rss_kib.max(s.rss);
        self.samples += 1;
    }
}

/// Parses `smaps_rollup` (fields in kB).
pub fn parse_rollup(text: &str) -> Option<Sample> {
    let mut s = Sample::default();
    let mut any = false;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(v) = val.parse::<u64>() else { continue };
        match key {
            "Rss:" => s.rss = v,
            "Pss:" => s.pss = v,
            "Shared_Clean:" | "Shared_Dirty:" => s.shared += v,
            "Private_Clean:" | "Private_Dirty:" => s.private += v,
            _ => continue,
        }
        any = true;
    }
    any.then_some(s)
}

pub fn sample(pid: i32) -> Option<Sample> {
    parse_rollup(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup() {
        let text = "55d0c0000000-7ffd8b5fe000 ---p 00000000 00:00 0                          [rollup]\nRss:                1000 kB\nPss:                 600 kB\nPss_Anon:            100 kB\nShared_Clean:        500 kB\nShared_Dirty:        100 kB\nPrivate_Clean:       150 kB\nPrivate_Dirty:       250 kB\nReferenced:         1000 kB\n";
        let s = parse_rollup(text).unwrap();
        assert_eq!(
            s,
            Sample {
                rss: 1000,
                pss: 600,
                private: 400,
                shared: 600
            }
        );
        let mut p = Peak::default();
        p.add(s);
        p.add(Sample {
            rss: 10,
            pss: 900,
            private: 1,
            shared: 1,
        });
        assert_eq!(
            (
                p.peak_pss_kib,
                p.peak_private_kib,
                p.peak_shared_kib,
                p.samples
            ),
            (900, 400, 600, 2)
        );
        assert_eq!(parse_rollup(""), None);
    }

    #[test]
    fn samples_self() {
        let s = sample(std::process::id() as i32).unwrap();
        assert!(s.rss > 0 && s.pss > 0);
    }
}
