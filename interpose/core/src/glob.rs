//! Glob matching over path bytes, without allocation or recursion.
//!
//! Syntax: `*` matches a run of bytes other than `/`, `**` any run including
//! `/`, `?` one byte other than `/`, `[abc]`, `[a-z]`, `[!x]` and `[^x]` one
//! byte from (or not from) a class, never `/`; `\` makes the next byte
//! literal. A `**` that fills a whole component and is followed by `/`
//! (`**/x`, `a/**/x`) also matches zero directories, so `a/**/x` matches
//! `a/x`; elsewhere `**` is simply "any run". A pattern without `/` matches
//! the file name (last component) of the text, as in `.gitignore`; a pattern
//! with `/` matches the whole text.
//!
//! Matching is the classic two-pointer algorithm with one resume point for
//! the latest `*` and one for the latest `**`. A later `*` or `**` supersedes
//! an earlier one (what the earlier one could have absorbed, the later one
//! can too), so nothing older is ever revisited: the cost is bounded by
//! pattern length times text length per `**` resume, with no recursion.

use crate::path::file_name;

/// Matches `text` against `pattern`, by file name when `pattern` has no `/`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    if pattern.contains(&b'/') {
        glob_match_whole(pattern, text)
    } else {
        glob_match_whole(pattern, file_name(text))
    }
}

#[derive(Clone, Copy)]
enum Token {
    Literal(u8),
    AnyByte,
    /// A bracket class; the range indexes its body (between the brackets and
    /// after any negation mark) in the pattern.
    Class {
        start: usize,
        end: usize,
        negated: bool,
    },
    Star,
    /// `zero_dirs`: the token also consumed a following `/` and may match
    /// nothing at all (the whole-component `**/` form).
    Globstar {
        zero_dirs: bool,
    },
}

/// The token at `p` and the index after it, or `None` at the pattern's end.
fn next_token(pattern: &[u8], p: usize) -> Option<(Token, usize)> {
    let byte = *pattern.get(p)?;
    Some(match byte {
        b'\\' => match pattern.get(p + 1) {
            Some(&escaped) => (Token::Literal(escaped), p + 2),
            // A lone trailing backslash stands for itself.
            None => (Token::Literal(b'\\'), p + 1),
        },
        b'*' => {
            let run_end = p + pattern
                .get(p..)
                .map_or(0, |rest| rest.iter().take_while(|&&b| b == b'*').count());
            if run_end - p == 1 {
                (Token::Star, run_end)
            } else {
                let at_component_start = p == 0 || pattern.get(p - 1) == Some(&b'/');
                if at_component_start && pattern.get(run_end) == Some(&b'/') {
                    (Token::Globstar { zero_dirs: true }, run_end + 1)
                } else {
                    (Token::Globstar { zero_dirs: false }, run_end)
                }
            }
        }
        b'?' => (Token::AnyByte, p + 1),
        b'[' => match class_at(pattern, p) {
            Some(class) => class,
            // An unterminated bracket is a literal `[`.
            None => (Token::Literal(b'['), p + 1),
        },
        other => (Token::Literal(other), p + 1),
    })
}

