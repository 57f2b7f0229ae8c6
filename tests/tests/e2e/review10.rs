//! Hostile review 10 (of the renamed directory's fill below a held
//! descriptor, the node copy-ups, and the view's search permission).

use mpaudit_tests::*;
use std::path::Path;
use std::process::Command;

/// Shared `a`, `b` and an empty `e`.
fn tree(d: &Path) {
    std::fs::write(d.join("a"), "A").unwrap();
    std::fs::write(d.join("b"), "B").unwrap();
    std::fs::create_dir(d.join("e")).unwrap();
}

/// `script` run under the library's redirect (worker 1) over [`tree`]:
/// its output, after checking that the shared tree is as it was.
fn redirected_leaves_the_shared_tree(dir: &TestDir, setup: fn(&Path), script: &str) -> String {
    for d in ["job", "workers", "logs"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    let job = dir.join("job");
    std::fs::create_dir_all(&job).unwrap();
    setup(&job);
    let script_file = dir.join("script.txt");
    std::fs::write(&script_file, script).unwrap();
    let before = shared_snapshot(&job);
    let mut c = Command::new(fixture("ops_exec"));
    c.arg(&script_file);
    crate::redirect_exact::as_redirecting_worker(&mut c, &job, dir, 1);
    let out = run(&mut c, DEADLINE);
    assert_eq!(
        shared_snapshot(&job),
        before,
        "the shared tree changed under redirect for\n{script}\n{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// The worker's directory (worker 1), as the executor spells it.
const W: &str = "@/../workers/worker_1";

// Escape: the program may write its own worker directory. A symlink it
// put where a first redirect's copy goes (the table has no entry for the
// name) was taken for "an earlier copy" (copy_original's EEXIST), and the
// call, given /proc/thread-self/fd/N/<leaf>, followed it into the shared
// tree: an append wrote the shared `b`, an O_CREAT of a new name wrote
// it, a chmod of a shared directory chmodded it (twice: the seeding's
// fchmodat by name, then the call). The supervisor fails such a call
// with ELOOP (emulate.rs prepare_target), as the library now does.
e2e!(
    a_symlink_the_program_puts_at_a_first_copy_s_place_leads_no_write_out,
    |dir| {
        // (The first write makes the worker directory.)
        let pre = "open 0 c WRONLY|CREAT 644\nclose 0\n";
        for op in [
            "open 0 a WRONLY|APPEND\nwrite 0 Z",
            "open 0 a WRONLY|TRUNC\nwrite 0 Z",
            "open 0 a RDWR\nwrite 0 Z",
            "truncate a 0",
            "chmod a 711",
            "chown a 1",
            "utimensat a 1000 0",
            "open 0 n WRONLY|CREAT 644\nwrite 0 Z",
            "chmod e 711",
            "chown e 1",
            "utimensat e 1000 0",
        ] {
            let leaf = op
                .split(' ')
                .nth(if op.starts_with("open") { 2 } else { 1 });
            let leaf = leaf.unwrap();
            let script = format!("{pre}symlink @/b {W}/{leaf}\n{op}\n");
            let out = redirected_leaves_the_shared_tree(&dir, tree, &script);
            assert!(
                out.contains(&format!("symlink @/b {W}/{leaf} -> ok")),
                "{out}"
            );
        }
    }
);

/// What a directory whose copy denies search or read (the worker changed
/// its mode) lets through, as a worker not root: every call that looks a
/// name up in it or lists it, bare vs redirected (library and
/// supervisor). (Entering it, `chdir`, and an `open` of it, are in
/// [`A_DIRECTORY_THAT_DENIES_SEARCH_ENTERED`].)
const A_DIRECTORY_THAT_DENIES_SEARCH: &[&str] = &[
    "chmod e 100\nchdir e\nstat x",
    "chmod e 100\nreaddir e",
    "chmod e 300\nreaddir e",
    "chmod e 600\nstat e/x",
    "chmod e 100\nstat e/x",
    "chmod e 0\naccess e/x",
    "chmod e 0\nlstat e/.",
    "chmod e 0\nstat e/s/..",
    "chmod e 0\nreadlink e/x",
    "chmod e 0\nopen 0 e/x RDONLY",
    "chmod e 0\nopen 0 e/x PATH",
    "chmod e 0\nlinkat cwd e/x cwd g 0",
    "chmod e 0\nlinkat cwd a cwd e/g 0",
    "chmod e 0\nsymlink x e/l",
    "chmod e 0\nmkdir e/n 755",
    "chmod e 0\nunlink e/x",
    "chmod e 0\nrmdir e/s",
    "chmod e 0\nchmod e/x 600",
    "chmod e 0\nrename e/x a",
    "chmod e 0\nrename a e/x",
    "chmod e/s 0\nstat e/s/y\nchmod e/s 755\nstat e/s/y",
    "chmod e 755\nchdir e\nchmod . 0\nstat x\nstat .\nstat ..",
    "chdir e\nchmod ../e 0\nstat x\nopen 0 x RDONLY",
];

/// Entering such a directory, opening it (O_PATH too) and moving it.
const A_DIRECTORY_THAT_DENIES_SEARCH_ENTERED: &[&str] = &[
    "chmod e 0\nopen 0 e PATH|DIRECTORY",
    "chmod e 0\nopen 0 e PATH|DIRECTORY\nopenat 1 0 x RDONLY",
    "chmod e 0\nrename e f\nstat f/x",
];

fn differing_as_nobody(dir: &TestDir, ops: &[&str], supervised: bool) -> Vec<String> {
    crate::review8::differing_as(
        dir,
        crate::review8::nobody_s_tree,
        crate::review8::NOBODY,
        ops,
        supervised,
    )
}

e2e!(
    a_directory_whose_copy_denies_search_answers_as_bare_in_the_library,
    |dir| {
        let ops = [
            A_DIRECTORY_THAT_DENIES_SEARCH,
            A_DIRECTORY_THAT_DENIES_SEARCH_ENTERED,
        ];
        crate::review8::assert_none(differing_as_nobody(&dir, &ops.concat(), false));
    }
);

e2e!(
    a_directory_whose_copy_denies_search_answers_as_bare_under_the_supervisor,
    |dir| {
        let ops = A_DIRECTORY_THAT_DENIES_SEARCH;
        crate::review8::assert_none(differing_as_nobody(&dir, ops, true));
    }
);

// Wrong result (today's search check, d29a876; 26832f2 answered as
// bare): `fstat` of a held descriptor (O_PATH) of a directory whose copy
// denies search counts the copy's own links (2: its entries are the
// shared ones), where bare (and `stat e`) says 3. With mode 100 (search
// allowed) the count is right: the count of the descriptor's job path is
// taken through a walk that now stops at the copy's missing search
// permission, and falls back to the copy's raw count. (Then, with the
// O_PATH open given the shared directory, the count was right and the
// mode the shared one's.) A held descriptor's directory is now its path,
// not walked.
e2e!(
    a_held_descriptor_of_a_directory_whose_copy_denies_search_counts_its_links,
    |dir| {
        let ops = [
            "chmod e 0\nopen 0 e PATH|DIRECTORY\nfstat 0",
            "chmod e 600\nopen 0 e PATH|DIRECTORY\nfstat 0",
        ];
        crate::review8::assert_none(differing_as_nobody(&dir, &ops, false));
    }
);

// Wrong result (before today too: 26832f2): under the supervisor an
// O_PATH open of a directory whose copy denies search, and its rename,
// fail with EACCES; bare (and the library) they succeed (O_PATH asks no
// permission of the file; a rename within its parent none of the moved
// directory). (chdir into it is documented as not emulated.)
e2e!(
    #[ignore = "supervisor: an O_PATH open and a rename of a directory whose copy denies search are EACCES (review 10 F4; not today's)"]
    a_directory_whose_copy_denies_search_is_opened_and_moved_as_bare_under_the_supervisor,
    |dir| {
        let ops = A_DIRECTORY_THAT_DENIES_SEARCH_ENTERED;
        crate::review8::assert_none(differing_as_nobody(&dir, ops, true));
    }
);

// Escape (today's fill below a held descriptor): a directory the fill
// makes in a renamed directory's copy (mkdir_below), and a copy-up's
// directory or FIFO, socket or device node (copy_original), had its mode
// set by name (fchmodat, which follows a symlink) after it was made: a
// thread of the program that swaps a symlink to a shared file in between
// (RENAME_EXCHANGE in its own worker directory) had the shared file
// chmodded. (A race: one round of 2,000 renames won it every time on the
// review machine; up to three rounds.)
e2e!(
    a_symlink_swapped_in_while_the_fill_makes_a_directory_chmods_no_shared_file,
    |dir| {
        let job = dir.join("job");
        let wd = dir.join("workers/worker_1");
        let victim = job.join("v");
        let mut swaps = Vec::new();
        for _ in 0..3 {
            for d in ["job", "workers", "logs"] {
                let _ = std::fs::remove_dir_all(dir.join(d));
            }
            std::fs::create_dir_all(&wd).unwrap();
            use std::os::unix::fs::PermissionsExt;
            for i in 0..2000 {
                let s = job.join(format!("e{i}/s"));
                std::fs::create_dir_all(&s).unwrap();
                std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o711)).unwrap();
            }
            std::fs::write(&victim, "V").unwrap();
            std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
            let mut c = Command::new(fixture("fill_race"));
            c.arg(&wd).arg(&victim).arg("2000");
            crate::redirect_exact::as_redirecting_worker(&mut c, &job, &dir, 1);
            let out = run(&mut c, DEADLINE);
            swaps.push(stdout(&out).replace('\n', ", "));
            let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o644, "the shared v was chmodded ({swaps:?})");
        }
    }
);
