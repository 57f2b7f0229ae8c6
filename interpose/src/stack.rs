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
//! Each address is resolved once and kept in fixed, lock-free tables (see
//! "the cache" below). Once the program registers unwind tables of its own
//! the walk is not run at all ([`FRAMES_REGISTERED`]).

use mpaudit_core::event::{Frame, MAX_FRAMES};
use mpaudit_core::objects::{classify_object, ObjectClass};
use mpaudit_core::path::absolutize;
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
    fn _Unwind_GetIPInfo(ctx: *mut UnwindContext, ip_before_insn: *mut libc::c_int) -> usize;
}

const URC_NO_REASON: libc::c_int = 0;
const URC_END_OF_STACK: libc::c_int = 5;

/// The caller's call sites, ours left out, innermost first: each return
/// address minus one (the call instruction), or, for a frame a signal
/// interrupted, the interrupted instruction itself.
pub struct RawStack {
    sites: [usize; MAX_FRAMES],
    n: usize,
    /// Only part of the stack could be walked (see [`Stack::truncated`]).
    truncated: bool,
}

extern "C" fn collect(ctx: *mut UnwindContext, arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the &mut RawStack passed to _Unwind_Backtrace below.
    let raw = unsafe { &mut *(arg as *mut RawStack) };
    let mut before_insn: libc::c_int = 0;
    // SAFETY: ctx is valid for the duration of the callback.
    let ip = unsafe { _Unwind_GetIPInfo(ctx, &mut before_insn) };
    if ip == 0 {
        return URC_END_OF_STACK;
    }
    // Our own frames go by load address, not by name: an installed copy
    // may be renamed (libmpaudit-1.2.so), and the name test alone blamed us.
    if crate::state::is_own_address(ip) {
        return URC_NO_REASON;
    }
    // A return address points after the call; a signal frame's IP is the
    // interrupted instruction, which may be a function's first.
    raw.sites[raw.n] = if before_insn != 0 { ip } else { ip - 1 };
    raw.n += 1;
    // An event keeps MAX_FRAMES frames: walking further (job stacks are
    // often 40 deep) is wasted work.
    if raw.n == MAX_FRAMES {
        URC_END_OF_STACK
    } else {
        URC_NO_REASON
    }
}

/// Set once the program registered unwind tables of its own
/// (`__register_frame*`, as JITs do: ROOT's cling, LLVM ORC). From then on
/// libgcc's `_Unwind_Find_FDE` takes a mutex at every unwind step, which a
/// hook run by a signal handler, or in a child forked while another thread
/// unwound, would wait on forever: the hooks no longer walk the stack.
static FRAMES_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Called by the `__register_frame*` hooks.
pub fn note_frames_registered() {
    FRAMES_REGISTERED.store(true, Relaxed);
}

/// Whether hooks record only their immediate caller (see
/// [`FRAMES_REGISTERED`]).
pub fn frames_registered() -> bool {
    FRAMES_REGISTERED.load(Relaxed)
}

/// Walks the caller's stack; `caller` is the hook's return address, all
/// that is recorded once unwind tables are registered. Always inlined,
/// and called straight from the hook (`audit::file_access` is inlined too):
/// the walk then starts in the hook's own frame, and every frame of ours it
/// passes costs ~2,000 instructions of DWARF interpretation in libgcc.
#[inline(always)]
pub fn capture_raw(caller: usize) -> RawStack {
    let mut raw = RawStack {
        sites: [0; MAX_FRAMES],
        n: 0,
        truncated: false,
    };
    if frames_registered() {
        if caller != 0 && !crate::state::is_own_address(caller) {
            raw.sites[0] = caller - 1;
            raw.n = 1;
        }
        raw.truncated = true;
        return raw;
    }
    // The unwinder may touch errno; the program must not see it change.
    let _errno = crate::sys::ErrnoGuard::save();
    // SAFETY: collect only writes into raw.
    unsafe { _Unwind_Backtrace(collect, &mut raw as *mut RawStack as *mut libc::c_void) };
    raw
}

