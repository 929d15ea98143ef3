//! Interrupts, mostly to wake Domain0 from HLT: a 10 ms local APIC timer and the UART's
//! IRQ 4 through the I/O APIC, whose handlers do nothing but EOI (the idle loop polls
//! afterwards). Drivers with real handlers (the ACPI SCI, `acpi.rs`) install their own
//! gate and I/O APIC pin with [`set_handler`] and [`route_pin`].

use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::serial::Serial;

const LAPIC: u64 = 0xFEE0_0000;
const LAPIC_EOI: u64 = 0xB0;
const LAPIC_SVR: u64 = 0xF0;
const LAPIC_LVT_TIMER: u64 = 0x320;
const LAPIC_TIMER_INITIAL: u64 = 0x380;
const LAPIC_TIMER_DIVIDE: u64 = 0x3E0;
const IOAPIC: u64 = 0xFEC0_0000;
const IOAPIC_WINDOW: u64 = 0x10;
/// Redirection entries of the (virtual) I/O APIC.
const IOAPIC_PINS: u32 = 24;

pub const TIMER_VECTOR: u8 = 0x20;
/// IRQ 4 (COM1) as vector 0x20 + 4, the usual remapped-ISA numbering.
pub const SERIAL_VECTOR: u8 = 0x24;
const SPURIOUS_VECTOR: u8 = 0xFF;
const SERIAL_IOAPIC_PIN: u32 = 4;

/// Wake-ups per second.
const TICK_HZ: u64 = 100;
/// The virtual APIC bus the hypervisor documents when its timing leaf is missing: 1 GHz.
const DEFAULT_APIC_BUS_KHZ: u64 = 1_000_000;
const HV_BASE_LEAF: u32 = 0x4000_0000;
/// EAX = TSC kHz, EBX = APIC bus kHz.
const HV_TIMING_LEAF: u32 = 0x4000_0010;

// Exception stubs (vectors 0-31) pass their vector and the stack pointer to `on_exception`,
// which reports and halts: Domain0 has no way to recover, and the hypervisor keeps running.
// The IRQ stub EOIs the local APIC (xAPIC EOI register at 0xFEE000B0) and returns; it saves
// RAX, the only register it uses. The spurious vector must not be EOIed (SDM Vol. 3A 11.9).
global_asm!(
    r#"
    .section .text.dom0_interrupts, "ax"
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    dom0_exception_\n:
        mov edi, \n
        jmp dom0_exception_common
    .endr
    dom0_exception_common:
        mov rsi, rsp
        and rsp, -16
        call dom0_on_exception
        ud2
    .global dom0_irq_entry
    dom0_irq_entry:
        push rax
        mov eax, 0xFEE000B0
        mov dword ptr [rax], 0
        pop rax
        iretq
    .global dom0_spurious_entry
    dom0_spurious_entry:
        iretq

    .section .rodata.dom0_exception_stubs, "a"
    .balign 8
    .global dom0_exception_stubs
    dom0_exception_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad dom0_exception_\n
    .endr
    .text
    "#
);

unsafe extern "C" {
    fn dom0_irq_entry();
    fn dom0_spurious_entry();
    static dom0_exception_stubs: [u64; 32];
}

/// Vectors whose exception pushes an error code before RIP (SDM Vol. 3A 6.13).
fn has_error_code(vector: u64) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

#[unsafe(no_mangle)]
extern "C" fn dom0_on_exception(vector: u64, frame: *const u64) -> ! {
    let rip_at = if has_error_code(vector) { 1 } else { 0 };
    // SAFETY: `frame` is the stack pointer at the stub's entry, below the CPU-pushed frame
    // (optional error code, RIP, CS, RFLAGS, RSP, SS): reading within it stays on our stack.
    let rip = unsafe { frame.add(rip_at).read() };
    let mut out = Serial::new();
    let _ = writeln!(out, "\ndom0: CPU exception {vector} at rip {rip:#x}; halting");
    out.flush();
    halt_forever()
}

