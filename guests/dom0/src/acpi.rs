//! Domain0's ACPI event driver: the SCI. As in Xen, Domain0 owns the machine's power
//! management: the hypervisor tells it where the fixed hardware is (`PlatformInfo`) and
//! routes the SCI's line to it (`IrqRoute`); Domain0 handles the events.
//!
//! Setup ([`init`], after `interrupts::init`, with IF = 0): every PM1 fixed event is
//! disabled and stale status cleared; the SCI's GSI is routed to our virtual I/O APIC pin
//! of the same number, programmed active-high (the hypervisor drives the virtual pin
//! while the host line is asserted, whatever its polarity) with the SCI's trigger mode,
//! to [`SCI_VECTOR`]; then PWRBTN_EN, so the machine's power button works.
//!
//! The handler reads PM1_STS and writes the same value back (write-1-to-clear) BEFORE the
//! EOI: the hypervisor masks a level line on the host when it fires and unmasks it on our
//! EOI, so a cause still pending would fire again at once. It only counts (atomics, no
//! allocation, no output); a power button press sets a flag that the main loop acts on
//! ([`check_power_button`]): it says so and powers the machine off.

use abi::hypercall::{self as hc, Call, PlatformInfo};
use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use xl::{Acpi, AcpiStatus};

use crate::hypervisor::Hypervisor;
use crate::interrupts;
use crate::serial::Serial;

/// The SCI's vector, whatever its GSI (0x20 + 9, the usual ISA numbering of the PC's SCI).
pub const SCI_VECTOR: u8 = 0x29;

/// PM1_EN's offset in the PM1a event block (PM1_STS is at +0; 16 bits each).
const PM1_EN: u16 = 2;
/// TMR_STS / TMR_EN: the PM timer's bit 23 flipped (every 2^23 ticks of 3.579545 MHz).
const TMR: u16 = 1 << 0;
/// PWRBTN_STS / PWRBTN_EN: the power button was pressed.
const PWRBTN: u16 = 1 << 8;

/// The PM1a event block's port; 0 until [`init`] has routed the SCI.
static PM1A_EVENT: AtomicU16 = AtomicU16::new(0);
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
static TIMER_OVERFLOWS: AtomicU64 = AtomicU64::new(0);
static POWER_BUTTON: AtomicU64 = AtomicU64::new(0);
static OTHER: AtomicU64 = AtomicU64::new(0);
/// Set by the handler, taken by [`check_power_button`].
static POWER_BUTTON_PRESSED: AtomicBool = AtomicBool::new(false);

fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: a PM1 register, open in Domain0's I/O bitmap; reading it touches no memory.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") value, options(nomem, nostack, preserves_flags)) };
    value
}

fn outw(port: u16, value: u16) {
    // SAFETY: a PM1 register, open in Domain0's I/O bitmap; writing it touches no memory.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags)) };
}

// The SCI's entry: saves the registers the System V ABI lets `dom0_on_sci` clobber
// (Domain0 is built without SSE, so the general-purpose ones only), aligns the stack,
// clears DF as the ABI expects (IRETQ restores RFLAGS), and returns with IRETQ. The
// EOI is `dom0_on_sci`'s last act.
global_asm!(
    r#"
    .section .text.dom0_sci, "ax"
    .global dom0_sci_entry
    dom0_sci_entry:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        push r9
        push r10
        push r11
        push rbp
        mov rbp, rsp
        and rsp, -16
        cld
        call dom0_on_sci
        mov rsp, rbp
        pop rbp
        pop r11
        pop r10
        pop r9
        pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        iretq
    .text
    "#
);

unsafe extern "C" {
    fn dom0_sci_entry();
}

/// The SCI: clear the cause in the device, count it, then EOI.
#[unsafe(no_mangle)]
extern "C" fn dom0_on_sci() {
    let port = PM1A_EVENT.load(Ordering::Relaxed);
    if port != 0 {
        let status = inw(port);
        // Write-1-to-clear: exactly the bits that were set.
        outw(port, status);
        INTERRUPTS.fetch_add(1, Ordering::Relaxed);
        if status & TMR != 0 {
            TIMER_OVERFLOWS.fetch_add(1, Ordering::Relaxed);
        }
        if status & PWRBTN != 0 {
            POWER_BUTTON.fetch_add(1, Ordering::Relaxed);
            POWER_BUTTON_PRESSED.store(true, Ordering::Release);
        }
        if status & (TMR | PWRBTN) == 0 {
            OTHER.fetch_add(1, Ordering::Relaxed);
        }
    }
    interrupts::eoi();
}

