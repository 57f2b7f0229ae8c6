//! The kernel's reading of a `#!` line (Linux `fs/binfmt_script.c`), so
//! that the library can run a script the worker wrote the way the kernel
//! would run it from its job path: the interpreter gets the name exec was
//! called with as its script argument, never the worker directory's path
//! (docs/policy.md, "Exec of a program the worker wrote").

use core::ops::Range;

/// How many bytes of the file the kernel reads for the `#!` line
/// (`BINPRM_BUF_SIZE`).
pub const HEADER_SIZE: usize = 256;

/// A `#!` line: where the interpreter's name and its optional argument
/// lie in the header.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Interpreter {
    pub name: Range<usize>,
    pub arg: Option<Range<usize>>,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The interpreter of a file whose first bytes are `header` (at most
/// [`HEADER_SIZE`] of them: a shorter file, or a shorter read, gives fewer),
/// as the kernel finds it. `None` when the file is no script the kernel
/// would run: no `#!`, no interpreter name, or a name that does not end
/// within the header (ENOEXEC). As the kernel does, the line ends at the
/// first newline (or NUL, the kernel's strings being C strings), blanks
/// (space, tab) separate the name from one argument (the rest of the line,
/// trailing blanks removed, inner ones kept), and an argument cut by the
/// header's end is kept as cut.
pub fn interpreter(header: &[u8]) -> Option<Interpreter> {
    let buf = &header[..header.len().min(HEADER_SIZE)];
    if buf.len() < 2 || &buf[..2] != b"#!" {
        return None;
    }
    // The kernel's buffer is HEADER_SIZE bytes, zero past what was read,
    // and its last byte is never part of the line.
    let buf_end = HEADER_SIZE - 1;
    let at = |i: usize| buf.get(i).copied().unwrap_or(0);
    let line_end = match buf.iter().position(|&b| b == b'\n') {
        Some(nl) => nl,
        None => {
            let first = (2..=buf_end).find(|&i| !is_blank(at(i)))?;
            // No space, tab or NUL after the name: it may be truncated.
            (first..=buf_end).find(|&i| matches!(at(i), b' ' | b'\t' | 0))?;
            buf_end
        }
    };
    // C strings: the line stops at a NUL.
    let line_end = (0..line_end).find(|&i| at(i) == 0).unwrap_or(line_end);
    let mut end = line_end;
    while end > 2 && is_blank(at(end - 1)) {
        end -= 1;
    }
    let mut i = 2;
    while i < end && is_blank(at(i)) {
        i += 1;
    }
    if i >= end {
        return None;
    }
    let name_start = i;
    while i < end && !is_blank(at(i)) {
        i += 1;
    }
    let name = name_start..i;
    while i < end && is_blank(at(i)) {
        i += 1;
    }
    let arg = (i < end).then_some(i..end);
    Some(Interpreter { name, arg })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(h: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
        interpreter(h).map(|i| (&h[i.name], i.arg.map(|a| &h[a])))
    }

    #[test]
    fn a_plain_line() {
        assert_eq!(parts(b"#!/bin/sh\necho"), Some((&b"/bin/sh"[..], None)));
        assert_eq!(parts(b"#! /bin/sh\n"), Some((&b"/bin/sh"[..], None)));
        assert_eq!(parts(b"#!/bin/sh"), Some((&b"/bin/sh"[..], None)));
    }

    #[test]
    fn one_argument_with_its_inner_blanks_and_without_trailing_ones() {
        assert_eq!(
            parts(b"#!/usr/bin/env  python3 -u \t\nx"),
            Some((&b"/usr/bin/env"[..], Some(&b"python3 -u"[..])))
        );
        assert_eq!(
            parts(b"#!\t/bin/bash\t-e\r\n"),
            Some((&b"/bin/bash"[..], Some(&b"-e\r"[..])))
        );
    }

    #[test]
    fn no_script() {
        assert_eq!(parts(b"\x7fELF"), None);
        assert_eq!(parts(b"#"), None);
        assert_eq!(parts(b"#!"), None);
        assert_eq!(parts(b"#!   \n/bin/sh"), None);
        assert_eq!(parts(b"#!\0/bin/sh\n"), None);
        assert_eq!(parts(b" #!/bin/sh\n"), None);
    }

    #[test]
    fn a_nul_ends_the_line() {
        assert_eq!(parts(b"#!/bin/sh\0 -x\n"), Some((&b"/bin/sh"[..], None)));
    }

    #[test]
    fn a_name_that_fills_the_header_is_truncated_hence_no_script() {
        let mut h = b"#!/".to_vec();
        h.resize(HEADER_SIZE, b'a');
        assert_eq!(parts(&h), None);
        // The same name ended within the header, the argument cut: kept.
        let mut h = b"#!/bin/sh -".to_vec();
        h.resize(HEADER_SIZE, b'x');
        let (name, arg) = parts(&h).unwrap();
        assert_eq!(name, b"/bin/sh");
        // The kernel's last byte is never the line's.
        assert_eq!(arg.unwrap().len(), HEADER_SIZE - 1 - b"#!/bin/sh ".len());
    }
}
