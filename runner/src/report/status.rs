//! The exit status, decided in one place from the report's findings.

/// Exit status: 0 ok, 1 rogue writes, 3 job failed (wins over 1).
pub fn exit_code(job_failed: bool, rogue_writes: u64) -> u8 {
    if job_failed {
        3
    } else if rogue_writes > 0 {
        1
    } else {
        0
    }
}
