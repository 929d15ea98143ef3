//! The machine's devices that Domain0 owns: their interrupts go to it.
//!
//! The serial port's IRQ 4 is routed at boot (Domain0 drives the real COM1 through its
//! I/O bitmap); other lines when Domain0's drivers ask (`IrqRoute`, Xen's map-pirq: the
//! driver knows the device, its GSI and its polarity, e.g. the ACPI SCI from
//! `PlatformInfo`). The host I/O APIC delivers a routed line to the boot CPU on a
//! hypervisor vector (`arch::ioapic`); whichever CPU sees it notes the line, and the run
//! loop raises the same line on Domain0's virtual I/O APIC (and, for ISA lines, its
//! PICs), which deliver it the way Domain0 programmed them. Level-triggered lines follow
//! `domain::pirq`: masked on the host when they fire, lowered and unmasked when Domain0
//! EOIs them.

use super::Domain;
use super::pirq::{Fire, Pirqs};
use crate::devices::{DomainDevices, Messages};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

/// The ISA lines Domain0 gets: COM1.
pub const DOM0_IRQS: [u8; 1] = [crate::devices::uart16550::COM1_IRQ];

/// The Domain0 that gets the machine's interrupts: replaced when Domain0 is built
/// again (after it reset itself), so the new one receives them.
static DOM0: Mutex<Option<Arc<Domain>>> = Mutex::new(None);
static PIRQS: Mutex<Pirqs> = Mutex::new(Pirqs::new());
static FIRST_DELIVERY: AtomicBool = AtomicBool::new(false);

/// Hands Domain0 its lines: routes them on the host I/O APIC to the boot CPU.
pub fn setup(dom0: &Arc<Domain>) {
    *DOM0.lock() = Some(dom0.clone());
    let bsp = crate::percpu::apic_id_of(0).unwrap_or(0);
    for irq in DOM0_IRQS {
        match crate::arch::ioapic::route_isa(irq, bsp) {
            Ok(()) => {
                PIRQS.lock().route(u32::from(irq), false);
                log::info!("passthrough: IRQ {irq} of the machine goes to {}", dom0.name)
            }
            Err(e) => log::warn!("passthrough: IRQ {irq} cannot be routed ({e}); {} polls instead", dom0.name),
        }
    }
}

/// Domain0 asks for the machine's line `gsi` (`IrqRoute`).
pub fn route(gsi: u32, level: bool, active_low: bool) -> Result<(), abi::hypercall::Error> {
    let bsp = crate::percpu::apic_id_of(0).unwrap_or(0);
    PIRQS.lock().route(gsi, level);
    crate::arch::ioapic::route(gsi, level, active_low, bsp).map_err(|e| {
        log::warn!("passthrough: GSI {gsi} cannot be routed to Domain0: {e}");
        abi::hypercall::Error::Invalid
    })?;
    log::info!(
        "passthrough: GSI {gsi} ({}, active-{}) of the machine goes to Domain-0",
        if level { "level" } else { "edge" },
        if active_low { "low" } else { "high" }
    );
    Ok(())
}

/// Passes the lines that fired on to Domain0 (cheap when none did).
pub fn deliver_pending() {
    let pending = crate::arch::ioapic::take_pending();
    if pending == 0 {
        return;
    }
    let Some(dom0) = DOM0.lock().clone() else { return };
    if dom0.is_ended() {
        return;
    }
    dom0.devices(|d, out| {
        for gsi in (0..32u32).filter(|i| pending & (1 << i) != 0) {
            let fire = PIRQS.lock().fired(gsi);
            match fire {
                Some(Fire::Pulse) => {
                    set_line(d, gsi, true, out);
                    set_line(d, gsi, false, out);
                }
                Some(Fire::Raise) => set_line(d, gsi, true, out),
                Some(Fire::AlreadyRaised) | None => {}
            }
        }
    });
    if !FIRST_DELIVERY.swap(true, Ordering::Relaxed) {
        log::info!("passthrough: first interrupt from the machine delivered to {} (lines {pending:#x})", dom0.name);
    }
}

/// Drives Domain0's line `gsi`: ISA lines to its PICs and I/O APIC as the board wires
/// them, the others to the I/O APIC pin of that number.
fn set_line(d: &mut DomainDevices, gsi: u32, level: bool, out: &mut Messages) {
    match u8::try_from(gsi) {
        Ok(irq) if irq < 16 => d.set_isa_irq(irq, level, out),
        Ok(pin) => {
            if let Some(m) = d.ioapic.set_irq(pin, level) {
                out.push(m);
            }
        }
        Err(_) => {}
    }
}

/// Domain0 is EOIing `vector` (before its virtual I/O APIC sees the EOI): its raised
/// level lines programmed with that vector are lowered, and unmasked on the host.
pub fn before_eoi(d: &mut DomainDevices, vector: u8, out: &mut Messages) {
    let mut pins = 0u32;
    for pin in 0..crate::devices::ioapic::PINS as u8 {
        if d.ioapic.entry(pin).is_some_and(|e| e & 0xFF == u64::from(vector)) {
            pins |= 1 << pin;
        }
    }
    let done = PIRQS.lock().eoi(pins);
    for gsi in (0..32u32).filter(|g| done & (1 << g) != 0) {
        set_line(d, gsi, false, out);
        crate::arch::ioapic::set_masked(gsi, false);
    }
}