/// The caller's stack without mpaudit's own frames, innermost first.
pub struct Stack {
    pub frames: [Frame<'static>; MAX_FRAMES],
    /// Per frame, the function's name (see [`Stack::symbol`]), looked up
    /// only when the policy matches components by symbol.
    /// Each as address << 16 | length (0: none), half the size of a slice
    /// on a hook's small stack (user addresses fit in 48 bits).
    symbols: [u64; MAX_FRAMES],
    pub n: usize,
    pub component: Option<usize>,
    /// Frames further out may exist but were not seen: the walk was not
    /// run (unwind tables registered: only the immediate caller is known),
    /// or it ended at a frame in no known object (JIT code), whose caller
    /// the unwinder cannot find. docs/policy.md says what this changes.
    pub truncated: bool,
}

impl Stack {
    /// The (mangled) name of the dynamic symbol holding frame `i`'s code,
    /// when the policy asked for names ([`set_symbols_wanted`]) and the
    /// object exports one there.
    pub fn symbol(&self, i: usize) -> Option<&'static [u8]> {
        let packed = self.symbols[i];
        // SAFETY: packed by symbolise_stack from a name in the arena or in
        // a loaded object's string table, valid for the hook.
        (packed != 0).then(|| unsafe {
            core::slice::from_raw_parts((packed >> 16) as *const u8, (packed & 0xffff) as usize)
        })
    }
}

/// Room to make an object's relative name absolute: the hook's cwd copy
/// and a pool buffer free while the stack is symbolised.
pub struct NameScratch<'a> {
    pub cwd: &'a mut crate::pool::CwdCopy,
    pub abs: &'a mut [u8],
}

impl Stack {
    /// No frames (the pool block's initial state).
    pub const EMPTY: Stack = Stack {
        frames: [Frame {
            object: None,
            vaddr: 0,
        }; MAX_FRAMES],
        symbols: [0; MAX_FRAMES],
        n: 0,
        component: None,
        truncated: false,
    };
}

