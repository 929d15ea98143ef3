//! The local APIC in xAPIC mode (memory-mapped). Used for bring-up (INIT/SIPI), the
//! NMI that stops other CPUs, and later timers and IPIs.
//!
//! xAPIC rather than x2APIC because it exists on every VT-x machine; the MMIO page is
//! mapped uncacheable once and shared by all CPUs (each CPU sees its own APIC there).

use super::cpu::{msr, rdmsr, wrmsr};
use super::exceptions::SPURIOUS_VECTOR;
use super::timer;
use core::sync::atomic::{AtomicU64, Ordering};

/// Register offsets in the xAPIC page (SDM Vol. 3A Table 11-1).
mod reg {
    pub const ID: usize = 0x20;
    pub const VERSION: usize = 0x30;
    pub const TPR: usize = 0x80;
    pub const EOI: usize = 0xB0;
    pub const SVR: usize = 0xF0;
    pub const ESR: usize = 0x280;
    pub const ICR_LOW: usize = 0x300;
    pub const ICR_HIGH: usize = 0x310;
    pub const LVT_LINT0: usize = 0x350;
    pub const LVT_LINT1: usize = 0x360;
    pub const LVT_ERROR: usize = 0x370;
}

/// ICR delivery modes and flags (SDM Vol. 3A 11.6.1).
mod icr {
    pub const NMI: u32 = 0b100 << 8;
    pub const INIT: u32 = 0b101 << 8;
    pub const STARTUP: u32 = 0b110 << 8;
    pub const LEVEL_ASSERT: u32 = 1 << 14;
    pub const TRIGGER_LEVEL: u32 = 1 << 15;
    pub const DELIVERY_PENDING: u32 = 1 << 12;
    pub const ALL_EXCLUDING_SELF: u32 = 0b11 << 18;
}

const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Virtual address of the APIC page; 0 until [`init_bsp`] mapped it.
static MMIO_BASE: AtomicU64 = AtomicU64::new(0);

