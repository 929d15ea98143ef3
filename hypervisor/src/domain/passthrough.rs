//! The machine's devices that Domain0 owns: their interrupts go to it.
//!
//! Today that is the serial port's IRQ 4 (Domain0 drives the real COM1 through its I/O
//! bitmap). The host I/O APIC delivers it to the boot CPU on a hypervisor vector
//! (`arch::ioapic`); whichever CPU sees it notes the line, and the run loop raises the
//! same ISA line, as an edge, on Domain0's virtual I/O APIC and PICs, which deliver it
//! the way Domain0 programmed them. The UART's own line stays high until its data is
//! read, so an edge-triggered pin loses nothing Domain0 reads in full.

use super::Domain;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Once;

/// The ISA lines Domain0 gets: COM1.
pub const DOM0_IRQS: [u8; 1] = [crate::devices::uart16550::COM1_IRQ];

static DOM0: Once<Arc<Domain>> = Once::new();
static FIRST_DELIVERY: AtomicBool = AtomicBool::new(false);

/// Hands Domain0 its lines: routes them on the host I/O APIC to the boot CPU.
pub fn setup(dom0: &Arc<Domain>) {
    DOM0.call_once(|| dom0.clone());
    let bsp = crate::percpu::apic_id_of(0).unwrap_or(0);
    for irq in DOM0_IRQS {
        match crate::arch::ioapic::route_isa(irq, bsp) {
            Ok(()) => log::info!("passthrough: IRQ {irq} of the machine goes to {}", dom0.name),
            Err(e) => log::warn!("passthrough: IRQ {irq} cannot be routed ({e}); {} polls instead", dom0.name),
        }
    }
}

/// Passes the lines that fired on to Domain0 (cheap when none did).
pub fn deliver_pending() {
    let pending = crate::arch::ioapic::take_pending();
    if pending == 0 {
        return;
    }
    let Some(dom0) = DOM0.get() else { return };
    if dom0.state().is_final() {
        return;
    }
    dom0.devices(|d, out| {
        for irq in (0..16u8).filter(|i| pending & (1 << i) != 0) {
            d.set_isa_irq(irq, true, out);
            d.set_isa_irq(irq, false, out);
        }
    });
    if !FIRST_DELIVERY.swap(true, Ordering::Relaxed) {
        log::info!("passthrough: first interrupt from the machine delivered to {} (lines {pending:#x})", dom0.name);
    }
}
