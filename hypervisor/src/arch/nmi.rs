//! NMIs and machine checks that reach the hypervisor, other than the machine-stop NMI
//! (`power`): counted and reported, and the machine carries on.
//!
//! An NMI can interrupt the hypervisor anywhere, also inside the logger or the serial
//! port's lock, so its handler only counts; the run loop reports the count later
//! ([`report`]). An NMI that arrives while a guest runs causes a VM exit instead (NMI
//! exiting), after which the CPU keeps NMIs blocked until the next IRET: [`unblock`]
//! executes one.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// NMIs taken so far, and how many of them have been reported.
static TAKEN: AtomicU64 = AtomicU64::new(0);
static REPORTED: AtomicU64 = AtomicU64::new(0);

/// Notes an NMI (from the NMI handler or an NMI exit). Never logs: see the module.
#[inline]
pub fn note() {
    TAKEN.fetch_add(1, Ordering::Relaxed);
}

/// Logs the NMIs noted since the last report (called where logging is safe).
#[inline]
pub fn report() {
    let taken = TAKEN.load(Ordering::Relaxed);
    let reported = REPORTED.load(Ordering::Relaxed);
    if taken != reported && REPORTED.compare_exchange(reported, taken, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        log::warn!(
            "nmi: {} NMI(s) taken ({taken} since boot); no source is known to the hypervisor; continuing",
            taken - reported
        );
    }
}

/// Ends the NMI blocking a VM exit caused by an NMI leaves in place, by returning to
/// the next instruction with IRETQ (SDM Vol. 3C "Delivery of NMIs in VMX Non-Root
/// Operation": blocking lasts until an IRET).
pub fn unblock() {
    // SAFETY: builds an interrupt frame for the current context (SS, RSP, RFLAGS, CS,
    // the label after IRETQ) and returns through it: execution continues right there
    // with the same stack, flags and segments.
    unsafe {
        asm!(
            "mov {tmp:r}, rsp",
            "push {ss:r}",
            "push {tmp:r}",
            "pushfq",
            "push {cs:r}",
            "lea {tmp:r}, [rip + 2f]",
            "push {tmp:r}",
            "iretq",
            "2:",
            tmp = out(reg) _,
            ss = in(reg) u64::from(ss()),
            cs = in(reg) u64::from(cs()),
        )
    };
}

fn ss() -> u16 {
    let v: u16;
    // SAFETY: reading a segment register has no side effects.
    unsafe { asm!("mov {:x}, ss", out(reg) v, options(nomem, nostack)) };
    v
}

fn cs() -> u16 {
    let v: u16;
    // SAFETY: as above.
    unsafe { asm!("mov {:x}, cs", out(reg) v, options(nomem, nostack)) };
    v
}

/// Sends this CPU an NMI and waits for the handler to note it: proves at boot that an
/// unexpected NMI is survived (the old handler stopped the machine on any NMI).
pub fn self_test() -> bool {
    let before = TAKEN.load(Ordering::Relaxed);
    super::apic::self_nmi();
    let arrived = super::timer::spin_until(10_000, || TAKEN.load(Ordering::Relaxed) != before);
    // Ours, so not one to report as of unknown source.
    REPORTED.store(TAKEN.load(Ordering::Relaxed), Ordering::Relaxed);
    arrived
}

/// What a machine check a guest was running into tells (IA32_MCG_STATUS and the banks
/// with a valid error), for the report of the domain it ends.
pub fn machine_check_summary() -> ([u64; 4], u64) {
    // CPUID.1:EDX: MCE (7) and MCA (14).
    let edx = super::cpu::cpuid(1, 0).edx;
    if edx & (1 << 7) == 0 || edx & (1 << 14) == 0 {
        return ([0; 4], 0);
    }
    // SAFETY: MCA is present, so MCG_CAP, MCG_STATUS and the banks exist.
    unsafe {
        let cap = super::cpu::rdmsr(0x179);
        let status = super::cpu::rdmsr(0x17A);
        let mut banks = [0u64; 4];
        let mut n = 0;
        for bank in 0..(cap & 0xFF).min(32) as u32 {
            let s = super::cpu::rdmsr(0x401 + 4 * bank);
            if s & (1 << 63) != 0 && n < banks.len() {
                banks[n] = s;
                n += 1;
            }
        }
        // MCIP cleared: a second machine check while it is set shuts the CPU down.
        super::cpu::wrmsr(0x17A, 0);
        (banks, status)
    }
}
