//! Who made this call: a stack walk whose frames are recorded as
//! (object, vaddr), found without the loader lock.
//!
//! `_Unwind_Backtrace` (libgcc, which finds unwind tables through glibc's
//! lock-free `_dl_find_object` since glibc 2.35 / GCC 12) gives return
//! addresses. Each is mapped to its object with `_dl_find_object` too
//! (async-signal-safe and lock-free by its documentation), never with
//! `dladdr` or `dl_iterate_phdr`, which take the loader lock: a hook run by
//! a thread that a constructor inside `dlopen` started and joins, or by a
//! signal handler that interrupted `dlopen`, would wait for it forever. The
//! runner names the function later, from the object's file
//! (`runner/src/symbols.rs`). Only when the policy matches components by
//! symbol is a name looked up here, in the object's in-memory dynamic
//! symbol table.
//!
//! Each address is resolved once and kept in a fixed, lock-free table whose
//! names live in a static arena (never freed, so a later `dlclose` cannot
//! leave a dangling name behind).

use mpaudit_core::event::{Frame, MAX_FRAMES};
use mpaudit_core::objects::{classify_object, ObjectClass};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};

#[repr(C)]
struct UnwindContext {
    _private: [u8; 0],
}

extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut UnwindContext, *mut libc::c_void) -> libc::c_int,
        arg: *mut libc::c_void,
    ) -> libc::c_int;
    fn _Unwind_GetIP(ctx: *mut UnwindContext) -> usize;
}

const URC_NO_REASON: libc::c_int = 0;
const URC_END_OF_STACK: libc::c_int = 5;

/// The caller's return addresses, ours left out, innermost first.
pub struct RawStack {
    ips: [usize; MAX_FRAMES],
    n: usize,
}

extern "C" fn collect(ctx: *mut UnwindContext, arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the &mut RawStack passed to _Unwind_Backtrace below.
    let raw = unsafe { &mut *(arg as *mut RawStack) };
    // SAFETY: ctx is valid for the duration of the callback.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    if ip == 0 {
        return URC_END_OF_STACK;
    }
    // Our own frames go by load address, not by name: an installed copy
    // may be renamed (libmpaudit-1.2.so), and the name test alone blamed us.
    if crate::state::is_own_address(ip) {
        return URC_NO_REASON;
    }
    raw.ips[raw.n] = ip;
    raw.n += 1;
    // An event keeps MAX_FRAMES frames: walking further (job stacks are
    // often 40 deep) is wasted work.
    if raw.n == MAX_FRAMES {
        URC_END_OF_STACK
    } else {
        URC_NO_REASON
    }
}

/// Walks the caller's stack. Always inlined, and called straight from the
/// hook (`audit::file_access` is inlined too): the walk then starts in the
/// hook's own frame, and every frame of ours it passes costs ~2,000
/// instructions of DWARF interpretation in libgcc.
#[inline(always)]
pub fn capture_raw() -> RawStack {
    // The unwinder may touch errno; the program must not see it change.
    let _errno = crate::sys::ErrnoGuard::save();
    let mut raw = RawStack {
        ips: [0; MAX_FRAMES],
        n: 0,
    };
    // SAFETY: collect only writes into raw.
    unsafe { _Unwind_Backtrace(collect, &mut raw as *mut RawStack as *mut libc::c_void) };
    raw
}

/// The caller's stack without mpaudit's own frames, innermost first.
pub struct Stack {
    pub frames: [Frame<'static>; MAX_FRAMES],
    /// Per frame, the function's name in the arena (see [`Stack::symbol`]),
    /// looked up only when the policy matches components by symbol.
    symbols: [u64; MAX_FRAMES],
    pub n: usize,
    pub component: Option<usize>,
}

impl Stack {
    /// The (mangled) name of the dynamic symbol holding frame `i`'s code,
    /// when the policy asked for names ([`set_symbols_wanted`]) and the
    /// object exports one there.
    pub fn symbol(&self, i: usize) -> Option<&'static [u8]> {
        unpack_name(self.symbols[i])
    }
}

