//! A file's times as utimensat(2) takes them, for the copies the library
//! and the supervisor make: a copy keeps its original's times, and a
//! directory the worker set the times of keeps them when a copy-up adds an
//! entry the view already showed (review 8 F1).

/// `st`'s access and modification times, in utimensat's order.
pub fn of(st: &libc::stat) -> [libc::timespec; 2] {
    pair(
        (st.st_atime, st.st_atime_nsec),
        (st.st_mtime, st.st_mtime_nsec),
    )
}

/// The access and modification times (seconds, nanoseconds) in
/// utimensat's order.
pub fn pair(atime: (i64, i64), mtime: (i64, i64)) -> [libc::timespec; 2] {
    let ts = |(tv_sec, tv_nsec)| libc::timespec { tv_sec, tv_nsec };
    [ts(atime), ts(mtime)]
}

/// What removing an entry does to its directory's times: the modification
/// time is now, the access time stays.
pub const ENTRY_REMOVED: [libc::timespec; 2] = [
    libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    },
    libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    },
];

/// Whether a directory's modification time differs between two stats
/// (something added or removed an entry in between).
pub fn modified_between(before: &libc::stat, after: &libc::stat) -> bool {
    (before.st_mtime, before.st_mtime_nsec) != (after.st_mtime, after.st_mtime_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_times_are_in_utimensat_s_order() {
        // SAFETY: an all-zero stat is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_atime = 1;
        st.st_atime_nsec = 2;
        st.st_mtime = 3;
        st.st_mtime_nsec = 4;
        let t = of(&st);
        assert_eq!(
            (t[0].tv_sec, t[0].tv_nsec, t[1].tv_sec, t[1].tv_nsec),
            (1, 2, 3, 4)
        );
        let mut later = st;
        later.st_mtime_nsec = 5;
        assert!(modified_between(&st, &later) && !modified_between(&st, &st));
    }
}
