//! The hooks' working memory: a static pool of large blocks, claimed per
//! hook call, instead of thread-local buffers or stack arrays.
//!
//! Why a pool: thread-local buffers cost every thread of the program their
//! size, used or not (45 KiB of TLS made `pthread_create` with a 16 or
//! 32 KiB stack fail with EINVAL), and stack arrays overflow a signal
//! handler's small alternate stack. A block is claimed with one
//! compare-and-swap (slot `tid % BLOCKS` first, so a thread usually finds
//! the block it had last time, cwd copy included); when every block is
//! busy a temporary one is mapped with `mmap` and unmapped after the call
//! (both async-signal-safe; never malloc). A hook that gets no block at all
//! (the mapping failed) passes the call straight to libc, unlogged; such
//! calls are counted ([`passed_through`]) and reported once on stderr.
//!
//! The small staging buffers of the log (log.rs) come from a second pool
//! with no fallback: without one, the log encodes the event twice instead.

use crate::state::Global;
use mpaudit_core::path::MAX_ABS;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::*};

/// Blocks in the static pool: more hook calls than this at the same
/// instant get a temporary mapping.
const BLOCKS: usize = 64;

/// Room for the helpers a hook calls one after the other (preparing a
/// redirect target, writing a manifest line, the rogue warning): the
/// largest needs two paths and a manifest line at once.
pub const WORK_SIZE: usize = 4 * MAX_ABS + 4096;

/// Everything one hook call needs beyond a few hundred bytes of stack.
pub struct Block {
    /// A directory descriptor's path, for `*at` calls.
    pub base: [u8; 4096],
    pub abs: [u8; MAX_ABS],
    pub abs2: [u8; MAX_ABS],
    pub target: [u8; MAX_ABS + 1],
    pub target2: [u8; MAX_ABS + 1],
    pub work: [u8; WORK_SIZE],
    pub cwd: CwdCopy,
    /// The write's symbolised stack (stack.rs), off the hook's own stack.
    pub stack: crate::stack::Stack,
}

/// A copy of the working directory (the same for every thread of the
/// process), tagged with the generation it was read under (guard.rs).
pub struct CwdCopy {
    /// 0: never read (generations start at 1).
    pub generation: u64,
    /// False when the kernel gave no usable path (too long, unreachable).
    pub valid: bool,
    /// True when `bytes` is the job path a worker-directory cwd stands for
    /// (guard::as_job_path): the kernel resolves relative names elsewhere.
    pub stands_for_job: bool,
    pub len: usize,
    pub bytes: [u8; 4096],
}

// All-zero initialisers: the pool lives in .bss and costs address space,
// not file size; a page is touched only when a block is first used.
#[allow(clippy::large_const_arrays, clippy::declare_interior_mutable_const)]
const EMPTY_BLOCK: Block = Block {
    base: [0; 4096],
    abs: [0; MAX_ABS],
    abs2: [0; MAX_ABS],
    target: [0; MAX_ABS + 1],
    target2: [0; MAX_ABS + 1],
    work: [0; WORK_SIZE],
    cwd: CwdCopy {
        generation: 0,
        stands_for_job: false,
        valid: false,
        len: 0,
        bytes: [0; 4096],
    },
    stack: crate::stack::Stack::EMPTY,
};

/// Owner of each block: 0 when free, else the tid of the claiming thread
/// (so that a forked child can free the blocks of threads it does not have).
static OWNER: [AtomicI32; BLOCKS] = [const { AtomicI32::new(0) }; BLOCKS];
static POOL: Global<[Block; BLOCKS]> = Global::new([EMPTY_BLOCK; BLOCKS]);

static PASSED_THROUGH: AtomicU64 = AtomicU64::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

/// A claimed block, given back on drop.
pub struct Claimed {
    block: *mut Block,
    /// Index in the pool, or `usize::MAX` for a temporary mapping.
    slot: usize,
}

impl Claimed {
    pub fn block(&mut self) -> &mut Block {
        // SAFETY: the block is this claim's alone until it is dropped.
        unsafe { &mut *self.block }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if self.slot == usize::MAX {
            // SAFETY: our own temporary mapping, no longer referenced.
            unsafe { libc::munmap(self.block.cast(), core::mem::size_of::<Block>()) };
        } else {
            OWNER[self.slot].store(0, Release);
        }
    }
}