/// Maps the frames of `raw` to (object, vaddr), classifies them and picks
/// the component.
pub fn symbolise_stack(raw: &RawStack) -> Stack {
    let mut out = Stack {
        frames: [Frame::default(); MAX_FRAMES],
        symbols: [0; MAX_FRAMES],
        n: 0,
        component: None,
    };
    let mut classes = [ObjectClass::User; MAX_FRAMES];
    for &ip in &raw.ips[..raw.n] {
        if out.n == MAX_FRAMES {
            break;
        }
        // A return address points after the call; look up the call itself.
        let f = resolve(ip - 1);
        let class = ObjectClass::from_u8(f.class);
        if class == ObjectClass::Mpaudit {
            continue;
        }
        out.frames[out.n] = f.frame;
        out.symbols[out.n] = f.symbol;
        classes[out.n] = class;
        out.n += 1;
    }
    out.component = mpaudit_core::objects::pick_component(&classes[..out.n], |c| *c);
    out
}

// ---- finding the object: glibc's _dl_find_object ----------------------------

/// glibc's `struct dl_find_object` (`<dlfcn.h>`, 2.35+). glibc writes 96
/// bytes on x86-64 and aarch64 (more on a few other ports, which add
/// `dlfo_eh_dbase`/`dlfo_eh_count`): the reserved tail leaves room for all.
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: *mut libc::c_void,
    map_end: *mut libc::c_void,
    link_map: *const LinkMap,
    eh_frame: *mut libc::c_void,
    reserved: [u64; 12],
}

/// The public head of glibc's `struct link_map` (`<link.h>`).
#[repr(C)]
struct LinkMap {
    /// The load bias: run-time address minus the ELF file's vaddr.
    l_addr: usize,
    /// The object's path; empty for the main program.
    l_name: *const libc::c_char,
    /// The object's dynamic section, in memory.
    l_ld: *const Elf64Dyn,
}

#[repr(C)]
struct Elf64Dyn {
    d_tag: i64,
    d_val: u64,
}

#[repr(C)]
struct Elf64Sym {
    st_name: u32,
    st_info: u8,
    st_other: u8,
    st_shndx: u16,
    st_value: u64,
    st_size: u64,
}

type FindObject = unsafe extern "C" fn(*mut libc::c_void, *mut DlFindObject) -> libc::c_int;

/// `_dl_find_object`, resolved at load; 0 on glibc < 2.35, where frames
/// are recorded without an object (docs/hooks.md, "Known limits").
static FIND_OBJECT: AtomicUsize = AtomicUsize::new(0);
/// Whether the policy matches components by symbol, so hooks need names.
static SYMBOLS_WANTED: AtomicBool = AtomicBool::new(false);

/// Resolves `_dl_find_object` and notes whether the policy needs names
/// ([`Stack::symbol`]). At load, after `state::init` (dlsym takes the
/// loader lock).
pub fn init() {
    // SAFETY: a literal C string; RTLD_DEFAULT searches the global scope.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr()) };
    FIND_OBJECT.store(f as usize, Relaxed);
    let components = crate::state::SAVED.get().components.as_bytes();
    SYMBOLS_WANTED.store(!components.is_empty(), Relaxed);
}

/// The object holding `addr`, its load bias and its link map, lock-free.
fn find_object(addr: usize) -> Option<(&'static LinkMap, usize)> {
    let f = FIND_OBJECT.load(Relaxed);
    if f == 0 {
        return None;
    }
    // SAFETY: f is glibc's _dl_find_object, of this signature.
    let find: FindObject = unsafe { core::mem::transmute::<usize, FindObject>(f) };
    // SAFETY: all-zero is a valid DlFindObject (integers and pointers).
    let mut out: DlFindObject = unsafe { core::mem::zeroed() };
    // SAFETY: out is large enough for glibc's struct (see DlFindObject).
    if unsafe { find(addr as *mut libc::c_void, &mut out) } != 0 || out.link_map.is_null() {
        return None;
    }
    // SAFETY: the loader's link map of an object that holds `addr`, which
    // is on this thread's stack now: it stays loaded while we read it.
    let map = unsafe { &*out.link_map };
    Some((map, map.l_addr))
}