/// Parses the bracket class opening at `open`; `None` when unterminated.
fn class_at(pattern: &[u8], open: usize) -> Option<(Token, usize)> {
    let mut i = open + 1;
    let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let start = i;
    // A `]` right after the opening (or the negation) is a member.
    if pattern.get(i) == Some(&b']') {
        i += 1;
    }
    loop {
        match *pattern.get(i)? {
            b']' => {
                return Some((
                    Token::Class {
                        start,
                        end: i,
                        negated,
                    },
                    i + 1,
                ))
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Reads one class member byte at `i` (unescaping), and the index after it.
fn class_byte(body: &[u8], i: usize) -> Option<(u8, usize)> {
    match *body.get(i)? {
        b'\\' => match body.get(i + 1) {
            Some(&escaped) => Some((escaped, i + 2)),
            None => Some((b'\\', i + 1)),
        },
        other => Some((other, i + 1)),
    }
}

fn class_matches(body: &[u8], negated: bool, byte: u8) -> bool {
    if byte == b'/' {
        return false;
    }
    let mut hit = false;
    let mut i = 0;
    while let Some((low, after_low)) = class_byte(body, i) {
        // `-` makes a range unless it is the class's last byte.
        let (high, after) = match body.get(after_low) {
            Some(b'-') if after_low + 1 < body.len() => match class_byte(body, after_low + 1) {
                Some(high) => high,
                None => (low, after_low),
            },
            _ => (low, after_low),
        };
        if low <= byte && byte <= high {
            hit = true;
        }
        i = after;
    }
    hit != negated
}

impl Token {
    /// Whether this single-byte token matches `byte` (never for stars).
    fn matches(self, pattern: &[u8], byte: u8) -> bool {
        match self {
            Token::Literal(b) => b == byte,
            Token::AnyByte => byte != b'/',
            Token::Class {
                start,
                end,
                negated,
            } => class_matches(pattern.get(start..end).unwrap_or_default(), negated, byte),
            Token::Star | Token::Globstar { .. } => false,
        }
    }
}

/// Where to resume after the latest `*`: its pattern continuation, the text
/// index where the star currently stops, and whether the pattern between the
/// latest `**` and this star can match only within one component.
#[derive(Clone, Copy)]
struct StarResume {
    p: usize,
    t: usize,
    slash_free_prefix: bool,
}

/// Where to resume after the latest `**`: its pattern continuation and the
/// text index it currently stops at.
#[derive(Clone, Copy)]
struct GlobstarResume {
    p: usize,
    t: usize,
    zero_dirs: bool,
}

/// Matches `text` against the whole of `pattern` (no file-name rule).
pub fn glob_match_whole(pattern: &[u8], text: &[u8]) -> bool {
    let mut p = 0;
    let mut t = 0;
    let mut star: Option<StarResume> = None;
    let mut globstar: Option<GlobstarResume> = None;
    let mut slash_since_globstar = false;
    loop {
        match next_token(pattern, p) {
            Some((Token::Globstar { zero_dirs }, after)) => {
                if after == pattern.len() && !zero_dirs {
                    // A trailing `**` takes whatever is left.
                    return true;
                }
                globstar = Some(GlobstarResume {
                    p: after,
                    t,
                    zero_dirs,
                });
                star = None;
                slash_since_globstar = false;
                p = after;
                continue;
            }
            Some((Token::Star, after)) => {
                star = Some(StarResume {
                    p: after,
                    t,
                    slash_free_prefix: !slash_since_globstar,
                });
                p = after;
                continue;
            }
            Some((token, after)) => {
                if let Some(&byte) = text.get(t) {
                    if token.matches(pattern, byte) {
                        slash_since_globstar |= byte == b'/';
                        p = after;
                        t += 1;
                        continue;
                    }
                }
            }
            None if t == text.len() => return true,
            None => {}
        }

        // Mismatch: let the latest `*` take one more byte, else move the
        // latest `**` on, else fail.
        let mut blocked_at = None;
        if let Some(resume) = star.as_mut() {
            match text.get(resume.t) {
                Some(&b'/') => {
                    if resume.slash_free_prefix {
                        blocked_at = Some(resume.t);
                    }
                }
                Some(_) => {
                    resume.t += 1;
                    p = resume.p;
                    t = resume.t;
                    continue;
                }
                // The star already reaches the end of the text; a later
                // start for the `**` could only reach it later still.
                None => return false,
            }
        }
        let Some(resume) = globstar.as_mut() else {
            return false;
        };
        let next = match blocked_at {
            // Everything between the `**` and the star stays within one
            // component, so no start before the blocking `/` can get past it.
            Some(slash) => slash + 1,
            None if resume.zero_dirs => {
                match text
                    .get(resume.t..)
                    .and_then(|rest| rest.iter().position(|&b| b == b'/'))
                {
                    Some(offset) => resume.t + offset + 1,
                    None => return false,
                }
            }
            None if resume.t < text.len() => resume.t + 1,
            None => return false,
        };
        resume.t = next;
        p = resume.p;
        t = next;
        star = None;
        slash_since_globstar = false;
    }
}

/// Splits a list on `:` the way `MPAUDIT_OUTPUTS`-style variables arrive.
///
/// A lone `:` separates; a run of two or more (`HistSvc::write`) is part of
/// the entry, and `\:` is a literal colon (the glob unescapes it).
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobList<'a> {
    list: &'a [u8],
}

impl<'a> GlobList<'a> {
    pub fn new(list: &'a [u8]) -> Self {
        GlobList { list }
    }

    /// True when the list holds no non-empty entry.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The non-empty entries, in order.
    pub fn iter(&self) -> Entries<'a> {
        Entries { rest: self.list }
    }

    /// True when a pattern matches the job-relative path (when there is one)
    /// or the absolute path.
    pub fn matches_path(&self, rel: Option<&[u8]>, abs: &[u8]) -> bool {
        self.iter().any(|pattern| {
            rel.is_some_and(|rel| glob_match(pattern, rel)) || glob_match(pattern, abs)
        })
    }

    /// True when a pattern matches any of `texts`.
    pub fn matches_any(&self, texts: &[&[u8]]) -> bool {
        self.iter()
            .any(|pattern| texts.iter().any(|text| glob_match(pattern, text)))
    }
}

/// Iterator over a [`GlobList`]'s non-empty entries.
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.rest.is_empty() {
            let end = separator_at(self.rest);
            let entry = self.rest.get(..end).unwrap_or_default();
            self.rest = self.rest.get(end + 1..).unwrap_or_default();
            if !entry.is_empty() {
                return Some(entry);
            }
        }
        None
    }
}

