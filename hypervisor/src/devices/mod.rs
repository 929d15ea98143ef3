//! Device models: one file per device, each a plain Rust type with a register-level
//! interface (`read(offset)`, `write(offset, value) -> Effects`) that touches no
//! hardware, so every state transition is unit-tested on the host. The exit handlers
//! (`vmexit::io`, `vmexit::mmio`, `vmexit::apic`) route guest accesses to them and carry
//! out their effects.
//!
//! Per domain: the COM1 UART, the 8259A PIC pair, the 8254 PIT, the ACPI
//! power-management block, port 0x92, the CMOS RTC,
//! the I/O APIC, the PCI host bridge and fw_cfg (`acpi_tables` builds the tables that
//! describe them). Per vCPU: the local APIC.

pub mod acpi_pm;
pub mod acpi_tables;
pub mod fw_cfg;
pub mod ioapic;
pub mod lapic;
pub mod pci;
pub mod pic8259;
pub mod pit8254;
pub mod rtc;
pub mod uart16550;

/// The devices a domain's vCPUs share.
pub struct DomainDevices {
    pub com1: uart16550::Uart16550,
    pub pm: acpi_pm::AcpiPm,
    /// System control port A (0x92): bit 1 is the A20 gate, which reads as set.
    pub port92: u8,
    pub rtc: rtc::Rtc,
    pub ioapic: ioapic::IoApic,
    pub pci: pci::PciHost,
    pub fw_cfg: fw_cfg::FwCfg,
    pub pic: pic8259::Pic8259Pair,
    pub pit: pit8254::Pit8254,
}

impl DomainDevices {
    /// The devices of a domain with `vcpus` vCPUs and `ram_bytes` of RAM; the RTC starts
    /// at `unix_time` (the host's clock) at `now_ns`.
    pub fn new(vcpus: u32, ram_bytes: u64, unix_time: u64, now_ns: u64) -> Self {
        let below_4g = ram_bytes.min(1 << 32);
        DomainDevices {
            com1: uart16550::Uart16550::new(),
            pm: acpi_pm::AcpiPm::new(),
            port92: 0x02,
            rtc: rtc::Rtc::new(unix_time, now_ns, below_4g, ram_bytes - below_4g),
            // I/O APIC ID: after the vCPUs' local APIC IDs, as on a PC.
            ioapic: ioapic::IoApic::new(u8::try_from(vcpus).unwrap_or(0xFE).min(0xFE)),
            pci: pci::PciHost::new(),
            fw_cfg: fw_cfg::FwCfg::new(u16::try_from(vcpus).unwrap_or(u16::MAX), ram_bytes),
            pic: pic8259::Pic8259Pair::new(),
            pit: pit8254::Pit8254::new(),
        }
    }
}
