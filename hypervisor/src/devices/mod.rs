//! Device models: one file per device, each a plain Rust type with a register-level
//! interface (`read(offset)`, `write(offset, value) -> Effects`) that touches no
//! hardware, so every state transition is unit-tested on the host. The exit handlers
//! (`vmexit::io`, `vmexit::mmio`, `vmexit::apic`) route guest accesses to them and carry
//! out their effects.
//!
//! Per domain: the COM1 UART. Per vCPU: the local APIC.

pub mod lapic;
pub mod uart16550;

/// The devices a domain's vCPUs share.
pub struct DomainDevices {
    pub com1: uart16550::Uart16550,
}

impl Default for DomainDevices {
    fn default() -> Self {
        Self::new()
    }
}

impl DomainDevices {
    pub const fn new() -> Self {
        DomainDevices { com1: uart16550::Uart16550::new() }
    }
}
