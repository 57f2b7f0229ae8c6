//! Small `/proc` helpers: parents, process groups, descendants.

use std::collections::{BTreeMap, BTreeSet};

/// `(ppid, pgid, starttime in clock ticks)` from `/proc/<pid>/stat`.
pub fn stat(pid: i32) -> Option<(i32, i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`, …).
pub fn state(pid: i32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].trim_start().chars().next()
}

/// Parses a `/proc/<pid>/stat` line; the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<(i32, i32, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] = state (field 3), f[1] = ppid (4), f[2] = pgrp (5), f[19] = starttime (22)
    Some((
        f.get(1)?.parse().ok()?,
        f.get(2)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

/// Every live process (zombies included) whose ancestry leads to `root`,
/// excluding `root` itself.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some((ppid, _, _)) = stat(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

/// Direct children of `pid`, from `/proc/<pid>/task/*/children` (falls back
/// to a scan of `/proc` when that file is missing).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = BTreeSet::new();
    let mut found_file = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                found_file = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|s| s.parse::<i32>().ok()),
                );
            }
        }
    }
    if !found_file {
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(c) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if stat(c).is_some_and(|(pp, _, _)| pp == pid) {
                    out.insert(c);
                }
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_names() {
        let line = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        assert_eq!(parse_stat(line), Some((1, 1234, 98765)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn finds_own_child() {
        let mut c = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let pid = c.id() as i32;
        assert!(descendants(me).contains(&pid));
        assert!(children(me).contains(&pid));
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
