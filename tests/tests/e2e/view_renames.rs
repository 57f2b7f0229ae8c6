//! A redirected worker renames directories it has moved or made (review 2,
//! F21): the moved subtree is found under its new name and gone under the
//! old one, for every process of the worker, and the shared tree is left as
//! it was. Each script runs bare and redirected in identical job dirs.

use crate::redirect_shared::{same_output, twin_jobs, write};
use mpaudit_tests::*;
use std::path::Path;

/// The shared tree of every test here: `d/sub/g`, `d/sub/deep/x/y/z`, `d/a`.
fn shared_tree(d: &Path) {
    write(d.join("d/sub/g"), "g\n");
    write(d.join("d/sub/deep/x/y/z"), "z\n");
    write(d.join("d/a"), "a\n");
}

fn assert_shared_tree_unchanged(job: &Path) {
    for (f, text) in [
        ("d/sub/g", "g\n"),
        ("d/sub/deep/x/y/z", "z\n"),
        ("d/a", "a\n"),
    ] {
        assert_eq!(std::fs::read_to_string(job.join(f)).unwrap(), text, "{f}");
    }
    for gone in ["e", "n", "d/n", "d/sub2"] {
        assert!(
            !job.join(gone).exists(),
            "{gone} appeared in the shared tree"
        );
    }
}

/// Runs each script in fresh twins (and a fresh worker directory).
fn each_fresh(dir: &TestDir, scripts: &[&str]) -> Vec<String> {
    scripts
        .iter()
        .map(|script| {
            for d in ["bare", "job", "workers"] {
                let _ = std::fs::remove_dir_all(dir.join(d));
            }
            let (bare, job) = twin_jobs(dir, shared_tree);
            let out = same_output(dir, &bare, &job, script);
            assert_shared_tree_unchanged(&job);
            out
        })
        .collect()
}

e2e!(
    a_renamed_subdirectory_of_a_moved_shared_directory_keeps_its_files,
    |dir| {
        let out = each_fresh(
            &dir,
            &[
                "mv d e && mv e/sub e/sub2 && cat e/sub2/g e/sub2/deep/x/y/z && ls -R e; \
                 [ -e e/sub ] || echo old-gone; find . | sort",
                // Several levels deep, and by another process (python) of the worker.
                "mv d e && mv e/sub/deep/x e/sub/deep/x2 && mv e/sub e/s2 && \
                 python3 -c 'import os; os.rename(\"e/s2/deep\", \"e/s2/d2\"); \
                 print(open(\"e/s2/d2/x2/y/z\").read(), end=\"\"); print(os.path.exists(\"e/s2/deep\"))'; \
                 find . | sort",
            ],
        );
        assert!(out[0].starts_with("g\nz\n"), "{}", out[0]);
        assert!(out[0].contains("old-gone\n"), "{}", out[0]);
        assert!(out[1].starts_with("z\nFalse\n"), "{}", out[1]);
    }
);

e2e!(
    a_directory_renamed_back_and_forth_keeps_the_files_made_in_it,
    |dir| {
        let out = each_fresh(
            &dir,
            &[
                "mv d e && echo new > e/n && mv e d && cat d/n d/sub/g && ls d && \
                 mv d e && cat e/n e/sub/deep/x/y/z && mv e d && find . | sort",
                // A subdirectory moved away and back, then into another level.
                // (A directory made inside the worker-only `e` needs mkdir to
                // follow the view: branch dirs-meta.)
                "mv d e && mv e/sub e/s && echo m > e/s/f && mv e/s e/sub && mv e/sub e/a2 && \
                 mv e/a2 e/sub && mv e d && cat d/sub/f d/sub/g && find . | sort",
                // os.renames prunes the emptied old parents. (New parents
                // inside the worker-only `e` need mkdir to follow the view:
                // branch dirs-meta.)
                "mv d e && python3 -c 'import os; os.renames(\"e/sub/deep/x\", \"e/sub/x\"); \
                 print(open(\"e/sub/x/y/z\").read(), end=\"\"); print(os.path.exists(\"e/sub/deep\"))'; \
                 find . | sort",
            ],
        );
        assert!(out[0].starts_with("new\ng\n"), "{}", out[0]);
        assert!(out[1].starts_with("m\ng\n"), "{}", out[1]);
        assert!(out[2].starts_with("z\nFalse\n"), "{}", out[2]);
    }
);
