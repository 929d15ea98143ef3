//! `lspci`: walks PCI configuration space through [`Host::pci_read32`].
//!
//! Bus 0 first, then every bus a PCI-to-PCI bridge (header type 1) leads to, in bus
//! order as lspci prints them. Functions 1-7 are probed only where function 0's header
//! type has the multifunction bit; a vendor ID of 0xFFFF means nothing answers.

use core::fmt::Write;

use crate::host::{Host, PciAddress};
use crate::pci_ids;

const VENDOR_ABSENT: u16 = 0xFFFF;
const HEADER_MULTIFUNCTION: u8 = 0x80;
const HEADER_TYPE_BRIDGE: u8 = 0x01;

/// The identity fields of one function's configuration header.
#[derive(Clone, Copy)]
struct Function {
    vendor: u16,
    device: u16,
    class: u8,
    subclass: u8,
    header_type: u8,
}

fn read_function(host: &mut impl Host, at: PciAddress) -> Option<Function> {
    let id = host.pci_read32(at, 0x00);
    let vendor = id as u16;
    if vendor == VENDOR_ABSENT {
        return None;
    }
    let class = host.pci_read32(at, 0x08);
    let header = host.pci_read32(at, 0x0C);
    Some(Function {
        vendor,
        device: (id >> 16) as u16,
        class: (class >> 24) as u8,
        subclass: (class >> 16) as u8,
        header_type: (header >> 16) as u8,
    })
}

/// A set of bus numbers.
struct Buses([u64; 4]);

impl Buses {
    fn insert(&mut self, bus: u8) {
        self.0[usize::from(bus / 64)] |= 1 << (bus % 64);
    }
    fn contains(&self, bus: u8) -> bool {
        self.0[usize::from(bus / 64)] >> (bus % 64) & 1 == 1
    }
}

/// Prints one line per function found.
pub fn lspci(host: &mut impl Host, out: &mut impl Write) -> core::fmt::Result {
    let mut reachable = Buses([0; 4]);
    let mut scanned = Buses([0; 4]);
    reachable.insert(0);
    // The lowest reachable bus not yet scanned, until none is left: bus order, and a bridge
    // pointing back at a scanned bus cannot make it loop.
    while let Some(bus) = (0..=255u8).find(|&b| reachable.contains(b) && !scanned.contains(b)) {
        scanned.insert(bus);
        for device in 0..32 {
            let Some(f0) = read_function(host, PciAddress { bus, device, function: 0 }) else { continue };
            let functions = if f0.header_type & HEADER_MULTIFUNCTION != 0 { 8 } else { 1 };
            for function in 0..functions {
                let at = PciAddress { bus, device, function };
                let found = if function == 0 { Some(f0) } else { read_function(host, at) };
                let Some(f) = found else { continue };
                print_function(out, at, &f)?;
                if f.header_type & 0x7F == HEADER_TYPE_BRIDGE {
                    let secondary = (host.pci_read32(at, 0x18) >> 8) as u8;
                    // 0: a bridge firmware has not numbered yet; nothing behind it is reachable.
                    if secondary != 0 {
                        reachable.insert(secondary);
                    }
                }
            }
        }
    }
    Ok(())
}

fn print_function(out: &mut impl Write, at: PciAddress, f: &Function) -> core::fmt::Result {
    write!(out, "{at} {} [{:02x}{:02x}]: ", pci_ids::class(f.class, f.subclass), f.class, f.subclass)?;
    match (pci_ids::vendor(f.vendor), pci_ids::device(f.vendor, f.device)) {
        (Some(v), Some(d)) => write!(out, "{v} {d}")?,
        (Some(v), None) => write!(out, "{v} Device")?,
        (None, _) => write!(out, "Device")?,
    }
    writeln!(out, " [{:04x}:{:04x}]", f.vendor, f.device)
}
