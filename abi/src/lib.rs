//! Definitions both sides of the boot must agree on: the boot bundle that carries guest
//! images and configuration from `boot/` to the hypervisor, and the configuration
//! format itself. `no_std` without the `std` feature, so the hypervisor parses exactly
//! what the builder writes.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod bundle;
pub mod config;
pub mod crc32;
pub mod hypercall;
