//! Device interrupts into a domain's vCPUs: the board's wiring from the emulated devices
//! (`devices::DomainDevices::sync`) through the I/O APIC to the local APICs, and through
//! the 8259 pair to vCPU 0's LINT0.
//!
//! Every guest access to a device goes through [`Domain::devices`], which brings the
//! interrupt lines up to date afterwards and delivers what the I/O APIC sent. Between
//! accesses the device timers (PIT, RTC) are run by whoever looks first after their
//! deadline: the vCPU about to enter (`sched::runloop`), or the scheduler's wake-up scan
//! for a domain whose vCPUs all wait in HLT. Both read two atomics here first, so the
//! common case takes no lock.
//!
//! Delivery uses the vCPUs' signal mailboxes (`domain::signals`), as IPIs do: the sender
//! never takes a vCPU's lock, and the CPU running the target is kicked.

use super::Domain;
use crate::devices::lapic::Destination;
use crate::devices::{DomainDevices, Messages};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What the run loop checks before every entry without taking the devices' lock.
pub struct IrqState {
    /// The 8259 pair's INT output (for vCPU 0's LINT0).
    pic_output: AtomicBool,
    /// When a device timer next changes a line (ns); `u64::MAX` for never.
    next_event_ns: AtomicU64,
}

impl IrqState {
    pub const fn new() -> Self {
        IrqState { pic_output: AtomicBool::new(false), next_event_ns: AtomicU64::new(u64::MAX) }
    }
}

impl Default for IrqState {
    fn default() -> Self {
        Self::new()
    }
}

/// I/O APIC delivery modes (redirection entry bits 10:8) that are delivered.
const FIXED: u8 = 0;
const LOWEST_PRIORITY: u8 = 1;
/// An NMI to each destination (the entry's vector is ignored).
const NMI: u8 = 4;

impl Domain {
    /// Runs `f` on the domain's devices under their lock, then brings the interrupt lines
    /// up to date and delivers what they raised. `f` may add I/O APIC messages of its own
    /// (a register write that re-delivers).
    pub fn devices<R>(&self, f: impl FnOnce(&mut DomainDevices, &mut Messages) -> R) -> R {
        let now = crate::arch::timer::now_ns();
        let mut messages = Messages::default();
        let result = {
            let mut rt = self.runtime.lock();
            let result = f(&mut rt.devices, &mut messages);
            rt.devices.sync(now, &mut messages);
            self.irq.pic_output.store(rt.devices.pic_output(), Ordering::Release);
            self.irq.next_event_ns.store(rt.devices.next_event_ns().unwrap_or(u64::MAX), Ordering::Release);
            result
        };
        self.deliver(&messages);
        result
    }

    /// Runs the device timers if one is due by `now` (one atomic load otherwise).
    pub fn poll_devices(&self, now: u64) {
        if now >= self.irq.next_event_ns.load(Ordering::Acquire) {
            self.devices(|_, _| ());
        }
    }

    /// When a device timer next needs [`Self::poll_devices`]; `None` for never.
    pub fn device_deadline(&self) -> Option<u64> {
        let t = self.irq.next_event_ns.load(Ordering::Acquire);
        (t != u64::MAX).then_some(t)
    }

    /// Whether the 8259 pair is asking for an interrupt (vCPU 0 takes it through LINT0).
    pub fn pic_output(&self) -> bool {
        self.irq.pic_output.load(Ordering::Acquire)
    }

    /// Sends each I/O APIC message to the vCPUs it addresses (fixed and NMI: all of them;
    /// lowest priority: the first, as the spec allows any). Other delivery modes (SMI,
    /// INIT, ExtINT through the I/O APIC) are not modelled and go nowhere.
    fn deliver(&self, messages: &Messages) {
        for m in messages.iter() {
            if !matches!(m.delivery_mode, FIXED | LOWEST_PRIORITY | NMI) {
                continue;
            }
            let dest = if m.dest_logical {
                Destination::Logical(u32::from(m.dest))
            } else {
                Destination::Physical(u32::from(m.dest))
            };
            for target in &self.signals {
                if !target.addressing().accepts(dest, false) {
                    continue;
                }
                if m.delivery_mode == NMI {
                    target.post_nmi();
                } else {
                    target.post(m.vector, m.level);
                }
                crate::sched::notify(target.running_on());
                if m.delivery_mode == LOWEST_PRIORITY {
                    break;
                }
            }
        }
    }
}
