//! The machine's PCI devices, through configuration mechanism #1 (ports 0xCF8/0xCFC):
//! enumerated once at boot, before Domain0 runs (Domain0 then owns those ports), to
//! find the BARs of the devices Domain0 gets.

use crate::arch::cpu;
use crate::pci_bars::{self, Bar};
use alloc::vec::Vec;

const ADDRESS: u16 = 0xCF8;
const DATA: u16 = 0xCFC;

fn address(bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
    0x8000_0000 | u32::from(bus) << 16 | u32::from(dev) << 11 | u32::from(func) << 8 | u32::from(offset & 0xFC)
}

fn read32(bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
    // SAFETY: configuration mechanism #1; only the boot CPU uses it, before any guest.
    unsafe {
        cpu::outl(ADDRESS, address(bus, dev, func, offset));
        cpu::inl(DATA)
    }
}

fn write32(bus: u8, dev: u8, func: u8, offset: u8, value: u32) {
    // SAFETY: as in `read32`.
    unsafe {
        cpu::outl(ADDRESS, address(bus, dev, func, offset));
        cpu::outl(DATA, value);
    }
}

/// One function and what it decodes.
#[derive(Debug, Clone)]
pub struct Function {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub bars: Vec<Bar>,
}

/// Sizes the BARs of a type-0 function. Decoding is switched off in the command register
/// while each BAR holds all ones, so the device never answers at a bogus address.
fn bars(bus: u8, dev: u8, func: u8) -> Vec<Bar> {
    let command = read32(bus, dev, func, 0x04);
    write32(bus, dev, func, 0x04, command & !0b11);
    let mut out = Vec::new();
    let mut index = 0u8;
    while index < 6 {
        let offset = 0x10 + index * 4;
        let original = read32(bus, dev, func, offset);
        write32(bus, dev, func, offset, u32::MAX);
        let probe = read32(bus, dev, func, offset);
        write32(bus, dev, func, offset, original);
        let wide = original & 1 == 0 && (original >> 1) & 0b11 == 0b10 && index < 5;
        let (upper, upper_probe) = if wide {
            let at = offset + 4;
            let upper = read32(bus, dev, func, at);
            write32(bus, dev, func, at, u32::MAX);
            let p = read32(bus, dev, func, at);
            write32(bus, dev, func, at, upper);
            (upper, p)
        } else {
            (0, 0)
        };
        if let Some(bar) = pci_bars::decode(original, probe, upper, upper_probe) {
            out.push(bar);
        }
        index += if wide { 2 } else { 1 };
    }
    write32(bus, dev, func, 0x04, command);
    out
}

/// Every function on bus 0 and the buses behind its PCI-PCI bridges (header type 1).
pub fn enumerate() -> Vec<Function> {
    let mut out = Vec::new();
    let mut buses = alloc::vec![0u8];
    let mut seen = [false; 256];
    while let Some(bus) = buses.pop() {
        if core::mem::replace(&mut seen[usize::from(bus)], true) {
            continue;
        }
        for dev in 0..32u8 {
            let header = (read32(bus, dev, 0, 0x0C) >> 16) as u8;
            let functions = if header & 0x80 != 0 { 8 } else { 1 };
            for func in 0..functions {
                let id = read32(bus, dev, func, 0x00);
                if id & 0xFFFF == 0xFFFF {
                    continue;
                }
                let class = read32(bus, dev, func, 0x08);
                let kind = (read32(bus, dev, func, 0x0C) >> 16) as u8 & 0x7F;
                if kind == 1 {
                    let secondary = (read32(bus, dev, func, 0x18) >> 8) as u8;
                    if secondary != 0 {
                        buses.push(secondary);
                    }
                }
                out.push(Function {
                    bus,
                    dev,
                    func,
                    vendor: id as u16,
                    device: (id >> 16) as u16,
                    class: (class >> 24) as u8,
                    subclass: (class >> 16) as u8,
                    bars: if kind == 0 { bars(bus, dev, func) } else { Vec::new() },
                });
            }
        }
    }
    out
}
