//! Regression (issue 12): under redirect, glibc's own directory readers
//! (`scandir`, `glob`, `nftw`/`ftw`, `getdents64` and the raw system
//! call) listed the shared directory only: they read it inside libc
//! (`__opendir`, `__readdir64`, `__getdents64`), out of the hooks' sight.
//! Each test changes a shared tree in a worker (rewrites, new files,
//! removals, a new directory), then lists it through one family; once bare
//! in a scratch copy, once redirected, and the two outputs must be equal
//! (tests/fixtures/listings.c prints what each call returned, in an order
//! independent of the directory's own).

use crate::redirect_shared::{same_output, twin_jobs, worker_dir, write};
use mpaudit_tests::*;
use std::path::Path;

/// The shared tree every test starts from.
fn shared_tree(d: &Path) {
    for f in [
        "a",
        "b",
        "c",
        ".hidden",
        "sub/x",
        "sub/z",
        "skip/s",
        "deep/one/two/f",
    ] {
        write(d.join(f), "shared\n");
    }
    std::os::unix::fs::symlink("a", d.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", d.join("dangling")).unwrap();
}

/// What the worker does to it before listing: rewrites `c`, adds `d`,
/// `.mine`, `sub/y`, `skip/t` and `deep/one/two/g`, removes `b`, `sub/z`
/// and `deep/one/two/f`, and makes `newdir/n`.
const CHANGES: &str =
    "set -f; echo new-content > c; echo mine > d; echo h > .mine; rm b; rm sub/z; \
     echo y > sub/y; echo yy > skip/t; echo g > deep/one/two/g; rm deep/one/two/f; \
     mkdir newdir; echo n > newdir/n; ";

/// Runs `CHANGES` then `listing` (`$fx` is the fixture) bare and
/// redirected, asserts equal output, and returns it.
fn listed(dir: &TestDir, listing: &str) -> String {
    let (bare_job, job) = twin_jobs(dir, shared_tree);
    let fx = fixture("listings");
    let script = format!("fx={}; {CHANGES}{listing}", fx.display());
    let out = same_output(dir, &bare_job, &job, &script);
    // The shared tree is untouched: the worker's changes are its own.
    assert_eq!(std::fs::read_to_string(job.join("c")).unwrap(), "shared\n");
    assert!(job.join("b").exists() && !job.join("d").exists());
    assert!(worker_dir(dir).join("d").exists(), "d was redirected");
    out
}

e2e!(
    regression_scandir_and_scandirat_list_the_workers_files,
    |dir| {
        let out = listed(
        &dir,
        "$fx scandir .; $fx scandir sub; $fx scandir deep/one/two; $fx scandirat .; $fx scandirat sub",
    );
        assert!(out.contains("\nd file file 5 reclen_ok=1\n"), "{out}");
        assert!(out.contains("\nc file file 12 reclen_ok=1\n"), "{out}");
        assert!(!out.contains("\nb file"), "a removed file is listed: {out}");
        assert!(out.contains("\ny file file 2 reclen_ok=1\n"), "{out}");
        assert!(out.contains("scandir: 13 errno kept\n"), "{out}");
    }
);

e2e!(
    regression_glob_lists_the_workers_files_with_the_callers_flags,
    |dir| {
        let calls = [
            "'*'",
            "'*' m",
            "'*' p",
            "'.*'",
            "'*' s",
            "'*' d",
            "'*' da",
            "'sub/*' a",
            "'*/*'",
            "'*/*' m",
            "'*/' o",
            "'*' o",
            "'deep/*/*/*'",
            "'{a,b,d,sub/y}' b",
            "d",
            "b",
            "sub/z",
            "'no*'",
            "'no*' n",
            "'no-such/*' e",
            "'b*' n",
            "'[bd]'",
        ];
        let script: Vec<String> = calls
            .iter()
            .map(|c| format!("echo \"== glob {c}\"; $fx glob {c}"))
            .collect();
        let out = listed(&dir, &script.join("; "));
        assert!(
        out.contains("== glob '*'\nglob: 0 pathc 9 offs 0 flags 0 errfunc 0 altdirfunc-untouched 1\na\nc\nd\ndangling\ndeep\nlink\nnewdir\nskip\nsub\n"),
        "{out}"
    );
        assert!(
            out.contains("== glob d\nglob: 0 pathc 1"),
            "a worker's file is found without magic: {out}"
        );
        assert!(
            out.contains("== glob b\nglob: 3 pathc 0"),
            "a removed file is not found: {out}"
        );
    }
);

e2e!(regression_nftw_and_ftw_walk_the_workers_tree, |dir| {
    let calls = [
        "nftw .",
        "nftw . p",
        "nftw . d",
        "nftw . pd 1",
        "nftw . c",
        "nftw . cd 2",
        "nftw . a",
        "nftw . pa 1",
        "nftw ./sub/",
        "nftw deep m",
        "nftw link",
        "nftw link p",
        "nftw dangling",
        "nftw d",
        "nftw b",
        "ftw .",
        "ftw . 1",
        "ftw dangling",
    ];
    let script: Vec<String> = calls
        .iter()
        .map(|c| format!("echo '== {c}'; $fx {c}"))
        .collect();
    let out = listed(&dir, &script.join("; "));
    assert!(
        out.contains("./d F level 1 base 2 file 5\n"),
        "the worker's file is walked: {out}"
    );
    assert!(!out.contains("./b F"), "a removed file is walked: {out}");
    assert!(
        out.contains("./c F level 1 base 2 file 12\n"),
        "the worker's copy is stat'ed: {out}"
    );
});

e2e!(
    regression_getdents64_on_a_merged_directory_lists_the_workers_view,
    |dir| {
        let out = listed(
            &dir,
            "$fx getdents .; $fx getdents sub 24; $fx sysgetdents .; $fx sysgetdents . 64; \
         $fx sysgetdents deep/one/two 24; $fx getdents . 16; $fx sysgetdents sub 8",
        );
        assert!(out.contains("\nd file file 5\n"), "{out}");
        assert!(!out.contains("\nb file"), "{out}");
        assert!(out.contains("getdents: Invalid argument\n"), "{out}");
    }
);

e2e!(regression_real_programs_list_what_the_worker_wrote, |dir| {
    let (bare_job, job) = twin_jobs(&dir, |d| {
        shared_tree(d);
        for f in ["parts/20-shared", "parts/30-gone"] {
            write(d.join(f), "#!/bin/sh\n");
            std::fs::set_permissions(
                d.join(f),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
        }
    });
    let script = format!(
            "{CHANGES} printf '#!/bin/sh\\n' > parts/10-mine; chmod +x parts/10-mine; rm parts/30-gone; set +f; \
         ls -la | awk 'NR>1 {{print $1, $5, $9}}'; ls -la sub | awk 'NR>1 {{print $1, $5, $9}}'; \
         find . -type f | sort; find . | sort; du -a | sort -k2; \
         tar cf - . | tar tf - | sort; cp -r sub copy && find copy | sort && cat copy/y; \
         echo * .*; echo sub/* */*; shopt -s globstar; echo **; \
         python3 -c 'import glob, os; print(sorted(glob.glob(\"**\", recursive=True))); \
print(sorted((d, sorted(ds), sorted(fs)) for d, ds, fs in os.walk(\".\")))'; \
         run-parts --test parts; rm -rf sub && echo removed; ls"
        );
    let out = same_output(&dir, &bare_job, &job, &script);
    assert!(out.contains("parts/10-mine\nparts/20-shared\n"), "{out}");
    assert!(out.contains("./d\n"), "{out}");
    assert!(
        out.ends_with("removed\na\nc\ncopy\nd\ndangling\ndeep\nlink\nnewdir\nparts\nskip\n"),
        "{out}"
    );
});
