//! Domains and their vCPUs: identity, memory, state, statistics.

pub mod boot_area;

#[cfg(target_os = "none")]
pub mod memory;
