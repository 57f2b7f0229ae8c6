//! Which programs the preload library cannot audit: statically linked ELF
//! executables (no `PT_INTERP`, so no dynamic loader to honour
//! `LD_PRELOAD`) and Go executables, static or dynamic (Go makes its own
//! system calls, bypassing libc and so the library's hooks), and liburing
//! users (io_uring operations reach no hook).

use std::path::Path;

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSymbol};

/// Why a program needs the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unseen {
    /// No `PT_INTERP`: the loader never runs, `LD_PRELOAD` is ignored.
    Static,
    /// A Go executable (`.go.buildinfo` section, or the
    /// `runtime.buildVersion` symbol in older or unusual builds).
    Go,
    /// Linked against liburing: its file operations would go through an
    /// io_uring that no hook sees. Under the supervisor `io_uring_setup`
    /// fails with ENOSYS (by default) and the program falls back to
    /// ordinary system calls.
    IoUring,
}

/// What the preload would miss in `path`, if it is a 64-bit ELF executable
/// of this machine. Anything else (scripts, 32-bit programs, unreadable
/// files) is `None`: the supervisor's filter is for this machine's ABI only.
pub fn unseen(path: &Path) -> Option<Unseen> {
    let data = std::fs::read(path).ok()?;
    unseen_in(&data)
}

pub fn unseen_in(data: &[u8]) -> Option<Unseen> {
    let elf = ElfFile64::<object::Endianness>::parse(data).ok()?;
    let native = match elf.architecture() {
        object::Architecture::X86_64 => cfg!(target_arch = "x86_64"),
        object::Architecture::Aarch64 => cfg!(target_arch = "aarch64"),
        _ => false,
    };
    if !native {
        return None;
    }
    let is_go = elf.section_by_name(".go.buildinfo").is_some()
        || elf
            .symbols()
            .any(|s| s.name_bytes() == Ok(b"runtime.buildVersion"));
    if is_go {
        return Some(Unseen::Go);
    }
    let uses_liburing = elf.dynamic_symbols().any(|s| {
        s.is_undefined()
            && s.name_bytes()
                .is_ok_and(|n| n.starts_with(b"io_uring_queue_init"))
    });
    if uses_liburing {
        return Some(Unseen::IoUring);
    }
    let endian = elf.endian();
    let has_interp = elf
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP);
    (!has_interp).then_some(Unseen::Static)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_programs_and_scripts_are_seen() {
        // The test binary itself is dynamically linked Rust.
        let me = std::env::current_exe().unwrap();
        assert_eq!(unseen(&me), None);
        assert_eq!(unseen_in(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(unseen_in(b""), None);
        assert_eq!(unseen(Path::new("/nonexistent/program")), None);
    }
}