/// Index of the first separating `:` in `list`, or its length.
fn separator_at(list: &[u8]) -> usize {
    let mut i = 0;
    while let Some(&byte) = list.get(i) {
        match byte {
            b'\\' => i += 2,
            b':' => {
                let run = list
                    .get(i..)
                    .map_or(0, |rest| rest.iter().take_while(|&&b| b == b':').count());
                if run == 1 {
                    return i;
                }
                i += run;
            }
            _ => i += 1,
        }
    }
    list.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;
    use std::collections::HashMap;

    fn m(pattern: &str, text: &str) -> bool {
        glob_match(pattern.as_bytes(), text.as_bytes())
    }

    #[test]
    fn stars_stay_within_a_component() {
        assert!(m("/job/*.root", "/job/out.root"));
        assert!(!m("/job/*.root", "/job/sub/out.root"));
        assert!(m("/job/*/out.root", "/job/sub/out.root"));
        assert!(m("/job/*", "/job/"));
        assert!(!m("/job/*", "/job"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
    }

    #[test]
    fn globstar_crosses_components() {
        assert!(m("/job/**", "/job/a/b/c"));
        assert!(m("/job/**", "/job/a"));
        assert!(!m("/job/**", "/job"));
        assert!(!m("/job/**", "/jobs/a"));
        assert!(m("/job/**/out.root", "/job/out.root"));
        assert!(m("/job/**/out.root", "/job/a/b/out.root"));
        assert!(!m("/job/**/out.root", "/job/a/b/xout.root"));
        assert!(m("**/out.root", "out.root"));
        assert!(m("**/out.root", "a/b/out.root"));
        assert!(m("**/out.root", "/job/out.root"));
        assert!(m("/**/hist/*.txt", "/job/w/hist/h.txt"));
        assert!(m("**", ""));
        assert!(m("/job/**.root", "/job/a/b/c.root"));
        // Not a whole component: plain "any run", no zero-directory form.
        assert!(m("x**/y", "xa/b/y"));
        assert!(!m("x**/y", "xy"));
        assert!(m("/a/***/b", "/a/b"));
    }

    #[test]
    fn single_bytes_and_classes() {
        assert!(m("/a?c", "/abc"));
        assert!(!m("/a?c", "/a/c"));
        assert!(m("[abc].txt", "b.txt"));
        assert!(!m("[abc].txt", "d.txt"));
        assert!(m("hist-[0-9].txt", "/j/hist-7.txt"));
        assert!(!m("hist-[0-9].txt", "/j/hist-x.txt"));
        assert!(m("[!x]y", "ay"));
        assert!(!m("[!x]y", "xy"));
        assert!(m("[^x]y", "ay"));
        assert!(!m("[^x]y", "xy"));
        assert!(m("[]]", "]"));
        assert!(m("[!]]", "a"));
        assert!(!m("[!]]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("[\\]x]", "]"));
        assert!(m("[\\-]", "-"));
        assert!(!m("/a[!x]b", "/a/b"), "classes never match a slash");
        assert!(!m("/a[/]b", "/a/b"));
        // Unterminated bracket is literal.
        assert!(m("a[b", "a[b"));
        assert!(!m("a[b", "ab"));
    }

    #[test]
    fn escapes() {
        assert!(m("\\*.root", "*.root"));
        assert!(!m("\\*.root", "x.root"));
        assert!(m("a\\?", "a?"));
        assert!(!m("a\\?", "ab"));
        assert!(m("a\\", "a\\"));
        assert!(m("a\\[b]", "a[b]"));
    }

    #[test]
    fn patterns_without_slash_match_the_file_name() {
        assert!(m("*.root", "/job/sub/out.root"));
        assert!(m("*.root", "out.root"));
        assert!(!m("*.root", "/job/out.root/log"));
        assert!(m("out.root", "/job/sub/out.root"));
        assert!(!m("sub", "/job/sub/out.root"));
        assert!(m("hist-*.txt", "/x/hist-1.txt"));
        // With a slash the pattern is anchored to the whole text.
        assert!(!m("sub/*.root", "/job/sub/out.root"));
        assert!(m("sub/*.root", "sub/out.root"));
        assert!(m("**/sub/*.root", "/job/sub/out.root"));
    }

    #[test]
    fn non_utf8_bytes_are_plain_bytes() {
        assert!(glob_match(b"/d/\xff*", b"/d/\xff\xfe"));
        assert!(glob_match(b"/d/?", b"/d/\xff"));
        assert!(glob_match(b"[\x80-\xff]", b"\xc3"));
    }

    #[test]
    fn pathological_patterns_finish() {
        let a4000 = vec![b'a'; 4000];
        assert!(!glob_match(b"*a*a*a*a*a*a*b", &a4000));
        assert!(glob_match(b"*a*a*a*a*a*a*a", &a4000));
        assert!(!glob_match(b"**a**a**a**a**a**a**b", &a4000));
        assert!(!glob_match(b"/**a*a*a*a*a*a*b", &a4000));
        let mut deep = Vec::new();
        for _ in 0..1000 {
            deep.extend_from_slice(b"/a/");
        }
        assert!(!glob_match(b"/**/a/**/a/**/a/**/a/**/b", &deep));
        assert!(!glob_match(b"**a*a*a*a*b", &deep));
        assert!(glob_match(b"/**/a/**/a/**/a/**/a/**", &deep));
        let mut slashes = vec![b'a'; 3000];
        slashes.extend_from_slice(&[b'/'; 1000]);
        assert!(!glob_match(b"**a*a*a*b", &slashes));
    }

    #[test]
    fn list_splits_on_lone_colons() {
        let list = GlobList::new(b"*.root::hist-*.txt:");
        let entries: Vec<&[u8]> = list.iter().collect();
        assert_eq!(entries, vec![&b"*.root::hist-*.txt"[..]]);

        let list = GlobList::new(b":*.root:hist-*.txt::");
        let entries: Vec<&[u8]> = list.iter().collect();
        assert_eq!(entries, vec![&b"*.root"[..], &b"hist-*.txt::"[..]]);

        let list = GlobList::new(b"libHistSvc.so:HistSvc::*:Foo::Bar::write");
        let entries: Vec<&[u8]> = list.iter().collect();
        assert_eq!(
            entries,
            vec![
                &b"libHistSvc.so"[..],
                &b"HistSvc::*"[..],
                &b"Foo::Bar::write"[..]
            ]
        );

        let list = GlobList::new(b"a\\:b:c\\\\:d");
        let entries: Vec<&[u8]> = list.iter().collect();
        assert_eq!(entries, vec![&b"a\\:b"[..], &b"c\\\\"[..], &b"d"[..]]);
        assert!(list.matches_any(&[b"a:b"]));

        assert!(GlobList::new(b"").is_empty());
        assert!(GlobList::new(b":").is_empty());
        assert!(GlobList::new(b"::").iter().eq([&b"::"[..]]));
        assert!(!GlobList::new(b"x").is_empty());
    }

    #[test]
    fn list_matches_relative_or_absolute() {
        let list = GlobList::new(b"*.root:out/hist-*.txt:/scratch/**");
        assert!(list.matches_path(Some(b"a/b.root"), b"/job/a/b.root"));
        assert!(list.matches_path(Some(b"out/hist-1.txt"), b"/job/out/hist-1.txt"));
        assert!(!list.matches_path(None, b"/job/out/hist-1.txt"));
        assert!(list.matches_path(None, b"/scratch/x/y"));
        assert!(!list.matches_path(Some(b"log.txt"), b"/job/log.txt"));
        assert!(list.matches_any(&[b"nope", b"/scratch/z"]));
        assert!(!list.matches_any(&[]));
        assert!(!GlobList::new(b"").matches_path(None, b"/anything"));
    }

    /// Straightforward exponential-in-principle matcher (memoised) that
    /// states the semantics directly, to check the two-pointer one against.
    fn reference(pattern: &[u8], text: &[u8]) -> bool {
        fn go(
            pattern: &[u8],
            text: &[u8],
            p: usize,
            t: usize,
            memo: &mut HashMap<(usize, usize), bool>,
        ) -> bool {
            if let Some(&known) = memo.get(&(p, t)) {
                return known;
            }
            let result = match next_token(pattern, p) {
                None => t == text.len(),
                Some((Token::Star, after)) => {
                    let mut ok = false;
                    let mut k = t;
                    loop {
                        if go(pattern, text, after, k, memo) {
                            ok = true;
                            break;
                        }
                        match text.get(k) {
                            Some(&b) if b != b'/' => k += 1,
                            _ => break,
                        }
                    }
                    ok
                }
                Some((Token::Globstar { zero_dirs: false }, after)) => {
                    (t..=text.len()).any(|k| go(pattern, text, after, k, memo))
                }
                Some((Token::Globstar { zero_dirs: true }, after)) => {
                    go(pattern, text, after, t, memo)
                        || (t + 1..=text.len())
                            .any(|k| text[k - 1] == b'/' && go(pattern, text, after, k, memo))
                }
                Some((token, after)) => {
                    t < text.len()
                        && token.matches(pattern, text[t])
                        && go(pattern, text, after, t + 1, memo)
                }
            };
            memo.insert((p, t), result);
            result
        }
        go(pattern, text, 0, 0, &mut HashMap::new())
    }

    fn from_atoms(atoms: Vec<&'static str>) -> Vec<u8> {
        atoms.concat().into_bytes()
    }

    fn pattern_atom() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "a", "b", "/", "*", "**", "**/", "?", "[ab]", "[!a]", "\\*", "ab", "/a",
        ])
    }

    fn text_atom() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(vec!["a", "b", "/", "*", "ab", "ba", "/a"])
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(4000))]

        #[test]
        fn agrees_with_reference(
            pattern in proptest::collection::vec(pattern_atom(), 0..9).prop_map(from_atoms),
            text in proptest::collection::vec(text_atom(), 0..12).prop_map(from_atoms),
        ) {
            proptest::prop_assert_eq!(
                glob_match_whole(&pattern, &text),
                reference(&pattern, &text),
                "pattern {:?} text {:?}",
                String::from_utf8_lossy(&pattern),
                String::from_utf8_lossy(&text)
            );
        }

        #[test]
        fn literal_patterns_match_themselves(text in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut escaped = Vec::new();
            for &b in &text {
                escaped.push(b'\\');
                escaped.push(b);
            }
            proptest::prop_assert!(glob_match_whole(&escaped, &text));
            proptest::prop_assert!(glob_match_whole(b"**", &text));
        }

        #[test]
        fn never_panics(
            pattern in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            text in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
        ) {
            let _ = glob_match(&pattern, &text);
            let _ = GlobList::new(&pattern).matches_path(Some(&text), &text);
        }

        #[test]
        fn list_entries_rejoin_to_the_list(
            entries in proptest::collection::vec("[a-z*]{1,4}(::[a-z*]{1,3})?", 0..6),
        ) {
            let joined = entries.join(":");
            let got: Vec<&[u8]> = GlobList::new(joined.as_bytes()).iter().collect();
            let want: Vec<&[u8]> = entries.iter().map(|e| e.as_bytes()).filter(|e| !e.is_empty()).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