/// Sets up the SCI from the machine's fixed hardware; prints one line saying what it did.
/// The result is what the `acpi` command reports (counters zero: [`status`] fills them).
pub fn init(hv: &mut Hypervisor, out: &mut Serial) -> Acpi {
    let acpi = setup(hv);
    match acpi {
        Acpi::Active(s) => {
            let level = if s.level { "level" } else { "edge" };
            let polarity = if s.active_low { "active-low" } else { "active-high" };
            let _ = writeln!(
                out,
                "dom0: acpi: SCI on GSI {} ({level}, {polarity}), PM1 events at {:#06x}",
                s.gsi, s.pm1a_event
            );
        }
        Acpi::NoSci => {
            let _ = writeln!(out, "dom0: acpi: the machine has no SCI (or no PM1 event block); no ACPI events");
        }
        Acpi::Failed { call, error } => {
            let why = xl::CmdError::Hypervisor { call, error };
            let _ = writeln!(out, "dom0: acpi: no ACPI events: {why}");
        }
    }
    out.flush();
    acpi
}

fn setup(hv: &mut Hypervisor) -> Acpi {
    let info: PlatformInfo = match hv.platform_info() {
        Ok(info) => info,
        Err(error) => return Acpi::Failed { call: Call::PlatformInfo, error },
    };
    let port = match u16::try_from(info.pm1a_event) {
        Ok(port) if port != 0 && port <= u16::MAX - 3 => port,
        _ => return Acpi::NoSci,
    };
    if info.sci_gsi == u32::MAX {
        return Acpi::NoSci;
    }
    let flags = u64::from(info.sci_flags) & (hc::IRQ_LEVEL | hc::IRQ_ACTIVE_LOW);
    let level = flags & hc::IRQ_LEVEL != 0;
    // Quiet the device first: no fixed event enabled, no stale status (a power button
    // pressed before we ran must not power the machine off now).
    outw(port + PM1_EN, 0);
    outw(port, inw(port));
    if let Err(error) = hv.irq_route(info.sci_gsi, flags) {
        return Acpi::Failed { call: Call::IrqRoute, error };
    }
    PM1A_EVENT.store(port, Ordering::Relaxed);
    interrupts::set_handler(SCI_VECTOR, dom0_sci_entry);
    // IrqRoute accepted the GSI, so it is one of the 24 pins.
    interrupts::route_pin(info.sci_gsi, SCI_VECTOR, level);
    outw(port + PM1_EN, PWRBTN);
    Acpi::Active(AcpiStatus {
        gsi: info.sci_gsi,
        level,
        active_low: flags & hc::IRQ_ACTIVE_LOW != 0,
        pm1a_event: port,
        ..AcpiStatus::default()
    })
}

/// `setup`'s result with the counters as they are now.
pub fn status(setup: Acpi) -> Acpi {
    let Acpi::Active(s) = setup else { return setup };
    let port = PM1A_EVENT.load(Ordering::Relaxed);
    Acpi::Active(AcpiStatus {
        interrupts: INTERRUPTS.load(Ordering::Relaxed),
        timer_overflows: TIMER_OVERFLOWS.load(Ordering::Relaxed),
        power_button: POWER_BUTTON.load(Ordering::Relaxed),
        other: OTHER.load(Ordering::Relaxed),
        timer_events: port != 0 && inw(port + PM1_EN) & TMR != 0,
        ..s
    })
}

/// Sets or clears TMR_EN; setting it clears a stale TMR_STS first, so the first SCI comes
/// at the next overflow rather than at once. Runs with IF = 0 (outside `idle`), so the
/// handler cannot interleave with the read-modify-write.
pub fn set_timer_events(on: bool) {
    let port = PM1A_EVENT.load(Ordering::Relaxed);
    if port == 0 {
        return;
    }
    let enabled = inw(port + PM1_EN);
    if on {
        outw(port, TMR);
        outw(port + PM1_EN, enabled | TMR);
    } else {
        outw(port + PM1_EN, enabled & !TMR);
    }
}

/// Whether a power button press waits for [`check_power_button`].
pub fn power_button_pending() -> bool {
    POWER_BUTTON_PRESSED.load(Ordering::Acquire)
}

/// If the power button was pressed since the last look: says so and powers the machine
/// off (returns only if the hypervisor refuses).
pub fn check_power_button(hv: &mut Hypervisor, out: &mut Serial) {
    if !POWER_BUTTON_PRESSED.swap(false, Ordering::Acquire) {
        return;
    }
    let _ = writeln!(out, "dom0: power button pressed; powering the machine off");
    out.flush();
    let e = hv.power_off();
    let _ = writeln!(out, "error: HostPowerOff: {e:?} ({})", e.code());
    out.flush();
}