fn read(offset: usize) -> u32 {
    let base = MMIO_BASE.load(Ordering::Relaxed);
    debug_assert!(base != 0);
    // SAFETY: `base` maps the 4 KiB APIC page uncacheable and `offset` is one of the
    // aligned 32-bit registers listed in `reg`.
    unsafe { core::ptr::read_volatile((base as usize + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    let base = MMIO_BASE.load(Ordering::Relaxed);
    debug_assert!(base != 0);
    // SAFETY: as in `read`.
    unsafe { core::ptr::write_volatile((base as usize + offset) as *mut u32, value) }
}

/// The APIC's physical base from IA32_APIC_BASE, and whether this CPU is the BSP.
pub fn base_msr() -> (u64, bool) {
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (all x86_64 CPUs).
    let v = unsafe { rdmsr(msr::IA32_APIC_BASE) };
    (v & APIC_BASE_ADDR_MASK, v & APIC_BASE_BSP != 0)
}

/// Records where the APIC page is mapped. Called once by the BSP after mapping it.
pub fn set_mmio_base(virt: u64) {
    MMIO_BASE.store(virt, Ordering::Relaxed);
}

/// Enables this CPU's local APIC in xAPIC mode with interrupts masked at the LVT.
pub fn enable_this_cpu() {
    // SAFETY: setting the global-enable bit keeps the base address as the firmware set
    // it; xAPIC mode (EXTD clear) is what the MMIO accessors assume.
    unsafe {
        let v = rdmsr(msr::IA32_APIC_BASE);
        wrmsr(msr::IA32_APIC_BASE, (v | APIC_BASE_ENABLE) & !(1 << 10));
    }
    // Mask LINT0/LINT1/error until something wants them; accept all priorities.
    write(reg::LVT_LINT0, 1 << 16);
    write(reg::LVT_LINT1, 1 << 16);
    write(reg::LVT_ERROR, 1 << 16);
    write(reg::TPR, 0);
    // Software-enable (SVR bit 8) with the spurious vector.
    write(reg::SVR, (1 << 8) | u32::from(SPURIOUS_VECTOR));
    write(reg::ESR, 0);
    write(reg::EOI, 0);
}

/// The highest vector in service (ISR), for handlers shared by several vectors.
pub fn highest_in_service() -> Option<u8> {
    // ISR: eight 32-bit registers at 0x100, 0x110, ... (SDM Vol. 3A Table 11-1).
    (0..8usize).rev().find_map(|i| {
        let bits = read(0x100 + i * 0x10);
        (bits != 0).then(|| (i * 32 + 31 - bits.leading_zeros() as usize) as u8)
    })
}

/// Signals end of interrupt for the highest-priority in-service vector.
pub fn eoi() {
    write(reg::EOI, 0);
}

/// This CPU's APIC ID (xAPIC: bits 31:24 of the ID register).
pub fn id() -> u32 {
    read(reg::ID) >> 24
}

/// Version register: (version, max LVT entry).
pub fn version() -> (u8, u8) {
    let v = read(reg::VERSION);
    (v as u8, (v >> 16) as u8)
}

fn wait_icr_idle() -> bool {
    timer::spin_until(1000, || read(reg::ICR_LOW) & icr::DELIVERY_PENDING == 0)
}

fn send_ipi(dest_apic_id: u32, low: u32) -> bool {
    write(reg::ICR_HIGH, dest_apic_id << 24);
    write(reg::ICR_LOW, low);
    wait_icr_idle()
}

/// INIT-SIPI-SIPI per SDM Vol. 3A 8.4.4.1: INIT, 10 ms, SIPI, 200 us, SIPI. The AP
/// starts in real mode at `vector << 12`. Returns false if the APIC never accepted an IPI.
pub fn start_ap(apic_id: u32, vector: u8) -> bool {
    if !send_ipi(apic_id, icr::INIT | icr::LEVEL_ASSERT | icr::TRIGGER_LEVEL) {
        return false;
    }
    timer::delay_us(10_000);
    for _ in 0..2 {
        if !send_ipi(apic_id, icr::STARTUP | u32::from(vector)) {
            return false;
        }
        timer::delay_us(200);
    }
    true
}

/// The vector of the scheduler's "look at your run queue" IPI.
pub const KICK_VECTOR: u8 = 0xF0;
/// The vector of this CPU's own timer (TSC-deadline mode), which wakes an idle CPU.
pub const TIMER_VECTOR: u8 = 0xEF;
const LVT_TIMER: usize = 0x320;
const IA32_TSC_DEADLINE: u32 = 0x6E0;

/// Kicks the CPU with APIC ID `apic_id`: it takes an interrupt (a VM exit if it runs a
/// guest, a wake-up if it halts) and reconsiders what to run.
pub fn kick(apic_id: u32) {
    write(reg::ICR_HIGH, apic_id << 24);
    write(reg::ICR_LOW, u32::from(KICK_VECTOR));
}

/// Whether the CPU has the TSC-deadline timer (CPUID.1:ECX[24]).
pub fn has_tsc_deadline() -> bool {
    super::cpu::cpuid(1, 0).ecx & (1 << 24) != 0
}

/// Arms this CPU's timer to interrupt at TSC value `deadline` (0 disarms). The CPU must
/// have the TSC-deadline timer.
pub fn arm_timer(deadline: u64) {
    write(LVT_TIMER, u32::from(TIMER_VECTOR) | (0b10 << 17));
    // SAFETY: IA32_TSC_DEADLINE exists when CPUID says TSC-deadline (checked by the
    // caller); writing it only schedules an interrupt on this CPU.
    unsafe { wrmsr(IA32_TSC_DEADLINE, deadline) };
}

/// Sends this CPU an NMI (the boot's NMI self-test, `arch::nmi`).
pub fn self_nmi() {
    if MMIO_BASE.load(Ordering::Relaxed) == 0 {
        return;
    }
    let id = read(reg::ID) >> 24;
    let _ = send_ipi(id, icr::NMI | icr::LEVEL_ASSERT);
}

/// Sends an NMI to every other CPU (used only to stop the machine).
pub fn stop_other_cpus() {
    if MMIO_BASE.load(Ordering::Relaxed) == 0 {
        return; // APIC never mapped: we are the only CPU running.
    }
    let _ = send_ipi(0, icr::NMI | icr::LEVEL_ASSERT | icr::ALL_EXCLUDING_SELF);
}
