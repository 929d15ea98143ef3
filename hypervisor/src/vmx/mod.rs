//! VT-x. `caps` decodes the capability MSRs (pure, host-tested); `probe` reads them.

pub mod caps;
pub mod controls;
pub mod exit;
pub mod fields;

#[cfg(target_os = "none")]
pub mod probe;