/// A block for the calling hook, or `None` (counted) when neither the pool
/// nor a fresh mapping can give one.
pub fn claim() -> Option<Claimed> {
    let tid = crate::guard::tid().max(1);
    let first = tid as usize % BLOCKS;
    for i in 0..BLOCKS {
        let slot = (first + i) % BLOCKS;
        if OWNER[slot].load(Relaxed) == 0
            && OWNER[slot]
                .compare_exchange(0, tid, Acquire, Relaxed)
                .is_ok()
        {
            // SAFETY: slot < BLOCKS; the CAS made that block ours.
            let block = unsafe { (POOL.as_ptr() as *mut Block).add(slot) };
            return Some(Claimed { block, slot });
        }
    }
    claim_temporary()
}

/// Every pool block is busy: a temporary one. Cold and out of line, so the
/// hooks' fast path (and the unwind rows the stack walk interprets) stay
/// short.
#[cold]
#[inline(never)]
fn claim_temporary() -> Option<Claimed> {
    // SAFETY: a fresh anonymous mapping (zeroed: its cwd copy is stale).
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            core::mem::size_of::<Block>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        PASSED_THROUGH.fetch_add(1, Relaxed);
        if !WARNED.swap(true, Relaxed) {
            crate::sys::write_all(
                2,
                b"mpaudit: no memory for a hook's buffers; such calls pass through unlogged (writes a redirect or deny acts on fail)\n",
            );
        }
        return None;
    }
    Some(Claimed {
        block: p.cast(),
        slot: usize::MAX,
    })
}

/// Calls that went to libc unaudited for want of a block (this process
/// image's own: a forked child starts from 0). The exit event counts them
/// among its `dropped` events, so the run says the audit is incomplete.
/// A call that could not be audited and was failed rather than passed
/// through (audit.rs: a nested hook's write): counted with them.
pub fn count_unaudited() {
    PASSED_THROUGH.fetch_add(1, Relaxed);
}

pub fn passed_through() -> u64 {
    PASSED_THROUGH.load(Relaxed)
}

// ---- the log's staging buffers -------------------------------------------------

/// Events up to this size (every read and most writes) are encoded once.
pub const STAGE_SIZE: usize = 4096;
const STAGES: usize = 64;

static STAGE_OWNER: [AtomicI32; STAGES] = [const { AtomicI32::new(0) }; STAGES];
static STAGE: Global<[[u8; STAGE_SIZE]; STAGES]> = Global::new([[0; STAGE_SIZE]; STAGES]);

/// A claimed staging buffer, given back on drop.
pub struct Stage {
    slot: usize,
}

impl Stage {
    pub fn buf(&mut self) -> &mut [u8; STAGE_SIZE] {
        // SAFETY: slot < STAGES, and the CAS in claim_stage made this
        // buffer ours until the drop.
        unsafe { &mut *(STAGE.as_ptr() as *mut [u8; STAGE_SIZE]).add(self.slot) }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        STAGE_OWNER[self.slot].store(0, Release);
    }
}

/// A staging buffer, or `None` when all are in use.
pub fn claim_stage() -> Option<Stage> {
    let tid = crate::guard::tid().max(1);
    let first = tid as usize % STAGES;
    (0..STAGES)
        .map(|i| (first + i) % STAGES)
        .find(|&slot| {
            STAGE_OWNER[slot].load(Relaxed) == 0
                && STAGE_OWNER[slot]
                    .compare_exchange(0, tid, Acquire, Relaxed)
                    .is_ok()
        })
        .map(|slot| Stage { slot })
}

/// In a freshly forked child (single-threaded): blocks held by threads that
/// did not come along are free again. The forking thread (`tid` as the
/// parent knew it) may still be inside a hook that holds one.
pub fn after_fork_child(forking_tid: i32) {
    PASSED_THROUGH.store(0, Relaxed);
    for owner in OWNER.iter().chain(STAGE_OWNER.iter()) {
        if owner.load(Relaxed) != forking_tid {
            owner.store(0, Relaxed);
        }
    }
}
