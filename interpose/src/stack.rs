//! Who made this call: a stack walk, symbolised through a lock-free cache.
//!
//! `_Unwind_Backtrace` (libgcc, which finds unwind tables through glibc's
//! lock-free `_dl_find_object` since glibc 2.35 / GCC 12) gives return
//! addresses. `dladdr` names them, but it scans the object's whole symbol
//! table each time, so each address is resolved once and kept in a fixed,
//! lock-free table whose names live in a static arena (never freed, so a
//! later `dlclose` cannot leave a dangling name behind).

use mpaudit_core::event::{Frame, MAX_FRAMES};
use mpaudit_core::objects::{classify_object, ObjectClass};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

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

/// A symbolised frame plus its class.
#[derive(Clone, Copy, Default)]
pub struct ClassifiedFrame {
    pub frame: Frame<'static>,
    pub class: u8,
}

/// The caller's stack without mpaudit's own frames, innermost first.
pub struct Stack {
    pub frames: [Frame<'static>; MAX_FRAMES],
    pub n: usize,
    pub component: Option<usize>,
}

/// Names and classifies the frames of `raw` and picks the component.
pub fn symbolise_stack(raw: &RawStack) -> Stack {
    let mut out = Stack {
        frames: [Frame::default(); MAX_FRAMES],
        n: 0,
        component: None,
    };
    let mut classes = [ObjectClass::User; MAX_FRAMES];
    for &ip in &raw.ips[..raw.n] {
        if out.n == MAX_FRAMES {
            break;
        }
        // A return address points after the call; look up the call itself.
        let f = symbolise(ip - 1);
        let class = ObjectClass::from_u8(f.class);
        if class == ObjectClass::Mpaudit {
            continue;
        }
        out.frames[out.n] = f.frame;
        classes[out.n] = class;
        out.n += 1;
    }
    out.component = mpaudit_core::objects::pick_component(&classes[..out.n], |c| *c);
    out
}

// ---- the symbol cache -------------------------------------------------------

const CACHE_SLOTS: usize = 4096;
const PROBES: usize = 8;
const CLAIMED: usize = 1;

struct Entry {
    key: AtomicUsize,
    /// object: arena offset (32) | length (16) | class (8)
    object: AtomicU64,
    /// symbol: arena offset (32) | length (16) | present (1)
    symbol: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    key: AtomicUsize::new(0),
    object: AtomicU64::new(0),
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

fn slot_of(ip: usize) -> usize {
    (ip.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % CACHE_SLOTS
}

fn symbolise(ip: usize) -> ClassifiedFrame {
    let start = slot_of(ip);
    for i in 0..PROBES {
        let e = &CACHE[(start + i) % CACHE_SLOTS];
        let key = e.key.load(Acquire);
        if key == ip {
            return decode(e);
        }
        if key == 0 {
            let f = lookup(ip);
            if e.key.compare_exchange(0, CLAIMED, Acquire, Relaxed).is_ok() {
                if let Some(packed) = pack(&f) {
                    e.object.store(packed.0, Relaxed);
                    e.symbol.store(packed.1, Relaxed);
                    e.key.store(ip, Release);
                }
                // On arena exhaustion the slot stays claimed and unused.
            }
            return f;
        }
    }
    lookup(ip)
}

fn decode(e: &Entry) -> ClassifiedFrame {
    let o = e.object.load(Relaxed);
    let s = e.symbol.load(Relaxed);
    let object = arena_get((o >> 32) as u32, (o >> 16) as u16);
    let symbol = (s & 1 != 0).then(|| arena_get((s >> 32) as u32, (s >> 16) as u16));
    ClassifiedFrame {
        frame: Frame { object, symbol },
        class: o as u8,
    }
}

fn pack(f: &ClassifiedFrame) -> Option<(u64, u64)> {
    let (oo, ol) = arena_store(f.frame.object)?;
    let sym = match f.frame.symbol {
        Some(s) => {
            let (so, sl) = arena_store(s)?;
            ((so as u64) << 32) | ((sl as u64) << 16) | 1
        }
        None => 0,
    };
    Some((
        ((oo as u64) << 32) | ((ol as u64) << 16) | f.class as u64,
        sym,
    ))
}

/// Uncached lookup. The names point into the loader's data, valid while the
/// object stays loaded, which covers the event being written now.
fn lookup(ip: usize) -> ClassifiedFrame {
    // SAFETY: dladdr only reads loader data; info is a valid out-pointer.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    let found = unsafe { libc::dladdr(ip as *const libc::c_void, &mut info) } != 0;
    if !found || info.dli_fname.is_null() {
        return ClassifiedFrame {
            frame: Frame {
                object: b"?",
                symbol: None,
            },
            class: ObjectClass::User as u8,
        };
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    let mut object: &'static [u8] = unsafe { crate::sys::c_bytes(info.dli_fname, 4096) };
    if info.dli_fbase as usize == crate::state::main_base() || object.first() != Some(&b'/') {
        // The main program's link map has no name; use /proc/self/exe.
        if info.dli_fbase as usize == crate::state::main_base() {
            object = crate::state::exe();
        }
    }
    let symbol = (!info.dli_sname.is_null())
        // SAFETY: a NUL-terminated string in the object's string table.
        .then(|| unsafe { crate::sys::c_bytes(info.dli_sname, 4096) });
    ClassifiedFrame {
        frame: Frame { object, symbol },
        class: classify_object(object) as u8,
    }
}