pub fn halt_forever() -> ! {
    loop {
        // SAFETY: stops this vCPU with interrupts off; nothing to protect.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// The IDT: 256 16-byte gates. Atomics rather than `static mut`: written once, before LIDT.
static IDT: [AtomicU64; 512] = [const { AtomicU64::new(0) }; 512];

/// A 64-bit interrupt gate, present, DPL 0, code selector 0x08 (SDM Vol. 3A 6.14.1).
fn set_gate(vector: u8, handler: u64) {
    let low = (handler & 0xFFFF) | (0x08 << 16) | (0x8E00 << 32) | ((handler >> 16) & 0xFFFF) << 48;
    IDT[usize::from(vector) * 2].store(low, Ordering::Relaxed);
    IDT[usize::from(vector) * 2 + 1].store(handler >> 32, Ordering::Relaxed);
}

fn load_idt() {
    let base = IDT.as_ptr() as u64;
    let limit = (IDT.len() * 8 - 1) as u16;
    let pointer: [u16; 5] = [limit, base as u16, (base >> 16) as u16, (base >> 32) as u16, (base >> 48) as u16];
    // SAFETY: the IDT is a static that lives forever and every gate points at a stub above.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) };
}

fn lapic_write(offset: u64, value: u32) {
    // SAFETY: the local APIC's xAPIC page, identity-mapped; the hypervisor emulates it.
    unsafe { ((LAPIC + offset) as *mut u32).write_volatile(value) }
}

fn ioapic_write(register: u32, value: u32) {
    // SAFETY: IOREGSEL and IOWIN of the I/O APIC page, identity-mapped, emulated.
    unsafe {
        (IOAPIC as *mut u32).write_volatile(register);
        ((IOAPIC + IOAPIC_WINDOW) as *mut u32).write_volatile(value);
    }
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The hypervisor's timing leaf (EAX TSC kHz, EBX APIC bus kHz), if it has one.
pub fn timing_leaf() -> Option<(u64, u64)> {
    if cpuid(HV_BASE_LEAF)[0] < HV_TIMING_LEAF {
        return None;
    }
    let [tsc_khz, bus_khz, _, _] = cpuid(HV_TIMING_LEAF);
    Some((tsc_khz.into(), bus_khz.into()))
}

/// Points `vector` at `handler`, an interrupt entry stub (it must end in IRETQ and EOI
/// as its source needs). Call with interrupts disabled, after [`init`].
pub fn set_handler(vector: u8, handler: unsafe extern "C" fn()) {
    set_gate(vector, handler as *const () as u64);
}

/// Programs I/O APIC pin `pin` to raise `vector` on APIC ID 0: fixed delivery, physical
/// destination, active high, edge- or level-triggered, unmasked. Pins past the I/O
/// APIC's 24 are ignored.
pub fn route_pin(pin: u32, vector: u8, level: bool) {
    if pin >= IOAPIC_PINS {
        return;
    }
    // Redirection entry: registers 0x10 + 2 * pin (low) and the next (high). The high half
    // (destination APIC ID 0) first, so the pin is never unmasked toward a stale destination.
    let entry = 0x10 + 2 * pin;
    ioapic_write(entry + 1, 0);
    ioapic_write(entry, u32::from(vector) | u32::from(level) << 15);
}

/// Ends the interrupt being handled (the local APIC's EOI register). For a level-triggered
/// pin, only after the device has dropped its line.
pub fn eoi() {
    lapic_write(LAPIC_EOI, 0);
}

/// Installs the IDT, starts the periodic timer and routes IRQ 4. Interrupts stay disabled
/// (IF = 0) except inside [`idle`].
pub fn init() {
    // SAFETY: reading the address of a table the assembly above defines.
    let stubs = unsafe { &*core::ptr::addr_of!(dom0_exception_stubs) };
    for (vector, &stub) in (0u8..).zip(stubs.iter()) {
        set_gate(vector, stub);
    }
    for vector in 32..=0xFE {
        set_gate(vector, dom0_irq_entry as *const () as u64);
    }
    set_gate(SPURIOUS_VECTOR, dom0_spurious_entry as *const () as u64);
    load_idt();

    let bus_khz = timing_leaf().map(|(_, bus)| bus).filter(|&k| k != 0).unwrap_or(DEFAULT_APIC_BUS_KHZ);
    lapic_write(LAPIC_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    lapic_write(LAPIC_TIMER_DIVIDE, 0b1011); // divide by 1
    lapic_write(LAPIC_LVT_TIMER, u32::from(TIMER_VECTOR) | 1 << 17); // periodic
    let count = (bus_khz * 1000 / TICK_HZ).min(u64::from(u32::MAX)) as u32;
    lapic_write(LAPIC_TIMER_INITIAL, count);

    route_pin(SERIAL_IOAPIC_PIN, SERIAL_VECTOR, false);
}

/// Sleeps until the next interrupt (at most one timer tick). STI's one-instruction shadow
/// makes STI; HLT atomic: an interrupt that became pending while we were polling with
/// IF = 0 wakes the HLT at once instead of being taken before it and leaving us asleep.
pub fn idle() {
    // SAFETY: the IDT and its handlers are installed (init); they only EOI and return.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}
