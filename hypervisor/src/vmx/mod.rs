//! VT-x. `caps` decodes the capability MSRs (pure, host-tested); `probe` reads them.

pub mod caps;

#[cfg(target_os = "none")]
pub mod probe;
