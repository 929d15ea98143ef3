//! Guest image loaders: turn an image from the boot bundle into a load plan (what to
//! copy where in guest-physical memory, and how to enter it). Pure parsing, host-tested.

pub mod elf64;
pub mod flat;
pub mod multiboot;
pub mod plan;
