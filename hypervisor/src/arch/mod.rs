//! CPU plumbing that is not virtualization: descriptor tables, exceptions, the local
//! APIC, ACPI discovery, timers and SMP bring-up.

pub mod acpi;
pub mod apic;
pub mod cmos;
pub mod cpu;
pub mod debugreg;
pub mod exceptions;
pub mod fpu;
pub mod gdt;
pub mod ioapic;
pub mod nmi;
pub mod pci;
pub mod pic;
pub mod serial;
pub mod smp;
pub mod spec_ctrl;
pub mod timer;
