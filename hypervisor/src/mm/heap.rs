//! The hypervisor heap: `linked_list_allocator` over one physically contiguous block
//! reached through the direct map (no extra page-table work, no fragmentation of the
//! window). Guest memory never comes from here: it is allocated in frames.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Hands `size` bytes at virtual address `start` to the allocator.
///
/// # Safety
/// The range must be mapped, writable, unused by anything else, and live forever.
pub unsafe fn init(start: u64, size: usize) {
    // SAFETY: forwarded to the caller.
    unsafe { HEAP.lock().init(start as *mut u8, size) };
}

/// (used, free) bytes, for the boot report.
pub fn usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.used(), heap.free())
}
