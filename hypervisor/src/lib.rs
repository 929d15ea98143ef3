//! Ferrovisor: the hypervisor kernel as a library.
//!
//! Everything that touches no hardware (frame bookkeeping, VMX capability decoding, and
//! later the scheduler, EPT builder and device models) also compiles for the host and is
//! unit-tested there with `cargo test`. Code that executes privileged instructions is
//! gated on `target_os = "none"`: it only exists in the kernel image.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod clock;
pub mod decode;
pub mod devices;
pub mod domain;
pub mod guest_msrs;
pub mod loader;
pub mod mm;
pub mod pci_bars;
pub mod ring;
pub mod sched;
pub mod spec_ctrl;
pub mod vmx;
pub mod xstate;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod logger;
#[cfg(target_os = "none")]
pub mod percpu;
#[cfg(target_os = "none")]
pub mod power;
#[cfg(target_os = "none")]
pub mod vmexit;
