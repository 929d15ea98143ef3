//! Scheduling vCPUs on CPUs.
//!
//! - `credit`: the credit scheduler's algorithm (Xen's credit1), pure and host-tested,
//!   with `sim`, a deterministic discrete-event simulation that checks its fairness.
//! - `runloop`: each CPU's loop that picks a vCPU, enters it and handles its exits.

pub mod credit;
#[cfg(test)]
mod sim;

#[cfg(target_os = "none")]
mod runloop;
#[cfg(target_os = "none")]
pub use runloop::*;
