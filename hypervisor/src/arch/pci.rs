//! The machine's PCI devices, through configuration mechanism #1 (ports 0xCF8/0xCFC):
//! enumerated when Domain0 is built, to find the BARs of the devices it gets; and
//! Domain0's own configuration accesses ([`dom0_config`]), which exit so that the
//! address registers of the devices the hypervisor keeps (the host bridges) stay as
//! they are.

use crate::arch::cpu;
use crate::pci_bars::{self, Bar};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;

const ADDRESS: u16 = 0xCF8;
const DATA: u16 = 0xCFC;

/// Serialises every select-then-access pair on the two ports (the hypervisor's own, and
/// Domain0's from any of its vCPUs), and holds the functions the hypervisor keeps:
/// (bus << 16 | device << 11 | function << 8, header type).
static CONFIG: Mutex<Vec<(u32, u8)>> = Mutex::new(Vec::new());

fn address(bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
    0x8000_0000 | u32::from(bus) << 16 | u32::from(dev) << 11 | u32::from(func) << 8 | u32::from(offset & 0xFC)
}

fn read32(bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
    let _config = CONFIG.lock();
    // SAFETY: configuration mechanism #1, the pair kept together by the lock.
    unsafe {
        cpu::outl(ADDRESS, address(bus, dev, func, offset));
        cpu::inl(DATA)
    }
}

fn write32(bus: u8, dev: u8, func: u8, offset: u8, value: u32) {
    let _config = CONFIG.lock();
    // SAFETY: as in `read32`.
    unsafe {
        cpu::outl(ADDRESS, address(bus, dev, func, offset));
        cpu::outl(DATA, value);
    }
}

/// The functions whose address registers Domain0 must not move (the host bridges).
pub fn keep<'a>(functions: impl Iterator<Item = &'a Function>) {
    let kept = functions.map(|f| (address(f.bus, f.dev, f.func, 0) & 0x00FF_FF00, f.header)).collect();
    *CONFIG.lock() = kept;
}

/// Domain0's CONFIG_ADDRESS (0xCF8) as it last wrote it: its own latch, applied to the
/// hardware together with each data access.
static DOM0_ADDRESS: AtomicU32 = AtomicU32::new(0);
/// Writes dropped so far, for the log (the first few are named).
static DROPPED: AtomicU32 = AtomicU32::new(0);

/// One access of Domain0 to ports 0xCF8-0xCFF (`bytes` wide; `write` holds the value
/// for OUT): CONFIG_ADDRESS is latched, data accesses go to the hardware under the
/// lock, except writes to an address register (BAR, ROM BAR) of a function the
/// hypervisor keeps, which are dropped. Any other access (0xCF9, the reset control
/// register, among them) goes through as it is. Returns what an IN reads.
pub fn dom0_config(port: u16, bytes: u8, write: Option<u32>) -> u32 {
    let config = CONFIG.lock();
    if port == ADDRESS && bytes == 4 {
        return match write {
            Some(v) => {
                DOM0_ADDRESS.store(v, Ordering::Relaxed);
                0
            }
            None => DOM0_ADDRESS.load(Ordering::Relaxed),
        };
    }
    let latch = DOM0_ADDRESS.load(Ordering::Relaxed);
    let data = (DATA..DATA + 4).contains(&port) && latch & 0x8000_0000 != 0;
    if data {
        let offset = (latch & 0xFC) as u8 + (port - DATA) as u8;
        let function = latch & 0x00FF_FF00;
        let kept = config.iter().find(|(f, _)| *f == function);
        if let (Some(&(_, header)), Some(v)) = (kept, write)
            && pci_bars::is_address_register(header, offset)
        {
            if DROPPED.fetch_add(1, Ordering::Relaxed) < 8 {
                log::warn!(
                    "pci: Domain0's write of {v:#x} to offset {offset:#x} of {:02x}:{:02x}.{} dropped: an address \
                     register of a device the hypervisor keeps",
                    (function >> 16) as u8,
                    ((function >> 11) & 0x1F) as u8,
                    ((function >> 8) & 7) as u8
                );
            }
            return 0;
        }
        // SAFETY: selects the function Domain0 latched; the data access follows under
        // the same lock.
        unsafe { cpu::outl(ADDRESS, latch) };
    }
    // SAFETY: Domain0 owns the machine's PCI configuration space (but the registers
    // filtered above) and the reset control register; these are its accesses, as it
    // made them.
    unsafe {
        match (bytes, write) {
            (1, Some(v)) => cpu::outb(port, v as u8),
            (2, Some(v)) => cpu::outw(port, v as u16),
            (_, Some(v)) => cpu::outl(port, v),
            (1, None) => return u32::from(cpu::inb(port)),
            (2, None) => return u32::from(cpu::inw(port)),
            (_, None) => return cpu::inl(port),
        }
    }
    0
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
    /// Header type (bits 6:0): 0 a device, 1 a PCI-PCI bridge.
    pub header: u8,
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
                    header: kind,
                    bars: if kind == 0 { bars(bus, dev, func) } else { Vec::new() },
                });
            }
        }
    }
    out
}
