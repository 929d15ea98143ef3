//! Kernel stacks: mapped in the hypervisor's window with an unmapped guard page below,
//! so an overflow faults (and the #DF handler, on its own IST stack, reports it)
//! instead of silently corrupting whatever lies below.

use super::paging;

/// Allocates a stack of at least `bytes` and returns its top (16-byte aligned).
pub fn allocate(bytes: usize) -> Option<u64> {
    match paging::map_guarded(bytes as u64) {
        Ok(top) => Some(top),
        Err(e) => {
            log::error!("cannot allocate a {} KiB kernel stack: {e}", bytes / 1024);
            None
        }
    }
}