/// The name of the dynamic symbol whose code holds `vaddr` in `map`'s
/// object, scanning its in-memory `.dynsym` (no loader call, no lock).
fn dynamic_symbol(map: &LinkMap, vaddr: u64) -> Option<&'static [u8]> {
    const DT_NULL: i64 = 0;
    const DT_HASH: i64 = 4;
    const DT_STRTAB: i64 = 5;
    const DT_SYMTAB: i64 = 6;
    const DT_STRSZ: i64 = 10;
    const DT_GNU_HASH: i64 = 0x6fff_fef5;
    const STT_FUNC: u8 = 2;
    const STT_GNU_IFUNC: u8 = 10;
    if map.l_ld.is_null() {
        return None;
    }
    // glibc relocates these pointers in place, except in read-only dynamic
    // sections (the vDSO's): an unrelocated one lies below the bias.
    let bias = map.l_addr as u64;
    let fix = |p: u64| if p < bias { p + bias } else { p };
    let (mut symtab, mut strtab, mut strsz, mut hash, mut gnu_hash) = (0, 0, 0, 0, 0);
    for i in 0..1024 {
        // SAFETY: the dynamic section is an array ended by DT_NULL.
        let d = unsafe { &*map.l_ld.add(i) };
        match d.d_tag {
            DT_NULL => break,
            DT_SYMTAB => symtab = fix(d.d_val),
            DT_STRTAB => strtab = fix(d.d_val),
            DT_STRSZ => strsz = d.d_val,
            DT_HASH => hash = fix(d.d_val),
            DT_GNU_HASH => gnu_hash = fix(d.d_val),
            _ => {}
        }
    }
    if symtab == 0 || strtab == 0 {
        return None;
    }
    // SAFETY: the hash tables the loader itself uses for this object.
    let count = unsafe {
        if gnu_hash != 0 {
            gnu_hash_symbol_count(gnu_hash as *const u32)
        } else if hash != 0 {
            *(hash as *const u32).add(1) as usize
        } else {
            return None;
        }
    };
    let syms = symtab as *const Elf64Sym;
    for i in 0..count.min(1 << 20) {
        // SAFETY: i < the table's symbol count.
        let s = unsafe { &*syms.add(i) };
        let kind = s.st_info & 0xf;
        if s.st_shndx == 0 || s.st_size == 0 || !(kind == STT_FUNC || kind == STT_GNU_IFUNC) {
            continue;
        }
        if vaddr >= s.st_value && vaddr - s.st_value < s.st_size {
            if s.st_name as u64 >= strsz {
                return None;
            }
            // SAFETY: a NUL-terminated name inside the string table.
            let name = unsafe {
                crate::sys::c_bytes(
                    (strtab as *const libc::c_char).add(s.st_name as usize),
                    (strsz - s.st_name as u64) as usize,
                )
            };
            return Some(name);
        }
    }
    None
}

/// Symbols in a `DT_GNU_HASH` table: one past the highest index its
/// chains reach.
///
/// # Safety
/// `table` is a loaded object's `DT_GNU_HASH` section.
unsafe fn gnu_hash_symbol_count(table: *const u32) -> usize {
    // SAFETY: the header is 4 words, then bloom words (8 bytes each on
    // 64-bit), buckets and chains, as the ELF gABI extension lays out.
    unsafe {
        let nbuckets = *table as usize;
        let symoffset = *table.add(1) as usize;
        let bloom_size = *table.add(2) as usize;
        let buckets = table.add(4 + bloom_size * 2);
        let chains = buckets.add(nbuckets);
        let mut last = 0;
        for b in 0..nbuckets {
            last = last.max(*buckets.add(b) as usize);
        }
        if last < symoffset {
            return symoffset;
        }
        while *chains.add(last - symoffset) & 1 == 0 {
            last += 1;
        }
        last + 1
    }
}

// ---- the cache ----------------------------------------------------------------

const CACHE_SLOTS: usize = 4096;
const PROBES: usize = 8;
const CLAIMED: usize = 1;

/// A resolved address.
#[derive(Clone, Copy)]
struct Resolved {
    frame: Frame<'static>,
    class: u8,
    /// The policy's symbol name, packed as in [`pack_name`] (0: none).
    symbol: u64,
}

struct Entry {
    key: AtomicUsize,
    /// object: arena offset (32) | length (16) | present (1) | class (8)
    object: AtomicU64,
    vaddr: AtomicU64,
    /// symbol: packed as in [`pack_name`]
    symbol: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    key: AtomicUsize::new(0),
    object: AtomicU64::new(0),
    vaddr: AtomicU64::new(0),
    symbol: AtomicU64::new(0),
};
static CACHE: [Entry; CACHE_SLOTS] = [EMPTY; CACHE_SLOTS];

