//! Zeroed memory ahead of need (Xen's page scrubbing).
//!
//! Guest RAM must be zero when a domain gets it: whatever the frames held before (a
//! destroyed domain's data, firmware leftovers) must not reach the next owner. Zeroing
//! at creation put the whole cost on the path from `create` to the guest's first
//! instruction: 16 MiB is about two million stores, 2.2 million Bochs ticks of the
//! 2.3 million that path took, and a millisecond or two on hardware.
//!
//! So free memory is zeroed before it is asked for, in 2 MiB chunks (the unit guest RAM
//! is mapped in) kept in a pool:
//! - at boot, up to [`BOOT_FILL`] synchronously (bounded boot time);
//! - afterwards by idle CPUs, [`STEP`] bytes at a time, and only when the CPU has
//!   nothing due for a while, so a waking vCPU never waits behind a whole chunk;
//! - a domain's RAM takes chunks from the pool ([`take_chunk`]) and zeroes only what
//!   the pool cannot cover.
//!
//! The pool is free memory: it counts as free, and when the frame allocator runs dry
//! it gives chunks back ([`reclaim_one`]) before any allocation fails. Freed guest RAM
//! goes back to the allocator unzeroed; idle CPUs zero it again.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Mutex;

/// The unit: one 2 MiB page of guest RAM.
pub const CHUNK: u64 = 2 << 20;
/// What boot zeroes before the first domain starts.
pub const BOOT_FILL: u64 = 64 << 20;
/// What one idle pass zeroes: about 8,000 stores, a few microseconds on hardware.
pub const STEP: u64 = 64 << 10;
/// Memory left to the allocator, never pooled: page tables, VMCSs, stacks.
const RESERVE: u64 = 8 << 20;

struct Pool {
    /// Zeroed chunks, by host-physical address.
    ready: Vec<u64>,
    /// The chunk being zeroed, and how many bytes of it are done.
    partial: Option<(u64, u64)>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { ready: Vec::new(), partial: None });
/// Bytes in the pool (ready and partial), readable without the lock.
static POOLED: AtomicU64 = AtomicU64::new(0);
/// One CPU zeroes at a time: there is one partial chunk.
static SCRUBBING: AtomicBool = AtomicBool::new(false);
/// Set when a chunk could not be had (memory used or too fragmented): idle CPUs stop
/// trying until memory is freed.
static EXHAUSTED: AtomicBool = AtomicBool::new(false);

/// Zeroes `len` bytes of host-physical memory at `hpa`.
fn zero(hpa: u64, len: u64) {
    // SAFETY: the range is a chunk this module took from the frame allocator and owns;
    // nobody else maps or uses it until `take_chunk` hands it out.
    unsafe { core::ptr::write_bytes(super::paging::phys_to_virt(hpa) as *mut u8, 0, len as usize) };
}

/// Bytes the pool holds (free memory, zeroed or being zeroed).
pub fn pooled_bytes() -> u64 {
    POOLED.load(Ordering::Relaxed)
}

/// Whether idle CPUs have zeroing to do.
pub fn wanted() -> bool {
    !EXHAUSTED.load(Ordering::Relaxed)
}

/// A zeroed 2 MiB chunk, 2 MiB aligned, now the caller's; None when the pool is empty.
pub fn take_chunk() -> Option<u64> {
    let chunk = POOL.lock().ready.pop()?;
    POOLED.fetch_sub(CHUNK, Ordering::Relaxed);
    Some(chunk)
}

/// Freed memory: worth zeroing again.
pub fn memory_freed() {
    EXHAUSTED.store(false, Ordering::Relaxed);
}

/// Zeroes up to `budget` bytes of free memory into the pool; returns the bytes zeroed
/// (0 when there is nothing left to do).
pub fn scrub(budget: u64) -> u64 {
    if SCRUBBING.swap(true, Ordering::Acquire) {
        return 0;
    }
    let done = scrub_locked(budget);
    SCRUBBING.store(false, Ordering::Release);
    done
}

fn scrub_locked(budget: u64) -> u64 {
    let mut done = 0;
    while done < budget {
        // Continue the partial chunk, or start one (the allocator's lock is not held
        // while zeroing, nor the pool's: other CPUs take ready chunks meanwhile).
        let partial = POOL.lock().partial.take();
        let (hpa, progress) = match partial {
            Some(p) => p,
            None => {
                if super::phys::free_bytes_unpooled() < RESERVE + CHUNK {
                    EXHAUSTED.store(true, Ordering::Relaxed);
                    break;
                }
                let Some(hpa) = super::phys::allocate_contiguous_unpooled(CHUNK / 4096, CHUNK) else {
                    EXHAUSTED.store(true, Ordering::Relaxed);
                    break;
                };
                POOLED.fetch_add(CHUNK, Ordering::Relaxed);
                (hpa, 0)
            }
        };
        let n = (CHUNK - progress).min(budget - done);
        zero(hpa + progress, n);
        done += n;
        let mut pool = POOL.lock();
        if progress + n == CHUNK {
            pool.ready.push(hpa);
        } else {
            pool.partial = Some((hpa, progress + n));
        }
    }
    done
}

/// Gives one chunk back to the frame allocator (it ran dry); false when the pool is
/// empty. The partial chunk goes first: it is the least useful.
pub fn reclaim_one() -> bool {
    let chunk = {
        let mut pool = POOL.lock();
        match pool.partial.take() {
            Some((hpa, _)) => Some(hpa),
            None => pool.ready.pop(),
        }
    };
    let Some(hpa) = chunk else { return false };
    POOLED.fetch_sub(CHUNK, Ordering::Relaxed);
    for frame in (hpa..hpa + CHUNK).step_by(4096) {
        super::phys::deallocate_unpooled(frame);
    }
    true
}