/// Maps the frames of `raw` to (object, vaddr), classifies them and picks
/// the component.
///
/// Fills `out` in place (it lives in the hook's pool block, pool.rs): a
/// stack returned by value would sit in the hook's frames, on what may be a
/// signal handler's small alternate stack.
pub fn symbolise_stack<'a>(
    raw: &RawStack,
    scratch: &mut NameScratch,
    out: &'a mut Stack,
) -> &'a Stack {
    out.n = 0;
    out.component = None;
    out.truncated = raw.truncated;
    let mut classes = [ObjectClass::User; MAX_FRAMES];
    for &site in &raw.sites[..raw.n] {
        if out.n == MAX_FRAMES {
            break;
        }
        let f = resolve(site, scratch);
        let class = ObjectClass::from_u8(f.class);
        if class == ObjectClass::Mpaudit {
            continue;
        }
        out.frames[out.n] = f.frame;
        out.symbols[out.n] = f.symbol.map_or(0, |s| {
            let addr = s.as_ptr() as u64;
            if addr >> 48 == 0 && s.len() <= 0xffff {
                (addr << 16) | s.len() as u64
            } else {
                0
            }
        });
        classes[out.n] = class;
        out.n += 1;
    }
    // The unwinder stops at a frame it has no tables for; a stack that
    // ends in no object before MAX_FRAMES was cut there.
    if out.n > 0 && out.n < MAX_FRAMES && out.frames[out.n - 1].object.is_none() {
        out.truncated = true;
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

/// The object holding `addr`: its link map, map start and load bias,
/// lock-free.
fn find_object(addr: usize) -> Option<(&'static LinkMap, usize, usize)> {
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
    Some((map, out.map_start as usize, map.l_addr))
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
//
// Two fixed, lock-free tables: objects (each name copied once into a
// static arena, never freed, so a `dlclose` cannot leave a dangling name
// behind) and call sites (object, vaddr, symbol). Entries carry the
// generation they were made in; `dlclose` moves the generation on, so an
// entry made before it is never used again (another object may now sit at
// the same address). When a table or the arena is full, the lookup is
// simply not cached: the frame still gets its object's name, read from the
// loader's link map, valid while the object is loaded, which it is while
// its code is on this thread's stack.

const CACHE_SLOTS: usize = 4096;
const OBJECT_SLOTS: usize = 1024;
const PROBES: usize = 8;
const CLAIMED: usize = 1;

/// Bumped around every `dlclose` (see [`dlclose_hook`]).
static GENERATION: AtomicU64 = AtomicU64::new(1);
/// Frames in no object `_dl_find_object` knows (JIT code, glibc < 2.35),
/// recorded without object or address; the exit event reports the count.
static UNRESOLVED_FRAMES: AtomicU64 = AtomicU64::new(0);

/// How many frames so far were recorded without an object.
pub fn unresolved_frames() -> u64 {
    UNRESOLVED_FRAMES.load(Relaxed)
}

/// A resolved call site.
#[derive(Clone, Copy)]
struct Resolved {
    frame: Frame<'static>,
    class: u8,
    symbol: Option<&'static [u8]>,
}

struct ObjectEntry {
    /// The object's map start; 0 free, CLAIMED while being written.
    key: AtomicUsize,
    generation: AtomicU64,
    /// name: arena offset (32) | length (16) | class (8)
    name: AtomicU64,
}

struct SiteEntry {
    key: AtomicUsize,
    generation: AtomicU64,
    /// Index into OBJECTS.
    object: AtomicUsize,
    vaddr: AtomicU64,
    /// symbol: arena offset (32) | length (16) | present (1)
    symbol: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_OBJECT: ObjectEntry = ObjectEntry {
    key: AtomicUsize::new(0),
    generation: AtomicU64::new(0),
    name: AtomicU64::new(0),
};
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SITE: SiteEntry = SiteEntry {
    key: AtomicUsize::new(0),
    generation: AtomicU64::new(0),
    object: AtomicUsize::new(0),
    vaddr: AtomicU64::new(0),
    symbol: AtomicU64::new(0),
};
static OBJECTS: [ObjectEntry; OBJECT_SLOTS] = [EMPTY_OBJECT; OBJECT_SLOTS];
static SITES: [SiteEntry; CACHE_SLOTS] = [EMPTY_SITE; CACHE_SLOTS];

const ARENA_SIZE: usize = 1 << 20;
struct Arena(core::cell::UnsafeCell<[u8; ARENA_SIZE]>);
// SAFETY: each byte range is written once by the thread that reserved it,
// before the cache entry pointing at it is published with Release.
unsafe impl Sync for Arena {}
static ARENA: Arena = Arena(core::cell::UnsafeCell::new([0; ARENA_SIZE]));
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

/// Copies `bytes` into the arena: offset (32) | length (16) | present
/// (bit 8), the low byte free for the caller; `None` when it is full (or
/// the name too long to pack).
fn pack_name(bytes: &[u8]) -> Option<u64> {
    let len = bytes.len();
    if len > u16::MAX as usize || ARENA_USED.load(Relaxed) + len > ARENA_SIZE {
        return None;
    }
    let off = ARENA_USED.fetch_add(len, Relaxed);
    if off + len > ARENA_SIZE {
        return None;
    }
    // SAFETY: [off, off+len) was reserved by this thread alone.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), (ARENA.0.get() as *mut u8).add(off), len)
    };
    Some(((off as u64) << 32) | ((len as u64) << 16) | 0x100)
}

fn unpack_name(packed: u64) -> Option<&'static [u8]> {
    (packed & 0x100 != 0).then(|| {
        let (off, len) = ((packed >> 32) as usize, (packed >> 16) as u16 as usize);
        // SAFETY: published ranges are immutable from then on.
        unsafe { core::slice::from_raw_parts((ARENA.0.get() as *const u8).add(off), len) }
    })
}

fn slot_of(key: usize, slots: usize) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % slots
}

/// Marks every cached call site and object stale: called before and after
/// the real `dlclose` (before: a lookup racing the close then caches at
/// most an entry that the second bump invalidates).
pub fn objects_unloading() {
    GENERATION.fetch_add(1, AcqRel);
}