const ARENA_SIZE: usize = 1 << 20;
struct Arena(core::cell::UnsafeCell<[u8; ARENA_SIZE]>);
// SAFETY: each byte range is written once by the thread that reserved it,
// before the cache entry pointing at it is published with Release.
unsafe impl Sync for Arena {}
static ARENA: Arena = Arena(core::cell::UnsafeCell::new([0; ARENA_SIZE]));
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

fn arena_store(bytes: &[u8]) -> Option<(u32, u16)> {
    let len = bytes.len().min(u16::MAX as usize);
    let off = ARENA_USED.fetch_add(len, Relaxed);
    if off + len > ARENA_SIZE {
        return None;
    }
    // SAFETY: [off, off+len) was reserved by this thread alone.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), (ARENA.0.get() as *mut u8).add(off), len)
    };
    Some((off as u32, len as u16))
}

fn arena_get(off: u32, len: u16) -> &'static [u8] {
    // SAFETY: published ranges are immutable from then on.
    unsafe {
        core::slice::from_raw_parts((ARENA.0.get() as *const u8).add(off as usize), len as usize)
    }
}

/// arena offset (32) | length (16) | present (bit 8); the low byte is free
/// for the caller.
fn pack_name(name: &[u8]) -> Option<u64> {
    let (off, len) = arena_store(name)?;
    Some(((off as u64) << 32) | ((len as u64) << 16) | 0x100)
}

fn unpack_name(packed: u64) -> Option<&'static [u8]> {
    (packed & 0x100 != 0).then(|| arena_get((packed >> 32) as u32, (packed >> 16) as u16))
}

fn slot_of(ip: usize) -> usize {
    (ip.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % CACHE_SLOTS
}

fn resolve(ip: usize) -> Resolved {
    let start = slot_of(ip);
    for i in 0..PROBES {
        let e = &CACHE[(start + i) % CACHE_SLOTS];
        let key = e.key.load(Acquire);
        if key == ip {
            let o = e.object.load(Relaxed);
            return Resolved {
                frame: Frame {
                    object: unpack_name(o),
                    vaddr: e.vaddr.load(Relaxed),
                },
                class: o as u8,
                symbol: e.symbol.load(Relaxed),
            };
        }
        if key == 0 {
            let Some(r) = lookup(ip) else {
                return unknown();
            };
            if e.key.compare_exchange(0, CLAIMED, Acquire, Relaxed).is_ok() {
                e.object.store(r.packed_object, Relaxed);
                e.vaddr.store(r.resolved.frame.vaddr, Relaxed);
                e.symbol.store(r.resolved.symbol, Relaxed);
                e.key.store(ip, Release);
            }
            return r.resolved;
        }
    }
    match lookup(ip) {
        Some(r) => r.resolved,
        None => unknown(),
    }
}

/// A frame in no object we can find (glibc < 2.35, JIT code, or the arena
/// is full): recorded without object or address.
fn unknown() -> Resolved {
    Resolved {
        frame: Frame::default(),
        class: ObjectClass::User as u8,
        symbol: 0,
    }
}

struct Looked {
    resolved: Resolved,
    packed_object: u64,
}

/// Uncached lookup; the names it returns are copies in the arena, which
/// outlive a `dlclose` of their object.
fn lookup(ip: usize) -> Option<Looked> {
    let (map, bias) = find_object(ip)?;
    // l_name is NULL or a NUL-terminated string owned by the loader.
    let mut object = crate::sys::c_bytes_or_empty(map.l_name, 4096);
    if object.is_empty() {
        // The main program's link map has no name.
        object = crate::state::exe();
    }
    let class = classify_object(object) as u8;
    let packed_object = pack_name(object)? | class as u64;
    let vaddr = ip.wrapping_sub(bias) as u64;
    let symbol = if SYMBOLS_WANTED.load(Relaxed) {
        dynamic_symbol(map, vaddr).and_then(pack_name).unwrap_or(0)
    } else {
        0
    };
    Some(Looked {
        resolved: Resolved {
            frame: Frame {
                object: unpack_name(packed_object),
                vaddr,
            },
            class,
            symbol,
        },
        packed_object,
    })
}
