//! The kernel's one physical frame allocator: the pure [`FrameAllocator`] behind a
//! lock, initialised once from the bootloader's memory map.

use super::frames::{FrameAllocator, MemoryRegion, Range};
use spin::Mutex;

static FRAMES: Mutex<Option<FrameAllocator>> = Mutex::new(None);

/// Builds the allocator. `reserved` lists what must never be handed out even where the
/// map says "usable": the kernel image, the boot bundle, the AP trampoline.
pub fn init(regions: impl IntoIterator<Item = MemoryRegion>, reserved: &[Range]) -> FrameSummary {
    let allocator = FrameAllocator::new(regions, reserved);
    let summary =
        FrameSummary { free_bytes: allocator.free_frames() * 4096, dropped_ranges: allocator.dropped_ranges() };
    *FRAMES.lock() = Some(allocator);
    TOTAL_BYTES.store(summary.free_bytes, core::sync::atomic::Ordering::Relaxed);
    summary
}

/// The machine's RAM as its memory map describes it (start, end), usable or not: where
/// Domain0's device BARs must never be mapped (`pci_bars::dom0_may_map`). A fixed table,
/// filled before the heap exists; a map with more RAM ranges than fit keeps the last
/// range open to the end of the address space, so nothing is left out.
struct MachineRam {
    ranges: [(u64, u64); 64],
    len: usize,
}

static MACHINE_RAM: Mutex<MachineRam> = Mutex::new(MachineRam { ranges: [(0, 0); 64], len: 0 });

/// Records the RAM ranges of the boot memory map (boot, once).
pub fn record_machine_ram(ranges: impl IntoIterator<Item = (u64, u64)>) {
    let mut ram = MACHINE_RAM.lock();
    for (start, end) in ranges {
        let len = ram.len;
        if len < ram.ranges.len() {
            ram.ranges[len] = (start, end);
            ram.len += 1;
        } else if let Some(last) = ram.ranges.last_mut() {
            *last = (last.0.min(start), u64::MAX);
        }
    }
}

/// The recorded RAM ranges.
pub fn machine_ram() -> alloc::vec::Vec<(u64, u64)> {
    let ram = MACHINE_RAM.lock();
    ram.ranges[..ram.len].to_vec()
}

/// What the allocator managed at boot: the memory the hypervisor can give out.
static TOTAL_BYTES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

pub fn total_bytes() -> u64 {
    TOTAL_BYTES.load(core::sync::atomic::Ordering::Relaxed)
}

pub struct FrameSummary {
    pub free_bytes: u64,
    pub dropped_ranges: usize,
}

fn with<T>(f: impl FnOnce(&mut FrameAllocator) -> Option<T>) -> Option<T> {
    FRAMES.lock().as_mut().and_then(f)
}

/// Runs an allocation; when the allocator is dry, takes back memory the scrubber
/// pooled (`mm::scrub`), one 2 MiB chunk at a time, and tries again: pooled memory is
/// free memory and never makes an allocation fail.
fn allocate_with<T>(f: impl Fn(&mut FrameAllocator) -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = with(&f) {
            return Some(v);
        }
        if !super::scrub::reclaim_one() {
            return None;
        }
    }
}

/// One 4 KiB frame (physical address), not zeroed.
pub fn allocate() -> Option<u64> {
    allocate_with(|a| a.allocate().map(|f| f.start()))
}

/// One frame whose address is below `limit`.
pub fn allocate_below(limit: u64) -> Option<u64> {
    allocate_with(|a| a.allocate_below(limit).map(|f| f.start()))
}

/// `count` contiguous frames aligned to `align` bytes.
pub fn allocate_contiguous(count: u64, align: u64) -> Option<u64> {
    allocate_with(|a| a.allocate_contiguous(count, align).map(|f| f.start()))
}

/// `allocate_contiguous` for the scrubber itself: never reclaims from its pool.
pub(super) fn allocate_contiguous_unpooled(count: u64, align: u64) -> Option<u64> {
    with(|a| a.allocate_contiguous(count, align).map(|f| f.start()))
}

/// Free memory: the allocator's and the scrubber's pool (zeroed, handed back on demand).
pub fn free_bytes() -> u64 {
    free_bytes_unpooled() + super::scrub::pooled_bytes()
}

/// What the allocator itself holds.
pub(super) fn free_bytes_unpooled() -> u64 {
    with(|a| Some(a.free_frames() * 4096)).unwrap_or(0)
}

/// Returns a frame. A frame the allocator cannot take back (its range table is full)
/// stays allocated; that is reported, never silently lost.
pub fn deallocate(frame: u64) {
    deallocate_unpooled(frame);
    super::scrub::memory_freed();
}

pub(super) fn deallocate_unpooled(frame: u64) {
    let Some(f) = super::frames::PhysFrame::from_start(frame) else { return };
    if let Some(Err(e)) = FRAMES.lock().as_mut().map(|a| a.deallocate(f)) {
        log::warn!("memory: frame {frame:#x} not returned to the allocator: {e:?}");
    }
}
