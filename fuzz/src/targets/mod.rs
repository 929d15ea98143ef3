//! One function per fuzz target; each takes the raw fuzz input and panics on a bug.

mod devices;
mod parsers;

pub use devices::{acpi_pm, fw_cfg, ioapic, lapic, pci, pic8259, pit8254, rtc, uart16550};
pub use parsers::{bundle, bzimage, config, decode, elf64, flat, guest_paging, hypercall, multiboot};