fn resolve(site: usize, scratch: &mut NameScratch) -> Resolved {
    let generation = GENERATION.load(Acquire);
    let start = slot_of(site, CACHE_SLOTS);
    for i in 0..PROBES {
        let e = &SITES[(start + i) % CACHE_SLOTS];
        let key = e.key.load(Acquire);
        if key == site && e.generation.load(Relaxed) == generation {
            let o = &OBJECTS[e.object.load(Relaxed)];
            let name = o.name.load(Relaxed);
            return Resolved {
                frame: Frame {
                    object: unpack_name(name),
                    vaddr: e.vaddr.load(Relaxed),
                },
                class: name as u8,
                symbol: unpack_name(e.symbol.load(Relaxed)),
            };
        }
        if key == 0 {
            let Some(r) = lookup(site, generation, scratch) else {
                return unknown();
            };
            if let Some((object, symbol)) = r.cacheable {
                if e.key.compare_exchange(0, CLAIMED, Acquire, Relaxed).is_ok() {
                    e.generation.store(generation, Relaxed);
                    e.object.store(object, Relaxed);
                    e.vaddr.store(r.resolved.frame.vaddr, Relaxed);
                    e.symbol.store(symbol, Relaxed);
                    e.key.store(site, Release);
                }
            }
            return r.resolved;
        }
    }
    match lookup(site, generation, scratch) {
        Some(r) => r.resolved,
        None => unknown(),
    }
}

/// A frame in no object we can find (glibc < 2.35, JIT code): recorded
/// without object or address, and counted.
fn unknown() -> Resolved {
    UNRESOLVED_FRAMES.fetch_add(1, Relaxed);
    Resolved {
        frame: Frame::default(),
        class: ObjectClass::User as u8,
        symbol: None,
    }
}

struct Looked {
    resolved: Resolved,
    /// (OBJECTS index, packed symbol) when both are in the tables.
    cacheable: Option<(usize, u64)>,
}

/// Uncached lookup.
fn lookup(site: usize, generation: u64, scratch: &mut NameScratch) -> Option<Looked> {
    let (map, map_start, bias) = find_object(site)?;
    let vaddr = site.wrapping_sub(bias) as u64;
    let symbol = if SYMBOLS_WANTED.load(Relaxed) {
        dynamic_symbol(map, vaddr)
    } else {
        None
    };
    let packed_symbol = match symbol {
        None => Some(0),
        Some(s) => pack_name(s),
    };
    let (object, class, index) = match object_entry(map, map_start, generation, scratch) {
        Some((index, name)) => (unpack_name(name), name as u8, Some(index)),
        None => {
            // Tables full: the loader's name, valid while the object is.
            let name = object_name(map);
            (Some(name), classify_object(name) as u8, None)
        }
    };
    Some(Looked {
        resolved: Resolved {
            frame: Frame { object, vaddr },
            class,
            symbol,
        },
        cacheable: index.zip(packed_symbol),
    })
}

/// The object's name as the loader knows it (the main program's link map
/// has none: its path is found at load, `state::main_program`).
fn object_name(map: &LinkMap) -> &'static [u8] {
    // l_name is NULL or a NUL-terminated string owned by the loader.
    let name = crate::sys::c_bytes_or_empty(map.l_name, 4096);
    if name.is_empty() {
        crate::state::main_program()
    } else {
        name
    }
}

/// The object's entry (index, packed name | class), made on first sight,
/// with a relative name (`dlopen("./x.so")`, a relative `LD_LIBRARY_PATH`
/// entry) made absolute against the cwd of that moment. The loader opened
/// it against the cwd of its load, which is not observed: a `dlopen` hook
/// would make glibc search our RPATH/RUNPATH instead of the caller's.
fn object_entry(
    map: &LinkMap,
    map_start: usize,
    generation: u64,
    scratch: &mut NameScratch,
) -> Option<(usize, u64)> {
    let start = slot_of(map_start, OBJECT_SLOTS);
    for i in 0..PROBES {
        let index = (start + i) % OBJECT_SLOTS;
        let e = &OBJECTS[index];
        let key = e.key.load(Acquire);
        if key == map_start && e.generation.load(Relaxed) == generation {
            return Some((index, e.name.load(Relaxed)));
        }
        if key == 0 {
            let mut name = object_name(map);
            if name.first() != Some(&b'/') {
                let cwd = crate::guard::cwd(scratch.cwd);
                if let Some(n) = absolutize(name, cwd, scratch.abs) {
                    name = &scratch.abs[..n];
                }
            }
            let packed = pack_name(name)? | classify_object(name) as u64;
            if e.key
                .compare_exchange(0, CLAIMED, Acquire, Relaxed)
                .is_err()
            {
                return None;
            }
            e.generation.store(generation, Relaxed);
            e.name.store(packed, Relaxed);
            e.key.store(map_start, Release);
            return Some((index, packed));
        }
    }
    None
}
