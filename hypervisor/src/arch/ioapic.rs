//! The machine's I/O APICs: the hypervisor routes ISA interrupts it hands to Domain0
//! (the serial port's IRQ 4) to its own vectors on the boot CPU, and notes which
//! arrived; `domain::passthrough` passes them on to Domain0's virtual I/O APIC.
//!
//! Only what that needs: map each I/O APIC the MADT lists, program one redirection
//! entry per routed line (fixed, physical destination, the trigger mode and polarity
//! asked for), mask level-triggered lines when they fire, and keep a pending bit per
//! line that interrupt handlers set and the run loop takes.

use crate::mm::paging;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;

/// Vectors for routed lines: `DEVICE_VECTOR_BASE + gsi` for GSIs 0 to 23, below the
/// hypervisor's own vectors (timer 0xEF, kick 0xF0, spurious 0xFF) and above the
/// exceptions.
pub const DEVICE_VECTOR_BASE: u8 = 0x30;
pub const ROUTABLE_GSIS: u32 = 24;
pub const DEVICE_VECTORS: core::ops::Range<u8> = DEVICE_VECTOR_BASE..DEVICE_VECTOR_BASE + ROUTABLE_GSIS as u8;

const IOREGSEL: usize = 0x00;
const IOWIN: usize = 0x10;
const REG_VERSION: u32 = 0x01;
const REG_REDTBL: u32 = 0x10;
const MASKED: u32 = 1 << 16;
const LEVEL: u32 = 1 << 15;
const ACTIVE_LOW: u32 = 1 << 13;

struct IoApic {
    virt: u64,
    gsi_base: u32,
    pins: u32,
}

impl IoApic {
    fn read(&self, reg: u32) -> u32 {
        // SAFETY: `virt` maps this I/O APIC's page uncacheable (map_mmio); IOREGSEL and
        // IOWIN are its 32-bit registers. The list's lock serialises select-then-access.
        unsafe {
            core::ptr::write_volatile((self.virt as usize + IOREGSEL) as *mut u32, reg);
            core::ptr::read_volatile((self.virt as usize + IOWIN) as *const u32)
        }
    }

    fn write(&self, reg: u32, value: u32) {
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::write_volatile((self.virt as usize + IOREGSEL) as *mut u32, reg);
            core::ptr::write_volatile((self.virt as usize + IOWIN) as *mut u32, value);
        }
    }
}

static IOAPICS: Mutex<Vec<IoApic>> = Mutex::new(Vec::new());
/// Lines whose interrupt arrived and was not yet passed on (bit n = GSI n).
static PENDING: AtomicU32 = AtomicU32::new(0);
/// Routed lines that are level-triggered: masked as soon as they fire.
static LEVEL_LINES: AtomicU32 = AtomicU32::new(0);

/// The physical pages of the I/O APICs the MADT listed (MMIO the hypervisor keeps).
static PAGES: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// The I/O APICs' physical register pages.
pub fn pages() -> Vec<u64> {
    PAGES.lock().clone()
}

/// Maps the I/O APICs the MADT listed. Returns how many could be used.
pub fn init(entries: &[super::acpi::IoApicEntry]) -> usize {
    let mut list = IOAPICS.lock();
    PAGES.lock().extend(entries.iter().map(|e| u64::from(e.address) & !0xFFF));
    for e in entries {
        match paging::map_mmio(u64::from(e.address), 1) {
            Ok(virt) => {
                let mut io = IoApic { virt, gsi_base: e.gsi_base, pins: 0 };
                io.pins = ((io.read(REG_VERSION) >> 16) & 0xFF) + 1;
                // Whatever firmware left enabled is off: only lines routed below arrive.
                for pin in 0..io.pins {
                    io.write(REG_REDTBL + 2 * pin, MASKED);
                }
                list.push(io);
            }
            Err(err) => log::warn!("ioapic at {:#x}: cannot map it ({err}); its interrupts stay off", e.address),
        }
    }
    list.len()
}

/// Routes ISA `irq` (identity-mapped to the GSI of the same number, as on PCs without
/// an override for it) as an edge-triggered, active-high line to the CPU with `apic_id`.
pub fn route_isa(irq: u8, apic_id: u32) -> Result<(), &'static str> {
    if irq >= 16 {
        return Err("not an ISA interrupt");
    }
    route(u32::from(irq), false, false, apic_id)
}

/// Routes `gsi` to `DEVICE_VECTOR_BASE + gsi` on the CPU with `apic_id` (fixed delivery,
/// physical destination) with the given trigger mode and polarity, unmasked.
pub fn route(gsi: u32, level: bool, active_low: bool, apic_id: u32) -> Result<(), &'static str> {
    if gsi >= ROUTABLE_GSIS {
        return Err("beyond the GSIs the hypervisor routes");
    }
    let list = IOAPICS.lock();
    let io = list.iter().find(|io| (io.gsi_base..io.gsi_base + io.pins).contains(&gsi)).ok_or("no I/O APIC has it")?;
    let reg = REG_REDTBL + 2 * (gsi - io.gsi_base);
    io.write(reg, MASKED);
    io.write(reg + 1, (apic_id & 0xFF) << 24);
    let bit = 1u32 << gsi;
    if level {
        LEVEL_LINES.fetch_or(bit, Ordering::AcqRel);
    } else {
        LEVEL_LINES.fetch_and(!bit, Ordering::AcqRel);
    }
    let mode = if level { LEVEL } else { 0 } | if active_low { ACTIVE_LOW } else { 0 };
    io.write(reg, (DEVICE_VECTOR_BASE as u32 + gsi) | mode);
    Ok(())
}

/// Masks or unmasks a routed line.
pub fn set_masked(gsi: u32, masked: bool) {
    let list = IOAPICS.lock();
    let Some(io) = list.iter().find(|io| (io.gsi_base..io.gsi_base + io.pins).contains(&gsi)) else { return };
    let reg = REG_REDTBL + 2 * (gsi - io.gsi_base);
    let low = io.read(reg);
    io.write(reg, if masked { low | MASKED } else { low & !MASKED });
}

/// An interrupt on a routed vector arrived (handler or VM exit): note its line. A
/// level-triggered line is masked at once: it stays asserted until the driver in
/// Domain0 has dealt with the device, and unmasked when Domain0 EOIs it.
pub fn note(vector: u8) {
    if DEVICE_VECTORS.contains(&vector) {
        let gsi = u32::from(vector - DEVICE_VECTOR_BASE);
        if LEVEL_LINES.load(Ordering::Acquire) & (1 << gsi) != 0 {
            set_masked(gsi, true);
        }
        PENDING.fetch_or(1 << gsi, Ordering::AcqRel);
    }
}

/// Takes the lines that fired since the last call.
pub fn take_pending() -> u32 {
    if PENDING.load(Ordering::Acquire) == 0 {
        return 0;
    }
    PENDING.swap(0, Ordering::AcqRel)
}
