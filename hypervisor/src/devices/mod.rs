//! Device models: one file per device, each a plain Rust type with a register-level
//! interface (`read(offset)`, `write(offset, value) -> Effects`) that touches no
//! hardware, so every state transition is unit-tested on the host. The exit handlers
//! (`vmexit::io`, `vmexit::mmio`, `vmexit::apic`) route guest accesses to them and carry
//! out their effects.
//!
//! Per domain: the COM1 UART, the ACPI power-management block and port 0x92. Per vCPU:
//! the local APIC.

pub mod acpi_pm;
pub mod lapic;
pub mod uart16550;

/// The devices a domain's vCPUs share.
pub struct DomainDevices {
    pub com1: uart16550::Uart16550,
    pub pm: acpi_pm::AcpiPm,
    /// System control port A (0x92): bit 1 is the A20 gate, which reads as set.
    pub port92: u8,
}

impl Default for DomainDevices {
    fn default() -> Self {
        Self::new()
    }
}

impl DomainDevices {
    pub const fn new() -> Self {
        DomainDevices { com1: uart16550::Uart16550::new(), pm: acpi_pm::AcpiPm::new(), port92: 0x02 }
    }
}
