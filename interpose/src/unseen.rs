//! Exec targets the library cannot audit, beyond static and setuid ones
//! (process.rs): Go executables, which make their own system calls and so
//! never reach a hook even when the loader preloads us. Read with pread on
//! an open descriptor, no allocation (exec may run in a vfork child).

use crate::state::SAVED;
use crate::sys;
use libc::c_int;

/// Go's linker always emits this section (Go ≥ 1.13), stripped or not.
const GO_BUILDINFO: &[u8] = b".go.buildinfo\0";

/// A 64-bit little-endian ELF with a `.go.buildinfo` section.
pub fn is_go_elf(fd: c_int) -> bool {
    let mut hdr = [0u8; 64];
    if sys::pread(fd, &mut hdr, 0) < 64 || &hdr[..4] != b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        return false;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32_at =
        |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as u64;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(&hdr, 40),
        u16_at(&hdr, 58),
        u16_at(&hdr, 60),
        u16_at(&hdr, 62),
    );
    if shentsize < 64 || shstrndx >= shnum {
        return false;
    }
    let mut sh = [0u8; 64];
    if sys::pread(fd, &mut sh, shoff + shstrndx * shentsize) < 64 {
        return false;
    }
    let (strtab, strtab_size) = (u64_at(&sh, 24), u64_at(&sh, 32));
    let mut name = [0u8; GO_BUILDINFO.len()];
    for i in 0..shnum.min(512) {
        if sys::pread(fd, &mut sh, shoff + i * shentsize) < 64 {
            return false;
        }
        let off = u32_at(&sh, 0);
        if off + name.len() as u64 <= strtab_size
            && sys::pread(fd, &mut name, strtab + off) == name.len() as isize
            && name == GO_BUILDINFO
        {
            return true;
        }
    }
    false
}

/// Without the runner (no `MPAUDIT_WORKERS`, which it always sets) no
/// report will list an unaudited program: say so on stderr, one line.
pub fn warn_without_runner(exe: &[u8], reason: &str) {
    let entries = SAVED.get().env_entries.as_bytes();
    if entries
        .split(|&b| b == 0)
        .any(|e| e.starts_with(b"MPAUDIT_WORKERS="))
    {
        return;
    }
    let mut buf = [0u8; 512];
    let mut s = mpaudit_core::json::SliceSink::new(&mut buf);
    use mpaudit_core::json::Sink;
    s.put(b"mpaudit: not audited (");
    s.put(reason.as_bytes());
    s.put(b"): ");
    s.put(&exe[..exe.len().min(400)]);
    s.put(b"\n");
    sys::write_all(2, s.as_bytes());
}
