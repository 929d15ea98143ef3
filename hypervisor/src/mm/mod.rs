//! Memory: physical frames, the hypervisor's own page tables, kernel stacks and the heap.
//! `frames` is pure bookkeeping (host-tested); the rest touches the MMU.

pub mod addr;
pub mod ept;
pub mod frames;
pub mod guest_paging;

#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod paging;
#[cfg(target_os = "none")]
pub mod phys;
#[cfg(target_os = "none")]
pub mod scrub;
#[cfg(target_os = "none")]
pub mod stack;
